/* http.h: a small HTTP/1.1 server on a libuv loop, for the read-only pages
 * of a running migration (/metrics, /status, the dashboard). Requests are
 * parsed with http-parser; what to answer comes from a handler callback, so
 * this module knows nothing about migrations.
 *
 * What the server does by itself:
 * - Only GET and HEAD reach the handler. Any other method gets 405 with
 *   "Allow: GET, HEAD" from the server; the handler is not called.
 * - HEAD calls the handler exactly as GET would and sends the headers only,
 *   with the Content-Length of the body the handler produced.
 * - Keep-alive: the default for HTTP/1.1, "Connection: keep-alive" for
 *   HTTP/1.0; "Connection: close" (or HTTP/1.0 without keep-alive) makes the
 *   server close the connection once the response is written. Pipelined
 *   requests are answered in order; while a client is not reading its
 *   responses, the server stops reading its requests.
 * - Every response has Content-Length and "Cache-Control: no-store".
 * - A malformed request, or one larger than HTTP_MAX_REQUEST bytes (request
 *   line, headers and body together), gets 400 and the connection is closed.
 *   After a request with Upgrade (answered as a plain GET, never switched)
 *   or a CONNECT (405), the connection is closed too.
 * - A connection with no traffic for HTTP_IDLE_TIMEOUT_MS is closed.
 * - At most HTTP_MAX_CONNS connections at a time: one more is accepted and
 *   closed at once, without a response, so that clients fail fast instead of
 *   waiting in the listen backlog.
 *
 * Every function must be called on the loop's thread. Sets SIGPIPE to
 * SIG_IGN if it was at its default (see http_listen). */
#ifndef PGSHIFT_HTTP_H
#define PGSHIFT_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#define HTTP_MAX_REQUEST     (16 * 1024)
#define HTTP_MAX_CONNS       64
#define HTTP_IDLE_TIMEOUT_MS 60000

typedef struct http_server http_server;

typedef struct http_response {
    int status;               /* 200, 404, ...: 200-599 except 204 and 304 */
    const char *content_type; /* e.g. "text/plain; version=0.0.4; charset=utf-8"; NULL:
                                 "text/plain; charset=utf-8". Read right after the handler
                                 returns, so a string literal is the usual choice. */
    char *body;               /* malloc'd or NULL; the server frees it after writing */
    size_t len;
} http_response;

/* Called on the loop for each complete GET or HEAD request: method is "GET"
 * or "HEAD", path is the request target without the query string or
 * fragment, as sent (not percent-decoded; "/" at least). *res arrives zeroed
 * and must be filled before returning: the server owns res->body from then on,
 * whatever the status. A response with no status, a status out of range or a
 * content type with a line break is replaced by a 500 (logged). The handler
 * must not block: it runs on the loop. */
typedef void (*http_handler)(void *arg, const char *method, const char *path, http_response *res);

/* Listens on addr: "host:port" with a numeric IPv4 host ("127.0.0.1:9187",
 * "0.0.0.0:9187"), "[ipv6]:port" ("[::1]:9187"), "localhost:port", or just
 * ":port" / "port", which mean 127.0.0.1: the server listens on loopback
 * unless another address is given explicitly. Port 0 picks a free port (see
 * http_port). Returns NULL on failure, logged with log_error naming the
 * address and the reason (bad address, address already in use, ...); a
 * handle already on the loop is then freed when the loop next runs.
 *
 * Sets SIGPIPE to SIG_IGN if it was at its default: libuv writes with
 * write(2), and a client that hangs up before its response must not kill the
 * process. */
http_server *http_listen(uv_loop_t *loop, const char *addr, http_handler h, void *arg);

/* The port the server is bound to (the one picked when asked for port 0). */
int http_port(const http_server *s);

/* True if the server is bound to a loopback address (127.0.0.0/8, ::1 or
 * ::ffff:127.0.0.0/104), so that only this machine can reach it; false for
 * a wildcard (0.0.0.0, ::) or any other address. */
bool http_is_loopback(const http_server *s);

/* Changes the idle timeout (HTTP_IDLE_TIMEOUT_MS) for connections accepted
 * from now on; used by the tests. */
void http_set_idle_timeout(http_server *s, unsigned timeout_ms);

/* Stops listening and closes every connection at once; responses not yet
 * written are dropped. The server is freed once libuv has closed its handles,
 * so the loop must run afterwards, as usual. Safe from inside the handler.
 * `s` may be NULL; call it at most once. */
void http_close(http_server *s);

#endif
