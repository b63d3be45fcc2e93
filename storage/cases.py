"""Cases: the people the network works for, their case sheets, and who is tied to each case.

A case sheet follows Amnesty's Urgent Action case sheets: name, country, detained since,
charges, facility (with a history of transfers), status, next hearing, letters address,
summary, visibility, tags, and how to help. Public updates ("Further Information") live in
`case_updates`; the check-in state ("not forgotten") lives on the case row.
"""

from __future__ import annotations

from dataclasses import dataclass

from storage.db import Connection

STATUSES = ("detained", "awaiting_trial", "sentenced", "transferred", "missing", "released")
VISIBILITIES = ("public", "restricted")
# Kinds of public update. The alerting capability (subscriptions) may filter distressing ones.
UPDATE_KINDS = ("hearing", "verdict", "transfer", "health", "release", "action", "general")
# Marks on an update: distressing categories (content notes, opt-outs) and urgency.
UPDATE_FLAGS = ("torture", "health", "urgent")
DEFAULT_CHECKIN_DAYS = 14

# Plain sheet columns `set_field` may change (never interpolated from input). The facility and
# the next hearing have their own functions: a transfer is recorded, a hearing has two columns.
EDITABLE_COLUMNS = frozenset(
    {
        "name", "country", "detained_since", "charges", "status", "letters_address",
        "summary", "tags", "how_to_help", "visibility", "checkin_days",
    }
)  # fmt: skip


@dataclass(frozen=True)
class Case:
    id: int
    slug: str
    name: str
    visibility: str
    status: str = "detained"
    country: str | None = None
    detained_since: str | None = None
    charges: str | None = None
    facility: str | None = None
    next_hearing: float | None = None
    next_hearing_all_day: bool = False
    letters_address: str | None = None
    summary: str | None = None
    tags: str | None = None
    how_to_help: str | None = None
    checkin_days: int = DEFAULT_CHECKIN_DAYS
    created_at: float = 0.0
    last_report_at: float | None = None
    checkin_round: int = 0

    @property
    def tag_list(self) -> list[str]:
        return [t for t in (self.tags or "").split(",") if t]


_COLS = (
    "id, slug, name, visibility, status, country, detained_since, charges, facility, "
    "next_hearing, next_hearing_all_day, letters_address, summary, tags, how_to_help, "
    "checkin_days, created_at, last_report_at, checkin_round"
)
_C_COLS = ", ".join("c." + c.strip() for c in _COLS.split(","))


def _case(row: tuple) -> Case:
    values = list(row)
    values[10] = bool(values[10])
    return Case(*values)


def get(conn: Connection, case_id: int) -> Case | None:
    row = conn.execute(f"SELECT {_COLS} FROM cases WHERE id = ?", (case_id,)).fetchone()
    return _case(row) if row else None


def by_slug(conn: Connection, slug: str) -> Case | None:
    row = conn.execute(f"SELECT {_COLS} FROM cases WHERE slug = ?", (slug.lower(),)).fetchone()
    return _case(row) if row else None


def create(conn: Connection, slug: str, name: str, visibility: str, now: float) -> Case:
    cur = conn.execute(
        "INSERT INTO cases (slug, name, visibility, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
        (slug.lower(), name, visibility, now, now),
    )
    assert cur.lastrowid is not None
    case = get(conn, cur.lastrowid)
    assert case is not None
    return case


def link_member(conn: Connection, case_id: int, member_id: int, relation: str) -> None:
    conn.execute(
        "INSERT OR IGNORE INTO case_members (case_id, member_id, relation) VALUES (?, ?, ?)",
        (case_id, member_id, relation),
    )


def member_cases(conn: Connection, member_id: int, relation: str) -> list[Case]:
    rows = conn.execute(
        f"SELECT {_C_COLS} FROM cases c "
        "JOIN case_members cm ON cm.case_id = c.id WHERE cm.member_id = ? AND cm.relation = ? "
        "ORDER BY c.slug",
        (member_id, relation),
    ).fetchall()
    return [_case(r) for r in rows]


def coordinators_of(conn: Connection, case_id: int) -> list[int]:
    """Coordinators assigned to the case, or the administrators when none is: a case nobody
    coordinates belongs to the admins alone, never to every coordinator of the network."""
    rows = conn.execute(
        "SELECT member_id FROM case_members WHERE case_id = ? AND relation = 'coordinator' "
        "ORDER BY member_id",
        (case_id,),
    ).fetchall()
    if rows:
        return [r[0] for r in rows]
    return admins(conn)


def links_of(conn: Connection, member_id: int) -> list[tuple[str, str]]:
    """(case slug, relation) of every case the member is tied to."""
    return [
        (r[0], r[1])
        for r in conn.execute(
            "SELECT c.slug, cm.relation FROM case_members cm JOIN cases c ON c.id = cm.case_id "
            "WHERE cm.member_id = ? ORDER BY c.slug, cm.relation",
            (member_id,),
        )
    ]


def admins(conn: Connection) -> list[int]:
    return [r[0] for r in conn.execute("SELECT id FROM members WHERE role = 'admin' ORDER BY id")]


def assigned_coordinators(conn: Connection, case_id: int) -> list[int]:
    """Coordinators assigned to the case (no fallback)."""
    return [
        r[0]
        for r in conn.execute(
            "SELECT cm.member_id FROM case_members cm JOIN members m ON m.id = cm.member_id "
            "WHERE cm.case_id = ? AND cm.relation = 'coordinator' "
            "AND m.role IN ('coordinator', 'admin') ORDER BY cm.member_id",
            (case_id,),
        )
    ]


def unlink_member(conn: Connection, case_id: int, member_id: int, relation: str) -> bool:
    cur = conn.execute(
        "DELETE FROM case_members WHERE case_id = ? AND member_id = ? AND relation = ?",
        (case_id, member_id, relation),
    )
    return cur.rowcount > 0


def family_of(conn: Connection, case_id: int) -> list[int]:
    rows = conn.execute(
        "SELECT member_id FROM case_members WHERE case_id = ? AND relation = 'family' "
        "ORDER BY member_id",
        (case_id,),
    ).fetchall()
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
    return [_case(r) for r in rows]


def can_see(conn: Connection, case: Case, member_id: int | None, role: str | None) -> bool:
    if case.visibility == "public" or role in ("coordinator", "admin"):
        return True
    if member_id is None:
        return False
    row = conn.execute(
        "SELECT 1 FROM case_members WHERE case_id = ? AND member_id = ?", (case.id, member_id)
    ).fetchone()
    return row is not None


def may_coordinate(conn: Connection, case: Case, member_id: int | None, role: str | None) -> bool:
    """Who may edit the case and read its reports' metadata: admins, and the coordinators
    assigned to it. Authority is per case: a coordinator of another case has none here."""
    if role == "admin":
        return True
    if role != "coordinator" or member_id is None:
        return False
    row = conn.execute(
        "SELECT 1 FROM case_members "
        "WHERE case_id = ? AND member_id = ? AND relation = 'coordinator'",
        (case.id, member_id),
    ).fetchone()
    return row is not None


def coordinated_by(conn: Connection, member_id: int, role: str) -> list[Case]:
    found = visible_to(conn, member_id, role)
    return [c for c in found if may_coordinate(conn, c, member_id, role)]


# --- the sheet ---------------------------------------------------------------------------


def set_field(conn: Connection, case_id: int, column: str, value: object, now: float) -> None:
    """Change one sheet field. `column` must be one of EDITABLE_COLUMNS."""
    if column not in EDITABLE_COLUMNS:
        raise ValueError("not an editable case column")
    conn.execute(
        f"UPDATE cases SET {column} = ?, updated_at = ? WHERE id = ?", (value, now, case_id)
    )


def set_next_hearing(
    conn: Connection, case_id: int, when: float | None, all_day: bool, now: float
) -> None:
    conn.execute(
        "UPDATE cases SET next_hearing = ?, next_hearing_all_day = ?, updated_at = ? WHERE id = ?",
        (when, int(all_day), now, case_id),
    )


@dataclass(frozen=True)
class Facility:
    facility: str
    since: float


def record_facility(
    conn: Connection, case_id: int, facility: str, since: float, recorded_by: int | None
) -> None:
    """A new place of detention: the sheet's current facility and a row in the history."""
    conn.execute(
        "INSERT INTO case_facilities (case_id, facility, since, recorded_by) VALUES (?, ?, ?, ?)",
        (case_id, facility, since, recorded_by),
    )
    conn.execute(
        "UPDATE cases SET facility = ?, updated_at = ? WHERE id = ?", (facility, since, case_id)
    )


def clear_facility(conn: Connection, case_id: int, now: float) -> None:
    """Whereabouts no longer known; the history keeps the places recorded so far."""
    conn.execute("UPDATE cases SET facility = NULL, updated_at = ? WHERE id = ?", (now, case_id))


def facility_history(conn: Connection, case_id: int, limit: int = 10) -> list[Facility]:
    """Newest first."""
    rows = conn.execute(
        "SELECT facility, since FROM case_facilities WHERE case_id = ? "
        "ORDER BY since DESC, id DESC LIMIT ?",
        (case_id, limit),
    ).fetchall()
    return [Facility(*r) for r in rows]


# --- public updates ----------------------------------------------------------------------


@dataclass(frozen=True)
class Update:
    id: int
    case_id: int
    kind: str
    text: str
    report_id: int | None
    author_id: int | None
    created_at: float
    flags: tuple[str, ...] = ()
    # Relatives' news (published from a report): for vetted members only (migration 073).
    vetted_only: bool = False


_U_COLS = "id, case_id, kind, text, report_id, author_id, created_at, flags, vetted_only"


def _update(row: tuple) -> Update:
    flags = tuple(f for f in (row[7] or "").split(",") if f)
    return Update(*row[:7], flags=flags, vetted_only=bool(row[8]))


def add_update(
    conn: Connection,
    case_id: int,
    text: str,
    *,
    now: float,
    kind: str = "general",
    author_id: int | None = None,
    report_id: int | None = None,
    flags: tuple[str, ...] | list[str] = (),
) -> int:
    """A case update (shared by /update and /publish). Returns its id. One published from a
    report is relatives' news: vetted members only, for good (the report may be purged)."""
    if kind not in UPDATE_KINDS or any(f not in UPDATE_FLAGS for f in flags):
        raise ValueError("unknown update kind or flag")
    cur = conn.execute(
        "INSERT INTO case_updates (case_id, kind, flags, text, report_id, author_id, created_at, "
        "vetted_only) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            case_id, kind, ",".join(sorted(set(flags))), text, report_id, author_id, now,
            int(report_id is not None),
        ),
    )  # fmt: skip
    assert cur.lastrowid is not None
    return cur.lastrowid


def get_update(conn: Connection, update_id: int) -> Update | None:
    row = conn.execute(f"SELECT {_U_COLS} FROM case_updates WHERE id = ?", (update_id,)).fetchone()
    return _update(row) if row else None


def latest_updates(
    conn: Connection, case_id: int, limit: int = 3, *, vetted: bool = True
) -> list[Update]:
    """The newest updates of a case; without `vetted`, relatives' news is left out."""
    rows = conn.execute(
        f"SELECT {_U_COLS} FROM case_updates WHERE case_id = ? "
        f"{'' if vetted else 'AND vetted_only = 0 '}"
        "ORDER BY created_at DESC, id DESC LIMIT ?",
        (case_id, limit),
    ).fetchall()
    return [_update(r) for r in rows]


# --- check-ins ---------------------------------------------------------------------------


def report_arrived(conn: Connection, case_id: int, now: float) -> None:
    """A report restarts the silence count (kept to the hour, like the report's own time)."""
    conn.execute(
        "UPDATE cases SET last_report_at = ?, checkin_round = 0 WHERE id = ?",
        (now // 3600 * 3600, case_id),
    )


def checkin_cases(conn: Connection) -> list[Case]:
    """Cases whose silence is watched: check-ins on, prisoner not released."""
    rows = conn.execute(
        f"SELECT {_COLS} FROM cases WHERE checkin_days > 0 AND status != 'released' ORDER BY id"
    ).fetchall()
    return [_case(r) for r in rows]


def set_checkin_round(conn: Connection, case_id: int, round_: int) -> None:
    conn.execute("UPDATE cases SET checkin_round = ? WHERE id = ?", (round_, case_id))
