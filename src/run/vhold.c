/* vhold.c: `pgshift verify` brings the applier to rest at the LSN of its
 * source snapshot, so that the target it reads holds exactly the source
 * commits that snapshot sees (src/verify/verify.c is the other side).
 *
 *   VERIFY_HOLD     the current source transaction ends, the batch
 *                   commits, the stream is held (VH_SETTLING -> VH_HELD);
 *                   reply: the applied position. Every commit applied so
 *                   far is older than any snapshot the verifier makes now.
 *   VERIFY_AT lsn   the verifier made its snapshot (a temporary slot's
 *                   exported snapshot: it sees exactly the commits whose
 *                   commit record starts below `lsn`) and emitted a
 *                   message past it: the stream goes on up to the first
 *                   Begin whose commit LSN is >= lsn, or that message; the
 *                   batch before it commits (VH_TO_LSN -> VH_AT_SETTLING
 *                   -> VH_AT); reply once at rest.
 *   VERIFY_RELEASE  the verifier holds its target snapshot: stream on.
 *   VERIFY_RENEW    at VH_AT: the lease starts again (--repair writes the
 *                   target while the run holds there).
 * Every command after VERIFY_HOLD carries the token it came with: another
 * verify cannot move or end this one's hold.
 *
 * A hold without the verifier's next command for VHOLD_LEASE_MS ends by
 * itself (the verifier died, or its snapshot waits on a long transaction),
 * so a verify can never stop a migration for longer than that. */
#include "engine.h"

#include "pgshift/log.h"

#include <stdio.h>
#include <string.h>

static void answer(engine *e, bool ok, const char *msg, pgs_lsn lsn)
{
    control_call *call = e->vh_call;
    e->vh_call = NULL;
    if (call)
        control_reply_lsn(call, ok, msg, NULL, lsn);
}

static void release(engine *e)
{
    e->vh = VH_NONE;
    uv_timer_stop(&e->vh_timer);
    if (!e->stopping)
        flow_continue(e);
}

static void on_lease(uv_timer_t *t)
{
    engine *e = t->data;
    if (e->vh == VH_NONE)
        return;
    log_warn("verify: no word from `pgshift verify` for %d s; the stream goes on",
             VHOLD_LEASE_MS / 1000);
    answer(e, false, "the hold expired", 0);
    release(e);
}

void vhold_init(engine *e)
{
    uv_timer_init(&e->loop, &e->vh_timer);
    e->vh_timer.data = e;
}

bool vhold_holds(const engine *e)
{
    /* While settling, the transaction under way is delivered to its end. */
    return (e->vh == VH_SETTLING && !apply_in_xact(e->apply)) || e->vh == VH_HELD ||
           e->vh == VH_AT_SETTLING || e->vh == VH_AT;
}

static const char *refusal(engine *e)
{
    pgs_phase ph = e->m->phase;
    if (e->vh != VH_NONE)
        return "another `pgshift verify` holds the applier right now; try again";
    if (e->stopping)
        return "pgshift run is stopping";
    if (e->paused || e->pausing)
        return "the run is paused, so the target cannot be brought to the source's snapshot; "
               "`pgshift resume` first";
    if (codriver_busy(e->drv))
        return "a cutover holds its locks right now; try again";
    if (!stream_is_open(e->rs) || (ph != PGS_PHASE_READY && ph != PGS_PHASE_CATCHING_UP))
        return "not streaming right now (starting or reconnecting); try again";
    return NULL;
}

void vhold_command(engine *e, control_call *call, int command, pgs_lsn lsn, uint64_t token)
{
    char lsnbuf[18];
    if (command == PGSHIFT__COMMAND__COMMAND_VERIFY_HOLD) {
        const char *no = refusal(e);
        if (no) {
            control_reply(call, false, no, NULL);
            return;
        }
        e->vh = VH_SETTLING;
        e->vh_token = token;
        e->vh_call = call;
        eager_abandon(e, false, false, "`pgshift verify` holds the stream");
        uv_timer_start(&e->vh_timer, on_lease, VHOLD_LEASE_MS, 0);
        vhold_progress(e);
        return;
    }
    /* The others only move the hold their own verifier made. */
    if (e->vh == VH_NONE || token != e->vh_token) {
        control_reply(call, command == PGSHIFT__COMMAND__COMMAND_VERIFY_RELEASE,
                      "no hold of this verify (it expired, or the run restarted)", NULL);
        return;
    }
    if (command == PGSHIFT__COMMAND__COMMAND_VERIFY_RELEASE) {
        log_info("verify: snapshots taken; the stream goes on");
        answer(e, false, "released", 0);
        release(e);
        control_reply(call, true, "released", NULL);
        return;
    }
    if (command == PGSHIFT__COMMAND__COMMAND_VERIFY_RENEW) {
        bool at = e->vh == VH_AT;
        if (at)
            uv_timer_start(&e->vh_timer, on_lease, VHOLD_LEASE_MS, 0);
        control_reply(call, at, at ? "held" : "not at rest at the LSN", NULL);
        return;
    }
    /* VERIFY_AT */
    if (e->vh != VH_HELD) {
        control_reply(call, false, "the hold is not at rest yet", NULL);
        return;
    }
    e->vh = VH_TO_LSN;
    e->vh_lsn = lsn;
    e->vh_call = call;
    uv_timer_stop(&e->vh_timer);
    log_info("verify: applying up to the verifier's snapshot at %s",
             decode_lsn_format(lsn, lsnbuf));
    flow_continue(e);
}

bool vhold_before(engine *e, const decode_msg *msg)
{
    if (e->vh != VH_TO_LSN)
        return true;
    bool reached =
        (msg->kind == DECODE_BEGIN && msg->u.begin.final_lsn >= e->vh_lsn) ||
        (msg->kind == DECODE_MESSAGE && !(msg->u.message.flags & DECODE_MESSAGE_TRANSACTIONAL) &&
         strcmp(msg->u.message.prefix, "pgshift_verify") == 0 && msg->u.message.lsn >= e->vh_lsn);
    if (!reached)
        return true;
    /* Everything below the snapshot's LSN has been delivered: commit it
     * (a commit deferred behind the batch in flight goes out when that
     * one's result arrives; the Begin about to be applied puts nothing in
     * the batch) and deliver nothing more. */
    e->vh = VH_AT_SETTLING;
    return flow_commit(e, false);
}

void vhold_progress(engine *e)
{
    if (e->vh != VH_SETTLING && e->vh != VH_AT_SETTLING)
        return;
    if (e->vh == VH_SETTLING && apply_in_xact(e->apply))
        return; /* the stream delivers the rest of it */
    if (apply_batch_open(e->apply) && !flow_commit(e, false))
        return;
    /* No streamed transaction is applied early meanwhile (eager.c waits
     * for VH_NONE; VERIFY_HOLD abandoned any under way). */
    if (flow_busy(e) || apply_batch_open(e->apply) || e->eg != EG_NONE)
        return;
    char lsn[18], msg[160];
    pgs_lsn at = e->m->applied_lsn;
    if (e->vh == VH_SETTLING) {
        e->vh = VH_HELD;
        snprintf(msg, sizeof msg, "held at applied position %s", decode_lsn_format(at, lsn));
    } else {
        e->vh = VH_AT;
        uv_timer_start(&e->vh_timer, on_lease, VHOLD_LEASE_MS, 0);
        snprintf(msg, sizeof msg, "at rest at applied position %s", decode_lsn_format(at, lsn));
    }
    answer(e, true, msg, at);
}

void vhold_stop(engine *e)
{
    answer(e, false, "pgshift run stopped", 0);
    e->vh = VH_NONE;
    uv_timer_stop(&e->vh_timer);
}
