"""Regressions of the flow engine found in review, each replayed as the person who hit it."""

from __future__ import annotations

import pytest

from bot.router import CommandRateLimiter
from storage import crypto
from tests.harness import ChatHarness


@pytest.fixture
def net(chat: ChatHarness) -> ChatHarness:
    chat.router.limiter = CommandRateLimiter(rate_per_minute=100_000, burst=100_000)
    chat.services.sealing_public = crypto.sealing_keypair().public
    chat.case("nasrin", "Nasrin S.", "restricted")
    chat.member("coo", "coordinator", coordinates=("nasrin",))
    chat.member("rana", "family", family_of=("nasrin",))
    return chat


def _flows_of(net: ChatHarness, who: str) -> int:
    mid = net.members[who]
    return net.run(
        lambda c: c.execute(
            "SELECT count(*) FROM conversations WHERE member_id = ?", (mid,)
        ).fetchone()[0]
    )


def test_unlinked_mid_wizard_the_last_step_ends_the_flow_instead_of_sticking(
    net: ChatHarness,
) -> None:
    """Before: the handler ended the flow and then raised a user error, so the end was rolled
    back with the error — after a relative was unlinked mid-wizard, /skip at the last step
    answered "No case…" on every try and the draft stayed for good."""
    net.say("rana", "/report")
    for answer in ["/pick kind visit", "/skip", "/skip", "/skip", "/skip", "/skip"]:
        net.say("rana", answer)
    assert _flows_of(net, "rana") == 1
    rid = net.members["rana"]
    net.run(lambda c: c.execute("DELETE FROM case_members WHERE member_id = ?", (rid,)))

    first = net.say("rana", "/skip")
    assert "No case" in first
    assert _flows_of(net, "rana") == 0  # the flow ended together with the error
    assert "No case" not in net.say("rana", "/skip")  # a second try is not the same dead end
    assert net.run(lambda c: c.execute("SELECT count(*) FROM reports").fetchone()[0]) == 0
