/* parallel.h: independent statements on several connections at once. */
#ifndef PGSHIFT_PARALLEL_H
#define PGSHIFT_PARALLEL_H

#include <stdbool.h>

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
