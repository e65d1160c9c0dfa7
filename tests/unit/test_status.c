/* test_status.c: the status snapshot as Prometheus text, JSON and terminal
 * text, live or built from the state tables. */
#include "pgshift/status.h"
#include "pgshift/state.h"

#include <jansson.h>
#include <math.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
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
    f->st.server_version = "16.14 (Debian \"x\")";
    f->st.server_version_num = 160014;
    f->st.proto_version = 4;
    f->st.origin_filter = true;
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
    assert_non_null(strstr(txt,
                           "# TYPE pgshift_source_info gauge\n"
                           "pgshift_source_info{migration=\"petri\",server_version=\"16.14 "
                           "(Debian \\\"x\\\")\",proto_version=\"4\",origin_filter=\"true\"} 1\n"));
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
    assert_string_equal(json_string_value(json_object_get(o, "server_version")),
                        "16.14 (Debian \"x\")");
    assert_int_equal(json_integer_value(json_object_get(o, "server_version_num")), 160014);
    assert_int_equal(json_integer_value(json_object_get(o, "proto_version")), 4);
    assert_true(json_is_true(json_object_get(o, "origin_filter")));
    f.st.eta_seconds = -1;
    char *js2 = status_json(&f.st, 2);
    json_t *o2 = json_loads(js2, 0, &err);
    assert_true(json_number_value(json_object_get(o2, "eta_seconds")) == -1);
    json_decref(o);
    json_decref(o2);
    free(js);
    free(js2);
}

/* status_text into a string (tmpfile: C11 has no memory stream). */
static char *text_of(const Pgshift__StatusSnapshot *st, const status_origin *o)
{
    FILE *f = tmpfile();
    assert_non_null(f);
    status_text(st, o, f);
    long n = ftell(f);
    rewind(f);
    char *s = calloc((size_t)n + 1, 1);
    assert_int_equal(fread(s, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    return s;
}

static void text_live(void **state)
{
    (void)state;
    fixture f;
    fill(&f);
    f.st.postponed = true;
    char *txt = text_of(&f.st, &(status_origin){.live = true});
    assert_non_null(strstr(txt, "migration petri: ready, automatic cutover postponed (live)\n"));
    assert_non_null(strstr(txt, "  lag: 0.1 MB, 1.5 s; ETA not known yet\n"));
    assert_non_null(strstr(txt, "  apply: 0 changes/s, 0 transactions/s"));
    assert_non_null(strstr(txt, "  slot: reserved, retains 0.0 MB of WAL\n"));
    assert_non_null(strstr(txt, "  cutover: 3 attempt(s)\n"));
    assert_non_null(strstr(txt,
                           "  source: PostgreSQL 16.14 (Debian \"x\"), pgoutput proto_version 4, "
                           "streaming, origin filter on\n"));
    assert_non_null(strstr(txt, "  \"public\".\"obs\" -> : copy done, 1000 of ~990 rows; 77 "
                                "changes applied\n"));
    free(txt);
    f.st.proto_version = 0;
    f.st.origin_filter = false;
    f.st.server_version = "";
    txt = text_of(&f.st, &(status_origin){.live = true});
    assert_non_null(strstr(txt, "  source: server version not known, not streaming\n"));
    free(txt);
    txt = status_prometheus(&f.st, NULL);
    assert_non_null(strstr(txt, "pgshift_source_info{migration=\"petri\",server_version=\"\","
                                "proto_version=\"0\",origin_filter=\"false\"} 1\n"));
    free(txt);
}

static const status_state_table state_tables[] = {
    {.source = "public.obs",
     .target = "public.obs_new",
     .rows_copied = 10,
     .rows_estimated = 12,
     .copy_done = true,
     .changes_applied = 5},
};

static status_state state_row(const char *stats, bool active)
{
    return (status_state){.migration = "petri",
                          .phase = "catching_up",
                          .error = "",
                          .applied_lsn = "0/16B3748",
                          .source_lsn = "0/2000000",
                          .confirmed_lsn = "0/16B3748",
                          .lag_bytes = 2 << 20,
                          .commit_age_s = 7.5,
                          .applied_xacts = 3,
                          .applied_changes = 9,
                          .stats = stats,
                          .slot_exists = true,
                          .slot_active = active,
                          .slot_retained = 3 << 20,
                          .slot_safe = -1,
                          .wal_status = "reserved",
                          .age_s = 45,
                          .slot_name = "pgshift_petri",
                          .plan_path = "plan.yaml",
                          .server_version = "15.14",
                          .server_version_num = 150014,
                          .ntables = 1,
                          .tables = state_tables};
}

/* The stats row is the run's snapshot as JSON: read back while a run
 * streams, ignored (no rates, ETA never) when none does. */
static void from_state_stats(void **state)
{
    (void)state;
    const char *stats =
        "{\"lag_seconds\":0.5,\"eta_seconds\":null,\"apply_changes_per_second\":120.5,"
        "\"apply_xacts_per_second\":30,\"apply_bytes_per_second\":4096,"
        "\"wal_bytes_per_second\":8192,\"postponed\":true,\"paused\":false,"
        "\"server_version\":\"14.1\",\"proto_version\":3,\"origin_filter\":true,"
        "\"slot\":{\"retained_bytes\":1,\"wal_status\":\"extended\",\"safe_bytes_left\":5},"
        "\"cutover\":{\"attempts\":2,\"lock_wait_ms\":3.5,\"fence_ms\":0,\"write_block_ms\":0,"
        "\"last_blocker\":{\"pid\":42,\"application\":\"psql\",\"query\":\"select 1\","
        "\"xact_age_seconds\":9.5}}}";
    status_state s = state_row(stats, true);
    status_snapshot x;
    assert_true(status_snapshot_from_state(&s, &x));
    const Pgshift__StatusSnapshot *st = &x.st;
    assert_int_equal(st->phase, PGSHIFT__PHASE__PHASE_CATCHING_UP);
    assert_int_equal(st->lag_bytes, 2 << 20);
    assert_true(st->lag_seconds == 0.5);
    assert_true(isnan(st->eta_seconds)); /* null: not known yet */
    assert_true(st->apply_changes_per_second == 120.5);
    assert_true(st->apply_xacts_per_second == 30);
    assert_true(st->wal_bytes_per_second == 8192);
    assert_true(st->postponed);
    /* the slot from its row now, not from the stored sample */
    assert_int_equal(st->slot->retained_bytes, 3 << 20);
    assert_string_equal(st->slot->wal_status, "reserved");
    assert_int_equal(st->slot->safe_bytes_left, -1);
    assert_int_equal(st->cutover->attempts, 2);
    assert_int_equal(st->cutover->last_blocker->pid, 42);
    assert_string_equal(st->cutover->last_blocker->query, "select 1");
    assert_int_equal(st->n_tables, 1);
    assert_string_equal(st->tables[0]->target, "public.obs_new");
    assert_true(x.origin.running && !x.origin.live);
    /* the server version from the source now, the protocol from the run */
    assert_string_equal(st->server_version, "15.14");
    assert_int_equal(st->server_version_num, 150014);
    assert_int_equal(st->proto_version, 3);
    assert_true(st->origin_filter);
    status_snapshot_free(&x);

    s = state_row(stats, false);
    assert_true(status_snapshot_from_state(&s, &x));
    assert_true(x.st.apply_changes_per_second == 0);
    assert_true(x.st.eta_seconds == -1);
    assert_true(x.st.lag_seconds == 7.5);
    assert_false(x.st.postponed);
    assert_null(x.st.cutover);
    assert_int_equal(x.st.proto_version, 0);
    assert_false(x.st.origin_filter);
    assert_string_equal(x.st.server_version, "15.14");
    char *txt = text_of(&x.st, &x.origin);
    assert_non_null(strstr(txt, "migration petri: catching_up (from the state tables; no run is "
                                "serving this plan)\n"));
    assert_non_null(strstr(txt, "  lag: 2.0 MB, 7.5 s\n"));
    assert_null(strstr(txt, "apply:"));
    assert_non_null(strstr(txt, "  source: PostgreSQL 15.14, not streaming\n"));
    assert_non_null(strstr(txt, "  slot pgshift_petri: reserved, retains 3.0 MB of WAL\n"));
    assert_non_null(strstr(txt, "  public.obs -> public.obs_new: copy done, 10 of ~12 rows"));
    free(txt);
    status_snapshot_free(&x);
}

/* After the swap: the stored cutover record, in the text and the JSON. */
static void from_state_done(void **state)
{
    (void)state;
    status_state s = state_row("{}", false);
    s.phase = "failed";
    s.error = "boom";
    status_snapshot x;
    assert_true(status_snapshot_from_state(&s, &x));
    char *txt = text_of(&x.st, &x.origin);
    assert_non_null(strstr(txt, "migration petri: failed (from the state tables"));
    assert_non_null(strstr(txt, "  error: boom\n"));
    free(txt);
    status_snapshot_free(&x);

    s = state_row("{}", false);
    s.phase = "done";
    s.lag_bytes = 0;
    s.slot_exists = false;
    s.cutover_at = "2024-05-01 12:00:00+00";
    s.cutover_at_unix_ms = 1714564800000;
    s.cutover_record = "{\"attempts\":2,\"lock_wait_ms\":4,\"fence_ms\":6,\"swap_ms\":3,"
                       "\"write_block_ms\":12.4,\"old_tables\":[\"public.obs_old\"],"
                       "\"post_done\":false,\"post\":{\"x\":1}}";
    assert_true(status_snapshot_from_state(&s, &x));
    txt = text_of(&x.st, &x.origin);
    assert_non_null(strstr(txt, "migration petri: done (from the state tables)\n"));
    assert_non_null(strstr(txt, "  cut over at 2024-05-01 12:00:00+00 after 2 attempt(s): "
                                "write-blocking window 12 ms (lock wait 4 ms, fence reached in "
                                "6 ms, swap 3 ms)\n"));
    assert_non_null(strstr(txt, "`pgshift cleanup --plan plan.yaml --confirm`): public.obs_old\n"));
    assert_non_null(strstr(txt, "  note: the steps after the swap"));
    assert_non_null(strstr(txt, "  slot pgshift_petri: absent"));
    free(txt);
    char *js = status_json_origin(&x.st, &x.origin, 2);
    json_t *o = json_loads(js, 0, NULL);
    assert_non_null(o);
    json_t *co = json_object_get(o, "cutover");
    assert_true(json_number_value(json_object_get(co, "write_block_ms")) == 12.4);
    assert_int_equal(json_integer_value(json_object_get(co, "attempts")), 2);
    assert_int_equal(json_integer_value(json_object_get(co, "done_at_unix_ms")), 1714564800000);
    assert_non_null(json_object_get(co, "old_tables"));
    assert_string_equal(json_string_value(json_object_get(co, "at")), "2024-05-01 12:00:00+00");
    assert_null(json_object_get(co, "post"));
    assert_true(json_is_false(json_object_get(o, "running")));
    assert_string_equal(json_string_value(json_object_get(json_object_get(o, "slot"), "name")),
                        "pgshift_petri");
    json_decref(o);
    free(js);
    status_snapshot_free(&x);
}

/* status_json -> stored -> status_snapshot_from_state -> status_json: the
 * figures the state keeps survive. */
static void json_round_trip(void **state)
{
    (void)state;
    fixture f;
    fill(&f);
    f.st.apply_changes_per_second = 11;
    f.st.apply_xacts_per_second = 2.5;
    f.st.wal_bytes_per_second = 1024;
    f.st.eta_seconds = 30;
    f.st.paused = true;
    char *stored = status_json(&f.st, 0);
    status_state s = state_row(stored, true);
    status_snapshot x;
    assert_true(status_snapshot_from_state(&s, &x));
    assert_true(x.st.apply_changes_per_second == 11);
    assert_true(x.st.apply_xacts_per_second == 2.5);
    assert_true(x.st.wal_bytes_per_second == 1024);
    assert_true(x.st.eta_seconds == 30);
    assert_true(x.st.lag_seconds == 1.5);
    assert_true(x.st.paused);
    assert_int_equal(x.st.cutover->attempts, 3);
    assert_true(x.st.cutover->write_block_ms == 12.5);
    char *js = status_json_origin(&x.st, &x.origin, 0);
    json_t *a = json_loads(stored, 0, NULL), *b = json_loads(js, 0, NULL);
    assert_non_null(a);
    assert_non_null(b);
    const char *same[] = {"migration",
                          "lag_seconds",
                          "eta_seconds",
                          "apply_changes_per_second",
                          "apply_xacts_per_second",
                          "wal_bytes_per_second",
                          "paused",
                          "postponed",
                          "proto_version",
                          "origin_filter"};
    for (size_t i = 0; i < sizeof same / sizeof same[0]; i++)
        if (!json_equal(json_object_get(a, same[i]), json_object_get(b, same[i])))
            fail_msg("%s differs: %s", same[i], js);
    assert_true(json_equal(json_object_get(json_object_get(a, "cutover"), "write_block_ms"),
                           json_object_get(json_object_get(b, "cutover"), "write_block_ms")));
    assert_true(json_is_true(json_object_get(b, "running")));
    json_decref(a);
    json_decref(b);
    free(js);
    free(stored);
    status_snapshot_free(&x);
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
        cmocka_unit_test(prometheus_text), cmocka_unit_test(json_form),
        cmocka_unit_test(text_live),       cmocka_unit_test(from_state_stats),
        cmocka_unit_test(from_state_done), cmocka_unit_test(json_round_trip),
        cmocka_unit_test(phase_names),     cmocka_unit_test(dashboard_embedded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
