/* test_spool.c: streamed transactions kept on disk until their commit
 * (src/repl/spool.c): records read back in order, a subtransaction's abort
 * cutting its changes and the nested ones after it while keeping Relation
 * messages, whole aborts, interleaved transactions. */
#include "spool.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

enum { TOP = 700, SUB1 = 701, SUB2 = 702, SUB3 = 703, OTHER = 800 };

static void add(spool *s, uint32_t xid, uint32_t sub, const char *msg)
{
    assert_true(spool_add(s, xid, sub, (const uint8_t *)msg, strlen(msg)));
}

/* Reads the transaction back and joins its messages with '|'. */
static char *read_back(spool *s, uint32_t xid)
{
    bool io_error = true;
    spool_xact *x = spool_take(s, xid, &io_error);
    assert_false(io_error);
    char *out = calloc(1, 4096);
    if (x == NULL)
        return out;
    const uint8_t *m;
    size_t len;
    while (spool_next(x, &m, &len, &io_error)) {
        if (out[0])
            strcat(out, "|");
        strncat(out, (const char *)m, len);
    }
    assert_false(io_error);
    spool_xact_free(x);
    return out;
}

static void in_order(void **state)
{
    (void)state;
    spool *s = spool_new(NULL);
    add(s, TOP, TOP, "Ra");
    add(s, TOP, TOP, "I1");
    add(s, OTHER, OTHER, "I9");
    add(s, TOP, TOP, "U1");
    assert_int_equal(spool_open_xacts(s), 2);
    assert_true(spool_bytes(s) > 0);
    char *got = read_back(s, TOP);
    assert_string_equal(got, "Ra|I1|U1");
    free(got);
    assert_int_equal(spool_open_xacts(s), 1);
    got = read_back(s, OTHER);
    assert_string_equal(got, "I9");
    free(got);
    /* A transaction with nothing spooled reads back as nothing. */
    bool io_error = true;
    assert_null(spool_take(s, 12345, &io_error));
    assert_false(io_error);
    spool_free(s);
}

static void subxact_abort(void **state)
{
    (void)state;
    spool *s = spool_new(NULL);
    add(s, TOP, TOP, "I1");
    add(s, TOP, SUB1, "Rb");
    add(s, TOP, SUB1, "I2");
    add(s, TOP, SUB2, "I3"); /* nested in SUB1, begun after it */
    add(s, TOP, SUB2, "Rc");
    /* SUB1 aborts: its changes and SUB2's go; the Relation messages stay. */
    assert_true(spool_abort(s, TOP, SUB1));
    add(s, TOP, SUB3, "I4");
    add(s, TOP, TOP, "I5");
    /* An aborted subtransaction that made no change, and one of an unknown
     * transaction, change nothing. */
    assert_true(spool_abort(s, TOP, 9999));
    assert_true(spool_abort(s, 4242, 4243));
    char *got = read_back(s, TOP);
    assert_string_equal(got, "I1|Rb|Rc|I4|I5");
    free(got);
    spool_free(s);
}

static void later_subxact_abort(void **state)
{
    (void)state;
    spool *s = spool_new(NULL);
    add(s, TOP, TOP, "I1");
    add(s, TOP, SUB1, "I2");
    add(s, TOP, SUB2, "I3");
    assert_true(spool_abort(s, TOP, SUB2)); /* only the later one */
    add(s, TOP, TOP, "I4");
    char *got = read_back(s, TOP);
    assert_string_equal(got, "I1|I2|I4");
    free(got);
    spool_free(s);
}

static void whole_abort_and_reset(void **state)
{
    (void)state;
    spool *s = spool_new(NULL);
    add(s, TOP, TOP, "I1");
    add(s, OTHER, OTHER, "I2");
    assert_true(spool_abort(s, TOP, TOP));
    assert_int_equal(spool_open_xacts(s), 1);
    char *got = read_back(s, TOP);
    assert_string_equal(got, "");
    free(got);
    spool_reset(s);
    assert_int_equal(spool_open_xacts(s), 0);
    assert_int_equal(spool_bytes(s), 0);
    spool_free(s);
}

static void large_records(void **state)
{
    (void)state;
    spool *s = spool_new(NULL);
    size_t n = 3u << 20;
    uint8_t *big = malloc(n);
    for (size_t i = 0; i < n; i++)
        big[i] = (uint8_t)(i * 7);
    for (int i = 0; i < 3; i++)
        assert_true(spool_add(s, TOP, TOP, big, n - (size_t)i));
    bool io_error;
    spool_xact *x = spool_take(s, TOP, &io_error);
    const uint8_t *m;
    size_t len;
    for (int i = 0; i < 3; i++) {
        assert_true(spool_next(x, &m, &len, &io_error));
        assert_int_equal(len, n - (size_t)i);
        assert_memory_equal(m, big, len);
    }
    assert_false(spool_next(x, &m, &len, &io_error));
    assert_false(io_error);
    spool_xact_free(x);
    free(big);
    spool_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(in_order),
        cmocka_unit_test(subxact_abort),
        cmocka_unit_test(later_subxact_abort),
        cmocka_unit_test(whole_abort_and_reset),
        cmocka_unit_test(large_records),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
