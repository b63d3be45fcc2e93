"""Family well-being reports, the sealed archive, emergencies and check-ins.

Modules: `archive` (sealing key, storing, live copy), `wizard` (the report flows), `commands`
(/report, /reports, /publish), `offer` (plain news offered as a report),
`urgent` (/urgent, /ack, re-sends), `checkins` (silent cases,
the minute job), `render` (labels and texts), `family` (a relative's cases).
See docs/cases-and-reports.md for the decisions.
"""

from __future__ import annotations

from bot.capability import Capability
from bot.jobs import JobContext, PeriodicJob
from handlers.reports import commands, offer, urgent, wizard
from handlers.reports.checkins import checkin_due, minute_job, upcoming
from handlers.reports.urgent import resend_unacked

__all__ = ["capability", "checkin_due", "minute_job", "resend_unacked"]


def capability() -> Capability:
    return Capability(
        "reports",
        commands=(*commands.commands, *urgent.commands),
        flows=(wizard.WIZARD, wizard.LINE, wizard.MORE, urgent.URGENT, offer.OFFER),
        free_text=(offer.offer_free_text,),
        jobs=(
            PeriodicJob("reports-urgent", _every_minute, 60),
            PeriodicJob("reports-checkin", _checkins, 15 * 60),
        ),
        upcoming=(upcoming,),
    )


def _every_minute(job: JobContext) -> int:
    return minute_job(job.conn, job.now)


def _checkins(job: JobContext) -> int:
    return checkin_due(job.conn, job.now)
