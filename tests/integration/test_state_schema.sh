#!/usr/bin/env bash
# Schema pgshift belongs to pgshift's role, and nothing in it is executable
# later: a schema another role created first (the CVE-2022-2625 class: it
# could hold a trigger or a function that pgshift would then run with its
# own privileges) makes plan and run refuse, naming the owner; the schema
# pgshift creates grants nothing to PUBLIC even under default privileges
# that would; the steps after the swap are stored as names and run as one
# escaped statement each; a record of an earlier version, which stored SQL
# text, is refused rather than run.
source "$(dirname "$0")/lib/common.sh"

sqlf - <<'SQL' || fail setup
CREATE TABLE st (id int PRIMARY KEY, v text);
INSERT INTO st SELECT i, 'v' || i FROM generate_series(1, 2000) i;
CREATE TABLE st_new (LIKE st INCLUDING ALL);
CREATE TABLE st_ref (id int PRIMARY KEY, st_id int CONSTRAINT st_ref_fk REFERENCES st (id));
INSERT INTO st_ref SELECT i, i FROM generate_series(1, 10) i;
CREATE ROLE mallory;
GRANT CREATE ON DATABASE postgres TO mallory;
SQL
cat >"$WORK/plan.yaml" <<Y
$(plan_header st)
state_dir: $WORK
tables:
  - {source: public.st, target: public.st_new}
Y

# ---- a schema pgshift of another role: refused ----------------------------
sql "SET ROLE mallory; CREATE SCHEMA pgshift" || fail "mallory's schema"
"$PGSHIFT" plan --plan "$WORK/plan.yaml" >"$WORK/plan.log" 2>&1
rc=$?
[ "$rc" = 1 ] || [ "$rc" = 3 ] || fail "plan with mallory's schema exited $rc: $(tail -3 "$WORK/plan.log")"
grep -q "schema pgshift in the target database belongs to role mallory, not to postgres" "$WORK/plan.log" ||
  fail "plan does not name the owner: $(grep -i pgshift "$WORK/plan.log" | tail -3)"
"$PGSHIFT" run --plan "$WORK/plan.yaml" >"$WORK/run-mallory.log" 2>&1
rc=$?
[ "$rc" = 1 ] || [ "$rc" = 3 ] || fail "run with mallory's schema exited $rc: $(tail -3 "$WORK/run-mallory.log")"
grep -q "belongs to role mallory.*fix: " "$WORK/run-mallory.log" || fail "run does not name the owner and fix: $(tail -3 "$WORK/run-mallory.log")"
[ "$(sql "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'pgshift'")" = 0 ] ||
  fail "run created state in mallory's schema"
[ "$(sql "SELECT count(*) FROM pg_replication_slots")" = 0 ] || fail "run created a slot"
pass "a schema pgshift owned by mallory: plan and run refuse (exit $rc), naming the owner; nothing created"

# Our schema, but another role put a function in it.
sql "DROP SCHEMA pgshift; CREATE SCHEMA pgshift; GRANT CREATE, USAGE ON SCHEMA pgshift TO mallory" || fail "our schema"
sql "SET ROLE mallory; CREATE FUNCTION pgshift.now() RETURNS timestamptz LANGUAGE sql AS 'SELECT pg_catalog.now()'" || fail "mallory's function"
"$PGSHIFT" run --plan "$WORK/plan.yaml" >"$WORK/run-func.log" 2>&1
rc=$?
[ "$rc" = 1 ] || fail "run with mallory's function exited $rc"
grep -q "function pgshift.now in the target database belongs to role mallory" "$WORK/run-func.log" ||
  fail "run does not name the function: $(tail -3 "$WORK/run-func.log")"
sql "DROP SCHEMA pgshift CASCADE" || fail "drop"
pass "an object of another role inside schema pgshift: refused, naming it"

# ---- a normal run: no PUBLIC privileges, even with default privileges -----
sql "ALTER DEFAULT PRIVILEGES FOR ROLE postgres GRANT USAGE ON SCHEMAS TO PUBLIC;
     ALTER DEFAULT PRIVILEGES FOR ROLE postgres GRANT SELECT, INSERT, UPDATE ON TABLES TO PUBLIC" || fail "default privileges"
"$PGSHIFT" run --plan "$WORK/plan.yaml" --auto-cutover >"$WORK/run.log" 2>&1 || fail "run: $(tail -5 "$WORK/run.log")"
[ "$(sql "SELECT relkind FROM pg_class WHERE oid = 'st_old'::regclass")" = r ] || fail "not cut over"
! grep -q "BUG:" "$WORK/run.log" || fail "a phase transition was refused: $(grep "BUG:" "$WORK/run.log")"
grep -q "phase cutting_over -> done (swapped: renames committed)" "$WORK/run.log" || fail "the swap's transition is not logged"
for p in USAGE CREATE; do
  [ "$(sql "SELECT has_schema_privilege('public', 'pgshift', '$p')")" = f ] || fail "PUBLIC has $p on schema pgshift"
done
for t in migrations tables; do
  [ "$(sql "SELECT has_table_privilege('public', 'pgshift.$t', 'SELECT, INSERT, UPDATE, DELETE')")" = f ] ||
    fail "PUBLIC has privileges on pgshift.$t"
done
[ "$(sql "SELECT count(*) FROM pg_namespace n, aclexplode(n.nspacl) a WHERE n.nspname = 'pgshift' AND a.grantee = 0")" = 0 ] ||
  fail "nspacl grants PUBLIC: $(sql "SELECT nspacl FROM pg_namespace WHERE nspname = 'pgshift'")"
sql "SET ROLE mallory; SELECT count(*) FROM pgshift.migrations" >/dev/null 2>&1 && fail "mallory can read the state"
pass "after a run under default privileges granting PUBLIC: no PUBLIC privilege on the schema or its tables"

# ---- the steps after the swap are data --------------------------------------
rec() { sql "SELECT cutover->'$1' FROM pgshift.migrations WHERE name = 'st'"; }
[ "$(rec post)" = "" ] || fail "the record still holds SQL text: $(rec post)"
python3 - "$(rec post_steps)" <<'PY' || fail "post_steps: $(rec post_steps)"
import json, sys
steps = json.loads(sys.argv[1])
assert {"step": "validate", "schema": "public", "table": "st_ref", "constraint": "st_ref_fk"} in steps, steps
assert not any(s["step"] == "analyze" for s in steps), steps
assert all(set(s) <= {"step", "schema", "table", "constraint"} for s in steps), steps
PY
[ "$(sql "SELECT convalidated FROM pg_constraint WHERE conname = 'st_ref_fk'")" = t ] || fail "st_ref_fk not validated"
[ "$(rec post_done)" = true ] || fail "post_done: $(rec post_done)"
grep -qE '"public"."st": analyzed after its copy, 0 change\(s\) applied since \([0-9]+ rows copied\): no second ANALYZE after the swap' "$WORK/run.log" ||
  fail "st was analyzed again after the swap: $(grep -i analyze "$WORK/run.log")"
pass "post_steps hold names only ($(rec post_steps | tr -d ' ')); the foreign key was validated from them; no second ANALYZE of an unchanged table"

# A name that is not a name: escaped, so it names a missing table and runs nothing.
sql "UPDATE pgshift.migrations SET cutover = cutover || jsonb_build_object('post_done', false,
       'post_steps', jsonb_build_array(jsonb_build_object('step', 'analyze', 'schema', 'public',
         'table', 'st; CREATE TABLE pwned_name ()')))" || fail "hostile step"
"$PGSHIFT" run --plan "$WORK/plan.yaml" >"$WORK/run-name.log" 2>&1
rc=$?
[ "$rc" = 1 ] || fail "run with a hostile table name exited $rc: $(tail -3 "$WORK/run-name.log")"
[ -z "$(sql "SELECT to_regclass('pwned_name')")" ] || fail "the table name was executed as SQL"
grep -qF 'relation "public.st; CREATE TABLE pwned_name ()" does not exist' "$WORK/run-name.log" ||
  fail "no error naming the table: $(tail -3 "$WORK/run-name.log")"
sql "UPDATE pgshift.migrations SET cutover = cutover || jsonb_build_object('post_steps',
       jsonb_build_array(jsonb_build_object('step', 'sql', 'schema', 'public', 'table', 'st')))" || fail "unknown step"
"$PGSHIFT" run --plan "$WORK/plan.yaml" >"$WORK/run-kind.log" 2>&1
[ $? = 1 ] || fail "run with an unknown step did not exit 1"
grep -qF "step 1 after the cutover is not one pgshift knows" "$WORK/run-kind.log" || fail "unknown step: $(tail -3 "$WORK/run-kind.log")"
pass "a hostile name in post_steps is an identifier (relation not found, nothing run); an unknown step is refused"

# A record of an earlier version: SQL text, refused with instructions.
sql "UPDATE pgshift.migrations SET cutover = (cutover - 'post_steps' - 'old') || jsonb_build_object('post_done', false,
       'post', jsonb_build_array('ALTER TABLE public.st_ref VALIDATE CONSTRAINT st_ref_fk; CREATE TABLE pwned_old ()'))" ||
  fail "old record"
"$PGSHIFT" run --plan "$WORK/plan.yaml" >"$WORK/run-old.log" 2>&1
rc=$?
[ "$rc" = 1 ] || fail "run with an old-format record exited $rc: $(tail -3 "$WORK/run-old.log")"
[ -z "$(sql "SELECT to_regclass('pwned_old')")" ] || fail "stored SQL text was executed"
grep -q "cut over by an earlier pgshift version.*never runs stored SQL" "$WORK/run-old.log" || fail "no explanation: $(tail -5 "$WORK/run-old.log")"
grep -qF "recorded step (check it, then run it by hand if the foreign key is still NOT VALID): ALTER TABLE public.st_ref" "$WORK/run-old.log" ||
  fail "the recorded step is not shown: $(tail -5 "$WORK/run-old.log")"
grep -qF "recorded step (run by hand): ANALYZE \"public\".\"st\"" "$WORK/run-old.log" || fail "ANALYZE not shown"
grep -qF "UPDATE pgshift.migrations SET cutover = cutover || '{\"post_done\": true}' WHERE name = 'st'" "$WORK/run-old.log" ||
  fail "no way out shown: $(tail -3 "$WORK/run-old.log")"
pass "a record with SQL text from an earlier version is not run: exit 1, the steps and the way to finish are logged"

# cleanup works from an old-format record (old_tables as quoted names).
"$PGSHIFT" cleanup --plan "$WORK/plan.yaml" --confirm >"$WORK/cleanup.log" 2>&1 || fail "cleanup: $(tail -3 "$WORK/cleanup.log")"
grep -qF 'old table "public"."st_old": drop' "$WORK/cleanup.log" || fail "cleanup listing: $(cat "$WORK/cleanup.log")"
[ -z "$(sql "SELECT to_regclass('st_old')")" ] || fail "st_old remains"
pass "cleanup drops the old table from an earlier version's record"
finish
