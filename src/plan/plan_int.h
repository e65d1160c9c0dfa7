/* plan_int.h: what the files of the plan parser share (private to src/plan).
 *
 *   plan.c         load, parse, defaults, free (the public entry points)
 *   plan_msg.c     error lines and key paths
 *   plan_yaml.c    libyaml's loaded document into a tree of ynodes
 *   plan_num.c     whole numbers, sizes and durations
 *   plan_sqlname.c table, column and object names as SQL reads them
 *   plan_keys.c    the key tables and the walk of a mapping through them
 *   plan_values.c  the single-value key types (name, conninfo, int, ...)
 *   plan_tables.c  the tables: list, partition, key and leave_behind
 */
#ifndef PGSHIFT_PLAN_INT_H
#define PGSHIFT_PLAN_INT_H

#include "pgshift/plan.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KEYPATH_LEN 256
#define QUOTE_LEN   96

/* ---------------------------------------------------------------------------
 * Errors: one line, "<path>:<line>: <key path>: <what is wrong>; <fix>"
 * (plan_msg.c).
 * ------------------------------------------------------------------------- */

typedef struct plan_ctx {
    const char *path;
    const char *yaml;
    size_t len;
    char *err;
    size_t errlen;
    /* The plan names a separate `target:` database: a target table may
     * then carry a source table's name. */
    bool other_db;
} plan_ctx;

/* Writes the error line; always returns false. */
__attribute__((format(printf, 4, 5))) bool plan_fail(plan_ctx *c, size_t line, const char *what,
                                                     const char *fmt, ...);
bool plan_oom(plan_ctx *c);

/* Writes s into buf as a double-quoted, escaped, length-capped string for
 * messages, and returns buf. */
const char *plan_quoted(char *buf, size_t n, const char *s);

/* "parent[i]"; a path too long for the buffer is cut with "...". */
void plan_keypath_index(char out[KEYPATH_LEN], const char *parent, size_t i);

/* "parent.key", with the key quoted when it is not a plain word. */
void plan_keypath_join(char out[KEYPATH_LEN], const char *parent, const char *key);

/* ---------------------------------------------------------------------------
 * The YAML tree (plan_yaml.c). Aliases (a node reached twice) and tags are
 * refused, so every node has exactly one parent and the tree is a tree.
 * ------------------------------------------------------------------------- */

typedef enum ynode_kind {
    YN_SCALAR,
    YN_SEQ,
    YN_MAP,
} ynode_kind;

typedef struct ynode {
    ynode_kind kind;
    size_t line;         /* 1-based */
    bool null;           /* plain empty, ~ or null */
    char *text;          /* scalars: the value, NUL-terminated */
    size_t len;          /* scalars: length, which may include NUL bytes */
    struct ynode **kids; /* sequences: items; mappings: key, value, key, value, ... */
    size_t nkids;
} ynode;

/* Loads c->yaml with libyaml's document API into a tree of one document.
 * NULL (with the error written) on syntax errors, a second document,
 * aliases, tags. */
ynode *ynode_read(plan_ctx *c);
void ynode_free(ynode *n);

/* "a list", "a mapping" or "a single value", for messages. */
const char *ynode_kind_name(const ynode *n);

/* The value of key in a mapping, or NULL. */
const ynode *ymap_get(const ynode *map, const char *key);

/* ---------------------------------------------------------------------------
 * Numbers, sizes and durations (plan_num.c).
 * ------------------------------------------------------------------------- */

typedef enum num_result {
    NUM_OK,
    NUM_SYNTAX,
    NUM_RANGE,
} num_result;

num_result plan_size_parse(const char *text, uint64_t *out);
num_result plan_duration_parse(const char *text, int *out);

/* A whole number in decimal, optionally negative. */
num_result plan_int_parse(const char *text, int64_t *out);

/* 60000 -> "60s", 1 -> "1ms", 7200000 -> "2h". */
const char *plan_duration_text(char *buf, size_t n, int64_t ms);

/* ---------------------------------------------------------------------------
 * SQL names: plain identifiers (case-folded) or "quoted" ones
 * (plan_sqlname.c).
 * ------------------------------------------------------------------------- */

#define SQL_NAME_PARTS 2

typedef struct sql_name {
    int nparts;
    char *part[SQL_NAME_PARTS]; /* as the server resolves them */
} sql_name;

/* Splits s into at most maxparts dot-separated identifiers, each plain
 * (folded to lower case, as the server does) or double-quoted (unquoted,
 * "" read as "). On failure, says why in why[] and leaves out cleared;
 * false with an empty why[] means out of memory. */
bool sql_name_parse(const char *s, int maxparts, sql_name *out, char *why, size_t whylen);
void sql_name_clear(sql_name *n);
bool sql_name_equal(const sql_name *a, const sql_name *b);

/* May ch continue an unquoted identifier? */
bool sql_ident_cont(unsigned char ch);

/* ---------------------------------------------------------------------------
 * The plan's keys, as one declarative table per mapping (plan_keys.c).
 * ------------------------------------------------------------------------- */

typedef enum field_type {
    F_NAME,     /* the plan name: [a-z0-9_]+ */
    F_CONNINFO, /* libpq conninfo or URI; never echoed */
    F_TEXT,     /* any non-empty text */
    F_BOOL,
    F_INT,              /* int, min..max */
    F_SIZE,             /* uint64_t bytes, at least min */
    F_DURATION,         /* int ms, min..max */
    F_SECTION,          /* a mapping filling the struct at offset */
    F_TABLES,           /* the list of tables */
    F_TABLE_NAME,       /* schema.table or table, kept as written */
    F_PARTITION,        /* the partition mapping, filling the spec at offset */
    F_SUBPARTITION,     /* the partition mapping one level down (allocated) */
    F_PARTITION_BY,     /* range|list|hash (<column>) */
    F_PARTITION_VALUES, /* list partitions: values or lists of values */
    F_NAME_LIST,        /* list of single identifiers, resolved */
    F_COLUMN_MAP,       /* mapping of column name -> SQL expression (pgs_plan_colmap) */
} field_type;

typedef struct plan_field {
    const char *key;
    field_type type;
    size_t offset;
    bool required;
    int64_t min, max;
    const char *example; /* a good value, shown in fixes */
    const struct plan_field *sub;
} plan_field;

/* Fills plan from the top-level mapping of the file. */
bool plan_fill_plan(plan_ctx *c, const ynode *root, pgs_plan *plan);

/* Fills base from a mapping by the table fields[]: unknown and repeated keys
 * are errors, keys are read in file order, required keys are checked last. */
bool plan_fill_map(plan_ctx *c, const ynode *map, const char *kpath, const plan_field *fields,
                   char *base);

/* The scalar text of v, or NULL (error written) if v is not a scalar. */
const char *plan_want_scalar(plan_ctx *c, const ynode *v, const char *kp, const plan_field *f);
bool plan_want_kind(plan_ctx *c, const ynode *v, ynode_kind kind, const char *kp, const char *fix);

/* ---------------------------------------------------------------------------
 * Single values (plan_values.c): v is the node (for its line), kp its key
 * path, s its text.
 * ------------------------------------------------------------------------- */

bool plan_fill_name(plan_ctx *c, const ynode *v, const char *kp, const char *s, char **dst);
bool plan_fill_conninfo(plan_ctx *c, const ynode *v, const char *kp, const char *s, char **dst);
bool plan_fill_bool(plan_ctx *c, const ynode *v, const char *kp, const char *s, bool *dst);
bool plan_fill_int(plan_ctx *c, const ynode *v, const char *kp, const plan_field *f, const char *s,
                   int *dst);
bool plan_fill_size(plan_ctx *c, const ynode *v, const char *kp, const plan_field *f, const char *s,
                    uint64_t *dst);
bool plan_fill_duration(plan_ctx *c, const ynode *v, const char *kp, const plan_field *f,
                        const char *s, int *dst);
bool plan_fill_text(plan_ctx *c, const ynode *v, const char *kp, const plan_field *f, const char *s,
                    char **dst);

/* ---------------------------------------------------------------------------
 * Tables (plan_tables.c).
 * ------------------------------------------------------------------------- */

bool plan_fill_tables(plan_ctx *c, const ynode *v, const char *kp, const plan_field *f,
                      pgs_plan *plan);
bool plan_fill_table_name(plan_ctx *c, const ynode *v, const char *kp, const char *s, char **dst);
bool plan_fill_partition(plan_ctx *c, const ynode *v, const char *kp, const plan_field *f,
                         pgs_partition_spec *t);
bool plan_fill_subpartition(plan_ctx *c, const ynode *v, const char *kp, const plan_field *f,
                            pgs_partition_spec **dst);
bool plan_fill_column_map(plan_ctx *c, const ynode *v, const char *kp, const plan_field *f,
                          pgs_plan_colmap *dst);
bool plan_fill_partition_by(plan_ctx *c, const ynode *v, const char *kp, const char *s,
                            pgs_partition_spec *t);
bool plan_fill_partition_values(plan_ctx *c, const ynode *v, const char *kp, const plan_field *f,
                                pgs_partition_spec *t);
bool plan_fill_name_list(plan_ctx *c, const ynode *v, const char *kp, const plan_field *f,
                         char ***dst);

#endif
