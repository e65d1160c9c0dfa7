/* Unit tests for the plan file parser: a full plan, defaults, one exact
 * error line per rule, sizes and durations, and password redaction. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgshift/colmap.h"
#include "pgshift/plan.h"

#include <libpq-fe.h>
#include <sys/stat.h>
#include <unistd.h>

#define MB (UINT64_C(1) << 20)

static pgs_plan *parse(const char *yaml, char *err, size_t errlen)
{
    return pgs_plan_parse(yaml, strlen(yaml), "plan.yaml", err, errlen);
}

static const char full_plan[] = "name: petri_v2\n"
                                "source: \"host=db1 dbname=app password='s3 cret'\"\n"
                                "target: postgresql://mover:pw@db2/app\n"
                                "state_dir: /var/run/pgshift\n"
                                "tables:\n"
                                "  - source: public.petri_observations\n"
                                "    target: public.petri_observations_partitioned\n"
                                "    partition:\n"
                                "      by: RANGE ( \"CreatedAt\" )\n"
                                "      interval: 1 month\n"
                                "      default: yes\n"
                                "      ahead: 6\n"
                                "    key: [id, '\"Tenant\"']\n"
                                "    leave_behind:\n"
                                "      - audit_trigger\n"
                                "      - Row_Policy\n"
                                "  - source: gasifier_observations\n"
                                "    target: '\"Archive\".gasifier_observations'\n"
                                "cutover:\n"
                                "  max_lag: 16MB\n"
                                "  lock_timeout: 2s\n"
                                "  attempts: 5\n"
                                "  postpone: on\n"
                                "  postpone_file: /tmp/petri.postpone\n"
                                "copy:\n"
                                "  workers: 4\n"
                                "  chunk_size: 128 MB\n"
                                "apply:\n"
                                "  batch_changes: 5000\n"
                                "  batch_time: 1min\n"
                                "  idle_commit_time: 5ms\n"
                                "hooks:\n"
                                "  failed: page-oncall --team db\n"
                                "  cutover_done: 'echo done >> /tmp/x'\n";

static void full(void **state)
{
    char err[512] = "";
    pgs_plan *p = parse(full_plan, err, sizeof err);
    assert_non_null(p);
    assert_string_equal(err, "");
    assert_string_equal(p->path, "plan.yaml");
    assert_string_equal(p->name, "petri_v2");
    assert_string_equal(p->source, "host=db1 dbname=app password='s3 cret'");
    assert_string_equal(p->target, "postgresql://mover:pw@db2/app");
    assert_string_equal(p->state_dir, "/var/run/pgshift");
    assert_int_equal(p->ntables, 2);

    const pgs_plan_table *t = &p->tables[0];
    assert_string_equal(t->source, "public.petri_observations");
    assert_string_equal(t->target, "public.petri_observations_partitioned");
    assert_int_equal(t->part.method, PGS_PARTITION_RANGE);
    assert_string_equal(t->part.column, "CreatedAt"); /* quoted: kept, unquoted */
    assert_string_equal(t->part.interval, "1 month");
    assert_true(t->part.with_default);
    assert_int_equal(t->part.ahead, 6);
    assert_non_null(t->key);
    assert_string_equal(t->key[0], "id");
    assert_string_equal(t->key[1], "Tenant");
    assert_null(t->key[2]);
    assert_string_equal(t->leave_behind[0], "audit_trigger");
    assert_string_equal(t->leave_behind[1], "row_policy"); /* plain: folded */
    assert_null(t->leave_behind[2]);

    t = &p->tables[1];
    assert_string_equal(t->source, "gasifier_observations");
    assert_string_equal(t->target, "\"Archive\".gasifier_observations"); /* as written */
    assert_int_equal(t->part.method, PGS_PARTITION_NONE);
    assert_null(t->part.column);
    assert_null(t->part.interval);
    assert_false(t->part.with_default);
    assert_int_equal(t->part.ahead, 3);
    assert_null(t->key);
    assert_null(t->leave_behind);

    assert_int_equal(p->cutover.max_lag_bytes, 16 * MB);
    assert_int_equal(p->cutover.lock_timeout_ms, 2000);
    assert_int_equal(p->cutover.attempts, 5);
    assert_true(p->cutover.postpone);
    assert_string_equal(p->cutover.postpone_file, "/tmp/petri.postpone");
    assert_string_equal(p->hooks.failed, "page-oncall --team db");
    assert_string_equal(p->hooks.cutover_done, "echo done >> /tmp/x");
    assert_null(p->hooks.ready);
    assert_int_equal(p->copy.workers, 4);
    assert_int_equal(p->copy.chunk_bytes, 128 * MB);
    assert_int_equal(p->apply.batch_changes, 5000);
    assert_int_equal(p->apply.batch_ms, 60000);
    assert_int_equal(p->apply.idle_commit_ms, 5);
    pgs_plan_free(p);
}

static void defaults(void **state)
{
    char err[512] = "";
    pgs_plan *p = parse("name: petri\n"
                        "source: postgres://app@db1/app\n"
                        "tables:\n"
                        "  - {source: petri_observations, target: petri_new,\n"
                        "     partition: {by: range (created_at), default: true}}\n",
                        err, sizeof err);
    assert_non_null(p);
    assert_string_equal(err, "");
    assert_null(p->target); /* NULL = same as source */
    assert_string_equal(p->state_dir, "/tmp");
    assert_int_equal(p->ntables, 1);
    assert_int_equal(p->tables[0].part.method, PGS_PARTITION_RANGE);
    assert_string_equal(p->tables[0].part.column, "created_at");
    assert_null(p->tables[0].part.interval); /* allowed with default: true */
    assert_true(p->tables[0].part.with_default);
    assert_int_equal(p->tables[0].part.ahead, 3);
    assert_int_equal(p->cutover.max_lag_bytes, 8 * MB);
    assert_int_equal(p->cutover.lock_timeout_ms, 500);
    assert_int_equal(p->cutover.attempts, 20);
    assert_false(p->cutover.postpone);
    assert_null(p->cutover.postpone_file);
    assert_int_equal(p->copy.workers, 0);
    assert_int_equal(p->copy.chunk_bytes, 64 * MB);
    assert_int_equal(p->apply.batch_changes, 20000);
    assert_int_equal(p->apply.batch_ms, 200);
    pgs_plan_free(p);
}

static void partition_methods(void **state)
{
    (void)state;
    char err[512] = "";
    pgs_plan *p = parse("name: petri\n"
                        "source: host=db1\n"
                        "tables:\n"
                        "  - {source: a, target: a_new, partition: {by: hash (id), modulus: 8}}\n"
                        "  - source: b\n"
                        "    target: b_new\n"
                        "    partition:\n"
                        "      by: LIST (\"Region\")\n"
                        "      values: [eu, [de, fr], 'n/a']\n"
                        "      default: true\n"
                        "  - {source: c, target: c_new, partition: {by: list (kind)}}\n",
                        err, sizeof err);
    if (!p)
        fail_msg("%s", err);
    assert_int_equal(p->tables[0].part.method, PGS_PARTITION_HASH);
    assert_string_equal(p->tables[0].part.column, "id");
    assert_int_equal(p->tables[0].part.modulus, 8);
    assert_int_equal(p->tables[1].part.method, PGS_PARTITION_LIST);
    assert_string_equal(p->tables[1].part.column, "Region");
    assert_string_equal(p->tables[1].part.values[0][0], "eu");
    assert_null(p->tables[1].part.values[0][1]);
    assert_string_equal(p->tables[1].part.values[1][0], "de");
    assert_string_equal(p->tables[1].part.values[1][1], "fr");
    assert_string_equal(p->tables[1].part.values[2][0], "n/a");
    assert_null(p->tables[1].part.values[3]);
    assert_true(p->tables[1].part.with_default);
    assert_int_equal(p->tables[2].part.method, PGS_PARTITION_LIST);
    assert_null(p->tables[2].part.values); /* one partition per value found */
    assert_null(p->tables[2].part.sub);
    pgs_plan_free(p);
    p = parse("name: petri\n"
              "source: host=db1\n"
              "tables:\n"
              "  - source: a\n"
              "    target: a_new\n"
              "    partition:\n"
              "      by: range (created_at)\n"
              "      interval: 1 month\n"
              "      subpartition: {by: list (\"Region\"), values: [eu, us], default: true}\n",
              err, sizeof err);
    if (!p)
        fail_msg("%s", err);
    const pgs_partition_spec *sub = p->tables[0].part.sub;
    assert_non_null(sub);
    assert_int_equal(sub->method, PGS_PARTITION_LIST);
    assert_string_equal(sub->column, "Region");
    assert_string_equal(sub->values[1][0], "us");
    assert_true(sub->with_default);
    assert_int_equal(sub->ahead, 3);
    assert_null(sub->sub);
    assert_false(p->tables[0].part.with_default);
    assert_null(p->tables[0].part.manager);
    pgs_plan_free(p);
    p = parse("name: petri\n"
              "source: host=db1\n"
              "tables:\n"
              "  - source: a\n"
              "    target: a_new\n"
              "    partition: {by: range (at), interval: 1 month, ahead: 6, manager: pg_partman}\n",
              err, sizeof err);
    if (!p)
        fail_msg("%s", err);
    assert_string_equal(p->tables[0].part.manager, "pg_partman");
    assert_int_equal(p->tables[0].part.ahead, 6);
    pgs_plan_free(p);
}

/* The example shipped in tests/plans/, found next to this file. */
static void example_file(void **state)
{
    char path[4096], err[512] = "";
    const char *file = __FILE__;
    const char *slash = strrchr(file, '/');

    if (file[0] != '/' || !slash)
        skip(); /* built from a relative path: the example cannot be located */
    snprintf(path, sizeof path, "%.*s/../plans/example.yaml", (int)(slash - file), file);
    pgs_plan *p = pgs_plan_load(path, err, sizeof err);
    if (!p)
        fail_msg("%s", err);
    assert_string_equal(p->path, path);
    assert_string_equal(p->name, "petri");
    assert_string_equal(p->target, "host=db2 dbname=app user=pgshift");
    assert_int_equal(p->ntables, 2);
    assert_string_equal(p->tables[0].part.column, "created_at");
    assert_string_equal(p->tables[0].part.interval, "1 month");
    assert_string_equal(p->tables[0].key[0], "id");
    assert_string_equal(p->tables[0].leave_behind[0], "audit_trigger");
    assert_int_equal(p->tables[1].part.method, PGS_PARTITION_NONE);
    assert_int_equal(p->tables[1].columns.n, 4);
    assert_string_equal(p->tables[1].columns.name[1], "flow_lph");
    assert_string_equal(p->tables[1].columns.expr[1], "(flow_m3h * 1000)::bigint");
    assert_string_equal(p->tables[1].columns.expr[3], "'eu-1'");
    assert_int_equal(p->tables[1].reverse.n, 2);
    assert_string_equal(p->tables[1].reverse.name[1], "meta_text");
    assert_int_equal(p->tables[0].columns.n, 0);
    assert_int_equal(p->cutover.max_lag_bytes, 8 * MB);
    assert_string_equal(p->cutover.postpone_file, "/tmp/petri.postpone");
    assert_int_equal(p->cutover.fence_timeout_ms, 2000);
    assert_int_equal(p->copy.workers, 4);
    assert_int_equal(p->apply.batch_ms, 200);
    assert_string_equal(p->hooks.failed, "logger -t pgshift -p user.err failed");
    assert_false(p->cutover.verify);
    assert_string_equal(p->verify.method, "auto");
    assert_int_equal(p->verify.max_snapshot_age_ms, 5 * 60 * 1000);
    assert_int_equal(p->verify.chunk_rows, 20000);
    assert_int_equal(p->verify.max_rate, 100000);
    pgs_plan_free(p);
}

static void load_missing(void **state)
{
    char err[512];
    assert_null(pgs_plan_load("/nonexistent/plan.yaml", err, sizeof err));
    assert_string_equal(err, "/nonexistent/plan.yaml: cannot open the plan: No such file or "
                             "directory; check the path");
}

/* Writes a plan with these source and target lines to a new file of the
 * given mode, loads it and says whether the password was found exposed. */
static bool exposed(const char *dir, const char *source, const char *target, mode_t mode)
{
    char path[256], err[512] = "";
    snprintf(path, sizeof path, "%s/plan.yaml", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "name: p\nsource: \"%s\"\n%s%s%stables: [{source: a, target: b}]\n", source,
            target ? "target: \"" : "", target ? target : "", target ? "\"\n" : "");
    assert_int_equal(fclose(f), 0);
    assert_int_equal(chmod(path, mode), 0);
    pgs_plan *p = pgs_plan_load(path, err, sizeof err);
    if (!p)
        fail_msg("%s", err);
    bool r = p->password_exposed;
    pgs_plan_free(p);
    unlink(path);
    return r;
}

/* A password in a plan that others may read is flagged, as libpq warns
 * about such a .pgpass; parsing from memory never flags. */
static void password_file_mode(void **state)
{
    char dir[] = "/tmp/pgshift-plan-XXXXXX";
    assert_non_null(mkdtemp(dir));
    const char *pw = "host=db1 password=s3cret";
    assert_true(exposed(dir, pw, NULL, 0644));
    assert_true(exposed(dir, pw, NULL, 0640));
    assert_true(exposed(dir, pw, NULL, 0604));
    assert_true(exposed(dir, pw, NULL, 0610));
    assert_false(exposed(dir, pw, NULL, 0600));
    assert_false(exposed(dir, pw, NULL, 0400));
    assert_true(exposed(dir, "postgresql://u:s3cret@db1/app", NULL, 0644));
    assert_true(exposed(dir, "host=db1", "host=db2 password=s3cret", 0644));
    assert_true(exposed(dir, "host=db1", "postgresql://db2/app?sslpassword=k", 0644));
    assert_false(exposed(dir, "host=db1 dbname=app", "host=db2", 0644));
    assert_false(exposed(dir, "host=db1 password=''", NULL, 0644));
    assert_int_equal(rmdir(dir), 0);

    char err[512];
    pgs_plan *p = parse("name: p\nsource: \"password=x\"\ntables: [{source: a, target: b}]\n", err,
                        sizeof err);
    assert_non_null(p);
    assert_false(p->password_exposed);
    pgs_plan_free(p);
}

/* ---- one exact error line per rule ---- */

#define HEAD      "name: petri\nsource: host=db1\n"
#define ONE_TABLE "tables:\n  - source: public.a\n    target: public.b\n"

static const struct bad_plan {
    const char *yaml;
    const char *err;
} bad_plans[] = {
    /* YAML itself */
    {"name: petri\n  source: host=db1\n",
     "plan.yaml:2: YAML syntax error: mapping values are not allowed in this context; check the "
     "indentation, and quote values that contain \": \", \" #\" or start with a special "
     "character"},
    {"name: petri\nsource: \"host=db1\ntables: []\n",
     "plan.yaml:4: YAML syntax error: found unexpected end of stream (while scanning a quoted "
     "scalar on line 2); check the indentation, and quote values that contain \": \", \" #\" or "
     "start with a special character"},
    {"name: petri\nsource: host=\xff\n",
     "plan.yaml:2: YAML syntax error: invalid leading UTF-8 octet; save the file as UTF-8 text"},
    {HEAD ONE_TABLE "---\nname: other\n",
     "plan.yaml:6: YAML document: the file holds a second document (after \"---\"); keep one "
     "plan per file"},
    {HEAD "tables:\n  - &t {source: a, target: b}\n  - *t\n",
     "plan.yaml:4: YAML alias: anchors (&name) and aliases (*name) are not supported; write the "
     "value out in full"},
    {HEAD "state_dir: !dir /tmp\n" ONE_TABLE,
     "plan.yaml:3: YAML tag: tags (!name) are not supported; remove the tag"},
    {HEAD ONE_TABLE "state_dir: *dir\n",
     "plan.yaml:6: YAML alias: anchors (&name) and aliases (*name) are not supported; write the "
     "value out in full"},
    {HEAD ONE_TABLE "state_dir: &dir /tmp\nhooks:\n  ready: *dir\n",
     "plan.yaml:8: YAML alias: anchors (&name) and aliases (*name) are not supported; write the "
     "value out in full"},
    {HEAD ONE_TABLE "hooks: &h {ready: *h}\n",
     "plan.yaml:6: YAML alias: anchors (&name) and aliases (*name) are not supported; write the "
     "value out in full"},
    {HEAD "tables: !!omap\n  - source: a\n    target: b\n",
     "plan.yaml:3: YAML tag: tags (!name) are not supported; remove the tag"},
    {HEAD ONE_TABLE "[a]: b\n",
     "plan.yaml:6: plan: found a list where a key should be; write \"key: value\""},
    {HEAD "tables:\n\t- source: public.a\n",
     "plan.yaml:4: YAML syntax error: found character that cannot start any token; indent with "
     "spaces, YAML does not allow tabs there"},
    {"", "plan.yaml:1: plan: the file holds no plan; write at least \"name:\", \"source:\" and "
         "\"tables:\""},
    {"# only a comment\n",
     "plan.yaml:1: plan: the file holds no plan; write at least \"name:\", \"source:\" and "
     "\"tables:\""},
    {"- name: petri\n",
     "plan.yaml:1: plan: expected a mapping of keys (name, source, tables, ...), found a list; "
     "write one \"key: value\" per line"},
    {"name: \"pe\\0tri\"\n", "plan.yaml:1: name: the value contains a NUL character; remove it"},
    /* keys */
    {"nmae: petri\n", "plan.yaml:1: nmae: unknown key; did you mean \"name\"?"},
    {HEAD ONE_TABLE "cutover:\n  lock_timout: 1s\n",
     "plan.yaml:7: cutover.lock_timout: unknown key; did you mean \"lock_timeout\"?"},
    {HEAD ONE_TABLE "max_lag: 8MB\n",
     "plan.yaml:6: max_lag: unknown key here; move it under \"cutover:\""},
    {HEAD "tables:\n  - source: a\n    target: b\n    interval: 1 month\n",
     "plan.yaml:6: tables[0].interval: unknown key here; move it under the table's "
     "\"partition:\""},
    {HEAD ONE_TABLE "colour: red\n",
     "plan.yaml:6: colour: unknown key; the keys here are name, source, target, state_dir, "
     "tables, cutover, copy, apply, hooks, verify, rollback"},
    {HEAD ONE_TABLE "copy:\n  workers: 2\n  workers: 3\n",
     "plan.yaml:8: copy.workers: is given twice (first on line 7); keep one"},
    {"source: host=db1\n" ONE_TABLE, "plan.yaml:1: name: is missing; add e.g. \"name: petri\""},
    {"name: petri\n" ONE_TABLE,
     "plan.yaml:1: source: is missing; add e.g. \"source: 'host=db1 dbname=app'\""},
    {HEAD, "plan.yaml:1: tables: is missing; add e.g. \"tables: [{source: public.a, target: "
           "public.a_new}]\""},
    {HEAD ONE_TABLE "target:\n",
     "plan.yaml:6: target: has no value; write e.g. \"target: 'host=db2 dbname=app'\" or "
     "remove the key"},
    /* types */
    {"name: petri\nsource: [host=db1]\n" ONE_TABLE,
     "plan.yaml:2: source: expected a single value, found a list; write e.g. \"source: "
     "'host=db1 dbname=app'\""},
    {HEAD "tables: public.a\n",
     "plan.yaml:3: tables: expected a list, found a single value; write each table as \"- "
     "source: schema.table\" with \"target: schema.table\" below it"},
    {HEAD "tables: []\n", "plan.yaml:3: tables: is empty; list at least one table to migrate"},
    {HEAD ONE_TABLE "  -\n",
     "plan.yaml:6: tables[1]: is empty; remove the \"-\" line or write each table as \"- "
     "source: schema.table\" with \"target: schema.table\" below it"},
    {HEAD "tables:\n  - public.a\n",
     "plan.yaml:4: tables[0]: expected a mapping, found a single value; write each table as \"- "
     "source: schema.table\" with \"target: schema.table\" below it"},
    {HEAD ONE_TABLE "cutover: [max_lag]\n",
     "plan.yaml:6: cutover: expected a mapping, found a list; indent its keys (max_lag, "
     "lock_timeout, attempts, fence_timeout, max_block, postpone, verify, postpone_file) under "
     "\"cutover:\""},
    {HEAD "tables:\n  - source: public.a\n    target: public.b\n    key: id\n",
     "plan.yaml:6: tables[0].key: expected a list, found a single value; write e.g. \"key: "
     "[id]\""},
    /* name and connection strings */
    {"name: Petri-1\nsource: host=db1\n" ONE_TABLE,
     "plan.yaml:1: name: \"Petri-1\" may only contain a-z, 0-9 and _; use e.g. \"petri_1\""},
    {"name: petri_observations_into_monthly_partition\nsource: host=db1\n" ONE_TABLE,
     "plan.yaml:1: name: \"petri_observations_into_monthly_partition\" is 41 characters long; use "
     "at most 40"},
    {"name: petri\nsource: \"host=db1 password='unclosed\"\n" ONE_TABLE,
     "plan.yaml:2: source: is not a valid libpq connection string (not shown: it may hold a "
     "password); use key=value pairs like \"host=db1 dbname=app\", quoting values with spaces "
     "as 'a b', or a postgresql:// URI"},
    {"name: petri\nsource: \"\"\n" ONE_TABLE,
     "plan.yaml:2: source: is empty; use e.g. \"host=db1 dbname=app\" or "
     "\"postgresql://user@db1/app\""},
    /* table names */
    {HEAD "tables:\n  - source: public.a;drop\n    target: public.b\n",
     "plan.yaml:4: tables[0].source: \"public.a;drop\" is not a table name: ';' is not allowed "
     "outside double quotes; write schema.table or table, double-quoting a part with other "
     "characters (\"My Table\")"},
    {HEAD "tables:\n  - source: app.public.a\n    target: public.b\n",
     "plan.yaml:4: tables[0].source: \"app.public.a\" is not a table name: it has more than 2 "
     "parts; write schema.table or table, double-quoting a part with other characters (\"My "
     "Table\")"},
    {HEAD "tables:\n  - source: public.a\n    target: ''\n",
     "plan.yaml:5: tables[0].target: is empty; write schema.table or table, e.g. public.orders"},
    {HEAD "tables:\n  - source: public.a\n    target: '\"Public.b'\n",
     "plan.yaml:5: tables[0].target: \"\\\"Public.b\" is not a table name: a double quote is not "
     "closed; write schema.table or table, double-quoting a part with other characters (\"My "
     "Table\")"},
    {HEAD "tables:\n  - source: public.a\n    target: public.\n",
     "plan.yaml:5: tables[0].target: \"public.\" is not a table name: a part is empty; write "
     "schema.table or table, double-quoting a part with other characters (\"My Table\")"},
    {HEAD "tables:\n  - source: public.a\n",
     "plan.yaml:4: tables[0].target: is missing; add e.g. \"target: "
     "public.petri_observations_partitioned\""},
    {HEAD "tables:\n  - source: Public.A\n    target: '\"public\".a'\n",
     "plan.yaml:5: tables[0].target: \"\\\"public\\\".a\" is the same table as the source; name "
     "a new table to migrate to"},
    {HEAD ONE_TABLE "  - source: public.A\n    target: public.c\n",
     "plan.yaml:6: tables[1].source: \"public.A\" is already the source of tables[0] (line 4); "
     "list each source table once"},
    {HEAD ONE_TABLE "  - source: public.c\n    target: public.b\n",
     "plan.yaml:7: tables[1].target: \"public.b\" is already the target of tables[0] (line 4); "
     "give each table its own target"},
    {HEAD ONE_TABLE "  - source: public.b\n    target: public.c\n",
     "plan.yaml:6: tables[1].source: \"public.b\" is also the target of tables[0] (line 4); a "
     "table cannot be both a source and a target"},
    /* partition */
    {HEAD "tables:\n  - source: public.a\n    target: public.b\n    partition:\n"
          "      by: spline (id)\n      interval: 1 month\n",
     "plan.yaml:7: tables[0].partition.by: \"spline (id)\" is not supported; use \"range "
     "(<column>)\", \"list (<column>)\" or \"hash (<column>)\", e.g. \"range (created_at)\""},
    {HEAD "tables:\n  - source: public.a\n    target: public.b\n    partition:\n"
          "      by: hash (id)\n      interval: 1 month\n",
     "plan.yaml:8: tables[0].partition.interval: is not used by hash partitioning; give the "
     "number of partitions as \"modulus: N\""},
    {HEAD "tables:\n  - source: public.a\n    target: public.b\n    partition:\n"
          "      by: hash (id)\n",
     "plan.yaml:7: tables[0].partition.modulus: is missing or below 2; add e.g. \"modulus: 8\" "
     "(the number of partitions)"},
    {HEAD "tables:\n  - source: public.a\n    target: public.b\n    partition:\n"
          "      by: hash (id)\n      modulus: 4\n      default: true\n",
     "plan.yaml:9: tables[0].partition.default: is not used by hash partitioning; a "
     "hash-partitioned table has no DEFAULT partition: every row has one"},
    {HEAD "tables:\n  - source: public.a\n    target: public.b\n    partition:\n"
          "      by: list (region)\n      values: [eu, [de, eu]]\n",
     "plan.yaml:8: tables[0].partition.values[1][1]: \"eu\" is listed twice; a value belongs to "
     "one partition"},
    {HEAD "tables:\n  - source: public.a\n    target: public.b\n    partition:\n"
          "      by: list (region)\n      modulus: 3\n",
     "plan.yaml:8: tables[0].partition.modulus: is not used by list partitioning; it is for "
     "\"by: hash (...)\""},
    {HEAD "tables:\n  - source: public.a\n    target: public.b\n    partition:\n"
          "      by: range (tenant, created_at)\n      interval: 1 month\n",
     "plan.yaml:7: tables[0].partition.by: \"range (tenant, created_at)\": partitioning by "
     "several columns or an expression is not supported; use \"range (<column>)\", \"list "
     "(<column>)\" or \"hash (<column>)\", e.g. \"range (created_at)\""},
    {HEAD "tables:\n  - source: public.a\n    target: public.b\n    partition:\n"
          "      by: range created_at\n",
     "plan.yaml:7: tables[0].partition.by: \"range created_at\" lacks the column in "
     "parentheses; use \"range (<column>)\", \"list (<column>)\" or \"hash (<column>)\", e.g. "
     "\"range (created_at)\""},
    {HEAD "tables:\n  - source: public.a\n    target: public.b\n    partition:\n"
          "      by: range (created_at)\n",
     "plan.yaml:7: tables[0].partition.interval: is missing; add e.g. \"interval: 1 month\", or "
     "\"default: true\" for only a DEFAULT partition"},
    {HEAD "tables:\n  - source: public.a\n    target: public.b\n    partition:\n"
          "      interval: 1 month\n",
     "plan.yaml:7: tables[0].partition.by: is missing; add e.g. \"by: range (created_at)\""},
    {HEAD "tables:\n  - source: public.a\n    target: public.b\n    partition:\n"
          "      by: range (created_at)\n      interval: 1 month\n      ahead: -1\n",
     "plan.yaml:9: tables[0].partition.ahead: \"-1\" is out of range; use a number from 0 to "
     "2147483647"},
    {HEAD "tables:\n  - source: public.a\n    target: public.b\n    partition:\n"
          "      by: range (created_at)\n      interval: 1 month\n      subpartition:\n"
          "        by: hash (site)\n        modulus: 4\n        subpartition: {by: hash (id), "
          "modulus: 2}\n",
     "plan.yaml:12: tables[0].partition.subpartition.subpartition: partitions go one level deep "
     "at most; remove this block (or make the target yourself and name it as the target)"},
    {HEAD "tables:\n  - source: public.a\n    target: public.b\n    partition:\n"
          "      by: range (created_at)\n      interval: 1 month\n"
          "      subpartition: {by: hash (site)}\n",
     "plan.yaml:9: tables[0].partition.subpartition.modulus: is missing or below 2; add e.g. "
     "\"modulus: 8\" (the number of partitions)"},
    {HEAD "tables:\n  - source: public.a\n    target: public.b\n    partition:\n"
          "      by: list (region)\n      manager: pg_partman\n",
     "plan.yaml:8: tables[0].partition.manager: pg_partman manages range partitions by an "
     "interval; use it with \"by: range (<column>)\" and \"interval:\", or remove the key"},
    {HEAD "tables:\n  - source: public.a\n    target: public.b\n    partition:\n"
          "      by: range (at)\n      interval: 1 day\n      manager: cron\n",
     "plan.yaml:9: tables[0].partition.manager: \"cron\" is not a partition manager pgshift "
     "knows; write \"manager: pg_partman\" or remove the key"},
    {HEAD "tables:\n  - source: public.a\n    target: public.b\n    partition:\n"
          "      by: range (at)\n      interval: 1 day\n      manager: pg_partman\n"
          "      default: true\n",
     "plan.yaml:9: tables[0].partition.manager: pg_partman makes the DEFAULT partition itself "
     "when pgshift registers the table after the cutover; remove \"default: true\""},
    {HEAD "tables:\n  - source: public.a\n    target: public.b\n    partition:\n"
          "      by: hash (site)\n      modulus: 4\n"
          "      subpartition: {by: range (at), interval: 1 day, manager: pg_partman}\n",
     "plan.yaml:9: tables[0].partition.subpartition.manager: belongs under \"partition:\" "
     "(pg_partman manages the top level)"},
    {HEAD "tables:\n  - source: public.a\n    target: public.b\n    key: [id, ID]\n",
     "plan.yaml:6: tables[0].key[1]: \"ID\" is listed twice; keep one"},
    {HEAD "tables:\n  - source: public.a\n    target: public.b\n    leave_behind: [audit;x]\n",
     "plan.yaml:6: tables[0].leave_behind[0]: \"audit;x\" is not an object name: ';' is not "
     "allowed outside double quotes; write the name alone, double-quoted if it has other "
     "characters or capitals (\"Created At\")"},
    /* values */
    {HEAD ONE_TABLE "cutover:\n  postpone: maybe\n",
     "plan.yaml:7: cutover.postpone: \"maybe\" is not a boolean; use true or false"},
    {HEAD ONE_TABLE "cutover:\n  max_lag: 8 megs\n",
     "plan.yaml:7: cutover.max_lag: \"8 megs\" is not a size; use a whole number with a unit B, "
     "kB, MB, GB or TB, e.g. 8MB"},
    {HEAD ONE_TABLE "cutover:\n  max_lag: 16777216TB\n",
     "plan.yaml:7: cutover.max_lag: \"16777216TB\" is too large; use e.g. 8MB"},
    {HEAD ONE_TABLE "cutover:\n  lock_timeout: 5 seconds\n",
     "plan.yaml:7: cutover.lock_timeout: \"5 seconds\" is not a duration; use a whole number "
     "with a unit ms, s, min, h or d, e.g. 500ms"},
    {HEAD ONE_TABLE "cutover:\n  lock_timeout: 0\n",
     "plan.yaml:7: cutover.lock_timeout: \"0\" is out of range; use a duration from 1ms to 60s"},
    {HEAD ONE_TABLE "cutover:\n  lock_timeout: 2min\n",
     "plan.yaml:7: cutover.lock_timeout: \"2min\" is out of range; use a duration from 1ms to "
     "60s"},
    {HEAD ONE_TABLE "cutover:\n  lock_timeout: 9999999999h\n",
     "plan.yaml:7: cutover.lock_timeout: \"9999999999h\" is out of range; use a duration from "
     "1ms to 60s"},
    {HEAD ONE_TABLE "cutover:\n  attempts: 0\n",
     "plan.yaml:7: cutover.attempts: \"0\" is out of range; use a number from 1 to 2147483647"},
    {HEAD ONE_TABLE "copy:\n  workers: 65\n",
     "plan.yaml:7: copy.workers: \"65\" is out of range; use a number from 0 to 64"},
    {HEAD ONE_TABLE "copy:\n  workers: four\n",
     "plan.yaml:7: copy.workers: \"four\" is not a whole number; use e.g. 4"},
    {HEAD ONE_TABLE "copy:\n  workers: 99999999999999999999\n",
     "plan.yaml:7: copy.workers: \"99999999999999999999\" is out of range; use a number from 0 "
     "to 64"},
    {HEAD ONE_TABLE "copy:\n  chunk_size: 0MB\n",
     "plan.yaml:7: copy.chunk_size: \"0MB\" is too small; use at least 1B, e.g. 64MB"},
    {HEAD ONE_TABLE "apply:\n  batch_changes: 0\n",
     "plan.yaml:7: apply.batch_changes: \"0\" is out of range; use a number from 1 to "
     "2147483647"},
    {HEAD ONE_TABLE "apply:\n  batch_time: 1w\n",
     "plan.yaml:7: apply.batch_time: \"1w\" is not a duration; use a whole number with a unit "
     "ms, s, min, h or d, e.g. 200ms"},
    {HEAD ONE_TABLE "rollback:\n  window: 30d\n",
     "plan.yaml:7: rollback.window: \"30d\" is too large; use e.g. 24h"},
    {HEAD ONE_TABLE "apply:\n  batch_time: 0ms\n",
     "plan.yaml:7: apply.batch_time: \"0ms\" is out of range; use at least 1ms, e.g. 200ms"},
    {HEAD ONE_TABLE "verify:\n  method: fast\n",
     "plan.yaml:7: verify.method: \"fast\" is not one of auto|scan|walk"},
    {HEAD ONE_TABLE "verify:\n  chunk_rows: 10\n",
     "plan.yaml:7: verify.chunk_rows: \"10\" is out of range; use a number from 100 to 10000000"},
    {HEAD ONE_TABLE "    columns: [id]\n",
     "plan.yaml:6: tables[0].columns: expected a mapping, found a list; write e.g. \"columns: "
     "{id: id::bigint, amount_cents: (amount * 100)::bigint}\""},
    {HEAD ONE_TABLE "    columns: {}\n",
     "plan.yaml:6: tables[0].columns: is empty; name at least one column or remove the key"},
    {HEAD ONE_TABLE "    columns:\n      id:\n",
     "plan.yaml:7: tables[0].columns.id: has no expression; write an SQL expression, e.g. "
     "\"{id: id::bigint, amount_cents: (amount * 100)::bigint}\", and quote a string constant "
     "twice (\"'eu'\")"},
    {HEAD ONE_TABLE "    columns:\n      id: id\n      ID: id::bigint\n",
     "plan.yaml:8: tables[0].columns.ID: column \"id\" is given twice; keep one"},
    {HEAD ONE_TABLE "    columns:\n      a b: x\n",
     "plan.yaml:7: tables[0].columns.\"a b\": \"a b\" is not a column name: a space is not "
     "allowed outside double quotes; write the name alone, double-quoted if it has other "
     "characters or capitals (\"Created At\")"},
    {HEAD ONE_TABLE "    reverse:\n      amount: [1]\n",
     "plan.yaml:7: tables[0].reverse.amount: expected a single value, found a list; write e.g. "
     "\"reverse: {amount: amount_cents / 100.0}\""},
    {HEAD ONE_TABLE
     "    partition: {by: range (t), interval: 1 day}\n    columns: {id: id::bigint}\n",
     "plan.yaml:7: tables[0].columns: cannot be used with \"partition:\", where pgshift creates "
     "the target with the source's columns; create the target with the new columns yourself "
     "(CREATE TABLE ... (LIKE source INCLUDING ALL), then ALTER it) and remove \"partition:\""},
    {HEAD ONE_TABLE "state_dir: ''\n",
     "plan.yaml:6: state_dir: is empty; use e.g. \"state_dir: /var/run/pgshift\" or remove the "
     "key"},
};

/* colmap_is_cast_of: which expressions are the column itself, cast. */
static void cast_of(void **state)
{
    (void)state;
    static const struct {
        const char *expr, *name;
        bool yes;
    } cases[] = {
        {"id", "id", true},
        {"  id::bigint ", "id", true},
        {"ID::int8", "id", true},
        {"\"Id\"::bigint", "Id", true},
        {"id::numeric(12, 2)", "id", true},
        {"id::character varying(10)", "id", true},
        {"id::pg_catalog.int8", "id", true},
        {"tags::text[]", "tags", true},
        {"id::bigint::text", "id", true},
        {"CAST(id AS bigint)", "id", true},
        {"cast ( id as double precision )", "id", true},
        {"amount::numeric * 100", "amount", false},
        {"id::bigint + 1", "id", false},
        {"CAST(id AS bigint) + 1", "id", false},
        {"id2", "id", false},
        {"upper(id)", "id", false},
        {"id || 'x'", "id", false},
        {"\"Id\"", "id", false},
        {"id::", "id", false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (colmap_is_cast_of(cases[i].expr, cases[i].name) != cases[i].yes)
            fail_msg("colmap_is_cast_of(\"%s\", \"%s\") is not %d", cases[i].expr, cases[i].name,
                     cases[i].yes);
}

static void bad(void **state)
{
    int failures = 0;
    for (size_t i = 0; i < sizeof bad_plans / sizeof bad_plans[0]; i++) {
        char err[1024] = "";
        pgs_plan *p = parse(bad_plans[i].yaml, err, sizeof err);
        if (p) {
            print_error("case %zu: parsed, expected: %s\n", i, bad_plans[i].err);
            pgs_plan_free(p);
            failures++;
        } else if (strcmp(err, bad_plans[i].err) != 0) {
            print_error("case %zu:\n  got:      %s\n  expected: %s\n", i, err, bad_plans[i].err);
            failures++;
        }
        assert_null(strchr(err, '\n'));
    }
    assert_int_equal(failures, 0);
}

/* The password in a bad source is never echoed, whatever libpq dislikes. */
static void bad_source_hides_password(void **state)
{
    char err[1024];
    assert_null(parse("name: p\nsource: \"password=hunter2 hots=x\"\n" ONE_TABLE, err, sizeof err));
    assert_null(strstr(err, "hunter2"));
    assert_null(
        parse("name: p\nsource: \"postgresql://u:hunter2@[::1/db\"\n" ONE_TABLE, err, sizeof err));
    assert_null(strstr(err, "hunter2"));
}

/* Nesting beyond any plan is refused before it costs anything. */
/* libyaml's document API drops anchor names and gives untagged nodes their
 * kind's default tag: a lone anchor and an explicit !!str are harmless. */
static void anchor_and_default_tag(void **state)
{
    char err[512];
    pgs_plan *p = parse(HEAD ONE_TABLE "state_dir: &dir !!str /srv\n", err, sizeof err);
    if (!p)
        fail_msg("%s", err);
    assert_string_equal(p->state_dir, "/srv");
    pgs_plan_free(p);
}

static void deep_nesting(void **state)
{
    char yaml[256], err[512];
    size_t n = 0;
    n += (size_t)snprintf(yaml, sizeof yaml, "name: ");
    for (int i = 0; i < 40; i++)
        yaml[n++] = '[';
    for (int i = 0; i < 40; i++)
        yaml[n++] = ']';
    yaml[n] = '\0';
    assert_null(parse(yaml, err, sizeof err));
    assert_string_equal(err, "plan.yaml:1: YAML nesting: lists and mappings are nested more than "
                             "32 deep; a plan needs 4");
}

/* Every prefix of a valid plan parses or fails with one line; none leaks. */
static void truncated_plans(void **state)
{
    size_t len = strlen(full_plan);
    for (size_t n = 0; n <= len; n++) {
        char err[1024] = "";
        pgs_plan *p = pgs_plan_parse(full_plan, n, "plan.yaml", err, sizeof err);
        if (p) {
            pgs_plan_free(p);
            continue;
        }
        assert_int_equal(strncmp(err, "plan.yaml:", 10), 0);
        assert_null(strchr(err, '\n'));
    }
    /* A tiny buffer truncates the message but stays terminated. */
    char small[8];
    assert_null(parse("nmae: x\n", small, sizeof small));
    assert_string_equal(small, "plan.ya");
    assert_null(parse("nmae: x\n", NULL, 0));
}

/* ---- sizes and durations ---- */

static void sizes(void **state)
{
    static const struct {
        const char *text;
        uint64_t bytes;
    } good[] = {
        {"0", 0},
        {"100", 100},
        {"8MB", 8 * MB},
        {"8 MB", 8 * MB},
        {"8mb", 8 * MB},
        {"512kB", 512 * 1024},
        {"512KB", 512 * 1024},
        {"1 B", 1},
        {"1GB", UINT64_C(1) << 30},
        {"2TB", UINT64_C(2) << 40},
        {"16777215TB", UINT64_C(16777215) << 40},
        {"18446744073709551615", UINT64_MAX},
        {"0018446744073709551615B", UINT64_MAX},
    };
    static const char *const bad_sizes[] = {
        "",
        "MB",
        "8M",
        "8  MB",
        "8MB ",
        " 8MB",
        "8 ",
        "-1",
        "+1",
        "1.5GB",
        "0x10",
        "8PB",
        "8 megabytes",
        "1_000",
        "18446744073709551616",
        "16777216TB",
        "18014398509481984kB",
        "99999999999999999999999999MB",
    };
    uint64_t v;
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        v = 42;
        if (!pgs_parse_size(good[i].text, &v))
            fail_msg("rejected size \"%s\"", good[i].text);
        assert_int_equal(v, good[i].bytes);
    }
    for (size_t i = 0; i < sizeof bad_sizes / sizeof bad_sizes[0]; i++) {
        v = 42;
        if (pgs_parse_size(bad_sizes[i], &v))
            fail_msg("accepted size \"%s\"", bad_sizes[i]);
        assert_int_equal(v, 42); /* untouched on failure */
    }
    assert_false(pgs_parse_size(NULL, &v));
}

static void durations(void **state)
{
    static const struct {
        const char *text;
        int ms;
    } good[] = {
        {"0", 0},
        {"250", 250},
        {"500ms", 500},
        {"500 ms", 500},
        {"2s", 2000},
        {"2S", 2000},
        {"1min", 60000},
        {"1 MIN", 60000},
        {"1h", 3600000},
        {"24d", 2073600000},
        {"596h", 2145600000},
        {"2147483647", INT32_MAX},
        {"2147483s", 2147483000},
    };
    static const char *const bad_durations[] = {
        "",           "ms",   "1m",       "1w",
        "1us",        "-1",   "+1",       "1.5s",
        "2  s",       "2s ",  " 2s",      "1 hour",
        "2147483648", "597h", "2147484s", "99999999999999999999999h",
    };
    int v;
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        v = 42;
        if (!pgs_parse_duration_ms(good[i].text, &v))
            fail_msg("rejected duration \"%s\"", good[i].text);
        assert_int_equal(v, good[i].ms);
    }
    for (size_t i = 0; i < sizeof bad_durations / sizeof bad_durations[0]; i++) {
        v = 42;
        if (pgs_parse_duration_ms(bad_durations[i], &v))
            fail_msg("accepted duration \"%s\"", bad_durations[i]);
        assert_int_equal(v, 42);
    }
    assert_false(pgs_parse_duration_ms(NULL, &v));
}

/* ---- redaction ---- */

static void redaction(void **state)
{
    /* The output is libpq's parse written back in libpq's option order, as
     * key=value pairs (URIs too); anything libpq refuses is hidden whole. */
    static const struct {
        const char *in, *out, *secret;
    } cases[] = {
        /* key=value, quoted with spaces and escaped quote and backslash */
        {"host=db1 password='s3 cr\\'et\\\\x' dbname=app", "password=******** dbname=app host=db1",
         "cr"},
        /* spaces around =, unquoted with an escaped space */
        {"host=db1 password = s3\\ cret user=x", "user=x password=******** host=db1", "cret"},
        {"sslpassword=k3y host=db1", "host=db1 sslpassword=********", "k3y"},
        /* libpq skips blanks after '=': the password here is "host=x" */
        {"password= host=x dbname=app", "password=******** dbname=app", "host=x"},
        /* unterminated quote: libpq refuses it, nothing is shown */
        {"host=db1 password='s3 cret dbname=app", "(unparseable conninfo)", "cret"},
        /* an unquoted space splits the password; libpq rejects it */
        {"password=s3 cret host=db1", "(unparseable conninfo)", "cret"},
        /* an option libpq does not know may be a password's tail */
        {"password=s3 cr=et host=db1", "(unparseable conninfo)", "cr"},
        {"host=db1 hots=x password=s3cret", "(unparseable conninfo)", "s3cret"},
        /* a dbname that libpq expands as a connection string */
        {"dbname='host=db1 password=s3cret' user=x", "user=x dbname=********", "s3cret"},
        {"dbname=postgresql://u:s3cret@db1/app", "dbname=********", "s3cret"},
        {"dbname=app host=db1", "dbname=app host=db1", NULL},
        /* URIs */
        {"postgresql://user:s3cret@db1:5432/app?sslmode=require",
         "user=user password=******** dbname=app host=db1 port=5432 sslmode=require", "s3cret"},
        {"postgres://user:p%40ss@db1,db2/app",
         "user=user password=******** dbname=app host=db1,db2 port=,", "p%40ss"},
        /* several hosts (failover), key=value and URI */
        {"host=db1,db2 port=5432,5433 dbname=app target_session_attrs=read-write password=s3cret "
         "connect_timeout=5",
         "password=******** connect_timeout=5 dbname=app host=db1,db2 port=5432,5433 "
         "target_session_attrs=read-write",
         "s3cret"},
        {"postgresql://u:s3cret@db1:5432,db2:5433/app?target_session_attrs=read-write",
         "user=u password=******** dbname=app host=db1,db2 port=5432,5433 "
         "target_session_attrs=read-write",
         "s3cret"},
        /* a raw @ in the password: libpq would take "ss@db1" as the host */
        {"postgresql://user:p@ss@db1/app", "(unparseable conninfo)", "ss"},
        {"postgresql://u:s3/cret@db1/app", "(unparseable conninfo)", "cret"},
        /* an @ in the query string is no password's tail */
        {"postgresql://u:s3cret@db1/app?application_name=a@b",
         "user=u password=******** dbname=app host=db1 application_name=a@b", "s3cret"},
        {"postgresql://user@db1/app?password=s3cret&sslmode=require",
         "user=user password=******** dbname=app host=db1 sslmode=require", "s3cret"},
        {"postgresql://db1/app?sslmode=require&password=s3&cret", "(unparseable conninfo)", "cret"},
        {"postgresql://db1/app?password=s3&c=ret&sslmode=require", "(unparseable conninfo)", "ret"},
        {"postgresql://db1/app?pass%77ord=s3cret", "password=******** dbname=app host=db1",
         "s3cret"},
        {"  postgresql://u:s3cret@db1/app", "(unparseable conninfo)", "s3cret"},
        /* nothing to hide; values quoted the way libpq reads them back */
        {"host=db1 dbname=app user=x", "user=x dbname=app host=db1", NULL},
        {"postgresql://user@db1:5432/app?sslmode=require",
         "user=user dbname=app host=db1 port=5432 sslmode=require", NULL},
        {"postgresql://db1/app", "dbname=app host=db1", NULL},
        {"application_name='it\\'s a \\\\ x' host=''", "host='' application_name='it\\'s a \\\\ x'",
         NULL},
        {"", "", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *r = pgs_conninfo_redact(cases[i].in);
        assert_non_null(r);
        if (strcmp(r, cases[i].out) != 0)
            fail_msg("case %zu: \"%s\" -> \"%s\", expected \"%s\"", i, cases[i].in, r,
                     cases[i].out);
        if (cases[i].secret)
            assert_null(strstr(r, cases[i].secret));
        assert_int_equal(pgs_conninfo_has_password(cases[i].in), cases[i].secret != NULL);
        /* What is shown parses back to the same options, secrets aside. */
        if (strcmp(r, "(unparseable conninfo)") != 0) {
            PQconninfoOption *a = PQconninfoParse(cases[i].in, NULL);
            PQconninfoOption *b = PQconninfoParse(r, NULL);
            assert_non_null(a);
            assert_non_null(b);
            for (size_t k = 0; a[k].keyword; k++) {
                assert_string_equal(a[k].keyword, b[k].keyword);
                assert_int_equal(a[k].val == NULL, b[k].val == NULL);
                if (a[k].val && !strchr(a[k].dispchar, '*') && strcmp(b[k].val, "********") != 0)
                    assert_string_equal(a[k].val, b[k].val);
            }
            PQconninfoFree(a);
            PQconninfoFree(b);
        }
        free(r);
    }
    assert_false(pgs_conninfo_has_password("password=''"));
    assert_false(pgs_conninfo_has_password(NULL));
}

/* Passwords alternating marker characters (absent from the text around
 * them) with the characters that break naive parsers, in every form a plan
 * may hold them, quoted and escaped as libpq wants or not: no marker may
 * survive, so no fragment of two or more characters of a password does. */
static void redaction_never_leaks(void **state)
{
    static const char markers[] = "XYZ789";
    static const char specials[] = " '\\@:/?&=%#";
    uint32_t seed = 12345;

    for (int iter = 0; iter < 3000; iter++) {
        char pw[16], esc[64], enc[64], in[256];
        size_t n = 2 + (size_t)(iter % 12), e = 0, u = 0;

        for (size_t i = 0; i < n; i++) {
            seed = seed * 1103515245u + 12345u;
            uint32_t r = seed >> 16;
            pw[i] = i % 2 == 0 ? markers[r % 6] : specials[r % (sizeof specials - 1)];
        }
        pw[n] = '\0';
        for (size_t i = 0; i < n; i++) {
            if (pw[i] == '\'' || pw[i] == '\\')
                esc[e++] = '\\';
            esc[e++] = pw[i];
            u += (size_t)snprintf(enc + u, sizeof enc - u, "%%%02X", (unsigned char)pw[i]);
        }
        esc[e] = '\0';

        const char *forms[] = {
            "host=db1 password='%s' dbname=app", /* as libpq wants: quoted, escaped */
            "password='%s'",
            "host=db1 password=%s dbname=app",                /* raw, unquoted */
            "postgresql://u:%s@db1:5432/app?sslmode=require", /* raw in the URI */
            "postgres://u@db1/app?password=%s&sslmode=require",
            "postgres://u@db1/app?sslmode=require&password=%s",
        };
        for (size_t f = 0; f < sizeof forms / sizeof forms[0]; f++) {
            const char *pass = f < 2 ? esc : pw;
            snprintf(in, sizeof in, forms[f], pass);
            char *r = pgs_conninfo_redact(in);
            assert_non_null(r);
            if (strpbrk(r, markers))
                fail_msg("leak: \"%s\" -> \"%s\"", in, r);
            free(r);
        }
        /* percent-encoded, as a URI should hold it */
        snprintf(in, sizeof in, "postgresql://u:%s@db1/app?password=%s", enc, enc);
        char *r = pgs_conninfo_redact(in);
        assert_non_null(r);
        assert_string_equal(r, "user=u password=******** dbname=app host=db1");
        free(r);
    }
}

/* With a separate target database a table keeps its name there, and a
 * name may be one table's source and another's target; listing a source or
 * a target twice stays an error. */
static void other_database_names(void **state)
{
    (void)state;
    char err[512] = "";
    pgs_plan *p = parse("name: xd\nsource: dbname=a\n"
                        "tables:\n  - {source: public.ev, target: ev}\n"
                        "  - {source: public.b, target: public.c}\n"
                        "  - {source: public.c, target: public.b}\n"
                        "target: dbname=b\n",
                        err, sizeof err);
    assert_non_null(p);
    assert_string_equal(err, "");
    assert_string_equal(p->target, "dbname=b");
    pgs_plan_free(p);
    p = parse("name: xd\nsource: dbname=a\ntarget: dbname=b\n"
              "tables:\n  - {source: public.ev, target: public.x}\n"
              "  - {source: public.y, target: public.x}\n",
              err, sizeof err);
    assert_null(p);
    assert_non_null(strstr(err, "is already the target of tables[0]"));
    p = parse("name: xd\nsource: dbname=a\n"
              "tables:\n  - {source: public.ev, target: public.ev}\n",
              err, sizeof err);
    assert_null(p);
    assert_non_null(strstr(err, "is the same table as the source"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(full),
        cmocka_unit_test(defaults),
        cmocka_unit_test(partition_methods),
        cmocka_unit_test(example_file),
        cmocka_unit_test(load_missing),
        cmocka_unit_test(bad),
        cmocka_unit_test(bad_source_hides_password),
        cmocka_unit_test(anchor_and_default_tag),
        cmocka_unit_test(deep_nesting),
        cmocka_unit_test(truncated_plans),
        cmocka_unit_test(sizes),
        cmocka_unit_test(durations),
        cmocka_unit_test(redaction),
        cmocka_unit_test(cast_of),
        cmocka_unit_test(redaction_never_leaks),
        cmocka_unit_test(password_file_mode),
        cmocka_unit_test(other_database_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
