#!/usr/bin/env bash
# The per-migration lock and `pgshift abort`: a second `run` of a plan that is
# running exits 1 without disturbing the first; without --confirm abort only
# lists (also while the run is alive); with --confirm a live run is asked to
# stop first over the control socket; with --confirm it drops the slot,
# the publication, the state and the target pgshift created, never a target
# the operator created nor the sources; it is idempotent; a fresh run works
# afterwards; and a plan edited after the run cannot make abort drop a
# target the operator created.
source "$(dirname "$0")/lib/common.sh"

SLOT=pgshift_ab
PLAN=$WORK/plan.yaml

sqlf - <<'SQL' || fail "setup"
CREATE TABLE a1 (id int PRIMARY KEY, v text);
INSERT INTO a1 SELECT i, 'v' || i FROM generate_series(1, 1000) i;
CREATE TABLE a1_new (LIKE a1 INCLUDING ALL);
CREATE TABLE a2 (id bigint PRIMARY KEY, created_at timestamptz NOT NULL, v text);
INSERT INTO a2 SELECT i, timestamptz '2024-01-01' + i * interval '1 hour', 'v' || i
  FROM generate_series(1, 2000) i;
SQL

cat >"$PLAN" <<Y
$(plan_header ab)
state_dir: $WORK
tables:
  - {source: a1, target: a1_new}
  - source: a2
    target: a2_part
    partition: {by: range (created_at), interval: 1 month}
Y

# state: slot, publication, state row, state table rows, a2_part, a1_new (0/1 each)
state() {
  sql "SELECT (SELECT count(*) FROM pg_replication_slots WHERE slot_name = '$SLOT') || ' '
           || (SELECT count(*) FROM pg_publication WHERE pubname = '$SLOT') || ' '
           || CASE WHEN to_regclass('pgshift.migrations') IS NULL THEN 'x'
                   ELSE (SELECT count(*) FROM pgshift.migrations WHERE name = 'ab')::text END || ' '
           || CASE WHEN to_regclass('pgshift.tables') IS NULL THEN 'x'
                   ELSE (SELECT count(*) FROM pgshift.tables WHERE migration = 'ab')::text END || ' '
           || (to_regclass('a2_part') IS NOT NULL)::int || ' '
           || (to_regclass('a1_new') IS NOT NULL)::int"
}
# source_digest: row counts and a checksum of both sources
source_digest() {
  sql "SELECT (SELECT count(*) || ':' || md5(string_agg(id || v, ',' ORDER BY id)) FROM a1) || ' '
           || (SELECT count(*) || ':' || md5(string_agg(id || created_at::text || v, ',' ORDER BY id)) FROM a2)"
}
# run_abort LOG [ARGS...]: sets RC
run_abort() {
  local log=$1
  shift
  timeout -s KILL 90 "$PGSHIFT" abort --plan "$PLAN" "$@" >"$log" 2>&1
  RC=$?
}

# ---- a run holds the migration ----------------------------------------------
start_run "$PLAN" "$WORK/run1.log"
wait_streaming "$WORK/run1.log"
FIRST=$RUN_PID
[ "$(state)" = "1 1 1 2 1 1" ] || fail "after the copy: state $(state), expected '1 1 1 2 1 1'"
same_rows a1 a1_new
same_rows a2 a2_part
pass "run copies and streams (slot, publication, state, created target)"

# (bounded: a second run that ignored the lock would stream on and on)
timeout -s KILL 90 "$PGSHIFT" run --plan "$PLAN" >"$WORK/run2.out" 2>&1
rc=$?
[ "$rc" = 1 ] || fail "a second run exited $rc, expected 1: $(tail -3 "$WORK/run2.out")"
grep -q 'error migration ab: another pgshift run is already running it (backend [0-9]* .*); stop that one first' "$WORK/run2.out" ||
  fail "second run: no 'another run holds it' message: $(tail -3 "$WORK/run2.out")"
! grep -q 'BLOCK\|copy' "$WORK/run2.out" || fail "second run went past the lock: $(cat "$WORK/run2.out")"
kill -0 "$FIRST" 2>/dev/null || fail "the first run died"
sql "INSERT INTO a1 VALUES (5001, 'after second run'); UPDATE a2 SET v = 'upd' WHERE id = 7" || fail "write"
wait_applied "$SLOT"
same_rows a1 a1_new
same_rows a2 a2_part
! grep -q ' error ' "$WORK/run1.log" || fail "the first run logged an error: $(grep ' error ' "$WORK/run1.log")"
pass "a second run of the same plan exits 1 (another run holds it); the first keeps applying"

run_abort "$WORK/abort0.out"
[ "$RC" = 2 ] || fail "abort without --confirm while the run is alive exited $RC, expected 2: $(cat "$WORK/abort0.out")"
! grep -q 'Dropping' "$WORK/abort0.out" || fail "abort without --confirm started dropping: $(cat "$WORK/abort0.out")"
[ "$(state)" = "1 1 1 2 1 1" ] || fail "abort without --confirm dropped something: state $(state)"
kill -0 "$FIRST" 2>/dev/null || fail "the run died during abort"
sql "INSERT INTO a1 VALUES (5002, 'after abort attempt')" || fail "write"
wait_applied "$SLOT"
same_rows a1 a1_new
pass "abort without --confirm while the run is alive lists, drops nothing, and the run goes on"

stop_run
pass "SIGTERM stops the run (exit 143)"
# The server notices the closed replication connection a moment later.
wait_for 30 "slot $SLOT to go inactive after the run stopped" \
  sql_is f "SELECT active FROM pg_replication_slots WHERE slot_name = '$SLOT'"
sources=$(source_digest) || fail "digest"

# ---- abort without --confirm only lists --------------------------------------
run_abort "$WORK/abort1.out"
[ "$RC" = 2 ] || fail "abort without --confirm exited $RC, expected 2: $(cat "$WORK/abort1.out")"
for line in 'Would drop migration ab:' \
  "  replication slot $SLOT: drop" \
  "  publication $SLOT: drop" \
  '  target "public"."a2_part" (created by pgshift): drop' \
  '  state rows: delete' \
  'Nothing was changed; add --confirm to drop.'; do
  grep -qxF "$line" "$WORK/abort1.out" || fail "abort listing lacks '$line': $(cat "$WORK/abort1.out")"
done
grep -q '^  target "public"."a1_new": kept (not created by pgshift' "$WORK/abort1.out" ||
  fail "abort listing: a1_new not kept: $(cat "$WORK/abort1.out")"
[ "$(state)" = "1 1 1 2 1 1" ] || fail "abort without --confirm changed something: state $(state)"
pass "abort without --confirm exits 2, lists what it would drop, drops nothing"

# ---- abort --confirm ---------------------------------------------------------
if [ "$PGSHIFT_TEST_PG" -ge 16 ]; then
  # A session still set up under the migration's origin (a backend that has
  # not exited yet): abort waits it out instead of failing on "in use". The
  # session holds the origin until abort says it waits, then ends.
  [ "$(sql "SELECT count(*) FROM pg_replication_origin WHERE roname = '$SLOT'")" = 1 ] ||
    fail "no replication origin $SLOT after the run"
  psql -XAtq -c "SELECT pg_replication_origin_session_setup('$SLOT')" \
    -c "SELECT pg_sleep(600) /* holds the origin */" >"$WORK/origin.out" 2>&1 &
  RUN_PIDS+=("$!")
  holder="SELECT pid FROM pg_stat_activity WHERE query LIKE '%holds the origin%' AND pid <> pg_backend_pid()"
  wait_for 30 "a session holding the origin" sql_is 1 "SELECT count(*) FROM ($holder) h"
  timeout -s KILL 90 "$PGSHIFT" abort --plan "$PLAN" --confirm >"$WORK/abort2.out" 2>&1 &
  abort_pid=$!
  wait_for 60 "abort to wait for the origin's session" log_has "$WORK/abort2.out" \
    "replication origin\(s\) $SLOT still in use by a session that is ending: .*; waiting up to 10 s"
  sql "SELECT pg_terminate_backend(pid) FROM ($holder) h" >/dev/null || fail "ending the holder"
  wait "$abort_pid"
  RC=$?
  [ "$RC" = 0 ] || fail "abort --confirm exited $RC: $(cat "$WORK/abort2.out")"
  [ "$(sql "SELECT count(*) FROM pg_replication_origin WHERE roname LIKE '$SLOT%'")" = 0 ] ||
    fail "replication origins remain: $(sql "SELECT string_agg(roname, ' ') FROM pg_replication_origin")"
  pass "abort waits for a session that still holds the origin, then drops it"
else
  run_abort "$WORK/abort2.out" --confirm
fi
[ "$RC" = 0 ] || fail "abort --confirm exited $RC: $(cat "$WORK/abort2.out")"
grep -qxF 'Migration ab aborted.' "$WORK/abort2.out" || fail "abort: $(cat "$WORK/abort2.out")"
[ "$(sql "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '$SLOT'")" = 0 ] || fail "the slot is still there"
[ "$(sql "SELECT count(*) FROM pg_publication WHERE pubname = '$SLOT'")" = 0 ] || fail "the publication is still there"
[ "$(sql "SELECT count(*) FROM pgshift.migrations WHERE name = 'ab'")" = 0 ] || fail "the migrations row is still there"
[ "$(sql "SELECT count(*) FROM pgshift.tables WHERE migration = 'ab'")" = 0 ] || fail "the tables rows are still there"
[ -z "$(sql "SELECT to_regclass('a2_part')")" ] || fail "the target pgshift created is still there"
[ "$(sql "SELECT count(*) FROM pg_class WHERE relname LIKE 'a2\_part%'")" = 0 ] || fail "partitions of a2_part remain"
[ "$(sql "SELECT count(*) FROM a1_new")" = 1002 ] || fail "the user-created target lost rows or was dropped"
[ "$(source_digest)" = "$sources" ] || fail "the sources changed: $(source_digest) vs $sources"
[ "$(sql "SELECT count(*) FROM a1")" = 1002 ] && [ "$(sql "SELECT count(*) FROM a2")" = 2000 ] || fail "source row counts"
pass "abort --confirm drops slot, publication, state and the created target; keeps a1_new and the sources"

run_abort "$WORK/abort3.out" --confirm
[ "$RC" = 0 ] || fail "second abort exited $RC: $(cat "$WORK/abort3.out")"
grep -qxF "  replication slot $SLOT: absent" "$WORK/abort3.out" &&
  grep -qxF "  publication $SLOT: absent" "$WORK/abort3.out" &&
  grep -qxF '  state rows: absent' "$WORK/abort3.out" || fail "second abort: $(cat "$WORK/abort3.out")"
! grep -q '(created by pgshift)' "$WORK/abort3.out" || fail "second abort wants to drop a target"
[ "$(sql "SELECT count(*) FROM a1_new")" = 1002 ] || fail "second abort touched a1_new"
pass "abort again exits 0 with nothing to drop"

# ---- a fresh run after abort -------------------------------------------------
timeout -s KILL 90 "$PGSHIFT" run --plan "$PLAN" >"$WORK/run3.out" 2>&1
rc=$?
[ "$rc" = 3 ] || fail "run onto the kept, non-empty a1_new exited $rc, expected 3: $(tail -3 "$WORK/run3.out")"
grep -q 'BLOCK  target "public"."a1_new" already holds rows' "$WORK/run3.out" || fail "run3: $(grep BLOCK "$WORK/run3.out")"
[ "$(sql "SELECT count(*) FROM pg_replication_slots")" = 0 ] || fail "run3 created a slot"
pass "the kept target still holds the copied rows: a fresh run refuses (exit 3) until it is emptied"

sql "TRUNCATE a1_new" || fail "truncate"
sql "INSERT INTO a2 VALUES (9001, '2024-06-01', 'between runs')" || fail "write"
start_run "$PLAN" "$WORK/run4.log"
wait_streaming "$WORK/run4.log"
same_rows a1 a1_new
same_rows a2 a2_part
! grep -q 'the previous copy did not finish' "$WORK/run4.log" || fail "the fresh run found old state"
[ "$(state)" = "1 1 1 2 1 1" ] || fail "fresh run: state $(state)"
sql "UPDATE a1 SET v = 'fresh' WHERE id = 1" || fail "write"
wait_applied "$SLOT"
same_rows a1 a1_new
stop_run
pass "after abort, a fresh run copies everything again and streams"

# ---- abort follows the recorded state, not an edited plan ---------------------
# The operator adds a partition block to the a1 entry after the run: a1_new
# must still be kept (the state says pgshift did not create it).
cat >"$PLAN" <<Y
$(plan_header ab)
state_dir: $WORK
tables:
  - source: a1
    target: a1_new
    partition: {by: range (id), interval: 1000}
  - source: a2
    target: a2_part
    partition: {by: range (created_at), interval: 1 month}
Y
run_abort "$WORK/abort4.out" --confirm
[ "$RC" = 0 ] || fail "abort with the edited plan exited $RC: $(cat "$WORK/abort4.out")"
grep -q '^  target "public"."a1_new": kept (not created by pgshift' "$WORK/abort4.out" ||
  fail "edited plan: a1_new not kept: $(cat "$WORK/abort4.out")"
[ -n "$(sql "SELECT to_regclass('a1_new')")" ] || fail "abort dropped the operator's a1_new after a plan edit"
[ -z "$(sql "SELECT to_regclass('a2_part')")" ] || fail "abort kept a2_part"
[ "$(state)" = "0 0 0 0 0 1" ] || fail "after the last abort: state $(state)"
pass "abort drops only the targets the state says pgshift created, even after the plan was edited"

# ---- abort --confirm while a run is alive: the run is asked to stop first -----
sql "TRUNCATE a1_new" || fail "truncate"
cat >"$PLAN" <<Y
$(plan_header ab)
state_dir: $WORK
tables:
  - {source: a1, target: a1_new}
Y
start_run "$PLAN" "$WORK/run5.log"
wait_streaming "$WORK/run5.log"
run_abort "$WORK/abort5.out" --confirm
[ "$RC" = 0 ] || fail "abort --confirm while the run is alive exited $RC: $(cat "$WORK/abort5.out")"
grep -q 'the running pgshift run of ab stops' "$WORK/abort5.out" || fail "abort5: $(cat "$WORK/abort5.out")"
wait "$RUN_PID"; rc=$?
[ "$rc" = 0 ] || fail "the run asked to stop exited $rc"
[ "$(sql "SELECT count(*) FROM pg_replication_slots")" = 0 ] || fail "slot left after a live abort"
[ ! -e "$WORK/pgshift-$(id -u)/pgshift-ab.sock" ] || fail "control socket left behind"
pass "abort --confirm while the run is alive stops it over the control socket, then drops everything"
finish
