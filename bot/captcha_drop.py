"""`vigil signal captcha`: a solved captcha handed to the running bot through the data dir.

The challenge token Signal issued lives only in the running process's memory (it is useless
on disk and should not outlive the suspension), so the shell command cannot submit the captcha
itself. It drops the link in `<data_dir>/signal-captcha.request`; the bot picks it up within
WATCH_EVERY seconds, deletes it, submits it with the pending token and writes the outcome to
`signal-captcha.result`, which the command prints and deletes. Both files are 0600 and live
only seconds; the link is a one-time proof, not a secret that names anyone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

REQUEST = "signal-captcha.request"
RESULT = "signal-captcha.result"
WATCH_EVERY = 1.0


@dataclass(frozen=True)
class Outcome:
    kind: str  # solved | rejected | not_pending | malformed | unavailable
    text: str

    @property
    def ok(self) -> bool:
        return self.kind == "solved"


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def drop(data_dir: Path, link: str) -> None:
    """The shell's side: leave the link for the bot (a stale answer is removed first)."""
    with contextlib.suppress(FileNotFoundError):
        (data_dir / RESULT).unlink()
    _write_private(data_dir / REQUEST, link)


def take_result(data_dir: Path) -> Outcome | None:
    path = data_dir / RESULT
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    path.unlink(missing_ok=True)
    return Outcome(str(raw.get("kind", "unavailable")), str(raw.get("text", "")))


def withdraw(data_dir: Path) -> None:
    """Nobody picked the link up: do not leave it for a bot started later."""
    (data_dir / REQUEST).unlink(missing_ok=True)


def _take_request(data_dir: Path) -> str | None:
    path = data_dir / REQUEST
    try:
        link = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    path.unlink(missing_ok=True)
    return link.strip()


async def watch(data_dir: Path, solve: Callable[[str], Awaitable[Outcome]]) -> None:
    """The bot's side: submit each dropped link once and write what Signal said."""
    while True:
        link = await asyncio.to_thread(_take_request, data_dir)
        if link is not None:
            log.info("captcha handed over from the shell")
            outcome = await solve(link)
            body = json.dumps({"kind": outcome.kind, "text": outcome.text})
            await asyncio.to_thread(_write_private, data_dir / RESULT, body)
        await asyncio.sleep(WATCH_EVERY)
