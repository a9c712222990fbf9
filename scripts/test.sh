#!/usr/bin/env bash
# The project's test command: installs the system packages the tests use
# (cmake for Pingora's build, nginx, Prometheus), builds the Go test tools
# (the local Kubernetes control plane, helm and prometheus-adapter, from
# their Go modules: the first build takes about 15-25 minutes on two cores,
# later runs reuse it),
# then runs every unit, integration and end-to-end test in the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build-go-tools.sh
cargo test --workspace --locked "$@"
