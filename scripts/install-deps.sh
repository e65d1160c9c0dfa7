#!/usr/bin/env bash
# scripts/install-deps.sh: install pgshift's build and test dependencies from
# Debian 12 packages, then the PostgreSQL servers other than Debian's 15 that
# the tests run on (scripts/install-pg.sh, from the npm registry; the versions
# in PGSHIFT_PGS, default all). Idempotent: installs only what is missing, runs
# `apt-get update` at most once, never asks a question.
set -euo pipefail
pkgs=(build-essential cmake pkg-config clang libclang-rt-14-dev
      postgresql-15 postgresql-contrib postgresql-15-partman libpq-dev libuv1-dev libprotobuf-c-dev protobuf-c-compiler
      libyaml-dev libjansson-dev libhttp-parser-dev libcmocka-dev util-linux procps python3 docker-compose
      prometheus chromium)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# install-pg.sh needs npm and node. Any that works will do (a machine may have
# another vendor's nodejs, which bundles npm and conflicts with Debian's npm);
# without them, Debian's.
if ! command -v npm >/dev/null || ! command -v node >/dev/null; then
  missing+=(nodejs npm)
fi
if [ "${#missing[@]}" -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { echo "install-deps: missing ${missing[*]}; run as root" >&2; exit 1; }
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The Debian package starts a default cluster we do not use; the tests start their own.

# PostgreSQL 14, 16, 17 and 18 (15 is Debian's, above) into the ignored cache.
read -ra pgs <<<"${PGSHIFT_PGS:-14 15 16 17 18}"
bash "$(dirname "$0")/install-pg.sh" "${pgs[@]}"
