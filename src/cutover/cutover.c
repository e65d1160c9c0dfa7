/* cutover.c: lock, fence, swap and the after-commit steps (cutover.h). */
#include "pgshift/cutover.h"

#include "pgshift/log.h"
#include "pgshift/partman.h"
#include "pgshift/pg.h"
#include "pgshift/rollback.h"
#include "pgshift/store.h"
#include "pgshift/state.h"

#include <jansson.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Tries of one step after the cutover whose lock wait timed out (pauses
 * of 0.2 s doubling to 5 s: about 2 minutes in all). */
#define POST_LOCK_ATTEMPTS 30

struct cutover {
    pgs_migration *m;
    PGconn *conn; /* the attempt's transaction: locks, fence, swap */
    PGconn *aux;  /* WAL flush after the fence, blocker lookups */
    bool locked;
    unsigned serial;
    pgs_strlist logged; /* problems already logged (cutover_check) */
    pgs_strlist extra_locks;
};

void cutover_crash_point(const char *step)
{
    const char *at = getenv("PGSHIFT_TEST_CRASH_AT");
    if (at && strcmp(at, step) == 0) {
        log_warn("PGSHIFT_TEST_CRASH_AT=%s: killing myself now", step);
        raise(SIGKILL);
    }
    /* PGSHIFT_TEST_SLOW_AT=step:ms: that step takes ms longer (tests of
     * cutover.max_block: the locks are then held past a small budget). */
    const char *slow = getenv("PGSHIFT_TEST_SLOW_AT");
    size_t n = strlen(step);
    if (slow && strncmp(slow, step, n) == 0 && slow[n] == ':') {
        int ms = atoi(slow + n + 1);
        log_warn("PGSHIFT_TEST_SLOW_AT=%s: %d ms more at this step", slow, ms);
        struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
}

/* The tables' database. It is the state database too in every cutover: a
 * plan with a separate `target:` database cannot be cut over (handover.c
 * refuses it, cutover_swap checks again), which is what lets the swap write
 * phase `done` in the same transaction as the renames (cutover.h). */
static const char *conninfo(const pgs_migration *m)
{
    return m->plan->source;
}

cutover *cutover_new(pgs_migration *m)
{
    cutover *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->m = m;
    c->conn = pg_connect(conninfo(m), "source (cutover)", false);
    c->aux = c->conn ? pg_connect(conninfo(m), "source (cutover)", false) : NULL;
    /* Definitions read on this connection come out schema-qualified. The
     * swap writes the state row in its transaction when it is in this
     * database. */
    if (c->aux == NULL || (m->plan->target == NULL && !state_writer_lock(c->conn, m->row)) ||
        !pg_exec(c->conn, "preparing the cutover connection",
                 "SET search_path = pg_catalog; SET synchronous_commit = on;"
                 " SET application_name = 'pgshift cutover'") ||
        !pg_exec(c->aux, "preparing the cutover connection",
                 "SET application_name = 'pgshift cutover'")) {
        cutover_free(c);
        return NULL;
    }
    return c;
}

void cutover_free(cutover *c)
{
    if (c == NULL)
        return;
    if (c->conn)
        PQfinish(c->conn);
    if (c->aux)
        PQfinish(c->aux);
    strlist_free(&c->logged);
    strlist_free(&c->extra_locks);
    free(c);
}

bool cutover_locked(const cutover *c)
{
    return c->locked;
}

/* The source tables as a text[] literal, named as `pgshift verify` names
 * them (schema.name). */
static char *tables_array(const pgs_migration *m)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (f == NULL)
        return NULL;
    fputc('{', f);
    for (int i = 0; i < m->ntables; i++) {
        const pgs_relinfo *r = &m->tables[i].src;
        fputs(i ? ",\"" : "\"", f);
        for (const char *p = r->nspname; *p; p++)
            fprintf(f, "%s%c", *p == '"' || *p == '\\' ? "\\" : "", *p);
        fputc('.', f);
        for (const char *p = r->relname; *p; p++)
            fprintf(f, "%s%c", *p == '"' || *p == '\\' ? "\\" : "", *p);
        fputc('"', f);
    }
    fputc('}', f);
    return fclose(f) == 0 ? buf : NULL;
}

/* cutover.verify: the first table without a passing verify since the copy,
 * as a problem (1), or 0, or -1 when the state cannot be read. The state
 * is in the target database: c->conn's when the plan has no `target:`. */
static int verify_gate(cutover *c, char *why, size_t whylen)
{
    const pgs_migration *m = c->m;
    if (!m->plan->cutover.verify)
        return 0;
    PGconn *st = m->plan->target ? pg_connect(m->plan->target, "target (cutover)", false) : c->conn;
    char *arr = tables_array(m);
    char *t = st && arr ? store_verify_gate(st, m->row, arr) : NULL;
    if (st != c->conn)
        PQfinish(st);
    free(arr);
    if (t == NULL)
        return -1;
    int rc = t[0] != '\0';
    if (rc)
        snprintf(why, whylen,
                 "cutover.verify: %s has no passing `pgshift verify` since the copy (identical, "
                 "at one LSN while the run streamed); run `pgshift verify --plan %s`",
                 t, m->plan->path);
    free(t);
    return rc;
}

int cutover_check(cutover *c, bool log_them, char *first, size_t firstlen)
{
    int problems = 0;
    if (first && firstlen)
        first[0] = '\0';
    char why[1024];
    int g = verify_gate(c, why, sizeof why);
    if (g < 0)
        return -1;
    if (g > 0) {
        if (first && firstlen)
            snprintf(first, firstlen, "%s", why);
        problems++;
        if (log_them && !strlist_contains(&c->logged, why)) {
            log_error("cutover refused: %s", why);
            strlist_push(&c->logged, why);
        }
    }
    strlist_free(&c->extra_locks);
    for (int i = 0; i < c->m->ntables; i++) {
        handover h;
        if (!handover_build(c->conn, c->m, &c->m->tables[i], false, &h))
            return -1;
        for (int j = 0; j < h.problems.n; j++) {
            if (problems == 0 && first && firstlen)
                snprintf(first, firstlen, "%s", h.problems.v[j]);
            problems++;
            if (log_them && !strlist_contains(&c->logged, h.problems.v[j])) {
                log_error("cutover refused: %s", h.problems.v[j]);
                strlist_push(&c->logged, h.problems.v[j]);
            }
        }
        for (int j = 0; j < h.lock.n; j++)
            if (!strlist_contains(&c->extra_locks, h.lock.v[j]))
                strlist_push(&c->extra_locks, h.lock.v[j]);
        handover_free(&h);
    }
    return problems;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* "LOCK TABLE a, b IN <mode> MODE" over a sorted, de-duplicated list. */
static char *lock_sql(pgs_strlist *l, const char *mode)
{
    qsort(l->v, (size_t)l->n, sizeof(char *), cmp_str);
    size_t len = 64 + strlen(mode);
    for (int i = 0; i < l->n; i++)
        len += strlen(l->v[i]) + 2;
    char *sql = malloc(len);
    if (sql == NULL)
        return NULL;
    strcpy(sql, "LOCK TABLE ");
    for (int i = 0; i < l->n; i++) {
        if (i > 0 && strcmp(l->v[i], l->v[i - 1]) == 0)
            continue;
        if (i > 0)
            strcat(sql, ", ");
        strcat(sql, l->v[i]);
    }
    strcat(sql, " IN ");
    strcat(sql, mode);
    strcat(sql, " MODE");
    return sql;
}

/* The strings as a JSON array (jansson escapes them), for
 * jsonb_array_elements_text($n::jsonb) on the server. */
static char *json_names(const pgs_strlist *l)
{
    json_t *a = json_array();
    for (int i = 0; a && i < l->n; i++)
        if (json_array_append_new(a, json_string(l->v[i])) != 0) {
            json_decref(a);
            a = NULL;
        }
    char *out = a ? json_dumps(a, JSON_COMPACT) : NULL;
    json_decref(a);
    return out;
}

/* The session holding the oldest transaction with a lock on any of the
 * cutover's tables (`rels`, qualified names; other than pgshift's own sessions). */
static bool find_blocker(cutover *c, const pgs_strlist *rels, cutover_blocker *b)
{
    char *names = json_names(rels);
    if (names == NULL)
        return false;
    char me[16];
    snprintf(me, sizeof me, "%d", PQbackendPID(c->conn));
    PGresult *r = pg_query(
        c->aux, "finding what blocks the cutover",
        "SELECT a.pid, left(coalesce(a.application_name, ''), 60),"
        "       left(regexp_replace(coalesce(a.query, ''), '\\s+', ' ', 'g'), 190),"
        "       l.relation::regclass::text, l.mode,"
        "       coalesce(extract(epoch FROM now() - a.xact_start), 0)"
        "  FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.granted AND l.locktype = 'relation'"
        "   AND l.relation IN (SELECT to_regclass(x) FROM jsonb_array_elements_text($1::jsonb) x)"
        "   AND l.pid NOT IN ($2::int, pg_backend_pid())"
        "   AND a.application_name NOT LIKE 'pgshift%'"
        " ORDER BY a.xact_start NULLS LAST LIMIT 1",
        2, (const char *[]){names, me});
    free(names);
    bool found = r && PQntuples(r) == 1;
    if (found) {
        b->pid = atoi(PQgetvalue(r, 0, 0));
        snprintf(b->application, sizeof b->application, "%s", PQgetvalue(r, 0, 1));
        snprintf(b->query, sizeof b->query, "%s", PQgetvalue(r, 0, 2));
        snprintf(b->relation, sizeof b->relation, "%s", PQgetvalue(r, 0, 3));
        snprintf(b->mode, sizeof b->mode, "%s", PQgetvalue(r, 0, 4));
        b->xact_age_s = atof(PQgetvalue(r, 0, 5));
    }
    PQclear(r);
    return found;
}

void cutover_release(cutover *c)
{
    if (!c->locked && PQtransactionStatus(c->conn) == PQTRANS_IDLE)
        return;
    PGresult *r = PQexec(c->conn, "ROLLBACK");
    PQclear(r);
    c->locked = false;
}

/* Runs one statement of the attempt's transaction; on failure returns the
 * SQLSTATE class: 'L' lock not granted in time, 'E' anything else. */
/* A statement's failure: 'L' for a lock wait that timed out, else 'E';
 * `err` gets the message and as much of the statement as fits. */
static char failed(PGresult *r, const char *sql, char *err, size_t errlen)
{
    char line[1024];
    pg_result_error_line(r, line, sizeof line);
    char kind = strcmp(pg_sqlstate(r), "55P03") == 0 ? 'L' : 'E';
    /* The message first; the statement only as far as it fits. */
    if (err && errlen) {
        int n = snprintf(err, errlen, "%s", line);
        if (n >= 0 && (size_t)n + 16 < errlen)
            snprintf(err + n, errlen - (size_t)n, " (running: %.*s)", 200, sql);
    }
    return kind;
}

static char run(cutover *c, const char *sql, char *err, size_t errlen)
{
    PGresult *r = PQexec(c->conn, sql);
    ExecStatusType st = PQresultStatus(r);
    char k = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK ? 0 : failed(r, sql, err, errlen);
    PQclear(r);
    return k;
}

/* In the swap, before the renames: pg_partman's configuration of a source
 * it manages ends (part_config is by name: after the renames its row would
 * name the new table, with the old interval; the old table is frozen from
 * now on, and part_config_sub follows by its ON DELETE CASCADE). `*ended`
 * counts. With `manager: pg_partman`, the source's DEFAULT partition of
 * the name pg_partman gives the new table's is renamed for the old table
 * (under the swap's lock on the source, which covers its partitions). */
static char partman_forget(cutover *c, const pgs_mtable *t, int *ended, char *err, size_t errlen)
{
    pgs_partman pm;
    int found = partman_find(c->conn, &pm);
    if (found == 0)
        return 0;
    if (found < 0) {
        snprintf(err, errlen, "looking for pg_partman failed (see the log)");
        return 'E';
    }
    char *sql = NULL, name[160];
    snprintf(name, sizeof name, "%s.%s", t->src.nspname, t->src.relname);
    char k = 'E';
    if (asprintf(&sql, "DELETE FROM %s.part_config WHERE parent_table = $1", pm.q) >= 0) {
        PGresult *r = PQexecParams(c->conn, sql, 1, NULL, (const char *[]){name}, NULL, NULL, 0);
        if (PQresultStatus(r) == PGRES_COMMAND_OK) {
            *ended += atoi(PQcmdTuples(r));
            k = 0;
        } else
            k = failed(r, sql, err, errlen);
        PQclear(r);
    }
    free(sql);
    sql = NULL;
    char *dflt = k == 0 && t->spec->part.manager && t->src.relkind == 'p'
                     ? partman_default_name(c->conn, pm.q, t->src.relname)
                     : NULL;
    char *has = dflt ? partman_default_of(c->conn, t->src.qname) : NULL;
    if (has && strcmp(has, dflt) == 0) {
        char oldname[160];
        snprintf(oldname, sizeof oldname, "%s_old", t->src.relname);
        char *odflt = partman_default_name(c->conn, pm.q, oldname);
        char *from = pg_qualified(c->conn, t->src.nspname, dflt);
        char *to = odflt ? pg_ident(c->conn, odflt) : NULL;
        if (from && to && asprintf(&sql, "ALTER TABLE %s RENAME TO %s", from, to) >= 0)
            k = run(c, sql, err, errlen);
        else
            k = 'E';
        if (k == 0)
            log_info("cutover: the old table's DEFAULT partition %s becomes %s", dflt, odflt);
        free(sql);
        free(odflt);
        free(from);
        free(to);
    } else if (dflt && has == NULL)
        k = 'E';
    free(has);
    free(dflt);
    return k;
}

int cutover_lock(cutover *c, cutover_blocker *blocker, bool *have_blocker)
{
    pgs_plan_cutover *pc = &c->m->plan->cutover;
    *have_blocker = false;
    pgs_strlist tgt = {0}, src = {0};
    bool ok = true;
    for (int i = 0; ok && i < c->m->ntables; i++)
        ok = strlist_push(&tgt, c->m->tables[i].tgt.qname) &&
             strlist_push(&src, c->m->tables[i].src.qname);
    for (int i = 0; ok && i < c->extra_locks.n; i++)
        ok = strlist_push(&src, c->extra_locks.v[i]);
    char *lock_tgt = ok ? lock_sql(&tgt, "SHARE UPDATE EXCLUSIVE") : NULL;
    char *lock_src = ok ? lock_sql(&src, "ACCESS EXCLUSIVE") : NULL;
    int rc = -1;
    if (lock_tgt == NULL || lock_src == NULL)
        goto out;
    /* The targets first: that wait stops nobody but VACUUM/ANALYZE, and
     * a longer one lets the deadlock checker cancel an autovacuum there.
     * The session dies by itself if pgshift stalls while holding locks. */
    char setup[256];
    int hold = pc->fence_timeout_ms + pc->lock_timeout_ms + 30000;
    snprintf(setup, sizeof setup,
             "BEGIN; SET LOCAL idle_in_transaction_session_timeout = %d;"
             " SET LOCAL statement_timeout = %d;"
             " SET LOCAL lock_timeout = %d",
             hold, hold, pc->lock_timeout_ms > 3000 ? pc->lock_timeout_ms : 3000);
    char lt[64];
    snprintf(lt, sizeof lt, "SET LOCAL lock_timeout = %d", pc->lock_timeout_ms);
    char err[1024] = "";
    char k = run(c, setup, err, sizeof err);
    if (k == 0)
        k = run(c, lock_tgt, err, sizeof err);
    if (k == 0)
        k = run(c, lt, err, sizeof err);
    cutover_crash_point("lock");
    if (k == 0)
        k = run(c, lock_src, err, sizeof err);
    c->locked = true; /* held, or to be rolled back below */
    if (k == 0) {
        rc = 1;
        goto out;
    }
    cutover_release(c);
    if (k == 'L') {
        /* Whoever holds any of the tables just asked for. */
        for (int i = 0; i < tgt.n && strlist_push(&src, tgt.v[i]); i++)
            ;
        *have_blocker = find_blocker(c, &src, blocker);
        rc = 0;
    } else
        log_error("cutover: taking the locks failed: %s", err);
out:
    free(lock_tgt);
    free(lock_src);
    strlist_free(&tgt);
    strlist_free(&src);
    return rc;
}

bool cutover_fence(cutover *c, char *nonce, size_t noncelen, pgs_lsn *lsn)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(nonce, noncelen, "%s:%d:%u:%lld", c->m->plan->name, (int)getpid(), ++c->serial,
             (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000);
    char *v = pg_query_value(c->conn, "emitting the cutover fence",
                             "SELECT pg_logical_emit_message(false, 'pgshift_fence', $1)", 1,
                             (const char *[]){nonce}, NULL);
    if (v == NULL)
        return false;
    bool ok = decode_lsn_parse(v, lsn);
    free(v);
    cutover_crash_point("fence");
    /* A non-transactional message is not flushed by itself, and the
     * walsender only sends flushed WAL: a tiny synchronous commit after it
     * flushes it now rather than whenever the WAL writer gets to it. */
    return ok && pg_exec(c->aux, "flushing the WAL after the fence",
                         "BEGIN; SET LOCAL synchronous_commit = on;"
                         " SELECT pg_logical_emit_message(true, 'pgshift_flush', '');"
                         " COMMIT");
}

/* The cutover record: the stream's numbers, the steps after the commit as
 * data (names, never SQL), and where the tables went. "old_tables" and
 * "new_tables" (quoted names) are for people and `status`; nothing runs
 * them. */
static bool m_reverse(const cutover *c)
{
    return c->m->reverse;
}

static char *state_json(cutover *c, const char *stats_json, handover *h)
{
    json_error_t jerr;
    json_t *o = stats_json ? json_loads(stats_json, 0, &jerr) : NULL;
    if (o == NULL)
        o = json_object();
    json_t *steps = json_array(), *old = json_array(), *old_q = json_array(),
           *tables = json_array();
    for (int i = 0; i < c->m->ntables; i++)
        for (int j = 0; j < h[i].nvalidate; j++)
            json_array_append_new(steps, json_pack("{s:s,s:s,s:s,s:s}", "step",
                                                   h[i].validate[j].kind == 'p'   ? "fk_parent"
                                                   : h[i].validate[j].kind == 'd' ? "fk_drop_old"
                                                                                  : "validate",
                                                   "schema", h[i].validate[j].nspname, "table",
                                                   h[i].validate[j].relname, "constraint",
                                                   h[i].validate[j].conname));
    for (int i = 0; i < c->m->ntables; i++) {
        pgs_mtable *t = &c->m->tables[i];
        const pgs_partition_spec *sp = &t->spec->part;
        if (sp->manager) {
            char premake[16];
            snprintf(premake, sizeof premake, "%d", sp->ahead);
            json_array_append_new(steps, json_pack("{s:s,s:s,s:s,s:s,s:s,s:s}", "step", "partman",
                                                   "schema", t->src.nspname, "table",
                                                   t->src.relname, "column", sp->column, "interval",
                                                   sp->interval, "premake", premake));
            json_array_append_new(steps,
                                  json_pack("{s:s,s:s,s:s}", "step", "partman_default", "schema",
                                            t->src.nspname, "table", t->src.relname));
        }
        /* After the renames the new table has the source's name. Analyzed
         * after its copy by this process and changed by at most a tenth
         * since (autovacuum's own threshold): its statistics stand, and a
         * second ANALYZE would only make the run exit later. */
        int64_t since = t->changes_applied - t->changes_at_analyze;
        int64_t base = t->rows_copied > 1000 ? t->rows_copied : 1000;
        if (m_reverse(c))
            ; /* swapped back: the old table's statistics are its own */
        else if (t->analyzed && since * 10 <= base)
            log_info("%s: analyzed after its copy, %lld change(s) applied since (%lld rows "
                     "copied): no second ANALYZE after the swap",
                     t->src.qname, (long long)since, (long long)t->rows_copied);
        else
            json_array_append_new(steps, json_pack("{s:s,s:s,s:s}", "step", "analyze", "schema",
                                                   t->src.nspname, "table", t->src.relname));
        char oldname[160];
        cutover_old_name(t, oldname, sizeof oldname);
        json_array_append_new(old,
                              json_pack("{s:s,s:s}", "schema", t->src.nspname, "table", oldname));
        char *qo = pg_qualified(c->conn, t->src.nspname, oldname);
        json_array_append_new(old_q, json_string(qo ? qo : "?"));
        json_array_append_new(tables, json_string(t->src.qname));
        free(qo);
    }
    json_object_set_new(o, "post_steps", steps);
    json_object_set_new(o, "old", old);
    json_object_set_new(o, "old_tables", old_q);
    json_object_set_new(o, "new_tables", tables);
    json_object_set_new(o, "post_done", json_false());
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

/* In the swap's transaction: the phase and the record (`done` commits with
 * the renames, or neither does); with a window the reverse stream's row;
 * for the swap back, the migration `rolled_back`. 0 or 'E'. */
static char record_swap(cutover *c, pgs_phase done, bool window, const char *stats_json,
                        handover *h, char *err, size_t errlen)
{
    pgs_migration *m = c->m;
    char *js = state_json(c, stats_json, h);
    bool ok = store_record_swap(c->conn, m->row, done, js ? js : "{}");
    free(js);
    if (!ok) {
        snprintf(err, errlen, "recording the cutover in pgshift.migrations failed");
        return 'E';
    }
    if (window && !rollback_record(c->conn, m, err, errlen))
        return 'E';
    if (m->reverse && !store_write_phase(c->conn, m->plan->name, PGS_PHASE_ROLLED_BACK, NULL)) {
        snprintf(err, errlen, "recording the rollback in pgshift.migrations failed");
        return 'E';
    }
    return 0;
}

int cutover_swap(cutover *c, const char *stats_json, char *err, size_t errlen)
{
    pgs_migration *m = c->m;
    handover *h = calloc((size_t)m->ntables, sizeof *h);
    if (h == NULL)
        return -1;
    int rc = -1;
    char k = 0;
    int built = 0;
    pgs_phase done;
    /* The swap's connection writes the state: it must be the state database. */
    if (m->plan->target != NULL) {
        snprintf(err, errlen,
                 "the plan has a separate `target:` database, so the swap cannot commit the "
                 "renames and the phase together");
        goto out;
    }
    /* With a rollback window the forward swap leaves the migration
     * `reversible` and starts the reverse stream's state in its transaction. */
    bool window = !m->reverse && m->plan->rollback.window_ms > 0;
    pgs_event ev = window ? PGS_EV_SWAPPED_REVERSIBLE : PGS_EV_SWAPPED;
    if (!state_transition_check(m, ev, &done)) {
        snprintf(err, errlen, "phase %s cannot be swapped (a bug; see the log)",
                 pgs_phase_name(m->phase));
        goto out;
    }
    cutover_crash_point("swap");
    /* Read again under the lock: this is the state that gets renamed. */
    for (; built < m->ntables; built++) {
        if (!handover_build(c->conn, m, &m->tables[built], true, &h[built])) {
            snprintf(err, errlen, "reading the dependent objects failed (see the log)");
            goto out;
        }
        if (h[built].problems.n > 0) {
            snprintf(err, errlen, "%s", h[built].problems.v[0]);
            built++;
            goto out;
        }
    }
    int partman_ended = 0;
    for (int i = 0; k == 0 && i < m->ntables; i++)
        k = partman_forget(c, &m->tables[i], &partman_ended, err, errlen);
    for (int i = 0; k == 0 && i < m->ntables; i++) {
        pgs_mtable *t = &m->tables[i];
        char oldname[160];
        cutover_old_name(t, oldname, sizeof oldname);
        char *qold = pg_ident(c->conn, oldname), *qnew = pg_ident(c->conn, t->src.relname);
        char *sql = NULL;
        if (qold && qnew && asprintf(&sql, "ALTER TABLE %s RENAME TO %s", t->src.qname, qold) >= 0)
            k = run(c, sql, err, errlen);
        else
            k = 'E';
        free(sql);
        sql = NULL;
        if (k == 0 && asprintf(&sql, "ALTER TABLE %s RENAME TO %s", t->tgt.qname, qnew) >= 0)
            k = run(c, sql, err, errlen);
        free(sql);
        free(qold);
        free(qnew);
    }
    for (int i = 0; k == 0 && i < m->ntables; i++)
        for (int j = 0; k == 0 && j < h[i].after.n; j++) {
            log_debug("cutover: %s", h[i].after.v[j]);
            k = run(c, h[i].after.v[j], err, errlen);
        }
    if (k == 0)
        k = record_swap(c, done, window, stats_json, h, err, errlen);
    cutover_crash_point("commit");
    if (k == 0)
        k = run(c, "COMMIT", err, errlen);
    if (k == 0) {
        c->locked = false;
        /* Checked at the start of the swap, so it holds; if it did not
         * (logged as a bug), memory still follows what committed. */
        if (!state_transition_committed(m, ev, "renames committed"))
            m->phase = done;
        if (partman_ended)
            log_info("cutover: pg_partman's configuration of %d old table(s) ended with the swap "
                     "(part_config rows removed: the old tables are frozen)",
                     partman_ended);
        rc = 1;
    } else
        rc = k == 'L' ? 0 : -1;
out:
    if (rc != 1)
        cutover_release(c);
    for (int i = 0; i < built && i < m->ntables; i++)
        handover_free(&h[i]);
    free(h);
    return rc;
}

/* A record written by an earlier version: its steps are SQL text, which is
 * not run; the operator is told what it holds and how to finish. */
static void refuse_stored_sql(const pgs_migration *m, json_t *o)
{
    log_error("migration %s was cut over by an earlier pgshift version, which recorded the steps "
              "after the swap as SQL text; this version never runs stored SQL, so it does not "
              "run them",
              m->plan->name);
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(o, "post"), i, v)
    {
        if (json_is_string(v))
            log_error("  recorded step (check it, then run it by hand if the foreign key is "
                      "still NOT VALID): %s",
                      json_string_value(v));
    }
    json_array_foreach(json_object_get(o, "new_tables"), i, v)
    {
        if (json_is_string(v))
            log_error("  recorded step (run by hand): ANALYZE %s", json_string_value(v));
    }
    log_error("fix: run those steps by hand (or skip them: they only validate foreign keys "
              "added NOT VALID and refresh statistics), then record them as done: UPDATE "
              "pgshift.migrations SET cutover = cutover || '{\"post_done\": true}' WHERE "
              "name = '%s'; `pgshift cleanup` does not need them",
              m->plan->name);
}

/* The "fk_parent" step: the foreign key `con` added to partitioned table
 * `qt`, defined as on its partitions (which carry it validated), unless
 * it has it already (a rerun). */
static char *fk_parent_sql(PGconn *conn, const char *qt, const char *con, const char **what)
{
    PGresult *r =
        pg_query(conn, "reading a foreign key of the partitions",
                 "SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = $1::regclass"
                 "                 AND conname = $2 AND contype = 'f'),"
                 "  (SELECT pg_get_constraintdef(c.oid) FROM pg_constraint c"
                 "     JOIN pg_inherits h ON h.inhrelid = c.conrelid"
                 "    WHERE h.inhparent = $1::regclass AND c.conname = $2"
                 "      AND c.contype = 'f' LIMIT 1)",
                 2, (const char *[]){qt, con});
    char *sql = NULL, *qc = NULL;
    if (r == NULL || PQntuples(r) != 1)
        goto done;
    if (PQgetvalue(r, 0, 0)[0] == 't') {
        *what = "checking a foreign key";
        sql = strdup("SELECT 'the foreign key is on the table already'");
    } else if (!PQgetisnull(r, 0, 1) && (qc = pg_ident(conn, con)) != NULL) {
        *what = "adding a foreign key to the partitioned table";
        if (asprintf(&sql, "ALTER TABLE %s ADD CONSTRAINT %s %s", qt, qc, PQgetvalue(r, 0, 1)) < 0)
            sql = NULL;
    }
done:
    PQclear(r);
    free(qc);
    return sql;
}

/* A step after the cutover as it runs: one statement in the extended
 * protocol with its parameters, or (`simple`) statements made of quoted
 * names only, run together in one implicit transaction. */
typedef struct post_stmt {
    char *sql;
    const char *what;
    const char *params[5];
    int nparams;
    bool simple;
    const char *notices; /* client_min_messages for the step, or NULL */
    bool said;           /* sql NULL: the reason is logged already */
} post_stmt;

/* pg_partman's steps (partman.h): registering the table, then its DEFAULT
 * partition where create_parent made none. */
static bool partman_step(PGconn *conn, json_t *step, const char *kind, const char *qt,
                         post_stmt *ps)
{
    pgs_partman pm;
    int found = partman_find(conn, &pm);
    if (found != 1) {
        if (found == 0)
            log_error("registering %s with pg_partman: the extension is no longer installed; "
                      "fix: CREATE EXTENSION pg_partman and run again, or register the table "
                      "yourself and record the steps as done (cutover->post_done in "
                      "pgshift.migrations)",
                      qt);
        ps->said = true;
        return false;
    }
    const char *table = json_string_value(json_object_get(step, "table"));
    if (strcmp(kind, "partman") == 0) {
        ps->what = "registering the table with pg_partman";
        /* Its WARNING when every partition it would make exists ("No
         * child tables created ... review schema and config") is what
         * pgshift expects; the next step adds the DEFAULT partition. */
        ps->notices = "error";
        ps->sql = partman_register_sql(pm.q);
        char *name = NULL;
        const char *schema = json_string_value(json_object_get(step, "schema"));
        if (asprintf(&name, "%s.%s", schema, table) < 0)
            name = NULL;
        /* Freed by the caller with the statement: params[0] and [4]. */
        ps->params[0] = name;
        ps->params[1] = json_string_value(json_object_get(step, "column"));
        ps->params[2] = json_string_value(json_object_get(step, "interval"));
        ps->params[3] = json_string_value(json_object_get(step, "premake"));
        ps->params[4] = strdup(qt);
        ps->nparams = 5;
        for (int i = 0; i < 5; i++)
            if (ps->params[i] == NULL) {
                free(ps->sql);
                ps->sql = NULL;
            }
    } else {
        ps->what = "adding pg_partman's DEFAULT partition";
        char *dname = partman_default_name(conn, pm.q, table);
        const char *schema = json_string_value(json_object_get(step, "schema"));
        char *qd = dname ? pg_qualified(conn, schema, dname) : NULL;
        char *has = partman_default_of(conn, qt);
        if (has && has[0]) {
            ps->sql = strdup("SELECT 'a DEFAULT partition exists'");
        } else if (has && qd &&
                   asprintf(&ps->sql,
                            "CREATE TABLE IF NOT EXISTS %s (LIKE %s INCLUDING DEFAULTS INCLUDING "
                            "CONSTRAINTS INCLUDING STORAGE INCLUDING COMMENTS INCLUDING "
                            "GENERATED); ALTER TABLE %s ATTACH PARTITION %s DEFAULT",
                            qd, qt, qt, qd) < 0)
            ps->sql = NULL;
        ps->simple = true;
        if (ps->sql == NULL)
            ps->said = has == NULL || dname == NULL;
        free(has);
        free(qd);
        free(dname);
    }
    return ps->sql != NULL;
}

/* One step of "post_steps" built from its names. */
static bool step_sql(PGconn *conn, json_t *step, post_stmt *ps)
{
    const char *kind = json_string_value(json_object_get(step, "step"));
    const char *schema = json_string_value(json_object_get(step, "schema"));
    const char *table = json_string_value(json_object_get(step, "table"));
    const char *con = json_string_value(json_object_get(step, "constraint"));
    if (kind == NULL || schema == NULL || table == NULL)
        return false;
    char *qt = pg_qualified(conn, schema, table), *qc = NULL;
    if (qt && strcmp(kind, "validate") == 0 && con && (qc = pg_ident(conn, con)) != NULL) {
        ps->what = "validating a foreign key";
        if (asprintf(&ps->sql, "ALTER TABLE %s VALIDATE CONSTRAINT %s", qt, qc) < 0)
            ps->sql = NULL;
    } else if (qt && strcmp(kind, "fk_parent") == 0 && con) {
        ps->sql = fk_parent_sql(conn, qt, con, &ps->what);
    } else if (qt && strcmp(kind, "fk_drop_old") == 0 && con &&
               (qc = pg_ident(conn, con)) != NULL) {
        ps->what = "dropping a foreign key of the old table";
        if (asprintf(&ps->sql, "ALTER TABLE IF EXISTS %s DROP CONSTRAINT IF EXISTS %s", qt, qc) < 0)
            ps->sql = NULL;
    } else if (qt && strcmp(kind, "analyze") == 0) {
        ps->what = "analyzing the new table";
        if (asprintf(&ps->sql, "ANALYZE %s", qt) < 0)
            ps->sql = NULL;
    } else if (qt && (strcmp(kind, "partman") == 0 || strcmp(kind, "partman_default") == 0)) {
        partman_step(conn, step, kind, qt, ps);
    }
    free(qt);
    free(qc);
    return ps->sql != NULL;
}

static void post_stmt_free(post_stmt *ps)
{
    free(ps->sql);
    if (ps->nparams == 5) {
        free((char *)ps->params[0]);
        free((char *)ps->params[4]);
    }
}

/* One step after the cutover (nothing else rides along; a constraint
 * validated before a crash validates again in no time). A step that locks
 * out the application (`guarded`: adding or dropping a foreign key locks
 * the referenced table SHARE ROW or ACCESS EXCLUSIVE, and the application's
 * statements on it queue behind the wait) runs under the cutover's
 * lock_timeout, and a wait that times out is tried again after a pause.
 * VALIDATE, ANALYZE and pg_partman's steps (ATTACH) take SHARE UPDATE
 * EXCLUSIVE, which the application's reads and writes do not wait for:
 * they wait as long as it takes (an autovacuum is cancelled for them after
 * deadlock_timeout). */
static bool post_step_run(PGconn *conn, pgs_migration *m, const post_stmt *ps, bool guarded)
{
    int timeout = guarded ? m->plan->cutover.lock_timeout_ms : 0, pause_ms = 200;
    char set[96];
    snprintf(set, sizeof set, "SET lock_timeout = %d; SET client_min_messages = %s", timeout,
             ps->notices ? ps->notices : "notice");
    if (!pg_exec(conn, "setting lock_timeout", set))
        return false;
    for (int attempt = 1;; attempt++) {
        PGresult *r =
            ps->simple ? PQexec(conn, ps->sql)
                       : PQexecParams(conn, ps->sql, ps->nparams, NULL, ps->params, NULL, NULL, 0);
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
            PQclear(r);
            return true;
        }
        char line[1024];
        if (r)
            pg_result_error_line(r, line, sizeof line);
        else
            snprintf(line, sizeof line, "%s", PQerrorMessage(conn));
        bool lock = strcmp(pg_sqlstate(r), "55P03") == 0;
        PQclear(r);
        if (!lock || attempt >= POST_LOCK_ATTEMPTS) {
            log_error("%s: %s%s", ps->what, line,
                      lock ? " (every attempt; the application holds the table)" : "");
            return false;
        }
        log_info("%s: no lock within %d ms (attempt %d of %d), the application goes first; "
                 "again in %d ms",
                 ps->what, timeout, attempt, POST_LOCK_ATTEMPTS, pause_ms);
        usleep((useconds_t)pause_ms * 1000);
        pause_ms = pause_ms * 2 > 5000 ? 5000 : pause_ms * 2;
    }
}

bool cutover_finish(pgs_migration *m)
{
    /* The record is read and written on the state connection. */
    char *js = state_read_cutover(m);
    json_error_t jerr;
    json_t *o = js ? json_loads(js, 0, &jerr) : NULL;
    free(js);
    if (o == NULL)
        return false;
    bool ok = false;
    PGconn *conn = NULL;
    if (json_is_true(json_object_get(o, "post_done"))) {
        ok = true;
        goto out;
    }
    json_t *steps = json_object_get(o, "post_steps");
    if (!json_is_array(steps)) {
        refuse_stored_sql(m, o);
        goto out;
    }
    cutover_crash_point("finish");
    conn = pg_connect(conninfo(m), "source (after the cutover)", false);
    if (conn == NULL)
        goto out;
    /* Cost-based delay: the application writes to these tables now, and
     * an unthrottled ANALYZE on a small machine shows in its latency. */
    ok = pg_exec(conn, "throttling ANALYZE", "SET vacuum_cost_delay = '2ms'");
    size_t i;
    json_t *v;
    json_array_foreach(steps, i, v)
    {
        if (!ok)
            break;
        post_stmt ps = {0};
        if (!step_sql(conn, v, &ps)) {
            if (ps.said) {
                ok = false;
                break;
            }
            char *bad = json_dumps(v, JSON_COMPACT);
            log_error("migration %s: step %zu after the cutover is not one pgshift knows (%s); "
                      "nothing more is run; fix: do it by hand, then record the steps as done "
                      "(cutover->post_done in pgshift.migrations)",
                      m->plan->name, i + 1, bad ? bad : "?");
            free(bad);
            ok = false;
            break;
        }
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        const char *kind = json_string_value(json_object_get(v, "step"));
        ok = post_step_run(
            conn, m, &ps,
            kind && (strcmp(kind, "fk_drop_old") == 0 || strcmp(kind, "fk_parent") == 0));
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if (ok)
            log_info("%s: done in %.1f s", ps.nparams ? ps.what : ps.sql,
                     (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
        post_stmt_free(&ps);
    }
    if (ok)
        ok = state_merge_cutover(m, "{\"post_done\": true}");
out:
    json_decref(o);
    if (conn)
        PQfinish(conn);
    return ok;
}
