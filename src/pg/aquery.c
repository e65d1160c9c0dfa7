/* aquery.c: see aquery.h. */
#include "pgshift/aquery.h"

#include "pgshift/log.h"
#include "pgshift/pg.h"

#include <stdlib.h>

struct aquery {
    uv_poll_t poll;
    PGconn *conn;
    const char *what;
    bool busy;
    bool broken;
    /* The poll handle is closed (or closing) on the first failure, while
     * its descriptor is still ours: libpq closes the socket when it finds
     * the connection lost, and stopping a poll handle later deletes its
     * descriptor number from the loop's epoll set, which by then may be
     * another connection's socket (the stream reconnecting after a
     * failover went deaf that way). */
    bool poll_closing;
    bool poll_closed;
    bool closing;
    uint64_t sent_at; /* uv_hrtime() */
    PGresult *res;    /* the first result of the query out */
    aquery_cb cb;
    void *arg;
};

static void destroy(aquery *q)
{
    PQclear(q->res);
    if (q->conn)
        PQfinish(q->conn);
    free(q);
}

/* The poll handle is closed: the aquery goes too once its owner closed it. */
static void on_poll_closed(uv_handle_t *h)
{
    aquery *q = h->data;
    q->poll_closed = true;
    if (q->closing)
        destroy(q);
}

static void close_poll(aquery *q)
{
    if (q->poll_closing)
        return;
    q->poll_closing = true;
    uv_close((uv_handle_t *)&q->poll, on_poll_closed); /* stops it first */
}

static void fail(aquery *q, const char *why)
{
    if (!q->broken)
        log_warn("%s: %s", q->what, why);
    q->broken = true;
    close_poll(q);
    if (q->busy) {
        q->busy = false;
        PQclear(q->res);
        q->res = NULL;
        q->cb(q->arg, NULL);
    }
}

static void on_ready(uv_poll_t *h, int status, int events);

static void rewatch(aquery *q, bool want_write)
{
    uv_poll_start(&q->poll, UV_READABLE | (want_write ? UV_WRITABLE : 0), on_ready);
}

static void on_ready(uv_poll_t *h, int status, int events)
{
    (void)events;
    aquery *q = h->data;
    if (status < 0) {
        fail(q, uv_strerror(status));
        return;
    }
    int unsent = PQflush(q->conn);
    if (unsent < 0 || PQconsumeInput(q->conn) == 0) {
        fail(q, PQerrorMessage(q->conn));
        return;
    }
    rewatch(q, unsent == 1);
    while (q->busy && !PQisBusy(q->conn)) {
        PGresult *r = PQgetResult(q->conn);
        if (r != NULL) {
            if (q->res == NULL)
                q->res = r;
            else
                PQclear(r);
            continue;
        }
        /* The query is complete. */
        q->busy = false;
        PGresult *res = q->res;
        q->res = NULL;
        ExecStatusType st = PQresultStatus(res);
        if (res && (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK))
            q->cb(q->arg, res);
        else {
            char line[1024];
            log_warn("%s: %s", q->what,
                     res ? pg_result_error_line(res, line, sizeof line) : "no result");
            q->cb(q->arg, NULL);
        }
        PQclear(res);
    }
    if (!q->busy && PQstatus(q->conn) == CONNECTION_BAD)
        fail(q, PQerrorMessage(q->conn));
}

aquery *aquery_open(uv_loop_t *loop, PGconn *conn, const char *what)
{
    aquery *q = calloc(1, sizeof *q);
    if (q == NULL || conn == NULL || PQsetnonblocking(conn, 1) != 0 ||
        uv_poll_init(loop, &q->poll, PQsocket(conn)) != 0) {
        log_error("%s: cannot watch the connection", what);
        free(q);
        if (conn)
            PQfinish(conn);
        return NULL;
    }
    q->poll.data = q;
    q->conn = conn;
    q->what = what;
    rewatch(q, false);
    return q;
}

void aquery_close(aquery *q)
{
    if (q == NULL || q->closing)
        return;
    q->closing = true;
    if (!q->poll_closing)
        close_poll(q);
    else if (q->poll_closed)
        destroy(q);
}

bool aquery_busy(const aquery *q)
{
    return q->busy;
}

bool aquery_broken(const aquery *q)
{
    return q->broken;
}

double aquery_waited_ms(const aquery *q)
{
    return q->busy ? (double)(uv_hrtime() - q->sent_at) / 1e6 : 0;
}

bool aquery_send(aquery *q, const char *sql, int nparams, const char *const *params, aquery_cb cb,
                 void *arg)
{
    if (q->busy || q->broken || q->closing)
        return false;
    if (PQsendQueryParams(q->conn, sql, nparams, NULL, params, NULL, NULL, 0) != 1) {
        fail(q, PQerrorMessage(q->conn));
        return false;
    }
    q->busy = true;
    q->cb = cb;
    q->arg = arg;
    q->sent_at = uv_hrtime();
    int unsent = PQflush(q->conn);
    if (unsent < 0) {
        q->busy = false;
        fail(q, PQerrorMessage(q->conn));
        return false;
    }
    rewatch(q, unsent == 1);
    return true;
}
