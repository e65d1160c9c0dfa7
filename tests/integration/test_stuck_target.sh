#!/usr/bin/env bash
# A target that stops answering (a lock held on it) while the source keeps
# writing: pgshift must not pull the whole backlog into its own memory.
# While the applier waits on the target it buffers the stream only up to a
# bound (stream.h: STREAM_READ_AHEAD); past that the walsender waits, and the
# slot keeps the WAL, as it should. After the lock goes, everything is
# applied exactly once.
source "$(dirname "$0")/lib/common.sh"
# Keep ASan's quarantine small so RSS reflects live memory, not freed chunks.
export ASAN_OPTIONS="${ASAN_OPTIONS:-}:quarantine_size_mb=8:malloc_context_size=5"
sql "CREATE TABLE s (id int PRIMARY KEY, pad text); CREATE TABLE s_new (LIKE s INCLUDING ALL)" || fail setup
# Small batches: each fits in the socket, so the applier ends up waiting for
# a result (a batch blocked on the lock) rather than in send().
cat >"$WORK/plan.yaml" <<Y
name: stuck
source: "dbname=${PGDATABASE}"
state_dir: $WORK
apply: {batch_time: 50ms, batch_changes: 100}
tables: [{source: s, target: s_new}]
Y
start_run "$WORK/plan.yaml" "$WORK/run.log"
wait_streaming "$WORK/run.log"
sql "INSERT INTO s VALUES (0, 'warm up')" || fail "warm up"
wait_applied pgshift_stuck
hwm_kb() { awk '/^VmHWM/ {print $2}' "/proc/$RUN_PID/status"; }
base=$(hwm_kb)

# Hold the target until the measurement is done: canceled then, or 25 s at
# most (the applier's lock_timeout is 30 s).
psql -XAtq -v ON_ERROR_STOP=1 >"$WORK/lock.log" 2>&1 <<'SQL' &
SET application_name = 'stuck holder';
BEGIN;
LOCK TABLE s_new IN ACCESS EXCLUSIVE MODE;
SELECT pg_sleep(25);
COMMIT;
SQL
LOCK_PID=$!
wait_for 10 "the lock on s_new to be granted" sql_is 1 \
  "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE c.relname = 's_new' AND l.mode = 'AccessExclusiveLock' AND l.granted"
# About 200 MB of changes in 4000 transactions of 100 rows of 512 bytes
# (too short for TOAST to compress).
sql "DO \$\$ BEGIN FOR i IN 0..3999 LOOP
       INSERT INTO s SELECT g, repeat(md5(g::text), 16) FROM generate_series(i * 100 + 1, i * 100 + 100) g;
       COMMIT;
     END LOOP; END \$\$" || fail "inserts"
backlog=$(sql "SELECT pg_current_wal_insert_lsn() - confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'pgshift_stuck'")
[ "$(sql "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgshift apply' AND wait_event_type = 'Lock'")" = 1 ] ||
  fail "the applier was expected to wait on the lock"
# The duration is the point: a 3 s window in which the walsender sends what
# pgshift would take; an unbounded reader would pull the backlog into memory.
sleep 3
peak=$(hwm_kb)
growth=$(((peak - base) / 1024))
echo "# backlog $((backlog / 1048576)) MB behind the locked target; pgshift peak RSS grew ${growth} MB"
[ "$backlog" -gt $((150 << 20)) ] || fail "backlog only $backlog bytes: the test did not build one"
# Bounded whatever the backlog: a folded batch and its encoded statement,
# libpq's send buffer, and the stream buffered up to STREAM_READ_AHEAD (13 MB
# here). Without the bound the applier, waiting for a batch stuck behind the
# lock, read the whole backlog into libpq's buffer: +272 MB. Measured with
# the bound (ASan build): 51 MB on a quiet machine, 64 MB once on a loaded
# one (libpq grows its buffers by doubling, and VmHWM counts the old and the
# new buffer at the moment of the copy); 96 MB still tells the two apart.
[ "$growth" -lt 96 ] || fail "pgshift's memory grew ${growth} MB while the target was locked (backlog $((backlog / 1048576)) MB)"
pass "target locked with a $((backlog / 1048576)) MB backlog: pgshift's memory grew ${growth} MB"

sql "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE application_name = 'stuck holder'" >/dev/null ||
  fail "could not cancel the lock holder"
# Ended by the cancel (its transaction rolls back: it only held the lock) or
# by the end of its 25 s.
wait "$LOCK_PID" || grep -q "canceling statement due to user request" "$WORK/lock.log" ||
  fail "lock holder: $(cat "$WORK/lock.log")"
wait_applied pgshift_stuck 180
same_rows s s_new
[ "$(sql "SELECT count(*) FROM s_new")" = 400001 ] || fail "row count"
pass "after the lock, all 400001 rows applied exactly once"
stop_run
finish
