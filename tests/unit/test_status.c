/* test_status.c: the status snapshot as Prometheus text and JSON. */
#include "pgshift/status.h"

#include <jansson.h>
#include <math.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

typedef struct fixture {
    Pgshift__StatusSnapshot st;
    Pgshift__TableProgress t[2];
    Pgshift__TableProgress *tp[2];
    Pgshift__SlotHealth slot;
    Pgshift__CutoverInfo co;
} fixture;

static void fill(fixture *f)
{
    memset(f, 0, sizeof *f);
    pgshift__status_snapshot__init(&f->st);
    f->st.migration = "petri";
    f->st.phase = PGSHIFT__PHASE__PHASE_READY;
    f->st.lag_bytes = 123456;
    f->st.lag_seconds = 1.5;
    f->st.eta_seconds = NAN;
    f->st.applied_xacts_total = 42;
    for (int i = 0; i < 2; i++) {
        pgshift__table_progress__init(&f->t[i]);
        f->tp[i] = &f->t[i];
    }
    f->t[0].source = "\"public\".\"obs\"";
    f->t[0].rows_copied = 1000;
    f->t[0].rows_estimated = 990;
    f->t[0].copy_done = true;
    f->t[0].changes_applied = 77;
    f->t[1].source = "odd\\name\nx";
    f->st.tables = f->tp;
    f->st.n_tables = 2;
    pgshift__slot_health__init(&f->slot);
    f->slot.retained_bytes = 4096;
    f->slot.wal_status = "reserved";
    f->slot.safe_bytes_left = -1;
    f->st.slot = &f->slot;
    pgshift__cutover_info__init(&f->co);
    f->co.attempts = 3;
    f->co.write_block_ms = 12.5;
    f->st.cutover = &f->co;
}

static void prometheus_text(void **state)
{
    (void)state;
    fixture f;
    fill(&f);
    size_t len = 0;
    char *txt = status_prometheus(&f.st, &len);
    assert_non_null(txt);
    assert_int_equal(len, strlen(txt));
    assert_non_null(strstr(
        txt, "# TYPE pgshift_lag_bytes gauge\npgshift_lag_bytes{migration=\"petri\"} 123456\n"));
    assert_non_null(strstr(txt, "pgshift_phase{migration=\"petri\"} 3\n"));
    assert_non_null(strstr(txt, "pgshift_phase_info{migration=\"petri\",phase=\"ready\"} 1\n"));
    assert_non_null(strstr(txt, "pgshift_eta_seconds{migration=\"petri\"} NaN\n"));
    assert_non_null(strstr(txt, "# TYPE pgshift_applied_changes_total counter\n"));
    /* label values escaped: quote, backslash, newline */
    assert_non_null(strstr(txt, "pgshift_copy_rows_total{migration=\"petri\",table="
                                "\"\\\"public\\\".\\\"obs\\\"\"} 1000\n"));
    assert_non_null(
        strstr(txt, "pgshift_copy_rows_total{migration=\"petri\",table=\"odd\\\\name\\nx\"} 0\n"));
    assert_non_null(strstr(txt, "pgshift_slot_safe_bytes{migration=\"petri\"} -1\n"));
    assert_non_null(
        strstr(txt, "pgshift_cutover_write_block_seconds{migration=\"petri\"} 0.0125\n"));
    assert_non_null(strstr(txt, "pgshift_cutover_attempts_total{migration=\"petri\"} 3\n"));
    /* every sample line belongs to a metric announced by # TYPE before it */
    char *copy = strdup(txt);
    char types[64][64];
    int ntypes = 0;
    for (char *line = strtok(copy, "\n"); line; line = strtok(NULL, "\n")) {
        if (strncmp(line, "# TYPE ", 7) == 0) {
            sscanf(line + 7, "%63s", types[ntypes]);
            ntypes++;
            assert_true(ntypes < 64);
        } else if (line[0] != '#') {
            char name[64];
            sscanf(line, "%63[^{ ]", name);
            bool found = false;
            for (int i = 0; i < ntypes; i++)
                found |= strcmp(types[i], name) == 0;
            if (!found)
                fail_msg("sample without TYPE: %s", line);
        }
    }
    free(copy);
    free(txt);
}

static void json_form(void **state)
{
    (void)state;
    fixture f;
    fill(&f);
    char *js = status_json(&f.st, 0);
    assert_non_null(js);
    json_error_t err;
    json_t *o = json_loads(js, 0, &err);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "phase")), "ready");
    assert_true(json_is_null(json_object_get(o, "eta_seconds")));
    assert_int_equal(json_integer_value(json_object_get(o, "lag_bytes")), 123456);
    json_t *t = json_array_get(json_object_get(o, "tables"), 1);
    assert_string_equal(json_string_value(json_object_get(t, "source")), "odd\\name\nx");
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(o, "slot"), "safe_bytes_left")), -1);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(o, "cutover"), "attempts")),
                     3);
    f.st.eta_seconds = -1;
    char *js2 = status_json(&f.st, 2);
    json_t *o2 = json_loads(js2, 0, &err);
    assert_true(json_number_value(json_object_get(o2, "eta_seconds")) == -1);
    json_decref(o);
    json_decref(o2);
    free(js);
    free(js2);
}

static void phase_names(void **state)
{
    (void)state;
    assert_string_equal(status_phase_name(PGSHIFT__PHASE__PHASE_COPYING), "copying");
    assert_string_equal(status_phase_name(PGSHIFT__PHASE__PHASE_DONE), "done");
    assert_string_equal(status_phase_name((Pgshift__Phase)99), "unknown");
}

static void dashboard_embedded(void **state)
{
    (void)state;
    assert_true(pgs_dashboard_html_len > 100);
    assert_int_equal(strlen((const char *)pgs_dashboard_html), pgs_dashboard_html_len);
    assert_non_null(strstr((const char *)pgs_dashboard_html, "/status"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(prometheus_text),
        cmocka_unit_test(json_form),
        cmocka_unit_test(phase_names),
        cmocka_unit_test(dashboard_embedded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
