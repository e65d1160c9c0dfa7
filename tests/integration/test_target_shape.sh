#!/usr/bin/env bash
# What a table carries besides its columns (issue #13): check constraints,
# NOT NULL, defaults, comments, statistics targets, storage parameters and
# the replica identity.
#  - a target pgshift creates has them all (LIKE copies some; the rest are
#    set from the source's catalog, storage parameters on each partition)
#  - for a target the operator made, `plan` lists each one that differs and
#    says what it means (a check only the target has can stop the run)
source "$(dirname "$0")/lib/common.sh"
sqlf - <<'SQL' || fail setup
CREATE TABLE shp (id int PRIMARY KEY, v text DEFAULT 'x' CONSTRAINT shp_v_len CHECK (length(v) < 100),
  n int, created date NOT NULL) WITH (fillfactor = 70);
ALTER TABLE shp ALTER COLUMN n SET STATISTICS 500;
ALTER TABLE shp REPLICA IDENTITY FULL;
COMMENT ON TABLE shp IS 'the shape table';
COMMENT ON COLUMN shp.v IS 'a value';
INSERT INTO shp SELECT g, 'v', g, date '2025-01-01' + g % 60 FROM generate_series(1, 500) g;
CREATE TABLE shp_op (id int PRIMARY KEY, v text DEFAULT 'y', n int CONSTRAINT shp_op_n_pos CHECK (n > 0),
  created date NOT NULL);
SQL
cat >"$WORK/plan.yaml" <<Y
$(plan_header shape)
state_dir: $WORK
tables: [{source: shp, target: shp_new, partition: {by: range (created), interval: 1 month}}]
Y
start_run "$WORK/plan.yaml" "$WORK/run.log"
wait_streaming "$WORK/run.log"
leaves="SELECT inhrelid FROM pg_inherits WHERE inhparent = 'shp_new'::regclass"
[ "$(sql "SELECT count(*) FROM pg_class WHERE oid IN ($leaves) AND reloptions = '{fillfactor=70}'")" = \
  "$(sql "SELECT count(*) FROM ($leaves) l")" ] || fail "storage parameters: $(sql "SELECT relname, reloptions FROM pg_class WHERE oid IN ($leaves)")"
[ "$(sql "SELECT count(*) FROM pg_class WHERE (oid IN ($leaves) OR oid = 'shp_new'::regclass) AND relreplident <> 'f'")" = 0 ] ||
  fail "replica identity is not FULL everywhere"
[ "$(sql "SELECT attstattarget FROM pg_attribute WHERE attrelid = 'shp_new'::regclass AND attname = 'n'")" = 500 ] ||
  fail "statistics target not set"
[ "$(sql "SELECT obj_description('shp_new'::regclass, 'pg_class')")" = "the shape table" ] || fail "table comment"
[ "$(sql "SELECT col_description('shp_new'::regclass, 2)")" = "a value" ] || fail "column comment"
[ "$(sql "SELECT count(*) FROM pg_constraint WHERE conrelid = 'shp_new'::regclass AND conname = 'shp_v_len'")" = 1 ] || fail "check constraint"
[ "$(sql "SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef WHERE adrelid = 'shp_new'::regclass")" = "'x'::text" ] || fail "default"
same_rows shp shp_new
pass "a created target carries checks, defaults, comments, statistics targets, storage parameters and replica identity"
stop_run

cat >"$WORK/plan2.yaml" <<Y
$(plan_header shape2)
state_dir: $WORK
tables: [{source: shp, target: shp_op}]
Y
"$PGSHIFT" plan --plan "$WORK/plan2.yaml" >"$WORK/plan2.out" 2>&1 || fail "plan 2: $(grep BLOCK "$WORK/plan2.out")"
expect_line() { grep -qF -- "$1" "$WORK/plan2.out" || fail "plan lacks: $1
$(grep -E 'note|warn' "$WORK/plan2.out")"; }
expect_line 'note   check constraint shp_v_len (CHECK ((length(v) < 100))) of the source is not on target "public"."shp_op"'
expect_line 'warn   target "public"."shp_op" has check constraint shp_op_n_pos (CHECK ((n > 0))), which the source lacks: a source row that breaks it stops the copy or the apply'
expect_line "note   default of column \"v\": the source has 'x'::text, target \"public\".\"shp_op\" has 'y'::text; the new table keeps the target's"
expect_line 'note   comment: the source has the shape table, target "public"."shp_op" has none'
expect_line 'note   statistics target of column "n": the source has 500'
expect_line 'note   storage parameters: the source has fillfactor=70'
expect_line 'note   replica identity: the source has FULL'
pass "plan lists what an operator-made target does not carry, and a check only it has"
finish
