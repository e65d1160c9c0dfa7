#!/usr/bin/env bash
# Anything the applier cannot apply stops the stream with a clear error,
# acknowledges nothing past the last applied commit, and the same `run`
# continues once the operator fixed the target:
#  - a schema change on the source (new column; changed type)
#  - a row whose key has no partition in the target
source "$(dirname "$0")/lib/common.sh"
sqlf - <<'SQL' || fail setup
CREATE TABLE src (id int PRIMARY KEY, created_at date NOT NULL, v int);
CREATE TABLE tgt (id int, created_at date NOT NULL, v int, PRIMARY KEY (id, created_at))
  PARTITION BY RANGE (created_at);
CREATE TABLE tgt_2025 PARTITION OF tgt FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
INSERT INTO src SELECT i, date '2025-01-01' + i, i FROM generate_series(1, 100) i;
SQL
cat >"$WORK/plan.yaml" <<Y
$(plan_header sfr)
state_dir: $WORK
tables: [{source: src, target: tgt}]
Y

# expect_stop LOG PATTERN: the run exits 1 with PATTERN in its log.
expect_stop() {
  wait_for 30 "the run to stop (exit) on /$2/" gone "$RUN_PID"
  wait "$RUN_PID"; local rc=$?
  [ "$rc" = 1 ] || fail "run exited $rc, expected 1"
  grep -qE "$2" "$1" || fail "log lacks /$2/: $(grep error "$1" | tail -3)"
  # Whether the failed transaction was acknowledged shows after the fix: the
  # resumed run must still apply it (same_rows below).
  [ "$(sql "SELECT phase FROM pgshift.migrations WHERE name = 'sfr'")" = failed ] || fail "phase is not failed"
}

start_run "$WORK/plan.yaml" "$WORK/run1.log"
wait_streaming "$WORK/run1.log"
sql "ALTER TABLE src ADD COLUMN extra text; INSERT INTO src VALUES (500, '2025-06-01', 5, 'x'); UPDATE src SET v = -1 WHERE id = 1" || fail dml
expect_stop "$WORK/run1.log" 'column "extra" \(text\) of "public"."src" is not in target "public"."tgt"; fix: ALTER TABLE "public"."tgt" ADD COLUMN extra text'
[ "$(sql "SELECT count(*) FROM tgt WHERE id = 500 OR v = -1")" = 0 ] || fail "changes after the schema change were applied"
pass "new source column stops the run with the fix named; nothing applied or acknowledged"

"$PGSHIFT" run --plan "$WORK/plan.yaml" >"$WORK/run2.log" 2>&1
[ $? = 3 ] || fail "rerun before the fix should stop in preflight (exit 3)"
grep -q 'BLOCK.*has no column "extra"' "$WORK/run2.log" || fail "preflight did not name the column"
pass "rerun before the fix is refused by preflight"

sql "ALTER TABLE tgt ADD COLUMN extra text" || fail fix
start_run "$WORK/plan.yaml" "$WORK/run3.log"
wait_streaming "$WORK/run3.log"
wait_applied pgshift_sfr
same_rows src tgt
pass "after the operator's fix the same run continues with identical data"

sql "ALTER TABLE src ALTER COLUMN v TYPE bigint; INSERT INTO src VALUES (501, '2025-06-02', 6, 'y')" || fail dml2
expect_stop "$WORK/run3.log" 'column "v" of "public"."src" is now bigint but integer on target'
sql "ALTER TABLE tgt ALTER COLUMN v TYPE bigint" || fail fix2
start_run "$WORK/plan.yaml" "$WORK/run4.log"
wait_streaming "$WORK/run4.log"
wait_applied pgshift_sfr
same_rows src tgt
pass "a column type change stops the run; continues after the fix"

sql "INSERT INTO src VALUES (502, '2031-03-03', 7, 'no home'); INSERT INTO src VALUES (503, '2025-07-07', 8, 'after')" || fail dml3
expect_stop "$WORK/run4.log" 'INSERT on "public"."tgt" failed .*no partition of relation "tgt" found for row'
[ "$(sql "SELECT count(*) FROM tgt WHERE id IN (502, 503)")" = 0 ] || fail "rows applied past the failure"
pass "a row without a partition stops the stream (never skipped)"
sql "CREATE TABLE tgt_default PARTITION OF tgt DEFAULT" || fail fix3
start_run "$WORK/plan.yaml" "$WORK/run5.log"
wait_streaming "$WORK/run5.log"
wait_applied pgshift_sfr
same_rows src tgt
pass "continues once the partition exists"

# The target diverged behind pgshift's back: an update of the missing row
# must stop the run (server-side row count check) instead of committing.
sql "DELETE FROM tgt WHERE id = 7" || fail diverge
sql "UPDATE src SET v = 700 WHERE id = 7; INSERT INTO src VALUES (504, '2025-08-08', 9, 'later')" || fail dml4
expect_stop "$WORK/run5.log" 'UPDATE on "public"."tgt" matched 0 rows instead of 1; the target has diverged'
[ "$(sql "SELECT count(*) FROM tgt WHERE id = 504")" = 0 ] || fail "changes after the divergence were committed"
pass "an update of a row missing on the target stops the run; nothing after it commits"
sql "INSERT INTO tgt SELECT id, created_at, 7, extra FROM src WHERE id = 7" || fail repair
start_run "$WORK/plan.yaml" "$WORK/run6.log"
wait_streaming "$WORK/run6.log"
wait_applied pgshift_sfr
same_rows src tgt
pass "after the repair the same run continues"
stop_run
finish
