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

/* Opens the applier's own target connection. NULL on failure (logged).
 * `origin`: the replication origin its session runs under (see
 * apply_has_origin), or NULL for none. */
apply_ctx *apply_new(pgs_migration *m, const char *origin);
void apply_free(apply_ctx *a);

/* Applies one message. False on any failure: the error is logged once with
 * the table, column and LSN, the batch is rolled back, and nothing past
 * m->applied_lsn was committed. */
bool apply_message(apply_ctx *a, const decode_msg *msg);

/* True between a source Begin and its Commit. */
bool apply_in_xact(const apply_ctx *a);
/* Inside a source transaction that has put a change in the batch. */
bool apply_in_changed_xact(const apply_ctx *a);
/* True while a target transaction holds applied but uncommitted changes. */
bool apply_batch_open(const apply_ctx *a);
/* Milliseconds since the open batch began, and its change count. */
double apply_batch_age_ms(const apply_ctx *a);
long apply_batch_changes(const apply_ctx *a);

/* Sends the open batch's COMMIT at a source transaction boundary (no-op
 * without an open batch). It completes in the background: m->applied_lsn
 * moves when its result arrives (apply_poll). At most one batch is in
 * flight: while the previous one is, the batch stays open (and may take
 * more source transactions) and is committed by apply_poll once that one
 * has completed. With `sync` the COMMIT waits for its WAL flush, so the
 * batch is durable as soon as it returns: for a batch closed because
 * everything received is applied (the end of a burst, a trickle of
 * writes), where no later commit may come to flush it and the slot would
 * wait for the WAL writer. It costs one WAL flush per such batch (at most
 * one per idle_commit_time). */
bool apply_commit_batch(apply_ctx *a, bool sync);

/* Nothing in this module waits for the target. The owner's event loop
 * watches apply_socket() for reading, and for writing while
 * apply_want_write(), and calls apply_poll() when it is ready: that sends
 * what libpq still holds, reads the results that have arrived and commits
 * a deferred batch. */
int apply_socket(const apply_ctx *a);
bool apply_poll(apply_ctx *a);
bool apply_want_write(const apply_ctx *a);
/* A result libpq has already read sits in its buffer: apply_poll would
 * take it now, yet the socket may never become readable for it (a flush
 * that could not write reads the input meanwhile, so that the server is
 * never blocked writing to us). The owner then calls apply_poll itself. */
bool apply_results_waiting(const apply_ctx *a);
/* May take another message: output all handed to the kernel and at most
 * one pipeline segment outstanding. While it is false the owner stops
 * feeding (back-pressure on the stream). */
bool apply_ready(const apply_ctx *a);
/* Results outstanding, output unsent or a commit deferred: the applier is
 * not at rest yet (applied position not final). */
bool apply_busy(const apply_ctx *a);
bool apply_failed(const apply_ctx *a);
/* The apply session runs under the replication origin named like the slot
 * (PostgreSQL 16+, the target is the source database, and the role may set
 * one up): its writes then carry the origin, and a stream asking for
 * origin 'none' never has them decoded. */
bool apply_has_origin(const apply_ctx *a);
/* With an origin: the highest target WAL position read, after a batch's
 * COMMIT, before a snapshot that saw no replication origin but pgshift's
 * (`<slot>` and `<slot>_stream`); *foreign (optional) names the others
 * once one was seen, else NULL. With the target in the source database, a
 * stream filtering origins may confirm up to there. */
pgs_lsn apply_origin_clean(const apply_ctx *a, const char **foreign);
/* Queues a probe of the target's WAL flush position between batches (for
 * apply_durable_lsn); no-op while a batch is open or a probe is out. */
bool apply_probe_flush(apply_ctx *a);

/* A stop or pause with no batch left to commit: asynchronous commits made
 * durable at once (a synchronous one-row commit, then a flush probe), so
 * the final confirmed position covers them. */
bool apply_sync_point(apply_ctx *a);
/* Sends one statement on the state (pgshift.*) through the apply
 * connection, in order with the batches: inside the open batch it commits
 * with it, else on its own. Never waits. */
bool apply_send_state(apply_ctx *a, const char *sql, int nparams, const char *const *params);

/* Nothing open, nothing in flight, everything committed known flushed. */
bool apply_idle(const apply_ctx *a);
/* Throws the open batch away (the slot sends those changes again); sent,
 * not waited for. */
void apply_rollback_batch(apply_ctx *a);

/* The applied LSN that is durable on the target: the end LSN of the last
 * batch whose COMMIT the target has flushed, given the target's
 * pg_current_wal_flush_lsn() (or 0: the highest flush position the
 * applier's own results and probes showed). Batches commit with synchronous_commit off
 * unless apply_commit_batch() was asked for a synchronous one;
 * this, never m->applied_lsn, is what may be reported as flushed. */
pgs_lsn apply_durable_lsn(apply_ctx *a, pgs_lsn target_flush);
/* The starting point: what the state says was applied (durable by then). */
void apply_set_durable(apply_ctx *a, pgs_lsn lsn);
/* Chains this applier's next batch to `lsn` (what another applier of the
 * same target committed last). */
void apply_chain_to(apply_ctx *a, pgs_lsn lsn);
/* Sends the open batch's COMMIT as the commit of source transaction
 * `commit` (its end LSN and time), synchronously; for an applier that was
 * given a streamed transaction's changes inside a Begin it never closed. */
bool apply_commit_streamed(apply_ctx *a, const decode_msg *commit);

/* Totals since the process started (for rates). */
typedef struct apply_stats {
    uint64_t changes;
    uint64_t xacts;
    uint64_t skipped_xacts;
    pgs_timestamp last_commit_time; /* of the last applied source commit */
} apply_stats;

const apply_stats *apply_get_stats(const apply_ctx *a);

#endif
