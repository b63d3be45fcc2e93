"""Who may see and manage an action; one answer for missing and forbidden."""

from __future__ import annotations

from bot.context import COORDINATORS, Context, UserError, parse_id
from handlers.actions.model import NOT_FOUND
from storage import actions, cases, members
from storage.actions import Action
from storage.db import Connection


def may_see(conn: Connection, action: Action, member: members.Member | None) -> bool:
    if member is None:
        return False
    if member.role in COORDINATORS:
        return True
    if action.case_id is not None:
        case = cases.get(conn, action.case_id)
        if case is None or not cases.can_see(conn, case, member.id, member.role):
            return False
    return action.audience in ("all", "case") or action.audience == f"role:{member.role}"


def may_manage(conn: Connection, action: Action, member: members.Member | None) -> bool:
    if member is None or member.role not in COORDINATORS:
        return False
    if member.role == "admin" or action.case_id is None:
        return True
    case = cases.get(conn, action.case_id)
    return case is not None and cases.may_coordinate(conn, case, member.id, member.role)


def _action_id(ctx: Context, args: str) -> int:
    found = parse_id(args.split()[0]) if args.split() else None
    if found is None:
        raise UserError(ctx._(NOT_FOUND))
    return found


def visible_action(ctx: Context, args: str, *, manage: bool = False) -> Action:
    """The action if this member may see it (or manage it); one answer for missing and hidden."""
    action = actions.get(ctx.conn, _action_id(ctx, args))
    allowed = (
        action is not None
        and action.state != actions.CANCELLED
        and (may_manage if manage else may_see)(ctx.conn, action, ctx.member)
    )
    if not allowed:
        raise UserError(ctx._(NOT_FOUND))
    assert action is not None
    return action
