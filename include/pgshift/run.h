/* run.h: a run after the copy: the orchestrator in src/run/ (engine.h has its parts). */
#ifndef PGSHIFT_RUN_H
#define PGSHIFT_RUN_H

#include "pgshift/migration.h"

#include <stdbool.h>

/* Streams from the slot and applies until stopped by a signal or an error.
 * Returns the process exit code. */
int run_engine(pgs_migration *m);

#endif
