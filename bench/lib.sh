# shellcheck shell=bash
# bench/lib.sh - what the benchmark scripts share: logging, ports, waiting,
# number formatting, and the origin (nginx serving random files on
# loopback, logging the bytes it sends per listening port, so that one log
# tells which cache asked for which bytes). Sourced, not run; the caller
# sets BENCH_TAG (the log prefix), NGINX (the nginx binary) and PIDS (an
# array of the processes it must stop).

log() { printf '[%s %(%H:%M:%S)T] %s\n' "${BENCH_TAG:-bench}" -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

free_port() { # a free TCP port on 127.0.0.1, never the same twice in a run
  # The ports handed out are kept in WORK/ports, a file and not a variable:
  # callers take $(free_port), a subshell, which could not add to theirs.
  # Below the kernel's ephemeral range when there is room, so that no
  # client connection of this machine holds it as its local port; free
  # means no TCP socket of any state has it.
  local p lo base=20000 span=30000 taken="${WORK:?free_port needs WORK}/ports"
  touch "$taken"
  read -r lo _ < /proc/sys/net/ipv4/ip_local_port_range || lo=0
  [ "$lo" -le $((base + 1000)) ] || span=$((lo - base))
  while :; do
    p=$((base + RANDOM % span))
    grep -qx "$p" "$taken" && continue
    if [ -z "$(ss -Htan "sport = :$p" 2>/dev/null)" ]; then echo "$p" >> "$taken"; echo "$p"; return; fi
  done
}

wait_http() { # url: wait until anything answers (15 s)
  for _ in $(seq 150); do
    curl -s -o /dev/null --max-time 1 "$1" && return 0
    sleep 0.1
  done
  die "nothing answered at $1"
}

require_slice_module() { # NGINX must have the slice module (the peer)
  "$NGINX" -V 2>&1 | grep -q -- --with-http_slice_module || die "$NGINX was built without the slice module"
}

agent_binary() { # SLICECACHE_BIN, or a release build of the agent (ROOT: the repository)
  local bin
  if [ -n "${SLICECACHE_BIN:-}" ]; then
    bin=$SLICECACHE_BIN
  else
    log "building slicecache-agent (release, fat LTO: several minutes)"
    (cd "$ROOT" && cargo build --release -p slicecache-agent >&2)
    bin=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps 2>/dev/null | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/release/slicecache-agent
  fi
  [ -x "$bin" ] || die "no agent binary at $bin"
  echo "$bin"
}

finish_work() { # rc [always-keep-on-failure: 1|0]: keep or remove WORK, then exit rc
  if [ "${KEEP_WORK:-0}" = 1 ] || { [ "$1" -ne 0 ] && [ "${2:-1}" = 1 ]; }; then
    log "work directory kept: $WORK"
  else
    rm -rf "$WORK"
  fi
  exit "$1"
}
set_traps() { # cleanup function for EXIT; ERR logs the failing line, INT/TERM exit 130
  # shellcheck disable=SC2064 # the function name is meant to expand now
  trap "$1" EXIT
  trap 'log "failed at line $LINENO: $BASH_COMMAND"' ERR
  trap 'exit 130' INT TERM
}

median() { # numbers... -> their median
  printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print 0; else print NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
stats_ms() { # decimals seconds... -> "median min max" in ms
  local d=$1
  shift
  printf '%s\n' "$@" | sort -g | awk -v d="$d" '{ v[NR] = $1 } END {
    if (NR == 0) { print "0 0 0"; exit }
    m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    f = "%." d "f"
    printf f " " f " " f "\n", m * 1000, v[1] * 1000, v[NR] * 1000 }'
}
mib() { awk -v b="$1" 'BEGIN { printf "%.0f", b / 1048576 }'; }
ms() { awk -v u="$1" 'BEGIN { if (u >= 100000) printf "%.0f", u / 1000; else if (u >= 10000) printf "%.1f", u / 1000; else printf "%.2f", u / 1000 }'; }

start_origin() { # dir objects bytes port... [-- unlogged-port...]: obj-1..obj-N
  # of random bytes under dir/data, served on every port; the access log
  # dir/access.log has one "port status body-bytes uri" line per response
  # on a port before "--". Ports after "--" serve the same files without
  # logging: a plain sendfile file server, e.g. a throughput ceiling.
  local dir=$1 objects=$2 bytes=$3 port listens="" quiet="" server="" all=()
  shift 3
  mkdir -p "$dir/data" "$dir/tmp"
  for i in $(seq "$objects"); do
    head -c "$bytes" /dev/urandom > "$dir/data/obj-$i"
  done
  while [ $# -gt 0 ] && [ "$1" != -- ]; do
    listens+="
    listen 127.0.0.1:$1;"
    all+=("$1")
    shift
  done
  [ $# -eq 0 ] || shift
  for port in "$@"; do
    quiet+="
    listen 127.0.0.1:$port;"
    all+=("$port")
  done
  [ -z "$quiet" ] || server="
  server {$quiet
    access_log off;
    root $dir/data;
  }"
  cat > "$dir/nginx.conf" <<CONF
daemon off;
worker_processes 2;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
  default_type application/octet-stream;
  client_body_temp_path $dir/tmp/client;
  proxy_temp_path $dir/tmp/proxy;
  fastcgi_temp_path $dir/tmp/fastcgi;
  uwsgi_temp_path $dir/tmp/uwsgi;
  scgi_temp_path $dir/tmp/scgi;
  log_format bytes '\$server_port \$status \$body_bytes_sent \$request_uri';
  access_log $dir/access.log bytes;
  sendfile on;
  keepalive_requests 1000000;
  server {$listens
    root $dir/data;
  }$server
}
CONF
  "$NGINX" -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" &
  PIDS+=($!)
  for port in "${all[@]}"; do wait_http "http://127.0.0.1:$port/__ready"; done
}
