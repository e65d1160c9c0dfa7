# servers.sh: more PostgreSQL servers beside with-pg's cluster (sourced after
# common.sh): a physical standby of it, made with the low-level backup API
# (pg_basebackup 15 refuses newer servers), and clusters of their own. Each
# lives in a directory under with-pg's (PGSHIFT_TEST_DIR), on a free port of
# 127.0.0.1, run as `postgres` when root, and is always stopped and removed:
# at exit (trap), and by a watchdog if this script is killed without it.
SERVERS=()
PG_AS=()
[ "$(id -u)" = 0 ] && PG_AS=(runuser -u postgres --)
PGBIN=$PGSHIFT_TEST_PGBIN

servers_stop() {
  local d
  for d in "${SERVERS[@]:-}"; do
    [ -n "$d" ] || continue
    "${PG_AS[@]}" "$PGBIN/pg_ctl" -D "$d/data" -m immediate -w stop >/dev/null 2>&1
    rm -rf "$d"
  done
}
servers_cleanup() {
  servers_stop
  cleanup_common
}
trap servers_cleanup EXIT
# The watchdog, should this script die without its trap (SIGKILL): it keeps
# a copy of the list of servers ("dir postmaster-pid" lines), because
# with-pg removes its directory, this list included, as soon as this script
# is gone, and sends each postmaster still running SIGQUIT (what pg_ctl's
# immediate stop sends; pg_ctl itself may find the directory half removed).
# Started from a subshell that exits at once, so it is no child of this
# script (cleanup_common's `wait` would wait for it).
SERVERS_LIST=$PGSHIFT_TEST_DIR/servers.list
: >"$SERVERS_LIST"
(setsid bash -c '
  list=
  while kill -0 '"$$"' 2>/dev/null; do
    [ -f "'"$SERVERS_LIST"'" ] && list=$(cat "'"$SERVERS_LIST"'")
    sleep 0.5
  done
  while read -r d pid; do
    [ -n "$d" ] || continue
    if tr "\0" " " <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "-D $d/data"; then
      kill -QUIT "$pid"
    fi
    rm -rf "$d"
  done <<<"$list"' </dev/null >/dev/null 2>&1 &)

# server_dir NAME: a new directory for a server, owned by postgres.
server_dir() {
  local d=$PGSHIFT_TEST_DIR/$1
  mkdir -p "$d" || fail "mkdir $d"
  [ ${#PG_AS[@]} -gt 0 ] && chown postgres: "$d"
  SERVERS+=("$d")
  SERVER_DIR=$d
}

# server_start DIR: starts the server of DIR/data on a free port; sets SERVER_PORT.
server_start() {
  local d=$1 port
  for _ in $(seq 1 20); do
    port=$((20000 + RANDOM % 30000))
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && continue
    if "${PG_AS[@]}" "$PGBIN/pg_ctl" -D "$d/data" -l "$d/server.log" -o "-p $port" -w -t 60 \
      start >/dev/null 2>&1; then
      SERVER_PORT=$port
      echo "$d $(head -n 1 "$d/data/postmaster.pid")" >>"$SERVERS_LIST"
      return 0
    fi
  done
  tail -n 20 "$d/server.log" >&2
  fail "could not start the server in $d"
}

# new_cluster NAME: initdb and start a cluster of its own; sets SERVER_DIR, SERVER_PORT.
new_cluster() {
  server_dir "$1"
  local d=$SERVER_DIR
  "${PG_AS[@]}" "$PGBIN/initdb" -D "$d/data" -U postgres --auth=trust -E UTF8 --no-instructions \
    >"$d/initdb.log" 2>&1 || fail "initdb $1: $(tail -3 "$d/initdb.log")"
  cat >>"$d/data/postgresql.conf" <<C
listen_addresses = '127.0.0.1'
unix_socket_directories = '$d'
fsync = off
synchronous_commit = off
full_page_writes = off
log_min_messages = warning
log_line_prefix = '%m [%p] %a '
C
  server_start "$d"
}

# make_standby NAME SLOT: a physical standby of with-pg's cluster streaming
# through physical slot SLOT (which must exist, WAL reserved): a copy of the
# data directory between pg_backup_start and pg_backup_stop in one session,
# its labelfile as backup_label, standby.signal and primary_conninfo. On 17+
# it synchronizes failover slots. Sets SERVER_DIR, SERVER_PORT and returns
# once the primary sees it streaming.
make_standby() {
  local name=$1 slot=$2 start stop
  server_dir "$name"
  local d=$SERVER_DIR
  if [ "$PGSHIFT_TEST_PG" -ge 15 ]; then
    start="SELECT pg_backup_start('$name', true)"
    stop="SELECT labelfile FROM pg_backup_stop(false)"
  else
    start="SELECT pg_start_backup('$name', true, false)"
    stop="SELECT labelfile FROM pg_stop_backup(false)"
  fi
  psql -XAtq -v ON_ERROR_STOP=1 >"$d/backup.log" 2>&1 <<SQL || fail "base backup: $(tail -3 "$d/backup.log")"
$start;
\! cp -a "$PGSHIFT_TEST_PGDATA" "$d/data" && rm -f "$d/data/postmaster.pid" "$d/data/postmaster.opts" && rm -rf "$d/data/pg_replslot/"*
\o $d/backup_label
$stop;
\o
SQL
  [ -s "$d/backup_label" ] && [ -f "$d/data/PG_VERSION" ] || fail "base backup: no copy or label: $(cat "$d/backup.log")"
  mv "$d/backup_label" "$d/data/backup_label"
  {
    echo "unix_socket_directories = '$d'"
    echo "primary_conninfo = 'host=127.0.0.1 port=$PGPORT user=postgres dbname=postgres application_name=$name'"
    echo "primary_slot_name = '$slot'"
    echo "hot_standby_feedback = on"
    if [ "$PGSHIFT_TEST_PG" -ge 17 ]; then
      echo "sync_replication_slots = on"
      echo "synchronized_standby_slots = ''"
    fi
  } >>"$d/data/postgresql.auto.conf"
  : >"$d/data/standby.signal"
  [ ${#PG_AS[@]} -gt 0 ] && chown -R postgres: "$d/data"
  chmod 700 "$d/data"
  server_start "$d"
  wait_for 60 "standby $name to stream from the primary" sql_is streaming \
    "SELECT state FROM pg_stat_replication WHERE application_name = '$name'"
}
