/* Unit tests for the pgoutput decoder and the replication framing: every
 * message kind built byte by byte, and every malformed-input path. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "pgshift/decode.h"

/* ---------------------------------------------------------------------
 * A byte-by-byte message builder (big-endian, like the server).
 * --------------------------------------------------------------------- */

typedef struct mb {
    uint8_t b[8192];
    size_t n;
} mb;

static void u8(mb *m, uint8_t v)
{
    assert_true(m->n < sizeof m->b);
    m->b[m->n++] = v;
}

static void u16(mb *m, uint16_t v)
{
    u8(m, (uint8_t)(v >> 8));
    u8(m, (uint8_t)v);
}

static void u32(mb *m, uint32_t v)
{
    for (int i = 3; i >= 0; i--)
        u8(m, (uint8_t)(v >> (8 * i)));
}

static void u64(mb *m, uint64_t v)
{
    for (int i = 7; i >= 0; i--)
        u8(m, (uint8_t)(v >> (8 * i)));
}

static void bytes(mb *m, const void *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        u8(m, ((const uint8_t *)p)[i]);
}

static void str(mb *m, const char *s)
{
    bytes(m, s, strlen(s) + 1);
}

static void col_text(mb *m, const char *s)
{
    u8(m, 't');
    u32(m, (uint32_t)strlen(s));
    bytes(m, s, strlen(s));
}

#define LSN_A   UINT64_C(0x0000000100000020)
#define LSN_B   UINT64_C(0x0000000100000058)
#define TS_A    INT64_C(0x0002B1C3D4E5F607)
#define TS_B    INT64_C(0x0002B1C3D4E5F700)
#define XID     742u
#define SUBXID  743u
#define RELID   16385u
#define NO_XID  0u /* builders: 0 means "not in a stream block" */
#define HAS_XID 1u

/* ---------------------------------------------------------------------
 * Builders, one per message kind. `in_stream` adds the Int32 xid that
 * changes carry inside a stream block.
 * --------------------------------------------------------------------- */

static mb m_begin(void)
{
    mb m = {.n = 0};
    u8(&m, 'B');
    u64(&m, LSN_A);
    u64(&m, (uint64_t)TS_A);
    u32(&m, XID);
    return m;
}

static mb m_commit(void)
{
    mb m = {.n = 0};
    u8(&m, 'C');
    u8(&m, 0);
    u64(&m, LSN_A);
    u64(&m, LSN_B);
    u64(&m, (uint64_t)TS_A);
    return m;
}

static mb m_origin(void)
{
    mb m = {.n = 0};
    u8(&m, 'O');
    u64(&m, LSN_B);
    str(&m, "pg_16390");
    return m;
}

static mb m_relation(bool in_stream)
{
    mb m = {.n = 0};
    u8(&m, 'R');
    if (in_stream)
        u32(&m, XID);
    u32(&m, RELID);
    str(&m, "public");
    str(&m, "items");
    u8(&m, 'i');
    u16(&m, 3);
    u8(&m, 1);
    str(&m, "id");
    u32(&m, 23);
    u32(&m, 0xFFFFFFFFu);
    u8(&m, 0);
    str(&m, "note");
    u32(&m, 25);
    u32(&m, 0xFFFFFFFFu);
    u8(&m, 0);
    str(&m, "price");
    u32(&m, 1700);
    u32(&m, (10u << 16 | 2u) + 4u);
    return m;
}

static mb m_type(bool in_stream)
{
    mb m = {.n = 0};
    u8(&m, 'Y');
    if (in_stream)
        u32(&m, XID);
    u32(&m, 16400);
    str(&m, "public");
    str(&m, "mood");
    return m;
}

/* Four columns: text "42", NULL, unchanged, binary int4 42. */
static void tuple4(mb *m)
{
    u16(m, 4);
    col_text(m, "42");
    u8(m, 'n');
    u8(m, 'u');
    u8(m, 'b');
    u32(m, 4);
    u32(m, 42);
}

static mb m_insert(bool in_stream)
{
    mb m = {.n = 0};
    u8(&m, 'I');
    if (in_stream)
        u32(&m, XID);
    u32(&m, RELID);
    u8(&m, 'N');
    tuple4(&m);
    return m;
}

/* old_kind 0: no old tuple; 'K': a two-column key tuple; 'O': full row. */
static mb m_update(bool in_stream, char old_kind)
{
    mb m = {.n = 0};
    u8(&m, 'U');
    if (in_stream)
        u32(&m, XID);
    u32(&m, RELID);
    if (old_kind == 'K') {
        u8(&m, 'K');
        u16(&m, 2);
        col_text(&m, "7");
        u8(&m, 'n');
    } else if (old_kind == 'O') {
        u8(&m, 'O');
        u16(&m, 3);
        col_text(&m, "7");
        col_text(&m, "old note");
        u8(&m, 'n');
    }
    u8(&m, 'N');
    u16(&m, 3);
    col_text(&m, "8");
    u8(&m, 'u');
    col_text(&m, "");
    return m;
}

static mb m_delete(bool in_stream, char old_kind)
{
    mb m = {.n = 0};
    u8(&m, 'D');
    if (in_stream)
        u32(&m, XID);
    u32(&m, RELID);
    u8(&m, (uint8_t)old_kind);
    u16(&m, 2);
    col_text(&m, "9");
    u8(&m, 'n');
    return m;
}

static mb m_truncate(bool in_stream)
{
    mb m = {.n = 0};
    u8(&m, 'T');
    if (in_stream)
        u32(&m, XID);
    u32(&m, 2);
    u8(&m, DECODE_TRUNCATE_CASCADE | DECODE_TRUNCATE_RESTART_IDENTITY);
    u32(&m, RELID);
    u32(&m, RELID + 5);
    return m;
}

static mb m_message(bool in_stream, bool transactional)
{
    mb m = {.n = 0};
    u8(&m, 'M');
    if (in_stream)
        u32(&m, XID);
    u8(&m, transactional ? DECODE_MESSAGE_TRANSACTIONAL : 0);
    u64(&m, LSN_B);
    str(&m, "pgshift");
    u32(&m, 5);
    bytes(&m, "a\0b\0c", 5);
    return m;
}

static mb m_stream_start(void)
{
    mb m = {.n = 0};
    u8(&m, 'S');
    u32(&m, XID);
    u8(&m, 1);
    return m;
}

static mb m_stream_stop(void)
{
    mb m = {.n = 0};
    u8(&m, 'E');
    return m;
}

static mb m_stream_commit(void)
{
    mb m = {.n = 0};
    u8(&m, 'c');
    u32(&m, XID);
    u8(&m, 0);
    u64(&m, LSN_A);
    u64(&m, LSN_B);
    u64(&m, (uint64_t)TS_A);
    return m;
}

static mb m_stream_abort(void)
{
    mb m = {.n = 0};
    u8(&m, 'A');
    u32(&m, XID);
    u32(&m, SUBXID);
    return m;
}

static mb m_begin_prepare(void)
{
    mb m = {.n = 0};
    u8(&m, 'b');
    u64(&m, LSN_A);
    u64(&m, LSN_B);
    u64(&m, (uint64_t)TS_A);
    u32(&m, XID);
    str(&m, "gid-1");
    return m;
}

/* Prepare, Commit Prepared and Stream Prepare share one layout. */
static mb m_prepare_like(uint8_t kind)
{
    mb m = {.n = 0};
    u8(&m, kind);
    u8(&m, 0);
    u64(&m, LSN_A);
    u64(&m, LSN_B);
    u64(&m, (uint64_t)TS_A);
    u32(&m, XID);
    str(&m, "gid-1");
    return m;
}

static mb m_rollback_prepared(void)
{
    mb m = {.n = 0};
    u8(&m, 'r');
    u8(&m, 0);
    u64(&m, LSN_A);
    u64(&m, LSN_B);
    u64(&m, (uint64_t)TS_A);
    u64(&m, (uint64_t)TS_B);
    u32(&m, XID);
    str(&m, "gid-1");
    return m;
}

/* Decodes buf from an exactly-sized heap copy, so ASan sees any read past
 * the end. The copy is returned through *keep (free it) because decoded
 * pointers point into it. */
static bool decode_exact(decode_ctx *ctx, const uint8_t *buf, size_t len, decode_msg *out,
                         decode_error *err, uint8_t **keep)
{
    uint8_t *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    if (len)
        memcpy(copy, buf, len);
    memset(err, 0, sizeof *err);
    bool ok = decode_message(ctx, copy, len, out, err);
    *keep = copy;
    return ok;
}

static void decode_ok(decode_ctx *ctx, const mb *m, decode_msg *out, uint8_t **keep)
{
    decode_error err;
    bool ok = decode_exact(ctx, m->b, m->n, out, &err, keep);
    if (!ok)
        fail_msg("decode failed: %s (offset %zu)", err.msg, err.offset);
}

static void decode_fails(decode_ctx *ctx, const mb *m, const char *needle, size_t offset)
{
    decode_msg out;
    decode_error err;
    uint8_t *keep;
    bool in_stream = ctx->in_stream;
    assert_false(decode_exact(ctx, m->b, m->n, &out, &err, &keep));
    if (strstr(err.msg, needle) == NULL)
        fail_msg("error \"%s\" does not contain \"%s\"", err.msg, needle);
    assert_int_equal(err.offset, offset);
    assert_int_equal(ctx->in_stream, in_stream);
    free(keep);
}

static void assert_col(const decode_col *c, decode_col_kind kind, const char *text)
{
    assert_int_equal(c->kind, kind);
    if (kind == DECODE_COL_NULL || kind == DECODE_COL_UNCHANGED) {
        assert_int_equal(c->len, 0);
        assert_null(c->data);
        return;
    }
    assert_int_equal(c->len, strlen(text));
    assert_memory_equal(c->data, text, c->len);
}

/* ---------------------------------------------------------------------
 * Framing and status updates
 * --------------------------------------------------------------------- */

static void frame_xlogdata(void **state)
{
    const uint8_t buf[] = {
        'w',  0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x20, /* dataStart 1/20 */
        0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x01, 0x00,       /* walEnd 1/100 */
        0x00, 0x02, 0xB1, 0xC3, 0xD4, 0xE5, 0xF6, 0x07,       /* sendTime */
        'E',                                                  /* the message */
    };
    decode_frame f;
    decode_error err;
    assert_true(decode_frame_parse(buf, sizeof buf, &f, &err));
    assert_int_equal(f.kind, DECODE_FRAME_XLOGDATA);
    assert_int_equal(f.wal_start, LSN_A);
    assert_int_equal(f.wal_end, UINT64_C(0x100000100));
    assert_int_equal(f.send_time, TS_A);
    assert_false(f.reply_requested);
    assert_ptr_equal(f.data, buf + 25);
    assert_int_equal(f.len, 1);

    /* An XLogData with an empty payload parses; the message decoder then
     * refuses the empty message. */
    assert_true(decode_frame_parse(buf, 25, &f, &err));
    assert_int_equal(f.len, 0);
    decode_ctx ctx;
    decode_msg m;
    decode_ctx_init(&ctx, 1);
    assert_false(decode_message(&ctx, f.data, f.len, &m, &err));
    assert_non_null(strstr(err.msg, "empty message"));
    decode_ctx_free(&ctx);
}

static void frame_keepalive(void **state)
{
    const uint8_t buf[] = {
        'k',  0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x58, /* walEnd 1/58 */
        0x00, 0x02, 0xB1, 0xC3, 0xD4, 0xE5, 0xF6, 0x07,       /* sendTime */
        0x01,                                                 /* replyRequested */
    };
    decode_frame f;
    decode_error err;
    assert_true(decode_frame_parse(buf, sizeof buf, &f, &err));
    assert_int_equal(f.kind, DECODE_FRAME_KEEPALIVE);
    assert_int_equal(f.wal_end, LSN_B);
    assert_int_equal(f.send_time, TS_A);
    assert_true(f.reply_requested);
    assert_null(f.data);
    assert_int_equal(f.len, 0);

    uint8_t noreply[sizeof buf];
    memcpy(noreply, buf, sizeof buf);
    noreply[17] = 0;
    assert_true(decode_frame_parse(noreply, sizeof noreply, &f, &err));
    assert_false(f.reply_requested);
}

static void frame_errors(void **state)
{
    decode_frame f;
    decode_error err;
    uint8_t w[25] = {'w'};
    uint8_t k[19] = {'k'};

    assert_false(decode_frame_parse(w, 0, &f, &err));
    assert_int_equal(err.offset, 0);
    assert_non_null(strstr(err.msg, "empty CopyData"));

    /* Every prefix of a header is refused, with an offset inside it. */
    for (size_t n = 1; n < sizeof w; n++) {
        uint8_t *p = malloc(n);
        memcpy(p, w, n);
        assert_false(decode_frame_parse(p, n, &f, &err));
        assert_true(err.offset <= n);
        assert_non_null(strstr(err.msg, "truncated XLogData"));
        free(p);
    }
    for (size_t n = 1; n < 18; n++) {
        uint8_t *p = malloc(n);
        memcpy(p, k, n);
        assert_false(decode_frame_parse(p, n, &f, &err));
        assert_true(err.offset <= n);
        assert_non_null(strstr(err.msg, "truncated keepalive"));
        free(p);
    }
    assert_false(decode_frame_parse(w, 10, &f, &err));
    assert_string_equal(err.msg,
                        "truncated XLogData: expected Int64 walEnd at offset 9, 1 byte left");
    assert_int_equal(err.offset, 9);

    /* A keepalive has a fixed size. */
    assert_false(decode_frame_parse(k, 19, &f, &err));
    assert_int_equal(err.offset, 18);
    assert_non_null(strstr(err.msg, "trailing garbage after keepalive"));

    const uint8_t unknown[] = {'r', 0, 0};
    assert_false(decode_frame_parse(unknown, sizeof unknown, &f, &err));
    assert_int_equal(err.offset, 0);
    assert_non_null(strstr(err.msg, "unknown CopyData message type 0x72"));
}

static void status_update_bytes(void **state)
{
    const uint8_t expected[DECODE_STATUS_UPDATE_LEN] = {
        'r',                                            /* */
        0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x20, /* write 1/20 */
        0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x18, /* flush 1/18 */
        0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x10, /* apply 1/10 */
        0x00, 0x02, 0xB1, 0xC3, 0xD4, 0xE5, 0xF6, 0x07, /* sendTime */
        0x01,                                           /* replyRequested */
    };
    uint8_t out[DECODE_STATUS_UPDATE_LEN];
    memset(out, 0xAA, sizeof out);
    assert_int_equal(decode_status_update(out, UINT64_C(0x100000020), UINT64_C(0x100000018),
                                          UINT64_C(0x100000010), TS_A, true),
                     34);
    assert_memory_equal(out, expected, sizeof expected);

    /* Extremes: all-ones LSN, a negative (pre-2000) timestamp, no reply. */
    const uint8_t expected2[DECODE_STATUS_UPDATE_LEN] = {
        'r',  0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, /* write */
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,       /* flush */
        0x12, 0x34, 0x56, 0x78, 0x9A, 0xBC, 0xDE, 0xF0,       /* apply */
        0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFE,       /* sendTime -2 */
        0x00,
    };
    decode_status_update(out, UINT64_MAX, 0, UINT64_C(0x123456789ABCDEF0), -2, false);
    assert_memory_equal(out, expected2, sizeof expected2);
}

/* ---------------------------------------------------------------------
 * Transaction messages
 * --------------------------------------------------------------------- */

static void begin_commit_origin(void **state)
{
    /* Begin, literally. */
    const uint8_t begin[] = {
        'B',  0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x20, /* final_lsn 1/20 */
        0x00, 0x02, 0xB1, 0xC3, 0xD4, 0xE5, 0xF6, 0x07,       /* commit_time */
        0x00, 0x00, 0x02, 0xE6,                               /* xid 742 */
    };
    mb built = m_begin();
    assert_int_equal(built.n, sizeof begin);
    assert_memory_equal(built.b, begin, sizeof begin);

    decode_ctx ctx;
    decode_ctx_init(&ctx, 1);
    decode_msg m;
    decode_error err;
    assert_true(decode_message(&ctx, begin, sizeof begin, &m, &err));
    assert_int_equal(m.kind, DECODE_BEGIN);
    assert_true(m.has_xid);
    assert_int_equal(m.xid, XID);
    assert_int_equal(m.u.begin.final_lsn, LSN_A);
    assert_int_equal(m.u.begin.commit_time, TS_A);

    uint8_t *keep;
    mb c = m_commit();
    assert_int_equal(c.n, 26);
    decode_ok(&ctx, &c, &m, &keep);
    assert_int_equal(m.kind, DECODE_COMMIT);
    assert_false(m.has_xid);
    assert_int_equal(m.u.commit.flags, 0);
    assert_int_equal(m.u.commit.commit_lsn, LSN_A);
    assert_int_equal(m.u.commit.end_lsn, LSN_B);
    assert_int_equal(m.u.commit.commit_time, TS_A);
    free(keep);

    mb o = m_origin();
    decode_ok(&ctx, &o, &m, &keep);
    assert_int_equal(m.kind, DECODE_ORIGIN);
    assert_int_equal(m.u.origin.origin_lsn, LSN_B);
    assert_string_equal(m.u.origin.name, "pg_16390");
    assert_ptr_equal(m.u.origin.name, (const char *)keep + 9);
    free(keep);

    /* A timestamp before 2000 is negative. */
    mb neg = m_begin();
    memset(neg.b + 9, 0xFF, 8);
    decode_ok(&ctx, &neg, &m, &keep);
    assert_int_equal(m.u.begin.commit_time, -1);
    free(keep);
    decode_ctx_free(&ctx);
}

static void relation_and_type(void **state)
{
    decode_ctx ctx;
    decode_ctx_init(&ctx, 1);
    decode_msg m;
    uint8_t *keep;
    mb r = m_relation(false);
    decode_ok(&ctx, &r, &m, &keep);
    assert_int_equal(m.kind, DECODE_RELATION);
    assert_false(m.has_xid);
    const decode_relation *rel = &m.u.relation;
    assert_int_equal(rel->relid, RELID);
    assert_string_equal(rel->nspname, "public");
    assert_string_equal(rel->relname, "items");
    assert_int_equal(rel->replident, 'i');
    assert_int_equal(rel->natts, 3);
    assert_int_equal(rel->attrs[0].flags, DECODE_ATTR_KEY);
    assert_string_equal(rel->attrs[0].name, "id");
    assert_int_equal(rel->attrs[0].type_oid, 23);
    assert_int_equal(rel->attrs[0].typmod, -1);
    assert_int_equal(rel->attrs[1].flags, 0);
    assert_string_equal(rel->attrs[1].name, "note");
    assert_int_equal(rel->attrs[1].type_oid, 25);
    assert_string_equal(rel->attrs[2].name, "price");
    assert_int_equal(rel->attrs[2].type_oid, 1700);
    assert_int_equal(rel->attrs[2].typmod, 655366);

    /* A deep copy survives the buffer and the scratch. */
    decode_relation *copy = decode_relation_copy(rel);
    assert_non_null(copy);
    memset(keep, 0, r.n);
    free(keep);
    mb other = m_relation(false);
    other.b[5] = 'X'; /* "Xublic" */
    decode_ok(&ctx, &other, &m, &keep);
    free(keep);
    assert_string_equal(copy->nspname, "public");
    assert_string_equal(copy->relname, "items");
    assert_int_equal(copy->natts, 3);
    assert_string_equal(copy->attrs[1].name, "note");
    assert_string_equal(copy->attrs[2].name, "price");
    assert_int_equal(copy->attrs[2].typmod, 655366);
    assert_int_equal(copy->replident, 'i');
    decode_relation_free(copy);

    /* A relation without columns, in pg_catalog (empty namespace). */
    mb empty = {.n = 0};
    u8(&empty, 'R');
    u32(&empty, 99);
    str(&empty, "");
    str(&empty, "t0");
    u8(&empty, 'n');
    u16(&empty, 0);
    decode_ok(&ctx, &empty, &m, &keep);
    assert_string_equal(m.u.relation.nspname, "");
    assert_int_equal(m.u.relation.natts, 0);
    assert_null(m.u.relation.attrs);
    copy = decode_relation_copy(&m.u.relation);
    assert_non_null(copy);
    assert_null(copy->attrs);
    assert_string_equal(copy->relname, "t0");
    decode_relation_free(copy);
    free(keep);

    mb t = m_type(false);
    decode_ok(&ctx, &t, &m, &keep);
    assert_int_equal(m.kind, DECODE_TYPE);
    assert_int_equal(m.u.type.oid, 16400);
    assert_string_equal(m.u.type.nspname, "public");
    assert_string_equal(m.u.type.typname, "mood");
    free(keep);
    decode_ctx_free(&ctx);
}

/* ---------------------------------------------------------------------
 * Changes
 * --------------------------------------------------------------------- */

static void insert_all_column_kinds(void **state)
{
    decode_ctx ctx;
    decode_ctx_init(&ctx, 1);
    decode_msg m;
    uint8_t *keep;
    mb ins = m_insert(false);
    decode_ok(&ctx, &ins, &m, &keep);
    assert_int_equal(m.kind, DECODE_INSERT);
    assert_false(m.has_xid);
    assert_int_equal(m.u.insert.relid, RELID);
    const decode_tuple *t = &m.u.insert.newtup;
    assert_int_equal(t->ncols, 4);
    assert_col(&t->cols[0], DECODE_COL_TEXT, "42");
    assert_ptr_equal(t->cols[0].data, keep + 13);
    assert_col(&t->cols[1], DECODE_COL_NULL, NULL);
    assert_col(&t->cols[2], DECODE_COL_UNCHANGED, NULL);
    assert_int_equal(t->cols[3].kind, DECODE_COL_BINARY);
    assert_int_equal(t->cols[3].len, 4);
    assert_memory_equal(t->cols[3].data, "\x00\x00\x00\x2a", 4);
    assert_true(DECODE_COL_NULL != DECODE_COL_UNCHANGED);
    free(keep);

    /* An empty tuple. */
    mb e = {.n = 0};
    u8(&e, 'I');
    u32(&e, RELID);
    u8(&e, 'N');
    u16(&e, 0);
    decode_ok(&ctx, &e, &m, &keep);
    assert_int_equal(m.u.insert.newtup.ncols, 0);
    assert_null(m.u.insert.newtup.cols);
    free(keep);
    decode_ctx_free(&ctx);
}

static void update_variants(void **state)
{
    decode_ctx ctx;
    decode_ctx_init(&ctx, 1);
    decode_msg m;
    uint8_t *keep;

    mb plain = m_update(false, 0);
    decode_ok(&ctx, &plain, &m, &keep);
    assert_int_equal(m.kind, DECODE_UPDATE);
    assert_int_equal(m.u.update.relid, RELID);
    assert_int_equal(m.u.update.old_kind, 0);
    assert_int_equal(m.u.update.oldtup.ncols, 0);
    assert_int_equal(m.u.update.newtup.ncols, 3);
    assert_col(&m.u.update.newtup.cols[0], DECODE_COL_TEXT, "8");
    assert_col(&m.u.update.newtup.cols[1], DECODE_COL_UNCHANGED, NULL);
    assert_col(&m.u.update.newtup.cols[2], DECODE_COL_TEXT, "");
    assert_non_null(m.u.update.newtup.cols[2].data);
    free(keep);

    mb key = m_update(false, 'K');
    decode_ok(&ctx, &key, &m, &keep);
    assert_int_equal(m.u.update.old_kind, 'K');
    assert_int_equal(m.u.update.oldtup.ncols, 2);
    assert_col(&m.u.update.oldtup.cols[0], DECODE_COL_TEXT, "7");
    assert_col(&m.u.update.oldtup.cols[1], DECODE_COL_NULL, NULL);
    assert_int_equal(m.u.update.newtup.ncols, 3);
    assert_col(&m.u.update.newtup.cols[0], DECODE_COL_TEXT, "8");
    free(keep);

    mb full = m_update(false, 'O');
    decode_ok(&ctx, &full, &m, &keep);
    assert_int_equal(m.u.update.old_kind, 'O');
    assert_int_equal(m.u.update.oldtup.ncols, 3);
    assert_col(&m.u.update.oldtup.cols[1], DECODE_COL_TEXT, "old note");
    assert_col(&m.u.update.oldtup.cols[2], DECODE_COL_NULL, NULL);
    assert_col(&m.u.update.newtup.cols[0], DECODE_COL_TEXT, "8");
    assert_col(&m.u.update.newtup.cols[1], DECODE_COL_UNCHANGED, NULL);
    free(keep);
    decode_ctx_free(&ctx);
}

/* Empty old and new tuples on a fresh context (found by the fuzzer: no
 * pointer arithmetic on the still-NULL scratch). */
static void update_empty_tuples(void **state)
{
    decode_ctx ctx;
    decode_ctx_init(&ctx, 1);
    mb u = {.n = 0};
    u8(&u, 'U');
    u32(&u, RELID);
    u8(&u, 'K');
    u16(&u, 0);
    u8(&u, 'N');
    u16(&u, 0);
    decode_msg m;
    uint8_t *keep;
    decode_ok(&ctx, &u, &m, &keep);
    assert_int_equal(m.u.update.old_kind, 'K');
    assert_int_equal(m.u.update.oldtup.ncols, 0);
    assert_null(m.u.update.oldtup.cols);
    assert_int_equal(m.u.update.newtup.ncols, 0);
    assert_null(m.u.update.newtup.cols);
    free(keep);
    decode_ctx_free(&ctx);
}

/* The new tuple grows the scratch past its first size: the old tuple's
 * columns must still be valid afterwards (ASan would see a stale pointer). */
static void update_scratch_growth(void **state)
{
    decode_ctx ctx;
    decode_ctx_init(&ctx, 2);
    mb u = {.n = 0};
    u8(&u, 'U');
    u32(&u, RELID);
    u8(&u, 'O');
    u16(&u, 10);
    for (int i = 0; i < 10; i++)
        col_text(&u, "o");
    u8(&u, 'N');
    u16(&u, 300);
    for (int i = 0; i < 300; i++)
        col_text(&u, "n");
    decode_msg m;
    uint8_t *keep;
    decode_ok(&ctx, &u, &m, &keep);
    assert_true(ctx.cols_cap >= 310);
    assert_int_equal(m.u.update.oldtup.ncols, 10);
    assert_int_equal(m.u.update.newtup.ncols, 300);
    for (int i = 0; i < 10; i++)
        assert_col(&m.u.update.oldtup.cols[i], DECODE_COL_TEXT, "o");
    for (int i = 0; i < 300; i++)
        assert_col(&m.u.update.newtup.cols[i], DECODE_COL_TEXT, "n");
    assert_ptr_equal(m.u.update.newtup.cols, m.u.update.oldtup.cols + 10);

    /* Once warm, the same message needs no new memory. */
    decode_col *scratch = ctx.cols_scratch;
    size_t cap = ctx.cols_cap;
    decode_msg m2;
    uint8_t *keep2;
    decode_ok(&ctx, &u, &m2, &keep2);
    assert_ptr_equal(ctx.cols_scratch, scratch);
    assert_int_equal(ctx.cols_cap, cap);
    free(keep);
    free(keep2);
    decode_ctx_free(&ctx);
    assert_null(ctx.cols_scratch);
    assert_int_equal(ctx.proto_version, 2);
}

static void delete_variants(void **state)
{
    decode_ctx ctx;
    decode_ctx_init(&ctx, 1);
    decode_msg m;
    uint8_t *keep;
    mb k = m_delete(false, 'K');
    decode_ok(&ctx, &k, &m, &keep);
    assert_int_equal(m.kind, DECODE_DELETE);
    assert_int_equal(m.u.delete_.relid, RELID);
    assert_int_equal(m.u.delete_.old_kind, 'K');
    assert_int_equal(m.u.delete_.oldtup.ncols, 2);
    assert_col(&m.u.delete_.oldtup.cols[0], DECODE_COL_TEXT, "9");
    assert_col(&m.u.delete_.oldtup.cols[1], DECODE_COL_NULL, NULL);
    free(keep);
    mb o = m_delete(false, 'O');
    decode_ok(&ctx, &o, &m, &keep);
    assert_int_equal(m.u.delete_.old_kind, 'O');
    free(keep);
    decode_ctx_free(&ctx);
}

static void truncate_msg(void **state)
{
    decode_ctx ctx;
    decode_ctx_init(&ctx, 1);
    decode_msg m;
    uint8_t *keep;
    mb t = m_truncate(false);
    decode_ok(&ctx, &t, &m, &keep);
    assert_int_equal(m.kind, DECODE_TRUNCATE);
    assert_int_equal(m.u.truncate.nrels, 2);
    assert_int_equal(m.u.truncate.flags, 3);
    assert_int_equal(m.u.truncate.relids[0], RELID);
    assert_int_equal(m.u.truncate.relids[1], RELID + 5);
    free(keep);

    mb z = {.n = 0};
    u8(&z, 'T');
    u32(&z, 0);
    u8(&z, 0);
    decode_ok(&ctx, &z, &m, &keep);
    assert_int_equal(m.u.truncate.nrels, 0);
    assert_null(m.u.truncate.relids);
    free(keep);
    decode_ctx_free(&ctx);
}

static void logical_message(void **state)
{
    decode_ctx ctx;
    decode_ctx_init(&ctx, 1);
    decode_msg m;
    uint8_t *keep;
    mb tx = m_message(false, true);
    decode_ok(&ctx, &tx, &m, &keep);
    assert_int_equal(m.kind, DECODE_MESSAGE);
    assert_false(m.has_xid);
    assert_int_equal(m.u.message.flags, DECODE_MESSAGE_TRANSACTIONAL);
    assert_int_equal(m.u.message.lsn, LSN_B);
    assert_string_equal(m.u.message.prefix, "pgshift");
    assert_int_equal(m.u.message.len, 5);
    assert_memory_equal(m.u.message.content, "a\0b\0c", 5);
    free(keep);
    mb nt = m_message(false, false);
    decode_ok(&ctx, &nt, &m, &keep);
    assert_int_equal(m.u.message.flags, 0);
    free(keep);
    decode_ctx_free(&ctx);
}

/* ---------------------------------------------------------------------
 * Streaming (v2) and two-phase (v3)
 * --------------------------------------------------------------------- */

static void stream_block(void **state)
{
    decode_ctx ctx;
    decode_ctx_init(&ctx, 2);
    decode_msg m;
    uint8_t *keep;

    mb s = m_stream_start();
    decode_ok(&ctx, &s, &m, &keep);
    free(keep);
    assert_int_equal(m.kind, DECODE_STREAM_START);
    assert_true(m.has_xid);
    assert_int_equal(m.xid, XID);
    assert_true(m.u.stream_start.first_segment);
    assert_true(ctx.in_stream);

    /* Inside the block, changes carry the xid first. */
    mb r = m_relation(true);
    decode_ok(&ctx, &r, &m, &keep);
    assert_true(m.has_xid);
    assert_int_equal(m.xid, XID);
    assert_int_equal(m.u.relation.relid, RELID);
    assert_int_equal(m.u.relation.natts, 3);
    assert_string_equal(m.u.relation.attrs[2].name, "price");
    free(keep);

    mb y = m_type(true);
    decode_ok(&ctx, &y, &m, &keep);
    assert_int_equal(m.xid, XID);
    assert_string_equal(m.u.type.typname, "mood");
    free(keep);

    mb i = m_insert(true);
    decode_ok(&ctx, &i, &m, &keep);
    assert_int_equal(m.xid, XID);
    assert_int_equal(m.u.insert.relid, RELID);
    assert_col(&m.u.insert.newtup.cols[0], DECODE_COL_TEXT, "42");
    free(keep);

    mb u = m_update(true, 'K');
    decode_ok(&ctx, &u, &m, &keep);
    assert_int_equal(m.xid, XID);
    assert_int_equal(m.u.update.relid, RELID);
    assert_int_equal(m.u.update.old_kind, 'K');
    free(keep);

    mb d = m_delete(true, 'O');
    decode_ok(&ctx, &d, &m, &keep);
    assert_int_equal(m.xid, XID);
    assert_int_equal(m.u.delete_.relid, RELID);
    free(keep);

    mb t = m_truncate(true);
    decode_ok(&ctx, &t, &m, &keep);
    assert_int_equal(m.xid, XID);
    assert_int_equal(m.u.truncate.nrels, 2);
    free(keep);

    mb msg = m_message(true, true);
    decode_ok(&ctx, &msg, &m, &keep);
    assert_int_equal(m.xid, XID);
    assert_string_equal(m.u.message.prefix, "pgshift");
    free(keep);

    /* An Origin inside a stream block carries no xid. */
    mb o = m_origin();
    decode_ok(&ctx, &o, &m, &keep);
    assert_false(m.has_xid);
    free(keep);

    /* Out of place inside a block. */
    mb b = m_begin(), c = m_commit(), sc = m_stream_commit(), sa = m_stream_abort();
    decode_fails(&ctx, &b, "Begin message inside a stream block", 0);
    decode_fails(&ctx, &c, "Commit message inside a stream block", 0);
    decode_fails(&ctx, &s, "Stream Start message inside a stream block", 0);
    decode_fails(&ctx, &sc, "Stream Commit message inside a stream block", 0);
    decode_fails(&ctx, &sa, "Stream Abort message inside a stream block", 0);

    mb e = m_stream_stop();
    decode_ok(&ctx, &e, &m, &keep);
    free(keep);
    assert_int_equal(m.kind, DECODE_STREAM_STOP);
    assert_false(m.has_xid);
    assert_false(ctx.in_stream);
    decode_fails(&ctx, &e, "Stream Stop message outside a stream block", 0);

    /* Outside again: no xid prefix (the in-stream form is now refused as
     * trailing garbage or a bad marker). */
    decode_fails(&ctx, &i, "bad Insert: tuple marker", 5);
    mb plain = m_insert(false);
    decode_ok(&ctx, &plain, &m, &keep);
    free(keep);
    assert_false(m.has_xid);

    decode_ok(&ctx, &sc, &m, &keep);
    free(keep);
    assert_int_equal(m.kind, DECODE_STREAM_COMMIT);
    assert_int_equal(m.xid, XID);
    assert_int_equal(m.u.stream_commit.flags, 0);
    assert_int_equal(m.u.stream_commit.commit_lsn, LSN_A);
    assert_int_equal(m.u.stream_commit.end_lsn, LSN_B);
    assert_int_equal(m.u.stream_commit.commit_time, TS_A);

    decode_ok(&ctx, &sa, &m, &keep);
    free(keep);
    assert_int_equal(m.kind, DECODE_STREAM_ABORT);
    assert_int_equal(m.xid, XID);
    assert_int_equal(m.u.stream_abort.subxid, SUBXID);

    /* A later segment. */
    s.b[5] = 0;
    decode_ok(&ctx, &s, &m, &keep);
    free(keep);
    assert_false(m.u.stream_start.first_segment);
    assert_true(ctx.in_stream);

    /* A truncated Stream Start leaves the state alone. */
    decode_ctx_free(&ctx);
    decode_ctx_init(&ctx, 2);
    mb half = m_stream_start();
    half.n = 5;
    decode_fails(&ctx, &half, "truncated Stream Start: expected Int8 first_segment", 5);
    assert_false(ctx.in_stream);
    decode_ctx_free(&ctx);
}

static void two_phase(void **state)
{
    decode_ctx ctx;
    decode_ctx_init(&ctx, 3);
    decode_msg m;
    uint8_t *keep;

    mb bp = m_begin_prepare();
    decode_ok(&ctx, &bp, &m, &keep);
    assert_int_equal(m.kind, DECODE_BEGIN_PREPARE);
    assert_true(m.has_xid);
    assert_int_equal(m.xid, XID);
    assert_int_equal(m.u.twophase.flags, 0);
    assert_int_equal(m.u.twophase.lsn, LSN_A);
    assert_int_equal(m.u.twophase.end_lsn, LSN_B);
    assert_int_equal(m.u.twophase.time, TS_A);
    assert_int_equal(m.u.twophase.time2, 0);
    assert_string_equal(m.u.twophase.gid, "gid-1");
    free(keep);

    const uint8_t kinds[] = {DECODE_PREPARE, DECODE_COMMIT_PREPARED, DECODE_STREAM_PREPARE};
    for (size_t k = 0; k < sizeof kinds; k++) {
        mb p = m_prepare_like(kinds[k]);
        decode_ok(&ctx, &p, &m, &keep);
        assert_int_equal(m.kind, kinds[k]);
        assert_true(m.has_xid);
        assert_int_equal(m.xid, XID);
        assert_int_equal(m.u.twophase.lsn, LSN_A);
        assert_int_equal(m.u.twophase.end_lsn, LSN_B);
        assert_int_equal(m.u.twophase.time, TS_A);
        assert_string_equal(m.u.twophase.gid, "gid-1");
        free(keep);
    }

    mb rp = m_rollback_prepared();
    decode_ok(&ctx, &rp, &m, &keep);
    assert_int_equal(m.kind, DECODE_ROLLBACK_PREPARED);
    assert_int_equal(m.xid, XID);
    assert_int_equal(m.u.twophase.lsn, LSN_A);
    assert_int_equal(m.u.twophase.end_lsn, LSN_B);
    assert_int_equal(m.u.twophase.time, TS_A);
    assert_int_equal(m.u.twophase.time2, TS_B);
    assert_string_equal(m.u.twophase.gid, "gid-1");
    free(keep);

    /* A gid without its NUL. */
    mb nonul = m_begin_prepare();
    nonul.n--;
    decode_fails(&ctx, &nonul, "expected String gid at offset 29, no NUL terminator", 29);
    decode_ctx_free(&ctx);
}

static void proto_version_gates(void **state)
{
    decode_ctx ctx;
    struct {
        mb m;
        const char *err;
    } v2[] = {
        {m_stream_start(), "Stream Start message needs proto_version >= 2"},
        {m_stream_stop(), "Stream Stop message needs proto_version >= 2"},
        {m_stream_commit(), "Stream Commit message needs proto_version >= 2"},
        {m_stream_abort(), "Stream Abort message needs proto_version >= 2"},
    };
    struct {
        mb m;
        const char *err;
    } v3[] = {
        {m_begin_prepare(), "Begin Prepare message needs proto_version >= 3"},
        {m_prepare_like('P'), "Prepare message needs proto_version >= 3"},
        {m_prepare_like('K'), "Commit Prepared message needs proto_version >= 3"},
        {m_rollback_prepared(), "Rollback Prepared message needs proto_version >= 3"},
        {m_prepare_like('p'), "Stream Prepare message needs proto_version >= 3"},
    };
    decode_ctx_init(&ctx, 1);
    for (size_t i = 0; i < sizeof v2 / sizeof v2[0]; i++)
        decode_fails(&ctx, &v2[i].m, v2[i].err, 0);
    for (size_t i = 0; i < sizeof v3 / sizeof v3[0]; i++)
        decode_fails(&ctx, &v3[i].m, v3[i].err, 0);
    decode_ctx_init(&ctx, 2);
    for (size_t i = 0; i < sizeof v3 / sizeof v3[0]; i++)
        decode_fails(&ctx, &v3[i].m, v3[i].err, 0);
    decode_ctx_free(&ctx);

    mb b = m_begin();
    decode_ctx_init(&ctx, 0);
    decode_fails(&ctx, &b, "proto_version 0 is not supported", 0);
    decode_ctx_init(&ctx, 5);
    decode_fails(&ctx, &b, "proto_version 5 is not supported", 0);
}

/* Version 4's Stream Abort carries the abort LSN and time when the
 * subscriber asked for streaming = parallel; without them it is version 2's. */
static void stream_abort_v4(void **state)
{
    (void)state;
    decode_ctx ctx;
    decode_msg m;
    uint8_t *keep = NULL;
    decode_ctx_init(&ctx, 4);
    mb a = m_stream_abort();
    decode_ok(&ctx, &a, &m, &keep);
    free(keep);
    assert_int_equal(m.u.stream_abort.subxid, SUBXID);
    assert_false(m.u.stream_abort.has_abort_info);
    u64(&a, UINT64_C(0x16B3748));
    u64(&a, 12345);
    decode_ok(&ctx, &a, &m, &keep);
    free(keep);
    assert_true(m.u.stream_abort.has_abort_info);
    assert_int_equal(m.u.stream_abort.abort_lsn, UINT64_C(0x16B3748));
    assert_int_equal(m.u.stream_abort.abort_time, 12345);
    /* Under version 2 the same bytes are a message with trailing garbage. */
    decode_ctx_init(&ctx, 2);
    decode_fails(&ctx, &a, "", 9);
    decode_ctx_free(&ctx);
}

/* ---------------------------------------------------------------------
 * Malformed input
 * --------------------------------------------------------------------- */

typedef struct vector {
    const char *name;
    int proto_version;
    bool in_stream;
    mb m;
} vector;

/* One valid message of every kind, in every stream state it can appear. */
static size_t all_vectors(vector *v)
{
    size_t n = 0;
#define V(nm, pv, st, expr) v[n++] = (vector){nm, pv, st, expr}
    V("begin", 1, false, m_begin());
    V("commit", 1, false, m_commit());
    V("origin", 1, false, m_origin());
    V("relation", 1, false, m_relation(false));
    V("type", 1, false, m_type(false));
    V("insert", 1, false, m_insert(false));
    V("update", 1, false, m_update(false, 0));
    V("update K", 1, false, m_update(false, 'K'));
    V("update O", 1, false, m_update(false, 'O'));
    V("delete K", 1, false, m_delete(false, 'K'));
    V("delete O", 1, false, m_delete(false, 'O'));
    V("truncate", 1, false, m_truncate(false));
    V("message", 1, false, m_message(false, true));
    V("stream start", 2, false, m_stream_start());
    V("stream stop", 2, true, m_stream_stop());
    V("stream commit", 2, false, m_stream_commit());
    V("stream abort", 2, false, m_stream_abort());
    V("origin in stream", 2, true, m_origin());
    V("relation in stream", 2, true, m_relation(true));
    V("type in stream", 2, true, m_type(true));
    V("insert in stream", 2, true, m_insert(true));
    V("update in stream", 2, true, m_update(true, 0));
    V("update K in stream", 2, true, m_update(true, 'K'));
    V("update O in stream", 2, true, m_update(true, 'O'));
    V("delete in stream", 2, true, m_delete(true, 'K'));
    V("truncate in stream", 2, true, m_truncate(true));
    V("message in stream", 3, true, m_message(true, false));
    V("begin prepare", 3, false, m_begin_prepare());
    V("prepare", 3, false, m_prepare_like('P'));
    V("commit prepared", 3, false, m_prepare_like('K'));
    V("rollback prepared", 3, false, m_rollback_prepared());
    V("stream prepare", 3, false, m_prepare_like('p'));
#undef V
    return n;
}

/* Every prefix of every valid message fails cleanly with an offset inside
 * the prefix; the whole message decodes; one more byte is trailing garbage. */
static void every_prefix_truncated(void **state)
{
    static vector v[64];
    size_t nv = all_vectors(v);
    for (size_t i = 0; i < nv; i++) {
        decode_ctx ctx;
        decode_ctx_init(&ctx, v[i].proto_version);
        for (size_t len = 0; len < v[i].m.n; len++) {
            decode_msg m;
            decode_error err;
            uint8_t *keep;
            ctx.in_stream = v[i].in_stream;
            if (decode_exact(&ctx, v[i].m.b, len, &m, &err, &keep))
                fail_msg("%s: prefix of %zu bytes decoded", v[i].name, len);
            free(keep);
            if (err.offset > len || err.msg[0] == '\0')
                fail_msg("%s: prefix %zu: offset %zu, \"%s\"", v[i].name, len, err.offset, err.msg);
            if (len > 0 && strstr(err.msg, "truncated ") != err.msg)
                fail_msg("%s: prefix %zu: \"%s\"", v[i].name, len, err.msg);
            assert_int_equal(ctx.in_stream, v[i].in_stream);
        }
        decode_msg m;
        decode_error err;
        uint8_t *keep;
        ctx.in_stream = v[i].in_stream;
        if (!decode_exact(&ctx, v[i].m.b, v[i].m.n, &m, &err, &keep))
            fail_msg("%s: %s", v[i].name, err.msg);
        free(keep);

        mb longer = v[i].m;
        u8(&longer, 0);
        ctx.in_stream = v[i].in_stream;
        assert_false(decode_exact(&ctx, longer.b, longer.n, &m, &err, &keep));
        free(keep);
        assert_int_equal(err.offset, v[i].m.n);
        if (strstr(err.msg, "trailing garbage after ") == NULL)
            fail_msg("%s: %s", v[i].name, err.msg);
        decode_ctx_free(&ctx);
    }
}

static void exact_error_texts(void **state)
{
    decode_ctx ctx;
    decode_ctx_init(&ctx, 1);
    mb ins = m_insert(false);
    ins.n = 3;
    decode_fails(&ctx, &ins, "truncated Insert: expected Int32 relid at offset 1, 2 bytes left", 1);

    decode_msg m;
    decode_error err;
    mb full = m_insert(false);
    full.n = 14; /* inside the first column's data ("42" at 13..14) */
    assert_false(decode_message(&ctx, full.b, full.n, &m, &err));
    assert_string_equal(err.msg, "truncated Insert: column 1 of new TupleData needs 2 bytes at "
                                 "offset 13, 1 byte left");
    assert_int_equal(err.offset, 13);

    full.n = 11; /* 3 bytes cannot hold 4 columns */
    assert_false(decode_message(&ctx, full.b, full.n, &m, &err));
    assert_string_equal(err.msg, "truncated Insert: new TupleData has 4 columns but only 3 bytes "
                                 "left at offset 8");

    mb one = {.n = 0};
    u8(&one, 'I');
    u32(&one, 1);
    u8(&one, 'N');
    u16(&one, 1);
    u8(&one, 't');
    u16(&one, 0);
    assert_false(decode_message(&ctx, one.b, one.n, &m, &err));
    assert_string_equal(err.msg, "truncated Insert: expected Int32 length of column 1 of new "
                                 "TupleData at offset 9, 2 bytes left");
    assert_int_equal(err.offset, 9);

    /* Attributes start at 21; 6 bytes cannot hold 3 of them. */
    mb rel = m_relation(false);
    assert_false(decode_message(&ctx, rel.b, 27, &m, &err));
    assert_int_equal(err.offset, 21);
    assert_non_null(strstr(err.msg, "3 attributes need at least 30 bytes"));

    mb u = m_update(false, 'K');
    u.n = 6;
    decode_fails(&ctx, &u,
                 "truncated Update: expected Int16 column count of old key TupleData "
                 "at offset 6, 0 bytes left",
                 6);

    mb empty = {.n = 0};
    decode_fails(&ctx, &empty, "empty message", 0);
    decode_ctx_free(&ctx);
}

static void bad_column_kinds(void **state)
{
    decode_ctx ctx;
    decode_ctx_init(&ctx, 1);
    const uint8_t bad[] = {0, 'x', 'N', 'T', 0xFF, 'B'};
    for (size_t i = 0; i < sizeof bad; i++) {
        mb m = m_insert(false);
        m.b[15] = bad[i]; /* the second column's kind (after "42") */
        decode_fails(&ctx, &m, "unknown kind", 15);
        decode_fails(&ctx, &m, "of column 2 of new TupleData", 15);
    }
    mb d = m_delete(false, 'K');
    d.b[8] = 'q'; /* first column of the old key */
    decode_fails(&ctx, &d, "bad Delete: unknown kind 0x71 of column 1 of old key TupleData", 8);
    decode_ctx_free(&ctx);
}

static void bad_tuple_markers(void **state)
{
    decode_ctx ctx;
    decode_ctx_init(&ctx, 1);
    mb ins = m_insert(false);
    const uint8_t not_n[] = {'K', 'O', 'n', 0, 'X'};
    for (size_t i = 0; i < sizeof not_n; i++) {
        ins.b[5] = not_n[i];
        decode_fails(&ctx, &ins, "bad Insert: tuple marker", 5);
        decode_fails(&ctx, &ins, "expected 'N'", 5);
    }
    mb u = m_update(false, 0);
    u.b[5] = 'X';
    decode_fails(&ctx, &u, "expected 'K', 'O' or 'N'", 5);
    mb uk = m_update(false, 'K');
    size_t second = 5 + 1 + 2 + 6 + 1; /* K, ncols, "7", n */
    assert_int_equal(uk.b[second], 'N');
    uk.b[second] = 'K';
    decode_fails(&ctx, &uk, "expected 'N' after the old tuple", second);
    mb d = m_delete(false, 'K');
    d.b[5] = 'N';
    decode_fails(&ctx, &d, "bad Delete: tuple marker 0x4e at offset 5, expected 'K' or 'O'", 5);
    decode_ctx_free(&ctx);
}

static void strings_without_nul(void **state)
{
    decode_ctx ctx;
    decode_ctx_init(&ctx, 1);
    mb o = {.n = 0};
    u8(&o, 'O');
    u64(&o, 1);
    bytes(&o, "abc", 3);
    decode_fails(&ctx, &o,
                 "truncated Origin: expected String origin name at offset 9, no NUL "
                 "terminator in the 3 bytes left",
                 9);
    mb r = {.n = 0};
    u8(&r, 'R');
    u32(&r, 1);
    bytes(&r, "public", 6);
    decode_fails(&ctx, &r, "expected String namespace at offset 5, no NUL", 5);
    mb a = {.n = 0};
    u8(&a, 'R');
    u32(&a, 1);
    str(&a, "s");
    str(&a, "t");
    u8(&a, 'd');
    u16(&a, 1);
    u8(&a, 0);
    bytes(&a, "abcdefghijkl", 12);
    decode_fails(&ctx, &a,
                 "truncated Relation: expected String name of attribute 1 at offset 13, no NUL "
                 "terminator in the 12 bytes left",
                 13);
    mb msg = {.n = 0};
    u8(&msg, 'M');
    u8(&msg, 1);
    u64(&msg, 1);
    bytes(&msg, "pfx", 3);
    decode_fails(&ctx, &msg, "expected String prefix at offset 10, no NUL", 10);
    decode_ctx_free(&ctx);
}

static void impossible_counts(void **state)
{
    decode_ctx ctx;
    decode_ctx_init(&ctx, 1);
    /* 65535 columns claimed in 10 bytes: refused before any allocation. */
    mb i = {.n = 0};
    u8(&i, 'I');
    u32(&i, 1);
    u8(&i, 'N');
    u16(&i, 0xFFFF);
    u8(&i, 'n');
    decode_fails(&ctx, &i, "new TupleData has 65535 columns but only 1 byte left", 8);
    assert_null(ctx.cols_scratch);

    mb t = {.n = 0};
    u8(&t, 'T');
    u32(&t, 0xFFFFFFFFu);
    u8(&t, 0);
    u32(&t, 5);
    decode_fails(&ctx, &t, "expected 4294967295 Int32 relids at offset 6, 4 bytes left", 6);
    assert_null(ctx.relids_scratch);

    mb r = {.n = 0};
    u8(&r, 'R');
    u32(&r, 1);
    str(&r, "s");
    str(&r, "t");
    u8(&r, 'd');
    u16(&r, 0xFFFF);
    decode_fails(&ctx, &r, "65535 attributes need at least", 12);
    assert_null(ctx.attrs_scratch);

    /* A column length far past the end. */
    mb c = {.n = 0};
    u8(&c, 'I');
    u32(&c, 1);
    u8(&c, 'N');
    u16(&c, 1);
    u8(&c, 'b');
    u32(&c, 0xFFFFFFFFu);
    decode_fails(&ctx, &c, "column 1 of new TupleData needs 4294967295 bytes at offset 13", 13);

    mb m = m_message(false, true);
    m.b[m.n - 9] = 0x7F; /* content length high byte */
    decode_fails(&ctx, &m, "content bytes at offset", m.n - 5);
    decode_ctx_free(&ctx);
}

static void unknown_messages(void **state)
{
    decode_ctx ctx;
    decode_ctx_init(&ctx, 3);
    mb x = {.n = 0};
    u8(&x, 'Z');
    decode_fails(&ctx, &x, "unknown message type 'Z' (0x5a) at offset 0", 0);
    x.b[0] = 0;
    decode_fails(&ctx, &x, "unknown message type 0x00 at offset 0", 0);
    x.b[0] = 'w'; /* a frame byte is not a message */
    decode_fails(&ctx, &x, "unknown message type 'w'", 0);
    decode_ctx_free(&ctx);
}

static void kind_names(void **state)
{
    assert_string_equal(decode_kind_name(DECODE_BEGIN), "Begin");
    assert_string_equal(decode_kind_name(DECODE_COMMIT), "Commit");
    assert_string_equal(decode_kind_name(DECODE_ORIGIN), "Origin");
    assert_string_equal(decode_kind_name(DECODE_RELATION), "Relation");
    assert_string_equal(decode_kind_name(DECODE_TYPE), "Type");
    assert_string_equal(decode_kind_name(DECODE_INSERT), "Insert");
    assert_string_equal(decode_kind_name(DECODE_UPDATE), "Update");
    assert_string_equal(decode_kind_name(DECODE_DELETE), "Delete");
    assert_string_equal(decode_kind_name(DECODE_TRUNCATE), "Truncate");
    assert_string_equal(decode_kind_name(DECODE_MESSAGE), "Message");
    assert_string_equal(decode_kind_name(DECODE_STREAM_START), "Stream Start");
    assert_string_equal(decode_kind_name(DECODE_STREAM_STOP), "Stream Stop");
    assert_string_equal(decode_kind_name(DECODE_STREAM_COMMIT), "Stream Commit");
    assert_string_equal(decode_kind_name(DECODE_STREAM_ABORT), "Stream Abort");
    assert_string_equal(decode_kind_name(DECODE_BEGIN_PREPARE), "Begin Prepare");
    assert_string_equal(decode_kind_name(DECODE_PREPARE), "Prepare");
    assert_string_equal(decode_kind_name(DECODE_COMMIT_PREPARED), "Commit Prepared");
    assert_string_equal(decode_kind_name(DECODE_ROLLBACK_PREPARED), "Rollback Prepared");
    assert_string_equal(decode_kind_name(DECODE_STREAM_PREPARE), "Stream Prepare");
    assert_string_equal(decode_kind_name((decode_kind)'Z'), "unknown");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(frame_xlogdata),
        cmocka_unit_test(frame_keepalive),
        cmocka_unit_test(frame_errors),
        cmocka_unit_test(status_update_bytes),
        cmocka_unit_test(begin_commit_origin),
        cmocka_unit_test(relation_and_type),
        cmocka_unit_test(insert_all_column_kinds),
        cmocka_unit_test(update_variants),
        cmocka_unit_test(update_empty_tuples),
        cmocka_unit_test(update_scratch_growth),
        cmocka_unit_test(delete_variants),
        cmocka_unit_test(truncate_msg),
        cmocka_unit_test(logical_message),
        cmocka_unit_test(stream_block),
        cmocka_unit_test(two_phase),
        cmocka_unit_test(proto_version_gates),
        cmocka_unit_test(stream_abort_v4),
        cmocka_unit_test(every_prefix_truncated),
        cmocka_unit_test(exact_error_texts),
        cmocka_unit_test(bad_column_kinds),
        cmocka_unit_test(bad_tuple_markers),
        cmocka_unit_test(strings_without_nul),
        cmocka_unit_test(impossible_counts),
        cmocka_unit_test(unknown_messages),
        cmocka_unit_test(kind_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
