#!/usr/bin/env bash
# Measures the L2 disk store against raw O_DIRECT dd on the same file (and on
# a loop device when run as root): sequential fill throughput, random extent
# reads (throughput, p50/p99), recovery time per GiB, write amplification.
#
# Usage: bench/disk.sh [SIZE_MIB]   (default 2048)
# Env:   BENCH_DIR (default bench/out), REGION (bytes, default 16 MiB),
#        ROUNDS (fill-vs-dd pairs, default 5; the medians are reported)
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE_MIB=${1:-2048}
REGION=${REGION:-16777216}
ROUNDS=${ROUNDS:-5}
OUT=${BENCH_DIR:-bench/out}
mkdir -p "$OUT"
F="$(cd "$OUT" && pwd)/disk-bench.img"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}

echo "building disk_bench (dev profile, agent crate at opt-level 3)"
cargo build -q -p slicecache-agent --example disk_bench \
  --config 'profile.dev.package.slicecache-agent.opt-level=3'
BIN="$CARGO_TARGET_DIR/debug/examples/disk_bench"

dd_mbps() { # dd on $1, overwriting in place; prints MB/s
  dd if=/dev/zero of="$1" bs=1M count="$SIZE_MIB" oflag=direct conv=notrunc,fsync 2>&1 |
    awk '/copied/ { for (i = 1; i <= NF; i++) if ($i ~ /^s,?$/) secs = $(i-1); print $1 / secs / 1e6 }'
}

median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

run() { # $1 label, $2 target path
  local label=$1 target=$2
  echo "== $label: $target, $SIZE_MIB MiB"
  dd_mbps "$target" >/dev/null # first pass allocates a fresh file's blocks
  # Fill against dd, alternating, ROUNDS times: a virtual disk's bandwidth
  # drifts by tens of percent between runs, so one pair proves little. dd
  # leaves zeros: the store sees a blank device and formats it each time.
  : >"$OUT/$label-rounds.txt"
  for r in $(seq "$ROUNDS"); do
    local dd fill
    dd=$(dd_mbps "$target")
    fill=$(DISK_BENCH_FILL_ONLY=1 "$BIN" "$target" $((SIZE_MIB * 1048576)) "$REGION" |
      awk -F= '/^fill_mb_per_s=/ {print $2}')
    echo "round $r: dd_oflag_direct_mb_per_s=$dd fill_mb_per_s=$fill" | tee -a "$OUT/$label-rounds.txt"
  done
  dd_mbps "$target" >/dev/null
  "$BIN" "$target" $((SIZE_MIB * 1048576)) "$REGION" | tee "$OUT/$label.txt"
  awk '{ split($3, d, "="); split($4, f, "="); print d[2], f[2], f[2] / d[2] }' "$OUT/$label-rounds.txt" >"$OUT/$label-pairs.txt"
  echo "rounds_dd_mb_per_s=$(awk '{print $1}' "$OUT/$label-pairs.txt" | tr '\n' ' ')" | tee -a "$OUT/$label.txt"
  echo "rounds_fill_mb_per_s=$(awk '{print $2}' "$OUT/$label-pairs.txt" | tr '\n' ' ')" | tee -a "$OUT/$label.txt"
  echo "median_dd_mb_per_s=$(awk '{print $1}' "$OUT/$label-pairs.txt" | median)" | tee -a "$OUT/$label.txt"
  echo "median_fill_mb_per_s=$(awk '{print $2}' "$OUT/$label-pairs.txt" | median)" | tee -a "$OUT/$label.txt"
  echo "median_fill_vs_dd=$(awk '{printf "%.2f\n", $3}' "$OUT/$label-pairs.txt" | median)" | tee -a "$OUT/$label.txt"
}

rm -f "$F"
run file "$F"

if [ "$(id -u)" = 0 ] && LOOP=$(losetup -f --show "$F" 2>/dev/null); then
  trap 'losetup -d "$LOOP"' EXIT
  run loop "$LOOP"
else
  echo "skipping loop device: needs root and a working losetup"
fi
rm -f "$F"
