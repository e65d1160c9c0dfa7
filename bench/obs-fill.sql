-- bench/obs-fill.sql: the observations table's rows (psql -v rows=N),
-- shared by inner.sh and ab-catchup.sh.
INSERT INTO obs (created_at, station, value, tags, readings, payload, blob)
SELECT timestamptz '2024-01-01' + random() * interval '700 days', 'station-' || (i % 500),
  (random() * 10000)::numeric(12,4), ARRAY['t' || (i % 7), 't' || (i % 11), 'site-' || (i % 13)],
  ARRAY[random(), random(), random(), random(), random(), random()],
  jsonb_build_object('seq', i, 'ok', i % 2 = 0, 'note', md5(i::text), 'unit', 'mg/l', 'calib', random()),
  CASE WHEN i % 10 = 0 THEN decode(md5(i::text) || md5((i + 1)::text) || md5((i + 2)::text), 'hex') END
FROM generate_series(1, :rows) i;
