/* cmd_plan.c: `pgshift plan`: the dry run. Checks everything and prints
 * what `run` would do; changes nothing. */
#include "pgshift/cli.h"
#include "pgshift/cli_common.h"
#include "pgshift/migration.h"
#include "pgshift/preflight.h"
#include "pgshift/state.h"

#include <stdio.h>

static const char usage[] =
    "Usage: pgshift plan --plan FILE\n\n"
    "Dry run: reads the plan, connects to the source, and checks everything `run`\n"
    "needs (wal_level, free slots and WAL senders, replication privilege, keys and\n"
    "replica identity, target columns, partition coverage of the existing rows,\n"
    "a table's column mapping: each expression run over the source's rows),\n"
    "then lists sizes, dependent objects and the steps `run` would take.\n"
    "It changes nothing on the server.\n\n"
    "Options:\n"
    "  --plan FILE         the migration plan (YAML)\n"
    "  --log-level LEVEL   debug, info (default), warn, error\n"
    "  --log-format FMT    text (default) or json\n\n"
    "Exit codes: 0 ready to run, 1 could not check (connection, query),\n"
    "2 usage or plan-file error, 3 blocking problems found (each printed as BLOCK\n"
    "with its fix).\n";

int cmd_plan(int argc, char **argv);

int cmd_plan(int argc, char **argv)
{
    cli_opts o;
    int rc;
    pgs_migration *m = cli_open(argc, argv, "", usage, &o, &rc);
    if (m == NULL)
        return rc;
    pgs_plan *plan = m->plan;
    rc = PGS_EXIT_FAILURE;
    if (state_load(m)) {
        if (m->has_state)
            printf("Migration %s is under way (phase %s): checks that only hold before the copy "
                   "are skipped.\n\n",
                   plan->name, pgs_phase_name(m->phase));
        int blocking = preflight_run(m, m->has_state, stdout);
        rc = blocking < 0 ? PGS_EXIT_FAILURE : blocking > 0 ? PGS_EXIT_PREFLIGHT : PGS_EXIT_OK;
    }
    cli_close(m);
    return rc;
}
