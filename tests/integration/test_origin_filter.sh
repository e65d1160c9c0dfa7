#!/usr/bin/env bash
# PostgreSQL 16+: the apply session runs under a replication origin and the
# stream asks for origin 'none', so the walsender drops pgshift's own writes
# before decoding them. origin 'none' drops every origin's changes, so it is
# only used while pgshift's origin is the only one: when another appears
# mid-run (here a session that writes to the source table under an origin
# of its own, as a subscription would), the run stops before confirming any
# of those changes, and the rerun, decoding every origin, applies them.
# On 14 and 15 there is no origin filter and the run says nothing of one.
source "$(dirname "$0")/lib/common.sh"

sql "CREATE TABLE o (id int PRIMARY KEY, v text); CREATE TABLE o_new (LIKE o INCLUDING ALL);
     INSERT INTO o SELECT i, 'v' || i FROM generate_series(1, 1000) i" || fail setup
cat >"$WORK/plan.yaml" <<Y
$(plan_header orig)
state_dir: $WORK
tables: [{source: o, target: o_new}]
Y
start_run "$WORK/plan.yaml" "$WORK/run.log"
wait_streaming "$WORK/run.log"
if [ "$PGSHIFT_TEST_PG" -lt 16 ]; then
  log_has "$WORK/run.log" "origin none" && fail "PostgreSQL $PGSHIFT_TEST_PG has no origin filter, yet the run claims one"
  sql "INSERT INTO o SELECT i, 'w' FROM generate_series(1001, 2000) i" || fail insert
  wait_applied pgshift_orig
  same_rows o o_new
  pass "PostgreSQL $PGSHIFT_TEST_PG: no origin filter, changes applied"
  stop_run
  finish
fi
log_has "$WORK/run.log" "origin none" || fail "the stream did not ask for origin 'none'"
[ "$(sql "SELECT count(*) FROM pg_replication_origin WHERE roname = 'pgshift_orig'")" = 1 ] ||
  fail "no replication origin pgshift_orig"
sql "INSERT INTO o SELECT i, 'w' FROM generate_series(1001, 2000) i" || fail insert
wait_applied pgshift_orig
same_rows o o_new
# pgshift's writes are not decoded: the slot decoded about one table's worth
# of changes, not two (total_bytes counts what reached the output plugin).
dec=$(sql "SELECT total_bytes FROM pg_stat_replication_slots WHERE slot_name = 'pgshift_orig'")
sql "INSERT INTO o SELECT i, repeat('z', 100) FROM generate_series(2001, 12000) i" || fail insert2
wait_applied pgshift_orig
dec2=$(sql "SELECT total_bytes FROM pg_stat_replication_slots WHERE slot_name = 'pgshift_orig'")
per_row=$(((dec2 - dec) / 10000))
echo "# decoded ${per_row} bytes per source row (10000 rows, target writes under the origin)"
[ "$per_row" -lt 400 ] || fail "the walsender decoded $per_row bytes per source row: pgshift's own writes too?"
pass "origin 'none' on PostgreSQL $PGSHIFT_TEST_PG: changes applied, pgshift's own writes not decoded"

# Another origin appears and writes to the source under it.
sqlf - <<'SQL' || fail "foreign origin"
SELECT pg_replication_origin_create('elsewhere');
SELECT pg_replication_origin_session_setup('elsewhere');
INSERT INTO o SELECT i, 'from elsewhere' FROM generate_series(20001, 20500) i;
UPDATE o SET v = 'touched elsewhere' WHERE id <= 100;
SELECT pg_replication_origin_session_reset();
SQL
after=$(sql "SELECT pg_current_wal_insert_lsn()")
wait_for 30 "the run to stop on the new origin" gone "$RUN_PID"
wait "$RUN_PID"
rc=$?
[ "$rc" = 1 ] || fail "the run exited $rc on a new origin, expected 1"
log_has "$WORK/run.log" "replication origin\(s\) elsewhere appeared" || fail "no message naming the new origin"
confirmed=$(sql "SELECT confirmed_flush_lsn >= '$after' FROM pg_replication_slots WHERE slot_name = 'pgshift_orig'")
[ "$confirmed" = f ] || fail "the slot confirmed past the changes made under the new origin"
pass "a new origin stops the run before anything it wrote is confirmed"

start_run "$WORK/plan.yaml" "$WORK/run2.log"
wait_streaming "$WORK/run2.log"
log_has "$WORK/run2.log" "not filtering by origin: replication origin\(s\) elsewhere" ||
  fail "the rerun did not say why it decodes every origin"
log_has "$WORK/run2.log" "origin none" && fail "the rerun still filters origins"
wait_applied pgshift_orig
same_rows o o_new
pass "the rerun decodes every origin: the changes made under it are applied"
stop_run
sql "SELECT pg_replication_origin_drop('elsewhere')" >/dev/null
"$PGSHIFT" abort --plan "$WORK/plan.yaml" --confirm >"$WORK/abort.log" 2>&1 || fail "abort"
[ "$(sql "SELECT count(*) FROM pg_replication_origin WHERE roname LIKE 'pgshift\_orig%'")" = 0 ] ||
  fail "abort left a replication origin: $(sql "SELECT string_agg(roname, ', ') FROM pg_replication_origin")"
pass "abort drops pgshift's replication origin"
finish
