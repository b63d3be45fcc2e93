"""Per-member preferences: /language, /timezone, /quiet."""

from __future__ import annotations

import re

from bot.capability import Capability, Commands
from bot.context import ANYONE, Context, UserError, ascii_digits
from bot.i18n import N_, Translator, available_languages, find_language, language_name
from bot.messages import Choice
from handlers.common import find_zone
from storage import members

commands = Commands()


@commands.command("language", roles=ANYONE, summary=N_("choose your language"), order=80)
def language(ctx: Context, args: str) -> None:
    member = ctx.require_member()
    if not args:
        choices = tuple(
            Choice(language_name(code), f"/language {code}") for code in available_languages()
        )
        ctx.reply(ctx._("Choose your language:"), choices)
        return
    code = find_language(args)
    if code is None:
        raise UserError(
            ctx._(
                "I don't have that language yet. Available: {codes}",
                codes=", ".join(available_languages()),
            )
        )
    members.set_language(ctx.conn, member.id, code)
    ctx._ = Translator(code)
    ctx.reply(ctx._("Language set: {name}.", name=language_name(code)))


@commands.command("timezone", roles=ANYONE, summary=N_("set your time zone"), order=81)
def timezone(ctx: Context, args: str) -> None:
    member = ctx.require_member()
    if not args:
        current = member.timezone or ctx.services.default_timezone
        ctx.reply(
            ctx._(
                "Your time zone is {zone}. To change it, send for example /timezone Europe/Minsk",
                zone=current,
            )
        )
        return
    match = find_zone(args)
    if match is None:
        raise UserError(
            ctx._("I don't know that time zone. Use a name like Europe/Minsk or Asia/Tehran.")
        )
    members.set_timezone(ctx.conn, member.id, match)
    ctx.reply(ctx._("Time zone set: {zone}.", zone=match))


_QUIET = re.compile(r"^([01]?\d|2[0-3])\s*-\s*([01]?\d|2[0-3])$")


@commands.command("quiet", roles=ANYONE, summary=N_("quiet hours for alerts, e.g. 22-7"), order=82)
def quiet(ctx: Context, args: str) -> None:
    member = ctx.require_member()
    if args.lower() in ("off", "none", "0"):
        members.set_quiet_hours(ctx.conn, member.id, None)
        ctx.reply(ctx._("Quiet hours are off."))
        return
    m = _QUIET.match(ascii_digits(args.strip()))
    if not m:
        raise UserError(
            ctx._("Send quiet hours as two hours, for example /quiet 22-7, or /quiet off.")
        )
    start, end = int(m.group(1)), int(m.group(2))
    if start == end:
        raise UserError(ctx._("The start and end of quiet hours must differ."))
    members.set_quiet_hours(ctx.conn, member.id, f"{start:02d}-{end:02d}")
    ctx.reply(
        ctx._(
            "Quiet hours set: {start}:00 to {end}:00 in your time zone. "
            "Emergencies still come through.",
            start=f"{start:02d}",
            end=f"{end:02d}",
        )
    )


def capability() -> Capability:
    return Capability("preferences", commands=tuple(commands))
