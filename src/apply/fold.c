/* fold.c: net effect per key of a batch of changes (see fold.h). */
#include "fold.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void fold_init(fold *f, int natts, int nmatch, const int *match)
{
    memset(f, 0, sizeof *f);
    f->natts = natts;
    f->nmatch = nmatch;
    f->match = match;
}

void fold_free(fold *f)
{
    free(f->state);
    free(f->vals);
    free(f->hash);
    free(f->table);
    free(f->arena);
    memset(f, 0, sizeof *f);
}

void fold_reset(fold *f)
{
    f->nrows = 0;
    f->arena_len = 0;
    if (f->table)
        memset(f->table, 0, sizeof(uint32_t) * f->tabcap);
}

bool fold_accepts(const decode_tuple *t)
{
    for (int i = 0; i < t->ncols; i++)
        if (t->cols[i].kind == DECODE_COL_TEXT)
            return false;
    return true;
}

static uint32_t key_hash(const fold *f, const decode_tuple *t)
{
    uint32_t h = 2166136261u;
    for (int k = 0; k < f->nmatch; k++) {
        const decode_col *c = &t->cols[f->match[k]];
        uint32_t len = c->kind == DECODE_COL_NULL ? UINT32_MAX : c->len;
        for (int b = 0; b < 4; b++) {
            h ^= (uint8_t)(len >> (8 * b));
            h *= 16777619u;
        }
        for (uint32_t i = 0; i < c->len; i++) {
            h ^= c->data[i];
            h *= 16777619u;
        }
    }
    return h;
}

static bool col_equal(const decode_col *a, const decode_col *b)
{
    return a->kind == b->kind && a->len == b->len &&
           (a->len == 0 || memcmp(a->data, b->data, a->len) == 0);
}

bool fold_same_key(const fold *f, const decode_tuple *a, const decode_tuple *b)
{
    for (int k = 0; k < f->nmatch; k++)
        if (!col_equal(&a->cols[f->match[k]], &b->cols[f->match[k]]))
            return false;
    return true;
}

/* Does pending row `row` hold the key of tuple t? */
static bool row_has_key(const fold *f, int row, const decode_tuple *t)
{
    const fold_val *v = fold_row(f, row);
    for (int k = 0; k < f->nmatch; k++) {
        const decode_col *c = &t->cols[f->match[k]];
        const fold_val *fv = &v[f->match[k]];
        if (fv->len < 0 || (uint32_t)fv->len != c->len ||
            memcmp(f->arena + fv->off, c->data, c->len) != 0)
            return false;
    }
    return true;
}

static int find_row(const fold *f, uint32_t h, const decode_tuple *t)
{
    if (f->tabcap == 0)
        return -1;
    for (uint32_t i = h & (f->tabcap - 1);; i = (i + 1) & (f->tabcap - 1)) {
        uint32_t e = f->table[i];
        if (e == 0)
            return -1;
        if (f->hash[e - 1] == h && row_has_key(f, (int)(e - 1), t))
            return (int)(e - 1);
    }
}

static bool grow_table(fold *f)
{
    uint32_t ncap = f->tabcap ? f->tabcap * 2 : 1024;
    uint32_t *nt = calloc(ncap, sizeof(uint32_t));
    if (nt == NULL)
        return false;
    for (int r = 0; r < f->nrows; r++) {
        uint32_t i = f->hash[r] & (ncap - 1);
        while (nt[i])
            i = (i + 1) & (ncap - 1);
        nt[i] = (uint32_t)r + 1;
    }
    free(f->table);
    f->table = nt;
    f->tabcap = ncap;
    return true;
}

static bool arena_put(fold *f, const decode_col *c, fold_val *out)
{
    if (c->kind == DECODE_COL_NULL) {
        *out = (fold_val){FOLD_NULL, 0};
        return true;
    }
    if (c->kind == DECODE_COL_UNCHANGED) {
        *out = (fold_val){FOLD_UNSENT, 0};
        return true;
    }
    if (f->arena_len + c->len > f->arena_cap) {
        size_t ncap = (f->arena_cap ? f->arena_cap * 2 : 65536) + c->len;
        char *na = realloc(f->arena, ncap);
        if (na == NULL)
            return false;
        f->arena = na;
        f->arena_cap = ncap;
    }
    if (c->len)
        memcpy(f->arena + f->arena_len, c->data, c->len);
    *out = (fold_val){(int32_t)c->len, (uint32_t)f->arena_len};
    f->arena_len += c->len;
    return true;
}

/* Overwrites the row's values with every sent column of t. */
static bool put_sent(fold *f, int row, const decode_tuple *t)
{
    fold_val *v = &f->vals[(size_t)row * (size_t)f->natts];
    for (int i = 0; i < f->natts; i++)
        if (t->cols[i].kind != DECODE_COL_UNCHANGED && !arena_put(f, &t->cols[i], &v[i]))
            return false;
    return true;
}

static int new_row(fold *f, uint32_t h, const decode_tuple *key)
{
    if (f->nrows == f->caprows) {
        int ncap = f->caprows ? f->caprows * 2 : 1024;
        uint8_t *ns = realloc(f->state, (size_t)ncap);
        if (ns)
            f->state = ns;
        uint32_t *nh = realloc(f->hash, sizeof(uint32_t) * (size_t)ncap);
        if (nh)
            f->hash = nh;
        fold_val *nv = realloc(f->vals, sizeof(fold_val) * (size_t)ncap * (size_t)f->natts);
        if (nv)
            f->vals = nv;
        if (!ns || !nh || !nv)
            return -1;
        f->caprows = ncap;
    }
    if ((uint32_t)(f->nrows + 1) * 2 > f->tabcap && !grow_table(f))
        return -1;
    int r = f->nrows++;
    f->hash[r] = h;
    f->state[r] = FOLD_NONE;
    fold_val *v = &f->vals[(size_t)r * (size_t)f->natts];
    for (int i = 0; i < f->natts; i++)
        v[i] = (fold_val){FOLD_UNSENT, 0};
    /* The key columns are always known: copy them from the key tuple. */
    for (int k = 0; k < f->nmatch; k++)
        if (!arena_put(f, &key->cols[f->match[k]], &v[f->match[k]]))
            return -1;
    uint32_t i = h & (f->tabcap - 1);
    while (f->table[i])
        i = (i + 1) & (f->tabcap - 1);
    f->table[i] = (uint32_t)r + 1;
    return r;
}

bool fold_add(fold *f, char op, const decode_tuple *newtup, const decode_tuple *keytup, char *err,
              size_t errlen)
{
    uint32_t h = key_hash(f, keytup);
    int r = find_row(f, h, keytup);
    if (r < 0 && (r = new_row(f, h, keytup)) < 0) {
        snprintf(err, errlen, "out of memory folding a batch");
        return false;
    }
    uint8_t st = f->state[r];
    static const char *const names[] = {"none", "insert", "update", "delete", "replace"};
    switch (op) {
    case 'I':
        if (st == FOLD_INSERT || st == FOLD_UPDATE || st == FOLD_REPLACE)
            goto conflict;
        f->state[r] = st == FOLD_DELETE ? FOLD_REPLACE : FOLD_INSERT;
        break;
    case 'U':
        if (st == FOLD_DELETE)
            goto conflict;
        if (st == FOLD_NONE)
            f->state[r] = FOLD_UPDATE;
        break;
    case 'D':
        if (st == FOLD_DELETE)
            goto conflict;
        /* An insert of this batch vanishes; a row that existed goes. */
        f->state[r] = st == FOLD_INSERT ? FOLD_NONE : FOLD_DELETE;
        if (f->state[r] == FOLD_NONE) {
            fold_val *v = &f->vals[(size_t)r * (size_t)f->natts];
            for (int i = 0; i < f->natts; i++)
                if (v[i].len != FOLD_UNSENT) {
                    bool key = false;
                    for (int k = 0; k < f->nmatch && !key; k++)
                        key = f->match[k] == i;
                    if (!key)
                        v[i] = (fold_val){FOLD_UNSENT, 0};
                }
        }
        return true;
    default:
        snprintf(err, errlen, "unknown change kind %c", op);
        return false;
    }
    if (!put_sent(f, r, newtup)) {
        snprintf(err, errlen, "out of memory folding a batch");
        return false;
    }
    return true;
conflict:
    snprintf(err, errlen, "%s of a key whose pending state is %s",
             op == 'I'   ? "insert"
             : op == 'U' ? "update"
                         : "delete",
             names[st]);
    return false;
}

static bool put_be32(char **buf, size_t *len, size_t *cap, uint32_t v, const void *data, size_t n)
{
    if (*len + 4 + n > *cap) {
        size_t ncap = (*cap ? *cap * 2 : 4096) + n;
        char *nb = realloc(*buf, ncap);
        if (nb == NULL)
            return false;
        *buf = nb;
        *cap = ncap;
    }
    unsigned char *p = (unsigned char *)*buf + *len;
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
    if (n)
        memcpy(p + 4, data, n);
    *len += 4 + n;
    return true;
}

static bool put_val(const fold *f, const fold_val *v, char **buf, size_t *len, size_t *cap)
{
    return v->len < 0
               ? put_be32(buf, len, cap, UINT32_MAX, NULL, 0)
               : put_be32(buf, len, cap, (uint32_t)v->len, f->arena + v->off, (size_t)v->len);
}

bool fold_build_records(const fold *f, const fold_rowtype *rt, fold_pick want, const void *arg,
                        char **buf, size_t *len, size_t *cap)
{
    uint32_t n = 0;
    for (int r = 0; r < f->nrows; r++)
        n += want(f, r, arg);
    *len = 0;
    /* array_send: ndim, has-nulls flag, element type, then per dimension
     * its size and lower bound, then each element as length + bytes. */
    if (!put_be32(buf, len, cap, 1, NULL, 0) || !put_be32(buf, len, cap, 0, NULL, 0) ||
        !put_be32(buf, len, cap, rt->oid, NULL, 0) || !put_be32(buf, len, cap, n, NULL, 0) ||
        !put_be32(buf, len, cap, 1, NULL, 0))
        return false;
    static const fold_val null_val = {FOLD_NULL, 0};
    for (int r = 0; r < f->nrows; r++) {
        if (!want(f, r, arg))
            continue;
        /* record_send: column count, then per column its type OID and value;
         * the element's length is patched in once the record is written. */
        size_t at = *len;
        if (!put_be32(buf, len, cap, 0, NULL, 0) ||
            !put_be32(buf, len, cap, (uint32_t)rt->ncols, NULL, 0))
            return false;
        const fold_val *row = fold_row(f, r);
        for (int c = 0; c < rt->ncols; c++) {
            int att = rt->col_att[c];
            const fold_val *v = att < 0 || row[att].len == FOLD_UNSENT ? &null_val : &row[att];
            if (!put_be32(buf, len, cap, rt->col_oids[c], NULL, 0) || !put_val(f, v, buf, len, cap))
                return false;
        }
        uint32_t elen = (uint32_t)(*len - at - 4);
        unsigned char *p = (unsigned char *)*buf + at;
        p[0] = (unsigned char)(elen >> 24);
        p[1] = (unsigned char)(elen >> 16);
        p[2] = (unsigned char)(elen >> 8);
        p[3] = (unsigned char)elen;
    }
    return true;
}

bool fold_build_column(const fold *f, int att, uint32_t elem_oid, fold_pick want, const void *arg,
                       char **buf, size_t *len, size_t *cap)
{
    uint32_t n = 0;
    for (int r = 0; r < f->nrows; r++)
        n += want(f, r, arg);
    *len = 0;
    if (!put_be32(buf, len, cap, 1, NULL, 0) || !put_be32(buf, len, cap, 0, NULL, 0) ||
        !put_be32(buf, len, cap, elem_oid, NULL, 0) || !put_be32(buf, len, cap, n, NULL, 0) ||
        !put_be32(buf, len, cap, 1, NULL, 0))
        return false;
    static const fold_val null_val = {FOLD_NULL, 0};
    for (int r = 0; r < f->nrows; r++) {
        if (!want(f, r, arg))
            continue;
        const fold_val *v = &fold_row(f, r)[att];
        if (!put_val(f, v->len == FOLD_UNSENT ? &null_val : v, buf, len, cap))
            return false;
    }
    return true;
}
