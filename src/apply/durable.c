/* durable.c: the durable-LSN tracker (see durable.h). */
#include "durable.h"

#include <string.h>

void durable_set(durable *d, pgs_lsn applied)
{
    d->durable_lsn = applied;
}

void durable_saw_flush(durable *d, pgs_lsn flush_lsn)
{
    if (flush_lsn > d->seen_flush)
        d->seen_flush = flush_lsn;
}

void durable_committed(durable *d, pgs_lsn applied, pgs_lsn insert_lsn, pgs_lsn flush_lsn,
                       bool sync)
{
    if (d->nunflushed == DURABLE_MAX) {
        /* Keep the newest; the oldest entries' positions are covered by it. */
        memmove(&d->unflushed[0], &d->unflushed[1],
                sizeof d->unflushed[0] * (size_t)(d->nunflushed - 1));
        d->nunflushed--;
    }
    d->unflushed[d->nunflushed].applied = applied;
    d->unflushed[d->nunflushed].target = sync ? flush_lsn : insert_lsn;
    d->nunflushed++;
}

pgs_lsn durable_advance(durable *d, pgs_lsn target_flush)
{
    if (target_flush < d->seen_flush)
        target_flush = d->seen_flush;
    int i = 0;
    while (i < d->nunflushed && d->unflushed[i].target <= target_flush)
        d->durable_lsn = d->unflushed[i++].applied;
    if (i > 0) {
        memmove(&d->unflushed[0], &d->unflushed[i],
                sizeof d->unflushed[0] * (size_t)(d->nunflushed - i));
        d->nunflushed -= i;
    }
    return d->durable_lsn;
}
