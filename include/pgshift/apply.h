/* apply.h: applies decoded pgoutput messages to the target tables, exactly
 * once and in commit order.
 *
 * Several source transactions share one target transaction (a batch). The
 * batch ends with an UPDATE of pgshift.migrations.applied_lsn to the end LSN
 * of its last source commit, in the same target transaction; only after
 * that COMMIT returns does m->applied_lsn move. Commits are asynchronous
 * (no fsync wait); apply_durable_lsn() says which are flushed, and only
 * that may be reported to the server as flushed. A source transaction whose commit
 * LSN is below the applied LSN was applied before and is skipped whole.
 *
 * Statements are prepared once per (table, operation, set of sent columns)
 * and sent in libpq pipeline mode, synced every few hundred statements so
 * neither side buffers without bound (a 1M-row transaction streams through).
 */
#ifndef PGSHIFT_APPLY_H
#define PGSHIFT_APPLY_H

#include "pgshift/decode.h"
#include "pgshift/migration.h"

#include <libpq-fe.h>
#include <stdbool.h>

typedef struct apply_ctx apply_ctx;

/* Opens the applier's own target connection. NULL on failure (logged). */
apply_ctx *apply_new(pgs_migration *m);
void apply_free(apply_ctx *a);

/* Applies one message. False on any failure: the error is logged once with
 * the table, column and LSN, the batch is rolled back, and nothing past
 * m->applied_lsn was committed. */
bool apply_message(apply_ctx *a, const decode_msg *msg);

/* True between a source Begin and its Commit. */
bool apply_in_xact(const apply_ctx *a);
/* True while a target transaction holds applied but uncommitted changes. */
bool apply_batch_open(const apply_ctx *a);
/* Milliseconds since the open batch began, and its change count. */
double apply_batch_age_ms(const apply_ctx *a);
long apply_batch_changes(const apply_ctx *a);

/* Sends the open batch's COMMIT at a source transaction boundary (no-op
 * without an open batch). It completes in the background: m->applied_lsn
 * moves when its result arrives (apply_poll, apply_finish, or the next
 * commit, which first waits for the one before). With `sync` the COMMIT
 * waits for its WAL flush, so the batch is durable as soon as it returns:
 * for a batch closed because everything received is applied (the end of a
 * burst, a trickle of writes), where no later commit may come to flush it
 * and the slot would wait for the WAL writer. It costs one WAL flush per
 * such batch (at most one per idle_commit_time). */
bool apply_commit_batch(apply_ctx *a, bool sync);
/* The apply connection's socket: readable when results arrive (for
 * apply_poll). */
int apply_socket(const apply_ctx *a);
/* Reads whatever results have arrived, without blocking. */
bool apply_poll(apply_ctx *a);
/* Waits for every result: all committed batches are confirmed or failed. */
bool apply_finish(apply_ctx *a);
/* While the applier blocks on the target, `cb(arg)` is called whenever
 * `fd` (the replication socket) is readable, so the caller can buffer the
 * stream (PQconsumeInput only; no processing). fd -1 turns it off. */
void apply_set_side_channel(apply_ctx *a, int fd, void (*cb)(void *), void *arg);

/* Nothing open, nothing in flight, everything committed known flushed. */
bool apply_idle(const apply_ctx *a);
/* Throws the open batch away (the slot sends those changes again). */
void apply_rollback_batch(apply_ctx *a);

/* The applied LSN that is durable on the target: the end LSN of the last
 * batch whose COMMIT the target has flushed, given the target's
 * pg_current_wal_flush_lsn() (or 0: the highest flush position the
 * applier's own results showed). Batches commit with synchronous_commit off
 * unless apply_commit_batch() was asked for a synchronous one;
 * this, never m->applied_lsn, is what may be reported as flushed. */
pgs_lsn apply_durable_lsn(apply_ctx *a, pgs_lsn target_flush);
/* The starting point: what the state says was applied (durable by then). */
void apply_set_durable(apply_ctx *a, pgs_lsn lsn);

/* Totals since the process started (for rates). */
typedef struct apply_stats {
    uint64_t changes;
    uint64_t xacts;
    uint64_t skipped_xacts;
    pgs_timestamp last_commit_time; /* of the last applied source commit */
} apply_stats;

const apply_stats *apply_get_stats(const apply_ctx *a);

#endif
