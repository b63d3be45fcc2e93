"""Persistent fixed-window counters with lock-out, for invite brute force and abuse limits."""

from __future__ import annotations

from storage.db import Connection


def hit(
    conn: Connection, bucket: str, *, limit: int, window: float, lockout: float, now: float
) -> bool:
    """Count one attempt; False when the bucket is over its limit or locked out."""
    row = conn.execute(
        "SELECT window_start, count, locked_until FROM rate_buckets WHERE bucket = ?", (bucket,)
    ).fetchone()
    if row is None:
        conn.execute(
            "INSERT INTO rate_buckets (bucket, window_start, count) VALUES (?, ?, 1)", (bucket, now)
        )
        return True
    start, count, locked_until = row
    if locked_until > now:
        return False
    if now - start >= window:
        start, count = now, 0
    count += 1
    locked = now + lockout if count > limit else 0
    conn.execute(
        "UPDATE rate_buckets SET window_start = ?, count = ?, locked_until = ? WHERE bucket = ?",
        (start, count, locked, bucket),
    )
    return count <= limit


def purge(conn: Connection, cutoff: float) -> int:
    return conn.execute(
        "DELETE FROM rate_buckets WHERE window_start < ? AND locked_until < ?", (cutoff, cutoff)
    ).rowcount
