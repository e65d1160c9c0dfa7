/* cmd_rollback.c: `pgshift rollback`: during the rollback window, the swap
 * back (src/run/reverse.c). */
#include "pgshift/cli.h"
#include "pgshift/cli_common.h"
#include "pgshift/control.h"
#include "pgshift/log.h"
#include "pgshift/migration.h"
#include "pgshift/run.h"
#include "pgshift/state.h"

#include <stdio.h>

static const char usage[] =
    "Usage: pgshift rollback --plan FILE\n\n"
    "After a cutover with a rollback window (plan `rollback: {window: 24h}`),\n"
    "while the window is open: swaps back. The old tables, which the reverse\n"
    "stream kept current with every change the application made to the new\n"
    "ones, become the live tables again:\n"
    "  - it waits for the reverse lag to be under cutover.max_lag;\n"
    "  - locks the live tables with cutover.lock_timeout (no lock queue; retried\n"
    "    up to cutover.attempts times, naming the session that blocked);\n"
    "  - fences the WAL, applies up to the fence, then in one transaction renames\n"
    "    <table> back to the target's name and <table>_old to <table>, and hands\n"
    "    sequences (above every value the new table used), views, foreign keys,\n"
    "    grants, triggers and policies back to the old table.\n"
    "The application waits milliseconds, as in the cutover.\n\n"
    "If a `pgshift run` of the plan streams the window, it is asked over its\n"
    "control socket and this command waits for the outcome; if none runs, this\n"
    "command streams the changes itself up to the swap back.\n\n"
    "Afterwards `pgshift run` moves the tables again from a new copy, and\n"
    "`pgshift abort --confirm` ends the migration.\n\n"
    "Options:\n"
    "  --plan FILE         the migration plan (YAML)\n"
    "  --log-level LEVEL   debug, info (default), warn, error\n"
    "  --log-format FMT    text (default) or json\n\n"
    "Exit codes: 0 rolled back, 1 not rolled back (the message says why; the\n"
    "window stays open), 2 usage or plan-file error.\n";

int cmd_rollback(int argc, char **argv);

int cmd_rollback(int argc, char **argv)
{
    cli_opts o;
    int rc = cli_parse(argc, argv, "", usage, &o);
    if (rc >= 0)
        return rc;
    pgs_plan *plan = cli_load_plan(&o);
    if (plan == NULL)
        return PGS_EXIT_USAGE;
    rc = cli_ask_outcome(plan, PGSHIFT__COMMAND__COMMAND_ROLLBACK, true, "rollback");
    pgs_plan_free(plan);
    if (rc != -1)
        return rc;
    /* No run answers: the reverse stream runs here, up to the swap back. */
    pgs_migration *m = cli_open(argc, argv, "", usage, &o, &rc);
    if (m == NULL)
        return rc;
    m->run_started_ms = pgs_now_ms();
    rc = PGS_EXIT_FAILURE;
    if (!state_lock(m) || !state_load(m))
        goto done;
    if (m->has_state && m->phase == PGS_PHASE_REVERSIBLE) {
        log_info("no `pgshift run` streams the rollback window of %s: streaming it here up to "
                 "the swap back",
                 m->plan->name);
        rc = reverse_run(m, true);
    } else if (m->has_state && m->phase == PGS_PHASE_ROLLED_BACK) {
        rc = reverse_run(m, false);
        if (rc == PGS_EXIT_OK)
            log_info("migration %s is rolled back", m->plan->name);
    } else
        log_error("migration %s has no rollback window open (phase %s): a rollback needs a "
                  "cutover with `rollback: {window: ...}` in the plan, within that window; "
                  "before the cutover `pgshift abort --confirm` ends a migration",
                  m->plan->name, m->has_state ? pgs_phase_name(m->phase) : "none");
done:
    cli_close(m);
    return rc;
}
