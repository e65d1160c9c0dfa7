#!/usr/bin/env bash
# scripts/demo.sh: the main job, one command on a fresh Debian 12 machine (root):
# installs what is missing, builds pgshift, starts a throwaway PostgreSQL 15,
# creates a demo observations table (300k rows, with a view and a serial id
# table beside it), starts a write load, runs the migration with
# --auto-cutover (observations becomes a table partitioned by month while the
# load keeps writing; `pgshift verify` compares both sides at one LSN under
# the load first, and the plan's cutover.verify holds the swap until it
# passed), and prints the outcome: rows compared equal, the
# cutover's write-blocking window, where the old tables are. The plan keeps
# a rollback window, so it then shows the way back: `pgshift rollback`, the
# old tables compared equal with the shadows again, then `pgshift abort
# --confirm`; the throwaway server is removed at the end.
#   DEMO_ROWS=1000000 bash scripts/demo.sh        # a bigger table
#   DEMO_LOAD_SECONDS=60 bash scripts/demo.sh     # a longer write load
set -euo pipefail
cd "$(dirname "$0")/.."
# The demo runs on Debian's 15 only: no other server to fetch.
PGSHIFT_PGS=15 bash scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPGSHIFT_TESTS=OFF >/dev/null
cmake --build build -j "$(nproc)" >/dev/null
export PGSHIFT_BIN=$PWD/build/pgshift
exec bash tests/lib/with-pg.sh bash scripts/demo-inner.sh
