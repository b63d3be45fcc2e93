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
  its RSVPs kept and those who joined told, or cancelled); /editcase calls
  `on_case_hearing_set(ctx, case_id, hearing_utc_epoch)`. A hearing whose date is
  known but not its time is reminded as if it started at 09:00 and shown without a time.
* 30 October, the International Day of Political Prisoners: a built-in yearly template,
  `/template oct30 on [HH:MM]` (12:00 in the network's zone by default), for everyone, with an
  invitation a week before. `/schedule - yearly:10-30@12:00 TITLE` also works for a custom one."""

from __future__ import annotations

from bot.capability import Capability
from bot.jobs import Alarm, JobContext, PeriodicJob
from handlers.actions.commands import commands
from handlers.actions.engine import create_action, housekeeping, upcoming
from handlers.actions.flows import SCHEDULE
from handlers.actions.hearings import ensure_hearing_action, on_case_hearing_set
from handlers.actions.model import CHUNK
from handlers.actions.plan import materialise
from handlers.actions.reminders import fire_due, next_wakeup


def _housekeeping(job: JobContext) -> int:
    return housekeeping(job.conn, job.now)


def _fire(job: JobContext) -> int:
    return fire_due(job.conn, job.now)


def capability() -> Capability:
    return Capability(
        "actions",
        commands=tuple(commands),
        flows=(SCHEDULE,),
        jobs=(PeriodicJob("actions-housekeeping", _housekeeping, 600),),
        alarm=Alarm(fire=_fire, next_due=next_wakeup),
        upcoming=(upcoming,),
    )


__all__ = [
    "CHUNK",
    "capability",
    "create_action",
    "ensure_hearing_action",
    "fire_due",
    "housekeeping",
    "materialise",
    "next_wakeup",
    "on_case_hearing_set",
    "upcoming",
]
