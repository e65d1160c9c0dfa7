#!/usr/bin/env bash
# A single 1M-row source transaction streams through the applier without
# client memory growth (pgoutput sends it at commit; the applier pipelines
# it in bounded segments inside one target transaction).
source "$(dirname "$0")/lib/common.sh"
# Keep ASan's quarantine small so RSS reflects live memory, not freed chunks.
export ASAN_OPTIONS="${ASAN_OPTIONS:-}:quarantine_size_mb=8:malloc_context_size=5"
sql "CREATE TABLE big (id int PRIMARY KEY, v text, n numeric); CREATE TABLE big_new (LIKE big INCLUDING ALL)" || fail setup
cat >"$WORK/plan.yaml" <<Y
$(plan_header bigx)
state_dir: $WORK
tables: [{source: big, target: big_new}]
Y
start_run "$WORK/plan.yaml" "$WORK/run.log"
wait_streaming "$WORK/run.log"
sql "INSERT INTO big VALUES (0, 'warm up', 0)" || fail warmup
wait_applied pgshift_bigx
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$RUN_PID/status"; }
hwm_kb() { awk '/^VmHWM/ {print $2}' "/proc/$RUN_PID/status"; }
base=$(rss_kb)
t0=$(date +%s.%N)
sql "INSERT INTO big SELECT i, md5(i::text), i / 3.0 FROM generate_series(1, 1000000) i" || fail insert
wait_applied pgshift_bigx 600
t1=$(date +%s.%N)
same_rows big big_new
peak=$(hwm_kb)
growth=$(( (peak - base) / 1024 ))
echo "# 1M-row transaction: RSS before ${base} kB, peak ${peak} kB (+${growth} MB), insert+apply $(awk "BEGIN {print $t1 - $t0}") s"
[ "$growth" -lt 64 ] || fail "client memory grew by ${growth} MB while applying one 1M-row transaction"
pass "1M-row transaction applied, client RSS grew ${growth} MB"
stop_run
finish
