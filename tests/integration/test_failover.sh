#!/usr/bin/env bash
# The source fails over mid-catch-up. The source is with-pg's cluster (the
# primary) plus a physical standby made here; the plan's source conninfo
# lists both, primary first, with target_session_attrs=read-write; the target
# is a cluster of its own, so the run lives through the failover and its
# stream has to find the new primary. Under a mirrored write load, with the
# apply held back (a lock on the target) so a backlog is pending, the primary
# is stopped (immediate) and the standby promoted.
#  - 17+: the slot was created with FAILOVER and synchronized to the standby
#    (sync_replication_slots; synchronized_standby_slots on the primary): the
#    run reconnects to the new primary, streams on, and the target ends equal
#    to the shadow table; a resume after that works too.
#  - 14-16: no slot survives a failover: the run stops with exit 1 and the
#    one line that says the slot is lost and what to do, and so does `run`
#    again; no slot is created on the new primary; `abort` works.
# Then, on every version, a migration inside the new primary with the same
# conninfo (its first host down) copies, streams and ends equal: every
# connection pgshift opens takes the multi-host conninfo.
# `pgshift plan` first: the failover warnings (and a multi-host conninfo
# printed whole). The target is not in the source database here because an
# in-place migration cannot resume safely after a failover (the plan warns;
# see README "Failover").
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/mirror.sh"
source "$(dirname "$0")/lib/servers.sh"
V=$PGSHIFT_TEST_PG
PRIMARY_PORT=$PGPORT

mirror_setup 30000
sql "SELECT pg_create_physical_replication_slot('standby1', true)" >/dev/null || fail "physical slot"
make_standby standby standby1
STANDBY_DIR=$SERVER_DIR STANDBY_PORT=$SERVER_PORT
new_cluster target
TARGET_DIR=$SERVER_DIR TARGET_PORT=$SERVER_PORT
# on_standby / on_target SQL: a query there.
on_standby() { psql -h "$STANDBY_DIR" -p "$STANDBY_PORT" -XAtq -v ON_ERROR_STOP=1 -c "$1"; }
on_target() { psql -h "$TARGET_DIR" -p "$TARGET_PORT" -XAtq -v ON_ERROR_STOP=1 -c "$1"; }
standby_is() { [ "$(on_standby "$2" 2>/dev/null)" = "$1" ]; }
on_target "CREATE TABLE mig_part (id bigint NOT NULL, created_at timestamptz NOT NULL,
             v int NOT NULL DEFAULT 0, note text, big text, PRIMARY KEY (id, created_at))
             PARTITION BY RANGE (created_at);
           CREATE TABLE mig_part_h1 PARTITION OF mig_part FOR VALUES FROM ('2025-01-01') TO ('2025-07-01');
           CREATE TABLE mig_part_h2 PARTITION OF mig_part FOR VALUES FROM ('2025-07-01') TO ('2026-01-01');
           CREATE TABLE mig_part_rest PARTITION OF mig_part DEFAULT;
           CREATE TABLE shadow (LIKE mig_part)" || fail "target tables"

cat >"$WORK/plan.yaml" <<Y
name: fo
source: "host=127.0.0.1,127.0.0.1 port=$PRIMARY_PORT,$STANDBY_PORT dbname=postgres target_session_attrs=read-write"
target: "host=127.0.0.1 port=$TARGET_PORT dbname=postgres"
state_dir: $WORK
apply:
  batch_time: 1500ms
  idle_commit_time: 1500ms
cutover:
  max_lag: 256kB
tables:
  - {source: public.mig, target: public.mig_part}
Y

# The same source, the target inside it (used after the failover).
cat >"$WORK/inplace.yaml" <<Y
name: fo2
source: "host=127.0.0.1,127.0.0.1 port=$PRIMARY_PORT,$STANDBY_PORT dbname=postgres target_session_attrs=read-write"
state_dir: $WORK
apply:
  batch_time: 50ms
tables:
  - source: public.mig
    target: public.mig_inplace
    partition: {by: range (created_at), interval: 1 month, default: true}
Y

# ---- pgshift plan: the failover checks ----
"$PGSHIFT" plan --plan "$WORK/plan.yaml" >"$WORK/plan1.out" 2>&1 || fail "plan: $(tail -5 "$WORK/plan1.out")"
grep -qF "(source: dbname=postgres host=127.0.0.1,127.0.0.1 port=$PRIMARY_PORT,$STANDBY_PORT target_session_attrs=read-write)" "$WORK/plan1.out" ||
  fail "the multi-host source is not shown whole: $(head -1 "$WORK/plan1.out")"
if [ "$V" -ge 17 ]; then
  grep -qE "^  warn +the source has physical standbys \(1 connected, physical slots: standby1\) but synchronized_standby_slots is empty: .*ALTER SYSTEM SET synchronized_standby_slots = 'standby1'" "$WORK/plan1.out" ||
    fail "no synchronized_standby_slots warning: $(grep -E 'standby|FAILOVER' "$WORK/plan1.out")"
  sql "ALTER SYSTEM SET synchronized_standby_slots = 'standby1'" || fail "set synchronized_standby_slots"
  sql "SELECT pg_reload_conf()" >/dev/null
  wait_for 10 "synchronized_standby_slots in effect" sql_is standby1 "SHOW synchronized_standby_slots"
  "$PGSHIFT" plan --plan "$WORK/plan.yaml" >"$WORK/plan2.out" 2>&1 || fail "plan: $(tail -5 "$WORK/plan2.out")"
  grep -qE "^  ok +synchronized_standby_slots = 'standby1': slot pgshift_fo \(FAILOVER\)" "$WORK/plan2.out" ||
    fail "no ok line for synchronized_standby_slots: $(grep -E 'standby' "$WORK/plan2.out")"
  grep -E "^  warn " "$WORK/plan2.out" | grep -qiE "standby|failover" &&
    fail "failover warnings left: $(grep warn "$WORK/plan2.out")"
  pass "plan warns while synchronized_standby_slots is empty (and names standby1), not once it is set"
  "$PGSHIFT" plan --plan "$WORK/inplace.yaml" >"$WORK/plan3.out" 2>&1 || fail "plan: $(tail -5 "$WORK/plan3.out")"
  grep -qE "^  note +the target is in the source database: pgshift confirms to the slot only the target commits that the standbys in synchronized_standby_slots have flushed" "$WORK/plan3.out" ||
    fail "no in-place failover note: $(grep -E 'note|warn' "$WORK/plan3.out")"
  pass "plan says an in-place migration confirms only what the synchronized standbys have"
else
  grep -qE "^  warn +the source has physical standbys \(1 connected, physical slots: standby1\): PostgreSQL $V cannot carry a logical slot over a failover" "$WORK/plan1.out" ||
    fail "no failover warning: $(grep -E 'standby' "$WORK/plan1.out")"
  pass "plan warns that a failover loses the slot on $V"
fi

# ---- the run, under load, held back ----
mirror_load 600 150 "$WORK/load1.log"
start_run "$WORK/plan.yaml" "$WORK/run1.log"
wait_streaming "$WORK/run1.log"
if [ "$V" -ge 17 ]; then
  [ "$(sql "SELECT failover FROM pg_replication_slots WHERE slot_name = 'pgshift_fo'")" = t ] ||
    fail "the slot was not created with FAILOVER"
  wait_for 120 "the slot to be synchronized to the standby" standby_is t \
    "SELECT synced AND NOT temporary FROM pg_replication_slots WHERE slot_name = 'pgshift_fo'"
fi
# Mid-catch-up: a lock on the target holds the apply while the load goes on.
psql -h "$TARGET_DIR" -p "$TARGET_PORT" -XAtq -c "SET application_name = 'holder'" \
  -c "BEGIN" -c "LOCK TABLE mig_part IN SHARE MODE" -c "SELECT pg_sleep(600)" \
  >/dev/null 2>&1 &
HOLDER=$!
RUN_PIDS+=("$HOLDER")
target_is() { [ "$(on_target "$2" 2>/dev/null)" = "$1" ]; }
wait_for 30 "the apply to wait on the target's lock" target_is t \
  "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE application_name = 'pgshift apply' AND wait_event_type = 'Lock')"
wait_for 60 "a backlog of 1 MB past the slot's confirmed position" sql_is t \
  "SELECT pg_current_wal_lsn() - confirmed_flush_lsn > 1048576 FROM pg_replication_slots WHERE slot_name = 'pgshift_fo'"
wait_for 30 "the run to be catching up" live_phase_is "$WORK/plan.yaml" catching_up
backlog=$(sql "SELECT pg_size_pretty(pg_current_wal_lsn() - confirmed_flush_lsn) FROM pg_replication_slots WHERE slot_name = 'pgshift_fo'")

# in_place_on_new_primary: after the failover, a migration inside the new
# primary with the same multi-host conninfo, its first host down: every
# connection (copy, replication, apply, state, monitor) has to skip it.
in_place_on_new_primary() {
  start_run "$WORK/inplace.yaml" "$WORK/inplace.log"
  wait_streaming "$WORK/inplace.log"
  sql "UPDATE mig SET v = v + 1 WHERE id % 3 = 0; UPDATE shadow SET v = v + 1 WHERE id % 3 = 0;
       DELETE FROM mig WHERE id % 11 = 0; DELETE FROM shadow WHERE id % 11 = 0" || fail dml
  wait_applied pgshift_fo2
  same_rows mig_inplace shadow
  stop_run
  pass "in place on the new primary, first host of the conninfo down: copied, streamed, equal"
}

# ---- failover ----
"${PG_AS[@]}" "$PGBIN/pg_ctl" -D "$PGSHIFT_TEST_PGDATA" -m immediate -w stop >/dev/null 2>&1 ||
  fail "stopping the primary"
"${PG_AS[@]}" "$PGBIN/pg_ctl" -D "$STANDBY_DIR/data" -w promote >/dev/null 2>&1 || fail "promote"
export PGHOST=$STANDBY_DIR PGPORT=$STANDBY_PORT
wait_for 30 "the standby to be promoted" sql_is f "SELECT pg_is_in_recovery()"
on_target "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'holder'" >/dev/null
wait "$LOAD_PID" 2>/dev/null # the load dies with the primary
pass "primary stopped while catching up, $backlog not yet confirmed by the slot (apply held on the target); standby promoted"

MISSING='error +replication slot pgshift_fo is missing on the source \(127\.0\.0\.1:'$STANDBY_PORT'\): the source failed over to a server without it .*; the changes after applied position [0-9A-F/]+ can no longer be streamed, so the migration must start over: `pgshift abort --plan [^ ]*plan.yaml --confirm`'
if [ "$V" -lt 17 ]; then
  wait_for 120 "the run to stop on the lost slot" gone "$RUN_PID"
  wait "$RUN_PID"; rc=$?
  [ "$rc" = 1 ] || fail "run exited $rc, expected 1"
  grep -E ' error ' "$WORK/run1.log" | tail -n 1 | grep -qE -- "$MISSING" ||
    fail "the last error is not the lost-slot line: $(grep -E ' error ' "$WORK/run1.log" | tail -n 2)"
  pass "failover on $V: the run stopped (exit 1): $(grep -E ' error ' "$WORK/run1.log" | tail -n 1 | sed 's/^[^ ]* error *//' | cut -c1-100)..."
  "$PGSHIFT" run --plan "$WORK/plan.yaml" >"$WORK/run2.log" 2>&1
  rc=$?
  [ "$rc" = 1 ] || fail "run again exited $rc, expected 1"
  grep -E ' error ' "$WORK/run2.log" | tail -n 1 | grep -qE -- "$MISSING" ||
    fail "run again: not the lost-slot line: $(grep -E ' error ' "$WORK/run2.log")"
  grep -q "streaming from slot" "$WORK/run2.log" && fail "run again streamed"
  [ "$(sql "SELECT count(*) FROM pg_replication_slots WHERE slot_type = 'logical'")" = 0 ] ||
    fail "a logical slot exists on the new primary"
  pass "run again on the new primary: exit 1 with the same line, no new slot"
  "$PGSHIFT" abort --plan "$WORK/plan.yaml" --confirm >"$WORK/abort.log" 2>&1 ||
    fail "abort after the failover: $(tail -3 "$WORK/abort.log")"
  in_place_on_new_primary
  finish
fi

# on_timeout: what the run, the new primary and the target say (wait_for).
on_timeout() {
  echo "--- pgshift status"
  "$PGSHIFT" status --plan "$WORK/plan.yaml" --json 2>&1 | head -c 3000
  echo "--- new primary: walsenders, slots"
  sql "SELECT r.pid, r.state, r.sent_lsn, r.write_lsn, r.flush_lsn, a.wait_event_type, a.wait_event
       FROM pg_stat_replication r JOIN pg_stat_activity a USING (pid)" 2>&1
  sql "SELECT slot_name, restart_lsn, confirmed_flush_lsn, active, synced, wal_status FROM pg_replication_slots" 2>&1
  sql "SELECT pg_current_wal_lsn(), current_setting('synchronized_standby_slots')" 2>&1
  echo "--- target: sessions"
  on_target "SELECT application_name, state, wait_event_type, wait_event, left(query, 80) FROM pg_stat_activity
             WHERE backend_type = 'client backend'" 2>&1
  if [ "${PGSHIFT_TEST_KEEP:-0}" = 1 ] && command -v gdb >/dev/null; then
    echo "--- pgshift's threads"
    gdb -p "$RUN_PID" -batch -ex "thread apply all bt 8" 2>/dev/null | grep -E "^#|^Thread" | head -40
  fi
  echo "--- new primary's log"
  tail -n 30 "$STANDBY_DIR/server.log"
  echo "--- pgshift's log"
  tail -n 40 "$WORK/run1.log"
}

# 17+: the run finds the new primary and the synchronized slot.
streamed_twice() {
  [ "$(grep -c 'streaming from slot' "$WORK/run1.log")" -ge 2 ] && return 0
  kill -0 "$RUN_PID" 2>/dev/null || fail "the run exited after the failover (see run1.log)"
  return 1
}
wait_for 120 "the run to stream from the new primary" streamed_twice
[ "$(sql "SELECT synced FROM pg_replication_slots WHERE slot_name = 'pgshift_fo'")" = t ] ||
  fail "the new primary's slot is not the synchronized one"
mirror_load 8 150 "$WORK/load2.log"
mirror_check_load "$WORK/load2.log"
wait_applied pgshift_fo 180
same_rows mig shadow
# target_equals_shadow: the new primary's shadow copied to the target, compared there.
target_equals_shadow() {
  on_target "TRUNCATE shadow" || fail "truncate the target's shadow"
  psql -XAtq -v ON_ERROR_STOP=1 -c "\\copy shadow TO STDOUT" |
    psql -h "$TARGET_DIR" -p "$TARGET_PORT" -XAtq -v ON_ERROR_STOP=1 -c "\\copy shadow FROM STDIN" ||
    fail "copy the shadow to the target"
  (PGHOST=$TARGET_DIR PGPORT=$TARGET_PORT same_rows mig_part shadow) || fail "the target differs from the shadow"
}
target_equals_shadow
pass "17+: reconnected to the new primary, streamed from the synchronized slot; target equals shadow ($(sql "SELECT count(*) FROM shadow") rows)"

stop_run
start_run "$WORK/plan.yaml" "$WORK/run2.log"
wait_streaming "$WORK/run2.log"
sql "UPDATE mig SET v = v + 1 WHERE id % 5 = 0; UPDATE shadow SET v = v + 1 WHERE id % 5 = 0" || fail dml
wait_applied pgshift_fo
target_equals_shadow
pass "run again on the new primary (first host down): resumed, target equals shadow"
stop_run
in_place_on_new_primary
finish
