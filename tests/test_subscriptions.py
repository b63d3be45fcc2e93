"""Following cases and case alerts: /subscribe, /unsubscribe, /subscriptions, /update, the
published-update hook, quiet hours, opt-outs with content notes, and the daily digest."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from bot.messages import Priority
from handlers import broadcasts as engine
from handlers import subscriptions as alerts
from handlers.subscriptions import on_case_update_published
from storage import cases, members
from tests.harness import ChatHarness


def alerts_to(chat: ChatHarness, who: str, since: int = 0) -> list[Any]:
    return [s for s in chat.outbox(since, chat=who) if s.priority in (0, 2)]


def network(chat: ChatHarness) -> None:
    chat.case("ales", "Ales B.")
    chat.case("nasrin", "Nasrin S.", visibility="restricted")
    chat.member("cora", "coordinator", coordinates=("ales", "nasrin"))
    chat.member("ann")
    chat.member("bob")
    chat.member("rana", "family", family_of=("nasrin",))


def test_subscribe_unsubscribe_and_all(chat: ChatHarness) -> None:
    network(chat)
    menu = chat.send("ann", "/subscribe")[0]
    assert ["Ales B.", "/subscribe ales"] in menu.choices
    assert ["Nasrin S.", "/subscribe nasrin"] not in menu.choices  # restricted: not offered
    assert "alerts as they happen" in chat.say("ann", "/subscribe ales")
    assert "already follow" in chat.say("ann", "/subscribe ALES")
    assert "daily digest" in chat.say("ann", "/subscribe ales digest")
    assert "You no longer follow Ales B." in chat.say("ann", "/unsubscribe ales")
    assert "were not following" in chat.say("ann", "/unsubscribe ales")
    # Following all, then leaving one case out of it.
    chat.say("bob", "/subscribe all")
    assert "still follow all other cases" in chat.say("bob", "/unsubscribe ales")
    overview = chat.say("bob", "/subscriptions")
    assert "all cases — instant alerts" in overview and "not Ales B." in overview
    assert "no longer follow any case" in chat.say("bob", "/unsubscribe all")
    assert "do not follow any case" in chat.say("bob", "/subscriptions")


def test_restricted_case_reads_the_same_as_missing(chat: ChatHarness) -> None:
    network(chat)
    denied = chat.say("ann", "/subscribe nasrin")
    missing = chat.say("ann", "/subscribe nobody")
    assert denied == missing and "was found, or you may not see it" in denied
    assert "alerts as they happen" in chat.say("rana", "/subscribe nasrin")  # a relative may


def test_update_alerts_instant_followers_only(chat: ChatHarness) -> None:
    network(chat)
    chat.say("ann", "/subscribe ales")
    chat.say("bob", "/subscribe ales digest")
    rows = chat.send("cora", "/update ales hearing: The hearing moved to Monday 10:00.")
    to_ann = [r for r in rows if r.chat == "ann"]
    assert len(to_ann) == 1 and to_ann[0].priority == Priority.ALERT
    assert to_ann[0].text.startswith("Ales B. — hearing")
    assert "Monday 10:00" in to_ann[0].text and "/case ales" in to_ann[0].text
    assert not [r for r in rows if r.chat == "bob"]  # the digest will carry it
    reply = next(r.text for r in rows if r.chat == "cora")
    assert "Followers to be alerted: 2" in reply and "/cancel" in reply
    # The update itself is stored as a public case update.
    latest = chat.run(lambda c: cases.latest_updates(c, cases.by_slug(c, "ales").id))
    assert latest[0].kind == "hearing" and "Monday" in latest[0].text


def test_update_is_for_coordinators_of_the_case(chat: ChatHarness) -> None:
    network(chat)
    assert "don't know that command" in chat.say("ann", "/update ales hello")
    chat.member("other", "coordinator")
    chat.member("own", "coordinator", coordinates=("ales",))
    # Once a case has assigned coordinators, the others get the uniform not-found answer.
    assert "may not see it" in chat.say("other", "/update ales Hello")
    assert "Update posted" in chat.say("own", "/update ales Hello")


def test_content_note_and_opt_out(chat: ChatHarness) -> None:
    network(chat)
    for who in ("ann", "bob"):
        chat.say(who, "/subscribe ales")
    assert "will not get updates about torture" in chat.say("bob", "/subscriptions hide torture")
    rows = chat.send("cora", "/update ales transfer+torture: Moved; he reports beatings.")
    ann = [r.text for r in rows if r.chat == "ann"]
    assert len(ann) == 1 and "Content note: torture or ill-treatment." in ann[0]
    assert not [r for r in rows if r.chat == "bob"]
    # Health updates carry a note on their own kind.
    rows = chat.send("cora", "/update ales health: Needs medication.")
    assert "Content note: health." in next(r.text for r in rows if r.chat == "bob")
    assert "again, with a content note" in chat.say("bob", "/subscriptions show torture")


def test_quiet_hours_hold_alerts_until_morning_in_the_members_zone(chat: ChatHarness) -> None:
    network(chat)
    chat.say("ann", "/subscribe ales")
    chat.say("ann", "/timezone Asia/Tehran")
    chat.say("ann", "/quiet 22-7")
    # 23:30 in Tehran.
    tehran = ZoneInfo("Asia/Tehran")
    chat.clock.now = datetime(2026, 10, 1, 23, 30, tzinfo=tehran).timestamp()
    mark = chat.last_id()
    chat.say("cora", "/update ales verdict: Sentenced to 5 years.")
    row = chat.run(
        lambda c: c.execute(
            "SELECT not_before FROM outbox WHERE id > ? AND chat = 'ann'", (mark,)
        ).fetchone()
    )
    assert datetime.fromtimestamp(row[0], tehran) == datetime(2026, 10, 2, 7, 0, tzinfo=tehran)
    # An urgent update goes at once, quiet hours or not.
    mark = chat.last_id()
    chat.say("cora", "/update ales urgent: Taken to hospital, call the prosecutor now.")
    urgent = chat.run(
        lambda c: c.execute(
            "SELECT not_before, priority FROM outbox WHERE id > ? AND chat = 'ann'", (mark,)
        ).fetchone()
    )
    assert urgent == (0.0, Priority.EMERGENCY)


def test_restricted_case_alerts_reach_only_those_who_may_see_it(chat: ChatHarness) -> None:
    network(chat)
    chat.say("ann", "/subscribe all")
    chat.say("rana", "/subscribe all")
    rows = chat.send("cora", "/update nasrin Family visit allowed.")
    assert {r.chat for r in rows if r.priority == Priority.ALERT} == {"rana"}


def test_published_hook_alerts_once_per_update(chat: ChatHarness) -> None:
    network(chat)
    chat.say("ann", "/subscribe ales")
    hook = on_case_update_published

    def publish(conn: Any) -> int:
        case = cases.by_slug(conn, "ales")
        update_id = cases.add_update(conn, case.id, "Letters arrive again.", now=chat.clock())
        from bot.context import Context
        from bot.i18n import Translator
        from tests.harness import Incoming

        cora = members.by_address(conn, "console", "cora")
        ctx = Context(
            conn, Incoming("console", "cora", "cora", "k"), cora, chat.services, chat.clock(),
            Translator("en"),
        )  # fmt: skip
        hook(ctx, case.id, update_id)
        hook(ctx, case.id, update_id)  # a retry of /publish
        return update_id

    mark = chat.last_id()
    chat.run(publish)
    texts = [s.text for s in chat.outbox(mark, chat="ann")]
    assert len(texts) == 1 and "Letters arrive again." in texts[0]


def test_update_wizard(chat: ChatHarness) -> None:
    network(chat)
    chat.say("ann", "/subscribe ales")
    first = chat.send("cora", "/update")[0]
    assert ["Ales B.", "/update ales"] in first.choices
    kinds = chat.send("cora", "/update ales")[0]
    assert ["hearing", "/update ales hearing:"] in kinds.choices
    assert "Send the text" in chat.say("cora", "/update ales hearing:")
    rows = chat.send("cora", "Hearing on 3 November, court 12.")
    assert any(r.chat == "ann" and "3 November" in r.text for r in rows)


def test_big_alert_streams_in_chunks(chat: ChatHarness) -> None:
    network(chat)
    n = engine.CHUNK * 2 + 10

    def seed(conn: Any) -> None:
        case = cases.by_slug(conn, "ales")
        for i in range(n):
            m = members.create(
                conn, role="activist", transport="console", address=f"s{i}", chat=f"s{i}", now=0
            )
            conn.execute(
                "INSERT INTO subscriptions (case_id, member_id, mode, created_at) "
                "VALUES (?, ?, 'instant', 0)",
                (case.id, m.id),
            )

    chat.run(seed)
    mark = chat.last_id()
    chat.say("cora", "/update ales release: Released today!")
    first = [s for s in chat.outbox(mark) if s.priority == Priority.ALERT]
    assert len(first) == engine.CHUNK  # one chunk in the coordinator's transaction
    while chat.run(engine.refill, chat.clock(), "console"):
        pass
    every = [s for s in chat.outbox(mark) if s.priority == Priority.ALERT]
    assert len(every) == n and len({s.chat for s in every}) == n


def test_daily_digest(chat: ChatHarness) -> None:
    network(chat)
    chat.clock.now = datetime(2026, 10, 1, 12, 0, tzinfo=UTC).timestamp()
    chat.say("bob", "/subscribe all digest")
    chat.say("bob", "/subscriptions hide health")
    chat.clock.advance(60)
    chat.say("cora", "/update ales hearing: Hearing on Friday.")
    chat.say("cora", "/update ales health: Weak after the hunger strike.")
    chat.say("cora", "/update ales action: Write to the prosecutor.")
    chat.clock.advance(3600)
    assert chat.run(alerts.digest_tick, chat.clock(), "console") is False  # not 09:00 yet
    chat.clock.now = datetime(2026, 10, 2, 9, 0, 5, tzinfo=UTC).timestamp()
    mark = chat.last_id()
    assert chat.run(alerts.digest_tick, chat.clock(), "console") is True
    digest = chat.outbox(mark, chat="bob")
    assert len(digest) == 1
    text = digest[0].text
    assert "Your daily digest: 2 updates." in text
    assert "Friday" in text and "prosecutor" in text and "hunger strike" not in text
    # Nothing twice: the next tick and the next day bring nothing new.
    assert chat.run(alerts.digest_tick, chat.clock(), "console") is False
    chat.clock.advance(86400)
    assert chat.run(alerts.digest_tick, chat.clock(), "console") is False
    assert len(chat.outbox(mark, chat="bob")) == 1


def test_quiet_hours_math_across_midnight_and_dst() -> None:
    # 22-7 in Europe/Berlin on the night the clocks go back (25 Oct 2026).
    berlin = ZoneInfo("Europe/Berlin")
    night = datetime(2026, 10, 24, 23, 0, tzinfo=berlin).timestamp()
    until = engine.quiet_until("22-07", "Europe/Berlin", night)
    assert datetime.fromtimestamp(until, berlin) == datetime(2026, 10, 25, 7, 0, tzinfo=berlin)
    day = datetime(2026, 10, 24, 12, 0, tzinfo=berlin).timestamp()
    assert engine.quiet_until("22-07", "Europe/Berlin", day) == 0
    assert engine.quiet_until("9-17", "Europe/Berlin", day) > day
    assert engine.quiet_until("nonsense", "Europe/Berlin", day) == 0
