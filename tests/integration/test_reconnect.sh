#!/usr/bin/env bash
# The replication connection drops (walsender terminated, as on a network cut
# or a server-side kill): `run` logs it, reconnects with backoff, resumes from
# the applied position and loses nothing written meanwhile.
source "$(dirname "$0")/lib/common.sh"
sql "CREATE TABLE r (id int PRIMARY KEY, v int); CREATE TABLE r_new (LIKE r INCLUDING ALL);
     INSERT INTO r SELECT i, i FROM generate_series(1, 100) i" || fail setup
cat >"$WORK/plan.yaml" <<Y
$(plan_header reconn)
state_dir: $WORK
tables: [{source: r, target: r_new}]
Y
# streamed_times_over N: the run logged "streaming from slot" more than N times.
streamed_times_over() { [ "$(grep -c 'streaming from slot' "$WORK/run.log")" -gt "$1" ]; }
start_run "$WORK/plan.yaml" "$WORK/run.log"
wait_streaming "$WORK/run.log"
for round in 1 2; do
  sql "UPDATE r SET v = v + 1 WHERE id <= 50" || fail dml
  sql "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = 'pgshift_reconn'" >/dev/null || fail kill
  # written while the stream is down
  sql "INSERT INTO r VALUES ($((1000 + round)), $round); DELETE FROM r WHERE id = $round" || fail dml2
  wait_for 20 "a reconnect after drop $round (\"streaming from slot\" logged $((round + 1)) times)" streamed_times_over "$round"
done
grep -q "replication stream ended\|replication connection lost" "$WORK/run.log" || fail "the drop was not logged"
grep -q "reconnecting in [0-9]* ms" "$WORK/run.log" || fail "no backoff logged"
kill -0 "$RUN_PID" || fail "run exited"
wait_applied pgshift_reconn
same_rows r r_new
pass "two dropped replication connections: reconnected with backoff, target equals source"
stop_run
finish
