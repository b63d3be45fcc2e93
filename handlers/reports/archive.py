"""The sealed archive: the sealing key's state, storing a report, and its live copy.

Each report body (JSON of every answer and the free text) and each attachment is HPKE-sealed
to the network's sealing public key before the transaction commits; the server never stores
report words in plaintext and cannot open the archive. No reporter id is stored with a report.
Without a usable sealing key reports are refused and nothing is kept or forwarded.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bot.context import Context
from bot.i18n import Translator
from bot.messages import Attachment, Priority
from bot.notify import private
from handlers.reports.render import live_copy, report_notice
from storage import cases, crypto, members, outbox, reports

log = logging.getLogger(__name__)

DAY = 86400.0


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


def warn_key_problem(ctx: Context, case: cases.Case | None, reason: str) -> None:
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
        "refused. An administrator must run `vigil keys sealing-new --out sealing.key` on an "
        "offline computer (never on the server), then copy only sealing.key.pub here and run "
        "`vigil keys sealing-import sealing.key.pub` on the server, and restart Vigil."
    )


def _key_warning_mismatch(_: Translator) -> str:
    return _(
        "A relative's report was refused: the sealing key in keyslots.json is not the one this "
        "network recorded, so someone may have replaced it. Check the server. If you replaced "
        "the key yourself, run `vigil keys sealing-import --replace sealing.key.pub` on the "
        "server with the public key of your new key pair, and restart Vigil."
    )


def refuse(ctx: Context, case: cases.Case | None, reason: str) -> None:
    warn_key_problem(ctx, case, reason)
    ctx.reply(
        ctx._(
            "Your report cannot be stored safely right now, so it was not kept and not sent. "
            "The coordinators have been told. Please try again later. In an emergency, use "
            "/urgent or reach a coordinator directly."
        )
    )


@dataclass
class Stored:
    report_id: int
    attachments: int
    skipped: int


def seal_attachments(
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
            refuse(ctx, case, state)
        else:
            warn_key_problem(ctx, case, state)
        return None
    kind = answers.get("kind") if answers.get("kind") in reports.KINDS else None
    health = answers.get("health") if answers.get("health") in reports.HEALTH else None
    rid = reports.create(
        ctx.conn, case_id=case.id, source=source, kind=kind, health=health, urgent=urgent,
        key_id=key_id, now=ctx.now,
    )  # fmt: skip
    att_ids, skipped = seal_attachments(ctx, rid, attachments, public, key_id)
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
    delete_carriers(ctx, refs or [])
    log.info("report stored: report:%d case:%d", rid, case.id)
    return Stored(rid, len(att_ids), skipped)


def _send_live_copy(
    ctx: Context, case: cases.Case, rid: int, body: dict[str, Any], n_files: int
) -> None:
    """The coordinators' copy. Content that came over an end-to-end transport goes only over
    one; a coordinator without it gets a content-free notice (bot/notify.py)."""
    origin = ctx.incoming.transport
    weak = not private(ctx.services.transports, origin)

    def render(_: Translator) -> str:
        return live_copy(_, case, rid, body, n_files, weak_channel=weak)

    def notice(_: Translator) -> str:
        return report_notice(_, case, rid)

    for cid in cases.coordinators_of(ctx.conn, case.id):
        ctx.notify(
            cid, render, priority=Priority.ALERT, idem_key=f"report:{rid}:to:{cid}",
            sensitivity=outbox.REPORT, origin=origin, notice=notice,
        )  # fmt: skip


def delete_carriers(ctx: Context, refs: list[list[str]]) -> None:
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
            sensitivity=outbox.REPORT,  # its time and chat would name the reporter
        )
