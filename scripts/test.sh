#!/usr/bin/env bash
# scripts/test.sh [CTEST-ARGS...]: the whole test suite, as README.md and
# .ci/run state it. Installs what is missing (scripts/install-deps.sh: Debian
# packages and the PostgreSQL servers), builds once with clang, -Werror,
# AddressSanitizer + UBSan and the libFuzzer target into build-test/, runs the
# unit tests and the bounded fuzz run once, then the integration tests on each
# PostgreSQL major in PGSHIFT_PGS (default "14 15 16 17 18"; PGSHIFT_PGS=16
# narrows). A version that fails does not stop the others; the exit status is
# non-zero if any part failed, and a summary line per part ends the output.
# CTEST-ARGS go to every ctest run (-R NAME, -L unit, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
read -ra pgs <<<"${PGSHIFT_PGS:-14 15 16 17 18}"
for v in "${pgs[@]}"; do
  case "$v" in
  14 | 15 | 16 | 17 | 18) ;;
  *) echo "test.sh: PGSHIFT_PGS: PostgreSQL $v is not supported (14 15 16 17 18)" >&2; exit 2 ;;
  esac
done
bash scripts/install-deps.sh
build=${PGSHIFT_TEST_BUILD_DIR:-build-test}
cmake -S . -B "$build" -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DPGSHIFT_WERROR=ON -DPGSHIFT_SANITIZE=ON -DPGSHIFT_FUZZ=ON >/dev/null
cmake --build "$build" -j "$(nproc)"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
cd "$build"
# Every cluster of a run is a copy of one initdb per server (with-pg.sh).
export PGSHIFT_TEST_TEMPLATES=${PGSHIFT_TEST_TEMPLATES:-$PWD/pg-templates}
# Three tests at a time on the 2-core machines CI uses: at two, a third of the
# CPU sat idle while tests waited on their servers (18's integration part,
# measured with with-pg.sh's PGSHIFT_TEST_CPUACCT: 612 CPU-s in 502 s at -j2;
# 667 CPU-s in 397 s at -j3, all passed). PGSHIFT_TEST_JOBS overrides.
jobs=${PGSHIFT_TEST_JOBS:-3}
logs=$(mktemp -d "${TMPDIR:-/tmp}/pgshift-testsh.XXXXXX")
trap 'rm -rf "$logs"' EXIT

summary=()
failed=0
tests_passed=0
tests_failed=0
t_all=$SECONDS

# part TITLE PG CTEST-SELECTION...: one ctest run against PostgreSQL PG
# (PGSHIFT_PG for tests/lib/with-pg.sh), with the caller's CTEST-ARGS.
part() {
  local title=$1 pg=$2
  shift 2
  local n
  n=$(PGSHIFT_PG=$pg ctest -N "$@" "${args[@]}" | sed -n 's/^Total Tests: //p')
  echo
  if [ "${n:-0}" = 0 ]; then
    echo "== $title: no tests selected =="
    summary+=("$title: no tests selected")
    return 0
  fi
  echo "== $title =="
  local t0=$SECONDS rc=0 log=$logs/part.log
  PGSHIFT_PG=$pg ctest --output-on-failure -j "$jobs" "$@" "${args[@]}" 2>&1 | tee "$log" ||
    rc=${PIPESTATUS[0]}
  local secs=$((SECONDS - t0)) p=0 f=0 line
  # "97% tests passed, 1 tests failed out of 29"
  line=$(grep -E '^[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -n 1) || true
  if [ -n "$line" ]; then
    f=$(sed -E 's/.* ([0-9]+) tests? failed out of.*/\1/' <<<"$line")
    p=$(($(sed -E 's/.* out of ([0-9]+).*/\1/' <<<"$line") - f))
  fi
  tests_passed=$((tests_passed + p))
  tests_failed=$((tests_failed + f))
  if [ "$rc" = 0 ]; then
    summary+=("$title: passed, $p tests, ${secs} s")
  else
    failed=1
    summary+=("$title: FAILED (ctest exit $rc), $f of $((p + f)) tests failed, ${secs} s")
  fi
}

args=("$@")
# Unit tests and the fuzz run, once. The fuzz run's seed corpus comes from
# integration.test_capture (a ctest fixture), captured from Debian's 15: its
# pgoutput has every message the decoder reads. When 15 is among the versions
# the fuzz run goes into 15's integration part, beside the tests: it keeps
# one core busy for its 60 s, and the integration tests leave about a third
# of the CPU idle while they wait on servers, so it costs that part far less
# than the minute it takes alone. Otherwise it runs with the unit tests.
fuzz_with=
for v in "${pgs[@]}"; do [ "$v" = 15 ] && fuzz_with=15; done
if [ -n "$fuzz_with" ]; then
  part "unit" 15 -LE 'integration|fuzz'
else
  part "unit + fuzz" 15 -LE integration
fi
for v in "${pgs[@]}"; do
  if [ "$v" = "$fuzz_with" ]; then
    part "PostgreSQL $v: integration + fuzz" "$v" -L 'integration|fuzz'
  else
    part "PostgreSQL $v: integration" "$v" -L integration
  fi
done

echo
echo "== summary (${PGSHIFT_PGS:-14 15 16 17 18}; $((SECONDS - t_all)) s in all) =="
printf '%s\n' "${summary[@]}"
echo "total: $tests_passed passed, $tests_failed failed"
exit "$failed"
