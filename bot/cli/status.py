"""`vigil status`: configuration, store, sealing key, outbox, transports and next jobs, never a
secret. The output is a list of lines; each section is a small function of the facts, so a new
section (say, supervised loops) is one more function in SECTIONS."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bot import config
from bot.cli.common import EXIT_OK, unlock_store
from storage import crypto, reports, sealkey

WIDTH = 14


def register(sub: Any) -> None:
    s = sub.add_parser(
        "status",
        help="configuration, store, sealing key, transports, outbox depth; no secrets",
        description="What this network looks like now: configuration (no secrets), the store, "
        "the sealing key's words, the outbox, whether each transport answers, the next "
        "scheduled jobs.",
    )
    s.set_defaults(func=cmd_status)


@dataclass
class Facts:
    """Everything status shows, read once."""

    settings: config.Settings
    schema_version: int = 0
    members: int = 0
    key_slots: int = 0
    sealing_public: bytes | None = None
    pinned_key: str | None = None
    outbox: dict[str, dict[str, int]] = field(default_factory=dict)
    transports: list[tuple[str, str]] = field(default_factory=list)
    upcoming: list[tuple[str, str]] = field(default_factory=list)
    loops: list[str] = field(default_factory=list)  # the running bot's own report (bot/health.py)
    admins: int = 0
    pending_approvals: int = 0
    open_supporters: int = 0


def line(name: str, value: str) -> str:
    return f"{name:{WIDTH}} {value}"


def config_lines(f: Facts) -> list[str]:
    return [line(k, v) for k, v in f.settings.summary().items()]


def store_lines(f: Facts) -> list[str]:
    return [
        line("store", f"unlocked, schema version {f.schema_version}, {f.members} members"),
        line("key slots", str(f.key_slots)),
    ]


def sealing_lines(f: Facts) -> list[str]:
    if not f.sealing_public:
        return [line("sealing key", "none — reports are refused")]
    if f.pinned_key and f.pinned_key != crypto.key_fingerprint(f.sealing_public):
        return [
            line("sealing key", "MISMATCH — not the key this network recorded; reports refused")
        ]
    return [line("sealing key", sealkey.fingerprint_words(f.sealing_public))]


def outbox_lines(f: Facts) -> list[str]:
    if not f.outbox:
        return [line("outbox", "empty")]
    out = []
    for transport, states in sorted(f.outbox.items()):
        counts = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
        out.append(line("outbox", f"{transport}: {counts}"))
    return out


def transport_lines(f: Facts) -> list[str]:
    return [line(name, health) for name, health in f.transports]


def job_lines(f: Facts) -> list[str]:
    if not f.upcoming:
        return [line("next jobs", "none scheduled")]
    return [line("next job", f"{when} {what}") for when, what in f.upcoming]


def approval_lines(f: Facts) -> list[str]:
    if f.admins < 2:
        return [
            line(
                "two-person",
                "cannot apply: only one administrator, so network-wide broadcasts, promotions "
                "and assignments go through at once — promote a second administrator",
            )
        ]
    return [line("two-person", f"on ({f.admins} administrators), {f.pending_approvals} pending")]


def joining_lines(f: Facts) -> list[str]:
    """Whether anyone can join by a bare /start, and how many did (issue 14 item 4)."""
    if f.settings.invite_only:
        how = "invite-only: /start without a code makes nobody a member"
    else:
        how = "open: /start without a code makes an open supporter (public news only)"
    return [line("joining", f"{how}; {f.open_supporters} open supporters")]


def loop_lines(f: Facts) -> list[str]:
    return f.loops


SECTIONS: list[Callable[[Facts], list[str]]] = [
    config_lines,
    store_lines,
    sealing_lines,
    outbox_lines,
    transport_lines,
    approval_lines,
    joining_lines,
    loop_lines,
    job_lines,
]


def status_lines(f: Facts) -> list[str]:
    return [text for section in SECTIONS for text in section(f)]


def _read(conn: Any) -> tuple[Any, ...]:
    from bot import health
    from bot.app import upcoming_jobs
    from storage import approvals, cases, members, outbox

    version = conn.execute("PRAGMA user_version").fetchone()[0]
    return (
        version,
        members.count(conn),
        outbox.depth(conn),
        upcoming_jobs(conn),
        reports.pinned_key(conn),
        health.status_lines(conn),
        len(cases.admins(conn)),
        approvals.count_pending(conn),
        members.count_open(conn),
    )


def _probe(settings: config.Settings) -> list[tuple[str, str]]:
    from bot.app import build_transports

    found = []
    for t in build_transports(settings):
        try:
            health = asyncio.run(t.probe())
        except Exception as exc:
            health = f"unreachable ({type(exc).__name__})"
        found.append((t.name, health))
    return found


def cmd_status(args: argparse.Namespace, settings: config.Settings) -> int:
    store = unlock_store(settings)
    try:
        (version, count, depth, upcoming, pinned, loops, admins, waiting, open_) = (
            store.db.run_sync(_read)
        )
    finally:
        store.close()
    facts = Facts(
        settings,
        schema_version=version,
        members=count,
        key_slots=len(store.slots.slots),
        sealing_public=store.slots.sealing_public,
        pinned_key=pinned,
        outbox=depth,
        transports=_probe(settings),
        upcoming=upcoming,
        loops=loops,
        admins=admins,
        pending_approvals=waiting,
        open_supporters=open_,
    )
    for text in status_lines(facts):
        print(text)
    return EXIT_OK
