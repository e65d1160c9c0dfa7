/* cmd_run.c: `pgshift run`: preflight, prepare, snapshot copy, then stream
 * and apply until stopped. Re-running resumes from the state in the
 * target database. */
#include "pgshift/cli.h"
#include "pgshift/cli_common.h"
#include "pgshift/log.h"
#include "pgshift/migration.h"
#include "pgshift/pg.h"
#include "pgshift/repl.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static const char usage[] =
    "Usage: pgshift run --plan FILE\n\n"
    "Moves the plan's tables into their targets while the application keeps\n"
    "writing:\n"
    "  1. preflight (as `pgshift plan`); stops with exit 3 on a blocking problem\n"
    "  2. publication and logical slot pgshift_<name> with an exported snapshot;\n"
    "     targets with a `partition:` spec are created (indexes after the data)\n"
    "  3. parallel copy of that snapshot (progress bar on a terminal)\n"
    "  4. stream the changes since the snapshot and apply them in commit order,\n"
    "     exactly once, until stopped (SIGINT/SIGTERM stop cleanly)\n\n"
    "Run it again after any stop or crash: it resumes from the state kept in\n"
    "schema pgshift of the target database (an interrupted copy starts over;\n"
    "streaming continues after the last applied transaction).\n\n"
    "Options:\n"
    "  --plan FILE         the migration plan (YAML)\n"
    "  --log-level LEVEL   debug, info (default), warn, error\n"
    "  --log-format FMT    text (default) or json\n\n"
    "Exit codes: 0 done, 1 runtime failure (the message says what and where;\n"
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
              state_set_consistent_lsn(m, consistent) && copy_run(m, snapshot, &repl) &&
              prepare_target_indexes(m);
    if (repl)
        PQfinish(repl);
    free(snapshot);
    for (int i = 0; ok && i < m->ntables; i++) {
        char *sql = NULL;
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        ok = asprintf(&sql, "ANALYZE %s", m->tables[i].tgt.qname) >= 0 &&
             pg_exec(m->tgt, "analyzing the target", sql);
        free(sql);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if (ok)
            log_info("table %s: target analyzed in %.1f s", m->tables[i].src.qname,
                     (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
    }
    return ok && state_copy_done(m);
}

int cmd_run(int argc, char **argv)
{
    cli_opts o;
    int rc;
    pgs_migration *m = cli_open(argc, argv, "", usage, &o, &rc);
    if (m == NULL)
        return rc;
    pgs_plan *plan = m->plan;
    rc = PGS_EXIT_FAILURE;
    if (!state_lock(m) || !state_load(m))
        goto done;
    if (m->phase == PGS_PHASE_DONE) {
        log_info("migration %s is already cut over; nothing to do", plan->name);
        rc = PGS_EXIT_OK;
        goto done;
    }
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
    if (!all_copied(m) && !prepare_and_copy(m)) {
        log_error("migration %s: the copy failed; fix the cause and run again (the copy "
                  "restarts)",
                  plan->name);
        goto done;
    }
    rc = stream_run(m);
done:
    cli_close(m);
    return rc;
}
