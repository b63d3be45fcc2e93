"""The two-person rule: who may approve an act, and asking them (issue 14 item 3).

An act under the rule (a network-wide or large broadcast, a promotion to coordinator or admin,
the revocation of an admin, an assignment) is not done by the person who asks: their confirmation
creates a pending approval, every eligible person gets the full preview, and the first /approve
of someone else does it. Eligible: another administrator; for one case's audience also another
coordinator of that case. When nobody else is eligible (a one-admin network) the act goes
through at once: refusing would leave a lone administrator unable to run the network; `vigil
status` says the rule cannot apply. /panic is never under it: speed matters in a raid.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bot.context import Context
from bot.i18n import Translator
from bot.messages import Choice, Priority
from storage import approvals, cases
from storage.db import Connection

TTL = 24 * 3600.0


def eligible(conn: Connection, *, initiator_id: int | None, case_id: int | None) -> list[int]:
    """Who may approve: the administrators, and with a case the coordinators assigned to it,
    never the initiator."""
    people = set(cases.admins(conn))
    if case_id is not None:
        people.update(cases.assigned_coordinators(conn, case_id))
    people.discard(initiator_id)  # type: ignore[arg-type]
    return sorted(people)


def rule_applies(conn: Connection) -> bool:
    """False in a network with one administrator: then nobody can approve a network-wide act."""
    return len(cases.admins(conn)) >= 2


def request(
    ctx: Context,
    *,
    kind: str,
    subject: str,
    payload: dict[str, Any],
    case_id: int | None,
    preview: Callable[[Translator], str],
) -> int | None:
    """Ask the eligible people to approve; the approval's id, or None when nobody else is
    eligible (the caller then acts at once)."""
    member = ctx.require_member()
    people = eligible(ctx.conn, initiator_id=member.id, case_id=case_id)
    if not people:
        ctx.audit("approval.unavailable", subject)
        return None
    aid = approvals.create(
        ctx.conn,
        kind=kind,
        subject=subject,
        payload=payload,
        initiator_id=member.id,
        case_id=case_id,
        now=ctx.now,
        ttl=TTL,
    )
    ctx.audit("approval.requested", f"approval:{aid}")

    def render(_: Translator) -> str:
        return (
            _(
                "Request #{id} from member {member} needs a second person to agree:",
                id=aid,
                member=member.id,
            )
            + "\n\n"
            + preview(_)
            + "\n\n"
            + _(
                "Send /approve {id} to let it happen or /reject {id} to stop it. The request "
                "expires in 24 hours.",
                id=aid,
            )
        )

    def choices(_: Translator) -> tuple[Choice, ...]:
        return (Choice(_("Approve"), f"/approve {aid}"), Choice(_("Reject"), f"/reject {aid}"))

    for person in people:
        ctx.notify(
            person,
            render,
            priority=Priority.ALERT,
            choices=choices,
            idem_key=f"approval:{aid}:{person}",
        )
    return aid


def waiting_text(tr: Translator, aid: int) -> str:
    return tr(
        "Request #{id} is waiting for a second person: the administrators (and for a case, its "
        "other coordinators) have the preview. Nothing happens until one of them sends "
        "/approve {id}; it expires in 24 hours.",
        id=aid,
    )
