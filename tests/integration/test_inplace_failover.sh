#!/usr/bin/env bash
# An in-place migration (target in the source database) on 17+, its slot a
# FAILOVER slot synchronized to a standby listed in synchronized_standby_slots.
# The standby receives 20 source transactions, then its WAL receiver is held
# (SIGSTOP) before it gets pgshift's target commit of them. pgshift must not
# confirm them to the slot (the standby does not have the target's commit):
# the confirmed position is capped at what the standbys in
# synchronized_standby_slots have flushed. The primary stops, the standby is
# promoted: its target state ends before the 20 transactions, and so does
# its synchronized slot, so the resumed run applies them. (Before the cap,
# the slot moved past them and the resumed run skipped them silently.)
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/mirror.sh"
source "$(dirname "$0")/lib/servers.sh"
[ "$PGSHIFT_TEST_PG" -ge 17 ] || { echo "ok - PostgreSQL $PGSHIFT_TEST_PG has no slot synchronization (test_failover covers the lost-slot stop)"; exit 0; }
PRIMARY_PORT=$PGPORT
mirror_setup 5000
sql "SELECT pg_create_physical_replication_slot('standby1', true)" >/dev/null || fail "physical slot"
make_standby standby standby1
SD=$SERVER_DIR SP=$SERVER_PORT
sql "ALTER SYSTEM SET synchronized_standby_slots = 'standby1'" || fail "synchronized_standby_slots"
sql "SELECT pg_reload_conf()" >/dev/null
standby_is() { [ "$(psql -h "$SD" -p "$SP" -XAtq -c "$2" 2>/dev/null)" = "$1" ]; }
mirror_plan ip "$WORK/plan.yaml"
sed -i "s|^source: .*|source: \"host=127.0.0.1,127.0.0.1 port=$PRIMARY_PORT,$SP dbname=postgres target_session_attrs=read-write\"|" "$WORK/plan.yaml"

start_run "$WORK/plan.yaml" "$WORK/run1.log"
wait_streaming "$WORK/run1.log"
wait_for 120 "the slot synchronized" standby_is t \
  "SELECT synced AND NOT temporary FROM pg_replication_slots WHERE slot_name = 'pgshift_ip'"
# The apply held, 20 transactions the standby receives and confirms.
psql -XAtq -c "SET application_name = 'holder'" -c BEGIN -c "LOCK TABLE mig_part IN SHARE MODE" \
  -c "SELECT pg_sleep(600)" >/dev/null 2>&1 &
RUN_PIDS+=($!)
X0=$(sql "SELECT applied_xacts FROM pgshift.migrations WHERE name = 'ip'")
for i in $(seq 1 20); do
  sql "INSERT INTO mig VALUES (-$i, '2025-03-01', 7, 'x'); INSERT INTO shadow VALUES (-$i, '2025-03-01', 7, 'x')" || fail insert
  # Past the first one's commit, before the second's.
  [ "$i" = 1 ] && FIRST=$(sql "SELECT pg_current_wal_insert_lsn()")
done
wait_for 30 "the apply to wait on the lock" sql_is t \
  "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE application_name = 'pgshift apply' AND wait_event_type = 'Lock')"
END=$(sql "SELECT pg_current_wal_insert_lsn()")
wait_for 30 "standby1 to confirm $END" sql_is t \
  "SELECT restart_lsn >= '$END' FROM pg_replication_slots WHERE slot_name = 'standby1'"
WR=$(psql -h "$SD" -p "$SP" -XAtq -c "SELECT pid FROM pg_stat_wal_receiver")
kill -STOP "$WR"
# The apply goes on; the target's commit stays on the primary.
sql "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'holder'" >/dev/null
wait_for 60 "the 20 rows applied on the primary" sql_is 20 "SELECT count(*) FROM mig_part WHERE id < 0"
# The batch's progress row commits with it. (Its position is the last source
# commit's end, not END: WAL written after that commit, a running_xacts
# record of the bgwriter for one, puts END past anything pgshift can apply.)
wait_for 60 "pgshift's state to count the 20 transactions" sql_is t \
  "SELECT applied_xacts >= $X0 + 20 FROM pgshift.migrations WHERE name = 'ip'"
# The batch's result has come back and a feedback has gone since (one a
# second): the walsender, waiting on the standby, still reads replies.
T=$(sql "SELECT clock_timestamp()")
wait_for 30 "a feedback from pgshift after $T" sql_is t \
  "SELECT r.reply_time > '$T' FROM pg_stat_replication r JOIN pg_replication_slots s ON s.active_pid = r.pid WHERE s.slot_name = 'pgshift_ip'"
[ "$(sql "SELECT confirmed_flush_lsn < '$FIRST' FROM pg_replication_slots WHERE slot_name = 'pgshift_ip'")" = t ] ||
  fail "the slot confirmed $(sql "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'pgshift_ip'") (the first of the 20 transactions ends before $FIRST) while the standby lacks the target's commit of them"
pass "nothing the standby lacks is confirmed"
"${PG_AS[@]}" "$PGBIN/pg_ctl" -D "$PGSHIFT_TEST_PGDATA" -m immediate -w stop >/dev/null
kill -KILL "$WR" # what it holds in its socket buffer must not arrive
kill -CONT "$WR"
wait_for 60 "the standby back after its WAL receiver's end" standby_is 1 "SELECT 1"
"${PG_AS[@]}" "$PGBIN/pg_ctl" -D "$SD/data" -w promote >/dev/null || fail promote
export PGHOST=$SD PGPORT=$SP
wait_for 30 "the promotion" sql_is f "SELECT pg_is_in_recovery()"
wait_for 30 "run 1 to end (its apply connection went with the primary)" gone "$RUN_PID"
echo "new primary: state applied_lsn $(sql "SELECT applied_lsn FROM pgshift.migrations WHERE name = 'ip'")," \
  "slot confirmed $(sql "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'pgshift_ip'")"
start_run "$WORK/plan.yaml" "$WORK/run2.log"
wait_streaming "$WORK/run2.log"
sql "UPDATE mig SET v = v + 1 WHERE id = 1; UPDATE shadow SET v = v + 1 WHERE id = 1" || fail dml
wait_applied pgshift_ip
echo "source rows -1..-20: $(sql "SELECT count(*) FROM mig WHERE id < 0"), target: $(sql "SELECT count(*) FROM mig_part WHERE id < 0")"
same_rows mig_part shadow
pass "the resumed run brought every row"
stop_run
finish
