/* state.h: the migration's state in schema pgshift of the target database (src/state/state.c; every
 * other statement on the schema is in store.h). */
#ifndef PGSHIFT_STATE_H
#define PGSHIFT_STATE_H

#include "pgshift/migration.h"

#include <stdbool.h>

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
/* Records one of m->timings ("copy_s", "index_build_s", "backlog_s",
 * "ready_s", "cutover_s", "after_swap_s") in memory and in
 * migrations.timings; a failed write is logged, not fatal. */
void state_set_timing(pgs_migration *m, const char *key, double seconds);
/* The same in memory only, and the JSON to merge (store_sql_merge_timings):
 * for the engine, whose writes go through the applier, in order with its
 * batches (a batch may hold the migration's row). */
void state_timing_json(pgs_migration *m, const char *key, double seconds, char *json, size_t len);
/* "copy 9.6 s, index build 3.9 s, ..." for the timings reached; its
 * length (0: none). */
size_t timings_text(const pgs_timings *t, char *buf, size_t len);
/* The timings of a migrations.timings JSON text (unknown keys ignored). */
void timings_parse(const char *json, pgs_timings *t);
/* The summary of a migrations.verify JSON text (v->has false when none). */
void verify_info_parse(const char *json, pgs_verify_info *v);
/* migrations.cutover = cutover || json (after the swap: timings). */
bool state_merge_cutover(pgs_migration *m, const char *json);
/* migrations.cutover as JSON text, malloc'd; NULL on failure (logged). */
char *state_read_cutover(pgs_migration *m);
bool state_set_consistent_lsn(pgs_migration *m, pgs_lsn lsn);
bool state_copy_done(pgs_migration *m);
/* Holds a session advisory lock for this migration on m->tgt so that a
 * second `run` of the same plan refuses to start. */
bool state_lock(pgs_migration *m);
/* Every session that writes the tables or the progress of state row `row`
 * (the applier's, the copy's, the swap's) holds this shared lock for its
 * life, on its own connection to the database that holds the row. */
bool state_writer_lock(PGconn *conn, const char *row);
/* Before the state row `m->row` is read to resume: waits until no session
 * of an earlier run still holds the writer lock in m->tgt's database. A
 * killed run's backend goes on with what it was sent (a pipelined batch, a
 * COMMIT) until it notices its client is gone; had its commit landed after
 * the row was read, the rerun would apply that batch a second time. After
 * EARLIER_WRITERS_WAIT_S such sessions are terminated (their open
 * transactions roll back whole) and waited for again. */
bool state_earlier_writers_gone(pgs_migration *m);
/* Drops the whole state of this migration (abort). */
bool state_delete(pgs_migration *m);

#endif
