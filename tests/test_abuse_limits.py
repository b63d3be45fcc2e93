"""Abuse limits: per-sender command rate, invite brute force, message length, and the size and
number of attachments a message may bring in."""

from __future__ import annotations

import asyncio
import dataclasses

from bot.app import App
from bot.config import Settings
from bot.messages import MAX_TEXT_CHARS, Attachment, Incoming
from bot.router import CommandRateLimiter, Router
from storage import crypto
from tests.fakes.memory_transport import MemoryTransport
from tests.harness import ChatHarness


def test_flood_gets_one_warning_then_silence_then_recovers(chat: ChatHarness) -> None:
    chat.member("ann")
    replies = [chat.say("ann", "/help") for _ in range(40)]
    assert sum("Too many messages" in r for r in replies) == 1
    assert replies[-1] == ""
    handled = chat.run(lambda c: c.execute("SELECT count(*) FROM inbox").fetchone()[0])
    assert handled == 40  # a throttled message is still recorded: a replay changes nothing
    chat.clock.advance(60)
    assert "What you can do" in chat.say("ann", "/help")


def test_one_flooder_does_not_silence_others(chat: ChatHarness) -> None:
    chat.member("ann")
    chat.member("bob")
    for _ in range(40):
        chat.say("ann", "/help")
    assert "What you can do" in chat.say("bob", "/help")


def test_the_limiter_is_per_transport_identity_and_bounded() -> None:
    limiter = CommandRateLimiter(rate_per_minute=30, burst=2)
    assert limiter.allow("telegram", "1", 0.0) == (True, False)
    assert limiter.allow("telegram", "1", 0.0) == (True, False)
    assert limiter.allow("telegram", "1", 0.0) == (False, True)
    assert limiter.allow("telegram", "1", 0.0) == (False, False)  # warned once
    assert limiter.allow("signal", "1", 0.0) == (True, False)  # another identity
    for i in range(100_001):  # a flood of fresh senders cannot grow memory without bound
        limiter.allow("telegram", f"s{i}", 0.0)
        limiter.allow("telegram", f"s{i}", 0.0)
        limiter.allow("telegram", f"s{i}", 0.0)
    assert len(limiter._buckets) <= 100_001


def test_invite_brute_force_is_locked_out_and_survives_a_restart(chat: ChatHarness) -> None:
    from handlers.invites import create_invite

    good = chat.run(lambda c: create_invite(
        c, chat.services.index_key, role="activist", case_slug=None, uses=1,
        expires_in=86400, created_by=None, now=chat.clock()))  # fmt: skip
    for i in range(5):
        assert "not valid" in chat.say("mallory", f"/start AAAA-BBBB-CC{i:02d}")
    # A new process (new in-memory limiter): the lock-out is in the database.
    chat.router = Router(chat.services, chat.registry, clock=chat.clock)
    assert "Too many attempts" in chat.say("mallory", f"/start {good}")
    assert "Welcome" in chat.say("alice", f"/start {good}")  # others are not locked out
    rows = chat.run(lambda c: c.execute("SELECT bucket FROM rate_buckets").fetchall())
    assert all("mallory" not in b for (b,) in rows)  # keyed hashes, no address


def test_overlong_messages_are_refused_before_any_parsing(chat: ChatHarness) -> None:
    chat.member("coo", "coordinator")
    assert "too long" in chat.say("coo", "/newcase big " + "x" * MAX_TEXT_CHARS)
    assert chat.run(lambda c: c.execute("SELECT count(*) FROM cases").fetchone()[0]) == 0


@dataclasses.dataclass
class Fetching(MemoryTransport):
    name: str = "console"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.fetched: list[tuple[str, int]] = []

    async def fetch_attachment(self, attachment: Attachment, max_bytes: int) -> bytes | None:
        self.fetched.append((attachment.ref, max_bytes))
        return b"\xff\xd8\xff" + b"0" * 100


def test_attachments_over_size_or_count_are_never_fetched(chat: ChatHarness) -> None:
    chat.case("nasrin", "Nasrin S.")
    chat.member("rana", "family", family_of=("nasrin",))
    transport = Fetching()
    app = App(chat.store, Settings(data_dir=chat.store.data_dir), [transport])
    limit = app.services.max_attachment_bytes
    atts = (
        Attachment("photo", "small-1", "image/jpeg", size=1000),
        Attachment("photo", "huge", "image/jpeg", size=limit + 1),
        *(Attachment("photo", f"small-{i}", "image/jpeg", size=1000) for i in range(2, 8)),
    )
    msg = Incoming(transport="console", sender="rana", chat="rana", key="k1", text="/report x",
                   attachments=atts)  # fmt: skip
    fetched = asyncio.run(app.intake._attachments(msg))
    refs = [ref for ref, _max in transport.fetched]
    assert "huge" not in refs
    assert len(refs) <= app.services.max_attachments
    assert all(m == limit for _r, m in transport.fetched)  # the transport is told the limit
    by_ref = {a.ref: a.data for a in fetched.attachments}
    assert by_ref["huge"] is None
    assert sum(d is not None for d in by_ref.values()) == len(refs)


def attempt(app: App, who: str, text: str, n: int = 5, size: int = 10 * 1024 * 1024) -> Incoming:
    atts = tuple(Attachment("photo", f"{who}-{i}", "image/jpeg", size=size) for i in range(n))
    msg = Incoming(transport="console", sender=who, chat=who, key=f"{who}-{text}", text=text,
                   attachments=atts)  # fmt: skip
    return asyncio.run(app.intake._attachments(msg))


def test_only_a_relative_reporting_gets_attachments_fetched(chat: ChatHarness) -> None:
    chat.case("nasrin", "Nasrin S.")
    chat.member("rana", "family", family_of=("nasrin",))
    chat.member("sam", "activist")
    chat.member("cora", "coordinator", coordinates=("nasrin",))
    transport = Fetching()
    app = App(chat.store, Settings(data_dir=chat.store.data_dir), [transport])
    # A stranger's, a supporter's and a coordinator's 5 x 10 MB, and a relative's chat text:
    for who, text in [("stranger", "hello"), ("sam", "/report x"), ("cora", "look"),
                      ("rana", "just a photo")]:  # fmt: skip
        got = attempt(app, who, text)
        assert all(a.data is None and a.refused == "not now" for a in got.attachments)
    assert transport.fetched == []  # 0 downloads: nothing read before the checks
    got = attempt(app, "rana", "/report nasrin from the visit", n=1, size=1000)
    assert [a.data is not None for a in got.attachments] == [True]


def test_the_daily_attachment_quota_answers_clearly(chat: ChatHarness) -> None:
    chat.case("nasrin", "Nasrin S.")
    chat.member("rana", "family", family_of=("nasrin",))
    transport = Fetching()
    app = App(chat.store, Settings(data_dir=chat.store.data_dir), [transport])
    app.intake.quota.limit = 250  # each fetched file here is 103 bytes
    got = attempt(app, "rana", "/report nasrin one", n=3, size=100)
    assert [a.refused for a in got.attachments] == [None, None, "quota"]


def test_a_report_keeps_at_most_the_allowed_files_and_says_so(chat: ChatHarness) -> None:
    chat.services.sealing_public = crypto.sealing_keypair().public
    chat.case("nasrin", "Nasrin S.")
    chat.member("rana", "family", family_of=("nasrin",))
    n = chat.services.max_attachments
    photo = b"\xff\xd8\xff" + b"1" * 10
    fine = [Attachment("photo", f"p{i}", "image/jpeg", size=10, data=photo) for i in range(n + 2)]
    atts = (*fine, Attachment("photo", "too-big", "image/jpeg", size=10**9, data=None))
    reply = chat.say("rana", "/report nasrin photos from the visit", attachments=atts)
    stored = chat.run(lambda c: c.execute("SELECT count(*) FROM report_attachments").fetchone()[0])
    assert stored == n
    assert "could not be received" in reply and "3 files could not be received" in reply
