"""The command line as an operator meets it: exit codes, one clear sentence, files untouched.

THREATS.md rule 4: a wrong passphrase, a missing key slot, a corrupt database: exit code 2 and
one clear sentence, without touching the files. Every case runs `.venv/bin/vigil` in a child
process with VIGIL_DATA_DIR / VIGIL_PASSPHRASE / VIGIL_INSECURE_FAST_KDF=1.
"""

from __future__ import annotations

import argparse
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


# --- the CLI as a package: help, words for bad numbers, prompts ------------------------------


def _subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                out += [sub, *_subparsers(sub)]
    return out


def test_every_subcommand_describes_every_argument() -> None:
    from bot import cli

    parsers = _subparsers(cli.parser())
    assert len(parsers) >= 18
    for p in parsers:
        assert p.description, p.prog
        for action in p._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            assert action.help and action.help != argparse.SUPPRESS, (p.prog, action.dest)
        assert callable(p.get_default("func")) or any(
            isinstance(a, argparse._SubParsersAction) for a in p._actions
        ), p.prog


def test_retention_help_lists_kinds_and_bounds(tmp_path: Path) -> None:
    from storage import retention

    text = vigil("retention", "--help", data_dir=tmp_path / "none").stdout
    for kind in retention.KINDS:
        assert kind in text
    assert "7 to 3650 days" in text and "2 to 90 days" in text


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("invite", "--role", "activist", "--uses", "many"), "--uses takes a whole number"),
        (("invite", "--role", "activist", "--uses", "0"), "from 1 to 10000"),
        (("retention", "audit", "lots"), "DAYS takes a number of days"),
        (("retention", "audit", "-5"), "positive number of days"),
        (("retention", "nonsense", "5"), "invalid choice"),
    ],
)
def test_numbers_that_fail_to_parse_say_so_in_words(
    tmp_path: Path, args: tuple[str, ...], words: str
) -> None:
    line = one_line_error(vigil(*args, data_dir=tmp_path / "none"))
    assert words in line and "--help" in line


class Terminal:
    """getpass and isatty as a person at a terminal would answer them."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *answers: str) -> None:
        self.answers = list(answers)
        self.prompts: list[str] = []
        monkeypatch.setattr("getpass.getpass", self.ask)
        monkeypatch.setattr("sys.stdin.isatty", lambda: True)

    def ask(self, prompt: str = "") -> str:
        self.prompts.append(prompt)
        return self.answers.pop(0)


def _cli(monkeypatch: pytest.MonkeyPatch, data_dir: Path, *argv: str) -> int:
    from bot import cli

    for name in ("VIGIL_PASSPHRASE", "VIGIL_PASSPHRASE_FILE", "VIGIL_NEW_PASSPHRASE",
                 "VIGIL_CONFIG"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("VIGIL_DATA_DIR", str(data_dir))
    return cli.main(list(argv))


def test_init_checks_the_length_before_asking_for_the_repeat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    term = Terminal(monkeypatch, "short")
    assert _cli(monkeypatch, tmp_path / "d", "init") == 2
    assert term.prompts == ["Passphrase: "]  # no "Repeat" for a passphrase already refused
    assert "at least 8 characters" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
    term = Terminal(monkeypatch, PASSPHRASE, PASSPHRASE)
    assert _cli(monkeypatch, tmp_path / "d", "init") == 0
    assert term.prompts == ["Passphrase: ", "Repeat the passphrase: "]
    out = capsys.readouterr().out
    assert "vigil keys sealing-new --out sealing.key" in out
    assert "vigil keys sealing-import sealing.key.pub" in out
    assert out.strip().splitlines()[-1].startswith("Both commands show the same eight words")


def test_keys_add_asks_for_an_existing_then_the_new_passphrase(
    data: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    new = "the new holder's passphrase"
    term = Terminal(monkeypatch, PASSPHRASE, new, new)
    assert _cli(monkeypatch, data, "keys", "add", "--label", "maria") == 0
    assert term.prompts == [
        "An existing passphrase of this network: ",
        "The new passphrase: ",
        "Repeat the new passphrase: ",
    ]
    term = Terminal(monkeypatch, PASSPHRASE, "short")
    assert _cli(monkeypatch, data, "keys", "add") == 2
    assert len(term.prompts) == 2  # refused before the repeat
    assert "at least" in capsys.readouterr().err


def test_status_shows_the_sealing_key_words_or_none(data: Path, tmp_path: Path) -> None:
    shown = vigil("status", data_dir=data).stdout
    assert "sealing key    none — reports are refused" in shown
    env = {"VIGIL_SEALING_PASSPHRASE": "a sealing passphrase of length"}
    key = tmp_path / "s.key"
    made = vigil("keys", "sealing-new", "--out", str(key), data_dir=tmp_path / "laptop",
                 passphrase=None, extra=env)  # fmt: skip
    words = made.stdout.split("Its words: ")[1].splitlines()[0]
    assert vigil("keys", "sealing-import", f"{key}.pub", data_dir=data).returncode == 0
    assert f"sealing key    {words}" in vigil("status", data_dir=data).stdout


def test_retention_report_bodies_warns_how_many_and_asks(data: Path) -> None:
    from storage.store import unlock

    store = unlock(data, PASSPHRASE)
    store.db.run_sync(
        lambda c: c.execute(
            "INSERT INTO cases (slug, name, visibility, created_at) VALUES ('c', 'C', 'public', 0)"
        )
    )
    for age_days in (400, 200, 100, 10):
        store.db.run_sync(
            lambda c, a=age_days: c.execute(
                "INSERT INTO reports (case_id, created_at, source, urgent, key_id, sealed) "
                "VALUES (1, strftime('%s','now') - ? * 86400, 'line', 0, 'k', X'00')",
                (a,),
            )
        )
    store.close()  # fmt: skip
    refused = vigil("retention", "report_bodies", "90", data_dir=data)
    line = one_line_error(refused)
    assert "deletes 2 report(s)" in line and "--yes" in line  # 200 and 100 days old
    assert "deletes 2 report(s) older than that" in refused.stdout
    assert "365 days" in vigil("retention", data_dir=data).stdout.split("report_bodies")[1][:30]
    done = vigil("retention", "report_bodies", "90", "--yes", data_dir=data)
    assert done.returncode == 0 and "report_bodies        90 days" in done.stdout
    quiet = vigil("retention", "report_bodies", "365", data_dir=data)  # deletes none: no question
    assert quiet.returncode == 0


def test_signal_captcha_without_a_running_bot_says_so_and_withdraws_it(tmp_path: Path) -> None:
    data = tmp_path / "net"
    data.mkdir()
    link = "signalcaptcha://signal-hcaptcha.abc.challenge.P1_x"
    result = vigil("signal", "captcha", link, "--wait", "1", data_dir=data)
    assert result.returncode == 1
    assert "No answer from a running Vigil" in result.stdout
    assert list(data.iterdir()) == []  # not left for a bot started later
    bad = vigil("signal", "captcha", "solved!", data_dir=data)
    assert bad.returncode == 2 and "signalcaptcha://" in one_line_error(bad)
    assert list(data.iterdir()) == []
    helped = vigil("signal", "captcha", "--help", data_dir=data)
    assert "signalcaptchas.org" in helped.stdout and "--wait" in helped.stdout
