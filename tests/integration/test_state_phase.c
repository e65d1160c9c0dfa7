/* test_state_phase: phase changes against a real state store. Every
 * change goes through the transition table: a legal one is written (or
 * kept in memory when the row says so), an illegal one is refused and
 * leaves both m->phase and pgshift.migrations as they were. In particular a
 * migration that is cut over can never be marked failed afterwards (the
 * stream's exit path used to do that through state_set_phase, so that the
 * phase no longer matched the table names). */
#include "pgtest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgshift/migration.h"
#include "pgshift/store.h"
#include "pgshift/state.h"

typedef struct fixture {
    pgs_plan plan;
    pgs_migration m;
    PGconn *check;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    f->plan.name = "phases";
    f->m.plan = &f->plan;
    snprintf(f->m.row, sizeof f->m.row, "phases");
    snprintf(f->m.slot, sizeof f->m.slot, "pgshift_phases");
    snprintf(f->m.publication, sizeof f->m.publication, "pgshift_phases");
    f->m.tgt = pgt_connect(NULL);
    f->check = pgt_connect(NULL);
    pgt_exec(f->check, "DROP SCHEMA IF EXISTS pgshift CASCADE");
    assert_true(state_ensure_schema(&f->m));
    assert_true(state_load(&f->m));
    assert_false(f->m.has_state);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    PQfinish(f->m.tgt);
    PQfinish(f->check);
    free(f);
    return 0;
}

static char *stored(fixture *f)
{
    return pgt_value(f->check, "SELECT phase || '/' || coalesce(error, '-')"
                               " FROM pgshift.migrations WHERE name = 'phases'");
}

static void expect_stored(fixture *f, const char *want)
{
    char *v = stored(f);
    assert_string_equal(v, want);
    free(v);
}

/* The whole life of a migration, through the table. */
static void test_lifecycle(void **state)
{
    fixture *f = *state;
    pgs_migration *m = &f->m;
    assert_true(state_begin_copy(m));
    assert_int_equal(m->phase, PGS_PHASE_COPYING);
    expect_stored(f, "copying/-");
    assert_true(state_copy_done(m));
    expect_stored(f, "catching_up/-");
    assert_true(state_transition(m, PGS_EV_LAG_OK, "lag 10 bytes"));
    expect_stored(f, "ready/-");
    assert_true(state_transition(m, PGS_EV_PAUSE, NULL));
    expect_stored(f, "paused/-");
    assert_true(state_transition(m, PGS_EV_RESUME, NULL));
    expect_stored(f, "catching_up/-");
    /* cutting_over is not written: a crash leaves the stored phase. */
    assert_true(state_transition(m, PGS_EV_CUTOVER_LOCK, NULL));
    assert_int_equal(m->phase, PGS_PHASE_CUTTING_OVER);
    expect_stored(f, "catching_up/-");
    assert_true(state_transition(m, PGS_EV_CUTOVER_RELEASED, "lock_timeout"));
    assert_int_equal(m->phase, PGS_PHASE_READY);
    assert_true(state_transition(m, PGS_EV_ERROR, "apply stopped"));
    expect_stored(f, "failed/apply stopped");
    /* A new run: the first lag sample says where it stands; error cleared. */
    assert_true(state_transition(m, PGS_EV_LAG_HIGH, NULL));
    expect_stored(f, "catching_up/-");
}

/* A pair with no row: refused, nothing written, phase unchanged. */
static void test_illegal_refused(void **state)
{
    fixture *f = *state;
    pgs_migration *m = &f->m;
    assert_true(state_begin_copy(m));
    assert_false(state_transition(m, PGS_EV_LAG_OK, NULL));
    assert_false(state_transition(m, PGS_EV_SWAPPED, NULL));
    assert_false(state_transition(m, PGS_EV_RESUME, NULL));
    assert_int_equal(m->phase, PGS_PHASE_COPYING);
    expect_stored(f, "copying/-");
    /* The old interface goes through the same table. */
    assert_false(state_set_phase(m, PGS_PHASE_DONE, NULL));
    assert_false(state_set_phase(m, PGS_PHASE_READY, NULL));
    expect_stored(f, "copying/-");
    assert_true(state_set_phase(m, PGS_PHASE_FAILED, "copy broke"));
    expect_stored(f, "failed/copy broke");
}

/* After the swap committed phase done, nothing moves it: not an error on
 * the way out (state_set_phase(FAILED) in stream.c's exit path), not a lag
 * sample. */
static void test_done_is_final(void **state)
{
    fixture *f = *state;
    pgs_migration *m = &f->m;
    assert_true(state_begin_copy(m));
    assert_true(state_copy_done(m));
    /* What the swap does: check, write in its own transaction, commit, apply. */
    pgs_phase to;
    assert_true(state_transition(m, PGS_EV_CUTOVER_LOCK, NULL));
    assert_true(state_transition_check(m, PGS_EV_SWAPPED, &to));
    assert_int_equal(to, PGS_PHASE_DONE);
    pgt_exec(m->tgt, "BEGIN");
    assert_true(store_record_swap(m->tgt, "phases", to, "{\"post_steps\": []}"));
    pgt_exec(m->tgt, "COMMIT");
    assert_true(state_transition_committed(m, PGS_EV_SWAPPED, NULL));
    assert_int_equal(m->phase, PGS_PHASE_DONE);
    expect_stored(f, "done/-");

    assert_false(state_set_phase(m, PGS_PHASE_FAILED, "apply stopped on an error; see the log"));
    assert_false(state_transition(m, PGS_EV_ERROR, "x"));
    assert_false(state_transition(m, PGS_EV_LAG_HIGH, NULL));
    assert_int_equal(m->phase, PGS_PHASE_DONE);
    expect_stored(f, "done/-");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_lifecycle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_illegal_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_done_is_final, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
