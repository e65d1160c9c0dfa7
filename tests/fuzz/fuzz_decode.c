/* fuzz_decode.c: libFuzzer target for the pgoutput decoder and the framing.
 *
 * Input layout (see README.md):
 *   byte 0  mode: bits 0-1 pick proto_version (1 + bits); bit 2 means
 *           every piece is a CopyData payload ('w'/'k' frame) rather than a
 *           bare pgoutput message; bit 3 starts the context inside a stream
 *           block (as if a Stream Start had been seen).
 *   rest    one or more pieces separated by the 4 bytes "\xF0|~|"; each piece
 *           is decoded in turn on the same context (stream state and scratch
 *           carry over), then the whole rest is decoded once more as one
 *           message on that context.
 * Every byte the decoder hands back is read so ASan sees any pointer that
 * leaves the input or the scratch.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pgshift/decode.h"

/* The decoder is compiled into this file rather than taken from the
 * pgshift_decode archive: CMake builds that library without
 * -fsanitize=fuzzer-no-link, and libFuzzer is blind to code without
 * coverage instrumentation (76 edges instead of the decoder's branches).
 * With every decode_* symbol defined here, the linker never pulls the
 * archive's decode.o, so there is no duplicate. */
#include "../../src/decode/decode.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const uint8_t SEPARATOR[4] = {0xF0, '|', '~', '|'};

static volatile uint64_t sink;

static uint64_t touch_bytes(const uint8_t *p, size_t n)
{
    uint64_t s = 0;
    for (size_t i = 0; i < n; i++)
        s += p[i];
    return s;
}

/* Reads a decoded string up to its NUL; the decoder promised the NUL lies
 * inside [buf, buf+len). */
static uint64_t touch_string(const char *s, const uint8_t *buf, size_t len)
{
    if (s == NULL)
        return 0;
    const uint8_t *p = (const uint8_t *)s;
    if (p < buf || p >= buf + len)
        abort();
    size_t n = strlen(s);
    if (p + n >= buf + len)
        abort();
    return touch_bytes(p, n) + n;
}

static uint64_t touch_tuple(const decode_tuple *t, const uint8_t *buf, size_t len)
{
    uint64_t s = t->ncols;
    for (uint16_t i = 0; i < t->ncols; i++) {
        const decode_col *c = &t->cols[i];
        switch (c->kind) {
        case DECODE_COL_NULL:
        case DECODE_COL_UNCHANGED:
            if (c->len != 0 || c->data != NULL)
                abort();
            break;
        case DECODE_COL_TEXT:
        case DECODE_COL_BINARY:
            if (c->data < buf || c->data + c->len > buf + len)
                abort();
            s += touch_bytes(c->data, c->len);
            break;
        default:
            abort();
        }
        s += (uint64_t)c->kind;
    }
    return s;
}

static uint64_t touch_relation(const decode_relation *rel, const uint8_t *buf, size_t len)
{
    uint64_t s = rel->relid + (uint64_t)rel->replident;
    s += touch_string(rel->nspname, buf, len) + touch_string(rel->relname, buf, len);
    for (uint16_t i = 0; i < rel->natts; i++) {
        s += rel->attrs[i].flags + rel->attrs[i].type_oid + (uint64_t)rel->attrs[i].typmod;
        s += touch_string(rel->attrs[i].name, buf, len);
    }
    /* A cache copy must equal the original and outlive the scratch. */
    decode_relation *copy = decode_relation_copy(rel);
    if (copy == NULL)
        return s;
    if (copy->natts != rel->natts || strcmp(copy->relname, rel->relname) != 0 ||
        strcmp(copy->nspname, rel->nspname) != 0)
        abort();
    for (uint16_t i = 0; i < copy->natts; i++) {
        if (strcmp(copy->attrs[i].name, rel->attrs[i].name) != 0)
            abort();
    }
    decode_relation_free(copy);
    return s;
}

static uint64_t touch_msg(const decode_msg *m, const uint8_t *buf, size_t len)
{
    uint64_t s = (uint64_t)m->kind + m->xid + m->has_xid;
    s += strlen(decode_kind_name(m->kind));
    switch (m->kind) {
    case DECODE_BEGIN:
        s += m->u.begin.final_lsn + (uint64_t)m->u.begin.commit_time;
        break;
    case DECODE_COMMIT:
        s += m->u.commit.flags + m->u.commit.commit_lsn + m->u.commit.end_lsn;
        break;
    case DECODE_ORIGIN:
        s += m->u.origin.origin_lsn + touch_string(m->u.origin.name, buf, len);
        break;
    case DECODE_RELATION:
        s += touch_relation(&m->u.relation, buf, len);
        break;
    case DECODE_TYPE:
        s += m->u.type.oid + touch_string(m->u.type.nspname, buf, len) +
             touch_string(m->u.type.typname, buf, len);
        break;
    case DECODE_INSERT:
        s += m->u.insert.relid + touch_tuple(&m->u.insert.newtup, buf, len);
        break;
    case DECODE_UPDATE:
        s += m->u.update.relid + (uint64_t)m->u.update.old_kind;
        if (m->u.update.old_kind != 0)
            s += touch_tuple(&m->u.update.oldtup, buf, len);
        s += touch_tuple(&m->u.update.newtup, buf, len);
        break;
    case DECODE_DELETE:
        s += m->u.delete_.relid + touch_tuple(&m->u.delete_.oldtup, buf, len);
        break;
    case DECODE_TRUNCATE:
        s += m->u.truncate.flags;
        for (uint32_t i = 0; i < m->u.truncate.nrels; i++)
            s += m->u.truncate.relids[i];
        break;
    case DECODE_MESSAGE:
        s += m->u.message.flags + m->u.message.lsn + touch_string(m->u.message.prefix, buf, len);
        if (m->u.message.content < buf || m->u.message.content + m->u.message.len > buf + len)
            abort();
        s += touch_bytes(m->u.message.content, m->u.message.len);
        break;
    case DECODE_STREAM_START:
        s += m->u.stream_start.first_segment;
        break;
    case DECODE_STREAM_STOP:
        break;
    case DECODE_STREAM_COMMIT:
        s += m->u.stream_commit.commit_lsn + m->u.stream_commit.end_lsn;
        break;
    case DECODE_STREAM_ABORT:
        s += m->u.stream_abort.subxid;
        break;
    case DECODE_BEGIN_PREPARE:
    case DECODE_PREPARE:
    case DECODE_COMMIT_PREPARED:
    case DECODE_ROLLBACK_PREPARED:
    case DECODE_STREAM_PREPARE:
        s += m->u.twophase.lsn + m->u.twophase.end_lsn + (uint64_t)m->u.twophase.time +
             (uint64_t)m->u.twophase.time2 + touch_string(m->u.twophase.gid, buf, len);
        break;
    default:
        abort();
    }
    return s;
}

static void check_error(const decode_error *err, size_t len)
{
    if (err->offset > len || memchr(err->msg, '\0', sizeof err->msg) == NULL || err->msg[0] == 0)
        abort();
}

/* Decodes one message from an exactly sized heap copy, so reads past its
 * end hit ASan's redzone even when the piece sits inside a larger input. */
static void decode_one(decode_ctx *ctx, const uint8_t *piece, size_t len)
{
    uint8_t *buf = malloc(len ? len : 1);
    if (buf == NULL)
        return;
    if (len)
        memcpy(buf, piece, len);
    decode_msg m;
    decode_error err;
    bool was_in_stream = ctx->in_stream;
    if (decode_message(ctx, buf, len, &m, &err)) {
        sink += touch_msg(&m, buf, len);
        if (m.kind == DECODE_STREAM_START && !ctx->in_stream)
            abort();
        if (m.kind == DECODE_STREAM_STOP && ctx->in_stream)
            abort();
    } else {
        check_error(&err, len);
        if (ctx->in_stream != was_in_stream)
            abort();
    }
    free(buf);
}

static void decode_piece(decode_ctx *ctx, const uint8_t *piece, size_t len, bool framed)
{
    if (!framed) {
        decode_one(ctx, piece, len);
        return;
    }
    uint8_t *buf = malloc(len ? len : 1);
    if (buf == NULL)
        return;
    if (len)
        memcpy(buf, piece, len);
    decode_frame f;
    decode_error err;
    if (decode_frame_parse(buf, len, &f, &err)) {
        sink += f.wal_start + f.wal_end + (uint64_t)f.send_time + f.reply_requested;
        if (f.kind == DECODE_FRAME_XLOGDATA) {
            if (f.data < buf || f.data + f.len != buf + len)
                abort();
            decode_one(ctx, f.data, f.len);
        } else if (f.kind == DECODE_FRAME_KEEPALIVE) {
            uint8_t reply[DECODE_STATUS_UPDATE_LEN];
            if (decode_status_update(reply, f.wal_end, f.wal_end, f.wal_end, f.send_time,
                                     f.reply_requested) != DECODE_STATUS_UPDATE_LEN)
                abort();
            sink += touch_bytes(reply, sizeof reply);
        } else {
            abort();
        }
    } else {
        check_error(&err, len);
    }
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t mode = data[0];
    int proto_version = 1 + (mode & 3);
    bool framed = (mode & 4) != 0;
    const uint8_t *rest = data + 1;
    size_t rest_len = size - 1;

    decode_ctx ctx;
    decode_ctx_init(&ctx, proto_version);
    ctx.in_stream = (mode & 8) != 0;

    const uint8_t *p = rest;
    size_t remaining = rest_len;
    for (int pieces = 0; pieces < 64; pieces++) {
        const uint8_t *sep = remaining >= sizeof SEPARATOR
                                 ? memmem(p, remaining, SEPARATOR, sizeof SEPARATOR)
                                 : NULL;
        size_t n = sep ? (size_t)(sep - p) : remaining;
        decode_piece(&ctx, p, n, framed);
        if (sep == NULL)
            break;
        p = sep + sizeof SEPARATOR;
        remaining -= n + sizeof SEPARATOR;
    }
    /* The whole rest again, on the warm context. */
    decode_piece(&ctx, rest, rest_len, framed);

    decode_ctx_free(&ctx);
    return 0;
}
