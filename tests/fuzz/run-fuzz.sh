#!/usr/bin/env bash
# run-fuzz.sh FUZZER SEEDS_DIR VECTORS_DIR WORK_DIR: a bounded libFuzzer run
# of the pgoutput decoder, as ctest runs it (see README.md).
#
# The corpus starts fresh in WORK_DIR/corpus from the hand-made seeds (already
# in the fuzzer's input format) and the messages captured from a real server
# by integration.test_capture (bare pgoutput messages, turned into fuzzer
# inputs here). Runs ${PGSHIFT_FUZZ_SECONDS:-60} seconds; crash artifacts go
# to WORK_DIR. Exits non-zero if the fuzzer found anything.
set -u

if [ $# -ne 4 ]; then
  echo "usage: $0 FUZZER SEEDS_DIR VECTORS_DIR WORK_DIR" >&2
  exit 2
fi
fuzzer=$1 seeds=$2 vectors=$3 work=$4
seconds=${PGSHIFT_FUZZ_SECONDS:-60}

[ -x "$fuzzer" ] || { echo "run-fuzz: $fuzzer is not executable" >&2; exit 2; }
mkdir -p "$work" || exit 2
corpus="$work/corpus"
rm -rf "$corpus"
rm -f "$work"/crash-* "$work"/leak-* "$work"/timeout-* "$work"/oom-* "$work"/slow-unit-*
mkdir -p "$corpus" || exit 2

nseeds=0
if [ -d "$seeds" ]; then
  for f in "$seeds"/*; do
    [ -f "$f" ] || continue
    cp "$f" "$corpus/seed-$(basename "$f")" && nseeds=$((nseeds + 1))
  done
fi

# A captured vector is a bare message; its file name says the protocol
# version (pv1..pv3) and whether it came from inside a stream block (-s-).
# Each becomes two inputs: the bare message and the same in an XLogData frame.
# Mode byte: bits 0-1 proto_version - 1, bit 2 framed, bit 3 in a stream block.
nvectors=0
if [ -d "$vectors" ]; then
  for f in "$vectors"/*; do
    [ -f "$f" ] || continue
    name=$(basename "$f")
    mode=0
    case "$name" in
      *pv2*) mode=1 ;;
      *pv3*) mode=2 ;;
    esac
    case "$name" in *-s-*) mode=$((mode | 8)) ;; esac
    { printf "\\x$(printf %02x "$mode")"; cat "$f"; } >"$corpus/vec-$name"
    framed=$((mode | 4))
    { printf "\\x$(printf %02x "$framed")w"; head -c 24 /dev/zero; cat "$f"; } \
      >"$corpus/vecw-$name"
    nvectors=$((nvectors + 1))
  done
fi
if [ "$nvectors" = 0 ]; then
  echo "run-fuzz: no captured vectors in $vectors (run integration.test_capture first); seeds only"
fi
echo "run-fuzz: $nseeds seeds, $nvectors captured vectors, $seconds s"

log="$work/fuzz.log"
"$fuzzer" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
  -artifact_prefix="$work/" "$corpus" >"$log" 2>&1
rc=$?

tail -n 25 "$log"
crashes=$(find "$work" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' \
  -o -name 'oom-*' \) | wc -l)
if [ "$rc" != 0 ] || [ "$crashes" != 0 ]; then
  echo "run-fuzz: fuzzer exited $rc with $crashes artifact(s) in $work (full log: $log)" >&2
  echo "0 passed, 1 failed"
  exit 1
fi
echo "1 passed, 0 failed"
