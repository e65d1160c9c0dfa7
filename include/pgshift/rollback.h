/* rollback.h: what the rollback window (plan `rollback: {window}`) keeps on
 * the server: publication and slot pgshiftr_<name> on the new tables, made
 * before the cutover's lock, and the reverse stream's own state row
 * "<name>/reverse", written by the swap in its transaction. The stream
 * itself is src/run/reverse.c; the swap back is the cutover's code run on
 * the reverse migration (source: the live new table, target: <t>_old). */
#ifndef PGSHIFT_ROLLBACK_H
#define PGSHIFT_ROLLBACK_H

#include "pgshift/migration.h"

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>

/* "pgshiftr_<name>": slot, publication and replication origin of the
 * reverse stream (never a forward migration's: those are "pgshift_..."). */
void rollback_slot_name(const char *plan_name, char *buf, size_t len);
/* "<name>/reverse": its row in pgshift.migrations (not a plan name). */
void rollback_row_name(const char *plan_name, char *buf, size_t len);

/* The statement that makes publication pgshiftr_<name> of the targets,
 * published through their roots (a change in a partition is the
 * partitioned table's; a row moving between partitions arrives as a
 * delete and an insert), or sets its tables when it `exists`. Made, with
 * the slot, before the forward cutover's first lock (src/run/reverse.c).
 * malloc'd; NULL on OOM. */
char *rollback_publication_sql(PGconn *conn, const pgs_migration *m, bool exists);

/* In the swap's transaction, after the renames: the reverse row starts
 * at the WAL position now (every forward write committed before it; every
 * write of the application to the new tables commits after it), with one
 * table row per table (source: the live name, target: <t>_old). */
bool rollback_record(PGconn *conn, pgs_migration *m, char *err, size_t errlen);

/* Drops the reverse slot (waiting a moment for a dead session to let go),
 * its origin, publication and row. Logged; false on failure. */
bool rollback_drop(PGconn *conn, const char *plan_name);

/* Is there a reverse slot for this plan? -1: the query failed. */
int rollback_slot_exists(PGconn *conn, const char *plan_name);

#endif
