#!/usr/bin/env bash
# scripts/demo-inner.sh: the demo migration, run by scripts/demo.sh inside a
# throwaway cluster (PG* point at it).
set -euo pipefail
ROWS=${DEMO_ROWS:-300000}
W=$(mktemp -d /tmp/pgshift-demo.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$W"' EXIT
say() { printf '\n== %s\n' "$*"; }
q() { psql -XAtq -v ON_ERROR_STOP=1 -c "$1"; }

say "creating the demo schema: observations ($ROWS rows), a view, a serial stations table"
psql -Xq -v ON_ERROR_STOP=1 <<SQL
CREATE TABLE stations (id serial PRIMARY KEY, name text NOT NULL);
INSERT INTO stations (name) SELECT 'station ' || i FROM generate_series(1, 50) i;
CREATE TABLE observations (
  id bigserial, created_at timestamptz NOT NULL, station_id int NOT NULL,
  value numeric(12,3), tags text[], payload jsonb, PRIMARY KEY (id, created_at));
INSERT INTO observations (created_at, station_id, value, tags, payload)
SELECT now() - random() * interval '400 days', 1 + i % 50, random() * 1000,
       ARRAY['t' || i % 5], jsonb_build_object('seq', i, 'ok', i % 3 = 0)
  FROM generate_series(1, $ROWS) i;
CREATE VIEW observations_with_names AS
  SELECT o.*, s.name FROM observations o JOIN stations s ON s.id = o.station_id;
ANALYZE observations;
SQL
cat >"$W/load.sql" <<'PGB'
\set id random(1, 300000)
\set op random(1, 10)
BEGIN;
\if :op <= 5
INSERT INTO observations (created_at, station_id, value, tags, payload)
  VALUES (now(), 1 + :id % 50, random() * 1000, ARRAY['live'], '{"live": true}');
\elif :op <= 9
UPDATE observations SET value = value + 1 WHERE id = :id;
\else
DELETE FROM observations WHERE id = :id;
\endif
COMMIT;
PGB
cat >"$W/plan.yaml" <<Y
name: demo
source: "dbname=$PGDATABASE"
tables:
  - source: public.observations
    target: public.observations_partitioned
    partition: {by: range (created_at), interval: 1 month}
Y
say "write load: pgbench, 4 clients, ~500 transactions/s (insert / update / delete)"
"$PGSHIFT_TEST_PGBIN/pgbench" -n -f "$W/load.sql" -c 4 -j 2 -T 40 -R 500 >"$W/load.log" 2>&1 &
load=$!

say "pgshift plan (dry run: checks everything, changes nothing)"
"$PGSHIFT_BIN" plan --plan "$W/plan.yaml"

say "pgshift run (copy under a snapshot, then stream and apply while the load writes)"
t0=$(date +%s.%N)
"$PGSHIFT_BIN" run --plan "$W/plan.yaml" 2>&1 | sed 's/^/   run | /' &
until "$PGSHIFT_BIN" status --plan "$W/plan.yaml" 2>/dev/null | grep -q "ready"; do sleep 0.5; done
t_ready=$(date +%s.%N)
sleep 5
say "pgshift status while the load is still writing"
"$PGSHIFT_BIN" status --plan "$W/plan.yaml"
wait "$load"
L=$(q "SELECT pg_current_wal_insert_lsn()")
until [ "$(q "SELECT confirmed_flush_lsn >= '$L' FROM pg_replication_slots WHERE slot_name = 'pgshift_demo'")" = t ]; do sleep 0.2; done
t_caught=$(date +%s.%N)
pkill -TERM -f "pgshift run --plan $W/plan.yaml" || true
sleep 1

missing=$(q "SELECT count(*) FROM (SELECT * FROM observations EXCEPT ALL SELECT * FROM observations_partitioned) x")
extra=$(q "SELECT count(*) FROM (SELECT * FROM observations_partitioned EXCEPT ALL SELECT * FROM observations) x")
rows=$(q "SELECT count(*) FROM observations")
parts=$(q "SELECT count(*) FROM pg_inherits WHERE inhparent = 'observations_partitioned'::regclass")
tx=$(grep -oE "actually processed: [0-9]+" "$W/load.log" | grep -oE "[0-9]+$")
failed=$(grep -oE "number of failed transactions: [0-9]+" "$W/load.log" | grep -oE "[0-9]+$")
say "outcome"
echo "   source rows:            $rows (after $tx load transactions, $failed failed)"
echo "   target:                 observations_partitioned, $parts monthly partitions"
echo "   rows compared:          $missing missing, $extra extra  ($([ "$missing$extra" = 00 ] && echo EQUAL || echo DIFFERENT))"
echo "   copy + catch-up ready:  $(awk "BEGIN {printf \"%.1f\", $t_ready - $t0}") s after start"
echo "   last write applied:     $(awk "BEGIN {printf \"%.1f\", $t_caught - $t0}") s after start (load ran 40 s)"
echo "   cutover:                not part of this build yet (issue #4): the view and the serial"
echo "                           table still use observations; nothing was renamed"
echo "   clean-up:               the throwaway server and its data are removed now"
[ "$missing$extra" = 00 ]
