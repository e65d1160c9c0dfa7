#!/usr/bin/env bash
# SIGKILL at each step of the cutover (PGSHIFT_TEST_CRASH_AT), under a write
# load: after the kill the world is either the old one (source still named
# <table>, nothing renamed, migration resumable) or the new one (swap
# committed, phase done); never half renamed. Rerunning `run` finds out which
# and finishes; the new table then equals an untouched shadow and the load
# saw no failed transaction.
source "$(dirname "$0")/lib/common.sh"

sql "CREATE FUNCTION pad(i bigint) RETURNS text LANGUAGE sql IMMUTABLE AS \$\$ SELECT repeat(md5(i::text), 8) \$\$" || fail setup

for step in lock fence applied swap commit finish; do
  t=c_$step
  sqlf - <<SQL || fail "setup $t"
CREATE TABLE $t (id bigserial, created_at timestamptz NOT NULL, v int NOT NULL DEFAULT 0, pad text,
  PRIMARY KEY (id, created_at));
CREATE TABLE ${t}_shadow (id bigint, created_at timestamptz, v int, pad text);
CREATE VIEW ${t}_v AS SELECT id, v FROM $t;
INSERT INTO $t (created_at, pad) SELECT timestamptz '2025-01-01' + (i % 200) * interval '1 day', pad(i)
  FROM generate_series(1, 5000) i;
INSERT INTO ${t}_shadow SELECT * FROM $t;
SQL
  # Updates and deletes touch only the 5000 rows that exist before the load,
  # never a row the load inserts: in READ COMMITTED, an UPDATE or DELETE of
  # a row whose inserting transaction commits between this transaction's
  # two statements misses it in $t and finds it in the shadow, and the two
  # differ in the source itself (it did, 3 times in 5 full-suite runs on 14,
  # which looked like a lost change).
  cat >"$WORK/$t.sql" <<PGB
\set id random(1, 5000)
\set op random(1, 10)
BEGIN;
\if :op <= 4
INSERT INTO $t (created_at, pad) VALUES (timestamptz '2025-01-01' + (:id % 200) * interval '1 day', pad(:id)) RETURNING id AS nid \gset
INSERT INTO ${t}_shadow VALUES (:nid, timestamptz '2025-01-01' + (:id % 200) * interval '1 day', 0, pad(:id));
\elif :op <= 8
UPDATE $t SET v = v + 1 WHERE id = :id;
UPDATE ${t}_shadow SET v = v + 1 WHERE id = :id;
\else
DELETE FROM $t WHERE id = :id;
DELETE FROM ${t}_shadow WHERE id = :id;
\endif
COMMIT;
PGB
  cat >"$WORK/$t.yaml" <<Y
name: $t
source: "dbname=${PGDATABASE}"
state_dir: $WORK
apply: {batch_time: 50ms}
tables:
  - source: public.$t
    target: public.${t}_part
    partition: {by: range (created_at), interval: 1 month, default: true}
Y
  # The load runs until the rerun is done.
  load_start "$WORK/$t.stop" "$WORK/$t.pgbench" -n -f "$WORK/$t.sql" -c 3 -j 1 -R 150
  # The migration starts under load: its 3 clients are connected.
  wait_for 30 "$step: pgbench's 3 clients to connect" sql_is 3 \
    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgbench' AND backend_type = 'client backend'"
  PGSHIFT_TEST_CRASH_AT=$step "$PGSHIFT" run --plan "$WORK/$t.yaml" --auto-cutover >"$WORK/$t-1.log" 2>&1
  rc=$?
  [ "$rc" = 137 ] || fail "$step: run exited $rc, expected SIGKILL (137): $(tail -n 5 "$WORK/$t-1.log")"
  grep -q "PGSHIFT_TEST_CRASH_AT=$step" "$WORK/$t-1.log" || fail "$step: did not reach the step"
  kind=$(sql "SELECT relkind FROM pg_class WHERE oid = '$t'::regclass")
  old=$(sql "SELECT to_regclass('${t}_old') IS NOT NULL")
  phase=$(sql "SELECT phase FROM pgshift.migrations WHERE name = '$t'")
  if [ "$step" = finish ]; then
    [ "$kind/$old/$phase" = "p/t/done" ] || fail "$step: expected the new world, got relkind $kind, old table $old, phase $phase"
    [ "$(sql "SELECT cutover->>'post_done' FROM pgshift.migrations WHERE name = '$t'")" = false ] || fail "$step: post_done"
  else
    [ "$kind/$old" = "r/f" ] && [ "$phase" != done ] || fail "$step: expected the old world, got relkind $kind, old table $old, phase $phase"
    [ -n "$(sql "SELECT to_regclass('${t}_part')")" ] || fail "$step: the target lost its name"
  fi
  "$PGSHIFT" run --plan "$WORK/$t.yaml" --auto-cutover >"$WORK/$t-2.log" 2>&1 || fail "$step: the rerun failed: $(tail -n 5 "$WORK/$t-2.log")"
  [ "$(sql "SELECT relkind FROM pg_class WHERE oid = '$t'::regclass")/$(sql "SELECT relkind FROM pg_class WHERE oid = '${t}_old'::regclass")" = "p/r" ] ||
    fail "$step: not swapped after the rerun"
  load_stop "$WORK/$t.stop" "$WORK/$t.pgbench" || fail "$step: pgbench: $LOAD_WHY"
  same_rows "$t" "${t}_shadow"
  [ "$(sql "SELECT count(*) FROM ${t}_v")" = "$(sql "SELECT count(*) FROM $t")" ] || fail "$step: view"
  [ "$(sql "SELECT cutover->>'post_done' FROM pgshift.migrations WHERE name = '$t'")" = true ] || fail "$step: steps after the swap not done"
  pass "SIGKILL at '$step': $( [ $step = finish ] && echo new || echo old) world, rerun finished; $(sql "SELECT count(*) FROM $t") rows equal the shadow, 0 failed load transactions"
done
finish
