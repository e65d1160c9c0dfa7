/* state.c: the migration's persistent state in schema `pgshift` of the
 * target database, so that a restart from any machine resumes, and the one
 * way a phase changes (state_transition, over the table in phase.c). The
 * applied position is written by the applier in its own transactions
 * (src/apply/batch.c); other statements on the schema are in store.c. */
#include "pgshift/migration.h"

#include "pgshift/log.h"
#include "pgshift/pg.h"
#include "pgshift/store.h"
#include "pgshift/state.h"

#include <jansson.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

bool state_ensure_schema(pgs_migration *m)
{
    /* Concurrent CREATE ... IF NOT EXISTS can still collide; the advisory
     * lock taken first (state_lock) serialises pgshift runs. */
    return store_ensure_schema(m->tgt);
}

bool state_lock(pgs_migration *m)
{
    const char *p[1] = {m->plan->name};
    bool got = false;
    /* A crashed run's session can linger a moment: retry for a few seconds. */
    for (int i = 0; i < 25 && !got; i++) {
        if (i > 0)
            usleep(200000);
        char *v = pg_query_value(m->tgt, "taking the migration lock",
                                 "SELECT pg_try_advisory_lock(hashtext('pgshift'), hashtext($1))",
                                 1, p, NULL);
        if (v == NULL)
            return false;
        got = strcmp(v, "t") == 0;
        free(v);
    }
    if (!got) {
        char *who = pg_query_value(
            m->tgt, "finding the lock holder",
            "SELECT coalesce(string_agg(a.pid || ' on ' || coalesce(a.client_addr::text, 'local')"
            "       || ' since ' || date_trunc('second', a.backend_start)::text, ', '), 'unknown')"
            "  FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
            " WHERE l.locktype = 'advisory' AND l.classid = hashtext('pgshift')::oid"
            "   AND l.objid = hashtext($1)::oid AND l.granted",
            1, p, NULL);
        log_error("migration %s: another pgshift run is already running it (backend %s); stop "
                  "that one first",
                  m->plan->name, who ? who : "unknown");
        free(who);
    }
    return got && state_earlier_writers_gone(m);
}

#define WRITER_LOCK            "hashtext('pgshift writer'), hashtext($1)"
#define EARLIER_WRITERS_WAIT_S 10

bool state_writer_lock(PGconn *conn, const char *row)
{
    const char *p[1] = {row};
    PGresult *res = pg_query(conn, "taking the migration's writer lock",
                             "SELECT pg_advisory_lock_shared(" WRITER_LOCK ")", 1, p);
    PQclear(res);
    return res != NULL;
}

/* True when no other session holds the writer lock (taken and let go at
 * once); *ok false when the query failed. */
static bool writers_none(pgs_migration *m, bool *ok)
{
    const char *p[1] = {m->row};
    char *v = pg_query_value(m->tgt, "looking for an earlier run's sessions",
                             "SELECT CASE WHEN pg_try_advisory_lock(" WRITER_LOCK ")"
                             "  THEN pg_advisory_unlock(" WRITER_LOCK ") ELSE false END",
                             1, p, NULL);
    *ok = v != NULL;
    bool none = v && strcmp(v, "t") == 0;
    free(v);
    return none;
}

/* "pid 123 (active), pid 456 (idle in transaction)" of the other sessions
 * holding it; with `terminate`, each is also asked to end ("pid 123
 * (active, ended)"). */
static char *writers_list(pgs_migration *m, bool terminate)
{
    const char *p[2] = {m->row, terminate ? "t" : "f"};
    return pg_query_value(
        m->tgt, "finding an earlier run's sessions",
        "SELECT coalesce(string_agg(format('pid %s (%s%s)', a.pid, coalesce(a.state, '?'),"
        "         CASE WHEN $2::bool THEN ', ' || CASE WHEN pg_terminate_backend(a.pid)"
        "              THEN 'ended' ELSE 'not ended' END ELSE '' END), ', '), 'none')"
        "  FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
        " WHERE l.locktype = 'advisory' AND l.classid = hashtext('pgshift writer')::oid"
        "   AND l.objid = hashtext($1)::oid AND l.objsubid = 2 AND l.granted"
        "   AND l.pid <> pg_backend_pid()",
        2, p, NULL);
}

bool state_earlier_writers_gone(pgs_migration *m)
{
    bool ok = true;
    if (writers_none(m, &ok))
        return true;
    if (!ok)
        return false;
    char *who = writers_list(m, false);
    log_info("migration %s: waiting for the session(s) of an earlier run to end before its "
             "progress is read: %s",
             m->row, who ? who : "unknown");
    free(who);
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < EARLIER_WRITERS_WAIT_S * 20; i++) {
            usleep(50000);
            if (writers_none(m, &ok)) {
                log_info("migration %s: the earlier run's sessions have ended", m->row);
                return true;
            }
            if (!ok)
                return false;
        }
        if (round == 0) {
            who = writers_list(m, true);
            log_warn("migration %s: an earlier run's session(s) still hold the writer lock after "
                     "%d s; ending them (their open transactions roll back whole): %s",
                     m->row, EARLIER_WRITERS_WAIT_S, who ? who : "unknown");
            free(who);
        }
    }
    who = writers_list(m, false);
    log_error("migration %s: session(s) of an earlier run still write its tables (%s); end them "
              "(pg_terminate_backend) and run again",
              m->row, who ? who : "unknown");
    free(who);
    return false;
}

bool state_load(pgs_migration *m)
{
    m->has_state = false;
    /* Nothing is read from a schema another role controls. */
    int schema = store_check_schema(m->tgt);
    if (schema < 0)
        return false;
    if (schema == 0)
        return true;
    char *exists =
        pg_query_value(m->tgt, "reading the state",
                       "SELECT to_regclass('pgshift.migrations') IS NOT NULL", 0, NULL, NULL);
    if (exists == NULL)
        return false;
    bool have_table = strcmp(exists, "t") == 0;
    free(exists);
    if (!have_table)
        return true;

    const char *p[1] = {m->row};
    PGresult *res =
        pg_query(m->tgt, "reading the state",
                 "SELECT phase, consistent_lsn, applied_lsn, applied_xacts,"
                 "       applied_changes, coalesce((to_jsonb(m)->'timings')::text, '{}'),"
                 "       coalesce((to_jsonb(m)->'verify')::text, '')"
                 "  FROM pgshift.migrations m WHERE name = $1",
                 1, p);
    if (res == NULL)
        return false;
    if (PQntuples(res) == 1) {
        m->has_state = true;
        m->phase = pgs_phase_parse(PQgetvalue(res, 0, 0));
        m->consistent_lsn = 0;
        m->applied_lsn = 0;
        if (!PQgetisnull(res, 0, 1))
            decode_lsn_parse(PQgetvalue(res, 0, 1), &m->consistent_lsn);
        if (!PQgetisnull(res, 0, 2))
            decode_lsn_parse(PQgetvalue(res, 0, 2), &m->applied_lsn);
        m->applied_xacts = strtoll(PQgetvalue(res, 0, 3), NULL, 10);
        m->applied_changes = strtoll(PQgetvalue(res, 0, 4), NULL, 10);
        timings_parse(PQgetvalue(res, 0, 5), &m->timings);
        verify_info_parse(PQgetvalue(res, 0, 6), &m->verify);
    }
    PQclear(res);
    if (!m->has_state)
        return true;

    res = pg_query(m->tgt, "reading the table state",
                   "SELECT ord, rows_copied, bytes_copied, copy_done, changes_applied"
                   "  FROM pgshift.tables WHERE migration = $1 ORDER BY ord",
                   1, p);
    if (res == NULL)
        return false;
    for (int i = 0; i < PQntuples(res); i++) {
        int ord = atoi(PQgetvalue(res, i, 0));
        if (ord < 0 || ord >= m->ntables)
            continue;
        pgs_mtable *t = &m->tables[ord];
        t->rows_copied = strtoll(PQgetvalue(res, i, 1), NULL, 10);
        t->bytes_copied = strtoll(PQgetvalue(res, i, 2), NULL, 10);
        t->copy_done = PQgetvalue(res, i, 3)[0] == 't';
        t->changes_applied = strtoll(PQgetvalue(res, i, 4), NULL, 10);
    }
    PQclear(res);
    return true;
}

bool state_begin_copy(pgs_migration *m)
{
    pgs_phase to;
    if (!state_transition_check(m, PGS_EV_COPY_START, &to))
        return false;
    const char *p[4] = {m->row, m->slot, m->publication, pgs_phase_name(to)};
    if (!pg_exec(m->tgt, "starting the state", "BEGIN"))
        return false;
    PGresult *res =
        pg_query(m->tgt, "writing the state",
                 "INSERT INTO pgshift.migrations (name, phase, slot_name, publication_name)"
                 " VALUES ($1, $4, $2, $3)"
                 " ON CONFLICT (name) DO UPDATE SET phase = $4, consistent_lsn = NULL,"
                 "   applied_lsn = NULL, applied_commit_time = NULL, applied_xacts = 0,"
                 "   applied_changes = 0, error = NULL, stats = NULL, timings = NULL,"
                 "   updated_at = now()",
                 4, p);
    if (res == NULL)
        goto failed;
    PQclear(res);
    for (int i = 0; i < m->ntables; i++) {
        pgs_mtable *t = &m->tables[i];
        char ord[16], rows[32], bytes[32];
        snprintf(ord, sizeof ord, "%d", t->ord);
        snprintf(rows, sizeof rows, "%lld", (long long)t->src.rows_est);
        snprintf(bytes, sizeof bytes, "%lld", (long long)t->src.bytes);
        const char *tp[7] = {m->row, ord,  t->src.qname, t->tgt.qname, t->create_target ? "t" : "f",
                             rows,   bytes};
        res = pg_query(m->tgt, "writing the table state",
                       "INSERT INTO pgshift.tables (migration, ord, source_table, target_table,"
                       "  target_created, rows_estimated, bytes_estimated)"
                       " VALUES ($1, $2, $3, $4, $5, $6, $7)"
                       " ON CONFLICT (migration, ord) DO UPDATE SET source_table = $3,"
                       "   target_table = $4, target_created = $5, rows_estimated = $6,"
                       "   bytes_estimated = $7, rows_copied = 0, bytes_copied = 0,"
                       "   copy_done = false, changes_applied = 0",
                       7, tp);
        if (res == NULL)
            goto failed;
        PQclear(res);
        t->rows_copied = t->bytes_copied = t->changes_applied = 0;
        t->copy_done = false;
    }
    if (!pg_exec(m->tgt, "writing the state", "COMMIT"))
        return false;
    m->has_state = true;
    if (!state_transition_committed(m, PGS_EV_COPY_START, "state rows reset"))
        return false;
    m->applied_lsn = m->consistent_lsn = 0;
    m->applied_xacts = m->applied_changes = 0;
    return true;
failed:
    pg_exec(m->tgt, "rolling back", "ROLLBACK");
    return false;
}

bool state_set_consistent_lsn(pgs_migration *m, pgs_lsn lsn)
{
    char buf[18];
    const char *p[2] = {m->row, decode_lsn_format(lsn, buf)};
    PGresult *res = pg_query(m->tgt, "writing the consistent point",
                             "UPDATE pgshift.migrations SET consistent_lsn = $2,"
                             "  applied_lsn = $2, updated_at = now() WHERE name = $1",
                             2, p);
    if (res == NULL)
        return false;
    PQclear(res);
    m->consistent_lsn = m->applied_lsn = lsn;
    return true;
}

bool state_copy_done(pgs_migration *m)
{
    pgs_phase to;
    if (!state_transition_check(m, PGS_EV_COPY_DONE, &to))
        return false;
    const char *p[2] = {m->row, pgs_phase_name(to)};
    PGresult *res = pg_query(m->tgt, "recording the end of the copy",
                             "WITH t AS (UPDATE pgshift.tables SET copy_done = true"
                             "             WHERE migration = $1)"
                             "UPDATE pgshift.migrations SET phase = $2,"
                             "  updated_at = now() WHERE name = $1",
                             2, p);
    if (res == NULL)
        return false;
    PQclear(res);
    for (int i = 0; i < m->ntables; i++)
        m->tables[i].copy_done = true;
    return state_transition_committed(m, PGS_EV_COPY_DONE, NULL);
}

bool state_delete(pgs_migration *m)
{
    const char *p[1] = {m->row};
    PGresult *res = pg_query(m->tgt, "deleting the state",
                             "DELETE FROM pgshift.migrations WHERE name = $1", 1, p);
    if (res == NULL)
        return false;
    PQclear(res);
    m->has_state = false;
    return true;
}

/* ---- phase changes: only through a row of the table (phase.c) ---- */

/* A (phase, event) pair with no row: the caller asked for something the
 * state machine does not allow, which is a bug, never an operator's error. */
static void illegal(const pgs_migration *m, pgs_event ev, const char *detail)
{
    log_error("BUG: no phase transition from %s on event %s%s%s; the phase stays %s and pgshift "
              "stops here; please report this with the log",
              pgs_phase_name(m->phase), pgs_event_name(ev), detail ? ": " : "",
              detail ? detail : "", pgs_phase_name(m->phase));
}

bool state_transition_check(pgs_migration *m, pgs_event ev, pgs_phase *to)
{
    if (phase_next(m->phase, ev, to, NULL))
        return true;
    illegal(m, ev, NULL);
    return false;
}

static bool transition(pgs_migration *m, pgs_event ev, const char *detail, bool write,
                       pgs_log_level level)
{
    pgs_phase from = m->phase, to;
    bool persist;
    if (!phase_next(from, ev, &to, &persist)) {
        illegal(m, ev, detail);
        return false;
    }
    /* The error column says why a migration failed, and only then. */
    if (persist && write &&
        !store_write_phase(m->tgt, m->row, to, to == PGS_PHASE_FAILED ? detail : NULL))
        return false;
    pgs_log(level, "phase %s -> %s (%s%s%s)", pgs_phase_name(from), pgs_phase_name(to),
            pgs_event_name(ev), detail ? ": " : "", detail ? detail : "");
    m->phase = to;
    return true;
}

bool state_transition_async(pgs_migration *m, pgs_event ev, const char *detail, state_write *w)
{
    pgs_phase to;
    bool persist;
    w->sql = NULL;
    if (!phase_next(m->phase, ev, &to, &persist)) {
        illegal(m, ev, detail);
        return false;
    }
    if (persist) {
        w->sql = store_sql_write_phase();
        w->nparams = 3;
        w->params[0] = m->row;
        w->params[1] = pgs_phase_name(to);
        w->params[2] = to == PGS_PHASE_FAILED ? detail : NULL;
    }
    return transition(m, ev, detail, false, PGS_LOG_INFO);
}

bool state_transition(pgs_migration *m, pgs_event ev, const char *detail)
{
    return transition(m, ev, detail, true, PGS_LOG_INFO);
}

bool state_transition_committed(pgs_migration *m, pgs_event ev, const char *detail)
{
    return transition(m, ev, detail, false, PGS_LOG_INFO);
}

bool state_set_phase(pgs_migration *m, pgs_phase phase, const char *error)
{
    /* The old interface: a re-write of the phase it already has (stream.c
     * sets m->phase itself before resuming) is stored as it was. */
    if (m->phase == phase)
        return store_write_phase(m->tgt, m->row, phase, phase == PGS_PHASE_FAILED ? error : NULL);
    for (int ev = 0; ev < PGS_EV_COUNT; ev++) {
        pgs_phase to;
        if (phase_next(m->phase, (pgs_event)ev, &to, NULL) && to == phase)
            /* Its callers log the change themselves. */
            return transition(m, (pgs_event)ev, error, true, PGS_LOG_DEBUG);
    }
    log_error("BUG: no phase transition from %s to %s; the phase stays %s",
              pgs_phase_name(m->phase), pgs_phase_name(phase), pgs_phase_name(m->phase));
    return false;
}

bool state_write_stats(pgs_migration *m, const char *stats_json)
{
    return store_write_stats(m->tgt, m->row, stats_json);
}

/* Each timing: its key in migrations.timings, its words in timings_text. */
static const struct {
    const char *key, *label;
    size_t off;
} TIMING_KEYS[] = {
    {"copy_s", "copy", offsetof(pgs_timings, copy_s)},
    {"index_build_s", "index build", offsetof(pgs_timings, index_build_s)},
    {"backlog_s", "stream to ready", offsetof(pgs_timings, backlog_s)},
    {"ready_s", "ready after", offsetof(pgs_timings, ready_s)},
    {"cutover_s", "cutover", offsetof(pgs_timings, cutover_s)},
    {"after_swap_s", "after the swap", offsetof(pgs_timings, after_swap_s)},
};

size_t timings_text(const pgs_timings *t, char *buf, size_t len)
{
    size_t n = 0;
    buf[0] = 0;
    for (size_t i = 0; i < sizeof TIMING_KEYS / sizeof TIMING_KEYS[0] && n < len; i++) {
        double s = *(const double *)((const char *)t + TIMING_KEYS[i].off);
        if (s > 0)
            n += (size_t)snprintf(buf + n, len - n, "%s%s %.1f s", n ? ", " : "",
                                  TIMING_KEYS[i].label, s);
    }
    return n;
}

void timings_parse(const char *json, pgs_timings *t)
{
    *t = (pgs_timings){0};
    json_t *o = json ? json_loads(json, 0, NULL) : NULL;
    for (size_t i = 0; o && i < sizeof TIMING_KEYS / sizeof TIMING_KEYS[0]; i++) {
        json_t *v = json_object_get(o, TIMING_KEYS[i].key);
        if (json_is_number(v))
            *(double *)((char *)t + TIMING_KEYS[i].off) = json_number_value(v);
    }
    json_decref(o);
}

void verify_info_parse(const char *json, pgs_verify_info *v)
{
    *v = (pgs_verify_info){0};
    json_t *o = json && json[0] ? json_loads(json, 0, NULL) : NULL;
    const char *at = json_string_value(json_object_get(o, "at"));
    const char *lsn = json_string_value(json_object_get(o, "lsn"));
    if (at && lsn) {
        v->has = true;
        snprintf(v->at, sizeof v->at, "%s", at);
        snprintf(v->lsn, sizeof v->lsn, "%s", lsn);
        v->consistent = json_is_true(json_object_get(o, "consistent"));
        v->identical = json_is_true(json_object_get(o, "identical"));
        json_int_t d = json_integer_value(json_object_get(o, "differences"));
        v->differences = d > 0 ? (uint64_t)d : 0;
    }
    json_decref(o);
}

void state_timing_json(pgs_migration *m, const char *key, double seconds, char *json, size_t len)
{
    for (size_t i = 0; i < sizeof TIMING_KEYS / sizeof TIMING_KEYS[0]; i++)
        if (strcmp(TIMING_KEYS[i].key, key) == 0)
            *(double *)((char *)&m->timings + TIMING_KEYS[i].off) = seconds;
    snprintf(json, len, "{\"%s\": %.3f}", key, seconds);
}

void state_set_timing(pgs_migration *m, const char *key, double seconds)
{
    char json[128];
    state_timing_json(m, key, seconds, json, sizeof json);
    if (!store_merge_timings(m->tgt, m->row, json))
        log_warn("could not record %s in the state (see above); status will not show it", key);
}

bool state_merge_cutover(pgs_migration *m, const char *json)
{
    return store_merge_cutover(m->tgt, m->row, json);
}

char *state_read_cutover(pgs_migration *m)
{
    return store_read_cutover(m->tgt, m->row);
}
