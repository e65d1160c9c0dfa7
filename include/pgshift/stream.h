/* stream.h: the replication stream as a handle on the caller's libuv loop
 * (src/repl/stream.c). It opens a replication connection, starts it at an
 * LSN, watches its socket, decodes the CopyData frames (decode.h) and hands
 * the owner one message at a time through callbacks; the owner sends the
 * standby status updates through it.
 *
 * Large transactions (pgoutput `streaming`) arrive while they run; the
 * stream keeps them on disk (spool.h) and hands them to the owner at their
 * Stream Commit as an ordinary Begin ... Commit, so the owner sees whole
 * transactions in commit order only.
 *
 * Back-pressure: before each message the stream asks `ready`. While the
 * owner says no, the stream keeps reading the socket into libpq's buffer
 * (the walsender keeps decoding) up to STREAM_READ_AHEAD bytes, then stops
 * reading it (the walsender waits); stream_resume() delivers what is
 * buffered once the owner is ready again. Nothing here ever waits. */
#ifndef PGSHIFT_STREAM_H
#define PGSHIFT_STREAM_H

#include "pgshift/catalog.h"
#include "pgshift/decode.h"
#include "pgshift/migration.h"

#include <stdbool.h>
#include <uv.h>

/* How much of the stream may pile up in libpq's buffer while the owner is
 * not ready, before the walsender is left to wait instead. */
#define STREAM_READ_AHEAD (4 << 20)

/* Catching up, the walsender sends one small frame per change, each its
 * own write: read at every byte, pgshift slept and woke once per change
 * (111,000 times for the bench's 88,000-transaction burst), and the
 * walsender paid a wake-up per write, on CPUs the apply backend needs. So
 * while the stream is behind the source (the last Commit seen is more
 * than STREAM_BEHIND_MS old), a socket drained after delivering something
 * is read again STREAM_GATHER_MS later instead (2,000-3,600 wake-ups for
 * the burst). In 1 ms a Unix socket's default send buffer fills with
 * about 28 kB of small frames and the walsender waits; that caps the
 * stream at about 28 MB/s of small frames, above what one apply
 * connection takes. Caught up, every frame is read as it arrives. */
#define STREAM_GATHER_MS 1
#define STREAM_BEHIND_MS 100

typedef struct repl_stream repl_stream;

typedef struct stream_cbs {
    void *arg;
    /* May the owner take another message now? */
    bool (*ready)(void *arg);
    /* One decoded message. False: the owner failed (and logged it); the
     * stream delivers nothing more until it is started again. */
    bool (*message)(void *arg, const decode_msg *msg);
    /* A keepalive: the server's WAL end, and whether it asks for a reply. */
    void (*keepalive)(void *arg, pgs_lsn wal_end, bool reply_requested);
    /* Everything read so far has been delivered. */
    void (*drained)(void *arg);
    /* The stream is closed: the connection failed or the server ended it
     * (`lost`, worth a reconnect), or a frame could not be decoded or the
     * owner's message callback failed (not lost: the run fails). Logged. */
    void (*closed)(void *arg, bool lost);
    /* Optional: a streamed transaction's Stream Start, each message of its
     * blocks (already spooled, with the xid of the (sub)transaction that
     * made it; Stream Start's xid is the top-level one) and its Stream
     * Abort, as they arrive, so the owner may apply it while it runs.
     * Returns -1 when the owner failed (the stream fails as for
     * `message`), else 0. For its Stream Commit: 1 when the owner has
     * applied it (the spool is dropped), 0 to have it read back to
     * `message` as usual. NULL: streamed transactions are read back only. */
    int (*streamed)(void *arg, const decode_msg *msg);
} stream_cbs;

/* `binary`: ask for binary values (source and target are one database). */
repl_stream *stream_new(uv_loop_t *loop, pgs_migration *m, bool binary, const stream_cbs *cbs);
/* Closes the stream if open and frees it (not from inside a callback). */
void stream_free(repl_stream *rs);

/* Connects and starts replication from `from`. First it asks the server it
 * reached about the slot, into `slot` (PGS_SLOT_OK when the server cannot
 * tell): missing or invalidated, it starts nothing and returns false
 * without logging, for the owner to say what that means. False also when
 * it could not connect or start (logged); the owner retries later. */
bool stream_start(repl_stream *rs, pgs_lsn from, pgs_slot_state *slot);
/* Stops watching the socket and closes the connection. */
void stream_close(repl_stream *rs);
bool stream_is_open(const repl_stream *rs);

/* The owner is ready again: deliver what is buffered. */
void stream_resume(repl_stream *rs);
/* Delivery stopped because the owner was not ready (stream_resume continues). */
bool stream_stalled(const repl_stream *rs);
/* The pgoutput protocol version of the current (or last) session; 0
 * before the first. */
int stream_proto_version(const repl_stream *rs);
/* Ask for origin 'none' (16+) from the next stream_start on. */
void stream_set_origin_filter(repl_stream *rs, bool on);
/* The current session asked for origin 'none' (only when no other
 * replication origin exists in the source cluster); *decided_at is the
 * source's WAL position read right after that was checked. */
bool stream_origin_active(const repl_stream *rs, pgs_lsn *decided_at);
/* Streamed transactions received but not committed (or being read back). */
int stream_open_streamed(const repl_stream *rs);
/* The end of the WAL the server has sent so far. */
pgs_lsn stream_received(const repl_stream *rs);

/* A standby status update: written up to max(received, flush), flushed
 * (applied and durable) up to `flush`. No-op when closed. */
void stream_send_status(repl_stream *rs, pgs_lsn flush, bool reply);

/* Ends the stream for good: a last status update (flushed up to `flush`),
 * the COPY ended and the server's answer read, waiting at most
 * `timeout_ms`, then closed. For the end of a run or a pause, when the loop
 * no longer serves anything else. */
void stream_finish(repl_stream *rs, pgs_lsn flush, int timeout_ms);

#endif
