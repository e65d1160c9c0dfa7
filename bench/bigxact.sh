#!/usr/bin/env bash
# bench/bigxact.sh: the large-transaction latency, run by bench/run.sh inside
# with-pg.sh (a server of its own). One INSERT of 1M rows in one transaction
# (like tests/integration/test_big_xact.sh) into `big (id int PRIMARY KEY, v
# text, n numeric)`, target `LIKE big INCLUDING ALL`, pgshift streaming with
# the bench's plan defaults. Measured, in the server's clock:
#   latency: from the INSERT's COMMIT returning to the slot's
#            confirmed_flush_lsn reaching pg_current_wal_insert_lsn() read
#            right after it (polled every 50 ms)
#   pgshift's RSS before the INSERT and its peak (VmHWM) after the apply
# With PGSHIFT_BIN_BEFORE, both binaries run one after the other on this
# server ("before" first, or "after" first with BENCH_AFTER_FIRST=1),
# BENCH_BIGXACT_RUNS times each (default 1), alternating the order.
# BENCH_RUN_ARGS go to `pgshift run` (e.g. --log-level debug); each run's
# log is kept beside the results.
set -euo pipefail
ROWS=${BENCH_BIGXACT_ROWS:-1000000}
RUNS=${BENCH_BIGXACT_RUNS:-1}
W=$(mktemp -d /tmp/pgshift-bigx.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$W"' EXIT
source "$(dirname "$0")/lib.sh"
BENCH_DB=bigx
cpu_s() { awk '{printf "%.1f", ($14 + $15) / 100}' "/proc/$1/stat" 2>/dev/null; }

createdb bigx
out "pgshift large transaction $(date -u +%FT%TZ) on $(nproc) cores; $(psql -XAtc 'select version()' | cut -d, -f1)"
out "one INSERT of $ROWS rows in one transaction; load when starting: $(uptime | sed 's/.*load average/load average/')"
# Polls the slot inside the server: no client round trip in the figure.
q "CREATE FUNCTION wait_confirmed(slot text, target pg_lsn, t0 timestamptz, timeout_s float8)
   RETURNS float8 LANGUAGE plpgsql AS \$\$
   BEGIN
     LOOP
       IF (SELECT confirmed_flush_lsn >= target FROM pg_replication_slots WHERE slot_name = slot) THEN
         RETURN extract(epoch FROM clock_timestamp() - t0);
       END IF;
       IF clock_timestamp() - t0 > make_interval(secs => timeout_s) THEN RETURN NULL; END IF;
       PERFORM pg_sleep(0.05);
     END LOOP;
   END \$\$"

sides=(after)
if [ -n "${PGSHIFT_BIN_BEFORE:-}" ]; then
  sides=(before after)
  [ -n "${BENCH_AFTER_FIRST:-}" ] && sides=(after before)
fi
order=()
for r in $(seq 1 "$RUNS"); do
  if [ $((r % 2)) = 1 ]; then order+=("${sides[@]}"); else
    for ((i = ${#sides[@]} - 1; i >= 0; i--)); do order+=("${sides[i]}"); done
  fi
done
# BENCH_BIGXACT_NATIVE=1: then the built-in apply worker, for reference
# (streaming = parallel on 16+, on before), into a second database. Last,
# and dropped after: its replication origin would keep pgshift from origin
# 'none'.
if [ "${BENCH_BIGXACT_NATIVE:-0}" = 1 ]; then
  order+=(native)
  createdb bigxnat
fi
native_streaming=on
[ "$PGSHIFT_TEST_PG" -ge 16 ] && native_streaming=parallel

n=0
for side in "${order[@]}"; do
  n=$((n + 1))
  q "CREATE TABLE big_$n (id int PRIMARY KEY, v text, n numeric); CREATE TABLE big_${n}_new (LIKE big_$n INCLUDING ALL)"
  if [ "$side" = native ]; then
    slot=natbig_$n
    q "CREATE PUBLICATION bigpub_$n FOR TABLE big_$n"
    q "SELECT pg_create_logical_replication_slot('$slot', 'pgoutput')" >/dev/null
    psql -XAtq -v ON_ERROR_STOP=1 -d bigxnat -c "CREATE TABLE big_$n (id int PRIMARY KEY, v text, n numeric)" \
      -c "CREATE SUBSCRIPTION $slot CONNECTION 'host=$PGHOST port=$PGPORT dbname=bigx' PUBLICATION bigpub_$n
          WITH (create_slot = false, slot_name = '$slot', copy_data = false, streaming = $native_streaming)"
    pid=
  else
    bin=$PGSHIFT_BIN
    [ "$side" = before ] && bin=$PGSHIFT_BIN_BEFORE
    slot=pgshift_bigx_${side}_$n
    cat >"$W/plan$n.yaml" <<Y
name: bigx_${side}_$n
source: "dbname=bigx"
tables: [{source: big_$n, target: big_${n}_new}]
Y
    "$bin" run --plan "$W/plan$n.yaml" ${BENCH_RUN_ARGS:-} >"$W/run$n.log" 2>&1 &
    pid=$!
    wait_log "$W/run$n.log" "streaming from slot" $pid || { cat "$W/run$n.log"; exit 1; }
  fi
  q "INSERT INTO big_$n VALUES (0, 'warm up', 0)"
  [ -n "$(q "SELECT wait_confirmed('$slot', pg_current_wal_insert_lsn(), clock_timestamp(), 60)")" ] ||
    { out "ERROR: the warm-up row was not applied in 60 s"; cat "$W/run$n.log" 2>/dev/null; exit 1; }
  q "CHECKPOINT"
  if [ -n "$pid" ]; then
    base_kb=$(awk '/^VmRSS/ {print $2}' /proc/$pid/status)
    cpu0=$(cpu_s $pid)
    apid=$(q "SELECT pid FROM pg_stat_activity WHERE application_name = 'pgshift apply'")
    acpu0=$(cpu_s "$apid")
  fi
  wpid=$(q "SELECT active_pid FROM pg_replication_slots WHERE slot_name = '$slot'")
  wcpu0=$(cpu_s "$wpid")
  # Autocommit: the INSERT returns when its COMMIT does; the next statement
  # reads the clock and the WAL insert position at once after it.
  res=$(psql -XAtq -v ON_ERROR_STOP=1 -d bigx <<SQL
SELECT clock_timestamp() AS t_begin \gset
INSERT INTO big_$n SELECT i, md5(i::text), i / 3.0 FROM generate_series(1, $ROWS) i;
SELECT clock_timestamp() AS t_commit, pg_current_wal_insert_lsn() AS lsn \gset
SELECT round(extract(epoch FROM :'t_commit'::timestamptz - :'t_begin'::timestamptz)::numeric, 1),
       round(wait_confirmed('$slot', :'lsn', :'t_commit', 900)::numeric, 2), :'t_commit';
SQL
)
  IFS='|' read -r t_ins lat t_commit <<<"$res"
  dcpu() { awk "BEGIN {printf \"%.1f\", $(cpu_s "$1") - $2}"; }
  if [ -n "$pid" ]; then
    peak_kb=$(awk '/^VmHWM/ {print $2}' /proc/$pid/status)
    line="$side (${bin}): inserted in ${t_ins} s; applied ${lat:-NOT within 900} s after its commit"
    line+="; pgshift RSS $((base_kb / 1024)) MB before, peak $((peak_kb / 1024)) MB"
    line+="; CPU s pgshift $(dcpu $pid "$cpu0"), apply backend $(dcpu "$apid" "$acpu0"), walsender $(dcpu "$wpid" "$wcpu0")"
  else
    line="native apply worker (streaming = $native_streaming): inserted in ${t_ins} s; applied ${lat:-NOT within 900} s after its commit"
    line+="; CPU s walsender $(dcpu "$wpid" "$wcpu0")"
  fi
  out "$line"
  out "      committed at $t_commit"
  if [ -n "$pid" ]; then
    out "      $(grep -oE "streaming from slot .*" "$W/run$n.log" | head -1)"
    grep -E "not filtering by origin|no replication origin" "$W/run$n.log" | sed 's/^/      /' | tee -a "$BENCH_OUT" || true
    diff=$(q "SELECT (SELECT count(*) FROM (TABLE big_$n EXCEPT ALL TABLE big_${n}_new) a) + (SELECT count(*) FROM (TABLE big_${n}_new EXCEPT ALL TABLE big_$n) b)")
    [ "$diff" = 0 ] || out "      ERROR: big_$n and big_${n}_new differ in $diff rows"
    kill -TERM $pid; wait $pid || true
    cp "$W/run$n.log" "${BENCH_OUT%.txt}-run$n-$side.log"
  else
    sum="SELECT count(*) || ' ' || md5(string_agg(id || v || n, ',' ORDER BY id)) FROM big_$n"
    [ "$(q "$sum")" = "$(psql -XAtq -d bigxnat -c "$sum")" ] || out "      ERROR: the native copy of big_$n differs"
    psql -XAtq -v ON_ERROR_STOP=1 -d bigxnat -c "ALTER SUBSCRIPTION $slot DISABLE" \
      -c "ALTER SUBSCRIPTION $slot SET (slot_name = NONE)" -c "DROP SUBSCRIPTION $slot"
  fi
  # Leave nothing behind that the next run would see: its slot and (16+) its
  # replication origin, which would keep the next run from origin 'none'.
  for _ in $(seq 1 100); do
    [ "$(q "SELECT active FROM pg_replication_slots WHERE slot_name = '$slot'")" = f ] && break
    sleep 0.1
  done
  q "SELECT pg_drop_replication_slot('$slot')" >/dev/null
  if [ "$PGSHIFT_TEST_PG" -ge 16 ]; then
    q "SELECT pg_replication_origin_drop(roname) FROM pg_replication_origin WHERE roname = '$slot'" >/dev/null
  fi
  q "DROP TABLE big_$n, big_${n}_new"
done
out "results: $BENCH_OUT"
