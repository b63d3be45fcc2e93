"""Vetted and open members (issue 14 item 4, THREATS rule 15): who joined by a bare /start
follows public cases and gets public news, never an action's place, an RSVP, relatives' news
or a broadcast not marked public."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest

from bot.cli.status import Facts, joining_lines
from bot.config import Settings
from bot.router import CommandRateLimiter
from handlers import actions as ha
from handlers import subscriptions as alerts
from storage import crypto, db, members
from tests.harness import ChatHarness

HOUR = 3600.0
DAY = 86400.0


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@pytest.fixture
def net(chat: ChatHarness) -> ChatHarness:
    chat.router.limiter = CommandRateLimiter(rate_per_minute=100_000, burst=100_000)
    chat.services.sealing_public = crypto.sealing_keypair().public
    chat.services.default_timezone = "Europe/Berlin"
    chat.case("nasrin", "Nasrin S.", visibility="public")
    chat.member("coo", "coordinator", coordinates=("nasrin",))
    chat.member("rana", "family", family_of=("nasrin",))
    chat.member("vet")  # seeded like an invited supporter: vetted
    assert "Welcome" in chat.say("opn", "/start")  # a bare /start: an open supporter
    chat.members["opn"] = chat.run(lambda c: members.by_address(c, "console", "opn").id)
    for who in ("vet", "opn"):
        chat.say(who, "/subscribe nasrin")
    return chat


def vetted(chat: ChatHarness, who: str) -> bool:
    return chat.run(lambda c: members.get(c, chat.members[who]).vetted)


def texts_to(chat: ChatHarness, who: str, since: int) -> str:
    return "\n".join(s.text for s in chat.outbox(since) if s.chat == who)


def step(chat: ChatHarness, until: float) -> None:
    """The alarm loop up to `until`, as in tests/test_actions.py."""
    while (at := chat.run(ha.next_wakeup)) is not None and at <= until:
        chat.clock.now = max(chat.clock.now, at)
        chat.run(ha.fire_due, chat.clock.now)
    chat.clock.now = max(chat.clock.now, until)


def test_a_bare_start_makes_an_open_supporter_and_an_invite_vets_them(net: ChatHarness) -> None:
    assert not vetted(net, "opn") and vetted(net, "vet")
    code = re.search(r"/start (\S+)$", net.say("coo", "/invite activist"))
    assert code
    net.say("opn", f"/start {code.group(1)}")
    assert vetted(net, "opn")


def test_an_open_supporter_never_receives_an_actions_place_or_a_vetted_only_broadcast(
    net: ChatHarness,
) -> None:
    net.clock.now = ts("2026-10-10T12:00")
    reply = net.say("coo", "/schedule nasrin 2026-10-15T18:00 Vigil for Nasrin")
    aid = int(reply.split("Scheduled #", 1)[1].split(":", 1)[0])
    net.say("coo", f"/editaction {aid} place Alexanderplatz fountain")
    net.say("coo", f"/editaction {aid} secret Back gate of St. Mary's church")
    mark = net.last_id()

    # The listing and the invitation: the open supporter hears of the vigil, not where it is.
    listing = net.say("opn", "/actions")
    assert "Vigil for Nasrin" in listing and "Alexanderplatz" not in listing
    assert f"/join {aid}" not in listing and "vetted members" in listing
    assert "Alexanderplatz" in net.say("vet", "/actions")
    refused = net.say("opn", f"/join {aid}")
    assert "vetted members" in refused and "St. Mary" not in refused
    net.say("vet", f"/join {aid}")
    step(net, ts("2026-10-15T17:30"))  # the invitation, the reveal and the last reminder
    to_open = texts_to(net, "opn", mark)
    assert "Vigil for Nasrin" in to_open  # invited all the same
    assert "Alexanderplatz" not in to_open and "St. Mary" not in to_open
    assert f"/join {aid}" not in to_open
    to_vetted = texts_to(net, "vet", mark)
    assert "Alexanderplatz" in to_vetted and "St. Mary" in to_vetted

    # A broadcast is for vetted members unless marked public, and the preview says so.
    mark = net.last_id()
    preview = net.say("coo", "/broadcast case:nasrin Court at nine, bring warm clothes")
    assert "Vetted members only" in preview and "/broadcast public" in preview
    net.say("coo", "/confirm")
    assert "Court at nine" in texts_to(net, "vet", mark)
    assert "Court at nine" not in texts_to(net, "opn", mark)
    assert "Court at nine" in texts_to(net, "rana", mark)

    mark = net.last_id()
    preview = net.say("coo", "/broadcast public case:nasrin Sign the open letter")
    assert "Public: open supporters" in preview
    net.say("coo", "/confirm")
    assert "Sign the open letter" in texts_to(net, "opn", mark)
    assert "Sign the open letter" in texts_to(net, "vet", mark)


def test_public_only_as_the_first_word_so_a_text_cannot_widen_the_audience(
    net: ChatHarness,
) -> None:
    mark = net.last_id()
    preview = net.say("coo", "/broadcast case:nasrin public hearing at ten")
    assert "Vetted members only" in preview
    net.say("coo", "/confirm")
    assert "public hearing at ten" in texts_to(net, "vet", mark)
    assert texts_to(net, "opn", mark) == ""


def test_counts_in_the_preview_are_the_fan_outs(net: ChatHarness) -> None:
    def people(preview: str) -> int:
        found = re.search(r": (\d+) people", preview)
        assert found, preview
        return int(found.group(1))

    closed = people(net.say("coo", "/broadcast case:nasrin One"))
    mark = net.last_id()
    net.say("coo", "/confirm")
    assert len({s.chat for s in net.outbox(mark) if "One" in s.text}) == closed
    opened = people(net.say("coo", "/broadcast public case:nasrin Two"))
    mark = net.last_id()
    net.say("coo", "/confirm")
    assert len({s.chat for s in net.outbox(mark) if "Two" in s.text}) == opened == closed + 1


def test_relatives_news_is_for_vetted_members_public_news_for_everyone(
    net: ChatHarness,
) -> None:
    mark = net.last_id()
    net.say("rana", "/report He was moved to the hospital wing")
    net.say("coo", "/publish 1 health: He is in the prison hospital. Write to the governor.")
    assert "prison hospital" in texts_to(net, "vet", mark)
    assert "prison hospital" not in texts_to(net, "opn", mark)
    assert "prison hospital" in net.say("vet", "/case nasrin")
    assert "prison hospital" not in net.say("opn", "/case nasrin")

    mark = net.last_id()
    net.say("coo", "/update nasrin hearing: The appeal is heard on Monday.")
    assert "appeal is heard" in texts_to(net, "opn", mark)
    assert "appeal is heard" in net.say("opn", "/case nasrin")


def test_the_digest_keeps_relatives_news_from_open_supporters(net: ChatHarness) -> None:
    net.clock.now = ts("2026-10-01T12:00")
    for who in ("vet", "opn"):
        net.say(who, "/subscribe nasrin digest")
    net.clock.advance(60)
    net.say("rana", "/report He has a fever")
    net.say("coo", "/publish 1 health: He has a fever; doctors were called.")
    net.say("coo", "/update nasrin hearing: Hearing on Friday.")
    net.clock.now = ts("2026-10-02T09:00:05")
    mark = net.last_id()
    net.run(alerts.digest_tick, net.clock(), "console")
    assert "fever" in texts_to(net, "vet", mark) and "Friday" in texts_to(net, "vet", mark)
    to_open = texts_to(net, "opn", mark)
    assert "Friday" in to_open and "fever" not in to_open


def test_an_admins_promotion_vets_and_members_shows_who_is_open(net: ChatHarness) -> None:
    net.member("ada", "admin")
    listing = net.say("ada", "/members activist")
    opn, vet = net.members["opn"], net.members["vet"]
    assert re.search(rf"#{opn} .*open supporter", listing)
    assert re.search(rf"#{vet} .*vetted", listing)
    net.say("ada", f"/promote {opn} family nasrin")
    net.say("ada", "/confirm")
    assert vetted(net, "opn")


def test_status_says_whether_the_network_is_invite_only(tmp_path: Any) -> None:
    open_net = Facts(Settings(data_dir=tmp_path), open_supporters=4)
    assert (
        "open:" in joining_lines(open_net)[0] and "4 open supporters" in joining_lines(open_net)[0]
    )
    closed = Facts(Settings(data_dir=tmp_path, invite_only=True))
    assert "invite-only" in joining_lines(closed)[0]


def test_migration_vets_the_invited_and_leaves_bare_starts_open() -> None:
    import sqlcipher3

    conn = sqlcipher3.connect(":memory:", isolation_level=None)
    for version, sql in db._migrations():
        if version >= 73:
            break
        for statement in db._split_sql(sql):
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {version}")
    for mid, role in ((1, "activist"), (2, "activist"), (3, "family"), (4, "coordinator")):
        conn.execute("INSERT INTO members (id, role, created_at) VALUES (?, ?, 0)", (mid, role))
    conn.execute("INSERT INTO audit (at, actor_id, action) VALUES (0, 1, 'invite.redeemed')")
    db.migrate(conn)
    found = dict(conn.execute("SELECT id, vetted FROM members").fetchall())
    assert found == {1: 1, 2: 0, 3: 1, 4: 1}


def test_the_approver_sees_whether_a_broadcast_reaches_open_supporters(net: ChatHarness) -> None:
    net.member("ada", "admin")
    net.member("adb", "admin")
    mark = net.last_id()
    net.say("coo", "/broadcast public all Vigil tonight at the court")
    assert "second person" in net.say("coo", "/confirm")
    asked = texts_to(net, "ada", mark)
    assert "Vigil tonight" in asked and "Public: open supporters" in asked
    assert texts_to(net, "opn", mark) == ""  # nothing before the approval
    request = re.search(r"/approve (\d+)", asked)
    assert request
    mark = net.last_id()
    net.say("ada", f"/approve {request.group(1)}")
    assert "Vigil tonight" in texts_to(net, "opn", mark)
