#!/usr/bin/env bash
# Installs the system packages slicecache needs on a fresh Debian machine.
#   --build-only   just what building needs (cmake: Pingora builds zlib-ng with it)
#   (default)      also what the tests and benchmarks run: nginx-light (the slice
#                  module peer), wrk, prometheus (server and promtool), and
#                  iproute2 (the control-plane tests put a Pod address range on lo)
# Idempotent: packages already present are skipped.
set -euo pipefail

packages=(cmake)
if [ "${1:-}" != "--build-only" ]; then
  packages+=(nginx-light wrk prometheus iproute2)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
