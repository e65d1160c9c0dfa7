# common.sh: helpers for the shell integration tests (sourced; runs inside
# tests/lib/with-pg.sh, so PG* point at the throwaway cluster).
set -uo pipefail

PGSHIFT=${PGSHIFT_BIN:?PGSHIFT_BIN not set}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/pgshift-it.XXXXXX")
RUN_PIDS=()
PASSED=0

cleanup_common() {
  for p in "${RUN_PIDS[@]:-}"; do [ -n "$p" ] && kill -KILL "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup_common EXIT

fail() {
  echo "FAIL: $*" >&2
  for f in "$WORK"/*.log; do [ -f "$f" ] && { echo "--- $f" >&2; tail -n 30 "$f" >&2; }; done
  echo "$PASSED passed, 1 failed"
  exit 1
}
pass() { PASSED=$((PASSED + 1)); echo "ok - $*"; }
finish() { echo "$PASSED passed, 0 failed"; exit 0; }

sql() { psql -XAtq -v ON_ERROR_STOP=1 -c "$1"; }
sqlf() { psql -XAtq -v ON_ERROR_STOP=1 -f "$1"; }

# write_plan FILE NAME then table specs as "source target [partition-yaml]" lines on stdin
plan_header() {
  cat <<Y
name: $1
source: "dbname=${PGDATABASE}"
apply:
  batch_time: 50ms
Y
}

# start_run PLAN LOG: starts `pgshift run` in the background, sets RUN_PID
# (PGSHIFT_DEBUG=1 in the environment adds --log-level debug).
start_run() {
  "$PGSHIFT" run --plan "$1" ${PGSHIFT_DEBUG:+--log-level debug} >"$2" 2>&1 &
  RUN_PID=$!
  RUN_PIDS+=("$RUN_PID")
}

# wait_streaming LOG [SECONDS]: until the run logs that it streams.
wait_streaming() {
  local log=$1 t=${2:-120}
  for _ in $(seq 1 $((t * 5))); do
    grep -q "streaming from slot" "$log" && return 0
    kill -0 "$RUN_PID" 2>/dev/null || fail "run exited early (see $log)"
    sleep 0.2
  done
  fail "run did not start streaming within ${t}s"
}

# wait_applied SLOT [SECONDS]: until the slot confirmed everything written so far
# (flush feedback is only sent for durably applied transactions). The target
# is the WAL *insert* position: with synchronous_commit off (the test
# clusters) pg_current_wal_lsn(), the write position, can still be at the
# start of the last commit record, which a keepalive may rightly confirm
# before that transaction is applied.
wait_applied() {
  local slot=$1 t=${2:-120} target
  target=$(sql "SELECT pg_current_wal_insert_lsn()")
  for _ in $(seq 1 $((t * 5))); do
    [ "$(sql "SELECT coalesce(confirmed_flush_lsn >= '$target', false) FROM pg_replication_slots WHERE slot_name = '$slot'")" = t ] && return 0
    if [ -n "${RUN_PID:-}" ] && ! kill -0 "$RUN_PID" 2>/dev/null; then fail "run exited while catching up"; fi
    sleep 0.2
  done
  fail "slot $slot did not confirm $target within ${t}s"
}

# same_rows A B [COLS]: A and B hold the same multiset of rows (EXCEPT ALL both ways).
same_rows() {
  local a=$1 b=$2 cols=${3:-*} n m
  n=$(sql "SELECT count(*) FROM (SELECT $cols FROM $a EXCEPT ALL SELECT $cols FROM $b) x") || fail "compare $a $b"
  m=$(sql "SELECT count(*) FROM (SELECT $cols FROM $b EXCEPT ALL SELECT $cols FROM $a) x") || fail "compare $b $a"
  [ "$n" = 0 ] && [ "$m" = 0 ] || fail "$a and $b differ: $n rows only in $a, $m only in $b"
}

stop_run() {
  kill -TERM "$RUN_PID" 2>/dev/null
  wait "$RUN_PID"
  local rc=$?
  [ "$rc" = 143 ] || fail "run stopped by SIGTERM exited $rc, expected 143"
}
