/* cmd_run.c: `pgshift run`: preflight, prepare, snapshot copy, then stream
 * and apply until stopped. Re-running resumes from the state in the
 * target database. */
#include "pgshift/cli.h"
#include "pgshift/cli_common.h"
#include "pgshift/cutover.h"
#include "pgshift/hooks.h"
#include "pgshift/log.h"
#include "pgshift/migration.h"
#include "pgshift/pg.h"
#include "pgshift/repl.h"
#include "pgshift/status.h"
#include "pgshift/copy.h"
#include "pgshift/preflight.h"
#include "pgshift/rollback.h"
#include "pgshift/prepare.h"
#include "pgshift/run.h"
#include "pgshift/state.h"
#include "pgshift/store.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char usage[] =
    "Usage: pgshift run --plan FILE [--auto-cutover] [--http ADDR [--http-show-queries]]\n\n"
    "Moves the plan's tables into their targets while the application keeps\n"
    "writing:\n"
    "  1. preflight (as `pgshift plan`); stops with exit 3 on a blocking problem\n"
    "  2. publication and logical slot pgshift_<name> with an exported snapshot;\n"
    "     targets with a `partition:` spec are created (indexes after the data)\n"
    "  3. parallel copy of that snapshot (progress bar on a terminal)\n"
    "  4. stream the changes since the snapshot and apply them in commit order,\n"
    "     exactly once, until cut over or stopped (SIGINT/SIGTERM stop cleanly)\n"
    "  5. cutover, when `pgshift cutover` asks for it or, with --auto-cutover, as\n"
    "     soon as the lag is under cutover.max_lag (unless cutover.postpone is true\n"
    "     or cutover.postpone_file exists; the plan file is re-read for these):\n"
    "     lock the sources (cutover.lock_timeout; retried up to cutover.attempts,\n"
    "     naming the blocker), fence in the WAL, apply up to it, hand over\n"
    "     sequences, views, foreign keys, grants, triggers and policies, rename\n"
    "     <table> to <table>_old and the target to <table>, commit; then validate\n"
    "     the foreign keys and ANALYZE. The old tables, slot and publication stay\n"
    "     until `pgshift cleanup --confirm`.\n\n"
    "Run it again after any stop or crash: it resumes from the state kept in\n"
    "schema pgshift of the target database (an interrupted copy starts over;\n"
    "streaming continues after the last applied transaction).\n\n"
    "Options:\n"
    "  --plan FILE         the migration plan (YAML)\n"
    "  --auto-cutover      cut over by itself once caught up (see 5.)\n"
    "  --http ADDR         serve /metrics (Prometheus), /status (JSON) and / (a live\n"
    "                      dashboard) on ADDR while streaming, e.g. 127.0.0.1:9187;\n"
    "                      a bare port (9187) means loopback; other addresses only\n"
    "                      when given explicitly\n"
    "  --http-show-queries also show, on an --http address other than loopback,\n"
    "                      the SQL text of the session that blocks a cutover (from\n"
    "                      pg_stat_activity); without it /status and the dashboard\n"
    "                      read \"" BOARD_QUERY_HIDDEN "\" there. On loopback\n"
    "                      (127.0.0.1, ::1, a bare port) it is always shown\n"
    "  --log-level LEVEL   debug, info (default), warn, error\n"
    "  --log-format FMT    text (default) or json\n\n"
    "Exit codes: 0 cut over, 1 runtime failure (the message says what and where;\n"
    "nothing past the last applied transaction was acknowledged), 2 usage or\n"
    "plan-file error, 3 preflight found blocking problems, 130/143 stopped by\n"
    "SIGINT/SIGTERM (resume with the same command).\n";

int cmd_run(int argc, char **argv);

static bool all_copied(const pgs_migration *m)
{
    for (int i = 0; i < m->ntables; i++)
        if (!m->tables[i].copy_done)
            return false;
    return m->has_state;
}

/* Publication, slot, targets and the copy, from scratch. */
static bool prepare_and_copy(pgs_migration *m)
{
    if (m->has_state) {
        if (m->phase != PGS_PHASE_ROLLED_BACK)
            log_info("migration %s: the previous copy did not finish; starting it again",
                     m->plan->name);
        if (!prepare_drop_slot(m))
            return false;
    }
    PGconn *repl = NULL;
    char *snapshot = NULL;
    pgs_lsn consistent = 0;
    bool ok = state_begin_copy(m) && prepare_targets(m) && prepare_publication(m) &&
              repl_create_slot(m, &repl, &snapshot, &consistent) &&
              state_set_consistent_lsn(m, consistent);
    double t0 = pgs_now_ms();
    ok = ok && copy_run(m, snapshot, &repl);
    double t1 = pgs_now_ms();
    ok = ok && prepare_target_indexes(m);
    if (ok) {
        state_set_timing(m, "copy_s", (t1 - t0) / 1000.0);
        state_set_timing(m, "index_build_s", (pgs_now_ms() - t1) / 1000.0);
    }
    if (repl)
        PQfinish(repl);
    free(snapshot);
    return ok && state_copy_done(m);
}

/* ANALYZE of the freshly copied targets runs on its own connection while
 * the stream starts: nothing waits for the statistics, and on a 2M-row
 * table it takes about as long as the copy itself. */
typedef struct analyzer {
    pthread_t thread;
    bool started;
    char *conninfo;
    char **tables;  /* quoted target names, NULL-terminated */
    pgs_mtable *mt; /* the tables: `analyzed` set when its ANALYZE succeeded */
    atomic_bool *analyzing;
} analyzer;

static void *analyze_targets(void *arg)
{
    analyzer *z = arg;
    PGconn *conn = pg_connect(z->conninfo, "target (analyze)", false);
    for (int i = 0; conn && z->tables[i]; i++) {
        char **t = &z->tables[i];
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        char *sql = NULL;
        bool ok = asprintf(&sql, "ANALYZE %s", *t) >= 0 && pg_exec(conn, "analyzing a target", sql);
        free(sql);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if (ok)
            z->mt[i].analyzed = true;
        if (ok)
            log_info("target %s analyzed in %.1f s (in the background)", *t,
                     (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
    }
    if (conn)
        PQfinish(conn);
    atomic_store(z->analyzing, false);
    return NULL;
}

static void analyzer_start(analyzer *z, pgs_migration *m)
{
    memset(z, 0, sizeof *z);
    z->conninfo = m->plan->target ? m->plan->target : m->plan->source;
    z->tables = calloc((size_t)m->ntables + 1, sizeof(char *));
    z->mt = m->tables;
    if (z->tables == NULL)
        return;
    for (int i = 0; i < m->ntables; i++) {
        z->tables[i] = strdup(m->tables[i].tgt.qname ? m->tables[i].tgt.qname : "");
        m->tables[i].analyzed = false;
        m->tables[i].changes_at_analyze = m->tables[i].changes_applied;
    }
    z->analyzing = &m->analyzing;
    atomic_store(&m->analyzing, true);
    z->started = pthread_create(&z->thread, NULL, analyze_targets, z) == 0;
    if (!z->started)
        atomic_store(&m->analyzing, false);
}

static void analyzer_finish(analyzer *z)
{
    if (z->started)
        pthread_join(z->thread, NULL);
    for (char **t = z->tables; t && *t; t++)
        free(*t);
    free(z->tables);
}

/* One line: where this migration's time went. */
static void log_timings(const pgs_migration *m)
{
    char buf[512];
    if (timings_text(&m->timings, buf, sizeof buf) > 0)
        log_info("time: %s; this run %.1f s", buf, (pgs_now_ms() - m->run_started_ms) / 1000.0);
}

/* After the swap: validate, analyze, and say where things are. */
static int after_cutover(pgs_migration *m)
{
    double t0 = pgs_now_ms();
    if (!cutover_finish(m)) {
        log_error("migration %s is cut over, but the steps after it did not finish (see above); "
                  "run `pgshift run` again to finish them",
                  m->plan->name);
        return PGS_EXIT_FAILURE;
    }
    PGresult *r = store_read_cutover_summary(m->tgt, m->row);
    if (r && PQntuples(r) == 1 && m->phase == PGS_PHASE_REVERSIBLE) {
        log_info("migration %s cut over at %s%s%s%s; the old tables are %s, kept current for the "
                 "rollback window",
                 m->plan->name, PQgetvalue(r, 0, 2),
                 PQgetisnull(r, 0, 0) ? "" : " (write-blocking window ",
                 PQgetisnull(r, 0, 0) ? "" : PQgetvalue(r, 0, 0),
                 PQgetisnull(r, 0, 0) ? "" : " ms)", PQgetvalue(r, 0, 1));
    } else if (r && PQntuples(r) == 1) {
        log_info("migration %s cut over at %s%s%s%s; the old tables are %s (kept; `pgshift cleanup "
                 "--plan %s --confirm` drops them with slot %s, which retains WAL until then)",
                 m->plan->name, PQgetvalue(r, 0, 2),
                 PQgetisnull(r, 0, 0) ? "" : " (write-blocking window ",
                 PQgetisnull(r, 0, 0) ? "" : PQgetvalue(r, 0, 0),
                 PQgetisnull(r, 0, 0) ? "" : " ms)", PQgetvalue(r, 0, 1), m->plan->path, m->slot);
    }
    PQclear(r);
    state_set_timing(m, "after_swap_s", (pgs_now_ms() - t0) / 1000.0);
    log_timings(m);
    return PGS_EXIT_OK;
}

int cmd_run(int argc, char **argv)
{
    cli_opts o;
    int rc;
    rc = cli_parse(argc, argv, "auto-cutover,http,http-show-queries", usage, &o);
    if (rc >= 0)
        return rc;
    if (o.http_show_queries && o.http == NULL) {
        fprintf(stderr, "pgshift run: --http-show-queries needs --http ADDR\n\n%s", usage);
        return PGS_EXIT_USAGE;
    }
    pgs_migration *m = cli_open(argc, argv, "auto-cutover,http,http-show-queries", usage, &o, &rc);
    if (m == NULL)
        return rc;
    pgs_plan *plan = m->plan;
    m->run_started_ms = pgs_now_ms();
    m->auto_cutover = o.auto_cutover;
    m->http_addr = o.http;
    rc = PGS_EXIT_FAILURE;
    if (!state_lock(m) || !state_load(m))
        goto done;
    if (m->phase == PGS_PHASE_DONE) {
        log_info("migration %s is already cut over", plan->name);
        rc = after_cutover(m);
        goto done;
    }
    if (m->phase == PGS_PHASE_REVERSIBLE) {
        log_info("migration %s is cut over; its rollback window is open", plan->name);
        rc = after_cutover(m);
        if (rc == PGS_EXIT_OK)
            rc = reverse_run(m, false);
        goto done;
    }
    if (m->phase == PGS_PHASE_ROLLED_BACK && (rc = reverse_run(m, false)) != PGS_EXIT_OK)
        goto done;
    rc = PGS_EXIT_FAILURE;
    int blocking = preflight_run(m, m->has_state, stdout);
    fflush(stdout);
    if (blocking != 0) {
        rc = blocking > 0 ? PGS_EXIT_PREFLIGHT : PGS_EXIT_FAILURE;
        if (blocking > 0)
            log_error("preflight found %d blocking problem(s); nothing was changed", blocking);
        goto done;
    }
    if (!state_ensure_schema(m))
        goto done;
    /* Up before the copy, which can take hours: /metrics shows its progress. */
    if (m->http_addr) {
        if (!board_start(m->http_addr, o.http_show_queries)) {
            log_error("--http %s: the HTTP server did not start (see above); fix the address or "
                      "leave --http out",
                      m->http_addr);
            goto done;
        }
        log_info("HTTP on %s (port %d): /metrics, /status, / (dashboard)%s", m->http_addr,
                 board_port(),
                 board_shows_queries() ? ""
                                       : "; not loopback, so a cutover blocker's query is "
                                         "hidden (--http-show-queries shows it)");
    }
    /* Rolled back: the tables move again, from a new copy. */
    bool copied_now = !all_copied(m) || m->phase == PGS_PHASE_ROLLED_BACK;
    if (m->phase == PGS_PHASE_ROLLED_BACK)
        log_info("migration %s was rolled back; it starts again from a new copy", plan->name);
    if (copied_now && !prepare_and_copy(m)) {
        log_error("migration %s: the copy failed; fix the cause and run again (the copy "
                  "restarts)",
                  plan->name);
        hooks_fire(plan, "failed",
                   "{\"phase\": \"failed\", \"error\": \"the copy failed; see the log\"}");
        goto done;
    }
    /* A reverse slot left by an attempt that never swapped would hold WAL
     * while this run streams; the cutover makes it again. */
    if (rollback_slot_exists(m->src, plan->name) > 0 && !rollback_drop(m->src, plan->name))
        goto done;
    analyzer z = {0};
    m->just_copied = copied_now;
    if (copied_now)
        analyzer_start(&z, m);
    rc = run_engine(m);
    analyzer_finish(&z);
    if (rc == 0 && (m->phase == PGS_PHASE_DONE || m->phase == PGS_PHASE_REVERSIBLE))
        rc = after_cutover(m);
    if (rc == 0 && m->phase == PGS_PHASE_REVERSIBLE)
        rc = reverse_run(m, false);
done:
    board_stop();
    cli_close(m);
    return rc;
}
