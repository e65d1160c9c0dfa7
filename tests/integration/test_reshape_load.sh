#!/usr/bin/env bash
# Issue #13 under a mirrored pgbench load, cut over with 0 failed
# transactions and tables equal to their shadows:
#  - a source that is partitioned already (by year) moved into a monthly
#    target pgshift creates; rows move between the source's partitions
#  - a foreign key between two tables of the plan (observations -> sites):
#    the created target lacks it, the swap adds it to the new sites
# Every pgbench transaction makes the same change to the migrated tables and
# to shadows pgshift never touches; the load runs before, through and after
# the swap (prepared statements). Serialization failures and deadlocks are
# retried (--max-tries): this workload alone, with no pgshift running, also
# fails a transaction now and then (measured: 1 of about 45,000 at 1500
# tps on 16; concurrent moves of one row between partitions); any other
# error is a failure.
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/mirror.sh"
sqlf - <<'SQL' || fail setup
CREATE TABLE sites (id bigint PRIMARY KEY, name text);
CREATE TABLE obs (id bigint NOT NULL, at date NOT NULL, site bigint NOT NULL
  CONSTRAINT obs_site_fk REFERENCES sites (id), v int NOT NULL DEFAULT 0, note text,
  PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE obs_2024 PARTITION OF obs FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE obs_2025 PARTITION OF obs FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE obs_later PARTITION OF obs DEFAULT;
INSERT INTO sites SELECT g, 's' || g FROM generate_series(1, 500) g;
INSERT INTO obs SELECT g, date '2024-01-01' + g % 700, 1 + g % 500, 0, 'n' FROM generate_series(1, 20000) g;
CREATE TABLE sites_shadow (LIKE sites INCLUDING ALL);
CREATE TABLE obs_shadow (id bigint NOT NULL, at date NOT NULL, site bigint NOT NULL, v int NOT NULL DEFAULT 0,
  note text, PRIMARY KEY (id, at));
INSERT INTO sites_shadow SELECT * FROM sites;
INSERT INTO obs_shadow SELECT * FROM obs;
CREATE TABLE sites_new (LIKE sites INCLUDING ALL);
ANALYZE sites, obs;
SQL
cat >"$WORK/load.sql" <<'PGB'
\set id random(1, 20000)
\set nid random(100000, 2000000000)
\set sid random(1000, 2000000000)
\set op random(1, 100)
BEGIN;
\if :op <= 30
INSERT INTO sites VALUES (:sid, 'new') ON CONFLICT DO NOTHING;
INSERT INTO sites_shadow VALUES (:sid, 'new') ON CONFLICT DO NOTHING;
INSERT INTO obs VALUES (:nid, date '2024-01-01' + :nid % 900, :sid, 0, 'ins') ON CONFLICT DO NOTHING;
INSERT INTO obs_shadow VALUES (:nid, date '2024-01-01' + :nid % 900, :sid, 0, 'ins') ON CONFLICT DO NOTHING;
\elif :op <= 65
UPDATE obs SET v = v + 1, note = 'upd' WHERE id = :id;
UPDATE obs_shadow SET v = v + 1, note = 'upd' WHERE id = :id;
\elif :op <= 80
UPDATE obs SET at = at + 300 WHERE id = :id;
UPDATE obs_shadow SET at = at + 300 WHERE id = :id;
\elif :op <= 90
UPDATE sites SET name = 'renamed' WHERE id = :id % 500 + 1;
UPDATE sites_shadow SET name = 'renamed' WHERE id = :id % 500 + 1;
\else
DELETE FROM obs WHERE id = :id;
DELETE FROM obs_shadow WHERE id = :id;
\endif
COMMIT;
PGB
cat >"$WORK/plan.yaml" <<Y
$(plan_header reshape)
state_dir: $WORK
tables:
  - {source: obs, target: obs_monthly, partition: {by: range (at), interval: 1 month, default: true}}
  - {source: sites, target: sites_new}
Y
"$PGSHIFT" plan --plan "$WORK/plan.yaml" >"$WORK/plan.out" 2>&1 || fail "plan refused: $(grep -E 'BLOCK|refuse' "$WORK/plan.out")"
grep -q 'would refuse' "$WORK/plan.out" && fail "the cutover would refuse: $(grep refuse "$WORK/plan.out")"

"$PGSHIFT_TEST_CLIENTBIN/pgbench" -n -M prepared -f "$WORK/load.sql" -c 4 -j 2 -T 35 -R 200 --max-tries=20 \
  >"$WORK/pgbench.log" 2>&1 &
LOAD_PID=$!
RUN_PIDS+=("$LOAD_PID")
start_run "$WORK/plan.yaml" "$WORK/run.log"
wait_streaming "$WORK/run.log"
wait_applied pgshift_reshape 120
wait_for 30 "a stats sample: live phase ready" live_phase_is "$WORK/plan.yaml" ready
"$PGSHIFT" cutover --plan "$WORK/plan.yaml" >"$WORK/cutover.log" 2>&1 || fail "cutover: $(cat "$WORK/cutover.log")"
wait_for 120 "the run to exit after the cutover" gone "$RUN_PID"
wait "$RUN_PID" || fail "run exited $? after the cutover"
pass "cut over under load"
mirror_check_load "$WORK/pgbench.log"
[ "$(sql "SELECT pg_get_partkeydef('obs'::regclass)")" = "RANGE (at)" ] || fail "obs is not the new table"
[ "$(sql "SELECT count(*) FROM pg_inherits WHERE inhparent = 'obs'::regclass")" -gt 20 ] || fail "obs is not the monthly table"
[ "$(sql "SELECT confrelid::regclass || ':' || convalidated FROM pg_constraint WHERE conrelid = 'obs'::regclass AND contype = 'f' AND conparentid = 0")" = sites:true ] ||
  fail "the new obs' key: $(sql "SELECT conname, confrelid::regclass, convalidated FROM pg_constraint WHERE conrelid = 'obs'::regclass AND contype = 'f'")"
same_rows obs obs_shadow
same_rows sites sites_shadow
pass "pgbench: 0 failed transactions through the swap; new tables equal their shadows; the key points at the new sites"
finish
