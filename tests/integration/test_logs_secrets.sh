#!/usr/bin/env bash
# Logs and secrets: with --log-format json every line pgshift writes to
# stderr is one JSON object with ts, level and msg; and a password given in
# the plan's conninfo appears nowhere: not in the logs, `status` (text and
# JSON), /metrics, /status, the hooks' input, the state tables or the
# process list.
source "$(dirname "$0")/lib/common.sh"

SECRET=s3cr3t-Pa55
sqlf - <<'SQL' || fail setup
CREATE TABLE s (id int PRIMARY KEY, v text);
INSERT INTO s SELECT i, 'v' || i FROM generate_series(1, 500) i;
CREATE TABLE s_new (LIKE s INCLUDING ALL);
SQL
cat >"$WORK/plan.yaml" <<Y
name: sec
source: "dbname=${PGDATABASE} password=$SECRET"
state_dir: $WORK
hooks: {copy_done: 'cat > $WORK/hook.json', ready: 'env > $WORK/hook.env'}
tables:
  - {source: public.s, target: public.s_new}
Y
"$PGSHIFT" run --plan "$WORK/plan.yaml" --log-format json --http 127.0.0.1:0 >"$WORK/run.out" 2>"$WORK/run.err" &
RUN_PID=$!; RUN_PIDS+=("$RUN_PID")
wait_streaming "$WORK/run.err" 30
port=$(grep -oE 'port [0-9]+\)' "$WORK/run.err" | head -1 | grep -oE '[0-9]+')
# The hooks run in the background: copy_done at once, ready after a stats
# sample found the lag small; each has written its output.
hooks_written() { [ -s "$WORK/hook.json" ] && [ -s "$WORK/hook.env" ]; }
wait_for 30 "the copy_done and ready hooks to write $WORK/hook.json and $WORK/hook.env" hooks_written
ps -eo args | grep -F "$SECRET" | grep -v grep >"$WORK/ps.txt" || true
"$PGSHIFT" status --plan "$WORK/plan.yaml" >"$WORK/status.txt" 2>&1 || fail status
"$PGSHIFT" status --plan "$WORK/plan.yaml" --json >"$WORK/status.json" 2>&1 || fail "status --json"
python3 - "$port" "$WORK" <<'PY' || fail "http"
import sys, urllib.request
for p in ("metrics", "status"):
    open(f"{sys.argv[2]}/http-{p}.txt", "wb").write(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/{p}").read())
PY
sql "SELECT row_to_json(m)::text FROM pgshift.migrations m" >"$WORK/state.txt" || fail state
stop_run
python3 - "$WORK/run.err" <<'PY' || fail "log lines are not JSON: $(head -3 "$WORK/run.err")"
import json, sys
n = 0
for line in open(sys.argv[1]):
    o = json.loads(line)
    assert set(o) >= {"ts", "level", "msg"} and o["level"] in ("debug", "info", "warn", "error"), o
    n += 1
assert n > 5, n
PY
pass "--log-format json: every stderr line is a JSON object with ts, level and msg ($(wc -l <"$WORK/run.err") lines)"
[ -s "$WORK/hook.json" ] || fail "the copy_done hook did not run"
for f in run.out run.err status.txt status.json http-metrics.txt http-status.txt hook.json hook.env state.txt ps.txt; do
  ! grep -qF "$SECRET" "$WORK/$f" || fail "the password appears in $f: $(grep -F "$SECRET" "$WORK/$f" | head -2)"
done
pass "the password appears in no log, status, HTTP body, hook input or environment, state row or process title"
finish
