"""Encrypted vs plain storage under Vigil's own write workload, side by side in one run.

Each handled message is what the bot really does: an inbox claim, a member lookup (and on
/start a new member + identity), the handler's work and an outbox reply, all through the real
router and the one-writer-thread Database with group commit. The same code runs on a SQLCipher
connection (raw key, synchronous=FULL, secure_delete) and on a stdlib
sqlite3 connection with the same pragmas. Prints messages/s for both and the ratio.

Then what "blanked means gone" costs: a scrub transaction alone, and followed by the WAL
checkpoint + truncation the writer runs after every scrub, side by side.

    .venv/bin/python bench/storage.py [--messages 4000] [--rounds 3] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("VIGIL_INSECURE_FAST_KDF", "1")  # unlock cost is not what we measure

import handlers  # noqa: F401
from bot.messages import Incoming
from bot.router import Router, Services
from storage import db as dbmod
from storage.store import init_network


def plain_database(directory: Path) -> dbmod.Database:
    path = directory / "plain.db"
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    for pragma in (
        "journal_mode = WAL",
        "synchronous = FULL",
        "secure_delete = ON",
        "temp_store = MEMORY",
        "foreign_keys = ON",
    ):
        conn.execute(f"PRAGMA {pragma}")
    dbmod.migrate(conn)  # type: ignore[arg-type]
    return dbmod.Database(conn, path)  # type: ignore[arg-type]


def encrypted_database(directory: Path) -> tuple[dbmod.Database, bytes]:
    store = init_network(directory / "enc", "benchmark passphrase")
    return store.db, store.subkeys.index


async def workload(db: dbmod.Database, router: Router, messages: int, concurrency: int) -> float:
    """messages/s for `messages` handled messages: half /start by new people, half /help."""
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with sem:
            person = f"p{i // 2}"
            text = "/start" if i % 2 == 0 else "/help"
            msg = Incoming(transport="bench", sender=person, chat=person, key=f"u{i}", text=text)
            await db.run(router.process, msg)

    started = time.perf_counter()
    # /start must precede /help for each person; run the two halves in order.
    await asyncio.gather(*(one(i) for i in range(0, messages, 2)))
    await asyncio.gather(*(one(i) for i in range(1, messages, 2)))
    return messages / (time.perf_counter() - started)


def run_once(kind: str, messages: int, concurrency: int) -> float:
    with tempfile.TemporaryDirectory(prefix="vigil-bench-") as tmp:
        if kind == "encrypted":
            db, index_key = encrypted_database(Path(tmp))
        else:
            db, index_key = plain_database(Path(tmp)), os.urandom(32)
        router = Router(Services(index_key=index_key))
        router.limiter.allow = lambda *a: (True, False)  # type: ignore[method-assign]
        try:
            return asyncio.run(workload(db, router, messages, concurrency))
        finally:
            db.close()


def scrub_cost(scrubs: int, backlog: int, checkpoint: bool) -> float:
    """ms per scrub transaction (blank one outbox body among `backlog` rows), with or without
    the WAL checkpoint + truncation that storage/db.py runs after a scrub commits."""
    with tempfile.TemporaryDirectory(prefix="vigil-bench-") as tmp:
        db, _ = encrypted_database(Path(tmp))
        try:
            body = '{"text":"' + "x" * 300 + '"}'
            db.run_sync(
                lambda c: c.executemany(
                    "INSERT INTO outbox (transport, chat, priority, state, body, idem_key, "
                    "attempts, created_at) VALUES ('t', ?, 1, 'sent', ?, ?, 1, 0)",
                    ((str(i), body, f"report:{i}") for i in range(backlog)),
                )
            )

            def blank(conn: object, i: int) -> None:
                conn.execute(  # type: ignore[attr-defined]
                    'UPDATE outbox SET body = \'{"text":""}\' WHERE idem_key = ?',
                    (f"report:{i}",),
                )
                if checkpoint:
                    dbmod.scrubbed(conn)  # type: ignore[arg-type]

            started = time.perf_counter()
            for i in range(scrubs):
                db.run_sync(blank, i)
            return (time.perf_counter() - started) / scrubs * 1000
        finally:
            db.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=4000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--scrubs", type=int, default=200, help="scrub transactions to time")
    args = ap.parse_args()
    rates: dict[str, list[float]] = {"plain": [], "encrypted": []}
    for _ in range(args.rounds):  # interleaved, so drift in the machine hits both alike
        for kind in ("plain", "encrypted"):
            rates[kind].append(run_once(kind, args.messages, args.concurrency))
    plain = statistics.median(rates["plain"])
    enc = statistics.median(rates["encrypted"])
    print(
        f"workload: {args.messages} handled messages (inbox + member + outbox each), "
        f"{args.concurrency} concurrent, median of {args.rounds}"
    )
    print(
        f"{'plain sqlite3':>16}: {plain:8.0f} messages/s   runs {[round(r) for r in rates['plain']]}"  # noqa: E501
    )
    print(
        f"{'SQLCipher':>16}: {enc:8.0f} messages/s   runs {[round(r) for r in rates['encrypted']]}"
    )
    print(f"{'slowdown':>16}: {plain / enc:8.2f}x  (encrypted time / plain time; target <= 1.2)")
    costs: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.rounds):
        for checkpoint in (False, True):
            costs[checkpoint].append(scrub_cost(args.scrubs, 20_000, checkpoint))
    bare, folded = statistics.median(costs[False]), statistics.median(costs[True])
    print(f"scrub: one blanking transaction among 20000 outbox rows, median of {args.rounds}")
    print(f"{'commit only':>16}: {bare:8.2f} ms")
    print(f"{'+ checkpoint':>16}: {folded:8.2f} ms   (WAL folded and truncated: blanked is gone)")


if __name__ == "__main__":
    main()
