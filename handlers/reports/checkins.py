"""Not forgotten: cases silent for their check-in interval, and the reports' minute job.

`checkin_due` tells coordinators and gently asks relatives once per silence period (checkin_days
without a report), idempotent by the case's round and outbox keys.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from bot.i18n import Translator
from bot.messages import Choice, Priority
from bot.notify import notify_member
from handlers.reports.urgent import resend_interval, resend_unacked
from storage import cases, reports
from storage.db import Connection

DAY = 86400.0


def checkin_due(conn: Connection, now: float) -> int:
    """Cases silent for their check-in interval: tell the coordinators, gently ask the
    relatives, once per silence period. Returns outbox rows written."""
    written = 0
    for case in cases.checkin_cases(conn):
        anchor = case.last_report_at or case.created_at
        period = case.checkin_days * DAY
        round_ = int((now - anchor) // period)
        if round_ < 1 or round_ <= case.checkin_round:
            continue
        days = int((now - anchor) // DAY)
        key = f"checkin:{case.id}:{int(anchor)}:{round_}"
        family = cases.family_of(conn, case.id)
        for cid in cases.coordinators_of(conn, case.id):
            written += notify_member(
                conn, cid, _checkin_coordinator(case, days, bool(family)), now=now,
                priority=Priority.ALERT, idem_key=f"{key}:c{cid}",
            )  # fmt: skip
        for fid in family:
            written += notify_member(
                conn, fid, _checkin_family(case), now=now, priority=Priority.BULK,
                idem_key=f"{key}:f{fid}", choices=_checkin_choice(case.slug),
            )  # fmt: skip
        cases.set_checkin_round(conn, case.id, round_)
    return written


def _checkin_coordinator(case: cases.Case, days: int, has_family: bool) -> Callable[..., str]:
    def render(_: Translator) -> str:
        text = _(
            "No news about {name} for {days} days (check-in every {n} days). Silence is how "
            "cases go cold: please check on the family and the case. /case {slug}",
            name=case.name,
            days=days,
            n=case.checkin_days,
            slug=case.slug,
        )
        if has_family:
            return text + "\n" + _("The relatives got one gentle reminder.")
        return (
            text
            + "\n"
            + _("No relative is linked to this case: /invite family {slug}", slug=case.slug)
        )

    return render


def _checkin_family(case: cases.Case) -> Callable[[Translator], str]:
    def render(_: Translator) -> str:
        return _(
            "Any news from {name}? If you have visited, called or received a letter, you can "
            "tell us with /report. If there is nothing new, there is no need to answer. We "
            "have not forgotten {name}.",
            name=case.name,
        )

    return render


def _checkin_choice(slug: str) -> Callable[[Translator], tuple[Choice, ...]]:
    def choices(_: Translator) -> tuple[Choice, ...]:
        return (Choice(_("Send news"), f"/report {slug}"),)

    return choices


def minute_job(conn: Connection, now: float) -> int:
    """Every minute: urgent re-sends, and blanking delivered live copies."""
    written = resend_unacked(conn, now)
    reports.scrub_live_copies(conn)
    return written


def upcoming(conn: Connection) -> list[tuple[str, str]]:
    """Next check-ins and urgent re-sends for `vigil status` (ids only)."""
    out = []
    for case in cases.checkin_cases(conn):
        anchor = case.last_report_at or case.created_at
        due = anchor + (case.checkin_round + 1) * case.checkin_days * DAY
        out.append((_utc(due), f"check-in case:{case.id}"))
    for alert in reports.open_alerts(conn):
        due = alert.last_sent_at + resend_interval(alert.sends)
        out.append((_utc(due), f"urgent re-send alert:{alert.id}"))
    return sorted(out)[:5]


def _utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%MZ")
