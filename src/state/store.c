/* store.c: the state store (store.h). Every statement on schema pgshift
 * lives here, except the apply pipeline's progress row (src/apply/batch.c). */
#include "pgshift/store.h"

#include "pgshift/log.h"
#include "pgshift/pg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const SQL_TABLES =
    "CREATE TABLE IF NOT EXISTS pgshift.migrations ("
    "  name text PRIMARY KEY,"
    "  phase text NOT NULL,"
    "  slot_name text NOT NULL,"
    "  publication_name text NOT NULL,"
    "  consistent_lsn pg_lsn,"
    "  applied_lsn pg_lsn,"
    "  applied_commit_time timestamptz,"
    "  applied_xacts bigint NOT NULL DEFAULT 0,"
    "  applied_changes bigint NOT NULL DEFAULT 0,"
    "  error text,"
    "  stats jsonb,"
    "  started_at timestamptz NOT NULL DEFAULT now(),"
    "  updated_at timestamptz NOT NULL DEFAULT now());"
    "CREATE TABLE IF NOT EXISTS pgshift.tables ("
    "  migration text NOT NULL REFERENCES pgshift.migrations (name) ON DELETE CASCADE,"
    "  ord int NOT NULL,"
    "  source_table text NOT NULL,"
    "  target_table text NOT NULL,"
    "  target_created boolean NOT NULL DEFAULT false,"
    "  rows_estimated bigint NOT NULL DEFAULT 0,"
    "  bytes_estimated bigint NOT NULL DEFAULT 0,"
    "  rows_copied bigint NOT NULL DEFAULT 0,"
    "  bytes_copied bigint NOT NULL DEFAULT 0,"
    "  copy_done boolean NOT NULL DEFAULT false,"
    "  changes_applied bigint NOT NULL DEFAULT 0,"
    "  PRIMARY KEY (migration, ord));"
    "ALTER TABLE pgshift.migrations ADD COLUMN IF NOT EXISTS cutover jsonb,"
    "  ADD COLUMN IF NOT EXISTS cutover_at timestamptz,"
    "  ADD COLUMN IF NOT EXISTS timings jsonb,"
    "  ADD COLUMN IF NOT EXISTS verify jsonb,"
    "  ADD COLUMN IF NOT EXISTS verify_progress jsonb;"
    /* Nobody but pgshift's role reads or writes the state, whatever
     * default privileges say. */
    "REVOKE ALL ON SCHEMA pgshift FROM PUBLIC;"
    "REVOKE ALL ON ALL TABLES IN SCHEMA pgshift FROM PUBLIC";

/* The schema and every relation or function in it whose owner is not
 * current_user: what it is, and who owns it. */
static const char *const SQL_FOREIGN_OWNERS =
    "WITH me AS (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = current_user),"
    " s AS (SELECT oid, nspowner FROM pg_catalog.pg_namespace WHERE nspname = 'pgshift')"
    " SELECT 'schema pgshift', pg_catalog.pg_get_userbyid(s.nspowner) FROM s, me"
    "  WHERE s.nspowner <> me.oid"
    " UNION ALL"
    " SELECT 'relation pgshift.' || c.relname, pg_catalog.pg_get_userbyid(c.relowner)"
    "   FROM pg_catalog.pg_class c, s, me WHERE c.relnamespace = s.oid AND c.relowner <> me.oid"
    " UNION ALL"
    " SELECT 'function pgshift.' || p.proname, pg_catalog.pg_get_userbyid(p.proowner)"
    "   FROM pg_catalog.pg_proc p, s, me WHERE p.pronamespace = s.oid AND p.proowner <> me.oid"
    " ORDER BY 1 LIMIT 1";

/* -1 failure or refused, 0 absent, 1 present and ours. */
int store_check_schema(PGconn *conn)
{
    char *n = pg_query_value(conn, "checking the pgshift state schema",
                             "SELECT count(*) FROM pg_catalog.pg_namespace"
                             " WHERE nspname = 'pgshift'",
                             0, NULL, NULL);
    if (n == NULL)
        return -1;
    bool exists = atoi(n) > 0;
    free(n);
    if (!exists)
        return 0;
    PGresult *r =
        pg_query(conn, "checking who owns the pgshift state schema", SQL_FOREIGN_OWNERS, 0, NULL);
    if (r == NULL)
        return -1;
    int rc = 1;
    if (PQntuples(r) > 0) {
        char *me =
            pg_query_value(conn, "reading the current role", "SELECT current_user", 0, NULL, NULL);
        log_error("%s in the target database belongs to role %s, not to %s (the role pgshift "
                  "connects as); pgshift keeps its state in schema pgshift and writes there with "
                  "its own privileges, so it refuses a schema another role controls; fix: if it "
                  "is the state of a migration run as %s, run pgshift as that role; otherwise "
                  "look at what it holds, then drop it (DROP SCHEMA pgshift CASCADE) or, as a "
                  "superuser, give the schema and everything in it to %s (ALTER ... OWNER TO)",
                  PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 1), me ? me : "current_user",
                  PQgetvalue(r, 0, 1), me ? me : "current_user");
        free(me);
        rc = -1;
    }
    PQclear(r);
    return rc;
}

bool store_ensure_schema(PGconn *conn)
{
    /* Created and checked in one transaction: the owner seen is the owner
     * of the schema the tables go into. */
    if (!pg_exec(conn, "creating the pgshift state schema",
                 "BEGIN; CREATE SCHEMA IF NOT EXISTS pgshift"))
        goto failed;
    if (store_check_schema(conn) != 1)
        goto failed;
    if (!pg_exec(conn, "creating the pgshift state tables", SQL_TABLES))
        goto failed;
    return pg_exec(conn, "creating the pgshift state schema", "COMMIT");
failed:
    if (PQtransactionStatus(conn) != PQTRANS_IDLE)
        pg_exec(conn, "rolling back", "ROLLBACK");
    return false;
}

static bool run(PGconn *conn, const char *what, const char *sql, int n, const char *const *p)
{
    PGresult *r = pg_query(conn, what, sql, n, p);
    PQclear(r);
    return r != NULL;
}

static const char SQL_WRITE_PHASE[] =
    "UPDATE pgshift.migrations SET phase = $2, error = $3, updated_at = now() WHERE name = $1";
static const char SQL_WRITE_STATS[] =
    "UPDATE pgshift.migrations SET stats = $2::jsonb, updated_at = now() WHERE name = $1";

const char *store_sql_write_phase(void)
{
    return SQL_WRITE_PHASE;
}

const char *store_sql_write_stats(void)
{
    return SQL_WRITE_STATS;
}

const char *store_sql_advance_applied(void)
{
    /* Chained to the previous batch's position: if that batch did not
     * commit, this one fails instead of committing past it. */
    return "WITH u AS (UPDATE pgshift.migrations SET applied_lsn = $2::pg_lsn,"
           "    applied_commit_time = to_timestamp($3::float8),"
           "    applied_xacts = applied_xacts + $4, applied_changes = applied_changes + $5,"
           "    updated_at = now() WHERE name = $1 AND applied_lsn = $6::pg_lsn RETURNING 1)"
           " SELECT CASE WHEN count(*) = 1 THEN 1 ELSE ('pgshift: the previous batch (up to '"
           "   || $6 || ') did not commit (' || count(*) || ' progress rows at that"
           " position); not committing past it')::int END FROM u";
}

bool store_write_phase(PGconn *conn, const char *migration, pgs_phase phase, const char *error)
{
    return run(conn, "writing the phase", SQL_WRITE_PHASE, 3,
               (const char *[]){migration, pgs_phase_name(phase), error});
}

bool store_write_stats(PGconn *conn, const char *migration, const char *stats_json)
{
    return run(conn, "writing stats", SQL_WRITE_STATS, 2, (const char *[]){migration, stats_json});
}

bool store_add_copy_progress(PGconn *conn, const char *migration, int ord, int64_t rows,
                             int64_t bytes)
{
    char o[16], r[32], b[32];
    snprintf(o, sizeof o, "%d", ord);
    snprintf(r, sizeof r, "%lld", (long long)rows);
    snprintf(b, sizeof b, "%lld", (long long)bytes);
    return run(conn, "recording copy progress",
               "UPDATE pgshift.tables SET rows_copied = rows_copied + $3,"
               "  bytes_copied = greatest(bytes_copied, $4) WHERE migration = $1 AND ord = $2",
               4, (const char *[]){migration, o, r, b});
}

const char *store_sql_add_table_changes(void)
{
    return "UPDATE pgshift.tables SET changes_applied = changes_applied + $3"
           " WHERE migration = $1 AND ord = $2";
}

bool store_record_swap(PGconn *conn, const char *migration, pgs_phase phase,
                       const char *cutover_json)
{
    return run(conn, "recording the cutover",
               "UPDATE pgshift.migrations SET phase = $2, cutover = $3::jsonb,"
               " cutover_at = now(), updated_at = now(), error = NULL WHERE name = $1",
               3, (const char *[]){migration, pgs_phase_name(phase), cutover_json});
}

char *store_read_cutover(PGconn *conn, const char *migration)
{
    return pg_query_value(conn, "reading the cutover record",
                          "SELECT coalesce(cutover::text, '{}') FROM pgshift.migrations"
                          " WHERE name = $1",
                          1, (const char *[]){migration}, NULL);
}

static const char SQL_MERGE_TIMINGS[] =
    "UPDATE pgshift.migrations SET timings = coalesce(timings, '{}') || $2::jsonb"
    " WHERE name = $1";

const char *store_sql_merge_timings(void)
{
    return SQL_MERGE_TIMINGS;
}

bool store_merge_timings(PGconn *conn, const char *migration, const char *json)
{
    return run(conn, "recording where the time went", SQL_MERGE_TIMINGS, 2,
               (const char *[]){migration, json});
}

bool store_merge_cutover(PGconn *conn, const char *migration, const char *json)
{
    return run(conn, "recording the cutover",
               "UPDATE pgshift.migrations SET cutover = coalesce(cutover, '{}') || $2::jsonb"
               " WHERE name = $1",
               2, (const char *[]){migration, json});
}

bool store_record_verify(PGconn *conn, const char *migration, const char *summary_json,
                         const char *tables_json)
{
    return run(conn, "recording the verify",
               "UPDATE pgshift.migrations SET verify = $2::jsonb || jsonb_build_object('tables',"
               " coalesce(verify->'tables', '{}') || $3::jsonb) WHERE name = $1",
               3, (const char *[]){migration, summary_json, tables_json});
}

bool store_verify_progress(PGconn *conn, const char *migration, const char *json)
{
    return run(conn, "recording the verify's progress",
               "UPDATE pgshift.migrations SET verify_progress = $2::jsonb WHERE name = $1", 2,
               (const char *[]){migration, json});
}

char *store_read_verify_progress(PGconn *conn, const char *migration)
{
    return pg_query_value(conn, "reading the verify's progress",
                          "SELECT coalesce((SELECT verify_progress::text FROM pgshift.migrations"
                          " WHERE name = $1), '')",
                          1, (const char *[]){migration}, NULL);
}

char *store_verify_gate(PGconn *conn, const char *migration, const char *tables_array)
{
    char *v = pg_query_value(
        conn, "reading the last verify",
        "SELECT coalesce((SELECT t.name FROM unnest($2::text[]) WITH ORDINALITY t(name, i)"
        " WHERE NOT EXISTS (SELECT 1 FROM pgshift.migrations g,"
        "   jsonb_each(coalesce(g.verify->'tables', '{}')) e(k, v)"
        "   WHERE g.name = $1 AND e.k = t.name AND (e.v->>'identical')::bool"
        "   AND (e.v->>'consistent')::bool"
        "   AND NULLIF(e.v->>'lsn', '')::pg_lsn >= g.consistent_lsn)"
        " ORDER BY t.i LIMIT 1), '')",
        2, (const char *[]){migration, tables_array}, NULL);
    return v;
}

static bool column(PGresult *r, int col, pgs_strlist *out)
{
    for (int i = 0; i < PQntuples(r); i++)
        if (!strlist_push(out, PQgetvalue(r, i, col)))
            return false;
    return true;
}

bool store_created_targets(PGconn *conn, const char *migration, pgs_strlist *out)
{
    PGresult *r = pg_query(conn, "reading the targets pgshift created",
                           "SELECT target_table FROM pgshift.tables"
                           " WHERE migration = $1 AND target_created ORDER BY ord",
                           1, (const char *[]){migration});
    if (r == NULL)
        return false;
    bool ok = column(r, 0, out);
    PQclear(r);
    return ok;
}

bool store_old_tables(PGconn *conn, const char *migration, pgs_strlist *schemas,
                      pgs_strlist *tables, pgs_strlist *exists)
{
    PGresult *r = pg_query(
        conn, "reading the old tables",
        "SELECT s, t, EXISTS (SELECT 1 FROM pg_catalog.pg_class c"
        "   JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
        "  WHERE n.nspname = s AND c.relname = t) FROM ("
        " SELECT e->>'schema' AS s, e->>'table' AS t, o AS ord"
        "   FROM pgshift.migrations m, jsonb_array_elements(m.cutover->'old') WITH ORDINALITY"
        "        x(e, o) WHERE m.name = $1"
        " UNION ALL"
        " SELECT p[1], p[2], o FROM pgshift.migrations m,"
        "        jsonb_array_elements_text(m.cutover->'old_tables') WITH ORDINALITY x(q, o),"
        "        parse_ident(q) p"
        "  WHERE m.name = $1 AND NOT m.cutover ? 'old' AND cardinality(p) = 2) y"
        " WHERE s IS NOT NULL AND t IS NOT NULL ORDER BY ord",
        1, (const char *[]){migration});
    if (r == NULL)
        return false;
    bool ok = column(r, 0, schemas) && column(r, 1, tables) && column(r, 2, exists);
    PQclear(r);
    return ok;
}

/* ---- reads for `pgshift status` and the end of `run` ---- */

static const char *const SQL_READ_STATUS =
    "SELECT m.phase, coalesce(m.error, ''), coalesce(m.applied_lsn::text, ''),"
    "  pg_current_wal_lsn()::text,"
    "  greatest(0, pg_current_wal_lsn() - greatest(m.applied_lsn, s.confirmed_flush_lsn)),"
    "  coalesce(extract(epoch FROM now() - m.applied_commit_time), 0),"
    "  m.applied_xacts, m.applied_changes, coalesce(m.stats::text, '{}'),"
    "  s.active, pg_current_wal_lsn() - s.restart_lsn, s.wal_status,"
    "  extract(epoch FROM now() - m.updated_at),"
    "  coalesce((to_jsonb(m)->'cutover')::text, ''), coalesce(to_jsonb(m)->>'cutover_at', ''),"
    "  coalesce(s.confirmed_flush_lsn::text, ''), s.safe_wal_size,"
    "  coalesce((extract(epoch FROM (to_jsonb(m)->>'cutover_at')::timestamptz) * 1000)::bigint, 0),"
    "  coalesce((to_jsonb(m)->'timings')::text, ''),"
    "  coalesce((to_jsonb(m)->'verify')::text, '')"
    " FROM pgshift.migrations m LEFT JOIN pg_replication_slots s ON s.slot_name = m.slot_name"
    " WHERE m.name = $1";

static const char *const SQL_READ_TABLES =
    "SELECT source_table, target_table, rows_copied, rows_estimated,"
    "  bytes_copied, bytes_estimated, copy_done, changes_applied"
    " FROM pgshift.tables WHERE migration = $1 ORDER BY ord";

PGresult *store_read_status(PGconn *conn, const char *migration)
{
    return pg_query(conn, "reading the status", SQL_READ_STATUS, 1, (const char *[]){migration});
}

PGresult *store_read_tables(PGconn *conn, const char *migration)
{
    return pg_query(conn, "reading the table status", SQL_READ_TABLES, 1,
                    (const char *[]){migration});
}

PGresult *store_read_cutover_summary(PGconn *conn, const char *migration)
{
    return pg_query(conn, "reading the cutover record",
                    "SELECT round((cutover->>'write_block_ms')::numeric), "
                    "  (SELECT string_agg(x, ', ') FROM jsonb_array_elements_text("
                    "     cutover->'old_tables') x), cutover_at"
                    " FROM pgshift.migrations WHERE name = $1",
                    1, (const char *[]){migration});
}
