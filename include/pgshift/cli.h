/* cli.h: the subcommands of the pgshift binary. Each takes the arguments
 * after its name (argv[0] is the command name) and returns the exit code. */
#ifndef PGSHIFT_CLI_H
#define PGSHIFT_CLI_H

/* Exit codes shared by every command. */
enum {
    PGS_EXIT_OK = 0,
    PGS_EXIT_FAILURE = 1,   /* runtime failure */
    PGS_EXIT_USAGE = 2,     /* usage or plan-file error */
    PGS_EXIT_PREFLIGHT = 3, /* preflight found blocking problems */
};

typedef struct pgs_command {
    const char *name;
    const char *summary;
    int (*run)(int argc, char **argv);
} pgs_command;

/* The command table, terminated by a zero entry. */
extern const pgs_command pgs_commands[];

/* Prints the top-level usage to `out`. */
void pgs_usage(void *out);

#endif
