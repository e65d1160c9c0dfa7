/* sample.c: every STATS_MS the source is sampled on a monitor connection of
 * its own (aquery.h: the query completes in a callback, the loop never
 * waits): its WAL position and the slot's health feed the lag model
 * (lag.h), which drives the ready/catching_up phase, the ETA, the slot-risk
 * warning, the stats row `pgshift status` reads and the published snapshot.
 * A slot found missing or invalidated stops the run (flow_slot_lost); while
 * nothing streams, what would invalidate the slot is said once a minute. */
#include "engine.h"

#include "pgshift/hooks.h"
#include "pgshift/log.h"
#include "pgshift/pg.h"
#include "pgshift/status.h"
#include "pgshift/store.h"
#include "pgshift/state.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

aquery *sample_monitor(engine *e)
{
    if (e->mon && aquery_busy(e->mon) && aquery_waited_ms(e->mon) > MONITOR_STUCK_MS) {
        log_warn("source monitor: no answer in %d s; opening a new connection",
                 MONITOR_STUCK_MS / 1000);
        aquery_close(e->mon);
        e->mon = NULL;
    }
    if (e->mon && aquery_broken(e->mon)) {
        aquery_close(e->mon);
        e->mon = NULL;
        e->mon_retry_ms = engine_now_ms() + 10000;
    }
    if (e->mon == NULL && engine_now_ms() >= e->mon_retry_ms) {
        /* Opening it waits for the connection (connect_timeout bounds it). */
        e->mon_retry_ms = engine_now_ms() + 10000;
        PGconn *c = pg_connect(e->m->plan->source, "source (monitor)", false);
        e->mon = c ? aquery_open(&e->loop, c, "sampling the source") : NULL;
    }
    return e->mon && !aquery_busy(e->mon) ? e->mon : NULL;
}

/* A phase change through the transition table (phase.h). The write goes
 * through the apply connection, in order with the batches, without
 * waiting. False, and the run stops, on a transition the table does not
 * have (a bug) or a failed send. */
bool sample_phase_event(engine *e, pgs_event ev, const char *detail)
{
    state_write w;
    if (!state_transition_async(e->m, ev, detail, &w) ||
        (w.sql && !apply_send_state(e->apply, w.sql, w.nparams, w.params))) {
        engine_stop(e, 1);
        return false;
    }
    flow_update_poll(e);
    return true;
}

/* The stats row: the JSON of the live snapshot itself (status.h), which
 * `pgshift status` reads back when no run serves the plan. Written through
 * the applier, in order with its batches; skipped while it cannot take more
 * (a stuck target must not pile them up). */
static void write_stats(engine *e)
{
    status_snapshot x;
    char *js = NULL;
    if (engine_snapshot(e, &x)) {
        js = status_json(&x.st, 0);
        status_snapshot_free(&x);
    }
    if (js && apply_ready(e->apply)) {
        if (!apply_send_state(e->apply, store_sql_write_stats(), 2,
                              (const char *[]){e->m->row, js}))
            engine_stop(e, 1);
        flow_update_poll(e);
    }
    free(js);
}

/* Before max_slot_wal_keep_size invalidates the slot (wal_status "lost":
 * the migration would have to start over), say so, once a minute. */
static void warn_slot(engine *e, double t_ms)
{
    if (!e->lag.slot_at_risk || t_ms - e->last_slot_warn_ms < 60000)
        return;
    log_warn("slot %s is at risk: wal_status %s, %.0f MB of WAL retained, %s before "
             "max_slot_wal_keep_size invalidates it; catch up (pause the heaviest writers), "
             "or raise max_slot_wal_keep_size",
             e->m->slot, e->wal_status, (double)e->slot_retained / 1048576.0,
             e->slot_safe_null ? "unknown" : (e->slot_safe <= 0 ? "nothing left" : "little left"));
    e->last_slot_warn_ms = t_ms;
}

/* Not streaming (paused, or reconnecting): nothing reads the slot, and
 * the source may invalidate it meanwhile (18's idle_replication_slot_timeout,
 * max_slot_wal_keep_size); say so with the values, once a minute. */
static void warn_not_streaming(engine *e, const PGresult *res, double t_ms)
{
    if (stream_is_open(e->rs)) {
        e->last_idle_warn_ms = 0;
        return;
    }
    if (e->last_idle_warn_ms && t_ms - e->last_idle_warn_ms < 60000)
        return;
    const char *what = e->paused || e->pausing ? "paused" : "not streaming (reconnecting)";
    const char *todo = e->paused || e->pausing ? "`pgshift resume`" : "let it reconnect";
    long long timeout_s = PQgetisnull(res, 0, 9) ? 0 : atoll(PQgetvalue(res, 0, 9));
    const char *keep = PQgetvalue(res, 0, 12);
    if (timeout_s > 0) {
        long long idle = PQgetisnull(res, 0, 11) ? 0 : atoll(PQgetvalue(res, 0, 11));
        log_warn("%s: slot %s has been inactive for %lld s; the source invalidates it at the "
                 "first checkpoint after idle_replication_slot_timeout = %s (%lld s left), and "
                 "the migration then has to start over; %s before then",
                 what, e->m->slot, idle, PQgetvalue(res, 0, 10),
                 timeout_s > idle ? timeout_s - idle : 0, todo);
        e->last_idle_warn_ms = t_ms;
    }
    if (strcmp(keep, "-1") != 0) {
        log_warn("%s: slot %s holds %.0f MB of WAL and grows as the source writes; past "
                 "max_slot_wal_keep_size = %s the source invalidates it, and the migration then "
                 "has to start over; %s before then",
                 what, e->m->slot, (double)e->slot_retained / 1048576.0, keep, todo);
        e->last_idle_warn_ms = t_ms;
    }
}

static void log_progress(engine *e, double t_ms, pgs_lsn applied)
{
    if (t_ms - e->last_log_ms < 10000)
        return;
    const lag_model *l = &e->lag;
    char a[18], eta_txt[32];
    snprintf(eta_txt, sizeof eta_txt, "%.0f s", l->eta_seconds);
    log_info("%s: lag %.1f MB / %.1f s, applied %s, %.0f changes/s, %.0f xacts/s, ETA %s",
             pgs_phase_name(e->m->phase), (double)l->lag_bytes / 1048576.0, l->lag_seconds,
             decode_lsn_format(applied, a), l->rate_changes, l->rate_xacts,
             isnan(l->eta_seconds) ? "not known yet"
             : l->eta_seconds < 0  ? "never (source writes faster)"
             : l->eta_seconds == 0 ? "caught up"
                                   : eta_txt);
    e->last_log_ms = t_ms;
}

/* The first ready of this run: how long the stream took to get there (the
 * copy's own WAL and the changes made during the copy, for a run that
 * copied), and the run as a whole. */
static void time_ready(engine *e)
{
    pgs_migration *m = e->m;
    if (m->ready_timed || m->streaming_since_ms == 0)
        return;
    m->ready_timed = true;
    double now = pgs_now_ms();
    const char *keys[] = {"backlog_s", "ready_s"};
    double secs[] = {(now - m->streaming_since_ms) / 1000.0, (now - m->run_started_ms) / 1000.0};
    for (int i = 0; i < 2; i++) {
        char json[128];
        state_timing_json(m, keys[i], secs[i], json, sizeof json);
        if (!apply_send_state(e->apply, store_sql_merge_timings(), 2,
                              (const char *[]){m->row, json})) {
            engine_stop(e, 1);
            return;
        }
    }
    const pgs_timings *t = &m->timings;
    char copy[96] = "";
    if (m->just_copied)
        snprintf(copy, sizeof copy, "copy %.1f s, index build %.1f s, ", t->copy_s,
                 t->index_build_s);
    log_info("ready %.1f s after the start (%sstream to ready %.1f s)", t->ready_s, copy,
             t->backlog_s);
}

/* The lag decides the phase: ready under cutover.max_lag, else catching_up. */
static void follow_lag(engine *e)
{
    pgs_migration *m = e->m;
    pgs_phase phase = lag_ready(&e->lag) ? PGS_PHASE_READY : PGS_PHASE_CATCHING_UP;
    if (phase == m->phase || m->phase == PGS_PHASE_CUTTING_OVER || m->phase == PGS_PHASE_DONE ||
        e->paused || e->pausing)
        return;
    char why[64];
    snprintf(why, sizeof why, "lag %llu bytes", (unsigned long long)e->lag.lag_bytes);
    if (sample_phase_event(e, phase == PGS_PHASE_READY ? PGS_EV_LAG_OK : PGS_EV_LAG_HIGH, why) &&
        m->phase == PGS_PHASE_READY) {
        time_ready(e);
        engine_fire(e, "ready");
    }
}

/* With origin 'none', a replication origin other than pgshift's would have
 * its changes dropped: stop before confirming any of them (origin_cap). */
bool sample_other_origins(engine *e, const char *names)
{
    if (names == NULL || !stream_origin_active(e->rs, NULL))
        return false;
    log_error("replication origin(s) %s appeared in the source cluster while pgshift asked the "
              "walsender to drop changes made under an origin; stopping before confirming any of "
              "them: run again, and the stream restarts from the last confirmed position "
              "decoding every origin",
              names);
    engine_stop(e, 1);
    return true;
}

/* The last column of the sample query (on_stats). */
#define SAMPLE_ORIGINS_COL 13

/* A result whose column 0 is the source's WAL position and column
 * `origins_col` the other origins, sent at `sent_ms`: the position of the
 * previous such result becomes the cap (its origins were read in a later
 * snapshot), this one's the next. */
static bool check_origins(engine *e, const PGresult *res, int origins_col, double sent_ms)
{
    if (!stream_origin_active(e->rs, NULL) || sent_ms < e->origin_since_ms)
        return true;
    if (!PQgetisnull(res, 0, origins_col) &&
        sample_other_origins(e, PQgetvalue(res, 0, origins_col)))
        return false;
    if (e->origin_pending > e->origin_cap)
        e->origin_cap = e->origin_pending;
    decode_lsn_parse(PQgetvalue(res, 0, 0), &e->origin_pending);
    return true;
}

static void on_probe_timer(uv_timer_t *t)
{
    sample_origin_probe(t->data);
}

static void on_origin_probe(void *arg, const PGresult *res)
{
    engine *e = arg;
    if (res == NULL || e->stopping || !check_origins(e, res, 1, e->probe_sent_ms))
        return;
    if (flow_flush_position(e) > e->last_flush_sent)
        flow_send_feedback(e, false);
    /* The next one brackets what this one read. */
    if (e->idle_confirm > e->origin_cap)
        uv_timer_start(&e->probe_timer, on_probe_timer, ORIGIN_PROBE_MS, 0);
}

/* Under origin 'none' an idle stream's keepalive position is confirmed
 * only once two results bracket it (check_origins); samples come every
 * STATS_MS. After a stretch the walsender only read (the copy's own WAL,
 * dropped by origin), that would hold the confirmation, and the time to
 * ready, up to two samples: probe the origins now instead, at most every
 * ORIGIN_PROBE_MS, while the cap holds back a keepalive position. */
void sample_origin_probe(engine *e)
{
    if (e->stopping || !stream_origin_active(e->rs, NULL) || e->idle_confirm <= e->origin_cap ||
        engine_now_ms() - e->probe_sent_ms < ORIGIN_PROBE_MS)
        return;
    aquery *q = sample_monitor(e);
    if (q == NULL)
        return;
    e->probe_sent_ms = engine_now_ms();
    aquery_send(q, "SELECT pg_current_wal_lsn(), " PG_SQL_OTHER_ORIGINS("$1"), 1,
                (const char *[]){e->m->slot}, on_origin_probe, e);
}

static void on_sample(void *arg, const PGresult *res)
{
    engine *e = arg;
    if (res == NULL || e->stopping || !check_origins(e, res, SAMPLE_ORIGINS_COL, e->sample_sent_ms))
        return;
    /* A slot that is gone or invalidated can stream no more: stop now
     * (paused, this is the only place that would notice). */
    pgs_slot_state slot;
    catalog_slot_from_row(res, 4, &slot);
    if (catalog_slot_lost(&slot)) {
        flow_slot_lost(e, &slot);
        return;
    }
    pgs_lsn cur = 0;
    decode_lsn_parse(PQgetvalue(res, 0, 0), &cur);
    e->slot_retained = atoll(PQgetvalue(res, 0, 1));
    snprintf(e->wal_status, sizeof e->wal_status, "%s", PQgetvalue(res, 0, 2));
    e->slot_safe_null = PQgetisnull(res, 0, 3);
    e->slot_safe = e->slot_safe_null ? -1 : atoll(PQgetvalue(res, 0, 3));
    double t_ms = engine_now_ms();
    const apply_stats *st = apply_get_stats(e->apply);
    pgs_lsn applied = flow_flush_position(e);
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
        /* Idle: the stream is open, everything it sent is applied, and a
         * keepalive said nothing more is there. Paused or reconnecting,
         * nothing is received, so the source's writes are lag. */
        .idle = stream_is_open(e->rs) && !e->paused && !e->pausing && apply_idle(e->apply) &&
                e->idle_confirm >= stream_received(e->rs),
        .max_lag_bytes = e->m->plan->cutover.max_lag_bytes,
        .slot_retained = e->slot_retained,
        .safe_wal_size = e->slot_safe_null ? LAG_SAFE_UNKNOWN : e->slot_safe,
        .wal_status = e->wal_status,
    };
    lag_sample(&e->lag, &in);
    hooks_reap();
    e->last_applied = applied;
    e->last_source_lsn = cur;
    /* Ask for a keepalive: with nothing pending its position may be
     * confirmed, so an idle source's WAL (ours included) does not count as lag. */
    if (!apply_batch_open(e->apply) && !apply_in_xact(e->apply))
        flow_send_feedback(e, true);
    warn_slot(e, t_ms);
    warn_not_streaming(e, res, t_ms);
    follow_lag(e);
    if (e->stopping)
        return;
    write_stats(e);
    engine_publish(e);
    log_progress(e, t_ms, applied);
    sample_origin_probe(e);
}

static void on_stats(uv_timer_t *t)
{
    engine *e = t->data;
    aquery *q = e->stopping ? NULL : sample_monitor(e);
    if (q == NULL)
        return;
    /* The origins only matter (and are only read) under origin 'none'. */
    bool origins = stream_origin_active(e->rs, NULL);
#define SAMPLE_COLS                                                                                \
    "SELECT pg_current_wal_lsn(),"                                                                 \
    "  (SELECT pg_current_wal_lsn() - restart_lsn FROM pg_replication_slots"                       \
    "    WHERE slot_name = $1),"                                                                   \
    "  (SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1),"                        \
    "  (SELECT safe_wal_size FROM pg_replication_slots WHERE slot_name = $1),"                     \
    "  " CATALOG_SLOT_COLUMNS ","                                                                  \
    "  (SELECT setting::bigint FROM pg_settings"                                                   \
    "    WHERE name = 'idle_replication_slot_timeout'),"                                           \
    "  current_setting('idle_replication_slot_timeout', true),"                                    \
    "  (SELECT extract(epoch FROM now()"                                                           \
    "      - (to_jsonb(s)->>'inactive_since')::timestamptz)::bigint"                               \
    "    FROM pg_replication_slots s WHERE slot_name = $1),"                                       \
    "  current_setting('max_slot_wal_keep_size'),"
    /* Column SAMPLE_ORIGINS_COL: the other replication origins. */
    aquery_send(q, origins ? SAMPLE_COLS PG_SQL_OTHER_ORIGINS("$1") : SAMPLE_COLS "  NULL::text", 1,
                (const char *[]){e->m->slot}, on_sample, e);
    e->sample_sent_ms = engine_now_ms();
}

void sample_start(engine *e)
{
    lag_init(&e->lag);
    uv_timer_init(&e->loop, &e->stats_timer);
    uv_timer_init(&e->loop, &e->probe_timer);
    e->stats_timer.data = e->probe_timer.data = e;
    uv_timer_start(&e->stats_timer, on_stats, 200, STATS_MS);
}
