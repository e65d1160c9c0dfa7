#!/usr/bin/env bash
# bench/inner.sh: the measurements of bench/run.sh, run inside with-pg.sh.
set -euo pipefail
ROWS=${BENCH_ROWS:-2000000}
BURST_PER_CLIENT=${BENCH_BURST_PER_CLIENT:-11000}
W=$(mktemp -d /tmp/pgshift-bench.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$W"' EXIT
source "$(dirname "$0")/lib.sh"

createdb bench; createdb nat
out "pgshift benchmark $(date -u +%FT%TZ) on $(nproc) cores, $(free -g | awk '/Mem/ {print $2}') GB; $(psql -XAtc 'select version()' | cut -d, -f1)"
out "rows: $ROWS; burst: 8 clients x $BURST_PER_CLIENT transactions; pgshift${BENCH_SIDE:+ $BENCH_SIDE}: $PGSHIFT_BIN"
out "load when starting: $(uptime | sed 's/.*load average/load average/')"

# The observations table: uuid + timestamptz key, text, numeric, arrays, jsonb, some bytea.
OBS_DDL="(id uuid NOT NULL DEFAULT gen_random_uuid(), created_at timestamptz NOT NULL,
  station text NOT NULL, value numeric(12,4), tags text[], readings float8[], payload jsonb, blob bytea)"
q "CREATE TABLE obs $OBS_DDL; ALTER TABLE obs ADD PRIMARY KEY (id, created_at)"
t0=$(now)
psql -XAtq -v ON_ERROR_STOP=1 -d bench -v rows="$ROWS" -f "$(dirname "$0")/obs-fill.sql"
q "CREATE INDEX ON obs (created_at); CREATE INDEX ON obs (station, created_at)"
q "VACUUM ANALYZE obs"; q "CHECKPOINT"
out "source: $(q "SELECT pg_size_pretty(pg_total_relation_size('obs'))") with indexes (generated in $(el "$t0" "$(now)") s)"


# 1a. baseline: INSERT ... SELECT into a partitioned copy with its indexes in place
q "CREATE TABLE base $OBS_DDL PARTITION BY RANGE (created_at)"
month_parts base bench
q "ALTER TABLE base ADD PRIMARY KEY (id, created_at); CREATE INDEX ON base (created_at); CREATE INDEX ON base (station, created_at)"
q "SELECT count(*) FROM obs" >/dev/null
t0=$(now); q "INSERT INTO base SELECT * FROM obs"; t_base=$(el "$t0" "$(now)")
q "DROP TABLE base"; q "CHECKPOINT"
out "copy baseline  INSERT INTO target SELECT * FROM source (indexes in place): ${t_base} s"

# 1b. pgshift: slot + snapshot copy + index build + ANALYZE, until streaming starts
cat >"$W/plan.yaml" <<Y
name: bench
source: "dbname=bench"
tables:
  - source: public.obs
    target: public.obs_part
    partition: {by: range (created_at), interval: 1 month}
Y
t0=$(now)
"$PGSHIFT_BIN" run --plan "$W/plan.yaml" >"$W/run1.log" 2>&1 &
pid=$!
wait_log "$W/run1.log" "streaming from slot" $pid || { cat "$W/run1.log"; exit 1; }
t_copy=$(el "$t0" "$(now)")
# Let run 1 stream past the copy's own WAL, as it would in real use, so the
# burst below is all that either applier replays.
t1=$(now)
copy_end=$(q "SELECT pg_current_wal_insert_lsn()")
wait_slot pgshift_bench "$copy_end"
t_post=$(el "$t1" "$(now)")
# The slot's restart point only moves at a running-xacts record (a
# checkpoint writes one). Left behind the copy's WAL, the next start would
# decode all of it again before reaching the burst: let it move first.
q "CHECKPOINT"
wait_restart "pgshift_bench" "$copy_end"
kill -TERM $pid; wait $pid || true
out "copy pgshift   snapshot copy + index build + ANALYZE until streaming:       ${t_copy} s  (ratio $(awk "BEGIN {printf \"%.2f\", $t_copy / $t_base}"))"
grep -E "copied|building|built|analyzed|LOGGED|created .* partitions|range\(s\) with|consistent point|streaming from" "$W/run1.log" | sed 's/^/               /' | tee -a "$BENCH_OUT"
out "               then streamed past the copy's own WAL in ${t_post} s and stopped"
cnt=$(q "SELECT (SELECT count(*) FROM obs) = (SELECT count(*) FROM obs_part)")
[ "$cnt" = t ] || { out "ERROR: row counts differ after the copy"; exit 1; }

# 2. the burst: recorded while neither applier runs, then each replays it alone.
q "CREATE PUBLICATION natpub FOR TABLE obs"; q "SELECT pg_create_logical_replication_slot('natslot', 'pgoutput')" >/dev/null
q "SELECT pg_create_logical_replication_slot('rawslot', 'pgoutput')" >/dev/null
# A second raw slot, read after pgshift's catch-up: it decodes the burst plus
# pgshift's own writes to the target (same database; PG15 cannot filter them
# out by origin), which is what pgshift's walsender has to get through.
q "SELECT pg_create_logical_replication_slot('rawslot2', 'pgoutput')" >/dev/null
# 16+: a third one read with origin 'none', which drops pgshift's own writes
# when it runs under a replication origin (what it asks for itself there).
if [ "$PGSHIFT_TEST_PG" -ge 16 ]; then
  q "SELECT pg_create_logical_replication_slot('rawslot3', 'pgoutput')" >/dev/null
fi
psql -XAtq -v ON_ERROR_STOP=1 -d nat -c "CREATE TABLE obs $OBS_DDL PARTITION BY RANGE (created_at)"
month_parts obs nat
psql -XAtq -v ON_ERROR_STOP=1 -d nat -c "ALTER TABLE obs ADD PRIMARY KEY (id, created_at); CREATE INDEX ON obs (created_at); CREATE INDEX ON obs (station, created_at)"
psql -XAtq -v ON_ERROR_STOP=1 -d nat -c "CREATE SUBSCRIPTION natsub CONNECTION 'host=$PGHOST port=$PGPORT dbname=bench' PUBLICATION natpub
  WITH (create_slot = false, slot_name = 'natslot', copy_data = false, enabled = false)"
cp "$(dirname "$0")/burst.sql" "$W/burst.sql" # the recorded burst, shared with ab-catchup.sh
t0=$(now)
"$PGSHIFT_TEST_CLIENTBIN/pgbench" -n -f "$W/burst.sql" -c 8 -j 2 -t "$BURST_PER_CLIENT" bench >"$W/burst.log" 2>&1
burst_s=$(el "$t0" "$(now)")
L=$(q "SELECT pg_current_wal_insert_lsn()")
ntx=$(grep -oE "actually processed: [0-9]+" "$W/burst.log" | grep -oE "[0-9]+$")
out "burst          $ntx transactions in ${burst_s} s ($(grep -oE 'tps = [0-9.]+' "$W/burst.log" | head -1)), up to LSN $L"

# The floor: the walsender decoding the burst to a client that only discards it.
raw_decode() { # SLOT ENDLSN [OPTION...]: seconds to decode up to ENDLSN into pg_recvlogical
  local t0 slot=$1 end=$2; t0=$(now)
  shift 2
  "$PGSHIFT_TEST_CLIENTBIN/pg_recvlogical" -d bench -S "$slot" --start -E "$end" -f /dev/null \
    -o proto_version=1 -o publication_names=natpub -o binary=true "$@" -F 0
  el "$t0" "$(now)"
  q "SELECT pg_drop_replication_slot('$slot')" >/dev/null
}
t_raw=$(raw_decode rawslot "$L")
out "catch-up floor: the walsender decoding the burst into pg_recvlogical:     ${t_raw} s"
t0=$(now)
psql -XAtq -d nat -c "ALTER SUBSCRIPTION natsub ENABLE"
wait_slot natslot "$L"
t_nat=$(el "$t0" "$(now)")
psql -XAtq -d nat -c "ALTER SUBSCRIPTION natsub DISABLE"
out "catch-up native logical replication apply worker:                          ${t_nat} s"
# The subscription's replication origin (pg_<oid>) is cluster-wide: left in
# place, pgshift on 16+ would see another origin and not ask for origin
# 'none'. Drop the subscription (and its slot, once its walsender is gone).
psql -XAtq -v ON_ERROR_STOP=1 -d nat -c "ALTER SUBSCRIPTION natsub SET (slot_name = NONE)" -c "DROP SUBSCRIPTION natsub"
for _ in $(seq 1 100); do
  [ "$(q "SELECT active FROM pg_replication_slots WHERE slot_name = 'natslot'")" = f ] && break
  sleep 0.1
done
q "SELECT pg_drop_replication_slot('natslot')" >/dev/null

out "               slot restart point behind its confirmed position before the catch-up: $(q "SELECT pg_size_pretty(confirmed_flush_lsn - restart_lsn) FROM pg_replication_slots WHERE slot_name = 'pgshift_bench'")"
t0=$(now)
"$PGSHIFT_BIN" run --plan "$W/plan.yaml" ${BENCH_RUN_ARGS:-} >"$W/run2.log" 2>&1 &
pid=$!
if [ -n "${BENCH_PROFILE:-}" ]; then
  (while sleep 1; do top -b -n 1 -w 200 | sed -n '8,13p' | awk '{print $9, $12, $13, $14}' | tr '\n' '|'; echo; done) > "$BENCH_PROFILE" &
  prof=$!
fi
wait_slot pgshift_bench "$L"
cpu_s() { awk '{printf "%.1f", ($14 + $15) / 100}' "/proc/$1/stat" 2>/dev/null; }
apid=$(q "SELECT pid FROM pg_stat_activity WHERE application_name = 'pgshift apply'")
wpid=$(q "SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'pgshift_bench'")
cpu_line="CPU seconds during the catch-up: pgshift $(cpu_s $pid), its apply backend $(cpu_s $apid), its walsender $(cpu_s $wpid)"
[ -n "${BENCH_PROFILE:-}" ] && kill $prof && cp "$W/run2.log" "$BENCH_PROFILE.run.log"
t_pgs=$(el "$t0" "$(now)")
out "catch-up pgshift (process start to burst applied):                         ${t_pgs} s  (speed-up $(awk "BEGIN {printf \"%.2f\", $t_nat / $t_pgs}")x)"
same=$(q "SELECT count(*) FROM (SELECT * FROM obs EXCEPT ALL SELECT * FROM obs_part) a" )
same2=$(q "SELECT count(*) FROM (SELECT * FROM obs_part EXCEPT ALL SELECT * FROM obs) a")
out "               target vs source after the burst: $same rows missing, $same2 extra"
out "               $(grep -oE "streaming from slot .*" "$W/run2.log" | head -1)"
grep -E "not filtering by origin|no replication origin" "$W/run2.log" | sed 's/^/               /' | tee -a "$BENCH_OUT" || true
out "               $cpu_line"
L2=$(q "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'pgshift_bench'")
t_raw2=$(raw_decode rawslot2 "$L2")
out "               the same floor with pgshift's own writes in the WAL (burst + apply): ${t_raw2} s"
if [ "$PGSHIFT_TEST_PG" -ge 16 ]; then
  t_raw3=$(raw_decode rawslot3 "$L2" -o origin=none)
  out "               the same, origin 'none' (drops writes made under a replication origin): ${t_raw3} s"
fi

# 3. one 1M-row transaction: pgshift's resident memory (BENCH_INNER_BIGXACT=0
# skips it; bench/bigxact.sh measures a 1M-row transaction on its own server)
if [ "${BENCH_INNER_BIGXACT:-1}" = 0 ]; then
  kill -TERM $pid; wait $pid || true
  out "results: $BENCH_OUT"
  exit 0
fi
base_kb=$(awk '/^VmRSS/ {print $2}' /proc/$pid/status)
t0=$(now)
q "INSERT INTO obs (created_at, station, value, tags, readings, payload)
   SELECT timestamptz '2025-02-01' + random() * interval '20 days', 'big', i, ARRAY['big'], ARRAY[i::float8], jsonb_build_object('i', i)
   FROM generate_series(1, 1000000) i"
t_ins=$(el "$t0" "$(now)")
t1=$(now)
wait_slot pgshift_bench "$(q "SELECT pg_current_wal_insert_lsn()")"
peak_kb=$(awk '/^VmHWM/ {print $2}' /proc/$pid/status)
out "1M-row xact    inserted on the source in ${t_ins} s, then applied in $(el "$t1" "$(now)") s; pgshift RSS $((base_kb / 1024)) MB before, peak $((peak_kb / 1024)) MB"
kill -TERM $pid; wait $pid || true
out "results: $BENCH_OUT"
