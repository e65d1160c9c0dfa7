/* plan.h: the migration plan file (YAML) and its in-memory model.
 *
 * The parser only checks what can be told from the file itself (keys,
 * types, units, name syntax); everything that needs the server is the
 * preflight's job (preflight.h). The plan owns all its strings; free the
 * whole thing with pgs_plan_free().
 */
#ifndef PGSHIFT_PLAN_H
#define PGSHIFT_PLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum pgs_partition_method {
    PGS_PARTITION_NONE = 0,
    PGS_PARTITION_RANGE,
    PGS_PARTITION_LIST,
    PGS_PARTITION_HASH,
} pgs_partition_method;

/* A `partition:` block (or its `subpartition:`): how pgshift partitions a
 * target it creates. */
typedef struct pgs_partition_spec {
    pgs_partition_method method; /* NONE when there is no block */
    char *column;                /* from `by: range|list|hash (created_at)`, resolved (see below) */
    char *interval;    /* range: `interval: 1 month` as written (validated by the server) */
    bool with_default; /* range, list: `default: true`: add a DEFAULT partition */
    int ahead;         /* range: `ahead: N` partitions past the newest row; default 3 */
    int modulus;       /* hash: `modulus: N` partitions */
    /* range, top level only: `manager: pg_partman`: the partitions are
     * named in pg_partman's way for the table's final name, and after the
     * cutover pgshift registers the table with pg_partman (create_parent),
     * whose maintenance then creates the partitions ahead. NULL: none. */
    char *manager;
    /* list: `values: [eu, [de, fr], ...]`, one partition per item (a value
     * or a list of values), the values as written (cast by the server);
     * NULL-terminated lists, or NULL: one partition per value found. */
    char ***values;
    /* `subpartition:`: each partition partitioned again by this spec (one
     * level deep: its own `sub` is NULL), or NULL. */
    struct pgs_partition_spec *sub;
} pgs_partition_spec;

/* `columns:` or `reverse:`: column name -> SQL expression, in file order.
 * Names are stored as the server knows them (see below); expressions as
 * written (checked by the server in preflight, never by the parser). */
typedef struct pgs_plan_colmap {
    size_t n;
    char **name;
    char **expr;
} pgs_plan_colmap;

typedef struct pgs_plan_table {
    /* Names exactly as written in the plan ("public.petri_observations",
     * or "petri_observations" meaning the search path). The server resolves
     * them with SQL identifier rules (to_regclass / parse_ident). */
    char *source;
    char *target;

    /* Optional `partition:` block: pgshift creates the target. */
    pgs_partition_spec part;

    /* Column and object names (partition_column, key, leave_behind) are
     * stored as the server knows them, unlike the table names above: a
     * plain identifier folded to lower case, a "quoted" one without its
     * quotes. Quote them with PQescapeIdentifier when building SQL. */

    /* Optional: columns that identify a row on the target when the source
     * has no primary key (`key: [a, b]`); NULL-terminated, or NULL. */
    char **key;

    /* Dependent objects the operator allows the cutover to leave behind
     * (`leave_behind: [trigger_name, policy_name, ...]`); NULL-terminated, or NULL. */
    char **leave_behind;

    /* `columns:` target column -> expression over the source row's
     * columns (overrides or adds to the same-name mapping); `reverse:`
     * source column -> expression over the target row, for the rollback
     * window. Empty: none (n == 0). */
    pgs_plan_colmap columns;
    pgs_plan_colmap reverse;

    /* Not from the file: the name the source takes at the swap, in its
     * schema; NULL: "<source>_old". The reverse migration's (reverse.c)
     * gives the live table its name from before the cutover back. */
    char *rename_to;
} pgs_plan_table;

typedef struct pgs_plan_cutover {
    uint64_t max_lag_bytes; /* `max_lag: 8MB`; default 8 MiB */
    int lock_timeout_ms;    /* `lock_timeout: 500ms`; default 500 */
    int attempts;           /* `attempts: 20`; default 20 */
    int fence_timeout_ms;   /* `fence_timeout: 2s`: longest the lock is held waiting for the
                               fence before the attempt is given up; default 2000 */
    int max_block_ms;       /* `max_block: 100ms`: the write-block budget: locks are taken
                               only when the rest fits it at the measured apply rate, and
                               held no longer than it before the swap; default 100 */
    bool postpone;          /* `postpone: true` holds back --auto-cutover */
    char *postpone_file;    /* `postpone_file: /path`: while it exists, auto cutover waits */
    bool verify;            /* `verify: true`: no cutover without a passing `pgshift verify` of
                               every table at or after the copy (one at one LSN, while run streams) */
} pgs_plan_cutover;

typedef struct pgs_plan_copy {
    int workers;          /* `copy: {workers: N}`; default 0 = number of CPUs, at most 8 */
    uint64_t chunk_bytes; /* `chunk_size: 64MB`: split large tables into ranges of this size */
} pgs_plan_copy;

typedef struct pgs_plan_apply {
    int batch_changes; /* `apply: {batch_changes: N}`: changes per target transaction, default 20000
                        */
    int batch_ms; /* `batch_time: 200ms`: longest time a target transaction stays open, default 200
                   */
    int idle_commit_ms;  /* `idle_commit_time: 20ms`: when the stream goes quiet, a batch at
                            least this old commits at once (lower = less lag, more commits) */
    bool early_streamed; /* `early_streamed: true`: a large transaction the server streams is
                            also applied while it runs, on a second target session (eager.c);
                            default false: applied at its commit */
} pgs_plan_apply;

/* `hooks:` shell commands run on events, given the status JSON on stdin
 * (run by /bin/sh -c; NULL = none). */
typedef struct pgs_plan_hooks {
    char *copy_done;       /* the snapshot copy finished; streaming starts */
    char *ready;           /* lag under cutover.max_lag */
    char *cutover_started; /* the first lock attempt of a cutover */
    char *cutover_done;    /* the swap committed */
    char *failed;          /* the run stopped on an error */
    char *blocked;         /* an automatic cutover waits for the operator (each new reason) */
} pgs_plan_hooks;

/* `verify:` (pgshift verify, src/verify/verify.c) */
typedef struct pgs_plan_verify {
    int max_snapshot_age_ms; /* `max_snapshot_age: 5min`: no snapshot held longer; default 5 min */
    int max_rate;            /* `max_rate: N` rows/s read per side; 0 (default): no limit */
    int chunk_rows;          /* `chunk_rows: N` rows per key range of walk; default 20000 */
    char *method;            /* `method: scan|walk|auto` (default auto, see verify.h) */
} pgs_plan_verify;

/* `rollback:` the reverse stream after the cutover (src/run/reverse.c) */
typedef struct pgs_plan_rollback {
    int window_ms; /* `window: 24h`: after the swap the old tables are kept current (changes on
                      the new tables streamed back) this long; `pgshift rollback` swaps back
                      meanwhile. 0 (default): off, `run` exits after the cutover */
} pgs_plan_rollback;

typedef struct pgs_plan {
    char *path;   /* the file it was read from */
    char *name;   /* [a-z0-9_]+, at most 40 characters */
    char *source; /* libpq conninfo or URI; may hold a password: never print it */
    char *target; /* optional `target:` conninfo for the target database; NULL = same as source */
    pgs_plan_table *tables;
    size_t ntables;
    pgs_plan_cutover cutover;
    pgs_plan_copy copy;
    pgs_plan_apply apply;
    pgs_plan_hooks hooks;
    pgs_plan_verify verify;
    pgs_plan_rollback rollback;
    bool password_exposed; /* set by pgs_plan_load: source or target holds a password and
                              the file has group or world access (the caller warns) */
    char *state_dir;       /* `state_dir:` holds the control socket's private directory
                              (control_socket_path); default /tmp */
} pgs_plan;

/* Reads and validates a plan file. On failure returns NULL and writes one
 * line to err, "<path>:<line>: <key path>: <what is wrong>; <fix>", e.g.
 * "plan.yaml:7: tables[1].partition.by: "hash (id)" is not supported; use
 * "range (<column>)"" (list indexes count from 0; errors about the file as
 * a whole name "YAML syntax error" or "plan" in place of the key path, and
 * a file that cannot be read gives "<path>: <what>; <fix>"). */
pgs_plan *pgs_plan_load(const char *path, char *err, size_t errlen);

/* The same from a string in memory (`path` is only used in messages). */
pgs_plan *pgs_plan_parse(const char *yaml, size_t len, const char *path, char *err, size_t errlen);

void pgs_plan_free(pgs_plan *plan);

/* "8MB", "512kB", "1GB", "100" (bytes), case-insensitive unit, 1024-based as
 * in postgresql.conf. False on anything else or overflow. */
bool pgs_parse_size(const char *text, uint64_t *out);

/* "500ms", "2s", "1min", "24h", "7d", "250" (ms). False on anything else or overflow. */
bool pgs_parse_duration_ms(const char *text, int *out);

/* A conninfo string or URI made safe to print: parsed by libpq
 * (PQconninfoParse) and written back as key=value pairs in libpq's option
 * order, a URI too, with every secret option (password, sslpassword, ...)
 * and any dbname that expands to a connection string holding one shown as
 * "********". A string libpq refuses gives "(unparseable conninfo)", never
 * any of its text. Returns a malloc'd string (NULL on malloc failure). */
char *pgs_conninfo_redact(const char *conninfo);

/* True if the conninfo string or URI sets a non-empty password (any option
 * libpq treats as secret), or cannot be parsed and so might. */
bool pgs_conninfo_has_password(const char *conninfo);

#endif
