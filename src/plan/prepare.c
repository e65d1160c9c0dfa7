/* prepare.c: the objects a migration creates before the copy: the target
 * from a partition spec (indexes only after the data), the publication, and
 * the clean-up of an interrupted copy. */
#include "pgshift/migration.h"

#include "pgshift/log.h"
#include "pgshift/parallel.h"
#include "pgshift/partman.h"
#include "pgshift/pg.h"
#include "pgshift/prepare.h"
#include "prepare_int.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

bool exec_fmt(PGconn *conn, const char *what, const char *fmt, ...)
{
    char *sql = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&sql, fmt, ap);
    va_end(ap);
    if (n < 0)
        return false;
    double t0 = now_s();
    bool ok = pg_exec(conn, what, sql);
    log_debug("%s (%.2f s): %s", what, now_s() - t0, sql);
    free(sql);
    return ok;
}

/* Rows of (name suffix, lower bound, upper bound) for the partitions that
 * cover the source's existing keys plus `ahead` more. With `pmq` (pg_partman's
 * quoted schema), the first column is the partition's whole name, the one
 * pg_partman gives it under the source's name (partman.h). */
PGresult *prepare_partition_bounds(pgs_migration *m, pgs_mtable *t, const pgs_partition_spec *sp,
                                   const char *col, const pgs_column *c, const char *pmq)
{
    bool intish = strcmp(c->type, "integer") == 0 || strcmp(c->type, "bigint") == 0 ||
                  strcmp(c->type, "smallint") == 0;
    char ahead[16];
    snprintf(ahead, sizeof ahead, "%d", sp->ahead);
    char *name = NULL, *sql = NULL;
    int n;
    if (pmq)
        n = asprintf(&name, "%s.check_name_length($3, %s, true)", pmq,
                     intish ? "s::text" : "to_char(s, " PARTMAN_FORMAT_SQL ")");
    else
        n = asprintf(&name, "%s",
                     intish ? "s::text"
                            : "to_char(s, CASE unit WHEN 'year' THEN 'YYYY' WHEN 'month' THEN "
                              "'YYYYMM' WHEN 'hour' THEN 'YYYYMMDD_HH24' ELSE 'YYYYMMDD' END)");
    if (n < 0)
        return NULL;
    if (intish)
        n = asprintf(&sql,
                     "WITH b AS (SELECT min(%s)::numeric AS lo, max(%s)::numeric AS hi FROM %s)"
                     " SELECT %s, s::text, (s + $1::bigint)::text FROM b,"
                     "  generate_series(floor(coalesce(lo, 0) / $1::bigint)::bigint * $1::bigint,"
                     "    floor(coalesce(hi, 0) / $1::bigint)::bigint * $1::bigint"
                     "      + $2::int * $1::bigint, $1::bigint) s",
                     col, col, t->src.qname, name);
    else
        n = asprintf(
            &sql,
            "WITH u AS (SELECT $1::interval AS step, CASE"
            "   WHEN $1::interval >= '1 year' THEN 'year' WHEN $1::interval >= '1 month' THEN "
            "'month'"
            "   WHEN $1::interval >= '7 days' THEN 'week' WHEN $1::interval >= '1 day' THEN 'day'"
            "   ELSE 'hour' END AS unit),"
            " b AS (SELECT min(%s)::timestamptz AS lo, max(%s)::timestamptz AS hi FROM %s)"
            " SELECT %s, s::%s::text, (s + step)::%s::text"
            "   FROM u, b, generate_series(date_trunc(unit, coalesce(lo, now())),"
            "        date_trunc(unit, coalesce(hi, now())) + $2::int * step, step) s",
            col, col, t->src.qname, name, c->type, c->type);
    free(name);
    if (n < 0)
        return NULL;
    PGresult *res = pg_query(m->src, "computing the partition bounds", sql, pmq ? 3 : 2,
                             (const char *[]){sp->interval, ahead, t->src.relname});
    free(sql);
    return res;
}

/* "<base>_<suffix>", the base cut (on a UTF-8 character's boundary) so the
 * whole fits PostgreSQL's 63 bytes; a suffix keeps at most 54 of them. */
static void partition_name(const char *base, const char *suffix, char out[64])
{
    size_t sl = strlen(suffix) > 54 ? 54 : strlen(suffix);
    size_t bl = strlen(base), room = 63 - sl - 1;
    if (bl > room) {
        bl = room;
        while (bl > 0 && ((unsigned char)base[bl] & 0xC0) == 0x80)
            bl--;
    }
    snprintf(out, 64, "%.*s_%.*s", (int)bl, base, (int)sl, suffix);
}

/* The partitions one spec makes, each a name suffix and a FOR VALUES
 * clause; computed once, and for a sub-partition spec used under every
 * partition of the level above. */
typedef struct part_set {
    stmt_list suffix, bound;
    bool whole; /* the suffixes are whole names (pg_partman's) */
} part_set;

static void part_set_free(part_set *ps)
{
    stmt_free(&ps->suffix);
    stmt_free(&ps->bound);
}

/* Hash: partitions h0 .. h<modulus - 1>. */
static bool hash_set(const pgs_partition_spec *sp, part_set *ps)
{
    bool ok = true;
    for (int i = 0; ok && i < sp->modulus; i++)
        ok = stmt_add(&ps->suffix, "h%d", i) &&
             stmt_add(&ps->bound, "FOR VALUES WITH (MODULUS %d, REMAINDER %d)", sp->modulus, i);
    return ok;
}

/* A partition name's suffix from a value: its letters and digits, lower
 * case, at most 40 bytes; "_<n>" where that is empty or already taken. */
static void value_suffix(const char *v, int n, char used[][48], int nused, char out[48])
{
    size_t k = 0;
    for (const char *p = v; *p && k < 40; p++) {
        unsigned char ch = (unsigned char)*p;
        if (isalnum(ch))
            out[k++] = (char)tolower(ch);
        else if (k > 0 && out[k - 1] != '_')
            out[k++] = '_';
    }
    while (k > 0 && out[k - 1] == '_')
        k--;
    out[k] = '\0';
    bool taken = k == 0;
    for (int i = 0; !taken && i < nused; i++)
        taken = strcmp(used[i], out) == 0;
    if (taken)
        snprintf(out + k, 48 - k, "%s%d", k ? "_" : "v", n);
}

/* List: one partition per item of `values:`, or per value of the column
 * found in the source (NULL included), named after its first value. */
static bool list_set(pgs_migration *m, pgs_mtable *t, const pgs_partition_spec *sp, const char *col,
                     part_set *ps)
{
    PGresult *found = NULL;
    int n = 0;
    if (sp->values) {
        while (sp->values[n])
            n++;
    } else {
        char *sql = NULL;
        if (asprintf(
                &sql,
                "SELECT DISTINCT %s::text COLLATE \"C\" FROM %s ORDER BY 1 NULLS LAST LIMIT %d",
                col, t->src.qname, PGS_MAX_PARTITIONS + 1) < 0)
            return false;
        found = pg_query(m->src, "reading the partition column's values", sql, 0, NULL);
        free(sql);
        if (found == NULL)
            return false;
        n = PQntuples(found);
        if (n > PGS_MAX_PARTITIONS) {
            log_error("table %s: more than %d values of the partition column; fix: list the "
                      "partitions' values with `values:`",
                      t->src.qname, PGS_MAX_PARTITIONS);
            PQclear(found);
            return false;
        }
    }
    char(*used)[48] = calloc((size_t)(n ? n : 1), sizeof *used);
    bool ok = used != NULL;
    for (int i = 0; ok && i < n; i++) {
        char *bound = strdup("FOR VALUES IN (");
        const char *first = NULL;
        for (int j = 0; bound; j++) {
            const char *v;
            bool null = false;
            if (found) {
                if (j > 0)
                    break;
                null = PQgetisnull(found, i, 0);
                v = null ? "null" : PQgetvalue(found, i, 0);
            } else if ((v = sp->values[i][j]) == NULL) {
                break;
            }
            if (first == NULL)
                first = v;
            char *lit = null ? NULL : PQescapeLiteral(m->tgt, v, strlen(v));
            char *nb = NULL;
            if ((null || lit) &&
                asprintf(&nb, "%s%s%s", bound, j ? ", " : "", null ? "NULL" : lit) < 0)
                nb = NULL;
            PQfreemem(lit);
            free(bound);
            bound = nb;
        }
        value_suffix(first ? first : "", i, used, i, used[i]);
        ok = bound && stmt_add(&ps->suffix, "%s", used[i]) && stmt_add(&ps->bound, "%s)", bound);
        free(bound);
    }
    free(used);
    PQclear(found);
    return ok;
}

/* What LIKE does not copy: the columns' statistics targets, the storage
 * parameters (on each partition: a partitioned table has none), the
 * table's own comment and a FULL replica identity (the table and each
 * partition). Read from the source's
 * catalog and applied at once. */
static bool copy_settings(pgs_migration *m, pgs_mtable *t)
{
    char oid[16];
    snprintf(oid, sizeof oid, "%u", t->src.oid);
    PGresult *st = pg_query(m->src, "reading the source's settings",
                            "SELECT quote_ident(attname), attstattarget FROM pg_attribute"
                            " WHERE attrelid = $1::oid AND attnum > 0 AND NOT attisdropped"
                            "   AND coalesce(attstattarget::int, -1) >= 0",
                            1, (const char *[]){oid});
    PGresult *rel = st ? pg_query(m->src, "reading the source's settings",
                                  "SELECT array_to_string(reloptions, ', '), relreplident = 'f',"
                                  "       obj_description(oid, 'pg_class')"
                                  "  FROM pg_class WHERE oid = $1::oid",
                                  1, (const char *[]){oid})
                       : NULL;
    PGresult *leaves =
        rel ? pg_query(m->tgt, "listing the new partitions",
                       "SELECT relid::regclass::text FROM pg_partition_tree($1::regclass)"
                       " WHERE isleaf",
                       1, (const char *[]){t->tgt.qname})
            : NULL;
    bool ok = leaves != NULL && PQntuples(rel) == 1;
    for (int i = 0; ok && i < PQntuples(st); i++)
        ok = exec_fmt(m->tgt, "setting a statistics target",
                      "ALTER TABLE %s ALTER COLUMN %s SET STATISTICS %s", t->tgt.qname,
                      PQgetvalue(st, i, 0), PQgetvalue(st, i, 1));
    const char *opts = ok ? PQgetvalue(rel, 0, 0) : "";
    bool full = ok && PQgetvalue(rel, 0, 1)[0] == 't';
    for (int i = 0; ok && opts[0] && i < PQntuples(leaves); i++)
        ok = exec_fmt(m->tgt, "setting storage parameters", "ALTER TABLE %s SET (%s)",
                      PQgetvalue(leaves, i, 0), opts);
    if (ok && !PQgetisnull(rel, 0, 2)) {
        const char *c = PQgetvalue(rel, 0, 2);
        char *lit = PQescapeLiteral(m->tgt, c, strlen(c));
        ok = lit && exec_fmt(m->tgt, "copying the table's comment", "COMMENT ON TABLE %s IS %s",
                             t->tgt.qname, lit);
        PQfreemem(lit);
    }
    if (ok && full)
        ok = exec_fmt(m->tgt, "setting the replica identity",
                      "ALTER TABLE %s REPLICA IDENTITY FULL", t->tgt.qname);
    for (int i = 0; ok && full && i < PQntuples(leaves); i++)
        ok = exec_fmt(m->tgt, "setting the replica identity",
                      "ALTER TABLE %s REPLICA IDENTITY FULL", PQgetvalue(leaves, i, 0));
    PQclear(st);
    PQclear(rel);
    PQclear(leaves);
    return ok;
}

/* Range by interval: the partitions that cover the source's rows and
 * `ahead` more. */
static bool range_set(pgs_migration *m, pgs_mtable *t, const pgs_partition_spec *sp,
                      const char *col, const pgs_column *c, part_set *ps)
{
    pgs_partman pm;
    if (sp->manager && partman_find(m->src, &pm) != 1) {
        log_error("table %s: pg_partman is not installed in the source's database", t->src.qname);
        return false;
    }
    ps->whole = sp->manager != NULL;
    PGresult *bounds = prepare_partition_bounds(m, t, sp, col, c, sp->manager ? pm.q : NULL);
    bool ok = bounds != NULL;
    if (ok && PQntuples(bounds) > PGS_MAX_PARTITIONS) {
        log_error("table %s: interval %s makes %d partitions (more than %d); fix: choose a "
                  "larger interval",
                  t->src.qname, sp->interval, PQntuples(bounds), PGS_MAX_PARTITIONS);
        ok = false;
    }
    for (int i = 0; ok && i < PQntuples(bounds); i++) {
        char *lo =
            PQescapeLiteral(m->tgt, PQgetvalue(bounds, i, 1), strlen(PQgetvalue(bounds, i, 1)));
        char *hi =
            PQescapeLiteral(m->tgt, PQgetvalue(bounds, i, 2), strlen(PQgetvalue(bounds, i, 2)));
        ok = lo && hi &&
             stmt_add(&ps->suffix, "%s%s", ps->whole ? "" : "p", PQgetvalue(bounds, i, 0)) &&
             stmt_add(&ps->bound, "FOR VALUES FROM (%s) TO (%s)", lo, hi);
        PQfreemem(lo);
        PQfreemem(hi);
    }
    PQclear(bounds);
    return ok;
}

static const char *method_sql(pgs_partition_method pm)
{
    return pm == PGS_PARTITION_LIST ? "LIST" : pm == PGS_PARTITION_HASH ? "HASH" : "RANGE";
}

/* The partitions of one level: `sp` on the source's column `c` (`col`
 * quoted), a DEFAULT partition last where asked. */
static bool spec_set(pgs_migration *m, pgs_mtable *t, const pgs_partition_spec *sp,
                     const pgs_column *c, const char *col, part_set *ps)
{
    bool ok = sp->method == PGS_PARTITION_HASH   ? hash_set(sp, ps)
              : sp->method == PGS_PARTITION_LIST ? list_set(m, t, sp, col, ps)
              : sp->interval                     ? range_set(m, t, sp, col, c, ps)
                                                 : true;
    if (ok && sp->with_default)
        ok = stmt_add(&ps->suffix, "default") && stmt_add(&ps->bound, "DEFAULT");
    return ok;
}

/* The partitions of `parent` from `ps`, named "<base>_<prefix>_<suffix>"
 * (the suffixes of both levels kept whole when the base is cut): leaves,
 * or with a sub-partition set, partitioned tables each with the leaves of
 * `sub` under it. */
static bool create_parts(pgs_migration *m, const pgs_mtable *t, const char *parent,
                         const char *prefix, const part_set *ps, const char *subby,
                         const part_set *sub)
{
    bool ok = true;
    for (int i = 0; ok && i < ps->suffix.n; i++) {
        char suffix[112], name[64];
        snprintf(suffix, sizeof suffix, "%s%s%s", prefix ? prefix : "", prefix ? "_" : "",
                 ps->suffix.v[i]);
        if (ps->whole)
            snprintf(name, sizeof name, "%s", ps->suffix.v[i]);
        else
            partition_name(t->tgt.relname, suffix, name);
        char *part = pg_qualified(m->tgt, t->tgt.nspname, name);
        ok = part &&
             exec_fmt(m->tgt, "creating a partition", "CREATE TABLE %s PARTITION OF %s %s%s%s",
                      part, parent, ps->bound.v[i], sub ? " PARTITION BY " : "", sub ? subby : "");
        if (ok && sub)
            ok = create_parts(m, t, part, suffix, sub, NULL, NULL);
        free(part);
    }
    return ok;
}

/* A spec's column on the source, quoted for the target, or NULL (said). */
static const pgs_column *spec_column(pgs_migration *m, pgs_mtable *t, const pgs_partition_spec *sp,
                                     char **quoted)
{
    const pgs_column *c = catalog_column(&t->src, sp->column);
    if (c == NULL) {
        log_error("table %s: partition column \"%s\" does not exist", t->src.qname, sp->column);
        return NULL;
    }
    *quoted = pg_ident(m->tgt, c->name);
    return *quoted ? c : NULL;
}

/* Every partition of a created target, its sub-partitions too. */
static bool create_partitions(pgs_migration *m, pgs_mtable *t)
{
    const pgs_partition_spec *sp = &t->spec->part, *sub = sp->sub;
    char *col = NULL, *scol = NULL, *subby = NULL;
    part_set top = {0}, low = {0};
    const pgs_column *c = spec_column(m, t, sp, &col);
    const pgs_column *sc = c && sub ? spec_column(m, t, sub, &scol) : NULL;
    bool ok = c && (!sub || sc) && spec_set(m, t, sp, c, col, &top) &&
              (!sub || spec_set(m, t, sub, sc, scol, &low));
    if (ok && sub && (long)top.suffix.n * low.suffix.n > 10L * PGS_MAX_PARTITIONS) {
        log_error("table %s: %d partitions of %d sub-partitions each is more than %d tables; fix: "
                  "a larger interval or fewer sub-partitions",
                  t->src.qname, top.suffix.n, low.suffix.n, 10 * PGS_MAX_PARTITIONS);
        ok = false;
    }
    if (ok && sub && asprintf(&subby, "%s (%s)", method_sql(sub->method), scol) < 0)
        subby = NULL, ok = false;
    ok = ok && create_parts(m, t, t->tgt.qname, NULL, &top, subby, sub ? &low : NULL);
    if (ok && sub)
        log_info("table %s: created %s with %d partitions by %s of %d sub-partitions by %s each",
                 t->src.qname, t->tgt.qname, top.suffix.n, sp->column, low.suffix.n, sub->column);
    else if (ok)
        log_info("table %s: created %s with %d %s partitions by %s%s", t->src.qname, t->tgt.qname,
                 top.suffix.n, method_sql(sp->method), sp->column,
                 sp->method == PGS_PARTITION_LIST && !sp->values ? " (one per value found)" : "");
    part_set_free(&top);
    part_set_free(&low);
    free(col);
    free(scol);
    free(subby);
    return ok;
}

/* A target pgshift creates: its partitions without indexes (built after
 * the copy, build_target_indexes()), logged from the start. The copy's
 * multi-insert WAL records are what the walsender reads of it before the
 * changes made since (on 16+ they carry pgshift's origins, which the
 * stream's origin 'none' drops unread); an UNLOGGED copy made LOGGED
 * afterwards wrote every row again, one WAL record each, and decoding
 * those took longer than the copy's WAL saved (bench/README.md). A crash
 * during the copy restarts it with the target created again. */
static bool create_target(pgs_migration *m, pgs_mtable *t)
{
    const pgs_partition_spec *sp = &t->spec->part;
    char *col = NULL;
    bool ok = false;
    if (spec_column(m, t, sp, &col) == NULL)
        goto done;
    if (!exec_fmt(m->tgt, "creating the target", "BEGIN; DROP TABLE IF EXISTS %s", t->tgt.qname))
        goto done;
    if (!exec_fmt(m->tgt, "creating the target",
                  "CREATE TABLE %s (LIKE %s INCLUDING DEFAULTS INCLUDING CONSTRAINTS"
                  " INCLUDING GENERATED INCLUDING IDENTITY INCLUDING STORAGE"
                  " INCLUDING COMPRESSION INCLUDING COMMENTS) PARTITION BY %s (%s)",
                  t->tgt.qname, t->src.qname, method_sql(sp->method), col))
        goto rollback;
    /* pgshift writes the source's values into identity columns; the
     * cutover makes them GENERATED ALWAYS again like the source. */
    for (int i = 0; i < t->src.ncols; i++) {
        if (t->src.cols[i].identity != 'a')
            continue;
        char *ic = pg_ident(m->tgt, t->src.cols[i].name);
        bool iok = ic && exec_fmt(m->tgt, "creating the target",
                                  "ALTER TABLE %s ALTER COLUMN %s SET GENERATED BY DEFAULT",
                                  t->tgt.qname, ic);
        free(ic);
        if (!iok)
            goto rollback;
    }
    if (!create_partitions(m, t) || !copy_settings(m, t))
        goto rollback;
    if (!pg_exec(m->tgt, "creating the target", "COMMIT"))
        goto done;
    catalog_relinfo_free(&t->tgt);
    ok = catalog_read_rel(m->tgt, t->spec->target, &t->tgt);
    goto done;
rollback:
    pg_exec(m->tgt, "rolling back", "ROLLBACK");
done:
    free(col);
    return ok;
}

bool prepare_targets(pgs_migration *m)
{
    /* The operator's targets in one TRUNCATE: one may reference another. */
    char *list = strdup("");
    for (int i = 0; list && i < m->ntables; i++) {
        pgs_mtable *t = &m->tables[i];
        char *nl = NULL;
        if (!t->create_target &&
            asprintf(&nl, "%s%s%s", list, list[0] ? ", " : "", t->tgt.qname) < 0)
            nl = NULL;
        if (!t->create_target) {
            free(list);
            list = nl;
        }
    }
    bool ok = list != NULL &&
              (!list[0] || exec_fmt(m->tgt, "emptying the target after an interrupted copy",
                                    "TRUNCATE %s", list));
    free(list);
    for (int i = 0; ok && i < m->ntables; i++) {
        pgs_mtable *t = &m->tables[i];
        ok = t->create_target ? create_target(m, t) : shadow_prepare(m, t);
    }
    return ok;
}

bool prepare_publication(pgs_migration *m)
{
    char *pub = pg_ident(m->src, m->publication);
    char *list = strdup("");
    bool ok = false;
    if (pub == NULL || list == NULL)
        goto done;
    for (int i = 0; i < m->ntables; i++) {
        char *nl = NULL;
        if (asprintf(&nl, "%s%s%s", list, i ? ", " : "", m->tables[i].src.qname) < 0)
            goto done;
        free(list);
        list = nl;
    }
    char *exists = pg_query_value(m->src, "looking for the publication",
                                  "SELECT count(*) FROM pg_publication WHERE pubname = $1", 1,
                                  (const char *[]){m->publication}, NULL);
    if (exists == NULL)
        goto done;
    bool have = strcmp(exists, "0") != 0;
    free(exists);
    /* A partitioned source's changes are published as its own, whatever
     * partition they touch (harmless for plain tables). */
    ok = have ? exec_fmt(m->src, "updating the publication", "ALTER PUBLICATION %s SET TABLE %s",
                         pub, list) &&
                    exec_fmt(m->src, "updating the publication",
                             "ALTER PUBLICATION %s SET (publish_via_partition_root = true)", pub)
              : exec_fmt(m->src, "creating the publication",
                         "CREATE PUBLICATION %s FOR TABLE %s WITH (publish_via_partition_root = "
                         "true)",
                         pub, list);
done:
    free(pub);
    free(list);
    return ok;
}

/* The replication origins the apply sessions and copy workers ran under
 * (16+): <slot>, <slot>_stream (eager.c), <slot>_copy<N> (copy.c, dropped
 * by each worker at its end unless it died); they live in the target's
 * cluster. */
static bool drop_origin(PGconn *c, const char *slot)
{
    if (PQserverVersion(c) < 160000)
        return true;
    /* A session that ran under an origin holds it until its backend has
     * exited, which the server does a moment after our PQfinish: "in use by
     * PID n" (55006) is waited out, up to 10 s. */
    const char *sql = "SELECT pg_replication_origin_drop(roname) FROM pg_replication_origin"
                      " WHERE " PG_SQL_OWN_ORIGIN("$1");
    const char *p[1] = {slot};
    for (int i = 0;; i++) {
        PGresult *res = PQexecParams(c, sql, 1, NULL, p, NULL, NULL, 0);
        if (PQresultStatus(res) == PGRES_TUPLES_OK) {
            if (PQntuples(res) > 0)
                log_info("dropped replication origin(s) %s", slot);
            PQclear(res);
            return true;
        }
        const char *st = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        if (i < 100 && st && strcmp(st, "55006") == 0) {
            if (i == 0)
                log_info("replication origin(s) %s still in use by a session that is ending: "
                         "%s; waiting up to 10 s",
                         slot, PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY));
            PQclear(res);
            usleep(100000);
            continue;
        }
        log_error("dropping the replication origin: %s",
                  res ? PQresultErrorMessage(res) : PQerrorMessage(c));
        PQclear(res);
        return false;
    }
}

bool prepare_drop_slot_on(PGconn *conn, PGconn *origin_conn, const char *slot)
{
    /* After a crash of pgshift the server may need a moment to notice the
     * dead replication connection: wait up to 30 s for the slot to free up. */
    PGresult *res = NULL;
    for (int i = 0; i < 150; i++) {
        PQclear(res);
        res = pg_query(conn, "looking for the slot",
                       "SELECT active, active_pid FROM pg_replication_slots"
                       " WHERE slot_name = $1",
                       1, (const char *[]){slot});
        if (res == NULL || PQntuples(res) == 0 || PQgetvalue(res, 0, 0)[0] != 't')
            break;
        if (i == 0)
            log_info("slot %s is still in use by backend %s; waiting for it to end", slot,
                     PQgetvalue(res, 0, 1));
        usleep(200000);
    }
    if (res == NULL)
        return false;
    if (PQntuples(res) == 0) {
        PQclear(res);
        return drop_origin(origin_conn, slot);
    }
    if (PQgetvalue(res, 0, 0)[0] == 't') {
        log_error("slot %s is in use by backend %s (another pgshift run?); stop it first", slot,
                  PQgetvalue(res, 0, 1));
        PQclear(res);
        return false;
    }
    PQclear(res);
    res = pg_query(conn, "dropping the slot", "SELECT pg_drop_replication_slot($1)", 1,
                   (const char *[]){slot});
    PQclear(res);
    if (res)
        log_info("dropped replication slot %s", slot);
    return res != NULL && drop_origin(origin_conn, slot);
}

bool prepare_drop_slot(pgs_migration *m)
{
    return prepare_drop_slot_on(m->src, m->tgt ? m->tgt : m->src, m->slot);
}

bool stmt_add(stmt_list *l, const char *fmt, ...)
{
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 32;
        char **nv = realloc(l->v, sizeof(char *) * (size_t)cap);
        if (nv == NULL)
            return false;
        l->v = nv;
        l->cap = cap;
    }
    va_list ap;
    va_start(ap, fmt);
    int r = vasprintf(&l->v[l->n], fmt, ap);
    va_end(ap);
    if (r < 0)
        return false;
    l->n++;
    return true;
}

void stmt_free(stmt_list *l)
{
    for (int i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    *l = (stmt_list){0};
}

bool stmt_join(stmt_list *l, stmt_list *parts)
{
    size_t len = 1;
    for (int i = 0; i < parts->n; i++)
        len += strlen(parts->v[i]) + 2;
    char *s = malloc(len), *p = s;
    for (int i = 0; s && i < parts->n; i++)
        p += sprintf(p, "%s%s", i ? "; " : "", parts->v[i]);
    bool ok = s && (parts->n == 0 || stmt_add(l, "%s", s));
    free(s);
    stmt_free(parts);
    return ok;
}

/* The leaf partitions of a created target, quoted. */
static PGresult *target_leaves(pgs_migration *m, pgs_mtable *t)
{
    char oid[16];
    snprintf(oid, sizeof oid, "%u", t->tgt.oid);
    return pg_query(m->tgt, "listing the target's partitions",
                    "SELECT c.oid::regclass::text"
                    "  FROM pg_partition_tree($1::oid) p JOIN pg_class c ON c.oid = p.relid"
                    " WHERE c.relkind = 'r' ORDER BY 1",
                    1, (const char *[]){oid});
}

/* How many connections run_parallel() uses. */
static int parallel_conns(const pgs_migration *m)
{
    return m->plan->copy.workers > 0 ? m->plan->copy.workers : 2;
}

bool run_parallel(pgs_migration *m, const char *what, const char *setup, stmt_list *l)
{
    char prefix[96];
    snprintf(prefix, sizeof prefix, "%s_copy", m->slot);
    pgs_par_job job = {.conninfo = m->plan->target ? m->plan->target : m->plan->source,
                       .what = what,
                       .setup = setup,
                       .origin_prefix = m->plan->target ? NULL : prefix,
                       .workers = parallel_conns(m)};
    return pg_parallel_exec(&job, l->v, l->n);
}

bool run_index_jobs(pgs_migration *m, stmt_list *l)
{
    return run_parallel(m, "building a partition's indexes",
                        l->n >= parallel_conns(m) ? "SET maintenance_work_mem = '256MB';"
                                                    " SET max_parallel_maintenance_workers = 0"
                                                  : "SET maintenance_work_mem = '256MB'",
                        l);
}

/* The source's indexes, one row each, for source_index() (prepare_int.h). */
PGresult *source_indexes(pgs_migration *m, const pgs_mtable *t)
{
    const pgs_partition_spec *sp = &t->spec->part, *sub = sp->sub;
    char oid[16];
    snprintf(oid, sizeof oid, "%u", t->src.oid);
    return pg_query(
        m->src, "reading the source indexes",
        "SELECT coalesce(c.contype, ''), i.indisunique, i.indexprs IS NOT NULL OR"
        "       i.indpred IS NOT NULL OR i.indnkeyatts <> i.indnatts,"
        "  CASE WHEN left(d.def, length(d.prefix)) = d.prefix"
        "       THEN substr(d.def, length(d.prefix) + 1) END,"
        "  (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY k.ord)"
        "     FROM unnest(i.indkey) WITH ORDINALITY k(attnum, ord)"
        "     JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum"
        "    WHERE k.ord <= i.indnkeyatts),"
        "  (SELECT coalesce(string_agg(quote_ident(p), ', ' ORDER BY o), '')"
        "     FROM unnest(ARRAY[$2::text, $3::text]) WITH ORDINALITY u(p, o)"
        "    WHERE p IS NOT NULL AND NOT EXISTS (SELECT FROM unnest(i.indkey) k(attnum)"
        "      JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum"
        "     WHERE a.attname = p)),"
        "  ic.relname"
        " FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid"
        " JOIN pg_class tc ON tc.oid = i.indrelid JOIN pg_namespace n ON n.oid = tc.relnamespace"
        " LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid AND c.conrelid = i.indrelid"
        " CROSS JOIN LATERAL (SELECT pg_get_indexdef(i.indexrelid) AS def,"
        "   format('CREATE %sINDEX %I ON %I.%I USING ', CASE WHEN i.indisunique THEN 'UNIQUE '"
        "     ELSE '' END, ic.relname, n.nspname, tc.relname) AS prefix) d"
        " WHERE i.indrelid = $1::oid ORDER BY i.indisprimary DESC, ic.relname",
        3,
        (const char *[]){oid, sp->column,
                         sub && strcmp(sub->column, sp->column) ? sub->column : NULL});
}

src_index source_index(const PGresult *res, int i)
{
    char contype = PQgetvalue(res, i, 0)[0];
    src_index x = {.unique = PQgetvalue(res, i, 1)[0] == 't',
                   .cols = PQgetvalue(res, i, 4),
                   .rest = PQgetisnull(res, i, 3) ? NULL : PQgetvalue(res, i, 3),
                   .missing = PQgetvalue(res, i, 5),
                   .name = PQgetvalue(res, i, 6),
                   .constraint = contype == 'p' || contype == 'u' || contype == 'x'};
    bool complex = PQgetvalue(res, i, 2)[0] == 't';
    if (contype == 'p') {
        x.kind = IX_PRIMARY;
    } else if (contype == 'u' || (x.unique && x.missing[0])) {
        x.kind = IX_UNIQUE;
        if (complex) {
            x.kind = IX_SKIP;
            x.why = "it has expressions, a predicate or INCLUDE columns and lacks a partition "
                    "column, which a partitioned table's unique index must contain";
        }
    } else if (contype == 'x') {
        x.kind = IX_SKIP;
        x.why = "pgshift does not build exclusion constraints on a partitioned target";
    } else if (x.rest == NULL) {
        x.kind = IX_SKIP;
        x.why = "its definition cannot be read";
    } else {
        x.kind = IX_INDEX;
    }
    return x;
}

/* The statement that gives `rel` (the partitioned table, or one of its
 * leaves) index `x`. Keys and unique constraints that lack partition
 * columns (of either level) get them appended (a partitioned table's unique
 * keys must contain them; a leaf gets the same, so that the parent's
 * attaches it). */
static bool index_stmt(stmt_list *l, const src_index *x, const char *rel)
{
    const char *extra = x->missing[0] ? ", " : "";
    const char *extra_col = x->missing;
    switch (x->kind) {
    case IX_PRIMARY:
        return stmt_add(l, "ALTER TABLE %s ADD PRIMARY KEY (%s%s%s)", rel, x->cols, extra,
                        extra_col);
    case IX_UNIQUE:
        return stmt_add(l, "ALTER TABLE %s ADD UNIQUE (%s%s%s)", rel, x->cols, extra, extra_col);
    case IX_INDEX:
        return stmt_add(l, "CREATE %sINDEX ON %s USING %s", x->unique ? "UNIQUE " : "", rel,
                        x->rest);
    default:
        return true;
    }
}

/* Builds the source's indexes on a target pgshift created: first on every
 * leaf, one job per leaf, leaves in parallel (the sorts are the work), each
 * job one transaction, so that the builds after the first find the leaf's
 * rows in the buffers; then the same statements on the partitioned table,
 * which attach the leaves' matching indexes (and constraints) instead of
 * building them again. */
static bool build_target_indexes(pgs_migration *m, pgs_mtable *t)
{
    log_info("table %s: building indexes on %s", t->src.qname, t->tgt.qname);
    PGresult *leaves = target_leaves(m, t);
    PGresult *res = leaves ? source_indexes(m, t) : NULL;
    stmt_list jobs = {0}, one = {0}, parent = {0};
    bool ok = res != NULL;
    for (int i = 0; ok && i < PQntuples(res); i++) {
        src_index x = source_index(res, i);
        if (x.kind == IX_SKIP)
            log_warn("table %s: index %s is not built on %s: %s", t->src.qname, x.name,
                     t->tgt.qname, x.why);
        ok = index_stmt(&parent, &x, t->tgt.qname);
    }
    for (int k = 0; ok && k < PQntuples(leaves); k++) {
        for (int i = 0; ok && i < PQntuples(res); i++) {
            src_index x = source_index(res, i);
            ok = index_stmt(&one, &x, PQgetvalue(leaves, k, 0));
        }
        ok = ok && stmt_join(&jobs, &one);
    }
    double t0 = now_s();
    ok = ok && run_index_jobs(m, &jobs);
    double t1 = now_s();
    for (int i = 0; ok && i < parent.n; i++)
        ok = exec_fmt(m->tgt, "attaching the partitions' indexes", "%s", parent.v[i]);
    if (ok)
        log_info("table %s: indexes built on %d partitions of %s in %.1f s, attached in %.1f s",
                 t->src.qname, PQntuples(leaves), t->tgt.qname, t1 - t0, now_s() - t1);
    stmt_free(&one);
    stmt_free(&jobs);
    stmt_free(&parent);
    PQclear(res);
    PQclear(leaves);
    if (!ok)
        return false;
    catalog_relinfo_free(&t->tgt);
    return catalog_read_rel(m->tgt, t->spec->target, &t->tgt);
}

bool prepare_target_indexes(pgs_migration *m)
{
    for (int i = 0; i < m->ntables; i++) {
        pgs_mtable *t = &m->tables[i];
        if (t->create_target ? !build_target_indexes(m, t) : !shadow_finish(m, t))
            return false;
    }
    return true;
}

bool prepare_drop_publication(pgs_migration *m)
{
    char *q = pg_ident(m->src, m->publication);
    char *sql = NULL;
    bool ok = q && asprintf(&sql, "DROP PUBLICATION IF EXISTS %s", q) >= 0 &&
              pg_exec(m->src, "dropping the publication", sql);
    free(q);
    free(sql);
    return ok;
}
