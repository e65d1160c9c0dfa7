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
