# mirror.sh: the mirrored-table workload (sourced). Table `mig` is migrated;
# table `shadow` is never touched by pgshift; every pgbench transaction
# makes the same change to both, so at the end the target must equal shadow.

# mirror_setup ROWS: both tables with the same ROWS rows.
mirror_setup() {
  sqlf - <<SQL || fail "mirror setup"
CREATE FUNCTION blob(seed bigint) RETURNS text LANGUAGE sql IMMUTABLE AS
  \$\$ SELECT string_agg(md5(seed::text || ':' || g::text), '') FROM generate_series(1, 100) g \$\$;
CREATE TABLE mig (id bigint NOT NULL, created_at timestamptz NOT NULL, v int NOT NULL DEFAULT 0,
  note text, big text, PRIMARY KEY (id, created_at));
CREATE TABLE shadow (LIKE mig INCLUDING ALL);
INSERT INTO mig SELECT i, timestamptz '2025-01-01' + (i % 365) * interval '1 day', 0, 'n' || i,
  CASE WHEN i % 10 = 0 THEN blob(i) END FROM generate_series(1, $1) i;
INSERT INTO shadow SELECT * FROM mig;
ANALYZE mig;
SQL
  # One transaction = the same change to both tables. Ids of new rows come
  # from a random range; ON CONFLICT makes a rare collision a no-op on both.
  cat >"$WORK/mirror.sql" <<'PGB'
\set id random(1, 120000)
\set nid random(200000, 2000000000)
\set op random(1, 100)
BEGIN;
\if :op <= 30
INSERT INTO mig VALUES (:nid, timestamptz '2025-01-01' + (:nid % 400) * interval '1 day', 0, 'ins', blob(:nid)) ON CONFLICT DO NOTHING;
INSERT INTO shadow VALUES (:nid, timestamptz '2025-01-01' + (:nid % 400) * interval '1 day', 0, 'ins', blob(:nid)) ON CONFLICT DO NOTHING;
\elif :op <= 60
UPDATE mig SET v = v + 1, note = 'upd' WHERE id = :id;
UPDATE shadow SET v = v + 1, note = 'upd' WHERE id = :id;
\elif :op <= 70
UPDATE mig SET id = -id WHERE id = :id;
UPDATE shadow SET id = -id WHERE id = :id;
\elif :op <= 80
UPDATE mig SET created_at = created_at + interval '45 days' WHERE id = :id;
UPDATE shadow SET created_at = created_at + interval '45 days' WHERE id = :id;
\elif :op <= 88
DELETE FROM mig WHERE id = :id;
DELETE FROM shadow WHERE id = :id;
\else
UPDATE mig SET v = v + 1 WHERE id = :id;
UPDATE shadow SET v = v + 1 WHERE id = :id;
SAVEPOINT s;
UPDATE mig SET note = 'rolled back', v = -1 WHERE id = :id;
UPDATE shadow SET note = 'rolled back', v = -1 WHERE id = :id;
DELETE FROM mig WHERE id = :id + 1;
DELETE FROM shadow WHERE id = :id + 1;
ROLLBACK TO SAVEPOINT s;
\endif
COMMIT;
PGB
}

# mirror_load_start RATE LOG: the workload at RATE transactions/s until
# mirror_load_stop, not for a fixed time that must outlast what it covers
# (load_start: pgbench in 2 s runs); sets LOAD_PID.
mirror_load_start() {
  load_start "$WORK/mirror.stop" "$2" -n -f "$WORK/mirror.sql" -c 4 -j 2 -R "$1" --max-tries=20
}
# mirror_load_stop LOG: ends it (within 2 s); fails unless every run had 0
# failed transactions.
mirror_load_stop() { load_stop "$WORK/mirror.stop" "$1" || fail "pgbench: $LOAD_WHY"; }

# mirror_load SECONDS RATE LOG: pgbench for a fixed time in the background
# (a load that ends with its server, or a set length); sets LOAD_PID.
mirror_load() {
  "$PGSHIFT_TEST_CLIENTBIN/pgbench" -n -f "$WORK/mirror.sql" -c 4 -j 2 -T "$1" -R "$2" \
    --max-tries=20 >"$3" 2>&1 &
  LOAD_PID=$!
  RUN_PIDS+=("$LOAD_PID")
}

# mirror_plan NAME FILE: migrate mig into a monthly-partitioned mig_part.
# Batches stay open longer than the 1 s feedback interval, so a flush
# position that ran ahead of the durable commit would be caught by a kill.
mirror_plan() {
  cat >"$2" <<Y
name: $1
source: "dbname=${PGDATABASE}"
state_dir: $WORK
apply:
  batch_time: 1500ms
  idle_commit_time: 1500ms
  batch_changes: 1000000
copy:
  chunk_size: 4MB
tables:
  - source: public.mig
    target: public.mig_part
    partition: {by: range (created_at), interval: 1 month, default: true}
Y
}

# mirror_check_load LOG: pgbench finished with no failed transaction.
mirror_check_load() {
  wait "$LOAD_PID" || fail "pgbench failed: $(tail -n 5 "$1")"
  grep -qE "number of failed transactions: 0 " "$1" || fail "pgbench reported failures: $(grep failed "$1")"
}
