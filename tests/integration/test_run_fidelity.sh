#!/usr/bin/env bash
# Data fidelity through copy + streaming: every type and case of
# docs/pitfalls.md "Data fidelity" — NULLs everywhere, unchanged TOAST,
# replica identity DEFAULT / FULL / USING INDEX, key changes, partition
# moves, TRUNCATE (RESTART IDENTITY, CASCADE), savepoints rolled back, enum,
# domain, arrays, jsonb, numeric, bytea, timestamptz, logical messages,
# stored generated columns (never sent: the target computes them, in a
# target made by the operator and in one pgshift creates).
source "$(dirname "$0")/lib/common.sh"

sqlf - <<'SQL' || fail "setup"
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN posint AS integer CHECK (VALUE > 0);
CREATE TABLE types (id int PRIMARY KEY, e mood, d posint, arr int[], tarr text[], j jsonb,
  n numeric(20,6), b bytea, ts timestamptz, big text, note text,
  g int GENERATED ALWAYS AS (d * 2) STORED);
CREATE TABLE types_new (LIKE types INCLUDING ALL);
CREATE TABLE obs (id bigserial, created_at timestamptz NOT NULL, v text, big text,
  vlen int GENERATED ALWAYS AS (length(v)) STORED, PRIMARY KEY (id, created_at));
CREATE INDEX obs_v ON obs (v) WHERE v IS NOT NULL;
CREATE INDEX obs_lower ON obs (lower(v));
CREATE UNIQUE INDEX obs_id_v ON obs (id, v);
CREATE TABLE rfull (id int PRIMARY KEY, v text, big text);
ALTER TABLE rfull REPLICA IDENTITY FULL;
CREATE TABLE rfull_new (LIKE rfull INCLUDING ALL);
CREATE TABLE ridx (code text NOT NULL, v text, big text);
CREATE UNIQUE INDEX ridx_code ON ridx (code);
ALTER TABLE ridx REPLICA IDENTITY USING INDEX ridx_code;
CREATE TABLE ridx_new (code text NOT NULL, v text, big text);
CREATE UNIQUE INDEX ON ridx_new (code);
CREATE TABLE trunc (id serial PRIMARY KEY, v text);
CREATE TABLE trunc_child (id int REFERENCES trunc (id));
CREATE TABLE trunc_new (LIKE trunc INCLUDING ALL);
CREATE TABLE uniq (id int PRIMARY KEY, email text NOT NULL UNIQUE);
CREATE TABLE uniq_new (LIKE uniq INCLUDING ALL);
INSERT INTO uniq VALUES (1, 'a@x'), (2, 'b@x');
CREATE FUNCTION rnd_hex(kb int) RETURNS text LANGUAGE sql AS
  $$ SELECT string_agg(md5(random()::text), '') FROM generate_series(1, kb * 32) $$;
INSERT INTO types VALUES
  (1, 'ok', 5, '{1,2,NULL}', '{"a b","c\"d",NULL}', '{"k": [1, 2.5, null, "x"]}', 12345.678901,
   '\x00ff10', '2024-02-29 23:59:59.123456+05', rnd_hex(10), 'first'),
  (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
INSERT INTO obs (created_at, v, big)
  SELECT timestamptz '2024-01-15' + (i || ' days')::interval, 'v' || i, CASE WHEN i % 50 = 0 THEN rnd_hex(4) END
  FROM generate_series(1, 300) i;
INSERT INTO rfull SELECT i, 'v' || i, CASE WHEN i = 1 THEN rnd_hex(10) END FROM generate_series(1, 20) i;
INSERT INTO ridx SELECT 'c' || i, 'v' || i, CASE WHEN i = 1 THEN rnd_hex(10) END FROM generate_series(1, 20) i;
INSERT INTO trunc (v) SELECT 'x' || i FROM generate_series(1, 10) i;
SQL

cat > "$WORK/plan.yaml" <<Y
$(plan_header fidelity)
state_dir: $WORK
tables:
  - {source: types, target: types_new}
  - source: obs
    target: obs_part
    partition: {by: range (created_at), interval: 1 month, default: true}
  - {source: rfull, target: rfull_new}
  - {source: ridx, target: ridx_new}
  - {source: trunc, target: trunc_new}
  - {source: uniq, target: uniq_new}
Y
start_run "$WORK/plan.yaml" "$WORK/run.log"
wait_streaming "$WORK/run.log"
same_rows types types_new
same_rows obs obs_part
pass "snapshot copy equals the source"
n=$(sql "SELECT count(*) FROM pg_partition_tree('obs_part') p JOIN pg_class c ON c.oid = p.relid WHERE c.relpersistence <> 'p'")
[ "$n" = 0 ] || fail "$n partitions of the created target are still UNLOGGED after the copy"
pass "the created target's partitions are LOGGED once the copy is done"
# The indexes are built on the partitions (in parallel), then attached by
# the partitioned table's own: each partition has exactly one index per
# index of the partitioned table, each attached to it.
idx=$(sql "SELECT count(*) FROM pg_index WHERE indrelid = 'obs_part'::regclass")
[ "$idx" = 4 ] || fail "obs_part has $idx indexes, expected 4 (key, obs_v, obs_lower, (id, v, created_at) unique)"
bad=$(sql "SELECT string_agg(format('%s: %s indexes, %s attached', c.relname, n.total, n.attached), '; ')
  FROM pg_partition_tree('obs_part') p JOIN pg_class c ON c.oid = p.relid,
  LATERAL (SELECT count(*) AS total, count(h.inhparent) AS attached FROM pg_index i
           LEFT JOIN pg_inherits h ON h.inhrelid = i.indexrelid WHERE i.indrelid = c.oid) n
  WHERE c.relkind = 'r' AND (n.total <> $idx OR n.attached <> $idx)")
[ -z "$bad" ] || fail "partition indexes not one to one with the partitioned table's: $bad"
pass "the created target's indexes: built per partition, attached, none twice"

sqlf - <<'SQL' || fail "workload"
-- NULLs in every position, one column set at a time
INSERT INTO types (id, e) VALUES (10, 'sad');
INSERT INTO types (id, d, arr) VALUES (11, 7, '{}');
INSERT INTO types (id, tarr, j, n) VALUES (12, '{}', 'null', 'NaN');
INSERT INTO types (id, b, ts, note) VALUES (13, '\x', 'infinity', '');
INSERT INTO types (id, big) VALUES (14, rnd_hex(12));
-- update leaving the out-of-line value untouched ('u' in the stream)
UPDATE types SET note = 'touched', n = -0.000001 WHERE id = 1;
UPDATE types SET e = 'happy' WHERE id = 14;
-- updates setting values to NULL and back
UPDATE types SET e = NULL, j = NULL WHERE id = 1;
UPDATE types SET e = 'ok', j = '[1]' WHERE id = 2;
-- key change ('K' old key)
UPDATE types SET id = 100 WHERE id = 10;
UPDATE types SET id = 101, note = 'moved key' WHERE id = 14;
DELETE FROM types WHERE id = 12;
-- partition move (and a row that only the DEFAULT partition takes)
UPDATE obs SET created_at = created_at + interval '40 days' WHERE id % 7 = 0;
UPDATE obs SET v = 'toast kept' WHERE id = 50;
INSERT INTO obs (created_at, v) VALUES ('1999-01-01', 'ancient');
UPDATE obs SET id = id + 10000 WHERE id = 3;
DELETE FROM obs WHERE id % 11 = 0;
-- replica identity FULL ('O' old row) and USING INDEX
UPDATE rfull SET v = 'full upd' WHERE id <= 5;
UPDATE rfull SET id = 1000 WHERE id = 6;
UPDATE rfull SET v = 'toast untouched' WHERE id = 1;
DELETE FROM rfull WHERE id = 7;
UPDATE ridx SET v = 'idx upd' WHERE code IN ('c2', 'c3');
UPDATE ridx SET code = 'c-renamed' WHERE code = 'c4';
UPDATE ridx SET v = 'toast untouched' WHERE code = 'c1';
DELETE FROM ridx WHERE code = 'c5';
-- savepoints rolled back inside a transaction
BEGIN;
INSERT INTO types (id, note) VALUES (200, 'kept');
SAVEPOINT s1;
INSERT INTO types (id, note) VALUES (201, 'rolled back');
UPDATE types SET note = 'rolled back' WHERE id = 1;
DELETE FROM types WHERE id = 2;
ROLLBACK TO s1;
INSERT INTO types (id, note) VALUES (202, 'kept too');
SELECT pg_logical_emit_message(true, 'app', 'transactional');
COMMIT;
SELECT pg_logical_emit_message(false, 'app', 'not transactional');
-- a rolled back transaction leaves nothing
BEGIN; INSERT INTO types (id) VALUES (300); ROLLBACK;
-- a swap through a secondary unique key: only correct when applied in order
BEGIN;
UPDATE uniq SET email = 'tmp@x' WHERE id = 1;
UPDATE uniq SET email = 'a@x' WHERE id = 2;
UPDATE uniq SET email = 'b@x' WHERE id = 1;
COMMIT;
-- TRUNCATE with CASCADE and RESTART IDENTITY, then new rows
TRUNCATE trunc RESTART IDENTITY CASCADE;
INSERT INTO trunc (v) VALUES ('after truncate');
SQL
wait_applied pgshift_fidelity
same_rows types types_new
pass "NULLs, enum, domain, arrays, jsonb, numeric, bytea, timestamptz, key changes, savepoints"
[ "$(sql "SELECT md5(big) FROM types WHERE id = 1")" = "$(sql "SELECT md5(big) FROM types_new WHERE id = 1")" ] &&
  [ "$(sql "SELECT length(big) FROM types_new WHERE id = 101")" = 12288 ] || fail "unchanged TOAST value lost"
pass "unchanged TOAST values are kept"
same_rows obs obs_part
[ "$(sql "SELECT tableoid::regclass FROM obs_part WHERE v = 'ancient'")" = obs_part_default ] || fail "row not in default partition"
n=$(sql "SELECT count(*) FROM obs_part o JOIN pg_class c ON c.oid = o.tableoid WHERE c.relname <> 'obs_part_p' || to_char(o.created_at, 'YYYYMM') AND c.relname <> 'obs_part_default'")
[ "$n" = 0 ] || fail "$n rows in the wrong partition"
pass "partition moves and the default partition"
same_rows rfull rfull_new
same_rows ridx ridx_new
pass "replica identity FULL and USING INDEX"
same_rows trunc trunc_new
[ "$(sql "SELECT id FROM trunc_new")" = 1 ] || fail "RESTART IDENTITY not applied"
pass "TRUNCATE with CASCADE and RESTART IDENTITY"
same_rows uniq uniq_new
grep -q '"public"."uniq_new" has other unique keys or foreign keys: applying its changes one by one' "$WORK/run.log" ||
  fail "a target with a secondary unique key was not applied row by row"
pass "a target with a secondary unique key is applied in order (unique swap)"

"$PGSHIFT" status --plan "$WORK/plan.yaml" --json >"$WORK/status.json" || fail "status --json"
python3 - "$WORK/status.json" <<'PY' || fail "status json"
import json, sys
s = json.load(open(sys.argv[1]))
assert s["phase"] in ("ready", "catching_up"), s["phase"]
assert s["running"] is True
assert len(s["tables"]) == 6 and all(t["copy_done"] for t in s["tables"])
assert s["tables"][0]["rows_copied"] == 2, s["tables"][0]
assert s["applied_changes"] > 30, s
for k in ("lag_bytes", "lag_seconds", "eta_seconds", "slot"):
    assert k in s, k
PY
pass "status --json reports phase, tables, lag"
stop_run
pass "SIGTERM stops cleanly"
finish
