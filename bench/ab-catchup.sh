#!/usr/bin/env bash
# bench/ab-catchup.sh: two pgshift binaries catching up the same burst on
# one server, one after the other, for a before/after figure that separate
# runs on a loaded machine cannot give (their servers and page caches
# differ). As root, from the repository:
#   PGSHIFT_BIN_BEFORE=/tmp/pgshift-before/build/pgshift PGSHIFT_PG=18 \
#     PGSHIFT_PG_CACHE=/work/main/.cache/pg bash bench/ab-catchup.sh
# PGSHIFT_BIN defaults to a Release build of this tree (bench/run.sh's).
# Every variant in AB_ORDER (default "before after after before") gets a
# migration of its own: obs (AB_ROWS rows, default 200000, inner.sh's
# table) copied into its own partitioned target, its slot then brought past
# every copy's WAL. The burst (inner.sh's) is written once, with no pgshift
# running; then each variant replays it alone: process start to its slot
# confirming the burst's end. Variants: before, after, and after-other-origin
# (the after binary with another replication origin in the cluster, so that
# on 16+ it runs under its origin but does not ask for origin 'none').
# AB_WALSTATS=1 prints pg_walinspect's record counts (by record type) of
# the burst and of each replay's own writes, the walsender's work per
# record being the same whoever wrote it.
# AB_RUN_ARGS adds arguments to each replay's `pgshift run` (say
# "--log-level debug"); AB_KEEP_LOGS=/path/prefix keeps its log as
# <prefix>-<i>-<variant>.log.
# AB_PERF=/path/prefix records a system-wide `perf record -g` of each
# replay into <prefix>-<i>-<variant>.data.
# Results: bench/results/<timestamp>-pg<N>-ab.txt.
set -euo pipefail
if [ -z "${PGSHIFT_TEST_DIR:-}" ]; then
  cd "$(dirname "$0")/.."
  [ -n "${PGSHIFT_BIN_BEFORE:-}" ] || { echo "ab-catchup: set PGSHIFT_BIN_BEFORE" >&2; exit 1; }
  if [ -z "${PGSHIFT_BIN:-}" ]; then
    cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DPGSHIFT_TESTS=OFF >/dev/null
    cmake --build build-bench -j "$(nproc)" >/dev/null
    PGSHIFT_BIN=$PWD/build-bench/pgshift
  fi
  export PGSHIFT_BIN=$(realpath "$PGSHIFT_BIN") PGSHIFT_BIN_BEFORE=$(realpath "$PGSHIFT_BIN_BEFORE")
  export PGSHIFT_PG=${PGSHIFT_PG:-15} PGSHIFT_TEST_DURABLE=1
  export PGSHIFT_TEST_PGCONF="max_wal_size=16GB;checkpoint_timeout=1h;max_connections=100"
  mkdir -p bench/results
  export BENCH_OUT=$PWD/bench/results/$(date -u +%Y%m%dT%H%M%SZ)-pg$PGSHIFT_PG-ab.txt
  exec bash tests/lib/with-pg.sh bash "$0"
fi

ROWS=${AB_ROWS:-200000}
read -ra order <<<"${AB_ORDER:-before after after before}"
W=$(mktemp -d /tmp/pgshift-ab.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$W"' EXIT
source "$(dirname "$0")/lib.sh"
cpu_s() { awk '{printf "%.1f", ($14 + $15) / 100}' "/proc/$1/stat" 2>/dev/null; }
rq_s() { awk '{printf "%.2f", $2 / 1e9}' "/proc/$1/schedstat" 2>/dev/null; } # runnable, not running
cs_of() { awk '/^voluntary_ctxt_switches/ {print $2}' "/proc/$1/status" 2>/dev/null; } # times it slept
bin_of() { if [ "$1" = before ]; then echo "$PGSHIFT_BIN_BEFORE"; else echo "$PGSHIFT_BIN"; fi; }
start() { # I LOG: pgshift run for variant I in the background, sets pid
  "$(bin_of "${order[$1]}")" run --plan "$W/plan$1.yaml" ${AB_RUN_ARGS:-} >"$2" 2>&1 &
  pid=$!
}
stop() { kill -TERM $pid; wait $pid || true; }
# Only the running migration's origin may exist for origin 'none' (16+).
drop_origins() {
  [ "$PGSHIFT_TEST_PG" -ge 16 ] || return 0
  for _ in $(seq 1 50); do # the last run's backend may still be exiting
    q "SELECT pg_replication_origin_drop(roname) FROM pg_replication_origin" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  q "SELECT pg_replication_origin_drop(roname) FROM pg_replication_origin" >/dev/null
}

createdb bench
out "pgshift catch-up A/B $(date -u +%FT%TZ) on $(nproc) cores; $(psql -XAtc 'select version()' | cut -d, -f1)"
out "rows: $ROWS; order: ${order[*]}; before: $PGSHIFT_BIN_BEFORE; after: $PGSHIFT_BIN"
out "load when starting: $(uptime | sed 's/.*load average/load average/')"
q "CREATE TABLE obs (id uuid NOT NULL DEFAULT gen_random_uuid(), created_at timestamptz NOT NULL,
  station text NOT NULL, value numeric(12,4), tags text[], readings float8[], payload jsonb, blob bytea);
  ALTER TABLE obs ADD PRIMARY KEY (id, created_at)"
psql -XAtq -v ON_ERROR_STOP=1 -d bench -v rows="$ROWS" -f "$(dirname "$0")/obs-fill.sql"
q "CREATE INDEX ON obs (created_at); CREATE INDEX ON obs (station, created_at)"
q "VACUUM ANALYZE obs"

# One migration per variant: copy, stream past the copy, stop.
for i in "${!order[@]}"; do
  cat >"$W/plan$i.yaml" <<Y
name: ab$i
source: "dbname=bench"
tables:
  - source: public.obs
    target: public.obs_ab$i
    partition: {by: range (created_at), interval: 1 month}
Y
  drop_origins
  start "$i" "$W/copy$i.log"
  wait_log "$W/copy$i.log" "streaming from slot" $pid || { cat "$W/copy$i.log"; exit 1; }
  wait_slot "pgshift_ab$i" "$(q "SELECT pg_current_wal_insert_lsn()")"
  stop
done
# Every slot past every copy's WAL, restart points included: each catch-up
# then decodes the burst and nothing before it.
end=$(q "SELECT pg_current_wal_insert_lsn()")
for i in "${!order[@]}"; do
  drop_origins
  start "$i" "$W/idle$i.log"
  wait_slot "pgshift_ab$i" "$end"
  # A restart point only moves at a running-xacts record (a checkpoint
  # writes one), and only while the slot is in use.
  q "CHECKPOINT"
  wait_restart "pgshift_ab$i" "$end"
  stop
done
out "slots' restart points behind the copies' end: $(q "SELECT string_agg(pg_size_pretty(greatest('$end' - restart_lsn, 0)), ', ' ORDER BY slot_name) FROM pg_replication_slots")"

walstats() { # FROM TO: WAL records in that range by type, most first
  [ -n "${AB_WALSTATS:-}" ] || return 0
  q "SET client_min_messages = warning; CREATE EXTENSION IF NOT EXISTS pg_walinspect"
  out "$(q "SELECT format('%s records, %s: ', sum(count), pg_size_pretty(sum(combined_size))) || string_agg(format('%s %s', replace(\"resource_manager/record_type\", ' ', ''), count), ', ' ORDER BY count DESC) FROM pg_get_wal_stats('$1', '$2', true) WHERE count > 0")"
}
cp "$(dirname "$0")/burst.sql" "$W/burst.sql" # the recorded burst, shared with ab-catchup.sh
B=$(q "SELECT pg_current_wal_insert_lsn()")
t0=$(now)
"$PGSHIFT_TEST_CLIENTBIN/pgbench" -n -f "$W/burst.sql" -c 8 -j 2 -t "${AB_BURST_PER_CLIENT:-11000}" bench >"$W/burst.log" 2>&1
L=$(q "SELECT pg_current_wal_insert_lsn()")
out "burst: $(grep -oE "actually processed: [0-9]+" "$W/burst.log" | grep -oE "[0-9]+$") transactions in $(el "$t0" "$(now)") s, up to $L"
walstats "$B" "$L"

for i in "${!order[@]}"; do
  v=${order[$i]}
  drop_origins
  [ "$v" = after-other-origin ] && [ "$PGSHIFT_TEST_PG" -ge 16 ] && q "SELECT pg_replication_origin_create('ab_other')" >/dev/null
  load=$(awk '{print $1}' /proc/loadavg)
  [ -n "${AB_PERF:-}" ] && { perf record -F 999 -a -g -o "$AB_PERF-$i-$v.data" >/dev/null 2>&1 & perf_pid=$!; sleep 0.5; }
  S=$(q "SELECT pg_current_wal_insert_lsn()")
  t0=$(now)
  start "$i" "$W/run$i.log"
  wait_slot "pgshift_ab$i" "$L"
  t=$(el "$t0" "$(now)")
  [ -n "${AB_PERF:-}" ] && { kill -INT $perf_pid; wait $perf_pid || true; }
  apid=$(q "SELECT pid FROM pg_stat_activity WHERE application_name = 'pgshift apply'")
  wpid=$(q "SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'pgshift_ab$i'")
  cpu="CPU s pgshift $(cpu_s $pid), apply backend $(cpu_s "$apid"), walsender $(cpu_s "$wpid"); wakeups pgshift $(cs_of $pid), apply backend $(cs_of "$apid"), walsender $(cs_of "$wpid"); waited for a CPU s pgshift $(rq_s $pid), apply backend $(rq_s "$apid"), walsender $(rq_s "$wpid")"
  stop
  E=$(q "SELECT pg_current_wal_insert_lsn()")
  out "$(printf '%-20s' "$v") catch-up ${t} s; $cpu; load $load"
  walstats "$S" "$E"
  [ -n "${AB_KEEP_LOGS:-}" ] && cp "$W/run$i.log" "$AB_KEEP_LOGS-$i-$v.log"
  ts=$(grep -m1 "streaming from slot" "$W/run$i.log" | cut -d' ' -f1)
  out "                     $(el "$t0" "$(date -d "$ts" +%s.%N)") s to $(grep -oE "streaming from slot .*" "$W/run$i.log" | head -1)"
  diff=$(q "SELECT (SELECT count(*) FROM (TABLE obs EXCEPT ALL TABLE obs_ab$i) a) + (SELECT count(*) FROM (TABLE obs_ab$i EXCEPT ALL TABLE obs) b)")
  [ "$diff" = 0 ] || out "                     ERROR: obs_ab$i differs from obs in $diff rows"
done
out "results: $BENCH_OUT"
