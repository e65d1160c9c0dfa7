# bench/lib.sh: helpers the bench scripts share (sourced, inside with-pg.sh).
now() { date +%s.%N; }
el() { awk "BEGIN {printf \"%.1f\", $2 - $1}"; }
out() { echo "$*" | tee -a "$BENCH_OUT"; }
q() { psql -XAtq -v ON_ERROR_STOP=1 -d "${BENCH_DB:-bench}" -c "$1"; }
# month_parts TABLE DB [FROM TO]: monthly partitions of TABLE in database
# DB, one per month from FROM to TO (default: the observations' 700 days
# from 2024-01-01), named TABLE_pYYYYMM, like pgshift creates them.
month_parts() {
  local from=${3:-2024-01-01} to=${4:-2026-03-01}
  psql -XAtq -v ON_ERROR_STOP=1 -d "$2" -c "DO \$\$ DECLARE m timestamptz; BEGIN
    FOR m IN SELECT generate_series(timestamptz '$from', timestamptz '$to', interval '1 month') LOOP
      EXECUTE format('CREATE TABLE %I PARTITION OF $1 FOR VALUES FROM (%L) TO (%L)',
        '$1_p' || to_char(m, 'YYYYMM'), m, m + interval '1 month');
    END LOOP; END \$\$"
}
# wait_log FILE PATTERN PID: returns once FILE has a line matching PATTERN
# (grep -E), or 1 once process PID has exited without writing one. tail -f
# waits on inotify: a grep-and-sleep loop every 50 ms took 12% of this
# 2-core machine's CPU (perf, a time-to-ready run), away from the very
# processes being timed.
wait_log() {
  grep -qE -m1 "$2" < <(tail -n +1 -f --pid="$3" "$1" 2>/dev/null)
}
# wait_slot SLOT LSN [PID]: returns once slot SLOT has confirmed LSN. The
# wait runs inside one server session, a check every 10 ms, for up to a
# second per psql: a psql started every 20 ms took about a sixth of this
# 2-core machine's CPU, away from the very processes being timed. With
# PID, returns 1 as soon as that process has exited.
wait_slot() {
  local cond="coalesce((SELECT confirmed_flush_lsn >= '$2' FROM pg_replication_slots WHERE slot_name = '$1'), false)"
  until [ "$(psql -XAtq -v ON_ERROR_STOP=1 -d "${BENCH_DB:-bench}" \
    -c "DO \$\$ BEGIN FOR i IN 1..100 LOOP EXIT WHEN $cond; PERFORM pg_sleep(0.01); END LOOP; END \$\$" \
    -c "SELECT $cond")" = t ]; do
    [ -z "${3:-}" ] || kill -0 "$3" 2>/dev/null || return 1
  done
}
# wait_restart SLOT LSN: waits (up to 30 s) for slot SLOT's restart point
# to reach LSN, which a checkpoint lets it do while the slot streams, so a
# later run does not decode that WAL again. Says so, and goes on, if not.
wait_restart() {
  for _ in $(seq 1 300); do
    [ "$(q "SELECT restart_lsn >= '$2' FROM pg_replication_slots WHERE slot_name = '$1'")" = t ] && return 0
    sleep 0.1
  done
  echo "note: slot $1's restart point did not reach $2 in 30 s" >&2
}
