/* cmd_status.c: `pgshift status`: the status snapshot (status.h) of the run
 * serving the plan, asked over its control socket, or, when none answers,
 * built from the state tables and the source's WAL position now; either is
 * rendered by the same module (render.c) as text or JSON. */
#include "pgshift/cli.h"
#include "pgshift/cli_common.h"
#include "pgshift/control.h"
#include "pgshift/migration.h"
#include "pgshift/pg.h"
#include "pgshift/rollback.h"
#include "pgshift/status.h"
#include "pgshift/state.h"
#include "pgshift/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char usage[] =
    "Usage: pgshift status --plan FILE [--json] [--watch]\n\n"
    "Shows the migration's phase (copying, catching_up, ready, cutting_over, done,\n"
    "paused, failed), rows copied per table, changes applied, lag in bytes (the\n"
    "source's current WAL position minus the last applied commit) and seconds\n"
    "(now minus that commit's time), apply rate, ETA, the slot's retained WAL,\n"
    "cutover attempts and blockers, the source's server version and the pgoutput\n"
    "protocol (proto_version, origin filter) of the live stream. While a\n"
    "`pgshift run` serves the plan the figures come live from it (control socket\n"
    "<state_dir>/pgshift-<uid>/pgshift-<name>.sock: run it as the same user as\n"
    "`run`); otherwise from the state tables.\n\n"
    "Options:\n"
    "  --plan FILE   the migration plan (YAML)\n"
    "  --json        one JSON object instead of text\n"
    "  --watch       refresh every second until interrupted\n\n"
    "Exit codes: 0 shown, 1 failure, 2 usage error or no such migration.\n";

int cmd_status(int argc, char **argv);

/* One renderer for both paths (status.h). */
static void show(const Pgshift__StatusSnapshot *st, const status_origin *o, bool as_json)
{
    if (as_json) {
        char *s = status_json_origin(st, o, 2);
        if (s)
            printf("%s\n", s);
        free(s);
    } else
        status_text(st, o, stdout);
}

/* The state row (store_read_status) and the table rows as a status_state. */
static void read_state(const pgs_migration *m, const PGresult *res, const PGresult *tres,
                       status_state_table *tt, status_state *s)
{
    for (int i = 0; i < PQntuples(tres); i++)
        tt[i] = (status_state_table){
            .source = PQgetvalue(tres, i, 0),
            .target = PQgetvalue(tres, i, 1),
            .rows_copied = atoll(PQgetvalue(tres, i, 2)),
            .rows_estimated = atoll(PQgetvalue(tres, i, 3)),
            .bytes_copied = atoll(PQgetvalue(tres, i, 4)),
            .bytes_estimated = atoll(PQgetvalue(tres, i, 5)),
            .copy_done = PQgetvalue(tres, i, 6)[0] == 't',
            .changes_applied = atoll(PQgetvalue(tres, i, 7)),
        };
    *s = (status_state){
        .migration = m->plan->name,
        .phase = PQgetvalue(res, 0, 0),
        .error = PQgetvalue(res, 0, 1),
        .applied_lsn = PQgetvalue(res, 0, 2),
        .source_lsn = PQgetvalue(res, 0, 3),
        .lag_bytes = atoll(PQgetvalue(res, 0, 4)),
        .commit_age_s = atof(PQgetvalue(res, 0, 5)),
        .applied_xacts = atoll(PQgetvalue(res, 0, 6)),
        .applied_changes = atoll(PQgetvalue(res, 0, 7)),
        .stats = PQgetvalue(res, 0, 8),
        .slot_active = PQgetvalue(res, 0, 9)[0] == 't',
        .slot_retained = atoll(PQgetvalue(res, 0, 10)),
        .slot_exists = !PQgetisnull(res, 0, 11),
        .wal_status = PQgetvalue(res, 0, 11),
        .age_s = atof(PQgetvalue(res, 0, 12)),
        .cutover_record = PQgetvalue(res, 0, 13),
        .cutover_at = PQgetvalue(res, 0, 14),
        .confirmed_lsn = PQgetvalue(res, 0, 15),
        .slot_safe = PQgetisnull(res, 0, 16) ? -1 : atoll(PQgetvalue(res, 0, 16)),
        .cutover_at_unix_ms = atoll(PQgetvalue(res, 0, 17)),
        .timings = PQgetvalue(res, 0, 18),
        .verify = PQgetvalue(res, 0, 19),
        .slot_name = m->slot,
        .plan_path = m->plan->path,
        .server_version = PQparameterStatus(m->src, "server_version"),
        .server_version_num = PQserverVersion(m->src),
        .ntables = PQntuples(tres),
        .tables = tt,
    };
}

/* From the state tables: any time, with or without a live run. The lag is
 * the source's position now minus the applied one; the stored stats (the
 * run's last snapshot) give the rates only while a run streams. */
static int show_state(pgs_migration *m, bool as_json)
{
    PGresult *res = NULL, *tres = NULL, *rres = NULL;
    status_state_table *tt = NULL;
    int rc = PGS_EXIT_FAILURE;
    if (!state_load(m))
        return rc;
    if (!m->has_state) {
        fprintf(stderr,
                "pgshift: migration %s has not started (no state in the target "
                "database); run `pgshift plan` then `pgshift run`\n",
                m->plan->name);
        return PGS_EXIT_USAGE;
    }
    /* The source and the state live in the same database for now. */
    res = store_read_status(m->tgt, m->plan->name);
    tres = store_read_tables(m->tgt, m->plan->name);
    if (res == NULL || tres == NULL || PQntuples(res) != 1)
        goto done;
    tt = calloc((size_t)PQntuples(tres) + 1, sizeof *tt);
    if (tt == NULL)
        goto done;
    status_state s;
    read_state(m, res, tres, tt, &s);
    /* The rollback window: the reverse slot's lag now, and the time left. */
    char rslot[64];
    rollback_slot_name(m->plan->name, rslot, sizeof rslot);
    if (s.phase && strcmp(s.phase, "reversible") == 0) {
        char win[32];
        snprintf(win, sizeof win, "%d", m->plan->rollback.window_ms);
        rres = pg_query(m->tgt, "reading the rollback window",
                        "SELECT (SELECT coalesce(pg_wal_lsn_diff(pg_current_wal_insert_lsn(),"
                        "         confirmed_flush_lsn), 0)::bigint FROM pg_replication_slots"
                        "         WHERE slot_name = $1),"
                        "       extract(epoch FROM cutover_at + $3::bigint * interval '1 ms'"
                        "         - now())"
                        "  FROM pgshift.migrations WHERE name = $2",
                        3, (const char *[]){rslot, m->row, win});
        if (rres && PQntuples(rres) == 1) {
            s.has_reverse = true;
            s.reverse_lag_bytes = atoll(PQgetvalue(rres, 0, 0));
            s.window_left_s = atof(PQgetvalue(rres, 0, 1));
            s.reverse_slot = rslot;
        }
    }
    status_snapshot x;
    if (!status_snapshot_from_state(&s, &x))
        goto done;
    show(&x.st, &x.origin, as_json);
    status_snapshot_free(&x);
    rc = PGS_EXIT_OK;
done:
    free(tt);
    PQclear(rres);
    PQclear(res);
    PQclear(tres);
    return rc;
}

int cmd_status(int argc, char **argv)
{
    cli_opts o;
    int rc = cli_parse(argc, argv, "json,watch", usage, &o);
    if (rc >= 0)
        return rc;
    pgs_plan *plan = cli_load_plan(&o);
    if (plan == NULL)
        return PGS_EXIT_USAGE;
    pgs_migration *m = NULL;
    bool tty = isatty(STDOUT_FILENO);
    for (;;) {
        if (o.watch && tty)
            printf("\033[H\033[2J");
        void *r = NULL;
        int ar = cli_ask_run(plan, PGSHIFT__COMMAND__COMMAND_STATUS, false, 5000, true, &r);
        Pgshift__ControlReply *reply = r;
        if (ar == 0 && reply->status) {
            show(reply->status, &(status_origin){.live = true}, o.json);
            rc = PGS_EXIT_OK;
        } else {
            if (m == NULL && (m = migration_open(plan)) == NULL) {
                rc = PGS_EXIT_FAILURE;
                if (reply)
                    pgshift__control_reply__free_unpacked(reply, NULL);
                break;
            }
            rc = show_state(m, o.json);
        }
        if (reply)
            pgshift__control_reply__free_unpacked(reply, NULL);
        fflush(stdout);
        if (!o.watch || rc == PGS_EXIT_USAGE)
            break;
        sleep(1);
    }
    if (m)
        migration_close(m);
    pgs_plan_free(plan);
    return rc;
}
