"""A fan-out's progress for its author: edited in place where possible, and the summary."""

from __future__ import annotations

from bot.context import COORDINATORS
from bot.i18n import Translator
from bot.jobs import JobContext
from bot.messages import Priority
from handlers.broadcasts.timing import network_defaults
from storage import broadcasts, members, outbox
from storage.broadcasts import Broadcast
from storage.db import Connection

DRAFT_TTL = 3600.0  # a preview not confirmed within an hour is dropped


PROGRESS_EVERY = 3.0  # edits in place (Telegram allows ~1 message per second per chat)


PROGRESS_LINE_EVERY = 60.0  # new progress lines where messages cannot be edited


STALL = 300.0  # seconds without progress after which rows "in flight" are no longer awaited


def counts(conn: Connection, b: Broadcast, now: float) -> dict[str, int]:
    """Progress from the fan-out's counters, plus its pending rows (an index range)."""
    done = b.sent_count + b.failed_count + b.maybe_count + b.cancelled_count
    pending, held = outbox.fanout_pending(conn, b.id, now)
    sending = max(0, b.materialised - done - pending)
    left = pending + sending
    if not b.exhausted and b.state == broadcasts.RUNNING:
        left = max(left, b.expected - done)
    return {
        "sent": b.sent_count,
        "failed": b.failed_count + b.maybe_count,
        "maybe": b.maybe_count,
        "cancelled": b.cancelled_count,
        "left": left,
        "held": held,
        "pending": pending,
        "sending": sending,
    }


def _is_done(b: Broadcast, c: dict[str, int], now: float) -> bool:
    """Nothing left to write or send. Rows in flight count until they are answered, but a
    count that has not moved for STALL seconds (rows changed outside the outbox functions,
    e.g. cancelled by a revocation) does not keep a fan-out open for ever."""
    if not (b.exhausted or b.state == broadcasts.CANCELLED) or c["pending"]:
        return False
    return c["sending"] == 0 or now - b.progress_at > STALL


def progress_text(tr: Translator, b: Broadcast, c: dict[str, int]) -> str:
    text = tr(
        "Broadcast #{id}: {sent} sent, {failed} not delivered, {left} to go.",
        id=b.id,
        sent=c["sent"],
        failed=c["failed"],
        left=c["left"],
    )
    if c["held"]:
        text += " " + tr("{held} wait for their quiet hours to end.", held=c["held"])
    return text


def _summary_text(tr: Translator, b: Broadcast, c: dict[str, int]) -> str:
    if b.state == broadcasts.CANCELLED:
        text = tr(
            "Broadcast #{id} was cancelled: {sent} sent before it stopped, {cancelled} not sent.",
            id=b.id,
            sent=c["sent"],
            cancelled=c["cancelled"],
        )
    else:
        text = tr(
            "Broadcast #{id} finished: {sent} sent, {failed} not delivered.",
            id=b.id,
            sent=c["sent"],
            failed=c["failed"],
        )
    if c["maybe"]:
        text += " " + tr(
            "For {maybe} of them the platform did not confirm delivery.", maybe=c["maybe"]
        )
    return text


def progress(
    conn: Connection, now: float, transport: str, editable: frozenset[str] = frozenset()
) -> bool:
    """Dispatcher producer: progress edits/lines and final summaries; drops stale drafts.
    `editable`: the transports that edit a sent message in place."""
    broadcasts.expire_drafts(conn, now - DRAFT_TTL)
    wrote = False
    for b in broadcasts.unfinished(conn):
        c = counts(conn, b, now)
        done = _is_done(b, c, now)
        author = members.get(conn, b.author_id) if b.author_id else None
        if (
            b.progress_transport is None
            or b.progress_chat is None
            or author is None
            or author.role not in COORDINATORS
        ):
            # Alerts have no progress; nor does an author who was revoked meanwhile (a hijacked
            # account must not learn from a summary that its broadcast was stopped).
            if done:
                broadcasts.finish(conn, b.id, now)
            continue
        tr = Translator(author.language or network_defaults(conn)[1])
        editable = b.progress_transport in editable
        text = progress_text(tr, b, c)
        if done:
            if editable and b.progress_id is not None:
                _edit_progress(conn, b, text, now)
            outbox.enqueue(
                conn,
                transport=b.progress_transport,
                chat=b.progress_chat,
                member_id=b.author_id,
                body={"text": _summary_text(tr, b, c)},
                priority=Priority.REPLY,
                now=now,
                idem_key=f"b{b.id}:summary",
            )
            broadcasts.finish(conn, b.id, now)
            wrote = True
            continue
        if text == b.progress_text:
            continue
        if editable and b.progress_id is not None:
            if now - b.progress_at >= PROGRESS_EVERY:
                _edit_progress(conn, b, text, now)
                wrote = True
        elif now - b.progress_at >= PROGRESS_LINE_EVERY:
            outbox.enqueue(
                conn,
                transport=b.progress_transport,
                chat=b.progress_chat,
                member_id=b.author_id,
                body={"text": text},
                priority=Priority.REPLY,
                now=now,
            )
            broadcasts.set_progress(conn, b.id, text=text, at=now)
            wrote = True
    return wrote


def _edit_progress(conn: Connection, b: Broadcast, text: str, now: float) -> None:
    """Edit the progress message in place; an edit not yet claimed is rewritten, not stacked."""
    assert b.progress_transport is not None and b.progress_chat is not None
    body: outbox.OutboxBody = {"kind": "edit", "target": b.progress_id, "text": text}
    if b.progress_edit_id is not None and outbox.replace_pending_body(
        conn, b.progress_edit_id, body
    ):
        broadcasts.set_progress(conn, b.id, text=text, at=now)
        return
    edit_id = outbox.enqueue(
        conn,
        transport=b.progress_transport,
        chat=b.progress_chat,
        member_id=b.author_id,
        body=body,
        priority=Priority.REPLY,
        now=now,
    )
    broadcasts.set_progress(conn, b.id, text=text, at=now, edit_id=edit_id)


def editing_transports(job: JobContext) -> frozenset[str]:
    return frozenset(t for t, caps in job.services.transports.items() if caps.edits)
