"""Someone holding the data dir and the database key cannot tell which relative sent which
report (issue 13 item 1; THREATS rule 11).

Three relatives of one case each report (one by the wizard, one in one line, one an emergency)
at different minutes. Then the attacker's joins, on the decrypted database: every timestamp of
every row that names a member, against every time that belongs to a report or an alert; inbox
keys; outbox rows; audit rows; the alert's sender. 0 of 3 reports may be linked, and no page or
WAL frame may hold a relative's platform key ("uuid:timestamp").
"""

from __future__ import annotations

from typing import Any

from bot.router import CommandRateLimiter
from storage import crypto, outbox
from storage.store import Store
from tests import sqlcipher_pages as pages
from tests.harness import ChatHarness

RELATIVES = ("rel-a", "rel-b", "rel-c")
MEMBER_COLUMNS = ("member_id", "actor_id", "reporter_id", "created_by", "author_id", "acked_by")


def network(store: Store) -> ChatHarness:
    chat = ChatHarness(store)
    chat.router.limiter = CommandRateLimiter(rate_per_minute=100_000, burst=100_000)
    chat.services.sealing_public = crypto.sealing_keypair().public
    chat.case("nasrin", "Nasrin S.", "restricted")
    chat.member("coo", "coordinator", coordinates=("nasrin",), transport="signal")
    for who in RELATIVES:
        chat.member(who, "family", family_of=("nasrin",), transport="signal")
    return chat


def deliver(chat: ChatHarness) -> None:
    now = chat.clock()
    for item in chat.run(outbox.claim, "signal", 10_000, now):
        chat.run(outbox.mark_sent, item.id, "ref", now)
    chat.run(outbox.scrub_final, now)


def member_times(conn: Any, relatives: set[int]) -> list[tuple[str, int, float]]:
    """(table, member id, time) for every REAL value in a row that names a relative."""
    out = []
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    for table in tables:
        cols = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
        ids = [c for c in cols if c in MEMBER_COLUMNS] + (["id"] if table == "members" else [])
        for row in conn.execute(f"SELECT * FROM {table}"):
            values = dict(zip(cols, row, strict=True))
            for col in ids:
                if values[col] in relatives:
                    out += [(table, values[col], float(v)) for c, v in values.items()
                            if isinstance(v, float) and c != col]  # fmt: skip
    return out


def report_times(conn: Any) -> list[tuple[str, float]]:
    out = [("report", t) for (t,) in conn.execute("SELECT created_at FROM reports")]
    out += [("alert", t) for (t,) in conn.execute("SELECT created_at FROM urgent_alerts")]
    out += [("attachment", t) for (t,) in conn.execute("SELECT created_at FROM report_attachments")]
    return out


def test_no_join_names_the_reporter(store: Store) -> None:
    chat = network(store)
    chat.clock.advance(3 * 86400)  # they joined days ago
    chat.clock.now = chat.clock.now // 3600 * 3600 + 7 * 60  # 07 past an hour
    for step in ("/report", "/pick kind visit", "/pick date today", "/skip", "/skip", "/skip"):
        chat.say("rel-a", step, transport="signal")
    chat.say("rel-a", "SENTINEL-A he is thin", transport="signal")
    chat.say("rel-a", "/skip", transport="signal")
    chat.clock.advance(13 * 60)
    chat.say("rel-b", "/report SENTINEL-B he has a cough", transport="signal")
    chat.clock.advance(21 * 60)
    chat.say("rel-c", "/urgent SENTINEL-C taken away", transport="signal")
    chat.clock.advance(2 * 60)
    chat.say("coo", "/ack 1", transport="signal")
    chat.clock.advance(20 * 60)  # the "more photos" window and every live copy are over
    deliver(chat)
    chat.say("rel-a", "/help", transport="signal")  # later activity is not a clue either
    deliver(chat)

    relatives = {chat.members[w] for w in RELATIVES}

    def attack(conn: Any) -> tuple[list[Any], list[Any], list[Any]]:
        linked = [
            (what, table, mid)
            for what, rt in report_times(conn)
            for table, mid, mt in member_times(conn, relatives)
            if abs(mt - rt) < 120  # anything within two minutes of a report's time
        ]
        audit = conn.execute(
            f"SELECT action FROM audit WHERE actor_id IN ({','.join('?' * len(relatives))})",
            tuple(relatives),
        ).fetchall()
        alerts = conn.execute("SELECT reporter_id FROM urgent_alerts").fetchall()
        return linked, audit, alerts

    assert chat.run(lambda c: c.execute("SELECT count(*) FROM reports").fetchone()[0]) == 3
    linked, audit, alerts = chat.run(attack)
    assert linked == [], f"{len(linked)} joins name a reporter: {linked[:3]}"
    assert audit == []  # nothing a relative did is audited under their number
    assert alerts == [(None,)]  # the sender of the emergency is forgotten at the ack
    # No platform key of a relative ("uuid:timestamp") anywhere, pages and WAL frames alike.
    key = store.subkeys.database
    assert pages.find(store.data_dir, key, *(f"{w}:" for w in RELATIVES)) == []
    assert pages.find(store.data_dir, key, "SENTINEL-A", "SENTINEL-B", "SENTINEL-C") == []
