#!/usr/bin/env bash
# Slot health: with max_slot_wal_keep_size set, status reports the WAL the
# slot retains and how much is left before the server would invalidate it,
# and pgshift warns while the migration is at risk.
source "$(dirname "$0")/lib/common.sh"

sqlf - <<'SQL' || fail setup
ALTER SYSTEM SET max_slot_wal_keep_size = '96MB';
SELECT pg_reload_conf();
CREATE TABLE h (id bigint PRIMARY KEY, pad text);
CREATE TABLE h_new (LIKE h INCLUDING ALL);
SQL
cat >"$WORK/plan.yaml" <<Y
name: sh
source: "dbname=${PGDATABASE}"
state_dir: $WORK
tables:
  - {source: public.h, target: public.h_new}
Y
start_run "$WORK/plan.yaml" "$WORK/run.log"
wait_streaming "$WORK/run.log"
"$PGSHIFT" pause --plan "$WORK/plan.yaml" >/dev/null 2>&1 || fail pause
# about 40 MB of WAL the paused slot must keep
sql "INSERT INTO h SELECT i, repeat(md5(i::text), 10) FROM generate_series(1, 80000) i" || fail insert
# sample_retains BYTES: the live status comes from a stats sample (every 2 s)
# that measured more than BYTES of WAL retained by the slot, i.e. one taken
# after the insert.
sample_retains() {
  "$PGSHIFT" status --plan "$WORK/plan.yaml" --json 2>/dev/null |
    python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)["slot"]["retained_bytes"] > int(sys.argv[1]) else 1)' "$1" 2>/dev/null
}
wait_for 30 "a stats sample after the insert (slot retaining over 20 MB)" sample_retains $((20 << 20))
"$PGSHIFT" status --plan "$WORK/plan.yaml" --json >"$WORK/s.json" 2>&1 || fail status
python3 - "$WORK/s.json" <<'PY' || fail "slot health: $(cat "$WORK/s.json")"
import json, sys
s = json.load(open(sys.argv[1]))["slot"]
assert s["retained_bytes"] > 20 * 2**20, s
assert s["wal_status"] in ("reserved", "extended"), s
assert 0 <= s["safe_bytes_left"] < 96 * 2**20, s
PY
grep -q "slot pgshift_sh is at risk: wal_status" "$WORK/run.log" || fail "no risk warning: $(grep -i slot "$WORK/run.log" | tail -3)"
pass "status shows retained WAL and the safe size left under max_slot_wal_keep_size; pgshift warns ($(python3 -c 'import json,sys; s=json.load(open(sys.argv[1]))["slot"]; print(s["retained_bytes"]>>20, "MB retained,", s["safe_bytes_left"]>>20, "MB left")' "$WORK/s.json"))"
"$PGSHIFT" resume --plan "$WORK/plan.yaml" >/dev/null 2>&1 || fail resume
wait_applied pgshift_sh 60
same_rows h h_new
pass "resumed before the limit: caught up, nothing lost"
stop_run
finish
