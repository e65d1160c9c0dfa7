/* apply.c: decoded changes -> prepared statements on the target, batched,
 * pipelined, exactly once (see apply.h for the rules). */
#include "pgshift/apply.h"

#include "durable.h"
#include "fold.h"
#include "sqlgen.h"
#include "pgshift/log.h"
#include "pgshift/pg.h"
#include "pgshift/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Statements between two pipeline syncs; at most two such segments are in
 * flight, which bounds what either side buffers. */
#define SYNC_EVERY 400
/* Folded rows (all tables) and bytes held before they are applied. */
#define FOLD_MAX_ROWS  20000
#define FOLD_MAX_BYTES (32u << 20)

typedef struct stmt {
    char op;       /* row: 'I' 'U' 'D'; set-based: 'i' 'u' 'd' */
    uint8_t *mask; /* one byte per relation attribute: 1 = column sent */
    char name[24];
    struct stmt *next;
} stmt;

typedef struct rel {
    uint32_t relid;
    pgs_mtable *t;
    int natts;
    char **names; /* quoted target column names, in relation attribute order */
    int *match;   /* relation attribute index of each match column */
    int nmatch;
    stmt *stmts;
    /* set-based apply (fold.h): only for targets where reordering changes
     * within a batch cannot trip a constraint */
    bool setbased;
    fold_rowtype rowtype; /* the target's row type, for unnest($1::target[]) */
    uint32_t *col_oids;   /* per target column */
    int *col_att;         /* per target column: relation attribute, or -1 */
    fold fold;
    struct rel *next;
} rel;

typedef struct inflight {
    pgs_lsn end_lsn;
    pgs_timestamp commit_time;
    long xacts;
    long changes;
    long *table_changes;
    bool sync; /* committed with synchronous_commit local: flushed when it returns */
} inflight;

/* What each in-flight pipeline result belongs to. */
typedef struct pending {
    char op; /* 'I' 'U' 'D' 'i' 'u' 'd', 'T' truncate, 'X' other SQL, 'P' prepare,
                'c' COMMIT, 'L' the WAL position after it (completes a batch), 'S' sync */
    pgs_mtable *t;
} pending;

struct apply_ctx {
    pgs_migration *m;
    PGconn *conn;
    rel *rels;
    int nstmts;

    pending *q;
    size_t qcap, qhead, qlen;
    int since_sync;
    int syncs;
    bool failed;

    bool in_xact;
    bool skipping;
    bool batch_open;
    pgs_lsn xact_final_lsn;
    pgs_lsn batch_end_lsn;
    pgs_timestamp batch_commit_time;
    long batch_changes;
    long batch_xacts;
    double batch_started_ms;
    long *table_changes; /* per plan table, in the open batch */

    const char **values;
    int *lengths;
    int *formats;
    size_t pcap;
    char *text;
    size_t textcap;

    /* Committed batches not yet known flushed on the target. */
    durable durable;
    /* Batches sent with their COMMIT but not yet confirmed (at most 2). */
    inflight inflight[3];
    int ninflight;
    pgs_lsn chain_lsn; /* end LSN of the last batch sent: the next one chains to it */

    bool unsent;        /* libpq holds output the socket did not take yet */
    bool commit_wanted; /* a commit asked for while the previous batch was in flight */
    bool commit_wanted_sync;
    bool probing; /* a flush-position probe is in flight */

    long folded; /* rows pending in all folds */
    char *abuf;  /* the set-based parameter: an array of target records */
    size_t abuf_cap;

    apply_stats stats;
};

static bool flush_folds(apply_ctx *a);
static void discard_folds(apply_ctx *a);
static bool grow_params(apply_ctx *a, size_t n);

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

apply_ctx *apply_new(pgs_migration *m)
{
    apply_ctx *a = calloc(1, sizeof *a);
    if (a == NULL)
        return NULL;
    a->m = m;
    a->table_changes = calloc((size_t)m->ntables, sizeof(long));
    if (a->table_changes == NULL)
        goto failed;
    for (int i = 0; i < 3; i++)
        if ((a->inflight[i].table_changes = calloc((size_t)m->ntables, sizeof(long))) == NULL)
            goto failed;
    a->chain_lsn = m->applied_lsn;
    a->conn =
        pg_connect(m->plan->target ? m->plan->target : m->plan->source, "target (apply)", false);
    if (a->conn == NULL)
        goto failed;
    /* Commits do not wait for their WAL flush; apply_durable_lsn() tells
     * which of them the target has flushed, and only those are reported.
     * Non-blocking: nothing here ever waits for the target; the owner's loop
     * watches apply_socket() and calls apply_poll() (see apply.h). */
    if (!pg_exec(a->conn, "configuring the apply session",
                 "SET application_name = 'pgshift apply'; SET synchronous_commit = off;"
                 " SET lock_timeout = '30s'") ||
        PQenterPipelineMode(a->conn) != 1 || PQsetnonblocking(a->conn, 1) != 0) {
        log_error("apply: cannot configure the target session: %s", PQerrorMessage(a->conn));
        goto failed;
    }
    return a;
failed:
    apply_free(a);
    return NULL;
}

static void free_rel(rel *r)
{
    for (int i = 0; i < r->natts; i++)
        free(r->names[i]);
    free(r->col_oids);
    free(r->col_att);
    fold_free(&r->fold);
    free(r->names);
    free(r->match);
    for (stmt *s = r->stmts, *n; s; s = n) {
        n = s->next;
        free(s->mask);
        free(s);
    }
    free(r);
}

void apply_free(apply_ctx *a)
{
    if (a == NULL)
        return;
    for (rel *r = a->rels, *n; r; r = n) {
        n = r->next;
        free_rel(r);
    }
    if (a->conn)
        PQfinish(a->conn);
    free(a->q);
    free(a->values);
    free(a->lengths);
    free(a->formats);
    free(a->text);
    free(a->table_changes);
    for (int i = 0; i < 3; i++)
        free(a->inflight[i].table_changes);
    free(a->abuf);
    free(a);
}

bool apply_in_xact(const apply_ctx *a)
{
    return a->in_xact;
}

bool apply_batch_open(const apply_ctx *a)
{
    return a->batch_open;
}

double apply_batch_age_ms(const apply_ctx *a)
{
    return a->batch_open ? now_ms() - a->batch_started_ms : 0;
}

long apply_batch_changes(const apply_ctx *a)
{
    return a->batch_changes;
}

const apply_stats *apply_get_stats(const apply_ctx *a)
{
    return &a->stats;
}

pgs_lsn apply_durable_lsn(apply_ctx *a, pgs_lsn target_flush)
{
    return durable_advance(&a->durable, target_flush);
}

void apply_set_durable(apply_ctx *a, pgs_lsn lsn)
{
    durable_set(&a->durable, lsn);
}

/* ---- pipeline bookkeeping ---- */

static bool q_push(apply_ctx *a, char op, pgs_mtable *t)
{
    if (a->qlen == a->qcap) {
        size_t ncap = a->qcap ? a->qcap * 2 : 1024;
        pending *nq = malloc(sizeof(pending) * ncap);
        if (nq == NULL)
            return false;
        for (size_t i = 0; i < a->qlen; i++)
            nq[i] = a->q[(a->qhead + i) % a->qcap];
        free(a->q);
        a->q = nq;
        a->qcap = ncap;
        a->qhead = 0;
    }
    a->q[(a->qhead + a->qlen) % a->qcap] = (pending){op, t};
    a->qlen++;
    return true;
}

static const char *op_name(char op)
{
    switch (op) {
    case 'I':
        return "INSERT";
    case 'U':
        return "UPDATE";
    case 'D':
        return "DELETE";
    case 'i':
        return "batched INSERT";
    case 'u':
        return "batched UPDATE";
    case 'd':
        return "batched DELETE";
    case 'T':
        return "TRUNCATE";
    case 'P':
        return "PREPARE";
    case 'c':
        return "COMMIT";
    case 'L':
        return "reading the WAL position";
    case 'F':
        return "reading the target's flush position";
    case 'W':
        return "writing the migration's state";
    default:
        return "statement";
    }
}

static void batch_done(apply_ctx *a, pgs_lsn insert_lsn, pgs_lsn flush_lsn);

/* Hands what libpq holds to the kernel, as far as the socket takes it now;
 * the rest goes when the socket is writable (apply_want_write). */
static bool push_out(apply_ctx *a)
{
    int r = PQflush(a->conn);
    if (r < 0)
        return false;
    a->unsent = r == 1;
    return true;
}

/* Reads, in order, the results that have already arrived, never past the
 * last sync; never waits. Logs the first failure with its table and
 * operation; later errors are its consequences. */
static bool consume(apply_ctx *a)
{
    char lsn[18];
    if (!push_out(a) || PQconsumeInput(a->conn) == 0) {
        if (!a->failed)
            log_error("apply: the target connection failed: %s", PQerrorMessage(a->conn));
        a->failed = true;
        return false;
    }
    while (a->qlen > 0) {
        pending p = a->q[a->qhead];
        /* Results of statements with no Sync after them may never come. */
        if (a->syncs == 0)
            break;
        if (PQisBusy(a->conn))
            break;
        PGresult *res = PQgetResult(a->conn);
        if (p.op == 'S') {
            if (res == NULL || PQresultStatus(res) != PGRES_PIPELINE_SYNC) {
                if (!a->failed)
                    log_error("apply: lost track of the target pipeline (%s)",
                              PQerrorMessage(a->conn));
                PQclear(res);
                a->failed = true;
                return false;
            }
            PQclear(res);
            a->qhead = (a->qhead + 1) % a->qcap;
            a->qlen--;
            a->syncs--;
            continue;
        }
        if (res == NULL) {
            if (!a->failed)
                log_error("apply: the target connection failed: %s", PQerrorMessage(a->conn));
            a->failed = true;
            return false;
        }
        ExecStatusType st = PQresultStatus(res);
        if (st == PGRES_FATAL_ERROR && !a->failed) {
            char line[2048];
            pg_result_error_line(res, line, sizeof line);
            log_error("apply: %s on %s failed (source transactions up to %s): %s", op_name(p.op),
                      p.t ? p.t->tgt.qname : "the target",
                      decode_lsn_format(a->xact_final_lsn, lsn), line);
            a->failed = true;
        } else if (p.op == 'c' && st == PGRES_COMMAND_OK &&
                   strcmp(PQcmdStatus(res), "COMMIT") != 0 && !a->failed) {
            log_error("apply: the target rolled the batch back instead of committing it");
            a->failed = true;
        } else if (p.op == 'L' && st == PGRES_TUPLES_OK && PQntuples(res) == 1 && !a->failed) {
            pgs_lsn insert_lsn = 0, flush_lsn = 0;
            decode_lsn_parse(PQgetvalue(res, 0, 0), &insert_lsn);
            decode_lsn_parse(PQgetvalue(res, 0, 1), &flush_lsn);
            batch_done(a, insert_lsn, flush_lsn);
        } else if (p.op == 'F' && st == PGRES_TUPLES_OK && PQntuples(res) == 1) {
            pgs_lsn flush_lsn = 0;
            decode_lsn_parse(PQgetvalue(res, 0, 0), &flush_lsn);
            durable_saw_flush(&a->durable, flush_lsn);
        }
        if (p.op == 'F')
            a->probing = false;
        PQclear(res);
        /* Each query's results end with a NULL. */
        res = PQgetResult(a->conn);
        PQclear(res);
        a->qhead = (a->qhead + 1) % a->qcap;
        a->qlen--;
    }
    return !a->failed;
}

static bool sync_point(apply_ctx *a)
{
    if (PQpipelineSync(a->conn) != 1 || !q_push(a, 'S', NULL)) {
        log_error("apply: sending to the target failed: %s", PQerrorMessage(a->conn));
        a->failed = true;
        return false;
    }
    a->syncs++;
    a->since_sync = 0;
    /* PQpipelineSync sends only what the socket takes now. */
    if (!push_out(a)) {
        log_error("apply: sending to the target failed: %s", PQerrorMessage(a->conn));
        a->failed = true;
        return false;
    }
    return true;
}

static bool sent(apply_ctx *a, int ok, char op, pgs_mtable *t)
{
    if (ok != 1 || !q_push(a, op, t) || !push_out(a)) {
        log_error("apply: sending to the target failed: %s", PQerrorMessage(a->conn));
        a->failed = true;
        return false;
    }
    if (++a->since_sync >= SYNC_EVERY)
        return sync_point(a);
    return true;
}

static bool send_sql(apply_ctx *a, const char *sql, int n, const char *const *params)
{
    return sent(a, PQsendQueryParams(a->conn, sql, n, NULL, params, NULL, NULL, 0), 'X', NULL);
}

/* Wraps an UPDATE or DELETE in the row-count check of sqlgen_expect().
 * Takes ownership of *sql and replaces it. */
static bool wrap_expect(apply_ctx *a, char **sql, const char *what, const char *table,
                        const char *expect)
{
    char *lit = PQescapeLiteral(a->conn, table, strlen(table));
    char *out = lit ? sqlgen_expect(*sql, what, lit, expect) : NULL;
    PQfreemem(lit);
    free(*sql);
    *sql = out;
    return out != NULL;
}

/* ---- batches ---- */

static bool open_batch(apply_ctx *a)
{
    if (a->batch_open)
        return true;
    if (!send_sql(a, "BEGIN", 0, NULL))
        return false;
    a->batch_open = true;
    a->batch_started_ms = now_ms();
    a->batch_changes = a->batch_xacts = 0;
    memset(a->table_changes, 0, sizeof(long) * (size_t)a->m->ntables);
    return true;
}

void apply_rollback_batch(apply_ctx *a)
{
    discard_folds(a);
    if (a->batch_open) {
        PQsendQueryParams(a->conn, "ROLLBACK", 0, NULL, NULL, NULL, NULL, 0);
        q_push(a, 'X', NULL);
        PQpipelineSync(a->conn);
        q_push(a, 'S', NULL);
        a->syncs++;
        push_out(a);
    }
    /* Batches already committed and in flight complete (or fail) as their
     * results arrive (apply_poll). */
    a->commit_wanted = a->commit_wanted_sync = false;
    a->batch_open = false;
    a->in_xact = false;
    a->skipping = false;
}

/* The oldest in-flight batch committed: its position is now applied, and
 * durable once the target has flushed past `insert_lsn`, read right after its
 * COMMIT; a synchronous commit was flushed before it returned, so the
 * flush position read after it already covers it. */
static void batch_done(apply_ctx *a, pgs_lsn insert_lsn, pgs_lsn flush_lsn)
{
    durable_saw_flush(&a->durable, flush_lsn);
    if (a->ninflight == 0)
        return;
    inflight *b = &a->inflight[0];
    a->m->applied_lsn = b->end_lsn;
    durable_committed(&a->durable, b->end_lsn, insert_lsn, flush_lsn, b->sync);
    a->m->applied_xacts += b->xacts;
    a->m->applied_changes += b->changes;
    for (int i = 0; i < a->m->ntables; i++)
        a->m->tables[i].changes_applied += b->table_changes[i];
    a->stats.last_commit_time = b->commit_time;
    char lsn[18];
    log_debug("apply: committed %ld transaction(s), %ld change(s) up to %s", b->xacts, b->changes,
              decode_lsn_format(b->end_lsn, lsn));
    long *tc = b->table_changes;
    memmove(&a->inflight[0], &a->inflight[1], sizeof(inflight) * (size_t)(a->ninflight - 1));
    a->ninflight--;
    a->inflight[a->ninflight].table_changes = tc;
}

static void commit_deferred(apply_ctx *a);

bool apply_poll(apply_ctx *a)
{
    if (a->qlen > 0 || a->unsent) {
        consume(a);
        commit_deferred(a);
        return !a->failed;
    }
    /* Nothing expected, yet the socket may say the server went away (the
     * loop calls this when it is readable): notice it now, not at the
     * next batch. */
    if (!a->failed && (PQconsumeInput(a->conn) == 0 || PQstatus(a->conn) == CONNECTION_BAD)) {
        log_error("apply: the target connection failed: %s", PQerrorMessage(a->conn));
        a->failed = true;
    }
    return !a->failed;
}

bool apply_busy(const apply_ctx *a)
{
    return a->qlen > 0 || a->unsent || a->commit_wanted;
}

bool apply_ready(const apply_ctx *a)
{
    return !a->failed && !a->unsent && a->syncs <= 1;
}

bool apply_want_write(const apply_ctx *a)
{
    return a->unsent;
}

bool apply_failed(const apply_ctx *a)
{
    return a->failed;
}

int apply_socket(const apply_ctx *a)
{
    return PQsocket(a->conn);
}

/* Asks the target where its WAL is flushed, so that asynchronously
 * committed batches can be confirmed (apply_durable_lsn); only between
 * batches, and one probe at a time. */
bool apply_probe_flush(apply_ctx *a)
{
    if (a->failed || a->batch_open || a->probing || durable_pending(&a->durable) == 0)
        return true;
    if (!sent(a,
              PQsendQueryParams(a->conn, "SELECT pg_current_wal_flush_lsn()", 0, NULL, NULL, NULL,
                                NULL, 0),
              'F', NULL) ||
        !sync_point(a))
        return false;
    a->probing = true;
    return true;
}

bool apply_send_state(apply_ctx *a, const char *sql, int nparams, const char *const *params)
{
    if (a->failed)
        return false;
    if (!sent(a, PQsendQueryParams(a->conn, sql, nparams, NULL, params, NULL, NULL, 0), 'W', NULL))
        return false;
    /* Inside an open batch it commits with it; alone, it is its own
     * transaction. */
    return a->batch_open || sync_point(a);
}

bool apply_idle(const apply_ctx *a)
{
    return !a->failed && !a->batch_open && !a->in_xact && a->qlen == 0 && !a->unsent &&
           durable_pending(&a->durable) == 0;
}

/* Sends the batch's progress row and COMMIT without waiting for them: the
 * server runs this batch while the next one is decoded and folded. The
 * progress UPDATE is chained to the previous batch's position, so if that
 * batch failed, this one fails too instead of committing past it. */
bool apply_commit_batch(apply_ctx *a, bool sync)
{
    if (!a->batch_open)
        return true;
    if (a->in_xact) {
        log_error("apply: internal error: commit requested inside a source transaction");
        return false;
    }
    /* At most one batch in flight: the one before must have completed. If
     * it has not, this batch stays open (and may grow) until it has:
     * apply_poll commits it then. */
    if (a->ninflight > 0) {
        a->commit_wanted = true;
        a->commit_wanted_sync = a->commit_wanted_sync || sync;
        return !a->failed;
    }
    a->commit_wanted = a->commit_wanted_sync = false;
    if (!flush_folds(a))
        goto failed;
    char lsn[18], prev[18], ts[40], xacts[24], changes[24];
    decode_lsn_format(a->batch_end_lsn, lsn);
    decode_lsn_format(a->chain_lsn, prev);
    snprintf(ts, sizeof ts, "%.6f", (double)decode_ts_to_unix_us(a->batch_commit_time) / 1e6);
    snprintf(xacts, sizeof xacts, "%ld", a->batch_xacts);
    snprintf(changes, sizeof changes, "%ld", a->batch_changes);
    if (!send_sql(a, store_sql_advance_applied(), 6,
                  (const char *[]){a->m->plan->name, lsn, ts, xacts, changes, prev}))
        goto failed;
    for (int i = 0; i < a->m->ntables; i++) {
        if (a->table_changes[i] == 0)
            continue;
        char ord[16], n[24];
        snprintf(ord, sizeof ord, "%d", i);
        snprintf(n, sizeof n, "%ld", a->table_changes[i]);
        if (!send_sql(a, store_sql_add_table_changes(), 3,
                      (const char *[]){a->m->plan->name, ord, n}))
            goto failed;
    }
    if (sync && !send_sql(a, "SET LOCAL synchronous_commit = local", 0, NULL))
        goto failed;
    if (!sent(a, PQsendQueryParams(a->conn, "COMMIT", 0, NULL, NULL, NULL, NULL, 0), 'c', NULL))
        goto failed;
    inflight *b = &a->inflight[a->ninflight++];
    b->sync = sync;
    b->end_lsn = a->batch_end_lsn;
    b->commit_time = a->batch_commit_time;
    b->xacts = a->batch_xacts;
    b->changes = a->batch_changes;
    memcpy(b->table_changes, a->table_changes, sizeof(long) * (size_t)a->m->ntables);
    a->chain_lsn = a->batch_end_lsn;
    a->batch_open = false;
    if (!sent(a,
              PQsendQueryParams(a->conn,
                                "SELECT pg_current_wal_insert_lsn(), pg_current_wal_flush_lsn()", 0,
                                NULL, NULL, NULL, NULL, 0),
              'L', NULL) ||
        PQpipelineSync(a->conn) != 1 || !q_push(a, 'S', NULL))
        goto failed;
    a->syncs++;
    a->since_sync = 0;
    if (!push_out(a)) {
        log_error("apply: sending to the target failed: %s", PQerrorMessage(a->conn));
        a->failed = true;
        goto failed;
    }
    return !a->failed;
failed:
    apply_rollback_batch(a);
    return false;
}

/* A commit asked for while the previous batch was in flight, once that
 * batch has completed and the stream is between source transactions. */
static void commit_deferred(apply_ctx *a)
{
    if (!a->commit_wanted || a->ninflight > 0 || a->in_xact || a->failed)
        return;
    if (!a->batch_open) {
        a->commit_wanted = a->commit_wanted_sync = false;
        return;
    }
    apply_commit_batch(a, a->commit_wanted_sync);
}

/* ---- set-based apply (fold.h) ---- */

/* Folding reorders the changes of a batch; that is only invisible when no
 * constraint of the target sees intermediate states: no unique index beyond
 * the key (and partition key), no exclusion constraint, no foreign key in
 * or out. Every column type needs an array type for the unnest() form. */
static bool setup_setbased(apply_ctx *a, rel *r, const decode_relation *dr)
{
    r->setbased = false;
    if (r->nmatch == 0 || dr->natts == 0)
        return true;
    char oid[16];
    snprintf(oid, sizeof oid, "%u", r->t->tgt.oid);
    /* Columns of unique indexes (0 for an expression) outside the partition
     * key, plus a NULL row per foreign key or exclusion constraint. */
    PGresult *res =
        pg_query(a->m->tgt, "checking the target's constraints",
                 "SELECT CASE WHEN k.n = 0 THEN '' ELSE a.attname END"
                 "  FROM pg_index i CROSS JOIN unnest(i.indkey) k(n)"
                 "  LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n"
                 " WHERE i.indrelid = $1::oid AND i.indisunique"
                 "   AND k.n <> ALL (coalesce((SELECT partattrs::int2[] FROM pg_partitioned_table"
                 "                             WHERE partrelid = $1::oid), '{}'))"
                 " UNION ALL SELECT NULL FROM pg_constraint WHERE contype IN ('f', 'x')"
                 "   AND (conrelid = $1::oid OR confrelid = $1::oid)",
                 1, (const char *[]){oid});
    if (res == NULL)
        return false;
    bool plain = true;
    for (int i = 0; i < PQntuples(res) && plain; i++)
        plain = !PQgetisnull(res, i, 0) && strlist_contains(&r->t->match, PQgetvalue(res, i, 0));
    PQclear(res);
    if (!plain) {
        log_info("apply: %s has other unique keys or foreign keys: applying its changes one by "
                 "one, in order",
                 r->t->tgt.qname);
        return true;
    }
    char *reltype = pg_query_value(a->m->tgt, "reading the target's row type",
                                   "SELECT reltype FROM pg_class WHERE oid = $1::oid", 1,
                                   (const char *[]){oid}, NULL);
    if (reltype == NULL)
        return false;
    r->rowtype.oid = (uint32_t)strtoul(reltype, NULL, 10);
    free(reltype);
    const pgs_relinfo *tg = &r->t->tgt;
    r->col_oids = calloc((size_t)(tg->ncols ? tg->ncols : 1), sizeof(uint32_t));
    r->col_att = calloc((size_t)(tg->ncols ? tg->ncols : 1), sizeof(int));
    if (r->col_oids == NULL || r->col_att == NULL)
        return false;
    for (int c = 0; c < tg->ncols; c++) {
        r->col_oids[c] = tg->cols[c].typoid;
        r->col_att[c] = -1;
        for (int i = 0; i < dr->natts; i++)
            if (strcmp(dr->attrs[i].name, tg->cols[c].name) == 0)
                r->col_att[c] = i;
    }
    r->rowtype.ncols = tg->ncols;
    r->rowtype.col_oids = r->col_oids;
    r->rowtype.col_att = r->col_att;
    fold_init(&r->fold, r->natts, r->nmatch, r->match);
    r->setbased = true;
    return true;
}

static bool pick_delete(const fold *f, int row, const void *arg)
{
    (void)arg;
    return f->state[row] == FOLD_DELETE || f->state[row] == FOLD_REPLACE;
}

static bool pick_insert(const fold *f, int row, const void *arg)
{
    (void)arg;
    return f->state[row] == FOLD_INSERT || f->state[row] == FOLD_REPLACE;
}

/* UPDATE rows whose sent columns are exactly those of `arg` (a mask). */
static bool pick_update(const fold *f, int row, const void *arg)
{
    const uint8_t *mask = arg;
    if (f->state[row] != FOLD_UPDATE)
        return false;
    const fold_val *v = fold_row(f, row);
    for (int i = 0; i < f->natts; i++)
        if ((v[i].len != FOLD_UNSENT) != (mask[i] != 0))
            return false;
    return true;
}

/* What the statement generator needs to know of a relation. */
static sqlgen_rel rel_shape(const rel *r)
{
    return (sqlgen_rel){r->t->tgt.qname, r->natts, r->names, r->match, r->nmatch};
}

static bool is_key(const rel *r, int att)
{
    sqlgen_rel shape = rel_shape(r);
    return sqlgen_is_key(&shape, att);
}

/* Sends one set-based statement over unnest($1::<target>[]): `cols` are
 * the attributes it reads (all for INSERT, the key for DELETE, key + sent
 * columns for UPDATE); the text is prepared once per (op, mask). */
static bool send_set(apply_ctx *a, rel *r, char op, const uint8_t *mask, const int *cols, int ncols,
                     fold_pick pick, const void *arg, long nrows)
{
    stmt *s = NULL;
    for (stmt *x = r->stmts; x; x = x->next)
        if (x->op == op && memcmp(x->mask, mask, (size_t)r->natts) == 0)
            s = x;
    if (s == NULL) {
        sqlgen_rel shape = rel_shape(r);
        const char *tq = r->t->tgt.qname;
        char *sql = sqlgen_set(&shape, op, cols, ncols);
        bool ok = sql != NULL;
        if (ok && op != 'i')
            ok = wrap_expect(a, &sql, op_name(op), tq, "$2::bigint");
        s = ok ? calloc(1, sizeof *s) : NULL;
        if (s == NULL || (s->mask = malloc((size_t)r->natts)) == NULL) {
            free(s);
            free(sql);
            return false;
        }
        memcpy(s->mask, mask, (size_t)r->natts);
        s->op = op;
        snprintf(s->name, sizeof s->name, "pgshift_%d", a->nstmts++);
        log_debug("apply: prepare %s: %s", s->name, sql);
        ok = sent(a, PQsendPrepare(a->conn, s->name, sql, op == 'i' ? 1 : 2, NULL), 'P', r->t);
        free(sql);
        if (!ok) {
            free(s->mask);
            free(s);
            return false;
        }
        s->next = r->stmts;
        r->stmts = s;
    }
    size_t len = 0;
    if (!fold_build_records(&r->fold, &r->rowtype, pick, arg, &a->abuf, &len, &a->abuf_cap))
        return false;
    char expect[24];
    snprintf(expect, sizeof expect, "%ld", nrows);
    const char *values[2] = {a->abuf, expect};
    int lengths[2] = {(int)len, 0};
    int formats[2] = {1, 0};
    return sent(
        a, PQsendQueryPrepared(a->conn, s->name, op == 'i' ? 1 : 2, values, lengths, formats, 0),
        op, r->t);
}

static bool flush_rel(apply_ctx *a, rel *r)
{
    fold *f = &r->fold;
    int *cols = malloc(sizeof(int) * (size_t)r->natts);
    uint8_t *mask = calloc((size_t)r->natts, 1);
    uint8_t *seen = calloc((size_t)f->nrows, 1);
    bool ok = cols && mask && seen;
    long ndel = 0, nins = 0;
    for (int i = 0; ok && i < f->nrows; i++) {
        ndel += pick_delete(f, i, NULL);
        nins += pick_insert(f, i, NULL);
    }
    if (ok && ndel > 0) {
        memset(mask, 0, (size_t)r->natts);
        for (int k = 0; k < r->nmatch; k++) {
            cols[k] = r->match[k];
            mask[r->match[k]] = 1;
        }
        ok = send_set(a, r, 'd', mask, cols, r->nmatch, pick_delete, NULL, ndel);
    }
    if (ok && nins > 0) {
        memset(mask, 1, (size_t)r->natts);
        for (int i = 0; i < r->natts; i++)
            cols[i] = i;
        ok = send_set(a, r, 'i', mask, cols, r->natts, pick_insert, NULL, nins);
    }
    /* UPDATEs, one statement per distinct set of sent columns. */
    for (int i = 0; ok && i < f->nrows; i++) {
        if (f->state[i] != FOLD_UPDATE || seen[i])
            continue;
        const fold_val *v = fold_row(f, i);
        int ncols = 0;
        bool any = false;
        for (int c = 0; c < r->natts; c++) {
            mask[c] = v[c].len != FOLD_UNSENT;
            if (mask[c]) {
                cols[ncols++] = c;
                any = any || !is_key(r, c);
            }
        }
        long n = 0;
        for (int j = i; j < f->nrows; j++)
            if (!seen[j] && pick_update(f, j, mask)) {
                seen[j] = 1;
                n++;
            }
        if (any)
            ok = send_set(a, r, 'u', mask, cols, ncols, pick_update, mask, n);
    }
    free(cols);
    free(mask);
    free(seen);
    fold_reset(f);
    return ok;
}

/* Applies every folded change (before anything that must see them: a
 * row-by-row change, TRUNCATE, a new Relation message, the COMMIT). */
static bool flush_folds(apply_ctx *a)
{
    if (a->folded == 0)
        return true;
    for (rel *r = a->rels; r; r = r->next)
        if (r->setbased && r->fold.nrows > 0 && !flush_rel(a, r)) {
            a->failed = true;
            return false;
        }
    a->folded = 0;
    return true;
}

static void discard_folds(apply_ctx *a)
{
    for (rel *r = a->rels; r; r = r->next)
        if (r->setbased)
            fold_reset(&r->fold);
    a->folded = 0;
}

/* ---- relations ---- */

static rel *find_rel(apply_ctx *a, uint32_t relid)
{
    for (rel *r = a->rels; r; r = r->next)
        if (r->relid == relid)
            return r;
    return NULL;
}

static char *type_name(apply_ctx *a, uint32_t oid, int32_t typmod)
{
    char o[16], tm[16];
    snprintf(o, sizeof o, "%u", oid);
    snprintf(tm, sizeof tm, "%d", typmod);
    char *v = pg_query_value(a->m->src, "naming a type", "SELECT format_type($1::oid, $2::int)", 2,
                             (const char *[]){o, tm}, NULL);
    return v ? v : strdup("?");
}

/* A Relation message: check the source's current shape against the target
 * (read afresh: the operator may have just fixed it) and cache the mapping. */
static bool on_relation(apply_ctx *a, const decode_relation *dr)
{
    if (!flush_folds(a))
        return false;
    const char *nsp = dr->nspname[0] ? dr->nspname : "pg_catalog";
    pgs_mtable *t = migration_find_source(a->m, nsp, dr->relname);
    if (t == NULL) {
        log_error("apply: the stream carries table %s.%s, which is not in plan %s; was "
                  "publication %s changed by hand?",
                  nsp, dr->relname, a->m->plan->name, a->m->publication);
        return false;
    }
    pgs_relinfo fresh;
    if (!catalog_read_rel(a->m->tgt, t->spec->target, &fresh))
        return false;
    catalog_relinfo_free(&t->tgt);
    t->tgt = fresh;
    if (!t->tgt.exists) {
        log_error("apply: target %s of %s no longer exists", t->spec->target, t->src.qname);
        return false;
    }
    if (dr->replident == 'n') {
        log_error("apply: %s now has REPLICA IDENTITY NOTHING; fix: ALTER TABLE %s REPLICA "
                  "IDENTITY DEFAULT, then run `pgshift run` again",
                  t->src.qname, t->src.qname);
        return false;
    }
    for (int i = 0; i < dr->natts; i++) {
        const decode_attr *at = &dr->attrs[i];
        const pgs_column *c = catalog_column(&t->tgt, at->name);
        if (c == NULL) {
            char *ty = type_name(a, at->type_oid, at->typmod);
            log_error("apply: schema change on the source: column \"%s\" (%s) of %s is not in "
                      "target %s; fix: ALTER TABLE %s ADD COLUMN %s %s, then run `pgshift run` "
                      "again",
                      at->name, ty, t->src.qname, t->tgt.qname, t->tgt.qname, at->name, ty);
            free(ty);
            return false;
        }
        if (c->typoid != at->type_oid || c->typmod != at->typmod) {
            char *ty = type_name(a, at->type_oid, at->typmod);
            log_error("apply: schema change on the source: column \"%s\" of %s is now %s but %s "
                      "on target %s; fix: ALTER TABLE %s ALTER COLUMN %s TYPE %s, then run "
                      "`pgshift run` again",
                      at->name, t->src.qname, ty, c->type, t->tgt.qname, t->tgt.qname, at->name,
                      ty);
            free(ty);
            return false;
        }
        if (c->generated) {
            log_error("apply: column \"%s\" is generated on target %s and cannot take the "
                      "source's values",
                      at->name, t->tgt.qname);
            return false;
        }
    }
    for (int i = 0; i < t->tgt.ncols; i++) {
        const pgs_column *c = &t->tgt.cols[i];
        bool sent_col = false;
        for (int j = 0; j < dr->natts && !sent_col; j++)
            sent_col = strcmp(dr->attrs[j].name, c->name) == 0;
        if (!sent_col && c->notnull && !c->has_default && !c->generated && !c->identity) {
            log_error("apply: schema change on the source: %s no longer has column \"%s\", "
                      "which is NOT NULL without default on target %s; fix: give it a default "
                      "or drop it on the target, then run `pgshift run` again",
                      t->src.qname, c->name, t->tgt.qname);
            return false;
        }
    }

    rel *r = calloc(1, sizeof *r);
    if (r == NULL)
        return false;
    r->relid = dr->relid;
    r->t = t;
    r->names = calloc(dr->natts ? dr->natts : 1, sizeof(char *));
    r->match = calloc((size_t)(t->match.n ? t->match.n : 1), sizeof(int));
    if (r->names == NULL || r->match == NULL) {
        free_rel(r);
        return false;
    }
    for (int i = 0; i < dr->natts; i++, r->natts++) {
        char *q = PQescapeIdentifier(a->conn, dr->attrs[i].name, strlen(dr->attrs[i].name));
        r->names[i] = q ? strdup(q) : NULL;
        PQfreemem(q);
        if (r->names[i] == NULL) {
            r->natts++;
            free_rel(r);
            return false;
        }
    }
    for (int k = 0; k < t->match.n; k++) {
        r->match[k] = -1;
        for (int i = 0; i < dr->natts; i++)
            if (strcmp(dr->attrs[i].name, t->match.v[k]) == 0)
                r->match[k] = i;
        if (r->match[k] < 0) {
            log_error("apply: schema change on the source: key column \"%s\" of %s is gone",
                      t->match.v[k], t->src.qname);
            free_rel(r);
            return false;
        }
    }
    r->nmatch = t->match.n;
    if (!setup_setbased(a, r, dr)) {
        free_rel(r);
        return false;
    }
    /* Replace an older mapping of the same relid (its statements are stale). */
    for (rel **pp = &a->rels; *pp; pp = &(*pp)->next)
        if ((*pp)->relid == dr->relid) {
            rel *old = *pp;
            *pp = old->next;
            free_rel(old);
            break;
        }
    r->next = a->rels;
    a->rels = r;
    log_debug("apply: relation %u is %s -> %s (%d columns, %s apply)", dr->relid, t->src.qname,
              t->tgt.qname, dr->natts, r->setbased ? "set-based" : "row by row");
    return true;
}

/* ---- statements ---- */

static stmt *get_stmt(apply_ctx *a, rel *r, char op, const uint8_t *mask)
{
    for (stmt *s = r->stmts; s; s = s->next)
        if (s->op == op && memcmp(s->mask, mask, (size_t)r->natts) == 0)
            return s;
    stmt *s = calloc(1, sizeof *s);
    char *sql = NULL;
    bool ok = s != NULL && (s->mask = malloc((size_t)r->natts + 1)) != NULL;
    if (!ok)
        goto failed;
    memcpy(s->mask, mask, (size_t)r->natts);
    s->op = op;
    snprintf(s->name, sizeof s->name, "pgshift_%d", a->nstmts++);
    sqlgen_rel shape = rel_shape(r);
    int p = 0;
    sql = sqlgen_row(&shape, op, mask, &p);
    ok = sql != NULL;
    if (ok && op != 'I')
        ok = wrap_expect(a, &sql, op_name(op), r->t->tgt.qname, "1");
    if (!ok)
        goto failed;
    log_debug("apply: prepare %s: %s", s->name, sql);
    if (!sent(a, PQsendPrepare(a->conn, s->name, sql, p, NULL), 'P', r->t))
        goto failed;
    free(sql);
    s->next = r->stmts;
    r->stmts = s;
    return s;
failed:
    free(sql);
    if (s)
        free(s->mask);
    free(s);
    return NULL;
}

static bool grow_params(apply_ctx *a, size_t n)
{
    if (n <= a->pcap)
        return true;
    size_t nc = n + 16;
    const char **v = realloc(a->values, sizeof(char *) * nc);
    if (v)
        a->values = v;
    int *l = realloc(a->lengths, sizeof(int) * nc);
    if (l)
        a->lengths = l;
    int *f = realloc(a->formats, sizeof(int) * nc);
    if (f)
        a->formats = f;
    if (!v || !l || !f)
        return false;
    a->pcap = nc;
    return true;
}

/* Text values must be NUL-terminated for libpq: first size the scratch,
 * then fill it, so the pointers stay valid. */
static size_t text_need(const decode_col *c)
{
    return c->kind == DECODE_COL_TEXT ? c->len + 1 : 0;
}

static void set_param(apply_ctx *a, int i, const decode_col *c, size_t *off)
{
    switch (c->kind) {
    case DECODE_COL_BINARY:
        a->values[i] = (const char *)c->data;
        a->lengths[i] = (int)c->len;
        a->formats[i] = 1;
        break;
    case DECODE_COL_TEXT:
        memcpy(a->text + *off, c->data, c->len);
        a->text[*off + c->len] = '\0';
        a->values[i] = a->text + *off;
        a->lengths[i] = (int)c->len;
        a->formats[i] = 0;
        *off += c->len + 1;
        break;
    default:
        a->values[i] = NULL;
        a->lengths[i] = 0;
        a->formats[i] = 0;
        break;
    }
}

/* Applies an insert, update or delete. `keytup` holds the row's identity
 * (old tuple, or the new tuple when no old one was sent). */
static bool apply_change(apply_ctx *a, char op, uint32_t relid, const decode_tuple *newtup,
                         const decode_tuple *keytup)
{
    rel *r = find_rel(a, relid);
    char lsn[18];
    if (r == NULL) {
        log_error("apply: change for relation %u before its Relation message (transaction at "
                  "%s)",
                  relid, decode_lsn_format(a->xact_final_lsn, lsn));
        return false;
    }
    const decode_tuple *shape = newtup ? newtup : keytup;
    if (shape->ncols != r->natts || (keytup && keytup->ncols != r->natts)) {
        log_error("apply: %s on %s carries %u columns, its Relation message said %d", op_name(op),
                  r->t->src.qname, shape->ncols, r->natts);
        return false;
    }
    uint8_t maskbuf[256];
    uint8_t *mask = r->natts <= (int)sizeof maskbuf ? maskbuf : malloc((size_t)r->natts);
    if (mask == NULL)
        return false;
    int nset = 0;
    for (int i = 0; i < r->natts; i++) {
        mask[i] = op != 'D' && newtup->cols[i].kind != DECODE_COL_UNCHANGED;
        nset += mask[i];
    }
    size_t need = 0;
    int nparams = nset + (op == 'I' ? 0 : r->nmatch);
    for (int i = 0; i < r->natts; i++)
        if (mask[i])
            need += text_need(&newtup->cols[i]);
    for (int k = 0; op != 'I' && k < r->nmatch; k++) {
        const decode_col *c = &keytup->cols[r->match[k]];
        if (c->kind == DECODE_COL_UNCHANGED || c->kind == DECODE_COL_NULL) {
            log_error("apply: %s on %s: key column \"%s\" was not sent (%s); cannot identify the "
                      "row (transaction at %s)",
                      op_name(op), r->t->src.qname, r->t->match.v[k],
                      c->kind == DECODE_COL_NULL ? "NULL" : "unchanged TOAST",
                      decode_lsn_format(a->xact_final_lsn, lsn));
            if (mask != maskbuf)
                free(mask);
            return false;
        }
        need += text_need(c);
    }
    /* An insert's key is in its new tuple. */
    const decode_tuple *kt = keytup ? keytup : newtup;
    if (r->setbased && fold_accepts(kt) && (newtup == NULL || fold_accepts(newtup)) &&
        (op != 'U' || kt == newtup || fold_same_key(&r->fold, kt, newtup))) {
        if (mask != maskbuf)
            free(mask);
        char err[160];
        if (!fold_add(&r->fold, op, newtup, kt, err, sizeof err)) {
            log_error("apply: %s on %s in the source transaction at %s: %s; the target has "
                      "diverged from the source",
                      op_name(op), r->t->src.qname, decode_lsn_format(a->xact_final_lsn, lsn), err);
            return false;
        }
        a->batch_changes++;
        a->table_changes[r->t->ord]++;
        a->stats.changes++;
        if (++a->folded >= FOLD_MAX_ROWS || fold_bytes(&r->fold) >= FOLD_MAX_BYTES)
            return flush_folds(a);
        return true;
    }
    /* Row by row from here: whatever is folded goes first, in order. */
    if (!flush_folds(a)) {
        if (mask != maskbuf)
            free(mask);
        return false;
    }
    bool ok = grow_params(a, (size_t)nparams + 1);
    if (ok && need > a->textcap) {
        char *nt = realloc(a->text, need * 2);
        ok = nt != NULL;
        if (ok) {
            a->text = nt;
            a->textcap = need * 2;
        }
    }
    stmt *s = ok ? get_stmt(a, r, op, mask) : NULL;
    if (mask != maskbuf)
        free(mask);
    if (s == NULL)
        return false;
    size_t off = 0;
    int p = 0;
    for (int i = 0; i < r->natts; i++)
        if (s->mask[i])
            set_param(a, p++, &newtup->cols[i], &off);
    for (int k = 0; op != 'I' && k < r->nmatch; k++)
        set_param(a, p++, &keytup->cols[r->match[k]], &off);
    a->batch_changes++;
    a->table_changes[r->t->ord]++;
    a->stats.changes++;
    return sent(a, PQsendQueryPrepared(a->conn, s->name, p, a->values, a->lengths, a->formats, 0),
                op, r->t);
}

static bool apply_truncate(apply_ctx *a, const decode_msg *msg)
{
    if (!flush_folds(a))
        return false;
    uint32_t n = msg->u.truncate.nrels;
    const char **tables = malloc(sizeof(char *) * (n ? n : 1));
    if (tables == NULL)
        return false;
    for (uint32_t i = 0; i < n; i++) {
        rel *r = find_rel(a, msg->u.truncate.relids[i]);
        if (r == NULL) {
            log_error("apply: TRUNCATE of relation %u before its Relation message",
                      msg->u.truncate.relids[i]);
            free(tables);
            return false;
        }
        tables[i] = r->t->tgt.qname;
        a->table_changes[r->t->ord]++;
    }
    char *sql = sqlgen_truncate(tables, (int)n,
                                (msg->u.truncate.flags & DECODE_TRUNCATE_RESTART_IDENTITY) != 0);
    free(tables);
    bool ok = sql != NULL;
    if (ok) {
        a->batch_changes++;
        a->stats.changes++;
        ok = sent(a, PQsendQueryParams(a->conn, sql, 0, NULL, NULL, NULL, NULL, 0), 'T', NULL);
    }
    free(sql);
    return ok;
}

bool apply_message(apply_ctx *a, const decode_msg *msg)
{
    if (a->failed)
        return false;
    bool ok = true;
    switch (msg->kind) {
    case DECODE_BEGIN:
        a->in_xact = true;
        a->xact_final_lsn = msg->u.begin.final_lsn;
        a->skipping = msg->u.begin.final_lsn < a->m->applied_lsn;
        if (a->skipping)
            a->stats.skipped_xacts++;
        else
            ok = open_batch(a);
        break;
    case DECODE_COMMIT:
        if (!a->in_xact) {
            log_error("apply: Commit without Begin at %s",
                      decode_lsn_format(msg->u.commit.commit_lsn, (char[18]){0}));
            ok = false;
            break;
        }
        a->in_xact = false;
        if (!a->skipping) {
            a->batch_end_lsn = msg->u.commit.end_lsn;
            a->batch_commit_time = msg->u.commit.commit_time;
            a->batch_xacts++;
            a->stats.xacts++;
        }
        a->skipping = false;
        commit_deferred(a);
        break;
    case DECODE_RELATION:
        ok = on_relation(a, &msg->u.relation);
        break;
    case DECODE_INSERT:
        if (!a->skipping)
            ok = apply_change(a, 'I', msg->u.insert.relid, &msg->u.insert.newtup, NULL);
        break;
    case DECODE_UPDATE:
        if (!a->skipping)
            ok = apply_change(a, 'U', msg->u.update.relid, &msg->u.update.newtup,
                              msg->u.update.old_kind ? &msg->u.update.oldtup
                                                     : &msg->u.update.newtup);
        break;
    case DECODE_DELETE:
        if (!a->skipping)
            ok = apply_change(a, 'D', msg->u.delete_.relid, NULL, &msg->u.delete_.oldtup);
        break;
    case DECODE_TRUNCATE:
        if (!a->skipping)
            ok = apply_truncate(a, msg);
        break;
    case DECODE_MESSAGE: /* the cutover's fence will be read here (issue #4) */
    case DECODE_TYPE:
    case DECODE_ORIGIN:
        break;
    default:
        log_error("apply: unexpected %s message in a proto_version 1 stream",
                  decode_kind_name(msg->kind));
        ok = false;
    }
    if (!ok || a->failed) {
        apply_rollback_batch(a);
        a->failed = true;
        return false;
    }
    return true;
}
