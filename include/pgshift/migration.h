/* migration.h: one migration at run time: the plan resolved against the
 * server, its connections, and the operations of each phase
 * (preflight -> prepare -> copy -> stream/apply). */
#ifndef PGSHIFT_MIGRATION_H
#define PGSHIFT_MIGRATION_H

#include "pgshift/catalog.h"
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
    pgs_strlist cols;   /* columns copied and applied: the source's non-generated columns */
    /* state */
    int64_t rows_copied;
    int64_t bytes_copied;
    bool copy_done;
    int64_t changes_applied;
} pgs_mtable;

typedef struct pgs_migration {
    pgs_plan *plan;
    PGconn *src; /* source database: catalog reads, publication, WAL position */
    PGconn *tgt; /* target database: target tables and the pgshift state schema */
    pgs_mtable *tables;
    int ntables;
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
    const char *http_addr; /* `run --http ADDR`, or NULL */
    bool just_copied;      /* this run did the copy (the copy_done hook fires) */
    atomic_bool analyzing; /* the background ANALYZE of fresh targets still runs */
} pgs_migration;

/* Connects to source and target and resolves every table of the plan
 * (catalog reads only; changes nothing). Logs and returns NULL on failure. */
pgs_migration *migration_open(pgs_plan *plan);
void migration_close(pgs_migration *m);

/* The table whose source has this schema and name, or NULL. */
pgs_mtable *migration_find_source(pgs_migration *m, const char *nspname, const char *relname);

/* ---- preflight (src/plan/preflight.c) ---- */

/* Checks everything `run` needs and prints a report to `out`: server
 * settings, privileges, keys, column match, partition coverage, sizes,
 * dependent objects. Changes nothing. `resuming` relaxes the checks that
 * only hold before the copy (empty target, target does not exist yet).
 * Returns the number of blocking problems (0 = go), or -1 on error. */
int preflight_run(pgs_migration *m, bool resuming, FILE *out);

/* ---- state (src/state/state.c): schema pgshift in the target database ---- */

bool state_ensure_schema(pgs_migration *m);
/* Reads the migration's state rows if any (m->has_state tells). */
bool state_load(pgs_migration *m);
/* Creates (or resets) the state rows for a fresh copy. */
bool state_begin_copy(pgs_migration *m);
/* The one way a phase changes: looks up (m->phase, ev) in the transition
 * table (phase.h), writes the new phase when the row says so (`detail`
 * becomes migrations.error when the new phase is `failed`), logs
 * "phase X -> Y (event: detail)" and sets m->phase. A pair with no row is
 * a bug: logged with the phase and event, nothing changes, false (the
 * caller stops). False also when the write fails (m->phase unchanged). */
bool state_transition(pgs_migration *m, pgs_event ev, const char *detail);
/* For a transition whose write was part of the caller's own transaction,
 * which has committed (the swap writes `done` with the renames): logs and
 * sets m->phase only. */
bool state_transition_committed(pgs_migration *m, pgs_event ev, const char *detail);
/* For the event loop, which must not wait: m->phase moves (and is logged)
 * at once, and when the table says the phase is persisted, *w holds the
 * statement to send, in order with the applier's batches (apply_send_state);
 * w->sql is NULL when there is nothing to write. False for a pair with no
 * row (a bug, logged). The params point into m and static names, and into
 * `detail`, which must outlive the send. */
typedef struct state_write {
    const char *sql;
    int nparams;
    const char *params[3];
} state_write;
bool state_transition_async(pgs_migration *m, pgs_event ev, const char *detail, state_write *w);
/* Before such a transaction: the phase the transition leads to, or false
 * (logged as a bug) when it is not allowed. */
bool state_transition_check(pgs_migration *m, pgs_event ev, pgs_phase *to);
/* Deprecated: the phase change from m->phase to `phase` through the table
 * (the first event leading there); kept for stream.c until it calls
 * state_transition. Re-writing the current phase is allowed. */
bool state_set_phase(pgs_migration *m, pgs_phase phase, const char *error);
/* migrations.stats (the stream's last sample, a JSON object). */
bool state_write_stats(pgs_migration *m, const char *stats_json);
/* migrations.cutover = cutover || json (after the swap: timings). */
bool state_merge_cutover(pgs_migration *m, const char *json);
/* migrations.cutover as JSON text, malloc'd; NULL on failure (logged). */
char *state_read_cutover(pgs_migration *m);
bool state_set_consistent_lsn(pgs_migration *m, pgs_lsn lsn);
bool state_copy_done(pgs_migration *m);
/* Holds a session advisory lock for this migration on m->tgt so that a
 * second `run` of the same plan refuses to start. */
bool state_lock(pgs_migration *m);
/* Drops the whole state of this migration (abort). */
bool state_delete(pgs_migration *m);

/* ---- prepare (src/plan/prepare.c) ---- */

/* The most partitions pgshift creates from a partition spec. */
#define PGS_MAX_PARTITIONS 2000

/* Creates a target from the partition spec (no indexes yet), or empties
 * the user's target after an interrupted copy. */
bool prepare_targets(pgs_migration *m);
/* Creates the publication for the source tables unless it exists. */
bool prepare_publication(pgs_migration *m);
/* Builds the indexes and primary key on the targets pgshift created. */
bool prepare_target_indexes(pgs_migration *m);
/* Drops the slot if it exists (interrupted copy, abort). */
bool prepare_drop_slot(pgs_migration *m);
/* Drops the publication if it exists (abort, cleanup). */
bool prepare_drop_publication(pgs_migration *m);

/* ---- copy (src/copy/copy.c) ---- */

/* Copies every table under the exported snapshot with parallel workers.
 * `repl` is the replication connection that exported the snapshot; it is
 * closed (set to NULL) once every worker imported it. */
bool copy_run(pgs_migration *m, const char *snapshot, PGconn **repl);

/* ---- stream and apply (src/repl/stream.c, src/apply/apply.c) ---- */

/* Streams from the slot and applies until stopped by a signal or an error.
 * Returns the process exit code. */
int stream_run(pgs_migration *m);

#endif
