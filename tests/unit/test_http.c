/* Unit tests for the HTTP server. As in test_control.c, the server's loop runs
 * in a second thread and the test thread is the client, with plain blocking
 * sockets; the test thread asks the loop thread to act through a uv_async_t.
 * Assertions only run on the test thread. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "pgshift/http.h"
#include "pgshift/status.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#define WAIT_MS 10000

#define METRICS_TYPE "text/plain; version=0.0.4; charset=utf-8"
#define METRICS_BODY                                                                               \
    "# HELP pgshift_rows_copied Rows copied.\n"                                                    \
    "# TYPE pgshift_rows_copied counter\n"                                                         \
    "pgshift_rows_copied{table=\"public.t\"} 42\n"
#define STATUS_TYPE "application/json"
#define STATUS_BODY "{\"migration\":\"m1\",\"phase\":\"copying\"}"
#define BIG_LEN     (1024 * 1024)
#define HUGE_LEN    (16 * 1024 * 1024) /* more than the socket buffers hold */
#define MAX_LOG     256

typedef struct harness harness;
typedef void (*loop_action)(harness *h);

struct harness {
    bool running;
    uv_loop_t loop;
    uv_async_t wake;
    pthread_t thread;
    http_server *srv;
    int port;
    unsigned idle_ms;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* shared with the loop thread, under mu */
    int calls;
    char log[MAX_LOG][64]; /* "METHOD path" of each call */
    loop_action action;
    bool action_done;
};

typedef struct client {
    int fd;
    size_t len;
    char buf[65536];
} client;

typedef struct response {
    int status;
    char head[8192]; /* status line and headers, without the blank line */
    size_t content_length;
    char *body; /* NUL-terminated; NULL for HEAD */
} response;

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

/* --- loop thread --- */

static char *dup_body(const char *s, size_t *len)
{
    *len = strlen(s);
    return strdup(s);
}

static void handler(void *arg, const char *method, const char *path, http_response *res)
{
    harness *h = arg;
    pthread_mutex_lock(&h->mu);
    if (h->calls < MAX_LOG)
        snprintf(h->log[h->calls], sizeof h->log[0], "%s %s", method, path);
    h->calls++;
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);

    if (strcmp(path, "/metrics") == 0) {
        res->status = 200;
        res->content_type = METRICS_TYPE;
        res->body = dup_body(METRICS_BODY, &res->len);
    } else if (strcmp(path, "/status") == 0) {
        res->status = 200;
        res->content_type = STATUS_TYPE;
        res->body = dup_body(STATUS_BODY, &res->len);
    } else if (strcmp(path, "/big") == 0 || strcmp(path, "/huge") == 0) {
        size_t n = path[1] == 'b' ? BIG_LEN : HUGE_LEN;
        res->status = 200;
        res->content_type = "application/octet-stream";
        res->body = malloc(n);
        for (size_t i = 0; i < n; i++)
            res->body[i] = (char)('a' + i % 26);
        res->len = n;
    } else if (strcmp(path, "/stop") == 0) {
        /* Closing the server from inside the handler. */
        http_close(h->srv);
        h->srv = NULL;
        res->status = 200;
        res->body = dup_body("stopping\n", &res->len);
    } else if (strcmp(path, "/broken") == 0) {
        /* No status: the server must answer 500 and free the body. */
        res->body = dup_body("lost", &res->len);
    } else {
        res->status = 404;
        res->body = dup_body("not found\n", &res->len);
    }
}

static void on_wake(uv_async_t *a)
{
    harness *h = a->data;
    pthread_mutex_lock(&h->mu);
    loop_action fn = h->action;
    pthread_mutex_unlock(&h->mu);
    if (fn)
        fn(h);
    pthread_mutex_lock(&h->mu);
    h->action = NULL;
    h->action_done = true;
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
}

static void *loop_main(void *arg)
{
    harness *h = arg;
    uv_run(&h->loop, UV_RUN_DEFAULT);
    return NULL;
}

static void act_stop(harness *h)
{
    http_close(h->srv);
    h->srv = NULL;
    uv_close((uv_handle_t *)&h->wake, NULL);
}

static void act_set_idle(harness *h)
{
    http_set_idle_timeout(h->srv, h->idle_ms);
}

/* --- test thread: harness --- */

static void run_on_loop(harness *h, loop_action fn)
{
    pthread_mutex_lock(&h->mu);
    h->action = fn;
    h->action_done = false;
    pthread_mutex_unlock(&h->mu);
    uv_async_send(&h->wake);
    pthread_mutex_lock(&h->mu);
    while (!h->action_done)
        pthread_cond_wait(&h->cv, &h->mu);
    pthread_mutex_unlock(&h->mu);
}

static int calls(harness *h)
{
    pthread_mutex_lock(&h->mu);
    int n = h->calls;
    pthread_mutex_unlock(&h->mu);
    return n;
}

static void assert_logged(harness *h, int i, const char *what)
{
    pthread_mutex_lock(&h->mu);
    char got[64];
    snprintf(got, sizeof got, "%s", i < h->calls ? h->log[i] : "(none)");
    pthread_mutex_unlock(&h->mu);
    assert_string_equal(got, what);
}

static void harness_start(harness *h)
{
    assert_int_equal(uv_loop_init(&h->loop), 0);
    uv_async_init(&h->loop, &h->wake, on_wake);
    h->wake.data = h;
    h->srv = http_listen(&h->loop, "127.0.0.1:0", handler, h);
    assert_non_null(h->srv);
    h->port = http_port(h->srv);
    assert_true(h->port > 0 && h->port < 65536);
    assert_int_equal(pthread_create(&h->thread, NULL, loop_main, h), 0);
    h->running = true;
}

static void harness_stop(harness *h)
{
    if (!h->running)
        return;
    h->running = false;
    run_on_loop(h, act_stop);
    pthread_join(h->thread, NULL);
    /* Fails with UV_EBUSY if a handle was left open. */
    assert_int_equal(uv_loop_close(&h->loop), 0);
}

static int setup(void **state)
{
    harness *h = calloc(1, sizeof *h);
    if (h == NULL)
        return -1;
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->cv, NULL);
    *state = h;
    return 0;
}

static int teardown(void **state)
{
    harness *h = *state;
    harness_stop(h);
    pthread_mutex_destroy(&h->mu);
    pthread_cond_destroy(&h->cv);
    free(h);
    return 0;
}

/* --- test thread: client --- */

static int tcp_connect_rcvbuf(int port, int rcvbuf)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    if (rcvbuf > 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    return fd;
}

static client *client_open(harness *h)
{
    client *cl = calloc(1, sizeof *cl);
    assert_non_null(cl);
    cl->fd = tcp_connect_rcvbuf(h->port, 0);
    return cl;
}

static void client_free(client *cl)
{
    if (cl->fd >= 0)
        close(cl->fd);
    free(cl);
}

static void send_str(client *cl, const char *s)
{
    size_t n = strlen(s);
    assert_int_equal(send(cl->fd, s, n, MSG_NOSIGNAL), (ssize_t)n);
}

/* Reads more; false on end of stream, error or timeout. */
static bool fill(client *cl)
{
    if (cl->len == sizeof cl->buf)
        return false;
    struct pollfd pf = {.fd = cl->fd, .events = POLLIN};
    if (poll(&pf, 1, WAIT_MS) != 1)
        return false;
    ssize_t r = recv(cl->fd, cl->buf + cl->len, sizeof cl->buf - cl->len, 0);
    if (r <= 0)
        return false;
    cl->len += (size_t)r;
    return true;
}

static void consume(client *cl, size_t n)
{
    memmove(cl->buf, cl->buf + n, cl->len - n);
    cl->len -= n;
}

/* The value of header `name`, or NULL. */
static const char *header(const response *r, const char *name, char *out, size_t n)
{
    const char *p = strstr(r->head, "\r\n");
    while (p != NULL) {
        p += 2;
        const char *eol = strstr(p, "\r\n");
        size_t linelen = eol ? (size_t)(eol - p) : strlen(p);
        const char *colon = memchr(p, ':', linelen);
        if (colon && (size_t)(colon - p) == strlen(name) &&
            strncasecmp(p, name, strlen(name)) == 0) {
            const char *v = colon + 1;
            while (*v == ' ')
                v++;
            size_t vl = (size_t)(p + linelen - v);
            if (vl >= n)
                vl = n - 1;
            memcpy(out, v, vl);
            out[vl] = '\0';
            return out;
        }
        p = eol;
    }
    return NULL;
}

/* Reads one response (without its body for HEAD). False if the connection
 * ended before a whole response. Every response must have Content-Length. */
static bool read_response(client *cl, bool head, response *r)
{
    memset(r, 0, sizeof *r);
    char *end;
    while ((end = memmem(cl->buf, cl->len, "\r\n\r\n", 4)) == NULL)
        if (!fill(cl))
            return false;
    size_t hlen = (size_t)(end - cl->buf);
    assert_true(hlen < sizeof r->head);
    memcpy(r->head, cl->buf, hlen);
    r->head[hlen] = '\0';
    consume(cl, hlen + 4);
    assert_int_equal(sscanf(r->head, "HTTP/1.1 %d ", &r->status), 1);
    char v[64];
    assert_non_null(header(r, "Content-Length", v, sizeof v));
    assert_true(strspn(v, "0123456789") == strlen(v) && v[0] != '\0');
    r->content_length = strtoull(v, NULL, 10);
    if (head)
        return true;
    r->body = malloc(r->content_length + 1);
    assert_non_null(r->body);
    size_t got = 0;
    while (got < r->content_length) {
        if (cl->len == 0 && !fill(cl)) {
            free(r->body);
            r->body = NULL;
            return false;
        }
        size_t take = cl->len < r->content_length - got ? cl->len : r->content_length - got;
        memcpy(r->body + got, cl->buf, take);
        consume(cl, take);
        got += take;
    }
    r->body[got] = '\0';
    return true;
}

static void response_free(response *r)
{
    free(r->body);
    r->body = NULL;
}

/* True when the server closes the connection with nothing more sent. */
static bool closed(client *cl)
{
    if (cl->len > 0)
        return false;
    char b;
    struct pollfd pf = {.fd = cl->fd, .events = POLLIN};
    if (poll(&pf, 1, WAIT_MS) != 1)
        return false;
    ssize_t r = recv(cl->fd, &b, 1, 0);
    return r == 0 || (r < 0 && errno == ECONNRESET);
}

/* Still open: nothing arrives within ms. */
static bool open_for(client *cl, int ms)
{
    struct pollfd pf = {.fd = cl->fd, .events = POLLIN};
    return cl->len == 0 && poll(&pf, 1, ms) == 0;
}

static void assert_header(const response *r, const char *name, const char *want)
{
    char v[256];
    const char *got = header(r, name, v, sizeof v);
    if (got == NULL)
        fail_msg("no %s header in:\n%s", name, r->head);
    assert_string_equal(got, want);
}

static void assert_no_header(const response *r, const char *name)
{
    char v[256];
    if (header(r, name, v, sizeof v))
        fail_msg("unexpected %s: %s", name, v);
}

/* GET path on cl, expecting status and body. */
static void get_ok(client *cl, const char *path, int status, const char *body)
{
    char req[256];
    snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: localhost\r\n\r\n", path);
    send_str(cl, req);
    response r;
    assert_true(read_response(cl, false, &r));
    assert_int_equal(r.status, status);
    assert_string_equal(r.body, body);
    response_free(&r);
}

/* --- tests --- */

static void get_metrics(void **state)
{
    harness *h = *state;
    harness_start(h);
    client *cl = client_open(h);
    send_str(cl, "GET /metrics HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n");
    response r;
    assert_true(read_response(cl, false, &r));
    assert_int_equal(r.status, 200);
    assert_true(strncmp(r.head, "HTTP/1.1 200 OK\r\n", 17) == 0);
    assert_header(&r, "Content-Type", METRICS_TYPE);
    char len[16];
    snprintf(len, sizeof len, "%zu", strlen(METRICS_BODY));
    assert_header(&r, "Content-Length", len);
    assert_header(&r, "Cache-Control", "no-store");
    assert_no_header(&r, "Connection");
    assert_string_equal(r.body, METRICS_BODY);
    response_free(&r);
    assert_int_equal(calls(h), 1);
    assert_logged(h, 0, "GET /metrics");
    /* Keep-alive by default: still open. */
    assert_true(open_for(cl, 100));
    client_free(cl);
}

static void status_and_query(void **state)
{
    harness *h = *state;
    harness_start(h);
    client *cl = client_open(h);
    send_str(cl, "GET /status?refresh=1#x HTTP/1.1\r\nHost: localhost\r\n\r\n");
    response r;
    assert_true(read_response(cl, false, &r));
    assert_int_equal(r.status, 200);
    assert_header(&r, "Content-Type", STATUS_TYPE);
    assert_string_equal(r.body, STATUS_BODY);
    response_free(&r);
    assert_logged(h, 0, "GET /status");
    /* Absolute form: the path only. */
    send_str(cl, "GET http://localhost:1/metrics?a=b HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_true(read_response(cl, false, &r));
    assert_int_equal(r.status, 200);
    response_free(&r);
    assert_logged(h, 1, "GET /metrics");
    client_free(cl);
}

static void head_has_no_body(void **state)
{
    harness *h = *state;
    harness_start(h);
    client *cl = client_open(h);
    send_str(cl, "HEAD /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
    response r;
    assert_true(read_response(cl, true, &r));
    assert_int_equal(r.status, 200);
    assert_header(&r, "Content-Type", METRICS_TYPE);
    assert_int_equal(r.content_length, strlen(METRICS_BODY));
    assert_logged(h, 0, "HEAD /metrics");
    /* No body bytes: nothing more arrives, and the next response follows the
     * headers directly. */
    assert_true(open_for(cl, 200));
    get_ok(cl, "/status", 200, STATUS_BODY);
    client_free(cl);
}

static void unknown_path(void **state)
{
    harness *h = *state;
    harness_start(h);
    client *cl = client_open(h);
    send_str(cl, "GET /nope HTTP/1.1\r\nHost: localhost\r\n\r\n");
    response r;
    assert_true(read_response(cl, false, &r));
    assert_int_equal(r.status, 404);
    assert_true(strncmp(r.head, "HTTP/1.1 404 Not Found\r\n", 24) == 0);
    assert_header(&r, "Content-Type", "text/plain; charset=utf-8");
    assert_header(&r, "Cache-Control", "no-store");
    assert_string_equal(r.body, "not found\n");
    response_free(&r);
    client_free(cl);
}

static void other_methods_405(void **state)
{
    harness *h = *state;
    harness_start(h);
    client *cl = client_open(h);
    send_str(cl, "POST /metrics HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\r\nhello");
    response r;
    assert_true(read_response(cl, false, &r));
    assert_int_equal(r.status, 405);
    assert_header(&r, "Allow", "GET, HEAD");
    assert_header(&r, "Cache-Control", "no-store");
    response_free(&r);
    send_str(cl, "DELETE /status HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_true(read_response(cl, false, &r));
    assert_int_equal(r.status, 405);
    response_free(&r);
    /* The handler never saw them, and the connection goes on. */
    assert_int_equal(calls(h), 0);
    get_ok(cl, "/metrics", 200, METRICS_BODY);
    assert_int_equal(calls(h), 1);
    client_free(cl);
}

static void keep_alive(void **state)
{
    harness *h = *state;
    harness_start(h);
    client *cl = client_open(h);
    for (int i = 0; i < 5; i++) {
        get_ok(cl, "/metrics", 200, METRICS_BODY);
        get_ok(cl, "/status", 200, STATUS_BODY);
    }
    assert_int_equal(calls(h), 10);
    client_free(cl);
}

static void pipelined(void **state)
{
    harness *h = *state;
    harness_start(h);
    client *cl = client_open(h);
    /* One write, four requests, one of them with a body to skip. */
    send_str(cl, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n"
                 "HEAD /status HTTP/1.1\r\nHost: localhost\r\n\r\n"
                 "POST /x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\n\r\nabc"
                 "GET /nope HTTP/1.1\r\nHost: localhost\r\n\r\n"
                 "GET /status HTTP/1.1\r\nHost: localhost\r\n\r\n");
    response r;
    assert_true(read_response(cl, false, &r));
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, METRICS_BODY);
    response_free(&r);
    assert_true(read_response(cl, true, &r));
    assert_int_equal(r.status, 200);
    assert_int_equal(r.content_length, strlen(STATUS_BODY));
    assert_true(read_response(cl, false, &r));
    assert_int_equal(r.status, 405);
    response_free(&r);
    assert_true(read_response(cl, false, &r));
    assert_int_equal(r.status, 404);
    response_free(&r);
    assert_true(read_response(cl, false, &r));
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, STATUS_BODY);
    response_free(&r);
    assert_int_equal(calls(h), 4);
    assert_logged(h, 0, "GET /metrics");
    assert_logged(h, 1, "HEAD /status");
    assert_logged(h, 2, "GET /nope");
    assert_logged(h, 3, "GET /status");
    assert_true(open_for(cl, 100));
    client_free(cl);
}

static void connection_close(void **state)
{
    harness *h = *state;
    harness_start(h);
    client *cl = client_open(h);
    /* Requests after the one that says close are not answered. */
    send_str(cl, "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
                 "GET /status HTTP/1.1\r\nHost: localhost\r\n\r\n");
    response r;
    assert_true(read_response(cl, false, &r));
    assert_int_equal(r.status, 200);
    assert_header(&r, "Connection", "close");
    assert_string_equal(r.body, METRICS_BODY);
    response_free(&r);
    assert_true(closed(cl));
    assert_int_equal(calls(h), 1);
    client_free(cl);

    /* Upgrade is never done: a plain response, then the end. */
    cl = client_open(h);
    send_str(cl, "GET /status HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
    assert_true(read_response(cl, false, &r));
    assert_int_equal(r.status, 200);
    assert_header(&r, "Connection", "close");
    response_free(&r);
    assert_true(closed(cl));
    client_free(cl);

    /* A response larger than the socket buffers is written whole before
     * the server closes. */
    cl = calloc(1, sizeof *cl);
    assert_non_null(cl);
    cl->fd = tcp_connect_rcvbuf(h->port, 65536);
    send_str(cl, "GET /huge HTTP/1.1\r\nConnection: close\r\n\r\n");
    sleep_ms(200);
    assert_true(read_response(cl, false, &r));
    assert_int_equal(r.status, 200);
    assert_int_equal(r.content_length, HUGE_LEN);
    assert_int_equal(r.body[HUGE_LEN - 1], 'a' + (HUGE_LEN - 1) % 26);
    response_free(&r);
    assert_true(closed(cl));
    client_free(cl);
}

static void http10(void **state)
{
    harness *h = *state;
    harness_start(h);
    client *cl = client_open(h);
    send_str(cl, "GET /status HTTP/1.0\r\n\r\n");
    response r;
    assert_true(read_response(cl, false, &r));
    assert_int_equal(r.status, 200);
    assert_header(&r, "Connection", "close");
    response_free(&r);
    assert_true(closed(cl));
    client_free(cl);

    cl = client_open(h);
    send_str(cl, "GET /status HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_true(read_response(cl, false, &r));
    assert_header(&r, "Connection", "keep-alive");
    response_free(&r);
    get_ok(cl, "/metrics", 200, METRICS_BODY);
    client_free(cl);
}

static void half_close(void **state)
{
    harness *h = *state;
    harness_start(h);
    client *cl = client_open(h);
    send_str(cl, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n"
                 "GET /status HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_int_equal(shutdown(cl->fd, SHUT_WR), 0);
    response r;
    assert_true(read_response(cl, false, &r));
    assert_string_equal(r.body, METRICS_BODY);
    response_free(&r);
    assert_true(read_response(cl, false, &r));
    assert_string_equal(r.body, STATUS_BODY);
    response_free(&r);
    assert_true(closed(cl));
    client_free(cl);
}

static void expect_400_and_close(harness *h, const char *req)
{
    client *cl = client_open(h);
    send_str(cl, req);
    response r;
    assert_true(read_response(cl, false, &r));
    assert_int_equal(r.status, 400);
    assert_header(&r, "Connection", "close");
    assert_header(&r, "Cache-Control", "no-store");
    response_free(&r);
    assert_true(closed(cl));
    client_free(cl);
}

static void malformed(void **state)
{
    harness *h = *state;
    harness_start(h);
    expect_400_and_close(h, "HELLO WORLD\r\n\r\n");
    expect_400_and_close(h, "GET /metrics HTTP/1.1\r\nBad header line\r\n\r\n");
    expect_400_and_close(h, "GET /metrics HTTP/9.Z\r\n\r\n");
    expect_400_and_close(h, "GET /metrics HTTP/1.1\r\nContent-Length: x\r\n\r\n");
    /* Good requests before a bad one are answered first. */
    client *cl = client_open(h);
    send_str(cl, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\nBAD\x01\r\n\r\n");
    response r;
    assert_true(read_response(cl, false, &r));
    assert_int_equal(r.status, 200);
    response_free(&r);
    assert_true(read_response(cl, false, &r));
    assert_int_equal(r.status, 400);
    response_free(&r);
    assert_true(closed(cl));
    client_free(cl);
    assert_int_equal(calls(h), 1);
}

/* A request of about `size` bytes, padded with a header. */
static char *padded_request(const char *path, size_t size)
{
    size_t cap = size + strlen(path) + 256;
    char *req = malloc(cap);
    assert_non_null(req);
    int n = snprintf(req, cap, "GET %s HTTP/1.1\r\nHost: localhost\r\nX-Pad: ", path);
    size_t pad = size > (size_t)n + 4 ? size - (size_t)n - 4 : 0;
    memset(req + n, 'p', pad);
    strcpy(req + n + pad, "\r\n\r\n");
    return req;
}

static void too_large(void **state)
{
    harness *h = *state;
    harness_start(h);
    /* Just under the limit: served. */
    char *req = padded_request("/status", HTTP_MAX_REQUEST - 100);
    client *cl = client_open(h);
    send_str(cl, req);
    response r;
    assert_true(read_response(cl, false, &r));
    assert_int_equal(r.status, 200);
    response_free(&r);
    client_free(cl);
    free(req);
    /* Just over it: refused. */
    req = padded_request("/status", HTTP_MAX_REQUEST + 100);
    expect_400_and_close(h, req);
    free(req);
    /* A long URL, and a body, count too. */
    char *url = malloc(HTTP_MAX_REQUEST + 100);
    assert_non_null(url);
    memset(url, 'u', HTTP_MAX_REQUEST + 99);
    url[0] = '/';
    url[HTTP_MAX_REQUEST + 99] = '\0';
    req = padded_request(url, 10);
    expect_400_and_close(h, req);
    free(req);
    free(url);
    char body_req[128];
    snprintf(body_req, sizeof body_req, "POST /x HTTP/1.1\r\nContent-Length: %d\r\n\r\n",
             HTTP_MAX_REQUEST + 1);
    cl = client_open(h);
    send_str(cl, body_req);
    char *body = calloc(1, HTTP_MAX_REQUEST + 2);
    memset(body, 'b', HTTP_MAX_REQUEST + 1);
    send(cl->fd, body, HTTP_MAX_REQUEST + 1, MSG_NOSIGNAL);
    free(body);
    assert_true(read_response(cl, false, &r));
    assert_int_equal(r.status, 400);
    response_free(&r);
    assert_true(closed(cl));
    client_free(cl);
    assert_int_equal(calls(h), 1);
}

static void invalid_handler_response(void **state)
{
    harness *h = *state;
    harness_start(h);
    client *cl = client_open(h);
    get_ok(cl, "/broken", 500, "internal server error\n");
    get_ok(cl, "/status", 200, STATUS_BODY);
    client_free(cl);
}

typedef struct client_job {
    harness *h;
    int index;
    int ok; /* responses that matched */
} client_job;

static void *client_thread(void *arg)
{
    client_job *j = arg;
    client *cl = calloc(1, sizeof *cl);
    cl->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)j->h->port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(cl->fd, (struct sockaddr *)&sa, sizeof sa) != 0)
        goto out;
    for (int i = 0; i < 3; i++) {
        bool metrics = (j->index + i) % 2 == 0;
        char req[128];
        snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: localhost\r\n\r\n",
                 metrics ? "/metrics" : "/status");
        if (send(cl->fd, req, strlen(req), MSG_NOSIGNAL) != (ssize_t)strlen(req))
            goto out;
        /* read_response asserts; only the test thread may, so read here by
         * hand: the headers, then Content-Length bytes. */
        char *end;
        while ((end = memmem(cl->buf, cl->len, "\r\n\r\n", 4)) == NULL)
            if (!fill(cl))
                goto out;
        size_t hlen = (size_t)(end - cl->buf) + 4;
        const char *want = metrics ? METRICS_BODY : STATUS_BODY;
        char *cl_hdr = strcasestr(cl->buf, "Content-Length: ");
        if (strncmp(cl->buf, "HTTP/1.1 200 OK\r\n", 17) != 0 || cl_hdr == NULL || cl_hdr > end ||
            strtoul(cl_hdr + 16, NULL, 10) != strlen(want))
            goto out;
        while (cl->len < hlen + strlen(want))
            if (!fill(cl))
                goto out;
        if (memcmp(cl->buf + hlen, want, strlen(want)) != 0)
            goto out;
        consume(cl, hlen + strlen(want));
        j->ok++;
    }
out:
    client_free(cl);
    return NULL;
}

static void concurrent_clients(void **state)
{
    harness *h = *state;
    harness_start(h);
    enum { N = 20 };
    pthread_t th[N];
    client_job jobs[N];
    for (int i = 0; i < N; i++) {
        jobs[i] = (client_job){.h = h, .index = i};
        assert_int_equal(pthread_create(&th[i], NULL, client_thread, &jobs[i]), 0);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(jobs[i].ok, 3);
    }
    assert_int_equal(calls(h), 3 * N);
}

/* A client that pipelines without reading: the server stops answering until
 * it reads, and everything still arrives in order. */
static void backpressure(void **state)
{
    harness *h = *state;
    harness_start(h);
    enum { N = 16 };
    client *cl = calloc(1, sizeof *cl);
    assert_non_null(cl);
    cl->fd = tcp_connect_rcvbuf(h->port, 65536);
    char reqs[N * 64] = "";
    for (int i = 0; i < N; i++)
        strcat(reqs, i % 2 ? "GET /big HTTP/1.1\r\n\r\n" : "GET /big?x HTTP/1.1\r\n\r\n");
    send_str(cl, reqs);
    /* N MB do not fit in the socket buffers: the server must have stopped. */
    sleep_ms(500);
    int before = calls(h);
    assert_true(before >= 1);
    assert_true(before < N);
    for (int i = 0; i < N; i++) {
        response r;
        assert_true(read_response(cl, false, &r));
        assert_int_equal(r.status, 200);
        assert_int_equal(r.content_length, BIG_LEN);
        bool same = true;
        for (size_t k = 0; k < BIG_LEN && same; k++)
            same = r.body[k] == (char)('a' + k % 26);
        assert_true(same);
        response_free(&r);
    }
    assert_int_equal(calls(h), N);
    get_ok(cl, "/status", 200, STATUS_BODY);
    client_free(cl);
}

/* A client that hangs up before its response is read must neither kill the
 * process (SIGPIPE) nor stop the server. */
static void client_gone(void **state)
{
    harness *h = *state;
    signal(SIGPIPE, SIG_DFL);
    harness_start(h);
    struct sigaction sa;
    assert_int_equal(sigaction(SIGPIPE, NULL, &sa), 0);
    assert_true(sa.sa_handler == SIG_IGN);
    for (int i = 0; i < 5; i++) {
        int fd = tcp_connect_rcvbuf(h->port, 4096);
        const char *req = "GET /big HTTP/1.1\r\n\r\nGET /big HTTP/1.1\r\n\r\n";
        assert_int_equal(send(fd, req, strlen(req), MSG_NOSIGNAL), (ssize_t)strlen(req));
        /* Wait for the first bytes, then reset the connection. */
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        assert_int_equal(poll(&pf, 1, WAIT_MS), 1);
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        close(fd);
    }
    client *cl = client_open(h);
    get_ok(cl, "/status", 200, STATUS_BODY);
    client_free(cl);
}

static void idle_timeout(void **state)
{
    harness *h = *state;
    harness_start(h);
    h->idle_ms = 300;
    run_on_loop(h, act_set_idle);
    client *busy = client_open(h);
    client *idle = client_open(h);
    int64_t t0 = mono_ms();
    /* Traffic keeps a connection open past the timeout. */
    for (int i = 0; i < 6; i++) {
        get_ok(busy, "/status", 200, STATUS_BODY);
        sleep_ms(100);
    }
    assert_true(closed(idle));
    int64_t took = mono_ms() - t0;
    assert_true(took >= 250 && took < WAIT_MS);
    get_ok(busy, "/metrics", 200, METRICS_BODY);
    client_free(idle);
    client_free(busy);
}

static void connection_limit(void **state)
{
    harness *h = *state;
    harness_start(h);
    client *cls[HTTP_MAX_CONNS];
    /* A response on each: all accepted. */
    for (int i = 0; i < HTTP_MAX_CONNS; i++) {
        cls[i] = client_open(h);
        get_ok(cls[i], "/status", 200, STATUS_BODY);
    }
    client *extra = client_open(h);
    send_str(extra, "GET /status HTTP/1.1\r\n\r\n");
    assert_true(closed(extra));
    client_free(extra);
    /* The others are still served. */
    get_ok(cls[0], "/metrics", 200, METRICS_BODY);
    /* Once one leaves, a new client gets in (when the server has seen the
     * hang-up). */
    client_free(cls[HTTP_MAX_CONNS - 1]);
    bool served = false;
    for (int64_t until = mono_ms() + WAIT_MS; !served && mono_ms() < until;) {
        client *c = client_open(h);
        send_str(c, "GET /status HTTP/1.1\r\n\r\n");
        response r;
        served = read_response(c, false, &r);
        if (served) {
            assert_int_equal(r.status, 200);
            response_free(&r);
        } else {
            sleep_ms(50);
        }
        client_free(c);
    }
    assert_true(served);
    for (int i = 0; i < HTTP_MAX_CONNS - 1; i++)
        client_free(cls[i]);
}

static void close_with_clients(void **state)
{
    harness *h = *state;
    harness_start(h);
    client *a = client_open(h);
    client *b = client_open(h);
    get_ok(a, "/status", 200, STATUS_BODY);
    send_str(b, "GET /metrics HTTP/1.1\r\nHost: x"); /* half a request */
    /* Closed at once, not by the idle timeout. */
    int64_t t0 = mono_ms();
    harness_stop(h);
    assert_true(mono_ms() - t0 < WAIT_MS);
    assert_true(closed(a));
    assert_true(closed(b));
    client_free(a);
    client_free(b);
    /* The port is free again. */
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    char addr[32];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", h->port);
    http_server *s = http_listen(&loop, addr, handler, h);
    assert_non_null(s);
    http_close(s);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void close_from_handler(void **state)
{
    harness *h = *state;
    harness_start(h);
    client *a = client_open(h);
    client *b = client_open(h);
    get_ok(a, "/status", 200, STATUS_BODY);
    send_str(b, "GET /stop HTTP/1.1\r\n\r\n");
    /* Closed without its response, like every other connection. */
    assert_true(closed(b));
    assert_true(closed(a));
    assert_int_equal(calls(h), 2);
    client_free(a);
    client_free(b);
}

/* --- listening --- */

static FILE *captured;
static int saved_stderr = -1;

static void capture_stderr(void)
{
    fflush(stderr);
    captured = tmpfile();
    assert_non_null(captured);
    saved_stderr = dup(2);
    dup2(fileno(captured), 2);
}

/* What was logged since capture_stderr, malloc'd. */
static char *captured_text(void)
{
    fflush(stderr);
    dup2(saved_stderr, 2);
    close(saved_stderr);
    long n = ftell(captured);
    char *s = calloc(1, n > 0 ? (size_t)n + 1 : 1);
    rewind(captured);
    if (n > 0)
        assert_int_equal(fread(s, 1, (size_t)n, captured), (size_t)n);
    fclose(captured);
    return s;
}

static int port_of(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
    return ntohs(((const struct sockaddr_in *)ss)->sin_port);
}

/* getsockname of this process's listening socket on `port`. */
static bool listening_on(int port, struct sockaddr_storage *out)
{
    for (int fd = 0; fd < 1024; fd++) {
        int acc = 0;
        socklen_t l = sizeof acc;
        if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &l) != 0 || !acc)
            continue;
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0)
            continue;
        if ((ss.ss_family == AF_INET || ss.ss_family == AF_INET6) && port_of(&ss) == port) {
            *out = ss;
            return true;
        }
    }
    return false;
}

static void noop_handler(void *arg, const char *method, const char *path, http_response *res)
{
    res->status = 404;
}

/* Listens on addr and returns the bound address as text. */
static void bound_address(const char *addr, char *out, size_t n)
{
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    http_server *s = http_listen(&loop, addr, noop_handler, NULL);
    assert_non_null(s);
    struct sockaddr_storage ss;
    assert_true(listening_on(http_port(s), &ss));
    char ip[64];
    if (ss.ss_family == AF_INET6)
        uv_ip6_name((struct sockaddr_in6 *)&ss, ip, sizeof ip);
    else
        uv_ip4_name((struct sockaddr_in *)&ss, ip, sizeof ip);
    snprintf(out, n, "%s", ip);
    http_close(s);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void default_is_loopback(void **state)
{
    char ip[64];
    bound_address(":0", ip, sizeof ip);
    assert_string_equal(ip, "127.0.0.1");
    bound_address("0", ip, sizeof ip);
    assert_string_equal(ip, "127.0.0.1");
    bound_address("localhost:0", ip, sizeof ip);
    assert_string_equal(ip, "127.0.0.1");
    /* Anything else only when asked for. */
    bound_address("0.0.0.0:0", ip, sizeof ip);
    assert_string_equal(ip, "0.0.0.0");
    int fd6 = socket(AF_INET6, SOCK_STREAM, 0);
    struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    bool have_v6 = fd6 >= 0 && bind(fd6, (struct sockaddr *)&a6, sizeof a6) == 0;
    if (fd6 >= 0)
        close(fd6);
    if (have_v6) {
        bound_address("[::1]:0", ip, sizeof ip);
        assert_string_equal(ip, "::1");
    }
}

static void busy_port(void **state)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(fd, 1), 0);
    socklen_t sl = sizeof sa;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    int port = ntohs(sa.sin_port);

    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    char addr[32], want[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    capture_stderr();
    http_server *s = http_listen(&loop, addr, noop_handler, NULL);
    char *log = captured_text();
    close(fd);
    assert_null(s);
    snprintf(want, sizeof want, "cannot listen on 127.0.0.1:%d: address already in use", port);
    if (strstr(log, want) == NULL)
        fail_msg("expected \"%s\" in the log, got: %s", want, log);
    free(log);
    /* The failed handle is freed by the loop. */
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void bad_addresses(void **state)
{
    static const char *const bad[] = {
        "",         "127.0.0.1:",   "127.0.0.1:65536", "127.0.0.1:-1", "host.example:80",
        "::1:9187", "[::1]",        "[::1]9187",       "1.2.3:80",     "127.0.0.1:80x",
        "abc",      "127.0.0.1:+80"};
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        capture_stderr();
        http_server *s = http_listen(&loop, bad[i], noop_handler, NULL);
        char *log = captured_text();
        if (s != NULL)
            fail_msg("\"%s\" was accepted", bad[i]);
        char want[96];
        snprintf(want, sizeof want, "bad listen address \"%s\"", bad[i]);
        if (strstr(log, want) == NULL)
            fail_msg("expected \"%s\" in the log, got: %s", want, log);
        free(log);
    }
    assert_null(http_listen(&loop, NULL, noop_handler, NULL));
    http_close(NULL);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static bool loopback_of(const char *addr)
{
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    http_server *s = http_listen(&loop, addr, noop_handler, NULL);
    assert_non_null(s);
    bool r = http_is_loopback(s);
    http_close(s);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
    return r;
}

static void loopback_or_not(void **state)
{
    assert_true(loopback_of("127.0.0.1:0"));
    assert_true(loopback_of(":0"));
    assert_true(loopback_of("localhost:0"));
    assert_false(loopback_of("0.0.0.0:0"));
    int fd6 = socket(AF_INET6, SOCK_STREAM, 0);
    struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    bool have_v6 = fd6 >= 0 && bind(fd6, (struct sockaddr *)&a6, sizeof a6) == 0;
    if (fd6 >= 0)
        close(fd6);
    if (have_v6) {
        assert_true(loopback_of("[::1]:0"));
        assert_false(loopback_of("[::]:0"));
    }
}

/* --- the board: /status served from a published snapshot --- */

#define BLOCKER_SQL "UPDATE accounts SET balance = 0 WHERE owner = 'alice'"

/* GET path over HTTP/1.0 from 127.0.0.1:port; the whole response, malloc'd. */
static char *http_get(int port, const char *path)
{
    int fd = tcp_connect_rcvbuf(port, 0);
    char req[128];
    snprintf(req, sizeof req, "GET %s HTTP/1.0\r\n\r\n", path);
    assert_int_equal(send(fd, req, strlen(req), MSG_NOSIGNAL), (ssize_t)strlen(req));
    size_t len = 0, cap = 65536;
    char *buf = malloc(cap);
    assert_non_null(buf);
    for (;;) {
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        assert_int_equal(poll(&pf, 1, WAIT_MS), 1);
        ssize_t r = recv(fd, buf + len, cap - 1 - len, 0);
        if (r <= 0)
            break;
        len += (size_t)r;
        assert_true(len < cap - 1);
    }
    close(fd);
    buf[len] = '\0';
    return buf;
}

/* Starts the board on addr, publishes a snapshot whose cutover was blocked
 * by BLOCKER_SQL, and returns /status (malloc'd); *metrics gets /metrics. */
static char *board_status(const char *addr, bool show_queries, char **metrics)
{
    assert_true(board_start(addr, show_queries));
    Pgshift__Blocker bl = PGSHIFT__BLOCKER__INIT;
    bl.pid = 4242;
    bl.application = "billing";
    bl.query = BLOCKER_SQL;
    bl.xact_age_seconds = 12.5;
    Pgshift__CutoverInfo co = PGSHIFT__CUTOVER_INFO__INIT;
    co.attempts = 3;
    co.last_blocker = &bl;
    Pgshift__StatusSnapshot st = PGSHIFT__STATUS_SNAPSHOT__INIT;
    st.migration = "m1";
    st.phase = PGSHIFT__PHASE__PHASE_CUTTING_OVER;
    st.cutover = &co;
    board_publish(&st);
    /* The caller's snapshot is left as it was. */
    assert_string_equal(bl.query, BLOCKER_SQL);
    assert_ptr_equal(co.last_blocker, &bl);
    char *body = http_get(board_port(), "/status");
    *metrics = http_get(board_port(), "/metrics");
    board_stop();
    assert_non_null(strstr(body, "200 OK"));
    assert_non_null(strstr(body, "\"billing\""));
    assert_non_null(strstr(body, "4242"));
    assert_null(strstr(*metrics, "balance"));
    return body;
}

static void board_hides_queries_off_loopback(void **state)
{
    char *metrics;
    /* Loopback: only this machine can ask, the query is shown. */
    char *body = board_status("127.0.0.1:0", false, &metrics);
    assert_non_null(strstr(body, BLOCKER_SQL));
    free(body);
    free(metrics);

    /* Any address: the query is hidden, the rest is there. */
    body = board_status("0.0.0.0:0", false, &metrics);
    assert_null(strstr(body, "balance"));
    assert_non_null(strstr(body, "\"query\": \"" BOARD_QUERY_HIDDEN "\""));
    free(body);
    free(metrics);

    /* ... unless asked for. */
    body = board_status("0.0.0.0:0", true, &metrics);
    assert_non_null(strstr(body, BLOCKER_SQL));
    free(body);
    free(metrics);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(get_metrics),
        T(status_and_query),
        T(head_has_no_body),
        T(unknown_path),
        T(other_methods_405),
        T(keep_alive),
        T(pipelined),
        T(connection_close),
        T(http10),
        T(half_close),
        T(malformed),
        T(too_large),
        T(invalid_handler_response),
        T(concurrent_clients),
        T(backpressure),
        T(client_gone),
        T(idle_timeout),
        T(connection_limit),
        T(close_with_clients),
        T(close_from_handler),
        T(default_is_loopback),
        T(busy_port),
        T(bad_addresses),
        T(loopback_or_not),
        T(board_hides_queries_off_loopback),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
