/* rollback.c: the server side of the rollback window (rollback.h). */
#include "pgshift/rollback.h"

#include "pgshift/log.h"
#include "pgshift/pg.h"
#include "pgshift/prepare.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void rollback_slot_name(const char *plan_name, char *buf, size_t len)
{
    snprintf(buf, len, "pgshiftr_%s", plan_name);
}

void rollback_row_name(const char *plan_name, char *buf, size_t len)
{
    snprintf(buf, len, "%s/reverse", plan_name);
}

int rollback_slot_exists(PGconn *conn, const char *plan_name)
{
    char name[64];
    rollback_slot_name(plan_name, name, sizeof name);
    char *v = pg_query_value(conn, "looking for the reverse slot",
                             "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1", 1,
                             (const char *[]){name}, NULL);
    int n = v ? atoi(v) > 0 : -1;
    free(v);
    return n;
}

char *rollback_publication_sql(PGconn *conn, const pgs_migration *m, bool exists)
{
    char name[64];
    rollback_slot_name(m->plan->name, name, sizeof name);
    char *pub = pg_ident(conn, name), *list = strdup(""), *sql = NULL;
    for (int i = 0; pub && list && i < m->ntables; i++) {
        char *nl = NULL;
        if (asprintf(&nl, "%s%s%s", list, i ? ", " : "", m->tables[i].tgt.qname) < 0)
            nl = NULL;
        free(list);
        list = nl;
    }
    if (pub && list &&
        asprintf(&sql,
                 exists ? "ALTER PUBLICATION %s SET TABLE %s"
                        : "CREATE PUBLICATION %s FOR TABLE %s WITH (publish_via_partition_root = "
                          "true)",
                 pub, list) < 0)
        sql = NULL;
    free(pub);
    free(list);
    return sql;
}

bool rollback_record(PGconn *conn, pgs_migration *m, char *err, size_t errlen)
{
    char name[64], row[80];
    rollback_slot_name(m->plan->name, name, sizeof name);
    rollback_row_name(m->plan->name, row, sizeof row);
    PGresult *r = PQexecParams(
        conn,
        "INSERT INTO pgshift.migrations (name, phase, slot_name, publication_name,"
        "   consistent_lsn, applied_lsn)"
        " VALUES ($1, 'catching_up', $2, $2, pg_current_wal_insert_lsn(),"
        "   pg_current_wal_insert_lsn())"
        " ON CONFLICT (name) DO UPDATE SET phase = 'catching_up', slot_name = $2,"
        "   publication_name = $2, consistent_lsn = EXCLUDED.consistent_lsn,"
        "   applied_lsn = EXCLUDED.applied_lsn, applied_commit_time = NULL, applied_xacts = 0,"
        "   applied_changes = 0, error = NULL, stats = NULL, cutover = NULL, cutover_at = NULL,"
        "   timings = NULL, verify = NULL, verify_progress = NULL, started_at = now(),"
        "   updated_at = now()",
        2, NULL, (const char *[]){row, name}, NULL, NULL, 0);
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    if (ok) {
        r = PQexecParams(conn, "DELETE FROM pgshift.tables WHERE migration = $1", 1, NULL,
                         (const char *[]){row}, NULL, NULL, 0);
        ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        PQclear(r);
    }
    for (int i = 0; ok && i < m->ntables; i++) {
        const pgs_mtable *t = &m->tables[i];
        char ord[16], old[160];
        snprintf(ord, sizeof ord, "%d", i);
        snprintf(old, sizeof old, "%s_old", t->src.relname);
        char *qold = pg_qualified(conn, t->src.nspname, old);
        r = PQexecParams(conn,
                         "INSERT INTO pgshift.tables (migration, ord, source_table, target_table,"
                         "   copy_done) VALUES ($1, $2::int, $3, $4, true)",
                         4, NULL, (const char *[]){row, ord, t->src.qname, qold ? qold : "?"}, NULL,
                         NULL, 0);
        ok = qold && PQresultStatus(r) == PGRES_COMMAND_OK;
        PQclear(r);
        free(qold);
    }
    if (!ok)
        snprintf(err, errlen, "recording the reverse stream's state failed: %s",
                 PQerrorMessage(conn));
    return ok;
}

bool rollback_drop(PGconn *conn, const char *plan_name)
{
    char name[64], row[80];
    rollback_slot_name(plan_name, name, sizeof name);
    rollback_row_name(plan_name, row, sizeof row);
    char *pub = pg_ident(conn, name), *sql = NULL;
    bool ok = prepare_drop_slot_on(conn, conn, name) && pub &&
              asprintf(&sql, "DROP PUBLICATION IF EXISTS %s", pub) >= 0 &&
              pg_exec(conn, "dropping the reverse publication", sql);
    free(sql);
    free(pub);
    PGresult *r;
    char *st =
        ok ? pg_query_value(conn, "reading the state",
                            "SELECT to_regclass('pgshift.migrations') IS NOT NULL", 0, NULL, NULL)
           : NULL;
    if (st && st[0] == 't') {
        r = pg_query(conn, "removing the reverse stream's state",
                     "DELETE FROM pgshift.migrations WHERE name = $1", 1, (const char *[]){row});
        ok = r != NULL;
        PQclear(r);
    }
    free(st);
    return ok;
}
