"""/mydata and /forgetme: what is kept is what is said, and forgetting leaves nothing behind."""

from __future__ import annotations

import json
from typing import Any

from bot.messages import Incoming
from storage import crypto, outbox, privacy, retention
from tests.authz_world import dump
from tests.harness import ChatHarness

UUID = "0d5e3c1a-7b2f-4c9d-8e6a-5f4b3c2d1e0f"  # a Signal sourceUuid: the member's address
DAY = 86400


def signal_say(chat: ChatHarness, who: str, text: str, ts: int) -> list[str]:
    """`who` writes on Signal; inbox keys are `sourceUuid:timestamp` as the transport makes."""
    before = {(s.id, s.text) for s in chat.outbox(0, chat=who)}
    msg = Incoming(transport="signal", sender=who, chat=who, key=f"{who}:{ts}", text=text)
    chat.run(chat.router.process, msg)
    # Forgetting deletes rows, so ids may be reused: compare (id, text), not a high-water mark.
    return [s.text for s in chat.outbox(0, chat=who) if (s.id, s.text) not in before]


def everything(chat: ChatHarness) -> str:
    """The whole decrypted database as text."""
    return json.dumps(chat.run(lambda c: dump(c, skip=())), default=repr, ensure_ascii=False)


def setup_relative(chat: ChatHarness) -> dict[str, Any]:
    chat.services.sealing_public = crypto.sealing_keypair().public
    chat.case("nasrin", "Nasrin S.", visibility="restricted")
    chat.case("other", "Other O.", visibility="public")
    chat.member("coo", "coordinator")
    mid = chat.member(UUID, "family", family_of=("nasrin",), transport="signal")
    signal_say(chat, UUID, "/subscribe nasrin", 1)
    signal_say(chat, UUID, "/subscribe other", 2)
    signal_say(chat, UUID, "/report nasrin SENTINEL-REPORT-4471 he is thin", 3)
    signal_say(chat, UUID, "/urgent nasrin SENTINEL-URGENT-9912 beaten", 4)
    signal_say(chat, UUID, "/timezone Europe/Minsk", 5)
    return {"id": mid}


def test_mydata_for_a_stranger_says_only_inbox_keys(chat: ChatHarness) -> None:
    reply = chat.say("stranger", "/mydata")
    assert "not a member" in reply and "2 days" in reply
    assert chat.run(lambda c: c.execute("SELECT count(*) FROM members").fetchone()[0]) == 0


def test_mydata_lists_own_data_with_periods_from_the_retention_table(chat: ChatHarness) -> None:
    setup_relative(chat)
    chat.run(retention.set_period, "delivered_messages", 10)
    chat.run(retention.set_period, "report_bodies", 200)
    reply = "\n".join(signal_say(chat, UUID, "/mydata", 10))
    assert "Nasrin S. (relative)" in reply
    assert "Other O." not in reply  # followed cases are counted, never listed to others
    assert "Cases you follow: 2" in reply
    assert "deleted 10 days after delivery" in reply
    assert "kept 200 days" in reply
    assert "Signal" in reply and "never your phone number" in reply
    assert "coo" not in reply  # nothing about anyone else


def test_mydata_does_not_name_other_members(chat: ChatHarness) -> None:
    chat.case("a", "A", visibility="public")
    chat.member("ann", "activist")
    chat.member("bob", "activist")
    reply = chat.say("ann", "/mydata")
    assert "bob" not in reply
    assert "Reports you send" not in reply  # only relatives hear about reports


def test_forgetme_asks_first_and_a_wrong_answer_keeps_everything(chat: ChatHarness) -> None:
    setup_relative(chat)
    before = everything(chat)
    ask = "\n".join(signal_say(chat, UUID, "/forgetme", 20))
    assert "delete me" in ask and "sealed archive" in ask
    assert "Nothing was deleted" in "\n".join(signal_say(chat, UUID, "no thanks", 21))
    assert "not the confirmation phrase" in "\n".join(
        signal_say(chat, UUID, "/forgetme please do", 22)
    )
    assert chat.run(lambda c: privacy.summary(c, chat.members[UUID])) is not None
    assert len(everything(chat)) >= len(before) - 10  # only inbox rows and answers added


def test_forgetme_deletes_the_member_and_every_link(chat: ChatHarness) -> None:
    me = setup_relative(chat)["id"]
    reports_before = chat.run(lambda c: c.execute("SELECT count(*) FROM reports").fetchone()[0])
    signal_say(chat, UUID, "/forgetme", 30)
    done = signal_say(chat, UUID, "Delete  ME", 31)  # case and spacing do not matter
    assert any("Everything Vigil kept about you is deleted" in t for t in done)

    assert chat.run(privacy.references_to, me) == {}
    # Reports stay, sealed and unattributed; the urgent alert no longer points at the sender.
    assert chat.run(lambda c: c.execute("SELECT count(*) FROM reports").fetchone()[0]) == (
        reports_before
    )
    assert (
        chat.run(
            lambda c: c.execute(
                "SELECT count(*) FROM urgent_alerts WHERE reporter_id IS NOT NULL"
            ).fetchone()[0]
        )
        == 0
    )
    # The address survives only as the chat of the confirmation (until delivered + retention).
    text = everything(chat)
    rows = chat.run(lambda c: c.execute("SELECT chat, body FROM outbox WHERE chat = ?", (UUID,))
                    .fetchall())  # fmt: skip
    assert len(rows) == 1 and "deleted" in rows[0][1]
    assert text.count(UUID) == 1
    # Once delivered and past the retention, nothing is left at all.
    chat.run(lambda c: outbox.mark_sent(c, rows_id(c), None, chat.clock()))
    chat.clock.advance(15 * DAY)
    chat.run(retention.enforce, chat.clock())
    assert UUID not in everything(chat)
    # Coming back is joining as someone new.
    assert any("Welcome" in t for t in signal_say(chat, UUID, "/start", 40))


def test_member_numbers_are_never_reused(chat: ChatHarness) -> None:
    chat.member("ann", "activist")
    old = chat.member("bob", "activist")
    chat.say("bob", "/forgetme delete me")
    chat.say("eve", "/start")
    new = chat.run(lambda c: c.execute("SELECT max(id) FROM members").fetchone()[0])
    assert new != old, "audit rows and /promote N would now point at someone else"


def rows_id(conn: Any) -> int:
    return conn.execute("SELECT id FROM outbox WHERE chat = ?", (UUID,)).fetchone()[0]


def test_forgetme_on_one_line(chat: ChatHarness) -> None:
    chat.member("ann", "activist")
    assert "deleted" in chat.say("ann", "/forgetme delete me")
    assert chat.run(lambda c: c.execute("SELECT count(*) FROM members").fetchone()[0]) == 0


def test_forgetme_keeps_queued_deletions_of_report_messages(chat: ChatHarness) -> None:
    """Requests to delete a relative's report messages from the Telegram chat protect them."""
    chat.services.sealing_public = crypto.sealing_keypair().public
    chat.case("nasrin", "Nasrin S.")
    chat.member("rana", "family", family_of=("nasrin",), transport="telegram")
    chat.say("rana", "/report nasrin he is thin", transport="telegram", message_ref="77")
    deletes = "SELECT count(*) FROM outbox WHERE body LIKE '%\"delete\"%' AND state = 'pending'"
    assert chat.run(lambda c: c.execute(deletes).fetchone()[0]) == 1
    chat.say("rana", "/forgetme delete me", transport="telegram")
    assert chat.run(lambda c: c.execute(deletes).fetchone()[0]) == 1
    assert chat.run(lambda c: c.execute("SELECT count(*) FROM members WHERE role = 'family'")
                    .fetchone()[0]) == 0  # fmt: skip


def test_forgetme_clears_the_invite_lockout_and_inbox_keys(chat: ChatHarness) -> None:
    chat.member(UUID, "activist", transport="signal")
    for i in range(6):
        signal_say(chat, UUID, "/start WRONG-CODE-0000", 100 + i)
    buckets = "SELECT count(*) FROM rate_buckets"
    assert chat.run(lambda c: c.execute(buckets).fetchone()[0]) == 1
    signal_say(chat, UUID, "/forgetme delete me", 200)
    assert chat.run(lambda c: c.execute(buckets).fetchone()[0]) == 0
    assert (
        chat.run(
            lambda c: c.execute(
                "SELECT count(*) FROM inbox WHERE key LIKE ?", (UUID + "%",)
            ).fetchone()[0]
        )
        == 0
    )


def test_last_admin_is_warned(chat: ChatHarness) -> None:
    chat.member("ada", "admin")
    assert "last administrator" in chat.say("ada", "/forgetme")
    chat.member("ben", "admin")
    assert "last administrator" not in chat.say("ben", "/forgetme")


def test_forgetting_a_coordinator_stops_their_progress_reports(chat: ChatHarness) -> None:
    chat.member("coo", "coordinator")
    chat.member("ann", "activist")
    chat.say("coo", "/broadcast all Vigil at noon")
    chat.say("coo", "/confirm")
    chat.say("coo", "/broadcast all Another one")  # a draft left behind
    chat.say("coo", "/forgetme delete me")
    sql = "SELECT state, author_id, progress_chat FROM broadcasts ORDER BY id"
    rows = chat.run(lambda c: c.execute(sql).fetchall())
    assert rows[0][1:] == (None, None)  # still going out to the network, reporting to no one
    assert rows[1][0] == "cancelled"
    audit = chat.run(lambda c: c.execute("SELECT action FROM audit").fetchall())
    assert ("member.forgotten",) in audit
