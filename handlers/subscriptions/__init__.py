"""Following cases and hearing about them: /subscribe, /unsubscribe, /subscriptions, /update.

Followers choose, per case (or for all cases), instant alerts or one daily digest; they may
opt out of distressing categories (health, torture), and updates in those categories carry a
content note for everyone else. Quiet hours (/quiet, in the member's own time zone) hold alerts
until they end, except emergencies (an update marked `urgent`), which also skip the digest.

A published case update becomes an alert fan-out (handlers/broadcasts/) to the case's
followers, idempotent per (update, member, transport). `/update` publishes directly; the
reviewed-report path (/publish) calls `on_case_update_published(ctx, case_id, update_id)`.
The daily digest is a dispatcher producer that gathers, per member at their digest hour, the
alerts of their digest-mode cases since their last digest into one message."""

from __future__ import annotations

from bot.capability import Capability
from bot.jobs import JobContext, Producer
from handlers.subscriptions.commands import commands
from handlers.subscriptions.digest import digest_tick
from handlers.subscriptions.updates import UPDATE_TEXT, on_case_update_published

__all__ = ["capability", "digest_tick", "on_case_update_published"]


def _digest(job: JobContext, transport: str) -> bool:
    return digest_tick(job.conn, job.now, transport)


PRODUCERS = (Producer("digest", _digest, every=5.0),)


def capability() -> Capability:
    return Capability(
        "subscriptions", commands=tuple(commands), flows=(UPDATE_TEXT,), producers=PRODUCERS
    )
