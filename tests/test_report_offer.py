"""Issue 16 item 1: a relative's plain message is offered as a report, stored only after yes.

Through the real router and encrypted store, on Telegram (buttons) and Signal (numbered menus,
read back with the transports' own helper). A declined offer leaves nothing: no report row, no
draft, and the words in no page or WAL frame of the database decrypted with its key.
"""

from __future__ import annotations

import pytest

from bot.messages import Choice, Outgoing, Priority
from bot.router import CommandRateLimiter
from bot.transports.menus import NumberedMenus
from storage import crypto
from storage.store import Store
from tests import sqlcipher_pages as pages
from tests.harness import ChatHarness, Sent
from tests.test_reports import open_body, report_rows, rows, to

NEWS = "I visited my sister today, she has lost weight SENTINEL-9QX4"
MORE = "and she asked for warm socks"


@pytest.fixture
def keypair() -> crypto.SealingKeyPair:
    return crypto.sealing_keypair()


@pytest.fixture
def net(chat: ChatHarness, keypair: crypto.SealingKeyPair) -> ChatHarness:
    chat.router.limiter = CommandRateLimiter(rate_per_minute=100_000, burst=100_000)
    chat.services.sealing_public = keypair.public
    chat.case("ana", "Ana M.", "restricted")
    chat.case("ales", "Ales B.", "restricted")
    chat.member("coo", "coordinator", coordinates=("ana", "ales"))
    chat.member("tg-rel", "family", family_of=("ana",), transport="telegram")
    chat.member("sig-rel", "family", family_of=("ana",), transport="signal")
    chat.member("two", "family", family_of=("ana", "ales"), transport="signal")
    chat.member("act", "activist")
    return chat


class SignalChat:
    """A Signal user: what the bot sends is shown as a numbered menu; a typed number is read
    back with bot/transports/menus.py, as the Signal transport does."""

    def __init__(self, net: ChatHarness, who: str) -> None:
        self.net, self.who, self.menus = net, who, NumberedMenus()

    def say(self, text: str) -> list[Sent]:
        value, is_choice = self.menus.resolve(self.who, text)
        sent = self.net.send(self.who, value, transport="signal", is_choice=is_choice)
        for s in to(sent, self.who):
            choices = tuple(Choice(label, value) for label, value in s.choices)
            self.menus.after_send(
                Outgoing("signal", self.who, s.text, choices=choices, priority=Priority(s.priority))
            )
        return sent


def labels(sent: list[Sent]) -> list[str]:
    return [label for s in sent for label, _v in s.choices]


def test_plain_news_on_telegram_is_offered_and_stored_after_yes(net: ChatHarness, keypair) -> None:
    asked = net.send("tg-rel", NEWS, transport="telegram", message_ref="501")
    (question,) = to(asked, "tg-rel")
    assert "as a report about Ana M.?" in question.text
    assert "did not understand" not in question.text
    assert NEWS not in question.text  # the words are not echoed into the outbox
    assert [c[0] for c in question.choices] == ["Yes, send it", "No, cancel"]
    assert not report_rows(net) and to(asked, "coo") == []
    assert "Added" in net.say("tg-rel", MORE, transport="telegram", message_ref="502")
    done = net.send("tg-rel", "/pick confirm yes", transport="telegram", is_choice=True)
    (rep,) = report_rows(net)
    assert open_body(net, keypair, rep.id)["text"] == f"{NEWS}\n{MORE}"
    assert "stored, sealed" in to(done, "tg-rel")[-1].text
    assert NEWS in to(done, "coo")[0].text
    deleted = sorted(s.body["ref"] for s in done if s.body.get("kind") == "delete")
    assert deleted == ["501", "502"]  # both messages that carried the news leave the chat
    assert rows(net, "SELECT count(*) FROM conversations") == [(0,)]


def test_plain_news_on_signal_is_answered_with_the_menu_number(net: ChatHarness, keypair) -> None:
    sig = SignalChat(net, "sig-rel")
    asked = sig.say(NEWS)
    assert "as a report about Ana M.?" in to(asked, "sig-rel")[0].text
    assert labels(asked) == ["Yes, send it", "No, cancel"]
    done = sig.say("1")
    (rep,) = report_rows(net)
    assert open_body(net, keypair, rep.id)["text"] == NEWS
    assert "stored, sealed" in to(done, "sig-rel")[-1].text


@pytest.mark.parametrize("answer", ["2", "no", "/cancel"])
def test_declined_news_leaves_nothing_stored(net: ChatHarness, store: Store, answer: str) -> None:
    sig = SignalChat(net, "sig-rel")
    sig.say(NEWS)
    assert rows(net, "SELECT count(*) FROM conversations") == [(1,)]  # the sealed draft
    said = sig.say(answer)
    reply = to(said, "sig-rel")[-1].text
    assert "Nothing" in reply and "stored" not in reply
    assert to(said, "coo") == []
    assert report_rows(net) == []
    assert rows(net, "SELECT count(*) FROM conversations") == [(0,)]
    assert pages.find(store.data_dir, store.subkeys.database, "SENTINEL-9QX4") == []
    # The positive control: the same words, sent, are found (the coordinator's live copy).
    sig.say(NEWS)
    sig.say("1")
    assert pages.find(store.data_dir, store.subkeys.database, "SENTINEL-9QX4")


def test_the_draft_is_sealed_while_the_question_is_open(net: ChatHarness, store: Store) -> None:
    net.send("tg-rel", NEWS, transport="telegram")
    (data,) = rows(net, "SELECT data FROM conversations")
    assert "SENTINEL" not in data[0]
    assert pages.find(store.data_dir, store.subkeys.database, "SENTINEL-9QX4") == []


def test_a_relative_of_several_cases_chooses_the_case(net: ChatHarness, keypair) -> None:
    sig = SignalChat(net, "two")
    asked = sig.say(NEWS)
    assert "Choose the case" in to(asked, "two")[0].text
    assert labels(asked) == ["Ales B.", "Ana M.", "No, cancel"]
    sig.say("2")
    (rep,) = report_rows(net)
    assert rows(net, "SELECT slug FROM cases WHERE id = ?", rep.case_id) == [("ana",)]
    assert open_body(net, keypair, rep.id)["text"] == NEWS


def test_another_command_or_a_restart_drops_the_offer(net: ChatHarness) -> None:
    net.send("tg-rel", NEWS, transport="telegram")
    net.say("tg-rel", "/help", transport="telegram")
    assert "menu has closed" in net.say("tg-rel", "/pick confirm yes", transport="telegram")
    net.send("tg-rel", NEWS, transport="telegram")
    net.services.draft_key = crypto.random_bytes()  # what a restart does to the draft key
    assert "lost" in net.say("tg-rel", "/pick confirm yes", transport="telegram")
    assert report_rows(net) == []


def test_only_a_relative_is_offered(net: ChatHarness) -> None:
    assert "did not understand" in net.say("act", NEWS)
    assert "did not understand" in net.say("coo", NEWS)
    assert report_rows(net) == []


def test_without_a_sealing_key_the_offer_is_not_made(net: ChatHarness) -> None:
    net.services.sealing_public = None
    reply = net.say("tg-rel", NEWS, transport="telegram")
    assert "Send this" not in reply
    assert rows(net, "SELECT count(*) FROM conversations") == [(0,)]
    assert report_rows(net) == []


def test_a_case_she_no_longer_belongs_to_cannot_be_chosen(net: ChatHarness) -> None:
    # The menu was shown while she was a relative of both cases; unlinked from Ana's case before
    # she answers, choosing it stores nothing (the case is checked at the answer, not the ask).
    sig = SignalChat(net, "two")
    sig.say(NEWS)
    net.run(
        lambda c: c.execute(
            "DELETE FROM case_members WHERE case_id = (SELECT id FROM cases WHERE slug = 'ana') "
            "AND member_id = (SELECT member_id FROM identities WHERE address = 'two')"
        )
    )
    said = sig.say("2")
    assert report_rows(net) == []
    assert all("SENTINEL" not in s.text for s in said)


def test_signal_news_reaches_a_telegram_coordinator_only_as_a_notice(net: ChatHarness) -> None:
    net.member("tg-coo", "coordinator", coordinates=("ana",), transport="telegram")
    sig = SignalChat(net, "sig-rel")
    sig.say(NEWS)
    done = sig.say("1")
    (rep,) = report_rows(net)
    to_tg = [s for s in done if s.transport == "telegram"]
    assert [s.chat for s in to_tg] == ["tg-coo"]  # told at once
    assert f"#{rep.id}" in to_tg[0].text and "SENTINEL" not in to_tg[0].text
