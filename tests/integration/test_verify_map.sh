#!/usr/bin/env bash
# pgshift verify on mapped tables (columns:, issue #16): the target is
# compared with the MAPPED source. orders -> orders_new changes the key's
# type (int -> bigint), converts and renames columns and adds a constant
# one; its `created` turns from timestamp into timestamptz by itself,
# under a database TimeZone that is not UTC (verify converts it as the
# copy and the apply did). codes -> codes_new turns an int key into text
# (ordered otherwise: "10" < "9"); ev -> ev_new has no key (REPLICA
# IDENTITY FULL, compared as multisets). After a copy and streamed
# changes, scan, walk (key ranges of 500 rows, a fresh point before each)
# and auto find them identical; differences planted in the targets are
# named by the target's key, with exit 4; --repair writes the mapped
# values and verify is identical again. During the rollback window verify
# refuses a mapped table (exit 1); after it the live table is compared
# with <t>_old through the mapping.
source "$(dirname "$0")/lib/common.sh"

sql "ALTER DATABASE $PGDATABASE SET TimeZone = 'America/New_York'" || fail "setting the TimeZone"
sqlf - <<'SQL' || fail setup
CREATE TABLE orders (id serial PRIMARY KEY, amount numeric(12,2) NOT NULL, meta_text text, note text,
  created timestamp NOT NULL DEFAULT '2025-06-01 12:00');
INSERT INTO orders (amount, meta_text, note, created)
  SELECT round((i % 1000) / 7.0, 2), CASE WHEN i % 3 = 0 THEN NULL ELSE '{"k":' || i || ',  "a": [1, 2]}' END,
         CASE WHEN i % 5 = 0 THEN NULL ELSE 'n' || i END, timestamp '2025-03-01' + i * interval '7 minutes'
  FROM generate_series(1, 20000) i;
CREATE TABLE orders_new (id bigint PRIMARY KEY, amount_cents bigint NOT NULL, meta jsonb NOT NULL, memo text,
  created timestamptz NOT NULL, region text NOT NULL DEFAULT 'xx');
CREATE TABLE codes (id int PRIMARY KEY, v text);
INSERT INTO codes SELECT i, 'c' || i FROM generate_series(1, 3000) i;
CREATE TABLE codes_new (id text PRIMARY KEY, v text);
CREATE TABLE ev (a int, amount numeric(10,2), tag text);
ALTER TABLE ev REPLICA IDENTITY FULL;
INSERT INTO ev SELECT i % 50, (i % 13) * 1.25, 't' || (i % 7) FROM generate_series(1, 3000) i;
CREATE TABLE ev_new (a bigint, cents bigint, tag text);
ANALYZE orders, codes, ev;
SQL

P=$WORK/plan.yaml
cat >"$P" <<Y
$(plan_header vm)
state_dir: $WORK
rollback: {window: 10s}
tables:
  - source: public.orders
    target: public.orders_new
    columns:
      id: id::bigint
      amount_cents: (amount * 100)::bigint
      meta: coalesce(meta_text, '{}')::jsonb
      memo: note
      region: "'eu'"
    reverse:
      amount: amount_cents / 100.0
      meta_text: meta::text
      note: memo
      created: created::timestamp
  - source: public.codes
    target: public.codes_new
    columns: {id: id::text}
    reverse: {id: id::int}
  - source: public.ev
    target: public.ev_new
    columns: {a: a::bigint, cents: (amount * 100)::bigint}
    reverse: {amount: cents / 100.0}
Y
for how in scan walk auto; do
  if [ "$how" = walk ]; then
    { cat "$P"; echo "verify: {method: walk, chunk_rows: 500, max_snapshot_age: 0s}"; } >"$WORK/$how.yaml"
  else
    { cat "$P"; echo "verify: {method: $how}"; } >"$WORK/$how.yaml"
  fi
done

"$PGSHIFT" plan --plan "$P" >"$WORK/plan.out" 2>&1 || fail "plan: $(grep -E 'BLOCK|refuse|error' "$WORK/plan.out")"
start_run "$P" "$WORK/run.log"
wait_streaming "$WORK/run.log"
sqlf - <<'SQL' || fail "source changes"
INSERT INTO orders (amount, meta_text, note) SELECT 1.5 * i, NULL, 'new' FROM generate_series(1, 300) i;
UPDATE orders SET amount = amount + 0.25, note = NULL WHERE id % 97 = 0;
UPDATE orders SET meta_text = '{"changed": true}' WHERE id BETWEEN 1000 AND 1050;
DELETE FROM orders WHERE id % 211 = 0;
INSERT INTO codes SELECT i, 'new' FROM generate_series(3001, 3100) i;
UPDATE codes SET v = 'upd' WHERE id % 10 = 0;
DELETE FROM codes WHERE id % 33 = 0;
INSERT INTO ev VALUES (7, 2.5, 'ins'), (7, 2.5, 'ins'), (NULL, 0, NULL);
UPDATE ev SET amount = amount + 1 WHERE a = 3;
DELETE FROM ev WHERE a = 4;
SQL
wait_applied pgshift_vm 60

# verify_json OUT PLAN: a verify --json; its exit code in VRC.
verify_json() {
  "$PGSHIFT" verify --plan "$2" --json "${@:3}" >"$1" 2>"$1.err"
  VRC=$?
}
for how in scan walk auto; do
  verify_json "$WORK/v1-$how.json" "$WORK/$how.yaml"
  [ "$VRC" = 0 ] || fail "verify ($how): exit $VRC $(cat "$WORK/v1-$how.json" "$WORK/v1-$how.json.err")"
  python3 - "$WORK/v1-$how.json" "$how" "$(sql "SELECT count(*) FROM orders")" <<'PY' || fail "verify ($how): $(cat "$WORK/v1-$how.json")"
import json, sys
r = json.load(open(sys.argv[1]))
how = "scan" if sys.argv[2] == "auto" else sys.argv[2]
assert r["consistent"] is True, r
t = {x["table"]: x for x in r["tables"]}
for x in r["tables"]:
    assert x["missing"] == x["extra"] == x["different"] == 0 and x["samples"] == [], x
    assert x["rows_source"] == x["rows_target"] > 0, x
o, c, e = t["public.orders"], t["public.codes"], t["public.ev"]
assert o["rows_source"] == int(sys.argv[3]), o
assert o["method"] == c["method"] == how and e["method"] == "multiset", r
if how == "walk":
    assert o["chunks"] > 30 and c["chunks"] > 5 and r["snapshots"] > 35, (o, c, r["snapshots"])
PY
done
grep -q "public.codes: a key column changes to a type that orders otherwise" "$WORK/v1-walk.json.err" ||
  fail "walk did not say it sorts codes: $(cat "$WORK/v1-walk.json.err")"
pass "mapped tables identical by scan, walk ($(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["snapshots"])' "$WORK/v1-walk.json") points, an int key turned text among them) and auto; a keyless one as a multiset"

# A column the mapping computes, the constant one, a jsonb value, a
# missing row, an extra one; an extra duplicate in the keyless table.
sqlf - <<'SQL' || fail "planting differences"
UPDATE orders_new SET amount_cents = amount_cents + 1 WHERE id = 101;
UPDATE orders_new SET region = 'xx' WHERE id = 303;
UPDATE orders_new SET meta = '{"k": 405, "a": [1, 2, 3]}' WHERE id = 405;
DELETE FROM orders_new WHERE id = 202;
INSERT INTO orders_new VALUES (900001, 5, '{}', 'extra', '2025-01-01', 'eu');
DELETE FROM codes_new WHERE id = '9';
UPDATE codes_new SET v = 'planted' WHERE id = '10';
INSERT INTO ev_new VALUES (3, 100, 't3');
SQL
for how in scan walk auto; do
  verify_json "$WORK/v2-$how.json" "$WORK/$how.yaml"
  [ "$VRC" = 4 ] || fail "verify ($how) with planted differences: exit $VRC $(cat "$WORK/v2-$how.json" "$WORK/v2-$how.json.err")"
  python3 - "$WORK/v2-$how.json" <<'PY' || fail "planted differences ($how): $(cat "$WORK/v2-$how.json")"
import json, sys
r = json.load(open(sys.argv[1]))
t = {x["table"]: x for x in r["tables"]}
o, c, e = t["public.orders"], t["public.codes"], t["public.ev"]
assert (o["missing"], o["extra"], o["different"]) == (1, 1, 3), o
assert all(set(s["key"]) == {"id"} for s in o["samples"]), o["samples"]
got = sorted((s["kind"], s["key"]["id"]) for s in o["samples"])
assert got == [("different", 101), ("different", 303), ("different", 405), ("extra", 900001), ("missing", 202)], got
got = sorted((s["kind"], s["key"]["id"]) for s in c["samples"])
assert got == [("different", "10"), ("missing", "9")], got
assert (e["missing"], e["extra"], e["different"]) == (0, 1, 0), e
PY
done
pass "planted differences named by the target's key by scan, walk and auto: orders different 101 (amount_cents), 303 (region), 405 (meta), missing 202, extra 900001; codes missing \"9\", different \"10\"; one extra row in the keyless table; exit 4"

verify_json "$WORK/rep.json" "$P" --repair --table orders
[ "$VRC" = 0 ] || fail "verify --repair --table orders: exit $VRC $(cat "$WORK/rep.json" "$WORK/rep.json.err")"
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); m=r["tables"][0]; assert r["repaired"] and m["repaired"] == 5 and m["missing"] == m["extra"] == m["different"] == 0, r' "$WORK/rep.json" ||
  fail "verify --repair json: $(cat "$WORK/rep.json")"
same_rows orders_new "(SELECT id::bigint, (amount * 100)::bigint, coalesce(meta_text, '{}')::jsonb, note, created::timestamptz,
  'eu' FROM orders) s"
verify_json "$WORK/rep2.json" "$WORK/walk.yaml" --repair --table codes
[ "$VRC" = 0 ] || fail "verify --repair --table codes: exit $VRC $(cat "$WORK/rep2.json" "$WORK/rep2.json.err")"
same_rows codes_new "(SELECT id::text, v FROM codes) s"
sql "DELETE FROM ev_new WHERE ctid = (SELECT max(ctid) FROM ev_new WHERE a = 3 AND cents = 100 AND tag = 't3')" || fail "undoing"
verify_json "$WORK/v3.json" "$P"
[ "$VRC" = 0 ] || fail "verify after --repair: exit $VRC $(cat "$WORK/v3.json" "$WORK/v3.json.err")"
pass "--repair wrote the mapped values (5 rows of orders, 2 of codes): the targets equal the mapped sources, verify identical"

# After the cutover, the live table against <t>_old through the mapping;
# during the rollback window a mapped table is refused.
"$PGSHIFT" cutover --plan "$P" >"$WORK/cutover.out" 2>&1 || fail "cutover: $(cat "$WORK/cutover.out")"
wait_for 30 "the rollback window" log_has "$WORK/run.log" "rollback window: streaming"
"$PGSHIFT" verify --plan "$P" >"$WORK/vw.out" 2>&1; rc=$?
[ "$rc" = 1 ] && grep -q "public.orders has a column mapping (columns:): during the rollback window" "$WORK/vw.out" ||
  fail "verify during the window: exit $rc $(cat "$WORK/vw.out")"
wait_for 30 "the window to end (the run exits)" gone "$RUN_PID"
verify_json "$WORK/v4.json" "$WORK/walk.yaml"
[ "$VRC" = 0 ] || fail "verify after the cutover: exit $VRC $(cat "$WORK/v4.json" "$WORK/v4.json.err")"
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["after_cutover"] is True and r["consistent"] is True and all(t["rows_source"] == t["rows_target"] > 0 for t in r["tables"]), r' "$WORK/v4.json" ||
  fail "verify after the cutover: $(cat "$WORK/v4.json")"
sql "UPDATE orders SET region = 'us' WHERE id = 77" || fail "write after the cutover"
verify_json "$WORK/v5.json" "$P"
[ "$VRC" = 4 ] || fail "verify after a write to the live table: exit $VRC $(cat "$WORK/v5.json")"
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); t={x["table"]: x for x in r["tables"]}["public.orders"]; assert [(s["kind"], s["key"]) for s in t["samples"]] == [("different", {"id": 77})], t' "$WORK/v5.json" ||
  fail "verify after a write to the live table: $(cat "$WORK/v5.json")"
pass "during the rollback window verify refuses the mapped tables (exit 1); after it the live tables equal <t>_old through the mapping, and a later write shows by its key"
finish
