/* mapdiag.c: when a mapped table's statement fails on its data (an
 * expression that overflows, text that is not JSON, a NULL for a NOT NULL
 * column), which row and which column: the statement's inputs are kept
 * until its result is in, and on such a failure each written column's
 * expression is evaluated again over them, on the target's other session,
 * halving the rows until the first that fails. */
#include "apply_int.h"

#include "pgshift/log.h"
#include "pgshift/pg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct mapdiag {
    char *src; /* the source table, for the message */
    char *tgt;
    char *rows; /* sqlgen_map_rows */
    long nrows;
    int nparams;
    char **values;
    int *lengths;
    int *formats;
    int ncols;
    char **cname; /* unquoted, for the message */
    char **cexpr;
    char **ctype;
    bool *notnull;
    char *key;      /* select list over u: the row's key attributes as text */
    char *keynames; /* their names, tab-separated */
};

void mapdiag_free(mapdiag *d)
{
    if (d == NULL)
        return;
    free(d->src);
    free(d->tgt);
    free(d->rows);
    for (int i = 0; i < d->nparams; i++)
        free(d->values[i]);
    free(d->values);
    free(d->lengths);
    free(d->formats);
    for (int c = 0; c < d->ncols; c++) {
        free(d->cname[c]);
        free(d->cexpr[c]);
        free(d->ctype[c]);
    }
    free(d->cname);
    free(d->cexpr);
    free(d->ctype);
    free(d->notnull);
    free(d->key);
    free(d->keynames);
    free(d);
}

/* "u.k1::text || '=' ..." is built in C: the key attributes among those
 * the rows carry, as a select list ("u.<k1>, u.<k2>") and their names. */
static char *key_sql(const rel *r, const uint8_t *in_rows, char **names)
{
    char *out = strdup(""), *nm = strdup("");
    int n = 0;
    for (int k = 0; out && nm && k < r->nmatch && k < 8; k++) {
        if (!in_rows[r->match[k]])
            continue;
        char *next = NULL, *nnext = NULL;
        if (asprintf(&next, "%s%su.%s::text", out, n ? ", " : "", r->names[r->match[k]]) < 0)
            next = NULL;
        if (asprintf(&nnext, "%s%s%s", nm, n ? "\t" : "", r->sent->attrs[r->match[k]].name) < 0)
            nnext = NULL;
        free(out);
        free(nm);
        out = next;
        nm = nnext;
        n++;
    }
    if (n == 0 || out == NULL || nm == NULL) {
        free(out);
        free(nm);
        return NULL;
    }
    *names = nm;
    return out;
}

mapdiag *mapdiag_new(const rel *r, char op, const uint8_t *mask, const int *cols, int ncols,
                     long nrows, int nparams, const char *const *values, const int *lengths,
                     const int *formats)
{
    bool set = op == 'i' || op == 'u';
    if (!r->mapped || (op != 'I' && op != 'U' && !set))
        return NULL;
    sqlgen_map mp = rel_map(r);
    mapdiag *d = calloc(1, sizeof *d);
    uint8_t *written = calloc((size_t)r->ncols + 1, 1);
    uint8_t *in_rows = calloc((size_t)r->natts + 1, 1);
    if (d == NULL || written == NULL || in_rows == NULL)
        goto failed;
    sqlgen_map_written(&mp, op, mask, written);
    for (int i = 0; i < r->natts; i++)
        in_rows[i] = set ? 0 : mask[i];
    for (int c = 0; set && c < ncols; c++)
        in_rows[cols[c]] = 1;
    /* the rows' parameters: the arrays (set), or the attributes in mask */
    int np = 0;
    for (int i = 0; i < r->natts; i++)
        np += in_rows[i];
    if (set && r->srcrow)
        np = 1; /* one array of the source's row type */
    if (np > nparams)
        goto failed;
    d->src = strdup(r->t->src.qname);
    d->tgt = strdup(r->t->tgt.qname);
    d->rows = sqlgen_map_rows(&mp, set, set ? NULL : mask, cols, ncols);
    d->key = key_sql(r, in_rows, &d->keynames);
    d->nrows = set ? nrows : 1;
    d->values = calloc((size_t)np + 1, sizeof(char *));
    d->lengths = calloc((size_t)np + 1, sizeof(int));
    d->formats = calloc((size_t)np + 1, sizeof(int));
    d->cname = calloc((size_t)r->ncols + 1, sizeof(char *));
    d->cexpr = calloc((size_t)r->ncols + 1, sizeof(char *));
    d->ctype = calloc((size_t)r->ncols + 1, sizeof(char *));
    d->notnull = calloc((size_t)r->ncols + 1, sizeof(bool));
    if (!d->src || !d->tgt || !d->rows || !d->values || !d->lengths || !d->formats || !d->cname ||
        !d->cexpr || !d->ctype || !d->notnull)
        goto failed;
    for (; d->nparams < np; d->nparams++) {
        int i = d->nparams;
        if (values[i] == NULL)
            continue;
        size_t len = formats[i] ? (size_t)lengths[i] : strlen(values[i]);
        if ((d->values[i] = malloc(len + 1)) == NULL)
            goto failed;
        memcpy(d->values[i], values[i], len);
        d->values[i][len] = '\0';
        d->lengths[i] = (int)len;
        d->formats[i] = formats[i];
    }
    const pgs_colmap *cm = &r->t->map;
    for (int c = 0; c < r->ncols && c < cm->ncols; c++) {
        if (!written[c])
            continue;
        int j = d->ncols++;
        d->cname[j] = strdup(cm->cols[c].name);
        d->cexpr[j] = strdup(r->cexprs[c]);
        d->ctype[j] = strdup(cm->cols[c].type);
        d->notnull[j] = cm->cols[c].notnull;
        if (!d->cname[j] || !d->cexpr[j] || !d->ctype[j])
            goto failed;
    }
    free(written);
    free(in_rows);
    return d;
failed:
    free(written);
    free(in_rows);
    mapdiag_free(d);
    return NULL;
}

/* "(id)=(5)" in PostgreSQL's way, from the row's key columns. */
static char *key_text(const PGresult *res, const char *names)
{
    char *n = strdup(names ? names : ""), *v = strdup(""), *out = NULL;
    for (int i = 0; n && v && i < PQnfields(res); i++) {
        char *next = NULL;
        if (asprintf(&next, "%s%s%s", v, i ? ", " : "",
                     PQgetisnull(res, 0, i) ? "NULL" : PQgetvalue(res, 0, i)) < 0)
            next = NULL;
        free(v);
        v = next;
    }
    for (char *p = n; p && *p; p++)
        if (*p == '\t')
            *p = ',';
    if (n && v && asprintf(&out, "(%s)=(%s)", n, v) < 0)
        out = NULL;
    free(n);
    free(v);
    return out;
}

/* Runs `what` over the rows lo..hi; 1 when it fails with a data error
 * (its message into why), 0 when it runs, -1 on any other failure. */
static int run_range(PGconn *c, const mapdiag *d, const char *what, long lo, long hi, char *why,
                     size_t n, char **value)
{
    char *sql = NULL;
    if (asprintf(&sql, "SELECT %s FROM %s WHERE u.pgshift_n BETWEEN $%d::bigint AND $%d::bigint",
                 what, d->rows, d->nparams + 1, d->nparams + 2) < 0)
        return -1;
    const char **v = calloc((size_t)d->nparams + 2, sizeof(char *));
    int *l = calloc((size_t)d->nparams + 2, sizeof(int));
    int *f = calloc((size_t)d->nparams + 2, sizeof(int));
    char slo[24], shi[24];
    snprintf(slo, sizeof slo, "%ld", lo);
    snprintf(shi, sizeof shi, "%ld", hi);
    int rc = -1;
    if (v && l && f) {
        for (int i = 0; i < d->nparams; i++) {
            v[i] = d->values[i];
            l[i] = d->lengths[i];
            f[i] = d->formats[i];
        }
        v[d->nparams] = slo;
        v[d->nparams + 1] = shi;
        PGresult *res = PQexecParams(c, sql, d->nparams + 2, NULL, v, l, f, 0);
        ExecStatusType st = PQresultStatus(res);
        if (st == PGRES_TUPLES_OK) {
            rc = 0;
            if (value && PQntuples(res) > 0)
                *value = key_text(res, d->keynames);
        } else {
            const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
            if (state && (strncmp(state, "22", 2) == 0 || strncmp(state, "23", 2) == 0)) {
                rc = 1;
                pg_result_error_line(res, why, n);
            }
        }
        PQclear(res);
    }
    free(v);
    free(l);
    free(f);
    free(sql);
    return rc;
}

/* The first row of lo..hi on which `what` fails, or 0. */
static long first_failing(PGconn *c, const mapdiag *d, const char *what, char *why, size_t n)
{
    long lo = 1, hi = d->nrows;
    if (run_range(c, d, what, lo, hi, why, n, NULL) != 1)
        return 0;
    while (lo < hi) {
        long mid = lo + (hi - lo) / 2;
        int rc = run_range(c, d, what, lo, mid, why, n, NULL);
        if (rc < 0)
            return 0;
        if (rc == 1)
            hi = mid;
        else
            lo = mid + 1;
    }
    run_range(c, d, what, lo, lo, why, n, NULL);
    return lo;
}

void mapdiag_explain(PGconn *c, const mapdiag *d, const char *lsn)
{
    char why[1024], what[2048];
    for (int j = 0; j < d->ncols; j++) {
        long row = 0;
        snprintf(what, sizeof what, "count((%s)::%s)", d->cexpr[j], d->ctype[j]);
        row = first_failing(c, d, what, why, sizeof why);
        if (row == 0 && d->notnull[j]) {
            snprintf(what, sizeof what,
                     "count(CASE WHEN (%s) IS NULL THEN 1/(u.pgshift_n - u.pgshift_n) END)",
                     d->cexpr[j]);
            row = first_failing(c, d, what, why, sizeof why);
            if (row)
                snprintf(why, sizeof why, "NULL into NOT NULL column \"%s\" of %s", d->cname[j],
                         d->tgt);
        }
        if (row == 0)
            continue;
        char *key = NULL;
        if (d->key) {
            char kwhy[64];
            run_range(c, d, d->key, row, row, kwhy, sizeof kwhy, &key);
        }
        log_error("apply: the column mapping fails on a change of %s (source transactions up to "
                  "%s): the row with key %s, column \"%s\" = %s: %s; nothing past it is "
                  "confirmed; fix the expression in the plan's columns: (or the data), then run "
                  "`pgshift run` again: it goes on from there",
                  d->src, lsn, key ? key : "(not sent)", d->cname[j], d->cexpr[j], why);
        free(key);
        return;
    }
}
