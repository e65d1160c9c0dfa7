/* Property test for src/apply/fold.c: folding a batch's changes per key and
 * applying the net effect set-based gives the same table as applying the
 * changes one by one, in order (the claim of fold.h).
 *
 * Random valid change streams (a source table is modelled so that every
 * change is one the source could have sent) go through two appliers over an
 * in-memory target table:
 * - the reference applies every change row by row, with the semantics of
 *   the applier's row statements (INSERT fails on a duplicate key, UPDATE and
 *   DELETE must match exactly one row; unchanged-TOAST columns are not set);
 * - the folded applier follows the applier's contract: a change goes into the
 *   real fold (fold_add) when change_apply would fold it, otherwise the
 *   fold is flushed first and the change applied row by row; flush points
 *   (batch commit, Relation message, fold size limit) and TRUNCATE flush
 *   too. A flush does what flush_rel does: the DELETE set, then the INSERT
 *   set, then one UPDATE per distinct set of sent columns, each built with
 *   the real fold_build_records, decoded back from the array_send /
 *   record_send bytes, and applied with the semantics of the set-based
 *   statements (including their expected row counts).
 * Both final tables must be equal (and equal to the source model).
 * setbased.c's flush_rel and pick_* are static, so this file mirrors them:
 * keep the two in step.
 *
 * Seeds: fixed ones, plus PGSHIFT_FOLD_SEED from the environment (a number,
 * or "random"); a failure prints its seed, the change sequence and both
 * tables. Targeted cases pin down insert-then-delete, delete-then-insert,
 * unchanged TOAST columns, key changes and keys whose hashes collide.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fold.h"

/* The source relation: id, v, big (a TOASTable column), k2. */
enum { A_ID, A_V, A_BIG, A_K2, NATTS };
#define MAXV 16

/* The target's columns, in another order, with one the source lacks. */
#define NTCOLS      5
#define ROWTYPE_OID 424242u
static const int tcol_att[NTCOLS] = {A_BIG, -1, A_ID, A_K2, A_V};
static const uint32_t tcol_oid[NTCOLS] = {25, 16, 23, 23, 20};
static const fold_rowtype rowtype = {ROWTYPE_OID, NTCOLS, tcol_oid, tcol_att};
static const char *const att_name[NATTS] = {"id", "v", "big", "k2"};

typedef struct shape {
    int nmatch;
    int match[2];
    const char *name;
} shape;

/* Key (id); key (k2, id): composite, not in attribute order. */
static const shape shapes[] = {{1, {A_ID, 0}, "key (id)"}, {2, {A_K2, A_ID}, "key (k2, id)"}};

typedef struct tval {
    int32_t len; /* -1: NULL */
    uint8_t b[MAXV];
} tval;

/* A column of a change: kind as in decode_col_kind ('n' 'u' 't' 'b'). */
typedef struct tcol {
    char kind;
    tval v;
} tcol;

typedef struct op {
    char kind; /* 'I' 'U' 'D'; 'T' truncate; 'F' flush point */
    int key, newkey;
    bool has_new, has_old;
    tcol nw[NATTS], old[NATTS];
} op;

typedef struct table {
    int n, cap;
    tval *rows; /* n x NTCOLS */
} table;

typedef struct source {
    int nkeys;
    bool *present;
    tval *vals; /* nkeys x NATTS */
} source;

typedef struct gencfg {
    int nkeys;
    int nops;
    int flush_pct;    /* chance of a flush point per step */
    int truncate_pct; /* chance of a TRUNCATE per step */
    bool fold_only;   /* no key changes or text columns: nothing goes row by row */
} gencfg;

typedef struct scase {
    const shape *s;
    bool full; /* REPLICA IDENTITY FULL: old tuples carry every column */
    source init;
    op *ops;
    int nops;
} scase;

/* What the cases exercised: a generator that stopped producing some
 * situation would make the property hold vacuously. */
static struct {
    long state[FOLD_REPLACE + 1]; /* rows flushed, by pending state */
    long rowwise;                 /* changes applied row by row */
    long partial_updates;         /* UPDATE statements leaving a column unset */
    long key_only;                /* folded updates with nothing to set */
} cov;

/* ---- random numbers ---- */

static uint64_t rnd_next(uint64_t *x)
{
    uint64_t z = (*x += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

static int rnd(uint64_t *x, int n)
{
    return (int)(rnd_next(x) % (uint64_t)n);
}

/* ---- values ---- */

static tval be32(uint32_t u)
{
    tval v = {4, {(uint8_t)(u >> 24), (uint8_t)(u >> 16), (uint8_t)(u >> 8), (uint8_t)u}};
    return v;
}

static bool tval_eq(const tval *a, const tval *b)
{
    return a->len == b->len && (a->len <= 0 || memcmp(a->b, b->b, (size_t)a->len) == 0);
}

static bool is_key(const shape *s, int att)
{
    for (int k = 0; k < s->nmatch; k++)
        if (s->match[k] == att)
            return true;
    return false;
}

static int att_tcol(int att)
{
    for (int c = 0; c < NTCOLS; c++)
        if (tcol_att[c] == att)
            return c;
    return -1;
}

/* The key columns of key number `key`. */
static void key_vals(const shape *s, int key, tval *vals)
{
    if (s->nmatch == 1) {
        vals[A_ID] = be32((uint32_t)key);
    } else {
        vals[A_ID] = be32((uint32_t)key % 4);
        vals[A_K2] = be32((uint32_t)key / 4);
    }
}

static tval gen_val(uint64_t *x, int att)
{
    tval v = {-1, {0}};
    switch (att) {
    case A_BIG:
        if (rnd(x, 6) == 0)
            return v;
        v.len = rnd(x, MAXV + 1);
        for (int i = 0; i < v.len; i++)
            v.b[i] = (uint8_t)('a' + rnd(x, 3));
        return v;
    case A_K2:
        return rnd(x, 4) == 0 ? v : be32((uint32_t)rnd(x, 3));
    default:
        return rnd(x, 5) == 0 ? v : be32((uint32_t)rnd(x, 4));
    }
}

static tcol sent(const tval *v)
{
    return (tcol){v->len < 0 ? 'n' : 'b', *v};
}

/* ---- tuples ---- */

static void to_tuple(const tcol *c, decode_col *cols, decode_tuple *t)
{
    for (int i = 0; i < NATTS; i++) {
        bool data = c[i].kind == 'b' || c[i].kind == 't';
        cols[i].kind = (decode_col_kind)c[i].kind;
        cols[i].len = data ? (uint32_t)c[i].v.len : 0;
        cols[i].data = data ? c[i].v.b : NULL;
    }
    t->ncols = NATTS;
    t->cols = cols;
}

/* ---- tables ---- */

static tval *row_at(const table *t, int r)
{
    return &t->rows[(size_t)r * NTCOLS];
}

static tval *table_add(table *t)
{
    if (t->n == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 16;
        t->rows = realloc(t->rows, sizeof(tval) * NTCOLS * (size_t)t->cap);
        assert_non_null(t->rows);
    }
    tval *row = row_at(t, t->n++);
    for (int c = 0; c < NTCOLS; c++)
        row[c] = (tval){-1, {0}};
    return row;
}

static void table_del(table *t, int r)
{
    memmove(row_at(t, r), row_at(t, r + 1), sizeof(tval) * NTCOLS * (size_t)(t->n - r - 1));
    t->n--;
}

/* Does row r hold the key of `key` (NTCOLS values in target order)? */
static bool row_key_eq(const shape *s, const tval *row, const tval *key)
{
    for (int k = 0; k < s->nmatch; k++) {
        int c = att_tcol(s->match[k]);
        if (row[c].len < 0 || key[c].len < 0 || !tval_eq(&row[c], &key[c]))
            return false;
    }
    return true;
}

/* A tuple's key as target-ordered values (a NULL where it has no value). */
static void tuple_key(const shape *s, const decode_tuple *tup, tval *key)
{
    for (int c = 0; c < NTCOLS; c++)
        key[c] = (tval){-1, {0}};
    for (int k = 0; k < s->nmatch; k++) {
        const decode_col *dc = &tup->cols[s->match[k]];
        tval *v = &key[att_tcol(s->match[k])];
        if (dc->kind == DECODE_COL_BINARY || dc->kind == DECODE_COL_TEXT) {
            v->len = (int32_t)dc->len;
            memcpy(v->b, dc->data, dc->len);
        }
    }
}

/* Is the key of row r unique in the table (a unique index on the key)? */
static bool key_unique(const shape *s, const table *t, int r)
{
    for (int o = 0; o < t->n; o++)
        if (o != r && row_key_eq(s, row_at(t, o), row_at(t, r)))
            return false;
    return true;
}

/* Rows whose key equals `key`: how many, and the last one. */
static int find_key(const shape *s, const table *t, const tval *key, int *count)
{
    int at = -1;
    *count = 0;
    for (int r = 0; r < t->n; r++)
        if (row_key_eq(s, row_at(t, r), key)) {
            at = r;
            ++*count;
        }
    return at;
}

/* Sets the row's columns to every sent column of the tuple. */
static void set_from_tuple(tval *row, const decode_tuple *tup)
{
    for (int att = 0; att < NATTS; att++) {
        const decode_col *dc = &tup->cols[att];
        tval *v = &row[att_tcol(att)];
        if (dc->kind == DECODE_COL_UNCHANGED)
            continue;
        if (dc->kind == DECODE_COL_NULL) {
            v->len = -1;
        } else {
            v->len = (int32_t)dc->len;
            memcpy(v->b, dc->data, dc->len);
        }
    }
}

/* ---- the row-by-row statements (sqlgen.c): INSERT, UPDATE, DELETE ---- */

static bool row_apply(const shape *s, table *t, char kind, const decode_tuple *newtup,
                      const decode_tuple *keytup, char *err, size_t errlen)
{
    tval key[NTCOLS];
    int count = 0, r;
    switch (kind) {
    case 'I':
        /* Columns not sent take their default (NULL here). */
        set_from_tuple(table_add(t), newtup);
        if (!key_unique(s, t, t->n - 1)) {
            snprintf(err, errlen, "INSERT: duplicate key");
            return false;
        }
        return true;
    case 'U':
    case 'D':
        tuple_key(s, keytup, key);
        r = find_key(s, t, key, &count);
        if (count != 1) {
            snprintf(err, errlen, "%s matched %d rows instead of 1",
                     kind == 'U' ? "UPDATE" : "DELETE", count);
            return false;
        }
        if (kind == 'D') {
            table_del(t, r);
            return true;
        }
        set_from_tuple(row_at(t, r), newtup);
        if (!key_unique(s, t, r)) {
            snprintf(err, errlen, "UPDATE: duplicate key");
            return false;
        }
        return true;
    default:
        snprintf(err, errlen, "row_apply: kind %c", kind);
        return false;
    }
}

static bool ref_apply(const shape *s, table *t, const op *o, char *err, size_t errlen)
{
    decode_col nc[NATTS], oc[NATTS];
    decode_tuple nt, ot;
    to_tuple(o->nw, nc, &nt);
    to_tuple(o->old, oc, &ot);
    switch (o->kind) {
    case 'T':
        t->n = 0;
        return true;
    case 'F':
        return true;
    default:
        return row_apply(s, t, o->kind, o->has_new ? &nt : NULL, o->has_old ? &ot : &nt, err,
                         errlen);
    }
}

/* ---- the set-based statements of flush_rel (setbased.c) ---- */

/* The row pickers of setbased.c (static there), verbatim. */
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

static bool get32(const uint8_t *p, size_t len, size_t *at, uint32_t *out)
{
    if (*at + 4 > len)
        return false;
    p += *at;
    *out = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
    *at += 4;
    return true;
}

/* One record_send element into NTCOLS values. */
static bool parse_record(const uint8_t *p, size_t end, size_t *at, tval *rec, char *err,
                         size_t errlen)
{
    uint32_t ncols, oid, len;
    if (!get32(p, end, at, &ncols) || ncols != NTCOLS) {
        snprintf(err, errlen, "record: bad column count");
        return false;
    }
    for (int c = 0; c < NTCOLS; c++) {
        if (!get32(p, end, at, &oid) || oid != tcol_oid[c] || !get32(p, end, at, &len)) {
            snprintf(err, errlen, "record: column %d: bad type or length", c);
            return false;
        }
        if (len == UINT32_MAX) {
            rec[c].len = -1;
            continue;
        }
        if (len > MAXV || *at + len > end) {
            snprintf(err, errlen, "record: column %d: length %u", c, len);
            return false;
        }
        rec[c].len = (int32_t)len;
        memcpy(rec[c].b, p + *at, len);
        *at += len;
    }
    return *at == end || (snprintf(err, errlen, "record: trailing bytes"), false);
}

/* Builds the statement's parameter with the real fold_build_records and
 * reads it back (array_send of record_send), checking its framing. */
static bool build_records(const fold *f, fold_pick pick, const void *arg, long expect, table *recs,
                          char *err, size_t errlen)
{
    char *buf = NULL;
    size_t len = 0, cap = 0, at = 0;
    uint32_t ndim, flags, elem, dim, lbound, elen;
    bool ok = fold_build_records(f, &rowtype, pick, arg, &buf, &len, &cap);
    const uint8_t *p = (const uint8_t *)buf;
    recs->n = 0;
    if (!ok || !get32(p, len, &at, &ndim) || !get32(p, len, &at, &flags) ||
        !get32(p, len, &at, &elem) || !get32(p, len, &at, &dim) || !get32(p, len, &at, &lbound) ||
        ndim != 1 || flags != 0 || elem != ROWTYPE_OID || dim != (uint32_t)expect || lbound != 1) {
        snprintf(err, errlen, "array header wrong (%ld rows expected)", expect);
        ok = false;
    }
    for (uint32_t i = 0; ok && i < dim; i++) {
        ok = get32(p, len, &at, &elen) && at + elen <= len;
        if (!ok)
            snprintf(err, errlen, "array element %u: bad length", i);
        else
            ok = parse_record(p, at + elen, &at, table_add(recs), err, errlen);
    }
    if (ok && at != len) {
        snprintf(err, errlen, "array: trailing bytes");
        ok = false;
    }
    free(buf);
    return ok;
}

/* Which record has the row's key; -1 if none, -2 if several. */
static int match_rec(const shape *s, const tval *row, const table *recs)
{
    int m = -1;
    for (int i = 0; i < recs->n; i++)
        if (row_key_eq(s, row, row_at(recs, i)))
            m = m == -1 ? i : -2;
    return m;
}

/* DELETE FROM t USING unnest($1) u WHERE key = u.key, expecting $2 rows. */
static bool set_delete(const shape *s, table *t, const table *recs, long expect, char *err,
                       size_t errlen)
{
    long n = 0;
    for (int r = t->n - 1; r >= 0; r--)
        if (match_rec(s, row_at(t, r), recs) != -1) {
            table_del(t, r);
            n++;
        }
    if (n != expect) {
        snprintf(err, errlen, "batched DELETE matched %ld rows instead of %ld", n, expect);
        return false;
    }
    return true;
}

/* INSERT INTO t (every source column) SELECT ... FROM unnest($1) u. */
static bool set_insert(const shape *s, table *t, const table *recs, char *err, size_t errlen)
{
    for (int i = 0; i < recs->n; i++) {
        tval *row = table_add(t);
        for (int c = 0; c < NTCOLS; c++)
            if (tcol_att[c] >= 0)
                row[c] = row_at(recs, i)[c];
        if (!key_unique(s, t, t->n - 1)) {
            snprintf(err, errlen, "batched INSERT: duplicate key");
            return false;
        }
    }
    return true;
}

/* UPDATE t SET <non-key columns of mask> = u.<col> FROM unnest($1) u WHERE
 * key = u.key, expecting $2 rows. */
static bool set_update(const shape *s, table *t, const table *recs, const uint8_t *mask,
                       long expect, char *err, size_t errlen)
{
    long n = 0;
    for (int r = 0; r < t->n; r++) {
        int m = match_rec(s, row_at(t, r), recs);
        if (m == -2) {
            snprintf(err, errlen, "batched UPDATE: two records for one row");
            return false;
        }
        if (m < 0)
            continue;
        for (int att = 0; att < NATTS; att++)
            if (mask[att] && !is_key(s, att))
                row_at(t, r)[att_tcol(att)] = row_at(recs, m)[att_tcol(att)];
        n++;
    }
    if (n != expect) {
        snprintf(err, errlen, "batched UPDATE matched %ld rows instead of %ld", n, expect);
        return false;
    }
    return true;
}

/* The UPDATE part of flush_rel: one statement per distinct set of sent
 * columns, none for rows where only the key was sent. */
static bool flush_updates(const shape *s, fold *f, table *t, table *recs, char *err, size_t errlen)
{
    uint8_t *seen = calloc((size_t)f->nrows + 1, 1);
    uint8_t mask[NATTS];
    bool ok = seen != NULL;
    for (int i = 0; ok && i < f->nrows; i++) {
        if (f->state[i] != FOLD_UPDATE || seen[i])
            continue;
        const fold_val *v = fold_row(f, i);
        bool any = false;
        for (int c = 0; c < NATTS; c++) {
            mask[c] = v[c].len != FOLD_UNSENT;
            any = any || (mask[c] && !is_key(s, c));
        }
        long n = 0;
        for (int j = i; j < f->nrows; j++)
            if (!seen[j] && pick_update(f, j, mask)) {
                seen[j] = 1;
                n++;
            }
        bool partial = false;
        for (int c = 0; c < NATTS; c++)
            partial = partial || !mask[c];
        cov.partial_updates += any && partial;
        cov.key_only += !any;
        if (any)
            ok = build_records(f, pick_update, mask, n, recs, err, errlen) &&
                 set_update(s, t, recs, mask, n, err, errlen);
    }
    free(seen);
    return ok;
}

/* flush_rel: the DELETE set, then the INSERT set, then the UPDATEs; then
 * the fold starts over. */
static bool flush_fold(const shape *s, fold *f, table *t, char *err, size_t errlen)
{
    table recs = {0};
    long ndel = 0, nins = 0;
    bool ok = true;
    for (int i = 0; i < f->nrows; i++) {
        cov.state[f->state[i]]++;
        ndel += pick_delete(f, i, NULL);
        nins += pick_insert(f, i, NULL);
    }
    if (ndel > 0)
        ok = build_records(f, pick_delete, NULL, ndel, &recs, err, errlen) &&
             set_delete(s, t, &recs, ndel, err, errlen);
    if (ok && nins > 0)
        ok = build_records(f, pick_insert, NULL, nins, &recs, err, errlen) &&
             set_insert(s, t, &recs, err, errlen);
    ok = ok && flush_updates(s, f, t, &recs, err, errlen);
    free(recs.rows);
    fold_reset(f);
    return ok;
}

/* One change the way change_apply handles it: folded when every column is
 * binary, NULL or unchanged and an update keeps its key; otherwise what is
 * folded goes first, then the change row by row. */
static bool folded_apply(const shape *s, fold *f, table *t, const op *o, char *err, size_t errlen)
{
    decode_col nc[NATTS], oc[NATTS];
    decode_tuple nt, ot;
    to_tuple(o->nw, nc, &nt);
    to_tuple(o->old, oc, &ot);
    const decode_tuple *newtup = o->has_new ? &nt : NULL;
    const decode_tuple *kt = o->has_old ? &ot : &nt;
    switch (o->kind) {
    case 'F':
        return flush_fold(s, f, t, err, errlen);
    case 'T':
        if (!flush_fold(s, f, t, err, errlen))
            return false;
        t->n = 0;
        return true;
    default:
        break;
    }
    if (fold_accepts(kt) && (newtup == NULL || fold_accepts(newtup)) &&
        (o->kind != 'U' || kt == newtup || fold_same_key(f, kt, newtup))) {
        if (!fold_add(f, o->kind, newtup, kt, err, errlen))
            return false;
        return true;
    }
    cov.rowwise++;
    return flush_fold(s, f, t, err, errlen) && row_apply(s, t, o->kind, newtup, kt, err, errlen);
}

/* ---- the source: every change generated is one it could send ---- */

static void src_init(source *src, int nkeys)
{
    src->nkeys = nkeys;
    src->present = calloc((size_t)nkeys, sizeof(bool));
    src->vals = calloc((size_t)nkeys * NATTS, sizeof(tval));
    assert_true(src->present && src->vals);
}

static void src_copy(source *dst, const source *src)
{
    src_init(dst, src->nkeys);
    memcpy(dst->present, src->present, sizeof(bool) * (size_t)src->nkeys);
    memcpy(dst->vals, src->vals, sizeof(tval) * NATTS * (size_t)src->nkeys);
}

static void src_free(source *src)
{
    free(src->present);
    free(src->vals);
}

static tval *src_row(const source *src, int key)
{
    return &src->vals[(size_t)key * NATTS];
}

/* Fills key `key` with vals (its key columns set from the key). */
static void src_put(const shape *s, source *src, int key, const tval *vals)
{
    memcpy(src_row(src, key), vals, sizeof(tval) * NATTS);
    key_vals(s, key, src_row(src, key));
    src->present[key] = true;
}

/* The old tuple: every column (REPLICA IDENTITY FULL), or the key with
 * NULLs elsewhere (pgoutput's 'K' tuple). */
static void old_tuple(const shape *s, bool full, const tval *old, tcol *out)
{
    for (int att = 0; att < NATTS; att++)
        out[att] = full || is_key(s, att) ? sent(&old[att]) : (tcol){'n', {-1, {0}}};
}

static void op_insert(const shape *s, source *src, int key, const tval *vals, op *o)
{
    *o = (op){.kind = 'I', .key = key, .newkey = key, .has_new = true};
    src_put(s, src, key, vals);
    for (int att = 0; att < NATTS; att++)
        o->nw[att] = sent(&src_row(src, key)[att]);
}

/* An update of `key` to `newkey` (the same key, or an absent one) setting
 * the non-key columns to vals; the columns in `unchanged` (bits by
 * attribute, values that do not change) are sent as unchanged TOAST. The
 * old tuple is sent when the key changes or the identity is FULL. */
static void op_update(const shape *s, bool full, source *src, int key, int newkey, const tval *vals,
                      unsigned unchanged, op *o)
{
    tval old[NATTS];
    memcpy(old, src_row(src, key), sizeof old);
    *o = (op){.kind = 'U', .key = key, .newkey = newkey, .has_new = true};
    o->has_old = full || newkey != key;
    if (o->has_old)
        old_tuple(s, full, old, o->old);
    src->present[key] = false;
    src_put(s, src, newkey, vals);
    const tval *nv = src_row(src, newkey);
    for (int att = 0; att < NATTS; att++) {
        o->nw[att] = sent(&nv[att]);
        if (unchanged & (1u << att)) {
            assert_true(!is_key(s, att) && nv[att].len >= 0 && tval_eq(&nv[att], &old[att]));
            o->nw[att] = (tcol){'u', {-1, {0}}};
        }
    }
}

static void op_delete(const shape *s, bool full, source *src, int key, op *o)
{
    *o = (op){.kind = 'D', .key = key, .newkey = key, .has_old = true};
    old_tuple(s, full, src_row(src, key), o->old);
    src->present[key] = false;
}

/* Now and then one sent column in text form: change_apply does not fold
 * such a change. */
static void textify(uint64_t *x, tcol *c, int one_in)
{
    if (rnd(x, one_in) != 0)
        return;
    int att = rnd(x, NATTS);
    if (c[att].kind == 'b')
        c[att].kind = 't';
}

static void gen_update(uint64_t *x, const shape *s, bool full, source *src, int key, int newkey,
                       op *o)
{
    tval vals[NATTS];
    const tval *old = src_row(src, key);
    unsigned unchanged = 0;
    for (int att = 0; att < NATTS; att++) {
        vals[att] = rnd(x, 2) ? old[att] : gen_val(x, att);
        /* A TOASTed value the update did not change is not sent. */
        if (!is_key(s, att) && vals[att].len >= 0 && tval_eq(&vals[att], &old[att]) &&
            rnd(x, att == A_BIG ? 2 : 8) == 0)
            unchanged |= 1u << att;
    }
    op_update(s, full, src, key, newkey, vals, unchanged, o);
}

static void gen_op(uint64_t *x, const gencfg *cfg, const shape *s, bool full, source *src, op *o)
{
    int r = rnd(x, 100);
    if (r < cfg->truncate_pct + cfg->flush_pct) {
        *o = (op){.kind = r < cfg->truncate_pct ? 'T' : 'F'};
        if (o->kind == 'T')
            memset(src->present, 0, sizeof(bool) * (size_t)src->nkeys);
        return;
    }
    int key = rnd(x, src->nkeys);
    if (!src->present[key]) {
        tval vals[NATTS];
        for (int att = 0; att < NATTS; att++)
            vals[att] = gen_val(x, att);
        op_insert(s, src, key, vals, o);
        if (!cfg->fold_only)
            textify(x, o->nw, 10);
        return;
    }
    r = rnd(x, 10);
    if (r >= 7) {
        op_delete(s, full, src, key, o);
        if (!cfg->fold_only)
            textify(x, o->old, 20);
        return;
    }
    int newkey = key;
    if (r >= 5 && !cfg->fold_only) /* a key change, to an absent key if there is one */
        for (int i = 0, k = rnd(x, src->nkeys); i < src->nkeys; i++, k = (k + 1) % src->nkeys)
            if (!src->present[k]) {
                newkey = k;
                break;
            }
    gen_update(x, s, full, src, key, newkey, o);
    if (cfg->fold_only)
        return;
    textify(x, o->nw, 10);
    if (o->has_old)
        textify(x, o->old, 20);
}

/* A random case: a random starting table and nops valid changes. */
static void gen_case(uint64_t *x, const gencfg *cfg, scase *c, source *final)
{
    c->s = &shapes[rnd(x, 2)];
    c->full = rnd(x, 3) == 0;
    src_init(&c->init, cfg->nkeys);
    for (int k = 0; k < cfg->nkeys; k++)
        if (rnd(x, 2)) {
            tval vals[NATTS];
            for (int att = 0; att < NATTS; att++)
                vals[att] = gen_val(x, att);
            src_put(c->s, &c->init, k, vals);
        }
    src_copy(final, &c->init);
    c->nops = cfg->nops;
    c->ops = calloc((size_t)c->nops, sizeof(op));
    assert_non_null(c->ops);
    for (int i = 0; i < c->nops; i++)
        gen_op(x, cfg, c->s, c->full, final, &c->ops[i]);
}

/* ---- running a case ---- */

static void table_from_source(const source *src, table *t)
{
    t->n = 0;
    for (int k = 0; k < src->nkeys; k++)
        if (src->present[k]) {
            tval *row = table_add(t);
            for (int att = 0; att < NATTS; att++)
                row[att_tcol(att)] = src_row(src, k)[att];
        }
}

static bool tables_equal(const table *a, const table *b)
{
    if (a->n != b->n)
        return false;
    for (int i = 0; i < a->n; i++) {
        bool found = false;
        for (int j = 0; j < b->n && !found; j++) {
            found = true;
            for (int c = 0; c < NTCOLS && found; c++)
                found = tval_eq(&row_at(a, i)[c], &row_at(b, j)[c]);
        }
        if (!found)
            return false;
    }
    return true;
}

static void print_val(char kind, const tval *v, int att)
{
    if (kind == 'u') {
        fprintf(stderr, "(unchanged toast)");
    } else if (kind == 'n' || v->len < 0) {
        fprintf(stderr, "NULL");
    } else if (att == A_BIG) {
        fprintf(stderr, "'%.*s'", (int)v->len, (const char *)v->b);
    } else {
        uint32_t u =
            (uint32_t)v->b[0] << 24 | (uint32_t)v->b[1] << 16 | (uint32_t)v->b[2] << 8 | v->b[3];
        fprintf(stderr, "%u", u);
    }
    if (kind == 't')
        fprintf(stderr, "(text)");
}

static void print_tuple(const char *what, const tcol *c)
{
    fprintf(stderr, " %s(", what);
    for (int att = 0; att < NATTS; att++) {
        fprintf(stderr, "%s%s=", att ? " " : "", att_name[att]);
        print_val(c[att].kind, &c[att].v, att);
    }
    fprintf(stderr, ")");
}

static void print_table(const char *name, const table *t)
{
    fprintf(stderr, "  %s: %d rows\n", name, t->n);
    for (int r = 0; r < t->n && r < 200; r++) {
        fprintf(stderr, "    (");
        for (int att = 0; att < NATTS; att++) {
            fprintf(stderr, "%s%s=", att ? " " : "", att_name[att]);
            const tval *v = &row_at(t, r)[att_tcol(att)];
            print_val('b', v, att);
        }
        fprintf(stderr, ")\n");
    }
}

static void print_ops(const scase *c, int failed_at)
{
    fprintf(stderr, "  changes:\n");
    for (int i = 0; i < c->nops && i < 400; i++) {
        const op *o = &c->ops[i];
        fprintf(stderr, "  %s%3d: %c", i == failed_at ? "=>" : "  ", i, o->kind);
        if (o->kind == 'F' || o->kind == 'T') {
            fprintf(stderr, o->kind == 'F' ? " (flush point)\n" : " (truncate)\n");
            continue;
        }
        if (o->newkey != o->key)
            fprintf(stderr, " key %d -> %d", o->key, o->newkey);
        else
            fprintf(stderr, " key %d", o->key);
        if (o->has_new)
            print_tuple("new", o->nw);
        if (o->has_old)
            print_tuple("old", o->old);
        fprintf(stderr, "\n");
    }
    if (c->nops > 400)
        fprintf(stderr, "  ... %d more\n", c->nops - 400);
}

/* Applies the case both ways; on a difference prints it all and fails. */
static void run_case(const scase *c, fold *f, const source *final, const char *label)
{
    table ref = {0}, got = {0}, want = {0};
    table_from_source(&c->init, &ref);
    table_from_source(&c->init, &got);
    table_from_source(final, &want);
    fold_reset(f); /* as after a rolled-back batch */
    char err[256] = "";
    const char *what = NULL;
    int at = -1;
    for (int i = 0; i < c->nops && !what; i++)
        if (!ref_apply(c->s, &ref, &c->ops[i], err, sizeof err)) {
            what = "the reference applier failed (test bug)";
            at = i;
        }
    for (int i = 0; i < c->nops && !what; i++)
        if (!folded_apply(c->s, f, &got, &c->ops[i], err, sizeof err)) {
            what = "the folded applier failed";
            at = i;
        }
    /* The batch's COMMIT flushes what is still folded. */
    if (!what && !flush_fold(c->s, f, &got, err, sizeof err))
        what = "the folded applier failed at the final flush";
    if (!what && !tables_equal(&ref, &want))
        what = "the reference table differs from the source (test bug)";
    if (!what && !tables_equal(&ref, &got))
        what = "the folded result differs from applying the changes in order";
    if (what) {
        fprintf(stderr, "fold property failed: %s\n  %s%s%s; %s, replica identity %s\n", label,
                what, err[0] ? ": " : "", err, c->s->name, c->full ? "full" : "default");
        table start = {0};
        table_from_source(&c->init, &start);
        print_table("starting table", &start);
        free(start.rows);
        print_ops(c, at);
        print_table("in order (reference)", &ref);
        print_table("folded", &got);
    }
    free(ref.rows);
    free(got.rows);
    free(want.rows);
    if (what)
        fail_msg("%s (%s)", what, label);
}

static void case_free(scase *c, source *final)
{
    src_free(&c->init);
    src_free(final);
    free(c->ops);
}

/* ncases random cases from one seed; each case's generator is derived from
 * (seed, case number), so the label names what reproduces it. */
static void run_seed(uint64_t seed, int ncases, gencfg cfg, int maxops)
{
    fold folds[2];
    for (int i = 0; i < 2; i++)
        fold_init(&folds[i], NATTS, shapes[i].nmatch, shapes[i].match);
    for (int n = 0; n < ncases; n++) {
        uint64_t x = seed ^ (UINT64_C(0x2545f4914f6cdd1d) * (uint64_t)(n + 1));
        if (maxops > 0)
            cfg.nops = 1 + rnd(&x, maxops);
        scase c;
        source final;
        gen_case(&x, &cfg, &c, &final);
        char label[96];
        snprintf(label, sizeof label, "PGSHIFT_FOLD_SEED=%llu, case %d of %d",
                 (unsigned long long)seed, n, ncases);
        run_case(&c, &folds[c.s - shapes], &final, label);
        case_free(&c, &final);
    }
    for (int i = 0; i < 2; i++)
        fold_free(&folds[i]);
}

#define PROPERTY_CASES 400
static const gencfg small_keys = {.nkeys = 8, .flush_pct = 5, .truncate_pct = 1};

static void property_fixed_seeds(void **state)
{
    static const uint64_t seeds[] = {1, 2, 3, 42, UINT64_C(0xfeedfacecafebeef)};
    memset(&cov, 0, sizeof cov);
    for (size_t i = 0; i < sizeof seeds / sizeof seeds[0]; i++)
        run_seed(seeds[i], PROPERTY_CASES, small_keys, 40);
    fprintf(stderr,
            "rows flushed: %ld none, %ld insert, %ld update, %ld delete, %ld replace; %ld "
            "row by row; %ld partial UPDATEs, %ld key-only\n",
            cov.state[FOLD_NONE], cov.state[FOLD_INSERT], cov.state[FOLD_UPDATE],
            cov.state[FOLD_DELETE], cov.state[FOLD_REPLACE], cov.rowwise, cov.partial_updates,
            cov.key_only);
    for (int st = FOLD_NONE; st <= FOLD_REPLACE; st++)
        assert_true(cov.state[st] >= 100);
    assert_true(cov.rowwise >= 100);
    assert_true(cov.partial_updates >= 100);
    assert_true(cov.key_only >= 10);
}

/* PGSHIFT_FOLD_SEED=<number> replays a seed; "random" tries a new one. */
static void property_env_seed(void **state)
{
    const char *env = getenv("PGSHIFT_FOLD_SEED");
    if (env == NULL || env[0] == '\0')
        skip();
    uint64_t seed;
    if (strcmp(env, "random") == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        seed = (uint64_t)ts.tv_sec * 1000000007u ^ (uint64_t)ts.tv_nsec;
    } else {
        seed = strtoull(env, NULL, 0);
    }
    fprintf(stderr, "fold property: PGSHIFT_FOLD_SEED=%llu\n", (unsigned long long)seed);
    run_seed(seed, PROPERTY_CASES * 4, small_keys, 40);
}

/* Batches far past the fold's initial sizes (1024 rows, 64 kB of values):
 * its hash table and arena grow while rows are pending. */
static void property_big_batches(void **state)
{
    gencfg cfg = {.nkeys = 1200, .nops = 5000, .flush_pct = 0, .truncate_pct = 0};
    run_seed(7, 2, cfg, 0);
    cfg.flush_pct = 1;
    run_seed(8, 1, cfg, 0);
    /* Nothing row by row: one fold holds the whole batch, and grows. */
    uint64_t x = 9;
    cfg.flush_pct = 0;
    cfg.fold_only = true;
    scase c;
    source final;
    gen_case(&x, &cfg, &c, &final);
    fold f;
    fold_init(&f, NATTS, c.s->nmatch, c.s->match);
    run_case(&c, &f, &final, "big batch, seed 9");
    assert_true(f.tabcap > 1024);
    assert_true(f.arena_cap > 65536);
    fold_free(&f);
    case_free(&c, &final);
}

/* ---- targeted cases ---- */

typedef struct tcase {
    scase c;
    source final;
    op ops[16];
    fold f;
} tcase;

static void tc_begin(tcase *t, int shape_i, bool full)
{
    memset(t, 0, sizeof *t);
    t->c.s = &shapes[shape_i];
    t->c.full = full;
    t->c.ops = t->ops;
    src_init(&t->c.init, 8);
    fold_init(&t->f, NATTS, t->c.s->nmatch, t->c.s->match);
}

/* Values of the non-key columns; big NULL for SQL NULL. */
static const tval *vals3(tval *vals, uint32_t v, const char *big, uint32_t k2)
{
    vals[A_V] = be32(v);
    vals[A_K2] = be32(k2);
    vals[A_BIG] = (tval){-1, {0}};
    if (big) {
        vals[A_BIG].len = (int32_t)strlen(big);
        memcpy(vals[A_BIG].b, big, strlen(big));
    }
    vals[A_ID] = (tval){-1, {0}};
    return vals;
}

/* A row of the starting table (before tc_start). */
static void tc_row(tcase *t, int key, uint32_t v, const char *big)
{
    tval vals[NATTS];
    src_put(t->c.s, &t->c.init, key, vals3(vals, v, big, 0));
}

static void tc_start(tcase *t)
{
    src_copy(&t->final, &t->c.init);
}

static op *tc_op(tcase *t)
{
    assert_true(t->c.nops < 16);
    return &t->ops[t->c.nops++];
}

static void tc_insert(tcase *t, int key, uint32_t v, const char *big)
{
    tval vals[NATTS];
    op_insert(t->c.s, &t->final, key, vals3(vals, v, big, 0), tc_op(t));
}

static void tc_update(tcase *t, int key, int newkey, uint32_t v, const char *big,
                      unsigned unchanged)
{
    tval vals[NATTS];
    vals3(vals, v, big, 0);
    if (unchanged & (1u << A_BIG))
        vals[A_BIG] = src_row(&t->final, key)[A_BIG];
    if (unchanged & (1u << A_V))
        vals[A_V] = src_row(&t->final, key)[A_V];
    if (unchanged & (1u << A_K2))
        vals[A_K2] = src_row(&t->final, key)[A_K2];
    op_update(t->c.s, t->c.full, &t->final, key, newkey, vals, unchanged, tc_op(t));
}

static void tc_delete(tcase *t, int key)
{
    op_delete(t->c.s, t->c.full, &t->final, key, tc_op(t));
}

/* The pending state of key `key` in the fold (-1: no row for it). */
static int tc_state(const tcase *t, int key)
{
    tval kv[NATTS];
    key_vals(t->c.s, key, kv);
    for (int r = 0; r < t->f.nrows; r++) {
        bool same = true;
        for (int k = 0; k < t->c.s->nmatch && same; k++) {
            const fold_val *fv = &fold_row(&t->f, r)[t->c.s->match[k]];
            const tval *want = &kv[t->c.s->match[k]];
            same = fv->len == want->len &&
                   memcmp(t->f.arena + fv->off, want->b, (size_t)want->len) == 0;
        }
        if (same)
            return t->f.state[r];
    }
    return -1;
}

/* Folds the first n changes into t->f (onto a scratch table). */
static void tc_fold(tcase *t, int n)
{
    table scratch = {0};
    char err[256] = "";
    table_from_source(&t->c.init, &scratch);
    fold_reset(&t->f);
    for (int i = 0; i < n; i++)
        if (!folded_apply(t->c.s, &t->f, &scratch, &t->ops[i], err, sizeof err))
            fail_msg("change %d: %s", i, err);
    free(scratch.rows);
}

/* Runs the case both ways and compares; frees it. */
static void tc_end(tcase *t, const char *label)
{
    run_case(&t->c, &t->f, &t->final, label);
    fold_free(&t->f);
    src_free(&t->c.init);
    src_free(&t->final);
}

/* A row inserted and deleted in one batch leaves nothing to apply. */
static void insert_then_delete(void **state)
{
    for (int full = 0; full < 2; full++) {
        tcase t;
        tc_begin(&t, full, full);
        tc_row(&t, 1, 10, "x");
        tc_start(&t);
        tc_insert(&t, 3, 30, "abc");
        tc_delete(&t, 3);
        tc_fold(&t, 2);
        assert_int_equal(tc_state(&t, 3), FOLD_NONE);
        tc_end(&t, "insert then delete");

        /* ... and inserted again: a plain insert of the last values. */
        tc_begin(&t, full, full);
        tc_start(&t);
        tc_insert(&t, 3, 30, "abc");
        tc_update(&t, 3, 3, 31, NULL, 0);
        tc_delete(&t, 3);
        tc_insert(&t, 3, 32, "zz");
        tc_fold(&t, 4);
        assert_int_equal(tc_state(&t, 3), FOLD_INSERT);
        tc_end(&t, "insert, update, delete, insert");
    }
}

/* A row deleted and inserted again: delete, then insert (REPLACE). */
static void delete_then_insert(void **state)
{
    tcase t;
    tc_begin(&t, 0, false);
    tc_row(&t, 3, 30, "old");
    tc_start(&t);
    tc_delete(&t, 3);
    tc_insert(&t, 3, 31, "new");
    tc_fold(&t, 2);
    assert_int_equal(tc_state(&t, 3), FOLD_REPLACE);
    tc_end(&t, "delete then insert");

    /* Updated first, and deleted again at the end: gone. */
    tc_begin(&t, 1, true);
    tc_row(&t, 3, 30, "old");
    tc_start(&t);
    tc_update(&t, 3, 3, 29, "older", 0);
    tc_delete(&t, 3);
    tc_insert(&t, 3, 31, "new");
    tc_delete(&t, 3);
    tc_fold(&t, 4);
    assert_int_equal(tc_state(&t, 3), FOLD_DELETE);
    tc_end(&t, "update, delete, insert, delete");

    /* Re-inserted, then updated with its TOAST column unchanged: the
     * inserted value stays. */
    tc_begin(&t, 0, false);
    tc_row(&t, 3, 30, "old");
    tc_start(&t);
    tc_delete(&t, 3);
    tc_insert(&t, 3, 31, "new");
    tc_update(&t, 3, 3, 32, NULL, 1u << A_BIG);
    tc_fold(&t, 3);
    assert_int_equal(tc_state(&t, 3), FOLD_REPLACE);
    tc_end(&t, "delete, insert, update with unchanged TOAST");
}

/* Unchanged TOAST columns are not sent: the folded UPDATE must not set
 * them, and rows with different sent columns need different statements. */
static void unchanged_toast(void **state)
{
    tcase t;
    tc_begin(&t, 0, false);
    tc_row(&t, 1, 10, "keep me");
    tc_row(&t, 2, 20, "me too");
    tc_row(&t, 4, 40, "and me");
    tc_start(&t);
    tc_update(&t, 1, 1, 11, NULL, 1u << A_BIG);
    tc_update(&t, 2, 2, 21, "changed", 0);
    tc_update(&t, 2, 2, 22, NULL, 1u << A_BIG); /* keeps "changed" */
    /* Only the key sent (every other column unchanged): nothing to do. */
    tc_update(&t, 4, 4, 0, NULL, 1u << A_BIG | 1u << A_V | 1u << A_K2);
    tc_fold(&t, 4);
    assert_int_equal(tc_state(&t, 1), FOLD_UPDATE);
    assert_int_equal(tc_state(&t, 2), FOLD_UPDATE);
    assert_int_equal(tc_state(&t, 4), FOLD_UPDATE);
    tc_end(&t, "updates with unchanged TOAST columns");

    /* Inserted in the batch, then updated without its TOAST column. */
    tc_begin(&t, 1, false);
    tc_start(&t);
    tc_insert(&t, 5, 50, "inserted");
    tc_update(&t, 5, 5, 51, NULL, 1u << A_BIG);
    tc_fold(&t, 2);
    assert_int_equal(tc_state(&t, 5), FOLD_INSERT);
    tc_end(&t, "insert, update with unchanged TOAST");
}

/* A key change flushes the fold and goes row by row; what follows folds
 * again. */
static void key_change(void **state)
{
    for (int full = 0; full < 2; full++) {
        tcase t;
        tc_begin(&t, full, full);
        tc_row(&t, 1, 10, "one");
        tc_start(&t);
        tc_insert(&t, 3, 30, "three");
        tc_update(&t, 3, 5, 50, NULL, 1u << A_BIG);
        tc_update(&t, 5, 5, 51, "five", 0);
        tc_update(&t, 1, 3, 10, NULL, 1u << A_BIG);
        tc_delete(&t, 5);
        tc_fold(&t, 2);
        assert_int_equal(t.f.nrows, 0);
        tc_fold(&t, 5);
        assert_int_equal(tc_state(&t, 5), FOLD_DELETE);
        assert_int_equal(tc_state(&t, 3), -1);
        tc_end(&t, "key changes");
    }
}

/* Folds a change of key (k2, id n) under shape (k2, id); the id is 8 bytes
 * here, so that some ids collide in the 32-bit key hash. */
static void fold_key(fold *f, char op, uint32_t k2, uint32_t n)
{
    tval vals[NATTS];
    tcol c[NATTS];
    decode_col cols[NATTS];
    decode_tuple t;
    vals3(vals, n, "x", k2);
    tval lo = be32(n), hi = be32(n * 2654435761u);
    vals[A_ID].len = 8;
    memcpy(vals[A_ID].b, hi.b, 4);
    memcpy(vals[A_ID].b + 4, lo.b, 4);
    for (int att = 0; att < NATTS; att++)
        c[att] = sent(&vals[att]);
    to_tuple(c, cols, &t);
    char err[160];
    if (!fold_add(f, op, op == 'D' ? NULL : &t, &t, err, sizeof err))
        fail_msg("%c of (%u, #%u): %s", op, k2, n, err);
}

typedef struct hrow {
    uint32_t hash;
    uint32_t n;
} hrow;

static int hrow_cmp(const void *a, const void *b)
{
    const hrow *x = a, *y = b;
    return (x->hash > y->hash) - (x->hash < y->hash);
}

/* Keys whose hashes collide are still different keys. Colliding keys are
 * found with the real key_hash (read back from the fold's rows), among keys
 * that differ only in their second column. */
static void hash_collisions(void **state)
{
    enum { N = 300000, CHUNK = 10000 };
    fold f;
    fold_init(&f, NATTS, shapes[1].nmatch, shapes[1].match);
    hrow *h = malloc(sizeof(hrow) * N);
    assert_non_null(h);
    for (uint32_t n = 0; n < N; n++) {
        if (n % CHUNK == 0)
            fold_reset(&f);
        fold_key(&f, 'I', 7, n);
        h[n] = (hrow){f.hash[n % CHUNK], n}; /* the fold's newest row */
    }
    qsort(h, N, sizeof *h, hrow_cmp);
    int at = 0;
    for (int i = 1; i < N && at == 0; i++)
        if (h[i].hash == h[i - 1].hash)
            at = i;
    uint32_t a = h[at > 0 ? at - 1 : 0].n, b = h[at].n;
    free(h);
    if (at == 0)
        fail_msg("no two of %d keys share a hash: raise N", N);
    /* In one batch: an update of a, an insert of b, a delete of a. */
    fold_reset(&f);
    fold_key(&f, 'U', 7, a);
    fold_key(&f, 'I', 7, b);
    fold_key(&f, 'D', 7, a);
    assert_int_equal(f.nrows, 2);
    assert_int_equal(f.hash[0], f.hash[1]);
    assert_int_equal(f.state[0], FOLD_DELETE);
    assert_int_equal(f.state[1], FOLD_INSERT);
    fold_free(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(insert_then_delete),   cmocka_unit_test(delete_then_insert),
        cmocka_unit_test(unchanged_toast),      cmocka_unit_test(key_change),
        cmocka_unit_test(hash_collisions),      cmocka_unit_test(property_fixed_seeds),
        cmocka_unit_test(property_big_batches), cmocka_unit_test(property_env_seed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
