#!/usr/bin/env bash
# with-pg.sh removes its cluster on success, on failure, on SIGTERM and when
# it is SIGKILLed (the watchdog). Runs nested fixtures and checks the dirs go.
set -uo pipefail
fixture="$PGSHIFT_SOURCE_DIR/tests/lib/with-pg.sh"
fail() { echo "FAIL: $*" >&2; exit 1; }
marker=$(mktemp)

# 1. a failing test: exit status is passed through, dir removed, server gone
bash "$fixture" bash -c 'echo "$PGSHIFT_TEST_DIR" > '"$marker"'; exit 7' 2>/dev/null
rc=$?
[ "$rc" = 7 ] || fail "exit status $rc, expected 7"
d=$(cat "$marker"); [ -n "$d" ] && [ ! -e "$d" ] || fail "dir $d left behind after failure"

# 2. SIGTERM while the test runs
bash "$fixture" bash -c 'echo "$PGSHIFT_TEST_DIR" > '"$marker"'; sleep 300' 2>/dev/null &
pid=$!
for _ in $(seq 1 100); do [ -s "$marker" ] && [ "$(cat "$marker")" != "$d" ] && break; sleep 0.2; done
d2=$(cat "$marker")
kill -TERM "$pid"; wait "$pid" 2>/dev/null
pkill -f "sleep 300" 2>/dev/null || true
for _ in $(seq 1 50); do [ -e "$d2" ] || break; sleep 0.2; done
[ ! -e "$d2" ] || fail "dir $d2 left behind after SIGTERM"

# 3. SIGKILL: the watchdog stops the server and removes the dir
: > "$marker"
bash "$fixture" bash -c 'echo "$PGSHIFT_TEST_DIR $PGPORT" > '"$marker"'; exec sleep 301' 2>/dev/null &
pid=$!
for _ in $(seq 1 100); do [ -s "$marker" ] && break; sleep 0.2; done
read -r d3 port3 < "$marker"
kill -KILL "$pid"
pkill -f "sleep 301" 2>/dev/null || true
for _ in $(seq 1 50); do [ -e "$d3" ] || break; sleep 0.2; done
[ ! -e "$d3" ] || fail "dir $d3 left behind after SIGKILL"
pg_isready -q -h 127.0.0.1 -p "$port3" && fail "server on port $port3 still running after SIGKILL"
rm -f "$marker"
echo "3 passed, 0 failed"
