#!/usr/bin/env bash
# A local slicecache on a real (local) Kubernetes control plane, on 127.0.0.1:
#
#   bash scripts/local-cluster.sh up     # build, start, install, wait for Ready
#   bash scripts/local-cluster.sh down   # stop every process, remove the state
#
# `up`:
#  1. builds the agent, the operator, the node shim and the demo origin
#     (cargo, debug profile; SLICECACHE_LOCAL_CLUSTER_PROFILE=release for
#     release) and the Go tools (scripts/build-go-tools.sh: the control
#     plane and helm). The first build takes long: 10-15 minutes of Rust
#     and, with an empty Go build cache, 10-25 minutes of Go on a 2-core
#     machine; later runs re-use both.
#  2. starts the control plane (etcd, kube-apiserver,
#     kube-controller-manager: slicecache-cluster all),
#  3. `helm install`s charts/slicecache-operator into slicecache-system,
#  4. runs the operator as a local process with a token of the chart's
#     ServiceAccount (so it has exactly the chart's RBAC), with the
#     arguments of the chart's Deployment,
#  5. starts the node shim with three Nodes (it runs slicecache-agent for
#     every agent Pod, on 127.0.0.2 and up) and a demo origin,
#  6. applies examples/minimal.yaml pointed at that origin, waits for the
#     SliceCache to be Ready, fetches an object through an agent Pod, and
#     prints how to use it.
# State (kubeconfigs, logs, pids) lives in target/local-cluster/
# (SLICECACHE_LOCAL_CLUSTER_DIR). SLICECACHE_LOCAL_CLUSTER_NO_BUILD=1 skips
# the builds (for tests, whose cargo has built the binaries already). `down` stops every process it recorded,
# with their children, and removes the directory.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
state="${SLICECACHE_LOCAL_CLUSTER_DIR:-$root/target/local-cluster}"
profile="${SLICECACHE_LOCAL_CLUSTER_PROFILE:-debug}"
release="slicecache"
system_ns="slicecache-system"
operator="slicecache-operator" # the chart's full name for release "slicecache"

say() { printf -- '--- %s\n' "$*"; }
die() { printf 'local-cluster: %s\n' "$*" >&2; exit 1; }

# Every descendant of a pid, deepest last.
descendants() {
  local child
  for child in $(pgrep -P "$1" 2>/dev/null || true); do
    echo "$child"
    descendants "$child"
  done
}

down() {
  [ -d "$state" ] || { echo "local-cluster: nothing to stop ($state does not exist)"; return 0; }
  local pids=() name pid all=()
  if [ -f "$state/pids" ]; then
    # Stop in reverse start order: origin, shim (stops its agents), operator,
    # control plane.
    while read -r name pid; do pids=("$name:$pid" "${pids[@]}"); done <"$state/pids"
  fi
  for entry in "${pids[@]}"; do
    name="${entry%%:*}" pid="${entry#*:}"
    kill -0 "$pid" 2>/dev/null || continue
    mapfile -t kids < <(descendants "$pid")
    all+=("$pid" "${kids[@]}")
    say "stopping $name (pid $pid)"
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 250); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    kill -KILL "$pid" 2>/dev/null || true
  done
  # Anything that outlived its parent (its own process group, e.g. agents).
  for pid in "${all[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  for pid in "${all[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && die "pid $pid is still running"
  done
  rm -rf "$state"
  echo "local-cluster: stopped; removed $state"
}

# Starts a command in a session of its own (so `down` can signal its whole
# process group) and records its pid.
start() { # name, stdout file, command...
  local name="$1" out="$2"
  shift 2
  setsid "$@" >"$out" 2>"$state/$name.err" </dev/null &
  echo "$name $!" >>"$state/pids"
}

wait_line() { # name, file, pattern, seconds
  local name="$1" file="$2" pattern="$3" secs="$4" pid
  pid="$(awk -v n="$name" '$1 == n {print $2}' "$state/pids")"
  for _ in $(seq 1 $((secs * 10))); do
    grep -q "$pattern" "$file" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || { tail -30 "$state/$name.err" >&2; die "$name exited"; }
    sleep 0.1
  done
  tail -30 "$state/$name.err" >&2
  die "$name not ready within $secs s"
}

up() {
  if [ -f "$state/pids" ]; then
    die "already up ($state/pids exists); run: bash scripts/local-cluster.sh down"
  fi
  command -v kubectl >/dev/null || die "kubectl is needed (scripts/install-deps.sh)"
  command -v setsid >/dev/null || die "setsid (util-linux) is needed"

  local t0=$SECONDS cargo_flags=()
  [ "$profile" = release ] && cargo_flags=(--release)
  if [ "${SLICECACHE_LOCAL_CLUSTER_NO_BUILD:-}" = 1 ]; then
    say "not building (SLICECACHE_LOCAL_CLUSTER_NO_BUILD=1)"
  else
    say "building the agent, operator, node shim and demo origin (cargo, $profile); the first build takes 10-15 minutes"
    cargo build "${cargo_flags[@]}" -p slicecache-agent -p slicecache-operator \
      -p slicecache-e2e --bin slicecache-agent --bin slicecache-operator \
      --bin slicecache-node-shim --bin slicecache-demo-origin
    echo "    cargo: $((SECONDS - t0)) s"
    local t1=$SECONDS
    say "building the control plane and helm (scripts/build-go-tools.sh); 10-25 minutes the first time, seconds after"
    bash scripts/build-go-tools.sh cluster helm
    echo "    go tools: $((SECONDS - t1)) s"
  fi
  # shellcheck disable=SC1091
  . "${SLICECACHE_GO_TOOLS_DIR:-$root/target/go-tools}/env"
  # Where cargo put the binaries (CARGO_TARGET_DIR, as cargo reads it).
  local bin="${CARGO_TARGET_DIR:-$root/target}/$profile"

  mkdir -p "$state"
  : >"$state/pids"
  # A failed `up` stops what it started.
  trap 'rc=$?; if [ $rc -ne 0 ]; then echo "local-cluster: up failed; stopping what it started (logs were in $state)" >&2; down; fi' EXIT
  local kubeconfig="$state/admin.kubeconfig"
  export KUBECONFIG="$kubeconfig"
  export HOME="$state/home" # kubectl's and helm's caches
  mkdir -p "$HOME"
  local k=(kubectl --kubeconfig "$kubeconfig")

  say "starting the control plane"
  start cluster "$state/cluster.out" "$SLICECACHE_CLUSTER_BIN" all --data-dir "$state/cluster" \
    --kubeconfig-out "$kubeconfig" --etcd-unsafe-no-fsync
  wait_line cluster "$state/cluster.out" '^ready: ' 180
  sed -n 's/^ready: /    /p' "$state/cluster.out"

  say "helm install $release charts/slicecache-operator -n $system_ns --create-namespace"
  "$HELM_BIN" install "$release" charts/slicecache-operator -n "$system_ns" --create-namespace >"$state/helm-install.out"
  "${k[@]}" wait --for=condition=Established crd/slicecaches.slicecache.io --timeout=60s 2>/dev/null

  say "starting the operator with the chart's ServiceAccount ($operator)"
  local token
  token="$("${k[@]}" create token "$operator" -n "$system_ns" --duration=24h 2>/dev/null)"
  cp "$kubeconfig" "$state/operator.kubeconfig"
  kubectl --kubeconfig "$state/operator.kubeconfig" config set-credentials admin --token="$token" >/dev/null
  local args=() arg metrics_port
  metrics_port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo 18080)"
  while IFS= read -r arg; do
    case "$arg" in
      --metrics-addr=*) args+=("--metrics-addr=127.0.0.1:$metrics_port") ;;
      '') ;;
      *) args+=("$arg") ;;
    esac
  done < <("${k[@]}" get deployment "$operator" -n "$system_ns" \
    -o go-template='{{range (index .spec.template.spec.containers 0).args}}{{.}}{{"\n"}}{{end}}' 2>/dev/null)
  POD_NAMESPACE="$system_ns" POD_NAME=local-operator RUST_LOG="${RUST_LOG:-info}" \
    start operator "$state/operator.log" "$bin/slicecache-operator" "${args[@]}" \
    --kubeconfig "$state/operator.kubeconfig"
  echo "    metrics: http://127.0.0.1:$metrics_port/metrics"

  say "starting the node shim (3 nodes)"
  start shim "$state/shim.out" "$bin/slicecache-node-shim" --kubeconfig "$kubeconfig" \
    --agent-bin "$bin/slicecache-agent" --dir "$state/shim" --nodes 3
  wait_line shim "$state/shim.out" '^ready: ' 60
  sed -n 's/^ready: /    /p' "$state/shim.out"

  say "starting the demo origin"
  start origin "$state/origin.out" "$bin/slicecache-demo-origin"
  wait_line origin "$state/origin.out" '^ready: ' 30
  local url
  url="$(sed -n 's/^ready: url=//p' "$state/origin.out")"
  echo "    $url (objects /obj, /obj-1 .. /obj-4, 8 MiB each)"

  say "kubectl apply -f examples/minimal.yaml (origin: $url)"
  sed "s#url: https://media.example.com#url: $url#" examples/minimal.yaml >"$state/minimal.yaml"
  "${k[@]}" apply -f "$state/minimal.yaml" 2>/dev/null
  local t2=$SECONDS
  if ! "${k[@]}" wait --for=condition=Ready slicecache/media --timeout=120s 2>/dev/null; then
    "${k[@]}" describe slicecache media 2>/dev/null || true
    tail -20 "$state/operator.log" >&2
    die "the SliceCache is not Ready after 120 s"
  fi
  echo "    Ready after $((SECONDS - t2)) s"
  if grep -qi forbidden "$state/operator.log"; then
    grep -i forbidden "$state/operator.log" | head -3 >&2
    die "the operator was refused by RBAC"
  fi

  local ip port
  ip="$("${k[@]}" get pods -l app.kubernetes.io/instance=media -o jsonpath='{.items[0].status.podIP}' 2>/dev/null)"
  port="$("${k[@]}" get pods -l app.kubernetes.io/instance=media \
    -o jsonpath='{.items[0].spec.containers[0].ports[?(@.name=="http")].containerPort}' 2>/dev/null)"
  if command -v curl >/dev/null; then
    curl -fsS "http://$ip:$port/obj" -o "$state/through-agent" && curl -fsS "$url/obj" -o "$state/from-origin"
    cmp -s "$state/through-agent" "$state/from-origin" || die "the agent at $ip:$port served other bytes than the origin"
    rm -f "$state/through-agent" "$state/from-origin"
    echo "    GET http://$ip:$port/obj: the origin's bytes"
  fi

  cat <<EOF

slicecache is up ($((SECONDS - t0)) s). Try:

  export KUBECONFIG=$kubeconfig
  kubectl get slc
  kubectl describe slc media
  curl -s http://$ip:$port/obj | sha256sum   # through an agent pod
  curl -s $url/obj | sha256sum   # from the origin

Logs: $state/operator.log, $state/shim/ (agents), $state/cluster/logs/
Stop everything: bash scripts/local-cluster.sh down
EOF
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: scripts/local-cluster.sh up|down" >&2; exit 2 ;;
esac
