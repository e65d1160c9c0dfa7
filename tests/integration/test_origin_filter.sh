#!/usr/bin/env bash
# PostgreSQL 16+: the apply session runs under a replication origin and the
# stream asks for origin 'none', so the walsender drops pgshift's own writes
# before decoding them. origin 'none' drops every origin's changes, so it is
# only used while pgshift's origin is the only one: when another appears
# mid-run (here a session that writes to the source table under an origin
# of its own, as a subscription would), the run stops before confirming any
# of those changes, and the rerun, decoding every origin, applies them.
# The copy workers write under origins of their own (<slot>_copy<N>), so the
# walsender drops the copied rows too instead of decoding each as an insert
# before it reaches the changes made since; a worker's origin left behind by
# a crash does not turn the filter off, and abort drops it.
# On 14 and 15 there is no origin filter and the run says nothing of one.
source "$(dirname "$0")/lib/common.sh"
slot_stats_nonzero() {
  [ "$(sql "SELECT total_bytes > 0 FROM pg_stat_replication_slots WHERE slot_name = 'pgshift_orig'")" = t ]
}

sql "CREATE TABLE o (id int PRIMARY KEY, v text); CREATE TABLE o_new (LIKE o INCLUDING ALL);
     INSERT INTO o SELECT i, 'v' || i FROM generate_series(1, 1000) i;
     CREATE TABLE c (id int PRIMARY KEY, v text); CREATE TABLE c_new (LIKE c INCLUDING ALL);
     INSERT INTO c SELECT i, repeat('c', 200) FROM generate_series(1, 50000) i" || fail setup
if [ "$PGSHIFT_TEST_PG" -ge 16 ]; then
  # What a copy worker killed with pgshift leaves behind.
  sql "SELECT pg_replication_origin_create('pgshift_orig_copy9')" >/dev/null || fail "leftover origin"
fi
cat >"$WORK/plan.yaml" <<Y
$(plan_header orig)
state_dir: $WORK
copy: {workers: 2, chunk_size: 1MB}
tables: [{source: o, target: o_new}, {source: c, target: c_new}]
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
same_rows c c_new
log_has "$WORK/run.log" "copy: no replication origin" && fail "the copy ran without an origin"
left=$(sql "SELECT string_agg(roname, ', ') FROM pg_replication_origin WHERE roname LIKE 'pgshift\_orig\_copy%' AND roname <> 'pgshift_orig_copy9'")
[ -z "$left" ] || fail "the copy workers left their origins: $left"
# The copy wrote ~12 MB to c_new: decoded, it would show in total_bytes.
wait_for 10 "the slot's statistics to show the first changes" slot_stats_nonzero
dec=$(sql "SELECT total_bytes FROM pg_stat_replication_slots WHERE slot_name = 'pgshift_orig'")
echo "# decoded $dec bytes for the copy and 1000 source rows"
[ "$dec" -lt 2000000 ] || fail "the walsender decoded $dec bytes: the copied rows too?"
pass "the copy ran under origins of its own, its rows not decoded, its origins dropped"
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
