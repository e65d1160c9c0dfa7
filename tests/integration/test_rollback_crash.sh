#!/usr/bin/env bash
# SIGKILL at each step of the swap back (PGSHIFT_TEST_CRASH_AT), under a
# write load, with no `run` streaming the window (so `pgshift rollback`
# streams it itself): after the kill the world is either the cut-over one
# (the new table live, phase reversible) or the rolled-back one (the old
# table live, phase rolled_back), never half renamed. Running `rollback`
# again finishes; the old table then equals an untouched shadow, its ids go
# on above every id used, and the load saw no failed transaction.
source "$(dirname "$0")/lib/common.sh"

for step in lock swap commit finish; do
  t=k_$step
  sqlf - <<SQL || fail "setup $t"
CREATE TABLE $t (id bigserial PRIMARY KEY, created_at timestamptz NOT NULL, v int NOT NULL DEFAULT 0);
CREATE TABLE ${t}_shadow (id bigint PRIMARY KEY, created_at timestamptz NOT NULL, v int NOT NULL DEFAULT 0);
INSERT INTO $t (created_at) SELECT timestamptz '2025-01-01' + (i % 200) * interval '1 day'
  FROM generate_series(1, 3000) i;
INSERT INTO ${t}_shadow SELECT * FROM $t;
SQL
  # Updates and deletes touch only rows that exist before the load (see
  # test_cutover_crash.sh: READ COMMITTED between two statements).
  cat >"$WORK/$t.sql" <<PGB
\set id random(1, 3000)
\set op random(1, 10)
BEGIN;
\if :op <= 4
WITH n AS (INSERT INTO $t (created_at) VALUES (timestamptz '2025-01-01' + (:id % 200) * interval '1 day') RETURNING *) INSERT INTO ${t}_shadow SELECT * FROM n;
\elif :op <= 8
UPDATE $t SET v = v + 1 WHERE id = :id;
UPDATE ${t}_shadow SET v = v + 1 WHERE id = :id;
\else
DELETE FROM $t WHERE id = :id;
DELETE FROM ${t}_shadow WHERE id = :id;
\endif
COMMIT;
PGB
  cat >"$WORK/$t.yaml" <<Y
name: $t
source: "dbname=${PGDATABASE}"
state_dir: $WORK
apply: {batch_time: 50ms}
rollback: {window: 2h}
tables:
  - source: public.$t
    target: public.${t}_part
    partition: {by: range (created_at), interval: 1 month, default: true}
Y
  # The load runs until the second rollback is done.
  load_start "$WORK/$t.stop" "$WORK/$t.pgbench" -n -f "$WORK/$t.sql" -c 3 -j 1 -R 150
  wait_for 30 "$step: pgbench's 3 clients to connect" sql_is 3 \
    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgbench' AND backend_type = 'client backend'"

  "$PGSHIFT" run --plan "$WORK/$t.yaml" --auto-cutover >"$WORK/$t-run.log" 2>&1 &
  RUN_PID=$!
  RUN_PIDS+=("$RUN_PID")
  wait_for 60 "$step: the window's stream" log_has "$WORK/$t-run.log" "rollback window: streaming"
  kill -KILL "$RUN_PID"
  wait "$RUN_PID" 2>/dev/null

  PGSHIFT_TEST_CRASH_AT=$step "$PGSHIFT" rollback --plan "$WORK/$t.yaml" >"$WORK/$t-crash.log" 2>&1
  rc=$?
  [ "$rc" = 137 ] || fail "$step: rollback was meant to die at $step, exited $rc"
  kind=$(sql "SELECT relkind FROM pg_class WHERE oid = 'public.$t'::regclass")
  phase=$(sql "SELECT phase FROM pgshift.migrations WHERE name = '$t'")
  case "$step:$kind:$phase" in
  finish:r:rolled_back | lock:p:reversible | swap:p:reversible | commit:p:reversible) ;;
  *) fail "$step: after the kill $t has relkind $kind with phase $phase" ;;
  esac
  [ "$(sql "SELECT count(*) FROM pg_class WHERE relname IN ('${t}_old', '${t}_part')")" = 1 ] ||
    fail "$step: half renamed"

  "$PGSHIFT" rollback --plan "$WORK/$t.yaml" >"$WORK/$t-rollback.log" 2>&1 ||
    fail "$step: the second rollback failed"
  [ "$(sql "SELECT relkind FROM pg_class WHERE oid = 'public.$t'::regclass")" = r ] ||
    fail "$step: $t is not the old table after the second rollback"
  [ "$(sql "SELECT phase FROM pgshift.migrations WHERE name = '$t'")" = rolled_back ] ||
    fail "$step: phase is not rolled_back"
  [ "$(sql "SELECT count(*) FROM pgshift.migrations WHERE name = '$t/reverse'")" = 0 ] ||
    fail "$step: the reverse stream's row is left"
  load_stop "$WORK/$t.stop" "$WORK/$t.pgbench" || fail "$step: pgbench: $LOAD_WHY"
  same_rows "$t" "${t}_shadow"
  maxid=$(sql "SELECT max(id) FROM ${t}_shadow")
  next=$(sql "SELECT nextval(pg_get_serial_sequence('$t', 'id'))")
  [ "$next" -gt "$maxid" ] || fail "$step: ids do not continue: next $next, max $maxid"
  pass "SIGKILL at $step of the swap back: $kind/$phase, rollback again finished; $t = shadow, next id $next > $maxid"
  "$PGSHIFT" abort --plan "$WORK/$t.yaml" --confirm >"$WORK/$t-abort.log" 2>&1 || fail "$step: abort after the rollback failed"
done

# The window's end: `run` stops the reverse stream, drops its slot and
# exits 0 with the migration done and the old table kept.
sqlf - <<'SQL' || fail "setup k_end"
CREATE TABLE k_end (id bigserial PRIMARY KEY, created_at timestamptz NOT NULL);
INSERT INTO k_end (created_at) SELECT timestamptz '2025-01-01' + i * interval '1 day' FROM generate_series(1, 500) i;
SQL
cat >"$WORK/k_end.yaml" <<Y
name: k_end
source: "dbname=${PGDATABASE}"
state_dir: $WORK
rollback: {window: 5s}
tables:
  - source: public.k_end
    target: public.k_end_part
    partition: {by: range (created_at), interval: 1 year, default: true}
Y
"$PGSHIFT" run --plan "$WORK/k_end.yaml" --auto-cutover >"$WORK/k_end-run.log" 2>&1 &
RUN_PID=$!
RUN_PIDS+=("$RUN_PID")
wait_for 60 "the window's stream" log_has "$WORK/k_end-run.log" "rollback window: streaming"
sql "INSERT INTO k_end (created_at) VALUES (now())" >/dev/null || fail "insert during the window"
wait_for 30 "run to exit at the window's end" gone "$RUN_PID"
wait "$RUN_PID"
rc=$?
[ "$rc" = 0 ] || fail "run exited $rc at the window's end"
grep -q "the rollback window has ended" "$WORK/k_end-run.log" || fail "no end of window in the log"
[ "$(sql "SELECT phase FROM pgshift.migrations WHERE name = 'k_end'")" = done ] || fail "phase is not done after the window"
[ "$(sql "SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'pgshift%k_end'")" = 0 ] || fail "a slot is left after the window"
[ "$(sql "SELECT count(*) FROM k_end_old")" = 501 ] || fail "the old table did not get the write made during the window"
"$PGSHIFT" rollback --plan "$WORK/k_end.yaml" >"$WORK/k_end-rollback.log" 2>&1 && fail "rollback after the window succeeded"
grep -q "no rollback window open (phase done)" "$WORK/k_end-rollback.log" || fail "rollback after the window: $(cat "$WORK/k_end-rollback.log")"
pass "the window ended: run exited 0, phase done, reverse slot dropped, the old table current to the end; rollback refused after it"

# A window that ended while no run streamed it: `rollback` ends it, and says no.
sed -e 's/k_end/k_late/g' -e 's/window: 5s/window: 3s/' "$WORK/k_end.yaml" >"$WORK/k_late.yaml"
sql "CREATE TABLE k_late (id bigserial PRIMARY KEY, created_at timestamptz NOT NULL);
     INSERT INTO k_late (created_at) SELECT timestamptz '2025-01-01' + i * interval '1 day' FROM generate_series(1, 500) i" ||
  fail "setup k_late"
"$PGSHIFT" run --plan "$WORK/k_late.yaml" --auto-cutover >"$WORK/k_late-run.log" 2>&1 &
RUN_PID=$!
RUN_PIDS+=("$RUN_PID")
wait_for 60 "k_late: the window's stream" log_has "$WORK/k_late-run.log" "rollback window: streaming"
kill -KILL "$RUN_PID"
wait "$RUN_PID" 2>/dev/null
wait_for 30 "k_late: the window to pass" sql_is t \
  "SELECT cutover_at + interval '3 s' < now() FROM pgshift.migrations WHERE name = 'k_late'"
"$PGSHIFT" rollback --plan "$WORK/k_late.yaml" >"$WORK/k_late-rollback.log" 2>&1 && fail "rollback after the window succeeded"
grep -q "no rollback: its window ended" "$WORK/k_late-rollback.log" || fail "k_late: $(cat "$WORK/k_late-rollback.log")"
[ "$(sql "SELECT phase FROM pgshift.migrations WHERE name = 'k_late'")" = done ] || fail "k_late: phase is not done"
[ "$(sql "SELECT relkind FROM pg_class WHERE oid = 'public.k_late'::regclass")" = p ] || fail "k_late: not the new table"
pass "a window that ended with no run: rollback refused it and ended it (phase done)"
finish
