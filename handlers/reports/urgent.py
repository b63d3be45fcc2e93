"""Emergencies: /urgent to every coordinator of the case at once, /ack, and the re-sends.

/urgent goes at Priority.EMERGENCY and is re-sent (10 min, then 30, then hourly) until someone
sends /ack ID; after 3 days unacknowledged it stops and admins are told. Re-sends carry no
report text. Without a sealing key an emergency is still delivered, but not archived.
"""

from __future__ import annotations

from collections.abc import Callable

from bot.capability import Commands
from bot.context import COORDINATORS, FAMILY, Context, UserError, parse_id
from bot.flows import Flow, FlowContext, Step
from bot.i18n import N_, Translator
from bot.messages import Attachment, Choice, Priority
from bot.notify import notify_member
from handlers.common import sanitize_free_text
from handlers.reports import archive
from handlers.reports.family import my_case, require_cases, require_private, split_slug
from handlers.reports.render import ALERT_NOT_FOUND
from handlers.reports.wizard import (
    DRAFT_TTL,
    LOST,
    MAX_TEXT,
    case_choices,
    case_name,
    picked_case,
    remember_ref,
)
from storage import cases, members, reports
from storage.db import Connection

commands = Commands()

DAY = 86400.0
URGENT_MAX_AGE = 3 * DAY


@commands.command(
    "urgent",
    roles=FAMILY,
    summary=N_("emergency: reaches every coordinator at once: /urgent TEXT"),
    order=21,
)
def urgent(ctx: Context, args: str) -> None:
    require_private(ctx)
    mine = require_cases(ctx)
    case, text = split_slug(mine, args)
    if case is None and len(mine) == 1:
        case = mine[0]
    text = sanitize_free_text(text, MAX_TEXT)
    if case is not None and text:
        _urgent(ctx, case, text, ctx.incoming.attachments, [])
        return
    fc = ctx.start_flow(
        URGENT,
        {"case_id": case.id if case else None, "text": text or None, "refs": []},
        step="case" if case is None else "text",
    )
    remember_ref(fc)
    fc.save()


def _urgent_case(fc: FlowContext, value: str) -> None:
    case = picked_case(fc, value)
    if case is None:
        fc.again(fc.ctx._("Please choose one of the cases below, or /cancel."))
        return
    fc.data["case_id"] = case.id
    if not fc.data.get("text"):
        fc.goto("text")
        return
    fc.end()
    _urgent(fc.ctx, case, fc.data["text"], (), fc.data.get("refs", []))


def _urgent_text(fc: FlowContext, value: str) -> None:
    ctx = fc.ctx
    text = sanitize_free_text(value, MAX_TEXT)
    if not text:
        fc.again(ctx._("Please type what happened."))
        return
    case = my_case(ctx, fc.data.get("case_id"))
    if case is None:
        raise fc.fail(ctx._("No case by that name was found, or you may not see it."))
    fc.end()
    _urgent(ctx, case, text, ctx.incoming.attachments, fc.data.get("refs", []))


URGENT = Flow(
    "urgent",
    (
        Step(
            "case",
            ask=lambda fc: fc.ctx._("Which case is this emergency about?"),
            answer=_urgent_case,
            choices=case_choices,
        ),
        Step(
            "text",
            ask=lambda fc: fc.ctx._(
                "What happened to {name}? Type it in one message: it goes to every "
                "coordinator of the case at once.",
                name=case_name(fc),
            ),
            answer=_urgent_text,
            files=True,
        ),
    ),
    secret=True,
    on_message=remember_ref,
    lost=LOST,
    ttl=DRAFT_TTL,
    back=False,
)


def _urgent(
    ctx: Context,
    case: cases.Case,
    text: str,
    atts: tuple[Attachment, ...],
    refs: list[list[str]],
) -> None:
    member = ctx.require_member()
    stored = archive.store_report(
        ctx, case, source="urgent", answers={"text": text}, attachments=atts, refs=refs,
        urgent=True, live=False,
    )  # fmt: skip
    if stored is None:  # no sealing key: deliver, do not archive
        cases.report_arrived(ctx.conn, case.id, ctx.now)
        archive.delete_carriers(ctx, refs)
    aid = reports.create_alert(
        ctx.conn, case.id, stored.report_id if stored else None, member.id, ctx.now
    )
    n_files = stored.attachments if stored else 0

    def render(_: Translator) -> str:
        lines = [_("URGENT — {name} (alert #{id})", name=case.name, id=aid), "", text]
        if n_files:
            lines.append(_("Photos or documents: {n}, sealed in the archive.", n=n_files))
        lines += [
            "",
            _(
                "Send /ack {id} when you take this on: the relative and the other coordinators "
                "are told, and the alarm stops repeating.",
                id=aid,
            ),
        ]
        return "\n".join(lines)

    targets = cases.coordinators_of(ctx.conn, case.id)
    for cid in targets:
        ctx.notify(
            cid,
            render,
            priority=Priority.EMERGENCY,
            idem_key=f"urgent:{aid}:0:to:{cid}",
            choices=_ack_choice(aid),
        )
    ctx.audit("urgent.raised", f"alert:{aid}")
    if not targets:
        ctx.reply(
            ctx._(
                "Your message was stored, but no coordinator is registered to receive it yet. "
                "Please contact the people you know directly."
            )
        )
        return
    lines = [
        ctx._(
            "Your emergency message about {name} went to every coordinator of the case. You "
            "will hear here when one of them has seen it.",
            name=case.name,
        )
    ]
    if stored is None:
        lines.append(
            ctx._("It could not be archived (the network has no sealing key), but it was sent.")
        )
    ctx.reply("\n".join(lines))


def _ack_choice(aid: int) -> Callable[[Translator], tuple[Choice, ...]]:
    def choices(_: Translator) -> tuple[Choice, ...]:
        return (Choice(_("I'm on it"), f"/ack {aid}"),)

    return choices


@commands.command(
    "ack", roles=COORDINATORS, summary=N_("acknowledge an urgent alert: /ack ID"), order=44
)
def ack(ctx: Context, args: str) -> None:
    member = ctx.require_member()
    raw = args.strip().lstrip("#")
    alert_id = parse_id(raw)
    alert = reports.get_alert(ctx.conn, alert_id) if alert_id is not None else None
    case = cases.get(ctx.conn, alert.case_id) if alert else None
    if alert is None or case is None or not _may_handle(ctx, case):
        raise UserError(ctx._(ALERT_NOT_FOUND))
    if alert.acked_at is not None or not reports.ack_alert(ctx.conn, alert.id, member.id, ctx.now):
        ctx.reply(ctx._("Alert #{id} was already acknowledged.", id=alert.id))
        return
    reports.cancel_pending(ctx.conn, f"urgent:{alert.id}:r", ctx.now)
    for cid in cases.coordinators_of(ctx.conn, case.id):
        if cid == member.id:
            continue
        ctx.notify(
            cid,
            lambda _: _(
                "Alert #{id} about {name} was acknowledged by another coordinator.",
                id=alert.id,
                name=case.name,
            ),
            priority=Priority.ALERT,
            idem_key=f"urgent:{alert.id}:acked:to:{cid}",
        )
    if alert.reporter_id is not None:
        ctx.notify(
            alert.reporter_id,
            lambda _: _(
                "A coordinator has seen your emergency message about {name} and is on it.",
                name=case.name,
            ),
            priority=Priority.EMERGENCY,
            idem_key=f"urgent:{alert.id}:seen",
        )
        reports.forget_reporter(ctx.conn, alert.id)
    ctx.audit("urgent.acked", f"alert:{alert.id}")
    ctx.reply(
        ctx._(
            "Acknowledged alert #{id}. The relative and the other coordinators are told.",
            id=alert.id,
        )
    )


def _may_handle(ctx: Context, case: cases.Case) -> bool:
    member = ctx.member
    if member is None:
        return False
    return member.id in cases.coordinators_of(ctx.conn, case.id) or cases.may_coordinate(
        ctx.conn, case, member.id, member.role
    )


# --- re-sends until acknowledged -------------------------------------------------------------


def resend_interval(sends: int) -> float:
    """Seconds to wait after the `sends`-th delivery of an unacknowledged alert."""
    if sends < 4:
        return 10 * 60
    if sends < 6:
        return 30 * 60
    return 60 * 60


def resend_unacked(conn: Connection, now: float) -> int:
    """Re-send every unacknowledged urgent alert that is due; returns outbox rows written.
    Re-sends carry no report text (the server keeps none): they point to the first message."""
    written = 0
    for alert in reports.open_alerts(conn):
        case = cases.get(conn, alert.case_id)
        if case is None:
            continue
        coordinators = cases.coordinators_of(conn, case.id)
        if now - alert.created_at >= URGENT_MAX_AGE:
            reports.expire_alert(conn, alert.id, now)
            targets = sorted(set(coordinators) | set(members.with_role(conn, ("admin",))))
            for mid in targets:
                written += notify_member(
                    conn,
                    mid,
                    _expired_text(alert.id, case.name),
                    now=now,
                    priority=Priority.ALERT,
                    idem_key=f"urgent:{alert.id}:expired:to:{mid}",
                )
            continue
        if now < alert.last_sent_at + resend_interval(alert.sends):
            continue
        for cid in coordinators:
            written += notify_member(
                conn,
                cid,
                _reminder_text(alert.id, case.name, alert.created_at, now),
                now=now,
                priority=Priority.EMERGENCY,
                idem_key=f"urgent:{alert.id}:r{alert.sends}:to:{cid}",
                choices=_ack_choice(alert.id),
            )
        reports.mark_alert_sent(conn, alert.id, now)
    return written


def _reminder_text(aid: int, name: str, created: float, now: float) -> Callable[[Translator], str]:
    minutes = max(1, int((now - created) // 60))

    def render(_: Translator) -> str:
        return _(
            "Still unacknowledged: URGENT alert #{id} about {name}, sent {minutes} minutes ago. "
            "The first message has the details. Send /ack {id} when you take it on.",
            id=aid,
            name=name,
            minutes=minutes,
        )

    return render


def _expired_text(aid: int, name: str) -> Callable[[Translator], str]:
    def render(_: Translator) -> str:
        return _(
            "URGENT alert #{id} about {name} was never acknowledged in three days; it is no "
            "longer repeated. Please check on the family now.",
            id=aid,
            name=name,
        )

    return render
