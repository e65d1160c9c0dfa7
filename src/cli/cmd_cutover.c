/* cmd_cutover.c: the commands that steer a running `pgshift run` over its
 * control socket: cutover, pause, resume, postpone, unpostpone. */
#include "pgshift/cli.h"
#include "pgshift/cli_common.h"
#include "pgshift/control.h"
#include "pgshift/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage_cutover[] =
    "Usage: pgshift cutover --plan FILE\n\n"
    "Asks the `pgshift run` of this plan (through the control socket\n"
    "<state_dir>/pgshift-<uid>/pgshift-<name>.sock, on this machine, so run it as\n"
    "the same user as `run`) to swap the tables, and waits until it is done or\n"
    "given up:\n"
    "  - it waits for the lag to be under cutover.max_lag (postpone settings do\n"
    "    not hold back a requested cutover);\n"
    "  - locks the sources with cutover.lock_timeout, retrying with backoff up to\n"
    "    cutover.attempts times and naming the session that blocked;\n"
    "  - fences the WAL, applies up to the fence, hands over the dependent objects\n"
    "    and renames <table> -> <table>_old, target -> <table> in one transaction.\n"
    "If it gives up, nothing is renamed and the migration keeps streaming.\n\n"
    "Options:\n"
    "  --plan FILE   the migration plan (YAML)\n\n"
    "Exit codes: 0 cut over, 1 not cut over (the message says why), 2 usage or\n"
    "plan-file error.\n";

static const char usage_pause[] =
    "Usage: pgshift pause --plan FILE\n\n"
    "Pauses the running `pgshift run`: the applier commits what it has, the\n"
    "replication connection closes, and the slot keeps the WAL, so the lag grows\n"
    "(watch `pgshift status`) until `pgshift resume`. Refused during a cutover.\n\n"
    "Options:\n  --plan FILE   the migration plan (YAML)\n\n"
    "Exit codes: 0 paused, 1 refused or no run, 2 usage error.\n";

static const char usage_resume[] =
    "Usage: pgshift resume --plan FILE\n\n"
    "Resumes a paused `pgshift run`: it reconnects and drains the lag.\n\n"
    "Options:\n  --plan FILE   the migration plan (YAML)\n\n"
    "Exit codes: 0 resumed (or was not paused), 1 no run, 2 usage error.\n";

static const char usage_postpone[] =
    "Usage: pgshift postpone --plan FILE\n\n"
    "Holds back the automatic cutover of a `pgshift run --auto-cutover` until\n"
    "`pgshift unpostpone`, whatever the plan's cutover.postpone says. A requested\n"
    "`pgshift cutover` is not held back.\n\n"
    "Options:\n  --plan FILE   the migration plan (YAML)\n\n"
    "Exit codes: 0 done, 1 no run, 2 usage error.\n";

static const char usage_unpostpone[] =
    "Usage: pgshift unpostpone --plan FILE\n\n"
    "Lets the automatic cutover of a `pgshift run --auto-cutover` proceed as soon\n"
    "as the lag allows, overriding the plan's cutover.postpone and\n"
    "cutover.postpone_file.\n\n"
    "Options:\n  --plan FILE   the migration plan (YAML)\n\n"
    "Exit codes: 0 done, 1 no run, 2 usage error.\n";

static int ask(int argc, char **argv, const char *usage, Pgshift__Command command, const char *hint)
{
    cli_opts o;
    int rc = cli_parse(argc, argv, "", usage, &o);
    if (rc >= 0)
        return rc;
    pgs_plan *plan = cli_load_plan(&o);
    if (plan == NULL)
        return PGS_EXIT_USAGE;
    rc = cli_ask_outcome(plan, command, false, argv[0]);
    if (rc == -1 && hint)
        log_error("%s", hint);
    if (rc == -1)
        rc = PGS_EXIT_FAILURE;
    pgs_plan_free(plan);
    return rc;
}

int cmd_cutover(int argc, char **argv);
int cmd_pause(int argc, char **argv);
int cmd_resume(int argc, char **argv);
int cmd_postpone(int argc, char **argv);
int cmd_unpostpone(int argc, char **argv);

int cmd_cutover(int argc, char **argv)
{
    return ask(argc, argv, usage_cutover, PGSHIFT__COMMAND__COMMAND_CUTOVER,
               "or let it cut over by itself with `pgshift run --auto-cutover`");
}

int cmd_pause(int argc, char **argv)
{
    return ask(argc, argv, usage_pause, PGSHIFT__COMMAND__COMMAND_PAUSE, NULL);
}

int cmd_resume(int argc, char **argv)
{
    return ask(argc, argv, usage_resume, PGSHIFT__COMMAND__COMMAND_RESUME, NULL);
}

int cmd_postpone(int argc, char **argv)
{
    return ask(argc, argv, usage_postpone, PGSHIFT__COMMAND__COMMAND_POSTPONE, NULL);
}

int cmd_unpostpone(int argc, char **argv)
{
    return ask(argc, argv, usage_unpostpone, PGSHIFT__COMMAND__COMMAND_UNPOSTPONE, NULL);
}
