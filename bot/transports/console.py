"""Console transport: a terminal plays every persona of the demo network, no tokens needed.

Lines starting with ":" are console commands (switch persona, list personas, quit); everything
else is what the current persona types in their chat. Numbered menus work as on Signal: answer
with the number. Output goes to stdout; a prompt shows whose turn it is.

A terminal draws characters left to right in the order it receives them, so a Persian or Arabic
reply would read backwards: each line the bot sends is put in visual order (terminal_bidi, the
Unicode bidi algorithm) just before it is printed. The message itself, as stored in the outbox
and as Telegram or Signal would receive it, stays in logical order.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import sys
from collections.abc import Awaitable, Callable
from typing import TextIO

from bot.messages import Choice, Incoming, Outgoing
from bot.transports.base import Capabilities, Deliver, Limits, Transport
from bot.transports.menus import NumberedMenus, render
from bot.transports.terminal_bidi import display

Settle = Callable[[], Awaitable[None]]
People = Callable[[], Awaitable[dict[str, str]]]  # name -> what they are now ("supporter")

NEW_NAME = re.compile(r"[a-z][a-z0-9_-]{0,23}")
NOT_A_MEMBER = "not a member yet"


class ConsoleTransport(Transport):
    name = "console"
    limits = Limits(per_second=1000, per_chat_per_second=1000, chat_burst=100, in_flight=1)
    capabilities = Capabilities(edits=False, buttons=False, deletes_incoming=False, end_to_end=True)

    def __init__(
        self,
        personas: dict[str, str],
        first: str,
        *,
        stdin: TextIO | None = None,
        stdout: TextIO | None = None,
        on_quit: Callable[[], None] | None = None,
        intro: str = "",
        aliases: dict[str, str] | None = None,
        people: People | None = None,
    ) -> None:
        self.personas = dict(personas)  # name -> short description; `:as` adds new people
        self.aliases = {a.casefold(): name for a, name in (aliases or {}).items()}  # "rana"
        self.people = people  # who is a member now, and as what, asked at every :who
        self.current = first
        self.stdin = stdin or sys.stdin
        self.stdout = stdout or sys.stdout
        self.on_quit = on_quit
        self.intro = intro
        self.settle: Settle | None = None  # set by the app: waits until replies are printed
        self._counter = itertools.count(1)
        self.menus = NumberedMenus(ttl=None)
        self._task: asyncio.Task[None] | None = None

    def _print(self, text: str) -> None:
        self.stdout.write(text + "\n")
        self.stdout.flush()

    def _prompt(self) -> None:
        self.stdout.write(f"{self.current}> ")
        self.stdout.flush()

    async def start(self, deliver: Deliver) -> None:
        self._task = self.spawn("console.read", lambda: self._read_loop(deliver))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _read_loop(self, deliver: Deliver) -> None:
        loop = asyncio.get_running_loop()
        if self.intro:
            self._print(self.intro)
        self._prompt()
        while True:
            line = await loop.run_in_executor(None, self.stdin.readline)
            if line == "":
                self._quit()
                return
            text = line.rstrip("\r\n")
            if text.startswith(":"):
                if not await self._console_command(text[1:].strip()):
                    return
            elif text.strip():
                text, is_choice = self.menus.resolve(self.current, text)
                n = next(self._counter)
                await deliver(
                    Incoming(
                        transport=self.name,
                        sender=self.current,
                        chat=self.current,
                        key=f"console-{id(self)}-{n}",
                        text=text,
                        is_choice=is_choice,
                    )
                )
                if self.settle is not None:
                    await self.settle()
            self._prompt()

    def find(self, typed: str) -> str | None:
        """The persona `typed` names, in any case: its own name or a person's ("Rana")."""
        key = typed.casefold()
        for name in self.personas:
            if name.casefold() == key:
                return name
        return self.aliases.get(key)

    async def _statuses(self) -> dict[str, str]:
        return await self.people() if self.people is not None else {}

    def _describe(self, name: str, statuses: dict[str, str]) -> str:
        about = self.personas.get(name, "")
        status = statuses.get(name, NOT_A_MEMBER) if self.people is not None else ""
        return " — ".join(part for part in (about, status) if part)

    async def _console_command(self, command: str) -> bool:
        name, _, arg = command.partition(" ")
        name, arg = name.casefold(), arg.strip()
        if name in ("as", "persona", "switch") and arg:
            persona = self.find(arg)
            statuses = await self._statuses()
            if persona is None and NEW_NAME.fullmatch(arg.casefold()):
                persona = arg.casefold()
                self.personas[persona] = "" if persona in statuses else "someone new"
            if persona is not None:
                self.current = persona
                self._print(f"(you are now {persona}: {self._describe(persona, statuses)})")
                return True
            self._print(f"No one is called {arg!r}; a new name is one word of letters and digits.")
        if name in ("who", "personas", "as", "persona", "switch"):
            statuses = await self._statuses()
            for persona in statuses:
                self.personas.setdefault(persona, "")  # joined in an earlier session (--data-dir)
            for persona in self.personas:
                mark = "*" if persona == self.current else " "
                self._print(f" {mark} {persona:12} {self._describe(persona, statuses)}")
            self._print("Switch with :as NAME; a new name is someone new, who can join with a code")
        elif name in ("quit", "exit", "q"):
            self._quit()
            return False
        else:
            self._print(":as NAME  switch persona   :who  list everyone   :quit  leave")
        return True

    def _quit(self) -> None:
        self._print("Bye.")
        if self.on_quit:
            self.on_quit()

    async def send(self, out: Outgoing) -> str | None:
        if out.kind == "delete":
            return None
        header = f"[to {out.chat}]" if out.chat != self.current else "[bot]"
        # The menu lines follow the text directly, indented, as the demo has always shown them.
        # Only what is printed is put in visual order: `out` itself, as queued, is left as it is.
        shown = tuple(Choice(display(c.label.strip() or c.value), c.value) for c in out.choices)
        menu = render("", shown, indent="   ")
        self._print(f"{header} {display(out.text)}" + (f"\n{menu}" if menu else ""))
        self.menus.after_send(out)
        return str(next(self._counter))
