/* batch.c: target transactions (batches). Several source transactions
 * share one; its COMMIT, with the progress row, is sent without waiting,
 * at most one batch is in flight, and a batch completes when the WAL
 * position read after its COMMIT arrives (see apply.h). */
#include "apply_int.h"

#include "pgshift/log.h"
#include "pgshift/pg.h"
#include "pgshift/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Where the target's standbys that fail over with it (17+:
 * synchronized_standby_slots) have flushed its WAL, or NULL: a commit they
 * have not got may vanish in a failover while the slot, synchronized to
 * the standby, has moved past its changes. Only what they have is
 * confirmed (apply.h: apply_durable_lsn). */
#define STANDBY_FLUSH                                                                              \
    "(SELECT min(restart_lsn) FROM pg_replication_slots WHERE slot_type = 'physical' AND"          \
    " slot_name = ANY (string_to_array(replace(current_setting('synchronized_standby_slots',"      \
    " true), ' ', ''), ',')))"

bool batch_begin(apply_ctx *a)
{
    if (a->batch_open)
        return true;
    if (!pipe_send_sql(a, "BEGIN", 0, NULL))
        return false;
    a->batch_open = true;
    a->batch_started_ms = now_ms();
    a->batch_changes = a->batch_xacts = 0;
    memset(a->table_changes, 0, sizeof(long) * (size_t)a->m->ntables);
    return true;
}

void apply_rollback_batch(apply_ctx *a)
{
    folds_discard(a);
    if (a->batch_open) {
        PQsendQueryParams(a->conn, "ROLLBACK", 0, NULL, NULL, NULL, NULL, 0);
        pipe_push(a, 'X', NULL);
        PQpipelineSync(a->conn);
        pipe_push(a, 'S', NULL);
        a->syncs++;
        pipe_push_out(a);
    }
    /* Batches already committed and in flight complete (or fail) as their
     * results arrive (apply_poll). */
    a->commit_wanted = a->commit_wanted_sync = false;
    a->batch_open = false;
    a->in_xact = false;
    a->skipping = false;
}

/* The oldest in-flight batch committed: its position is now applied, and
 * durable once the target has flushed past `insert_lsn`, read right after its
 * COMMIT; a synchronous commit was flushed before it returned, so the
 * flush position read after it already covers it. */
void batch_done(apply_ctx *a, pgs_lsn insert_lsn, pgs_lsn flush_lsn, bool standby_capped)
{
    durable_saw_flush(&a->durable, flush_lsn);
    if (a->ninflight == 0)
        return;
    inflight *b = &a->inflight[0];
    a->m->applied_lsn = b->end_lsn;
    /* A synchronous commit is covered by the local flush read after it,
     * not by a standby's. */
    durable_committed(&a->durable, b->end_lsn, insert_lsn, flush_lsn, b->sync && !standby_capped);
    a->m->applied_xacts += b->xacts;
    a->m->applied_changes += b->changes;
    for (int i = 0; i < a->m->ntables; i++)
        a->m->tables[i].changes_applied += b->table_changes[i];
    a->stats.last_commit_time = b->commit_time;
    char lsn[18];
    char il[18], fl[18];
    log_debug("apply: committed %ld transaction(s), %ld change(s) up to %s (%s; target insert %s, "
              "flush %s%s)",
              b->xacts, b->changes, decode_lsn_format(b->end_lsn, lsn),
              b->sync ? "synchronous" : "asynchronous", decode_lsn_format(insert_lsn, il),
              decode_lsn_format(flush_lsn, fl), standby_capped ? " as the standbys have it" : "");
    long *tc = b->table_changes;
    memmove(&a->inflight[0], &a->inflight[1], sizeof(inflight) * (size_t)(a->ninflight - 1));
    a->ninflight--;
    a->inflight[a->ninflight].table_changes = tc;
}

/* The batch's progress row (chained to the previous batch's position) and
 * its per-table change counts, in the batch's transaction. */
static bool send_progress(apply_ctx *a)
{
    char lsn[18], prev[18], ts[40], xacts[24], changes[24];
    decode_lsn_format(a->batch_end_lsn, lsn);
    decode_lsn_format(a->chain_lsn, prev);
    snprintf(ts, sizeof ts, "%.6f", (double)decode_ts_to_unix_us(a->batch_commit_time) / 1e6);
    snprintf(xacts, sizeof xacts, "%ld", a->batch_xacts);
    snprintf(changes, sizeof changes, "%ld", a->batch_changes);
    if (!pipe_send_sql(a, store_sql_advance_applied(), 6,
                       (const char *[]){a->m->row, lsn, ts, xacts, changes, prev}))
        return false;
    for (int i = 0; i < a->m->ntables; i++) {
        if (a->table_changes[i] == 0)
            continue;
        char ord[16], n[24];
        snprintf(ord, sizeof ord, "%d", i);
        snprintf(n, sizeof n, "%ld", a->table_changes[i]);
        if (!pipe_send_sql(a, store_sql_add_table_changes(), 3,
                           (const char *[]){a->m->row, ord, n}))
            return false;
    }
    return true;
}

/* Sends the batch's progress row and COMMIT without waiting for them: the
 * server runs this batch while the next one is decoded and folded. The
 * progress UPDATE is chained to the previous batch's position, so if that
 * batch failed, this one fails too instead of committing past it. */
bool apply_commit_batch(apply_ctx *a, bool sync)
{
    if (!a->batch_open)
        return true;
    /* A transaction begun with no change yet has put nothing in the batch
     * (it opens at the first change): the batch holds whole transactions. */
    if (a->in_xact && a->xact_changed) {
        log_error("apply: internal error: commit requested inside a source transaction");
        return false;
    }
    /* At most one batch in flight: the one before must have completed. If
     * it has not, this batch stays open (and may grow) until it has:
     * apply_poll commits it then. */
    if (a->ninflight > 0) {
        a->commit_wanted = true;
        a->commit_wanted_sync = a->commit_wanted_sync || sync;
        return !a->failed;
    }
    a->commit_wanted = a->commit_wanted_sync = false;
    if (!folds_flush(a))
        goto failed;
    if (!send_progress(a))
        goto failed;
    if (sync && !pipe_send_sql(a, "SET LOCAL synchronous_commit = local", 0, NULL))
        goto failed;
    if (!pipe_sent(a, PQsendQueryParams(a->conn, "COMMIT", 0, NULL, NULL, NULL, NULL, 0), 'c',
                   NULL))
        goto failed;
    inflight *b = &a->inflight[a->ninflight++];
    b->sync = sync;
    b->end_lsn = a->batch_end_lsn;
    b->commit_time = a->batch_commit_time;
    b->xacts = a->batch_xacts;
    b->changes = a->batch_changes;
    memcpy(b->table_changes, a->table_changes, sizeof(long) * (size_t)a->m->ntables);
    a->chain_lsn = a->batch_end_lsn;
    a->batch_open = false;
    if (!pipe_sent(
            a,
            PQsendQueryParams(
                a->conn,
                "SELECT pg_current_wal_insert_lsn(), pg_current_wal_flush_lsn(), " STANDBY_FLUSH, 0,
                NULL, NULL, NULL, NULL, 0),
            'L', NULL) ||
        (a->origin &&
         !pipe_sent(a,
                    PQsendQueryParams(a->conn, "SELECT " PG_SQL_OTHER_ORIGINS("$1"), 1, NULL,
                                      (const char *[]){a->m->slot}, NULL, NULL, 0),
                    'O', NULL)) ||
        PQpipelineSync(a->conn) != 1 || !pipe_push(a, 'S', NULL))
        goto failed;
    a->syncs++;
    a->since_sync = 0;
    if (!pipe_push_out(a)) {
        log_error("apply: sending to the target failed: %s", PQerrorMessage(a->conn));
        a->failed = true;
        goto failed;
    }
    return !a->failed;
failed:
    apply_rollback_batch(a);
    return false;
}

/* A commit asked for while the previous batch was in flight, once that
 * batch has completed and the stream is between source transactions. */
void batch_commit_deferred(apply_ctx *a)
{
    if (!a->commit_wanted || a->ninflight > 0 || (a->in_xact && a->xact_changed) || a->failed)
        return;
    if (!a->batch_open) {
        a->commit_wanted = a->commit_wanted_sync = false;
        return;
    }
    apply_commit_batch(a, a->commit_wanted_sync);
}

bool apply_batch_open(const apply_ctx *a)
{
    return a->batch_open;
}

double apply_batch_age_ms(const apply_ctx *a)
{
    return a->batch_open ? now_ms() - a->batch_started_ms : 0;
}

long apply_batch_changes(const apply_ctx *a)
{
    return a->batch_changes;
}

/* Queues the query for where the target's WAL is flushed (and what the
 * standbys in synchronized_standby_slots have), its result read as 'F'. */
static bool send_flush_probe(apply_ctx *a)
{
    if (!pipe_sent(a,
                   PQsendQueryParams(a->conn, "SELECT pg_current_wal_flush_lsn(), " STANDBY_FLUSH,
                                     0, NULL, NULL, NULL, NULL, 0),
                   'F', NULL) ||
        !pipe_sync(a))
        return false;
    a->probing = true;
    return true;
}

/* Asks the target where its WAL is flushed, so that asynchronously
 * committed batches can be confirmed (apply_durable_lsn); only between
 * batches, and one probe at a time. */
bool apply_probe_flush(apply_ctx *a)
{
    if (a->failed || a->batch_open || a->probing || durable_pending(&a->durable) == 0)
        return true;
    return send_flush_probe(a);
}

/* Makes every committed batch durable now, for a stop or a pause whose last
 * batches were committed asynchronously (their flush would otherwise wait
 * for the target's walwriter, and the final position confirmed to the slot
 * would stop short of them): a synchronous commit of a one-row write
 * flushes the target's WAL past all of them, and the flush probe read
 * after it says so. Only between batches; nothing when all are durable. */
bool apply_sync_point(apply_ctx *a)
{
    if (a->failed || a->batch_open || a->probing || durable_pending(&a->durable) == 0)
        return true;
    log_info("apply: %d batch(es) committed asynchronously made durable by a synchronous "
             "commit, so that the position confirmed last covers them",
             durable_pending(&a->durable));
    return pipe_send_sql(a, "BEGIN", 0, NULL) &&
           pipe_send_sql(a, "SET LOCAL synchronous_commit = local", 0, NULL) &&
           pipe_send_sql(a, "UPDATE pgshift.migrations SET updated_at = now() WHERE name = $1", 1,
                         (const char *[]){a->m->row}) &&
           pipe_send_sql(a, "COMMIT", 0, NULL) && send_flush_probe(a);
}

bool apply_send_state(apply_ctx *a, const char *sql, int nparams, const char *const *params)
{
    if (a->failed)
        return false;
    if (!pipe_sent(a, PQsendQueryParams(a->conn, sql, nparams, NULL, params, NULL, NULL, 0), 'W',
                   NULL))
        return false;
    /* Inside an open batch it commits with it; alone, it is its own
     * transaction. */
    return a->batch_open || pipe_sync(a);
}

bool apply_idle(const apply_ctx *a)
{
    return !a->failed && !a->batch_open && !a->in_xact && a->qlen == 0 && !a->unsent &&
           durable_pending(&a->durable) == 0;
}

pgs_lsn apply_durable_lsn(apply_ctx *a, pgs_lsn target_flush)
{
    return durable_advance(&a->durable, target_flush);
}

void apply_set_durable(apply_ctx *a, pgs_lsn lsn)
{
    durable_set(&a->durable, lsn);
}

void apply_chain_to(apply_ctx *a, pgs_lsn lsn)
{
    a->chain_lsn = lsn;
}

bool apply_commit_streamed(apply_ctx *a, const decode_msg *commit)
{
    if (a->failed || !a->in_xact || !a->batch_open)
        return false;
    a->in_xact = false;
    a->batch_end_lsn = commit->u.commit.end_lsn;
    a->batch_commit_time = commit->u.commit.commit_time;
    a->batch_xacts++;
    a->stats.xacts++;
    return apply_commit_batch(a, true);
}

pgs_lsn apply_origin_clean(const apply_ctx *a, const char **foreign)
{
    if (foreign)
        *foreign = a->foreign_origins;
    return a->origin_clean;
}
