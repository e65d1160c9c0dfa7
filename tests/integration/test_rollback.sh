#!/usr/bin/env bash
# The rollback window (#15): under a pgbench write load that never stops and
# never fails, each transaction making the same change to `acct` (whatever
# table has that name at the moment) and to an untouched `shadow`: copy,
# catch up, cutover into a monthly-partitioned table, writes (inserts with
# the serial id, updates, key changes, partition moves, deletes, savepoint
# rollbacks), SIGKILL of `run` during the window, resume, `pgshift rollback`
# while a session blocks the table, writes. At the end the live table (the
# old one again) equals its shadow, its ids continue above every id ever
# used, and no client transaction failed. Then the migration moves again
# from a new copy, and `cleanup` ends the second window.
source "$(dirname "$0")/lib/common.sh"

sqlf - <<'SQL' || fail "setup"
CREATE TABLE acct (id bigserial PRIMARY KEY, created_at timestamptz NOT NULL,
  v int NOT NULL DEFAULT 0, note text);
CREATE TABLE shadow (id bigint PRIMARY KEY, created_at timestamptz NOT NULL,
  v int NOT NULL DEFAULT 0, note text);
INSERT INTO acct (created_at, note) SELECT timestamptz '2025-01-01' + (i % 365) * interval '1 day',
  'n' || i FROM generate_series(1, 30000) i;
INSERT INTO shadow SELECT * FROM acct;
CREATE VIEW acct_recent AS SELECT id, v FROM acct WHERE v > 0;
SQL

# Prepared statements: they must keep working across both swaps. Updates
# and deletes touch only rows that exist before the load (see
# test_cutover_crash.sh: READ COMMITTED between two statements).
cat >"$WORK/load.sql" <<'PGB'
\set id random(1, 30000)
\set op random(1, 100)
BEGIN;
\if :op <= 30
WITH n AS (INSERT INTO acct (created_at, note) VALUES (timestamptz '2025-01-01' + (:id % 400) * interval '1 day', 'ins') RETURNING *) INSERT INTO shadow SELECT * FROM n;
\elif :op <= 60
UPDATE acct SET v = v + 1, note = 'upd' WHERE id = :id;
UPDATE shadow SET v = v + 1, note = 'upd' WHERE id = :id;
\elif :op <= 68
UPDATE acct SET id = -id WHERE id = :id;
UPDATE shadow SET id = -id WHERE id = :id;
\elif :op <= 80
UPDATE acct SET created_at = created_at + interval '45 days' WHERE id = :id;
UPDATE shadow SET created_at = created_at + interval '45 days' WHERE id = :id;
\elif :op <= 88
DELETE FROM acct WHERE id = :id;
DELETE FROM shadow WHERE id = :id;
\else
UPDATE acct SET v = v + 1 WHERE id = :id;
UPDATE shadow SET v = v + 1 WHERE id = :id;
SAVEPOINT s;
UPDATE acct SET note = 'rolled back', v = -1 WHERE id = :id;
UPDATE shadow SET note = 'rolled back', v = -1 WHERE id = :id;
ROLLBACK TO SAVEPOINT s;
\endif
COMMIT;
PGB

cat >"$WORK/plan.yaml" <<Y
name: rb
source: "dbname=${PGDATABASE}"
state_dir: $WORK
apply:
  batch_time: 50ms
cutover:
  max_lag: 1MB
  lock_timeout: 300ms
  attempts: 40
rollback:
  window: 1h
tables:
  - source: public.acct
    target: public.acct_new
    partition: {by: range (created_at), interval: 1 month, default: true}
Y

"$PGSHIFT_TEST_CLIENTBIN/pgbench" -n -M prepared -f "$WORK/load.sql" -c 4 -j 2 -T 35 -R 250 \
  --max-tries=20 >"$WORK/pgbench.log" 2>&1 &
LOAD_PID=$!
RUN_PIDS+=("$LOAD_PID")
wait_for 30 "pgbench's clients to connect" sql_is 4 \
  "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgbench' AND backend_type = 'client backend'"

status_field() { # FIELD: from `pgshift status --json`
  "$PGSHIFT" status --plan "$WORK/plan.yaml" --json 2>/dev/null |
    python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))" "$1" 2>/dev/null
}
field_is() { [ "$(status_field "$1")" = "$2" ]; }

# 1. copy, catch up, cut over; the run stays for the window.
"$PGSHIFT" run --plan "$WORK/plan.yaml" --auto-cutover >"$WORK/run1.log" 2>&1 &
RUN_PID=$!
RUN_PIDS+=("$RUN_PID")
wait_for 120 "the cutover (\"cut over after\" in run1.log)" log_has "$WORK/run1.log" "cut over after"
wait_for 30 "the reverse stream to start" log_has "$WORK/run1.log" "rollback window: streaming"
grep -q "rollback window: slot pgshiftr_rb made" "$WORK/run1.log" || fail "no reverse slot made before the lock"
[ "$(sql "SELECT relkind FROM pg_class WHERE relname = 'acct'")" = p ] || fail "acct is not the partitioned table after the cutover"
[ "$(sql "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'pgshift_rb'")" = 0 ] ||
  fail "the forward slot still holds WAL during the window"
kill -0 "$RUN_PID" || fail "run exited after the cutover despite the window"
if [ "$(sql "SHOW server_version_num")" -ge 170000 ]; then
  [ "$(sql "SELECT failover FROM pg_replication_slots WHERE slot_name = 'pgshiftr_rb'")" = t ] ||
    fail "the reverse slot is not FAILOVER on 17+"
fi
wait_for 20 "status to say reversible" field_is 'd["phase"]' reversible
wait_for 20 "status to show the reverse lag" field_is '"reverse" in d and d["reverse"]["slot"]' pgshiftr_rb
left=$(status_field 'int(d["reverse"]["window_left_seconds"])')
[ "$left" -gt 3000 ] && [ "$left" -le 3600 ] || fail "window left $left s, expected about 3600"
pass "cut over under load; run streams the window back (phase reversible, $left s left)"

# 2. SIGKILL during the window, resume.
sleep 2 # the scenario: writes to the new table while the reverse stream runs, then SIGKILL
kill -KILL "$RUN_PID"
wait "$RUN_PID" 2>/dev/null
start_run "$WORK/plan.yaml" "$WORK/run2.log"
wait_for 30 "the resumed reverse stream" log_has "$WORK/run2.log" "rollback window: streaming"
sleep 2 # the scenario: more writes after the resume
"$PGSHIFT" abort --plan "$WORK/plan.yaml" --confirm >"$WORK/abort.log" 2>&1 && fail "abort during the window succeeded"
grep -q "rollback window is open" "$WORK/abort.log" || fail "abort during the window: $(cat "$WORK/abort.log")"
"$PGSHIFT" cutover --plan "$WORK/plan.yaml" >"$WORK/cutover.log" 2>&1 && fail "cutover during the window succeeded"
grep -q "pgshift rollback. swaps back" "$WORK/cutover.log" || fail "cutover during the window: $(cat "$WORK/cutover.log")"
kill -0 "$RUN_PID" || fail "the run stopped after a refused abort or cutover"
pass "SIGKILL during the window, resumed (abort and cutover refused in it)"

# verify during the window: the live table against <t>_old, at one LSN
# through the reverse run, under the load.
vrc=0
"$PGSHIFT" verify --plan "$WORK/plan.yaml" --json >"$WORK/verify.json" 2>"$WORK/verify.log" || vrc=$?
[ "$vrc" = 0 ] || fail "verify during the window exited $vrc: $(cat "$WORK/verify.json")"
python3 - "$WORK/verify.json" <<'PY' || fail "verify during the window: $(cat "$WORK/verify.json")"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["consistent"], "not at one LSN"
t = d["tables"][0]
assert t["rows_source"] == t["rows_target"] > 30000, t
assert t["missing"] == t["extra"] == t["different"] == 0, t
PY
pass "verify during the window: live table = acct_old at one LSN under the load"

# 3. rollback while a session holds the live table for 1.5 s.
psql -XAtq -c "BEGIN; SELECT count(*) FROM acct; SELECT pg_sleep(1.5); COMMIT;" >/dev/null 2>&1 &
BLOCKER=$!
wait_for 10 "the blocker to hold acct" sql_is 1 \
  "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(1.5)%' AND state = 'active' AND pid <> pg_backend_pid()"
"$PGSHIFT" rollback --plan "$WORK/plan.yaml" >"$WORK/rollback.log" 2>&1 || fail "pgshift rollback failed"
wait "$BLOCKER"
wait_for 60 "run to exit after the rollback" gone "$RUN_PID"
wait "$RUN_PID"
rc=$?
[ "$rc" = 0 ] || fail "run exited $rc after the rollback"
grep -q "swapped back after" "$WORK/run2.log" || fail "no swap back in the run's log"
grep -qE "blocked by pid|locks not granted" "$WORK/run2.log" || fail "the blocker did not show in the rollback's attempts"
[ "$(sql "SELECT relkind FROM pg_class WHERE relname = 'acct'")" = r ] || fail "acct is not the old table after the rollback"
[ "$(sql "SELECT relkind FROM pg_class WHERE relname = 'acct_new'")" = p ] || fail "the new table did not get its name back"
[ "$(sql "SELECT count(*) FROM pg_class WHERE relname = 'acct_old'")" = 0 ] || fail "acct_old still exists"
[ "$(sql "SELECT phase FROM pgshift.migrations WHERE name = 'rb'")" = rolled_back ] || fail "phase is not rolled_back"
[ "$(sql "SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'pgshift%rb'")" = 0 ] || fail "a slot is left"
write_block=$(grep -oE "swapped back after [0-9]+ attempt\(s\): write-blocking window [0-9]+ ms" "$WORK/run2.log" | grep -oE "[0-9]+ ms")
pass "rolled back past a blocker (write-blocking window $write_block)"

# 4. the load goes on against the old table; then everything must match.
wait "$LOAD_PID" || fail "pgbench failed: $(tail -n 5 "$WORK/pgbench.log")"
grep -qE "number of failed transactions: 0 " "$WORK/pgbench.log" || fail "pgbench reported failures: $(grep failed "$WORK/pgbench.log")"
same_rows acct shadow
maxid=$(sql "SELECT max(abs(id)) FROM shadow")
next=$(sql "SELECT nextval(pg_get_serial_sequence('acct', 'id'))")
[ "$next" -gt "$maxid" ] || fail "the old table's ids do not continue: next $next, max ever $maxid"
[ "$(sql "SELECT count(*) FROM acct_recent")" = "$(sql "SELECT count(*) FROM shadow WHERE v > 0")" ] || fail "the view does not read the old table"
txns=$(grep -oE 'number of transactions actually processed: [0-9]+' "$WORK/pgbench.log" | grep -oE '[0-9]+$')
pass "old table equals its shadow ($(sql "SELECT count(*) FROM shadow") rows, $txns transactions, 0 failed); next id $next > $maxid"

# 5. run forward again from a new copy; cleanup ends its window.
"$PGSHIFT" run --plan "$WORK/plan.yaml" --auto-cutover >"$WORK/run3.log" 2>&1 &
RUN_PID=$!
RUN_PIDS+=("$RUN_PID")
wait_for 120 "the second cutover" log_has "$WORK/run3.log" "rollback window: streaming"
grep -q "starts again from a new copy" "$WORK/run3.log" || fail "the second run did not copy again"
"$PGSHIFT" cleanup --plan "$WORK/plan.yaml" --confirm >"$WORK/cleanup.log" 2>&1 || fail "cleanup failed"
wait_for 30 "run to exit after the cleanup" gone "$RUN_PID"
wait "$RUN_PID"
rc=$?
[ "$rc" = 0 ] || fail "run exited $rc after the cleanup"
[ "$(sql "SELECT count(*) FROM pg_class WHERE relname = 'acct_old'")" = 0 ] || fail "cleanup left acct_old"
[ "$(sql "SELECT count(*) FROM pg_replication_slots")" = 0 ] || fail "cleanup left a slot"
same_rows acct shadow
pass "moved again after the rollback; cleanup ended the window"
finish
