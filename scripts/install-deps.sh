#!/usr/bin/env bash
# Installs the system packages the build, the tests and the benchmarks use.
# Idempotent: packages already present are skipped quickly.
set -euo pipefail

packages=(cmake nginx-light wrk prometheus)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
