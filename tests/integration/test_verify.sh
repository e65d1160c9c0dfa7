#!/usr/bin/env bash
# pgshift verify: under a mirrored pgbench write load that never stops, a
# live run is compared at one source LSN and reports no difference, twice;
# differences planted in the targets (an updated row, a deleted one, an
# extra one, a changed TOAST value; a duplicate row in a table without a
# key) are named exactly, by key, with exit 4; the load loses nothing while
# verify holds the applier; without a run the report says it is not at one
# LSN; after the cutover the live table is compared with <t>_old.
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/mirror.sh"

mirror_setup 20000
# Rows pgbench never touches (it updates ids up to 120001 and inserts from
# 200000): the targets' planted differences stay as planted.
sqlf - <<'SQL' || fail setup
INSERT INTO mig SELECT i, timestamptz '2025-02-01', 0, 'quiet', CASE WHEN i = 150004 THEN blob(i) END
  FROM generate_series(150001, 150004) i;
INSERT INTO shadow SELECT * FROM mig WHERE id > 150000;
CREATE TABLE kl (a int, b text);
ALTER TABLE kl REPLICA IDENTITY FULL;
INSERT INTO kl SELECT i % 50, 'x' || (i % 7) FROM generate_series(1, 3000) i;
CREATE TABLE kl_new (LIKE kl);
SQL
cat >"$WORK/plan.yaml" <<Y
name: ver
source: "dbname=${PGDATABASE}"
state_dir: $WORK
apply: {batch_time: 200ms}
cutover: {verify: true}
tables:
  - source: public.mig
    target: public.mig_part
    partition: {by: range (created_at), interval: 1 month, default: true}
  - {source: public.kl, target: public.kl_new}
Y
P="$WORK/plan.yaml"
# The same migration, compared by key ranges of 1000 rows with a fresh
# consistent point before each (verify.max_snapshot_age: 0s).
{ cat "$P"; echo "verify: {method: walk, chunk_rows: 1000, max_snapshot_age: 0s}"; } >"$WORK/walk.yaml"

# Before any run: the migration has not started, nothing to compare yet.
"$PGSHIFT" verify --plan "$P" >"$WORK/v0.out" 2>&1; rc=$?
[ "$rc" = 1 ] && grep -q "does not exist yet" "$WORK/v0.out" || fail "verify before run: $rc $(cat "$WORK/v0.out")"
"$PGSHIFT" verify --plan "$P" --table nosuch >"$WORK/v0b.out" 2>&1; rc=$?
[ "$rc" = 2 ] || fail "verify --table nosuch: $rc $(cat "$WORK/v0b.out")"
pass "verify before the run: no target yet (exit 1); an unknown --table is a usage error (exit 2)"

mirror_load_start 150 "$WORK/pgbench.log"
start_run "$P" "$WORK/run.log"
wait_streaming "$WORK/run.log"
wait_for 30 "a stats sample: live phase catching_up or ready" live_phase_is "$P" catching_up ready

# verify_json OUT [PLAN]: a verify --json; its exit code in VRC.
verify_json() {
  "$PGSHIFT" verify --plan "${2:-$P}" --json >"$1" 2>"$1.err"
  VRC=$?
}
for i in 1 2; do
  verify_json "$WORK/v$i.json"
  [ "$VRC" = 0 ] || fail "verify $i under load: exit $VRC $(cat "$WORK/v$i.json" "$WORK/v$i.json.err")"
  python3 - "$WORK/v$i.json" <<'PY' || fail "verify $i json: $(cat "$WORK/v$i.json")"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["consistent"] is True and r["lsn"], r
t = {x["table"]: x for x in r["tables"]}
m = t["public.mig"]
assert m["rows_source"] == m["rows_target"] and m["rows_source"] > 20000, m
for x in r["tables"]:
    assert x["missing"] == x["extra"] == x["different"] == 0 and x["samples"] == [], x
assert t["public.kl"]["rows_source"] == 3000, t["public.kl"]
PY
done
grep -q "verify: source snapshot at" "$WORK/v2.json.err" || fail "no snapshot line: $(cat "$WORK/v2.json.err")"
# Two at once: each holds the run with its own token; one that finds the
# other's hold says so and leaves it alone.
"$PGSHIFT" verify --plan "$P" --json >"$WORK/va.json" 2>"$WORK/va.err" &
VA=$!
"$PGSHIFT" verify --plan "$P" --json >"$WORK/vb.json" 2>"$WORK/vb.err"; rb=$?
wait "$VA"; ra=$?
for x in a:$ra b:$rb; do
  n=${x%%:*} r=${x##*:}
  if [ "$r" = 0 ]; then
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["consistent"] and all(t["missing"] + t["extra"] + t["different"] == 0 for t in r["tables"]), r' "$WORK/v$n.json" ||
      fail "concurrent verify $n: $(cat "$WORK/v$n.json")"
  else
    [ "$r" = 1 ] && grep -q "another \`pgshift verify\` holds the applier" "$WORK/v$n.err" ||
      fail "concurrent verify $n: exit $r $(cat "$WORK/v$n.err")"
  fi
done
[ "$ra" = 0 ] || [ "$rb" = 0 ] || fail "neither concurrent verify passed"
grep -q "verify: applying up to the verifier's snapshot" "$WORK/run.log" || fail "the run did not log the hold"
pass "verify under load, twice: consistent at one LSN, identical ($(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["tables"][0]["rows_source"])' "$WORK/v2.json") rows)"

# Differences planted in the targets.
sqlf - <<'SQL' || fail "planting differences"
UPDATE mig_part SET note = 'planted' WHERE id = 150001;
DELETE FROM mig_part WHERE id = 150002;
INSERT INTO mig_part VALUES (150099, timestamptz '2025-02-01', 0, 'extra', NULL);
UPDATE mig_part SET big = blob(7) WHERE id = 150004;
INSERT INTO kl_new VALUES (3, 'x3');
SQL
for how in scan walk; do
  plan=$P
  [ "$how" = walk ] && plan=$WORK/walk.yaml
  verify_json "$WORK/v3-$how.json" "$plan"
  [ "$VRC" = 4 ] || fail "verify ($how) with planted differences: exit $VRC $(cat "$WORK/v3-$how.json" "$WORK/v3-$how.json.err")"
  python3 - "$WORK/v3-$how.json" "$how" <<'PY' || fail "planted differences ($how): $(cat "$WORK/v3-$how.json")"
import json, sys
r = json.load(open(sys.argv[1]))
how = sys.argv[2]
t = {x["table"]: x for x in r["tables"]}
m = t["public.mig"]
assert m["method"] == how, m
assert r["consistent"] is True, r
if how == "walk":
    assert r["snapshots"] > 10 and m["chunks"] > 10, (r["snapshots"], m["chunks"])
assert (m["missing"], m["extra"], m["different"]) == (1, 1, 2), m
got = sorted((s["kind"], s["key"]["id"]) for s in m["samples"])
assert got == [("different", 150001), ("different", 150004), ("extra", 150099), ("missing", 150002)], got
assert set(m["samples"][0]["key"]) == {"id", "created_at"}, m["samples"]
k = t["public.kl"]
assert k["method"] == "multiset" and (k["missing"], k["extra"], k["different"]) == (0, 1, 0), k
assert k["rows_target"] == k["rows_source"] + 1, k
PY
done
"$PGSHIFT" verify --plan "$P" --table mig >"$WORK/v4.out" 2>&1; rc=$?
[ "$rc" = 4 ] || fail "verify --table mig text: $rc $(cat "$WORK/v4.out")"
grep -qE 'missing +\{"id" *: *150002' "$WORK/v4.out" && grep -q "1 missing, 1 extra, 2 different" "$WORK/v4.out" &&
  ! grep -q "public.kl" "$WORK/v4.out" || fail "verify --table mig text: $(cat "$WORK/v4.out")"
pass "planted differences named exactly by key, by one pass per side and by key ranges with a fresh point before each $(python3 -c 'import json,sys; print("(%d points)" % json.load(open(sys.argv[1]))["snapshots"])' "$WORK/v3-walk.json"): missing 150002, extra 150099, different 150001 and the TOAST value of 150004; one extra duplicate in the keyless table; exit 4"

"$PGSHIFT" status --plan "$P" --json >"$WORK/st1.json" 2>&1 || fail "status: $(cat "$WORK/st1.json")"
python3 -c 'import json,sys; v=json.load(open(sys.argv[1]))["verify"]; assert v["identical"] is False and v["differences"] == 4 and v["consistent"], v' "$WORK/st1.json" ||
  fail "live status after a verify: $(cat "$WORK/st1.json")"
"$PGSHIFT" verify --plan "$P" --repair >"$WORK/rep0.out" 2>&1; rc=$?
[ "$rc" = 1 ] && grep -q "public.kl has no key" "$WORK/rep0.out" || fail "--repair with a keyless difference: $rc $(cat "$WORK/rep0.out")"
"$PGSHIFT" verify --plan "$P" --table public.mig --repair --json >"$WORK/rep.json" 2>"$WORK/rep.err"; rc=$?
[ "$rc" = 0 ] || fail "verify --repair: exit $rc $(cat "$WORK/rep.json" "$WORK/rep.err")"
python3 - "$WORK/rep.json" <<'PY' || fail "verify --repair json: $(cat "$WORK/rep.json")"
import json, sys
r = json.load(open(sys.argv[1]))
m = r["tables"][0]
assert r["repaired"] is True and m["repaired"] == 4 and m["missing"] == m["extra"] == m["different"] == 0, r
PY
grep -q "verify --repair: public.mig: 4 rows rewritten" "$WORK/rep.err" || fail "repair log: $(cat "$WORK/rep.err")"
pass "status shows the last verify (4 differences); --repair refuses a table without a key, then rewrites the 4 rows of mig under load and verifies again: identical"

# The keyless table's planted row goes by hand; the load goes on, and
# nothing it wrote was lost while verify held or repaired.
sql "DELETE FROM kl_new WHERE ctid = (SELECT max(ctid) FROM kl_new WHERE a = 3 AND b = 'x3')" || fail "undoing"
mirror_load_stop "$WORK/pgbench.log"
wait_applied pgshift_ver 120
same_rows mig_part shadow
same_rows kl_new kl
verify_json "$WORK/v5.json"
[ "$VRC" = 0 ] || fail "verify after the load: exit $VRC $(cat "$WORK/v5.json")"
pass "the load lost nothing across $(grep -c "applying up to the verifier's snapshot" "$WORK/run.log") holds; verify identical after it ($(load_txns "$WORK/pgbench.log") load transactions)"

# verify.max_rate holds a walk to 8000 rows/s on each side, and `pgshift
# pause` holds the verify with the run until `pgshift resume`.
{ cat "$P"; echo "verify: {chunk_rows: 1000, max_rate: 8000}"; } >"$WORK/slow.yaml"
t0=$(date +%s.%N)
"$PGSHIFT" verify --plan "$WORK/slow.yaml" --json >"$WORK/vs.json" 2>"$WORK/vs.err" &
VPID=$!; RUN_PIDS+=("$VPID")
wait_for 20 "the slow verify to start" log_has "$WORK/vs.err" "source snapshot at"
"$PGSHIFT" pause --plan "$P" >"$WORK/pause.out" 2>&1 || fail "pause: $(cat "$WORK/pause.out")"
wait_for 20 "the verify to wait for the paused run" log_has "$WORK/vs.err" "the verify waits for"
gone "$VPID" && fail "verify ended while the run was paused"
"$PGSHIFT" resume --plan "$P" >"$WORK/resume.out" 2>&1 || fail "resume: $(cat "$WORK/resume.out")"
wait "$VPID"; rc=$?
t1=$(date +%s.%N)
[ "$rc" = 0 ] || fail "slow verify: exit $rc $(cat "$WORK/vs.json" "$WORK/vs.err")"
python3 - "$WORK/vs.json" "$t0" "$t1" <<'PY' || fail "slow verify: $(cat "$WORK/vs.json")"
import json, sys
r = json.load(open(sys.argv[1]))
m = r["tables"][0]
took = float(sys.argv[3]) - float(sys.argv[2])
assert m["method"] == "walk", m
assert took >= m["rows_source"] / 8000.0 * 0.9, (took, m["rows_source"])
PY
grep -q "the run resumed; the verify goes on" "$WORK/vs.err" || fail "no resume line: $(cat "$WORK/vs.err")"
pass "verify.max_rate: $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["tables"][0]["rows_source"])' "$WORK/vs.json") rows at most 8000/s; pause holds the verify until resume"

# An interrupted verify resumes: SIGKILL after a few ranges of a slow walk,
# then the same verify goes on from its last range.
"$PGSHIFT" verify --plan "$WORK/slow.yaml" --json >"$WORK/vk.json" 2>"$WORK/vk.err" &
VPID=$!; RUN_PIDS+=("$VPID")
wait_for 20 "the verify to record a few ranges" sql_is t \
  "SELECT coalesce((verify_progress->'current'->'result'->>'chunks')::int >= 3, false) FROM pgshift.migrations WHERE name = 'ver'"
kill -KILL "$VPID"; wait "$VPID" 2>/dev/null
"$PGSHIFT" verify --plan "$WORK/slow.yaml" --json >"$WORK/vr.json" 2>"$WORK/vr.err"; rc=$?
[ "$rc" = 0 ] || fail "resumed verify: exit $rc $(cat "$WORK/vr.json" "$WORK/vr.err")"
grep -q "resuming the verify interrupted in public.mig after its last range" "$WORK/vr.err" || fail "did not resume: $(cat "$WORK/vr.err")"
n=$(sql "SELECT count(*) FROM mig")
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); t=r["tables"][0]; assert t["rows_source"] == int(sys.argv[2]) == t["rows_target"], (t, sys.argv[2])' "$WORK/vr.json" "$n" ||
  fail "resumed verify counts: $(cat "$WORK/vr.json")"
[ "$(sql "SELECT verify_progress IS NULL FROM pgshift.migrations WHERE name = 'ver'")" = t ] || fail "progress left after a complete verify"
pass "a verify killed after a few ranges resumes from its last range ($n rows in all)"

# Without a run: read as they are, and said so.
stop_run
verify_json "$WORK/v6.json"
[ "$VRC" = 0 ] || fail "verify without a run: exit $VRC $(cat "$WORK/v6.json" "$WORK/v6.json.err")"
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["consistent"] is False and "no `pgshift run`" in r["note"], r' "$WORK/v6.json" ||
  fail "verify without a run: $(cat "$WORK/v6.json")"
pass "without a run: compared as they are, marked not consistent"

"$PGSHIFT" status --plan "$P" --json >"$WORK/st2.json" 2>&1 || fail "status: $(cat "$WORK/st2.json")"
python3 -c 'import json,sys; v=json.load(open(sys.argv[1]))["verify"]; assert v["identical"] is True and v["consistent"] is False, v' "$WORK/st2.json" ||
  fail "status from the state after a verify: $(cat "$WORK/st2.json")"
pass "status from the state shows the last verify (identical, not at one LSN)"

# cutover.verify: the last verify was not at one LSN, so no cutover until
# one is; then the live table against <t>_old.
"$PGSHIFT" run --plan "$P" --http 127.0.0.1:0 >"$WORK/run2.log" 2>&1 &
RUN_PID=$!; RUN_PIDS+=("$RUN_PID")
wait_streaming "$WORK/run2.log"
wait_applied pgshift_ver
PORT=$(sed -n 's/.*HTTP on .* (port \([0-9]*\)).*/\1/p' "$WORK/run2.log" | head -n 1)
[ -n "$PORT" ] || fail "the run did not log its HTTP port"
"$PGSHIFT" cutover --plan "$P" >"$WORK/co0.out" 2>&1; rc=$?
[ "$rc" = 1 ] && grep -q "cutover.verify: public.mig has no passing \`pgshift verify\` since the copy" "$WORK/co0.out" ||
  fail "cutover without a passing verify: $rc $(cat "$WORK/co0.out")"
[ -z "$(sql "SELECT to_regclass('mig_old')")" ] || fail "cut over without a passing verify"
verify_json "$WORK/v6b.json"
[ "$VRC" = 0 ] || fail "verify before the cutover: exit $VRC $(cat "$WORK/v6b.json")"
curl -sf --max-time 5 "http://127.0.0.1:$PORT/metrics" >"$WORK/metrics.txt" || fail "GET /metrics"
grep -qx 'pgshift_verify_differences{migration="ver"} 0' "$WORK/metrics.txt" &&
  grep -qx 'pgshift_verify_consistent{migration="ver"} 1' "$WORK/metrics.txt" ||
  fail "verify metrics: $(grep verify "$WORK/metrics.txt")"
"$PGSHIFT" cutover --plan "$P" >"$WORK/co.out" 2>&1 || fail "cutover: $(cat "$WORK/co.out")"
wait_for 30 "the run to exit after the cutover" gone "$RUN_PID"
verify_json "$WORK/v7.json"
[ "$VRC" = 0 ] || fail "verify after the cutover: exit $VRC $(cat "$WORK/v7.json" "$WORK/v7.json.err")"
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["after_cutover"] is True and r["consistent"] is True, r' "$WORK/v7.json" ||
  fail "verify after the cutover: $(cat "$WORK/v7.json")"
sql "UPDATE mig SET v = v + 100 WHERE id = 150003" || fail "write after the cutover"
verify_json "$WORK/v8.json"
[ "$VRC" = 4 ] || fail "verify after a write to the live table: exit $VRC $(cat "$WORK/v8.json")"
pass "cutover.verify refused the cutover until a verify at one LSN passed; after it the live table equals <t>_old, and a later write shows"
finish
