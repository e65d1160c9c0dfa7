/* engine.h: the state of one `run` after the copy (private to src/run/).
 * The orchestrator owns the libuv loop and everything on it; the lower
 * modules it drives report back only through the callbacks it gives them:
 *
 *   run.c     the loop, signals, stop, pause/resume, control commands,
 *             status snapshot, hooks, and the ops of the cutover driver
 *   flow.c    the data path: stream (stream.h) -> applier (apply.h), the
 *             apply socket, back-pressure, batches, feedback, reconnect
 *   sample.c  the source monitor, the lag model (lag.h) and the phase
 *             changes it drives (phase.h) */
#ifndef PGSHIFT_RUN_ENGINE_H
#define PGSHIFT_RUN_ENGINE_H

#include "pgshift/apply.h"
#include "pgshift/aquery.h"
#include "pgshift/catalog.h"
#include "pgshift/codriver.h"
#include "pgshift/control.h"
#include "pgshift/lag.h"
#include "pgshift/migration.h"
#include "pgshift/status.h"
#include "pgshift/stream.h"

#include <stdbool.h>
#include <uv.h>

#define FEEDBACK_MS     1000
#define STATS_MS        2000
#define ORIGIN_PROBE_MS 100 /* sample_origin_probe */
#define BACKOFF_MAX_MS  30000
/* How long a stop waits for the target to answer the batch in flight. */
#define STOP_WAIT_MS 1500
/* How long the end of the stream waits for the server to take the final
 * status update (stream_finish). */
#define STREAM_FINISH_MS 400
/* The main applier waiting this long with no result while a streamed
 * transaction is open on the second session: give that one up (eager.c). */
#define EAGER_STUCK_MS 3000
/* A monitor query unanswered this long: the connection is replaced. */
#define MONITOR_STUCK_MS 30000

/* `pgshift verify` holding the applier (vhold.c). */
typedef enum vhold_state {
    VH_NONE,
    VH_SETTLING,    /* VERIFY_HOLD: the current transaction ends, the batch commits */
    VH_HELD,        /* at rest at the applied position; the verifier makes its source snapshot */
    VH_TO_LSN,      /* VERIFY_AT: applying every source commit below vh_lsn */
    VH_AT_SETTLING, /* the first commit at or past vh_lsn came: the batch before it commits */
    VH_AT,          /* at rest at vh_lsn; the verifier takes its target snapshot */
} vhold_state;
/* How long a hold lasts without the verifier's next command (it died, or
 * its source snapshot waits on a long transaction): then the stream goes
 * on and a late VERIFY_AT is refused. */
#define VHOLD_LEASE_MS 60000

typedef enum eager_state {
    EG_NONE,             /* no streamed transaction applied early */
    EG_WAIT_MAIN,        /* a block of it came: the main applier commits first */
    EG_APPLYING,         /* its changes go to the second session as they come */
    EG_COMMIT_WAIT_MAIN, /* its Stream Commit came: the main applier commits first */
    EG_COMMIT_WAIT_EA,   /* the second session's COMMIT is out */
} eager_state;

typedef struct engine {
    pgs_migration *m;
    uv_loop_t loop;
    int exit_code;
    bool stopping;
    bool finished; /* finish_stop ran */
    uv_timer_t stop_timer;
    uv_signal_t sigint, sigterm;

    /* the data path (flow.c) */
    repl_stream *rs;
    apply_ctx *apply;
    uv_poll_t apply_poll; /* the apply connection: results, room to write */
    int apply_events;     /* what apply_poll watches now (UV_READABLE...); 0 before it starts */
    bool hold;            /* the cutover driver holds the stream */
    pgs_lsn idle_confirm; /* keepalive position seen with nothing pending */
    double last_feedback_ms;
    pgs_lsn last_flush_sent;
    int backoff_ms;
    uv_timer_t feedback_timer, batch_timer, reconnect_timer;
    uv_timer_t kick_timer; /* results already in libpq's buffer (flow_update_poll) */
    /* With origin 'none' (stream_origin_active), nothing is confirmed past
     * origin_cap: a position the source had reached before a sample saw no
     * replication origin but pgshift's (changes under an origin made later
     * come after it). Samples sent before origin_since_ms do not count. */
    pgs_lsn origin_cap, origin_pending;
    double origin_since_ms, sample_sent_ms, probe_sent_ms;
    double main_progress_ms; /* the main applier's last results */
    double ea_progress_ms;   /* the second session's (eager.c) */

    /* a streamed transaction applied while it runs (eager.c) */
    apply_ctx *ea, *ea_closing;
    uv_poll_t ea_poll;
    bool ea_poll_on;
    int ea_events;
    eager_state eg;
    uint32_t eg_xid, eg_block_xid;
    bool eg_began, eg_disabled;
    decode_msg eg_commit;

    /* sampling (sample.c) */
    aquery *mon;         /* the source monitor: WAL position, slot health */
    double mon_retry_ms; /* when to open a new monitor connection */
    uv_timer_t stats_timer;
    uv_timer_t probe_timer; /* the next origin probe (sample_origin_probe) */
    lag_model lag;
    pgs_lsn last_applied, last_source_lsn;
    double last_log_ms, last_slot_warn_ms;
    double last_idle_warn_ms;           /* what invalidates the slot while not streaming */
    long long slot_retained, slot_safe; /* safe -1: unlimited */
    bool slot_safe_null;
    char wal_status[32];

    /* operator controls (run.c) */
    control_server *ctl;
    bool paused, pausing;
    control_call *pause_call;
    control_call *resume_call; /* answered by engine_stop if the resume finds the slot lost */
    bool sync_point_sent;      /* this stop or pause made its batches durable (flow_settled) */
    control_call *co_call;     /* a `pgshift cutover` waiting for the outcome */
    codriver *drv;

    /* `pgshift verify` (vhold.c) */
    vhold_state vh;
    uint64_t vh_token; /* the verifier's, from VERIFY_HOLD */
    pgs_lsn vh_lsn;
    control_call *vh_call; /* answered once the applier is at rest */
    uv_timer_t vh_timer;   /* the lease */

    /* the rollback window (reverse.c): on a forward run, the reverse
     * publication and slot made before the first lock; on the reverse
     * run, the end of the window */
    aquery *rq;
    int rq_step;
    bool rq_have_slot;
    double rq_since_ms, rq_retry_ms, rq_logged_ms;
    uv_timer_t window_timer;
} engine;

double engine_now_ms(void);

/* run.c */
void engine_stop(engine *e, int code);
void engine_fire(engine *e, const char *event);
void engine_publish(engine *e);
/* The status snapshot of the run now (status.h); false on OOM. */
bool engine_snapshot(engine *e, status_snapshot *x);
void engine_finish_pause(engine *e);

/* flow.c */
bool flow_init(engine *e);
bool flow_connect(engine *e);
void flow_schedule_reconnect(engine *e);
/* Logs that the slot is lost (missing or invalidated) and what to do, and
 * stops the run with exit 1. */
void flow_slot_lost(engine *e, const pgs_slot_state *s);
void flow_settle(engine *e, bool failed);
void flow_update_poll(engine *e);
bool flow_commit(engine *e, bool sync);
void flow_send_feedback(engine *e, bool reply);
void flow_finish_stream(engine *e);
pgs_lsn flow_flush_position(engine *e);

void flow_continue(engine *e);
bool flow_busy(const engine *e);
bool flow_settled(engine *e);

/* eager.c */
int eager_streamed(void *arg, const decode_msg *msg);
bool eager_ready(engine *e);
bool eager_busy(const engine *e);
void eager_step(engine *e);
void eager_watch(engine *e);
void eager_abandon(engine *e, bool disable, bool session_ends, const char *why);
void eager_free(engine *e);

/* vhold.c */
void vhold_init(engine *e);
void vhold_command(engine *e, control_call *call, int command, pgs_lsn lsn, uint64_t token);
/* Does the hold keep the stream from delivering now? */
bool vhold_holds(const engine *e);
/* Before a message is applied: the first commit at or past the verify
 * LSN (or the verifier's message) ends VH_TO_LSN. False: stop. */
bool vhold_before(engine *e, const decode_msg *msg);
/* After a message was applied, and when the applier made progress. */
void vhold_progress(engine *e);
/* The run stops: a waiting verifier is answered. */
void vhold_stop(engine *e);

/* reverse.c */
/* A forward run with a rollback window: are the reverse publication and
 * slot there? If not, they are made (once, without waiting) and a cutover
 * attempt waits. True without a window. */
bool reverse_slot_ready(engine *e);
void reverse_engine_close(engine *e);
/* The reverse run: the window's end stops it (m->window_over). */
void reverse_engine_start(engine *e);

/* sample.c */
void sample_start(engine *e);
void sample_origin_probe(engine *e);
bool sample_phase_event(engine *e, pgs_event ev, const char *detail);
/* Other replication origins were seen (names; NULL: none) while the
 * stream drops changes made under an origin: logs it and stops the run
 * (true). */
bool sample_other_origins(engine *e, const char *names);
/* The monitor, when it can take a query now (opened again when it failed). */
aquery *sample_monitor(engine *e);

#endif
