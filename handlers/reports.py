"""Family well-being reports, the sealed archive, emergencies and check-ins.

Commands: /report (wizard, or /report [SLUG] TEXT at once), /urgent TEXT, /reports [SLUG],
/publish ID TEXT, /ack ID, and the wizard's own /r STEP VALUE (button values) and /skip.

Decisions (see also docs/cases-and-reports.md):

* Sealing. Each report body (JSON of every wizard answer and the free text) and each
  attachment is HPKE-sealed to the network's sealing public key before the transaction
  commits; the server never stores report words in plaintext and cannot open the archive.
  Listing metadata (case, time, kind of contact, health level, urgency, attachment count)
  stays queryable. No reporter id is stored with a report.
* No sealing key configured (or keyslots.json's key differs from the one pinned in the
  encrypted database): ordinary reports are refused, nothing is kept or forwarded, the
  relative is told plainly, and admins plus the case's coordinators are told once a day to
  run `vigil keys sealing-new`. An /urgent alert is still pushed to the coordinators (an
  emergency must not wait for configuration) but is not archived.
* Live copy. Coordinators of the case get each report as a message, so the words exist in
  plaintext in the outbox row until the transport has delivered it. The reports job blanks
  the body of delivered (or finally failed) report and alert rows within a minute
  (`storage.reports.scrub_live_copies`), well before the outbox retention purge; tests prove
  the words then appear nowhere in the decrypted database. Attachments are never sent live:
  they are opened with `vigil reports export`.
* Drafts. An unfinished wizard is kept in `report_drafts`, encrypted under a key that lives
  only in this process's memory (Services.draft_key); a restart discards unfinished drafts.
* /publish. The server cannot open sealed bodies, so /publish ID TEXT requires the
  coordinator to write the public text (from the live copy, leaving out anything private);
  that review is the only way family content reaches supporters. Alerts go through the
  hook `registry.hooks["case_update_published"](ctx, case_id, update_id)` when registered.
* Periodic work (`minute_job`: urgent re-sends, blanking delivered live copies, dropping old
  drafts; `checkin_due` every 15 minutes) registers itself in `bot.scheduler.REGISTRARS`.
* /urgent goes at Priority.EMERGENCY to every coordinator of the case and is re-sent by
  `resend_unacked` (10 min, then 30, then hourly) until someone sends /ack ID; after 3 days
  unacknowledged it stops and admins are told. Re-sends carry no report text.
* Not forgotten: `checkin_due` tells coordinators and gently asks relatives once per silence
  period (checkin_days without a report), idempotent by the case's round and outbox keys.
* Telegram: after a relative's report is stored, the messages that carried it are deleted
  from the chat (when Services.delete_reports and the platform gave a message_ref).
* Reports are only taken in private chats: in a group they would be read by the group.
"""

from __future__ import annotations

import json
import logging
import re
import weakref
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from bot.i18n import N_, Translator
from bot.messages import Attachment, Choice, Priority
from bot.router import (
    COORDINATORS,
    FAMILY,
    Context,
    UserError,
    notify_member,
    parse_id,
    registry,
)
from handlers.cases import (
    clean_text,
    coordinated_case,
    fmt_datetime,
    member_timezone,
    sanitize_free_text,
)
from storage import cases, crypto, members, outbox, reports
from storage.db import Connection

log = logging.getLogger(__name__)

FLOW = "report"
DAY = 86400.0
DRAFT_TTL = 2 * DAY
MORE_WINDOW = 15 * 60  # after a wizard report, further photos join it for this long
MAX_TEXT = 10_000
MAX_CONDITIONS = 2_000
MAX_REFS = 50
URGENT_MAX_AGE = 3 * DAY
LIST_LIMIT = 15
MAX_PUBLIC_TEXT = 3500  # as /update

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
WIZARD_STEPS = ("case", "kind", "date", "health", "conditions", "needs", "text", "files")
CHOICE_STEPS = ("case", "kind", "date", "health", "needs")


# --- drafts: encrypted under a key held only in memory -------------------------------------


@dataclass
class Flow:
    purpose: str  # wizard | line | urgent | more
    step: str
    data: dict[str, Any] = field(default_factory=dict)


def _draft_key(ctx: Context) -> bytes:
    return ctx.services.draft_key


def _aad(member_id: int) -> bytes:
    return f"vigil/report-draft|member={member_id}".encode()


def _save(ctx: Context, flow: Flow) -> None:
    """Store the draft (attached) and route the member's typed text to the report flow."""
    member = ctx.require_member()
    blob = crypto.aead_seal(_draft_key(ctx), json.dumps(flow.data).encode(), _aad(member.id))
    reports.put_draft(ctx.conn, member.id, flow.purpose, flow.step, blob, ctx.now)
    ctx.start_flow(FLOW, flow.step)


def _load(ctx: Context) -> tuple[Flow | None, bool]:
    """(draft, lost): lost when a restart took the key that opened it."""
    member = ctx.require_member()
    draft = reports.get_draft(ctx.conn, member.id)
    if draft is None:
        return None, False
    if draft.updated_at < ctx.now - DRAFT_TTL:
        reports.delete_draft(ctx.conn, member.id)
        return None, False
    try:
        data = json.loads(crypto.aead_open(_draft_key(ctx), draft.data, _aad(member.id)))
    except crypto.CryptoError:
        reports.delete_draft(ctx.conn, member.id)
        return None, True
    return Flow(draft.purpose, draft.step, data), False


def _close(ctx: Context) -> None:
    member = ctx.require_member()
    reports.delete_draft(ctx.conn, member.id)
    ctx.end_flow()


def _no_draft(ctx: Context, lost: bool) -> None:
    ctx.end_flow()
    if lost:
        ctx.reply(
            ctx._(
                "Your unfinished report was lost when the bot restarted, and nothing of it was "
                "kept. Please start again with /report."
            )
        )
    else:
        ctx.reply(ctx._("There is no report in progress. Send /report to start one."))


def _remember_ref(ctx: Context, flow: Flow) -> None:
    """Note a typed message that carries report content, to delete it once stored."""
    if ctx.incoming.message_ref and not ctx.incoming.is_choice:
        refs = flow.data.setdefault("refs", [])
        if len(refs) < MAX_REFS:
            refs.append([ctx.incoming.transport, ctx.incoming.chat, ctx.incoming.message_ref])


# --- who reports for what ------------------------------------------------------------------


def _my_cases(ctx: Context) -> list[cases.Case]:
    member = ctx.require_member()
    return cases.member_cases(ctx.conn, member.id, "family")


def _require_private(ctx: Context) -> None:
    if not ctx.incoming.private:
        raise UserError(ctx._("Please send reports in a private chat with me, never in a group."))


def _require_cases(ctx: Context) -> list[cases.Case]:
    mine = _my_cases(ctx)
    if not mine:
        raise UserError(
            ctx._("You are not linked to a case yet. Ask the coordinator who invited you.")
        )
    return mine


def _my_case(ctx: Context, case_id: int | None) -> cases.Case | None:
    return next((c for c in _my_cases(ctx) if c.id == case_id), None)


# --- the sealing key -------------------------------------------------------------------------


def sealing_state(ctx: Context) -> tuple[str, bytes | None, str | None]:
    """("ok", public, key_id), or ("missing" | "mismatch", None, None).

    The key's fingerprint is pinned in the encrypted database on first use (and by `vigil keys
    sealing-new`): a keyslots.json altered on disk cannot redirect new reports to another key."""
    public = ctx.services.sealing_public
    if not public:
        return "missing", None, None
    key_id = crypto.key_fingerprint(public)
    pinned = reports.pinned_key(ctx.conn)
    if pinned is None:
        reports.pin_key(ctx.conn, key_id)
    elif pinned != key_id:
        return "mismatch", None, None
    return "ok", public, key_id


def _warn_key_problem(ctx: Context, case: cases.Case | None, reason: str) -> None:
    """Tell admins and the case's coordinators, at most once a day each."""
    day = int(ctx.now // DAY)
    targets = set(members.with_role(ctx.conn, ("admin",)))
    if case is not None:
        targets |= set(cases.coordinators_of(ctx.conn, case.id))
    for mid in sorted(targets):
        ctx.notify(
            mid,
            _key_warning_missing if reason == "missing" else _key_warning_mismatch,
            priority=Priority.ALERT,
            idem_key=f"sealkey:{reason}:{day}:to:{mid}",
        )
    log.warning("report refused: sealing key %s", reason)


def _key_warning_missing(_: Translator) -> str:
    return _(
        "A relative's report could not be stored: this network has no sealing key, so it was "
        "refused. An administrator must run `vigil keys sealing-new --out FILE` on the server, "
        "move FILE off the server, and restart Vigil."
    )


def _key_warning_mismatch(_: Translator) -> str:
    return _(
        "A relative's report was refused: the sealing key in keyslots.json is not the one this "
        "network recorded, so someone may have replaced it. Check the server. If you replaced "
        "the key yourself, run `vigil keys sealing-new` again and restart Vigil."
    )


def _refuse(ctx: Context, case: cases.Case | None, reason: str) -> None:
    _warn_key_problem(ctx, case, reason)
    ctx.reply(
        ctx._(
            "Your report cannot be stored safely right now, so it was not kept and not sent. "
            "The coordinators have been told. Please try again later. In an emergency, use "
            "/urgent or reach a coordinator directly."
        )
    )


# --- storing a report -----------------------------------------------------------------------


@dataclass
class Stored:
    report_id: int
    attachments: int
    skipped: int


def _seal_attachments(
    ctx: Context, report_id: int, attachments: tuple[Attachment, ...], public: bytes, key_id: str
) -> tuple[list[int], int]:
    """Seal each attachment that arrived with its bytes; returns (ids, how many were left out)."""
    ids: list[int] = []
    skipped = 0
    for att in attachments:
        if att.data is None or len(ids) >= ctx.services.max_attachments:
            skipped += 1
            continue
        kind = att.kind if att.kind in ("photo", "document") else "document"
        data, stripped = reports.strip_metadata(att.data, att.mime)
        name = re.sub(r"[\x00-\x1f/\\]", "_", att.name)[-100:] if att.name else ""
        aid = reports.add_attachment(ctx.conn, report_id, kind, key_id, ctx.now)
        envelope = reports.pack_attachment(
            data, name=name, mime=att.mime[:100], kind=kind, stripped=stripped
        )
        sealed = crypto.seal_to(public, envelope, reports.attachment_info(aid, report_id))
        reports.set_attachment_sealed(ctx.conn, aid, sealed)
        ids.append(aid)
    return ids, skipped


def store_report(
    ctx: Context,
    case: cases.Case,
    *,
    source: str,
    answers: dict[str, Any],
    attachments: tuple[Attachment, ...] = (),
    refs: list[list[str]] | None = None,
    urgent: bool = False,
    live: bool = True,
) -> Stored | None:
    """Seal and store one report; send the live copy; delete the carrying messages.
    None when the network cannot seal (the relative and the admins have been told)."""
    state, public, key_id = sealing_state(ctx)
    if state != "ok" or public is None or key_id is None:
        if not urgent:
            _refuse(ctx, case, state)
        else:
            _warn_key_problem(ctx, case, state)
        return None
    kind = answers.get("kind") if answers.get("kind") in reports.KINDS else None
    health = answers.get("health") if answers.get("health") in reports.HEALTH else None
    rid = reports.create(
        ctx.conn, case_id=case.id, source=source, kind=kind, health=health, urgent=urgent,
        key_id=key_id, now=ctx.now,
    )  # fmt: skip
    att_ids, skipped = _seal_attachments(ctx, rid, attachments, public, key_id)
    body = {
        "v": reports.BODY_VERSION,
        "report_id": rid,
        "case_id": case.id,
        "case_slug": case.slug,
        "source": source,
        "urgent": urgent,
        "received_at": datetime.fromtimestamp(ctx.now, UTC).isoformat(timespec="seconds"),
        "via": ctx.incoming.transport,
        "kind": kind,
        "contact_date": answers.get("date"),
        "health": health,
        "conditions": answers.get("conditions"),
        "needs": [n for n in answers.get("needs", []) if n in reports.NEEDS],
        "text": answers.get("text"),
        "attachment_ids": att_ids,
    }
    sealed = crypto.seal_to(
        public, json.dumps(body, ensure_ascii=False).encode(), reports.report_info(rid, case.id)
    )
    reports.set_sealed(ctx.conn, rid, sealed)
    cases.report_arrived(ctx.conn, case.id, ctx.now)
    if live:
        _send_live_copy(ctx, case, rid, body, len(att_ids))
    _delete_carriers(ctx, refs or [])
    log.info("report stored: report:%d case:%d", rid, case.id)
    return Stored(rid, len(att_ids), skipped)


def _send_live_copy(
    ctx: Context, case: cases.Case, rid: int, body: dict[str, Any], n_files: int
) -> None:
    def render(_: Translator) -> str:
        lines = [_("Report #{id} about {name}", id=rid, name=case.name)]
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
                    "Photos or documents: {n}, sealed. Open them offline with "
                    "`vigil reports export`.",
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

    for cid in cases.coordinators_of(ctx.conn, case.id):
        ctx.notify(cid, render, priority=Priority.ALERT, idem_key=f"report:{rid}:to:{cid}")


def _delete_carriers(ctx: Context, refs: list[list[str]]) -> None:
    """Ask the platform to delete the relative's messages that carried the report."""
    if not ctx.services.delete_reports:
        return
    targets = [tuple(r) for r in refs]
    if ctx.incoming.message_ref and not ctx.incoming.is_choice:
        targets.append((ctx.incoming.transport, ctx.incoming.chat, ctx.incoming.message_ref))
    seen = set()
    for transport, chat, ref in targets:
        if not ref or (transport, chat, ref) in seen:
            continue
        seen.add((transport, chat, ref))
        outbox.enqueue(
            ctx.conn,
            transport=transport,
            chat=chat,
            member_id=ctx.member.id if ctx.member else None,
            body={"kind": "delete", "ref": ref, "text": ""},
            priority=Priority.REPLY,
            now=ctx.now,
        )


def _thanks(ctx: Context, case: cases.Case, stored: Stored) -> str:
    lines = [
        ctx._(
            "Thank you. Your report about {name} is stored, sealed, and its coordinators have "
            "it (report #{id}).",
            name=case.name,
            id=stored.report_id,
        )
    ]
    if stored.skipped:
        lines.append(
            ctx._(
                "{n} file(s) could not be received (too large or too many; the limit is {mb} MB "
                "each) and were left out.",
                n=stored.skipped,
                mb=ctx.services.max_attachment_bytes // (1024 * 1024),
            )
        )
    return "\n".join(lines)


# --- /report -------------------------------------------------------------------------------


@registry.command(
    "report", roles=FAMILY, summary=N_("send news about your relative: /report [TEXT]"), order=20
)
def report(ctx: Context, args: str) -> None:
    _require_private(ctx)
    mine = _require_cases(ctx)
    state, _pub, _kid = sealing_state(ctx)
    if state != "ok":
        _refuse(ctx, mine[0] if len(mine) == 1 else None, state)
        return
    case, text = _split_slug(mine, args)
    atts = ctx.incoming.attachments
    if not text and not atts:
        _start_wizard(ctx, mine, case)
        return
    if case is None and len(mine) == 1:
        case = mine[0]
    answers = {"text": sanitize_free_text(text, MAX_TEXT) or None}
    if case is None:
        if atts:
            raise UserError(
                ctx._(
                    "You are linked to several cases. Please send the photo or document again "
                    "with /report SLUG as its caption, SLUG one of: {slugs}.",
                    slugs=", ".join(c.slug for c in mine),
                )
            )
        flow = Flow("line", "case", {"answers": answers, "refs": []})
        _remember_ref(ctx, flow)
        _save(ctx, flow)
        _prompt(ctx, flow)
        return
    stored = store_report(ctx, case, source="line", answers=answers, attachments=atts)
    if stored is not None:
        ctx.reply(_thanks(ctx, case, stored))


def _split_slug(mine: list[cases.Case], args: str) -> tuple[cases.Case | None, str]:
    """`/report SLUG TEXT` names one of the member's own cases; any other first word is text,
    so the answer never depends on whether someone else's case exists."""
    first, _, rest = args.strip().partition(" ")
    match = next((c for c in mine if c.slug == first.lower()), None)
    if match is not None:
        return match, rest.strip()
    return None, args.strip()


def _start_wizard(ctx: Context, mine: list[cases.Case], case: cases.Case | None) -> None:
    if case is None and len(mine) == 1:
        case = mine[0]
    flow = Flow(
        "wizard",
        "case" if case is None else "kind",
        {"case_id": case.id if case else None, "needs": [], "refs": []},
    )
    _save(ctx, flow)
    _prompt(
        ctx,
        flow,
        ctx._(
            "A new report. Only the coordinators of the case will read it; nothing is sent "
            "until the last step. Send /skip to leave a question out, /cancel to stop."
        ),
    )


# --- prompts --------------------------------------------------------------------------------


def _case_name(ctx: Context, flow: Flow) -> str:
    case = _my_case(ctx, flow.data.get("case_id"))
    return case.name if case else ""


def _choices(ctx: Context, flow: Flow) -> tuple[Choice, ...]:
    step = flow.step
    if step == "case":
        return tuple(Choice(c.name[:40], f"/r case {c.slug}") for c in _my_cases(ctx))
    if step == "kind":
        return tuple(Choice(ctx._(label), f"/r kind {k}") for k, label in KIND_LABELS.items())
    if step == "date":
        return (
            Choice(ctx._("Today"), "/r date today"),
            Choice(ctx._("Yesterday"), "/r date yesterday"),
            Choice(ctx._("Another date"), "/r date other"),
        )
    if step == "health":
        return tuple(Choice(ctx._(label), f"/r health {k}") for k, label in HEALTH_LABELS.items())
    if step == "needs":
        chosen = set(flow.data.get("needs", []))
        out = [
            Choice(("✓ " if k in chosen else "") + ctx._(label), f"/r need {k}")
            for k, label in NEED_LABELS.items()
        ]
        return (*out, Choice(ctx._("Done"), "/r need done"))
    if step in ("conditions", "text", "date_typed"):
        return (Choice(ctx._("Skip"), "/skip"),)
    if step == "files":
        return (Choice(ctx._("Send the report without a file"), "/skip"),)
    if step == "more":
        return (Choice(ctx._("Done"), "/r more done"),)
    return ()


def _question(ctx: Context, flow: Flow) -> str:
    name = _case_name(ctx, flow)
    step = flow.step
    if flow.purpose == "urgent" and step == "text":
        return ctx._(
            "What happened to {name}? Type it in one message: it goes to every coordinator of "
            "the case at once.",
            name=name,
        )
    if step == "case":
        if flow.purpose == "urgent":
            return ctx._("Which case is this emergency about?")
        return ctx._("Which case is this report about?")
    counter = ""
    if flow.purpose == "wizard" and step in WIZARD_STEPS:
        counter = ctx._("({n} of {total}) ", n=WIZARD_STEPS.index(step), total=7)
    questions = {
        "kind": ctx._("How did you get news of {name}?", name=name),
        "date": ctx._("When was it?"),
        "date_typed": ctx._("Type the date, for example 2026-09-20 or 20.09.2026."),
        "health": ctx._("How is {name}'s health?", name=name),
        "conditions": ctx._(
            "Anything about the conditions of detention: cell, food, treatment, visits? Type "
            "it, or press Skip."
        ),
        "needs": ctx._(
            "What does {name} need? Tap each that applies, then Done. You can also type them, "
            "for example: medicine, letters",
            name=name,
        ),
        "text": ctx._(
            "Anything else the coordinators should know? Type it in one message, or press Skip."
        ),
        "files": ctx._(
            "You can add a photo or a document (a letter, a court paper). Send it now, or "
            "send the report without one."
        ),
        "more": ctx._(
            "If you have more photos or documents for this report, send them now. Press Done "
            "when you have finished."
        ),
    }
    return counter + questions.get(step, "")


def _prompt(ctx: Context, flow: Flow, before: str | None = None) -> None:
    text = _question(ctx, flow)
    ctx.reply(f"{before}\n\n{text}" if before else text, _choices(ctx, flow))


def _reprompt(ctx: Context, flow: Flow, problem: str) -> None:
    _save(ctx, flow)  # re-attaches the draft when a command ended the conversation
    _prompt(ctx, flow, problem)


def _advance(ctx: Context, flow: Flow, note: str | None = None) -> None:
    current = "date" if flow.step == "date_typed" else flow.step
    flow.step = WIZARD_STEPS[WIZARD_STEPS.index(current) + 1]
    _save(ctx, flow)
    _prompt(ctx, flow, note)


def _match(ctx: Context, flow: Flow, text: str) -> str | None:
    """A typed or pressed answer to a choice step -> the choice's last word, or None."""
    t = text.strip().lower()
    if not t:
        return None
    for i, c in enumerate(_choices(ctx, flow), 1):
        word = c.value.rsplit(" ", 1)[-1]
        label = c.label.lower().removeprefix("✓ ").strip()
        if t in (c.value.lower(), word, label, str(i)):
            return word
    return None


# --- wizard steps ---------------------------------------------------------------------------


def _open(ctx: Context, nothing_open: str | None = None) -> Flow | None:
    """The member's open draft, noting this message for deletion; None once answered
    (a draft lost to a restart is explained, otherwise `nothing_open` is said)."""
    flow, lost = _load(ctx)
    if flow is None:
        if lost or nothing_open is None:
            _no_draft(ctx, lost)
        else:
            ctx.reply(nothing_open)
        return None
    _remember_ref(ctx, flow)
    return flow


@registry.flow(FLOW)
def on_text(ctx: Context, text: str) -> None:
    flow = _open(ctx)
    if flow is not None:
        _answer(ctx, flow, text)


@registry.command(
    "r",
    roles=FAMILY,
    summary=N_("answer a report question (buttons)"),
    order=98,
    keeps_flow=True,
    hidden=True,
)
def answer_button(ctx: Context, args: str) -> None:
    step, _, value = args.strip().partition(" ")
    closed = ctx._(
        "That button belongs to a report that is no longer open. Send /report to start a new one."
    )
    flow = _open(ctx, ctx._("Thank you.") if step == "more" else closed)
    if flow is None:
        return
    expected = "date" if flow.step == "date_typed" else flow.step
    if step != expected and not (step == "need" and flow.step == "needs"):
        _reprompt(ctx, flow, ctx._("That button belongs to an earlier question."))
        return
    _answer(ctx, flow, value)


@registry.command(
    "skip",
    roles=FAMILY,
    summary=N_("leave out a report question"),
    order=97,
    keeps_flow=True,
    hidden=True,
)
def skip(ctx: Context, args: str) -> None:
    flow = _open(ctx, ctx._("There is nothing to skip."))
    if flow is None:
        return
    step = flow.step
    if step == "case" or (flow.purpose == "urgent" and step == "text"):
        _reprompt(ctx, flow, ctx._("This question cannot be skipped."))
        return
    if step == "files":
        _finish_wizard(ctx, flow, ())
        return
    if step == "more":
        _close(ctx)
        ctx.reply(ctx._("Thank you."))
        return
    if step == "needs":
        _advance(ctx, flow)
        return
    flow.data[{"date_typed": "date"}.get(step, step)] = None
    _advance(ctx, flow)


def _answer(ctx: Context, flow: Flow, value: str) -> None:
    step = flow.step
    atts = ctx.incoming.attachments
    if flow.purpose == "more":
        _more(ctx, flow, value)
        return
    if atts and step not in ("text", "files"):
        _reprompt(
            ctx,
            flow,
            ctx._("Please answer this question first; you can add photos or documents at the end."),
        )
        return
    if step == "case":
        _answer_case(ctx, flow, value)
    elif flow.purpose == "urgent" and step == "text":
        text = sanitize_free_text(value, MAX_TEXT)
        if not text:
            _reprompt(ctx, flow, ctx._("Please type what happened."))
            return
        case = _my_case(ctx, flow.data.get("case_id"))
        if case is None:
            _close(ctx)
            raise UserError(ctx._("No case by that name was found, or you may not see it."))
        _close(ctx)
        _urgent(ctx, case, text, atts, flow.data.get("refs", []))
    elif step == "kind":
        _answer_choice(ctx, flow, value, "kind", reports.KINDS)
    elif step == "health":
        _answer_choice(ctx, flow, value, "health", reports.HEALTH)
    elif step in ("date", "date_typed"):
        _answer_date(ctx, flow, value)
    elif step == "needs":
        _answer_needs(ctx, flow, value)
    elif step == "conditions":
        text = sanitize_free_text(value, MAX_CONDITIONS)
        if not text:
            _reprompt(ctx, flow, ctx._("Please type it, or press Skip."))
            return
        flow.data["conditions"] = text
        _advance(ctx, flow)
    elif step == "text":
        text = sanitize_free_text(value, MAX_TEXT)
        if atts:
            flow.data["text"] = text or None
            _finish_wizard(ctx, flow, atts)
            return
        if not text:
            _reprompt(ctx, flow, ctx._("Please type it, or press Skip."))
            return
        flow.data["text"] = text
        _advance(ctx, flow)
    elif step == "files":
        if not atts:
            _reprompt(ctx, flow, ctx._("Please send a photo or a document, or send without."))
            return
        if all(a.data is None for a in atts):
            _reprompt(
                ctx,
                flow,
                ctx._(
                    "I could not receive that file: it may be too large (the limit is {mb} MB). "
                    "Try a smaller one, or send the report without it.",
                    mb=ctx.services.max_attachment_bytes // (1024 * 1024),
                ),
            )
            return
        _finish_wizard(ctx, flow, atts)
    else:
        _close(ctx)
        ctx.reply(ctx._("There is no report in progress. Send /report to start one."))


def _answer_case(ctx: Context, flow: Flow, value: str) -> None:
    picked = _match(ctx, flow, value)
    case = next((c for c in _my_cases(ctx) if c.slug == picked), None)
    if case is None:
        _reprompt(ctx, flow, ctx._("Please choose one of the cases below, or /cancel."))
        return
    flow.data["case_id"] = case.id
    if flow.purpose == "wizard":
        _advance(ctx, flow)
    elif flow.purpose == "urgent" and not flow.data.get("text"):
        flow.step = "text"
        _save(ctx, flow)
        _prompt(ctx, flow)
    elif flow.purpose == "urgent":
        _close(ctx)
        _urgent(ctx, case, flow.data["text"], (), flow.data.get("refs", []))
    else:  # a one-line report waiting for its case
        _close(ctx)
        stored = store_report(
            ctx, case, source="line", answers=flow.data.get("answers", {}),
            refs=flow.data.get("refs", []),
        )  # fmt: skip
        if stored is not None:
            ctx.reply(_thanks(ctx, case, stored))


def _answer_choice(
    ctx: Context, flow: Flow, value: str, key: str, allowed: tuple[str, ...]
) -> None:
    picked = _match(ctx, flow, value)
    if picked not in allowed:
        _reprompt(ctx, flow, ctx._("Please choose one of the answers below, or /skip."))
        return
    flow.data[key] = picked
    note = None
    if key == "health" and picked == "critical":
        note = ctx._(
            "If {name} is in danger right now, send /urgent followed by what happened: it "
            "reaches every coordinator of the case at once and is repeated until one answers.",
            name=_case_name(ctx, flow),
        )
    _advance(ctx, flow, note)


_DMY = re.compile(r"^(\d{1,2})\.(\d{1,2})\.(\d{4})$")
_YMD = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})$")


def _answer_date(ctx: Context, flow: Flow, value: str) -> None:
    today = datetime.fromtimestamp(ctx.now, zoneinfo.ZoneInfo(member_timezone(ctx))).date()
    word = value.strip().lower()
    if word in ("today", "yesterday", "other"):
        picked: str | None = word
    else:
        picked = _match(ctx, flow, value) if flow.step == "date" else None
    if picked == "today":
        flow.data["date"] = today.isoformat()
    elif picked == "yesterday":
        flow.data["date"] = (today - timedelta(days=1)).isoformat()
    elif picked == "other":
        flow.step = "date_typed"
        _save(ctx, flow)
        _prompt(ctx, flow)
        return
    else:
        typed = _parse_date(value.strip())
        if typed is None or typed > today + timedelta(days=1) or typed.year < 1990:
            _reprompt(
                ctx,
                flow,
                ctx._("I could not read that date. Type it like 2026-09-20 or 20.09.2026."),
            )
            return
        flow.data["date"] = typed.isoformat()
    _advance(ctx, flow)


def _parse_date(text: str) -> date | None:
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


def _answer_needs(ctx: Context, flow: Flow, value: str) -> None:
    picked = _match(ctx, flow, value)
    chosen: list[str] = list(flow.data.get("needs", []))
    if picked == "done":
        _advance(ctx, flow)
        return
    if picked in reports.NEEDS:
        if picked in chosen:
            chosen.remove(picked)
        else:
            chosen.append(picked)
        flow.data["needs"] = chosen
        _save(ctx, flow)
        _prompt(ctx, flow)
        return
    # A typed list: "medicine, letters"
    words = [w for w in re.split(r"[,\s;،，、؛၊]+", value.strip().lower()) if w]
    labels = {ctx._(label).lower(): k for k, label in NEED_LABELS.items()}
    found = [w if w in reports.NEEDS else labels.get(w) for w in words]
    if words and all(found):
        flow.data["needs"] = list(dict.fromkeys(f for f in found if f))
        _advance(ctx, flow)
        return
    _reprompt(ctx, flow, ctx._("Please tap the needs that apply, then Done."))


def _finish_wizard(ctx: Context, flow: Flow, atts: tuple[Attachment, ...]) -> None:
    case = _my_case(ctx, flow.data.get("case_id"))
    refs = flow.data.get("refs", [])
    _close(ctx)
    if case is None:
        raise UserError(ctx._("No case by that name was found, or you may not see it."))
    answers = {k: flow.data.get(k) for k in ("kind", "date", "health", "conditions", "text")}
    answers["needs"] = flow.data.get("needs", [])
    if not any(answers.values()) and not any(a.data for a in atts):
        ctx.reply(ctx._("Your report was empty, so nothing was sent. Send /report to start again."))
        return
    stored = store_report(ctx, case, source="wizard", answers=answers, attachments=atts, refs=refs)
    if stored is None:
        return
    more = Flow(
        "more",
        "more",
        {"report_id": stored.report_id, "case_id": case.id, "until": ctx.now + MORE_WINDOW},
    )
    _save(ctx, more)
    ctx.reply(_thanks(ctx, case, stored) + "\n\n" + _question(ctx, more), _choices(ctx, more))


def _more(ctx: Context, flow: Flow, value: str) -> None:
    """Photos that follow a stored report (a Telegram album arrives one photo at a time)."""
    atts = ctx.incoming.attachments
    if value.strip().lower() in ("done", "/r more done") and not atts:
        _close(ctx)
        ctx.reply(ctx._("Thank you."))
        return
    case = _my_case(ctx, flow.data.get("case_id"))
    rid = flow.data.get("report_id")
    if ctx.now > flow.data.get("until", 0) or case is None or not isinstance(rid, int):
        _close(ctx)
        ctx.reply(ctx._("Your last report is complete. To send new news, use /report."))
        return
    if not atts:
        _reprompt(ctx, flow, ctx._("Your report is already stored. To send new news, use /report."))
        return
    state, public, key_id = sealing_state(ctx)
    if state != "ok" or public is None or key_id is None:
        _close(ctx)
        _refuse(ctx, case, state)
        return
    ids, _skipped = _seal_attachments(ctx, rid, atts, public, key_id)
    _delete_carriers(ctx, [])
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
    flow.data["until"] = ctx.now + MORE_WINDOW
    _save(ctx, flow)
    note = (
        ctx._("Added to your report.")
        if ids
        else ctx._("I could not receive that file (too large?); nothing was added.")
    )
    _prompt(ctx, flow, note)


# --- /urgent -------------------------------------------------------------------------------


@registry.command(
    "urgent",
    roles=FAMILY,
    summary=N_("emergency: reaches every coordinator at once: /urgent TEXT"),
    order=21,
)
def urgent(ctx: Context, args: str) -> None:
    _require_private(ctx)
    mine = _require_cases(ctx)
    case, text = _split_slug(mine, args)
    if case is None and len(mine) == 1:
        case = mine[0]
    text = sanitize_free_text(text, MAX_TEXT)
    if case is not None and text:
        _urgent(ctx, case, text, ctx.incoming.attachments, [])
        return
    flow = Flow(
        "urgent",
        "case" if case is None else "text",
        {"case_id": case.id if case else None, "text": text or None, "refs": []},
    )
    _remember_ref(ctx, flow)
    _save(ctx, flow)
    _prompt(ctx, flow)


def _urgent(
    ctx: Context,
    case: cases.Case,
    text: str,
    atts: tuple[Attachment, ...],
    refs: list[list[str]],
) -> None:
    member = ctx.require_member()
    stored = store_report(
        ctx, case, source="urgent", answers={"text": text}, attachments=atts, refs=refs,
        urgent=True, live=False,
    )  # fmt: skip
    if stored is None:  # no sealing key: deliver, do not archive
        cases.report_arrived(ctx.conn, case.id, ctx.now)
        _delete_carriers(ctx, refs)
    aid = reports.create_alert(
        ctx.conn, case.id, stored.report_id if stored else None, member.id, ctx.now
    )
    n_files = stored.attachments if stored else 0

    def render(_: Translator) -> str:
        lines = [_("URGENT — {name} (alert #{id})", name=case.name, id=aid), "", text]
        if n_files:
            lines.append(_("Photos or documents: {n}, sealed in the archive.", n=n_files))
        lines += [
            "",
            _(
                "Send /ack {id} when you take this on: the relative and the other coordinators "
                "are told, and the alarm stops repeating.",
                id=aid,
            ),
        ]
        return "\n".join(lines)

    targets = cases.coordinators_of(ctx.conn, case.id)
    for cid in targets:
        ctx.notify(
            cid,
            render,
            priority=Priority.EMERGENCY,
            idem_key=f"urgent:{aid}:0:to:{cid}",
            choices=_ack_choice(aid),
        )
    ctx.audit("urgent.raised", f"alert:{aid}")
    if not targets:
        ctx.reply(
            ctx._(
                "Your message was stored, but no coordinator is registered to receive it yet. "
                "Please contact the people you know directly."
            )
        )
        return
    lines = [
        ctx._(
            "Your emergency message about {name} went to every coordinator of the case. You "
            "will hear here when one of them has seen it.",
            name=case.name,
        )
    ]
    if stored is None:
        lines.append(
            ctx._("It could not be archived (the network has no sealing key), but it was sent.")
        )
    ctx.reply("\n".join(lines))


def _ack_choice(aid: int) -> Callable[[Translator], tuple[Choice, ...]]:
    def choices(_: Translator) -> tuple[Choice, ...]:
        return (Choice(_("I'm on it"), f"/ack {aid}"),)

    return choices


@registry.command(
    "ack", roles=COORDINATORS, summary=N_("acknowledge an urgent alert: /ack ID"), order=44
)
def ack(ctx: Context, args: str) -> None:
    member = ctx.require_member()
    raw = args.strip().lstrip("#")
    alert_id = parse_id(raw)
    alert = reports.get_alert(ctx.conn, alert_id) if alert_id is not None else None
    case = cases.get(ctx.conn, alert.case_id) if alert else None
    if alert is None or case is None or not _may_handle(ctx, case):
        raise UserError(ctx._(ALERT_NOT_FOUND))
    if alert.acked_at is not None or not reports.ack_alert(ctx.conn, alert.id, member.id, ctx.now):
        ctx.reply(ctx._("Alert #{id} was already acknowledged.", id=alert.id))
        return
    reports.cancel_pending(ctx.conn, f"urgent:{alert.id}:r", ctx.now)
    for cid in cases.coordinators_of(ctx.conn, case.id):
        if cid == member.id:
            continue
        ctx.notify(
            cid,
            lambda _: _(
                "Alert #{id} about {name} was acknowledged by another coordinator.",
                id=alert.id,
                name=case.name,
            ),
            priority=Priority.ALERT,
            idem_key=f"urgent:{alert.id}:acked:to:{cid}",
        )
    if alert.reporter_id is not None:
        ctx.notify(
            alert.reporter_id,
            lambda _: _(
                "A coordinator has seen your emergency message about {name} and is on it.",
                name=case.name,
            ),
            priority=Priority.EMERGENCY,
            idem_key=f"urgent:{alert.id}:seen",
        )
        reports.forget_reporter(ctx.conn, alert.id)
    ctx.audit("urgent.acked", f"alert:{alert.id}")
    ctx.reply(
        ctx._(
            "Acknowledged alert #{id}. The relative and the other coordinators are told.",
            id=alert.id,
        )
    )


def _may_handle(ctx: Context, case: cases.Case) -> bool:
    member = ctx.member
    if member is None:
        return False
    return member.id in cases.coordinators_of(ctx.conn, case.id) or cases.may_coordinate(
        ctx.conn, case, member.id, member.role
    )


# --- /reports and /publish ------------------------------------------------------------------


@registry.command(
    "reports", roles=COORDINATORS, summary=N_("recent reports of a case: /reports SLUG"), order=42
)
def list_reports(ctx: Context, args: str) -> None:
    member = ctx.require_member()
    words = args.split()
    if words:
        scope = [coordinated_case(ctx, words[0].lower())]
    else:
        scope = cases.coordinated_by(ctx.conn, member.id, member.role)
    by_id = {c.id: c for c in scope}
    found = reports.recent(ctx.conn, list(by_id), LIST_LIMIT)
    alerts = reports.open_alerts(ctx.conn, list(by_id))
    ctx.audit("reports.listed", f"case:{scope[0].id}" if words else "cases:mine")
    lines = []
    for a in alerts:
        lines.append(
            ctx._(
                "Unacknowledged emergency about {name}: alert #{id}, {when}. /ack {id}",
                name=by_id[a.case_id].name,
                id=a.id,
                when=fmt_datetime(ctx, a.created_at),
            )
        )
    if not found:
        lines.append(ctx._("No reports yet."))
        ctx.reply("\n".join(lines))
        return
    title = (
        ctx._("Recent reports about {name}:", name=scope[0].name)
        if words
        else ctx._("Recent reports in your cases:")
    )
    lines += ([""] if lines else []) + [title]
    for r in found:
        parts = [f"#{r.id}", fmt_datetime(ctx, r.created_at)]
        if not words:
            parts.append(by_id[r.case_id].slug)
        if r.urgent:
            parts.append(ctx._("URGENT"))
        if r.kind:
            parts.append(ctx._(KIND_LABELS[r.kind]))
        if r.health:
            parts.append(ctx._("health: {level}", level=ctx._(HEALTH_LABELS[r.health])))
        if r.attachments:
            parts.append(ctx._("files: {n}", n=r.attachments))
        if r.published_update_id:
            parts.append(ctx._("published"))
        lines.append(" · ".join(parts))
    lines += [
        "",
        ctx._(
            "Report texts are sealed: read them in the copy you received when they arrived, or "
            "offline with `vigil reports export`. Publish with /publish ID TEXT."
        ),
    ]
    ctx.reply("\n".join(lines))


_HEAD = re.compile(r"^([A-Za-z]+(?:\+[A-Za-z]+)*):\s*(.*)$", re.S)


def parse_update_head(text: str) -> tuple[str, list[str], str]:
    """`[KIND[+FLAG...]:] TEXT` -> (kind, flags, text), the grammar /update uses too. A head
    that is not made of known kinds and flags is part of the text ("Note: ...")."""
    m = _HEAD.match(text.strip())
    if m:
        words = [w.lower() for w in m.group(1).split("+")]
        kinds = [w for w in words if w in cases.UPDATE_KINDS]
        flags = [w for w in words if w in cases.UPDATE_FLAGS and w not in kinds]
        if len(kinds) <= 1 and len(kinds) + len(flags) == len(words):
            return (kinds[0] if kinds else "general"), sorted(set(flags)), m.group(2).strip()
    return "general", [], text.strip()


@registry.command(
    "publish",
    roles=COORDINATORS,
    summary=N_("turn a reviewed report into a public update: /publish ID TEXT"),
    order=43,
)
def publish(ctx: Context, args: str) -> None:
    member = ctx.require_member()
    parts = args.strip().split(None, 1)
    report_id = parse_id(parts[0]) if parts else None
    if report_id is None:
        raise UserError(ctx._("Send /publish ID TEXT, with the report's number from /reports."))
    found = reports.get(ctx.conn, report_id)
    case = cases.get(ctx.conn, found.case_id) if found else None
    if (
        found is None
        or case is None
        or not cases.may_coordinate(ctx.conn, case, member.id, member.role)
    ):
        raise UserError(ctx._(REPORT_NOT_FOUND))
    if len(parts) < 2:
        raise UserError(
            ctx._(
                "Write the public text yourself: /publish {id} TEXT. The server cannot open "
                "stored reports; use the copy you received and leave out anything that could "
                "expose the family. TEXT may start with a kind, e.g. health: or transfer:",
                id=found.id,
            )
        )
    kind, flags, text = parse_update_head(parts[1])
    text = clean_text(ctx, text, label=ctx._("update"), most=MAX_PUBLIC_TEXT, multiline=True)
    update_id = cases.add_update(
        ctx.conn, case.id, text, now=ctx.now, kind=kind, author_id=member.id,
        report_id=found.id, flags=flags,
    )  # fmt: skip
    reports.mark_published(ctx.conn, found.id, update_id)
    ctx.audit("report.published", f"report:{found.id}:update:{update_id}")
    hook = registry.hooks.get("case_update_published")
    if hook is not None:
        hook(ctx, case.id, update_id)  # type: ignore[call-arg, arg-type]
    lines = [
        ctx._(
            "Published on the case card of {name} (update #{uid}).", name=case.name, uid=update_id
        )
    ]
    if hook is not None:
        lines.append(ctx._("The case's followers are being alerted."))
    if case.visibility == "restricted":
        lines.append(
            ctx._("Note: the case is restricted, so only people who may see it will see this.")
        )
    ctx.reply("\n".join(lines))


# --- periodic work: urgent re-sends, check-ins, scrubbing ------------------------------------


def resend_interval(sends: int) -> float:
    """Seconds to wait after the `sends`-th delivery of an unacknowledged alert."""
    if sends < 4:
        return 10 * 60
    if sends < 6:
        return 30 * 60
    return 60 * 60


def resend_unacked(conn: Connection, now: float) -> int:
    """Re-send every unacknowledged urgent alert that is due; returns outbox rows written.
    Re-sends carry no report text (the server keeps none): they point to the first message."""
    written = 0
    for alert in reports.open_alerts(conn):
        case = cases.get(conn, alert.case_id)
        if case is None:
            continue
        coordinators = cases.coordinators_of(conn, case.id)
        if now - alert.created_at >= URGENT_MAX_AGE:
            reports.expire_alert(conn, alert.id, now)
            targets = sorted(set(coordinators) | set(members.with_role(conn, ("admin",))))
            for mid in targets:
                written += notify_member(
                    conn,
                    mid,
                    _expired_text(alert.id, case.name),
                    now=now,
                    priority=Priority.ALERT,
                    idem_key=f"urgent:{alert.id}:expired:to:{mid}",
                )
            continue
        if now < alert.last_sent_at + resend_interval(alert.sends):
            continue
        for cid in coordinators:
            written += notify_member(
                conn,
                cid,
                _reminder_text(alert.id, case.name, alert.created_at, now),
                now=now,
                priority=Priority.EMERGENCY,
                idem_key=f"urgent:{alert.id}:r{alert.sends}:to:{cid}",
                choices=_ack_choice(alert.id),
            )
        reports.mark_alert_sent(conn, alert.id, now)
    return written


def _reminder_text(aid: int, name: str, created: float, now: float) -> Callable[[Translator], str]:
    minutes = max(1, int((now - created) // 60))

    def render(_: Translator) -> str:
        return _(
            "Still unacknowledged: URGENT alert #{id} about {name}, sent {minutes} minutes ago. "
            "The first message has the details. Send /ack {id} when you take it on.",
            id=aid,
            name=name,
            minutes=minutes,
        )

    return render


def _expired_text(aid: int, name: str) -> Callable[[Translator], str]:
    def render(_: Translator) -> str:
        return _(
            "URGENT alert #{id} about {name} was never acknowledged in three days; it is no "
            "longer repeated. Please check on the family now.",
            id=aid,
            name=name,
        )

    return render


def checkin_due(conn: Connection, now: float) -> int:
    """Cases silent for their check-in interval: tell the coordinators, gently ask the
    relatives, once per silence period. Returns outbox rows written."""
    written = 0
    for case in cases.checkin_cases(conn):
        anchor = case.last_report_at or case.created_at
        period = case.checkin_days * DAY
        round_ = int((now - anchor) // period)
        if round_ < 1 or round_ <= case.checkin_round:
            continue
        days = int((now - anchor) // DAY)
        key = f"checkin:{case.id}:{int(anchor)}:{round_}"
        family = cases.family_of(conn, case.id)
        for cid in cases.coordinators_of(conn, case.id):
            written += notify_member(
                conn, cid, _checkin_coordinator(case, days, bool(family)), now=now,
                priority=Priority.ALERT, idem_key=f"{key}:c{cid}",
            )  # fmt: skip
        for fid in family:
            written += notify_member(
                conn, fid, _checkin_family(case), now=now, priority=Priority.BULK,
                idem_key=f"{key}:f{fid}", choices=_checkin_choice(case.slug),
            )  # fmt: skip
        cases.set_checkin_round(conn, case.id, round_)
    return written


def _checkin_coordinator(case: cases.Case, days: int, has_family: bool) -> Callable[..., str]:
    def render(_: Translator) -> str:
        text = _(
            "No news about {name} for {days} days (check-in every {n} days). Silence is how "
            "cases go cold: please check on the family and the case. /case {slug}",
            name=case.name,
            days=days,
            n=case.checkin_days,
            slug=case.slug,
        )
        if has_family:
            return text + "\n" + _("The relatives got one gentle reminder.")
        return (
            text
            + "\n"
            + _("No relative is linked to this case: /invite family {slug}", slug=case.slug)
        )

    return render


def _checkin_family(case: cases.Case) -> Callable[[Translator], str]:
    def render(_: Translator) -> str:
        return _(
            "Any news from {name}? If you have visited, called or received a letter, you can "
            "tell us with /report. If there is nothing new, there is no need to answer. We "
            "have not forgotten {name}.",
            name=case.name,
        )

    return render


def _checkin_choice(slug: str) -> Callable[[Translator], tuple[Choice, ...]]:
    def choices(_: Translator) -> tuple[Choice, ...]:
        return (Choice(_("Send news"), f"/report {slug}"),)

    return choices


def minute_job(conn: Connection, now: float) -> int:
    """Every minute: urgent re-sends, blanking delivered live copies, dropping old drafts."""
    written = resend_unacked(conn, now)
    reports.scrub_live_copies(conn)
    reports.purge_drafts(conn, now - DRAFT_TTL)
    return written


_SCHEDULERS: weakref.WeakSet[Any] = weakref.WeakSet()


def register_jobs(scheduler: Any, db: Any = None, clock: Callable[[], float] | None = None) -> None:
    """Add the reports' periodic jobs to a scheduler (before its start). Registered in
    `bot.scheduler.REGISTRARS` at import, so the App needs no call; a second call for the same
    scheduler is ignored (APScheduler refuses duplicate job ids)."""
    if scheduler in _SCHEDULERS:
        return
    _SCHEDULERS.add(scheduler)
    if hasattr(scheduler, "every_db"):
        scheduler.every_db("reports-urgent", minute_job, 60)
        scheduler.every_db("reports-checkin", checkin_due, 15 * 60)
        return
    now = clock or scheduler.clock
    database = db or scheduler.db

    def periodic(fn: Callable[[Connection, float], int]) -> Callable[[], Any]:
        async def job() -> None:
            if await database.run(fn, now()):
                scheduler.wake()

        return job

    scheduler.every("reports-urgent", periodic(minute_job), 60)
    scheduler.every("reports-checkin", periodic(checkin_due), 15 * 60)


def upcoming(conn: Connection) -> list[tuple[str, str]]:
    """Next check-ins and urgent re-sends for `vigil status` (ids only)."""
    out = []
    for case in cases.checkin_cases(conn):
        anchor = case.last_report_at or case.created_at
        due = anchor + (case.checkin_round + 1) * case.checkin_days * DAY
        out.append((_utc(due), f"check-in case:{case.id}"))
    for alert in reports.open_alerts(conn):
        due = alert.last_sent_at + resend_interval(alert.sends)
        out.append((_utc(due), f"urgent re-send alert:{alert.id}"))
    return sorted(out)[:5]


def _utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%MZ")


def _register_with_scheduler() -> None:
    from bot import scheduler

    if upcoming not in scheduler.UPCOMING:
        scheduler.UPCOMING.append(upcoming)
    registrars = getattr(scheduler, "REGISTRARS", None)
    if registrars is not None and register_jobs not in registrars:
        registrars.append(register_jobs)


_register_with_scheduler()
