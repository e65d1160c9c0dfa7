/* run.h: a run after the copy: the orchestrator in src/run/ (engine.h has its parts). */
#ifndef PGSHIFT_RUN_H
#define PGSHIFT_RUN_H

#include "pgshift/migration.h"

#include <stdbool.h>

/* Streams from the slot and applies until stopped by a signal or an error.
 * Returns the process exit code. */
int run_engine(pgs_migration *m);

/* After a cutover with a rollback window (phase reversible), or to finish
 * a swap back (rolled_back): streams the new tables' changes back into the
 * old ones until the window ends, `pgshift cleanup` stops it, or the swap
 * back (`pgshift rollback`, or `rollback_now`: at once, as that command
 * does when no run is there to ask). Returns the process exit code. */
int reverse_run(pgs_migration *fwd, bool rollback_now);

#endif
