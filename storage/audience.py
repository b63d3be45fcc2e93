"""Who an audience is and how many: one SQL predicate per segment, for chunks and for counts.

A segment names an audience: `all`, `role:ROLE`, `lang:CODE`, `case:ID` (the case's followers,
its relatives and its coordinators) and `subs:ID` (the case's followers only, for alerts). The
rules (a case's 'off' mode, restricted cases only for those tied to them or coordinating) are
written once, in `_rules`, and used both to fetch recipients a chunk at a time and to count
them, so a preview's count and the fan-out that follows cannot disagree.

Vetted and open members (THREATS rule 15): an open supporter (joined by a bare /start, no
invite) is in an audience only when the caller says the message is public (`reach_open`):
a broadcast marked public, a case alert without relatives' news, an action's invitation
(rendered for them without its place and without /join). The default leaves them out, so a
new kind of fan-out that forgets to decide sends nothing to them. RSVP paths ask
`vetted_among`.

Chunks are in member-id order from a cursor. For case segments the candidates come from index
range scans (subscriptions of the case, of "all", and case links) merged in id order, so one
chunk costs O(limit) whatever the network's size.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from storage import members
from storage.db import Connection

ALL_CASES = 0  # subscriptions.case_id for "every case I may see"
CASE_KINDS = ("case", "subs")


@dataclass(frozen=True)
class Segment:
    kind: str  # all | role | lang | case | subs
    value: str = ""

    @classmethod
    def parse(cls, text: str) -> Segment:
        kind, _, value = text.partition(":")
        if kind not in ("all", "role", "lang", *CASE_KINDS):
            raise ValueError("unknown segment")
        if kind in CASE_KINDS and not value.isdigit():
            raise ValueError("a case segment needs a case id")
        return cls(kind, value)

    @property
    def case_id(self) -> int | None:
        return int(self.value) if self.kind in CASE_KINDS else None

    def __str__(self) -> str:
        return self.kind if self.kind == "all" else f"{self.kind}:{self.value}"


@dataclass(frozen=True)
class Recipient:
    """One reachable identity of a member in the audience (transport None: none reachable)."""

    member_id: int
    role: str
    language: str | None
    timezone: str | None
    quiet_hours: str | None
    mode: str  # instant | digest
    optouts: frozenset[str]
    transport: str | None
    chat: str | None
    held: bool = False  # the identity is quarantined: write the message, held until /trust
    vetted: bool = True  # False: an open supporter (only in a `reach_open` audience)


def split_optouts(optouts: str | None) -> frozenset[str]:
    return frozenset(o for o in (optouts or "").split(",") if o)


# -- the rules ----------------------------------------------------------------------------

_TIE = "EXISTS (SELECT 1 FROM case_members cm WHERE cm.case_id = :case AND cm.member_id = m.id)"
_MODE = "coalesce(s.mode, a.mode)"


Rules = tuple[str, str, dict[str, Any]]


def _rules(conn: Connection, seg: Segment, default_language: str, reach_open: bool) -> Rules:
    """(joins, condition, parameters) that a member row `m` must meet to be in `seg`."""
    joins, condition, params = _segment_rules(conn, seg, default_language)
    if not reach_open:
        condition = f"m.vetted = 1 AND ({condition})"
    return joins, condition, params


def _segment_rules(conn: Connection, seg: Segment, default_language: str) -> Rules:
    if seg.kind == "all":
        return "", "1", {}
    if seg.kind == "role":
        return "", "m.role = :role", {"role": seg.value}
    if seg.kind == "lang":
        return (
            "",
            "coalesce(m.language, :deflang) = :lang",
            {
                "deflang": default_language,
                "lang": seg.value,
            },
        )
    case_id = seg.case_id
    joins = (
        "LEFT JOIN subscriptions s ON s.case_id = :case AND s.member_id = m.id "
        "LEFT JOIN subscriptions a ON a.case_id = 0 AND a.member_id = m.id "
    )
    family = seg.kind == "case"
    condition = (
        f"coalesce({_MODE}, '') != 'off' "
        f"AND ({_MODE} IS NOT NULL OR (:family AND {_TIE})) "
        f"AND (NOT :restricted OR m.role IN ('coordinator', 'admin') OR {_TIE})"
    )
    params = {"case": case_id, "family": family, "restricted": _restricted(conn, case_id)}
    return joins, condition, params


def _restricted(conn: Connection, case_id: int | None) -> bool:
    row = conn.execute("SELECT visibility FROM cases WHERE id = ?", (case_id,)).fetchone()
    return row is None or row[0] != "public"


# -- candidates ---------------------------------------------------------------------------


def _ids(conn: Connection, sql: str, args: tuple[object, ...]) -> Iterator[int]:
    return (r[0] for r in conn.execute(sql, args))


def _candidates(conn: Connection, seg: Segment, cursor: int, limit: int) -> list[int]:
    case_id = seg.case_id
    if case_id is None:
        return [
            r[0]
            for r in conn.execute(
                "SELECT id FROM members WHERE id > ? ORDER BY id LIMIT ?", (cursor, limit)
            )
        ]
    sources = [
        _ids(
            conn,
            "SELECT member_id FROM subscriptions WHERE case_id = ? AND member_id > ? "
            "ORDER BY member_id LIMIT ?",
            (cid, cursor, limit),
        )
        for cid in (case_id, ALL_CASES)
    ]
    if seg.kind == "case":
        sources.append(
            _ids(
                conn,
                "SELECT DISTINCT member_id FROM case_members WHERE case_id = ? AND member_id > ? "
                "ORDER BY member_id LIMIT ?",
                (case_id, cursor, limit),
            )
        )
    out: list[int] = []
    for member_id in heapq.merge(*sources):
        if not out or out[-1] != member_id:
            out.append(member_id)
            if len(out) == limit:
                break
    return out


# -- chunks and counts ----------------------------------------------------------------------


def chunk(
    conn: Connection,
    segment: str,
    cursor: int,
    limit: int,
    default_language: str = "en",
    *,
    reach_open: bool = False,
) -> tuple[list[Recipient], int, bool]:
    """The next chunk of an audience: (one row per reachable identity, new cursor, exhausted).
    Open supporters are in it only with `reach_open` (the module docstring)."""
    seg = Segment.parse(segment)
    ids = _candidates(conn, seg, cursor, limit)
    new_cursor = ids[-1] if ids else cursor
    if not ids:
        return [], new_cursor, True
    joins, condition, params = _rules(conn, seg, default_language, reach_open)
    marks = ",".join(f":id{i}" for i in range(len(ids)))
    params |= {f"id{i}": mid for i, mid in enumerate(ids)}
    mode = _MODE if seg.case_id is not None else "NULL"
    rows = conn.execute(
        f"SELECT m.id, m.role, m.language, m.timezone, m.quiet_hours, {mode}, "
        "coalesce(p.optouts, ''), i.transport, i.chat, coalesce(i.quarantined, 0), m.vetted "
        "FROM members m "
        f"{joins}"
        "LEFT JOIN subscriber_prefs p ON p.member_id = m.id "
        f"{members.ROUTE_JOIN}"
        f"WHERE m.id IN ({marks}) AND {condition} ORDER BY m.id",
        params,
    ).fetchall()
    out = [
        Recipient(
            mid,
            role,
            lang,
            tz,
            quiet,
            mode_ or "instant",
            split_optouts(opt),
            tr,
            chat,
            bool(q),
            bool(vetted),
        )
        for mid, role, lang, tz, quiet, mode_, opt, tr, chat, q, vetted in rows
    ]
    return out, new_cursor, len(ids) < limit


def count(
    conn: Connection, segment: str, default_language: str = "en", *, reach_open: bool = False
) -> tuple[int, int]:
    """(people, messages) the audience reaches now: members with an identity a message can go
    to, and the messages (one per person: each goes to one identity, bot/notify.py). The same
    `reach_open` as the fan-out's, so the preview's count is the fan-out's."""
    reached, params = _reached(conn, segment, default_language, reach_open)
    row = conn.execute(f"SELECT count(DISTINCT m.id), count(*) {reached}", params).fetchone()
    return row[0], row[1]


def languages(
    conn: Connection, segment: str, default_language: str = "en", *, reach_open: bool = False
) -> dict[str, int]:
    """People the audience reaches, by the language their messages are written in (theirs, or
    the network's default): what a broadcast's translations have to cover."""
    reached, params = _reached(conn, segment, default_language, reach_open)
    params = {**params, "default_language": default_language}
    rows = conn.execute(
        f"SELECT coalesce(m.language, :default_language), count(DISTINCT m.id) {reached} "
        "GROUP BY 1",
        params,
    ).fetchall()
    return {lang: n for lang, n in rows}


def _reached(
    conn: Connection, segment: str, default_language: str, reach_open: bool
) -> tuple[str, dict[str, Any]]:
    """FROM … WHERE … of the members `count` and `languages` count: one reachable identity each."""
    seg = Segment.parse(segment)
    joins, condition, params = _rules(conn, seg, default_language, reach_open)
    scope = ""
    if seg.case_id is not None:
        scope = "AND m.id IN (SELECT member_id FROM subscriptions WHERE case_id IN (:case, 0)"
        scope += (
            " UNION SELECT member_id FROM case_members WHERE case_id = :case)"
            if (seg.kind == "case")
            else ")"
        )
    sql = (
        "FROM members m "
        "JOIN identities i ON i.member_id = m.id AND i.reachable = 1 "
        "AND i.rowid = (SELECT r.rowid FROM identities r WHERE r.member_id = m.id "
        "AND r.reachable = 1 ORDER BY r.quarantined, r.preferred DESC, r.created_at "
        f"LIMIT 1) {joins}WHERE {condition} {scope}"
    )
    return sql, params


def vetted_among(conn: Connection, ids: list[int]) -> set[int]:
    """Those of `ids` who are vetted: what only vetted members get (an RSVP's reminders, an
    exact place) goes to these, whatever was recorded before."""
    if not ids:
        return set()
    marks = ",".join("?" * len(ids))
    rows = conn.execute(
        f"SELECT id FROM members WHERE vetted = 1 AND id IN ({marks})", ids
    ).fetchall()
    return {r[0] for r in rows}
