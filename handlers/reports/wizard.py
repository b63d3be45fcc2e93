"""The report flows: the step-by-step report, a one-line report waiting for its case, and the
photos that follow a stored report.

Every flow here is `secret`: its answers are sealed under the process's draft key until the
report itself is sealed, so a restart (or a seized server) leaves no readable draft. Each typed
message a flow takes is noted (`refs`) so the platform can delete it once the report is stored.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Callable
from datetime import date, datetime, timedelta

from bot.context import Context, ascii_digits
from bot.flows import Flow, FlowContext, Step
from bot.i18n import N_
from bot.messages import Attachment, Choice, Priority
from handlers.common import member_timezone, sanitize_free_text
from handlers.reports import archive
from handlers.reports.family import my_case, my_cases
from handlers.reports.render import HEALTH_LABELS, KIND_LABELS, NEED_LABELS, quota_note, thanks
from storage import cases, outbox, reports

DAY = 86400.0
DRAFT_TTL = 2 * DAY
MORE_WINDOW = 15 * 60  # after a wizard report, further photos join it for this long
MAX_TEXT = 10_000
MAX_CONDITIONS = 2_000
MAX_REFS = 50
WIZARD_STEPS = ("case", "kind", "date", "health", "conditions", "needs", "text", "files")
LOST = N_(
    "Your unfinished report was lost when the bot restarted, and nothing of it was kept. "
    "Please start again with /report."
)
FILES_LATER = N_("Please answer this question first; you can add photos or documents at the end.")


def remember_ref(fc: FlowContext) -> None:
    """Note a typed message that carries report content, to delete it once stored."""
    incoming = fc.ctx.incoming
    if incoming.message_ref and not incoming.is_choice:
        refs = fc.data.setdefault("refs", [])
        if len(refs) < MAX_REFS:
            refs.append([incoming.transport, incoming.chat, incoming.message_ref])


def case_name(fc: FlowContext) -> str:
    case = my_case(fc.ctx, fc.data.get("case_id"))
    return case.name if case else ""


def case_choices(fc: FlowContext) -> tuple[Choice, ...]:
    return tuple(Choice(c.name[:40], c.slug) for c in my_cases(fc.ctx))


def picked_case(fc: FlowContext, value: str) -> cases.Case | None:
    picked = fc.match(value)
    return next((c for c in my_cases(fc.ctx) if c.slug == picked), None)


# --- the step-by-step report ----------------------------------------------------------------


def _counted(fc: FlowContext, question: str) -> str:
    return fc.ctx._("({n} of {total}) ", n=WIZARD_STEPS.index(fc.step), total=7) + question


def start_wizard(ctx: Context, case: cases.Case | None) -> None:
    mine = my_cases(ctx)
    if case is None and len(mine) == 1:
        case = mine[0]
    ctx.start_flow(
        WIZARD,
        {"case_id": case.id if case else None, "needs": [], "refs": []},
        step="case" if case is None else "kind",
        note=ctx._(
            "A new report. Only the coordinators of the case will read it; nothing is sent "
            "until the last step. Send /skip to leave a question out, /cancel to stop."
        ),
    )


def _answer_case(fc: FlowContext, value: str) -> None:
    case = picked_case(fc, value)
    if case is None:
        fc.again(fc.ctx._("Please choose one of the cases below, or /cancel."))
        return
    fc.data["case_id"] = case.id
    fc.next()


def _choice_step(key: str, allowed: tuple[str, ...]) -> Callable[[FlowContext, str], None]:
    def answer(fc: FlowContext, value: str) -> None:
        picked = fc.match(value)
        if picked not in allowed:
            fc.again(fc.ctx._("Please choose one of the answers below, or /skip."))
            return
        fc.data[key] = picked
        note = None
        if key == "health" and picked == "critical":
            note = fc.ctx._(
                "If {name} is in danger right now, send /urgent followed by what happened: it "
                "reaches every coordinator of the case at once and is repeated until one answers.",
                name=case_name(fc),
            )
        fc.next(note)

    return answer


def _skip_to_next(key: str) -> Callable[[FlowContext], None]:
    def skip(fc: FlowContext) -> None:
        fc.data[key] = None
        fc.data.pop("typing_date", None)
        fc.next()

    return skip


def _ask_date(fc: FlowContext) -> str:
    if fc.data.get("typing_date"):
        return _counted(fc, fc.ctx._("Type the date, for example 2026-09-20 or 20.09.2026."))
    return _counted(fc, fc.ctx._("When was it?"))


def _date_choices(fc: FlowContext) -> tuple[Choice, ...]:
    if fc.data.get("typing_date"):
        return ()
    return (
        Choice(fc.ctx._("Today"), "today"),
        Choice(fc.ctx._("Yesterday"), "yesterday"),
        Choice(fc.ctx._("Another date"), "other"),
    )


_DMY = re.compile(r"^(\d{1,2})\.(\d{1,2})\.(\d{4})$")
_YMD = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})$")


def parse_date(text: str) -> date | None:
    text = ascii_digits(text.strip())
    m = _YMD.match(text)
    dmy = _DMY.match(text)
    try:
        if m:
            return date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
        if dmy:
            return date(int(dmy.group(3)), int(dmy.group(2)), int(dmy.group(1)))
    except ValueError:
        return None
    return None


def _answer_date(fc: FlowContext, value: str) -> None:
    ctx = fc.ctx
    today = datetime.fromtimestamp(ctx.now, zoneinfo.ZoneInfo(member_timezone(ctx))).date()
    word = value.strip().lower()
    picked: str | None = word if word in ("today", "yesterday", "other") else None
    if picked is None and not fc.data.get("typing_date"):
        picked = fc.match(value)
    if picked == "today":
        fc.data["date"] = today.isoformat()
    elif picked == "yesterday":
        fc.data["date"] = (today - timedelta(days=1)).isoformat()
    elif picked == "other":
        fc.data["typing_date"] = True
        fc.ask()
        return
    else:
        typed = parse_date(value.strip())
        if typed is None or typed > today + timedelta(days=1) or typed.year < 1990:
            fc.again(ctx._("I could not read that date. Type it like 2026-09-20 or 20.09.2026."))
            return
        fc.data["date"] = typed.isoformat()
    fc.data.pop("typing_date", None)
    fc.next()


def _answer_conditions(fc: FlowContext, value: str) -> None:
    text = sanitize_free_text(value, MAX_CONDITIONS)
    if not text:
        fc.again(fc.ctx._("Please type it, or press Skip."))
        return
    fc.data["conditions"] = text
    fc.next()


def _need_choices(fc: FlowContext) -> tuple[Choice, ...]:
    chosen = set(fc.data.get("needs", []))
    out = [
        Choice(("✓ " if k in chosen else "") + fc.ctx._(label), k)
        for k, label in NEED_LABELS.items()
    ]
    return (*out, Choice(fc.ctx._("Done"), "done"))


def _answer_needs(fc: FlowContext, value: str) -> None:
    picked = fc.match(value)
    chosen: list[str] = list(fc.data.get("needs", []))
    if picked == "done":
        fc.next()
        return
    if picked in reports.NEEDS:
        if picked in chosen:
            chosen.remove(picked)
        else:
            chosen.append(picked)
        fc.data["needs"] = chosen
        fc.ask()
        return
    # A typed list: "medicine, letters"
    words = [w for w in re.split(r"[,\s;،，、؛၊]+", value.strip().lower()) if w]
    labels = {fc.ctx._(label).lower(): k for k, label in NEED_LABELS.items()}
    found = [w if w in reports.NEEDS else labels.get(w) for w in words]
    if words and all(found):
        fc.data["needs"] = list(dict.fromkeys(f for f in found if f))
        fc.next()
        return
    fc.again(fc.ctx._("Please tap the needs that apply, then Done."))


def _answer_text(fc: FlowContext, value: str) -> None:
    text = sanitize_free_text(value, MAX_TEXT)
    atts = fc.ctx.incoming.attachments
    if atts:
        fc.data["text"] = text or None
        finish_wizard(fc, atts)
        return
    if not text:
        fc.again(fc.ctx._("Please type it, or press Skip."))
        return
    fc.data["text"] = text
    fc.next()


def _answer_files(fc: FlowContext, value: str) -> None:
    ctx = fc.ctx
    atts = ctx.incoming.attachments
    if not atts:
        fc.again(ctx._("Please send a photo or a document, or send without."))
        return
    if all(a.data is None for a in atts):
        over = quota_note(ctx, atts)
        if over is not None:
            fc.again(over)
            return
        fc.again(
            ctx._(
                "I could not receive that file: it may be too large (the limit is {mb} MB). "
                "Try a smaller one, or send the report without it.",
                mb=ctx.services.max_attachment_bytes // (1024 * 1024),
            )
        )
        return
    finish_wizard(fc, atts)


def finish_wizard(fc: FlowContext, atts: tuple[Attachment, ...]) -> None:
    ctx = fc.ctx
    case = my_case(ctx, fc.data.get("case_id"))
    refs = fc.data.get("refs", [])
    if case is None:
        raise fc.fail(ctx._("No case by that name was found, or you may not see it."))
    fc.end()
    answers = {k: fc.data.get(k) for k in ("kind", "date", "health", "conditions", "text")}
    answers["needs"] = fc.data.get("needs", [])
    if not any(answers.values()) and not any(a.data for a in atts):
        ctx.reply(ctx._("Your report was empty, so nothing was sent. Send /report to start again."))
        return
    stored = archive.store_report(
        ctx, case, source="wizard", answers=answers, attachments=atts, refs=refs
    )
    if stored is None:
        return
    note = "\n".join(
        t for t in (thanks(ctx, case, stored.report_id, stored.skipped), quota_note(ctx, atts)) if t
    )
    ctx.start_flow(
        MORE,
        {"report_id": stored.report_id, "case_id": case.id, "until": ctx.now + MORE_WINDOW},
        note=note,
    )


def _counted_question(text: str) -> Callable[[FlowContext], str]:
    return lambda fc: _counted(fc, fc.ctx._(text))


WIZARD = Flow(
    "report",
    (
        Step(
            "case",
            ask=lambda fc: fc.ctx._("Which case is this report about?"),
            answer=_answer_case,
            choices=case_choices,
        ),
        Step(
            "kind",
            ask=lambda fc: _counted(
                fc, fc.ctx._("How did you get news of {name}?", name=case_name(fc))
            ),
            answer=_choice_step("kind", reports.KINDS),
            choices=lambda fc: tuple(Choice(fc.ctx._(lbl), k) for k, lbl in KIND_LABELS.items()),
            skip=_skip_to_next("kind"),
        ),
        Step(
            "date",
            ask=_ask_date,
            answer=_answer_date,
            choices=_date_choices,
            skip=_skip_to_next("date"),
        ),
        Step(
            "health",
            ask=lambda fc: _counted(fc, fc.ctx._("How is {name}'s health?", name=case_name(fc))),
            answer=_choice_step("health", reports.HEALTH),
            choices=lambda fc: tuple(Choice(fc.ctx._(lbl), k) for k, lbl in HEALTH_LABELS.items()),
            skip=_skip_to_next("health"),
        ),
        Step(
            "conditions",
            ask=_counted_question(
                N_(
                    "Anything about the conditions of detention: cell, food, treatment, "
                    "visits? Type it, or press Skip."
                )
            ),
            answer=_answer_conditions,
            skip=_skip_to_next("conditions"),
        ),
        Step(
            "needs",
            ask=lambda fc: _counted(
                fc,
                fc.ctx._(
                    "What does {name} need? Tap each that applies, then Done. You can also "
                    "type them, for example: medicine, letters",
                    name=case_name(fc),
                ),
            ),
            answer=_answer_needs,
            choices=_need_choices,
            skip=lambda fc: fc.next(),
        ),
        Step(
            "text",
            ask=_counted_question(
                N_(
                    "Anything else the coordinators should know? Type it in one message, or "
                    "press Skip."
                )
            ),
            answer=_answer_text,
            skip=_skip_to_next("text"),
            files=True,
        ),
        Step(
            "files",
            ask=_counted_question(
                N_(
                    "You can add a photo or a document (a letter, a court paper). Send it now, "
                    "or send the report without one."
                )
            ),
            answer=_answer_files,
            skip=lambda fc: finish_wizard(fc, ()),
            skip_label=N_("Send the report without a file"),
            files=True,
        ),
    ),
    secret=True,
    sensitivity=outbox.REPORT,
    on_message=remember_ref,
    lost=LOST,
    ttl=DRAFT_TTL,
    files_later=FILES_LATER,
)


# --- a one-line report that waits for its case ------------------------------------------------


def _line_case(fc: FlowContext, value: str) -> None:
    ctx = fc.ctx
    case = picked_case(fc, value)
    if case is None:
        fc.again(ctx._("Please choose one of the cases below, or /cancel."))
        return
    fc.end()
    stored = archive.store_report(
        ctx, case, source="line", answers=fc.data.get("answers", {}),
        refs=fc.data.get("refs", []),
    )  # fmt: skip
    if stored is not None:
        ctx.reply(thanks(ctx, case, stored.report_id, stored.skipped))


LINE = Flow(
    "report-line",
    (
        Step(
            "case",
            ask=lambda fc: fc.ctx._("Which case is this report about?"),
            answer=_line_case,
            choices=case_choices,
        ),
    ),
    secret=True,
    sensitivity=outbox.REPORT,
    on_message=remember_ref,
    lost=LOST,
    ttl=DRAFT_TTL,
    files_later=FILES_LATER,
    back=False,
)


# --- photos that follow a stored report (a Telegram album arrives one photo at a time) --------


def _more(fc: FlowContext, value: str) -> None:
    ctx = fc.ctx
    atts = ctx.incoming.attachments
    if value.strip().lower() == "done" and not atts:
        fc.end()
        ctx.reply(ctx._("Thank you."))
        return
    case = my_case(ctx, fc.data.get("case_id"))
    rid = fc.data.get("report_id")
    if ctx.now > fc.data.get("until", 0) or case is None or not isinstance(rid, int):
        fc.end()
        ctx.reply(ctx._("Your last report is complete. To send new news, use /report."))
        return
    if not atts:
        fc.again(ctx._("Your report is already stored. To send new news, use /report."))
        return
    state, public, key_id = archive.sealing_state(ctx)
    if state != "ok" or public is None or key_id is None:
        fc.end()
        archive.refuse(ctx, case, state)
        return
    ids, _skipped = archive.seal_attachments(ctx, rid, atts, public, key_id)
    archive.delete_carriers(ctx, [])
    if ids:
        for cid in cases.coordinators_of(ctx.conn, case.id):
            ctx.notify(
                cid,
                lambda _: _(
                    "Report #{id} about {name}: more photos or documents were added (sealed).",
                    id=rid,
                    name=case.name,
                ),
                priority=Priority.ALERT,
                idem_key=f"report:{rid}:more:to:{cid}",
            )
    fc.data["until"] = ctx.now + MORE_WINDOW
    note = (
        ctx._("Added to your report.")
        if ids
        else ctx._("I could not receive that file (too large?); nothing was added.")
    )
    fc.ask(note)


MORE = Flow(
    "report-more",
    (
        Step(
            "more",
            ask=lambda fc: fc.ctx._(
                "If you have more photos or documents for this report, send them now. Press "
                "Done when you have finished."
            ),
            answer=_more,
            choices=lambda fc: (Choice(fc.ctx._("Done"), "done"),),
            files=True,
        ),
    ),
    secret=True,  # it ties this member to a report number: never readable after a seizure
    sensitivity=outbox.REPORT,
    lost=N_("Thank you."),
    ttl=DRAFT_TTL,
    back=False,
)
