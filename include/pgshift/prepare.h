/* prepare.h: what `run` creates before the copy and drops after (src/plan/prepare.c). */
#ifndef PGSHIFT_PREPARE_H
#define PGSHIFT_PREPARE_H

#include "pgshift/migration.h"

#include <stdbool.h>

/* The most partitions pgshift creates from a partition spec. */
#define PGS_MAX_PARTITIONS 2000

/* Creates a target from the partition spec (no indexes yet), or empties
 * the user's target after an interrupted copy. */
bool prepare_targets(pgs_migration *m);
/* Creates the publication for the source tables unless it exists. */
bool prepare_publication(pgs_migration *m);
/* Builds the indexes and primary key on the targets pgshift created, and
 * swaps the copied partitions into operator-made targets (shadow.c). */
bool prepare_target_indexes(pgs_migration *m);
/* Why the copy into this operator-made partitioned target cannot go
 * through a shadow (malloc'd), or NULL when it does (shadow.c). */
char *prepare_shadow_why_not(pgs_migration *m, pgs_mtable *t);
/* Drops the copy's shadows (shadow.c) an interrupted run left (abort). */
bool prepare_drop_shadows(pgs_migration *m);
/* Drops the slot if it exists (interrupted copy, abort). */
bool prepare_drop_slot(pgs_migration *m);
/* The same for any slot: waits up to 30 s for it to be free, drops it and
 * its replication origins (on origin_conn, 16+). */
bool prepare_drop_slot_on(PGconn *conn, PGconn *origin_conn, const char *slot);
/* Drops the publication if it exists (abort, cleanup). */
bool prepare_drop_publication(pgs_migration *m);

#endif
