/* board.c: the HTTP views served from a thread of their own (status.h), so
 * that /metrics and /status answer during the copy, when the stream loop
 * does not run yet, as well as while streaming. Publishers render the
 * bodies; the HTTP thread only copies them out under the mutex. Another
 * session's SQL (the cutover blocker's query, from pg_stat_activity) is
 * left out of what is served beyond this machine unless asked for. */
#include "pgshift/http.h"
#include "pgshift/log.h"
#include "pgshift/status.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static struct {
    pthread_mutex_t mu;
    pthread_t thread;
    bool running;
    uv_loop_t loop;
    uv_async_t stop;
    http_server *http;
    int port;
    bool show_queries;    /* set before board_start returns; read-only after */
    char *metrics, *json; /* the last published snapshot, rendered */
    size_t metrics_len;
    /* startup handshake */
    pthread_cond_t cv;
    int started; /* 0 waiting, 1 up, -1 failed */
    const char *addr;
    bool force_queries; /* --http-show-queries */
} B = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static char *dup_body(const char *s, size_t len)
{
    char *d = malloc(len + 1);
    if (d)
        memcpy(d, s, len + 1);
    return d;
}

static void on_request(void *arg, const char *method, const char *path, http_response *res)
{
    (void)arg;
    (void)method;
    if (strcmp(path, "/metrics") == 0 || strcmp(path, "/status") == 0) {
        bool metrics = path[1] == 'm';
        pthread_mutex_lock(&B.mu);
        const char *body = metrics ? B.metrics : B.json;
        size_t len = body ? (metrics ? B.metrics_len : strlen(body)) : 0;
        res->body = body ? dup_body(body, len) : NULL;
        pthread_mutex_unlock(&B.mu);
        if (body == NULL) {
            res->status = 503;
            res->body = strdup("no status yet\n");
            res->len = res->body ? strlen(res->body) : 0;
            return;
        }
        res->status = res->body ? 200 : 500;
        res->len = res->body ? len : 0;
        res->content_type =
            metrics ? "text/plain; version=0.0.4; charset=utf-8" : "application/json";
    } else if (strcmp(path, "/") == 0 || strcmp(path, "/index.html") == 0) {
        res->body = dup_body((const char *)pgs_dashboard_html, pgs_dashboard_html_len);
        res->status = res->body ? 200 : 500;
        res->len = res->body ? pgs_dashboard_html_len : 0;
        res->content_type = "text/html; charset=utf-8";
    } else {
        res->status = 404;
        res->body = strdup("not found: try /metrics, /status or /\n");
        res->len = res->body ? strlen(res->body) : 0;
    }
}

static void on_stop(uv_async_t *h)
{
    http_close(B.http);
    B.http = NULL;
    uv_close((uv_handle_t *)h, NULL);
}

static void *board_main(void *arg)
{
    (void)arg;
    bool ok = uv_loop_init(&B.loop) == 0;
    if (ok) {
        uv_async_init(&B.loop, &B.stop, on_stop);
        B.http = http_listen(&B.loop, B.addr, on_request, NULL);
        ok = B.http != NULL;
        if (!ok)
            uv_close((uv_handle_t *)&B.stop, NULL);
    }
    pthread_mutex_lock(&B.mu);
    B.port = ok ? http_port(B.http) : 0;
    B.show_queries = ok && (B.force_queries || http_is_loopback(B.http));
    B.started = ok ? 1 : -1;
    pthread_cond_signal(&B.cv);
    pthread_mutex_unlock(&B.mu);
    uv_run(&B.loop, UV_RUN_DEFAULT);
    uv_loop_close(&B.loop);
    return NULL;
}

bool board_start(const char *addr, bool show_queries)
{
    if (B.running)
        return true;
    B.addr = addr;
    B.force_queries = show_queries;
    B.started = 0;
    if (pthread_create(&B.thread, NULL, board_main, NULL) != 0) {
        log_error("HTTP server: cannot start its thread");
        return false;
    }
    pthread_mutex_lock(&B.mu);
    while (B.started == 0)
        pthread_cond_wait(&B.cv, &B.mu);
    bool ok = B.started == 1;
    pthread_mutex_unlock(&B.mu);
    if (!ok) {
        pthread_join(B.thread, NULL);
        return false;
    }
    B.running = true;
    return true;
}

bool board_active(void)
{
    return B.running;
}

int board_port(void)
{
    return B.port;
}

bool board_shows_queries(void)
{
    return B.show_queries;
}

/* The snapshot as served: `st` itself, or, when queries are hidden and
 * there is one, a shallow copy in *x with the blocker's query replaced. */
static const Pgshift__StatusSnapshot *served(const Pgshift__StatusSnapshot *st,
                                             Pgshift__StatusSnapshot *x, Pgshift__CutoverInfo *co,
                                             Pgshift__Blocker *bl)
{
    const Pgshift__CutoverInfo *c = st->cutover;
    if (B.show_queries || c == NULL || c->last_blocker == NULL || c->last_blocker->query == NULL ||
        c->last_blocker->query[0] == '\0')
        return st;
    *bl = *c->last_blocker;
    bl->query = (char *)BOARD_QUERY_HIDDEN;
    *co = *c;
    co->last_blocker = bl;
    *x = *st;
    x->cutover = co;
    return x;
}

void board_publish(const Pgshift__StatusSnapshot *snap)
{
    if (!B.running)
        return;
    Pgshift__StatusSnapshot x;
    Pgshift__CutoverInfo co;
    Pgshift__Blocker bl;
    const Pgshift__StatusSnapshot *st = served(snap, &x, &co, &bl);
    size_t mlen = 0;
    char *metrics = status_prometheus(st, &mlen);
    char *json = status_json(st, 2);
    pthread_mutex_lock(&B.mu);
    free(B.metrics);
    free(B.json);
    B.metrics = metrics;
    B.metrics_len = mlen;
    B.json = json;
    pthread_mutex_unlock(&B.mu);
}

void board_stop(void)
{
    if (!B.running)
        return;
    uv_async_send(&B.stop);
    pthread_join(B.thread, NULL);
    B.running = false;
    pthread_mutex_lock(&B.mu);
    free(B.metrics);
    free(B.json);
    B.metrics = B.json = NULL;
    pthread_mutex_unlock(&B.mu);
}
