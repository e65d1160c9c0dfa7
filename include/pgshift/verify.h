/* verify.h: `pgshift verify`: compares each source table with its target
 * as of one source LSN, chunk by chunk, hashed on the servers, and names
 * the rows that differ (src/verify/verify.c). A table with a column
 * mapping (colmap.h) is compared with its mapped source: each target
 * column against its expression over the source row, cast to the
 * column's type; keys are named as the target's. */
#ifndef PGSHIFT_VERIFY_H
#define PGSHIFT_VERIFY_H

#include "pgshift/migration.h"

#include <stdbool.h>

/* Exit code: differences found. */
#define PGS_EXIT_DIFFERENT 4

/* How a keyed table is compared (plan verify.method):
 *   scan  one pass per side, source and target at once, each in one
 *         snapshot: per bucket of the key's hash (about 2000 rows each),
 *         count and XOR of row hashes; the buckets that differ are narrowed
 *         to their rows in one more pass. Sequential reads: the cost of a
 *         whole-table hash, whatever the key's order in the heap.
 *   walk  key ranges of verify.chunk_rows (default 20000) in key order (index scans), a
 *         range that differs narrowed at once, and a fresh consistent point
 *         whenever the snapshots are older than verify.max_snapshot_age, so
 *         no snapshot outlives it on a table of any size. Random heap reads
 *         where the key is not in the heap's order (a uuid key: about 3x a
 *         scan's time).
 *   auto  (default) scan when the source's heap can be read within
 *         verify.max_snapshot_age at VERIFY_SCAN_BYTES_PER_S, else walk. */
/* A conservative scan rate for auto: what one core hashed here (bench/). */
#define VERIFY_SCAN_BYTES_PER_S (100.0 * 1024 * 1024)
/* Differing rows named per table. */
#define VERIFY_MAX_SAMPLES 20
/* --repair rewrites at most this many rows per table (beyond it, a new
 * copy is the better repair). */
#define VERIFY_REPAIR_MAX 100000

typedef struct verify_opts {
    const char *table; /* only this source table ("schema.name" or "name"); NULL: all */
    bool json;
    bool repair;   /* --repair: rewrite the differing rows from the source (a mapped table's
                      mapped values), then verify again */
    bool progress; /* a progress line on stderr */
} verify_opts;

/* Runs the verify and prints its report (text or JSON on stdout). Returns
 * the exit code: 0 identical, PGS_EXIT_DIFFERENT, 1 failure, 2 usage. */
int verify_main(pgs_migration *m, const verify_opts *o);

#endif
