"""Encrypted backups: no plaintext inside, exact restore, only with a slot passphrase, and any
alteration refused before anything is written."""

from __future__ import annotations

import io
import json
import os
import stat
import struct
import threading
from pathlib import Path

import pytest

from bot.cli.common import ProgressBar
from storage import backup, crypto, keyadmin, keys
from storage.store import init_network, unlock
from tests.authz_world import dump
from tests.cli_helpers import one_line_error, snapshot, vigil
from tests.harness import PASSPHRASE, ChatHarness

SENTINEL = "SENTINEL-BACKUP-relative-Zx81"
SECOND = "the second holder's passphrase"


def populate(chat: ChatHarness) -> None:
    chat.services.sealing_public = crypto.sealing_keypair().public
    chat.case("nasrin", f"Nasrin {SENTINEL}", visibility="restricted")
    chat.member("coo", "coordinator")
    chat.member("rana", "family", family_of=("nasrin",))
    chat.say("rana", f"/report nasrin {SENTINEL} he is thin")
    chat.say("coo", f"/editcase nasrin summary {SENTINEL} summary")
    chat.run(lambda c: c.execute("INSERT INTO settings VALUES ('probe', ?)", (SENTINEL,)))


def full_dump(data_dir: Path) -> dict[str, list[object]]:
    store = unlock(data_dir, PASSPHRASE)
    try:
        return store.db.run_sync(lambda c: dump(c, skip=()))
    finally:
        store.close()


@pytest.fixture
def made(chat: ChatHarness, tmp_path: Path) -> Path:
    populate(chat)
    out = tmp_path / "net.vigilbak"
    backup.create_backup(chat.store.data_dir, PASSPHRASE, out)
    return out


def test_backup_holds_no_plaintext_and_restores_exactly(
    chat: ChatHarness, tmp_path: Path, made: Path
) -> None:
    raw = made.read_bytes()
    for needle in (SENTINEL.encode(), SENTINEL.encode("utf-16-le"), b"SQLite format 3", b"rana"):
        assert needle not in raw
    for secret in (chat.store.master, chat.store.subkeys.database, chat.store.subkeys.backup):
        assert secret not in raw and secret.hex().encode() not in raw
    assert stat.S_IMODE(made.stat().st_mode) == 0o600
    chat.store.close()
    original = full_dump(chat.store.data_dir)
    target = tmp_path / "restored"
    backup.restore_backup(made, target, PASSPHRASE)
    assert full_dump(target) == original
    assert (target / keys.SLOTS_FILE).read_bytes() != b""
    leftovers = [p.name for p in target.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_backup_is_a_consistent_snapshot_while_the_bot_writes(
    chat: ChatHarness, tmp_path: Path
) -> None:
    """Two tables written in one transaction stay in step in the copy, whenever it is taken."""
    chat.run(lambda c: c.execute("CREATE TABLE pair_a (n INTEGER)"))
    chat.run(lambda c: c.execute("CREATE TABLE pair_b (n INTEGER)"))
    stop = threading.Event()

    def writer() -> None:
        n = 0
        while not stop.is_set():
            n += 1

            def both(c, n=n):  # type: ignore[no-untyped-def]
                c.execute("INSERT INTO pair_a VALUES (?)", (n,))
                c.execute("INSERT INTO pair_b VALUES (?)", (n,))
                c.execute("INSERT INTO settings VALUES (?, ?)", (f"pad{n}", "x" * 3000))

            chat.run(both)

    t = threading.Thread(target=writer)
    t.start()
    try:
        outs = []
        for i in range(3):
            out = tmp_path / f"b{i}.vigilbak"
            backup.create_backup(chat.store.data_dir, PASSPHRASE, out)
            outs.append(out)
    finally:
        stop.set()
        t.join()
    for i, out in enumerate(outs):
        target = tmp_path / f"r{i}"
        backup.restore_backup(out, target, PASSPHRASE)
        d = full_dump(target)
        assert d["pair_a"] == d["pair_b"]


def test_restore_needs_a_passphrase_that_was_valid_when_it_was_made(
    chat: ChatHarness, tmp_path: Path
) -> None:
    chat.store.close()
    keyadmin.add_slot(chat.store.data_dir, PASSPHRASE, SECOND, "second")
    out = tmp_path / "two.vigilbak"
    backup.create_backup(chat.store.data_dir, SECOND, out)
    with pytest.raises(keys.WrongPassphrase):
        backup.restore_backup(out, tmp_path / "x", "not a passphrase at all")
    assert not (tmp_path / "x").exists()
    backup.restore_backup(out, tmp_path / "y", SECOND)
    unlock(tmp_path / "y", PASSPHRASE).close()
    # A slot removed later still opens the old backup: the docs say to make a new one.
    keyadmin.remove_slot(chat.store.data_dir, PASSPHRASE, keys.KeySlots.load(
        chat.store.data_dir).slots[-1].slot_id)  # fmt: skip
    backup.restore_backup(out, tmp_path / "z", SECOND)


def _tamper(path: Path, offset: int, new: bytes | None = None) -> None:
    raw = bytearray(path.read_bytes())
    if new is None:
        raw[offset] ^= 0x01
    else:
        raw[offset : offset + len(new)] = new
    path.write_bytes(bytes(raw))


def _layout(path: Path) -> tuple[int, list[tuple[int, int]]]:
    """(header end, [(chunk start, chunk length)])."""
    raw = path.read_bytes()
    (hlen,) = struct.unpack(">I", raw[8:12])
    pos, chunks = 12 + hlen, []
    while pos < len(raw):
        (n,) = struct.unpack(">I", raw[pos : pos + 4])
        chunks.append((pos, n + 4))
        pos += 4 + n
    return 12 + hlen, chunks


@pytest.fixture
def big(chat: ChatHarness, tmp_path: Path) -> Path:
    """A backup of several chunks (random filler defeats any compression)."""
    chat.run(lambda c: c.execute("CREATE TABLE filler (b BLOB)"))
    for _ in range(5):
        chat.run(lambda c: c.execute("INSERT INTO filler VALUES (?)", (os.urandom(600_000),)))
    out = tmp_path / "big.vigilbak"
    backup.create_backup(chat.store.data_dir, PASSPHRASE, out)
    assert len(_layout(out)[1]) >= 3
    return out


def _cases(path: Path) -> dict[str, bytes]:
    raw = path.read_bytes()
    header_end, chunks = _layout(path)
    header = json.loads(raw[12:header_end])
    (c0, l0), (c1, l1) = chunks[0], chunks[1]
    attacker = init_keyslots_json(path.parent / "attacker")
    header["keyslots"] = attacker
    forged = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    return {
        "header byte": raw[:20] + bytes([raw[20] ^ 1]) + raw[21:],
        "chunk byte": raw[: c1 + 30] + bytes([raw[c1 + 30] ^ 1]) + raw[c1 + 31 :],
        "truncated": raw[: chunks[-1][0]],
        "trailing bytes": raw + b"\x00" * 8,
        "chunks swapped": raw[:c0] + raw[c1 : c1 + l1] + raw[c0 : c0 + l0] + raw[c1 + l1 :],
        "chunk dropped": raw[:c1] + raw[c1 + l1 :],
        "slots replaced": raw[:8] + struct.pack(">I", len(forged)) + forged + raw[header_end:],
        "not a backup": b"PK\x03\x04" + raw[4:],
        "empty": b"",
    }


def init_keyslots_json(directory: Path) -> dict[str, object]:
    store = init_network(directory, PASSPHRASE)  # same passphrase, another master key
    store.close()
    return json.loads((directory / keys.SLOTS_FILE).read_text())


@pytest.mark.parametrize(
    "case",
    ["header byte", "chunk byte", "truncated", "trailing bytes", "chunks swapped",
     "chunk dropped", "slots replaced", "not a backup", "empty"],
)  # fmt: skip
def test_altered_archives_are_refused_before_anything_is_written(
    big: Path, tmp_path: Path, case: str
) -> None:
    bad = tmp_path / f"{case}.vigilbak"
    bad.write_bytes(_cases(big)[case])
    target = tmp_path / "target"
    target.mkdir()
    with pytest.raises((backup.BackupError, keys.KeyError_)):
        backup.restore_backup(bad, target, PASSPHRASE)
    assert list(target.iterdir()) == []


def test_restore_refuses_an_existing_network_unless_forced(
    chat: ChatHarness, made: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    store = init_network(other, PASSPHRASE)
    store.db.run_sync(lambda c: c.execute("INSERT INTO settings VALUES ('mine', 'yes')"))
    store.close()
    before = snapshot(other)
    with pytest.raises(backup.NetworkExists):
        backup.restore_backup(made, other, PASSPHRASE)
    assert snapshot(other) == before
    old_slots = (other / keys.SLOTS_FILE).read_bytes()
    linked = tmp_path / "old-slots-link"
    os.link(other / keys.SLOTS_FILE, linked)  # sees the old file's bytes after it is replaced
    backup.restore_backup(made, other, PASSPHRASE, force=True)
    restored = full_dump(other)
    assert ("probe", SENTINEL) in restored["settings"] and ("mine", "yes") not in restored[
        "settings"
    ]
    assert linked.read_bytes() != old_slots and b"wrapped" not in linked.read_bytes()


def test_cli_backup_and_restore(chat: ChatHarness, tmp_path: Path) -> None:
    populate(chat)
    chat.store.close()
    data = chat.store.data_dir
    out = tmp_path / "cli.vigilbak"
    result = vigil("backup", str(out), data_dir=data)
    assert result.returncode == 0, result.stderr
    assert "Backup written" in result.stdout and "\r" not in result.stderr  # no TTY, no bar
    line = one_line_error(vigil("backup", str(out), data_dir=data))
    assert "already exists" in line
    target = tmp_path / "cli-restored"
    wrong = vigil("restore", str(out), data_dir=target, passphrase="wrong passphrase here")
    assert "Wrong passphrase" in one_line_error(wrong)
    assert not target.exists() or list(target.iterdir()) == []
    ok = vigil("restore", str(out), data_dir=target)
    assert ok.returncode == 0, ok.stderr
    before = snapshot(target)
    again = vigil("restore", str(out), data_dir=target)
    assert "already exists" in one_line_error(again)
    assert snapshot(target) == before
    assert "not a Vigil backup" in one_line_error(
        vigil("restore", str(data / keys.SLOTS_FILE), data_dir=tmp_path / "q")
    )


def test_progress_bar_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr("bot.cli.common.BAR_AFTER", 0.0)
    tty = Tty()
    bar = ProgressBar(tty)
    bar("snapshot", 5, 10)
    bar("encrypt", 10, 10)
    bar.close()
    assert "copying" in tty.getvalue() and "100.0%" in tty.getvalue()
    pipe = io.StringIO()
    quiet = ProgressBar(pipe)
    quiet("snapshot", 5, 10)
    quiet.close()
    assert pipe.getvalue() == ""


def test_progress_is_reported_while_backing_up(chat: ChatHarness, tmp_path: Path) -> None:
    seen: list[tuple[str, int, int]] = []
    backup.create_backup(chat.store.data_dir, PASSPHRASE, tmp_path / "p.vigilbak",
                         progress=lambda *a: seen.append(a))  # fmt: skip
    phases = [p for p, _d, _t in seen]
    assert "snapshot" in phases and "encrypt" in phases
    assert all(d <= t for _p, d, t in seen) and seen[-1][1] == seen[-1][2]
