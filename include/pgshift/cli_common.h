/* cli_common.h: options every plan-driven command shares. */
#ifndef PGSHIFT_CLI_COMMON_H
#define PGSHIFT_CLI_COMMON_H

#include "pgshift/plan.h"

#include <stdbool.h>

typedef struct cli_opts {
    const char *plan_path;
    bool json;
    bool confirm;
    bool auto_cutover;
    bool watch;
    const char *http;       /* --http ADDR */
    bool http_show_queries; /* --http-show-queries */
    const char *table;      /* --table T (verify) */
    bool repair;            /* --repair (verify) */
    bool help;
} cli_opts;

/* Parses --plan FILE, --json, --confirm and --auto-cutover (the last three
 * only where `allowed` lists them, as "json,confirm"), --log-level and
 * --log-format. Prints `usage` for --help. Returns -1 to go on, or the exit
 * code to return at once (0 after --help, 2 on a usage error). */
int cli_parse(int argc, char **argv, const char *allowed, const char *usage, cli_opts *out);

/* Loads the plan named by --plan; prints the one-line error and returns
 * NULL on failure (exit 2). */
pgs_plan *cli_load_plan(const cli_opts *o);

struct pgs_migration;

/* The prologue of every plan-driven command: parses the options, loads the
 * plan and opens the migration (connections, catalog). Returns NULL with
 * *rc set to the exit code to return at once (after --help, a usage or
 * plan error, a connection failure). Release with cli_close(). */
struct pgs_migration *cli_open(int argc, char **argv, const char *allowed, const char *usage,
                               cli_opts *o, int *rc);
/* Closes the migration and frees its plan. */
void cli_close(struct pgs_migration *m);

/* Sends one control request (pgshift.proto Command) to the `pgshift run`
 * serving this plan (<state_dir>/pgshift-<name>.sock) and waits for the
 * reply (timeout_ms <= 0: no limit). Returns 0 with *reply (free with
 * pgshift__control_reply__free_unpacked), -1 when no run serves the plan
 * (logged only when `quiet` is false), -2 on another error (logged). */
int cli_ask_run(const pgs_plan *plan, int command, bool confirm, int timeout_ms, bool quiet,
                void **reply);

/* Sends `command` to the live run and waits for its answer, logged (a
 * refusal as "<what>: <why>"): PGS_EXIT_OK done, PGS_EXIT_FAILURE refused
 * or the socket failed, -1 no run answers (logged unless quiet). */
int cli_ask_outcome(const pgs_plan *plan, int command, bool quiet, const char *what);

/* Asks the live `pgshift run` of the plan, if any, to stop (as for
 * `abort`); true when none answers or it stops, false when it refused. */
bool cli_stop_live_run(const pgs_plan *plan);

#endif
