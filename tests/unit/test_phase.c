/* test_phase: the transition table (phase.h). Every legal transition gives
 * its target and says whether it is written; every (phase, event) pair not
 * in the table is refused; names and the protocol mapping are one list. */
#include "pgshift/phase.h"
#include "pgshift.pb-c.h"

#include <ctype.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

/* The expected table, written out independently of phase.c. */
static const struct {
    pgs_phase from;
    pgs_event ev;
    pgs_phase to;
    bool persist;
} legal[] = {
    {PGS_PHASE_NONE, PGS_EV_COPY_START, PGS_PHASE_COPYING, true},
    {PGS_PHASE_COPYING, PGS_EV_COPY_START, PGS_PHASE_COPYING, true},
    {PGS_PHASE_COPYING, PGS_EV_COPY_DONE, PGS_PHASE_CATCHING_UP, true},
    {PGS_PHASE_CATCHING_UP, PGS_EV_LAG_OK, PGS_PHASE_READY, true},
    {PGS_PHASE_READY, PGS_EV_LAG_HIGH, PGS_PHASE_CATCHING_UP, true},
    {PGS_PHASE_FAILED, PGS_EV_LAG_OK, PGS_PHASE_READY, true},
    {PGS_PHASE_FAILED, PGS_EV_LAG_HIGH, PGS_PHASE_CATCHING_UP, true},
    {PGS_PHASE_PAUSED, PGS_EV_LAG_OK, PGS_PHASE_READY, true},
    {PGS_PHASE_PAUSED, PGS_EV_LAG_HIGH, PGS_PHASE_CATCHING_UP, true},
    {PGS_PHASE_CATCHING_UP, PGS_EV_PAUSE, PGS_PHASE_PAUSED, true},
    {PGS_PHASE_READY, PGS_EV_PAUSE, PGS_PHASE_PAUSED, true},
    {PGS_PHASE_PAUSED, PGS_EV_RESUME, PGS_PHASE_CATCHING_UP, true},
    {PGS_PHASE_CATCHING_UP, PGS_EV_CUTOVER_LOCK, PGS_PHASE_CUTTING_OVER, false},
    {PGS_PHASE_READY, PGS_EV_CUTOVER_LOCK, PGS_PHASE_CUTTING_OVER, false},
    {PGS_PHASE_CUTTING_OVER, PGS_EV_CUTOVER_RELEASED, PGS_PHASE_READY, false},
    {PGS_PHASE_CUTTING_OVER, PGS_EV_SWAPPED, PGS_PHASE_DONE, true},
    {PGS_PHASE_COPYING, PGS_EV_ERROR, PGS_PHASE_FAILED, true},
    {PGS_PHASE_CATCHING_UP, PGS_EV_ERROR, PGS_PHASE_FAILED, true},
    {PGS_PHASE_READY, PGS_EV_ERROR, PGS_PHASE_FAILED, true},
    {PGS_PHASE_PAUSED, PGS_EV_ERROR, PGS_PHASE_FAILED, true},
    {PGS_PHASE_CUTTING_OVER, PGS_EV_ERROR, PGS_PHASE_FAILED, true},
    {PGS_PHASE_FAILED, PGS_EV_ERROR, PGS_PHASE_FAILED, true},
    {PGS_PHASE_CUTTING_OVER, PGS_EV_SWAPPED_REVERSIBLE, PGS_PHASE_REVERSIBLE, true},
    {PGS_PHASE_REVERSIBLE, PGS_EV_WINDOW_END, PGS_PHASE_DONE, true},
    {PGS_PHASE_REVERSIBLE, PGS_EV_ROLLED_BACK, PGS_PHASE_ROLLED_BACK, true},
    {PGS_PHASE_ROLLED_BACK, PGS_EV_COPY_START, PGS_PHASE_COPYING, true},
};

#define NLEGAL (sizeof legal / sizeof legal[0])

static void test_legal_transitions(void **state)
{
    (void)state;
    for (size_t i = 0; i < NLEGAL; i++) {
        pgs_phase to = PGS_PHASE_COUNT;
        bool persist = !legal[i].persist;
        assert_true(phase_next(legal[i].from, legal[i].ev, &to, &persist));
        assert_int_equal(to, legal[i].to);
        assert_int_equal(persist, legal[i].persist);
    }
}

static void test_everything_else_refused(void **state)
{
    (void)state;
    int refused = 0;
    for (int f = 0; f < PGS_PHASE_COUNT; f++)
        for (int e = 0; e < PGS_EV_COUNT; e++) {
            bool listed = false;
            for (size_t i = 0; i < NLEGAL; i++)
                listed |= legal[i].from == (pgs_phase)f && legal[i].ev == (pgs_event)e;
            if (listed)
                continue;
            pgs_phase to = (pgs_phase)f;
            bool persist = false;
            if (phase_next((pgs_phase)f, (pgs_event)e, &to, &persist))
                fail_msg("%s + %s is not in the table but gave %s", pgs_phase_name((pgs_phase)f),
                         pgs_event_name((pgs_event)e), pgs_phase_name(to));
            refused++;
        }
    assert_int_equal(refused, PGS_PHASE_COUNT * PGS_EV_COUNT - (int)NLEGAL);
    /* Out of range is refused too. */
    assert_false(phase_next(PGS_PHASE_COUNT, PGS_EV_ERROR, NULL, NULL));
    assert_false(phase_next(PGS_PHASE_READY, PGS_EV_COUNT, NULL, NULL));
}

/* The cutover guarantee in the table: `done` is final, and only the swap
 * (or the end of a rollback window after one) reaches it; `cutting_over`
 * is never written. */
static void test_done_is_final_and_cutting_over_in_memory(void **state)
{
    (void)state;
    for (int e = 0; e < PGS_EV_COUNT; e++)
        assert_false(phase_next(PGS_PHASE_DONE, (pgs_event)e, NULL, NULL));
    for (int f = 0; f < PGS_PHASE_COUNT; f++)
        for (int e = 0; e < PGS_EV_COUNT; e++) {
            pgs_phase to;
            bool persist;
            if (!phase_next((pgs_phase)f, (pgs_event)e, &to, &persist))
                continue;
            if (to == PGS_PHASE_DONE)
                assert_true(e == PGS_EV_SWAPPED ||
                            (f == PGS_PHASE_REVERSIBLE && e == PGS_EV_WINDOW_END));
            if (to == PGS_PHASE_CUTTING_OVER)
                assert_false(persist);
        }
}

static void test_names_round_trip(void **state)
{
    (void)state;
    for (int p = 0; p < PGS_PHASE_COUNT; p++) {
        const char *name = pgs_phase_name((pgs_phase)p);
        assert_string_not_equal(name, "unknown");
        assert_int_equal(pgs_phase_parse(name), p);
    }
    assert_string_equal(pgs_phase_name(PGS_PHASE_CATCHING_UP), "catching_up");
    assert_string_equal(pgs_phase_name(PGS_PHASE_COUNT), "unknown");
    assert_int_equal(pgs_phase_parse("no such phase"), PGS_PHASE_NONE);
    for (int e = 0; e < PGS_EV_COUNT; e++)
        assert_string_not_equal(pgs_event_name((pgs_event)e), "unknown");
}

/* The protocol enum is mapped by name, not by +1. */
static void test_proto_mapping(void **state)
{
    (void)state;
    for (int p = 0; p < PGS_PHASE_COUNT; p++) {
        int v = phase_to_proto((pgs_phase)p);
        const ProtobufCEnumValue *ev =
            protobuf_c_enum_descriptor_get_value(&pgshift__phase__descriptor, v);
        assert_non_null(ev);
        char want[64];
        size_t n = (size_t)snprintf(want, sizeof want, "PHASE_%s", pgs_phase_name((pgs_phase)p));
        for (size_t i = 0; i < n; i++)
            want[i] = (char)toupper((unsigned char)want[i]);
        assert_string_equal(ev->name, want);
        assert_string_equal(phase_proto_name(v), pgs_phase_name((pgs_phase)p));
        assert_int_equal(phase_metric_from_proto(v), p == PGS_PHASE_NONE ? 0 : p);
    }
    assert_int_equal(phase_to_proto(PGS_PHASE_COUNT), PGSHIFT__PHASE__PHASE_UNKNOWN);
    assert_string_equal(phase_proto_name(PGSHIFT__PHASE__PHASE_UNKNOWN), "unknown");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_legal_transitions),
        cmocka_unit_test(test_everything_else_refused),
        cmocka_unit_test(test_done_is_final_and_cutting_over_in_memory),
        cmocka_unit_test(test_names_round_trip),
        cmocka_unit_test(test_proto_mapping),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
