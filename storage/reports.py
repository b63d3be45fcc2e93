"""Well-being reports: the sealed archive, its queryable metadata, urgent alerts and drafts.

Sealing. A report's body (JSON of every answer and the free text) and each attachment are
sealed with HPKE (`crypto.seal_to`, MLKEM768_X25519 / HKDF-SHA256 / AES-256-GCM) to the
network's sealing public key. The private half is kept off the server (`vigil keys
sealing-new`), so neither a cold nor a live seizure opens the archive. The HPKE `info`
binds each blob to its row (report id and case id; attachment id and report id), so a blob
moved to another row does not open. `key_id` names the public key used, so an export knows
which key file opens which rows after the key was replaced.

The public key comes from keyslots.json, outside the encrypted database. Its fingerprint is
pinned in the encrypted `settings` table the first time it is used (and by `vigil keys
sealing-new`), so a swapped keyslots.json (someone trying to have new reports sealed to their
own key) is refused rather than obeyed.

Queryable metadata: case, time, source, kind of contact, health level, urgency, attachment
count. No reporter id is stored with a report.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

from storage import crypto, settings
from storage.db import Connection, scrubbed

KINDS = ("visit", "call", "letter", "lawyer", "other")
HEALTH = ("ok", "concern", "critical")
NEEDS = ("medicine", "money", "letters", "lawyer", "food", "clothes")
SOURCES = ("wizard", "line", "urgent")
BODY_VERSION = 1
PIN_SETTING = "sealing_key_id"
TERMINAL_STATES = ("sent", "failed", "maybe_sent", "cancelled")
SCRUBBED_BODY = '{"text":""}'


def report_info(report_id: int, case_id: int) -> bytes:
    return crypto.aad("report/v1", report=report_id, case=case_id)


def attachment_info(attachment_id: int, report_id: int) -> bytes:
    return crypto.aad("attachment/v1", attachment=attachment_id, report=report_id)


# --- reports -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Report:
    id: int
    case_id: int
    created_at: float
    source: str
    kind: str | None
    health: str | None
    urgent: bool
    attachments: int
    key_id: str
    published_update_id: int | None

    @property
    def has_attachments(self) -> bool:
        return self.attachments > 0


_COLS = (
    "id, case_id, created_at, source, kind, health, urgent, attachments, key_id, "
    "published_update_id"
)


def _report(row: tuple) -> Report:
    values = list(row)
    values[6] = bool(values[6])
    return Report(*values)


def create(
    conn: Connection,
    *,
    case_id: int,
    source: str,
    kind: str | None,
    health: str | None,
    urgent: bool,
    key_id: str,
    now: float,
) -> int:
    """A report row with an empty seal; the caller seals the body with the new id and calls
    `set_sealed` in the same transaction, so no row is ever committed unsealed or plain."""
    cur = conn.execute(
        "INSERT INTO reports (case_id, created_at, source, kind, health, urgent, key_id, sealed) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, X'')",
        (case_id, now, source, kind, health, int(urgent), key_id),
    )
    assert cur.lastrowid is not None
    return cur.lastrowid


def set_sealed(conn: Connection, report_id: int, sealed: bytes) -> None:
    conn.execute("UPDATE reports SET sealed = ? WHERE id = ?", (sealed, report_id))


def add_attachment(conn: Connection, report_id: int, kind: str, key_id: str, now: float) -> int:
    """An attachment row with an empty seal (see `create`); `set_attachment_sealed` follows."""
    cur = conn.execute(
        "INSERT INTO report_attachments (report_id, kind, key_id, sealed, created_at) "
        "VALUES (?, ?, ?, X'', ?)",
        (report_id, kind, key_id, now),
    )
    conn.execute("UPDATE reports SET attachments = attachments + 1 WHERE id = ?", (report_id,))
    assert cur.lastrowid is not None
    return cur.lastrowid


def set_attachment_sealed(conn: Connection, attachment_id: int, sealed: bytes) -> None:
    conn.execute("UPDATE report_attachments SET sealed = ? WHERE id = ?", (sealed, attachment_id))


def get(conn: Connection, report_id: int) -> Report | None:
    row = conn.execute(f"SELECT {_COLS} FROM reports WHERE id = ?", (report_id,)).fetchone()
    return _report(row) if row else None


def recent(conn: Connection, case_ids: list[int], limit: int = 10) -> list[Report]:
    if not case_ids:
        return []
    marks = ",".join("?" * len(case_ids))
    rows = conn.execute(
        f"SELECT {_COLS} FROM reports WHERE case_id IN ({marks}) "
        "ORDER BY created_at DESC, id DESC LIMIT ?",
        (*case_ids, limit),
    ).fetchall()
    return [_report(r) for r in rows]


def mark_published(conn: Connection, report_id: int, update_id: int) -> None:
    conn.execute("UPDATE reports SET published_update_id = ? WHERE id = ?", (update_id, report_id))


@dataclass(frozen=True)
class SealedRow:
    report: Report
    case_slug: str
    case_name: str
    sealed: bytes


def sealed_rows(conn: Connection, case_id: int | None = None) -> list[SealedRow]:
    """Every report with its seal, oldest first, for the offline export."""
    sql = (
        "SELECT r.id, r.case_id, r.created_at, r.source, r.kind, r.health, r.urgent, "
        "r.attachments, r.key_id, r.published_update_id, c.slug, c.name, r.sealed "
        "FROM reports r JOIN cases c ON c.id = r.case_id"
    )
    args: tuple = ()
    if case_id is not None:
        sql += " WHERE r.case_id = ?"
        args = (case_id,)
    rows = conn.execute(sql + " ORDER BY r.created_at, r.id", args).fetchall()
    return [SealedRow(_report(r[:10]), r[10], r[11], bytes(r[12])) for r in rows]


@dataclass(frozen=True)
class SealedAttachment:
    id: int
    report_id: int
    kind: str
    key_id: str
    sealed: bytes
    created_at: float


def sealed_attachments(conn: Connection, report_id: int) -> list[SealedAttachment]:
    rows = conn.execute(
        "SELECT id, report_id, kind, key_id, sealed, created_at FROM report_attachments "
        "WHERE report_id = ? ORDER BY id",
        (report_id,),
    ).fetchall()
    return [SealedAttachment(r[0], r[1], r[2], r[3], bytes(r[4]), r[5]) for r in rows]


# --- attachment envelope (inside the seal) -------------------------------------------------

_MAGIC = b"VGA1"


def pack_attachment(data: bytes, *, name: str, mime: str, kind: str, stripped: bool) -> bytes:
    header = json.dumps(
        {"name": name, "mime": mime, "kind": kind, "metadata_stripped": stripped,
         "size": len(data)},
        ensure_ascii=False,
    ).encode()  # fmt: skip
    return _MAGIC + struct.pack(">I", len(header)) + header + data


def unpack_attachment(blob: bytes) -> tuple[dict, bytes]:
    if blob[:4] != _MAGIC or len(blob) < 8:
        raise ValueError("not an attachment envelope")
    (n,) = struct.unpack(">I", blob[4:8])
    header = json.loads(blob[8 : 8 + n].decode())
    return header, blob[8 + n :]


def strip_metadata(data: bytes, mime: str) -> tuple[bytes, bool]:
    """Remove EXIF/XMP/IPTC/comments from JPEG and text/EXIF chunks from PNG, so a photo of a
    letter does not carry the relative's GPS position or phone model into the archive.
    Other formats are kept as they are; returns (data, stripped?)."""
    try:
        if data[:3] == b"\xff\xd8\xff":
            return _strip_jpeg(data), True
        if data[:8] == b"\x89PNG\r\n\x1a\n":
            return _strip_png(data), True
    except (ValueError, IndexError, struct.error):
        pass
    return data, False


# APP0 (JFIF), APP2 only when it holds an ICC colour profile, APP14 (Adobe colour transform).
def _keep_jpeg_segment(marker: int, payload: bytes) -> bool:
    if marker == 0xE0:
        return True
    if marker == 0xE2:
        return payload.startswith(b"ICC_PROFILE\x00")
    if marker == 0xEE:
        return payload.startswith(b"Adobe")
    return not (0xE1 <= marker <= 0xEF or marker == 0xFE)


def _strip_jpeg(data: bytes) -> bytes:
    out = bytearray(b"\xff\xd8")
    i = 2
    while i < len(data):
        if data[i] != 0xFF:
            raise ValueError("bad marker")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0xDA or marker == 0xD9:  # start of scan: the rest is image data
            out += data[i:]
            return bytes(out)
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            out += data[i : i + 2]
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if length < 2 or i + 2 + length > len(data):
            raise ValueError("bad length")
        payload = data[i + 4 : i + 2 + length]
        if _keep_jpeg_segment(marker, payload):
            out += data[i : i + 2 + length]
        i += 2 + length
    raise ValueError("no image data")


_PNG_DROP = {b"tEXt", b"zTXt", b"iTXt", b"eXIf", b"tIME"}


def _strip_png(data: bytes) -> bytes:
    out = bytearray(data[:8])
    i = 8
    while i < len(data):
        (length,) = struct.unpack(">I", data[i : i + 4])
        ctype = data[i + 4 : i + 8]
        end = i + 12 + length
        if end > len(data):
            raise ValueError("truncated chunk")
        if ctype not in _PNG_DROP:
            out += data[i:end]
        i = end
        if ctype == b"IEND":
            return bytes(out)
    raise ValueError("no IEND")


# --- the sealing key pin ------------------------------------------------------------------


def pinned_key(conn: Connection) -> str | None:
    return settings.get(conn, PIN_SETTING)


def pin_key(conn: Connection, key_id: str) -> None:
    settings.put(conn, PIN_SETTING, key_id)


# --- urgent alerts ------------------------------------------------------------------------


@dataclass(frozen=True)
class Alert:
    id: int
    case_id: int
    report_id: int | None
    reporter_id: int | None
    created_at: float
    last_sent_at: float
    sends: int
    acked_at: float | None
    acked_by: int | None
    expired_at: float | None


_A_COLS = (
    "id, case_id, report_id, reporter_id, created_at, last_sent_at, sends, acked_at, acked_by, "
    "expired_at"
)


def create_alert(
    conn: Connection, case_id: int, report_id: int | None, reporter_id: int | None, now: float
) -> int:
    cur = conn.execute(
        "INSERT INTO urgent_alerts (case_id, report_id, reporter_id, created_at, last_sent_at) "
        "VALUES (?, ?, ?, ?, ?)",
        (case_id, report_id, reporter_id, now, now),
    )
    assert cur.lastrowid is not None
    return cur.lastrowid


def get_alert(conn: Connection, alert_id: int) -> Alert | None:
    row = conn.execute(f"SELECT {_A_COLS} FROM urgent_alerts WHERE id = ?", (alert_id,)).fetchone()
    return Alert(*row) if row else None


def open_alerts(conn: Connection, case_ids: list[int] | None = None) -> list[Alert]:
    """Alerts nobody has acknowledged yet and that have not expired, oldest first."""
    sql = f"SELECT {_A_COLS} FROM urgent_alerts WHERE acked_at IS NULL AND expired_at IS NULL"
    args: tuple = ()
    if case_ids is not None:
        if not case_ids:
            return []
        sql += f" AND case_id IN ({','.join('?' * len(case_ids))})"
        args = tuple(case_ids)
    rows = conn.execute(sql + " ORDER BY id", args).fetchall()
    return [Alert(*r) for r in rows]


def alert_for_report(conn: Connection, report_id: int) -> Alert | None:
    row = conn.execute(
        f"SELECT {_A_COLS} FROM urgent_alerts WHERE report_id = ?", (report_id,)
    ).fetchone()
    return Alert(*row) if row else None


def ack_alert(conn: Connection, alert_id: int, member_id: int, now: float) -> bool:
    """True for the first acknowledgement only; the reporter link is dropped once used."""
    cur = conn.execute(
        "UPDATE urgent_alerts SET acked_at = ?, acked_by = ? WHERE id = ? AND acked_at IS NULL",
        (now, member_id, alert_id),
    )
    return cur.rowcount == 1


def forget_reporter(conn: Connection, alert_id: int) -> None:
    conn.execute("UPDATE urgent_alerts SET reporter_id = NULL WHERE id = ?", (alert_id,))


def mark_alert_sent(conn: Connection, alert_id: int, now: float) -> None:
    conn.execute(
        "UPDATE urgent_alerts SET last_sent_at = ?, sends = sends + 1 WHERE id = ?",
        (now, alert_id),
    )


def expire_alert(conn: Connection, alert_id: int, now: float) -> None:
    conn.execute(
        "UPDATE urgent_alerts SET expired_at = ?, reporter_id = NULL WHERE id = ?",
        (now, alert_id),
    )


# --- outbox copies ------------------------------------------------------------------------


def _prefix_range(prefix: str) -> tuple[str, str]:
    """[low, high) bounds of the keys starting with `prefix`, so the unique index on
    outbox.idem_key answers the query instead of a scan of the whole outbox."""
    return prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)


def cancel_pending(conn: Connection, idem_prefix: str, now: float) -> int:
    """Cancel queued messages whose idempotency key starts with `idem_prefix` (ids only)."""
    low, high = _prefix_range(idem_prefix)
    return conn.execute(
        "UPDATE outbox SET state = 'cancelled', done_at = ?, error = 'superseded' "
        "WHERE idem_key >= ? AND idem_key < ? AND state = 'pending'",
        (now, low, high),
    ).rowcount


def scrub_live_copies(conn: Connection) -> int:
    """Blank the text of report and urgent-alert copies once their delivery is over.

    The live copy a coordinator receives must be plaintext in the outbox until the transport
    has it. After that the row is only bookkeeping (edits use platform_ref, never the body), so
    its body is replaced and the report's words stay nowhere in the database but in the sealed
    archive. Runs every minute from the reports job."""
    marks = ",".join("?" * len(TERMINAL_STATES))
    changed = 0
    for prefix in ("report:", "urgent:"):
        low, high = _prefix_range(prefix)
        changed += conn.execute(
            f"UPDATE outbox SET body = ? WHERE idem_key >= ? AND idem_key < ? "
            f"AND state IN ({marks}) AND body != ?",
            (SCRUBBED_BODY, low, high, *TERMINAL_STATES, SCRUBBED_BODY),
        ).rowcount
    if changed:
        scrubbed(conn)  # the old text must not live on in WAL frames
    return changed
