#!/usr/bin/env bash
# Checks the Helm chart (charts/slicecache-operator); called from .ci/run.
#
#  1. helm lint --strict, with the defaults and with ci/all-on-values.yaml
#  2. helm template with the defaults, with every optional part on
#     (ci/all-on-values.yaml) and with monitoring on "auto" against a cluster
#     that serves monitoring.coreos.com/v1; each rendering holds the objects
#     it must (CRD, Deployment, RBAC; monitoring objects when asked for).
#     Helm v4 (helm4, built beside helm v3 by scripts/build-go-tools.sh)
#     renders the defaults and all-on too, to the same objects.
#  3. the rendered RBAC has no `*` in verbs, resources or apiGroups; the
#     ClusterRole and the namespaced Role (leases, leader election on only)
#     hold the two lists of files/rbac-rules.yaml
#  4. the chart's CRD equals `crdgen` output (file byte for byte, rendered
#     object field for field apart from the chart's labels and annotation)
#  5. values.schema.json rejects ci/invalid-values.yaml (an unknown key) and
#     more invalid values (wrong type, numbers out of range, a bad enum, a
#     bad duration, an unknown nested key, replicas > 1 without leader
#     election), each with an error that names the field
#  6. every metric named by the PrometheusRule and the Grafana dashboard
#     exists: agent metrics in a real scrape of the agent binary after real
#     traffic (memory and disk hits, a Range request, config reloads);
#     operator metrics in operator/src/metrics.rs, because the operator
#     exports its labelled series only after a reconcile, which needs an API
#     server (the operator's own tests check it exports them). The operator
#     binary is started too, to check the /healthz and /metrics routes the
#     chart's probes and ServiceMonitor use.
#  7. promtool check rules on the alert groups; promtool test rules on
#     synthetic operator series: SliceCacheTuningStuck fires for a tuner held
#     blind and for one that stopped evaluating, not for an idle one;
#     SliceCacheAgentsNotReady for fewer ready agents than desired and for
#     none desired, not for a healthy SliceCache
#  8. the chart README documents every value of values.yaml
#  9. kubectl apply --dry-run=client accepts the all-on rendering and
#     examples/minimal.yaml (a discovery stub on 127.0.0.1 stands in for the
#     API server, as in the operator's CLI tests)
#
# Prints each check; exits non-zero on the first failure. Stops every
# process it started.
set -euo pipefail
cd "$(dirname "$0")/.."

CHART=charts/slicecache-operator
step() { printf -- '--- %s\n' "$*"; }
fail() { printf 'check-chart: FAIL: %s\n' "$*" >&2; exit 1; }

work="$(mktemp -d)"
pids=()
cleanup() {
  local pid="" i
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  # The agent shuts down gracefully; whatever still runs after 5 s is killed.
  for i in $(seq 1 50); do
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && break; done
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

step "install helm v3 and v4 (built from their Go modules)"
bash scripts/install-helm.sh
helm version --short
HELM4="$(command -v helm4 || true)"

# PyYAML parses the renderings; Debian's python3-yaml when the default
# python3 lacks it.
PY=python3
if ! "$PY" -c 'import yaml' 2>/dev/null; then
  PY=/usr/bin/python3
  if ! "$PY" -c 'import yaml' 2>/dev/null; then
    sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends python3-yaml >/dev/null
  fi
fi

step "helm lint --strict: defaults and ci/all-on-values.yaml"
for values in "" "$CHART/ci/all-on-values.yaml"; do
  helm lint --strict "$CHART" ${values:+-f "$values"} >"$work/lint.txt" 2>&1 ||
    { cat "$work/lint.txt"; fail "helm lint --strict ${values:-(defaults)}"; }
  grep -E '^\[(WARNING|ERROR)\]' "$work/lint.txt" && fail "helm lint ${values:-(defaults)} reported warnings"
  echo "    ok   ${values:-defaults}"
done

step "helm template: defaults, all-on, monitoring auto with monitoring.coreos.com/v1"
helm template slicecache "$CHART" -n slicecache-system >"$work/default.yaml"
helm template slicecache "$CHART" -n slicecache-system -f "$CHART/ci/all-on-values.yaml" >"$work/all-on.yaml"
helm template slicecache "$CHART" -n slicecache-system --api-versions monitoring.coreos.com/v1 >"$work/auto.yaml"
helm template slicecache "$CHART" -n slicecache-system --set crds.install=false --set leaderElection.enabled=false >"$work/minimal.yaml"

if [ -n "$HELM4" ]; then
  step "helm v4 ($("$HELM4" version --short)) template: defaults and all-on render the same objects as helm v3"
  for name in default all-on; do
    values=()
    [ "$name" = default ] || values=(-f "$CHART/ci/all-on-values.yaml")
    "$HELM4" template slicecache "$CHART" -n slicecache-system "${values[@]}" >"$work/$name.v4.yaml" 2>"$work/$name.v4.err" ||
      { cat "$work/$name.v4.err"; fail "helm4 template $name"; }
    "$PY" - "$work/$name.yaml" "$work/$name.v4.yaml" <<'PYEOF' || fail "helm v4 renders $name differently"
import sys, yaml
def docs(path):
    with open(path) as f:
        return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(f) if d}
v3, v4 = docs(sys.argv[1]), docs(sys.argv[2])
if v3.keys() != v4.keys():
    print("    objects only in v3:", sorted(v3.keys() - v4.keys()), "only in v4:", sorted(v4.keys() - v3.keys()))
    sys.exit(1)
differ = sorted(k for k in v3 if v3[k] != v4[k])
if differ:
    print("    objects that differ:", differ)
    sys.exit(1)
print(f"    ok   {len(v3)} objects, equal to helm v3's")
PYEOF
  done
fi

# Helm v3.21 and v4.3 word schema errors as santhosh-tekuri/jsonschema does,
# "- at '/path/to/field': ..." (v3.18 used the gojsonschema wording).
step "values.schema.json rejects invalid values, naming the field (helm v3${HELM4:+ and v4})"
invalid=0
reject() { # what, the text the error must hold (it names the field); values on stdin
  local what="$1" want="$2" f
  invalid=$((invalid + 1))
  f="$work/invalid-$invalid.yaml"
  cat >"$f"
  if helm template slicecache "$CHART" -f "$f" >/dev/null 2>"$f.err"; then
    fail "helm template accepted $what"
  fi
  grep -q "don't meet the specifications of the schema" "$f.err" || { cat "$f.err"; fail "$what failed, but not on the schema"; }
  grep -qF -- "$want" "$f.err" || { cat "$f.err"; fail "$what: no \"$want\" in the error"; }
  if [ -n "$HELM4" ]; then
    "$HELM4" template slicecache "$CHART" -f "$f" >/dev/null 2>"$f.err4" && fail "helm4 template accepted $what"
    grep -qF -- "$want" "$f.err4" || { cat "$f.err4"; fail "helm4, $what: no \"$want\" in the error"; }
  fi
  echo "    ok   $what: $(grep -F -- "$want" "$f.err" | head -1 | sed 's/^- //')"
}
reject "ci/invalid-values.yaml (unknown key)" "- at '': additional properties 'replica' not allowed" <"$CHART/ci/invalid-values.yaml"
reject "wrong type" "- at '/replicas': got string, want integer" <<'EOF'
replicas: "2"
EOF
reject "number out of range" "- at '/monitoring/rules/lowHitRatio/threshold': exclusiveMaximum: got 1.5, want 1" <<'EOF'
monitoring:
  rules:
    lowHitRatio:
      threshold: 1.5
EOF
reject "integer out of range" "- at '/monitoring/rules/tuningStuck/missedIntervals': minimum: got 0, want 1" <<'EOF'
monitoring:
  rules:
    tuningStuck:
      missedIntervals: 0
EOF
reject "bad enum" "- at '/monitoring/prometheusOperator': value must be one of" <<'EOF'
monitoring:
  prometheusOperator: sometimes
EOF
reject "bad duration" "- at '/monitoring/rules/agentsNotReady/for': '15minutes' does not match pattern" <<'EOF'
monitoring:
  rules:
    agentsNotReady:
      for: 15minutes
EOF
reject "unknown nested key" "- at '/monitoring/rules/tuningStuck': additional properties 'fro' not allowed" <<'EOF'
monitoring:
  rules:
    tuningStuck:
      fro: 30m
EOF
reject "replicas > 1 without leader election" "- at '/leaderElection/enabled': value must be true" <<'EOF'
replicas: 2
leaderElection:
  enabled: false
EOF

step "the chart's CRD equals crdgen output"
cargo run -q -p slicecache-api --bin crdgen >"$work/crdgen.yaml"
cmp -s "$work/crdgen.yaml" "$CHART/files/crds/slicecaches.slicecache.io.yaml" ||
  fail "$CHART/files/crds/slicecaches.slicecache.io.yaml is stale; refresh it with: cargo run -q -p slicecache-api --bin crdgen > $CHART/files/crds/slicecaches.slicecache.io.yaml"

step "build the agent and operator binaries (debug)"
cargo build -q -p slicecache-agent -p slicecache-operator --bins --locked
AGENT="${CARGO_TARGET_DIR:-target}/debug/slicecache-agent"
OPERATOR="${CARGO_TARGET_DIR:-target}/debug/slicecache-operator"

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { # url; up to 15 s
  local i
  for i in $(seq 1 150); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

step "scrape a real agent after traffic (memory and disk tiers, Range, config reloads)"
origin_port="$(free_port)"; listen_port="$(free_port)"; admin_port="$(free_port)"; peer_port="$(free_port)"
# A fleet of one (itself as its only static member), so the fleet's
# metrics are exported too.
printf 'check-chart-peer-token-0123456789\n' >"$work/peer-token"
mkdir -p "$work/www"
head -c 3000000 /dev/urandom >"$work/www/object.bin"
(cd "$work/www" && exec "$PY" -m http.server "$origin_port" --bind 127.0.0.1) >"$work/origin.log" 2>&1 &
pids+=($!)
write_config() { # sliceSize
  cat >"$work/agent.yaml.tmp" <<EOF
listen: 127.0.0.1:$listen_port
adminListen: 127.0.0.1:$admin_port
origin:
  url: http://127.0.0.1:$origin_port
tunables:
  sliceSize: $1
  concurrency: 4
cache:
  memory: 1Mi
  devices:
    - path: $work/device.img
      size: 64Mi
fleet:
  nodeName: check
  peerListen: 127.0.0.1:$peer_port
  peers:
    check: 127.0.0.1:$peer_port
  peerTokenFile: $work/peer-token
EOF
  mv "$work/agent.yaml.tmp" "$work/agent.yaml"
}
write_config 64Ki
wait_http "http://127.0.0.1:$origin_port/object.bin" || fail "test origin did not start"
"$AGENT" run --config "$work/agent.yaml" >"$work/agent.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$admin_port/healthz" || { tail -20 "$work/agent.log"; fail "agent did not start"; }
url="http://127.0.0.1:$listen_port/object.bin"
for _ in 1 2 3; do curl -fsS -o /dev/null "$url" || fail "GET through the agent"; done
code="$(curl -sS -o /dev/null -w '%{http_code}' -H 'Range: bytes=100-70000' "$url")"
[ "$code" = 206 ] || fail "Range request through the agent answered $code"
code="$(curl -sS -o /dev/null -w '%{http_code}' "http://127.0.0.1:$peer_port/object.bin")"
[ "$code" = 403 ] || fail "the peer port answered $code without the token (403 expected)"
write_config 128Ki # a valid change: reload ok
sleep 1.5
write_config 3 # not a power of two: reload rejected
sleep 1.5
curl -fsS "http://127.0.0.1:$admin_port/metrics" >"$work/agent-metrics.txt" || fail "agent /metrics"
grep -q 'slicecache_config_reloads_total{result="rejected"}' "$work/agent-metrics.txt" ||
  fail "the agent did not count the rejected reload"
echo "    $(grep -vc '^#' "$work/agent-metrics.txt") series scraped"

step "operator /healthz and /metrics (no cluster: a kubeconfig pointing nowhere)"
op_port="$(free_port)"
cat >"$work/kubeconfig" <<'EOF'
apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "http://127.0.0.1:9"}}]
users: [{name: none, user: {}}]
contexts: [{name: none, context: {cluster: none, user: none}}]
current-context: none
EOF
"$OPERATOR" run --kubeconfig "$work/kubeconfig" --metrics-addr "127.0.0.1:$op_port" --no-leader-election >"$work/operator.log" 2>&1 &
op_pid=$!
pids+=("$op_pid")
disown "$op_pid" # it is SIGKILLed below; spare the job report
wait_http "http://127.0.0.1:$op_port/healthz" || { tail -20 "$work/operator.log"; fail "operator /healthz"; }
curl -fsS -o /dev/null "http://127.0.0.1:$op_port/metrics" || fail "operator /metrics"
# Without an API server the operator does not finish on SIGTERM: stop it now.
kill "$op_pid" 2>/dev/null || true
sleep 1
kill -9 "$op_pid" 2>/dev/null || true

step "rendered objects, RBAC, CRD fields, monitoring metric names"
"$PY" - "$work" "$CHART" <<'EOF'
import json, re, sys, yaml
work, chart = sys.argv[1], sys.argv[2]
failures = []
def check(ok, msg):
    print(("    ok   " if ok else "    FAIL ") + msg)
    if not ok:
        failures.append(msg)

def load(name):
    with open(f"{work}/{name}") as f:
        return [d for d in yaml.safe_load_all(f) if d]
def kinds(docs):
    return {d["kind"] for d in docs}

core = {"CustomResourceDefinition", "Deployment", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Service"}
mon = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
renders = {n: load(n + ".yaml") for n in ("default", "all-on", "auto", "minimal")}
check(core <= kinds(renders["default"]), f"defaults render {sorted(core)}")
check(not (mon & kinds(renders["default"])), "defaults without monitoring.coreos.com/v1 render no monitoring objects")
check(core | mon | {"ConfigMap"} <= kinds(renders["all-on"]), "all-on renders the monitoring objects and the dashboard ConfigMap")
check(mon <= kinds(renders["auto"]), "monitoring auto renders them when the cluster serves monitoring.coreos.com/v1")
check("CustomResourceDefinition" not in kinds(renders["minimal"]), "crds.install=false renders no CRD")

def deployment(docs):
    return next(d for d in docs if d["kind"] == "Deployment")
for name, want_leader in (("default", True), ("all-on", True), ("minimal", False)):
    dep = deployment(renders[name])
    c = dep["spec"]["template"]["spec"]["containers"][0]
    args = c["args"]
    has = any(a.startswith("--lease-name=") for a in args)
    check(has == want_leader and ("--no-leader-election" in args) != want_leader,
          f"{name}: leader election args {'present' if want_leader else 'replaced by --no-leader-election'} (replicas {dep['spec']['replicas']})")
    sc, psc = c["securityContext"], dep["spec"]["template"]["spec"]["securityContext"]
    check(sc.get("readOnlyRootFilesystem") is True and sc.get("allowPrivilegeEscalation") is False
          and sc.get("capabilities", {}).get("drop") == ["ALL"] and psc.get("runAsNonRoot") is True
          and psc.get("seccompProfile", {}).get("type") == "RuntimeDefault",
          f"{name}: non-root, read-only root, no capabilities, RuntimeDefault seccomp")
    port = c["ports"][0]
    check(c["livenessProbe"]["httpGet"]["port"] == port["name"] and c["readinessProbe"]["httpGet"]["path"] == "/healthz"
          and f"--metrics-addr=0.0.0.0:{port['containerPort']}" in args, f"{name}: probes on the metrics port")

for name, docs in renders.items():
    for d in docs:
        if d["kind"] not in ("ClusterRole", "Role"):
            continue
        bad = [r for r in d["rules"] for k in ("verbs", "resources", "apiGroups") for v in r.get(k, []) if "*" in v]
        check(not bad, f"{name}: {d['kind']} {d['metadata']['name']} has no '*' in verbs/resources/apiGroups ({len(d['rules'])} rules)")
rules_file = yaml.safe_load(open(f"{chart}/files/rbac-rules.yaml"))
cr = next(d for d in renders["default"] if d["kind"] == "ClusterRole")
check(cr["rules"] == rules_file["clusterRole"], "ClusterRole rules are files/rbac-rules.yaml clusterRole")
role = next(d for d in renders["default"] if d["kind"] == "Role")
check(role["rules"] == rules_file["role"] and role["metadata"]["namespace"] == "slicecache-system",
      "Role in the release namespace has files/rbac-rules.yaml role")
def grants(rules, resource):
    return [v for r in rules if resource in r.get("resources", []) for v in r["verbs"]]
check(not grants(cr["rules"], "leases") and grants(role["rules"], "leases") == ["get", "create", "patch"],
      "leases (get, create, patch) only in the namespaced Role, not the ClusterRole")
check("watch" in grants(cr["rules"], "nodes") and "list" in grants(cr["rules"], "nodes"),
      "ClusterRole lists and watches nodes (the controller's node watch)")
check(not ({"Role", "RoleBinding"} & kinds(renders["minimal"])), "leaderElection.enabled=false renders no Role or RoleBinding")
sa = next(d for d in renders["default"] if d["kind"] == "ServiceAccount")
sa_name = sa["metadata"]["name"]
check(sa_name == deployment(renders["default"])["spec"]["template"]["spec"]["serviceAccountName"], "the Deployment runs as the chart's ServiceAccount")
for kind, ref in (("ClusterRoleBinding", "ClusterRole"), ("RoleBinding", "Role")):
    b = next(d for d in renders["default"] if d["kind"] == kind)
    bound = next(d for d in renders["default"] if d["kind"] == ref)
    check(b["subjects"][0]["name"] == sa_name and b["subjects"][0]["namespace"] == "slicecache-system"
          and b["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": ref, "name": bound["metadata"]["name"]},
          f"{kind} binds {ref} {bound['metadata']['name']} to the Deployment's ServiceAccount")

sm = next(d for d in renders["all-on"] if d["kind"] == "ServiceMonitor")
check(all(e.get("honorLabels") is True for e in sm["spec"]["endpoints"]),
      "the operator's ServiceMonitor honours its labels (per-SliceCache series keep their namespace)")

crd = yaml.safe_load(open(f"{work}/crdgen.yaml"))
rendered = next(d for d in renders["default"] if d["kind"] == "CustomResourceDefinition")
meta = rendered["metadata"]
check(meta.get("annotations", {}).get("helm.sh/resource-policy") == "keep", "rendered CRD carries helm.sh/resource-policy: keep")
stripped = dict(rendered, metadata={k: v for k, v in meta.items() if k not in ("labels", "annotations")})
check(stripped == crd, "rendered CRD equals crdgen output apart from labels and annotations")

# Every value is in the chart README's table (a documented map covers its keys).
readme = open(f"{chart}/README.md").read()
undocumented = []
def walk(node, path):
    if path and f"`{path}`" in readme:
        return
    if isinstance(node, dict) and node:
        for k, v in node.items():
            walk(v, f"{path}.{k}" if path else k)
    else:
        undocumented.append(path)
walk(yaml.safe_load(open(f"{chart}/values.yaml")), "")
check(not undocumented, f"README.md documents every value{': missing ' + ', '.join(undocumented) if undocumented else ''}")

# --- metric names ---
def series_names(text):
    return {re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", l).group(0) for l in text.splitlines() if l and not l.startswith("#")}
agent = series_names(open(f"{work}/agent-metrics.txt").read())
src = open("operator/src/metrics.rs").read()
operator = set()
for kind, name in re.findall(r'(HistogramOpts|Opts)::new\(\s*"([a-z_:]+)"', src):
    operator |= {name + s for s in ("_bucket", "_sum", "_count")} if kind == "HistogramOpts" else {name}
check(len(operator) >= 3, f"operator metrics from operator/src/metrics.rs: {sorted(operator)}")
# Synthesised by Prometheus for every target, never in an exposition.
prometheus_made = {"up"}
known = agent | operator | prometheus_made

KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset", "inf", "nan"}
def metric_names(expr):
    e = re.sub(r'"(\\.|[^"\\])*"', '""', expr)          # string literals
    e = re.sub(r"\{[^}]*\}", "{}", e)                   # label matchers
    e = re.sub(r"\[[^\]]*\]", "[]", e)                  # range and subquery durations
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)  # label lists
    names = set()
    # Numbers and durations (0.95, 5m, 1e3) are one token, so their letters are no names.
    for m in re.finditer(r"[0-9.][0-9a-zA-Z_.]*|[a-zA-Z_:][a-zA-Z0-9_:]*", e):
        tok, rest = m.group(0), e[m.end():]
        if tok[0] in "0123456789." or tok.lower() in KEYWORDS or re.match(r"\s*\(", rest) or e[max(0, m.start() - 1)] == "$":
            continue
        names.add(tok)
    return names

# The extractor itself: functions, label lists, matchers and durations are no metric names.
probe = metric_names('sum by (a) (rate(foo_bucket{x="y"}[5m])) / on(b) group_left(c) bar + histogram_quantile(0.9, baz) offset 5m')
check(probe == {"foo_bucket", "bar", "baz"}, f"metric name extractor self-test: {sorted(probe)}")

exprs = []
prule = next(d for d in renders["all-on"] if d["kind"] == "PrometheusRule")
for g in prule["spec"]["groups"]:
    for r in g["rules"]:
        exprs.append((f"alert {r['alert']}", r["expr"]))
with open(f"{work}/rules.yaml", "w") as f:
    yaml.safe_dump({"groups": prule["spec"]["groups"]}, f)
# The same without annotations, for promtool's rule tests: they test when
# an alert fires and with which labels, not its prose.
bare = json.loads(json.dumps(prule["spec"]["groups"]))
for g in bare:
    for r in g["rules"]:
        r.pop("annotations", None)
with open(f"{work}/rules-bare.yaml", "w") as f:
    yaml.safe_dump({"groups": bare}, f)
cm = next(d for d in renders["all-on"] if d["kind"] == "ConfigMap")
dash = json.loads(cm["data"]["slicecache.json"])
check(cm["metadata"]["labels"].get("grafana_dashboard") == "1", "dashboard ConfigMap is labelled grafana_dashboard: \"1\"")
for p in dash["panels"]:
    for t in p.get("targets", []):
        exprs.append((f"panel {p['title']!r}", t["expr"]))
for v in dash["templating"]["list"]:
    q = v.get("query")
    if isinstance(q, dict):
        m = re.match(r"label_values\((.*),\s*\w+\)$", q["query"])
        if m:
            exprs.append((f"variable {v['name']}", m.group(1)))
used = {}
for where, expr in exprs:
    names = metric_names(expr)
    if not names:
        failures.append(f"{where}: no metric found in {expr!r}")
    for n in names:
        used.setdefault(n, []).append(where)
print(f"    {len(exprs)} expressions name {len(used)} metrics")
missing = {n: w for n, w in used.items() if n not in known}
for n, where in sorted(missing.items()):
    base = re.sub(r"_(bucket|sum|count)$", "", n)
    hint = " (a histogram is queried through _bucket, _sum or _count)" if any(k.startswith(n + "_bucket") for k in known) else ""
    print(f"    FAIL metric {n}{hint} used by {', '.join(sorted(set(where)))} is not exported")
    failures.append(f"unknown metric {n}")
if not missing:
    print("    ok   every metric exists: " + " ".join(sorted(used)))
if failures:
    sys.exit(1)
EOF

step "kubectl apply --dry-run=client of the all-on rendering and examples/minimal.yaml (discovery stub)"
# kubectl needs API discovery to map kinds to resources, even for a client
# dry run; a stub on 127.0.0.1 answers it for the kinds the chart creates.
stub_port="$(free_port)"
cat >"$work/discovery_stub.py" <<'EOF'
import json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
groups = {
    ("", "v1"): [("serviceaccounts", "ServiceAccount", True), ("services", "Service", True), ("configmaps", "ConfigMap", True)],
    ("apps", "v1"): [("deployments", "Deployment", True)],
    ("rbac.authorization.k8s.io", "v1"): [("clusterroles", "ClusterRole", False), ("clusterrolebindings", "ClusterRoleBinding", False),
                                          ("roles", "Role", True), ("rolebindings", "RoleBinding", True)],
    ("apiextensions.k8s.io", "v1"): [("customresourcedefinitions", "CustomResourceDefinition", False)],
    ("monitoring.coreos.com", "v1"): [("servicemonitors", "ServiceMonitor", True), ("podmonitors", "PodMonitor", True), ("prometheusrules", "PrometheusRule", True)],
    ("slicecache.io", "v1alpha1"): [("slicecaches", "SliceCache", True)],
}
def resources(gv):
    return [{"name": n, "singularName": "", "namespaced": ns, "kind": k, "verbs": ["get", "list", "create", "patch"]} for n, k, ns in groups[gv]]
class Discovery(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass
    def do_GET(self):
        path = self.path.split("?")[0]
        if path == "/api":
            body = {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
        elif path == "/apis":
            body = {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                {"name": g, "versions": [{"groupVersion": f"{g}/{v}", "version": v}],
                 "preferredVersion": {"groupVersion": f"{g}/{v}", "version": v}} for (g, v) in groups if g]}
        elif path == "/api/v1":
            body = {"kind": "APIResourceList", "groupVersion": "v1", "resources": resources(("", "v1"))}
        elif path.startswith("/apis/") and tuple(path[6:].split("/")) in groups:
            g, v = path[6:].split("/")
            body = {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"{g}/{v}", "resources": resources((g, v))}
        else:
            self.send_response(404)
            self.end_headers()
            return
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
HTTPServer(("127.0.0.1", int(sys.argv[1])), Discovery).serve_forever()
EOF
"$PY" "$work/discovery_stub.py" "$stub_port" >"$work/stub.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$stub_port/api" || fail "discovery stub did not start"
kube=(kubectl --server "http://127.0.0.1:$stub_port")
export KUBECONFIG="$work/no-kubeconfig"
HOME="$work" "${kube[@]}" apply --dry-run=client --validate=false -n slicecache-system -f "$work/all-on.yaml" >"$work/dry-run.txt" 2>&1 ||
  { cat "$work/dry-run.txt"; fail "kubectl rejected the rendered chart"; }
HOME="$work" "${kube[@]}" apply --dry-run=client --validate=false -f examples/minimal.yaml >>"$work/dry-run.txt" 2>&1 ||
  { cat "$work/dry-run.txt"; fail "kubectl rejected examples/minimal.yaml"; }
sed 's/^/    /' "$work/dry-run.txt"

step "promtool check rules and test rules"
if ! command -v promtool >/dev/null 2>&1; then bash scripts/install-deps.sh; fi
promtool check rules "$work/rules.yaml"
# Times start at 0 in promtool tests, so time() is the minutes below in
# seconds. The all-on values keep the default `for` durations (tuning 30m,
# agents 15m) and add team: platform to every alert.
cat >"$work/rules-test.yaml" <<'EOF'
rule_files: [rules-bare.yaml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      # Prometheus down from the start: never a successful evaluation.
      - series: 'slicecache_operator_tuning_active{job="slicecache-operator",namespace="shop",slicecache="blind",reason="PrometheusUnreachable"}'
        values: '1x90'
      - series: 'slicecache_operator_tuning_interval_seconds{job="slicecache-operator",namespace="shop",slicecache="blind"}'
        values: '60x90'
      # Too little traffic: evaluations read the metrics, nothing to learn.
      - series: 'slicecache_operator_tuning_active{job="slicecache-operator",namespace="shop",slicecache="idle",reason="Idle"}'
        values: '1x90'
      - series: 'slicecache_operator_tuning_last_evaluation_timestamp_seconds{job="slicecache-operator",namespace="shop",slicecache="idle"}'
        values: '0+60x90'
      - series: 'slicecache_operator_tuning_interval_seconds{job="slicecache-operator",namespace="shop",slicecache="idle"}'
        values: '60x90'
      # Tuning every minute until minute 30, then no evaluation at all.
      - series: 'slicecache_operator_tuning_active{job="slicecache-operator",namespace="shop",slicecache="stopped",reason="Tuning"}'
        values: '1x90'
      - series: 'slicecache_operator_tuning_last_evaluation_timestamp_seconds{job="slicecache-operator",namespace="shop",slicecache="stopped"}'
        values: '0+60x30 1800x60'
      - series: 'slicecache_operator_tuning_interval_seconds{job="slicecache-operator",namespace="shop",slicecache="stopped"}'
        values: '60x90'
    alert_rule_test:
      - eval_time: 25m
        alertname: SliceCacheTuningStuck
        exp_alerts: []
      # blind: held since 0 -> fires after 30m; stopped: stale from 33m
      # (3 intervals) -> fires after 63m.
      - eval_time: 40m
        alertname: SliceCacheTuningStuck
        exp_alerts:
          - exp_labels: {severity: warning, team: platform, namespace: shop, slicecache: blind}
      - eval_time: 70m
        alertname: SliceCacheTuningStuck
        exp_alerts:
          - exp_labels: {severity: warning, team: platform, namespace: shop, slicecache: blind}
          - exp_labels: {severity: warning, team: platform, namespace: shop, slicecache: stopped}
  - interval: 1m
    input_series:
      - series: 'slicecache_operator_agents_desired{job="slicecache-operator",namespace="shop",slicecache="short"}'
        values: '3x40'
      - series: 'slicecache_operator_agents_ready{job="slicecache-operator",namespace="shop",slicecache="short"}'
        values: '2x40'
      - series: 'slicecache_operator_agents_desired{job="slicecache-operator",namespace="shop",slicecache="nowhere"}'
        values: '0x40'
      - series: 'slicecache_operator_agents_ready{job="slicecache-operator",namespace="shop",slicecache="nowhere"}'
        values: '0x40'
      - series: 'slicecache_operator_agents_desired{job="slicecache-operator",namespace="shop",slicecache="healthy"}'
        values: '3x40'
      - series: 'slicecache_operator_agents_ready{job="slicecache-operator",namespace="shop",slicecache="healthy"}'
        values: '3x40'
    alert_rule_test:
      - eval_time: 10m
        alertname: SliceCacheAgentsNotReady
        exp_alerts: []
      - eval_time: 20m
        alertname: SliceCacheAgentsNotReady
        exp_alerts:
          - exp_labels: {severity: warning, team: platform, namespace: shop, slicecache: short}
          - exp_labels: {severity: warning, team: platform, namespace: shop, slicecache: nowhere}
EOF
promtool test rules "$work/rules-test.yaml"

step "chart checks passed"
