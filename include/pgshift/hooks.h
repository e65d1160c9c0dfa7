/* hooks.h: the plan's `hooks:` commands, run on migration events with the
 * status JSON on stdin (for paging and chat). */
#ifndef PGSHIFT_HOOKS_H
#define PGSHIFT_HOOKS_H

#include "pgshift/plan.h"

/* Starts the hook for `event` (copy_done, ready, cutover_started,
 * cutover_done, failed) if the plan has one: /bin/sh -c COMMAND with `json`
 * on stdin and PGSHIFT_EVENT / PGSHIFT_MIGRATION in the environment. Does not
 * wait: a slow pager never holds up the migration. */
void hooks_fire(const pgs_plan *plan, const char *event, const char *json);

/* Collects finished hooks and logs the ones that failed. */
void hooks_reap(void);

#endif
