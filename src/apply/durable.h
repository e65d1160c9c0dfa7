/* durable.h (internal to src/apply): which applied LSN is durable on the
 * target. Pure: no connection, no clock.
 *
 * Batches commit asynchronously (synchronous_commit off), so a batch's
 * applied LSN may only be reported as flushed once the target's WAL is
 * flushed past the position its COMMIT wrote. Each committed batch is
 * recorded with the source end LSN it applied and that target position; a
 * target flush position then says which of them are durable.
 */
#ifndef PGSHIFT_APPLY_DURABLE_H
#define PGSHIFT_APPLY_DURABLE_H

#include "pgshift/decode.h"

#include <stdbool.h>

/* Committed batches remembered; on overflow the oldest is dropped: the
 * newest one's target position is later, so it covers it. */
#define DURABLE_MAX 64

typedef struct durable {
    /* Committed batches not yet known flushed, oldest first: the source
     * end LSN each one applied, and the target WAL position after its COMMIT. */
    struct {
        pgs_lsn applied;
        pgs_lsn target;
    } unflushed[DURABLE_MAX];
    int nunflushed;
    pgs_lsn durable_lsn; /* the applied LSN known durable */
    pgs_lsn seen_flush;  /* highest target flush position seen so far */
} durable;

/* The starting point: an applied LSN already durable (zeroes nothing else). */
void durable_set(durable *d, pgs_lsn applied);

/* A target flush position read from the target (after a COMMIT, or by a
 * probe): it only ever raises what was seen. */
void durable_saw_flush(durable *d, pgs_lsn flush_lsn);

/* A batch that applied up to `applied` committed; `insert_lsn` and
 * `flush_lsn` are the target's WAL insert and flush positions read right
 * after its COMMIT. An asynchronous commit is durable once the target has
 * flushed past insert_lsn; a synchronous one (`sync`) was flushed before it
 * returned, so flush_lsn already covers it. */
void durable_committed(durable *d, pgs_lsn applied, pgs_lsn insert_lsn, pgs_lsn flush_lsn,
                       bool sync);

/* The applied LSN durable given the target's flush position `target_flush`
 * (or 0: only what durable_saw_flush() showed): the applied LSN of the last
 * batch whose target position is at or below the higher of the two.
 * Forgets the batches it confirms. */
pgs_lsn durable_advance(durable *d, pgs_lsn target_flush);

/* Committed batches not yet known durable. */
static inline int durable_pending(const durable *d)
{
    return d->nunflushed;
}

#endif
