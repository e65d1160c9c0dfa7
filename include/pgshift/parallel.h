/* parallel.h: independent statements on several connections at once. */
#ifndef PGSHIFT_PARALLEL_H
#define PGSHIFT_PARALLEL_H

#include <libpq-fe.h>
#include <pthread.h>
#include <stdbool.h>

/* Replication origins for the worker sessions of one job (16+): each
 * session that enters gets <prefix><N> (an origin is active in one session
 * at a time), so the walsender's origin 'none' drops what it writes
 * unread. A refusal (no privilege) is logged once, and the job goes on
 * without origins. */
typedef struct pgs_origin_pool {
    pthread_mutex_t mu;
    const char *prefix; /* NULL: no origins wanted */
    const char *what;   /* for the messages */
    int taken;
    bool refused;
} pgs_origin_pool;

void origin_pool_init(pgs_origin_pool *p, const char *prefix, const char *what);
void origin_pool_destroy(pgs_origin_pool *p);
/* Runs `c` under the next origin (its name into `name`); false when it
 * does not (none wanted, before 16, or refused). */
bool origin_pool_enter(pgs_origin_pool *p, PGconn *c, char name[128]);
/* Ends the session's origin and drops it (a failure is logged: cleanup
 * drops it later). */
void origin_pool_leave(pgs_origin_pool *p, PGconn *c, const char *name);

typedef struct pgs_par_job {
    const char *conninfo;
    const char *what;          /* for connection and error messages */
    const char *setup;         /* run first on each connection, or NULL */
    const char *origin_prefix; /* 16+: each worker under origin <prefix><N>, or NULL */
    int workers;
} pgs_par_job;

/* Runs the n statements (each its own transaction, in no set order) on up
 * to job->workers connections; stops handing them out after a failure
 * (logged). True when all succeeded. */
bool pg_parallel_exec(const pgs_par_job *job, char *const *stmts, int n);

#endif
