#!/usr/bin/env bash
# Builds the project's Go test tools from their modules (no downloaded
# binaries) and re-uses earlier builds:
#   tests/cluster -> slicecache-cluster: etcd + kube-apiserver +
#                    kube-controller-manager (k8s.io/kubernetes v1.37.2)
#   tests/helm    -> helm (helm.sh/helm/v3 v3.21.4) and helm4 (helm.sh/helm/v4 v4.3.2)
#   tests/metrics-adapter -> prometheus-adapter (sigs.k8s.io/prometheus-adapter v0.12.0)
#
# Usage: scripts/build-go-tools.sh [cluster] [helm] [adapter]   (default: all three)
#
# Each module builds into target/go-tools/<module>-<hash>/, where the hash
# covers the module's go.mod, go.sum and Go sources, the Go version and this
# script; a directory that already holds the binaries is used as it is.
# Afterwards target/go-tools/env holds shell assignments for every tool built
# so far (source it):
#   SLICECACHE_CLUSTER_BIN=...  HELM_BIN=...  HELM4_BIN=...  PROMETHEUS_ADAPTER_BIN=...
# and the paths are printed. Environment:
#   SLICECACHE_GO_TOOLS_DIR  instead of target/go-tools
#   GOFLAGS, GOCACHE, GOMODCACHE are honoured as usual.
# A cold build (empty Go build cache) of tests/cluster took 20 minutes on a
# busy 2-core machine (see tests/cluster/README.md); helm and helm4 6 more,
# prometheus-adapter 2.
# With the Go build cache warm a rebuild links in under a minute.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"

out_root="${SLICECACHE_GO_TOOLS_DIR:-$root/target/go-tools}"
mkdir -p "$out_root"

if ! command -v go >/dev/null 2>&1; then
  echo "build-go-tools: the go command is needed (Go >= 1.26)" >&2
  exit 1
fi

want=("$@")
[ ${#want[@]} -gt 0 ] || want=(cluster helm adapter)

ldflags_common="-s -w"
built_dir="" cluster_dir="" helm_dir="" adapter_dir=""

module_hash() { # module dir
  local dir="$1"
  {
    go env GOVERSION GOOS GOARCH
    cat "$root/scripts/build-go-tools.sh"
    (cd "$dir" && find . -type f \( -name '*.go' -o -name go.mod -o -name go.sum \) -print | LC_ALL=C sort |
      while read -r f; do printf '%s\n' "$f"; cat "$f"; done)
  } | sha256sum | cut -c1-16
}

build_module() { # name, module dir, then pairs: output-name package [extra ldflags]
  local name="$1" dir="$2"
  shift 2
  local hash dest tmp start
  hash="$(module_hash "$dir")"
  dest="$out_root/$name-$hash"
  local missing=0 spec out
  for spec in "$@"; do
    out="${spec%%=*}"
    [ -x "$dest/$out" ] || missing=1
  done
  built_dir="$dest"
  if [ "$missing" = 0 ]; then
    echo "build-go-tools: $name up to date ($dest)"
    return 0
  fi
  tmp="$(mktemp -d "$out_root/.build-$name.XXXXXX")"
  chmod 755 "$tmp"
  start=$SECONDS
  (
    cd "$dir"
    go mod download
    for spec in "$@"; do
      out="${spec%%=*}"
      rest="${spec#*=}"
      pkg="${rest%%|*}"
      extra=""
      [ "$rest" = "$pkg" ] || extra="${rest#*|}"
      echo "build-go-tools:   go build $pkg -> $out"
      go build -p 2 -trimpath -buildvcs=false -ldflags="$ldflags_common $extra" -o "$tmp/$out" "$pkg"
    done
  ) || { rm -rf "$tmp"; echo "build-go-tools: building $name failed" >&2; return 1; }
  rm -rf "$dest"
  mv "$tmp" "$dest"
  # Builds of older sources go; the newest stays.
  find "$out_root" -mindepth 1 -maxdepth 1 -type d -name "$name-*" ! -path "$dest" -exec rm -rf {} +
  echo "build-go-tools: built $name in $((SECONDS - start)) s ($dest)"
}

for w in "${want[@]}"; do
  case "$w" in
    cluster)
      echo "build-go-tools: building the local control plane (etcd, kube-apiserver, kube-controller-manager; a cold build takes 10-20 minutes on 2 cores, a cached one seconds)..."
      # kube-apiserver reports this as its version (/version); without it
      # it says v0.0.0-master and `helm install` refuses every chart with a
      # kubeVersion constraint.
      kube_version="$(cd tests/cluster && go list -m -f '{{.Version}}' k8s.io/kubernetes)" # vMAJOR.MINOR.PATCH
      kube_major="$(echo "${kube_version#v}" | cut -d. -f1)"
      kube_minor="$(echo "$kube_version" | cut -d. -f2)"
      build_module cluster tests/cluster \
        "slicecache-cluster=.|-X k8s.io/component-base/version.gitVersion=$kube_version -X k8s.io/component-base/version.gitMajor=$kube_major -X k8s.io/component-base/version.gitMinor=$kube_minor -X k8s.io/component-base/version.gitTreeState=clean"
      cluster_dir="$built_dir"
      ;;
    helm)
      helm3_version="$(cd tests/helm && go list -m -f '{{.Version}}' helm.sh/helm/v3)"
      helm4_version="$(cd tests/helm && go list -m -f '{{.Version}}' helm.sh/helm/v4)"
      k8s_version="$(cd tests/helm && go list -m -f '{{.Version}}' k8s.io/client-go)" # v0.MINOR.PATCH
      k8s_minor="$(echo "$k8s_version" | cut -d. -f2)"
      echo "build-go-tools: building helm $helm3_version and helm4 $helm4_version (a cold build takes 5-7 minutes on 2 cores)..."
      build_module helm tests/helm \
        "helm=helm.sh/helm/v3/cmd/helm|-X helm.sh/helm/v3/internal/version.version=$helm3_version -X helm.sh/helm/v3/internal/version.gitTreeState=clean -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$k8s_minor -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$k8s_minor" \
        "helm4=helm.sh/helm/v4/cmd/helm|-X helm.sh/helm/v4/internal/version.version=$helm4_version -X helm.sh/helm/v4/internal/version.gitTreeState=clean"
      helm_dir="$built_dir"
      ;;
    adapter)
      echo "build-go-tools: building prometheus-adapter (a cold build takes about 2 minutes on 2 cores)..."
      build_module adapter tests/metrics-adapter "prometheus-adapter=sigs.k8s.io/prometheus-adapter/cmd/adapter"
      adapter_dir="$built_dir"
      ;;
    *)
      echo "build-go-tools: unknown tool set '$w' (cluster, helm, adapter)" >&2
      exit 2
      ;;
  esac
done

# env: keeps the entries of tools not built in this run.
set_env() { # key value
  local f="$out_root/env"
  touch "$f"
  { grep -v "^$1=" "$f" || true; echo "$1=$2"; } >"$f.tmp"
  mv "$f.tmp" "$f"
}
[ -z "$cluster_dir" ] || set_env SLICECACHE_CLUSTER_BIN "$cluster_dir/slicecache-cluster"
if [ -n "$helm_dir" ]; then
  set_env HELM_BIN "$helm_dir/helm"
  set_env HELM4_BIN "$helm_dir/helm4"
fi
[ -z "$adapter_dir" ] || set_env PROMETHEUS_ADAPTER_BIN "$adapter_dir/prometheus-adapter"
echo "build-go-tools: tools ($out_root/env):"
sed 's/^/  /' "$out_root/env"
