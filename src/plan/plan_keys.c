/* plan_keys.c: the plan's keys, as one declarative table per mapping, and
 * the walk of a mapping through its table: unknown, repeated, empty and
 * missing keys, and each value handed to the reader for its type. */
#include "plan_int.h"

#include <ctype.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

static const plan_field partition_fields[] = {
    {"by", F_PARTITION_BY, 0, true, 0, 0, "range (created_at)", NULL},
    {"modulus", F_INT, offsetof(pgs_partition_spec, modulus), false, 1, 1000, "8", NULL},
    {"values", F_PARTITION_VALUES, 0, false, 0, 0, "[eu, [de, fr], us]", NULL},
    {"interval", F_TEXT, offsetof(pgs_partition_spec, interval), false, 0, 0, "1 month", NULL},
    {"default", F_BOOL, offsetof(pgs_partition_spec, with_default), false, 0, 0, "true", NULL},
    {"ahead", F_INT, offsetof(pgs_partition_spec, ahead), false, 0, INT_MAX, "3", NULL},
    {"manager", F_TEXT, offsetof(pgs_partition_spec, manager), false, 0, 0, "pg_partman", NULL},
    {"subpartition", F_SUBPARTITION, offsetof(pgs_partition_spec, sub), false, 0, 0,
     "{by: hash (site_id), modulus: 4}", partition_fields},
    {NULL, 0, 0, false, 0, 0, NULL, NULL},
};

static const plan_field table_fields[] = {
    {"source", F_TABLE_NAME, offsetof(pgs_plan_table, source), true, 0, 0,
     "public.petri_observations", NULL},
    {"target", F_TABLE_NAME, offsetof(pgs_plan_table, target), true, 0, 0,
     "public.petri_observations_partitioned", NULL},
    {"partition", F_PARTITION, offsetof(pgs_plan_table, part), false, 0, 0,
     "{by: range (created_at), interval: 1 month}", partition_fields},
    {"key", F_NAME_LIST, offsetof(pgs_plan_table, key), false, 0, 0, "[id]", NULL},
    {"leave_behind", F_NAME_LIST, offsetof(pgs_plan_table, leave_behind), false, 0, 0,
     "[audit_trigger]", NULL},
    {"columns", F_COLUMN_MAP, offsetof(pgs_plan_table, columns), false, 0, 0,
     "{id: id::bigint, amount_cents: (amount * 100)::bigint}", NULL},
    {"reverse", F_COLUMN_MAP, offsetof(pgs_plan_table, reverse), false, 0, 0,
     "{amount: amount_cents / 100.0}", NULL},
    {NULL, 0, 0, false, 0, 0, NULL, NULL},
};

static const plan_field cutover_fields[] = {
    {"max_lag", F_SIZE, offsetof(pgs_plan_cutover, max_lag_bytes), false, 0, 0, "8MB", NULL},
    {"lock_timeout", F_DURATION, offsetof(pgs_plan_cutover, lock_timeout_ms), false, 1, 60000,
     "500ms", NULL},
    {"attempts", F_INT, offsetof(pgs_plan_cutover, attempts), false, 1, INT_MAX, "20", NULL},
    {"fence_timeout", F_DURATION, offsetof(pgs_plan_cutover, fence_timeout_ms), false, 1, 600000,
     "2s", NULL},
    {"max_block", F_DURATION, offsetof(pgs_plan_cutover, max_block_ms), false, 1, 600000, "100ms",
     NULL},
    {"postpone", F_BOOL, offsetof(pgs_plan_cutover, postpone), false, 0, 0, "false", NULL},
    {"verify", F_BOOL, offsetof(pgs_plan_cutover, verify), false, 0, 0, "true", NULL},
    {"postpone_file", F_TEXT, offsetof(pgs_plan_cutover, postpone_file), false, 0, 0,
     "/tmp/petri.postpone", NULL},
    {NULL, 0, 0, false, 0, 0, NULL, NULL},
};

static const plan_field copy_fields[] = {
    {"workers", F_INT, offsetof(pgs_plan_copy, workers), false, 0, 64, "4", NULL},
    {"chunk_size", F_SIZE, offsetof(pgs_plan_copy, chunk_bytes), false, 1, 0, "64MB", NULL},
    {NULL, 0, 0, false, 0, 0, NULL, NULL},
};

static const plan_field apply_fields[] = {
    {"batch_changes", F_INT, offsetof(pgs_plan_apply, batch_changes), false, 1, INT_MAX, "20000",
     NULL},
    {"batch_time", F_DURATION, offsetof(pgs_plan_apply, batch_ms), false, 1, INT_MAX, "200ms",
     NULL},
    {"idle_commit_time", F_DURATION, offsetof(pgs_plan_apply, idle_commit_ms), false, 1, INT_MAX,
     "20ms", NULL},
    {"early_streamed", F_BOOL, offsetof(pgs_plan_apply, early_streamed), false, 0, 0, "false",
     NULL},
    {NULL, 0, 0, false, 0, 0, NULL, NULL},
};

static const plan_field hooks_fields[] = {
    {"copy_done", F_TEXT, offsetof(pgs_plan_hooks, copy_done), false, 0, 0,
     "'notify-chat copy done'", NULL},
    {"ready", F_TEXT, offsetof(pgs_plan_hooks, ready), false, 0, 0, "'notify-chat ready'", NULL},
    {"cutover_started", F_TEXT, offsetof(pgs_plan_hooks, cutover_started), false, 0, 0,
     "'notify-chat cutover started'", NULL},
    {"cutover_done", F_TEXT, offsetof(pgs_plan_hooks, cutover_done), false, 0, 0,
     "'notify-chat cutover done'", NULL},
    {"failed", F_TEXT, offsetof(pgs_plan_hooks, failed), false, 0, 0, "'page-oncall'", NULL},
    {"blocked", F_TEXT, offsetof(pgs_plan_hooks, blocked), false, 0, 0,
     "'notify-chat cutover blocked'", NULL},
    {NULL, 0, 0, false, 0, 0, NULL, NULL},
};

static const plan_field verify_fields[] = {
    {"max_snapshot_age", F_DURATION, offsetof(pgs_plan_verify, max_snapshot_age_ms), false, 0,
     INT_MAX, "5min", NULL},
    {"chunk_rows", F_INT, offsetof(pgs_plan_verify, chunk_rows), false, 100, 10000000, "20000",
     NULL},
    {"max_rate", F_INT, offsetof(pgs_plan_verify, max_rate), false, 1, INT_MAX, "100000", NULL},
    {"method", F_TEXT, offsetof(pgs_plan_verify, method), false, 0, 0, "auto|scan|walk", NULL},
    {NULL, 0, 0, false, 0, 0, NULL, NULL},
};

static const plan_field rollback_fields[] = {
    {"window", F_DURATION, offsetof(pgs_plan_rollback, window_ms), false, 0, INT_MAX, "24h", NULL},
    {NULL, 0, 0, false, 0, 0, NULL, NULL},
};

static const plan_field top_fields[] = {
    {"name", F_NAME, offsetof(pgs_plan, name), true, 0, 0, "petri", NULL},
    {"source", F_CONNINFO, offsetof(pgs_plan, source), true, 0, 0, "'host=db1 dbname=app'", NULL},
    {"target", F_CONNINFO, offsetof(pgs_plan, target), false, 0, 0, "'host=db2 dbname=app'", NULL},
    {"state_dir", F_TEXT, offsetof(pgs_plan, state_dir), false, 0, 0, "/var/run/pgshift", NULL},
    {"tables", F_TABLES, 0, true, 0, 0, "[{source: public.a, target: public.a_new}]", table_fields},
    {"cutover", F_SECTION, offsetof(pgs_plan, cutover), false, 0, 0, "{max_lag: 8MB}",
     cutover_fields},
    {"copy", F_SECTION, offsetof(pgs_plan, copy), false, 0, 0, "{workers: 4}", copy_fields},
    {"apply", F_SECTION, offsetof(pgs_plan, apply), false, 0, 0, "{batch_changes: 20000}",
     apply_fields},
    {"hooks", F_SECTION, offsetof(pgs_plan, hooks), false, 0, 0, "{failed: 'page-oncall'}",
     hooks_fields},
    {"verify", F_SECTION, offsetof(pgs_plan, verify), false, 0, 0, "{max_snapshot_age: 5min}",
     verify_fields},
    {"rollback", F_SECTION, offsetof(pgs_plan, rollback), false, 0, 0, "{window: 24h}",
     rollback_fields},
    {NULL, 0, 0, false, 0, 0, NULL, NULL},
};

/* Where a key that is unknown in one mapping does belong. */
static const struct {
    const plan_field *fields;
    const char *where;
} key_homes[] = {
    {top_fields, "move it to the top level"},
    {table_fields, "move it into a table under \"tables:\""},
    {partition_fields, "move it under the table's \"partition:\""},
    {cutover_fields, "move it under \"cutover:\""},
    {copy_fields, "move it under \"copy:\""},
    {apply_fields, "move it under \"apply:\""},
    {verify_fields, "move it under \"verify:\""},
    {rollback_fields, "move it under \"rollback:\""},
    {hooks_fields, "move it under \"hooks:\""},
};

static const plan_field *field_find(const plan_field *fields, const char *key)
{
    for (const plan_field *f = fields; f->key; f++)
        if (!strcmp(f->key, key))
            return f;
    return NULL;
}

/* Edit distance counting a swap of two neighbours as one edit (optimal
 * string alignment), case-insensitive; SIZE_MAX for long strings. */
static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    size_t d[65][65];

    if (la > 64 || lb > 64)
        return SIZE_MAX;
    for (size_t i = 0; i <= la; i++)
        d[i][0] = i;
    for (size_t j = 0; j <= lb; j++)
        d[0][j] = j;
    for (size_t i = 1; i <= la; i++) {
        for (size_t j = 1; j <= lb; j++) {
            int ai = tolower((unsigned char)a[i - 1]), bj = tolower((unsigned char)b[j - 1]);
            size_t best = d[i - 1][j - 1] + (ai != bj);
            if (d[i - 1][j] + 1 < best)
                best = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < best)
                best = d[i][j - 1] + 1;
            if (i > 1 && j > 1 && ai == tolower((unsigned char)b[j - 2]) &&
                tolower((unsigned char)a[i - 2]) == bj && d[i - 2][j - 2] + 1 < best)
                best = d[i - 2][j - 2] + 1;
            d[i][j] = best;
        }
    }
    return d[la][lb];
}

static bool unknown_key(plan_ctx *c, const ynode *k, const char *kp, const plan_field *fields)
{
    const plan_field *best = NULL;
    size_t best_d = SIZE_MAX;
    char known[KEYPATH_LEN] = "";

    for (const plan_field *f = fields; f->key; f++) {
        size_t d = edit_distance(k->text, f->key);
        if (d < best_d) {
            best_d = d;
            best = f;
        }
        size_t used = strlen(known);
        snprintf(known + used, sizeof known - used, "%s%s", used ? ", " : "", f->key);
    }
    if (best && best_d <= 2 && best_d * 2 < strlen(best->key))
        return plan_fail(c, k->line, kp, "unknown key; did you mean \"%s\"?", best->key);
    for (size_t i = 0; i < sizeof key_homes / sizeof key_homes[0]; i++)
        if (key_homes[i].fields != fields && field_find(key_homes[i].fields, k->text))
            return plan_fail(c, k->line, kp, "unknown key here; %s", key_homes[i].where);
    return plan_fail(c, k->line, kp, "unknown key; the keys here are %s", known);
}

/* The scalar text of v, or NULL (error written) if v is not a scalar. */
const char *plan_want_scalar(plan_ctx *c, const ynode *v, const char *kp, const plan_field *f)
{
    if (v->kind != YN_SCALAR) {
        plan_fail(c, v->line, kp, "expected a single value, found %s; write e.g. \"%s: %s\"",
                  ynode_kind_name(v), f->key, f->example);
        return NULL;
    }
    if (strlen(v->text) != v->len) {
        plan_fail(c, v->line, kp, "the value contains a NUL character; remove it");
        return NULL;
    }
    return v->text;
}

bool plan_want_kind(plan_ctx *c, const ynode *v, ynode_kind kind, const char *kp, const char *fix)
{
    if (v->kind == kind)
        return true;
    return plan_fail(c, v->line, kp, "expected %s, found %s; %s",
                     kind == YN_MAP ? "a mapping" : "a list", ynode_kind_name(v), fix);
}

static bool fill_field(plan_ctx *c, const plan_field *f, const ynode *v, const char *kp, char *base)
{
    /* fix holds known plus a short sentence around it */
    char fix[KEYPATH_LEN + 64], known[KEYPATH_LEN] = "";
    void *dst = base + f->offset;
    const char *s = NULL;

    switch (f->type) {
    case F_SECTION:
        for (const plan_field *sf = f->sub; sf->key; sf++) {
            size_t used = strlen(known);
            snprintf(known + used, sizeof known - used, "%s%s", used ? ", " : "", sf->key);
        }
        snprintf(fix, sizeof fix, "indent its keys (%s) under \"%s:\"", known, f->key);
        return plan_want_kind(c, v, YN_MAP, kp, fix) && plan_fill_map(c, v, kp, f->sub, dst);
    case F_TABLES:
        return plan_fill_tables(c, v, kp, f, (pgs_plan *)base);
    case F_PARTITION:
        return plan_fill_partition(c, v, kp, f, dst);
    case F_SUBPARTITION:
        return plan_fill_subpartition(c, v, kp, f, dst);
    case F_NAME_LIST:
        return plan_fill_name_list(c, v, kp, f, dst);
    case F_COLUMN_MAP:
        return plan_fill_column_map(c, v, kp, f, dst);
    case F_PARTITION_VALUES:
        return plan_fill_partition_values(c, v, kp, f, (pgs_partition_spec *)base);
    default:
        break;
    }

    if (!(s = plan_want_scalar(c, v, kp, f)))
        return false;
    switch (f->type) {
    case F_NAME:
        return plan_fill_name(c, v, kp, s, dst);
    case F_CONNINFO:
        return plan_fill_conninfo(c, v, kp, s, dst);
    case F_TEXT:
        return plan_fill_text(c, v, kp, f, s, dst);
    case F_BOOL:
        return plan_fill_bool(c, v, kp, s, dst);
    case F_INT:
        return plan_fill_int(c, v, kp, f, s, dst);
    case F_SIZE:
        return plan_fill_size(c, v, kp, f, s, dst);
    case F_DURATION:
        return plan_fill_duration(c, v, kp, f, s, dst);
    case F_TABLE_NAME:
        return plan_fill_table_name(c, v, kp, s, dst);
    case F_PARTITION_BY:
        return plan_fill_partition_by(c, v, kp, s, (pgs_partition_spec *)base);
    default:
        break;
    }
    return true;
}

/* Fills base from a mapping by the table fields[]: unknown and repeated keys
 * are errors, keys are read in file order, required keys are checked last. */
bool plan_fill_map(plan_ctx *c, const ynode *map, const char *kpath, const plan_field *fields,
                   char *base)
{
    char kp[KEYPATH_LEN];

    for (size_t i = 0; i + 1 < map->nkids; i += 2) {
        const ynode *k = map->kids[i], *v = map->kids[i + 1];
        const plan_field *f;

        if (k->kind != YN_SCALAR || k->null || strlen(k->text) != k->len)
            return plan_fail(c, k->line, *kpath ? kpath : "plan",
                             "found %s where a key should be; write \"key: value\"",
                             k->kind == YN_SCALAR ? "an empty key" : ynode_kind_name(k));
        plan_keypath_join(kp, kpath, k->text);
        if (!(f = field_find(fields, k->text)))
            return unknown_key(c, k, kp, fields);
        for (size_t j = 0; j < i; j += 2) {
            const ynode *prev = map->kids[j];
            if (!strcmp(prev->text, k->text))
                return plan_fail(c, k->line, kp, "is given twice (first on line %zu); keep one",
                                 prev->line);
        }
        if (v->kind == YN_SCALAR && v->null)
            return plan_fail(c, k->line, kp, "has no value; write e.g. \"%s: %s\"%s", f->key,
                             f->example, f->required ? "" : " or remove the key");
        if (!fill_field(c, f, v, kp, base))
            return false;
    }
    for (const plan_field *f = fields; f->key; f++) {
        if (f->required && !ymap_get(map, f->key)) {
            plan_keypath_join(kp, kpath, f->key);
            return plan_fail(c, map->line, kp, "is missing; add e.g. \"%s: %s\"", f->key,
                             f->example);
        }
    }
    return true;
}

bool plan_fill_plan(plan_ctx *c, const ynode *root, pgs_plan *plan)
{
    return plan_fill_map(c, root, "", top_fields, (char *)plan);
}
