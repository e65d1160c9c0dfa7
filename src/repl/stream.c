/* stream.c: the replication stream on the caller's loop (stream.h). */
#include "pgshift/stream.h"

#include "pgshift/log.h"
#include "pgshift/pg.h"
#include "pgshift/repl.h"
#include "spool.h"

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
    /* Behind the source, a drained socket is read again after
     * STREAM_GATHER_MS rather than at its next byte (stream.h). */
    uv_timer_t *gather;
    long delivered;            /* frames since the last drain */
    pgs_timestamp last_commit; /* commit time of the last Commit seen */
    decode_ctx dec;
    pgs_lsn received;
    int proto_version;  /* of the current session; 0 before the first */
    bool origin_filter; /* ask for origin 'none' at the next start */
    bool origin_active; /* the current session asked for it */
    pgs_lsn origin_lsn; /* the source's WAL position when that was decided */
    spool *spool;       /* streamed transactions not committed yet */
    /* A streamed transaction being read back after its Stream Commit: its
     * messages go to the owner before anything else the server sent. */
    spool_xact *replay;
    uint32_t stream_xid; /* of the current stream block */
    decode_ctx replay_dec;
    decode_msg replay_commit;
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
    decode_ctx_init(&rs->replay_dec, 1);
    rs->spool = spool_new(NULL);
    if (rs->spool == NULL) {
        free(rs);
        return NULL;
    }
    return rs;
}

void stream_free(repl_stream *rs)
{
    if (rs == NULL)
        return;
    stream_close(rs);
    decode_ctx_free(&rs->dec);
    decode_ctx_free(&rs->replay_dec);
    spool_free(rs->spool);
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

static void on_handle_closed(uv_handle_t *h)
{
    free(h);
}

int stream_proto_version(const repl_stream *rs)
{
    return rs->proto_version;
}

void stream_set_origin_filter(repl_stream *rs, bool on)
{
    rs->origin_filter = on;
}

bool stream_origin_active(const repl_stream *rs, pgs_lsn *decided_at)
{
    if (decided_at)
        *decided_at = rs->origin_lsn;
    return rs->conn != NULL && rs->origin_active;
}

/* origin 'none' drops every change made under a replication origin, not
 * only pgshift's: where anything else replicates into this cluster (a
 * subscription, another tool), its changes to the source tables would be
 * lost. Ask for it only when pgshift's origin is the only one. */
static bool origin_filter_safe(repl_stream *rs)
{
    if (PQserverVersion(rs->conn) < 160000)
        return false;
    /* A replication connection takes simple queries only: the slot name as
     * a literal. */
    char *lit = PQescapeLiteral(rs->conn, rs->m->slot, strlen(rs->m->slot));
    char *sql = NULL;
    bool safe = false;
    /* The position first, then the origins in a later snapshot (see
     * stream_origin_active). */
    if (lit && asprintf(&sql, "SELECT pg_current_wal_insert_lsn(), " PG_SQL_OTHER_ORIGINS("%1$s"),
                        lit) >= 0) {
        PGresult *res = PQexec(rs->conn, sql);
        if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
            safe =
                PQgetisnull(res, 0, 1) && decode_lsn_parse(PQgetvalue(res, 0, 0), &rs->origin_lsn);
            if (!PQgetisnull(res, 0, 1))
                log_info("not filtering by origin: replication origin(s) %s in the source cluster "
                         "may write to the source tables, so every origin is decoded",
                         PQgetvalue(res, 0, 1));
        }
        PQclear(res);
    }
    PQfreemem(lit);
    free(sql);
    return safe;
}

int stream_open_streamed(const repl_stream *rs)
{
    return spool_open_xacts(rs->spool) + (rs->replay != NULL);
}

void stream_close(repl_stream *rs)
{
    /* What was spooled comes again in the next session. */
    spool_reset(rs->spool);
    spool_xact_free(rs->replay);
    rs->replay = NULL;
    rs->stalled = rs->poll_stopped = false;
    rs->read_ahead = 0;
    if (rs->poll) {
        uv_poll_stop(rs->poll);
        uv_close((uv_handle_t *)rs->poll, on_handle_closed);
        rs->poll = NULL;
    }
    if (rs->gather) {
        uv_timer_stop(rs->gather);
        uv_close((uv_handle_t *)rs->gather, on_handle_closed);
        rs->gather = NULL;
    }
    rs->delivered = 0;
    rs->last_commit = 0;
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

/* A Stream Commit: the transaction's spooled messages are read back
 * (replay_next) between a Begin and a Commit made from it. */
static bool stream_commit(repl_stream *rs, const decode_msg *msg)
{
    bool io_error;
    rs->replay = spool_take(rs->spool, msg->xid, &io_error);
    if (io_error)
        return false;
    decode_msg begin = {.kind = DECODE_BEGIN, .has_xid = true, .xid = msg->xid};
    begin.u.begin.final_lsn = msg->u.stream_commit.commit_lsn;
    begin.u.begin.commit_time = msg->u.stream_commit.commit_time;
    decode_msg *c = &rs->replay_commit;
    *c = (decode_msg){.kind = DECODE_COMMIT};
    c->u.commit.flags = msg->u.stream_commit.flags;
    c->u.commit.commit_lsn = msg->u.stream_commit.commit_lsn;
    c->u.commit.end_lsn = msg->u.stream_commit.end_lsn;
    c->u.commit.commit_time = msg->u.stream_commit.commit_time;
    /* Spooled messages are stream-block messages: each carries its xid. */
    decode_ctx_free(&rs->replay_dec);
    rs->replay_dec.proto_version = rs->proto_version;
    rs->replay_dec.in_stream = true;
    if (!rs->cbs.message(rs->cbs.arg, &begin))
        return false;
    if (rs->replay == NULL) /* nothing of it was spooled */
        return rs->cbs.message(rs->cbs.arg, c);
    return true;
}

/* The next message of the transaction being read back, or its Commit. */
static bool replay_next(repl_stream *rs)
{
    const uint8_t *buf;
    size_t len;
    bool io_error;
    if (!spool_next(rs->replay, &buf, &len, &io_error)) {
        spool_xact_free(rs->replay);
        rs->replay = NULL;
        return !io_error && rs->cbs.message(rs->cbs.arg, &rs->replay_commit);
    }
    decode_msg msg;
    decode_error err;
    if (!decode_message(&rs->replay_dec, buf, len, &msg, &err)) {
        char lsn[18];
        log_error("streamed transaction committed at %s, read back: byte %zu: %s",
                  decode_lsn_format(rs->replay_commit.u.commit.commit_lsn, lsn), err.offset,
                  err.msg);
        return false;
    }
    return rs->cbs.message(rs->cbs.arg, &msg);
}

/* A message of the replication protocol's streaming mode: a stream block's
 * content goes to the spool, its end (commit or abort) is acted on. */
static bool stream_message(repl_stream *rs, const decode_msg *msg, const decode_frame *f)
{
    bool ok = true;
    switch (msg->kind) {
    case DECODE_STREAM_START:
        rs->stream_xid = msg->xid;
        break;
    case DECODE_STREAM_STOP:
        return true;
    case DECODE_STREAM_ABORT:
        ok = spool_abort(rs->spool, msg->xid, msg->u.stream_abort.subxid);
        break;
    case DECODE_STREAM_COMMIT:
        /* The owner may have applied it as it came (stream_cbs.streamed). */
        if (rs->cbs.streamed) {
            int taken = rs->cbs.streamed(rs->cbs.arg, msg);
            if (taken < 0)
                return false;
            if (taken > 0) {
                bool io_error;
                spool_xact_free(spool_take(rs->spool, msg->xid, &io_error));
                return true;
            }
        }
        return stream_commit(rs, msg);
    default:
        ok = spool_add(rs->spool, rs->stream_xid, msg->has_xid ? msg->xid : rs->stream_xid, f->data,
                       f->len);
        break;
    }
    return ok && (rs->cbs.streamed == NULL || rs->cbs.streamed(rs->cbs.arg, msg) >= 0);
}

static bool is_stream_kind(decode_kind k)
{
    return k == DECODE_STREAM_START || k == DECODE_STREAM_STOP || k == DECODE_STREAM_COMMIT ||
           k == DECODE_STREAM_ABORT;
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
    bool in_block = rs->dec.in_stream;
    decode_msg msg;
    if (!decode_message(&rs->dec, f.data, f.len, &msg, &err)) {
        char lsn[18];
        log_error("pgoutput message at %s: byte %zu: %s", decode_lsn_format(f.wal_start, lsn),
                  err.offset, err.msg);
        return false;
    }
    if (msg.kind == DECODE_COMMIT)
        rs->last_commit = msg.u.commit.commit_time;
    else if (msg.kind == DECODE_STREAM_COMMIT)
        rs->last_commit = msg.u.stream_commit.commit_time;
    if (in_block || is_stream_kind(msg.kind))
        return stream_message(rs, &msg, &f);
    return rs->cbs.message(rs->cbs.arg, &msg);
}

static void on_readable(uv_poll_t *h, int status, int events);

/* Behind the source: the last transaction seen committed more than
 * STREAM_BEHIND_MS before now (by this machine's clock). */
static bool behind(const repl_stream *rs)
{
    uv_timeval64_t tv;
    if (rs->last_commit == 0 || uv_gettimeofday(&tv) != 0)
        return false;
    pgs_timestamp now = decode_ts_from_unix_us(tv.tv_sec * INT64_C(1000000) + tv.tv_usec);
    return now - rs->last_commit > STREAM_BEHIND_MS * INT64_C(1000);
}

/* The gather time is over: read what the walsender sent meanwhile. */
static void on_gather(uv_timer_t *t)
{
    repl_stream *rs = t->data;
    if (rs->conn == NULL)
        return;
    if (rs->poll_stopped) {
        rs->poll_stopped = false;
        uv_poll_start(rs->poll, UV_READABLE, on_readable);
    }
    on_readable(rs->poll, 0, UV_READABLE);
}

/* Reads what the socket holds into libpq's buffer; a lost connection is
 * closed and reported to the owner (false). */
static bool consume(repl_stream *rs)
{
    if (PQconsumeInput(rs->conn) != 0)
        return true;
    log_warn("replication connection lost: %s", PQerrorMessage(rs->conn));
    fail(rs, true);
    return false;
}

/* libpq holds no whole frame: read the socket again, at once or, behind
 * the source after delivering something, once STREAM_GATHER_MS has let
 * the walsender send more (stream.h). 1: more was read, deliver on; 0:
 * wait for the socket or the timer; -1: the connection is lost. */
static int drained(repl_stream *rs)
{
    rs->read_ahead = 0;
    bool gather = rs->delivered > 0 && behind(rs);
    int avail = 0;
    if (gather && ioctl(PQsocket(rs->conn), FIONREAD, &avail) == 0 && avail > 0)
        /* libpq reads a bounded amount per call: the socket holds more. */
        return consume(rs) ? 1 : -1;
    rs->delivered = 0;
    bool gathering = uv_is_active((uv_handle_t *)rs->gather);
    if (gather) {
        if (!rs->poll_stopped) {
            uv_poll_stop(rs->poll);
            rs->poll_stopped = true;
        }
        uv_timer_start(rs->gather, on_gather, STREAM_GATHER_MS, 0);
    } else if (rs->poll_stopped && !gathering) {
        rs->poll_stopped = false;
        uv_poll_start(rs->poll, UV_READABLE, on_readable);
    }
    return 0;
}

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
        if (rs->replay) {
            if (!replay_next(rs) && rs->conn) {
                rs->delivering = false;
                fail(rs, false);
                return;
            }
            continue;
        }
        char *buf = NULL;
        int n = PQgetCopyData(rs->conn, &buf, 1);
        if (n == 0) {
            int more = drained(rs);
            if (more > 0)
                continue;
            rs->delivering = false;
            if (more == 0)
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
        rs->delivered++;
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
    if (status < 0) {
        log_warn("replication connection lost: %s", uv_strerror(status));
        fail(rs, true);
        return;
    }
    if (!consume(rs))
        return;
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

bool stream_start(repl_stream *rs, pgs_lsn from, pgs_slot_state *slot)
{
    stream_close(rs);
    slot->health = PGS_SLOT_OK; /* unless the server says otherwise */
    rs->conn = repl_connect(rs->m);
    if (rs->conn == NULL)
        return false;
    /* On this very connection: the server that would stream is the one
     * asked (with several hosts, another connection may reach another). */
    catalog_slot_check(rs->conn, rs->m->slot, slot);
    if (catalog_slot_lost(slot)) {
        stream_close(rs);
        return false;
    }
    rs->origin_active = rs->origin_filter && origin_filter_safe(rs);
    if (!repl_start(rs->m, rs->conn, from, rs->binary, rs->origin_active, &rs->proto_version)) {
        stream_close(rs);
        return false;
    }
    decode_ctx_free(&rs->dec);
    decode_ctx_init(&rs->dec, rs->proto_version);
    rs->poll = malloc(sizeof *rs->poll);
    rs->gather = malloc(sizeof *rs->gather);
    if (rs->gather)
        uv_timer_init(rs->loop, rs->gather); /* cannot fail; stream_close closes it */
    if (rs->poll == NULL || rs->gather == NULL ||
        uv_poll_init(rs->loop, rs->poll, PQsocket(rs->conn)) != 0) {
        log_error("replication stream: cannot watch the connection");
        free(rs->poll);
        rs->poll = NULL;
        stream_close(rs);
        return false;
    }
    rs->poll->data = rs;
    rs->gather->data = rs;
    uv_poll_start(rs->poll, UV_READABLE, on_readable);
    char lsn[18];
    log_info("streaming from slot %s at %s (pgoutput proto_version %d, streaming on%s)",
             rs->m->slot, decode_lsn_format(from, lsn), rs->proto_version,
             rs->origin_active ? ", origin none" : "");
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
