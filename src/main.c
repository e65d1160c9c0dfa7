/* main.c: entry point; dispatches to the subcommand named by argv[1]. */
#include "pgshift/cli.h"

#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc < 2) {
        pgs_usage(stderr);
        return PGS_EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        pgs_usage(stdout);
        return PGS_EXIT_OK;
    }
    if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0) {
        printf("pgshift %s\n", PGSHIFT_VERSION);
        return PGS_EXIT_OK;
    }
    for (const pgs_command *c = pgs_commands; c->name; c++) {
        if (strcmp(cmd, c->name) == 0)
            return c->run(argc - 1, argv + 1);
    }
    fprintf(stderr, "pgshift: unknown command \"%s\"\n\n", cmd);
    pgs_usage(stderr);
    return PGS_EXIT_USAGE;
}
