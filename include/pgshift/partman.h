/* partman.h: pg_partman, the partition manager a plan may hand a target
 * pgshift creates to (`partition.manager: pg_partman`).
 *
 * pg_partman 4 finds a partition set's partitions by their names: it
 * parses "<table>_p<suffix>" (the suffix a to_char of the lower bound, or
 * the bound itself on an integer) to know the newest one, and skips a
 * partition it would create when one of that name exists. So pgshift names
 * the target's partitions that way for the table's final name (the
 * source's: the target takes it at the cutover), cut to length by
 * pg_partman's own check_name_length. After the cutover two steps (data in
 * migrations.cutover, like the others) register the table:
 * create_parent(p_start_partition = the first partition's lower bound, so
 * pg_partman's grid is pgshift's; p_premake = `ahead`), then a DEFAULT
 * partition in pg_partman's way where create_parent made none (it makes one
 * only when it created a partition). Both take SHARE UPDATE EXCLUSIVE on the
 * table at most (ATTACH), which the application's reads and writes do not
 * wait for. */
#ifndef PGSHIFT_PARTMAN_H
#define PGSHIFT_PARTMAN_H

#include <libpq-fe.h>
#include <stdbool.h>

typedef struct pgs_partman {
    char schema[64]; /* the extension's schema, as in the catalog */
    char q[132];     /* the same, always double-quoted, for SQL text */
    char version[32];
    int major;
} pgs_partman;

/* 1: installed in the connection's database (pm filled), 0: not installed,
 * -1: the query failed (said). */
int partman_find(PGconn *conn, pgs_partman *pm);

/* The version pgshift registers tables with: 4.x (p_type 'native' and the
 * names above; 5 changed both). */
bool partman_supported(const pgs_partman *pm);

/* An SQL expression: the to_char format pg_partman 4 gives a time
 * partition's name for the interval in parameter $1 (create_parent's rules
 * for an interval given as a value, not as 'monthly' and the like). */
#define PARTMAN_FORMAT_SQL                                                                         \
    "CASE WHEN $1::interval >= '1 year' THEN 'YYYY'"                                               \
    " WHEN $1::interval >= '1 month' THEN 'YYYY_MM'"                                               \
    " WHEN $1::interval >= '1 day' THEN 'YYYY_MM_DD'"                                              \
    " WHEN $1::interval >= '1 minute' THEN 'YYYY_MM_DD_HH24MI'"                                    \
    " ELSE 'YYYY_MM_DD_HH24MISS' END"

/* The statement that registers `table` (schema.table) after the cutover, or
 * does nothing when pg_partman has it already; its 5 parameters are
 * "schema.table" as pg_partman takes it, the column, the interval, the
 * premake count and the table's quoted qualified name. `sq` is the
 * extension's quoted schema. */
char *partman_register_sql(const char *sq);

/* The name of `table`'s (quoted, qualified) DEFAULT partition, "" when it
 * has none, or NULL (said). */
char *partman_default_of(PGconn *conn, const char *table);

/* The name pg_partman 4 gives `relname`'s DEFAULT partition, or NULL (said). */
char *partman_default_name(PGconn *conn, const char *sq, const char *relname);

#endif
