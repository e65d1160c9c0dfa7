#!/usr/bin/env bash
# bench/run.sh: the issue #3 benchmark, one command (as root on Debian 12):
#   bash bench/run.sh            # 2M rows (~850 MB with indexes)
#   BENCH_ROWS=200000 bash bench/run.sh   # a quick smaller run
#   PGSHIFT_PG=18 PGSHIFT_PG_CACHE=/work/main/.cache/pg bash bench/run.sh
#                                # the same on PostgreSQL 18 (14|15|16|17|18)
#   PGSHIFT_BIN_BEFORE=/tmp/pgshift-before/build/pgshift bash bench/run.sh
#                                # before/after: both binaries, see below
# Builds a Release pgshift (or takes PGSHIFT_BIN), starts a throwaway
# PostgreSQL (PGSHIFT_PG, default 15) with fsync on, and measures, on the
# same server in the same run:
#   1. copy: pgshift's snapshot copy (into a monthly-partitioned target it
#      creates, indexes after the data) vs INSERT INTO target SELECT * FROM
#      source (indexes in place)
#   2. catch-up of a recorded burst (~88k transactions of 1 insert + 1 update
#      + 0.1 delete, 8 pgbench clients): pgshift vs PostgreSQL's built-in
#      logical replication apply worker replaying the same burst into a
#      second database of the same cluster
#   3. pgshift's RSS while it applies a single 1M-row transaction
# and then, on a server of its own (bench/bigxact.sh):
#   4. the large-transaction latency: one 1M-row INSERT into a table with a
#      primary key, from its COMMIT returning to the slot confirming it,
#      with pgshift's peak RSS
# and on a third server (bench/ready-inner.sh, BENCH_READY_ROWS, default 1M):
#   5. time to ready: `pgshift run` from its start until the slot is
#      confirmed past the copy's own WAL, against INSERT INTO target SELECT
#      * FROM source, for a target the operator made (LIKE ... INCLUDING
#      ALL, partitioned, indexes in place) and one pgshift creates;
#      BENCH_READY_TPS=N runs both sides under N inserts/s; each kind
#      BENCH_READY_RUNS times (default 3), with the median ratio
#
# With PGSHIFT_BIN_BEFORE, 1-3 run once per binary, "before" first
# (BENCH_AFTER_FIRST=1: "after" first), each on a server of its own: each
# catch-up ratio compares pgshift with the native apply worker of the same
# run. 4 runs both binaries one after the other on one server.
# and on a fourth (bench/verify-inner.sh, BENCH_VERIFY_ROWS, default 2M):
#   6. `pgshift verify` while `run` streams under 200 inserts/s, against
#      count(*), sum(hashtext(t::text)) over the source and then the target
# and on a fifth (bench/map-inner.sh, BENCH_MAP_ROWS, default 1M):
#   7. a column mapping's cost: copy (to caught up) against INSERT ... SELECT
#      with the same expressions, and catch-up of the burst, each next to the
#      same without a mapping, and the native apply worker
# BENCH_PARTS=main, bigxact, ready, verify or map (comma-separated) runs only 1-3, 4, 5, 6 or 7;
# with PGSHIFT_BIN_BEFORE, 5 runs once per binary too.
# BENCH_INNER_BIGXACT=0 leaves out 3 (4 measures the same thing more closely).
# Results print as they come and are written to bench/results/<timestamp>-pg<N>[-side].txt.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
export PGSHIFT_PG=${PGSHIFT_PG:-15}
if [ -z "${PGSHIFT_BIN:-}" ]; then
  cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DPGSHIFT_TESTS=OFF >/dev/null
  cmake --build build-bench -j "$(nproc)" >/dev/null
  PGSHIFT_BIN=$PWD/build-bench/pgshift
fi
PGSHIFT_BIN=$(realpath "$PGSHIFT_BIN")
[ -z "${PGSHIFT_BIN_BEFORE:-}" ] || PGSHIFT_BIN_BEFORE=$(realpath "$PGSHIFT_BIN_BEFORE")
export PGSHIFT_BIN PGSHIFT_BIN_BEFORE=${PGSHIFT_BIN_BEFORE:-}
mkdir -p bench/results
stamp=$(date -u +%Y%m%dT%H%M%SZ)
export PGSHIFT_TEST_DURABLE=1
export PGSHIFT_TEST_PGCONF="max_wal_size=16GB;checkpoint_timeout=1h;max_connections=100"
parts=${BENCH_PARTS:-main,bigxact,ready,verify,map}

if [[ ,$parts, == *,main,* ]]; then
  if [ -z "$PGSHIFT_BIN_BEFORE" ]; then
    sides=(after)
  elif [ -n "${BENCH_AFTER_FIRST:-}" ]; then
    sides=(after before)
  else
    sides=(before after)
  fi
  for side in "${sides[@]}"; do
    bin=$PGSHIFT_BIN
    [ "$side" = before ] && bin=$PGSHIFT_BIN_BEFORE
    suffix=""
    [ -n "$PGSHIFT_BIN_BEFORE" ] && suffix="-$side"
    label=$side
    [ -n "$PGSHIFT_BIN_BEFORE" ] || label=""
    BENCH_SIDE=$label PGSHIFT_BIN=$bin BENCH_OUT=$PWD/bench/results/$stamp-pg$PGSHIFT_PG$suffix.txt \
      bash tests/lib/with-pg.sh bash bench/inner.sh
  done
fi
if [[ ,$parts, == *,ready,* ]]; then
  sides=(after)
  [ -z "$PGSHIFT_BIN_BEFORE" ] || sides=(before after)
  for side in "${sides[@]}"; do
    bin=$PGSHIFT_BIN
    [ "$side" = before ] && bin=$PGSHIFT_BIN_BEFORE
    suffix=-ready
    [ -n "$PGSHIFT_BIN_BEFORE" ] && suffix="-ready-$side"
    BENCH_ROWS=${BENCH_READY_ROWS:-1000000} PGSHIFT_BIN=$bin \
      BENCH_OUT=$PWD/bench/results/$stamp-pg$PGSHIFT_PG$suffix.txt \
      bash tests/lib/with-pg.sh bash bench/ready-inner.sh
  done
fi
if [[ ,$parts, == *,verify,* ]]; then
  BENCH_ROWS=${BENCH_VERIFY_ROWS:-2000000} BENCH_OUT=$PWD/bench/results/$stamp-pg$PGSHIFT_PG-verify.txt \
    bash tests/lib/with-pg.sh bash bench/verify-inner.sh
fi
if [[ ,$parts, == *,map,* ]]; then
  BENCH_OUT=$PWD/bench/results/$stamp-pg$PGSHIFT_PG-map.txt \
    bash tests/lib/with-pg.sh bash bench/map-inner.sh
fi
if [[ ,$parts, == *,bigxact,* ]]; then
  BENCH_OUT=$PWD/bench/results/$stamp-pg$PGSHIFT_PG-bigxact.txt \
    bash tests/lib/with-pg.sh bash bench/bigxact.sh
fi
