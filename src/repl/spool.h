/* spool.h: in-progress transactions the walsender streams (pgoutput
 * `streaming`, proto_version 2+), kept on disk until their Stream Commit.
 *
 * A transaction larger than the server's logical_decoding_work_mem arrives
 * in Stream Start/Stop blocks while it is still running, interleaved with
 * other transactions, and ends with a Stream Commit or a Stream Abort (of
 * the whole transaction, or of one subtransaction: its changes and those of
 * the subtransactions begun after it are discarded). Each message of a
 * block is appended, as received, to an unlinked temporary file of its
 * top-level transaction; at the Stream Commit the owner reads them back in
 * order and applies them as one transaction at its commit position, so the
 * applier still sees transactions whole and in commit order, and client
 * memory stays flat whatever the transaction's size.
 *
 * Relation messages of an aborted subtransaction are kept: pgoutput sends a
 * relation's schema once per streamed transaction, and later changes of the
 * parent rely on it. */
#ifndef PGSHIFT_SPOOL_H
#define PGSHIFT_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct spool spool;
typedef struct spool_xact spool_xact;

/* `dir`: where the files go (NULL: $TMPDIR or /tmp). NULL on malloc failure. */
spool *spool_new(const char *dir);
void spool_free(spool *s);
/* Drops every transaction (a new replication session sends them again). */
void spool_reset(spool *s);

/* Appends one message of a stream block of top-level transaction `xid`,
 * made by (sub)transaction `subxid` (the message's own xid). False on an
 * I/O error (logged). */
bool spool_add(spool *s, uint32_t xid, uint32_t subxid, const uint8_t *msg, size_t len);
/* A Stream Abort: the whole transaction (subxid == xid) or one
 * subtransaction. False on an I/O error (logged). */
bool spool_abort(spool *s, uint32_t xid, uint32_t subxid);
/* A Stream Commit: hands the transaction over for reading back (NULL when
 * nothing of it was spooled: an empty transaction). The spool forgets it. */
spool_xact *spool_take(spool *s, uint32_t xid, bool *io_error);

/* Reads the next message back; false at the end (or on an I/O error: then
 * *io_error is set, logged). The buffer is the xact's, valid until the next
 * call. */
bool spool_next(spool_xact *x, const uint8_t **msg, size_t *len, bool *io_error);
void spool_xact_free(spool_xact *x);

/* Transactions open in the spool, and the bytes they hold. */
int spool_open_xacts(const spool *s);
uint64_t spool_bytes(const spool *s);

#endif
