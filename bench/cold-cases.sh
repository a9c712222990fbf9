# shellcheck shell=bash
# bench/cold-cases.sh - the two cases of bench/run.sh that start caches of
# their own, and their sections of the report:
# - far origin: a fresh agent and nginx (and baseline), each reaching the
#   origin through its own delay-proxy (testkit/src/bin/delay-proxy.rs),
#   fetch COLD_OBJECTS new objects once each;
# - many cold clients: COLD_CLIENTS clients at once, each fetching a
#   different new object once from a fresh agent, then a fresh nginx (and
#   baseline), with each cache's peak RSS.
# Sourced by run.sh, not run: it uses run.sh's helpers (launch_agent,
# start_peer, stop_pid, url_of, pids_of, check, field, ratio, ...).

# The caches a case starts: name (agent_far, nginx_cc, ...) -> url, pid,
# admin port, origin port, and its delay-proxy's pid and port.
declare -A XURL XPID XADMIN XORIGIN XPROXY XPROXY_PORT
declare -A FAR_T FAR_TTFB FAR_O   # far origin: name -> seconds per object, origin bytes
declare -A CC_RES                 # many cold clients: name -> "key=value ..."

delay_proxy_binary() { # DELAY_PROXY_BIN, or a release build of testkit's delay-proxy
  local bin
  if [ -n "${DELAY_PROXY_BIN:-}" ]; then
    bin=$DELAY_PROXY_BIN
  else
    log "building delay-proxy (release)"
    (cd "$ROOT" && cargo build --release -p slicecache-testkit --bin delay-proxy >&2)
    bin=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps 2>/dev/null | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/release/delay-proxy
  fi
  [ -x "$bin" ] || die "no delay-proxy binary at $bin"
  echo "$bin"
}

start_case_caches() { # case [delay-ms]: fresh caches CACHE_case for each
  # of CACHES, with the memory-tier caches' configuration and origin ports
  # (idle meanwhile, so the origin's bytes on those ports are this case's),
  # ports of their own, and with a delay each its own delay-proxy in front
  # of its origin port
  local c=$1 delay=${2:-} base name origin port bin dir=$WORK/$1
  mkdir -p "$dir"
  for base in $CACHES; do
    name=${base}_$c
    origin=$(origin_port_of "$base")
    XORIGIN[$name]=$origin
    if [ -n "$delay" ]; then
      port=$(free_port)
      "$DELAY_PROXY" --listen "127.0.0.1:$port" --upstream "127.0.0.1:$origin" --delay-ms "$delay" > "$dir/proxy-$base.log" 2>&1 &
      XPROXY[$name]=$!
      PIDS+=("$!")
      XPROXY_PORT[$name]=$port
      origin=$port
    fi
    port=$(free_port)
    XURL[$name]=http://127.0.0.1:$port
    if [ "$base" = nginx ]; then
      XPID[$name]=$(start_peer "$dir/peer" "$port" "$origin" 8g)
      PIDS+=("${XPID[$name]}")
    else
      XADMIN[$name]=$(free_port)
      bin=$BIN
      [ "$base" = agent ] || bin=$BASELINE_BIN
      launch_agent "$bin" "$origin" "$port" "${XADMIN[$name]}" "$dir/$base.log" --memory-cache "$MEMORY_CACHE"
      XPID[$name]=$LAUNCHED
    fi
  done
  for base in $CACHES; do
    name=${base}_$c
    [ -z "$delay" ] || wait_http "http://127.0.0.1:${XPROXY_PORT[$name]}/__ready"
    if [ "$base" = nginx ]; then wait_http "${XURL[$name]}/__ready"; else wait_http "http://127.0.0.1:${XADMIN[$name]}/healthz"; fi
  done
}
stop_case_caches() { # case
  local base name
  for base in $CACHES; do
    name=${base}_$1
    stop_pid "${XPID[$name]}"
    [ -z "${XPROXY[$name]:-}" ] || stop_pid "${XPROXY[$name]}"
  done
}
sha_of() { # file: its sha256, or "no body"
  if [ -f "$1" ]; then sha256sum < "$1" | cut -d' ' -f1; else echo "no body"; fi
}
case_names() { # case: CACHE_case for each of CACHES
  local base
  for base in $CACHES; do printf '%s_%s ' "$base" "$1"; done
}
cache_word() { # name: what the report calls it
  case ${1%_*} in baseline) echo "baseline (before)" ;; *) echo "${1%_*}" ;; esac
}

# ---------------------------------------------------------------- far origin
far_origin_case() {
  local delay=$((FAR_RTT_MS / 2)) i name names order total ttfb size code line0
  names=$(case_names far)
  log "far origin: $COLD_OBJECTS new $OBJECT_MIB MiB objects through an origin $((2 * delay)) ms away, once through each cache"
  for i in $(seq "$COLD_OBJECTS"); do head -c "$OBJECT_BYTES" /dev/urandom > "$WORK/origin/data/far-$i"; done
  start_case_caches far "$delay"
  # A small request straight through a proxy, on a new connection: two
  # round trips (the handshake's and its own).
  FAR_PROBE_MS=$(curl -s -o /dev/null -w '%{time_starttransfer}' "http://127.0.0.1:${XPROXY_PORT[agent_far]}/__ready" | awk '{ printf "%.1f", $1 * 1000 }')
  # One small request through each cache first, so that each has an origin
  # connection open (nginx has one from its readiness check).
  for name in $names; do curl -s -o /dev/null "$(url_of "$name")/__ready" || true; done
  for name in $names; do FAR_T[$name]=""; FAR_TTFB[$name]=""; done
  line0=$(log_lines)
  for i in $(seq "$COLD_OBJECTS"); do
    # shellcheck disable=SC2086 # names is a word list
    order=$(rotate $((i - 1)) $names)   # who goes first rotates object by object
    for name in $order; do
      read -r total ttfb size code < <(curl -s -o /dev/null -w '%{time_total} %{time_starttransfer} %{size_download} %{http_code}\n' "$(url_of "$name")/far-$i")
      log "  far-$i through $(cache_word "$name"): ${total}s"
      if [ "$code" != 200 ] || [ "$size" != "$OBJECT_BYTES" ]; then check "far-$i through $(cache_word "$name"), far origin" "200 $OBJECT_BYTES" "$code $size"; fi
      FAR_T[$name]+="$total "
      FAR_TTFB[$name]+="$ttfb "
    done
  done
  sleep 1
  for name in $names; do FAR_O[$name]=$(origin_bytes_since "$line0" "${XORIGIN[$name]}"); done
  for name in $names; do
    check "far-1 through $(cache_word "$name") on a hit, far origin (sha256)" "$(sha_of "$WORK/origin/data/far-1")" \
      "$(curl -sf "$(url_of "$name")/far-1" | sha256sum | cut -d' ' -f1)"
  done
  stop_case_caches far
  rm -f "$WORK"/origin/data/far-*
}
far_section() {
  if [ "$FAR_ORIGIN" != 1 ]; then
    # shellcheck disable=SC2016 # markdown backticks
    printf '## Far origin\n\nNot measured in this run (`FAR_ORIGIN=0`).\n'
    return
  fi
  local name med lo hi tmed nmed amed bmed rows="" rtt=$(((FAR_RTT_MS / 2) * 2)) verdict before=""
  # shellcheck disable=SC2086 # the lists are words
  read -r nmed _ <<< "$(stats_ms 0 ${FAR_T[nginx_far]})"
  for name in $(case_names far); do
    # shellcheck disable=SC2086
    read -r med lo hi <<< "$(stats_ms 0 ${FAR_T[$name]})"
    # shellcheck disable=SC2086
    read -r tmed _ <<< "$(stats_ms 0 ${FAR_TTFB[$name]})"
    [ "$name" != agent_far ] || amed=$med
    [ "$name" != baseline_far ] || bmed=$med
    rows+="| $(cache_word "$name") | $COLD_OBJECTS | $med ms ($lo-$hi) | $(ratio "$med" "$nmed") | $tmed ms | $(awk -v m="$med" -v b="$OBJECT_MIB" 'BEGIN { printf "%.0f", (m > 0 ? b / (m / 1000) : 0) }') | $(awk -v o="${FAR_O[$name]}" -v s="$OBJECT_BYTES" -v k="$COLD_OBJECTS" 'BEGIN { printf "%.3f", o / (s * k) }') |"$'\n'
  done
  [ -z "$BASELINE_BIN" ] || before=" The baseline (before): $bmed ms, $(ratio "$bmed" "$nmed")x nginx's; after / before $(ratio "$amed" "$bmed")."
  verdict=$(awk -v a="$amed" -v n="$nmed" 'BEGIN { print ((n > 0 && a <= 0.15 * n) ? "**met**" : "**not met**") }')
  cat <<EOF
## Far origin

The origin ${rtt} ms away: each cache reaches it through a delay-proxy of its
own (\`testkit/src/bin/delay-proxy.rs\`, on loopback, since this kernel has no
\`netem\`), which holds every chunk $((rtt / 2)) ms in each direction, in
order and without limiting throughput, and holds a new connection for one
round trip, its handshake's, before forwarding. (A real path that long would
also slow TCP's window growth; the proxy does not model that.) A small
request straight through a proxy on a new connection took $FAR_PROBE_MS ms to its
first byte (two round trips expected: the handshake and the request).

The caches are fresh processes with the memory-tier caches' configuration,
only their origin moved: the agent with a $MEMORY_CACHE memory tier,
$SLICE slices and $CONCURRENCY in flight (the same defaults as every other
cell, no tuning for this case), nginx with \`slice 1m\` and an upstream
keepalive pool of 64. Each was sent one small request first, so that each
had an origin connection open. Then $COLD_OBJECTS new $OBJECT_MIB MiB objects, each
fetched once through each cache with curl (one client; who goes first
rotates object by object), under shmem huge pages $FIRST_THP.

| cache | objects | time per object, median (min-max) | time / nginx's | time to first byte, median | MiB/s (median) | origin bytes / object bytes |
|---|---|---|---|---|---|---|
${rows%$'\n'}

Goal: a cold $OBJECT_MIB MiB object through an origin ${rtt} ms away in at
most 0.15x nginx's time. Medians here: agent $amed ms, nginx $nmed ms,
$(ratio "$amed" "$nmed")x: $verdict.$before
nginx's slice module fetches an object's slices one after another, so each
of its $OBJECT_MIB slices waits at least one round trip: $((OBJECT_MIB * rtt)) ms per object
before any transfer time.

Reproduce this section alone (plus the short passes it cannot skip):
\`FULL_CONNS= RANGE_CONNS= DISK_TIER=0 COLD_CLIENTS=0 OBJECTS=1 SHMEM_THP=$FIRST_THP COLD_OBJECTS=$COLD_OBJECTS OBJECT_MIB=$OBJECT_MIB FAR_RTT_MS=$FAR_RTT_MS MEMORY_CACHE=$MEMORY_CACHE SLICE=$SLICE CONCURRENCY=$CONCURRENCY BENCH_OUT=far-origin.md bash bench/run.sh\`${BASELINE_BIN:+ (with BASELINE_BIN for the baseline)}.
EOF
}

# ---------------------------------------------------------------- many cold clients
sample_case() { # name file: until killed, every 100 ms a line of the
  # cache's processes' summed VmRSS, RssAnon and RssShmem (KiB) and, for an
  # agent, its origin subrequests in flight
  local admin p files
  admin=$(admin_port_of "$1")
  while :; do
    files=()
    for p in $(pids_of "$1"); do files+=("/proc/$p/status"); done
    {
      awk '/^VmRSS:/ { r += $2 } /^RssAnon:/ { a += $2 } /^RssShmem:/ { s += $2 } END { printf "%d %d %d", r, a, s }' "${files[@]}" /dev/null 2>/dev/null || true
      if [ -n "$admin" ]; then printf ' %s\n' "$(agent_metric slicecache_origin_subrequests_in_flight "$admin")"; else printf ' 0\n'; fi
    } >> "$2"
    sleep 0.1
  done
}
cold_clients_case() {
  local n=$COLD_CLIENTS bytes=$((COLD_CLIENT_MIB * 1048576)) dir=$WORK/cc i name names samples out line0 start wall sampler cfg times maxes
  local -a curls
  names=$(case_names cc)
  log "many cold clients: $n new $COLD_CLIENT_MIB MiB objects, $n clients at once, each fetching one, through each cache"
  for i in $(seq "$n"); do head -c "$bytes" /dev/urandom > "$WORK/origin/data/cc-$i"; done
  start_case_caches cc
  samples=$(printf '%s\n' 1 $(((n + 1) / 2)) "$n" | sort -un)
  for name in $names; do
    # one curl per 256 clients (curl takes at most 300 at once), each
    # transfer on a connection of its own; the sampled clients' bodies kept
    rm -f "$dir"/curl-*.cfg "$dir"/times-*
    for i in $(seq "$n"); do
      out=/dev/null
      if grep -qx "$i" <<< "$samples"; then out=$dir/body-$name-$i; fi
      printf 'url = "%s/cc-%d"\noutput = "%s"\n' "$(url_of "$name")" "$i" "$out" >> "$dir/curl-$(((i - 1) / 256)).cfg"
    done
    line0=$(log_lines)
    reset_peak "$name"
    sample_case "$name" "$dir/samples-$name" &
    sampler=$!
    PIDS+=("$sampler")
    log "  $n clients at once against $(cache_word "$name")"
    curls=()
    start=$(date +%s.%N)
    for cfg in "$dir"/curl-*.cfg; do
      curl -s --no-progress-meter --parallel --parallel-immediate --parallel-max 256 -K "$cfg" \
        -w '%{http_code} %{size_download} %{time_total} %{time_starttransfer}\n' > "${cfg%.cfg}.times" 2>> "$dir/curl-$name.err" &
      curls+=("$!")
    done
    wait "${curls[@]}" || true
    wall=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.0f", (e - s) * 1e6 }')
    stop_pid "$sampler"
    sleep 1   # fills that outlive their client
    times=$(cat "$dir"/curl-*.times)
    # errors: non-200, a wrong size, or no line at all; times in microseconds
    CC_RES[$name]="wall_us=$wall $(awk -v want="$bytes" -v n="$n" '
      { t[NR] = $3; f[NR] = $4; if ($1 != 200 || $2 != want) bad++ }
      function pct(a, p,   i, j, x, k) {
        k = 0; for (i in a) v[++k] = a[i]
        for (i = 2; i <= k; i++) { x = v[i]; for (j = i - 1; j > 0 && v[j] > x; j--) v[j + 1] = v[j]; v[j + 1] = x }
        i = int(p * k + 0.999999); if (i < 1) i = 1
        return sprintf("%.0f", v[i] * 1e6)
      }
      END {
        printf "errors=%d done=%d p50_us=%s p99_us=%s max_us=%s ttfb50_us=%s ttfb99_us=%s",
          bad + (n - NR), NR, pct(t, 0.5), pct(t, 0.99), pct(t, 1), pct(f, 0.5), pct(f, 0.99)
      }' <<< "$times")"
    maxes=$(awk '{ for (i = 1; i <= 4; i++) if ($i + 0 > m[i]) m[i] = $i + 0 } END { printf "rss_kib=%d anon_kib=%d shmem_kib=%d sub=%d samples=%d", m[1], m[2], m[3], m[4], NR }' "$dir/samples-$name")
    CC_RES[$name]+=" $maxes hwm_kib=$(peak_kib "$name") origin=$(origin_bytes_since "$line0" "${XORIGIN[$name]}")"
    log "  $(cache_word "$name"): ${CC_RES[$name]}"
    for i in $samples; do
      check "cc-$i through $(cache_word "$name"), $n cold clients (sha256)" "$(sha_of "$WORK/origin/data/cc-$i")" "$(sha_of "$dir/body-$name-$i")"
      rm -f "$dir/body-$name-$i"
    done
  done
  stop_case_caches cc
  rm -rf "$WORK"/origin/data/cc-* "$dir/peer/cache"
}
cold_clients_section() {
  if [ "$COLD_CLIENTS" = 0 ]; then
    # shellcheck disable=SC2016 # markdown backticks
    printf '## Many cold clients\n\nNot measured in this run (`COLD_CLIENTS=0`).\n'
    return
  fi
  local name r rows="" total=$((COLD_CLIENTS * COLD_CLIENT_MIB)) a=${CC_RES[agent_cc]} n=${CC_RES[nginx_cc]} sub
  for name in $(case_names cc); do
    r=${CC_RES[$name]}
    sub="n/a"
    [ "${name%_cc}" = nginx ] || sub=$(field sub "$r")
    rows+="| $(cache_word "$name") | $(ms "$(field wall_us "$r")") ms | $(awk -v w="$(field wall_us "$r")" -v t="$total" 'BEGIN { printf "%.0f", (w > 0 ? t / (w / 1e6) : 0) }') | $(ms "$(field p50_us "$r")") / $(ms "$(field p99_us "$r")") / $(ms "$(field max_us "$r")") ms | $(ms "$(field ttfb50_us "$r")") / $(ms "$(field ttfb99_us "$r")") ms | $(field errors "$r") | **$(( $(field hwm_kib "$r") / 1024 ))** | $(( $(field rss_kib "$r") / 1024 )) / $(( $(field anon_kib "$r") / 1024 )) / $(( $(field shmem_kib "$r") / 1024 )) | $(awk -v o="$(field origin "$r")" -v t="$total" 'BEGIN { printf "%.3f", o / (t * 1048576) }') | $sub |"$'\n'
  done
  cat <<EOF
## Many cold clients

$COLD_CLIENTS clients at once, each fetching a different $COLD_CLIENT_MIB MiB object once
($COLD_CLIENTS objects, $total MiB in all) that the cache has not seen, from the
near origin (loopback, no added latency): one \`curl --parallel
--parallel-immediate --parallel-max 256\` per 256 clients, started
together, each transfer on a connection of its own. A fresh agent${BASELINE_BIN:+, baseline} and
nginx, each with the memory-tier caches' configuration (agent: $MEMORY_CACHE memory
tier, $SLICE slices, $CONCURRENCY in flight; nginx: \`slice 1m\`), take the load one
after the other in that order, under shmem huge pages $FIRST_THP.

| cache | wall time for all | MiB/s | per client: time p50 / p99 / max | time to first byte p50 / p99 | errors | peak RSS MiB (VmHWM) | max sampled RSS MiB: all / anonymous / shmem | origin bytes / object bytes | max origin subrequests in flight |
|---|---|---|---|---|---|---|---|---|---|
${rows%$'\n'}

Agent / nginx: wall time $(ratio "$(field wall_us "$a")" "$(field wall_us "$n")"), peak RSS $(ratio "$(field hwm_kib "$a")" "$(field hwm_kib "$n")").

- Errors count non-200 answers, bodies of the wrong size and transfers curl
  did not report; the bodies of clients $(printf '%s\n' 1 $(((COLD_CLIENTS + 1) / 2)) "$COLD_CLIENTS" | sort -un | paste -sd, | sed 's/,/, /g') were also compared with the
  origin's files (sha256, in the Correctness table).
- Peak RSS is VmHWM from /proc/PID/status: each cache is a process
  started for this case, its VmHWM reset (\`/proc/PID/clear_refs\`$([ "$PEAK_RESET" = yes ] || echo ", not supported here, so it includes the idle start")) just
  before the clients start and read after the last one finished. For
  nginx it is the sum of the master's and its two workers' VmHWM, each
  process's own peak, so it bounds their peak together from above. The
  sampled columns are the sums of VmRSS, RssAnon and RssShmem over the
  same processes, read every 100 ms while the clients ran (plus the time
  a read takes; reads: $(for name in $(case_names cc); do printf '%s %s, ' "$(cache_word "$name")" "$(field samples "${CC_RES[$name]}")"; done | sed 's/, $//')),
  each column's max; a read can miss a shorter peak. Cached bytes are in no column
  unless the shmem one shows them: nginx's are files in the page cache, the
  agent's memory tier is a memfd (see "Cache hits").
- Max origin subrequests in flight: the agent's
  \`slicecache_origin_subrequests_in_flight\`, read from its admin port
  with the same samples.

Reproduce this section alone (plus the short passes it cannot skip):
\`FULL_CONNS= RANGE_CONNS= DISK_TIER=0 FAR_ORIGIN=0 OBJECTS=1 COLD_OBJECTS=1 SHMEM_THP=$FIRST_THP COLD_CLIENTS=$COLD_CLIENTS COLD_CLIENT_MIB=$COLD_CLIENT_MIB MEMORY_CACHE=$MEMORY_CACHE SLICE=$SLICE CONCURRENCY=$CONCURRENCY BENCH_OUT=cold-clients.md bash bench/run.sh\`${BASELINE_BIN:+ (with BASELINE_BIN for the baseline)}.
EOF
}
