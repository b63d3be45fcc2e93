"""Case updates: /update, the review path's publish, and the alert fan-out to followers."""

from __future__ import annotations

import re
from typing import Any

from bot.context import Context
from bot.flows import Flow, FlowContext, Step
from bot.messages import Priority
from handlers import broadcasts as engine
from handlers.broadcasts import (
    FLAGS,
    KINDS,
    kind_label,
)
from handlers.common import clean_text
from handlers.subscriptions.digest import log
from storage import audience, broadcasts, cases
from storage.db import Connection

MAX_UPDATE_CHARS = 3500


_HEAD = re.compile(r"^([A-Za-z]+(?:\+[A-Za-z]+)*):\s*(.*)$", re.S)


def parse_update(text: str) -> tuple[str, list[str], str]:
    """`[KIND[+FLAG...]:] TEXT` -> (kind, flags, text). A head that is not made of known
    kinds and flags is part of the text ("Note: ...")."""
    m = _HEAD.match(text.strip())
    if m:
        words = [w.lower() for w in m.group(1).split("+")]
        kinds = [w for w in words if w in KINDS]
        flags = [w for w in words if w in FLAGS and w not in kinds]
        if len(kinds) <= 1 and len(kinds) + len(flags) == len(words):
            return (kinds[0] if kinds else "general"), sorted(set(flags)), m.group(2).strip()
    return "general", [], text.strip()


def _ask_update_text(fc: FlowContext) -> str:
    case = cases.get(fc.ctx.conn, int(fc.data["case"]))
    return fc.ctx._(
        "Send the text of the {kind} update for {name}, or /cancel.",
        kind=kind_label(fc.ctx._, fc.data["kind"]),
        name=case.name if case else "",
    )


def _update_text(fc: FlowContext, text: str) -> None:
    ctx = fc.ctx
    member = ctx.require_member()
    case = cases.get(ctx.conn, int(fc.data["case"]))
    if case is None or not cases.may_coordinate(ctx.conn, case, member.id, member.role):
        raise fc.fail(ctx._("No case by that name was found, or you may not see it."))
    fc.end()
    post(ctx, case, fc.data["kind"], list(fc.data.get("flags", [])), text.strip())


UPDATE_TEXT = Flow("update", (Step("text", ask=_ask_update_text, answer=_update_text),))


def post(ctx: Context, case: cases.Case, kind: str, flags: list[str], text: str) -> None:
    # Others read it: no direction overrides, zero-width or control characters (NFC, trimmed).
    text = clean_text(ctx, text, label=ctx._("update"), most=MAX_UPDATE_CHARS, multiline=True)
    member = ctx.require_member()
    update_id = store_update(ctx.conn, case.id, kind, text, member.id, ctx.now)
    bid, people = publish_alert(
        ctx.conn,
        case=case,
        update_id=update_id,
        kind=kind,
        flags=flags,
        text=text,
        author_id=member.id,
        now=ctx.now,
    )
    ctx.audit("case.update", f"case:{case.id}")
    ctx.reply(
        # "Followers to be alerted: N" reads right for any N in every language, where
        # "N followers" would need plural forms the sentence around it cannot take.
        ctx._(
            "Update posted for {name} ({kind}). Followers to be alerted: {n} "
            "(alert #{id}; /cancel {id} stops it).",
            name=case.name,
            kind=kind_label(ctx._, kind),
            n=people,
            id=bid,
        )
    )


def store_update(
    conn: Connection, case_id: int, kind: str, text: str, author_id: int | None, now: float
) -> int:
    """The public case update row."""
    return cases.add_update(conn, case_id, text, now=now, kind=kind, author_id=author_id)


def load_update(conn: Connection, update_id: int) -> tuple[int, str, list[str], str] | None:
    """(case id, kind, flags, text) of a stored update."""
    u = cases.get_update(conn, update_id)
    return (u.case_id, u.kind, list(u.flags), u.text) if u is not None else None


def publish_alert(
    conn: Connection,
    *,
    case: cases.Case,
    update_id: int | None,
    kind: str,
    flags: list[str],
    text: str,
    author_id: int | None,
    now: float,
    notice: dict[str, Any] | None = None,
) -> tuple[int, int]:
    """Start the alert fan-out of a case update: (alert id, people it will reach). Publishing
    the same update twice starts nothing new."""
    if update_id is not None:
        row = conn.execute("SELECT id FROM broadcasts WHERE update_id = ?", (update_id,)).fetchone()
        if row is not None:
            return row[0], 0
    priority = Priority.EMERGENCY if "urgent" in flags else Priority.ALERT
    # Public news reaches open supporters who follow the case; relatives' news does not.
    stored = cases.get_update(conn, update_id) if update_id is not None else None
    public = stored is None or not stored.vetted_only
    people, _ = audience.count(conn, f"subs:{case.id}", reach_open=public)
    bid = broadcasts.create(
        conn,
        kind="alert",
        segment=f"subs:{case.id}",
        body={
            "text": text,
            "kind": kind if kind in KINDS else "general",
            "flags": sorted(set(flags)),
            "case": case.name,
            "slug": case.slug,
            # A text the bot writes (a transfer): rendered in each recipient's language.
            **({"notice": notice} if notice else {}),
        },
        priority=priority,
        now=now,
        state=broadcasts.RUNNING,
        author_id=author_id,
        case_id=case.id,
        update_id=update_id,
        expected=people,
        public=public,
    )
    assert bid is not None
    b = broadcasts.get(conn, bid)
    assert b is not None
    engine.materialise(conn, b, now)  # the first chunk now; the dispatcher streams the rest
    return bid, people


def on_case_update_published(ctx: Context, case_id: int, update_id: int) -> None:
    """Hook for the reviewed-report path (/publish): alert the case's followers."""
    case = cases.get(ctx.conn, case_id)
    loaded = load_update(ctx.conn, update_id)
    if case is None or loaded is None:
        log.warning("published update not found; no alert")
        return
    _, kind, flags, text = loaded
    engine.remember_defaults(ctx)
    publish_alert(
        ctx.conn,
        case=case,
        update_id=update_id,
        kind=kind,
        flags=flags,
        text=text,
        author_id=ctx.member.id if ctx.member else None,
        now=ctx.now,
    )
