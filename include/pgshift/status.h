/* status.h: the migration's status snapshot (proto StatusSnapshot) rendered
 * for the outside: Prometheus text exposition format for /metrics, and
 * JSON for /status and `pgshift status --json`. Pure functions: the
 * snapshot is built by the stream loop (stream.c) or by `status` from the
 * state tables. */
#ifndef PGSHIFT_STATUS_H
#define PGSHIFT_STATUS_H

#include "pgshift.pb-c.h"
#include "pgshift/migration.h"

#include <stdbool.h>
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

/* What only the running stream knows (lag sampling, rates, slot, cutover);
 * zeroed while copying. */
typedef struct status_live {
    pgs_lsn source_lsn, confirmed_lsn;
    double lag_bytes, lag_seconds, eta_seconds; /* eta NaN: not known yet */
    double rate_changes, rate_xacts, rate_bytes, rate_wal;
    long long slot_retained, slot_safe; /* safe -1: unlimited */
    const char *wal_status;
    int cutover_attempts;
    double cutover_lock_wait_ms, cutover_write_block_ms;
    const struct cutover_blocker *blocker; /* NULL: none */
    bool postponed, paused;
    const double *copy_rows_per_second; /* per table, or NULL */
} status_live;

/* A snapshot of the migration plus the live figures; its strings point into
 * m, live and x itself. Release with status_snapshot_free. */
typedef struct status_snapshot {
    Pgshift__StatusSnapshot st;
    Pgshift__TableProgress *tp;
    Pgshift__TableProgress **tpp;
    char (*names)[2][200]; /* schema.table, unquoted */
    Pgshift__SlotHealth slot;
    Pgshift__CutoverInfo co;
    Pgshift__Blocker bl;
    char src_lsn[18], applied[18], confirmed[18];
} status_snapshot;

bool status_snapshot_build(const pgs_migration *m, const status_live *live, status_snapshot *x);
void status_snapshot_free(status_snapshot *x);

/* ---- the board (board.c): HTTP on a thread of its own ----
 * /metrics, /status and / are served from the last published snapshot, so
 * they answer during the copy as well as while streaming. */

/* What /status (and the dashboard) show in place of the cutover blocker's
 * query when queries are hidden. */
#define BOARD_QUERY_HIDDEN "(hidden: --http-show-queries)"

/* Starts the HTTP server on `addr` in its own thread. False (logged) on
 * failure. The blocker's query, another session's SQL text, is served only
 * when the server is bound to loopback or `show_queries` is true
 * (--http-show-queries); otherwise it reads BOARD_QUERY_HIDDEN. */
bool board_start(const char *addr, bool show_queries);
/* Whether the running board serves the blocker's query. */
bool board_shows_queries(void);
/* Renders and stores the snapshot; cheap enough for every second. */
void board_publish(const Pgshift__StatusSnapshot *st);
/* The port actually bound, or 0. */
int board_port(void);
/* True while the server runs: publishers skip building snapshots otherwise. */
bool board_active(void);
void board_stop(void);

/* The dashboard page (src/status/dashboard.html, embedded at build time). */
extern const unsigned char pgs_dashboard_html[];
extern const size_t pgs_dashboard_html_len;

#endif
