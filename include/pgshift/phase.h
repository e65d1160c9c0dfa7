/* phase.h: the migration's phases and the one table of legal transitions
 * between them (src/state/phase.c), in the pg_auto_failover style: each row
 * is {from, event, to, persist}. A phase changes only through a row of the
 * table; a (phase, event) pair with no row is a bug in the caller, which is
 * logged and refused.
 *
 *   planned --copy_start--> copying --copy_done--> catching_up
 *   copying --copy_start--> copying                 (an interrupted copy restarts)
 *   catching_up --lag_ok--> ready --lag_high--> catching_up
 *   catching_up, ready --pause--> paused --resume--> catching_up
 *   catching_up, ready --cutover_lock--> cutting_over            (memory only)
 *   cutting_over --cutover_released--> ready                     (memory only)
 *   cutting_over --swapped--> done        (written by the swap transaction)
 *   copying, catching_up, ready, paused, cutting_over, failed --error--> failed
 *   failed, paused --lag_ok / lag_high--> ready / catching_up    (a new run)
 *
 * `done` is final: no event leaves it.
 */
#ifndef PGSHIFT_PHASE_H
#define PGSHIFT_PHASE_H

#include <stdbool.h>

typedef enum pgs_phase {
    PGS_PHASE_NONE = 0, /* no state yet ("planned") */
    PGS_PHASE_COPYING,
    PGS_PHASE_CATCHING_UP,
    PGS_PHASE_READY,
    PGS_PHASE_CUTTING_OVER,
    PGS_PHASE_DONE,
    PGS_PHASE_PAUSED,
    PGS_PHASE_FAILED,
    PGS_PHASE_REVERSIBLE,  /* cut over; the reverse stream keeps the old tables current */
    PGS_PHASE_ROLLED_BACK, /* swapped back during the rollback window */
    PGS_PHASE_COUNT
} pgs_phase;

typedef enum pgs_event {
    PGS_EV_COPY_START = 0,     /* the snapshot copy starts (or starts over) */
    PGS_EV_COPY_DONE,          /* every table copied, indexes built */
    PGS_EV_LAG_OK,             /* a lag sample at or under cutover.max_lag */
    PGS_EV_LAG_HIGH,           /* a lag sample over cutover.max_lag */
    PGS_EV_PAUSE,              /* `pgshift pause` */
    PGS_EV_RESUME,             /* `pgshift resume` */
    PGS_EV_CUTOVER_LOCK,       /* a cutover attempt starts taking its locks */
    PGS_EV_CUTOVER_RELEASED,   /* the attempt ended without a swap, locks released */
    PGS_EV_SWAPPED,            /* the swap transaction committed */
    PGS_EV_ERROR,              /* the run stops on an error */
    PGS_EV_SWAPPED_REVERSIBLE, /* the swap committed, with a rollback window */
    PGS_EV_WINDOW_END,         /* the rollback window ended (or `cleanup` ended it) */
    PGS_EV_ROLLED_BACK,        /* the swap back committed */
    PGS_EV_COUNT
} pgs_event;

/* The phase's name as stored in pgshift.migrations.phase and shown to
 * operators; "unknown" for a value out of range. */
const char *pgs_phase_name(pgs_phase phase);
/* The phase of that name; PGS_PHASE_NONE for an unknown name. */
pgs_phase pgs_phase_parse(const char *name);
const char *pgs_event_name(pgs_event ev);

/* The transition table, pure: true and *to / *persist set when (from, ev)
 * has a row; false otherwise. *persist means the new phase is written to
 * pgshift.migrations (false: the phase lives in memory only). */
bool phase_next(pgs_phase from, pgs_event ev, pgs_phase *to, bool *persist);

/* The phase as the status protocol's enum value (proto/pgshift.proto,
 * Pgshift__Phase), by an explicit table; 0 (PHASE_UNKNOWN) out of range. */
int phase_to_proto(pgs_phase phase);
/* The phase name of a protocol enum value; "unknown" for one with no phase. */
const char *phase_proto_name(int proto);
/* The number of the pgshift_phase metric (0 planned, 1 copying, 2
 * catching_up, 3 ready, 4 cutting_over, 5 done, 6 paused, 7 failed) for a
 * protocol enum value; 0 for one with no phase. */
int phase_metric_from_proto(int proto);

#endif
