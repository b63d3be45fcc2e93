"""Members and their platform identities."""

from __future__ import annotations

from dataclasses import dataclass

from storage.db import Connection

ROLES = ("activist", "family", "coordinator", "admin")

# The words people use for a role. The stored names are the code's; replies call them
# supporter, relative, coordinator and administrator (handlers/common.role_label), and every
# command and `vigil invite --role` accept both.
ROLE_ALIASES = {
    "activist": "activist",
    "activists": "activist",
    "supporter": "activist",
    "supporters": "activist",
    "family": "family",
    "relative": "family",
    "relatives": "family",
    "coordinator": "coordinator",
    "coordinators": "coordinator",
    "admin": "admin",
    "admins": "admin",
    "administrator": "admin",
    "administrators": "admin",
}


def parse_role(word: str) -> str | None:
    """The stored role for what someone typed (`supporter`, `Relative`, `admins`), or None."""
    return ROLE_ALIASES.get(word.strip().lower())


@dataclass(frozen=True)
class Member:
    id: int
    role: str
    language: str | None
    timezone: str | None
    quiet_hours: str | None
    # Joined by an invite (or promoted by an admin); False: an open supporter, who joined by a
    # bare /start and gets public news only (THREATS rule 15, storage/audience.py).
    vetted: bool = True


@dataclass(frozen=True)
class Identity:
    transport: str
    address: str
    chat: str
    member_id: int
    reachable: bool
    preferred: bool = False  # the identity the member wrote from last
    quarantined: bool = False  # safety number changed: nothing sensitive until /trust


_COLS = "m.id, m.role, m.language, m.timezone, m.quiet_hours, m.vetted"


def _member(row: tuple) -> Member:
    return Member(*row[:5], vetted=bool(row[5]))


def by_address(conn: Connection, transport: str, address: str) -> Member | None:
    row = conn.execute(
        f"SELECT {_COLS} FROM members m JOIN identities i ON i.member_id = m.id "
        "WHERE i.transport = ? AND i.address = ?",
        (transport, address),
    ).fetchone()
    return _member(row) if row else None


def get(conn: Connection, member_id: int) -> Member | None:
    row = conn.execute(f"SELECT {_COLS} FROM members m WHERE m.id = ?", (member_id,)).fetchone()
    return _member(row) if row else None


def create(
    conn: Connection,
    *,
    role: str,
    transport: str,
    address: str,
    chat: str,
    now: float,
    language: str | None = None,
    vetted: bool = True,
) -> Member:
    """A new member. `vetted` is False only for an open supporter (bare /start); invites,
    `vigil init` and seeding make vetted members."""
    cur = conn.execute(
        "INSERT INTO members (role, language, created_at, vetted) VALUES (?, ?, ?, ?)",
        (role, language, now, int(vetted)),
    )
    member_id = cur.lastrowid
    assert member_id is not None
    conn.execute(
        "INSERT INTO identities (transport, address, member_id, chat, created_at, preferred) "
        "VALUES (?, ?, ?, ?, ?, 1)",
        (transport, address, member_id, chat, now),
    )
    return Member(member_id, role, language, None, None, vetted)


def set_vetted(conn: Connection, member_id: int) -> None:
    """An open supporter redeemed an invite (or was promoted): from now on they are vetted."""
    conn.execute("UPDATE members SET vetted = 1 WHERE id = ? AND vetted = 0", (member_id,))


def count_open(conn: Connection) -> int:
    """How many open supporters the network has (`vigil status`)."""
    return conn.execute("SELECT count(*) FROM members WHERE vetted = 0").fetchone()[0]


def set_role(conn: Connection, member_id: int, role: str) -> None:
    conn.execute("UPDATE members SET role = ? WHERE id = ?", (role, member_id))


def set_language(conn: Connection, member_id: int, language: str) -> None:
    conn.execute("UPDATE members SET language = ? WHERE id = ?", (language, member_id))


def set_timezone(conn: Connection, member_id: int, timezone: str) -> None:
    conn.execute("UPDATE members SET timezone = ? WHERE id = ?", (timezone, member_id))


def set_quiet_hours(conn: Connection, member_id: int, quiet: str | None) -> None:
    conn.execute("UPDATE members SET quiet_hours = ? WHERE id = ?", (quiet, member_id))


# The one identity a fan-out message goes to: reachable, trusted before quarantined (a
# quarantined one gets the message held, `i.quarantined`), the one the member wrote from last
# (bot/notify.py decides the same for single messages).
ROUTE_JOIN = (
    "LEFT JOIN identities i ON i.rowid = (SELECT r.rowid FROM identities r "
    "WHERE r.member_id = m.id AND r.reachable = 1 "
    "ORDER BY r.quarantined, r.preferred DESC, r.created_at LIMIT 1) "
)

_ID_COLS = "transport, address, chat, member_id, reachable, preferred, quarantined"


def _identity(row: tuple) -> Identity:
    t, a, c, m, r, p, q = row
    return Identity(t, a, c, m, bool(r), bool(p), bool(q))


def identities(conn: Connection, member_id: int) -> list[Identity]:
    rows = conn.execute(
        f"SELECT {_ID_COLS} FROM identities WHERE member_id = ? ORDER BY created_at",
        (member_id,),
    ).fetchall()
    return [_identity(r) for r in rows]


def identity(conn: Connection, transport: str, address: str) -> Identity | None:
    row = conn.execute(
        f"SELECT {_ID_COLS} FROM identities WHERE transport = ? AND address = ?",
        (transport, address),
    ).fetchone()
    return _identity(row) if row else None


def roles_on(conn: Connection, transport: str) -> dict[str, str]:
    """Every address on `transport` and its member's role, in the order they joined."""
    rows = conn.execute(
        "SELECT i.address, m.role FROM identities i JOIN members m ON m.id = i.member_id "
        "WHERE i.transport = ? ORDER BY m.id",
        (transport,),
    ).fetchall()
    return {address: role for address, role in rows}


def update_chat(conn: Connection, transport: str, address: str, chat: str) -> None:
    """The member wrote from this identity in a 1:1 chat (the router calls this for private
    chats only): it is their reply address and the one they use now."""
    conn.execute(
        "UPDATE identities SET chat = ?, reachable = 1 WHERE transport = ? AND address = ? "
        "AND (chat != ? OR reachable = 0)",
        (chat, transport, address, chat),
    )
    conn.execute(
        "UPDATE identities SET preferred = (transport = ? AND address = ?) WHERE member_id = "
        "(SELECT member_id FROM identities WHERE transport = ? AND address = ?) "
        "AND preferred != (transport = ? AND address = ?)",
        (transport, address, transport, address, transport, address),
    )


def add_identity(
    conn: Connection, member_id: int, *, transport: str, address: str, chat: str, now: float
) -> None:
    """Join another platform's identity to an existing member (/link): the one they write
    from now, so it is the one ordinary messages go to."""
    conn.execute("UPDATE identities SET preferred = 0 WHERE member_id = ?", (member_id,))
    conn.execute(
        "INSERT INTO identities (transport, address, member_id, chat, created_at, preferred) "
        "VALUES (?, ?, ?, ?, ?, 1)",
        (transport, address, member_id, chat, now),
    )


def remove_identity(conn: Connection, member_id: int, transport: str) -> bool:
    """Drop the member's identity on `transport`; never the last one (False then)."""
    n = conn.execute("SELECT count(*) FROM identities WHERE member_id = ?", (member_id,))
    if n.fetchone()[0] <= 1:
        return False
    return (
        conn.execute(
            "DELETE FROM identities WHERE member_id = ? AND transport = ?", (member_id, transport)
        ).rowcount
        > 0
    )


def set_quarantined(conn: Connection, transport: str, address: str, on: bool) -> bool:
    """True when this changed the identity's state."""
    return (
        conn.execute(
            "UPDATE identities SET quarantined = ? WHERE transport = ? AND address = ? "
            "AND quarantined != ?",
            (int(on), transport, address, int(on)),
        ).rowcount
        > 0
    )


def mark_unreachable(conn: Connection, transport: str, chat: str) -> None:
    conn.execute(
        "UPDATE identities SET reachable = 0 WHERE transport = ? AND chat = ?", (transport, chat)
    )


def delete(conn: Connection, member_id: int) -> None:
    conn.execute("DELETE FROM members WHERE id = ?", (member_id,))


def count(conn: Connection) -> int:
    return conn.execute("SELECT count(*) FROM members").fetchone()[0]


def with_role(conn: Connection, roles: tuple[str, ...]) -> list[int]:
    marks = ",".join("?" * len(roles))
    rows = conn.execute(f"SELECT id FROM members WHERE role IN ({marks})", roles).fetchall()
    return [r[0] for r in rows]


def joined_at(conn: Connection, member_id: int) -> float:
    row = conn.execute("SELECT created_at FROM members WHERE id = ?", (member_id,)).fetchone()
    return float(row[0]) if row else 0.0


def listing(conn: Connection, *, role: str | None = None, case_id: int | None = None) -> list[int]:
    """Member numbers, optionally of one role or tied to one case, in number order."""
    if case_id is not None:
        sql = "SELECT DISTINCT member_id FROM case_members WHERE case_id = ? ORDER BY member_id"
        return [r[0] for r in conn.execute(sql, (case_id,))]
    if role is not None:
        return [
            r[0] for r in conn.execute("SELECT id FROM members WHERE role = ? ORDER BY id", (role,))
        ]
    return [r[0] for r in conn.execute("SELECT id FROM members ORDER BY id")]
