"""Well-being reports through the real router and encrypted store: the wizard, one-line reports,
who may report and read, the no-key refusal, emergencies, check-ins and publishing."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bot.messages import Attachment, Incoming, Priority
from bot.router import CommandRateLimiter
from handlers import reports as h
from storage import cases as case_store
from storage import crypto, reports
from tests.harness import ChatHarness, Sent

DAY = 86400.0
UNKNOWN = "I don't know that command. Send /help to see what you can do."


@pytest.fixture
def keypair() -> crypto.SealingKeyPair:
    return crypto.sealing_keypair()


def unassign(net: ChatHarness, who: str, slug: str) -> None:
    def drop(conn: Any) -> None:
        case = case_store.by_slug(conn, slug)
        assert case is not None
        assert case_store.unlink_member(conn, case.id, net.members[who], "coordinator")

    net.run(drop)


@pytest.fixture
def net(chat: ChatHarness, keypair: crypto.SealingKeyPair) -> ChatHarness:
    chat.router.limiter = CommandRateLimiter(rate_per_minute=100_000, burst=100_000)
    chat.services.sealing_public = keypair.public
    chat.case("nasrin", "Nasrin S.", "restricted")
    chat.case("ales", "Ales B.", "restricted")
    chat.member("coo", "coordinator", coordinates=("nasrin", "ales"))
    chat.member("ada", "admin")
    chat.member("rana", "family", family_of=("nasrin",))
    chat.member("bo", "family", family_of=("ales",))
    chat.member("act", "activist")
    return chat


def rows(chat: ChatHarness, sql: str, *args: Any) -> list[tuple]:
    return chat.run(lambda c: c.execute(sql, args).fetchall())


def report_rows(chat: ChatHarness) -> list[reports.Report]:
    ids = [r[0] for r in rows(chat, "SELECT id FROM reports ORDER BY id")]
    return [chat.run(reports.get, i) for i in ids]


def open_body(chat: ChatHarness, kp: crypto.SealingKeyPair, rid: int) -> dict:
    sealed, case_id = rows(chat, "SELECT sealed, case_id FROM reports WHERE id = ?", rid)[0]
    return json.loads(crypto.open_sealed(kp.private, sealed, reports.report_info(rid, case_id)))


def to(sent: list[Sent], chat: str) -> list[Sent]:
    return [s for s in sent if s.chat == chat and s.body.get("kind", "message") == "message"]


def all_choice_values(sent: list[Sent]) -> list[str]:
    return [value for s in sent for _label, value in s.choices]


def jpeg_with_exif(secret: bytes) -> bytes:
    app1 = b"Exif\x00\x00" + secret
    segment = b"\xff\xe1" + (len(app1) + 2).to_bytes(2, "big") + app1
    app0 = b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    jfif = b"\xff\xe0" + (len(app0) + 2).to_bytes(2, "big") + app0
    return b"\xff\xd8" + jfif + segment + b"\xff\xda\x00\x02IMAGEDATA\xff\xd9"


def photo(data: bytes, name: str = "visit.jpg") -> Attachment:
    return Attachment("photo", "file-1", "image/jpeg", len(data), name, data)


# --- the wizard ---------------------------------------------------------------------------


def test_wizard_end_to_end(net: ChatHarness, keypair: crypto.SealingKeyPair) -> None:
    said: list[Sent] = []
    for text in [
        "/report",
        "/pick kind visit",
        "/pick date yesterday",
        "/pick health concern",
        "The cell is cold and damp",
        "/pick needs medicine",
        "/pick needs letters",
        "/pick needs medicine",  # a second tap takes it back
        "/pick needs done",
        "He asked for books",
    ]:
        said += net.send("rana", text)
    assert not report_rows(net)  # nothing is sent before the last step
    final = net.send("rana", "", attachments=(photo(jpeg_with_exif(b"GPS-51.1N")),))
    said += final

    values = all_choice_values(said)
    assert values and all(v.startswith("/") and len(v.encode()) < 64 for v in values)

    (rep,) = report_rows(net)
    assert (rep.kind, rep.health, rep.source, rep.urgent, rep.attachments) == (
        "visit", "concern", "wizard", False, 1,
    )  # fmt: skip
    body = open_body(net, keypair, rep.id)
    assert body["conditions"] == "The cell is cold and damp"
    assert body["needs"] == ["letters"]
    assert body["text"] == "He asked for books"
    assert body["contact_date"] == "2026-09-20"
    assert body["kind"] == "visit" and body["health"] == "concern"

    (live,) = to(final, "coo")
    assert live.priority == Priority.ALERT
    assert "He asked for books" in live.text and "/publish" in live.text
    assert "stored, sealed" in to(final, "rana")[-1].text

    sealed, aid = rows(net, "SELECT sealed, id FROM report_attachments")[0]
    envelope = crypto.open_sealed(keypair.private, sealed, reports.attachment_info(aid, rep.id))
    header, data = reports.unpack_attachment(envelope)
    assert header["name"] == "visit.jpg" and header["metadata_stripped"] is True
    assert b"GPS-51.1N" not in data and b"IMAGEDATA" in data

    # An album's next photo joins the stored report; coordinators hear of it once.
    more = net.send("rana", "", attachments=(photo(b"\xff\xd8\xff\xda\x00\x02xx\xff\xd9"),))
    assert "Added to your report" in to(more, "rana")[-1].text
    assert len(to(more, "coo")) == 1
    again = net.send("rana", "", attachments=(photo(b"\xff\xd8\xff\xda\x00\x02yy\xff\xd9"),))
    assert to(again, "coo") == []
    assert net.run(reports.get, rep.id).attachments == 3
    assert "Thank you" in net.say("rana", "/pick more done")
    assert rows(net, "SELECT count(*) FROM conversations")[0][0] == 0


def test_cancel_ends_the_wizard_and_old_buttons_do_nothing(net: ChatHarness) -> None:
    net.say("rana", "/report")
    net.say("rana", "/pick kind visit")
    assert "Cancelled" in net.say("rana", "/cancel")
    assert "menu has closed" in net.say("rana", "/pick date today")
    assert "as a report about" in net.say("rana", "my words")  # plain news: offered afresh
    assert "Nothing" in net.say("rana", "/pick confirm no")
    assert report_rows(net) == []
    assert rows(net, "SELECT count(*) FROM conversations")[0][0] == 0


def test_another_command_abandons_the_wizard(net: ChatHarness) -> None:
    net.say("rana", "/report")
    net.say("rana", "/help")
    assert "menu has closed" in net.say("rana", "/pick kind visit")
    assert "nothing to skip" in net.say("rana", "/skip")


def test_skip_typed_answers_and_bad_input(net: ChatHarness, keypair) -> None:
    net.say("rana", "/report")
    bad = net.send("rana", "banana")
    assert "Please choose one of the answers" in bad[-1].text
    assert ["Visit", "/pick kind visit"] in bad[-1].choices  # the question comes again
    assert "When was it" in net.say("rana", "/skip")
    assert "Type the date" in net.say("rana", "/pick date other")
    assert "could not read that date" in net.say("rana", "31.02.2026")
    assert "could not read that date" in net.say("rana", "2031-01-01")  # in the future
    assert "health" in net.say("rana", "20.09.2026")
    assert "conditions" in net.say("rana", "2")  # a number picks the second answer
    assert "need" in net.say("rana", "/skip")
    assert "Anything else" in net.say("rana", "Medicine, food")
    assert "photo" in net.say("rana", "/skip")
    assert "Please send a photo" in net.say("rana", "some words")
    assert "stored, sealed" in net.say("rana", "/skip")
    (rep,) = report_rows(net)
    body = open_body(net, keypair, rep.id)
    assert body["kind"] is None and body["contact_date"] == "2026-09-20"
    assert body["health"] == "concern" and body["needs"] == ["medicine", "food"]
    assert body["conditions"] is None and body["text"] is None


def test_a_button_from_an_earlier_question_asks_again(net: ChatHarness) -> None:
    net.say("rana", "/report")
    net.say("rana", "/pick kind call")
    reply = net.say("rana", "/pick kind visit")
    assert "earlier question" in reply and "When was it" in reply
    assert "health" in net.say("rana", "/pick date today")


def test_empty_report_is_not_sent(net: ChatHarness) -> None:
    net.say("rana", "/report")
    for _ in range(6):
        net.say("rana", "/skip")
    assert "empty" in net.say("rana", "/skip")
    assert report_rows(net) == []


def test_draft_lost_after_a_restart(net: ChatHarness) -> None:
    net.say("rana", "/report")
    net.services.draft_key = crypto.random_bytes()  # a restart: a new in-memory draft key
    assert "lost when the bot restarted" in net.say("rana", "/pick kind visit")
    assert report_rows(net) == []


def test_a_wizard_photo_too_large_is_asked_again(net: ChatHarness) -> None:
    for text in ["/report", "/pick kind visit", "/skip", "/skip", "/skip", "/skip", "/skip"]:
        net.say("rana", text)
    empty = Attachment("document", "f", "application/pdf", 99_000_000, "big.pdf", None)
    assert "could not receive that file" in net.say("rana", "", attachments=(empty,))
    assert report_rows(net) == []


# --- one-line reports ------------------------------------------------------------------------


def test_one_line_report_and_telegram_deletion(net: ChatHarness, keypair) -> None:
    sent = net.send("rana", "/report He is well, the lawyer visited", message_ref="777")
    (rep,) = report_rows(net)
    assert rep.source == "line" and rep.kind is None
    assert open_body(net, keypair, rep.id)["text"] == "He is well, the lawyer visited"
    deletes = [s for s in sent if s.body.get("kind") == "delete"]
    assert [(d.chat, d.body["ref"], d.body["text"]) for d in deletes] == [("rana", "777", "")]
    assert "He is well" in to(sent, "coo")[0].text

    signal = net.send("rana", "/report more news")  # Signal gives no message_ref
    assert not [s for s in signal if s.body.get("kind") == "delete"]
    net.services.delete_reports = False
    off = net.send("rana", "/report and more", message_ref="778")
    assert not [s for s in off if s.body.get("kind") == "delete"]


def test_several_cases_name_the_case_or_are_asked(net: ChatHarness, keypair) -> None:
    net.member("mira", "family", family_of=("nasrin", "ales"))
    asked = net.send("mira", "/report They were moved")
    assert "Which case" in asked[-1].text
    assert [c[1] for c in asked[-1].choices] == ["/pick case ales", "/pick case nasrin"]
    assert "Ales B." in net.say("mira", "/pick case ales")
    assert "Nasrin S." in net.say("mira", "/report nasrin All fine")
    first, second = report_rows(net)
    assert first.case_id != second.case_id
    assert open_body(net, keypair, first.id)["text"] == "They were moved"
    assert open_body(net, keypair, second.id)["text"] == "All fine"
    assert "Which case" in net.say("mira", "/report")
    assert "cannot be skipped" in net.say("mira", "/skip")


def test_relatives_report_only_for_their_own_case(net: ChatHarness, keypair) -> None:
    # bo is family of ales only: a first word naming another case is just text.
    net.say("bo", "/report nasrin he is fine")
    (rep,) = report_rows(net)
    ales = rows(net, "SELECT id FROM cases WHERE slug = 'ales'")[0][0]
    assert rep.case_id == ales
    assert open_body(net, keypair, rep.id)["text"] == "nasrin he is fine"
    # nor pick it in the wizard: a relative of two cases is offered only those two
    net.member("mira", "family", family_of=("nasrin", "ales"))
    net.case("third", "Third P.", "restricted")
    assert "Which case" in net.say("mira", "/report hello")
    assert "Please choose one of the cases" in net.say("mira", "/pick case third")
    assert len(report_rows(net)) == 1
    # they do not see the other restricted case, and the answer is the one for no case
    assert net.say("bo", "/case nasrin") == net.say("bo", "/case no-such-case")
    assert "Nasrin" not in net.say("bo", "/cases")


def test_reports_are_only_taken_in_private_chats(net: ChatHarness) -> None:
    msg = Incoming("console", "rana", "group-1", "g1", "/report secret", private=False)
    mark = net.last_id()
    net.run(net.router.process, msg)
    assert net.outbox(mark) == [] and report_rows(net) == []  # never answered, nothing kept


# --- who may read ---------------------------------------------------------------------------


def test_only_coordinators_of_the_case_list_and_publish(net: ChatHarness) -> None:
    net.say("rana", "/report Secret words 123")
    for who in ("act", "rana"):
        assert net.say(who, "/reports nasrin") == UNKNOWN
        assert net.say(who, "/publish 1 text") == UNKNOWN
    assert net.say("stranger", "/reports nasrin") == UNKNOWN
    assert net.say("act", "/report hello") == UNKNOWN

    # A coordinator assigned to another case gets the "no such case" answer.
    net.member("other", "coordinator", coordinates=("ales",))
    net.member("own", "coordinator", coordinates=("nasrin",))
    assert net.say("other", "/reports nasrin") == net.say("other", "/reports nosuch")
    assert net.say("other", "/publish 1 x") == net.say("other", "/publish 999 x")
    assert net.say("other", "/ack 1") == net.say("other", "/ack 999")

    listing = net.say("own", "/reports nasrin")
    assert "#1" in listing and "Secret words" not in listing
    assert "#1" in net.say("ada", "/reports")  # admins: every case


def test_coordinator_live_copy_goes_to_assigned_coordinators_only(net: ChatHarness) -> None:
    net.member("own", "coordinator", coordinates=("nasrin",))
    sent = net.send("rana", "/report words")
    # coo and own coordinate nasrin; the admin and other coordinators are not copied.
    assert {s.chat for s in sent if s.chat != "rana"} == {"own", "coo"}


# --- no sealing key ------------------------------------------------------------------------


def test_a_replaced_sealing_key_is_refused_and_admins_get_the_replace_command(
    net: ChatHarness,
) -> None:
    """keyslots.json altered on disk: the pinned fingerprint no longer matches, so nothing is
    sealed to the stranger's key, and the alert names the command that supersedes it on purpose."""
    from storage import crypto

    net.send("rana", "/report first, pins the key")
    net.services.sealing_public = crypto.sealing_keypair().public
    sent = net.send("rana", "/report The words SENTINEL-SWAP")
    assert "cannot be stored safely" in to(sent, "rana")[0].text
    warned = {s.chat for s in sent if "vigil keys sealing-import --replace" in s.text}
    assert warned == {"coo", "ada"}
    assert all("SENTINEL-SWAP" not in s.text for s in net.outbox())


def test_without_a_sealing_key_reports_are_refused(net: ChatHarness) -> None:
    net.services.sealing_public = None
    sent = net.send("rana", "/report The words SENTINEL-NOKEY")
    assert "cannot be stored safely" in to(sent, "rana")[0].text
    warned = {
        s.chat
        for s in sent
        if "vigil keys sealing-new --out sealing.key" in s.text
        and "offline computer" in s.text
        and "vigil keys sealing-import sealing.key.pub" in s.text
    }
    assert warned == {"coo", "ada"}
    again = net.send("rana", "/report again")
    assert not [s for s in again if "sealing-new" in s.text]  # once a day
    assert "cannot be stored safely" in net.say("rana", "/report")  # the wizard too
    assert report_rows(net) == []
    assert all("SENTINEL-NOKEY" not in s.text for s in net.outbox())

    urgent = net.send("rana", "/urgent They took him")
    (alert,) = [s for s in urgent if s.chat == "coo" and "URGENT" in s.text]
    assert alert.priority == Priority.EMERGENCY and "They took him" in alert.text
    assert "could not be archived" in to(urgent, "rana")[-1].text
    assert rows(net, "SELECT report_id FROM urgent_alerts") == [(None,)]
    assert report_rows(net) == []


def test_a_swapped_public_key_is_refused(net: ChatHarness) -> None:
    net.say("rana", "/report first")  # pins the key
    net.services.sealing_public = crypto.sealing_keypair().public
    sent = net.send("rana", "/report second")
    assert "cannot be stored safely" in to(sent, "rana")[0].text
    assert any("not the one this network recorded" in s.text for s in sent if s.chat == "ada")
    assert len(report_rows(net)) == 1


# --- emergencies ---------------------------------------------------------------------------


def test_urgent_is_resent_until_acknowledged(net: ChatHarness) -> None:
    unassign(net, "coo", "nasrin")
    net.member("c1", "coordinator", coordinates=("nasrin",))
    net.member("c2", "coordinator", coordinates=("nasrin",))
    sent = net.send("rana", "/urgent Hunger strike since Monday")
    alerts = [s for s in sent if s.chat in ("c1", "c2")]
    assert {s.chat for s in alerts} == {"c1", "c2"}
    assert all(s.priority == Priority.EMERGENCY for s in alerts)
    assert alerts[0].choices == [["I'm on it", "/ack 1"]]
    (rep,) = report_rows(net)
    assert rep.urgent and rep.source == "urgent"

    clock = net.clock
    clock.advance(5 * 60)
    assert net.run(h.resend_unacked, clock()) == 0
    clock.advance(5 * 60 + 1)
    mark = net.last_id()
    assert net.run(h.resend_unacked, clock()) == 2
    assert net.run(h.resend_unacked, clock()) == 0  # the same minute again: nothing twice
    reminders = net.outbox(mark)
    assert all(r.priority == Priority.EMERGENCY and "/ack 1" in r.text for r in reminders)
    assert all("Hunger strike" not in r.text for r in reminders)
    for _ in range(2):
        clock.advance(10 * 60 + 1)
        assert net.run(h.resend_unacked, clock()) == 2
    clock.advance(10 * 60 + 1)
    assert net.run(h.resend_unacked, clock()) == 0  # now every 30 minutes
    clock.advance(20 * 60)
    assert net.run(h.resend_unacked, clock()) == 2

    ack = net.send("c1", "/ack 1")
    assert "Acknowledged" in to(ack, "c1")[0].text
    assert "acknowledged by another coordinator" in to(ack, "c2")[0].text
    seen = to(ack, "rana")[0]
    assert "has seen your emergency" in seen.text and seen.priority == Priority.EMERGENCY
    pending = rows(
        net, "SELECT count(*) FROM outbox WHERE idem_key LIKE 'urgent:1:r%' AND state='pending'"
    )
    assert pending == [(0,)]  # queued reminders were withdrawn
    clock.advance(DAY)
    assert net.run(h.resend_unacked, clock()) == 0
    assert "already acknowledged" in net.say("c2", "/ack 1")
    assert rows(net, "SELECT reporter_id FROM urgent_alerts") == [(None,)]
    assert net.say("act", "/ack 1") == UNKNOWN


def test_unacknowledged_urgent_stops_after_three_days(net: ChatHarness) -> None:
    net.say("rana", "/urgent Disappeared")
    net.clock.advance(3 * DAY)
    mark = net.last_id()
    net.run(h.resend_unacked, net.clock())
    told = {s.chat for s in net.outbox(mark) if "never acknowledged" in s.text}
    assert told == {"coo", "ada"}
    net.clock.advance(DAY)
    assert net.run(h.resend_unacked, net.clock()) == 0


def test_urgent_without_text_asks_for_it(net: ChatHarness) -> None:
    (ask,) = [s for s in net.send("rana", "/urgent") if s.chat == "rana"]
    assert "What happened" in ask.text
    # Never offer a choice that is refused: the question cannot be skipped, so no Skip button.
    assert all(value != "/skip" for _label, value in ask.body.get("choices", []))
    assert "Skip" not in ask.text
    assert "cannot be skipped" in net.say("rana", "/skip")
    sent = net.send("rana", "Taken to an unknown place")
    assert any(s.chat == "coo" and "unknown place" in s.text for s in sent)


# --- not forgotten ---------------------------------------------------------------------------


def test_checkin_prompts_once_per_silence(net: ChatHarness) -> None:
    clock = net.clock
    clock.advance(13 * DAY)
    assert net.run(h.checkin_due, clock()) == 0
    clock.advance(DAY + 60)
    mark = net.last_id()
    assert net.run(h.checkin_due, clock()) > 0
    sent = net.outbox(mark)
    family = [s for s in sent if s.chat == "rana"]
    assert len(family) == 1 and "Any news from Nasrin S." in family[0].text
    assert family[0].choices == [["Send news", "/report nasrin"]]
    assert any(s.chat == "coo" and "No news about Nasrin S." in s.text for s in sent)
    assert any(s.chat == "bo" and "Ales B." in s.text for s in sent)
    assert net.run(h.checkin_due, clock()) == 0  # idempotent

    net.say("rana", "/report All fine")  # a report restarts the count
    clock.advance(10 * DAY)
    mark = net.last_id()
    net.run(h.checkin_due, clock())
    assert not [s for s in net.outbox(mark) if s.chat == "rana"]
    clock.advance(4 * DAY + 60)
    mark = net.last_id()
    net.run(h.checkin_due, clock())
    assert len([s for s in net.outbox(mark) if s.chat == "rana"]) == 1
    clock.advance(14 * DAY)  # a second silent period asks once more
    mark = net.last_id()
    net.run(h.checkin_due, clock())
    assert len([s for s in net.outbox(mark) if s.chat == "rana"]) == 1


def test_checkin_respects_interval_and_released_cases(net: ChatHarness) -> None:
    net.say("coo", "/editcase nasrin checkin_days 0")
    net.say("coo", "/editcase ales status released")
    net.clock.advance(100 * DAY)
    assert net.run(h.checkin_due, net.clock()) == 0
    net.say("coo", "/editcase nasrin checkin 3")
    assert net.run(h.checkin_due, net.clock()) > 0


# --- publishing ------------------------------------------------------------------------------


def test_publish_needs_text_and_calls_the_alert_hook(
    net: ChatHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[int, int]] = []
    from handlers.reports import commands as report_commands

    monkeypatch.setattr(
        report_commands, "on_case_update_published", lambda ctx, c, u: calls.append((c, u))
    )
    net.say("rana", "/report Private: he was beaten")
    assert "Write the public text yourself" in net.say("coo", "/publish 1")
    reply = net.say("coo", "/publish 1 health+torture: He needs a doctor. Write to the prison.")
    assert "update #1" in reply and "followers are being alerted" in reply
    update = net.run(case_store.get_update, 1)
    assert update.kind == "health" and update.flags == ("torture",)
    assert update.text == "He needs a doctor. Write to the prison."
    assert calls == [(update.case_id, 1)]
    assert net.run(reports.get, 1).published_update_id == 1
    assert "He needs a doctor" in net.say("rana", "/case nasrin")
    assert "invisible" in net.say("coo", "/publish 1 evil\u202etext")
    assert "published" in net.say("coo", "/reports nasrin")


async def test_the_app_scheduler_runs_the_reports_jobs(store) -> None:
    from bot.app import default_registry
    from bot.scheduler import Scheduler

    registry = default_registry()
    s = Scheduler(store.db, lambda: None, jobs=registry.jobs)
    s.start()
    try:
        every = {j.id: j.trigger.interval.total_seconds() for j in s.aps.get_jobs()}
    finally:
        s.stop()
    assert every["reports-urgent"] == 60 and every["reports-checkin"] == 900
