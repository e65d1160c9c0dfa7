/* decode.h: the pgoutput decoder and the replication (CopyBoth) framing.
 *
 * Pure code: bytes in, typed messages out. No I/O, no globals, no logging.
 * Every read is bounds-checked; a truncated or malformed buffer yields
 * false and a decode_error naming the byte offset and what was expected.
 *
 * Ownership and lifetime
 * ----------------------
 * - Every pointer inside a decoded message (strings, column data) points
 *   INTO the input buffer the caller passed; it lives exactly as long as
 *   that buffer. Strings are NUL-terminated inside the buffer (the decoder
 *   checks the terminator is there). Column data (decode_col.data) is NOT
 *   NUL-terminated: use decode_col.len.
 * - Arrays that do not exist in the wire format as such (tuple columns,
 *   relation attributes, truncate relids) live in scratch memory owned by
 *   the decode_ctx. They stay valid until the next decode_message() call on
 *   the same context or decode_ctx_free(). Copy what must live longer
 *   (e.g. a relation for a relation cache: decode_relation_copy()).
 */
#ifndef PGSHIFT_DECODE_H
#define PGSHIFT_DECODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* PostgreSQL LSNs and timestamps as they appear on the wire. */
typedef uint64_t pgs_lsn;
/* Microseconds since 2000-01-01 00:00:00 UTC (PostgreSQL epoch). */
typedef int64_t pgs_timestamp;

#define PGS_EPOCH_OFFSET_US INT64_C(946684800000000) /* 1970 -> 2000 in microseconds */

typedef struct decode_error {
    size_t offset; /* byte offset into the buffer where decoding failed */
    char msg[200]; /* what was expected / what was wrong, one line */
} decode_error;

/* ---------------------------------------------------------------------
 * Replication framing: CopyData payloads on a START_REPLICATION stream.
 * --------------------------------------------------------------------- */

typedef enum decode_frame_kind {
    DECODE_FRAME_XLOGDATA = 'w',
    DECODE_FRAME_KEEPALIVE = 'k',
} decode_frame_kind;

typedef struct decode_frame {
    decode_frame_kind kind;
    pgs_lsn wal_start; /* 'w': dataStart */
    pgs_lsn wal_end;   /* 'w' and 'k': walEnd */
    pgs_timestamp send_time;
    bool reply_requested; /* 'k' only */
    const uint8_t *data;  /* 'w': the pgoutput message, points into the input */
    size_t len;           /* 'w': its length */
} decode_frame;

/* Splits one CopyData payload from the server. */
bool decode_frame_parse(const uint8_t *buf, size_t len, decode_frame *out, decode_error *err);

#define DECODE_STATUS_UPDATE_LEN 34

/* Writes the 34-byte standby status update ('r') byte-exact: big-endian
 * write/flush/apply LSNs, send time (PostgreSQL epoch microseconds) and the
 * reply-requested byte. Returns DECODE_STATUS_UPDATE_LEN. */
size_t decode_status_update(uint8_t out[DECODE_STATUS_UPDATE_LEN], pgs_lsn write, pgs_lsn flush,
                            pgs_lsn apply, pgs_timestamp now, bool reply_requested);

/* Unix-epoch microseconds -> PostgreSQL-epoch microseconds and back. */
pgs_timestamp decode_ts_from_unix_us(int64_t unix_us);
int64_t decode_ts_to_unix_us(pgs_timestamp ts);

/* Formats an LSN as PostgreSQL does ("%X/%X") into buf (>= 18 bytes);
 * returns buf. Parses it back; false on malformed text. */
char *decode_lsn_format(pgs_lsn lsn, char buf[18]);
bool decode_lsn_parse(const char *text, pgs_lsn *out);

/* ---------------------------------------------------------------------
 * pgoutput messages.
 * --------------------------------------------------------------------- */

typedef enum decode_kind {
    DECODE_BEGIN = 'B',
    DECODE_COMMIT = 'C',
    DECODE_ORIGIN = 'O',
    DECODE_RELATION = 'R',
    DECODE_TYPE = 'Y',
    DECODE_INSERT = 'I',
    DECODE_UPDATE = 'U',
    DECODE_DELETE = 'D',
    DECODE_TRUNCATE = 'T',
    DECODE_MESSAGE = 'M',
    DECODE_STREAM_START = 'S',
    DECODE_STREAM_STOP = 'E',
    DECODE_STREAM_COMMIT = 'c',
    DECODE_STREAM_ABORT = 'A',
    DECODE_BEGIN_PREPARE = 'b',
    DECODE_PREPARE = 'P',
    DECODE_COMMIT_PREPARED = 'K',
    DECODE_ROLLBACK_PREPARED = 'r',
    DECODE_STREAM_PREPARE = 'p',
} decode_kind;

/* One column of a TupleData. The kinds are distinct values on purpose:
 * an unchanged TOAST value is never NULL, and NULL is never "unchanged". */
typedef enum decode_col_kind {
    DECODE_COL_NULL = 'n',      /* SQL NULL */
    DECODE_COL_UNCHANGED = 'u', /* unchanged TOASTed value: not sent, keep the old one */
    DECODE_COL_TEXT = 't',      /* text output form in data/len */
    DECODE_COL_BINARY = 'b',    /* binary (typsend) form in data/len */
} decode_col_kind;

typedef struct decode_col {
    decode_col_kind kind;
    uint32_t len;        /* bytes in data; 0 for NULL / UNCHANGED */
    const uint8_t *data; /* into the input buffer; NULL for NULL / UNCHANGED */
} decode_col;

typedef struct decode_tuple {
    uint16_t ncols;
    decode_col *cols; /* ctx scratch; NULL when ncols == 0 */
} decode_tuple;

#define DECODE_ATTR_KEY 0x01 /* column is part of the replica identity */

typedef struct decode_attr {
    uint8_t flags;
    const char *name;
    uint32_t type_oid;
    int32_t typmod;
} decode_attr;

typedef struct decode_relation {
    uint32_t relid;
    const char *nspname; /* "" means pg_catalog, as on the wire */
    const char *relname;
    char replident; /* 'd' default, 'n' nothing, 'f' full, 'i' index */
    uint16_t natts;
    decode_attr *attrs; /* ctx scratch; NULL when natts == 0 */
} decode_relation;

/* A decoded pgoutput message. `xid` is set (has_xid) only for messages
 * that carry one: Begin, Stream Start/Commit/Abort, the five two-phase
 * messages, and Relation/Type/Insert/Update/Delete/Truncate/Message inside
 * a stream block (an Origin inside a stream block carries none). Inside a
 * stream block the xid is that of the (sub)transaction that made the change,
 * which differs from the Stream Start xid for changes made in a
 * subtransaction; a Stream Abort whose subxid names it discards them. */
typedef struct decode_msg {
    decode_kind kind;
    bool has_xid;
    uint32_t xid;
    union {
        struct {
            pgs_lsn final_lsn; /* LSN of the commit record */
            pgs_timestamp commit_time;
        } begin;
        struct {
            uint8_t flags;
            pgs_lsn commit_lsn;
            pgs_lsn end_lsn; /* report this as flushed once applied */
            pgs_timestamp commit_time;
        } commit;
        struct {
            pgs_lsn origin_lsn;
            const char *name;
        } origin;
        decode_relation relation;
        struct {
            uint32_t oid;
            const char *nspname;
            const char *typname;
        } type;
        struct {
            uint32_t relid;
            decode_tuple newtup;
        } insert;
        struct {
            uint32_t relid;
            char old_kind;       /* 0 (no old tuple), 'K' (old key) or 'O' (old row) */
            decode_tuple oldtup; /* valid when old_kind != 0 */
            decode_tuple newtup;
        } update;
        struct {
            uint32_t relid;
            char old_kind; /* 'K' or 'O' */
            decode_tuple oldtup;
        } delete_;
        struct {
            uint32_t nrels;
            uint8_t flags;    /* DECODE_TRUNCATE_CASCADE | DECODE_TRUNCATE_RESTART_IDENTITY */
            uint32_t *relids; /* ctx scratch; NULL when nrels == 0 */
        } truncate;
        struct {
            uint8_t flags; /* DECODE_MESSAGE_TRANSACTIONAL */
            pgs_lsn lsn;
            const char *prefix;
            uint32_t len;
            const uint8_t *content; /* into the input buffer, not NUL-terminated */
        } message;
        struct {
            bool first_segment; /* xid: the streamed top-level transaction */
        } stream_start;
        struct {
            uint8_t flags;
            pgs_lsn commit_lsn;
            pgs_lsn end_lsn;
            pgs_timestamp commit_time;
        } stream_commit;
        struct {
            uint32_t subxid;     /* == xid when the whole transaction aborts */
            bool has_abort_info; /* proto_version 4 with streaming = parallel */
            pgs_lsn abort_lsn;
            pgs_timestamp abort_time;
        } stream_abort;
        /* BEGIN_PREPARE, PREPARE, COMMIT_PREPARED, ROLLBACK_PREPARED,
         * STREAM_PREPARE; all carry xid. Per kind (PG15 wire order):
         *   Begin Prepare:      lsn = prepare_lsn, end_lsn, time = prepare_time
         *                       (no flags on the wire: flags = 0)
         *   Prepare, Stream Prepare:
         *                       flags, lsn = prepare_lsn, end_lsn, time = prepare_time
         *   Commit Prepared:    flags, lsn = commit_lsn, end_lsn, time = commit_time
         *   Rollback Prepared:  flags, lsn = prepare_end_lsn, end_lsn = rollback_end_lsn,
         *                       time = prepare_time, time2 = rollback_time
         * Unused fields are 0. gid points into the input buffer. */
        struct {
            uint8_t flags;
            pgs_lsn lsn;
            pgs_lsn end_lsn;
            pgs_timestamp time;
            pgs_timestamp time2;
            const char *gid;
        } twophase;
    } u;
} decode_msg;

#define DECODE_TRUNCATE_CASCADE          0x01
#define DECODE_TRUNCATE_RESTART_IDENTITY 0x02
#define DECODE_MESSAGE_TRANSACTIONAL     0x01

/* Decoder state: the negotiated protocol version, whether we are inside a
 * Stream Start/Stop block (changes then carry an xid), and scratch memory.
 * Zero-initialise with decode_ctx_init(); free with decode_ctx_free().
 * in_stream changes only when a Stream Start/Stop decodes cleanly; a new
 * START_REPLICATION session must start with in_stream = false (call
 * decode_ctx_init again, or clear it). */
typedef struct decode_ctx {
    int proto_version; /* 1..4 */
    bool in_stream;
    decode_col *cols_scratch;
    size_t cols_cap; /* in decode_col units, for old + new tuples */
    decode_attr *attrs_scratch;
    size_t attrs_cap;
    uint32_t *relids_scratch;
    size_t relids_cap;
} decode_ctx;

void decode_ctx_init(decode_ctx *ctx, int proto_version);
void decode_ctx_free(decode_ctx *ctx);

/* Decodes one pgoutput message (the payload of an XLogData frame).
 * Messages that the negotiated proto_version cannot carry (stream messages
 * under v1, two-phase under v1/v2) are rejected with an error naming them,
 * and so are messages out of place for the stream state (a Stream Stop
 * outside a stream block; Begin, Commit, Stream Start/Commit/Abort/Prepare
 * or a two-phase message inside one). Bytes after the end of a message
 * are an error. Returns false on malloc failure too (err says so). On
 * failure *out holds nothing usable, and the context is unchanged apart
 * from possibly grown scratch. */
bool decode_message(decode_ctx *ctx, const uint8_t *buf, size_t len, decode_msg *out,
                    decode_error *err);

/* Human name of a message kind ("Begin", "Stream Start", ...), or "unknown". */
const char *decode_kind_name(decode_kind kind);

/* A deep copy of a relation that owns its strings and attrs, for caches.
 * Returns NULL on malloc failure. Free with decode_relation_free(). */
decode_relation *decode_relation_copy(const decode_relation *rel);
void decode_relation_free(decode_relation *rel);

#endif
