#!/usr/bin/env bash
# `run --http` answers from the start, so the copy (which can take hours on
# a big table) is visible in /metrics and /status while it runs: phase
# copying, rows copied growing towards the estimate, a copy rate and ETA;
# then the same endpoints follow the stream.
source "$(dirname "$0")/lib/common.sh"

sqlf - <<'SQL' || fail setup
CREATE TABLE big (id bigint PRIMARY KEY, created_at timestamptz NOT NULL, pad text);
INSERT INTO big SELECT i, timestamptz '2025-01-01' + (i % 300) * interval '1 day', repeat(md5(i::text), 4)
  FROM generate_series(1, 1000000) i;
ANALYZE big;
SQL
cat >"$WORK/plan.yaml" <<Y
name: hc
source: "dbname=${PGDATABASE}"
state_dir: $WORK
copy: {workers: 1}
tables:
  - source: public.big
    target: public.big_part
    partition: {by: range (created_at), interval: 1 month}
Y
"$PGSHIFT" run --plan "$WORK/plan.yaml" --http 127.0.0.1:0 >"$WORK/run.log" 2>&1 &
RUN_PID=$!; RUN_PIDS+=("$RUN_PID")
wait_for 10 "the run to log its HTTP port" log_has "$WORK/run.log" 'HTTP on 127\.0\.0\.1:0 \(port [0-9]+\)'
port=$(grep -oE 'HTTP on 127.0.0.1:0 \(port [0-9]+\)' "$WORK/run.log" | grep -oE '[0-9]+\)$' | tr -d ')')
[ -n "$port" ] || fail "no HTTP port logged: $(tail -5 "$WORK/run.log")"
samples=$(python3 - "$port" <<'PY'
import json, re, sys, time, urllib.request
port = sys.argv[1]
seen = []
for _ in range(1500):
    try:
        s = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=2))
    except Exception:
        time.sleep(0.1); continue
    if s["phase"] != "copying":
        if seen: break
        time.sleep(0.1); continue
    t = s["tables"][0]
    seen.append((t["rows_copied"], t["rows_estimated"], t["copy_rows_per_second"], t["copy_eta_seconds"]))
    m = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    if 'pgshift_phase{migration="hc"} 1\n' not in m:
        # The copy ended between the two requests (seen on a loaded machine).
        assert re.search(r'pgshift_phase\{migration="hc"\} [2-5]\n', m), m[:300]
        break
    assert 'pgshift_copy_rows_total{migration="hc",table="public.big"}' in m
    time.sleep(0.1)
print(json.dumps(seen))
PY
) || fail "polling during the copy: $samples"
python3 - "$samples" <<'PY' || fail "copy progress over HTTP: $samples"
import json, sys
seen = json.loads(sys.argv[1])
assert len(seen) >= 3, seen
rows = [r for r, _, _, _ in seen]
assert rows == sorted(rows) and rows[-1] > rows[0], rows
assert all(e > 800000 for _, e, _, _ in seen), seen
assert any(r > 0 and eta > 0 for _, _, r, eta in seen), seen
PY
pass "during the copy /status and /metrics show phase copying, rows growing ($(python3 -c 'import json,sys; s=json.loads(sys.argv[1]); print(s[0][0], "->", s[-1][0])' "$samples")), rate and ETA"
wait_streaming "$WORK/run.log" 300
# streaming_phase: /status shows the phase of the stream (set when the copy
# is done; a stats sample may make it ready).
streaming_phase() {
  python3 - "$port" 2>/dev/null <<'PY'
import json, sys, urllib.request
s = json.load(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/status", timeout=2))
sys.exit(0 if s["phase"] in ("ready", "catching_up") else 1)
PY
}
wait_for 30 "/status to show the phase of the stream (ready or catching_up)" streaming_phase
python3 - "$port" <<'PY' || fail "after the copy"
import json, sys, urllib.request
s = json.load(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/status", timeout=2))
assert s["phase"] in ("ready", "catching_up"), s["phase"]
assert s["tables"][0]["copy_done"] and s["tables"][0]["rows_copied"] == 1000000, s["tables"][0]
PY
pass "after the copy the same endpoints follow the stream (copy_done, 1000000 rows)"
stop_run
finish
