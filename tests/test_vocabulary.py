"""People's own words (issue 16 items 12 and 14): role names and their synonyms, a case by its
name, a zone by its city, a language by its name, and numbers in any script's digits."""

from __future__ import annotations

import pytest

from bot.context import ascii_digits, parse_id
from bot.router import CommandRateLimiter
from storage import actions, members
from tests.harness import ChatHarness


@pytest.fixture
def net(chat: ChatHarness) -> ChatHarness:
    chat.router.limiter = CommandRateLimiter(rate_per_minute=100_000, burst=100_000)
    chat.services.default_timezone = "UTC"
    chat.case("nasrin", "Nasrin S.", visibility="public")
    chat.case("ales", "Алесь Б.", visibility="public")
    chat.case("hidden", "Nasrin Hidden", visibility="restricted")
    chat.member("coo", "coordinator", coordinates=("nasrin",))
    chat.member("ada", "admin")
    chat.member("ann", language="fa")
    return chat


def member(chat: ChatHarness, who: str) -> members.Member:
    found = chat.run(members.get, chat.members[who])
    assert found is not None
    return found


def test_digits_of_every_script_are_numbers_and_nothing_else_is() -> None:
    assert ascii_digits("۲۲-۷") == "22-7"  # Persian
    assert ascii_digits("١٢") == "12"  # Arabic-Indic
    assert ascii_digits("၁၂") == "12"  # Burmese
    assert parse_id("#۱۲") == 12
    assert parse_id("²") is None and parse_id("①") is None  # not decimal digits


@pytest.mark.parametrize(
    ("text", "expected"),
    [("/quiet ۲۲-۷", "22-07"), ("/quiet ١٠-٦", "10-06"), ("/quiet ၂၂-၇", "22-07")],
)
def test_quiet_hours_in_local_digits(net: ChatHarness, text: str, expected: str) -> None:
    net.say("ann", text)
    assert member(net, "ann").quiet_hours == expected


def test_action_ids_and_dates_in_persian_digits(net: ChatHarness) -> None:
    reply = net.say("coo", "/schedule nasrin ۲۰۲۶-۱۰-۱۵T۱۸:۳۰ Vigil")
    assert "Scheduled #1" in reply
    net.say("ann", "/subscribe nasrin")
    assert "Vigil" in net.say("ann", "/join ۱")
    assert "1 person going" in net.say("coo", "/headcount ۱")
    net.say("coo", "/editaction ۱ remind ۲h")
    assert net.run(actions.get, 1).reminders == (7200,)


def test_member_numbers_in_persian_digits(net: ChatHarness) -> None:
    ann = net.members["ann"]
    persian = str(ann).translate(str.maketrans("0123456789", "۰۱۲۳۴۵۶۷۸۹"))
    reply = net.say("ada", f"/promote {persian} coordinator nasrin")
    assert f"#{ann} " in reply and "/confirm" in reply


@pytest.mark.parametrize("word", ["supporter", "Supporter", "activist", "supporters"])
def test_supporter_and_activist_are_one_role(net: ChatHarness, word: str) -> None:
    assert "Invite code" in net.say("coo", f"/invite {word}")


def test_relative_is_family_and_the_usage_names_the_reply_words(net: ChatHarness) -> None:
    assert "Invite code" in net.say("coo", "/invite relative nasrin")
    usage = net.say("coo", "/invite")
    assert "supporter, relative, coordinator" in usage
    assert "supporter, relative or coordinator" in net.say("coo", "/invite nobody")


def test_the_cli_accepts_the_same_role_words() -> None:
    from bot.cli.network import _role

    assert _role("supporter") == _role("activist") == "activist"
    assert _role("Relative") == "family"
    with pytest.raises(Exception, match="unknown role"):
        _role("boss")


@pytest.mark.parametrize("typed", ["nasrin", "Nasrin", "nasrin s", "NASRIN S."])
def test_a_case_by_its_slug_or_name(net: ChatHarness, typed: str) -> None:
    assert net.say("ann", f"/case {typed}").startswith("Nasrin S.")


def test_a_case_by_a_part_of_its_name_in_any_script(net: ChatHarness) -> None:
    assert net.say("ann", "/case алесь").startswith("Алесь Б.")
    assert "Nasrin S" in net.say("ann", "/subscribe nasr")
    assert "Nasrin S" in net.say("ann", "/subscriptions")


def test_a_hidden_case_is_never_found_by_its_name(net: ChatHarness) -> None:
    # "nasrin" is a unique part among the cases ann may see, although a restricted case
    # also has it: the restricted one is not a candidate, so its existence is not told.
    assert net.say("ann", "/case hidden") == net.say("ann", "/case nosuchcase")
    assert net.say("ann", "/case nasrin h") == net.say("ann", "/case nosuchcase")
    # A coordinator sees both: the part is ambiguous for them, the full name is not.
    assert net.say("coo", "/case nasr") == net.say("coo", "/case nosuchcase")
    assert net.say("coo", "/case nasrin hidden").startswith("Nasrin Hidden")


def test_two_letters_are_too_few_to_name_a_case(net: ChatHarness) -> None:
    assert net.say("ann", "/case na") == net.say("ann", "/case nosuchcase")


@pytest.mark.parametrize(
    ("typed", "zone"),
    [
        ("Minsk", "Europe/Minsk"),
        ("Минск", "Europe/Minsk"),
        ("europe/minsk", "Europe/Minsk"),
        ("تهران", "Asia/Tehran"),
        ("new york", "America/New_York"),
    ],
)
def test_a_zone_by_its_city_in_any_shipped_language(
    net: ChatHarness, typed: str, zone: str
) -> None:
    net.say("ann", f"/timezone {typed}")
    assert member(net, "ann").timezone == zone


def test_an_unknown_city_changes_nothing(net: ChatHarness) -> None:
    net.say("ann", "/timezone Minsk")
    net.say("ann", "/timezone Atlantis")
    assert member(net, "ann").timezone == "Europe/Minsk"


@pytest.mark.parametrize(
    ("typed", "code"),
    [("english", "en"), ("English", "en"), ("русский", "ru"), ("فارسی", "fa"), ("farsi", "fa"),
     ("Russian", "ru"), ("українська", "uk"), ("ru-RU", "ru")],
)  # fmt: skip
def test_a_language_by_its_name(net: ChatHarness, typed: str, code: str) -> None:
    net.say("ann", f"/language {typed}")
    assert member(net, "ann").language == code


def test_an_unknown_language_changes_nothing(net: ChatHarness) -> None:
    net.say("ann", "/language klingon")
    assert member(net, "ann").language == "fa"


# -- a command without its argument offers a menu (issue 16 item 9) ---------------------------


def test_commands_without_their_id_offer_what_they_could_apply_to(net: ChatHarness) -> None:
    net.clock.now = 1_790_500_000.0
    net.say("coo", "/schedule nasrin 2026-10-15T18:00 Vigil for Nasrin")
    net.member("bob")
    net.say("bob", "/subscribe nasrin")
    offer = net.send("bob", "/join")[-1]
    assert [c[1] for c in offer.choices] == ["/join 1"] and "Vigil for Nasrin" in offer.choices[0][
        0
    ]
    assert "/join" in offer.text
    net.say("bob", "/join 1")
    assert [c[1] for c in net.send("bob", "/leave")[-1].choices] == ["/leave 1"]
    assert "No actions" in net.say("bob", "/join")  # nothing left to join
    assert [c[1] for c in net.send("coo", "/headcount")[-1].choices] == ["/headcount 1"]
    assert [c[1] for c in net.send("coo", "/unschedule")[-1].choices] == ["/unschedule 1"]
    assert "called off" not in net.say("coo", "/unschedule")  # offering changes nothing


def test_case_without_a_name_offers_only_the_visible_cases(net: ChatHarness) -> None:
    offer = net.send("ann", "/case")[-1]
    assert sorted(c[1] for c in offer.choices) == ["/case ales", "/case nasrin"]
    assert "/case hidden" in [c[1] for c in net.send("coo", "/case")[-1].choices]


@pytest.mark.parametrize("words", ["administrator", "admin", "relative nasrin", "family nasrin"])
def test_promote_takes_the_reply_words_too(net: ChatHarness, words: str) -> None:
    reply = net.say("ada", f"/promote {net.members['ann']} {words}")
    assert "/confirm" in reply, reply
