/* flow.c: the data path of a run: the replication stream (stream.h) feeds
 * the applier (apply.h) message by message; the applier's socket is watched
 * on the loop, so results are read as they arrive and nothing waits; while
 * the applier cannot take more (or the cutover driver holds the stream) the
 * stream is held back. The flush position reported to the server is only
 * ever what the applier has durably committed (or, when nothing is pending,
 * the keepalive position). */
#include "engine.h"

#include "pgshift/log.h"

#include <stdio.h>

double engine_now_ms(void)
{
    return (double)uv_hrtime() / 1e6;
}

/* What may be confirmed to the slot: the applied position the target has
 * durably flushed (its flush position comes with each batch's result and
 * the probes on_feedback queues), or with nothing pending and everything
 * flushed, the last keepalive position. */
/* Nothing open, in flight or unflushed on either applier. */
static bool flow_idle(engine *e)
{
    return apply_idle(e->apply) && (e->ea == NULL || apply_idle(e->ea));
}

pgs_lsn flow_flush_position(engine *e)
{
    pgs_lsn f = apply_durable_lsn(e->apply, 0);
    /* A streamed transaction the second session committed (eager.c) comes
     * after every commit of the main applier before it, in the target's
     * WAL too: when it is durable, so are they. */
    if (e->ea) {
        pgs_lsn g = apply_durable_lsn(e->ea, 0);
        if (g > f)
            f = g;
    }
    if (flow_idle(e) && e->idle_confirm > f)
        f = e->idle_confirm;
    if (stream_origin_active(e->rs, NULL)) {
        pgs_lsn cap = e->origin_cap;
        pgs_lsn c = apply_origin_clean(e->apply, NULL);
        if (c > cap)
            cap = c;
        if (e->ea && (c = apply_origin_clean(e->ea, NULL)) > cap)
            cap = c;
        if (cap < e->last_flush_sent)
            cap = e->last_flush_sent;
        if (f > cap)
            f = cap;
    }
    return f;
}

void flow_send_feedback(engine *e, bool reply)
{
    /* After an apply failure nothing more is confirmed: the failed
     * transactions must be sent again. */
    if (!stream_is_open(e->rs) || e->exit_code == 1)
        return;
    pgs_lsn flush = flow_flush_position(e);
    char f[18], ic[18], ap[18];
    log_debug("feedback: flush %s (idle confirm %s, applied %s)", decode_lsn_format(flush, f),
              decode_lsn_format(e->idle_confirm, ic), decode_lsn_format(e->m->applied_lsn, ap));
    stream_send_status(e->rs, flush, reply);
    e->last_feedback_ms = engine_now_ms();
    e->last_flush_sent = flush;
}

/* The end of the stream (a stop or a pause): the final position confirmed,
 * then closed; after an apply failure nothing more is confirmed. */
void flow_finish_stream(engine *e)
{
    if (!stream_is_open(e->rs))
        return;
    if (e->exit_code == 1 || apply_failed(e->apply)) {
        stream_close(e->rs);
        return;
    }
    pgs_lsn flush = flow_flush_position(e);
    char f[18];
    log_debug("feedback: flush %s (final)", decode_lsn_format(flush, f));
    stream_finish(e->rs, flush, STREAM_FINISH_MS);
    e->last_flush_sent = flush;
}

/* A batch completed: confirm it without waiting for the feedback timer when
 * the applier has nothing else going (the end of a burst: the slot, and
 * whoever waits on it, learn at once), else at most every 100 ms. */
static void feedback_after_batch(engine *e)
{
    if (apply_durable_lsn(e->apply, 0) <= e->last_flush_sent)
        return;
    if (!apply_batch_open(e->apply) || engine_now_ms() - e->last_feedback_ms > 100)
        flow_send_feedback(e, false);
}

/* `sync` for a batch closed because everything the walsender had sent is
 * applied (see apply_commit_batch): at the end of a burst no later commit
 * would flush it soon. Batches closed for size or age mid-stream stay
 * asynchronous. */
bool flow_commit(engine *e, bool sync)
{
    if (apply_batch_open(e->apply) && !apply_commit_batch(e->apply, sync)) {
        engine_stop(e, 1);
        return false;
    }
    flow_update_poll(e);
    if (engine_now_ms() - e->last_feedback_ms > 100)
        flow_send_feedback(e, false);
    return true;
}

static void on_apply_ready(uv_poll_t *h, int status, int events);

static void on_kick(uv_timer_t *t)
{
    engine *e = t->data;
    if (!e->finished && e->apply_events != 0)
        on_apply_ready(&e->apply_poll, 0, UV_READABLE);
}

/* Watches the apply socket for results, and for room to write while
 * libpq holds output the kernel has not taken. */
void flow_update_poll(engine *e)
{
    if (e->apply_events == 0 || e->finished)
        return;
    /* Results a flush read into libpq's buffer wake no poll: take them on
     * the next turn of the loop. */
    if (apply_results_waiting(e->apply) && !uv_is_active((uv_handle_t *)&e->kick_timer))
        uv_timer_start(&e->kick_timer, on_kick, 0, 0);
    /* Called after every message: change the watch only when it changes. */
    int ev = UV_READABLE | (apply_want_write(e->apply) ? UV_WRITABLE : 0);
    if (ev != e->apply_events) {
        e->apply_events = ev;
        uv_poll_start(&e->apply_poll, ev, on_apply_ready);
    }
}

/* Both appliers at rest (eager.c: the second one applies a streamed
 * transaction while it runs). */
bool flow_busy(const engine *e)
{
    return apply_busy(e->apply) || eager_busy(e);
}

/* A stop or a pause whose applier has drained: may it finish? Batches
 * committed asynchronously (those in flight when the stop came, whose
 * results arrived since) may not be known flushed yet, and the final
 * position confirmed would stop short of them: once, a synchronous
 * one-row commit and a flush probe (apply_sync_point) make them durable
 * first. */
bool flow_settled(engine *e)
{
    if (flow_busy(e))
        return false;
    if (apply_failed(e->apply) || e->sync_point_sent)
        return true;
    e->sync_point_sent = true;
    if (!apply_sync_point(e->apply))
        return true;
    if (!apply_busy(e->apply))
        return true;
    flow_update_poll(e);
    return false;
}

/* May the stream deliver another message? */
static bool flow_ready(engine *e)
{
    return !e->stopping && !e->pausing && !e->hold && !vhold_holds(e) && apply_ready(e->apply) &&
           eager_ready(e);
}

/* An applier made progress (results, room to write): whatever waited for
 * it goes on. */
void flow_continue(engine *e)
{
    if (e->stopping) {
        if (apply_failed(e->apply) || flow_settled(e))
            engine_stop(e, e->exit_code); /* finishes the stop */
        else
            flow_update_poll(e);
        return;
    }
    flow_update_poll(e);
    eager_step(e);
    if (e->stopping)
        return;
    vhold_progress(e);
    if (e->pausing ? flow_settled(e) : !flow_busy(e)) {
        if (e->pausing)
            engine_finish_pause(e);
        else
            codriver_applier_progress(e->drv);
    }
    if (!e->stopping && stream_stalled(e->rs) && flow_ready(e))
        stream_resume(e->rs);
}

static void on_apply_ready(uv_poll_t *h, int status, int events)
{
    (void)events;
    engine *e = h->data;
    if (status < 0)
        log_error("apply: watching the target connection failed: %s", uv_strerror(status));
    if (status < 0 || !apply_poll(e->apply)) {
        engine_stop(e, 1);
        return;
    }
    e->main_progress_ms = engine_now_ms();
    const char *other;
    apply_origin_clean(e->apply, &other);
    if (sample_other_origins(e, other))
        return;
    feedback_after_batch(e);
    flow_continue(e);
}

/* ---- the stream's callbacks (stream.h) ---- */

static bool on_ready(void *arg)
{
    return flow_ready(arg);
}

static bool on_message(void *arg, const decode_msg *msg)
{
    engine *e = arg;
    if (!vhold_before(e, msg) || !apply_message(e->apply, msg))
        return false;
    codriver_message(e->drv, msg);
    vhold_progress(e);
    if (msg->kind == DECODE_COMMIT && !e->hold &&
        (apply_batch_changes(e->apply) >= e->m->plan->apply.batch_changes ||
         apply_batch_age_ms(e->apply) >= e->m->plan->apply.batch_ms))
        return flow_commit(e, false);
    flow_update_poll(e);
    return !e->stopping || e->exit_code != 1;
}

static void on_keepalive(void *arg, pgs_lsn wal_end, bool reply)
{
    engine *e = arg;
    /* Only with nothing open, in flight or unflushed: a batch still in
     * flight may yet fail, and its transactions must come again. */
    if (flow_idle(e))
        e->idle_confirm = wal_end;
    if (reply)
        flow_send_feedback(e, false);
    sample_origin_probe(e);
}

static void on_batch_timer(uv_timer_t *t)
{
    engine *e = t->data;
    if (e->stopping || e->hold)
        return;
    if (apply_batch_open(e->apply) && !apply_in_xact(e->apply))
        flow_commit(e, true);
}

/* Nothing more buffered: commit a batch that has waited long enough, or
 * come back for it shortly. */
static void on_drained(void *arg)
{
    engine *e = arg;
    if (apply_batch_open(e->apply) && !apply_in_xact(e->apply) && !e->hold) {
        double age = apply_batch_age_ms(e->apply);
        double wait = e->m->plan->apply.idle_commit_ms;
        if (age >= wait)
            flow_commit(e, true);
        else
            uv_timer_start(&e->batch_timer, on_batch_timer, (uint64_t)(wait - age) + 1, 0);
    }
    flow_update_poll(e);
}

/* Starts bringing the applier to rest: complete source transactions are
 * committed, a half-received one (or everything, after a failure) is
 * rolled back — the slot sends those again. m->applied_lsn is final once
 * apply_busy() is false; continue_after_apply goes on from there. */
void flow_settle(engine *e, bool failed)
{
    eager_abandon(e, false, true, "the stream stops");
    if (failed || apply_failed(e->apply))
        apply_rollback_batch(e->apply);
    else if (apply_batch_open(e->apply)) {
        /* A transaction begun with no change yet put nothing in the batch
         * (`pgshift verify` stops at such a Begin): what is there is whole. */
        if (apply_in_changed_xact(e->apply))
            apply_rollback_batch(e->apply);
        else
            apply_commit_batch(e->apply, true);
    }
    e->sync_point_sent = false;
    flow_update_poll(e);
}

/* The stream closed: reconnect from the applied position once the applier
 * is at rest (on_reconnect waits for that), or stop when it failed. */
static void on_closed(void *arg, bool lost)
{
    engine *e = arg;
    flow_settle(e, !lost);
    if (e->stopping)
        return;
    if (lost && !apply_failed(e->apply))
        flow_schedule_reconnect(e);
    else
        engine_stop(e, 1);
}

/* ---- connecting ---- */

static void on_reconnect(uv_timer_t *t)
{
    engine *e = t->data;
    if (e->stopping || e->paused || e->pausing)
        return;
    /* The stream restarts from the applied position: wait until it is final. */
    if (flow_busy(e)) {
        uv_timer_start(&e->reconnect_timer, on_reconnect, 100, 0);
        return;
    }
    if (!flow_connect(e))
        flow_schedule_reconnect(e);
}

/* Tries again after 1 s, doubling up to BACKOFF_MAX_MS. */
void flow_schedule_reconnect(engine *e)
{
    if (e->stopping)
        return;
    e->backoff_ms = e->backoff_ms ? e->backoff_ms * 2 : 1000;
    if (e->backoff_ms > BACKOFF_MAX_MS)
        e->backoff_ms = BACKOFF_MAX_MS;
    log_warn("reconnecting in %d ms", e->backoff_ms);
    uv_timer_start(&e->reconnect_timer, on_reconnect, (uint64_t)e->backoff_ms, 0);
}

/* The slot can stream no more: what was applied is all this slot will
 * ever give, and a new slot would start at a later position and silently
 * skip what came in between. One line says so and what to do; exit 1. */
void flow_slot_lost(engine *e, const pgs_slot_state *s)
{
    const pgs_migration *m = e->m;
    char lsn[18], why[512];
    if (s->health == PGS_SLOT_MISSING)
        snprintf(why, sizeof why,
                 "is missing on the source (%s): the source failed over to a server without it "
                 "(before PostgreSQL 17, or a standby that did not synchronize it), or someone "
                 "dropped it",
                 s->server);
    else
        snprintf(why, sizeof why, "was invalidated by the source (%s): %s", s->server, s->reason);
    log_error("replication slot %s %s; the changes after applied position %s can no longer be "
              "streamed, so the migration must start over: `pgshift abort --plan %s --confirm`, "
              "then `pgshift run --plan %s` again (a new copy)",
              m->slot, why, decode_lsn_format(m->applied_lsn, lsn), m->plan->path, m->plan->path);
    engine_stop(e, 1);
}

/* Before streaming (at the start of a run, on a resume, on a reconnect),
 * stream_start asks whether the slot is still there and valid on the
 * server the source conninfo leads to now (after a failover, the new
 * primary): lost ends the run; a standby is said, and what fails after it
 * is retried. */
static bool slot_usable(engine *e, const pgs_slot_state *s)
{
    if (s->health == PGS_SLOT_STANDBY)
        log_warn("the source conninfo led to a standby (%s), which cannot stream slot %s; with "
                 "several hosts, add target_session_attrs=read-write to it",
                 s->server, e->m->slot);
    if (!catalog_slot_lost(s))
        return true;
    flow_slot_lost(e, s);
    return false;
}

bool flow_connect(engine *e)
{
    pgs_lsn from = e->m->applied_lsn;
    pgs_slot_state slot;
    bool started = stream_start(e->rs, from, &slot);
    if (!slot_usable(e, &slot) || !started)
        return false;
    e->backoff_ms = 0;
    if (e->m->streaming_since_ms == 0)
        e->m->streaming_since_ms = pgs_now_ms();
    /* Until a sample sent from now on sees no other origin, confirm
     * nothing past the start. */
    if (stream_origin_active(e->rs, &e->origin_pending)) {
        e->origin_cap = from;
        e->origin_since_ms = engine_now_ms();
    }
    return true;
}

static void on_feedback(uv_timer_t *t)
{
    engine *e = t->data;
    if (e->stopping)
        return;
    /* Asynchronous commits become durable when the target flushes them:
     * ask where that is (its answer moves apply_durable_lsn). */
    if (!apply_probe_flush(e->apply) || (e->ea && !apply_probe_flush(e->ea))) {
        engine_stop(e, 1);
        return;
    }
    flow_update_poll(e);
    eager_watch(e);
    if (e->stopping)
        return;
    /* A stream held back while the applier was busy goes on when the
     * applier's socket reports progress (flow_continue); should the
     * applier have become ready without a report, go on from here. */
    if (stream_stalled(e->rs) && flow_ready(e)) {
        log_debug("stream held back with the applier ready: reading on");
        stream_resume(e->rs);
    }
    if (engine_now_ms() - e->last_feedback_ms >= FEEDBACK_MS * 0.9)
        flow_send_feedback(e, false);
}

/* The applier, its socket on the loop, the stream and the timers. */
bool flow_init(engine *e)
{
    e->apply = apply_new(e->m, e->m->slot);
    if (e->apply == NULL)
        return false;
    apply_set_durable(e->apply, e->m->applied_lsn);
    stream_cbs cbs = {e, on_ready, on_message, on_keepalive, on_drained, on_closed, eager_streamed};
    e->rs = stream_new(&e->loop, e->m, e->m->plan->target == NULL, &cbs);
    int rc = uv_poll_init(&e->loop, &e->apply_poll, apply_socket(e->apply));
    if (e->rs == NULL || rc != 0) {
        /* Without it no result would ever be read. */
        log_error("apply: cannot watch the target connection: %s",
                  rc ? uv_strerror(rc) : "out of memory");
        return false;
    }
    stream_set_origin_filter(e->rs, apply_has_origin(e->apply));
    e->apply_poll.data = e;
    e->apply_events = UV_READABLE;
    uv_poll_start(&e->apply_poll, UV_READABLE, on_apply_ready);
    uv_timer_init(&e->loop, &e->feedback_timer);
    uv_timer_init(&e->loop, &e->batch_timer);
    uv_timer_init(&e->loop, &e->reconnect_timer);
    uv_timer_init(&e->loop, &e->kick_timer);
    e->feedback_timer.data = e->batch_timer.data = e->reconnect_timer.data = e;
    e->kick_timer.data = e;
    uv_timer_start(&e->feedback_timer, on_feedback, FEEDBACK_MS, FEEDBACK_MS);
    return true;
}
