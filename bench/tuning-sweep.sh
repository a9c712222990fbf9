#!/usr/bin/env bash
# bench/tuning-sweep.sh - best static slice size and concurrency against
# where the operator's tuner converges, for a few workload shapes.
#
# Builds the agent and tests/examples/tuning_sweep.rs in release (the
# profile bench/run.sh uses) and runs the sweep: two real agents, a real
# Prometheus, the demo origin, all on 127.0.0.1, stopped on exit. It takes
# about 15 minutes on 2 cores. The markdown report goes to stdout, and to
# SWEEP_OUT when set; progress goes to stderr.
#
#   bash bench/tuning-sweep.sh
#
# Environment (all optional):
#   SWEEP_OUT            also write the report to this file
#   SWEEP_WORKLOADS      comma-separated: ranges,downloads,mixed (default all)
#   SWEEP_WARMUP         seconds of warm-up before each measurement (2)
#   SWEEP_MEASURE        seconds measured per setting (4)
#   SWEEP_PASSES         measurements of each setting, averaged (2)
#   SWEEP_MAX_INTERVALS  tuner intervals before giving up (20)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
log() { printf '[sweep %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

command -v prometheus >/dev/null || {
  log "installing prometheus"
  bash "$ROOT/scripts/install-deps.sh"
}

log "building slicecache-agent and the sweep (release, fat LTO: several minutes)"
(cd "$ROOT" && cargo build --release --locked -p slicecache-agent -p slicecache-e2e --bin slicecache-agent --example tuning_sweep)
TARGET=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps 2>/dev/null | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
SWEEP="$TARGET/release/examples/tuning_sweep"
[ -x "$SWEEP" ] || { log "ERROR: no sweep binary at $SWEEP"; exit 1; }

COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=$(git -C "$ROOT" status --porcelain -- node-agent operator tests 2>/dev/null | head -1)
[ -n "$DIRTY" ] && COMMIT="$COMMIT (with uncommitted changes)"
CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

log "running the sweep (load average at start: $LOAD_START)"
REPORT=$("$SWEEP")
{
  printf 'Commit %s; %s CPUs (%s); load average %s at the start, %s at the end.\n\n' \
    "$COMMIT" "$(nproc)" "$CPU_MODEL" "$LOAD_START" "$(cut -d' ' -f1-3 /proc/loadavg)"
  printf '%s\n' "$REPORT"
} > "${SWEEP_OUT:-/dev/stdout}"
if [ -n "${SWEEP_OUT:-}" ]; then
  cat "$SWEEP_OUT"
  log "report written to $SWEEP_OUT"
fi
