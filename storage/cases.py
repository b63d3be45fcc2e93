"""Cases: the people the network works for, and who is tied to each case."""

from __future__ import annotations

from dataclasses import dataclass

from storage.db import Connection


@dataclass(frozen=True)
class Case:
    id: int
    slug: str
    name: str
    visibility: str


_COLS = "id, slug, name, visibility"


def get(conn: Connection, case_id: int) -> Case | None:
    row = conn.execute(f"SELECT {_COLS} FROM cases WHERE id = ?", (case_id,)).fetchone()
    return Case(*row) if row else None


def by_slug(conn: Connection, slug: str) -> Case | None:
    row = conn.execute(f"SELECT {_COLS} FROM cases WHERE slug = ?", (slug.lower(),)).fetchone()
    return Case(*row) if row else None


def create(conn: Connection, slug: str, name: str, visibility: str, now: float) -> Case:
    cur = conn.execute(
        "INSERT INTO cases (slug, name, visibility, created_at) VALUES (?, ?, ?, ?)",
        (slug.lower(), name, visibility, now),
    )
    assert cur.lastrowid is not None
    return Case(cur.lastrowid, slug.lower(), name, visibility)


def link_member(conn: Connection, case_id: int, member_id: int, relation: str) -> None:
    conn.execute(
        "INSERT OR IGNORE INTO case_members (case_id, member_id, relation) VALUES (?, ?, ?)",
        (case_id, member_id, relation),
    )


def member_cases(conn: Connection, member_id: int, relation: str) -> list[Case]:
    rows = conn.execute(
        "SELECT c.id, c.slug, c.name, c.visibility FROM cases c "
        "JOIN case_members cm ON cm.case_id = c.id WHERE cm.member_id = ? AND cm.relation = ? "
        "ORDER BY c.slug",
        (member_id, relation),
    ).fetchall()
    return [Case(*r) for r in rows]


def coordinators_of(conn: Connection, case_id: int) -> list[int]:
    """Coordinators assigned to the case, or every coordinator and admin when none is."""
    rows = conn.execute(
        "SELECT member_id FROM case_members WHERE case_id = ? AND relation = 'coordinator'",
        (case_id,),
    ).fetchall()
    if rows:
        return [r[0] for r in rows]
    rows = conn.execute("SELECT id FROM members WHERE role IN ('coordinator', 'admin')").fetchall()
    return [r[0] for r in rows]


def visible_to(conn: Connection, member_id: int | None, role: str | None) -> list[Case]:
    """Public cases, plus restricted ones the member is tied to; coordinators see all."""
    if role in ("coordinator", "admin"):
        rows = conn.execute(f"SELECT {_COLS} FROM cases ORDER BY slug").fetchall()
    else:
        rows = conn.execute(
            f"SELECT {_COLS} FROM cases WHERE visibility = 'public' OR id IN "
            "(SELECT case_id FROM case_members WHERE member_id = ?) ORDER BY slug",
            (member_id or 0,),
        ).fetchall()
    return [Case(*r) for r in rows]


def can_see(conn: Connection, case: Case, member_id: int | None, role: str | None) -> bool:
    if case.visibility == "public" or role in ("coordinator", "admin"):
        return True
    if member_id is None:
        return False
    row = conn.execute(
        "SELECT 1 FROM case_members WHERE case_id = ? AND member_id = ?", (case.id, member_id)
    ).fetchone()
    return row is not None
