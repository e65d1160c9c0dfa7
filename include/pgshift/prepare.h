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
/* Builds the indexes and primary key on the targets pgshift created. */
bool prepare_target_indexes(pgs_migration *m);
/* Drops the slot if it exists (interrupted copy, abort). */
bool prepare_drop_slot(pgs_migration *m);
/* Drops the publication if it exists (abort, cleanup). */
bool prepare_drop_publication(pgs_migration *m);

#endif
