/* spool.c: streamed in-progress transactions on disk (spool.h).
 *
 * One unlinked temporary file per open top-level transaction; records are
 * a 4-byte length (host order: the file never leaves this process) and the
 * pgoutput message as received. Each subtransaction's first record offset
 * is kept, in order of appearance, so its abort truncates the file there. */
#include "spool.h"

#include "pgshift/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct subxact {
    uint32_t xid;
    off_t offset;
} subxact;

struct spool_xact {
    uint32_t xid;
    FILE *f;
    off_t size;
    subxact *subs;
    int nsubs, capsubs;
    uint8_t *buf; /* read back */
    size_t bufcap;
    spool_xact *next;
};

struct spool {
    char *dir;
    spool_xact *xacts;
};

spool *spool_new(const char *dir)
{
    spool *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    if (dir == NULL || *dir == '\0')
        dir = getenv("TMPDIR");
    s->dir = strdup(dir && *dir ? dir : "/tmp");
    if (s->dir == NULL) {
        free(s);
        return NULL;
    }
    return s;
}

void spool_xact_free(spool_xact *x)
{
    if (x == NULL)
        return;
    if (x->f)
        fclose(x->f);
    free(x->subs);
    free(x->buf);
    free(x);
}

void spool_reset(spool *s)
{
    for (spool_xact *x = s->xacts, *n; x; x = n) {
        n = x->next;
        spool_xact_free(x);
    }
    s->xacts = NULL;
}

void spool_free(spool *s)
{
    if (s == NULL)
        return;
    spool_reset(s);
    free(s->dir);
    free(s);
}

static spool_xact **find(spool *s, uint32_t xid)
{
    spool_xact **pp = &s->xacts;
    while (*pp && (*pp)->xid != xid)
        pp = &(*pp)->next;
    return pp;
}

/* A new transaction's file: created and unlinked at once, so nothing is
 * left behind whatever happens to the process. */
static spool_xact *open_xact(spool *s, uint32_t xid)
{
    spool_xact *x = calloc(1, sizeof *x);
    char *path = NULL;
    if (x == NULL || asprintf(&path, "%s/pgshift-stream-XXXXXX", s->dir) < 0) {
        free(x);
        return NULL;
    }
    int fd = mkstemp(path);
    if (fd < 0) {
        log_error("spooling a streamed transaction: cannot create a file in %s: %s", s->dir,
                  strerror(errno));
        free(path);
        free(x);
        return NULL;
    }
    unlink(path);
    free(path);
    x->f = fdopen(fd, "w+");
    if (x->f == NULL) {
        close(fd);
        free(x);
        return NULL;
    }
    x->xid = xid;
    x->next = s->xacts;
    s->xacts = x;
    return x;
}

static bool io_failed(const char *what, uint32_t xid)
{
    log_error("spooling streamed transaction %u: %s: %s", xid, what, strerror(errno));
    return false;
}

static bool note_subxact(spool_xact *x, uint32_t subxid)
{
    for (int i = 0; i < x->nsubs; i++)
        if (x->subs[i].xid == subxid)
            return true;
    if (x->nsubs == x->capsubs) {
        int cap = x->capsubs ? x->capsubs * 2 : 8;
        subxact *n = realloc(x->subs, sizeof *n * (size_t)cap);
        if (n == NULL)
            return false;
        x->subs = n;
        x->capsubs = cap;
    }
    x->subs[x->nsubs++] = (subxact){subxid, x->size};
    return true;
}

static bool write_record(spool_xact *x, const uint8_t *msg, size_t len)
{
    uint32_t n = (uint32_t)len;
    if (fwrite(&n, sizeof n, 1, x->f) != 1 || (len && fwrite(msg, len, 1, x->f) != 1))
        return io_failed("write", x->xid);
    x->size += (off_t)(sizeof n + len);
    return true;
}

bool spool_add(spool *s, uint32_t xid, uint32_t subxid, const uint8_t *msg, size_t len)
{
    spool_xact *x = *find(s, xid);
    if (x == NULL && (x = open_xact(s, xid)) == NULL)
        return false;
    if (subxid != xid && !note_subxact(x, subxid)) {
        log_error("spooling streamed transaction %u: out of memory", xid);
        return false;
    }
    return write_record(x, msg, len);
}

/* Reads the record at the current position into x->buf; false at the end. */
static bool read_record(spool_xact *x, size_t *len, bool *io_error)
{
    uint32_t n;
    *io_error = false;
    if (fread(&n, sizeof n, 1, x->f) != 1) {
        *io_error = ferror(x->f) != 0;
        return false;
    }
    if (n > x->bufcap) {
        uint8_t *b = realloc(x->buf, n);
        if (b == NULL) {
            *io_error = true;
            return false;
        }
        x->buf = b;
        x->bufcap = n;
    }
    if (n && fread(x->buf, n, 1, x->f) != 1) {
        *io_error = true;
        return false;
    }
    *len = n;
    return true;
}

/* Cuts the file at `off`, keeping the Relation messages of the cut part
 * (appended again at the cut). */
static bool truncate_at(spool_xact *x, off_t off)
{
    if (fflush(x->f) != 0 || fseeko(x->f, off, SEEK_SET) != 0)
        return io_failed("seek", x->xid);
    uint8_t *keep = NULL;
    size_t nkeep = 0, len;
    bool err = false, ok = true;
    while (ok && read_record(x, &len, &err)) {
        if (len == 0 || x->buf[0] != 'R')
            continue;
        uint8_t *k = realloc(keep, nkeep + sizeof(uint32_t) + len);
        if (k == NULL) {
            ok = false;
            break;
        }
        keep = k;
        uint32_t n = (uint32_t)len;
        memcpy(keep + nkeep, &n, sizeof n);
        memcpy(keep + nkeep + sizeof n, x->buf, len);
        nkeep += sizeof n + len;
    }
    if (err || !ok || ftruncate(fileno(x->f), off) != 0 || fseeko(x->f, off, SEEK_SET) != 0) {
        free(keep);
        return io_failed("truncate", x->xid);
    }
    x->size = off;
    if (nkeep && fwrite(keep, nkeep, 1, x->f) != 1) {
        free(keep);
        return io_failed("write", x->xid);
    }
    x->size += (off_t)nkeep;
    free(keep);
    return true;
}

bool spool_abort(spool *s, uint32_t xid, uint32_t subxid)
{
    spool_xact **pp = find(s, xid);
    spool_xact *x = *pp;
    if (x == NULL)
        return true; /* nothing of it was spooled */
    if (subxid == xid) {
        *pp = x->next;
        spool_xact_free(x);
        return true;
    }
    for (int i = 0; i < x->nsubs; i++)
        if (x->subs[i].xid == subxid) {
            off_t off = x->subs[i].offset;
            /* Subtransactions nest: the ones begun after it end with it. */
            x->nsubs = i;
            return truncate_at(x, off);
        }
    return true; /* it made no change that was streamed */
}

spool_xact *spool_take(spool *s, uint32_t xid, bool *io_error)
{
    *io_error = false;
    spool_xact **pp = find(s, xid);
    spool_xact *x = *pp;
    if (x == NULL)
        return NULL;
    *pp = x->next;
    x->next = NULL;
    if (fflush(x->f) != 0 || fseeko(x->f, 0, SEEK_SET) != 0) {
        io_failed("rewind", xid);
        *io_error = true;
        spool_xact_free(x);
        return NULL;
    }
    return x;
}

bool spool_next(spool_xact *x, const uint8_t **msg, size_t *len, bool *io_error)
{
    if (!read_record(x, len, io_error)) {
        if (*io_error)
            io_failed("read back", x->xid);
        return false;
    }
    *msg = x->buf;
    return true;
}

int spool_open_xacts(const spool *s)
{
    int n = 0;
    for (const spool_xact *x = s->xacts; x; x = x->next)
        n++;
    return n;
}

uint64_t spool_bytes(const spool *s)
{
    uint64_t n = 0;
    for (const spool_xact *x = s->xacts; x; x = x->next)
        n += (uint64_t)x->size;
    return n;
}
