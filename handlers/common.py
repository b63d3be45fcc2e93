"""What several capabilities share: text checks, who may see or coordinate a case, zones,
role names, confirmation phrases, and the one sentence for "not found or not allowed"."""

from __future__ import annotations

import functools
import re
import unicodedata
import zoneinfo
from datetime import datetime
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel.dates import format_date, format_time

from bot.capability import may_use
from bot.context import Context, UserError
from bot.i18n import N_, Translator
from storage import cases

NOT_FOUND = N_("No case by that name was found, or you may not see it.")


_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


_JOINERS = frozenset("\u200c\u200d")  # ZWNJ is needed in Persian and Kurdish, ZWJ in emoji


_ALLOWED_FORMAT = _JOINERS | frozenset("\u200e\u200f\u061c")  # LRM, RLM, ALM marks


_INVISIBLE_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")


def _bad_char(text: str, i: int, multiline: bool) -> bool:
    ch = text[i]
    if ch == "\n":
        return not multiline
    cat = unicodedata.category(ch)
    if ch in _INVISIBLE_LETTERS or cat in ("Cc", "Cs", "Co", "Zl", "Zp"):
        return True
    if cat != "Cf":
        return False
    if 0xE0020 <= ord(ch) <= 0xE007F:  # tag characters: only inside emoji flag sequences
        return i == 0 or unicodedata.category(text[i - 1]) not in ("So", "Cf")
    if ch not in _ALLOWED_FORMAT:
        return True  # zero-width space, BOM, word joiner, direction overrides and isolates, ...
    if ch in _JOINERS:  # a joiner must sit between two visible characters
        if i == 0 or i == len(text) - 1:
            return True
        return any(n.isspace() or n in _JOINERS for n in (text[i - 1], text[i + 1]))
    return False


def has_hostile_chars(text: str, *, multiline: bool) -> bool:
    return any(_bad_char(text, i, multiline) for i in range(len(text)))


def clean_text(ctx: Context, value: str, *, label: str, most: int, multiline: bool) -> str:
    """A coordinator's text, normalised (NFC, trimmed), or a UserError saying what is wrong."""
    text = unicodedata.normalize("NFC", value).replace("\r\n", "\n").strip()
    if len(text) > most:
        raise UserError(
            ctx._("The {field} is too long: at most {n} characters.", field=label, n=most)
        )
    if has_hostile_chars(text, multiline=multiline):
        if not multiline and "\n" in text:
            raise UserError(ctx._("The {field} must fit on one line.", field=label))
        raise UserError(
            ctx._(
                "The {field} contains invisible or control characters (such as direction "
                "overrides or zero-width spaces). Please type it again without them.",
                field=label,
            )
        )
    lines = [" ".join(line.split()) for line in text.split("\n")]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    if not text:
        raise UserError(ctx._("The {field} cannot be empty.", field=label))
    return text


def sanitize_free_text(value: str, most: int) -> str:
    """A relative's words: kept as written, minus characters that could disguise how the text
    reads to a coordinator (direction overrides, controls). Never refused: they are in distress."""
    text = unicodedata.normalize("NFC", value).replace("\r\n", "\n")
    out = []
    for ch in text:
        if ch in "\n\t":
            out.append(ch)
            continue
        cat = unicodedata.category(ch)
        if ch in _BIDI_CONTROLS or cat in ("Cc", "Cs", "Zl", "Zp") or ch in "\u200b\ufeff\u2060":
            continue
        out.append(ch)
    return "".join(out).strip()[:most]


def visible_case(ctx: Context, slug: str) -> cases.Case:
    """The case if this member may see it; one answer for missing and forbidden. Besides the
    slug, the case's name or a part of it that only one case has (`Nasrin`, `насрин`) will do,
    searched among the cases this member may see, so a name says nothing of a hidden case."""
    member_id = ctx.member.id if ctx.member else None
    role = ctx.member.role if ctx.member else None
    case = cases.by_slug(ctx.conn, slug[:64]) if slug else None
    if case is None or not cases.can_see(ctx.conn, case, member_id, role):
        case = _case_by_name(cases.visible_to(ctx.conn, member_id, role), slug)
    if case is None:
        raise UserError(ctx._(NOT_FOUND))
    return case


def _case_by_name(candidates: list[cases.Case], typed: str) -> cases.Case | None:
    said = normalize_phrase(typed[:64])
    if len(said) < 3:
        return None  # two letters match too much to mean one case
    exact = [c for c in candidates if normalize_phrase(c.name) == said]
    if len(exact) == 1:
        return exact[0]
    partial = [c for c in candidates if said in f"{normalize_phrase(c.name)} {c.slug}"]
    return partial[0] if len(partial) == 1 else None


def coordinated_case(ctx: Context, slug: str) -> cases.Case:
    """The case if this member may coordinate it; the same answer as `visible_case` otherwise."""
    case = visible_case(ctx, slug)
    member = ctx.member
    if member is None or not cases.may_coordinate(ctx.conn, case, member.id, member.role):
        raise UserError(ctx._(NOT_FOUND))
    return case


def member_timezone(ctx: Context) -> str:
    tz = (ctx.member.timezone if ctx.member else None) or ctx.services.default_timezone
    try:
        zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return "UTC"
    return tz


def fmt_date(ctx: Context, ts: float) -> str:
    local = datetime.fromtimestamp(ts, zoneinfo.ZoneInfo(member_timezone(ctx)))
    return format_date(local.date(), format="medium", locale=ctx._.locale)


def fmt_datetime(ctx: Context, ts: float) -> str:
    """Date and minutes in the reader's time zone, with the zone named."""
    tz = member_timezone(ctx)
    local = datetime.fromtimestamp(ts, zoneinfo.ZoneInfo(tz))
    day = format_date(local.date(), format="medium", locale=ctx._.locale)
    clock = format_time(local.time(), format="short", locale=ctx._.locale)
    return f"{day}, {clock} ({tz})"


def command_hint(ctx: Context, name: str) -> bool:
    cmd = ctx.registry.commands.get(name) if ctx.registry else None
    return cmd is not None and may_use(cmd, ctx.member)


@functools.lru_cache(maxsize=1024)
def safe_zone(name: str | None) -> str:
    """A zone name to show and compute with: `name` if it exists, else UTC."""
    try:
        ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return "UTC"
    return name or "UTC"


def valid_zone(name: str) -> str | None:
    wanted = name[:64].lower()
    return next((z for z in all_zones() if z.lower() == wanted), None)


@lru_cache(maxsize=512)
def zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


@functools.cache
def all_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


@functools.cache
def _zone_words() -> dict[str, str]:
    """Every way to name a zone: its id (`Europe/Minsk`), its city (`Minsk`, `New York`) and the
    city in each shipped language from CLDR (`Минск`, `مینسک`). The first zone in id order wins
    a shared name (aliases such as `America/Indianapolis` name the same clock)."""
    from babel import Locale

    from bot.i18n import available_languages

    zones = sorted(all_zones())
    found: dict[str, str] = {}
    for zone in zones:
        for word in (zone, zone.rsplit("/", 1)[-1].replace("_", " ")):
            found.setdefault(normalize_phrase(word), zone)
    known = set(zones)
    for lang in ("en", *available_languages()):
        for zone, names in sorted(Locale.parse(lang).time_zones.items()):
            city = names.get("city")
            if city and zone in known:
                found.setdefault(normalize_phrase(city), zone)
    return found


def find_zone(text: str) -> str | None:
    """The zone someone means by `Europe/Minsk`, `minsk` or `Минск`; None if nothing fits."""
    key = normalize_phrase(text[:64])
    return _zone_words().get(key) if key else None


ROLE_RANK = {"activist": 0, "family": 1, "coordinator": 2, "admin": 3}


def role_name(ctx: Context, role: str) -> str:
    return role_label(ctx._, role)


def count_people(tr: Translator, n: int) -> str:
    """ "1 person", "5 people": a count of people inside a longer sentence, in the reader's
    plural forms (three in Russian, six in Arabic)."""
    return tr.plural("{n} person", "{n} people", n)


def role_label(tr: Translator, role: str) -> str:
    """The role in the reader's words; `tr` for a text that goes to someone else."""
    names = {
        "activist": tr("supporter"),
        "family": tr("relative"),
        "coordinator": tr("coordinator"),
        "admin": tr("administrator"),
    }
    return names.get(role, role)


def normalize_phrase(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    kept = "".join(ch if ch.isalnum() else " " for ch in text)
    return " ".join(kept.split())


def phrase_matches(ctx: Context, text: str, phrase: str) -> bool:
    said = normalize_phrase(text)
    return bool(said) and said in {normalize_phrase(phrase), normalize_phrase(ctx._(phrase))}
