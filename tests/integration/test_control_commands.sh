#!/usr/bin/env bash
# Steering a live run over its control socket: live status (text, --json,
# --watch), pause holding the apply while the lag grows, resume draining it,
# and postpone / unpostpone of an automatic cutover (unpostpone overrides the
# plan's cutover.postpone). Every status shows the source's server_version
# (as SHOW server_version says) and, while the run streams, the pgoutput
# proto_version of its major (2 on 14, 3 on 15, 4 on 16+) and the origin
# filter (on on 16+); paused, or from the state after the run, not streaming.
source "$(dirname "$0")/lib/common.sh"

sqlf - <<'SQL' || fail setup
CREATE TABLE c (id bigint PRIMARY KEY, v text);
INSERT INTO c SELECT i, md5(i::text) FROM generate_series(1, 5000) i;
CREATE TABLE c_new (LIKE c INCLUDING ALL);
SQL
cat >"$WORK/plan.yaml" <<Y
name: ctl
source: "dbname=${PGDATABASE}"
state_dir: $WORK
apply: {batch_time: 50ms}
cutover: {postpone: true}
hooks:
  copy_done: 'cat > $WORK/hook-copy_done.json'
  ready: 'cat > $WORK/hook-ready.json'
  cutover_started: 'cat > $WORK/hook-cutover_started.json'
  cutover_done: 'cat > $WORK/hook-cutover_done.json; echo "\$PGSHIFT_EVENT \$PGSHIFT_MIGRATION" > $WORK/hook-env'
tables:
  - {source: public.c, target: public.c_new}
Y
"$PGSHIFT" pause --plan "$WORK/plan.yaml" >"$WORK/p0.out" 2>&1; rc=$?
[ "$rc" = 1 ] && grep -q "no \`pgshift run\` is serving migration ctl" "$WORK/p0.out" || fail "pause without a run: $rc $(cat "$WORK/p0.out")"
"$PGSHIFT" run --plan "$WORK/plan.yaml" --auto-cutover >"$WORK/run.log" 2>&1 &
RUN_PID=$!; RUN_PIDS+=("$RUN_PID")
wait_streaming "$WORK/run.log"
wait_applied pgshift_ctl
# A stats sample (every 2 s) with the lag under cutover.max_lag makes it ready.
wait_for 30 "a stats sample: live phase ready" live_phase_is "$WORK/plan.yaml" ready
SV=$(sql "SHOW server_version") && SVN=$(sql "SHOW server_version_num") || fail "SHOW server_version"
case "$PGSHIFT_TEST_PG" in 14) PROTO=2 ;; 15) PROTO=3 ;; *) PROTO=4 ;; esac
if [ "$PGSHIFT_TEST_PG" -ge 16 ]; then ORIGIN=true; else ORIGIN=false; fi
export SV SVN
# source_is JSON PROTO ORIGIN: the status JSON's source fields.
source_is() {
  python3 - "$@" <<'PY'
import json, os, sys
s = json.load(open(sys.argv[1]))
want = {"server_version": os.environ["SV"], "server_version_num": int(os.environ["SVN"]),
        "proto_version": int(sys.argv[2]), "origin_filter": sys.argv[3] == "true"}
got = {k: s.get(k) for k in want}
assert got == want, (got, want)
PY
}

"$PGSHIFT" status --plan "$WORK/plan.yaml" --json >"$WORK/s1.json" 2>&1 || fail "status --json: $(cat "$WORK/s1.json")"
python3 - "$WORK/s1.json" <<'PY' || fail "live status json: $(cat "$WORK/s1.json")"
import json, sys
s = json.load(open(sys.argv[1]))
assert s["running"] is True and s["phase"] == "ready" and s["postponed"] is True, s
assert s["tables"][0]["rows_copied"] == 5000 and s["tables"][0]["copy_done"], s["tables"]
assert s["slot"]["wal_status"] in ("reserved", "extended"), s["slot"]
for k in ("lag_bytes", "lag_seconds", "eta_seconds", "apply_changes_per_second", "applied_lsn"):
    assert k in s, k
PY
source_is "$WORK/s1.json" "$PROTO" "$ORIGIN" || fail "live status json, source: $(cat "$WORK/s1.json")"
"$PGSHIFT" status --plan "$WORK/plan.yaml" >"$WORK/s1.out" 2>&1 || fail status
grep -q "^migration ctl: ready, automatic cutover postponed (live)" "$WORK/s1.out" || fail "live status text: $(cat "$WORK/s1.out")"
[ "$ORIGIN" = true ] && onoff=on || onoff=off
grep -qxF "  source: PostgreSQL $SV, pgoutput proto_version $PROTO, streaming, origin filter $onoff" "$WORK/s1.out" ||
  fail "live status text, source: $(cat "$WORK/s1.out")"
pass "live status from the running run (text and --json; PostgreSQL $SV, proto_version $PROTO, origin filter $onoff)"

"$PGSHIFT" pause --plan "$WORK/plan.yaml" >"$WORK/pause.out" 2>&1 || fail "pause: $(cat "$WORK/pause.out")"
before=$(sql "SELECT count(*) FROM c_new")
sql "INSERT INTO c SELECT i, md5(i::text) FROM generate_series(5001, 25000) i" || fail insert
# paused_lag_over BYTES: the live status is paused with a lag over BYTES (a
# stats sample taken after the insert).
paused_lag_over() {
  "$PGSHIFT" status --plan "$WORK/plan.yaml" --json 2>/dev/null | python3 -c '
import json, sys
s = json.load(sys.stdin)
sys.exit(0 if s["paused"] is True and s["lag_bytes"] > int(sys.argv[1]) else 1)' "$1" 2>/dev/null
}
wait_for 30 "a stats sample of the paused run with the insert's lag (> 500000 bytes)" paused_lag_over 500000
"$PGSHIFT" status --plan "$WORK/plan.yaml" --json >"$WORK/s2.json" 2>&1 || fail "status paused"
python3 - "$WORK/s2.json" <<'PY' || fail "paused status: $(cat "$WORK/s2.json")"
import json, sys
s = json.load(open(sys.argv[1]))
assert s["paused"] is True and s["phase"] == "paused", s
assert s["lag_bytes"] > 500000, s["lag_bytes"]
PY
source_is "$WORK/s2.json" 0 false || fail "paused status, source: $(cat "$WORK/s2.json")"
[ "$(sql "SELECT count(*) FROM c_new")" = "$before" ] || fail "applied while paused"
[ "$(sql "SELECT active FROM pg_replication_slots WHERE slot_name = 'pgshift_ctl'")" = f ] || fail "slot still active while paused"
pass "pause: nothing applied, the slot idle, the lag grows ($(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["lag_bytes"])' "$WORK/s2.json") bytes)"

"$PGSHIFT" resume --plan "$WORK/plan.yaml" >"$WORK/resume.out" 2>&1 || fail "resume: $(cat "$WORK/resume.out")"
wait_applied pgshift_ctl 60
same_rows c c_new
pass "resume drains the lag; the target equals the source"

timeout 3.5 "$PGSHIFT" status --plan "$WORK/plan.yaml" --watch >"$WORK/watch.out" 2>&1
[ "$(grep -c '^migration ctl:' "$WORK/watch.out")" -ge 3 ] || fail "--watch: $(cat "$WORK/watch.out")"
pass "status --watch refreshes every second"

"$PGSHIFT" postpone --plan "$WORK/plan.yaml" >"$WORK/pp.out" 2>&1 || fail "postpone"
grep -q "postponed until \`pgshift unpostpone\`" "$WORK/pp.out" || fail "postpone: $(cat "$WORK/pp.out")"
# The duration is the point: a window in which a run that ignored the hold
# would start its cutover.
sleep 1
[ -z "$(sql "SELECT to_regclass('c_old')")" ] || fail "cut over while postponed"
"$PGSHIFT" unpostpone --plan "$WORK/plan.yaml" >"$WORK/up.out" 2>&1 || fail "unpostpone"
wait_for 20 "the run to cut over and exit after unpostpone" gone "$RUN_PID"
wait "$RUN_PID" || fail "run after unpostpone: $(tail -5 "$WORK/run.log")"
[ -n "$(sql "SELECT to_regclass('c_old')")" ] || fail "not cut over after unpostpone"
same_rows c c_old
pass "postpone holds, unpostpone overrides the plan's postpone: true and the run cuts over"

# No run: from the state tables, the server version from the source now.
"$PGSHIFT" status --plan "$WORK/plan.yaml" --json >"$WORK/s3.json" 2>&1 || fail "status after the run: $(cat "$WORK/s3.json")"
source_is "$WORK/s3.json" 0 false || fail "status from the state, source: $(cat "$WORK/s3.json")"
"$PGSHIFT" status --plan "$WORK/plan.yaml" >"$WORK/s3.out" 2>&1 || fail "status after the run"
grep -qxF "  source: PostgreSQL $SV, not streaming" "$WORK/s3.out" || fail "status from the state, source: $(cat "$WORK/s3.out")"
pass "status from the state tables: PostgreSQL $SV, not streaming"

# Hooks run in the background and may outlive the run: wait until each has
# written its whole input (a complete JSON document) and the last one its
# environment line.
hooks_written() {
  local ev
  for ev in copy_done ready cutover_started cutover_done; do
    python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$WORK/hook-$ev.json" 2>/dev/null || return 1
  done
  grep -q . "$WORK/hook-env" 2>/dev/null
}
wait_for 10 "the four hooks to write their JSON and the cutover_done hook its environment" hooks_written
for ev in copy_done ready cutover_started cutover_done; do
  python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); assert s["migration"] == "ctl" and "lag_bytes" in s, s' "$WORK/hook-$ev.json" ||
    fail "hook $ev: $(cat "$WORK/hook-$ev.json" 2>&1)"
done
[ "$(cat "$WORK/hook-env")" = "cutover_done ctl" ] || fail "hook environment: $(cat "$WORK/hook-env")"
python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); assert s["phase"] == "done" and s["cutover"]["attempts"] >= 1, s' "$WORK/hook-cutover_done.json" ||
  fail "cutover_done hook json: $(cat "$WORK/hook-cutover_done.json")"
pass "hooks ran for copy_done, ready, cutover_started and cutover_done with the status JSON on stdin"
finish
