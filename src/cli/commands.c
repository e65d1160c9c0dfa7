/* commands.c: the table of subcommands and the top-level usage text. */
#include "pgshift/cli.h"

#include <stdio.h>

const pgs_command pgs_commands[] = {
    {0},
};

void pgs_usage(void *stream)
{
    FILE *out = stream;
    fprintf(out, "pgshift %s: move live PostgreSQL tables into new ones (for example a\n"
                 "partitioned table) while the application keeps writing, then swap them.\n\n"
                 "Usage: pgshift COMMAND [OPTIONS]\n"
                 "       pgshift --help | --version\n\n"
                 "Commands:\n",
            PGSHIFT_VERSION);
    for (const pgs_command *c = pgs_commands; c->name; c++)
        fprintf(out, "  %-10s %s\n", c->name, c->summary);
    fprintf(out, "\nRun `pgshift COMMAND --help` for the options of a command.\n"
                 "Exit codes: 0 success, 1 runtime failure, 2 usage or plan-file error,\n"
                 "3 preflight found blocking problems.\n");
}
