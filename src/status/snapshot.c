/* snapshot.c: the one status snapshot (status.h), built two ways: by the
 * run from its engine (status_snapshot_build, every stats sample) and by
 * `pgshift status` from the state tables when no run serves the plan
 * (status_snapshot_from_state: the stats row is the run's last snapshot as
 * JSON, read back here). render.c renders either. */
#include "pgshift/status.h"

#include "pgshift/cutover.h"
#include "pgshift/state.h"

#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int64_t now_unix_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The arrays for n tables; false (x freed) on OOM. */
static bool alloc_tables(status_snapshot *x, int ntables)
{
    memset(x, 0, sizeof *x);
    pgshift__status_snapshot__init(&x->st);
    size_t n = ntables > 0 ? (size_t)ntables : 1;
    x->tp = calloc(n, sizeof *x->tp);
    x->tpp = calloc(n, sizeof *x->tpp);
    x->names = calloc(n, sizeof *x->names);
    if (x->tp == NULL || x->tpp == NULL || x->names == NULL) {
        status_snapshot_free(x);
        return false;
    }
    for (int i = 0; i < ntables; i++) {
        pgshift__table_progress__init(&x->tp[i]);
        x->tpp[i] = &x->tp[i];
    }
    x->st.n_tables = (size_t)(ntables > 0 ? ntables : 0);
    x->st.tables = x->tpp;
    return true;
}

static void set_timings(status_snapshot *x, const pgs_timings *t)
{
    pgshift__timings__init(&x->tm);
    x->tm.copy_seconds = t->copy_s;
    x->tm.index_build_seconds = t->index_build_s;
    x->tm.backlog_seconds = t->backlog_s;
    x->tm.ready_seconds = t->ready_s;
    x->tm.cutover_seconds = t->cutover_s;
    x->tm.after_swap_seconds = t->after_swap_s;
    x->st.timings = &x->tm;
}

static void set_verify(status_snapshot *x, const pgs_verify_info *v)
{
    if (!v->has)
        return;
    x->vinfo = *v;
    pgshift__verify_info__init(&x->vi);
    x->vi.at = x->vinfo.at;
    x->vi.lsn = x->vinfo.lsn;
    x->vi.consistent = v->consistent;
    x->vi.identical = v->identical;
    x->vi.differences = v->differences;
    x->st.verify = &x->vi;
}

bool status_snapshot_build(const pgs_migration *m, const status_live *live, status_snapshot *x)
{
    if (!alloc_tables(x, m->ntables))
        return false;
    x->origin.live = true;
    Pgshift__StatusSnapshot *st = &x->st;
    set_timings(x, &m->timings);
    set_verify(x, &m->verify);
    st->migration = m->plan->name;
    st->phase = (Pgshift__Phase)phase_to_proto(m->phase);
    if (m->reverse) {
        /* The reverse stream of a rollback window: the migration is cut
         * over (reversible), swapping back, or rolled back. */
        st->phase =
            (Pgshift__Phase)phase_to_proto(m->phase == PGS_PHASE_CUTTING_OVER ? m->phase
                                           : m->phase == PGS_PHASE_DONE ? PGS_PHASE_ROLLED_BACK
                                                                        : PGS_PHASE_REVERSIBLE);
        pgshift__reverse_info__init(&x->rv);
        x->rv.lag_bytes = live->lag_bytes > 0 ? (uint64_t)live->lag_bytes : 0;
        x->rv.lag_seconds = live->lag_seconds;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        double left = m->window_end - ((double)ts.tv_sec + (double)ts.tv_nsec / 1e9);
        x->rv.window_left_seconds = left > 0 ? left : 0;
        x->rv.slot = (char *)m->slot;
        st->reverse = &x->rv;
    }
    st->source_lsn = (char *)decode_lsn_format(live->source_lsn, x->src_lsn);
    st->applied_lsn = (char *)decode_lsn_format(m->applied_lsn, x->applied);
    st->confirmed_lsn = (char *)decode_lsn_format(live->confirmed_lsn, x->confirmed);
    st->lag_bytes = live->lag_bytes > 0 ? (uint64_t)live->lag_bytes : 0;
    st->lag_seconds = live->lag_seconds;
    st->eta_seconds = live->eta_seconds;
    st->apply_changes_per_second = live->rate_changes;
    st->apply_xacts_per_second = live->rate_xacts;
    st->apply_bytes_per_second = live->rate_bytes;
    st->wal_bytes_per_second = live->rate_wal;
    st->applied_changes_total = (uint64_t)m->applied_changes;
    st->applied_xacts_total = (uint64_t)m->applied_xacts;
    for (int i = 0; i < m->ntables; i++) {
        const pgs_mtable *mt = &m->tables[i];
        Pgshift__TableProgress *t = &x->tp[i];
        snprintf(x->names[i][0], sizeof x->names[i][0], "%s.%s", mt->src.nspname, mt->src.relname);
        snprintf(x->names[i][1], sizeof x->names[i][1], "%s.%s", mt->tgt.nspname, mt->tgt.relname);
        t->source = x->names[i][0];
        t->target = x->names[i][1];
        t->rows_copied = (uint64_t)(mt->rows_copied > 0 ? mt->rows_copied : 0);
        t->rows_estimated = (uint64_t)(mt->src.rows_est > 0 ? mt->src.rows_est : 0);
        t->bytes_copied = (uint64_t)(mt->bytes_copied > 0 ? mt->bytes_copied : 0);
        t->bytes_estimated = (uint64_t)(mt->src.bytes > 0 ? mt->src.bytes : 0);
        t->copy_done = mt->copy_done;
        t->changes_applied = (uint64_t)(mt->changes_applied > 0 ? mt->changes_applied : 0);
        double rate = live->copy_rows_per_second ? live->copy_rows_per_second[i] : 0;
        t->copy_rows_per_second = mt->copy_done ? 0 : rate;
        t->copy_eta_seconds = mt->copy_done ? 0
                              : rate > 0
                                  ? (t->rows_estimated > t->rows_copied
                                         ? (double)(t->rows_estimated - t->rows_copied) / rate
                                         : 0)
                                  : -1;
    }
    pgshift__slot_health__init(&x->slot);
    x->slot.retained_bytes = (uint64_t)(live->slot_retained > 0 ? live->slot_retained : 0);
    x->slot.wal_status = (char *)(live->wal_status ? live->wal_status : "");
    x->slot.safe_bytes_left = live->slot_safe;
    st->slot = &x->slot;
    pgshift__cutover_info__init(&x->co);
    x->co.attempts = (uint32_t)live->cutover_attempts;
    x->co.lock_wait_ms = live->cutover_lock_wait_ms;
    x->co.write_block_ms = live->cutover_write_block_ms;
    if (live->cutover_blocked && live->cutover_blocked[0])
        x->co.blocked = (char *)live->cutover_blocked;
    if (live->blocker) {
        pgshift__blocker__init(&x->bl);
        x->bl.pid = live->blocker->pid;
        x->bl.application = (char *)live->blocker->application;
        x->bl.query = (char *)live->blocker->query;
        x->bl.xact_age_seconds = live->blocker->xact_age_s;
        x->co.last_blocker = &x->bl;
    }
    st->cutover = &x->co;
    st->postponed = live->postponed;
    st->paused = live->paused;
    st->server_version = (char *)(live->server_version ? live->server_version : "");
    st->server_version_num = live->server_version_num;
    st->proto_version = live->proto_version;
    st->origin_filter = live->proto_version > 0 && live->origin_filter;
    st->taken_at_unix_ms = now_unix_ms();
    return true;
}

/* ---- from the state tables ---- */

/* A copy of s that x owns; "" for NULL, NULL on OOM. */
static char *keep(status_snapshot *x, const char *s)
{
    if (x->nown >= (int)(sizeof x->own / sizeof x->own[0]))
        return NULL;
    char *c = strdup(s ? s : "");
    if (c)
        x->own[x->nown++] = c;
    return c;
}

static double num(const json_t *o, const char *key)
{
    return json_number_value(json_object_get(o, key));
}

/* The run's last rates, ETA, seconds of lag and flags (stored stats). */
static void from_stats(status_snapshot *x, const json_t *stats)
{
    Pgshift__StatusSnapshot *st = &x->st;
    st->apply_changes_per_second = num(stats, "apply_changes_per_second");
    st->apply_xacts_per_second = num(stats, "apply_xacts_per_second");
    st->apply_bytes_per_second = num(stats, "apply_bytes_per_second");
    st->wal_bytes_per_second = num(stats, "wal_bytes_per_second");
    const json_t *eta = json_object_get(stats, "eta_seconds");
    if (json_is_null(eta))
        st->eta_seconds = NAN; /* the run had no rate yet */
    else if (json_is_number(eta))
        st->eta_seconds = json_number_value(eta);
    if (json_is_number(json_object_get(stats, "lag_seconds")))
        st->lag_seconds = num(stats, "lag_seconds");
    st->postponed = json_is_true(json_object_get(stats, "postponed"));
    st->paused = json_is_true(json_object_get(stats, "paused"));
    json_int_t proto = json_integer_value(json_object_get(stats, "proto_version"));
    st->proto_version = proto > 0 && proto <= INT32_MAX ? (int32_t)proto : 0;
    st->origin_filter =
        st->proto_version > 0 && json_is_true(json_object_get(stats, "origin_filter"));
}

/* Cutover figures: the stored record after the swap, else the running
 * run's attempts so far (stats "cutover"). False on OOM. */
static bool from_cutover(status_snapshot *x, const json_t *rec, const json_t *stats,
                         long long done_at_ms)
{
    const json_t *c = rec ? rec : json_object_get(stats, "cutover");
    if (!json_is_object(c))
        return true;
    pgshift__cutover_info__init(&x->co);
    x->co.attempts = (uint32_t)json_integer_value(json_object_get(c, "attempts"));
    x->co.lock_wait_ms = num(c, "lock_wait_ms");
    x->co.fence_latency_ms = num(c, "fence_ms");
    x->co.write_block_ms = num(c, "write_block_ms");
    x->co.done_at_unix_ms = rec ? done_at_ms : 0;
    const json_t *b = json_object_get(c, "last_blocker");
    if (json_is_object(b) && json_integer_value(json_object_get(b, "pid"))) {
        pgshift__blocker__init(&x->bl);
        x->bl.pid = (int32_t)json_integer_value(json_object_get(b, "pid"));
        x->bl.application = keep(x, json_string_value(json_object_get(b, "application")));
        x->bl.query = keep(x, json_string_value(json_object_get(b, "query")));
        x->bl.xact_age_seconds = num(b, "xact_age_seconds");
        if (x->bl.application == NULL || x->bl.query == NULL)
            return false;
        x->co.last_blocker = &x->bl;
    }
    x->st.cutover = &x->co;
    return true;
}

static void from_tables(status_snapshot *x, const status_state *s)
{
    for (int i = 0; i < s->ntables; i++) {
        const status_state_table *r = &s->tables[i];
        Pgshift__TableProgress *t = &x->tp[i];
        snprintf(x->names[i][0], sizeof x->names[i][0], "%s", r->source ? r->source : "");
        snprintf(x->names[i][1], sizeof x->names[i][1], "%s", r->target ? r->target : "");
        t->source = x->names[i][0];
        t->target = x->names[i][1];
        t->rows_copied = (uint64_t)(r->rows_copied > 0 ? r->rows_copied : 0);
        t->rows_estimated = (uint64_t)(r->rows_estimated > 0 ? r->rows_estimated : 0);
        t->bytes_copied = (uint64_t)(r->bytes_copied > 0 ? r->bytes_copied : 0);
        t->bytes_estimated = (uint64_t)(r->bytes_estimated > 0 ? r->bytes_estimated : 0);
        t->copy_done = r->copy_done;
        t->changes_applied = (uint64_t)(r->changes_applied > 0 ? r->changes_applied : 0);
        t->copy_eta_seconds = r->copy_done ? 0 : -1;
    }
}

static bool set_origin(status_snapshot *x, const status_state *s)
{
    status_origin *o = &x->origin;
    o->live = false;
    o->running = s->slot_active;
    o->state_age_s = s->age_s;
    o->slot_name = s->slot_name ? keep(x, s->slot_name) : NULL;
    o->plan_path = s->plan_path ? keep(x, s->plan_path) : NULL;
    o->cutover_at = s->cutover_at && s->cutover_at[0] ? keep(x, s->cutover_at) : NULL;
    o->cutover_record =
        s->cutover_record && s->cutover_record[0] ? keep(x, s->cutover_record) : NULL;
    return (s->slot_name == NULL || o->slot_name) && (s->plan_path == NULL || o->plan_path) &&
           (o->cutover_at || !(s->cutover_at && s->cutover_at[0])) &&
           (o->cutover_record || !(s->cutover_record && s->cutover_record[0]));
}

bool status_snapshot_from_state(const status_state *s, status_snapshot *x)
{
    if (!alloc_tables(x, s->ntables))
        return false;
    Pgshift__StatusSnapshot *st = &x->st;
    bool ok = set_origin(x, s);
    pgs_timings t;
    timings_parse(s->timings, &t);
    set_timings(x, &t);
    pgs_verify_info vi;
    verify_info_parse(s->verify, &vi);
    set_verify(x, &vi);
    st->migration = keep(x, s->migration);
    st->phase = (Pgshift__Phase)phase_to_proto(pgs_phase_parse(s->phase ? s->phase : ""));
    if (s->has_reverse) {
        pgshift__reverse_info__init(&x->rv);
        x->rv.lag_bytes = (uint64_t)(s->reverse_lag_bytes > 0 ? s->reverse_lag_bytes : 0);
        x->rv.window_left_seconds = s->window_left_s > 0 ? s->window_left_s : 0;
        x->rv.slot = keep(x, s->reverse_slot ? s->reverse_slot : "");
        st->reverse = &x->rv;
    }
    st->error = s->error && s->error[0] ? keep(x, s->error) : NULL;
    snprintf(x->src_lsn, sizeof x->src_lsn, "%s", s->source_lsn ? s->source_lsn : "");
    snprintf(x->applied, sizeof x->applied, "%s", s->applied_lsn ? s->applied_lsn : "");
    snprintf(x->confirmed, sizeof x->confirmed, "%s", s->confirmed_lsn ? s->confirmed_lsn : "");
    st->source_lsn = x->src_lsn;
    st->applied_lsn = x->applied;
    st->confirmed_lsn = x->confirmed;
    st->lag_bytes = (uint64_t)(s->lag_bytes > 0 ? s->lag_bytes : 0);
    st->lag_seconds = s->lag_bytes > 0 ? s->commit_age_s : 0;
    /* No run applies: nothing closes the lag. */
    st->eta_seconds = s->lag_bytes > 0 ? -1 : 0;
    st->applied_xacts_total = (uint64_t)(s->applied_xacts > 0 ? s->applied_xacts : 0);
    st->applied_changes_total = (uint64_t)(s->applied_changes > 0 ? s->applied_changes : 0);
    from_tables(x, s);
    st->server_version = keep(x, s->server_version);
    st->server_version_num = s->server_version_num;
    pgshift__slot_health__init(&x->slot);
    x->slot.retained_bytes = (uint64_t)(s->slot_retained > 0 ? s->slot_retained : 0);
    x->slot.wal_status = s->slot_exists ? keep(x, s->wal_status) : keep(x, "");
    x->slot.safe_bytes_left = s->slot_safe;
    st->slot = &x->slot;
    json_t *stats = s->stats ? json_loads(s->stats, 0, NULL) : NULL;
    json_t *rec = x->origin.cutover_record ? json_loads(x->origin.cutover_record, 0, NULL) : NULL;
    /* The stored rates only mean something while a run refreshes them. */
    if (s->slot_active && json_is_object(stats))
        from_stats(x, stats);
    ok = ok && from_cutover(x, rec, s->slot_active ? stats : NULL, s->cutover_at_unix_ms);
    json_decref(stats);
    json_decref(rec);
    st->taken_at_unix_ms = now_unix_ms();
    if (!ok || st->migration == NULL || st->server_version == NULL || x->slot.wal_status == NULL ||
        (s->error && s->error[0] && st->error == NULL)) {
        status_snapshot_free(x);
        return false;
    }
    return true;
}

void status_snapshot_free(status_snapshot *x)
{
    free(x->tp);
    free(x->tpp);
    free(x->names);
    x->tp = NULL;
    x->tpp = NULL;
    x->names = NULL;
    for (int i = 0; i < x->nown; i++)
        free(x->own[i]);
    x->nown = 0;
}
