/* stmt.c: the prepared statements of each relation, one per (operation,
 * set of sent columns), prepared on first use; the text comes from
 * sqlgen.c. */
#include "apply_int.h"

#include "pgshift/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Wraps an UPDATE or DELETE in the row-count check of sqlgen_expect().
 * Takes ownership of *sql and replaces it. */
static bool wrap_expect(apply_ctx *a, char **sql, const char *what, const char *table,
                        const char *expect)
{
    char *lit = PQescapeLiteral(a->conn, table, strlen(table));
    char *out = lit ? sqlgen_expect(*sql, what, lit, expect) : NULL;
    PQfreemem(lit);
    free(*sql);
    *sql = out;
    return out != NULL;
}

/* The text of a row statement ('I' 'U' 'D', columns from `mask`) or a
 * set-based one ('i' 'u' 'd', columns `cols`): an UPDATE or DELETE must
 * touch exactly one row (row) or as many as the array holds ($2, set). */
static char *stmt_text(apply_ctx *a, const rel *r, char op, const uint8_t *mask, const int *cols,
                       int ncols, int *nparams)
{
    sqlgen_rel shape = rel_shape(r);
    bool set = op == 'i' || op == 'u' || op == 'd';
    char *sql;
    char expect[32] = "$2::bigint";
    if (r->mapped) {
        sqlgen_map mp = rel_map(r);
        uint8_t *written = malloc((size_t)r->ncols + 1);
        if (written == NULL)
            return NULL;
        int mixed = sqlgen_map_written(&mp, op, mask, written);
        if (mixed >= 0) {
            log_error("apply: an update of %s did not send a value that column %s of %s reads "
                      "(an unchanged TOAST value), so \"%s\" cannot be computed; fix: ALTER "
                      "TABLE %s REPLICA IDENTITY FULL (the old row then carries it), or map the "
                      "column from columns that change together",
                      r->t->src.qname, r->cnames[mixed], r->t->tgt.qname, r->cexprs[mixed],
                      r->t->src.qname);
            free(written);
            return NULL;
        }
        sql = sqlgen_map_stmt(&mp, op, mask, cols, ncols, written, nparams);
        free(written);
        if (set && op != 'i')
            snprintf(expect, sizeof expect, "$%d::bigint", ++*nparams);
    } else if (set) {
        sql = sqlgen_set(&shape, op, cols, ncols);
        *nparams = op == 'i' ? 1 : 2;
    } else {
        sql = sqlgen_row(&shape, op, mask, nparams);
    }
    if (sql != NULL && op != 'I' && op != 'i' &&
        !wrap_expect(a, &sql, pipe_op_name(op), r->t->tgt.qname, set ? expect : "1"))
        return NULL;
    return sql;
}

/* The statement for (op, mask), prepared (in the pipeline, ahead of its
 * first use) if it is new. NULL on failure. */
stmt *stmt_get(apply_ctx *a, rel *r, char op, const uint8_t *mask, const int *cols, int ncols)
{
    for (stmt *s = r->stmts; s; s = s->next)
        if (s->op == op && memcmp(s->mask, mask, (size_t)r->natts) == 0)
            return s;
    int nparams = 0;
    char *sql = stmt_text(a, r, op, mask, cols, ncols, &nparams);
    stmt *s = sql ? calloc(1, sizeof *s) : NULL;
    if (s == NULL || (s->mask = malloc((size_t)r->natts + 1)) == NULL) {
        free(s);
        free(sql);
        return NULL;
    }
    memcpy(s->mask, mask, (size_t)r->natts);
    s->op = op;
    snprintf(s->name, sizeof s->name, "pgshift_%d", a->nstmts++);
    log_debug("apply: prepare %s: %s", s->name, sql);
    bool ok = pipe_sent(a, PQsendPrepare(a->conn, s->name, sql, nparams, NULL), 'P', r->t);
    free(sql);
    if (!ok) {
        free(s->mask);
        free(s);
        return NULL;
    }
    s->next = r->stmts;
    r->stmts = s;
    return s;
}
