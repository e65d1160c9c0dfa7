/* Unit tests for the lag/rate/ETA/slot-risk model (lag.h) on synthetic
 * samples. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>

#include "pgshift/lag.h"

#define MB (INT64_C(1) << 20)

/* A busy, healthy sample at time t_ms; tests adjust what they look at. */
static lag_input base(double t_ms)
{
    return (lag_input){
        .t_ms = t_ms,
        .source_lsn = 100 * MB,
        .applied_lsn = 100 * MB,
        .now_us = INT64_C(1700000000000000),
        .max_lag_bytes = 1 * MB,
        .slot_retained = 10 * MB,
        .safe_wal_size = LAG_SAFE_UNKNOWN,
        .wal_status = "reserved",
    };
}

static void assert_near(double got, double want)
{
    if (fabs(got - want) > 1e-9 * (fabs(want) > 1 ? fabs(want) : 1))
        fail_msg("got %.12g, want %.12g", got, want);
}

/* Samples every 2 s (numbers from..to-1) where the source writes `wal` bytes/s, we apply
 * `applied` bytes/s, 50 changes/s and 5 xacts/s; sample 0 is lag0 behind. */
static void feed(lag_model *m, int from, int to, uint64_t lag0, double wal, double applied)
{
    for (int i = from; i < to; i++) {
        lag_input in = base(1000.0 + 2000.0 * i);
        in.applied_lsn = (uint64_t)(100 * MB + applied * 2 * i);
        in.source_lsn = (uint64_t)(100 * MB + (double)lag0 + wal * 2 * i);
        in.changes = 100 * i;
        in.xacts = 10 * i;
        lag_sample(m, &in);
    }
}

static void feed_steady(lag_model *m, int n, uint64_t lag0, double wal, double applied)
{
    feed(m, 0, n, lag0, wal, applied);
}

static void steady_rates(void **state)
{
    lag_model m;
    lag_init(&m);
    feed_steady(&m, 20, 0, 1000000, 1000000);
    assert_near(m.rate_changes, 50);
    assert_near(m.rate_xacts, 5);
    assert_near(m.rate_bytes, 1000000);
    assert_near(m.rate_wal, 1000000);
    assert_int_equal(m.lag_bytes, 0);
    assert_near(m.eta_seconds, 0);
    assert_true(lag_ready(&m));
}

/* The first measurement is taken whole (not averaged with the initial 0);
 * later ones with weight 0.3. */
static void seeding(void **state)
{
    lag_model m;
    lag_init(&m);
    lag_input in = base(0);
    in.changes = 1000;
    in.xacts = 10;
    lag_sample(&m, &in);
    assert_near(m.rate_changes, 0);
    assert_near(m.rate_xacts, 0);
    in = base(2000);
    in.changes = 1200; /* 100/s */
    in.xacts = 30;     /* 10/s */
    in.source_lsn += 4000;
    in.applied_lsn += 2000;
    lag_sample(&m, &in);
    assert_near(m.rate_changes, 100);
    assert_near(m.rate_xacts, 10);
    assert_near(m.rate_wal, 2000);
    assert_near(m.rate_bytes, 1000);
    in.t_ms = 3000;
    in.changes = 1200 + 300; /* 300/s over 1 s */
    in.xacts = 30;           /* 0/s */
    lag_sample(&m, &in);
    assert_near(m.rate_changes, 0.3 * 300 + 0.7 * 100);
    assert_near(m.rate_xacts, 0.7 * 10);
    assert_near(m.rate_wal, 0.7 * 2000);
    assert_near(m.rate_bytes, 0.7 * 1000);
}

/* Positions that go backwards (a reconnect, a rewound confirm) are rate 0,
 * not a negative rate; a sample at the same time does not divide by 0. */
static void backwards_and_same_time(void **state)
{
    lag_model m;
    lag_init(&m);
    lag_input in = base(0);
    lag_sample(&m, &in);
    in.t_ms = 1000;
    in.source_lsn -= 5000;
    in.applied_lsn -= 5000;
    lag_sample(&m, &in);
    assert_near(m.rate_wal, 0);
    assert_near(m.rate_bytes, 0);
    in.t_ms = 2000;
    in.source_lsn += 3000;
    lag_sample(&m, &in);
    assert_near(m.rate_wal, 0.3 * 3000);
    in.source_lsn += 3000;
    lag_sample(&m, &in); /* same t_ms: rates and baseline stay */
    assert_near(m.rate_wal, 0.3 * 3000);
    assert_int_equal(m.lag_bytes, 6000);
    in.t_ms = 3000;
    lag_sample(&m, &in); /* the 3000 bytes since the baseline, over 1 s */
    assert_near(m.rate_wal, 0.3 * 3000 + 0.7 * 0.3 * 3000);
}

/* Applied ahead of the sampled source position (sampled at different
 * moments): lag 0, not a wrapped-around huge number. */
static void lag_bytes_clamped(void **state)
{
    lag_model m;
    lag_init(&m);
    lag_input in = base(0);
    in.applied_lsn = in.source_lsn + 10;
    lag_sample(&m, &in);
    assert_int_equal(m.lag_bytes, 0);
    assert_near(m.eta_seconds, 0);
    in.source_lsn = in.applied_lsn + 123;
    lag_sample(&m, &in);
    assert_int_equal(m.lag_bytes, 123);
}

/* ETA: NaN on the first sample (no rates), known from the second. */
static void eta_not_known_yet(void **state)
{
    lag_model m;
    lag_init(&m);
    lag_input in = base(0);
    in.source_lsn = in.applied_lsn + 10 * MB;
    lag_sample(&m, &in);
    assert_true(isnan(m.eta_seconds));
    assert_false(lag_ready(&m));
    /* The same with the lag within max_lag, idle, or 0: caught up. */
    lag_model z;
    in.source_lsn = in.applied_lsn + 1 * MB;
    lag_init(&z);
    lag_sample(&z, &in);
    assert_near(z.eta_seconds, 0);
    in.source_lsn = in.applied_lsn + 10 * MB;
    in.idle = true;
    lag_init(&z);
    lag_sample(&z, &in);
    assert_near(z.eta_seconds, 0);
    in.idle = false;
    in.source_lsn = in.applied_lsn;
    in.max_lag_bytes = 0;
    lag_init(&z);
    lag_sample(&z, &in);
    assert_near(z.eta_seconds, 0);
    assert_true(lag_ready(&z));
}

/* ETA: lag over net drain rate; -1 when the net rate is 0 or negative;
 * 0 once within max_lag (the edge included), however noisy the rates. */
static void eta_values(void **state)
{
    lag_model m;
    lag_init(&m);
    /* 10 MB behind, applying 3 MB/s while the source writes 1 MB/s. */
    lag_init(&m);
    feed_steady(&m, 2, 10 * MB, 1 * MB, 3 * MB);
    /* lag after 2 samples: 10 MB + 2 MB written - 6 MB applied */
    assert_int_equal(m.lag_bytes, 6 * MB);
    assert_near(m.eta_seconds, (double)(6 * MB) / (double)(2 * MB));
    assert_false(lag_ready(&m));

    lag_init(&m);
    feed_steady(&m, 5, 10 * MB, 1 * MB, 1 * MB); /* net 0 */
    assert_near(m.eta_seconds, -1);
    lag_init(&m);
    feed_steady(&m, 5, 10 * MB, 2 * MB, 1 * MB); /* net < 0 */
    assert_near(m.eta_seconds, -1);
    assert_int_equal(m.lag_bytes, 10 * MB + 4 * 2 * MB);

    /* Falling behind by 1 kB/s, exactly max_lag behind at sample 4:
     * converged, ETA 0 (not "never"); one sample later, "never". */
    lag_init(&m);
    feed(&m, 0, 5, 1 * MB - 8 * 1024, 1 * MB + 1024, 1 * MB);
    assert_int_equal(m.lag_bytes, 1 * MB);
    assert_near(m.eta_seconds, 0);
    assert_true(lag_ready(&m));
    feed(&m, 5, 6, 1 * MB - 8 * 1024, 1 * MB + 1024, 1 * MB);
    assert_int_equal(m.lag_bytes, 1 * MB + 2048);
    assert_false(lag_ready(&m));
    assert_near(m.eta_seconds, -1);
}

/* Idle (nothing pending): whatever WAL the source writes is not lag that
 * needs draining, and there is no commit to age. */
static void idle(void **state)
{
    lag_model m;
    lag_init(&m);
    feed_steady(&m, 3, 10 * MB, 1 * MB, 0);
    lag_input in = base(10000);
    in.source_lsn = in.applied_lsn + 50 * MB;
    in.last_commit_us = in.now_us - 30000000;
    lag_sample(&m, &in);
    assert_near(m.lag_seconds, 30);
    assert_true(m.eta_seconds == -1 || m.eta_seconds > 0);
    in.idle = true;
    in.t_ms += 2000;
    lag_sample(&m, &in);
    assert_near(m.lag_seconds, 0);
    assert_near(m.eta_seconds, 0);
    assert_int_equal(m.lag_bytes, 50 * MB); /* reported; the phase stays catching up */
    assert_false(lag_ready(&m));
}

/* Lag in seconds: since the last applied commit; 0 before any commit;
 * never negative when the clocks disagree. */
static void lag_seconds(void **state)
{
    lag_model m;
    lag_init(&m);
    lag_input in = base(0);
    lag_sample(&m, &in);
    assert_near(m.lag_seconds, 0);
    in.last_commit_us = in.now_us - 2500000;
    lag_sample(&m, &in);
    assert_near(m.lag_seconds, 2.5);
    in.last_commit_us = in.now_us + 5000000; /* source clock ahead */
    lag_sample(&m, &in);
    assert_near(m.lag_seconds, 0);
    in.last_commit_us = in.now_us;
    lag_sample(&m, &in);
    assert_near(m.lag_seconds, 0);
}

/* Slot risk: by wal_status, or safe_wal_size below retained/4 + 256 MB
 * (integer division, as today); unknown safe_wal_size alone is no risk. */
static void slot_risk(void **state)
{
    const int64_t t = 256 * MB;
    assert_true(lag_slot_at_risk(0, LAG_SAFE_UNKNOWN, "unreserved"));
    assert_true(lag_slot_at_risk(0, LAG_SAFE_UNKNOWN, "lost"));
    assert_true(lag_slot_at_risk(0, 100000 * MB, "lost"));
    assert_false(lag_slot_at_risk(0, LAG_SAFE_UNKNOWN, "reserved"));
    assert_false(lag_slot_at_risk(1000000 * MB, LAG_SAFE_UNKNOWN, "extended"));
    assert_false(lag_slot_at_risk(0, LAG_SAFE_UNKNOWN, NULL));
    assert_false(lag_slot_at_risk(0, LAG_SAFE_UNKNOWN, ""));
    /* No retained WAL: the threshold is 256 MB. */
    assert_false(lag_slot_at_risk(0, t, "reserved"));
    assert_true(lag_slot_at_risk(0, t - 1, "reserved"));
    assert_true(lag_slot_at_risk(0, 0, "reserved"));
    assert_true(lag_slot_at_risk(0, -2, "reserved"));
    /* 1 GB retained: 256 MB + 256 MB. */
    assert_false(lag_slot_at_risk(1024 * MB, 512 * MB, "reserved"));
    assert_true(lag_slot_at_risk(1024 * MB, 512 * MB - 1, "reserved"));
    /* retained/4 rounds down: 7/4 = 1. */
    assert_false(lag_slot_at_risk(7, t + 1, "reserved"));
    assert_true(lag_slot_at_risk(7, t, "reserved"));
    /* Through lag_sample. */
    lag_model m;
    lag_init(&m);
    lag_input in = base(0);
    in.slot_retained = 1024 * MB;
    in.safe_wal_size = 512 * MB;
    lag_sample(&m, &in);
    assert_false(m.slot_at_risk);
    in.safe_wal_size--;
    lag_sample(&m, &in);
    assert_true(m.slot_at_risk);
    in.safe_wal_size = LAG_SAFE_UNKNOWN;
    in.wal_status = "unreserved";
    lag_sample(&m, &in);
    assert_true(m.slot_at_risk);
}

/* The peak apply rate (cutover.max_block's capacity) counts only while
 * behind by more than LAG_BEHIND_BYTES, and fades with its half-life. */
static void peak_rate(void **state)
{
    (void)state;
    lag_model m;
    lag_init(&m);
    /* Caught up, applying what the source writes: no peak. */
    feed_steady(&m, 10, 0, 1000000, 1000000);
    assert_near(m.peak_rate_bytes, 0);
    /* 512 MB behind, applying 8 MB/s against 1 MB/s written: the peak
     * follows the smoothed rate up to 8 MB/s. */
    lag_init(&m);
    feed_steady(&m, 20, 512 * MB, 1 * MB, 8 * MB);
    assert_true(m.lag_bytes > LAG_BEHIND_BYTES);
    assert_true(m.peak_rate_bytes > 7.9 * MB && m.peak_rate_bytes <= 8 * MB);
    double peak = m.peak_rate_bytes;
    /* Then caught up for 60 s (30 samples, 2 s apart), writing and
     * applying 1 MB/s: the peak halves and is not raised. */
    for (int i = 20; i < 50; i++) {
        lag_input in = base(1000.0 + 2000.0 * i);
        in.applied_lsn = in.source_lsn = (uint64_t)(200 * MB + 1 * MB * 2 * i);
        in.changes = 100 * i;
        in.xacts = 10 * i;
        lag_sample(&m, &in);
    }
    assert_true(fabs(m.peak_rate_bytes - peak / 2) < peak * 0.01);
}

static void not_ready_before_a_sample(void **state)
{
    lag_model m;
    lag_init(&m);
    assert_false(lag_ready(&m));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(steady_rates),
        cmocka_unit_test(seeding),
        cmocka_unit_test(backwards_and_same_time),
        cmocka_unit_test(lag_bytes_clamped),
        cmocka_unit_test(eta_not_known_yet),
        cmocka_unit_test(eta_values),
        cmocka_unit_test(idle),
        cmocka_unit_test(lag_seconds),
        cmocka_unit_test(slot_risk),
        cmocka_unit_test(not_ready_before_a_sample),
        cmocka_unit_test(peak_rate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
