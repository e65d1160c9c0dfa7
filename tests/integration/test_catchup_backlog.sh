#!/usr/bin/env bash
# Catching up from a backlog: while pgshift is stopped, a pgbench burst
# (insert + update + a delete in one of ten transactions, 4 clients) piles up
# in the slot; the resumed run applies it in back-to-back batches with one
# batch in flight, and the target must equal the source.
source "$(dirname "$0")/lib/common.sh"
sql "CREATE TABLE acc (id bigint PRIMARY KEY, n int NOT NULL, note text);
     CREATE TABLE acc_new (LIKE acc INCLUDING ALL);
     INSERT INTO acc SELECT i, 0, 'seed' FROM generate_series(1, 1000) i" || fail setup
# Small batches: commits follow each other inside one read of the socket,
# while the batch before is still in flight.
cat >"$WORK/plan.yaml" <<Y
name: backlog
source: "dbname=${PGDATABASE}"
state_dir: $WORK
apply: {batch_changes: 50}
tables: [{source: acc, target: acc_new}]
Y
cat >"$WORK/burst.sql" <<'PGB'
\set k random(1000000, 9000000000)
\set old random(1, 1000)
\set r random(0, 9)
BEGIN;
INSERT INTO acc VALUES (:k, 1, 'new') ON CONFLICT DO NOTHING;
UPDATE acc SET n = n + 1 WHERE id = :k;
UPDATE acc SET n = n + 1, note = 'touched' WHERE id = :old;
\if :r = 0
DELETE FROM acc WHERE id = :k;
\endif
COMMIT;
PGB
start_run "$WORK/plan.yaml" "$WORK/run1.log"
wait_streaming "$WORK/run1.log"
stop_run
"$PGSHIFT_TEST_CLIENTBIN/pgbench" -n -f "$WORK/burst.sql" -c 4 -j 2 -t 3000 >"$WORK/pgbench.log" 2>&1 || fail "pgbench"
start_run "$WORK/plan.yaml" "$WORK/run2.log"
wait_streaming "$WORK/run2.log"
t0=$(date +%s.%N)
wait_applied pgshift_backlog 120
same_rows acc acc_new
pass "12000 backlogged transactions applied in $(awk "BEGIN {printf \"%.1f\", $(date +%s.%N) - $t0}") s; target equals source"
stop_run
finish
