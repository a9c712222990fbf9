#!/usr/bin/env bash
# bench/fleet.sh - three caches behind one client spread, three ways, in one
# run: three slicecache agents in fleet mode (one cache across the three),
# the same three agents without the fleet flags (three independent caches),
# and three nginx slice caches. The working set is about twice one cache's
# capacity but fits in the three together, which is the case fleet mode is
# for: the independent caches keep evicting, the fleet keeps it all.
#
# Everything binds 127.0.0.1; every process started here is stopped on exit.
# The report (markdown) goes to stdout, and to BENCH_OUT when set; progress
# goes to stderr. docs/benchmarks.md is bench/run.sh's and is not touched.
#
#   bash bench/fleet.sh
#
# Each setup gets fresh caches and its own origin port. One origin (nginx
# serving generated random files) logs every response's $body_bytes_sent
# with the port it came in on. Per setup:
#   1. warm-up: each of the three caches reads every object once, whole,
#      with curl, one cache after the other;
#   2. measured pass: three wrk processes at once, one per cache, each
#      asking for random single ranges over the same objects
#      (bench/wrk-slices.lua, range mode, a seed per cache), for DURATION s;
#   3. counters (agents: /metrics on each admin port; nginx: its access log
#      with log_subrequest on, one line per slice) and VmHWM of every cache
#      process, then the three caches are stopped.
#
# Environment (all optional):
#   SLICECACHE_BIN   existing agent binary; skips `cargo build --release`
#   AGENT_COMMIT     commit that binary was built from, for the report
#   SETUPS           which setups, in this order ("fleet independent nginx")
#   DURATION         seconds of the measured pass (30)
#   OBJECTS          number of objects in the working set (10)
#   OBJECT_MIB       size of each object in MiB (56): 560 MiB in all, about
#                    2.2x one cache's memory tier, under the three's 768 MiB
#   MEMORY_CACHE     each agent's memory tier (256Mi); each nginx gets a
#                    proxy_cache max_size of the same size, and a keys zone
#                    that holds that many slices (see NGINX_KEYS_ZONE)
#   SLICE            slice size of the agents and nginx (1Mi)
#   FLEET_GRANULE    ownership granule in fleet mode (4Mi)
#   CONCURRENCY      agent origin subrequests per client request (4)
#   CONNS            wrk connections per cache (16)
#   WRK_THREADS      wrk threads per cache (1)
#   RANGE_MIN/RANGE_MAX  range length bounds in bytes (65536 / 4194304)
#   SEED             wrk seed; cache N uses SEED+N-1, the same in every setup (42)
#   NGINX_WORKERS    worker processes of each nginx cache (2)
#   NGINX_KEYS_ZONE  size of each nginx keys zone (default: room for
#                    MEMORY_CACHE / SLICE keys, rounded down to whole slab
#                    pages, 32 keys each). nginx enforces max_size only in
#                    its cache manager, which after its first pass next runs
#                    when the least recently used entry turns inactive (1h
#                    here): within a run of minutes the cache would grow past
#                    max_size and keep the whole working set. A full keys
#                    zone evicts the least recently used entry on the spot,
#                    so it is what holds nginx to the agents' capacity.
#                    Its price: a miss that finds the zone full and the 20
#                    least recently used entries all being read fails (500,
#                    or a response cut short; counted in the report). 64m is
#                    bench/run.sh's (then only max_size limits it).
#   BENCH_OUT        also write the report to this file
#   KEEP_WORK=1      keep the temporary directory (configs, logs, raw output)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SETUPS=${SETUPS:-"fleet independent nginx"}
DURATION=${DURATION:-30}
OBJECTS=${OBJECTS:-10}
OBJECT_MIB=${OBJECT_MIB:-56}
MEMORY_CACHE=${MEMORY_CACHE:-256Mi}
SLICE=${SLICE:-1Mi}
FLEET_GRANULE=${FLEET_GRANULE:-4Mi}
CONCURRENCY=${CONCURRENCY:-4}
CONNS=${CONNS:-16}
WRK_THREADS=${WRK_THREADS:-1}
RANGE_MIN=${RANGE_MIN:-65536}
RANGE_MAX=${RANGE_MAX:-4194304}
SEED=${SEED:-42}
NGINX_WORKERS=${NGINX_WORKERS:-2}
BENCH_OUT=${BENCH_OUT:-}
OBJECT_BYTES=$((OBJECT_MIB * 1048576))
WORKING_SET=$((OBJECTS * OBJECT_BYTES))
NCACHES=3
THP_FILE=/sys/kernel/mm/transparent_hugepage/shmem_enabled
THP=$(sed -n 's/.*\[\(.*\)\].*/\1/p' "$THP_FILE" 2>/dev/null || true)
THP=${THP:-n/a}
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

BENCH_TAG=fleet
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

to_bytes() { # 256Mi, 1Mi, 4194304, 1G -> bytes (binary units)
  local v=$1 n u
  n=${v%%[!0-9]*}
  u=${v#"$n"}
  [ -n "$n" ] || die "not a size: $v"
  case $u in
    "") echo "$n" ;;
    k|K|Ki) echo $((n << 10)) ;;
    m|M|Mi) echo $((n << 20)) ;;
    g|G|Gi) echo $((n << 30)) ;;
    *) die "not a size: $v (use bytes, Ki, Mi or Gi)" ;;
  esac
}
MEMORY_BYTES=$(to_bytes "$MEMORY_CACHE")
SLICE_BYTES=$(to_bytes "$SLICE")
to_bytes "$FLEET_GRANULE" >/dev/null
NGINX_MAX_SIZE="$((MEMORY_BYTES / 1024))k"
NGINX_KEYS=$((MEMORY_BYTES / SLICE_BYTES))   # slices one cache holds
if [ -z "${NGINX_KEYS_ZONE:-}" ]; then
  # Measured with nginx 1.22 (x86-64, 4 KiB pages): a keys zone of P pages
  # holds (P - 2) * 32 - 1 keys (128-byte slab chunks; two pages of overhead).
  zone_pages=$(( (NGINX_KEYS + 1) / 32 + 2 ))
  [ "$zone_pages" -ge 3 ] || zone_pages=3
  NGINX_KEYS_ZONE="$((zone_pages * 4))k"
  NGINX_ZONE_KEYS="$(( (zone_pages - 2) * 32 - 1 ))"
else
  NGINX_ZONE_KEYS="?"
fi
NGINX_SLICE="$((SLICE_BYTES / 1024))k"
for s in $SETUPS; do
  case $s in fleet|independent|nginx) ;; *) die "unknown setup $s (fleet, independent, nginx)" ;; esac
done
[ "$WORKING_SET" -lt $((NCACHES * MEMORY_BYTES)) ] \
  || log "WARNING: the working set ($((WORKING_SET >> 20)) MiB) does not fit in the three memory tiers ($((NCACHES * MEMORY_BYTES >> 20)) MiB)"
[ "$WORKING_SET" -gt "$MEMORY_BYTES" ] \
  || log "WARNING: the working set ($((WORKING_SET >> 20)) MiB) fits in one cache ($((MEMORY_BYTES >> 20)) MiB): nothing to compare"

# ---------------------------------------------------------------- tools
NGINX=$(command -v nginx || true)
[ -n "$NGINX" ] || { [ -x /usr/sbin/nginx ] && NGINX=/usr/sbin/nginx; } || true
if [ -z "$NGINX" ] || ! command -v wrk >/dev/null || { [ -z "${SLICECACHE_BIN:-}" ] && ! command -v cmake >/dev/null; }; then
  log "installing nginx-light, wrk (and build dependencies)"
  bash "$ROOT/scripts/install-deps.sh"
  NGINX=$(command -v nginx || echo /usr/sbin/nginx)
fi
for t in curl awk ss; do
  command -v "$t" >/dev/null || die "$t is missing (apt-get install -y curl gawk iproute2)"
done
require_slice_module
BIN=$(agent_binary)
HELP=$("$BIN" run --help 2>&1) || die "$BIN run --help failed"
for flag in --node-name --peer-listen --peers --peer-token-file --fleet-granule; do
  grep -qE -- "(^|[[:space:],])$flag([[:space:]=,]|\$)" <<< "$HELP" || die "$BIN run has no $flag: no fleet mode in this binary"
done
# a memory tier larger than the host's memory needs the override
FORCE_MEMORY=()
MEM_TOTAL_BYTES=$(awk '/^MemTotal:/ { printf "%.0f", $2 * 1024 }' /proc/meminfo)
[ "$MEMORY_BYTES" -le "$MEM_TOTAL_BYTES" ] || FORCE_MEMORY=(--force-memory-cache)

# ---------------------------------------------------------------- workspace and cleanup
WORK=$(mktemp -d "${TMPDIR:-/tmp}/slicecache-fleet.XXXXXX")
chmod 755 "$WORK"   # nginx workers started by root run as an unprivileged user
PIDS=()             # every process still running that this script started
stop_pids() { # pid...: TERM, wait up to 10 s, KILL; forget them
  local pid
  for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "$@"; do
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  forget_pids "$@"
}
forget_pids() { # pid...: exited and reaped; drop them from PIDS
  local keep=() p
  for p in "${PIDS[@]}"; do
    case " $* " in *" $p "*) ;; *) keep+=("$p") ;; esac
  done
  PIDS=("${keep[@]}")
}
cleanup() {
  local rc=$?
  trap - ERR
  [ ${#PIDS[@]} -eq 0 ] || stop_pids "${PIDS[@]}"
  finish_work $rc
}
set_traps cleanup


declare -A ORIGIN_PORT
for s in fleet independent nginx; do ORIGIN_PORT[$s]=$(free_port); done

# ---------------------------------------------------------------- origin
log "generating $OBJECTS x $OBJECT_MIB MiB objects"
start_origin "$WORK/origin" "$OBJECTS" "$OBJECT_BYTES" "${ORIGIN_PORT[fleet]}" "${ORIGIN_PORT[independent]}" "${ORIGIN_PORT[nginx]}"
ORIGIN_LOG=$WORK/origin/access.log
head -c 48 /dev/urandom | base64 | tr -d '\n/+=' > "$WORK/peer-token"   # >= 16 characters
chmod 600 "$WORK/peer-token"

# ---------------------------------------------------------------- the caches of one setup
# After start_setup: URLS[1..3] client URLs, ADMINS[1..3] agent admin ports
# (agents only), SETUP_PIDS the cache processes (nginx: the masters).
declare -a URLS ADMINS SETUP_PIDS
start_agents() { # setup (fleet | independent)
  local setup=$1 n peers="" args
  local -a listen admin peer
  for n in 1 2 3; do listen[n]=$(free_port); admin[n]=$(free_port); peer[n]=$(free_port); done
  for n in 1 2 3; do peers+="${peers:+,}node-$n=127.0.0.1:${peer[n]}"; done
  SETUP_PIDS=()
  for n in 1 2 3; do
    args=(run --origin "http://127.0.0.1:${ORIGIN_PORT[$setup]}"
      --listen "127.0.0.1:${listen[n]}" --admin-listen "127.0.0.1:${admin[n]}"
      --memory-cache "$MEMORY_CACHE" "${FORCE_MEMORY[@]}" --slice-size "$SLICE" --concurrency "$CONCURRENCY")
    if [ "$setup" = fleet ]; then
      args+=(--node-name "node-$n" --peer-listen "127.0.0.1:${peer[n]}" --peers "$peers"
        --peer-token-file "$WORK/peer-token" --fleet-granule "$FLEET_GRANULE")
    fi
    echo "$BIN ${args[*]}" > "$WORK/$setup-$n.cmd"
    "$BIN" "${args[@]}" > "$WORK/$setup-$n.log" 2>&1 &
    PIDS+=($!); SETUP_PIDS+=($!)
    URLS[n]="http://127.0.0.1:${listen[n]}"
    ADMINS[n]=${admin[n]}
  done
  for n in 1 2 3; do
    wait_http "http://127.0.0.1:${admin[n]}/healthz"
    if [ "$setup" = fleet ]; then wait_http "http://127.0.0.1:${peer[n]}/"; fi   # 403 without the token
  done
  if [ "$setup" = fleet ]; then
    for n in 1 2 3; do
      local members
      members=$(agent_metric slicecache_fleet_members "${admin[n]}")
      [ "$members" = 3 ] || die "node-$n sees $members fleet members, not 3 (see $WORK/fleet-$n.log)"
    done
  fi
}
start_nginx_caches() {
  local n dir port
  SETUP_PIDS=()
  for n in 1 2 3; do
    dir=$WORK/nginx-$n
    port=$(free_port)
    mkdir -p "$dir/cache" "$dir/tmp"
    # log_subrequest: one access log line per slice, each with its own
    # $upstream_cache_status (the main request's line is its first slice)
    cat > "$dir/nginx.conf" <<EOF
daemon off;
worker_processes $NGINX_WORKERS;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 8192; }
http {
  default_type application/octet-stream;
  log_format slices '\$upstream_cache_status \$status';
  access_log $dir/access.log slices;
  log_subrequest on;
  client_body_temp_path $dir/tmp/client;
  proxy_temp_path $dir/tmp/proxy;
  fastcgi_temp_path $dir/tmp/fastcgi;
  uwsgi_temp_path $dir/tmp/uwsgi;
  scgi_temp_path $dir/tmp/scgi;
  sendfile on;
  keepalive_requests 1000000;
  proxy_cache_path $dir/cache levels=1:2 keys_zone=slices$n:$NGINX_KEYS_ZONE max_size=$NGINX_MAX_SIZE inactive=1h use_temp_path=off;
  upstream origin {
    server 127.0.0.1:${ORIGIN_PORT[nginx]};
    keepalive 64;
  }
  server {
    listen 127.0.0.1:$port;
    location / {
      slice $NGINX_SLICE;
      proxy_cache slices$n;
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
    : > "$dir/access.log"
    "$NGINX" -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" >/dev/null 2>&1 &
    PIDS+=($!); SETUP_PIDS+=($!)
    URLS[n]="http://127.0.0.1:$port"
  done
  for n in 1 2 3; do wait_http "${URLS[n]}/__ready"; done
}

# ---------------------------------------------------------------- measurement helpers
ratio() { awk -v a="$1" -v b="$2" -v f="${3:-%.3f}" 'BEGIN { if (b > 0) printf f, a / b; else print "n/a" }'; }
field() { # key line
  sed -n "s/.* $1=\([0-9.-]*\).*/\1/p" <<< " $2"
}
agent_metric() { # series admin-port: a series' value, summed over its labels if given without any
  curl -s "http://127.0.0.1:$2/metrics" | awk -v m="$1" '$1 == m || index($1, m "{") == 1 { s += $2; f = 1 } END { printf "%.0f\n", f ? s : 0 }'
}
agent_counters() { # admin-port -> key=value line of the counters this script reads
  curl -s "http://127.0.0.1:$1/metrics" | awk '
    function add(k, v) { c[k] += v }
    index($1, "slicecache_slices_total{") == 1 {
      if ($1 ~ /result="hit"/) add("hit", $2); else if ($1 ~ /result="miss"/) add("miss", $2); else if ($1 ~ /result="coalesced"/) add("coalesced", $2)
    }
    index($1, "slicecache_peer_requests_total{") == 1 {
      if ($1 ~ /role="server"/ && $1 !~ /result="refused"/) add("peer_served", $2)
      if ($1 ~ /role="client"/ && $1 ~ /result="ok"/) add("peer_ok", $2)
      if ($1 ~ /role="client"/ && $1 !~ /result="ok"/) add("peer_failed", $2)
    }
    index($1, "slicecache_origin_requests_total{") == 1 { add("origin_requests", $2) }
    $1 == "slicecache_origin_bytes_total" { add("origin_bytes", $2) }
    $1 == "slicecache_client_bytes_total" { add("client_bytes", $2) }
    index($1, "slicecache_peer_bytes_total{") == 1 && $1 ~ /direction="in"/ { add("peer_in", $2) }
    $1 == "slicecache_memory_used_bytes" { add("memory_used", $2) }
    END {
      n = split("hit miss coalesced peer_served peer_ok peer_failed origin_requests origin_bytes client_bytes peer_in memory_used", k, " ")
      for (i = 1; i <= n; i++) printf "%s=%.0f ", k[i], c[k[i]] + 0
      print ""
    }'
}
nginx_counters() { # -> hit=.. lookups=.. summed over the three nginx caches' access logs
  cat "$WORK"/nginx-[123]/access.log | awk '
    $1 == "HIT" { h++ } $1 != "-" { n++ }
    END { printf "hit=%.0f lookups=%.0f\n", h, n }'
}
snapshot() { # setup -> one key=value line: the setup's counters now, summed over its caches
  local setup=$1 n line="" c
  line="origin_lines=$(wc -l < "$ORIGIN_LOG")"
  if [ "$setup" = nginx ]; then
    line+=" $(nginx_counters)"
  else
    local -A sum=()
    for n in 1 2 3; do
      for c in $(agent_counters "${ADMINS[n]}"); do
        sum[${c%%=*}]=$(( ${sum[${c%%=*}]:-0} + ${c#*=} ))
      done
    done
    for c in "${!sum[@]}"; do line+=" $c=${sum[$c]}"; done
  fi
  echo "$line"
}
delta() { # key snapshot-before snapshot-after
  local a b
  a=$(field "$1" "$3"); b=$(field "$1" "$2")
  echo $(( ${a:-0} - ${b:-0} ))
}
origin_since() { # line port -> "requests bytes" the origin sent on that port since line
  awk -v from="$1" -v port="$2" 'NR > from && $1 == port { n++; s += $3 } END { printf "%.0f %.0f\n", n, s }' "$ORIGIN_LOG"
}
peak_kib() { # sum of VmHWM over the setup's cache processes (nginx: masters and workers), KiB
  local p s=0 v pids=()
  for p in "${SETUP_PIDS[@]}"; do
    pids+=("$p")
    # shellcheck disable=SC2207 # pids are words
    if [ "$CUR_SETUP" = nginx ]; then pids+=($(ps -o pid= --ppid "$p")); fi
  done
  for p in "${pids[@]}"; do
    v=$(awk '/^VmHWM:/ { print $2 }' "/proc/$p/status" 2>/dev/null || echo 0)
    s=$((s + ${v:-0}))
  done
  echo "$s"
}

# ---------------------------------------------------------------- one setup
SUM1=$(sha256sum < "$WORK/origin/data/obj-1" | cut -d' ' -f1)
RANGE_FIRST=1000000 RANGE_LAST=$((OBJECT_BYTES - 1 < 9099999 ? OBJECT_BYTES - 1 : 9099999))
[ "$OBJECT_BYTES" -gt "$RANGE_FIRST" ] || die "OBJECT_MIB must be at least 1"
RSUM=$( (set +o pipefail; tail -c +$((RANGE_FIRST + 1)) "$WORK/origin/data/obj-1" | head -c $((RANGE_LAST - RANGE_FIRST + 1)) | sha256sum | cut -d' ' -f1) )
CHECKS=()
FAILED=0
check() { # name expected actual
  if [ "$2" = "$3" ]; then CHECKS+=("| $1 | match |"); else CHECKS+=("| $1 | **MISMATCH** ($3 vs $2) |"); FAILED=1; fi
}
declare -A R   # R[setup.key] = value
CUR_SETUP=""
run_setup() { # setup
  local setup=$1 n s0 s1 s2 line0 line1 start wbytes=0 pids=() res
  CUR_SETUP=$setup
  log "== $setup: starting three caches"
  case $setup in
    fleet|independent) start_agents "$setup" ;;
    nginx) start_nginx_caches ;;
  esac
  s0=$(snapshot "$setup"); line0=$(wc -l < "$ORIGIN_LOG")

  log "$setup: warm-up, every object once through each cache ($((WORKING_SET >> 20)) MiB each)"
  start=$(date +%s.%N)
  for n in 1 2 3; do
    for i in $(seq "$OBJECTS"); do
      if [ "$i" = 1 ]; then
        check "$setup: obj-1 through cache $n on its first read (sha256)" "$SUM1" "$(curl -sf "${URLS[n]}/obj-1" | sha256sum | cut -d' ' -f1)"
        wbytes=$((wbytes + OBJECT_BYTES))
      else
        wbytes=$((wbytes + $(curl -sf -o /dev/null -w '%{size_download}' "${URLS[n]}/obj-$i")))
      fi
    done
  done
  R[$setup.warm_s]=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
  sleep 1   # fills that outlived their client land, the origin logs them
  s1=$(snapshot "$setup"); line1=$(wc -l < "$ORIGIN_LOG")

  log "$setup: measured pass, $NCACHES wrk at once, $CONNS connections each, ${DURATION}s"
  for n in 1 2 3; do
    BENCH_MODE=range BENCH_OBJECTS=$OBJECTS BENCH_SIZE=$OBJECT_BYTES BENCH_PREFIX=/obj- BENCH_SEED=$((SEED + n - 1)) \
      BENCH_RMIN=$RANGE_MIN BENCH_RMAX=$RANGE_MAX \
      wrk -t "$WRK_THREADS" -c "$CONNS" -d "${DURATION}s" --timeout 60s --latency \
      -s "$ROOT/bench/wrk-slices.lua" "${URLS[n]}/" > "$WORK/wrk-$setup-$n.txt" 2>&1 &
    PIDS+=($!); pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || true; done
  forget_pids "${pids[@]}"   # all exited and reaped
  sleep 1
  s2=$(snapshot "$setup")

  # wrk: sum of bytes and requests, the slowest cache's p99
  local bytes=0 reqs=0 errs=0 p99=0 dur=0 d
  for n in 1 2 3; do
    res=$(grep '^RESULT' "$WORK/wrk-$setup-$n.txt" || true)
    [ -n "$res" ] || die "wrk against cache $n printed no result; see $WORK/wrk-$setup-$n.txt"
    log "  cache $n: $res"
    bytes=$((bytes + $(field bytes "$res")))
    reqs=$((reqs + $(field requests "$res")))
    errs=$((errs + $(field connect "$res") + $(field read "$res") + $(field write "$res") + $(field status "$res") + $(field timeout "$res")))
    if [ "$(field p99_us "$res")" -gt "$p99" ]; then p99=$(field p99_us "$res"); fi
    d=$(field duration_us "$res")
    if [ "$d" -gt "$dur" ]; then dur=$d; fi
  done
  local o_warm o_meas
  read -r -a o_warm < <(awk -v from="$line0" -v to="$line1" -v port="${ORIGIN_PORT[$setup]}" 'NR > from && NR <= to && $1 == port { n++; s += $3 } END { printf "%.0f %.0f\n", n, s }' "$ORIGIN_LOG")
  read -r -a o_meas < <(origin_since "$line1" "${ORIGIN_PORT[$setup]}")
  R[$setup.client_warm]=$wbytes
  R[$setup.client_meas]=$bytes
  R[$setup.origin_warm]=${o_warm[1]}
  R[$setup.origin_meas]=${o_meas[1]}
  R[$setup.origin_req_meas]=${o_meas[0]}
  R[$setup.mibs]=$(awk -v b="$bytes" -v d="$dur" 'BEGIN { printf "%.0f", b / 1048576 / (d / 1e6) }')
  R[$setup.reqs]=$(awk -v r="$reqs" -v d="$dur" 'BEGIN { printf "%.0f", r / (d / 1e6) }')
  R[$setup.p99]=$(ms "$p99")
  R[$setup.errors]=$errs
  if [ "$setup" = nginx ]; then
    local hits lookups
    hits=$(delta hit "$s1" "$s2"); lookups=$(delta lookups "$s1" "$s2")
    R[$setup.lookups]=$lookups
    R[$setup.hit_local]=$(ratio "$hits" "$lookups")
    R[$setup.hit_fleet]=$(awk -v o="${o_meas[0]}" -v l="$lookups" 'BEGIN { if (l > 0) printf "%.3f", 1 - o / l; else print "n/a" }')
    local errlines nonode locked
    errlines=$(cat "$WORK"/nginx-[123]/error.log | grep -c -E '\[(error|crit|alert|emerg)\]' || true)
    nonode=$(cat "$WORK"/nginx-[123]/error.log | grep -c 'could not allocate node' || true)
    locked=$(cat "$WORK"/nginx-[123]/error.log | grep -c 'ignore long locked' || true)
    local files="" sizes=""
    for n in 1 2 3; do
      files+="${files:+/}$(find "$WORK/nginx-$n/cache" -type f | wc -l)"
      sizes+="${sizes:+/}$(du -sm "$WORK/nginx-$n/cache" | cut -f1)"
    done
    R[$setup.extra]="$errlines error-level lines in the three error logs, $nonode of them \`could not allocate node in cache keys zone\` (a miss that found the keys zone full and its 20 least recently used entries being read: that request fails) and $locked \`ignore long locked inactive cache entry\` (such an entry skipped); slices cached at the end $files ($sizes MiB on disk; keys zone room for $NGINX_ZONE_KEYS, max_size $NGINX_MAX_SIZE)"
  else
    local h m c served lookups oreq
    h=$(delta hit "$s1" "$s2"); m=$(delta miss "$s1" "$s2"); c=$(delta coalesced "$s1" "$s2")
    served=$(delta peer_served "$s1" "$s2")
    lookups=$((h + m + c - served))   # slices asked for on the client ports
    oreq=$(delta origin_requests "$s1" "$s2")
    R[$setup.lookups]=$lookups
    R[$setup.hit_local]=$(ratio "$h" "$((h + m + c))")
    R[$setup.hit_fleet]=$(awk -v o="${o_meas[0]}" -v l="$lookups" 'BEGIN { if (l > 0) printf "%.3f", 1 - o / l; else print "n/a" }')
    local warn members="" used=""
    warn=$(cat "$WORK/$setup"-[123].log | sed 's/\x1b\[[0-9;]*m//g' | grep -c -E ' (WARN|ERROR) ' || true)
    for n in 1 2 3; do
      used+="${used:+/}$(mib "$(agent_metric slicecache_memory_used_bytes "${ADMINS[n]}")")"
      if [ "$setup" = fleet ]; then
        members+="${members:+/}$(curl -s "http://127.0.0.1:${ADMINS[n]}/metrics" | awk '$1 == "slicecache_fleet_owned_fraction" { printf "%.2f", $2 }')"
      fi
    done
    R[$setup.extra]="memory tier in use $used MiB; origin subrequests in the measured pass $oreq by the agents' counters, ${o_meas[0]} by the origin's log; \`slicecache_origin_bytes_total\` over the run $(delta origin_bytes "$s0" "$s2"), origin log $((o_warm[1] + o_meas[1])); $warn WARN/ERROR log lines"
    if [ "$setup" = fleet ]; then
      R[$setup.extra]+="; owned fractions $members; peer requests in the measured pass: $(delta peer_ok "$s1" "$s2") answered, $(delta peer_failed "$s1" "$s2") failed (over the run: $(delta peer_failed "$s0" "$s2") failed); peer bytes in over the run $(mib "$(delta peer_in "$s0" "$s2")") MiB"
      R[$setup.warn_text]=$(cat "$WORK/fleet"-[123].log | sed 's/\x1b\[[0-9;]*m//g' | { grep -E ' (WARN|ERROR) ' || true; } | sed 's/^[^ ]* *//' | sort | uniq -c | sort -rn | head -3 | awk '{ n = $1; $1 = ""; printf "%s`%s` (%d)", sep, substr($0, 2), n; sep = "; " }')
    fi
  fi

  # correctness through every cache after the load, a range across slices and granules
  for n in 1 2 3; do
    local got
    got=$(curl -sf -H "Range: bytes=$RANGE_FIRST-$RANGE_LAST" -w '%{http_code}' -o "$WORK/range.out" "${URLS[n]}/obj-1" || true)
    check "$setup: obj-1 bytes=$RANGE_FIRST-$RANGE_LAST through cache $n (status, sha256)" "206 $RSUM" "$got $(sha256sum < "$WORK/range.out" | cut -d' ' -f1)"
  done
  R[$setup.rss]=$(( $(peak_kib) / 1024 ))
  log "$setup: stopping the caches"
  stop_pids "${SETUP_PIDS[@]}"
}

for s in $SETUPS; do run_setup "$s"; done

# ---------------------------------------------------------------- the report
label() {
  case $1 in
    fleet) echo "3 agents, fleet mode" ;;
    independent) echo "3 agents, independent" ;;
    nginx) echo "3 nginx slice caches" ;;
  esac
}
row() { # title key-or-function
  local s line="| $1 |"
  for s in $SETUPS; do line+=" $($2 "$s") |"; done
  echo "$line"
}
c_hit_fleet() { echo "${R[$1.hit_fleet]}"; }
c_hit_local() { echo "${R[$1.hit_local]}"; }
c_lookups() { echo "${R[$1.lookups]}"; }
c_ob_meas() { ratio "${R[$1.origin_meas]}" "${R[$1.client_meas]}"; }
c_ob_all() { ratio "$(( ${R[$1.origin_warm]} + ${R[$1.origin_meas]} ))" "$(( ${R[$1.client_warm]} + ${R[$1.client_meas]} ))"; }
c_warm_ws() { ratio "${R[$1.origin_warm]}" "$WORKING_SET"; }
c_all_ws() { ratio "$(( ${R[$1.origin_warm]} + ${R[$1.origin_meas]} ))" "$WORKING_SET"; }
c_origin_mib() { echo "$(mib "${R[$1.origin_warm]}") + $(mib "${R[$1.origin_meas]}")"; }
c_client_mib() { echo "$(mib "${R[$1.client_warm]}") + $(mib "${R[$1.client_meas]}")"; }
c_mibs() { echo "${R[$1.mibs]}"; }
c_reqs() { echo "${R[$1.reqs]}"; }
c_p99() { echo "${R[$1.p99]}"; }
c_errors() { echo "${R[$1.errors]}"; }
c_rss() { echo "${R[$1.rss]}"; }
c_warm_s() { echo "${R[$1.warm_s]}"; }

if [ -n "${AGENT_COMMIT:-}" ]; then
  COMMIT="$AGENT_COMMIT (prebuilt binary)"
elif [ -n "${SLICECACHE_BIN:-}" ]; then
  COMMIT="unknown (prebuilt binary; checkout at $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown))"
else
  COMMIT="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown) (release profile)"
  [ -n "$(git -C "$ROOT" status --porcelain -- node-agent 2>/dev/null | head -1)" ] && COMMIT="$COMMIT, node-agent had uncommitted changes"
fi
BIN_SHOWN=${BIN#"$ROOT"/}
RUN_ENV="SETUPS=\"$SETUPS\" DURATION=$DURATION OBJECTS=$OBJECTS OBJECT_MIB=$OBJECT_MIB MEMORY_CACHE=$MEMORY_CACHE SLICE=$SLICE FLEET_GRANULE=$FLEET_GRANULE CONCURRENCY=$CONCURRENCY CONNS=$CONNS WRK_THREADS=$WRK_THREADS RANGE_MIN=$RANGE_MIN RANGE_MAX=$RANGE_MAX SEED=$SEED NGINX_WORKERS=$NGINX_WORKERS"
REPRO_CMD="${SLICECACHE_BIN:+SLICECACHE_BIN=$BIN_SHOWN }${AGENT_COMMIT:+AGENT_COMMIT=$AGENT_COMMIT }$RUN_ENV bash bench/fleet.sh"
NGINX_VERSION=$("$NGINX" -v 2>&1 | sed 's/.*nginx\//nginx /')
WRK_VERSION=$( (wrk -v 2>&1 || true) | head -1 | awk '{ print $1, $2 }')
CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
MEM_TOTAL=$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)

report() {
  cat <<EOF
# Fleet benchmark: one cache across three agents

Generated by \`bench/fleet.sh\`. Three caches on one machine (127.0.0.1),
three setups one after the other, each with fresh caches: three
slicecache agents in fleet mode (one key space, each slice kept by its
owner), the same three agents without the fleet flags, and three nginx
slice caches (\`slice $NGINX_SLICE\`, \`proxy_cache_key \$uri\$is_args\$args\$slice_range\`,
the configuration of bench/run.sh, with \`max_size=$NGINX_MAX_SIZE\` and
\`keys_zone=$NGINX_KEYS_ZONE\` each: room for $NGINX_ZONE_KEYS slices, against the $NGINX_KEYS the
agent's memory tier holds; see NGINX_KEYS_ZONE in the script for why).
Working set: $OBJECTS objects of $OBJECT_MIB MiB ($((WORKING_SET >> 20)) MiB),
$(ratio "$WORKING_SET" "$MEMORY_BYTES" %.1f)x one cache ($MEMORY_CACHE memory tier), $(ratio "$WORKING_SET" "$((NCACHES * MEMORY_BYTES))" %.2f)x the three together.

- Command: \`$REPRO_CMD\`
- Date: $(date -u '+%Y-%m-%d %H:%M UTC'); machine: $(nproc) CPUs ($CPU_MODEL), $MEM_TOTAL, Linux $(uname -r); load average $LOAD_START at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end
- Shmem huge pages (\`$THP_FILE\`, not changed by this script): $THP
- Software: agent at commit $COMMIT, $NGINX_VERSION, $WRK_VERSION
- Warm-up: each cache reads every object once, whole (curl, one cache after
  the other). Measured pass: three wrk processes at once, one per cache,
  $CONNS connections each, single random ranges of $((RANGE_MIN / 1024)) KiB-$((RANGE_MAX / 1048576)) MiB
  over the same objects, ${DURATION} s.

| | $(for s in $SETUPS; do printf '%s | ' "$(label "$s")"; done)
|---|$(for _ in $SETUPS; do printf -- '---|'; done)
$(row "hit ratio: slices served without an origin request (measured pass)" c_hit_fleet)
$(row "local slice hit ratio, \`slicecache_slices_total\` / nginx \`\$upstream_cache_status\` (measured pass)" c_hit_local)
$(row "slices asked for by clients (measured pass)" c_lookups)
$(row "origin bytes / client bytes, measured pass" c_ob_meas)
$(row "origin bytes / client bytes, warm-up + measured" c_ob_all)
$(row "origin bytes / working set, warm-up" c_warm_ws)
$(row "origin bytes / working set, warm-up + measured" c_all_ws)
$(row "origin MiB, warm-up + measured" c_origin_mib)
$(row "client MiB, warm-up + measured" c_client_mib)
$(row "throughput MiB/s (sum of 3 wrk)" c_mibs)
$(row "requests/s (sum of 3 wrk)" c_reqs)
$(row "p99 ms (max of 3 wrk)" c_p99)
$(row "wrk errors (sum)" c_errors)
$(row "peak RSS MiB (VmHWM, sum of 3 caches)" c_rss)
$(row "warm-up s" c_warm_s)

How the numbers are taken:

- Origin bytes are \`\$body_bytes_sent\` summed from the origin's access log,
  per setup (each has its own origin port); client bytes are curl's body
  bytes in the warm-up and wrk's bytes (body and headers) in the measured
  pass. Ranges under a slice cost a whole slice at the origin on a miss, so
  origin / client bytes can exceed 1 for independent caches.
- Hit ratio: 1 - origin requests (the origin's log) / slices the clients
  asked for. For the agents, the slices asked for are the hit, miss and
  coalesced slices of \`slicecache_slices_total\` minus those the owners
  served on their peer ports (\`slicecache_peer_requests_total{role="server"}\`);
  for nginx, the access log lines of the three caches (\`log_subrequest on\`,
  one line per slice). A slice another member sent counts as a hit here.
- Local slice hit ratio: hit / (hit + miss + coalesced) of
  \`slicecache_slices_total\` summed over the three agents; in fleet mode
  that includes the owners' lookups for their peers, and a slice fetched
  from its owner is a miss of the agent that asked. For nginx, HIT lines of
  \`\$upstream_cache_status\` over all lines.
- p99 is the largest of the three wrk processes' p99 (whole-response time).
  Peak RSS is VmHWM of each cache process at the end of its setup, summed
  (nginx: masters and workers). Neither side's cached bytes are fully in
  it: nginx's cache is files in the page cache, the agents' memory tier a
  memfd (shared memory), counted only where mapped pages were touched.
- Setups run one after the other on a shared machine, so throughput and
  p99 carry the machine's drift; the byte and hit ratios do not.

Other numbers:

$(for s in $SETUPS; do printf -- '- %s: %s.\n' "$(label "$s")" "${R[$s.extra]}"; done)
$([ -z "${R[fleet.warn_text]:-}" ] || printf -- '- Fleet agents, most frequent WARN/ERROR lines: %s.\n' "${R[fleet.warn_text]}")

| check | result |
|---|---|
$(printf '%s\n' "${CHECKS[@]}")
EOF
}
report > "$WORK/report.md"
cat "$WORK/report.md"
if [ -n "$BENCH_OUT" ]; then
  mkdir -p "$(dirname "$BENCH_OUT")"
  cp "$WORK/report.md" "$BENCH_OUT"
  log "report written to $BENCH_OUT"
fi
[ "$FAILED" = 0 ] || die "a correctness check failed (see the table of checks)"
log "done"
