/* Unit test for src/apply/durable.c: which applied LSN is durable, given
 * the committed batches and the target's flush position. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "durable.h"

/* Batch k (1-based) applied source LSN 1000*k; its COMMIT left the target's
 * WAL insert position at 100*k (flush position 100*k - 50). */
static void commit_batches(durable *d, int from, int to, bool sync)
{
    for (int k = from; k <= to; k++)
        durable_committed(d, (pgs_lsn)(1000 * k), (pgs_lsn)(100 * k), (pgs_lsn)(100 * k - 50),
                          sync);
}

static void test_start(void **state)
{
    (void)state;
    durable d;
    memset(&d, 0, sizeof d);
    durable_set(&d, 77);
    assert_int_equal(durable_advance(&d, 0), 77);
    assert_int_equal(durable_advance(&d, 123456), 77);
    assert_int_equal(durable_pending(&d), 0);
}

static void test_in_order(void **state)
{
    (void)state;
    durable d;
    memset(&d, 0, sizeof d);
    durable_set(&d, 5);
    commit_batches(&d, 1, 3, false);
    assert_int_equal(durable_pending(&d), 3);
    assert_int_equal(durable_advance(&d, 99), 5); /* nothing flushed yet */
    assert_int_equal(durable_advance(&d, 100), 1000);
    assert_int_equal(durable_pending(&d), 2);
    assert_int_equal(durable_advance(&d, 200), 2000);
    assert_int_equal(durable_advance(&d, 300), 3000);
    assert_int_equal(durable_pending(&d), 0);
    /* Stays put once everything is confirmed. */
    assert_int_equal(durable_advance(&d, 400), 3000);
}

static void test_between_entries(void **state)
{
    (void)state;
    durable d;
    memset(&d, 0, sizeof d);
    commit_batches(&d, 1, 4, false);
    /* Flushed past batch 2's COMMIT, not yet batch 3's. */
    assert_int_equal(durable_advance(&d, 250), 2000);
    assert_int_equal(durable_pending(&d), 2);
    /* A lower position later (another probe's) does not move it back. */
    assert_int_equal(durable_advance(&d, 150), 2000);
    assert_int_equal(durable_pending(&d), 2);
    assert_int_equal(durable_advance(&d, 1000), 4000);
    assert_int_equal(durable_pending(&d), 0);
}

/* A synchronous commit was flushed before it returned: the flush position
 * read after it covers it, while an asynchronous one waits for the insert
 * position. */
static void test_sync(void **state)
{
    (void)state;
    durable d;
    memset(&d, 0, sizeof d);
    durable_committed(&d, 1000, 100, 50, true);
    assert_int_equal(durable_advance(&d, 50), 1000);

    memset(&d, 0, sizeof d);
    durable_committed(&d, 1000, 100, 50, false);
    assert_int_equal(durable_advance(&d, 50), 0);
    assert_int_equal(durable_advance(&d, 100), 1000);
}

static void test_overflow_keeps_newest(void **state)
{
    (void)state;
    durable d;
    memset(&d, 0, sizeof d);
    commit_batches(&d, 1, DURABLE_MAX + 10, false);
    assert_int_equal(durable_pending(&d), DURABLE_MAX);
    /* The ten oldest were dropped: the oldest remembered is batch 11. */
    assert_int_equal(durable_advance(&d, 100 * 10), 0);
    assert_int_equal(durable_advance(&d, 100 * 11), 11000);
    assert_int_equal(durable_advance(&d, 100 * (DURABLE_MAX + 10)), 1000 * (DURABLE_MAX + 10));
    assert_int_equal(durable_pending(&d), 0);
}

/* Flush positions the applier's own results showed count even when the
 * caller passes a lower one (or 0). */
static void test_seen_flush(void **state)
{
    (void)state;
    durable d;
    memset(&d, 0, sizeof d);
    commit_batches(&d, 1, 3, false);
    durable_saw_flush(&d, 200);
    durable_saw_flush(&d, 120); /* never lowers it */
    assert_int_equal(d.seen_flush, 200);
    assert_int_equal(durable_advance(&d, 0), 2000);
    assert_int_equal(durable_advance(&d, 150), 2000);
    assert_int_equal(durable_advance(&d, 300), 3000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_start),
        cmocka_unit_test(test_in_order),
        cmocka_unit_test(test_between_entries),
        cmocka_unit_test(test_sync),
        cmocka_unit_test(test_overflow_keeps_newest),
        cmocka_unit_test(test_seen_flush),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
