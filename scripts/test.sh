#!/usr/bin/env bash
# scripts/test.sh: the whole test suite, as README.md and .ci/run state it.
# Installs missing Debian packages (scripts/install-deps.sh), builds with clang, -Werror, AddressSanitizer + UBSan and the libFuzzer
# target into build-test/, then runs every ctest test (unit, integration
# against throwaway PostgreSQL 15 clusters, and the bounded fuzz run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
build=${PGSHIFT_TEST_BUILD_DIR:-build-test}
cmake -S . -B "$build" -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DPGSHIFT_WERROR=ON -DPGSHIFT_SANITIZE=ON -DPGSHIFT_FUZZ=ON >/dev/null
cmake --build "$build" -j "$(nproc)"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
cd "$build"
ctest --output-on-failure -j "${PGSHIFT_TEST_JOBS:-2}" "$@"
