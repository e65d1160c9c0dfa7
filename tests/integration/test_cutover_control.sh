#!/usr/bin/env bash
# Who decides when: `pgshift cutover` without a run, a cutover refused for an
# object it cannot carry (with the fix named), giving up after
# cutover.attempts with the migration still streaming, and an automatic
# cutover held back by cutover.postpone and by the postpone file until they
# are removed while `run` waits.
source "$(dirname "$0")/lib/common.sh"

sqlf - <<'SQL' || fail setup
CREATE TABLE t (id bigint PRIMARY KEY, created_at timestamptz NOT NULL DEFAULT now(), v int);
INSERT INTO t SELECT i, now(), 0 FROM generate_series(1, 2000) i;
CREATE TABLE t_new (LIKE t INCLUDING ALL);
CREATE RULE t_rule AS ON DELETE TO t WHERE old.id < 0 DO INSTEAD NOTHING;
SQL
plan() { # postpone-yaml
  cat >"$WORK/plan.yaml" <<Y
name: ctl
source: "dbname=${PGDATABASE}"
state_dir: $WORK
apply: {batch_time: 50ms}
cutover: {attempts: 2, lock_timeout: 200ms $1}
tables:
  - {source: public.t, target: public.t_new}
Y
}
plan ""
"$PGSHIFT" cutover --plan "$WORK/plan.yaml" >"$WORK/nocut.out" 2>&1; rc=$?
[ "$rc" = 1 ] && grep -q "no \`pgshift run\` is serving migration ctl" "$WORK/nocut.out" ||
  fail "cutover without a run: exit $rc: $(cat "$WORK/nocut.out")"
pass "cutover without a running run: exit 1, says how to start one"

start_run "$WORK/plan.yaml" "$WORK/run.log"
wait_streaming "$WORK/run.log"
SOCK_DIR="$WORK/pgshift-$(id -u)"
[ "$(stat -c %a "$SOCK_DIR/pgshift-ctl.sock")" = 600 ] || fail "control socket mode $(stat -c %a "$SOCK_DIR/pgshift-ctl.sock")"
[ "$(stat -c %a "$SOCK_DIR")" = 700 ] || fail "control socket directory mode $(stat -c %a "$SOCK_DIR")"
"$PGSHIFT" cutover --plan "$WORK/plan.yaml" >"$WORK/rule.out" 2>&1; rc=$?
[ "$rc" = 1 ] && grep -qF 'rule t_rule on "public"."t" cannot be carried to the new table; fix: drop it (and re-create it after the cutover), or leave_behind: [t_rule]' "$WORK/rule.out" ||
  fail "refusal for a rule: exit $rc: $(cat "$WORK/rule.out")"
[ "$(sql "SELECT relname FROM pg_class WHERE oid = 't'::regclass")" = t ] && [ -z "$(sql "SELECT to_regclass('t_old')")" ] || fail "renamed after a refusal"
pass "a rule on the source: cutover refused with the fix, control socket 0600 in a 0700 directory"

sql "DROP RULE t_rule ON t" || fail "drop rule"
# A session that keeps t locked: both attempts time out, and the run goes on.
PGAPPNAME=holder psql -XAtq -c "BEGIN; LOCK t IN ROW EXCLUSIVE MODE; SELECT pg_sleep(6); COMMIT;" >/dev/null &
HOLDER=$!
wait_for 10 "the holder to hold its lock on t" sql_is 1 \
  "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)
    WHERE a.application_name = 'holder' AND l.relation = 't'::regclass AND l.granted"
timeout 30 "$PGSHIFT" cutover --plan "$WORK/plan.yaml" >"$WORK/giveup.out" 2>&1; rc=$?
[ "$rc" = 1 ] && grep -qE "2 attempt\(s\) failed; the last: locks not granted within 200 ms: blocked by pid [0-9]+ \(application 'holder'" "$WORK/giveup.out" ||
  fail "give up: exit $rc: $(cat "$WORK/giveup.out")"
kill -0 "$RUN_PID" 2>/dev/null || fail "run stopped after giving up"
sql "INSERT INTO t VALUES (-1, now(), 1)" >/dev/null 2>&1 &
INSERTER=$!
wait "$HOLDER"
wait "$INSERTER" || fail "the insert queued behind the holder failed"
wait_applied pgshift_ctl 60
same_rows t t_new
pass "gave up after cutover.attempts naming the holder; still streaming and applying"

"$PGSHIFT" cutover --plan "$WORK/plan.yaml" >"$WORK/cut.out" 2>&1 || fail "cutover: $(cat "$WORK/cut.out")"
wait "$RUN_PID" || fail "run exit after cutover"
[ -n "$(sql "SELECT to_regclass('t_old')")" ] || fail "not renamed"
same_rows t t_old
pass "asked again once the holder is gone: cut over"

# An automatic cutover, held back by the plan and then by a flag file.
sqlf - <<'SQL' || fail setup2
CREATE TABLE u (id bigserial PRIMARY KEY, v int);
INSERT INTO u (v) SELECT 0 FROM generate_series(1, 1000) i;
-- the target numbers from its own sequence, which the cutover sets above the source's
CREATE TABLE u_new (id bigserial PRIMARY KEY, v int);
SQL
cat >"$WORK/auto.yaml" <<Y
name: auto
source: "dbname=${PGDATABASE}"
state_dir: $WORK
cutover: {postpone: true, postpone_file: $WORK/hold}
tables:
  - {source: public.u, target: u_new}
Y
touch "$WORK/hold"
"$PGSHIFT" run --plan "$WORK/auto.yaml" --auto-cutover >"$WORK/auto.log" 2>&1 &
RUN_PID=$!; RUN_PIDS+=("$RUN_PID")
wait_streaming "$WORK/auto.log"
wait_for 30 "the run to log that cutover.postpone holds the automatic cutover back" \
  log_has "$WORK/auto.log" "automatic cutover postponed: cutover.postpone is true in $WORK/auto.yaml"
kill -0 "$RUN_PID" || fail "run exited while postponed"
sed -i 's/postpone: true, //' "$WORK/auto.yaml"
# The run re-reads the plan when it changes: now the flag file holds it.
wait_for 30 "the run to log that the flag file holds the automatic cutover back" \
  log_has "$WORK/auto.log" "automatic cutover postponed: the flag file $WORK/hold exists"
kill -0 "$RUN_PID" || fail "run exited while the flag file exists"
[ -z "$(sql "SELECT to_regclass('u_old')")" ] || fail "cut over while postponed"
# Released, but a rule it cannot carry: the automatic cutover waits (logged
# once, re-checked every few seconds) until the operator drops it.
sql "CREATE RULE u_rule AS ON DELETE TO u WHERE old.id < 0 DO INSTEAD NOTHING" || fail "rule"
rm "$WORK/hold"
wait_for 10 "the automatic cutover to report the rule u_rule" log_has "$WORK/auto.log" "cutover refused: rule u_rule"
# The duration is the point: a window in which a run that gave up on, cut over
# past or kept logging the refusal would show it.
sleep 2
kill -0 "$RUN_PID" || fail "auto run exited on a refusal"
[ -z "$(sql "SELECT to_regclass('u_old')")" ] || fail "cut over with the rule in place"
[ "$(grep -c "cutover refused: rule u_rule" "$WORK/auto.log")" = 1 ] || fail "the refusal was logged more than once"
sql "DROP RULE u_rule ON u" || fail "drop rule"
wait_for 20 "the automatic cutover to run and the run to exit once the rule is gone" gone "$RUN_PID"
wait "$RUN_PID" || fail "auto run exit: $(tail -5 "$WORK/auto.log")"
[ -n "$(sql "SELECT to_regclass('u_old')")" ] || fail "auto: not renamed"
grep -q "u_new_id_seq (column id): set above the source's u_id_seq under the lock" "$WORK/auto.log" || fail "own sequence not announced"
[ "$(sql "INSERT INTO u (v) VALUES (1) RETURNING id")" = 1001 ] || fail "the new table's own sequence did not continue above 1000"
pass "auto cutover held by cutover.postpone, by the flag file, then by a rule; ran once all were gone; the target's own sequence continues at 1001"
finish
