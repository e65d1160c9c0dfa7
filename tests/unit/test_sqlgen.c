/* Unit test for src/apply/sqlgen.c: the exact text of the applier's
 * statements for representative relations (the reference is the text the
 * applier sent before the generator was split out of apply.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>

#include "sqlgen.h"

/* Single key: (id, v, big), key id. */
static char *const t_names[] = {"\"id\"", "\"v\"", "\"big\""};
static const int t_match[] = {0};
static const sqlgen_rel t_rel = {"\"public\".\"t\"", 3, t_names, t_match, 1, false, NULL};

/* Composite key (k2, id), not in attribute order, and a mixed-case column. */
static char *const o_names[] = {"\"a\"", "\"k2\"", "\"Note\"", "\"id\""};
static const int o_match[] = {3, 1};
static const sqlgen_rel o_rel = {"\"s\".\"orders\"", 4, o_names, o_match, 2, false, NULL};

/* No key (REPLICA IDENTITY FULL): the whole row, (ts, doc json, msg); json
 * has no = operator and is compared as text. */
static char *const w_names[] = {"\"ts\"", "\"doc\"", "\"msg\""};
static const int w_match[] = {0, 1, 2};
static const char *const w_text[] = {NULL, "json", NULL};
static const sqlgen_rel w_rel = {"\"public\".\"logs\"", 3, w_names, w_match, 3, true, w_text};

static void check_row(const sqlgen_rel *r, char op, const uint8_t *mask, const char *want,
                      int want_params)
{
    int n = -1;
    char *sql = sqlgen_row(r, op, mask, &n);
    assert_non_null(sql);
    assert_string_equal(sql, want);
    assert_int_equal(n, want_params);
    free(sql);
}

static void check_set(const sqlgen_rel *r, char op, const int *cols, int ncols, const char *want)
{
    char *sql = sqlgen_set(r, op, cols, ncols);
    assert_non_null(sql);
    assert_string_equal(sql, want);
    free(sql);
}

static void test_row_single_key(void **state)
{
    (void)state;
    const uint8_t all[] = {1, 1, 1}, no_big[] = {1, 1, 0}, none[] = {0, 0, 0};
    check_row(&t_rel, 'I', all,
              "INSERT INTO \"public\".\"t\" (\"id\", \"v\", \"big\") VALUES ($1, $2, $3)", 3);
    check_row(&t_rel, 'U', all,
              "UPDATE \"public\".\"t\" SET \"id\" = $1, \"v\" = $2, \"big\" = $3 WHERE \"id\" = $4",
              4);
    /* big is an unchanged TOAST value: not set, not a parameter. */
    check_row(&t_rel, 'U', no_big,
              "UPDATE \"public\".\"t\" SET \"id\" = $1, \"v\" = $2 WHERE \"id\" = $3", 3);
    check_row(&t_rel, 'D', none, "DELETE FROM \"public\".\"t\" WHERE \"id\" = $1", 1);
}

static void test_row_whole_row(void **state)
{
    (void)state;
    const uint8_t msg_only[] = {0, 0, 1}, none[] = {0, 0, 0};
    const char *find =
        " (SELECT s.tableoid AS o, s.ctid AS c FROM \"public\".\"logs\" AS s WHERE"
        " s.\"ts\" IS NOT DISTINCT FROM $%d AND s.\"doc\"::text IS NOT DISTINCT FROM"
        " ($%d::json)::text AND s.\"msg\" IS NOT DISTINCT FROM $%d LIMIT 1) AS pgshift_row"
        " WHERE t.tableoid = pgshift_row.o AND t.ctid = pgshift_row.c";
    char want[1024], tail[600];
    snprintf(tail, sizeof tail, find, 2, 3, 4);
    snprintf(want, sizeof want, "UPDATE \"public\".\"logs\" AS t SET \"msg\" = $1 FROM%s", tail);
    check_row(&w_rel, 'U', msg_only, want, 4);
    snprintf(tail, sizeof tail, find, 1, 2, 3);
    snprintf(want, sizeof want, "DELETE FROM \"public\".\"logs\" AS t USING%s", tail);
    check_row(&w_rel, 'D', none, want, 3);
}

static void test_row_composite_key(void **state)
{
    (void)state;
    const uint8_t all[] = {1, 1, 1, 1}, no_a[] = {0, 1, 1, 1}, none[] = {0, 0, 0, 0};
    check_row(&o_rel, 'I', all,
              "INSERT INTO \"s\".\"orders\" (\"a\", \"k2\", \"Note\", \"id\") VALUES ($1, $2, $3, "
              "$4)",
              4);
    check_row(&o_rel, 'U', no_a,
              "UPDATE \"s\".\"orders\" SET \"k2\" = $1, \"Note\" = $2, \"id\" = $3 WHERE \"id\" = "
              "$4 AND \"k2\" = $5",
              5);
    check_row(&o_rel, 'D', none, "DELETE FROM \"s\".\"orders\" WHERE \"id\" = $1 AND \"k2\" = $2",
              2);
}

static void test_set_single_key(void **state)
{
    (void)state;
    const int all[] = {0, 1, 2}, no_big[] = {0, 1}, key[] = {0};
    check_set(&t_rel, 'i', all, 3,
              "INSERT INTO \"public\".\"t\" (\"id\", \"v\", \"big\") SELECT u.\"id\", u.\"v\", "
              "u.\"big\" FROM unnest($1::\"public\".\"t\"[]) AS u");
    /* The key is read, never set; the unchanged TOAST column is left alone. */
    check_set(&t_rel, 'u', no_big, 2,
              "UPDATE \"public\".\"t\" AS t SET \"v\" = u.\"v\" FROM "
              "unnest($1::\"public\".\"t\"[]) AS u WHERE t.\"id\" = u.\"id\"");
    check_set(&t_rel, 'd', key, 1,
              "DELETE FROM \"public\".\"t\" AS t USING unnest($1::\"public\".\"t\"[]) AS u WHERE "
              "t.\"id\" = u.\"id\"");
}

static void test_set_composite_key(void **state)
{
    (void)state;
    const int all[] = {0, 1, 2, 3}, no_a[] = {1, 2, 3}, key[] = {3, 1};
    check_set(&o_rel, 'i', all, 4,
              "INSERT INTO \"s\".\"orders\" (\"a\", \"k2\", \"Note\", \"id\") SELECT u.\"a\", "
              "u.\"k2\", u.\"Note\", u.\"id\" FROM unnest($1::\"s\".\"orders\"[]) AS u");
    check_set(&o_rel, 'u', all, 4,
              "UPDATE \"s\".\"orders\" AS t SET \"a\" = u.\"a\", \"Note\" = u.\"Note\" FROM "
              "unnest($1::\"s\".\"orders\"[]) AS u WHERE t.\"id\" = u.\"id\" AND t.\"k2\" = "
              "u.\"k2\"");
    check_set(&o_rel, 'u', no_a, 3,
              "UPDATE \"s\".\"orders\" AS t SET \"Note\" = u.\"Note\" FROM "
              "unnest($1::\"s\".\"orders\"[]) AS u WHERE t.\"id\" = u.\"id\" AND t.\"k2\" = "
              "u.\"k2\"");
    check_set(&o_rel, 'd', key, 2,
              "DELETE FROM \"s\".\"orders\" AS t USING unnest($1::\"s\".\"orders\"[]) AS u WHERE "
              "t.\"id\" = u.\"id\" AND t.\"k2\" = u.\"k2\"");
}

static void test_is_key(void **state)
{
    (void)state;
    assert_true(sqlgen_is_key(&o_rel, 3));
    assert_true(sqlgen_is_key(&o_rel, 1));
    assert_false(sqlgen_is_key(&o_rel, 0));
    assert_false(sqlgen_is_key(&o_rel, 2));
}

static void test_expect(void **state)
{
    (void)state;
    char *sql = sqlgen_expect("DELETE FROM \"public\".\"t\" WHERE \"id\" = $1", "DELETE",
                              "'\"public\".\"t\"'", "1");
    assert_non_null(sql);
    assert_string_equal(
        sql, "WITH x AS (DELETE FROM \"public\".\"t\" WHERE \"id\" = $1 RETURNING 1) SELECT CASE "
             "WHEN count(*) = 1 THEN 1 ELSE ('pgshift: DELETE on ' || '\"public\".\"t\"' || ' "
             "matched ' || count(*) || ' rows instead of ' || 1 || '; the target has diverged "
             "from the source')::int END FROM x");
    free(sql);
    sql = sqlgen_expect("UPDATE x SET", "batched UPDATE", "'x'", "$2::bigint");
    assert_non_null(sql);
    assert_string_equal(sql, "WITH x AS (UPDATE x SET RETURNING 1) SELECT CASE WHEN count(*) = "
                             "$2::bigint THEN 1 ELSE ('pgshift: batched UPDATE on ' || 'x' || ' "
                             "matched ' || count(*) || ' rows instead of ' || $2::bigint || '; "
                             "the target has diverged from the source')::int END FROM x");
    free(sql);
}

/* Mapped: attributes (id int4, amount numeric, note text, big text); the
 * target's columns id <- id::bigint, amount_cents <- (amount * 100)::bigint,
 * memo <- note, region <- 'eu', both <- note || big. Key id. */
static char *const m_anames[] = {"\"id\"", "\"amount\"", "\"note\"", "\"big\""};
static char *const m_atypes[] = {"integer", "numeric", "text", "text"};
static char *const m_cnames[] = {"\"id\"", "\"amount_cents\"", "\"memo\"", "\"region\"",
                                 "\"both\""};
static char *const m_cexprs[] = {"id::bigint", "(amount * 100)::bigint", "note", "'eu'",
                                 "note || big"};
static const uint8_t m_deps[] = {1,      0, 0, 0, /**/ 0, 1, 0, 0, /**/ 0, 0, 1, 0,
                                 /**/ 0, 0, 0, 0, /**/ 0, 0, 1, 1};
static const int m_match[] = {0}, m_kcol[] = {0};
static const sqlgen_map m_rel = {"\"public\".\"orders\"",
                                 4,
                                 m_anames,
                                 m_atypes,
                                 5,
                                 m_cnames,
                                 m_cexprs,
                                 m_deps,
                                 m_match,
                                 m_kcol,
                                 1,
                                 false,
                                 NULL,
                                 NULL,
                                 NULL,
                                 0};
/* The same, the target in the source's database: the rows as one array of
 * the source table's row type (id, v, amount, note, big: v is not sent). */
static char *const r_names[] = {"\"id\"", "\"v\"", "\"amount\"", "\"note\"", "\"big\""};
static const sqlgen_map r_rel = {"\"public\".\"orders\"",
                                 4,
                                 m_anames,
                                 m_atypes,
                                 5,
                                 m_cnames,
                                 m_cexprs,
                                 m_deps,
                                 m_match,
                                 m_kcol,
                                 1,
                                 false,
                                 NULL,
                                 "\"public\".\"orders_src\"",
                                 r_names,
                                 5};

static char *map_stmt(char op, const uint8_t *mask, const int *cols, int ncols, int *np)
{
    uint8_t written[5];
    assert_int_equal(sqlgen_map_written(&m_rel, op, mask, written), -1);
    char *sql = sqlgen_map_stmt(&m_rel, op, mask, cols, ncols, written, np);
    assert_non_null(sql);
    return sql;
}

static void test_mapped(void **state)
{
    (void)state;
    const uint8_t all[] = {1, 1, 1, 1}, key[] = {1, 0, 0, 0}, no_amount[] = {1, 0, 1, 1};
    const int cols[] = {0, 1, 2, 3}, kcols[] = {0};
    int np = 0;
    char *sql = map_stmt('I', all, NULL, 0, &np);
    assert_string_equal(sql,
                        "INSERT INTO \"public\".\"orders\" (\"id\", \"amount_cents\", "
                        "\"memo\", \"region\", \"both\") SELECT (id::bigint), ((amount * "
                        "100)::bigint), (note), ('eu'), (note || big) FROM (SELECT $1::integer "
                        "AS \"id\", $2::numeric AS \"amount\", $3::text AS \"note\", "
                        "$4::text AS \"big\") AS u");
    assert_int_equal(np, 4);
    free(sql);
    sql = map_stmt('i', all, cols, 4, &np);
    assert_string_equal(sql,
                        "INSERT INTO \"public\".\"orders\" (\"id\", \"amount_cents\", "
                        "\"memo\", \"region\", \"both\") SELECT (id::bigint), ((amount * "
                        "100)::bigint), (note), ('eu'), (note || big) FROM unnest($1::integer[], "
                        "$2::numeric[], $3::text[], $4::text[]) AS u(\"id\", \"amount\", "
                        "\"note\", \"big\")");
    free(sql);
    /* delete: the key computed from the old key */
    sql = map_stmt('D', key, NULL, 0, &np);
    assert_string_equal(sql, "DELETE FROM \"public\".\"orders\" AS t USING (SELECT (id::bigint) "
                             "AS pgshift_k0 FROM (SELECT $1::integer AS \"id\") AS u) AS k WHERE "
                             "t.\"id\" = k.pgshift_k0");
    assert_int_equal(np, 1);
    free(sql);
    sql = map_stmt('d', key, kcols, 1, &np);
    assert_string_equal(sql, "DELETE FROM \"public\".\"orders\" AS t USING (SELECT (id::bigint) "
                             "AS pgshift_k0 FROM unnest($1::integer[]) AS u(\"id\")) AS k WHERE "
                             "t.\"id\" = k.pgshift_k0");
    free(sql);
    /* update without amount: amount_cents stays, region (a constant) too */
    sql = map_stmt('U', no_amount, NULL, 0, &np);
    assert_string_equal(sql, "UPDATE \"public\".\"orders\" AS t SET \"id\" = m.pgshift_c0, "
                             "\"memo\" = m.pgshift_c2, \"both\" = m.pgshift_c4 FROM (SELECT "
                             "(id::bigint) AS pgshift_c0, (note) AS pgshift_c2, (note || big) AS "
                             "pgshift_c4 FROM (SELECT $1::integer AS \"id\", $2::text AS "
                             "\"note\", $3::text AS \"big\") AS u) AS m, (SELECT (id::bigint) AS "
                             "pgshift_k0 FROM (SELECT $4::integer AS \"id\") AS u) AS k WHERE "
                             "t.\"id\" = k.pgshift_k0");
    assert_int_equal(np, 4);
    free(sql);
    /* set update: the key comes with the row, and is not set */
    const int ucols[] = {0, 2, 3};
    sql = map_stmt('u', no_amount, ucols, 3, &np);
    assert_string_equal(sql, "UPDATE \"public\".\"orders\" AS t SET \"memo\" = m.pgshift_c2, "
                             "\"both\" = m.pgshift_c4 FROM (SELECT (id::bigint) AS pgshift_c0, "
                             "(id::bigint) AS pgshift_k0, (note) AS pgshift_c2, (note || big) AS "
                             "pgshift_c4 FROM unnest($1::integer[], $2::text[], $3::text[]) AS "
                             "u(\"id\", \"note\", \"big\")) AS m WHERE t.\"id\" = "
                             "m.pgshift_k0");
    assert_int_equal(np, 3);
    free(sql);
    /* an update that sent note but not big (unchanged TOAST): both cannot
     * be computed */
    const uint8_t no_big[] = {1, 1, 1, 0};
    uint8_t written[5];
    assert_int_equal(sqlgen_map_written(&m_rel, 'U', no_big, written), 4);
    /* the rows alone, numbered, for finding the one that fails */
    sql = sqlgen_map_rows(&m_rel, true, NULL, ucols, 3);
    assert_string_equal(sql, "unnest($1::integer[], $2::text[], $3::text[]) WITH ORDINALITY AS "
                             "u(\"id\", \"note\", \"big\", pgshift_n)");
    free(sql);
    sql = sqlgen_map_rows(&m_rel, false, key, NULL, 0);
    assert_string_equal(sql, "(SELECT $1::integer AS \"id\", 1::bigint AS pgshift_n) AS u");
    free(sql);
    /* one array of the source's row type */
    uint8_t all_written[5] = {1, 1, 1, 1, 1};
    sql = sqlgen_map_stmt(&r_rel, 'i', all, cols, 4, all_written, &np);
    assert_non_null(sql);
    assert_string_equal(sql, "INSERT INTO \"public\".\"orders\" (\"id\", \"amount_cents\", "
                             "\"memo\", \"region\", \"both\") SELECT (id::bigint), ((amount * "
                             "100)::bigint), (note), ('eu'), (note || big) FROM "
                             "unnest($1::\"public\".\"orders_src\"[]) AS u");
    assert_int_equal(np, 1);
    free(sql);
    sql = sqlgen_map_rows(&r_rel, true, NULL, cols, 4);
    assert_string_equal(sql, "unnest($1::\"public\".\"orders_src\"[]) WITH ORDINALITY AS "
                             "u(\"id\", \"v\", \"amount\", \"note\", \"big\", pgshift_n)");
    free(sql);
}

static void test_truncate(void **state)
{
    (void)state;
    const char *const two[] = {"\"public\".\"t\"", "\"s\".\"orders\""};
    char *sql = sqlgen_truncate(two, 2, false);
    assert_string_equal(sql, "TRUNCATE \"public\".\"t\", \"s\".\"orders\"");
    free(sql);
    sql = sqlgen_truncate(two, 1, true);
    assert_string_equal(sql, "TRUNCATE \"public\".\"t\" RESTART IDENTITY");
    free(sql);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_row_single_key), cmocka_unit_test(test_row_composite_key),
        cmocka_unit_test(test_set_single_key), cmocka_unit_test(test_set_composite_key),
        cmocka_unit_test(test_is_key),         cmocka_unit_test(test_expect),
        cmocka_unit_test(test_truncate),       cmocka_unit_test(test_row_whole_row),
        cmocka_unit_test(test_mapped),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
