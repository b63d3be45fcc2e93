"""What relatives and coordinators do with reports: /report, /reports, /publish.

/publish is the review gate: the server cannot open sealed bodies, so the coordinator writes the
public text (from the live copy, leaving out anything private); that review is the only way
family content reaches supporters.
"""

from __future__ import annotations

import re

from bot.capability import Commands
from bot.context import COORDINATORS, FAMILY, Context, UserError, parse_id
from bot.i18n import N_
from handlers.common import clean_text, coordinated_case, fmt_datetime, sanitize_free_text
from handlers.reports import archive
from handlers.reports.family import require_cases, require_private, split_slug
from handlers.reports.render import HEALTH_LABELS, KIND_LABELS, REPORT_NOT_FOUND, thanks
from handlers.reports.wizard import LINE, MAX_TEXT, remember_ref, start_wizard
from handlers.subscriptions import on_case_update_published
from storage import cases, reports

commands = Commands()

LIST_LIMIT = 15
MAX_PUBLIC_TEXT = 3500  # as /update


@commands.command(
    "report", roles=FAMILY, summary=N_("send news about your relative: /report [TEXT]"), order=20
)
def report(ctx: Context, args: str) -> None:
    require_private(ctx)
    mine = require_cases(ctx)
    state, _pub, _kid = archive.sealing_state(ctx)
    if state != "ok":
        archive.refuse(ctx, mine[0] if len(mine) == 1 else None, state)
        return
    case, text = split_slug(mine, args)
    atts = ctx.incoming.attachments
    if not text and not atts:
        start_wizard(ctx, case)
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
        fc = ctx.start_flow(LINE, {"answers": answers, "refs": []})
        remember_ref(fc)
        fc.save()
        return
    stored = archive.store_report(ctx, case, source="line", answers=answers, attachments=atts)
    if stored is not None:
        ctx.reply(thanks(ctx, case, stored.report_id, stored.skipped))


@commands.command(
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


@commands.command(
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
    on_case_update_published(ctx, case.id, update_id)
    lines = [
        ctx._(
            "Published on the case card of {name} (update #{uid}).", name=case.name, uid=update_id
        )
    ]
    lines.append(ctx._("The case's followers are being alerted."))
    if case.visibility == "restricted":
        lines.append(
            ctx._("Note: the case is restricted, so only people who may see it will see this.")
        )
    ctx.reply("\n".join(lines))
