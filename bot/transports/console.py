"""Console transport: a terminal plays every persona of the demo network, no tokens needed.

Lines starting with ":" are console commands (switch persona, list personas, quit); everything
else is what the current persona types in their chat. Numbered menus work as on Signal: answer
with the number. Output goes to stdout; a prompt shows whose turn it is.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
from collections.abc import Awaitable, Callable
from typing import TextIO

from bot.messages import Incoming, Outgoing
from bot.transports.base import Capabilities, Deliver, Limits, Transport
from bot.transports.menus import NumberedMenus, render

Settle = Callable[[], Awaitable[None]]


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
    ) -> None:
        self.personas = personas  # name -> short description
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
                if not self._console_command(text[1:].strip()):
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

    def _console_command(self, command: str) -> bool:
        name, _, arg = command.partition(" ")
        if name in ("as", "persona", "switch") and arg.strip() in self.personas:
            self.current = arg.strip()
            self._print(f"(you are now {self.current}: {self.personas[self.current]})")
        elif name in ("who", "personas", "as", "persona", "switch"):
            for persona, about in self.personas.items():
                mark = "*" if persona == self.current else " "
                self._print(f" {mark} {persona:12} {about}")
            self._print("Switch with :as NAME")
        elif name in ("quit", "exit", "q"):
            self._quit()
            return False
        else:
            self._print(":as NAME  switch persona   :who  list personas   :quit  leave")
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
        menu = render("", out.choices, indent="   ")
        self._print(f"{header} {out.text}" + (f"\n{menu}" if menu else ""))
        self.menus.after_send(out)
        return str(next(self._counter))
