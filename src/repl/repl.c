/* repl.c: replication-protocol commands on a walsender connection. */
#include "pgshift/repl.h"

#include "pgshift/log.h"
#include "pgshift/pg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

PGconn *repl_connect(pgs_migration *m)
{
    return pg_connect(m->plan->source, "source (replication)", true);
}

bool repl_create_slot(pgs_migration *m, PGconn **conn, char **snapshot, pgs_lsn *consistent)
{
    *conn = repl_connect(m);
    if (*conn == NULL)
        return false;
    char *slot = pg_ident(*conn, m->slot);
    char *sql = NULL;
    bool ok = false;
    /* 15 added the option list; 14 only knows the keyword form. 17 can
     * carry the slot over a failover: a standby with sync_replication_slots
     * keeps a copy, which the promoted standby streams from. */
    int version = PQserverVersion(*conn);
    const char *opts = version >= 170000   ? "(SNAPSHOT 'export', FAILOVER)"
                       : version >= 150000 ? "(SNAPSHOT 'export')"
                                           : "EXPORT_SNAPSHOT";
    if (slot == NULL ||
        asprintf(&sql, "CREATE_REPLICATION_SLOT %s LOGICAL pgoutput %s", slot, opts) < 0)
        goto done;
    PGresult *res = PQexec(*conn, sql);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        char line[1024];
        log_error("creating replication slot %s: %s", m->slot,
                  pg_result_error_line(res, line, sizeof line));
        PQclear(res);
        goto done;
    }
    if (!decode_lsn_parse(PQgetvalue(res, 0, 1), consistent)) {
        log_error("creating replication slot %s: bad consistent point \"%s\"", m->slot,
                  PQgetvalue(res, 0, 1));
        PQclear(res);
        goto done;
    }
    *snapshot = strdup(PQgetvalue(res, 0, 2));
    log_info("created replication slot %s%s, consistent point %s, snapshot %s", m->slot,
             version >= 170000 ? " (failover)" : "", PQgetvalue(res, 0, 1), PQgetvalue(res, 0, 2));
    PQclear(res);
    ok = *snapshot != NULL;
done:
    free(slot);
    free(sql);
    if (!ok) {
        PQfinish(*conn);
        *conn = NULL;
    }
    return ok;
}

int repl_proto_version(int server_version)
{
    if (server_version >= 160000)
        return 4;
    return server_version >= 150000 ? 3 : 2;
}

bool repl_start(pgs_migration *m, PGconn *conn, pgs_lsn start, bool binary, bool origin_none,
                int *proto_version)
{
    char *slot = pg_ident(conn, m->slot);
    char *pub = pg_ident(conn, m->publication);
    /* publication_names is a string literal holding a list of identifiers. */
    char *publit = pub ? PQescapeLiteral(conn, pub, strlen(pub)) : NULL;
    char *sql = NULL;
    char lsn[18];
    bool ok = false;
    int proto = repl_proto_version(PQserverVersion(conn));
    if (slot && publit &&
        asprintf(&sql,
                 "START_REPLICATION SLOT %s LOGICAL %s (proto_version '%d', publication_names %s,"
                 " messages 'true', binary '%s', streaming 'on'%s)",
                 slot, decode_lsn_format(start, lsn), proto, publit, binary ? "true" : "false",
                 origin_none && proto >= 4 ? ", origin 'none'" : "") >= 0) {
        PGresult *res = PQexec(conn, sql);
        if (PQresultStatus(res) == PGRES_COPY_BOTH) {
            ok = true;
            *proto_version = proto;
        } else {
            char line[1024];
            log_error("START_REPLICATION on slot %s: %s", m->slot,
                      pg_result_error_line(res, line, sizeof line));
        }
        PQclear(res);
    }
    free(slot);
    free(pub);
    PQfreemem(publit);
    free(sql);
    return ok;
}

bool repl_send_status(PGconn *conn, pgs_lsn write, pgs_lsn flush, bool reply)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    int64_t unix_us = (int64_t)tv.tv_sec * 1000000 + tv.tv_usec;
    uint8_t buf[DECODE_STATUS_UPDATE_LEN];
    size_t n =
        decode_status_update(buf, write, flush, flush, decode_ts_from_unix_us(unix_us), reply);
    if (PQputCopyData(conn, (const char *)buf, (int)n) != 1 || PQflush(conn) < 0) {
        log_warn("sending feedback to the source failed: %s", PQerrorMessage(conn));
        return false;
    }
    return true;
}
