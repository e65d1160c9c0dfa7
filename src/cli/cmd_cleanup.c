/* cmd_cleanup.c: `pgshift cleanup`: after a cutover, drops what the
 * migration left for a way back: the old tables, the slot (which holds WAL
 * until then), the publication and the state. */
#include "pgshift/cli.h"
#include "pgshift/cli_common.h"
#include "pgshift/log.h"
#include "pgshift/migration.h"
#include "pgshift/pg.h"
#include "pgshift/store.h"
#include "pgshift/prepare.h"
#include "pgshift/rollback.h"
#include "pgshift/state.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "Usage: pgshift cleanup --plan FILE --confirm\n\n"
    "After the cutover, when you are sure: drops the old tables (<table>_old),\n"
    "ends a rollback window that is still open (its run stops, its slot and\n"
    "publication pgshiftr_<name> are dropped: no rollback after this),\n"
    "the replication slot (it retains WAL until dropped), the publication and\n"
    "the migration's state rows. Refuses before the cutover (use `pgshift\n"
    "abort` to abandon a migration) and while a `pgshift run` of the plan runs.\n"
    "Without --confirm it only lists what it would drop.\n\n"
    "Options:\n"
    "  --plan FILE   the migration plan (YAML)\n"
    "  --confirm     really drop\n\n"
    "Exit codes: 0 dropped, 1 failure (a dependent object still uses an old\n"
    "table, for example a view left behind: the message names it), 2 usage\n"
    "error or missing --confirm.\n";

int cmd_cleanup(int argc, char **argv);

int cmd_cleanup(int argc, char **argv)
{
    cli_opts o;
    int rc;
    pgs_migration *m = cli_open(argc, argv, "confirm", usage, &o, &rc);
    if (m == NULL)
        return rc;
    pgs_plan *plan = m->plan;
    rc = PGS_EXIT_FAILURE;
    pgs_strlist old_s = {0}, old_t = {0}, old_e = {0};
    /* A rollback window's run streams until the cleanup stops it. */
    if (o.confirm && (!state_load(m) || (m->has_state && m->phase == PGS_PHASE_REVERSIBLE &&
                                         !cli_stop_live_run(plan))))
        goto done;
    if (!state_lock(m) || !state_load(m))
        goto done;
    bool window = m->has_state && m->phase == PGS_PHASE_REVERSIBLE;
    if (!m->has_state || (m->phase != PGS_PHASE_DONE && !window)) {
        log_error("migration %s is not cut over (phase %s): nothing is dropped before the "
                  "cutover; to abandon it, use `pgshift abort --plan %s --confirm`",
                  plan->name, m->has_state ? pgs_phase_name(m->phase) : "none", plan->path);
        goto done;
    }
    /* Names as data from the cutover record; the DROP is built from them. */
    if (!store_old_tables(m->tgt, plan->name, &old_s, &old_t, &old_e))
        goto done;
    char *slot = pg_query_value(m->src, "looking for the slot",
                                "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1", 1,
                                (const char *[]){m->slot}, NULL);
    bool have_slot = slot && atoi(slot) > 0;
    free(slot);
    printf("%s after the cutover of migration %s:\n", o.confirm ? "Dropping" : "Would drop",
           plan->name);
    for (int i = 0; i < old_t.n; i++) {
        char *q = pg_qualified(m->src, old_s.v[i], old_t.v[i]);
        printf("  old table %s: %s\n", q ? q : old_t.v[i],
               old_e.v[i][0] == 't' ? "drop" : "absent");
        free(q);
    }
    printf("  replication slot %s: %s\n", m->slot, have_slot ? "drop" : "absent");
    printf("  publication %s: drop if present\n", m->publication);
    if (window) {
        char rs[64];
        rollback_slot_name(plan->name, rs, sizeof rs);
        printf("  rollback window: ended (slot and publication %s dropped; the old tables "
               "stop following the new ones)\n",
               rs);
    }
    printf("  state rows: delete\n");
    if (!o.confirm) {
        printf("Nothing was changed; add --confirm to drop.\n");
        rc = PGS_EXIT_USAGE;
        goto done;
    }
    if (window && (!rollback_drop(m->tgt, plan->name) ||
                   !store_write_phase(m->tgt, m->row, PGS_PHASE_DONE, NULL)))
        goto done;
    if (!prepare_drop_slot(m))
        goto done;
    bool ok = prepare_drop_publication(m);
    char *sql = NULL;
    /* No CASCADE: an object still reading an old table (left behind on
     * purpose) stops the cleanup with its name rather than vanishing. */
    for (int i = 0; ok && i < old_t.n; i++) {
        if (old_e.v[i][0] != 't')
            continue;
        sql = NULL;
        char *q = pg_qualified(m->src, old_s.v[i], old_t.v[i]);
        ok = q && asprintf(&sql, "DROP TABLE %s", q) >= 0 &&
             pg_exec(m->src, "dropping an old table", sql);
        free(q);
        free(sql);
    }
    if (!ok || !state_delete(m))
        goto done;
    printf("Migration %s cleaned up.\n", plan->name);
    rc = PGS_EXIT_OK;
done:
    strlist_free(&old_s);
    strlist_free(&old_t);
    strlist_free(&old_e);
    cli_close(m);
    return rc;
}
