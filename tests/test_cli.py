"""The command line as an operator meets it: exit codes, one clear sentence, files untouched.

THREATS.md rule 4: a wrong passphrase, a missing key slot, a corrupt database: exit code 2 and
one clear sentence, without touching the files. Every case runs `.venv/bin/vigil` in a child
process with VIGIL_DATA_DIR / VIGIL_PASSPHRASE / VIGIL_INSECURE_FAST_KDF=1.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from storage import keys
from storage.db import DB_FILE
from tests.cli_helpers import one_line_error, snapshot, vigil
from tests.harness import PASSPHRASE

UNLOCKING = [
    ("status",),
    ("invite", "--role", "activist"),
    ("backup", "never.vigilbak"),
    ("keys", "add"),
    ("keys", "rotate"),
    ("retention",),
]


@pytest.fixture
def data(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    result = vigil("init", data_dir=d)
    assert result.returncode == 0, result.stderr
    return d


def test_init_prints_one_admin_code_and_refuses_to_overwrite(data: Path) -> None:
    before = snapshot(data)
    assert set(before) >= {keys.SLOTS_FILE, DB_FILE}
    again = vigil("init", data_dir=data)
    assert "refusing to overwrite" in one_line_error(again)
    assert snapshot(data) == before


@pytest.mark.parametrize("args", UNLOCKING, ids=lambda a: " ".join(a))
def test_wrong_passphrase(data: Path, args: tuple[str, ...]) -> None:
    before = snapshot(data)
    result = vigil(*args, data_dir=data, passphrase="this is not the passphrase",
                   extra={"VIGIL_NEW_PASSPHRASE": "a new one for keys add"})  # fmt: skip
    line = one_line_error(result)
    assert "Wrong passphrase" in line and "this is not" not in line
    assert snapshot(data) == before


@pytest.mark.parametrize("args", UNLOCKING, ids=lambda a: " ".join(a))
def test_missing_slot_file(data: Path, args: tuple[str, ...]) -> None:
    (data / keys.SLOTS_FILE).unlink()
    before = snapshot(data)
    extra = {"VIGIL_NEW_PASSPHRASE": "a new one for keys add"}
    line = one_line_error(vigil(*args, data_dir=data, extra=extra))
    assert "No key slots" in line or "key slot" in line
    assert snapshot(data) == before


def test_damaged_slot_file(data: Path) -> None:
    (data / keys.SLOTS_FILE).write_text("{not json")
    before = snapshot(data)
    assert "damaged" in one_line_error(vigil("status", data_dir=data))
    assert snapshot(data) == before


@pytest.mark.parametrize("args", [("status",), ("backup", "never.vigilbak"), ("keys", "rotate")],
                         ids=lambda a: " ".join(a))  # fmt: skip
def test_corrupt_database(data: Path, args: tuple[str, ...]) -> None:
    db = data / DB_FILE
    raw = bytearray(db.read_bytes())
    raw[5000:5100] = os.urandom(100)
    db.write_bytes(bytes(raw))
    before = snapshot(data)
    line = one_line_error(vigil(*args, data_dir=data))
    assert "damaged" in line or "does not open" in line
    assert snapshot(data) == before


def test_run_without_a_transport_says_how(data: Path) -> None:
    line = one_line_error(vigil("run", data_dir=data))
    assert "VIGIL_TELEGRAM_TOKEN" in line and "VIGIL_SIGNAL_API_URL" in line


def test_no_passphrase_and_no_terminal(data: Path) -> None:
    line = one_line_error(vigil("status", data_dir=data, passphrase=None))
    assert "VIGIL_PASSPHRASE_FILE" in line


def test_status_shows_no_secrets(data: Path) -> None:
    token = "123456789:AAHsecretTOKENsecretTOKENsecretTOKEN1"
    number = "+375291234567"
    extra = {
        "VIGIL_TELEGRAM_TOKEN": token,
        "VIGIL_TELEGRAM_API_URL": "http://127.0.0.1:9/bot",  # nothing listens: unreachable
        "VIGIL_SIGNAL_API_URL": "http://127.0.0.1:9",
        "VIGIL_SIGNAL_NUMBER": number,
    }
    result = vigil("status", data_dir=data, extra=extra)
    assert result.returncode == 0, result.stderr
    shown = result.stdout + result.stderr
    doc = (data / keys.SLOTS_FILE).read_text()
    for secret in (PASSPHRASE, token, token.split(":")[1], number, number[1:]):
        assert secret not in shown
    for fragment in ("salt", "wrapped"):
        assert fragment not in shown
    assert doc[-60:] not in shown
    assert "key slots" in shown and "unreachable" in shown


def test_usage_errors_exit_2(data: Path) -> None:
    result = vigil("keys", data_dir=data)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert vigil("restore", data_dir=data).returncode == 2
    assert "Give both KIND and DAYS" in one_line_error(vigil("retention", "audit", data_dir=data))
    assert "between" in one_line_error(vigil("retention", "inbox_keys", "0.1", data_dir=data))
