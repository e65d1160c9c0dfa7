/* pg.h: libpq helpers shared by every module: connections, quoting and
 * queries that log their own errors (callers just propagate false/NULL). */
#ifndef PGSHIFT_PG_H
#define PGSHIFT_PG_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>

/* The connect_timeout every connection gets unless the conninfo (or
 * PGCONNECT_TIMEOUT) says otherwise: a host that accepts the TCP
 * connection and never answers would otherwise hold pgshift for ever. */
#define PG_CONNECT_TIMEOUT_S "10"
/* PG_CONNECT_TIMEOUT_S, or PGCONNECT_TIMEOUT when set. */
const char *pg_default_connect_timeout(void);

/* Opens a connection from a conninfo string or URI (PG* environment and
 * .pgpass apply as in psql), with application_name set and, when
 * `replication` is true, replication=database. `what` names the connection
 * in error messages ("source", "target", "replication"). Logs and returns
 * NULL on failure; the password never appears in the message. Waits at
 * most pg_default_connect_timeout() per host unless the conninfo sets
 * connect_timeout. */
PGconn *pg_connect(const char *conninfo, const char *what, bool replication);

/* Runs SQL without parameters (may hold several statements); logs the
 * server's message with `what` as context on failure. */
bool pg_exec(PGconn *conn, const char *what, const char *sql);

/* Runs one statement with text parameters. Returns the result when it is
 * COMMAND_OK or TUPLES_OK (caller PQclear()s it), else logs and returns NULL. */
PGresult *pg_query(PGconn *conn, const char *what, const char *sql, int nparams,
                   const char *const *params);

/* One text value from a one-row query, malloc'd; *isnull (optional) tells
 * SQL NULL apart. NULL on error or no row (logged). */
char *pg_query_value(PGconn *conn, const char *what, const char *sql, int nparams,
                     const char *const *params, bool *isnull);

/* PQescapeIdentifier as a malloc'd (free()able) string; NULL on failure. */
char *pg_ident(PGconn *conn, const char *name);

/* "schema"."name", both escaped; malloc'd. */
char *pg_qualified(PGconn *conn, const char *schema, const char *name);
/* The names quoted and joined with ", " (malloc'd); NULL on failure. */
char *pg_ident_list(PGconn *conn, char *const *names, int n);

/* One query inside the open transaction, in a savepoint: its result when
 * it returns rows, else NULL with the server's message in why (the
 * transaction goes on either way). For probes that may fail on data. */
PGresult *pg_probe(PGconn *c, const char *sql, int n, const char *const *params, char *why,
                   size_t whylen);

/* Sets `to`'s TimeZone, DateStyle and IntervalStyle to `from`'s (where an
 * expression evaluated on both must give the same values). */
bool pg_take_settings(PGconn *from, PGconn *to, const char *what);

/* The server's error fields of a failed result, joined into one line
 * (message, detail, hint) into buf. */
const char *pg_result_error_line(const PGresult *res, char *buf, size_t len);

/* A predicate on pg_replication_origin.roname: one of pgshift's own origins
 * for the migration whose slot is `p` (`p` and `p_stream`, the two apply
 * sessions; `p_copy<N>`, the copy workers). `p` is SQL: a parameter ("$1")
 * or a quoted literal. */
#define PG_SQL_OWN_ORIGIN(p)                                                                       \
    "(roname IN (" p ", " p " || '_stream') OR (starts_with(roname, " p " || '_copy')"             \
    " AND substr(roname, length(" p ") + 6) ~ '^[0-9]+$'))"

/* A scalar subquery: the replication origins in the cluster other than
 * pgshift's own (PG_SQL_OWN_ORIGIN), as one text, or NULL when there are
 * none. */
#define PG_SQL_OTHER_ORIGINS(p)                                                                    \
    "(SELECT string_agg(roname, ', ' ORDER BY roname) FROM pg_replication_origin"                  \
    " WHERE NOT " PG_SQL_OWN_ORIGIN(p) ")"

/* Runs this session under the replication origin `name` (created when
 * missing), so that its writes carry it in the WAL and a walsender asked
 * for origin 'none' drops them before decoding (16+). False with the
 * server's reason in `why` (no privilege: superuser, or EXECUTE on the
 * pg_replication_origin_* functions). */
bool pg_origin_session(PGconn *conn, const char *name, char *why, size_t whylen);
/* Ends this session's origin and drops the origin; false with the reason. */
bool pg_origin_session_end(PGconn *conn, const char *name, char *why, size_t whylen);

/* SQLSTATE of a failed result or "" */
const char *pg_sqlstate(const PGresult *res);

#endif
