/* plan_tables.c: the "tables:" list: table names, the partition block, the
 * key and leave_behind lists, and the checks across tables (no table is
 * listed twice, or is both a source and a target). */
#include "plan_int.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

bool plan_fill_table_name(plan_ctx *c, const ynode *v, const char *kp, const char *s, char **dst)
{
    char q[QUOTE_LEN], why[96];
    sql_name n;

    if (!sql_name_parse(s, 2, &n, why, sizeof why)) {
        if (!why[0])
            return plan_oom(c);
        if (!*s)
            return plan_fail(c, v->line, kp,
                             "is empty; write schema.table or table, e.g. public.orders");
        return plan_fail(c, v->line, kp,
                         "%s is not a table name: %s; write schema.table or table, "
                         "double-quoting a part with other characters (\"My Table\")",
                         plan_quoted(q, sizeof q, s), why);
    }
    sql_name_clear(&n);
    *dst = strdup(s);
    return *dst ? true : plan_oom(c);
}

/* One column or object name, resolved as the server would (see plan.h). */
static bool resolve_ident(plan_ctx *c, const ynode *v, const char *kp, const char *what,
                          const char *s, char **dst)
{
    char q[QUOTE_LEN], why[96];
    sql_name n;

    if (!sql_name_parse(s, 1, &n, why, sizeof why)) {
        if (!why[0])
            return plan_oom(c);
        return plan_fail(c, v->line, kp,
                         "%s is not %s name: %s; write the name alone, double-quoted if it "
                         "has other characters or capitals (\"Created At\")",
                         plan_quoted(q, sizeof q, s), what, why);
    }
    *dst = n.part[0];
    return true;
}

bool plan_fill_partition_by(plan_ctx *c, const ynode *v, const char *kp, const char *s,
                            pgs_partition_spec *t)
{
    static const char fix[] = "use \"range (<column>)\", \"list (<column>)\" or \"hash "
                              "(<column>)\", e.g. \"range (created_at)\"";
    static const struct {
        const char *word;
        pgs_partition_method method;
    } methods[] = {
        {"range", PGS_PARTITION_RANGE}, {"list", PGS_PARTITION_LIST}, {"hash", PGS_PARTITION_HASH}};
    char q[QUOTE_LEN], col[256];
    const char *p = s, *start;
    bool inq = false;
    size_t n, w = 0;
    pgs_partition_method method = PGS_PARTITION_NONE;

    while (isspace((unsigned char)*p))
        p++;
    while (sql_ident_cont((unsigned char)p[w]))
        w++;
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++)
        if (w == strlen(methods[i].word) && strncasecmp(p, methods[i].word, w) == 0)
            method = methods[i].method;
    if (method == PGS_PARTITION_NONE) {
        if (w > 0 && (p[w] == '\0' || p[w] == ' ' || p[w] == '('))
            return plan_fail(c, v->line, kp, "%s is not supported; %s", plan_quoted(q, sizeof q, s),
                             fix);
        return plan_fail(c, v->line, kp, "%s is not a partition method; %s",
                         plan_quoted(q, sizeof q, s), fix);
    }
    for (p += w; isspace((unsigned char)*p); p++)
        ;
    if (*p != '(')
        return plan_fail(c, v->line, kp, "%s lacks the column in parentheses; %s",
                         plan_quoted(q, sizeof q, s), fix);
    for (p++; isspace((unsigned char)*p); p++)
        ;
    for (start = p; *p && (inq || *p != ')'); p++) {
        if (*p == '"')
            inq = !inq;
        else if (!inq && (*p == ',' || *p == '('))
            return plan_fail(c, v->line, kp,
                             "%s: partitioning by several columns or an expression is not "
                             "supported; %s",
                             plan_quoted(q, sizeof q, s), fix);
    }
    if (*p != ')')
        return plan_fail(c, v->line, kp, "%s lacks the closing parenthesis; %s",
                         plan_quoted(q, sizeof q, s), fix);
    for (n = (size_t)(p - start); n > 0 && isspace((unsigned char)start[n - 1]); n--)
        ;
    for (p++; isspace((unsigned char)*p); p++)
        ;
    if (*p)
        return plan_fail(c, v->line, kp, "%s has text after the closing parenthesis; %s",
                         plan_quoted(q, sizeof q, s), fix);
    if (n == 0)
        return plan_fail(c, v->line, kp, "%s names no column; %s", plan_quoted(q, sizeof q, s),
                         fix);
    if (n >= sizeof col)
        return plan_fail(c, v->line, kp, "the column name is too long; %s", fix);
    memcpy(col, start, n);
    col[n] = '\0';
    if (!resolve_ident(c, v, kp, "a column", col, &t->column))
        return false;
    t->method = method;
    return true;
}

/* `values:` of a list partition spec: a list whose items are a value or a
 * list of values, one partition each; no value twice. */
bool plan_fill_partition_values(plan_ctx *c, const ynode *v, const char *kp, const plan_field *f,
                                pgs_partition_spec *t)
{
    char ikp[KEYPATH_LEN], jkp[KEYPATH_LEN], q[QUOTE_LEN];
    static const char fix[] = "write e.g. \"values: [eu, [de, fr], us]\": one partition per "
                              "item, a value or a list of values";
    if (!plan_want_kind(c, v, YN_SEQ, kp, fix))
        return false;
    if (v->nkids == 0)
        return plan_fail(c, v->line, kp,
                         "is empty; %s, or remove it for one partition per value "
                         "found",
                         fix);
    if (!(t->values = calloc(v->nkids + 1, sizeof *t->values)))
        return plan_oom(c);
    for (size_t i = 0; i < v->nkids; i++) {
        const ynode *item = v->kids[i];
        plan_keypath_index(ikp, kp, i);
        bool one = item->kind == YN_SCALAR;
        size_t nv = one ? 1 : item->nkids;
        if (!one && !plan_want_kind(c, item, YN_SEQ, ikp, fix))
            return false;
        if (nv == 0)
            return plan_fail(c, item->line, ikp, "is an empty list; %s", fix);
        char **group = calloc(nv + 1, sizeof *group);
        if (!group)
            return plan_oom(c);
        t->values[i] = group;
        for (size_t j = 0; j < nv; j++) {
            const ynode *val = one ? item : item->kids[j];
            if (one)
                snprintf(jkp, sizeof jkp, "%s", ikp);
            else
                plan_keypath_index(jkp, ikp, j);
            if (val->kind == YN_SCALAR && val->null)
                return plan_fail(c, val->line, jkp,
                                 "has no value; rows whose partition column is NULL go to the "
                                 "DEFAULT partition (default: true)");
            const char *sv = plan_want_scalar(c, val, jkp, f);
            if (!sv)
                return false;
            if (!(group[j] = strdup(sv)))
                return plan_oom(c);
            for (size_t gi = 0; gi <= i; gi++)
                for (char **o = t->values[gi]; *o && o != &group[j]; o++)
                    if (!strcmp(*o, sv))
                        return plan_fail(c, val->line, jkp,
                                         "%s is listed twice; a value belongs to one partition",
                                         plan_quoted(q, sizeof q, sv));
        }
    }
    return true;
}

bool plan_fill_name_list(plan_ctx *c, const ynode *v, const char *kp, const plan_field *f,
                         char ***dst)
{
    char fix[KEYPATH_LEN], ikp[KEYPATH_LEN], q[QUOTE_LEN];
    const char *what = !strcmp(f->key, "key") ? "a column" : "an object";
    char **list;

    snprintf(fix, sizeof fix, "write e.g. \"%s: %s\"", f->key, f->example);
    if (!plan_want_kind(c, v, YN_SEQ, kp, fix))
        return false;
    if (v->nkids == 0)
        return plan_fail(c, v->line, kp, "is empty; list at least one name or remove the key");
    if (!(list = calloc(v->nkids + 1, sizeof *list)))
        return plan_oom(c);
    *dst = list;
    for (size_t i = 0; i < v->nkids; i++) {
        const ynode *item = v->kids[i];
        const char *s;

        plan_keypath_index(ikp, kp, i);
        if (item->kind == YN_SCALAR && item->null)
            return plan_fail(c, item->line, ikp, "has no value; %s", fix);
        if (!(s = plan_want_scalar(c, item, ikp, f)))
            return false;
        if (!resolve_ident(c, item, ikp, what, s, &list[i]))
            return false;
        for (size_t j = 0; j < i; j++)
            if (!strcmp(list[j], list[i]))
                return plan_fail(c, item->line, ikp, "%s is listed twice; keep one",
                                 plan_quoted(q, sizeof q, s));
    }
    return true;
}

/* `columns:` / `reverse:`: a mapping of column names to expressions. The
 * expressions are SQL for the server to check (preflight); here only that
 * each is a non-empty single value, each name a column name, given once. */
bool plan_fill_column_map(plan_ctx *c, const ynode *v, const char *kp, const plan_field *f,
                          pgs_plan_colmap *dst)
{
    char fix[KEYPATH_LEN], ikp[KEYPATH_LEN], q[QUOTE_LEN];

    snprintf(fix, sizeof fix, "write e.g. \"%s: %s\"", f->key, f->example);
    if (!plan_want_kind(c, v, YN_MAP, kp, fix))
        return false;
    size_t n = v->nkids / 2;
    if (n == 0)
        return plan_fail(c, v->line, kp, "is empty; name at least one column or remove the key");
    if (!(dst->name = calloc(n, sizeof *dst->name)) || !(dst->expr = calloc(n, sizeof *dst->expr)))
        return plan_oom(c);
    for (size_t i = 0; i < n; i++) {
        const ynode *k = v->kids[2 * i], *e = v->kids[2 * i + 1];
        if (k->kind != YN_SCALAR || k->null || strlen(k->text) != k->len)
            return plan_fail(c, k->line, kp, "found %s where a column name should be; %s",
                             k->kind == YN_SCALAR ? "an empty key" : ynode_kind_name(k), fix);
        plan_keypath_join(ikp, kp, k->text);
        char *name = NULL;
        if (!resolve_ident(c, k, ikp, "a column", k->text, &name))
            return false;
        dst->name[dst->n] = name;
        dst->n++;
        for (size_t j = 0; j + 1 < dst->n; j++)
            if (!strcmp(dst->name[j], name))
                return plan_fail(c, k->line, ikp, "column %s is given twice; keep one",
                                 plan_quoted(q, sizeof q, name));
        if (e->kind == YN_SCALAR && e->null)
            return plan_fail(c, k->line, ikp,
                             "has no expression; write an SQL expression, e.g. \"%s\", and "
                             "quote a string constant twice (\"'eu'\")",
                             f->example);
        const char *s = plan_want_scalar(c, e, ikp, f);
        if (!s)
            return false;
        size_t sp = strspn(s, " \t\r\n");
        if (s[sp] == '\0')
            return plan_fail(c, e->line, ikp, "the expression is empty; write an SQL expression");
        if (!(dst->expr[i] = strdup(s)))
            return plan_oom(c);
    }
    return true;
}

/* A key of the partition block that the method does not take. */
static bool not_for(plan_ctx *c, const ynode *v, const char *kp, const char *key,
                    const char *method, const char *fix)
{
    char ikp[KEYPATH_LEN];
    const ynode *k = ymap_get(v, key);
    if (!k)
        return true;
    plan_keypath_join(ikp, kp, key);
    return plan_fail(c, k->line, ikp, "is not used by %s partitioning; %s", method, fix);
}

/* `manager: pg_partman`: range partitions by an interval, one level, and
 * no DEFAULT partition of pgshift's (pg_partman makes its own when it
 * registers the table, under a name it fixes). */
static bool check_manager(plan_ctx *c, const ynode *v, const char *kp, const pgs_partition_spec *t)
{
    char ikp[KEYPATH_LEN];
    const ynode *k = ymap_get(v, "manager");
    if (!t->manager || !k)
        return true;
    plan_keypath_join(ikp, kp, "manager");
    if (strcmp(t->manager, "pg_partman") != 0)
        return plan_fail(c, k->line, ikp,
                         "\"%s\" is not a partition manager pgshift knows; write \"manager: "
                         "pg_partman\" or remove the key",
                         t->manager);
    if (t->method != PGS_PARTITION_RANGE || !t->interval)
        return plan_fail(c, k->line, ikp,
                         "pg_partman manages range partitions by an interval; use it with "
                         "\"by: range (<column>)\" and \"interval:\", or remove the key");
    if (t->sub)
        return plan_fail(c, k->line, ikp,
                         "pgshift registers one level with pg_partman; remove \"subpartition:\" "
                         "or the manager");
    if (t->with_default)
        return plan_fail(c, k->line, ikp,
                         "pg_partman makes the DEFAULT partition itself when pgshift registers "
                         "the table after the cutover; remove \"default: true\"");
    return true;
}

bool plan_fill_partition(plan_ctx *c, const ynode *v, const char *kp, const plan_field *f,
                         pgs_partition_spec *t)
{
    char ikp[KEYPATH_LEN];

    if (!plan_want_kind(c, v, YN_MAP, kp,
                        "write \"by: range (<column>)\" and \"interval: 1 month\" indented under "
                        "\"partition:\""))
        return false;
    if (!plan_fill_map(c, v, kp, f->sub, (char *)t))
        return false;
    switch (t->method) {
    case PGS_PARTITION_RANGE:
        if (!not_for(c, v, kp, "modulus", "range", "it is for \"by: hash (...)\"") ||
            !not_for(c, v, kp, "values", "range", "it is for \"by: list (...)\""))
            return false;
        if (!t->interval && !t->with_default) {
            plan_keypath_join(ikp, kp, "interval");
            return plan_fail(c, v->line, ikp,
                             "is missing; add e.g. \"interval: 1 month\", or \"default: true\" "
                             "for only a DEFAULT partition");
        }
        break;
    case PGS_PARTITION_LIST:
        if (!not_for(c, v, kp, "modulus", "list", "it is for \"by: hash (...)\"") ||
            !not_for(c, v, kp, "interval", "list", "list the values with \"values:\"") ||
            !not_for(c, v, kp, "ahead", "list", "it is for \"by: range (...)\""))
            return false;
        break;
    case PGS_PARTITION_HASH:
        if (!not_for(c, v, kp, "interval", "hash",
                     "give the number of partitions as "
                     "\"modulus: N\"") ||
            !not_for(c, v, kp, "values", "hash", "it is for \"by: list (...)\"") ||
            !not_for(c, v, kp, "ahead", "hash", "it is for \"by: range (...)\"") ||
            !not_for(c, v, kp, "default", "hash",
                     "a hash-partitioned table has no DEFAULT partition: every row has one"))
            return false;
        if (t->modulus < 2) {
            plan_keypath_join(ikp, kp, "modulus");
            return plan_fail(c, v->line, ikp,
                             "is missing or below 2; add e.g. \"modulus: 8\" (the number of "
                             "partitions)");
        }
        break;
    default:
        break;
    }
    return check_manager(c, v, kp, t);
}

/* `subpartition:`: the same keys as `partition:`, one level deep. */
bool plan_fill_subpartition(plan_ctx *c, const ynode *v, const char *kp, const plan_field *f,
                            pgs_partition_spec **dst)
{
    char ikp[KEYPATH_LEN];
    const ynode *k = v->kind == YN_MAP ? ymap_get(v, "subpartition") : NULL;
    if (k) {
        plan_keypath_join(ikp, kp, "subpartition");
        return plan_fail(c, k->line, ikp,
                         "partitions go one level deep at most; remove this block (or "
                         "make the target yourself and name it as the target)");
    }
    pgs_partition_spec *sp = calloc(1, sizeof *sp);
    if (!sp)
        return plan_oom(c);
    *dst = sp;
    sp->ahead = 3;
    if (!plan_fill_partition(c, v, kp, f, sp))
        return false;
    if (sp->manager) {
        plan_keypath_join(ikp, kp, "manager");
        return plan_fail(c, ymap_get(v, "manager")->line, ikp,
                         "belongs under \"partition:\" (pg_partman manages the top level)");
    }
    return true;
}

/* Checks table i against itself and the ones before it. */
static bool check_table_names(plan_ctx *c, const ynode *item, const char *kp, size_t i,
                              sql_name *src, sql_name *dst, const pgs_plan_table *tables,
                              const ynode *const *items)
{
    char q[QUOTE_LEN], ekp[KEYPATH_LEN];
    const ynode *sv = ymap_get(item, "source"), *tv = ymap_get(item, "target");

    if (!c->other_db && sql_name_equal(&src[i], &dst[i])) {
        plan_keypath_join(ekp, kp, "target");
        return plan_fail(c, tv->line, ekp,
                         "%s is the same table as the source; name a new table to migrate to",
                         plan_quoted(q, sizeof q, tables[i].target));
    }
    for (size_t j = 0; j < i; j++) {
        size_t jline = items[j]->line;
        if (sql_name_equal(&src[i], &src[j])) {
            plan_keypath_join(ekp, kp, "source");
            return plan_fail(c, sv->line, ekp,
                             "%s is already the source of tables[%zu] (line %zu); list each "
                             "source table once",
                             plan_quoted(q, sizeof q, tables[i].source), j, jline);
        }
        if (sql_name_equal(&dst[i], &dst[j])) {
            plan_keypath_join(ekp, kp, "target");
            return plan_fail(c, tv->line, ekp,
                             "%s is already the target of tables[%zu] (line %zu); give each "
                             "table its own target",
                             plan_quoted(q, sizeof q, tables[i].target), j, jline);
        }
        if (!c->other_db &&
            (sql_name_equal(&src[i], &dst[j]) || sql_name_equal(&dst[i], &src[j]))) {
            bool is_src = sql_name_equal(&src[i], &dst[j]);
            plan_keypath_join(ekp, kp, is_src ? "source" : "target");
            return plan_fail(c, is_src ? sv->line : tv->line, ekp,
                             "%s is also the %s of tables[%zu] (line %zu); a table cannot be "
                             "both a source and a target",
                             plan_quoted(q, sizeof q, is_src ? tables[i].source : tables[i].target),
                             is_src ? "target" : "source", j, jline);
        }
    }
    return true;
}

bool plan_fill_tables(plan_ctx *c, const ynode *v, const char *kp, const plan_field *f,
                      pgs_plan *plan)
{
    static const char item_fix[] =
        "write each table as \"- source: schema.table\" with \"target: schema.table\" below it";
    char ikp[KEYPATH_LEN], why[96];
    sql_name *src = NULL, *dst = NULL;
    bool ok = false;

    if (!plan_want_kind(c, v, YN_SEQ, kp, item_fix))
        return false;
    if (v->nkids == 0)
        return plan_fail(c, v->line, kp, "is empty; list at least one table to migrate");
    plan->tables = calloc(v->nkids, sizeof *plan->tables);
    src = calloc(v->nkids, sizeof *src);
    dst = calloc(v->nkids, sizeof *dst);
    if (!plan->tables || !src || !dst) {
        plan_oom(c);
        goto done;
    }
    plan->ntables = v->nkids;
    for (size_t i = 0; i < v->nkids; i++) {
        const ynode *item = v->kids[i];
        pgs_plan_table *t = &plan->tables[i];

        plan_keypath_index(ikp, kp, i);
        t->part.ahead = 3;
        if (item->kind == YN_SCALAR && item->null) {
            plan_fail(c, item->line, ikp, "is empty; remove the \"-\" line or %s", item_fix);
            goto done;
        }
        if (!plan_want_kind(c, item, YN_MAP, ikp, item_fix) ||
            !plan_fill_map(c, item, ikp, f->sub, (char *)t))
            goto done;
        /* Both names passed plan_fill_table_name(), so only memory can fail here. */
        if (!sql_name_parse(t->source, 2, &src[i], why, sizeof why) ||
            !sql_name_parse(t->target, 2, &dst[i], why, sizeof why)) {
            plan_oom(c);
            goto done;
        }
        if (!check_table_names(c, item, ikp, i, src, dst, plan->tables,
                               (const ynode *const *)v->kids))
            goto done;
        if (t->columns.n > 0 && t->part.method != PGS_PARTITION_NONE) {
            char ekp[KEYPATH_LEN];
            plan_keypath_join(ekp, ikp, "columns");
            plan_fail(c, ymap_get(item, "columns")->line, ekp,
                      "cannot be used with \"partition:\", where pgshift creates the target "
                      "with the source's columns; create the target with the new columns "
                      "yourself (CREATE TABLE ... (LIKE source INCLUDING ALL), then ALTER it) and "
                      "remove \"partition:\"");
            goto done;
        }
    }
    ok = true;

done:
    for (size_t i = 0; src && dst && i < v->nkids; i++) {
        sql_name_clear(&src[i]);
        sql_name_clear(&dst[i]);
    }
    free(src);
    free(dst);
    return ok;
}
