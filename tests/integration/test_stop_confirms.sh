#!/usr/bin/env bash
# SIGTERM under load: the run brings the applier to rest (the open batch
# committed) and then confirms that final applied position to the slot
# before it exits, so the next run does not decode again what is already
# applied; nothing past it is confirmed. The next run brings every row once.
# A killed run's backend can still be committing its last batch (with its
# progress) after the client is gone: the next run waits for it before it
# reads where to resume, and applies nothing twice. One that never ends is
# ended after 10 s (its transaction rolls back) and the run goes on.
source "$(dirname "$0")/lib/common.sh"
sql "CREATE TABLE s (id int PRIMARY KEY, v text); CREATE TABLE s_new (LIKE s INCLUDING ALL)" || fail setup
cat >"$WORK/plan.yaml" <<Y
$(plan_header stopc)
state_dir: $WORK
tables: [{source: s, target: s_new}]
Y
start_run "$WORK/plan.yaml" "$WORK/run1.log"
wait_streaming "$WORK/run1.log"
sql "DO \$\$ BEGIN FOR i IN 1..20000 LOOP INSERT INTO s VALUES (i, md5(i::text)); COMMIT; END LOOP; END \$\$" &
LOAD=$!
wait_for 30 "the first rows applied" sql_is t "SELECT count(*) > 500 FROM s_new"
kill -TERM "$RUN_PID"
wait "$RUN_PID"; rc=$?
[ "$rc" = 143 ] || fail "exit $rc, want 143"
applied=$(sql "SELECT applied_lsn FROM pgshift.migrations WHERE name = 'stopc'")
confirmed=$(sql "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'pgshift_stopc'")
# Batches still in flight at the signal were committed asynchronously: the
# stop makes them durable with one synchronous commit before confirming.
grep -E 'made durable' "$WORK/run1.log" | sed 's/^/  /'
[ "$(sql "SELECT '$confirmed'::pg_lsn >= '$applied'::pg_lsn")" = t ] ||
  fail "after SIGTERM the slot confirmed $confirmed, the applied position is $applied"
pass "SIGTERM under load: the slot confirmed the final applied position $applied"
wait "$LOAD" || fail "load"
start_run "$WORK/plan.yaml" "$WORK/run2.log"
wait_streaming "$WORK/run2.log"
wait_applied pgshift_stopc
same_rows s s_new
[ "$(sql "SELECT count(*) FROM s_new")" = 20000 ] || fail "row count"
pass "the next run applied all 20000 rows exactly once"
stop_run

# An earlier run's session that outlived its client: it holds the writer
# lock and commits a batch with its progress only after the next run began.
sql "INSERT INTO s VALUES (20001, 'late')" || fail late
late=$(sql "SELECT pg_current_wal_insert_lsn()")
mkfifo "$WORK/w.in"
psql -XAtq -v ON_ERROR_STOP=1 <"$WORK/w.in" >"$WORK/w.out" 2>&1 &
pw=$!
RUN_PIDS+=("$pw")
exec 6>"$WORK/w.in"
echo "SELECT pg_advisory_lock_shared(hashtext('pgshift writer'), hashtext('stopc'));
BEGIN; INSERT INTO s_new VALUES (20001, 'late');
UPDATE pgshift.migrations SET applied_lsn = '$late' WHERE name = 'stopc'; SELECT 'held';" >&6
wait_for 30 "the lingering session" log_has "$WORK/w.out" "held"
start_run "$WORK/plan.yaml" "$WORK/run3.log" 6>&-
wait_for 30 "the run to wait for the earlier session" log_has "$WORK/run3.log" \
  "waiting for the session\(s\) of an earlier run"
printf 'COMMIT;\n\\q\n' >&6
exec 6>&-
wait "$pw" || fail "lingering session: $(cat "$WORK/w.out")"
wait_streaming "$WORK/run3.log"
sql "INSERT INTO s VALUES (20002, 'next')" || fail next
wait_applied pgshift_stopc
same_rows s s_new
[ "$(sql "SELECT count(*) FROM s_new")" = 20002 ] || fail "row count after the lingering commit"
pass "a killed run's late commit is waited for; the next run resumes past it"
stop_run

# One that never ends on its own (its client hung with the transaction
# open): after 10 s the run ends it, its batch rolls back whole, and the run
# applies the same change itself from the progress it read.
sql "INSERT INTO s VALUES (20003, 'stuck')" || fail stuck
stuck=$(sql "SELECT pg_current_wal_insert_lsn()")
mkfifo "$WORK/w2.in"
psql -XAtq <"$WORK/w2.in" >"$WORK/w2.out" 2>&1 &
pw=$!
RUN_PIDS+=("$pw")
exec 7>"$WORK/w2.in"
echo "SELECT pg_advisory_lock_shared(hashtext('pgshift writer'), hashtext('stopc'));
BEGIN; INSERT INTO s_new VALUES (20003, 'stuck');
UPDATE pgshift.migrations SET applied_lsn = '$stuck' WHERE name = 'stopc';
SELECT 'held ' || pg_backend_pid();" >&7
wait_for 30 "the stuck session" log_has "$WORK/w2.out" "held"
spid=$(sed -n 's/^held //p' "$WORK/w2.out")
start_run "$WORK/plan.yaml" "$WORK/run4.log" 7>&-
wait_for 30 "the run to end the stuck session" log_has "$WORK/run4.log" \
  "after 10 s; ending them .*pid $spid \\(idle in transaction, ended\\)"
wait_streaming "$WORK/run4.log"
[ "$(sql "SELECT count(*) FROM pg_stat_activity WHERE pid = $spid")" = 0 ] ||
  fail "the stuck session $spid still exists"
wait_applied pgshift_stopc
same_rows s s_new
[ "$(sql "SELECT count(*) FROM s_new WHERE id = 20003")" = 1 ] ||
  fail "the stuck session's row: $(sql "SELECT count(*) FROM s_new WHERE id = 20003") copies"
[ "$(sql "SELECT count(*) FROM s_new")" = 20003 ] || fail "row count after the stuck session"
pass "a session stuck with the writer lock is ended after 10 s; its change is applied once"
exec 7>&-
wait "$pw" 2>/dev/null
stop_run
finish
