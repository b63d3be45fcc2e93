"""Retention: how long each kind of data is kept, in one table, and the job that enforces it.

THREATS.md rule 8: retention is enforced by scheduled jobs, per kind of data, and is visible
to users. `Retention` below is the only place the periods live. `enforce` is what the
scheduler's housekeeping job runs (bot/scheduler.py, every 6 hours and once shortly after
start, so a bot that restarts daily still purges), and `/mydata` (handlers/privacy.py) reads
the same values through `current(conn)` to tell a member what is kept about them and for how
long.

Defaults, and why:

=====================  ==========  ==========================================================
kind                   default     what goes, and when
=====================  ==========  ==========================================================
inbox_keys             30 days     platform message keys of handled messages (replay guard).
                                   Signal keys contain the sender's uuid (see `forget_member`).
delivered_messages     14 days     outbox rows in a final state (sent, failed, cancelled...).
                                   Report live copies are blanked within a minute anyway.
wizard_state           2 days      an unfinished dialog (conversations) and report drafts.
rate_buckets           2 days      invite brute-force counters (keyed hashes, no ids).
report_bodies          365 days    sealed reports and their sealed attachments. The server
                                   cannot open them; export offline before they expire.
urgent_alerts          30 days     closed emergency alerts (acknowledged or expired). The
                                   link to the relative is dropped at the acknowledgement.
broadcasts             30 days     finished broadcasts and case-alert fan-outs (their text
                                   and the author's progress chat).
rsvps                  2 days      who said they would come, after the action took place
                                   (storage.actions.settle_past keeps only the count).
audit                  365 days    privileged acts: member number, action, internal ids.
=====================  ==========  ==========================================================

Invites that are used up or expired are removed at every run; they have no period.

Operators may change a period with `vigil retention KIND DAYS`; the value is stored in the
encrypted settings table (`retention.<kind>`, seconds) within the bounds in `BOUNDS`, so an
operator cannot, for example, keep inbox keys for less than Telegram's 24-hour re-delivery
window (replays would act twice).

Deletion inside the encrypted database uses `secure_delete` (freed pages are zeroed). Copies
of old pages in backups stay readable to whoever can open those backups: see storage/backup.py.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from storage import actions, conversations, inbox, invites, outbox, ratelimits, settings
from storage.db import Connection

log = logging.getLogger(__name__)

DAY = 86400.0
SETTING_PREFIX = "retention."
BATCH = 1000  # rows per table per run for the bigger deletes: bounded time on the writer thread


@dataclass(frozen=True)
class Retention:
    """How long each kind of record is kept, in seconds. The single source of these numbers."""

    inbox_keys: float = 30 * DAY  # Telegram re-delivers for 24 h at most; Signal may replay later
    delivered_messages: float = 14 * DAY
    wizard_state: float = 2 * DAY
    rate_buckets: float = 2 * DAY
    report_bodies: float = 365 * DAY
    urgent_alerts: float = 30 * DAY
    broadcasts: float = 30 * DAY
    rsvps: float = 2 * DAY  # handlers/actions.RSVP_KEEP should read this value
    audit: float = 365 * DAY

    def days(self, kind: str) -> int:
        return max(1, round(getattr(self, kind) / DAY))


KINDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Retention))

# (least, most) seconds an operator may set per kind.
BOUNDS: dict[str, tuple[float, float]] = {
    "inbox_keys": (2 * DAY, 90 * DAY),
    "delivered_messages": (1 * DAY, 90 * DAY),
    "wizard_state": (1 * DAY, 14 * DAY),
    "rate_buckets": (1 * DAY, 14 * DAY),
    "report_bodies": (7 * DAY, 10 * 365 * DAY),
    "urgent_alerts": (3 * DAY, 365 * DAY),
    "broadcasts": (2 * DAY, 365 * DAY),
    "rsvps": (1 * DAY, 90 * DAY),
    "audit": (30 * DAY, 5 * 365 * DAY),
}


class RetentionError(ValueError):
    """An unknown kind or a period outside its bounds; the message is one sentence."""


def current(conn: Connection) -> Retention:
    """The defaults with the operator's overrides from the settings table applied."""
    values: dict[str, float] = {}
    for kind in KINDS:
        raw = settings.get(conn, SETTING_PREFIX + kind)
        if raw is None:
            continue
        try:
            seconds = float(raw)
        except ValueError:
            continue  # a damaged override falls back to the default
        least, most = BOUNDS[kind]
        if least <= seconds <= most:
            values[kind] = seconds
    return dataclasses.replace(Retention(), **values)


def set_period(conn: Connection, kind: str, days: float) -> Retention:
    if kind not in KINDS:
        raise RetentionError(f"Unknown kind of data {kind!r}; one of: {', '.join(KINDS)}.")
    least, most = BOUNDS[kind]
    seconds = float(days) * DAY
    if not least <= seconds <= most:
        raise RetentionError(
            f"{kind} must be kept between {least / DAY:g} and {most / DAY:g} days."
        )
    settings.put(conn, SETTING_PREFIX + kind, repr(seconds))
    return current(conn)


# --- enforcement -----------------------------------------------------------------------------


def _purge_reports(conn: Connection, cutoff: float) -> int:
    # Attachments go with their report (ON DELETE CASCADE); urgent_alerts.report_id and
    # case_updates.report_id are SET NULL by their foreign keys (the public update stays).
    return conn.execute(
        "DELETE FROM reports WHERE id IN (SELECT id FROM reports WHERE created_at < ? LIMIT ?)",
        (cutoff, BATCH),
    ).rowcount


def _purge_alerts(conn: Connection, cutoff: float) -> int:
    return conn.execute(
        "DELETE FROM urgent_alerts WHERE id IN (SELECT id FROM urgent_alerts WHERE "
        "(acked_at IS NOT NULL OR expired_at IS NOT NULL) AND created_at < ? LIMIT ?)",
        (cutoff, BATCH),
    ).rowcount


def _purge_broadcasts(conn: Connection, cutoff: float) -> int:
    return conn.execute(
        "DELETE FROM broadcasts WHERE id IN (SELECT id FROM broadcasts WHERE "
        "state IN ('done', 'cancelled', 'expired') AND coalesce(finished_at, created_at) < ? "
        "LIMIT ?)",
        (cutoff, BATCH),
    ).rowcount


def _purge_audit(conn: Connection, cutoff: float) -> int:
    return conn.execute("DELETE FROM audit WHERE at < ?", (cutoff,)).rowcount


def _settle_rsvps(conn: Connection, cutoff: float) -> int:
    return actions.settle_past(conn, cutoff)


def enforce(conn: Connection, now: float, retention: Retention | None = None) -> dict[str, int]:
    """Delete everything older than its period; returns rows removed per table (counts only,
    safe to log)."""
    r = retention or current(conn)
    counts = {
        "inbox": inbox.purge_older_than(conn, now - r.inbox_keys),
        "outbox": outbox.purge_done(conn, now - r.delivered_messages),
        "conversations": conversations.purge_stale(conn, now - r.wizard_state),
        "invites": invites.purge_dead(conn, now),
        "rate_buckets": ratelimits.purge(conn, now - r.rate_buckets),
        "audit": _purge_audit(conn, now - r.audit),
        "reports": _purge_reports(conn, now - r.report_bodies),
        "urgent_alerts": _purge_alerts(conn, now - r.urgent_alerts),
        "broadcasts": _purge_broadcasts(conn, now - r.broadcasts),
        "rsvps": _settle_rsvps(conn, now - r.rsvps),
    }
    return counts


def housekeeping(
    conn: Connection, now: float, retention: Retention | None = None
) -> dict[str, int]:
    """The scheduler's job (kept under this name for bot/scheduler.py)."""
    return enforce(conn, now, retention)
