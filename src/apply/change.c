/* change.c: one insert, update or delete: folded for set-based apply
 * when its relation and values allow, else sent row by row through a
 * prepared statement. */
#include "apply_int.h"

#include "pgshift/log.h"

#include <stdlib.h>
#include <string.h>

static bool grow_params(apply_ctx *a, size_t n)
{
    if (n <= a->pcap)
        return true;
    size_t nc = n + 16;
    const char **v = realloc(a->values, sizeof(char *) * nc);
    if (v)
        a->values = v;
    int *l = realloc(a->lengths, sizeof(int) * nc);
    if (l)
        a->lengths = l;
    int *f = realloc(a->formats, sizeof(int) * nc);
    if (f)
        a->formats = f;
    if (!v || !l || !f)
        return false;
    a->pcap = nc;
    return true;
}

/* Text values must be NUL-terminated for libpq: first size the scratch,
 * then fill it, so the pointers stay valid. */
static size_t text_need(const decode_col *c)
{
    return c->kind == DECODE_COL_TEXT ? c->len + 1 : 0;
}

static void set_param(apply_ctx *a, int i, const decode_col *c, size_t *off)
{
    switch (c->kind) {
    case DECODE_COL_BINARY:
        a->values[i] = (const char *)c->data;
        a->lengths[i] = (int)c->len;
        a->formats[i] = 1;
        break;
    case DECODE_COL_TEXT:
        memcpy(a->text + *off, c->data, c->len);
        a->text[*off + c->len] = '\0';
        a->values[i] = a->text + *off;
        a->lengths[i] = (int)c->len;
        a->formats[i] = 0;
        *off += c->len + 1;
        break;
    default:
        a->values[i] = NULL;
        a->lengths[i] = 0;
        a->formats[i] = 0;
        break;
    }
}

static void count_change(apply_ctx *a, const rel *r)
{
    a->batch_changes++;
    a->table_changes[r->t->ord]++;
    a->stats.changes++;
}

/* The change matches its Relation message and names its row: every key
 * column is sent (an update's or delete's). */
static bool check_change(apply_ctx *a, const rel *r, char op, const decode_tuple *newtup,
                         const decode_tuple *keytup)
{
    char lsn[18];
    const decode_tuple *shape = newtup ? newtup : keytup;
    if (shape->ncols != r->natts || (keytup && keytup->ncols != r->natts)) {
        log_error("apply: %s on %s carries %u columns, its Relation message said %d",
                  pipe_op_name(op), r->t->src.qname, shape->ncols, r->natts);
        return false;
    }
    for (int k = 0; op != 'I' && k < r->nmatch; k++) {
        const decode_col *c = &keytup->cols[r->match[k]];
        if (c->kind == DECODE_COL_UNCHANGED || (c->kind == DECODE_COL_NULL && !r->whole_row)) {
            log_error("apply: %s on %s: key column \"%s\" was not sent (%s); cannot identify the "
                      "row (transaction at %s)",
                      pipe_op_name(op), r->t->src.qname,
                      r->whole_row ? r->sent->attrs[r->match[k]].name : r->t->match.v[k],
                      c->kind == DECODE_COL_NULL ? "NULL" : "unchanged TOAST",
                      decode_lsn_format(a->xact_final_lsn, lsn));
            return false;
        }
    }
    return true;
}

/* Folds the change into its relation's pending set (kt: the row's key). */
static bool fold_change(apply_ctx *a, rel *r, char op, const decode_tuple *newtup,
                        const decode_tuple *kt)
{
    char err[160], lsn[18];
    if (!fold_add(&r->fold, op, newtup, kt, err, sizeof err)) {
        log_error("apply: %s on %s in the source transaction at %s: %s; the target has "
                  "diverged from the source",
                  pipe_op_name(op), r->t->src.qname, decode_lsn_format(a->xact_final_lsn, lsn),
                  err);
        return false;
    }
    count_change(a, r);
    if (++a->folded >= FOLD_MAX_ROWS || fold_bytes(&r->fold) >= FOLD_MAX_BYTES)
        return folds_flush(a);
    return true;
}

static bool grow_text(apply_ctx *a, size_t need)
{
    if (need <= a->textcap)
        return true;
    char *nt = realloc(a->text, need * 2);
    if (nt == NULL)
        return false;
    a->text = nt;
    a->textcap = need * 2;
    return true;
}

/* Sends the change through the prepared statement for its op and set of
 * sent columns (an unchanged TOAST value is not set). */
static bool row_change(apply_ctx *a, rel *r, char op, const decode_tuple *newtup,
                       const decode_tuple *keytup)
{
    uint8_t maskbuf[256];
    uint8_t *mask = r->natts <= (int)sizeof maskbuf ? maskbuf : malloc((size_t)r->natts);
    if (mask == NULL)
        return false;
    int nset = 0;
    size_t need = 0;
    for (int i = 0; i < r->natts; i++) {
        mask[i] = op != 'D' && newtup->cols[i].kind != DECODE_COL_UNCHANGED;
        nset += mask[i];
        if (mask[i])
            need += text_need(&newtup->cols[i]);
    }
    for (int k = 0; op != 'I' && k < r->nmatch; k++)
        need += text_need(&keytup->cols[r->match[k]]);
    int nparams = nset + (op == 'I' ? 0 : r->nmatch);
    bool ok = grow_params(a, (size_t)nparams + 1) && grow_text(a, need);
    stmt *s = ok ? stmt_get(a, r, op, mask, NULL, 0) : NULL;
    if (mask != maskbuf)
        free(mask);
    if (s == NULL)
        return false;
    size_t off = 0;
    int p = 0;
    for (int i = 0; i < r->natts; i++)
        if (s->mask[i])
            set_param(a, p++, &newtup->cols[i], &off);
    for (int k = 0; op != 'I' && k < r->nmatch; k++)
        set_param(a, p++, &keytup->cols[r->match[k]], &off);
    count_change(a, r);
    if (r->mapped)
        a->next_diag =
            mapdiag_new(r, op, s->mask, NULL, 0, 1, p, a->values, a->lengths, a->formats);
    return pipe_sent(a,
                     PQsendQueryPrepared(a->conn, s->name, p, a->values, a->lengths, a->formats, 0),
                     op, r->t);
}

static bool change_route(apply_ctx *a, rel *r, char op, const decode_tuple *newtup,
                         const decode_tuple *keytup);

bool change_apply(apply_ctx *a, char op, uint32_t relid, const decode_tuple *newtup,
                  const decode_tuple *keytup)
{
    rel *r = relmap_find(a, relid);
    if (r == NULL) {
        char lsn[18];
        log_error("apply: change for relation %u before its Relation message (transaction at "
                  "%s)",
                  relid, decode_lsn_format(a->xact_final_lsn, lsn));
        return false;
    }
    if (!check_change(a, r, op, newtup, keytup))
        return false;
    /* A mapped column may read an unchanged TOAST value the update did not
     * send: the old row of REPLICA IDENTITY FULL carries it (a key-only
     * old tuple has NULL there, not the value). */
    decode_tuple merged;
    decode_col *mcols = NULL;
    if (r->mapped && op == 'U' && r->sent->replident == 'f' && keytup && keytup != newtup &&
        keytup->ncols == newtup->ncols) {
        for (int i = 0; i < newtup->ncols; i++) {
            if (newtup->cols[i].kind != DECODE_COL_UNCHANGED ||
                keytup->cols[i].kind == DECODE_COL_UNCHANGED)
                continue;
            if (mcols == NULL) {
                mcols = malloc(sizeof *mcols * newtup->ncols);
                if (mcols == NULL)
                    return false;
                memcpy(mcols, newtup->cols, sizeof *mcols * newtup->ncols);
            }
            mcols[i] = keytup->cols[i];
        }
        if (mcols) {
            merged = (decode_tuple){newtup->ncols, mcols};
            newtup = &merged;
        }
    }
    bool ok = change_route(a, r, op, newtup, keytup);
    free(mcols);
    return ok;
}

/* Folded, or row by row. */
static bool change_route(apply_ctx *a, rel *r, char op, const decode_tuple *newtup,
                         const decode_tuple *keytup)
{
    /* An insert's key is in its new tuple. */
    const decode_tuple *kt = keytup ? keytup : newtup;
    if (r->setbased && fold_accepts(kt) && (newtup == NULL || fold_accepts(newtup)) &&
        (op != 'U' || kt == newtup || fold_same_key(&r->fold, kt, newtup)))
        return fold_change(a, r, op, newtup, kt);
    /* Row by row from here: whatever is folded goes first, in order. */
    return folds_flush(a) && row_change(a, r, op, newtup, keytup);
}
