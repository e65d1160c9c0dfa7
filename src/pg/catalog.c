/* catalog.c: reads a table's shape (columns, keys, partitioning) from the
 * server catalogs. Every query passes names as parameters. */
#include "pgshift/catalog.h"

#include "pgshift/log.h"
#include "pgshift/pg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void strlist_free(pgs_strlist *l)
{
    for (int i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

bool strlist_contains(const pgs_strlist *l, const char *s)
{
    for (int i = 0; i < l->n; i++)
        if (strcmp(l->v[i], s) == 0)
            return true;
    return false;
}

bool strlist_push(pgs_strlist *l, const char *s)
{
    char **nv = realloc(l->v, sizeof(char *) * (size_t)(l->n + 1));
    if (nv == NULL)
        return false;
    l->v = nv;
    if ((l->v[l->n] = strdup(s)) == NULL)
        return false;
    l->n++;
    return true;
}

void catalog_relinfo_free(pgs_relinfo *rel)
{
    free(rel->nspname);
    free(rel->relname);
    free(rel->qname);
    free(rel->partkey);
    for (int i = 0; i < rel->ncols; i++) {
        free(rel->cols[i].name);
        free(rel->cols[i].type);
    }
    free(rel->cols);
    strlist_free(&rel->pk);
    strlist_free(&rel->ri);
    strlist_free(&rel->partcols);
    memset(rel, 0, sizeof *rel);
}

const pgs_column *catalog_column(const pgs_relinfo *rel, const char *name)
{
    for (int i = 0; i < rel->ncols; i++)
        if (strcmp(rel->cols[i].name, name) == 0)
            return &rel->cols[i];
    return NULL;
}

static bool read_names(PGconn *conn, const char *what, const char *sql, const char *oid,
                       pgs_strlist *out)
{
    const char *p[1] = {oid};
    PGresult *res = pg_query(conn, what, sql, 1, p);
    if (res == NULL)
        return false;
    bool ok = true;
    for (int i = 0; i < PQntuples(res) && ok; i++)
        ok = strlist_push(out, PQgetvalue(res, i, 0));
    PQclear(res);
    return ok;
}

static const char *const SQL_REL =
    "SELECT c.oid, n.nspname, c.relname, c.relkind, c.relreplident,"
    /* a partitioned table: its leaves' sums (-1: none counted yet) */
    "       CASE WHEN c.relkind <> 'p' THEN c.reltuples::bigint ELSE"
    "         (SELECT CASE WHEN coalesce(bool_and(l.reltuples < 0), true) THEN -1"
    "                 ELSE sum(greatest(l.reltuples, 0)) END::bigint"
    "            FROM pg_partition_tree(c.oid) t JOIN pg_class l ON l.oid = t.relid"
    "           WHERE t.isleaf) END,"
    "       CASE WHEN c.relkind <> 'p' THEN pg_total_relation_size(c.oid) ELSE"
    "         (SELECT coalesce(sum(pg_total_relation_size(t.relid)), 0)::bigint"
    "            FROM pg_partition_tree(c.oid) t WHERE t.isleaf) END,"
    "       CASE WHEN c.relkind <> 'p' THEN c.relpages::bigint ELSE"
    "         (SELECT coalesce(sum(l.relpages), 0)::bigint FROM pg_partition_tree(c.oid) t"
    "            JOIN pg_class l ON l.oid = t.relid WHERE t.isleaf) END,"
    "       CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END"
    "  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
    " WHERE c.oid = to_regclass($1)";

static const char *const SQL_PARSE =
    "SELECT CASE WHEN cardinality(p) = 1 THEN current_schema() ELSE p[1] END,"
    "       p[cardinality(p)], cardinality(p)"
    "  FROM parse_ident($1) AS p";

static const char *const SQL_COLS =
    "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.atttypid, a.atttypmod,"
    "       a.attnotnull, a.attgenerated, a.attidentity, a.atthasdef"
    "  FROM pg_attribute a"
    " WHERE a.attrelid = $1::oid AND a.attnum > 0 AND NOT a.attisdropped"
    " ORDER BY a.attnum";

static const char *const SQL_PK =
    "SELECT a.attname FROM pg_index i, unnest(i.indkey) WITH ORDINALITY k(attnum, ord)"
    "  JOIN pg_attribute a ON a.attnum = k.attnum"
    " WHERE i.indrelid = $1::oid AND a.attrelid = i.indrelid AND i.indisprimary"
    " ORDER BY k.ord";

static const char *const SQL_RI =
    "SELECT a.attname FROM pg_index i, unnest(i.indkey) WITH ORDINALITY k(attnum, ord)"
    "  JOIN pg_attribute a ON a.attnum = k.attnum"
    " WHERE i.indrelid = $1::oid AND a.attrelid = i.indrelid AND i.indisreplident"
    "   AND k.ord <= i.indnkeyatts"
    " ORDER BY k.ord";

static const char *const SQL_PARTCOLS =
    "SELECT a.attname FROM pg_partitioned_table p, unnest(p.partattrs) WITH ORDINALITY"
    "       k(attnum, ord) JOIN pg_attribute a ON a.attnum = k.attnum"
    " WHERE p.partrelid = $1::oid AND a.attrelid = p.partrelid AND k.attnum > 0"
    " ORDER BY k.ord";

static char *dup_or_null(const PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col) ? NULL : strdup(PQgetvalue(res, row, col));
}

bool catalog_read_rel(PGconn *conn, const char *name, pgs_relinfo *out)
{
    memset(out, 0, sizeof *out);
    char what[300];
    snprintf(what, sizeof what, "reading the catalog for table %s", name);
    const char *p[1] = {name};

    PGresult *res = pg_query(conn, what, SQL_REL, 1, p);
    if (res == NULL)
        return false;
    if (PQntuples(res) == 0) {
        PQclear(res);
        res = pg_query(conn, what, SQL_PARSE, 1, p);
        if (res == NULL)
            return false;
        if (atoi(PQgetvalue(res, 0, 2)) > 2) {
            log_error("table name %s has more than two parts; write schema.table", name);
            PQclear(res);
            return false;
        }
        out->nspname = strdup(PQgetvalue(res, 0, 0));
        out->relname = strdup(PQgetvalue(res, 0, 1));
        PQclear(res);
        out->qname = pg_qualified(conn, out->nspname, out->relname);
        return out->qname != NULL;
    }
    out->exists = true;
    out->oid = (uint32_t)strtoul(PQgetvalue(res, 0, 0), NULL, 10);
    out->nspname = strdup(PQgetvalue(res, 0, 1));
    out->relname = strdup(PQgetvalue(res, 0, 2));
    out->relkind = PQgetvalue(res, 0, 3)[0];
    out->replident = PQgetvalue(res, 0, 4)[0];
    /* reltuples is -1 until the first VACUUM or ANALYZE: then the count is
     * unknown, and it is said so rather than scanned (count(*) on a live
     * table the operator only asked to inspect). */
    out->rows_est = strtoll(PQgetvalue(res, 0, 5), NULL, 10);
    out->rows_known = out->rows_est >= 0;
    out->bytes = strtoll(PQgetvalue(res, 0, 6), NULL, 10);
    out->pages = strtoll(PQgetvalue(res, 0, 7), NULL, 10);
    out->partkey = dup_or_null(res, 0, 8);
    char oid[16];
    snprintf(oid, sizeof oid, "%u", out->oid);
    PQclear(res);
    out->qname = pg_qualified(conn, out->nspname, out->relname);
    if (out->qname == NULL)
        return false;
    if (out->rows_est < 0)
        out->rows_est = 0;

    const char *po[1] = {oid};
    res = pg_query(conn, what, SQL_COLS, 1, po);
    if (res == NULL)
        return false;
    int n = PQntuples(res);
    out->cols = calloc((size_t)(n ? n : 1), sizeof(pgs_column));
    if (out->cols == NULL) {
        PQclear(res);
        return false;
    }
    for (int i = 0; i < n; i++) {
        pgs_column *c = &out->cols[i];
        c->name = strdup(PQgetvalue(res, i, 0));
        c->type = strdup(PQgetvalue(res, i, 1));
        c->typoid = (uint32_t)strtoul(PQgetvalue(res, i, 2), NULL, 10);
        c->typmod = atoi(PQgetvalue(res, i, 3));
        c->notnull = PQgetvalue(res, i, 4)[0] == 't';
        c->generated = PQgetvalue(res, i, 5)[0];
        c->identity = PQgetvalue(res, i, 6)[0];
        c->has_default = PQgetvalue(res, i, 7)[0] == 't';
        out->ncols++;
    }
    PQclear(res);

    return read_names(conn, what, SQL_PK, oid, &out->pk) &&
           read_names(conn, what, SQL_RI, oid, &out->ri) &&
           (out->relkind != 'p' || read_names(conn, what, SQL_PARTCOLS, oid, &out->partcols));
}

/* Why a slot was invalidated, in words that name the setting involved. */
static const char *invalidation_words(const char *reason)
{
    static const struct {
        const char *reason, *words;
    } known[] = {
        {"wal_removed", "it held back more WAL than max_slot_wal_keep_size allows, and the "
                        "server removed that WAL"},
        {"idle_timeout", "it was inactive longer than idle_replication_slot_timeout"},
        {"rows_removed", "catalog rows it needs were removed"},
        {"wal_level_insufficient", "wal_level was lowered below logical"},
        {"conflict", "a recovery conflict"},
    };
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strcmp(reason, known[i].reason) == 0)
            return known[i].words;
    return NULL;
}

void catalog_slot_from_row(const PGresult *res, int col, pgs_slot_state *out)
{
    memset(out, 0, sizeof *out);
    snprintf(out->server, sizeof out->server, "%s", PQgetvalue(res, 0, col + 4));
    const char *wal_status = PQgetvalue(res, 0, col + 2);
    const char *reason = PQgetisnull(res, 0, col + 3) ? NULL : PQgetvalue(res, 0, col + 3);
    if (PQgetvalue(res, 0, col)[0] == 't') {
        out->health = PGS_SLOT_STANDBY;
    } else if (atoi(PQgetvalue(res, 0, col + 1)) == 0) {
        out->health = PGS_SLOT_MISSING;
    } else if (reason || strcmp(wal_status, "lost") == 0) {
        /* 14-16 say only wal_status "lost" (max_slot_wal_keep_size). */
        const char *words = invalidation_words(reason ? reason : "wal_removed");
        out->health = PGS_SLOT_INVALID;
        snprintf(out->reason, sizeof out->reason, "%s", words ? words : reason);
    } else {
        out->health = PGS_SLOT_OK;
    }
}

bool catalog_slot_check(PGconn *conn, const char *slot, pgs_slot_state *out)
{
    char *lit = PQescapeLiteral(conn, slot, strlen(slot));
    char *sql = NULL;
    bool ok = false;
    if (lit && asprintf(&sql, "SELECT " CATALOG_SLOT_COLUMNS_OF("%1$s"), lit) >= 0) {
        PGresult *res = PQexec(conn, sql);
        ok = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 &&
             PQnfields(res) == CATALOG_SLOT_NCOLUMNS;
        if (ok)
            catalog_slot_from_row(res, 0, out);
        PQclear(res);
    }
    PQfreemem(lit);
    free(sql);
    return ok;
}
