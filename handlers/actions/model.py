"""Kinds, templates, limits and small time helpers every actions module shares."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from bot import recurrence as rec
from bot.i18n import N_
from storage.actions import Action

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


# Open supporters (joined without an invite) see an action without its place and cannot join
# (THREATS rule 15): what they are shown instead.
PLACE_FOR_VETTED = N_("The place is shared with vetted members only (those invited to join).")


JOIN_FOR_VETTED = N_(
    "Only vetted members, who joined with an invite, can sign up for actions and get their "
    "place. If a coordinator you know can vouch for you, ask them for an invite code, then "
    "send /start CODE."
)


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


def rule_of(action: Action) -> rec.Rule:
    return rec.parse_when(action.rule)


def utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)
