"""How the subscribers' transfer alerts read, rendered in each recipient's language."""

from __future__ import annotations

from typing import Any

from bot.i18n import Translator


def render_notice(tr: Translator, notice: dict[str, Any]) -> str:
    """The text of a transit ('transit') or arrival ('arrived') alert."""
    name = str(notice.get("name", ""))
    if notice.get("what") == "arrived":
        lines = [
            tr(
                "{name} has arrived at a new place of detention: {facility}",
                name=name,
                facility=str(notice.get("facility", "")),
            )
        ]
        if notice.get("address"):
            lines.append(tr("Letters and parcels now go to: {address}", address=notice["address"]))
        else:
            lines.append(
                tr("Please wait for the new postal address before sending letters or parcels.")
            )
        return "\n".join(lines)
    return tr(
        "{name} is being transferred (etap) since {date}; where they are held is not known yet. "
        "Please hold letters and parcels: they may be lost or returned. We will tell you the "
        "new address as soon as it is known.",
        name=name,
        date=str(notice.get("since", "")),
    )
