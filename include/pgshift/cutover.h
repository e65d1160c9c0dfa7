/* cutover.h: swapping the tables while the application writes.
 *
 * One attempt, driven by the stream loop (stream.c):
 *   1. cutover_lock: on its own connection, BEGIN; lock the targets in
 *      SHARE UPDATE EXCLUSIVE (keeps VACUUM/ANALYZE off them, does not stop
 *      the applier), then the sources and the tables whose foreign keys
 *      reference them in ACCESS EXCLUSIVE, in a fixed order, under the
 *      plan's lock_timeout. Not granted: roll back, name the blocker.
 *   2. cutover_fence: pg_logical_emit_message(false, 'pgshift_fence', nonce)
 *      under the lock, then a tiny synchronous commit on another connection
 *      so the WAL holding the fence is flushed and the walsender sends it.
 *      Every source write committed before the lock is before the fence.
 *   3. The stream applies up to the fence and commits (stream.c).
 *   4. cutover_swap: dependents handed over (handover_build), source renamed
 *      to <name>_old, target to <name>, migration marked done, COMMIT — one
 *      transaction, so a crash leaves the old world or the new one.
 *   5. cutover_finish (after commit, and again on a rerun until done):
 *      VALIDATE the foreign keys added NOT VALID, ANALYZE the new tables.
 *      The swap records these steps in migrations.cutover as data,
 *      "post_steps": [{"step": "validate", "schema", "table", "constraint"},
 *      {"step": "fk_parent", "schema", "table", "constraint"},
 *      {"step": "partman", "schema", "table", "column", "interval", "premake"},
 *      {"step": "partman_default", "schema", "table"} (partman.h),
 *      {"step": "analyze", "schema", "table"}]; each statement is built from
 *      the names (PQescapeIdentifier) when it runs, one statement per call.
 *      A record of an earlier version ("post": SQL text) is not executed:
 *      cutover_finish refuses it and says what to run by hand.
 *
 * The state database: the swap writes phase `done` in its own transaction,
 * with the renames, so the phase and the table names never disagree. That
 * transaction runs in the tables' database, so it is the state database
 * only because a plan with a separate `target:` database cannot be cut over
 * (handover_build refuses it, and cutover_swap checks it again).
 */
#ifndef PGSHIFT_CUTOVER_H
#define PGSHIFT_CUTOVER_H

#include "pgshift/catalog.h"
#include "pgshift/migration.h"

#include <stdbool.h>
#include <stdio.h>

/* A step after the commit on a foreign key, as names (data). The
 * statement is built from them, identifiers escaped, when it runs:
 * 'v' VALIDATE CONSTRAINT; 'p' (a partitioned table on 17 and older, which
 * cannot take a foreign key NOT VALID) add the key to the table itself,
 * with the definition read then from one of its partitions, which each
 * carry it validated already, so the server attaches theirs without a
 * scan. */
typedef struct handover_fk {
    char kind;
    char *nspname; /* the referencing table's schema */
    char *relname; /* the referencing table */
    char *conname;
} handover_fk;

/* What the cutover does with the objects around one table. Statements in
 * `after` name the table by the source's qualified name, which is the new
 * table once the renames ran. */
typedef struct handover {
    pgs_strlist lock;      /* other tables to lock ACCESS EXCLUSIVE (FK referencing) */
    pgs_strlist after;     /* SQL run after the renames, in order, inside the swap */
    handover_fk *validate; /* after the commit, in order: foreign key steps, from names */
    int nvalidate;
    pgs_strlist notes;    /* "view public.v: re-created to read the new table" */
    pgs_strlist problems; /* why the cutover would refuse, each with its fix */
} handover;

/* Reads the dependents of table t on conn. For SQL that is executed, conn
 * must have search_path = pg_catalog (definitions come out fully
 * qualified). With t->tgt not existing yet (the plan of a created target)
 * only what can be told from the source is listed. False on query failure. */
/* The name the source takes at the swap (in its schema): "<source>_old",
 * or the plan table's rename_to (the reverse migration's swap back gives
 * the live table its name from before the cutover). */
void cutover_old_name(const pgs_mtable *t, char *buf, size_t len);

/* in_swap: conn holds the swap's locks in its transaction (a view on a
 * renamed column is read on the new names there, in a savepoint rolled
 * back; elsewhere the listing only says so). */
bool handover_build(PGconn *conn, pgs_migration *m, pgs_mtable *t, bool in_swap, handover *h);
void handover_free(handover *h);

typedef struct cutover_blocker {
    int pid;
    char application[64];
    char query[200];
    char relation[128];
    char mode[32];
    double xact_age_s;
} cutover_blocker;

typedef struct cutover cutover;

/* Opens the cutover's connections (source database). NULL on failure. */
cutover *cutover_new(pgs_migration *m);
void cutover_free(cutover *c);

/* Problems that make a cutover impossible right now (one line each into
 * `out`, the count returned; -1 on query failure). Logged at most once per
 * distinct text when `log_them`. */
int cutover_check(cutover *c, bool log_them, char *first, size_t firstlen);

/* Step 1. Returns 1 when every lock is held, 0 when lock_timeout expired
 * (rolled back; *blocker says who held it when known), -1 on error. */
int cutover_lock(cutover *c, cutover_blocker *blocker, bool *have_blocker);
/* Step 2. The fence's nonce (NUL-terminated) and LSN. */
bool cutover_fence(cutover *c, char *nonce, size_t noncelen, pgs_lsn *lsn);
/* Step 4. `stats_json` is stored with the migration. Returns 1 committed,
 * 0 a lock (a referencing table) was not granted in time: rolled back,
 * worth retrying, -1 failed (rolled back; err says why). */
int cutover_swap(cutover *c, const char *stats_json, char *err, size_t errlen);
/* Gives up the current attempt: ROLLBACK, locks released. */
void cutover_release(cutover *c);
/* True while the attempt's transaction is open (locks held). */
bool cutover_locked(const cutover *c);

/* Step 5, on its own connection; safe to repeat. */
bool cutover_finish(pgs_migration *m);

/* Test aid: PGSHIFT_TEST_CRASH_AT=<step> kills the process with SIGKILL
 * when it reaches that step (lock, fence, applied, swap, commit, finish). */
void cutover_crash_point(const char *step);

#endif
