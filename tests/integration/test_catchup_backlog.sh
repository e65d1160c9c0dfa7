#!/usr/bin/env bash
# Catching up from a backlog: while pgshift is stopped, a pgbench burst
# (insert + update + a delete in one of ten transactions, 4 clients) piles up
# in the slot; the resumed run applies it in back-to-back batches with one
# batch in flight, and the target must equal the source.
source "$(dirname "$0")/lib/common.sh"
sql "CREATE TABLE acc (id bigint PRIMARY KEY, n int NOT NULL, note text);
     CREATE TABLE acc_new (LIKE acc INCLUDING ALL);
     INSERT INTO acc SELECT i, 0, 'seed' FROM generate_series(1, 1000) i" || fail setup
# Small batches: commits follow each other inside one read of the socket,
# while the batch before is still in flight.
cat >"$WORK/plan.yaml" <<Y
name: backlog
source: "dbname=${PGDATABASE}"
state_dir: $WORK
apply: {batch_changes: 50}
tables: [{source: acc, target: acc_new}]
Y
cat >"$WORK/burst.sql" <<'PGB'
\set k random(1000000, 9000000000)
\set old random(1, 1000)
\set r random(0, 9)
BEGIN;
INSERT INTO acc VALUES (:k, 1, 'new') ON CONFLICT DO NOTHING;
UPDATE acc SET n = n + 1 WHERE id = :k;
UPDATE acc SET n = n + 1, note = 'touched' WHERE id = :old;
\if :r = 0
DELETE FROM acc WHERE id = :k;
\endif
COMMIT;
PGB
start_run "$WORK/plan.yaml" "$WORK/run1.log"
wait_streaming "$WORK/run1.log"
stop_run
"$PGSHIFT_TEST_CLIENTBIN/pgbench" -n -f "$WORK/burst.sql" -c 4 -j 2 -t 3000 >"$WORK/pgbench.log" 2>&1 || fail "pgbench"
start_run "$WORK/plan.yaml" "$WORK/run2.log"
wait_streaming "$WORK/run2.log"
t0=$(date +%s.%N)
wait_applied pgshift_backlog 120
same_rows acc acc_new
pass "12000 backlogged transactions applied in $(awk "BEGIN {printf \"%.1f\", $(date +%s.%N) - $t0}") s; target equals source"
stop_run

# The same backlog with the default batches, where the applier keeps up
# with the walsender: behind the source, the stream reads the socket every
# STREAM_GATHER_MS rather than at every frame the walsender writes, so
# the event loop's thread sleeps a few hundred times, not once per change
# (about 48,000 frames here).
sed '/^apply:/d' "$WORK/plan.yaml" >"$WORK/plan2.yaml"
"$PGSHIFT_TEST_CLIENTBIN/pgbench" -n -f "$WORK/burst.sql" -c 4 -j 2 -t 3000 >"$WORK/pgbench2.log" 2>&1 || fail "pgbench"
start_run "$WORK/plan2.yaml" "$WORK/run3.log"
wait_streaming "$WORK/run3.log"
t0=$(date +%s.%N)
wait_applied pgshift_backlog 120
secs=$(awk "BEGIN {printf \"%.1f\", $(date +%s.%N) - $t0}")
sleeps=$(awk '/^voluntary_ctxt_switches/ {print $2}' "/proc/$RUN_PID/status")
same_rows acc acc_new
# Caught up and idle, the stream goes back to waiting for its socket: no
# gather timer left running (it would wake the loop every millisecond).
s1=$(awk '/^voluntary_ctxt_switches/ {print $2}' "/proc/$RUN_PID/status")
sleep 2 # a measuring window, not a wait for a condition
idle=$(( $(awk '/^voluntary_ctxt_switches/ {print $2}' "/proc/$RUN_PID/status") - s1 ))
echo "idle: pgshift's loop slept $idle times in 2 s"
[ "$idle" -lt 400 ] || fail "idle, pgshift's loop slept $idle times in 2 s (bound 400): a timer spins"
echo "default batches: 12000 more transactions in $secs s; pgshift's loop slept $sleeps times"
[ "$sleeps" -lt 3000 ] || fail "pgshift's loop slept $sleeps times catching up 12000 transactions (bound 3000): it reads the stream frame by frame"
pass "default batches: 12000 more transactions applied in $secs s with $sleeps sleeps of pgshift's loop; target equals source"
stop_run
finish
