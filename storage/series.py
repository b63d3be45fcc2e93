"""Series RSVPs: members who join every date of a recurring action (migration 070)."""

from __future__ import annotations

from storage.db import Connection


def join(conn: Connection, action_id: int, member_id: int, now: float) -> bool:
    """Join the series, and every future date already materialised. False: already in it."""
    cur = conn.execute(
        "INSERT OR IGNORE INTO series_rsvps (action_id, member_id, created_at) VALUES (?, ?, ?)",
        (action_id, member_id, now),
    )
    conn.execute(
        "INSERT OR IGNORE INTO rsvps (occurrence_id, member_id, created_at) "
        "SELECT id, ?, ? FROM occurrences WHERE action_id = ? AND state = 'scheduled' "
        "AND start_at > ?",
        (member_id, now, action_id, now),
    )
    return cur.rowcount == 1


def leave(conn: Connection, action_id: int, member_id: int, now: float) -> tuple[bool, int]:
    """Leave the series and every future date of it. (was in the series, dates left)."""
    was = conn.execute(
        "DELETE FROM series_rsvps WHERE action_id = ? AND member_id = ?", (action_id, member_id)
    ).rowcount
    conn.execute(
        "DELETE FROM series_skips WHERE action_id = ? AND member_id = ?", (action_id, member_id)
    )
    dates = conn.execute(
        "DELETE FROM rsvps WHERE member_id = ? AND occurrence_id IN (SELECT id FROM occurrences "
        "WHERE action_id = ? AND start_at > ?)",
        (member_id, action_id, now),
    ).rowcount
    return was == 1, dates


def in_series(conn: Connection, action_id: int, member_id: int) -> bool:
    row = conn.execute(
        "SELECT 1 FROM series_rsvps WHERE action_id = ? AND member_id = ?", (action_id, member_id)
    ).fetchone()
    return row is not None


def count(conn: Connection, action_id: int) -> int:
    row = conn.execute(
        "SELECT count(*) FROM series_rsvps WHERE action_id = ?", (action_id,)
    ).fetchone()
    return int(row[0])


def fill_occurrence(conn: Connection, action_id: int, occurrence_id: int, now: float) -> int:
    """A new date of the series: everyone in the series is going to it."""
    return conn.execute(
        "INSERT OR IGNORE INTO rsvps (occurrence_id, member_id, created_at) "
        "SELECT o.id, s.member_id, ? FROM series_rsvps s JOIN occurrences o ON o.id = ? "
        "WHERE s.action_id = ? AND NOT EXISTS (SELECT 1 FROM series_skips k WHERE "
        "k.action_id = s.action_id AND k.member_id = s.member_id AND k.start_at = o.start_at)",
        (now, occurrence_id, action_id),
    ).rowcount


def skip(conn: Connection, action_id: int, member_id: int, start_at: float) -> None:
    conn.execute(
        "INSERT OR IGNORE INTO series_skips (action_id, member_id, start_at) VALUES (?, ?, ?)",
        (action_id, member_id, start_at),
    )


def forget_skips(conn: Connection, before: float) -> int:
    """Skips of dates that have passed are of no further use."""
    return conn.execute("DELETE FROM series_skips WHERE start_at < ?", (before,)).rowcount


def upcoming_counts(
    conn: Connection, action_id: int, now: float, limit: int
) -> list[tuple[int, float, int]]:
    """(occurrence id, start, people going) of the next materialised dates."""
    rows = conn.execute(
        "SELECT o.id, o.start_at, (SELECT count(*) FROM rsvps r WHERE r.occurrence_id = o.id) "
        "FROM occurrences o WHERE o.action_id = ? AND o.state = 'scheduled' AND o.start_at > ? "
        "ORDER BY o.start_at LIMIT ?",
        (action_id, now, limit),
    ).fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


def drop_after(conn: Connection, action_id: int, starts: list[float]) -> None:
    """Dates beyond a shortened series' new end: gone, with their reminders and RSVPs, so a
    later extension can materialise them again."""
    conn.executemany(
        "DELETE FROM occurrences WHERE action_id = ? AND start_at = ?",
        [(action_id, s) for s in starts],
    )


def latest_start(conn: Connection, action_id: int) -> float | None:
    row = conn.execute(
        "SELECT max(start_at) FROM occurrences WHERE action_id = ?", (action_id,)
    ).fetchone()
    return row[0]
