/* Captures pgoutput messages from a real PostgreSQL server (any of 14 to 18)
 * and checks that the decoder reads them exactly as the server meant them.
 *
 * Each test makes its own slot, runs a workload, then reads the messages
 * back with pg_logical_slot_peek_binary_changes() (in text and binary mode,
 * proto_version 1 to 3; 14's pgoutput stops at 2, and has no two_phase
 * option, so there the proto_version 3 reads and two_phase are skipped) and
 * walks them in order with expect(). One test
 * streams through START_REPLICATION instead, to see real CopyData frames
 * and to check that a standby status update moves confirmed_flush_lsn.
 *
 * Every captured message is written as one file into $PGSHIFT_VECTORS_DIR
 * (when set): the fuzzer's seed corpus. File names carry the protocol
 * version (pvN) and "-s-" for messages from inside a stream block.
 * PGSHIFT_CAPTURE_DEBUG=1 prints every message in hex.
 */
#include "pgtest.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "pgshift/decode.h"

/* ---------------------------------------------------------------------
 * Capturing
 * --------------------------------------------------------------------- */

typedef struct cap_msg {
    pgs_lsn lsn;  /* the lsn column of the peek function */
    uint32_t xid; /* its xid column */
    uint8_t *data;
    size_t len;
} cap_msg;

typedef struct capture {
    int pv;
    cap_msg *msgs;
    size_t n;
} capture;

static void capture_free(capture *c)
{
    for (size_t i = 0; i < c->n; i++)
        free(c->msgs[i].data);
    free(c->msgs);
    free(c);
}

static void hexdump(const char *label, const uint8_t *p, size_t n)
{
    fprintf(stderr, "%s (%zu bytes): ", label, n);
    for (size_t i = 0; i < n && i < 400; i++)
        fprintf(stderr, "%02x", p[i]);
    fprintf(stderr, "%s\n", n > 400 ? "..." : "");
}

static const char *vectors_dir(void)
{
    const char *d = getenv("PGSHIFT_VECTORS_DIR");
    return d && *d ? d : NULL;
}

static void write_vector(const char *tag, int pv, bool in_stream, size_t seq, const cap_msg *m)
{
    const char *dir = vectors_dir();
    if (dir == NULL)
        return;
    char path[4096];
    /* Kinds differ only in case ('C' Commit, 'c' Stream Commit): hex. */
    snprintf(path, sizeof path, "%s/%s-pv%d%s-%04zu-%02x.bin", dir, tag, pv, in_stream ? "-s" : "",
             seq, m->len ? m->data[0] : 0);
    FILE *f = fopen(path, "wb");
    if (f == NULL)
        fail_msg("cannot write %s: %s", path, strerror(errno));
    assert_int_equal(fwrite(m->data, 1, m->len, f), m->len);
    assert_int_equal(fclose(f), 0);
}

/* Waits until all WAL written so far is flushed: the peek functions read
 * only up to the flush position, and the cluster runs with
 * synchronous_commit = off. */
static void wait_flushed(PGconn *conn)
{
    char *target = pgt_value(conn, "SELECT pg_current_wal_insert_lsn()::text");
    char sql[200];
    snprintf(sql, sizeof sql, "SELECT pg_current_wal_flush_lsn() >= '%s'::pg_lsn", target);
    free(target);
    for (int i = 0; i < 1000; i++) {
        char *v = pgt_value(conn, sql);
        bool done = strcmp(v, "t") == 0;
        free(v);
        if (done)
            return;
        usleep(10000);
    }
    fail_msg("WAL not flushed after 10 s");
}

/* Reads every message the slot has, without consuming them. `opts` adds
 * pgoutput options ("'binary', 'true'"). The messages are decoded once in
 * order here (any error fails the test) and written as vectors. */
static capture *peek(PGconn *conn, const char *slot, int pv, const char *opts, const char *tag)
{
    wait_flushed(conn);
    char sql[1024];
    snprintf(sql, sizeof sql,
             "SELECT lsn::text, xid::text, data FROM pg_logical_slot_peek_binary_changes('%s', "
             "NULL, NULL, 'proto_version', '%d', 'publication_names', 'p', 'messages', 'true'%s%s)",
             slot, pv, opts ? ", " : "", opts ? opts : "");
    PGresult *res = PQexecParams(conn, sql, 0, NULL, NULL, NULL, NULL, 1);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", PQerrorMessage(conn));
        PQclear(res);
        fail_msg("peek failed: %s\n  %s", sql, msg);
    }
    capture *c = calloc(1, sizeof *c);
    assert_non_null(c);
    c->pv = pv;
    c->n = (size_t)PQntuples(res);
    c->msgs = calloc(c->n ? c->n : 1, sizeof *c->msgs);
    assert_non_null(c->msgs);
    bool debug = getenv("PGSHIFT_CAPTURE_DEBUG") != NULL;
    decode_ctx ctx;
    decode_ctx_init(&ctx, pv);
    /* Large transactions repeat one shape thousands of times: the corpus
     * gets the first few of each kind, inside and outside stream blocks. */
    unsigned written[2][256] = {{0}};
    for (size_t i = 0; i < c->n; i++) {
        cap_msg *m = &c->msgs[i];
        char text[64];
        snprintf(text, sizeof text, "%.*s", PQgetlength(res, (int)i, 0),
                 PQgetvalue(res, (int)i, 0));
        assert_true(decode_lsn_parse(text, &m->lsn));
        snprintf(text, sizeof text, "%.*s", PQgetlength(res, (int)i, 1),
                 PQgetvalue(res, (int)i, 1));
        m->xid = (uint32_t)strtoul(text, NULL, 10);
        m->len = (size_t)PQgetlength(res, (int)i, 2);
        m->data = malloc(m->len ? m->len : 1);
        assert_non_null(m->data);
        memcpy(m->data, PQgetvalue(res, (int)i, 2), m->len);

        bool in_stream = ctx.in_stream;
        decode_msg dm;
        decode_error err;
        if (debug) {
            char label[128], lsn[18];
            snprintf(label, sizeof label, "%s pv%d #%zu lsn %s xid %u%s", tag, pv, i,
                     decode_lsn_format(m->lsn, lsn), m->xid, in_stream ? " (in stream)" : "");
            hexdump(label, m->data, m->len);
        }
        if (!decode_message(&ctx, m->data, m->len, &dm, &err)) {
            hexdump("undecodable message", m->data, m->len);
            fail_msg("%s: message %zu: %s (offset %zu)", tag, i, err.msg, err.offset);
        }
        if (written[in_stream][m->data[0]]++ < 8)
            write_vector(tag, pv, in_stream, i, m);
    }
    decode_ctx_free(&ctx);
    PQclear(res);
    return c;
}

/* Walks a capture in order, decoding each message on one context. */
typedef struct iter {
    capture *cap;
    size_t next;
    decode_ctx ctx;
    decode_msg m;
    const cap_msg *raw; /* the message last decoded */
} iter;

static void it_init(iter *it, capture *cap)
{
    memset(it, 0, sizeof *it);
    it->cap = cap;
    decode_ctx_init(&it->ctx, cap->pv);
}

static const decode_msg *next_msg(iter *it)
{
    if (it->next >= it->cap->n)
        fail_msg("expected another message after #%zu, capture has %zu", it->next, it->cap->n);
    it->raw = &it->cap->msgs[it->next++];
    decode_error err;
    if (!decode_message(&it->ctx, it->raw->data, it->raw->len, &it->m, &err))
        fail_msg("message #%zu: %s", it->next - 1, err.msg);
    return &it->m;
}

static const decode_msg *expect(iter *it, decode_kind kind)
{
    const decode_msg *m = next_msg(it);
    if (m->kind != kind) {
        hexdump("unexpected message", it->raw->data, it->raw->len);
        fail_msg("message #%zu: expected %s, got %s", it->next - 1, decode_kind_name(kind),
                 decode_kind_name(m->kind));
    }
    return m;
}

static void it_done(iter *it)
{
    if (it->next != it->cap->n)
        fail_msg("%zu unexpected messages after #%zu, first is '%c'", it->cap->n - it->next,
                 it->next, it->cap->msgs[it->next].data[0]);
    decode_ctx_free(&it->ctx);
}

/* A Begin ... Commit pair: the LSN relations every apply relies on. */
typedef struct txn {
    uint32_t xid;
    pgs_lsn final_lsn;
    pgs_timestamp commit_time;
} txn;

static txn expect_begin(iter *it)
{
    const decode_msg *m = expect(it, DECODE_BEGIN);
    assert_true(m->has_xid);
    assert_int_equal(m->xid, it->raw->xid);
    assert_true(m->u.begin.final_lsn != 0);
    /* The peek lsn of a Begin is the transaction's first record. */
    assert_true(it->raw->lsn <= m->u.begin.final_lsn);
    /* After 2020, before 2100. */
    assert_true(m->u.begin.commit_time > INT64_C(631152000000000));
    assert_true(m->u.begin.commit_time < INT64_C(3155760000000000));
    return (txn){m->xid, m->u.begin.final_lsn, m->u.begin.commit_time};
}

static void expect_commit(iter *it, const txn *t)
{
    const decode_msg *m = expect(it, DECODE_COMMIT);
    assert_false(m->has_xid);
    assert_int_equal(m->u.commit.flags, 0);
    assert_int_equal(m->u.commit.commit_lsn, t->final_lsn);
    assert_true(m->u.commit.end_lsn > m->u.commit.commit_lsn);
    assert_int_equal(m->u.commit.commit_time, t->commit_time);
    assert_int_equal(it->raw->lsn, m->u.commit.end_lsn);
    assert_int_equal(it->raw->xid, t->xid);
}

/* ---------------------------------------------------------------------
 * Column checks
 * --------------------------------------------------------------------- */

static void col_null(const decode_tuple *t, int i)
{
    assert_true(i < t->ncols);
    if (t->cols[i].kind != DECODE_COL_NULL)
        fail_msg("column %d: expected NULL, got kind '%c'", i, t->cols[i].kind);
    assert_int_equal(t->cols[i].len, 0);
}

static void col_unchanged(const decode_tuple *t, int i)
{
    assert_true(i < t->ncols);
    if (t->cols[i].kind != DECODE_COL_UNCHANGED)
        fail_msg("column %d: expected unchanged, got kind '%c'", i, t->cols[i].kind);
}

static void col_bytes(const decode_tuple *t, int i, decode_col_kind kind, const void *p, size_t n)
{
    assert_true(i < t->ncols);
    const decode_col *c = &t->cols[i];
    if (c->kind != kind)
        fail_msg("column %d: expected kind '%c', got '%c'", i, kind, c->kind);
    if (c->len != n || memcmp(c->data, p, n) != 0) {
        hexdump("expected", p, n);
        hexdump("got", c->data, c->len);
        fail_msg("column %d differs", i);
    }
}

static void col_text(const decode_tuple *t, int i, const char *s)
{
    col_bytes(t, i, DECODE_COL_TEXT, s, strlen(s));
}

static void col_int4(const decode_tuple *t, int i, uint32_t v)
{
    const uint8_t be[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    col_bytes(t, i, DECODE_COL_BINARY, be, 4);
}

/* An int column in the mode of the capture: text "n" or 4 bytes binary. */
static void col_int(const decode_tuple *t, int i, bool binary, uint32_t v)
{
    if (binary) {
        col_int4(t, i, v);
    } else {
        char s[16];
        snprintf(s, sizeof s, "%u", v);
        col_text(t, i, s);
    }
}

/* A text column: textsend is the raw text, so both modes carry the same bytes. */
static void col_str(const decode_tuple *t, int i, bool binary, const char *s)
{
    col_bytes(t, i, binary ? DECODE_COL_BINARY : DECODE_COL_TEXT, s, strlen(s));
}

static void expect_attr(const decode_relation *r, int i, const char *name, uint32_t type_oid,
                        int32_t typmod, uint8_t flags)
{
    assert_true(i < r->natts);
    assert_string_equal(r->attrs[i].name, name);
    assert_int_equal(r->attrs[i].type_oid, type_oid);
    assert_int_equal(r->attrs[i].typmod, typmod);
    if (r->attrs[i].flags != flags)
        fail_msg("%s.%s: flags %u, expected %u", r->relname, name, r->attrs[i].flags, flags);
}

static uint32_t oid_of(PGconn *conn, const char *regclass)
{
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT '%s'::regclass::oid", regclass);
    return (uint32_t)pgt_int(conn, sql);
}

static uint32_t type_oid_of(PGconn *conn, const char *regtype)
{
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT '%s'::regtype::oid", regtype);
    return (uint32_t)pgt_int(conn, sql);
}

static PGconn *connect_db(void)
{
    PGconn *conn = pgt_connect(NULL);
    pgt_exec(conn, "SET TimeZone = 'UTC'; SET client_min_messages = warning");
    return conn;
}

/* The highest proto_version the server's pgoutput accepts: 2 on 14, 3 on
 * 15, 4 on 16 and later. */
static int server_max_pv(PGconn *conn)
{
    int v = PQserverVersion(conn);
    return v >= 160000 ? 4 : v >= 150000 ? 3 : 2;
}

static void create_slot(PGconn *conn, const char *slot, bool two_phase)
{
    pgt_execf(conn, "SELECT pg_create_logical_replication_slot('%s', 'pgoutput', false, %s)", slot,
              two_phase ? "true" : "false");
}

static void drop_slot(PGconn *conn, const char *slot)
{
    pgt_execf(conn, "SELECT pg_drop_replication_slot('%s')", slot);
    char sql[200];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '%s'",
             slot);
    assert_int_equal(pgt_int(conn, sql), 0);
}

/* The four ways the tests read a slot. */
static const struct mode {
    int pv;
    bool binary;
    const char *opts;
    const char *tag;
} MODES[] = {
    {1, false, NULL, "text"},
    {1, true, "'binary', 'true'", "bin"},
    {2, true, "'binary', 'true'", "bin"},
    {3, false, NULL, "text"},
};
#define NMODES (sizeof MODES / sizeof MODES[0])

/* How many of MODES (in proto_version order) the server can be read in. */
static size_t nmodes(PGconn *conn)
{
    size_t n = 0;
    while (n < NMODES && MODES[n].pv <= server_max_pv(conn))
        n++;
    return n;
}

static capture *peek_mode(PGconn *conn, const char *slot, const struct mode *md, const char *test)
{
    char tag[128];
    snprintf(tag, sizeof tag, "%s-%s", test, md->tag);
    return peek(conn, slot, md->pv, md->opts, tag);
}

/* ---------------------------------------------------------------------
 * Tests
 * --------------------------------------------------------------------- */

/* NULL in every position of a row, and a row of NULLs. */
static void nulls_everywhere(void **state)
{
    PGconn *conn = connect_db();
    pgt_exec(conn, "CREATE TABLE t_nulls (a int, b text, c int, d text)");
    uint32_t relid = oid_of(conn, "t_nulls");
    create_slot(conn, "s_nulls", false);
    pgt_exec(conn, "INSERT INTO t_nulls VALUES (NULL, 'x', 3, 'y'), (1, NULL, 3, 'y'), "
                   "(1, 'x', NULL, 'y'), (1, 'x', 3, NULL), (NULL, NULL, NULL, NULL)");

    for (size_t k = 0; k < nmodes(conn); k++) {
        const struct mode *md = &MODES[k];
        capture *cap = peek_mode(conn, "s_nulls", md, "nulls");
        iter it;
        it_init(&it, cap);
        txn t = expect_begin(&it);
        const decode_msg *m = expect(&it, DECODE_RELATION);
        const decode_relation *r = &m->u.relation;
        assert_false(m->has_xid);
        assert_int_equal(r->relid, relid);
        assert_string_equal(r->nspname, "public");
        assert_string_equal(r->relname, "t_nulls");
        assert_int_equal(r->replident, 'd');
        assert_int_equal(r->natts, 4);
        expect_attr(r, 0, "a", 23, -1, 0);
        expect_attr(r, 1, "b", 25, -1, 0);
        expect_attr(r, 2, "c", 23, -1, 0);
        expect_attr(r, 3, "d", 25, -1, 0);
        for (int row = 0; row < 5; row++) {
            m = expect(&it, DECODE_INSERT);
            assert_int_equal(m->u.insert.relid, relid);
            const decode_tuple *nt = &m->u.insert.newtup;
            assert_int_equal(nt->ncols, 4);
            for (int col = 0; col < 4; col++) {
                if (col == row || row == 4)
                    col_null(nt, col);
                else if (col == 0)
                    col_int(nt, col, md->binary, 1);
                else if (col == 1)
                    col_str(nt, col, md->binary, "x");
                else if (col == 2)
                    col_int(nt, col, md->binary, 3);
                else
                    col_str(nt, col, md->binary, "y");
            }
        }
        expect_commit(&it, &t);
        it_done(&it);
        capture_free(cap);
    }
    drop_slot(conn, "s_nulls");
    PQfinish(conn);
}

/* A ~10 kB random value stored out of line: an update that does not touch
 * it sends it as "unchanged", never as NULL. */
static void toast_unchanged(void **state)
{
    PGconn *conn = connect_db();
    pgt_exec(conn, "CREATE TABLE t_toast (id int PRIMARY KEY, big text, small int)");
    uint32_t relid = oid_of(conn, "t_toast");
    create_slot(conn, "s_toast", false);
    pgt_exec(conn, "INSERT INTO t_toast SELECT 1, string_agg(md5(random()::text || g), ''), 0 "
                   "FROM generate_series(1, 320) g");
    char *big = pgt_value(conn, "SELECT big FROM t_toast");
    assert_int_equal(strlen(big), 10240);
    /* Not compressed, and too large to stay inline. */
    assert_int_equal(pgt_int(conn, "SELECT (pg_column_compression(big) IS NULL)::int FROM t_toast"),
                     1);
    assert_true(pgt_int(conn, "SELECT pg_column_size(big) FROM t_toast") >= 10240);
    pgt_exec(conn, "UPDATE t_toast SET small = 1 WHERE id = 1");
    pgt_exec(conn, "UPDATE t_toast SET big = big || 'z' WHERE id = 1");
    pgt_exec(conn, "DELETE FROM t_toast WHERE id = 1");

    char *big2 = malloc(10242);
    assert_non_null(big2);
    snprintf(big2, 10242, "%sz", big);
    for (size_t k = 0; k < nmodes(conn); k++) {
        const struct mode *md = &MODES[k];
        capture *cap = peek_mode(conn, "s_toast", md, "toast");
        iter it;
        it_init(&it, cap);
        txn t = expect_begin(&it);
        const decode_msg *m = expect(&it, DECODE_RELATION);
        assert_int_equal(m->u.relation.relid, relid);
        expect_attr(&m->u.relation, 0, "id", 23, -1, DECODE_ATTR_KEY);
        expect_attr(&m->u.relation, 1, "big", 25, -1, 0);
        expect_attr(&m->u.relation, 2, "small", 23, -1, 0);
        m = expect(&it, DECODE_INSERT);
        col_int(&m->u.insert.newtup, 0, md->binary, 1);
        col_str(&m->u.insert.newtup, 1, md->binary, big);
        col_int(&m->u.insert.newtup, 2, md->binary, 0);
        expect_commit(&it, &t);

        /* small changed, big untouched: sent as unchanged. */
        t = expect_begin(&it);
        m = expect(&it, DECODE_UPDATE);
        assert_int_equal(m->u.update.relid, relid);
        assert_int_equal(m->u.update.old_kind, 0);
        assert_int_equal(m->u.update.newtup.ncols, 3);
        col_int(&m->u.update.newtup, 0, md->binary, 1);
        col_unchanged(&m->u.update.newtup, 1);
        assert_null(m->u.update.newtup.cols[1].data);
        col_int(&m->u.update.newtup, 2, md->binary, 1);
        expect_commit(&it, &t);

        /* big changed: the whole new value comes. */
        t = expect_begin(&it);
        m = expect(&it, DECODE_UPDATE);
        assert_int_equal(m->u.update.old_kind, 0);
        col_str(&m->u.update.newtup, 1, md->binary, big2);
        expect_commit(&it, &t);

        /* The old key of a delete: the key column, the others as NULL. */
        t = expect_begin(&it);
        m = expect(&it, DECODE_DELETE);
        assert_int_equal(m->u.delete_.old_kind, 'K');
        assert_int_equal(m->u.delete_.oldtup.ncols, 3);
        col_int(&m->u.delete_.oldtup, 0, md->binary, 1);
        col_null(&m->u.delete_.oldtup, 1);
        col_null(&m->u.delete_.oldtup, 2);
        expect_commit(&it, &t);
        it_done(&it);
        capture_free(cap);
    }
    free(big);
    free(big2);
    drop_slot(conn, "s_toast");
    PQfinish(conn);
}

/* Replica identity DEFAULT, FULL and USING INDEX: Relation key flags, old
 * tuple kinds, and an update that changes the key. */
static void replica_identities(void **state)
{
    PGconn *conn = connect_db();
    pgt_exec(conn, "CREATE TABLE t_def (id int PRIMARY KEY, a text, b int);"
                   "CREATE TABLE t_full (id int, a text);"
                   "ALTER TABLE t_full REPLICA IDENTITY FULL;"
                   "CREATE TABLE t_idx (id int, u int NOT NULL, a text);"
                   "CREATE UNIQUE INDEX t_idx_u ON t_idx (u);"
                   "ALTER TABLE t_idx REPLICA IDENTITY USING INDEX t_idx_u");
    uint32_t def = oid_of(conn, "t_def"), full = oid_of(conn, "t_full"),
             idx = oid_of(conn, "t_idx");
    create_slot(conn, "s_ident", false);
    const char *work[] = {
        "INSERT INTO t_def VALUES (1, 'a', 2)",
        "UPDATE t_def SET a = 'b' WHERE id = 1",
        "UPDATE t_def SET id = 5 WHERE id = 1",
        "DELETE FROM t_def WHERE id = 5",
        "INSERT INTO t_full VALUES (1, 'x')",
        "UPDATE t_full SET a = 'y'",
        "DELETE FROM t_full",
        "INSERT INTO t_idx VALUES (1, 10, 'q')",
        "UPDATE t_idx SET a = 'r'",
        "UPDATE t_idx SET u = 11",
        "DELETE FROM t_idx",
    };
    for (size_t i = 0; i < sizeof work / sizeof work[0]; i++)
        pgt_exec(conn, work[i]);

    for (size_t k = 0; k < nmodes(conn); k++) {
        const struct mode *md = &MODES[k];
        const bool b = md->binary;
        capture *cap = peek_mode(conn, "s_ident", md, "ident");
        iter it;
        it_init(&it, cap);
        const decode_msg *m;
        const decode_tuple *o, *n;

        /* DEFAULT (primary key). */
        txn t = expect_begin(&it);
        m = expect(&it, DECODE_RELATION);
        assert_int_equal(m->u.relation.relid, def);
        assert_int_equal(m->u.relation.replident, 'd');
        expect_attr(&m->u.relation, 0, "id", 23, -1, DECODE_ATTR_KEY);
        expect_attr(&m->u.relation, 1, "a", 25, -1, 0);
        expect_attr(&m->u.relation, 2, "b", 23, -1, 0);
        expect(&it, DECODE_INSERT);
        expect_commit(&it, &t);
        t = expect_begin(&it);
        m = expect(&it, DECODE_UPDATE); /* key unchanged: no old tuple */
        assert_int_equal(m->u.update.old_kind, 0);
        assert_int_equal(m->u.update.oldtup.ncols, 0);
        n = &m->u.update.newtup;
        col_int(n, 0, b, 1);
        col_str(n, 1, b, "b");
        col_int(n, 2, b, 2);
        expect_commit(&it, &t);
        t = expect_begin(&it);
        m = expect(&it, DECODE_UPDATE); /* key changed: old key */
        assert_int_equal(m->u.update.old_kind, 'K');
        o = &m->u.update.oldtup;
        n = &m->u.update.newtup;
        assert_int_equal(o->ncols, 3);
        col_int(o, 0, b, 1);
        col_null(o, 1);
        col_null(o, 2);
        col_int(n, 0, b, 5);
        col_str(n, 1, b, "b");
        col_int(n, 2, b, 2);
        expect_commit(&it, &t);
        t = expect_begin(&it);
        m = expect(&it, DECODE_DELETE);
        assert_int_equal(m->u.delete_.relid, def);
        assert_int_equal(m->u.delete_.old_kind, 'K');
        col_int(&m->u.delete_.oldtup, 0, b, 5);
        col_null(&m->u.delete_.oldtup, 1);
        col_null(&m->u.delete_.oldtup, 2);
        expect_commit(&it, &t);

        /* FULL: every column flagged as key, old rows whole. */
        t = expect_begin(&it);
        m = expect(&it, DECODE_RELATION);
        assert_int_equal(m->u.relation.relid, full);
        assert_int_equal(m->u.relation.replident, 'f');
        expect_attr(&m->u.relation, 0, "id", 23, -1, DECODE_ATTR_KEY);
        expect_attr(&m->u.relation, 1, "a", 25, -1, DECODE_ATTR_KEY);
        expect(&it, DECODE_INSERT);
        expect_commit(&it, &t);
        t = expect_begin(&it);
        m = expect(&it, DECODE_UPDATE);
        assert_int_equal(m->u.update.old_kind, 'O');
        o = &m->u.update.oldtup;
        n = &m->u.update.newtup;
        assert_int_equal(o->ncols, 2);
        col_int(o, 0, b, 1);
        col_str(o, 1, b, "x");
        col_int(n, 0, b, 1);
        col_str(n, 1, b, "y");
        expect_commit(&it, &t);
        t = expect_begin(&it);
        m = expect(&it, DECODE_DELETE);
        assert_int_equal(m->u.delete_.old_kind, 'O');
        col_int(&m->u.delete_.oldtup, 0, b, 1);
        col_str(&m->u.delete_.oldtup, 1, b, "y");
        expect_commit(&it, &t);

        /* USING INDEX on u. */
        t = expect_begin(&it);
        m = expect(&it, DECODE_RELATION);
        assert_int_equal(m->u.relation.relid, idx);
        assert_int_equal(m->u.relation.replident, 'i');
        expect_attr(&m->u.relation, 0, "id", 23, -1, 0);
        expect_attr(&m->u.relation, 1, "u", 23, -1, DECODE_ATTR_KEY);
        expect_attr(&m->u.relation, 2, "a", 25, -1, 0);
        expect(&it, DECODE_INSERT);
        expect_commit(&it, &t);
        t = expect_begin(&it);
        m = expect(&it, DECODE_UPDATE);
        assert_int_equal(m->u.update.old_kind, 0);
        expect_commit(&it, &t);
        t = expect_begin(&it);
        m = expect(&it, DECODE_UPDATE);
        assert_int_equal(m->u.update.old_kind, 'K');
        o = &m->u.update.oldtup;
        assert_int_equal(o->ncols, 3);
        col_null(o, 0);
        col_int(o, 1, b, 10);
        col_null(o, 2);
        col_int(&m->u.update.newtup, 1, b, 11);
        col_str(&m->u.update.newtup, 2, b, "r");
        expect_commit(&it, &t);
        t = expect_begin(&it);
        m = expect(&it, DECODE_DELETE);
        assert_int_equal(m->u.delete_.old_kind, 'K');
        col_null(&m->u.delete_.oldtup, 0);
        col_int(&m->u.delete_.oldtup, 1, b, 11);
        col_null(&m->u.delete_.oldtup, 2);
        expect_commit(&it, &t);
        it_done(&it);
        capture_free(cap);
    }
    drop_slot(conn, "s_ident");
    PQfinish(conn);
}

/* TRUNCATE with CASCADE and RESTART IDENTITY: flags and relation lists. */
static void truncates(void **state)
{
    PGconn *conn = connect_db();
    pgt_exec(conn, "CREATE TABLE t_parent (id serial PRIMARY KEY);"
                   "CREATE TABLE t_child (id int PRIMARY KEY, pid int REFERENCES t_parent (id));"
                   "INSERT INTO t_parent DEFAULT VALUES; INSERT INTO t_child VALUES (1, 1)");
    uint32_t parent = oid_of(conn, "t_parent"), child = oid_of(conn, "t_child");
    create_slot(conn, "s_trunc", false);
    pgt_exec(conn, "TRUNCATE t_parent CASCADE");
    pgt_exec(conn, "TRUNCATE t_parent, t_child RESTART IDENTITY");
    pgt_exec(conn, "TRUNCATE t_parent RESTART IDENTITY CASCADE");
    pgt_exec(conn, "TRUNCATE t_child");

    const uint8_t flags[] = {DECODE_TRUNCATE_CASCADE, DECODE_TRUNCATE_RESTART_IDENTITY,
                             DECODE_TRUNCATE_CASCADE | DECODE_TRUNCATE_RESTART_IDENTITY, 0};
    for (size_t k = 0; k < nmodes(conn); k++) {
        capture *cap = peek_mode(conn, "s_trunc", &MODES[k], "truncate");
        iter it;
        it_init(&it, cap);
        for (int i = 0; i < 4; i++) {
            txn t = expect_begin(&it);
            /* Truncating gives the relations new files, which invalidates
             * pgoutput's cache: every Truncate comes after fresh Relation
             * messages for all its relations, in the Truncate's order. */
            const decode_msg *m;
            if (i < 3) {
                m = expect(&it, DECODE_RELATION);
                assert_int_equal(m->u.relation.relid, parent);
            }
            m = expect(&it, DECODE_RELATION);
            assert_int_equal(m->u.relation.relid, child);
            m = expect(&it, DECODE_TRUNCATE);
            assert_false(m->has_xid);
            assert_int_equal(m->u.truncate.flags, flags[i]);
            if (i < 3) {
                assert_int_equal(m->u.truncate.nrels, 2);
                assert_int_equal(m->u.truncate.relids[0], parent);
                assert_int_equal(m->u.truncate.relids[1], child);
            } else {
                assert_int_equal(m->u.truncate.nrels, 1);
                assert_int_equal(m->u.truncate.relids[0], child);
            }
            expect_commit(&it, &t);
        }
        it_done(&it);
        capture_free(cap);
    }
    drop_slot(conn, "s_trunc");
    PQfinish(conn);
}

/* pg_logical_emit_message, transactional and not. */
static void logical_messages(void **state)
{
    PGconn *conn = connect_db();
    pgt_exec(conn, "CREATE TABLE t_msg (id int PRIMARY KEY)");
    create_slot(conn, "s_msg", false);
    pgt_exec(conn, "BEGIN; INSERT INTO t_msg VALUES (1)");
    char *lsn1 = pgt_value(conn, "SELECT pg_logical_emit_message(true, 'pgshift', 'in txn')");
    pgt_exec(conn, "COMMIT");
    char *lsn2 = pgt_value(conn, "SELECT pg_logical_emit_message(false, 'pgshift-nt', "
                                 "'\\x00ff0100'::bytea)");
    char *lsn3 = pgt_value(conn, "SELECT pg_logical_emit_message(true, '', '')");
    pgs_lsn l1, l2, l3;
    assert_true(decode_lsn_parse(lsn1, &l1) && decode_lsn_parse(lsn2, &l2) &&
                decode_lsn_parse(lsn3, &l3));

    for (size_t k = 0; k < nmodes(conn); k++) {
        capture *cap = peek_mode(conn, "s_msg", &MODES[k], "message");
        iter it;
        it_init(&it, cap);
        txn t = expect_begin(&it);
        expect(&it, DECODE_RELATION);
        expect(&it, DECODE_INSERT);
        const decode_msg *m = expect(&it, DECODE_MESSAGE);
        assert_false(m->has_xid);
        assert_int_equal(m->u.message.flags, DECODE_MESSAGE_TRANSACTIONAL);
        assert_int_equal(m->u.message.lsn, l1);
        assert_int_equal(it.raw->lsn, l1);
        assert_string_equal(m->u.message.prefix, "pgshift");
        assert_int_equal(m->u.message.len, 6);
        assert_memory_equal(m->u.message.content, "in txn", 6);
        expect_commit(&it, &t);

        /* Outside any Begin/Commit, with xid 0 in the peek output. */
        m = expect(&it, DECODE_MESSAGE);
        assert_int_equal(m->u.message.flags, 0);
        assert_int_equal(m->u.message.lsn, l2);
        assert_int_equal(it.raw->xid, 0);
        assert_string_equal(m->u.message.prefix, "pgshift-nt");
        assert_int_equal(m->u.message.len, 4);
        assert_memory_equal(m->u.message.content, "\x00\xff\x01\x00", 4);

        /* A transaction holding only an empty message with an empty prefix. */
        t = expect_begin(&it);
        m = expect(&it, DECODE_MESSAGE);
        assert_int_equal(m->u.message.flags, DECODE_MESSAGE_TRANSACTIONAL);
        assert_int_equal(m->u.message.lsn, l3);
        assert_string_equal(m->u.message.prefix, "");
        assert_int_equal(m->u.message.len, 0);
        expect_commit(&it, &t);
        it_done(&it);
        capture_free(cap);
    }
    free(lsn1);
    free(lsn2);
    free(lsn3);
    drop_slot(conn, "s_msg");
    PQfinish(conn);
}

/* User types (Type messages) and values of many built-in types. */
static void types_and_values(void **state)
{
    PGconn *conn = connect_db();
    pgt_exec(conn, "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');"
                   "CREATE DOMAIN dmood AS mood CHECK (VALUE <> 'sad');"
                   "CREATE TYPE pair AS (x int, y text);"
                   "CREATE TABLE t_types (id int PRIMARY KEY, m mood, dm dmood, ia int[], "
                   "ta text[], j jsonb, n numeric(10,3), b bytea, ts timestamptz, p pair)");
    uint32_t mood = type_oid_of(conn, "mood"), dmood = type_oid_of(conn, "dmood"),
             pair = type_oid_of(conn, "pair"), relid = oid_of(conn, "t_types");
    create_slot(conn, "s_types", false);
    pgt_exec(conn, "INSERT INTO t_types VALUES (1, 'happy', 'ok', '{1,2,NULL}', '{\"a b\",c}', "
                   "'{\"a\": [1, 2.5, null]}', 3.14, '\\x00ff', "
                   "'2024-01-02 03:04:05.678901+00', '(7,\"x y\")')");
    int64_t unix_us = pgt_int(conn, "SELECT (extract(epoch FROM timestamptz "
                                    "'2024-01-02 03:04:05.678901+00') * 1000000)::bigint");
    pgs_timestamp ts = decode_ts_from_unix_us(unix_us);

    for (size_t k = 0; k < nmodes(conn); k++) {
        const struct mode *md = &MODES[k];
        capture *cap = peek_mode(conn, "s_types", md, "types");
        iter it;
        it_init(&it, cap);
        txn t = expect_begin(&it);
        /* A Type message for each user type, in column order; a domain is
         * named by its base type. */
        const decode_msg *m = expect(&it, DECODE_TYPE);
        assert_int_equal(m->u.type.oid, mood);
        assert_string_equal(m->u.type.nspname, "public");
        assert_string_equal(m->u.type.typname, "mood");
        m = expect(&it, DECODE_TYPE);
        assert_int_equal(m->u.type.oid, dmood);
        assert_string_equal(m->u.type.nspname, "public");
        assert_string_equal(m->u.type.typname, "mood");
        m = expect(&it, DECODE_TYPE);
        assert_int_equal(m->u.type.oid, pair);
        assert_string_equal(m->u.type.typname, "pair");

        m = expect(&it, DECODE_RELATION);
        const decode_relation *r = &m->u.relation;
        assert_int_equal(r->relid, relid);
        assert_int_equal(r->natts, 10);
        expect_attr(r, 0, "id", 23, -1, DECODE_ATTR_KEY);
        expect_attr(r, 1, "m", mood, -1, 0);
        expect_attr(r, 2, "dm", dmood, -1, 0);
        expect_attr(r, 3, "ia", 1007, -1, 0);
        expect_attr(r, 4, "ta", 1009, -1, 0);
        expect_attr(r, 5, "j", 3802, -1, 0);
        expect_attr(r, 6, "n", 1700, (10 << 16 | 3) + 4, 0);
        expect_attr(r, 7, "b", 17, -1, 0);
        expect_attr(r, 8, "ts", 1184, -1, 0);
        expect_attr(r, 9, "p", pair, -1, 0);

        m = expect(&it, DECODE_INSERT);
        const decode_tuple *n = &m->u.insert.newtup;
        assert_int_equal(n->ncols, 10);
        if (!md->binary) {
            col_text(n, 0, "1");
            col_text(n, 1, "happy");
            col_text(n, 2, "ok");
            col_text(n, 3, "{1,2,NULL}");
            col_text(n, 4, "{\"a b\",c}");
            col_text(n, 5, "{\"a\": [1, 2.5, null]}");
            col_text(n, 6, "3.140");
            col_text(n, 7, "\\x00ff");
            col_text(n, 8, "2024-01-02 03:04:05.678901+00");
            col_text(n, 9, "(7,\"x y\")");
        } else {
            col_int4(n, 0, 1);
            /* enum_send: the label; a domain sends as its base type. */
            col_bytes(n, 1, DECODE_COL_BINARY, "happy", 5);
            col_bytes(n, 2, DECODE_COL_BINARY, "ok", 2);
            /* array_send: ndim 1, has nulls, int4, 3 elements from 1. */
            const uint8_t ia[] = {
                0,    0,    0,    1,    0, 0, 0, 1, 0, 0,
                0,    23,   0,    0,    0, 3, 0, 0, 0, 1, /* header */
                0,    0,    0,    4,    0, 0, 0, 1,       /* 1 */
                0,    0,    0,    4,    0, 0, 0, 2,       /* 2 */
                0xff, 0xff, 0xff, 0xff,                   /* NULL */
            };
            col_bytes(n, 3, DECODE_COL_BINARY, ia, sizeof ia);
            assert_int_equal(n->cols[4].kind, DECODE_COL_BINARY);
            /* jsonb_send: version 1, then the text. */
            col_bytes(n, 5, DECODE_COL_BINARY, "\x01{\"a\": [1, 2.5, null]}", 22);
            /* numeric_send: ndigits 2, weight 0, sign +, dscale 3, 3 1400. */
            const uint8_t num[] = {0, 2, 0, 0, 0, 0, 0, 3, 0, 3, 0x05, 0x78};
            col_bytes(n, 6, DECODE_COL_BINARY, num, sizeof num);
            col_bytes(n, 7, DECODE_COL_BINARY, "\x00\xff", 2);
            uint8_t be[8];
            for (int i = 0; i < 8; i++)
                be[i] = (uint8_t)((uint64_t)ts >> (56 - 8 * i));
            col_bytes(n, 8, DECODE_COL_BINARY, be, 8);
            /* record_send: 2 columns, each type oid, length, bytes. */
            const uint8_t rec[] = {0, 0, 0, 2, 0, 0,  0, 23, 0, 0, 0,   4,   0,  0,
                                   0, 7, 0, 0, 0, 25, 0, 0,  0, 3, 'x', ' ', 'y'};
            col_bytes(n, 9, DECODE_COL_BINARY, rec, sizeof rec);
        }
        expect_commit(&it, &t);
        it_done(&it);
        capture_free(cap);
    }
    drop_slot(conn, "s_types");
    PQfinish(conn);
}

/* proto_version 2 with streaming: a large transaction arrives in Stream
 * Start/Stop blocks whose changes carry the (sub)transaction xid; an aborted
 * subtransaction ends with a Stream Abort naming it; an aborted transaction
 * with a Stream Abort naming itself. From 18 on the server no longer streams
 * a transaction that has already aborted when decoding reaches
 * logical_decoding_work_mem (it drops its changes instead), and this one has:
 * it is read after the ROLLBACK. There it must not appear at all. */
static void streaming(void **state)
{
    PGconn *conn = connect_db();
    pgt_exec(conn, "CREATE TABLE t_stream (id int PRIMARY KEY, a text)");
    uint32_t relid = oid_of(conn, "t_stream");
    create_slot(conn, "s_stream", false);
    pgt_exec(conn,
             "BEGIN;"
             "INSERT INTO t_stream SELECT g, repeat('x', 100) FROM generate_series(1, 1500) g;"
             "SAVEPOINT a;"
             "INSERT INTO t_stream SELECT g, 'y' FROM generate_series(2001, 3500) g;"
             "ROLLBACK TO SAVEPOINT a;"
             "INSERT INTO t_stream VALUES (9999, 'z');"
             "COMMIT");
    pgt_exec(conn, "BEGIN;"
                   "INSERT INTO t_stream SELECT g, repeat('w', 100) FROM generate_series(5001, "
                   "6500) g;"
                   "ROLLBACK");
    /* Decoding spills to the output plugin past 64 kB of changes. */
    pgt_exec(conn, "SET logical_decoding_work_mem = '64kB'");
    bool aborted_streamed = PQserverVersion(conn) < 180000;

    const char *opts[] = {"'streaming', 'on'", "'streaming', 'on', 'binary', 'true'"};
    for (int pass = 0; pass < 2; pass++) {
        capture *cap = peek(conn, "s_stream", 2, opts[pass], pass ? "stream-bin" : "stream-text");
        iter it;
        it_init(&it, cap);
        uint32_t top = 0, aborted_sub = 0, later_sub = 0, second = 0;
        int blocks = 0, top_rows = 0, sub_rows = 0, later_rows = 0, second_rows = 0;
        int relations = 0;
        bool committed = false, second_aborted = false;
        while (it.next < cap->n) {
            const decode_msg *m = expect(&it, DECODE_STREAM_START);
            assert_true(m->has_xid);
            if (top == 0) {
                top = m->xid;
                assert_true(m->u.stream_start.first_segment);
            } else if (m->xid != top && second == 0) {
                second = m->xid;
                assert_true(committed);
                assert_true(m->u.stream_start.first_segment);
            } else {
                assert_false(m->u.stream_start.first_segment);
            }
            uint32_t block_xid = m->xid;
            blocks++;
            for (;;) {
                m = next_msg(&it);
                if (m->kind == DECODE_STREAM_STOP)
                    break;
                assert_true(m->has_xid);
                if (m->kind == DECODE_RELATION) {
                    assert_int_equal(m->u.relation.relid, relid);
                    relations++;
                    continue;
                }
                if (m->kind != DECODE_INSERT)
                    fail_msg("unexpected %s in a stream block", decode_kind_name(m->kind));
                assert_int_equal(m->u.insert.relid, relid);
                const decode_col *id = &m->u.insert.newtup.cols[0];
                assert_true(id->kind == (pass ? DECODE_COL_BINARY : DECODE_COL_TEXT));
                if (block_xid == second) {
                    assert_int_equal(m->xid, second);
                    second_rows++;
                } else if (m->xid == top) {
                    top_rows++;
                } else if (aborted_sub == 0 || m->xid == aborted_sub) {
                    /* The subtransaction that will be rolled back. */
                    aborted_sub = m->xid;
                    sub_rows++;
                } else {
                    later_sub = m->xid;
                    later_rows++;
                    if (!pass)
                        col_text(&m->u.insert.newtup, 0, "9999");
                }
            }
            /* What may follow a block: more blocks, an abort, the commit. */
            while (it.next < cap->n && it.cap->msgs[it.next].data[0] != 'S') {
                m = next_msg(&it);
                if (m->kind == DECODE_STREAM_ABORT) {
                    if (m->xid == top) {
                        assert_true(m->u.stream_abort.subxid != top);
                        assert_int_equal(m->u.stream_abort.subxid, aborted_sub);
                    } else {
                        assert_int_equal(m->xid, second);
                        assert_int_equal(m->u.stream_abort.subxid, second);
                        second_aborted = true;
                    }
                } else if (m->kind == DECODE_STREAM_COMMIT) {
                    assert_int_equal(m->xid, top);
                    assert_int_equal(m->u.stream_commit.flags, 0);
                    assert_true(m->u.stream_commit.end_lsn > m->u.stream_commit.commit_lsn);
                    assert_int_equal(it.raw->lsn, m->u.stream_commit.end_lsn);
                    assert_true(m->u.stream_commit.commit_time > 0);
                    committed = true;
                } else {
                    fail_msg("unexpected %s after a stream block", decode_kind_name(m->kind));
                }
            }
        }
        it_done(&it);
        assert_true(blocks >= 3);
        assert_true(relations >= 1);
        assert_true(committed);
        assert_int_equal(top_rows, 1500);
        assert_true(sub_rows >= 1 && sub_rows <= 1500);
        assert_int_equal(later_rows, 1);
        assert_true(later_sub != 0 && later_sub != aborted_sub);
        if (aborted_streamed) {
            assert_true(second_aborted);
            assert_true(second_rows >= 1);
        } else {
            assert_int_equal(second, 0);
            assert_false(second_aborted);
            assert_int_equal(second_rows, 0);
        }
        capture_free(cap);
    }
    drop_slot(conn, "s_stream");
    PQfinish(conn);
}

/* A real walsender session: CopyData frames, keepalives, the XLogData
 * header LSNs, and a status update that moves confirmed_flush_lsn. */
static void walsender_frames(void **state)
{
    PGconn *conn = connect_db();
    pgt_exec(conn, "CREATE TABLE t_ws (id int PRIMARY KEY, m mood)");
    PGconn *repl = pgt_connect("replication=database");
    /* 15 added the option list; 14 only knows the keyword form. */
    PGresult *res = PQexec(repl, PQserverVersion(repl) >= 150000
                                     ? "CREATE_REPLICATION_SLOT s_ws LOGICAL pgoutput "
                                       "(SNAPSHOT 'nothing')"
                                     : "CREATE_REPLICATION_SLOT s_ws LOGICAL pgoutput "
                                       "NOEXPORT_SNAPSHOT");
    assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    PQclear(res);
    pgt_exec(conn, "INSERT INTO t_ws VALUES (1, 'ok')");
    pgt_exec(conn, "UPDATE t_ws SET m = 'happy'");
    char *end = pgt_value(conn, "SELECT pg_logical_emit_message(false, 'end', '')");
    pgs_lsn end_lsn;
    assert_true(decode_lsn_parse(end, &end_lsn));
    free(end);
    wait_flushed(conn);

    res = PQexec(repl, "START_REPLICATION SLOT s_ws LOGICAL 0/0 (proto_version '1', "
                       "publication_names '\"p\"', messages 'true', binary 'true')");
    assert_int_equal(PQresultStatus(res), PGRES_COPY_BOTH);
    PQclear(res);
    assert_int_equal(PQsetnonblocking(repl, 1), 0);

    decode_ctx ctx;
    decode_ctx_init(&ctx, 1);
    bool debug = getenv("PGSHIFT_CAPTURE_DEBUG") != NULL;
    pgs_lsn last_end = 0;
    int commits = 0, frames = 0;
    bool seen_end = false;
    time_t deadline = time(NULL) + 30;
    char kinds[64] = "";
    while (!seen_end) {
        if (time(NULL) > deadline)
            fail_msg("no end message within 30 s (saw %s)", kinds);
        char *buf = NULL;
        int n = PQgetCopyData(repl, &buf, 1);
        if (n == 0) {
            fd_set rfds;
            FD_ZERO(&rfds);
            FD_SET(PQsocket(repl), &rfds);
            struct timeval tv = {1, 0};
            select(PQsocket(repl) + 1, &rfds, NULL, NULL, &tv);
            assert_int_equal(PQconsumeInput(repl), 1);
            continue;
        }
        if (n < 0)
            fail_msg("PQgetCopyData: %d %s", n, PQerrorMessage(repl));
        decode_frame f;
        decode_error err;
        if (!decode_frame_parse((const uint8_t *)buf, (size_t)n, &f, &err))
            fail_msg("frame: %s", err.msg);
        frames++;
        if (f.kind == DECODE_FRAME_KEEPALIVE) {
            assert_true(f.wal_end > 0);
            if (f.reply_requested) {
                uint8_t reply[DECODE_STATUS_UPDATE_LEN];
                decode_status_update(reply, last_end, last_end, last_end, 0, false);
                assert_int_equal(PQputCopyData(repl, (const char *)reply, sizeof reply), 1);
                PQflush(repl);
            }
            PQfreemem(buf);
            continue;
        }
        decode_msg m;
        if (!decode_message(&ctx, f.data, f.len, &m, &err))
            fail_msg("message: %s", err.msg);
        char lsn[18], wend[18];
        if (debug)
            fprintf(stderr, "frame %c: %s wal_start %s wal_end %s send_time %lld\n", (char)m.kind,
                    decode_kind_name(m.kind), decode_lsn_format(f.wal_start, lsn),
                    decode_lsn_format(f.wal_end, wend), (long long)f.send_time);
        size_t kl = strlen(kinds);
        if (kl + 1 < sizeof kinds) {
            kinds[kl] = (char)m.kind;
            kinds[kl + 1] = '\0';
        }
        cap_msg cm = {.lsn = f.wal_start, .data = (uint8_t *)f.data, .len = f.len};
        write_vector("walsender-bin", 1, false, (size_t)frames, &cm);
        assert_true(f.send_time > 0);
        switch (m.kind) {
        case DECODE_RELATION:
        case DECODE_TYPE:
            /* Sent with LSN 0 in the XLogData header. */
            assert_int_equal(f.wal_start, 0);
            break;
        case DECODE_BEGIN:
            assert_true(f.wal_start != 0 && f.wal_start <= m.u.begin.final_lsn);
            break;
        case DECODE_COMMIT:
            assert_int_equal(f.wal_start, m.u.commit.end_lsn);
            last_end = m.u.commit.end_lsn;
            commits++;
            break;
        case DECODE_MESSAGE:
            assert_int_equal(f.wal_start, m.u.message.lsn);
            if (strcmp(m.u.message.prefix, "end") == 0) {
                assert_int_equal(m.u.message.lsn, end_lsn);
                seen_end = true;
            }
            break;
        default:
            assert_true(f.wal_start != 0);
            break;
        }
        PQfreemem(buf);
    }
    assert_string_equal(kinds, "BYRICBUCM");
    assert_int_equal(commits, 2);
    decode_ctx_free(&ctx);

    /* Report the last commit as flushed: the slot's confirmed_flush_lsn
     * must move there, which proves the 'r' bytes are what the server reads. */
    uint8_t reply[DECODE_STATUS_UPDATE_LEN];
    pgs_timestamp now = decode_ts_from_unix_us((int64_t)time(NULL) * 1000000);
    decode_status_update(reply, last_end, last_end, last_end, now, false);
    assert_int_equal(PQputCopyData(repl, (const char *)reply, sizeof reply), 1);
    while (PQflush(repl) == 1)
        usleep(1000);
    char want[18], sql[200];
    decode_lsn_format(last_end, want);
    snprintf(sql, sizeof sql,
             "SELECT confirmed_flush_lsn = '%s'::pg_lsn FROM pg_replication_slots "
             "WHERE slot_name = 's_ws'",
             want);
    bool moved = false;
    for (int i = 0; i < 500 && !moved; i++) {
        char *v = pgt_value(conn, sql);
        moved = strcmp(v, "t") == 0;
        free(v);
        if (!moved) {
            usleep(20000);
            PQconsumeInput(repl);
        }
    }
    if (!moved)
        fail_msg("confirmed_flush_lsn did not reach %s", want);

    PQputCopyEnd(repl, NULL);
    PQflush(repl);
    PQfinish(repl);
    /* The walsender is gone once the slot is inactive. */
    for (int i = 0; i < 500; i++) {
        if (pgt_int(conn, "SELECT count(*) FROM pg_replication_slots "
                          "WHERE slot_name = 's_ws' AND active") == 0)
            break;
        usleep(20000);
    }
    drop_slot(conn, "s_ws");
    PQfinish(conn);
}

/* Restarts the cluster with max_prepared_transactions > 0 (two-phase needs
 * it; the fixture starts with 0). */
static void enable_prepared_transactions(void)
{
    PGconn *conn = pgt_connect(NULL);
    pgt_exec(conn, "ALTER SYSTEM SET max_prepared_transactions = 10");
    PQfinish(conn);
    const char *bin = getenv("PGSHIFT_TEST_PGBIN"), *data = getenv("PGSHIFT_TEST_PGDATA");
    assert_non_null(bin);
    assert_non_null(data);
    int rc = pgt_system("%s '%s/pg_ctl' -D '%s' -m fast -w restart >/dev/null 2>&1",
                        getuid() == 0 ? "runuser -u postgres --" : "", bin, data);
    assert_int_equal(rc, 0);
}

/* proto_version 3 with two_phase: Begin Prepare, Prepare, Commit Prepared,
 * Rollback Prepared, and a streamed prepared transaction (Stream Prepare). */
static void two_phase(void **state)
{
    PGconn *probe = connect_db();
    int max_pv = server_max_pv(probe);
    PQfinish(probe);
    if (max_pv < 3) {
        print_message("two_phase: skipped, this server's pgoutput has no two_phase option "
                      "(PostgreSQL 15 added it, with proto_version 3)\n");
        skip();
    }
    enable_prepared_transactions();
    PGconn *conn = connect_db();
    assert_int_equal(pgt_int(conn, "SHOW max_prepared_transactions"), 10);
    pgt_exec(conn, "CREATE TABLE t_2pc (id int PRIMARY KEY, a text)");
    uint32_t relid = oid_of(conn, "t_2pc");
    create_slot(conn, "s_2pc", true);
    pgt_exec(conn, "BEGIN; INSERT INTO t_2pc VALUES (1, 'p1'); PREPARE TRANSACTION 'g1'");
    pgt_exec(conn, "COMMIT PREPARED 'g1'");
    pgt_exec(conn, "BEGIN; INSERT INTO t_2pc VALUES (2, 'p2'); PREPARE TRANSACTION 'g2'");
    pgt_exec(conn, "ROLLBACK PREPARED 'g2'");
    pgt_exec(conn, "BEGIN; INSERT INTO t_2pc SELECT g, repeat('x', 100) "
                   "FROM generate_series(10, 1509) g; PREPARE TRANSACTION 'g3'");
    pgt_exec(conn, "COMMIT PREPARED 'g3'");
    pgt_exec(conn, "SET logical_decoding_work_mem = '64kB'");

    capture *cap = peek(conn, "s_2pc", 3, "'two_phase', 'on', 'streaming', 'on'", "twophase");
    iter it;
    it_init(&it, cap);

    /* g1: prepared, then committed. */
    const decode_msg *m = expect(&it, DECODE_BEGIN_PREPARE);
    decode_msg bp = *m;
    assert_true(bp.has_xid);
    assert_int_equal(bp.xid, it.raw->xid);
    assert_string_equal(bp.u.twophase.gid, "g1");
    assert_true(bp.u.twophase.end_lsn > bp.u.twophase.lsn);
    m = expect(&it, DECODE_RELATION);
    assert_int_equal(m->u.relation.relid, relid);
    m = expect(&it, DECODE_INSERT);
    col_text(&m->u.insert.newtup, 1, "p1");
    m = expect(&it, DECODE_PREPARE);
    assert_int_equal(m->xid, bp.xid);
    assert_int_equal(m->u.twophase.flags, 0);
    assert_int_equal(m->u.twophase.lsn, bp.u.twophase.lsn);
    assert_int_equal(m->u.twophase.end_lsn, bp.u.twophase.end_lsn);
    assert_int_equal(m->u.twophase.time, bp.u.twophase.time);
    assert_string_equal(m->u.twophase.gid, "g1");
    pgs_lsn prepare_end = m->u.twophase.end_lsn;
    m = expect(&it, DECODE_COMMIT_PREPARED);
    assert_int_equal(m->xid, bp.xid);
    assert_string_equal(m->u.twophase.gid, "g1");
    assert_true(m->u.twophase.lsn >= prepare_end);
    assert_true(m->u.twophase.end_lsn > m->u.twophase.lsn);
    assert_true(m->u.twophase.time >= bp.u.twophase.time);
    assert_int_equal(it.raw->lsn, m->u.twophase.end_lsn);

    /* g2: prepared, then rolled back. */
    m = expect(&it, DECODE_BEGIN_PREPARE);
    bp = *m;
    assert_string_equal(bp.u.twophase.gid, "g2");
    expect(&it, DECODE_INSERT);
    m = expect(&it, DECODE_PREPARE);
    assert_string_equal(m->u.twophase.gid, "g2");
    prepare_end = m->u.twophase.end_lsn;
    pgs_timestamp prepare_time = m->u.twophase.time;
    m = expect(&it, DECODE_ROLLBACK_PREPARED);
    assert_int_equal(m->xid, bp.xid);
    assert_string_equal(m->u.twophase.gid, "g2");
    assert_int_equal(m->u.twophase.lsn, prepare_end);
    assert_true(m->u.twophase.end_lsn > m->u.twophase.lsn);
    assert_int_equal(m->u.twophase.time, prepare_time);
    assert_true(m->u.twophase.time2 >= prepare_time);

    /* g3: streamed, then Stream Prepare, then Commit Prepared. */
    uint32_t xid3 = 0;
    int rows = 0;
    while (it.next < cap->n && cap->msgs[it.next].data[0] == 'S') {
        m = expect(&it, DECODE_STREAM_START);
        if (xid3 == 0) {
            xid3 = m->xid;
            assert_true(m->u.stream_start.first_segment);
        }
        assert_int_equal(m->xid, xid3);
        for (m = next_msg(&it); m->kind != DECODE_STREAM_STOP; m = next_msg(&it)) {
            assert_int_equal(m->xid, xid3);
            if (m->kind == DECODE_INSERT)
                rows++;
        }
    }
    assert_true(xid3 != 0);
    m = expect(&it, DECODE_STREAM_PREPARE);
    assert_int_equal(m->xid, xid3);
    assert_string_equal(m->u.twophase.gid, "g3");
    assert_true(m->u.twophase.end_lsn > m->u.twophase.lsn);
    m = expect(&it, DECODE_COMMIT_PREPARED);
    assert_int_equal(m->xid, xid3);
    assert_string_equal(m->u.twophase.gid, "g3");
    it_done(&it);
    assert_int_equal(rows, 1500);
    capture_free(cap);

    drop_slot(conn, "s_2pc");
    PQfinish(conn);
}

static int setup(void **state)
{
    const char *dir = vectors_dir();
    if (dir) {
        if (pgt_system("mkdir -p '%s' && rm -f '%s'/*.bin", dir, dir) != 0)
            return -1;
    }
    PGconn *conn = pgt_connect(NULL);
    pgt_exec(conn, "CREATE PUBLICATION p FOR ALL TABLES");
    PQfinish(conn);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(nulls_everywhere),
        cmocka_unit_test(toast_unchanged),
        cmocka_unit_test(replica_identities),
        cmocka_unit_test(truncates),
        cmocka_unit_test(logical_messages),
        cmocka_unit_test(types_and_values),
        cmocka_unit_test(streaming),
        /* Uses the types made by types_and_values. */
        cmocka_unit_test(walsender_frames),
        /* Restarts the cluster: last. */
        cmocka_unit_test(two_phase),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
