/* prepare_int.h: what prepare.c shares with shadow.c (not part of the API). */
#ifndef PGSHIFT_PREPARE_INT_H
#define PGSHIFT_PREPARE_INT_H

#include "pgshift/migration.h"

#include <libpq-fe.h>
#include <stdbool.h>

/* A monotonic clock in seconds. */
double now_s(void);

/* Runs one statement made from a format; logged at debug with its time. */
bool exec_fmt(PGconn *conn, const char *what, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A growable list of malloc'd statements. */
typedef struct stmt_list {
    char **v;
    int n, cap;
} stmt_list;

bool stmt_add(stmt_list *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void stmt_free(stmt_list *l);
/* Appends `parts` to `l` as one string, "a; b; c" (one implicit transaction
 * when sent as one query), and empties `parts`. */
bool stmt_join(stmt_list *l, stmt_list *parts);

/* The partitions a range spec makes: rows of (name suffix, or with `pmq`
 * pg_partman's whole name; lower bound; upper bound), or NULL (said). */
PGresult *prepare_partition_bounds(pgs_migration *m, pgs_mtable *t, const pgs_partition_spec *sp,
                                   const char *col, const pgs_column *c, const char *pmq);

/* Runs the statements on up to copy.workers connections of the target's
 * database (in the source's database on 16+ under origins <slot>_copy<N>,
 * so the walsender drops what they write unread, like the copy's rows). */
bool run_parallel(pgs_migration *m, const char *what, const char *setup, stmt_list *l);

/* run_parallel() for index-building jobs (one partition's indexes each).
 * When there are at least as many jobs as connections, each job's sorts
 * run in its own backend, without parallel maintenance workers: the jobs
 * already keep a core per connection busy, and on 2 cores with 2 jobs the
 * workers made 26 partitions' builds take 7.3-7.6 s instead of 4.6-5.0 s
 * (15, 1M rows). One big table or partition keeps the server's default. */
bool run_index_jobs(pgs_migration *m, stmt_list *l);

/* One index of the source, as a target pgshift creates gets it: built as
 * it is, a key or unique constraint with the partition columns it lacks
 * appended (`missing`: a partitioned table's unique keys must contain
 * them), or not built (`why`). Strings point into the PGresult. */
typedef struct src_index {
    enum { IX_SKIP, IX_PRIMARY, IX_UNIQUE, IX_INDEX } kind;
    bool unique, constraint;
    const char *name;        /* the index's name */
    const char *cols, *rest; /* key columns (quoted); "btree (...)" etc. */
    const char *missing;     /* partition columns not among them, quoted, or "" */
    const char *why;         /* IX_SKIP: why */
} src_index;

/* The source's indexes (one row each) and index i of them. */
PGresult *source_indexes(pgs_migration *m, const pgs_mtable *t);
src_index source_index(const PGresult *res, int i);

/* shadow.c: the copy into an operator-made partitioned target without its
 * indexes. shadow_prepare() drops what an interrupted run left and, when
 * every leaf of the target can be swapped, makes the shadow and points
 * t->copy_into at it; shadow_finish() builds the target's indexes on the
 * shadow's leaves and swaps them in for the target's empty leaves in one
 * transaction. */
bool shadow_prepare(pgs_migration *m, pgs_mtable *t);
bool shadow_finish(pgs_migration *m, pgs_mtable *t);

#endif
