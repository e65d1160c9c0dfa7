/* decode.c: the pgoutput message decoder and the CopyBoth replication framing.
 *
 * Pure code: no I/O, no globals. Every read goes through the bounds-checked
 * reader below; a failed read fills decode_error with the offset of the field
 * and what was expected there. Wire layouts follow PostgreSQL 15's
 * src/backend/replication/logical/proto.c for protocol versions 1 to 3.
 */
#include "pgshift/decode.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A cursor over one message. `what` names the message for error text;
 * while a column or attribute is read, `item`/`item_no`/`item_of` say
 * which one (formatted only when an error happens). */
typedef struct reader {
    const uint8_t *buf;
    size_t len;
    size_t pos;
    const char *what;
    decode_error *err;
    const char *item;    /* "column", "attribute" or NULL */
    unsigned item_no;    /* 1-based */
    const char *item_of; /* "new TupleData", ... or NULL */
} reader;

static void set_error(decode_error *err, size_t offset, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_error(decode_error *err, size_t offset, const char *fmt, ...)
{
    if (err == NULL)
        return;
    err->offset = offset;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
}

static size_t left(const reader *r)
{
    return r->len - r->pos;
}

/* Describes the field being read into buf, e.g. "length of column 2 of
 * new TupleData". */
static const char *field_name(const reader *r, const char *field, char *buf, size_t size)
{
    if (r->item == NULL && r->item_of == NULL)
        return field;
    if (r->item == NULL) {
        snprintf(buf, size, "%s %s", field, r->item_of);
        return buf;
    }
    snprintf(buf, size, "%s of %s %u%s%s", field, r->item, r->item_no, r->item_of ? " of " : "",
             r->item_of ? r->item_of : "");
    return buf;
}

static bool truncated(reader *r, const char *type, const char *field)
{
    size_t n = left(r);
    char name[96];
    set_error(r->err, r->pos, "truncated %s: expected %s %s at offset %zu, %zu byte%s left",
              r->what, type, field_name(r, field, name, sizeof name), r->pos, n, n == 1 ? "" : "s");
    return false;
}

static bool read_u8(reader *r, const char *field, uint8_t *out)
{
    if (left(r) < 1)
        return truncated(r, "Int8", field);
    *out = r->buf[r->pos++];
    return true;
}

static bool read_u16(reader *r, const char *field, uint16_t *out)
{
    if (left(r) < 2)
        return truncated(r, "Int16", field);
    const uint8_t *p = r->buf + r->pos;
    *out = (uint16_t)((uint16_t)p[0] << 8 | p[1]);
    r->pos += 2;
    return true;
}

static bool read_u32(reader *r, const char *field, uint32_t *out)
{
    if (left(r) < 4)
        return truncated(r, "Int32", field);
    const uint8_t *p = r->buf + r->pos;
    *out = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
    r->pos += 4;
    return true;
}

static bool read_u64(reader *r, const char *field, uint64_t *out)
{
    if (left(r) < 8)
        return truncated(r, "Int64", field);
    const uint8_t *p = r->buf + r->pos;
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    *out = v;
    r->pos += 8;
    return true;
}

static bool read_i64(reader *r, const char *field, int64_t *out)
{
    uint64_t v = 0;
    if (!read_u64(r, field, &v))
        return false;
    *out = (int64_t)v;
    return true;
}

/* A NUL-terminated string; the terminator must lie inside the buffer. */
static bool read_string(reader *r, const char *field, const char **out)
{
    const uint8_t *start = r->buf + r->pos;
    const uint8_t *nul = left(r) > 0 ? memchr(start, '\0', left(r)) : NULL;
    if (nul == NULL) {
        size_t n = left(r);
        char name[96];
        set_error(r->err, r->pos,
                  "truncated %s: expected String %s at offset %zu, no NUL terminator in the "
                  "%zu byte%s left",
                  r->what, field_name(r, field, name, sizeof name), r->pos, n, n == 1 ? "" : "s");
        return false;
    }
    *out = (const char *)start;
    r->pos += (size_t)(nul - start) + 1;
    return true;
}

/* Grows an array in ctx scratch to hold at least `need` elements of `size`
 * bytes. Existing contents are kept; on failure the old array stays. */
static bool grow(void **arr, size_t *cap, size_t need, size_t size, const char *name,
                 decode_error *err, size_t offset)
{
    if (need <= *cap)
        return true;
    size_t ncap = *cap ? *cap : 16;
    while (ncap < need && ncap <= SIZE_MAX / 2 / size)
        ncap *= 2;
    if (ncap < need) {
        set_error(err, offset, "%s scratch of %zu entries would overflow", name, need);
        return false;
    }
    void *p = realloc(*arr, ncap * size);
    if (p == NULL) {
        set_error(err, offset, "out of memory growing %s scratch to %zu entries", name, ncap);
        return false;
    }
    *arr = p;
    *cap = ncap;
    return true;
}

/* Reads a TupleData into ctx->cols_scratch starting at index `base` (an
 * Update's new tuple goes after its old one, so both stay valid). The
 * caller re-points earlier tuples afterwards: growing may move the array. */
static bool read_tuple(decode_ctx *ctx, reader *r, const char *which, size_t base,
                       decode_tuple *out)
{
    uint16_t ncols = 0;
    r->item_of = which;
    if (!read_u16(r, "column count of", &ncols))
        goto failed;
    /* Every column takes at least its kind byte: refuse to allocate for
     * columns that cannot be there. */
    if (ncols > left(r)) {
        size_t n = left(r);
        set_error(r->err, r->pos,
                  "truncated %s: %s has %u columns but only %zu byte%s left at offset %zu", r->what,
                  which, ncols, n, n == 1 ? "" : "s", r->pos);
        goto failed;
    }
    if (!grow((void **)&ctx->cols_scratch, &ctx->cols_cap, base + ncols, sizeof(decode_col),
              "column", r->err, r->pos))
        goto failed;
    decode_col *cols = ncols ? ctx->cols_scratch + base : NULL;
    r->item = "column";
    for (uint16_t i = 0; i < ncols; i++) {
        uint8_t kind = 0;
        size_t at = r->pos;
        r->item_no = i + 1u;
        if (!read_u8(r, "kind", &kind))
            goto failed;
        decode_col *c = &cols[i];
        c->len = 0;
        c->data = NULL;
        switch (kind) {
        case DECODE_COL_NULL:
        case DECODE_COL_UNCHANGED:
            c->kind = (decode_col_kind)kind;
            break;
        case DECODE_COL_TEXT:
        case DECODE_COL_BINARY: {
            uint32_t len = 0;
            if (!read_u32(r, "length", &len))
                goto failed;
            if (len > left(r)) {
                size_t n = left(r);
                set_error(r->err, r->pos,
                          "truncated %s: column %u of %s needs %" PRIu32
                          " bytes at offset %zu, %zu byte%s left",
                          r->what, i + 1u, which, len, r->pos, n, n == 1 ? "" : "s");
                goto failed;
            }
            c->kind = (decode_col_kind)kind;
            c->len = len;
            c->data = r->buf + r->pos;
            r->pos += len;
            break;
        }
        default:
            set_error(r->err, at,
                      "bad %s: unknown kind 0x%02x of column %u of %s at offset %zu "
                      "(expected 'n', 'u', 't' or 'b')",
                      r->what, kind, i + 1u, which, at);
            goto failed;
        }
    }
    r->item = r->item_of = NULL;
    out->ncols = ncols;
    out->cols = cols;
    return true;

failed:
    r->item = r->item_of = NULL;
    return false;
}

/* Reads the tuple marker byte and checks it is one of `allowed`. */
static bool read_marker(reader *r, const char *allowed, const char *expected, uint8_t *out)
{
    size_t at = r->pos;
    if (!read_u8(r, "tuple marker", out))
        return false;
    if (*out == 0 || strchr(allowed, *out) == NULL) {
        set_error(r->err, at, "bad %s: tuple marker 0x%02x at offset %zu, expected %s", r->what,
                  *out, at, expected);
        return false;
    }
    return true;
}

static bool read_stream_xid(const decode_ctx *ctx, reader *r, decode_msg *out)
{
    if (!ctx->in_stream)
        return true;
    out->has_xid = true;
    return read_u32(r, "xid (inside a stream block)", &out->xid);
}

static bool decode_relation_msg(decode_ctx *ctx, reader *r, decode_msg *out)
{
    decode_relation *rel = &out->u.relation;
    uint8_t ident = 0;
    uint16_t natts = 0;
    if (!read_stream_xid(ctx, r, out) || !read_u32(r, "relid", &rel->relid) ||
        !read_string(r, "namespace", &rel->nspname) ||
        !read_string(r, "relation name", &rel->relname) ||
        !read_u8(r, "replica identity", &ident) || !read_u16(r, "attribute count", &natts))
        return false;
    rel->replident = (char)ident;
    /* Each attribute takes at least 10 bytes; a count that cannot fit is
     * refused before anything is allocated for it. */
    if (natts > left(r) / 10) {
        size_t n = left(r);
        set_error(r->err, r->pos,
                  "truncated %s: %u attributes need at least %u bytes at offset %zu, %zu byte%s "
                  "left",
                  r->what, natts, natts * 10u, r->pos, n, n == 1 ? "" : "s");
        return false;
    }
    if (!grow((void **)&ctx->attrs_scratch, &ctx->attrs_cap, natts, sizeof(decode_attr),
              "attribute", r->err, r->pos))
        return false;
    r->item = "attribute";
    for (uint16_t i = 0; i < natts; i++) {
        decode_attr *a = &ctx->attrs_scratch[i];
        uint32_t typmod = 0;
        r->item_no = i + 1u;
        if (!read_u8(r, "flags", &a->flags) || !read_string(r, "name", &a->name) ||
            !read_u32(r, "type oid", &a->type_oid) || !read_u32(r, "typmod", &typmod)) {
            r->item = NULL;
            return false;
        }
        a->typmod = (int32_t)typmod;
    }
    r->item = NULL;
    rel->natts = natts;
    rel->attrs = natts ? ctx->attrs_scratch : NULL;
    return true;
}

static bool decode_truncate_msg(decode_ctx *ctx, reader *r, decode_msg *out)
{
    uint32_t nrels = 0;
    if (!read_stream_xid(ctx, r, out) || !read_u32(r, "relation count", &nrels) ||
        !read_u8(r, "flags", &out->u.truncate.flags))
        return false;
    if (nrels > left(r) / 4) {
        size_t n = left(r);
        set_error(r->err, r->pos,
                  "truncated %s: expected %" PRIu32 " Int32 relids at offset %zu, %zu byte%s "
                  "left",
                  r->what, nrels, r->pos, n, n == 1 ? "" : "s");
        return false;
    }
    if (!grow((void **)&ctx->relids_scratch, &ctx->relids_cap, nrels, sizeof(uint32_t), "relid",
              r->err, r->pos))
        return false;
    for (uint32_t i = 0; i < nrels; i++) {
        if (!read_u32(r, "relid", &ctx->relids_scratch[i]))
            return false;
    }
    out->u.truncate.nrels = nrels;
    out->u.truncate.relids = nrels ? ctx->relids_scratch : NULL;
    return true;
}

static bool decode_message_msg(decode_ctx *ctx, reader *r, decode_msg *out)
{
    uint32_t len = 0;
    if (!read_stream_xid(ctx, r, out) || !read_u8(r, "flags", &out->u.message.flags) ||
        !read_u64(r, "lsn", &out->u.message.lsn) ||
        !read_string(r, "prefix", &out->u.message.prefix) || !read_u32(r, "content length", &len))
        return false;
    if (len > left(r)) {
        size_t n = left(r);
        set_error(r->err, r->pos,
                  "truncated %s: expected %" PRIu32 " content bytes at offset %zu, %zu byte%s left",
                  r->what, len, r->pos, n, n == 1 ? "" : "s");
        return false;
    }
    out->u.message.len = len;
    out->u.message.content = r->buf + r->pos;
    r->pos += len;
    return true;
}

/* Flags, two LSNs, a timestamp, the xid and the gid: Prepare, Commit
 * Prepared and Stream Prepare share this layout. */
static bool decode_prepare_common(reader *r, decode_msg *out, const char *lsn_name,
                                  const char *time_name)
{
    out->has_xid = true;
    return read_u8(r, "flags", &out->u.twophase.flags) &&
           read_u64(r, lsn_name, &out->u.twophase.lsn) &&
           read_u64(r, "end_lsn", &out->u.twophase.end_lsn) &&
           read_i64(r, time_name, &out->u.twophase.time) && read_u32(r, "xid", &out->xid) &&
           read_string(r, "gid", &out->u.twophase.gid);
}

/* The protocol version a message kind needs, or 0 for an unknown byte. */
static int min_version(uint8_t kind)
{
    switch (kind) {
    case DECODE_BEGIN:
    case DECODE_COMMIT:
    case DECODE_ORIGIN:
    case DECODE_RELATION:
    case DECODE_TYPE:
    case DECODE_INSERT:
    case DECODE_UPDATE:
    case DECODE_DELETE:
    case DECODE_TRUNCATE:
    case DECODE_MESSAGE:
        return 1;
    case DECODE_STREAM_START:
    case DECODE_STREAM_STOP:
    case DECODE_STREAM_COMMIT:
    case DECODE_STREAM_ABORT:
        return 2;
    case DECODE_BEGIN_PREPARE:
    case DECODE_PREPARE:
    case DECODE_COMMIT_PREPARED:
    case DECODE_ROLLBACK_PREPARED:
    case DECODE_STREAM_PREPARE:
        return 3;
    default:
        return 0;
    }
}

/* Whether a message kind may appear between Stream Start and Stream Stop. */
static bool allowed_in_stream(uint8_t kind)
{
    switch (kind) {
    case DECODE_ORIGIN:
    case DECODE_RELATION:
    case DECODE_TYPE:
    case DECODE_INSERT:
    case DECODE_UPDATE:
    case DECODE_DELETE:
    case DECODE_TRUNCATE:
    case DECODE_MESSAGE:
    case DECODE_STREAM_STOP:
        return true;
    default:
        return false;
    }
}

const char *decode_kind_name(decode_kind kind)
{
    switch (kind) {
    case DECODE_BEGIN:
        return "Begin";
    case DECODE_COMMIT:
        return "Commit";
    case DECODE_ORIGIN:
        return "Origin";
    case DECODE_RELATION:
        return "Relation";
    case DECODE_TYPE:
        return "Type";
    case DECODE_INSERT:
        return "Insert";
    case DECODE_UPDATE:
        return "Update";
    case DECODE_DELETE:
        return "Delete";
    case DECODE_TRUNCATE:
        return "Truncate";
    case DECODE_MESSAGE:
        return "Message";
    case DECODE_STREAM_START:
        return "Stream Start";
    case DECODE_STREAM_STOP:
        return "Stream Stop";
    case DECODE_STREAM_COMMIT:
        return "Stream Commit";
    case DECODE_STREAM_ABORT:
        return "Stream Abort";
    case DECODE_BEGIN_PREPARE:
        return "Begin Prepare";
    case DECODE_PREPARE:
        return "Prepare";
    case DECODE_COMMIT_PREPARED:
        return "Commit Prepared";
    case DECODE_ROLLBACK_PREPARED:
        return "Rollback Prepared";
    case DECODE_STREAM_PREPARE:
        return "Stream Prepare";
    }
    return "unknown";
}

void decode_ctx_init(decode_ctx *ctx, int proto_version)
{
    memset(ctx, 0, sizeof *ctx);
    ctx->proto_version = proto_version;
}

void decode_ctx_free(decode_ctx *ctx)
{
    free(ctx->cols_scratch);
    free(ctx->attrs_scratch);
    free(ctx->relids_scratch);
    int v = ctx->proto_version;
    memset(ctx, 0, sizeof *ctx);
    ctx->proto_version = v;
}

bool decode_message(decode_ctx *ctx, const uint8_t *buf, size_t len, decode_msg *out,
                    decode_error *err)
{
    memset(out, 0, sizeof *out);
    if (ctx->proto_version < 1 || ctx->proto_version > 4) {
        set_error(err, 0, "proto_version %d is not supported (1 to 4)", ctx->proto_version);
        return false;
    }
    if (len == 0) {
        set_error(err, 0, "empty message: expected a message type byte at offset 0");
        return false;
    }
    uint8_t kind = buf[0];
    int need = min_version(kind);
    if (need == 0) {
        if (kind >= 0x20 && kind < 0x7f)
            set_error(err, 0, "unknown message type '%c' (0x%02x) at offset 0", kind, kind);
        else
            set_error(err, 0, "unknown message type 0x%02x at offset 0", kind);
        return false;
    }
    const char *name = decode_kind_name((decode_kind)kind);
    if (ctx->proto_version < need) {
        set_error(err, 0, "%s message needs proto_version >= %d (negotiated %d)", name, need,
                  ctx->proto_version);
        return false;
    }
    if (ctx->in_stream && !allowed_in_stream(kind)) {
        set_error(err, 0, "%s message inside a stream block (before Stream Stop)", name);
        return false;
    }
    if (!ctx->in_stream && kind == DECODE_STREAM_STOP) {
        set_error(err, 0, "Stream Stop message outside a stream block");
        return false;
    }

    reader r = {.buf = buf, .len = len, .pos = 1, .what = name, .err = err};
    reader *rp = &r;
    out->kind = (decode_kind)kind;
    bool ok = false;
    switch (kind) {
    case DECODE_BEGIN:
        out->has_xid = true;
        ok = read_u64(rp, "final_lsn", &out->u.begin.final_lsn) &&
             read_i64(rp, "commit_time", &out->u.begin.commit_time) &&
             read_u32(rp, "xid", &out->xid);
        break;
    case DECODE_COMMIT:
        ok = read_u8(rp, "flags", &out->u.commit.flags) &&
             read_u64(rp, "commit_lsn", &out->u.commit.commit_lsn) &&
             read_u64(rp, "end_lsn", &out->u.commit.end_lsn) &&
             read_i64(rp, "commit_time", &out->u.commit.commit_time);
        break;
    case DECODE_ORIGIN:
        ok = read_u64(rp, "origin_lsn", &out->u.origin.origin_lsn) &&
             read_string(rp, "origin name", &out->u.origin.name);
        break;
    case DECODE_RELATION:
        ok = decode_relation_msg(ctx, rp, out);
        break;
    case DECODE_TYPE:
        ok = read_stream_xid(ctx, rp, out) && read_u32(rp, "type oid", &out->u.type.oid) &&
             read_string(rp, "namespace", &out->u.type.nspname) &&
             read_string(rp, "type name", &out->u.type.typname);
        break;
    case DECODE_INSERT: {
        uint8_t marker = 0;
        ok = read_stream_xid(ctx, rp, out) && read_u32(rp, "relid", &out->u.insert.relid) &&
             read_marker(rp, "N", "'N'", &marker) &&
             read_tuple(ctx, rp, "new TupleData", 0, &out->u.insert.newtup);
        break;
    }
    case DECODE_UPDATE: {
        uint8_t marker = 0;
        ok = read_stream_xid(ctx, rp, out) && read_u32(rp, "relid", &out->u.update.relid) &&
             read_marker(rp, "KON", "'K', 'O' or 'N'", &marker);
        if (!ok)
            break;
        if (marker != 'N') {
            out->u.update.old_kind = (char)marker;
            ok = read_tuple(ctx, rp, marker == 'K' ? "old key TupleData" : "old row TupleData", 0,
                            &out->u.update.oldtup) &&
                 read_marker(rp, "N", "'N' after the old tuple", &marker);
            if (!ok)
                break;
        }
        uint16_t nold = out->u.update.oldtup.ncols;
        ok = read_tuple(ctx, rp, "new TupleData", nold, &out->u.update.newtup);
        /* Reading the new tuple may have moved the scratch array. */
        if (ok && nold > 0)
            out->u.update.oldtup.cols = ctx->cols_scratch;
        break;
    }
    case DECODE_DELETE: {
        uint8_t marker = 0;
        ok = read_stream_xid(ctx, rp, out) && read_u32(rp, "relid", &out->u.delete_.relid) &&
             read_marker(rp, "KO", "'K' or 'O'", &marker);
        if (!ok)
            break;
        out->u.delete_.old_kind = (char)marker;
        ok = read_tuple(ctx, rp, marker == 'K' ? "old key TupleData" : "old row TupleData", 0,
                        &out->u.delete_.oldtup);
        break;
    }
    case DECODE_TRUNCATE:
        ok = decode_truncate_msg(ctx, rp, out);
        break;
    case DECODE_MESSAGE:
        ok = decode_message_msg(ctx, rp, out);
        break;
    case DECODE_STREAM_START: {
        uint8_t first = 0;
        out->has_xid = true;
        ok = read_u32(rp, "xid", &out->xid) && read_u8(rp, "first_segment", &first);
        out->u.stream_start.first_segment = ok && first == 1;
        break;
    }
    case DECODE_STREAM_STOP:
        ok = true;
        break;
    case DECODE_STREAM_COMMIT:
        out->has_xid = true;
        ok = read_u32(rp, "xid", &out->xid) && read_u8(rp, "flags", &out->u.stream_commit.flags) &&
             read_u64(rp, "commit_lsn", &out->u.stream_commit.commit_lsn) &&
             read_u64(rp, "end_lsn", &out->u.stream_commit.end_lsn) &&
             read_i64(rp, "commit_time", &out->u.stream_commit.commit_time);
        break;
    case DECODE_STREAM_ABORT:
        out->has_xid = true;
        ok = read_u32(rp, "xid", &out->xid) && read_u32(rp, "subxid", &out->u.stream_abort.subxid);
        /* Version 4 adds the abort's LSN and time, sent only with
         * streaming = parallel. */
        if (ok && ctx->proto_version >= 4 && r.len - r.pos >= 16) {
            out->u.stream_abort.has_abort_info = true;
            ok = read_u64(rp, "abort_lsn", &out->u.stream_abort.abort_lsn) &&
                 read_i64(rp, "abort_time", &out->u.stream_abort.abort_time);
        }
        break;
    case DECODE_BEGIN_PREPARE:
        out->has_xid = true;
        ok = read_u64(rp, "prepare_lsn", &out->u.twophase.lsn) &&
             read_u64(rp, "end_lsn", &out->u.twophase.end_lsn) &&
             read_i64(rp, "prepare_time", &out->u.twophase.time) &&
             read_u32(rp, "xid", &out->xid) && read_string(rp, "gid", &out->u.twophase.gid);
        break;
    case DECODE_PREPARE:
    case DECODE_STREAM_PREPARE:
        ok = decode_prepare_common(rp, out, "prepare_lsn", "prepare_time");
        break;
    case DECODE_COMMIT_PREPARED:
        ok = decode_prepare_common(rp, out, "commit_lsn", "commit_time");
        break;
    case DECODE_ROLLBACK_PREPARED:
        out->has_xid = true;
        ok = read_u8(rp, "flags", &out->u.twophase.flags) &&
             read_u64(rp, "prepare_end_lsn", &out->u.twophase.lsn) &&
             read_u64(rp, "rollback_end_lsn", &out->u.twophase.end_lsn) &&
             read_i64(rp, "prepare_time", &out->u.twophase.time) &&
             read_i64(rp, "rollback_time", &out->u.twophase.time2) &&
             read_u32(rp, "xid", &out->xid) && read_string(rp, "gid", &out->u.twophase.gid);
        break;
    }
    if (!ok)
        return false;
    if (r.pos != len) {
        size_t n = len - r.pos;
        set_error(err, r.pos, "trailing garbage after %s: %zu unexpected byte%s at offset %zu",
                  name, n, n == 1 ? "" : "s", r.pos);
        return false;
    }
    /* Stream state changes only once the message decoded cleanly. */
    if (kind == DECODE_STREAM_START)
        ctx->in_stream = true;
    else if (kind == DECODE_STREAM_STOP)
        ctx->in_stream = false;
    return true;
}

/* ---------------------------------------------------------------------
 * Framing
 * --------------------------------------------------------------------- */

bool decode_frame_parse(const uint8_t *buf, size_t len, decode_frame *out, decode_error *err)
{
    memset(out, 0, sizeof *out);
    if (len == 0) {
        set_error(err, 0, "empty CopyData: expected 'w' or 'k' at offset 0");
        return false;
    }
    reader r = {.buf = buf, .len = len, .pos = 1, .err = err};
    uint64_t v = 0;
    switch (buf[0]) {
    case DECODE_FRAME_XLOGDATA:
        r.what = "XLogData";
        out->kind = DECODE_FRAME_XLOGDATA;
        if (!read_u64(&r, "dataStart", &out->wal_start) || !read_u64(&r, "walEnd", &out->wal_end) ||
            !read_u64(&r, "sendTime", &v))
            return false;
        out->send_time = (pgs_timestamp)v;
        out->data = buf + r.pos;
        out->len = len - r.pos;
        return true;
    case DECODE_FRAME_KEEPALIVE: {
        uint8_t reply = 0;
        r.what = "keepalive";
        out->kind = DECODE_FRAME_KEEPALIVE;
        if (!read_u64(&r, "walEnd", &out->wal_end) || !read_u64(&r, "sendTime", &v) ||
            !read_u8(&r, "replyRequested", &reply))
            return false;
        out->send_time = (pgs_timestamp)v;
        out->reply_requested = reply != 0;
        if (r.pos != len) {
            size_t n = len - r.pos;
            set_error(err, r.pos,
                      "trailing garbage after keepalive: %zu unexpected byte%s at "
                      "offset %zu",
                      n, n == 1 ? "" : "s", r.pos);
            return false;
        }
        return true;
    }
    default:
        set_error(err, 0, "unknown CopyData message type 0x%02x at offset 0 (expected 'w' or 'k')",
                  buf[0]);
        return false;
    }
}

static uint8_t *put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        *p++ = (uint8_t)(v >> (i * 8));
    }
    return p;
}

size_t decode_status_update(uint8_t out[DECODE_STATUS_UPDATE_LEN], pgs_lsn write, pgs_lsn flush,
                            pgs_lsn apply, pgs_timestamp now, bool reply_requested)
{
    uint8_t *p = out;
    *p++ = 'r';
    p = put_u64(p, write);
    p = put_u64(p, flush);
    p = put_u64(p, apply);
    p = put_u64(p, (uint64_t)now);
    *p = reply_requested ? 1 : 0;
    return DECODE_STATUS_UPDATE_LEN;
}

/* ---------------------------------------------------------------------
 * Relation copies for caches
 * --------------------------------------------------------------------- */

decode_relation *decode_relation_copy(const decode_relation *rel)
{
    /* One block: the struct, the attrs array, then every string. */
    size_t strbytes = 0;
    if (rel->nspname)
        strbytes += strlen(rel->nspname) + 1;
    if (rel->relname)
        strbytes += strlen(rel->relname) + 1;
    for (uint16_t i = 0; i < rel->natts; i++) {
        if (rel->attrs[i].name)
            strbytes += strlen(rel->attrs[i].name) + 1;
    }
    size_t total = sizeof(decode_relation) + rel->natts * sizeof(decode_attr) + strbytes;
    decode_relation *copy = malloc(total);
    if (copy == NULL)
        return NULL;
    *copy = *rel;
    decode_attr *attrs = (decode_attr *)(copy + 1);
    char *s = (char *)(attrs + rel->natts);
    copy->attrs = rel->natts ? attrs : NULL;
    if (rel->nspname) {
        size_t n = strlen(rel->nspname) + 1;
        copy->nspname = memcpy(s, rel->nspname, n);
        s += n;
    }
    if (rel->relname) {
        size_t n = strlen(rel->relname) + 1;
        copy->relname = memcpy(s, rel->relname, n);
        s += n;
    }
    for (uint16_t i = 0; i < rel->natts; i++) {
        attrs[i] = rel->attrs[i];
        if (rel->attrs[i].name) {
            size_t n = strlen(rel->attrs[i].name) + 1;
            attrs[i].name = memcpy(s, rel->attrs[i].name, n);
            s += n;
        }
    }
    return copy;
}

void decode_relation_free(decode_relation *rel)
{
    free(rel);
}
