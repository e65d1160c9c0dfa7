/* Unit tests for LSN text form and timestamp epochs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "pgshift/decode.h"

static void lsn_roundtrip(void **state)
{
    char buf[18];
    assert_string_equal(decode_lsn_format(0, buf), "0/0");
    assert_string_equal(decode_lsn_format(UINT64_C(0x16B3748), buf), "0/16B3748");
    assert_string_equal(decode_lsn_format(UINT64_C(0xFFFFFFFFFFFFFFFF), buf), "FFFFFFFF/FFFFFFFF");
    pgs_lsn l;
    assert_true(decode_lsn_parse("1/2A", &l));
    assert_int_equal(l, UINT64_C(0x10000002A));
    assert_true(decode_lsn_parse("ffffffff/ffffffff", &l));
    assert_int_equal(l, UINT64_MAX);
}

static void lsn_rejects(void **state)
{
    pgs_lsn l;
    const char *bad[] = {"", "/", "1/", "/1", "1/2/3", "G/1", "123456789/0", "1 /2", NULL};
    for (int i = 0; bad[i]; i++)
        assert_false(decode_lsn_parse(bad[i], &l));
    assert_false(decode_lsn_parse(NULL, &l));
}

static void epochs(void **state)
{
    assert_int_equal(decode_ts_from_unix_us(INT64_C(946684800000000)), 0);
    assert_int_equal(decode_ts_to_unix_us(0), INT64_C(946684800000000));
    assert_int_equal(decode_ts_to_unix_us(decode_ts_from_unix_us(1234567)), 1234567);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(lsn_roundtrip),
        cmocka_unit_test(lsn_rejects),
        cmocka_unit_test(epochs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
