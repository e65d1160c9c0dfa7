/* control.h: the control socket of a running migration. A Unix stream
 * socket (mode 0600) in a private directory (mode 0700, owned by the user
 * pgshift runs as; see control_socket_path) on which a client sends one
 * frame and the server answers with one frame, then closes the connection.
 * Both ends check the other's uid (SO_PEERCRED): only the same user or root
 * may talk to a run, and a client only talks to a run of its own user or of
 * root. Root is let through because it can read and signal the process
 * anyway; refusing it would only make `sudo pgshift status` fail. A frame is a 4-byte
 * big-endian length followed by the serialized message: ControlRequest from
 * the client, ControlReply from the server (proto/pgshift.proto). Frames
 * larger than CONTROL_FRAME_MAX are refused on both sides.
 *
 * The server side runs on a libuv loop and every server function must be
 * called on that loop's thread; the client side is blocking and has no
 * state. */
#ifndef PGSHIFT_CONTROL_H
#define PGSHIFT_CONTROL_H

#include "pgshift.pb-c.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#define CONTROL_FRAME_MAX (1u << 20)

/* A client that has not sent a whole request after this long is dropped. */
#define CONTROL_READ_TIMEOUT_MS 10000

typedef struct control_server control_server;
typedef struct control_call control_call;

/* Called on the loop for each well-formed request. `req` is only valid
 * during the callback: copy what must outlive it. The handler must call
 * control_reply() exactly once for `call`, now (from inside the handler) or
 * later from the loop (e.g. a cutover that completes seconds later), even if
 * the client has gone away or control_close() has run meanwhile: that call is
 * what frees `call`. */
typedef void (*control_handler)(void *arg, control_call *call, const Pgshift__ControlRequest *req);

/* Listens on `path`, mode 0600 from the moment the socket file exists
 * (created under umask 0077, then chmod). The directory holding `path` is
 * created (mode 0700) if it is missing, but not its parents; if it exists it
 * must pass control_private_dir, or nothing is created and NULL returned.
 * Connections from a uid that control_peer_allowed refuses are closed at
 * once, without reading them (logged as a warning). If a socket file is already there
 * and a server answers on it, fails ("another pgshift run is serving
 * <path>"); if nobody answers (left by a crashed run) it is unlinked and
 * replaced. A path that exists but is not a socket, or that does not fit in
 * sun_path, is an error. Returns NULL on failure, logged with log_error;
 * after a failed bind or listen the handle already on the loop is freed when
 * the loop next runs.
 *
 * Sets SIGPIPE to SIG_IGN if it was at its default: libuv writes with
 * write(2), and a client that hangs up before its reply must not kill the
 * process. */
control_server *control_listen(uv_loop_t *loop, const char *path, control_handler h, void *arg);

/* Answers `call` and frees it: ok, message (NULL for none), status (NULL for
 * none; not retained, the caller still owns it). The reply is written and the
 * connection closed once the write completes. If the client went away, or
 * control_close() already answered the call, the reply is dropped silently;
 * either way `call` is freed and must not be used again. */
void control_reply(control_call *call, bool ok, const char *message,
                   const Pgshift__StatusSnapshot *status);
/* control_reply with the reply's `lsn` field set (the verify commands). */
void control_reply_lsn(control_call *call, bool ok, const char *message,
                       const Pgshift__StatusSnapshot *status, uint64_t lsn);

/* Stops listening, unlinks the socket file and closes every client
 * connection. Calls still waiting for their reply are answered at once with
 * ok=false, message "pgshift run stopped"; their control_call objects stay
 * valid and the handler must still call control_reply() on each, which then
 * only frees it. A reply already being written to a client that is not
 * reading is abandoned. The server is freed once libuv has closed its
 * handles, so the loop must run afterwards, as usual. `s` may be NULL; call
 * it at most once. */
void control_close(control_server *s);

/* Changes the read timeout (CONTROL_READ_TIMEOUT_MS) for connections
 * accepted from now on; used by the tests. */
void control_set_read_timeout(control_server *s, unsigned timeout_ms);

/* Client side, blocking: connects to `path`, sends `req` and waits for the
 * reply, at most timeout_ms in all (<= 0: no limit). Returns 0 with *reply
 * set (free it with pgshift__control_reply__free_unpacked(*reply, NULL));
 * -1 when no server is listening on `path` (its directory or the socket is
 * missing, or ECONNREFUSED: no pgshift run is running this migration); -2 on
 * any other error, timeout included, and when the directory fails
 * control_private_dir or the process listening runs as a uid that
 * control_peer_allowed refuses (then nothing is sent). On failure *reply is NULL and `err` holds
 * one line. Never raises SIGPIPE. */
int control_request(const char *path, const Pgshift__ControlRequest *req,
                    Pgshift__ControlReply **reply, int timeout_ms, char *err, size_t errlen);

/* "<state_dir>/pgshift-<euid>", the private directory of this user's
 * control sockets, malloc'd (NULL if out of memory). The uid in the name
 * keeps users apart under a shared state_dir such as /tmp, as tmux does. */
char *control_socket_dir(const char *state_dir);

/* "<state_dir>/pgshift-<euid>/pgshift-<name>.sock", malloc'd (NULL if out of
 * memory). The server (`run`) and the clients (status, cutover, abort, ...)
 * compute the same path from the plan, so they must run as the same user
 * (root may be the client of another user's run only by pointing at that
 * path itself). */
char *control_socket_path(const char *state_dir, const char *name);

/* Checks that `dir` is a directory, not a symbolic link, owned by the
 * effective uid, with no group or other permission bits. With `create`, a
 * missing `dir` is made with mode 0700 (its parent must exist). Returns 0 if
 * it is fine; -1 if it is missing and `create` is false; -2 if it is refused
 * or cannot be checked or made. On -1 and -2 `err` holds one line naming the
 * directory, what is wrong, and what to do. Never changes the mode or owner
 * of a directory it did not create. */
int control_private_dir(const char *dir, bool create, char *err, size_t errlen);

/* Whether a peer running as `peer` may talk to a process running as `self`:
 * the same uid, or root. */
bool control_peer_allowed(uid_t peer, uid_t self);

#endif
