/* verify.h: `pgshift verify`: compares each source table with its target
 * as of one source LSN, chunk by chunk, hashed on the servers, and names
 * the rows that differ (src/verify/verify.c). */
#ifndef PGSHIFT_VERIFY_H
#define PGSHIFT_VERIFY_H

#include "pgshift/migration.h"

#include <stdbool.h>

/* Exit code: differences found. */
#define PGS_EXIT_DIFFERENT 4

/* Rows per chunk: a chunk whose count or hash differs is narrowed to its
 * rows (their keys and hashes only). */
#define VERIFY_CHUNK_ROWS 20000
/* Differing rows named per table. */
#define VERIFY_MAX_SAMPLES 20

typedef struct verify_opts {
    const char *table; /* only this source table ("schema.name" or "name"); NULL: all */
    bool json;
    bool progress; /* a progress line on stderr */
} verify_opts;

/* Runs the verify and prints its report (text or JSON on stdout). Returns
 * the exit code: 0 identical, PGS_EXIT_DIFFERENT, 1 failure, 2 usage. */
int verify_main(pgs_migration *m, const verify_opts *o);

#endif
