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

void strlist_free(pgs_strlist *l);
bool strlist_contains(const pgs_strlist *l, const char *s);
/* Appends a copy of s; false on malloc failure. */
bool strlist_push(pgs_strlist *l, const char *s);

#endif
