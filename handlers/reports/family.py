"""Which cases a relative reports for, and how a report names one of them."""

from __future__ import annotations

from bot.context import Context, UserError
from storage import cases


def my_cases(ctx: Context) -> list[cases.Case]:
    member = ctx.require_member()
    return cases.member_cases(ctx.conn, member.id, "family")


def require_private(ctx: Context) -> None:
    if not ctx.incoming.private:
        raise UserError(ctx._("Please send reports in a private chat with me, never in a group."))


def require_cases(ctx: Context) -> list[cases.Case]:
    mine = my_cases(ctx)
    if not mine:
        raise UserError(
            ctx._("You are not linked to a case yet. Ask the coordinator who invited you.")
        )
    return mine


def my_case(ctx: Context, case_id: int | None) -> cases.Case | None:
    return next((c for c in my_cases(ctx) if c.id == case_id), None)


def split_slug(mine: list[cases.Case], args: str) -> tuple[cases.Case | None, str]:
    """`/report SLUG TEXT` names one of the member's own cases; any other first word is text,
    so the answer never depends on whether someone else's case exists."""
    first, _, rest = args.strip().partition(" ")
    match = next((c for c in mine if c.slug == first.lower()), None)
    if match is not None:
        return match, rest.strip()
    return None, args.strip()
