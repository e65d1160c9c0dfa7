#!/usr/bin/env bash
# bench/cutover.sh: the cutover benchmark, one command (as root on Debian 12):
#   bash bench/cutover.sh                       # 5 runs, 200k rows, 3000 tps
#   CUTOVER_RUNS=3 CUTOVER_RATE=2000 bash bench/cutover.sh
# Builds a Release pgshift, starts a throwaway PostgreSQL 15 with fsync on,
# and per run: a fresh observations table, a pgbench write load at a fixed
# rate with per-transaction logs, `pgshift run --auto-cutover` into a
# monthly-partitioned target; after some steady streaming the cutover is
# released and the client-side write-blocking window is computed from the
# pgbench logs: worst latency of transactions overlapping the cutover minus
# the worst latency of the 10 s before it.
# Knobs: CUTOVER_RUNS (5), CUTOVER_ROWS (200000), CUTOVER_RATE (3000 tps),
# CUTOVER_CLIENTS (8), CUTOVER_THREADS (2), CUTOVER_STEADY_S (15: seconds of
# steady streaming before the cutover is released), CUTOVER_LOAD_S (60: the
# pgbench duration; the cutover must end at least 5 s before it),
# CUTOVER_RELEASE_AT=streaming (release the cutover as soon as streaming
# starts, with the copy's own WAL and the changes made during the copy still
# to apply: the lock must wait until what is left fits cutover.max_block),
# CUTOVER_TARGET=operator (a target made before the run with LIKE ...
# INCLUDING ALL, monthly partitions and a default one, instead of one pgshift
# creates), CUTOVER_ROLLBACK=1 (the plan has a rollback window; after the
# cutover and CUTOVER_ROLLBACK_AFTER_S (12) s of the load on the new table,
# `pgshift rollback` swaps back, and its window is measured the same way),
# PGSHIFT_BIN (a prebuilt binary), PGSHIFT_PG (14..18, default 15).
# Summary: bench/results/cutover-<timestamp>.txt; raw logs (pgbench
# per-transaction logs, pgshift log, status --json) in
# bench/results/cutover-<timestamp>/run<N>/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
# PGSHIFT_WERROR=OFF: a compiler warning must not stop a benchmark.
if [ -z "${PGSHIFT_BIN:-}" ]; then
  cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DPGSHIFT_TESTS=OFF -DPGSHIFT_WERROR=OFF >/dev/null
  cmake --build build-bench -j "$(nproc)" >/dev/null
  PGSHIFT_BIN=$PWD/build-bench/pgshift
fi
mkdir -p bench/results
ts=$(date -u +%Y%m%dT%H%M%SZ)
export PGSHIFT_BIN
export CUTOVER_OUT=$PWD/bench/results/cutover-$ts.txt
export CUTOVER_RAW=$PWD/bench/results/cutover-$ts
export PGSHIFT_TEST_DURABLE=1
export PGSHIFT_TEST_PGCONF="max_wal_size=16GB;checkpoint_timeout=1h;max_connections=100"
exec bash tests/lib/with-pg.sh bash bench/cutover-inner.sh
