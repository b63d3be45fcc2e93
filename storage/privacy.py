"""What is kept about a member (`/mydata`), and taking a member out: `/forgetme` (the member
themselves) and `/revoke` (an admin). Each runs inside the message's one transaction.

forget_member deletes the member and everything that points at them:

* the member row; through ON DELETE CASCADE: identities, case links, conversation state,
  sealed flow drafts, subscriptions and alert preferences, RSVPs, and outbox rows addressed to
  them (pending and delivered);
* outbox rows sent to their chats without a member id (answers before they joined); a row
  the dispatcher is sending at that moment is unlinked and expires with delivered messages;
* their invite brute-force counter (a keyed hash of their address);
* the chat their broadcasts report progress to; their unconfirmed broadcast drafts.

What stays, on purpose:

* **Reports they sent.** A report row never held its reporter (storage/reports.py); it is
  sealed to a key that is not on the server, so it can be neither read nor attributed here.
  The link an unacknowledged /urgent alert keeps to its sender (so the sender can hear
  "someone is on it") is cleared by the foreign key. The reports stay in the archive until
  their retention ends (storage/retention.py), because the coordinators and the prisoner's
  case depend on them; `/forgetme` says so before the member confirms.
* Requests already queued to delete their Telegram report messages from the chat: those
  protect them, so they are kept (unlinked from the member) and still sent.
* Public case updates and facility history they wrote as a coordinator (author set NULL).
* Audit rows of privileged acts they did: actor is a bare member number that no longer
  leads to anyone; they expire with the audit retention.

revoke_member is the admin's lever against a compromised or departed account: demote to
activist (or remove entirely), drop every case link, end the dialog in progress, stop their
broadcasts (drafts dropped, running fan-outs cancelled: a hijacked coordinator account must
not keep messaging the network), invalidate invite codes they issued and not yet redeemed,
and cancel messages still queued to them (live report copies, emergency alerts). Authority is
read from the database on every message, so the next message they send already has none.
"""

from __future__ import annotations

from dataclasses import dataclass

from storage import crypto, members
from storage.db import Connection, scrubbed

MEMBER_ID_FLOOR = "members.max_id"  # settings key: the highest member number ever used
_DELETE_REQUEST = "json_extract(body, '$.kind') = 'delete' AND state IN ('pending', 'sending')"


@dataclass(frozen=True)
class Summary:
    """What /mydata shows: the member's own data, never anyone else's."""

    member_id: int
    role: str
    language: str | None
    timezone: str | None
    quiet_hours: str | None
    created_at: float
    transports: tuple[str, ...]
    cases: tuple[tuple[str, str], ...]  # (case name, relation)
    follows: int  # single cases followed
    follows_all: bool
    rsvps: int
    dialog: bool  # an unfinished wizard (or report draft)


def summary(conn: Connection, member_id: int) -> Summary | None:
    row = conn.execute(
        "SELECT id, role, language, timezone, quiet_hours, created_at FROM members WHERE id = ?",
        (member_id,),
    ).fetchone()
    if row is None:
        return None
    transports = tuple(sorted({i.transport for i in members.identities(conn, member_id)}))
    linked = tuple(
        (r[0], r[1])
        for r in conn.execute(
            "SELECT c.name, cm.relation FROM case_members cm JOIN cases c ON c.id = cm.case_id "
            "WHERE cm.member_id = ? ORDER BY c.name",
            (member_id,),
        )
    )
    follows, follows_all, rsvps = 0, False, 0
    for case_id, mode in conn.execute(
        "SELECT case_id, mode FROM subscriptions WHERE member_id = ?", (member_id,)
    ):
        if case_id == 0:
            follows_all = mode != "off"
        elif mode != "off":
            follows += 1
    counted = conn.execute("SELECT count(*) FROM rsvps WHERE member_id = ?", (member_id,))
    rsvps = counted.fetchone()[0]
    dialog = (
        conn.execute("SELECT 1 FROM conversations WHERE member_id = ?", (member_id,)).fetchone()
        is not None
    )
    return Summary(*row, transports, linked, follows, follows_all, rsvps, dialog)  # type: ignore[arg-type]


def admins(conn: Connection) -> int:
    return conn.execute("SELECT count(*) FROM members WHERE role = 'admin'").fetchone()[0]


@dataclass(frozen=True)
class Revoked:
    links: int
    invites: int
    broadcasts: int
    messages: int


def forget_member(conn: Connection, member_id: int, index_key: bytes, now: float) -> bool:
    """Delete a member and every record that points at them (see the module docstring).
    False when there is no such member."""
    if members.get(conn, member_id) is None:
        return False
    idents = members.identities(conn, member_id)
    # Keep the platform deletions of their report messages: unlink them so the cascade spares
    # them; they carry no text.
    conn.execute(
        f"UPDATE outbox SET member_id = NULL WHERE member_id = ? AND {_DELETE_REQUEST}",
        (member_id,),
    )
    # A row the dispatcher holds right now ('sending') is left to finish and to expire with
    # delivered messages: deleting it would let its id be reused by the next row, which the
    # dispatcher would then mark as sent.
    conn.execute(
        "UPDATE outbox SET member_id = NULL WHERE member_id = ? AND state = 'sending'",
        (member_id,),
    )
    for ident in idents:
        conn.execute(
            "DELETE FROM held_messages WHERE transport = ? AND address = ?",
            (ident.transport, ident.address),
        )
        conn.execute(
            "DELETE FROM outbox WHERE transport = ? AND chat = ? AND state != 'sending' "
            f"AND NOT ({_DELETE_REQUEST})",
            (ident.transport, ident.chat),
        )
        bucket = "redeem:" + crypto.keyed_hash(index_key, f"{ident.transport}:{ident.address}")
        conn.execute("DELETE FROM rate_buckets WHERE bucket = ?", (bucket,))
    conn.execute(
        "UPDATE broadcasts SET state = 'cancelled', finished_at = coalesce(finished_at, ?) "
        "WHERE author_id = ? AND state = 'draft'",
        (now, member_id),
    )
    conn.execute(
        "UPDATE broadcasts SET progress_transport = NULL, progress_chat = NULL WHERE author_id = ?",
        (member_id,),
    )
    conn.execute("DELETE FROM rate_buckets WHERE bucket = ?", (f"wrote:{member_id}",))
    # Member numbers must never be handed to someone else (audit rows, an admin's /promote N):
    # remember the highest number ever used; members.create should allocate above it.
    conn.execute(
        "INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET "
        "value = max(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))",
        (MEMBER_ID_FLOOR, str(member_id)),
    )
    members.delete(conn, member_id)
    scrubbed(conn)  # what was deleted must not live on in WAL frames
    return True


def revoke_member(conn: Connection, member_id: int, now: float) -> Revoked:
    """Demote to activist and strip every privilege and pending effect (module docstring).
    The caller checks that the member exists and may be revoked."""
    members.set_role(conn, member_id, "activist")
    links = conn.execute("DELETE FROM case_members WHERE member_id = ?", (member_id,)).rowcount
    conn.execute("DELETE FROM conversations WHERE member_id = ?", (member_id,))
    invites = conn.execute(
        "UPDATE invites SET uses_left = 0 WHERE created_by = ? AND uses_left > 0 "
        "AND expires_at > ?",
        (member_id, now),
    ).rowcount
    stopped = 0
    rows = conn.execute(
        "SELECT id, state FROM broadcasts WHERE author_id = ? AND state IN ('draft', 'running')",
        (member_id,),
    ).fetchall()
    for bid, state in rows:
        conn.execute("UPDATE broadcasts SET state = 'cancelled' WHERE id = ?", (bid,))
        if state == "draft":
            conn.execute("UPDATE broadcasts SET finished_at = ? WHERE id = ?", (now, bid))
        conn.execute(
            "UPDATE outbox SET state = 'cancelled', error = 'revoked', done_at = ? "
            "WHERE broadcast_id = ? AND state = 'pending'",
            (now, bid),
        )
    stopped = len(rows)
    # What they asked a second person to approve is void: a seized account's requests must not
    # be carried out after its revocation.
    conn.execute(
        "UPDATE approvals SET state = 'void', decided_at = ? "
        "WHERE initiator_id = ? AND state = 'pending'",
        (now, member_id),
    )
    # Messages still queued to them: live report copies, alerts, replies. The text goes too.
    messages = conn.execute(
        "UPDATE outbox SET state = 'cancelled', error = 'revoked', done_at = ?, "
        "body = '{\"text\":\"\"}' WHERE member_id = ? AND state = 'pending' "
        "AND coalesce(json_extract(body, '$.kind'), 'message') != 'delete'",
        (now, member_id),
    ).rowcount
    scrubbed(conn)
    return Revoked(links, invites, stopped, messages)


def references_to(conn: Connection, member_id: int) -> dict[str, int]:
    """Rows in any table whose foreign key points at this member: what forgetting must leave
    at zero (used by tests and by `/forgetme` as a last check)."""
    out: dict[str, int] = {}
    tables = [
        r[0]
        for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    ]
    for table in tables:
        for fk in conn.execute(f"PRAGMA foreign_key_list({table})").fetchall():
            # (id, seq, table, from, to, on_update, on_delete, match)
            if fk[2] != "members":
                continue
            n = conn.execute(
                f"SELECT count(*) FROM {table} WHERE {fk[3]} = ?", (member_id,)
            ).fetchone()[0]
            if n:
                out[f"{table}.{fk[3]}"] = n
    return out
