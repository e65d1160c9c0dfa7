/* status.h: the migration's status snapshot (proto StatusSnapshot) rendered
 * for the outside: Prometheus text exposition format for /metrics, and
 * JSON for /status and `pgshift status --json`. Pure functions: the
 * snapshot is built by the stream loop (stream.c) or by `status` from the
 * state tables. */
#ifndef PGSHIFT_STATUS_H
#define PGSHIFT_STATUS_H

#include "pgshift.pb-c.h"

#include <stddef.h>

/* Phase numbers in metrics: the pgs_phase values (1 copying, 2 catching_up,
 * 3 ready, 4 cutting_over, 5 done, 6 paused, 7 failed). The proto enum is
 * one higher (0 unknown, 1 planned). */
const char *status_phase_name(Pgshift__Phase phase);

/* Prometheus text format 0.0.4, every metric prefixed pgshift_, with labels
 * migration (and table where it is per table). malloc'd; NULL on OOM. */
char *status_prometheus(const Pgshift__StatusSnapshot *st, size_t *len);

/* The same snapshot as one JSON object: phase, lag_bytes, lag_seconds,
 * eta_seconds (null when not known yet, -1 never), rates, tables[], slot,
 * cutover, postponed, paused. malloc'd; NULL on OOM. `indent` > 0 pretty
 * prints. */
char *status_json(const Pgshift__StatusSnapshot *st, int indent);

/* The dashboard page (src/status/dashboard.html, embedded at build time). */
extern const unsigned char pgs_dashboard_html[];
extern const size_t pgs_dashboard_html_len;

#endif
