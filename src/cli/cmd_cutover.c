/* cmd_cutover.c: `pgshift cutover`: asks the running `pgshift run` of the
 * plan, over its control socket, to cut over, and waits for the outcome. */
#include "pgshift/cli.h"
#include "pgshift/cli_common.h"
#include "pgshift/control.h"
#include "pgshift/log.h"

#include <stdio.h>
#include <stdlib.h>

static const char usage[] =
    "Usage: pgshift cutover --plan FILE\n\n"
    "Asks the `pgshift run` of this plan (through the control socket\n"
    "<state_dir>/pgshift-<name>.sock, on this machine) to swap the tables, and\n"
    "waits until it is done or given up:\n"
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

int cmd_cutover(int argc, char **argv);

int cmd_cutover(int argc, char **argv)
{
    cli_opts o;
    int rc = cli_parse(argc, argv, "", usage, &o);
    if (rc >= 0)
        return rc;
    pgs_plan *plan = cli_load_plan(&o);
    if (plan == NULL)
        return PGS_EXIT_USAGE;
    char *path = control_socket_path(plan->state_dir, plan->name);
    Pgshift__ControlRequest req = PGSHIFT__CONTROL_REQUEST__INIT;
    req.command = PGSHIFT__COMMAND__COMMAND_CUTOVER;
    Pgshift__ControlReply *reply = NULL;
    char err[512] = "";
    log_info("asking the running pgshift run to cut over migration %s", plan->name);
    int r = path ? control_request(path, &req, &reply, 0, err, sizeof err) : -2;
    if (r == -1) {
        log_error("no `pgshift run` is serving migration %s (%s): start it with `pgshift run "
                  "--plan %s` and ask again, or let it cut over by itself with --auto-cutover",
                  plan->name, err, plan->path);
        rc = PGS_EXIT_FAILURE;
    } else if (r != 0) {
        log_error("control socket %s: %s", path ? path : "?", err);
        rc = PGS_EXIT_FAILURE;
    } else if (reply->ok) {
        log_info("%s", reply->message);
        rc = PGS_EXIT_OK;
    } else {
        log_error("not cut over: %s", reply->message);
        rc = PGS_EXIT_FAILURE;
    }
    if (reply)
        pgshift__control_reply__free_unpacked(reply, NULL);
    free(path);
    pgs_plan_free(plan);
    return rc;
}
