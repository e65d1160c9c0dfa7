#!/usr/bin/env bash
# A source's own foreign keys that the target lacks are carried by the
# cutover instead of refusing it (issue #13): added NOT VALID in the swap,
# validated after the commit; on a partitioned target before 18, NOT VALID
# on each partition, validated, then added to the table itself. Three
# shapes in one plan, streamed changes, then `pgshift cutover`:
#  - a partitioned target the operator made without the key (LIKE ...
#    INCLUDING DEFAULTS INCLUDING CONSTRAINTS never copies foreign keys)
#  - a plain target, without the key
#  - a target pgshift creates from a partition spec
# Afterwards every new table has its key, validated, on the table and on
# each partition; it refuses an orphan row; the old tables lose theirs
# after the swap (frozen, they would refuse the application's deletes of
# rows only they reference); the rows are the source's. `plan` lists what
# the swap will do.
source "$(dirname "$0")/lib/common.sh"
sqlf - <<'SQL' || fail setup
CREATE TABLE sites (id int PRIMARY KEY, name text);
INSERT INTO sites SELECT g, 's' || g FROM generate_series(1, 20) g;
CREATE TABLE a (id bigint PRIMARY KEY, created_at date NOT NULL,
  site int CONSTRAINT a_site_fk REFERENCES sites (id) ON DELETE CASCADE, v text);
CREATE TABLE b (id int PRIMARY KEY, site int CONSTRAINT b_site_fk REFERENCES sites (id), v text);
CREATE TABLE c (id bigint PRIMARY KEY, created_at date NOT NULL,
  site int CONSTRAINT c_site_fk REFERENCES sites (id), v text);
INSERT INTO a SELECT g, date '2025-01-01' + g % 120, 1 + g % 20, 'a' FROM generate_series(1, 6000) g;
INSERT INTO b SELECT g, 1 + g % 20, 'b' FROM generate_series(1, 6000) g;
INSERT INTO c SELECT g, date '2025-01-01' + g % 120, 1 + g % 20, 'c' FROM generate_series(1, 6000) g;
CREATE TABLE a_new (LIKE a INCLUDING DEFAULTS INCLUDING CONSTRAINTS) PARTITION BY RANGE (created_at);
ALTER TABLE a_new ADD PRIMARY KEY (id, created_at);
CREATE TABLE a_new_1 PARTITION OF a_new FOR VALUES FROM ('2025-01-01') TO ('2025-03-01');
CREATE TABLE a_new_2 PARTITION OF a_new FOR VALUES FROM ('2025-03-01') TO ('2026-01-01');
CREATE TABLE b_new (id int PRIMARY KEY, site int, v text);
SQL
cat >"$WORK/plan.yaml" <<Y
$(plan_header fkc)
state_dir: $WORK
tables:
  - {source: a, target: a_new}
  - {source: b, target: b_new}
  - source: c
    target: c_new
    partition: {by: range (created_at), interval: 1 month}
Y
"$PGSHIFT" plan --plan "$WORK/plan.yaml" >"$WORK/plan.out" 2>&1 || fail "plan failed: $(tail -20 "$WORK/plan.out")"
grep -qE 'foreign key a_site_fk \(FOREIGN KEY \(site\) REFERENCES (public\.)?sites\(id\) ON DELETE CASCADE\): added' "$WORK/plan.out" ||
  fail "plan does not say the key of a is carried: $(grep -i 'foreign' "$WORK/plan.out")"
grep -qE 'foreign key b_site_fk \(FOREIGN KEY \(site\) REFERENCES (public\.)?sites\(id\)\): added to the new table by the swap \(NOT VALID\), validated after it' "$WORK/plan.out" ||
  fail "plan does not say the key of b is carried: $(grep -i 'foreign' "$WORK/plan.out")"
grep -q 'foreign key b_site_fk: dropped from the old table after the swap' "$WORK/plan.out" ||
  fail "plan does not say the old table's key is dropped: $(grep -i 'foreign' "$WORK/plan.out")"
grep -q 'BLOCK' "$WORK/plan.out" && fail "plan blocks: $(grep BLOCK "$WORK/plan.out")"
# a_new's last partition ends 2026-01-01 and it has no DEFAULT partition
grep -qE 'warn +the last partition of "public"."a_new" (ended at 2026-01-01 00:00:00\+00, [0-9]+ days ago|ends at 2026-01-01 00:00:00\+00, in [0-9]+ days)' "$WORK/plan.out" ||
  fail "plan does not say how far a_new's partitions reach: $(grep -i 'partition' "$WORK/plan.out")"
pass "plan lists each missing foreign key as carried by the swap"

start_run "$WORK/plan.yaml" "$WORK/run.log"
wait_streaming "$WORK/run.log"
sql "INSERT INTO a SELECT g, date '2025-02-01', 3, 'late' FROM generate_series(7001, 7100) g;
     UPDATE b SET v = 'upd', site = 5 WHERE id % 97 = 0;
     INSERT INTO c SELECT g, date '2025-04-01', 4, 'late' FROM generate_series(7001, 7100) g;
     DELETE FROM a WHERE id % 311 = 0" || fail dml
wait_applied pgshift_fkc
# A reader of sites in a long transaction: the swap does not wait for it
# (adding a key NOT VALID takes SHARE ROW EXCLUSIVE), but dropping the old
# tables' keys after it needs ACCESS EXCLUSIVE on sites, and so does adding
# the key to a partitioned table before 18 (attaching the partitions' keys
# drops their triggers on sites). Those steps must give way under
# lock_timeout and try again, not queue the application.
psql -XAtq -c "SET application_name = 'reader'" -c BEGIN -c "SELECT count(*) FROM sites" \
  -c "SELECT pg_sleep(600)" >/dev/null 2>&1 &
RUN_PIDS+=($!)
wait_for 30 "the reader to hold sites" sql_is 1 \
  "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 'reader' AND l.relation = 'sites'::regclass AND l.granted"
"$PGSHIFT" cutover --plan "$WORK/plan.yaml" >"$WORK/cutover.log" 2>&1 || fail "cutover failed: $(tail -5 "$WORK/cutover.log")"
wait_for 60 "the old key's drop to give way to the reader" log_has "$WORK/run.log" \
  '(dropping a foreign key of the old table|adding a foreign key to the partitioned table): no lock within [0-9]+ ms \(attempt 2 of'
sql "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'reader'" >/dev/null
wait_for 120 "the run to exit after the cutover" gone "$RUN_PID"
wait "$RUN_PID" || fail "run exited $? after the cutover"
log_has "$WORK/run.log" "VALIDATE CONSTRAINT" || fail "no validation ran after the swap"
log_has "$WORK/run.log" 'ALTER TABLE IF EXISTS "public"."b_old" DROP CONSTRAINT IF EXISTS "b_site_fk"' || fail "the old key was not dropped after the swap"

for t in a b c; do
  [ "$(sql "SELECT count(*) FROM pg_constraint WHERE conrelid = '$t'::regclass AND contype = 'f' AND convalidated")" = 1 ] ||
    fail "new $t lacks its validated foreign key: $(sql "SELECT conname, convalidated FROM pg_constraint WHERE conrelid = '$t'::regclass AND contype = 'f'")"
  [ "$(sql "SELECT count(*) FROM pg_constraint WHERE conrelid = '${t}_old'::regclass AND contype = 'f'")" = 0 ] ||
    fail "old ${t}_old keeps its foreign key"
  # every partition carries it, validated and attached to the table's
  [ "$(sql "SELECT count(*) FROM pg_inherits h WHERE h.inhparent = '$t'::regclass AND NOT EXISTS (
              SELECT 1 FROM pg_constraint k WHERE k.conrelid = h.inhrelid AND k.contype = 'f'
                 AND k.convalidated AND k.conparentid <> 0)")" = 0 ] ||
    fail "a partition of $t lacks the attached, validated key: $(sql "SELECT conrelid::regclass, conname, convalidated, conparentid FROM pg_constraint WHERE contype = 'f' ORDER BY 1")"
  [ "$(sql "SELECT count(*) FROM pg_constraint k JOIN pg_inherits h ON h.inhrelid = k.conrelid
             WHERE h.inhparent = '$t'::regclass AND k.contype = 'f'")" = "$(sql "SELECT count(*) FROM pg_inherits WHERE inhparent = '$t'::regclass")" ] ||
    fail "a partition of $t has the key twice"
done
same_rows a_old a
same_rows b_old b "id, site, v"
same_rows c_old c
pass "every new table has its foreign key, validated, on the table and each partition; rows identical"

sql "INSERT INTO a VALUES (-1, '2025-02-02', 999, 'orphan')" 2>/dev/null && fail "new a accepts an orphan row"
sql "INSERT INTO b VALUES (-1, 999, 'orphan')" 2>/dev/null && fail "new b accepts an orphan row"
sql "INSERT INTO c VALUES (-1, '2025-02-02', 999, 'orphan')" 2>/dev/null && fail "new c accepts an orphan row"
# A site only the new tables reference (the old ones keep their keys and rows).
sql "INSERT INTO sites VALUES (21, 'n'), (22, 'n');
     INSERT INTO a VALUES (-2, '2025-02-02', 21, 'x'), (-3, '2025-05-05', 21, 'y');
     INSERT INTO c VALUES (-2, '2025-02-02', 22, 'x')" || fail "rows for new sites"
sql "DELETE FROM sites WHERE id = 21" || fail "delete of a site"
[ "$(sql "SELECT count(*) FROM a WHERE site = 21")" = 0 ] || fail "ON DELETE CASCADE did not follow the key"
sql "DELETE FROM sites WHERE id = 22" 2>/dev/null && fail "new c did not restrict the delete of a referenced site"
pass "the carried keys enforce: orphans refused, the cascade acts"

# A site that only the old tables still reference: its delete is the
# application's to make (b_old's NO ACTION key would have refused it).
sql "DELETE FROM b WHERE site = 7; DELETE FROM c WHERE site = 7; DELETE FROM sites WHERE id = 7" ||
  fail "the old tables' keys refuse the delete of a site only they reference"
[ "$(sql "SELECT count(*) FROM b_old WHERE site = 7")" -gt 0 ] || fail "b_old was changed"
pass "the old tables keep their rows and no longer hold the referenced table"

# A target with another constraint of the key's name: refused, named.
sqlf - <<'SQL' || fail setup2
CREATE TABLE d (id int PRIMARY KEY, site int CONSTRAINT d_site_fk REFERENCES sites (id));
CREATE TABLE d_new (id int PRIMARY KEY, site int CONSTRAINT d_site_fk CHECK (site > 0));
SQL
cat >"$WORK/plan2.yaml" <<Y
$(plan_header fkc2)
state_dir: $WORK
tables: [{source: d, target: d_new}]
Y
"$PGSHIFT" plan --plan "$WORK/plan2.yaml" >"$WORK/plan2.out" 2>&1
grep -qE 'the cutover would refuse: foreign key d_site_fk of the source .* cannot be added to "public"."d_new": it has a constraint of that name already \(CHECK' "$WORK/plan2.out" ||
  fail "a name clash is not refused: $(grep -i d_site_fk "$WORK/plan2.out")"
pass "a constraint of the same name on the target is refused with the fix"
finish
