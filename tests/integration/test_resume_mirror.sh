#!/usr/bin/env bash
# Exactly once under SIGKILL: a pgbench workload writes the same changes to
# the migrating table and to an untouched shadow table (inserts with large
# incompressible text, updates that leave it untouched, key changes,
# partition moves, deletes, savepoint rollbacks) while pgshift is killed with
# SIGKILL during the copy and at several moments of the catch-up, and resumed
# each time. At the end the target equals the shadow (EXCEPT ALL both ways).
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/mirror.sh"

mirror_setup 100000
mirror_plan mirror "$WORK/plan.yaml"
mirror_load_start 400 "$WORK/pgbench.log"
# The runs below start under load: pgbench's 4 clients are connected.
wait_for 30 "pgbench's 4 clients to connect" sql_is 4 \
  "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgbench' AND backend_type = 'client backend'"

kill9_after() { # SECONDS LOG
  start_run "$WORK/plan.yaml" "$2"
  sleep "$1" # the scenario: SIGKILL at this moment, whatever the run is doing
  kill -KILL "$RUN_PID" 2>/dev/null
  wait "$RUN_PID" 2>/dev/null
}

# 1. during the copy: as soon as the workers start
start_run "$WORK/plan.yaml" "$WORK/run1.log"
# Polled every 20 ms: the kill must land while the copy runs.
WAIT_INTERVAL=0.02 wait_for 30 "run 1 to reach the copy (\"copy: \" in its log)" log_has "$WORK/run1.log" "copy: "
kill -KILL "$RUN_PID"; wait "$RUN_PID" 2>/dev/null
grep -q "streaming from slot" "$WORK/run1.log" && fail "run 1 was meant to die during the copy"
pass "SIGKILL during the copy"

# 2. the resumed run restarts the copy; kill it right after streaming starts
start_run "$WORK/plan.yaml" "$WORK/run2.log"
wait_streaming "$WORK/run2.log"
grep -q "previous copy did not finish" "$WORK/run2.log" || fail "run 2 did not restart the copy"
sleep 0.3 # the scenario: SIGKILL 0.3 s into the stream
kill -KILL "$RUN_PID"; wait "$RUN_PID" 2>/dev/null
pass "resumed copy, SIGKILL right after streaming started"

# 3-6. SIGKILL at several moments of the catch-up
for t in 0.5 1.7 2.9 0.9; do
  kill9_after "$t" "$WORK/run-$t.log"
done
pass "SIGKILL at 4 more moments of the catch-up"

# The last run starts under load, then stays up until everything is applied.
start_run "$WORK/plan.yaml" "$WORK/final.log"
wait_streaming "$WORK/final.log"
mirror_load_stop "$WORK/pgbench.log"
wait_applied pgshift_mirror 180
same_rows mig shadow
same_rows mig_part shadow
pass "target equals shadow after 6 kills ($(sql "SELECT count(*) FROM shadow") rows, $(load_txns "$WORK/pgbench.log") load transactions)"
[ "$(sql "SELECT count(*) FROM mig_part WHERE note = 'rolled back'")" = 0 ] || fail "rolled back savepoint applied"
stop_run
finish
