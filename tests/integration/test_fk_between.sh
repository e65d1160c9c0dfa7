#!/usr/bin/env bash
# Foreign keys between two tables of one plan (issue #13): observations
# reference sites, both moved, each target made by the operator carrying
# the same key to the other's target. The copy fills the referenced target
# first (parallel copy would insert observations before their sites), the
# changes apply in commit order, and the cutover needs nothing re-pointed:
# a key follows its table, so the new observations reference the new sites
# and the old ones the old. A second plan whose targets lack the key gets it
# from the swap, to the new sites. `plan` says all of it.
source "$(dirname "$0")/lib/common.sh"
sqlf - <<'SQL' || fail setup
CREATE TABLE sites (id int PRIMARY KEY, name text);
CREATE TABLE obs (id bigint PRIMARY KEY, site int NOT NULL CONSTRAINT obs_site_fk REFERENCES sites (id), v text);
-- many sites, inserted after the observations' first pages would be read
INSERT INTO sites SELECT g, 's' || g FROM generate_series(1, 20000) g;
INSERT INTO obs SELECT g, 1 + (g * 7919) % 20000, 'v' FROM generate_series(1, 20000) g;
CREATE TABLE sites_new (LIKE sites INCLUDING ALL);
CREATE TABLE obs_new (LIKE obs INCLUDING ALL);
ALTER TABLE obs_new ADD CONSTRAINT obs_site_fk FOREIGN KEY (site) REFERENCES sites_new (id);
SQL
# obs first in the plan: the copy must still fill sites_new before obs_new.
cat >"$WORK/plan.yaml" <<Y
$(plan_header fkb)
state_dir: $WORK
copy: {workers: 2, chunk_size: 64kB}
tables: [{source: obs, target: obs_new}, {source: sites, target: sites_new}]
Y
"$PGSHIFT" plan --plan "$WORK/plan.yaml" >"$WORK/plan.out" 2>&1 || fail "plan refused: $(grep -E 'BLOCK|refuse' "$WORK/plan.out")"
grep -q 'target "public"."obs_new" has foreign key obs_site_fk to sites_new, a target of this plan: copied after it' "$WORK/plan.out" ||
  fail "plan does not say the copy is ordered: $(grep -i foreign "$WORK/plan.out")"
grep -qE 'foreign key obs_site_fk links ("public"."obs"|public.obs) and ("public"."sites"|public.sites), both moved by this plan' "$WORK/plan.out" ||
  fail "plan does not explain the key between the moved tables: $(grep -i foreign "$WORK/plan.out")"
grep -q 'foreign key obs_site_fk (FOREIGN KEY (site) REFERENCES sites(id)): already on the target' "$WORK/plan.out" ||
  fail "plan does not see the target's key as the source's: $(grep -i foreign "$WORK/plan.out")"
grep -q 'would refuse' "$WORK/plan.out" && fail "plan says the cutover would refuse: $(grep refuse "$WORK/plan.out")"
pass "plan: the copy is ordered, the key between the moved tables needs nothing"

start_run "$WORK/plan.yaml" "$WORK/run.log"
wait_streaming "$WORK/run.log"
log_has "$WORK/run.log" 'table "public"."obs": copied after the tables its target.s foreign keys reference' ||
  fail "the copy was not ordered"
sql "INSERT INTO sites VALUES (30001, 'new'); INSERT INTO obs VALUES (30001, 30001, 'new');
     UPDATE obs SET site = 30001 WHERE id % 100 = 0;
     DELETE FROM obs WHERE site = 5; DELETE FROM sites WHERE id = 5" || fail dml
wait_applied pgshift_fkb
same_rows sites sites_new
same_rows obs obs_new
"$PGSHIFT" cutover --plan "$WORK/plan.yaml" >"$WORK/cutover.log" 2>&1 || fail "cutover failed: $(tail -5 "$WORK/cutover.log")"
wait_for 120 "the run to exit after the cutover" gone "$RUN_PID"
wait "$RUN_PID" || fail "run exited $? after the cutover"
[ "$(sql "SELECT confrelid::regclass FROM pg_constraint WHERE conrelid = 'obs'::regclass AND contype = 'f'")" = sites ] ||
  fail "new obs does not reference the new sites"
[ "$(sql "SELECT confrelid::regclass FROM pg_constraint WHERE conrelid = 'obs_old'::regclass AND contype = 'f'")" = sites_old ] ||
  fail "old obs does not reference the old sites"
[ "$(sql "SELECT count(*) FROM pg_constraint WHERE conrelid = 'obs'::regclass AND contype = 'f'")" = 1 ] || fail "new obs has the key twice"
sql "INSERT INTO obs VALUES (-1, 99999, 'orphan')" 2>/dev/null && fail "new obs accepts an orphan"
pass "copy ordered, changes applied, cutover: new references new, old references old"

# Targets without the key: the swap adds it, to the new sites.
sqlf - <<'SQL' || fail setup2
CREATE TABLE s2 (id int PRIMARY KEY);
CREATE TABLE o2 (id int PRIMARY KEY, s int CONSTRAINT o2_s_fk REFERENCES s2 (id));
INSERT INTO s2 SELECT generate_series(1, 100); INSERT INTO o2 SELECT g, g FROM generate_series(1, 100) g;
CREATE TABLE s2_new (LIKE s2 INCLUDING ALL); CREATE TABLE o2_new (LIKE o2 INCLUDING ALL);
SQL
cat >"$WORK/plan2.yaml" <<Y
$(plan_header fkb2)
state_dir: $WORK
tables: [{source: o2, target: o2_new}, {source: s2, target: s2_new}]
Y
start_run "$WORK/plan2.yaml" "$WORK/run2.log"
wait_streaming "$WORK/run2.log"
wait_applied pgshift_fkb2
"$PGSHIFT" cutover --plan "$WORK/plan2.yaml" >"$WORK/cutover2.log" 2>&1 || fail "cutover 2 failed: $(tail -5 "$WORK/cutover2.log")"
wait_for 120 "run 2 to exit" gone "$RUN_PID"
wait "$RUN_PID" || fail "run 2 exited $?"
[ "$(sql "SELECT confrelid::regclass || ':' || convalidated FROM pg_constraint WHERE conrelid = 'o2'::regclass AND contype = 'f'")" = s2:true ] ||
  fail "new o2's key: $(sql "SELECT conname, confrelid::regclass, convalidated FROM pg_constraint WHERE conrelid = 'o2'::regclass")"
pass "a key between moved tables missing on the targets: added by the swap, to the new table"
finish
