"""Letters to prisoners: /letters and /wrote through the real router and encrypted store."""

from __future__ import annotations

from typing import Any

import pytest

from tests.harness import ChatHarness

DAY = 86400


def sheet(chat: ChatHarness, slug: str, **fields: Any) -> None:
    for column, value in fields.items():
        assert column in ("letters_address", "facility", "country", "status", "visibility")
        chat.run(
            lambda c, column=column, value=value: c.execute(
                f"UPDATE cases SET {column} = ? WHERE slug = ?", (value, slug)
            )
        )


@pytest.fixture
def net(chat: ChatHarness) -> ChatHarness:
    chat.case("nasrin", "Nasrin S.")
    sheet(
        chat, "nasrin", visibility="public", letters_address="Evin Prison, Tehran", country="Iran"
    )
    chat.case("ales", "Ales B.")
    sheet(chat, "ales", visibility="public", letters_address="Colony 9, Gorki")
    chat.case("hidden", "Hidden Person", visibility="restricted")
    sheet(chat, "hidden", letters_address="Secret Street 1")
    chat.member("ann")
    chat.member("bob")
    return chat


def test_letters_shows_address_and_guidance(net: ChatHarness) -> None:
    text = net.say("ann", "/letters nasrin")
    assert "Evin Prison, Tehran" in text
    assert "What to write" in text and "What never to write" in text
    assert "other prisoners" in text  # never mention other prisoners' cases
    assert "in Iran" in text  # language advice names the country
    assert "/wrote nasrin" in text


def test_letters_for_hidden_or_missing_case_read_the_same(net: ChatHarness) -> None:
    assert net.say("ann", "/letters hidden") == net.say("ann", "/letters nobody")
    assert net.say("ann", "/wrote hidden") == net.say("ann", "/wrote nobody")
    assert "Secret Street" not in net.say("ann", "/letters")


def test_letters_without_address_says_so(net: ChatHarness) -> None:
    net.case("new", "New Case")
    sheet(net, "new", visibility="public")
    text = net.say("ann", "/letters new")
    assert "No address for letters is known yet" in text
    assert "New Case" not in net.say("ann", "/letters")  # not pointed to without an address


def test_wrote_counts_letters_not_writers(net: ChatHarness) -> None:
    assert "Thank you" in net.say("ann", "/wrote nasrin")
    assert "Thank you" in net.say("bob", "/wrote nasrin")
    assert "2 letters in the last three months" in net.say("bob", "/letters nasrin")
    rows = net.run(lambda c: c.execute("SELECT * FROM letter_tally").fetchall())
    assert len(rows) == 1 and rows[0][2] == 2  # (case, month, count): nobody's id
    audit = net.run(lambda c: c.execute("SELECT action FROM audit").fetchall())
    assert not [a for a in audit if "letter" in a[0] or "wrote" in a[0]]
    # The abuse limit names the member, never the case they wrote to.
    buckets = net.run(lambda c: [r[0] for r in c.execute("SELECT bucket FROM rate_buckets")])
    wrote = sorted(b for b in buckets if b.startswith("wrote:"))
    assert wrote == sorted(f"wrote:{net.members[w]}" for w in ("ann", "bob"))


def test_wrote_is_rate_limited_per_member(net: ChatHarness) -> None:
    for _ in range(10):
        assert "Thank you for writing" in net.say("ann", "/wrote ales")
    assert "at most 10 a day" in net.say("ann", "/wrote ales")
    assert "10 letters" in net.say("ann", "/letters ales")
    net.clock.advance(DAY + 1)
    assert "Thank you for writing" in net.say("ann", "/wrote ales")


def test_supporters_are_pointed_to_the_fewest_letters(net: ChatHarness) -> None:
    for _ in range(3):
        net.say("ann", "/wrote nasrin")
    text = net.say("bob", "/letters")
    lines = [line for line in text.splitlines() if line.startswith("•")]
    assert "Ales B." in lines[0] and "0 letters" in lines[0]
    assert "Nasrin S." in lines[1] and "3 letters" in lines[1]
    # Old letters stop counting: after three months Nasrin is back among the least written to.
    net.clock.advance(100 * DAY)
    net.say("ann", "/wrote ales")
    lines = [line for line in net.say("bob", "/letters").splitlines() if line.startswith("•")]
    assert "Nasrin S." in lines[0]


def test_released_prisoners_are_not_listed(net: ChatHarness) -> None:
    sheet(net, "ales", status="released")
    assert "Ales B." not in net.say("ann", "/letters")
    assert "released" in net.say("ann", "/letters ales")
    assert "released" in net.say("ann", "/wrote ales")


def test_relatives_see_their_restricted_case(net: ChatHarness) -> None:
    net.member("rel", "family", family_of=("hidden",))
    assert "Secret Street 1" in net.say("rel", "/letters hidden")
    assert "Hidden Person" in net.say("rel", "/letters")
