/* sqlgen.h (internal to src/apply): the text of the applier's statements.
 * Pure: names come in already quoted (and the table's name as a literal
 * where an error message needs it); every function returns a malloc'd
 * string, or NULL when out of memory.
 */
#ifndef PGSHIFT_APPLY_SQLGEN_H
#define PGSHIFT_APPLY_SQLGEN_H

#include <stdbool.h>
#include <stdint.h>

/* A relation as the statements see it. */
typedef struct sqlgen_rel {
    const char *table;  /* the target, quoted: "schema"."name" */
    int natts;          /* attributes of the source's Relation message */
    char *const *names; /* the quoted target column of each attribute */
    const int *match;   /* the attribute of each key column */
    int nmatch;
    /* No key (REPLICA IDENTITY FULL): the key is the whole old row, every
     * attribute in order, and an UPDATE or DELETE hits one row equal to it
     * (identical rows are interchangeable). `text_types`, per attribute:
     * NULL where the type has an = operator (compared with IS NOT DISTINCT
     * FROM), else the type's name, to compare the text of both. */
    bool whole_row;
    const char *const *text_types;
} sqlgen_rel;

/* True when attribute `att` is a key column. */
bool sqlgen_is_key(const sqlgen_rel *r, int att);

/* The row-by-row statement for op 'I', 'U' or 'D': INSERT of the
 * attributes set in `mask`; UPDATE setting them where the key matches;
 * DELETE where the key matches. Parameters: the masked attributes in
 * order, then (UPDATE, DELETE) the key columns; *nparams says how many.
 * With whole_row, UPDATE and DELETE find one row equal to the old one
 * (LIMIT 1) and act on it by (tableoid, ctid). UPDATE and DELETE come
 * bare: see sqlgen_expect. */
char *sqlgen_row(const sqlgen_rel *r, char op, const uint8_t *mask, int *nparams);

/* The set-based statement for op 'i', 'u' or 'd' over unnest($1::<table>[])
 * (an array of target records): INSERT of the attributes `cols`; UPDATE
 * setting the non-key ones of `cols` by key; DELETE by key. UPDATE and
 * DELETE come bare: see sqlgen_expect (with "$2::bigint"). */
char *sqlgen_set(const sqlgen_rel *r, char op, const int *cols, int ncols);

/* Wraps an UPDATE or DELETE so that the server itself fails it when it
 * does not touch exactly `expect` rows (an SQL expression: "1" or "$2"):
 * the target has then diverged from the source, and nothing may commit.
 * `what` names the operation and `table_lit` is the table's name as an SQL
 * literal, for the error. The error branch mentions count(*): a constant
 * expression there would be folded, and raised, at plan time. */
char *sqlgen_expect(const char *sql, const char *what, const char *table_lit, const char *expect);

/* TRUNCATE of the quoted `tables` (CASCADE is never added: the source's
 * cascade reached the tables it truncated, and those arrive in the same
 * message when published). */
char *sqlgen_truncate(const char *const *tables, int ntables, bool restart_identity);

#endif
