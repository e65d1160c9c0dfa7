#!/usr/bin/env bash
# with-pg.sh CMD [ARGS...]: run CMD against a throwaway PostgreSQL cluster.
#
# The server: PGSHIFT_PG=14|15|16|17|18 (default 15: Debian's postgresql-15;
# the others from the cache scripts/install-pg.sh fills, PGSHIFT_PG_CACHE or
# .cache/pg), or any bin directory in PGSHIFT_PGBIN. Client tools (psql,
# pgbench, pg_recvlogical) are Debian's 15, in PGSHIFT_TEST_CLIENTBIN.
#
# A fresh cluster in a temp dir (a copy of one initdb, see below),
# wal_level=logical, a free port on 127.0.0.1 and the Unix socket inside the
# temp dir; as root the server runs as `postgres`.
# CMD sees PGHOST/PGPORT/PGUSER/PGDATABASE (plus PGSHIFT_TEST_* below). The
# server is stopped and the dir removed whatever happens: normal exit, failure,
# SIGINT/SIGTERM (trap), or SIGKILL of this script (a watchdog notices).
# Extra server settings: PGSHIFT_TEST_PGCONF="key=value;key=value";
# PGSHIFT_TEST_DURABLE=1 keeps fsync and synchronous_commit on.
set -u
# PGSHIFT_TEST_CPUACCT=DIR (a cgroup-v1 cpuacct directory, e.g.
# /sys/fs/cgroup/cpuacct/pgt): this script, its cluster and CMD run in the
# group DIR/<CMD's last argument>, whose cpuacct.usage then gives the CPU
# time the whole test took, server included (how the suite's cost is read).
if [ -n "${PGSHIFT_TEST_CPUACCT:-}" ]; then
  cg=$PGSHIFT_TEST_CPUACCT/$(basename "${@: -1}" .sh)
  mkdir -p "$cg" && echo $$ >"$cg/cgroup.procs" || echo "with-pg: cannot enter cgroup $cg" >&2
fi

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
clientbin=/usr/lib/postgresql/15/bin
[ -x "$clientbin/pgbench" ] || clientbin=$(pg_config --bindir 2>/dev/null)
pgbin=${PGSHIFT_PGBIN:-}
want=${PGSHIFT_PG:-15}
if [ -z "$pgbin" ]; then
  case "$want" in
  15) pgbin=/usr/lib/postgresql/15/bin ;;
  14 | 16 | 17 | 18) pgbin=${PGSHIFT_PG_CACHE:-$here/../../.cache/pg}/$want/bin ;;
  *) echo "with-pg: PGSHIFT_PG=$want: supported are 14, 15, 16, 17, 18" >&2; exit 1 ;;
  esac
fi
[ -x "$pgbin/initdb" ] || {
  echo "with-pg: no PostgreSQL $want initdb in $pgbin (bash scripts/install-pg.sh $want, or set PGSHIFT_PGBIN)" >&2
  exit 1
}
pgbin=$(cd "$pgbin" && pwd -P)

dir=$(mktemp -d "${TMPDIR:-/tmp}/pgshift-test.XXXXXX") || exit 1
chmod 755 "$dir"
as_pg=()
if [ "$(id -u)" = 0 ]; then
  chown postgres: "$dir"
  as_pg=(runuser -u postgres --)
fi

cleanup() {
  "${as_pg[@]}" "$pgbin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1
  rm -rf "$dir"
}

# Watchdog: if this script dies without running its trap (SIGKILL, a ctest
# timeout), stop the server and remove the dir anyway.
me=$$
setsid bash -c '
  while kill -0 '"$me"' 2>/dev/null; do sleep 1; done
  if [ -d "'"$dir"'/data" ]; then
    '"${as_pg[*]}"' "'"$pgbin"'/pg_ctl" -D "'"$dir"'/data" -m immediate -w stop >/dev/null 2>&1
    rm -rf "'"$dir"'"
  fi' </dev/null >/dev/null 2>&1 &

child=
# bash runs a trap only after a foreground child ends, so the test command
# runs in the background and we `wait`: a signal is handled at once.
on_signal() {
  [ -n "$child" ] && kill -TERM "$child" 2>/dev/null
  cleanup
  exit 130
}
trap cleanup EXIT
trap on_signal INT TERM HUP

initdb_args=(-U postgres --auth=trust -E UTF8 --no-instructions)
new_cluster() { # DIR: a fresh initdb into DIR, its log in $dir/initdb.log
  "${as_pg[@]}" "$pgbin/initdb" -D "$1" "${initdb_args[@]}" >"$dir/initdb.log" 2>&1 || {
    cat "$dir/initdb.log" >&2
    return 1
  }
}
# initdb runs once per server build and user: each cluster is then a copy
# of that pristine data directory (0.15 s against 1.5 s for initdb), kept
# in PGSHIFT_TEST_TEMPLATES (scripts/test.sh: the build dir). A template
# dir that is not ours, or any failure, falls back to initdb.
templates=${PGSHIFT_TEST_TEMPLATES:-${TMPDIR:-/tmp}/pgshift-initdb-$(id -u)}
key=$(printf '%s\n' "$pgbin" "$("$pgbin/postgres" --version)" "$(stat -c %Y "$pgbin/postgres")" \
  "${initdb_args[*]}" | md5sum | cut -c1-16)
tmpl=$templates/$key
copied=0
if mkdir -p -m 711 "$templates" 2>/dev/null && [ -O "$templates" ] && [ ! -L "$templates" ]; then
  (
    flock 9 || exit 1
    [ -f "$tmpl/PG_VERSION" ] && exit 0
    rm -rf "$tmpl" "$tmpl.new"
    mkdir -m 711 "$tmpl.new" && { [ ${#as_pg[@]} = 0 ] || chown postgres: "$tmpl.new"; } &&
      new_cluster "$tmpl.new/data" && mv "$tmpl.new/data" "$tmpl" && rm -rf "$tmpl.new"
  ) 9>"$templates/$key.lock" && [ -f "$tmpl/PG_VERSION" ] && cp -a "$tmpl" "$dir/data" && copied=1
fi
if [ "$copied" != 1 ]; then
  rm -rf "$dir/data"
  new_cluster "$dir/data" || exit 1
fi

{
  echo "wal_level = logical"
  echo "max_replication_slots = 20"
  echo "max_wal_senders = 20"
  echo "listen_addresses = '127.0.0.1'"
  echo "unix_socket_directories = '$dir'"
  # Tests trade durability for speed; PGSHIFT_TEST_DURABLE=1 (the bench) keeps
  # PostgreSQL's defaults so timings mean what they would on a real server.
  if [ -z "${PGSHIFT_TEST_DURABLE:-}" ]; then
    echo "fsync = off"
    echo "synchronous_commit = off"
    echo "full_page_writes = off"
  fi
  echo "shared_buffers = 256MB"
  echo "max_connections = 100"
  echo "log_min_messages = warning"
  echo "log_line_prefix = '%m [%p] %a '"
  IFS=';' read -ra extra <<<"${PGSHIFT_TEST_PGCONF:-}"
  for kv in "${extra[@]}"; do [ -n "$kv" ] && echo "$kv"; done
} >>"$dir/data/postgresql.conf"

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

started=0
for _ in $(seq 1 20); do
  port=$((20000 + RANDOM % 30000))
  port_in_use "$port" && continue
  if "${as_pg[@]}" "$pgbin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -o "-p $port" -w -t 60 \
      start >/dev/null 2>&1; then
    started=1
    break
  fi
done
if [ "$started" != 1 ]; then
  echo "with-pg: could not start PostgreSQL; server log:" >&2
  tail -n 30 "$dir/server.log" >&2
  exit 1
fi

export PGHOST="$dir" PGPORT="$port" PGUSER=postgres PGDATABASE=postgres
export PGSHIFT_TEST_DIR="$dir" PGSHIFT_TEST_PGDATA="$dir/data" PGSHIFT_TEST_PGBIN="$pgbin"
export PGSHIFT_TEST_CLIENTBIN="$clientbin"
# Bare psql/pgbench are those client tools themselves, not Debian's
# pg_wrapper (a Perl script that doubles the cost of each psql a test polls).
export PATH="$clientbin:$PATH"
# Bare python3 is Debian's (scripts/install-deps.sh installs it), not a
# version manager's shim found first on PATH: pyenv's runs about ten bash
# processes per call (353 ms of CPU against 26 ms on a quiet machine here), and a version's
# integration part calls python3 some 250 times.
if [ -x /usr/bin/python3 ] && [ "$(command -v python3)" != /usr/bin/python3 ]; then
  mkdir -p "$dir/bin" && ln -sf /usr/bin/python3 "$dir/bin/python3" && export PATH="$dir/bin:$PATH"
fi
PGSHIFT_TEST_PG=$(psql -XAtq -c "SHOW server_version_num" 2>/dev/null) || PGSHIFT_TEST_PG=0
export PGSHIFT_TEST_PG=$((PGSHIFT_TEST_PG / 10000))
unset PGPASSWORD PGSERVICE PGOPTIONS

"$@" <&0 &
child=$!
wait "$child"
rc=$?
if [ "$rc" != 0 ] && [ -f "$dir/server.log" ]; then
  echo "with-pg: test exited $rc; last server log lines:" >&2
  tail -n 20 "$dir/server.log" >&2
fi
exit "$rc"
