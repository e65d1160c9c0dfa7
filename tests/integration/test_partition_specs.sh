#!/usr/bin/env bash
# Partition specs beyond range (issue #13): pgshift creates list- and
# hash-partitioned targets. Three tables in one plan:
#  - list with the values given (a value, a list of values) and a DEFAULT
#  - hash by modulus
#  - list with one partition per value found in the source
#  - range by month, each month sub-partitioned by hash (one level deep)
# `plan` describes each; the run creates them (the partitions named after
# their first value in ASCII letters and digits, else v<n>; h0..hN), copies, streams changes that move rows
# between partitions, and the cutover swaps them in.
source "$(dirname "$0")/lib/common.sh"
sqlf - <<'SQL' || fail setup
CREATE TABLE la (id bigint PRIMARY KEY, region text NOT NULL, v text);
INSERT INTO la SELECT g, (ARRAY['eu', 'de', 'fr', 'us', 'jp'])[1 + g % 5], 'v' FROM generate_series(1, 3000) g;
CREATE TABLE hb (id bigint PRIMARY KEY, customer int NOT NULL, v text, code text UNIQUE);
INSERT INTO hb SELECT g, g % 97, 'v', 'c' || g FROM generate_series(1, 3000) g;
CREATE TABLE lc (id bigint PRIMARY KEY, kind text NOT NULL, v text, during int4range,
  EXCLUDE USING gist (during WITH &&));
INSERT INTO lc SELECT g, (ARRAY['Sensor A', 'sensor-b', 'ĉ'])[1 + g % 3], 'v', int4range(g * 10, g * 10 + 5) FROM generate_series(1, 3000) g;
CREATE TABLE sp (id bigint PRIMARY KEY, at date NOT NULL, site int NOT NULL, v text);
CREATE INDEX ON sp (site, at);
INSERT INTO sp SELECT g, date '2025-01-01' + g % 90, g % 11, 'v' FROM generate_series(1, 3000) g;
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
  - source: sp
    target: sp_new
    partition:
      by: range (at)
      interval: 1 month
      ahead: 1
      subpartition: {by: hash (site), modulus: 3}
Y
"$PGSHIFT" plan --plan "$WORK/plan.yaml" >"$WORK/plan.out" 2>&1 || fail "plan failed: $(grep -E 'BLOCK|error' "$WORK/plan.out")"
grep -q 'target "public"."la_new" will be created: LIKE the source, PARTITION BY LIST (region), 3 partitions of the listed values, with a DEFAULT partition' "$WORK/plan.out" ||
  fail "plan does not describe the list target: $(grep la_new "$WORK/plan.out")"
grep -q 'PARTITION BY HASH (customer), 4 partitions (MODULUS 4)' "$WORK/plan.out" || fail "plan does not describe the hash target"
grep -q 'one partition per value of "kind" found: 3' "$WORK/plan.out" || fail "plan does not count the values found"
grep -qF 'target "public"."sp_new" will be created: LIKE the source, PARTITION BY RANGE (at), one partition per 1 month; each partition in turn PARTITION BY HASH (site), 3 partitions (MODULUS 3)' "$WORK/plan.out" ||
  fail "plan does not describe the sub-partitioned target: $(grep sp_new "$WORK/plan.out")"
grep -qE 'warn +the last partition of "public"."sp_new" ended at 2025-05-01, [0-9]+ days ago: a row written now has no partition' "$WORK/plan.out" ||
  fail "plan does not say how far the created range partitions reach: $(grep -E 'sp_new' "$WORK/plan.out")"
pass "plan describes list, hash, list-by-values-found and sub-partitioned targets, and how far the range partitions reach"
# The fate of each key and index on a created target.
grep -qE 'warn +unique constraint hb_code_key on \(code\) becomes unique on \(code, customer\) on the target: after the cutover \(code\) alone is no longer unique' "$WORK/plan.out" ||
  fail "plan does not warn that a unique key loses its meaning: $(grep -E 'hb_code|unique' "$WORK/plan.out")"
grep -qE 'warn +index lc_during_excl of "public"."lc" is not built on the target: pgshift does not build exclusion constraints' "$WORK/plan.out" ||
  fail "plan does not say an exclusion constraint is not built: $(grep -E 'excl' "$WORK/plan.out")"
grep -qE 'note +primary key \(id\) becomes \(id, at, site\) on the target' "$WORK/plan.out" ||
  fail "plan does not give the sub-partitioned target's key: $(grep -E 'primary key' "$WORK/plan.out")"
pass "plan gives the fate of each key and index on the created targets"

# Sub-partitions go one level deep.
sed 's/subpartition: {by: hash (site), modulus: 3}/subpartition: {by: hash (site), modulus: 3, subpartition: {by: hash (id), modulus: 2}}/' "$WORK/plan.yaml" >"$WORK/plan_deep.yaml"
"$PGSHIFT" plan --plan "$WORK/plan_deep.yaml" >"$WORK/plan_deep.out" 2>&1 && fail "a second level of sub-partitions was accepted"
grep -q 'partition.subpartition.subpartition: partitions go one level deep at most' "$WORK/plan_deep.out" ||
  fail "no clear refusal of a second level: $(cat "$WORK/plan_deep.out")"

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
# 2025-01 .. 2025-03 and one ahead, each in three hash partitions.
[ "$(parts sp_new)" = "sp_new_p202501=FOR VALUES FROM ('2025-01-01') TO ('2025-02-01'); sp_new_p202502=FOR VALUES FROM ('2025-02-01') TO ('2025-03-01'); sp_new_p202503=FOR VALUES FROM ('2025-03-01') TO ('2025-04-01'); sp_new_p202504=FOR VALUES FROM ('2025-04-01') TO ('2025-05-01')" ] ||
  fail "range partitions of the sub-partitioned target: $(parts sp_new)"
[ "$(parts sp_new_p202502)" = "sp_new_p202502_h0=FOR VALUES WITH (modulus 3, remainder 0); sp_new_p202502_h1=FOR VALUES WITH (modulus 3, remainder 1); sp_new_p202502_h2=FOR VALUES WITH (modulus 3, remainder 2)" ] ||
  fail "sub-partitions: $(parts sp_new_p202502)"
[ "$(sql "SELECT count(*) FILTER (WHERE isleaf AND level = 2) || '/' || count(*) FILTER (WHERE isleaf) FROM pg_partition_tree('sp_new')")" = 12/12 ] ||
  fail "leaves of sp_new: $(sql "SELECT string_agg(relid || ':' || level, ', ') FROM pg_partition_tree('sp_new') WHERE isleaf")"
[ "$(sql "SELECT count(*) FROM sp_new_p202502_h1")" -gt 0 ] || fail "a sub-partition holds no rows"
[ "$(sql "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'sp_new'::regclass AND contype = 'p'")" = "PRIMARY KEY (id, at, site)" ] ||
  fail "the sub-partitioned target's key: $(sql "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'sp_new'::regclass AND contype = 'p'")"
[ "$(sql "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid WHERE c.relname LIKE 'sp_new_p%_h%'")" = 24 ] ||
  fail "the leaves lack their indexes: $(sql "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid WHERE c.relname LIKE 'sp_new_p%_h%'")"
[ "$(sql "SELECT count(*) FROM pg_class WHERE relname LIKE 'sp_new%' AND relpersistence <> 'p'")" = 0 ] || fail "a partition of sp_new is still UNLOGGED"
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
UPDATE sp SET at = at + 20 WHERE id % 10 = 0;       -- to the next month, some
UPDATE sp SET site = site + 1 WHERE id % 7 = 0;     -- to another hash partition
INSERT INTO sp SELECT g, date '2025-04-15', g % 11, 'new' FROM generate_series(5001, 5100) g;
DELETE FROM sp WHERE id % 23 = 0;
SQL
wait_applied pgshift_ps
same_rows la la_new
same_rows hb hb_new
same_rows lc lc_new
same_rows sp sp_new
pass "changes that move rows between partitions (and sub-partitions) apply"

"$PGSHIFT" cutover --plan "$WORK/plan.yaml" >"$WORK/cutover.log" 2>&1 || fail "cutover failed: $(tail -5 "$WORK/cutover.log")"
wait_for 120 "the run to exit after the cutover" gone "$RUN_PID"
wait "$RUN_PID" || fail "run exited $? after the cutover"
for t in la hb lc sp; do
  [ "$(sql "SELECT relkind FROM pg_class WHERE oid = '$t'::regclass")" = p ] || fail "$t is not the partitioned table after the cutover"
  same_rows "${t}_old" "$t"
done
pass "the cutover swaps the list, hash and sub-partitioned targets in"
finish
