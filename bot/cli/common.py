"""What every `vigil` subcommand shares: exit codes, one-line errors, passphrases, unlocking,
argument types that explain themselves, the progress bar and the CLI's audit rows.

Passphrases. The network passphrase comes from VIGIL_PASSPHRASE_FILE, VIGIL_PASSPHRASE or a
terminal prompt. It is taken out of the Settings and the environment the moment it is read
(`Settings.take_passphrase`), so after unlock nothing in the process refers to it any more. A
new slot's passphrase (`keys add`) comes from VIGIL_NEW_PASSPHRASE(_FILE) or is typed twice;
the sealing key file's from VIGIL_SEALING_PASSPHRASE(_FILE) or typed.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from bot import config
from storage.store import Store, unlock

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2

Command = Callable[[argparse.Namespace, config.Settings], int]


class UsageError(Exception):
    """Bad usage: one sentence on stderr, exit 2."""


class HelpFormatter(argparse.HelpFormatter):
    """Wraps prose paragraphs; keeps indented lines (tables, commands) as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        out = []
        for paragraph in text.split("\n\n"):
            if any(ln.startswith("  ") for ln in paragraph.splitlines()):
                out.append("\n".join(indent + ln for ln in paragraph.splitlines()))
            else:
                out.append(super()._fill_text(paragraph, width, indent))
        return "\n\n".join(out)


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the command's --help, never a dump."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"vigil: {message} (see `{self.prog} --help`).\n")
        raise SystemExit(EXIT_USAGE)


# --- numbers that say what they want ---------------------------------------------------------


def whole_number(name: str, least: int, most: int, example: int) -> Callable[[str], int]:
    """An argparse type: a whole number within bounds, or a sentence saying so."""

    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{name} takes a whole number from {least} to {most}, such as {example}; "
                f"{text!r} is not a number"
            ) from None
        if not least <= value <= most:
            raise argparse.ArgumentTypeError(
                f"{name} takes a whole number from {least} to {most}; {value} is outside that"
            )
        return value

    return parse


def days_number(text: str) -> float:
    """Days, as a number (90, or 0.5 for half a day)."""
    try:
        value = float(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"DAYS takes a number of days, such as 30 or 365; {text!r} is not a number"
        ) from None
    if value != value or value in (float("inf"), float("-inf")) or value <= 0:
        raise argparse.ArgumentTypeError(f"DAYS must be a positive number of days, not {text!r}")
    return value


# --- passphrases -----------------------------------------------------------------------------


def _require_terminal(what: str, env: str) -> None:
    if not sys.stdin.isatty():
        raise UsageError(f"No {what}: set {env}_FILE (or {env}), or run on a terminal.")


def network_passphrase(
    settings: config.Settings,
    *,
    prompt: str = "Passphrase: ",
    confirm: bool = False,
    check: Callable[[str], None] | None = None,
) -> str:
    """The network passphrase, taken out of the settings and the environment. `check` runs
    before the repeat is asked for, so a too-short passphrase is refused at once."""
    secret = settings.take_passphrase()
    if secret:
        if check is not None:
            check(secret)
        return secret
    _require_terminal("passphrase", "VIGIL_PASSPHRASE")
    first = getpass.getpass(prompt)
    if check is not None:
        check(first)
    if confirm and getpass.getpass("Repeat the passphrase: ") != first:
        raise UsageError("The two passphrases differ.")
    return first


def secret_from_env(name: str) -> str | None:
    """NAME, or the content of the file named by NAME_FILE; removed from the environment."""
    value = os.environ.pop(name, None)
    if value:
        return value
    path = os.environ.pop(name + "_FILE", None)
    if path:
        try:
            return Path(path).read_text("utf-8").strip()
        except OSError:
            raise UsageError(f"Cannot read the file named by {name}_FILE.") from None
    return None


def new_passphrase(check: Callable[[str], None] | None = None) -> str:
    """A new key slot's passphrase (`keys add`), typed twice on a terminal."""
    value = secret_from_env("VIGIL_NEW_PASSPHRASE")
    if value:
        if check is not None:
            check(value)
        return value
    _require_terminal("new passphrase", "VIGIL_NEW_PASSPHRASE")
    first = getpass.getpass("The new passphrase: ")
    if check is not None:
        check(first)
    if getpass.getpass("Repeat the new passphrase: ") != first:
        raise UsageError("The two passphrases differ.")
    return first


def sealing_passphrase(*, confirm: bool, check: Callable[[str], None] | None = None) -> str:
    """The passphrase that protects the sealing key file (never the network's)."""
    value = secret_from_env("VIGIL_SEALING_PASSPHRASE")
    if value:
        if check is not None:
            check(value)
        return value
    _require_terminal("passphrase for the sealing key file", "VIGIL_SEALING_PASSPHRASE")
    first = getpass.getpass("Passphrase for the sealing key file: ")
    if check is not None:
        check(first)
    if confirm and getpass.getpass("Repeat it: ") != first:
        raise UsageError("The two passphrases differ.")
    return first


def unlock_store(settings: config.Settings) -> Store:
    return unlock(settings.data_dir, network_passphrase(settings))


# --- output ----------------------------------------------------------------------------------


def warn(text: str) -> None:
    print(f"vigil: warning: {text}", file=sys.stderr)


def audit_cli(conn: Any, action: str, target: str | None) -> None:
    """An audit row for an act done from the command line (actor: none, ids only)."""
    from storage import audit

    audit.record(conn, None, action, target, time.time())


BAR_AFTER = 0.5  # seconds before a progress bar appears (short jobs print nothing)
BAR_WIDTH = 30
PHASES = {
    "snapshot": "copying",
    "encrypt": "encrypting",
    "verify": "verifying",
    "restore": "restoring",
    "rotate": "re-encrypting",
}


class ProgressBar:
    """A one-line bar on stderr when it is a terminal and the work takes a while."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self.started = time.monotonic()
        self.shown = False
        self.after = BAR_AFTER

    def __call__(self, phase: str, done: int, total: int) -> None:
        if not self.enabled or time.monotonic() - self.started < self.after:
            return
        frac = min(1.0, done / total) if total else 1.0
        filled = int(frac * BAR_WIDTH)
        label = PHASES.get(phase, phase)
        bar = "#" * filled + "." * (BAR_WIDTH - filled)
        self.stream.write(f"\r{label:14} [{bar}] {frac * 100:5.1f}%")
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()
