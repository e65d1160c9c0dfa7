/* fold.h (internal to src/apply): the pending changes of one target table
 * folded to their net effect per key, for set-based apply.
 *
 * Each key ends in one state: INSERT (full row), UPDATE (the columns sent,
 * merged over several updates), DELETE, REPLACE (delete of a row that
 * existed, then insert of a full row), or NONE (inserted and deleted inside
 * the batch). Applying all DELETE/REPLACE deletes, then INSERT/REPLACE
 * inserts, then UPDATEs gives the same table as applying the changes one by
 * one, provided no update changed the key (the caller flushes and applies
 * key changes row by row) and no other unique constraint or foreign key of
 * the target sees the intermediate states (the caller only folds for
 * targets without them).
 *
 * Values are copied into the fold's arena; they live until fold_reset().
 */
#ifndef PGSHIFT_APPLY_FOLD_H
#define PGSHIFT_APPLY_FOLD_H

#include "pgshift/decode.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum {
    FOLD_NONE = 0,
    FOLD_INSERT,
    FOLD_UPDATE,
    FOLD_DELETE,
    FOLD_REPLACE,
};

/* A value: len >= 0 bytes at arena offset, FOLD_NULL, or FOLD_UNSENT. */
#define FOLD_NULL   (-1)
#define FOLD_UNSENT (-2)

typedef struct fold_val {
    int32_t len;
    uint32_t off;
} fold_val;

typedef struct fold {
    int natts;
    int nmatch;
    const int *match; /* attribute index of each key column (not owned) */
    int nrows;
    int caprows;
    uint8_t *state;  /* per row */
    fold_val *vals;  /* nrows x natts */
    uint32_t *hash;  /* per row */
    uint32_t *table; /* open addressing: row index + 1, 0 = empty */
    uint32_t tabcap; /* power of two */
    char *arena;
    size_t arena_len;
    size_t arena_cap;
} fold;

void fold_init(fold *f, int natts, int nmatch, const int *match);
void fold_free(fold *f);
void fold_reset(fold *f);

/* Folds one change in. op is 'I', 'U' or 'D'; newtup is NULL for 'D';
 * keytup holds the row's key (the old tuple, or newtup). Every column must
 * be binary, NULL or unchanged (the caller checks with fold_accepts).
 * False with a message in err when the change contradicts what is pending
 * (insert of a key already present, update or delete of a deleted key) or
 * on malloc failure. */
bool fold_add(fold *f, char op, const decode_tuple *newtup, const decode_tuple *keytup, char *err,
              size_t errlen);

/* True when every column of the tuple is binary, NULL or unchanged. */
bool fold_accepts(const decode_tuple *t);

/* True when the key columns of `a` and `b` hold the same bytes. */
bool fold_same_key(const fold *f, const decode_tuple *a, const decode_tuple *b);

/* Bytes held (for flush decisions). */
static inline size_t fold_bytes(const fold *f)
{
    return f->arena_len + (size_t)f->nrows * (size_t)f->natts * sizeof(fold_val);
}

static inline const fold_val *fold_row(const fold *f, int row)
{
    return &f->vals[(size_t)row * (size_t)f->natts];
}

/* Selects rows for fold_build_array. */
typedef bool (*fold_pick)(const fold *f, int row, const void *arg);

/* The target's row type: for each of its columns (in attribute order) the
 * type OID and the fold attribute that fills it (-1: always NULL). */
typedef struct fold_rowtype {
    uint32_t oid; /* pg_class.reltype of the target */
    int ncols;
    const uint32_t *col_oids;
    const int *col_att;
} fold_rowtype;

/* Writes into *buf (growing it; *len is set) a one-dimensional binary array
 * (array_send) of target-row-type records (record_send) holding the rows
 * `want` picks; unsent values are NULL fields. */
bool fold_build_records(const fold *f, const fold_rowtype *rt, fold_pick want, const void *arg,
                        char **buf, size_t *len, size_t *cap);

/* The same rows' values of one attribute as a one-dimensional binary array
 * of `elem_oid` (unsent values are NULL): for a mapped relation, whose
 * statements unnest() one array per source attribute. */
bool fold_build_column(const fold *f, int att, uint32_t elem_oid, fold_pick want, const void *arg,
                       char **buf, size_t *len, size_t *cap);

#endif
