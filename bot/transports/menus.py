"""Numbered menus for platforms without buttons: render choices as lines, map a typed number back.

Signal, the console and Telegram's fallback (a choice value too long for a button) all show
choices as "1) label" lines and remember each chat's latest menu in memory, so that a reply of
just "2" becomes that choice's value, as a button press would. A restart forgets the menus: the
person then types the command, which every menu choice also is.

A number counts only when it is the whole message, 1-3 decimal digits in any script (a Persian or
Burmese keyboard types ۲ or ၂, not 2). A message without choices that answers the person
(priority REPLY or more urgent) moves the conversation on and forgets the menu; alerts and
broadcasts in between leave it be. Menus are kept for `ttl` seconds and for at most `capacity`
chats, least recently used forgotten first.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bot.messages import Choice, Outgoing, Priority

MENU_CHATS = 10_000
MENU_TTL = 7 * 86_400.0
MAX_DIGITS = 3


@dataclass(frozen=True)
class _Menu:
    values: tuple[str, ...]
    at: float


def render(text: str, choices: Sequence[Choice], *, indent: str = "") -> str:
    """`text`, a blank line, then one "N) label" line per choice (a label never empty)."""
    if not choices:
        return text
    lines = "\n".join(
        f"{indent}{i}) {c.label.strip() or c.value}" for i, c in enumerate(choices, 1)
    )
    return f"{text}\n\n{lines}" if text else lines


class NumberedMenus:
    """Each chat's latest menu, so a typed number is read as that choice."""

    def __init__(
        self,
        *,
        capacity: int = MENU_CHATS,
        ttl: float | None = MENU_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity = capacity
        self.ttl = ttl
        self.clock = clock
        self._menus: OrderedDict[str, _Menu] = OrderedDict()

    def __len__(self) -> int:
        return len(self._menus)

    def remember(self, chat: str, choices: Sequence[Choice]) -> None:
        self._menus[chat] = _Menu(tuple(c.value for c in choices), self.clock())
        self._menus.move_to_end(chat)
        while len(self._menus) > self.capacity:
            self._menus.popitem(last=False)

    def forget(self, chat: str) -> None:
        self._menus.pop(chat, None)

    def after_send(self, out: Outgoing) -> None:
        """What a message that went out to `out.chat` means for that chat's menu."""
        if out.choices:
            self.remember(out.chat, out.choices)
        elif out.priority <= Priority.REPLY:
            self.forget(out.chat)

    def resolve(self, chat: str, text: str) -> tuple[str, bool]:
        """(text, is_choice): the chosen value when `text` is a number of the chat's menu."""
        answer = text.strip()
        if not (0 < len(answer) <= MAX_DIGITS and answer.isdecimal()):
            return text, False
        menu = self._menus.get(chat)
        if menu is None:
            return text, False
        if self.ttl is not None and self.clock() - menu.at > self.ttl:
            del self._menus[chat]
            return text, False
        n = int(answer)  # int() reads decimal digits of every script
        if 1 <= n <= len(menu.values):
            return menu.values[n - 1], True
        return text, False
