/* migration.c: opens a migration: connections, and each plan table
 * resolved against the catalogs. */
#include "pgshift/migration.h"

#include "pgshift/log.h"
#include "pgshift/pg.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Match columns: those an old-key ('K') tuple carries, i.e. the replica
 * identity index under USING INDEX, else the primary key (DEFAULT, and FULL
 * whose 'O' tuple has every column), else the plan's `key` (FULL without a
 * primary key). Copied columns: every non-generated source column. */
static bool resolve_columns(pgs_mtable *t)
{
    const pgs_strlist *key = (t->src.replident == 'i' && t->src.ri.n) ? &t->src.ri
                             : t->src.pk.n                            ? &t->src.pk
                                                                      : NULL;
    if (key) {
        for (int i = 0; i < key->n; i++)
            if (!strlist_push(&t->match, key->v[i]))
                return false;
    } else if (t->spec->key) {
        for (char **k = t->spec->key; *k; k++)
            if (!strlist_push(&t->match, *k))
                return false;
    }
    for (int i = 0; i < t->src.ncols; i++)
        if (t->src.cols[i].generated == 0 && !strlist_push(&t->cols, t->src.cols[i].name))
            return false;
    return true;
}

double pgs_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

pgs_migration *migration_open(pgs_plan *plan)
{
    pgs_migration *m = calloc(1, sizeof *m);
    if (m == NULL)
        return NULL;
    m->plan = plan;
    snprintf(m->row, sizeof m->row, "%s", plan->name);
    snprintf(m->slot, sizeof m->slot, "pgshift_%s", plan->name);
    snprintf(m->publication, sizeof m->publication, "pgshift_%s", plan->name);
    m->src = pg_connect(plan->source, "source", false);
    if (m->src == NULL)
        goto failed;
    m->tgt = pg_connect(plan->target ? plan->target : plan->source, "target", false);
    if (m->tgt == NULL)
        goto failed;
    /* Our own sessions must never wait long on a lock by accident. */
    if (!pg_exec(m->src, "configuring the source session",
                 "SET lock_timeout = '10s'; SET client_min_messages = warning") ||
        !pg_exec(m->tgt, "configuring the target session",
                 "SET lock_timeout = '10s'; SET client_min_messages = warning"))
        goto failed;

    m->tables = calloc(plan->ntables, sizeof(pgs_mtable));
    if (m->tables == NULL)
        goto failed;
    for (size_t i = 0; i < plan->ntables; i++) {
        pgs_mtable *t = &m->tables[i];
        t->spec = &plan->tables[i];
        t->ord = (int)i;
        t->create_target = t->spec->part.method != PGS_PARTITION_NONE;
        m->ntables++;
        if (!catalog_read_rel(m->src, t->spec->source, &t->src) ||
            !catalog_read_rel(m->tgt, t->spec->target, &t->tgt) || !resolve_columns(t) ||
            !colmap_resolve(m->src, m->tgt, t))
            goto failed;
    }
    return m;

failed:
    migration_close(m);
    return NULL;
}

void migration_close(pgs_migration *m)
{
    if (m == NULL)
        return;
    for (int i = 0; i < m->ntables; i++) {
        catalog_relinfo_free(&m->tables[i].src);
        catalog_relinfo_free(&m->tables[i].tgt);
        free(m->tables[i].copy_into);
        strlist_free(&m->tables[i].match);
        strlist_free(&m->tables[i].cols);
        colmap_free(&m->tables[i].map);
    }
    free(m->tables);
    if (m->src)
        PQfinish(m->src);
    if (m->tgt)
        PQfinish(m->tgt);
    free(m);
}

pgs_mtable *migration_find_source(pgs_migration *m, const char *nspname, const char *relname)
{
    for (int i = 0; i < m->ntables; i++) {
        pgs_mtable *t = &m->tables[i];
        if (t->src.exists && strcmp(t->src.nspname, nspname) == 0 &&
            strcmp(t->src.relname, relname) == 0)
            return t;
    }
    return NULL;
}
