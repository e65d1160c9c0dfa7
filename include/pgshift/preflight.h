/* preflight.h: the checks `plan` prints and `run` refuses on (src/plan/preflight.c). */
#ifndef PGSHIFT_PREFLIGHT_H
#define PGSHIFT_PREFLIGHT_H

#include "pgshift/migration.h"

#include <stdio.h>
#include <stdbool.h>

/* Checks everything `run` needs and prints a report to `out`: server
 * settings, privileges, keys, column match, partition coverage, sizes,
 * dependent objects. Changes nothing. `resuming` relaxes the checks that
 * only hold before the copy (empty target, target does not exist yet).
 * Returns the number of blocking problems (0 = go), or -1 on error. */
int preflight_run(pgs_migration *m, bool resuming, FILE *out);

#endif
