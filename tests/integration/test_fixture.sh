#!/usr/bin/env bash
# The fixture gives every test a private, logical-decoding-ready cluster.
set -euo pipefail
fail() { echo "FAIL: $*" >&2; exit 1; }
[ "$(psql -XAtc 'show wal_level')" = logical ] || fail "wal_level is not logical"
[ "$(psql -XAtc "select inet_server_addr()")" = "" ] || fail "expected a Unix-socket connection"
[ "$(psql -h 127.0.0.1 -XAtc "select inet_server_addr()")" = 127.0.0.1 ] || fail "no TCP on 127.0.0.1"
case "$PGHOST" in "$PGSHIFT_TEST_DIR") ;; *) fail "socket not in the temp dir" ;; esac
# The server runs as postgres, never as root.
owner=$(stat -c %U "$PGSHIFT_TEST_PGDATA")
[ "$owner" = postgres ] || [ "$(id -u)" != 0 ] || fail "data dir owned by $owner"
# A replication connection works (needed by the slot and the stream).
psql "dbname=postgres replication=database" -XAtc "IDENTIFY_SYSTEM" >/dev/null || fail "no replication connection"
echo "1 passed, 0 failed"
