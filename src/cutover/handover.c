/* handover.c: the objects that follow a table by OID (views, foreign keys,
 * sequences, grants, triggers, policies, rules, publications) and what the
 * cutover does with each. One place builds both the dry run's listing and
 * the SQL the cutover runs, so `plan` says exactly what will happen. */
#include "pgshift/cutover.h"

#include "pgshift/colmap.h"

#include "pgshift/log.h"
#include "pgshift/pg.h"

#include <ctype.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool addf(pgs_strlist *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static bool addf(pgs_strlist *l, const char *fmt, ...)
{
    char *s = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    bool ok = n >= 0 && strlist_push(l, s);
    free(s);
    return ok;
}

static bool left_behind(const pgs_mtable *t, const char *name)
{
    for (char **p = t->spec->leave_behind; p && *p; p++)
        if (strcmp(*p, name) == 0)
            return true;
    return false;
}

static bool add_fk_step(handover *h, char kind, const char *nspname, const char *relname,
                        const char *conname)
{
    handover_fk *v = realloc(h->validate, sizeof *v * (size_t)(h->nvalidate + 1));
    if (v == NULL)
        return false;
    h->validate = v;
    handover_fk *f = &v[h->nvalidate];
    f->kind = kind;
    f->nspname = strdup(nspname);
    f->relname = strdup(relname);
    f->conname = strdup(conname);
    h->nvalidate++;
    return f->nspname && f->relname && f->conname;
}

void handover_free(handover *h)
{
    strlist_free(&h->lock);
    strlist_free(&h->after);
    for (int i = 0; i < h->nvalidate; i++) {
        free(h->validate[i].nspname);
        free(h->validate[i].relname);
        free(h->validate[i].conname);
    }
    free(h->validate);
    h->validate = NULL;
    h->nvalidate = 0;
    strlist_free(&h->notes);
    strlist_free(&h->problems);
}

#define V(r, i, j) PQgetvalue((r), (i), (j))

/* A view of a mapped table: what it reads of the source. Each column it
 * reads must be carried to the new table as it is (colmap_carrier), maybe
 * renamed (the view is then re-created on the new name, its own column
 * names unchanged) or of another type (dropped and created again: CREATE
 * OR REPLACE cannot change a view column's type). */
typedef struct view_cols {
    pgs_strlist from, to; /* renames: source column -> new table's column */
    bool retyped;         /* some column it reads changes type */
    char problem[512];
} view_cols;

static bool view_reads(PGconn *conn, const char *const *p, const char *view_oid, pgs_mtable *t,
                       view_cols *vc)
{
    memset(vc, 0, sizeof *vc);
    PGresult *r = pg_query(conn, "reading the columns a view reads",
                           "SELECT DISTINCT a.attname FROM pg_rewrite w"
                           "  JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass"
                           "   AND d.objid = w.oid AND d.refclassid = 'pg_class'::regclass"
                           "  JOIN pg_attribute a ON a.attrelid = d.refobjid"
                           "   AND a.attnum = d.refobjsubid"
                           " WHERE w.ev_class = $1::oid AND d.refobjid = $2::oid"
                           "   AND d.refobjsubid > 0 ORDER BY 1",
                           2, (const char *[]){view_oid, p[0]});
    if (r == NULL)
        return false;
    bool ok = true;
    for (int i = 0; ok && i < PQntuples(r); i++) {
        const char *col = PQgetvalue(r, i, 0);
        const pgs_mcol *mc = colmap_carrier(&t->map, col);
        if (mc == NULL) {
            const pgs_mcol *any = NULL;
            for (int c = 0; c < t->map.ncols && !any; c++)
                if (strlist_contains(&t->map.cols[c].deps, col))
                    any = &t->map.cols[c];
            if (any)
                snprintf(vc->problem, sizeof vc->problem,
                         "reads column \"%s\" of %s, which the column mapping changes (%s <- "
                         "%s)",
                         col, t->src.qname, any->name, any->expr);
            else
                snprintf(vc->problem, sizeof vc->problem,
                         "reads column \"%s\" of %s, which the column mapping drops", col,
                         t->src.qname);
            break;
        }
        if (strcmp(mc->name, col) != 0)
            ok = strlist_push(&vc->from, col) && strlist_push(&vc->to, mc->name);
        vc->retyped = vc->retyped || mc->converted;
    }
    PQclear(r);
    return ok;
}

/* Under the swap's lock: the view's definition as it reads with the
 * source's columns renamed to the new table's names (renamed and back in
 * a savepoint rolled back). NULL on failure, with why. */
static char *renamed_viewdef(PGconn *conn, const pgs_mtable *t, const char *view_oid,
                             const view_cols *vc, char *why, size_t whylen)
{
    PGresult *r = PQexec(conn, "SAVEPOINT pgshift_view");
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    if (!ok) {
        snprintf(why, whylen, "%s", PQerrorMessage(conn));
        return NULL;
    }
    char *def = NULL;
    /* through temporary names first, so that two columns may trade names */
    for (int pass = 0; ok && pass < 2; pass++)
        for (int i = 0; ok && i < vc->from.n; i++) {
            char tmp[40];
            snprintf(tmp, sizeof tmp, "pgshift_view_col_%d", i);
            char *a = pg_ident(conn, pass ? tmp : vc->from.v[i]);
            char *b = pg_ident(conn, pass ? vc->to.v[i] : tmp);
            char *sql = NULL;
            ok = a && b &&
                 asprintf(&sql, "ALTER TABLE %s RENAME COLUMN %s TO %s", t->src.qname, a, b) >= 0;
            free(a);
            free(b);
            if (ok) {
                r = PQexec(conn, sql);
                ok = PQresultStatus(r) == PGRES_COMMAND_OK;
                if (!ok)
                    pg_result_error_line(r, why, whylen);
                PQclear(r);
            }
            free(sql);
        }
    if (ok) {
        r = PQexecParams(conn, "SELECT pg_get_viewdef($1::oid)", 1, NULL,
                         (const char *[]){view_oid}, NULL, NULL, 0);
        if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
            def = strdup(PQgetvalue(r, 0, 0));
        else
            pg_result_error_line(r, why, whylen);
        PQclear(r);
    }
    r = PQexec(conn, "ROLLBACK TO SAVEPOINT pgshift_view");
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        free(def);
        def = NULL;
        snprintf(why, whylen, "%s", PQerrorMessage(conn));
    }
    PQclear(r);
    return def;
}

/* A view that must be dropped and created again: its owner, grants and
 * comment come along; other views on it would not survive the drop. */
static bool view_recreate(PGconn *conn, const char *view_oid, const char *name, const char *opts,
                          const char *def, handover *h)
{
    PGresult *r = pg_query(
        conn, "reading a view's owner, grants and dependents",
        "SELECT quote_ident(pg_get_userbyid(c.relowner)),"
        " obj_description(c.oid, 'pg_class'),"
        " (SELECT string_agg(DISTINCT format('%I.%I', n.nspname, x.relname), ', ')"
        "    FROM pg_depend d JOIN pg_rewrite w ON w.oid = d.objid"
        "    JOIN pg_class x ON x.oid = w.ev_class JOIN pg_namespace n ON n.oid = x.relnamespace"
        "   WHERE d.classid = 'pg_rewrite'::regclass AND d.refobjid = c.oid"
        "     AND w.ev_class <> c.oid)"
        "  FROM pg_class c WHERE c.oid = $1::oid",
        1, (const char *[]){view_oid});
    if (r == NULL || PQntuples(r) != 1) {
        PQclear(r);
        return false;
    }
    bool ok;
    PGresult *lost = pg_query(
        conn, "reading what a view carries",
        "SELECT concat_ws(', ',"
        " (SELECT 'triggers ' || string_agg(tgname, ', ') FROM pg_trigger WHERE tgrelid = $1::oid),"
        " (SELECT 'rules ' || string_agg(rulename, ', ') FROM pg_rewrite"
        "   WHERE ev_class = $1::oid AND rulename <> '_RETURN'),"
        " (SELECT 'column defaults' FROM pg_attrdef WHERE adrelid = $1::oid LIMIT 1),"
        " (SELECT 'column grants' FROM pg_attribute WHERE attrelid = $1::oid"
        "   AND attacl IS NOT NULL LIMIT 1),"
        " (SELECT 'column comments' FROM pg_description WHERE objoid = $1::oid"
        "   AND classoid = 'pg_class'::regclass AND objsubid > 0 LIMIT 1))",
        1, (const char *[]){view_oid});
    if (lost == NULL) {
        PQclear(r);
        return false;
    }
    if (PQgetvalue(lost, 0, 0)[0]) {
        ok = addf(&h->problems,
                  "view %s changes the type of a column (the column mapping), so it must be "
                  "dropped and created again, which would lose its %s; fix: drop it and "
                  "re-create it after the cutover, or leave_behind: [...] the view",
                  name, PQgetvalue(lost, 0, 0));
        PQclear(lost);
        PQclear(r);
        return ok;
    }
    PQclear(lost);
    if (!PQgetisnull(r, 0, 2)) {
        ok = addf(&h->problems,
                  "view %s changes the type of a column (the column mapping), so it must be "
                  "dropped and created again, but %s read it; fix: drop them and re-create them "
                  "after the cutover, or leave_behind: [...] the view",
                  name, PQgetvalue(r, 0, 2));
        PQclear(r);
        return ok;
    }
    ok = addf(&h->after, "DROP VIEW %s", name) &&
         addf(&h->after, "CREATE VIEW %s%s%s%s AS %s", name, opts[0] ? " WITH (" : "", opts,
              opts[0] ? ")" : "", def) &&
         addf(&h->after, "ALTER VIEW %s OWNER TO %s", name, PQgetvalue(r, 0, 0));
    if (ok && !PQgetisnull(r, 0, 1)) {
        char *lit = PQescapeLiteral(conn, PQgetvalue(r, 0, 1), strlen(PQgetvalue(r, 0, 1)));
        ok = lit && addf(&h->after, "COMMENT ON VIEW %s IS %s", name, lit);
        PQfreemem(lit);
    }
    PQclear(r);
    r = ok ? pg_query(conn, "reading a view's grants",
                      "SELECT format('GRANT %s ON TABLE %s TO %s%s', g.privilege_type, $2::text,"
                      "  CASE WHEN g.grantee = 0 THEN 'PUBLIC'"
                      "  ELSE quote_ident(pg_get_userbyid(g.grantee)) END,"
                      "  CASE WHEN g.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END)"
                      "  FROM pg_class c, aclexplode(c.relacl) g"
                      " WHERE c.oid = $1::oid AND g.grantee <> c.relowner",
                      2, (const char *[]){view_oid, name})
           : NULL;
    ok = ok && r != NULL;
    for (int i = 0; ok && r && i < PQntuples(r); i++)
        ok = addf(&h->after, "%s", PQgetvalue(r, i, 0));
    PQclear(r);
    return ok;
}

/* A view of a mapped table (see view_cols). */
static bool mapped_view(PGconn *conn, const char *const *p, pgs_mtable *t, bool in_swap,
                        PGresult *r, int i, handover *h)
{
    const char *name = V(r, i, 0), *opts = V(r, i, 3), *view_oid = V(r, i, 5);
    view_cols vc;
    if (!view_reads(conn, p, view_oid, t, &vc))
        return false;
    bool ok = true;
    if (vc.problem[0]) {
        ok = addf(&h->problems,
                  "view %s %s; fix: drop it and re-create it on the new columns after the "
                  "cutover, or leave_behind: [%s]",
                  name, vc.problem, V(r, i, 4));
    } else if (vc.from.n == 0 && !vc.retyped) {
        ok = addf(&h->notes, "view %s: re-created to read the new table", name) &&
             addf(&h->after, "CREATE OR REPLACE VIEW %s%s%s%s AS %s", name,
                  opts[0] ? " WITH (" : "", opts, opts[0] ? ")" : "", V(r, i, 2));
    } else {
        char renames[256] = "";
        for (int k = 0; k < vc.from.n; k++) {
            size_t n = strlen(renames);
            snprintf(renames + n, sizeof renames - n, "%s%s -> %s", k ? ", " : "", vc.from.v[k],
                     vc.to.v[k]);
        }
        ok = addf(&h->notes, "view %s: dropped and created again on the new table%s%s%s", name,
                  vc.from.n ? " (reading " : "", renames, vc.from.n ? ")" : "");
        char why[512] = "";
        char *def = !in_swap    ? strdup(V(r, i, 2))
                    : vc.from.n ? renamed_viewdef(conn, t, view_oid, &vc, why, sizeof why)
                                : strdup(V(r, i, 2));
        if (ok && def == NULL)
            ok = addf(&h->problems, "view %s could not be read on the new column names: %s", name,
                      why);
        else if (ok)
            ok = view_recreate(conn, view_oid, name, opts, def, h);
        free(def);
    }
    strlist_free(&vc.from);
    strlist_free(&vc.to);
    return ok;
}

/* A mapped table: the triggers and policies that name a source column
 * (and are not on the target already), and the column grants, are carried
 * by that column's name; a column the new table does not have under the
 * same name would fail the swap. */
static bool mapped_refs(PGconn *conn, const char *const *p, pgs_mtable *t, handover *h)
{
    PGresult *r = pg_query(
        conn, "reading what names the source's columns",
        "SELECT CASE d.classid WHEN 'pg_trigger'::regclass THEN 'trigger ' || g.tgname"
        "        ELSE 'policy ' || y.polname END, a.attname, coalesce(g.tgname, y.polname)"
        "  FROM pg_depend d"
        "  JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid"
        "  LEFT JOIN pg_trigger g ON d.classid = 'pg_trigger'::regclass AND g.oid = d.objid"
        "  LEFT JOIN pg_policy y ON d.classid = 'pg_policy'::regclass AND y.oid = d.objid"
        " WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid = $1::oid"
        "   AND d.refobjsubid > 0"
        "   AND (g.oid IS NOT NULL AND NOT g.tgisinternal AND NOT EXISTS (SELECT 1 FROM pg_trigger "
        "x"
        "          WHERE x.tgrelid = $2::oid AND x.tgname = g.tgname)"
        "     OR y.oid IS NOT NULL AND NOT EXISTS (SELECT 1 FROM pg_policy x"
        "          WHERE x.polrelid = $2::oid AND x.polname = y.polname))"
        " UNION ALL SELECT 'a column grant', attname, NULL FROM pg_attribute"
        "  WHERE attrelid = $1::oid AND attnum > 0 AND attacl IS NOT NULL"
        " ORDER BY 1, 2",
        2, p);
    if (r == NULL)
        return false;
    bool ok = true;
    for (int i = 0; ok && i < PQntuples(r); i++) {
        const char *what = V(r, i, 0), *col = V(r, i, 1);
        const pgs_mcol *mc = colmap_col(&t->map, col);
        if (mc && mc->deps.n == 1 && strcmp(mc->deps.v[0], col) == 0 &&
            (!mc->planned || colmap_is_cast_of(mc->expr, col)))
            continue;
        if (!PQgetisnull(r, i, 2) && left_behind(t, V(r, i, 2)))
            continue;
        ok = addf(&h->problems,
                  "%s names column \"%s\" of %s, which the new table does not have as it is "
                  "(the column mapping renames, changes or drops it); fix: re-create it on the "
                  "new columns after the cutover%s",
                  what, col, t->src.qname,
                  PQgetisnull(r, i, 2) ? " (REVOKE the column grant first)" : ", or leave_behind");
    }
    PQclear(r);
    return ok;
}

static bool ident_char(unsigned char c)
{
    return isalnum(c) || c == '_' || c == '$' || c >= 0x80;
}

/* True when `text` holds `word` as a whole identifier (any case, quoted or
 * not). */
static bool mentions(const char *text, const char *word)
{
    size_t n = strlen(word);
    for (const char *s = text; n > 0 && (s = strcasestr(s, word)) != NULL; s++)
        if ((s == text || !ident_char((unsigned char)s[-1])) && !ident_char((unsigned char)s[n]))
            return true;
    return false;
}

/* A mapped table's triggers that would follow it to the new table: their
 * function body or arguments naming a source column the new table does not
 * have under that name (the mapping renames or drops it) would fail the
 * first write after the swap ("record "new" has no field ..."). The server
 * does not record what a body reads, so this is a search for the column's
 * name as a word; a mention in a comment refuses too, with the same fixes. */
static bool mapped_trigger_bodies(PGconn *conn, const char *const *p, pgs_mtable *t, handover *h)
{
    PGresult *r = pg_query(
        conn, "reading the trigger functions on the source",
        "SELECT g.tgname, g.tgfoid::regprocedure::text, p.prosrc,"
        "       substr(pg_get_triggerdef(g.oid), strpos(pg_get_triggerdef(g.oid), ' EXECUTE '))"
        "  FROM pg_trigger g JOIN pg_proc p ON p.oid = g.tgfoid"
        " WHERE g.tgrelid = $1::oid AND NOT g.tgisinternal"
        "   AND NOT EXISTS (SELECT 1 FROM pg_trigger x WHERE x.tgrelid = $2::oid"
        "                     AND x.tgname = g.tgname)"
        " ORDER BY 1",
        2, p);
    PGresult *c = r ? pg_query(conn, "reading the source's columns",
                               "SELECT attname FROM pg_attribute WHERE attrelid = $1::oid"
                               "   AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                               1, p)
                    : NULL;
    bool ok = r && c;
    for (int i = 0; ok && i < PQntuples(r); i++) {
        const char *name = V(r, i, 0), *fn = V(r, i, 1), *body = V(r, i, 2), *call = V(r, i, 3);
        if (left_behind(t, name))
            continue;
        for (int k = 0; ok && k < PQntuples(c); k++) {
            const char *col = V(c, k, 0);
            if (colmap_col(&t->map, col) != NULL)
                continue;
            bool in_body = mentions(body, col);
            if (!in_body && !mentions(call, col))
                continue;
            char what[512];
            if (in_body)
                snprintf(what, sizeof what, "the body of its function %s names", fn);
            else
                snprintf(what, sizeof what, "its arguments name");
            ok = addf(&h->problems,
                      "trigger %s: %s \"%s\", a column of %s the new table does not have "
                      "(the column mapping renames or drops it), so the trigger would fail the "
                      "first write after the swap; fix: create the trigger under the same name "
                      "on %s, with a function that reads the new columns (it is then not carried "
                      "over), or leave_behind it",
                      name, what, col, t->src.qname, t->tgt.qname);
            break;
        }
    }
    PQclear(c);
    PQclear(r);
    return ok;
}

/* Views and materialized views reading the table. */
static bool views(PGconn *conn, const char *const *p, pgs_mtable *t, bool in_swap, handover *h)
{
    PGresult *r = pg_query(
        conn, "reading views on the source",
        "SELECT format('%I.%I', n.nspname, v.relname), v.relkind, pg_get_viewdef(v.oid),"
        "       coalesce(array_to_string(v.reloptions, ', '), ''), v.relname, v.oid"
        "  FROM (SELECT DISTINCT w.ev_class AS oid FROM pg_depend d"
        "          JOIN pg_rewrite w ON w.oid = d.objid"
        "         WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass"
        "           AND d.refobjid = $1::oid AND w.ev_class <> $1::oid) x"
        "  JOIN pg_class v ON v.oid = x.oid JOIN pg_namespace n ON n.oid = v.relnamespace"
        " ORDER BY 1",
        1, p);
    if (r == NULL)
        return false;
    bool ok = true;
    for (int i = 0; ok && i < PQntuples(r); i++) {
        const char *name = V(r, i, 0), *opts = V(r, i, 3);
        if (left_behind(t, V(r, i, 4)))
            ok = addf(&h->notes, "view %s: left behind, keeps reading the old table", name);
        else if (V(r, i, 1)[0] == 'm')
            ok = addf(&h->problems,
                      "materialized view %s reads %s and cannot be re-pointed in place; fix: "
                      "drop it and re-create it after the cutover, or leave_behind: [%s]",
                      name, t->src.qname, V(r, i, 4));
        else if (t->map.mapped)
            ok = mapped_view(conn, p, t, in_swap, r, i, h);
        else
            ok = addf(&h->notes, "view %s: re-created to read the new table", name) &&
                 addf(&h->after, "CREATE OR REPLACE VIEW %s%s%s%s AS %s", name,
                      opts[0] ? " WITH (" : "", opts, opts[0] ? ")" : "", V(r, i, 2));
    }
    PQclear(r);
    return ok;
}

/* Foreign keys of other tables that reference the source: dropped and
 * added again on the new table NOT VALID inside the swap, validated after. */
/* A referenced column (of a JSON array of names) that the column mapping
 * renames, changes or drops: the key, re-created from its definition, would
 * name a column the new table does not have as it is. Says which in why. */
static bool fk_key_moved(const pgs_mtable *t, const char *names, char *why, size_t n)
{
    json_t *a = json_loads(names, 0, NULL);
    bool moved = false;
    for (size_t i = 0; !moved && json_is_array(a) && i < json_array_size(a); i++) {
        const char *c = json_string_value(json_array_get(a, i));
        const pgs_mcol *mc = c ? colmap_carrier(&t->map, c) : NULL;
        if (c == NULL)
            continue;
        if (mc == NULL) {
            snprintf(why, n, "\"%s\", which the column mapping changes or drops", c);
            moved = true;
        } else if (strcmp(mc->name, c) != 0) {
            snprintf(why, n, "\"%s\", which the column mapping renames to \"%s\"", c, mc->name);
            moved = true;
        }
    }
    json_decref(a);
    return moved;
}

static bool fks_in(PGconn *conn, const char *const *p, pgs_migration *m, pgs_mtable *t, handover *h)
{
    PGresult *r = pg_query(
        conn, "reading foreign keys that reference the source",
        "SELECT c.conname, format('%I.%I', n.nspname, k.relname), pg_get_constraintdef(c.oid),"
        "       k.relkind,"
        "       $2::oid = 0 OR EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = $2::oid"
        "         AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL"
        "         AND (SELECT array_agg(a.attname ORDER BY a.attname) FROM unnest(i.indkey) x"
        "                JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = x)"
        "           = (SELECT array_agg(a.attname ORDER BY a.attname) FROM unnest(c.confkey) x"
        "                JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = x)),"
        "       (SELECT string_agg(a.attname, ', ') FROM unnest(c.confkey) x"
        "          JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = x),"
        "       c.conrelid, n.nspname, k.relname,"
        "       (SELECT json_agg(a.attname) FROM unnest(c.confkey) x"
        "          JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = x)"
        "  FROM pg_constraint c JOIN pg_class k ON k.oid = c.conrelid"
        "  JOIN pg_namespace n ON n.oid = k.relnamespace"
        " WHERE c.contype = 'f' AND c.confrelid = $1::oid AND c.conrelid <> $1::oid"
        "   AND c.conparentid = 0 ORDER BY 2, 1",
        2, p);
    if (r == NULL)
        return false;
    bool ok = true;
    char why[256];
    for (int i = 0; ok && i < PQntuples(r); i++) {
        const char *con = V(r, i, 0), *tab = V(r, i, 1), *def = V(r, i, 2);
        char *qcon = pg_ident(conn, con);
        bool unique_ok = V(r, i, 4)[0] == 't';
        /* A target pgshift creates has the source's keys plus the partition
         * columns (of both levels). */
        if (!t->tgt.exists && t->spec->part.column) {
            char cols[512];
            snprintf(cols, sizeof cols, ", %s, ", V(r, i, 5));
            for (const pgs_partition_spec *sp = &t->spec->part; sp; sp = sp->sub) {
                char want[160];
                snprintf(want, sizeof want, ", %s, ", sp->column);
                unique_ok = unique_ok && strstr(cols, want) != NULL;
            }
        }
        bool in_plan = false;
        for (int j = 0; j < m->ntables; j++)
            in_plan |= m->tables[j].src.oid == (uint32_t)strtoul(V(r, i, 6), NULL, 10);
        if (qcon == NULL)
            ok = false;
        else if (left_behind(t, con))
            ok = addf(&h->notes,
                      "foreign key %s on %s: left behind, keeps referencing the old table", con,
                      tab);
        else if (in_plan)
            /* A key follows its table's OID: the old tables keep it between
             * them, and the referencing table's own hand-over (fks_out)
             * gives its new table the key to this one's new table. */
            ok = addf(&h->notes,
                      "foreign key %s links %s and %s, both moved by this plan: the old tables "
                      "keep it between them, and the new ones get it between them",
                      con, tab, t->src.qname);
        else if (t->map.mapped && fk_key_moved(t, V(r, i, 9), why, sizeof why))
            ok = addf(&h->problems,
                      "foreign key %s on %s references column %s; the new table's key is not "
                      "under that name, so the key cannot be re-created as it is; fix: drop it "
                      "before the cutover and add it on the new column after, or leave_behind: "
                      "[%s]",
                      con, tab, why, con);
        else if (!unique_ok)
            ok = addf(&h->problems,
                      "foreign key %s on %s references (%s), but the new table has no unique key "
                      "on exactly those columns (a partitioned table's keys must include the "
                      "partition column); fix: include the partition column in the foreign key, "
                      "or leave_behind: [%s]",
                      con, tab, V(r, i, 5), con);
        else if (V(r, i, 3)[0] == 'p')
            ok = addf(&h->problems,
                      "foreign key %s is on partitioned table %s, which cannot take it NOT VALID; "
                      "re-creating it would scan %s under the lock; fix: drop it before the "
                      "cutover and add it after, or leave_behind: [%s]",
                      con, tab, tab, con);
        else
            ok = addf(&h->notes,
                      "foreign key %s on %s: re-created to reference the new table (NOT VALID, "
                      "then validated)",
                      con, tab) &&
                 (strlist_contains(&h->lock, tab) || strlist_push(&h->lock, tab)) &&
                 addf(&h->after, "ALTER TABLE %s DROP CONSTRAINT %s", tab, qcon) &&
                 addf(&h->after, "ALTER TABLE %s ADD CONSTRAINT %s %s NOT VALID", tab, qcon, def) &&
                 add_fk_step(h, 'v', V(r, i, 7), V(r, i, 8), con);
        free(qcon);
    }
    PQclear(r);
    return ok;
}

/* The leaves of the target (quoted, and their schema and name), for a
 * foreign key the server cannot add NOT VALID to the partitioned table. */
static PGresult *target_leaves(PGconn *conn, const char *const *p)
{
    return pg_query(conn, "reading the target's partitions",
                    "SELECT format('%I.%I', n.nspname, c.relname), n.nspname, c.relname"
                    "  FROM pg_partition_tree($1::oid) t JOIN pg_class c ON c.oid = t.relid"
                    "  JOIN pg_namespace n ON n.oid = c.relnamespace"
                    " WHERE c.relkind = 'r' ORDER BY 1",
                    1, (const char *[]){p[1]});
}

/* A foreign key of the source missing on the target, carried by the swap:
 * added NOT VALID (the application's new rows are checked from the
 * commit on), validated after the commit (no lock that stops writes).
 * Not before the cutover: until then the target lags the referenced
 * table, so a key there could refuse the application's own deletes. On a
 * partitioned target before 18, which cannot take it NOT VALID: NOT VALID
 * on each partition, each validated, then added to the table itself. */
static bool fk_carry(PGconn *conn, const char *const *p, pgs_mtable *t, handover *h,
                     const char *con, const char *def)
{
    bool parted = t->tgt.exists ? t->tgt.relkind == 'p' : t->spec->part.column != NULL;
    char *qcon = pg_ident(conn, con);
    if (qcon == NULL)
        return false;
    bool ok;
    if (!parted || PQserverVersion(conn) >= 180000) {
        ok = addf(&h->notes,
                  "foreign key %s (%s): added to the new table by the swap (NOT VALID), "
                  "validated after it",
                  con, def) &&
             addf(&h->after, "ALTER TABLE %s ADD CONSTRAINT %s %s NOT VALID", p[2], qcon, def) &&
             add_fk_step(h, 'v', t->src.nspname, t->src.relname, con);
    } else if (!t->tgt.exists) {
        ok = addf(&h->notes,
                  "foreign key %s (%s): added by the swap to each partition of the new table "
                  "(NOT VALID), validated after it, then to the table itself",
                  con, def);
    } else {
        PGresult *leaves = target_leaves(conn, p);
        ok = leaves != NULL &&
             addf(&h->notes,
                  "foreign key %s (%s): added by the swap to each of the %d partitions of the "
                  "new table (NOT VALID), validated after it, then to the table itself",
                  con, def, PQntuples(leaves));
        for (int i = 0; ok && i < PQntuples(leaves); i++)
            ok = addf(&h->after, "ALTER TABLE %s ADD CONSTRAINT %s %s NOT VALID", V(leaves, i, 0),
                      qcon, def) &&
                 add_fk_step(h, 'v', V(leaves, i, 1), V(leaves, i, 2), con);
        ok = ok && add_fk_step(h, 'p', t->src.nspname, t->src.relname, con);
        PQclear(leaves);
    }
    free(qcon);
    return ok;
}

/* "{src oids}" and "{target oids}" of the plan's tables, for SQL that maps
 * a table of the plan to its target (0: not created yet). */
static bool plan_oid_arrays(const pgs_migration *m, char **srcs, char **tgts)
{
    size_t cap = 16 + (size_t)m->ntables * 12;
    *srcs = malloc(cap);
    *tgts = malloc(cap);
    if (*srcs == NULL || *tgts == NULL)
        return false;
    size_t a = (size_t)snprintf(*srcs, cap, "{"), b = (size_t)snprintf(*tgts, cap, "{");
    for (int i = 0; i < m->ntables; i++) {
        const pgs_mtable *x = &m->tables[i];
        a += (size_t)snprintf(*srcs + a, cap - a, "%s%u", i ? "," : "", x->src.oid);
        b += (size_t)snprintf(*tgts + b, cap - b, "%s%u", i ? "," : "",
                              x->tgt.exists ? x->tgt.oid : 0u);
    }
    snprintf(*srcs + a, cap - a, "}");
    snprintf(*tgts + b, cap - b, "}");
    return true;
}

/* Whether foreign key x (on the target) is the source's c: the same
 * columns by name, referencing the same table or, for a table of the plan
 * ($3 sources, $4 their targets), its target, with the same actions. */
#define FK_SAME_SQL                                                                                \
    "x.contype = 'f' AND x.confupdtype = c.confupdtype AND x.confdeltype = c.confdeltype"          \
    " AND x.confmatchtype = c.confmatchtype AND x.condeferrable = c.condeferrable"                 \
    " AND x.condeferred = c.condeferred"                                                           \
    " AND (x.confrelid = c.confrelid OR (c.confrelid = ANY ($3::oid[]) AND x.confrelid ="          \
    "      ($4::oid[])[array_position($3::oid[], c.confrelid)]))"                                  \
    " AND (SELECT array_agg(a.attname ORDER BY k.o) FROM unnest(x.conkey) WITH ORDINALITY k(n, o)" \
    "      JOIN pg_attribute a ON a.attrelid = x.conrelid AND a.attnum = k.n) ="                   \
    "     (SELECT array_agg(a.attname ORDER BY k.o) FROM unnest(c.conkey) WITH ORDINALITY k(n, o)" \
    "      JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n)"                     \
    " AND (SELECT array_agg(a.attname ORDER BY k.o) FROM unnest(x.confkey) WITH ORDINALITY k(n, "  \
    "o)"                                                                                           \
    "      JOIN pg_attribute a ON a.attrelid = x.confrelid AND a.attnum = k.n) ="                  \
    "     (SELECT array_agg(a.attname ORDER BY k.o) FROM unnest(c.confkey) WITH ORDINALITY k(n, "  \
    "o)"                                                                                           \
    "      JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n)"

/* The source's own foreign keys: already on the target (the same key, or
 * one to the target of a table of the plan), left behind, or carried by
 * the swap (fk_carry; to a table of the plan, its definition names the
 * source, which is the new table once the renames ran). */
static bool fks_out(PGconn *conn, const char *const *p, pgs_migration *m, pgs_mtable *t,
                    handover *h)
{
    char *srcs = NULL, *tgts = NULL;
    if (!plan_oid_arrays(m, &srcs, &tgts)) {
        free(srcs);
        free(tgts);
        return false;
    }
    PGresult *r = pg_query(conn, "reading the source's foreign keys",
                           "SELECT c.conname, pg_get_constraintdef(c.oid),"
                           "       EXISTS (SELECT 1 FROM pg_constraint x WHERE x.conrelid = $2::oid"
                           "                 AND " FK_SAME_SQL "),"
                           "       (SELECT pg_get_constraintdef(x.oid) FROM pg_constraint x"
                           "         WHERE x.conrelid = $2::oid AND x.conname = c.conname),"
                           "       c.confrelid = ANY ($3::oid[])"
                           "  FROM pg_constraint c WHERE c.contype = 'f' AND c.conrelid = $1::oid"
                           "   AND c.conparentid = 0 ORDER BY 1",
                           4, (const char *[]){p[0], p[1], srcs, tgts});
    free(srcs);
    free(tgts);
    if (r == NULL)
        return false;
    bool ok = true;
    char old[160];
    cutover_old_name(t, old, sizeof old);
    for (int i = 0; ok && i < PQntuples(r); i++) {
        const char *con = V(r, i, 0), *def = V(r, i, 1);
        /* On the new table after the swap: there already, or carried. */
        bool carried = V(r, i, 2)[0] == 't' || (!left_behind(t, con) && PQgetisnull(r, i, 3));
        if (V(r, i, 2)[0] == 't')
            ok = addf(&h->notes, "foreign key %s (%s): already on the target", con, def);
        else if (left_behind(t, con))
            ok = addf(&h->notes, "foreign key %s (%s): left behind on the old table", con, def);
        else if (!PQgetisnull(r, i, 3))
            ok = addf(&h->problems,
                      "foreign key %s of the source (%s) cannot be added to %s: it has a "
                      "constraint of that name already (%s); fix: drop or rename it there, or "
                      "leave_behind: [%s]",
                      con, def, t->tgt.qname ? t->tgt.qname : t->spec->target, V(r, i, 3), con);
        else
            ok = fk_carry(conn, p, t, h, con, def);
        /* The old table is frozen after the swap: its copy of the key
         * would only refuse the application's deletes (NO ACTION,
         * RESTRICT) of rows the new table no longer references. Dropped
         * after the commit (the drop locks the referenced table ACCESS
         * EXCLUSIVE, so not inside the swap's window). A key to another
         * table of the plan stays: old references old, both frozen. */
        if (ok && carried && V(r, i, 4)[0] != 't' && strlen(t->src.relname) + 4 <= 63)
            ok =
                addf(&h->notes, "foreign key %s: dropped from the old table after the swap", con) &&
                add_fk_step(h, 'd', t->src.nspname, old, con);
    }
    PQclear(r);
    return ok;
}

/* Triggers are re-created on the new table with the same definition and
 * enabled state. */
static bool triggers(PGconn *conn, const char *const *p, pgs_mtable *t, handover *h)
{
    PGresult *r =
        pg_query(conn, "reading triggers on the source",
                 "SELECT g.tgname, pg_get_triggerdef(g.oid), g.tgenabled,"
                 "       EXISTS (SELECT 1 FROM pg_trigger x WHERE x.tgrelid = $2::oid"
                 "                 AND x.tgname = g.tgname), quote_ident(g.tgname)"
                 "  FROM pg_trigger g WHERE g.tgrelid = $1::oid AND NOT g.tgisinternal ORDER BY 1",
                 2, p);
    if (r == NULL)
        return false;
    bool ok = true;
    for (int i = 0; ok && i < PQntuples(r); i++) {
        const char *name = V(r, i, 0), en = V(r, i, 2)[0];
        if (V(r, i, 3)[0] == 't')
            ok = addf(&h->notes, "trigger %s: already on the target", name);
        else if (left_behind(t, name))
            ok = addf(&h->notes, "trigger %s: left behind on the old table", name);
        else {
            ok = addf(&h->notes, "trigger %s: re-created on the new table", name) &&
                 addf(&h->after, "%s", V(r, i, 1));
            if (ok && en != 'O')
                ok = addf(&h->after, "ALTER TABLE %s %s TRIGGER %s", p[2],
                          en == 'D'   ? "DISABLE"
                          : en == 'R' ? "ENABLE REPLICA"
                                      : "ENABLE ALWAYS",
                          V(r, i, 4));
        }
    }
    PQclear(r);
    return ok;
}

/* Policies are re-created on the new table likewise. */
static bool policies(PGconn *conn, const char *const *p, pgs_mtable *t, handover *h)
{
    PGresult *r =
        pg_query(conn, "reading policies on the source",
                 "SELECT p.polname, format('CREATE POLICY %I ON %s AS %s FOR %s TO %s%s%s', "
                 "p.polname, $3::text,"
                 "         CASE WHEN p.polpermissive THEN 'PERMISSIVE' ELSE 'RESTRICTIVE' END,"
                 "         CASE p.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT'"
                 "           WHEN 'w' THEN 'UPDATE' WHEN 'd' THEN 'DELETE' ELSE 'ALL' END,"
                 "         (SELECT string_agg(CASE WHEN o = 0 THEN 'PUBLIC'"
                 "                   ELSE quote_ident(pg_get_userbyid(o)) END, ', ')"
                 "            FROM unnest(p.polroles) o),"
                 "         ' USING (' || pg_get_expr(p.polqual, p.polrelid) || ')',"
                 "         ' WITH CHECK (' || pg_get_expr(p.polwithcheck, p.polrelid) || ')'),"
                 "       EXISTS (SELECT 1 FROM pg_policy x WHERE x.polrelid = $2::oid"
                 "                 AND x.polname = p.polname)"
                 "  FROM pg_policy p WHERE p.polrelid = $1::oid ORDER BY 1",
                 3, p);
    if (r == NULL)
        return false;
    bool ok = true;
    for (int i = 0; ok && i < PQntuples(r); i++) {
        const char *name = V(r, i, 0);
        if (V(r, i, 2)[0] == 't')
            ok = addf(&h->notes, "policy %s: already on the target", name);
        else if (left_behind(t, name))
            ok = addf(&h->notes, "policy %s: left behind on the old table", name);
        else
            ok = addf(&h->notes, "policy %s: re-created on the new table", name) &&
                 addf(&h->after, "%s", V(r, i, 1));
    }
    PQclear(r);
    return ok;
}

/* Row level security is switched on (and forced) as on the source. */
static bool row_level_security(PGconn *conn, const char *const *p, handover *h)
{
    PGresult *r =
        pg_query(conn, "reading row level security",
                 "SELECT s.relrowsecurity, s.relforcerowsecurity,"
                 "       coalesce(t.relrowsecurity, false), coalesce(t.relforcerowsecurity, false)"
                 "  FROM pg_class s LEFT JOIN pg_class t ON t.oid = $2::oid WHERE s.oid = $1::oid",
                 2, p);
    if (r == NULL)
        return false;
    bool ok = true;
    if (PQntuples(r) == 1) {
        if (V(r, 0, 0)[0] == 't' && V(r, 0, 2)[0] != 't')
            ok = addf(&h->notes, "row level security: enabled on the new table") &&
                 addf(&h->after, "ALTER TABLE %s ENABLE ROW LEVEL SECURITY", p[2]);
        if (ok && V(r, 0, 1)[0] == 't' && V(r, 0, 3)[0] != 't')
            ok = addf(&h->after, "ALTER TABLE %s FORCE ROW LEVEL SECURITY", p[2]);
    }
    PQclear(r);
    return ok;
}

/* Rules and other publications cannot follow to the new table. */
static bool rules_publications(PGconn *conn, const char *const *p, pgs_mtable *t, handover *h)
{
    PGresult *r = pg_query(conn, "reading rules and publications on the source",
                           "SELECT 'rule', rulename FROM pg_rewrite"
                           " WHERE ev_class = $1::oid AND rulename <> '_RETURN'"
                           " UNION ALL SELECT 'publication', p.pubname FROM pg_publication_rel pr"
                           "  JOIN pg_publication p ON p.oid = pr.prpubid"
                           " WHERE pr.prrelid = $1::oid AND p.pubname <> $2 ORDER BY 1, 2",
                           2, (const char *[]){p[0], p[3]});
    if (r == NULL)
        return false;
    bool ok = true;
    for (int i = 0; ok && i < PQntuples(r); i++) {
        const char *kind = V(r, i, 0), *name = V(r, i, 1);
        if (left_behind(t, name))
            ok = addf(&h->notes, "%s %s: left behind on the old table", kind, name);
        else
            ok = addf(&h->problems,
                      "%s %s on %s cannot be carried to the new table; fix: drop it (and "
                      "re-create it after the cutover), or leave_behind: [%s]",
                      kind, name, t->src.qname, name);
    }
    PQclear(r);
    return ok;
}

/* Triggers and policies follow the table to the new one, with row level
 * security switched on as on the source; rules and other publications
 * cannot follow. */
static bool triggers_policies_rules(PGconn *conn, const char *const *p, pgs_mtable *t, handover *h)
{
    return triggers(conn, p, t, h) && policies(conn, p, t, h) && row_level_security(conn, p, h) &&
           rules_publications(conn, p, t, h);
}

/* One column with a sequence behind it on the source or the target (row i
 * of the query in sequences). */
static bool sequence_column(PGresult *r, int i, const char *const *p, pgs_mtable *t, handover *h)
{
    bool ok = true;
    /* the new table's column (another name when a mapping renames it) */
    const char *col = PQgetisnull(r, i, 12) ? V(r, i, 0) : V(r, i, 12);
    const char *qcol = PQgetisnull(r, i, 13) ? V(r, i, 1) : V(r, i, 13);
    /* an int -> bigint mapping: the sequence must count past int too */
    if (V(r, i, 11)[0] == 't' && !PQgetisnull(r, i, 3) &&
        (PQgetisnull(r, i, 7) || strcmp(V(r, i, 3), V(r, i, 7)) == 0)) {
        ok = addf(&h->notes, "sequence %s (column %s): becomes bigint like the new column",
                  V(r, i, 4), col) &&
             addf(&h->after, "ALTER SEQUENCE %s AS bigint", V(r, i, 4));
        if (!ok)
            return false;
    }
    char sid = V(r, i, 2)[0], tid = V(r, i, 6)[0];
    bool has_s = !PQgetisnull(r, i, 3), has_t = !PQgetisnull(r, i, 7);
    bool owned_by_source = V(r, i, 10)[0] == 't';
    const char *s_oid = V(r, i, 3), *s_name = V(r, i, 4), *t_oid = V(r, i, 7), *t_name = V(r, i, 8);
    if (!t->tgt.exists) {
        if (has_s)
            ok = addf(&h->notes,
                      "sequence %s (column %s): the new table continues above "
                      "its last value",
                      s_name, col);
        return ok;
    }
    if (has_s && has_t && strcmp(s_oid, t_oid) == 0) {
        if (owned_by_source)
            ok = addf(&h->notes,
                      "sequence %s (column %s): shared with the target; OWNED BY moves to "
                      "the new table so dropping the old one keeps it",
                      s_name, col) &&
                 addf(&h->after, "ALTER SEQUENCE %s OWNED BY %s.%s", s_name, p[2], qcol);
        else
            ok = addf(&h->notes, "sequence %s (column %s): shared, nothing to do", s_name, col);
    } else if (has_s && has_t) {
        ok = addf(&h->notes, "sequence %s (column %s): set above the source's %s under the lock",
                  t_name, col, s_name) &&
             addf(&h->after,
                  "SELECT setval(%s::regclass, v) FROM (SELECT greatest("
                  "pg_sequence_last_value(%s::regclass), pg_sequence_last_value(%s::regclass))"
                  " AS v) x WHERE v IS NOT NULL",
                  t_oid, s_oid, t_oid);
    } else if (has_s && sid != '\0') {
        ok = addf(&h->problems,
                  "column %s is an identity column on the source but not on the target, so "
                  "new rows would get no value after the cutover; fix: ALTER TABLE %s ALTER "
                  "COLUMN %s ADD GENERATED BY DEFAULT AS IDENTITY",
                  col, t->tgt.qname, qcol);
    } else if (has_s) {
        ok = addf(&h->notes,
                  "sequence %s (column %s): the new table's column takes the "
                  "source's default%s",
                  s_name, col, owned_by_source ? " and owns the sequence" : "") &&
             addf(&h->after, "ALTER TABLE %s ALTER COLUMN %s SET DEFAULT %s", p[2], qcol,
                  V(r, i, 5));
        if (ok && owned_by_source)
            ok = addf(&h->after, "ALTER SEQUENCE %s OWNED BY %s.%s", s_name, p[2], qcol);
    } else if (V(r, i, 9)[0] == 't') {
        ok = addf(&h->notes, "sequence %s (column %s): set to the new table's highest value",
                  t_name, col) &&
             addf(&h->after,
                  "SELECT setval(%s::regclass, greatest(m, pg_sequence_last_value(%s::regclass)"
                  ")) FROM (SELECT max(%s)::bigint AS m FROM %s) x WHERE m IS NOT NULL",
                  t_oid, t_oid, qcol, p[2]);
    }
    /* pgshift writes the source's values, so the target runs BY DEFAULT
     * during the migration; the new table gets the source's kind back. */
    if (ok && sid != '\0' && tid != '\0' && sid != tid)
        ok = addf(&h->after, "ALTER TABLE %s ALTER COLUMN %s SET GENERATED %s", p[2], qcol,
                  sid == 'a' ? "ALWAYS" : "BY DEFAULT");
    return ok;
}

/* Two text[] literals: the source columns a mapped table carries under
 * another name, and those names. */
static bool rename_arrays(const pgs_mtable *t, char *out[2])
{
    for (int side = 0; side < 2; side++) {
        char *a = strdup("{");
        for (int i = 0; a && i < t->map.ncols; i++) {
            const pgs_mcol *mc = &t->map.cols[i];
            if (mc->deps.n != 1 || colmap_carrier(&t->map, mc->deps.v[0]) != mc ||
                strcmp(mc->name, mc->deps.v[0]) == 0)
                continue;
            const char *name = side ? mc->name : mc->deps.v[0];
            char *next = NULL;
            /* array literal element: double-quoted, \ and " escaped */
            char *q = malloc(strlen(name) * 2 + 3), *w = q;
            if (q) {
                *w++ = '"';
                for (const char *c = name; *c; c++) {
                    if (*c == '"' || *c == '\\')
                        *w++ = '\\';
                    *w++ = *c;
                }
                *w++ = '"';
                *w = '\0';
            }
            if (q && asprintf(&next, "%s%s%s", a, a[1] ? "," : "", q) < 0)
                next = NULL;
            free(q);
            free(a);
            a = next;
        }
        char *next = NULL;
        if (a && asprintf(&next, "%s}", a) < 0)
            next = NULL;
        free(a);
        out[side] = next;
    }
    return out[0] && out[1];
}

/* Sequences: the new table must go on numbering above every existing row,
 * and a sequence the source owns must survive dropping the old table. */
static bool sequences(PGconn *conn, const char *const *p, pgs_mtable *t, handover *h)
{
    /* A mapped table's source column carried under another name: the
     * sequence follows it there. */
    char *renames[2] = {NULL, NULL};
    if (!rename_arrays(t, renames))
        return false;
    PGresult *r = pg_query(
        conn, "reading sequences",
        "WITH cols AS ("
        "  SELECT a.attrelid AS rel, a.attname, a.attnum, a.attidentity, a.atttypid,"
        "    coalesce((SELECT d.refobjid FROM pg_attrdef ad JOIN pg_depend d"
        "                ON d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid"
        "               AND d.refclassid = 'pg_class'::regclass"
        "              JOIN pg_class q ON q.oid = d.refobjid AND q.relkind = 'S'"
        "             WHERE ad.adrelid = a.attrelid AND ad.adnum = a.attnum LIMIT 1),"
        "             (SELECT d.objid FROM pg_depend d JOIN pg_class q"
        "                ON q.oid = d.objid AND q.relkind = 'S'"
        "             WHERE d.classid = 'pg_class'::regclass AND d.refclassid = "
        "'pg_class'::regclass"
        "               AND d.refobjid = a.attrelid AND d.refobjsubid = a.attnum"
        "               AND d.deptype = 'i' LIMIT 1)) AS seq,"
        "    (SELECT pg_get_expr(ad.adbin, ad.adrelid) FROM pg_attrdef ad"
        "      WHERE ad.adrelid = a.attrelid AND ad.adnum = a.attnum) AS def"
        "  FROM pg_attribute a WHERE a.attrelid IN ($1::oid, $2::oid) AND a.attnum > 0"
        "   AND NOT a.attisdropped)"
        " SELECT s.attname, quote_ident(s.attname), s.attidentity, s.seq, s.seq::regclass::text,"
        "        s.def, t.attidentity, t.seq, t.seq::regclass::text, t.atttypid IN (20, 21, 23),"
        "        EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass"
        "                  AND d.objid = s.seq AND d.refobjid = $1::oid"
        "                  AND d.refobjsubid = s.attnum AND d.deptype = 'a')"
        "        , (SELECT seqtypid IN (21, 23) FROM pg_sequence WHERE seqrelid = s.seq)"
        "          AND t.atttypid = 20, t.attname, quote_ident(t.attname)"
        "   FROM cols s LEFT JOIN cols t ON t.rel = $2::oid AND t.attname = coalesce("
        "     (SELECT m.t FROM unnest($3::text[], $4::text[]) AS m(s, t) WHERE m.s = s.attname),"
        "     s.attname)"
        "  WHERE s.rel = $1::oid AND (s.seq IS NOT NULL OR t.seq IS NOT NULL) ORDER BY s.attnum",
        4, (const char *[]){p[0], p[1], renames[0], renames[1]});
    free(renames[0]);
    free(renames[1]);
    if (r == NULL)
        return false;
    bool ok = true;
    for (int i = 0; ok && i < PQntuples(r); i++)
        ok = sequence_column(r, i, p, t, h);
    PQclear(r);
    return ok;
}

/* Grants (table and column) and the owner. */
static bool grants(PGconn *conn, const char *const *p, pgs_mtable *t, handover *h)
{
    PGresult *r = pg_query(
        conn, "reading grants on the source",
        "SELECT format('GRANT %s ON TABLE %s TO %s%s', g.privilege_type, $2::text,"
        "         CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE "
        "quote_ident(pg_get_userbyid(g.grantee))"
        "         END, CASE WHEN g.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END),"
        "       CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(g.grantee) END"
        "         || ': ' || g.privilege_type"
        "  FROM pg_class c, aclexplode(c.relacl) g WHERE c.oid = $1::oid AND g.grantee <> "
        "c.relowner"
        " UNION ALL "
        "SELECT format('GRANT %s (%I) ON TABLE %s TO %s%s', g.privilege_type, a.attname, $2::text,"
        "         CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE "
        "quote_ident(pg_get_userbyid(g.grantee))"
        "         END, CASE WHEN g.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END),"
        "       CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(g.grantee) END"
        "         || ': ' || g.privilege_type || ' (' || a.attname || ')'"
        "  FROM pg_attribute a, aclexplode(a.attacl) g WHERE a.attrelid = $1::oid"
        "   AND a.attnum > 0 AND NOT a.attisdropped AND a.attacl IS NOT NULL"
        " ORDER BY 2",
        2, (const char *[]){p[0], p[2]});
    if (r == NULL)
        return false;
    bool ok = true;
    for (int i = 0; ok && i < PQntuples(r); i++)
        ok = addf(&h->notes, "grant %s: copied to the new table", V(r, i, 1)) &&
             addf(&h->after, "%s", V(r, i, 0));
    PQclear(r);
    if (!ok || !t->tgt.exists)
        return ok;

    /* The new table (and its partitions) belong to whoever owned the source. */
    r = pg_query(conn, "reading owners",
                 "SELECT quote_ident(pg_get_userbyid(s.relowner)), pg_get_userbyid(s.relowner),"
                 "       format('%I.%I', n.nspname, c.relname), c.oid = $2::oid"
                 "  FROM pg_class s, pg_partition_tree($2::oid::regclass) pt"
                 "  JOIN pg_class c ON c.oid = pt.relid"
                 "  JOIN pg_namespace n ON n.oid = c.relnamespace"
                 " WHERE s.oid = $1::oid AND c.relowner <> s.relowner ORDER BY pt.level, 3",
                 2, p);
    if (r == NULL)
        return false;
    if (PQntuples(r) > 0)
        ok = addf(&h->notes, "owner: the new table is given to %s, like the source", V(r, 0, 1));
    for (int i = 0; ok && i < PQntuples(r); i++)
        ok = addf(&h->after, "ALTER TABLE %s OWNER TO %s", V(r, i, 3)[0] == 't' ? p[2] : V(r, i, 2),
                  V(r, i, 0));
    PQclear(r);
    return ok;
}

/* Renaming problems: the names the swap needs, in one database. */
static bool names(PGconn *conn, pgs_migration *m, pgs_mtable *t, handover *h)
{
    bool ok = true;
    if (m->plan->target)
        ok = addf(&h->problems,
                  "the plan has a separate `target:` database; the cutover renames tables in one "
                  "database, so it cannot swap %s; fix: migrate within the source database",
                  t->src.qname);
    if (ok && t->tgt.exists && strcmp(t->tgt.nspname, t->src.nspname) != 0)
        ok = addf(&h->problems,
                  "target %s is in schema %s but the source in %s; the cutover renames within a "
                  "schema; fix: create the target in schema %s",
                  t->tgt.qname, t->tgt.nspname, t->src.nspname, t->src.nspname);
    if (!ok)
        return false;
    if (t->spec->rename_to == NULL && strlen(t->src.relname) + 4 > 63)
        return addf(&h->problems,
                    "%s_old would be longer than 63 bytes, so the old table cannot keep a "
                    "recognisable name; fix: rename the source to something shorter first",
                    t->src.relname);
    char old[160];
    cutover_old_name(t, old, sizeof old);
    PGresult *r = pg_query(conn, "checking the old table's name",
                           "SELECT format('%I.%I', $1::text, $2::text), EXISTS (SELECT 1 FROM"
                           " pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                           " WHERE n.nspname = $1 AND c.relname = $2)",
                           2, (const char *[]){t->src.nspname, old});
    if (r == NULL)
        return false;
    ok = V(r, 0, 1)[0] == 't'
             ? addf(&h->problems,
                    "%s already exists, and the cutover renames %s to that name; fix: drop or "
                    "rename it",
                    V(r, 0, 0), t->src.qname)
             : addf(&h->notes, "rename: %s -> %s, %s -> %s", t->src.qname, V(r, 0, 0),
                    t->tgt.qname ? t->tgt.qname : t->spec->target, t->src.qname);
    PQclear(r);
    return ok;
}

void cutover_old_name(const pgs_mtable *t, char *buf, size_t len)
{
    if (t->spec->rename_to)
        snprintf(buf, len, "%s", t->spec->rename_to);
    else
        snprintf(buf, len, "%s_old", t->src.relname);
}

bool handover_build(PGconn *conn, pgs_migration *m, pgs_mtable *t, bool in_swap, handover *h)
{
    memset(h, 0, sizeof *h);
    if (!t->src.exists)
        return true;
    char soid[16], toid[16];
    snprintf(soid, sizeof soid, "%u", t->src.oid);
    snprintf(toid, sizeof toid, "%u", t->tgt.exists ? t->tgt.oid : 0u);
    const char *p[4] = {soid, toid, t->src.qname, m->publication};
    bool ok =
        names(conn, m, t, h) &&
        (!t->map.mapped || (mapped_refs(conn, p, t, h) && mapped_trigger_bodies(conn, p, t, h))) &&
        grants(conn, p, t, h) && sequences(conn, p, t, h) &&
        triggers_policies_rules(conn, p, t, h) && views(conn, p, t, in_swap, h) &&
        fks_in(conn, p, m, t, h) && fks_out(conn, p, m, t, h);
    if (!ok)
        handover_free(h);
    return ok;
}
