/* apply_int.h (internal to src/apply): the applier's state, shared by its
 * files:
 *   apply.c     the public lifecycle and the message dispatch
 *   batch.c     target transactions: open, commit (deferred), roll back
 *   pipeline.c  the libpq pipeline: pending results, syncs, the socket
 *   change.c    one insert/update/delete: folded, or row by row
 *   setbased.c  folded changes -> set-based statements over unnest()
 *   stmt.c      the per-relation prepared-statement cache
 *   relmap.c    Relation messages -> checked mappings onto the target
 *   sqlgen.c    statement text (pure)
 *   durable.c   which applied LSN is durable on the target (pure)
 *   fold.c      changes folded per key (pure)
 */
#ifndef PGSHIFT_APPLY_INT_H
#define PGSHIFT_APPLY_INT_H

#include "pgshift/apply.h"

#include "durable.h"
#include "fold.h"
#include "sqlgen.h"

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Statements between two pipeline syncs; at most two such segments are in
 * flight, which bounds what either side buffers. */
#define SYNC_EVERY 400
/* Folded rows (all tables) and bytes held before they are applied. */
#define FOLD_MAX_ROWS  20000
#define FOLD_MAX_BYTES (32u << 20)

typedef struct stmt {
    char op;       /* row: 'I' 'U' 'D'; set-based: 'i' 'u' 'd' */
    uint8_t *mask; /* one byte per relation attribute: 1 = column sent */
    char name[24];
    struct stmt *next;
} stmt;

typedef struct rel {
    uint32_t relid;
    decode_relation *sent; /* the Relation message it was built from */
    pgs_mtable *t;
    int natts;
    char **names; /* quoted target column names, in relation attribute order */
    int *match;   /* relation attribute index of each match column */
    int nmatch;
    bool whole_row;    /* no key: match is every attribute (sqlgen_rel) */
    char **text_types; /* whole_row: per attribute, NULL or the type compared as text */
    stmt *stmts;
    /* set-based apply (fold.h): only for targets where reordering changes
     * within a batch cannot trip a constraint */
    bool setbased;
    fold_rowtype rowtype; /* the target's row type, for unnest($1::target[]) */
    uint32_t *col_oids;   /* per target column */
    int *col_att;         /* per target column: relation attribute, or -1 */
    fold fold;
    /* A mapped table (colmap.h): names are the source's attributes, and
     * the statements compute the target's columns from them (sqlgen_map). */
    bool mapped;
    char **atypes;      /* per attribute: its type as the target names it */
    uint32_t *aoids;    /* per attribute: its type OID (array elements) */
    char **cnames;      /* per mapped target column, quoted */
    char **cexprs;      /* per mapped target column */
    char **ctext_types; /* whole row: per column, NULL or the type compared as text */
    uint8_t *deps;      /* ncols x natts */
    int *kcol;          /* per key column: the target column */
    int ncols;
    /* set-based, the target in the source's database: the rows as one
     * array of the source table's own row type (rowtype.oid its reltype),
     * whose columns are rnames; else one array per attribute */
    bool srcrow;
    bool oid_differs; /* a source type has another OID on the target */
    char **rnames;
    int nrnames;
    struct rel *next;
} rel;

static inline sqlgen_map rel_map(const rel *r)
{
    return (sqlgen_map){r->t->tgt.qname,
                        r->natts,
                        r->names,
                        r->atypes,
                        r->ncols,
                        r->cnames,
                        r->cexprs,
                        r->deps,
                        r->match,
                        r->kcol,
                        r->nmatch,
                        r->whole_row,
                        (const char *const *)r->ctext_types,
                        r->srcrow ? r->t->src.qname : NULL,
                        r->rnames,
                        r->nrnames};
}

/* What the statement generator needs to know of a relation. */
static inline sqlgen_rel rel_shape(const rel *r)
{
    return (sqlgen_rel){r->t->tgt.qname,
                        r->natts,
                        r->names,
                        r->match,
                        r->nmatch,
                        r->whole_row,
                        (const char *const *)r->text_types};
}

typedef struct inflight {
    pgs_lsn end_lsn;
    pgs_timestamp commit_time;
    long xacts;
    long changes;
    long *table_changes;
    bool sync; /* committed with synchronous_commit local: flushed when it returns */
} inflight;

/* What each in-flight pipeline result belongs to. */
/* mapdiag.c: a mapped statement's inputs, kept until its result is in,
 * to name the row and column that failed. */
typedef struct mapdiag mapdiag;
mapdiag *mapdiag_new(const rel *r, char op, const uint8_t *mask, const int *cols, int ncols,
                     long nrows, int nparams, const char *const *values, const int *lengths,
                     const int *formats);
void mapdiag_free(mapdiag *d);
/* Logs the first row and column whose expression fails (on connection c,
 * not the applier's). */
void mapdiag_explain(PGconn *c, const mapdiag *d, const char *lsn);

typedef struct pending {
    char op; /* 'I' 'U' 'D' 'i' 'u' 'd', 'T' truncate, 'X' other SQL, 'P' prepare,
                'c' COMMIT, 'L' the WAL position after it (completes a batch), 'S' sync */
    pgs_mtable *t;
    mapdiag *diag; /* a mapped statement's inputs, or NULL */
} pending;

struct apply_ctx {
    pgs_migration *m;
    PGconn *conn;
    bool origin; /* the session runs under a replication origin (16+) */
    /* After each batch's COMMIT, with an origin: the target's WAL insert
     * position, then (a later snapshot) the replication origins other than
     * pgshift's. No other origin: changes made under one created later lie
     * past that position (origin_clean). */
    pgs_lsn origin_pending, origin_clean;
    char *foreign_origins; /* other origins seen, or NULL */
    rel *rels;
    int nstmts;

    pending *q;
    size_t qcap, qhead, qlen;
    int since_sync;
    int syncs;
    bool failed;

    bool in_xact;
    bool skipping;
    bool xact_changed; /* the source transaction in progress had a change to apply */
    bool batch_open;
    pgs_lsn xact_final_lsn;
    pgs_lsn batch_end_lsn;
    pgs_timestamp batch_commit_time;
    long batch_changes;
    long batch_xacts;
    double batch_started_ms;
    long *table_changes; /* per plan table, in the open batch */

    const char **values;
    int *lengths;
    int *formats;
    size_t pcap;
    char *text;
    size_t textcap;

    /* Committed batches not yet known flushed on the target. */
    durable durable;
    /* Batches sent with their COMMIT but not yet confirmed (at most 2). */
    inflight inflight[3];
    int ninflight;
    pgs_lsn chain_lsn; /* end LSN of the last batch sent: the next one chains to it */

    bool unsent;        /* libpq holds output the socket did not take yet */
    bool commit_wanted; /* a commit asked for while the previous batch was in flight */
    bool commit_wanted_sync;
    bool probing; /* a flush-position probe is in flight */

    mapdiag *next_diag; /* given to the next statement pipe_sent queues */
    long folded;        /* rows pending in all folds */
    char *abuf;         /* the set-based parameter: an array of target records */
    size_t abuf_cap;

    apply_stats stats;
};

/* pipeline.c: every statement sent goes through pipe_sent (or
 * pipe_send_sql), which queues what its result belongs to. */
bool pipe_push(apply_ctx *a, char op, pgs_mtable *t);
const char *pipe_op_name(char op);
bool pipe_push_out(apply_ctx *a);
bool pipe_consume(apply_ctx *a);
bool pipe_sync(apply_ctx *a);
bool pipe_sent(apply_ctx *a, int ok, char op, pgs_mtable *t);
bool pipe_send_sql(apply_ctx *a, const char *sql, int n, const char *const *params);

/* batch.c */
bool batch_begin(apply_ctx *a);
/* flush_lsn: the target's, or its synchronized standbys' when lower
 * (standby_capped). */
void batch_done(apply_ctx *a, pgs_lsn insert_lsn, pgs_lsn flush_lsn, bool standby_capped);
void batch_commit_deferred(apply_ctx *a);

/* change.c: an insert, update or delete; `keytup` holds the row's identity
 * (old tuple, or the new tuple when no old one was sent). */
bool change_apply(apply_ctx *a, char op, uint32_t relid, const decode_tuple *newtup,
                  const decode_tuple *keytup);

/* setbased.c */
bool folds_flush(apply_ctx *a);
void folds_discard(apply_ctx *a);

/* stmt.c */
stmt *stmt_get(apply_ctx *a, rel *r, char op, const uint8_t *mask, const int *cols, int ncols);

/* relmap.c */
bool relmap_on_relation(apply_ctx *a, const decode_relation *dr);
rel *relmap_find(apply_ctx *a, uint32_t relid);
void relmap_free_rel(rel *r);

#endif
