/* partman.c: what pgshift needs of pg_partman (see partman.h). */
#include "pgshift/partman.h"

#include "pgshift/log.h"
#include "pgshift/pg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int partman_find(PGconn *conn, pgs_partman *pm)
{
    PGresult *res = pg_query(conn, "looking for pg_partman",
                             "SELECT n.nspname, '\"' || replace(n.nspname, '\"', '\"\"') || '\"',"
                             " e.extversion"
                             " FROM pg_extension e"
                             " JOIN pg_namespace n ON n.oid = e.extnamespace"
                             " WHERE e.extname = 'pg_partman'",
                             0, NULL);
    if (res == NULL)
        return -1;
    int found = PQntuples(res) == 1;
    if (found) {
        snprintf(pm->schema, sizeof pm->schema, "%s", PQgetvalue(res, 0, 0));
        snprintf(pm->q, sizeof pm->q, "%s", PQgetvalue(res, 0, 1));
        snprintf(pm->version, sizeof pm->version, "%s", PQgetvalue(res, 0, 2));
        pm->major = atoi(pm->version);
    }
    PQclear(res);
    return found;
}

bool partman_supported(const pgs_partman *pm)
{
    return pm->major == 4;
}

char *partman_register_sql(const char *sq)
{
    char *sql = NULL;
    /* The lowest lower bound of the table's partitions, from the catalog:
     * FOR VALUES FROM ('2025-01-01 00:00:00+00') TO (...), or FROM (1000). */
    if (asprintf(
            &sql,
            "SELECT CASE WHEN EXISTS (SELECT 1 FROM %s.part_config WHERE parent_table = $1)"
            " THEN 'registered already' ELSE %s.create_parent(p_parent_table := $1,"
            "  p_control := $2, p_type := 'native', p_interval := $3, p_premake := $4::int,"
            "  p_start_partition := (SELECT b FROM (SELECT substring(pg_get_expr(c.relpartbound,"
            "     c.oid) FROM '^FOR VALUES FROM \\(''?([^'')]*)''?\\)') AS b"
            "     FROM pg_inherits h JOIN pg_class c ON c.oid = h.inhrelid"
            "     WHERE h.inhparent = $5::regclass) x WHERE b IS NOT NULL"
            "   ORDER BY CASE WHEN b ~ '^-?[0-9]+$' THEN b::numeric END,"
            "     CASE WHEN b !~ '^-?[0-9]+$' THEN b::timestamptz END LIMIT 1))::text END",
            sq, sq) < 0)
        return NULL;
    return sql;
}

char *partman_default_name(PGconn *conn, const char *sq, const char *relname)
{
    char *sql = NULL;
    if (asprintf(&sql, "SELECT %s.check_name_length($1, '_default', false)", sq) < 0)
        return NULL;
    char *v = pg_query_value(conn, "naming the DEFAULT partition", sql, 1,
                             (const char *[]){relname}, NULL);
    free(sql);
    return v;
}

char *partman_default_of(PGconn *conn, const char *table)
{
    return pg_query_value(conn, "looking for the DEFAULT partition",
                          "SELECT coalesce(max(c.relname), '') FROM pg_inherits h"
                          " JOIN pg_class c ON c.oid = h.inhrelid WHERE h.inhparent = $1::regclass"
                          " AND pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT'",
                          1, (const char *[]){table}, NULL);
}
