#!/usr/bin/env bash
# with-pg.sh CMD [ARGS...]: run CMD against a throwaway PostgreSQL 15 cluster.
#
# initdb in a fresh temp dir, wal_level=logical, a free port on 127.0.0.1 and
# the Unix socket inside the temp dir; as root the server runs as `postgres`.
# CMD sees PGHOST/PGPORT/PGUSER/PGDATABASE (plus PGSHIFT_TEST_* below). The
# server is stopped and the dir removed whatever happens: normal exit, failure,
# SIGINT/SIGTERM (trap), or SIGKILL of this script (a watchdog notices).
# Extra server settings: PGSHIFT_TEST_PGCONF="key=value;key=value";
# PGSHIFT_TEST_DURABLE=1 keeps fsync and synchronous_commit on.
set -u

pgbin=${PGSHIFT_PGBIN:-}
if [ -z "$pgbin" ]; then
  for d in /usr/lib/postgresql/15/bin "$(pg_config --bindir 2>/dev/null)"; do
    [ -x "$d/initdb" ] && pgbin=$d && break
  done
fi
[ -x "$pgbin/initdb" ] || { echo "with-pg: no PostgreSQL 15 initdb found (set PGSHIFT_PGBIN)" >&2; exit 1; }

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

if ! "${as_pg[@]}" "$pgbin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 \
    --no-instructions >"$dir/initdb.log" 2>&1; then
  cat "$dir/initdb.log" >&2
  exit 1
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
