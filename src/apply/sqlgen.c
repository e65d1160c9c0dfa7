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

/* ---- mapped relations ---- */

static bool reads_none(const sqlgen_map *mp, int c)
{
    for (int i = 0; i < mp->natts; i++)
        if (mp->deps[(size_t)c * (size_t)mp->natts + (size_t)i])
            return false;
    return true;
}

int sqlgen_map_written(const sqlgen_map *mp, char op, const uint8_t *mask, uint8_t *out)
{
    bool del = op == 'D' || op == 'd', ins = op == 'I' || op == 'i';
    for (int c = 0; c < mp->ncols; c++) {
        const uint8_t *d = &mp->deps[(size_t)c * (size_t)mp->natts];
        int sent = 0, unsent = 0;
        for (int i = 0; i < mp->natts; i++)
            if (d[i])
                mask[i] ? sent++ : unsent++;
        out[c] = (uint8_t)(!del && !unsent && (sent || ins));
        if (sent && unsent && !del)
            return c;
    }
    return -1;
}

static void add_num(buf *b, const char *fmt, int n)
{
    char num[96];
    snprintf(num, sizeof num, fmt, n);
    add(b, num);
}

/* The source row(s) as "u": for set, unnest() of one array per attribute
 * of cols ($(*p + 1)...); for row, one row of parameters $(*p + 1)... for
 * the attributes in mask, or (mask NULL) in cols. */
static void map_rows_ord(buf *b, const sqlgen_map *mp, bool set, const uint8_t *mask,
                         const int *cols, int ncols, int *p, bool ord);

static void map_rows(buf *b, const sqlgen_map *mp, bool set, const uint8_t *mask, const int *cols,
                     int ncols, int *p)
{
    map_rows_ord(b, mp, set, mask, cols, ncols, p, false);
}

char *sqlgen_map_rows(const sqlgen_map *mp, bool set, const uint8_t *mask, const int *cols,
                      int ncols)
{
    buf b = {.ok = true};
    int p = 0;
    map_rows_ord(&b, mp, set, mask, cols, ncols, &p, true);
    return done(&b);
}

/* ord: the rows numbered from 1 as u.pgshift_n. */
static void map_rows_ord(buf *b, const sqlgen_map *mp, bool set, const uint8_t *mask,
                         const int *cols, int ncols, int *p, bool ord)
{
    if (set && mp->rowtype) {
        /* one array of the source's own row type */
        add_num(b, "unnest($%d::", ++*p);
        add(b, mp->rowtype);
        add(b, ord ? "[]) WITH ORDINALITY AS u(" : "[]) AS u");
        for (int c = 0; ord && c < mp->nrnames; c++) {
            add(b, mp->rnames[c]);
            add(b, ", ");
        }
        add(b, ord ? "pgshift_n)" : "");
        return;
    }
    if (set) {
        add(b, "unnest(");
        for (int c = 0; c < ncols; c++) {
            add(b, c ? ", " : "");
            add_num(b, "$%d::", ++*p);
            add(b, mp->atypes[cols[c]]);
            add(b, "[]");
        }
        add(b, ord ? ") WITH ORDINALITY AS u(" : ") AS u(");
        for (int c = 0; c < ncols; c++) {
            add(b, c ? ", " : "");
            add(b, mp->anames[cols[c]]);
        }
        add(b, ord ? ", pgshift_n)" : ")");
        return;
    }
    add(b, "(SELECT ");
    int n = 0;
    /* the parameters come in attribute order (mask) or in cols' order */
    for (int j = 0; j < (mask ? mp->natts : ncols); j++) {
        int i = mask ? j : cols[j];
        if (mask && !mask[i])
            continue;
        add(b, n++ ? ", " : "");
        add_num(b, "$%d::", ++*p);
        add(b, mp->atypes[i]);
        add(b, " AS ");
        add(b, mp->anames[i]);
    }
    if (ord)
        add(b, n ? ", 1::bigint AS pgshift_n" : "1::bigint AS pgshift_n");
    add(b, n || ord ? ") AS u" : "NULL AS pgshift_none) AS u");
}

/* How many key columns there are: whole row, every column reading an
 * attribute; else one per key column. Column of key k in *c. */
static bool key_at(const sqlgen_map *mp, int k, int *c)
{
    if (!mp->whole_row) {
        if (k >= mp->nkey)
            return false;
        *c = mp->kcol[k];
        return true;
    }
    return k < mp->ncols && (*c = k, true);
}

/* "(SELECT <expr> AS pgshift_k<k>, ... FROM <rows>) AS k": the key
 * columns' values computed from the key attributes. */
static void map_keys(buf *b, const sqlgen_map *mp, bool set, const int *cols, int ncols, int *p)
{
    add(b, "(SELECT ");
    int n = 0, c;
    for (int k = 0; key_at(mp, k, &c); k++) {
        if (mp->whole_row && reads_none(mp, c))
            continue;
        add(b, n++ ? ", (" : "(");
        add(b, mp->cexprs[c]);
        add_num(b, ") AS pgshift_k%d", k);
    }
    add(b, " FROM ");
    map_rows(b, mp, set, NULL, cols, ncols, p);
    add(b, ") AS k");
}

/* "t.<col> = k.pgshift_k<k> AND ..." (whole row: IS NOT DISTINCT FROM, or
 * by text), `t` being the alias given. */
static void map_key_match(buf *b, const sqlgen_map *mp, const char *t)
{
    int n = 0, c;
    for (int k = 0; key_at(mp, k, &c); k++) {
        if (mp->whole_row && reads_none(mp, c))
            continue;
        const char *tt = mp->whole_row && mp->ctext_types ? mp->ctext_types[c] : NULL;
        add(b, n++ ? " AND " : "");
        add(b, t);
        add(b, ".");
        add(b, mp->cnames[c]);
        if (!mp->whole_row)
            add_num(b, " = k.pgshift_k%d", k);
        else if (tt == NULL)
            add_num(b, " IS NOT DISTINCT FROM k.pgshift_k%d", k);
        else {
            add_num(b, "::text IS NOT DISTINCT FROM (k.pgshift_k%d::", k);
            add(b, tt);
            add(b, ")::text");
        }
    }
}

/* Whole row: "(SELECT s.tableoid AS o, s.ctid AS c FROM <table> AS s,
 * <keys> WHERE <s is that row> LIMIT 1) AS pgshift_row": one row equal to
 * the old one. */
static void map_whole_row(buf *b, const sqlgen_map *mp, const int *katt, int nkatt, int *p)
{
    add(b, "(SELECT s.tableoid AS o, s.ctid AS c FROM ");
    add(b, mp->table);
    add(b, " AS s, ");
    map_keys(b, mp, false, katt, nkatt, p);
    add(b, " WHERE ");
    map_key_match(b, mp, "s");
    add(b, " LIMIT 1) AS pgshift_row");
}

static const char WHOLE_ROW_JOIN[] = " WHERE t.tableoid = pgshift_row.o AND t.ctid = pgshift_row.c";

/* The key attributes of a row statement, for map_rows (row mode). */
static int key_atts(const sqlgen_map *mp, int *out)
{
    if (mp->whole_row) {
        for (int i = 0; i < mp->natts; i++)
            out[i] = i;
        return mp->natts;
    }
    for (int k = 0; k < mp->nkey; k++)
        out[k] = mp->match[k];
    return mp->nkey;
}

static bool is_key_col(const sqlgen_map *mp, int c)
{
    for (int k = 0; !mp->whole_row && k < mp->nkey; k++)
        if (mp->kcol[k] == c)
            return true;
    return false;
}

/* The mapped UPDATE after "UPDATE": SET from a subquery m over the rows
 * (set: the key is unchanged, it comes with the row; row: the key from
 * the old key's parameters). */
static void map_update(buf *b, const sqlgen_map *mp, bool set, const uint8_t *mask, const int *cols,
                       int ncols, const uint8_t *written, const int *katt, int nkatt, int *p)
{
    add(b, "UPDATE ");
    add(b, mp->table);
    add(b, " AS t SET ");
    int n = 0;
    for (int c = 0; c < mp->ncols; c++) {
        /* set: the key is unchanged (key changes go row by row) */
        if (!written[c] || (set && is_key_col(mp, c)))
            continue;
        add(b, n++ ? ", " : "");
        add(b, mp->cnames[c]);
        add_num(b, " = m.pgshift_c%d", c);
    }
    if (n == 0) {
        /* Nothing to change: still find the row (the count is checked). */
        int c0 = 0;
        key_at(mp, 0, &c0);
        add(b, mp->cnames[c0]);
        add(b, " = t.");
        add(b, mp->cnames[c0]);
    }
    add(b, " FROM (SELECT ");
    n = 0;
    for (int c = 0; c < mp->ncols; c++) {
        if (!written[c] && !(set && is_key_col(mp, c)))
            continue;
        add(b, n++ ? ", (" : "(");
        add(b, mp->cexprs[c]);
        add_num(b, ") AS pgshift_c%d", c);
        if (set && is_key_col(mp, c)) {
            int k = 0;
            while (mp->kcol[k] != c)
                k++;
            add(b, ", (");
            add(b, mp->cexprs[c]);
            add_num(b, ") AS pgshift_k%d", k);
        }
    }
    add(b, n ? " FROM " : "NULL AS pgshift_none FROM ");
    map_rows(b, mp, set, mask, cols, ncols, p);
    add(b, ") AS m");
    if (set) {
        add(b, " WHERE ");
        /* the key values come with the row */
        int c;
        for (int k = 0; key_at(mp, k, &c); k++) {
            add(b, k ? " AND t." : "t.");
            add(b, mp->cnames[c]);
            add_num(b, " = m.pgshift_k%d", k);
        }
    } else {
        add(b, ", ");
        if (mp->whole_row) {
            map_whole_row(b, mp, katt, nkatt, p);
            add(b, WHOLE_ROW_JOIN);
        } else {
            map_keys(b, mp, false, katt, nkatt, p);
            add(b, " WHERE ");
            map_key_match(b, mp, "t");
        }
    }
}

char *sqlgen_map_stmt(const sqlgen_map *mp, char op, const uint8_t *mask, const int *cols,
                      int ncols, const uint8_t *written, int *nparams)
{
    buf b = {.ok = true};
    bool set = op == 'i' || op == 'u' || op == 'd';
    int p = 0;
    int *katt = malloc(sizeof(int) * (size_t)(mp->natts + mp->nkey + 1));
    if (katt == NULL)
        return NULL;
    int nkatt = key_atts(mp, katt);
    if (op == 'I' || op == 'i') {
        add(&b, "INSERT INTO ");
        add(&b, mp->table);
        add(&b, " (");
        for (int c = 0, n = 0; c < mp->ncols; c++)
            if (written[c]) {
                add(&b, n++ ? ", " : "");
                add(&b, mp->cnames[c]);
            }
        add(&b, ") SELECT ");
        for (int c = 0, n = 0; c < mp->ncols; c++)
            if (written[c]) {
                add(&b, n++ ? ", (" : "(");
                add(&b, mp->cexprs[c]);
                add(&b, ")");
            }
        add(&b, " FROM ");
        map_rows(&b, mp, set, mask, cols, ncols, &p);
    } else if (op == 'D' || op == 'd') {
        add(&b, "DELETE FROM ");
        add(&b, mp->table);
        add(&b, " AS t USING ");
        if (mp->whole_row) {
            map_whole_row(&b, mp, katt, nkatt, &p);
            add(&b, WHOLE_ROW_JOIN);
        } else {
            map_keys(&b, mp, set, set ? cols : katt, set ? ncols : nkatt, &p);
            add(&b, " WHERE ");
            map_key_match(&b, mp, "t");
        }
    } else {
        map_update(&b, mp, set, mask, cols, ncols, written, katt, nkatt, &p);
    }
    free(katt);
    *nparams = p;
    return done(&b);
}
