#!/usr/bin/env bash
# The migration's slot is lost: dropped while the stream is down (a
# reconnect), missing when `run` starts again (a resume), dropped while
# paused, and on 18 invalidated by idle_replication_slot_timeout during a
# pause. Each time the run stops with exit 1 and one line that says the slot
# is lost and what to do (abort, then run again), and never streams from a
# new slot. After `pgshift abort --confirm`, `run` starts over and the target
# equals the source.
source "$(dirname "$0")/lib/common.sh"
sqlf - <<'SQL' || fail setup
CREATE TABLE l (id int PRIMARY KEY, v int);
CREATE TABLE l_new (LIKE l INCLUDING ALL);
INSERT INTO l SELECT i, i FROM generate_series(1, 1000) i;
SQL
cat >"$WORK/plan.yaml" <<Y
$(plan_header lost)
state_dir: $WORK
tables: [{source: l, target: l_new}]
Y
MISSING='error +replication slot pgshift_lost is missing on the source \([^)]*\): the source failed over to a server without it .*, or someone dropped it; the changes after applied position [0-9A-F]+/[0-9A-F]+ can no longer be streamed, so the migration must start over: `pgshift abort --plan [^ ]*plan.yaml --confirm`, then `pgshift run --plan [^ ]*plan.yaml` again'

# drop_slot: terminates the walsender holding the slot, if any, and drops it
# (false while the walsender has not let go yet).
drop_slot() {
  psql -XAtq -c "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots
                 WHERE slot_name = 'pgshift_lost' AND active_pid IS NOT NULL" >/dev/null 2>&1
  psql -XAtq -v ON_ERROR_STOP=1 -c "SELECT pg_drop_replication_slot('pgshift_lost')" >/dev/null 2>&1
}

# expect_lost LOG ERE WHAT: the run exits 1; its log has exactly one error
# line, matching ERE; no slot was created again.
expect_lost() {
  wait_for 30 "the run to stop ($3)" gone "$RUN_PID"
  wait "$RUN_PID"
  local rc=$?
  [ "$rc" = 1 ] || fail "$3: run exited $rc, expected 1"
  local errors
  errors=$(grep -cE '^[^ ]+ error ' "$1")
  [ "$errors" = 1 ] || fail "$3: $errors error lines, expected one: $(grep -E ' error ' "$1")"
  grep -qE -- "$2" "$1" || fail "$3: the error line is not the expected one: $(grep -E ' error ' "$1")"
  [ "$(sql "SELECT count(*) FROM pg_replication_slots")" = 0 ] || fail "$3: a slot exists again"
  [ "$(sql "SELECT phase FROM pgshift.migrations WHERE name = 'lost'")" = failed ] ||
    fail "$3: phase is not failed"
}

start_run "$WORK/plan.yaml" "$WORK/run1.log"
wait_streaming "$WORK/run1.log"
sql "UPDATE l SET v = -v WHERE id <= 100" || fail dml
wait_applied pgshift_lost
WAIT_INTERVAL=0.02 wait_for 10 "the slot to be dropped" drop_slot
sql "INSERT INTO l VALUES (5000, 5000)" || fail dml # written while the slot is gone
expect_lost "$WORK/run1.log" "$MISSING" "slot dropped while the stream was down"
pass "slot dropped while the stream was down: exit 1, $(grep -E ' error ' "$WORK/run1.log" | sed 's/^[^ ]* error *//' | cut -c1-110)..."

start_run "$WORK/plan.yaml" "$WORK/run2.log"
expect_lost "$WORK/run2.log" "$MISSING" "slot missing at a resume"
grep -q "streaming from slot" "$WORK/run2.log" && fail "the resumed run streamed"
pass "slot missing when run again: exit 1 with the same line, nothing streamed"

"$PGSHIFT" abort --plan "$WORK/plan.yaml" --confirm >"$WORK/abort1.log" 2>&1 || fail "abort: $(cat "$WORK/abort1.log")"
# A target the plan did not create stays; the new copy wants it empty.
sql "TRUNCATE l_new" || fail truncate
start_run "$WORK/plan.yaml" "$WORK/run3.log"
wait_streaming "$WORK/run3.log"
sql "UPDATE l SET v = v + 1 WHERE id % 7 = 0" || fail dml
wait_applied pgshift_lost
same_rows l l_new
pass "after abort, run starts over (new copy) and the target equals the source"

# Paused: the stream is closed; the slot-health sample notices, or the
# resume asked right away does: either way `pgshift resume` must not say
# it streams again (it used to reply before it knew).
"$PGSHIFT" pause --plan "$WORK/plan.yaml" >/dev/null 2>&1 || fail pause
WAIT_INTERVAL=0.02 wait_for 10 "the slot to be dropped" drop_slot
"$PGSHIFT" resume --plan "$WORK/plan.yaml" >"$WORK/resume_lost.out" 2>&1 &&
  fail "resume with the slot gone exited 0: $(cat "$WORK/resume_lost.out")"
grep -q "streaming again" "$WORK/resume_lost.out" && fail "resume with the slot gone: $(cat "$WORK/resume_lost.out")"
expect_lost "$WORK/run3.log" "$MISSING" "slot dropped while paused"
pass "slot dropped while paused: exit 1 with the same line; resume says so ($(head -c 100 "$WORK/resume_lost.out"))"

if [ "$PGSHIFT_TEST_PG" -ge 18 ]; then
  "$PGSHIFT" abort --plan "$WORK/plan.yaml" --confirm >"$WORK/abort2.log" 2>&1 || fail "abort: $(cat "$WORK/abort2.log")"
  sql "TRUNCATE l_new" || fail truncate
  sql "ALTER SYSTEM SET idle_replication_slot_timeout = '1s'" || fail "set timeout"
  sql "SELECT pg_reload_conf()" >/dev/null || fail reload
  wait_for 10 "the new timeout to be in effect" sql_is 1s "SHOW idle_replication_slot_timeout"
  "$PGSHIFT" plan --plan "$WORK/plan.yaml" >"$WORK/plan.out" 2>&1 || fail "plan: $(tail -3 "$WORK/plan.out")"
  grep -qE '^  warn +idle_replication_slot_timeout = 1s: a migration paused \(`pgshift pause`\), stopped or disconnected longer than that loses its slot' "$WORK/plan.out" ||
    fail "no idle timeout warning in the plan: $(grep -i idle "$WORK/plan.out")"
  pass "pgshift plan warns about idle_replication_slot_timeout = 1s"

  start_run "$WORK/plan.yaml" "$WORK/run4.log"
  wait_streaming "$WORK/run4.log"
  "$PGSHIFT" pause --plan "$WORK/plan.yaml" >/dev/null 2>&1 || fail pause
  wait_for 30 "the paused run to warn about the idle timeout" log_has "$WORK/run4.log" \
    "warn +paused: slot pgshift_lost has been inactive for [0-9]+ s; the source invalidates it at the first checkpoint after idle_replication_slot_timeout = 1s"
  wait_for 30 "the slot to be inactive over 1 s" sql_is t \
    "SELECT now() - inactive_since > interval '1.5 s' FROM pg_replication_slots WHERE slot_name = 'pgshift_lost'"
  sql "CHECKPOINT" || fail checkpoint
  wait_for 10 "the slot to be invalidated" sql_is idle_timeout \
    "SELECT invalidation_reason FROM pg_replication_slots WHERE slot_name = 'pgshift_lost'"
  INVALID='error +replication slot pgshift_lost was invalidated by the source \([^)]*\): it was inactive longer than idle_replication_slot_timeout; the changes after applied position [0-9A-F/]+ can no longer be streamed, so the migration must start over: `pgshift abort'
  # The invalidated slot still exists: expect_lost's "no slot" check would fail.
  wait_for 30 "the run to stop (slot invalidated while paused)" gone "$RUN_PID"
  wait "$RUN_PID"; rc=$?
  [ "$rc" = 1 ] || fail "run exited $rc, expected 1"
  grep -qE -- "$INVALID" "$WORK/run4.log" || fail "no invalidation line: $(grep -E ' error ' "$WORK/run4.log")"
  [ "$(grep -cE '^[^ ]+ error ' "$WORK/run4.log")" = 1 ] || fail "more than one error line: $(grep -E ' error ' "$WORK/run4.log")"
  pass "paused past idle_replication_slot_timeout: warned with the value, then exit 1 naming the timeout"
  "$PGSHIFT" run --plan "$WORK/plan.yaml" >"$WORK/run5.log" 2>&1
  rc=$?
  [ "$rc" = 1 ] && grep -qE -- "$INVALID" "$WORK/run5.log" || fail "resume with the invalidated slot: exit $rc: $(grep -E ' error ' "$WORK/run5.log")"
  pass "run again with the invalidated slot: exit 1 with the same line"
fi
finish
