#!/usr/bin/env bash
# bench/verify-inner.sh: `pgshift verify` against a whole-table hash (what
# pgcopydb's `compare data` does), run inside with-pg.sh.
#
# One server: the observations table (bench/inner.sh's shape: a uuid key, so
# key order is not the heap's order), migrated by `pgshift run` into a
# monthly-partitioned target it creates; the run streams while a steady
# insert load (BENCH_VERIFY_TPS, default 200/s) goes on. Then, under that
# load, one after the other:
#   base: SELECT count(*), sum(hashtext(t::text)) FROM <table> t, on the
#         source and then on the target (one snapshot each, blind to the lag)
#   verify: `pgshift verify --json`, consistent at one LSN, chunked
# each BENCH_VERIFY_REPEAT times (default 2), and the ratio of the medians;
# then once `verify.method: walk` (key ranges in key order, for reference:
# the uuid key is not in the heap's order). BENCH_VERIFY_WALK=0 skips it.
set -euo pipefail
ROWS=${BENCH_ROWS:-2000000}
TPS=${BENCH_VERIFY_TPS:-200}
REPEAT=${BENCH_VERIFY_REPEAT:-2}
W=$(mktemp -d /tmp/pgshift-bench.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$W"' EXIT
source "$(dirname "$0")/lib.sh"

createdb bench
out "pgshift verify bench $(date -u +%FT%TZ) on $(nproc) cores; $(psql -XAtc 'select version()' | cut -d, -f1)"
out "rows: $ROWS; load: $TPS inserts/s; pgshift: $PGSHIFT_BIN"
q "CREATE TABLE obs (id uuid NOT NULL DEFAULT gen_random_uuid(), created_at timestamptz NOT NULL,
  station text NOT NULL, value numeric(12,4), tags text[], readings float8[], payload jsonb, blob bytea)"
q "ALTER TABLE obs ADD PRIMARY KEY (id, created_at)"
psql -XAtq -v ON_ERROR_STOP=1 -d bench -v rows="$ROWS" -f "$(dirname "$0")/obs-fill.sql"
q "CREATE INDEX ON obs (created_at)"
q "VACUUM ANALYZE obs"
out "source: $(q "SELECT pg_size_pretty(pg_total_relation_size('obs'))") with indexes"
cat >"$W/plan.yaml" <<Y
name: vb
source: "dbname=bench"
state_dir: $W
tables:
  - source: public.obs
    target: public.obs_part
    partition: {by: range (created_at), interval: 1 month}
Y
"$PGSHIFT_BIN" run --plan "$W/plan.yaml" >"$W/run.log" 2>&1 &
run_pid=$!
until grep -q "phase catching_up -> ready" "$W/run.log"; do
  kill -0 "$run_pid" 2>/dev/null || { tail -20 "$W/run.log"; exit 1; }
  sleep 0.5
done
q "VACUUM ANALYZE obs_part"
cat >"$W/load.sql" <<'SQL'
INSERT INTO obs (created_at, station, value, tags, payload)
VALUES (timestamptz '2024-01-01' + random() * interval '700 days', 'load', random() * 1000,
        ARRAY['load'], jsonb_build_object('load', true));
SQL
"$PGSHIFT_TEST_CLIENTBIN/pgbench" -n -f "$W/load.sql" -c 2 -j 1 -R "$TPS" -T 100000 bench >"$W/load.log" 2>&1 &
load_pid=$!
sleep 2
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
base=() ver=()
for i in $(seq "$REPEAT"); do
  t0=$(now)
  s=$(q "SELECT count(*) || ' ' || sum(hashtext(t::text)) FROM obs t")
  t1=$(now)
  g=$(q "SELECT count(*) || ' ' || sum(hashtext(t::text)) FROM obs_part t")
  t2=$(now)
  base+=("$(el "$t0" "$t2")")
  out "base $i: source $(el "$t0" "$t1") s, target $(el "$t1" "$t2") s (counts ${s%% *} / ${g%% *}: the load and the lag make them differ)"
  t0=$(now)
  rc=0
  "$PGSHIFT_BIN" verify --plan "$W/plan.yaml" --json >"$W/v.json" 2>"$W/v.err" || rc=$?
  t1=$(now)
  ver+=("$(el "$t0" "$t1")")
  out "verify $i: $(el "$t0" "$t1") s, exit $rc, $(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); t=r["tables"][0]; print("consistent %s at %s, %d rows, %d chunks, %d missing, %d extra, %d different" % (r["consistent"], r["lsn"], t["rows_source"], t["chunks"], t["missing"], t["extra"], t["different"]))' "$W/v.json")"
  [ "$rc" = 0 ] || { cat "$W/v.err"; exit 1; }
done
b=$(printf '%s\n' "${base[@]}" | median)
v=$(printf '%s\n' "${ver[@]}" | median)
out "median: base $b s, verify $v s, ratio $(awk "BEGIN {printf \"%.2f\", $v / $b}") (goal <= 1.5)"
if [ "${BENCH_VERIFY_WALK:-1}" != 0 ]; then
  { cat "$W/plan.yaml"; echo "verify: {method: walk}"; } >"$W/walk.yaml"
  t0=$(now)
  rc=0
  "$PGSHIFT_BIN" verify --plan "$W/walk.yaml" --json >"$W/w.json" 2>"$W/w.err" || rc=$?
  t1=$(now)
  out "walk: $(el "$t0" "$t1") s, exit $rc, $(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); t=r["tables"][0]; print("%d rows, %d ranges, %d points, %d differences" % (t["rows_source"], t["chunks"], r["snapshots"], t["missing"] + t["extra"] + t["different"]))' "$W/w.json"); ratio to the base median $(awk "BEGIN {printf \"%.2f\", $(el "$t0" "$t1") / $b}")"
fi
kill -TERM "$load_pid" 2>/dev/null || true
kill -TERM "$run_pid" 2>/dev/null || true
wait "$run_pid" 2>/dev/null || true
"$PGSHIFT_BIN" abort --plan "$W/plan.yaml" --confirm >/dev/null 2>&1 || true
