/* reverse.c: the rollback window (plan `rollback: {window}`).
 *
 * Before the forward cutover's first lock, the forward run makes
 * publication and slot pgshiftr_<name> on the new tables, on a connection
 * of its own without waiting on the loop (reverse_slot_ready: a cutover
 * attempt does not start until they are there). The swap starts the
 * reverse stream's state row "<name>/reverse" at the WAL position inside its
 * own transaction (rollback.c): every forward write committed before it,
 * every write of the application to the new tables commits after it.
 *
 * After the swap, reverse_run runs the same engine on the reverse
 * migration: source the live (new) table, target <t>_old, from that row.
 * It stops when the window ends (the reverse slot, publication and row are
 * dropped, the phase becomes `done`), on `pgshift cleanup` (which drops
 * them), or after `pgshift rollback`, which is the cutover's own code on
 * the reverse migration: the swap renames the live table back to the
 * target's name and <t>_old to <t>, and writes `rolled_back` in its
 * transaction. */
#include "engine.h"

#include "pgshift/cli.h"
#include "pgshift/cutover.h"
#include "pgshift/log.h"
#include "pgshift/pg.h"
#include "pgshift/prepare.h"
#include "pgshift/rollback.h"
#include "pgshift/run.h"
#include "pgshift/state.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- on the forward run: publication and slot before the first lock ---- */

enum { RQ_NONE, RQ_LOOK, RQ_PUB, RQ_SLOT, RQ_READY, RQ_RETRY };

static void rq_fail(engine *e, const char *what)
{
    log_warn("rollback window: %s; the cutover waits, and this is tried again in 5 s", what);
    aquery_close(e->rq);
    e->rq = NULL;
    e->rq_step = RQ_RETRY;
    e->rq_retry_ms = engine_now_ms() + 5000;
}

static void on_rq(void *arg, const PGresult *res)
{
    engine *e = arg;
    char name[64];
    rollback_slot_name(e->m->plan->name, name, sizeof name);
    if (res == NULL) {
        rq_fail(e, "making the reverse publication or slot failed (see the log)");
        return;
    }
    if (e->rq_step == RQ_LOOK) {
        bool pub = atoi(PQgetvalue(res, 0, 0)) > 0;
        e->rq_have_slot = atoi(PQgetvalue(res, 0, 1)) > 0;
        char *sql = rollback_publication_sql(e->m->src, e->m, pub);
        e->rq_step = RQ_PUB;
        if (sql == NULL || !aquery_send(e->rq, sql, 0, NULL, on_rq, e))
            rq_fail(e, "cannot send the publication statement");
        free(sql);
        return;
    }
    if (e->rq_step == RQ_PUB && !e->rq_have_slot) {
        /* It waits for the transactions running on the server to end;
         * the loop goes on meanwhile (the applier's batches among them). */
        e->rq_step = RQ_SLOT;
        e->rq_since_ms = engine_now_ms();
        /* FAILOVER on 17+, as the forward slot: a standby that syncs
         * slots keeps the window across a failover. */
        bool failover = PQserverVersion(e->m->src) >= 170000;
        if (!aquery_send(e->rq,
                         failover
                             ? "SELECT pg_create_logical_replication_slot($1, 'pgoutput', false, "
                               "false, true)"
                             : "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
                         1, (const char *[]){name}, on_rq, e))
            rq_fail(e, "cannot send the slot statement");
        return;
    }
    if (e->rq_step == RQ_SLOT)
        log_info("rollback window: slot %s made in %.0f ms", name,
                 engine_now_ms() - e->rq_since_ms);
    else
        log_info("rollback window: slot %s is there from an earlier attempt", name);
    e->rq_step = RQ_READY;
    aquery_close(e->rq);
    e->rq = NULL;
}

bool reverse_slot_ready(engine *e)
{
    pgs_migration *m = e->m;
    if (m->reverse || m->plan->rollback.window_ms <= 0 || e->rq_step == RQ_READY)
        return true;
    double now = engine_now_ms();
    if (e->rq_step == RQ_NONE || (e->rq_step == RQ_RETRY && now >= e->rq_retry_ms)) {
        char name[64];
        rollback_slot_name(m->plan->name, name, sizeof name);
        PGconn *conn = pg_connect(m->plan->source, "source (rollback window)", false);
        e->rq = conn ? aquery_open(&e->loop, conn, "making the rollback window's slot") : NULL;
        e->rq_step = RQ_LOOK;
        if (e->rq == NULL ||
            !aquery_send(e->rq,
                         "SELECT (SELECT count(*) FROM pg_publication WHERE pubname = $1),"
                         " (SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1)",
                         1, (const char *[]){name}, on_rq, e)) {
            rq_fail(e, "cannot reach the source");
            return false;
        }
        log_info("rollback window (%d s): making publication and slot %s on the new tables "
                 "before the cutover's first lock",
                 m->plan->rollback.window_ms / 1000, name);
    } else if (e->rq_step == RQ_SLOT && now - e->rq_since_ms > 10000 &&
               now - e->rq_logged_ms > 10000) {
        e->rq_logged_ms = now;
        log_info("rollback window: the slot waits %.0f s for transactions running on the server "
                 "to end (the cutover waits with it)",
                 (now - e->rq_since_ms) / 1000.0);
    }
    return false;
}

void reverse_engine_close(engine *e)
{
    aquery_close(e->rq);
    e->rq = NULL;
}

/* ---- on the reverse run: the end of the window ---- */

static void on_window(uv_timer_t *t)
{
    engine *e = t->data;
    if (e->stopping)
        return;
    if (codriver_busy(e->drv)) {
        uv_timer_start(t, on_window, 1000, 0); /* a swap back under way finishes first */
        return;
    }
    log_info("the rollback window has ended; the reverse stream stops");
    e->m->window_over = true;
    engine_stop(e, 0);
}

void reverse_engine_start(engine *e)
{
    if (!e->m->reverse || e->m->window_end <= 0)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double left = e->m->window_end - ((double)ts.tv_sec + (double)ts.tv_nsec / 1e9);
    uv_timer_init(&e->loop, &e->window_timer);
    e->window_timer.data = e;
    uv_timer_start(&e->window_timer, on_window, left > 0 ? (uint64_t)(left * 1000.0) : 0, 0);
}

/* ---- after the swap: the reverse migration ---- */

static double now_epoch(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* When the window ends: the cutover's time plus the plan's window (so a
 * longer window in the plan and a new `run` extend it). 0 on failure. */
static double window_end(pgs_migration *fwd)
{
    char *v = pg_query_value(fwd->tgt, "reading the cutover's time",
                             "SELECT extract(epoch FROM cutover_at) FROM pgshift.migrations"
                             " WHERE name = $1",
                             1, (const char *[]){fwd->row}, NULL);
    double at = v ? strtod(v, NULL) : 0;
    free(v);
    return at > 0 ? at + fwd->plan->rollback.window_ms / 1000.0 : 0;
}

/* The last part of a qualified name as the server parses it. */
static char *last_name(PGconn *conn, const char *qname)
{
    return pg_query_value(conn, "reading a table name",
                          "SELECT (parse_ident($1))[array_length(parse_ident($1), 1)]", 1,
                          (const char *[]){qname}, NULL);
}

static char **copy_list(char **l)
{
    if (l == NULL)
        return NULL;
    size_t n = 0;
    while (l[n])
        n++;
    char **c = calloc(n + 1, sizeof *c);
    for (size_t i = 0; c && i < n; i++)
        c[i] = strdup(l[i]);
    return c;
}

static bool copy_colmap(pgs_plan_colmap *dst, const pgs_plan_colmap *src)
{
    if (src->n == 0)
        return true;
    dst->name = calloc(src->n, sizeof(char *));
    dst->expr = calloc(src->n, sizeof(char *));
    if (dst->name == NULL || dst->expr == NULL)
        return false;
    for (size_t i = 0; i < src->n; i++, dst->n++)
        if (!(dst->name[i] = strdup(src->name[i])) || !(dst->expr[i] = strdup(src->expr[i]))) {
            dst->n++;
            return false;
        }
    return true;
}

/* The plan of the reverse migration: each table from its live name to
 * <t>_old, the swap back renaming the live one to the target's name. */
static pgs_plan *reverse_plan(pgs_migration *fwd)
{
    const pgs_plan *f = fwd->plan;
    pgs_plan *p = calloc(1, sizeof *p);
    if (p == NULL)
        return NULL;
    p->path = strdup(f->path);
    p->name = strdup(f->name);
    p->source = strdup(f->source);
    p->state_dir = strdup(f->state_dir);
    p->cutover = f->cutover;
    p->cutover.postpone = false;
    p->cutover.postpone_file = NULL;
    p->cutover.verify = false;
    p->copy = f->copy;
    p->apply = f->apply;
    p->verify.chunk_rows = f->verify.chunk_rows;
    p->verify.max_snapshot_age_ms = f->verify.max_snapshot_age_ms;
    p->hooks.failed = f->hooks.failed ? strdup(f->hooks.failed) : NULL;
    p->tables = calloc(f->ntables, sizeof *p->tables);
    bool ok = p->path && p->name && p->source && p->state_dir && p->tables;
    for (size_t i = 0; ok && i < f->ntables; i++) {
        const pgs_mtable *t = &fwd->tables[i];
        pgs_plan_table *r = &p->tables[i];
        p->ntables++;
        char old[160];
        snprintf(old, sizeof old, "%s_old", t->src.relname);
        r->source = strdup(t->src.qname);
        r->target = pg_qualified(fwd->tgt, t->src.nspname, old);
        r->rename_to = last_name(fwd->tgt, t->spec->target);
        r->leave_behind = copy_list(t->spec->leave_behind);
        /* new -> old: the plan's reverse mapping (preflight checked it
         * covers every changed column) */
        ok = r->source && r->target && r->rename_to &&
             (t->spec->leave_behind == NULL || r->leave_behind) &&
             copy_colmap(&r->columns, &t->spec->reverse) &&
             copy_colmap(&r->reverse, &t->spec->columns);
    }
    if (!ok) {
        pgs_plan_free(p);
        return NULL;
    }
    return p;
}

/* A row is found on <t>_old by that table's own key when the new table's
 * key holds it (a partitioned table's key adds the partition column): a
 * row moving between partitions arrives as a delete and an insert of one
 * key there, which is one update of the old table. */
static void old_table_key(pgs_mtable *t)
{
    const pgs_strlist *k = t->tgt.pk.n ? &t->tgt.pk : NULL;
    /* A mapped table keeps the new table's key, which the mapping has
     * resolved (colmap.c); the rows it finds are the same. */
    if (k == NULL || t->match.n == 0 || t->map.mapped)
        return;
    for (int i = 0; i < k->n; i++)
        if (!strlist_contains(&t->match, k->v[i]))
            return;
    strlist_free(&t->match);
    strlist_free(&t->map.tkey);
    for (int i = 0; i < k->n; i++) {
        strlist_push(&t->match, k->v[i]);
        strlist_push(&t->map.tkey, k->v[i]);
    }
}

/* The window is over (or `cleanup` ends it): the reverse stream's slot,
 * publication and row go, and the migration is `done`. */
static int end_window(pgs_migration *fwd, const char *why)
{
    if (!rollback_drop(fwd->tgt, fwd->plan->name))
        return PGS_EXIT_FAILURE;
    if (!state_transition(fwd, PGS_EV_WINDOW_END, why))
        return PGS_EXIT_FAILURE;
    log_info("migration %s: %s; the old tables are kept as they were at its end (`pgshift cleanup "
             "--plan %s --confirm` drops them)",
             fwd->plan->name, why, fwd->plan->path);
    return PGS_EXIT_OK;
}

static pgs_migration *reverse_open(pgs_migration *fwd, pgs_plan **plan)
{
    *plan = reverse_plan(fwd);
    pgs_migration *rev = *plan ? migration_open(*plan) : NULL;
    if (rev == NULL) {
        log_error("migration %s: the reverse stream cannot be set up (see above)", fwd->plan->name);
        return NULL;
    }
    rev->reverse = true;
    rollback_row_name(fwd->plan->name, rev->row, sizeof rev->row);
    rollback_slot_name(fwd->plan->name, rev->slot, sizeof rev->slot);
    rollback_slot_name(fwd->plan->name, rev->publication, sizeof rev->publication);
    rev->run_started_ms = pgs_now_ms();
    for (int i = 0; i < rev->ntables; i++)
        old_table_key(&rev->tables[i]);
    if (!state_earlier_writers_gone(rev) || !state_load(rev))
        goto failed;
    if (!rev->has_state) {
        log_error("migration %s: the reverse stream's state (%s in pgshift.migrations) is "
                  "missing; the rollback window cannot go on (`pgshift cleanup --plan %s "
                  "--confirm` ends it)",
                  fwd->plan->name, rev->row, fwd->plan->path);
        goto failed;
    }
    return rev;
failed:
    migration_close(rev);
    pgs_plan_free(*plan);
    *plan = NULL;
    return NULL;
}

static void reverse_close(pgs_migration *rev, pgs_plan *plan)
{
    migration_close(rev);
    pgs_plan_free(plan);
}

/* The swap back committed: its steps after the commit, then the reverse
 * stream's slot, publication and row go. */
static int finish_rollback(pgs_migration *fwd, pgs_migration *rev)
{
    if (!cutover_finish(rev)) {
        log_error("migration %s is rolled back, but the steps after it did not finish (see "
                  "above); run `pgshift rollback --plan %s` again to finish them",
                  fwd->plan->name, fwd->plan->path);
        return PGS_EXIT_FAILURE;
    }
    if (!rollback_drop(fwd->tgt, fwd->plan->name))
        return PGS_EXIT_FAILURE;
    fwd->phase = PGS_PHASE_ROLLED_BACK;
    log_info("migration %s rolled back: the old tables are live again under their names, kept "
             "current to the end; `pgshift run --plan %s` moves them again from a new copy, "
             "`pgshift abort --plan %s --confirm` ends the migration",
             fwd->plan->name, fwd->plan->path, fwd->plan->path);
    return PGS_EXIT_OK;
}

int reverse_run(pgs_migration *fwd, bool rollback_now)
{
    if (fwd->phase == PGS_PHASE_ROLLED_BACK) {
        /* A swap back that committed before a crash: finish its steps (the
         * reverse row goes once they are done). */
        char row[80];
        rollback_row_name(fwd->plan->name, row, sizeof row);
        char *n = pg_query_value(fwd->tgt, "reading the reverse stream's state",
                                 "SELECT count(*) FROM pgshift.migrations WHERE name = $1", 1,
                                 (const char *[]){row}, NULL);
        bool read = n != NULL, left = n && atoi(n) > 0;
        free(n);
        if (!left)
            return read ? PGS_EXIT_OK : PGS_EXIT_FAILURE;
        pgs_plan *plan = NULL;
        pgs_migration *rev = reverse_open(fwd, &plan);
        if (rev == NULL)
            return PGS_EXIT_FAILURE;
        int rc = rev->phase == PGS_PHASE_DONE ? finish_rollback(fwd, rev) : PGS_EXIT_OK;
        reverse_close(rev, plan);
        return rc;
    }
    double end = window_end(fwd);
    if (end <= 0) {
        log_error("migration %s: the cutover's time cannot be read; the rollback window cannot "
                  "go on",
                  fwd->plan->name);
        return PGS_EXIT_FAILURE;
    }
    if (end <= now_epoch()) {
        int rc = end_window(fwd, "the rollback window has ended");
        if (rollback_now) {
            log_error("migration %s: no rollback: its window ended %.0f s ago", fwd->plan->name,
                      now_epoch() - end);
            rc = PGS_EXIT_FAILURE;
        }
        return rc;
    }
    /* The forward slot has nothing more to give and would hold the WAL of
     * the whole window. */
    if (!prepare_drop_slot(fwd))
        return PGS_EXIT_FAILURE;
    pgs_plan *plan = NULL;
    pgs_migration *rev = reverse_open(fwd, &plan);
    if (rev == NULL)
        return PGS_EXIT_FAILURE;
    rev->window_end = end;
    rev->auto_cutover = rollback_now;
    rev->cutover_once = rollback_now;
    rev->http_addr = fwd->http_addr;
    log_info("rollback window: streaming the changes of %d new table(s) back into the old ones "
             "until %.0f s from now (`pgshift rollback --plan %s` swaps back; `pgshift cleanup "
             "--plan %s --confirm` ends the window)",
             rev->ntables, end - now_epoch(), fwd->plan->path, fwd->plan->path);
    int rc = run_engine(rev);
    if (rc == PGS_EXIT_OK && rev->phase == PGS_PHASE_DONE)
        rc = finish_rollback(fwd, rev);
    else if (rc == PGS_EXIT_OK && rev->window_over)
        rc = end_window(fwd, "the rollback window has ended");
    else if (rc == PGS_EXIT_OK)
        log_info("migration %s: the reverse stream stopped for `pgshift cleanup`", fwd->plan->name);
    reverse_close(rev, plan);
    return rc;
}
