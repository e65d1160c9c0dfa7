#!/usr/bin/env bash
# scripts/demo-inner.sh: the demo migration, run by scripts/demo.sh inside a
# throwaway cluster (PG* point at it).
#
# observations (bigserial id) and stations (serial id) are migrated in one
# plan: observations into a table partitioned by month that pgshift creates,
# stations into a plain copy created here. Every load transaction makes the
# same change to a migrated table and to its shadow table, which pgshift
# never touches, so after the cutover the new tables must equal the shadows.
# The plan keeps a rollback window: after the checks, `pgshift rollback`
# swaps back, and the old tables must equal the shadows too.
set -euo pipefail
ROWS=${DEMO_ROWS:-300000}
# The load must outlive the swap by a good margin; a bigger table copies longer.
LOAD_S=${DEMO_LOAD_SECONDS:-$((20 + ROWS / 30000))}
W=$(mktemp -d /tmp/pgshift-demo.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$W"' EXIT
say() { printf '\n== %s\n' "$*"; }
die() { printf '\ndemo FAILED: %s\n' "$*" >&2; exit 1; }
trap 'echo "demo FAILED at line $LINENO: $BASH_COMMAND" >&2' ERR
q() { psql -XAtq -v ON_ERROR_STOP=1 -c "$1"; }
now() { date +%s.%N; }
secs() { awk "BEGIN {printf \"%.1f\", $2 - $1}"; }
PGS=$PGSHIFT_BIN

say "creating the demo schema: observations ($ROWS rows), a view, a serial stations table, shadows"
t_setup=$(now)
# The same schema seeds the docker-compose rehearsal.
psql -Xq -v rows="$ROWS" -f "$(dirname "$0")/../docker/seed.sql" >/dev/null
echo "   done in $(secs "$t_setup" "$(now)") s"

# One transaction = the same change to a migrated table and its shadow. New
# ids come from the sequences (RETURNING ... \gset); now() is the same for
# both statements of a transaction. No retries: any error is a failure.
# The same script drives the docker-compose rehearsal (docker/load.sql).
cp "$(dirname "$0")/../docker/load.sql" "$W/load.sql"

# While $W/hold exists the automatic cutover waits (cutover.postpone_file):
# the demo lets it stream a few seconds first, so status can be seen.
# cutover.verify: no swap until `pgshift verify` found both tables identical.
cat >"$W/plan.yaml" <<Y
name: demo
source: "dbname=$PGDATABASE"
state_dir: $W
tables:
  - source: public.observations
    target: public.observations_partitioned
    partition: {by: range (created_at), interval: 1 month}
  - source: public.stations
    target: public.stations_new
cutover:
  max_lag: 8MB
  lock_timeout: 500ms
  postpone_file: $W/hold
  verify: true
rollback:
  window: 1h
Y
touch "$W/hold"

say "pgshift plan (dry run: checks everything, changes nothing)"
"$PGS" plan --plan "$W/plan.yaml"

say "write load: pgbench, 4 clients, ~500 transactions/s for $LOAD_S s (insert / update / delete, both tables)"
t_load=$(now)
"$PGSHIFT_TEST_CLIENTBIN/pgbench" -n -f "$W/load.sql" -D rows="$ROWS" -c 4 -j 2 -T "$LOAD_S" -R 500 \
  >"$W/load.log" 2>&1 &
load=$!

say "pgshift run --auto-cutover (copy under a snapshot, stream and apply, then swap by itself)"
t0=$(now)
{ "$PGS" run --plan "$W/plan.yaml" --auto-cutover 2>&1; echo $? >"$W/run.rc"; } |
  tee "$W/run.log" | sed -un '/^[0-9]\{4\}-[0-9][0-9]-[0-9][0-9]T/,$ s/^/   run | /p' &
run=$!
phase() { "$PGS" status --plan "$W/plan.yaml" --json 2>/dev/null |
  python3 -c 'import json,sys; print(json.load(sys.stdin).get("phase", ""))' 2>/dev/null || true; }
deadline=$(($(date +%s) + 300))
until [ "$(phase)" = ready ]; do
  [ "$(date +%s)" -lt "$deadline" ] || die "pgshift run did not catch up within 300 s: $(tail -n 5 "$W/run.log")"
  [ -e "$W/run.rc" ] && die "pgshift run exited $(cat "$W/run.rc") before it caught up: $(tail -n 20 "$W/run.log")"
  sleep 0.5
done
t_ready=$(now)
sleep 3
say "pgshift status: caught up, the load still writing, the swap held back by $W/hold"
"$PGS" status --plan "$W/plan.yaml" | sed 's/^/   /'

say "pgshift verify: source and target compared at one source LSN while the load writes"
vrc=0
"$PGS" verify --plan "$W/plan.yaml" >"$W/verify.out" 2>&1 || vrc=$?
sed 's/^/   /' "$W/verify.out"
[ "$vrc" = 0 ] || die "pgshift verify exited $vrc (4: differences)"
left=$(awk "BEGIN {printf \"%d\", $LOAD_S - ($(now) - $t_load)}")
[ "$left" -ge 8 ] || die "only $left s of load left before the swap; set DEMO_LOAD_SECONDS higher"

say "releasing the automatic cutover (rm $W/hold); the load keeps writing for another ~$left s"
t_release=$(now)
rm -f "$W/hold"
# With rollback.window the run stays after the swap: it streams every
# change to the new tables back into the old ones.
deadline=$(($(date +%s) + 120))
until grep -q "rollback window: streaming" "$W/run.log"; do
  [ -e "$W/run.rc" ] && die "pgshift run exited $(cat "$W/run.rc") before the window: $(tail -n 20 "$W/run.log")"
  [ "$(date +%s)" -lt "$deadline" ] || die "no cutover within 120 s: $(tail -n 5 "$W/run.log")"
  sleep 0.2
done
t_done=$(now)
# The highest ids at the swap (the old tables are kept current from now on,
# so they cannot tell what was written after it).
o_cut=$(q "SELECT max(id) FROM observations")
s_oldmax=$(q "SELECT max(id) FROM stations")
grep -q "cut over after" "$W/run.log" || die "pgshift run ended without cutting over"
kill -0 "$load" 2>/dev/null || die "the write load ended before the swap; set DEMO_LOAD_SECONDS higher"
echo "   cut over; run keeps the old tables current for the rollback window; the load is still running"

say "waiting for the write load to finish"
wait "$load" || die "pgbench exited non-zero: $(tail -n 5 "$W/load.log")"
grep -qE "number of failed transactions: 0 " "$W/load.log" ||
  die "pgbench reported failed transactions: $(grep -E 'failed|abort' "$W/load.log")"
tx=$(grep -oE "number of transactions actually processed: [0-9]+" "$W/load.log" | grep -oE "[0-9]+$")

say "checking the outcome"
# The new tables against the shadows, both ways, duplicates counted.
diff_rows() {
  q "SELECT (SELECT count(*) FROM (TABLE $1 EXCEPT ALL TABLE $2) a) || ' ' ||
            (SELECT count(*) FROM (TABLE $2 EXCEPT ALL TABLE $1) b)"
}
read -r o_miss o_extra <<<"$(diff_rows observations_shadow observations)"
read -r s_miss s_extra <<<"$(diff_rows stations_shadow stations)"
o_rows=$(q "SELECT count(*) FROM observations")
s_rows=$(q "SELECT count(*) FROM stations")
[ "$o_miss $o_extra" = "0 0" ] || die "observations differ from the shadow: $o_miss missing, $o_extra extra"
[ "$s_miss $s_extra" = "0 0" ] || die "stations differ from the shadow: $s_miss missing, $s_extra extra"
echo "   observations = observations_shadow ($o_rows rows), stations = stations_shadow ($s_rows rows)"

[ "$(q "SELECT relkind FROM pg_class WHERE oid = 'observations'::regclass")" = p ] ||
  die "observations is not the partitioned table"
parts=$(q "SELECT count(*) FROM pg_inherits WHERE inhparent = 'observations'::regclass")
# Rows the load wrote after the swap exist only in the new tables.
o_after=$(q "SELECT count(*) FROM observations WHERE id > $o_cut")
s_after=$(q "SELECT count(*) FROM stations WHERE id > $s_oldmax")
{ [ "$o_after" -gt 0 ] && [ "$s_after" -gt 0 ]; } ||
  die "no load writes after the swap ($o_after observations, $s_after stations)"
echo "   the load wrote into the new tables after the swap: $o_after observations, $s_after stations inserted"

# The view is re-created on the new tables: its rewrite rule depends on them.
deps=$(q "SELECT string_agg(DISTINCT format('%s(%s)', d.refobjid::regclass, c.relkind), ', '
                   ORDER BY format('%s(%s)', d.refobjid::regclass, c.relkind))
            FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid JOIN pg_class c ON c.oid = d.refobjid
           WHERE r.ev_class = 'observations_with_names'::regclass AND d.refobjid <> r.ev_class")
v_rows=$(q "SELECT count(*) FROM observations_with_names")
j_rows=$(q "SELECT count(*) FROM observations o JOIN stations s ON s.id = o.station_id")
[ "$deps" = "observations(p), stations(r)" ] || die "the view reads $deps, not the new tables"
[ "$v_rows" = "$j_rows" ] || die "the view has $v_rows rows, the new tables join to $j_rows"
echo "   view observations_with_names reads $deps: $v_rows rows, same as the join of the new tables"

s_max=$(q "SELECT max(id) FROM stations")
s_new=$(q "INSERT INTO stations (name) VALUES ('added after the cutover') RETURNING id")
# The shadow gets it too: the rollback below must carry it back.
q "INSERT INTO stations_shadow SELECT * FROM stations WHERE id = $s_new"
[ "$s_new" -gt "$s_max" ] || die "new stations id $s_new is not above the highest $s_max"
echo "   a station inserted now gets id $s_new (highest before: $s_max; at the swap: $s_oldmax)"

# The cutover's record (the live run now streams the window: its status
# shows the reverse stream).
q "SELECT cutover FROM pgshift.migrations WHERE name = 'demo'" >"$W/cutover.json" || die "no cutover record"
read -r wb lw fence swap attempts old_tables <<<"$(python3 -c '
import json, sys
c = json.load(open(sys.argv[1]))
ms = ["%.0f" % c[k] for k in ("write_block_ms", "lock_wait_ms", "fence_ms", "swap_ms")]
print(*ms, c["attempts"], ",".join(c["old_tables"]))' "$W/cutover.json")" || die "no cutover record: $(cat "$W/cutover.json")"

say "outcome"
echo "   rows compared:          observations $o_rows rows, stations $s_rows rows: EQUAL to their"
echo "                           untouched shadows (EXCEPT ALL both ways: 0 missing, 0 extra)"
echo "   write load:             $tx transactions over $LOAD_S s, 0 failed, running before,"
echo "                           during and after the swap"
echo "   observations now:       partitioned by month, $parts partitions; the view reads it"
echo "   cutover:                write-blocking window $wb ms, $attempts attempt(s)"
echo "                           (lock wait $lw ms, fence reached in $fence ms, swap $swap ms)"
echo "   timings:                copy + catch-up $(secs "$t0" "$t_ready") s; released to the reverse"
echo "                           stream $(secs "$t_release" "$t_done") s (swap, foreign key checks)"
echo "   old tables:             ${old_tables//,/, } (kept current for the rollback window)"

say "pgshift status: cut over, the rollback window open"
"$PGS" status --plan "$W/plan.yaml" | sed 's/^/   /'

say "pgshift rollback: the way back (the old tables live again, nothing the load wrote lost)"
"$PGS" rollback --plan "$W/plan.yaml" 2>&1 | sed 's/^/   /'
wait "$run" || true
[ "$(cat "$W/run.rc" 2>/dev/null)" = 0 ] ||
  die "pgshift run exited $(cat "$W/run.rc" 2>/dev/null || echo '?') after the rollback: $(tail -n 20 "$W/run.log")"
[ "$(q "SELECT relkind FROM pg_class WHERE oid = 'observations'::regclass")" = r ] ||
  die "observations is not the old table after the rollback"
read -r o_miss o_extra <<<"$(diff_rows observations_shadow observations)"
read -r s_miss s_extra <<<"$(diff_rows stations_shadow stations)"
[ "$o_miss $o_extra $s_miss $s_extra" = "0 0 0 0" ] ||
  die "after the rollback the old tables differ from the shadows: $o_miss/$o_extra, $s_miss/$s_extra"
s_back=$(q "INSERT INTO stations (name) VALUES ('added after the rollback') RETURNING id")
[ "$s_back" -gt "$s_new" ] || die "after the rollback a new station got id $s_back, not above $s_new"
echo "   observations is the old (plain) table again: $(q "SELECT count(*) FROM observations") rows,"
echo "   EQUAL to its shadow, every write made to the new table carried back; stations too;"
echo "   a station inserted now gets id $s_back (above $s_new, the last id of the new table)"

say "pgshift abort --confirm: end the rolled-back migration (drop the table it created, the state)"
"$PGS" abort --plan "$W/plan.yaml" --confirm 2>&1 | sed 's/^/   /'
slots=$(q "SELECT count(*) FROM pg_replication_slots")
[ "$slots" = 0 ] || die "abort left $slots slots"
echo "   slots gone; the throwaway server is removed next"
