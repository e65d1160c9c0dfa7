/* eager.c: a large transaction applied while it runs on the source.
 *
 * The walsender streams a transaction past logical_decoding_work_mem in
 * blocks while it runs (stream.h); the stream spools them and, by default,
 * hands the transaction to the applier at its Stream Commit, which then
 * applies it whole — seconds after the commit for a million rows. Here one
 * streamed transaction at a time is also applied as its blocks arrive, on
 * a second target session (`e->ea`), inside a target transaction left open;
 * at its Stream Commit only the COMMIT remains. The spool stays the source
 * of truth: whenever this path gives up, the transaction is read back from
 * the spool at its commit as before.
 *
 * Order and exactly once:
 * - Before a block's changes go to the second session, the main applier
 *   has committed everything the stream delivered before it (EG_WAIT_MAIN),
 *   so a row changed by an earlier transaction is changed on the target
 *   first. Transactions that commit on the source while this one runs do
 *   not touch the rows it changed (they would have waited for it), so the
 *   main applier goes on beside it.
 * - At the Stream Commit the main applier commits everything before it
 *   (EG_COMMIT_WAIT_MAIN), then the second session commits, synchronously,
 *   with the progress row chained to the main applier's last position
 *   (EG_COMMIT_WAIT_EA); the main applier then chains to it. The stream is
 *   held meanwhile.
 * - Given up (back to the spool) on: a subtransaction (savepoints are not
 *   replayed here), a failure of the second session, a cutover holding the
 *   stream, a stop, pause or reconnect, or the main applier making no
 *   progress for EAGER_STUCK_MS while this transaction is open (a
 *   constraint only the target has can make it wait for the open
 *   transaction). After a failure or a stuck main applier it is off for the
 *   rest of the run. A failed COMMIT of the second session stops the run
 *   (exit 1): nothing of it was confirmed, and the rerun streams it again. */
#include "engine.h"

#include "pgshift/log.h"

#include <stdio.h>
#include <stdlib.h>

static bool main_at_rest(engine *e)
{
    return !apply_batch_open(e->apply) && !apply_busy(e->apply) && !apply_in_xact(e->apply);
}

/* The main applier should commit what it has now, not at its batch age. */
static void nudge_main(engine *e)
{
    if (apply_batch_open(e->apply) && !apply_in_xact(e->apply))
        flow_commit(e, true);
}

static void on_ea_ready(uv_poll_t *h, int status, int events);

static void ea_update_poll(engine *e)
{
    if (e->ea == NULL || !e->ea_poll_on)
        return;
    int ev = UV_READABLE | (apply_want_write(e->ea) ? UV_WRITABLE : 0);
    if (ev != e->ea_events) {
        e->ea_events = ev;
        uv_poll_start(&e->ea_poll, ev, on_ea_ready);
    }
}

static void ea_closed(uv_handle_t *h)
{
    engine *e = h->data;
    apply_free(e->ea_closing);
    e->ea_closing = NULL;
}

/* Drops the second session (after a failure: its state is unknown). */
static void ea_drop(engine *e)
{
    if (e->ea == NULL)
        return;
    if (e->ea_poll_on && !uv_is_closing((uv_handle_t *)&e->ea_poll)) {
        e->ea_closing = e->ea;
        uv_close((uv_handle_t *)&e->ea_poll, ea_closed);
    } else
        apply_free(e->ea);
    e->ea = NULL;
    e->ea_poll_on = false;
    e->ea_events = 0;
}

static bool ea_open(engine *e)
{
    if (e->ea)
        return true;
    if (e->ea_closing)
        return false; /* the last one is still closing */
    char origin[128];
    snprintf(origin, sizeof origin, "%s_stream", e->m->slot);
    e->ea = apply_new(e->m, apply_has_origin(e->apply) ? origin : NULL);
    if (e->ea == NULL)
        return false;
    if (uv_poll_init(&e->loop, &e->ea_poll, apply_socket(e->ea)) != 0) {
        apply_free(e->ea);
        e->ea = NULL;
        return false;
    }
    e->ea_poll.data = e;
    e->ea_poll_on = true;
    e->ea_events = UV_READABLE;
    uv_poll_start(&e->ea_poll, UV_READABLE, on_ea_ready);
    return true;
}

/* Back to reading the transaction from the spool at its commit. */
void eager_abandon(engine *e, bool disable, bool session_ends, const char *why)
{
    /* Its Stream Commit was taken (the spool dropped): it is committed
     * here, unless the session ends (the next one streams it again). Once
     * its COMMIT is out, it completes or fails the run. */
    if (e->eg == EG_COMMIT_WAIT_EA || (e->eg == EG_COMMIT_WAIT_MAIN && !session_ends))
        return;
    if (e->eg != EG_NONE) {
        log_info("streamed transaction %u: %s; it is applied at its commit instead", e->eg_xid,
                 why);
        if (e->ea && apply_in_xact(e->ea))
            apply_rollback_batch(e->ea);
        else if (e->ea && apply_batch_open(e->ea))
            apply_rollback_batch(e->ea);
        ea_update_poll(e);
    }
    e->eg = EG_NONE;
    e->eg_xid = 0;
    if (disable && !e->eg_disabled) {
        e->eg_disabled = true;
        log_warn("applying streamed transactions while they run is off for this run");
    }
}

bool eager_ready(engine *e)
{
    switch (e->eg) {
    case EG_NONE:
        return true;
    case EG_APPLYING:
        return apply_ready(e->ea);
    default:
        return false;
    }
}

bool eager_busy(const engine *e)
{
    return e->ea && apply_busy(e->ea);
}

/* Moves on once what each state waits for has happened. */
void eager_step(engine *e)
{
    if (e->eg == EG_WAIT_MAIN && main_at_rest(e))
        e->eg = EG_APPLYING;
    if (e->eg == EG_COMMIT_WAIT_MAIN && main_at_rest(e)) {
        apply_chain_to(e->ea, e->m->applied_lsn);
        e->eg = EG_COMMIT_WAIT_EA;
        if (!apply_commit_streamed(e->ea, &e->eg_commit)) {
            log_error("streamed transaction %u: its COMMIT could not be sent", e->eg_xid);
            engine_stop(e, 1);
            return;
        }
        ea_update_poll(e);
    }
    if (e->eg == EG_COMMIT_WAIT_EA && !apply_busy(e->ea) && !apply_failed(e->ea)) {
        char lsn[18];
        log_info("streamed transaction %u committed up to %s, applied while it ran", e->eg_xid,
                 decode_lsn_format(e->m->applied_lsn, lsn));
        /* The main applier's next batch chains to it; its durability is
         * the second session's to tell (flow_flush_position). */
        apply_chain_to(e->apply, e->m->applied_lsn);
        e->eg = EG_NONE;
        e->eg_xid = 0;
    }
}

static void on_ea_ready(uv_poll_t *h, int status, int events)
{
    (void)events;
    engine *e = h->data;
    if (e->ea == NULL)
        return;
    e->ea_progress_ms = engine_now_ms();
    if (status < 0 || !apply_poll(e->ea)) {
        if (e->eg == EG_COMMIT_WAIT_EA) {
            log_error("streamed transaction %u: its COMMIT failed; nothing of it was confirmed",
                      e->eg_xid);
            engine_stop(e, 1);
            return;
        }
        eager_abandon(e, true, false, "the session applying it failed");
        ea_drop(e);
    } else {
        const char *other;
        apply_origin_clean(e->ea, &other);
        if (sample_other_origins(e, other))
            return;
        ea_update_poll(e);
    }
    flow_continue(e);
}

/* Called every second while a streamed transaction is open on the second
 * session. Its changes may wait for a row of the main applier's open batch
 * (only with a constraint the source lacks: the source would have made
 * them wait for each other), and the main applier may wait for a lock the
 * open transaction holds: commit the main batch, and when either session
 * still makes no progress for EAGER_STUCK_MS, give the transaction up. */
void eager_watch(engine *e)
{
    if (e->eg != EG_APPLYING && e->eg != EG_WAIT_MAIN)
        return;
    nudge_main(e);
    double now = engine_now_ms();
    bool main_stuck = apply_busy(e->apply) && now - e->main_progress_ms >= EAGER_STUCK_MS;
    bool ea_stuck = eager_busy(e) && now - e->ea_progress_ms >= EAGER_STUCK_MS;
    if (!main_stuck && !ea_stuck)
        return;
    eager_abandon(e, true, false,
                  main_stuck ? "the main apply session made no progress while it was open"
                             : "its session made no progress");
    flow_continue(e);
}

static int on_stream_start(engine *e, const decode_msg *msg)
{
    e->eg_block_xid = msg->xid;
    if (e->eg == EG_NONE && !e->eg_disabled && e->m->plan->apply.early_streamed &&
        msg->u.stream_start.first_segment && !e->hold && !e->stopping && !e->pausing &&
        e->vh == VH_NONE && ea_open(e)) {
        e->eg_xid = msg->xid;
        e->eg_began = false;
        e->eg = EG_WAIT_MAIN;
    } else if (e->eg != EG_NONE && msg->xid == e->eg_xid)
        e->eg = EG_WAIT_MAIN; /* its next block: the main applier first */
    if (e->eg == EG_WAIT_MAIN) {
        e->main_progress_ms = e->ea_progress_ms = engine_now_ms();
        nudge_main(e);
        eager_step(e);
    }
    return 0;
}

static int on_change(engine *e, const decode_msg *msg)
{
    if (e->eg != EG_APPLYING || e->eg_block_xid != e->eg_xid)
        return 0;
    if (msg->has_xid && msg->xid != e->eg_xid) {
        eager_abandon(e, false, false, "it has subtransactions");
        return 0;
    }
    if (!e->eg_began) {
        decode_msg begin = {.kind = DECODE_BEGIN, .has_xid = true, .xid = e->eg_xid};
        begin.u.begin.final_lsn = UINT64_MAX; /* not known yet: never skipped */
        if (!apply_message(e->ea, &begin)) {
            eager_abandon(e, true, false, "its BEGIN failed");
            return 0;
        }
        e->eg_began = true;
    }
    if (!apply_message(e->ea, msg))
        eager_abandon(e, true, false, "applying it failed");
    ea_update_poll(e);
    return 0;
}

static int on_stream_commit(engine *e, const decode_msg *msg)
{
    if (e->eg == EG_NONE || msg->xid != e->eg_xid)
        return 0;
    if (e->eg != EG_APPLYING || !e->eg_began) {
        eager_abandon(e, false, false, "nothing of it was applied yet");
        return 0;
    }
    if (msg->u.stream_commit.commit_lsn < e->m->applied_lsn) {
        /* Applied before (a rerun): drop it whole. */
        apply_rollback_batch(e->ea);
        ea_update_poll(e);
        e->eg = EG_NONE;
        e->eg_xid = 0;
        return 1;
    }
    e->eg_commit = (decode_msg){.kind = DECODE_COMMIT};
    e->eg_commit.u.commit.flags = msg->u.stream_commit.flags;
    e->eg_commit.u.commit.commit_lsn = msg->u.stream_commit.commit_lsn;
    e->eg_commit.u.commit.end_lsn = msg->u.stream_commit.end_lsn;
    e->eg_commit.u.commit.commit_time = msg->u.stream_commit.commit_time;
    e->eg = EG_COMMIT_WAIT_MAIN;
    nudge_main(e);
    eager_step(e);
    return 1;
}

int eager_streamed(void *arg, const decode_msg *msg)
{
    engine *e = arg;
    switch (msg->kind) {
    case DECODE_STREAM_START:
        return on_stream_start(e, msg);
    case DECODE_STREAM_COMMIT:
        return on_stream_commit(e, msg);
    case DECODE_STREAM_ABORT:
        if (e->eg != EG_NONE && msg->xid == e->eg_xid && msg->u.stream_abort.subxid == msg->xid) {
            if (e->ea && apply_batch_open(e->ea))
                apply_rollback_batch(e->ea);
            ea_update_poll(e);
            e->eg = EG_NONE;
            e->eg_xid = 0;
        }
        return 0;
    default:
        return on_change(e, msg);
    }
}

void eager_free(engine *e)
{
    apply_free(e->ea);
    e->ea = NULL;
}
