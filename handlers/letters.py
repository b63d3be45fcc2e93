"""Letters to prisoners: /letters [SLUG] and /wrote SLUG.

* /letters SLUG: the current address (the case sheet's `letters_address`, kept by
  coordinators with /editcase SLUG letters_address ...), where the person is held, how many
  letters supporters recorded lately, what to write, what never to write, language advice and
  the writer's own safety. Same "not found" answer for hidden and missing cases.
* /letters alone points supporters to the prisoners who received the fewest letters in the
  last three months (among cases the member may see, with an address, not released), as
  politzekbot's "fewest correspondents" list does, but acted on.
* /wrote SLUG records one letter: only a per-case, per-month count is stored, never who
  wrote. At most WROTE_PER_DAY recordings a day per member (a persistent rate bucket that
  names the member, not the case), so one person cannot skew the list.

The guidance follows the practice of prisoner-support groups (politzek.me "what to write",
Amnesty's Write for Rights): letters are read by censors and can be used against the
prisoner, so nothing about the case, politics or other prisoners; warm, ordinary, hopeful.
"""

from __future__ import annotations

from datetime import UTC, datetime

from bot.capability import Capability, Commands
from bot.context import ANYONE, MEMBERS, Context, UserError
from bot.i18n import N_
from handlers.common import visible_case
from storage import cases, letters, ratelimits

commands = Commands()

RECENT_MONTHS = 3
FEWEST_SHOWN = 5
WROTE_PER_DAY = 10

WHAT_TO_WRITE = (
    N_("Introduce yourself in a few lines: who you are, where you live, what you do."),
    N_(
        "Write about ordinary life: the seasons, books, films, music, animals, your town, a "
        "trip. News of the outside world as it is lived, not as it is argued about."
    ),
    N_("Say that people think of them and that they are not forgotten."),
    N_(
        "Ask simple questions they can answer, and do not be hurt if no answer comes: letters "
        "are often held back, in both directions."
    ),
    N_(
        "Keep it short and clear. Write legibly or type it. A postcard or a photo of nature is "
        "welcome where the prison allows it."
    ),
)

NEVER_WRITE = (
    N_(
        "Nothing about the case, the charges, the investigation or the trial, and no opinion "
        "about the authorities: every letter is read by censors and can be used against the "
        "prisoner."
    ),
    N_("Nothing about politics, protests or news that could be called extremist."),
    N_("No mention of other prisoners or their cases, and no names of activists or relatives."),
    N_("Nothing you would not want a prison officer or an investigator to read."),
    N_("No promises you cannot keep, and no pity or despair: write with warmth and hope."),
)


def _month(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m")


def _first_recent_month(ts: float) -> str:
    d = datetime.fromtimestamp(ts, UTC)
    index = d.year * 12 + d.month - 1 - (RECENT_MONTHS - 1)
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


@commands.command(
    "letters", roles=ANYONE, summary=N_("write to a prisoner: /letters [NAME]"), order=33
)
def letters_cmd(ctx: Context, args: str) -> None:
    words = args.split()
    if not words:
        _fewest(ctx)
        return
    case = visible_case(ctx, words[0].lower())
    ctx.reply(guidance(ctx, case))


def guidance(ctx: Context, case: cases.Case) -> str:
    _ = ctx._
    lines = [_("Writing to {name}", name=case.name)]
    if case.status == "released":
        lines.append(
            _("{name} has been released. Thank you to everyone who wrote.", name=case.name)
        )
        return "\n".join(lines)
    if case.letters_address:
        lines.append(_("Address: {address}", address=case.letters_address))
    else:
        lines.append(
            _(
                "No address for letters is known yet. The coordinators will add it to the case "
                "card (/case {slug}) as soon as it is safe to share.",
                slug=case.slug,
            )
        )
    if case.facility:
        lines.append(_("Held at: {facility}", facility=case.facility))
    recent = letters.count_since(ctx.conn, case.id, _first_recent_month(ctx.now))
    lines.append(
        _.plural(
            "Supporters recorded {n} letter in the last three months.",
            "Supporters recorded {n} letters in the last three months.",
            recent,
        )
    )
    lines.append("")
    lines.append(_("What to write:"))
    lines += [f"• {_(t)}" for t in WHAT_TO_WRITE]
    lines.append("")
    lines.append(_("What never to write:"))
    lines += [f"• {_(t)}" for t in NEVER_WRITE]
    lines.append("")
    lines.append(_("Language:"))
    where = (
        _("in {country}", country=case.country)
        if case.country
        else _("in the country where {name} is held", name=case.name)
    )
    lines.append(
        "• "
        + _(
            "Write in the official language used {where}, or one the prison's censors read: "
            "letters in other languages are often delayed or never handed over. Short, simple "
            "sentences survive a translation tool best.",
            where=where,
        )
    )
    lines.append("")
    lines.append(_("Your own safety:"))
    lines.append(
        "• "
        + _(
            "Think about the return address you give. Some supporters use the address of a "
            "trusted organisation instead of their home."
        )
    )
    lines.append("")
    lines.append(
        _(
            "When you have sent a letter, tell us with /wrote {slug}: only the number of "
            "letters is kept, never who wrote.",
            slug=case.slug,
        )
    )
    return "\n".join(lines)


def _fewest(ctx: Context) -> None:
    member_id = ctx.member.id if ctx.member else None
    role = ctx.member.role if ctx.member else None
    candidates = [
        c
        for c in cases.visible_to(ctx.conn, member_id, role)
        if c.letters_address and c.status != "released"
    ]
    if not candidates:
        ctx.reply(
            ctx._(
                "No prisoner's address for letters is listed yet. See the cases with /cases; "
                "the address appears on the case card when it is known."
            )
        )
        return
    by_id = {c.id: c for c in candidates}
    ranked = letters.fewest(ctx.conn, list(by_id), _first_recent_month(ctx.now), FEWEST_SHOWN)
    lines = [
        ctx._("These prisoners have received the fewest letters lately. A letter from you matters:")
    ]
    for r in ranked:
        c = by_id[r.case_id]
        count = ctx._.plural("{n} letter", "{n} letters", r.letters)
        lines.append(f"• {c.name} — {count} — /letters {c.slug}")
    lines.append(ctx._("(Counted over the last three months.)"))
    ctx.reply("\n".join(lines))


@commands.command(
    "wrote", roles=MEMBERS, summary=N_("record a letter you sent: /wrote NAME"), order=34
)
def wrote(ctx: Context, args: str) -> None:
    member = ctx.require_member()
    words = args.split()
    if not words:
        raise UserError(ctx._("Send /wrote NAME, with the case's short name from /letters."))
    case = visible_case(ctx, words[0].lower())
    if case.status == "released":
        ctx.reply(ctx._("{name} has been released. Thank you for writing.", name=case.name))
        return
    allowed = ratelimits.hit(
        ctx.conn, f"wrote:{member.id}", limit=WROTE_PER_DAY, window=86400.0, lockout=0.0,
        now=ctx.now,
    )  # fmt: skip
    if not allowed:
        ctx.reply(
            ctx._(
                "Thank you! You have recorded many letters today; we count at most {n} a day "
                "per person.",
                n=WROTE_PER_DAY,
            )
        )
        return
    letters.record(ctx.conn, case.id, _month(ctx.now))
    ctx.reply(
        ctx._(
            "Thank you for writing to {name}! Every letter tells the prison that someone is "
            "watching.",
            name=case.name,
        )
    )


def capability() -> Capability:
    return Capability("letters", commands=tuple(commands))
