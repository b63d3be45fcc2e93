"""Solidarity actions: /schedule, /actions, /join, /leave, /headcount, /editaction, /unschedule,
/template; the reminder engine (`fire_due`, `next_wakeup`) and court hearings from case sheets.

Decisions:

* An action is a rule (bot.recurrence: one-off or daily/weekly/monthly/yearly local wall time)
  read in an IANA time zone: `tz=ZONE` in /schedule, else the coordinator's /timezone, else the
  network default. Occurrences and their reminders are rows, materialised from the rule ahead
  of time (`materialise`): every occurrence starting within the longest reminder + LOOKAHEAD,
  and always the next one (so /actions and /join always have a date). APScheduler is only the
  alarm clock (bot/alarms.py): it wakes the process at `next_wakeup(conn)` and calls
  `fire_due(conn, now)`; a 30 s safety tick runs the same thing.
* Reminders: default 24 h and 1 h before (`remind=24h,1h`; `/editaction ID reminders ...`;
  `off` for none). "24 h" means 86,400 seconds, whatever the clocks do in between. The largest
  offset is the *invitation* and goes to the whole audience (at BULK priority, held for quiet
  hours unless that would be after the start); shorter ones go only to those who joined, at
  ALERT priority and regardless of quiet hours (they asked to come). When an action is
  scheduled after its invitation time, the invitation goes out at once.
* Each reminder's outbox rows carry the key (action, occurrence start, offset, member,
  transport): a double fire, a retried chunk or a restart writes nothing twice. Recipients are
  streamed in member-id order, CHUNK at a time, with the cursor on the reminder row, so a
  100,000-member audience is never in memory and one call's time on the writer thread is
  bounded (FIRE_BUDGET recipients).
* Missed while down: a reminder found due after its time is sent if the action has not started,
  with a "(Delayed ...)" note when it is more than LATE_AFTER late; of several reminders of one
  occurrence due together only one is sent (the invitation if among them, else the latest) and
  the others are recorded as `merged`. If the action has started, the reminder is recorded as
  `skipped`, counted on the occurrence (/headcount shows it) and the action's coordinators are
  told. Never silently dropped. The same holds for exact-place reveals.
* Audience: 'case' (the case's followers, relatives and coordinators: broadcast segment
  'case:ID'), 'all', or 'role:ROLE'. An action on a restricted case always goes to 'case', and
  at sending time restricted-case visibility is checked again. Who may see an action (list,
  join): coordinators and admins; others if they may see its case and are in its audience.
  "No such action" and "not yours to see" read the same.
* Place: `place` is shown to everyone invited (a city, "online"); `secret` (the exact meeting
  point) only to those who joined, `reveal` before the start (default 2 h), or at once if they
  join later than that. After a one-off action, its exact place is forgotten.
* RSVP: per occurrence (`/join ID` joins the next one). Coordinators who manage the action see
  the headcount in /actions and /headcount. Two days after an occurrence the RSVP rows are
  deleted and only the count is kept: who went to a protest is not kept.
* Court hearings: `ensure_hearing_action(conn, case_id, hearing_utc, now)` keeps one
  court-hearing action per case in step with the case sheet's next hearing (created, moved with
  its RSVPs kept and those who joined told, or cancelled); registered as
  `registry.hooks["case_hearing_set"](ctx, case_id, hearing_utc_epoch)`. A hearing whose date is
  known but not its time is reminded as if it started at 09:00 and shown without a time.
* 30 October, the International Day of Political Prisoners: a built-in yearly template,
  `/template oct30 on [HH:MM]` (12:00 in the network's zone by default), for everyone, with an
  invitation a week before. `/schedule - yearly:10-30@12:00 TITLE` also works for a custom one.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from babel.dates import format_date, format_skeleton, format_timedelta, get_day_names

from bot import recurrence as rec
from bot.capability import Capability, Commands
from bot.context import COORDINATORS, MEMBERS, Context, UserError, parse_id
from bot.flows import Flow, FlowContext, Step
from bot.i18n import N_, Translator
from bot.jobs import Alarm, JobContext, PeriodicJob
from bot.messages import Choice, Priority
from bot.notify import notify_member
from handlers.broadcasts import ROLE_ALIASES, quiet_until, remember_defaults
from handlers.common import clean_text, coordinated_case, safe_zone, valid_zone, zone
from storage import actions, broadcasts, cases, members, outbox, settings
from storage.actions import Action, Occurrence
from storage.db import Connection

commands = Commands()

MINUTE, HOUR, DAY = 60, 3600, 86400
DEFAULT_REMINDERS = (DAY, HOUR)
DEFAULT_REVEAL = 2 * HOUR
LOOKAHEAD = DAY  # occurrences are materialised this long before their first reminder
LATE_AFTER = 120.0  # a reminder sent later than this after its time says it is delayed
MAX_CATCHUP = 1000  # occurrences one materialisation step may create (long downtime)
CHUNK = 500  # recipients read per step of a reminder's fan-out
FIRE_BUDGET = 5000  # recipients one fire_due call may handle before yielding the writer
RSVP_KEEP = 2 * DAY  # who joined an occurrence is deleted this long after it took place
MAX_LISTED = 10
MAX_REMINDERS = 4
MAX_AHEAD_DAYS = 5 * 366  # one-offs further ahead are typos
FLOW = "schedule"
DEFAULT_TZ_KEY = "network.default_timezone"  # written by handlers.broadcasts.remember_defaults
DEFAULT_LANG_KEY = "network.default_language"

NOT_FOUND = N_("No action with that number was found, or you may not see it.")

KIND_LABELS = {
    "vigil": N_("vigil"),
    "protest": N_("protest"),
    "hearing": N_("court hearing"),
    "letters": N_("letter-writing"),
    "callin": N_("call-in"),
    "online": N_("online campaign"),
    "other": N_("action"),
}
KIND_ALIASES = {
    "vigil": "vigil",
    "protest": "protest",
    "demo": "protest",
    "hearing": "hearing",
    "court": "hearing",
    "trial": "hearing",
    "letters": "letters",
    "letter": "letters",
    "letter-writing": "letters",
    "callin": "callin",
    "call-in": "callin",
    "calls": "callin",
    "online": "online",
    "campaign": "online",
    "other": "other",
}


@dataclass(frozen=True)
class Template:
    name: str
    kind: str
    rule: str
    title: str
    reminders: tuple[int, ...]
    blurb: str


TEMPLATES = {
    "oct30": Template(
        "oct30",
        "letters",
        "yearly:10-30@12:00",
        N_("International Day of Political Prisoners"),
        (7 * DAY, HOUR),
        N_(
            "30 October: we remember everyone imprisoned for their beliefs. Write a letter "
            "today (/letters shows who has received the fewest), talk about the cases you "
            "follow, and join the actions near you."
        ),
    )
}


# -- small helpers ------------------------------------------------------------------------


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


def _rule_of(action: Action) -> rec.Rule:
    return rec.parse_when(action.rule)


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


# -- parsing options ----------------------------------------------------------------------

_DURATION = re.compile(r"^(\d{1,4})\s*(m|min|mins|h|hr|hrs|d|day|days)$")


def parse_offsets(ctx: Context, value: str) -> tuple[int, ...]:
    text = value.strip().lower()
    if text in ("off", "none", "-", "0"):
        return ()
    out: set[int] = set()
    bad = ctx._(
        "Give reminders as times before the start, for example 24h,1h or 2d,3h,30m "
        "(from 5 minutes to 60 days, at most {n}), or off.",
        n=MAX_REMINDERS,
    )
    for token in text.split(","):
        m = _DURATION.match(token.strip())
        if not m:
            raise UserError(bad)
        unit = m.group(2)[0]
        seconds = int(m.group(1)) * {"m": MINUTE, "h": HOUR, "d": DAY}[unit]
        if not 5 * MINUTE <= seconds <= 60 * DAY:
            raise UserError(bad)
        out.add(seconds)
    if not out or len(out) > MAX_REMINDERS:
        raise UserError(bad)
    return tuple(sorted(out, reverse=True))


def parse_duration(ctx: Context, value: str) -> int:
    m = _DURATION.match(value.strip().lower())
    if not m:
        raise UserError(ctx._("Give a time like 2h, 90m or 1d."))
    seconds = int(m.group(1)) * {"m": MINUTE, "h": HOUR, "d": DAY}[m.group(2)[0]]
    if not 0 < seconds <= 7 * DAY:
        raise UserError(ctx._("Give a time like 2h, 90m or 1d."))
    return seconds


def parse_kind(ctx: Context, value: str) -> str:
    kind = KIND_ALIASES.get(value.strip().lower())
    if kind is None:
        raise UserError(
            ctx._("Kinds of action: {kinds}.", kinds=", ".join(sorted(set(KIND_ALIASES.values()))))
        )
    return kind


def parse_audience(ctx: Context, value: str) -> str:
    text = value.strip().lower()
    if text in ("all", "everyone"):
        return "all"
    if text in ("case", "followers", "subscribers"):
        return "case"
    role = ROLE_ALIASES.get(text.removeprefix("role:"))
    if role is None:
        raise UserError(
            ctx._(
                "The audience is all, case (the case's followers), or a role such as role:activist."
            )
        )
    return f"role:{role}"


def _when_error(ctx: Context, err: rec.WhenError) -> UserError:
    return UserError(ctx._(rec.ERROR_MESSAGES[err.code]))


def parse_start(ctx: Context, text: str, tz: str) -> tuple[rec.Rule, float | None]:
    """A WHEN expression -> (rule, start instant for a one-off)."""
    now = _utc(ctx.now)
    try:
        rule = rec.parse_when(text, tz=zone(tz), now_utc=now)
    except rec.WhenError as err:
        raise _when_error(ctx, err) from None
    if rule.kind != "once":
        return rule, None
    first = rec.next_occurrence(rule, zone(tz), now)
    assert first is not None  # parse_when refused a time in the past
    if first.timestamp() > ctx.now + MAX_AHEAD_DAYS * DAY:
        raise UserError(ctx._("That date is too far ahead."))
    return rule, first.timestamp()


def _take_when(tokens: list[str]) -> tuple[str, int] | rec.WhenError:
    """The WHEN at the head of `tokens` (it may hold a space: 2026-12-01 10:00)."""
    best: rec.WhenError | None = None
    for n in (2, 1):
        if len(tokens) < n:
            continue
        text = " ".join(tokens[:n])
        try:
            rec.parse_when(text)
        except rec.WhenError as err:
            if best is None or best.code == "bad_format":
                best = err
            continue
        return text, n
    return best or rec.WhenError("bad_format")


_OPTION = re.compile(r"^(kind|to|remind|tz)=(\S+)$", re.IGNORECASE)


def _take_options(ctx: Context, tokens: list[str], data: dict[str, Any]) -> list[str]:
    """Parse leading key=value options into `data` (kind) and `data["options"]`."""
    opts = data["options"]
    while tokens and (m := _OPTION.match(tokens[0])):
        key, value = m.group(1).lower(), m.group(2)
        if key == "tz":
            found = valid_zone(value)
            if found is None:
                raise UserError(
                    ctx._(
                        "I don't know that time zone. Use a name like Europe/Minsk or Asia/Tehran."
                    )
                )
            opts["tz"] = found
        elif key == "kind":
            data["kind"] = parse_kind(ctx, value)
        elif key == "to":
            opts["to"] = parse_audience(ctx, value)
        else:
            opts["remind"] = list(parse_offsets(ctx, value))
        tokens = tokens[1:]
    return tokens


# -- who may see and manage ------------------------------------------------------------------


def may_see(conn: Connection, action: Action, member: members.Member | None) -> bool:
    if member is None:
        return False
    if member.role in COORDINATORS:
        return True
    if action.case_id is not None:
        case = cases.get(conn, action.case_id)
        if case is None or not cases.can_see(conn, case, member.id, member.role):
            return False
    return action.audience in ("all", "case") or action.audience == f"role:{member.role}"


def may_manage(conn: Connection, action: Action, member: members.Member | None) -> bool:
    if member is None or member.role not in COORDINATORS:
        return False
    if member.role == "admin" or action.case_id is None:
        return True
    case = cases.get(conn, action.case_id)
    return case is not None and cases.may_coordinate(conn, case, member.id, member.role)


def _action_id(ctx: Context, args: str) -> int:
    found = parse_id(args.split()[0]) if args.split() else None
    if found is None:
        raise UserError(ctx._(NOT_FOUND))
    return found


def visible_action(ctx: Context, args: str, *, manage: bool = False) -> Action:
    """The action if this member may see it (or manage it); one answer for missing and hidden."""
    action = actions.get(ctx.conn, _action_id(ctx, args))
    allowed = (
        action is not None
        and action.state != actions.CANCELLED
        and (may_manage if manage else may_see)(ctx.conn, action, ctx.member)
    )
    if not allowed:
        raise UserError(ctx._(NOT_FOUND))
    assert action is not None
    return action


# -- materialising occurrences --------------------------------------------------------------


def _next_start(action: Action, after: float) -> float | None:
    if action.once_at is not None:
        return action.once_at if action.once_at > after else None
    nxt = rec.next_occurrence(_rule_of(action), zone(action.timezone), _utc(after))
    return nxt.timestamp() if nxt is not None else None


def _reminder_start(action: Action, start: float) -> float:
    """The instant reminders count back from: a date-only hearing counts as 09:00."""
    if not action.all_day:
        return start
    local = datetime.fromtimestamp(start, zone(action.timezone)).date()
    nine = datetime.combine(local, time(9, 0)).replace(tzinfo=zone(action.timezone), fold=0)
    return nine.timestamp()


def _reveal_at(action: Action, start: float, ref: float) -> float | None:
    if not action.exact_place:
        return None
    return max(ref, start - (action.reveal_before or DEFAULT_REVEAL))


def plan_reminders(conn: Connection, action: Action, occ_id: int, start: float, ref: float) -> None:
    """Reminder rows of one occurrence: each offset due at or after `ref` (the instant this
    planning was due); the invitation moves up to `ref` when its time has passed."""
    offsets = action.reminders
    if not offsets:
        return
    invite = max(offsets)
    anchor = _reminder_start(action, start)
    for offset in offsets:
        due = anchor - offset
        scope = "audience" if offset == invite else "rsvp"
        if due < ref:
            if scope != "audience" or anchor <= ref:
                continue
            due = ref
        actions.add_reminder(conn, occ_id, offset, due, scope)


def materialise(conn: Connection, action: Action, now: float, ref: float | None = None) -> int:
    """Create the occurrences the action needs by `now`: every one starting within the
    longest reminder + LOOKAHEAD, and at least the next one. `ref` is when this was due (the
    action's horizon after a downtime), so reminders that fell due meanwhile are planned, found
    late and handled by the missed-while-down policy rather than never existing."""
    ref = now if ref is None else min(ref, now)
    if action.state != actions.ACTIVE:
        actions.update(conn, action.id, horizon_at=None)
        return 0
    cursor = action.last_start if action.last_start is not None else action.created_at - 1
    reach = max(action.reminders, default=0) + LOOKAHEAD
    created = 0
    horizon: float | None = None
    while True:
        start = _next_start(action, cursor)
        if start is None:
            break
        if created >= MAX_CATCHUP:
            horizon = now  # a long downtime: the rest in the next call
            break
        if start > now + reach:
            ahead = actions.next_occurrence(conn, action.id, now)
            if ahead is not None:
                # Come back when the next one is within reach, or when the one ahead starts.
                horizon = min(start - reach, ahead.start_at)
                break
        occ_id = actions.add_occurrence(conn, action.id, start, _reveal_at(action, start, ref))
        if occ_id is not None:
            plan_reminders(conn, action, occ_id, start, ref)
            created += 1
        cursor = start
    actions.update(conn, action.id, last_start=cursor, horizon_at=horizon)
    return created


def ensure_materialised(conn: Connection, action: Action, now: float) -> None:
    if action.horizon_at is not None and action.horizon_at <= now:
        materialise(conn, action, now, ref=action.horizon_at)


# -- firing ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    member_id: int
    role: str
    language: str | None
    timezone: str | None
    quiet: str | None
    transport: str | None
    chat: str | None


@dataclass
class _Run:
    """What one fire_due call needs across reminders: network defaults, caches, notices."""

    conn: Connection
    now: float
    default_lang: str
    default_tz: str | None
    budget: int
    written: int = 0
    missed: dict[int, list[tuple[int, float, int]]] = field(default_factory=dict)
    _actions: dict[int, Action | None] = field(default_factory=dict)
    _cases: dict[int, cases.Case | None] = field(default_factory=dict)

    def action(self, action_id: int) -> Action | None:
        if action_id not in self._actions:
            self._actions[action_id] = actions.get(self.conn, action_id)
        return self._actions[action_id]

    def case(self, case_id: int | None) -> cases.Case | None:
        if case_id is None:
            return None
        if case_id not in self._cases:
            self._cases[case_id] = cases.get(self.conn, case_id)
        return self._cases[case_id]

    def miss(self, action: Action, occ: Occurrence, n: int = 1) -> None:
        self.missed.setdefault(action.id, []).append((occ.id, occ.start_at, n))


def _run(conn: Connection, now: float, budget: int) -> _Run:
    return _Run(
        conn,
        now,
        settings.get(conn, DEFAULT_LANG_KEY) or "en",
        settings.get(conn, DEFAULT_TZ_KEY),
        budget,
    )


def fire_due(conn: Connection, now: float, budget: int = FIRE_BUDGET) -> int:
    """Everything due at `now`: materialise occurrences, reveal places, send reminders.
    Returns the outbox rows written. Idempotent; safe to call at any time and any number of
    times. When more is due than `budget` allows, `next_wakeup` stays <= now."""
    run = _run(conn, now, budget)
    for action in actions.needing_materialisation(conn, now, 200):
        materialise(conn, action, now, ref=action.horizon_at)
    _reveal_due(run)
    while run.budget > 0:
        due = actions.reminders_due(conn, now, 200)
        if not due:
            break
        for occurrence_id in dict.fromkeys(r.occurrence_id for r in due):
            if run.budget <= 0:
                break
            _fire_occurrence(run, occurrence_id)
    _tell_missed(run)
    return run.written


def next_wakeup(conn: Connection) -> float | None:
    return actions.next_wakeup(conn)


def _fire_occurrence(run: _Run, occurrence_id: int) -> None:
    conn, now = run.conn, run.now
    occ = actions.get_occurrence(conn, occurrence_id)
    assert occ is not None
    action = run.action(occ.action_id)
    live = [r for r in actions.reminders_of(conn, occ.id) if r.state in ("pending", "sending")]
    if action is None or occ.state != "scheduled" or action.state == actions.CANCELLED:
        for r in live:
            actions.set_reminder(conn, occ.id, r.offset_s, state="cancelled", done_at=now)
        return
    sending = [r for r in live if r.state == "sending"]
    due = [r for r in live if r.state == "pending" and r.due_at <= now]
    if not sending and due:
        if now >= occ.start_at:
            for r in due:
                actions.skip_reminder(conn, occ.id, r.offset_s, now)
            run.miss(action, occ, len(due))
            return
        audience = [r for r in due if r.scope == "audience"]
        chosen = audience[0] if audience else min(due, key=lambda r: r.offset_s)
        for r in due:
            if r is not chosen:
                actions.set_reminder(conn, occ.id, r.offset_s, state="merged", done_at=now)
        late = now - chosen.due_at > LATE_AFTER
        sending = [replace(chosen, state="sending", fired_at=now, late=late)]
    for r in sending:
        _stream(run, action, occ, r)


def _segment(action: Action, case: cases.Case | None) -> str:
    if action.case_id is not None and (
        action.audience == "case" or case is None or case.visibility != "public"
    ):
        return f"case:{action.case_id}"
    return "all" if action.audience in ("all", "case") else action.audience


def _stream(run: _Run, action: Action, occ: Occurrence, rem: actions.Reminder) -> None:
    """Write the next chunks of one reminder's recipients; mark it sent when all are done."""
    conn, now = run.conn, run.now
    case = run.case(action.case_id)
    phase, cursor = rem.phase, rem.cursor
    added = 0
    done = now >= occ.start_at  # a fan-out still going when the action starts stops there
    while not done and run.budget > 0:
        if phase == "audience":
            rows, new_cursor, exhausted = broadcasts.recipients(
                conn, _segment(action, case), cursor, CHUNK, run.default_lang
            )
            targets = [
                _Target(
                    r.member_id, r.role, r.language, r.timezone, r.quiet_hours, r.transport, r.chat
                )
                for r in rows
            ]
            ids = sorted({t.member_id for t in targets})
            going = actions.going_among(conn, occ.id, ids)
        else:
            ids = actions.rsvp_ids(conn, occ.id, cursor, CHUNK)
            targets = _rsvp_targets(conn, action, case, ids)
            going = set(ids)
            exhausted = len(ids) < CHUNK
            new_cursor = ids[-1] if ids else cursor
        written = _write(run, action, case, occ, rem, targets, going)
        added += written
        run.written += written
        run.budget -= max(1, len(ids))
        if not exhausted:
            cursor = new_cursor
        elif phase == "audience":
            phase, cursor = "rsvp", 0
        else:
            done = True
    actions.save_progress(
        conn, occ.id, rem.offset_s, state="sent" if done else "sending", phase=phase,
        cursor=cursor, fired_at=rem.fired_at, late=rem.late, done_at=now if done else None,
        added=added,
    )  # fmt: skip


def _rsvp_targets(
    conn: Connection, action: Action, case: cases.Case | None, ids: list[int]
) -> list[_Target]:
    rows = actions.member_rows(conn, ids)
    restricted = case is not None and case.visibility != "public"
    tied = actions.tied_among(conn, case.id, ids) if restricted and case is not None else set()
    return [_Target(*r) for r in rows if not restricted or r[1] in COORDINATORS or r[0] in tied]


def _idem(action: Action, occ: Occurrence, what: str, member_id: int, transport: str) -> str:
    return f"a{action.id}:{int(occ.start_at)}:{what}:{member_id}:{transport}"


def _write(
    run: _Run,
    action: Action,
    case: cases.Case | None,
    occ: Occurrence,
    rem: actions.Reminder,
    targets: list[_Target],
    going: set[int],
) -> int:
    now = run.now
    bodies: dict[tuple[str, str, bool], str] = {}
    rows: list[outbox.Row] = []
    for t in targets:
        if t.transport is None or t.chat is None:
            continue
        joined = t.member_id in going
        tz = safe_zone(t.timezone or run.default_tz or action.timezone)
        language = t.language or run.default_lang
        not_before = 0.0
        if rem.scope == "audience" and not joined and t.quiet:
            not_before = quiet_until(t.quiet, tz, now)
            if not_before >= occ.start_at:
                continue  # after their quiet hours it would be too late to be of use
        key = (language, tz, joined)
        if key not in bodies:
            tr = Translator(language)
            text, choices = reminder_text(
                tr, action, case, occ, tz=tz, joined=joined, now=now, late=rem.late
            )
            body: dict[str, Any] = {"text": text}
            if choices:
                body["choices"] = [[c.label, c.value] for c in choices]
            bodies[key] = outbox.dump_body(body)
        priority = Priority.ALERT if joined or rem.scope == "rsvp" else Priority.BULK
        rows.append(
            (
                t.transport, t.chat, t.member_id, int(priority), bodies[key],
                _idem(action, occ, f"r{rem.offset_s}", t.member_id, t.transport),
                None, not_before, now,
            )
        )  # fmt: skip
    return outbox.enqueue_many(run.conn, rows) if rows else 0


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
) -> tuple[str, tuple[Choice, ...]]:
    title = action_title(tr, action, case)
    lines = []
    if late:
        lines.append(tr("(Delayed: the bot was offline when this reminder was due.)"))
    if joined:
        lines.append(tr("Reminder: {title}", title=title))
    else:
        lines.append(tr("{kind}: {title}", kind=_cap(kind_label(tr, action.kind)), title=title))
    when = fmt_when(tr, occ.start_at, tz, action.all_day)
    if not action.all_day:
        relative = format_timedelta(
            timedelta(seconds=occ.start_at - now), add_direction=True, locale=tr.locale
        )
        when = f"{when} — {relative}"
    lines.append(tr("When: {when}", when=when))
    if action.place:
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
    else:
        lines.append(tr("Will you come? /join {id}", id=action.id))
        choices = (Choice(tr("I will come"), f"/join {action.id}"),)
    return "\n".join(lines), choices


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _reveal_due(run: _Run) -> None:
    conn, now = run.conn, run.now
    for occ in actions.reveals_due(conn, now, 50):
        action = run.action(occ.action_id)
        if action is None or occ.state != "scheduled" or action.state == actions.CANCELLED:
            actions.mark_revealed(conn, occ.id, now, missed=False)
            continue
        if not action.exact_place:
            actions.mark_revealed(conn, occ.id, now, missed=False)
            continue
        if now >= occ.start_at:
            actions.mark_revealed(conn, occ.id, now, missed=True)
            run.miss(action, occ)
            continue
        case = run.case(action.case_id)
        cursor = 0
        while True:
            ids = actions.rsvp_ids(conn, occ.id, cursor, CHUNK)
            for t in _rsvp_targets(conn, action, case, ids):
                run.written += _send_place(run, action, case, occ, t)
            if len(ids) < CHUNK:
                break
            cursor = ids[-1]
        actions.mark_revealed(conn, occ.id, now, missed=False)


def _send_place(
    run: _Run, action: Action, case: cases.Case | None, occ: Occurrence, t: _Target
) -> int:
    if t.transport is None or t.chat is None:
        return 0
    tr = Translator(t.language or run.default_lang)
    tz = safe_zone(t.timezone or run.default_tz or action.timezone)
    text = place_text(tr, action, case, occ, tz)
    key = _idem(action, occ, f"place{int(occ.reveal_at or 0)}", t.member_id, t.transport)
    row_id = outbox.enqueue(
        run.conn, transport=t.transport, chat=t.chat, member_id=t.member_id,
        body={"text": text}, priority=Priority.ALERT, now=run.now, idem_key=key,
    )  # fmt: skip
    return 1 if row_id else 0


def place_text(
    tr: Translator, action: Action, case: cases.Case | None, occ: Occurrence, tz: str
) -> str:
    return tr(
        "{title}, {when}. The exact meeting point: {place}\nPlease do not pass it on.",
        title=action_title(tr, action, case),
        when=fmt_when(tr, occ.start_at, tz, action.all_day),
        place=action.exact_place or "",
    )


def _tell_missed(run: _Run) -> None:
    """Coordinators hear about reminders (and reveals) that could not go out in time."""
    if not run.missed:
        return
    by_member: dict[int, list[tuple[int, int, float, int]]] = {}
    for action_id, items in run.missed.items():
        action = run.action(action_id)
        if action is None:
            continue
        for member_id in _coordinators(run.conn, action):
            for occ_id, start, n in items:
                by_member.setdefault(member_id, []).append((action_id, occ_id, start, n))
    for member_id, items in by_member.items():
        items.sort(key=lambda i: (i[2], i[0]))
        member = members.get(run.conn, member_id)
        tz = safe_zone((member.timezone if member else None) or run.default_tz)
        total = sum(i[3] for i in items)
        shown = items[:10]

        def render(tr: Translator, shown: list[tuple[int, int, float, int]] = shown,
                   more: int = len(items) - len(shown), total: int = total,
                   tz: str = tz) -> str:  # fmt: skip
            lines = [
                tr.plural(
                    "While the bot was offline, {n} reminder could not be sent before its "
                    "action started. It was not sent late.",
                    "While the bot was offline, {n} reminders could not be sent before their "
                    "actions started. They were not sent late.",
                    total,
                )
            ]
            for action_id, _occ, start, _n in shown:
                lines.append(f"• #{action_id} — {fmt_when(tr, start, tz)}")
            if more:
                lines.append(tr("… and {n} more.", n=more))
            lines.append(tr("Details: /headcount ID"))
            return "\n".join(lines)

        key = f"actmiss:{member_id}:{items[0][1]}:{items[-1][1]}:{total}"
        run.written += notify_member(
            run.conn, member_id, render, now=run.now, priority=Priority.ALERT, idem_key=key
        )


def _coordinators(conn: Connection, action: Action) -> list[int]:
    if action.case_id is not None:
        return cases.coordinators_of(conn, action.case_id)
    if action.created_by is not None:
        creator = members.get(conn, action.created_by)
        if creator is not None and creator.role in COORDINATORS:
            return [creator.id]
    return members.with_role(conn, ("coordinator", "admin"))


def housekeeping(conn: Connection, now: float) -> int:
    """Forget who joined past occurrences (keep the count) and end past one-offs."""
    actions.settle_past(conn, now - RSVP_KEEP)
    actions.end_past_one_offs(conn, now)
    return 0


def upcoming(conn: Connection) -> list[tuple[str, str]]:
    """Next reminders for `vigil status`: time and action number, no titles."""
    return [
        (_utc(due).strftime("%Y-%m-%dT%H:%M:%SZ"), f"reminder for action #{action_id}")
        for due, action_id in actions.upcoming_reminders(conn, 5)
    ]


# -- creating, changing, cancelling ---------------------------------------------------------


def create_action(
    conn: Connection,
    *,
    kind: str,
    title: str | None,
    case_id: int | None,
    rule: rec.Rule,
    tz: str,
    once_at: float | None,
    audience: str,
    reminders: tuple[int, ...],
    now: float,
    place: str | None = None,
    all_day: bool = False,
    origin: str = "manual",
    created_by: int | None = None,
) -> Action:
    action_id = actions.create(
        conn, kind=kind, title=title, case_id=case_id, rule=rec.format_rule(rule), timezone=tz,
        once_at=once_at, audience=audience, reminders=reminders, now=now, place=place,
        all_day=all_day, origin=origin, created_by=created_by,
    )  # fmt: skip
    action = actions.get(conn, action_id)
    assert action is not None
    materialise(conn, action, now)
    fresh = actions.get(conn, action_id)
    assert fresh is not None
    return fresh


def replan(conn: Connection, action: Action, now: float, tell: Callable[..., None] | None) -> None:
    """The action's time changed: move a one-off (RSVPs kept), or drop a recurring action's
    future occurrences (their RSVPs end) and materialise them again."""
    fresh = actions.get(conn, action.id)
    assert fresh is not None
    if fresh.once_at is not None:
        occ = actions.next_occurrence(conn, fresh.id, now) or _latest(conn, fresh.id)
        if occ is not None and occ.start_at > now:
            actions.move_occurrence(
                conn, occ.id, fresh.once_at, _reveal_at(fresh, fresh.once_at, now)
            )
            plan_reminders(conn, fresh, occ.id, fresh.once_at, now)
            actions.update(conn, fresh.id, last_start=fresh.once_at, horizon_at=None)
            if tell is not None:
                tell(occ, "moved")
            return
        actions.update(conn, fresh.id, last_start=None)
    else:
        for occ in actions.future_occurrences(conn, fresh.id, now):
            actions.cancel_occurrence(conn, occ.id)
            if tell is not None:
                tell(occ, "changed")
        actions.update(conn, fresh.id, last_start=now)
    again = actions.get(conn, fresh.id)
    assert again is not None
    materialise(conn, again, now)


def _latest(conn: Connection, action_id: int) -> Occurrence | None:
    found = actions.recent_occurrences(conn, action_id, float("inf"), 1)
    return found[0] if found else None


def replan_reminders(conn: Connection, action: Action, now: float) -> None:
    fresh = actions.get(conn, action.id)
    assert fresh is not None
    for occ in actions.future_occurrences(conn, fresh.id, now):
        actions.drop_pending_reminders(conn, occ.id)
        plan_reminders(conn, fresh, occ.id, occ.start_at, now)


def replan_reveals(conn: Connection, action: Action, now: float) -> None:
    fresh = actions.get(conn, action.id)
    assert fresh is not None
    for occ in actions.future_occurrences(conn, fresh.id, now):
        actions.set_reveal(conn, occ.id, _reveal_at(fresh, occ.start_at, now))


def cancel_action(
    conn: Connection, action: Action, now: float, tell: Callable[..., None] | None
) -> int:
    """Cancel an action and its future occurrences; returns how many occurrences were called off."""
    future = actions.future_occurrences(conn, action.id, now)
    for occ in future:
        actions.cancel_occurrence(conn, occ.id)
        if tell is not None:
            tell(occ, "cancelled")
    actions.update(conn, action.id, state=actions.CANCELLED, horizon_at=None, exact_place=None)
    return len(future)


def tell_joined(conn: Connection, action: Action, now: float) -> Callable[[Occurrence, str], None]:
    """A function that tells everyone who joined an occurrence that it moved, changed or was
    cancelled (streamed over the RSVPs in chunks)."""

    def tell(occ: Occurrence, what: str) -> None:
        fresh = actions.get(conn, action.id) or action
        case = cases.get(conn, fresh.case_id) if fresh.case_id else None
        moved = actions.get_occurrence(conn, occ.id) or occ
        cursor = 0
        while True:
            ids = actions.rsvp_ids(conn, occ.id, cursor, CHUNK)
            for member_id in ids:
                member = members.get(conn, member_id)
                tz = safe_zone((member.timezone if member else None) or fresh.timezone)

                def render(tr: Translator, tz: str = tz) -> str:
                    title = action_title(tr, fresh, case)
                    old = fmt_when(tr, occ.start_at, tz, fresh.all_day)
                    if what == "moved":
                        return tr(
                            "{title} has moved from {old} to {new}. You are still down as "
                            "coming; /leave {id} if you cannot make it.",
                            title=title, old=old, id=fresh.id,
                            new=fmt_when(tr, moved.start_at, tz, fresh.all_day),
                        )  # fmt: skip
                    if what == "changed":
                        return tr(
                            "{title} on {old} has been rescheduled. Please see /actions and "
                            "join again: /join {id}",
                            title=title, old=old, id=fresh.id,
                        )  # fmt: skip
                    return tr("{title} on {old} has been called off.", title=title, old=old)

                notify_member(
                    conn, member_id, render, now=now, priority=Priority.ALERT,
                    idem_key=f"a{fresh.id}:{int(occ.start_at)}:{what}{int(moved.start_at)}:{member_id}",
                )  # fmt: skip
            if len(ids) < CHUNK:
                return
            cursor = ids[-1]

    return tell


# -- court hearings from case sheets ----------------------------------------------------------


def _hearing(
    conn: Connection, case_id: int, hearing_utc: float | None, now: float, timezone: str | None
) -> tuple[int | None, str]:
    """(action id, what happened: created | moved | unchanged | cancelled | none)."""
    case = cases.get(conn, case_id)
    existing = actions.by_origin(conn, "hearing", case_id)
    stale = existing is not None and existing.once_at != hearing_utc
    if case is None or hearing_utc is None or case.status == "released" or hearing_utc <= now:
        # No hearing ahead (cleared, released, or a date that has just passed): nothing to
        # remind; a live action for another date no longer matches the sheet.
        if existing is not None and stale:
            cancel_action(conn, existing, now, tell_joined(conn, existing, now))
            return None, "cancelled"
        return (existing.id if existing else None), "none"
    all_day = bool(case.next_hearing_all_day and case.next_hearing == hearing_utc)
    tz = (
        valid_zone(timezone or "")
        or (existing.timezone if existing else None)
        or valid_zone(settings.get(conn, DEFAULT_TZ_KEY) or "")
        or "UTC"
    )
    local = datetime.fromtimestamp(hearing_utc, zone(tz))
    rule = rec.Rule("once", time(local.hour, local.minute), on_date=local.date())
    if existing is not None:
        if not stale and existing.all_day == all_day:
            return existing.id, "unchanged"
        actions.update(
            conn, existing.id, once_at=hearing_utc, all_day=all_day, rule=rec.format_rule(rule),
            timezone=tz,
        )  # fmt: skip
        replan(conn, existing, now, tell_joined(conn, existing, now))
        return existing.id, "moved"
    action = create_action(
        conn, kind="hearing", title=None, case_id=case_id, rule=rule, tz=tz, once_at=hearing_utc,
        audience="case", reminders=DEFAULT_REMINDERS, now=now, all_day=all_day, origin="hearing",
    )  # fmt: skip
    return action.id, "created"


def ensure_hearing_action(
    conn: Connection,
    case_id: int,
    hearing_utc: float | None,
    now: float,
    *,
    timezone: str | None = None,
) -> int | None:
    """Keep the case's court-hearing action in step with its next hearing (idempotent).
    None (or a released case) cancels it; a past time leaves things as they are. Returns the
    action id, or None when there is no live hearing action."""
    return _hearing(conn, case_id, hearing_utc, now, timezone)[0]


def on_case_hearing_set(ctx: Context, case_id: int, hearing_utc_epoch: float | None) -> None:
    """Called by /editcase after next_hearing changed."""
    ctx.services.poke_alarm()  # a schedule may change: re-arm after this commits
    remember_defaults(ctx)
    action_id, what = _hearing(
        ctx.conn, case_id, hearing_utc_epoch, ctx.now, ctx.services.default_timezone
    )
    if what in ("none", "unchanged"):
        return
    ctx.audit(f"action.hearing_{what}", f"case:{case_id}")
    if what == "created":
        ctx.reply(
            ctx._(
                "Court-hearing action #{id} scheduled: the case's followers will be reminded "
                "{offsets}. Headcount: /headcount {id}",
                id=action_id,
                offsets=fmt_offsets(ctx._, DEFAULT_REMINDERS),
            )
        )
    elif what == "moved":
        ctx.reply(
            ctx._(
                "Court-hearing action #{id} moved to the new date; those who joined were told.",
                id=action_id,
            )
        )
    elif what == "cancelled":
        ctx.reply(ctx._("The court-hearing action for this case was called off."))


# -- /schedule ----------------------------------------------------------------------------


def _coordinator_zone(ctx: Context) -> str:
    """The zone a coordinator's times are read in: their /timezone, else the network's."""
    member = ctx.member
    own = valid_zone(member.timezone) if member is not None and member.timezone else None
    return own or valid_zone(ctx.services.default_timezone) or "UTC"


def _usage(ctx: Context) -> str:
    return ctx._(
        "Send /schedule SLUG WHEN TITLE, or /schedule - WHEN TITLE for an action without a "
        "case. WHEN is a local time like 2026-12-01T10:00 or a rule like weekly:sun@18:00, "
        "monthly:15@19:00 or yearly:10-30@12:00 (in {tz}). Options before the title: kind=vigil "
        "(or protest, hearing, letters, callin, online, other), to=all|case|role:activist, "
        "remind=24h,1h, tz=Europe/Berlin. Send /schedule alone for step-by-step questions.",
        tz=_coordinator_zone(ctx),
    )


@commands.command(
    "schedule",
    roles=COORDINATORS,
    summary=N_("schedule an action: /schedule SLUG|- WHEN TITLE"),
    order=45,
)
def schedule(ctx: Context, args: str) -> None:
    ctx.require_member()
    remember_defaults(ctx)
    data: dict[str, Any] = {"options": {}}
    tokens = args.split()
    if not tokens:
        _ask(ctx, data)
        return
    if tokens[0].lower() in ("help", "?"):
        ctx.reply(_usage(ctx))
        return
    slug = tokens[0].lower()
    data["case_id"] = None if slug == "-" else coordinated_case(ctx, slug).id
    tokens = _take_options(ctx, tokens[1:], data)
    if tokens:
        taken = _take_when(tokens)
        if isinstance(taken, rec.WhenError):
            raise UserError(ctx._(rec.ERROR_MESSAGES[taken.code]) + "\n" + _usage(ctx))
        data["when"], n = taken
        tokens = _take_options(ctx, tokens[n:], data)
        parse_start(ctx, data["when"], _zone_of(ctx, data))  # in the past, too far ahead
        if tokens:
            data["title"] = " ".join(tokens)
            data["place"] = None
    _ask(ctx, data)


def _zone_of(ctx: Context, data: dict[str, Any]) -> str:
    return data["options"].get("tz") or _coordinator_zone(ctx)


def _missing(data: dict[str, Any]) -> str | None:
    """The first piece the coordinator has not given yet (the one-line form may give some)."""
    if "case_id" not in data:
        return "case"
    if "kind" not in data and "title" not in data:
        return "kind"
    for key in ("when", "title", "place"):
        if key not in data:
            return key
    return None


def _ask(ctx: Context, data: dict[str, Any]) -> None:
    """Ask for the first missing piece, or create the action when nothing is missing."""
    step = _missing(data)
    if step is None:
        _create_from(ctx, data)
        return
    ctx.start_flow(SCHEDULE, data, step=step)


def _continue(fc: FlowContext) -> None:
    step = _missing(fc.data)
    if step is not None:
        fc.goto(step)
        return
    fc.end()
    try:
        _create_from(fc.ctx, fc.data)
    except UserError as err:
        raise fc.fail(err.message) from None


def _ask_case(fc: FlowContext) -> str:
    return fc.ctx._(
        "Which case is this action for? Send the case's short name, or - for an action "
        "without a case. (/cancel stops.)"
    )


def _case_choices(fc: FlowContext) -> tuple[Choice, ...]:
    member = fc.ctx.require_member()
    mine = cases.coordinated_by(fc.ctx.conn, member.id, member.role)[:8]
    return (Choice(fc.ctx._("No case"), "-"), *(Choice(c.name[:40], c.slug) for c in mine))


def _answer_case(fc: FlowContext, value: str) -> None:
    value = value.strip()
    fc.data["case_id"] = None if value == "-" else coordinated_case(fc.ctx, value.lower()).id
    _continue(fc)


def _kind_choices(fc: FlowContext) -> tuple[Choice, ...]:
    return tuple(Choice(_cap(kind_label(fc.ctx._, k)), k) for k in KIND_LABELS)


def _answer_kind(fc: FlowContext, value: str) -> None:
    fc.data["kind"] = parse_kind(fc.ctx, value.strip())
    _continue(fc)


def _ask_when(fc: FlowContext) -> str:
    return fc.ctx._(
        "When? Send a date and time like 2026-12-01T10:00, or a rule like "
        "weekly:sun@18:00, monthly:15@19:00 or yearly:10-30@12:00. Times are in {tz}.",
        tz=_zone_of(fc.ctx, fc.data),
    )


def _answer_when(fc: FlowContext, value: str) -> None:
    fc.data.setdefault("options", {})
    parse_start(fc.ctx, value.strip(), _zone_of(fc.ctx, fc.data))
    fc.data["when"] = value.strip()
    _continue(fc)


def _answer_title(fc: FlowContext, value: str) -> None:
    fc.data["title"] = _clean_title(fc.ctx, value.strip())
    _continue(fc)


def _ask_place(fc: FlowContext) -> str:
    return fc.ctx._(
        'Where? A city, an address or "online": everyone invited sees it. Send - to '
        "leave it empty. An exact meeting point for those who join only can be added "
        "afterwards with /editaction ID secret TEXT."
    )


def _answer_place(fc: FlowContext, value: str) -> None:
    value = value.strip()
    fc.data["place"] = None if value == "-" else _clean_place(fc.ctx, value)
    _continue(fc)


SCHEDULE = Flow(
    FLOW,
    (
        Step("case", ask=_ask_case, answer=_answer_case, choices=_case_choices),
        Step(
            "kind",
            ask=lambda fc: fc.ctx._("What kind of action?"),
            answer=_answer_kind,
            choices=_kind_choices,
        ),
        Step("when", ask=_ask_when, answer=_answer_when),
        Step(
            "title",
            ask=lambda fc: fc.ctx._("A short title, for example: Vigil outside the embassy."),
            answer=_answer_title,
        ),
        Step(
            "place",
            ask=_ask_place,
            answer=_answer_place,
            choices=lambda fc: (Choice(fc.ctx._("No place"), "-"),),
        ),
    ),
)


def _clean_title(ctx: Context, value: str) -> str:
    return clean_text(ctx, value, label=ctx._("title"), most=120, multiline=False)


def _clean_place(ctx: Context, value: str, most: int = 200) -> str:
    return clean_text(ctx, value, label=ctx._("place"), most=most, multiline=False)


def _create_from(ctx: Context, data: dict[str, Any]) -> None:
    ctx.services.poke_alarm()  # a schedule may change: re-arm after this commits
    member = ctx.require_member()
    opts = data["options"]
    tz = _zone_of(ctx, data)
    rule, once_at = parse_start(ctx, data["when"], tz)
    case = cases.get(ctx.conn, data["case_id"]) if data["case_id"] is not None else None
    audience = opts.get("to") or ("case" if case is not None else "all")
    if audience == "case" and case is None:
        raise UserError(ctx._("Only an action for a case can go to the case's followers."))
    if case is not None and case.visibility != "public" and audience != "case":
        raise UserError(
            ctx._(
                "This case is restricted, so its actions go only to the people tied to it and "
                "its followers (to=case)."
            )
        )
    action = create_action(
        ctx.conn,
        kind=data.get("kind") or "other",
        title=_clean_title(ctx, data["title"]),
        case_id=case.id if case else None,
        rule=rule,
        tz=tz,
        once_at=once_at,
        audience=audience,
        reminders=tuple(opts["remind"]) if "remind" in opts else DEFAULT_REMINDERS,
        now=ctx.now,
        place=data.get("place"),
        created_by=member.id,
    )
    ctx.audit("action.created", f"action:{action.id}")
    ctx.reply(summary(ctx, action, created=True))


def summary(ctx: Context, action: Action, *, created: bool = False) -> str:
    case = cases.get(ctx.conn, action.case_id) if action.case_id else None
    occ = actions.next_occurrence(ctx.conn, action.id, ctx.now)
    lines = [
        (ctx._("Scheduled #{id}: {title}", id=action.id, title=action_title(ctx._, action, case))
         if created else
         ctx._("#{id}: {title}", id=action.id, title=action_title(ctx._, action, case)))
    ]  # fmt: skip
    lines.append(ctx._("Kind: {kind}", kind=kind_label(ctx._, action.kind)))
    if occ is not None:
        lines.append(
            ctx._(
                "Next: {when}", when=fmt_when(ctx._, occ.start_at, action.timezone, action.all_day)
            )
        )
    repeat = describe_rule(ctx._, _rule_of(action)) if action.once_at is None else None
    if repeat:
        lines.append(ctx._("Repeats {rule} ({tz})", rule=repeat, tz=action.timezone))
    if case is not None:
        lines.append(ctx._("Case: {name}", name=case.name))
    if action.place:
        lines.append(ctx._("Where: {place}", place=action.place))
    if action.exact_place:
        lines.append(
            ctx._(
                "Exact meeting point, sent to those who joined {before} before the start: {place}",
                before=fmt_duration(ctx._, action.reveal_before or DEFAULT_REVEAL),
                place=action.exact_place,
            )
        )
    lines.append(ctx._("Audience: {audience}", audience=audience_label(ctx._, action.audience)))
    lines.append(ctx._("Reminders: {offsets}", offsets=fmt_offsets(ctx._, action.reminders)))
    lines.append(
        ctx._(
            "Change: /editaction {id} FIELD VALUE (title, kind, when, timezone, place, secret, "
            "reveal, audience, reminders). Call off: /unschedule {id}. Headcount: /headcount {id}",
            id=action.id,
        )
    )
    return "\n".join(lines)


# -- /actions, /join, /leave, /headcount --------------------------------------------------------


_member_zone = _coordinator_zone


@commands.command("actions", roles=MEMBERS, summary=N_("upcoming solidarity actions"), order=30)
def list_actions(ctx: Context, args: str) -> None:
    member = ctx.require_member()
    coordinator = member.role in COORDINATORS
    listed = actions.upcoming_for(
        ctx.conn, ctx.now, member_id=member.id, role=member.role, coordinator=coordinator,
        limit=MAX_LISTED,
    )  # fmt: skip
    tz = _member_zone(ctx)
    if not listed:
        text = ctx._("No actions are planned right now.")
        if coordinator:
            text += "\n" + ctx._("Plan one with /schedule.")
        ctx.reply(text)
        return
    lines = [ctx._("Upcoming actions (times in {tz}; change with /timezone):", tz=tz)]
    choices: list[Choice] = []
    for item in listed:
        a, occ = item.action, item.occurrence
        case = cases.get(ctx.conn, a.case_id) if a.case_id else None
        going = actions.is_going(ctx.conn, occ.id, member.id)
        lines.append("")
        lines.append(f"#{a.id} {action_title(ctx._, a, case)} — {kind_label(ctx._, a.kind)}")
        details = [fmt_when(ctx._, occ.start_at, tz, a.all_day)]
        repeat = describe_rule(ctx._, _rule_of(a)) if a.once_at is None else None
        if repeat:
            details.append(repeat)
        if a.place:
            details.append(a.place)
        if case is not None:
            details.append(case.name)
        lines.append("  " + " · ".join(details))
        status = (
            ctx._("You are going (/leave {id})", id=a.id)
            if going
            else ctx._("Join: /join {id}", id=a.id)
        )
        if may_manage(ctx.conn, a, member):
            n = actions.headcount(ctx.conn, occ.id)
            status += " · " + ctx._.plural("{n} going", "{n} going", n)
        lines.append("  " + status)
        if not going and len(choices) < 5:
            choices.append(Choice(ctx._("Join #{id}", id=a.id), f"/join {a.id}"))
    ctx.reply("\n".join(lines), tuple(choices))


def _next_occ(ctx: Context, action: Action) -> Occurrence:
    ensure_materialised(ctx.conn, action, ctx.now)
    occ = actions.next_occurrence(ctx.conn, action.id, ctx.now)
    if occ is None:
        raise UserError(ctx._("Action #{id} has no upcoming date.", id=action.id))
    return occ


@commands.command("join", roles=MEMBERS, summary=N_("say you will come: /join ID"), order=31)
def join(ctx: Context, args: str) -> None:
    member = ctx.require_member()
    action = visible_action(ctx, args)
    occ = _next_occ(ctx, action)
    case = cases.get(ctx.conn, action.case_id) if action.case_id else None
    tz = _member_zone(ctx)
    title = action_title(ctx._, action, case)
    when = fmt_when(ctx._, occ.start_at, tz, action.all_day)
    if not actions.join(ctx.conn, occ.id, member.id, ctx.now):
        ctx.reply(ctx._("You are already going to {title} on {when}.", title=title, when=when))
        return
    lines = [ctx._("You are going to {title} on {when}. Thank you!", title=title, when=when)]
    if action.reminders:
        lines.append(
            ctx._("We will remind you {offsets}.", offsets=fmt_offsets(ctx._, action.reminders))
        )
    if action.exact_place:
        if occ.reveal_at is not None and occ.reveal_at <= ctx.now:
            lines.append(
                ctx._(
                    "The exact meeting point: {place}\nPlease do not pass it on.",
                    place=action.exact_place,
                )
            )
        else:
            lines.append(
                ctx._(
                    "The exact meeting point will be sent to you {before} before the start.",
                    before=fmt_duration(ctx._, action.reveal_before or DEFAULT_REVEAL),
                )
            )
    lines.append(ctx._("If your plans change: /leave {id}", id=action.id))
    ctx.reply("\n".join(lines))


@commands.command("leave", roles=MEMBERS, summary=N_("you can no longer come: /leave ID"), order=32)
def leave(ctx: Context, args: str) -> None:
    member = ctx.require_member()
    action = visible_action(ctx, args)
    occ = _next_occ(ctx, action)
    if actions.leave(ctx.conn, occ.id, member.id):
        ctx.reply(ctx._("Noted: you are no longer going to #{id}.", id=action.id))
    else:
        ctx.reply(ctx._("You had not joined #{id}.", id=action.id))


@commands.command(
    "headcount", roles=COORDINATORS, summary=N_("who is coming: /headcount ID"), order=46
)
def headcount(ctx: Context, args: str) -> None:
    action = visible_action(ctx, args, manage=True)
    ensure_materialised(ctx.conn, action, ctx.now)
    case = cases.get(ctx.conn, action.case_id) if action.case_id else None
    tz = _member_zone(ctx)
    lines = [ctx._("#{id}: {title}", id=action.id, title=action_title(ctx._, action, case))]
    occ = actions.next_occurrence(ctx.conn, action.id, ctx.now)
    if occ is not None:
        n = actions.headcount(ctx.conn, occ.id)
        lines.append(
            ctx._.plural(
                "Next, {when}: {n} person going.", "Next, {when}: {n} people going.", n,
                when=fmt_when(ctx._, occ.start_at, tz, action.all_day),
            )
        )  # fmt: skip
    else:
        lines.append(ctx._("No upcoming date."))
    for past in actions.recent_occurrences(ctx.conn, action.id, ctx.now, 3):
        n = actions.headcount(ctx.conn, past.id)
        line = ctx._.plural(
            "{when}: {n} person said they would come.",
            "{when}: {n} people said they would come.",
            n,
            when=fmt_when(ctx._, past.start_at, tz, action.all_day),
        )
        if past.state == "cancelled":
            line += " " + ctx._("(called off)")
        if past.skipped:
            line += " " + ctx._.plural(
                "{n} reminder missed while the bot was offline.",
                "{n} reminders missed while the bot was offline.",
                past.skipped,
            )
        lines.append(line)
    stats = actions.reminder_stats(ctx.conn, action.id)
    lines.append(
        ctx._(
            "Reminders: {sent} sent ({late} late), {skipped} missed while the bot was offline, "
            "{merged} folded into another, {pending} to come.",
            sent=stats.get("sent", 0),
            late=stats.get("late", 0),
            skipped=stats.get("skipped", 0),
            merged=stats.get("merged", 0),
            pending=stats.get("pending", 0) + stats.get("sending", 0),
        )
    )
    ctx.reply("\n".join(lines))


# -- /editaction, /unschedule, /template ----------------------------------------------------------

EDIT_FIELDS = {
    "title": "title",
    "kind": "kind",
    "when": "when",
    "time": "when",
    "timezone": "timezone",
    "tz": "timezone",
    "place": "place",
    "secret": "secret",
    "exact_place": "secret",
    "meeting_point": "secret",
    "reveal": "reveal",
    "audience": "audience",
    "to": "audience",
    "reminders": "reminders",
    "remind": "reminders",
}


@commands.command(
    "editaction",
    roles=COORDINATORS,
    summary=N_("change an action: /editaction ID FIELD VALUE"),
    order=47,
)
def edit_action(ctx: Context, args: str) -> None:
    ctx.services.poke_alarm()  # a schedule may change: re-arm after this commits
    parts = args.split(None, 2)
    usage = ctx._(
        "Send /editaction ID FIELD VALUE. Fields: title, kind, when, timezone, place, secret "
        "(the exact meeting point, sent only to those who joined), reveal (how long before the "
        "start it is sent, e.g. 2h), audience (all, case, role:ROLE), reminders (e.g. 24h,1h or "
        "off). A dash clears place and secret."
    )
    if len(parts) < 3:
        if parts:
            visible_action(ctx, parts[0], manage=True)
        raise UserError(usage)
    action = visible_action(ctx, parts[0], manage=True)
    if action.state != actions.ACTIVE:
        raise UserError(ctx._("Action #{id} has already taken place.", id=action.id))
    fld = EDIT_FIELDS.get(parts[1].lower().replace("-", "_")[:20])
    if fld is None:
        raise UserError(usage)
    value = parts[2].strip()
    conn, now = ctx.conn, ctx.now
    case = cases.get(conn, action.case_id) if action.case_id else None
    if fld == "title":
        title = None if value == "-" and action.origin != "manual" else _clean_title(ctx, value)
        actions.update(conn, action.id, title=title)
    elif fld == "kind":
        actions.update(conn, action.id, kind=parse_kind(ctx, value))
    elif fld in ("when", "timezone"):
        tz = action.timezone
        when = value
        if fld == "timezone":
            found = valid_zone(value)
            if found is None:
                raise UserError(
                    ctx._(
                        "I don't know that time zone. Use a name like Europe/Minsk or Asia/Tehran."
                    )
                )
            tz, when = found, action.rule
        rule, once_at = parse_start(ctx, when, tz)
        if (once_at is None) != (action.once_at is None):
            raise UserError(
                ctx._(
                    "A one-off action stays one-off and a repeating one keeps repeating: call "
                    "this one off (/unschedule {id}) and schedule a new one.",
                    id=action.id,
                )
            )
        actions.update(
            conn, action.id, rule=rec.format_rule(rule), timezone=tz, once_at=once_at,
            all_day=False,
        )  # fmt: skip
        replan(conn, action, now, tell_joined(conn, action, now))
    elif fld == "place":
        actions.update(conn, action.id, place=None if value == "-" else _clean_place(ctx, value))
    elif fld == "secret":
        exact = None if value == "-" else _clean_place(ctx, value, most=300)
        actions.update(conn, action.id, exact_place=exact)
        replan_reveals(conn, action, now)
    elif fld == "reveal":
        actions.update(conn, action.id, reveal_before=parse_duration(ctx, value))
        replan_reveals(conn, action, now)
    elif fld == "audience":
        audience = parse_audience(ctx, value)
        if audience == "case" and case is None:
            raise UserError(ctx._("Only an action for a case can go to the case's followers."))
        if case is not None and case.visibility != "public" and audience != "case":
            raise UserError(
                ctx._(
                    "This case is restricted, so its actions go only to the people tied to it "
                    "and its followers (to=case)."
                )
            )
        actions.update(conn, action.id, audience=audience)
    elif fld == "reminders":
        actions.update(conn, action.id, reminders=parse_offsets(ctx, value))
        replan_reminders(conn, action, now)
    ctx.audit("action.edited", f"action:{action.id}:{fld}")
    fresh = actions.get(conn, action.id)
    assert fresh is not None
    ctx.reply(summary(ctx, fresh))


@commands.command(
    "unschedule", roles=COORDINATORS, summary=N_("call off an action: /unschedule ID"), order=48
)
def unschedule(ctx: Context, args: str) -> None:
    ctx.services.poke_alarm()  # a schedule may change: re-arm after this commits
    action = visible_action(ctx, args, manage=True)
    if action.state != actions.ACTIVE:
        raise UserError(ctx._("Action #{id} has already taken place.", id=action.id))
    n = cancel_action(ctx.conn, action, ctx.now, tell_joined(ctx.conn, action, ctx.now))
    ctx.audit("action.cancelled", f"action:{action.id}")
    ctx.reply(
        ctx._.plural(
            "Action #{id} is called off ({n} date). Those who had joined are told.",
            "Action #{id} is called off ({n} dates). Those who had joined are told.",
            n,
            id=action.id,
        )
    )


@commands.command(
    "template",
    roles=COORDINATORS,
    summary=N_("built-in actions such as 30 October: /template oct30 on"),
    order=49,
)
def template(ctx: Context, args: str) -> None:
    ctx.services.poke_alarm()  # a schedule may change: re-arm after this commits
    member = ctx.require_member()
    remember_defaults(ctx)
    parts = args.lower().split()
    if not parts:
        lines = [ctx._("Built-in actions:")]
        for t in TEMPLATES.values():
            live = actions.by_origin(ctx.conn, f"template:{t.name}")
            state = ctx._("on, #{id}", id=live.id) if live else ctx._("off")
            lines.append(f"• {t.name} — {ctx._(t.title)} ({state})")
        lines.append(ctx._("Switch one on: /template NAME on [HH:MM]; off: /template NAME off"))
        ctx.reply("\n".join(lines))
        return
    t = TEMPLATES.get(parts[0])
    if t is None or len(parts) < 2 or parts[1] not in ("on", "off"):
        raise UserError(
            ctx._(
                "Send /template oct30 on (or off). Built-in: {names}.", names=", ".join(TEMPLATES)
            )
        )
    live = actions.by_origin(ctx.conn, f"template:{t.name}")
    if parts[1] == "off":
        if live is None:
            ctx.reply(ctx._("{title} is already off.", title=ctx._(t.title)))
            return
        cancel_action(ctx.conn, live, ctx.now, tell_joined(ctx.conn, live, ctx.now))
        ctx.audit("action.template_off", f"action:{live.id}")
        ctx.reply(ctx._("{title} is off.", title=ctx._(t.title)))
        return
    if live is not None:
        ctx.reply(summary(ctx, live))
        return
    rule_text = t.rule
    if len(parts) > 2:
        if not re.fullmatch(r"\d{1,2}:\d{2}", parts[2]):
            raise UserError(ctx._("Give the time as HH:MM, for example 12:00."))
        rule_text = t.rule.split("@")[0] + "@" + parts[2]
    try:
        rule = rec.parse_when(rule_text)
    except rec.WhenError as err:
        raise _when_error(ctx, err) from None
    tz = valid_zone(ctx.services.default_timezone) or "UTC"
    action = create_action(
        ctx.conn, kind=t.kind, title=None, case_id=None, rule=rule, tz=tz, once_at=None,
        audience="all", reminders=t.reminders, now=ctx.now, origin=f"template:{t.name}",
        created_by=member.id,
    )  # fmt: skip
    ctx.audit("action.template_on", f"action:{action.id}")
    ctx.reply(summary(ctx, action, created=True))


# -- registration with the scheduler --------------------------------------------------------------


def _housekeeping(job: JobContext) -> int:
    return housekeeping(job.conn, job.now)


def capability() -> Capability:
    return Capability(
        "actions",
        commands=tuple(commands),
        flows=(SCHEDULE,),
        jobs=(PeriodicJob("actions-housekeeping", _housekeeping, 600),),
        alarm=Alarm(fire=lambda job: fire_due(job.conn, job.now), next_due=next_wakeup),
        upcoming=(upcoming,),
    )


__all__ = [
    "ensure_hearing_action",
    "fire_due",
    "materialise",
    "next_wakeup",
    "upcoming",
]
