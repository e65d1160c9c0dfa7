/* copy.h: the parallel snapshot copy (src/copy/copy.c). */
#ifndef PGSHIFT_COPY_H
#define PGSHIFT_COPY_H

#include "pgshift/migration.h"

#include <libpq-fe.h>
#include <stdbool.h>

/* Copies every table under the exported snapshot with parallel workers.
 * `repl` is the replication connection that exported the snapshot; it is
 * closed (set to NULL) once every worker imported it. */
bool copy_run(pgs_migration *m, const char *snapshot, PGconn **repl);

#endif
