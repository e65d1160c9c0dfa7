/* lag.h: the lag, rate, ETA and slot-risk model of a running migration,
 * as a pure function of periodic samples (no I/O, no clock reads: the
 * caller measures, this module computes).
 *
 * Each lag_sample() takes one measurement and updates the outputs:
 * - lag_bytes: source WAL position minus the confirmed (applied) position,
 *   0 when the confirmed position is ahead.
 * - lag_seconds: now minus the source commit time of the last applied
 *   transaction, never below 0; 0 while idle or before any commit.
 * - rates (per second): changes, transactions, applied bytes, source WAL
 *   bytes; each the difference to the previous sample over the elapsed
 *   time, exponentially smoothed (alpha 0.3, ~10 s at 2 s samples) and
 *   seeded with the first measurement rather than 0. A position that went
 *   backwards counts as rate 0.
 * - eta_seconds: lag over the net drain rate (applied bytes/s minus WAL
 *   bytes/s); 0 when caught up (lag 0, idle, or lag within max_lag), -1
 *   ("never") when the source writes at least as fast as we apply, and NaN
 *   ("not known yet") while there are no rates, i.e. on the first sample.
 * - slot_at_risk: wal_status "unreserved" or "lost", or a known
 *   safe_wal_size below a quarter of the retained WAL plus 256 MB.
 */
#ifndef PGSHIFT_LAG_H
#define PGSHIFT_LAG_H

#include <stdbool.h>
#include <stdint.h>

/* safe_wal_size when the server reports NULL (max_slot_wal_keep_size -1,
 * or the slot is lost). */
#define LAG_SAFE_UNKNOWN (-1)

/* Smoothing weight of a new measurement, after the first one. */
#define LAG_ALPHA 0.3

/* Behind by more than this (and not idle): the applier works flat out, so
 * its rate then is what it can do (lag_model.peak_rate_bytes). */
#define LAG_BEHIND_BYTES     (1 << 20)
#define LAG_PEAK_HALF_LIFE_S 60.0

typedef struct lag_input {
    double t_ms;            /* monotonic time of the sample, in ms */
    uint64_t source_lsn;    /* the source's current WAL position */
    uint64_t applied_lsn;   /* the confirmed (applied, durable) position */
    int64_t changes;        /* changes applied so far (cumulative) */
    int64_t xacts;          /* transactions applied so far (cumulative) */
    int64_t last_commit_us; /* source commit time of the last applied xact, unix us; 0: none */
    int64_t now_us;         /* wall clock at the sample, unix us */
    bool idle;              /* nothing pending anywhere: the lag is only our own WAL */
    uint64_t max_lag_bytes; /* the plan's cutover.max_lag */
    int64_t slot_retained;  /* bytes of WAL the slot holds back */
    int64_t safe_wal_size;  /* bytes, or LAG_SAFE_UNKNOWN */
    const char *wal_status; /* pg_replication_slots.wal_status; NULL or "" when unknown */
} lag_input;

typedef struct lag_model {
    /* Outputs of the last sample. */
    uint64_t lag_bytes;
    double lag_seconds;
    double eta_seconds;  /* NaN: not known yet; -1: never; 0: caught up */
    double rate_changes; /* per second, smoothed */
    double rate_xacts;
    double rate_bytes; /* applied (confirmed) WAL bytes */
    double rate_wal;   /* source WAL bytes */
    /* The apply rate's peak while pgshift was behind (lag over
     * LAG_BEHIND_BYTES, not idle): what it can apply, not what the source
     * happens to write (cutover.max_block's estimate). */
    double peak_rate_bytes;
    bool slot_at_risk;
    bool converged; /* lag within max_lag */

    /* State between samples (private). */
    long samples;      /* lag_sample() calls */
    long rate_samples; /* measurements folded into the rates */
    double last_ms;
    uint64_t last_source_lsn;
    uint64_t last_applied_lsn;
    int64_t last_changes;
    int64_t last_xacts;
} lag_model;

/* Starts a model with no samples (equivalent to zero-initializing it). */
void lag_init(lag_model *m);

/* Folds one sample in and recomputes every output. A sample whose time is
 * not after the previous one leaves the rates (and their baseline) alone. */
void lag_sample(lag_model *m, const lag_input *in);

/* The phase decision: ready for cutover when the last sample's lag is
 * within max_lag. False before the first sample. */
bool lag_ready(const lag_model *m);

/* The slot-risk rule on its own (see above). */
bool lag_slot_at_risk(int64_t retained, int64_t safe_wal_size, const char *wal_status);

#endif
