/* stream.c: the catch-up loop on libuv. One loop owns the replication
 * socket (uv_poll on PQsocket), the apply connection's socket, the source
 * monitor (aquery.h), the feedback, batch, stats and reconnect timers, and
 * the signal handlers. Decoded messages go to the applier; the flush
 * position reported to the server is only ever what the applier has
 * durably committed (or, when nothing is pending, the keepalive position).
 *
 * Nothing on this loop waits for a server: the applier sends and reads
 * without blocking (apply.h), the monitor's queries complete in callbacks,
 * and while the applier cannot take more, the stream is held back by
 * buffering at most SIDE_BUFFER_MAX in libpq and then stopping the
 * replication socket's poll handle. A slow or silent target therefore
 * never keeps SIGTERM, the control socket or the timers waiting. */
#include "pgshift/apply.h"
#include "pgshift/aquery.h"
#include "pgshift/control.h"
#include "pgshift/cutover.h"
#include "pgshift/hooks.h"
#include "pgshift/lag.h"
#include "pgshift/log.h"
#include "pgshift/pg.h"
#include "pgshift/repl.h"
#include "pgshift/status.h"
#include "pgshift/store.h"

#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define FEEDBACK_MS     1000
#define STATS_MS        2000
#define BACKOFF_MAX_MS  30000
#define CUTOVER_TICK_MS 50
/* How much of the stream may pile up in libpq's buffer while the applier
 * waits on the target, before the walsender is left to wait instead. */
#define SIDE_BUFFER_MAX (4 << 20)
/* How long a stop waits for the target to answer the batch in flight. */
#define STOP_WAIT_MS 1500
/* A monitor query unanswered this long: the connection is replaced. */
#define MONITOR_STUCK_MS 30000

typedef enum co_state {
    CO_NONE,     /* no cutover wanted */
    CO_WANTED,   /* waiting for readiness or the next attempt */
    CO_RESTING,  /* ready to lock: the stream is held while the applier comes to rest */
    CO_FENCE,    /* locks held, fence emitted: applying up to it */
    CO_AT_FENCE, /* fence reached: the stream is held while the last batch commits */
} co_state;

typedef struct stream {
    pgs_migration *m;
    uv_loop_t loop;
    uv_poll_t *poll;      /* one per connection: the socket can change on reconnect */
    bool poll_stopped;    /* held back: SIDE_BUFFER_MAX buffered while the applier was busy */
    bool stalled;         /* process_buffered stopped before libpq's buffer was drained */
    bool hold;            /* the cutover holds the stream (CO_RESTING, CO_AT_FENCE) */
    uv_poll_t apply_poll; /* the apply connection: batch results as they arrive */
    bool apply_polling;
    aquery *mon;         /* the source monitor: WAL position, slot health */
    double mon_retry_ms; /* when to open a new monitor connection */
    uv_timer_t stop_timer;
    bool finished; /* finish_stop ran */
    bool pausing;  /* settling the applier for `pgshift pause` */
    control_call *pause_call;
    uv_timer_t feedback_timer;
    uv_timer_t batch_timer;
    uv_timer_t stats_timer;
    uv_timer_t reconnect_timer;
    uv_signal_t sigint;
    uv_signal_t sigterm;
    PGconn *repl;
    apply_ctx *apply;
    decode_ctx dec;
    bool binary;
    pgs_lsn received;     /* end of the WAL the server has sent us */
    long side_buffered;   /* bytes buffered by buffer_stream since the last drain */
    bool side_full;       /* buffer_stream is off until process_buffered drains */
    pgs_lsn idle_confirm; /* keepalive position seen with nothing pending */
    double last_feedback_ms;
    pgs_lsn last_flush_sent;
    int backoff_ms;
    int exit_code;
    bool stopping;
    /* stats: the lag model (lag.h) fed by each sample */
    lag_model lag;
    pgs_lsn last_applied;
    pgs_lsn last_source_lsn;
    double last_log_ms;
    long long slot_retained;
    long long slot_safe; /* -1 unlimited */
    char wal_status[32];
    /* operator controls (control socket) */
    double last_slot_warn_ms;
    bool paused;
    int hold_cmd; /* `pgshift postpone` 1, `unpostpone` -1, else 0: follow the plan */
    /* cutover (cutover.h) */
    control_server *ctl;
    uv_timer_t co_timer;
    cutover *co;
    co_state co_state;
    control_call *co_call; /* a `pgshift cutover` waiting for the outcome */
    int co_attempts;
    int co_backoff_ms;
    double co_next_try_ms;
    double co_lock_wait_ms; /* of the current attempt */
    double co_locked_at_ms;
    double co_fence_sent_ms;
    double co_worst_failed_ms; /* longest the application waited in a failed attempt */
    double co_last_window_ms;  /* what the application waited in the last attempt */
    char co_nonce[128];
    pgs_lsn co_fence_lsn;
    uint64_t co_lag_bytes; /* when the attempt was decided */
    double co_fence_ms;    /* fence sent -> reached */
    cutover_blocker co_blocker;
    bool co_have_blocker;
    double co_last_wait_log_ms;
    /* postponing an automatic cutover (plan cutover.postpone / postpone_file) */
    struct timespec plan_mtime;
    bool postpone;
    char *postpone_file;
    char postpone_why[512];
} stream;

static double now_ms(void)
{
    return (double)uv_hrtime() / 1e6;
}

static void stop_loop(stream *s, int code);

/* What may be confirmed to the slot: the applied position the target has
 * durably flushed, or with nothing pending and everything flushed, the
 * last keepalive position. */
static pgs_lsn flush_position(stream *s)
{
    /* The target's flush position comes with each batch's result and
     * with the probes on_feedback queues (apply_probe_flush). */
    pgs_lsn f = apply_durable_lsn(s->apply, 0);
    if (apply_idle(s->apply) && s->idle_confirm > f)
        f = s->idle_confirm;
    return f;
}

static void send_feedback(stream *s, bool reply)
{
    /* After an apply failure nothing more is confirmed: the failed
     * transactions must be sent again. */
    if (s->repl == NULL || s->exit_code == 1)
        return;
    pgs_lsn flush = flush_position(s);
    pgs_lsn write = s->received > flush ? s->received : flush;
    char w[18], f[18], ic[18], ap[18];
    log_debug("feedback: write %s flush %s (idle confirm %s, applied %s)",
              decode_lsn_format(write, w), decode_lsn_format(flush, f),
              decode_lsn_format(s->idle_confirm, ic), decode_lsn_format(s->m->applied_lsn, ap));
    repl_send_status(s->repl, write, flush, reply);
    s->last_feedback_ms = now_ms();
    s->last_flush_sent = flush;
}

/* A batch completed: confirm it without waiting for the feedback timer when
 * the applier has nothing else going (the end of a burst: the slot, and
 * whoever waits on it, learn at once), else at most every 100 ms. */
static void feedback_after_batch(stream *s)
{
    if (s->repl == NULL || apply_durable_lsn(s->apply, 0) <= s->last_flush_sent)
        return;
    if (!apply_batch_open(s->apply) || now_ms() - s->last_feedback_ms > 100)
        send_feedback(s, false);
}

static void disconnect(stream *s, bool retry);
static void update_apply_poll(stream *s);

/* `sync` for a batch closed because everything the walsender had sent is
 * applied (see apply_commit_batch): at the end of a burst no later commit
 * would flush it soon. Batches closed for size or age mid-stream stay
 * asynchronous. */
static bool commit_batch(stream *s, bool sync)
{
    if (!apply_commit_batch(s->apply, sync)) {
        stop_loop(s, 1);
        return false;
    }
    if (now_ms() - s->last_feedback_ms > 100)
        send_feedback(s, false);
    return true;
}

static void process_buffered(stream *s);
static void cutover_at_fence(stream *s);
static void fire(stream *s, const char *event);
static void publish(stream *s);

static void on_batch_timer(uv_timer_t *t)
{
    stream *s = t->data;
    if (s->stopping || s->hold)
        return;
    if (apply_batch_open(s->apply) && !apply_in_xact(s->apply))
        commit_batch(s, true);
    update_apply_poll(s);
}

static bool handle_copydata(stream *s, const uint8_t *buf, size_t len)
{
    decode_frame f;
    decode_error err;
    if (!decode_frame_parse(buf, len, &f, &err)) {
        log_error("replication stream: bad frame at byte %zu: %s", err.offset, err.msg);
        return false;
    }
    if (f.wal_end > s->received)
        s->received = f.wal_end;
    if (f.kind == DECODE_FRAME_KEEPALIVE) {
        /* Only with nothing open, in flight or unflushed: a batch still in
         * flight may yet fail, and its transactions must come again. */
        if (apply_idle(s->apply))
            s->idle_confirm = f.wal_end;
        if (f.reply_requested)
            send_feedback(s, false);
        return true;
    }
    decode_msg msg;
    if (!decode_message(&s->dec, f.data, f.len, &msg, &err)) {
        char lsn[18];
        log_error("pgoutput message at %s: byte %zu: %s", decode_lsn_format(f.wal_start, lsn),
                  err.offset, err.msg);
        return false;
    }
    if (!apply_message(s->apply, &msg))
        return false;
    if (msg.kind == DECODE_MESSAGE && s->co_state == CO_FENCE &&
        !(msg.u.message.flags & DECODE_MESSAGE_TRANSACTIONAL) &&
        strcmp(msg.u.message.prefix, "pgshift_fence") == 0 &&
        msg.u.message.len == strlen(s->co_nonce) &&
        memcmp(msg.u.message.content, s->co_nonce, msg.u.message.len) == 0) {
        cutover_at_fence(s);
        return !s->stopping || s->exit_code != 1;
    }
    if (msg.kind == DECODE_COMMIT &&
        (apply_batch_changes(s->apply) >= s->m->plan->apply.batch_changes ||
         apply_batch_age_ms(s->apply) >= s->m->plan->apply.batch_ms))
        return commit_batch(s, false);
    return true;
}

static void on_readable(uv_poll_t *h, int status, int events)
{
    stream *s = h->data;
    if (s->repl == NULL)
        return;
    int avail = 0;
    if (s->stalled && ioctl(PQsocket(s->repl), FIONREAD, &avail) == 0 && avail > 0)
        s->side_buffered += avail;
    if (status < 0 || PQconsumeInput(s->repl) == 0) {
        log_warn("replication connection lost: %s",
                 status < 0 ? uv_strerror(status) : PQerrorMessage(s->repl));
        disconnect(s, true);
        return;
    }
    if (!s->stalled) {
        process_buffered(s);
        return;
    }
    /* The applier cannot take more (or the cutover holds the stream): keep
     * the walsender decoding into libpq's buffer, up to SIDE_BUFFER_MAX;
     * past that, stop reading and let it wait. */
    if (s->side_buffered >= SIDE_BUFFER_MAX && !s->poll_stopped) {
        uv_poll_stop(s->poll);
        s->poll_stopped = true;
    }
}

/* Decodes and applies every message libpq holds, then commits a batch
 * that has waited long enough (or arms the batch timer). */
static void process_buffered(stream *s)
{
    s->stalled = false;
    for (;;) {
        if (s->stopping || s->repl == NULL)
            return;
        if (s->hold || !apply_ready(s->apply)) {
            /* Back-pressure: continue_after_apply comes back here. */
            s->stalled = true;
            update_apply_poll(s);
            return;
        }
        char *buf = NULL;
        int n = PQgetCopyData(s->repl, &buf, 1);
        if (n == 0) {
            /* Drained: read the socket again. */
            s->side_buffered = 0;
            if (s->poll_stopped) {
                s->poll_stopped = false;
                uv_poll_start(s->poll, UV_READABLE, on_readable);
            }
            break;
        }
        if (n < 0) {
            PGresult *res = PQgetResult(s->repl);
            char line[1024];
            log_warn("replication stream ended: %s",
                     n == -2 ? PQerrorMessage(s->repl)
                             : pg_result_error_line(res, line, sizeof line));
            PQclear(res);
            disconnect(s, true);
            return;
        }
        bool ok = handle_copydata(s, (const uint8_t *)buf, (size_t)n);
        PQfreemem(buf);
        if (!ok) {
            stop_loop(s, 1);
            return;
        }
        if (s->stopping)
            return;
    }
    /* Nothing more buffered: commit a batch that has waited long enough,
     * or come back for it shortly. */
    if (apply_batch_open(s->apply) && !apply_in_xact(s->apply)) {
        double age = apply_batch_age_ms(s->apply);
        double wait = s->m->plan->apply.idle_commit_ms;
        if (age >= wait)
            commit_batch(s, true);
        else
            uv_timer_start(&s->batch_timer, on_batch_timer, (uint64_t)(wait - age) + 1, 0);
    }
    update_apply_poll(s);
}

static void on_apply_ready(uv_poll_t *h, int status, int events);

/* Watches the apply socket for results, and for room to write while
 * libpq holds output the kernel has not taken. */
static void update_apply_poll(stream *s)
{
    if (!s->apply_polling || s->finished)
        return;
    int ev = UV_READABLE | (apply_want_write(s->apply) ? UV_WRITABLE : 0);
    uv_poll_start(&s->apply_poll, ev, on_apply_ready);
}

static void finish_stop(stream *s);
static void finish_pause(stream *s);
static void co_lock(stream *s);
static void co_swap(stream *s);

/* The applier made progress (results, room to write): whatever waited for
 * it goes on. */
static void continue_after_apply(stream *s)
{
    if (s->stopping) {
        if (!apply_busy(s->apply) || apply_failed(s->apply))
            finish_stop(s);
        else
            update_apply_poll(s);
        return;
    }
    update_apply_poll(s);
    if (apply_busy(s->apply))
        ; /* the rest needs the applier at rest */
    else if (s->pausing)
        finish_pause(s);
    else if (s->co_state == CO_RESTING)
        co_lock(s);
    else if (s->co_state == CO_AT_FENCE)
        co_swap(s);
    if (!s->stopping && s->repl && s->stalled && !s->hold && apply_ready(s->apply))
        process_buffered(s);
}

/* Results of committed batches arrive while the loop waits on the stream. */
static void on_apply_ready(uv_poll_t *h, int status, int events)
{
    (void)events;
    stream *s = h->data;
    if (status < 0) {
        log_error("apply: watching the target connection failed: %s", uv_strerror(status));
        if (s->stopping)
            finish_stop(s);
        else
            stop_loop(s, 1);
        return;
    }
    if (!apply_poll(s->apply)) {
        if (s->stopping)
            finish_stop(s);
        else
            stop_loop(s, 1);
        return;
    }
    feedback_after_batch(s);
    continue_after_apply(s);
}

static void on_poll_closed(uv_handle_t *h)
{
    free(h);
}

static bool connect_stream(stream *s)
{
    s->repl = repl_connect(s->m);
    if (s->repl == NULL)
        return false;
    char lsn[18];
    if (!repl_start(s->m, s->repl, s->m->applied_lsn, s->binary)) {
        PQfinish(s->repl);
        s->repl = NULL;
        return false;
    }
    decode_ctx_free(&s->dec);
    decode_ctx_init(&s->dec, 1);
    s->poll = malloc(sizeof *s->poll);
    if (s->poll == NULL || uv_poll_init(&s->loop, s->poll, PQsocket(s->repl)) != 0) {
        free(s->poll);
        s->poll = NULL;
        PQfinish(s->repl);
        s->repl = NULL;
        return false;
    }
    s->poll->data = s;
    uv_poll_start(s->poll, UV_READABLE, on_readable);
    s->side_buffered = 0;
    s->poll_stopped = false;
    s->stalled = false;
    log_info("streaming from slot %s at %s", s->m->slot, decode_lsn_format(s->m->applied_lsn, lsn));
    s->backoff_ms = 0;
    return true;
}

static void on_reconnect(uv_timer_t *t);

/* Tries again after 1 s, doubling up to BACKOFF_MAX_MS. */
static void schedule_reconnect(stream *s)
{
    s->backoff_ms = s->backoff_ms ? s->backoff_ms * 2 : 1000;
    if (s->backoff_ms > BACKOFF_MAX_MS)
        s->backoff_ms = BACKOFF_MAX_MS;
    log_warn("reconnecting in %d ms", s->backoff_ms);
    uv_timer_start(&s->reconnect_timer, on_reconnect, (uint64_t)s->backoff_ms, 0);
}

static void on_reconnect(uv_timer_t *t)
{
    stream *s = t->data;
    if (s->stopping || s->paused || s->pausing)
        return;
    /* The stream restarts from the applied position: wait until it is final. */
    if (apply_busy(s->apply)) {
        uv_timer_start(&s->reconnect_timer, on_reconnect, 100, 0);
        return;
    }
    if (!connect_stream(s))
        schedule_reconnect(s);
}

/* Stops watching the replication socket (before PQfinish; the socket can
 * differ after a reconnect, so the handle goes with it). */
static void detach_poll(stream *s)
{
    s->stalled = false;
    s->poll_stopped = false;
    s->side_buffered = 0;
    if (s->poll) {
        uv_poll_stop(s->poll);
        uv_close((uv_handle_t *)s->poll, on_poll_closed);
        s->poll = NULL;
    }
}

/* Starts bringing the applier to rest: complete source transactions are
 * committed, a half-received one (or everything, after a failure) is
 * rolled back — the slot sends those again. m->applied_lsn is final once
 * apply_busy() is false; continue_after_apply goes on from there. */
static void settle_apply(stream *s, bool failed)
{
    if (failed || apply_failed(s->apply))
        apply_rollback_batch(s->apply);
    else if (apply_batch_open(s->apply)) {
        if (apply_in_xact(s->apply))
            apply_rollback_batch(s->apply);
        else
            apply_commit_batch(s->apply, true);
    }
    update_apply_poll(s);
}

/* Drops the replication connection and reconnects from the applied
 * position once the applier is at rest (on_reconnect waits for that). */
static void disconnect(stream *s, bool retry)
{
    detach_poll(s);
    settle_apply(s, false);
    if (s->repl) {
        PQfinish(s->repl);
        s->repl = NULL;
    }
    if (s->stopping)
        return;
    if (retry && !apply_failed(s->apply))
        schedule_reconnect(s);
    else
        stop_loop(s, 1);
}

static void close_handle(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void on_stop_deadline(uv_timer_t *t)
{
    finish_stop(t->data);
}

/* Stops the run: the stream is no longer read, the applier is brought to
 * rest, and finish_stop ends the loop once it is — or after STOP_WAIT_MS
 * when the target does not answer. */
static void stop_loop(stream *s, int code)
{
    if (s->stopping)
        return;
    s->stopping = true;
    s->exit_code = code;
    if (s->co && cutover_locked(s->co)) {
        cutover_release(s->co);
        log_warn("cutover abandoned: locks released, nothing renamed");
    }
    if (s->co_call) {
        control_reply(s->co_call, false,
                      s->m->phase == PGS_PHASE_DONE ? "cut over" : "pgshift run stopped", NULL);
        s->co_call = NULL;
    }
    if (s->pause_call) {
        control_reply(s->pause_call, false, "pgshift run stopped", NULL);
        s->pause_call = NULL;
    }
    control_close(s->ctl);
    s->ctl = NULL;
    detach_poll(s);
    uv_timer_stop(&s->batch_timer);
    uv_timer_stop(&s->reconnect_timer);
    settle_apply(s, code == 1);
    uv_timer_start(&s->stop_timer, on_stop_deadline, STOP_WAIT_MS, 0);
    continue_after_apply(s);
}

/* The applier is at rest (or the target did not answer in time): confirm
 * what is durable, close everything, and let the loop end. */
static void finish_stop(stream *s)
{
    if (s->finished)
        return;
    s->finished = true;
    char lsn[18];
    if (apply_failed(s->apply) && s->exit_code != 1)
        s->exit_code = 1;
    else if (apply_busy(s->apply))
        log_warn("the target did not answer within %d ms; stopping without waiting for it: "
                 "nothing past %s is confirmed to the slot, and `pgshift run` resumes from there",
                 STOP_WAIT_MS, decode_lsn_format(apply_durable_lsn(s->apply, 0), lsn));
    if (s->repl) {
        send_feedback(s, false);
        PQfinish(s->repl);
        s->repl = NULL;
    }
    aquery_close(s->mon);
    s->mon = NULL;
    uv_walk(&s->loop, close_handle, NULL);
}

static void on_signal(uv_signal_t *h, int signum)
{
    stream *s = h->data;
    char lsn[18];
    log_info("received %s: stopping at applied position %s; `pgshift run` resumes from there",
             signum == SIGINT ? "SIGINT" : "SIGTERM", decode_lsn_format(s->m->applied_lsn, lsn));
    stop_loop(s, 128 + signum);
}

static void on_feedback(uv_timer_t *t)
{
    stream *s = t->data;
    if (s->stopping)
        return;
    /* Asynchronous commits become durable when the target flushes them:
     * ask where that is (its answer moves apply_durable_lsn). */
    if (!apply_probe_flush(s->apply)) {
        stop_loop(s, 1);
        return;
    }
    update_apply_poll(s);
    /* A stream held back while the applier was busy goes on when the
     * applier's socket reports progress (continue_after_apply); should the
     * applier have become ready without a report, go on from here. */
    if (s->repl && s->stalled && !s->hold && apply_ready(s->apply)) {
        log_debug("stream held back with the applier ready: reading on");
        process_buffered(s);
    }
    if (now_ms() - s->last_feedback_ms >= FEEDBACK_MS * 0.9)
        send_feedback(s, false);
}

/* The source monitor's connection, opened again (at most every 10 s) when
 * it failed or a query of it hung. False while there is none. */
static bool monitor_ready(stream *s)
{
    if (s->mon && aquery_busy(s->mon) && aquery_waited_ms(s->mon) > MONITOR_STUCK_MS) {
        log_warn("source monitor: no answer in %d s; opening a new connection",
                 MONITOR_STUCK_MS / 1000);
        aquery_close(s->mon);
        s->mon = NULL;
    }
    if (s->mon && aquery_broken(s->mon)) {
        aquery_close(s->mon);
        s->mon = NULL;
        s->mon_retry_ms = now_ms() + 10000;
    }
    if (s->mon == NULL && now_ms() >= s->mon_retry_ms) {
        s->mon_retry_ms = now_ms() + 10000;
        PGconn *c = pg_connect(s->m->plan->source, "source (monitor)", false);
        s->mon = c ? aquery_open(&s->loop, c, "sampling the source") : NULL;
    }
    return s->mon != NULL && !aquery_busy(s->mon);
}

/* A phase change through the transition table (phase.h). The write goes
 * through the apply connection, in order with the batches, without
 * waiting (the loop must not). False, and the run stops, on a transition
 * the table does not have (a bug) or a failed send. */
static bool phase_event(stream *s, pgs_event ev, const char *detail)
{
    state_write w;
    if (!state_transition_async(s->m, ev, detail, &w) ||
        (w.sql && !apply_send_state(s->apply, w.sql, w.nparams, w.params))) {
        stop_loop(s, 1);
        return false;
    }
    update_apply_poll(s);
    return true;
}

static void on_sample(void *arg, const PGresult *res);

/* Samples the source's WAL position and the slot (on_sample has the rest). */
static void on_stats(uv_timer_t *t)
{
    stream *s = t->data;
    if (s->stopping || !monitor_ready(s))
        return;
    aquery_send(s->mon,
                "SELECT pg_current_wal_lsn(),"
                "  (SELECT pg_current_wal_lsn() - restart_lsn FROM pg_replication_slots"
                "    WHERE slot_name = $1),"
                "  (SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1),"
                "  (SELECT safe_wal_size FROM pg_replication_slots WHERE slot_name = $1)",
                1, (const char *[]){s->m->slot}, on_sample, s);
}

/* Updates rates, the phase and the stats row that `pgshift status` reads
 * from a sample of the source. */
static void on_sample(void *arg, const PGresult *res)
{
    stream *s = arg;
    pgs_migration *m = s->m;
    if (res == NULL || s->stopping)
        return;
    pgs_lsn cur = 0;
    decode_lsn_parse(PQgetvalue(res, 0, 0), &cur);
    long long retained = atoll(PQgetvalue(res, 0, 1));
    char wal_status[32];
    snprintf(wal_status, sizeof wal_status, "%s", PQgetvalue(res, 0, 2));
    bool safe_null = PQgetisnull(res, 0, 3);
    long long safe = atoll(PQgetvalue(res, 0, 3));

    double t_ms = now_ms();
    const apply_stats *st = apply_get_stats(s->apply);
    pgs_lsn applied = flush_position(s);
    bool idle = apply_idle(s->apply) && s->idle_confirm >= s->received;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    lag_input in = {
        .t_ms = t_ms,
        .source_lsn = cur,
        .applied_lsn = applied,
        .changes = (int64_t)st->changes,
        .xacts = (int64_t)st->xacts,
        .last_commit_us = st->last_commit_time ? decode_ts_to_unix_us(st->last_commit_time) : 0,
        .now_us = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000,
        .idle = idle,
        .max_lag_bytes = m->plan->cutover.max_lag_bytes,
        .slot_retained = retained,
        .safe_wal_size = safe_null ? LAG_SAFE_UNKNOWN : safe,
        .wal_status = wal_status,
    };
    lag_sample(&s->lag, &in);
    hooks_reap();
    s->last_applied = applied;
    s->last_source_lsn = cur;
    uint64_t lag = s->lag.lag_bytes;
    double lag_s = s->lag.lag_seconds, eta = s->lag.eta_seconds;
    /* Ask for a keepalive: with nothing pending its position may be
     * confirmed, so an idle source's WAL (ours included) does not count as lag. */
    if (!apply_batch_open(s->apply) && !apply_in_xact(s->apply))
        send_feedback(s, true);
    s->slot_retained = retained;
    s->slot_safe = safe_null ? -1 : safe;
    /* Before max_slot_wal_keep_size invalidates the slot (wal_status "lost":
     * the migration would have to start over), say so, once a minute. */
    if (s->lag.slot_at_risk && t_ms - s->last_slot_warn_ms >= 60000) {
        log_warn("slot %s is at risk: wal_status %s, %.0f MB of WAL retained, %s before "
                 "max_slot_wal_keep_size invalidates it; catch up (pause the heaviest writers), "
                 "or raise max_slot_wal_keep_size",
                 m->slot, wal_status, (double)retained / 1048576.0,
                 safe_null ? "unknown" : (safe <= 0 ? "nothing left" : "little left"));
        s->last_slot_warn_ms = t_ms;
    }
    snprintf(s->wal_status, sizeof s->wal_status, "%s", wal_status);
    pgs_phase phase = lag_ready(&s->lag) ? PGS_PHASE_READY : PGS_PHASE_CATCHING_UP;
    if (phase != m->phase && m->phase != PGS_PHASE_CUTTING_OVER && m->phase != PGS_PHASE_DONE &&
        !s->paused && !s->pausing) {
        char why[64];
        snprintf(why, sizeof why, "lag %llu bytes", (unsigned long long)lag);
        if (!phase_event(s, phase == PGS_PHASE_READY ? PGS_EV_LAG_OK : PGS_EV_LAG_HIGH, why))
            return;
        if (m->phase == PGS_PHASE_READY)
            fire(s, "ready");
    }
    json_t *o =
        json_pack("{s:I,s:f,s:f,s:f,s:f,s:f,s:f,s:I,s:s,s:I,s:I,s:I}", "lag_bytes", (json_int_t)lag,
                  "lag_seconds", lag_s, "apply_changes_per_second", s->lag.rate_changes,
                  "apply_xacts_per_second", s->lag.rate_xacts, "apply_bytes_per_second",
                  s->lag.rate_bytes, "wal_bytes_per_second", s->lag.rate_wal, "eta_seconds",
                  isnan(eta) ? 0.0 : eta, "slot_retained_bytes", (json_int_t)retained, "wal_status",
                  wal_status, "safe_wal_size", (json_int_t)(safe_null ? -1 : safe), "source_lsn",
                  (json_int_t)cur, "confirmed_lsn", (json_int_t)applied);
    if (o && isnan(eta))
        json_object_set_new(o, "eta_seconds", json_null());
    char *js = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    /* Written through the applier, in order with its batches; skipped
     * while it cannot take more (a stuck target must not pile them up). */
    if (js && apply_ready(s->apply)) {
        if (!apply_send_state(s->apply, store_sql_write_stats(), 2,
                              (const char *[]){m->plan->name, js}))
            stop_loop(s, 1);
        update_apply_poll(s);
    }
    free(js);
    publish(s);
    if (t_ms - s->last_log_ms >= 10000) {
        char a[18], eta_txt[32];
        snprintf(eta_txt, sizeof eta_txt, "%.0f s", eta);
        log_info("%s: lag %.1f MB / %.1f s, applied %s, %.0f changes/s, %.0f xacts/s, ETA %s",
                 pgs_phase_name(m->phase), (double)lag / 1048576.0, lag_s,
                 decode_lsn_format(applied, a), s->lag.rate_changes, s->lag.rate_xacts,
                 isnan(eta) ? "not known yet"
                 : eta < 0  ? "never (source writes faster)"
                 : eta == 0 ? "caught up"
                            : eta_txt);
        s->last_log_ms = t_ms;
    }
}

/* ---- cutover (cutover.h has the steps) ---- */

/* The cutover no longer holds the stream: read on. */
static void release_hold(stream *s)
{
    if (!s->hold)
        return;
    s->hold = false;
    if (!s->stopping && s->repl)
        process_buffered(s);
}

static void co_reply(stream *s, bool ok, const char *msg)
{
    if (s->co_call) {
        control_reply(s->co_call, ok, msg, NULL);
        s->co_call = NULL;
    }
}

static void co_blocker_text(const stream *s, char *buf, size_t len)
{
    const cutover_blocker *b = &s->co_blocker;
    if (!s->co_have_blocker)
        snprintf(buf, len, "the blocking session had ended by the time it was looked up");
    else
        snprintf(buf, len,
                 "blocked by pid %d (application '%s', in a transaction for %.1f s, holding %s "
                 "on %s; query: %s)",
                 b->pid, b->application, b->xact_age_s, b->mode, b->relation, b->query);
}

/* Ends the current request without a swap: the migration keeps streaming. */
static void co_give_up(stream *s, const char *why)
{
    log_error("cutover not done: %s; the migration keeps streaming, and `pgshift cutover --plan "
              "%s` tries again",
              why, s->m->plan->path);
    co_reply(s, false, why);
    s->co_state = CO_NONE;
    s->co_attempts = 0;
    s->co_backoff_ms = 0;
    uv_timer_stop(&s->co_timer);
    if (s->m->phase == PGS_PHASE_CUTTING_OVER && !phase_event(s, PGS_EV_CUTOVER_RELEASED, why))
        return;
    release_hold(s);
}

/* An attempt that did not get (or keep) its locks: wait, catch up, retry. */
static void co_attempt_failed(stream *s, const char *why, double app_wait_ms)
{
    if (app_wait_ms > s->co_worst_failed_ms)
        s->co_worst_failed_ms = app_wait_ms;
    s->co_last_window_ms = app_wait_ms;
    if (s->m->phase == PGS_PHASE_CUTTING_OVER && !phase_event(s, PGS_EV_CUTOVER_RELEASED, why))
        return;
    if (s->co_attempts >= s->m->plan->cutover.attempts) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%d attempt(s) failed; the last: %s", s->co_attempts, why);
        co_give_up(s, msg);
        return;
    }
    s->co_backoff_ms = s->co_backoff_ms ? s->co_backoff_ms * 2 : 250;
    if (s->co_backoff_ms > 5000)
        s->co_backoff_ms = 5000;
    s->co_next_try_ms = now_ms() + s->co_backoff_ms;
    s->co_state = CO_WANTED;
    log_warn("cutover attempt %d/%d: %s; the application waited %.0f ms; retrying in %d ms",
             s->co_attempts, s->m->plan->cutover.attempts, why, app_wait_ms, s->co_backoff_ms);
    release_hold(s);
}

/* Re-reads the plan's postpone settings when the file changes, so that an
 * operator can hold back or release an automatic cutover while it runs. */
static bool co_postponed(stream *s)
{
    struct stat st;
    if (stat(s->m->plan->path, &st) == 0 && (st.st_mtim.tv_sec != s->plan_mtime.tv_sec ||
                                             st.st_mtim.tv_nsec != s->plan_mtime.tv_nsec)) {
        s->plan_mtime = st.st_mtim;
        char err[512];
        pgs_plan *p = pgs_plan_load(s->m->plan->path, err, sizeof err);
        if (p == NULL) {
            log_warn("re-reading the plan for cutover.postpone: %s; holding the cutover back", err);
            s->postpone = true;
        } else {
            s->postpone = p->cutover.postpone;
            free(s->postpone_file);
            s->postpone_file = p->cutover.postpone_file ? strdup(p->cutover.postpone_file) : NULL;
            pgs_plan_free(p);
        }
    }
    char why[512] = "";
    if (s->hold_cmd > 0)
        snprintf(why, sizeof why, "held by `pgshift postpone`");
    else if (s->hold_cmd < 0)
        why[0] = '\0'; /* `pgshift unpostpone` overrides the plan and the flag file */
    else if (s->postpone)
        snprintf(why, sizeof why, "cutover.postpone is true in %s", s->m->plan->path);
    else if (s->postpone_file && access(s->postpone_file, F_OK) == 0)
        snprintf(why, sizeof why, "the flag file %s exists", s->postpone_file);
    if (strcmp(why, s->postpone_why) != 0) {
        if (why[0])
            log_info("automatic cutover postponed: %s", why);
        else
            log_info("automatic cutover no longer postponed");
        snprintf(s->postpone_why, sizeof s->postpone_why, "%s", why);
    }
    return why[0] != '\0';
}

static void co_try(stream *s, pgs_lsn source_lsn);

/* The source's insert position, for the lag the cutover waits on: asked
 * through the monitor, co_try goes on with the answer. */
static void on_co_lsn(void *arg, const PGresult *res)
{
    stream *s = arg;
    pgs_lsn cur = 0;
    if (res == NULL || s->stopping || s->co_state != CO_WANTED ||
        !decode_lsn_parse(PQgetvalue(res, 0, 0), &cur))
        return;
    co_try(s, cur);
}

static void co_ask_lsn(stream *s)
{
    if (monitor_ready(s))
        aquery_send(s->mon, "SELECT pg_current_wal_insert_lsn()", 0, NULL, on_co_lsn, s);
}

/* A cutover is wanted: when the lag allows and nothing refuses, bring the
 * applier to rest (co_lock goes on once it is). */
static void co_try(stream *s, pgs_lsn source_lsn)
{
    pgs_migration *m = s->m;
    double t = now_ms();
    if (t < s->co_next_try_ms || s->repl == NULL)
        return;
    if (s->co_call == NULL && co_postponed(s))
        return;
    if (s->paused || s->pausing)
        return;
    /* Only from a streaming phase (a rerun still shows its last phase until
     * the first sample). */
    if (m->phase != PGS_PHASE_READY && m->phase != PGS_PHASE_CATCHING_UP)
        return;
    if (atomic_load(&m->analyzing) || apply_in_xact(s->apply))
        return;
    pgs_lsn applied = m->applied_lsn > s->idle_confirm ? m->applied_lsn : s->idle_confirm;
    uint64_t lag = source_lsn > applied ? source_lsn - applied : 0;
    s->co_lag_bytes = lag;
    if (lag > m->plan->cutover.max_lag_bytes) {
        if (t - s->co_last_wait_log_ms > 10000) {
            log_info("cutover waits for the lag to drop under cutover.max_lag (%.1f MB; now "
                     "%.1f MB)",
                     (double)m->plan->cutover.max_lag_bytes / 1048576.0, (double)lag / 1048576.0);
            s->co_last_wait_log_ms = t;
        }
        return;
    }
    if (s->co == NULL && (s->co = cutover_new(m)) == NULL) {
        co_give_up(s, "cannot open the cutover connections (see the log)");
        return;
    }
    char first[1024];
    int problems = cutover_check(s->co, true, first, sizeof first);
    if (problems != 0) {
        /* An automatic cutover waits for the operator to fix it; a
         * requested one answers now. */
        if (s->co_call || problems < 0)
            co_give_up(s, problems < 0 ? "reading the dependent objects failed" : first);
        else /* the catalog reads are not free: look again in a while */
            s->co_next_try_ms = t + 5000;
        return;
    }
    /* Bring the applier to rest so that it holds no lock on the targets:
     * the stream is held, the open batch committed. */
    s->hold = true;
    s->co_state = CO_RESTING;
    if (apply_batch_open(s->apply) && !commit_batch(s, true))
        return;
    update_apply_poll(s);
    if (!apply_busy(s->apply))
        co_lock(s);
}

/* The applier is at rest: lock, emit the fence, and let the stream run up
 * to it. Taking the locks waits at most cutover.lock_timeout. */
static void co_lock(stream *s)
{
    pgs_migration *m = s->m;
    s->co_attempts++;
    s->co_state = CO_WANTED;
    if (!phase_event(s, PGS_EV_CUTOVER_LOCK, NULL))
        return;
    if (s->co_attempts == 1)
        fire(s, "cutover_started");
    log_info("cutover attempt %d/%d: locking (lag %.1f kB, lock_timeout %d ms)", s->co_attempts,
             m->plan->cutover.attempts, (double)s->co_lag_bytes / 1024.0,
             m->plan->cutover.lock_timeout_ms);
    double t0 = now_ms();
    int r = cutover_lock(s->co, &s->co_blocker, &s->co_have_blocker);
    double t1 = now_ms();
    s->co_lock_wait_ms = t1 - t0;
    if (r == 0) {
        char why[600];
        co_blocker_text(s, why, sizeof why);
        char msg[700];
        snprintf(msg, sizeof msg, "locks not granted within %d ms: %s",
                 m->plan->cutover.lock_timeout_ms, why);
        co_attempt_failed(s, msg, s->co_lock_wait_ms);
        return;
    }
    if (r < 0) {
        co_give_up(s, "taking the locks failed (see the log)");
        return;
    }
    s->co_locked_at_ms = t1;
    if (!cutover_fence(s->co, s->co_nonce, sizeof s->co_nonce, &s->co_fence_lsn)) {
        cutover_release(s->co);
        co_attempt_failed(s, "emitting the fence failed (see the log)", now_ms() - t0);
        return;
    }
    s->co_fence_sent_ms = now_ms();
    s->co_state = CO_FENCE;
    char lsn[18];
    log_info("cutover: locks held after %.0f ms; fence at %s; applying up to it", t1 - t0,
             decode_lsn_format(s->co_fence_lsn, lsn));
    /* Whatever is already buffered may hold the fence. */
    release_hold(s);
}

static void on_co_timer(uv_timer_t *h)
{
    stream *s = h->data;
    if (s->stopping)
        return;
    if (s->co_state == CO_FENCE || s->co_state == CO_AT_FENCE) {
        double waited = now_ms() - s->co_fence_sent_ms;
        if (waited > s->m->plan->cutover.fence_timeout_ms) {
            cutover_release(s->co);
            char msg[256];
            snprintf(msg, sizeof msg,
                     "the stream did not reach the fence and apply up to it within "
                     "cutover.fence_timeout (%d ms); locks released, nothing renamed",
                     s->m->plan->cutover.fence_timeout_ms);
            co_attempt_failed(s, msg, s->co_lock_wait_ms + (now_ms() - s->co_locked_at_ms));
        }
        return;
    }
    if (s->co_state == CO_WANTED)
        co_ask_lsn(s);
}

/* The stream reached the fence: everything the sources committed before the
 * lock is in this process. Hold the stream, commit it (co_swap goes on when
 * the commit has returned). */
static void cutover_at_fence(stream *s)
{
    s->co_fence_ms = now_ms() - s->co_fence_sent_ms;
    s->hold = true;
    s->co_state = CO_AT_FENCE;
    /* Not synchronous: the swap's own commit flushes it, inside the window. */
    if (apply_batch_open(s->apply) && !commit_batch(s, false))
        return;
    update_apply_poll(s);
    if (!apply_busy(s->apply))
        co_swap(s);
}

/* Everything up to the fence is committed: swap in one transaction. */
static void co_swap(stream *s)
{
    pgs_migration *m = s->m;
    double fence_ms = s->co_fence_ms;
    if (apply_failed(s->apply)) {
        cutover_release(s->co);
        co_reply(s, false, "applying up to the fence failed (see the log)");
        stop_loop(s, 1);
        return;
    }
    cutover_crash_point("applied");
    double applied_ms = now_ms() - s->co_fence_sent_ms;
    json_t *o = json_pack("{s:i,s:f,s:f,s:f,s:f}", "attempts", s->co_attempts, "lock_wait_ms",
                          s->co_lock_wait_ms, "fence_ms", fence_ms, "applied_to_fence_ms",
                          applied_ms, "worst_failed_attempt_ms", s->co_worst_failed_ms);
    if (o && s->co_have_blocker)
        json_object_set_new(o, "last_blocker",
                            json_pack("{s:i,s:s,s:s,s:f}", "pid", s->co_blocker.pid, "application",
                                      s->co_blocker.application, "query", s->co_blocker.query,
                                      "xact_age_seconds", s->co_blocker.xact_age_s));
    char *js = o ? json_dumps(o, JSON_COMPACT) : NULL;
    char err[1024] = "";
    double t0 = now_ms();
    int r = cutover_swap(s->co, js, err, sizeof err);
    double done = now_ms();
    free(js);
    if (r == 0) {
        co_attempt_failed(s, err, s->co_lock_wait_ms + (done - s->co_locked_at_ms));
        json_decref(o);
        return;
    }
    if (r < 0) {
        s->co_state = CO_NONE;
        json_decref(o);
        char msg[1200];
        snprintf(msg, sizeof msg, "the swap failed and was rolled back (nothing renamed): %s", err);
        co_give_up(s, msg);
        return;
    }
    double held = done - s->co_locked_at_ms;
    double window = s->co_lock_wait_ms + held;
    s->co_last_window_ms = window;
    /* The commit is in; record what the application saw. */
    json_object_set_new(o, "swap_ms", json_real(done - t0));
    json_object_set_new(o, "lock_held_ms", json_real(held));
    json_object_set_new(o, "write_block_ms", json_real(window));
    js = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (js)
        state_merge_cutover(m, js);
    free(js);
    char msg[512];
    snprintf(msg, sizeof msg,
             "cut over after %d attempt(s): write-blocking window %.0f ms (lock wait %.0f ms, "
             "fence reached in %.0f ms, swap %.0f ms)",
             s->co_attempts, window, s->co_lock_wait_ms, fence_ms, done - t0);
    log_info("%s", msg);
    s->co_state = CO_NONE;
    co_reply(s, true, msg);
    publish(s);
    fire(s, "cutover_done");
    stop_loop(s, 0);
}

static void co_want(stream *s)
{
    if (s->co_state == CO_NONE) {
        s->co_state = CO_WANTED;
        s->co_attempts = 0;
        s->co_backoff_ms = 0;
        s->co_next_try_ms = 0;
    }
    uv_timer_start(&s->co_timer, on_co_timer, CUTOVER_TICK_MS, CUTOVER_TICK_MS);
}

/* The snapshot every view shows (status.h), from the migration and what
 * this loop has sampled. */
typedef status_snapshot snap;

static bool snap_build(stream *s, snap *x)
{
    status_live live = {
        .source_lsn = s->last_source_lsn,
        .confirmed_lsn = s->last_applied,
        .lag_bytes = (double)s->lag.lag_bytes,
        .lag_seconds = s->lag.lag_seconds,
        .eta_seconds = s->lag.eta_seconds,
        .rate_changes = s->lag.rate_changes,
        .rate_xacts = s->lag.rate_xacts,
        .rate_bytes = s->lag.rate_bytes,
        .rate_wal = s->lag.rate_wal,
        .slot_retained = s->slot_retained,
        .slot_safe = s->slot_safe,
        .wal_status = s->wal_status,
        .cutover_attempts = s->co_attempts,
        .cutover_lock_wait_ms = s->co_lock_wait_ms,
        .cutover_write_block_ms = s->co_last_window_ms,
        .blocker = s->co_have_blocker ? &s->co_blocker : NULL,
        .postponed = s->postpone_why[0] != '\0' || s->hold_cmd > 0,
        .paused = s->paused,
    };
    return status_snapshot_build(s->m, &live, x);
}

static void snap_free(snap *x)
{
    status_snapshot_free(x);
}

/* Refreshes what `run --http` serves. */
static void publish(stream *s)
{
    snap x;
    if (board_active() && snap_build(s, &x)) {
        board_publish(&x.st);
        snap_free(&x);
    }
}

static void reply_with_status(stream *s, control_call *call, bool ok, const char *msg)
{
    snap x;
    if (snap_build(s, &x)) {
        control_reply(call, ok, msg, &x.st);
        snap_free(&x);
    } else
        control_reply(call, ok, msg, NULL);
}

/* Pause: the replication connection is closed after the applier settles,
 * so nothing is held open; the slot keeps the WAL and the lag grows. The
 * reply goes when the applier is at rest (finish_pause). */
static void do_pause(stream *s, control_call *call)
{
    if (s->paused) {
        reply_with_status(s, call, true, "already paused");
        return;
    }
    if (s->pausing) {
        reply_with_status(s, call, false, "a pause is already settling the applier");
        return;
    }
    pgs_phase to;
    if (!phase_next(s->m->phase, PGS_EV_PAUSE, &to, NULL)) {
        reply_with_status(s, call, false,
                          "not streaming yet (the first lag sample comes within "
                          "2 s); try again");
        return;
    }
    if (s->co_state == CO_FENCE || s->co_state == CO_AT_FENCE || s->co_state == CO_RESTING) {
        reply_with_status(s, call, false, "a cutover holds its locks right now; pause refused");
        return;
    }
    s->pausing = true;
    s->pause_call = call;
    uv_timer_stop(&s->reconnect_timer);
    detach_poll(s);
    settle_apply(s, false);
    continue_after_apply(s);
}

static void finish_pause(stream *s)
{
    s->pausing = false;
    control_call *call = s->pause_call;
    s->pause_call = NULL;
    if (s->repl) {
        send_feedback(s, false);
        PQfinish(s->repl);
        s->repl = NULL;
    }
    if (apply_failed(s->apply)) {
        if (call)
            reply_with_status(s, call, false, "the apply failed while settling (see the log)");
        stop_loop(s, 1);
        return;
    }
    s->paused = true;
    if (!phase_event(s, PGS_EV_PAUSE, NULL)) {
        if (call)
            reply_with_status(s, call, false, "pgshift stopped (see the log)");
        return;
    }
    publish(s);
    char lsn[18], msg[160];
    snprintf(msg, sizeof msg, "paused at applied position %s; the lag grows until `pgshift resume`",
             decode_lsn_format(s->m->applied_lsn, lsn));
    log_info("%s", msg);
    if (call)
        reply_with_status(s, call, true, msg);
}

static void do_resume(stream *s, control_call *call)
{
    if (!s->paused) {
        reply_with_status(s, call, true, s->pausing ? "not paused yet" : "not paused");
        return;
    }
    s->paused = false;
    if (!phase_event(s, PGS_EV_RESUME, NULL)) {
        reply_with_status(s, call, false, "pgshift stopped (see the log)");
        return;
    }
    if (!connect_stream(s))
        schedule_reconnect(s);
    log_info("resumed");
    publish(s);
    reply_with_status(s, call, true, "resumed: streaming again");
}

static void on_control(void *arg, control_call *call, const Pgshift__ControlRequest *req)
{
    stream *s = arg;
    switch (req->command) {
    case PGSHIFT__COMMAND__COMMAND_CUTOVER:
        if (s->co_call) {
            control_reply(call, false, "a cutover request is already waiting", NULL);
            return;
        }
        if (s->paused) {
            reply_with_status(s, call, false, "paused; `pgshift resume` first");
            return;
        }
        log_info("cutover requested over the control socket");
        s->co_call = call;
        co_want(s);
        return;
    case PGSHIFT__COMMAND__COMMAND_STATUS:
        reply_with_status(s, call, true, pgs_phase_name(s->m->phase));
        return;
    case PGSHIFT__COMMAND__COMMAND_PAUSE:
        do_pause(s, call);
        return;
    case PGSHIFT__COMMAND__COMMAND_RESUME:
        do_resume(s, call);
        return;
    case PGSHIFT__COMMAND__COMMAND_POSTPONE:
        s->hold_cmd = 1;
        log_info("automatic cutover postponed by `pgshift postpone`");
        reply_with_status(s, call, true,
                          s->m->auto_cutover
                              ? "automatic cutover postponed until `pgshift unpostpone`"
                              : "postponed (this run has no --auto-cutover; `pgshift cutover` "
                                "still cuts over on request)");
        return;
    case PGSHIFT__COMMAND__COMMAND_UNPOSTPONE:
        s->hold_cmd = -1;
        log_info("automatic cutover released by `pgshift unpostpone` (the plan's postpone "
                 "settings are overridden)");
        reply_with_status(s, call, true,
                          s->m->auto_cutover
                              ? "automatic cutover may proceed as soon as the lag allows"
                              : "released (this run has no --auto-cutover: use `pgshift cutover`)");
        return;
    case PGSHIFT__COMMAND__COMMAND_ABORT:
        if (!req->confirm) {
            control_reply(call, false, "abort needs --confirm", NULL);
            return;
        }
        if (s->co_state == CO_FENCE || s->co_state == CO_AT_FENCE) {
            control_reply(call, false, "a cutover holds its locks right now; try again", NULL);
            return;
        }
        log_warn("stopping for `pgshift abort`");
        control_reply(call, true, "the run stops now; abort continues", NULL);
        stop_loop(s, 0);
        return;
    default:
        control_reply(call, false, "unknown command", NULL);
    }
}

static void fire(stream *s, const char *event)
{
    snap x;
    char *js = NULL;
    if (snap_build(s, &x)) {
        js = status_json(&x.st, 0);
        snap_free(&x);
    }
    hooks_fire(s->m->plan, event, js);
    free(js);
}

int stream_run(pgs_migration *m)
{
    stream s;
    memset(&s, 0, sizeof s);
    s.m = m;
    s.binary = m->plan->target == NULL;
    decode_ctx_init(&s.dec, 1);
    if (uv_loop_init(&s.loop) != 0)
        return 1;
    s.apply = apply_new(m);
    if (s.apply == NULL) {
        uv_loop_close(&s.loop);
        decode_ctx_free(&s.dec);
        return 1;
    }
    apply_set_durable(s.apply, m->applied_lsn);
    uv_timer_init(&s.loop, &s.feedback_timer);
    uv_timer_init(&s.loop, &s.batch_timer);
    uv_timer_init(&s.loop, &s.stats_timer);
    uv_timer_init(&s.loop, &s.reconnect_timer);
    uv_signal_init(&s.loop, &s.sigint);
    uv_signal_init(&s.loop, &s.sigterm);
    s.feedback_timer.data = s.batch_timer.data = s.stats_timer.data = s.reconnect_timer.data = &s;
    s.sigint.data = s.sigterm.data = &s;
    uv_signal_start(&s.sigint, on_signal, SIGINT);
    uv_signal_start(&s.sigterm, on_signal, SIGTERM);
    uv_timer_start(&s.feedback_timer, on_feedback, FEEDBACK_MS, FEEDBACK_MS);
    uv_timer_start(&s.stats_timer, on_stats, 200, STATS_MS);
    uv_timer_init(&s.loop, &s.co_timer);
    uv_timer_init(&s.loop, &s.stop_timer);
    s.co_timer.data = s.stop_timer.data = &s;
    int prc = uv_poll_init(&s.loop, &s.apply_poll, apply_socket(s.apply));
    if (prc != 0) {
        /* Without it no result would ever be read. */
        log_error("apply: cannot watch the target connection: %s", uv_strerror(prc));
        uv_walk(&s.loop, close_handle, NULL);
        uv_run(&s.loop, UV_RUN_DEFAULT);
        uv_loop_close(&s.loop);
        apply_free(s.apply);
        decode_ctx_free(&s.dec);
        return 1;
    }
    s.apply_poll.data = &s;
    s.apply_polling = true;
    update_apply_poll(&s);
    lag_init(&s.lag);
    char *sock = control_socket_path(m->plan->state_dir, m->plan->name);
    s.ctl = sock ? control_listen(&s.loop, sock, on_control, &s) : NULL;
    if (s.ctl)
        log_info("control socket %s (`pgshift cutover --plan %s` asks for the cutover)", sock,
                 m->plan->path);
    else
        log_warn("no control socket: `pgshift cutover` cannot reach this run%s",
                 m->auto_cutover ? "" : "; use `run --auto-cutover`");
    free(sock);
    publish(&s);
    if (m->just_copied)
        fire(&s, "copy_done");
    if (m->auto_cutover)
        co_want(&s);
    if (!connect_stream(&s))
        schedule_reconnect(&s);
    uv_run(&s.loop, UV_RUN_DEFAULT);
    /* Close anything still open (a stop from inside a callback closes all). */
    aquery_close(s.mon);
    s.mon = NULL;
    uv_walk(&s.loop, close_handle, NULL);
    uv_run(&s.loop, UV_RUN_DEFAULT);
    int rc = uv_loop_close(&s.loop);
    if (rc != 0)
        log_warn("event loop closed with handles still open: %s", uv_strerror(rc));
    apply_free(s.apply);
    decode_ctx_free(&s.dec);
    cutover_free(s.co);
    free(s.postpone_file);
    if (s.exit_code == 1) {
        if (m->phase != PGS_PHASE_DONE &&
            !state_transition(m, PGS_EV_ERROR, "apply stopped on an error; see the log"))
            log_warn("the failed phase could not be written (see above); `pgshift status` may "
                     "show the phase before it");
        fire(&s, "failed");
    }
    return s.exit_code;
}
