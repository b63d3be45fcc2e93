"""One broadcast, many languages (issue 18 item 1): /translate adds a language's text to a draft;
each recipient gets their own, or the original; only the author, only before it is sent."""

from __future__ import annotations

import re

import pytest

from bot.router import CommandRateLimiter
from tests.harness import ChatHarness


@pytest.fixture
def net(chat: ChatHarness) -> ChatHarness:
    chat.router.limiter = CommandRateLimiter(rate_per_minute=100_000, burst=100_000)
    chat.case("nasrin", "Nasrin S.", visibility="public")
    chat.member("coo", "coordinator", coordinates=("nasrin",))
    chat.member("cob", "coordinator", coordinates=("nasrin",))
    for who, lang in (("ann", "en"), ("ivan", "ru"), ("olga", "ru"), ("sara", "fa"), ("li", "zh")):
        chat.member(who, language=lang)
        chat.say(who, "/subscribe nasrin")
    return chat


def draft(net: ChatHarness, text: str) -> tuple[int, str]:
    preview = net.say("coo", f"/broadcast case:nasrin {text}")
    found = re.search(r"Broadcast #(\d+)", preview)
    assert found, preview
    return int(found.group(1)), preview


def received(net: ChatHarness, since: int) -> dict[str, str]:
    return {
        s.chat: s.text for s in net.outbox(since) if s.chat in {"ann", "ivan", "olga", "sara", "li"}
    }


def test_recipients_in_three_languages_get_their_own_text(net: ChatHarness) -> None:
    bid, preview = draft(net, "Vigil on Saturday at noon")
    assert "/translate" in preview  # the audience reads more than one language
    reply = net.say("coo", f"/translate {bid} ru Пикет в субботу в полдень")
    assert "Russian" in reply or "Русский" in reply
    reply = net.say("coo", f"/translate {bid} فارسی تجمع روز شنبه ظهر")
    # The count per language and how many fall back to the original.
    # ann, li and the two coordinators of the case read English.
    assert "the original text: 4 people" in reply and "Русский: 2 people" in reply
    mark = net.last_id()
    net.say("coo", f"/confirm {bid}")
    got = received(net, mark)
    assert got["ivan"] == got["olga"] == "Пикет в субботу в полдень"
    assert got["sara"] == "تجمع روز شنبه ظهر"
    assert got["ann"] == got["li"] == "Vigil on Saturday at noon"


def test_a_second_translation_for_a_language_replaces_the_first(net: ChatHarness) -> None:
    bid, _ = draft(net, "Letters evening")
    net.say("coo", f"/translate {bid} ru Вечер писем (черновик)")
    net.say("coo", f"/translate {bid} russian Вечер писем")
    mark = net.last_id()
    net.say("coo", f"/confirm {bid}")
    assert received(net, mark)["ivan"] == "Вечер писем"


def test_only_the_author_translates_and_others_learn_nothing(net: ChatHarness) -> None:
    bid, _ = draft(net, "Court at nine")
    nothing = net.say("cob", "/translate 987654 ru Суд в девять")
    assert net.say("cob", f"/translate {bid} ru Суд в девять") == nothing
    mark = net.last_id()
    net.say("coo", f"/confirm {bid}")
    assert received(net, mark)["ivan"] == "Court at nine"


def test_not_after_it_is_sent_and_bad_input_changes_nothing(net: ChatHarness) -> None:
    bid, _ = draft(net, "Court at nine")
    assert "Send /translate ID LANG TEXT" in net.say("coo", f"/translate {bid} ru")
    assert "don't know the language" in net.say("coo", f"/translate {bid} klingon Qapla")
    assert "invisible" in net.say("coo", f"/translate {bid} ru Суд\u202eв девять")
    mark = net.last_id()
    net.say("coo", f"/confirm {bid}")
    assert received(net, mark)["ivan"] == "Court at nine"
    late = net.say("coo", f"/translate {bid} ru Суд в девять")
    assert "no broadcast of yours waiting" in late


def test_not_while_a_second_person_is_asked(net: ChatHarness) -> None:
    net.member("ada", "admin")
    net.member("adb", "admin")
    preview = net.say("coo", "/broadcast all Vigil tonight")
    bid = int(re.search(r"Broadcast #(\d+)", preview).group(1))  # type: ignore[union-attr]
    net.say("coo", f"/confirm {bid}")
    refused = net.say("coo", f"/translate {bid} ru Пикет сегодня")
    assert "waiting for a second person" in refused


def test_a_group_chat_or_a_replay_adds_nothing(net: ChatHarness) -> None:
    bid, _ = draft(net, "Court at nine")
    # From a group the author is in: no reply, no translation (the text would name the group).
    assert net.send("coo", f"/translate {bid} ru Суд в девять", chat="grp", private=False) == []
    net.send("coo", f"/translate {bid} ru Суд в девять", key="once")
    # The same message delivered again (a platform retry) must not act a second time.
    assert net.send("coo", f"/translate {bid} ru Суд в девять!!", key="once") == []
    mark = net.last_id()
    net.say("coo", f"/confirm {bid}")
    assert received(net, mark)["ivan"] == "Суд в девять"


def test_the_author_on_the_other_transport_is_the_same_author(net: ChatHarness) -> None:
    bid, _ = draft(net, "Court at nine")
    # Another person's Telegram account is not the author, whatever it types.
    net.member("mallory", "coordinator", coordinates=("nasrin",), transport="telegram")
    before = net.say("mallory", "/translate 987654 ru x", transport="telegram")
    assert net.say("mallory", f"/translate {bid} ru x", transport="telegram") == before
