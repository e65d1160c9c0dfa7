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

/* A relation whose target columns are expressions over the source's
 * attributes (a column mapping, colmap.h). */
typedef struct sqlgen_map {
    const char *table;   /* the target, quoted */
    int natts;           /* attributes of the source's Relation message */
    char *const *anames; /* each attribute's quoted source name */
    char *const *atypes; /* each attribute's type, as the target names it (casts) */
    int ncols;           /* target columns written */
    char *const *cnames; /* quoted */
    char *const *cexprs; /* each column's expression over the attributes (bare names) */
    const uint8_t *deps; /* ncols x natts: column c reads attribute i */
    /* Keyed: per key column, the attribute (match) and the target column
     * that holds it one to one (kcol). Whole row (no key): the key is every
     * column that reads an attribute, compared IS NOT DISTINCT FROM, or by
     * its text where ctext_types[c] names the type. */
    const int *match;
    const int *kcol;
    int nkey;
    bool whole_row;
    const char *const *ctext_types;
    /* Set-based rows as one array of this row type (the source table's,
     * quoted; the target in the source's database), whose columns, quoted,
     * are rnames; NULL: one array per attribute. */
    const char *rowtype;
    char *const *rnames;
    int nrnames;
} sqlgen_map;

/* Which target columns a statement writes from the attributes in `mask`:
 * every column whose attributes were all sent (an INSERT also the ones that
 * read none: constants); an UPDATE leaves a column none of whose
 * attributes was sent. Returns -1, or the first column that reads both a
 * sent and an unsent attribute (an update that did not send an unchanged
 * TOAST value the expression needs). `out` gets 1 per written column. */
int sqlgen_map_written(const sqlgen_map *mp, char op, const uint8_t *mask, uint8_t *out);

/* The mapped statement for op 'I' 'U' 'D' (row: parameters as sqlgen_row:
 * the attributes in `mask`, then the key attributes) or 'i' 'u' 'd' (set:
 * one array per attribute of `cols`, unnest()ed together; UPDATE and
 * DELETE then take the row count as $<ncols+1>). `written` from
 * sqlgen_map_written. UPDATE and DELETE come bare: see sqlgen_expect. */
char *sqlgen_map_stmt(const sqlgen_map *mp, char op, const uint8_t *mask, const int *cols,
                      int ncols, const uint8_t *written, int *nparams);

/* The source rows of such a statement alone, numbered: "... AS u(<attributes>,
 * pgshift_n)" with the same parameters (for finding the row that fails). */
char *sqlgen_map_rows(const sqlgen_map *mp, bool set, const uint8_t *mask, const int *cols,
                      int ncols);

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
