#!/usr/bin/env bash
# bench/operator-scale.sh - the operator with 1, 100 and 1,000 SliceCaches:
# reconcile latency, the latency a user feels after a change, and memory.
#
# It runs what scripts/local-cluster.sh runs, without Nodes or agents: the
# local control plane (slicecache-cluster all: etcd, kube-apiserver,
# kube-controller-manager, built from their Go modules by
# scripts/build-go-tools.sh), `helm install` of charts/slicecache-operator
# (the CRD and the operator's RBAC), and a release build of the operator as
# a local process with a token of the chart's ServiceAccount and the
# arguments of the chart's Deployment, its /metrics on a free port.
# Everything binds 127.0.0.1; every process started here is stopped on
# exit, and the temporary directory removed.
#
#   bash bench/operator-scale.sh
#
# For each count N in COUNTS (cumulative: the caches of the smaller counts
# stay), in one namespace:
#   1. create: `kubectl create` the SliceCaches that are missing
#      (examples/minimal.yaml, named slc-0001 ...), wait until every one
#      has status.observedGeneration == metadata.generation, then until
#      the operator is idle (no reconcile for IDLE_SECONDS): the watch
#      events of what the controller-manager does with the new objects
#      (DaemonSet status, EndpointSlices) come after the first status.
#      The reconciles of this phase are the first ones (finalizer, create
#      the ServiceAccount, ConfigMap, Services, PDB, DaemonSet, status) and
#      those the new objects' watch events cause.
#   2. change: on SAMPLE of the N (spread evenly; all when N < SAMPLE), one
#      at a time, patch spec.slicing.sliceSize and time until the status's
#      observedGeneration reaches the new generation (bench/settle-latency.py,
#      over a watch): the end-to-end latency of a change.
#      Then wait until the operator is idle again.
#   3. the operator's RSS (VmRSS) and peak RSS (VmHWM, /proc/PID/status).
# Reconcile p50/p99 of each phase come from the delta of the operator's
# slicecache_operator_reconcile_duration_seconds histogram across it,
# interpolated within a bucket as Prometheus's histogram_quantile does.
#
# There are no Nodes: the DaemonSets place no Pods, so no agent runs and
# every SliceCache settles with 0 desired agents. The operator's work per
# SliceCache is the same as with Nodes, except for the rollouts that Pods
# coming and going would cause.
#
# Environment (all optional):
#   OPERATOR_BIN   existing operator binary; skips `cargo build --release`
#   OPERATOR_COMMIT  commit that binary was built from, for the report
#   SLICECACHE_CLUSTER_BIN, HELM_BIN  existing control plane and helm
#                  binaries (both); skips scripts/build-go-tools.sh
#   COUNTS         SliceCache counts, ascending ("1 100 1000")
#   SAMPLE         SliceCaches patched per count in phase 2 (100)
#   SETTLE_TIMEOUT seconds allowed per count for phase 1 (900)
#   IDLE_SECONDS   seconds without a reconcile that make the operator idle (5)
#   HELM_ARGS      extra `helm install` arguments, e.g.
#                  "--set maxConcurrentReconciles=0" (none)
#   BENCH_OUT      also write the report into this markdown file, replacing
#                  its "## Operator at scale" section (appended when absent)
#   KEEP_WORK=1    keep the temporary directory (logs, kubeconfigs)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
COUNTS=${COUNTS:-"1 100 1000"}
SAMPLE=${SAMPLE:-100}
SETTLE_TIMEOUT=${SETTLE_TIMEOUT:-900}
IDLE_SECONDS=${IDLE_SECONDS:-5}
BENCH_OUT=${BENCH_OUT:-}
NS=operator-scale
SYSTEM_NS=slicecache-system
RELEASE=slicecache
SA=slicecache-operator # the chart's full name for release "slicecache"
HISTOGRAM=slicecache_operator_reconcile_duration_seconds
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

BENCH_TAG=operator-scale
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

prev=0
for n in $COUNTS; do
  if ! [[ "$n" =~ ^[0-9]+$ ]] || [ "$n" -le "$prev" ]; then die "COUNTS must be ascending positive integers: $COUNTS"; fi
  prev=$n
done
for t in kubectl curl awk python3 setsid; do
  command -v "$t" >/dev/null || die "$t is missing (scripts/install-deps.sh)"
done

# ---------------------------------------------------------------- builds
if [ -n "${OPERATOR_BIN:-}" ]; then
  BIN=$OPERATOR_BIN
else
  log "building slicecache-operator (release, fat LTO: several minutes)"
  (cd "$ROOT" && cargo build --release --locked -p slicecache-operator >&2)
  BIN=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps 2>/dev/null | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/release/slicecache-operator
  OPERATOR_COMMIT=${OPERATOR_COMMIT:-$(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- operator crds Cargo.lock || echo "+changes")}
fi
[ -x "$BIN" ] || die "no operator binary at $BIN"
if [ -n "${SLICECACHE_CLUSTER_BIN:-}" ] && [ -n "${HELM_BIN:-}" ]; then
  log "control plane and helm given: $SLICECACHE_CLUSTER_BIN, $HELM_BIN"
else
  log "building the control plane and helm (scripts/build-go-tools.sh; seconds when built before)"
  bash "$ROOT/scripts/build-go-tools.sh" cluster helm >&2
  # shellcheck disable=SC1091
  . "${SLICECACHE_GO_TOOLS_DIR:-$ROOT/target/go-tools}/env"
fi
[ -x "$SLICECACHE_CLUSTER_BIN" ] || die "no control plane binary at $SLICECACHE_CLUSTER_BIN"
[ -x "$HELM_BIN" ] || die "no helm binary at $HELM_BIN"

# ---------------------------------------------------------------- processes
WORK=$(mktemp -d "${TMPDIR:-/tmp}/operator-scale.XXXXXX")
PIDS=() # session leaders (setsid), stopped last-started first
CLUSTER_PID="" OPERATOR_PID=""

stop_pids() { # pid...: TERM each one's process group, KILL after 25 s
  local pid i
  for ((i = $# ; i >= 1 ; i--)); do
    pid=${!i}
    kill -0 "$pid" 2>/dev/null || continue
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 250); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
}

cleanup() {
  local rc=$?
  trap - ERR
  if [ $rc -ne 0 ] && [ -n "$OPERATOR_PID" ]; then
    log "the operator's last log lines:"
    tail -15 "$WORK/operator.out" >&2 || true
  fi
  [ ${#PIDS[@]} -eq 0 ] || stop_pids "${PIDS[@]}"
  finish_work $rc 0
}
set_traps cleanup

start() { # name command...: in a session of its own, output in WORK/name.{out,err}
  local name=$1
  shift
  setsid "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" </dev/null &
  PIDS+=($!)
}

wait_ready_line() { # name pid seconds: until WORK/name.out has "ready: "
  for _ in $(seq $(($3 * 10))); do
    grep -q '^ready: ' "$WORK/$1.out" 2>/dev/null && return 0
    kill -0 "$2" 2>/dev/null || { tail -20 "$WORK/$1.err" >&2; die "$1 exited"; }
    sleep 0.1
  done
  tail -20 "$WORK/$1.err" >&2
  die "$1 not ready within $3 s"
}

export HOME=$WORK/home # kubectl's and helm's caches
mkdir -p "$HOME"
KUBECONFIG=$WORK/admin.kubeconfig
export KUBECONFIG
k() { kubectl --kubeconfig "$KUBECONFIG" "$@"; }

log "starting the control plane"
start cluster "$SLICECACHE_CLUSTER_BIN" all --data-dir "$WORK/cluster" \
  --kubeconfig-out "$KUBECONFIG" --etcd-unsafe-no-fsync
CLUSTER_PID=${PIDS[-1]}
wait_ready_line cluster "$CLUSTER_PID" 180

log "helm install $RELEASE charts/slicecache-operator -n $SYSTEM_NS"
# shellcheck disable=SC2086 # HELM_ARGS is a list of words
"$HELM_BIN" install "$RELEASE" "$ROOT/charts/slicecache-operator" -n "$SYSTEM_NS" --create-namespace ${HELM_ARGS:-} >"$WORK/helm.out"
k wait --for=condition=Established crd/slicecaches.slicecache.io --timeout=60s >/dev/null

# The operator as scripts/local-cluster.sh runs it: the chart's
# ServiceAccount (so exactly the chart's RBAC) and its Deployment's args.
token=$(k create token "$SA" -n "$SYSTEM_NS" --duration=24h)
cp "$KUBECONFIG" "$WORK/operator.kubeconfig"
kubectl --kubeconfig "$WORK/operator.kubeconfig" config set-credentials admin --token="$token" >/dev/null
METRICS_PORT=$(free_port)
args=()
while IFS= read -r arg; do
  case "$arg" in
    --metrics-addr=*) args+=("--metrics-addr=127.0.0.1:$METRICS_PORT") ;;
    '') ;;
    *) args+=("$arg") ;;
  esac
done < <(k get deployment "$SA" -n "$SYSTEM_NS" \
  -o go-template='{{range (index .spec.template.spec.containers 0).args}}{{.}}{{"\n"}}{{end}}')
log "starting the operator: ${args[*]}"
POD_NAMESPACE=$SYSTEM_NS POD_NAME=bench-operator RUST_LOG=${RUST_LOG:-info} \
  start operator "$BIN" "${args[@]}" --kubeconfig "$WORK/operator.kubeconfig"
OPERATOR_PID=${PIDS[-1]}
# setsid runs the operator in place (a background job leads no group), so
# the pid is the operator's own: /proc/PID/status is its memory.
is_operator() { [ "$(readlink -f "/proc/$OPERATOR_PID/exe" 2>/dev/null)" = "$(readlink -f "$BIN")" ]; }
for _ in $(seq 50); do is_operator && break; sleep 0.1; done
is_operator || die "pid $OPERATOR_PID is not the operator"
METRICS=http://127.0.0.1:$METRICS_PORT
wait_http "$METRICS/healthz"
for _ in $(seq 300); do
  curl -fs -o /dev/null "$METRICS/readyz" && break
  kill -0 "$OPERATOR_PID" 2>/dev/null || die "the operator exited"
  sleep 0.1
done
curl -fs -o /dev/null "$METRICS/readyz" || die "the operator did not take the lease within 30 s"

# For bench/settle-latency.py: the API server, a token, the CA.
SERVER=$(k config view --raw -o jsonpath='{.clusters[0].cluster.server}')
k config view --raw -o jsonpath='{.users[0].user.token}' >"$WORK/admin.token"
ca_data=$(k config view --raw -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')
if [ -n "$ca_data" ]; then
  base64 -d <<<"$ca_data" >"$WORK/ca.crt"
else
  cp "$(k config view --raw -o jsonpath='{.clusters[0].cluster.certificate-authority}')" "$WORK/ca.crt"
fi
k create namespace "$NS" >/dev/null

# ---------------------------------------------------------------- measuring
name_of() { printf 'slc-%04d' "$1"; }

create_caches() { # from to: slc-FROM .. slc-TO, 200 per kubectl call
  local i=$1 end
  while [ "$i" -le "$2" ]; do
    end=$((i + 199 > $2 ? $2 : i + 199))
    for j in $(seq "$i" "$end"); do
      sed -e "s/^  name: media$/  name: $(name_of "$j")/" -e "s/^  namespace: default$/  namespace: $NS/" \
        "$ROOT/examples/minimal.yaml"
      echo "---"
    done >"$WORK/batch.yaml"
    k create -f "$WORK/batch.yaml" >/dev/null
    i=$((end + 1))
  done
}

settled() { # SliceCaches whose status.observedGeneration is their generation
  k get slicecaches -n "$NS" -o jsonpath='{range .items[*]}{.metadata.generation} {.status.observedGeneration}{"\n"}{end}' |
    awk '$1 == $2 { n++ } END { print n + 0 }'
}

wait_settled() { # n: until n SliceCaches are settled (SETTLE_TIMEOUT)
  local deadline=$((SECONDS + SETTLE_TIMEOUT)) s
  while :; do
    s=$(settled)
    [ "$s" -ge "$1" ] && return 0
    kill -0 "$OPERATOR_PID" 2>/dev/null || die "the operator exited"
    [ $SECONDS -lt $deadline ] || die "only $s of $1 SliceCaches settled within $SETTLE_TIMEOUT s"
    sleep 0.5
  done
}

wait_idle() { # until no reconcile has run for IDLE_SECONDS (SETTLE_TIMEOUT)
  local deadline=$((SECONDS + SETTLE_TIMEOUT)) last now quiet=0
  last=$(reconciles_total)
  while [ "$quiet" -lt "$IDLE_SECONDS" ]; do
    sleep 1
    now=$(reconciles_total)
    if [ "$now" = "$last" ]; then quiet=$((quiet + 1)); else quiet=0 last=$now; fi
    [ $SECONDS -lt $deadline ] || die "the operator kept reconciling for $SETTLE_TIMEOUT s"
  done
}

histogram() { # the reconcile histogram now: "le cumulative-count" lines
  curl -fsS "$METRICS/metrics" | awk -v h="${HISTOGRAM}_bucket" '
    index($0, h "{") == 1 { match($0, /le="[^"]*"/); print substr($0, RSTART + 4, RLENGTH - 5), $NF }'
}

quantiles() { # before after: "count p50_ms p99_ms" of the delta, as histogram_quantile
  awk 'FILENAME == ARGV[1] { before[$1] = $2; next }
    { le[++n] = $1; c[n] = $2 - before[$1] }
    END {
      total = c[n]
      if (total <= 0) { print "0 - -"; exit }
      printf "%d", total
      split("0.5 0.99", qs, " ")
      for (qi = 1; qi <= 2; qi++) {
        rank = qs[qi] * total
        for (i = 1; i <= n && c[i] < rank; i++) {}
        if (le[i] == "+Inf") { v = le[n - 1] }
        else {
          lo = i == 1 ? 0 : le[i - 1]
          below = i == 1 ? 0 : c[i - 1]
          v = lo + (le[i] - lo) * (rank - below) / (c[i] - below)
        }
        printf " %.1f", v * 1000
      }
      printf "\n"
    }' "$1" "$2"
}

reconciles_total() {
  curl -fsS "$METRICS/metrics" | awk '/^slicecache_operator_reconciliations_total\{/ { n += $NF } END { print n + 0 }'
}

errors_total() {
  curl -fsS "$METRICS/metrics" | awk '/^slicecache_operator_reconciliations_total\{result="error"\}/ { n += $NF } END { print n + 0 }'
}

percentile() { # p file-of-numbers: nearest rank
  sort -n "$2" | awk -v p="$1" '{ v[NR] = $1 } END { r = int(p * NR + 0.999999); if (r < 1) r = 1; printf "%.1f", v[r] }'
}

mem_kib() { awk -v f="$1:" '$1 == f { print $2 }' "/proc/$OPERATOR_PID/status"; }
cpu_s() { awk '{ printf "%.1f", ($14 + $15) / 100 }' "/proc/$OPERATOR_PID/stat"; }

ROWS=()
have=0
for n in $COUNTS; do
  log "N=$n: creating $((n - have)) SliceCaches"
  histogram >"$WORK/h0"
  cpu0=$(cpu_s)
  t0=$(date +%s.%N)
  create_caches $((have + 1)) "$n"
  wait_settled "$n"
  t1=$(date +%s.%N)
  wait_idle
  t2=$(date +%s.%N)
  histogram >"$WORK/h1"
  read -r create_count create_p50 create_p99 < <(quantiles "$WORK/h0" "$WORK/h1")
  create_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
  idle_s=$(awk -v a="$t0" -v b="$t2" -v q="$IDLE_SECONDS" 'BEGIN { printf "%.1f", b - a - q }')
  create_cpu=$(awk -v a="$cpu0" -v b="$(cpu_s)" 'BEGIN { printf "%.1f", b - a }')
  log "N=$n: $((n - have)) created and settled in $create_s s, idle after $idle_s s ($create_count reconciles, p50 $create_p50 ms, p99 $create_p99 ms)"
  prev_have=$have have=$n

  sample=$((n < SAMPLE ? n : SAMPLE))
  names=()
  for i in $(seq 0 $((sample - 1))); do names+=("$(name_of $((1 + i * n / sample)))"); done
  log "N=$n: patching $sample of them one at a time"
  python3 "$ROOT/bench/settle-latency.py" "$SERVER" "$WORK/admin.token" "$WORK/ca.crt" "$NS" "${names[@]}" \
    >"$WORK/settle-$n.txt"
  wait_idle
  histogram >"$WORK/h2"
  read -r change_count change_p50 change_p99 < <(quantiles "$WORK/h1" "$WORK/h2")
  awk '{ print $2 }' "$WORK/settle-$n.txt" >"$WORK/settle-$n.ms"
  e2e_p50=$(percentile 0.5 "$WORK/settle-$n.ms")
  e2e_p99=$(percentile 0.99 "$WORK/settle-$n.ms")
  e2e_max=$(sort -n "$WORK/settle-$n.ms" | tail -1)
  rss=$(mem_kib VmRSS) hwm=$(mem_kib VmHWM)
  log "N=$n: change p50 $e2e_p50 ms, p99 $e2e_p99 ms; reconcile p50 $change_p50 ms, p99 $change_p99 ms; RSS $((rss / 1024)) MiB, peak $((hwm / 1024)) MiB"
  ROWS+=("| $n | $create_s | $idle_s | $create_cpu | $create_count | $create_p50 | $create_p99 | $sample | $change_count | $change_p50 | $change_p99 | $e2e_p50 | $e2e_p99 | $e2e_max | $(awk -v k="$rss" 'BEGIN { printf "%.1f", k / 1024 }') | $(awk -v k="$hwm" 'BEGIN { printf "%.1f", k / 1024 }') |")
done
errors=$(errors_total)
total=$(reconciles_total)
LAST_P99=$change_p99 LAST_CREATE_P99=$create_p99 LAST_E2E_P99=$e2e_p99 LAST_HWM=$hwm LAST_N=$n LAST_NEW=$((n - ${prev_have:-0}))

# ---------------------------------------------------------------- report
verdict() { # value limit unit: "met" or "not met"
  awk -v v="$1" -v l="$2" -v u="$3" 'BEGIN { if (v == "-") print "n/a"; else if (v + 0 < l + 0) printf "met (%s %s < %s %s)", v, u, l, u; else printf "**not met** (%s %s >= %s %s)", v, u, l, u }'
}
CPUS=$(nproc)
CPU_MODEL=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
KUBE_VERSION=$(k version -o json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])' || echo "?")
report() {
  cat <<EOF
## Operator at scale

Written by \`bench/operator-scale.sh\` (not by \`bench/run.sh\`, which keeps
this section when it rewrites the file). The operator (release build) runs
against the local control plane (etcd, kube-apiserver and
kube-controller-manager $KUBE_VERSION, from their Go modules) as a local
process with the chart's ServiceAccount and arguments; the SliceCaches are
\`examples/minimal.yaml\` under other names, all in one namespace, created
cumulatively (the 100 include the 1, the 1,000 the 100). The cluster has **no
Nodes**: the DaemonSets place no Pods, no agent runs, and every SliceCache
settles with 0 desired agents; the operator still builds, applies and
watches every object of every SliceCache (ServiceAccount, ConfigMap, two
Services, PodDisruptionBudget, DaemonSet, and the Services' EndpointSlices),
but no rollout ever runs.

- Command: \`$CMD\`
- Operator at commit ${OPERATOR_COMMIT:-?} (release profile)
- Date: $(date -u '+%Y-%m-%d %H:%M UTC')
- Machine: $CPUS CPUs ($CPU_MODEL), shared by the control plane, the operator, kubectl and any other work on the machine; load average at the start $LOAD_START, at the end $(cut -d' ' -f1-3 /proc/loadavg)
- Reconciles in the run: $total, of which $errors failed

| SliceCaches | create: s to settle | create: s to idle | create: operator CPU s | create: reconciles | create: reconcile p50 ms | create: reconcile p99 ms | changed | change: reconciles | change: reconcile p50 ms | change: reconcile p99 ms | change to status p50 ms | change to status p99 ms | change to status max ms | RSS MiB | peak RSS MiB |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
$(printf '%s\n' "${ROWS[@]}")

- *create*: the SliceCaches that were missing are created (200 per
  \`kubectl create\`) and the clock stops when every one has
  \`status.observedGeneration == metadata.generation\` (polled every 0.5 s);
  *s to idle* goes on until the operator has not reconciled for
  ${IDLE_SECONDS} s (those seconds not counted): the controller-manager's
  work on the new objects (DaemonSet status, EndpointSlices) comes back as
  watch events after the first status. The phase's reconciles are the
  first reconcile of each new SliceCache and those all these watch events
  cause, up to idle.
- *change*: \`spec.slicing.sliceSize\` of that many SliceCaches (spread
  over the names) is patched one at a time, and each is timed from the
  patch until a watch sees \`status.observedGeneration\` reach the patched
  generation (\`bench/settle-latency.py\`). This is what a user feels.
  The phase starts and ends with the operator idle, so its reconciles are
  the changes' own and those their writes' watch events cause.
- Reconcile p50/p99 come from the delta of
  \`$HISTOGRAM\` across each phase, interpolated within a bucket as
  \`histogram_quantile\` does (buckets 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20,
  30, 50, 75, 100 ms and up): read them to within a bucket. The
  change-to-status times are exact per change, their percentiles the
  nearest rank (of 100 changes, p99 is the second largest; of fewer than
  100, the largest).
- RSS is VmRSS after the phase, peak RSS VmHWM (\`/proc/PID/status\`).

Targets at $LAST_N SliceCaches:

- reconcile p99 under 100 ms, with $LAST_N SliceCaches in place (the
  change phase): $(verdict "$LAST_P99" 100 ms); the change-to-status p99
  is $LAST_E2E_P99 ms;
- reconcile p99 under 100 ms while $LAST_NEW SliceCaches are created at
  once (the create phase): $(verdict "$LAST_CREATE_P99" 100 ms);
- RSS under 64 MiB: $(verdict "$(awk -v k="$LAST_HWM" 'BEGIN { printf "%.1f", k / 1024 }')" 64 MiB) (peak).
EOF
}
CMD="bash bench/operator-scale.sh"
[ "$COUNTS" = "1 100 1000" ] || CMD="COUNTS=\"$COUNTS\" $CMD"
[ "$SAMPLE" = 100 ] || CMD="SAMPLE=$SAMPLE $CMD"
[ -z "${HELM_ARGS:-}" ] || CMD="HELM_ARGS=\"$HELM_ARGS\" $CMD"
[ -z "${OPERATOR_BIN:-}" ] || CMD="OPERATOR_BIN=<a release build of ${OPERATOR_COMMIT:-that commit}> OPERATOR_COMMIT=${OPERATOR_COMMIT:-?} $CMD"
report >"$WORK/report.md"
cat "$WORK/report.md"
if [ -n "$BENCH_OUT" ]; then
  # Replace the section (up to the next "## " heading) or append it.
  awk -v new="$WORK/report.md" '
    /^## Operator at scale$/ { while ((getline l < new) > 0) print l; skip = 1; done = 1; next }
    skip && /^## / { skip = 0; print ""; }
    !skip { print }
    END { if (!done) { print ""; while ((getline l < new) > 0) print l } }' "$BENCH_OUT" >"$BENCH_OUT.tmp" 2>/dev/null || cp "$WORK/report.md" "$BENCH_OUT.tmp"
  mv "$BENCH_OUT.tmp" "$BENCH_OUT"
  log "wrote the section to $BENCH_OUT"
fi
[ "$errors" -eq 0 ] || die "$errors reconciles failed"
