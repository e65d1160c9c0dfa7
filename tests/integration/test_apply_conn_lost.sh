#!/usr/bin/env bash
# The apply connection dies under load (its backend terminated): the run
# stops with exit 1 and one clear line, confirms nothing it did not commit,
# and the same `run` resumes and brings every row exactly once.
source "$(dirname "$0")/lib/common.sh"
sql "CREATE TABLE a (id int PRIMARY KEY, v text); CREATE TABLE a_new (LIKE a INCLUDING ALL)" || fail setup
cat >"$WORK/plan.yaml" <<Y
$(plan_header lost)
state_dir: $WORK
tables: [{source: a, target: a_new}]
Y
start_run "$WORK/plan.yaml" "$WORK/run1.log"
wait_streaming "$WORK/run1.log"
# A stream of small transactions; the backend goes away during it or just
# after (an idle applier must notice too, not only its next batch).
sql "DO \$\$ BEGIN FOR i IN 1..20000 LOOP INSERT INTO a VALUES (i, md5(i::text)); COMMIT; END LOOP; END \$\$" &
LOAD=$!
wait_for 30 "the load to reach the target (rows in a_new)" sql_is t "SELECT EXISTS (SELECT FROM a_new)"
[ "$(sql "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'pgshift apply'")" = t ] ||
  fail "no apply backend to terminate"
wait_for 10 "the run to exit without its apply connection (it kept going)" gone "$RUN_PID"
wait "$RUN_PID"; rc=$?
[ "$rc" = 1 ] || fail "exit $rc, want 1"
grep -qE "error +apply: .*(target connection failed|sending to the target failed|terminat)" "$WORK/run1.log" ||
  fail "no clear apply error in the log: $(grep -E 'error' "$WORK/run1.log" | head -3)"
pass "apply backend terminated: exit 1 with: $(grep -m1 -E 'error +apply' "$WORK/run1.log" | sed 's/.*error *//' | cut -c1-120)"
# Nothing past what the target committed was confirmed.
applied=$(sql "SELECT applied_lsn FROM pgshift.migrations WHERE name = 'lost'")
[ "$(sql "SELECT confirmed_flush_lsn <= '$applied' FROM pg_replication_slots WHERE slot_name = 'pgshift_lost'")" = t ] ||
  fail "slot confirmed past the applied position $applied"
wait "$LOAD" || fail "load"
start_run "$WORK/plan.yaml" "$WORK/run2.log"
wait_streaming "$WORK/run2.log"
wait_applied pgshift_lost
same_rows a a_new
[ "$(sql "SELECT count(*) FROM a_new")" = 20000 ] || fail "row count"
pass "the resumed run applied all 20000 rows exactly once"
stop_run
finish
