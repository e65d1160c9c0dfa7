/* commands.c: the table of subcommands and the top-level usage text. */
#include "pgshift/cli.h"

#include <stdio.h>

int cmd_plan(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_status(int argc, char **argv);
int cmd_abort(int argc, char **argv);
int cmd_cutover(int argc, char **argv);
int cmd_cleanup(int argc, char **argv);
int cmd_pause(int argc, char **argv);
int cmd_resume(int argc, char **argv);
int cmd_postpone(int argc, char **argv);
int cmd_unpostpone(int argc, char **argv);
int cmd_verify(int argc, char **argv);
int cmd_rollback(int argc, char **argv);

const pgs_command pgs_commands[] = {
    {"plan", "dry run: check the server and tables, print what run would do", cmd_plan},
    {"run", "copy, then stream and apply changes; resumes when re-run", cmd_run},
    {"status", "phase, per-table progress, lag and apply rate", cmd_status},
    {"cutover", "ask the running `run` to swap the tables now; waits for the outcome", cmd_cutover},
    {"pause", "pause the running apply (the lag grows until resume)", cmd_pause},
    {"resume", "resume a paused apply", cmd_resume},
    {"postpone", "hold back the automatic cutover until unpostpone", cmd_postpone},
    {"unpostpone", "let the automatic cutover proceed (overrides the plan's postpone)",
     cmd_unpostpone},
    {"verify", "compare source and target at one LSN, name the rows that differ", cmd_verify},
    {"rollback", "during the rollback window: swap back, the old tables live again", cmd_rollback},
    {"cleanup", "after the cutover: drop the old tables, slot and publication (--confirm)",
     cmd_cleanup},
    {"abort", "drop the slot, publication, state and created targets (--confirm)", cmd_abort},
    {0},
};

void pgs_usage(void *stream)
{
    FILE *out = stream;
    fprintf(out,
            "pgshift %s: move live PostgreSQL tables into new ones (for example a\n"
            "partitioned table) while the application keeps writing, then swap them.\n\n"
            "Usage: pgshift COMMAND [OPTIONS]\n"
            "       pgshift --help | --version\n\n"
            "Commands:\n",
            PGSHIFT_VERSION);
    for (const pgs_command *c = pgs_commands; c->name; c++)
        fprintf(out, "  %-10s %s\n", c->name, c->summary);
    fprintf(out, "\nRun `pgshift COMMAND --help` for the options of a command.\n"
                 "Exit codes: 0 success, 1 runtime failure, 2 usage or plan-file error,\n"
                 "3 preflight found blocking problems, 4 verify found differences.\n");
}
