#!/usr/bin/env bash
# A table without any key but REPLICA IDENTITY FULL (legacy and log tables)
# is migrated like the built-in apply worker does it (issue #13): an update
# or delete changes one row equal to the whole old row; identical rows are a
# multiset, so which of them does not matter. Two targets in one plan: a
# partitioned one the operator made (rows move between partitions) and a
# plain one. The rows carry json (no = operator: compared as text), NULLs,
# duplicates, and large out-of-line values that the updates leave
# untouched. `plan` warns about the cost; the cutover swaps them.
source "$(dirname "$0")/lib/common.sh"
sqlf - <<'SQL' || fail setup
CREATE TABLE logs (ts timestamptz NOT NULL, level text, msg text, doc json, big text);
ALTER TABLE logs REPLICA IDENTITY FULL;
INSERT INTO logs SELECT timestamptz '2025-01-01 00:00+00' + (g % 90) * interval '1 day',
       CASE WHEN g % 7 = 0 THEN NULL ELSE 'info' END, 'm' || (g % 50),
       json_build_object('n', g % 50), CASE WHEN g % 100 = 0 THEN repeat(md5(g::text), 300) END
  FROM generate_series(1, 3000) g;
-- exact duplicates, several times over
INSERT INTO logs SELECT * FROM logs WHERE msg IN ('m1', 'm2');
CREATE TABLE logs_new (LIKE logs INCLUDING ALL) PARTITION BY RANGE (ts);
CREATE TABLE logs_new_q1 PARTITION OF logs_new FOR VALUES FROM ('2025-01-01') TO ('2025-04-01');
CREATE TABLE logs_new_rest PARTITION OF logs_new DEFAULT;
CREATE TABLE plain (a int, b text, c jsonb);
ALTER TABLE plain REPLICA IDENTITY FULL;
INSERT INTO plain SELECT g % 10, 'b', jsonb_build_object('g', g % 3) FROM generate_series(1, 500) g;
CREATE TABLE plain_new (LIKE plain INCLUDING ALL);
SQL
cat >"$WORK/plan.yaml" <<Y
$(plan_header kf)
state_dir: $WORK
tables: [{source: logs, target: logs_new}, {source: plain, target: plain_new}]
Y
"$PGSHIFT" plan --plan "$WORK/plan.yaml" >"$WORK/plan.out" 2>&1 || fail "plan refused: $(grep -E 'BLOCK' "$WORK/plan.out")"
grep -q 'rows identified by the whole row (REPLICA IDENTITY FULL, no key)' "$WORK/plan.out" || fail "plan does not say how rows are found"
grep -q 'warn .*"public"."logs" has no key: every applied UPDATE and DELETE searches the target' "$WORK/plan.out" ||
  fail "plan does not warn about the cost: $(grep -i key "$WORK/plan.out")"
pass "plan accepts keyless REPLICA IDENTITY FULL tables and warns about the cost"

start_run "$WORK/plan.yaml" "$WORK/run.log"
wait_streaming "$WORK/run.log"
sqlf - <<'SQL' || fail dml
-- one of several identical rows
WITH one AS (SELECT ctid FROM logs WHERE msg = 'm1' LIMIT 1) UPDATE logs SET msg = 'm1-changed' WHERE ctid IN (SELECT ctid FROM one);
WITH one AS (SELECT ctid FROM logs WHERE msg = 'm2' LIMIT 1) DELETE FROM logs WHERE ctid IN (SELECT ctid FROM one);
-- NULL columns in the old row; json compared as text
UPDATE logs SET level = 'warn' WHERE level IS NULL AND msg = 'm7';
-- updates that leave the out-of-line value untouched, and one that moves partitions
UPDATE logs SET msg = msg || '!' WHERE big IS NOT NULL AND msg = 'm0';
UPDATE logs SET ts = ts + interval '200 days' WHERE msg = 'm3';
DELETE FROM logs WHERE msg = 'm4';
INSERT INTO logs SELECT * FROM logs WHERE msg = 'm5' LIMIT 3;
UPDATE plain SET b = 'changed' WHERE a = 3;
DELETE FROM plain WHERE a = 4 AND c = '{"g": 1}';
UPDATE plain SET c = '{"g": 9}' WHERE a = 5 AND c = '{"g": 2}';
SQL
for i in 1 2 3; do
  sql "WITH one AS (SELECT ctid FROM logs WHERE msg = 'm6' LIMIT 1) UPDATE logs SET doc = '{\"n\": -$i}' WHERE ctid IN (SELECT ctid FROM one)" || fail "update $i"
done
wait_applied pgshift_kf
same_rows logs logs_new "ts, level, msg, doc::text, big"
same_rows plain plain_new
[ "$(sql "SELECT count(*) FROM logs_new_rest")" -gt 0 ] || fail "no row moved to the other partition"
[ "$(sql "SELECT count(*) FROM logs_new WHERE big IS NOT NULL AND msg LIKE 'm0%!'")" -gt 0 ] || fail "the updates of rows with large values did not apply"
pass "updates and deletes of keyless rows apply: duplicates, NULLs, json, untouched large values, a partition move"

# A target that lost the row: the update stops the run instead of guessing.
sql "DELETE FROM plain_new WHERE a = 9" || fail diverge
sql "UPDATE plain SET b = 'x' WHERE a = 9" || fail "update a = 9"
wait_for 60 "the run to stop on the missing row" gone "$RUN_PID"
wait "$RUN_PID"
[ $? = 1 ] || fail "run did not exit 1"
log_has "$WORK/run.log" 'UPDATE on "public"."plain_new" matched 0 rows instead of 1; the target has diverged' ||
  fail "the divergence is not named: $(grep error "$WORK/run.log" | tail -3)"
pass "an update whose row is missing on the target stops the run"
finish
