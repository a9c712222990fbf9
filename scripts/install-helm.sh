#!/usr/bin/env bash
# Installs helm v3 (and helm4, Helm v4) built from their Go modules in
# tests/helm (helm.sh/helm/v3, helm.sh/helm/v4; see scripts/build-go-tools.sh,
# which re-uses an earlier build of the same sources).
#   HELM_INSTALL_DIR   where to link helm and helm4 (default /usr/local/bin;
#                      must be on PATH)
# Idempotent: a second run finds the build and the links in place.
set -euo pipefail
cd "$(dirname "$0")/.."

dest="${HELM_INSTALL_DIR:-/usr/local/bin}"
bash scripts/build-go-tools.sh helm
# shellcheck disable=SC1091
. "${SLICECACHE_GO_TOOLS_DIR:-target/go-tools}/env"

mkdir -p "$dest"
ln -sfn "$HELM_BIN" "$dest/helm"
[ -z "${HELM4_BIN:-}" ] || ln -sfn "$HELM4_BIN" "$dest/helm4"
echo "installed helm $("$dest/helm" version --short) into $dest${HELM4_BIN:+ (and helm4 $("$dest/helm4" version --short))}"
