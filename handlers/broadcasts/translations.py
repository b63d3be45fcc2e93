"""/translate ID LANG TEXT: one broadcast, each recipient in their language (issue 18 item 1)."""

from __future__ import annotations

from bot.context import COORDINATORS, Context, UserError, parse_id
from bot.i18n import N_, find_language, language_name
from handlers.broadcasts.commands import MAX_BROADCAST_CHARS, commands
from handlers.broadcasts.progress import DRAFT_TTL
from handlers.common import clean_text
from storage import approvals, audience, broadcasts
from storage.broadcasts import Broadcast


def _own_draft(ctx: Context, word: str) -> Broadcast:
    """The author's unsent draft; any other broadcast gets the answer of one that does not
    exist, so a coordinator learns nothing of others' drafts."""
    member = ctx.require_member()
    wanted = parse_id(word)
    b = broadcasts.get(ctx.conn, wanted) if wanted is not None else None
    if (
        b is None
        or b.author_id != member.id
        or b.kind != "broadcast"
        or b.state != broadcasts.DRAFT
        or b.created_at < ctx.now - DRAFT_TTL
    ):
        raise UserError(ctx._("There is no broadcast of yours waiting to be sent."))
    if approvals.pending_for_subject(ctx.conn, f"broadcast:{b.id}") is not None:
        # The approvers saw one text; a translation added now would go out unseen.
        raise UserError(
            ctx._(
                "Broadcast #{id} is waiting for a second person, so its text can no longer "
                "change. To change it, /cancel {id} and write it again.",
                id=b.id,
            )
        )
    return b


def coverage(ctx: Context, b: Broadcast, by_language: dict[str, int] | None = None) -> str:
    """How many get which text: the preview line that shows what translations are missing.
    `by_language`: the audience's languages when the caller has counted them already."""
    if by_language is None:
        by_language = audience.languages(
            ctx.conn, b.segment, ctx.services.default_language, reach_open=b.public
        )
    have = set(b.body.get("translations", {}))
    parts = [
        ctx._.plural(
            "{language}: {n} person", "{language}: {n} people", n, language=language_name(lang)
        )
        for lang, n in sorted(by_language.items(), key=lambda kv: (-kv[1], kv[0]))
        if lang in have
    ]
    fallback = sum(n for lang, n in by_language.items() if lang not in have)
    parts.append(
        ctx._.plural("the original text: {n} person", "the original text: {n} people", fallback)
    )
    return ctx._("Who gets which text: {parts}.", parts="; ".join(parts))


@commands.command(
    "translate",
    roles=COORDINATORS,
    summary=N_("add a language to your broadcast draft: /translate ID LANG TEXT"),
    order=62,
)
def translate(ctx: Context, args: str) -> None:
    usage = ctx._(
        "Send /translate ID LANG TEXT before /confirm: members who read LANG get TEXT instead "
        "of the original, for example /translate 12 ru Пикет в субботу в 12:00."
    )
    word, _, rest = args.strip().partition(" ")
    lang_word, _, text = rest.strip().partition(" ")
    if not word or not lang_word or not text.strip():
        raise UserError(usage)
    b = _own_draft(ctx, word)
    language = find_language(lang_word)
    if language is None:
        raise UserError(ctx._("I don't know the language {word}.", word=lang_word[:20]))
    # The same checks as the original (length, control characters, invisible marks).
    text = clean_text(ctx, text, label=ctx._("broadcast"), most=MAX_BROADCAST_CHARS, multiline=True)
    broadcasts.set_translation(ctx.conn, b.id, language, text)
    ctx.audit("broadcast.translated", f"broadcast:{b.id}")
    fresh = broadcasts.get(ctx.conn, b.id)
    assert fresh is not None
    ctx.reply(
        ctx._(
            "Broadcast #{id}: text added for {language}.", id=b.id, language=language_name(language)
        )
        + "\n"
        + coverage(ctx, fresh)
        + "\n"
        + ctx._("Send /confirm {id} to send it, or /cancel {id} to drop it.", id=b.id)
    )
