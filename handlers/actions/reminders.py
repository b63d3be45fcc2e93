"""Firing what is due: reminders streamed to their audience, place reveals, missed ones told."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from bot.context import COORDINATORS
from bot.i18n import Translator
from bot.messages import Priority
from bot.notify import notify_member
from handlers.actions.model import CHUNK, DEFAULT_LANG_KEY, DEFAULT_TZ_KEY, FIRE_BUDGET, LATE_AFTER
from handlers.actions.plan import materialise
from handlers.actions.render import fmt_when, place_text, reminder_text
from handlers.broadcasts import quiet_until
from handlers.common import safe_zone
from storage import actions, audience, cases, members, outbox, settings
from storage.actions import Action, Occurrence
from storage.db import Connection


@dataclass(frozen=True)
class _Target:
    member_id: int
    role: str
    language: str | None
    timezone: str | None
    quiet: str | None
    transport: str | None
    chat: str | None
    vetted: bool = True  # False: an open supporter, invited without the place, never an RSVP


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
            # Open supporters are invited too, the text rendered for them without the place
            # and without /join (_write); RSVP reminders and places go to vetted members only.
            rows, new_cursor, exhausted = audience.chunk(
                conn, _segment(action, case), cursor, CHUNK, run.default_lang, reach_open=True
            )
            targets = [
                _Target(
                    r.member_id,
                    r.role,
                    r.language,
                    r.timezone,
                    r.quiet_hours,
                    r.transport,
                    None if r.held else r.chat,  # a quarantined identity: not worth holding
                    r.vetted,
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
    # An RSVP an open supporter holds (made before migration 073) earns no reminder or place.
    vetted = audience.vetted_among(conn, ids)
    return [
        _Target(*r)
        for r in rows
        if r[0] in vetted and (not restricted or r[1] in COORDINATORS or r[0] in tied)
    ]


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
    bodies: dict[tuple[str, str, bool, bool], str] = {}
    rows: list[outbox.Row] = []
    for t in targets:
        if t.transport is None or t.chat is None:
            continue
        joined = t.member_id in going and t.vetted
        tz = safe_zone(t.timezone or run.default_tz or action.timezone)
        language = t.language or run.default_lang
        not_before = 0.0
        if rem.scope == "audience" and not joined and t.quiet:
            not_before = quiet_until(t.quiet, tz, now)
            if not_before >= occ.start_at:
                continue  # after their quiet hours it would be too late to be of use
        key = (language, tz, joined, t.vetted)
        if key not in bodies:
            tr = Translator(language)
            text, choices = reminder_text(
                tr, action, case, occ, tz=tz, joined=joined, now=now, late=rem.late,
                vetted=t.vetted,
            )  # fmt: skip
            body: outbox.OutboxBody = {"text": text}
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
