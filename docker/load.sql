-- docker/load.sql: the rehearsal's write load, a pgbench script (scripts/demo-inner.sh
-- runs it too). Needs `-D rows=N` (N as seeded).
-- One transaction = the same change to a migrated table and its shadow. New
-- ids come from the sequences (RETURNING ... \gset); now() is the same for
-- both statements of a transaction. It keeps writing through the cutover.
\set id random(1, :rows)
\set st 1 + :id % 50
\set v random(0, 999999)
\set op random(1, 20)
BEGIN;
\if :op <= 8
INSERT INTO observations (created_at, station_id, value, tags, payload)
  VALUES (now(), :st, :v / 1000.0, ARRAY['live'], '{"live": true}') RETURNING id AS nid \gset
INSERT INTO observations_shadow VALUES (:nid, now(), :st, :v / 1000.0, ARRAY['live'], '{"live": true}');
\elif :op <= 16
UPDATE observations SET value = value + 1, tags = tags || 'u'::text WHERE id = :id;
UPDATE observations_shadow SET value = value + 1, tags = tags || 'u'::text WHERE id = :id;
\elif :op <= 18
DELETE FROM observations WHERE id = :id;
DELETE FROM observations_shadow WHERE id = :id;
\elif :op <= 19
INSERT INTO stations (name) VALUES ('live ' || :v) RETURNING id AS sid \gset
INSERT INTO stations_shadow VALUES (:sid, 'live ' || :v);
\else
UPDATE stations SET name = 'station ' || :st || ' (' || :v || ')' WHERE id = :st;
UPDATE stations_shadow SET name = 'station ' || :st || ' (' || :v || ')' WHERE id = :st;
\endif
COMMIT;
