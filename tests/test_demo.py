"""`vigil demo` driven through stdin as a person would type, reaching every persona."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

VIGIL = str(Path(sys.executable).with_name("vigil"))


def run_demo(script: list[str], tmp_path: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
    env["HOME"] = str(tmp_path)  # the demo must not need or touch the user's real data dir
    proc = subprocess.run(
        [VIGIL, "demo"],
        input="\n".join(script) + "\n",
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc.stdout


def test_demo_tour_reaches_every_persona(tmp_path: Path) -> None:
    out = run_demo(
        [
            "/start",
            "/cases",
            "/case ales-demo",
            "/case nasrin-demo",  # restricted: a newcomer may not see it
            ":as relative",
            "/help",
            "/case nasrin-demo",
            ":as activist",
            "/help",
            ":as coordinator",
            "/invite activist",
            "/language ru",
            "/help",
            "/language en",
            ":as admin",
            "/invite coordinator",
            ":who",
            ":quit",
        ],
        tmp_path,
    )
    assert "Welcome to the Vigil demo" in out
    for persona in ("newcomer>", "relative>", "activist>", "coordinator>", "admin>"):
        assert persona in out, persona
    assert "Ales Demo-Bialiatski" in out
    assert out.count("No case by that name was found, or you may not see it.") == 1
    assert "Nasrin Sotoudeh-Demo" in out  # the relative sees their restricted case
    assert out.count("Invite code") == 2
    assert "Язык" in out or "язык" in out  # the coordinator switched to Russian and back
    assert "Language set: English." in out
    assert "Bye." in out


class DemoSession:
    """Types a line, then reads until the next prompt, like a person at the terminal."""

    def __init__(self, tmp_path: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
        env["HOME"] = str(tmp_path)
        self.proc = subprocess.Popen(
            [VIGIL, "demo"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, cwd=REPO, env=env, bufsize=0,
        )  # fmt: skip
        self.read_until_prompt()

    def read_until_prompt(self) -> str:
        assert self.proc.stdout is not None
        buf = ""
        while not re.search(r"(^|\n)[a-z]+> $", buf):
            ch = self.proc.stdout.read(1)
            assert ch, f"demo ended early: {buf!r}"
            buf += ch
        return buf

    def type(self, line: str) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.read_until_prompt()

    def close(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.write(":quit\n")
        self.proc.stdin.flush()
        return self.proc.wait(timeout=30)


def test_demo_invite_passes_between_personas(tmp_path: Path) -> None:
    demo = DemoSession(tmp_path)
    try:
        demo.type(":as coordinator")
        answer = demo.type("/invite activist")
        code = re.search(r"\b[A-Z2-9]{4}-[A-Z2-9]{4}-[A-Z2-9]{4}\b", answer)
        assert code, answer
        demo.type(":as newcomer")
        assert "You joined as supporter" in demo.type(f"/start {code.group(0)}")
        demo.type(":as activist")
        assert "not valid" in demo.type(f"/start {code.group(0)}")  # one use only
        menu = demo.type("/language")  # a numbered menu, answered with the number
        number = re.search(r"(\d+)\) English", menu)
        assert number, menu
        assert "Language set: English." in demo.type(number.group(1))
    finally:
        assert demo.close() == 0


def test_unknown_console_command_shows_help(tmp_path: Path) -> None:
    out = run_demo([":dance", ":as nobody", ":quit"], tmp_path)
    assert ":as NAME" in out
