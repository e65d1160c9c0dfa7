/* lag.c: the lag, rate, ETA and slot-risk model (see lag.h). Pure: the
 * numbers are those on_stats in src/repl/stream.c has always computed. */
#include "pgshift/lag.h"

#include <math.h>
#include <string.h>

void lag_init(lag_model *m)
{
    memset(m, 0, sizeof *m);
}

bool lag_slot_at_risk(int64_t retained, int64_t safe_wal_size, const char *wal_status)
{
    if (wal_status && (strcmp(wal_status, "unreserved") == 0 || strcmp(wal_status, "lost") == 0))
        return true;
    return safe_wal_size != LAG_SAFE_UNKNOWN && safe_wal_size < retained / 4 + (INT64_C(256) << 20);
}

/* One rate measurement against the previous sample, smoothed in. */
static void update_rates(lag_model *m, const lag_input *in)
{
    double dt = (in->t_ms - m->last_ms) / 1000.0;
    /* Seeded with the first measurement rather than 0, which would read
     * low for the whole smoothing window. */
    double alpha = m->rate_samples++ == 0 ? 1.0 : LAG_ALPHA;
    double rc = (double)(in->changes - m->last_changes) / dt;
    double rx = (double)(in->xacts - m->last_xacts) / dt;
    double rb = in->applied_lsn > m->last_applied_lsn
                    ? (double)(in->applied_lsn - m->last_applied_lsn) / dt
                    : 0;
    double rw = in->source_lsn > m->last_source_lsn
                    ? (double)(in->source_lsn - m->last_source_lsn) / dt
                    : 0;
    m->rate_changes = alpha * rc + (1 - alpha) * m->rate_changes;
    m->rate_xacts = alpha * rx + (1 - alpha) * m->rate_xacts;
    m->rate_bytes = alpha * rb + (1 - alpha) * m->rate_bytes;
    m->rate_wal = alpha * rw + (1 - alpha) * m->rate_wal;
    /* The peak fades (half-life LAG_PEAK_HALF_LIFE_S) so that it tells what
     * the applier does now, not during a burst long past. */
    m->peak_rate_bytes *= exp2(-dt / LAG_PEAK_HALF_LIFE_S);
    uint64_t lag = in->source_lsn > in->applied_lsn ? in->source_lsn - in->applied_lsn : 0;
    if (!in->idle && lag > LAG_BEHIND_BYTES && m->lag_bytes > LAG_BEHIND_BYTES &&
        m->rate_bytes > m->peak_rate_bytes)
        m->peak_rate_bytes = m->rate_bytes;
}

void lag_sample(lag_model *m, const lag_input *in)
{
    bool first = m->samples++ == 0;
    if (first || in->t_ms > m->last_ms) {
        if (!first)
            update_rates(m, in);
        m->last_ms = in->t_ms;
        m->last_source_lsn = in->source_lsn;
        m->last_applied_lsn = in->applied_lsn;
        m->last_changes = in->changes;
        m->last_xacts = in->xacts;
    }

    uint64_t lag = in->source_lsn > in->applied_lsn ? in->source_lsn - in->applied_lsn : 0;
    m->lag_bytes = lag;
    m->lag_seconds = 0;
    if (!in->idle && in->last_commit_us != 0) {
        m->lag_seconds = (double)(in->now_us - in->last_commit_us) / 1e6;
        if (m->lag_seconds < 0)
            m->lag_seconds = 0;
    }
    /* Within max_lag the migration has converged as far as the cutover is
     * concerned; the difference of two noisy rates would say "never". */
    m->converged = lag <= in->max_lag_bytes;
    double net = m->rate_bytes - m->rate_wal;
    if (lag == 0 || in->idle || m->converged)
        m->eta_seconds = 0;
    else if (m->rate_samples == 0)
        m->eta_seconds = NAN;
    else
        m->eta_seconds = net > 0 ? (double)lag / net : -1;
    m->slot_at_risk = lag_slot_at_risk(in->slot_retained, in->safe_wal_size, in->wal_status);
}

bool lag_ready(const lag_model *m)
{
    return m->samples > 0 && m->converged;
}
