#!/usr/bin/env bash
# Fails when sibling modules of a crate import each other in a cycle; see
# scripts/check_cycles.py for how the module graph is built and
# scripts/cycles-allow.txt for the cycles tolerated for now.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 scripts/check_cycles.py "$@"
