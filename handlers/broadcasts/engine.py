"""The streaming fan-out: a cursor over an audience, outbox rows written just ahead of sending."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bot.i18n import Translator
from bot.messages import Priority
from handlers.broadcasts.alerts import render_alert
from handlers.broadcasts.timing import network_defaults, quiet_until
from storage import audience, broadcasts, outbox
from storage.audience import Recipient
from storage.broadcasts import Broadcast
from storage.db import Connection

CHUNK = 500  # members read per materialisation step


AHEAD = 2000  # due outbox rows per transport kept ready ahead of the dispatcher


MAX_CHUNKS_PER_CALL = 1  # one chunk per writer job: claims and marks never wait long


# Per fan-out kind: recipient -> outbox body, or None to leave that recipient out.
Render = Callable[[Connection, Broadcast, Recipient, Translator], dict[str, Any] | None]


def _render_broadcast(
    conn: Connection, b: Broadcast, r: Recipient, tr: Translator
) -> dict[str, Any] | None:
    # The author's text for the recipient's language (/translate), else the original.
    return {"text": b.body.get("translations", {}).get(tr.language, b.body["text"])}


RENDERERS: dict[str, Render] = {"broadcast": _render_broadcast, "alert": render_alert}


def _idem_prefix(b: Broadcast) -> str:
    return f"u{b.update_id}" if b.update_id is not None else f"b{b.id}"


def materialise(conn: Connection, b: Broadcast, now: float, limit: int = CHUNK) -> int:
    """Write the outbox rows of the next chunk of recipients and move the cursor."""
    default_tz, default_lang = network_defaults(conn)
    rows, cursor, exhausted = audience.chunk(
        conn, b.segment, b.cursor, limit, default_lang, reach_open=b.public
    )
    render = RENDERERS[b.kind]
    bodies: dict[str, str | None] = {}  # rendering depends on language (and opt-outs)
    prefix = _idem_prefix(b)
    out = []
    for r in rows:
        if r.transport is None or r.chat is None:
            continue
        language = r.language or default_lang
        cache_key = f"{language}|{r.mode}|{','.join(sorted(r.optouts))}"
        if cache_key not in bodies:
            body = render(conn, b, r, Translator(language))
            bodies[cache_key] = outbox.dump_body(body) if body is not None else None
        body_json = bodies[cache_key]
        if body_json is None:
            continue
        not_before = 0.0
        if r.held:
            not_before = outbox.HELD  # quarantined: released by /trust
        elif b.priority != Priority.EMERGENCY and r.quiet_hours:
            not_before = quiet_until(r.quiet_hours, r.timezone or default_tz, now)
        out.append(
            (
                r.transport,
                r.chat,
                r.member_id,
                b.priority,
                body_json,
                f"{prefix}:{r.member_id}:{r.transport}",
                b.id,
                not_before,
                now,
            )
        )
    written = outbox.enqueue_many(conn, out, b.id) if out else 0
    broadcasts.advance(conn, b.id, cursor, exhausted)
    return written


def refill(conn: Connection, now: float, transport: str) -> bool:
    """Dispatcher producer: materialise the next chunks of running fan-outs while this
    transport has fewer than AHEAD due rows at their priority (called when its queue runs
    dry, and periodically)."""
    wrote = False
    chunks = 0
    for b in broadcasts.materialising(conn):
        while not b.exhausted and chunks < MAX_CHUNKS_PER_CALL:
            if outbox.due_backlog(conn, transport, b.priority, now, AHEAD) >= AHEAD:
                break
            wrote |= materialise(conn, b, now) > 0
            chunks += 1
            fresh = broadcasts.get(conn, b.id)
            assert fresh is not None
            b = fresh
        if chunks >= MAX_CHUNKS_PER_CALL:
            return True  # more to do: ask to be called again at once
    return wrote
