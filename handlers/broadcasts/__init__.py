"""Broadcasts: /broadcast SEGMENT TEXT, /confirm, /cancel ID; and the streaming fan-out engine.

A broadcast is a draft until its author confirms the preview (which shows how many people it
reaches). Confirming starts a fan-out: a `broadcasts` row with a cursor over the segment's
members in id order. The first chunk of outbox rows is written at once; the rest is written
by a dispatcher producer (`refill`) just ahead of sending, never more than AHEAD due rows per
transport, so 100,000 recipients are never in memory and a cancel stops what is left cheaply.
Each chunk and its cursor move commit together, and outbox idempotency keys make a repeated
chunk harmless: after a crash the fan-out resumes where its last commit left it.

Progress: one message to the author, edited in place where the transport can edit (Telegram),
at most every PROGRESS_EVERY seconds; elsewhere (Signal) a new line every PROGRESS_LINE_EVERY
seconds. A final summary is sent as a new message when nothing is left to send.

Quiet hours apply to every fan-out message below emergency priority: a member in their quiet
hours (in their own time zone) gets the message when the quiet hours end. Case alerts
(handlers/subscriptions.py) use the same engine with their own rendering."""

from __future__ import annotations

from bot.capability import Capability
from bot.jobs import JobContext, Producer
from handlers.broadcasts import translations  # noqa: F401  (registers /translate)
from handlers.broadcasts.alerts import (
    DIGEST_ITEM_CHARS,
    FLAGS,
    KINDS,
    alert_text,
    categories,
    category_label,
    kind_label,
    mode_label,
)
from handlers.broadcasts.commands import (
    approved_broadcast,
    cancel_fanout,
    cancel_latest,
    commands,
    drop_broadcast,
)
from handlers.broadcasts.engine import CHUNK, materialise, refill
from handlers.broadcasts.progress import (
    DRAFT_TTL,
    PROGRESS_EVERY,
    PROGRESS_LINE_EVERY,
    editing_transports,
    progress,
)
from handlers.broadcasts.timing import (
    network_defaults,
    next_local_hour,
    parse_quiet,
    quiet_until,
    remember_defaults,
)

__all__ = [
    "CHUNK",
    "DIGEST_ITEM_CHARS",
    "DRAFT_TTL",
    "FLAGS",
    "KINDS",
    "PROGRESS_EVERY",
    "PROGRESS_LINE_EVERY",
    "alert_text",
    "approved_broadcast",
    "cancel_fanout",
    "cancel_latest",
    "capability",
    "categories",
    "category_label",
    "drop_broadcast",
    "kind_label",
    "materialise",
    "mode_label",
    "network_defaults",
    "next_local_hour",
    "parse_quiet",
    "progress",
    "quiet_until",
    "refill",
    "remember_defaults",
]


def _fanout(job: JobContext, transport: str) -> bool:
    return refill(job.conn, job.now, transport)


def _progress(job: JobContext, transport: str) -> bool:
    return progress(job.conn, job.now, transport, editing_transports(job))


PRODUCERS = (
    Producer("fanout", _fanout, every=0.25, eager=True),
    Producer("progress", _progress, every=1.0),
)


def capability() -> Capability:
    return Capability("broadcasts", commands=tuple(commands), producers=PRODUCERS)
