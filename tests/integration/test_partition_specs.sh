#!/usr/bin/env bash
# Partition specs beyond range (issue #13): pgshift creates list- and
# hash-partitioned targets. Three tables in one plan:
#  - list with the values given (a value, a list of values) and a DEFAULT
#  - hash by modulus
#  - list with one partition per value found in the source
# `plan` describes each; the run creates them (the partitions named after
# their first value in ASCII letters and digits, else v<n>; h0..hN), copies, streams changes that move rows
# between partitions, and the cutover swaps them in.
source "$(dirname "$0")/lib/common.sh"
sqlf - <<'SQL' || fail setup
CREATE TABLE la (id bigint PRIMARY KEY, region text NOT NULL, v text);
INSERT INTO la SELECT g, (ARRAY['eu', 'de', 'fr', 'us', 'jp'])[1 + g % 5], 'v' FROM generate_series(1, 3000) g;
CREATE TABLE hb (id bigint PRIMARY KEY, customer int NOT NULL, v text);
INSERT INTO hb SELECT g, g % 97, 'v' FROM generate_series(1, 3000) g;
CREATE TABLE lc (id bigint PRIMARY KEY, kind text NOT NULL, v text);
INSERT INTO lc SELECT g, (ARRAY['Sensor A', 'sensor-b', 'ĉ'])[1 + g % 3], 'v' FROM generate_series(1, 3000) g;
SQL
cat >"$WORK/plan.yaml" <<Y
$(plan_header ps)
state_dir: $WORK
tables:
  - source: la
    target: la_new
    partition: {by: list (region), values: [eu, [de, fr], us], default: true}
  - source: hb
    target: hb_new
    partition: {by: hash (customer), modulus: 4}
  - source: lc
    target: lc_new
    partition: {by: list (kind), default: true}
Y
"$PGSHIFT" plan --plan "$WORK/plan.yaml" >"$WORK/plan.out" 2>&1 || fail "plan failed: $(grep -E 'BLOCK|error' "$WORK/plan.out")"
grep -q 'target "public"."la_new" will be created: LIKE the source, PARTITION BY LIST (region), 3 partitions of the listed values, with a DEFAULT partition' "$WORK/plan.out" ||
  fail "plan does not describe the list target: $(grep la_new "$WORK/plan.out")"
grep -q 'PARTITION BY HASH (customer), 4 partitions (MODULUS 4)' "$WORK/plan.out" || fail "plan does not describe the hash target"
grep -q 'one partition per value of "kind" found: 3' "$WORK/plan.out" || fail "plan does not count the values found"
pass "plan describes list, hash and list-by-values-found targets"

# Without a DEFAULT partition, a value no partition lists is refused.
sed 's/values: \[eu, \[de, fr\], us\], default: true/values: [eu, [de, fr], us]/' "$WORK/plan.yaml" >"$WORK/plan_nodef.yaml"
"$PGSHIFT" plan --plan "$WORK/plan_nodef.yaml" >"$WORK/plan_nodef.out" 2>&1
grep -qE 'BLOCK +600 rows of "public"."la" have a value of "region" that no partition lists \(e.g. jp\)' "$WORK/plan_nodef.out" ||
  fail "a value without a partition is not refused: $(grep -E 'BLOCK|region' "$WORK/plan_nodef.out")"
pass "a value no partition lists is refused without a DEFAULT partition"

start_run "$WORK/plan.yaml" "$WORK/run.log"
wait_streaming "$WORK/run.log"
parts() { sql "SELECT string_agg(c.relname || '=' || pg_get_expr(c.relpartbound, c.oid), '; ' ORDER BY c.relname)
               FROM pg_inherits h JOIN pg_class c ON c.oid = h.inhrelid WHERE h.inhparent = '$1'::regclass"; }
[ "$(parts la_new)" = "la_new_de=FOR VALUES IN ('de', 'fr'); la_new_default=DEFAULT; la_new_eu=FOR VALUES IN ('eu'); la_new_us=FOR VALUES IN ('us')" ] ||
  fail "list partitions: $(parts la_new)"
[ "$(parts hb_new)" = "hb_new_h0=FOR VALUES WITH (modulus 4, remainder 0); hb_new_h1=FOR VALUES WITH (modulus 4, remainder 1); hb_new_h2=FOR VALUES WITH (modulus 4, remainder 2); hb_new_h3=FOR VALUES WITH (modulus 4, remainder 3)" ] ||
  fail "hash partitions: $(parts hb_new)"
[ "$(parts lc_new)" = "lc_new_default=DEFAULT; lc_new_sensor_a=FOR VALUES IN ('Sensor A'); lc_new_sensor_b=FOR VALUES IN ('sensor-b'); lc_new_v2=FOR VALUES IN ('ĉ')" ] ||
  fail "list-by-values-found partitions: $(parts lc_new)"
[ "$(sql "SELECT count(*) FROM la_new_default")" = 600 ] || fail "the DEFAULT partition does not hold the unlisted rows"
pass "the targets are created with the partitions asked for, named after their values"

sqlf - <<'SQL' || fail dml
UPDATE la SET region = 'us' WHERE id % 10 = 0;      -- eu/de/... -> us
UPDATE la SET region = 'zz' WHERE id % 17 = 0;      -- -> DEFAULT
INSERT INTO la SELECT g, 'fr', 'new' FROM generate_series(5001, 5100) g;
DELETE FROM la WHERE id % 23 = 0;
UPDATE hb SET customer = customer + 1000 WHERE id % 7 = 0;
INSERT INTO hb SELECT g, g, 'new' FROM generate_series(5001, 5100) g;
DELETE FROM hb WHERE id % 29 = 0;
UPDATE lc SET kind = 'sensor-b' WHERE kind = 'Sensor A' AND id % 2 = 0;
INSERT INTO lc VALUES (5001, 'brand new kind', 'to DEFAULT');
SQL
wait_applied pgshift_ps
same_rows la la_new
same_rows hb hb_new
same_rows lc lc_new
pass "changes that move rows between partitions apply"

"$PGSHIFT" cutover --plan "$WORK/plan.yaml" >"$WORK/cutover.log" 2>&1 || fail "cutover failed: $(tail -5 "$WORK/cutover.log")"
wait_for 120 "the run to exit after the cutover" gone "$RUN_PID"
wait "$RUN_PID" || fail "run exited $? after the cutover"
for t in la hb lc; do
  [ "$(sql "SELECT relkind FROM pg_class WHERE oid = '$t'::regclass")" = p ] || fail "$t is not the partitioned table after the cutover"
  same_rows "${t}_old" "$t"
done
pass "the cutover swaps the list and hash targets in"
finish
