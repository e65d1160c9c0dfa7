#!/usr/bin/env bash
# Column changes during the move (#16), under a pgbench write load that
# mirrors every change of `orders` (whatever table has that name) into an
# untouched `shadow` and never fails:
#   - int -> bigint primary key with a serial: the ids go on after the swap,
#     and the sequence becomes bigint;
#   - a rename plus conversion (amount -> amount_cents), a rename (note ->
#     memo), text -> jsonb (meta_text -> meta), a constant (region), a new
#     column left to its default (added_at);
#   - a row the text -> jsonb expression cannot take, written during the
#     catch-up: the run stops naming its key and column, nothing past it is
#     confirmed; after the plan's expression is fixed the same migration goes
#     on (no new copy);
#   - a view reading the renamed and the retyped columns, carried both ways;
#   - the cutover, a rollback window fed through `reverse:`, the swap back.
# Equality is checked through the mapping: the new table against the mapped
# old one before the swap, the old one (live again) against its shadow after.
# A second, small table then passes int's limit after its cutover.
source "$(dirname "$0")/lib/common.sh"

sqlf - <<'SQL' || fail "setup"
CREATE TABLE orders (id serial PRIMARY KEY, v int NOT NULL DEFAULT 0,
  amount numeric(12,2) NOT NULL DEFAULT 0, meta_text text, note text,
  cur char(3) NOT NULL DEFAULT 'USD', body text);
-- body: out of line (TOAST) for the first rows, which the load's key
-- changes then update without sending it
ALTER TABLE orders ALTER COLUMN body SET STORAGE EXTERNAL;
CREATE TABLE shadow (id bigint PRIMARY KEY, v int NOT NULL);
INSERT INTO orders (v, amount, meta_text, note)
  SELECT i % 7, i * 1.25, CASE WHEN i % 3 = 0 THEN NULL ELSE '{"i": ' || i || '}' END, 'n' || i
    FROM generate_series(1, 20000) i;
UPDATE orders SET body = (SELECT string_agg(md5(id::text || g), '') FROM generate_series(1, 200) g)
  WHERE id <= 300;
INSERT INTO shadow SELECT id, v FROM orders;
CREATE VIEW orders_notes AS SELECT id, note FROM orders WHERE v > 0;
-- The operator's target: bigint id on the same sequence, new names and types.
CREATE TABLE orders_new (id bigint PRIMARY KEY DEFAULT nextval('orders_id_seq'),
  v int NOT NULL DEFAULT 0, amount_cents bigint NOT NULL DEFAULT 0,
  meta jsonb NOT NULL DEFAULT '{}', memo text, region text NOT NULL DEFAULT 'xx',
  added_at timestamptz NOT NULL DEFAULT now(), cur char(3) NOT NULL DEFAULT 'XXX', body text);
SQL

# Only what both tables have (id, v): the application keeps working across
# the swap and the swap back. Extended protocol, unnamed statements: a
# prepared statement returning id would fail once after the swap ("cached
# plan must not change result type"), see README.
cat >"$WORK/load.sql" <<'PGB'
\set id random(1, 20000)
\set low random(1, 300)
\set op random(1, 100)
BEGIN;
\if :op <= 35
WITH n AS (INSERT INTO orders (v) VALUES (:op) RETURNING id, v) INSERT INTO shadow SELECT * FROM n;
\elif :op <= 75
UPDATE orders SET v = v + 1 WHERE id = :id;
UPDATE shadow SET v = v + 1 WHERE id = :id;
\elif :op <= 80
UPDATE orders SET id = -id WHERE id = :id;
UPDATE shadow SET id = -id WHERE id = :id;
\elif :op <= 85
UPDATE orders SET id = -id WHERE id = :low;
UPDATE shadow SET id = -id WHERE id = :low;
\else
DELETE FROM orders WHERE id = :id;
DELETE FROM shadow WHERE id = :id;
\endif
COMMIT;
PGB

meta_expr="coalesce(meta_text, '{}')::jsonb"
write_plan() {
  cat >"$WORK/plan.yaml" <<Y
$(plan_header cm)
state_dir: $WORK
cutover:
  max_lag: 1MB
  lock_timeout: 300ms
  attempts: 40
rollback:
  window: 1h
tables:
  - source: public.orders
    target: public.orders_new
    columns:
      id: id::bigint
      amount_cents: (amount * 100)::bigint
      meta: $meta_expr
      memo: note
      region: "'eu'"
    reverse:
      amount: amount_cents / 100.0
      meta_text: meta::text
      note: memo
Y
}
write_plan

out=$("$PGSHIFT" plan --plan "$WORK/plan.yaml" 2>&1) || fail "plan refused the mapping: $out"
for want in "column amount_cents \(bigint\) <- \(amount \* 100\)::bigint; reads amount" \
  "column region \(text\) <- 'eu'; a constant" "target column \"added_at\" is not mapped" \
  "ran on all 20000 rows" "view public.orders_notes: dropped and created again on the new table \(reading note -> memo\)" \
  "sequence orders_id_seq \(column id\): becomes bigint" "reverse: the rollback window computes 3"; do
  grep -qE "$want" <<<"$out" || fail "plan does not say /$want/: $out"
done
pass "plan prints the mapping, the sample check, the view and the sequence"

# The same plan without reverse: for the renamed column: rollback unavailable.
sed '/^    reverse:/,$d' "$WORK/plan.yaml" >"$WORK/norev.yaml"
out=$("$PGSHIFT" plan --plan "$WORK/norev.yaml" 2>&1) && fail "plan accepted a window without reverse:"
grep -q 'rollback is unavailable for "public"."orders": source column "note"' <<<"$out" ||
  fail "no rollback-unavailable block: $out"
pass "without reverse:, plan says rollback is unavailable, naming the column"

# A trigger naming a column the mapping renames cannot follow it.
sqlf - <<'SQL' || fail "trigger"
CREATE FUNCTION orders_touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE TRIGGER orders_note_upd BEFORE UPDATE OF note ON orders FOR EACH ROW EXECUTE FUNCTION orders_touch();
SQL
out=$("$PGSHIFT" plan --plan "$WORK/plan.yaml" 2>&1)
grep -qF 'the cutover would refuse: trigger orders_note_upd names column "note" of "public"."orders", which the new table does not have as it is' <<<"$out" ||
  fail "no refusal for the trigger on a renamed column: $out"
sql "DROP TRIGGER orders_note_upd ON orders; DROP FUNCTION orders_touch()" || fail "drop trigger"
pass "a trigger on a renamed column: plan says the cutover would refuse, naming it"

# A trigger whose function reads a column the mapping renames, or that names
# it in its arguments, would fail every write after the swap; one reading
# only columns the new table keeps follows the table.
sqlf - <<'SQL' || fail "trigger bodies"
CREATE FUNCTION orders_note_fill() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN IF NEW.note IS NULL THEN NEW.note := 'none'; END IF; RETURN NEW; END $$;
CREATE FUNCTION orders_arg() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE FUNCTION orders_id_check() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN IF NEW.id = 0 THEN RAISE 'no notes for id 0'; END IF; RETURN NEW; END $$;
CREATE TRIGGER orders_fill BEFORE INSERT ON orders FOR EACH ROW EXECUTE FUNCTION orders_note_fill();
CREATE TRIGGER orders_args BEFORE INSERT ON orders FOR EACH ROW EXECUTE FUNCTION orders_arg('x', 'note');
CREATE TRIGGER orders_idc BEFORE INSERT ON orders FOR EACH ROW EXECUTE FUNCTION orders_id_check();
SQL
out=$("$PGSHIFT" plan --plan "$WORK/plan.yaml" 2>&1)
grep -qF 'the cutover would refuse: trigger orders_fill: the body of its function orders_note_fill() names "note", a column of "public"."orders" the new table does not have' <<<"$out" ||
  fail "no refusal for a trigger function reading a renamed column: $out"
grep -qF 'the cutover would refuse: trigger orders_args: its arguments name "note"' <<<"$out" ||
  fail "no refusal for a trigger naming a renamed column in its arguments: $out"
! grep -q 'refuse: trigger orders_idc' <<<"$out" && grep -qF 'trigger orders_idc: re-created on the new table' <<<"$out" ||
  fail "a trigger reading only kept columns is not carried: $out"
sql "DROP TRIGGER orders_fill ON orders; DROP TRIGGER orders_args ON orders; DROP TRIGGER orders_idc ON orders;
     DROP FUNCTION orders_note_fill(); DROP FUNCTION orders_arg(); DROP FUNCTION orders_id_check()" ||
  fail "drop triggers"
pass "a trigger whose function or arguments name a renamed column: plan says the cutover would refuse"

# A foreign key of another table on a key the mapping renames cannot be
# re-created as it is; on a key that only becomes bigint it can.
sqlf - <<'SQL' || fail "fk setup"
CREATE TABLE cust (id int PRIMARY KEY, name text);
CREATE TABLE cust_new (cust_id bigint PRIMARY KEY, name text);
CREATE TABLE inv (id int PRIMARY KEY, cust int REFERENCES cust (id));
SQL
cat >"$WORK/fk.yaml" <<Y
$(plan_header cmfk)
state_dir: $WORK
tables: [{source: public.cust, target: public.cust_new, columns: {cust_id: id::bigint}}]
Y
out=$("$PGSHIFT" plan --plan "$WORK/fk.yaml" 2>&1)
grep -qF 'the cutover would refuse: foreign key inv_cust_fkey on public.inv references column "id", which the column mapping renames to "cust_id"' <<<"$out" ||
  fail "no refusal for the foreign key on a renamed key: $out"
sql "ALTER TABLE cust_new RENAME COLUMN cust_id TO id" || fail "fk rename"
sed -i 's/cust_id: id::bigint/id: id::bigint/' "$WORK/fk.yaml"
out=$("$PGSHIFT" plan --plan "$WORK/fk.yaml" 2>&1)
grep -qF 'foreign key inv_cust_fkey on public.inv: re-created to reference the new table' <<<"$out" ||
  fail "the foreign key on an int -> bigint key is not carried: $out"
sql "DROP TABLE inv, cust, cust_new" || fail "fk drop"
pass "a foreign key on a renamed key: plan says the cutover would refuse; on int -> bigint it is carried"

# The load runs until the round trip is over (load_start), not for a set time.
load_start "$WORK/load.stop" "$WORK/pgbench.log" -n -f "$WORK/load.sql" -c 4 -j 2 -R 200 --max-tries=20
wait_for 30 "pgbench's clients to connect" sql_is 4 \
  "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgbench' AND backend_type = 'client backend'"

# 1. copy and catch up; a row the mapping cannot take stops the run.
start_run "$WORK/plan.yaml" "$WORK/run1.log"
wait_streaming "$WORK/run1.log"
bad=$(sql "WITH n AS (INSERT INTO orders (v, meta_text) VALUES (3, 'not json') RETURNING id, v)
           INSERT INTO shadow SELECT * FROM n RETURNING id")
wait_for 30 "run to stop on the row" gone "$RUN_PID"
wait "$RUN_PID"
rc=$?
[ "$rc" = 1 ] || fail "run exited $rc on the failing row, expected 1"
grep -qE "the row with key \(id\)=\($bad\), column \"meta\" = coalesce\(meta_text, '\{\}'\)::jsonb: invalid input syntax for type json" \
  "$WORK/run1.log" || fail "the run did not name row $bad and column meta: $(grep error "$WORK/run1.log")"
[ "$(sql "SELECT count(*) FROM orders_new WHERE id = $bad")" = 0 ] || fail "the failing row was applied"
pass "a row the expression cannot take stops the run, naming key (id)=($bad) and column meta"

# 2. fix the expression; the same migration goes on, no new copy.
meta_expr="CASE WHEN meta_text IS NULL THEN '{}'::jsonb WHEN left(ltrim(meta_text), 1) IN ('{', '[') THEN meta_text::jsonb ELSE jsonb_build_object('text', meta_text) END"
write_plan
start_run "$WORK/plan.yaml" "$WORK/run2.log"
wait_streaming "$WORK/run2.log"
grep -qE ": copied [0-9]+ rows" "$WORK/run2.log" && fail "the resumed run copied again"
wait_for 30 "the fixed row" sql_is '{"text": "not json"}' "SELECT meta::text FROM orders_new WHERE id = $bad"
pass "after the fix the same run goes on from there (row $bad: meta {\"text\": \"not json\"})"

# Through the mapping, at a moment the load does not write: hold its tables
# (SHARE: the load's writes wait), let the run apply everything, compare,
# then cancel the hold.
wait_applied pgshift_cm 60
psql -XAtq >"$WORK/hold.out" 2>&1 <<'SQL' &
BEGIN;
LOCK TABLE orders, shadow IN SHARE MODE;
SELECT pg_sleep(60);
COMMIT;
SQL
HOLD=$!
RUN_PIDS+=("$HOLD")
hold_pid() { sql "SELECT pid FROM pg_stat_activity WHERE query LIKE '%pg_sleep(60)%' AND state = 'active' AND pid <> pg_backend_pid()"; }
wait_for 10 "the load to be held" sql_is 1 \
  "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(60)%' AND state = 'active' AND pid <> pg_backend_pid()"
wait_applied pgshift_cm 60
mapped="SELECT id::bigint, v, (amount * 100)::bigint, CASE WHEN meta_text IS NULL THEN '{}'::jsonb WHEN left(ltrim(meta_text), 1) IN ('{', '[') THEN meta_text::jsonb ELSE jsonb_build_object('text', meta_text) END, note, 'eu'::text, cur, md5(body) FROM orders"
newt="SELECT id, v, amount_cents, meta, memo, region, cur, md5(body) FROM orders_new"
n=$(sql "SELECT count(*) FROM ($mapped EXCEPT ALL $newt) x")
n2=$(sql "SELECT count(*) FROM ($newt EXCEPT ALL $mapped) x")
m=$(sql "SELECT count(*) FROM orders_new") || fail "count"
rows=$(sql "(SELECT 'src', x::text FROM ($mapped EXCEPT ALL $newt) x LIMIT 5) UNION ALL (SELECT 'tgt', y::text FROM ($newt EXCEPT ALL $mapped) y LIMIT 5)")
sql "SELECT pg_cancel_backend($(hold_pid))" >/dev/null
wait "$HOLD"
[ "$n" = 0 ] && [ "$n2" = 0 ] || fail "orders_new differs from the mapped orders: $n rows only in the source, $n2 only in the target: $rows"
[ "$(sql "SELECT count(*) FROM orders_new WHERE cur = 'USD' AND length(body) = 6400")" -ge 250 ] ||
  fail "char(3) or the TOASTed column did not come through: $(sql "SELECT cur, length(body) FROM orders_new WHERE abs(id) <= 300 LIMIT 3")"
pass "under the load, orders_new = orders through the mapping ($m rows; char(3) whole, TOASTed values kept across key changes)"

# 3. cutover; the rollback window streams back through reverse:.
"$PGSHIFT" cutover --plan "$WORK/plan.yaml" >"$WORK/cutover.log" 2>&1 || fail "cutover failed: $(cat "$WORK/cutover.log")"
wait_for 30 "the reverse stream" log_has "$WORK/run2.log" "rollback window: streaming"
[ "$(sql "SELECT format_type(atttypid, NULL) FROM pg_attribute WHERE attrelid = 'orders'::regclass AND attname = 'amount_cents'")" = bigint ] ||
  fail "orders is not the new table after the cutover"
[ "$(sql "SELECT data_type FROM information_schema.sequences WHERE sequence_name = 'orders_id_seq'")" = bigint ] ||
  fail "the sequence is not bigint after the cutover"
[ "$(sql "SELECT format_type(atttypid, NULL) FROM pg_attribute WHERE attrelid = 'orders_notes'::regclass AND attname = 'id'")" = bigint ] ||
  fail "the view's id is not bigint after the cutover"
[ "$(sql "SELECT count(*) FROM orders_notes WHERE note IS NULL AND id <= 20000 AND id > 0")" = 0 ] ||
  fail "the view does not read memo as note"
maxid=$(sql "SELECT max(abs(id)) FROM shadow")
next=$(sql "WITH n AS (INSERT INTO orders (v) VALUES (1) RETURNING id, v) INSERT INTO shadow SELECT * FROM n RETURNING id")
[ "$next" -gt "$maxid" ] || fail "ids do not continue after the swap: $next <= $maxid"
pass "cut over: orders is the bigint table, its sequence bigint, the view re-created on memo; next id $next > $maxid"

sleep 3 # the scenario: the load writes to the new table during the window
"$PGSHIFT" rollback --plan "$WORK/plan.yaml" >"$WORK/rollback.log" 2>&1 || fail "rollback failed: $(cat "$WORK/rollback.log")"
wait_for 60 "run to exit after the rollback" gone "$RUN_PID"
wait "$RUN_PID"
rc=$?
[ "$rc" = 0 ] || fail "run exited $rc after the rollback"
[ "$(sql "SELECT format_type(atttypid, NULL) FROM pg_attribute WHERE attrelid = 'orders'::regclass AND attname = 'id'")" = integer ] ||
  fail "orders is not the old table after the rollback"
[ "$(sql "SELECT format_type(atttypid, NULL) FROM pg_attribute WHERE attrelid = 'orders_notes'::regclass AND attname = 'id'")" = integer ] ||
  fail "the view's id is not integer again after the rollback"
pass "rolled back: the old table, and the view on it, are live again"

load_stop "$WORK/load.stop" "$WORK/pgbench.log" || fail "pgbench: $LOAD_WHY"
same_rows orders shadow "id, v"
# The rows written during the window came back through reverse:.
[ "$(sql "SELECT count(*) FROM orders WHERE id = $next AND amount = 0 AND meta_text = '{}' AND note IS NULL")" = 1 ] ||
  fail "row $next written during the window did not come back through reverse: ($(sql "SELECT row(o.*) FROM orders o WHERE id = $next"))"
[ "$(sql "SELECT meta_text FROM orders WHERE id = $bad")" = 'not json' ] || fail "row $bad changed on its way"
txns=$(load_txns "$WORK/pgbench.log")
pass "old table equals its shadow after the round trip ($(sql "SELECT count(*) FROM shadow") rows, $txns transactions, 0 failed)"
"$PGSHIFT" abort --plan "$WORK/plan.yaml" --confirm >/dev/null 2>&1 || fail "abort after the rollback failed"

# 4. A small table past int's limit: int -> bigint without a window.
sqlf - <<'SQL' || fail "setup 2"
CREATE TABLE ticket (id serial PRIMARY KEY, v int);
INSERT INTO ticket (v) SELECT i FROM generate_series(1, 1000) i;
CREATE TABLE ticket_new (id bigint PRIMARY KEY DEFAULT nextval('ticket_id_seq'), v int);
SELECT setval('ticket_id_seq', 2147483640);
INSERT INTO ticket (v) VALUES (1001), (1002);
SQL
cat >"$WORK/plan2.yaml" <<Y
$(plan_header tk)
state_dir: $WORK
tables:
  - source: public.ticket
    target: public.ticket_new
    columns: {id: id::bigint}
Y
"$PGSHIFT" run --plan "$WORK/plan2.yaml" --auto-cutover >"$WORK/run3.log" 2>&1 || fail "int -> bigint run failed: $(tail -n 5 "$WORK/run3.log")"
ids=$(sql "INSERT INTO ticket (v) SELECT g FROM generate_series(1, 10) g RETURNING id" | tail -n 1)
[ "$ids" -gt 2147483647 ] || fail "ids stop at int: last $ids"
[ "$(sql "SELECT count(*) FROM ticket")" = 1012 ] || fail "ticket lost rows"
pass "int -> bigint: ids go past 2147483647 after the cutover (last $ids)"

# 5. A bad row in a table too big for plan to check every row: plan's
# sample or, when the sample misses it, the copy names it.
sqlf - <<'SQL' || fail "setup 3"
CREATE TABLE big (id int PRIMARY KEY, doc text);
INSERT INTO big SELECT i, '{"i": ' || i || '}' FROM generate_series(1, 210000) i;
UPDATE big SET doc = 'oops' WHERE id = 123457;
ANALYZE big;
CREATE TABLE big_new (id bigint PRIMARY KEY, doc jsonb);
SQL
cat >"$WORK/plan3.yaml" <<Y
$(plan_header bg)
state_dir: $WORK
tables:
  - source: public.big
    target: public.big_new
    columns: {id: id::bigint, doc: doc::jsonb}
Y
rc=0
"$PGSHIFT" run --plan "$WORK/plan3.yaml" >"$WORK/run4.log" 2>&1 || rc=$?
if grep -q "BLOCK  columns.doc: \"doc::jsonb\" fails on the source row (id)=(123457): invalid input syntax for type json" "$WORK/run4.log"; then
  [ "$rc" = 3 ] || fail "plan blocked the run but it exited $rc"
  how="plan's sample"
else
  [ "$rc" = 1 ] || fail "the copy of a bad row exited $rc: $(tail -n 5 "$WORK/run4.log")"
  grep -q 'the column mapping fails on the row with key (id)=(123457) (ctid [^ ]* of [^)]*), column "doc" = doc::jsonb: invalid input syntax for type json' "$WORK/run4.log" ||
    fail "the copy did not name the row: $(grep error "$WORK/run4.log")"
  how="the copy"
fi
pass "a bad row among 210000: $how names (id)=(123457) and column doc"

# 6. The target in another database: set-based through one array per
# source column (no source row type there); a table with an array column
# goes row by row. That table keeps its name in the other database.
createdb cm_other || fail "createdb"
sqlf - <<'SQL' || fail "setup 4"
CREATE TABLE ev (id int PRIMARY KEY, kind text, n numeric);
CREATE TABLE ev_tags (id int PRIMARY KEY, tags text[]);
INSERT INTO ev SELECT i, 'k' || (i % 5), i * 0.5 FROM generate_series(1, 5000) i;
INSERT INTO ev_tags SELECT i, ARRAY['a' || i, 'b'] FROM generate_series(1, 5000) i;
SQL
psql -XAtq -v ON_ERROR_STOP=1 -d cm_other -c "CREATE TABLE ev2 (id bigint PRIMARY KEY, kind_code text, n_milli bigint)" \
  -c "CREATE TABLE ev_tags (id bigint PRIMARY KEY, first_tag text, tags text[])" || fail "setup 4 target"
cat >"$WORK/plan4.yaml" <<Y
$(plan_header xd)
state_dir: $WORK
target: "dbname=cm_other"
tables:
  - source: public.ev
    target: public.ev2
    columns: {kind_code: upper(kind), n_milli: (n * 1000)::bigint}
  - source: public.ev_tags
    target: public.ev_tags
    columns:
      first_tag: tags[1]
Y
start_run "$WORK/plan4.yaml" "$WORK/run5.log"
wait_streaming "$WORK/run5.log"
sql "UPDATE ev SET n = n + 1 WHERE id % 3 = 0; DELETE FROM ev WHERE id % 7 = 0; INSERT INTO ev VALUES (9001, 'z', 1.25);
     UPDATE ev_tags SET tags = ARRAY['x' || id] WHERE id % 4 = 0; DELETE FROM ev_tags WHERE id % 9 = 0; INSERT INTO ev_tags VALUES (9001, '{q,r}')" ||
  fail "changes"
wait_applied pgshift_xd 60
grep -q "public\".\"ev_tags\" has an array-typed column and its target is in another database" "$WORK/run5.log" ||
  fail "no row-by-row note for the array column"
a=$(sql "SELECT string_agg(format('%s|%s|%s', id, upper(kind), (n * 1000)::bigint), ',' ORDER BY id) FROM ev")
b=$(psql -XAtq -d cm_other -c "SELECT string_agg(format('%s|%s|%s', id, kind_code, n_milli), ',' ORDER BY id) FROM ev2")
[ "$a" = "$b" ] || fail "ev in the other database differs through the mapping"
a=$(sql "SELECT string_agg(format('%s|%s|%s', id, tags[1], tags), ',' ORDER BY id) FROM ev_tags")
b=$(psql -XAtq -d cm_other -c "SELECT string_agg(format('%s|%s|%s', id, first_tag, tags), ',' ORDER BY id) FROM ev_tags")
[ "$a" = "$b" ] || fail "ev_tags in the other database differs through the mapping"
stop_run
pass "target in another database: both tables equal through the mapping (arrays row by row), one under its own name"
finish
