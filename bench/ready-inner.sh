#!/usr/bin/env bash
# bench/ready-inner.sh: time to ready (bench/ready.sh), run inside with-pg.sh.
#
# One server, one source table (the observations of bench/inner.sh), and for
# each target kind, one after the other:
#   base: INSERT INTO target SELECT * FROM source, into a monthly-partitioned
#         target with its primary key and indexes in place
#   pgshift: `pgshift run` from process start until it is caught up: the
#         slot confirmed past every WAL record written up to the moment it
#         started streaming (the copy's own WAL included)
# Target kinds: "operator" (made by the operator, as team plans do it:
# CREATE TABLE ... (LIKE source INCLUDING ALL) PARTITION BY RANGE, monthly
# partitions, before pgshift runs) and "created" (pgshift creates it from a
# partition spec). Each pgshift run ends with `pgshift abort`.
# BENCH_READY_TPS=N: both sides run under a steady load of N inserts/s into
# the source (pgbench -R), from before the step starts until it ends.
# BENCH_READY_RUNS=N (default 3): each kind N times, the baseline and
# pgshift one after the other each time, then the median of the N ratios
# (the baseline alone varied by a third between runs on one server).
set -euo pipefail
ROWS=${BENCH_ROWS:-1000000}
KINDS=${BENCH_READY_KINDS:-operator created}
TPS=${BENCH_READY_TPS:-0}
RUNS=${BENCH_READY_RUNS:-3}
W=$(mktemp -d /tmp/pgshift-bench.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$W"' EXIT
source "$(dirname "$0")/lib.sh"

createdb bench
out "pgshift time-to-ready bench $(date -u +%FT%TZ) on $(nproc) cores; $(psql -XAtc 'select version()' | cut -d, -f1)"
out "rows: $ROWS; pgshift: $PGSHIFT_BIN; load when starting: $(uptime | sed 's/.*load average/load average/')"
OBS_DDL="(id uuid NOT NULL DEFAULT gen_random_uuid(), created_at timestamptz NOT NULL,
  station text NOT NULL, value numeric(12,4), tags text[], readings float8[], payload jsonb, blob bytea)"
q "CREATE TABLE obs $OBS_DDL; ALTER TABLE obs ADD PRIMARY KEY (id, created_at)"
psql -XAtq -v ON_ERROR_STOP=1 -d bench -v rows="$ROWS" -f "$(dirname "$0")/obs-fill.sql"
q "CREATE INDEX ON obs (created_at); CREATE INDEX ON obs (station, created_at)"
q "VACUUM ANALYZE obs"
q "CHECKPOINT"
out "source: $(q "SELECT pg_size_pretty(pg_total_relation_size('obs'))") with indexes; load: ${TPS} inserts/s"
cat >"$W/load.sql" <<'SQL'
INSERT INTO obs (created_at, station, value, tags, payload)
VALUES (timestamptz '2024-01-01' + random() * interval '700 days', 'load', random() * 1000,
        ARRAY['load'], jsonb_build_object('load', true));
SQL
load_pid=
load_start() {
  [ "$TPS" -gt 0 ] || return 0
  "$PGSHIFT_TEST_CLIENTBIN/pgbench" -n -f "$W/load.sql" -c 2 -j 1 -R "$TPS" -T 100000 bench >"$W/load.log" 2>&1 &
  load_pid=$!
}
load_stop() {
  [ -n "$load_pid" ] || return 0
  # TERM: a background job of a non-interactive shell ignores SIGINT.
  kill -TERM "$load_pid" 2>/dev/null || true
  wait "$load_pid" 2>/dev/null || true
  load_pid=
}

operator_target() { # NAME: what a team's plan does before pgshift runs
  q "CREATE TABLE $1 (LIKE obs INCLUDING ALL) PARTITION BY RANGE (created_at)"
  month_parts "$1" bench
}

baseline() {
  operator_target base
  q "SELECT count(*) FROM obs" >/dev/null
  local t0
  load_start
  t0=$(now)
  q "INSERT INTO base SELECT * FROM obs"
  t_base=$(el "$t0" "$(now)")
  load_stop
  q "DROP TABLE base"
  q "CHECKPOINT"
}

# One baseline, then one pgshift run into a target of kind $1; appends
# "ratio pgshift base" to $W/$1.ratios.
ready_once() {
  local kind=$1
  baseline
  slot=pgshift_ready_$kind
  if [ "$kind" = operator ]; then
    operator_target obs_new
    spec=""
  else
    spec="    partition: {by: range (created_at), interval: 1 month}"
  fi
  cat >"$W/$kind.yaml" <<Y
name: ready_$kind
source: "dbname=bench"
tables:
  - source: public.obs
    target: public.obs_new
$spec
Y
  load_start
  t0=$(now)
  "$PGSHIFT_BIN" run --plan "$W/$kind.yaml" ${BENCH_RUN_ARGS:-} >"$W/$kind.log" 2>&1 &
  pid=$!
  wait_log "$W/$kind.log" "streaming from slot" $pid || { cat "$W/$kind.log"; exit 1; }
  t1=$(now)
  end=$(q "SELECT pg_current_wal_insert_lsn()")
  backlog=$(q "SELECT pg_size_pretty('$end'::pg_lsn - confirmed_flush_lsn) FROM pg_replication_slots WHERE slot_name = '$slot'")
  wait_slot "$slot" "$end" $pid || { cat "$W/$kind.log"; exit 1; }
  t2=$(now)
  wpid=$(q "SELECT active_pid FROM pg_replication_slots WHERE slot_name = '$slot'")
  wcpu=$(awk '{printf "%.1f", ($14 + $15) / 100}' "/proc/$wpid/stat" 2>/dev/null || echo "?")
  load_stop
  # Everything the load wrote is applied before the comparison.
  end=$(q "SELECT pg_current_wal_insert_lsn()")
  until [ "$(q "SELECT confirmed_flush_lsn >= '$end' FROM pg_replication_slots WHERE slot_name = '$slot'")" = t ]; do
    kill -0 $pid 2>/dev/null || { cat "$W/$kind.log"; exit 1; }
    sleep 0.05
  done
  kill -TERM $pid
  wait $pid || true
  t_ready=$(el "$t0" "$t2")
  ratio=$(awk "BEGIN {printf \"%.2f\", $t_ready / $t_base}")
  echo "$ratio $t_ready $t_base" >>"$W/$kind.ratios"
  out "$kind target: INSERT…SELECT ${t_base} s; pgshift ready in ${t_ready} s (ratio $ratio): to streaming $(el "$t0" "$t1") s, then the backlog ($backlog) in $(el "$t1" "$t2") s, walsender CPU ${wcpu} s"
  grep -E "range\(s\)|copied|made LOGGED|built|indexes|origin|streaming from|ready .* after the start" "$W/$kind.log" | sed 's/^/    /' | tee -a "$BENCH_OUT"
  same=$(q "SELECT count(*) FROM (SELECT * FROM obs EXCEPT ALL SELECT * FROM obs_new) a")
  extra=$(q "SELECT count(*) FROM (SELECT * FROM obs_new EXCEPT ALL SELECT * FROM obs) a")
  [ "$same$extra" = 00 ] || { out "ERROR: $same rows of the source are not in the target, $extra extra"; exit 1; }
  "$PGSHIFT_BIN" abort --plan "$W/$kind.yaml" --confirm >"$W/$kind.abort.log" 2>&1 || { cat "$W/$kind.abort.log"; exit 1; }
  q "DROP TABLE IF EXISTS obs_new"
  q "CHECKPOINT"
}

for kind in $KINDS; do
  for run in $(seq "$RUNS"); do
    ready_once "$kind"
  done
done
for kind in $KINDS; do
  out "$kind target, median of $RUNS: $(sort -n "$W/$kind.ratios" | awk '{r[NR] = $0} END {
    split(r[int((NR + 1) / 2)], m, " "); printf "ratio %s (pgshift %s s, INSERT…SELECT %s s)", m[1], m[2], m[3]
    printf "; all: "; for (i = 1; i <= NR; i++) { split(r[i], x, " "); printf "%s%s", (i > 1 ? ", " : ""), x[1] } }')"
done
out "results: $BENCH_OUT"
