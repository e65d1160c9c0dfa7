#!/usr/bin/env bash
# with-pg.sh removes its cluster on success, on failure, on SIGTERM and when
# it is SIGKILLed (the watchdog). Runs nested fixtures and checks the dirs go.
source "$(dirname "$0")/lib/common.sh"
fixture="$PGSHIFT_SOURCE_DIR/tests/lib/with-pg.sh"
marker=$WORK/marker

# 1. a failing test: exit status is passed through, dir removed, server gone
bash "$fixture" bash -c 'echo "$PGSHIFT_TEST_DIR" > '"$marker"'; exit 7' 2>/dev/null
rc=$?
[ "$rc" = 7 ] || fail "exit status $rc, expected 7"
d=$(cat "$marker"); [ -n "$d" ] && [ ! -e "$d" ] || fail "dir $d left behind after failure"
pass "a failing test: its exit status is passed through, the dir removed"

# The nested test writes its cluster's dir (and port) and its own pid, then
# becomes `sleep` (exec keeps the pid): that exact process is killed below if
# the fixture leaves it behind, never anything found by name.
# marker_written: the nested test has written the marker.
marker_written() { [ -s "$marker" ]; }
# 2. SIGTERM while the test runs
: >"$marker"
bash "$fixture" bash -c 'echo "$PGSHIFT_TEST_DIR $$" > '"$marker"'; exec sleep 300' 2>/dev/null &
pid=$!
wait_for 20 "the nested fixture to start its test" marker_written
read -r d2 inner2 <"$marker"
kill -TERM "$pid"; wait "$pid" 2>/dev/null
kill -KILL "$inner2" 2>/dev/null # with-pg.sh TERMs its test; in case it did not
wait_for 10 "dir $d2 to be removed after SIGTERM" test ! -e "$d2"
pass "SIGTERM: the dir removed"

# 3. SIGKILL: the watchdog stops the server and removes the dir
: >"$marker"
bash "$fixture" bash -c 'echo "$PGSHIFT_TEST_DIR $PGPORT $$" > '"$marker"'; exec sleep 301' 2>/dev/null &
pid=$!
wait_for 20 "the nested fixture to start its test" marker_written
read -r d3 port3 inner3 <"$marker"
kill -KILL "$pid"
kill -KILL "$inner3" 2>/dev/null # the test outlives a SIGKILLed fixture
wait_for 10 "dir $d3 to be removed after SIGKILL (the watchdog)" test ! -e "$d3"
pg_isready -q -h 127.0.0.1 -p "$port3" && fail "server on port $port3 still running after SIGKILL"
pass "SIGKILL: the watchdog stopped the server and removed the dir"
finish
