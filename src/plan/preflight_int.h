/* preflight_int.h (private to src/plan): the preflight's report, shared
 * by preflight.c and preflight_map.c (the column mapping's checks). */
#ifndef PGSHIFT_PREFLIGHT_INT_H
#define PGSHIFT_PREFLIGHT_INT_H

#include "pgshift/migration.h"

#include <stdbool.h>
#include <stdio.h>

typedef struct report {
    FILE *out;
    int blocking;
    int warnings;
} report;

/* One finding: tag "ok", "note", "warn" (counted) or "BLOCK" (counted). */
void preflight_say(report *r, const char *tag, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
#define say preflight_say

/* A mapped table (t->map.mapped): the mapping printed, its expressions run
 * over a sample of the source's rows, its key checked one to one, the
 * target columns it leaves to their defaults, and (rollback.window) the
 * plan's `reverse:`. */
void preflight_mapping(pgs_migration *m, pgs_mtable *t, bool resuming, report *r);

#endif
