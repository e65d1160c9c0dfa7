/* phase.c: the phase names and the transition table (phase.h). Pure: no
 * connection, no logging; state.c applies a transition to a migration. */
#include "pgshift/phase.h"

#include "pgshift.pb-c.h"

#include <stddef.h>
#include <string.h>

#define N(a) (sizeof(a) / sizeof((a)[0]))

/* One row per phase: its stored name, its protocol value and its number in
 * the pgshift_phase metric. The only list of phases. */
static const struct {
    const char *name;
    int proto;
    int metric;
} phases[PGS_PHASE_COUNT] = {
    [PGS_PHASE_NONE] = {"planned", PGSHIFT__PHASE__PHASE_PLANNED, 0},
    [PGS_PHASE_COPYING] = {"copying", PGSHIFT__PHASE__PHASE_COPYING, 1},
    [PGS_PHASE_CATCHING_UP] = {"catching_up", PGSHIFT__PHASE__PHASE_CATCHING_UP, 2},
    [PGS_PHASE_READY] = {"ready", PGSHIFT__PHASE__PHASE_READY, 3},
    [PGS_PHASE_CUTTING_OVER] = {"cutting_over", PGSHIFT__PHASE__PHASE_CUTTING_OVER, 4},
    [PGS_PHASE_DONE] = {"done", PGSHIFT__PHASE__PHASE_DONE, 5},
    [PGS_PHASE_PAUSED] = {"paused", PGSHIFT__PHASE__PHASE_PAUSED, 6},
    [PGS_PHASE_FAILED] = {"failed", PGSHIFT__PHASE__PHASE_FAILED, 7},
    [PGS_PHASE_REVERSIBLE] = {"reversible", PGSHIFT__PHASE__PHASE_REVERSIBLE, 8},
    [PGS_PHASE_ROLLED_BACK] = {"rolled_back", PGSHIFT__PHASE__PHASE_ROLLED_BACK, 9},
};

static const char *const events[PGS_EV_COUNT] = {
    [PGS_EV_COPY_START] = "copy_start",
    [PGS_EV_COPY_DONE] = "copy_done",
    [PGS_EV_LAG_OK] = "lag_ok",
    [PGS_EV_LAG_HIGH] = "lag_high",
    [PGS_EV_PAUSE] = "pause",
    [PGS_EV_RESUME] = "resume",
    [PGS_EV_CUTOVER_LOCK] = "cutover_lock",
    [PGS_EV_CUTOVER_RELEASED] = "cutover_released",
    [PGS_EV_SWAPPED] = "swapped",
    [PGS_EV_ERROR] = "error",
    [PGS_EV_SWAPPED_REVERSIBLE] = "swapped_reversible",
    [PGS_EV_WINDOW_END] = "window_end",
    [PGS_EV_ROLLED_BACK] = "rolled_back",
};

/* The transitions. Anything not here is refused. */
static const struct {
    pgs_phase from;
    pgs_event ev;
    pgs_phase to;
    bool persist;
} table[] = {
    {PGS_PHASE_NONE, PGS_EV_COPY_START, PGS_PHASE_COPYING, true},
    /* A copy interrupted by a crash starts over: the rows are reset. */
    {PGS_PHASE_COPYING, PGS_EV_COPY_START, PGS_PHASE_COPYING, true},
    {PGS_PHASE_COPYING, PGS_EV_COPY_DONE, PGS_PHASE_CATCHING_UP, true},

    {PGS_PHASE_CATCHING_UP, PGS_EV_LAG_OK, PGS_PHASE_READY, true},
    {PGS_PHASE_READY, PGS_EV_LAG_HIGH, PGS_PHASE_CATCHING_UP, true},
    /* A new run of a migration that stopped failed or paused: the first
     * lag sample says where it stands (a pause does not outlive its run). */
    {PGS_PHASE_FAILED, PGS_EV_LAG_OK, PGS_PHASE_READY, true},
    {PGS_PHASE_FAILED, PGS_EV_LAG_HIGH, PGS_PHASE_CATCHING_UP, true},
    {PGS_PHASE_PAUSED, PGS_EV_LAG_OK, PGS_PHASE_READY, true},
    {PGS_PHASE_PAUSED, PGS_EV_LAG_HIGH, PGS_PHASE_CATCHING_UP, true},

    {PGS_PHASE_CATCHING_UP, PGS_EV_PAUSE, PGS_PHASE_PAUSED, true},
    {PGS_PHASE_READY, PGS_EV_PAUSE, PGS_PHASE_PAUSED, true},
    {PGS_PHASE_PAUSED, PGS_EV_RESUME, PGS_PHASE_CATCHING_UP, true},

    /* cutting_over lives in memory: a crash leaves the persisted phase as
     * it was, and the swap writes `done` in its own transaction. The lag
     * the attempt measured itself may be under max_lag before a stats
     * sample said so, hence from catching_up too. */
    {PGS_PHASE_CATCHING_UP, PGS_EV_CUTOVER_LOCK, PGS_PHASE_CUTTING_OVER, false},
    {PGS_PHASE_READY, PGS_EV_CUTOVER_LOCK, PGS_PHASE_CUTTING_OVER, false},
    {PGS_PHASE_CUTTING_OVER, PGS_EV_CUTOVER_RELEASED, PGS_PHASE_READY, false},
    {PGS_PHASE_CUTTING_OVER, PGS_EV_SWAPPED, PGS_PHASE_DONE, true},
    /* With rollback.window: the old tables are kept current until the
     * window ends (then done), or the swap back (src/run/reverse.c). A
     * migration rolled back can be run forward again from a new copy. */
    {PGS_PHASE_CUTTING_OVER, PGS_EV_SWAPPED_REVERSIBLE, PGS_PHASE_REVERSIBLE, true},
    {PGS_PHASE_REVERSIBLE, PGS_EV_WINDOW_END, PGS_PHASE_DONE, true},
    {PGS_PHASE_REVERSIBLE, PGS_EV_ROLLED_BACK, PGS_PHASE_ROLLED_BACK, true},
    {PGS_PHASE_ROLLED_BACK, PGS_EV_COPY_START, PGS_PHASE_COPYING, true},

    {PGS_PHASE_COPYING, PGS_EV_ERROR, PGS_PHASE_FAILED, true},
    {PGS_PHASE_CATCHING_UP, PGS_EV_ERROR, PGS_PHASE_FAILED, true},
    {PGS_PHASE_READY, PGS_EV_ERROR, PGS_PHASE_FAILED, true},
    {PGS_PHASE_PAUSED, PGS_EV_ERROR, PGS_PHASE_FAILED, true},
    {PGS_PHASE_CUTTING_OVER, PGS_EV_ERROR, PGS_PHASE_FAILED, true},
    /* A rerun that fails again before its first lag sample: a new error. */
    {PGS_PHASE_FAILED, PGS_EV_ERROR, PGS_PHASE_FAILED, true},
};

const char *pgs_phase_name(pgs_phase phase)
{
    if ((unsigned)phase >= N(phases))
        return "unknown";
    return phases[phase].name;
}

pgs_phase pgs_phase_parse(const char *name)
{
    for (size_t i = 0; name && i < N(phases); i++)
        if (strcmp(name, phases[i].name) == 0)
            return (pgs_phase)i;
    return PGS_PHASE_NONE;
}

const char *pgs_event_name(pgs_event ev)
{
    if ((unsigned)ev >= N(events))
        return "unknown";
    return events[ev];
}

bool phase_next(pgs_phase from, pgs_event ev, pgs_phase *to, bool *persist)
{
    for (size_t i = 0; i < N(table); i++)
        if (table[i].from == from && table[i].ev == ev) {
            if (to)
                *to = table[i].to;
            if (persist)
                *persist = table[i].persist;
            return true;
        }
    return false;
}

int phase_to_proto(pgs_phase phase)
{
    if ((unsigned)phase >= N(phases))
        return PGSHIFT__PHASE__PHASE_UNKNOWN;
    return phases[phase].proto;
}

int phase_metric_from_proto(int proto)
{
    for (size_t i = 0; i < N(phases); i++)
        if (phases[i].proto == proto)
            return phases[i].metric;
    return 0;
}

const char *phase_proto_name(int proto)
{
    for (size_t i = 0; i < N(phases); i++)
        if (phases[i].proto == proto)
            return phases[i].name;
    return "unknown";
}
