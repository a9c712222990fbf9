# shellcheck shell=bash
# bench/fill-load.sh - serving while the disk tier fills: the disk-tier
# caches of bench/run.sh serve random-range hits over their warm set with
# wrk, once alone ("quiet") and once while one more client pulls objects
# they have never seen at a fixed rate ("filling"), so every byte of it is
# fetched from the origin and written to the disk tier (the agent's device,
# nginx's cache files) while the hits go on. The report gives each cache's
# hit throughput filling / quiet; the issue's goal is at most a 10% cut.
# Sourced by run.sh after its disk tier ran, not run: it uses run.sh's
# helpers (url_of, rotate, drop_caches, log, die).

FILL_LOAD=${FILL_LOAD:-1}                # 0: skip this case
FILL_LOAD_CONNS=${FILL_LOAD_CONNS:-16}   # wrk connections for the hits
FILL_LOAD_RATE=${FILL_LOAD_RATE:-48M}    # the filling client's rate (curl --limit-rate)
FILL_LOAD_ROUNDS=${FILL_LOAD_ROUNDS:-2}
declare -A FL_QUIET FL_FILL FL_FILLED   # name -> MiB/s per round (words), MiB pulled while filling

fill_load_wrk() { # url out: random-range hits over the disk set for DURATION, in the background (pid in WRK_PID)
  BENCH_MODE=range BENCH_OBJECTS=$DISK_OBJECTS BENCH_SIZE=$OBJECT_BYTES BENCH_PREFIX=/obj- BENCH_SEED=$SEED \
    BENCH_RMIN=$RANGE_MIN BENCH_RMAX=$RANGE_MAX \
    wrk -t 2 -c "$FILL_LOAD_CONNS" -d "${DURATION}s" --timeout 120s --latency \
    -s "$ROOT/bench/wrk-slices.lua" "$1/" > "$2" 2>&1 &
  WRK_PID=$!
}

fill_load_mibs() { # wrk output -> MiB/s
  local res
  res=$(grep '^RESULT' "$1" || true)
  [ -n "$res" ] || die "wrk printed no result; see $1"
  awk -v r="$res" 'BEGIN { n = split(r, f, " "); for (i = 2; i <= n; i++) { split(f[i], kv, "="); v[kv[1]] = kv[2] }
    printf "%.0f", v["bytes"] / 1048576 / (v["duration_us"] / 1e6) }'
}

fill_load_case() {
  local round name url order out j link pulled got
  log "serving while the disk tier fills: wrk range -c $FILL_LOAD_CONNS over the disk set, quiet and with a client pulling new objects at $FILL_LOAD_RATE/s"
  for name in $DISK_CACHES; do FL_QUIET[$name]=""; FL_FILL[$name]=""; FL_FILLED[$name]=0; done
  for round in $(seq "$FILL_LOAD_ROUNDS"); do
    # shellcheck disable=SC2086 # DISK_CACHES is a word list
    order=$(rotate $((round - 1)) $DISK_CACHES)
    for name in $order; do
      url=$(url_of "$name")
      drop_caches
      out="$WORK/fill-load-$name-$round-quiet.txt"
      fill_load_wrk "$url" "$out"
      wait "$WRK_PID" || true
      FL_QUIET[$name]+="$(fill_load_mibs "$out") "
      drop_caches
      out="$WORK/fill-load-$name-$round-filling.txt"
      fill_load_wrk "$url" "$out"
      # New URLs for the warm set's bytes (symlinks at the origin): each
      # is a miss that the cache fetches whole and stores on its disk tier.
      j=0 pulled=0
      while kill -0 "$WRK_PID" 2>/dev/null; do
        j=$((j + 1))
        link="fill-$name-$round-$j"
        ln -sf "obj-$(((j - 1) % DISK_OBJECTS + 1))" "$WORK/origin/data/$link"
        got=$(curl -s -o /dev/null --limit-rate "$FILL_LOAD_RATE" -m "$DURATION" -w '%{size_download}' "$url/$link" || true)
        pulled=$((pulled + ${got:-0}))
      done
      wait "$WRK_PID" || true
      FL_FILL[$name]+="$(fill_load_mibs "$out") "
      FL_FILLED[$name]=$((FL_FILLED[$name] + pulled))
      log "  $name round $round: hits filling $(fill_load_mibs "$out") MiB/s (quiet: ${FL_QUIET[$name]}), $(mib "$pulled") MiB pulled"
    done
  done
}

fill_load_section() {
  if [ "$DISK_TIER" != 1 ] || [ "$FILL_LOAD" != 1 ]; then
    # shellcheck disable=SC2016 # markdown backticks
    printf '### Serving while the disk tier fills\n\nNot measured in this run (`DISK_TIER=0` or `FILL_LOAD=0`).\n'
    return
  fi
  local name quiet fill ratio goal
  cat <<EOF
### Serving while the disk tier fills

Goal: filling the disk tier while serving cuts the client's throughput by
at most 10%. The disk-tier pair above serves random ranges ($RANGE_MIN-$RANGE_MAX
bytes) over its warm set with \`wrk -c $FILL_LOAD_CONNS\` for ${DURATION} s, once
alone and once while one more client pulls objects the cache has not seen at
$FILL_LOAD_RATE/s (\`curl --limit-rate\`; new URLs at the origin for the same
bytes, so every byte is fetched and written to the cache's disk tier: the
agent's device, nginx's cache files), $FILL_LOAD_ROUNDS round(s), the caches
rotating, the page cache dropped before each run. MiB/s is the hits' median
over the rounds.

| cache | hits alone, MiB/s | hits while filling, MiB/s | while filling / alone | MiB pulled while filling (all rounds) | goal: at least 0.90 |
|---|---|---|---|---|---|
EOF
  for name in $DISK_CACHES; do
    # shellcheck disable=SC2086 # word lists
    quiet=$(median ${FL_QUIET[$name]})
    # shellcheck disable=SC2086 # word lists
    fill=$(median ${FL_FILL[$name]})
    ratio=$(awk -v q="$quiet" -v f="$fill" 'BEGIN { printf "%.2f", (q > 0 ? f / q : 0) }')
    goal="—"
    [ "$name" = agent_disk ] && goal=$(awk -v r="$ratio" 'BEGIN { print (r >= 0.9 ? "**met**" : "not met") }')
    printf '| %s | %.0f | %.0f | %s | %s | %s |\n' "${name%_disk}" "$quiet" "$fill" "$ratio" "$(mib "${FL_FILLED[$name]}")" "$goal"
  done
}
