/* verify.c: `pgshift verify` (verify.h).
 *
 * The consistent point. While a `pgshift run` streams, source and target
 * are read as of one source LSN: the run commits what it applied and holds
 * (VERIFY_HOLD, src/run/vhold.c); a temporary logical slot exports a
 * snapshot that sees exactly the commits whose commit record starts below
 * its consistent point L; the source session imports it and the slot goes;
 * a non-transactional message is emitted past L; the run applies up to the
 * first commit at or past L (or that message) and holds again
 * (VERIFY_AT); the target session takes its snapshot; the run goes on
 * (VERIFY_RELEASE). Each hold lasts milliseconds except while the slot is
 * made (it waits for transactions open on the source), and at most
 * VHOLD_LEASE_MS. With no run alive the two sides are read as they are,
 * and the report says the comparison is not at one LSN (a row changed in
 * between shows as a difference). After the cutover, the live table is
 * compared with <t>_old in one snapshot of their database.
 *
 * The comparison. Keyed tables are walked in key order (the source key's
 * collations on both sides) in chunks of verify.chunk_rows: the source
 * returns the chunk's count, the XOR of its rows' 64-bit hashes and its
 * last key; the target the count and XOR over the same key range; the
 * target's query for one chunk runs while the source reads the next.
 * A row's hash is hashtextextended() of its copied columns as a record's
 * text, under the same output settings on both sides (UTC, ISO dates,
 * shortest exact floats, hex bytea), so equal values hash equal whatever
 * the column's type on either side (int vs bigint, json text). A chunk
 * that differs is narrowed afterwards: keys and hashes of its rows, in
 * byte order of the key's JSON on both sides, merged here. Tables without
 * a key compare count and sum of hashes, and on a difference the multiset
 * of row texts, streamed one row at a time from both sides.
 *
 * Mapped tables (columns:, colmap.h). The target is compared with the
 * mapped source: the source side evaluates each target column's
 * expression cast to the target column's type (typmod included), the
 * target side reads its columns, and both hash the same text when the
 * target holds what the mapping gives. Keys are named and printed as the
 * target has them (the JSON key, the buckets of scan, --repair's rows).
 * The source orders and bounds its ranges by its own key column where
 * that orders like the target's key (one type, or int2/int4/int8, or
 * text/varchar: its index serves), else by the key's expression cast to
 * the target's type. --repair writes the mapped values, read from the
 * source as the copy reads them. Source and target sessions keep the
 * source session's TimeZone, DateStyle and IntervalStyle then, the ones
 * the copy evaluated the expressions under. After the cutover the mapping
 * is resolved between <t>_old and the live table; during the rollback
 * window a table with columns: is refused (resolve_sides). */
#include "pgshift/verify.h"

#include "pgshift/cli.h"
#include "pgshift/control.h"
#include "pgshift/log.h"
#include "pgshift/pg.h"
#include "pgshift/state.h"
#include "pgshift/store.h"

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <time.h>
#include <unistd.h>

#define SESSION_SETTINGS                                                                           \
    "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres';"            \
    " SET extra_float_digits = 3; SET bytea_output = 'hex'; SET statement_timeout = 0;"            \
    " SET lock_timeout = 0;" /* the planner cannot tell a bucket has few values: with the default  \
                              * work_mem it sorts every row instead of hashing a few thousand      \
                              * groups */                                                          \
    " SET work_mem = '64MB'"

typedef struct vsample {
    const char *kind; /* "missing", "extra", "different" */
    char *key;        /* JSON text */
} vsample;

/* A key range: after `lo` (NULL: from the start) up to and including `hi`
 * (NULL: to the end); each holds one text per key column. */
typedef struct vrange {
    char **lo, **hi;
} vrange;

typedef struct verifier verifier;

/* One side's SQL pieces. A mapped table (colmap.h) has the source evaluate
 * each target column's expression cast to the target column's type and
 * the target read its columns, so that both print a row the same way when
 * the target holds what the mapping gives; an unmapped table has the same
 * pieces on both sides. */
typedef struct vside {
    const char *q; /* the table, quoted (vtable's src_q or tgt_q) */
    char **kord;   /* per key column: what ranges compare and order by */
    char **kval;   /* per key column: its value as the target holds it (JSON key, buckets) */
    char *hash;    /* the row's hash, bigint */
    char *keyjson; /* the key as JSON text */
    char *rowtext; /* the row as text (tables without a key) */
} vside;

enum { VS_SRC, VS_TGT };

typedef struct vtable {
    const pgs_mtable *t;
    /* What the two sides are: t, or after the cutover and during the
     * rollback window, where t resolves to the live table alone, `own`:
     * the two tables compared, their mapping resolved here (mapped only). */
    const pgs_mtable *mt;
    pgs_mtable *own;
    pgs_plan_table rspec; /* own's plan table in the window: reverse: as columns: */
    char display[300];
    char *src_q, *tgt_q; /* the two sides, quoted */
    /* SQL pieces */
    int chunk_rows; /* walk */
    int nk;
    char **kname;   /* key column as named in the JSON key and on the target */
    char **ktype;   /* the type of a range's bounds */
    char **kcoll;   /* " COLLATE <collation>" (the same on both sides) or "" */
    vside s[2];     /* VS_SRC, VS_TGT */
    bool src_sorts; /* a mapped key the source orders by its expression (same_order) */
    /* results */
    long long rows_src, rows_tgt, missing, extra, different, chunks;
    vsample samples[VERIFY_MAX_SAMPLES];
    int nsamples;
    const char *method; /* scan, walk or multiset */
    bool keep_keys;     /* --repair: every differing key, not only the samples */
    bool finished;      /* compared (or restored as compared by an interrupted verify) */
    char lsn[24];       /* where it was compared (the last point, for walk) */
    bool consistent;    /* every point it was compared at was at one LSN */
    bool restored;      /* its result comes from verify_progress */
    char **resume_lo;   /* walk resumes after this key (verify_progress) */
    char **keys;
    int nkeys, capkeys;
    long long repaired;
    double secs;
} vtable;

struct verifier {
    pgs_migration *m;
    const verify_opts *o;
    PGconn *src, *tgt;
    bool consistent;
    bool after_cutover;
    /* The rollback window is open: the live table is the truth (the
     * source side), <t>_old the copy the reverse stream keeps; the live
     * run (the reverse one) holds at one LSN as before the cutover. */
    bool window;
    bool repaired_at; /* --repair rewrote rows, and this is the verify after it */
    PGconn *st;       /* the state (verify_progress), or NULL */
    uint64_t token;   /* this verify's, on every hold command */
    bool paused;      /* the live run is paused (run_paused) */
    bool renew_now;   /* the snapshots were ended (a pause): a fresh point first */
    double paused_asked_ms;
    double rows_done_ms0; /* verify.max_rate: when reading began */
    long long rows_read;  /* rows read on the source before the current table */
    double snap_ms;       /* when the current snapshots were taken */
    int snapshots;        /* points taken (walk renews them) */
    int incons;           /* of which not at one LSN */
    int slots;            /* temporary slots made (their names) */
    char lsn[18];
    char note[512];
    vtable *tabs;
    int ntabs;
};

static bool renew_point(verifier *v);
static bool end_snapshots(verifier *v);
struct vtable;
static void save_progress(struct verifier *v, const struct vtable *cur, char **lo);

static void strv_free(char **v, int n)
{
    if (v)
        for (int i = 0; i < n; i++)
            free(v[i]);
    free(v);
}

/* ---- SQL pieces ---- */

/* "(a COLLATE x, b) OP ($i::ta COLLATE x, $i+1::tb)" on one side */
static void put_cmp(FILE *f, const vtable *vt, const vside *s, const char *op, int first)
{
    fputs(vt->nk > 1 ? "ROW(" : "(", f);
    for (int i = 0; i < vt->nk; i++)
        fprintf(f, "%s%s%s", i ? ", " : "", s->kord[i], vt->kcoll[i]);
    fprintf(f, ") %s %s", op, vt->nk > 1 ? "ROW(" : "(");
    for (int i = 0; i < vt->nk; i++)
        fprintf(f, "%s$%d::%s%s", i ? ", " : "", first + i, vt->ktype[i], vt->kcoll[i]);
    fputc(')', f);
}

static void put_order(FILE *f, const vtable *vt, const vside *s, bool desc)
{
    for (int i = 0; i < vt->nk; i++)
        fprintf(f, "%s%s%s%s", i ? ", " : "", s->kord[i], vt->kcoll[i], desc ? " DESC" : "");
}

/* " WHERE lo < key <= hi" for the range (either end may be open) */
static void put_where(FILE *f, const vtable *vt, const vside *s, const vrange *r)
{
    if (r->lo == NULL && r->hi == NULL)
        return;
    fputs(" WHERE ", f);
    if (r->lo)
        put_cmp(f, vt, s, ">", 1);
    if (r->hi) {
        if (r->lo)
            fputs(" AND ", f);
        put_cmp(f, vt, s, "<=", r->lo ? vt->nk + 1 : 1);
    }
}

static const char **range_params(const vtable *vt, const vrange *r)
{
    const char **p = calloc((size_t)vt->nk * 2 + 1, sizeof *p);
    int n = 0;
    if (p == NULL)
        return NULL;
    for (int i = 0; r->lo && i < vt->nk; i++)
        p[n++] = r->lo[i];
    for (int i = 0; r->hi && i < vt->nk; i++)
        p[n++] = r->hi[i];
    return p;
}

static int range_nparams(const vtable *vt, const vrange *r)
{
    return (r->lo ? vt->nk : 0) + (r->hi ? vt->nk : 0);
}

static char *close_sql(FILE *f, char **buf)
{
    if (fclose(f) != 0) {
        free(*buf);
        return NULL;
    }
    return *buf;
}

/* The source's next chunk after `lo`: count, XOR of hashes, last key. */
static char *sql_src_chunk(const vtable *vt, bool has_lo)
{
    const vside *s = &vt->s[VS_SRC];
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (f == NULL)
        return NULL;
    fputs("WITH c AS MATERIALIZED (SELECT ", f);
    for (int i = 0; i < vt->nk; i++)
        fprintf(f, "%s AS k%d, ", s->kord[i], i);
    fprintf(f, "%s AS h FROM %s", s->hash, s->q);
    if (has_lo) {
        fputs(" WHERE ", f);
        put_cmp(f, vt, s, ">", 1);
    }
    fputs(" ORDER BY ", f);
    put_order(f, vt, s, false);
    fprintf(f, " LIMIT %d) SELECT a.n, a.x", vt->chunk_rows);
    for (int i = 0; i < vt->nk; i++)
        fprintf(f, ", l.t%d", i);
    fputs(" FROM (SELECT count(*) AS n, coalesce(bit_xor(h), 0) AS x FROM c) a LEFT JOIN (SELECT ",
          f);
    for (int i = 0; i < vt->nk; i++)
        fprintf(f, "%sk%d::text AS t%d", i ? ", " : "", i,
                i); /* not k%d: ORDER BY would sort the text */
    fputs(" FROM c ORDER BY ", f);
    for (int i = 0; i < vt->nk; i++)
        fprintf(f, "%sk%d%s DESC", i ? ", " : "", i, vt->kcoll[i]);
    fputs(" LIMIT 1) l ON true", f);
    return close_sql(f, &buf);
}

/* The target's count and XOR over a range. */
static char *sql_tgt_chunk(const vtable *vt, const vrange *r)
{
    const vside *s = &vt->s[VS_TGT];
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (f == NULL)
        return NULL;
    fprintf(f, "SELECT count(*), coalesce(bit_xor(%s), 0) FROM %s", s->hash, s->q);
    put_where(f, vt, s, r);
    return close_sql(f, &buf);
}

/* Keys and hashes of a range on one side, in byte order of the key's JSON. */
static char *sql_rows(const vtable *vt, const vside *s, const vrange *r)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (f == NULL)
        return NULL;
    fprintf(f, "SELECT k, h FROM (SELECT %s AS k, (%s)::text AS h FROM %s", s->keyjson, s->hash,
            s->q);
    put_where(f, vt, s, r);
    fputs(") s ORDER BY k COLLATE \"C\"", f);
    return close_sql(f, &buf);
}

/* " COLLATE <schema>.<name>" of a table's column, or "" (none). */
static char *column_collation(PGconn *c, const char *qname, const char *col)
{
    PGresult *res =
        pg_query(c, "reading a key column's collation",
                 "SELECT CASE WHEN a.attcollation = 0 THEN '' ELSE ' COLLATE ' ||"
                 " quote_ident(n.nspname) || '.' || quote_ident(co.collname) END"
                 " FROM pg_attribute a LEFT JOIN pg_collation co ON co.oid = a.attcollation"
                 " LEFT JOIN pg_namespace n ON n.oid = co.collnamespace"
                 " WHERE a.attrelid = $1::regclass AND a.attname = $2",
                 2, (const char *[]){qname, col});
    char *out = res && PQntuples(res) == 1 ? strdup(PQgetvalue(res, 0, 0)) : NULL;
    PQclear(res);
    return out;
}

/* Whether a mapped key column's source values, compared as they are, order
 * as the target's: one type, or two of integer (int2, int4, int8) or of
 * text (text, varchar), whose cross-type operators the source column's
 * index serves. The value itself is the same on both sides (colmap.c: a
 * key may change type, not value). Otherwise (int -> numeric, int -> text,
 * uuid -> text) the source orders by the value cast to the target's type,
 * which no index of the source serves: walk sorts the source per range. */
static bool same_order(const pgs_column *s, const pgs_column *d)
{
    static const uint32_t groups[][3] = {{21, 23, 20} /* int2, int4, int8 */,
                                         {25, 1043, 25} /* text, varchar */};
    if (s->typoid == d->typoid)
        return true;
    for (size_t g = 0; g < sizeof groups / sizeof groups[0]; g++) {
        bool a = false, b = false;
        for (int i = 0; i < 3; i++) {
            a = a || groups[g][i] == s->typoid;
            b = b || groups[g][i] == d->typoid;
        }
        if (a && b)
            return true;
    }
    return false;
}

/* The target column's full type (typmod included), for the source's
 * casts: what assignment into the column would make of the value. */
static const char *full_type(const pgs_mtable *t, const pgs_mcol *mc)
{
    const pgs_column *d = catalog_column(&t->tgt, mc->name);
    return d ? d->type : mc->type;
}

/* The source side's key columns of a mapped table. */
static bool prepare_mapped_key(verifier *v, vtable *vt, int i)
{
    const pgs_mtable *t = vt->mt;
    const pgs_mcol *mc = &t->map.cols[t->map.key_col[i]];
    const pgs_column *sc = catalog_column(&t->src, t->match.v[i]);
    const pgs_column *tc = catalog_column(&t->tgt, mc->name);
    vside *s = &vt->s[VS_SRC];
    if (sc == NULL || tc == NULL)
        return false;
    vt->kname[i] = strdup(mc->name);
    if (asprintf(&s->kval[i], "(%s)::%s", mc->expr, tc->type) < 0)
        s->kval[i] = NULL;
    /* A range's bounds are keys the source read: of the source's type
     * where it orders by its column (the target compares them across
     * types), else of the target's. */
    if (same_order(sc, tc)) {
        s->kord[i] = pg_ident(v->src, t->match.v[i]);
        vt->ktype[i] = strdup(sc->type);
        vt->kcoll[i] = column_collation(v->src, t->src.qname, t->match.v[i]);
    } else {
        if (asprintf(&s->kord[i], "((%s)::%s)", mc->expr, mc->type) < 0)
            s->kord[i] = NULL;
        vt->src_sorts = true;
        vt->ktype[i] = strdup(mc->type);
        vt->kcoll[i] = column_collation(v->tgt, t->tgt.qname, mc->name);
    }
    vt->s[VS_TGT].kord[i] = pg_ident(v->tgt, mc->name);
    vt->s[VS_TGT].kval[i] = pg_ident(v->tgt, mc->name);
    return vt->kname[i] && vt->ktype[i] && s->kval[i] && s->kord[i] && vt->kcoll[i] &&
           vt->s[VS_TGT].kord[i] && vt->s[VS_TGT].kval[i];
}

/* A side's row hash, row text and JSON key, from its key values and its
 * row: `row` is the columns (target) or the expressions (mapped source). */
static bool prepare_side(PGconn *c, const vtable *vt, vside *s, const char *row)
{
    if (asprintf(&s->rowtext, "ROW(%s)::text", row) < 0) {
        s->rowtext = NULL;
        return false;
    }
    if (asprintf(&s->hash, "hashtextextended(ROW(%s)::text, 0)", row) < 0) {
        s->hash = NULL;
        return false;
    }
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (f == NULL)
        return false;
    fputs("json_build_object(", f);
    for (int i = 0; i < vt->nk; i++) {
        char *lit = PQescapeLiteral(c, vt->kname[i], strlen(vt->kname[i]));
        fprintf(f, "%s%s, %s", i ? ", " : "", lit ? lit : "''", s->kval[i]);
        PQfreemem(lit);
    }
    fputs(")::text", f);
    s->keyjson = close_sql(f, &buf);
    return s->keyjson != NULL;
}

/* "(e1)::type1, (e2)::type2, ...": a mapped table's row on the source,
 * each target column's expression cast to its full type. */
static char *mapped_row(const pgs_mtable *t, bool aliased, PGconn *c)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (f == NULL)
        return NULL;
    for (int i = 0; i < t->map.ncols; i++) {
        const pgs_mcol *mc = &t->map.cols[i];
        fprintf(f, "%s(%s)::%s", i ? ", " : "", mc->expr, full_type(t, mc));
        if (aliased) {
            char *q = pg_ident(c, mc->name);
            fprintf(f, " AS %s", q ? q : "\"?\"");
            free(q);
        }
    }
    return close_sql(f, &buf);
}

/* Builds the SQL pieces of a table: its key columns with the source's
 * types and collations (a mapped table's: as the target has them), the
 * row hash and the key as JSON, for each side. */
static bool vtable_prepare(verifier *v, vtable *vt)
{
    const pgs_mtable *t = vt->mt;
    PGconn *c = v->src;
    bool mapped = t->map.mapped;
    vt->chunk_rows = v->m->plan->verify.chunk_rows;
    vt->nk = t->match.n;
    /* A key from the plan (`key:` of a FULL table) need not be unique:
     * only a real key walks in chunks. */
    if (t->src.pk.n == 0 && !(t->src.replident == 'i' && t->src.ri.n))
        vt->nk = 0;
    vt->kname = calloc((size_t)vt->nk + 1, sizeof(char *));
    vt->ktype = calloc((size_t)vt->nk + 1, sizeof(char *));
    vt->kcoll = calloc((size_t)vt->nk + 1, sizeof(char *));
    if (!vt->kname || !vt->ktype || !vt->kcoll)
        return false;
    for (int j = 0; j < 2; j++) {
        vt->s[j].q = j == VS_SRC ? vt->src_q : vt->tgt_q;
        vt->s[j].kord = calloc((size_t)vt->nk + 1, sizeof(char *));
        vt->s[j].kval = calloc((size_t)vt->nk + 1, sizeof(char *));
        if (!vt->s[j].kord || !vt->s[j].kval)
            return false;
    }
    for (int i = 0; i < vt->nk; i++) {
        if (mapped) {
            if (!prepare_mapped_key(v, vt, i))
                return false;
            continue;
        }
        const pgs_column *col = catalog_column(&t->src, t->match.v[i]);
        vt->kname[i] = strdup(t->match.v[i]);
        for (int j = 0; j < 2; j++) {
            vt->s[j].kord[i] = pg_ident(c, t->match.v[i]);
            vt->s[j].kval[i] = pg_ident(c, t->match.v[i]);
            if (vt->s[j].kord[i] == NULL || vt->s[j].kval[i] == NULL)
                return false;
        }
        if (col == NULL || vt->kname[i] == NULL)
            return false;
        vt->ktype[i] = strdup(col->type);
        /* The key's collation on the source, named the same way on both sides. */
        vt->kcoll[i] = column_collation(c, t->src.qname, t->match.v[i]);
        if (!vt->ktype[i] || !vt->kcoll[i])
            return false;
    }
    char *cols = pg_ident_list(c, t->cols.v, t->cols.n);
    char *srow = mapped ? mapped_row(t, false, c) : NULL;
    bool ok = cols && (srow || !mapped) &&
              prepare_side(c, vt, &vt->s[VS_SRC], mapped ? srow : cols) &&
              prepare_side(c, vt, &vt->s[VS_TGT], cols);
    free(cols);
    free(srow);
    return ok;
}

static void vtable_free(vtable *vt)
{
    strv_free(vt->kname, vt->nk);
    strv_free(vt->ktype, vt->nk);
    strv_free(vt->kcoll, vt->nk);
    for (int j = 0; j < 2; j++) {
        strv_free(vt->s[j].kord, vt->nk);
        strv_free(vt->s[j].kval, vt->nk);
        free(vt->s[j].hash);
        free(vt->s[j].keyjson);
        free(vt->s[j].rowtext);
    }
    free(vt->src_q);
    free(vt->tgt_q);
    for (int i = 0; i < vt->nsamples; i++)
        free(vt->samples[i].key);
    strv_free(vt->keys, vt->nkeys);
    strv_free(vt->resume_lo, vt->resume_lo ? vt->nk : 0);
    if (vt->own) {
        catalog_relinfo_free(&vt->own->src);
        catalog_relinfo_free(&vt->own->tgt);
        strlist_free(&vt->own->match);
        strlist_free(&vt->own->cols);
        colmap_free(&vt->own->map);
        free(vt->own);
    }
}

static void add_sample(vtable *vt, const char *kind, const char *key)
{
    /* --repair rewrites every differing row: keep every key (bounded). */
    if (vt->keep_keys && vt->nkeys < VERIFY_REPAIR_MAX) {
        if (vt->nkeys == vt->capkeys) {
            int cap = vt->capkeys ? vt->capkeys * 2 : 64;
            char **k = realloc(vt->keys, sizeof *k * (size_t)cap);
            if (k) {
                vt->keys = k;
                vt->capkeys = cap;
            }
        }
        if (vt->nkeys < vt->capkeys && (vt->keys[vt->nkeys] = strdup(key)) != NULL)
            vt->nkeys++;
    }
    if (vt->nsamples < VERIFY_MAX_SAMPLES) {
        vt->samples[vt->nsamples].kind = kind;
        vt->samples[vt->nsamples].key = strdup(key);
        if (vt->samples[vt->nsamples].key)
            vt->nsamples++;
    }
}

/* ---- streaming two ordered results and merging them ---- */

typedef struct cursor {
    PGconn *c;
    PGresult *row; /* the current row, or NULL at the end */
    bool failed;
} cursor;

static bool cursor_open(cursor *cu, PGconn *c, const char *sql, int n, const char *const *p)
{
    cu->c = c;
    cu->row = NULL;
    cu->failed = false;
    if (!PQsendQueryParams(c, sql, n, NULL, p, NULL, NULL, 0) || !PQsetSingleRowMode(c)) {
        log_error("verify: %s", PQerrorMessage(c));
        cu->failed = true;
        return false;
    }
    return true;
}

/* Moves to the next row; false at the end (or on an error: cu->failed). */
static bool cursor_next(cursor *cu)
{
    PQclear(cu->row);
    cu->row = NULL;
    if (cu->failed)
        return false;
    PGresult *r;
    while ((r = PQgetResult(cu->c)) != NULL) {
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_SINGLE_TUPLE) {
            cu->row = r;
            return true;
        }
        if (st != PGRES_TUPLES_OK) {
            char line[1024];
            log_error("verify: reading rows: %s", pg_result_error_line(r, line, sizeof line));
            cu->failed = true;
        }
        PQclear(r);
    }
    return false;
}

static void cursor_close(cursor *cu)
{
    PQclear(cu->row);
    cu->row = NULL;
    PGresult *r;
    while ((r = PQgetResult(cu->c)) != NULL)
        PQclear(r);
}

/* Merges (k, v) rows of the source and the target, both in byte order of
 * k. Keyed (multiset false): k only in the source is missing, only in the
 * target extra, in both with another v different. Multiset: v is a count,
 * and the difference of counts is missing or extra. */
static bool merge(vtable *vt, cursor *s, cursor *t, bool multiset)
{
    bool hs = cursor_next(s), ht = cursor_next(t);
    while ((hs || ht) && !s->failed && !t->failed) {
        int cmp = !hs ? 1 : !ht ? -1 : strcmp(PQgetvalue(s->row, 0, 0), PQgetvalue(t->row, 0, 0));
        if (cmp < 0) {
            long long n = multiset ? atoll(PQgetvalue(s->row, 0, 1)) : 1;
            vt->missing += n;
            add_sample(vt, "missing", PQgetvalue(s->row, 0, 0));
            hs = cursor_next(s);
        } else if (cmp > 0) {
            long long n = multiset ? atoll(PQgetvalue(t->row, 0, 1)) : 1;
            vt->extra += n;
            add_sample(vt, "extra", PQgetvalue(t->row, 0, 0));
            ht = cursor_next(t);
        } else {
            const char *a = PQgetvalue(s->row, 0, 1), *b = PQgetvalue(t->row, 0, 1);
            if (strcmp(a, b) != 0) {
                if (!multiset) {
                    vt->different++;
                    add_sample(vt, "different", PQgetvalue(s->row, 0, 0));
                } else if (atoll(a) > atoll(b)) {
                    vt->missing += atoll(a) - atoll(b);
                    add_sample(vt, "missing", PQgetvalue(s->row, 0, 0));
                } else {
                    vt->extra += atoll(b) - atoll(a);
                    add_sample(vt, "extra", PQgetvalue(s->row, 0, 0));
                }
            }
            hs = cursor_next(s);
            ht = cursor_next(t);
        }
    }
    bool ok = !s->failed && !t->failed;
    cursor_close(s);
    cursor_close(t);
    return ok;
}

/* Runs the two ordered queries (source, target) and merges them; a query
 * that could not be sent leaves nothing in flight on the other side. */
static bool merge_queries(verifier *v, vtable *vt, const char *qs, const char *qt, int n,
                          const char *const *p, bool multiset)
{
    cursor s, t;
    if (!cursor_open(&s, v->src, qs, n, p)) {
        cursor_close(&s);
        return false;
    }
    if (!cursor_open(&t, v->tgt, qt, n, p)) {
        cursor_close(&s);
        cursor_close(&t);
        return false;
    }
    return merge(vt, &s, &t, multiset);
}

/* ---- one table ---- */

static char **dup_key(const PGresult *res, int col, int nk)
{
    char **k = calloc((size_t)nk, sizeof(char *));
    for (int i = 0; k && i < nk; i++)
        if ((k[i] = strdup(PQgetvalue(res, 0, col + i))) == NULL) {
            strv_free(k, i);
            return NULL;
        }
    return k;
}

static void progress(const verifier *v, const vtable *vt)
{
    if (!v->o->progress)
        return;
    long long est = vt->t->src.rows_est;
    if (est > 0 && vt->rows_src <= est)
        fprintf(stderr, "\rverify %s: %lld of ~%lld rows (%.0f%%)   ", vt->display, vt->rows_src,
                est, 100.0 * (double)vt->rows_src / (double)est);
    else
        fprintf(stderr, "\rverify %s: %lld rows   ", vt->display, vt->rows_src);
}

/* Names the rows of one differing range (keys and hashes of both sides,
 * merged), in the snapshots the range was found in. */
static bool narrow_range(verifier *v, vtable *vt, const vrange *r)
{
    char *qs = sql_rows(vt, &vt->s[VS_SRC], r), *qt = sql_rows(vt, &vt->s[VS_TGT], r);
    const char **p = range_params(vt, r);
    bool ok = qs && qt && p && merge_queries(v, vt, qs, qt, range_nparams(vt, r), p, false);
    free(qs);
    free(qt);
    free(p);
    return ok;
}

/* The one result of the query in flight on `c`. */
static PGresult *get_tuples(PGconn *c, const char *what)
{
    PGresult *res = PQgetResult(c), *extra;
    while ((extra = PQgetResult(c)) != NULL)
        PQclear(extra);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        char line[1024];
        log_error("verify: %s: %s", what, pg_result_error_line(res, line, sizeof line));
        PQclear(res);
        return NULL;
    }
    return res;
}

static bool send_sql(PGconn *c, const char *sql, int n, const char *const *p)
{
    if (PQsendQueryParams(c, sql, n, NULL, p, NULL, NULL, 0))
        return true;
    log_error("verify: %s", PQerrorMessage(c));
    return false;
}

/* Whether the live run is paused (`pgshift pause`), asked at most once a
 * second; no run: not paused. */
static bool run_paused(verifier *v)
{
    double now = pgs_now_ms();
    if (now - v->paused_asked_ms < 1000)
        return v->paused;
    v->paused_asked_ms = now;
    char *path = control_socket_path(v->m->plan->state_dir, v->m->plan->name);
    Pgshift__ControlRequest req = PGSHIFT__CONTROL_REQUEST__INIT;
    req.command = PGSHIFT__COMMAND__COMMAND_STATUS;
    Pgshift__ControlReply *r = NULL;
    char err[256];
    v->paused = path && control_request(path, &req, &r, 5000, err, sizeof err) == 0 && r->status &&
                r->status->paused;
    if (r)
        pgshift__control_reply__free_unpacked(r, NULL);
    free(path);
    return v->paused;
}

/* Between two ranges of walk: verify.max_rate (rows per second read on
 * each side) and `pgshift pause`, which holds the verify as it holds the
 * run (the snapshots are then replaced once it resumes, being old). */
static void gentle(verifier *v, const vtable *vt)
{
    int rate = v->m->plan->verify.max_rate;
    if (rate > 0) {
        double due = v->rows_done_ms0 + 1000.0 * (double)(v->rows_read + vt->rows_src) / rate;
        double wait = due - pgs_now_ms();
        if (wait > 0)
            usleep((useconds_t)(wait * 1000));
    }
    if (v->m->has_state && !v->after_cutover && run_paused(v)) {
        /* The snapshots are not held meanwhile (a pause can last days, and
         * they would hold back vacuum): walk takes a fresh point after. */
        log_info("verify: the run is paused; the verify waits for `pgshift resume`");
        end_snapshots(v);
        while (run_paused(v))
            usleep(200000);
        v->renew_now = true; /* before the next range */
        log_info("verify: the run resumed; the verify goes on");
    }
}

/* walk: key ranges of verify.chunk_rows in key order; the target sums one
 * range while the source reads the next; a range that differs is narrowed
 * at once, and after verify.max_snapshot_age both snapshots are replaced
 * by a fresh point before the next range. */
static bool walk_keyed(verifier *v, vtable *vt)
{
    char *q_first = sql_src_chunk(vt, false), *q_next = sql_src_chunk(vt, true);
    char **lo = vt->resume_lo; /* an interrupted verify's last range */
    vt->resume_lo = NULL;
    bool ok = false;
    PGresult *pending = NULL;
    if (vt->src_sorts)
        log_info("verify: %s: a key column changes to a type that orders otherwise (columns:), so "
                 "the source sorts its rows for each range of walk (scan does not)",
                 vt->display);
    if (!q_first || !q_next ||
        !(lo ? send_sql(v->src, q_next, vt->nk, (const char *const *)lo)
             : send_sql(v->src, q_first, 0, NULL)))
        goto out;
    for (;;) {
        PGresult *sres = pending ? pending : get_tuples(v->src, "reading the source");
        pending = NULL;
        if (sres == NULL || PQntuples(sres) != 1) {
            PQclear(sres);
            goto out;
        }
        long long n = atoll(PQgetvalue(sres, 0, 0));
        char sx[32];
        snprintf(sx, sizeof sx, "%s", PQgetvalue(sres, 0, 1));
        bool last = n < vt->chunk_rows;
        char **hi = last ? NULL : dup_key(sres, 2, vt->nk);
        PQclear(sres);
        if (!last && hi == NULL)
            goto out;
        /* The source reads the next range while the target sums this one. */
        bool sent = !last && send_sql(v->src, q_next, vt->nk, (const char *const *)hi);
        if (!last && !sent) {
            strv_free(hi, vt->nk);
            goto out;
        }
        vrange r = {lo, hi};
        char *tq = sql_tgt_chunk(vt, &r);
        const char **p = range_params(vt, &r);
        PGresult *tres =
            tq && p ? pg_query(v->tgt, "verify: reading the target", tq, range_nparams(vt, &r), p)
                    : NULL;
        free(tq);
        free(p);
        if (sent)
            pending = get_tuples(v->src, "reading the source");
        if (tres == NULL || (sent && pending == NULL)) {
            PQclear(tres);
            strv_free(hi, vt->nk);
            goto out;
        }
        long long tn = atoll(PQgetvalue(tres, 0, 0));
        bool same = tn == n && strcmp(PQgetvalue(tres, 0, 1), sx) == 0;
        PQclear(tres);
        vt->rows_src += n;
        vt->rows_tgt += tn;
        vt->chunks++;
        if (!same && !narrow_range(v, vt, &r)) {
            strv_free(hi, vt->nk);
            goto out;
        }
        progress(v, vt);
        strv_free(lo, lo ? vt->nk : 0);
        lo = hi;
        if (last)
            break;
        save_progress(v, vt, lo);
        gentle(v, vt);
        if (v->renew_now || pgs_now_ms() - v->snap_ms > v->m->plan->verify.max_snapshot_age_ms) {
            /* The next range was read in the old snapshot: read it again. */
            PQclear(pending);
            pending = NULL;
            if (!renew_point(v) || !send_sql(v->src, q_next, vt->nk, (const char *const *)lo))
                goto out;
        }
    }
    ok = true;
out:
    PQclear(pending);
    strv_free(lo, lo ? vt->nk : 0);
    free(q_first);
    free(q_next);
    return ok;
}

/* The bucket of a row on one side, from its key's hash, the same on both
 * sides. */
static char *bucket_expr(const vtable *vt, const vside *s, int nb)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (f == NULL)
        return NULL;
    /* The key's own hash (int4 and int8 hash alike, as for hash joins);
     * keys of types that hash differently on the two sides only make
     * every bucket differ, and the narrowing pass then compares all rows.
     * A mapped table's source hashes its key as the target has it. */
    fputs("((hash_record_extended(ROW(", f);
    for (int i = 0; i < vt->nk; i++)
        fprintf(f, "%s%s", i ? ", " : "", s->kval[i]);
    fprintf(f, "), 1) & 2147483647) %% %d)::int", nb);
    return close_sql(f, &buf);
}

/* One side's buckets: count and XOR of row hashes per bucket number. */
typedef struct buckets {
    long long *n;
    long long *x;
} buckets;

static bool buckets_read(buckets *b, const PGresult *r, int nb)
{
    b->n = calloc((size_t)nb, sizeof *b->n);
    b->x = calloc((size_t)nb, sizeof *b->x);
    if (!b->n || !b->x)
        return false;
    for (int i = 0; i < PQntuples(r); i++) {
        int k = atoi(PQgetvalue(r, i, 0));
        if (k < 0 || k >= nb)
            return false;
        b->n[k] = atoll(PQgetvalue(r, i, 1));
        b->x[k] = strtoll(PQgetvalue(r, i, 2), NULL, 10);
    }
    return true;
}

/* The counts add up; the buckets that differ go into `df` as an int[]
 * literal. Returns how many differ. */
static int compare_buckets(vtable *vt, const buckets *a, const buckets *b, int nb, FILE *df)
{
    int nd = 0;
    fputc('{', df);
    for (int k = 0; k < nb; k++) {
        vt->rows_src += a->n[k];
        vt->rows_tgt += b->n[k];
        if (a->n[k] != b->n[k] || a->x[k] != b->x[k])
            fprintf(df, "%s%d", nd++ ? "," : "", k);
    }
    fputc('}', df);
    return nd;
}

/* While both passes run: the progress line, once a second, on a terminal. */
static void wait_passes(verifier *v, const vtable *vt)
{
    if (!v->o->progress)
        return;
    double t0 = pgs_now_ms();
    for (;;) {
        bool bs = PQisBusy(v->src), bt = PQisBusy(v->tgt);
        if (!bs && !bt)
            return;
        fprintf(stderr, "\rverify %s: one pass per side (~%lld rows): %s%s%.0f s   ", vt->display,
                (long long)vt->t->src.rows_est, bs ? "source " : "", bt ? "target " : "",
                (pgs_now_ms() - t0) / 1000.0);
        fd_set r;
        FD_ZERO(&r);
        int ns = PQsocket(v->src), nt = PQsocket(v->tgt);
        if (ns < 0 || nt < 0)
            return;
        if (bs)
            FD_SET(ns, &r);
        if (bt)
            FD_SET(nt, &r);
        struct timeval tv = {1, 0};
        if (select((ns > nt ? ns : nt) + 1, &r, NULL, NULL, &tv) < 0 ||
            (bs && FD_ISSET(ns, &r) && !PQconsumeInput(v->src)) ||
            (bt && FD_ISSET(nt, &r) && !PQconsumeInput(v->tgt)))
            return; /* get_tuples reports it */
    }
}

/* scan: one pass per side, both at once, each in its snapshot: per bucket
 * of the key's hash, the count and XOR of row hashes; the buckets that
 * differ are narrowed in one more pass per side. */
static bool scan_keyed(verifier *v, vtable *vt)
{
    long long est = vt->t->src.rows_est;
    int nb = est / 2000 < 16 ? 16 : est / 2000 > 100000 ? 100000 : (int)(est / 2000);
    const vside *S = &vt->s[VS_SRC], *T = &vt->s[VS_TGT];
    char *be = bucket_expr(vt, S, nb), *bt = bucket_expr(vt, T, nb);
    char *qs = NULL, *qt = NULL, *diff = NULL;
    size_t dlen = 0;
    /* Not sorted: the planner takes the bucket for a value of its own (one
     * group per row) and would sort every row; with enable_sort off it
     * hashes the few thousand groups, in parallel workers where it can. */
    const char *fmt = "SELECT %s AS b, count(*), bit_xor(%s)::text FROM %s GROUP BY 1";
    bool ok = be && bt && asprintf(&qs, fmt, be, S->hash, S->q) >= 0 &&
              asprintf(&qt, fmt, bt, T->hash, T->q) >= 0;
    PGresult *a = NULL, *b = NULL;
    ok = ok && pg_exec(v->src, "verify: planning the pass", "SET enable_sort = off") &&
         pg_exec(v->tgt, "verify: planning the pass", "SET enable_sort = off");
    if (ok && send_sql(v->src, qs, 0, NULL)) {
        bool sent = send_sql(v->tgt, qt, 0, NULL);
        if (sent)
            wait_passes(v, vt);
        if (sent)
            b = get_tuples(v->tgt, "reading the target");
        a = get_tuples(v->src, "reading the source");
    }
    free(qs);
    free(qt);
    qs = qt = NULL;
    buckets ba = {0}, bb = {0};
    FILE *df = a && b && buckets_read(&ba, a, nb) && buckets_read(&bb, b, nb)
                   ? open_memstream(&diff, &dlen)
                   : NULL;
    int nd = df ? compare_buckets(vt, &ba, &bb, nb, df) : 0;
    ok = df && fclose(df) == 0 && pg_exec(v->src, "verify", "RESET enable_sort") &&
         pg_exec(v->tgt, "verify", "RESET enable_sort");
    free(ba.n);
    free(ba.x);
    free(bb.n);
    free(bb.x);
    vt->chunks = nb;
    PQclear(a);
    PQclear(b);
    if (ok && nd > 0) {
        const char *rf = "SELECT k, h FROM (SELECT %s AS k, (%s)::text AS h FROM %s WHERE %s = "
                         "ANY($1::int[])) s ORDER BY k COLLATE \"C\"";
        ok = asprintf(&qs, rf, S->keyjson, S->hash, S->q, be) >= 0 &&
             asprintf(&qt, rf, T->keyjson, T->hash, T->q, bt) >= 0;
        const char *p[] = {diff};
        ok = ok && merge_queries(v, vt, qs, qt, 1, p, false);
    }
    free(qs);
    free(qt);
    free(diff);
    free(be);
    free(bt);
    return ok;
}

/* A table without a key: count and sum of hashes, then the multiset. */
static bool walk_keyless(verifier *v, vtable *vt)
{
    const char *q = "SELECT count(*), coalesce(sum((%s)::numeric), 0)::text FROM %s";
    const vside *S = &vt->s[VS_SRC], *T = &vt->s[VS_TGT];
    char *qs = NULL, *qt = NULL;
    bool ok = asprintf(&qs, q, S->hash, S->q) >= 0 && asprintf(&qt, q, T->hash, T->q) >= 0;
    PGresult *a = ok ? pg_query(v->src, "verify: reading the source", qs, 0, NULL) : NULL;
    PGresult *b = a ? pg_query(v->tgt, "verify: reading the target", qt, 0, NULL) : NULL;
    free(qs);
    free(qt);
    if (a == NULL || b == NULL) {
        PQclear(a);
        return false;
    }
    vt->rows_src = atoll(PQgetvalue(a, 0, 0));
    vt->rows_tgt = atoll(PQgetvalue(b, 0, 0));
    vt->chunks = 1;
    bool same =
        vt->rows_src == vt->rows_tgt && strcmp(PQgetvalue(a, 0, 1), PQgetvalue(b, 0, 1)) == 0;
    PQclear(a);
    PQclear(b);
    if (same)
        return true;
    const char *fmt =
        "SELECT r, count(*)::text FROM (SELECT json_build_object('row', %s)::text AS r"
        " FROM %s) s GROUP BY r ORDER BY r COLLATE \"C\"";
    ok = asprintf(&qs, fmt, S->rowtext, S->q) >= 0 && asprintf(&qt, fmt, T->rowtext, T->q) >= 0;
    ok = ok && merge_queries(v, vt, qs, qt, 0, NULL, true);
    free(qs);
    free(qt);
    return ok;
}

/* Forgets a pass's results (not what --repair did). */
static void reset_results(vtable *vt)
{
    for (int i = 0; i < vt->nsamples; i++)
        free(vt->samples[i].key);
    strv_free(vt->keys, vt->nkeys);
    vt->keys = NULL;
    vt->nkeys = vt->capkeys = vt->nsamples = 0;
    vt->rows_src = vt->rows_tgt = vt->missing = vt->extra = vt->different = vt->chunks = 0;
    vt->secs = 0;
    vt->finished = vt->restored = false;
}

/* scan unless told otherwise or the source's heap is too large to read
 * within verify.max_snapshot_age at VERIFY_SCAN_BYTES_PER_S. */
static bool use_scan(const verifier *v, const vtable *vt)
{
    const char *m = v->m->plan->verify.method;
    if (m && strcmp(m, "auto") != 0)
        return strcmp(m, "scan") == 0;
    /* A rate limit or `pgshift pause` can hold walk between two ranges,
     * not one pass. */
    if (v->m->plan->verify.max_rate > 0)
        return false;
    double secs = (double)vt->t->src.pages * 8192.0 / VERIFY_SCAN_BYTES_PER_S;
    return secs * 1000.0 <= v->m->plan->verify.max_snapshot_age_ms;
}

static bool verify_table(verifier *v, vtable *vt)
{
    double t0 = pgs_now_ms();
    if (vt->restored)
        return true;
    /* Prepared once (resume_progress may have done it); a failed one is
     * not tried again. */
    if (vt->s[VS_SRC].hash == NULL && (vt->kname != NULL || !vtable_prepare(v, vt)))
        return false;
    bool was_consistent = v->consistent;
    int incons0 = v->incons;
    vt->keep_keys = v->o->repair && vt->nk > 0;
    if (v->rows_done_ms0 == 0)
        v->rows_done_ms0 = t0;
    vt->method = vt->nk == 0 ? "multiset" : use_scan(v, vt) ? "scan" : "walk";
    if (vt->resume_lo && strcmp(vt->method, "walk") != 0) {
        strv_free(vt->resume_lo, vt->nk);
        vt->resume_lo = NULL;
        reset_results(vt);
    }
    bool ok = vt->nk == 0                       ? walk_keyless(v, vt)
              : strcmp(vt->method, "scan") == 0 ? scan_keyed(v, vt)
                                                : walk_keyed(v, vt);
    vt->secs += (pgs_now_ms() - t0) / 1000.0;
    v->rows_read += vt->rows_src;
    vt->finished = ok;
    vt->consistent = was_consistent && v->consistent && v->incons == incons0;
    snprintf(vt->lsn, sizeof vt->lsn, "%s", v->lsn);
    if (ok)
        save_progress(v, NULL, NULL);
    if (v->o->progress)
        fputs("\r\033[K", stderr);
    return ok;
}

/* ---- the consistent point ---- */

static int ask_json(verifier *v, int command, pgs_lsn lsn, const char *json, int timeout_ms,
                    pgs_lsn *out, char *msg, size_t msglen)
{
    char *path = control_socket_path(v->m->plan->state_dir, v->m->plan->name);
    if (path == NULL)
        return -2;
    Pgshift__ControlRequest req = PGSHIFT__CONTROL_REQUEST__INIT;
    req.command = (Pgshift__Command)command;
    req.lsn = lsn;
    req.verify_json = (char *)(json ? json : "");
    req.token = v->token;
    Pgshift__ControlReply *r = NULL;
    int rc = control_request(path, &req, &r, timeout_ms, msg, msglen);
    free(path);
    if (rc != 0)
        return rc;
    snprintf(msg, msglen, "%s", r->message);
    if (out)
        *out = r->lsn;
    rc = r->ok ? 0 : -3;
    pgshift__control_reply__free_unpacked(r, NULL);
    return rc;
}

static int ask(verifier *v, int command, pgs_lsn lsn, int timeout_ms, pgs_lsn *out, char *msg,
               size_t msglen)
{
    return ask_json(v, command, lsn, NULL, timeout_ms, out, msg, msglen);
}

static void release(verifier *v)
{
    char msg[256];
    ask(v, PGSHIFT__COMMAND__COMMAND_VERIFY_RELEASE, 0, 5000, NULL, msg, sizeof msg);
}

/* Begins a read-only REPEATABLE READ transaction on `c` in the exported
 * snapshot `name` (SET TRANSACTION SNAPSHOT comes before any query). */
static bool import_snapshot(PGconn *c, const char *name)
{
    char *q = NULL;
    char *lit = PQescapeLiteral(c, name, strlen(name));
    bool ok = lit && asprintf(&q, "SET TRANSACTION SNAPSHOT %s", lit) >= 0 &&
              pg_exec(c, "verify: beginning the snapshot",
                      "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY") &&
              pg_exec(c, "verify: importing the snapshot", q);
    PQfreemem(lit);
    free(q);
    return ok;
}

/* A temporary slot's exported snapshot, imported by the source session
 * (which begins its transaction); *lsn its consistent point. */
static bool source_snapshot_at_lsn(verifier *v, pgs_lsn *lsn)
{
    PGconn *rc = pg_connect(v->m->plan->source, "source (replication)", true);
    if (rc == NULL)
        return false;
    char slot[64], *sql = NULL;
    /* Numbered too: walk takes several a second, and the slot before, gone
     * with its session, may not have been dropped yet (seen on 14). */
    snprintf(slot, sizeof slot, "pgshift_verify_%d_%lld_%d", (int)getpid(), (long long)time(NULL),
             ++v->slots);
    int version = PQserverVersion(rc);
    bool ok = false;
    if (asprintf(&sql, "CREATE_REPLICATION_SLOT %s TEMPORARY LOGICAL pgoutput %s", slot,
                 version >= 150000 ? "(SNAPSHOT 'export')" : "EXPORT_SNAPSHOT") < 0) {
        PQfinish(rc);
        return false;
    }
    PGresult *res = PQexec(rc, sql);
    free(sql);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1 ||
        !decode_lsn_parse(PQgetvalue(res, 0, 1), lsn)) {
        char line[1024];
        log_error("verify: a temporary slot for the source snapshot: %s",
                  pg_result_error_line(res, line, sizeof line));
    } else {
        ok = import_snapshot(v->src, PQgetvalue(res, 0, 2));
    }
    PQclear(res);
    /* The imported snapshot outlives the slot, which goes with its session. */
    PQfinish(rc);
    return ok;
}

/* A message past the snapshot's LSN, flushed, so that an idle source still
 * brings the run to it. */
static bool emit_marker(verifier *v)
{
    PGconn *c = pg_connect(v->m->plan->source, "source", false);
    bool ok = c && pg_exec(c, "verify: emitting a marker past the snapshot",
                           "SELECT pg_logical_emit_message(false, 'pgshift_verify', '');"
                           " BEGIN; SET LOCAL synchronous_commit = on;"
                           " SELECT pg_logical_emit_message(true, 'pgshift_flush', ''); COMMIT");
    PQfinish(c);
    return ok;
}

static int consistent_point_ex(verifier *v, bool release_it);

static int consistent_point(verifier *v)
{
    return consistent_point_ex(v, true);
}

/* As consistent_point; with release false the run stays held at the LSN
 * (at most VHOLD_LEASE_MS) and no target snapshot is taken: --repair
 * writes the target there. */
static int consistent_point_ex(verifier *v, bool release_it)
{
    char msg[512];
    pgs_lsn held = 0, at = 0, l = 0;
    int rc = ask(v, PGSHIFT__COMMAND__COMMAND_VERIFY_HOLD, 0, 30000, &held, msg, sizeof msg);
    if (rc == -1)
        return -1; /* no run */
    if (rc != 0) {
        log_error("verify: the run did not hold: %s", msg);
        if (rc != -3)
            release(v); /* a hold that comes after all must not wait for its lease */
        return 1;
    }
    double t0 = pgs_now_ms();
    bool ok = source_snapshot_at_lsn(v, &l);
    double made = pgs_now_ms() - t0;
    if (ok && !emit_marker(v))
        ok = false;
    if (!ok) {
        release(v);
        return 1;
    }
    char ls[18];
    log_info("verify: source snapshot at %s (made in %.0f ms); the run applies up to it",
             decode_lsn_format(l, ls), made);
    /* The run applies what it is behind by first; the source snapshot is
     * held meanwhile, so not longer than verify.max_snapshot_age. */
    int wait_ms = v->m->plan->verify.max_snapshot_age_ms;
    rc = ask(v, PGSHIFT__COMMAND__COMMAND_VERIFY_AT, l, wait_ms < 60000 ? 60000 : wait_ms, &at, msg,
             sizeof msg);
    if (rc != 0) {
        log_error("verify: the run did not come to the snapshot's LSN: %s%s", msg,
                  rc == -2 ? " (it is too far behind: verify once `pgshift status` shows it "
                             "caught up)"
                           : "");
        release(v);
        return 1;
    }
    decode_lsn_format(l, v->lsn);
    if (!release_it)
        return 0;
    ok = pg_exec(v->tgt, "verify: beginning the target snapshot",
                 "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY") &&
         pg_exec(v->tgt, "verify: taking the target snapshot", "SELECT 1");
    release(v);
    if (!ok)
        return 1;
    decode_lsn_format(l, v->lsn);
    v->consistent = true;
    snprintf(v->note, sizeof v->note,
             "source and target read as of source LSN %s (the run held there for a moment)",
             v->lsn);
    return 0;
}

/* Source and target snapshots: at one LSN through the live run, else each
 * as it is (v->consistent says which). 0, or 1 on failure. Called again
 * for a fresh point (walk, verify.max_snapshot_age). */
static int begin_point(verifier *v)
{
    pgs_migration *m = v->m;
    int cp = -1;
    v->snap_ms = pgs_now_ms();
    v->snapshots++;
    v->consistent = false;
    if (m->has_state && !v->after_cutover)
        cp = consistent_point(v);
    if (cp > 0)
        return 1;
    if (cp == 0)
        return 0;
    /* No run to hold: each side as it is now. */
    if (v->after_cutover &&
        strcmp(m->plan->target ? m->plan->target : m->plan->source, m->plan->source) == 0) {
        /* One database: one snapshot for both tables. */
        char *snap = NULL;
        if (pg_exec(v->src, "verify: beginning the snapshot",
                    "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"))
            snap = pg_query_value(v->src, "verify: exporting the snapshot",
                                  "SELECT pg_export_snapshot()", 0, NULL, NULL);
        bool ok = snap && import_snapshot(v->tgt, snap);
        free(snap);
        if (!ok)
            return 1;
        v->consistent = true;
        snprintf(v->note, sizeof v->note,
                 "after the cutover: each live table compared with its <table>_old, in one "
                 "snapshot (writes since the cutover show as differences)");
    } else {
        /* Not at one LSN (one snapshot of one database, above, is: walk's
         * fresh points after the cutover leave a table consistent). */
        v->incons++;
        if (!pg_exec(v->src, "verify: beginning",
                     "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY") ||
            !pg_exec(v->tgt, "verify: beginning",
                     "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"))
            return 1;
        char al[18];
        snprintf(v->note, sizeof v->note,
                 m->has_state ? "no `pgshift run` is serving this migration, so source and "
                                "target are read as they are now, not at one LSN: the target "
                                "holds the changes up to %s, and a row changed since shows "
                                "as a difference; verify while `pgshift run` streams"
                              : "the migration has not started: source and target read as "
                                "they are now",
                 decode_lsn_format(m->applied_lsn, al));
    }
    char *cur = pg_query_value(v->src, "verify: the source's position",
                               "SELECT pg_current_wal_lsn()", 0, NULL, NULL);
    if (cur)
        snprintf(v->lsn, sizeof v->lsn, "%s", cur);
    free(cur);
    return 0;
}

/* Ends both snapshots and takes a fresh point. */
static bool end_snapshots(verifier *v)
{
    return (PQtransactionStatus(v->src) == PQTRANS_IDLE ||
            pg_exec(v->src, "verify: ending a snapshot", "COMMIT")) &&
           (PQtransactionStatus(v->tgt) == PQTRANS_IDLE ||
            pg_exec(v->tgt, "verify: ending a snapshot", "COMMIT"));
}

static bool renew_point(verifier *v)
{
    if (!end_snapshots(v))
        return false;
    if (v->renew_now)
        log_info("verify: taking a fresh point after the pause");
    else
        log_info("verify: snapshots held %.0f s (verify.max_snapshot_age); taking a fresh point",
                 (pgs_now_ms() - v->snap_ms) / 1000.0);
    v->renew_now = false;
    return begin_point(v) == 0;
}

/* ---- the report ---- */

/* One table's result (report, progress). */
static json_t *table_json(const verifier *v, const vtable *vt)
{
    json_t *samples = json_array();
    for (int j = 0; j < vt->nsamples; j++) {
        json_t *k = json_loads(vt->samples[j].key, 0, NULL);
        json_array_append_new(samples, json_pack("{s:s,s:o}", "kind", vt->samples[j].kind, "key",
                                                 k ? k : json_null()));
    }
    json_t *t = json_pack("{s:s,s:I,s:I,s:I,s:I,s:I,s:o,s:s,s:I,s:f}", "table", vt->display,
                          "rows_source", (json_int_t)vt->rows_src, "rows_target",
                          (json_int_t)vt->rows_tgt, "missing", (json_int_t)vt->missing, "extra",
                          (json_int_t)vt->extra, "different", (json_int_t)vt->different, "samples",
                          samples, "method", vt->method ? vt->method : "", "chunks",
                          (json_int_t)vt->chunks, "seconds", vt->secs);
    if (t && v->repaired_at)
        json_object_set_new(t, "repaired", json_integer(vt->repaired));
    if (t && vt->finished) {
        json_object_set_new(t, "lsn", json_string(vt->lsn));
        json_object_set_new(t, "consistent", json_boolean(vt->consistent));
    }
    return t;
}

static json_t *report_json(const verifier *v)
{
    json_t *tabs = json_array();
    bool all = v->consistent;
    for (int i = 0; i < v->ntabs; i++) {
        json_array_append_new(tabs, table_json(v, &v->tabs[i]));
        all = all && v->tabs[i].consistent;
    }
    return json_pack("{s:s?,s:b,s:b,s:s,s:i,s:b,s:o}", "lsn", v->lsn[0] ? v->lsn : NULL,
                     "consistent", all, "after_cutover", v->after_cutover, "note", v->note,
                     "snapshots", v->snapshots, "repaired", v->repaired_at, "tables", tabs);
}

/* ---- resuming an interrupted verify (migrations.verify_progress) ---- */

static char *selection(const verifier *v)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (f == NULL)
        return NULL;
    for (int i = 0; i < v->ntabs; i++)
        fprintf(f, "%s%s", i ? "," : "", v->tabs[i].display);
    return fclose(f) == 0 ? buf : NULL;
}

/* The tables compared so far, and the one under way with the last key
 * of its last range. Written after each range of walk and each table. */
static void save_progress(verifier *v, const vtable *cur, char **lo)
{
    if (v->st == NULL)
        return;
    json_t *done = json_array();
    for (int i = 0; i < v->ntabs; i++)
        if (v->tabs[i].finished)
            json_array_append_new(done, table_json(v, &v->tabs[i]));
    char *sel = selection(v);
    json_t *o = json_pack("{s:s,s:o}", "selection", sel ? sel : "", "done", done);
    free(sel);
    if (o && cur && lo) {
        json_t *k = json_array();
        for (int i = 0; i < cur->nk; i++)
            json_array_append_new(k, json_string(lo[i]));
        json_object_set_new(o, "current",
                            json_pack("{s:o,s:o}", "lo", k, "result", table_json(v, cur)));
    }
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    if (s && !store_verify_progress(v->st, v->m->plan->name, s)) {
        PQfinish(v->st); /* logged; the verify goes on without it */
        v->st = NULL;
    }
    free(s);
    json_decref(o);
}

static void restore_result(vtable *vt, const json_t *r)
{
    vt->rows_src = json_integer_value(json_object_get(r, "rows_source"));
    vt->rows_tgt = json_integer_value(json_object_get(r, "rows_target"));
    vt->missing = json_integer_value(json_object_get(r, "missing"));
    vt->extra = json_integer_value(json_object_get(r, "extra"));
    vt->different = json_integer_value(json_object_get(r, "different"));
    vt->chunks = json_integer_value(json_object_get(r, "chunks"));
    vt->secs = json_number_value(json_object_get(r, "seconds"));
    const char *lsn = json_string_value(json_object_get(r, "lsn"));
    snprintf(vt->lsn, sizeof vt->lsn, "%s", lsn ? lsn : "");
    vt->consistent = json_is_true(json_object_get(r, "consistent"));
    const char *m = json_string_value(json_object_get(r, "method"));
    vt->method = m == NULL                    ? NULL
                 : strcmp(m, "scan") == 0     ? "scan"
                 : strcmp(m, "multiset") == 0 ? "multiset"
                                              : "walk";
    size_t i;
    json_t *s;
    json_array_foreach(json_object_get(r, "samples"), i, s)
    {
        const char *kind = json_string_value(json_object_get(s, "kind"));
        char *key = json_dumps(json_object_get(s, "key"), JSON_COMPACT | JSON_ENCODE_ANY);
        if (kind && key)
            add_sample(vt,
                       strcmp(kind, "missing") == 0 ? "missing"
                       : strcmp(kind, "extra") == 0 ? "extra"
                                                    : "different",
                       key);
        free(key);
    }
}

static vtable *find_vtable(verifier *v, const char *display)
{
    for (int i = 0; display && i < v->ntabs; i++)
        if (strcmp(v->tabs[i].display, display) == 0)
            return &v->tabs[i];
    return NULL;
}

/* An interrupted verify of the same tables: what it compared is kept,
 * and walk goes on after its last range. */
static void resume_progress(verifier *v)
{
    char *text = store_read_verify_progress(v->st, v->m->plan->name);
    json_t *o = text && text[0] ? json_loads(text, 0, NULL) : NULL;
    char *sel = selection(v);
    const char *was = json_string_value(json_object_get(o, "selection"));
    if (o && sel && was && strcmp(was, sel) == 0) {
        size_t i;
        json_t *r;
        int ndone = 0;
        json_array_foreach(json_object_get(o, "done"), i, r)
        {
            vtable *vt = find_vtable(v, json_string_value(json_object_get(r, "table")));
            if (vt && !vt->restored) {
                restore_result(vt, r);
                vt->finished = vt->restored = true;
                ndone++;
            }
        }
        json_t *cur = json_object_get(o, "current");
        json_t *res = json_object_get(cur, "result");
        vtable *vt = find_vtable(v, json_string_value(json_object_get(res, "table")));
        json_t *lo = json_object_get(cur, "lo");
        if (vt && !vt->restored && vtable_prepare(v, vt) && json_array_size(lo) == (size_t)vt->nk &&
            (vt->resume_lo = calloc((size_t)vt->nk, sizeof(char *))) != NULL) {
            for (int k = 0; k < vt->nk; k++) {
                const char *s = json_string_value(json_array_get(lo, (size_t)k));
                vt->resume_lo[k] = strdup(s ? s : "");
            }
            restore_result(vt, res);
        }
        if (ndone || vt)
            log_info("verify: resuming the verify interrupted %s%s%s (%d table%s already compared)",
                     vt ? "in " : "", vt ? vt->display : "at a table's end",
                     vt ? " after its last range" : "", ndone, ndone == 1 ? "" : "s");
    }
    free(sel);
    json_decref(o);
    free(text);
}

static long long ndiff(const vtable *vt)
{
    return vt->missing + vt->extra + vt->different;
}

static void report_text(const verifier *v)
{
    if (v->repaired_at) {
        long long n = 0;
        for (int i = 0; i < v->ntabs; i++)
            n += v->tabs[i].repaired;
        printf("verify --repair: %lld rows rewritten from the source; verified again:\n", n);
    }
    printf("verify: %s\n", v->note);
    int bad = 0;
    for (int i = 0; i < v->ntabs; i++) {
        const vtable *vt = &v->tabs[i];
        printf("  %-32s rows %lld source, %lld target", vt->display, vt->rows_src, vt->rows_tgt);
        if (ndiff(vt) == 0) {
            printf("  identical (%.1f s)\n", vt->secs);
            continue;
        }
        bad++;
        printf("  %lld missing, %lld extra, %lld different\n", vt->missing, vt->extra,
               vt->different);
        for (int j = 0; j < vt->nsamples; j++)
            printf("      %-9s %s\n", vt->samples[j].kind, vt->samples[j].key);
        if (ndiff(vt) > vt->nsamples)
            printf("      ... and %lld more\n", ndiff(vt) - vt->nsamples);
    }
    if (bad)
        printf("verify: %d of %d table%s differ%s%s\n", bad, v->ntabs, v->ntabs == 1 ? "" : "s",
               bad == 1 ? "s" : "", v->consistent ? "" : " (not read at one LSN: see above)");
    else
        printf("verify: %d table%s identical\n", v->ntabs, v->ntabs == 1 ? "" : "s");
}

/* The result in the state (migrations.verify): `status` shows it, and
 * cutover.verify asks it. A failure to record is logged, not fatal. */
static void record(const verifier *v)
{
    char at[32];
    time_t now = time(NULL);
    struct tm tm;
    strftime(at, sizeof at, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&now, &tm));
    long long total = 0;
    bool all = true;
    json_t *tabs = json_object();
    for (int i = 0; i < v->ntabs; i++) {
        const vtable *vt = &v->tabs[i];
        total += ndiff(vt);
        all = all && vt->consistent;
        /* Each table as it was compared: one restored from an interrupted
         * verify keeps its own LSN and consistency. */
        json_object_set_new(tabs, vt->display,
                            json_pack("{s:s,s:s,s:b,s:b,s:I,s:I,s:I,s:I}", "at", at, "lsn", vt->lsn,
                                      "consistent", vt->consistent, "identical", ndiff(vt) == 0,
                                      "rows_source", (json_int_t)vt->rows_src, "missing",
                                      (json_int_t)vt->missing, "extra", (json_int_t)vt->extra,
                                      "different", (json_int_t)vt->different));
    }
    json_t *sum = json_pack("{s:s,s:s,s:b,s:b,s:I,s:b}", "at", at, "lsn", v->lsn, "consistent", all,
                            "identical", total == 0, "differences", (json_int_t)total,
                            "after_cutover", v->after_cutover);
    char *a = sum ? json_dumps(sum, JSON_COMPACT) : NULL;
    char *b = tabs ? json_dumps(tabs, JSON_COMPACT) : NULL;
    if (a && b && store_record_verify(v->m->tgt, v->m->plan->name, a, b))
        store_verify_progress(v->m->tgt, v->m->plan->name, NULL);
    /* A live run shows it in its status from now on. */
    char msg[256];
    if (a)
        ask_json((verifier *)v, PGSHIFT__COMMAND__COMMAND_VERIFY_DONE, 0, a, 5000, NULL, msg,
                 sizeof msg);
    free(a);
    free(b);
    json_decref(sum);
    json_decref(tabs);
}

/* ---- --repair ---- */

/* "a, b" of a list of names with a prefix ("t.a, t.b"), quoted; with
 * skip_key, the key columns (vt->kname) left out. */
static char *cols_with(PGconn *c, char *const *names, int n, const char *prefix, bool skip_key,
                       const vtable *vt)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (f == NULL)
        return NULL;
    int k = 0;
    for (int i = 0; i < n; i++) {
        bool key = false;
        for (int j = 0; skip_key && j < vt->nk; j++)
            key = key || strcmp(vt->kname[j], names[i]) == 0;
        if (key)
            continue;
        char *q = pg_ident(c, names[i]);
        fprintf(f, "%s%s%s", k++ ? ", " : "", prefix, q ? q : "\"?\"");
        free(q);
    }
    return fclose(f) == 0 ? buf : NULL;
}

/* The query for the source's rows of the keys in $1 (a JSON array of key
 * objects), as one JSON array of rows named and typed as the target's: a
 * mapped table's rows are its expressions over the source row, cast to
 * the target columns' types (what the copy writes), found by its source
 * key (the JSON key holds the target's names and values). */
static char *sql_repair_source(const vtable *vt, PGconn *c)
{
    const pgs_mtable *t = vt->mt;
    char *q = NULL;
    if (!t->map.mapped) {
        char *cols = cols_with(c, t->cols.v, t->cols.n, "", false, vt);
        char *kl = cols_with(c, vt->kname, vt->nk, "", false, vt);
        if (cols && kl &&
            asprintf(&q,
                     "SELECT coalesce(json_agg(row_to_json(s)), '[]')::text FROM (SELECT %s FROM %s"
                     " WHERE (%s) IN (SELECT %s FROM json_populate_recordset(NULL::%s, $1::json)))"
                     " s",
                     cols, vt->src_q, kl, kl, vt->src_q) < 0)
            q = NULL;
        free(cols);
        free(kl);
        return q;
    }
    char *row = mapped_row(t, true, c);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (f == NULL || row == NULL) {
        if (f)
            fclose(f);
        free(buf);
        free(row);
        return NULL;
    }
    fprintf(f,
            "SELECT coalesce(json_agg(row_to_json(s)), '[]')::text FROM (SELECT %s FROM %s"
            " WHERE (",
            row, vt->src_q);
    for (int i = 0; i < vt->nk; i++)
        fprintf(f, "%s%s", i ? ", " : "", vt->s[VS_SRC].kord[i]);
    fputs(") IN (SELECT ", f);
    for (int i = 0; i < vt->nk; i++)
        fprintf(f, "%sk.%s", i ? ", " : "", vt->s[VS_TGT].kval[i]);
    fputs(" FROM json_to_recordset($1::json) AS k(", f);
    for (int i = 0; i < vt->nk; i++) {
        const pgs_mcol *mc = &t->map.cols[t->map.key_col[i]];
        fprintf(f, "%s%s %s", i ? ", " : "", vt->s[VS_TGT].kval[i], full_type(t, mc));
    }
    fputs("))) s", f);
    free(row);
    return close_sql(f, &buf);
}

/* Makes the target's rows of `keys` (a JSON array of key objects) what
 * the source has as of the held LSN, whatever each one's difference was:
 * a key the source no longer has is deleted, one the target has is
 * updated (its key stays: no foreign-key action fires), one it lacks is
 * inserted. A mapped table's source rows are the mapped values. */
static bool repair_batch(verifier *v, vtable *vt, const char *keys)
{
    PGconn *c = v->src;
    const pgs_mtable *t = vt->mt;
    char *cols = cols_with(c, t->cols.v, t->cols.n, "", false, vt);
    char *kl = cols_with(c, vt->kname, vt->nk, "", false, vt);
    char *tk = cols_with(c, vt->kname, vt->nk, "t.", false, vt);
    char *sk = cols_with(c, vt->kname, vt->nk, "s.", false, vt);
    char *nk = cols_with(c, t->cols.v, t->cols.n, "", true, vt);
    char *snk = cols_with(c, t->cols.v, t->cols.n, "s.", true, vt);
    char *qs = sql_repair_source(vt, c), *qd = NULL, *qu = NULL, *qi = NULL;
    const char *T = vt->tgt_q;
    bool ok =
        cols && kl && tk && sk && nk && snk && qs &&
        asprintf(&qd,
                 "DELETE FROM %s t WHERE (%s) IN (SELECT %s FROM json_populate_recordset(NULL::%s,"
                 " $1::json)) AND (%s) NOT IN (SELECT %s FROM json_populate_recordset(NULL::%s,"
                 " $2::json))",
                 T, tk, kl, T, tk, kl, T) >= 0 &&
        (nk[0] == '\0' ||
         asprintf(&qu,
                  "UPDATE %s t SET (%s) = ROW(%s) FROM json_populate_recordset(NULL::%s, $1::json)"
                  " s WHERE (%s) = (%s)",
                  T, nk, snk, T, tk, sk) >= 0) &&
        asprintf(&qi,
                 "INSERT INTO %s (%s) OVERRIDING SYSTEM VALUE SELECT %s FROM"
                 " json_populate_recordset(NULL::%s, $1::json) s WHERE NOT EXISTS (SELECT 1 FROM"
                 " %s t WHERE (%s) = (%s))",
                 T, cols, cols, T, T, tk, sk) >= 0;
    char *rows = ok ? pg_query_value(v->src, "verify --repair: reading the source rows", qs, 1,
                                     (const char *[]){keys}, NULL)
                    : NULL;
    PGresult *d = rows ? pg_query(v->tgt, "verify --repair: deleting what the source no longer has",
                                  qd, 2, (const char *[]){keys, rows})
                       : NULL;
    PGresult *u = d && qu ? pg_query(v->tgt, "verify --repair: updating the target rows", qu, 1,
                                     (const char *[]){rows})
                          : NULL;
    PGresult *ins = d && (u || !qu) ? pg_query(v->tgt, "verify --repair: inserting missing rows",
                                               qi, 1, (const char *[]){rows})
                                    : NULL;
    ok = ins != NULL;
    if (ok)
        log_debug("verify --repair: %s rows deleted, %s updated, %s inserted", PQcmdTuples(d),
                  u ? PQcmdTuples(u) : "0", PQcmdTuples(ins));
    PQclear(d);
    PQclear(u);
    PQclear(ins);
    free(rows);
    free(qs);
    free(qd);
    free(qu);
    free(qi);
    free(cols);
    free(kl);
    free(tk);
    free(sk);
    free(nk);
    free(snk);
    return ok;
}

/* The run still holds at the LSN, for another lease (VHOLD_LEASE_MS). */
static bool renew(verifier *v)
{
    char msg[256];
    int rc = ask(v, PGSHIFT__COMMAND__COMMAND_VERIFY_RENEW, 0, 10000, NULL, msg, sizeof msg);
    if (rc != 0)
        log_error("verify --repair: the run no longer holds at %s (%s); nothing is rewritten",
                  v->lsn, rc == -3 ? msg : "no answer");
    return rc == 0;
}

static bool repair_table(verifier *v, vtable *vt)
{
    for (int i = 0; i < vt->nkeys; i += 500) {
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);
        if (f == NULL)
            return false;
        fputc('[', f);
        for (int j = i; j < vt->nkeys && j < i + 500; j++)
            fprintf(f, "%s%s", j > i ? "," : "", vt->keys[j]);
        fputc(']', f);
        bool ok = fclose(f) == 0 && renew(v) && repair_batch(v, vt, buf);
        free(buf);
        if (!ok)
            return false;
        vt->repaired += (i + 500 < vt->nkeys ? i + 500 : vt->nkeys) - i;
    }
    return true;
}

/* The run held at a fresh LSN, every differing row of every table
 * rewritten from the source as of that LSN in one target transaction, the
 * run released: the changes after it apply on top. */
static bool repair(verifier *v)
{
    for (int i = 0; i < v->ntabs; i++)
        if (v->tabs[i].nk == 0 && ndiff(&v->tabs[i]) > 0) {
            log_error("verify --repair: %s has no key, so its rows cannot be told apart to be "
                      "rewritten; abort and run the migration again for a new copy",
                      v->tabs[i].display);
            return false;
        } else if (v->tabs[i].nkeys < ndiff(&v->tabs[i])) {
            log_error("verify --repair: %s has %lld differing rows, more than %d to rewrite one "
                      "by one; abort and run the migration again for a new copy",
                      v->tabs[i].display, ndiff(&v->tabs[i]), VERIFY_REPAIR_MAX);
            return false;
        }
    if (consistent_point_ex(v, false) != 0)
        return false;
    /* Locks: a session holding target rows would hold the run with it. */
    bool ok =
        pg_exec(v->tgt, "verify --repair: beginning", "BEGIN; SET LOCAL lock_timeout = '10s'");
    for (int i = 0; ok && i < v->ntabs; i++)
        ok = repair_table(v, &v->tabs[i]);
    /* Nothing commits unless the run still holds (it applies nothing
     * until the release after this COMMIT). */
    ok = ok && renew(v) && pg_exec(v->tgt, "verify --repair: committing", "COMMIT");
    if (!ok && PQtransactionStatus(v->tgt) != PQTRANS_IDLE)
        pg_exec(v->tgt, "verify --repair: rolling back", "ROLLBACK");
    pg_exec(v->src, "verify --repair: ending the source snapshot", "COMMIT");
    release(v);
    for (int i = 0; ok && i < v->ntabs; i++)
        if (v->tabs[i].repaired)
            log_info("verify --repair: %s: %lld rows rewritten from the source as of %s",
                     v->tabs[i].display, v->tabs[i].repaired, v->lsn);
    return ok;
}

/* Every table compared, from a fresh point. */
static bool compare_all(verifier *v)
{
    if (begin_point(v) != 0)
        return false;
    for (int i = 0; i < v->ntabs; i++)
        if (!verify_table(v, &v->tabs[i]))
            return false;
    pg_exec(v->src, "verify: ending", "COMMIT");
    pg_exec(v->tgt, "verify: ending", "COMMIT");
    return true;
}

/* ---- the command ---- */

static bool wanted(const verify_opts *o, const pgs_mtable *t)
{
    if (o->table == NULL)
        return true;
    char q[300];
    snprintf(q, sizeof q, "%s.%s", t->src.nspname, t->src.relname);
    return strcmp(o->table, q) == 0 || strcmp(o->table, t->src.relname) == 0 ||
           strcmp(o->table, t->spec->source) == 0;
}

static bool set_sides(verifier *v, vtable *vt)
{
    const pgs_mtable *t = vt->t;
    snprintf(vt->display, sizeof vt->display, "%s.%s", t->src.nspname, t->src.relname);
    if (v->after_cutover || v->window) {
        char old[200];
        snprintf(old, sizeof old, "%s_old", t->src.relname);
        char *live = strdup(t->src.qname); /* the new table, under the source's name */
        char *q = pg_qualified(v->src, t->src.nspname, old);
        vt->tgt_q = v->window ? q : live;
        vt->src_q = v->window ? live : q;
    } else {
        vt->src_q = strdup(t->src.qname);
        vt->tgt_q = strdup(t->tgt.qname);
    }
    return vt->src_q && vt->tgt_q;
}

/* What the two sides of a table are. Before the cutover: the plan's table
 * as migration_open resolved it, its mapping (colmap.h) included. After
 * the cutover and during the rollback window the plan's names resolve to
 * the live table alone (the target's name is gone), so the mapping
 * between the two tables compared is resolved here: from <t>_old to the
 * live table through the plan's columns: after the cutover (where, as
 * for any table, the rows written since show as differences); during the
 * window from the live table to <t>_old through what the reverse stream
 * applies, which for a table with columns: is refused: reverse: need not
 * give back what columns: took (a constant, a coalesced or dropped
 * value), so rows the window never touched would differ. A table that
 * maps nothing is compared as before. */
static bool resolve_sides(verifier *v, vtable *vt)
{
    const pgs_mtable *t = vt->t;
    vt->mt = t;
    if (!v->after_cutover && !v->window) {
        if (t->map.error) {
            log_error("verify: %s: the column mapping cannot be used: %s", vt->display,
                      t->map.error);
            return false;
        }
        return true;
    }
    if (v->window && t->spec->columns.n > 0) {
        log_error("verify: %s has a column mapping (columns:): during the rollback window the "
                  "live table can only be compared with %s through reverse:, which need not give "
                  "back what columns: took, so verify is not available for it until the window "
                  "ends (then the live table is compared with %s through columns:); verify "
                  "the other tables with --table",
                  vt->display, vt->tgt_q, vt->tgt_q);
        return false;
    }
    pgs_mtable *o = calloc(1, sizeof *o);
    if (o == NULL)
        return false;
    vt->own = o;
    vt->rspec = *t->spec;
    if (v->window)
        vt->rspec.columns = t->spec->reverse;
    o->spec = &vt->rspec;
    o->ord = t->ord;
    if (!catalog_read_rel(v->src, vt->src_q, &o->src) ||
        !catalog_read_rel(v->tgt, vt->tgt_q, &o->tgt))
        return false;
    const pgs_strlist *key = (o->src.replident == 'i' && o->src.ri.n) ? &o->src.ri
                             : o->src.pk.n                            ? &o->src.pk
                                                                      : NULL;
    bool ok = true;
    for (int i = 0; ok && key && i < key->n; i++)
        ok = strlist_push(&o->match, key->v[i]);
    for (char **k = t->spec->key; ok && !key && !v->window && k && *k; k++)
        ok = strlist_push(&o->match, *k);
    for (int i = 0; ok && i < o->src.ncols; i++)
        if (o->src.cols[i].generated == 0)
            ok = strlist_push(&o->cols, o->src.cols[i].name);
    if (!ok || !colmap_resolve(v->src, v->tgt, o))
        return false;
    if (o->map.error) {
        log_error("verify: %s: the column mapping between %s and %s cannot be used: %s",
                  vt->display, vt->src_q, vt->tgt_q, o->map.error);
        return false;
    }
    if (o->map.mapped)
        vt->mt = o;
    return true;
}

/* Both sessions print values alike (SESSION_SETTINGS). A mapped table's
 * expressions run in the verifier's source session, and some convert by
 * the session's settings (text to timestamptz or date, timestamp to
 * timestamptz): with a mapped table both sessions keep the source
 * session's TimeZone, DateStyle and IntervalStyle, the ones the copy's
 * sessions had, rather than UTC and ISO, YMD. */
static bool configure_sessions(verifier *v)
{
    bool mapped = false;
    for (int i = 0; i < v->ntabs; i++)
        mapped = mapped || v->tabs[i].mt->map.mapped;
    /* The target takes the source session's own settings first, and gives
     * them back to the source once that has the rest of SESSION_SETTINGS. */
    return pg_exec(v->tgt, "verify: configuring the target session", SESSION_SETTINGS) &&
           (!mapped ||
            pg_take_settings(v->src, v->tgt, "verify: configuring the target session")) &&
           pg_exec(v->src, "verify: configuring the source session", SESSION_SETTINGS) &&
           (!mapped || pg_take_settings(v->tgt, v->src, "verify: configuring the source session"));
}

/* --repair after a compare that found differences: rewrite them while
 * the live run holds, then compare everything again. */
static bool repair_and_compare(verifier *v)
{
    long long found = 0;
    for (int i = 0; i < v->ntabs; i++)
        found += ndiff(&v->tabs[i]);
    if (found == 0)
        return true;
    if (!v->consistent || v->after_cutover || !v->m->has_state) {
        report_text(v);
        log_error("verify --repair: rows are rewritten while the live `pgshift run` holds at "
                  "one LSN, so that the changes after it apply on top; %s",
                  v->after_cutover ? "after the cutover the live table is the truth"
                                   : "start `pgshift run` and verify again");
        return false;
    }
    if (!v->o->json)
        report_text(v);
    if (!repair(v))
        return false;
    v->repaired_at = true;
    for (int i = 0; i < v->ntabs; i++)
        reset_results(&v->tabs[i]);
    return compare_all(v);
}

int verify_main(pgs_migration *m, const verify_opts *o)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    verifier v = {.m = m,
                  .o = o,
                  .src = m->src,
                  .tgt = m->tgt,
                  .token = ((uint64_t)getpid() << 40) ^ ((uint64_t)ts.tv_sec << 20) ^
                           (uint64_t)ts.tv_nsec};
    if (!state_load(m))
        return PGS_EXIT_FAILURE;
    if (m->has_state && m->phase == PGS_PHASE_COPYING) {
        log_error("verify: migration %s is copying; verify once it streams (`pgshift status`)",
                  m->plan->name);
        return PGS_EXIT_FAILURE;
    }
    v.after_cutover = m->has_state && m->phase == PGS_PHASE_DONE;
    v.window = m->has_state && m->phase == PGS_PHASE_REVERSIBLE;
    if (v.window && o->repair) {
        log_error("verify --repair: during the rollback window the live table is the truth and "
                  "the reverse stream keeps <table>_old; verify without --repair names what "
                  "differs");
        return PGS_EXIT_USAGE;
    }
    v.tabs = calloc((size_t)m->ntables, sizeof *v.tabs);
    if (v.tabs == NULL)
        return PGS_EXIT_FAILURE;
    for (int i = 0; i < m->ntables; i++)
        if (wanted(o, &m->tables[i]))
            v.tabs[v.ntabs++].t = &m->tables[i];
    int rc = PGS_EXIT_FAILURE;
    if (v.ntabs == 0) {
        log_error("verify: the plan has no table %s", o->table);
        rc = PGS_EXIT_USAGE;
        goto out;
    }
    for (int i = 0; i < v.ntabs; i++)
        if (!set_sides(&v, &v.tabs[i]))
            goto out;
    if (!v.after_cutover && !v.window)
        for (int i = 0; i < v.ntabs; i++)
            if (!v.tabs[i].t->tgt.exists) {
                log_error("verify: the target of %s does not exist yet", v.tabs[i].display);
                goto out;
            }
    for (int i = 0; i < v.ntabs; i++)
        if (!resolve_sides(&v, &v.tabs[i]))
            goto out;
    if (!configure_sessions(&v))
        goto out;
    /* Progress for a verify interrupted later (not --repair: it compares
     * everything twice). */
    if (m->has_state && !v.after_cutover && !o->repair &&
        (v.st = pg_connect(m->plan->target ? m->plan->target : m->plan->source, "target (state)",
                           false)) != NULL)
        resume_progress(&v);
    if (!compare_all(&v))
        goto out;
    if (o->repair && !repair_and_compare(&v))
        goto out;
    if (m->has_state)
        record(&v);
    if (o->json) {
        json_t *j = report_json(&v);
        char *s = j ? json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
        if (s)
            printf("%s\n", s);
        free(s);
        json_decref(j);
    } else
        report_text(&v);
    rc = PGS_EXIT_OK;
    for (int i = 0; i < v.ntabs; i++)
        if (ndiff(&v.tabs[i]) > 0)
            rc = PGS_EXIT_DIFFERENT;
out:
    PQfinish(v.st);
    for (int i = 0; i < v.ntabs; i++)
        vtable_free(&v.tabs[i]);
    free(v.tabs);
    return rc;
}
