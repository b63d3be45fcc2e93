"""Cases as supporters see them: /cases and /case SLUG."""

from __future__ import annotations

from bot.i18n import N_
from bot.router import ANYONE, Context, UserError, registry
from storage import cases


def visible_case(ctx: Context, slug: str) -> cases.Case:
    """The case if this member may see it; one answer for missing and forbidden."""
    case = cases.by_slug(ctx.conn, slug[:64]) if slug else None
    member_id = ctx.member.id if ctx.member else None
    role = ctx.member.role if ctx.member else None
    if case is None or not cases.can_see(ctx.conn, case, member_id, role):
        raise UserError(ctx._("No case by that name was found, or you may not see it."))
    return case


@registry.command("cases", roles=ANYONE, summary=N_("the cases you can follow"), order=10)
def list_cases(ctx: Context, args: str) -> None:
    member_id = ctx.member.id if ctx.member else None
    role = ctx.member.role if ctx.member else None
    found = cases.visible_to(ctx.conn, member_id, role)
    if not found:
        ctx.reply(ctx._("There are no cases yet."))
        return
    lines = [ctx._("Cases:")]
    lines += [f"• {c.name} — /case {c.slug}" for c in found]
    ctx.reply("\n".join(lines))


@registry.command("case", roles=ANYONE, summary=N_("a case card: /case NAME"), order=11)
def show_case(ctx: Context, args: str) -> None:
    case = visible_case(ctx, args.strip().split()[0] if args.strip() else "")
    ctx.reply(f"{case.name}\n/case {case.slug}")
