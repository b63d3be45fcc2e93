"""`vigil keys list|add|remove|rotate`, and mending a key change a crash interrupted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from storage import keyadmin, keys, wipe
from storage.db import DB_FILE, StoreError, verify
from storage.store import init_network, unlock
from tests.cli_helpers import one_line_error, snapshot, vigil
from tests.harness import PASSPHRASE

SECOND = "the second holder's passphrase"
THIRD = "a third, offline recovery phrase"


@pytest.fixture
def data(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    store = init_network(d, PASSPHRASE)
    store.db.run_sync(lambda c: c.execute("INSERT INTO settings VALUES ('probe', 'kept')"))
    store.close()
    return d


def probe(d: Path, passphrase: str = PASSPHRASE) -> str:
    store = unlock(d, passphrase)
    try:
        return store.db.run_sync(
            lambda c: c.execute("SELECT value FROM settings WHERE key = 'probe'").fetchone()[0]
        )
    finally:
        store.close()


def add(d: Path, new: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return vigil("keys", "add", *extra, data_dir=d, extra={"VIGIL_NEW_PASSPHRASE": new})


def test_list_shows_ids_and_labels_only(data: Path) -> None:
    assert add(data, SECOND, "--label", "maria").returncode == 0
    out = vigil("keys", "list", data_dir=data, passphrase=None)
    assert out.returncode == 0
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 2 and "maria" in out.stdout
    doc = json.loads((data / keys.SLOTS_FILE).read_text())
    for slot in doc["slots"]:
        assert slot["salt"] not in out.stdout and slot["wrapped"] not in out.stdout


def test_add_then_the_new_passphrase_unlocks(data: Path) -> None:
    result = add(data, SECOND)
    assert result.returncode == 0 and "Added key slot" in result.stdout
    assert SECOND not in result.stdout + result.stderr
    assert probe(data, SECOND) == "kept"
    assert probe(data, PASSPHRASE) == "kept"


def test_add_refusals_leave_the_slot_file_untouched(data: Path) -> None:
    before = snapshot(data)
    assert "at least" in one_line_error(add(data, "short"))
    assert "already opens" in one_line_error(add(data, PASSPHRASE))
    wrong = vigil("keys", "add", data_dir=data, passphrase="not the right one",
                  extra={"VIGIL_NEW_PASSPHRASE": SECOND})  # fmt: skip
    assert "Wrong passphrase" in one_line_error(wrong)
    nothing = vigil("keys", "add", data_dir=data)
    assert "VIGIL_NEW_PASSPHRASE" in one_line_error(nothing)
    assert snapshot(data) == before


def test_remove(data: Path) -> None:
    add(data, SECOND)
    ids = [s.slot_id for s in keys.KeySlots.load(data).slots]
    result = vigil("keys", "remove", ids[1], data_dir=data)
    assert result.returncode == 0 and "Backups made before" in result.stdout
    with pytest.raises(keys.WrongPassphrase):
        probe(data, SECOND)
    before = snapshot(data)
    assert "last key slot" in one_line_error(vigil("keys", "remove", ids[0], data_dir=data))
    assert "no key slot" in one_line_error(vigil("keys", "remove", "deadbeef", data_dir=data))
    assert snapshot(data) == before


def test_removed_slot_bytes_do_not_linger_in_the_old_file(data: Path, tmp_path: Path) -> None:
    """The slot file is rewritten in place, so a removed slot's wrap is overwritten, not left
    in a freed block of a replaced file (best effort on plain filesystems)."""
    add(data, SECOND)
    removed = keys.KeySlots.load(data).slots[1]
    linked = tmp_path / "same-inode"
    (linked).hardlink_to(data / keys.SLOTS_FILE)
    assert vigil("keys", "remove", removed.slot_id, data_dir=data).returncode == 0
    assert (data / keys.SLOTS_FILE).samefile(linked)
    wrapped = json.dumps(keys.Slot.to_json(removed)["wrapped"])
    assert wrapped.strip('"') not in linked.read_text()


def test_rotate_reencrypts_and_keeps_only_the_unlocking_slot(data: Path) -> None:
    add(data, SECOND, "--label", "second")
    old_key = keys.Subkeys.derive(keys.KeySlots.load(data).unlock(PASSPHRASE)).database
    result = vigil("keys", "rotate", data_dir=data)
    assert result.returncode == 0, result.stderr
    assert "dropped" in result.stdout and "second" in result.stdout
    with pytest.raises(StoreError):
        verify(data / DB_FILE, old_key)  # the old key opens nothing any more
    assert probe(data) == "kept"
    with pytest.raises(keys.WrongPassphrase):
        probe(data, SECOND)
    assert not (data / keyadmin.NEXT_FILE).exists() and not (data / keyadmin.DB_NEXT).exists()
    store = unlock(data, PASSPHRASE)
    try:
        actions = store.db.run_sync(lambda c: c.execute("SELECT action FROM audit").fetchall())
    finally:
        store.close()
    assert ("keys.rotated",) in actions


def test_rotate_keeps_slots_whose_passphrases_are_given(data: Path) -> None:
    keyadmin.add_slot(data, PASSPHRASE, SECOND, "second")
    keyadmin.add_slot(data, PASSPHRASE, THIRD, "third")
    labels = {s.slot_id: s.label for s in keys.KeySlots.load(data).slots}

    def ask(slot: keys.Slot) -> str | None:
        return SECOND if slot.label == "second" else None

    result = keyadmin.rotate(data, PASSPHRASE, ask=ask)
    assert sorted(label for _i, label in result.kept) == ["first", "second"]
    assert [labels[i] for i, _l in result.dropped] == ["third"]
    assert probe(data, SECOND) == "kept"
    with pytest.raises(keys.WrongPassphrase):
        probe(data, THIRD)
    with pytest.raises(keyadmin.KeyChangeError):
        keyadmin.rotate(data, PASSPHRASE, ask=lambda slot: "wrong answer for it")


def test_rotate_invalidates_unredeemed_invites(data: Path) -> None:
    from handlers.invites import create_invite
    from storage import invites

    store = unlock(data, PASSPHRASE)
    code = store.db.run_sync(lambda c: create_invite(
        c, store.subkeys.index, role="activist", case_slug=None, uses=1, expires_in=3600,
        created_by=None, now=1e10 - 10))  # fmt: skip
    store.close()
    keyadmin.rotate(data, PASSPHRASE)
    store = unlock(data, PASSPHRASE)
    try:
        assert store.db.run_sync(invites.redeem, store.subkeys.index, code, 1e10 - 5) is None
    finally:
        store.close()


def test_rotate_refuses_while_the_database_is_open_elsewhere(data: Path) -> None:
    with wipe.RunLock(data):
        before = snapshot(data)
        assert "stop it before rotating" in one_line_error(vigil("keys", "rotate", data_dir=data))
        assert snapshot(data) == before


def test_wrong_passphrase_changes_nothing(data: Path) -> None:
    before = snapshot(data)
    for args in (("keys", "rotate"), ("keys", "remove", "x"), ("backup", "out.vigilbak")):
        result = vigil(*args, data_dir=data, passphrase="definitely wrong")
        assert "Wrong passphrase" in one_line_error(result)
        assert snapshot(data) == before


# --- crashes in the middle of a key change ---------------------------------------------------


def _crash_rotation_at(data: Path, point: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run a rotation in a child process that dies (os._exit) at `point`."""
    code = f"""
import os, sys
os.environ["VIGIL_INSECURE_FAST_KDF"] = "1"
from pathlib import Path
from storage import keyadmin
real = {{"replace": os.replace, "commit": keyadmin._commit}}
def die(*a, **k):
    os._exit(9)
if {point!r} == "before_db_swap":
    def swap(src, dst):
        if str(src).endswith("{keyadmin.DB_NEXT}"):
            die()
        real["replace"](src, dst)
    os.replace = swap
elif {point!r} == "after_db_swap":
    keyadmin._commit = die
elif {point!r} == "mid_slot_write":
    def half(path, data):
        fd = os.open(path, os.O_WRONLY)
        os.write(fd, data[: len(data) // 3])
        os._exit(9)
    keyadmin.overwrite_in_place = half
keyadmin.rotate(Path(sys.argv[1]), {PASSPHRASE!r})
"""
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run([sys.executable, "-c", code, str(data)], cwd=root, check=False)
    assert result.returncode == 9


@pytest.mark.parametrize(
    ("point", "outcome"),
    [("before_db_swap", "undone"), ("after_db_swap", "finished"), ("mid_slot_write", "finished")],
)
def test_an_interrupted_rotation_is_mended(
    data: Path, point: str, outcome: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _crash_rotation_at(data, point, monkeypatch)
    assert (data / keyadmin.NEXT_FILE).exists()
    assert keyadmin.recover(data, PASSPHRASE) == outcome
    assert probe(data) == "kept"
    assert not (data / keyadmin.NEXT_FILE).exists() and not (data / keyadmin.DB_NEXT).exists()
    assert keyadmin.recover(data, PASSPHRASE) is None


def test_the_cli_mends_before_acting(data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _crash_rotation_at(data, "after_db_swap", monkeypatch)
    listing = vigil("keys", "list", data_dir=data)
    assert "interrupted key change is pending" in listing.stdout
    result = add(data, SECOND)
    assert result.returncode == 0 and "completed first" in result.stdout
    assert probe(data, SECOND) == "kept"


def test_unlock_itself_mends_an_interrupted_rotation(
    data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _crash_rotation_at(data, "after_db_swap", monkeypatch)
    assert probe(data) == "kept"
