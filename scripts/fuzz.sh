#!/usr/bin/env bash
# Runs the agent's fuzz targets (node-agent/fuzz) with cargo-fuzz on the
# nightly toolchain, each for a bounded time. CI runs this with the default
# budget; see docs/agent.md ("Fuzzing") for longer runs.
#   FUZZ_SECONDS   seconds per target (default 20)
#   FUZZ_TARGETS   space-separated subset (default: every target)
# A crash fails the run; the reproducer is left in node-agent/fuzz/artifacts/.
set -euo pipefail
cd "$(dirname "$0")/../node-agent/fuzz"

readonly CARGO_FUZZ_VERSION="0.13.2"
seconds="${FUZZ_SECONDS:-20}"

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "fuzz: the nightly toolchain is missing (rustup toolchain list); cargo-fuzz needs it" >&2
  exit 1
fi
if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION (about a minute)"
  cargo install --locked --quiet cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi

targets="${FUZZ_TARGETS:-$(cargo +nightly fuzz list)}"
echo "fuzz: building the targets (the first build takes 10-20 minutes on two cores)"
cargo +nightly fuzz build --sanitizer none 2>&1 | tail -3
for t in $targets; do
  mkdir -p "corpus/$t"
  work="$(mktemp -d)"
  # New inputs go to a scratch corpus; the committed seeds are read only.
  echo "fuzz: $t for ${seconds}s"
  status=0
  cargo +nightly fuzz run --sanitizer none "$t" "$work" "corpus/$t" -- \
    -max_total_time="$seconds" -print_final_stats=1 >"$work.log" 2>&1 || status=$?
  grep -E "stat::number_of_executed_units|^Done|ERROR|panicked" "$work.log" || true
  [ "$status" -eq 0 ] || tail -40 "$work.log" >&2
  rm -f "$work.log"
  rm -rf "$work"
  if [ "$status" -ne 0 ]; then
    echo "fuzz: $t failed (exit $status); reproducer in node-agent/fuzz/artifacts/$t" >&2
    exit 1
  fi
done
echo "fuzz: every target ran ${seconds}s without a crash"
