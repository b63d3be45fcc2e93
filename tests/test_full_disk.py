"""Full disk, every command (issue 13 item 5): on a small filesystem that is full, each command
that must write exits 1 with one sentence saying the disk is full, no traceback, and leaves
every file as it was; `backup` never calls a full disk "damaged".

The filesystem is real: a 24 MiB tmpfs mounted for the test (the kernel answers ENOSPC to
SQLite's own C-level writes, which no Python-level shim could fake), filled with a filler file.
Mounting needs root (CAP_SYS_ADMIN); without it the tests skip and say so.
"""

from __future__ import annotations

import errno
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage import keyadmin
from storage.store import init_network
from tests.cli_helpers import snapshot, vigil
from tests.harness import PASSPHRASE

SIZE_MB = 24
SECOND = "the second holder's passphrase"
SEALING = {"VIGIL_SEALING_PASSPHRASE": "a sealing key file passphrase"}


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SIZE_MB}m,mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip("mounting a small tmpfs needs root (CAP_SYS_ADMIN); run the suite as root")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> None:
    """Take every free block, so the next write anywhere on this filesystem fails."""
    block = b"\0" * (1 << 16)
    with (disk / "filler").open("wb", buffering=0) as f:
        for size in (1 << 16, 4096, 512, 1):
            chunk = block[:size]
            while True:
                try:
                    f.write(chunk)
                except OSError as err:
                    assert err.errno == errno.ENOSPC
                    break
    probe = disk / f"probe-{uuid.uuid4().hex}"
    try:
        with pytest.raises(OSError):
            probe.write_bytes(b"x" * 8192)
    finally:
        probe.unlink(missing_ok=True)


def files(disk: Path) -> dict[str, dict[str, bytes]]:
    """Every file on the small disk but the filler, per directory."""
    out = {}
    for directory in [disk, *(p for p in disk.rglob("*") if p.is_dir())]:
        out[str(directory.relative_to(disk))] = {
            k: v for k, v in snapshot(directory).items() if k != "filler"
        }
    return out


def disk_full_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, (result.returncode, result.stdout[-500:], result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("vigil: "), result.stderr
    assert "disk" in lines[0] and "full" in lines[0], lines[0]
    assert "damaged" not in lines[0]
    return lines[0]


@pytest.fixture
def network(disk: Path) -> Path:
    data = disk / "data"
    store = init_network(data, PASSPHRASE)
    store.db.run_sync(lambda c: c.execute("INSERT INTO settings VALUES ('probe', 'kept')"))
    store.close()
    keyadmin.add_slot(data, PASSPHRASE, SECOND, "second")
    return data


COMMANDS = {
    "invite": ("invite", "--role", "activist"),
    "status": ("status",),
    "backup": ("backup", "BACKUP"),
    "retention": ("retention",),
    "retention change": ("retention", "audit", "90"),
    "keys add": ("keys", "add"),
    "keys remove": ("keys", "remove", "SECOND_SLOT"),
    "keys rotate": ("keys", "rotate"),
    "keys sealing-import": ("keys", "sealing-import", "PUBFILE"),
}


@pytest.mark.parametrize("name", list(COMMANDS))
def test_each_command_on_a_full_disk(name: str, network: Path, disk: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    made = vigil("keys", "sealing-new", "--out", str(elsewhere / "s.key"),
                 data_dir=elsewhere / "none", extra=SEALING)  # fmt: skip
    assert made.returncode == 0, made.stderr
    second = next(s.slot_id for s in keyadmin.list_slots(network) if s.label == "second")
    args = [
        {"BACKUP": str(disk / "net.vigilbak"), "SECOND_SLOT": second,
         "PUBFILE": str(elsewhere / "s.key.pub")}.get(a, a)
        for a in COMMANDS[name]
    ]  # fmt: skip
    fill(disk)
    before = files(disk)
    result = vigil(*args, data_dir=network, extra={"VIGIL_NEW_PASSPHRASE": "a third one here"})
    disk_full_line(result)
    assert files(disk) == before
    (disk / "filler").unlink()
    # Space again: the network is whole and the command works.
    assert vigil("status", data_dir=network).returncode == 0


def test_backup_to_a_full_disk_elsewhere_is_not_damage(network: Path, tmp_path: Path) -> None:
    """The database is fine and on a roomy disk; only the output's disk is full."""
    import shutil

    roomy = tmp_path / "roomy"
    shutil.copytree(network, roomy)
    fill(network.parent)
    result = vigil("backup", str(network.parent / "out.vigilbak"), data_dir=roomy)
    disk_full_line(result)
    assert not (network.parent / "out.vigilbak").exists()
    assert [p.name for p in network.parent.iterdir() if p.name.startswith(".out")] == []


def test_init_on_a_full_disk_leaves_no_half_network(disk: Path) -> None:
    fill(disk)
    before = files(disk)
    disk_full_line(vigil("init", data_dir=disk / "new"))
    assert not (disk / "new").exists()
    assert files(disk) == before


def test_restore_onto_a_full_disk(network: Path, disk: Path, tmp_path: Path) -> None:
    out = tmp_path / "net.vigilbak"
    assert vigil("backup", str(out), data_dir=network).returncode == 0
    fill(disk)
    before = files(disk)
    disk_full_line(vigil("restore", str(out), data_dir=disk / "restored"))
    assert files(disk) == before and not (disk / "restored").exists()
    forced = vigil("restore", "--force", str(out), data_dir=network)
    disk_full_line(forced)
    assert files(disk) == before


def test_sealing_new_onto_a_full_disk(disk: Path) -> None:
    fill(disk)
    before = files(disk)
    result = vigil("keys", "sealing-new", "--out", str(disk / "s.key"),
                   data_dir=disk / "none", extra=SEALING)  # fmt: skip
    disk_full_line(result)
    assert files(disk) == before


def test_reading_commands_still_work_on_a_full_disk(network: Path, disk: Path) -> None:
    """`keys list` only reads the slot file: a full disk does not stop it (exit 0)."""
    fill(disk)
    before = files(disk)
    listing = vigil("keys", "list", data_dir=network, passphrase=None)
    assert listing.returncode == 0 and "second" in listing.stdout
    assert files(disk) == before


def test_the_disk_full_sentence_is_one_line_without_paths_of_secrets() -> None:
    """The sentence itself (no disk needed): names the data dir, never a key or a passphrase."""
    from storage.db import DiskFull

    text = str(DiskFull(Path("/var/lib/vigil")))
    assert text.count(".") >= 1 and "\n" not in text and "full" in text
    assert os.sep in text  # the place, so the operator knows which disk
