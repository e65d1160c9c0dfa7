/* render.c: the one status snapshot (status.h), live or from the state,
 * rendered three ways: Prometheus text, JSON and the terminal text of
 * `pgshift status`. */
#include "pgshift/status.h"

#include "pgshift/cutover.h"
#include "pgshift/state.h"

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

/* What a snapshot has only at times: the rollback window, the last verify. */
static void optional_gauges(buf *b, const Pgshift__StatusSnapshot *st)
{
    if (st->reverse) {
        gauge(b, "reverse_lag_bytes",
              "Rollback window: WAL of the new tables' changes not yet applied to the old ones.",
              st, (double)st->reverse->lag_bytes);
        gauge(b, "reverse_lag_seconds",
              "Rollback window: age of the oldest change not yet applied to the old tables.", st,
              st->reverse->lag_seconds);
        gauge(b, "rollback_window_seconds_left",
              "Rollback window: seconds until it ends (`pgshift rollback` works until then).", st,
              st->reverse->window_left_seconds);
    }
    if (st->verify) {
        gauge(b, "verify_differences",
              "Rows the last `pgshift verify` found missing, extra or different.", st,
              (double)st->verify->differences);
        gauge(b, "verify_consistent",
              "1 when the last `pgshift verify` read both sides at one source LSN.", st,
              st->verify->consistent);
    }
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
    head(&b, "source_info", "gauge",
         "1, labelled with the source's server_version, the pgoutput proto_version of the live "
         "stream (0 not streaming) and whether it filters origin 'none'.");
    put(&b, "pgshift_source_info{migration=\"");
    label(&b, st->migration);
    put(&b, "\",server_version=\"");
    label(&b, st->server_version);
    put(&b, "\",proto_version=\"%d\",origin_filter=\"%s\"} 1\n", (int)st->proto_version,
        st->origin_filter ? "true" : "false");
    if (st->cutover) {
        head(&b, "cutover_attempts_total", "counter", "Cutover attempts.");
        sample(&b, "cutover_attempts_total", st, NULL, st->cutover->attempts);
        gauge(&b, "cutover_write_block_seconds",
              "The last cutover's write-blocking window (lock wait + lock held).", st,
              st->cutover->write_block_ms / 1000.0);
        const char *why = st->cutover->blocked ? st->cutover->blocked : "";
        head(&b, "cutover_blocked", "gauge",
             "1 while an automatic cutover waits for the operator to fix what `reason` says.");
        put(&b, "pgshift_cutover_blocked{migration=\"");
        label(&b, st->migration);
        put(&b, "\",reason=\"");
        label(&b, why);
        put(&b, "\"} %d\n", why[0] ? 1 : 0);
    }
    optional_gauges(&b, st);
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    if (len)
        *len = b.len;
    return b.p ? b.p : strdup("");
}

static json_t *snapshot_object(const Pgshift__StatusSnapshot *st)
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
    json_object_set_new(o, "server_version",
                        json_string(st->server_version ? st->server_version : ""));
    json_object_set_new(o, "server_version_num", json_integer(st->server_version_num));
    json_object_set_new(o, "proto_version", json_integer(st->proto_version));
    json_object_set_new(o, "origin_filter", json_boolean(st->origin_filter));
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
        json_object_set_new(co, "blocked", json_string(c->blocked ? c->blocked : ""));
        if (c->last_blocker && c->last_blocker->pid)
            json_object_set_new(co, "last_blocker",
                                json_pack("{s:i,s:s,s:s,s:f}", "pid", c->last_blocker->pid,
                                          "application", c->last_blocker->application, "query",
                                          c->last_blocker->query, "xact_age_seconds",
                                          c->last_blocker->xact_age_seconds));
        json_object_set_new(o, "cutover", co);
    }
    if (st->timings) {
        const Pgshift__Timings *t = st->timings;
        json_object_set_new(o, "timings",
                            json_pack("{s:f,s:f,s:f,s:f,s:f,s:f}", "copy_seconds", t->copy_seconds,
                                      "index_build_seconds", t->index_build_seconds,
                                      "backlog_seconds", t->backlog_seconds, "ready_seconds",
                                      t->ready_seconds, "cutover_seconds", t->cutover_seconds,
                                      "after_swap_seconds", t->after_swap_seconds));
    }
    if (st->reverse) {
        const Pgshift__ReverseInfo *r = st->reverse;
        json_object_set_new(o, "reverse",
                            json_pack("{s:I,s:f,s:f,s:s}", "lag_bytes", (json_int_t)r->lag_bytes,
                                      "lag_seconds", r->lag_seconds, "window_left_seconds",
                                      r->window_left_seconds, "slot", r->slot));
    }
    if (st->verify) {
        const Pgshift__VerifyInfo *v = st->verify;
        json_object_set_new(o, "verify",
                            json_pack("{s:s,s:s,s:b,s:b,s:I}", "at", v->at, "lsn", v->lsn,
                                      "consistent", v->consistent, "identical", v->identical,
                                      "differences", (json_int_t)v->differences));
    }
    return o;
}

/* What the origin adds: whether a run streams, the slot's name, and the
 * stored cutover record (all its keys, "post" aside) with its time. */
static void add_origin(json_t *o, const status_origin *org)
{
    json_object_set_new(o, "running", json_boolean(org->live || org->running));
    json_t *slot = json_object_get(o, "slot");
    if (slot && org->slot_name)
        json_object_set_new(slot, "name", json_string(org->slot_name));
    json_t *rec = org->cutover_record ? json_loads(org->cutover_record, 0, NULL) : NULL;
    if (json_is_object(rec)) {
        json_object_del(rec, "post");
        json_object_set_new(rec, "at", json_string(org->cutover_at ? org->cutover_at : ""));
        json_t *co = json_object_get(o, "cutover");
        if (co)
            json_object_update_missing(co, rec);
        else
            json_object_set(o, "cutover", rec);
    }
    json_decref(rec);
}

char *status_json_origin(const Pgshift__StatusSnapshot *st, const status_origin *org, int indent)
{
    json_t *o = snapshot_object(st);
    if (o == NULL)
        return NULL;
    if (org)
        add_origin(o, org);
    char *s =
        json_dumps(o, JSON_PRESERVE_ORDER | (indent > 0 ? JSON_INDENT(indent) : JSON_COMPACT));
    json_decref(o);
    return s;
}

char *status_json(const Pgshift__StatusSnapshot *st, int indent)
{
    return status_json_origin(st, NULL, indent);
}

/* ---- the terminal text of `pgshift status` ---- */

static const char *mb(double bytes, char *out, size_t len)
{
    snprintf(out, len, "%.1f MB", bytes / 1048576.0);
    return out;
}

static const char *eta_text(double eta, char *out, size_t len)
{
    if (isnan(eta))
        snprintf(out, len, "not known yet");
    else if (eta < 0)
        snprintf(out, len, "never (the source writes faster than we apply)");
    else if (eta == 0)
        snprintf(out, len, "caught up");
    else
        snprintf(out, len, "%.0f s", eta);
    return out;
}

static const char *origin_text(const Pgshift__StatusSnapshot *st, const status_origin *o)
{
    if (o == NULL || o->live)
        return "(live)";
    if (o->running)
        return "(from the state tables; a run streams, but did not answer on its control socket)";
    if (st->phase == PGSHIFT__PHASE__PHASE_DONE)
        return "(from the state tables)";
    return "(from the state tables; no run is serving this plan)";
}

/* After the swap: the write-blocking window, the old tables, and whether
 * the steps after the swap are done (the stored record). */
static void text_cutover_done(const Pgshift__StatusSnapshot *st, const status_origin *o, FILE *f)
{
    const Pgshift__CutoverInfo *c = st->cutover;
    json_t *rec = o && o->cutover_record ? json_loads(o->cutover_record, 0, NULL) : NULL;
    fprintf(f, "  cut over");
    if (o && o->cutover_at)
        fprintf(f, " at %s", o->cutover_at);
    fprintf(f,
            " after %u attempt(s): write-blocking window %.0f ms (lock wait %.0f ms, fence "
            "reached in %.0f ms",
            c->attempts, c->write_block_ms, c->lock_wait_ms, c->fence_latency_ms);
    if (json_is_number(json_object_get(rec, "swap_ms")))
        fprintf(f, ", swap %.0f ms", json_number_value(json_object_get(rec, "swap_ms")));
    fprintf(f, ")\n");
    const json_t *old = json_object_get(rec, "old_tables"), *v;
    size_t i;
    const char *plan = o && o->plan_path ? o->plan_path : "PLAN";
    if (json_array_size(old) > 0) {
        fprintf(f, "  old tables (kept until `pgshift cleanup --plan %s --confirm`):", plan);
        json_array_foreach(old, i, v) fprintf(f, "%s %s", i ? "," : "", json_string_value(v));
        fprintf(f, "\n");
    }
    if (rec && !json_is_true(json_object_get(rec, "post_done")))
        fprintf(f,
                "  note: the steps after the swap (validate foreign keys, ANALYZE) have not "
                "finished; `pgshift run --plan %s` finishes them\n",
                plan);
    json_decref(rec);
}

static void text_slot(const Pgshift__StatusSnapshot *st, const status_origin *o, FILE *f)
{
    const Pgshift__SlotHealth *s = st->slot;
    char a[32], b[32];
    const char *name = o && o->slot_name ? o->slot_name : "";
    fprintf(f, "  slot%s%s: %s, retains %s of WAL", name[0] ? " " : "", name,
            s->wal_status && s->wal_status[0] ? s->wal_status : "absent",
            mb((double)s->retained_bytes, a, sizeof a));
    if (s->safe_bytes_left >= 0 && s->wal_status && s->wal_status[0])
        fprintf(f, " (%s left before max_slot_wal_keep_size)",
                mb((double)s->safe_bytes_left, b, sizeof b));
    fprintf(f, "\n");
}

/* The source's version and what the live stream speaks. */
static void text_source(const Pgshift__StatusSnapshot *st, FILE *f)
{
    const char *v = st->server_version && st->server_version[0] ? st->server_version : NULL;
    fprintf(f, "  source: %s%s", v ? "PostgreSQL " : "server version not known", v ? v : "");
    if (st->proto_version > 0)
        fprintf(f, ", pgoutput proto_version %d, streaming, origin filter %s\n",
                (int)st->proto_version, st->origin_filter ? "on" : "off");
    else
        fprintf(f, ", not streaming\n");
}

/* "  time: copy 9.6 s, index build 3.9 s, ..." for what has happened. */
static void text_timings(const Pgshift__StatusSnapshot *st, FILE *f)
{
    const Pgshift__Timings *t = st->timings;
    if (t == NULL)
        return;
    pgs_timings pt = {t->copy_seconds,  t->index_build_seconds, t->backlog_seconds,
                      t->ready_seconds, t->cutover_seconds,     t->after_swap_seconds};
    char line[512];
    if (timings_text(&pt, line, sizeof line) > 0)
        fprintf(f, "  time: %s\n", line);
}

void status_text(const Pgshift__StatusSnapshot *st, const status_origin *o, FILE *f)
{
    bool applying = o == NULL || o->live || o->running;
    bool done = st->phase == PGSHIFT__PHASE__PHASE_DONE;
    char a[32], b[32], eta[64];
    fprintf(f, "migration %s: %s%s%s %s\n", st->migration, status_phase_name(st->phase),
            st->paused ? ", paused" : "", st->postponed ? ", automatic cutover postponed" : "",
            origin_text(st, o));
    if (st->error && st->error[0])
        fprintf(f, "  error: %s\n", st->error);
    if (done && st->cutover)
        text_cutover_done(st, o, f);
    else {
        fprintf(f, "  lag: %s, %.1f s", mb((double)st->lag_bytes, a, sizeof a), st->lag_seconds);
        if (applying)
            fprintf(f, "; ETA %s", eta_text(st->eta_seconds, eta, sizeof eta));
        fprintf(f, "\n");
    }
    if (applying)
        fprintf(f, "  apply: %.0f changes/s, %.0f transactions/s; the source writes %s/s of WAL\n",
                st->apply_changes_per_second, st->apply_xacts_per_second,
                mb(st->wal_bytes_per_second, b, sizeof b));
    fprintf(f, "  applied: %llu transactions, %llu changes (applied %s, ",
            (unsigned long long)st->applied_xacts_total,
            (unsigned long long)st->applied_changes_total,
            st->applied_lsn && st->applied_lsn[0] ? st->applied_lsn : "nothing yet");
    if (st->confirmed_lsn && st->confirmed_lsn[0])
        fprintf(f, "confirmed %s, ", st->confirmed_lsn);
    fprintf(f, "source at %s)\n", st->source_lsn ? st->source_lsn : "");
    text_source(st, f);
    if (st->slot)
        text_slot(st, o, f);
    const Pgshift__CutoverInfo *c = st->cutover;
    if (c && c->blocked && c->blocked[0] && !done)
        fprintf(f, "  cutover blocked: the automatic cutover waits for the operator: %s\n",
                c->blocked);
    if (c && c->attempts > 0 && !done) {
        fprintf(f, "  cutover: %u attempt(s)", c->attempts);
        if (c->last_blocker)
            fprintf(f, "; last blocked by pid %d (%s, in a transaction for %.1f s): %s",
                    c->last_blocker->pid, c->last_blocker->application,
                    c->last_blocker->xact_age_seconds, c->last_blocker->query);
        fprintf(f, "\n");
    }
    for (size_t i = 0; i < st->n_tables; i++) {
        const Pgshift__TableProgress *t = st->tables[i];
        if (st->reverse) { /* the rollback window: no copy, changes carried back */
            fprintf(f, "  %s -> %s: %llu changes carried back\n", t->source, t->target,
                    (unsigned long long)t->changes_applied);
            continue;
        }
        fprintf(f, "  %s -> %s: copy %s, %llu of ~%llu rows; %llu changes applied\n", t->source,
                t->target, t->copy_done ? "done" : "in progress",
                (unsigned long long)t->rows_copied, (unsigned long long)t->rows_estimated,
                (unsigned long long)t->changes_applied);
    }
    text_timings(st, f);
    if (st->reverse)
        fprintf(f,
                "  rollback window: %.0f min left; the old tables are %.1f kB (%.1f s) behind "
                "the live ones (slot %s); `pgshift rollback` swaps back\n",
                st->reverse->window_left_seconds / 60.0, (double)st->reverse->lag_bytes / 1024.0,
                st->reverse->lag_seconds, st->reverse->slot);
    if (st->verify) {
        const Pgshift__VerifyInfo *v = st->verify;
        if (v->identical)
            fprintf(f, "  last verify: identical, at %s %s (%s)\n", v->lsn,
                    v->consistent ? "on both sides" : "(not at one LSN: no run was streaming)",
                    v->at);
        else
            fprintf(f,
                    "  last verify: %llu rows differ, at %s%s (%s): `pgshift verify` names them\n",
                    (unsigned long long)v->differences, v->lsn,
                    v->consistent ? "" : " (not at one LSN: no run was streaming)", v->at);
    }
    if (o && !o->live && o->running && o->state_age_s > 30)
        fprintf(f, "  note: the state was last refreshed %.0f s ago\n", o->state_age_s);
}
