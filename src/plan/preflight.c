/* preflight.c: every check `run` needs before it changes anything, printed
 * as a report (the dry run of `pgshift plan`). Each blocking finding names
 * the setting, table or column and the fix, on one line. */
#include "pgshift/migration.h"

#include "pgshift/cutover.h"
#include "pgshift/log.h"
#include "pgshift/partman.h"
#include "pgshift/pg.h"
#include "pgshift/preflight.h"
#include "pgshift/prepare.h"
#include "preflight_int.h"
#include "prepare_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void preflight_say(report *r, const char *tag, const char *fmt, ...)
{
    if (strcmp(tag, "BLOCK") == 0)
        r->blocking++;
    else if (strcmp(tag, "warn") == 0)
        r->warnings++;
    fprintf(r->out, "  %-6s ", tag);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(r->out, fmt, ap);
    va_end(ap);
    fputc('\n', r->out);
}

/* How far `table`'s partitions reach (`hi`, `days` from now) and what
 * happens to a row past that. */
static void say_horizon(report *r, const char *table, const char *hi, long days, bool dflt)
{
    if (dflt)
        say(r, "ok", "partitions of %s reach %s; later rows go to its DEFAULT partition", table,
            hi);
    else if (days < 0)
        say(r, "warn",
            "the last partition of %s ended at %s, %ld days ago: a row written now has no "
            "partition and stops the apply (after the cutover, the application's insert fails); "
            "fix: create the partitions up to now and ahead (pg_partman, or a scheduled job), or "
            "a DEFAULT partition",
            table, hi, -days);
    else if (days < 30)
        say(r, "warn",
            "the last partition of %s ends at %s, in %ld days: after that a row has no "
            "partition (the apply stops; after the cutover the application's insert fails); fix: "
            "create partitions ahead (pg_partman, or a scheduled job), or a DEFAULT partition",
            table, hi, days);
    else
        say(r, "ok",
            "partitions of %s reach %s (%ld days ahead); create more before then (pg_partman, "
            "or a scheduled job)",
            table, hi, days);
}

static void human_bytes(int64_t b, char *buf, size_t len)
{
    const char *units[] = {"bytes", "kB", "MB", "GB", "TB"};
    double v = (double)b;
    int u = 0;
    while (v >= 1024 && u < 4) {
        v /= 1024;
        u++;
    }
    snprintf(buf, len, u ? "%.1f %s" : "%.0f %s", v, units[u]);
}

static bool check_server(pgs_migration *m, report *r)
{
    fprintf(r->out, "Server\n");
    PGresult *res = pg_query(m->src, "preflight",
                             "SELECT current_setting('server_version_num')::int,"
                             "  current_setting('wal_level'),"
                             "  current_setting('max_replication_slots')::int,"
                             "  (SELECT count(*) FROM pg_replication_slots),"
                             "  (SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1),"
                             "  current_setting('max_wal_senders')::int,"
                             "  (SELECT count(*) FROM pg_stat_replication),"
                             "  r.rolname, r.rolsuper, r.rolreplication,"
                             "  has_database_privilege(current_database(), 'CREATE'),"
                             "  current_database(),"
                             "  (extract(epoch FROM current_setting('deadlock_timeout')::interval)"
                             "    * 1000)::int"
                             " FROM pg_roles r WHERE r.rolname = current_user",
                             1, (const char *[]){m->slot});
    if (res == NULL)
        return false;
    int version = atoi(PQgetvalue(res, 0, 0));
    const char *wal_level = PQgetvalue(res, 0, 1);
    int max_slots = atoi(PQgetvalue(res, 0, 2));
    int used_slots = atoi(PQgetvalue(res, 0, 3));
    bool our_slot = atoi(PQgetvalue(res, 0, 4)) > 0;
    int max_senders = atoi(PQgetvalue(res, 0, 5));
    int used_senders = atoi(PQgetvalue(res, 0, 6));
    const char *role = PQgetvalue(res, 0, 7);
    bool super = PQgetvalue(res, 0, 8)[0] == 't';
    bool repl = PQgetvalue(res, 0, 9)[0] == 't';
    bool can_create = PQgetvalue(res, 0, 10)[0] == 't';

    if (version < 140000)
        say(r, "BLOCK", "server version %d: pgshift needs PostgreSQL 14 or later (15 tested)",
            version);
    else
        say(r, "ok", "PostgreSQL %d.%d", version / 10000, version % 10000);
    if (strcmp(wal_level, "logical") != 0)
        say(r, "BLOCK",
            "wal_level is %s; fix: ALTER SYSTEM SET wal_level = logical, then restart the server",
            wal_level);
    else
        say(r, "ok", "wal_level = logical");
    if (!our_slot && used_slots >= max_slots)
        say(r, "BLOCK",
            "max_replication_slots = %d and all are in use; fix: raise max_replication_slots "
            "(restart) or drop an unused slot",
            max_slots);
    else
        say(r, "ok", "replication slots: %d of %d in use%s", used_slots, max_slots,
            our_slot ? " (one is this migration's)" : "");
    if (used_senders >= max_senders)
        say(r, "BLOCK",
            "max_wal_senders = %d and all are in use; fix: raise max_wal_senders (restart)",
            max_senders);
    else
        say(r, "ok", "WAL senders: %d of %d in use", used_senders, max_senders);
    if (!super && !repl)
        say(r, "BLOCK",
            "role %s may not replicate; fix: ALTER ROLE %s REPLICATION (or run as a superuser)",
            role, role);
    else
        say(r, "ok", "role %s may replicate%s", role, super ? " (superuser)" : "");
    if (!super && !can_create)
        say(r, "BLOCK",
            "role %s may not create the publication and the pgshift schema in database %s; "
            "fix: GRANT CREATE ON DATABASE %s TO %s",
            role, PQgetvalue(res, 0, 11), PQgetvalue(res, 0, 11), role);
    /* A cutover waiting for its lock longer than deadlock_timeout lets the
     * deadlock checker fail an application transaction instead of it. */
    int deadlock_ms = atoi(PQgetvalue(res, 0, 12));
    if (m->plan->cutover.lock_timeout_ms >= deadlock_ms)
        say(r, "warn",
            "cutover.lock_timeout (%d ms) is not under deadlock_timeout (%d ms): a cutover "
            "waiting for its lock could make an application transaction fail with a deadlock "
            "error; fix: lower cutover.lock_timeout",
            m->plan->cutover.lock_timeout_ms, deadlock_ms);
    else
        say(r, "ok", "cutover.lock_timeout %d ms, under deadlock_timeout (%d ms)",
            m->plan->cutover.lock_timeout_ms, deadlock_ms);
    PQclear(res);
    return true;
}

/* What invalidates the slot while nothing reads it (a pause, a stop, a
 * reconnect) or while the catch-up falls behind: max_slot_wal_keep_size
 * and, on 18, idle_replication_slot_timeout. The migration then has to
 * start over. */
static bool check_slot_limits(pgs_migration *m, report *r)
{
    PGresult *res =
        pg_query(m->src, "preflight",
                 "SELECT current_setting('max_slot_wal_keep_size'),"
                 "  current_setting('idle_replication_slot_timeout', true),"
                 "  (SELECT setting FROM pg_settings WHERE name = 'idle_replication_slot_timeout')",
                 0, NULL);
    if (res == NULL)
        return false;
    const char *keep = PQgetvalue(res, 0, 0);
    if (strcmp(keep, "-1") == 0)
        say(r, "note",
            "max_slot_wal_keep_size is unlimited: a stalled migration holds WAL until "
            "`pgshift abort` drops its slot");
    else
        say(r, "note",
            "max_slot_wal_keep_size = %s: a slot further behind (a long pause or stop, a slow "
            "catch-up) is invalidated, and the migration then has to start over",
            keep);
    if (!PQgetisnull(res, 0, 2) && strcmp(PQgetvalue(res, 0, 2), "0") != 0)
        say(r, "warn",
            "idle_replication_slot_timeout = %s: a migration paused (`pgshift pause`), stopped "
            "or disconnected longer than that loses its slot at the next checkpoint and has to "
            "start over; fix: resume within it, or raise it (ALTER SYSTEM SET "
            "idle_replication_slot_timeout = '7d'; SELECT pg_reload_conf())",
            PQgetvalue(res, 0, 1));
    else if (!PQgetisnull(res, 0, 2))
        say(r, "ok", "idle_replication_slot_timeout = 0: a paused migration keeps its slot");
    PQclear(res);
    return true;
}

static const char *const SQL_STANDBYS =
    "SELECT current_setting('server_version_num')::int,"
    /* physical walsenders: not connected to a database, not a base backup */
    "  (SELECT count(*) FROM pg_stat_replication r JOIN pg_stat_activity a ON a.pid = r.pid"
    "    WHERE a.datname IS NULL AND r.state IS DISTINCT FROM 'backup'),"
    "  (SELECT string_agg(slot_name, ',' ORDER BY slot_name) FROM pg_replication_slots"
    "    WHERE slot_type = 'physical'),"
    "  current_setting('synchronized_standby_slots', true),"
    "  (SELECT to_jsonb(s)->>'failover' FROM pg_replication_slots s WHERE slot_name = $1)";

/* 17+: the slot is created with FAILOVER; it survives a failover only to a
 * standby that synchronizes slots, and is safe only when the primary holds
 * logical decoding back for that standby (synchronized_standby_slots).
 * Before 17 a failover always loses it. */
static bool check_failover(pgs_migration *m, report *r)
{
    PGresult *res = pg_query(m->src, "preflight", SQL_STANDBYS, 1, (const char *[]){m->slot});
    if (res == NULL)
        return false;
    int version = atoi(PQgetvalue(res, 0, 0));
    int standbys = atoi(PQgetvalue(res, 0, 1));
    const char *phys = PQgetisnull(res, 0, 2) ? NULL : PQgetvalue(res, 0, 2);
    const char *sync = PQgetisnull(res, 0, 3) ? "" : PQgetvalue(res, 0, 3);
    char seen[300];
    snprintf(seen, sizeof seen, "%d connected, physical slots: %s", standbys, phys ? phys : "none");
    if (version < 170000) {
        if (standbys > 0 || phys)
            say(r, "warn",
                "the source has physical standbys (%s): PostgreSQL %d cannot carry a logical slot "
                "over a failover, so after one pgshift stops (slot lost) and the migration has to "
                "start over; PostgreSQL 17 and later can",
                seen, version / 10000);
    } else if (!PQgetisnull(res, 0, 4) && strcmp(PQgetvalue(res, 0, 4), "false") == 0) {
        say(r, "warn",
            "slot %s was created without FAILOVER: a failover loses it; fix: on a replication "
            "connection to the source (replication=database), ALTER_REPLICATION_SLOT %s "
            "(FAILOVER true)",
            m->slot, m->slot);
    } else if (*sync == '\0' && (standbys > 0 || phys)) {
        say(r, "warn",
            "the source has physical standbys (%s) but synchronized_standby_slots is empty: a "
            "failover could lose slot %s or leave it ahead of the standby (changes applied that "
            "the new primary never had); fix: on the primary, ALTER SYSTEM SET "
            "synchronized_standby_slots = '%s' and SELECT pg_reload_conf(); on each standby, "
            "primary_slot_name = its physical slot, sync_replication_slots = on, "
            "hot_standby_feedback = on and dbname in primary_conninfo",
            seen, m->slot, phys ? phys : "<each standby's physical slot>");
    } else if (*sync) {
        say(r, "ok",
            "synchronized_standby_slots = '%s': slot %s (FAILOVER) is synchronized to those "
            "standbys (with sync_replication_slots = on) and never ahead of them",
            sync, m->slot);
    } else {
        say(r, "note",
            "slot %s is created with FAILOVER: a standby with sync_replication_slots = on, "
            "listed in synchronized_standby_slots, can take it over in a failover",
            m->slot);
    }
    /* The target fails over with the source: pgshift confirms only what the
     * standbys in synchronized_standby_slots have flushed (apply: the
     * standby flush cap), so the new primary's slot is never past what its
     * target holds. */
    if (version >= 170000 && m->plan->target == NULL && (standbys > 0 || phys))
        say(r, "note",
            "the target is in the source database: pgshift confirms to the slot only the target "
            "commits that the standbys in synchronized_standby_slots have flushed, so after a "
            "failover to one of them the interrupted `pgshift run` resumes (run it again)");
    PQclear(res);
    return true;
}

/* Columns: names, types, nullability. */
static void check_columns(pgs_migration *m, pgs_mtable *t, report *r)
{
    for (int i = 0; i < t->cols.n; i++) {
        const pgs_column *s = catalog_column(&t->src, t->cols.v[i]);
        const pgs_column *d = catalog_column(&t->tgt, t->cols.v[i]);
        /* The fixes are SQL to paste: quote the column name. */
        char *qcol = pg_ident(m->tgt, s->name);
        const char *col = qcol ? qcol : s->name;
        if (d == NULL) {
            say(r, "BLOCK", "target %s has no column \"%s\"; fix: ALTER TABLE %s ADD COLUMN %s %s",
                t->tgt.qname, s->name, t->tgt.qname, col, s->type);
            free(qcol);
            continue;
        }
        if (strcmp(s->type, d->type) != 0)
            say(r, "BLOCK",
                "column \"%s\": target %s has type %s, source has %s; fix: ALTER TABLE %s ALTER "
                "COLUMN %s TYPE %s",
                s->name, t->tgt.qname, d->type, s->type, t->tgt.qname, col, s->type);
        if (d->generated)
            say(r, "BLOCK",
                "column \"%s\" is generated on target %s but not on the source: it cannot "
                "receive the source's values",
                s->name, t->tgt.qname);
        if (d->identity == 'a')
            say(r, "BLOCK",
                "column \"%s\" of target %s is GENERATED ALWAYS AS IDENTITY, which refuses the "
                "source's values; fix: ALTER TABLE %s ALTER COLUMN %s SET GENERATED BY DEFAULT "
                "(the cutover makes it ALWAYS again when the source's is)",
                s->name, t->tgt.qname, t->tgt.qname, col);
        if (d->notnull && !s->notnull)
            say(r, "BLOCK",
                "column \"%s\" is NOT NULL on target %s but nullable on the source; fix: ALTER "
                "TABLE %s ALTER COLUMN %s DROP NOT NULL",
                s->name, t->tgt.qname, t->tgt.qname, col);
        else if (!d->notnull && s->notnull)
            say(r, "note", "column \"%s\" is nullable on the target, NOT NULL on the source",
                s->name);
        free(qcol);
    }
    for (int i = 0; i < t->tgt.ncols; i++) {
        const pgs_column *d = &t->tgt.cols[i];
        if (strlist_contains(&t->cols, d->name))
            continue;
        const pgs_column *s = catalog_column(&t->src, d->name);
        if (s && s->generated) {
            if (!d->generated)
                say(r, "warn",
                    "column \"%s\" is generated on the source but not on the target: it will "
                    "stay NULL there",
                    d->name);
            continue;
        }
        if (d->notnull && !d->has_default && !d->generated && !d->identity)
            say(r, "BLOCK",
                "target %s has column \"%s\" NOT NULL without default that the source lacks; "
                "fix: give it a default or drop it",
                t->tgt.qname, d->name);
        else
            say(r, "note", "target column \"%s\" is not in the source: it gets its default",
                d->name);
    }
}

/* Rows of the source that no leaf partition of the (existing) target accepts. */
/* rollback.window: after the cutover the reverse stream writes every
 * column of the new table into the old one, which must have each. */
static void check_rollback_columns(pgs_mtable *t, report *r)
{
    for (int i = 0; i < t->tgt.ncols; i++) {
        const pgs_column *d = &t->tgt.cols[i];
        if (d->generated || catalog_column(&t->src, d->name) != NULL)
            continue;
        say(r, "BLOCK",
            "rollback.window: column \"%s\" of target %s has no place in %s, so the reverse "
            "stream could not write it back after the cutover; fix: add it to the source, drop "
            "it from the target, or leave out rollback.window",
            d->name, t->tgt.qname, t->src.qname);
    }
}

static void check_partition_coverage(pgs_migration *m, pgs_mtable *t, report *r)
{
    char oid[16];
    snprintf(oid, sizeof oid, "%u", t->tgt.oid);
    PGresult *res =
        pg_query(m->tgt, "preflight",
                 "SELECT coalesce(string_agg('(' || pg_get_partition_constraintdef(relid) ||"
                 "  ')', ' OR '), 'false'),"
                 "  bool_or(pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT'), count(*)"
                 " FROM pg_partition_tree($1::oid) pt JOIN pg_class c ON c.oid = pt.relid"
                 " WHERE pt.isleaf AND pt.level > 0",
                 1, (const char *[]){oid});
    if (res == NULL) {
        r->blocking++;
        return;
    }
    bool has_default = PQgetvalue(res, 0, 1)[0] == 't';
    int leaves = atoi(PQgetvalue(res, 0, 2));
    if (has_default) {
        say(r, "ok", "target has %d partitions including a DEFAULT one: every row has a home",
            leaves);
        PQclear(res);
        return;
    }
    char *sql = NULL;
    if (asprintf(&sql, "SELECT count(*) FROM %s WHERE NOT coalesce(%s, false)", t->src.qname,
                 PQgetvalue(res, 0, 0)) < 0) {
        PQclear(res);
        r->blocking++;
        return;
    }
    PQclear(res);
    char *n = pg_query_value(m->src, "counting rows without a partition", sql, 0, NULL, NULL);
    free(sql);
    if (n == NULL) {
        r->blocking++;
        return;
    }
    if (strcmp(n, "0") != 0)
        say(r, "BLOCK",
            "%s rows of %s have no partition in %s (%d partitions, no DEFAULT); fix: create the "
            "missing partitions or a DEFAULT partition",
            n, t->src.qname, t->tgt.qname, leaves);
    else
        say(r, "ok", "every existing row has a partition (%d partitions)", leaves);
    free(n);
}

/* "PARTITION BY HASH (id), 4 partitions (MODULUS 4), with a DEFAULT
 * partition": one level of a spec, for the plan's report. */
static void spec_desc(const pgs_partition_spec *sp, char *out, size_t n)
{
    int ngroups = 0;
    for (char ***g = sp->values; g && *g; g++)
        ngroups++;
    char how[96] = "";
    if (sp->method == PGS_PARTITION_HASH)
        snprintf(how, sizeof how, ", %d partitions (MODULUS %d)", sp->modulus, sp->modulus);
    else if (sp->method == PGS_PARTITION_LIST && ngroups)
        snprintf(how, sizeof how, ", %d partitions of the listed values", ngroups);
    else if (sp->method == PGS_PARTITION_LIST)
        snprintf(how, sizeof how, ", one partition per value found");
    else if (sp->interval)
        snprintf(how, sizeof how, ", one partition per %s", sp->interval);
    snprintf(out, n, "PARTITION BY %s (%s)%s%s",
             sp->method == PGS_PARTITION_LIST   ? "LIST"
             : sp->method == PGS_PARTITION_HASH ? "HASH"
                                                : "RANGE",
             sp->column, how, sp->with_default ? ", with a DEFAULT partition" : "");
}

/* How many partitions the spec makes for the existing rows (plus `ahead`):
 * more than PGS_MAX_PARTITIONS is refused here, before anything is created. */
static void check_partition_count(pgs_migration *m, pgs_mtable *t, const pgs_partition_spec *sp,
                                  const char *kp, const pgs_column *c, bool timeish, report *r)
{
    char *col = pg_ident(m->src, c->name);
    char *sql = NULL;
    char ahead[16];
    snprintf(ahead, sizeof ahead, "%d", sp->ahead);
    int ok =
        col ? (timeish ? asprintf(&sql,
                                  "SELECT coalesce(ceil(extract(epoch FROM max(%s)::timestamptz"
                                  " - min(%s)::timestamptz) / extract(epoch FROM $1::interval)),"
                                  " 0) + $2::int + 1 FROM %s",
                                  col, col, t->src.qname)
                       : asprintf(&sql,
                                  "SELECT coalesce(ceil((max(%s) - min(%s))::numeric"
                                  " / $1::bigint), 0) + $2::int + 1 FROM %s",
                                  col, col, t->src.qname))
            : -1;
    free(col);
    if (ok < 0)
        return;
    char *n = pg_query_value(m->src, "counting the partitions of the spec", sql, 2,
                             (const char *[]){sp->interval, ahead}, NULL);
    free(sql);
    if (n && atof(n) > PGS_MAX_PARTITIONS)
        say(r, "BLOCK",
            "%s.interval \"%s\" would make about %.0f partitions for the existing rows of "
            "%s (at most %d); fix: choose a larger interval",
            kp, sp->interval, atof(n), t->src.qname, PGS_MAX_PARTITIONS);
    else if (n)
        say(r, "ok", "about %.0f partitions of %s", atof(n), sp->interval);
    free(n);
}

/* Partition spec: the column exists and has a type we can range over;
 * rows with a NULL key need a DEFAULT partition. */
/* A list spec: with values, every existing row has a partition (or a
 * DEFAULT one takes it); without, the values found make one partition
 * each, within PGS_MAX_PARTITIONS. */
static void check_list_spec(pgs_migration *m, pgs_mtable *t, const pgs_partition_spec *sp,
                            const char *kp, const pgs_column *c, report *r)
{
    char *col = pg_ident(m->src, c->name);
    char *sql = NULL;
    if (col == NULL)
        return;
    if (sp->values == NULL) {
        if (asprintf(&sql, "SELECT count(DISTINCT %s) + bool_or(%s IS NULL)::int FROM %s", col, col,
                     t->src.qname) >= 0) {
            char *n = pg_query_value(m->src, "counting the partition column's values", sql, 0, NULL,
                                     NULL);
            if (n && atoi(n) > PGS_MAX_PARTITIONS)
                say(r, "BLOCK",
                    "partition column \"%s\" has %s distinct values, more than %d partitions; "
                    "fix: list the partitions' values with `values:`, or use hash partitioning",
                    c->name, n, PGS_MAX_PARTITIONS);
            else if (n)
                say(r, "ok", "one partition per value of \"%s\" found: %s", c->name,
                    n[0] ? n : "0");
            free(n);
        }
        if (!sp->with_default)
            say(r, "warn",
                "a value of \"%s\" that no row has yet, written during the migration, has no "
                "partition and stops the apply; fix: add `default: true`",
                c->name);
        free(sql);
        free(col);
        return;
    }
    if (sp->with_default) {
        free(col);
        return;
    }
    /* Rows whose value no partition lists: the values cast to the column's type. */
    int nv = 0;
    for (char ***g = sp->values; *g; g++)
        for (char **v = *g; *v; v++)
            nv++;
    const char **vals = calloc((size_t)nv + 1, sizeof *vals);
    char *list = strdup("");
    int k = 0;
    for (char ***g = sp->values; vals && list && *g; g++)
        for (char **v = *g; list && *v; v++) {
            vals[k++] = *v;
            char *nl = NULL;
            if (asprintf(&nl, "%s%s$%d::%s", list, k > 1 ? ", " : "", k, c->type) < 0)
                nl = NULL;
            free(list);
            list = nl;
        }
    if (vals && list &&
        asprintf(&sql, "SELECT count(*), min(%s::text) FROM %s WHERE %s <> ALL (ARRAY[%s])", col,
                 t->src.qname, col, list) >= 0) {
        PGresult *res = pg_query(m->src, "checking the listed values", sql, nv, vals);
        if (res == NULL)
            say(r, "BLOCK", "%s.values: a value is not a valid %s (see the log)", kp, c->type);
        else if (strcmp(PQgetvalue(res, 0, 0), "0") != 0)
            say(r, "BLOCK",
                "%s rows of %s have a value of \"%s\" that no partition lists (e.g. %s); fix: "
                "add it to `values:`, or `default: true`",
                PQgetvalue(res, 0, 0), t->src.qname, c->name, PQgetvalue(res, 0, 1));
        PQclear(res);
    }
    free(vals);
    free(list);
    free(sql);
    free(col);
}

/* `kp` is the spec's place in the plan: "partition", or
 * "partition.subpartition". */
/* How far the partitions of a range spec by time will reach: the last
 * partition pgshift creates, from the rows of now. */
static void check_spec_horizon(pgs_migration *m, pgs_mtable *t, const pgs_partition_spec *sp,
                               const pgs_column *c, report *r)
{
    char *col = pg_ident(m->src, c->name);
    PGresult *b = col ? prepare_partition_bounds(m, t, sp, col, c, NULL) : NULL;
    free(col);
    int n = b ? PQntuples(b) : 0;
    char *days = NULL;
    if (n > 0)
        days = pg_query_value(m->src, "reading how far the partitions reach",
                              "SELECT floor(extract(epoch FROM $1::timestamptz - now()) / 86400)",
                              1, (const char *[]){PQgetvalue(b, n - 1, 2)}, NULL);
    if (days)
        say_horizon(r, t->tgt.qname, PQgetvalue(b, n - 1, 2), atol(days), sp->with_default);
    free(days);
    PQclear(b);
}

static void check_partition_spec(pgs_migration *m, pgs_mtable *t, const pgs_partition_spec *sp,
                                 const char *kp, report *r)
{
    const pgs_column *c = catalog_column(&t->src, sp->column);
    if (c == NULL) {
        say(r, "BLOCK", "%s.by names column \"%s\" which %s does not have", kp, sp->column,
            t->src.qname);
        return;
    }
    bool timeish = strcmp(c->type, "date") == 0 || strncmp(c->type, "timestamp", 9) == 0;
    bool intish = strcmp(c->type, "integer") == 0 || strcmp(c->type, "bigint") == 0 ||
                  strcmp(c->type, "smallint") == 0;
    if (sp->method == PGS_PARTITION_LIST)
        check_list_spec(m, t, sp, kp, c, r);
    else if (sp->method == PGS_PARTITION_RANGE && !timeish && !intish) {
        say(r, "BLOCK",
            "partition column \"%s\" has type %s; pgshift creates range partitions over dates, "
            "timestamps and integers; create the target yourself instead",
            c->name, c->type);
        return;
    }
    if (sp->method == PGS_PARTITION_RANGE && sp->interval) {
        char *sql = NULL;
        int ok = asprintf(&sql, "SELECT ($1::%s) > %s", timeish ? "interval" : "bigint",
                          timeish ? "'0'::interval" : "0");
        PGresult *res = ok < 0 ? NULL
                               : PQexecParams(m->src, sql, 1, NULL, (const char *[]){sp->interval},
                                              NULL, NULL, 0);
        free(sql);
        bool valid =
            res && PQresultStatus(res) == PGRES_TUPLES_OK && PQgetvalue(res, 0, 0)[0] == 't';
        if (!valid)
            say(r, "BLOCK", "%s.interval \"%s\" is not a positive %s; fix: write e.g. %s", kp,
                sp->interval, timeish ? "interval" : "integer",
                timeish ? "\"1 month\"" : "\"1000000\"");
        PQclear(res);
        if (valid)
            check_partition_count(m, t, sp, kp, c, timeish, r);
        if (valid && timeish && sp == &t->spec->part && !sp->manager && !t->tgt.exists)
            check_spec_horizon(m, t, sp, c, r);
    }
    /* With a primary key the target's key becomes (pk..., column), which
     * makes the column NOT NULL: no DEFAULT partition can take those rows. */
    /* Where a NULL partition key goes: a DEFAULT partition, hash's
     * remainder 0, or list's own partition for NULL found in the rows. */
    bool null_home = sp->with_default || sp->method == PGS_PARTITION_HASH ||
                     (sp->method == PGS_PARTITION_LIST && !sp->values);
    if (!c->notnull && (!null_home || t->src.pk.n)) {
        char *sql = NULL;
        char *col = pg_ident(m->src, c->name);
        if (col &&
            asprintf(&sql, "SELECT count(*) FROM %s WHERE %s IS NULL", t->src.qname, col) >= 0) {
            char *n = pg_query_value(m->src, "counting rows with a NULL partition key", sql, 0,
                                     NULL, NULL);
            if (n && strcmp(n, "0") != 0 && t->src.pk.n)
                say(r, "BLOCK",
                    "%s rows of %s have NULL in partition column \"%s\", which the target's "
                    "primary key (the source's plus \"%s\") cannot hold, DEFAULT partition or "
                    "not; fix: set a value in those rows and ALTER TABLE %s ALTER COLUMN %s SET "
                    "NOT NULL, or partition by another column",
                    n, t->src.qname, c->name, c->name, t->src.qname, col);
            else if (n && strcmp(n, "0") != 0)
                say(r, "BLOCK",
                    "%s rows of %s have NULL in partition column \"%s\"; fix: add `default: "
                    "true` to the partition spec",
                    n, t->src.qname, c->name);
            else if (n && t->src.pk.n)
                /* None today, but the application may still write one. */
                say(r, "warn",
                    "partition column \"%s\" of %s is nullable: a row written with NULL there "
                    "during the migration cannot enter the target (its primary key includes the "
                    "column) and stops the apply; fix: ALTER TABLE %s ALTER COLUMN %s SET NOT "
                    "NULL (no row is NULL now)",
                    c->name, t->src.qname, t->src.qname, col);
            free(n);
        }
        free(sql);
        free(col);
    }
}

/* A source pg_partman manages: its part_config row is by name, so after
 * the renames it would name the new table, with the old interval. The swap
 * removes it (cutover.c, partman_forget): the old table is frozen then. */
static void check_partman_source(pgs_migration *m, pgs_mtable *t, const pgs_partman *pm,
                                 const char *pmq, report *r)
{
    char *sql = NULL, name[160];
    snprintf(name, sizeof name, "%s.%s", t->src.nspname, t->src.relname);
    if (asprintf(&sql, "SELECT count(*) FROM %s.part_config WHERE parent_table = $1", pmq) < 0)
        return;
    char *n = pg_query_value(m->tgt, "reading pg_partman's configuration", sql, 1,
                             (const char *[]){name}, NULL);
    free(sql);
    if (n && strcmp(n, "0") != 0 && t->spec->part.manager)
        say(r, "ok",
            "pg_partman %s manages %s: the swap removes its row of %s.part_config (the old "
            "table is frozen from then on), and pgshift registers the new table after it",
            pm->version, t->src.qname, pmq);
    else if (n && strcmp(n, "0") != 0)
        say(r, "warn",
            "pg_partman %s manages %s: the swap removes its row of %s.part_config (the old "
            "table is frozen from then on), and nothing registers the new table, so no "
            "partition is made for it ahead; fix: add `manager: pg_partman` to the partition "
            "%sregister it yourself after the cutover",
            pm->version, t->src.qname, pmq,
            t->create_target ? "spec, or " : "spec of a target pgshift creates, or ");
    free(n);
}

/* Names pg_partman would give: none may exist already. `bounds` from
 * prepare_partition_bounds; says the first that does. */
static void check_partman_names(pgs_migration *m, pgs_mtable *t, PGresult *bounds, const char *dflt,
                                report *r)
{
    size_t len = 3 + strlen(dflt) * 2 + 3;
    for (int i = 0; i < PQntuples(bounds); i++)
        len += strlen(PQgetvalue(bounds, i, 0)) * 2 + 3;
    char *arr = malloc(len), *p = arr;
    if (arr == NULL)
        return;
    *p++ = '{';
    for (int i = 0; i <= PQntuples(bounds); i++) {
        const char *v = i < PQntuples(bounds) ? PQgetvalue(bounds, i, 0) : dflt;
        *p++ = '"';
        for (; *v; v++) {
            if (*v == '"' || *v == '\\')
                *p++ = '\\';
            *p++ = *v;
        }
        *p++ = '"';
        *p++ = i < PQntuples(bounds) ? ',' : '}';
    }
    *p = '\0';
    /* The source's own DEFAULT partition of that name is renamed by the
     * swap (cutover.c, partman_forget). */
    char oid[16];
    snprintf(oid, sizeof oid, "%u", t->src.oid);
    PGresult *res = pg_query(m->tgt, "looking for tables of pg_partman's names",
                             "SELECT c.relname FROM pg_class c JOIN pg_namespace n"
                             " ON n.oid = c.relnamespace WHERE n.nspname = $1"
                             " AND c.relname = ANY ($2::name[]) AND NOT (c.relname = $3"
                             "   AND pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT' AND EXISTS"
                             "   (SELECT 1 FROM pg_inherits h WHERE h.inhrelid = c.oid"
                             "     AND h.inhparent = $4::oid)) ORDER BY 1",
                             4, (const char *[]){t->tgt.nspname, arr, dflt, oid});
    free(arr);
    if (res && PQntuples(res) > 0)
        say(r, "BLOCK",
            "%d table(s) of the names pg_partman gives the partitions of %s exist already in "
            "schema %s (e.g. %s); fix: rename or drop them, or remove `manager:`",
            PQntuples(res), t->src.qname, t->tgt.nspname, PQgetvalue(res, 0, 0));
    PQclear(res);
}

/* `manager: pg_partman`: installed, a version pgshift knows, names free,
 * and something that runs its maintenance. */
static void check_partman(pgs_migration *m, pgs_mtable *t, report *r)
{
    const pgs_partition_spec *sp = &t->spec->part;
    if (m->plan->target) {
        say(r, "BLOCK",
            "partition.manager: pg_partman registers %s after the cutover, which needs the new "
            "table in the source's database; the plan has a separate `target:`",
            t->src.qname);
        return;
    }
    pgs_partman pm;
    int found = partman_find(m->tgt, &pm);
    if (found < 0)
        return;
    if (found == 0) {
        char *v = pg_query_value(m->tgt, "looking for pg_partman on the server",
                                 "SELECT max(default_version) FROM pg_available_extensions"
                                 " WHERE name = 'pg_partman'",
                                 0, NULL, NULL);
        say(r, "BLOCK",
            "partition.manager: pg_partman is not installed in this database%s; fix: CREATE "
            "SCHEMA partman; CREATE EXTENSION pg_partman SCHEMA partman%s",
            v && v[0] ? "" : " (nor available on the server)",
            v && v[0] ? "" : ", after installing the server's package (postgresql-NN-partman)");
        free(v);
        return;
    }
    if (!partman_supported(&pm)) {
        say(r, "BLOCK",
            "pg_partman %s is installed; pgshift registers tables with pg_partman 4 (5 changed "
            "create_parent's arguments and the partition names); fix: remove `manager:` and "
            "register %s with %s.create_parent after the cutover",
            pm.version, t->src.qname, pm.schema);
        return;
    }
    if (strchr(t->src.nspname, '.') || strchr(t->src.relname, '.')) {
        say(r, "BLOCK", "pg_partman does not take a table whose name has a period (%s)",
            t->src.qname);
        return;
    }
    const pgs_column *c = catalog_column(&t->src, sp->column);
    if (c == NULL)
        return;
    bool timeish = strcmp(c->type, "date") == 0 || strncmp(c->type, "timestamp", 9) == 0;
    if (timeish) {
        char *big =
            pg_query_value(m->src, "reading the interval", "SELECT $1::interval >= '10 years'", 1,
                           (const char *[]){sp->interval}, NULL);
        bool refuse = big && big[0] == 't';
        free(big);
        if (refuse) {
            say(r, "BLOCK",
                "partition.interval \"%s\": pg_partman aligns intervals of 10 years or more to "
                "decades; fix: a smaller interval, or remove `manager:`",
                sp->interval);
            return;
        }
    }
    const char *pmq = pm.q;
    char *col = pg_ident(m->src, c->name);
    char *dflt = partman_default_name(m->tgt, pmq, t->src.relname);
    PGresult *b = col && dflt ? prepare_partition_bounds(m, t, sp, col, c, pmq) : NULL;
    if (b && PQntuples(b) > 0) {
        check_partman_source(m, t, &pm, pmq, r);
        if (!t->tgt.exists) /* when resuming, the names are its own */
            check_partman_names(m, t, b, dflt, r);
        say(r, "ok",
            "after the cutover pgshift registers %s with pg_partman %s (%s.create_parent: "
            "interval %s, premake %d, from the first partition): partitions named as "
            "pg_partman names them (%s .. %s), its DEFAULT partition %s",
            t->src.qname, pm.version, pm.schema, sp->interval, sp->ahead, PQgetvalue(b, 0, 0),
            PQgetvalue(b, PQntuples(b) - 1, 0), dflt);
        char *bgw = pg_query_value(m->tgt, "reading shared_preload_libraries",
                                   "SELECT current_setting('shared_preload_libraries')"
                                   " ~ 'pg_partman_bgw'",
                                   0, NULL, NULL);
        if (bgw && bgw[0] != 't')
            say(r, "warn",
                "pg_partman_bgw is not in shared_preload_libraries: nothing on this server runs "
                "%s.run_maintenance() by itself, and without it no partition is made after %s; "
                "fix: load pg_partman_bgw, or schedule CALL %s.run_maintenance_proc() (cron, "
                "pg_cron)",
                pmq, PQgetvalue(b, PQntuples(b) - 1, 2), pmq);
        free(bgw);
    }
    PQclear(b);
    free(col);
    free(dflt);
}

/* What a created target gets of each of the source's indexes and key
 * constraints: a unique one without the partition columns is only unique
 * together with them after the cutover, and some are not built at all. */
static void check_created_indexes(pgs_migration *m, pgs_mtable *t, report *r)
{
    PGresult *res = source_indexes(m, t);
    if (res == NULL) {
        say(r, "BLOCK", "cannot read the indexes of %s (see the log)", t->src.qname);
        return;
    }
    int plain = 0;
    for (int i = 0; i < PQntuples(res); i++) {
        src_index x = source_index(res, i);
        const char *what = x.kind == IX_PRIMARY ? "primary key"
                           : x.constraint       ? "unique constraint"
                                                : "unique index";
        if (x.kind == IX_SKIP)
            say(r, "warn", "index %s of %s is not built on the target: %s", x.name, t->src.qname,
                x.why);
        else if (x.kind == IX_PRIMARY && x.missing[0])
            say(r, "note",
                "primary key (%s) becomes (%s, %s) on the target: a partitioned table's unique "
                "keys must contain the partition key",
                x.cols, x.cols, x.missing);
        else if (x.kind == IX_UNIQUE && x.missing[0])
            say(r, "warn",
                "%s %s on (%s) becomes unique on (%s, %s) on the target: after the cutover (%s) "
                "alone is no longer unique (the source keeps it so until then); fix, if the "
                "application relies on it: partition by a column of that key",
                what, x.name, x.cols, x.cols, x.missing, x.cols);
        else
            plain++;
    }
    if (plain)
        say(r, "ok", "%d other index(es) and key(s) of %s built as they are, after the copy", plain,
            t->src.qname);
    PQclear(res);
}

static void check_keys(pgs_migration *m, pgs_mtable *t, report *r)
{
    char ri = t->src.replident;
    if (ri == 'i' && t->src.ri.n == 0) {
        /* The replica identity index was dropped: the server treats the
         * table as REPLICA IDENTITY NOTHING. */
        say(r, "BLOCK",
            "%s has REPLICA IDENTITY USING INDEX but that index no longer exists (it acts as "
            "NOTHING): once published, its UPDATEs and DELETEs fail; fix: ALTER TABLE %s REPLICA "
            "IDENTITY DEFAULT (or USING INDEX <another unique index>)",
            t->src.qname, t->src.qname);
        return;
    }
    if (ri == 'n') {
        say(r, "BLOCK",
            "%s has REPLICA IDENTITY NOTHING: once published, its UPDATEs and DELETEs fail; fix: "
            "ALTER TABLE %s REPLICA IDENTITY DEFAULT",
            t->src.qname, t->src.qname);
        return;
    }
    if (ri == 'd' && t->src.pk.n == 0) {
        say(r, "BLOCK",
            "%s has no primary key and REPLICA IDENTITY DEFAULT: once published, its UPDATEs and "
            "DELETEs would fail; fix: add a primary key, or REPLICA IDENTITY USING INDEX "
            "<unique index> (or FULL plus `key:` in the plan)",
            t->src.qname);
        return;
    }
    if (t->match.n == 0) {
        say(r, "ok",
            "rows identified by the whole row (REPLICA IDENTITY FULL, no key): an UPDATE or "
            "DELETE changes one row equal to the old one (identical rows are interchangeable)");
        say(r, "warn",
            "%s has no key: every applied UPDATE and DELETE searches the target for its row, "
            "one at a time (a scan where no index helps); for a table with many updates, add a "
            "primary key or list unique NOT NULL columns as `key:` in the plan",
            t->src.qname);
        return;
    }
    char keys[512] = "";
    for (int i = 0; i < t->match.n; i++) {
        if (catalog_column(&t->src, t->match.v[i]) == NULL)
            say(r, "BLOCK", "key column \"%s\" is not a column of %s", t->match.v[i], t->src.qname);
        size_t n = strlen(keys);
        snprintf(keys + n, sizeof keys - n, "%s%s", i ? ", " : "", t->match.v[i]);
    }
    const char *how = (ri == 'i' && t->src.ri.n) ? "replica identity index"
                      : t->src.pk.n              ? "primary key"
                                                 : "plan key";
    const char *ri_name = ri == 'd' ? "default" : ri == 'f' ? "full" : "using index";
    say(r, "ok", "rows identified by %s (%s); replica identity %s", how, keys, ri_name);
}

static void check_target_index(pgs_migration *m, pgs_mtable *t, report *r)
{
    if (t->match.n == 0) /* the whole row: check_keys warned */
        return;
    char oid[16];
    snprintf(oid, sizeof oid, "%u", t->tgt.oid);
    PGresult *res =
        pg_query(m->tgt, "preflight",
                 "SELECT a.attname FROM pg_index i"
                 "  JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]"
                 " WHERE i.indrelid = $1::oid",
                 1, (const char *[]){oid});
    if (res == NULL)
        return;
    bool found = false;
    for (int i = 0; i < PQntuples(res) && !found; i++)
        found = strlist_contains(&t->map.tkey, PQgetvalue(res, i, 0));
    PQclear(res);
    if (!found)
        say(r, "warn",
            "target %s has no index on its key column(s): every applied UPDATE and DELETE scans "
            "it; fix: create an index on (%s)",
            t->tgt.qname, t->map.tkey.n ? t->map.tkey.v[0] : "?");
}

/* What the table carries besides its columns, as rows of (kind, key,
 * value) on one side: check constraints (key: the definition), column
 * defaults other than a sequence's (the hand-over moves those), comments,
 * statistics targets, storage parameters and the replica identity. */
static const char SHAPE_SQL[] =
    "SELECT 'check', pg_get_constraintdef(k.oid), k.conname FROM pg_constraint k"
    "  WHERE k.conrelid = $1::oid AND k.contype = 'c'"
    " UNION ALL SELECT 'default', a.attname, pg_get_expr(d.adbin, d.adrelid)"
    "  FROM pg_attrdef d JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum"
    "  WHERE d.adrelid = $1::oid AND a.attgenerated = ''"
    "    AND pg_get_expr(d.adbin, d.adrelid) NOT LIKE 'nextval(%'"
    " UNION ALL SELECT 'comment', coalesce(a.attname, ''), ds.description FROM pg_description ds"
    "  LEFT JOIN pg_attribute a ON a.attrelid = ds.objoid AND a.attnum = ds.objsubid"
    "  WHERE ds.classoid = 'pg_class'::regclass AND ds.objoid = $1::oid"
    " UNION ALL SELECT 'statistics', a.attname, a.attstattarget::text FROM pg_attribute a"
    "  WHERE a.attrelid = $1::oid AND a.attnum > 0 AND NOT a.attisdropped"
    "    AND coalesce(a.attstattarget::int, -1) >= 0"
    " UNION ALL SELECT 'storage', '', array_to_string(reloptions, ', ') FROM pg_class"
    "  WHERE oid = $1::oid AND reloptions IS NOT NULL"
    " UNION ALL SELECT 'identity', '', CASE relreplident WHEN 'f' THEN 'FULL' WHEN 'n' THEN"
    "  'NOTHING' WHEN 'i' THEN 'USING INDEX' END FROM pg_class"
    "  WHERE oid = $1::oid AND relreplident <> 'd'";

static const char *shape_what(const char *kind)
{
    return strcmp(kind, "default") == 0      ? "default of column"
           : strcmp(kind, "comment") == 0    ? "comment"
           : strcmp(kind, "statistics") == 0 ? "statistics target of column"
           : strcmp(kind, "storage") == 0    ? "storage parameters"
                                             : "replica identity";
}

/* The value of (kind, key) in a SHAPE_SQL result, or NULL. */
static const char *shape_get(const PGresult *res, const char *kind, const char *key)
{
    for (int i = 0; i < PQntuples(res); i++)
        if (strcmp(PQgetvalue(res, i, 0), kind) == 0 && strcmp(PQgetvalue(res, i, 1), key) == 0)
            return PQgetvalue(res, i, 2);
    return NULL;
}

/* An operator-made target against its source: what differs besides the
 * columns, and what that means (nothing of it is changed by pgshift). */
static void check_target_shape(pgs_migration *m, pgs_mtable *t, report *r)
{
    char so[16], to[16];
    snprintf(so, sizeof so, "%u", t->src.oid);
    snprintf(to, sizeof to, "%u", t->tgt.oid);
    PGresult *s = pg_query(m->src, "reading the source's constraints and settings", SHAPE_SQL, 1,
                           (const char *[]){so});
    PGresult *d = s ? pg_query(m->tgt, "reading the target's constraints and settings", SHAPE_SQL,
                               1, (const char *[]){to})
                    : NULL;
    for (int i = 0; d && i < PQntuples(s); i++) {
        const char *kind = PQgetvalue(s, i, 0), *key = PQgetvalue(s, i, 1),
                   *val = PQgetvalue(s, i, 2), *tv = shape_get(d, kind, key);
        if (strcmp(kind, "check") == 0) {
            if (tv == NULL)
                say(r, "note",
                    "check constraint %s (%s) of the source is not on target %s: the new table "
                    "will not check it after the cutover",
                    val, key, t->tgt.qname);
        } else if (tv == NULL || strcmp(tv, val) != 0) {
            say(r, "note",
                "%s%s%s%s: the source has %s, target %s %s%s; the new table keeps the target's",
                shape_what(kind), key[0] ? " \"" : "", key, key[0] ? "\"" : "", val, t->tgt.qname,
                tv ? "has " : "has none", tv ? tv : "");
        }
    }
    for (int i = 0; d && i < PQntuples(d); i++) {
        const char *kind = PQgetvalue(d, i, 0), *key = PQgetvalue(d, i, 1);
        if (strcmp(kind, "check") == 0 && shape_get(s, kind, key) == NULL)
            say(r, "warn",
                "target %s has check constraint %s (%s), which the source lacks: a source row "
                "that breaks it stops the copy or the apply; fix: drop it on the target, or add "
                "it (NOT VALID, then VALIDATE) to the source",
                t->tgt.qname, PQgetvalue(d, i, 2), key);
        else if (strcmp(kind, "check") != 0 && shape_get(s, kind, key) == NULL)
            say(r, "note", "%s%s%s%s: target %s has %s, the source none; the new table keeps it",
                shape_what(kind), key[0] ? " \"" : "", key, key[0] ? "\"" : "", t->tgt.qname,
                PQgetvalue(d, i, 2));
    }
    PQclear(s);
    PQclear(d);
}

/* A source that is partitioned already: its changes are published as the
 * root's (publish_via_partition_root), each partition is copied, and the
 * cutover swaps the roots. Every partition must be a plain table. */
static bool check_partitioned_source(pgs_migration *m, pgs_mtable *t, report *r)
{
    char oid[16];
    snprintf(oid, sizeof oid, "%u", t->src.oid);
    PGresult *res =
        pg_query(m->src, "reading the source's partitions",
                 "SELECT count(*) FILTER (WHERE c.relkind = 'r'),"
                 "  string_agg(format('%I.%I', n.nspname, c.relname), ', ')"
                 "    FILTER (WHERE c.relkind NOT IN ('r', 'p'))"
                 "  FROM pg_partition_tree($1::oid) p JOIN pg_class c ON c.oid = p.relid"
                 "  JOIN pg_namespace n ON n.oid = c.relnamespace WHERE p.isleaf",
                 1, (const char *[]){oid});
    if (res == NULL)
        return false;
    bool ok = PQgetisnull(res, 0, 1);
    if (!ok)
        say(r, "BLOCK",
            "partitions of %s that are not plain tables (foreign tables?) cannot be copied: %s; "
            "fix: move their rows into plain partitions, or migrate without them",
            t->src.qname, PQgetvalue(res, 0, 1));
    else
        say(r, "ok",
            "source is partitioned (%s, %s leaf partitions): each partition is copied, its "
            "changes arrive as the table's (publish_via_partition_root), and the cutover swaps "
            "the partitioned tables",
            t->src.partkey ? t->src.partkey : "?", PQgetvalue(res, 0, 0));
    if (ok)
        say(r, "warn",
            "until the cutover, TRUNCATE, DETACH or DROP of one partition of %s is not streamed "
            "(the server publishes a partition's TRUNCATE only as its own, not through the "
            "table): its rows would stay in the target; use DELETE, or TRUNCATE %s itself",
            t->src.qname, t->src.qname);
    PQclear(res);
    return ok;
}

/* A range-partitioned target on a date or timestamp: how far its
 * partitions reach, and whether rows past that have a home (a DEFAULT
 * partition). After the cutover the application's next rows need one. */
static void check_partition_horizon(pgs_migration *m, pgs_mtable *t, report *r)
{
    if (t->tgt.partcols.n != 1 || t->tgt.partkey == NULL ||
        strncmp(t->tgt.partkey, "RANGE", 5) != 0)
        return;
    const pgs_column *c = catalog_column(&t->tgt, t->tgt.partcols.v[0]);
    if (c == NULL || (strcmp(c->type, "date") != 0 && strncmp(c->type, "timestamp", 9) != 0))
        return;
    char oid[16];
    snprintf(oid, sizeof oid, "%u", t->tgt.oid);
    PGresult *res =
        pg_query(m->tgt, "reading how far the target's partitions reach",
                 "WITH b AS (SELECT pg_get_expr(c.relpartbound, c.oid) AS bound FROM pg_inherits h"
                 "             JOIN pg_class c ON c.oid = h.inhrelid WHERE h.inhparent = $1::oid),"
                 " u AS (SELECT CASE WHEN bound ~ 'TO \\(MAXVALUE\\)$' THEN 'infinity'::timestamptz"
                 "                   ELSE substring(bound FROM 'TO "
                 "\\(''([^'']*)''\\)$')::timestamptz END AS hi"
                 "         FROM b WHERE bound <> 'DEFAULT')"
                 " SELECT EXISTS (SELECT 1 FROM b WHERE bound = 'DEFAULT'), max(hi)::text,"
                 "        floor(extract(epoch FROM max(hi) - now()) / 86400)::bigint FROM u",
                 1, (const char *[]){oid});
    if (res == NULL || PQntuples(res) != 1 || PQgetisnull(res, 0, 1)) {
        PQclear(res);
        return;
    }
    bool dflt = PQgetvalue(res, 0, 0)[0] == 't';
    long days = PQgetisnull(res, 0, 2) ? 1000000 : atol(PQgetvalue(res, 0, 2));
    say_horizon(r, t->tgt.qname, PQgetvalue(res, 0, 1), days, dflt);
    PQclear(res);
}

/* The target's own foreign keys, before the cutover: to itself (the copy
 * may insert a row before the one it references), to another target of
 * the plan (copied after it), or to a table the application writes
 * (the target lags it). The cutover carries the source's keys itself. */
static void check_target_fks(pgs_migration *m, pgs_mtable *t, report *r)
{
    char oid[16];
    snprintf(oid, sizeof oid, "%u", t->tgt.oid);
    PGresult *res = pg_query(m->tgt, "reading the target's foreign keys",
                             "SELECT quote_ident(conname), confrelid::regclass::text,"
                             "       confrelid = conrelid, confrelid::int8"
                             "  FROM pg_constraint WHERE contype = 'f' AND conrelid = $1::oid"
                             "   AND conparentid = 0 ORDER BY conname",
                             1, (const char *[]){oid});
    for (int i = 0; res && i < PQntuples(res); i++) {
        const char *con = PQgetvalue(res, i, 0), *ref = PQgetvalue(res, i, 1);
        uint32_t roid = (uint32_t)strtoul(PQgetvalue(res, i, 3), NULL, 10);
        bool in_plan = false;
        for (int j = 0; j < m->ntables; j++)
            in_plan |= m->tables[j].tgt.exists && m->tables[j].tgt.oid == roid;
        if (PQgetvalue(res, i, 2)[0] == 't')
            say(r, "warn",
                "target %s has foreign key %s to itself: the copy may insert a row before the "
                "one it references, and fail; fix: ALTER TABLE %s DROP CONSTRAINT %s (the "
                "cutover adds the source's keys, NOT VALID, then validated)",
                t->tgt.qname, con, t->tgt.qname, con);
        else if (in_plan)
            say(r, "ok",
                "target %s has foreign key %s to %s, a target of this plan: copied after it",
                t->tgt.qname, con, ref);
        else
            say(r, "warn",
                "target %s has foreign key %s to %s, which the application keeps writing: until "
                "the cutover the target lags it, so a delete or key change there can fail for "
                "the application (or cascade into the target, which stops the run); fix: ALTER "
                "TABLE %s DROP CONSTRAINT %s (the cutover adds the source's keys, NOT VALID, "
                "then validated)",
                t->tgt.qname, con, ref, t->tgt.qname, con);
    }
    PQclear(res);
}

static void check_target_empty(pgs_migration *m, pgs_mtable *t, report *r)
{
    char *sql = NULL;
    if (asprintf(&sql, "SELECT EXISTS (SELECT 1 FROM %s)", t->tgt.qname) < 0)
        return;
    char *v = pg_query_value(m->tgt, "checking the target is empty", sql, 0, NULL, NULL);
    free(sql);
    if (v && strcmp(v, "t") == 0)
        say(r, "BLOCK",
            "target %s already holds rows; the copy would duplicate them; fix: TRUNCATE %s",
            t->tgt.qname, t->tgt.qname);
    free(v);
}

/* Dependent objects and what the cutover does with each (handover.c builds
 * the same list the cutover acts on). What the cutover would refuse is a
 * warning here: the copy and catch-up can run while the operator fixes it. */
static void list_dependents(pgs_migration *m, pgs_mtable *t, report *r)
{
    handover h;
    if (!handover_build(m->src, m, t, false, &h)) {
        say(r, "warn", "could not read the dependent objects of %s (see the log)", t->src.qname);
        return;
    }
    for (int i = 0; i < h.notes.n; i++)
        say(r, "cutover", "%s", h.notes.v[i]);
    for (int i = 0; i < h.problems.n; i++)
        say(r, "warn", "the cutover would refuse: %s", h.problems.v[i]);
    handover_free(&h);
}

/* A target pgshift creates from the plan's partition spec. */
static void check_created_target(pgs_migration *m, pgs_mtable *t, bool resuming, report *r)
{
    if (t->tgt.exists && !resuming)
        say(r, "BLOCK",
            "target %s already exists but the plan asks pgshift to create it (partition:); "
            "fix: drop it, or remove the partition block to use it as it is",
            t->tgt.qname);
    if (!t->tgt.exists) {
        char how[192] = "", sub[192] = "";
        spec_desc(&t->spec->part, how, sizeof how);
        if (t->spec->part.sub)
            spec_desc(t->spec->part.sub, sub, sizeof sub);
        say(r, "ok", "target %s will be created: LIKE the source, %s%s%s", t->tgt.qname, how,
            sub[0] ? "; each partition in turn " : "", sub);
    }
    check_partition_spec(m, t, &t->spec->part, "partition", r);
    if (t->spec->part.sub)
        check_partition_spec(m, t, t->spec->part.sub, "partition.subpartition", r);
    if (t->spec->part.manager)
        check_partman(m, t, r);
    if (!t->tgt.exists)
        check_created_indexes(m, t, r);
}

static void check_table(pgs_migration *m, pgs_mtable *t, bool resuming, report *r)
{
    fprintf(r->out, "\nTable %s -> %s\n", t->spec->source, t->spec->target);
    if (!t->src.exists) {
        say(r, "BLOCK",
            "source table %s does not exist; fix: correct the name in the plan (schema.table; "
            "double-quote names with capitals)",
            t->spec->source);
        return;
    }
    if (t->src.relkind != 'r' && t->src.relkind != 'p') {
        say(r, "BLOCK", "source %s is not a table; pgshift migrates tables", t->src.qname);
        return;
    }
    if (t->src.relkind == 'p' && !check_partitioned_source(m, t, r))
        return;
    char size[32];
    human_bytes(t->src.bytes, size, sizeof size);
    if (t->src.rows_known)
        say(r, "ok", "about %lld rows, %s with indexes", (long long)t->src.rows_est, size);
    else
        say(r, "ok",
            "row count unknown (never analyzed; ANALYZE %s gives an estimate and copy "
            "progress), %s with indexes",
            t->src.qname, size);

    char oid[16];
    snprintf(oid, sizeof oid, "%u", t->src.oid);
    char *owner = pg_query_value(m->src, "checking table ownership",
                                 "SELECT pg_has_role(relowner, 'USAGE') FROM pg_class"
                                 " WHERE oid = $1::oid",
                                 1, (const char *[]){oid}, NULL);
    if (owner && owner[0] != 't')
        say(r, "BLOCK",
            "the current role does not own %s, so it cannot publish it; fix: run as its owner "
            "or a superuser",
            t->src.qname);
    free(owner);

    check_keys(m, t, r);
    pgs_partman pm;
    if (!t->spec->part.manager && partman_find(m->tgt, &pm) == 1)
        check_partman_source(m, t, &pm, pm.q, r);

    if (t->create_target) {
        check_created_target(m, t, resuming, r);
    } else if (!t->tgt.exists) {
        say(r, "BLOCK",
            "target table %s does not exist; fix: create it, or add a `partition:` block so "
            "pgshift creates it",
            t->spec->target);
    } else if (t->tgt.relkind != 'r' && t->tgt.relkind != 'p') {
        say(r, "BLOCK", "target %s is not a table", t->tgt.qname);
    } else if (m->plan->target == NULL && t->tgt.oid == t->src.oid) {
        say(r, "BLOCK", "source and target are the same table %s", t->src.qname);
    } else {
        if (t->map.mapped) {
            preflight_mapping(m, t, resuming, r);
        } else {
            check_columns(m, t, r);
            if (m->plan->rollback.window_ms > 0)
                check_rollback_columns(t, r);
        }
        check_target_index(m, t, r);
        check_target_fks(m, t, r);
        check_target_shape(m, t, r);
        check_partition_horizon(m, t, r);
        if (t->tgt.relkind == 'p') {
            say(r, "ok", "target is partitioned: %s", t->tgt.partkey);
            char *why = prepare_shadow_why_not(m, t);
            if (why == NULL)
                say(r, "ok",
                    "the copy fills shadow partitions without indexes, then builds %s's "
                    "indexes on them and swaps them in for its empty partitions",
                    t->tgt.qname);
            else
                say(r, "ok", "the copy writes into %s with its indexes in place (%s)", t->tgt.qname,
                    why);
            free(why);
            if (!resuming)
                check_partition_coverage(m, t, r);
        }
        if (!resuming)
            check_target_empty(m, t, r);
    }
    list_dependents(m, t, r);
}

int preflight_run(pgs_migration *m, bool resuming, FILE *out)
{
    report r = {.out = out};
    char *redacted = pgs_conninfo_redact(m->plan->source);
    fprintf(out, "pgshift plan: migration %s (source: %s)\n\n", m->plan->name,
            redacted ? redacted : "?");
    free(redacted);
    if (!check_server(m, &r) || !check_slot_limits(m, &r) || !check_failover(m, &r))
        return -1;
    for (int i = 0; i < m->ntables; i++)
        check_table(m, &m->tables[i], resuming, &r);

    fprintf(out, "\nWhat `pgshift run` does\n");
    fprintf(out, "  1. publication %s FOR TABLE", m->publication);
    for (int i = 0; i < m->ntables; i++)
        fprintf(out, "%s %s", i ? "," : "", m->tables[i].src.qname ? m->tables[i].src.qname : "?");
    fprintf(out, "\n  2. logical replication slot %s (pgoutput%s) with an exported snapshot\n",
            m->slot, PQserverVersion(m->src) >= 170000 ? ", FAILOVER" : "");
    int64_t rows = 0, bytes = 0;
    int unknown = 0;
    for (int i = 0; i < m->ntables; i++) {
        rows += m->tables[i].src.rows_est;
        bytes += m->tables[i].src.bytes;
        unknown += m->tables[i].src.exists && !m->tables[i].src.rows_known;
    }
    char size[32], unk[64] = "";
    human_bytes(bytes, size, sizeof size);
    if (unknown > 0)
        snprintf(unk, sizeof unk, " (plus the rows of %d never-analyzed table(s))", unknown);
    fprintf(out, "  3. copy %d table(s), about %lld rows%s / %s, under that snapshot in parallel\n",
            m->ntables, (long long)rows, unk, size);
    fprintf(out, "  4. stream the changes made since and apply them in commit order, until "
                 "cutover\n");
    if (m->plan->rollback.window_ms > 0)
        fprintf(out,
                "  5. rollback window of %.1f h: before the cutover's first lock, publication "
                "and slot pgshiftr_%s on the targets; after the swap every change to them is "
                "streamed back into <table>_old until the window ends (`pgshift rollback` swaps "
                "back meanwhile, `pgshift cleanup --confirm` ends it)\n",
                m->plan->rollback.window_ms / 3600000.0, m->plan->name);
    fprintf(out, "  state: schema pgshift in the target database (resumable from any machine)\n");
    fprintf(out, "\n%d blocking problem(s), %d warning(s)%s\n", r.blocking, r.warnings,
            r.blocking ? ": fix them and run `pgshift plan` again" : ": ready to run");
    return r.blocking;
}
