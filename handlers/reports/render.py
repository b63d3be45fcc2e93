"""How reports read: the labels of their answers, the coordinators' live copy, the thanks."""

from __future__ import annotations

from typing import Any

from bot.context import Context
from bot.guard import ATTACHMENT_QUOTA
from bot.i18n import N_, Translator
from bot.messages import Attachment
from storage import cases

REPORT_NOT_FOUND = N_("No report with that number was found, or it is not yours.")
ALERT_NOT_FOUND = N_("No alert with that number was found, or it is not yours.")

KIND_LABELS = {
    "visit": N_("Visit"),
    "call": N_("Phone call"),
    "letter": N_("Letter"),
    "lawyer": N_("Through the lawyer"),
    "other": N_("Other"),
}
HEALTH_LABELS = {"ok": N_("OK"), "concern": N_("Concern"), "critical": N_("Critical")}
NEED_LABELS = {
    "medicine": N_("Medicine"),
    "money": N_("Money"),
    "letters": N_("Letters"),
    "lawyer": N_("A lawyer"),
    "food": N_("Food"),
    "clothes": N_("Clothes"),
}


def live_copy(
    _: Translator,
    case: cases.Case,
    rid: int,
    body: dict[str, Any],
    n_files: int,
    *,
    weak_channel: bool = False,
) -> str:
    lines = [_("Report #{id} about {name}", id=rid, name=case.name)]
    if weak_channel:
        lines.append(_("The relative sent this over a platform that can read it (not end-to-end)."))
    meta = []
    if body["kind"]:
        meta.append(_(KIND_LABELS[body["kind"]]))
    if body["contact_date"]:
        meta.append(body["contact_date"])
    if meta:
        lines.append(" · ".join(meta))
    if body["health"]:
        lines.append(_("Health: {level}", level=_(HEALTH_LABELS[body["health"]])))
    if body["conditions"]:
        lines.append(_("Conditions: {text}", text=body["conditions"]))
    if body["needs"]:
        needs = ", ".join(_(NEED_LABELS[n]) for n in body["needs"])
        lines.append(_("Needs: {needs}", needs=needs))
    if body["text"]:
        lines += ["", body["text"]]
    if n_files:
        lines.append(
            _(
                "Photos or documents: {n}, sealed. Open them offline with `vigil reports export`.",
                n=n_files,
            )
        )
    lines += [
        "",
        _(
            "This is the family's own account. Nothing of it is public. To publish a "
            "reviewed public update: /publish {id} TEXT",
            id=rid,
        ),
    ]
    return "\n".join(lines)


def report_notice(_: Translator, case: cases.Case, rid: int) -> str:
    """What a coordinator gets where a report's words may not go (it came over Signal)."""
    return _(
        "New report #{id} for {slug}. Read it on Signal (send /link to connect it) or in the "
        "offline export.",
        id=rid,
        slug=case.slug,
    )


def urgent_notice(_: Translator, case: cases.Case, aid: int) -> str:
    return _(
        "URGENT — {name} (alert #{id}): a relative raised an emergency. Read it on Signal "
        "(send /link to connect it) and act now. Send /ack {id} when you take it on.",
        name=case.name,
        id=aid,
    )


def quota_note(ctx: Context, attachments: tuple[Attachment, ...]) -> str | None:
    if not any(a.refused == "quota" for a in attachments):
        return None
    return ctx._(
        "You have reached today's limit for photos and documents ({mb} MB), so some were not "
        "kept. The limit resets tomorrow; your words were not affected.",
        mb=ATTACHMENT_QUOTA // (1024 * 1024),
    )


def thanks(ctx: Context, case: cases.Case, report_id: int, skipped: int) -> str:
    lines = [
        ctx._(
            "Thank you. Your report about {name} is stored, sealed, and its coordinators have "
            "it (report #{id}).",
            name=case.name,
            id=report_id,
        )
    ]
    if skipped:
        lines.append(
            ctx._.plural(
                "{n} file could not be received (too large or too many; the limit is {mb} MB "
                "each) and was left out.",
                "{n} files could not be received (too large or too many; the limit is {mb} MB "
                "each) and were left out.",
                skipped,
                mb=ctx.services.max_attachment_bytes // (1024 * 1024),
            )
        )
    return "\n".join(lines)
