"""Transfers ("etap"): a case in transit, the daily reminder, the escalation, the arrival.

Entered from /editcase (handlers/cases.py calls start_transit and arrived); no commands of
its own. Subscribers are alerted through the ordinary case-update path, so digests, opt-outs
and quiet hours apply as to any update; the text is rendered in each recipient's language
(handlers/transfers/notices.py). A transit longer than `transfers.escalate_days` (default 14)
raises an urgent alert with no reporter: it is re-sent until /ack like any other.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from bot.capability import Capability
from bot.context import Context, UserError
from bot.i18n import Translator
from bot.jobs import JobContext, PeriodicJob
from bot.messages import Choice, Priority
from bot.notify import notify_member
from handlers.common import zone
from handlers.subscriptions.updates import publish_alert, store_update
from handlers.transfers.notices import render_notice
from storage import audit, cases, reports, settings, transfers
from storage.db import Connection
from storage.transfers import Transit

DAY = 86400.0
ESCALATE_KEY = "transfers.escalate_days"
DEFAULT_ESCALATE_DAYS = 14
TZ_KEY = "network.default_timezone"
LANG_KEY = "network.default_language"


def _tz(conn: Connection) -> str:
    return settings.get(conn, TZ_KEY) or "UTC"


def days_in_transit(conn: Connection, transit: Transit, now: float) -> int:
    """Whole days since the local date the transit began (0 on that day)."""
    today = datetime.fromtimestamp(now, zone(_tz(conn))).date()
    return max(0, (today - date.fromisoformat(transit.started_on)).days)


def escalate_days(conn: Connection) -> int:
    raw = settings.get(conn, ESCALATE_KEY)
    return int(raw) if raw and raw.isdigit() and 0 < int(raw) <= 365 else DEFAULT_ESCALATE_DAYS


def _parse_start(ctx: Context, value: str) -> str:
    """Today, or a past local date given as YYYY-MM-DD (at most a year back)."""
    today = datetime.fromtimestamp(ctx.now, zone(_tz(ctx.conn))).date()
    if not value:
        return today.isoformat()
    bad = ctx._("Give the date the transfer began like 2026-11-30 (today or earlier).")
    try:
        day = date.fromisoformat(value.strip())
    except ValueError:
        raise UserError(bad) from None
    if day > today or (today - day).days > 366:
        raise UserError(bad)
    return day.isoformat()


def _alert(ctx: Context, case: cases.Case, notice: dict[str, Any]) -> int:
    """Tell the case's followers; stored as a 'transfer' update, text per language."""
    member = ctx.require_member()
    plain = render_notice(Translator(settings.get(ctx.conn, LANG_KEY) or "en"), notice)
    update_id = store_update(ctx.conn, case.id, "transfer", plain, member.id, ctx.now)
    _bid, people = publish_alert(
        ctx.conn, case=case, update_id=update_id, kind="transfer", flags=[], text=plain,
        author_id=member.id, now=ctx.now, notice=notice,
    )  # fmt: skip
    return people


def start_transit(ctx: Context, case: cases.Case, value: str) -> str:
    """/editcase SLUG status transit [DATE]. Returns how to show the new status."""
    started_on = _parse_start(ctx, value)
    current = transfers.open_transit(ctx.conn, case.id)
    if current is not None:
        if value:
            transfers.set_start(ctx.conn, current.id, started_on)
        return ctx._("in transit since {date}", date=started_on if value else current.started_on)
    prev = case.status if case.status != "transferred" else "detained"
    transfers.start(ctx.conn, case.id, started_on, ctx.now, prev, case.facility)
    cases.set_field(ctx.conn, case.id, "status", "transferred", ctx.now)
    cases.clear_facility(ctx.conn, case.id, ctx.now)
    people = _alert(ctx, case, {"what": "transit", "name": case.name, "since": started_on})
    ctx.audit("case.transit", f"case:{case.id}")
    return ctx._.plural(
        "in transit since {date}; {n} follower is told to hold letters and parcels",
        "in transit since {date}; {n} followers are told to hold letters and parcels",
        people,
        date=started_on,
    )


def arrived(ctx: Context, case: cases.Case, facility: str) -> bool:
    """A new facility was set: end an open transit, restore the status, alert the followers
    with the new address. False when the case was not in transit."""
    current = transfers.open_transit(ctx.conn, case.id)
    if current is None:
        return False
    transfers.end(ctx.conn, current.id, ctx.now, facility)
    cases.set_field(ctx.conn, case.id, "status", current.prev_status, ctx.now)
    fresh = cases.get(ctx.conn, case.id) or case
    _alert(
        ctx,
        fresh,
        {
            "what": "arrived",
            "name": case.name,
            "facility": facility,
            "address": fresh.letters_address or "",
        },
    )
    ctx.audit("case.arrived", f"case:{case.id}")
    return True


def card_lines(ctx: Context, case: cases.Case) -> list[str]:
    """The case card's lines about a transfer under way, or the last one."""
    current = transfers.open_transit(ctx.conn, case.id)
    if current is not None:
        n = days_in_transit(ctx.conn, current, ctx.now)
        return [
            ctx._.plural(
                "In transit (etap) since {date}: {n} day. Hold letters and parcels until the new "
                "address is known.",
                "In transit (etap) since {date}: {n} days. Hold letters and parcels until the new "
                "address is known.",
                n,
                date=current.started_on,
            )
        ]
    past = transfers.history(ctx.conn, case.id, 1)
    if not past or past[0].ended_at is None:
        return []
    t = past[0]
    ended = datetime.fromtimestamp(t.ended_at, zone(_tz(ctx.conn))).date().isoformat()
    return [
        ctx._(
            "Last transfer: {start} – {end}, to {place}.",
            start=t.started_on,
            end=ended,
            place=t.to_facility or "?",
        )
    ]


# --- the daily reminder and the escalation ---------------------------------------------------


def transit_tick(conn: Connection, now: float) -> int:
    """Remind coordinators once a day per open transit; escalate once past the limit."""
    written = 0
    limit = escalate_days(conn)
    for t in transfers.all_open(conn):
        case = cases.get(conn, t.case_id)
        if case is None:
            continue
        n = days_in_transit(conn, t, now)
        coordinators = cases.coordinators_of(conn, case.id)
        if n >= limit and t.alert_id is None:
            aid = reports.create_alert(conn, case.id, None, now)
            transfers.set_alert(conn, t.id, aid)
            for cid in coordinators:
                written += notify_member(
                    conn, cid, _escalation_text(aid, case.name, case.slug, n), now=now,
                    priority=Priority.EMERGENCY, idem_key=f"urgent:{aid}:0:to:{cid}",
                    choices=_ack(aid),
                )  # fmt: skip
            audit.record(conn, None, "transit.escalated", f"case:{case.id}", now)
            continue
        if t.reminded_at is not None and now - t.reminded_at < DAY:
            continue
        for cid in coordinators:
            written += notify_member(
                conn, cid, _reminder_text(case.name, case.slug, n), now=now,
                priority=Priority.ALERT, idem_key=f"transit:{t.id}:d{n}:to:{cid}",
            )  # fmt: skip
        transfers.mark_reminded(conn, t.id, now)
    return written


def _ack(aid: int) -> Any:
    def choices(_: Translator) -> tuple[Choice, ...]:
        return (Choice(_("I'm on it"), f"/ack {aid}"),)

    return choices


def _reminder_text(name: str, slug: str, n: int) -> Any:
    def render(_: Translator) -> str:
        return _.plural(
            "{name} has been in transit for {n} day. When the new facility is known: "
            "/editcase {slug} facility NAME",
            "{name} has been in transit for {n} days. When the new facility is known: "
            "/editcase {slug} facility NAME",
            n,
            name=name,
            slug=slug,
        )

    return render


def _escalation_text(aid: int, name: str, slug: str, n: int) -> Any:
    def render(_: Translator) -> str:
        return _(
            "URGENT — {name} (alert #{id}): in transit for {n} days, still no new facility. "
            "Please find out where they are held. Send /ack {id} when you take it on; set the "
            "place with /editcase {slug} facility NAME.",
            name=name,
            id=aid,
            n=n,
            slug=slug,
        )

    return render


def _job(job: JobContext) -> int:
    return transit_tick(job.conn, job.now)


def capability() -> Capability:
    return Capability("transfers", jobs=(PeriodicJob("transfers-daily", _job, 15 * 60),))
