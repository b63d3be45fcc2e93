"""A small network with one of every role, shared by the authorization matrix, the audit and
the hostile-input tests. Each probe runs inside a savepoint that is rolled back, so one world
serves hundreds of probes and no probe sees another's effects.

Roles (the matrix's columns):
    nonmember           never joined
    activist            a supporter
    family_this         relative of case `alpha` (restricted), the case the probes target
    family_other        relative of case `beta` (restricted)
    coordinator         coordinator assigned to `alpha`
    coordinator_other   coordinator assigned to `beta` only
    admin               administrator
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from bot.messages import Incoming
from bot.router import CommandRateLimiter
from storage import crypto
from storage.db import Connection
from tests.harness import ChatHarness

ROLES = (
    "nonmember",
    "activist",
    "family_this",
    "family_other",
    "coordinator",
    "coordinator_other",
    "admin",
)
SENDER = {
    "nonmember": "stranger",
    "activist": "act",
    "family_this": "fam",
    "family_other": "fob",
    "coordinator": "coo",
    "coordinator_other": "cob",
    "admin": "ada",
}
UNKNOWN_COMMAND = "/nosuchcommand"


@dataclass
class Probe:
    reply: str
    changes: dict[str, tuple[list[Any], list[Any]]]  # table -> (before, after), excl. inbox+reply
    alpha_changed: bool  # did anything that belongs to case alpha's authority change?
    outbox_to_others: int
    errors: list[str] = field(default_factory=list)


@dataclass
class World:
    chat: ChatHarness
    ids: dict[str, int]
    unknown: dict[str, str] = field(default_factory=dict)

    def fill(self, template: str) -> str:
        return template.format(**self.ids)

    def probe(self, role: str, text: str, *then: str) -> Probe:
        """`role` sends `text` (and then each of `then`); everything is rolled back after.
        The reply is the answer to the last message."""
        return self.chat.run(_probe, self, role, (text, *then))


_keys = itertools.count(1)


def _tables(conn: Connection) -> list[str]:
    return [
        r[0]
        for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
            "ORDER BY name"
        )
    ]


def dump(conn: Connection, skip: tuple[str, ...] = ("inbox",)) -> dict[str, list[Any]]:
    out = {}
    for table in _tables(conn):
        if table in skip:
            continue
        rows = conn.execute(f"SELECT * FROM {table}").fetchall()
        out[table] = sorted(rows, key=repr)
    return out


def alpha_dump(conn: Connection, alpha: int) -> list[Any]:
    """Everything that exercises authority over case alpha (not mere participation such as
    following it or joining its actions, which anyone who may see it may do)."""
    queries = [
        ("SELECT * FROM cases WHERE id = ?", (alpha,)),
        ("SELECT * FROM case_members WHERE case_id = ?", (alpha,)),
        ("SELECT * FROM invites WHERE case_id = ?", (alpha,)),
    ]
    optional = {
        "case_updates": "SELECT * FROM case_updates WHERE case_id = ?",
        "case_facilities": "SELECT * FROM case_facilities WHERE case_id = ?",
        "reports": "SELECT * FROM reports WHERE case_id = ?",
        "urgent_alerts": "SELECT * FROM urgent_alerts WHERE case_id = ?",
        "actions": "SELECT * FROM actions WHERE case_id = ?",
        "occurrences": "SELECT o.* FROM occurrences o JOIN actions a ON a.id = o.action_id "
        "WHERE a.case_id = ?",
        "broadcasts": "SELECT * FROM broadcasts WHERE case_id = ? OR segment = 'case:' || ?",
    }
    present = set(_tables(conn))
    out: list[Any] = []
    for sql, args in queries:
        out.append(sorted(conn.execute(sql, args).fetchall(), key=repr))
    for table, sql in optional.items():
        if table in present:
            args2 = (alpha,) * sql.count("?")
            out.append(sorted(conn.execute(sql, args2).fetchall(), key=repr))
    return out


def _probe(conn: Connection, world: World, role: str, texts: tuple[str, ...]) -> Probe:
    sender = SENDER[role]
    conn.execute("SAVEPOINT probe")
    try:
        before = dump(conn)
        alpha_before = alpha_dump(conn, world.ids["alpha"])
        rows = "SELECT id, chat, body FROM outbox"
        # Ids can be reused after a deletion (/forgetme), so new rows are found by content.
        initial = set(conn.execute(rows).fetchall())
        last: set[tuple[Any, ...]] = initial
        for text in texts:
            last = set(conn.execute(rows).fetchall())
            msg = Incoming(transport="console", sender=sender, chat=sender,
                           key=f"probe-{next(_keys)}", text=text)  # fmt: skip
            world.chat.router.process(conn, msg)
        final = conn.execute(rows + " ORDER BY id").fetchall()
        new = [r for r in final if r not in initial]
        answers = [r for r in new if r not in last and r[1] == sender]
        reply = "\n".join(json.loads(body).get("text", "") for _i, _c, body in answers)
        to_others = sum(1 for _i, c, _b in new if c != sender)
        after = dump(conn)
        # The answers to the sender are not a change of state.
        reply_ids = {i for i, c, _b in new if c == sender}
        after["outbox"] = [r for r in after["outbox"] if r[0] not in reply_ids]
        changes = {
            t: (before.get(t, []), after.get(t, []))
            for t in set(before) | set(after)
            if before.get(t) != after.get(t)
        }
        alpha_changed = alpha_dump(conn, world.ids["alpha"]) != alpha_before
    finally:
        conn.execute("ROLLBACK TO probe")
        conn.execute("RELEASE probe")
    return Probe(reply, changes, alpha_changed, to_others)


def build_world(chat: ChatHarness) -> World:
    chat.router.limiter = CommandRateLimiter(rate_per_minute=1e9, burst=10**9)
    chat.services.sealing_public = crypto.sealing_keypair().public
    ids: dict[str, int] = {}
    ids["alpha"] = chat.case("alpha", "Alpha A.", visibility="restricted")
    ids["beta"] = chat.case("beta", "Beta B.", visibility="restricted")
    ids["pub"] = chat.case("pub", "Public P.", visibility="public")
    ids["m_act"] = chat.member("act", "activist")
    ids["m_fam"] = chat.member("fam", "family", family_of=("alpha",))
    ids["m_fob"] = chat.member("fob", "family", family_of=("beta",))
    ids["m_coo"] = chat.member("coo", "coordinator", coordinates=("alpha",))
    ids["m_cob"] = chat.member("cob", "coordinator", coordinates=("beta",))
    ids["m_ada"] = chat.member("ada", "admin")
    chat.say("fam", "/report alpha We visited him on Monday; he is thin but calm.")
    chat.say("fam", "/urgent alpha He was taken to the punishment cell.")
    q = "SELECT max(id) FROM {} WHERE case_id = ?"
    ids["report"] = chat.run(
        lambda c: c.execute(q.format("reports"), (ids["alpha"],)).fetchone()[0]
    )
    ids["alert"] = chat.run(
        lambda c: c.execute(q.format("urgent_alerts"), (ids["alpha"],)).fetchone()[0]
    )
    chat.say("coo", "/schedule alpha 2026-12-01T10:00 Vigil outside the court")
    ids["action"] = chat.run(
        lambda c: c.execute(q.format("actions"), (ids["alpha"],)).fetchone()[0] or 0
    )
    for who in ("fam", "coo", "cob", "ada"):
        chat.say(who, "/subscribe alpha")
        if ids["action"]:
            chat.say(who, f"/join {ids['action']}")
    # coo's fan-outs for case alpha: one running, one waiting for a second person (a
    # network-wide broadcast: ada may approve it), one unsent draft.
    q2 = "SELECT max(id) FROM broadcasts WHERE author_id = ?"
    chat.say("coo", "/broadcast case:alpha Court at nine.")
    chat.say("coo", "/confirm")
    ids["b_running"] = chat.run(lambda c: c.execute(q2, (ids["m_coo"],)).fetchone()[0])
    chat.say("coo", "/broadcast all Vigil tomorrow at noon.")
    chat.say("coo", "/confirm")
    ids["b_waiting"] = chat.run(lambda c: c.execute(q2, (ids["m_coo"],)).fetchone()[0])
    ids["approval"] = chat.run(lambda c: c.execute("SELECT max(id) FROM approvals").fetchone()[0])
    chat.say("coo", "/broadcast case:alpha Bring candles.")
    ids["b_draft"] = chat.run(lambda c: c.execute(q2, (ids["m_coo"],)).fetchone()[0])
    for who in ("cob", "ada"):
        chat.say(who, "/broadcast all Vigil tomorrow at noon.")
    world = World(chat, ids)
    for role in ROLES:
        world.unknown[role] = world.probe(role, UNKNOWN_COMMAND).reply
    return world
