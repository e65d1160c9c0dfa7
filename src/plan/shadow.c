/* shadow.c: the copy into an operator-made partitioned target, with the
 * target's indexes built after the data instead of maintained row by row.
 *
 * The operator's leaves are empty before the copy (preflight, and
 * prepare_targets() empties them after an interrupted copy). The copy
 * writes instead into a shadow in schema pgshift: a partitioned table
 * shadow_<target oid> LIKE the target, partitioned the same way, with one
 * leaf shadow_<target oid>_<n> per leaf of the target, on the same bound
 * (logged: see create_target() in prepare.c). After the copy each shadow
 * leaf gets the target's indexes and key and a copy of its bound as a
 * CHECK constraint (in parallel, as on a target pgshift creates), and one
 * transaction swaps them in: detach the empty leaf, drop it, move the
 * shadow leaf to its schema and name, attach it on the same bound (the
 * server checks its rows against the bound, which the CHECK constraint
 * proves without a scan, the check constraints and the foreign keys), drop
 * the CHECK constraint, and give its indexes the names the old leaf's
 * had. A crash before that commit leaves the target as it was, empty, and
 * the next run drops the shadow; a crash after it leaves the rows in the
 * target, as a copy into it would have.
 *
 * Only leaves with nothing of their own are swapped: no grants, storage
 * parameters, tablespace, triggers, indexes or constraints that the target
 * does not give every leaf, no dependents, no comments. Otherwise the copy
 * goes into the target as before, and the log says which leaf and why. The
 * definitions used (bounds, index and constraint definitions, the partition
 * key) are read from the server's catalog just before each is used; none
 * is stored. */
#include "pgshift/migration.h"

#include "pgshift/log.h"
#include "pgshift/pg.h"
#include "pgshift/prepare.h"
#include "prepare_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Why a leaf cannot be swapped, or NULL: one row per leaf of the target
 * ($1), with its quoted schema and name and its bound. */
static const char LEAVES_SQL[] =
    "SELECT quote_ident(n.nspname), quote_ident(c.relname), pg_get_expr(c.relpartbound, c.oid),"
    "  CASE"
    "   WHEN c.relkind <> 'r' THEN 'it is partitioned itself (sub-partitioning)'"
    "   WHEN c.relpersistence <> 'p' THEN 'it is not a logged table'"
    "   WHEN c.relacl IS NOT NULL THEN 'it has grants of its own'"
    "   WHEN c.reloptions IS NOT NULL THEN 'it has storage parameters'"
    "   WHEN c.reltablespace <> 0 THEN 'it is in a tablespace of its own'"
    "   WHEN c.relreplident <> 'd' THEN 'it has a replica identity of its own'"
    "   WHEN c.relrowsecurity OR c.relhasrules THEN 'it has row security or rules'"
    "   WHEN c.relowner <> r.relowner THEN 'its owner is not the target''s'"
    "   WHEN NOT has_schema_privilege(n.oid, 'CREATE')"
    "     THEN 'the current role cannot create tables in its schema'"
    "   WHEN EXISTS (SELECT 1 FROM pg_trigger g WHERE g.tgrelid = c.oid AND NOT g.tgisinternal"
    "                AND g.tgparentid = 0) THEN 'it has triggers of its own'"
    "   WHEN EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND NOT EXISTS"
    "                (SELECT 1 FROM pg_inherits h WHERE h.inhrelid = i.indexrelid))"
    "     THEN 'it has indexes of its own'"
    "   WHEN EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conrelid = c.oid AND k.conislocal)"
    "     THEN 'it has constraints of its own'"
    "   WHEN EXISTS (SELECT 1 FROM pg_constraint k WHERE k.confrelid = c.oid"
    "                AND k.conparentid = 0) THEN 'a foreign key references it'"
    "   WHEN EXISTS (SELECT 1 FROM pg_depend d WHERE d.refclassid = 'pg_class'::regclass"
    "                AND d.refobjid = c.oid AND d.classid NOT IN ('pg_class'::regclass,"
    "                'pg_type'::regclass, 'pg_constraint'::regclass, 'pg_trigger'::regclass,"
    "                'pg_attrdef'::regclass)) THEN 'other objects depend on it'"
    "   WHEN EXISTS (SELECT 1 FROM pg_description ds WHERE ds.classoid = 'pg_class'::regclass"
    "                AND ds.objoid = c.oid) THEN 'it has comments'"
    "   WHEN EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0"
    "                AND (a.attisdropped OR a.attacl IS NOT NULL OR a.attoptions IS NOT NULL"
    "                     OR coalesce(a.attstattarget::int, -1) >= 0))"
    "     THEN 'its columns have settings of their own'"
    "   WHEN EXISTS (SELECT 1 FROM pg_attribute a"
    "                JOIN pg_attribute ra ON ra.attrelid = r.oid AND ra.attname = a.attname"
    "                LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum"
    "                LEFT JOIN pg_attrdef rd ON rd.adrelid = ra.attrelid AND rd.adnum = ra.attnum"
    "                WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped"
    "                AND pg_get_expr(ad.adbin, ad.adrelid) IS DISTINCT FROM"
    "                    pg_get_expr(rd.adbin, rd.adrelid)) THEN 'its column defaults differ'"
    "  END"
    " FROM pg_inherits h JOIN pg_class c ON c.oid = h.inhrelid"
    " JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_class r ON r.oid = h.inhparent"
    " WHERE h.inhparent = $1::oid ORDER BY c.relname";

/* Why the target as a whole cannot be copied through a shadow, or NULL. */
static const char TARGET_SQL[] =
    "SELECT CASE"
    "  WHEN EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = r.oid AND a.attnum > 0"
    "               AND NOT a.attisdropped AND a.attgenerated <> '')"
    "    THEN 'it has generated columns'"
    "  WHEN NOT pg_has_role(r.relowner, 'MEMBER')"
    "    THEN 'the current role does not own it, so it cannot swap its partitions'"
    "  WHEN EXISTS (SELECT 1 FROM pg_constraint k WHERE k.confrelid = r.oid AND k.contype = 'f')"
    "    THEN 'a foreign key references it, so its rows must be in it while the copy runs'"
    "  WHEN NOT EXISTS (SELECT 1 FROM pg_inherits h WHERE h.inhparent = r.oid)"
    "    THEN 'it has no partitions'"
    "  ELSE '' END FROM pg_class r WHERE r.oid = $1::oid";

/* How long the swap waits for a lock on the target or its partitions. */
#define SHADOW_LOCK_TIMEOUT "30s"
/* The shadow leaves' copy of their partition constraint (index_stmts()). */
#define BOUND_CHECK "pgshift_partition_bound"

static void oid_text(uint32_t oid, char out[16])
{
    snprintf(out, 16, "%u", oid);
}

/* Drops every shadow of this target that a run left behind. */
static bool drop_leftovers(pgs_migration *m, pgs_mtable *t)
{
    char oid[16];
    oid_text(t->tgt.oid, oid);
    PGresult *res = pg_query(m->tgt, "looking for a shadow left by an interrupted copy",
                             "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c"
                             " JOIN pg_namespace n ON n.oid = c.relnamespace"
                             " WHERE n.nspname = 'pgshift' AND c.relkind IN ('r', 'p')"
                             "   AND c.relname ~ ('^shadow_' || $1 || '(_[0-9]+)?$')"
                             " ORDER BY c.relkind DESC",
                             1, (const char *[]){oid});
    bool ok = res != NULL;
    for (int i = 0; ok && i < PQntuples(res); i++)
        ok = exec_fmt(m->tgt, "dropping a shadow left by an interrupted copy",
                      "DROP TABLE IF EXISTS %s", PQgetvalue(res, i, 0));
    if (ok && PQntuples(res) > 0)
        log_info("table %s: dropped the shadow of %s left by an interrupted copy", t->src.qname,
                 t->tgt.qname);
    PQclear(res);
    return ok;
}

/* Whether the target can be copied through a shadow: NULL if so, else a
 * malloc'd reason. `leaves` gets LEAVES_SQL's rows. */
static char *why_not(pgs_migration *m, pgs_mtable *t, PGresult **leaves)
{
    char oid[16];
    oid_text(t->tgt.oid, oid);
    *leaves = NULL;
    char *why = pg_query_value(m->tgt, "checking the target's partitions", TARGET_SQL, 1,
                               (const char *[]){oid}, NULL);
    if (why == NULL || why[0] != '\0') /* NULL: the query failed (logged) */
        return why ? why : strdup("the target could not be read");
    free(why);
    PGresult *res =
        pg_query(m->tgt, "checking the target's partitions", LEAVES_SQL, 1, (const char *[]){oid});
    if (res == NULL)
        return strdup("its partitions could not be read");
    for (int i = 0; i < PQntuples(res); i++) {
        if (PQgetisnull(res, i, 3))
            continue;
        char *out = NULL;
        if (asprintf(&out, "partition %s.%s: %s", PQgetvalue(res, i, 0), PQgetvalue(res, i, 1),
                     PQgetvalue(res, i, 3)) < 0)
            out = NULL;
        PQclear(res);
        return out ? out : strdup("?");
    }
    *leaves = res;
    return NULL;
}

char *prepare_shadow_why_not(pgs_migration *m, pgs_mtable *t)
{
    PGresult *leaves = NULL;
    char *why = why_not(m, t, &leaves);
    PQclear(leaves);
    return why;
}

bool prepare_drop_shadows(pgs_migration *m)
{
    for (int i = 0; i < m->ntables; i++)
        if (m->tables[i].tgt.exists && !m->tables[i].create_target &&
            !drop_leftovers(m, &m->tables[i]))
            return false;
    return true;
}

bool shadow_prepare(pgs_migration *m, pgs_mtable *t)
{
    free(t->copy_into);
    t->copy_into = NULL;
    if (!t->tgt.exists || t->tgt.relkind != 'p' || t->create_target)
        return true;
    if (!drop_leftovers(m, t))
        return false;
    PGresult *leaves = NULL;
    char *why = why_not(m, t, &leaves);
    if (why != NULL) {
        log_info("table %s: the copy writes into %s with its indexes in place (%s)", t->src.qname,
                 t->tgt.qname, why);
        free(why);
        return true;
    }
    char name[64], oid[16];
    oid_text(t->tgt.oid, oid);
    snprintf(name, sizeof name, "shadow_%s", oid);
    char *shadow = pg_qualified(m->tgt, "pgshift", name);
    bool ok = shadow != NULL &&
              exec_fmt(m->tgt, "creating the copy's shadow",
                       "BEGIN; CREATE TABLE %s (LIKE %s INCLUDING DEFAULTS INCLUDING CONSTRAINTS"
                       " INCLUDING STORAGE INCLUDING COMPRESSION) PARTITION BY %s",
                       shadow, t->tgt.qname, t->tgt.partkey);
    for (int i = 0; ok && i < PQntuples(leaves); i++) {
        char leaf[64];
        snprintf(leaf, sizeof leaf, "shadow_%s_%d", oid, i + 1);
        char *q = pg_qualified(m->tgt, "pgshift", leaf);
        ok = q &&
             exec_fmt(m->tgt, "creating the copy's shadow", "CREATE TABLE %s PARTITION OF %s %s", q,
                      shadow, PQgetvalue(leaves, i, 2));
        free(q);
    }
    if (ok)
        ok = pg_exec(m->tgt, "creating the copy's shadow", "COMMIT");
    else
        pg_exec(m->tgt, "rolling back", "ROLLBACK");
    if (ok) {
        log_info("table %s: the copy writes into %s (%d partitions without indexes); "
                 "they replace the empty partitions of %s after the copy, with its indexes built "
                 "then",
                 t->src.qname, shadow, PQntuples(leaves), t->tgt.qname);
        t->copy_into = shadow;
        shadow = NULL;
    }
    free(shadow);
    PQclear(leaves);
    return ok;
}

/* Pairs of (shadow leaf, target leaf) on the same bound: the shadow leaf
 * (quoted, qualified), the target leaf's quoted schema and name, its
 * bound, its owner (quoted), the shadow leaf's oid, the target leaf's, and
 * the shadow leaf's partition constraint (NULL when it has none, or when
 * it names the shadow's own oid, as a hash partition's does). The
 * DEFAULT partition comes last: each ATTACH of another leaf scans the
 * target's DEFAULT partition, which is empty until then. */
static PGresult *pairs(pgs_migration *m, pgs_mtable *t, const char *shadow_oid)
{
    char oid[16];
    oid_text(t->tgt.oid, oid);
    return pg_query(
        m->tgt, "matching the shadow's partitions with the target's",
        "SELECT format('%I.%I', sn.nspname, s.relname), quote_ident(ln.nspname),"
        "  quote_ident(l.relname), pg_get_expr(l.relpartbound, l.oid),"
        "  CASE WHEN l.relowner <> (SELECT oid FROM pg_roles WHERE rolname = current_user)"
        "       THEN quote_ident(pg_get_userbyid(l.relowner)) END, s.oid, l.oid,"
        "  CASE WHEN p.partstrat <> 'h' THEN pg_get_partition_constraintdef(s.oid) END"
        " FROM pg_inherits sh JOIN pg_class s ON s.oid = sh.inhrelid"
        " JOIN pg_namespace sn ON sn.oid = s.relnamespace"
        " JOIN pg_inherits lh ON lh.inhparent = $2::oid JOIN pg_class l ON l.oid = lh.inhrelid"
        " JOIN pg_namespace ln ON ln.oid = l.relnamespace"
        " JOIN pg_partitioned_table p ON p.partrelid = sh.inhparent"
        " WHERE sh.inhparent = $1::oid"
        "   AND pg_get_expr(s.relpartbound, s.oid) = pg_get_expr(l.relpartbound, l.oid)"
        " ORDER BY pg_get_expr(l.relpartbound, l.oid) = 'DEFAULT', s.relname",
        2, (const char *[]){shadow_oid, oid});
}

/* One job per shadow leaf, the target's indexes: its keys and unique and
 * exclusion constraints as constraints (ATTACH matches a constraint's
 * index only with a constraint), other indexes from their definitions. An index whose definition
 * cannot be read is left to ATTACH, which builds it. Then its partition constraint as a CHECK
 * constraint (BOUND_CHECK), checked here on every row while they are in the buffers: it lets the
 * swap's ATTACH skip its own scan of the rows against the bound, and the swap drops it once
 * attached. */
static bool index_stmts(pgs_migration *m, pgs_mtable *t, const PGresult *pr, stmt_list *l)
{
    char oid[16];
    oid_text(t->tgt.oid, oid);
    PGresult *res = pg_query(
        m->tgt, "reading the target's indexes",
        "SELECT pg_get_constraintdef(k.oid), i.indisunique,"
        "  CASE WHEN left(d.def, length(d.prefix)) = d.prefix"
        "       THEN substr(d.def, length(d.prefix) + 1) END"
        " FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid"
        " JOIN pg_class tc ON tc.oid = i.indrelid JOIN pg_namespace n ON n.oid = tc.relnamespace"
        " LEFT JOIN pg_constraint k ON k.conindid = i.indexrelid AND k.conrelid = i.indrelid"
        " CROSS JOIN LATERAL (SELECT pg_get_indexdef(i.indexrelid) AS def,"
        "   format('CREATE %sINDEX %I ON ONLY %I.%I USING ', CASE WHEN i.indisunique"
        "     THEN 'UNIQUE ' ELSE '' END, ic.relname, n.nspname, tc.relname) AS prefix) d"
        " WHERE i.indrelid = $1::oid ORDER BY i.indisprimary DESC, ic.relname",
        1, (const char *[]){oid});
    bool ok = res != NULL;
    stmt_list one = {0};
    for (int k = 0; ok && k < PQntuples(pr); k++) {
        const char *leaf = PQgetvalue(pr, k, 0);
        for (int i = 0; ok && i < PQntuples(res); i++) {
            if (!PQgetisnull(res, i, 0))
                ok = stmt_add(&one, "ALTER TABLE %s ADD %s", leaf, PQgetvalue(res, i, 0));
            else if (!PQgetisnull(res, i, 2))
                ok = stmt_add(&one, "CREATE %sINDEX ON %s USING %s",
                              PQgetvalue(res, i, 1)[0] == 't' ? "UNIQUE " : "", leaf,
                              PQgetvalue(res, i, 2));
        }
        if (ok && !PQgetisnull(pr, k, 7))
            ok = stmt_add(&one, "ALTER TABLE %s ADD CONSTRAINT " BOUND_CHECK " CHECK (%s)", leaf,
                          PQgetvalue(pr, k, 7));
        ok = ok && stmt_join(l, &one);
    }
    stmt_free(&one);
    PQclear(res);
    return ok;
}

/* The names of a target leaf's indexes, by the target index each belongs
 * to: rows of (parent index oid, quoted name). */
static PGresult *leaf_index_names(pgs_migration *m, const char *leaf_oid)
{
    return pg_query(m->tgt, "reading the partition's index names",
                    "SELECT h.inhparent, quote_ident(ic.relname) FROM pg_index i"
                    " JOIN pg_inherits h ON h.inhrelid = i.indexrelid"
                    " JOIN pg_class ic ON ic.oid = i.indexrelid WHERE i.indrelid = $1::oid",
                    1, (const char *[]){leaf_oid});
}

/* Gives the attached leaf `leaf_oid`'s indexes the names in `names` (rows
 * of leaf_index_names() of the leaf it replaced). */
static bool rename_indexes(pgs_migration *m, const char *leaf_oid, const char *nsp,
                           const PGresult *names)
{
    PGresult *now = leaf_index_names(m, leaf_oid);
    bool ok = now != NULL;
    for (int i = 0; ok && i < PQntuples(now); i++)
        for (int k = 0; ok && k < PQntuples(names); k++)
            if (strcmp(PQgetvalue(now, i, 0), PQgetvalue(names, k, 0)) == 0 &&
                strcmp(PQgetvalue(now, i, 1), PQgetvalue(names, k, 1)) != 0)
                ok = exec_fmt(m->tgt, "naming the partition's indexes",
                              "ALTER INDEX %s.%s RENAME TO %s", nsp, PQgetvalue(now, i, 1),
                              PQgetvalue(names, k, 1));
    PQclear(now);
    return ok;
}

/* One leaf of the swap (inside its transaction): see the file comment. */
static bool swap_leaf(pgs_migration *m, pgs_mtable *t, const PGresult *pr, int k)
{
    const char *sleaf = PQgetvalue(pr, k, 0), *nsp = PQgetvalue(pr, k, 1),
               *name = PQgetvalue(pr, k, 2), *bound = PQgetvalue(pr, k, 3);
    const char *old_oid = PQgetvalue(pr, k, 6), *new_oid = PQgetvalue(pr, k, 5);
    const char *sname = strchr(sleaf, '.') + 1; /* "pgshift".<name>: the name part */
    PGresult *names = leaf_index_names(m, old_oid);
    bool ok =
        names != NULL &&
        exec_fmt(m->tgt, "swapping in a partition", "ALTER TABLE %s DETACH PARTITION %s",
                 t->copy_into, sleaf) &&
        exec_fmt(m->tgt, "swapping in a partition", "ALTER TABLE %s DETACH PARTITION %s.%s",
                 t->tgt.qname, nsp, name) &&
        exec_fmt(m->tgt, "swapping in a partition", "DROP TABLE %s.%s", nsp, name) &&
        exec_fmt(m->tgt, "swapping in a partition", "ALTER TABLE %s SET SCHEMA %s", sleaf, nsp) &&
        exec_fmt(m->tgt, "swapping in a partition", "ALTER TABLE %s.%s RENAME TO %s", nsp, sname,
                 name);
    if (ok && !PQgetisnull(pr, k, 4))
        ok = exec_fmt(m->tgt, "swapping in a partition", "ALTER TABLE %s.%s OWNER TO %s", nsp, name,
                      PQgetvalue(pr, k, 4));
    ok = ok &&
         exec_fmt(m->tgt, "swapping in a partition", "ALTER TABLE %s ATTACH PARTITION %s.%s %s",
                  t->tgt.qname, nsp, name, bound) &&
         (PQgetisnull(pr, k, 7) ||
          exec_fmt(m->tgt, "swapping in a partition",
                   "ALTER TABLE %s.%s DROP CONSTRAINT " BOUND_CHECK, nsp, name)) &&
         rename_indexes(m, new_oid, nsp, names);
    PQclear(names);
    return ok;
}

/* The shadow's rows into the target by INSERT, when the swap failed. */
static bool insert_instead(pgs_migration *m, pgs_mtable *t)
{
    char *cols = pg_ident_list(m->tgt, t->cols.v, t->cols.n);
    double t0 = now_s();
    bool ok =
        cols != NULL && exec_fmt(m->tgt, "inserting the copied rows into the target",
                                 "INSERT INTO %s (%s) OVERRIDING SYSTEM VALUE SELECT %s FROM %s",
                                 t->tgt.qname, cols, cols, t->copy_into);
    if (ok)
        log_info("table %s: rows inserted from %s into %s in %.1f s", t->src.qname, t->copy_into,
                 t->tgt.qname, now_s() - t0);
    free(cols);
    return ok;
}

bool shadow_finish(pgs_migration *m, pgs_mtable *t)
{
    if (t->copy_into == NULL)
        return true;
    char *shadow_oid =
        pg_query_value(m->tgt, "finding the copy's shadow", "SELECT $1::regclass::oid", 1,
                       (const char *[]){t->copy_into}, NULL);
    PGresult *pr = shadow_oid ? pairs(m, t, shadow_oid) : NULL;
    char *nleaves =
        pr ? pg_query_value(m->tgt, "counting the shadow's partitions",
                            "SELECT count(*) FROM pg_inherits WHERE inhparent = $1::oid", 1,
                            (const char *[]){shadow_oid}, NULL)
           : NULL;
    bool ok = pr != NULL && nleaves != NULL;
    /* Every shadow leaf must have its target leaf (the operator may have
     * changed the target's partitions during the copy): else no swap. */
    bool paired = ok && atoi(nleaves) == PQntuples(pr);
    free(nleaves);
    if (ok && !paired)
        log_warn("table %s: the partitions of %s changed during the copy", t->src.qname,
                 t->tgt.qname);
    /* The indexes, leaves in parallel, each leaf's in one transaction (see
     * build_target_indexes()). */
    stmt_list l = {0};
    double t0 = now_s();
    ok = ok && index_stmts(m, t, pr, &l) && run_index_jobs(m, &l);
    stmt_free(&l);
    double t2 = now_s();
    if (ok)
        log_info("table %s: indexes built on %d partitions of %s in %.1f s", t->src.qname,
                 PQntuples(pr), t->copy_into, t2 - t0);
    /* The swap: all leaves or none. */
    /* Nothing but pgshift should use the target yet; a session that holds
     * a lock on it anyway makes the swap give up (and insert instead)
     * rather than wait unseen. */
    bool swapped = ok && paired &&
                   pg_exec(m->tgt, "swapping in the copied partitions",
                           "BEGIN; SET LOCAL lock_timeout = '" SHADOW_LOCK_TIMEOUT "'");
    for (int k = 0; swapped && k < PQntuples(pr); k++)
        swapped = swap_leaf(m, t, pr, k);
    swapped = swapped && pg_exec(m->tgt, "swapping in the copied partitions", "COMMIT");
    if (swapped) {
        log_info("table %s: %d copied partitions swapped into %s in %.1f s (bounds, checks and "
                 "foreign keys verified)",
                 t->src.qname, PQntuples(pr), t->tgt.qname, now_s() - t2);
    } else if (ok) {
        if (paired)
            pg_exec(m->tgt, "rolling back", "ROLLBACK");
        log_warn("table %s: the copied partitions could not be swapped into %s (see above); "
                 "inserting their rows into it instead",
                 t->src.qname, t->tgt.qname);
        ok = insert_instead(m, t);
    }
    ok = ok && exec_fmt(m->tgt, "dropping the copy's shadow", "DROP TABLE %s", t->copy_into);
    PQclear(pr);
    free(shadow_oid);
    if (!ok)
        return false;
    free(t->copy_into);
    t->copy_into = NULL;
    catalog_relinfo_free(&t->tgt);
    return catalog_read_rel(m->tgt, t->spec->target, &t->tgt);
}
