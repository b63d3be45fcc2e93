"""The one numbered-menu helper (bot/transports/menus.py) that Signal, the console and
Telegram's fallback share: rendering, reading a typed number back, and what forgets a menu."""

from __future__ import annotations

from bot.messages import Choice, Outgoing, Priority
from bot.transports.menus import NumberedMenus, render

CHOICES = (Choice("English", "/language en"), Choice("فارسی", "/language fa"), Choice(" ", "/x"))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def out(
    chat: str, choices: tuple[Choice, ...] = (), priority: Priority = Priority.REPLY
) -> Outgoing:
    return Outgoing(transport="signal", chat=chat, text="q", choices=choices, priority=priority)


def test_render_numbers_every_choice_and_never_an_empty_label() -> None:
    assert render("Pick:", CHOICES) == "Pick:\n\n1) English\n2) فارسی\n3) /x"
    assert render("", CHOICES[:1], indent="   ") == "   1) English"
    assert render("No menu", ()) == "No menu"


def test_a_typed_number_in_any_script_is_the_choice() -> None:
    menus = NumberedMenus()
    menus.after_send(out("a", CHOICES))
    assert menus.resolve("a", " 2 ") == ("/language fa", True)
    assert menus.resolve("a", "۲") == ("/language fa", True)  # a Persian keyboard's 2
    assert menus.resolve("a", "၁") == ("/language en", True)  # Burmese 1
    assert menus.resolve("a", "4") == ("4", False)  # not on the menu
    assert menus.resolve("a", "0") == ("0", False)
    assert menus.resolve("a", "1000") == ("1000", False)  # more than 3 digits: text
    assert menus.resolve("a", "2 please") == ("2 please", False)
    assert menus.resolve("b", "1") == ("1", False)  # another chat has no menu


def test_what_forgets_a_menu() -> None:
    clock = Clock()
    menus = NumberedMenus(ttl=60, clock=clock)
    menus.after_send(out("a", CHOICES))
    menus.after_send(out("a", priority=Priority.BULK))  # a broadcast in between: kept
    menus.after_send(out("a", priority=Priority.ALERT))
    assert menus.resolve("a", "1") == ("/language en", True)
    menus.after_send(out("a"))  # a reply without choices: the conversation moved on
    assert menus.resolve("a", "1") == ("1", False)
    menus.after_send(out("a", CHOICES))
    clock.now = 61
    assert menus.resolve("a", "1") == ("1", False)  # too old
    assert len(menus) == 0


def test_the_least_recently_used_chats_are_forgotten_first() -> None:
    menus = NumberedMenus(capacity=2)
    for chat in ("a", "b", "c"):
        menus.remember(chat, CHOICES)
    assert len(menus) == 2
    assert menus.resolve("a", "1") == ("1", False)
    assert menus.resolve("c", "1") == ("/language en", True)
