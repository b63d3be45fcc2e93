"""The sealed archive: report words never sit in the database in plaintext (neither in the
file bytes nor in the decrypted content), the sealing key file, and the offline export."""

from __future__ import annotations

import base64
import csv
import io
import json
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot import cli
from bot.messages import Attachment
from bot.router import CommandRateLimiter
from storage import crypto, keys, outbox, reports, sealkey
from storage.store import Store, init_network, unlock
from tests.harness import PASSPHRASE, ChatHarness

SENTINEL = "SENTINEL-7f3a9c-report-words"
SEALING_PW = "sealing key passphrase 42"


# --- helpers ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hit:
    table: str
    column: str
    row: dict[str, Any]


def scan_db(chat: ChatHarness, needle: str) -> list[Hit]:
    """Every text or blob cell of every table, read through the decrypting connection."""
    raw = needle.encode()

    def scan(conn: Any) -> list[Hit]:
        hits = []
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            cur = conn.execute(f'SELECT * FROM "{table}"')
            names = [d[0] for d in cur.description]
            for row in cur.fetchall():
                for name, value in zip(names, row, strict=True):
                    found = (isinstance(value, str) and needle in value) or (
                        isinstance(value, bytes) and raw in value
                    )
                    if found:
                        hits.append(Hit(table, name, dict(zip(names, row, strict=True))))
        return hits

    return chat.run(scan)


def raw_hits(data_dir: Path, needle: str) -> list[str]:
    found = []
    for name in ("vigil.db", "vigil.db-wal", "vigil.db-shm"):
        path = data_dir / name
        if path.exists() and needle.encode() in path.read_bytes():
            found.append(name)
    return found


def network(chat: ChatHarness, public: bytes | None) -> ChatHarness:
    chat.router.limiter = CommandRateLimiter(rate_per_minute=100_000, burst=100_000)
    chat.services.sealing_public = public
    chat.case("nasrin", "Nasrin S.", "restricted")
    chat.member("coo", "coordinator", coordinates=("nasrin",))
    chat.member("rana", "family", family_of=("nasrin",))
    return chat


def photo(payload: bytes) -> Attachment:
    data = b"\xff\xd8\xff\xda\x00\x02" + payload + b"\xff\xd9"
    return Attachment("photo", "f", "image/jpeg", len(data), "p.jpg", data)


def cli_run(monkeypatch: pytest.MonkeyPatch, data_dir: Path, *argv: str, pw: str = SEALING_PW):
    monkeypatch.setenv("VIGIL_DATA_DIR", str(data_dir))
    monkeypatch.setenv("VIGIL_PASSPHRASE", PASSPHRASE)
    monkeypatch.setenv("VIGIL_SEALING_PASSPHRASE", pw)
    monkeypatch.delenv("VIGIL_CONFIG", raising=False)
    return cli.main(list(argv))


# --- nothing plain at rest -------------------------------------------------------------------


def test_report_words_are_only_sealed(store: Store, data_dir: Path) -> None:
    pair = crypto.sealing_keypair()
    chat = network(ChatHarness(store), pair.public)
    for text in ["/report", "/pick kind visit", "/pick date today", "/pick health concern"]:
        chat.say("rana", text)
    chat.say("rana", f"cold cell {SENTINEL}")
    # Mid-wizard, the answers are in the draft, encrypted under a key held only in memory.
    assert scan_db(chat, SENTINEL) == []
    chat.say("rana", "/pick needs done")
    chat.say("rana", f"he said {SENTINEL}")
    chat.send("rana", "", attachments=(photo(SENTINEL.encode()),))
    chat.say("rana", "/pick more done")
    chat.say("rana", f"/report one line {SENTINEL}")
    chat.say("rana", f"/urgent taken away {SENTINEL}")

    # The only plaintext copies are the live copies queued for the coordinator.
    hits = scan_db(chat, SENTINEL)
    assert hits, "the live copy must reach the coordinator"
    for hit in hits:
        assert (hit.table, hit.column) == ("outbox", "body")
        assert hit.row["chat"] == "coo"
        assert hit.row["idem_key"].startswith(("report:", "urgent:"))
    assert raw_hits(data_dir, SENTINEL) == []

    # The archive holds it, sealed.
    (sealed, rid, case_id) = chat.run(
        lambda c: c.execute("SELECT sealed, id, case_id FROM reports ORDER BY id").fetchone()
    )
    body = json.loads(crypto.open_sealed(pair.private, sealed, reports.report_info(rid, case_id)))
    assert SENTINEL in body["conditions"] and SENTINEL in body["text"]

    # Delivered: within a minute the outbox job deletes the live copies.
    now = chat.clock()
    for item in chat.run(outbox.claim, "console", 1000, now):
        chat.run(outbox.mark_sent, item.id, "ref", now)
    chat.run(outbox.scrub_final)
    assert scan_db(chat, SENTINEL) == []
    store.close()  # checkpoints the WAL into the file
    assert raw_hits(data_dir, SENTINEL) == []


def test_undelivered_live_copy_survives_until_delivery_then_goes(store: Store) -> None:
    chat = network(ChatHarness(store), crypto.sealing_keypair().public)
    chat.say("rana", f"/report {SENTINEL}")
    chat.run(outbox.scrub_final)  # not delivered yet: kept, so it can be delivered
    assert [hit.table for hit in scan_db(chat, SENTINEL)] == ["outbox"]
    chat.run(lambda c: c.execute("UPDATE outbox SET state = 'failed', done_at = 1"))
    chat.run(outbox.purge_done, chat.clock())  # the retention purge alone also removes it
    assert scan_db(chat, SENTINEL) == []


def test_without_a_key_nothing_of_the_report_is_kept(store: Store, data_dir: Path) -> None:
    chat = network(ChatHarness(store), None)
    chat.say("rana", f"/report {SENTINEL}")
    assert scan_db(chat, SENTINEL) == []


def test_a_sealed_blob_does_not_open_in_another_row(store: Store) -> None:
    pair = crypto.sealing_keypair()
    chat = network(ChatHarness(store), pair.public)
    chat.say("rana", "/report first")
    chat.say("rana", "/report second")
    (a_sealed, a_case), _ = chat.run(
        lambda c: c.execute("SELECT sealed, case_id FROM reports ORDER BY id").fetchall()
    )
    with pytest.raises(crypto.CryptoError):
        crypto.open_sealed(pair.private, a_sealed, reports.report_info(2, a_case))


# --- the key file and the export ---------------------------------------------------------------


def make_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, data_dir: Path) -> Path:
    """The documented flow: sealing-new on a "laptop" with no data dir, then sealing-import."""
    key = tmp_path / "sealing.key"
    laptop = tmp_path / "laptop-has-no-network"
    assert cli_run(monkeypatch, laptop, "keys", "sealing-new", "--out", str(key)) == 0
    assert not laptop.exists()
    assert cli_run(monkeypatch, data_dir, "keys", "sealing-import", f"{key}.pub") == 0
    return key


def test_sealing_new_offline_then_import_shows_the_same_words(
    store: Store, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    key = tmp_path / "sealing.key"
    laptop = tmp_path / "laptop"
    assert cli_run(monkeypatch, laptop, "keys", "sealing-new", "--out", str(key)) == 0
    made = capsys.readouterr().out
    assert not laptop.exists()  # no data dir needed, none created
    pub = Path(f"{key}.pub")
    for path in (key, pub):
        assert path.stat().st_mode & 0o777 == 0o600
    doc, pub_doc = json.loads(key.read_text()), json.loads(pub.read_text())
    assert doc["kind"] == "vigil-sealing-key" and doc["kdf"] == "argon2id"
    assert pub_doc["kind"] == "vigil-sealing-public-key" and "wrapped" not in pub_doc
    words = sealkey.fingerprint_words(base64.b64decode(pub_doc["public"]))
    assert len(words.split()) == 8 and words in made and pub_doc["words"] == words
    assert "sealing-import sealing.key.pub" in made

    assert cli_run(monkeypatch, data_dir, "keys", "sealing-import", str(pub)) == 0
    assert words in capsys.readouterr().out
    slots = keys.KeySlots.load(data_dir)
    assert slots.sealing_public == base64.b64decode(pub_doc["public"])
    assert store.db.run_sync(reports.pinned_key) == doc["key_id"]
    private, public, _ = sealkey.load_private(key, SEALING_PW)
    assert public == slots.sealing_public and crypto.sealing_public_of(private) == public
    actions = store.db.run_sync(lambda c: c.execute("SELECT action FROM audit").fetchall())
    assert ("keys.sealing_imported",) in actions

    # The same file again: nothing to do. Another key: only with --replace.
    assert cli_run(monkeypatch, data_dir, "keys", "sealing-import", str(pub)) == 0
    assert "already" in capsys.readouterr().out
    other = tmp_path / "other.key"
    assert cli_run(monkeypatch, laptop, "keys", "sealing-new", "--out", str(other)) == 0
    capsys.readouterr()
    assert cli_run(monkeypatch, data_dir, "keys", "sealing-import", f"{other}.pub") == 2
    assert "--replace" in capsys.readouterr().err
    assert keys.KeySlots.load(data_dir).sealing_public == public
    argv = ("keys", "sealing-import", "--replace", f"{other}.pub")
    assert cli_run(monkeypatch, data_dir, *argv) == 0
    assert "replaces the key" in capsys.readouterr().out
    assert keys.KeySlots.load(data_dir).sealing_public != public


def test_sealing_new_refuses_beside_a_network_unless_on_server(
    store: Store, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    key = tmp_path / "sealing.key"
    assert cli_run(monkeypatch, data_dir, "keys", "sealing-new", "--out", str(key)) == 2
    assert "offline computer" in capsys.readouterr().err and not key.exists()
    argv = ("keys", "sealing-new", "--on-server", "--out", str(key))
    assert cli_run(monkeypatch, data_dir, *argv, pw="short") == 2
    assert cli_run(monkeypatch, data_dir, *argv, pw=PASSPHRASE) == 2
    assert "must differ" in capsys.readouterr().err and not key.exists()
    assert cli_run(monkeypatch, data_dir, *argv) == 0
    out = capsys.readouterr()
    assert "generated on this server" in out.err and "restart" in out.out
    _private, public, key_id = sealkey.load_private(key, SEALING_PW)
    assert keys.KeySlots.load(data_dir).sealing_public == public
    assert store.db.run_sync(reports.pinned_key) == key_id
    assert sealkey.fingerprint_words(public) in out.out
    # A second key on the server only with --replace.
    again = tmp_path / "again.key"
    assert cli_run(monkeypatch, data_dir, *argv[:-1], str(again)) == 2
    assert "--replace" in capsys.readouterr().err and not again.exists()
    assert cli_run(monkeypatch, data_dir, *argv[:-1], str(again), "--replace") == 0
    assert keys.KeySlots.load(data_dir).sealing_public != public
    # Existing files are never overwritten.
    assert cli_run(monkeypatch, tmp_path / "x", "keys", "sealing-new", "--out", str(key)) == 2


def test_a_damaged_or_foreign_public_key_file_is_refused(
    store: Store, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    key = tmp_path / "sealing.key"
    assert cli_run(monkeypatch, tmp_path / "laptop", "keys", "sealing-new", "--out", str(key)) == 0
    pub = Path(f"{key}.pub")
    doc = json.loads(pub.read_text())
    doc["public"] = base64.b64encode(crypto.sealing_keypair().public).decode()  # id no longer fits
    bad = tmp_path / "bad.pub"
    bad.write_text(json.dumps(doc))
    junk = tmp_path / "junk.pub"
    junk.write_text("{not json")
    before = keys.KeySlots.load(data_dir).sealing_public
    capsys.readouterr()
    for path, expected in [
        (bad, "damaged"),
        (junk, "not a Vigil"),
        (tmp_path / "no.pub", "Cannot"),
    ]:
        assert cli_run(monkeypatch, data_dir, "keys", "sealing-import", str(path)) == 2
        err = capsys.readouterr().err
        assert expected in err and len(err.strip().splitlines()) == 1
    assert keys.KeySlots.load(data_dir).sealing_public == before


def test_offline_round_trip_through_the_real_command(tmp_path: Path, data_dir: Path) -> None:
    """Issue 13's round trip with `vigil` as an operator runs it: generate on a machine with no
    data dir, import on the server, a relative reports (chat harness), export opens it."""
    from tests.cli_helpers import vigil

    laptop = tmp_path / "laptop"
    laptop.mkdir()
    key = laptop / "sealing.key"
    env = {"VIGIL_SEALING_PASSPHRASE": SEALING_PW}
    made = vigil("keys", "sealing-new", "--out", str(key), data_dir=laptop / "none",
                 passphrase=None, extra=env)  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert not (laptop / "none").exists()
    init_network(data_dir, PASSPHRASE).close()
    imported = vigil("keys", "sealing-import", f"{key}.pub", data_dir=data_dir)
    assert imported.returncode == 0, imported.stderr
    words = made.stdout.split("Its words: ")[1].splitlines()[0]
    assert f"Its words: {words}" in imported.stdout

    store = unlock(data_dir, PASSPHRASE)
    try:
        chat = network(ChatHarness(store), keys.KeySlots.load(data_dir).sealing_public)
        chat.say("rana", f"/report visit today {SENTINEL}")
    finally:
        store.close()
    out = tmp_path / "export.json"
    exported = vigil("reports", "export", "--sealing-key", str(key), "--out", str(out),
                     data_dir=data_dir, extra=env)  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    (report,) = json.loads(out.read_text())["reports"]
    assert SENTINEL in report["body"]["text"]


def _seed_reports(store: Store, data_dir: Path) -> ChatHarness:
    chat = network(ChatHarness(store), keys.KeySlots.load(data_dir).sealing_public)
    chat.send(
        "rana",
        f'/report =HYPERLINK("http://evil") {SENTINEL}',
        attachments=(photo(b"PHOTO-" + SENTINEL.encode()),),
    )
    for text in ["/report", "/pick kind letter", "/pick date today", "/pick health critical"]:
        chat.say("rana", text)
    for text in ["no heating", "/pick needs medicine", "/pick needs done", "/skip", "/skip"]:
        chat.say("rana", text)
    return chat


def test_export_json_and_csv_with_the_right_key(
    store: Store, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    key = make_key(monkeypatch, tmp_path, data_dir)
    _seed_reports(store, data_dir)
    capsys.readouterr()

    out = tmp_path / "export.json"
    argv = ("reports", "export", "--sealing-key", str(key), "--out", str(out))
    assert cli_run(monkeypatch, data_dir, *argv) == 0
    assert out.stat().st_mode & 0o777 == 0o600
    doc = json.loads(out.read_text())
    first, second = doc["reports"]
    assert SENTINEL in first["body"]["text"] and first["case_slug"] == "nasrin"
    (att,) = first["attachments"]
    assert SENTINEL.encode() in base64.b64decode(att["data_base64"])
    assert second["kind"] == "letter" and second["health"] == "critical"
    assert second["body"]["conditions"] == "no heating"
    assert second["body"]["needs"] == ["medicine"]
    assert "exported 2 report(s)" in capsys.readouterr().err

    files = tmp_path / "files"
    argv = ("reports", "export", "--sealing-key", str(key), "--format", "csv")
    assert cli_run(monkeypatch, data_dir, *argv, "--attachments-dir", str(files)) == 0
    table = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(table) == 2
    assert table[0]["text"].startswith("'=HYPERLINK")  # not a formula in a spreadsheet
    assert SENTINEL in table[0]["text"] and table[1]["needs"] == "medicine"
    (written,) = files.iterdir()
    assert SENTINEL.encode() in written.read_bytes() and table[0]["attachments"] == str(written)

    audit = store.db.run_sync(lambda c: c.execute("SELECT action FROM audit").fetchall())
    assert ("reports.exported",) in audit


def test_export_with_a_wrong_key_fails_cleanly(
    store: Store, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    key = make_key(monkeypatch, tmp_path, data_dir)
    _seed_reports(store, data_dir)
    other = tmp_path / "other.key"
    other.write_text(json.dumps(sealkey.private_document(crypto.sealing_keypair(), SEALING_PW)))
    capsys.readouterr()
    out = tmp_path / "x.json"

    def export(path: Path, pw: str = SEALING_PW) -> tuple[int, str]:
        argv = ("reports", "export", "--sealing-key", str(path), "--out", str(out))
        rc = cli_run(monkeypatch, data_dir, *argv, pw=pw)
        return rc, capsys.readouterr().err

    for rc, err, expected in [
        (*export(other), "opens none of the 2 reports"),
        (*export(key, "the wrong passphrase"), "Wrong passphrase"),
        (*export(tmp_path / "missing.key"), "Cannot read"),
    ]:
        assert rc == 2 and expected in err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    garbage = tmp_path / "garbage.key"
    garbage.write_text("{not json")
    rc, err = export(garbage)
    assert rc == 2 and "not a Vigil sealing key file" in err
    assert not out.exists()


def test_export_reports_damaged_rows(
    store: Store, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    key = make_key(monkeypatch, tmp_path, data_dir)
    _seed_reports(store, data_dir)
    # A blob moved to another row (someone tampering with the archive) no longer opens.
    store.db.run_sync(
        lambda c: c.execute("UPDATE reports SET sealed = (SELECT sealed FROM reports WHERE id = 1)")
    )
    out = tmp_path / "x.json"
    argv = ("reports", "export", "--sealing-key", str(key), "--out", str(out))
    assert cli_run(monkeypatch, data_dir, *argv) == 1
    doc = json.loads(out.read_text())
    assert [r["report_id"] for r in doc["reports"]] == [1] and doc["damaged_report_ids"] == [2]
    assert "1 damaged" in capsys.readouterr().err


# --- pieces ----------------------------------------------------------------------------------


def test_passphrase_wrap_round_trip() -> None:
    params = keys.kdf_params_from_env()
    salt, wrapped = crypto.wrap_with_passphrase(b"secret", "pass phrase", params, b"ctx")
    assert crypto.unwrap_with_passphrase(wrapped, "pass phrase", salt, params, b"ctx") == b"secret"
    for pw, context in [("wrong", b"ctx"), ("pass phrase", b"other")]:
        with pytest.raises(crypto.CryptoError):
            crypto.unwrap_with_passphrase(wrapped, pw, salt, params, context)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def test_metadata_is_stripped_from_photos() -> None:
    png = (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", b"\x00" * 13)
        + _png_chunk(b"tEXt", b"GPS\x0051.1N")
        + _png_chunk(b"eXIf", b"MM\x00*CAMERA")
        + _png_chunk(b"IDAT", b"pixels")
        + _png_chunk(b"IEND", b"")
    )
    clean, stripped = reports.strip_metadata(png, "image/png")
    assert stripped and b"51.1N" not in clean and b"CAMERA" not in clean and b"pixels" in clean
    pdf = b"%PDF-1.4 Author: someone"
    assert reports.strip_metadata(pdf, "application/pdf") == (pdf, False)
    broken = b"\xff\xd8\xff\xe1\xff\xff"
    assert reports.strip_metadata(broken, "image/jpeg") == (broken, False)
