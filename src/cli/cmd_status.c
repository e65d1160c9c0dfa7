/* cmd_status.c: `pgshift status`: phase, per-table progress, lag and apply
 * rate, read from the state schema and the source's WAL position (works
 * whether or not a `run` is alive; the running one refreshes the rates). */
#include "pgshift/cli.h"
#include "pgshift/cli_common.h"
#include "pgshift/control.h"
#include "pgshift/migration.h"
#include "pgshift/pg.h"
#include "pgshift/status.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <math.h>

static const char usage[] =
    "Usage: pgshift status --plan FILE [--json] [--watch]\n\n"
    "Shows the migration's phase (copying, catching_up, ready, cutting_over, done,\n"
    "paused, failed), rows copied per table, changes applied, lag in bytes (the\n"
    "source's current WAL position minus the last applied commit) and seconds\n"
    "(now minus that commit's time), apply rate, ETA, the slot's retained WAL,\n"
    "cutover attempts and blockers. While a `pgshift run` serves the plan the\n"
    "figures come live from it (control socket\n"
    "<state_dir>/pgshift-<uid>/pgshift-<name>.sock: run it as the same user as\n"
    "`run`); otherwise from the state tables.\n\n"
    "Options:\n"
    "  --plan FILE   the migration plan (YAML)\n"
    "  --json        one JSON object instead of text\n"
    "  --watch       refresh every second until interrupted\n\n"
    "Exit codes: 0 shown, 1 failure, 2 usage error or no such migration.\n";

int cmd_status(int argc, char **argv);

static const char *const SQL_STATUS =
    "SELECT m.phase, coalesce(m.error, ''), coalesce(m.applied_lsn::text, ''),"
    "  pg_current_wal_lsn()::text,"
    "  greatest(0, pg_current_wal_lsn() - greatest(m.applied_lsn,"
    "    (SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = m.slot_name))),"
    "  coalesce(extract(epoch FROM now() - m.applied_commit_time), 0),"
    "  m.applied_xacts, m.applied_changes, coalesce(m.stats::text, '{}'),"
    "  (SELECT active FROM pg_replication_slots WHERE slot_name = m.slot_name),"
    "  (SELECT pg_current_wal_lsn() - restart_lsn FROM pg_replication_slots"
    "    WHERE slot_name = m.slot_name),"
    "  (SELECT wal_status FROM pg_replication_slots WHERE slot_name = m.slot_name),"
    "  extract(epoch FROM now() - m.updated_at),"
    "  coalesce((to_jsonb(m)->'cutover')::text, ''), coalesce(to_jsonb(m)->>'cutover_at', '')"
    " FROM pgshift.migrations m WHERE m.name = $1";

/* From the state tables: any time, with or without a live run. */
static int show_state(pgs_migration *m, bool as_json)
{
    pgs_plan *plan = m->plan;
    json_t *out = NULL, *stats = NULL, *co = NULL;
    PGresult *res = NULL, *tres = NULL;
    int rc = PGS_EXIT_FAILURE;
    if (!state_load(m))
        goto done;
    if (!m->has_state) {
        fprintf(stderr,
                "pgshift: migration %s has not started (no state in the target "
                "database); run `pgshift plan` then `pgshift run`\n",
                plan->name);
        rc = PGS_EXIT_USAGE;
        goto done;
    }
    /* The source and the state live in the same database for now. */
    res = pg_query(m->tgt, "reading the status", SQL_STATUS, 1, (const char *[]){plan->name});
    tres = pg_query(m->tgt, "reading the table status",
                    "SELECT source_table, target_table, rows_copied, rows_estimated,"
                    "  bytes_copied, bytes_estimated, copy_done, changes_applied"
                    " FROM pgshift.tables WHERE migration = $1 ORDER BY ord",
                    1, (const char *[]){plan->name});
    if (res == NULL || tres == NULL || PQntuples(res) != 1)
        goto done;
    stats = json_loads(PQgetvalue(res, 0, 8), 0, NULL);
    const char *phase = PQgetvalue(res, 0, 0);
    long long lag = atoll(PQgetvalue(res, 0, 4));
    double lag_s = lag > 0 ? atof(PQgetvalue(res, 0, 5)) : 0;
    bool running = PQgetvalue(res, 0, 9)[0] == 't';
    double age = atof(PQgetvalue(res, 0, 12));
    json_t *jrate = stats ? json_object_get(stats, "apply_changes_per_second") : NULL;
    json_t *jxrate = stats ? json_object_get(stats, "apply_xacts_per_second") : NULL;
    json_t *jeta = stats ? json_object_get(stats, "eta_seconds") : NULL;
    /* Rates only mean something while a run refreshes them. */
    double rate = running && jrate ? json_number_value(jrate) : 0;
    double xrate = running && jxrate ? json_number_value(jxrate) : 0;
    /* eta_seconds: null while the running apply has no rate yet. */
    bool eta_known = !(running && jeta && json_is_null(jeta));
    double eta = running && jeta ? json_number_value(jeta) : (lag == 0 ? 0 : -1);
    json_t *jlag_s = stats ? json_object_get(stats, "lag_seconds") : NULL;
    if (running && jlag_s)
        lag_s = json_number_value(jlag_s);

    out = json_pack("{s:s,s:s,s:b,s:s,s:s,s:I,s:f,s:f,s:f,s:f,s:I,s:I}", "migration", plan->name,
                    "phase", phase, "running", running, "applied_lsn", PQgetvalue(res, 0, 2),
                    "source_lsn", PQgetvalue(res, 0, 3), "lag_bytes", (json_int_t)lag,
                    "lag_seconds", lag_s, "eta_seconds", eta, "apply_changes_per_second", rate,
                    "apply_xacts_per_second", xrate, "applied_xacts",
                    (json_int_t)atoll(PQgetvalue(res, 0, 6)), "applied_changes",
                    (json_int_t)atoll(PQgetvalue(res, 0, 7)));
    if (out == NULL)
        goto done;
    if (PQgetvalue(res, 0, 1)[0])
        json_object_set_new(out, "error", json_string(PQgetvalue(res, 0, 1)));
    if (!eta_known)
        json_object_set_new(out, "eta_seconds", json_null());
    json_object_set_new(out, "slot",
                        json_pack("{s:s,s:I,s:s}", "name", m->slot, "retained_bytes",
                                  (json_int_t)atoll(PQgetvalue(res, 0, 10)), "wal_status",
                                  PQgetvalue(res, 0, 11)));
    bool done = strcmp(phase, "done") == 0;
    co = PQgetvalue(res, 0, 13)[0] ? json_loads(PQgetvalue(res, 0, 13), 0, NULL) : NULL;
    if (co) {
        json_object_del(co, "post");
        json_object_set_new(co, "at", json_string(PQgetvalue(res, 0, 14)));
        json_object_set(out, "cutover", co);
    }
    json_t *tables = json_array();
    for (int i = 0; i < PQntuples(tres); i++)
        json_array_append_new(
            tables, json_pack("{s:s,s:s,s:I,s:I,s:I,s:I,s:b,s:I}", "source", PQgetvalue(tres, i, 0),
                              "target", PQgetvalue(tres, i, 1), "rows_copied",
                              (json_int_t)atoll(PQgetvalue(tres, i, 2)), "rows_estimated",
                              (json_int_t)atoll(PQgetvalue(tres, i, 3)), "bytes_copied",
                              (json_int_t)atoll(PQgetvalue(tres, i, 4)), "bytes_estimated",
                              (json_int_t)atoll(PQgetvalue(tres, i, 5)), "copy_done",
                              PQgetvalue(tres, i, 6)[0] == 't', "changes_applied",
                              (json_int_t)atoll(PQgetvalue(tres, i, 7))));
    json_object_set_new(out, "tables", tables);

    if (as_json) {
        char *s = json_dumps(out, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        if (s)
            printf("%s\n", s);
        free(s);
    } else {
        printf("migration %s: %s%s\n", plan->name, phase,
               running || done ? "" : " (no pgshift run is streaming now)");
        if (PQgetvalue(res, 0, 1)[0])
            printf("  error: %s\n", PQgetvalue(res, 0, 1));
        if (done && co) {
            json_t *old = json_object_get(co, "old_tables"), *v;
            size_t i;
            printf("  cut over at %s after %lld attempt(s): write-blocking window %.0f ms (lock "
                   "wait %.0f ms, fence reached in %.0f ms, swap %.0f ms)\n",
                   PQgetvalue(res, 0, 14),
                   (long long)json_integer_value(json_object_get(co, "attempts")),
                   json_number_value(json_object_get(co, "write_block_ms")),
                   json_number_value(json_object_get(co, "lock_wait_ms")),
                   json_number_value(json_object_get(co, "fence_ms")),
                   json_number_value(json_object_get(co, "swap_ms")));
            printf("  old tables (kept until `pgshift cleanup --plan %s --confirm`):", plan->path);
            json_array_foreach(old, i, v) printf("%s %s", i ? "," : "", json_string_value(v));
            printf("\n");
            if (!json_is_true(json_object_get(co, "post_done")))
                printf("  note: the steps after the swap (validate foreign keys, ANALYZE) have not "
                       "finished; `pgshift run --plan %s` finishes them\n",
                       plan->path);
        } else
            printf("  lag: %.1f MB, %.1f s (applied %s, source at %s)\n", (double)lag / 1048576.0,
                   lag_s, PQgetvalue(res, 0, 2), PQgetvalue(res, 0, 3));
        char eta_txt[32];
        snprintf(eta_txt, sizeof eta_txt, "%.0f s", eta);
        if (running)
            printf("  apply: %.0f changes/s, %.0f transactions/s; ETA %s\n", rate, xrate,
                   !eta_known ? "not known yet"
                   : eta < 0  ? "never (the source writes faster than we apply)"
                   : eta == 0 ? "caught up"
                              : eta_txt);
        printf("  applied: %s transactions, %s changes\n", PQgetvalue(res, 0, 6),
               PQgetvalue(res, 0, 7));
        printf("  slot %s: %s, retains %.1f MB of WAL\n", m->slot,
               PQgetvalue(res, 0, 11)[0] ? PQgetvalue(res, 0, 11) : "absent",
               (double)atoll(PQgetvalue(res, 0, 10)) / 1048576.0);
        for (int i = 0; i < PQntuples(tres); i++)
            printf("  %s -> %s: copy %s, %s of ~%s rows; %s changes applied\n",
                   PQgetvalue(tres, i, 0), PQgetvalue(tres, i, 1),
                   PQgetvalue(tres, i, 6)[0] == 't' ? "done" : "in progress",
                   PQgetvalue(tres, i, 2), PQgetvalue(tres, i, 3), PQgetvalue(tres, i, 7));
        if (running && age > 30)
            printf("  note: the state was last refreshed %.0f s ago\n", age);
    }
    rc = PGS_EXIT_OK;
done:
    json_decref(out);
    json_decref(stats);
    json_decref(co);
    PQclear(res);
    PQclear(tres);
    return rc;
}

static void human_mb(double b, char *buf, size_t len)
{
    snprintf(buf, len, "%.1f MB", b / 1048576.0);
}

/* From the running `pgshift run`. */
static void show_live(const Pgshift__StatusSnapshot *st, bool as_json)
{
    if (as_json) {
        char *js = status_json(st, 0);
        json_t *o = js ? json_loads(js, 0, NULL) : NULL;
        free(js);
        if (o) {
            json_object_set_new(o, "running", json_true());
            char *s = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
            if (s)
                printf("%s\n", s);
            free(s);
            json_decref(o);
        }
        return;
    }
    char a[32], b[32];
    printf("migration %s: %s%s%s (live)\n", st->migration, status_phase_name(st->phase),
           st->paused ? ", paused" : "", st->postponed ? ", automatic cutover postponed" : "");
    char eta[48];
    if (isnan(st->eta_seconds))
        snprintf(eta, sizeof eta, "not known yet");
    else if (st->eta_seconds < 0)
        snprintf(eta, sizeof eta, "never (the source writes faster than we apply)");
    else if (st->eta_seconds == 0)
        snprintf(eta, sizeof eta, "caught up");
    else
        snprintf(eta, sizeof eta, "%.0f s", st->eta_seconds);
    human_mb((double)st->lag_bytes, a, sizeof a);
    printf("  lag: %s, %.1f s; ETA %s\n", a, st->lag_seconds, eta);
    human_mb(st->wal_bytes_per_second, b, sizeof b);
    printf("  apply: %.0f changes/s, %.0f transactions/s; the source writes %s/s of WAL\n",
           st->apply_changes_per_second, st->apply_xacts_per_second, b);
    printf("  applied: %llu transactions, %llu changes (applied %s, confirmed %s, source at %s)\n",
           (unsigned long long)st->applied_xacts_total,
           (unsigned long long)st->applied_changes_total, st->applied_lsn, st->confirmed_lsn,
           st->source_lsn);
    if (st->slot) {
        human_mb((double)st->slot->retained_bytes, a, sizeof a);
        human_mb((double)st->slot->safe_bytes_left, b, sizeof b);
        printf("  slot: %s, retains %s of WAL%s%s%s\n", st->slot->wal_status, a,
               st->slot->safe_bytes_left >= 0 ? " (" : "", st->slot->safe_bytes_left >= 0 ? b : "",
               st->slot->safe_bytes_left >= 0 ? " left before max_slot_wal_keep_size)" : "");
    }
    if (st->cutover && st->cutover->attempts > 0) {
        printf("  cutover: %u attempt(s)", st->cutover->attempts);
        if (st->cutover->last_blocker)
            printf("; last blocked by pid %d (%s, in a transaction for %.1f s): %s",
                   st->cutover->last_blocker->pid, st->cutover->last_blocker->application,
                   st->cutover->last_blocker->xact_age_seconds, st->cutover->last_blocker->query);
        printf("\n");
    }
    for (size_t i = 0; i < st->n_tables; i++) {
        const Pgshift__TableProgress *t = st->tables[i];
        printf("  %s -> %s: copy %s, %llu of ~%llu rows; %llu changes applied\n", t->source,
               t->target, t->copy_done ? "done" : "in progress", (unsigned long long)t->rows_copied,
               (unsigned long long)t->rows_estimated, (unsigned long long)t->changes_applied);
    }
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
            show_live(reply->status, o.json);
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
