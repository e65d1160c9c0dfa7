/* colmap.h: a table's column mapping (the plan's `columns:`), resolved
 * against the source and the target.
 *
 * Every target column the copy and the apply write has an SQL expression
 * over the source row's columns: the plan's, or the same-named source
 * column. A table whose every written column is the same-named source
 * column of the same type is not "mapped" and runs exactly as before; a
 * mapped one has its expressions evaluated by the server: in the copy's
 * SELECT on the source, in the apply's statements on the target (over the
 * decoded values, set-based where the apply is), and in verify's source
 * side.
 */
#ifndef PGSHIFT_COLMAP_H
#define PGSHIFT_COLMAP_H

#include "pgshift/catalog.h"

#include <libpq-fe.h>
#include <stdbool.h>

/* One target column the copy and the apply write. */
typedef struct pgs_mcol {
    char *name;       /* the target column */
    char *expr;       /* SQL over the source row: the plan's expression, else the quoted
                         same-named source column */
    char *type;       /* the target column's type, format_type without typmod (for casts) */
    bool planned;     /* from the plan's `columns:` */
    bool converted;   /* not the same-named source column of the same type */
    bool notnull;     /* the target column is NOT NULL */
    pgs_strlist deps; /* the source columns the expression reads */
} pgs_mcol;

typedef struct pgs_colmap {
    bool mapped; /* some column is planned or converted */
    pgs_mcol *cols;
    int ncols;
    /* Per key column of the source (pgs_mtable.match), the target column
     * that holds it one to one: its index in cols. */
    int *key_col;
    pgs_strlist tkey;   /* the target key columns' names, in key order */
    pgs_strlist unused; /* source columns no target column reads (dropped) */
    char *error;        /* why the mapping cannot be used, or NULL */
} pgs_colmap;

struct pgs_mtable;

/* Resolves t->spec->columns against t->src and t->tgt (which must exist),
 * asking the target server to parse each expression over the source's
 * column types (prepared, never run: nothing changes) and the source which
 * columns it reads (a temporary view in a transaction rolled back; it
 * waits for a lock on the source that a cutover holds, so not while one
 * may). Fills t->map, and for a mapped table sets t->cols to the target
 * columns written. A mapping that cannot be used is not a failure: it sets
 * t->map.error (preflight blocks on it, run refuses). False only on a
 * connection or memory failure. */
bool colmap_resolve(PGconn *src, PGconn *tgt, struct pgs_mtable *t);
void colmap_free(pgs_colmap *cm);

/* The mapped column named `name`, or NULL. */
const pgs_mcol *colmap_col(const pgs_colmap *cm, const char *name);

/* The expression is column `name` itself, maybe cast: "name",
 * "name::type", "CAST(name AS type)" (name as the server knows it; the
 * expression's spelling may quote it). */
bool colmap_is_cast_of(const char *expr, const char *name);

/* The mapped column that holds source column `src` as it is (the same
 * value, maybe another type), preferring one of the same name: for the
 * views and the reverse direction. NULL when the mapping changes or drops
 * it. */
const pgs_mcol *colmap_carrier(const pgs_colmap *cm, const char *src);

/* "SELECT list" of a mapped table for the source side: each expression
 * cast to its target column's type, `prefix` put before nothing (the
 * expressions name columns bare); malloc'd, NULL on failure. */
char *colmap_select_list(const pgs_colmap *cm);

#endif
