/* stream.c: the replication stream on the caller's loop (stream.h). */
#include "pgshift/stream.h"

#include "pgshift/log.h"
#include "pgshift/pg.h"
#include "pgshift/repl.h"

#include <poll.h>
#include <stdlib.h>
#include <sys/ioctl.h>

struct repl_stream {
    uv_loop_t *loop;
    pgs_migration *m;
    bool binary;
    stream_cbs cbs;
    PGconn *conn;
    uv_poll_t *poll;   /* one per connection: the socket can change on reconnect */
    bool poll_stopped; /* STREAM_READ_AHEAD buffered while the owner was not ready */
    bool stalled;      /* delivery stopped before libpq's buffer was drained */
    bool delivering;   /* inside deliver(): no re-entry */
    long read_ahead;   /* bytes read while stalled */
    decode_ctx dec;
    pgs_lsn received;
};

repl_stream *stream_new(uv_loop_t *loop, pgs_migration *m, bool binary, const stream_cbs *cbs)
{
    repl_stream *rs = calloc(1, sizeof *rs);
    if (rs == NULL)
        return NULL;
    rs->loop = loop;
    rs->m = m;
    rs->binary = binary;
    rs->cbs = *cbs;
    decode_ctx_init(&rs->dec, 1);
    return rs;
}

void stream_free(repl_stream *rs)
{
    if (rs == NULL)
        return;
    stream_close(rs);
    decode_ctx_free(&rs->dec);
    free(rs);
}

bool stream_is_open(const repl_stream *rs)
{
    return rs->conn != NULL;
}

bool stream_stalled(const repl_stream *rs)
{
    return rs->conn != NULL && rs->stalled;
}

pgs_lsn stream_received(const repl_stream *rs)
{
    return rs->received;
}

static void on_poll_closed(uv_handle_t *h)
{
    free(h);
}

void stream_close(repl_stream *rs)
{
    rs->stalled = rs->poll_stopped = false;
    rs->read_ahead = 0;
    if (rs->poll) {
        uv_poll_stop(rs->poll);
        uv_close((uv_handle_t *)rs->poll, on_poll_closed);
        rs->poll = NULL;
    }
    if (rs->conn) {
        PQfinish(rs->conn);
        rs->conn = NULL;
    }
}

/* Closes on a failure and tells the owner. */
static void fail(repl_stream *rs, bool lost)
{
    stream_close(rs);
    rs->cbs.closed(rs->cbs.arg, lost);
}

/* One CopyData frame: a keepalive, or a message for the owner. */
static bool handle_frame(repl_stream *rs, const uint8_t *buf, size_t len)
{
    decode_frame f;
    decode_error err;
    if (!decode_frame_parse(buf, len, &f, &err)) {
        log_error("replication stream: bad frame at byte %zu: %s", err.offset, err.msg);
        return false;
    }
    if (f.wal_end > rs->received)
        rs->received = f.wal_end;
    if (f.kind == DECODE_FRAME_KEEPALIVE) {
        rs->cbs.keepalive(rs->cbs.arg, f.wal_end, f.reply_requested);
        return true;
    }
    decode_msg msg;
    if (!decode_message(&rs->dec, f.data, f.len, &msg, &err)) {
        char lsn[18];
        log_error("pgoutput message at %s: byte %zu: %s", decode_lsn_format(f.wal_start, lsn),
                  err.offset, err.msg);
        return false;
    }
    return rs->cbs.message(rs->cbs.arg, &msg);
}

static void on_readable(uv_poll_t *h, int status, int events);

/* Delivers every message libpq holds while the owner is ready. */
static void deliver(repl_stream *rs)
{
    if (rs->delivering)
        return;
    rs->delivering = true;
    rs->stalled = false;
    while (rs->conn) {
        if (!rs->cbs.ready(rs->cbs.arg)) {
            rs->stalled = true;
            break;
        }
        char *buf = NULL;
        int n = PQgetCopyData(rs->conn, &buf, 1);
        if (n == 0) {
            /* Drained: read the socket again. */
            rs->read_ahead = 0;
            if (rs->poll_stopped) {
                rs->poll_stopped = false;
                uv_poll_start(rs->poll, UV_READABLE, on_readable);
            }
            rs->delivering = false;
            rs->cbs.drained(rs->cbs.arg);
            return;
        }
        if (n < 0) {
            PGresult *res = PQgetResult(rs->conn);
            char line[1024];
            log_warn("replication stream ended: %s",
                     n == -2 ? PQerrorMessage(rs->conn)
                             : pg_result_error_line(res, line, sizeof line));
            PQclear(res);
            rs->delivering = false;
            fail(rs, true);
            return;
        }
        bool ok = handle_frame(rs, (const uint8_t *)buf, (size_t)n);
        PQfreemem(buf);
        if (!ok && rs->conn) {
            rs->delivering = false;
            fail(rs, false);
            return;
        }
    }
    rs->delivering = false;
}

static void on_readable(uv_poll_t *h, int status, int events)
{
    (void)events;
    repl_stream *rs = h->data;
    if (rs->conn == NULL)
        return;
    int avail = 0;
    if (rs->stalled && ioctl(PQsocket(rs->conn), FIONREAD, &avail) == 0 && avail > 0)
        rs->read_ahead += avail;
    if (status < 0 || PQconsumeInput(rs->conn) == 0) {
        log_warn("replication connection lost: %s",
                 status < 0 ? uv_strerror(status) : PQerrorMessage(rs->conn));
        fail(rs, true);
        return;
    }
    if (!rs->stalled) {
        deliver(rs);
        return;
    }
    /* The owner cannot take more: let the walsender keep decoding into
     * libpq's buffer, up to STREAM_READ_AHEAD; past that, stop reading. */
    if (rs->read_ahead >= STREAM_READ_AHEAD && !rs->poll_stopped) {
        uv_poll_stop(rs->poll);
        rs->poll_stopped = true;
    }
}

void stream_resume(repl_stream *rs)
{
    if (rs->conn)
        deliver(rs);
}

bool stream_start(repl_stream *rs, pgs_lsn from)
{
    stream_close(rs);
    rs->conn = repl_connect(rs->m);
    if (rs->conn == NULL)
        return false;
    if (!repl_start(rs->m, rs->conn, from, rs->binary)) {
        stream_close(rs);
        return false;
    }
    decode_ctx_free(&rs->dec);
    decode_ctx_init(&rs->dec, 1);
    rs->poll = malloc(sizeof *rs->poll);
    if (rs->poll == NULL || uv_poll_init(rs->loop, rs->poll, PQsocket(rs->conn)) != 0) {
        log_error("replication stream: cannot watch the connection");
        free(rs->poll);
        rs->poll = NULL;
        stream_close(rs);
        return false;
    }
    rs->poll->data = rs;
    uv_poll_start(rs->poll, UV_READABLE, on_readable);
    char lsn[18];
    log_info("streaming from slot %s at %s", rs->m->slot, decode_lsn_format(from, lsn));
    return true;
}

void stream_send_status(repl_stream *rs, pgs_lsn flush, bool reply)
{
    if (rs->conn == NULL)
        return;
    pgs_lsn write = rs->received > flush ? rs->received : flush;
    repl_send_status(rs->conn, write, flush, reply);
}

/* Milliseconds left until `deadline` (uv_hrtime() in ms). */
static int left_ms(double deadline)
{
    double now = (double)uv_hrtime() / 1e6;
    return deadline > now ? (int)(deadline - now) + 1 : 0;
}

/* Waits up to the deadline for the socket to be readable or writable. */
static bool wait_socket(PGconn *conn, bool write, double deadline)
{
    int ms = left_ms(deadline);
    if (ms == 0)
        return false;
    struct pollfd p = {.fd = PQsocket(conn), .events = (short)(write ? POLLOUT : POLLIN)};
    return poll(&p, 1, ms) > 0;
}

void stream_finish(repl_stream *rs, pgs_lsn flush, int timeout_ms)
{
    PGconn *c = rs->conn;
    if (c == NULL)
        return;
    double deadline = (double)uv_hrtime() / 1e6 + timeout_ms;
    /* Closing a socket with unread data resets the connection, and the
     * walsender may then lose the status update still in its receive
     * buffer: end the COPY instead, and read until the server has ended it
     * (it handles our messages in order, the status update first). */
    if (PQsetnonblocking(c, 1) == 0) {
        stream_send_status(rs, flush, false);
        bool ok = PQputCopyEnd(c, NULL) >= 0;
        int f;
        while (ok && (f = PQflush(c)) == 1)
            ok = wait_socket(c, true, deadline);
        while (ok) {
            char *buf = NULL;
            int n = PQgetCopyData(c, &buf, 1);
            PQfreemem(buf);
            if (n == -1 || n == -2)
                break;
            if (n == 0 && !(wait_socket(c, false, deadline) && PQconsumeInput(c)))
                ok = false;
        }
        /* The COPY's result, then the command's. */
        while (ok && !PQisBusy(c)) {
            PGresult *r = PQgetResult(c);
            if (r == NULL)
                break;
            PQclear(r);
        }
    }
    stream_close(rs);
}
