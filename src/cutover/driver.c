/* driver.c: the cutover attempt driver (codriver.h). States:
 *
 *   NONE --want--> WANTED --lag ok, nothing refused--> RESTING (stream held,
 *   batch committed) --applier at rest--> lock + fence --> FENCE (stream
 *   released) --fence message--> AT_FENCE (stream held, batch committed)
 *   --applier at rest--> swap --> done (stop 0)
 *
 * The write-block budget (cutover.max_block): WANTED moves on only when the
 * WAL left to apply, at the apply rate measured while pgshift was behind,
 * fits it (or after CLOSER_PATIENCE_MS of trying to get there); once the
 * locks are held, an attempt that has not applied up to the fence within
 * the budget (or fence_timeout, if shorter) lets go before the swap.
 *
 * A lock not granted, the budget spent, or a swap that failed its checks:
 * back to WANTED after a backoff, until cutover.attempts; then NONE (given
 * up, still streaming). */
#include "pgshift/codriver.h"

#include "pgshift/log.h"
#include "pgshift/state.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TICK_MS 50
/* While the locks are held: how often the budget is looked at. */
#define HELD_TICK_MS 5
/* The longest WANTED waits for the backlog to fit the budget before it
 * tries anyway (the budget still bounds what the application waits). */
#define CLOSER_PATIENCE_MS 10000
/* The apply rate assumed at least (source WAL bytes/s): a trickle of
 * writes shows a rate that low, and the estimate would be the time behind,
 * not the time to apply. */
#define MIN_APPLY_RATE (1024.0 * 1024.0)

typedef enum co_state {
    CO_NONE,     /* no cutover wanted */
    CO_WANTED,   /* waiting for readiness or the next attempt */
    CO_RESTING,  /* ready to lock: the stream is held while the applier comes to rest */
    CO_FENCE,    /* locks held, fence emitted: applying up to it */
    CO_AT_FENCE, /* fence reached: the stream is held while the last batch commits */
} co_state;

struct codriver {
    pgs_migration *m;
    codriver_ops ops;
    uv_timer_t timer;
    cutover *co;
    co_state state;
    bool requested; /* by `pgshift cutover`: ops->outcome answers it */
    bool held;
    int attempts;
    int backoff_ms;
    double next_try_ms;
    double wanted_at_ms; /* the cutover asked for (timings: cutover_s) */
    double lock_wait_ms; /* of the current attempt */
    double locked_at_ms;
    double fence_sent_ms;
    double fence_ms;        /* fence sent -> reached */
    double worst_failed_ms; /* longest the application waited in a failed attempt */
    double last_window_ms;  /* what the application waited in the last attempt */
    char nonce[128];
    pgs_lsn fence_lsn;
    uint64_t lag_bytes;     /* when the attempt was decided */
    double est_ms;          /* lag_bytes at the measured apply rate */
    double closer_since_ms; /* waiting for the backlog to fit the budget since (0: not) */
    double budget_ms;       /* the locks are held at most this long before the swap */
    uint64_t fence_ahead;   /* bytes from the applied position to the fence, at the lock */
    cutover_blocker blocker;
    bool have_blocker;
    double last_wait_log_ms;
    /* postponing an automatic cutover (plan cutover.postpone / postpone_file) */
    int hold_cmd;
    struct timespec plan_mtime;
    bool postpone;
    char *postpone_file;
    char postpone_why[512];
    /* what an automatic cutover waits for the operator to fix (the first
     * problem cutover_check found), or empty */
    char blocked[1024];
};

static double now_ms(void)
{
    return (double)uv_hrtime() / 1e6;
}

static void on_timer(uv_timer_t *h);

static void tick(codriver *d, uint64_t every_ms)
{
    uv_timer_start(&d->timer, on_timer, every_ms, every_ms);
}

codriver *codriver_new(uv_loop_t *loop, pgs_migration *m, const codriver_ops *ops)
{
    codriver *d = calloc(1, sizeof *d);
    if (d == NULL || uv_timer_init(loop, &d->timer) != 0) {
        free(d);
        return NULL;
    }
    d->m = m;
    d->ops = *ops;
    d->timer.data = d;
    return d;
}

static void on_closed(uv_handle_t *h)
{
    free(h->data);
}

void codriver_free(codriver *d)
{
    if (d == NULL)
        return;
    codriver_abandon(d);
    cutover_free(d->co);
    free(d->postpone_file);
    d->co = NULL;
    d->postpone_file = NULL;
    if (uv_is_closing((uv_handle_t *)&d->timer))
        free(d); /* the owner's loop already closed it (uv_walk) */
    else
        uv_close((uv_handle_t *)&d->timer, on_closed);
}

static void hold(codriver *d, bool on)
{
    if (d->held == on)
        return;
    d->held = on;
    d->ops.hold(d->ops.arg, on);
}

static void answer(codriver *d, bool ok, const char *msg)
{
    if (d->requested) {
        d->requested = false;
        d->ops.outcome(d->ops.arg, ok, msg);
    }
}

static void blocker_text(const codriver *d, char *buf, size_t len)
{
    const cutover_blocker *b = &d->blocker;
    if (!d->have_blocker)
        snprintf(buf, len, "the blocking session had ended by the time it was looked up");
    else
        snprintf(buf, len,
                 "blocked by pid %d (application '%s', in a transaction for %.1f s, holding %s "
                 "on %s; query: %s)",
                 b->pid, b->application, b->xact_age_s, b->mode, b->relation, b->query);
}

/* Ends the current request without a swap: the migration keeps streaming. */
static void give_up(codriver *d, const char *why)
{
    log_error("%s not done: %s; the migration keeps streaming, and `pgshift %s --plan %s` "
              "tries again",
              d->m->reverse ? "rollback" : "cutover", why, d->m->reverse ? "rollback" : "cutover",
              d->m->plan->path);
    answer(d, false, why);
    d->state = CO_NONE;
    d->attempts = 0;
    d->backoff_ms = 0;
    uv_timer_stop(&d->timer);
    if (d->m->phase == PGS_PHASE_CUTTING_OVER &&
        !d->ops.phase(d->ops.arg, PGS_EV_CUTOVER_RELEASED, why))
        return;
    hold(d, false);
}

/* An attempt that did not get (or keep) its locks: wait, catch up, retry. */
static void attempt_failed(codriver *d, const char *why, double app_wait_ms)
{
    if (app_wait_ms > d->worst_failed_ms)
        d->worst_failed_ms = app_wait_ms;
    d->last_window_ms = app_wait_ms;
    if (d->m->phase == PGS_PHASE_CUTTING_OVER &&
        !d->ops.phase(d->ops.arg, PGS_EV_CUTOVER_RELEASED, why))
        return;
    if (d->attempts >= d->m->plan->cutover.attempts) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%d attempt(s) failed; the last: %s", d->attempts, why);
        give_up(d, msg);
        return;
    }
    d->backoff_ms = d->backoff_ms ? d->backoff_ms * 2 : 250;
    if (d->backoff_ms > 5000)
        d->backoff_ms = 5000;
    d->next_try_ms = now_ms() + d->backoff_ms;
    d->state = CO_WANTED;
    tick(d, TICK_MS);
    log_warn("cutover attempt %d/%d: %s; the application waited %.0f ms; retrying in %d ms",
             d->attempts, d->m->plan->cutover.attempts, why, app_wait_ms, d->backoff_ms);
    hold(d, false);
}

/* Re-reads the plan's postpone settings when the file changes, so that an
 * operator can hold back or release an automatic cutover while it runs. */
static void reread_plan(codriver *d)
{
    struct stat st;
    if (stat(d->m->plan->path, &st) != 0 ||
        (st.st_mtim.tv_sec == d->plan_mtime.tv_sec && st.st_mtim.tv_nsec == d->plan_mtime.tv_nsec))
        return;
    d->plan_mtime = st.st_mtim;
    char err[512];
    pgs_plan *p = pgs_plan_load(d->m->plan->path, err, sizeof err);
    if (p == NULL) {
        log_warn("re-reading the plan for cutover.postpone: %s; holding the cutover back", err);
        d->postpone = true;
        return;
    }
    d->postpone = p->cutover.postpone;
    free(d->postpone_file);
    d->postpone_file = p->cutover.postpone_file ? strdup(p->cutover.postpone_file) : NULL;
    pgs_plan_free(p);
}

static bool postponed(codriver *d)
{
    reread_plan(d);
    char why[512] = "";
    if (d->hold_cmd > 0)
        snprintf(why, sizeof why, "held by `pgshift postpone`");
    else if (d->hold_cmd < 0)
        why[0] = '\0'; /* `pgshift unpostpone` overrides the plan and the flag file */
    else if (d->postpone)
        snprintf(why, sizeof why, "cutover.postpone is true in %s", d->m->plan->path);
    else if (d->postpone_file && access(d->postpone_file, F_OK) == 0)
        snprintf(why, sizeof why, "the flag file %s exists", d->postpone_file);
    if (strcmp(why, d->postpone_why) != 0) {
        if (why[0])
            log_info("automatic cutover postponed: %s", why);
        else
            log_info("automatic cutover no longer postponed");
        snprintf(d->postpone_why, sizeof d->postpone_why, "%s", why);
    }
    return why[0] != '\0';
}

static void lock_and_fence(codriver *d);

/* The lag allows an attempt and nothing refuses: bring the applier to rest
 * so that it holds no lock on the targets (lock_and_fence goes on once it is). */
static void rest(codriver *d)
{
    hold(d, true);
    d->state = CO_RESTING;
    if (!d->ops.commit(d->ops.arg, true))
        return;
    if (d->ops.at_rest(d->ops.arg))
        lock_and_fence(d);
}

void codriver_source_lsn(codriver *d, pgs_lsn source_lsn)
{
    pgs_migration *m = d->m;
    double t = now_ms();
    if (d->state != CO_WANTED || t < d->next_try_ms || !d->ops.can_start(d->ops.arg))
        return;
    if (!d->requested && postponed(d))
        return;
    pgs_lsn applied = d->ops.applied(d->ops.arg);
    uint64_t lag = source_lsn > applied ? source_lsn - applied : 0;
    d->lag_bytes = lag;
    if (lag > m->plan->cutover.max_lag_bytes) {
        if (t - d->last_wait_log_ms > 10000) {
            log_info("cutover waits for the lag to drop under cutover.max_lag (%.1f MB; now "
                     "%.1f MB)",
                     (double)m->plan->cutover.max_lag_bytes / 1048576.0, (double)lag / 1048576.0);
            d->last_wait_log_ms = t;
        }
        return;
    }
    /* Catch up closer without the locks while the rest would not fit the
     * write-block budget at the rate the applier has shown. */
    double cap = d->ops.apply_capacity(d->ops.arg);
    if (cap < MIN_APPLY_RATE)
        cap = MIN_APPLY_RATE;
    d->est_ms = (double)lag * 1000.0 / cap;
    bool fits = d->est_ms <= m->plan->cutover.max_block_ms;
    if (!fits) {
        if (d->closer_since_ms == 0)
            d->closer_since_ms = t;
        if (t - d->closer_since_ms < CLOSER_PATIENCE_MS) {
            if (t - d->last_wait_log_ms > 10000) {
                log_info("cutover waits to catch up closer without the locks: %.1f kB left to "
                         "apply, about %.0f ms at %.2f MB/s, over cutover.max_block (%d ms)",
                         (double)lag / 1024.0, d->est_ms, cap / 1048576.0,
                         m->plan->cutover.max_block_ms);
                d->last_wait_log_ms = t;
            }
            return;
        }
        log_info("cutover: the backlog did not fit cutover.max_block for %d s; trying anyway (the "
                 "attempt lets go if the budget runs out)",
                 CLOSER_PATIENCE_MS / 1000);
    }
    d->closer_since_ms = 0;
    if (d->co == NULL && (d->co = cutover_new(m)) == NULL) {
        give_up(d, "cannot open the cutover connections (see the log)");
        return;
    }
    char first[1024];
    int problems = cutover_check(d->co, true, first, sizeof first);
    if (problems != 0) {
        /* An automatic cutover waits for the operator to fix it; a
         * requested one answers now. */
        if (d->requested || problems < 0) {
            give_up(d, problems < 0 ? "reading the dependent objects failed" : first);
            return;
        }
        /* Shown by status, /metrics and the dashboard for as long as it
         * lasts; the `blocked` hook fires for each new reason. */
        if (strcmp(d->blocked, first) != 0) {
            snprintf(d->blocked, sizeof d->blocked, "%s", first);
            log_warn("the automatic cutover waits for the operator: %s (it goes ahead once "
                     "that is fixed; `pgshift status` shows it meanwhile)",
                     first);
            d->ops.event(d->ops.arg, "blocked");
        }
        d->next_try_ms = t + 5000; /* the catalog reads are not free: look again in a while */
        return;
    }
    if (d->blocked[0]) {
        log_info("the automatic cutover is no longer blocked (%s)", d->blocked);
        d->blocked[0] = '\0';
    }
    rest(d);
}

/* The applier is at rest: lock, emit the fence, and let the stream run up
 * to it. Taking the locks waits at most cutover.lock_timeout. */
static void lock_and_fence(codriver *d)
{
    pgs_migration *m = d->m;
    d->attempts++;
    d->state = CO_WANTED;
    if (!d->ops.phase(d->ops.arg, PGS_EV_CUTOVER_LOCK, NULL))
        return;
    if (d->attempts == 1)
        d->ops.event(d->ops.arg, "cutover_started");
    log_info("cutover attempt %d/%d: locking (lag %.1f kB, about %.0f ms to apply, lock_timeout %d "
             "ms, max_block %d ms)",
             d->attempts, m->plan->cutover.attempts, (double)d->lag_bytes / 1024.0, d->est_ms,
             m->plan->cutover.lock_timeout_ms, m->plan->cutover.max_block_ms);
    double t0 = now_ms();
    int r = cutover_lock(d->co, &d->blocker, &d->have_blocker);
    double t1 = now_ms();
    d->lock_wait_ms = t1 - t0;
    if (r == 0) {
        char why[600], msg[700];
        blocker_text(d, why, sizeof why);
        snprintf(msg, sizeof msg, "locks not granted within %d ms: %s",
                 m->plan->cutover.lock_timeout_ms, why);
        attempt_failed(d, msg, d->lock_wait_ms);
        return;
    }
    if (r < 0) {
        give_up(d, "taking the locks failed (see the log)");
        return;
    }
    d->locked_at_ms = t1;
    if (!cutover_fence(d->co, d->nonce, sizeof d->nonce, &d->fence_lsn)) {
        cutover_release(d->co);
        attempt_failed(d, "emitting the fence failed (see the log)", now_ms() - t0);
        return;
    }
    d->fence_sent_ms = now_ms();
    d->state = CO_FENCE;
    d->budget_ms = m->plan->cutover.max_block_ms < m->plan->cutover.fence_timeout_ms
                       ? m->plan->cutover.max_block_ms
                       : m->plan->cutover.fence_timeout_ms;
    pgs_lsn applied = d->ops.applied(d->ops.arg);
    d->fence_ahead = d->fence_lsn > applied ? d->fence_lsn - applied : 0;
    tick(d, HELD_TICK_MS);
    char lsn[18];
    log_info("cutover: locks held after %.0f ms; fence at %s, %.1f kB past the applied position; "
             "applying up to it",
             t1 - t0, decode_lsn_format(d->fence_lsn, lsn), (double)d->fence_ahead / 1024.0);
    /* Whatever is already buffered may hold the fence. */
    hold(d, false);
}

/* Locks held past the budget, whatever the reason: let go (nothing is
 * renamed) and retry. True when the attempt was given up. */
static bool budget_spent(codriver *d)
{
    double held = now_ms() - d->locked_at_ms;
    if (held <= d->budget_ms)
        return false;
    cutover_release(d->co);
    const pgs_plan_cutover *pc = &d->m->plan->cutover;
    bool fence = pc->fence_timeout_ms < pc->max_block_ms;
    char msg[400];
    snprintf(msg, sizeof msg,
             "%s within %s (%d ms; the fence was %.1f kB past the applied position%s); locks "
             "released, nothing renamed",
             d->state == CO_FENCE ? "the stream did not reach the fence"
                                  : "the changes up to the fence were not applied",
             fence ? "cutover.fence_timeout" : "cutover.max_block",
             fence ? pc->fence_timeout_ms : pc->max_block_ms, (double)d->fence_ahead / 1024.0,
             fence ? "" : "; a larger cutover.max_block lets the application wait longer");
    attempt_failed(d, msg, d->lock_wait_ms + held);
    return true;
}

static void on_timer(uv_timer_t *h)
{
    codriver *d = h->data;
    if (d->state == CO_FENCE || d->state == CO_AT_FENCE) {
        budget_spent(d);
        return;
    }
    if (d->state == CO_WANTED)
        d->ops.ask_lsn(d->ops.arg);
}

static void swap(codriver *d);

void codriver_message(codriver *d, const decode_msg *msg)
{
    if (msg->kind != DECODE_MESSAGE || d->state != CO_FENCE ||
        (msg->u.message.flags & DECODE_MESSAGE_TRANSACTIONAL) ||
        strcmp(msg->u.message.prefix, "pgshift_fence") != 0 ||
        msg->u.message.len != strlen(d->nonce) ||
        memcmp(msg->u.message.content, d->nonce, msg->u.message.len) != 0)
        return;
    /* Everything the sources committed before the lock is in this process:
     * hold the stream and commit it (swap goes on once it has returned).
     * Not synchronous: the swap's own commit flushes it, inside the window. */
    d->fence_ms = now_ms() - d->fence_sent_ms;
    hold(d, true);
    d->state = CO_AT_FENCE;
    if (!d->ops.commit(d->ops.arg, false))
        return;
    if (d->ops.at_rest(d->ops.arg))
        swap(d);
}

void codriver_applier_progress(codriver *d)
{
    if (!d->ops.at_rest(d->ops.arg))
        return;
    if (d->state == CO_RESTING)
        lock_and_fence(d);
    else if (d->state == CO_AT_FENCE)
        swap(d);
}

/* The record of a successful swap: attempts and what the application saw. */
static json_t *swap_record(const codriver *d, double applied_ms)
{
    json_t *o = json_pack("{s:i,s:f,s:f,s:f,s:f}", "attempts", d->attempts, "lock_wait_ms",
                          d->lock_wait_ms, "fence_ms", d->fence_ms, "applied_to_fence_ms",
                          applied_ms, "worst_failed_attempt_ms", d->worst_failed_ms);
    if (o && d->have_blocker)
        json_object_set_new(o, "last_blocker",
                            json_pack("{s:i,s:s,s:s,s:f}", "pid", d->blocker.pid, "application",
                                      d->blocker.application, "query", d->blocker.query,
                                      "xact_age_seconds", d->blocker.xact_age_s));
    return o;
}

static void swapped(codriver *d, json_t *o, double t0, double done)
{
    double held = done - d->locked_at_ms;
    double window = d->lock_wait_ms + held;
    d->last_window_ms = window;
    /* The commit is in; record what the application saw. */
    json_object_set_new(o, "swap_ms", json_real(done - t0));
    json_object_set_new(o, "lock_held_ms", json_real(held));
    json_object_set_new(o, "write_block_ms", json_real(window));
    char *js = json_dumps(o, JSON_COMPACT);
    if (js)
        state_merge_cutover(d->m, js);
    free(js);
    state_set_timing(d->m, "cutover_s", (done - d->wanted_at_ms) / 1000.0);
    char msg[512];
    snprintf(msg, sizeof msg,
             "%s after %d attempt(s): write-blocking window %.0f ms (lock wait %.0f ms, "
             "fence reached in %.0f ms, swap %.0f ms)",
             d->m->reverse ? "swapped back" : "cut over", d->attempts, window, d->lock_wait_ms,
             d->fence_ms, done - t0);
    log_info("%s", msg);
    d->state = CO_NONE;
    answer(d, true, msg);
    d->ops.event(d->ops.arg, "cutover_done");
    d->ops.stop(d->ops.arg, 0);
}

/* Everything up to the fence is committed: swap in one transaction. */
static void swap(codriver *d)
{
    if (d->ops.apply_failed(d->ops.arg)) {
        cutover_release(d->co);
        answer(d, false, "applying up to the fence failed (see the log)");
        d->ops.stop(d->ops.arg, 1);
        return;
    }
    cutover_crash_point("applied");
    if (budget_spent(d))
        return;
    json_t *o = swap_record(d, now_ms() - d->fence_sent_ms);
    char *js = o ? json_dumps(o, JSON_COMPACT) : NULL;
    char err[1024] = "";
    double t0 = now_ms();
    int r = cutover_swap(d->co, js, err, sizeof err);
    double done = now_ms();
    free(js);
    if (r > 0) {
        if (o == NULL)
            o = json_object();
        swapped(d, o, t0, done);
        json_decref(o);
        return;
    }
    json_decref(o);
    if (r == 0) {
        attempt_failed(d, err, d->lock_wait_ms + (done - d->locked_at_ms));
        return;
    }
    d->state = CO_NONE;
    char msg[1200];
    snprintf(msg, sizeof msg, "the swap failed and was rolled back (nothing renamed): %s", err);
    give_up(d, msg);
}

bool codriver_want(codriver *d, bool requested)
{
    if (requested && d->requested)
        return false;
    d->requested = d->requested || requested;
    if (d->state == CO_NONE) {
        d->state = CO_WANTED;
        if (d->wanted_at_ms == 0)
            d->wanted_at_ms = now_ms();
        d->attempts = 0;
        d->backoff_ms = 0;
        d->next_try_ms = 0;
    }
    uv_timer_start(&d->timer, on_timer, TICK_MS, TICK_MS);
    return true;
}

bool codriver_requested(const codriver *d)
{
    return d->requested;
}

bool codriver_busy(const codriver *d)
{
    return d->state == CO_RESTING || d->state == CO_FENCE || d->state == CO_AT_FENCE;
}

void codriver_abandon(codriver *d)
{
    if (d->co && cutover_locked(d->co)) {
        cutover_release(d->co);
        log_warn("cutover abandoned: locks released, nothing renamed");
    }
    uv_timer_stop(&d->timer);
    d->state = CO_NONE;
    d->held = false;
}

void codriver_hold_cmd(codriver *d, int hold_cmd)
{
    d->hold_cmd = hold_cmd;
}

codriver_info codriver_get_info(const codriver *d)
{
    return (codriver_info){
        .attempts = d->attempts,
        .lock_wait_ms = d->lock_wait_ms,
        .last_window_ms = d->last_window_ms,
        .blocker = d->have_blocker ? &d->blocker : NULL,
        .postponed = d->postpone_why[0] != '\0' || d->hold_cmd > 0,
        .blocked = d->blocked[0] ? d->blocked : NULL,
    };
}
