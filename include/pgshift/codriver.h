/* codriver.h: the cutover attempt driver (src/cutover/driver.c): when a
 * cutover is wanted (run --auto-cutover, or `pgshift cutover`), it waits for
 * the lag to allow one and for postponing to end, brings the applier to
 * rest, runs one attempt (cutover.h: lock, fence, swap) and on failure
 * retries with backoff up to cutover.attempts, then gives up with the
 * migration still streaming. It runs on the owner's loop and reaches the
 * applier, the stream and the phase only through the ops it is given. */
#ifndef PGSHIFT_CODRIVER_H
#define PGSHIFT_CODRIVER_H

#include "pgshift/cutover.h"
#include "pgshift/decode.h"
#include "pgshift/migration.h"

#include <stdbool.h>
#include <uv.h>

typedef struct codriver codriver;

typedef struct codriver_ops {
    void *arg;
    /* Hold (true) or release (false) the stream: while held no message is
     * delivered to the applier. */
    void (*hold)(void *arg, bool on);
    /* Commits the applier's open batch, if any. False: the apply failed
     * (the owner stops the run). */
    bool (*commit)(void *arg, bool sync);
    /* The applier has nothing outstanding: its applied position is final. */
    bool (*at_rest)(void *arg);
    bool (*apply_failed)(void *arg);
    /* Between source transactions, streaming, not paused: an attempt may start. */
    bool (*can_start)(void *arg);
    /* The applied position, or the keepalive position when idle. */
    pgs_lsn (*applied)(void *arg);
    /* What the applier can apply, in source WAL bytes per second (0: not
     * measured yet): cutover.max_block's estimate of the time under lock. */
    double (*apply_capacity)(void *arg);
    /* Asks for the source's insert position; the owner answers with
     * codriver_source_lsn() (or not, when it cannot now). */
    void (*ask_lsn)(void *arg);
    /* A phase event (phase.h); false: the owner is stopping. */
    bool (*phase)(void *arg, pgs_event ev, const char *detail);
    /* A hook event (cutover_started, cutover_done). */
    void (*event)(void *arg, const char *name);
    /* The outcome of a cutover that was requested (codriver_want(..., true)). */
    void (*outcome)(void *arg, bool ok, const char *msg);
    /* The swap is done (exit 0) or the run must stop (exit 1). */
    void (*stop)(void *arg, int code);
} codriver_ops;

/* What the status shows of the cutover. */
typedef struct codriver_info {
    int attempts;
    double lock_wait_ms;
    double last_window_ms;          /* what the application waited in the last attempt */
    const cutover_blocker *blocker; /* NULL: none seen */
    bool postponed;
    const char *blocked; /* why an automatic cutover waits for the operator, or NULL */
} codriver_info;

codriver *codriver_new(uv_loop_t *loop, pgs_migration *m, const codriver_ops *ops);
/* Releases locks still held and closes the attempt's connections. */
void codriver_free(codriver *d);

/* A cutover is wanted; `requested`: by `pgshift cutover`, which gets the
 * outcome (and is never postponed). False when a request already waits. */
bool codriver_want(codriver *d, bool requested);
bool codriver_requested(const codriver *d);
/* The source's insert position the driver asked for (ops->ask_lsn). */
void codriver_source_lsn(codriver *d, pgs_lsn source_lsn);
/* The applier reports progress: an attempt waiting for it to rest goes on. */
void codriver_applier_progress(codriver *d);
/* Every message the stream delivers, after the applier took it: the fence
 * of the attempt in progress starts the swap. */
void codriver_message(codriver *d, const decode_msg *msg);
/* Locks are held or about to be (pause and abort refuse meanwhile). */
bool codriver_busy(const codriver *d);
/* The run stops: releases the locks of an attempt in progress. */
void codriver_abandon(codriver *d);
/* `pgshift postpone` (1), `unpostpone` (-1); 0 follows the plan. */
void codriver_hold_cmd(codriver *d, int hold);
codriver_info codriver_get_info(const codriver *d);

#endif
