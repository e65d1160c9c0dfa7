#!/usr/bin/env bash
# bench/run.sh: the issue #3 benchmark, one command (as root on Debian 12):
#   bash bench/run.sh            # 2M rows (~570 MB with indexes)
#   BENCH_ROWS=200000 bash bench/run.sh   # a quick smaller run
# Builds a Release pgshift, starts a throwaway PostgreSQL 15 with fsync on,
# and measures, on the same server in the same run:
#   1. copy: pgshift's snapshot copy (into a monthly-partitioned target it
#      creates, indexes after the data) vs INSERT INTO target SELECT * FROM
#      source (indexes in place)
#   2. catch-up of a recorded burst (~88k transactions of 1 insert + 1 update
#      + 0.1 delete, 8 pgbench clients): pgshift vs PostgreSQL's built-in
#      logical replication apply worker replaying the same burst into a
#      second database of the same cluster
#   3. pgshift's RSS while it applies a single 1M-row transaction
# Results print at the end and are written to bench/results/<timestamp>.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DPGSHIFT_TESTS=OFF >/dev/null
cmake --build build-bench -j "$(nproc)" >/dev/null
mkdir -p bench/results
export PGSHIFT_BIN=$PWD/build-bench/pgshift
export BENCH_OUT=$PWD/bench/results/$(date -u +%Y%m%dT%H%M%SZ).txt
export PGSHIFT_TEST_DURABLE=1
export PGSHIFT_TEST_PGCONF="max_wal_size=16GB;checkpoint_timeout=1h;max_connections=100"
exec bash tests/lib/with-pg.sh bash bench/inner.sh
