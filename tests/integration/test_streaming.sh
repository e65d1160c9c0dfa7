#!/usr/bin/env bash
# Large transactions streamed while they run (pgoutput `streaming`, proto
# 2 on 14, 3 on 15, 4 on 16+): with logical_decoding_work_mem at its 64 kB
# floor every transaction below is streamed in blocks. Applied exactly once
# and in commit order: a streamed transaction that aborts leaves no trace,
# an aborted subtransaction inside one leaves none either (its changes and
# the nested ones begun after it), two streamed transactions interleaved
# with each other and with small ones commit in the other order, and a
# SIGKILL while a streamed transaction is open resumes to the same end.
source "$(dirname "$0")/lib/common.sh"

sql "ALTER SYSTEM SET logical_decoding_work_mem = '64kB'" && sql "SELECT pg_reload_conf()" >/dev/null ||
  fail "setting logical_decoding_work_mem"
sql "CREATE TABLE s (id int PRIMARY KEY, v text, n int NOT NULL DEFAULT 0);
     CREATE TABLE s_new (LIKE s INCLUDING ALL);
     INSERT INTO s SELECT i, md5(i::text) FROM generate_series(1, 1000) i" || fail setup
cat >"$WORK/plan.yaml" <<Y
$(plan_header strm)
  early_streamed: true
state_dir: $WORK
tables: [{source: s, target: s_new}]
Y
start_run "$WORK/plan.yaml" "$WORK/run.log"
wait_streaming "$WORK/run.log"
proto=$(grep -oE "proto_version [0-9]" "$WORK/run.log" | head -1 | awk '{print $2}')
case "$PGSHIFT_TEST_PG" in
14) want=2 ;; 15) want=3 ;; *) want=4 ;;
esac
[ "$proto" = "$want" ] || fail "PostgreSQL $PGSHIFT_TEST_PG: streaming with proto_version $proto, expected $want"
pass "PostgreSQL $PGSHIFT_TEST_PG speaks proto_version $proto with streaming on"

streamed() { sql "SELECT coalesce(sum(stream_txns), 0) FROM pg_stat_replication_slots WHERE slot_name = 'pgshift_strm'"; }

# 1. one streamed transaction
sql "INSERT INTO s SELECT i, repeat(md5(i::text), 4) FROM generate_series(10001, 30000) i" || fail insert
wait_applied pgshift_strm
same_rows s s_new
[ "$(streamed)" -gt 0 ] || fail "no transaction was streamed (pg_stat_replication_slots.stream_txns = 0)"
log_has "$WORK/run.log" "applied while it ran" || fail "the streamed transaction was not applied while it ran"
pass "a streamed 20k-row transaction applied while it ran ($(streamed) streamed so far)"

# 2. a streamed transaction that aborts, then one with aborted subtransactions
sqlf - <<'SQL' || fail "aborted transaction"
BEGIN;
INSERT INTO s SELECT i, repeat('x', 200) FROM generate_series(40001, 60000) i;
UPDATE s SET n = n + 100 WHERE id <= 1000;
ROLLBACK;
SQL
sqlf - <<'SQL' || fail "subtransactions"
BEGIN;
INSERT INTO s SELECT i, repeat('a', 100) FROM generate_series(60001, 65000) i;
SAVEPOINT one;
INSERT INTO s SELECT i, repeat('b', 100) FROM generate_series(65001, 70000) i;
SAVEPOINT two;
UPDATE s SET n = n + 1 WHERE id BETWEEN 60001 AND 63000;
ROLLBACK TO SAVEPOINT one;
SAVEPOINT three;
UPDATE s SET n = n + 7 WHERE id BETWEEN 60001 AND 62000;
RELEASE SAVEPOINT three;
SAVEPOINT four;
DELETE FROM s WHERE id BETWEEN 10001 AND 12000;
ROLLBACK TO SAVEPOINT four;
DELETE FROM s WHERE id BETWEEN 12001 AND 12500;
COMMIT;
SQL
wait_applied pgshift_strm
same_rows s s_new
[ "$(sql "SELECT count(*) FROM s_new WHERE id > 40000")" = 5000 ] || fail "aborted rows reached the target"
[ "$(sql "SELECT count(*) FROM s_new WHERE n = 100")" = 0 ] || fail "an aborted update reached the target"
log_has "$WORK/run.log" "it has subtransactions; it is applied at its commit instead" ||
  fail "the transaction with subtransactions was not left to its commit"
pass "an aborted streamed transaction and aborted subtransactions left no trace"

# 2b. the second session gets stuck (a lock on the target) while applying a
# streamed transaction: it is given up and applied at its commit instead.
mkfifo "$WORK/l.in" "$WORK/t.in"
psql -XAtq -v ON_ERROR_STOP=1 <"$WORK/t.in" >"$WORK/t.out" 2>&1 &
pt=$!
RUN_PIDS+=("$pt")
exec 6>"$WORK/t.in"
echo "BEGIN; INSERT INTO s SELECT i, repeat('L', 150) FROM generate_series(70001, 80000) i; SELECT 't in';" >&6
wait_for 60 "the streamed transaction's first rows" log_has "$WORK/t.out" "t in"
psql -XAtq -v ON_ERROR_STOP=1 <"$WORK/l.in" >"$WORK/l.out" 2>&1 &
pl=$!
RUN_PIDS+=("$pl")
exec 7>"$WORK/l.in"
echo "BEGIN; LOCK TABLE s_new IN SHARE MODE; SELECT 'locked';" >&7
wait_for 30 "the lock on the target" log_has "$WORK/l.out" "locked"
echo "INSERT INTO s SELECT i, repeat('M', 150) FROM generate_series(80001, 90000) i; SELECT 't more';" >&6
wait_for 60 "the second session to be given up" log_has "$WORK/run.log" "made no progress; it is applied at its commit instead"
echo "COMMIT;" >&7
exec 7>&-
wait "$pl" || fail "lock session: $(cat "$WORK/l.out")"
echo "COMMIT;" >&6
exec 6>&-
wait "$pt" || fail "session T: $(cat "$WORK/t.out")"
wait_applied pgshift_strm
same_rows s s_new
pass "a stuck second session is given up; the transaction is applied at its commit"

# 3. two streamed transactions interleaved with each other and with small
# ones; the one begun second commits first.
mkfifo "$WORK/a.in" "$WORK/b.in"
psql -XAtq -v ON_ERROR_STOP=1 <"$WORK/a.in" >"$WORK/a.out" 2>&1 &
pa=$!
RUN_PIDS+=("$pa")
psql -XAtq -v ON_ERROR_STOP=1 <"$WORK/b.in" >"$WORK/b.out" 2>&1 &
pb=$!
RUN_PIDS+=("$pb")
exec 3>"$WORK/a.in" 4>"$WORK/b.in"
echo "BEGIN; INSERT INTO s SELECT i, repeat('A', 150) FROM generate_series(100001, 110000) i;" >&3
echo "BEGIN; INSERT INTO s SELECT i, repeat('B', 150) FROM generate_series(200001, 210000) i;" >&4
sql "UPDATE s SET n = n + 1 WHERE id = 1" || fail small1
echo "UPDATE s SET v = 'a2' WHERE id BETWEEN 100001 AND 104000;" >&3
echo "UPDATE s SET v = 'b2' WHERE id BETWEEN 200001 AND 204000; SELECT 'b done';" >&4
sql "INSERT INTO s VALUES (5, 'small') ON CONFLICT (id) DO UPDATE SET n = s.n + 1" || fail small2
wait_for 60 "session B's statements" log_has "$WORK/b.out" "b done"
echo "COMMIT;" >&4
sql "UPDATE s SET n = n + 1 WHERE id = 2" || fail small3
echo "UPDATE s SET n = 3 WHERE id = 100001; COMMIT;" >&3
exec 3>&- 4>&-
wait "$pa" || fail "session A: $(cat "$WORK/a.out")"
wait "$pb" || fail "session B: $(cat "$WORK/b.out")"
wait_applied pgshift_strm
same_rows s s_new
pass "two streamed transactions interleaved with small ones, committed out of order"

# 4. SIGKILL while a streamed transaction is open (its blocks spooled, not
# committed), then again while it is being applied; the rerun ends equal.
mkfifo "$WORK/c.in"
psql -XAtq -v ON_ERROR_STOP=1 <"$WORK/c.in" >"$WORK/c.out" 2>&1 &
pc=$!
RUN_PIDS+=("$pc")
exec 5>"$WORK/c.in"
before=$(streamed)
echo "BEGIN; INSERT INTO s SELECT i, repeat('C', 150) FROM generate_series(300001, 340000) i; SELECT 'c in';" >&5
wait_for 60 "session C's insert" log_has "$WORK/c.out" "c in"
more_streamed() { [ "$(streamed)" -gt "$before" ]; }
wait_for 60 "the open transaction to be streamed" more_streamed
kill -KILL "$RUN_PID"
wait "$RUN_PID" 2>/dev/null
echo "DELETE FROM s WHERE id % 3 = 0 AND id > 300000; COMMIT;" >&5
exec 5>&-
wait "$pc" || fail "session C: $(cat "$WORK/c.out")"
start_run "$WORK/plan.yaml" "$WORK/run2.log"
wait_streaming "$WORK/run2.log"
sql "INSERT INTO s SELECT i, repeat('D', 150) FROM generate_series(400001, 440000) i" || fail insert-d
wait_for 60 "run 2 to start applying" sql_is t "SELECT count(*) > 0 FROM s_new WHERE id > 300000"
kill -KILL "$RUN_PID"
wait "$RUN_PID" 2>/dev/null
start_run "$WORK/plan.yaml" "$WORK/run3.log"
wait_streaming "$WORK/run3.log"
wait_applied pgshift_strm
same_rows s s_new
pass "SIGKILL with a streamed transaction open, and while applying one: the rerun ends equal"
stop_run
finish
