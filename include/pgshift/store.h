/* store.h: the state store, every statement on schema pgshift
 * (src/state/store.c) except the apply pipeline's progress row, which must
 * commit in the batch's own transaction (src/apply/batch.c).
 *
 * The connection is always one to the state database, the target database
 * of the plan (m->tgt), or a transaction of the caller's on that database
 * where a function says so. Names, LSNs and JSON are data: they go as query
 * parameters; identifiers are never built from them here.
 *
 * Schema safety: pgshift keeps its state in schema `pgshift` and writes
 * there with its own role's privileges, so a schema (or an object in it)
 * that another role owns could hold whatever that role planted (a trigger,
 * a function shadowing one pgshift calls): the CVE-2022-2625 class. The
 * store refuses such a schema, and creates its own with no PUBLIC access. */
#ifndef PGSHIFT_STORE_H
#define PGSHIFT_STORE_H

#include "pgshift/catalog.h"
#include "pgshift/phase.h"

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>

/* 1 schema pgshift exists and it and everything in it belong to
 * current_user; 0 it does not exist; -1 failure, or a schema or object of
 * another role (logged, naming the owner and the fix). */
int store_check_schema(PGconn *conn);
/* Creates schema pgshift and its tables unless they exist, refusing one
 * another role owns (as store_check_schema), and revokes every PUBLIC
 * privilege on the schema and its tables. One transaction. */
bool store_ensure_schema(PGconn *conn);

/* migrations.phase (and .error: NULL clears it). */
bool store_write_phase(PGconn *conn, const char *migration, pgs_phase phase, const char *error);
/* migrations.stats, a JSON object (the stream's last sample). */
bool store_write_stats(PGconn *conn, const char *migration, const char *stats_json);
/* tables.rows_copied += rows, bytes_copied = max(bytes_copied, bytes):
 * inside the copy worker's transaction on `conn`, committed with the rows. */
bool store_add_copy_progress(PGconn *conn, const char *migration, int ord, int64_t rows,
                             int64_t bytes);

/* The same statements as text, for the event loop, which sends them through
 * the apply pipeline (it must not wait on a blocking call): phase ($1
 * migration, $2 phase name, $3 error) and stats ($1 migration, $2 JSON). */
const char *store_sql_write_phase(void);
const char *store_sql_write_stats(void);
/* The batch's progress row, inside the batch's transaction: applied_lsn =
 * $2 (the end LSN of its last source commit), applied_commit_time =
 * to_timestamp($3), applied_xacts += $4, applied_changes += $5, for
 * migration $1 whose applied_lsn is still $6 (the previous batch's end);
 * raises an error otherwise, so a batch never commits past one that failed. */
const char *store_sql_advance_applied(void);

/* The statement apply.c sends in its pipeline, inside the batch's
 * transaction (so it cannot be a blocking call here): tables.changes_applied
 * += $3 WHERE migration = $1 AND ord = $2. */
const char *store_sql_add_table_changes(void);

/* The swap's state write, inside the swap transaction on `conn` (which is
 * therefore the state database: see cutover.c): phase, the cutover record
 * (JSON object), cutover_at. */
bool store_record_swap(PGconn *conn, const char *migration, pgs_phase phase,
                       const char *cutover_json);
/* migrations.cutover as JSON text, malloc'd ("{}" when none); NULL on
 * failure or no row (logged). */
char *store_read_cutover(PGconn *conn, const char *migration);
/* cutover = cutover || json (a JSON object). */
bool store_merge_cutover(PGconn *conn, const char *migration, const char *json);
/* migrations.timings = timings || json ($1 name, $2 json) */
const char *store_sql_merge_timings(void);
bool store_merge_timings(PGconn *conn, const char *migration, const char *json);

/* The last `pgshift verify`: migrations.verify = summary (a JSON object:
 * at, lsn, consistent, identical, ...) with its "tables" merged with
 * tables_json (an object: source table -> {lsn, consistent, identical,
 * missing, extra, different, ...}), so a verify of one table keeps the
 * others' results. */
bool store_record_verify(PGconn *conn, const char *migration, const char *summary_json,
                         const char *tables_json);
/* migrations.verify_progress: where an interrupted verify resumes (JSON;
 * NULL clears it). The read gives "" when there is none; NULL on failure. */
bool store_verify_progress(PGconn *conn, const char *migration, const char *json);
char *store_read_verify_progress(PGconn *conn, const char *migration);
/* cutover.verify: the first of `tables_array` (a text[] literal of source
 * tables as verify names them) with no identical, consistent verify at or
 * after the copy's consistent point, malloc'd; "" when every one has one;
 * NULL on failure (logged). */
char *store_verify_gate(PGconn *conn, const char *migration, const char *tables_array);

/* The targets pgshift created, as recorded when the copy began
 * (tables.target_table, quoted qualified names). */
bool store_created_targets(PGconn *conn, const char *migration, pgs_strlist *out);
/* The old tables the cutover left (<table>_old): schema and name as data,
 * one pair per index of `schemas` and `tables`, and whether each exists.
 * Reads the record of this version ("old": [{"schema", "table"}]) and of
 * earlier ones ("old_tables": quoted qualified names, parsed by
 * parse_ident, never executed). */
bool store_old_tables(PGconn *conn, const char *migration, pgs_strlist *schemas,
                      pgs_strlist *tables, pgs_strlist *exists);

/* Reads for `pgshift status` (its columns are read by position in
 * cmd_status.c: phase, error, applied LSN, the source's position, lag,
 * seconds behind, counts, stats JSON, slot activity and health, age,
 * cutover record, cutover time, confirmed LSN, safe size, cutover time in
 * ms) and the table rows in plan order; and the summary `run` prints after
 * the cutover (write-blocking ms, old tables, cutover time). The caller
 * PQclear()s; NULL on failure (logged). */
PGresult *store_read_status(PGconn *conn, const char *migration);
PGresult *store_read_tables(PGconn *conn, const char *migration);
PGresult *store_read_cutover_summary(PGconn *conn, const char *migration);

#endif
