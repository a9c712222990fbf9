#!/usr/bin/env bash
# Smoke test of the local control plane (tests/cluster: etcd, kube-apiserver
# and kube-controller-manager from their Go modules):
#  1. builds it (scripts/build-go-tools.sh cluster) and starts it in a temp dir
#  2. kubectl get ns; applies the CRD from crds/generated/ and waits for it
#     to be Established; applies examples/minimal.yaml and reads it back
#  3. a Deployment of example/pause: the real controllers make its ReplicaSet
#     and Pods (Pending: there is no kubelet)
#  4. the admin creates a Node object
#  5. SIGUSR1 restarts kube-apiserver, SIGHUP etcd: new processes on the same
#     ports serve what etcd holds
#  6. SIGTERM stops everything; no process of it is left
# Prints each check; exits non-zero on the first failure. Stops every process
# it started.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf -- '--- %s\n' "$*"; }
fail() { printf 'cluster-smoke: FAIL: %s\n' "$*" >&2; exit 1; }

step "build the control plane"
bash scripts/build-go-tools.sh cluster
# shellcheck disable=SC1091
. "${SLICECACHE_GO_TOOLS_DIR:-target/go-tools}/env"
"$SLICECACHE_CLUSTER_BIN" version

work="$(mktemp -d)"
cluster_pid=""
cleanup() {
  if [ -n "$cluster_pid" ] && kill -0 "$cluster_pid" 2>/dev/null; then
    kill "$cluster_pid" 2>/dev/null || true
    for _ in $(seq 1 300); do kill -0 "$cluster_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$cluster_pid" 2>/dev/null || true
  fi
  wait 2>/dev/null || true
  if [ "${KEEP_WORK:-}" = 1 ]; then echo "cluster-smoke: kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
dump_logs() {
  local f
  for f in "$work"/data/logs/*.log; do
    [ -f "$f" ] || continue
    echo "=== $f (last 30 lines)" >&2
    tail -30 "$f" >&2
  done
}

step "start: slicecache-cluster all"
start=$SECONDS
"$SLICECACHE_CLUSTER_BIN" all --data-dir "$work/data" --kubeconfig-out "$work/kubeconfig" \
  --etcd-unsafe-no-fsync >"$work/cluster.out" 2>"$work/cluster.err" &
cluster_pid=$!
for _ in $(seq 1 1800); do
  grep -q '^ready: ' "$work/cluster.out" && break
  kill -0 "$cluster_pid" 2>/dev/null || { cat "$work/cluster.err"; dump_logs; fail "slicecache-cluster exited before it was ready"; }
  sleep 0.1
done
grep '^ready: ' "$work/cluster.out" || { cat "$work/cluster.err"; dump_logs; fail "not ready after 180 s"; }
echo "    ready after $((SECONDS - start)) s"
server="$(sed -n 's/^ready: .* apiserver=//p' "$work/cluster.out")"
case "$server" in https://127.0.0.1:*) ;; *) fail "apiserver URL $server is not on 127.0.0.1" ;; esac

export KUBECONFIG="$work/kubeconfig"
export HOME="$work" # kubectl's discovery cache goes there, not into ~/.kube
# kubectl 1.32 may warn that it is more than one minor version from the
# server; the warning goes to stderr only.
k() { kubectl "$@" 2> >(grep -v 'exceeds the supported minor version skew' >&2); }
wait_until() { # what, seconds, command...
  local what="$1" secs="$2" i
  shift 2
  for i in $(seq 1 $((secs * 5))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  dump_logs
  fail "$what not within $secs s"
}

step "kubectl get ns"
k get ns
for ns in default kube-system kube-public kube-node-lease; do
  k get ns "$ns" >/dev/null || fail "namespace $ns missing"
done

step "apply the CRD from crds/generated and wait until Established"
for f in crds/generated/*.yaml; do k apply -f "$f"; done
k wait --for condition=established --timeout=60s crd/slicecaches.slicecache.io
k apply -f examples/minimal.yaml
k get slc -n default media -o name | grep -qx 'slicecache.slicecache.io/media' || fail "SliceCache media not served back"
k get slc -n default

step "a Deployment of example/pause: ReplicaSet and Pods from the real controllers"
k create deployment pause --image=example/pause --replicas=2
has_rs() { [ "$(k get rs -l app=pause -o jsonpath='{.items[0].metadata.ownerReferences[0].name}')" = pause ]; }
wait_until "a ReplicaSet owned by deployment/pause" 60 has_rs
two_pods() { [ "$(k get pods -l app=pause -o name | wc -l)" = 2 ]; }
wait_until "2 pods of deployment/pause" 60 two_pods
k get deploy,rs,pods -l app=pause -o wide
phases="$(k get pods -l app=pause -o jsonpath='{range .items[*]}{.status.phase}{"\n"}{end}' | sort -u)"
[ "$phases" = Pending ] || fail "pods are $phases, expected Pending (no kubelet)"
owner="$(k get pods -l app=pause -o jsonpath='{.items[0].metadata.ownerReferences[0].kind}')"
[ "$owner" = ReplicaSet ] || fail "pod owner is $owner"
# The serviceaccount-token and root-ca-cert-publisher controllers run too.
wait_until "ConfigMap kube-root-ca.crt in default" 30 k get configmap kube-root-ca.crt -n default

step "the admin creates a Node"
k apply -f - <<'YAML'
apiVersion: v1
kind: Node
metadata:
  name: smoke-node-1
  labels:
    kubernetes.io/hostname: smoke-node-1
YAML
k get node smoke-node-1

step "SIGUSR1 restarts kube-apiserver on the same port"
old_pid="$(cat "$work/data/run/apiserver.pid")"
kill -USR1 "$cluster_pid"
restarted() { grep -q '^restarted: apiserver' "$work/cluster.out"; }
wait_until "kube-apiserver restart" 120 restarted
new_pid="$(cat "$work/data/run/apiserver.pid")"
[ "$new_pid" != "$old_pid" ] || fail "apiserver pid unchanged ($old_pid)"
kill -0 "$old_pid" 2>/dev/null && fail "old apiserver $old_pid still runs"
k get deploy pause -o name >/dev/null || fail "deployment lost across the apiserver restart"
echo "    apiserver pid $old_pid -> $new_pid, deployment/pause still there"

step "SIGHUP restarts etcd (same port, same data)"
old_pid="$(cat "$work/data/run/etcd.pid")"
kill -HUP "$cluster_pid"
etcd_restarted() { grep -q '^restarted: etcd' "$work/cluster.out"; }
wait_until "etcd restart" 60 etcd_restarted
new_pid="$(cat "$work/data/run/etcd.pid")"
[ "$new_pid" != "$old_pid" ] || fail "etcd pid unchanged ($old_pid)"
wait_until "deployment/pause read after the etcd restart" 60 k get deploy pause
echo "    etcd pid $old_pid -> $new_pid, deployment/pause still there"

step "SIGTERM stops everything"
children="$(cat "$work"/data/run/*.pid)"
echo "    processes: slicecache-cluster all $cluster_pid, children $(echo $children)"
kill -TERM "$cluster_pid"
rc=0
for _ in $(seq 1 600); do kill -0 "$cluster_pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$cluster_pid" 2>/dev/null && fail "slicecache-cluster still runs 60 s after SIGTERM"
wait "$cluster_pid" || rc=$?
cluster_pid=""
[ "$rc" = 0 ] || { cat "$work/cluster.err"; fail "slicecache-cluster exited $rc"; }
for pid in $children; do
  kill -0 "$pid" 2>/dev/null && fail "process $pid is left"
done
left="$(ls "$work"/data/run/*.pid 2>/dev/null || true)"
[ -z "$left" ] || fail "pid files left: $left"
port="${server##*:}"
if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then fail "port $port still accepts connections"; fi
echo "    exit 0, no process left, port $port closed"

step "cluster smoke passed"
