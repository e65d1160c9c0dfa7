/* repl.h: the replication connection: slot creation with an exported
 * snapshot, START_REPLICATION, and standby status updates. A walsender
 * speaks only the simple query protocol. */
#ifndef PGSHIFT_REPL_H
#define PGSHIFT_REPL_H

#include "pgshift/decode.h"
#include "pgshift/migration.h"

#include <libpq-fe.h>
#include <stdbool.h>

/* Opens a replication=database connection to the source. */
PGconn *repl_connect(pgs_migration *m);

/* CREATE_REPLICATION_SLOT <slot> LOGICAL pgoutput (SNAPSHOT 'export'),
 * with FAILOVER on 17+ (synchronized to standbys that sync slots) and in
 * 14's keyword form (EXPORT_SNAPSHOT) there.
 * On success *conn is the replication connection, which must run no other
 * command until every copy worker has imported *snapshot (malloc'd). */
bool repl_create_slot(pgs_migration *m, PGconn **conn, char **snapshot, pgs_lsn *consistent);

/* The highest pgoutput protocol a server (PQserverVersion) speaks:
 * 2 on 14 (streaming of in-progress transactions), 3 on 15 (two-phase),
 * 4 on 16+ (parallel streaming). */
int repl_proto_version(int server_version);

/* START_REPLICATION from `start` with the server's highest proto_version
 * (set in *proto_version), streaming on, the migration's publication,
 * messages on, binary when source and target are the same database, and
 * origin 'none' (16+) when `origin_none`: then changes made by sessions
 * with a replication origin, pgshift's own apply session among them, are
 * dropped by the walsender before they are decoded. The connection is then
 * in CopyBoth mode. */
bool repl_start(pgs_migration *m, PGconn *conn, pgs_lsn start, bool binary, bool origin_none,
                int *proto_version);

/* Sends a standby status update; false when the connection failed. */
bool repl_send_status(PGconn *conn, pgs_lsn write, pgs_lsn flush, bool reply);

#endif
