/* parallel.c: independent statements on several connections at once (the
 * index builds and SET LOGGED of the partitions of a target pgshift
 * created), and the replication origins of worker sessions (these and the
 * copy's). Each worker thread opens its own connection, optionally runs it
 * under an origin of its own (so that on 16+ the walsender drops what it
 * writes unread), and takes the next statement until none is left or one
 * failed. */
#include "pgshift/parallel.h"

#include "pgshift/log.h"
#include "pgshift/pg.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_WORKERS 16

typedef struct par_shared {
    const pgs_par_job *job;
    char *const *stmts;
    int n, next;
    bool failed;
    pthread_mutex_t mu;
    pgs_origin_pool origins;
} par_shared;

void origin_pool_init(pgs_origin_pool *p, const char *prefix, const char *what)
{
    *p = (pgs_origin_pool){.prefix = prefix, .what = what};
    pthread_mutex_init(&p->mu, NULL);
}

void origin_pool_destroy(pgs_origin_pool *p)
{
    pthread_mutex_destroy(&p->mu);
}

bool origin_pool_enter(pgs_origin_pool *p, PGconn *c, char name[128])
{
    if (p->prefix == NULL || PQserverVersion(c) < 160000)
        return false;
    pthread_mutex_lock(&p->mu);
    int k = ++p->taken;
    pthread_mutex_unlock(&p->mu);
    snprintf(name, 128, "%s%d", p->prefix, k);
    char why[512];
    if (pg_origin_session(c, name, why, sizeof why))
        return true;
    pthread_mutex_lock(&p->mu);
    bool first = !p->refused;
    p->refused = true;
    pthread_mutex_unlock(&p->mu);
    if (first)
        log_info("%s: no replication origin (%s); the walsender will decode what it writes "
                 "before it reaches the changes made since, which costs time, not correctness",
                 p->what, why);
    return false;
}

void origin_pool_leave(pgs_origin_pool *p, PGconn *c, const char *name)
{
    char why[512];
    if (!pg_origin_session_end(c, name, why, sizeof why))
        log_warn("%s: could not drop replication origin %s (%s); cleanup drops it", p->what, name,
                 why);
}

/* The next statement, or -1 when none is left or one failed. */
static int take(par_shared *s)
{
    pthread_mutex_lock(&s->mu);
    int i = (!s->failed && s->next < s->n) ? s->next++ : -1;
    pthread_mutex_unlock(&s->mu);
    return i;
}

static void fail(par_shared *s)
{
    pthread_mutex_lock(&s->mu);
    s->failed = true;
    pthread_mutex_unlock(&s->mu);
}

static void *worker(void *arg)
{
    par_shared *s = arg;
    const pgs_par_job *j = s->job;
    PGconn *c = pg_connect(j->conninfo, j->what, false);
    if (c == NULL || (j->setup && !pg_exec(c, j->what, j->setup))) {
        fail(s);
        if (c)
            PQfinish(c);
        return NULL;
    }
    char origin[128];
    bool has_origin = origin_pool_enter(&s->origins, c, origin);
    for (int i; (i = take(s)) >= 0;)
        if (!pg_exec(c, j->what, s->stmts[i]))
            fail(s);
    if (has_origin)
        origin_pool_leave(&s->origins, c, origin);
    PQfinish(c);
    return NULL;
}

bool pg_parallel_exec(const pgs_par_job *job, char *const *stmts, int n)
{
    if (n <= 0)
        return true;
    par_shared s = {.job = job, .stmts = stmts, .n = n};
    pthread_mutex_init(&s.mu, NULL);
    origin_pool_init(&s.origins, job->origin_prefix, job->what);
    int workers = job->workers < 1 ? 1 : job->workers;
    if (workers > MAX_WORKERS)
        workers = MAX_WORKERS;
    if (workers > n)
        workers = n;
    pthread_t th[MAX_WORKERS];
    int started = 0;
    for (; started < workers; started++)
        if (pthread_create(&th[started], NULL, worker, &s) != 0)
            break;
    if (started == 0) {
        log_error("%s: cannot start a worker thread", job->what);
        s.failed = true;
    }
    for (int i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    pthread_mutex_destroy(&s.mu);
    origin_pool_destroy(&s.origins);
    return !s.failed;
}
