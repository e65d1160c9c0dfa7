/* catalog.h: what pgshift knows about the tables of a migration, read from
 * the server's catalogs (pg_class, pg_attribute, pg_index, ...). */
#ifndef PGSHIFT_CATALOG_H
#define PGSHIFT_CATALOG_H

#include "pgshift/plan.h"

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct pgs_column {
    char *name;
    char *type; /* format_type(atttypid, atttypmod) */
    uint32_t typoid;
    int32_t typmod;
    bool notnull;
    char generated; /* 0 or 's' (stored generated column) */
    char identity;  /* 0, 'a' (ALWAYS) or 'd' (BY DEFAULT) */
    bool has_default;
} pgs_column;

typedef struct pgs_strlist {
    char **v;
    int n;
} pgs_strlist;

typedef struct pgs_relinfo {
    bool exists;
    uint32_t oid;
    char *nspname;
    char *relname;
    char *qname;      /* "schema"."name", quoted for SQL */
    char relkind;     /* 'r' table, 'p' partitioned table */
    char replident;   /* 'd' 'n' 'f' 'i' */
    int64_t rows_est; /* pg_class.reltuples; 0 when not known */
    bool rows_known;  /* false: never vacuumed or analyzed (reltuples -1) */
    int64_t bytes;    /* pg_total_relation_size */
    int64_t pages;    /* relpages */
    pgs_column *cols;
    int ncols;
    pgs_strlist pk;       /* primary key columns, in key order */
    pgs_strlist ri;       /* replica identity index columns (USING INDEX) */
    char *partkey;        /* pg_get_partkeydef(), NULL if not partitioned */
    pgs_strlist partcols; /* partition key columns (plain columns only) */
} pgs_relinfo;

/* Resolves `name` with SQL identifier rules (to_regclass) and reads the
 * table's shape. A missing table is not an error: out->exists = false and
 * nspname/relname hold the parsed parts (parse_ident; schema defaults to
 * the current schema). Logs and returns false on query failure or a name
 * that is not a valid identifier. */
bool catalog_read_rel(PGconn *conn, const char *name, pgs_relinfo *out);
void catalog_relinfo_free(pgs_relinfo *rel);

/* The column of that name, or NULL. */
const pgs_column *catalog_column(const pgs_relinfo *rel, const char *name);

/* The migration's replication slot as one server sees it. */
typedef enum pgs_slot_health {
    PGS_SLOT_OK,      /* there and usable */
    PGS_SLOT_MISSING, /* not on this server: failed over to one without it, or dropped */
    PGS_SLOT_INVALID, /* there, but the server invalidated it: it can stream no more */
    PGS_SLOT_STANDBY, /* the server is a standby: it says nothing about the primary's slot */
} pgs_slot_health;

typedef struct pgs_slot_state {
    pgs_slot_health health;
    char reason[160]; /* PGS_SLOT_INVALID: why, in words with the setting to look at */
    char server[128]; /* the server asked: address:port */
} pgs_slot_state;

/* Columns describing the slot named by p, an SQL expression ("$1", or a
 * quoted literal where only simple queries go), and the server, for
 * catalog_slot_from_row; the same on 14 to 18 (newer columns through
 * to_jsonb). */
#define CATALOG_SLOT_COLUMNS_OF(p)                                                                 \
    "pg_is_in_recovery(),"                                                                         \
    " (SELECT count(*) FROM pg_replication_slots WHERE slot_name = " p "),"                        \
    " (SELECT wal_status FROM pg_replication_slots WHERE slot_name = " p "),"                      \
    " (SELECT coalesce(to_jsonb(s)->>'invalidation_reason',"                                       \
    "    CASE WHEN to_jsonb(s)->>'conflicting' = 'true' THEN 'conflict' END)"                      \
    "    FROM pg_replication_slots s WHERE slot_name = " p "),"                                    \
    " coalesce(host(inet_server_addr()), 'local socket') || ':' || current_setting('port')"
#define CATALOG_SLOT_COLUMNS  CATALOG_SLOT_COLUMNS_OF("$1")
#define CATALOG_SLOT_NCOLUMNS 5

/* The slot can stream no more: missing, or invalidated by the server. */
static inline bool catalog_slot_lost(const pgs_slot_state *s)
{
    return s->health == PGS_SLOT_MISSING || s->health == PGS_SLOT_INVALID;
}

/* Reads the CATALOG_SLOT_COLUMNS that start at column `col` of row 0. */
void catalog_slot_from_row(const PGresult *res, int col, pgs_slot_state *out);

/* Asks the server on the other end of `conn` (a replication connection
 * included: one simple query, the slot name as a literal) about the slot.
 * False, and nothing known, when the query fails. */
bool catalog_slot_check(PGconn *conn, const char *slot, pgs_slot_state *out);

void strlist_free(pgs_strlist *l);
bool strlist_contains(const pgs_strlist *l, const char *s);
/* Appends a copy of s; false on malloc failure. */
bool strlist_push(pgs_strlist *l, const char *s);

#endif
