/* http.c: the HTTP server of a running migration. Each connection feeds what
 * it reads to an http-parser, which is paused at the end of every request so
 * that the request is answered, in order, before the parser goes on with the
 * next one (pipelining). The answer is written at once; while the kernel will
 * not take more of it (a client not reading), the rest of the input is kept
 * and reading stops, so a client cannot make the server queue responses
 * without bound. A connection that is done (Connection: close, bad request,
 * end of input) is shut down after its last response and closed when the
 * client hangs up or a short linger time has passed: closing with unread
 * input would send a reset, and the client could lose the response. */
#include "pgshift/connlist.h"
#include "pgshift/http.h"
#include "pgshift/log.h"

#include <http_parser.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define LISTEN_BACKLOG 128
#define SCRATCH_SIZE   65536
/* How long a finished connection waits for the client to hang up. */
#define LINGER_MS 2000

#define TEXT_PLAIN "text/plain; charset=utf-8"

typedef struct conn {
    conn_link link; /* first: s->conns holds these */
    uv_tcp_t tcp;
    uv_timer_t timer; /* idle timeout, then the linger time */
    uv_shutdown_t shutdown;
    http_server *srv;
    int open_handles;
    http_parser parser;
    bool closing;   /* uv_close called */
    bool finishing; /* no more requests: shut down after the last response */
    bool shut_done; /* the shutdown completed */
    bool read_eof;  /* the client will send nothing more */
    bool reading;
    bool request_done; /* set by on_message_complete, taken by feed */
    size_t req_bytes;  /* bytes of the request being parsed */
    char *url;         /* the request target so far */
    size_t url_len, url_cap;
    char *pending; /* input kept while the client does not read */
    size_t pending_len;
} conn;

struct http_server {
    uv_loop_t *loop;
    uv_tcp_t listener;
    http_handler handler;
    void *arg;
    int port;
    bool loopback; /* bound to 127.0.0.0/8 or ::1 */
    unsigned idle_timeout_ms;
    conn_list conns;
    bool refusing; /* at HTTP_MAX_CONNS, logged once until a slot frees */
    bool closing;
    bool listener_closed;
    char scratch[SCRATCH_SIZE]; /* read buffer; reads are used or copied out at once */
};

typedef struct write_req {
    uv_write_t req;
    conn *c;
    char *body; /* NULL for HEAD and empty bodies */
    char head[];
} write_req;

static void conn_feed(conn *c, const char *data, size_t len);
static void conn_finish(conn *c);

/* --- connection lifetime --- */

static void maybe_free_server(http_server *s)
{
    if (s->closing && s->listener_closed && s->conns.head == NULL)
        free(s);
}

static void on_conn_handle_closed(uv_handle_t *h)
{
    conn *c = h->data;
    if (--c->open_handles > 0)
        return;
    http_server *s = c->srv;
    conn_list_remove(&s->conns, &c->link);
    if (s->conns.n < HTTP_MAX_CONNS)
        s->refusing = false;
    free(c->url);
    free(c->pending);
    free(c);
    maybe_free_server(s);
}

/* Closes at once. Pending writes and the shutdown are cancelled; their
 * callbacks run before the close callbacks, so c is still there for them. */
static void conn_close(conn *c)
{
    if (c->closing)
        return;
    c->closing = true;
    uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_conn_handle_closed);
}

static void on_timeout(uv_timer_t *t)
{
    conn *c = t->data;
    log_debug("http: closing a connection: %s", c->shut_done ? "linger time over" : "idle");
    conn_close(c);
}

static void touch(conn *c)
{
    if (!c->closing && !c->shut_done && c->srv->idle_timeout_ms > 0)
        uv_timer_start(&c->timer, on_timeout, c->srv->idle_timeout_ms, 0);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    conn *c = h->data;
    *buf = uv_buf_init(c->srv->scratch, sizeof c->srv->scratch);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);

static void start_reading(conn *c)
{
    if (c->reading || c->read_eof || c->closing)
        return;
    int rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (rc < 0) {
        log_debug("http: read: %s", uv_strerror(rc));
        conn_close(c);
        return;
    }
    c->reading = true;
}

static void stop_reading(conn *c)
{
    if (!c->reading)
        return;
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = false;
}

static bool write_blocked(conn *c)
{
    return uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) > 0;
}

static void on_write(uv_write_t *req, int status)
{
    write_req *w = (write_req *)req;
    conn *c = w->c;
    free(w->body);
    free(w);
    if (c->closing)
        return;
    if (status < 0) {
        log_debug("http: response dropped, client gone: %s", uv_strerror(status));
        conn_close(c);
        return;
    }
    touch(c);
    /* The kernel took everything: go on with the input kept meanwhile. */
    if (c->finishing || write_blocked(c))
        return;
    char *p = c->pending;
    size_t n = c->pending_len;
    c->pending = NULL;
    c->pending_len = 0;
    if (p) {
        conn_feed(c, p, n);
        free(p);
    }
    if (c->pending == NULL && !c->finishing)
        start_reading(c);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    conn *c = req->data;
    if (c->closing)
        return;
    if (status < 0 || c->read_eof) {
        conn_close(c);
        return;
    }
    /* Wait a little for the client's hang-up, reading and dropping what it
     * still sends. */
    c->shut_done = true;
    uv_timer_start(&c->timer, on_timeout, LINGER_MS, 0);
}

/* No more requests on this connection: the responses queued so far go out,
 * then the write side is shut down. */
static void conn_finish(conn *c)
{
    if (c->finishing || c->closing)
        return;
    c->finishing = true;
    free(c->pending);
    c->pending = NULL;
    c->pending_len = 0;
    c->shutdown.data = c;
    int rc = uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, on_shutdown);
    if (rc < 0) {
        log_debug("http: shutdown: %s", uv_strerror(rc));
        conn_close(c);
        return;
    }
    start_reading(c);
}

/* --- responses --- */

/* Queues one response and takes res->body. Returns false if the connection
 * was closed. */
static bool send_response(conn *c, http_response *res, bool head, bool keep_alive, bool http10,
                          bool allow)
{
    const char *ctype = res->content_type ? res->content_type : TEXT_PLAIN;
    const char *conn_hdr = !keep_alive ? "Connection: close\r\n"
                           : http10    ? "Connection: keep-alive\r\n"
                                       : "";
    const char *fmt = "HTTP/1.1 %d %s\r\n"
                      "Content-Type: %s\r\n"
                      "Content-Length: %zu\r\n"
                      "Cache-Control: no-store\r\n"
                      "%s%s\r\n";
    const char *allow_hdr = allow ? "Allow: GET, HEAD\r\n" : "";
    const char *reason = http_status_str((enum http_status)res->status);
    int n = snprintf(NULL, 0, fmt, res->status, reason, ctype, res->len, allow_hdr, conn_hdr);
    write_req *w = n < 0 ? NULL : malloc(sizeof *w + (size_t)n + 1);
    if (w == NULL) {
        log_error("http: out of memory for a response");
        free(res->body);
        res->body = NULL;
        conn_close(c);
        return false;
    }
    snprintf(w->head, (size_t)n + 1, fmt, res->status, reason, ctype, res->len, allow_hdr,
             conn_hdr);
    w->c = c;
    w->body = NULL;
    uv_buf_t bufs[2] = {uv_buf_init(w->head, (unsigned)n)};
    unsigned nbufs = 1;
    if (!head && res->len > 0) {
        w->body = res->body;
        bufs[nbufs++] = uv_buf_init(res->body, (unsigned)res->len);
    } else {
        free(res->body);
    }
    res->body = NULL;
    int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, bufs, nbufs, on_write);
    if (rc < 0) {
        log_debug("http: response dropped: %s", uv_strerror(rc));
        free(w->body);
        free(w);
        conn_close(c);
        return false;
    }
    return true;
}

/* A response made by the server itself. */
static void send_text(conn *c, int status, const char *text, bool head, bool keep_alive,
                      bool http10)
{
    http_response res = {.status = status, .content_type = TEXT_PLAIN};
    res.body = strdup(text);
    if (res.body == NULL) {
        log_error("http: out of memory for a response");
        conn_close(c);
        return;
    }
    res.len = strlen(text);
    send_response(c, &res, head, keep_alive, http10, status == 405);
}

static void bad_request(conn *c, const char *why)
{
    log_debug("http: bad request: %s", why);
    send_text(c, 400, "bad request\n", false, false, false);
    conn_finish(c);
}

static bool valid_response(const http_response *res)
{
    if (res->status < 200 || res->status > 599 || res->status == 204 || res->status == 304)
        return false;
    if ((res->body == NULL && res->len > 0) || res->len > UINT_MAX)
        return false;
    return res->content_type == NULL || strpbrk(res->content_type, "\r\n") == NULL;
}

/* The parser stopped at the end of a request: answer it. */
static void answer(conn *c)
{
    http_parser *p = &c->parser;
    bool keep_alive = http_should_keep_alive(p) && !p->upgrade;
    bool http10 = p->http_major == 1 && p->http_minor == 0;
    enum http_method m = (enum http_method)p->method;
    bool head = m == HTTP_HEAD;

    if (m != HTTP_GET && m != HTTP_HEAD) {
        send_text(c, 405, "method not allowed\n", false, keep_alive, http10);
    } else {
        struct http_parser_url u;
        http_parser_url_init(&u);
        if (http_parser_parse_url(c->url, c->url_len, 0, &u) != 0 ||
            !(u.field_set & (1 << UF_PATH))) {
            bad_request(c, "no path in the request target");
            return;
        }
        /* The path, NUL-terminated in place. */
        char *path = c->url + u.field_data[UF_PATH].off;
        path[u.field_data[UF_PATH].len] = '\0';
        http_response res = {0};
        c->srv->handler(c->srv->arg, http_method_str(m), path, &res);
        if (c->closing) {
            free(res.body);
            return;
        }
        if (!valid_response(&res)) {
            log_error("http: the handler gave an invalid response to %s %s (status %d)",
                      http_method_str(m), path, res.status);
            free(res.body);
            send_text(c, 500, "internal server error\n", head, keep_alive, http10);
        } else if (!send_response(c, &res, head, keep_alive, http10, false)) {
            return;
        }
    }
    if (!keep_alive)
        conn_finish(c);
}

/* --- parsing --- */

static int on_message_begin(http_parser *p)
{
    conn *c = p->data;
    c->url_len = 0;
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    conn *c = p->data;
    if (c->url_len + len > HTTP_MAX_REQUEST)
        return 1;
    if (c->url_len + len + 1 > c->url_cap) {
        size_t cap = c->url_len + len + 1 < 256 ? 256 : HTTP_MAX_REQUEST + 1;
        char *nu = realloc(c->url, cap);
        if (nu == NULL) {
            log_error("http: out of memory for a request");
            return 1;
        }
        c->url = nu;
        c->url_cap = cap;
    }
    memcpy(c->url + c->url_len, at, len);
    c->url_len += len;
    c->url[c->url_len] = '\0';
    return 0;
}

static int on_message_complete(http_parser *p)
{
    conn *c = p->data;
    c->request_done = true;
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_message_complete = on_message_complete,
};

/* Parses and answers the requests in data, one at a time. What cannot be
 * parsed yet because the client is not reading its responses is kept in
 * c->pending, and reading stops. */
static void conn_feed(conn *c, const char *data, size_t len)
{
    size_t off = 0;
    while (off < len && !c->finishing && !c->closing) {
        if (write_blocked(c)) {
            char *keep = malloc(len - off);
            if (keep == NULL) {
                log_error("http: out of memory for a request");
                conn_close(c);
                return;
            }
            memcpy(keep, data + off, len - off);
            c->pending = keep;
            c->pending_len = len - off;
            stop_reading(c);
            return;
        }
        c->request_done = false;
        size_t n = http_parser_execute(&c->parser, &parser_settings, data + off, len - off);
        off += n;
        c->req_bytes += n;
        enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
        if (c->req_bytes > HTTP_MAX_REQUEST || e == HPE_CB_url) {
            bad_request(c, "request too large");
            return;
        }
        if (e == HPE_PAUSED && c->request_done) {
            http_parser_pause(&c->parser, 0);
            c->req_bytes = 0;
            answer(c);
            continue;
        }
        if (e != HPE_OK) {
            bad_request(c, http_errno_description(e));
            return;
        }
        if (n == 0)
            break; /* cannot happen; never spin */
    }
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    conn *c = stream->data;
    if (c->closing || nread == 0)
        return;
    if (nread < 0) {
        if (nread != UV_EOF) {
            log_debug("http: read: %s", uv_strerror((int)nread));
            conn_close(c);
            return;
        }
        stop_reading(c);
        c->read_eof = true;
        /* A half-closed client still gets its responses. */
        if (c->shut_done)
            conn_close(c);
        else
            conn_finish(c);
        return;
    }
    if (c->finishing)
        return; /* dropped: no more requests are answered */
    touch(c);
    conn_feed(c, buf->base, (size_t)nread);
}

/* --- server --- */

static void on_refused_closed(uv_handle_t *h)
{
    free(h);
}

/* Over the limit: accepted and closed, so the client fails fast. */
static void refuse(http_server *s)
{
    uv_tcp_t *t = malloc(sizeof *t);
    if (t == NULL) {
        log_error("http: out of memory for a connection");
        return;
    }
    uv_tcp_init(s->loop, t);
    uv_accept((uv_stream_t *)&s->listener, (uv_stream_t *)t);
    uv_close((uv_handle_t *)t, on_refused_closed);
    if (!s->refusing)
        log_warn("http server: %d connections open, refusing more", HTTP_MAX_CONNS);
    s->refusing = true;
}

static void on_connection(uv_stream_t *server, int status)
{
    http_server *s = server->data;
    if (status < 0) {
        log_warn("http server: accept: %s", uv_strerror(status));
        return;
    }
    if (s->conns.n >= HTTP_MAX_CONNS) {
        refuse(s);
        return;
    }
    conn *c = calloc(1, sizeof *c);
    if (c == NULL) {
        log_error("http: out of memory for a connection");
        return;
    }
    c->srv = s;
    uv_tcp_init(s->loop, &c->tcp);
    uv_timer_init(s->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->open_handles = 2;
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    conn_list_add(&s->conns, &c->link);
    int rc = uv_accept(server, (uv_stream_t *)&c->tcp);
    if (rc < 0) {
        log_warn("http server: accept: %s", uv_strerror(rc));
        conn_close(c);
        return;
    }
    /* Responses are single writes; pipelined ones must not wait for acks. */
    uv_tcp_nodelay(&c->tcp, 1);
    start_reading(c);
    touch(c);
}

static void on_listener_closed(uv_handle_t *h)
{
    http_server *s = h->data;
    s->listener_closed = true;
    maybe_free_server(s);
}

/* "[host:]port" into sa; on failure *why says what is wrong. */
static bool parse_addr(const char *addr, struct sockaddr_storage *sa, const char **why)
{
    char host[64];
    const char *port;
    bool v6 = false;
    if (addr == NULL || *addr == '\0') {
        *why = "empty address";
        return false;
    }
    if (addr[0] == '[') {
        const char *end = strchr(addr, ']');
        if (end == NULL || end[1] != ':') {
            *why = "expected [IPv6 address]:port";
            return false;
        }
        size_t n = (size_t)(end - addr - 1);
        if (n >= sizeof host) {
            *why = "not an IPv6 address";
            return false;
        }
        memcpy(host, addr + 1, n);
        host[n] = '\0';
        port = end + 2;
        v6 = true;
    } else {
        const char *colon = strrchr(addr, ':');
        size_t n = colon ? (size_t)(colon - addr) : 0;
        if (n >= sizeof host) {
            *why = "not an IPv4 address";
            return false;
        }
        memcpy(host, addr, n);
        host[n] = '\0';
        port = colon ? colon + 1 : addr;
        if (memchr(host, ':', n)) {
            *why = "an IPv6 address goes in brackets: [::1]:9187";
            return false;
        }
        /* Loopback unless told otherwise: the pages are not meant for the
         * network by default. */
        if (n == 0 || strcmp(host, "localhost") == 0)
            strcpy(host, "127.0.0.1");
    }
    size_t plen = strlen(port);
    if (plen == 0 || plen > 5 || strspn(port, "0123456789") != plen || atoi(port) > 65535) {
        *why = "the port must be a number from 0 to 65535";
        return false;
    }
    int p = atoi(port);
    memset(sa, 0, sizeof *sa);
    int rc = v6 ? uv_ip6_addr(host, p, (struct sockaddr_in6 *)sa)
                : uv_ip4_addr(host, p, (struct sockaddr_in *)sa);
    if (rc != 0) {
        *why = v6 ? "not an IPv6 address" : "not a numeric IPv4 address";
        return false;
    }
    return true;
}

static bool is_loopback(const struct sockaddr_storage *sa)
{
    if (sa->ss_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
    if (sa->ss_family != AF_INET6)
        return false;
    const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
    return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
}

/* "127.0.0.1:9187" or "[::1]:9187". */
static void format_addr(const struct sockaddr_storage *sa, char *out, size_t n)
{
    char ip[64] = "?";
    int port;
    if (sa->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
        uv_ip6_name(a, ip, sizeof ip);
        port = ntohs(a->sin6_port);
        snprintf(out, n, "[%s]:%d", ip, port);
    } else {
        const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
        uv_ip4_name(a, ip, sizeof ip);
        port = ntohs(a->sin_port);
        snprintf(out, n, "%s:%d", ip, port);
    }
}

http_server *http_listen(uv_loop_t *loop, const char *addr, http_handler h, void *arg)
{
    struct sockaddr_storage sa;
    const char *why = NULL;
    if (!parse_addr(addr, &sa, &why)) {
        log_error("http server: bad listen address \"%s\": %s", addr ? addr : "", why);
        return NULL;
    }
    char shown[96];
    format_addr(&sa, shown, sizeof shown);

    struct sigaction old;
    if (sigaction(SIGPIPE, NULL, &old) == 0 && old.sa_handler == SIG_DFL)
        signal(SIGPIPE, SIG_IGN);

    http_server *s = calloc(1, sizeof *s);
    if (s == NULL) {
        log_error("http server: out of memory");
        return NULL;
    }
    s->loop = loop;
    s->handler = h;
    s->arg = arg;
    s->idle_timeout_ms = HTTP_IDLE_TIMEOUT_MS;
    uv_tcp_init(loop, &s->listener);
    s->listener.data = s;

    /* libuv may report a failed bind only at listen. */
    int rc = uv_tcp_bind(&s->listener, (const struct sockaddr *)&sa, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&s->listener, LISTEN_BACKLOG, on_connection);
    if (rc < 0) {
        log_error("http server: cannot listen on %s: %s", shown, uv_strerror(rc));
        goto fail;
    }
    struct sockaddr_storage bound;
    int blen = sizeof bound;
    rc = uv_tcp_getsockname(&s->listener, (struct sockaddr *)&bound, &blen);
    if (rc < 0) {
        log_error("http server: %s: getsockname: %s", shown, uv_strerror(rc));
        goto fail;
    }
    format_addr(&bound, shown, sizeof shown);
    s->port = bound.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&bound)->sin6_port)
                                          : ntohs(((struct sockaddr_in *)&bound)->sin_port);
    s->loopback = is_loopback(&bound);
    log_debug("http server listening on %s", shown);
    return s;

fail:
    /* The handle is on the loop: freed when the loop next runs. */
    s->closing = true;
    uv_close((uv_handle_t *)&s->listener, on_listener_closed);
    return NULL;
}

int http_port(const http_server *s)
{
    return s->port;
}

bool http_is_loopback(const http_server *s)
{
    return s->loopback;
}

void http_set_idle_timeout(http_server *s, unsigned timeout_ms)
{
    s->idle_timeout_ms = timeout_ms;
}

void http_close(http_server *s)
{
    if (s == NULL || s->closing)
        return;
    s->closing = true;
    uv_close((uv_handle_t *)&s->listener, on_listener_closed);
    for (conn_link *k = s->conns.head; k; k = k->next)
        conn_close((conn *)k);
    maybe_free_server(s);
}
