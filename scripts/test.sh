#!/usr/bin/env bash
# The project's test command: installs the system packages the tests use
# (cmake for Pingora's build, nginx, Prometheus), then runs every unit,
# integration and end-to-end test in the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo test --workspace --locked "$@"
