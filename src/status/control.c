/* control.c: the control socket. The server is a uv_pipe_t on the run's
 * loop, in a private directory; each connection from an allowed uid reads
 * one length-prefixed ControlRequest, hands it to the handler and writes
 * back one ControlReply. A control_call outlives its connection so that a
 * handler answering late (a cutover) never has to know whether the client
 * is still there. The client side is plain blocking sockets with poll() for
 * the deadline. */
#include "pgshift/control.h"
#include "pgshift/connlist.h"
#include "pgshift/log.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define LISTEN_BACKLOG 64
#define SCRATCH_SIZE   65536

typedef enum conn_state {
    CONN_READING,  /* waiting for the whole request */
    CONN_HANDLING, /* request handed over, no reply yet */
    CONN_WRITING,  /* reply written or being written */
} conn_state;

typedef struct conn {
    conn_link link; /* first: s->conns holds these */
    uv_pipe_t pipe;
    uv_timer_t timer; /* read timeout */
    control_server *srv;
    conn_state state;
    bool closing;
    int open_handles;
    uint8_t *buf; /* the request frame so far */
    size_t len, cap;
    control_call *call; /* while CONN_HANDLING */
} conn;

struct control_call {
    conn *c; /* NULL once the connection is gone or was answered by close */
};

struct control_server {
    uv_loop_t *loop;
    uv_pipe_t listener;
    char *path;
    control_handler handler;
    void *arg;
    unsigned read_timeout_ms;
    conn_list conns;
    bool closing;
    bool listener_closed;
    uint8_t scratch[SCRATCH_SIZE]; /* read buffer; reads are copied out at once */
};

typedef struct write_req {
    uv_write_t req;
    conn *c;
    size_t len;
    uint8_t data[];
} write_req;

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static bool fill_addr(struct sockaddr_un *sa, const char *path)
{
    memset(sa, 0, sizeof *sa);
    sa->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof sa->sun_path)
        return false;
    memcpy(sa->sun_path, path, strlen(path) + 1);
    return true;
}

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (err == NULL || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* The directory part of `path` into `out`, which has room for the whole
 * path: "." for a bare name, "/" for a name in the root. */
static void parent_dir(const char *path, char *out)
{
    const char *slash = strrchr(path, '/');
    if (slash == NULL) {
        strcpy(out, ".");
        return;
    }
    size_t n = slash == path ? 1 : (size_t)(slash - path);
    memcpy(out, path, n);
    out[n] = '\0';
}

bool control_peer_allowed(uid_t peer, uid_t self)
{
    return peer == self || peer == 0;
}

/* The uid of the process at the other end of a connected Unix socket. */
static bool peer_uid(int fd, uid_t *uid)
{
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
        return false;
    *uid = cred.uid;
    return true;
}

int control_private_dir(const char *dir, bool create, char *err, size_t errlen)
{
    uid_t me = geteuid();
    struct stat st;
    if (lstat(dir, &st) != 0) {
        if (errno != ENOENT) {
            set_err(err, errlen, "control socket directory %s: %s", dir, strerror(errno));
            return -2;
        }
        if (!create) {
            set_err(err, errlen, "control socket directory %s does not exist", dir);
            return -1;
        }
        if (mkdir(dir, 0700) == 0) {
            /* Ours: a umask that took the owner's bits away is undone. */
            if (chmod(dir, 0700) != 0) {
                set_err(err, errlen, "control socket directory %s: chmod: %s", dir,
                        strerror(errno));
                return -2;
            }
        } else if (errno != EEXIST) {
            set_err(err, errlen,
                    "control socket directory %s: mkdir: %s; check state_dir in the plan", dir,
                    strerror(errno));
            return -2;
        }
        /* Made by us, or by someone else just now: checked the same way. */
        if (lstat(dir, &st) != 0) {
            set_err(err, errlen, "control socket directory %s: %s", dir, strerror(errno));
            return -2;
        }
    }
    if (!S_ISDIR(st.st_mode)) {
        set_err(err, errlen,
                "control socket directory %s is %s, not a directory; remove it or set another "
                "state_dir in the plan",
                dir, S_ISLNK(st.st_mode) ? "a symbolic link" : "something else");
        return -2;
    }
    if (st.st_uid != me) {
        set_err(err, errlen,
                "control socket directory %s is owned by uid %u, not by uid %u that pgshift runs "
                "as; refusing to use it (set another state_dir in the plan)",
                dir, (unsigned)st.st_uid, (unsigned)me);
        return -2;
    }
    if ((st.st_mode & 077) != 0) {
        set_err(err, errlen,
                "control socket directory %s has mode %04o, open to group or others; refusing to "
                "use it (chmod 700 %s)",
                dir, (unsigned)(st.st_mode & 07777), dir);
        return -2;
    }
    return 0;
}

/* --- server --- */

static void maybe_free_server(control_server *s)
{
    if (s->closing && s->listener_closed && s->conns.head == NULL) {
        free(s->path);
        free(s);
    }
}

static void on_conn_handle_closed(uv_handle_t *h)
{
    conn *c = h->data;
    if (--c->open_handles > 0)
        return;
    control_server *s = c->srv;
    conn_list_remove(&s->conns, &c->link);
    free(c->buf);
    free(c);
    maybe_free_server(s);
}

/* Closes the connection; a pending call is detached and stays valid. */
static void conn_close(conn *c)
{
    if (c->closing)
        return;
    c->closing = true;
    if (c->call) {
        c->call->c = NULL;
        c->call = NULL;
    }
    uv_close((uv_handle_t *)&c->pipe, on_conn_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_conn_handle_closed);
}

static void on_write(uv_write_t *req, int status)
{
    write_req *w = (write_req *)req;
    conn *c = w->c;
    if (status < 0 && status != UV_ECANCELED)
        log_debug("control socket: reply dropped, client gone: %s", uv_strerror(status));
    free(w);
    /* Called before the close callback when the connection is being closed,
     * so c is still there. */
    conn_close(c);
}

/* Writes a reply; the connection closes when the write is done. */
static void send_reply(conn *c, bool ok, const char *message, const Pgshift__StatusSnapshot *status,
                       uint64_t lsn)
{
    Pgshift__ControlReply r = PGSHIFT__CONTROL_REPLY__INIT;
    r.ok = ok;
    r.lsn = lsn;
    r.message = (char *)(message ? message : "");
    r.status = (Pgshift__StatusSnapshot *)status; /* only read by pack */
    size_t n = pgshift__control_reply__get_packed_size(&r);
    char toobig[128];
    if (n > CONTROL_FRAME_MAX) {
        log_warn(
            "control socket: reply of %zu bytes is over the %u-byte limit, sent without status", n,
            CONTROL_FRAME_MAX);
        snprintf(toobig, sizeof toobig, "reply too large (%zu bytes)", n);
        r.ok = false;
        r.message = toobig;
        r.status = NULL;
        n = pgshift__control_reply__get_packed_size(&r);
    }
    write_req *w = malloc(sizeof *w + 4 + n);
    if (w == NULL) {
        log_error("control socket: out of memory for a reply");
        conn_close(c);
        return;
    }
    w->c = c;
    w->len = 4 + n;
    put_be32(w->data, (uint32_t)n);
    pgshift__control_reply__pack(&r, w->data + 4);
    uv_buf_t b = uv_buf_init((char *)w->data, (unsigned)w->len);
    int rc = uv_write(&w->req, (uv_stream_t *)&c->pipe, &b, 1, on_write);
    if (rc < 0) {
        log_debug("control socket: reply dropped: %s", uv_strerror(rc));
        free(w);
        conn_close(c);
    }
}

void control_reply(control_call *call, bool ok, const char *message,
                   const Pgshift__StatusSnapshot *status)
{
    control_reply_lsn(call, ok, message, status, 0);
}

void control_reply_lsn(control_call *call, bool ok, const char *message,
                       const Pgshift__StatusSnapshot *status, uint64_t lsn)
{
    if (call == NULL)
        return;
    conn *c = call->c;
    free(call);
    if (c == NULL)
        return;
    c->call = NULL;
    c->state = CONN_WRITING;
    send_reply(c, ok, message, status, lsn);
}

static void drop(conn *c, const char *why)
{
    log_warn("control socket: dropping a client: %s", why);
    conn_close(c);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    conn *c = h->data;
    *buf = uv_buf_init((char *)c->srv->scratch, sizeof c->srv->scratch);
}

/* The request is complete in c->buf: decode it and hand it over. */
static void dispatch(conn *c)
{
    control_server *s = c->srv;
    Pgshift__ControlRequest *req = pgshift__control_request__unpack(NULL, c->len - 4, c->buf + 4);
    free(c->buf);
    c->buf = NULL;
    c->len = c->cap = 0;
    if (req == NULL) {
        drop(c, "request is not a valid ControlRequest");
        return;
    }
    control_call *call = malloc(sizeof *call);
    if (call == NULL) {
        log_error("control socket: out of memory for a call");
        pgshift__control_request__free_unpacked(req, NULL);
        conn_close(c);
        return;
    }
    uv_timer_stop(&c->timer);
    call->c = c;
    c->call = call;
    c->state = CONN_HANDLING;
    s->handler(s->arg, call, req);
    pgshift__control_request__free_unpacked(req, NULL);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    conn *c = stream->data;
    if (c->closing || nread == 0)
        return;
    if (nread == UV_EOF) {
        if (c->state == CONN_READING) {
            /* Nothing or part of a frame: nobody to answer. */
            if (c->len > 0)
                log_warn("control socket: client hung up in the middle of a request");
            conn_close(c);
        } else {
            /* Hung up or only shut down its side: the write will tell. */
            uv_read_stop(stream);
        }
        return;
    }
    if (nread < 0) {
        log_debug("control socket: read: %s", uv_strerror((int)nread));
        conn_close(c);
        return;
    }
    if (c->state != CONN_READING) {
        drop(c, "data after the request");
        return;
    }
    size_t n = (size_t)nread;
    size_t have = c->len + n;
    size_t need = 4;
    if (have >= 4) {
        /* The length may straddle two reads. */
        uint8_t hdr[4];
        for (size_t i = 0; i < 4; i++)
            hdr[i] = i < c->len ? c->buf[i] : (uint8_t)buf->base[i - c->len];
        uint32_t flen = get_be32(hdr);
        /* Refused before anything is allocated for it. */
        if (flen > CONTROL_FRAME_MAX) {
            char why[80];
            snprintf(why, sizeof why, "frame of %" PRIu32 " bytes is over the limit", flen);
            drop(c, why);
            return;
        }
        need = 4 + (size_t)flen;
        if (have > need) {
            drop(c, "data after the request");
            return;
        }
    }
    if (c->cap < need) {
        uint8_t *nb = realloc(c->buf, need);
        if (nb == NULL) {
            log_error("control socket: out of memory for a request");
            conn_close(c);
            return;
        }
        c->buf = nb;
        c->cap = need;
    }
    memcpy(c->buf + c->len, buf->base, n);
    c->len = have;
    if (have == need && have >= 4)
        dispatch(c);
}

static void on_read_timeout(uv_timer_t *t)
{
    conn *c = t->data;
    drop(c, "no complete request in time");
}

static void on_connection(uv_stream_t *server, int status)
{
    control_server *s = server->data;
    if (status < 0) {
        log_warn("control socket: accept: %s", uv_strerror(status));
        return;
    }
    conn *c = calloc(1, sizeof *c);
    if (c == NULL) {
        log_error("control socket: out of memory for a connection");
        return;
    }
    c->srv = s;
    c->state = CONN_READING;
    uv_pipe_init(s->loop, &c->pipe, 0);
    uv_timer_init(s->loop, &c->timer);
    c->pipe.data = c;
    c->timer.data = c;
    c->open_handles = 2;
    conn_list_add(&s->conns, &c->link);
    int rc = uv_accept(server, (uv_stream_t *)&c->pipe);
    if (rc < 0) {
        log_warn("control socket: accept: %s", uv_strerror(rc));
        conn_close(c);
        return;
    }
    uv_os_fd_t fd;
    uid_t uid;
    if (uv_fileno((uv_handle_t *)&c->pipe, &fd) != 0 || !peer_uid(fd, &uid)) {
        log_warn("control socket: cannot tell which user connected (SO_PEERCRED: %s); closing",
                 strerror(errno));
        conn_close(c);
        return;
    }
    if (!control_peer_allowed(uid, geteuid())) {
        log_warn("control socket: refused a connection from uid %u: only uid %u (this run) and "
                 "root may use it",
                 (unsigned)uid, (unsigned)geteuid());
        conn_close(c);
        return;
    }
    rc = uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_read);
    if (rc < 0) {
        log_warn("control socket: read: %s", uv_strerror(rc));
        conn_close(c);
        return;
    }
    if (s->read_timeout_ms > 0)
        uv_timer_start(&c->timer, on_read_timeout, s->read_timeout_ms, 0);
}

static void on_listener_closed(uv_handle_t *h)
{
    control_server *s = h->data;
    s->listener_closed = true;
    maybe_free_server(s);
}

/* An existing socket file: another run's (fail) or a stale one (unlink). */
static bool clear_stale(const char *path, const struct sockaddr_un *sa)
{
    struct stat st;
    if (lstat(path, &st) != 0) {
        if (errno == ENOENT)
            return true;
        log_error("control socket %s: %s", path, strerror(errno));
        return false;
    }
    if (!S_ISSOCK(st.st_mode)) {
        log_error("control socket %s: the path exists and is not a socket", path);
        return false;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        log_error("control socket: socket: %s", strerror(errno));
        return false;
    }
    int rc = connect(fd, (const struct sockaddr *)sa, sizeof *sa);
    int e = errno;
    close(fd);
    /* EAGAIN: a listener whose backlog is full, still a live server. */
    if (rc == 0 || e == EAGAIN) {
        log_error("another pgshift run is serving %s", path);
        return false;
    }
    if (e == ENOENT)
        return true;
    if (e != ECONNREFUSED) {
        log_error("control socket %s: cannot tell whether it is in use: %s", path, strerror(e));
        return false;
    }
    log_info("control socket %s: removing the stale socket of an earlier run", path);
    if (unlink(path) != 0 && errno != ENOENT) {
        log_error("control socket %s: unlink: %s", path, strerror(errno));
        return false;
    }
    return true;
}

control_server *control_listen(uv_loop_t *loop, const char *path, control_handler h, void *arg)
{
    struct sockaddr_un sa;
    if (!fill_addr(&sa, path)) {
        log_error("control socket path is too long (%zu bytes, at most %zu), use a shorter state "
                  "directory: %s",
                  strlen(path), sizeof sa.sun_path - 1, path);
        return NULL;
    }
    char dir[sizeof sa.sun_path], err[512];
    parent_dir(path, dir);
    if (control_private_dir(dir, true, err, sizeof err) != 0) {
        log_error("%s", err);
        return NULL;
    }
    if (!clear_stale(path, &sa))
        return NULL;

    struct sigaction old;
    if (sigaction(SIGPIPE, NULL, &old) == 0 && old.sa_handler == SIG_DFL)
        signal(SIGPIPE, SIG_IGN);

    control_server *s = calloc(1, sizeof *s);
    char *p = strdup(path);
    if (s == NULL || p == NULL) {
        log_error("control socket: out of memory");
        free(s);
        free(p);
        return NULL;
    }
    s->loop = loop;
    s->path = p;
    s->handler = h;
    s->arg = arg;
    s->read_timeout_ms = CONTROL_READ_TIMEOUT_MS;
    uv_pipe_init(loop, &s->listener, 0);
    s->listener.data = s;

    mode_t old_mask = umask(0077);
    int rc = uv_pipe_bind(&s->listener, path);
    umask(old_mask);
    if (rc < 0) {
        log_error("control socket %s: bind: %s", path, uv_strerror(rc));
        goto fail;
    }
    if (chmod(path, 0600) != 0) {
        log_error("control socket %s: chmod: %s", path, strerror(errno));
        goto fail;
    }
    rc = uv_listen((uv_stream_t *)&s->listener, LISTEN_BACKLOG, on_connection);
    if (rc < 0) {
        log_error("control socket %s: listen: %s", path, uv_strerror(rc));
        goto fail;
    }
    log_debug("control socket listening on %s", path);
    return s;

fail:
    /* The handle is on the loop: it is freed when the loop next runs, and
     * libuv unlinks the file if the bind went through. */
    s->closing = true;
    uv_close((uv_handle_t *)&s->listener, on_listener_closed);
    return NULL;
}

void control_set_read_timeout(control_server *s, unsigned timeout_ms)
{
    s->read_timeout_ms = timeout_ms;
}

void control_close(control_server *s)
{
    if (s == NULL || s->closing)
        return;
    s->closing = true;
    /* libuv unlinks the path when it closes a bound pipe, before closing
     * the descriptor, so a new run's socket is never removed by mistake. */
    uv_close((uv_handle_t *)&s->listener, on_listener_closed);
    for (conn_link *k = s->conns.head; k; k = k->next) {
        conn *c = (conn *)k;
        if (c->closing)
            continue;
        if (c->call) {
            c->call->c = NULL;
            c->call = NULL;
            c->state = CONN_WRITING;
            /* uv_write goes to the kernel at once; closing right after
             * still delivers what was written. */
            send_reply(c, false, "pgshift run stopped", NULL, 0);
        }
        conn_close(c);
    }
    maybe_free_server(s);
}

/* --- client --- */

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits for `events` until the deadline (-1: none). 1 ready, 0 timed out,
 * -1 error (errno). */
static int wait_fd(int fd, short events, int64_t deadline)
{
    for (;;) {
        int ms = -1;
        if (deadline >= 0) {
            int64_t left = deadline - mono_ms();
            if (left <= 0)
                return 0;
            ms = left > INT32_MAX ? INT32_MAX : (int)left;
        }
        struct pollfd p = {.fd = fd, .events = events};
        int rc = poll(&p, 1, ms);
        if (rc < 0 && errno == EINTR)
            continue;
        return rc < 0 ? -1 : rc > 0 ? 1 : 0;
    }
}

/* 1 sent, 0 timed out, -1 error (errno). */
static int send_all(int fd, const uint8_t *p, size_t n, int64_t deadline)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
            return -1;
        int rc = wait_fd(fd, POLLOUT, deadline);
        if (rc <= 0)
            return rc;
    }
    return 1;
}

/* 1 read, 0 timed out, -1 error (errno), -2 end of stream. */
static int recv_all(int fd, uint8_t *p, size_t n, int64_t deadline)
{
    while (n > 0) {
        ssize_t r = recv(fd, p, n, 0);
        if (r > 0) {
            p += r;
            n -= (size_t)r;
            continue;
        }
        if (r == 0)
            return -2;
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return -1;
        int rc = wait_fd(fd, POLLIN, deadline);
        if (rc <= 0)
            return rc;
    }
    return 1;
}

/* Turns a send_all/recv_all failure into the error line. */
static int io_fail(int rc, const char *path, int timeout_ms, char *err, size_t errlen)
{
    if (rc == 0)
        set_err(err, errlen, "control socket %s: no reply within %d ms", path, timeout_ms);
    else if (rc == -2)
        set_err(err, errlen,
                "control socket %s: the pgshift run closed the connection without "
                "replying",
                path);
    else
        set_err(err, errlen, "control socket %s: %s", path, strerror(errno));
    return -2;
}

/* One request on the client side: where it goes, how long it may take,
 * where its error line goes. */
typedef struct request_io {
    const char *path;
    int timeout_ms;
    int64_t deadline;
    char *err;
    size_t errlen;
} request_io;

/* Checks that the socket's directory is private to this user: 0 when it
 * is, -1 when no run listens there, -2 otherwise (err set). */
static int check_socket_dir(const char *path, struct sockaddr_un *sa, char *err, size_t errlen)
{
    if (!fill_addr(sa, path)) {
        set_err(err, errlen, "control socket path too long (%zu bytes, at most %zu): %s",
                strlen(path), sizeof sa->sun_path - 1, path);
        return -2;
    }
    char dir[sizeof sa->sun_path];
    parent_dir(path, dir);
    int drc = control_private_dir(dir, false, err, errlen);
    if (drc == -1)
        set_err(err, errlen, "no pgshift run is listening on %s", path);
    return drc;
}

/* Connects to the socket: 0 with *fdp set, -1 when no run listens there,
 * -2 otherwise (err set). */
static int connect_socket(const request_io *io, const struct sockaddr_un *sa, int *fdp)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        set_err(io->err, io->errlen, "control socket: socket: %s", strerror(errno));
        return -2;
    }
    /* A Unix connect blocks while the listener's backlog is full; the send
     * timeout bounds that wait. */
    if (io->timeout_ms > 0) {
        struct timeval tv = {.tv_sec = io->timeout_ms / 1000,
                             .tv_usec = (io->timeout_ms % 1000) * 1000};
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    }
    int rc;
    do
        rc = connect(fd, (const struct sockaddr *)sa, sizeof *sa);
    while (rc != 0 && errno == EINTR);
    if (rc != 0) {
        int e = errno;
        close(fd);
        if (e == ENOENT || e == ECONNREFUSED) {
            set_err(io->err, io->errlen, "no pgshift run is listening on %s", io->path);
            return -1;
        }
        if (e == EAGAIN)
            set_err(io->err, io->errlen, "control socket %s: connect timed out after %d ms",
                    io->path, io->timeout_ms);
        else
            set_err(io->err, io->errlen, "control socket %s: connect: %s", io->path, strerror(e));
        return -2;
    }
    *fdp = fd;
    return 0;
}

/* Before anything is sent: the request may be a cutover or an abort. Only
 * this user or root may serve it; then the socket goes non-blocking. */
static bool check_peer(const request_io *io, int fd)
{
    uid_t uid;
    if (!peer_uid(fd, &uid)) {
        set_err(io->err, io->errlen, "control socket %s: cannot tell which user serves it: %s",
                io->path, strerror(errno));
        return false;
    }
    if (!control_peer_allowed(uid, geteuid())) {
        set_err(io->err, io->errlen,
                "control socket %s is served by uid %u, neither this user (uid %u) nor root; "
                "not talking to it",
                io->path, (unsigned)uid, (unsigned)geteuid());
        return false;
    }
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0) {
        set_err(io->err, io->errlen, "control socket: fcntl: %s", strerror(errno));
        return false;
    }
    return true;
}

/* Sends the request as one length-prefixed frame. */
static bool send_request(const request_io *io, int fd, const Pgshift__ControlRequest *req)
{
    size_t n = pgshift__control_request__get_packed_size(req);
    uint8_t *out = malloc(4 + n);
    if (out == NULL) {
        set_err(io->err, io->errlen, "control socket: out of memory");
        return false;
    }
    put_be32(out, (uint32_t)n);
    pgshift__control_request__pack(req, out + 4);
    int rc = send_all(fd, out, 4 + n, io->deadline);
    free(out);
    if (rc != 1) {
        io_fail(rc, io->path, io->timeout_ms, io->err, io->errlen);
        return false;
    }
    return true;
}

/* Reads the reply frame and closes fd: 0 with *reply set, else -2 (err
 * set). */
static int recv_reply(const request_io *io, int fd, Pgshift__ControlReply **reply)
{
    uint8_t hdr[4];
    int rc = recv_all(fd, hdr, 4, io->deadline);
    if (rc != 1) {
        io_fail(rc, io->path, io->timeout_ms, io->err, io->errlen);
        close(fd);
        return -2;
    }
    uint32_t len = get_be32(hdr);
    if (len > CONTROL_FRAME_MAX) {
        set_err(io->err, io->errlen, "control socket %s: reply of %u bytes is over the limit",
                io->path, len);
        close(fd);
        return -2;
    }
    uint8_t *in = malloc(len ? len : 1);
    if (in == NULL) {
        set_err(io->err, io->errlen, "control socket: out of memory");
        close(fd);
        return -2;
    }
    rc = recv_all(fd, in, len, io->deadline);
    close(fd);
    if (rc != 1) {
        free(in);
        return io_fail(rc, io->path, io->timeout_ms, io->err, io->errlen);
    }
    *reply = pgshift__control_reply__unpack(NULL, len, in);
    free(in);
    if (*reply == NULL) {
        set_err(io->err, io->errlen, "control socket %s: the reply is not a valid ControlReply",
                io->path);
        return -2;
    }
    return 0;
}

int control_request(const char *path, const Pgshift__ControlRequest *req,
                    Pgshift__ControlReply **reply, int timeout_ms, char *err, size_t errlen)
{
    *reply = NULL;
    struct sockaddr_un sa;
    int rc = check_socket_dir(path, &sa, err, errlen);
    if (rc != 0)
        return rc;
    request_io io = {
        .path = path,
        .timeout_ms = timeout_ms,
        .deadline = timeout_ms > 0 ? mono_ms() + timeout_ms : -1,
        .err = err,
        .errlen = errlen,
    };
    int fd;
    rc = connect_socket(&io, &sa, &fd);
    if (rc != 0)
        return rc;
    if (!check_peer(&io, fd) || !send_request(&io, fd, req)) {
        close(fd);
        return -2;
    }
    return recv_reply(&io, fd, reply);
}

char *control_socket_dir(const char *state_dir)
{
    size_t d = strlen(state_dir);
    const char *sep = d > 0 && state_dir[d - 1] == '/' ? "" : "/";
    char *p = NULL;
    if (asprintf(&p, "%s%spgshift-%u", state_dir, sep, (unsigned)geteuid()) < 0)
        return NULL;
    return p;
}

char *control_socket_path(const char *state_dir, const char *name)
{
    char *dir = control_socket_dir(state_dir);
    char *p = NULL;
    if (dir == NULL || asprintf(&p, "%s/pgshift-%s.sock", dir, name) < 0)
        p = NULL;
    free(dir);
    return p;
}
