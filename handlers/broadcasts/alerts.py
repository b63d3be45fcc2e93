"""How a case alert reads: update kinds, content notes for distressing topics, the text."""

from __future__ import annotations

from typing import Any

from bot.i18n import Translator
from bot.messages import Priority
from storage.audience import Recipient
from storage.broadcasts import Broadcast
from storage.db import Connection
from storage.subscriptions import DISTRESSING

KINDS = ("hearing", "verdict", "transfer", "health", "release", "action", "general")


FLAGS = ("torture", "health", "urgent")


DIGEST_ITEM_CHARS = 400


def kind_label(tr: Translator, kind: str) -> str:
    return {
        "hearing": tr("hearing"),
        "verdict": tr("verdict"),
        "transfer": tr("transfer"),
        "health": tr("health"),
        "release": tr("release"),
        "action": tr("call to action"),
        "general": tr("news"),
    }.get(kind, kind)


def category_label(tr: Translator, category: str) -> str:
    return {"health": tr("health"), "torture": tr("torture or ill-treatment")}.get(
        category, category
    )


def mode_label(tr: Translator, mode: str) -> str:
    return tr("daily digest") if mode == "digest" else tr("instant alerts")


def categories(kind: str, flags: list[str] | tuple[str, ...]) -> list[str]:
    found = {f for f in flags if f in DISTRESSING}
    if kind == "health":
        found.add("health")
    return sorted(found)


def alert_text(tr: Translator, body: dict[str, Any], *, digest: bool = False) -> str:
    kind = str(body.get("kind", "general"))
    head = f"{body.get('case', '')} — {kind_label(tr, kind)}"
    lines = [head]
    cats = categories(kind, body.get("flags", []))
    if cats:
        lines.append(
            tr(
                "Content note: {topics}.",
                topics=", ".join(category_label(tr, c) for c in cats),
            )
        )
    text = str(body.get("text", ""))
    if isinstance(body.get("notice"), dict):
        from handlers.transfers.notices import render_notice  # the bot's own words, translated

        text = render_notice(tr, body["notice"])
    if digest and len(text) > DIGEST_ITEM_CHARS:
        text = text[: DIGEST_ITEM_CHARS - 1].rstrip() + "…"
    lines.append(text)
    if not digest:
        lines.append(f"/case {body.get('slug', '')}")
    return "\n".join(lines)


def render_alert(
    conn: Connection, b: Broadcast, r: Recipient, tr: Translator
) -> dict[str, Any] | None:
    cats = categories(str(b.body.get("kind", "general")), b.body.get("flags", []))
    if r.optouts.intersection(cats):
        return None
    if r.mode == "digest" and b.priority != Priority.EMERGENCY:
        return None  # the daily digest picks it up
    return {"text": alert_text(tr, b.body)}
