/* setbased.c: folded changes (fold.h) applied set-based: per table, one
 * DELETE, one INSERT and one UPDATE per distinct set of sent columns, each
 * over unnest() of an array of target records. */
#include "apply_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool pick_delete(const fold *f, int row, const void *arg)
{
    (void)arg;
    return f->state[row] == FOLD_DELETE || f->state[row] == FOLD_REPLACE;
}

static bool pick_insert(const fold *f, int row, const void *arg)
{
    (void)arg;
    return f->state[row] == FOLD_INSERT || f->state[row] == FOLD_REPLACE;
}

/* UPDATE rows whose sent columns are exactly those of `arg` (a mask). */
static bool pick_update(const fold *f, int row, const void *arg)
{
    const uint8_t *mask = arg;
    if (f->state[row] != FOLD_UPDATE)
        return false;
    const fold_val *v = fold_row(f, row);
    for (int i = 0; i < f->natts; i++)
        if ((v[i].len != FOLD_UNSENT) != (mask[i] != 0))
            return false;
    return true;
}

static bool is_key(const rel *r, int att)
{
    sqlgen_rel shape = rel_shape(r);
    return sqlgen_is_key(&shape, att);
}

/* A mapped relation's set-based statement: one binary array per attribute
 * of `cols` (libpq copies the parameters as it sends), then the count. */
static bool send_columns(apply_ctx *a, rel *r, stmt *s, char op, const int *cols, int ncols,
                         fold_pick pick, const void *arg, long nrows)
{
    int np = ncols + (op == 'i' ? 0 : 1);
    char **bufs = calloc((size_t)np + 1, sizeof(char *));
    const char **values = calloc((size_t)np + 1, sizeof(char *));
    int *lengths = calloc((size_t)np + 1, sizeof(int));
    int *formats = calloc((size_t)np + 1, sizeof(int));
    char expect[24];
    bool ok = bufs && values && lengths && formats;
    for (int c = 0; ok && c < ncols; c++) {
        size_t len = 0, cap = 0;
        ok = fold_build_column(&r->fold, cols[c], r->aoids[cols[c]], pick, arg, &bufs[c], &len,
                               &cap);
        values[c] = bufs[c];
        lengths[c] = (int)len;
        formats[c] = 1;
    }
    if (ok && op != 'i') {
        snprintf(expect, sizeof expect, "%ld", nrows);
        values[ncols] = expect;
    }
    if (ok) {
        a->next_diag =
            mapdiag_new(r, op, s->mask, cols, ncols, nrows, ncols, values, lengths, formats);
        ok = pipe_sent(a, PQsendQueryPrepared(a->conn, s->name, np, values, lengths, formats, 0),
                       op, r->t);
    }
    for (int c = 0; bufs && c < ncols; c++)
        free(bufs[c]);
    free(bufs);
    free(values);
    free(lengths);
    free(formats);
    return ok;
}

/* Sends one set-based statement over unnest($1::<target>[]): `cols` are
 * the attributes it reads (all for INSERT, the key for DELETE, key + sent
 * columns for UPDATE); the text is prepared once per (op, mask). */
static bool send_set(apply_ctx *a, rel *r, char op, const uint8_t *mask, const int *cols, int ncols,
                     fold_pick pick, const void *arg, long nrows)
{
    stmt *s = stmt_get(a, r, op, mask, cols, ncols);
    if (s == NULL)
        return false;
    if (r->mapped && !r->srcrow)
        return send_columns(a, r, s, op, cols, ncols, pick, arg, nrows);
    size_t len = 0;
    if (!fold_build_records(&r->fold, &r->rowtype, pick, arg, &a->abuf, &len, &a->abuf_cap))
        return false;
    char expect[24];
    snprintf(expect, sizeof expect, "%ld", nrows);
    const char *values[2] = {a->abuf, expect};
    int lengths[2] = {(int)len, 0};
    int formats[2] = {1, 0};
    if (r->mapped)
        a->next_diag = mapdiag_new(r, op, s->mask, cols, ncols, nrows, 1, values, lengths, formats);
    return pipe_sent(
        a, PQsendQueryPrepared(a->conn, s->name, op == 'i' ? 1 : 2, values, lengths, formats, 0),
        op, r->t);
}

static bool flush_rel(apply_ctx *a, rel *r)
{
    fold *f = &r->fold;
    int *cols = malloc(sizeof(int) * (size_t)r->natts);
    uint8_t *mask = calloc((size_t)r->natts, 1);
    uint8_t *seen = calloc((size_t)f->nrows, 1);
    bool ok = cols && mask && seen;
    long ndel = 0, nins = 0;
    for (int i = 0; ok && i < f->nrows; i++) {
        ndel += pick_delete(f, i, NULL);
        nins += pick_insert(f, i, NULL);
    }
    if (ok && ndel > 0) {
        memset(mask, 0, (size_t)r->natts);
        for (int k = 0; k < r->nmatch; k++) {
            cols[k] = r->match[k];
            mask[r->match[k]] = 1;
        }
        ok = send_set(a, r, 'd', mask, cols, r->nmatch, pick_delete, NULL, ndel);
    }
    if (ok && nins > 0) {
        memset(mask, 1, (size_t)r->natts);
        for (int i = 0; i < r->natts; i++)
            cols[i] = i;
        ok = send_set(a, r, 'i', mask, cols, r->natts, pick_insert, NULL, nins);
    }
    /* UPDATEs, one statement per distinct set of sent columns. */
    for (int i = 0; ok && i < f->nrows; i++) {
        if (f->state[i] != FOLD_UPDATE || seen[i])
            continue;
        const fold_val *v = fold_row(f, i);
        int ncols = 0;
        bool any = false;
        for (int c = 0; c < r->natts; c++) {
            mask[c] = v[c].len != FOLD_UNSENT;
            if (mask[c]) {
                cols[ncols++] = c;
                any = any || !is_key(r, c);
            }
        }
        long n = 0;
        for (int j = i; j < f->nrows; j++)
            if (!seen[j] && pick_update(f, j, mask)) {
                seen[j] = 1;
                n++;
            }
        if (any)
            ok = send_set(a, r, 'u', mask, cols, ncols, pick_update, mask, n);
    }
    free(cols);
    free(mask);
    free(seen);
    fold_reset(f);
    return ok;
}

/* Applies every folded change (before anything that must see them: a
 * row-by-row change, TRUNCATE, a new Relation message, the COMMIT). */
bool folds_flush(apply_ctx *a)
{
    if (a->folded == 0)
        return true;
    for (rel *r = a->rels; r; r = r->next)
        if (r->setbased && r->fold.nrows > 0 && !flush_rel(a, r)) {
            a->failed = true;
            return false;
        }
    a->folded = 0;
    return true;
}

void folds_discard(apply_ctx *a)
{
    for (rel *r = a->rels; r; r = r->next)
        if (r->setbased)
            fold_reset(&r->fold);
    a->folded = 0;
}
