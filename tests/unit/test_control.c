/* Unit tests for the control socket. The server's loop runs in a second
 * thread; the test thread is the client, and asks the loop thread to act
 * through a uv_async_t and waits on a condition variable, so nothing relies
 * on sleeping. Assertions only run on the test thread. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "pgshift/control.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pthread.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#define WAIT_MS 10000
/* How long a dropped client may wait for its hang-up: well under the
 * server's read timeout, so that only an actual drop counts. */
#define DROP_WAIT_MS 3000

typedef enum reply_mode {
    MODE_NOW,   /* reply from inside the handler */
    MODE_TIMER, /* reply from a timer 100 ms later */
    MODE_HOLD,  /* keep the call in h->held until the test says */
} reply_mode;

typedef struct harness harness;
typedef void (*loop_action)(harness *h);

struct harness {
    char dir[64];
    char path[128];
    bool running;
    uv_loop_t loop;
    uv_async_t wake;
    uv_timer_t timer;
    pthread_t thread;
    control_server *srv;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* shared with the loop thread, under mu */
    reply_mode mode;
    int requests;
    Pgshift__Command last_cmd;
    bool last_confirm;
    int fds_in_handler;
    control_call *held;
    loop_action action;
    bool action_done;
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL)
        return -1;
    int n = 0;
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

/* --- loop thread --- */

static void reply_status(control_call *call, const Pgshift__ControlRequest *req)
{
    Pgshift__TableProgress t = PGSHIFT__TABLE_PROGRESS__INIT;
    t.source = "public.t";
    t.target = "public.t_new";
    t.rows_copied = 42;
    Pgshift__TableProgress *tables[] = {&t};
    Pgshift__StatusSnapshot st = PGSHIFT__STATUS_SNAPSHOT__INIT;
    st.migration = "m1";
    st.phase = PGSHIFT__PHASE__PHASE_COPYING;
    st.n_tables = 1;
    st.tables = tables;
    char msg[64];
    snprintf(msg, sizeof msg, "command %d confirm %d", (int)req->command, (int)req->confirm);
    control_reply(call, true, msg, &st);
}

static void on_timer(uv_timer_t *t)
{
    harness *h = t->data;
    pthread_mutex_lock(&h->mu);
    control_call *call = h->held;
    h->held = NULL;
    pthread_mutex_unlock(&h->mu);
    control_reply(call, true, "later", NULL);
}

static void handler(void *arg, control_call *call, const Pgshift__ControlRequest *req)
{
    harness *h = arg;
    pthread_mutex_lock(&h->mu);
    h->requests++;
    h->last_cmd = req->command;
    h->last_confirm = req->confirm;
    h->fds_in_handler = count_fds();
    reply_mode mode = h->mode;
    if (mode != MODE_NOW)
        h->held = call;
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
    if (mode == MODE_NOW)
        reply_status(call, req);
    else if (mode == MODE_TIMER)
        uv_timer_start(&h->timer, on_timer, 100, 0);
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
    control_close(h->srv);
    h->srv = NULL;
    uv_close((uv_handle_t *)&h->wake, NULL);
    uv_close((uv_handle_t *)&h->timer, NULL);
}

static void act_reply_held(harness *h)
{
    pthread_mutex_lock(&h->mu);
    control_call *call = h->held;
    h->held = NULL;
    pthread_mutex_unlock(&h->mu);
    control_reply(call, true, "too late", NULL);
}

static void act_short_read_timeout(harness *h)
{
    control_set_read_timeout(h->srv, 200);
}

/* --- test thread --- */

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

static void set_mode(harness *h, reply_mode m)
{
    pthread_mutex_lock(&h->mu);
    h->mode = m;
    pthread_mutex_unlock(&h->mu);
}

/* Waits until the handler has seen n requests in all. */
static void wait_requests(harness *h, int n)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += WAIT_MS / 1000;
    pthread_mutex_lock(&h->mu);
    int rc = 0;
    while (h->requests < n && rc == 0)
        rc = pthread_cond_timedwait(&h->cv, &h->mu, &until);
    int got = h->requests;
    pthread_mutex_unlock(&h->mu);
    assert_int_equal(got, n);
}

static void harness_start(harness *h)
{
    assert_int_equal(uv_loop_init(&h->loop), 0);
    uv_async_init(&h->loop, &h->wake, on_wake);
    h->wake.data = h;
    uv_timer_init(&h->loop, &h->timer);
    h->timer.data = h;
    h->srv = control_listen(&h->loop, h->path, handler, h);
    assert_non_null(h->srv);
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
    assert_int_equal(uv_loop_close(&h->loop), 0);
}

static int setup(void **state)
{
    harness *h = calloc(1, sizeof *h);
    if (h == NULL)
        return -1;
    strcpy(h->dir, "/tmp/pgshift-ctl-XXXXXX");
    if (mkdtemp(h->dir) == NULL) {
        free(h);
        return -1;
    }
    snprintf(h->path, sizeof h->path, "%s/pgshift-m1.sock", h->dir);
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->cv, NULL);
    *state = h;
    return 0;
}

static int teardown(void **state)
{
    harness *h = *state;
    harness_stop(h);
    control_reply(h->held, false, NULL, NULL);
    unlink(h->path);
    rmdir(h->dir);
    pthread_mutex_destroy(&h->mu);
    pthread_cond_destroy(&h->cv);
    free(h);
    return 0;
}

static int raw_connect(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    return fd;
}

static void raw_send(int fd, const void *p, size_t n)
{
    assert_int_equal(send(fd, p, n, MSG_NOSIGNAL), (ssize_t)n);
}

/* A whole ControlRequest frame; returns its length. */
static size_t request_frame(uint8_t *out, Pgshift__Command cmd)
{
    Pgshift__ControlRequest req = PGSHIFT__CONTROL_REQUEST__INIT;
    req.command = cmd;
    size_t n = pgshift__control_request__pack(&req, out + 4);
    out[0] = 0;
    out[1] = 0;
    out[2] = (uint8_t)(n >> 8);
    out[3] = (uint8_t)n;
    return 4 + n;
}

/* Reads until n bytes or end of stream; returns what was read. */
static size_t raw_read(int fd, uint8_t *p, size_t n)
{
    size_t got = 0;
    while (got < n) {
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        assert_int_equal(poll(&pf, 1, WAIT_MS), 1);
        ssize_t r = recv(fd, p + got, n - got, 0);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    return got;
}

/* True when the server closes the connection without sending anything. */
static bool closed_without_reply(int fd)
{
    uint8_t b;
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    if (poll(&pf, 1, DROP_WAIT_MS) != 1)
        return false;
    ssize_t r = recv(fd, &b, 1, 0);
    return r == 0 || (r < 0 && errno == ECONNRESET);
}

static Pgshift__ControlReply *request_ok(harness *h, Pgshift__Command cmd, bool confirm)
{
    Pgshift__ControlRequest req = PGSHIFT__CONTROL_REQUEST__INIT;
    req.command = cmd;
    req.confirm = confirm;
    Pgshift__ControlReply *r = NULL;
    char err[256] = "";
    int rc = control_request(h->path, &req, &r, WAIT_MS, err, sizeof err);
    if (rc != 0)
        fprintf(stderr, "control_request: %s\n", err);
    assert_int_equal(rc, 0);
    assert_non_null(r);
    return r;
}

static void roundtrip(void **state)
{
    harness *h = *state;
    harness_start(h);

    Pgshift__ControlReply *r = request_ok(h, PGSHIFT__COMMAND__COMMAND_STATUS, false);
    assert_true(r->ok);
    assert_string_equal(r->message, "command 1 confirm 0");
    assert_non_null(r->status);
    assert_string_equal(r->status->migration, "m1");
    assert_int_equal(r->status->phase, PGSHIFT__PHASE__PHASE_COPYING);
    assert_int_equal(r->status->n_tables, 1);
    assert_string_equal(r->status->tables[0]->source, "public.t");
    assert_string_equal(r->status->tables[0]->target, "public.t_new");
    assert_int_equal(r->status->tables[0]->rows_copied, 42);
    pgshift__control_reply__free_unpacked(r, NULL);

    r = request_ok(h, PGSHIFT__COMMAND__COMMAND_ABORT, true);
    assert_string_equal(r->message, "command 5 confirm 1");
    pgshift__control_reply__free_unpacked(r, NULL);

    pthread_mutex_lock(&h->mu);
    int n = h->requests;
    Pgshift__Command cmd = h->last_cmd;
    bool confirm = h->last_confirm;
    pthread_mutex_unlock(&h->mu);
    assert_int_equal(n, 2);
    assert_int_equal(cmd, PGSHIFT__COMMAND__COMMAND_ABORT);
    assert_true(confirm);
}

typedef struct client_job {
    const char *path;
    Pgshift__Command cmd;
    int rc;
    bool match;
} client_job;

static void *client_thread(void *arg)
{
    client_job *j = arg;
    Pgshift__ControlRequest req = PGSHIFT__CONTROL_REQUEST__INIT;
    req.command = j->cmd;
    Pgshift__ControlReply *r = NULL;
    char err[256], want[64];
    j->rc = control_request(j->path, &req, &r, WAIT_MS, err, sizeof err);
    snprintf(want, sizeof want, "command %d confirm 0", (int)j->cmd);
    j->match = r && r->ok && strcmp(r->message, want) == 0;
    if (r)
        pgshift__control_reply__free_unpacked(r, NULL);
    return NULL;
}

static void many_clients(void **state)
{
    harness *h = *state;
    harness_start(h);
    enum { N = 16 };
    pthread_t th[N];
    client_job jobs[N];
    for (int i = 0; i < N; i++) {
        jobs[i] = (client_job){.path = h->path, .cmd = (Pgshift__Command)(1 + i % 7), .rc = 99};
        assert_int_equal(pthread_create(&th[i], NULL, client_thread, &jobs[i]), 0);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(jobs[i].rc, 0);
        assert_true(jobs[i].match);
    }
    wait_requests(h, N);
}

static void async_reply(void **state)
{
    harness *h = *state;
    set_mode(h, MODE_TIMER);
    harness_start(h);
    int64_t t0 = mono_ms();
    Pgshift__ControlReply *r = request_ok(h, PGSHIFT__COMMAND__COMMAND_CUTOVER, false);
    int64_t took = mono_ms() - t0;
    assert_true(r->ok);
    assert_string_equal(r->message, "later");
    assert_null(r->status);
    assert_true(took >= 95);
    pgshift__control_reply__free_unpacked(r, NULL);
    wait_requests(h, 1);
}

static void socket_mode(void **state)
{
    harness *h = *state;
    mode_t saved = umask(022);
    harness_start(h);
    mode_t during = umask(saved);
    struct stat st;
    assert_int_equal(stat(h->path, &st), 0);
    assert_true(S_ISSOCK(st.st_mode));
    assert_int_equal(st.st_mode & 07777, 0600);
    assert_int_equal(during, 022);
}

static void one_server_per_path(void **state)
{
    harness *h = *state;
    harness_start(h);

    uv_loop_t other;
    assert_int_equal(uv_loop_init(&other), 0);
    assert_null(control_listen(&other, h->path, handler, h));
    uv_run(&other, UV_RUN_NOWAIT);
    assert_int_equal(uv_loop_close(&other), 0);

    /* The first one still serves, on the same file. */
    Pgshift__ControlReply *r = request_ok(h, PGSHIFT__COMMAND__COMMAND_STATUS, false);
    assert_true(r->ok);
    pgshift__control_reply__free_unpacked(r, NULL);

    harness_stop(h);
    struct stat st;
    assert_int_equal(stat(h->path, &st), -1);
    assert_int_equal(errno, ENOENT);
}

static void stale_socket_replaced(void **state)
{
    harness *h = *state;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    strcpy(sa.sun_path, h->path);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    close(fd);
    struct stat st;
    assert_int_equal(stat(h->path, &st), 0);
    assert_true(S_ISSOCK(st.st_mode));

    Pgshift__ControlRequest req = PGSHIFT__CONTROL_REQUEST__INIT;
    Pgshift__ControlReply *r = NULL;
    char err[256];
    assert_int_equal(control_request(h->path, &req, &r, WAIT_MS, err, sizeof err), -1);
    assert_null(r);

    harness_start(h);
    r = request_ok(h, PGSHIFT__COMMAND__COMMAND_STATUS, false);
    assert_true(r->ok);
    pgshift__control_reply__free_unpacked(r, NULL);
}

static void refuses_bad_paths(void **state)
{
    harness *h = *state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);

    /* Never unlinks something that is not a socket. */
    int fd = open(h->path, O_CREAT | O_WRONLY, 0600);
    assert_true(fd >= 0);
    close(fd);
    assert_null(control_listen(&loop, h->path, handler, h));
    struct stat st;
    assert_int_equal(stat(h->path, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    unlink(h->path);

    char longpath[300];
    memset(longpath, 'x', sizeof longpath - 1);
    longpath[0] = '/';
    longpath[sizeof longpath - 1] = '\0';
    assert_null(control_listen(&loop, longpath, handler, h));
    Pgshift__ControlRequest req = PGSHIFT__CONTROL_REQUEST__INIT;
    Pgshift__ControlReply *r = NULL;
    char err[256] = "";
    assert_int_equal(control_request(longpath, &req, &r, WAIT_MS, err, sizeof err), -2);
    assert_non_null(strstr(err, "too long"));

    uv_run(&loop, UV_RUN_NOWAIT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void garbage(void **state)
{
    harness *h = *state;
    harness_start(h);

    /* A length far over the limit. */
    int fd = raw_connect(h->path);
    raw_send(fd, "\xff\xff\xff\xff", 4);
    assert_true(closed_without_reply(fd));
    close(fd);

    /* One byte over the 1 MiB limit. */
    fd = raw_connect(h->path);
    raw_send(fd, "\x00\x10\x00\x01", 4);
    assert_true(closed_without_reply(fd));
    close(fd);

    /* A frame that is not a ControlRequest. */
    fd = raw_connect(h->path);
    raw_send(fd, "\x00\x00\x00\x03\xff\xff\xff", 7);
    assert_true(closed_without_reply(fd));
    close(fd);

    /* Hung up in the middle of a frame. */
    fd = raw_connect(h->path);
    raw_send(fd, "\x00\x00\x00\x10\x08", 5);
    close(fd);

    Pgshift__ControlReply *r = request_ok(h, PGSHIFT__COMMAND__COMMAND_STATUS, false);
    assert_true(r->ok);
    pgshift__control_reply__free_unpacked(r, NULL);
    pthread_mutex_lock(&h->mu);
    int n = h->requests;
    pthread_mutex_unlock(&h->mu);
    assert_int_equal(n, 1);
}

static void partial_frames(void **state)
{
    harness *h = *state;
    harness_start(h);
    uint8_t frame[64];
    size_t n = request_frame(frame, PGSHIFT__COMMAND__COMMAND_PAUSE);
    int fd = raw_connect(h->path);
    for (size_t i = 0; i < n; i++)
        raw_send(fd, frame + i, 1);
    uint8_t hdr[4];
    assert_int_equal(raw_read(fd, hdr, 4), 4);
    uint32_t len = (uint32_t)hdr[0] << 24 | hdr[1] << 16 | hdr[2] << 8 | hdr[3];
    assert_true(len > 0 && len < 4096);
    uint8_t *body = malloc(len);
    assert_int_equal(raw_read(fd, body, len), len);
    Pgshift__ControlReply *r = pgshift__control_reply__unpack(NULL, len, body);
    free(body);
    assert_non_null(r);
    assert_string_equal(r->message, "command 2 confirm 0");
    pgshift__control_reply__free_unpacked(r, NULL);
    /* Then the server hangs up. */
    assert_true(closed_without_reply(fd));
    close(fd);
}

static void silent_client(void **state)
{
    harness *h = *state;
    harness_start(h);
    run_on_loop(h, act_short_read_timeout);
    int fd = raw_connect(h->path);
    /* Served while the silent one is connected. */
    Pgshift__ControlReply *r = request_ok(h, PGSHIFT__COMMAND__COMMAND_STATUS, false);
    assert_true(r->ok);
    pgshift__control_reply__free_unpacked(r, NULL);
    int64_t t0 = mono_ms();
    assert_true(closed_without_reply(fd));
    assert_true(mono_ms() - t0 < WAIT_MS);
    close(fd);
}

static void client_gone_before_reply(void **state)
{
    harness *h = *state;
    harness_start(h);
    Pgshift__ControlReply *r = request_ok(h, PGSHIFT__COMMAND__COMMAND_STATUS, false);
    pgshift__control_reply__free_unpacked(r, NULL);
    pthread_mutex_lock(&h->mu);
    int base = h->fds_in_handler;
    pthread_mutex_unlock(&h->mu);
    assert_true(base > 0);

    set_mode(h, MODE_HOLD);
    uint8_t frame[64];
    size_t n = request_frame(frame, PGSHIFT__COMMAND__COMMAND_CUTOVER);
    int fd = raw_connect(h->path);
    raw_send(fd, frame, n);
    wait_requests(h, 2);
    close(fd);
    run_on_loop(h, act_reply_held);
    assert_null(h->held);

    /* Still serving, and the connection of the client that left is closed. */
    set_mode(h, MODE_NOW);
    r = request_ok(h, PGSHIFT__COMMAND__COMMAND_STATUS, false);
    assert_true(r->ok);
    pgshift__control_reply__free_unpacked(r, NULL);
    pthread_mutex_lock(&h->mu);
    int now = h->fds_in_handler;
    pthread_mutex_unlock(&h->mu);
    assert_int_equal(now, base);
}

static void request_timeout(void **state)
{
    harness *h = *state;
    set_mode(h, MODE_HOLD);
    harness_start(h);
    Pgshift__ControlRequest req = PGSHIFT__CONTROL_REQUEST__INIT;
    req.command = PGSHIFT__COMMAND__COMMAND_CUTOVER;
    Pgshift__ControlReply *r = NULL;
    char err[256] = "";
    int64_t t0 = mono_ms();
    assert_int_equal(control_request(h->path, &req, &r, 200, err, sizeof err), -2);
    int64_t took = mono_ms() - t0;
    assert_null(r);
    assert_non_null(strstr(err, "no reply within 200 ms"));
    assert_true(took >= 195 && took < WAIT_MS);
    wait_requests(h, 1);
    run_on_loop(h, act_reply_held);
}

static void close_answers_pending(void **state)
{
    harness *h = *state;
    set_mode(h, MODE_HOLD);
    harness_start(h);
    uint8_t frame[64];
    size_t n = request_frame(frame, PGSHIFT__COMMAND__COMMAND_CUTOVER);
    int fd = raw_connect(h->path);
    raw_send(fd, frame, n);
    wait_requests(h, 1);
    harness_stop(h);

    uint8_t buf[256];
    size_t got = raw_read(fd, buf, sizeof buf);
    close(fd);
    assert_true(got > 4);
    uint32_t len = (uint32_t)buf[0] << 24 | buf[1] << 16 | buf[2] << 8 | buf[3];
    assert_int_equal(got, 4 + len);
    Pgshift__ControlReply *r = pgshift__control_reply__unpack(NULL, len, buf + 4);
    assert_non_null(r);
    assert_false(r->ok);
    assert_string_equal(r->message, "pgshift run stopped");
    pgshift__control_reply__free_unpacked(r, NULL);

    /* The call outlives the server: answering it now only frees it. */
    assert_non_null(h->held);
    control_reply(h->held, true, "too late", NULL);
    h->held = NULL;
    struct stat st;
    assert_int_equal(stat(h->path, &st), -1);
}

static void no_server(void **state)
{
    harness *h = *state;
    Pgshift__ControlRequest req = PGSHIFT__CONTROL_REQUEST__INIT;
    Pgshift__ControlReply *r = NULL;
    char err[256] = "";
    assert_int_equal(control_request(h->path, &req, &r, WAIT_MS, err, sizeof err), -1);
    assert_null(r);
    assert_non_null(strstr(err, "no pgshift run"));
    char missing[200];
    snprintf(missing, sizeof missing, "%s/nodir/x.sock", h->dir);
    assert_int_equal(control_request(missing, &req, &r, 0, err, sizeof err), -1);
}

static void socket_path(void **state)
{
    (void)state;
    char want[128];
    snprintf(want, sizeof want, "/var/lib/pgshift/pgshift-%u/pgshift-orders.sock",
             (unsigned)geteuid());
    char *p = control_socket_path("/var/lib/pgshift", "orders");
    assert_string_equal(p, want);
    free(p);
    p = control_socket_path("/var/lib/pgshift/", "orders");
    assert_string_equal(p, want);
    free(p);
    snprintf(want, sizeof want, "/tmp/pgshift-%u", (unsigned)geteuid());
    p = control_socket_dir("/tmp");
    assert_string_equal(p, want);
    free(p);
}

/* --- the private directory and the peer's uid --- */

static uid_t nobody_uid(gid_t *gid)
{
    struct passwd *pw = getpwnam("nobody");
    *gid = pw ? pw->pw_gid : 65534;
    return pw ? pw->pw_uid : 65534;
}

static void private_dir(void **state)
{
    harness *h = *state;
    char d[200], err[512];
    struct stat st;
    snprintf(d, sizeof d, "%s/sub", h->dir);

    /* Missing: reported as such, or made 0700 even under a lax umask. */
    assert_int_equal(control_private_dir(d, false, err, sizeof err), -1);
    assert_non_null(strstr(err, "does not exist"));
    mode_t saved = umask(0);
    assert_int_equal(control_private_dir(d, true, err, sizeof err), 0);
    umask(saved);
    assert_int_equal(lstat(d, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(st.st_mode & 07777, 0700);
    assert_int_equal(st.st_uid, geteuid());
    assert_int_equal(control_private_dir(d, false, err, sizeof err), 0);

    /* Open to everyone, or to the group: refused, and left as it is. */
    assert_int_equal(chmod(d, 0777), 0);
    assert_int_equal(control_private_dir(d, true, err, sizeof err), -2);
    assert_non_null(strstr(err, "mode 0777"));
    assert_null(strchr(err, '\n'));
    assert_int_equal(lstat(d, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0777);
    assert_int_equal(chmod(d, 0750), 0);
    assert_int_equal(control_private_dir(d, false, err, sizeof err), -2);
    assert_non_null(strstr(err, "mode 0750"));
    assert_int_equal(chmod(d, 0701), 0);
    assert_int_equal(control_private_dir(d, false, err, sizeof err), -2);
    assert_int_equal(chmod(d, 0700), 0);

    /* A symbolic link to a good directory, or a file: refused. */
    char link[220];
    snprintf(link, sizeof link, "%s/link", h->dir);
    assert_int_equal(symlink(d, link), 0);
    assert_int_equal(control_private_dir(link, true, err, sizeof err), -2);
    assert_non_null(strstr(err, "symbolic link"));
    unlink(link);
    int fd = open(link, O_CREAT | O_WRONLY, 0600);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(control_private_dir(link, true, err, sizeof err), -2);
    assert_non_null(strstr(err, "not a directory"));
    unlink(link);

    /* Someone else's directory, even with mode 0700: refused, not taken over. */
    if (geteuid() == 0) {
        gid_t g;
        uid_t nobody = nobody_uid(&g);
        assert_int_equal(chown(d, nobody, g), 0);
        assert_int_equal(control_private_dir(d, true, err, sizeof err), -2);
        assert_non_null(strstr(err, "owned by uid"));
        assert_int_equal(lstat(d, &st), 0);
        assert_int_equal(st.st_uid, nobody);
    }
    assert_int_equal(rmdir(d), 0);
}

static void listen_only_in_private_dir(void **state)
{
    harness *h = *state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct stat st;

    /* The socket's directory is made when missing (its parent must exist). */
    char sub[200], path[240];
    snprintf(sub, sizeof sub, "%s/pgshift-%u", h->dir, (unsigned)geteuid());
    snprintf(path, sizeof path, "%s/pgshift-m2.sock", sub);
    control_server *s = control_listen(&loop, path, handler, h);
    assert_non_null(s);
    assert_int_equal(lstat(sub, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0700);
    control_close(s);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(rmdir(sub), 0);

    /* An open directory: no socket, and the client will not use one there. */
    assert_int_equal(chmod(h->dir, 0777), 0);
    assert_null(control_listen(&loop, h->path, handler, h));
    uv_run(&loop, UV_RUN_NOWAIT);
    assert_int_equal(lstat(h->path, &st), -1);
    Pgshift__ControlRequest req = PGSHIFT__CONTROL_REQUEST__INIT;
    Pgshift__ControlReply *r = NULL;
    char err[512] = "";
    assert_int_equal(control_request(h->path, &req, &r, WAIT_MS, err, sizeof err), -2);
    assert_null(r);
    assert_non_null(strstr(err, "mode 0777"));
    assert_int_equal(chmod(h->dir, 0700), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void peer_rule(void **state)
{
    (void)state;
    assert_true(control_peer_allowed(1000, 1000));
    assert_true(control_peer_allowed(0, 1000));
    assert_true(control_peer_allowed(0, 0));
    assert_false(control_peer_allowed(1001, 1000));
    assert_false(control_peer_allowed(1000, 0));
}

/* Becomes `nobody` for good; only in a forked child. */
static bool become_nobody(uid_t uid, gid_t gid)
{
    return setgroups(0, NULL) == 0 && setgid(gid) == 0 && setuid(uid) == 0 && geteuid() == uid;
}

static void server_refuses_other_uid(void **state)
{
    harness *h = *state;
    if (geteuid() != 0)
        skip(); /* needs root to become another user */
    gid_t gid;
    uid_t nobody = nobody_uid(&gid);
    harness_start(h);
    /* Let the other user reach the socket, so only the uid check stops it. */
    assert_int_equal(chmod(h->dir, 0711), 0);
    assert_int_equal(chmod(h->path, 0666), 0);

    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (!become_nobody(nobody, gid))
            _exit(10);
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        strcpy(sa.sun_path, h->path);
        int fd = socket(AF_UNIX, SOCK_STREAM, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0)
            _exit(11);
        uint8_t frame[64];
        size_t n = request_frame(frame, PGSHIFT__COMMAND__COMMAND_ABORT);
        (void)send(fd, frame, n, MSG_NOSIGNAL);
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        if (poll(&pf, 1, DROP_WAIT_MS) != 1)
            _exit(12);
        uint8_t b;
        ssize_t r = recv(fd, &b, 1, 0);
        _exit(r == 0 || (r < 0 && errno == ECONNRESET) ? 0 : 13);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0); /* closed without a reply */
    pthread_mutex_lock(&h->mu);
    int n = h->requests;
    pthread_mutex_unlock(&h->mu);
    assert_int_equal(n, 0);
    assert_int_equal(chmod(h->dir, 0700), 0);

    /* The run's own user still gets through. */
    Pgshift__ControlReply *r = request_ok(h, PGSHIFT__COMMAND__COMMAND_STATUS, false);
    assert_true(r->ok);
    pgshift__control_reply__free_unpacked(r, NULL);
}

static void client_refuses_other_uid(void **state)
{
    harness *h = *state;
    if (geteuid() != 0)
        skip(); /* needs root to become another user */
    gid_t gid;
    uid_t nobody = nobody_uid(&gid);
    int ready[2];
    assert_int_equal(pipe(ready), 0);

    /* A listener bound in our private directory, but listening as nobody:
     * SO_PEERCRED reports who called listen(). */
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(ready[0]);
        alarm(20);
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        strcpy(sa.sun_path, h->path);
        int lfd = socket(AF_UNIX, SOCK_STREAM, 0);
        if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof sa) != 0)
            _exit(10);
        if (!become_nobody(nobody, gid) || listen(lfd, 4) != 0)
            _exit(11);
        if (write(ready[1], "x", 1) != 1)
            _exit(12);
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0)
            _exit(13);
        /* The client must hang up without sending its request. */
        uint8_t buf[64];
        ssize_t r;
        size_t got = 0;
        while ((r = recv(fd, buf, sizeof buf, 0)) > 0)
            got += (size_t)r;
        _exit(got == 0 ? 0 : 14);
    }
    close(ready[1]);
    char b;
    assert_int_equal(read(ready[0], &b, 1), 1);
    close(ready[0]);

    Pgshift__ControlRequest req = PGSHIFT__CONTROL_REQUEST__INIT;
    req.command = PGSHIFT__COMMAND__COMMAND_CUTOVER;
    Pgshift__ControlReply *r = NULL;
    char err[512] = "";
    assert_int_equal(control_request(h->path, &req, &r, 2000, err, sizeof err), -2);
    assert_null(r);
    char want[64];
    snprintf(want, sizeof want, "served by uid %u", (unsigned)nobody);
    if (strstr(err, want) == NULL)
        fprintf(stderr, "control_request: %s\n", err);
    assert_non_null(strstr(err, want));

    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0); /* nothing was sent */
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(roundtrip),
        T(many_clients),
        T(async_reply),
        T(socket_mode),
        T(one_server_per_path),
        T(stale_socket_replaced),
        T(refuses_bad_paths),
        T(garbage),
        T(partial_frames),
        T(silent_client),
        T(client_gone_before_reply),
        T(request_timeout),
        T(close_answers_pending),
        T(no_server),
        T(socket_path),
        T(private_dir),
        T(listen_only_in_private_dir),
        T(peer_rule),
        T(server_refuses_other_uid),
        T(client_refuses_other_uid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
