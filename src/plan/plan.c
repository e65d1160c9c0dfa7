/* plan.c: the plan's public entry points: read the file (pgs_plan_load),
 * parse it (pgs_plan_parse: the YAML tree, the keys, then the defaults for
 * what the file leaves out) and free it. The files named in plan_int.h do
 * the parts; printing connection strings safely is conninfo.c's job. */
#include "plan_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/stat.h>

#define PLAN_MAX_BYTES (1 << 20) /* a plan is a small text file */

static void free_list(char **list)
{
    if (!list)
        return;
    for (char **p = list; *p; p++)
        free(*p);
    free(list);
}

static void partition_spec_free(pgs_partition_spec *p)
{
    free(p->column);
    free(p->interval);
    free(p->manager);
    for (char ***g = p->values; g && *g; g++)
        free_list(*g);
    free(p->values);
    if (p->sub) {
        partition_spec_free(p->sub);
        free(p->sub);
    }
}

static void colmap_free(pgs_plan_colmap *cm)
{
    for (size_t i = 0; i < cm->n; i++) {
        free(cm->name[i]);
        free(cm->expr[i]);
    }
    free(cm->name);
    free(cm->expr);
    cm->name = cm->expr = NULL;
    cm->n = 0;
}

void pgs_plan_free(pgs_plan *plan)
{
    if (!plan)
        return;
    for (size_t i = 0; plan->tables && i < plan->ntables; i++) {
        pgs_plan_table *t = &plan->tables[i];
        free(t->source);
        free(t->target);
        partition_spec_free(&t->part);
        free_list(t->key);
        free_list(t->leave_behind);
        colmap_free(&t->columns);
        colmap_free(&t->reverse);
        free(t->rename_to);
    }
    free(plan->tables);
    free(plan->cutover.postpone_file);
    free(plan->hooks.copy_done);
    free(plan->hooks.ready);
    free(plan->hooks.cutover_started);
    free(plan->hooks.cutover_done);
    free(plan->hooks.failed);
    free(plan->hooks.blocked);
    free(plan->verify.method);
    free(plan->state_dir);
    free(plan->target);
    free(plan->source);
    free(plan->name);
    free(plan->path);
    free(plan);
}

pgs_plan *pgs_plan_parse(const char *yaml, size_t len, const char *path, char *err, size_t errlen)
{
    plan_ctx c = {path ? path : "<plan>", yaml ? yaml : "", yaml ? len : 0, err, errlen, false};
    pgs_plan *plan = NULL;
    ynode *root;

    if (err && errlen > 0)
        err[0] = '\0';
    if (!(root = ynode_read(&c)))
        return NULL;
    if (root->kind != YN_MAP) {
        plan_fail(&c, root->line, "plan",
                  "expected a mapping of keys (name, source, tables, ...), found %s; write "
                  "one \"key: value\" per line",
                  ynode_kind_name(root));
        goto failed;
    }
    if (!(plan = calloc(1, sizeof *plan)) || !(plan->path = strdup(c.path))) {
        plan_oom(&c);
        goto failed;
    }
    plan->cutover.max_lag_bytes = UINT64_C(8) << 20;
    plan->cutover.lock_timeout_ms = 500;
    plan->cutover.attempts = 20;
    plan->cutover.fence_timeout_ms = 2000;
    plan->cutover.max_block_ms = 100;
    plan->copy.workers = 0;
    plan->copy.chunk_bytes = UINT64_C(64) << 20;
    plan->apply.batch_changes = 20000;
    plan->apply.batch_ms = 200;
    plan->apply.idle_commit_ms = 20;
    plan->verify.max_snapshot_age_ms = 5 * 60 * 1000;
    plan->verify.chunk_rows = 20000;
    const ynode *tdb = ymap_get(root, "target");
    c.other_db = tdb != NULL; /* a null value fails as the key is read */
    if (!plan_fill_plan(&c, root, plan))
        goto failed;
    if (!plan->state_dir && !(plan->state_dir = strdup("/tmp"))) {
        plan_oom(&c);
        goto failed;
    }
    ynode_free(root);
    return plan;

failed:
    ynode_free(root);
    pgs_plan_free(plan);
    return NULL;
}

pgs_plan *pgs_plan_load(const char *path, char *err, size_t errlen)
{
    char *buf = NULL;
    size_t len = 0, cap = 0;
    pgs_plan *plan;
    FILE *f;

    if (!(f = fopen(path, "rb"))) {
        if (err && errlen > 0)
            snprintf(err, errlen, "%s: cannot open the plan: %s; check the path", path,
                     strerror(errno));
        return NULL;
    }
    for (;;) {
        if (len == cap) {
            char *more;
            cap = cap ? cap * 2 : 16384;
            if (cap > PLAN_MAX_BYTES + 1)
                cap = PLAN_MAX_BYTES + 1;
            if (len == cap || !(more = realloc(buf, cap)))
                break;
            buf = more;
        }
        size_t n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0)
            break;
    }
    if (ferror(f) || !buf) {
        int e = ferror(f) ? errno : ENOMEM;
        if (err && errlen > 0)
            snprintf(err, errlen, "%s: cannot read the plan: %s; check the path", path,
                     strerror(e));
        plan = NULL;
    } else if (len > PLAN_MAX_BYTES) {
        if (err && errlen > 0)
            snprintf(err, errlen,
                     "%s: the file is larger than %d kB; a plan is a small text "
                     "file, check the path",
                     path, PLAN_MAX_BYTES / 1024);
        plan = NULL;
    } else {
        plan = pgs_plan_parse(buf, len, path, err, errlen);
    }
    /* libpq's rule for a .pgpass file: any group or world bit is too many. */
    struct stat st;
    if (plan && fstat(fileno(f), &st) == 0 && (st.st_mode & (S_IRWXG | S_IRWXO)) != 0)
        plan->password_exposed = pgs_conninfo_has_password(plan->source) ||
                                 (plan->target && pgs_conninfo_has_password(plan->target));
    fclose(f);
    free(buf);
    return plan;
}
