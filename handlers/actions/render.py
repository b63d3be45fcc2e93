"""How actions read: titles, times, durations, rules, audiences, reminders, places."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from babel.dates import format_date, format_skeleton, format_timedelta, get_day_names

from bot import recurrence as rec
from bot.i18n import Translator
from bot.messages import Choice
from handlers.actions.model import DAY, HOUR, KIND_LABELS, MINUTE, PLACE_FOR_VETTED, TEMPLATES
from handlers.common import zone
from storage import cases
from storage.actions import Action, Occurrence


def kind_label(tr: Translator, kind: str) -> str:
    return tr(KIND_LABELS.get(kind, KIND_LABELS["other"]))


def action_title(tr: Translator, action: Action, case: cases.Case | None) -> str:
    if action.title:
        return action.title
    if action.origin == "hearing" and case is not None:
        return tr("Court hearing: {name}", name=case.name)
    template = TEMPLATES.get(action.origin.removeprefix("template:"))
    if template is not None:
        return tr(template.title)
    label = kind_label(tr, action.kind)
    return label[:1].upper() + label[1:]


def fmt_when(tr: Translator, ts: float, tz: str, all_day: bool = False) -> str:
    if all_day:
        day = datetime.fromtimestamp(ts, zone(tz)).date()
        shown = tr(
            "{date}, time to be confirmed", date=format_date(day, "medium", locale=tr.locale)
        )
    else:
        shown = tr.datetime(datetime.fromtimestamp(ts, UTC), tz)
    return f"{shown} ({tz})"


def fmt_duration(tr: Translator, seconds: int) -> str:
    if seconds % DAY == 0:
        return tr.plural("{n} day", "{n} days", seconds // DAY)
    if seconds % HOUR == 0:
        return tr.plural("{n} hour", "{n} hours", seconds // HOUR)
    return tr.plural("{n} minute", "{n} minutes", seconds // MINUTE)


def fmt_offsets(tr: Translator, offsets: tuple[int, ...]) -> str:
    if not offsets:
        return tr("no reminders")
    return tr("{list} before", list=", ".join(fmt_duration(tr, o) for o in offsets))


def describe_rule(tr: Translator, rule: rec.Rule) -> str | None:
    """How often, in words; None for a one-off."""
    hhmm = f"{rule.at.hour:02d}:{rule.at.minute:02d}"
    if rule.kind == "daily":
        return tr("every day at {time}", time=hhmm)
    if rule.kind == "weekly":
        names = get_day_names("wide", locale=tr.locale)
        days = ", ".join(names[w] for w in rule.weekdays)
        return tr("every {days} at {time}", days=days, time=hhmm)
    if rule.kind == "monthly":
        if rule.day == rec.LAST_DAY:
            return tr("on the last day of every month at {time}", time=hhmm)
        return tr("every month on day {day} at {time}", day=rule.day, time=hhmm)
    if rule.kind == "yearly":
        assert rule.month is not None and rule.day is not None
        day = format_skeleton("MMMMd", date(2000, rule.month, rule.day), locale=tr.locale)
        return tr("every year on {date} at {time}", date=day, time=hhmm)
    return None


def audience_label(tr: Translator, audience: str) -> str:
    if audience == "all":
        return tr("everyone")
    if audience == "case":
        return tr("the case's followers, relatives and coordinators")
    return tr("members with the role {role}", role=audience.partition(":")[2])


def reminder_text(
    tr: Translator,
    action: Action,
    case: cases.Case | None,
    occ: Occurrence,
    *,
    tz: str,
    joined: bool,
    now: float,
    late: bool,
    vetted: bool = True,
) -> tuple[str, tuple[Choice, ...]]:
    """An invitation or reminder. For an open supporter (`vetted` False): no place and no
    /join, a line that the place is for vetted members instead."""
    joined = joined and vetted
    title = action_title(tr, action, case)
    lines = []
    if late:
        lines.append(tr("(Delayed: the bot was offline when this reminder was due.)"))
    if joined:
        lines.append(tr("Reminder: {title}", title=title))
    else:
        lines.append(tr("{kind}: {title}", kind=cap(kind_label(tr, action.kind)), title=title))
    when = fmt_when(tr, occ.start_at, tz, action.all_day)
    if not action.all_day:
        relative = format_timedelta(
            timedelta(seconds=occ.start_at - now), add_direction=True, locale=tr.locale
        )
        when = f"{when} — {relative}"
    lines.append(tr("When: {when}", when=when))
    if not vetted:
        if action.place or action.exact_place:
            lines.append(tr(PLACE_FOR_VETTED))
    elif action.place:
        lines.append(tr("Where: {place}", place=action.place))
    template = TEMPLATES.get(action.origin.removeprefix("template:"))
    if template is not None:
        lines.append(tr(template.blurb))
    if case is not None:
        lines.append(tr("For {name}: /case {slug}", name=case.name, slug=case.slug))
    if action.kind == "letters" and template is None:
        lines.append(tr("How to write: /letters {slug}", slug=case.slug if case else "").rstrip())
    choices: tuple[Choice, ...] = ()
    if joined:
        if action.exact_place and occ.reveal_at is not None and occ.revealed_at is None:
            lines.append(tr("You will get the exact meeting point before the start."))
        lines.append(tr("You are going. If your plans change: /leave {id}", id=action.id))
    elif vetted:
        lines.append(tr("Will you come? /join {id}", id=action.id))
        choices = (Choice(tr("I will come"), f"/join {action.id}"),)
    return "\n".join(lines), choices


def cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def place_text(
    tr: Translator, action: Action, case: cases.Case | None, occ: Occurrence, tz: str
) -> str:
    return tr(
        "{title}, {when}. The exact meeting point: {place}\nPlease do not pass it on.",
        title=action_title(tr, action, case),
        when=fmt_when(tr, occ.start_at, tz, action.all_day),
        place=action.exact_place or "",
    )
