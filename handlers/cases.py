"""Cases: /cases, /case SLUG (the ten-second case card), /newcase and /editcase.

Who sees what: public cases are visible to anyone; restricted ones to coordinators, admins and
members tied to the case (its relatives, assigned coordinators). Every answer for a case the
member may not see is the same sentence as for a case that does not exist.

Who edits: admins and the coordinators assigned to the case (`storage.cases.may_coordinate`);
`/newcase` assigns its creator, admins add or drop others with /assign and /unassign
(handlers/admin.py). A case nobody coordinates belongs to the admins alone. A new case starts
*restricted*: a family may not
want publicity, so making a case public is a deliberate `/editcase SLUG visibility public`.

Input from coordinators is checked, not repaired: invisible or control characters (direction
overrides, zero-width spaces, C0/C1 controls) and over-long values are refused with one clear
sentence, and nothing is changed.
"""

from __future__ import annotations

import re
import unicodedata
import zoneinfo
from datetime import UTC, date, datetime, timedelta

from bot.capability import Capability, Commands
from bot.context import ANYONE, COORDINATORS, Context, UserError
from bot.i18n import N_
from bot.messages import Choice
from handlers import transfers
from handlers.actions import on_case_hearing_set
from handlers.common import (
    clean_text,
    command_hint,
    coordinated_case,
    fmt_date,
    fmt_datetime,
    has_hostile_chars,
    member_timezone,
    visible_case,
)
from storage import cases

commands = Commands()

SLUG_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?$")
RESERVED_SLUGS = frozenset({"all", "none", "new", "help", "-"})

STATUS_LABELS = {
    "detained": N_("detained"),
    "awaiting_trial": N_("awaiting trial"),
    "sentenced": N_("sentenced"),
    "transferred": N_("transferred"),
    "missing": N_("missing (whereabouts unknown)"),
    "released": N_("released"),
}

# /editcase field names (English, stable across languages) -> canonical field.
FIELD_ALIASES = {
    "name": "name",
    "country": "country",
    "detained_since": "detained_since",
    "detained": "detained_since",
    "charges": "charges",
    "facility": "facility",
    "prison": "facility",
    "status": "status",
    "next_hearing": "next_hearing",
    "hearing": "next_hearing",
    "letters_address": "letters_address",
    "letters": "letters_address",
    "address": "letters_address",
    "summary": "summary",
    "visibility": "visibility",
    "tags": "tags",
    "help": "help",
    "how_to_help": "help",
    "checkin_days": "checkin_days",
    "checkin": "checkin_days",
}
FIELD_ORDER = (
    "name", "country", "detained_since", "charges", "facility", "status", "next_hearing",
    "letters_address", "summary", "visibility", "tags", "help", "checkin_days",
)  # fmt: skip
FIELD_LABELS = {
    "name": N_("name"),
    "country": N_("country"),
    "detained_since": N_("detained since"),
    "charges": N_("charges"),
    "facility": N_("facility"),
    "status": N_("status"),
    "next_hearing": N_("next hearing"),
    "letters_address": N_("letters address"),
    "summary": N_("summary"),
    "visibility": N_("visibility"),
    "tags": N_("tags"),
    "help": N_("how to help"),
    "checkin_days": N_("check-in interval"),
}
# (multi-line?, most characters) for free-text fields.
TEXT_FIELDS = {
    "name": (False, 120),
    "country": (False, 60),
    "charges": (True, 1000),
    "facility": (False, 200),
    "letters_address": (True, 500),
    "summary": (True, 2000),
    "help": (True, 1000),
}
MAX_TAGS = 10
TAG_RE = re.compile(r"^[\w-]{1,30}$")
CLEAR = "-"

# --- text checks -----------------------------------------------------------------------------


# --- who may see and edit ----------------------------------------------------------------------


def status_label(ctx: Context, status: str) -> str:
    return ctx._(STATUS_LABELS.get(status, status))


# --- /cases and /case --------------------------------------------------------------------------

MAX_LISTED = 50
OFFERED_CASES = 10  # /case without a name: a menu; /cases lists them all


@commands.command("cases", roles=ANYONE, summary=N_("the cases you can follow"), order=10)
def list_cases(ctx: Context, args: str) -> None:
    member_id = ctx.member.id if ctx.member else None
    role = ctx.member.role if ctx.member else None
    found = cases.visible_to(ctx.conn, member_id, role)
    if not found:
        ctx.reply(ctx._("There are no cases yet."))
        return
    lines = [ctx._("Cases:")]
    for c in found[:MAX_LISTED]:
        mark = " " + ctx._("(restricted)") if c.visibility == "restricted" else ""
        lines.append(f"• {c.name} — {status_label(ctx, c.status)}{mark} — /case {c.slug}")
    if len(found) > MAX_LISTED:
        lines.append(ctx._("… and {n} more.", n=len(found) - MAX_LISTED))
    ctx.reply("\n".join(lines))


@commands.command("case", roles=ANYONE, summary=N_("a case card: /case NAME"), order=11)
def show_case(ctx: Context, args: str) -> None:
    if not args.strip():
        listed = cases.visible_to(ctx.conn, ctx.member.id if ctx.member else None,
                                  ctx.member.role if ctx.member else None)  # fmt: skip
        if not listed:
            raise UserError(ctx._("There are no cases yet."))
        ctx.reply(
            ctx._("Which case? Choose one, or send /case NAME."),
            tuple(Choice(c.name, f"/case {c.slug}") for c in listed[:OFFERED_CASES]),
        )
        return
    case = visible_case(ctx, args.strip().lower())  # a slug, or a name with its spaces
    ctx.reply(case_card(ctx, case))


def _shorten(text: str, most: int) -> str:
    return text if len(text) <= most else text[: most - 1].rstrip() + "…"


def case_card(ctx: Context, case: cases.Case) -> str:
    """What a supporter reads in ten seconds: who, status, where, next date, news, how to help."""
    head = f"{case.name} — {status_label(ctx, case.status)}"
    if case.visibility == "restricted":
        head += " " + ctx._("(restricted)")
    lines = [head]
    facts = [case.country or ""]
    if case.detained_since:
        facts.append(ctx._("detained since {date}", date=case.detained_since))
    if any(facts):
        lines.append(" · ".join(f for f in facts if f))
    if case.facility:
        history = cases.facility_history(ctx.conn, case.id, 2)
        line = ctx._("Held at: {facility}", facility=case.facility)
        if history and history[0].facility == case.facility:
            line += " " + ctx._("(since {date})", date=fmt_date(ctx, history[0].since))
            if len(history) > 1:
                line += " " + ctx._("— transferred from {place}", place=history[1].facility)
        lines.append(line)
    lines.extend(transfers.card_lines(ctx, case))
    if case.next_hearing is not None and case.next_hearing >= ctx.now - 12 * 3600:
        when = (
            fmt_date(ctx, case.next_hearing)
            if case.next_hearing_all_day
            else fmt_datetime(ctx, case.next_hearing)
        )
        lines.append(ctx._("Next hearing: {when}", when=when))
    if case.charges:
        lines.append(ctx._("Charges: {charges}", charges=_shorten(case.charges, 200)))
    if case.summary:
        lines.append("")
        lines.append(_shorten(case.summary, 300))
    if case.tag_list:
        lines.append(" ".join("#" + t for t in case.tag_list))

    lines.append("")
    # Relatives' news is for vetted members; open supporters and visitors see public news.
    vetted = ctx.member is not None and ctx.member.vetted
    updates = cases.latest_updates(ctx.conn, case.id, 3, vetted=vetted)
    if updates:
        lines.append(ctx._("Latest news:"))
        for u in updates:
            lines.append(f"• {fmt_date(ctx, u.created_at)}: {_shorten(u.text, 200)}")
    else:
        lines.append(ctx._("No news posted yet."))

    lines.append("")
    lines.append(ctx._("How to help:"))
    helps = []
    if case.how_to_help:
        helps.append(_shorten(case.how_to_help, 300))
    if case.letters_address:
        helps.append(
            ctx._("Write to {name}: {address}", name=case.name, address=case.letters_address)
        )
        if command_hint(ctx, "letters"):
            helps.append(ctx._("What to write, and what not: /letters {slug}", slug=case.slug))
    if command_hint(ctx, "subscribe"):
        helps.append(ctx._("Follow this case: /subscribe {slug}", slug=case.slug))
    elif ctx.member is None:
        helps.append(ctx._("Send /start to join and follow this case."))
    if command_hint(ctx, "actions"):
        helps.append(ctx._("Join a solidarity action: /actions"))
    if not helps:
        helps.append(ctx._("Talk about {name}: silence is how cases go cold.", name=case.name))
    lines += [f"• {h}" for h in helps]

    member = ctx.member
    if (
        member is not None
        and member.role == "family"
        and any(c.id == case.id for c in cases.member_cases(ctx.conn, member.id, "family"))
    ):
        lines.append("")
        lines.append(ctx._("Send news with /report, or /urgent in an emergency."))
    if member is not None and cases.may_coordinate(ctx.conn, case, member.id, member.role):
        last = fmt_date(ctx, case.last_report_at) if case.last_report_at else ctx._("none yet")
        checkin = (
            ctx._("every {n} days", n=case.checkin_days) if case.checkin_days else ctx._("off")
        )
        lines.append("")
        lines.append(
            ctx._(
                "Coordinators: /reports {slug} · /editcase {slug} FIELD VALUE. "
                "Last report: {last}. Check-in: {checkin}.",
                slug=case.slug,
                last=last,
                checkin=checkin,
            )
        )
    return "\n".join(lines)


# --- /newcase and /editcase ----------------------------------------------------------------


@commands.command(
    "newcase", roles=COORDINATORS, summary=N_("create a case: /newcase SLUG NAME"), order=40
)
def new_case(ctx: Context, args: str) -> None:
    member = ctx.require_member()
    parts = args.split(None, 1)
    if len(parts) < 2:
        raise UserError(
            ctx._(
                "Send /newcase SLUG NAME, for example /newcase nasrin Nasrin Sotoudeh. The "
                "slug is a short name of 2 to 32 letters a-z, digits and dashes."
            )
        )
    slug = parts[0].lower()
    if not SLUG_RE.match(slug) or slug in RESERVED_SLUGS or len(slug) < 2:
        raise UserError(
            ctx._(
                "A slug is 2 to 32 characters: letters a-z, digits and dashes, "
                "not starting or ending with a dash."
            )
        )
    name = clean_text(ctx, parts[1], label=ctx._("name"), most=120, multiline=False)
    if cases.by_slug(ctx.conn, slug) is not None:
        raise UserError(ctx._("There is already a case {slug}.", slug=slug))
    case = cases.create(ctx.conn, slug, name, "restricted", ctx.now)
    # The creator coordinates it: otherwise its first reports would go to nobody but admins.
    cases.link_member(ctx.conn, case.id, member.id, "coordinator")
    ctx.audit("case.created", f"case:{case.id}")
    ctx.reply(
        ctx._(
            "Case created: {name} (/case {slug}). You coordinate it. It is restricted for now: "
            "only coordinators and people tied to it can see it.\n"
            "Fill in the case sheet with /editcase {slug} FIELD VALUE. Fields: {fields}.\n"
            "When the family agrees, make it public: /editcase {slug} visibility public",
            name=name,
            slug=slug,
            fields=", ".join(FIELD_ORDER),
        )
    )


def _usage_editcase(ctx: Context) -> str:
    return ctx._(
        "Send /editcase SLUG FIELD VALUE (a dash as VALUE clears a field). Fields: {fields}.\n"
        "status: {statuses}. next_hearing: 2026-12-01T10:00 or 2026-12-01, in {tz}. "
        "detained_since: 2024-03-15. tags: comma-separated. checkin_days: 0 to 365.",
        fields=", ".join(FIELD_ORDER),
        statuses=", ".join(cases.STATUSES),
        tz=ctx.services.default_timezone,
    )


@commands.command(
    "editcase",
    roles=COORDINATORS,
    summary=N_("change a case sheet: /editcase SLUG FIELD VALUE"),
    order=41,
)
def edit_case(ctx: Context, args: str) -> None:
    member = ctx.require_member()
    parts = args.split(None, 2)
    if len(parts) < 2:
        raise UserError(_usage_editcase(ctx))
    case = coordinated_case(ctx, parts[0].lower())
    field = FIELD_ALIASES.get(parts[1].lower().replace("-", "_")[:32])
    if field is None:
        raise UserError(_usage_editcase(ctx))
    if len(parts) < 3 or not parts[2].strip():
        raise UserError(
            ctx._(
                "Send a value: /editcase {slug} {field} VALUE (a dash clears it).",
                slug=case.slug,
                field=parts[1].lower()[:32],
            )
        )
    value = parts[2].strip()
    label = ctx._(FIELD_LABELS[field])
    shown = _apply(ctx, case, field, value, label, member.id)
    ctx.audit("case.edited", f"case:{case.id}:{field}")
    lines = [ctx._("{name}: {field} is now {value}", name=case.name, field=label, value=shown)]
    if field in ("facility", "status", "next_hearing") and command_hint(ctx, "update"):
        lines.append(
            ctx._("To tell the case's followers, send /update {slug} TEXT.", slug=case.slug)
        )
    ctx.reply("\n".join(lines))


def _hearing_changed(ctx: Context, case_id: int, when: float | None) -> None:
    """A court date is a solidarity action too: the actions module keeps one in step."""
    on_case_hearing_set(ctx, case_id, when)


def _apply(ctx: Context, case: cases.Case, field: str, value: str, label: str, by: int) -> str:
    """Validate and store one field; returns how to show the new value."""
    none = ctx._("(empty)")
    if field == "status":
        word, _sep, rest = value.partition(" ")
        if word.lower() in ("transit", "etap"):
            return transfers.start_transit(ctx, case, rest.strip())
        status = value.lower().replace(" ", "_").replace("-", "_")
        if status not in cases.STATUSES:
            raise UserError(
                ctx._("Unknown status. Use one of: {statuses}.", statuses=", ".join(cases.STATUSES))
            )
        cases.set_field(ctx.conn, case.id, "status", status, ctx.now)
        if status == "released":
            _hearing_changed(ctx, case.id, None)  # no more court dates to fill
        return status_label(ctx, status)
    if field == "visibility":
        vis = value.lower()
        if vis not in cases.VISIBILITIES:
            raise UserError(ctx._("Visibility is public or restricted."))
        cases.set_field(ctx.conn, case.id, "visibility", vis, ctx.now)
        return vis
    if field == "checkin_days":
        if not re.fullmatch(r"\d{1,3}", value) or int(value) > 365:
            raise UserError(ctx._("The check-in interval is a number of days from 0 (off) to 365."))
        cases.set_field(ctx.conn, case.id, "checkin_days", int(value), ctx.now)
        return ctx._("off") if int(value) == 0 else ctx._("every {n} days", n=int(value))
    if field == "next_hearing":
        if value == CLEAR:
            cases.set_next_hearing(ctx.conn, case.id, None, False, ctx.now)
            _hearing_changed(ctx, case.id, None)
            return none
        when, all_day = parse_local_datetime(ctx, value)
        cases.set_next_hearing(ctx.conn, case.id, when, all_day, ctx.now)
        _hearing_changed(ctx, case.id, when)
        return fmt_date(ctx, when) if all_day else fmt_datetime(ctx, when)
    if field == "detained_since":
        if value == CLEAR:
            cases.set_field(ctx.conn, case.id, "detained_since", None, ctx.now)
            return none
        iso = parse_partial_date(ctx, value)
        cases.set_field(ctx.conn, case.id, "detained_since", iso, ctx.now)
        return iso
    if field == "tags":
        if value == CLEAR:
            cases.set_field(ctx.conn, case.id, "tags", None, ctx.now)
            return none
        tags = parse_tags(ctx, value)
        cases.set_field(ctx.conn, case.id, "tags", ",".join(tags), ctx.now)
        return ", ".join(tags)
    multiline, most = TEXT_FIELDS[field]
    if value == CLEAR:
        if field == "name":
            raise UserError(ctx._("A case always has a name."))
        if field == "facility":
            cases.clear_facility(ctx.conn, case.id, ctx.now)
            return none
        cases.set_field(ctx.conn, case.id, _column(field), None, ctx.now)
        return none
    text = clean_text(ctx, value, label=label, most=most, multiline=multiline)
    if field == "facility":
        if text != case.facility:
            cases.record_facility(ctx.conn, case.id, text, ctx.now, by)
        transfers.arrived(ctx, case, text)  # ends a transit, if one is open
        return text
    cases.set_field(ctx.conn, case.id, _column(field), text, ctx.now)
    return _shorten(text, 200)


def _column(field: str) -> str:
    return "how_to_help" if field == "help" else field


# --- parsing dates -----------------------------------------------------------------------------

_LOCAL_DT = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{1,2}):(\d{2}))?$")


def parse_local_datetime(ctx: Context, value: str) -> tuple[float, bool]:
    """ISO date or date-time in the network's time zone -> (UTC epoch seconds, date only?).
    Refuses times that do not exist on that day (clock change) and dates long past."""
    tzname = ctx.services.default_timezone
    tz = zoneinfo.ZoneInfo(tzname)
    m = _LOCAL_DT.match(value.strip())
    bad = ctx._(
        "Give the date as 2026-12-01, or date and time as 2026-12-01T10:00 ({tz} time).",
        tz=tzname,
    )
    if not m:
        raise UserError(bad)
    y, mo, d = int(m.group(1)), int(m.group(2)), int(m.group(3))
    all_day = m.group(4) is None
    hh, mm = (0, 0) if all_day else (int(m.group(4)), int(m.group(5)))
    try:
        local = datetime(y, mo, d, hh, mm, tzinfo=tz)
    except ValueError:
        raise UserError(bad) from None
    utc = local.astimezone(UTC)
    if utc.astimezone(tz).replace(tzinfo=None) != local.replace(tzinfo=None):
        raise UserError(
            ctx._("That time does not exist in {tz} (the clocks change then).", tz=tzname)
        )
    when = utc.timestamp()
    if when < ctx.now - 86400:
        raise UserError(ctx._("That date has passed. Give the next hearing's date."))
    if when > ctx.now + 10 * 366 * 86400:
        raise UserError(bad)
    return when, all_day


_PARTIAL_DATE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$")


def parse_partial_date(ctx: Context, value: str) -> str:
    """YYYY, YYYY-MM or YYYY-MM-DD, not in the future."""
    m = _PARTIAL_DATE.match(value.strip())
    bad = ctx._("Give the date as 2024-03-15 (or 2024-03, or 2024 when only that is known).")
    if not m:
        raise UserError(bad)
    y = int(m.group(1))
    mo = int(m.group(2) or 1)
    d = int(m.group(3) or 1)
    try:
        first = date(y, mo, d)
    except ValueError:
        raise UserError(bad) from None
    today = datetime.fromtimestamp(ctx.now, zoneinfo.ZoneInfo(member_timezone(ctx))).date()
    if y < 1900 or first > today + timedelta(days=1):
        raise UserError(bad)
    return value.strip()


def parse_tags(ctx: Context, value: str) -> list[str]:
    tags: list[str] = []
    for raw in re.split(r"[,،，、၊]", value):  # Latin, Arabic-script, CJK and Burmese commas
        tag = unicodedata.normalize("NFC", raw.strip().lower().lstrip("#"))
        if not tag:
            continue
        if not TAG_RE.match(tag) or has_hostile_chars(tag, multiline=False):
            raise UserError(
                ctx._("Tags are words of letters, digits and dashes, separated by commas.")
            )
        if tag not in tags:
            tags.append(tag)
    if not tags or len(tags) > MAX_TAGS:
        raise UserError(ctx._("Give 1 to {n} tags, separated by commas.", n=MAX_TAGS))
    return tags


def capability() -> Capability:
    return Capability("cases", commands=tuple(commands))
