/* colmap.c: a table's column mapping resolved against source and target
 * (see colmap.h). The server is the only SQL parser: each expression is
 * prepared (never run) over a row of NULLs typed like the source's
 * columns, once whole and once without each source column in turn; the
 * columns whose absence makes it fail are the ones it reads. */
#include "pgshift/colmap.h"

#include "pgshift/log.h"
#include "pgshift/migration.h"
#include "pgshift/pg.h"

#include <ctype.h>
#include <stdarg.h>
#include <strings.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void colmap_free(pgs_colmap *cm)
{
    for (int i = 0; i < cm->ncols; i++) {
        free(cm->cols[i].name);
        free(cm->cols[i].expr);
        free(cm->cols[i].type);
        strlist_free(&cm->cols[i].deps);
    }
    free(cm->cols);
    free(cm->key_col);
    strlist_free(&cm->tkey);
    strlist_free(&cm->unused);
    free(cm->error);
    memset(cm, 0, sizeof *cm);
}

const pgs_mcol *colmap_col(const pgs_colmap *cm, const char *name)
{
    for (int i = 0; i < cm->ncols; i++)
        if (strcmp(cm->cols[i].name, name) == 0)
            return &cm->cols[i];
    return NULL;
}

__attribute__((format(printf, 2, 3))) static bool map_fail(pgs_colmap *cm, const char *fmt, ...)
{
    if (cm->error)
        return true;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&cm->error, fmt, ap);
    va_end(ap);
    if (n < 0)
        cm->error = NULL;
    return cm->error != NULL;
}

/* The non-generated source columns: those the stream sends. */
static bool sent(const pgs_column *c)
{
    return c->generated == 0;
}

/* "(SELECT NULL::<type> AS <col>, ...) AS u" over the source's columns but
 * `skip` (-1: none). */
static char *null_row(PGconn *c, const pgs_relinfo *src, int skip)
{
    char *out = strdup("(SELECT ");
    int n = 0;
    for (int i = 0; out && i < src->ncols; i++) {
        if (i == skip || !sent(&src->cols[i]))
            continue;
        char *q = pg_ident(c, src->cols[i].name), *next = NULL;
        if (q == NULL ||
            asprintf(&next, "%s%sNULL::%s AS %s", out, n++ ? ", " : "", src->cols[i].type, q) < 0)
            next = NULL;
        free(q);
        free(out);
        out = next;
    }
    char *next = NULL;
    if (out && asprintf(&next, "%s%s) AS u", out, n ? "" : "NULL AS pgshift_none") < 0)
        next = NULL;
    free(out);
    return next;
}

/* A failure that is about the SQL itself (syntax, names, types: class 42;
 * a constant it cannot take: 22), not the connection or a lock. */
static bool mapping_error(const char *state)
{
    return strncmp(state, "42", 2) == 0 || strncmp(state, "22", 2) == 0;
}

/* Prepares `sql` (never run). NULL when it parses; else the server's
 * SQLSTATE into state and its message into why. */
static bool prepare_fails(PGconn *c, const char *sql, char state[6], char *why, size_t n)
{
    PGresult *r = PQprepare(c, "", sql, 0, NULL);
    bool failed = r == NULL || PQresultStatus(r) != PGRES_COMMAND_OK;
    state[0] = '\0';
    if (failed) {
        const char *s = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
        snprintf(state, 6, "%s", s ? s : "");
        if (r)
            pg_result_error_line(r, why, n);
        else
            snprintf(why, n, "%s", PQerrorMessage(c));
    }
    PQclear(r);
    return failed;
}

/* The expression of target column `col`: parsed over the source's types,
 * on the target (where the apply evaluates it), and assignable to the
 * column. */
static bool check_expr(PGconn *c, pgs_mtable *t, pgs_mcol *mc, const char *qcol)
{
    pgs_colmap *cm = &t->map;
    char state[6], why[512];
    char *row = null_row(c, &t->src, -1), *sql = NULL;
    bool ok =
        row && asprintf(&sql, "INSERT INTO %s (%s) OVERRIDING SYSTEM VALUE SELECT (%s) FROM %s",
                        t->tgt.qname, qcol, mc->expr, row) >= 0;
    free(row);
    if (!ok)
        return false;
    if (prepare_fails(c, sql, state, why, sizeof why)) {
        free(sql);
        if (!mapping_error(state)) {
            log_error("checking the column mapping of %s: %s", t->src.qname, why);
            return false;
        }
        return map_fail(cm,
                        "columns.%s: the expression \"%s\" does not work over %s's columns "
                        "into %s.%s: %s",
                        mc->name, mc->expr, t->src.qname, t->tgt.qname, mc->name, why);
    }
    free(sql);
    return true;
}

/* The source columns each planned expression reads: over a temporary
 * table with the source's columns (made from the catalog's names and
 * types: no lock on the source, which a cutover may hold), a temporary
 * view per expression, and its column dependencies in pg_depend; all
 * rolled back (nothing stays, nothing fails in the server's log). */
static bool find_deps(PGconn *src, pgs_mtable *t)
{
    pgs_colmap *cm = &t->map;
    char *cols = strdup(""), why[512];
    for (int i = 0; cols && i < t->src.ncols; i++) {
        if (!sent(&t->src.cols[i]))
            continue;
        char *q = pg_ident(src, t->src.cols[i].name), *next = NULL;
        if (q &&
            asprintf(&next, "%s%s%s %s", cols, cols[0] ? ", " : "", q, t->src.cols[i].type) < 0)
            next = NULL;
        free(q);
        free(cols);
        cols = next;
    }
    char *sql = NULL;
    if (cols == NULL ||
        asprintf(&sql, "BEGIN; CREATE TEMPORARY TABLE pgshift_colmap (%s)", cols) < 0) {
        free(cols);
        return false;
    }
    free(cols);
    bool ok = pg_exec(src, "reading what the column mapping reads", sql);
    free(sql);
    for (int c = 0; ok && c < cm->ncols; c++) {
        pgs_mcol *mc = &cm->cols[c];
        if (!mc->planned)
            continue;
        ok = asprintf(&sql,
                      "CREATE TEMPORARY VIEW pgshift_colmap_%d AS SELECT (%s) AS v"
                      " FROM pg_temp.pgshift_colmap",
                      c, mc->expr) >= 0;
        if (!ok)
            break;
        PGresult *r = PQexec(src, sql);
        free(sql);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            pg_result_error_line(r, why, sizeof why);
            PQclear(r);
            map_fail(cm,
                     "columns.%s: the expression \"%s\" does not work over %s on the source: %s",
                     mc->name, mc->expr, t->src.qname, why);
            break;
        }
        PQclear(r);
        char view[40];
        snprintf(view, sizeof view, "pg_temp.pgshift_colmap_%d", c);
        r = pg_query(src, "reading what the column mapping reads",
                     "SELECT DISTINCT a.attname, a.attnum FROM pg_depend d"
                     "  JOIN pg_rewrite w ON w.oid = d.objid AND d.classid = 'pg_rewrite'::regclass"
                     "  JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid"
                     " WHERE w.ev_class = $1::regclass"
                     "   AND d.refobjid = 'pg_temp.pgshift_colmap'::regclass"
                     "   AND d.refobjsubid > 0 ORDER BY a.attnum",
                     1, (const char *[]){view});
        ok = r != NULL;
        for (int i = 0; ok && i < PQntuples(r); i++)
            ok = strlist_push(&mc->deps, PQgetvalue(r, i, 0));
        PQclear(r);
    }
    PGresult *r = PQexec(src, "ROLLBACK");
    ok = ok && PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    return ok;
}

static const char *plan_expr(const pgs_plan_table *spec, const char *name)
{
    for (size_t i = 0; i < spec->columns.n; i++)
        if (strcmp(spec->columns.name[i], name) == 0)
            return spec->columns.expr[i];
    return NULL;
}

/* The target's column types without typmod, for casts: format_type with
 * -1 ("bpchar", "\"bit\""), not NULL, which names char(1) and bit(1) and
 * would cut every value to one character in an explicit cast. */
static char **cast_types(PGconn *c, const pgs_relinfo *tgt)
{
    char oid[16];
    snprintf(oid, sizeof oid, "%u", tgt->oid);
    PGresult *r = pg_query(c, "reading the target's column types",
                           "SELECT attname, format_type(atttypid, -1) FROM pg_attribute"
                           " WHERE attrelid = $1::oid AND attnum > 0 AND NOT attisdropped",
                           1, (const char *[]){oid});
    if (r == NULL)
        return NULL;
    char **types = calloc((size_t)tgt->ncols + 1, sizeof *types);
    for (int i = 0; types && i < tgt->ncols; i++)
        for (int j = 0; j < PQntuples(r); j++)
            if (strcmp(PQgetvalue(r, j, 0), tgt->cols[i].name) == 0)
                types[i] = strdup(PQgetvalue(r, j, 1));
    PQclear(r);
    return types;
}

/* The target columns written, in the target's order. */
static bool build_cols(PGconn *c, pgs_mtable *t, char **types)
{
    pgs_colmap *cm = &t->map;
    cm->cols = calloc((size_t)t->tgt.ncols + 1, sizeof *cm->cols);
    if (cm->cols == NULL)
        return false;
    for (int i = 0; i < t->tgt.ncols; i++) {
        const pgs_column *d = &t->tgt.cols[i];
        const char *e = plan_expr(t->spec, d->name);
        const pgs_column *s = catalog_column(&t->src, d->name);
        if (d->generated) {
            if (e)
                return map_fail(cm,
                                "columns.%s: %s.%s is a generated column; it cannot take a "
                                "value",
                                d->name, t->tgt.qname, d->name);
            continue;
        }
        if (e == NULL && (s == NULL || !sent(s)))
            continue; /* its default */
        pgs_mcol *mc = &cm->cols[cm->ncols++];
        mc->name = strdup(d->name);
        mc->type = strdup(types[i] ? types[i] : d->type);
        mc->notnull = d->notnull;
        mc->planned = e != NULL;
        char *q = pg_ident(c, d->name);
        if (!mc->name || !mc->type || !q) {
            free(q);
            return false;
        }
        if (e == NULL) {
            mc->expr = strdup(q);
            mc->converted = s->typoid != d->typoid || s->typmod != d->typmod;
            bool ok = mc->expr && strlist_push(&mc->deps, s->name);
            if (ok && mc->converted) {
                /* Only where the server assigns one type to the other. */
                char *row = null_row(c, &t->src, -1), *sql = NULL;
                char state[6], why[512];
                ok = row &&
                     asprintf(&sql, "INSERT INTO %s (%s) OVERRIDING SYSTEM VALUE SELECT %s FROM %s",
                              t->tgt.qname, q, q, row) >= 0;
                bool failed = ok && prepare_fails(c, sql, state, why, sizeof why);
                if (failed && !mapping_error(state)) {
                    log_error("checking the column mapping of %s: %s", t->src.qname, why);
                    ok = false;
                } else if (failed)
                    map_fail(cm,
                             "column \"%s\" is %s on the source and %s on target %s, and the "
                             "server does not convert one to the other (%s); fix: map it in "
                             "the plan, e.g. \"columns: {%s: %s::%s}\"",
                             d->name, s->type, d->type, t->tgt.qname, why, d->name, q, mc->type);
                free(row);
                free(sql);
            }
            free(q);
            if (!ok)
                return false;
            continue;
        }
        mc->expr = strdup(e);
        mc->converted = true;
        bool ok = mc->expr && check_expr(c, t, mc, q);
        free(q);
        if (!ok)
            return false;
    }
    for (size_t i = 0; i < t->spec->columns.n; i++)
        if (catalog_column(&t->tgt, t->spec->columns.name[i]) == NULL)
            return map_fail(cm, "columns.%s: target %s has no column \"%s\"",
                            t->spec->columns.name[i], t->tgt.qname, t->spec->columns.name[i]);
    return true;
}

/* Each key column of the source feeds one target column one to one: that
 * column's expression reads it alone (a cast may change its type, not its
 * value: preflight checks the values). The same name wins. */
static bool map_key(pgs_mtable *t)
{
    pgs_colmap *cm = &t->map;
    cm->key_col = calloc((size_t)t->match.n + 1, sizeof(int));
    if (cm->key_col == NULL)
        return false;
    for (int k = 0; k < t->match.n; k++) {
        const char *sk = t->match.v[k];
        int found = -1, same = -1, n = 0;
        for (int i = 0; i < cm->ncols; i++) {
            const pgs_mcol *mc = &cm->cols[i];
            if (mc->deps.n != 1 || strcmp(mc->deps.v[0], sk) != 0)
                continue;
            found = i;
            n++;
            if (strcmp(mc->name, sk) == 0)
                same = i;
        }
        if (same >= 0)
            found = same;
        else if (n > 1)
            return map_fail(cm,
                            "key column \"%s\" of %s feeds %d target columns and none has its "
                            "name; which one finds the row is ambiguous: name one after it",
                            sk, t->src.qname, n);
        if (found < 0)
            return map_fail(cm,
                            "key column \"%s\" of %s must map one to one to a target column (its "
                            "expression reading \"%s\" alone, e.g. \"%s: %s::bigint\"): updates "
                            "and deletes find their row by it",
                            sk, t->src.qname, sk, sk, sk);
        cm->key_col[k] = found;
        if (!strlist_push(&cm->tkey, cm->cols[found].name))
            return false;
    }
    return true;
}

bool colmap_resolve(PGconn *src, PGconn *c, pgs_mtable *t)
{
    colmap_free(&t->map);
    /* Until it is known to be mapped, the target's key is the source's. */
    for (int k = 0; k < t->match.n; k++)
        if (!strlist_push(&t->map.tkey, t->match.v[k]))
            return false;
    if (!t->src.exists || !t->tgt.exists)
        return true;
    bool any = t->spec->columns.n > 0;
    for (int i = 0; !any && i < t->tgt.ncols; i++) {
        const pgs_column *d = &t->tgt.cols[i];
        const pgs_column *s = catalog_column(&t->src, d->name);
        any = s && sent(s) && !d->generated && (s->typoid != d->typoid || s->typmod != d->typmod);
    }
    if (!any)
        return true;
    t->map.mapped = true;
    strlist_free(&t->map.tkey);
    char **types = cast_types(c, &t->tgt);
    bool ok = types && build_cols(c, t, types);
    for (int i = 0; types && i < t->tgt.ncols; i++)
        free(types[i]);
    free(types);
    if (!ok)
        return false;
    if (!t->map.error && !find_deps(src, t))
        return false;
    if (t->map.error)
        return true;
    if (!map_key(t))
        return false;
    for (int i = 0; i < t->src.ncols; i++) {
        const pgs_column *s = &t->src.cols[i];
        bool used = false;
        for (int j = 0; !used && j < t->map.ncols; j++)
            used = strlist_contains(&t->map.cols[j].deps, s->name);
        if (!used && sent(s) && !strlist_push(&t->map.unused, s->name))
            return false;
    }
    strlist_free(&t->cols);
    for (int j = 0; j < t->map.ncols; j++)
        if (!strlist_push(&t->cols, t->map.cols[j].name))
            return false;
    return true;
}

char *colmap_select_list(const pgs_colmap *cm)
{
    char *out = strdup("");
    for (int i = 0; out && i < cm->ncols; i++) {
        char *next = NULL;
        if (asprintf(&next, "%s%s(%s)::%s", out, i ? ", " : "", cm->cols[i].expr,
                     cm->cols[i].type) < 0)
            next = NULL;
        free(out);
        out = next;
    }
    return out;
}

/* A type name as written after "::" or "AS": words, quoted words, dots,
 * spaces ("double precision", pg_catalog.int8, "My Type"), one (...) of
 * modifiers, then [] any number of times; *p is left after it. */
static bool skip_type(const char **pp)
{
    const char *p = *pp;
    bool any = false;
    for (;;) {
        while (isspace((unsigned char)*p))
            p++;
        if (*p == '"') {
            const char *q = strchr(p + 1, '"');
            if (q == NULL)
                return false;
            p = q + 1;
            any = true;
        } else if (isalpha((unsigned char)*p) || *p == '_') {
            while (isalnum((unsigned char)*p) || *p == '_' || *p == '$')
                p++;
            any = true;
        } else if (*p == '.' && any) {
            p++;
        } else {
            break;
        }
    }
    if (!any)
        return false;
    if (*p == '(') {
        const char *q = strchr(p, ')');
        if (q == NULL)
            return false;
        for (const char *c = p + 1; c < q; c++)
            if (!isdigit((unsigned char)*c) && *c != ',' && !isspace((unsigned char)*c))
                return false;
        p = q + 1;
    }
    for (;;) {
        while (isspace((unsigned char)*p))
            p++;
        if (p[0] == '[' && p[1] == ']')
            p += 2;
        else
            break;
    }
    *pp = p;
    return true;
}

bool colmap_is_cast_of(const char *expr, const char *name)
{
    const char *p = expr;
    while (isspace((unsigned char)*p))
        p++;
    bool cast = strncasecmp(p, "cast", 4) == 0 && (p[4] == '(' || isspace((unsigned char)p[4]));
    if (cast) {
        p += 4;
        while (isspace((unsigned char)*p))
            p++;
        if (*p++ != '(')
            return false;
        while (isspace((unsigned char)*p))
            p++;
    }
    size_t n = strlen(name);
    if (*p == '"') {
        if (strncmp(p + 1, name, n) != 0 || p[n + 1] != '"')
            return false;
        p += n + 2;
    } else {
        for (size_t i = 0; i < n; i++)
            if (tolower((unsigned char)p[i]) != name[i])
                return false;
        p += n;
        if (isalnum((unsigned char)*p) || *p == '_')
            return false;
    }
    /* then nothing, or casts to the end (CAST: AS type, then ")") */
    for (;;) {
        while (isspace((unsigned char)*p))
            p++;
        if (cast) {
            if (strncasecmp(p, "as", 2) != 0 || !isspace((unsigned char)p[2]))
                return false;
            p += 2;
            if (!skip_type(&p))
                return false;
            while (isspace((unsigned char)*p))
                p++;
            if (*p++ != ')')
                return false;
            cast = false;
            continue;
        }
        if (*p == '\0')
            return true;
        if (p[0] != ':' || p[1] != ':')
            return false;
        p += 2;
        if (!skip_type(&p))
            return false;
    }
}

const pgs_mcol *colmap_carrier(const pgs_colmap *cm, const char *src)
{
    const pgs_mcol *found = NULL;
    for (int i = 0; i < cm->ncols; i++) {
        const pgs_mcol *mc = &cm->cols[i];
        if (mc->deps.n != 1 || strcmp(mc->deps.v[0], src) != 0)
            continue;
        if (mc->planned && !colmap_is_cast_of(mc->expr, src))
            continue;
        if (strcmp(mc->name, src) == 0)
            return mc;
        if (found == NULL)
            found = mc;
    }
    return found;
}
