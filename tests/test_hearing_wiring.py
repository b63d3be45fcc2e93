"""A court date set on a case sheet becomes a court-hearing action, and release cancels it."""

from __future__ import annotations

from tests.harness import ChatHarness


def open_hearing_actions(chat: ChatHarness) -> int:
    return chat.run(
        lambda c: c.execute(
            "SELECT count(*) FROM actions WHERE kind = 'hearing' AND state = 'active'"
        ).fetchone()[0]
    )


def test_hearing_date_schedules_and_release_cancels(chat: ChatHarness) -> None:
    chat.case("ales", "Ales B.")
    chat.member("coo", "coordinator", coordinates=("ales",))
    reply = chat.say("coo", "/editcase ales next_hearing 2026-12-01T10:00")
    assert "Court-hearing action" in reply
    assert open_hearing_actions(chat) == 1
    chat.say("coo", "/editcase ales next_hearing 2026-12-02T10:00")  # moved, not duplicated
    assert open_hearing_actions(chat) == 1
    chat.say("coo", "/editcase ales status released")
    assert open_hearing_actions(chat) == 0
