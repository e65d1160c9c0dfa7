/* apply.c: decoded changes -> prepared statements on the target, batched,
 * pipelined, exactly once (see apply.h for the rules). This file holds the
 * applier's lifecycle and the dispatch of each decoded message; the parts
 * are listed in apply_int.h. */
#include "apply_int.h"

#include "pgshift/log.h"
#include "pgshift/pg.h"
#include "pgshift/state.h"

#include <stdlib.h>
#include <string.h>

/* Tags the session with the replication origin named like the slot, so
 * that the walsender can drop pgshift's own writes before decoding them
 * (pgoutput's origin 'none', 16+). Only where it matters, the target being
 * the source database; without the privilege (superuser, or EXECUTE on the
 * pg_replication_origin_* functions) the run goes on without it. */
static void setup_origin(apply_ctx *a, const char *origin)
{
    if (origin == NULL || a->m->plan->target != NULL || PQserverVersion(a->conn) < 160000)
        return;
    char line[512];
    if (!pg_origin_session(a->conn, origin, line, sizeof line)) {
        log_info("apply: no replication origin (%s); the walsender decodes pgshift's own "
                 "writes too, which costs catch-up speed, not correctness",
                 line);
        return;
    }
    a->origin = true;
}

bool apply_has_origin(const apply_ctx *a)
{
    return a->origin;
}

/* A mapped table's expressions are evaluated by the copy on the source and
 * by the apply on the target: with the target in another database, the
 * apply session takes the source session's TimeZone, DateStyle and
 * IntervalStyle, so that a conversion that depends on them (timestamp ->
 * timestamptz, to_char) gives the same values in both. */
static bool same_settings(apply_ctx *a)
{
    bool mapped = false;
    for (int i = 0; i < a->m->ntables; i++)
        mapped = mapped || a->m->tables[i].map.mapped;
    return !mapped || a->m->plan->target == NULL ||
           pg_take_settings(a->m->src, a->conn, "apply: taking the source session's settings");
}

apply_ctx *apply_new(pgs_migration *m, const char *origin)
{
    apply_ctx *a = calloc(1, sizeof *a);
    if (a == NULL)
        return NULL;
    a->m = m;
    a->table_changes = calloc((size_t)m->ntables, sizeof(long));
    if (a->table_changes == NULL)
        goto failed;
    for (int i = 0; i < 3; i++)
        if ((a->inflight[i].table_changes = calloc((size_t)m->ntables, sizeof(long))) == NULL)
            goto failed;
    a->chain_lsn = m->applied_lsn;
    a->conn =
        pg_connect(m->plan->target ? m->plan->target : m->plan->source, "target (apply)", false);
    if (a->conn == NULL)
        goto failed;
    /* Commits do not wait for their WAL flush; apply_durable_lsn() tells
     * which of them the target has flushed, and only those are reported.
     * Non-blocking: nothing here ever waits for the target; the owner's loop
     * watches apply_socket() and calls apply_poll() (see apply.h). */
    if (!state_writer_lock(a->conn, m->row) ||
        !pg_exec(a->conn, "configuring the apply session",
                 "SET application_name = 'pgshift apply'; SET synchronous_commit = off;"
                 " SET lock_timeout = '30s'"))
        goto failed;
    setup_origin(a, origin);
    if (!same_settings(a))
        goto failed;
    /* The reverse stream writes into the old tables what the application
     * wrote into the new ones, where their triggers (and foreign keys) ran
     * already: as a replica, as logical replication's own workers do. A
     * role that may not set it goes on with them firing. */
    if (m->reverse) {
        PGresult *r = PQexec(a->conn, "SET session_replication_role = replica");
        if (PQresultStatus(r) != PGRES_COMMAND_OK)
            log_warn("apply: the reverse stream cannot run as a replica (%s); the old tables' "
                     "triggers fire on the changes it applies",
                     PQresultErrorMessage(r));
        PQclear(r);
    }
    if (PQenterPipelineMode(a->conn) != 1 || PQsetnonblocking(a->conn, 1) != 0) {
        log_error("apply: cannot configure the target session: %s", PQerrorMessage(a->conn));
        goto failed;
    }
    return a;
failed:
    apply_free(a);
    return NULL;
}

void apply_free(apply_ctx *a)
{
    if (a == NULL)
        return;
    for (rel *r = a->rels, *n; r; r = n) {
        n = r->next;
        relmap_free_rel(r);
    }
    if (a->conn)
        PQfinish(a->conn);
    for (size_t i = 0; a->q && i < a->qlen; i++)
        mapdiag_free(a->q[(a->qhead + i) % a->qcap].diag);
    mapdiag_free(a->next_diag);
    free(a->q);
    free(a->values);
    free(a->lengths);
    free(a->formats);
    free(a->text);
    free(a->table_changes);
    for (int i = 0; i < 3; i++)
        free(a->inflight[i].table_changes);
    free(a->abuf);
    free(a->foreign_origins);
    free(a);
}

bool apply_in_xact(const apply_ctx *a)
{
    return a->in_xact;
}

bool apply_in_changed_xact(const apply_ctx *a)
{
    return a->in_xact && a->xact_changed;
}

const apply_stats *apply_get_stats(const apply_ctx *a)
{
    return &a->stats;
}

static bool apply_truncate(apply_ctx *a, const decode_msg *msg)
{
    if (!folds_flush(a))
        return false;
    uint32_t n = msg->u.truncate.nrels;
    const char **tables = malloc(sizeof(char *) * (n ? n : 1));
    if (tables == NULL)
        return false;
    for (uint32_t i = 0; i < n; i++) {
        rel *r = relmap_find(a, msg->u.truncate.relids[i]);
        if (r == NULL) {
            log_error("apply: TRUNCATE of relation %u before its Relation message",
                      msg->u.truncate.relids[i]);
            free(tables);
            return false;
        }
        tables[i] = r->t->tgt.qname;
        a->table_changes[r->t->ord]++;
    }
    char *sql = sqlgen_truncate(tables, (int)n,
                                (msg->u.truncate.flags & DECODE_TRUNCATE_RESTART_IDENTITY) != 0);
    free(tables);
    bool ok = sql != NULL;
    if (ok) {
        a->batch_changes++;
        a->stats.changes++;
        ok = pipe_sent(a, PQsendQueryParams(a->conn, sql, 0, NULL, NULL, NULL, NULL, 0), 'T', NULL);
    }
    free(sql);
    return ok;
}

/* A change to apply: the batch is open for it. */
static bool opens_batch(apply_ctx *a, decode_kind k)
{
    bool change =
        k == DECODE_INSERT || k == DECODE_UPDATE || k == DECODE_DELETE || k == DECODE_TRUNCATE;
    if (!change || !a->in_xact || a->skipping)
        return true;
    a->xact_changed = true;
    return batch_begin(a);
}

bool apply_message(apply_ctx *a, const decode_msg *msg)
{
    if (a->failed)
        return false;
    if (!opens_batch(a, msg->kind)) {
        apply_rollback_batch(a);
        a->failed = true;
        return false;
    }
    bool ok = true;
    switch (msg->kind) {
    case DECODE_BEGIN:
        a->in_xact = true;
        a->xact_changed = false;
        a->xact_final_lsn = msg->u.begin.final_lsn;
        a->skipping = msg->u.begin.final_lsn < a->m->applied_lsn;
        if (a->skipping)
            a->stats.skipped_xacts++;
        /* The target's batch opens at the first change (opens_batch): a
         * transaction with nothing for the plan's tables (14 sends every
         * transaction of the database, pgshift's own commits among them)
         * writes nothing, so pgshift's commits do not feed themselves. */
        break;
    case DECODE_COMMIT:
        if (!a->in_xact) {
            log_error("apply: Commit without Begin at %s",
                      decode_lsn_format(msg->u.commit.commit_lsn, (char[18]){0}));
            ok = false;
            break;
        }
        a->in_xact = false;
        /* An empty transaction moves nothing: with no batch open it is
         * applied as it is (nothing to write), and the applier stays idle. */
        if (!a->skipping && a->xact_changed) {
            a->batch_end_lsn = msg->u.commit.end_lsn;
            a->batch_commit_time = msg->u.commit.commit_time;
            a->batch_xacts++;
            a->stats.xacts++;
        }
        a->skipping = false;
        batch_commit_deferred(a);
        break;
    case DECODE_RELATION:
        /* A transaction skipped whole may name a table by a name it no
         * longer has (the reverse stream of a rollback window starts in
         * the cutover's renames): not mapped, and a change of it later
         * comes after a Relation message of its own. */
        if (a->skipping &&
            migration_find_source(
                a->m, msg->u.relation.nspname[0] ? msg->u.relation.nspname : "pg_catalog",
                msg->u.relation.relname) == NULL)
            break;
        ok = relmap_on_relation(a, &msg->u.relation);
        break;
    case DECODE_INSERT:
        if (!a->skipping)
            ok = change_apply(a, 'I', msg->u.insert.relid, &msg->u.insert.newtup, NULL);
        break;
    case DECODE_UPDATE:
        if (!a->skipping)
            ok = change_apply(a, 'U', msg->u.update.relid, &msg->u.update.newtup,
                              msg->u.update.old_kind ? &msg->u.update.oldtup
                                                     : &msg->u.update.newtup);
        break;
    case DECODE_DELETE:
        if (!a->skipping)
            ok = change_apply(a, 'D', msg->u.delete_.relid, NULL, &msg->u.delete_.oldtup);
        break;
    case DECODE_TRUNCATE:
        if (!a->skipping)
            ok = apply_truncate(a, msg);
        break;
    case DECODE_MESSAGE: /* the cutover's fence will be read here (issue #4) */
    case DECODE_TYPE:
    case DECODE_ORIGIN:
        break;
    default:
        log_error("apply: unexpected %s message", decode_kind_name(msg->kind));
        ok = false;
    }
    if (!ok || a->failed) {
        apply_rollback_batch(a);
        a->failed = true;
        return false;
    }
    return true;
}
