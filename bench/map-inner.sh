#!/usr/bin/env bash
# bench/map-inner.sh: a column mapping's cost (issue #16), run inside
# with-pg.sh (bench/run.sh, BENCH_PARTS=map). One server, one source table
# (the observations of bench/inner.sh, BENCH_MAP_ROWS, default 1M), two
# operator-made targets, each monthly-partitioned with its key and indexes
# in place:
#   plain:  LIKE the source
#   mapped: the same rows through a mapping: station renamed to site,
#           value numeric(12,4) -> value_milli bigint ((value * 1000)::bigint),
#           tags text[] -> tag text (tags[1]), a constant column
# and measures, in the same run:
#   1. copy: INSERT INTO target SELECT ... FROM source (the mapping's
#      expressions in the SELECT for the mapped one) against `pgshift run`
#      from its start until it is caught up past the copy's own WAL
#   2. catch-up of the recorded burst (bench/burst.sql) by each pgshift
#      migration alone, next to PostgreSQL's built-in apply worker
#      replaying the same burst into another database (no mapping: it has
#      none), each from the same slot position. BENCH_MAP_ORDER="mapped
#      plain" replays the mapped one first (the first to run pays for the
#      burst's pages coming into the cache: alternate the order).
set -euo pipefail
ROWS=${BENCH_MAP_ROWS:-1000000}
BURST_PER_CLIENT=${BENCH_BURST_PER_CLIENT:-11000}
W=$(mktemp -d /tmp/pgshift-bench.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$W"' EXIT
source "$(dirname "$0")/lib.sh"

createdb bench; createdb nat
out "pgshift column-mapping bench $(date -u +%FT%TZ) on $(nproc) cores; $(psql -XAtc 'select version()' | cut -d, -f1)"
out "rows: $ROWS; burst: 8 clients x $BURST_PER_CLIENT transactions; pgshift: $PGSHIFT_BIN"
out "catch-up order: ${BENCH_MAP_ORDER:-plain mapped}"
OBS_DDL="(id uuid NOT NULL DEFAULT gen_random_uuid(), created_at timestamptz NOT NULL,
  station text NOT NULL, value numeric(12,4), tags text[], readings float8[], payload jsonb, blob bytea)"
MAP_DDL="(id uuid NOT NULL, created_at timestamptz NOT NULL, site text NOT NULL,
  value_milli bigint, tag text, readings float8[], payload jsonb, blob bytea, src text NOT NULL)"
MAP_EXPR="id, created_at, station, (value * 1000)::bigint, tags[1], readings, payload, blob, 'obs'"
q "CREATE TABLE obs $OBS_DDL; ALTER TABLE obs ADD PRIMARY KEY (id, created_at)"
psql -XAtq -v ON_ERROR_STOP=1 -d bench -v rows="$ROWS" -f "$(dirname "$0")/obs-fill.sql"
q "CREATE INDEX ON obs (created_at); CREATE INDEX ON obs (station, created_at)"
q "VACUUM ANALYZE obs"
q "CHECKPOINT"
out "source: $(q "SELECT pg_size_pretty(pg_total_relation_size('obs'))") with indexes"

make_target() { # NAME KIND: an operator-made target with its indexes
  local site=station
  if [ "$2" = mapped ]; then
    q "CREATE TABLE $1 $MAP_DDL PARTITION BY RANGE (created_at)"
    site=site
  else
    q "CREATE TABLE $1 (LIKE obs INCLUDING ALL) PARTITION BY RANGE (created_at)"
  fi
  month_parts "$1" bench
  if [ "$2" = mapped ]; then
    q "ALTER TABLE $1 ADD PRIMARY KEY (id, created_at); CREATE INDEX ON $1 (created_at); CREATE INDEX ON $1 ($site, created_at)"
  fi
}

plan() { # NAME TARGET KIND
  cat >"$W/$1.yaml" <<Y
name: $1
source: "dbname=bench"
state_dir: $W
tables:
  - source: public.obs
    target: public.$2
Y
  [ "$3" = mapped ] && cat >>"$W/$1.yaml" <<'Y'
    columns:
      site: station
      value_milli: (value * 1000)::bigint
      tag: tags[1]
      src: "'obs'"
Y
  true
}

declare -A T_BASE T_COPY T_CATCH
for kind in plain mapped; do
  # 1. baseline into a fresh target of the kind, then dropped
  make_target base "$kind"
  sel='*'
  [ "$kind" = mapped ] && sel=$MAP_EXPR
  q "SELECT count(*) FROM obs" >/dev/null
  t0=$(now)
  q "INSERT INTO base SELECT $sel FROM obs"
  T_BASE[$kind]=$(el "$t0" "$(now)")
  q "DROP TABLE base"
  q "CHECKPOINT"
  # pgshift into its own target: from the start to caught up past its copy
  make_target "t_$kind" "$kind"
  plan "m_$kind" "t_$kind" "$kind"
  t0=$(now)
  "$PGSHIFT_BIN" run --plan "$W/m_$kind.yaml" >"$W/run-$kind.log" 2>&1 &
  pid=$!
  wait_log "$W/run-$kind.log" "streaming from slot" $pid || { cat "$W/run-$kind.log"; exit 1; }
  wait_slot "pgshift_m_$kind" "$(q "SELECT pg_current_wal_insert_lsn()")" $pid
  T_COPY[$kind]=$(el "$t0" "$(now)")
  end=$(q "SELECT pg_current_wal_insert_lsn()")
  wait_slot "pgshift_m_$kind" "$end" $pid
  q "CHECKPOINT"
  wait_restart "pgshift_m_$kind" "$end"
  kill -TERM $pid
  wait $pid || true
  out "copy $kind: INSERT ... SELECT ${T_BASE[$kind]} s; pgshift start to caught up ${T_COPY[$kind]} s (ratio $(awk "BEGIN {printf \"%.2f\", ${T_COPY[$kind]} / ${T_BASE[$kind]}}"))"
  grep -E "ready .* after the start" "$W/run-$kind.log" | sed 's/^.*info  /               /' | tee -a "$BENCH_OUT" || true
done

# Both slots past every copy's WAL: the first slot would otherwise decode
# the second copy's WAL again in its catch-up. Each run streams past it
# once more, and a checkpoint moves the restart points (as inner.sh does).
for kind in plain mapped; do
  "$PGSHIFT_BIN" run --plan "$W/m_$kind.yaml" >"$W/past-$kind.log" 2>&1 &
  pid=$!
  wait_slot "pgshift_m_$kind" "$(q "SELECT pg_current_wal_insert_lsn()")" $pid ||
    { cat "$W/past-$kind.log"; exit 1; }
  kill -TERM $pid
  wait $pid || true
done
end=$(q "SELECT pg_current_wal_insert_lsn()")
q "CHECKPOINT"
for kind in plain mapped; do
  "$PGSHIFT_BIN" run --plan "$W/m_$kind.yaml" >"$W/past2-$kind.log" 2>&1 &
  pid=$!
  wait_restart "pgshift_m_$kind" "$end"
  kill -TERM $pid
  wait $pid || true
done
out "slots before the burst (restart point, confirmed): $(q "SELECT string_agg(format('%s %s %s', slot_name, restart_lsn, confirmed_flush_lsn), '; ' ORDER BY slot_name) FROM pg_replication_slots")"

# 2. the burst, recorded while no applier runs; then each replays it alone.
q "CREATE PUBLICATION natpub FOR TABLE obs"
q "SELECT pg_create_logical_replication_slot('natslot', 'pgoutput')" >/dev/null
psql -XAtq -v ON_ERROR_STOP=1 -d nat -c "CREATE TABLE obs $OBS_DDL PARTITION BY RANGE (created_at)"
month_parts obs nat
psql -XAtq -v ON_ERROR_STOP=1 -d nat -c "ALTER TABLE obs ADD PRIMARY KEY (id, created_at); CREATE INDEX ON obs (created_at); CREATE INDEX ON obs (station, created_at)"
psql -XAtq -v ON_ERROR_STOP=1 -d nat -c "CREATE SUBSCRIPTION natsub CONNECTION 'host=$PGHOST port=$PGPORT dbname=bench' PUBLICATION natpub
  WITH (create_slot = false, slot_name = 'natslot', copy_data = false, enabled = false)"
t0=$(now)
"$PGSHIFT_TEST_CLIENTBIN/pgbench" -n -f "$(dirname "$0")/burst.sql" -c 8 -j 2 -t "$BURST_PER_CLIENT" bench >"$W/burst.log" 2>&1
L=$(q "SELECT pg_current_wal_insert_lsn()")
ntx=$(grep -oE "actually processed: [0-9]+" "$W/burst.log" | grep -oE "[0-9]+$")
out "burst: $ntx transactions in $(el "$t0" "$(now)") s, up to LSN $L"
t0=$(now)
psql -XAtq -d nat -c "ALTER SUBSCRIPTION natsub ENABLE"
wait_slot natslot "$L"
t_nat=$(el "$t0" "$(now)")
psql -XAtq -v ON_ERROR_STOP=1 -d nat -c "ALTER SUBSCRIPTION natsub DISABLE" -c "ALTER SUBSCRIPTION natsub SET (slot_name = NONE)" -c "DROP SUBSCRIPTION natsub"
for _ in $(seq 1 100); do
  [ "$(q "SELECT active FROM pg_replication_slots WHERE slot_name = 'natslot'")" = f ] && break
  sleep 0.1
done
q "SELECT pg_drop_replication_slot('natslot')" >/dev/null
out "catch-up native apply worker (no mapping): ${t_nat} s"
for kind in ${BENCH_MAP_ORDER:-plain mapped}; do
  t0=$(now)
  "$PGSHIFT_BIN" run --plan "$W/m_$kind.yaml" >"$W/catch-$kind.log" 2>&1 &
  pid=$!
  wait_slot "pgshift_m_$kind" "$L" $pid || { cat "$W/catch-$kind.log"; exit 1; }
  T_CATCH[$kind]=$(el "$t0" "$(now)")
  kill -TERM $pid
  wait $pid || true
  out "catch-up pgshift $kind (process start to burst applied): ${T_CATCH[$kind]} s (speed-up over native $(awk "BEGIN {printf \"%.2f\", $t_nat / ${T_CATCH[$kind]}}")x)"
done
# through the mapping, both targets hold the source
d1=$(q "SELECT count(*) FROM (SELECT * FROM obs EXCEPT ALL SELECT * FROM t_plain) x")
d2=$(q "SELECT count(*) FROM (SELECT $MAP_EXPR FROM obs EXCEPT ALL SELECT * FROM t_mapped) x")
d3=$(q "SELECT count(*) FROM (SELECT * FROM t_mapped EXCEPT ALL SELECT $MAP_EXPR FROM obs) x")
out "after the burst: plain target $d1 rows differ; mapped target $d2 missing, $d3 extra (through the mapping)"
out "summary: copy ratio plain $(awk "BEGIN {printf \"%.2f\", ${T_COPY[plain]} / ${T_BASE[plain]}}") mapped $(awk "BEGIN {printf \"%.2f\", ${T_COPY[mapped]} / ${T_BASE[mapped]}}"); catch-up plain ${T_CATCH[plain]} s mapped ${T_CATCH[mapped]} s (mapped/plain $(awk "BEGIN {printf \"%.2f\", ${T_CATCH[mapped]} / ${T_CATCH[plain]}}")), native ${t_nat} s"
for kind in plain mapped; do
  "$PGSHIFT_BIN" abort --plan "$W/m_$kind.yaml" --confirm >/dev/null 2>&1 || true
done
out "results: $BENCH_OUT"
