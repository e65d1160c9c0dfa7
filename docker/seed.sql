-- docker/seed.sql: the rehearsal's demo dataset (scripts/demo-inner.sh seeds
-- its demo with it too). Run with psql; `-v rows=N` sets the size of
-- observations (default 300000). Seeds only a database without an
-- observations table, in one transaction, so re-running it is harmless.
--   compose: the `seed` service, after `postgres` is healthy
--   natively: psql -v rows=20000 -f docker/seed.sql   (tests/integration/test_compose.sh)
--
-- observations (bigserial id, a view on it) and stations (serial id) are the
-- tables docker/plan.yaml migrates; the shadows are written by every load
-- transaction exactly like the migrated tables and never touched by pgshift,
-- so after the cutover the new tables must equal them (docker/README.md, "check").
\set ON_ERROR_STOP 1
\if :{?rows}
\else
\set rows 300000
\endif
SELECT to_regclass('public.observations') IS NULL AS fresh \gset
\if :fresh
\echo seeding observations (:rows rows), stations, a view and the shadows
BEGIN;
CREATE TABLE stations (id serial PRIMARY KEY, name text NOT NULL);
INSERT INTO stations (name) SELECT 'station ' || i FROM generate_series(1, 50) i;
CREATE TABLE observations (
  id bigserial, created_at timestamptz NOT NULL, station_id int NOT NULL,
  value numeric(12,3), tags text[], payload jsonb, PRIMARY KEY (id, created_at));
INSERT INTO observations (created_at, station_id, value, tags, payload)
SELECT now() - random() * interval '400 days', 1 + i % 50, random() * 1000,
       ARRAY['t' || i % 5], jsonb_build_object('seq', i, 'ok', i % 3 = 0)
  FROM generate_series(1, :rows) i;
CREATE VIEW observations_with_names AS
  SELECT o.*, s.name FROM observations o JOIN stations s ON s.id = o.station_id;
-- The references: same columns and keys, no defaults (ids always given).
CREATE TABLE observations_shadow (LIKE observations INCLUDING INDEXES);
INSERT INTO observations_shadow SELECT * FROM observations;
CREATE TABLE stations_shadow (LIKE stations INCLUDING INDEXES);
INSERT INTO stations_shadow SELECT * FROM stations;
-- The stations target shares the serial's sequence through INCLUDING ALL.
CREATE TABLE stations_new (LIKE stations INCLUDING ALL);
COMMIT;
ANALYZE observations;
\echo seeded
\else
\echo observations exists already: not seeding
\endif
