# shellcheck shell=bash
# bench/report.sh - the markdown report of bench/run.sh (docs/benchmarks.md):
# the tables of the hit cells, the cold misses, the disk tier and, with a
# baseline agent, the before-and-after section, and the fixed preamble and
# reading notes (the far-origin and many-cold-clients sections are
# bench/cold-cases.sh's). Sourced by run.sh, not run: its functions read
# what run.sh measured (ROWS, DISK_ROWS, DISK_SRC, COLD_*, WARM_*, CHECKS,
# the DISK_* and BASELINE_* numbers) and its helpers (field, ratio,
# agent_metric); save_pass renders each shmem policy's pass as it ends, and
# write_report writes BENCH_OUT.

report_facts() { # the machine, the software and the command, for "This run"
  MEM_TOTAL=$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
  CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
  NGINX_VERSION=$("$NGINX" -v 2>&1 | sed 's/.*nginx\//nginx /')
  WRK_VERSION=$( (wrk -v 2>&1 || true) | head -1 | awk '{ print $1, $2 }')
  if [ -n "${AGENT_COMMIT:-}" ]; then
    COMMIT="$AGENT_COMMIT (prebuilt binary)"
  elif [ -n "${SLICECACHE_BIN:-}" ]; then
    COMMIT="unknown (prebuilt binary; checkout at $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown))"
  else
    COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
    DIRTY=$(git -C "$ROOT" status --porcelain -- node-agent 2>/dev/null | head -1)
    [ -n "$DIRTY" ] && COMMIT="$COMMIT (node-agent had uncommitted changes)"
  fi
  LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
  RUN_ENV="DURATION=$DURATION ROUNDS=$ROUNDS OBJECTS=$OBJECTS OBJECT_MIB=$OBJECT_MIB COLD_OBJECTS=$COLD_OBJECTS FULL_CONNS=\"$FULL_CONNS\" RANGE_CONNS=\"$RANGE_CONNS\" SEED=$SEED MEMORY_CACHE=$MEMORY_CACHE SLICE=$SLICE CONCURRENCY=$CONCURRENCY DISK_TIER=$DISK_TIER DISK_OBJECTS=$DISK_OBJECTS DISK_MEMORY_CACHE=$DISK_MEMORY_CACHE DISK_DEVICE_SIZE=$DISK_DEVICE_SIZE DISK_FULL_CONNS=\"$DISK_FULL_CONNS\" DISK_RANGE_CONNS=\"$DISK_RANGE_CONNS\" DROP_CACHES=$DROP_CACHES SHMEM_THP=\"$SHMEM_THP\" FAR_ORIGIN=$FAR_ORIGIN FAR_RTT_MS=$FAR_RTT_MS COLD_CLIENTS=$COLD_CLIENTS COLD_CLIENT_MIB=$COLD_CLIENT_MIB FILL_LOAD=$FILL_LOAD FILL_LOAD_CONNS=$FILL_LOAD_CONNS FILL_LOAD_RATE=$FILL_LOAD_RATE FILL_LOAD_ROUNDS=$FILL_LOAD_ROUNDS"
  NCACHES_WORD=two
  if [ -n "$BASELINE_BIN" ]; then
    NCACHES_WORD=three
    BASELINE_COMMIT_TEXT="${BASELINE_COMMIT:-unknown} (prebuilt binary)"
    REPRO_CMD="SLICECACHE_BIN=$BIN${AGENT_COMMIT:+ AGENT_COMMIT=$AGENT_COMMIT} BASELINE_BIN=$BASELINE_BIN${BASELINE_COMMIT:+ BASELINE_COMMIT=$BASELINE_COMMIT} $RUN_ENV RANGE_MIN=$RANGE_MIN RANGE_MAX=$RANGE_MAX BENCH_OUT=$BENCH_OUT bash bench/run.sh"
  fi
}

table_rows() { # array of rows [ceiling]: with "ceiling", the memory-tier
  # table: each cell's ceiling (CEILING) beside it, and the goal verdict
  local -n rows_=$1
  local with_ceiling=${2:-} row mode conns a n c ab nb cb ce ceil_cols goal_col
  for row in "${rows_[@]}"; do
    read -r mode conns <<< "${row%% |*}"
    a=$(cut -d'|' -f2 <<< "$row"); n=$(cut -d'|' -f3 <<< "$row")
    local ad nd
    ad=$(field duration_us "$a"); nd=$(field duration_us "$n")
    ab=$(awk -v b="$(field bytes "$a")" -v d="$ad" 'BEGIN { printf "%.0f", b / 1048576 / (d / 1e6) }')
    nb=$(awk -v b="$(field bytes "$n")" -v d="$nd" 'BEGIN { printf "%.0f", b / 1048576 / (d / 1e6) }')
    local ar nr
    ar=$(awk -v r="$(field requests "$a")" -v d="$ad" 'BEGIN { printf "%.1f", r / (d / 1e6) }')
    nr=$(awk -v r="$(field requests "$n")" -v d="$nd" 'BEGIN { printf "%.1f", r / (d / 1e6) }')
    local label
    label=$(cell_label "$mode")
    local errs_a errs_n
    errs_a=$(errors_of "$a"); errs_n=$(errors_of "$n")
    local ac nc
    ac=$(awk -v t="$(field cpu_ticks "$a")" -v b="$(field bytes "$a")" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", t / hz / (b / 1073741824) }')
    nc=$(awk -v t="$(field cpu_ticks "$n")" -v b="$(field bytes "$n")" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", t / hz / (b / 1073741824) }')
    ceil_cols="" goal_col=""
    if [ -n "$with_ceiling" ]; then
      c=${CEILING["$mode $conns"]}
      cb=$(awk -v b="$(field bytes "$c")" -v d="$(field duration_us "$c")" 'BEGIN { printf "%.0f", (d > 0 ? b / 1048576 / (d / 1e6) : 0) }')
      ce=$(errors_of "$c")
      [ "$ce" = 0 ] || cb+=" ($ce errors)"
      ceil_cols=" ${cb} | $(ratio "$ab" "${cb%% *}") |"
      goal_col=" $(goal_text "$(goal_of "$a" "$n" "$c")") |"
    fi
    printf '| %s | %s | %s / %s | **%s** |%s %s / %s | %s / %s | %s / %s | **%s** | %s / %s | %s / %s | %s / %s | %s / %s |%s\n' \
      "$label" "$conns" "$ab" "$nb" "$(ratio "$ab" "$nb")" "$ceil_cols" "$ar" "$nr" \
      "$(ms "$(field p50_us "$a")")" "$(ms "$(field p50_us "$n")")" \
      "$(ms "$(field p99_us "$a")")" "$(ms "$(field p99_us "$n")")" \
      "$(ratio "$(field p99_us "$a")" "$(field p99_us "$n")")" \
      "$(( $(field rss_kib "$a") / 1024 ))" "$(( $(field rss_kib "$n") / 1024 ))" \
      "$ac" "$nc" "$(mib "$(field origin "$a")")" "$(mib "$(field origin "$n")")" "$errs_a" "$errs_n" "$goal_col"
  done
}
errors_of() { # RESULT line -> wrk's connect/read/write/timeout errors plus non-2xx answers
  echo $(( $(field connect "$1") + $(field read "$1") + $(field write "$1") + $(field status "$1") + $(field timeout "$1") ))
}

# ---------------------------------------------------------------- the goal (memory-tier hits)
# Per cell, from the unrounded numbers (GOAL_RULES says the same in the report):
# throughput: the agent >= 1.2x nginx, or, where 1.2x nginx is above the
#   cell's ceiling (the same load against a plain sendfile file server),
#   the agent >= 0.95x the ceiling;
# p99: the agent's <= nginx's; CPU: the agent's CPU s per GiB <= nginx's.
GOAL_RULES="The goal column judges each cell on the unrounded numbers:
throughput is met when the agent's MiB/s is at least 1.2x nginx's, or,
where 1.2x nginx's is above that cell's ceiling, when the agent reaches at
least 0.95x the ceiling (\"by the ceiling rule\"; \"nginx above the
ceiling\" where nginx itself measured more than the ceiling, so that the
ceiling bounded neither cache in that cell); p99 is met when the agent's
p99 is at most nginx's; CPU is met when the agent's CPU s per GiB is at
most nginx's. A cell is met when all three are."
goal_of() { # agent nginx ceiling RESULT lines -> "throughput p99 cpu nginx-vs-ceiling":
  # yes | no each (throughput also: ceiling), then above | below
  awk -v ab="$(field bytes "$1")" -v ad="$(field duration_us "$1")" -v at="$(field cpu_ticks "$1")" -v ap="$(field p99_us "$1")" \
    -v nb="$(field bytes "$2")" -v nd="$(field duration_us "$2")" -v nt="$(field cpu_ticks "$2")" -v np="$(field p99_us "$2")" \
    -v cb="$(field bytes "$3")" -v cd="$(field duration_us "$3")" 'BEGIN {
      a = ad > 0 ? ab / ad : 0; n = nd > 0 ? nb / nd : 0; c = cd > 0 ? cb / cd : 0
      if (a > 0 && a >= 1.2 * n) t = "yes"
      else if (c > 0 && 1.2 * n > c && a >= 0.95 * c) t = "ceiling"
      else t = "no"
      p = (ap + 0 <= np + 0) ? "yes" : "no"
      u = (ab > 0 && nb > 0 && at / ab <= nt / nb) ? "yes" : "no"
      print t, p, u, (n > c ? "above" : "below")
    }'
}
goal_text() { # goal_of's answer -> the goal column
  local t p u x missed="" text rule="by the ceiling rule"
  read -r t p u x <<< "$1"
  [ "$x" != above ] || rule+=", nginx above the ceiling"
  [ "$t" != no ] || missed+=", MiB/s"
  [ "$p" = yes ] || missed+=", p99"
  [ "$u" = yes ] || missed+=", CPU"
  if [ -z "$missed" ]; then
    text="**met**"
    [ "$t" != ceiling ] || text+=" (MiB/s $rule)"
  else
    text="**not met**: ${missed#, }"
    [ "$t" != ceiling ] || text+="; MiB/s met $rule"
  fi
  echo "$text"
}
goal_summary() { # array of rows (agent | nginx [| baseline]) [baseline]: "met in K of N cells"
  local -n rows_=$1
  local row mode conns a met=0 total=0 missed=""
  for row in "${rows_[@]}"; do
    read -r mode conns <<< "${row%% |*}"
    if [ "${2:-}" = baseline ]; then a=$(cut -d'|' -f4 <<< "$row"); else a=$(cut -d'|' -f2 <<< "$row"); fi
    total=$((total + 1))
    if [[ $(goal_text "$(goal_of "$a" "$(cut -d'|' -f3 <<< "$row")" "${CEILING["$mode $conns"]}")") == "**met**"* ]]; then
      met=$((met + 1))
    else
      if [ "$mode" = range ]; then missed+=", ranges at $conns"; else missed+=", whole objects at $conns"; fi
    fi
  done
  printf 'met in %d of %d cells%s' "$met" "$total" "${missed:+ (not met: ${missed#, } connections)}"
}
cold_row() { # name policy-label
  local n=${COLD_N[$1]} ttfb origin goal="—"
  # shellcheck disable=SC2086 # word lists of seconds
  read -r ttfb _ <<< "$(stats_ms 2 ${COLD_TTFBS[$1]})"
  # shellcheck disable=SC2086 # word lists of seconds
  read -r origin _ <<< "$(stats_ms 2 ${COLD_OTTFBS[$1]})"
  if [ "$1" = agent ]; then
    goal=$(awk -v a="$ttfb" -v o="$origin" 'BEGIN { if (a <= o + 1) print "**met**"; else print "not met" }')
  fi
  awk -v t="${COLD_T[$1]}" -v f="$ttfb" -v of="$origin" -v goal="$goal" -v n="$n" -v o="${COLD_O[$1]}" -v size="$OBJECT_BYTES" -v name="$1" -v p="$2" 'BEGIN {
    printf "| %s | %s | %d | %.0f ms | %.0f MiB/s | %.2f ms | %.2f ms | %s | %.0f MiB | %.3f |\n",
      p, name, n, t / n * 1000, size * n / 1048576 / t, f, of, goal, o / 1048576, o / (size * n) }'
}

disk_section() {
  if [ "$DISK_TIER" != 1 ]; then
    # shellcheck disable=SC2016 # markdown backticks
    printf '## Disk tier\n\nNot measured in this run (`DISK_TIER=0`).\n'
    return
  fi
  local drop_text
  if [ "$DROP_CACHES" = 1 ]; then
    drop_text="Before each measurement of either cache (every wrk run and each cold pass) the script ran \`sync; echo 3 > /proc/sys/vm/drop_caches\`, identically for both, so each starts with nginx's cache files out of the page cache."
  else
    drop_text="The page cache was not dropped in this run (\`DROP_CACHES=0\`, or not root), so nginx's cache files stayed in the page cache from the warm-up on."
  fi
  cat <<EOF
## Disk tier

A second agent runs with a $DISK_MEMORY_CACHE memory tier and a $DISK_DEVICE_SIZE
device file (created sparse in the bench work directory; the store opens it
with O_DIRECT and writes 16 MiB regions), and a second nginx with the same
slice configuration whose \`proxy_cache_path\` is on the same ext4 filesystem
(\`max_size=$((DISK_OBJECTS * OBJECT_MIB * 2))m\`). Each has its own origin
port. Working set: $DISK_OBJECTS objects of $OBJECT_MIB MiB
($((DISK_OBJECTS * OBJECT_MIB)) MiB), $(awk -v w="$((DISK_OBJECTS * OBJECT_MIB))" -v m="$(mib "$(agent_metric slicecache_memory_capacity_bytes "$ADMIN_DISK_PORT")")" 'BEGIN { printf "%.0fx", w / m }') the agent's memory tier. Both were warmed with
one pass over the set; the script then waited until the agent had put
$(mib "$DISK_PUT") MiB on its device, and a second pass took origin bytes agent
$DWARM2_AGENT, nginx $DWARM2_NGINX (0: all hits), with $DWARM2_DISKHITS of the
agent's slices served from the disk tier. $drop_text This pair ran once,
under shmem huge pages $FIRST_THP.

What each side's "disk" is: the agent reads its device with O_DIRECT, so
every disk-tier hit is a real read of the device file (no page cache), while
nginx reads its cache files through the page cache. With
$MEM_TOTAL of memory and a $((DISK_OBJECTS * OBJECT_MIB)) MiB working set, nginx's files are back in the page
cache within the first pass of each run (the resident column below), so its
"disk" hits are mostly memory hits (the kernel's memory, outside nginx's
RSS); the agent's are device reads. The device is a virtual disk on this
machine, which may itself be cached by its host.

### Disk-tier hits

Same columns as "Cache hits" (agent / nginx, ratio agent / nginx). Load
average at the start of these runs $DISK_LOAD_START, at the end $DISK_LOAD_END.

| workload | clients | MiB/s | MiB/s ratio | req/s | p50 ms | p99 ms | p99 ratio | peak RSS MiB | CPU s per GiB | origin MiB | errors |
|---|---|---|---|---|---|---|---|---|---|---|---|
$(table_rows DISK_ROWS)

Where the hits came from, per run: the agent's
\`slicecache_slices_total{result="hit",tier=...}\` before and after, and how
much of nginx's cache directory was in the page cache after its run
(\`fincore\`).

| workload | clients | agent slice hits from disk | from memory | disk share | nginx cache resident in page cache after its run |
|---|---|---|---|---|---|
$(disk_src_rows)

### One pass after dropping the page cache

One client reads the whole working set once (sequential curl, whole objects)$([ "$DROP_CACHES" = 1 ] && echo " right after \`echo 3 > /proc/sys/vm/drop_caches\`" || echo " (page cache not dropped in this run)"):
agent $(awk -v t="${DCOLD_S[agent_disk]}" -v b="$DISK_WANT" 'BEGIN { printf "%.0f MiB/s (%.2f s)", b / 1048576 / t, t }') with ${DCOLD_DH[agent_disk]} slices from the disk tier,
nginx $(awk -v t="${DCOLD_S[nginx_disk]}" -v b="$DISK_WANT" 'BEGIN { printf "%.0f MiB/s (%.2f s)", b / 1048576 / t, t }')
(agent / nginx throughput ratio $(ratio "${DCOLD_S[nginx_disk]}" "${DCOLD_S[agent_disk]}")). This pass is the closest this
script gets to device reads for nginx; it is short (one working set) and
single runs of it vary.

### Other disk-tier numbers

- Warm-up (first fetch of the set, one client): agent ${DWARM_S[agent_disk]} s, nginx ${DWARM_S[nginx_disk]} s. Origin bytes over the whole run: agent $DISK_ORIGIN_AGENT, nginx $DISK_ORIGIN_NGINX (one working set each: $DISK_WANT).
- Agent device: \`slicecache_disk_capacity_bytes\` $DISK_M_CAP, used $DISK_M_USED, device writes $DISK_M_WRITTEN bytes, $((DISK_DEV_KIB / 1024)) MiB allocated in the sparse file; disk hits $DISK_M_HITS, misses $DISK_M_MISSES, checksum failures $DISK_M_CSUM, I/O errors $DISK_M_IOERR; mean device read $(awk -v s="$DISK_M_RSUM" -v n="$DISK_M_RCOUNT" 'BEGIN { if (n > 0) printf "%.2f ms", s / n * 1000; else print "n/a" }') over $DISK_M_RCOUNT reads.
- The device's read ceiling: four \`dd iflag=direct bs=1M\` readers at once over the first $DISK_DD_MIB MiB of the device file, after the last run$([ "$DROP_CACHES" = 1 ] && echo " and a page-cache drop"): $DISK_DD_RATE MiB/s. The agent's disk-tier hits cannot outrun it; nginx's page-cache hits are not bound by it.
- Agent memory tier at the end: $(mib "$DISK_MEM_USED") MiB used; VmHWM over the whole run $((DISK_AGENT_HWM / 1024)) MiB. Agent log: $DISK_AGENT_WARN WARN/ERROR lines${DISK_AGENT_WARN_TEXT:+: $DISK_AGENT_WARN_TEXT}.
- nginx: cache directory $(du -sm "$WORK/disk/peer/cache" | cut -f1) MiB; $DISK_PEER_ERR error-level lines in its error log.

$(fill_load_section)
EOF
}
disk_src_rows() {
  local mode conns dh mh res size label
  for row in "${DISK_SRC[@]}"; do
    read -r mode conns dh mh res size _ <<< "$row"   # a baseline's hits follow
    label="whole ${OBJECT_MIB} MiB"
    [ "$mode" = range ] && label="range $((RANGE_MIN / 1024)) KiB-$((RANGE_MAX / 1048576)) MiB"
    printf '| %s | %s | %s | %s | %s | %s of %s MiB |\n' "$label" "$conns" "$dh" "$mh" \
      "$(awk -v d="$dh" -v m="$mh" 'BEGIN { if (d + m > 0) printf "%.0f%%", 100 * d / (d + m); else print "n/a" }')" "$res" "$size"
  done
}

# ---------------------------------------------------------------- before and after (BASELINE_BIN)
cell_label() { # mode
  if [ "$1" = range ]; then echo "range $((RANGE_MIN / 1024)) KiB-$((RANGE_MAX / 1048576)) MiB"; else echo "whole ${OBJECT_MIB} MiB"; fi
}
ba_stats() { # RESULT line -> MiB/s req/s p50_us p99_us peak-RSS-MiB CPU-s-per-GiB origin-MiB errors
  local l=$1
  awk -v b="$(field bytes "$l")" -v r="$(field requests "$l")" -v d="$(field duration_us "$l")" \
    -v t="$(field cpu_ticks "$l")" -v hz="$CLK_TCK" -v p50="$(field p50_us "$l")" -v p99="$(field p99_us "$l")" \
    -v rss="$(field rss_kib "$l")" -v o="$(field origin "$l")" \
    -v e="$(( $(field connect "$l") + $(field read "$l") + $(field write "$l") + $(field status "$l") + $(field timeout "$l") ))" \
    'BEGIN {
      s = d / 1e6
      printf "%.0f %.1f %d %d %d %s %.0f %d\n", (s > 0 ? b / 1048576 / s : 0), (s > 0 ? r / s : 0), p50, p99, rss / 1024,
        (b > 0 ? sprintf("%.2f", t / hz / (b / 1073741824)) : "n/a"), o / 1048576, e
    }'
}
ba_tables() { # array of rows (agent | nginx | baseline) [ceiling]: three
  # before/after/nginx tables; with "ceiling" (the memory tier), each cell's
  # ceiling beside it and a fourth table of the goal, before and after
  local -n rows_=$1
  local with_ceiling=${2:-} row mode conns label a n b c cm t1="" t2="" t3="" t4="" ch="" cs=""
  local am ar ap50 ap99 arss acpu ao ae bm br bp50 bp99 brss bcpu bo be nm nr np50 np99 nrss ncpu no ne
  [ -z "$with_ceiling" ] || { ch=" MiB/s ceiling | after / ceiling |"; cs="---|---|"; }
  for row in "${rows_[@]}"; do
    read -r mode conns <<< "${row%% |*}"
    a=$(cut -d'|' -f2 <<< "$row"); n=$(cut -d'|' -f3 <<< "$row"); b=$(cut -d'|' -f4 <<< "$row")
    read -r am ar ap50 ap99 arss acpu ao ae <<< "$(ba_stats "$a")"
    read -r bm br bp50 bp99 brss bcpu bo be <<< "$(ba_stats "$b")"
    read -r nm nr np50 np99 nrss ncpu no ne <<< "$(ba_stats "$n")"
    label=$(cell_label "$mode")
    local cc=""
    if [ -n "$with_ceiling" ]; then
      c=${CEILING["$mode $conns"]}
      read -r cm _ <<< "$(ba_stats "$c")"
      cc=" $cm | $(ratio "$am" "$cm") |"
      t4+="| $label | $conns | $cm | $(ratio "$bm" "$cm") | $(ratio "$am" "$cm") | $(goal_text "$(goal_of "$b" "$n" "$c")") | $(goal_text "$(goal_of "$a" "$n" "$c")") |"$'\n'
    fi
    t1+="| $label | $conns | $bm | $am | $nm |$cc **$(ratio "$am" "$bm")** | $(ratio "$am" "$nm") | $(ratio "$bm" "$nm") | $br / $ar / $nr |"$'\n'
    t2+="| $label | $conns | $(ms "$bp50") / $(ms "$ap50") / $(ms "$np50") | $(ms "$bp99") | $(ms "$ap99") | $(ms "$np99") | **$(ratio "$ap99" "$bp99")** | $(ratio "$ap99" "$np99") | $(ratio "$bp99" "$np99") |"$'\n'
    t3+="| $label | $conns | $brss / $arss / $nrss | $bcpu / $acpu / $ncpu | $bo / $ao / $no | $be / $ae / $ne |"$'\n'
  done
  printf '| workload | clients | MiB/s before | MiB/s after | MiB/s nginx |%s after / before | after / nginx | before / nginx | req/s before / after / nginx |\n' "$ch"
  printf '|---|---|---|---|---|%s---|---|---|---|\n%s\n' "$cs" "$t1"
  printf '| workload | clients | p50 ms before / after / nginx | p99 ms before | p99 ms after | p99 ms nginx | p99 after / before | p99 after / nginx | p99 before / nginx |\n'
  printf '|---|---|---|---|---|---|---|---|---|\n%s\n' "$t2"
  printf '| workload | clients | peak RSS MiB before / after / nginx | CPU s per GiB before / after / nginx | origin MiB before / after / nginx | errors before / after / nginx |\n'
  printf '|---|---|---|---|---|---|\n%s' "$t3"
  [ -n "$with_ceiling" ] || return 0
  printf '\nThe goal (see "Cache hits" for the rules and the ceiling), before: %s; after: %s.\n\n' \
    "$(goal_summary "$1" baseline)" "$(goal_summary "$1")"
  printf '| workload | clients | MiB/s ceiling | before / ceiling | after / ceiling | goal before | goal after |\n'
  printf '|---|---|---|---|---|---|---|\n%s' "$t4"
}
cold_ba() { # policy-label: the cold-miss pass, before / after / nginx
  local what
  for what in time ttfb; do
    awk -v p="$1" -v what="$what" -v bt="${COLD_T[baseline]}" -v at="${COLD_T[agent]}" -v nt="${COLD_T[nginx]}" \
      -v bf="${COLD_TTFB[baseline]}" -v af="${COLD_TTFB[agent]}" -v nf="${COLD_TTFB[nginx]}" \
      -v bn="${COLD_N[baseline]}" -v an="${COLD_N[agent]}" -v nn="${COLD_N[nginx]}" 'BEGIN {
        if (what == "time") { b = bt / bn * 1000; a = at / an * 1000; n = nt / nn * 1000; label = "time per object, ms" }
        else { b = bf / bn * 1000; a = af / an * 1000; n = nf / nn * 1000; label = "time to first byte, ms" }
        printf "| %s | %s | %.1f | %.1f | %.1f | **%.2f** | %.2f | %.2f |\n", p, label, b, a, n, a / b, a / n, b / n
      }'
  done
  awk -v p="$1" -v b="${COLD_O[baseline]}" -v a="${COLD_O[agent]}" -v n="${COLD_O[nginx]}" -v size="$OBJECT_BYTES" -v k="$COLD_OBJECTS" \
    'BEGIN { printf "| %s | origin bytes / object bytes | %.3f | %.3f | %.3f | | | |\n", p, b / (size * k), a / (size * k), n / (size * k) }'
}
disk_src_ba() { # where the two agents' disk-tier hits came from
  local mode conns dh mh res size bdh bmh
  for row in "${DISK_SRC[@]}"; do
    read -r mode conns dh mh res size bdh bmh <<< "$row"
    awk -v l="$(cell_label "$mode")" -v c="$conns" -v bd="$bdh" -v bm="$bmh" -v ad="$dh" -v am="$mh" 'BEGIN {
      printf "| %s | %s | %d / %d | %d / %d | %s / %s |\n", l, c, bd, ad, bm, am,
        (bd + bm > 0 ? sprintf("%.0f%%", 100 * bd / (bd + bm)) : "n/a"), (ad + am > 0 ? sprintf("%.0f%%", 100 * ad / (ad + am)) : "n/a") }'
  done
}
before_after_section() {
  cat <<SECTION
## Before and after

Three caches in one run:

- before: the agent at commit $BASELINE_COMMIT_TEXT (\`BASELINE_BIN\`)
- after: the agent at commit $COMMIT (\`SLICECACHE_BIN\`)
- nginx, as in the rest of this file

Both agents run with the same flags, each with its own origin port and
its own copy of every setting above (memory tier $MEMORY_CACHE, $SLICE slices,
$CONCURRENCY in flight; the disk-tier pair: $DISK_MEMORY_CACHE memory and a
$DISK_DEVICE_SIZE device file each). Every cell's $ROUNDS rounds rotate the
three caches and, for memory hits, the ceiling (the order shifts by one
each round, so each goes first in turn), with the same wrk settings and
seeds, so that all see the same load of this shared machine; the cold-miss pass rotates them object by
object. After / before above 1 means the current agent is faster (for p99:
below 1, its tail is shorter).

Reproduce (prebuilt binaries: \`git worktree add DIR COMMIT\`, then
\`cargo build --release --locked -p slicecache-agent\` in DIR):

\`\`\`
$REPRO_CMD
\`\`\`

### Memory-tier hits

$(passes ba-hits)

### Cold misses

$COLD_OBJECTS fresh $OBJECT_MIB MiB objects, one client, each object through
each cache once (see "Cold misses" below for the setup), once per shmem
huge page policy.

| shmem huge pages | | before | after | nginx | after / before | after / nginx | before / nginx |
|---|---|---|---|---|---|---|---|
$(passes ba-cold)

The far origin and the many cold clients, with the baseline beside the
agent and nginx, are in their own sections below.
SECTION
  if [ "$DISK_TIER" = 1 ]; then
    cat <<SECTION

### Disk-tier hits

The disk-tier agents side by side (see "Disk tier" below for the setup; each
agent has its own device file, and the page cache was$([ "$DROP_CACHES" = 1 ] || echo " not") dropped before each
measurement).

$(ba_tables DISK_ROWS)

Slice hits during each cell, from \`slicecache_slices_total\` of each agent:

| workload | clients | from disk, before / after | from memory, before / after | disk share, before / after |
|---|---|---|---|---|
$(disk_src_ba)

One pass over the working set after dropping the page cache (one client):
before $(awk -v t="${DCOLD_S[baseline_disk]}" -v b="$DISK_WANT" 'BEGIN { printf "%.0f MiB/s (%.2f s)", b / 1048576 / t, t }') with ${DCOLD_DH[baseline_disk]} slices from the disk tier,
after $(awk -v t="${DCOLD_S[agent_disk]}" -v b="$DISK_WANT" 'BEGIN { printf "%.0f MiB/s (%.2f s)", b / 1048576 / t, t }') with ${DCOLD_DH[agent_disk]},
nginx $(awk -v t="${DCOLD_S[nginx_disk]}" -v b="$DISK_WANT" 'BEGIN { printf "%.0f MiB/s (%.2f s)", b / 1048576 / t, t }') (throughput after / before $(ratio "${DCOLD_S[baseline_disk]}" "${DCOLD_S[agent_disk]}"); a single pass).
Before's device: used $BDISK_M_USED bytes, checksum failures $BDISK_M_CSUM,
I/O errors $BDISK_M_IOERR, mean device read $(awk -v s="$BDISK_M_RSUM" -v n="$BDISK_M_RCOUNT" 'BEGIN { if (n > 0) printf "%.2f ms", s / n * 1000; else print "n/a" }') over $BDISK_M_RCOUNT reads
(after's: under "Other disk-tier numbers"); origin bytes over the whole run
$BDISK_ORIGIN; VmHWM $((BDISK_HWM / 1024)) MiB; $BDISK_WARN WARN/ERROR log lines.
Warm-up: before ${DWARM_S[baseline_disk]} s; second pass origin bytes
$DWARM2_BASELINE, $DWARM2_BASELINE_DISKHITS slices from its disk tier.
SECTION
  fi
  echo
}
# ---------------------------------------------------------------- one part per shmem policy
# run.sh measures the memory-tier hit cells and the cold misses once per
# policy in SHMEM_THP and reuses ROWS, CEILING and COLD_* for each, so
# save_pass renders each pass's tables as soon as it ends (into
# WORK/report), and write_report puts them together with passes.
save_pass() { # k: the pass under the k-th policy (THP_RUN)
  local k=$1 d=$WORK/report label name
  mkdir -p "$d"
  label=$THP_RUN
  [ "$THP_RUN" != "$THP_BEFORE" ] || label+=" (the host's setting)"
  if [ ${#ROWS[@]} -eq 0 ]; then
    # shellcheck disable=SC2016 # markdown backticks
    printf 'No hit cells in this run (`FULL_CONNS` and `RANGE_CONNS` empty).\n\n' > "$d/none.md"
    { printf '### Shmem huge pages: %s\n\n' "$label"; cat "$d/none.md"; } > "$d/hits-$k.md"
    { printf '#### Shmem huge pages: %s\n\n' "$label"; cat "$d/none.md"; } > "$d/ba-hits-$k.md"
  else
    {
      printf '### Shmem huge pages: %s\n\n' "$label"
      printf '| workload | clients | MiB/s | MiB/s ratio | ceiling MiB/s | agent / ceiling | req/s | p50 ms | p99 ms | p99 ratio | peak RSS MiB | CPU s per GiB | origin MiB | errors | goal |\n'
      printf '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n'
      table_rows ROWS ceiling
      printf '\nGoal with shmem huge pages %s: %s.\n\n' "$THP_RUN" "$(goal_summary ROWS)"
    } > "$d/hits-$k.md"
    [ -z "$BASELINE_BIN" ] || { printf '#### Shmem huge pages: %s\n\n' "$label"; ba_tables ROWS ceiling; printf '\n'; } > "$d/ba-hits-$k.md"
  fi
  for name in $CACHES; do cold_row "$name" "$label"; done > "$d/cold-$k.md"
  [ -z "$BASELINE_BIN" ] || cold_ba "$label" > "$d/ba-cold-$k.md"
  pass_other "$k" "$label" > "$d/other-$k.md"
}
passes() { # part: that part of every pass, in order
  local k
  for k in $(seq "${#THP_LIST[@]}"); do cat "$WORK/report/$1-$k.md"; done
}
# shellcheck disable=SC2016 # markdown backticks
pass_other() { # k label: the pass's bullets for "Other numbers"
  if [ "$1" = 1 ]; then
    printf -- '- Warm-up (first fetch of all %s objects, one client): agent %s s, nginx %s s%s. Second sequential pass over the hit set: origin bytes agent %s, nginx %s%s (0 means every slice was a hit).\n' \
      "$OBJECTS" "${WARM_S[agent]}" "${WARM_S[nginx]}" "${BASELINE_BIN:+, baseline ${WARM_S[baseline]:-} s}" \
      "${WARM2[agent]}" "${WARM2[nginx]}" "${BASELINE_BIN:+, baseline ${WARM2[baseline]:-}}"
  else
    printf -- '- Agent%s restarted under shmem huge pages %s: warm-up %s s%s, second pass origin bytes %s%s.\n' \
      "${BASELINE_BIN:+ and baseline}" "$THP_RUN" "${WARM_S[agent]}" "${BASELINE_BIN:+ (baseline ${WARM_S[baseline]:-} s)}" \
      "${WARM2[agent]}" "${BASELINE_BIN:+ (baseline ${WARM2[baseline]:-})}"
  fi
  printf -- '- Agent, shmem huge pages %s: `slicecache_origin_bytes_total` = %s at the end of the pass, origin log for its port = %s; `slicecache_memory_used_bytes` = %s; VmHWM since it started %s MiB; memory tier arena %s (agent log), `ShmemHugePages` in /proc/meminfo after the hit runs %s MiB; %s WARN/ERROR log lines%s.\n' \
    "$2" "$AGENT_ORIGIN_METRIC" "$AGENT_ORIGIN_LOG" "$AGENT_MEM_USED" "$((AGENT_HWM / 1024))" "${AGENT_ARENA:-not reported}" \
    "$SHMEM_HUGE_MIB" "$AGENT_WARN" "${AGENT_WARN_TEXT:+: $AGENT_WARN_TEXT}"
  [ -n "$BASELINE_BIN" ] || return 0
  printf -- '- Baseline agent at commit %s, shmem huge pages %s: `slicecache_origin_bytes_total` = %s, origin log for its port = %s; `slicecache_memory_used_bytes` = %s; VmHWM since it started %s MiB; memory tier arena %s; %s WARN/ERROR log lines%s.\n' \
    "${BASELINE_COMMIT:-unknown}" "$2" "$BASELINE_ORIGIN_METRIC" "$BASELINE_ORIGIN_LOG" \
    "$BASELINE_MEM_USED" "$((BASELINE_HWM / 1024))" "${BASELINE_ARENA:-not reported}" "$BASELINE_WARN" "${BASELINE_WARN_TEXT:+: $BASELINE_WARN_TEXT}"
}
thp_text() { # the policies for "This run"
  local p list=""
  for p in "${THP_LIST[@]}"; do
    [ "$p" != keep ] || p="$THP_BEFORE"
    list+=", $p"
  done
  printf 'shmem huge page policies %s (one pass of the memory-tier hit cells and the cold misses each; the other cases under the first), host setting %s, restored on exit' "${list#, }" "$THP_BEFORE"
  [ -z "$THP_NOTE" ] || printf ' (%s)' "$THP_NOTE"
}

write_report() { # BENCH_OUT, keeping bench/operator-scale.sh's section
  log "writing $BENCH_OUT"
  report_facts
  mkdir -p "$(dirname "$BENCH_OUT")"
  {
cat <<'EOF'
# Benchmarks: slicecache-agent and nginx's slice module

This file is generated by `bench/run.sh`; edit the preamble in
`bench/report.sh`, not here. One run starts a local origin (nginx serving
generated random files, so responses carry real `ETag`, `Last-Modified` and
range support), nginx's slice module as a caching proxy in front of it
(`slice 1m`, `proxy_cache_key $uri$is_args$args$slice_range`,
`proxy_cache_valid 200 206 1h`, two workers), and the agent (memory tier
only, 1 MiB slices, 4 slices in flight); a second pair, started the same
way, measures the agent's disk tier (see "Disk tier" below), and two more
cases start caches of their own: an origin a round trip away ("Far
origin") and many cold clients at once ("Many cold clients"). Both caches
are warmed with the same objects, then each workload runs in rounds that
rotate the caches and, for memory hits, the cell's ceiling (the same load
against the origin's files served by a plain `sendfile` file server: see
"Cache hits"): the order shifts by one each round, so each goes first in
turn, with the same wrk settings, seeds and duration, so that all see the
same drift of a shared machine. Everything is on one machine and binds
127.0.0.1: wrk, both caches and the origin share the same cores, so these
numbers compare the two caches' CPU cost per byte more than anything a
network would show. They are ratios on this machine, not promises for
another.

EOF
cat <<EOF
## This run

- Command: \`bash bench/run.sh\` (environment: \`$RUN_ENV\`)
- Date: $(date -u '+%Y-%m-%d %H:%M UTC')
- Machine: $(nproc) CPUs ($CPU_MODEL), $MEM_TOTAL memory, Linux $(uname -r); $(thp_text); load average at the start $LOAD_START, before the report $LOAD (other engineers' builds share the machine; read the side-by-side ratios, since both caches run under the same load)
- Software: agent at commit $COMMIT (release profile)${BASELINE_BIN:+, baseline agent at commit $BASELINE_COMMIT_TEXT (release profile)}, $NGINX_VERSION (Debian nginx-light), $WRK_VERSION
- Hit set: $OBJECTS objects of $OBJECT_MIB MiB ($((OBJECTS * OBJECT_MIB)) MiB); agent memory tier $MEMORY_CACHE, so every slice fits; nginx's cache is files on the local ext4 disk (in the page cache after warm-up)

EOF
[ -z "$BASELINE_BIN" ] || before_after_section
cat <<EOF
## Cache hits

Each cell is agent / nginx. Throughput is wrk's body+header bytes per second
(MiB/s); the ratio column is agent / nginx (above 1: the agent is faster; for
p99, below 1: the agent's tail is shorter). Each cell combines $ROUNDS rounds of
${DURATION} s per cache: bytes and requests over the total time, p50 and p99 the
median of the rounds' values. Latencies are whole-response times
in ms. Peak RSS is VmHWM reset before the first round (\`/proc/PID/clear_refs\`), summed
over nginx's master and workers. Neither side's cached bytes are in it: nginx's
cache files sit in the page cache, and the agent's memory tier is a
shared-memory file (in a tmpfs of its own, as this script runs it as root;
see "Reading these numbers") that hits are sent from with \`sendfile\`; its size is
\`slicecache_memory_used_bytes\`, given under "Other numbers". CPU s per GiB is the cache's own user+system
CPU time (from \`/proc/PID/stat\`) per GiB it sent. Origin MiB is what the origin sent during the
run (expected 0: all hits). Errors count wrk's connect/read/write/timeout
errors and non-2xx answers. Whole-object runs use ${FULL_CONNS// /, } connections
only: with $OBJECT_MIB MiB responses, 512 connections sharing ~1 GB/s would
finish almost no response within a round.

Each cell's ceiling is the same wrk load (the same script, seed,
connections, threads, duration and rounds, in the same rotation as the
caches) against a plain \`sendfile\` file server on loopback serving the
same objects at the same URIs: the origin nginx (two workers,
\`sendfile on\`, its files in the page cache), on a port of its own without
an access log. It is what this machine's loopback path, wrk and a file
server without any cache logic do with that load. Ceiling MiB/s is its
throughput (with its errors, if any), agent / ceiling the agent's share of
it. $GOAL_RULES

The hit cells run once per shmem huge page policy (\`SHMEM_THP\`, one table
each): the agent, and the baseline when there is one, is restarted and
warmed again under each policy, so that its memory tier's arena is made
under it; nginx, whose cache is on ext4 and not in shmem, and the ceiling
go on as they were, and run every cell again beside it. An agent that may
mount (this script runs it as root) puts its arena in a tmpfs of its own
mounted with huge pages, which the host's policy does not govern (short
of \`deny\`), so the two passes show whether the host's setting still
matters; the arena's kind is under "Other numbers".

EOF
passes hits
cat <<EOF
## Cold misses

$COLD_OBJECTS fresh $OBJECT_MIB MiB objects, each requested once through each
cache with curl (one client, sequential, the $NCACHES_WORD caches interleaved object by
object). Origin bytes come from the origin's access log (\`\$body_bytes_sent\`
per listening port). The origin is on loopback with no added latency, so the
agent's parallel slice fetches (${CONCURRENCY} at a time against nginx's one
after another) have no round trips to hide here; "Far origin" below puts
the origin a round trip away. These objects are new for each shmem huge
page policy's pass. "Origin's own first byte" is curl's time to first
byte from the origin itself for the object's first slice (\`Range:
bytes=0-$((SLICE_BYTES - 1))\`, on a port of the origin that is not logged), taken
just before each cache's fetch of that object.

| shmem huge pages | cache | objects | time per object | MiB/s | time to first byte, median | origin's own first byte, median | goal: at most the origin's + 1 ms | origin MiB | origin bytes / object bytes |
|---|---|---|---|---|---|---|---|---|---|
$(passes cold)

$(far_section)

$(cold_clients_section)

## Other numbers from this run

$(passes other)
- nginx: cache directory $((PEER_CACHE_KIB / 1024)) MiB on disk (served from the page cache, which its RSS does not count); $ERRLINES error-level lines in its error log.
- Peak-RSS reset supported: $PEAK_RESET.

## Correctness (once per run)

| check | result |
|---|---|
$(printf '%s\n' "${CHECKS[@]}")

$(disk_section)

## Reading these numbers

EOF
cat <<'EOF'
- Both caches send memory hits with `sendfile`: nginx from its cache files
  in the page cache, the agent (since commit 0d11714) from its memory tier,
  a shared-memory file. The kernel passes the pages to the socket and the
  one copy happens on the receiving side, charged to wrk. Before that commit
  the agent `write()`s each slice from the heap, so that copy was charged to
  the agent: 0.28-0.32 CPU s per GiB at 64 range connections against nginx's
  0.13-0.15, and p99 at 64 range connections 1.6-3.2x nginx's in every run
  (the machine's two cores are shared with wrk, so the cache that spends
  less CPU leaves more for the client). With `sendfile`, the full run at
  d8ca993 put the agent at 0.97-1.08x nginx's throughput and 0.78-1.12x its
  p99, with 0.10-0.19 CPU s per GiB against 0.09-0.22; compare this run's
  table before reading anything into one cell. With base pages the agent
  looks up its memfd's pages one 4 KiB page at a time (perf: about a fifth
  of its CPU on hits is `filemap_get_entry`), while nginx's ext4 page
  cache uses large folios. The agent's memory tier now frees memory only in
  whole 2 MiB blocks, which makes shmem huge pages safe (docs/agent.md);
  this script runs the memory-tier hit cells and the cold misses once per
  shmem policy in `SHMEM_THP` (by default `never`, most hosts' setting,
  and `advise`, with which the agent's arena is made of huge pages: see
  `ShmemHugePages` under "Other numbers"), and restores the host's setting
  on exit. nginx is not affected by that setting: its cache files are on
  ext4, not shmem.
  Since commit d77ddf5 an agent that may mount (`CAP_SYS_ADMIN`: root, or
  a privileged pod, as agents with raw devices are) keeps its arena in a
  tmpfs of its own mounted with `huge=always` (attached to no mount table),
  whose huge pages the host's `never` does not govern; an agent that may
  not (a memory-only pod, non-root with no capabilities) keeps the memfd
  and the host's policy. Profiled by hand with `perf record -g` on the
  agent during `wrk -t1 -c16` range hits (the same script and objects as
  the range cells) under `never`: `filemap_get_entry` fell from about a
  fifth of the samples to 0.6%; what is left is the loopback path both
  caches share (`_raw_spin_unlock_irqrestore` 23% and `handle_softirqs`
  16%, the receiving side's TCP work run on the sender's CPU), the pipe
  buffers of the splice, one per 4 KiB page even from a huge page
  (`page_cache_pipe_buf_confirm`/`_release` 12%, `skb_append_pagefrags`
  5%), and the agent's own code, under 3%. `strace -c` on the same load
  counted, per range hit, one `recvfrom`, one `sendto` (the header), 2.7
  `sendfile` (one per run of slices that sit back to back in the arena),
  and a `dup`, two `epoll_ctl` and a `close` to register the socket for
  writability; since commit 8797f5c the socket is registered only when a
  `sendfile` finds it full (counted by
  `slicecache_client_sendfile_waits_total`); the hit tables above, beside
  nginx in the same run, show its CPU per GiB with both changes.
- Where a cold fill's time goes, by the same `perf` on the agent during
  cold 64 MiB misses from a loopback origin: the kernel clearing the
  arena's new huge pages (`clear_page_erms`, 36%: a huge page is cleared
  whole when it is first touched, while base pages written whole are
  never cleared), receiving from the origin and sending to the client
  (`_copy_to_iter`, `_copy_from_iter`, 7% each), copying into the arena
  (`copy_folio_from_iter_atomic`, 6%), and the loopback path. Writing a
  fresh huge page with `pwrite` had it zeroed around the written bytes
  under the file's lock, which stalled every other fill (`memset_orig` 45%,
  `rwsem_spin_on_owner` 22%; cold misses ~3x slower): the arena now faults
  each new block in through a mapping first, outside the lock, a thread of
  its own does that ahead of need (since commit 11d40c1), and a completed
  fill is written into the arena on a blocking thread (b045277). Clearing
  is not always that cheap: on this machine (a virtual machine) cold
  misses into huge pages were bimodal, about as fast as into base pages
  at some times and up to twice as slow at others, such as just after
  other heavy work had freed memory, with `clear_page_erms` in the
  populating thread the largest item of a `perf record -a`; the same
  cold-miss pass with the agent run without `CAP_SYS_ADMIN` (a memfd of
  base pages, through `setpriv --reuid=65534 --inh-caps=-all
  --bounding-set=-all` as `SLICECACHE_BIN`) stayed at 73-81 ms per object
  in those runs. Since then a fill no longer waits for that clearing: a
  slice that needs a new block when the populating thread (now at nice
  19) has none ready goes to a base-page spill memfd
  (`slicecache_memory_spilled_extents_total`), so the clearing costs
  CPU in the background but not time on the fill's path. By hand
  (20 cold objects, release builds alternately) that brought cold misses
  close to a memfd agent's, but both stayed noisy on this shared VM; the
  cold-miss table above is the measurement. Huge pages still trade some
  fill CPU for hit speed.
  With huge pages the two caches are within about 10% of each other in
  every hit cell of the runs so far, and the sign of the throughput and
  p99 ratios moves from run to run (earlier runs: 1.06-1.23x throughput
  at 64 and 512 connections, 0.91x-1.12x at one; this run's tables above
  show 0.96x-1.26x); the single-connection cells are decided by CPU per
  GiB and p99 within a few percent. One connection is bound by the
  kernel's loopback path and wrk's copy (perf: 92-98% of the agent's
  samples in the kernel, 6% in its own code), the same for both caches.
- At 64 and 512 connections both caches reach the loopback ceiling of this
  machine (2.4-3 GB/s across earlier runs; the ceiling column measures it
  in each run, for each cell): wrk (two threads receiving every
  byte) and the kernel's loopback path are the bottleneck, so throughput
  converges and the tail mostly reflects which connections get served
  first. p99 at 512 connections moved by 2x between runs of the same
  binaries while this script was written; read p99 ratios above 64
  connections as indicative.
- The disk-tier agent reads each slice from its device (O_DIRECT into a
  pooled aligned buffer, checksum verified on the read thread) and
  `write()`s it from that buffer: `sendfile` needs the bytes in a file's
  page cache, which O_DIRECT bypasses on purpose, so the kernel copies each
  byte into the socket and its CPU per GiB is several times the memory
  tier's. Until commit 50f3439 every read allocated a fresh buffer, whose
  page faults and zeroing put it at 1.22-1.72 CPU s per GiB (run at
  2f6df84). Its throughput is bound by the device: compare it with the
  device's read ceiling under "Other disk-tier numbers". nginx's "disk"
  hits come from the page cache (see the resident column), so that pair
  compares a device read with a memory read.
- The ceiling is a plain nginx file server under the same load, so where
  it is below 1.2x nginx's throughput, nginx is already within 20% of what
  this machine's loopback path and wrk deliver and no cache could be 1.2x
  faster; there the goal asks for 95% of the ceiling instead. It is
  measured in the same rotation as the caches, so it moves with the
  machine's load as they do, and a cache can exceed it (agent / ceiling
  above 1) where its path per byte is shorter than nginx's static file
  path.
- Neither RSS column includes cached bytes: nginx's cache lives in files and
  the kernel's page cache, the agent's memory tier in shared memory. `slicecache_memory_used_bytes` under "Other numbers" is the
  agent's cached bytes.
- Range hits of 64 KiB-4 MiB touch 1-5 slices each.
- Cold misses over loopback measure per-slice overhead, not the round-trip
  hiding that slicing with concurrency is for ("Far origin" measures
  that); single-object times of ~100-200 ms are sensitive to other load on
  the machine.
- Other work on the machine during the run (see the load average above) adds
  noise to both columns; the two caches alternate within each workload so the
  noise is shared, but single runs can still differ by 10-30%.
EOF
# The operator's section is bench/operator-scale.sh's: kept as it was.
if [ -f "$BENCH_OUT" ] && grep -q '^## Operator at scale$' "$BENCH_OUT"; then
  echo
  sed -n '/^## Operator at scale$/,$p' "$BENCH_OUT"
fi
  } > "$BENCH_OUT.tmp"
  mv "$BENCH_OUT.tmp" "$BENCH_OUT"
}
