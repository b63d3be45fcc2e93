"""Broadcasts through the real router and store: preview, /confirm, segments, streaming fan-out,
progress edited in place (or new lines where edits are impossible), /cancel, the summary."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bot.messages import Priority
from handlers import broadcasts as engine
from storage import audience, broadcasts, cases, members, outbox
from tests.harness import ChatHarness


def network(chat: ChatHarness) -> None:
    chat.case("ales", "Ales B.")
    chat.member("cora", "coordinator", coordinates=("ales",))
    chat.member("ann")
    chat.member("bob", language="ru")
    chat.member("rana", "family", family_of=("ales",))


def bulk(chat: ChatHarness, since: int = 0) -> list[Any]:
    return [s for s in chat.outbox(since) if s.priority == Priority.BULK]


def deliver_all(chat: ChatHarness, state: str = "sent") -> None:
    """Play the dispatcher: finish every pending bulk row."""

    def go(conn: Any) -> None:
        rows = conn.execute(
            "SELECT id FROM outbox WHERE state = 'pending' AND priority = 3 AND not_before <= ?",
            (chat.clock(),),
        ).fetchall()
        for (item_id,) in rows:
            conn.execute("UPDATE outbox SET state = 'sending' WHERE id = ?", (item_id,))
            if state == "sent":
                outbox.mark_sent(conn, item_id, "1", chat.clock())
            else:
                outbox.finish(conn, item_id, state, "blocked", chat.clock())

    chat.run(go)


def latest(chat: ChatHarness) -> broadcasts.Broadcast:
    bid = chat.run(lambda c: c.execute("SELECT max(id) FROM broadcasts").fetchone()[0])
    b = chat.run(broadcasts.get, bid)
    assert b is not None
    return b


EDITS = frozenset({"console"})  # play a transport that edits messages in place


def test_preview_then_confirm(chat: ChatHarness) -> None:
    network(chat)
    preview = chat.send("cora", "/broadcast all Vigil tonight at 19:00, main square.")[0]
    assert "to everyone: 4 people (4 messages)" in preview.text
    assert "Vigil tonight" in preview.text
    assert ["Send it", f"/confirm {latest(chat).id}"] in preview.choices
    assert bulk(chat) == []  # nothing goes before /confirm
    mark = chat.last_id()
    rows = chat.send("cora", "/confirm")
    progress = [r for r in rows if r.chat == "cora" and r.priority == Priority.REPLY]
    assert "Sending broadcast" in progress[0].text and "4 to go" in progress[0].text
    sent = bulk(chat, mark)
    assert sorted(s.chat for s in sent) == ["ann", "bob", "cora", "rana"]
    assert {s.text for s in sent} == {"Vigil tonight at 19:00, main square."}
    assert "no broadcast of yours waiting" in chat.say("cora", "/confirm")


def test_only_coordinators_broadcast(chat: ChatHarness) -> None:
    network(chat)
    assert "don't know that command" in chat.say("ann", "/broadcast all hi")
    assert "don't know that command" in chat.say("ann", "/confirm")
    # /cancel ID from someone else is the plain /cancel answer, revealing nothing.
    chat.say("cora", "/broadcast all hi")
    bid = latest(chat).id
    assert "Send /cancel on its own" in chat.say("ann", f"/cancel {bid}")
    assert latest(chat).state == broadcasts.DRAFT


def test_segments(chat: ChatHarness) -> None:
    network(chat)
    chat.say("ann", "/subscribe ales")
    assert "4 people" in chat.say("cora", "/broadcast all x")
    assert "2 people" in chat.say("cora", "/broadcast role:activists x")
    assert "1 person (1 message)" in chat.say("cora", "/broadcast role:family x")
    assert "1 person" in chat.say("cora", "/broadcast lang:ru x")
    # A case: its followers, its relatives and its coordinators.
    assert "followers and relatives of Ales B.: 3 people" in chat.say(
        "cora", "/broadcast case:ales x"
    )
    assert "Nobody can be reached" in chat.say("cora", "/broadcast lang:fa x")
    assert "SEGMENT is one of" in chat.say("cora", "/broadcast everybody x")
    assert "SEGMENT is one of" in chat.say("cora", "/broadcast all")
    assert "was found, or you may not see it" in chat.say("cora", "/broadcast case:nobody x")
    assert "at most 4000 characters" in chat.say("cora", "/broadcast all " + "x" * 4001)


def test_one_message_per_person_on_the_identity_they_use_unreachable_none(
    chat: ChatHarness,
) -> None:
    network(chat)

    def second_identity(conn: Any) -> None:
        ann = members.by_address(conn, "console", "ann")
        conn.execute(
            "INSERT INTO identities (transport, address, member_id, chat, created_at) "
            "VALUES ('signal', 'ann-uuid', ?, 'ann-uuid', 0)",
            (ann.id,),
        )
        members.mark_unreachable(conn, "console", "bob")

    chat.run(second_identity)
    assert "3 people (3 messages)" in chat.say("cora", "/broadcast all x")
    mark = chat.last_id()
    chat.say("cora", "/confirm")
    # Ann has two apps: the message goes to the one she wrote from last, not to both.
    assert sorted((s.transport, s.chat) for s in bulk(chat, mark)) == [
        ("console", "ann"), ("console", "cora"), ("console", "rana"),
    ]  # fmt: skip


def test_streaming_fan_out_and_resume_from_cursor(chat: ChatHarness) -> None:
    network(chat)
    n = engine.CHUNK * 3 + 7

    def seed(conn: Any) -> None:
        for i in range(n):
            members.create(
                conn, role="activist", transport="console", address=f"s{i}", chat=f"s{i}", now=0
            )

    chat.run(seed)
    chat.say("cora", "/broadcast all Letters evening")
    mark = chat.last_id()
    chat.say("cora", "/confirm")
    assert len(bulk(chat, mark)) == engine.CHUNK
    b = latest(chat)
    assert b.cursor > 0 and not b.exhausted and b.materialised == engine.CHUNK
    # The producer writes the rest a chunk at a time; calling it again changes nothing.
    while chat.run(engine.refill, chat.clock(), "console"):
        pass
    chat.run(engine.refill, chat.clock(), "console")
    rows = bulk(chat, mark)
    assert len(rows) == n + 4 and len({r.chat for r in rows}) == n + 4
    b = latest(chat)
    assert b.exhausted and b.materialised == n + 4


def test_progress_edits_in_place_and_final_summary(chat: ChatHarness) -> None:
    network(chat)
    chat.say("cora", "/broadcast all Hearing tomorrow 10:00")
    chat.say("cora", "/confirm")
    b = latest(chat)
    progress_id = b.progress_id
    chat.clock.advance(engine.PROGRESS_EVERY)
    deliver_all(chat)
    mark = chat.last_id()
    chat.run(engine.progress, chat.clock(), "console", EDITS)
    rows = chat.outbox(mark, chat="cora")
    edits = [r for r in rows if r.body.get("kind") == "edit"]
    assert edits and all(r.body["target"] == progress_id for r in edits)
    summary = [r for r in rows if r.body.get("kind") is None]
    assert len(summary) == 1 and "finished: 4 sent, 0 not delivered" in summary[0].text
    assert latest(chat).state == broadcasts.DONE
    chat.run(engine.progress, chat.clock(), "console", EDITS)
    assert len(chat.outbox(mark, chat="cora")) == len(rows)  # the summary is written once


def test_progress_edits_coalesce_while_pending(chat: ChatHarness) -> None:
    network(chat)

    def seed(conn: Any) -> None:
        for i in range(20):
            members.create(
                conn, role="activist", transport="console", address=f"s{i}", chat=f"s{i}", now=0
            )

    chat.run(seed)
    chat.say("cora", "/broadcast all x")
    chat.say("cora", "/confirm")
    mark = chat.last_id()
    for _ in range(3):
        # one more message delivered each time, edit rows never claimed in between
        chat.run(lambda c: c.execute(
            "UPDATE outbox SET state = 'sending' WHERE id = (SELECT min(id) FROM outbox "
            "WHERE state = 'pending' AND priority = 3)"
        ))  # fmt: skip
        chat.run(lambda c: outbox.mark_sent(
            c, c.execute("SELECT id FROM outbox WHERE state = 'sending'").fetchone()[0], "1", 0
        ))  # fmt: skip
        chat.clock.advance(engine.PROGRESS_EVERY)
        chat.run(engine.progress, chat.clock(), "console", EDITS)
    edits = [r for r in chat.outbox(mark, chat="cora") if r.body.get("kind") == "edit"]
    assert len(edits) == 1 and "3 sent" in edits[0].text


def test_progress_as_new_lines_where_edits_are_impossible(chat: ChatHarness) -> None:
    network(chat)
    chat.say("cora", "/broadcast all x")
    chat.say("cora", "/confirm")
    chat.run(lambda c: c.execute(
        "UPDATE outbox SET state = 'sent' WHERE id = (SELECT min(id) FROM outbox "
        "WHERE priority = 3)"
    ))  # fmt: skip
    chat.run(lambda c: c.execute("UPDATE broadcasts SET sent_count = 1"))
    mark = chat.last_id()
    chat.clock.advance(engine.PROGRESS_EVERY)
    chat.run(engine.progress, chat.clock(), "console")
    assert chat.outbox(mark, chat="cora") == []  # too soon for a new line
    chat.clock.advance(engine.PROGRESS_LINE_EVERY)
    chat.run(engine.progress, chat.clock(), "console")
    lines = chat.outbox(mark, chat="cora")
    assert len(lines) == 1 and "1 sent" in lines[0].text and "kind" not in lines[0].body


def test_cancel_running_and_drafts(chat: ChatHarness) -> None:
    network(chat)
    chat.say("cora", "/broadcast all First")
    bid = latest(chat).id
    assert "dropped; nothing was sent" in chat.say("cora", f"/cancel {bid}")
    assert "no broadcast of yours waiting" in chat.say("cora", f"/confirm {bid}")
    chat.say("cora", "/broadcast all Second")
    chat.say("cora", "/confirm")
    bid = latest(chat).id
    assert f"Stopped #{bid}: 4 messages will not be sent" in chat.say("cora", f"/cancel {bid}")
    assert "already finished" in chat.say("cora", f"/cancel {bid}")
    mark = chat.last_id()
    chat.run(engine.progress, chat.clock(), "console")
    summary = chat.outbox(mark, chat="cora")
    assert "was cancelled: 0 sent before it stopped, 4 not sent" in summary[-1].text
    assert "no broadcast or alert" in chat.say("cora", "/cancel 999")


def test_draft_expires_after_an_hour(chat: ChatHarness) -> None:
    network(chat)
    chat.say("cora", "/broadcast all Old news")
    chat.clock.advance(engine.DRAFT_TTL + 1)
    assert "no broadcast of yours waiting" in chat.say("cora", "/confirm")
    chat.run(engine.progress, chat.clock(), "console")
    assert latest(chat).state == broadcasts.EXPIRED


def test_quiet_hours_hold_and_failures_in_summary(chat: ChatHarness) -> None:
    network(chat)
    chat.clock.now = datetime(2026, 10, 1, 23, 0, tzinfo=UTC).timestamp()
    chat.say("ann", "/quiet 22-7")
    chat.say("cora", "/broadcast all Court at 9")
    chat.say("cora", "/confirm")
    deliver_all(chat, state="failed")  # the three that are due: blocked
    chat.clock.advance(engine.PROGRESS_EVERY)
    mark = chat.last_id()
    chat.run(engine.progress, chat.clock(), "console", EDITS)
    rows = chat.outbox(mark, chat="cora")
    assert "1 wait for their quiet hours to end" in rows[-1].text
    assert latest(chat).finished_at is None  # not finished while someone waits
    chat.clock.now = datetime(2026, 10, 2, 7, 0, 1, tzinfo=UTC).timestamp()
    deliver_all(chat)
    mark = chat.last_id()
    chat.run(engine.progress, chat.clock(), "console", EDITS)
    summary = [r.text for r in chat.outbox(mark, chat="cora") if "kind" not in r.body]
    assert summary == ["Broadcast #1 finished: 1 sent, 3 not delivered."]


def test_case_segment_count_matches_the_fan_out(chat: ChatHarness) -> None:
    """The preview's count (one SQL query) and the fan-out (chunks) apply the same rules:
    'all' followers, 'off' for one case, relatives, restricted visibility, unreachable ids."""
    chat.case("ales", "Ales B.")
    chat.case("nasrin", "Nasrin S.", visibility="restricted")
    chat.member("cora", "coordinator", coordinates=("ales", "nasrin"))
    for i in range(30):
        who = f"m{i}"
        chat.member(who, "family" if i % 7 == 0 else "activist",
                    family_of=("nasrin",) if i % 7 == 0 else ())  # fmt: skip
        if i % 2:
            chat.say(who, "/subscribe all")
        if i % 3 == 0:
            chat.say(who, "/subscribe ales digest")
        if i % 5 == 0:
            chat.say(who, "/unsubscribe ales")
    chat.run(lambda c: members.mark_unreachable(c, "console", "m9"))
    for slug in ("ales", "nasrin"):
        segment = f"case:{chat.run(lambda c, s=slug: cases.by_slug(c, s).id)}"
        people, messages = chat.run(audience.count, segment)
        rows, _, done = chat.run(audience.chunk, segment, 0, 1000)
        reached = [r for r in rows if r.transport is not None]
        assert done and (people, messages) == (len({r.member_id for r in reached}), len(reached))
        assert people > 0
