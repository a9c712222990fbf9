#!/usr/bin/env bash
# bench/run.sh - benchmark slicecache-agent side by side with nginx's slice
# module, in one run, and regenerate docs/benchmarks.md (its text and tables
# are bench/report.sh's).
#
# Everything binds 127.0.0.1; every process started here is stopped on exit.
#
#   bash bench/run.sh
#
# Environment (all optional):
#   SLICECACHE_BIN   existing agent binary; skips `cargo build --release`
#   AGENT_COMMIT     commit that binary was built from, for the report
#   BASELINE_BIN     a second, older agent binary (the "before"): run as a
#                    third cache with the agent's flags, in the same rotation
#                    as the agent and nginx, for every hit cell (memory and
#                    disk tier), the cold misses, the far origin and the many
#                    cold clients; the report gains a "Before and after"
#                    section. Unset: agent and nginx only.
#   BASELINE_COMMIT  commit BASELINE_BIN was built from, for the report
#   (Every memory-tier hit cell also runs its load against the origin's own
#   files through a plain sendfile file server, in the same rotation: the
#   cell's ceiling, reported beside it with the goal verdict.)
#   DURATION         seconds per wrk run (6)
#   ROUNDS           wrk runs per cache and cell, rotating the caches (5)
#   OBJECTS          number of hit-set objects (8)
#   OBJECT_MIB       size of each object in MiB (64)
#   COLD_OBJECTS     objects fetched once each for the cold-miss pass (4)
#   FULL_CONNS       wrk connection counts for whole-object hits ("1 16 64"; empty: none)
#   RANGE_CONNS      wrk connection counts for range hits ("1 16 64 512")
#   RANGE_MIN/RANGE_MAX  range length bounds in bytes (65536 / 4194304)
#   SEED             wrk request-sequence seed (42)
#   MEMORY_CACHE     agent memory tier (1Gi); SLICE (1Mi); CONCURRENCY (4)
#   DISK_TIER        1: also run the disk-tier workload (default), 0: skip it
#   DISK_OBJECTS     objects in the disk-tier working set (OBJECTS)
#   DISK_MEMORY_CACHE  memory tier of the second, disk-tier agent (64Mi)
#   DISK_DEVICE_SIZE   its device file in the work directory (2Gi, sparse)
#   DISK_FULL_CONNS / DISK_RANGE_CONNS  disk-tier wrk connection counts
#                    (default: FULL_CONNS / RANGE_CONNS)
#   DROP_CACHES      1: `sync; echo 3 > /proc/sys/vm/drop_caches` before each
#                    disk-tier measurement of either cache (needs root);
#                    0: never; default: 1 when writable
#   SHMEM_THP        shmem huge page policies, a list ("never advise"): the
#                    memory-tier hit cells and the cold misses run once per
#                    policy, the agent (and baseline) restarted under each
#                    (nginx is not affected: its cache is on ext4); the other
#                    cases run once, under the first. Each is written to
#                    /sys/kernel/mm/transparent_hugepage/shmem_enabled and
#                    the host's setting is restored on exit (needs root: when
#                    the file is not writable the run keeps the host's
#                    setting, and the report says so). With `advise` the
#                    agent's memory tier asks for huge pages; `keep` is the
#                    host's setting
#   FAR_ORIGIN       1: the far-origin case (default), 0: skip it. A fresh
#                    agent and nginx (and baseline), each reaching the origin
#                    through its own delay-proxy (testkit/src/bin), fetch
#                    COLD_OBJECTS new OBJECT_MIB MiB objects once each
#   FAR_RTT_MS       that origin's round trip in ms (20; half each way)
#   DELAY_PROXY_BIN  existing delay-proxy binary; skips its cargo build
#   COLD_CLIENTS     clients at once in the many-cold-clients case (256; 0:
#                    skip it): each fetches a different new object once
#                    from a fresh agent (and baseline), then a fresh nginx
#   COLD_CLIENT_MIB  size of each of those objects in MiB (4)
#   FILL_LOAD        1: serving while the disk tier fills (default; with
#                    DISK_TIER=1), 0: skip it. The disk-tier caches serve
#                    random ranges with wrk, alone and while one more
#                    client pulls new objects (see bench/fill-load.sh)
#   FILL_LOAD_CONNS / FILL_LOAD_RATE / FILL_LOAD_ROUNDS  its wrk connections
#                    (16), the filling client's curl --limit-rate (48M) and
#                    rounds (2)
#   BENCH_OUT        output file (docs/benchmarks.md in the repository)
#   KEEP_WORK=1      keep the temporary directory (configs, logs, raw output)
#
# The default run takes about 36 minutes on 2 cores: each shmem policy's
# memory-tier hit cells and cold misses about 12 (two policies by default),
# the disk tier about 9 (with serving while it fills, 1 of them), the far origin and the many cold clients under a
# minute together, warm-ups and the rest about 2.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=${DURATION:-6}
ROUNDS=${ROUNDS:-5}
OBJECTS=${OBJECTS:-8}
OBJECT_MIB=${OBJECT_MIB:-64}
COLD_OBJECTS=${COLD_OBJECTS:-4}
FULL_CONNS=${FULL_CONNS-"1 16 64"}
RANGE_CONNS=${RANGE_CONNS-"1 16 64 512"}
RANGE_MIN=${RANGE_MIN:-65536}
RANGE_MAX=${RANGE_MAX:-4194304}
SEED=${SEED:-42}
MEMORY_CACHE=${MEMORY_CACHE:-1Gi}
SLICE=${SLICE:-1Mi}
CONCURRENCY=${CONCURRENCY:-4}
BENCH_OUT=${BENCH_OUT:-$ROOT/docs/benchmarks.md}
BASELINE_BIN=${BASELINE_BIN:-}
BASELINE_COMMIT=${BASELINE_COMMIT:-}
OBJECT_BYTES=$((OBJECT_MIB * 1048576))
SLICE_BYTES=$(numfmt --from=iec-i "$SLICE")   # e.g. 1Mi
DISK_TIER=${DISK_TIER:-1}
DISK_OBJECTS=${DISK_OBJECTS:-$OBJECTS}
DISK_MEMORY_CACHE=${DISK_MEMORY_CACHE:-64Mi}
DISK_DEVICE_SIZE=${DISK_DEVICE_SIZE:-2Gi}
DISK_FULL_CONNS=${DISK_FULL_CONNS-$FULL_CONNS}
DISK_RANGE_CONNS=${DISK_RANGE_CONNS-$RANGE_CONNS}
if [ -z "${DROP_CACHES:-}" ]; then
  DROP_CACHES=0
  [ -w /proc/sys/vm/drop_caches ] && DROP_CACHES=1
fi
SHMEM_THP=${SHMEM_THP:-never advise}
FAR_ORIGIN=${FAR_ORIGIN:-1}
FAR_RTT_MS=${FAR_RTT_MS:-20}
COLD_CLIENTS=${COLD_CLIENTS:-256}
COLD_CLIENT_MIB=${COLD_CLIENT_MIB:-4}
THP_FILE=/sys/kernel/mm/transparent_hugepage/shmem_enabled
thp_policy() { sed -n 's/.*\[\(.*\)\].*/\1/p' "$THP_FILE" 2>/dev/null || echo "n/a"; }
THP_BEFORE=$(thp_policy)
NOBJ=$((DISK_TIER == 1 && DISK_OBJECTS > OBJECTS ? DISK_OBJECTS : OBJECTS))
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

BENCH_TAG=bench
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
# shellcheck source=bench/report.sh
. "$ROOT/bench/report.sh"
# shellcheck source=bench/cold-cases.sh
. "$ROOT/bench/cold-cases.sh"
# shellcheck source=bench/fill-load.sh
. "$ROOT/bench/fill-load.sh"

# ---------------------------------------------------------------- tools
sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
NGINX=$(command -v nginx || true)
[ -n "$NGINX" ] || { [ -x /usr/sbin/nginx ] && NGINX=/usr/sbin/nginx; } || true
if [ -z "$NGINX" ] || ! command -v wrk >/dev/null || { [ -z "${SLICECACHE_BIN:-}" ] && ! command -v cmake >/dev/null; }; then
  log "installing nginx-light, wrk (and build dependencies)"
  bash "$ROOT/scripts/install-deps.sh"
  NGINX=$(command -v nginx || echo /usr/sbin/nginx)
fi
for t in curl sha256sum awk ss fincore; do
  command -v "$t" >/dev/null || { "${sudo_cmd[@]}" apt-get update -qq; "${sudo_cmd[@]}" apt-get install -y -qq curl coreutils gawk iproute2 util-linux >/dev/null; break; }
done
require_slice_module
BIN=$(agent_binary)
[ "$FAR_ORIGIN" != 1 ] || DELAY_PROXY=$(delay_proxy_binary)
CACHES="agent nginx"            # the memory-tier caches, in rotation order
DISK_CACHES="agent_disk nginx_disk"
if [ -n "$BASELINE_BIN" ]; then
  [ -x "$BASELINE_BIN" ] || die "no baseline agent binary at $BASELINE_BIN"
  # the baseline is run with the agent's flags: an older binary must have them
  BASELINE_HELP=$("$BASELINE_BIN" run --help 2>&1) || die "$BASELINE_BIN run --help failed"
  for flag in --origin --listen --admin-listen --memory-cache --slice-size --concurrency --device --device-size; do
    grep -qE -- "(^|[[:space:],])$flag([[:space:]=,]|\$)" <<< "$BASELINE_HELP" \
      || die "$BASELINE_BIN run does not accept $flag, which this script passes to both agents"
  done
  CACHES="agent baseline nginx"
  DISK_CACHES="agent_disk baseline_disk nginx_disk"
fi

# ---------------------------------------------------------------- workspace and cleanup
WORK=$(mktemp -d "${TMPDIR:-/tmp}/slicecache-bench.XXXXXX")
chmod 755 "$WORK"   # nginx workers started by root run as an unprivileged user
PIDS=()
restore_thp() {
  if [ "$(thp_policy)" != "$THP_BEFORE" ]; then echo "$THP_BEFORE" > "$THP_FILE" 2>/dev/null || true; fi
}
cleanup() {
  local rc=$?
  restore_thp
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  finish_work $rc
}
set_traps cleanup

stop_pid() { # pid: TERM, KILL after 5 s, and no longer in PIDS
  local p=$1 q keep=()
  kill -TERM "$p" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
  for q in "${PIDS[@]}"; do [ "$q" = "$p" ] || keep+=("$q"); done
  PIDS=("${keep[@]}")
}

# The shmem huge page policies, one memory-tier pass each (SHMEM_THP).
read -ra THP_LIST <<< "$SHMEM_THP"
THP_NOTE=""
for p in "${THP_LIST[@]}"; do
  [ "$p" = keep ] || [ "$p" = "$THP_BEFORE" ] || [ -w "$THP_FILE" ] || {
    THP_NOTE="SHMEM_THP asked for \"$SHMEM_THP\", but $THP_FILE is not writable here (it needs root), so this run kept the host's setting ($THP_BEFORE) and measured it once"
    log "$THP_NOTE"
    THP_LIST=(keep)
    break
  }
  [ "$p" = keep ] || tr -d '[]' < "$THP_FILE" | tr ' ' '\n' | grep -qx -- "$p" \
    || die "SHMEM_THP: $p is not keep or one of: $(tr -d '[]' < "$THP_FILE")"
done
set_thp() { # policy (keep: the host's); THP_RUN is then the file's policy
  local want=$1
  [ "$want" != keep ] || want=$THP_BEFORE
  if [ "$(thp_policy)" != "$want" ]; then
    echo "$want" > "$THP_FILE" 2>/dev/null || die "cannot write $want to $THP_FILE"
    log "shmem huge pages: $want (host setting $THP_BEFORE, restored on exit)"
  fi
  THP_RUN=$(thp_policy)
}
set_thp "${THP_LIST[0]}"
FIRST_THP=$THP_RUN   # the far origin, the many cold clients and the disk tier run under it

ORIGIN_PORT_AGENT=$(free_port)   # the origin listens twice so its log tells
ORIGIN_PORT_NGINX=$(free_port)   # which cache asked for which bytes
AGENT_PORT=$(free_port)
ADMIN_PORT=$(free_port)
NGINX_PORT=$(free_port)
ORIGIN_PORT_AGENT_DISK=$(free_port)   # the disk-tier pair has its own origin ports
ORIGIN_PORT_NGINX_DISK=$(free_port)
AGENT_DISK_PORT=$(free_port)
ADMIN_DISK_PORT=$(free_port)
NGINX_DISK_PORT=$(free_port)
ORIGIN_PORTS=("$ORIGIN_PORT_AGENT" "$ORIGIN_PORT_NGINX" "$ORIGIN_PORT_AGENT_DISK" "$ORIGIN_PORT_NGINX_DISK")
if [ -n "$BASELINE_BIN" ]; then   # the baseline agents get origin ports of their own
  ORIGIN_PORT_BASELINE=$(free_port)
  BASELINE_PORT=$(free_port)
  BASELINE_ADMIN_PORT=$(free_port)
  ORIGIN_PORT_BASELINE_DISK=$(free_port)
  BASELINE_DISK_PORT=$(free_port)
  BASELINE_DISK_ADMIN_PORT=$(free_port)
  ORIGIN_PORTS+=("$ORIGIN_PORT_BASELINE" "$ORIGIN_PORT_BASELINE_DISK")
fi
# The origin's one unlogged port: the memory-tier hit cells' ceiling, the same
# load against a plain sendfile file server serving the same objects (its
# requests stay out of the access log, so the caches' origin bytes per port
# are what they were).
CEILING_PORT=$(free_port)

# ---------------------------------------------------------------- origin
log "generating $NOBJ x $OBJECT_MIB MiB objects"
start_origin "$WORK/origin" "$NOBJ" "$OBJECT_BYTES" "${ORIGIN_PORTS[@]}" -- "$CEILING_PORT"
ORIGIN_PID=${PIDS[-1]}

# ---------------------------------------------------------------- nginx slice caches (the peers)
start_peer() { # dir listen-port origin-port max-size; prints the master's pid
  local dir=$1
  mkdir -p "$dir/cache" "$dir/tmp"
  cat > "$dir/nginx.conf" <<EOF
daemon off;
worker_processes 2;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 8192; }
http {
  default_type application/octet-stream;
  access_log off;
  client_body_temp_path $dir/tmp/client;
  proxy_temp_path $dir/tmp/proxy;
  fastcgi_temp_path $dir/tmp/fastcgi;
  uwsgi_temp_path $dir/tmp/uwsgi;
  scgi_temp_path $dir/tmp/scgi;
  sendfile on;
  keepalive_requests 1000000;
  proxy_cache_path $dir/cache levels=1:2 keys_zone=slices:64m max_size=$4 inactive=1h use_temp_path=off;
  upstream origin {
    server 127.0.0.1:$3;
    keepalive 64;
  }
  server {
    listen 127.0.0.1:$2;
    location / {
      slice 1m;
      proxy_cache slices;
      proxy_cache_key \$uri\$is_args\$args\$slice_range;
      proxy_set_header Range \$slice_range;
      proxy_cache_valid 200 206 1h;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_pass http://origin;
    }
  }
}
EOF
  "$NGINX" -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" >/dev/null 2>&1 &
  echo $!
}
NGINX_PID=$(start_peer "$WORK/peer" "$NGINX_PORT" "$ORIGIN_PORT_NGINX" 8g)
PIDS+=("$NGINX_PID")

# ---------------------------------------------------------------- the agent
launch_agent() { # binary origin-port port admin-port log [flag...]: an agent
  # with this run's slice size and concurrency (and the given flags); its
  # pid in LAUNCHED
  local bin=$1 origin=$2 port=$3 admin=$4 logf=$5
  shift 5
  "$bin" run --origin "http://127.0.0.1:$origin" \
    --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" \
    --slice-size "$SLICE" --concurrency "$CONCURRENCY" "$@" > "$logf" 2>&1 &
  LAUNCHED=$!
  PIDS+=("$LAUNCHED")
}
start_agents() { # log-suffix: the memory-tier agent (and baseline), ready
  launch_agent "$BIN" "$ORIGIN_PORT_AGENT" "$AGENT_PORT" "$ADMIN_PORT" "$WORK/agent$1.log" --memory-cache "$MEMORY_CACHE"
  AGENT_PID=$LAUNCHED AGENT_LOG=$WORK/agent$1.log
  if [ -n "$BASELINE_BIN" ]; then   # the "before": the same flags, its own ports
    launch_agent "$BASELINE_BIN" "$ORIGIN_PORT_BASELINE" "$BASELINE_PORT" "$BASELINE_ADMIN_PORT" "$WORK/baseline$1.log" --memory-cache "$MEMORY_CACHE"
    BASELINE_PID=$LAUNCHED BASELINE_LOG=$WORK/baseline$1.log
    wait_http "http://127.0.0.1:$BASELINE_ADMIN_PORT/healthz"
  fi
  wait_http "http://127.0.0.1:$ADMIN_PORT/healthz"
}
start_agents ""
wait_http "http://127.0.0.1:$NGINX_PORT/__ready"
AGENT="http://127.0.0.1:$AGENT_PORT"
PEER="http://127.0.0.1:$NGINX_PORT"
ORIGIN_LOG=$WORK/origin/access.log

# ---------------------------------------------------------------- the disk-tier pair
# A second agent with a small memory tier and a device file, and a second
# nginx whose cache directory is on the same filesystem as that file.
if [ "$DISK_TIER" = 1 ]; then
  mkdir -p "$WORK/disk"
  launch_agent "$BIN" "$ORIGIN_PORT_AGENT_DISK" "$AGENT_DISK_PORT" "$ADMIN_DISK_PORT" "$WORK/agent-disk.log" \
    --memory-cache "$DISK_MEMORY_CACHE" --device "$WORK/disk/agent.dev" --device-size "$DISK_DEVICE_SIZE"
  AGENT_DISK_PID=$LAUNCHED
  if [ -n "$BASELINE_BIN" ]; then
    launch_agent "$BASELINE_BIN" "$ORIGIN_PORT_BASELINE_DISK" "$BASELINE_DISK_PORT" "$BASELINE_DISK_ADMIN_PORT" "$WORK/baseline-disk.log" \
      --memory-cache "$DISK_MEMORY_CACHE" --device "$WORK/disk/baseline.dev" --device-size "$DISK_DEVICE_SIZE"
    BASELINE_DISK_PID=$LAUNCHED
    wait_http "http://127.0.0.1:$BASELINE_DISK_ADMIN_PORT/healthz"
  fi
  NGINX_DISK_PID=$(start_peer "$WORK/disk/peer" "$NGINX_DISK_PORT" "$ORIGIN_PORT_NGINX_DISK" "$((DISK_OBJECTS * OBJECT_MIB * 2))m")
  PIDS+=("$NGINX_DISK_PID")
  wait_http "http://127.0.0.1:$ADMIN_DISK_PORT/healthz"
  wait_http "http://127.0.0.1:$NGINX_DISK_PORT/__ready"
fi

# ---------------------------------------------------------------- measurement helpers
log_lines() { wc -l < "$ORIGIN_LOG"; }
origin_bytes_since() { # line port -> body bytes the origin sent to that port's cache since line
  awk -v from="$1" -v port="$2" 'NR > from && $1 == port { s += $3 } END { printf "%.0f\n", s }' "$ORIGIN_LOG"
}
agent_metric() { # series [admin port]: a series' value, summed over its labels if given without any
  curl -s "http://127.0.0.1:${2:-$ADMIN_PORT}/metrics" | awk -v m="$1" '$1 == m || index($1, m "{") == 1 { s += $2; f = 1 } END { printf "%.0f\n", f ? s : 0 }'
}
url_of() {
  case $1 in
    agent) echo "$AGENT" ;; nginx) echo "$PEER" ;;
    agent_disk) echo "http://127.0.0.1:$AGENT_DISK_PORT" ;; nginx_disk) echo "http://127.0.0.1:$NGINX_DISK_PORT" ;;
    baseline) echo "http://127.0.0.1:$BASELINE_PORT" ;; baseline_disk) echo "http://127.0.0.1:$BASELINE_DISK_PORT" ;;
    ceiling) echo "http://127.0.0.1:$CEILING_PORT" ;;
    *) echo "${XURL[$1]}" ;;   # a cache a case started for itself (cold-cases.sh)
  esac
}
origin_port_of() {
  case $1 in
    agent) echo "$ORIGIN_PORT_AGENT" ;; nginx) echo "$ORIGIN_PORT_NGINX" ;;
    agent_disk) echo "$ORIGIN_PORT_AGENT_DISK" ;; nginx_disk) echo "$ORIGIN_PORT_NGINX_DISK" ;;
    baseline) echo "$ORIGIN_PORT_BASELINE" ;; baseline_disk) echo "$ORIGIN_PORT_BASELINE_DISK" ;;
    ceiling) echo "$CEILING_PORT" ;;   # unlogged: always 0 origin bytes
    *) echo "${XORIGIN[$1]}" ;;
  esac
}
admin_port_of() { # an agent's admin port
  case $1 in
    agent) echo "$ADMIN_PORT" ;; agent_disk) echo "$ADMIN_DISK_PORT" ;;
    baseline) echo "$BASELINE_ADMIN_PORT" ;; baseline_disk) echo "$BASELINE_DISK_ADMIN_PORT" ;;
    *) echo "${XADMIN[$1]:-}" ;;
  esac
}
rotate() { # k name...: the names rotated left by k, so rounds vary who goes first
  local k=$1
  shift
  local -a n=("$@")
  local i
  for i in "${!n[@]}"; do printf '%s ' "${n[(i + k) % ${#n[@]}]}"; done
}
pids_of() { # an agent, or an nginx master and its workers
  case $1 in
    agent) echo "$AGENT_PID" ;;
    agent_disk) echo "$AGENT_DISK_PID" ;;
    baseline) echo "$BASELINE_PID" ;;
    baseline_disk) echo "$BASELINE_DISK_PID" ;;
    nginx) echo "$NGINX_PID" "$(ps -o pid= --ppid "$NGINX_PID")" ;;
    nginx_disk) echo "$NGINX_DISK_PID" "$(ps -o pid= --ppid "$NGINX_DISK_PID")" ;;
    ceiling) echo "$ORIGIN_PID" "$(ps -o pid= --ppid "$ORIGIN_PID")" ;;
    nginx_*) echo "${XPID[$1]}" "$(ps -o pid= --ppid "${XPID[$1]}")" ;;
    *) echo "${XPID[$1]}" ;;
  esac
}
reset_peak() { # VmHWM restarts from the current RSS (clear_refs 5)
  local p
  for p in $(pids_of "$1"); do echo 5 > "/proc/$p/clear_refs" 2>/dev/null || PEAK_RESET=no; done
}
peak_kib() { # sum of VmHWM over the processes, KiB
  local p s=0 v
  for p in $(pids_of "$1"); do
    v=$(awk '/^VmHWM:/ { print $2 }' "/proc/$p/status" 2>/dev/null || echo 0)
    s=$((s + ${v:-0}))
  done
  echo "$s"
}
PEAK_RESET=yes
CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() { # user+system CPU of the processes, in clock ticks
  local p s=0 v
  for p in $(pids_of "$1"); do
    v=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{ print $12 + $13 }')
    s=$((s + ${v:-0}))
  done
  echo "$s"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

# ---------------------------------------------------------------- warm-up and correctness
CHECKS=()
check() { # name expected actual
  if [ "$2" = "$3" ]; then CHECKS+=("| $1 | match |"); else CHECKS+=("| $1 | **MISMATCH** ($3 vs $2) |"); FAILED=1; fi
}
FAILED=0
SUM1=$(sha256sum < "$WORK/origin/data/obj-1" | cut -d' ' -f1)
RANGE_FIRST=1000000 RANGE_LAST=3099999
RSUM=$(set +o pipefail; tail -c +$((RANGE_FIRST + 1)) "$WORK/origin/data/obj-1" | head -c $((RANGE_LAST - RANGE_FIRST + 1)) | sha256sum | cut -d' ' -f1)

declare -A WARM_S WARM2
warm_up() { # [-c] cache...: every hit-set object once through each (misses,
  # timed), then once more (hits: origin bytes in WARM2), and correctness
  # checks (-c: the ceiling's file server's too); THP_LABEL names the pass
  local name url start i line what with_ceiling=""
  [ "$1" != -c ] || { with_ceiling=ceiling; shift; }
  log "warm-up: every object once through $* (misses)"
  for name in "$@"; do
    url=$(url_of "$name")
    start=$(date +%s.%N)
    for i in $(seq "$OBJECTS"); do
      if [ "$i" = 1 ]; then
        check "obj-1 through $name on a miss (sha256${THP_LABEL:+, shmem $THP_LABEL})" "$SUM1" "$(curl -sf "$url/obj-1" | sha256sum | cut -d' ' -f1)"
      else
        curl -sf -o /dev/null "$url/obj-$i"
      fi
    done
    WARM_S[$name]=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.2f", e - s }')
  done
  sleep 1   # let fills that outlived their client land in the cache
  log "second pass: should be all hits, no origin bytes"
  line=$(log_lines)
  for name in "$@"; do
    url=$(url_of "$name")
    for i in $(seq "$OBJECTS"); do curl -sf -o /dev/null "$url/obj-$i"; done
  done
  for name in "$@"; do WARM2[$name]=$(origin_bytes_since "$line" "$(origin_port_of "$name")"); done
  for name in "$@" $with_ceiling; do   # the ceiling: the same URIs, straight from the files
    url=$(url_of "$name")
    what="$name on a hit"
    [ "$name" != ceiling ] || what="the ceiling's file server"
    check "obj-1 through $what (sha256${THP_LABEL:+, shmem $THP_LABEL})" "$SUM1" "$(curl -sf "$url/obj-1" | sha256sum | cut -d' ' -f1)"
    got=$(curl -sf -H "Range: bytes=$RANGE_FIRST-$RANGE_LAST" -w '%{http_code}' -o "$WORK/range.out" "$url/obj-1")
    check "obj-1 bytes=$RANGE_FIRST-$RANGE_LAST through ${what% on a hit} (status, sha256${THP_LABEL:+, shmem $THP_LABEL})" "206 $RSUM" "$got $(sha256sum < "$WORK/range.out" | cut -d' ' -f1)"
  done
}
THP_LABEL=""
# shellcheck disable=SC2086 # CACHES is a word list
warm_up -c $CACHES

# ---------------------------------------------------------------- hit workloads
ROWS=()
declare -A CEILING   # "mode conns" -> the ceiling's RESULT line of that memory-tier cell
DISK_ROWS=()
DISK_SRC=()
drop_caches() { # before each disk-tier measurement of either cache, when enabled
  [ "$DROP_CACHES" = 1 ] || return 0
  sync
  echo 3 > /proc/sys/vm/drop_caches
}
resident_mib() { # MiB of a directory's files in the page cache
  find "$1" -type f -print0 | xargs -0 -r fincore -bno RES 2>/dev/null | awk '{ s += $1 } END { printf "%.0f", s / 1048576 }'  || echo "?"
}
combine_rounds() { # file of RESULT lines, one per round -> one RESULT line
  # Counts and durations add up, p50 and p99 are the median over the
  # rounds, the mean is weighted by requests, the max is the max.
  awk '
    { for (i = 2; i <= NF; i++) { split($i, kv, "="); v[NR, kv[1]] = kv[2]; keys[kv[1]] = 1 } }
    function median(k,   n, a, i, j, t) {
      n = 0; for (i = 1; i <= NR; i++) a[++n] = v[i, k] + 0
      for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j > 0 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
      return sprintf("%.0f", n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2)
    }
    END {
      split("requests bytes duration_us connect read write status timeout", sums, " ")
      line = "RESULT"
      for (i = 1; i in sums; i++) { s = 0; for (r = 1; r <= NR; r++) s += v[r, sums[i]]; line = line " " sums[i] "=" sprintf("%.0f", s); tot[sums[i]] = s }
      line = line " p50_us=" median("p50_us") " p99_us=" median("p99_us")
      m = 0; for (r = 1; r <= NR; r++) m += v[r, "mean_us"] * v[r, "requests"]
      line = line " mean_us=" sprintf("%.0f", tot["requests"] ? m / tot["requests"] : 0)
      mx = 0; for (r = 1; r <= NR; r++) if (v[r, "max_us"] + 0 > mx) mx = v[r, "max_us"] + 0
      print line " max_us=" sprintf("%.0f", mx)
    }' "$1"
}
run_wrk() { # mode conns [disk]
  local mode=$1 conns=$2 set=${3:-mem} name url threads out line0 res nobj=$OBJECTS names="$CACHES ceiling" round order
  local dh0 mh0 dh mh bdh0 bmh0 bdh bmh resident=""
  threads=$((conns < 2 ? conns : 2))
  [ "$set" = disk ] && { nobj=$DISK_OBJECTS; names=$DISK_CACHES; }
  local -A R CPU0
  line0=$(log_lines)
  for name in $names; do
    : > "$WORK/wrk-$set-$mode-$conns-$name.rounds"
    reset_peak "$name"
    CPU0[$name]=$(cpu_ticks "$name")
  done
  [ "$set" = disk ] && { dh0=$(agent_metric 'slicecache_slices_total{result="hit",tier="disk"}' "$ADMIN_DISK_PORT"); mh0=$(agent_metric 'slicecache_slices_total{result="hit",tier="memory"}' "$ADMIN_DISK_PORT"); }
  if [ "$set" = disk ] && [ -n "$BASELINE_BIN" ]; then
    bdh0=$(agent_metric 'slicecache_slices_total{result="hit",tier="disk"}' "$BASELINE_DISK_ADMIN_PORT")
    bmh0=$(agent_metric 'slicecache_slices_total{result="hit",tier="memory"}' "$BASELINE_DISK_ADMIN_PORT")
  fi
  # Rounds rotate the caches and, for the memory tier, the ceiling (the
  # order shifts by one each round, so each goes first in turn), so that all
  # see the same drift of a shared machine.
  for round in $(seq "$ROUNDS"); do
    # shellcheck disable=SC2086 # names is a word list
    order=$(rotate $((round - 1)) $names)
    for name in $order; do
      url=$(url_of "$name")
      out="$WORK/wrk-$set-$mode-$conns-$name-$round.txt"
      [ "$set" = disk ] && drop_caches
      log "wrk $mode -c $conns -d ${DURATION}s against $name (round $round of $ROUNDS)"
      BENCH_MODE=$mode BENCH_OBJECTS=$nobj BENCH_SIZE=$OBJECT_BYTES BENCH_PREFIX=/obj- BENCH_SEED=$((SEED + round - 1)) \
        BENCH_RMIN=$RANGE_MIN BENCH_RMAX=$RANGE_MAX \
        wrk -t "$threads" -c "$conns" -d "${DURATION}s" --timeout 120s --latency \
        -s "$ROOT/bench/wrk-slices.lua" "$url/" > "$out" 2>&1 || true
      sleep 0.5
      res=$(grep '^RESULT' "$out" || true)
      [ -n "$res" ] || die "wrk printed no result; see $out"
      log "  $res"
      echo "$res" >> "$WORK/wrk-$set-$mode-$conns-$name.rounds"
      # nginx's cache in the page cache right after its last run, before
      # another cache's run drops the page cache again
      if [ "$name" = nginx_disk ]; then
        resident="$(resident_mib "$WORK/disk/peer/cache") $(du -sm "$WORK/disk/peer/cache" | cut -f1)"
      fi
    done
  done
  for name in $names; do
    res=$(combine_rounds "$WORK/wrk-$set-$mode-$conns-$name.rounds")
    R[$name]="$res origin=$(origin_bytes_since "$line0" "$(origin_port_of "$name")") rss_kib=$(peak_kib "$name") cpu_ticks=$(( $(cpu_ticks "$name") - CPU0[$name] ))"
    log "  $name over $ROUNDS rounds: ${R[$name]}"
  done
  if [ "$set" = disk ]; then
    dh=$(( $(agent_metric 'slicecache_slices_total{result="hit",tier="disk"}' "$ADMIN_DISK_PORT") - dh0 ))
    mh=$(( $(agent_metric 'slicecache_slices_total{result="hit",tier="memory"}' "$ADMIN_DISK_PORT") - mh0 ))
    log "  agent slice hits during the runs: disk $dh, memory $mh"
    [ "$dh" -gt 0 ] || { CHECKS+=("| $mode $conns clients: agent hits from the disk tier | **NONE** (disk $dh, memory $mh) |"); FAILED=1; }
    if [ -n "$BASELINE_BIN" ]; then
      bdh=$(( $(agent_metric 'slicecache_slices_total{result="hit",tier="disk"}' "$BASELINE_DISK_ADMIN_PORT") - bdh0 ))
      bmh=$(( $(agent_metric 'slicecache_slices_total{result="hit",tier="memory"}' "$BASELINE_DISK_ADMIN_PORT") - bmh0 ))
      log "  baseline slice hits during the runs: disk $bdh, memory $bmh"
      [ "$bdh" -gt 0 ] || { CHECKS+=("| $mode $conns clients: baseline hits from the disk tier | **NONE** (disk $bdh, memory $bmh) |"); FAILED=1; }
    fi
    DISK_SRC+=("$mode $conns $dh $mh $resident${BASELINE_BIN:+ $bdh $bmh}")
    DISK_ROWS+=("$mode $conns | ${R[agent_disk]} | ${R[nginx_disk]}${BASELINE_BIN:+ | ${R[baseline_disk]}}")
  else
    ROWS+=("$mode $conns | ${R[agent]} | ${R[nginx]}${BASELINE_BIN:+ | ${R[baseline]}}")
    CEILING["$mode $conns"]=${R[ceiling]}
  fi
}
field() { # key line
  sed -n "s/.* $1=\([0-9-]*\).*/\1/p" <<< " $2"
}
warn_text() { # log: its three most frequent WARN/ERROR lines, with counts
  sed 's/\x1b\[[0-9;]*m//g' "$1" | { grep -E ' (WARN|ERROR) ' || true; } | sed 's/^[^ ]* *//' | sort | uniq -c | sort -rn | head -3 | awk '{ n = $1; $1 = ""; printf "%s`%s` (%d)", sep, substr($0, 2), n; sep = "; " }'
}

# ---------------------------------------------------------------- cold misses
declare -A COLD_T COLD_TTFB COLD_O COLD_N COLD_TTFBS COLD_OTTFBS
cold_misses() { # k: COLD_OBJECTS new objects (cold-k-i), each fetched once through each cache
  local k=$1 i name url order total ttfb size code line0
  log "cold misses: $COLD_OBJECTS new $OBJECT_MIB MiB objects, each fetched once through each cache"
  for i in $(seq "$COLD_OBJECTS"); do
    head -c "$OBJECT_BYTES" /dev/urandom > "$WORK/origin/data/cold-$k-$i"
  done
  for name in $CACHES; do COLD_T[$name]=0; COLD_TTFB[$name]=0; COLD_N[$name]=0; COLD_TTFBS[$name]=""; COLD_OTTFBS[$name]=""; done
  line0=$(log_lines)
  for i in $(seq "$COLD_OBJECTS"); do
    order=$CACHES   # with a baseline, who goes first rotates object by object
    # shellcheck disable=SC2086 # CACHES is a word list
    [ -n "$BASELINE_BIN" ] && order=$(rotate $((i - 1)) $CACHES)
    for name in $order; do # interleaved, so all see the same machine state
      url=$(url_of "$name")
      # The origin's own time to first byte for this object's first slice,
      # from its unlogged port, just before the cache asks for it.
      COLD_OTTFBS[$name]+=" $(curl -s -o /dev/null -H "Range: bytes=0-$((SLICE_BYTES - 1))" -w '%{time_starttransfer}' "$(url_of ceiling)/cold-$k-$i")"
      read -r total ttfb size code < <(curl -s -o /dev/null -w '%{time_total} %{time_starttransfer} %{size_download} %{http_code}\n' "$url/cold-$k-$i")
      COLD_TTFBS[$name]+=" $ttfb"
      if [ "$code" != 200 ] || [ "$size" != "$OBJECT_BYTES" ]; then check "cold-$k-$i through $name" "200 $OBJECT_BYTES" "$code $size"; fi
      COLD_T[$name]=$(awk -v a="${COLD_T[$name]}" -v b="$total" 'BEGIN { print a + b }')
      COLD_TTFB[$name]=$(awk -v a="${COLD_TTFB[$name]}" -v b="$ttfb" 'BEGIN { print a + b }')
      COLD_N[$name]=$((COLD_N[$name] + 1))
    done
  done
  sleep 1
  for name in $CACHES; do COLD_O[$name]=$(origin_bytes_since "$line0" "$(origin_port_of "$name")"); done
}
pass_numbers() { # the memory-tier agent's (and baseline's) numbers at the end of a pass
  if [ -n "$BASELINE_BIN" ]; then
    BASELINE_ORIGIN_METRIC=$(agent_metric slicecache_origin_bytes_total "$BASELINE_ADMIN_PORT")
    BASELINE_ORIGIN_LOG=$(origin_bytes_since "$PASS_LINE0" "$ORIGIN_PORT_BASELINE")
    BASELINE_HWM=$(awk '/^VmHWM:/ { print $2 }' "/proc/$BASELINE_PID/status")
    BASELINE_MEM_USED=$(agent_metric slicecache_memory_used_bytes "$BASELINE_ADMIN_PORT")
    BASELINE_ARENA=$(sed 's/\x1b\[[0-9;]*m//g' "$BASELINE_LOG" | grep -o 'huge_pages=[A-Za-z]*' | head -1 || true)
    BASELINE_WARN=$(grep -c -E 'WARN|ERROR' "$BASELINE_LOG" || true)
    BASELINE_WARN_TEXT=$(warn_text "$BASELINE_LOG")
  fi
  AGENT_ORIGIN_METRIC=$(agent_metric slicecache_origin_bytes_total)
  AGENT_ORIGIN_LOG=$(origin_bytes_since "$PASS_LINE0" "$ORIGIN_PORT_AGENT")
  AGENT_HWM=$(awk '/^VmHWM:/ { print $2 }' "/proc/$AGENT_PID/status")
  AGENT_MEM_USED=$(agent_metric slicecache_memory_used_bytes)
  SHMEM_HUGE_MIB=$(awk '/^ShmemHugePages:/ { printf "%d", $2 / 1024 }' /proc/meminfo)
  AGENT_ARENA=$(sed 's/\x1b\[[0-9;]*m//g' "$AGENT_LOG" | grep -o 'huge_pages=[A-Za-z]*' | head -1 || true)
  AGENT_WARN=$(grep -c -E 'WARN|ERROR' "$AGENT_LOG" || true)
  AGENT_WARN_TEXT=$(warn_text "$AGENT_LOG")
}
memory_pass() { # k: the memory-tier hit cells and the cold misses under
  # the k-th shmem policy, then their part of the report (save_pass)
  local k=$1 c
  ROWS=()
  CEILING=()
  for c in $FULL_CONNS; do run_wrk full "$c"; done
  for c in $RANGE_CONNS; do run_wrk range "$c"; done
  cold_misses "$k"
  pass_numbers
  save_pass "$k"
}
# Pass 1 (the first policy); the far origin, the many cold clients and the
# disk tier also run under it; then one pass per further policy.
PASS_LINE0=0
THP_LABEL=$THP_RUN
memory_pass 1
[ "$FAR_ORIGIN" != 1 ] || far_origin_case
[ "$COLD_CLIENTS" = 0 ] || cold_clients_case

# ---------------------------------------------------------------- disk tier
# A working set larger than the second agent's memory tier, so most hits are
# device reads; nginx's second peer caches the same set in files on the same
# filesystem as the agent's device file.
if [ "$DISK_TIER" = 1 ]; then
  DISK_WANT=$((DISK_OBJECTS * OBJECT_BYTES))
  log "disk tier: warm-up, $DISK_OBJECTS x $OBJECT_MIB MiB through the disk-tier agent ($DISK_MEMORY_CACHE memory, $DISK_DEVICE_SIZE device) and the second nginx"
  declare -A DWARM_S
  for name in $DISK_CACHES; do
    url=$(url_of "$name")
    start=$(date +%s.%N)
    for i in $(seq "$DISK_OBJECTS"); do curl -sf -o /dev/null "$url/obj-$i"; done
    DWARM_S[$name]=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.2f", e - s }')
  done
  # slices reach the device in the background: wait until all are written
  for _ in $(seq 600); do
    [ "$(agent_metric slicecache_disk_put_bytes_total "$ADMIN_DISK_PORT")" -ge "$DISK_WANT" ] && break
    sleep 0.1
  done
  DISK_PUT=$(agent_metric slicecache_disk_put_bytes_total "$ADMIN_DISK_PORT")
  [ "$DISK_PUT" -ge "$DISK_WANT" ] || log "WARNING: only $DISK_PUT of $DISK_WANT bytes reached the agent's device"
  if [ -n "$BASELINE_BIN" ]; then
    for _ in $(seq 600); do
      [ "$(agent_metric slicecache_disk_put_bytes_total "$BASELINE_DISK_ADMIN_PORT")" -ge "$DISK_WANT" ] && break
      sleep 0.1
    done
    BASELINE_DISK_PUT=$(agent_metric slicecache_disk_put_bytes_total "$BASELINE_DISK_ADMIN_PORT")
    [ "$BASELINE_DISK_PUT" -ge "$DISK_WANT" ] || log "WARNING: only $BASELINE_DISK_PUT of $DISK_WANT bytes reached the baseline's device"
  fi
  sync
  log "disk tier: second pass (all hits expected), then correctness through both"
  line=$(log_lines)
  dh0=$(agent_metric 'slicecache_slices_total{result="hit",tier="disk"}' "$ADMIN_DISK_PORT")
  if [ -n "$BASELINE_BIN" ]; then bdh0=$(agent_metric 'slicecache_slices_total{result="hit",tier="disk"}' "$BASELINE_DISK_ADMIN_PORT"); fi
  for name in $DISK_CACHES; do
    url=$(url_of "$name")
    for i in $(seq "$DISK_OBJECTS"); do curl -sf -o /dev/null "$url/obj-$i"; done
  done
  DWARM2_AGENT=$(origin_bytes_since "$line" "$ORIGIN_PORT_AGENT_DISK")
  DWARM2_NGINX=$(origin_bytes_since "$line" "$ORIGIN_PORT_NGINX_DISK")
  DWARM2_DISKHITS=$(( $(agent_metric 'slicecache_slices_total{result="hit",tier="disk"}' "$ADMIN_DISK_PORT") - dh0 ))
  if [ -n "$BASELINE_BIN" ]; then
    DWARM2_BASELINE=$(origin_bytes_since "$line" "$ORIGIN_PORT_BASELINE_DISK")
    DWARM2_BASELINE_DISKHITS=$(( $(agent_metric 'slicecache_slices_total{result="hit",tier="disk"}' "$BASELINE_DISK_ADMIN_PORT") - bdh0 ))
  fi
  for name in $DISK_CACHES; do
    url=$(url_of "$name")
    label=${name%_disk}
    check "obj-1 through the disk-tier $label on a hit (sha256)" "$SUM1" "$(curl -sf "$url/obj-1" | sha256sum | cut -d' ' -f1)"
    got=$(curl -sf -H "Range: bytes=$RANGE_FIRST-$RANGE_LAST" -w '%{http_code}' -o "$WORK/range.out" "$url/obj-1")
    check "obj-1 bytes=$RANGE_FIRST-$RANGE_LAST through the disk-tier $label (status, sha256)" "206 $RSUM" "$got $(sha256sum < "$WORK/range.out" | cut -d' ' -f1)"
  done

  # one client reading the whole working set once, right after the page
  # cache was dropped: nginx's first reads of its cache files go to the disk
  declare -A DCOLD_S DCOLD_DH
  for name in $DISK_CACHES; do
    url=$(url_of "$name")
    port=$ADMIN_DISK_PORT
    [ "$name" = baseline_disk ] && port=$BASELINE_DISK_ADMIN_PORT
    drop_caches
    dh0=$(agent_metric 'slicecache_slices_total{result="hit",tier="disk"}' "$port")
    start=$(date +%s.%N)
    for i in $(seq "$DISK_OBJECTS"); do curl -sf -o /dev/null "$url/obj-$i"; done
    DCOLD_S[$name]=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.3f", e - s }')
    DCOLD_DH[$name]=$(( $(agent_metric 'slicecache_slices_total{result="hit",tier="disk"}' "$port") - dh0 ))
  done

  DISK_LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
  for c in $DISK_FULL_CONNS; do run_wrk full "$c" disk; done
  for c in $DISK_RANGE_CONNS; do run_wrk range "$c" disk; done
  DISK_LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
  DISK_ORIGIN_AGENT=$(origin_bytes_since 0 "$ORIGIN_PORT_AGENT_DISK")
  DISK_ORIGIN_NGINX=$(origin_bytes_since 0 "$ORIGIN_PORT_NGINX_DISK")
  DISK_M_HITS=$(agent_metric slicecache_disk_hits_total "$ADMIN_DISK_PORT")
  DISK_M_MISSES=$(agent_metric slicecache_disk_misses_total "$ADMIN_DISK_PORT")
  DISK_M_USED=$(agent_metric slicecache_disk_used_bytes "$ADMIN_DISK_PORT")
  DISK_M_CAP=$(agent_metric slicecache_disk_capacity_bytes "$ADMIN_DISK_PORT")
  DISK_M_WRITTEN=$(agent_metric slicecache_disk_device_written_bytes_total "$ADMIN_DISK_PORT")
  DISK_M_CSUM=$(agent_metric slicecache_disk_checksum_failures_total "$ADMIN_DISK_PORT")
  DISK_M_IOERR=$(agent_metric slicecache_disk_io_errors_total "$ADMIN_DISK_PORT")
  DISK_M_RSUM=$(curl -s "http://127.0.0.1:$ADMIN_DISK_PORT/metrics" | awk 'index($1, "slicecache_disk_read_duration_seconds_sum") == 1 { s += $2 } END { print s + 0 }')
  DISK_M_RCOUNT=$(agent_metric slicecache_disk_read_duration_seconds_count "$ADMIN_DISK_PORT")
  DISK_MEM_USED=$(agent_metric slicecache_memory_used_bytes "$ADMIN_DISK_PORT")
  DISK_AGENT_HWM=$(awk '/^VmHWM:/ { print $2 }' "/proc/$AGENT_DISK_PID/status")
  DISK_PEER_ERR=$(grep -c -E '\[(error|crit|alert|emerg)\]' "$WORK/disk/peer/error.log" || true)
  DISK_AGENT_WARN=$(grep -c -E 'WARN|ERROR' "$WORK/agent-disk.log" || true)
  DISK_AGENT_WARN_TEXT=$(sed 's/\x1b\[[0-9;]*m//g' "$WORK/agent-disk.log" | { grep -E ' (WARN|ERROR) ' || true; } | sed 's/^[^ ]* *//' | sort | uniq -c | sort -rn | head -3 | awk '{ n = $1; $1 = ""; printf "%s`%s` (%d)", sep, substr($0, 2), n; sep = "; " }')
  DISK_DEV_KIB=$(du -k "$WORK/disk/agent.dev" | cut -f1)
  if [ -n "$BASELINE_BIN" ]; then
    BDISK_ORIGIN=$(origin_bytes_since 0 "$ORIGIN_PORT_BASELINE_DISK")
    BDISK_M_USED=$(agent_metric slicecache_disk_used_bytes "$BASELINE_DISK_ADMIN_PORT")
    BDISK_M_CSUM=$(agent_metric slicecache_disk_checksum_failures_total "$BASELINE_DISK_ADMIN_PORT")
    BDISK_M_IOERR=$(agent_metric slicecache_disk_io_errors_total "$BASELINE_DISK_ADMIN_PORT")
    BDISK_M_RSUM=$(curl -s "http://127.0.0.1:$BASELINE_DISK_ADMIN_PORT/metrics" | awk 'index($1, "slicecache_disk_read_duration_seconds_sum") == 1 { s += $2 } END { print s + 0 }')
    BDISK_M_RCOUNT=$(agent_metric slicecache_disk_read_duration_seconds_count "$BASELINE_DISK_ADMIN_PORT")
    BDISK_HWM=$(awk '/^VmHWM:/ { print $2 }' "/proc/$BASELINE_DISK_PID/status")
    BDISK_WARN=$(grep -c -E 'WARN|ERROR' "$WORK/baseline-disk.log" || true)
  fi
  # The device's own read ceiling, the way the agent reads it: direct 1 MiB
  # reads, four at a time (its read threads), over the part it has written.
  DISK_DD_MIB=$(( $(mib "$DISK_M_USED") / 4 * 4 ))
  drop_caches
  start=$(date +%s.%N)
  DD_PIDS=()
  for i in 0 1 2 3; do
    dd if="$WORK/disk/agent.dev" of=/dev/null bs=1M iflag=direct status=none \
      skip=$((i * DISK_DD_MIB / 4)) count=$((DISK_DD_MIB / 4)) &
    DD_PIDS+=($!)
  done
  wait "${DD_PIDS[@]}"
  DISK_DD_RATE=$(awk -v s="$start" -v e="$(date +%s.%N)" -v m="$DISK_DD_MIB" 'BEGIN { printf "%.0f", m / (e - s) }')
  # last: it pulls more from the origin than the numbers above account for
  [ "$FILL_LOAD" != 1 ] || fill_load_case
fi

# ---------------------------------------------------------------- further shmem policies
# The memory-tier agent (and baseline) restarted under each, so that its
# arena is made under it; nginx and the ceiling go on as they were.
for k in $(seq 2 "${#THP_LIST[@]}"); do
  set_thp "${THP_LIST[k - 1]}"
  THP_LABEL=$THP_RUN
  log "shmem policy $THP_RUN: restarting the memory-tier agent${BASELINE_BIN:+ and the baseline}"
  stop_pid "$AGENT_PID"
  [ -z "$BASELINE_BIN" ] || stop_pid "$BASELINE_PID"
  PASS_LINE0=$(log_lines)
  start_agents "-$k"
  warm_up agent ${BASELINE_BIN:+baseline}
  memory_pass "$k"
done
PEER_CACHE_KIB=$(du -sk "$WORK/peer/cache" | cut -f1)
ERRLINES=$(grep -c -E '\[(error|crit|alert|emerg)\]' "$WORK/peer/error.log" || true)

# ---------------------------------------------------------------- the report (bench/report.sh)
write_report
cat "$BENCH_OUT"
[ "$FAILED" = 0 ] || die "a correctness check failed (see the Correctness table)"
log "done"
