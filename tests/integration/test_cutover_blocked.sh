#!/usr/bin/env bash
# `run --auto-cutover` that must wait for the operator says so everywhere,
# for as long as it waits, not in one log line (issue #13): `status`
# (text and JSON), /metrics (pgshift_cutover_blocked{reason=...} 1), the
# dashboard's /status JSON, and the `blocked` hook, once per reason. Once
# the operator fixes it the cutover goes ahead by itself and the run exits
# 0. The cause here: a materialized view reading the source.
source "$(dirname "$0")/lib/common.sh"
sqlf - <<'SQL' || fail setup
CREATE TABLE m (id int PRIMARY KEY, v text);
INSERT INTO m SELECT g, 'v' FROM generate_series(1, 2000) g;
CREATE TABLE m_new (LIKE m INCLUDING ALL);
CREATE MATERIALIZED VIEW m_mv AS SELECT count(*) AS n FROM m;
SQL
cat >"$WORK/plan.yaml" <<Y
$(plan_header cb)
state_dir: $WORK
tables: [{source: m, target: m_new}]
hooks:
  blocked: 'echo "\$PGSHIFT_EVENT" >> $WORK/hook.out; cat >> $WORK/hook.json'
Y
"$PGSHIFT" run --plan "$WORK/plan.yaml" --auto-cutover --http 127.0.0.1:0 >"$WORK/run.log" 2>&1 &
RUN_PID=$!
RUN_PIDS+=("$RUN_PID")
wait_for 60 "the run to log its HTTP port" log_has "$WORK/run.log" 'HTTP on .* \(port [0-9]+\)'
PORT=$(sed -n 's/.*HTTP on .* (port \([0-9]*\)).*/\1/p' "$WORK/run.log" | head -n 1)

blocked_json() {
  "$PGSHIFT" status --plan "$WORK/plan.yaml" --json 2>/dev/null |
    python3 -c 'import json,sys; print(json.load(sys.stdin).get("cutover", {}).get("blocked", ""))' 2>/dev/null |
    grep -q 'materialized view public.m_mv reads'
}
wait_for 60 "status --json to show cutover.blocked" blocked_json
"$PGSHIFT" status --plan "$WORK/plan.yaml" >"$WORK/status.txt" 2>&1
grep -q 'cutover blocked: the automatic cutover waits for the operator: materialized view public.m_mv' "$WORK/status.txt" ||
  fail "status text does not say the cutover is blocked: $(cat "$WORK/status.txt")"
# /metrics and /status serve the snapshot published on each stats sample.
metrics_blocked() {
  curl -sf "http://127.0.0.1:$PORT/metrics" >"$WORK/metrics.txt" &&
    grep -qE '^pgshift_cutover_blocked\{migration="cb",reason="materialized view public.m_mv reads .*"\} 1$' "$WORK/metrics.txt"
}
wait_for 30 "/metrics to show pgshift_cutover_blocked 1" metrics_blocked
curl -sf "http://127.0.0.1:$PORT/status" | python3 -c 'import json,sys; sys.exit(0 if "m_mv" in json.load(sys.stdin)["cutover"]["blocked"] else 1)' ||
  fail "/status (the dashboard's) lacks cutover.blocked"
wait_for 30 "the blocked hook to run" log_has "$WORK/hook.out" '^blocked$'
python3 -c 'import json,sys; sys.exit(0 if "m_mv" in json.load(open(sys.argv[1]))["cutover"]["blocked"] else 1)' "$WORK/hook.json" ||
  fail "the hook's status JSON lacks the reason: $(head -c 400 "$WORK/hook.json")"
gone "$RUN_PID" && fail "the run exited while blocked"
pass "a blocked automatic cutover shows in status, status --json, /metrics, /status and the blocked hook"

sql "DROP MATERIALIZED VIEW m_mv" || fail "drop the view"
wait_for 60 "the run to cut over and exit once unblocked" gone "$RUN_PID"
wait "$RUN_PID" || fail "run exited $? after the fix"
log_has "$WORK/run.log" 'the automatic cutover is no longer blocked' || fail "the unblock is not logged"
same_rows m_old m
# Blocked through the checks above (the driver looks again every 5 s), the
# hook fired once for the one reason.
[ "$(grep -c '^blocked$' "$WORK/hook.out")" = 1 ] || fail "the blocked hook fired $(grep -c '^blocked$' "$WORK/hook.out") times for one reason"
pass "after the fix the automatic cutover goes ahead by itself; the blocked hook fired once"
finish
