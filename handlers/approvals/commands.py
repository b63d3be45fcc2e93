"""/approve ID and /reject ID; the expiry of pending approvals after 24 hours."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from bot.capability import Commands
from bot.context import COORDINATORS, Context, UserError, parse_id
from bot.i18n import N_, Translator
from bot.jobs import JobContext
from bot.messages import Priority
from bot.notify import notify_member
from handlers.approvals.core import eligible
from storage import approvals, audit
from storage.approvals import Approval

# Carries out an approved act as the approver: the reply for the approver, or None when what it
# would act on is gone (the approval is then void). Each comes from the capability that owns it.
Executor = Callable[[Context, Approval], str | None]
# Undoes what waits for an approval that was rejected or expired (a broadcast draft is dropped).
Abandon = Callable[[Context | JobContext, Approval], None]

NO_SUCH = N_("There is no pending request with that number.")


def _pending_for_me(ctx: Context, args: str) -> Approval:
    member = ctx.require_member()
    wanted = parse_id(args)
    a = approvals.get(ctx.conn, wanted) if wanted is not None else None
    if a is None:
        raise UserError(ctx._(NO_SUCH))
    if a.initiator_id == member.id:
        if a.state == approvals.PENDING:
            raise UserError(
                ctx._(
                    "You asked for this yourself: a second person has to approve it.",
                )
            )
        raise UserError(ctx._(NO_SUCH))
    # Eligibility is read now, not when it was asked: a coordinator unassigned since then, or
    # one of an unrelated case, gets the same answer as for a number that does not exist.
    if member.id not in eligible(ctx.conn, initiator_id=a.initiator_id, case_id=a.case_id):
        raise UserError(ctx._(NO_SUCH))
    return a


def _decide(ctx: Context, args: str, abandon: Mapping[str, Abandon], state: str) -> Approval | None:
    """The request this member may decide, now decided as `state`; None when it had expired
    (that is then recorded, undone and answered)."""
    a = _pending_for_me(ctx, args)
    if a.state == approvals.PENDING and a.expires_at <= ctx.now:
        if approvals.decide(ctx.conn, a.id, approvals.EXPIRED, None, ctx.now):
            _abandon(ctx, a, abandon, approvals.EXPIRED)
        a = approvals.get(ctx.conn, a.id) or a
    if a.state == approvals.EXPIRED:
        ctx.reply(ctx._("Request #{id} expired after 24 hours; nothing was done.", id=a.id))
        return None
    member = ctx.require_member()
    if not approvals.decide(ctx.conn, a.id, state, member.id, ctx.now):
        raise UserError(ctx._("Request #{id} was already decided.", id=a.id))
    return a


def _abandon(
    ctx: Context | JobContext, a: Approval, abandon: Mapping[str, Abandon], state: str
) -> None:
    undo = abandon.get(a.kind)
    if undo is not None:
        undo(ctx, a)
    if a.initiator_id is None:
        return
    aid = a.id

    def render(_: Translator) -> str:
        if state == approvals.EXPIRED:
            return _(
                "Request #{id} expired after 24 hours without approval; nothing was done.", id=aid
            )
        return _("Request #{id} was rejected; nothing was done.", id=aid)

    notify_member(
        ctx.conn,
        a.initiator_id,
        render,
        now=ctx.now,
        channels=ctx.services.transports,
        priority=Priority.ALERT,
        idem_key=f"approval:{aid}:{state}",
    )


def make_commands(executors: Mapping[str, Executor], abandon: Mapping[str, Abandon]) -> Commands:
    commands = Commands()

    @commands.command(
        "approve",
        roles=COORDINATORS,
        summary=N_("agree to a request that needs a second person: /approve ID"),
        order=62,
    )
    def approve(ctx: Context, args: str) -> None:
        a = _decide(ctx, args, abandon, approvals.APPROVED)
        if a is None:
            return
        ctx.audit("approval.approved", f"approval:{a.id}")
        done = executors[a.kind](ctx, a)
        if done is None:
            approvals.void(ctx.conn, a.id, ctx.now)
            ctx.reply(
                ctx._(
                    "Request #{id} can no longer be carried out (what it was about has "
                    "changed); nothing was done.",
                    id=a.id,
                )
            )
            return
        ctx.reply(done)

    @commands.command(
        "reject",
        roles=COORDINATORS,
        summary=N_("refuse a request that needs a second person: /reject ID"),
        order=63,
    )
    def reject(ctx: Context, args: str) -> None:
        a = _decide(ctx, args, abandon, approvals.REJECTED)
        if a is None:
            return
        ctx.audit("approval.rejected", f"approval:{a.id}")
        _abandon(ctx, a, abandon, approvals.REJECTED)
        ctx.reply(ctx._("Rejected request #{id}; nothing was done. Its author is told.", id=a.id))

    return commands


def expire_job(abandon: Mapping[str, Abandon]) -> Callable[[JobContext], int]:
    def run(job: JobContext) -> int:
        done = 0
        for a in approvals.due_to_expire(job.conn, job.now):
            if approvals.decide(job.conn, a.id, approvals.EXPIRED, None, job.now):
                audit.record(job.conn, None, "approval.expired", f"approval:{a.id}", job.now)
                _abandon(job, a, abandon, approvals.EXPIRED)
                done += 1
        return done

    return run
