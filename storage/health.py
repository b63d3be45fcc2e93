"""Loop health as the running bot last wrote it: one row per supervised loop, and the process."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from storage.db import Connection

PROCESS = "*"  # the row that stands for the process itself
GRANULE = 60.0  # stored times are rounded down to this (THREATS rule 11)


@dataclass(frozen=True)
class LoopRecord:
    name: str
    state: str  # running | failing | wedged | restarting | stopped
    restarts: int = 0
    failures: int = 0
    failures_in_row: int = 0
    last_failure: str | None = None  # an exception's type name
    last_failure_at: float | None = None
    alerted_at: float | None = None
    updated_at: float = 0.0


def coarse(at: float | None, *, up: bool = False) -> float | None:
    if at is None:
        return None
    down = at - at % GRANULE
    return down + GRANULE if up and down < at else down


def save(conn: Connection, process_state: str, loops: Sequence[LoopRecord], now: float) -> None:
    """Replace the stored picture with this one (loops of an earlier run that no longer exist
    disappear)."""
    rows = [LoopRecord(PROCESS, process_state), *loops]
    conn.execute("DELETE FROM loop_health")
    conn.executemany(
        "INSERT INTO loop_health (name, state, restarts, failures, failures_in_row, "
        "last_failure, last_failure_at, alerted_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                r.name, r.state, r.restarts, r.failures, r.failures_in_row, r.last_failure,
                # Alert times round up: a restarted bot must not alert again within the hour.
                coarse(r.last_failure_at), coarse(r.alerted_at, up=True), coarse(now),
            )
            for r in rows
        ],
    )  # fmt: skip


def load(conn: Connection) -> tuple[LoopRecord | None, list[LoopRecord]]:
    """(the process row, the loops by name)."""
    rows = [
        LoopRecord(*r)
        for r in conn.execute(
            "SELECT name, state, restarts, failures, failures_in_row, last_failure, "
            "last_failure_at, alerted_at, updated_at FROM loop_health ORDER BY name"
        )
    ]
    process = next((r for r in rows if r.name == PROCESS), None)
    return process, [r for r in rows if r.name != PROCESS]


def alerted(conn: Connection) -> dict[str, float]:
    """When each loop was last the subject of an admin alert."""
    return dict(
        conn.execute(
            "SELECT name, alerted_at FROM loop_health WHERE alerted_at IS NOT NULL AND name != ?",
            (PROCESS,),
        ).fetchall()
    )
