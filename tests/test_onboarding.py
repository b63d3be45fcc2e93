"""Joining, invites, help and preferences through the real router and encrypted store."""

from __future__ import annotations

import re
from typing import Any

import pytest

from handlers.invites import create_invite
from tests.harness import ChatHarness


def invite(
    chat: ChatHarness, role: str, case: str | None = None, uses: int = 1, days: int = 7
) -> str:
    return chat.run(
        lambda c: create_invite(
            c, chat.services.index_key, role=role, case_slug=case, uses=uses,
            expires_in=days * 86400, created_by=None, now=chat.clock(),
        )
    )  # fmt: skip


def role_of(chat: ChatHarness, who: str) -> str | None:
    row = chat.run(
        lambda c: c.execute(
            "SELECT m.role FROM members m JOIN identities i ON i.member_id = m.id "
            "WHERE i.address = ?",
            (who,),
        ).fetchone()
    )
    return row[0] if row else None


def test_start_without_code_makes_an_activist(chat: ChatHarness) -> None:
    assert "Welcome" in chat.say("ann", "/start")
    assert role_of(chat, "ann") == "activist"
    assert "already a member" in chat.say("ann", "/start")


def test_invite_only_network_refuses_open_join(chat: ChatHarness) -> None:
    chat.services.invite_only = True
    assert "invite-only" in chat.say("ann", "/start")
    assert role_of(chat, "ann") is None


def test_admin_invite_is_one_time(chat: ChatHarness) -> None:
    code = invite(chat, "admin")
    assert "administrator" in chat.say("ada", f"/start {code}")
    assert role_of(chat, "ada") == "admin"
    assert "not valid" in chat.say("eve", f"/start {code}")
    assert role_of(chat, "eve") is None


def test_code_is_forgiving_of_case_and_dashes(chat: ChatHarness) -> None:
    code = invite(chat, "activist")
    assert "Welcome" in chat.say("bob", "/start " + code.replace("-", "").lower())


def test_invite_expiry_and_use_count(chat: ChatHarness) -> None:
    two = invite(chat, "activist", uses=2, days=1)
    assert "Welcome" in chat.say("a1", f"/start {two}")
    assert "Welcome" in chat.say("a2", f"/start {two}")
    assert "not valid" in chat.say("a3", f"/start {two}")
    late = invite(chat, "activist", days=1)
    chat.clock.advance(86400 + 1)
    assert "not valid" in chat.say("a4", f"/start {late}")


def test_family_invite_ties_member_to_case(chat: ChatHarness) -> None:
    chat.case("nasrin", "Nasrin S.", visibility="restricted")
    code = invite(chat, "family", case="nasrin")
    reply = chat.say("rana", f"/start {code}", transport="telegram")
    assert "relative" in reply and "Nasrin S." in reply
    assert "not end-to-end encrypted" in reply  # told once that Telegram can read the chat
    assert role_of(chat, "rana") == "family"
    # What a report is for, that plain news is welcome, and what to leave out (issue 16 item 4).
    assert "simply write your news here" in reply
    assert "names of people who are still free, phone numbers and plans" in reply


def test_the_platform_decides_the_warning_and_the_disappearing_timer(chat: ChatHarness) -> None:
    # Asked of the transport's capabilities, not of its name: a platform that can read the chat
    # gets the warning, one with disappearing timers gets the timer, each only where it applies.
    chat.case("nasrin", "Nasrin S.", visibility="restricted")

    def timers() -> list[str]:
        rows = chat.run(lambda c: c.execute("SELECT transport, body FROM outbox").fetchall())
        return [t for t, body in rows if '"disappearing"' in body]

    reply = chat.say("rana", f"/start {invite(chat, 'family', case='nasrin')}", transport="signal")
    assert "not end-to-end encrypted" not in reply
    assert timers() == ["signal"]
    reply = chat.say(
        "mina", f"/start {invite(chat, 'family', case='nasrin')}", transport="telegram"
    )
    assert "not end-to-end encrypted" in reply
    assert timers() == ["signal"]


def test_redeeming_never_downgrades(chat: ChatHarness) -> None:
    chat.member("ada", "admin")
    chat.say("ada", "/start " + invite(chat, "activist"))
    assert role_of(chat, "ada") == "admin"


def test_redemption_attempts_are_rate_limited_and_locked_out(chat: ChatHarness) -> None:
    for _ in range(5):
        assert "not valid" in chat.say("mallory", "/start AAAA-BBBB-CCCC")
    good = invite(chat, "activist")
    assert "Too many attempts" in chat.say("mallory", f"/start {good}")
    assert role_of(chat, "mallory") is None
    chat.clock.advance(3601)
    assert "Welcome" in chat.say("mallory", f"/start {good}")


def test_help_lists_only_what_the_role_may_do(chat: ChatHarness) -> None:
    chat.member("act", "activist")
    chat.member("coo", "coordinator")
    assert "/invite" not in chat.say("act", "/help")
    assert "/invite" in chat.say("coo", "/help")
    assert "/start" in chat.say("stranger", "/help")


def test_denied_and_unknown_commands_answer_alike(chat: ChatHarness) -> None:
    chat.member("act", "activist")
    denied = chat.say("act", "/invite activist")
    unknown = chat.say("act", "/nosuchthing")
    assert denied == unknown


def test_coordinator_cannot_mint_coordinators(chat: ChatHarness) -> None:
    chat.member("coo", "coordinator")
    assert "Only an administrator" in chat.say("coo", "/invite coordinator")
    chat.member("ada", "admin")
    assert "Invite code" in chat.say("ada", "/invite coordinator")


def test_replayed_message_changes_nothing(chat: ChatHarness) -> None:
    first = chat.send("ann", "/start", key="update-42")
    again = chat.send("ann", "/start", key="update-42")
    assert first and again == []
    assert chat.run(lambda c: c.execute("SELECT count(*) FROM members").fetchone()[0]) == 1


def test_language_and_timezone(chat: ChatHarness) -> None:
    chat.member("ann")
    assert "Language set" in chat.say("ann", "/language en")
    assert "don't have that language" in chat.say("ann", "/language xx")
    assert "Europe/Minsk" in chat.say("ann", "/timezone europe/minsk")
    assert "don't know that time zone" in chat.say("ann", "/timezone Mars/Olympus")
    assert "22:00" in chat.say("ann", "/quiet 22-7")
    assert "Send quiet hours" in chat.say("ann", "/quiet 25-99")


def test_command_flood_gets_one_warning(chat: ChatHarness) -> None:
    chat.member("ann")
    replies = [chat.say("ann", "/help") for _ in range(30)]
    warnings = [r for r in replies if "Too many messages" in r]
    assert len(warnings) == 1
    assert replies[-1] == ""  # silent after the one warning


def test_failing_handler_rolls_back_and_answers(chat: ChatHarness, monkeypatch) -> None:
    from bot.capability import Command

    def broken(ctx, args):
        ctx.audit("half.done", None)
        raise RuntimeError("boom with secret text")

    monkeypatch.setitem(chat.registry.commands, "help", Command("help", broken, None, "x", 0))
    assert "Nothing was changed" in chat.say("ann", "/help")
    assert chat.run(lambda c: c.execute("SELECT count(*) FROM audit").fetchone()[0]) == 0


def test_first_contact_language_comes_from_the_platform_hint(chat: ChatHarness) -> None:
    reply = chat.say("ivan", "/start", language_hint="ru-RU")
    assert re.search("[а-яА-Я]", reply) and "Welcome" not in reply  # answered in Russian
    lang = chat.run(
        lambda c: c.execute(
            "SELECT m.language FROM members m JOIN identities i ON i.member_id = m.id "
            "WHERE i.address = 'ivan'"
        ).fetchone()[0]
    )
    assert lang == "ru"  # a proposal the member can change with /language
    assert chat.say("olga", "/start", language_hint="xx-YY").startswith("Welcome to Vigil")


def _code(reply: str) -> str:
    found = re.search(r"/start ([A-Z0-9]{4}-[A-Z0-9]{4}-[A-Z0-9]{4})", reply)
    assert found, reply
    return found.group(1)


@pytest.mark.parametrize(
    "typed",
    [
        lambda c: c.replace("-", " ").lower(),  # read over the phone
        lambda c: c.replace("-", ""),
        lambda c: " - ".join(c.split("-")),
        # The same letters typed on a Cyrillic keyboard, where they look alike.
        lambda c: c.translate(str.maketrans("ABCEHKMPTXY", "АВСЕНКМРТХУ")).lower(),
    ],
    ids=["spaces-lowercase", "no-dashes", "spaced-dashes", "cyrillic-lookalikes"],
)
def test_invite_codes_forgive_how_they_are_typed(chat: ChatHarness, typed: Any) -> None:
    chat.member("ada", "admin")
    code = _code(chat.say("ada", "/invite activist"))
    assert "Welcome. You joined" in chat.say("new", f"/start {typed(code)}")


def test_invite_reply_says_exactly_what_to_forward(chat: ChatHarness) -> None:
    chat.member("ada", "admin")
    reply = chat.say("ada", "/invite activist")
    assert "Forward the lines below" in reply and "In the chat with this bot, send:" in reply
    chat.services.bot_links["console"] = "https://t.me/vigil_bot?start="
    try:
        reply = chat.say("ada", "/invite activist")
    finally:
        del chat.services.bot_links["console"]
    code = _code(reply)
    assert f"https://t.me/vigil_bot?start={code.replace('-', '')}" in reply


def test_a_code_tried_by_an_existing_member_is_not_used_up(chat: ChatHarness) -> None:
    chat.case("nasrin", "Nasrin S.")
    chat.member("ada", "admin")
    chat.member("coo", "coordinator", coordinates=("nasrin",))
    code = _code(chat.say("coo", "/invite family nasrin"))
    act_code = _code(chat.say("ada", "/invite activist"))
    chat.member("sup", "activist")
    assert "was not used" in chat.say("sup", f"/start {act_code}")
    assert "Welcome. You joined" in chat.say("newcomer", f"/start {act_code}")
    # The coordinator who made a relative's code tries it: it gives them nothing, so the
    # relative can still use it.
    assert "was not used" in chat.say("coo", f"/start {code}")
    assert "was not used" in chat.say("ada", f"/start {code}")
    assert "relative" in chat.say("rana", f"/start {code}")
    assert "not valid" in chat.say("other", f"/start {code}")
