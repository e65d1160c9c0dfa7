/* pipeline.c: the applier's libpq pipeline. Every statement sent queues
 * what its result belongs to; results are read as they arrive, in order,
 * never waiting (the owner's loop polls the socket: apply_poll). */
#include "apply_int.h"

#include "pgshift/log.h"
#include "pgshift/pg.h"

#include <stdlib.h>
#include <string.h>

bool pipe_push(apply_ctx *a, char op, pgs_mtable *t)
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
    a->q[(a->qhead + a->qlen) % a->qcap] = (pending){op, t, a->next_diag};
    a->next_diag = NULL;
    a->qlen++;
    return true;
}

const char *pipe_op_name(char op)
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

/* Hands what libpq holds to the kernel, as far as the socket takes it now;
 * the rest goes when the socket is writable (apply_want_write). */
bool pipe_push_out(apply_ctx *a)
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
/* Lowers *flush to the standbys' flush position in column `col` when it
 * is there and lower; true when there is one. */
static bool standby_cap(const PGresult *res, int col, pgs_lsn *flush)
{
    pgs_lsn standby = 0;
    if (PQnfields(res) <= col || PQgetisnull(res, 0, col) ||
        !decode_lsn_parse(PQgetvalue(res, 0, col), &standby))
        return false;
    if (standby < *flush)
        *flush = standby;
    return true;
}

bool pipe_consume(apply_ctx *a)
{
    char lsn[18];
    if (!pipe_push_out(a) || PQconsumeInput(a->conn) == 0) {
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
            log_error("apply: %s on %s failed (source transactions up to %s): %s",
                      pipe_op_name(p.op), p.t ? p.t->tgt.qname : "the target",
                      decode_lsn_format(a->xact_final_lsn, lsn), line);
            a->failed = true;
            const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
            if (p.diag && state && (!strncmp(state, "22", 2) || !strncmp(state, "23", 2)))
                mapdiag_explain(a->m->tgt, p.diag, lsn);
        } else if (p.op == 'c' && st == PGRES_COMMAND_OK &&
                   strcmp(PQcmdStatus(res), "COMMIT") != 0 && !a->failed) {
            log_error("apply: the target rolled the batch back instead of committing it");
            a->failed = true;
        } else if (p.op == 'L' && st == PGRES_TUPLES_OK && PQntuples(res) == 1 && !a->failed) {
            pgs_lsn insert_lsn = 0, flush_lsn = 0;
            decode_lsn_parse(PQgetvalue(res, 0, 0), &insert_lsn);
            decode_lsn_parse(PQgetvalue(res, 0, 1), &flush_lsn);
            bool capped = standby_cap(res, 2, &flush_lsn);
            batch_done(a, insert_lsn, flush_lsn, capped);
            a->origin_pending = insert_lsn;
        } else if (p.op == 'O' && st == PGRES_TUPLES_OK && PQntuples(res) == 1 && !a->failed) {
            if (!PQgetisnull(res, 0, 0)) {
                if (a->foreign_origins == NULL)
                    a->foreign_origins = strdup(PQgetvalue(res, 0, 0));
            } else if (a->origin_pending > a->origin_clean)
                a->origin_clean = a->origin_pending;
        } else if (p.op == 'F' && st == PGRES_TUPLES_OK && PQntuples(res) == 1) {
            pgs_lsn flush_lsn = 0;
            decode_lsn_parse(PQgetvalue(res, 0, 0), &flush_lsn);
            standby_cap(res, 1, &flush_lsn);
            durable_saw_flush(&a->durable, flush_lsn);
        }
        if (p.op == 'F')
            a->probing = false;
        PQclear(res);
        /* Each query's results end with a NULL. */
        res = PQgetResult(a->conn);
        PQclear(res);
        mapdiag_free(p.diag);
        a->qhead = (a->qhead + 1) % a->qcap;
        a->qlen--;
    }
    return !a->failed;
}

bool pipe_sync(apply_ctx *a)
{
    if (PQpipelineSync(a->conn) != 1 || !pipe_push(a, 'S', NULL)) {
        log_error("apply: sending to the target failed: %s", PQerrorMessage(a->conn));
        a->failed = true;
        return false;
    }
    a->syncs++;
    a->since_sync = 0;
    /* PQpipelineSync sends only what the socket takes now. */
    if (!pipe_push_out(a)) {
        log_error("apply: sending to the target failed: %s", PQerrorMessage(a->conn));
        a->failed = true;
        return false;
    }
    return true;
}

bool pipe_sent(apply_ctx *a, int ok, char op, pgs_mtable *t)
{
    if (ok != 1 && a->next_diag) {
        mapdiag_free(a->next_diag);
        a->next_diag = NULL;
    }
    if (ok != 1 || !pipe_push(a, op, t) || !pipe_push_out(a)) {
        log_error("apply: sending to the target failed: %s", PQerrorMessage(a->conn));
        a->failed = true;
        return false;
    }
    if (++a->since_sync >= SYNC_EVERY)
        return pipe_sync(a);
    return true;
}

bool pipe_send_sql(apply_ctx *a, const char *sql, int n, const char *const *params)
{
    return pipe_sent(a, PQsendQueryParams(a->conn, sql, n, NULL, params, NULL, NULL, 0), 'X', NULL);
}

bool apply_poll(apply_ctx *a)
{
    if (a->qlen > 0 || a->unsent) {
        pipe_consume(a);
        batch_commit_deferred(a);
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

bool apply_results_waiting(const apply_ctx *a)
{
    return !a->failed && a->qlen > 0 && a->syncs > 0 && !PQisBusy(a->conn);
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
