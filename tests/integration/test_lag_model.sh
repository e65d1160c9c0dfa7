#!/usr/bin/env bash
# The lag model against a known, paced workload (pgbench -R): while pgshift
# keeps up, lag is small and the ETA says caught up; paused, lag in bytes
# matches the WAL written since the last applied commit, lag in seconds the
# time since the pause, the WAL rate the one measured on the server, and the
# ETA says never;
# resumed, the lag drains.
source "$(dirname "$0")/lib/common.sh"

sqlf - <<'SQL' || fail setup
CREATE TABLE lm (id bigserial PRIMARY KEY, pad text);
CREATE TABLE lm_new (LIKE lm INCLUDING ALL);
SQL
cat >"$WORK/plan.yaml" <<Y
name: lm
source: "dbname=${PGDATABASE}"
state_dir: $WORK
apply: {batch_time: 50ms}
cutover: {max_lag: 256kB}
tables:
  - {source: public.lm, target: public.lm_new}
Y
echo "INSERT INTO lm (pad) VALUES (repeat(md5(random()::text), 16));" >"$WORK/load.sql"
start_run "$WORK/plan.yaml" "$WORK/run.log"
wait_streaming "$WORK/run.log"
"$PGSHIFT_TEST_CLIENTBIN/pgbench" -n -f "$WORK/load.sql" -c 2 -j 1 -R 200 -T 40 >"$WORK/pgbench.log" 2>&1 &
LOAD_PID=$!; RUN_PIDS+=("$LOAD_PID")
# The duration is the point: pgshift keeps up with the paced load for 7 s,
# enough samples (2 s) for the smoothed apply rate to settle near 200 xacts/s.
sleep 7
st() { "$PGSHIFT" status --plan "$WORK/plan.yaml" --json >"$WORK/$1.json" 2>&1 || fail "status $1"; }
val() { python3 -c 'import json,sys; v=json.load(open(sys.argv[1]))[sys.argv[2]]; print("null" if v is None else v)' "$WORK/$1.json" "$2"; }
st keep
python3 - "$WORK/keep.json" <<'PY' || fail "keeping up: $(tr -d "\n " < "$WORK/keep.json")"
import json, sys
s = json.load(open(sys.argv[1]))
assert s["phase"] == "ready", s["phase"]
assert s["lag_seconds"] < 2, s["lag_seconds"]
assert s["eta_seconds"] == 0, s["eta_seconds"]
assert 150 <= s["apply_xacts_per_second"] <= 260, s["apply_xacts_per_second"]
PY
pass "keeping up with 200 tps: ready, lag $(val keep lag_seconds) s, ETA 0, applying $(val keep apply_xacts_per_second) xacts/s"

"$PGSHIFT" pause --plan "$WORK/plan.yaml" >"$WORK/pause.out" 2>&1 || fail "pause"
t_pause=$(date +%s.%N)
# pgshift's WAL rate is smoothed over ~10 s (0.7 per 2 s sample) and still
# remembers the writes of its own applier from before the pause: after 8 s
# it read 1.3-1.5x the server's rate, after 12 s the remainder is 0.7^6.
# Both durations are the point: 6 s for the smoothing to forget, then the
# server's WAL rate measured over 6 s.
sleep 6
w1=$(sql "SELECT pg_current_wal_lsn()"); t1=$(date +%s.%N)
sleep 6
w2=$(sql "SELECT pg_current_wal_lsn()"); t2=$(date +%s.%N)
st paused
truth=$(sql "SELECT pg_current_wal_lsn() - applied_lsn FROM pgshift.migrations WHERE name = 'lm'")
rate=$(sql "SELECT round(('$w2'::pg_lsn - '$w1'::pg_lsn) / ($t2 - $t1))")
since=$(echo "$(date +%s.%N) - $t_pause" | bc)
python3 - "$WORK/paused.json" "$truth" "$rate" "$since" <<'PY' || fail "paused: $(cat "$WORK/paused.json"); truth $truth, rate $rate, since $since"
import json, sys
s = json.load(open(sys.argv[1]))
truth, rate, since = float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
assert s["paused"] and s["phase"] == "paused", s
# sampled up to 2 s before the status call: at most 2 s of WAL behind the truth
assert truth - 2.5 * rate <= s["lag_bytes"] <= truth * 1.05, (s["lag_bytes"], truth, rate)
assert since - 3 <= s["lag_seconds"] <= since + 1.5, (s["lag_seconds"], since)
assert 0.6 * rate <= s["wal_bytes_per_second"] <= 1.4 * rate, (s["wal_bytes_per_second"], rate)
# nothing applied while the source writes: the lag can never close
assert s["eta_seconds"] == -1, s["eta_seconds"]
PY
pass "paused: lag $(val paused lag_bytes) bytes (server: $truth), $(val paused lag_seconds) s ($since s since the pause), WAL rate $(val paused wal_bytes_per_second) B/s (server: $rate)"

"$PGSHIFT" resume --plan "$WORK/plan.yaml" >"$WORK/resume.out" 2>&1 || fail "resume"
t_resume=$(date +%s.%N)
# drained: the live status is ready with under 2 s of lag.
drained() {
  st resumed
  [ "$(val resumed phase)" = ready ] &&
    python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); sys.exit(0 if s["lag_seconds"] < 2 else 1)' "$WORK/resumed.json"
}
poll 30 drained || fail "the lag did not drain within 30 s of the resume: $(cat "$WORK/resumed.json")"
ok=$(echo "$(date +%s.%N) - $t_resume" | bc | xargs printf '%.1f')
wait "$LOAD_PID" || fail "pgbench"
wait_applied pgshift_lm
same_rows lm lm_new
pass "resumed: drained to ready within $ok s while the load went on; target equals source"
stop_run
finish
