"""Private chats only, content that never crosses to a weaker channel, one member on both
platforms, and quarantine after a changed safety number (issue 12; THREATS rules 9, 10, 14).

Each test is the adversary's attempt: a group that tries to capture a coordinator's chat, a
Signal-born report that would travel over Telegram, a stolen link code, a cloned phone.
"""

from __future__ import annotations

import re

import pytest

from bot.router import CommandRateLimiter
from storage import crypto, outbox
from tests.harness import ChatHarness

SECRET = "SENTINEL-CHANNEL-7731 he was beaten in cell 4"


@pytest.fixture
def net(chat: ChatHarness) -> ChatHarness:
    chat.router.limiter = CommandRateLimiter(rate_per_minute=100_000, burst=100_000)
    chat.services.sealing_public = crypto.sealing_keypair().public
    chat.case("nasrin", "Nasrin S.", "restricted")
    chat.case("ales", "Ales B.", "restricted")
    chat.member("coo", "coordinator", coordinates=("nasrin",), transport="telegram")
    chat.member("other", "coordinator", coordinates=("ales",), transport="signal")
    chat.member("rana", "family", family_of=("nasrin",), transport="signal")
    chat.member("tg-rel", "family", family_of=("nasrin",), transport="telegram")
    chat.member("ada", "admin", transport="signal")
    return chat


def rows(chat: ChatHarness, sql: str, *args: object) -> list[tuple]:
    return chat.run(lambda c: c.execute(sql, args).fetchall())


def deliver(chat: ChatHarness) -> None:
    """Play the dispatchers: everything due is sent; then the minute's scrub runs."""
    now = chat.clock()
    for transport in ("telegram", "signal", "console"):
        for item in chat.run(outbox.claim, transport, 10_000, now):
            chat.run(outbox.mark_sent, item.id, "ref", now)
    chat.run(outbox.scrub_final, now)


# --- 1. a group is never a place where the bot learns or answers -------------------------------


def test_a_group_cannot_hijack_a_coordinators_chat(net: ChatHarness) -> None:
    mark = net.last_id()
    for text, choice in (("/help@vigil_bot", False), ("/help", True), ("/cases", False),
                         ("/start", False)):  # fmt: skip
        net.send("coo", text, transport="telegram", chat="group-1", private=False,
                 is_choice=choice)  # fmt: skip
        net.send("stranger", text, transport="telegram", chat="group-1", private=False)
    assert net.outbox(mark) == []  # never answered
    assert rows(net, "SELECT count(*) FROM inbox") == [(0,)]  # nothing learned
    assert rows(net, "SELECT chat FROM identities WHERE address = 'coo'") == [("coo",)]
    assert rows(net, "SELECT count(*) FROM members") == [(5,)]  # the stranger did not join
    # Afterwards the family's report and a fresh invite code reach the private chat only.
    net.send("tg-rel", f"/report {SECRET}", transport="telegram")
    net.send("coo", "/invite family nasrin", transport="telegram")
    chats = {r[0] for r in rows(net, "SELECT chat FROM outbox")}
    assert "group-1" not in chats and "coo" in chats


# --- 2. confidentiality follows the channel ------------------------------------------------------


def test_a_signal_report_never_goes_to_telegram_and_waits_for_a_link(net: ChatHarness) -> None:
    net.send("rana", f"/report {SECRET}", transport="signal")
    net.send("rana", f"/urgent {SECRET}", transport="signal")
    to_coo = net.outbox(0, chat="coo")
    assert to_coo and all(SECRET not in r.text for r in to_coo)  # notices only
    assert any("New report #1 for nasrin" in r.text for r in to_coo)
    urgent = [r for r in to_coo if "raised an emergency" in r.text]
    assert urgent and urgent[0].priority == 0  # the notice is as urgent as the content
    waiting = rows(net, "SELECT transport, chat, body FROM outbox WHERE not_before = ?",
                   outbox.HELD)  # fmt: skip
    assert len(waiting) == 2 and all(t == "signal" and c == "" for t, c, _ in waiting)
    assert all(SECRET not in b for r in rows(net, "SELECT body FROM outbox WHERE transport = "
               "'telegram'") for b in r)  # fmt: skip
    # The coordinator links Signal: the copies that waited go there, and only there.
    code = re.search(r"[A-Z0-9]{4}-[A-Z0-9]{4}-[A-Z0-9]{4}",
                     net.say("coo", "/link", transport="telegram"))  # fmt: skip
    assert code
    reply = net.say("coo-signal", f"/link {code.group(0)}", transport="signal")
    assert "Linked" in reply and "2 messages that waited" in reply
    arrived = net.outbox(0, chat="coo-signal")
    assert sum(SECRET in r.text for r in arrived) == 2
    assert all(r.transport == "signal" for r in arrived)
    # The Telegram identity was told, in case the code was read and used by someone else.
    assert any("was just linked to you" in r.text for r in net.outbox(0, chat="coo"))
    # The next report goes to Signal at once, to one identity only.
    mark = net.last_id()
    net.send("rana", f"/report {SECRET} again", transport="signal")
    copies = [r for r in net.outbox(mark) if "again" in r.text]
    assert [(r.transport, r.chat) for r in copies] == [("signal", "coo-signal")]


def test_a_telegram_report_may_be_copied_over_telegram_marked_as_such(net: ChatHarness) -> None:
    net.send("tg-rel", f"/report {SECRET}", transport="telegram")
    (copy,) = [r for r in net.outbox(0, chat="coo") if SECRET in r.text]
    assert "can read it" in copy.text


def test_ordinary_messages_go_to_one_identity_the_one_used_last(net: ChatHarness) -> None:
    code = re.search(r"[A-Z0-9-]{14}", net.say("coo", "/link", transport="telegram"))
    assert code
    net.say("coo-signal", f"/link {code.group(0)}", transport="signal")
    net.say("coo", "/help", transport="telegram")  # written from Telegram last
    mark = net.last_id()
    net.send("ada", "/broadcast all Vigil at noon", transport="signal")
    net.send("ada", "/confirm", transport="signal")
    to_coo = [r for r in net.outbox(mark) if "Vigil at noon" in r.text and r.chat.startswith("coo")]
    assert [(r.transport, r.chat) for r in to_coo] == [("telegram", "coo")]


def test_codes_and_report_copies_are_gone_once_delivered(net: ChatHarness) -> None:
    net.say("coo", "/invite family nasrin", transport="telegram")
    net.say("rana", "/link", transport="signal")
    net.send("tg-rel", f"/report {SECRET}", transport="telegram")
    assert rows(net, "SELECT count(*) FROM outbox WHERE sensitivity != 'ordinary'")[0][0] >= 3
    deliver(net)
    assert rows(net, "SELECT count(*) FROM outbox WHERE sensitivity != 'ordinary'") == [(0,)]
    assert not any(SECRET in b for (b,) in rows(net, "SELECT body FROM outbox"))
    assert not any(re.search(r"[A-Z0-9]{4}-[A-Z0-9]{4}-[A-Z0-9]{4}", b)
                   for (b,) in rows(net, "SELECT body FROM outbox"))  # fmt: skip


# --- 3. one member on both platforms ---------------------------------------------------------


def test_link_codes_are_one_use_other_transport_and_expire(net: ChatHarness) -> None:
    code = re.search(r"[A-Z0-9-]{14}", net.say("rana", "/link", transport="signal"))
    assert code
    assert "other app" in net.say("rana", f"/link {code.group(0)}", transport="signal")
    assert "already belongs" in net.say("coo", f"/link {code.group(0)}", transport="telegram")
    net.clock.advance(11 * 60)
    assert "not valid" in net.say("rana-tg", f"/link {code.group(0)}", transport="telegram")
    fresh = re.search(r"[A-Z0-9-]{14}", net.say("rana", "/link", transport="signal"))
    assert fresh
    assert "Linked" in net.say("rana-tg", f"/link {fresh.group(0)}", transport="telegram")
    assert "not valid" in net.say("mallory", f"/link {fresh.group(0)}", transport="telegram")
    # One member: the same case, the same role, both apps listed.
    assert "Nasrin" in net.say("rana-tg", "/mydata", transport="telegram")
    assert "Linked apps" in net.say("rana-tg", "/mydata", transport="telegram")
    assert "Unlinked" in net.say("rana", "/unlink telegram", transport="signal")
    assert "only app" in net.say("rana", "/unlink signal", transport="signal")


def test_forgetme_removes_every_identity(net: ChatHarness) -> None:
    code = re.search(r"[A-Z0-9-]{14}", net.say("rana", "/link", transport="signal"))
    assert code
    net.say("rana-tg", f"/link {code.group(0)}", transport="telegram")
    net.say("rana", "/forgetme", transport="signal")
    net.say("rana", "delete me", transport="signal")
    assert rows(net, "SELECT count(*) FROM identities WHERE address LIKE 'rana%'") == [(0,)]


# --- 4. a changed safety number quarantines the member ----------------------------------------


def test_quarantine_holds_everything_and_trust_releases_exactly_that(net: ChatHarness) -> None:
    rid = net.members["rana"]
    net.send("rana", "", transport="signal", untrusted_identity=True, key="rana:1:untrusted")
    assert rows(net, "SELECT quarantined FROM identities WHERE address = 'rana'") == [(1,)]
    alerts = [r for r in net.outbox(0, chat="coo") if "security number" in r.text]
    assert alerts and f"/trust {rid}" in alerts[0].text and SECRET not in alerts[0].text
    # Nothing goes to the identity: a broadcast's message to it is written but held.
    net.send("ada", "/broadcast all Letters evening", transport="signal")
    net.send("ada", "/confirm", transport="signal")
    mark = net.last_id()
    net.send("rana", f"/report {SECRET}", transport="signal")  # the cloned phone writes
    assert net.outbox(mark) == []  # held unprocessed: no report, no answer
    assert rows(net, "SELECT count(*) FROM reports") == [(0,)]
    assert rows(net, "SELECT count(*) FROM held_messages") == [(1,)]
    assert all(
        r[0] == outbox.HELD
        for r in rows(
            net, "SELECT not_before FROM outbox WHERE chat = 'rana' AND state = 'pending'"
        )
    )
    # A coordinator of another case cannot release them; theirs can, after checking.
    assert "No member" in net.say("other", f"/trust {rid}", transport="signal")
    assert "Confirming" in net.say("coo", f"/trust {rid}", transport="telegram")
    (request,) = net.requests
    assert request.op == "trust_identity" and request.argument == "rana"
    failed = net.answer(False)
    assert any("stays quarantined" in r.text for r in failed)
    net.say("coo", f"/trust {rid}", transport="telegram")
    released = net.answer(True)
    assert any("confirmed" in r.text for r in released if r.chat == "coo")
    assert rows(net, "SELECT quarantined FROM identities WHERE address = 'rana'") == [(0,)]
    assert rows(net, "SELECT count(*) FROM reports") == [(1,)]  # the held report, once
    assert rows(net, "SELECT count(*) FROM held_messages") == [(0,)]
    held = "SELECT count(*) FROM outbox WHERE chat = 'rana' AND not_before = ?"
    assert rows(net, held, outbox.HELD) == [(0,)]  # what waited for rana goes now
    assert rows(net, "SELECT count(*) FROM audit WHERE action = 'identity.trusted'") == [(1,)]


def test_a_refused_send_quarantines_too(net: ChatHarness) -> None:
    from bot import guard

    net.run(guard.quarantine, "signal", "rana", net.clock(), net.services)
    net.run(guard.quarantine, "signal", "rana", net.clock(), net.services)  # told once
    alerts = [r for r in net.outbox(0, chat="coo") if "security number" in r.text]
    assert len(alerts) == 1
