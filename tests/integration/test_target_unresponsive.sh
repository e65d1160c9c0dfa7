#!/usr/bin/env bash
# A target that stops answering (its apply backend SIGSTOPped in the middle
# of a load) must not hold pgshift's loop: `pgshift status` still answers
# live within 1 s, SIGTERM stops the run within 2 s (exit 143), nothing is
# confirmed to the slot past the applied position, and once the backend
# runs again the same `run` brings every row exactly once.
source "$(dirname "$0")/lib/common.sh"
APPLY_PID=
cont_backend() { [ -n "$APPLY_PID" ] && kill -CONT "$APPLY_PID" 2>/dev/null; APPLY_PID=; }
trap 'cont_backend; cleanup_common' EXIT

sql "CREATE TABLE u (id int PRIMARY KEY, v text); CREATE TABLE u_new (LIKE u INCLUDING ALL)" || fail setup
cat >"$WORK/plan.yaml" <<Y
$(plan_header unresp)
state_dir: $WORK
tables: [{source: u, target: u_new}]
Y
start_run "$WORK/plan.yaml" "$WORK/run1.log"
wait_streaming "$WORK/run1.log"
APPLY_PID=$(sql "SELECT pid FROM pg_stat_activity WHERE application_name = 'pgshift apply'")
[ -n "$APPLY_PID" ] || fail "no apply backend"
sql "INSERT INTO u SELECT i, md5(i::text) FROM generate_series(1, 1000) i" || fail "first rows"
wait_applied pgshift_unresp

# The target stops answering; the source keeps writing small transactions.
kill -STOP "$APPLY_PID" || fail "SIGSTOP the apply backend"
# Where the commit record of the first transaction the target cannot apply
# begins: the WAL position read inside it just before COMMIT (nothing else
# writes WAL meanwhile: the applier, which writes pgshift's state, is the
# stopped backend). A slot confirmed at or past a commit record's start
# skips that transaction on restart.
first_commit=$(psql -XAtq -v ON_ERROR_STOP=1 <<'SQL' | tail -1
BEGIN;
INSERT INTO u VALUES (1001, md5('1001'));
SELECT pg_current_wal_insert_lsn();
COMMIT;
SQL
) || fail "first row"
[ -n "$first_commit" ] || fail "first row: no WAL position"
sql "DO \$\$ BEGIN FOR i IN 1002..6000 LOOP INSERT INTO u VALUES (i, md5(i::text)); COMMIT; END LOOP; END \$\$" ||
  fail "load"
# Give the stream time to reach pgshift and the applier to block on it:
# wait until the slot has sent it all (the walsender's sent position).
target=$(sql "SELECT pg_current_wal_insert_lsn()")
sent_all() {
  [ "$(sql "SELECT coalesce(sent_lsn >= '$target', false) FROM pg_stat_replication WHERE application_name LIKE 'pgshift%'" | head -1)" = t ]
}
wait_for 10 "the walsender to send everything up to $target" sent_all

for i in 1 2 3; do
  t0=$(date +%s%N)
  timeout 10 "$PGSHIFT" status --plan "$WORK/plan.yaml" >"$WORK/status$i.out" 2>&1 || fail "status $i failed: $(cat "$WORK/status$i.out")"
  ms=$((($(date +%s%N) - t0) / 1000000))
  grep -q "(live)" "$WORK/status$i.out" || fail "status $i did not come from the live run: $(head -2 "$WORK/status$i.out")"
  [ "$ms" -lt 1000 ] || fail "status $i took $ms ms with the target stuck"
done
pass "status answers live in $ms ms while the target does not answer"

t0=$(date +%s%N)
kill -TERM "$RUN_PID"
wait_for 4 "the run to stop after SIGTERM with the target stuck" gone "$RUN_PID"
wait "$RUN_PID"; rc=$?
ms=$((($(date +%s%N) - t0) / 1000000))
[ "$rc" = 143 ] || fail "exit $rc, want 143"
[ "$ms" -lt 2000 ] || fail "SIGTERM took $ms ms to stop the run"
grep -q "did not answer" "$WORK/run1.log" || fail "no line saying the target did not answer"
pass "SIGTERM stopped the run in $ms ms (exit 143) with the target stuck"

# Nothing the target did not commit was confirmed: the slot may confirm
# past the applied position (keepalives while idle cover pgshift's own
# state writes, which carry no changes, and the records of a transaction
# whose commit has not been decoded yet), never past the commit of the first
# transaction the stopped target could not apply.
applied=$(sql "SELECT applied_lsn FROM pgshift.migrations WHERE name = 'unresp'")
confirmed=$(sql "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'pgshift_unresp'")
[ "$(sql "SELECT '$confirmed'::pg_lsn <= '$first_commit'::pg_lsn")" = t ] ||
  fail "slot confirmed $confirmed, past the commit of the first unapplied transaction (at $first_commit; applied $applied)"
pass "nothing confirmed past what the target committed (confirmed $confirmed, applied $applied, first unapplied commit at $first_commit)"

cont_backend
start_run "$WORK/plan.yaml" "$WORK/run2.log"
wait_streaming "$WORK/run2.log"
wait_applied pgshift_unresp
same_rows u u_new
[ "$(sql "SELECT count(*) FROM u_new")" = 6000 ] || fail "row count"
pass "the next run applied all 6000 rows exactly once"
stop_run
finish
