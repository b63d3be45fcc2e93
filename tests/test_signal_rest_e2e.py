"""End to end through the real signal-cli-rest-api: `vigil run` as an operator runs it, in front
of `../shared/signal-cli-rest-api/run.sh` (the upstream REST layer and a scripted signal-cli
daemon), started and stopped here on free loopback ports.

The Signal journeys that also run against our fake: joining with the admin code, the numbered
language menu, a replayed envelope, an attachment that never stays on the REST API's disk, the
whole report wizard with numbered menus, an urgent report, a broadcast, the REST layer
restarting mid-conversation and its daemon dropping, and `kill -9` mid-broadcast. Messages are
injected one at a time with the bot's answer awaited (upstream drops frames written back to
back, #834; bench/signal_loss.py measures that). No log line carries a number, UUID or text.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.transports.signal import SignalTransport
from storage import members
from storage.store import unlock
from tests.e2e import VigilProcess, vigil_process
from tests.signal_rest import RealSignal, real_signal_layer, sender_uuid
from tests.test_report_wizard_e2e import (
    CASE_NAME,
    CONDITIONS,
    NEWS,
    SLUG,
    assert_db_files_free_of,
    assert_live_copy,
    check_logs,
    invite_code,
    make_sealing_key,
    number_of,
)

pytestmark = pytest.mark.timeout(240)

WAIT = 20.0  # seconds for one answer; Signal paces a chat to one message every 2 s
ALICE = sender_uuid("e2e alice")  # hides her number
BOB = sender_uuid("e2e bob")
COORDINATOR = sender_uuid("e2e coordinator")
COORDINATOR_NUMBER = "+4915112345678"
RELATIVE = sender_uuid("e2e relative")
WORDS = "sentinel-e2e M9T2: he was moved to the punishment cell"
URGENT = "sentinel-urgent R5V8: no visits since Monday, he is on hunger strike"
_clock = itertools.count(int(time.time() * 1000))


@pytest.fixture
def layer() -> Iterator[RealSignal]:
    with real_signal_layer() as real:
        yield real


def env_for(layer: RealSignal) -> dict[str, str]:
    return {"VIGIL_SIGNAL_API_URL": layer.url, "VIGIL_SIGNAL_NUMBER": layer.number}


def connected(v: VigilProcess, count: int = 1) -> None:
    v.wait_for_log("signal receive stream connected", timeout=20, count=count)


class Chat:
    """People writing to the bot through the real layer, one message at a time."""

    def __init__(self, layer: RealSignal) -> None:
        self.layer = layer

    def say(
        self, who: str, text: str, *, number: str | None = None, first: bool = False, **kw: Any
    ) -> str:
        """`who` writes `text`; returns the bot's next answer. `first`: the stream may have
        just connected, so the same envelope is written again until it is answered (a replay
        of one envelope is handled once)."""
        before = len(self.layer.sent_to(who))
        params = self.layer.user_sends(who, text, number=number, timestamp=next(_clock), **kw)
        deadline = time.monotonic() + WAIT
        resend_at = time.monotonic() + 1.5 if first else float("inf")
        while len(self.layer.sent_to(who)) <= before:
            now = time.monotonic()
            if now > deadline:
                raise AssertionError(f"no answer to {text[:20]!r} within {WAIT} s")
            if now > resend_at:
                self.layer.push(params)
                resend_at = now + 1.5
            time.sleep(0.05)
        return self.layer.sent_to(who)[before]

    def answers(self, who: str, n: int) -> list[str]:
        self.layer.wait_until(lambda: len(self.layer.sent_to(who)) >= n, timeout=WAIT)
        return self.layer.sent_to(who)


def test_joining_menus_replay_and_an_attachment(tmp_path: Path, layer: RealSignal) -> None:
    chat = Chat(layer)
    with vigil_process(tmp_path, env_for(layer)) as v:
        connected(v)
        assert v.admin_code
        assert "administrator" in chat.say(ALICE, f"/start {v.admin_code}", first=True)
        assert "/invite" in chat.say(ALICE, "/help")
        menu = chat.say(ALICE, "/language")  # no buttons on Signal: a numbered menu
        assert "Language set" in chat.say(ALICE, number_of(menu, "English"))

        # The same envelope twice (Signal redelivery, or a replay) is handled once.
        frame = layer.user_sends(ALICE, "/help", timestamp=next(_clock))
        chat.answers(ALICE, 5)
        layer.push(frame)
        assert "did not understand" in chat.say(ALICE, WORDS)
        assert len(layer.sent_to(ALICE)) == 6

        code, _ = v.invite("activist")
        assert "Welcome" in chat.say(BOB, f"/start {code}")
        chat.say(BOB, "", attachments=[("image/jpeg", b"\xff\xd8\xff\xe0" + b"0" * 64)])
        layer.wait_until(lambda: layer.attachment_files() == [], timeout=WAIT)
        assert v.stop() == 0
    v.assert_no_tracebacks()
    v.assert_log_free_of([ALICE, BOB, layer.number, WORDS, v.admin_code or "", code])


def test_report_wizard_urgent_and_broadcast(tmp_path: Path, layer: RealSignal) -> None:
    chat = Chat(layer)
    with vigil_process(tmp_path, env_for(layer), start=False) as v:
        make_sealing_key(v)
        v.start()
        connected(v)
        assert v.admin_code

        def coordinator(text: str, **kw: Any) -> str:
            return chat.say(COORDINATOR, text, number=COORDINATOR_NUMBER, **kw)

        def relative(text: str) -> str:
            return chat.say(RELATIVE, text)

        assert "administrator" in coordinator(f"/start {v.admin_code}", first=True)
        assert "Case created" in coordinator(f"/newcase {SLUG} {CASE_NAME}")
        code = invite_code(coordinator(f"/invite family {SLUG}"))
        assert CASE_NAME in relative(f"/start {code}")

        menu = relative("/report")
        assert "(1 of 7)" in menu
        menu = relative(number_of(menu, "Visit"))
        menu = relative(number_of(menu, "Today"))
        menu = relative(number_of(menu, "Concern"))
        menu = relative(CONDITIONS)
        menu = relative(number_of(menu, "Medicine"))
        menu = relative(number_of(menu, "Done"))
        menu = relative(NEWS)
        assert "(7 of 7)" in menu
        thanks = relative(number_of(menu, "Send the report without a file"))
        assert "report #1" in thanks

        def live(text: str) -> bool:
            return any(text in m for m in layer.sent_to(COORDINATOR))

        layer.wait_until(lambda: live("Report #1 "), timeout=WAIT)
        assert_live_copy(next(m for m in layer.sent_to(COORDINATOR) if "Report #1 " in m))
        assert "Thank you." in relative(number_of(thanks, "Done"))

        # An urgent report reaches the coordinator at once, words and all.
        relative(f"/urgent {URGENT}")
        layer.wait_until(lambda: live(URGENT), timeout=WAIT)

        # A broadcast to everyone: both people get it.
        preview = coordinator("/broadcast all Vigil at the court, Monday 10:00")
        assert "2 people" in preview
        coordinator("/confirm")
        layer.wait_until(
            lambda: all(
                any("Vigil at the court" in m for m in layer.sent_to(who))
                for who in (COORDINATOR, RELATIVE)
            ),
            timeout=WAIT,
        )
        assert_db_files_free_of(v, CONDITIONS, NEWS, URGENT)
        assert v.stop() == 0
    check_logs(v, code, COORDINATOR, COORDINATOR_NUMBER, RELATIVE, layer.number, URGENT)


def test_rest_layer_restart_and_daemon_drop_mid_conversation(
    tmp_path: Path, layer: RealSignal
) -> None:
    chat = Chat(layer)
    with vigil_process(tmp_path, env_for(layer)) as v:
        connected(v)
        assert "Welcome" in chat.say(BOB, "/start", first=True)
        menu = chat.say(BOB, "/language")

        # The daemon behind the REST layer drops: the REST layer reconnects to it by itself,
        # Vigil's socket stays up, the conversation goes on.
        assert layer.drop_daemon() == 1
        layer.wait_until(lambda: layer.health()["rpc_clients"] == 1, timeout=WAIT)
        assert "Language set" in chat.say(BOB, number_of(menu, "English"), first=True)

        # The REST container restarts on the same port: Vigil reconnects by itself.
        layer.restart()
        v.wait_for_log("signal receive stream reconnected", timeout=WAIT)
        assert "/help" in chat.say(BOB, "/help", first=True)
        assert "dropped by signal-cli-rest-api" in v.log()
        assert v.stop() == 0
    v.assert_no_tracebacks()
    v.assert_log_free_of([BOB, layer.number])


def test_kill_9_mid_broadcast(tmp_path: Path, layer: RealSignal) -> None:
    """`vigil run` is killed with SIGKILL mid-broadcast and started again: everyone gets the
    broadcast, at most the in-flight window twice."""
    n = 12
    supporters = [sender_uuid(f"supporter {i}") for i in range(n)]
    text = "Court hearing moved: Monday 10:00, room 3. Please come."
    chat = Chat(layer)
    with vigil_process(tmp_path, env_for(layer), start=False, log_level="INFO") as v:
        store = unlock(v.data_dir, v.passphrase)

        def seed(conn: Any) -> None:
            members.create(
                conn, role="coordinator", transport="signal", address=COORDINATOR,
                chat=COORDINATOR, now=0,
            )  # fmt: skip
            for who in supporters:
                members.create(
                    conn, role="activist", transport="signal", address=who, chat=who, now=0
                )

        store.db.run_sync(seed)
        store.close()
        v.start()
        connected(v)
        preview = chat.say(COORDINATOR, f"/broadcast all {text}", first=True)
        assert f"{n + 1} people" in preview
        chat.say(COORDINATOR, "/confirm")

        def delivered() -> Counter[str]:
            return Counter(p["recipient"][0] for p in layer.sent() if p.get("message") == text)

        layer.wait_until(lambda: sum(delivered().values()) >= n // 3, timeout=60)
        before = sum(delivered().values())
        assert 0 < before < n + 1
        v.kill()
        v.start()

        def finished() -> bool:
            return any("finished" in m for m in layer.sent_to(COORDINATOR))

        layer.wait_until(finished, timeout=90)
        got = delivered()
        lost = (set(supporters) | {COORDINATOR}) - set(got)
        duplicates = sum(k - 1 for k in got.values())
        print(f"\nkilled after {before}/{n + 1}: lost {len(lost)}, duplicated {duplicates}")
        assert not lost
        assert duplicates <= SignalTransport.limits.in_flight
        v.assert_no_tracebacks()


CAPTCHA = "signalcaptcha://signal-hcaptcha.5fad97ac-7d06-4e44-b18a-b950b20148ff.challenge.P1_e2e"


def test_captcha_challenge_from_chat_and_from_the_shell(tmp_path: Path, layer: RealSignal) -> None:
    """429 with a token → sending suspended → the admin's /captcha reaches signal-cli's
    submitRateLimitChallenge with that token and sending resumes; the same through
    `vigil signal captcha` on the server; a rejected captcha is said in words and keeps the
    pause. Neither tokens nor captchas reach the log."""
    chat = Chat(layer)

    def submitted() -> list[tuple[str, str]]:
        found = layer.requests("submitRateLimitChallenge")
        return [(r["params"]["challenge"], r["params"]["captcha"]) for r in found]

    def suspend(token: str, count: int) -> None:
        layer.fail("send", "rate_limit", token=token)
        layer.user_sends(ALICE, "/help", timestamp=next(_clock))
        v.wait_for_log("Signal sending SUSPENDED", timeout=WAIT, count=count)

    with vigil_process(tmp_path, env_for(layer)) as v:
        connected(v)
        assert v.admin_code
        assert "administrator" in chat.say(ALICE, f"/start {v.admin_code}", first=True)

        suspend("token-chat-1", 1)
        answered = len(layer.sent_to(ALICE))
        layer.user_sends(ALICE, f"/captcha {CAPTCHA}-1", timestamp=next(_clock))
        layer.wait_until(lambda: submitted() == [("token-chat-1", f"{CAPTCHA}-1")], timeout=WAIT)
        layer.wait_until(
            lambda: any("accepted the captcha" in t for t in layer.sent_to(ALICE)[answered:]),
            timeout=WAIT,
        )
        v.wait_for_log("Signal sending resumed", timeout=WAIT)

        suspend("token-shell-2", 2)
        shell = v.cli("signal", "captcha", f"'{CAPTCHA}-2'", "--wait", "30", check=False)
        assert shell.returncode == 0, shell.stdout + shell.stderr
        assert "accepted" in shell.stdout
        assert submitted()[-1] == ("token-shell-2", f"{CAPTCHA}-2")
        assert not list(v.data_dir.glob("signal-captcha.*"))

        suspend("token-shell-3", 3)
        layer.fail("submitRateLimitChallenge", "captcha_rejected")
        shell = v.cli("signal", "captcha", f"{CAPTCHA}-3", "--wait", "30", check=False)
        assert shell.returncode == 1 and "rejected" in shell.stdout
        assert "paused" in shell.stdout
        bad = v.cli("signal", "captcha", "I solved it", check=False)
        assert bad.returncode == 2 and "signalcaptcha://" in bad.stderr
        assert len(submitted()) == 3
        assert v.stop() == 0
    v.assert_no_tracebacks()
    v.assert_log_free_of(
        [ALICE, layer.number, "token-chat-1", "token-shell-2", "token-shell-3", CAPTCHA[20:]]
    )
