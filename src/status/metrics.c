/* metrics.c: a status snapshot as Prometheus text and as JSON (status.h). */
#include "pgshift/status.h"

#include "pgshift/cutover.h"

#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *status_phase_name(Pgshift__Phase phase)
{
    return phase_proto_name((int)phase);
}

typedef struct buf {
    char *p;
    size_t len, cap;
    bool oom;
} buf;

static void put(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(buf *b, const char *fmt, ...)
{
    if (b->oom)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = true;
            return;
        }
        if (b->p && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap ? b->cap * 2 : 4096;
        while (cap < b->len + (size_t)n + 1)
            cap *= 2;
        char *np = realloc(b->p, cap);
        if (np == NULL) {
            b->oom = true;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
}

/* A label value: backslash, double quote and newline escaped. */
static void label(buf *b, const char *v)
{
    for (const char *s = v ? v : ""; *s && !b->oom; s++) {
        if (*s == '\\' || *s == '"')
            put(b, "\\%c", *s);
        else if (*s == '\n')
            put(b, "\\n");
        else
            put(b, "%c", *s);
    }
}

static void head(buf *b, const char *name, const char *type, const char *help)
{
    put(b, "# HELP pgshift_%s %s\n# TYPE pgshift_%s %s\n", name, help, name, type);
}

static void sample(buf *b, const char *name, const Pgshift__StatusSnapshot *st, const char *table,
                   double v)
{
    put(b, "pgshift_%s{migration=\"", name);
    label(b, st->migration);
    if (table) {
        put(b, "\",table=\"");
        label(b, table);
    }
    if (isnan(v)) {
        put(b, "\"} NaN\n");
        return;
    }
    /* The shortest of %.15g / %.17g that reads back as the same double. */
    char num[40];
    snprintf(num, sizeof num, "%.15g", v);
    if (strtod(num, NULL) != v)
        snprintf(num, sizeof num, "%.17g", v);
    put(b, "\"} %s\n", num);
}

static void gauge(buf *b, const char *name, const char *help, const Pgshift__StatusSnapshot *st,
                  double v)
{
    head(b, name, "gauge", help);
    sample(b, name, st, NULL, v);
}

char *status_prometheus(const Pgshift__StatusSnapshot *st, size_t *len)
{
    buf b = {0};
    int phase = phase_metric_from_proto((int)st->phase);
    gauge(&b, "phase",
          "Migration phase: 0 not started, 1 copying, 2 catching_up, 3 ready, 4 cutting_over, "
          "5 done, 6 paused, 7 failed.",
          st, phase);
    head(&b, "phase_info", "gauge", "1 for the current phase, by name.");
    put(&b, "pgshift_phase_info{migration=\"");
    label(&b, st->migration);
    put(&b, "\",phase=\"%s\"} 1\n", status_phase_name(st->phase));
    gauge(&b, "lag_bytes", "Source WAL position minus the last applied commit.", st,
          (double)st->lag_bytes);
    gauge(&b, "lag_seconds", "Now minus the commit time of the last applied transaction.", st,
          st->lag_seconds);
    gauge(&b, "eta_seconds",
          "Seconds until caught up at the current rates; -1 never (the source writes faster), "
          "NaN not known yet.",
          st, st->eta_seconds);
    gauge(&b, "apply_changes_per_second", "Applied changes per second (smoothed).", st,
          st->apply_changes_per_second);
    gauge(&b, "apply_transactions_per_second", "Applied transactions per second (smoothed).", st,
          st->apply_xacts_per_second);
    gauge(&b, "apply_bytes_per_second", "Applied WAL bytes per second (smoothed).", st,
          st->apply_bytes_per_second);
    gauge(&b, "wal_bytes_per_second", "WAL the source writes per second (smoothed).", st,
          st->wal_bytes_per_second);
    head(&b, "applied_transactions_total", "counter", "Source transactions applied.");
    sample(&b, "applied_transactions_total", st, NULL, (double)st->applied_xacts_total);
    head(&b, "applied_changes_total", "counter", "Inserts, updates and deletes applied, by table.");
    for (size_t i = 0; i < st->n_tables; i++)
        sample(&b, "applied_changes_total", st, st->tables[i]->source,
               (double)st->tables[i]->changes_applied);
    head(&b, "copy_rows_total", "counter", "Rows copied from the snapshot, by table.");
    for (size_t i = 0; i < st->n_tables; i++)
        sample(&b, "copy_rows_total", st, st->tables[i]->source,
               (double)st->tables[i]->rows_copied);
    head(&b, "copy_rows_estimated", "gauge", "Estimated rows to copy, by table.");
    for (size_t i = 0; i < st->n_tables; i++)
        sample(&b, "copy_rows_estimated", st, st->tables[i]->source,
               (double)st->tables[i]->rows_estimated);
    head(&b, "copy_rows_per_second", "gauge", "Copy rate while copying, by table.");
    for (size_t i = 0; i < st->n_tables; i++)
        sample(&b, "copy_rows_per_second", st, st->tables[i]->source,
               st->tables[i]->copy_rows_per_second);
    head(&b, "copy_done", "gauge", "1 once the table's copy finished.");
    for (size_t i = 0; i < st->n_tables; i++)
        sample(&b, "copy_done", st, st->tables[i]->source, st->tables[i]->copy_done ? 1 : 0);
    if (st->slot) {
        gauge(&b, "slot_retained_bytes", "WAL the replication slot keeps on the source.", st,
              (double)st->slot->retained_bytes);
        gauge(&b, "slot_safe_bytes",
              "WAL that can still be written before max_slot_wal_keep_size invalidates the "
              "slot; -1 unlimited.",
              st, (double)st->slot->safe_bytes_left);
    }
    gauge(&b, "postponed", "1 while an automatic cutover is postponed.", st, st->postponed);
    gauge(&b, "paused", "1 while the apply is paused.", st, st->paused);
    if (st->cutover) {
        head(&b, "cutover_attempts_total", "counter", "Cutover attempts.");
        sample(&b, "cutover_attempts_total", st, NULL, st->cutover->attempts);
        gauge(&b, "cutover_write_block_seconds",
              "The last cutover's write-blocking window (lock wait + lock held).", st,
              st->cutover->write_block_ms / 1000.0);
    }
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    if (len)
        *len = b.len;
    return b.p ? b.p : strdup("");
}

char *status_json(const Pgshift__StatusSnapshot *st, int indent)
{
    json_t *o = json_object();
    json_object_set_new(o, "migration", json_string(st->migration ? st->migration : ""));
    json_object_set_new(o, "phase", json_string(status_phase_name(st->phase)));
    if (st->error && st->error[0])
        json_object_set_new(o, "error", json_string(st->error));
    json_object_set_new(o, "source_lsn", json_string(st->source_lsn ? st->source_lsn : ""));
    json_object_set_new(o, "applied_lsn", json_string(st->applied_lsn ? st->applied_lsn : ""));
    json_object_set_new(o, "confirmed_lsn",
                        json_string(st->confirmed_lsn ? st->confirmed_lsn : ""));
    json_object_set_new(o, "lag_bytes", json_integer((json_int_t)st->lag_bytes));
    json_object_set_new(o, "lag_seconds", json_real(st->lag_seconds));
    json_object_set_new(o, "eta_seconds",
                        isnan(st->eta_seconds) ? json_null() : json_real(st->eta_seconds));
    json_object_set_new(o, "apply_changes_per_second", json_real(st->apply_changes_per_second));
    json_object_set_new(o, "apply_xacts_per_second", json_real(st->apply_xacts_per_second));
    json_object_set_new(o, "apply_bytes_per_second", json_real(st->apply_bytes_per_second));
    json_object_set_new(o, "wal_bytes_per_second", json_real(st->wal_bytes_per_second));
    json_object_set_new(o, "applied_xacts", json_integer((json_int_t)st->applied_xacts_total));
    json_object_set_new(o, "applied_changes", json_integer((json_int_t)st->applied_changes_total));
    json_object_set_new(o, "postponed", json_boolean(st->postponed));
    json_object_set_new(o, "paused", json_boolean(st->paused));
    json_object_set_new(o, "taken_at_unix_ms", json_integer((json_int_t)st->taken_at_unix_ms));
    json_t *tables = json_array();
    for (size_t i = 0; i < st->n_tables; i++) {
        const Pgshift__TableProgress *t = st->tables[i];
        json_array_append_new(
            tables,
            json_pack("{s:s,s:s,s:I,s:I,s:I,s:I,s:b,s:I}", "source", t->source ? t->source : "",
                      "target", t->target ? t->target : "", "rows_copied",
                      (json_int_t)t->rows_copied, "rows_estimated", (json_int_t)t->rows_estimated,
                      "bytes_copied", (json_int_t)t->bytes_copied, "bytes_estimated",
                      (json_int_t)t->bytes_estimated, "copy_done", t->copy_done, "changes_applied",
                      (json_int_t)t->changes_applied));
        json_t *jt = json_array_get(tables, i);
        json_object_set_new(jt, "copy_rows_per_second", json_real(t->copy_rows_per_second));
        json_object_set_new(jt, "copy_eta_seconds", json_real(t->copy_eta_seconds));
    }
    json_object_set_new(o, "tables", tables);
    if (st->slot)
        json_object_set_new(o, "slot",
                            json_pack("{s:I,s:s,s:I}", "retained_bytes",
                                      (json_int_t)st->slot->retained_bytes, "wal_status",
                                      st->slot->wal_status ? st->slot->wal_status : "",
                                      "safe_bytes_left", (json_int_t)st->slot->safe_bytes_left));
    if (st->cutover) {
        const Pgshift__CutoverInfo *c = st->cutover;
        json_t *co =
            json_pack("{s:i,s:f,s:f,s:f,s:I}", "attempts", (int)c->attempts, "lock_wait_ms",
                      c->lock_wait_ms, "fence_ms", c->fence_latency_ms, "write_block_ms",
                      c->write_block_ms, "done_at_unix_ms", (json_int_t)c->done_at_unix_ms);
        if (c->last_blocker && c->last_blocker->pid)
            json_object_set_new(co, "last_blocker",
                                json_pack("{s:i,s:s,s:s,s:f}", "pid", c->last_blocker->pid,
                                          "application", c->last_blocker->application, "query",
                                          c->last_blocker->query, "xact_age_seconds",
                                          c->last_blocker->xact_age_seconds));
        json_object_set_new(o, "cutover", co);
    }
    char *s =
        json_dumps(o, JSON_PRESERVE_ORDER | (indent > 0 ? JSON_INDENT(indent) : JSON_COMPACT));
    json_decref(o);
    return s;
}

bool status_snapshot_build(const pgs_migration *m, const status_live *live, status_snapshot *x)
{
    memset(x, 0, sizeof *x);
    pgshift__status_snapshot__init(&x->st);
    size_t n = m->ntables > 0 ? (size_t)m->ntables : 1;
    x->tp = calloc(n, sizeof *x->tp);
    x->tpp = calloc(n, sizeof *x->tpp);
    x->names = calloc(n, sizeof *x->names);
    if (x->tp == NULL || x->tpp == NULL || x->names == NULL) {
        status_snapshot_free(x);
        return false;
    }
    Pgshift__StatusSnapshot *st = &x->st;
    st->migration = m->plan->name;
    st->phase = (Pgshift__Phase)phase_to_proto(m->phase);
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
        pgshift__table_progress__init(t);
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
        x->tpp[i] = t;
    }
    st->n_tables = (size_t)m->ntables;
    st->tables = x->tpp;
    pgshift__slot_health__init(&x->slot);
    x->slot.retained_bytes = (uint64_t)(live->slot_retained > 0 ? live->slot_retained : 0);
    x->slot.wal_status = (char *)(live->wal_status ? live->wal_status : "");
    x->slot.safe_bytes_left = live->slot_safe;
    st->slot = &x->slot;
    pgshift__cutover_info__init(&x->co);
    x->co.attempts = (uint32_t)live->cutover_attempts;
    x->co.lock_wait_ms = live->cutover_lock_wait_ms;
    x->co.write_block_ms = live->cutover_write_block_ms;
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
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    st->taken_at_unix_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
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
}
