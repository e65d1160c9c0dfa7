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
  # PGSHIFT_TEST_KEEP=1: a failed test leaves its WORK dir (logs, plans) behind.
  if [ "${FAILED:-0}" = 1 ] && [ "${PGSHIFT_TEST_KEEP:-0}" = 1 ]; then
    echo "kept $WORK" >&2
  else
    rm -rf "$WORK"
  fi
}
trap cleanup_common EXIT

fail() {
  FAILED=1
  echo "FAIL: $*" >&2
  for f in "$WORK"/*.log; do [ -f "$f" ] && { echo "--- $f" >&2; tail -n 30 "$f" >&2; }; done
  echo "$PASSED passed, 1 failed"
  exit 1
}
pass() { PASSED=$((PASSED + 1)); echo "ok - $*"; }
finish() { echo "$PASSED passed, 0 failed"; exit 0; }

sql() { psql -XAtq -v ON_ERROR_STOP=1 -c "$1"; }
sqlf() { psql -XAtq -v ON_ERROR_STOP=1 -f "$1"; }

# plan_header NAME: the plan's first keys. A plan should also say
# `state_dir: $WORK`: the control socket's default dir (/tmp/pgshift-<uid>)
# is shared by every run on the machine, so the same test run twice at once
# (from another checkout) would find its socket taken.
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

# poll SECONDS CMD [ARGS...]: run CMD in this shell until it succeeds
# (returns 0) or SECONDS have passed (returns 1): after 50 ms, then at
# intervals growing to 250 ms (each check is a process, often a psql and a
# backend; a suite polling at a fixed 0.1 s spent a good part of its CPU on
# it), or every WAIT_INTERVAL s when set. CMD runs at least once. For waits
# that must not fail the test (cleanup, a retry); tests use wait_for.
poll() {
  local t=$1 ms=50 start now
  shift
  start=${EPOCHREALTIME/[.,]/}
  while :; do
    "$@" && return 0
    now=${EPOCHREALTIME/[.,]/}
    [ $((now - start)) -ge $((t * 1000000)) ] && return 1
    if [ -n "${WAIT_INTERVAL:-}" ]; then
      sleep "$WAIT_INTERVAL"
    else
      sleep "0.$(printf %03d "$ms")"
      ms=$((ms * 3 / 2 > 250 ? 250 : ms * 3 / 2))
    fi
  done
}

# wait_for SECONDS DESCRIPTION CMD [ARGS...]: poll CMD; after SECONDS
# (whole seconds) the test fails with "timed out after SECONDS s waiting
# for: DESCRIPTION", and says so if the run (RUN_PID) has exited meanwhile. Tests wait on the
# condition, not on the clock: the stats tick is 2 s, but a loaded machine
# may take longer, and an idle one need not wait that long.
wait_for() {
  local t=$1 what=$2
  shift 2
  poll "$t" "$@" && return 0
  local died=
  if [ -n "${RUN_PID:-}" ] && ! kill -0 "$RUN_PID" 2>/dev/null; then
    died=" (the run, pid $RUN_PID, has exited)"
  fi
  # A test may define on_timeout to print what it knows (server views, status).
  declare -F on_timeout >/dev/null && on_timeout >&2
  fail "timed out after $t s waiting for: $what$died"
}

# load_start STOPFILE LOG PGBENCH-ARGS...: a write load that lasts until the
# test says so, not for a fixed time that must outlast what it covers:
# pgbench in 2 s runs (each with its own summary in LOG) until STOPFILE
# exists. Sets LOAD_PID.
load_start() {
  local stop=$1 log=$2
  shift 2
  rm -f "$stop"
  (while [ ! -e "$stop" ]; do
    "$PGSHIFT_TEST_CLIENTBIN/pgbench" "$@" -T 2 >>"$log" 2>&1 || { echo "pgbench exited $?" >>"$log"; exit 1; }
  done) &
  LOAD_PID=$!
  RUN_PIDS+=("$LOAD_PID")
}
# load_stop STOPFILE LOG: ends that load (within 2 s); false, with the
# reason in LOAD_WHY, unless every run finished with 0 failed transactions.
load_stop() {
  local runs
  touch "$1"
  LOAD_WHY=
  wait "$LOAD_PID" || { LOAD_WHY=$(grep -iE "error|abort|exited" "$2" | head -5); return 1; }
  runs=$(grep -c "number of failed transactions:" "$2")
  [ "$runs" -gt 0 ] && [ "$(grep -c "number of failed transactions: 0 " "$2")" = "$runs" ] ||
    { LOAD_WHY=$(grep "failed transactions" "$2" | grep -v ": 0 " | head -3); return 1; }
}

# load_txns LOG: the transactions that all pgbench runs in LOG processed.
load_txns() { grep -oE 'number of transactions actually processed: [0-9]+' "$1" | awk '{s += $NF} END {print s + 0}'; }

# Conditions for wait_for.
# sql_is VALUE QUERY: QUERY returns exactly VALUE (an error is "not yet").
sql_is() { [ "$(psql -XAtq -v ON_ERROR_STOP=1 -c "$2" 2>/dev/null)" = "$1" ]; }
# gone PID: the process has exited.
gone() { ! kill -0 "$1" 2>/dev/null; }
# log_has LOG ERE: LOG has a line matching the extended regexp ERE.
log_has() { grep -qE -- "$2" "$1" 2>/dev/null; }
# live_phase_is PLAN PHASE...: `pgshift status --json` answers and its phase
# is one of PHASE... (the live run's phase changes on its 2 s stats samples).
live_phase_is() {
  local plan=$1 ph
  shift
  ph=$("$PGSHIFT" status --plan "$plan" --json 2>/dev/null |
    python3 -c 'import json,sys; print(json.load(sys.stdin).get("phase", ""))' 2>/dev/null) || return 1
  local want
  for want in "$@"; do [ "$ph" = "$want" ] && return 0; done
  return 1
}

# streaming_or_dead LOG: the run logged that it streams; fails the test at
# once if the run exited first.
streaming_or_dead() {
  grep -q "streaming from slot" "$1" && return 0
  kill -0 "$RUN_PID" 2>/dev/null || fail "run exited early (see $1)"
  return 1
}

# wait_streaming LOG [SECONDS]: until the run logs that it streams.
wait_streaming() {
  wait_for "${2:-120}" "the run to stream (\"streaming from slot\" in $1)" streaming_or_dead "$1"
}

# slot_confirmed SLOT LSN: the slot's confirmed_flush_lsn is at or past LSN;
# fails the test at once if the run exited (it cannot confirm any more).
slot_confirmed() {
  sql_is t "SELECT coalesce(confirmed_flush_lsn >= '$2', false) FROM pg_replication_slots WHERE slot_name = '$1'" &&
    return 0
  if [ -n "${RUN_PID:-}" ] && ! kill -0 "$RUN_PID" 2>/dev/null; then fail "run exited while catching up"; fi
  return 1
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
  wait_for "$t" "slot $slot to confirm $target" slot_confirmed "$slot" "$target"
}

# same_rows A B [COLS]: A and B hold the same multiset of rows (EXCEPT ALL both ways).
same_rows() {
  local a=$1 b=$2 cols=${3:-*} n m
  n=$(sql "SELECT count(*) FROM (SELECT $cols FROM $a EXCEPT ALL SELECT $cols FROM $b) x") || fail "compare $a $b"
  m=$(sql "SELECT count(*) FROM (SELECT $cols FROM $b EXCEPT ALL SELECT $cols FROM $a) x") || fail "compare $b $a"
  [ "$n" = 0 ] && [ "$m" = 0 ] && return 0
  # The rows themselves (a few), so a failure says which and how.
  local rows
  rows=$(sql "(SELECT '$a' AS only_in, x::text FROM (SELECT $cols FROM $a EXCEPT ALL SELECT $cols FROM $b) x LIMIT 5)
              UNION ALL (SELECT '$b', y::text FROM (SELECT $cols FROM $b EXCEPT ALL SELECT $cols FROM $a) y LIMIT 5)" | cut -c1-160)
  fail "$a and $b differ: $n rows only in $a, $m only in $b:
$rows"
}

stop_run() {
  kill -TERM "$RUN_PID" 2>/dev/null
  wait "$RUN_PID"
  local rc=$?
  [ "$rc" = 143 ] || fail "run stopped by SIGTERM exited $rc, expected 143"
}
