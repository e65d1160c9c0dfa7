#!/usr/bin/env bash
# `partition.manager: pg_partman` (issue #13): after the move, pg_partman's
# maintenance makes the partitions ahead. pgshift names the target's
# partitions the way pg_partman 4 does for the table's final name, and after
# the cutover registers it (create_parent from the first partition) and
# gives it pg_partman's DEFAULT partition.
#  - mig: by month, under the mirrored pgbench load, cut over with 0 failed
#    transactions and equal to its shadow; create_parent makes the months up
#    to now + premake and the DEFAULT partition itself
#  - reg: pg_partman's already (by year), moved by month: the swap ends its
#    registration and renames its DEFAULT partition, the new one takes both
#  - ev: by integer id, every partition pg_partman would make exists
#    already, so create_parent makes none and pgshift adds the DEFAULT one;
#    pg_partman's maintenance then makes the next ids' partitions
# `plan` refuses what cannot work: the extension missing, a method or key
# pg_partman does not take, a name taken; it warns when a source pg_partman
# manages would be left without it.
# pg_partman 4.7.2 comes from Debian's postgresql-15-partman; its SQL-only
# extension files are copied into the other servers' builds by
# scripts/install-pg.sh. Where a server has none, only the refusal is tested.
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/mirror.sh"
mirror_setup 20000
sqlf - <<'SQL' || fail setup
CREATE TABLE ev (id bigint PRIMARY KEY, n int NOT NULL);
INSERT INTO ev SELECT g, g % 7 FROM generate_series(1, 5000) g;
CREATE TABLE ev_shadow (LIKE ev INCLUDING ALL);
INSERT INTO ev_shadow SELECT * FROM ev;
SQL
cat >"$WORK/plan.yaml" <<Y
$(plan_header pm)
state_dir: $WORK
tables:
  - source: mig
    target: mig_new
    partition: {by: range (created_at), interval: 1 month, ahead: 12, manager: pg_partman}
  - source: ev
    target: ev_new
    partition: {by: range (id), interval: 1000, ahead: 2, manager: pg_partman}
Y
available=$(sql "SELECT count(*) FROM pg_available_extensions WHERE name = 'pg_partman'")
"$PGSHIFT" plan --plan "$WORK/plan.yaml" >"$WORK/plan_none.out" 2>&1 && fail "plan accepted a manager that is not installed"
if [ "$available" = 0 ]; then
  grep -qF 'partition.manager: pg_partman is not installed in this database (nor available on the server); fix: CREATE SCHEMA partman; CREATE EXTENSION pg_partman SCHEMA partman, after installing' "$WORK/plan_none.out" ||
    fail "no clear refusal without pg_partman: $(grep -E 'BLOCK|partman' "$WORK/plan_none.out")"
  pass "without pg_partman on the server (PostgreSQL $(sql 'SHOW server_version_num')), plan refuses the manager and says how to get it"
  finish
fi
grep -qE 'BLOCK +partition.manager: pg_partman is not installed in this database; fix: CREATE SCHEMA partman; CREATE EXTENSION pg_partman SCHEMA partman$' "$WORK/plan_none.out" ||
  fail "no clear refusal without the extension: $(grep -E 'BLOCK|partman' "$WORK/plan_none.out")"
sql "CREATE SCHEMA partman; CREATE EXTENSION pg_partman SCHEMA partman" || fail "CREATE EXTENSION pg_partman"
version=$(sql "SELECT extversion FROM pg_extension WHERE extname = 'pg_partman'")
pass "plan refuses the manager until the extension is created; pg_partman $version"

# What pg_partman cannot take, refused when the plan is read.
refused() { # SPEC EXPECTED
  sed "s|partition: {by: range (id), interval: 1000, ahead: 2, manager: pg_partman}|partition: $1|" "$WORK/plan.yaml" >"$WORK/bad.yaml"
  "$PGSHIFT" plan --plan "$WORK/bad.yaml" >"$WORK/bad.out" 2>&1 && fail "plan accepted $1"
  grep -qF "$2" "$WORK/bad.out" || fail "no clear refusal of $1: $(cat "$WORK/bad.out")"
}
refused "{by: hash (id), modulus: 4, manager: pg_partman}" "tables[1].partition.manager: pg_partman manages range partitions by an interval"
refused "{by: range (id), interval: 1000, default: true, manager: pg_partman}" "pg_partman makes the DEFAULT partition itself when pgshift registers the table after the cutover; remove \"default: true\""
refused "{by: range (id), interval: 1000, manager: partman}" "\"partman\" is not a partition manager pgshift knows"
refused "{by: range (id), interval: 1000, manager: pg_partman, subpartition: {by: hash (n), modulus: 2}}" "pgshift registers one level with pg_partman"
sed "s|^source: .*|&\ntarget: \"dbname=${PGDATABASE}\"|" "$WORK/plan.yaml" >"$WORK/tdb.yaml"
"$PGSHIFT" plan --plan "$WORK/tdb.yaml" >"$WORK/tdb.out" 2>&1 && fail "plan accepted a manager with a separate target database"
grep -qE 'BLOCK +partition.manager: pg_partman registers "public"."mig" after the cutover, which needs the new table in the source.s database; the plan has a separate `target:`' "$WORK/tdb.out" ||
  fail "no clear refusal of a manager with a separate target: $(grep -E 'BLOCK|partman' "$WORK/tdb.out")"
pass "plan refuses hash, a DEFAULT partition of pgshift's, an unknown manager, sub-partitions and a separate target database with pg_partman"

# A name pg_partman would give, taken; a source pg_partman manages already.
sql "CREATE TABLE mig_p2025_03 (x int)" || fail "create a table of a partition's name"
"$PGSHIFT" plan --plan "$WORK/plan.yaml" >"$WORK/plan_taken.out" 2>&1 && fail "plan accepted a taken partition name"
grep -qE 'BLOCK +1 table\(s\) of the names pg_partman gives the partitions of "public"."mig" exist already in schema public \(e.g. mig_p2025_03\)' "$WORK/plan_taken.out" ||
  fail "a taken name is not refused: $(grep -E 'BLOCK' "$WORK/plan_taken.out")"
sql "DROP TABLE mig_p2025_03"
sqlf - >/dev/null <<'SQL' || fail "a table pg_partman manages"
CREATE TABLE reg (id bigint NOT NULL, at timestamptz NOT NULL, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
SELECT partman.create_parent('public.reg', 'at', 'native', 'yearly');
INSERT INTO reg SELECT g, timestamptz '2025-01-01' + g * interval '1 hour' FROM generate_series(1, 12000) g;
CREATE TABLE reg_shadow AS SELECT * FROM reg;
SQL
cat >"$WORK/reg.yaml" <<Y
$(plan_header reg)
state_dir: $WORK
tables:
  - {source: reg, target: reg_new, partition: {by: range (at), interval: 1 month}}
Y
"$PGSHIFT" plan --plan "$WORK/reg.yaml" >"$WORK/reg.out" 2>&1 || fail "plan refused reg: $(grep -E 'BLOCK' "$WORK/reg.out")"
grep -qE "warn +pg_partman $version manages \"public\".\"reg\": the swap removes its row of \"partman\".part_config \(the old table is frozen from then on\), and nothing registers the new table" "$WORK/reg.out" ||
  fail "plan does not warn that the new reg would be left without pg_partman: $(grep -E 'partman' "$WORK/reg.out")"
pass "plan refuses a taken partition name, and warns when a source pg_partman manages would leave it"
cat >>"$WORK/plan.yaml" <<Y
  - source: reg
    target: reg_new
    partition: {by: range (at), interval: 1 month, manager: pg_partman}
Y

"$PGSHIFT" plan --plan "$WORK/plan.yaml" >"$WORK/plan.out" 2>&1 || fail "plan refused: $(grep -E 'BLOCK|error' "$WORK/plan.out")"
grep -qF "after the cutover pgshift registers \"public\".\"mig\" with pg_partman $version (partman.create_parent: interval 1 month, premake 12, from the first partition): partitions named as pg_partman names them (mig_p2025_01 .. " "$WORK/plan.out" ||
  fail "plan does not say what pg_partman will do: $(grep -E 'partman' "$WORK/plan.out")"
grep -qF "its DEFAULT partition mig_default" "$WORK/plan.out" || fail "plan does not name the DEFAULT partition"
grep -qE 'warn +pg_partman_bgw is not in shared_preload_libraries' "$WORK/plan.out" || fail "plan does not warn that nothing runs the maintenance"
grep -qE "ok +pg_partman $version manages \"public\".\"reg\": the swap removes its row of \"partman\".part_config \(the old table is frozen from then on\), and pgshift registers the new table after it" "$WORK/plan.out" ||
  fail "plan does not say what becomes of reg's registration: $(grep -E 'reg' "$WORK/plan.out")"
pass "plan says what pg_partman will manage and that nothing runs its maintenance here"

mirror_load_start 150 "$WORK/pgbench.log"
start_run "$WORK/plan.yaml" "$WORK/run.log"
wait_streaming "$WORK/run.log"
parts() { sql "SELECT string_agg(c.relname, ' ' ORDER BY c.relname) FROM pg_inherits h JOIN pg_class c ON c.oid = h.inhrelid WHERE h.inhparent = '$1'::regclass"; }
[ "$(parts ev_new)" = "ev_p0 ev_p1000 ev_p2000 ev_p3000 ev_p4000 ev_p5000 ev_p6000 ev_p7000" ] || fail "ev_new's partitions: $(parts ev_new)"
parts mig_new | grep -qE '^mig_p2025_01 mig_p2025_02 .* mig_p2026_12( |$)' || fail "mig_new's partitions: $(parts mig_new)"
wait_applied pgshift_pm 120
wait_for 30 "a stats sample: live phase ready" live_phase_is "$WORK/plan.yaml" ready
"$PGSHIFT" cutover --plan "$WORK/plan.yaml" >"$WORK/cutover.log" 2>&1 || fail "cutover: $(cat "$WORK/cutover.log")"
wait_for 120 "the run to exit after the cutover" gone "$RUN_PID"
wait "$RUN_PID" || fail "run exited $? after the cutover"
mirror_load_stop "$WORK/pgbench.log"
same_rows mig shadow
same_rows ev ev_shadow
same_rows reg reg_shadow
pass "cut over under load: 0 failed transactions, the new tables equal their shadows"

cfg=$(sql "SELECT parent_table || ' ' || control || ' ' || partition_interval || ' ' || premake FROM partman.part_config ORDER BY 1")
[ "$cfg" = "public.ev id 1000 2
public.mig created_at 1 mon 12
public.reg at 1 mon 3" ] || fail "pg_partman's configuration: $cfg"
# reg was pg_partman's by year: the swap ended that, its DEFAULT partition
# became reg_old_default, and the monthly table is registered in its place.
[ "$(sql "SELECT c.relname FROM pg_inherits h JOIN pg_class c ON c.oid = h.inhrelid WHERE h.inhparent = 'reg_old'::regclass AND pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT'")" = reg_old_default ] ||
  fail "the old reg's DEFAULT partition: $(parts reg_old)"
[ "$(sql "SELECT c.relname FROM pg_inherits h JOIN pg_class c ON c.oid = h.inhrelid WHERE h.inhparent = 'reg'::regclass AND pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT'")" = reg_default ] ||
  fail "the new reg has no DEFAULT partition reg_default: $(parts reg)"
log_has "$WORK/run.log" "the old table's DEFAULT partition reg_default becomes reg_old_default" || fail "the rename is not logged"
log_has "$WORK/run.log" "pg_partman's configuration of 1 old table\(s\) ended with the swap" || fail "the end of reg's registration is not logged"
log_has "$WORK/run.log" 'registering the table with pg_partman: done' || fail "the run does not log the registration"
# mig: create_parent made the months up to now + 12 and its DEFAULT partition.
next=$(sql "SELECT 'mig_p' || to_char(now() + interval '11 months', 'YYYY_MM')")
[ -n "$(sql "SELECT to_regclass('$next')")" ] || fail "no partition $next after the registration: $(parts mig)"
[ "$(sql "SELECT c.relname FROM pg_inherits h JOIN pg_class c ON c.oid = h.inhrelid WHERE h.inhparent = 'mig'::regclass AND pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT'")" = mig_default ] ||
  fail "mig has no DEFAULT partition mig_default"
# ev: every partition existed; pgshift added the DEFAULT partition.
[ "$(sql "SELECT pg_get_expr(relpartbound, oid) FROM pg_class WHERE relname = 'ev_default'")" = DEFAULT ] || fail "ev has no DEFAULT partition: $(parts ev)"
sql "INSERT INTO ev SELECT g, 0 FROM generate_series(5001, 7500) g" || fail "insert into ev"
sql "SELECT partman.run_maintenance('public.ev')" >/dev/null || fail "pg_partman's maintenance of ev failed"
sql "SELECT partman.run_maintenance('public.mig')" >/dev/null || fail "pg_partman's maintenance of mig failed"
[ -n "$(sql "SELECT to_regclass('ev_p9000')")" ] || fail "pg_partman's maintenance made no partition ahead of ev's ids: $(parts ev)"
[ "$(sql "SELECT count(*) FROM ev_default")" = 0 ] || fail "rows in ev's DEFAULT partition"
pass "registered with pg_partman: its partitions ahead and DEFAULT partition exist, and its maintenance extends the new tables"
finish
