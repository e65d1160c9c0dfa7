/* cmd_abort.c: `pgshift abort`: drops what a migration created so that no
 * abandoned slot holds WAL: slot, publication, state, and the targets
 * pgshift created (never a target the operator created). */
#include "pgshift/cli.h"
#include "pgshift/cli_common.h"
#include "pgshift/control.h"
#include "pgshift/log.h"
#include "pgshift/migration.h"
#include "pgshift/pg.h"
#include "pgshift/store.h"
#include "pgshift/prepare.h"
#include "pgshift/state.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "Usage: pgshift abort --plan FILE --confirm\n\n"
    "Abandons the migration: drops its replication slot (so it stops holding WAL),\n"
    "its publication, its state rows, and the target tables pgshift created from a\n"
    "`partition:` spec. Targets you created yourself and the source tables are\n"
    "never touched. With --confirm, a `pgshift run` serving this plan is asked to\n"
    "stop first (control socket).\n"
    "Without --confirm it only lists what it would drop.\n\n"
    "Options:\n"
    "  --plan FILE   the migration plan (YAML)\n"
    "  --confirm     really drop\n\n"
    "Exit codes: 0 dropped (or nothing to drop), 1 failure, 2 usage error or\n"
    "missing --confirm.\n";

int cmd_abort(int argc, char **argv);

/* A live run of the plan is asked to stop first (its lock is then free).
 * False when it refused; no run listening is not a refusal. */
/* Whether the source still has the migration's slot and publication. */
static void find_slot_and_publication(pgs_migration *m, bool *have_slot, bool *have_pub)
{
    char *slot = pg_query_value(m->src, "looking for the slot",
                                "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1", 1,
                                (const char *[]){m->slot}, NULL);
    char *pub = pg_query_value(m->src, "looking for the publication",
                               "SELECT count(*) FROM pg_publication WHERE pubname = $1", 1,
                               (const char *[]){m->publication}, NULL);
    *have_slot = slot && atoi(slot) > 0;
    *have_pub = pub && atoi(pub) > 0;
    free(slot);
    free(pub);
}

/* One flag per table: drop its target? NULL on failure; the caller frees. */
static bool *targets_to_drop(pgs_migration *m)
{
    /* Which targets pgshift created is what the state recorded when the
     * copy began, not what the plan says now: the plan may have been edited
     * since (a `partition:` block added to a table the operator created). */
    pgs_strlist created = {0};
    if (m->has_state && !store_created_targets(m->tgt, m->plan->name, &created)) {
        strlist_free(&created);
        return NULL;
    }
    bool *drop = calloc((size_t)m->ntables + 1, sizeof *drop);
    if (drop == NULL) {
        strlist_free(&created);
        return NULL;
    }
    for (int i = 0; i < m->ntables; i++)
        drop[i] = m->tables[i].tgt.exists && strlist_contains(&created, m->tables[i].tgt.qname);
    strlist_free(&created);
    return drop;
}

static void print_drop_list(pgs_migration *m, bool confirm, const bool *drop, bool have_slot,
                            bool have_pub)
{
    printf("%s migration %s:\n", confirm ? "Dropping" : "Would drop", m->plan->name);
    printf("  replication slot %s: %s\n", m->slot, have_slot ? "drop" : "absent");
    printf("  publication %s: %s\n", m->publication, have_pub ? "drop" : "absent");
    for (int i = 0; i < m->ntables; i++) {
        pgs_mtable *t = &m->tables[i];
        if (drop[i])
            printf("  target %s (created by pgshift): drop\n", t->tgt.qname);
        else if (t->tgt.exists && m->has_state)
            printf("  target %s: kept (not created by pgshift; it keeps the rows copied so far: "
                   "TRUNCATE it before running this migration again)\n",
                   t->tgt.qname);
        else if (t->tgt.exists)
            printf("  target %s: kept (not created by pgshift)\n", t->tgt.qname);
    }
    printf("  state rows: %s\n", m->has_state ? "delete" : "absent");
}

/* Drops the slot, the publication, the flagged targets and the state, in
 * that order, stopping at the first failure. */
static bool drop_everything(pgs_migration *m, const bool *drop, bool have_pub)
{
    if (!prepare_drop_slot(m))
        return false;
    if (have_pub && !prepare_drop_publication(m))
        return false;
    if (!prepare_drop_shadows(m))
        return false;
    for (int i = 0; i < m->ntables; i++) {
        pgs_mtable *t = &m->tables[i];
        if (!drop[i])
            continue;
        char *sql = NULL;
        bool ok = asprintf(&sql, "DROP TABLE IF EXISTS %s", t->tgt.qname) >= 0 &&
                  pg_exec(m->tgt, "dropping a target pgshift created", sql);
        free(sql);
        if (!ok)
            return false;
    }
    if (m->has_state && !state_delete(m))
        return false;
    return true;
}

int cmd_abort(int argc, char **argv)
{
    cli_opts o;
    int rc;
    pgs_migration *m = cli_open(argc, argv, "confirm", usage, &o, &rc);
    if (m == NULL)
        return rc;
    pgs_plan *plan = m->plan;
    rc = PGS_EXIT_FAILURE;
    /* A cut-over migration keeps its run (a rollback window streams). */
    if (o.confirm &&
        (!state_load(m) || m->phase == PGS_PHASE_DONE || m->phase == PGS_PHASE_REVERSIBLE)) {
        if (m->phase == PGS_PHASE_DONE || m->phase == PGS_PHASE_REVERSIBLE)
            log_error("migration %s is already cut over: its target is now the live table, and "
                      "abort would drop it; %s",
                      plan->name,
                      m->phase == PGS_PHASE_REVERSIBLE
                          ? "its rollback window is open: `pgshift rollback` swaps back, "
                            "`pgshift cleanup --confirm` ends the window"
                          : "use `pgshift cleanup --confirm` to drop the old tables");
        goto done;
    }
    if (o.confirm && !cli_stop_live_run(plan))
        goto done;
    /* Listing only reads; dropping needs the migration to itself. */
    if ((o.confirm && !state_lock(m)) || !state_load(m))
        goto done;
    if (m->phase == PGS_PHASE_DONE || m->phase == PGS_PHASE_REVERSIBLE) {
        log_error("migration %s is already cut over: its target is now the live table, and abort "
                  "would drop it; use `pgshift cleanup --plan %s --confirm` to drop the old "
                  "tables, slot and publication",
                  plan->name, plan->path);
        goto done;
    }
    bool have_slot, have_pub;
    find_slot_and_publication(m, &have_slot, &have_pub);
    bool *drop = targets_to_drop(m);
    if (drop == NULL)
        goto done;
    print_drop_list(m, o.confirm, drop, have_slot, have_pub);
    if (!o.confirm) {
        printf("Nothing was changed; add --confirm to drop.\n");
        rc = PGS_EXIT_USAGE;
    } else if (drop_everything(m, drop, have_pub)) {
        printf("Migration %s aborted.\n", plan->name);
        rc = PGS_EXIT_OK;
    }
    free(drop);
done:
    cli_close(m);
    return rc;
}
