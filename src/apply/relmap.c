/* relmap.c: a Relation message checked against the target (read afresh)
 * and turned into the mapping the changes of that relation are applied
 * through, set-based where the target allows it. */
#include "apply_int.h"

#include "pgshift/catalog.h"
#include "pgshift/log.h"
#include "pgshift/pg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void relmap_free_rel(rel *r)
{
    decode_relation_free(r->sent);
    for (int i = 0; i < r->natts; i++)
        free(r->names[i]);
    free(r->col_oids);
    free(r->col_att);
    fold_free(&r->fold);
    free(r->names);
    free(r->match);
    for (int i = 0; r->text_types && i < r->natts; i++)
        free(r->text_types[i]);
    free(r->text_types);
    for (int i = 0; r->atypes && i < r->natts; i++)
        free(r->atypes[i]);
    free(r->atypes);
    free(r->aoids);
    for (int c = 0; c < r->ncols; c++) {
        free(r->cnames[c]);
        free(r->cexprs[c]);
        if (r->ctext_types)
            free(r->ctext_types[c]);
    }
    free(r->cnames);
    free(r->cexprs);
    free(r->ctext_types);
    free(r->deps);
    free(r->kcol);
    for (int c = 0; c < r->nrnames; c++)
        free(r->rnames[c]);
    free(r->rnames);
    for (stmt *s = r->stmts, *n; s; s = n) {
        n = s->next;
        free(s->mask);
        free(s);
    }
    free(r);
}

rel *relmap_find(apply_ctx *a, uint32_t relid)
{
    for (rel *r = a->rels; r; r = r->next)
        if (r->relid == relid)
            return r;
    return NULL;
}

static char *type_name(apply_ctx *a, uint32_t oid, int32_t typmod)
{
    char o[16], tm[16];
    snprintf(o, sizeof o, "%u", oid);
    snprintf(tm, sizeof tm, "%d", typmod);
    char *v = pg_query_value(a->m->src, "naming a type", "SELECT format_type($1::oid, $2::int)", 2,
                             (const char *[]){o, tm}, NULL);
    return v ? v : strdup("?");
}

/* A mapped relation's set-based rows: with the target in the source's
 * database, one array of the source table's row type (every column type
 * works); else one array per attribute, which cannot carry an array-typed
 * attribute (no arrays of arrays): such a relation is applied row by row. */
static bool setup_mapped_set(apply_ctx *a, rel *r, const decode_relation *dr)
{
    const pgs_relinfo *src = &r->t->src;
    if (a->m->plan->target == NULL) {
        /* The row type as it is now (a column may have come or gone since
         * the run started): read from the catalog, no lock taken. */
        char oid[16];
        snprintf(oid, sizeof oid, "%u", src->oid);
        PGresult *res = pg_query(a->m->src, "reading the source's row type",
                                 "SELECT c.reltype, a.attname, a.atttypid FROM pg_class c"
                                 "  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0"
                                 "   AND NOT a.attisdropped"
                                 " WHERE c.oid = $1::oid ORDER BY a.attnum",
                                 1, (const char *[]){oid});
        if (res == NULL)
            return false;
        int n = PQntuples(res);
        r->rowtype.oid = n ? (uint32_t)strtoul(PQgetvalue(res, 0, 0), NULL, 10) : 0;
        r->col_oids = calloc((size_t)n + 1, sizeof(uint32_t));
        r->col_att = calloc((size_t)n + 1, sizeof(int));
        r->rnames = calloc((size_t)n + 1, sizeof(char *));
        bool ok = n > 0 && r->col_oids && r->col_att && r->rnames;
        for (int c = 0; ok && c < n; c++, r->nrnames++) {
            const char *name = PQgetvalue(res, c, 1);
            r->col_oids[c] = (uint32_t)strtoul(PQgetvalue(res, c, 2), NULL, 10);
            r->col_att[c] = -1;
            for (int i = 0; i < dr->natts; i++)
                if (strcmp(dr->attrs[i].name, name) == 0)
                    r->col_att[c] = i;
            char *q = PQescapeIdentifier(a->conn, name, strlen(name));
            r->rnames[c] = q ? strdup(q) : NULL;
            PQfreemem(q);
            ok = r->rnames[c] != NULL;
        }
        PQclear(res);
        if (!ok)
            return false;
        r->rowtype.ncols = n;
        r->rowtype.col_oids = r->col_oids;
        r->rowtype.col_att = r->col_att;
        r->srcrow = true;
    } else if (r->oid_differs) {
        log_info("apply: a column type of %s has another OID in the target database: its mapped "
                 "changes are applied one by one, in order",
                 r->t->src.qname);
        return true;
    } else {
        char list[4096];
        size_t n = 0;
        list[n++] = '{';
        for (int i = 0; i < r->natts && n + 16 < sizeof list; i++)
            n += (size_t)snprintf(list + n, sizeof list - n, "%s%u", i ? "," : "", r->aoids[i]);
        snprintf(list + n, sizeof list - n, "}");
        char *v = pg_query_value(a->m->tgt, "checking the source's column types",
                                 "SELECT count(*) FROM pg_type WHERE oid = ANY($1::oid[])"
                                 " AND (typelem <> 0 AND typlen = -1 OR typtype = 'd')",
                                 1, (const char *[]){list}, NULL);
        bool arrays = v == NULL || strcmp(v, "0") != 0;
        free(v);
        if (arrays) {
            log_info("apply: %s has an array-typed column and its target is in another database: "
                     "its mapped changes are applied one by one, in order",
                     r->t->src.qname);
            return true;
        }
    }
    fold_init(&r->fold, r->natts, r->nmatch, r->match);
    r->setbased = true;
    return true;
}

/* Folding reorders the changes of a batch; that is only invisible when no
 * constraint of the target sees intermediate states: no unique index beyond
 * the key (and partition key), no exclusion constraint, no foreign key in
 * or out. Every column type needs an array type for the unnest() form. */
static bool setup_setbased(apply_ctx *a, rel *r, const decode_relation *dr)
{
    r->setbased = false;
    if (r->nmatch == 0 || r->whole_row || dr->natts == 0)
        return true;
    char oid[16];
    snprintf(oid, sizeof oid, "%u", r->t->tgt.oid);
    /* Columns of unique indexes (0 for an expression) outside the partition
     * key, plus a NULL row per foreign key or exclusion constraint. */
    PGresult *res =
        pg_query(a->m->tgt, "checking the target's constraints",
                 "SELECT CASE WHEN k.n = 0 THEN '' ELSE a.attname END"
                 "  FROM pg_index i CROSS JOIN unnest(i.indkey) k(n)"
                 "  LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n"
                 " WHERE i.indrelid = $1::oid AND i.indisunique"
                 "   AND k.n <> ALL (coalesce((SELECT partattrs::int2[] FROM pg_partitioned_table"
                 "                             WHERE partrelid = $1::oid), '{}'))"
                 " UNION ALL SELECT NULL FROM pg_constraint WHERE contype IN ('f', 'x')"
                 "   AND (conrelid = $1::oid OR confrelid = $1::oid)",
                 1, (const char *[]){oid});
    if (res == NULL)
        return false;
    bool plain = true;
    for (int i = 0; i < PQntuples(res) && plain; i++)
        plain = !PQgetisnull(res, i, 0) && strlist_contains(&r->t->map.tkey, PQgetvalue(res, i, 0));
    PQclear(res);
    if (!plain) {
        log_info("apply: %s has other unique keys or foreign keys: applying its changes one by "
                 "one, in order",
                 r->t->tgt.qname);
        return true;
    }
    if (r->mapped)
        return setup_mapped_set(a, r, dr);
    char *reltype = pg_query_value(a->m->tgt, "reading the target's row type",
                                   "SELECT reltype FROM pg_class WHERE oid = $1::oid", 1,
                                   (const char *[]){oid}, NULL);
    if (reltype == NULL)
        return false;
    r->rowtype.oid = (uint32_t)strtoul(reltype, NULL, 10);
    free(reltype);
    const pgs_relinfo *tg = &r->t->tgt;
    r->col_oids = calloc((size_t)(tg->ncols ? tg->ncols : 1), sizeof(uint32_t));
    r->col_att = calloc((size_t)(tg->ncols ? tg->ncols : 1), sizeof(int));
    if (r->col_oids == NULL || r->col_att == NULL)
        return false;
    for (int c = 0; c < tg->ncols; c++) {
        r->col_oids[c] = tg->cols[c].typoid;
        r->col_att[c] = -1;
        for (int i = 0; i < dr->natts; i++)
            if (strcmp(dr->attrs[i].name, tg->cols[c].name) == 0)
                r->col_att[c] = i;
    }
    r->rowtype.ncols = tg->ncols;
    r->rowtype.col_oids = r->col_oids;
    r->rowtype.col_att = r->col_att;
    fold_init(&r->fold, r->natts, r->nmatch, r->match);
    r->setbased = true;
    return true;
}

/* Whether the relation is a partition (at any depth) of a source of the
 * plan: asked of the source's catalog, pg_inherits read as a table (no lock
 * on the relations: a cutover may hold the source ACCESS EXCLUSIVE while
 * this message arrives, and pg_partition_tree() would wait for it on the
 * loop, with the locks held). */
static bool is_partition_of_plan(apply_ctx *a, const decode_relation *dr)
{
    char relid[16];
    snprintf(relid, sizeof relid, "%u", dr->relid);
    for (int i = 0; i < a->m->ntables; i++) {
        const pgs_mtable *t = &a->m->tables[i];
        if (t->src.relkind != 'p')
            continue;
        char root[16];
        snprintf(root, sizeof root, "%u", t->src.oid);
        char *v =
            pg_query_value(a->m->src, "checking a partition of the source",
                           "WITH RECURSIVE t(relid) AS (SELECT $2::oid UNION ALL"
                           "  SELECT i.inhrelid FROM pg_inherits i JOIN t ON i.inhparent = t.relid)"
                           " SELECT $1::oid IN (SELECT relid FROM t)",
                           2, (const char *[]){relid, root}, NULL);
        bool yes = v && v[0] == 't';
        free(v);
        if (yes)
            return true;
    }
    return false;
}

/* The plan table a Relation message is about, with its target read afresh
 * (the operator may have just fixed it). NULL when it cannot be applied. */
static pgs_mtable *fresh_target(apply_ctx *a, const decode_relation *dr)
{
    const char *nsp = dr->nspname[0] ? dr->nspname : "pg_catalog";
    pgs_mtable *t = migration_find_source(a->m, nsp, dr->relname);
    if (t == NULL) {
        log_error("apply: the stream carries table %s.%s, which is not in plan %s; was "
                  "publication %s changed by hand?",
                  nsp, dr->relname, a->m->plan->name, a->m->publication);
        return NULL;
    }
    pgs_relinfo fresh;
    if (!catalog_read_rel(a->m->tgt, t->spec->target, &fresh))
        return NULL;
    catalog_relinfo_free(&t->tgt);
    t->tgt = fresh;
    if (!t->tgt.exists) {
        log_error("apply: target %s of %s no longer exists", t->spec->target, t->src.qname);
        return NULL;
    }
    if (dr->replident == 'n') {
        log_error("apply: %s now has REPLICA IDENTITY NOTHING; fix: ALTER TABLE %s REPLICA "
                  "IDENTITY DEFAULT, then run `pgshift run` again",
                  t->src.qname, t->src.qname);
        return NULL;
    }
    return t;
}

/* Every column the source sends exists on the target, with the same type,
 * and can take a value. */
static bool check_sent_columns(apply_ctx *a, const pgs_mtable *t, const decode_relation *dr)
{
    for (int i = 0; i < dr->natts; i++) {
        const decode_attr *at = &dr->attrs[i];
        const pgs_column *c = catalog_column(&t->tgt, at->name);
        if (c == NULL) {
            char *ty = type_name(a, at->type_oid, at->typmod);
            log_error("apply: schema change on the source: column \"%s\" (%s) of %s is not in "
                      "target %s; fix: ALTER TABLE %s ADD COLUMN %s %s, then run `pgshift run` "
                      "again",
                      at->name, ty, t->src.qname, t->tgt.qname, t->tgt.qname, at->name, ty);
            free(ty);
            return false;
        }
        if (c->typoid != at->type_oid || c->typmod != at->typmod) {
            char *ty = type_name(a, at->type_oid, at->typmod);
            log_error("apply: schema change on the source: column \"%s\" of %s is now %s but %s "
                      "on target %s; fix: ALTER TABLE %s ALTER COLUMN %s TYPE %s, then run "
                      "`pgshift run` again",
                      at->name, t->src.qname, ty, c->type, t->tgt.qname, t->tgt.qname, at->name,
                      ty);
            free(ty);
            return false;
        }
        if (c->generated) {
            log_error("apply: column \"%s\" is generated on target %s and cannot take the "
                      "source's values",
                      at->name, t->tgt.qname);
            return false;
        }
    }
    return true;
}

/* Every target column the source does not send can do without a value. */
static bool check_unsent_columns(const pgs_mtable *t, const decode_relation *dr)
{
    for (int i = 0; i < t->tgt.ncols; i++) {
        const pgs_column *c = &t->tgt.cols[i];
        bool sent_col = false;
        for (int j = 0; j < dr->natts && !sent_col; j++)
            sent_col = strcmp(dr->attrs[j].name, c->name) == 0;
        if (!sent_col && c->notnull && !c->has_default && !c->generated && !c->identity) {
            log_error("apply: schema change on the source: %s no longer has column \"%s\", "
                      "which is NOT NULL without default on target %s; fix: give it a default "
                      "or drop it on the target, then run `pgshift run` again",
                      t->src.qname, c->name, t->tgt.qname);
            return false;
        }
    }
    return true;
}

/* A table without a key (REPLICA IDENTITY FULL): its rows are found by
 * the whole old row, every attribute; a type without an = operator (json,
 * point, ...) is compared by its text. */
static bool whole_row(apply_ctx *a, rel *r, const pgs_mtable *t, const decode_relation *dr)
{
    if (dr->replident != 'f') {
        log_error("apply: %s has no key and is no longer REPLICA IDENTITY FULL: its updates and "
                  "deletes cannot name their row; fix: ALTER TABLE %s REPLICA IDENTITY FULL "
                  "(or add a primary key), then run `pgshift run` again",
                  t->src.qname, t->src.qname);
        return false;
    }
    char oid[16];
    snprintf(oid, sizeof oid, "%u", t->tgt.oid);
    PGresult *res = pg_query(
        a->m->tgt, "reading the target's column types",
        "SELECT a.attname, CASE WHEN EXISTS (SELECT 1 FROM pg_operator o WHERE o.oprname = '='"
        "   AND o.oprleft = a.atttypid AND o.oprright = a.atttypid) THEN NULL"
        "   ELSE format_type(a.atttypid, a.atttypmod) END"
        "  FROM pg_attribute a WHERE a.attrelid = $1::oid AND a.attnum > 0 AND NOT a.attisdropped",
        1, (const char *[]){oid});
    r->text_types = res ? calloc((size_t)(r->natts ? r->natts : 1), sizeof(char *)) : NULL;
    bool ok = r->text_types != NULL;
    for (int i = 0; ok && i < r->natts; i++) {
        r->match[i] = i;
        for (int j = 0; j < PQntuples(res); j++)
            if (strcmp(PQgetvalue(res, j, 0), dr->attrs[i].name) == 0 && !PQgetisnull(res, j, 1))
                ok = (r->text_types[i] = strdup(PQgetvalue(res, j, 1))) != NULL;
    }
    PQclear(res);
    if (!ok)
        return false;
    r->nmatch = r->natts;
    r->whole_row = true;
    return true;
}

/* A mapped table (colmap.h): every attribute the source sends is one it
 * had when the mapping was resolved, with the same type (the expressions
 * were checked over those types); a new one is dropped unless the target
 * has a column of its name. */
static bool check_mapped_columns(const pgs_mtable *t, const decode_relation *dr)
{
    for (int i = 0; i < dr->natts; i++) {
        const decode_attr *at = &dr->attrs[i];
        const pgs_column *s = catalog_column(&t->src, at->name);
        if (s == NULL && catalog_column(&t->tgt, at->name) == NULL)
            continue;
        if (s == NULL || s->typoid != at->type_oid || s->typmod != at->typmod) {
            log_error("apply: schema change on the source: column \"%s\" of %s is %s since "
                      "the run started, and the column mapping was checked without it; fix: "
                      "check the plan's columns: with `pgshift plan`, then run `pgshift run` "
                      "again",
                      at->name, t->src.qname, s ? "of another type" : "new");
            return false;
        }
    }
    for (int c = 0; c < t->map.ncols; c++) {
        const pgs_mcol *mc = &t->map.cols[c];
        const pgs_column *tc = catalog_column(&t->tgt, mc->name);
        if (tc == NULL || tc->generated) {
            log_error("apply: target %s no longer has column \"%s\" (the column mapping writes "
                      "it); fix: add it back, then run `pgshift run` again",
                      t->tgt.qname, mc->name);
            return false;
        }
        for (int d = 0; d < mc->deps.n; d++) {
            bool found = false;
            for (int i = 0; i < dr->natts && !found; i++)
                found = strcmp(dr->attrs[i].name, mc->deps.v[d]) == 0;
            if (!found) {
                log_error("apply: schema change on the source: %s no longer has column \"%s\", "
                          "which column %s of %s is computed from (\"%s\"); fix: change the "
                          "plan's columns:, then run `pgshift run` again",
                          t->src.qname, mc->deps.v[d], mc->name, t->tgt.qname, mc->expr);
                return false;
            }
        }
    }
    return true;
}

/* Each attribute's type as the target names it; the same type, not one of
 * that name, or the arrays built from the source's values would not read. */
static bool mapped_types(apply_ctx *a, rel *r, const decode_relation *dr)
{
    char *oids = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&oids, &len);
    if (f == NULL)
        return false;
    fputc('{', f);
    for (int i = 0; i < dr->natts; i++)
        fprintf(f, "%s%u", i ? "," : "", dr->attrs[i].type_oid);
    fputc('}', f);
    fclose(f);
    /* Named by the source (format_type with -1: "bpchar", not "character",
     * which is char(1)), then looked up by that name on the target. */
    PGresult *names = oids ? pg_query(a->m->src, "naming the source's column types",
                                      "SELECT format_type(o, -1) FROM unnest($1::oid[])"
                                      " WITH ORDINALITY AS x(o, n) ORDER BY n",
                                      1, (const char *[]){oids})
                           : NULL;
    free(oids);
    if (names == NULL)
        return false;
    bool ok = PQntuples(names) == dr->natts;
    r->atypes = calloc((size_t)r->natts + 1, sizeof(char *));
    r->aoids = calloc((size_t)r->natts + 1, sizeof(uint32_t));
    ok = ok && r->atypes && r->aoids;
    for (int i = 0; ok && i < dr->natts; i++) {
        r->aoids[i] = dr->attrs[i].type_oid;
        const char *name = PQgetvalue(names, i, 0);
        char *there = pg_query_value(a->m->tgt, "finding a source type on the target",
                                     "SELECT to_regtype($1)::oid", 1, (const char *[]){name}, NULL);
        if (there == NULL || there[0] == '\0') {
            log_error("apply: column \"%s\" of %s is of type %s, which the target database does "
                      "not have; create it there, then run `pgshift run` again",
                      dr->attrs[i].name, r->t->src.qname, name);
            ok = false;
        } else {
            /* Another OID (another database): statements name it, and the
             * binary arrays of set-based apply cannot carry it. */
            if (strtoul(there, NULL, 10) != dr->attrs[i].type_oid)
                r->oid_differs = true;
            ok = (r->atypes[i] = strdup(name)) != NULL;
        }
        free(there);
    }
    PQclear(names);
    return ok;
}

/* The target columns of a mapped table, the attributes each reads, and
 * the target column of each key column. */
static bool setup_mapped(apply_ctx *a, rel *r, const pgs_mtable *t, const decode_relation *dr)
{
    const pgs_colmap *cm = &t->map;
    r->mapped = true;
    r->cnames = calloc((size_t)cm->ncols + 1, sizeof(char *));
    r->cexprs = calloc((size_t)cm->ncols + 1, sizeof(char *));
    r->deps = calloc((size_t)cm->ncols * (size_t)(dr->natts ? dr->natts : 1) + 1, 1);
    r->kcol = calloc((size_t)t->match.n + 1, sizeof(int));
    if (!r->cnames || !r->cexprs || !r->deps || !r->kcol)
        return false;
    for (int c = 0; c < cm->ncols; c++, r->ncols++) {
        const pgs_mcol *mc = &cm->cols[c];
        char *q = PQescapeIdentifier(a->conn, mc->name, strlen(mc->name));
        r->cnames[c] = q ? strdup(q) : NULL;
        PQfreemem(q);
        r->cexprs[c] = strdup(mc->expr);
        if (!r->cnames[c] || !r->cexprs[c]) {
            r->ncols++;
            return false;
        }
        for (int i = 0; i < dr->natts; i++)
            r->deps[(size_t)c * (size_t)dr->natts + (size_t)i] =
                strlist_contains(&mc->deps, dr->attrs[i].name);
    }
    for (int k = 0; k < t->match.n; k++)
        r->kcol[k] = cm->key_col[k];
    if (!mapped_types(a, r, dr))
        return false;
    if (!r->whole_row)
        return true;
    /* whole row: the target columns without an = operator compare as text */
    r->ctext_types = calloc((size_t)cm->ncols + 1, sizeof(char *));
    char oid[16];
    snprintf(oid, sizeof oid, "%u", t->tgt.oid);
    PGresult *res =
        r->ctext_types
            ? pg_query(a->m->tgt, "reading the target's column types",
                       "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a"
                       " WHERE a.attrelid = $1::oid AND a.attnum > 0 AND NOT a.attisdropped"
                       "   AND NOT EXISTS (SELECT 1 FROM pg_operator o WHERE o.oprname = '='"
                       "   AND o.oprleft = a.atttypid AND o.oprright = a.atttypid)",
                       1, (const char *[]){oid})
            : NULL;
    bool ok = res != NULL;
    for (int c = 0; ok && c < cm->ncols; c++)
        for (int j = 0; ok && j < PQntuples(res); j++)
            if (strcmp(PQgetvalue(res, j, 0), cm->cols[c].name) == 0)
                ok = (r->ctext_types[c] = strdup(PQgetvalue(res, j, 1))) != NULL;
    PQclear(res);
    return ok;
}

/* The mapping: quoted column names per attribute, and the attribute of
 * each key column. NULL on failure. */
static rel *build_rel(apply_ctx *a, pgs_mtable *t, const decode_relation *dr)
{
    rel *r = calloc(1, sizeof *r);
    if (r == NULL)
        return NULL;
    r->relid = dr->relid;
    r->t = t;
    r->names = calloc(dr->natts ? dr->natts : 1, sizeof(char *));
    r->match = calloc((size_t)(t->match.n ? t->match.n : dr->natts ? dr->natts : 1), sizeof(int));
    if (r->names == NULL || r->match == NULL) {
        relmap_free_rel(r);
        return NULL;
    }
    for (int i = 0; i < dr->natts; i++, r->natts++) {
        char *q = PQescapeIdentifier(a->conn, dr->attrs[i].name, strlen(dr->attrs[i].name));
        r->names[i] = q ? strdup(q) : NULL;
        PQfreemem(q);
        if (r->names[i] == NULL) {
            r->natts++;
            relmap_free_rel(r);
            return NULL;
        }
    }
    for (int k = 0; k < t->match.n; k++) {
        r->match[k] = -1;
        for (int i = 0; i < dr->natts; i++)
            if (strcmp(dr->attrs[i].name, t->match.v[k]) == 0)
                r->match[k] = i;
        if (r->match[k] < 0) {
            log_error("apply: schema change on the source: key column \"%s\" of %s is gone",
                      t->match.v[k], t->src.qname);
            relmap_free_rel(r);
            return NULL;
        }
    }
    r->nmatch = t->match.n;
    if (t->match.n == 0 && !whole_row(a, r, t, dr)) {
        relmap_free_rel(r);
        return NULL;
    }
    return r;
}

/* A Relation message: check the source's current shape against the target
 * (read afresh: the operator may have just fixed it) and cache the mapping. */
/* The same relation as before, column for column. */
static bool same_relation(const decode_relation *x, const decode_relation *y)
{
    if (x->natts != y->natts || x->replident != y->replident ||
        strcmp(x->nspname, y->nspname) != 0 || strcmp(x->relname, y->relname) != 0)
        return false;
    for (int i = 0; i < x->natts; i++) {
        const decode_attr *p = &x->attrs[i], *q = &y->attrs[i];
        if (p->flags != q->flags || p->type_oid != q->type_oid || p->typmod != q->typmod ||
            strcmp(p->name, q->name) != 0)
            return false;
    }
    return true;
}

bool relmap_on_relation(apply_ctx *a, const decode_relation *dr)
{
    /* pgoutput sends a relation again after any invalidation (a TRUNCATE,
     * an ANALYZE, each streamed transaction): when nothing changed, the
     * mapping stands. Reading the catalog again could even wait for the
     * lock this session's own open batch holds (after a TRUNCATE). */
    rel *known = relmap_find(a, dr->relid);
    if (known && known->sent && same_relation(known->sent, dr))
        return true;
    /* Publishing a partitioned source through its root, pgoutput sends
     * the partition's own Relation message after the root's: only the
     * root's is ever used by a change. A change of a relation with no
     * mapping stops the run (change_apply). */
    const char *nsp = dr->nspname[0] ? dr->nspname : "pg_catalog";
    if (migration_find_source(a->m, nsp, dr->relname) == NULL && is_partition_of_plan(a, dr)) {
        log_debug("apply: relation %u (%s.%s) is a partition of a source; its changes arrive as "
                  "the source's",
                  dr->relid, nsp, dr->relname);
        return true;
    }
    if (!folds_flush(a))
        return false;
    pgs_mtable *t = fresh_target(a, dr);
    if (t == NULL)
        return false;
    if (t->map.error) {
        log_error("apply: the column mapping of %s: %s", t->src.qname, t->map.error);
        return false;
    }
    if (t->map.mapped ? !check_mapped_columns(t, dr)
                      : !check_sent_columns(a, t, dr) || !check_unsent_columns(t, dr))
        return false;
    rel *r = build_rel(a, t, dr);
    if (r == NULL)
        return false;
    if (t->map.mapped && !setup_mapped(a, r, t, dr)) {
        relmap_free_rel(r);
        return false;
    }
    r->sent = decode_relation_copy(dr);
    if (r->sent == NULL) {
        relmap_free_rel(r);
        return false;
    }
    if (!setup_setbased(a, r, dr)) {
        relmap_free_rel(r);
        return false;
    }
    /* Replace an older mapping of the same relid (its statements are stale). */
    for (rel **pp = &a->rels; *pp; pp = &(*pp)->next)
        if ((*pp)->relid == dr->relid) {
            rel *old = *pp;
            *pp = old->next;
            relmap_free_rel(old);
            break;
        }
    r->next = a->rels;
    a->rels = r;
    log_debug("apply: relation %u is %s -> %s (%d columns, %s apply)", dr->relid, t->src.qname,
              t->tgt.qname, dr->natts, r->setbased ? "set-based" : "row by row");
    return true;
}
