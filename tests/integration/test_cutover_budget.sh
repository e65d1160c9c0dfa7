#!/usr/bin/env bash
# cutover.max_block, the write-block budget, under a write load (the
# mirrored pgbench workload, 200 transactions/s):
#  - a budget no attempt can meet (1 ms, with the fence's step made 20 ms
#    slower by PGSHIFT_TEST_SLOW_AT: an idle 18 once reached and applied the
#    fence within 1 ms): each attempt lets go of its locks
#    before the swap and says why (the budget, how far the fence was), and
#    after cutover.attempts `pgshift cutover` exits 1 with the migration
#    still streaming; nothing is renamed and the load sees no failed
#    transaction.
#  - a budget it can meet (300 ms, after a restart with the plan changed):
#    the swap is done, and its record says the locks were held no longer
#    than the budget before the swap began; the new table equals the shadow.
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/mirror.sh"

mirror_setup 20000
mirror_plan bud "$WORK/plan.yaml"
sed -i 's/batch_time: 1500ms/batch_time: 100ms/; s/idle_commit_time: 1500ms/idle_commit_time: 20ms/' "$WORK/plan.yaml"
cp "$WORK/plan.yaml" "$WORK/plan-base.yaml"
echo "cutover: {max_block: 1ms, attempts: 2}" >>"$WORK/plan.yaml"

mirror_load_start 200 "$WORK/load.log"
export PGSHIFT_TEST_SLOW_AT=fence:20
start_run "$WORK/plan.yaml" "$WORK/run1.log"
unset PGSHIFT_TEST_SLOW_AT
wait_streaming "$WORK/run1.log"
wait_applied pgshift_bud 120

timeout 120 "$PGSHIFT" cutover --plan "$WORK/plan.yaml" >"$WORK/giveup.out" 2>&1
rc=$?
BUDGET='(the stream did not reach the fence|the changes up to the fence were not applied) within cutover.max_block \(1 ms; the fence was [0-9.]+ kB past the applied position; a larger cutover.max_block lets the application wait longer\); locks released, nothing renamed'
[ "$rc" = 1 ] && grep -qE "2 attempt\(s\) failed; the last: $BUDGET" "$WORK/giveup.out" ||
  fail "a 1 ms budget: exit $rc: $(cat "$WORK/giveup.out")"
[ "$(grep -cE "cutover attempt 1/2: $BUDGET" "$WORK/run1.log")" = 1 ] ||
  fail "the first attempt did not let go on the budget: $(grep 'cutover attempt' "$WORK/run1.log")"
kill -0 "$RUN_PID" 2>/dev/null || fail "the run stopped after the cutover gave up"
[ "$(sql "SELECT relkind FROM pg_class WHERE oid = 'mig'::regclass")" = r ] && [ -z "$(sql "SELECT to_regclass('mig_old')")" ] ||
  fail "renamed after the budget ran out"
wait_applied pgshift_bud 60
pass "max_block 1 ms: both attempts let go before the swap, the run streams on, nothing renamed"

stop_run
cp "$WORK/plan-base.yaml" "$WORK/plan.yaml"
echo "cutover: {max_block: 300ms}" >>"$WORK/plan.yaml"
start_run "$WORK/plan.yaml" "$WORK/run2.log"
wait_streaming "$WORK/run2.log"
timeout 120 "$PGSHIFT" cutover --plan "$WORK/plan.yaml" >"$WORK/cut.out" 2>&1 || fail "cutover: $(cat "$WORK/cut.out")"
wait_for 30 "the run to exit after the cutover" gone "$RUN_PID"
# Held before the swap = lock_held_ms - swap_ms (the swap's own time comes on top).
read -r held swap window <<<"$(sql "SELECT cutover->>'lock_held_ms', cutover->>'swap_ms', cutover->>'write_block_ms'
                                    FROM pgshift.migrations WHERE name = 'bud'" | tr '|' ' ')"
python3 -c 'import sys; h, s = float(sys.argv[1]), float(sys.argv[2]); sys.exit(0 if h - s <= 300 + 20 else 1)' "$held" "$swap" ||
  fail "the locks were held $held ms, of which the swap $swap ms: over the 300 ms budget"
[ "$(sql "SELECT relkind FROM pg_class WHERE oid = 'mig'::regclass")" = p ] || fail "not swapped"
mirror_load_stop "$WORK/load.log"
same_rows mig shadow
pass "max_block 300 ms: swapped; locks held $held ms (swap $swap ms, write-blocking window $window ms); equal to the shadow"
finish
