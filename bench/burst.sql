-- bench/burst.sql: the catch-up burst (pgbench script) of bench/inner.sh and bench/ab-catchup.sh
\set k random(1, 9000000000000000)
\set r random(0, 9)
BEGIN;
INSERT INTO obs (id, created_at, station, value, tags, readings, payload)
  VALUES (md5(:k::text)::uuid, timestamptz '2025-06-01' + (:k % 17280000) * interval '1 second',
          'station-' || :client_id, random() * 1000, ARRAY['burst'], ARRAY[random(), random()],
          jsonb_build_object('client', :client_id)) ON CONFLICT DO NOTHING;
UPDATE obs SET value = value + 1, readings = readings || random()
  WHERE id = md5(:k::text)::uuid AND created_at = timestamptz '2025-06-01' + (:k % 17280000) * interval '1 second';
\if :r = 0
DELETE FROM obs WHERE id = md5(:k::text)::uuid AND created_at = timestamptz '2025-06-01' + (:k % 17280000) * interval '1 second';
\endif
COMMIT;
