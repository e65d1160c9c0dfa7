/* migration.h: one migration at run time: the plan resolved against the
 * server and its connections. The operations of each phase have headers of
 * their own: preflight.h, state.h, prepare.h, copy.h, run.h. */
#ifndef PGSHIFT_MIGRATION_H
#define PGSHIFT_MIGRATION_H

#include "pgshift/catalog.h"
#include "pgshift/colmap.h"
#include "pgshift/decode.h"
#include "pgshift/phase.h"
#include "pgshift/plan.h"

#include <libpq-fe.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* One source -> target pair of the plan, resolved. */
typedef struct pgs_mtable {
    const pgs_plan_table *spec;
    int ord; /* position in the plan, the key of its state row */
    pgs_relinfo src;
    pgs_relinfo tgt;    /* tgt.exists is false until pgshift creates it */
    bool create_target; /* the plan has a partition spec: pgshift creates the target */
    pgs_strlist match;  /* columns that identify a row (source PK, else replica identity
                           index, else plan `key`) */
    pgs_strlist cols;   /* columns copied and applied: the source's non-generated columns, or
                           for a mapped table (map.mapped) the target columns written */
    pgs_colmap map;     /* the column mapping (colmap.h) */
    /* Where the copy writes when not into tgt.qname (quoted): the shadow of
     * an operator-made partitioned target (src/plan/shadow.c), or NULL. */
    char *copy_into;
    /* state */
    int64_t rows_copied;
    int64_t bytes_copied;
    bool copy_done;
    int64_t changes_applied;
    /* The target was analyzed by this process after its copy (cmd_run.c),
     * when changes_applied was changes_at_analyze: the cutover analyzes it
     * again only if much has changed since (cutover.c). */
    bool analyzed;
    int64_t changes_at_analyze;
} pgs_mtable;

/* Where a migration's time went, in seconds (0: not reached), kept in the
 * state (migrations.timings, state_set_timing) and shown by status as
 * Timings (proto/pgshift.proto says what each one covers). */
typedef struct pgs_timings {
    double copy_s, index_build_s, backlog_s, ready_s, cutover_s, after_swap_s;
} pgs_timings;

/* The last `pgshift verify` (migrations.verify; status shows it). */
typedef struct pgs_verify_info {
    bool has;
    char at[32];
    char lsn[24];
    bool consistent, identical;
    uint64_t differences;
} pgs_verify_info;

typedef struct pgs_migration {
    pgs_plan *plan;
    PGconn *src; /* source database: catalog reads, publication, WAL position */
    PGconn *tgt; /* target database: target tables and the pgshift state schema */
    pgs_mtable *tables;
    int ntables;
    /* Its row in pgshift.migrations: the plan's name, or "<name>/reverse"
     * for the reverse stream of a rollback window (src/run/reverse.c),
     * which shares the plan's name for its lock and control socket. */
    char row[64];
    bool reverse;
    double window_end;    /* reverse: when the rollback window ends (unix seconds) */
    bool window_over;     /* reverse: the run stopped because the window ended */
    char slot[64];        /* pgshift_<name> */
    char publication[64]; /* pgshift_<name> */
    /* state (pgshift.migrations) */
    bool has_state;
    pgs_phase phase;
    pgs_lsn consistent_lsn;
    pgs_lsn applied_lsn; /* end LSN of the last applied source commit */
    int64_t applied_xacts;
    int64_t applied_changes;
    /* run options */
    bool auto_cutover;     /* `run --auto-cutover` */
    bool cutover_once;     /* with auto_cutover: asked for like `pgshift cutover` (never
                              postponed), and the run stops when it is given up */
    const char *http_addr; /* `run --http ADDR`, or NULL */
    bool just_copied;      /* this run did the copy (the copy_done hook fires) */
    atomic_bool analyzing; /* the background ANALYZE of fresh targets still runs */
    pgs_timings timings;
    pgs_verify_info verify;
    /* This process's clocks (pgs_now_ms): its start, its streaming start. */
    double run_started_ms, streaming_since_ms;
    bool ready_timed; /* this run's first ready is recorded */
} pgs_migration;

/* A monotonic clock in milliseconds. */
double pgs_now_ms(void);

/* Connects to source and target and resolves every table of the plan
 * (catalog reads only; changes nothing). Logs and returns NULL on failure. */
pgs_migration *migration_open(pgs_plan *plan);
void migration_close(pgs_migration *m);

/* The table whose source has this schema and name, or NULL. */
pgs_mtable *migration_find_source(pgs_migration *m, const char *nspname, const char *relname);

#endif
