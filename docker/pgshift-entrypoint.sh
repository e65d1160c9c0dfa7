#!/usr/bin/env bash
# pgshift-entrypoint.sh ARGS...: the pgshift container's entrypoint.
#
# Anything but `run ...` is simply `pgshift ARGS` (status, cutover, cleanup,
# abort, plan: `docker compose run --rm --no-deps pgshift status --plan ...`).
#
# For `run ...`, the rehearsal's conveniences:
#   - PGSHIFT_HOLD=1: on the first start of a fresh state dir, create
#     $PGSHIFT_STATE_DIR/postpone (the plan's cutover.postpone_file), so
#     `run --auto-cutover` streams and waits until the operator removes it
#     or asks with `pgshift cutover`. Later starts (restarts) leave it alone.
#   - SIGTERM/SIGINT are passed on to `pgshift run` (it stops cleanly, 143/130,
#     and the next start resumes).
#   - once `run` has exited 0 (cut over), a marker is written and the run is
#     not started again in this environment: a restart after `pgshift
#     cleanup` must not begin a new migration of the swapped tables.
#   - PGSHIFT_STAY=1 (the default): after that exit 0 the container stays up
#     so `docker compose exec pgshift pgshift status|cleanup` keep working.
#     Any other exit code is returned (compose's restart policy resumes).
# The same script runs natively in tests/integration/test_compose.sh
# (PGSHIFT_BIN, PGSHIFT_STATE_DIR pointing at a temp dir, PGSHIFT_STAY=0).
set -u
pgs=${PGSHIFT_BIN:-pgshift}
state=${PGSHIFT_STATE_DIR:-/state}

[ "${1:-}" = run ] || exec "$pgs" "$@"

say() { echo "pgshift-entrypoint: $*" >&2; }

stay() {
  [ "${PGSHIFT_STAY:-1}" = 1 ] || exit "$1"
  say "staying up for \`docker compose exec pgshift pgshift status|cleanup --plan /plan/plan.yaml\`"
  trap 'exit 0' TERM INT
  while :; do sleep 3600 & wait $!; done
}

if [ -e "$state/.cut-over" ]; then
  say "this environment already cut over ($(cat "$state/.cut-over")); not running again." \
    "Start over with \`docker compose down -v\`."
  stay 0
fi

if [ "${PGSHIFT_HOLD:-0}" = 1 ] && [ ! -e "$state/.hold-created" ]; then
  touch "$state/postpone" "$state/.hold-created" || exit 1
  say "holding the automatic cutover while $state/postpone exists" \
    "(rm it to release, or ask now with \`pgshift cutover\`)"
fi

"$pgs" "$@" &
child=$!
trap 'kill -TERM "$child" 2>/dev/null' TERM
trap 'kill -INT "$child" 2>/dev/null' INT
# `wait` returns early (status > 128) when a trapped signal arrives; wait
# again until the child itself has exited.
while :; do
  wait "$child"
  rc=$?
  kill -0 "$child" 2>/dev/null || break
done
trap - TERM INT

if [ "$rc" = 0 ]; then
  date -u +%Y-%m-%dT%H:%M:%SZ >"$state/.cut-over"
  say "pgshift run exited 0 (cut over)"
  stay 0
fi
say "pgshift run exited $rc"
exit "$rc"
