/* pgtest: helpers for integration tests that talk to the cluster started by
 * tests/lib/with-pg.sh (connection settings come from PG* environment). */
#ifndef PGSHIFT_PGTEST_H
#define PGSHIFT_PGTEST_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <libpq-fe.h>

/* Connects with the PG* environment plus `extra` conninfo (may be NULL).
 * Fails the test on error. The caller PQfinish()es the result. */
PGconn *pgt_connect(const char *extra);

/* Runs `sql` (simple protocol, may hold several statements); fails the test
 * with the server's message unless it succeeds. */
void pgt_exec(PGconn *conn, const char *sql);

/* printf-style pgt_exec. */
void pgt_execf(PGconn *conn, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Runs a query returning one value and returns it as a malloc'd string
 * (NULL for SQL NULL); fails the test on error or if no row comes back. */
char *pgt_value(PGconn *conn, const char *sql);

/* pgt_value parsed as a 64-bit integer. */
int64_t pgt_int(PGconn *conn, const char *sql);

/* Runs a shell command with /bin/sh and returns its exit status (or -1). */
int pgt_system(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
