"""A relative's plain message (no command, no open question) offered as a report, kept only on yes.

The words wait as the sealed draft of a `secret` flow (bot/flows.py), never in plaintext: a
"no", /cancel, any other command or a restart leaves nothing of them. More plain messages while
the question is open join the same draft, as a relative often writes news in several messages.
"""

from __future__ import annotations

from bot.context import Context
from bot.flows import Flow, FlowContext, Step
from bot.messages import Choice
from handlers.common import sanitize_free_text
from handlers.reports import archive
from handlers.reports.family import my_case, my_cases, require_cases
from handlers.reports.render import thanks
from handlers.reports.wizard import DRAFT_TTL, LOST, MAX_TEXT, remember_ref
from storage import outbox

NO = "no"
YES = "yes"


def offer_free_text(ctx: Context, text: str) -> bool:
    """A relative's news typed as plain text: ask whether to send it as a report."""
    member = ctx.member
    if member is None or member.role != "family":
        return False
    mine = require_cases(ctx)
    state, _pub, _kid = archive.sealing_state(ctx)
    if state != "ok":  # nothing could be kept: say so now, before she answers anything
        archive.refuse(ctx, mine[0] if len(mine) == 1 else None, state)
        return True
    words = sanitize_free_text(text, MAX_TEXT)
    if not words:
        return False
    case_id = mine[0].id if len(mine) == 1 else None
    fc = ctx.start_flow(
        OFFER,
        {"text": words, "case_id": case_id, "refs": []},
        step="confirm" if case_id else "case",
    )
    remember_ref(fc)
    fc.save()
    return True


def _is_no(fc: FlowContext, value: str) -> bool:
    t = value.strip().lower()
    return fc.match(value) == NO or t in (NO, fc.ctx._("No").lower())


def _is_yes(fc: FlowContext, value: str) -> bool:
    t = value.strip().lower()
    return fc.match(value) == YES or t in (YES, fc.ctx._("Yes").lower())


def _decline(fc: FlowContext) -> None:
    fc.end()
    fc.ctx.reply(fc.ctx._("Not sent. Nothing of it was kept."))


def _add(fc: FlowContext, value: str) -> bool:
    """Another plain message while the question is open joins the draft."""
    more = sanitize_free_text(value, MAX_TEXT)
    if not more:
        return False
    joined = f"{fc.data.get('text', '')}\n{more}".strip()
    if len(joined) > MAX_TEXT:
        fc.again(fc.ctx._("That is too long for one report. Please answer the question first."))
        return True
    fc.data["text"] = joined
    fc.again(fc.ctx._("Added to the same message."))
    return True


def _store(fc: FlowContext, case_id: int) -> None:
    ctx = fc.ctx
    case = my_case(ctx, case_id)
    if case is None:
        raise fc.fail(ctx._("No case by that name was found, or you may not see it."))
    fc.end()
    answers = {"text": fc.data.get("text")}
    stored = archive.store_report(
        ctx, case, source="line", answers=answers, refs=fc.data.get("refs", [])
    )
    if stored is not None:
        ctx.reply(thanks(ctx, case, stored.report_id, stored.skipped), sensitivity=outbox.REPORT)


def _answer_confirm(fc: FlowContext, value: str) -> None:
    if _is_no(fc, value):
        _decline(fc)
    elif _is_yes(fc, value):
        _store(fc, fc.data.get("case_id") or 0)
    elif not _add(fc, value):
        fc.again(fc.ctx._("Please choose one of the answers below."))


def _answer_case(fc: FlowContext, value: str) -> None:
    if _is_no(fc, value):
        _decline(fc)
        return
    picked = fc.match(value)
    case = next((c for c in my_cases(fc.ctx) if c.slug == picked), None)
    if case is not None:
        _store(fc, case.id)
    elif not _add(fc, value):
        fc.again(fc.ctx._("Please choose one of the answers below."))


def _ask_confirm(fc: FlowContext) -> str:
    case = my_case(fc.ctx, fc.data.get("case_id"))
    return fc.ctx._(
        "Send this to the coordinators as a report about {name}? Only the coordinators of the "
        "case will read it.",
        name=case.name if case else "",
    )


def _confirm_choices(fc: FlowContext) -> tuple[Choice, ...]:
    return (Choice(fc.ctx._("Yes, send it"), YES), Choice(fc.ctx._("No, cancel"), NO))


def _case_choices(fc: FlowContext) -> tuple[Choice, ...]:
    mine = tuple(Choice(c.name[:40], c.slug) for c in my_cases(fc.ctx))
    return (*mine, Choice(fc.ctx._("No, cancel"), NO))


OFFER = Flow(
    "report-offer",
    (
        Step(
            "case",
            ask=lambda fc: fc.ctx._(
                "Send this to the coordinators as a report? Choose the case it is about. Only "
                "the coordinators of that case will read it."
            ),
            answer=_answer_case,
            choices=_case_choices,
        ),
        Step("confirm", ask=_ask_confirm, answer=_answer_confirm, choices=_confirm_choices),
    ),
    secret=True,
    sensitivity=outbox.REPORT,
    on_message=remember_ref,
    lost=LOST,
    ttl=DRAFT_TTL,
    back=False,
)
