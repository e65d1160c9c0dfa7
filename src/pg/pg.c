/* pg.c: connection, query and quoting helpers over libpq. */
#include "pgshift/pg.h"

#include "pgshift/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void trim_newlines(char *s)
{
    for (char *p = s; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    size_t n = strlen(s);
    while (n > 0 && s[n - 1] == ' ')
        s[--n] = '\0';
}

const char *pg_default_connect_timeout(void)
{
    const char *env = getenv("PGCONNECT_TIMEOUT");
    return env && *env ? env : PG_CONNECT_TIMEOUT_S;
}

PGconn *pg_connect(const char *conninfo, const char *what, bool replication)
{
    const char *keys[5] = {"connect_timeout", "dbname", "application_name", NULL, NULL};
    const char *vals[5] = {pg_default_connect_timeout(), conninfo, "pgshift", NULL, NULL};
    if (replication) {
        keys[3] = "replication";
        vals[3] = "database";
    }
    /* expand_dbname=1: the first dbname is a full conninfo/URI; keys after
     * it override it, keys before it (connect_timeout) are defaults it
     * overrides. */
    PGconn *conn = PQconnectdbParams(keys, vals, 1);
    if (conn == NULL) {
        log_error("%s connection: out of memory", what);
        return NULL;
    }
    if (PQstatus(conn) != CONNECTION_OK) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", PQerrorMessage(conn));
        trim_newlines(msg);
        log_error("cannot connect to the %s database: %s", what, msg);
        PQfinish(conn);
        return NULL;
    }
    return conn;
}

const char *pg_result_error_line(const PGresult *res, char *buf, size_t len)
{
    const char *msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    const char *detail = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL) : NULL;
    const char *hint = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_HINT) : NULL;
    if (msg == NULL)
        msg = res ? PQresultErrorMessage(res) : "no result (connection lost?)";
    snprintf(buf, len, "%s%s%s%s%s", msg, detail ? " (" : "", detail ? detail : "",
             detail ? ")" : "", "");
    if (hint) {
        size_t n = strlen(buf);
        snprintf(buf + n, len - n, "; hint: %s", hint);
    }
    trim_newlines(buf);
    return buf;
}

const char *pg_sqlstate(const PGresult *res)
{
    const char *s = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    return s ? s : "";
}

static bool result_ok(PGconn *conn, PGresult *res, const char *what)
{
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
        return true;
    char line[2048];
    if (res == NULL) {
        snprintf(line, sizeof line, "%s", PQerrorMessage(conn));
        trim_newlines(line);
    } else {
        pg_result_error_line(res, line, sizeof line);
    }
    log_error("%s: %s", what, line);
    return false;
}

bool pg_exec(PGconn *conn, const char *what, const char *sql)
{
    PGresult *res = PQexec(conn, sql);
    bool ok = result_ok(conn, res, what);
    /* PQexec with several statements returns the last result; earlier
     * failures stop the batch, so the last one tells. */
    PQclear(res);
    return ok;
}

PGresult *pg_query(PGconn *conn, const char *what, const char *sql, int nparams,
                   const char *const *params)
{
    PGresult *res = PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, 0);
    if (!result_ok(conn, res, what)) {
        PQclear(res);
        return NULL;
    }
    return res;
}

char *pg_query_value(PGconn *conn, const char *what, const char *sql, int nparams,
                     const char *const *params, bool *isnull)
{
    PGresult *res = pg_query(conn, what, sql, nparams, params);
    if (res == NULL)
        return NULL;
    if (PQntuples(res) < 1) {
        log_error("%s: the query returned no row", what);
        PQclear(res);
        return NULL;
    }
    bool null = PQgetisnull(res, 0, 0);
    if (isnull)
        *isnull = null;
    char *v = strdup(null ? "" : PQgetvalue(res, 0, 0));
    PQclear(res);
    return v;
}

char *pg_ident(PGconn *conn, const char *name)
{
    char *q = PQescapeIdentifier(conn, name, strlen(name));
    if (q == NULL) {
        log_error("cannot quote identifier: %s", PQerrorMessage(conn));
        return NULL;
    }
    char *out = strdup(q);
    PQfreemem(q);
    return out;
}

char *pg_qualified(PGconn *conn, const char *schema, const char *name)
{
    char *s = pg_ident(conn, schema);
    char *n = pg_ident(conn, name);
    char *out = NULL;
    if (s && n && asprintf(&out, "%s.%s", s, n) < 0)
        out = NULL;
    free(s);
    free(n);
    return out;
}

char *pg_ident_list(PGconn *conn, char *const *names, int n)
{
    char *out = strdup("");
    for (int i = 0; out && i < n; i++) {
        char *q = pg_ident(conn, names[i]);
        char *nx = NULL;
        if (q == NULL || asprintf(&nx, "%s%s%s", out, i ? ", " : "", q) < 0)
            nx = NULL;
        free(q);
        free(out);
        out = nx;
    }
    return out;
}

bool pg_origin_session(PGconn *conn, const char *name, char *why, size_t whylen)
{
    const char *sql[] = {"SELECT pg_replication_origin_create($1) WHERE NOT EXISTS"
                         " (SELECT 1 FROM pg_replication_origin WHERE roname = $1)",
                         "SELECT pg_replication_origin_session_setup($1)"};
    for (int i = 0; i < 2; i++) {
        PGresult *res = PQexecParams(conn, sql[i], 1, NULL, (const char *[]){name}, NULL, NULL, 0);
        bool ok = PQresultStatus(res) == PGRES_TUPLES_OK;
        if (!ok)
            pg_result_error_line(res, why, whylen);
        PQclear(res);
        if (!ok)
            return false;
    }
    return true;
}

bool pg_origin_session_end(PGconn *conn, const char *name, char *why, size_t whylen)
{
    PGresult *res = PQexecParams(conn,
                                 "SELECT pg_replication_origin_session_reset(),"
                                 " pg_replication_origin_drop($1)",
                                 1, NULL, (const char *[]){name}, NULL, NULL, 0);
    bool ok = PQresultStatus(res) == PGRES_TUPLES_OK;
    if (!ok)
        pg_result_error_line(res, why, whylen);
    PQclear(res);
    return ok;
}

PGresult *pg_probe(PGconn *c, const char *sql, int n, const char *const *params, char *why,
                   size_t whylen)
{
    PQclear(PQexec(c, "SAVEPOINT pgshift_probe"));
    PGresult *res = PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0);
    bool ok = PQresultStatus(res) == PGRES_TUPLES_OK;
    if (!ok) {
        pg_result_error_line(res, why, whylen);
        PQclear(res);
        res = NULL;
    }
    PQclear(
        PQexec(c, ok ? "RELEASE SAVEPOINT pgshift_probe" : "ROLLBACK TO SAVEPOINT pgshift_probe"));
    return res;
}

bool pg_take_settings(PGconn *from, PGconn *to, const char *what)
{
    PGresult *r = pg_query(from, what,
                           "SELECT current_setting('TimeZone'), current_setting('DateStyle'),"
                           " current_setting('IntervalStyle')",
                           0, NULL);
    if (r == NULL)
        return false;
    const char *p[] = {PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 1), PQgetvalue(r, 0, 2)};
    PGresult *w = pg_query(to, what,
                           "SELECT set_config('TimeZone', $1, false),"
                           " set_config('DateStyle', $2, false),"
                           " set_config('IntervalStyle', $3, false)",
                           3, p);
    PQclear(r);
    PQclear(w);
    return w != NULL;
}
