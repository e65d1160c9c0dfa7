/* status.h: the migration's status snapshot (proto StatusSnapshot), one
 * type whoever builds it: the run's loop (status_snapshot_build, from the
 * engine: snapshot.c) or `pgshift status` when no run serves the plan
 * (status_snapshot_from_state, from the state tables: snapshot.c). One
 * module renders it (render.c): Prometheus text for /metrics, JSON for
 * /status, the hooks, the stats row and `status --json`, and the terminal
 * text of `pgshift status`. */
#ifndef PGSHIFT_STATUS_H
#define PGSHIFT_STATUS_H

#include "pgshift.pb-c.h"
#include "pgshift/migration.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

/* Phase numbers in metrics: the pgs_phase values (1 copying, 2 catching_up,
 * 3 ready, 4 cutting_over, 5 done, 6 paused, 7 failed). The proto enum is
 * one higher (0 unknown, 1 planned). */
const char *status_phase_name(Pgshift__Phase phase);

/* Prometheus text format 0.0.4, every metric prefixed pgshift_, with labels
 * migration (and table where it is per table). malloc'd; NULL on OOM. */
char *status_prometheus(const Pgshift__StatusSnapshot *st, size_t *len);

/* Where a snapshot shown by `pgshift status` comes from, and what only the
 * state tables add to it. */
typedef struct status_origin {
    bool live;                  /* from the running run (its control socket) */
    bool running;               /* from the state: a run streams (the slot is active) */
    double state_age_s;         /* from the state: since the run last wrote the row */
    const char *slot_name;      /* NULL: not known */
    const char *plan_path;      /* for the hints after a cutover; NULL: none */
    const char *cutover_at;     /* from the state: when the swap committed; NULL: none */
    const char *cutover_record; /* from the state: the stored cutover record (JSON); NULL */
} status_origin;

/* The same snapshot as one JSON object: phase, lag_bytes, lag_seconds,
 * eta_seconds (null when not known yet, -1 never), rates, tables[], slot,
 * cutover, postponed, paused, server_version, server_version_num,
 * proto_version, origin_filter. malloc'd; NULL on OOM. `indent` > 0 pretty
 * prints. */
char *status_json(const Pgshift__StatusSnapshot *st, int indent);
/* status_json plus what `o` says: "running", the slot's "name", and the
 * stored cutover record's keys (old_tables, swap_ms, post_done, at, ...)
 * under "cutover". `o` NULL: status_json. */
char *status_json_origin(const Pgshift__StatusSnapshot *st, const status_origin *o, int indent);
/* The terminal text of `pgshift status`, live or from the state. */
void status_text(const Pgshift__StatusSnapshot *st, const status_origin *o, FILE *f);

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
    const char *cutover_blocked; /* why an automatic cutover waits for the operator, or NULL */
    bool postponed, paused;
    const double *copy_rows_per_second; /* per table, or NULL */
    /* the source: server_version as it reports it (NULL: not known) and
     * server_version_num; the live stream's pgoutput proto_version (0: not
     * streaming) and whether it asks for origin 'none' */
    const char *server_version;
    int server_version_num;
    int proto_version;
    bool origin_filter;
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
    Pgshift__Timings tm;
    Pgshift__VerifyInfo vi;
    Pgshift__ReverseInfo rv;
    pgs_verify_info vinfo; /* the strings vi points into */
    char src_lsn[18], applied[18], confirmed[18];
    status_origin origin; /* live, or what the state tables add */
    char *own[12];        /* strings of a snapshot from the state */
    int nown;
} status_snapshot;

bool status_snapshot_build(const pgs_migration *m, const status_live *live, status_snapshot *x);

/* One row of pgshift.tables. */
typedef struct status_state_table {
    const char *source, *target;
    long long rows_copied, rows_estimated, bytes_copied, bytes_estimated, changes_applied;
    bool copy_done;
} status_state_table;

/* What `pgshift status` reads when no run serves the plan: the state rows,
 * the source's WAL position now and the slot's row. */
typedef struct status_state {
    const char *migration, *phase, *error;                /* phase by name; error "" none */
    const char *applied_lsn, *source_lsn, *confirmed_lsn; /* %X/%X, "" not known */
    long long lag_bytes; /* source WAL now minus the later of applied and confirmed */
    double commit_age_s; /* now minus the last applied commit's time */
    long long applied_xacts, applied_changes;
    const char *stats; /* migrations.stats: the run's last snapshot (JSON); NULL */
    bool slot_exists, slot_active;
    long long slot_retained, slot_safe; /* safe -1: unlimited */
    const char *wal_status;
    double age_s;                            /* since the run last wrote the row */
    const char *cutover_record, *cutover_at; /* NULL or "": none */
    const char *timings;                     /* migrations.timings (JSON); NULL or "": none */
    const char *verify;                      /* migrations.verify (JSON); NULL or "": none */
    /* phase reversible: the reverse slot's lag now and the window left */
    bool has_reverse;
    long long reverse_lag_bytes;
    double window_left_s;
    const char *reverse_slot;
    long long cutover_at_unix_ms;
    const char *slot_name, *plan_path;
    /* the source now (the status command's connection); NULL: not known */
    const char *server_version;
    int server_version_num;
    int ntables;
    const status_state_table *tables;
} status_state;

/* The snapshot from the state: the lag from the source's position now; the
 * rates, ETA, seconds of lag, postponed/paused, the cutover attempts, the
 * stream's proto_version and origin filter from the stored stats only while
 * a run streams (the slot is active), else rates 0, ETA 0 caught up or -1,
 * proto_version 0, no origin filter. x->origin says where it came from. */
bool status_snapshot_from_state(const status_state *s, status_snapshot *x);
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
