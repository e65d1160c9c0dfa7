/* copy.c: the snapshot copy. Worker threads each import the slot's exported
 * snapshot on their own source connection and copy ranges of pages
 * (ctid ranges, so any table splits without looking at its key) straight
 * from COPY TO STDOUT into COPY FROM STDIN on the target, in binary form
 * (source and target columns have identical types; preflight checks).
 *
 * In the source's own database on 16+, each worker writes under a
 * replication origin of its own (<slot>_copy<N>): the stream asks for
 * origin 'none', so the walsender drops the copied rows as it reads them
 * instead of decoding every one as an insert before it reaches the
 * changes pgshift needs. Nothing the stream must carry is dropped: the
 * copy writes only to the targets, and the stream asks for origin 'none'
 * only when no origin but pgshift's exists (stream.c). */
#include "pgshift/migration.h"

#include "pgshift/log.h"
#include "pgshift/status.h"
#include "pgshift/pg.h"
#include "pgshift/store.h"
#include "pgshift/state.h"
#include "pgshift/copy.h"
#include "pgshift/parallel.h"

#include <pthread.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_WORKERS 16

typedef struct copy_task {
    pgs_mtable *t;
    const char *from; /* the table read: the source, or one of its partitions (quoted) */
    int64_t lo;       /* first page */
    int64_t hi;       /* page past the last, or -1 = to the end */
    int stage;        /* starts once every task of a lower stage finished (copy_stages) */
} copy_task;

typedef struct copy_shared {
    pgs_migration *m;
    char *snapshot_literal;
    char **col_lists; /* per table: quoted column list */
    char **sel_lists; /* per mapped table: the source's SELECT list (its mapping), else NULL */
    copy_task *tasks;
    int ntasks;
    int next;
    int imported;
    int nworkers;
    pgs_origin_pool origins; /* <slot>_copy<N> (see the top of the file) */
    int finished;
    bool failed;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    _Atomic int64_t *rows;  /* per table, live (approximate until each range ends) */
    _Atomic int64_t *bytes; /* per table */
    PGresult **parts;       /* per table: the tables read (pg_partition_tree's leaves) */
    int *stage_left;        /* per stage: tasks not finished */
    int nstages;
} copy_shared;

/* Tasks of stages before `stage` not finished yet (caller holds s->mu). */
static int earlier_left(const copy_shared *s, int stage)
{
    int n = 0;
    for (int i = 0; i < stage && i < s->nstages; i++)
        n += s->stage_left[i];
    return n;
}

static void mark_failed(copy_shared *s)
{
    pthread_mutex_lock(&s->mu);
    s->failed = true;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static bool is_failed(copy_shared *s)
{
    pthread_mutex_lock(&s->mu);
    bool f = s->failed;
    pthread_mutex_unlock(&s->mu);
    return f;
}

/* The COPY TO and COPY FROM statements for one page range. */
static bool range_sql(copy_shared *s, const copy_task *k, char **out_sql, char **in_sql)
{
    pgs_mtable *t = k->t;
    const char *cols = s->col_lists[t->ord];
    char where[128] = "";
    if (k->hi >= 0)
        snprintf(where, sizeof where, " WHERE ctid >= '(%lld,0)'::tid AND ctid < '(%lld,0)'::tid",
                 (long long)k->lo, (long long)k->hi);
    else if (k->lo > 0)
        snprintf(where, sizeof where, " WHERE ctid >= '(%lld,0)'::tid", (long long)k->lo);
    const char *sel = s->sel_lists[t->ord] ? s->sel_lists[t->ord] : cols;
    return asprintf(out_sql, "COPY (SELECT %s FROM ONLY %s%s) TO STDOUT (FORMAT binary)", sel,
                    k->from, where) >= 0 &&
           asprintf(in_sql, "COPY %s (%s) FROM STDIN (FORMAT binary)",
                    t->copy_into ? t->copy_into : t->tgt.qname, cols) >= 0;
}

/* Puts the target into COPY IN. */
static bool start_copy_in(PGconn *tgt, pgs_mtable *t, const char *in_sql)
{
    PGresult *res = PQexec(tgt, in_sql);
    if (PQresultStatus(res) != PGRES_COPY_IN) {
        char line[1024];
        log_error("table %s: COPY into %s failed: %s", t->src.qname, t->tgt.qname,
                  pg_result_error_line(res, line, sizeof line));
        PQclear(res);
        return false;
    }
    PQclear(res);
    return true;
}

/* Puts the source into COPY OUT; when it cannot, ends the target's COPY IN
 * with an error. */
static bool start_copy_out(PGconn *src, PGconn *tgt, pgs_mtable *t, const char *out_sql)
{
    PGresult *res = PQexec(src, out_sql);
    if (PQresultStatus(res) != PGRES_COPY_OUT) {
        char line[1024];
        log_error("table %s: COPY out failed: %s", t->src.qname,
                  pg_result_error_line(res, line, sizeof line));
        PQclear(res);
        PQputCopyEnd(tgt, "source failed");
        return false;
    }
    PQclear(res);
    return true;
}

/* Passes the rows from the source's COPY OUT to the target's COPY IN,
 * adding to the live counts as it goes (*counted: rows added to s->rows,
 * *bytes: bytes not yet added to s->bytes). False when another worker
 * failed: the target's COPY IN is then ended with an error. */
static bool pump_rows(copy_shared *s, PGconn *src, PGconn *tgt, pgs_mtable *t, int64_t *bytes,
                      int64_t *counted)
{
    int64_t msgs = 0;
    for (;;) {
        char *buf = NULL;
        int n = PQgetCopyData(src, &buf, 0);
        if (n < 0)
            return true;
        if (PQputCopyData(tgt, buf, n) != 1) {
            PQfreemem(buf);
            log_error("table %s: sending rows to %s failed: %s", t->src.qname, t->tgt.qname,
                      PQerrorMessage(tgt));
            while (PQgetCopyData(src, &buf, 0) >= 0)
                PQfreemem(buf);
            return true;
        }
        PQfreemem(buf);
        *bytes += n;
        /* COPY TO sends one CopyData message per row. */
        if ((++msgs & 1023) == 0) {
            atomic_fetch_add(&s->rows[t->ord], 1024);
            *counted += 1024;
            atomic_fetch_add(&s->bytes[t->ord], *bytes);
            *bytes = 0;
            if (is_failed(s)) {
                PQputCopyEnd(tgt, "another copy worker failed");
                while (PQgetCopyData(src, &buf, 0) >= 0)
                    PQfreemem(buf);
                return false;
            }
        }
    }
}

/* Ends the target's COPY IN after the source's COPY OUT: normally when the
 * source finished well, with an error when it did not. */
static void end_copy_in(PGconn *src, PGconn *tgt, pgs_mtable *t)
{
    PGresult *res = PQgetResult(src);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        char line[1024];
        log_error("table %s: COPY out failed: %s", t->src.qname,
                  pg_result_error_line(res, line, sizeof line));
        PQclear(res);
        PQputCopyEnd(tgt, "source failed");
        return;
    }
    PQclear(res);
    PQputCopyEnd(tgt, NULL);
}

/* The target's verdict on the COPY IN: the rows it took, or false. */
static bool finish_copy_in(PGconn *tgt, pgs_mtable *t, int64_t *rows)
{
    PGresult *res = PQgetResult(tgt);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        char line[1024];
        log_error("table %s: COPY into %s failed: %s", t->src.qname, t->tgt.qname,
                  pg_result_error_line(res, line, sizeof line));
        PQclear(res);
        while ((res = PQgetResult(tgt)) != NULL)
            PQclear(res);
        return false;
    }
    *rows = strtoll(PQcmdTuples(res), NULL, 10);
    PQclear(res);
    return true;
}

/* Copies one page range; commits it on the target together with the
 * progress row. */
static bool copy_range(copy_shared *s, PGconn *src, PGconn *tgt, const copy_task *k)
{
    pgs_mtable *t = k->t;
    char *out_sql = NULL, *in_sql = NULL;
    bool ok = false;
    int64_t bytes = 0, rows = 0;
    int64_t counted = 0; /* what this range has added to s->rows so far */
    if (!range_sql(s, k, &out_sql, &in_sql))
        goto done;
    if (!pg_exec(tgt, "starting a copy transaction", "BEGIN"))
        goto done;
    if (!start_copy_in(tgt, t, in_sql))
        goto rollback;
    if (start_copy_out(src, tgt, t, out_sql)) {
        if (pump_rows(s, src, tgt, t, &bytes, &counted))
            end_copy_in(src, tgt, t);
        PGresult *res;
        while ((res = PQgetResult(src)) != NULL)
            PQclear(res);
    }
    if (!finish_copy_in(tgt, t, &rows))
        goto rollback;
    /* Replace the running count (whole thousands) with the exact one in one
     * step: progress readers must never see it go backwards. */
    atomic_fetch_add(&s->rows[t->ord], rows - counted);
    counted = rows;
    atomic_fetch_add(&s->bytes[t->ord], bytes);
    /* In this range's transaction: the progress commits with the rows. */
    if (!store_add_copy_progress(tgt, s->m->plan->name, t->ord, rows,
                                 atomic_load(&s->bytes[t->ord])))
        goto rollback;
    ok = pg_exec(tgt, "committing a copied range", "COMMIT");
    goto done;
rollback:
    atomic_fetch_sub(&s->rows[t->ord], counted);
    pg_exec(tgt, "rolling back a copied range", "ROLLBACK");
done:
    free(out_sql);
    free(in_sql);
    return ok;
}

/* pg_probe, its result kept in *out (optional). */
static bool probe(PGconn *c, const char *sql, int n, const char *const *params, PGresult **out,
                  char *why, size_t whylen)
{
    PGresult *res = pg_probe(c, sql, n, params, why, whylen);
    if (res && out)
        *out = res;
    else
        PQclear(res);
    return res != NULL;
}

/* Does `what` (an aggregate) run over the pages [lo, hi) of k's table? */
static bool pages_ok(PGconn *c, const copy_task *k, const char *what, int64_t lo, int64_t hi,
                     char *why, size_t whylen)
{
    char *sql = NULL;
    if (asprintf(&sql,
                 "SELECT %s FROM ONLY %s WHERE ctid >= format('(%%s,0)', $1::bigint)::tid"
                 " AND ctid < format('(%%s,0)', $2::bigint)::tid",
                 what, k->from) < 0)
        return true;
    char a[24], b[24];
    snprintf(a, sizeof a, "%lld", (long long)lo);
    snprintf(b, sizeof b, "%lld", (long long)hi);
    bool ok = probe(c, sql, 2, (const char *[]){a, b}, NULL, why, whylen);
    free(sql);
    return ok;
}

/* The first page of [lo, hi) on which `what` fails (halving), or -1. */
static int64_t failing_page(PGconn *c, const copy_task *k, const char *what, int64_t lo, int64_t hi)
{
    char why[1024];
    if (pages_ok(c, k, what, lo, hi, why, sizeof why))
        return -1;
    while (hi - lo > 1) {
        int64_t mid = lo + (hi - lo) / 2;
        if (pages_ok(c, k, what, lo, mid, why, sizeof why))
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

/* The row of page `page` on which `what` fails: its ctid (malloc'd) and
 * the error in why; NULL when none does. */
static char *failing_row(PGconn *c, const copy_task *k, const char *what, int64_t page, char *why,
                         size_t whylen)
{
    char pg[24], *list = NULL, *one = NULL, *bad = NULL;
    snprintf(pg, sizeof pg, "%lld", (long long)page);
    PGresult *rows = NULL;
    if (asprintf(&list,
                 "SELECT ctid::text FROM ONLY %s WHERE ctid >= format('(%%s,0)', "
                 "$1::bigint)::tid AND ctid < format('(%%s,0)', $1::bigint + 1)::tid",
                 k->from) >= 0 &&
        asprintf(&one, "SELECT %s FROM ONLY %s WHERE ctid = $1::tid", what, k->from) >= 0 &&
        probe(c, list, 1, (const char *[]){pg}, &rows, why, whylen))
        for (int j = 0; j < PQntuples(rows) && bad == NULL; j++)
            if (!probe(c, one, 1, (const char *[]){PQgetvalue(rows, j, 0)}, NULL, why, whylen))
                bad = strdup(PQgetvalue(rows, j, 0));
    PQclear(rows);
    free(list);
    free(one);
    return bad;
}

/* "(id)=(17)" for the row at ctid, or "(id)=(?)". */
static void row_key_text(PGconn *c, const copy_task *k, const char *ctid, char *out, size_t n)
{
    const pgs_mtable *t = k->t;
    char keys[256] = "", why[256], *q = NULL;
    for (int m = 0; m < t->match.n; m++) {
        size_t l = strlen(keys);
        snprintf(keys + l, sizeof keys - l, "%s%s", m ? ", " : "", t->match.v[m]);
    }
    char *names = pg_ident_list(c, t->match.v, t->match.n);
    PGresult *kr = NULL;
    if (t->match.n > 0 && names &&
        asprintf(&q, "SELECT concat_ws(', ', %s) FROM ONLY %s WHERE ctid = $1::tid", names,
                 k->from) >= 0 &&
        probe(c, q, 1, (const char *[]){ctid}, &kr, why, sizeof why) && PQntuples(kr) == 1)
        snprintf(out, n, "(%s)=(%s)", keys, PQgetvalue(kr, 0, 0));
    else
        snprintf(out, n, "(%s)=(?)", keys);
    PQclear(kr);
    free(q);
    free(names);
}

/* Back into the copy's snapshot, or, when it cannot be imported any
 * more, the current data: true for the snapshot. */
static bool reopen_snapshot(copy_shared *s, PGconn *c)
{
    char *sql = NULL;
    PQclear(PQexec(c, "ROLLBACK"));
    if (asprintf(&sql,
                 "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT %s",
                 s->snapshot_literal) < 0)
        return false;
    PGresult *r = PQexec(c, sql);
    free(sql);
    bool in_snapshot = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    if (!in_snapshot) {
        PQclear(PQexec(c, "ROLLBACK"));
        PQclear(PQexec(c, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"));
    }
    return in_snapshot;
}

/* A mapped table's range failed: which row and column? Each converted
 * column's expression over the range, in the snapshot, halving the pages
 * to one, then that page's rows one by one. Logged; the copy stops anyway. */
static void diagnose_range(copy_shared *s, PGconn *c, const copy_task *k)
{
    pgs_mtable *t = k->t;
    char why[1024], what[2048], key[512];
    bool in_snapshot = reopen_snapshot(s, c);
    int64_t hi = k->hi;
    if (hi < 0) {
        char *v = pg_query_value(c, "sizing a range",
                                 "SELECT pg_relation_size($1::regclass)"
                                 " / current_setting('block_size')::bigint + 1",
                                 1, (const char *[]){k->from}, NULL);
        hi = v ? strtoll(v, NULL, 10) : 0;
        free(v);
    }
    for (int i = 0; i < t->map.ncols; i++) {
        const pgs_mcol *mc = &t->map.cols[i];
        for (int pass = 0; mc->converted && pass < 2; pass++) {
            if (pass == 0)
                snprintf(what, sizeof what, "count((%s)::%s)", mc->expr, mc->type);
            else if (mc->notnull)
                snprintf(what, sizeof what,
                         "count(CASE WHEN (%s) IS NULL THEN 1 / (length(ctid::text) - "
                         "length(ctid::text)) END)",
                         mc->expr);
            else
                break;
            int64_t page = failing_page(c, k, what, k->lo, hi);
            char *bad = page < 0 ? NULL : failing_row(c, k, what, page, why, sizeof why);
            if (bad == NULL)
                continue;
            row_key_text(c, k, bad, key, sizeof key);
            log_error("table %s: the column mapping fails on the row with key %s (ctid %s of "
                      "%s%s), column \"%s\" = %s: %s; fix the expression in the plan's columns: "
                      "(or the row), then `pgshift run --plan %s` again (the copy starts over)",
                      t->src.qname, key, bad, k->from,
                      in_snapshot ? ", in the copy's snapshot" : "", mc->name, mc->expr,
                      pass ? "it gives NULL for a NOT NULL column" : why, s->m->plan->path);
            free(bad);
            return;
        }
    }
}

static void *copy_worker(void *arg)
{
    copy_shared *s = arg;
    pgs_plan *plan = s->m->plan;
    PGconn *src = pg_connect(plan->source, "source (copy)", false);
    PGconn *tgt =
        src ? pg_connect(plan->target ? plan->target : plan->source, "target (copy)", false) : NULL;
    bool ok = src && tgt;
    if (ok) {
        char *sql = NULL;
        ok = asprintf(&sql,
                      "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;"
                      " SET TRANSACTION SNAPSHOT %s",
                      s->snapshot_literal) >= 0 &&
             pg_exec(src, "importing the exported snapshot", sql);
        free(sql);
    }
    ok = ok && state_writer_lock(tgt, s->m->row) &&
         pg_exec(tgt, "configuring the copy session",
                 "SET synchronous_commit = off; SET application_name = 'pgshift copy'");
    char origin[128];
    bool has_origin = ok && origin_pool_enter(&s->origins, tgt, origin);
    pthread_mutex_lock(&s->mu);
    s->imported++;
    if (!ok)
        s->failed = true;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);

    while (ok) {
        pthread_mutex_lock(&s->mu);
        copy_task *k = NULL;
        while (!s->failed && s->next < s->ntasks) {
            if (earlier_left(s, s->tasks[s->next].stage) == 0) {
                k = &s->tasks[s->next++];
                break;
            }
            pthread_cond_wait(&s->cv, &s->mu);
        }
        pthread_mutex_unlock(&s->mu);
        if (k == NULL)
            break;
        bool done = copy_range(s, src, tgt, k);
        if (!done && k->t->map.mapped && !is_failed(s))
            diagnose_range(s, src, k);
        pthread_mutex_lock(&s->mu);
        s->stage_left[k->stage]--;
        pthread_cond_broadcast(&s->cv);
        pthread_mutex_unlock(&s->mu);
        if (!done) {
            mark_failed(s);
            break;
        }
    }
    if (src) {
        pg_exec(src, "ending the snapshot transaction", "COMMIT");
        PQfinish(src);
    }
    if (has_origin)
        origin_pool_leave(&s->origins, tgt, origin);
    if (tgt)
        PQfinish(tgt);
    pthread_mutex_lock(&s->mu);
    s->finished++;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void print_progress(copy_shared *s, double started, bool tty, bool final)
{
    int64_t rows = 0, est = 0, bytes = 0;
    for (int i = 0; i < s->m->ntables; i++) {
        rows += atomic_load(&s->rows[i]);
        bytes += atomic_load(&s->bytes[i]);
        est += s->m->tables[i].src.rows_est;
    }
    double el = now_s() - started;
    double rate = el > 0 ? (double)rows / el : 0;
    double pct = est > 0 ? 100.0 * (double)rows / (double)est : 0;
    if (pct > 100 || final)
        pct = final ? 100 : 99.9;
    double eta = rate > 0 && est > rows ? (double)(est - rows) / rate : 0;
    char line[256];
    snprintf(line, sizeof line,
             "%lld / ~%lld rows, %.1f MB read, %.0f rows/s, %.0f s elapsed, ETA %.0f s",
             (long long)rows, (long long)est, (double)bytes / 1048576.0, rate, el, eta);
    if (tty) {
        char bar[31];
        int fill = (int)(pct * 30 / 100);
        for (int i = 0; i < 30; i++)
            bar[i] = i < fill ? '#' : '-';
        bar[30] = '\0';
        fprintf(stderr, "\rcopy [%s] %5.1f%% %s\033[K%s", bar, pct, line, final ? "\n" : "");
        fflush(stderr);
    } else {
        log_info("copy %.1f%%: %s", pct, line);
    }
}

/* Per-table copy progress for `run --http`, twice a second. */
struct pub_state {
    double at;
    int64_t *rows;
};

static void publish_progress(pgs_migration *m, copy_shared *s, double *rates, struct pub_state *p)
{
    double t = now_s();
    if (!board_active() || t - p->at < 0.5)
        return;
    if (p->rows == NULL && (p->rows = calloc((size_t)m->ntables, sizeof *p->rows)) == NULL)
        return;
    for (int i = 0; i < m->ntables; i++) {
        int64_t rows = atomic_load(&s->rows[i]);
        if (p->at > 0) {
            double r = (double)(rows - p->rows[i]) / (t - p->at);
            rates[i] = rates[i] > 0 ? 0.3 * r + 0.7 * rates[i] : r;
        }
        p->rows[i] = rows;
        m->tables[i].rows_copied = rows;
        m->tables[i].bytes_copied = atomic_load(&s->bytes[i]);
    }
    p->at = t;
    status_live live = {.eta_seconds = NAN,
                        .slot_safe = -1,
                        .copy_rows_per_second = rates,
                        .server_version = PQparameterStatus(m->src, "server_version"),
                        .server_version_num = PQserverVersion(m->src)};
    status_snapshot x;
    if (status_snapshot_build(m, &live, &x)) {
        board_publish(&x.st);
        status_snapshot_free(&x);
    }
}

static bool plan_tasks(copy_shared *s)
{
    pgs_migration *m = s->m;
    uint64_t chunk_pages = m->plan->copy.chunk_bytes / 8192;
    if (chunk_pages < 16)
        chunk_pages = 16;
    int cap = 0;
    for (int i = 0; i < m->ntables; i++) {
        pgs_mtable *t = &m->tables[i];
        char oid[16];
        snprintf(oid, sizeof oid, "%u", t->src.oid);
        /* A plain table is read itself; a partitioned one partition by
         * partition (its changes arrive as the root's). */
        PGresult *parts = pg_query(m->src, "measuring the source",
                                   "SELECT format('%I.%I', n.nspname, c.relname),"
                                   "       pg_relation_size(c.oid) /"
                                   "       current_setting('block_size')::bigint"
                                   "  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                                   " WHERE c.relkind = 'r' AND (c.oid = $1::oid OR c.oid IN"
                                   "   (SELECT relid FROM pg_partition_tree($1::oid) WHERE isleaf))"
                                   " ORDER BY 1",
                                   1, (const char *[]){oid});
        if (parts == NULL)
            return false;
        s->parts[i] = parts;
        int64_t pages = 0, ranges = 0;
        for (int p = 0; p < PQntuples(parts); p++) {
            int64_t pp = strtoll(PQgetvalue(parts, p, 1), NULL, 10);
            int64_t n = pp / (int64_t)chunk_pages + 1;
            pages += pp;
            ranges += n;
            for (int64_t c = 0; c < n; c++) {
                if (s->ntasks == cap) {
                    cap = cap ? cap * 2 : 64;
                    copy_task *nt = realloc(s->tasks, sizeof(copy_task) * (size_t)cap);
                    if (nt == NULL)
                        return false;
                    s->tasks = nt;
                }
                copy_task *k = &s->tasks[s->ntasks++];
                k->t = t;
                k->from = PQgetvalue(parts, p, 0);
                k->lo = c * (int64_t)chunk_pages;
                k->hi = c == n - 1 ? -1 : (c + 1) * (int64_t)chunk_pages;
            }
        }
        char *cols = pg_ident_list(m->src, t->cols.v, t->cols.n);
        if (cols == NULL)
            return false;
        s->col_lists[i] = cols;
        if (t->map.mapped && (s->sel_lists[i] = colmap_select_list(&t->map)) == NULL)
            return false;
        if (PQntuples(parts) > 1)
            log_info("table %s: %lld pages in %d partitions, %lld range(s)", t->src.qname,
                     (long long)pages, PQntuples(parts), (long long)ranges);
        else
            log_info("table %s: %lld pages in %lld range(s)", t->src.qname, (long long)pages,
                     (long long)ranges);
    }
    return true;
}

static int task_cmp(const void *a, const void *b)
{
    const copy_task *x = a, *y = b;
    if (x->stage != y->stage)
        return x->stage < y->stage ? -1 : 1;
    if (x->t->ord != y->t->ord) /* the plan's order within a stage */
        return x->t->ord < y->t->ord ? -1 : 1;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

/* A target with a foreign key to another target of the plan is copied
 * after it (its rows would reference rows not there yet): stage = one past
 * the stages of the targets it references. A cycle (or a key to itself)
 * cannot be ordered: everything stays in one stage, and preflight warned.
 * Copies into a shadow (no keys) are not ordered. */
static bool copy_stages(copy_shared *s)
{
    pgs_migration *m = s->m;
    size_t cap = 16 + (size_t)m->ntables * 12, used = 0;
    char *dests = malloc(cap);
    int *stage = calloc((size_t)m->ntables, sizeof *stage);
    bool ok = dests && stage;
    if (ok) {
        used += (size_t)snprintf(dests, cap, "{");
        for (int i = 0; i < m->ntables; i++) {
            const pgs_mtable *t = &m->tables[i];
            used += (size_t)snprintf(dests + used, cap - used, "%s%u", i ? "," : "",
                                     t->tgt.exists && !t->copy_into ? t->tgt.oid : 0u);
        }
        snprintf(dests + used, cap - used, "}");
    }
    PGresult *res =
        ok ? pg_query(m->tgt, "ordering the copy by foreign keys",
                      "SELECT array_position($1::oid[], conrelid) - 1,"
                      "       array_position($1::oid[], confrelid) - 1 FROM pg_constraint"
                      " WHERE contype = 'f' AND conparentid = 0 AND conrelid = ANY ($1::oid[])"
                      "   AND confrelid = ANY ($1::oid[]) AND conrelid <> confrelid",
                      1, (const char *[]){dests})
           : NULL;
    ok = res != NULL;
    bool changed = true;
    for (int round = 0; ok && changed && round <= m->ntables; round++) {
        changed = false;
        for (int e = 0; e < PQntuples(res); e++) {
            int from = atoi(PQgetvalue(res, e, 0)), to = atoi(PQgetvalue(res, e, 1));
            if (stage[from] < stage[to] + 1) {
                stage[from] = stage[to] + 1;
                changed = true;
            }
        }
    }
    if (ok && changed) {
        log_warn("copy: the targets' foreign keys form a cycle; copying every table at once "
                 "(a key may refuse rows that arrive before the ones they reference)");
        memset(stage, 0, sizeof *stage * (size_t)m->ntables);
    }
    s->nstages = 1;
    for (int i = 0; ok && i < m->ntables; i++)
        if (stage[i] + 1 > s->nstages)
            s->nstages = stage[i] + 1;
    s->stage_left = ok ? calloc((size_t)s->nstages, sizeof *s->stage_left) : NULL;
    ok = ok && s->stage_left;
    for (int k = 0; ok && k < s->ntasks; k++) {
        s->tasks[k].stage = stage[s->tasks[k].t->ord];
        s->stage_left[s->tasks[k].stage]++;
    }
    if (ok && s->nstages > 1) {
        qsort(s->tasks, (size_t)s->ntasks, sizeof *s->tasks, task_cmp);
        for (int i = 0; i < m->ntables; i++)
            if (stage[i] > 0)
                log_info("table %s: copied after the tables its target's foreign keys reference",
                         m->tables[i].src.qname);
    }
    PQclear(res);
    free(dests);
    free(stage);
    return ok;
}

/* Allocates the shared state's per-table arrays, quotes the snapshot and
 * splits the tables into ranges. */
static bool shared_init(copy_shared *s, const char *snapshot)
{
    pgs_migration *m = s->m;
    s->rows = calloc((size_t)m->ntables, sizeof *s->rows);
    s->bytes = calloc((size_t)m->ntables, sizeof *s->bytes);
    s->col_lists = calloc((size_t)m->ntables, sizeof(char *));
    s->sel_lists = calloc((size_t)m->ntables, sizeof(char *));
    s->parts = calloc((size_t)m->ntables, sizeof *s->parts);
    char *lit = PQescapeLiteral(m->src, snapshot, strlen(snapshot));
    s->snapshot_literal = lit ? strdup(lit) : NULL;
    PQfreemem(lit);
    return s->rows && s->bytes && s->col_lists && s->sel_lists && s->parts && s->snapshot_literal &&
           plan_tasks(s) && copy_stages(s);
}

static void shared_free(copy_shared *s)
{
    if (s->col_lists)
        for (int i = 0; i < s->m->ntables; i++)
            free(s->col_lists[i]);
    free(s->col_lists);
    if (s->sel_lists)
        for (int i = 0; i < s->m->ntables; i++)
            free(s->sel_lists[i]);
    free(s->sel_lists);
    if (s->parts)
        for (int i = 0; i < s->m->ntables; i++)
            PQclear(s->parts[i]);
    free(s->parts);
    free(s->tasks);
    free(s->stage_left);
    free(s->rows);
    free(s->bytes);
    free(s->snapshot_literal);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    origin_pool_destroy(&s->origins);
}

/* The plan's worker count, or one per CPU up to 8; never more than
 * MAX_WORKERS or than there are ranges. */
static int worker_count(const pgs_migration *m, int ntasks)
{
    int workers = m->plan->copy.workers;
    if (workers <= 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        workers = cpus > 0 ? (int)cpus : 2;
        if (workers > 8)
            workers = 8;
    }
    if (workers > MAX_WORKERS)
        workers = MAX_WORKERS;
    if (workers > ntasks)
        workers = ntasks;
    return workers;
}

/* Starts the workers; returns how many started. */
static int start_workers(copy_shared *s, pthread_t *threads, int workers)
{
    int started = 0;
    for (; started < workers; started++)
        if (pthread_create(&threads[started], NULL, copy_worker, s) != 0) {
            log_error("copy: cannot start a worker thread");
            mark_failed(s);
            break;
        }
    return started;
}

static void wait_for_imports(copy_shared *s, int started)
{
    pthread_mutex_lock(&s->mu);
    while (s->imported < started && !s->failed)
        pthread_cond_wait(&s->cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
}

/* Reports progress (twice a second on a terminal, else every 10 s) until
 * every worker has finished; true when none failed. */
static bool watch_workers(copy_shared *s, int started, double t0, bool tty)
{
    pgs_migration *m = s->m;
    double last = now_s();
    double *rates = calloc((size_t)m->ntables, sizeof *rates);
    struct pub_state last_pub = {0};
    pthread_mutex_lock(&s->mu);
    while (s->finished < started) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += 500000000;
        if (until.tv_nsec >= 1000000000) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&s->cv, &s->mu, &until);
        pthread_mutex_unlock(&s->mu);
        publish_progress(m, s, rates, &last_pub);
        if (now_s() - last >= (tty ? 0.5 : 10.0)) {
            print_progress(s, t0, tty, false);
            last = now_s();
        }
        pthread_mutex_lock(&s->mu);
    }
    bool ok = !s->failed;
    pthread_mutex_unlock(&s->mu);
    free(rates);
    free(last_pub.rows);
    return ok;
}

/* The final counts: on the terminal or log, in the tables, on the board. */
static void report_copied(copy_shared *s, double t0, bool tty)
{
    pgs_migration *m = s->m;
    print_progress(s, t0, tty, true);
    for (int i = 0; i < m->ntables; i++) {
        m->tables[i].rows_copied = atomic_load(&s->rows[i]);
        m->tables[i].bytes_copied = atomic_load(&s->bytes[i]);
        log_info("table %s: copied %lld rows in %.1f s", m->tables[i].src.qname,
                 (long long)m->tables[i].rows_copied, now_s() - t0);
    }
    status_live live = {.eta_seconds = NAN,
                        .slot_safe = -1,
                        .server_version = PQparameterStatus(m->src, "server_version"),
                        .server_version_num = PQserverVersion(m->src)};
    status_snapshot x;
    if (board_active() && status_snapshot_build(m, &live, &x)) {
        board_publish(&x.st);
        status_snapshot_free(&x);
    }
}

bool copy_run(pgs_migration *m, const char *snapshot, PGconn **repl)
{
    copy_shared s = {.m = m};
    pthread_mutex_init(&s.mu, NULL);
    pthread_cond_init(&s.cv, NULL);
    /* In the source's own database only: elsewhere nothing decodes them. */
    char prefix[96];
    snprintf(prefix, sizeof prefix, "%s_copy", m->slot);
    origin_pool_init(&s.origins, m->plan->target ? NULL : prefix, "copy");
    pthread_t threads[MAX_WORKERS];
    bool ok = false;
    if (!shared_init(&s, snapshot))
        goto done;
    int workers = worker_count(m, s.ntasks);
    s.nworkers = workers;
    log_info("copy: %d range(s) with %d worker(s) under snapshot %s", s.ntasks, workers, snapshot);
    double t0 = now_s();
    int started = start_workers(&s, threads, workers);
    /* The exported snapshot lives only while the replication connection
     * stays idle: close it once every worker has imported it. */
    wait_for_imports(&s, started);
    if (repl && *repl) {
        PQfinish(*repl);
        *repl = NULL;
    }
    bool tty = isatty(STDERR_FILENO);
    ok = watch_workers(&s, started, t0, tty);
    for (int i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
    if (ok)
        report_copied(&s, t0, tty);
done:
    shared_free(&s);
    return ok;
}
