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
tables:
  - source: public.mig
    target: public.mig_part
    partition: {by: range (created_at), interval: 1 month, default: true}
  - {source: public.kl, target: public.kl_new}
Y
P="$WORK/plan.yaml"

# Before any run: the migration has not started, nothing to compare yet.
"$PGSHIFT" verify --plan "$P" >"$WORK/v0.out" 2>&1; rc=$?
[ "$rc" = 1 ] && grep -q "does not exist yet" "$WORK/v0.out" || fail "verify before run: $rc $(cat "$WORK/v0.out")"
"$PGSHIFT" verify --plan "$P" --table nosuch >"$WORK/v0b.out" 2>&1; rc=$?
[ "$rc" = 2 ] || fail "verify --table nosuch: $rc $(cat "$WORK/v0b.out")"
pass "verify before the run: no target yet (exit 1); an unknown --table is a usage error (exit 2)"

mirror_load 25 300 "$WORK/pgbench.log"
start_run "$P" "$WORK/run.log"
wait_streaming "$WORK/run.log"
wait_for 30 "a stats sample: live phase catching_up or ready" live_phase_is "$P" catching_up ready

# verify_json OUT: a verify --json; its exit code in VRC.
verify_json() {
  "$PGSHIFT" verify --plan "$P" --json >"$1" 2>"$1.err"
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
verify_json "$WORK/v3.json"
[ "$VRC" = 4 ] || fail "verify with planted differences: exit $VRC $(cat "$WORK/v3.json" "$WORK/v3.json.err")"
python3 - "$WORK/v3.json" <<'PY' || fail "planted differences: $(cat "$WORK/v3.json")"
import json, sys
r = json.load(open(sys.argv[1]))
t = {x["table"]: x for x in r["tables"]}
m = t["public.mig"]
assert (m["missing"], m["extra"], m["different"]) == (1, 1, 2), m
got = sorted((s["kind"], s["key"]["id"]) for s in m["samples"])
assert got == [("different", 150001), ("different", 150004), ("extra", 150099), ("missing", 150002)], got
assert set(m["samples"][0]["key"]) == {"id", "created_at"}, m["samples"]
k = t["public.kl"]
assert (k["missing"], k["extra"], k["different"]) == (0, 1, 0), k
assert k["rows_target"] == k["rows_source"] + 1, k
PY
"$PGSHIFT" verify --plan "$P" --table mig >"$WORK/v4.out" 2>&1; rc=$?
[ "$rc" = 4 ] || fail "verify --table mig text: $rc $(cat "$WORK/v4.out")"
grep -qE 'missing +\{"id" *: *150002' "$WORK/v4.out" && grep -q "1 missing, 1 extra, 2 different" "$WORK/v4.out" &&
  ! grep -q "public.kl" "$WORK/v4.out" || fail "verify --table mig text: $(cat "$WORK/v4.out")"
pass "planted differences named exactly by key (missing 150002, extra 150099, different 150001 and the TOAST value of 150004; one extra duplicate in the keyless table), exit 4"

# Undo them; the load goes on, nothing it wrote was lost while verify held.
sqlf - <<'SQL' || fail "undoing"
UPDATE mig_part SET note = 'quiet' WHERE id = 150001;
INSERT INTO mig_part SELECT * FROM mig WHERE id = 150002;
DELETE FROM mig_part WHERE id = 150099;
UPDATE mig_part SET big = blob(150004) WHERE id = 150004;
DELETE FROM kl_new WHERE ctid = (SELECT max(ctid) FROM kl_new WHERE a = 3 AND b = 'x3');
SQL
mirror_check_load "$WORK/pgbench.log"
wait_applied pgshift_ver 120
same_rows mig_part shadow
same_rows kl_new kl
verify_json "$WORK/v5.json"
[ "$VRC" = 0 ] || fail "verify after the load: exit $VRC $(cat "$WORK/v5.json")"
pass "the load lost nothing across $(grep -c "applying up to the verifier's snapshot" "$WORK/run.log") holds; verify identical after it ($(grep -oE 'number of transactions actually processed: [0-9]+' "$WORK/pgbench.log" | grep -oE '[0-9]+$') load transactions)"

# Without a run: read as they are, and said so.
stop_run
verify_json "$WORK/v6.json"
[ "$VRC" = 0 ] || fail "verify without a run: exit $VRC $(cat "$WORK/v6.json" "$WORK/v6.json.err")"
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["consistent"] is False and "no `pgshift run`" in r["note"], r' "$WORK/v6.json" ||
  fail "verify without a run: $(cat "$WORK/v6.json")"
pass "without a run: compared as they are, marked not consistent"

# After the cutover: the live table against <t>_old.
start_run "$P" "$WORK/run2.log"
wait_streaming "$WORK/run2.log"
wait_applied pgshift_ver
"$PGSHIFT" cutover --plan "$P" >"$WORK/co.out" 2>&1 || fail "cutover: $(cat "$WORK/co.out")"
wait_for 30 "the run to exit after the cutover" gone "$RUN_PID"
verify_json "$WORK/v7.json"
[ "$VRC" = 0 ] || fail "verify after the cutover: exit $VRC $(cat "$WORK/v7.json" "$WORK/v7.json.err")"
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["after_cutover"] is True and r["consistent"] is True, r' "$WORK/v7.json" ||
  fail "verify after the cutover: $(cat "$WORK/v7.json")"
sql "UPDATE mig SET v = v + 100 WHERE id = 150003" || fail "write after the cutover"
verify_json "$WORK/v8.json"
[ "$VRC" = 4 ] || fail "verify after a write to the live table: exit $VRC $(cat "$WORK/v8.json")"
pass "after the cutover: the live table equals <t>_old, and a later write shows"
finish
