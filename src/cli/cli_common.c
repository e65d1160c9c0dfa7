/* cli_common.c: option parsing shared by the plan-driven commands. */
#include "pgshift/cli_common.h"

#include "pgshift/cli.h"
#include "pgshift/control.h"
#include "pgshift/log.h"
#include "pgshift/migration.h"

#include <getopt.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

static bool allowed_has(const char *allowed, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = allowed; (p = strstr(p, name)) != NULL; p += n)
        if ((p == allowed || p[-1] == ',') && (p[n] == ',' || p[n] == '\0'))
            return true;
    return false;
}

static const struct option cli_options[] = {
    {"plan", required_argument, NULL, 'p'},
    {"json", no_argument, NULL, 'j'},
    {"confirm", no_argument, NULL, 'c'},
    {"auto-cutover", no_argument, NULL, 'a'},
    {"watch", no_argument, NULL, 'w'},
    {"http", required_argument, NULL, 'H'},
    {"http-show-queries", no_argument, NULL, 'Q'},
    {"table", required_argument, NULL, 't'},
    {"repair", no_argument, NULL, 'r'},
    {"log-level", required_argument, NULL, 'l'},
    {"log-format", required_argument, NULL, 'f'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* The options only some commands take: records one in out and returns its
 * name, or NULL when c is not one of them. */
static const char *command_option(int c, cli_opts *out)
{
    switch (c) {
    case 'j':
        out->json = true;
        return "json";
    case 'c':
        out->confirm = true;
        return "confirm";
    case 'a':
        out->auto_cutover = true;
        return "auto-cutover";
    case 'w':
        out->watch = true;
        return "watch";
    case 'H':
        out->http = optarg;
        return "http";
    case 'Q':
        out->http_show_queries = true;
        return "http-show-queries";
    case 't':
        out->table = optarg;
        return "table";
    case 'r':
        out->repair = true;
        return "repair";
    default:
        return NULL;
    }
}

/* --log-level (c == 'l') and --log-format take effect at once: -1 when
 * applied, else the exit code. */
static int log_option(int c, char **argv)
{
    if (c == 'l') {
        pgs_log_level lvl;
        if (!pgs_log_parse_level(optarg, &lvl)) {
            fprintf(stderr, "pgshift %s: --log-level must be debug, info, warn or error\n",
                    argv[0]);
            return PGS_EXIT_USAGE;
        }
        pgs_log_set_level(lvl);
        return -1;
    }
    if (strcmp(optarg, "json") != 0 && strcmp(optarg, "text") != 0) {
        fprintf(stderr, "pgshift %s: --log-format must be text or json\n", argv[0]);
        return PGS_EXIT_USAGE;
    }
    pgs_log_set_json(strcmp(optarg, "json") == 0);
    return -1;
}

/* A missing option value (c == ':') or an unknown option: says which. */
static int bad_option(int c, char **argv, const char *usage)
{
    if (c == ':') {
        fprintf(stderr, "pgshift %s: option %s needs a value\n\n%s", argv[0], argv[optind - 1],
                usage);
        return PGS_EXIT_USAGE;
    }
    /* An unknown short option inside a group ("-xq") leaves optind
     * on that word: name the letter, not argv[optind - 1]. */
    const char *word = argv[optind - 1];
    if (strncmp(word, "--", 2) != 0 && optopt != 0)
        fprintf(stderr, "pgshift %s: unknown option -%c\n\n%s", argv[0], optopt, usage);
    else
        fprintf(stderr, "pgshift %s: unknown option %s\n\n%s", argv[0], word, usage);
    return PGS_EXIT_USAGE;
}

int cli_parse(int argc, char **argv, const char *allowed, const char *usage, cli_opts *out)
{
    memset(out, 0, sizeof *out);
    optind = 1;
    opterr = 0;
    int c;
    /* The leading ':' makes a missing option value return ':', not '?'. */
    while ((c = getopt_long(argc, argv, ":p:h", cli_options, NULL)) != -1) {
        if (c == 'p') {
            out->plan_path = optarg;
            continue;
        }
        if (c == 'l' || c == 'f') {
            int rc = log_option(c, argv);
            if (rc >= 0)
                return rc;
            continue;
        }
        if (c == 'h') {
            fputs(usage, stdout);
            return PGS_EXIT_OK;
        }
        const char *name = command_option(c, out);
        if (name == NULL)
            return bad_option(c, argv, usage);
        if (!allowed_has(allowed, name)) {
            fprintf(stderr, "pgshift %s: option --%s does not apply here\n\n%s", argv[0], name,
                    usage);
            return PGS_EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "pgshift %s: unexpected argument \"%s\"\n\n%s", argv[0], argv[optind],
                usage);
        return PGS_EXIT_USAGE;
    }
    if (out->plan_path == NULL) {
        fprintf(stderr, "pgshift %s: --plan FILE is required\n\n%s", argv[0], usage);
        return PGS_EXIT_USAGE;
    }
    return -1;
}

pgs_migration *cli_open(int argc, char **argv, const char *allowed, const char *usage, cli_opts *o,
                        int *rc)
{
    *rc = cli_parse(argc, argv, allowed, usage, o);
    if (*rc >= 0)
        return NULL;
    pgs_plan *plan = cli_load_plan(o);
    if (plan == NULL) {
        *rc = PGS_EXIT_USAGE;
        return NULL;
    }
    pgs_migration *m = migration_open(plan);
    if (m == NULL) {
        pgs_plan_free(plan);
        *rc = PGS_EXIT_FAILURE;
    }
    return m;
}

void cli_close(pgs_migration *m)
{
    if (m == NULL)
        return;
    pgs_plan *plan = m->plan;
    migration_close(m);
    pgs_plan_free(plan);
}

pgs_plan *cli_load_plan(const cli_opts *o)
{
    char err[1024];
    pgs_plan *plan = pgs_plan_load(o->plan_path, err, sizeof err);
    if (plan == NULL)
        fprintf(stderr, "pgshift: %s\n", err);
    else if (plan->password_exposed)
        /* libpq ignores such a .pgpass; a plan is only warned about. */
        log_warn("plan file %s holds a password and has group or world access; permissions "
                 "should be u=rw (0600) or less",
                 plan->path);
    return plan;
}

int cli_ask_run(const pgs_plan *plan, int command, bool confirm, int timeout_ms, bool quiet,
                void **reply)
{
    *reply = NULL;
    char *path = control_socket_path(plan->state_dir, plan->name);
    if (path == NULL)
        return -2;
    Pgshift__ControlRequest req = PGSHIFT__CONTROL_REQUEST__INIT;
    req.command = (Pgshift__Command)command;
    req.confirm = confirm;
    char err[512] = "";
    Pgshift__ControlReply *r = NULL;
    int rc = control_request(path, &req, &r, timeout_ms, err, sizeof err);
    if (rc == -1 && !quiet)
        log_error("no `pgshift run` is serving migration %s (%s): start it with `pgshift run "
                  "--plan %s`",
                  plan->name, err, plan->path);
    else if (rc < -1)
        log_error("control socket %s: %s", path, err);
    free(path);
    *reply = r;
    return rc;
}

bool cli_stop_live_run(const pgs_plan *plan)
{
    void *r = NULL;
    if (cli_ask_run(plan, PGSHIFT__COMMAND__COMMAND_ABORT, true, 10000, true, &r) != 0)
        return true;
    Pgshift__ControlReply *reply = r;
    if (reply->ok)
        log_info("the running pgshift run of %s stops: %s", plan->name, reply->message);
    else
        log_error("the running pgshift run refused to stop: %s", reply->message);
    bool ok = reply->ok;
    pgshift__control_reply__free_unpacked(reply, NULL);
    return ok;
}

int cli_ask_outcome(const pgs_plan *plan, int command, bool quiet, const char *what)
{
    void *r = NULL;
    int ar = cli_ask_run(plan, command, false, 0, quiet, &r);
    Pgshift__ControlReply *reply = r;
    int rc = ar == -1 ? -1 : PGS_EXIT_FAILURE;
    if (ar == 0 && reply->ok) {
        log_info("%s", reply->message);
        rc = PGS_EXIT_OK;
    } else if (ar == 0)
        log_error("%s: %s", what, reply->message);
    if (reply)
        pgshift__control_reply__free_unpacked(reply, NULL);
    return rc;
}
