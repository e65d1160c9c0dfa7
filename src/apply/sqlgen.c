/* sqlgen.c: the text of the applier's statements (see sqlgen.h). */
#include "sqlgen.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct buf {
    char *s;
    size_t len, cap;
    bool ok; /* false once an allocation failed: later appends do nothing */
} buf;

static void add(buf *b, const char *s)
{
    if (!b->ok)
        return;
    size_t n = strlen(s);
    if (b->len + n + 1 > b->cap) {
        size_t nc = (b->cap ? b->cap * 2 : 256) + n;
        char *nb = realloc(b->s, nc);
        if (nb == NULL) {
            b->ok = false;
            return;
        }
        b->s = nb;
        b->cap = nc;
    }
    memcpy(b->s + b->len, s, n + 1);
    b->len += n;
}

/* Appends "<name> = $<param>". */
static void add_param_eq(buf *b, const char *name, int param)
{
    char num[16];
    snprintf(num, sizeof num, " = $%d", param);
    add(b, name);
    add(b, num);
}

static char *done(buf *b)
{
    if (b->ok)
        return b->s;
    free(b->s);
    return NULL;
}

bool sqlgen_is_key(const sqlgen_rel *r, int att)
{
    for (int k = 0; k < r->nmatch; k++)
        if (r->match[k] == att)
            return true;
    return false;
}

static void row_insert(buf *b, const sqlgen_rel *r, const uint8_t *mask, int *p)
{
    char num[16];
    add(b, "INSERT INTO ");
    add(b, r->table);
    add(b, " (");
    for (int i = 0, first = 1; i < r->natts; i++)
        if (mask[i]) {
            add(b, first ? "" : ", ");
            add(b, r->names[i]);
            first = 0;
        }
    add(b, ") VALUES (");
    for (int i = 0; i < r->natts; i++)
        if (mask[i]) {
            snprintf(num, sizeof num, "%s$%d", *p ? ", " : "", *p + 1);
            ++*p;
            add(b, num);
        }
    add(b, ")");
}

/* " FROM|USING (SELECT one row equal to the old one) AS pgshift_row WHERE
 * t is that row": the key parameters are $(*p + 1)... */
static void whole_row_match(buf *b, const sqlgen_rel *r, int *p)
{
    char num[48];
    add(b, " (SELECT s.tableoid AS o, s.ctid AS c FROM ");
    add(b, r->table);
    add(b, " AS s WHERE ");
    for (int k = 0; k < r->nmatch; k++) {
        int att = r->match[k];
        const char *tt = r->text_types ? r->text_types[att] : NULL;
        add(b, k ? " AND s." : "s.");
        add(b, r->names[att]);
        snprintf(num, sizeof num, "$%d", ++*p);
        if (tt == NULL) {
            add(b, " IS NOT DISTINCT FROM ");
            add(b, num);
        } else {
            add(b, "::text IS NOT DISTINCT FROM (");
            add(b, num);
            add(b, "::");
            add(b, tt);
            add(b, ")::text");
        }
    }
    add(b, " LIMIT 1) AS pgshift_row WHERE t.tableoid = pgshift_row.o AND t.ctid = pgshift_row.c");
}

char *sqlgen_row(const sqlgen_rel *r, char op, const uint8_t *mask, int *nparams)
{
    buf b = {.ok = true};
    int p = 0;
    if (op == 'I') {
        row_insert(&b, r, mask, &p);
    } else if (r->whole_row) {
        add(&b, op == 'U' ? "UPDATE " : "DELETE FROM ");
        add(&b, r->table);
        add(&b, op == 'U' ? " AS t SET " : " AS t USING");
        for (int i = 0; op == 'U' && i < r->natts; i++)
            if (mask[i]) {
                add(&b, p ? ", " : "");
                add_param_eq(&b, r->names[i], ++p);
            }
        if (op == 'U')
            add(&b, " FROM");
        whole_row_match(&b, r, &p);
    } else {
        if (op == 'U') {
            add(&b, "UPDATE ");
            add(&b, r->table);
            add(&b, " SET ");
            for (int i = 0; i < r->natts; i++)
                if (mask[i]) {
                    add(&b, p ? ", " : "");
                    add_param_eq(&b, r->names[i], ++p);
                }
        } else {
            add(&b, "DELETE FROM ");
            add(&b, r->table);
        }
        add(&b, " WHERE ");
        for (int k = 0; k < r->nmatch; k++) {
            add(&b, k ? " AND " : "");
            add_param_eq(&b, r->names[r->match[k]], ++p);
        }
    }
    *nparams = p;
    return done(&b);
}

char *sqlgen_set(const sqlgen_rel *r, char op, const int *cols, int ncols)
{
    buf b = {.ok = true};
    if (op == 'i') {
        add(&b, "INSERT INTO ");
        add(&b, r->table);
        add(&b, " (");
        for (int c = 0; c < ncols; c++) {
            add(&b, c ? ", " : "");
            add(&b, r->names[cols[c]]);
        }
        add(&b, ") SELECT ");
        for (int c = 0; c < ncols; c++) {
            add(&b, c ? ", u." : "u.");
            add(&b, r->names[cols[c]]);
        }
        add(&b, " FROM unnest($1::");
        add(&b, r->table);
        add(&b, "[]) AS u");
        return done(&b);
    }
    add(&b, op == 'd' ? "DELETE FROM " : "UPDATE ");
    add(&b, r->table);
    add(&b, op == 'd' ? " AS t USING " : " AS t SET ");
    int nset = 0;
    for (int c = 0; op == 'u' && c < ncols; c++) {
        if (sqlgen_is_key(r, cols[c]))
            continue;
        add(&b, nset++ ? ", " : "");
        add(&b, r->names[cols[c]]);
        add(&b, " = u.");
        add(&b, r->names[cols[c]]);
    }
    add(&b, op == 'u' ? " FROM unnest($1::" : "unnest($1::");
    add(&b, r->table);
    add(&b, "[]) AS u WHERE ");
    for (int k = 0; k < r->nmatch; k++) {
        add(&b, k ? " AND t." : "t.");
        add(&b, r->names[r->match[k]]);
        add(&b, " = u.");
        add(&b, r->names[r->match[k]]);
    }
    return done(&b);
}

char *sqlgen_expect(const char *sql, const char *what, const char *table_lit, const char *expect)
{
    char *out = NULL;
    if (asprintf(&out,
                 "WITH x AS (%s RETURNING 1) SELECT CASE WHEN count(*) = %s THEN 1"
                 " ELSE ('pgshift: %s on ' || %s || ' matched ' || count(*) ||"
                 " ' rows instead of ' || %s || '; the target has diverged from the"
                 " source')::int END FROM x",
                 sql, expect, what, table_lit, expect) < 0)
        return NULL;
    return out;
}

char *sqlgen_truncate(const char *const *tables, int ntables, bool restart_identity)
{
    buf b = {.ok = true};
    add(&b, "TRUNCATE ");
    for (int i = 0; i < ntables; i++) {
        add(&b, i ? ", " : "");
        add(&b, tables[i]);
    }
    if (restart_identity)
        add(&b, " RESTART IDENTITY");
    return done(&b);
}
