/* aquery.h: one query at a time on a connection of its own, driven by a
 * libuv loop: sent without blocking, its result handed to a callback when
 * it has arrived. For the loop's periodic reads (the source's WAL position,
 * the slot's health), which must never hold the loop while a server is slow
 * or unreachable. */
#ifndef PGSHIFT_AQUERY_H
#define PGSHIFT_AQUERY_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <uv.h>

typedef struct aquery aquery;

/* The result (PGRES_TUPLES_OK or COMMAND_OK), or NULL when the query or the
 * connection failed (logged with `what`). aquery clears it afterwards. */
typedef void (*aquery_cb)(void *arg, const PGresult *res);

/* Takes ownership of `conn` (made non-blocking here). NULL on failure. */
aquery *aquery_open(uv_loop_t *loop, PGconn *conn, const char *what);
/* Stops watching and closes the connection; a pending callback is dropped. */
void aquery_close(aquery *q);

/* A query is out and its result has not arrived. */
bool aquery_busy(const aquery *q);
/* Milliseconds the query out has waited (0 when none). */
double aquery_waited_ms(const aquery *q);
/* The connection has failed: open a new one. */
bool aquery_broken(const aquery *q);

/* Sends one statement with text parameters. False when busy or broken. */
bool aquery_send(aquery *q, const char *sql, int nparams, const char *const *params, aquery_cb cb,
                 void *arg);

#endif
