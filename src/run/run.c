/* run.c: the orchestrator of a run after the copy (engine.h). It owns the
 * libuv loop, the signals and the stop, the control socket's commands, the
 * status snapshot every view shows, the hooks, and the cutover driver's ops
 * (codriver.h), which reach the data path (flow.c) and the phase
 * (sample.c). Nothing on this loop waits for a server, so a slow or silent
 * target never keeps SIGTERM, the control socket or the timers waiting. */
#include "engine.h"

#include "pgshift/hooks.h"
#include "pgshift/log.h"
#include "pgshift/status.h"
#include "pgshift/run.h"
#include "pgshift/state.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the status snapshot (status.h) every view shows ---- */

bool engine_snapshot(engine *e, status_snapshot *x)
{
    codriver_info ci = codriver_get_info(e->drv);
    status_live live = {
        .source_lsn = e->last_source_lsn,
        .confirmed_lsn = e->last_applied,
        .lag_bytes = (double)e->lag.lag_bytes,
        .lag_seconds = e->lag.lag_seconds,
        .eta_seconds = e->lag.eta_seconds,
        .rate_changes = e->lag.rate_changes,
        .rate_xacts = e->lag.rate_xacts,
        .rate_bytes = e->lag.rate_bytes,
        .rate_wal = e->lag.rate_wal,
        .slot_retained = e->slot_retained,
        .slot_safe = e->slot_safe,
        .wal_status = e->wal_status,
        .cutover_attempts = ci.attempts,
        .cutover_lock_wait_ms = ci.lock_wait_ms,
        .cutover_write_block_ms = ci.last_window_ms,
        .blocker = ci.blocker,
        .cutover_blocked = ci.blocked,
        .postponed = ci.postponed,
        .paused = e->paused,
        .server_version = PQparameterStatus(e->m->src, "server_version"),
        .server_version_num = PQserverVersion(e->m->src),
    };
    /* The session's protocol only while it is open (not paused, not
     * between reconnects). */
    if (e->rs && stream_is_open(e->rs)) {
        live.proto_version = stream_proto_version(e->rs);
        live.origin_filter = stream_origin_active(e->rs, NULL);
    }
    return status_snapshot_build(e->m, &live, x);
}

/* Refreshes what `run --http` serves. */
void engine_publish(engine *e)
{
    status_snapshot x;
    if (board_active() && engine_snapshot(e, &x)) {
        board_publish(&x.st);
        status_snapshot_free(&x);
    }
}

static void reply_with_status(engine *e, control_call *call, bool ok, const char *msg)
{
    status_snapshot x;
    if (engine_snapshot(e, &x)) {
        control_reply(call, ok, msg, &x.st);
        status_snapshot_free(&x);
    } else
        control_reply(call, ok, msg, NULL);
}

void engine_fire(engine *e, const char *event)
{
    status_snapshot x;
    char *js = NULL;
    if (engine_snapshot(e, &x)) {
        js = status_json(&x.st, 0);
        status_snapshot_free(&x);
    }
    hooks_fire(e->m->plan, event, js);
    free(js);
}

/* ---- stopping ---- */

static void close_handle(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

/* The applier is at rest (or the target did not answer in time): confirm
 * what is durable, close everything, and let the loop end. */
static void finish_stop(engine *e)
{
    if (e->finished)
        return;
    e->finished = true;
    char lsn[18];
    if (apply_failed(e->apply)) {
        if (e->exit_code != 1)
            e->exit_code = 1;
    } else if (flow_busy(e)) {
        log_warn("the target did not answer within %d ms; stopping without waiting for it: "
                 "nothing past %s is confirmed to the slot, and `pgshift run` resumes from there",
                 STOP_WAIT_MS, decode_lsn_format(apply_durable_lsn(e->apply, 0), lsn));
    }
    flow_finish_stream(e);
    aquery_close(e->mon);
    e->mon = NULL;
    uv_walk(&e->loop, close_handle, NULL);
}

static void on_stop_deadline(uv_timer_t *t)
{
    finish_stop(t->data);
}

static void reply_pending(engine *e, control_call **call, const char *msg)
{
    if (*call) {
        control_reply(*call, false, msg, NULL);
        *call = NULL;
    }
}

/* Stops the run: the stream is no longer read, the applier is brought to
 * rest, and the loop ends once it is — or after STOP_WAIT_MS when the
 * target does not answer. Called again while stopping, it finishes the
 * stop if the applier has come to rest. */
void engine_stop(engine *e, int code)
{
    if (!e->stopping) {
        e->stopping = true;
        e->exit_code = code;
        codriver_abandon(e->drv);
        reply_pending(e, &e->co_call,
                      e->m->phase != PGS_PHASE_DONE ? "pgshift run stopped"
                      : e->m->reverse               ? "rolled back"
                                                    : "cut over");
        reply_pending(e, &e->pause_call, "pgshift run stopped");
        vhold_stop(e);
        reply_pending(e, &e->resume_call,
                      "the slot can stream no more; pgshift stops (its log says what to do)");
        control_close(e->ctl);
        e->ctl = NULL;
        uv_timer_stop(&e->batch_timer);
        uv_timer_stop(&e->reconnect_timer);
        uv_timer_stop(&e->stats_timer);
        uv_timer_stop(&e->probe_timer);
        /* Nothing more is delivered (flow.c's ready callback says no while
         * stopping); finish_stop confirms the final position, then closes. */
        flow_settle(e, code == 1);
        uv_timer_start(&e->stop_timer, on_stop_deadline, STOP_WAIT_MS, 0);
    }
    if (apply_failed(e->apply) || flow_settled(e))
        finish_stop(e);
}

static void on_signal(uv_signal_t *h, int signum)
{
    engine *e = h->data;
    char lsn[18];
    log_info("received %s: stopping at applied position %s; `pgshift run` resumes from there",
             signum == SIGINT ? "SIGINT" : "SIGTERM", decode_lsn_format(e->m->applied_lsn, lsn));
    engine_stop(e, 128 + signum);
}

/* ---- pause and resume ---- */

/* Pause: the replication connection is closed after the applier settles,
 * so nothing is held open; the slot keeps the WAL and the lag grows. The
 * reply goes when the applier is at rest (engine_finish_pause). */
static void do_pause(engine *e, control_call *call)
{
    pgs_phase to;
    if (e->paused)
        reply_with_status(e, call, true, "already paused");
    else if (e->pausing)
        reply_with_status(e, call, false, "a pause is already settling the applier");
    else if (codriver_busy(e->drv))
        reply_with_status(e, call, false, "a cutover holds its locks right now; pause refused");
    else if (e->vh != VH_NONE)
        reply_with_status(e, call, false,
                          "`pgshift verify` holds the applier for a moment; try again");
    else if (!phase_next(e->m->phase, PGS_EV_PAUSE, &to, NULL))
        reply_with_status(e, call, false,
                          "not streaming yet (the first lag sample comes within 2 s); try again");
    else {
        e->pausing = true;
        e->pause_call = call;
        uv_timer_stop(&e->reconnect_timer);
        /* Nothing more is delivered while pausing; engine_finish_pause
         * confirms the final position and closes the stream. */
        flow_settle(e, false);
        if (flow_settled(e))
            engine_finish_pause(e);
    }
}

void engine_finish_pause(engine *e)
{
    e->pausing = false;
    control_call *call = e->pause_call;
    e->pause_call = NULL;
    flow_finish_stream(e);
    if (apply_failed(e->apply)) {
        if (call)
            reply_with_status(e, call, false, "the apply failed while settling (see the log)");
        engine_stop(e, 1);
        return;
    }
    e->paused = true;
    if (!sample_phase_event(e, PGS_EV_PAUSE, NULL)) {
        if (call)
            reply_with_status(e, call, false, "pgshift stopped (see the log)");
        return;
    }
    engine_publish(e);
    char lsn[18], msg[160];
    snprintf(msg, sizeof msg, "paused at applied position %s; the lag grows until `pgshift resume`",
             decode_lsn_format(e->m->applied_lsn, lsn));
    log_info("%s", msg);
    if (call)
        reply_with_status(e, call, true, msg);
}

static void do_resume(engine *e, control_call *call)
{
    if (!e->paused) {
        reply_with_status(e, call, true, e->pausing ? "not paused yet" : "not paused");
        return;
    }
    e->paused = false;
    if (!sample_phase_event(e, PGS_EV_RESUME, NULL)) {
        reply_with_status(e, call, false, "pgshift stopped (see the log)");
        return;
    }
    /* The reply says what the connect found: streaming, a slot that can
     * stream no more (the run stops, and engine_stop answers), or a
     * stream not back yet. */
    e->resume_call = call;
    bool streaming = flow_connect(e);
    if (e->resume_call == NULL)
        return;
    e->resume_call = NULL;
    if (!streaming)
        flow_schedule_reconnect(e);
    log_info("resumed");
    engine_publish(e);
    char lsn[18], msg[200];
    if (streaming)
        snprintf(msg, sizeof msg, "resumed: streaming again from %s",
                 decode_lsn_format(e->m->applied_lsn, lsn));
    else
        snprintf(msg, sizeof msg,
                 "resumed, but the source did not take the stream yet (see the log); pgshift "
                 "tries again in %d ms",
                 e->backoff_ms);
    reply_with_status(e, call, true, msg);
}

/* ---- control commands ---- */

/* `pgshift cutover`, or `pgshift rollback` (the reverse run's cutover is
 * the swap back): each only where it applies. */
static void do_swap(engine *e, control_call *call, bool rollback)
{
    const char *what = rollback ? "rollback" : "cutover";
    if (e->m->reverse != rollback)
        reply_with_status(e, call, false,
                          rollback ? "no rollback window is open (the migration is not cut over "
                                     "yet, or has no `rollback: {window}`); `pgshift abort` ends "
                                     "a migration before its cutover"
                                   : "the migration is cut over; the rollback window is open, and "
                                     "`pgshift rollback` swaps back");
    else if (e->co_call) {
        char msg[64];
        snprintf(msg, sizeof msg, "a %s request is already waiting", what);
        control_reply(call, false, msg, NULL);
    } else if (e->paused)
        reply_with_status(e, call, false, "paused; `pgshift resume` first");
    else {
        log_info("%s requested over the control socket", what);
        e->co_call = call;
        codriver_want(e->drv, true);
    }
}

static void do_postpone(engine *e, control_call *call, bool hold)
{
    codriver_hold_cmd(e->drv, hold ? 1 : -1);
    if (hold) {
        log_info("automatic cutover postponed by `pgshift postpone`");
        reply_with_status(e, call, true,
                          e->m->auto_cutover
                              ? "automatic cutover postponed until `pgshift unpostpone`"
                              : "postponed (this run has no --auto-cutover; `pgshift cutover` "
                                "still cuts over on request)");
        return;
    }
    log_info("automatic cutover released by `pgshift unpostpone` (the plan's postpone "
             "settings are overridden)");
    reply_with_status(e, call, true,
                      e->m->auto_cutover
                          ? "automatic cutover may proceed as soon as the lag allows"
                          : "released (this run has no --auto-cutover: use `pgshift cutover`)");
}

static void do_abort(engine *e, control_call *call, bool confirm)
{
    if (!confirm) {
        control_reply(call, false, "abort needs --confirm", NULL);
        return;
    }
    if (codriver_busy(e->drv)) {
        control_reply(call, false, "a cutover holds its locks right now; try again", NULL);
        return;
    }
    log_warn("stopping for `pgshift abort`");
    control_reply(call, true, "the run stops now; abort continues", NULL);
    engine_stop(e, 0);
}

static void on_control(void *arg, control_call *call, const Pgshift__ControlRequest *req)
{
    engine *e = arg;
    switch (req->command) {
    case PGSHIFT__COMMAND__COMMAND_CUTOVER:
    case PGSHIFT__COMMAND__COMMAND_ROLLBACK:
        do_swap(e, call, req->command == PGSHIFT__COMMAND__COMMAND_ROLLBACK);
        return;
    case PGSHIFT__COMMAND__COMMAND_STATUS:
        reply_with_status(e, call, true, pgs_phase_name(e->m->phase));
        return;
    case PGSHIFT__COMMAND__COMMAND_PAUSE:
        do_pause(e, call);
        return;
    case PGSHIFT__COMMAND__COMMAND_RESUME:
        do_resume(e, call);
        return;
    case PGSHIFT__COMMAND__COMMAND_POSTPONE:
    case PGSHIFT__COMMAND__COMMAND_UNPOSTPONE:
        do_postpone(e, call, req->command == PGSHIFT__COMMAND__COMMAND_POSTPONE);
        return;
    case PGSHIFT__COMMAND__COMMAND_ABORT:
        do_abort(e, call, req->confirm);
        return;
    case PGSHIFT__COMMAND__COMMAND_VERIFY_HOLD:
    case PGSHIFT__COMMAND__COMMAND_VERIFY_AT:
    case PGSHIFT__COMMAND__COMMAND_VERIFY_RELEASE:
    case PGSHIFT__COMMAND__COMMAND_VERIFY_RENEW:
        vhold_command(e, call, req->command, req->lsn, req->token);
        return;
    case PGSHIFT__COMMAND__COMMAND_VERIFY_DONE:
        verify_info_parse(req->verify_json, &e->m->verify);
        engine_publish(e);
        control_reply(call, true, "recorded", NULL);
        return;
    default:
        control_reply(call, false, "unknown command", NULL);
    }
}

/* ---- the cutover driver's ops ---- */

static void op_hold(void *arg, bool on)
{
    engine *e = arg;
    e->hold = on;
    if (on)
        eager_abandon(e, false, false, "a cutover holds the stream");
    else if (!e->stopping && stream_stalled(e->rs) && apply_ready(e->apply) && eager_ready(e))
        stream_resume(e->rs);
}

static bool op_commit(void *arg, bool sync)
{
    return flow_commit(arg, sync);
}

static bool op_at_rest(void *arg)
{
    engine *e = arg;
    return !flow_busy(e) && e->eg == EG_NONE;
}

static bool op_apply_failed(void *arg)
{
    return apply_failed(((engine *)arg)->apply);
}

static bool op_can_start(void *arg)
{
    engine *e = arg;
    pgs_phase ph = e->m->phase;
    /* Only from a streaming phase (a rerun still shows its last phase until
     * the first sample), between source transactions, with the ANALYZE of
     * a fresh copy done. */
    return !e->stopping && !e->paused && !e->pausing && e->vh == VH_NONE && stream_is_open(e->rs) &&
           (ph == PGS_PHASE_READY || ph == PGS_PHASE_CATCHING_UP) &&
           !atomic_load(&e->m->analyzing) && !apply_in_xact(e->apply) && reverse_slot_ready(e);
}

static pgs_lsn op_applied(void *arg)
{
    engine *e = arg;
    return e->m->applied_lsn > e->idle_confirm ? e->m->applied_lsn : e->idle_confirm;
}

static double op_apply_capacity(void *arg)
{
    engine *e = arg;
    return e->lag.peak_rate_bytes > e->lag.rate_bytes ? e->lag.peak_rate_bytes : e->lag.rate_bytes;
}

static void on_source_lsn(void *arg, const PGresult *res)
{
    engine *e = arg;
    pgs_lsn cur = 0;
    if (res != NULL && !e->stopping && decode_lsn_parse(PQgetvalue(res, 0, 0), &cur))
        codriver_source_lsn(e->drv, cur);
}

static void op_ask_lsn(void *arg)
{
    engine *e = arg;
    aquery *q = e->stopping ? NULL : sample_monitor(e);
    if (q)
        aquery_send(q, "SELECT pg_current_wal_insert_lsn()", 0, NULL, on_source_lsn, e);
}

static bool op_phase(void *arg, pgs_event ev, const char *detail)
{
    return sample_phase_event(arg, ev, detail);
}

static void op_event(void *arg, const char *name)
{
    engine *e = arg;
    if (strcmp(name, "cutover_done") == 0)
        engine_publish(e);
    engine_fire(e, name);
}

static void op_outcome(void *arg, bool ok, const char *msg)
{
    engine *e = arg;
    if (e->co_call) {
        control_reply(e->co_call, ok, msg, NULL);
        e->co_call = NULL;
    }
    if (!ok && e->m->cutover_once)
        engine_stop(e, 1);
}

static void op_stop(void *arg, int code)
{
    engine_stop(arg, code);
}

/* ---- the loop ---- */

static bool engine_open(engine *e)
{
    if (uv_loop_init(&e->loop) != 0)
        return false;
    uv_timer_init(&e->loop, &e->stop_timer);
    e->stop_timer.data = e;
    uv_signal_init(&e->loop, &e->sigint);
    uv_signal_init(&e->loop, &e->sigterm);
    e->sigint.data = e->sigterm.data = e;
    uv_signal_start(&e->sigint, on_signal, SIGINT);
    uv_signal_start(&e->sigterm, on_signal, SIGTERM);
    vhold_init(e);
    codriver_ops ops = {
        e,          op_hold,           op_commit,  op_at_rest, op_apply_failed, op_can_start,
        op_applied, op_apply_capacity, op_ask_lsn, op_phase,   op_event,        op_outcome,
        op_stop};
    e->drv = codriver_new(&e->loop, e->m, &ops);
    if (e->drv == NULL || !flow_init(e))
        return false;
    sample_start(e);
    reverse_engine_start(e);
    char *sock = control_socket_path(e->m->plan->state_dir, e->m->plan->name);
    e->ctl = sock ? control_listen(&e->loop, sock, on_control, e) : NULL;
    if (e->ctl)
        log_info("control socket %s (`pgshift cutover --plan %s` asks for the cutover)", sock,
                 e->m->plan->path);
    else
        log_warn("no control socket: `pgshift cutover` cannot reach this run%s",
                 e->m->auto_cutover ? "" : "; use `run --auto-cutover`");
    free(sock);
    return true;
}

/* Closes every handle, runs their close callbacks, frees what is left. */
static void engine_close(engine *e)
{
    reverse_engine_close(e);
    aquery_close(e->mon);
    e->mon = NULL;
    control_close(e->ctl);
    e->ctl = NULL;
    stream_close(e->rs);
    uv_walk(&e->loop, close_handle, NULL);
    uv_run(&e->loop, UV_RUN_DEFAULT);
    int rc = uv_loop_close(&e->loop);
    if (rc != 0)
        log_warn("event loop closed with handles still open: %s", uv_strerror(rc));
    codriver_free(e->drv);
    stream_free(e->rs);
    eager_free(e);
    apply_free(e->apply);
}

int run_engine(pgs_migration *m)
{
    engine *e = calloc(1, sizeof *e);
    if (e == NULL)
        return 1;
    e->m = m;
    int rc = 1;
    if (engine_open(e)) {
        engine_publish(e);
        if (m->just_copied)
            engine_fire(e, "copy_done");
        if (m->auto_cutover)
            codriver_want(e->drv, m->cutover_once);
        if (!flow_connect(e))
            flow_schedule_reconnect(e);
        uv_run(&e->loop, UV_RUN_DEFAULT);
        rc = e->exit_code;
        if (rc == 1) {
            if (m->phase != PGS_PHASE_DONE &&
                !state_transition(m, PGS_EV_ERROR, "apply stopped on an error; see the log"))
                log_warn("the failed phase could not be written (see above); `pgshift status` "
                         "may show the phase before it");
            engine_fire(e, "failed");
        }
    }
    engine_close(e);
    free(e);
    return rc;
}
