"""Logs carry event kinds and internal ids only (THREATS.md rule 1).

A full scenario over both transports at DEBUG: `vigil run` as a subprocess against the Signal
and Telegram fakes; an admin, a relative and a coordinator, an activist who leaves; reports
with a photo, an emergency and its acknowledgement, a case update, a broadcast, /mydata,
/forgetme, admin commands; and the operator's CLI commands (invite, status, backup, keys,
retention) at DEBUG too. Then the whole of stderr, of every process, is searched for every
message text, phone number, Signal uuid, Telegram id, name, file name, token, passphrase and
invite code used. None may appear.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import VigilProcess, vigil_process
from tests.fakes.signal_api import FakeSignal
from tests.fakes.telegram_api import DEFAULT_TOKEN, ThreadedFakeTelegram

pytestmark = pytest.mark.timeout(240)

ADMIN = "3f1d2c4b-5a6e-4f70-8a9b-0c1d2e3f4a5b"
ADMIN_NUMBER = "+4915112345678"
RELATIVE = "8e7d6c5b-4a39-4281-b7c6-d5e4f3a2b1c0"
RELATIVE_NUMBER = "+375297654321"
COORD = 804_112_233
ACTIVIST = 805_445_566
COORD_NAME = "Tamar Qoordinator"
ACTIVIST_NAME = "Artyom Followerov"
SLUG = "narges-k"
CASE_NAME = "Narges Kayhani-Sentinel"
REPORT = "SENTINEL report: he lost 9 kilos, cell 14, guard named Rostami"
CAPTION = "SENTINEL caption: the bruise on his arm"
URGENT = "SENTINEL urgent: taken to solitary tonight"
UPDATE = "SENTINEL update: hearing moved to the 12th"
BROADCAST = "SENTINEL broadcast: vigil at the court at noon"
FILE_NAME = "visit-sentinel-photo.jpg"
NEW_PASSPHRASE = "second holder's SENTINEL passphrase"
SEALING_PASSPHRASE = "sealing key SENTINEL passphrase, long"
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)) * 4 + b"\xff\xd9"


@pytest.fixture
def signal_api() -> Iterator[FakeSignal]:
    with FakeSignal.in_thread() as fake:
        yield fake


@pytest.fixture
def telegram_api() -> Iterator[ThreadedFakeTelegram]:
    with ThreadedFakeTelegram() as tg:
        tg.register_user(COORD, COORD_NAME, language_code="en")
        tg.register_user(ACTIVIST, ACTIVIST_NAME, language_code="en")
        yield tg


ASKED = "needs a second person to agree"


def sig_say(fake: FakeSignal, who: str, text: str, number: str, **kw: object) -> str:
    before = len(fake.sent_to(who))
    fake.user_sends(who, text, number, **kw)
    fake.wait_until_blocking(lambda: len(fake.sent_to(who)) > before, timeout=20)
    time.sleep(0.2)  # a second message (e.g. a split reply) lands too
    return "\n".join(m.message or "" for m in fake.sent_to(who)[before:])


def tg_say(tg: ThreadedFakeTelegram, user: int, text: str) -> str:
    last = max((m.message_id for m in tg.sent(user)), default=0)
    tg.user_sends(user, text)
    first = tg.next_sent(user, timeout=20, after=last)
    time.sleep(0.2)
    return "\n".join(m.text or "" for m in tg.sent(user) if m.message_id >= first.message_id)


def tg_wait(tg: ThreadedFakeTelegram, user: int, needle: str) -> str:
    def found(f: Any) -> str | None:  # runs on the fake's own loop: use `f`, not `tg`
        for m in f.sent(user):
            if needle in (m.text or ""):
                return m.text
        return None

    try:
        return tg.wait_for(found, timeout=20)
    except TimeoutError:
        got = [(m.text or "")[:80] for m in tg.sent(user)]
        raise AssertionError(f"no message with the expected text; got {got}") from None


def test_no_secret_or_personal_datum_in_any_log(
    tmp_path: Path, signal_api: FakeSignal, telegram_api: ThreadedFakeTelegram
) -> None:
    sig, tg = signal_api, telegram_api
    env = {
        "VIGIL_SIGNAL_API_URL": sig.url,
        "VIGIL_SIGNAL_NUMBER": sig.number,
        "VIGIL_TELEGRAM_TOKEN": DEFAULT_TOKEN,
        "VIGIL_TELEGRAM_API_URL": tg.base_url,
        "VIGIL_SEALING_PASSPHRASE": SEALING_PASSPHRASE,
    }
    cli_stderr: list[str] = []
    codes: list[str] = []

    def cli(v: VigilProcess, *args: str, extra: dict[str, str] | None = None) -> str:
        saved = dict(v.env)
        v.env.update(extra or {})
        try:
            result = v.cli(*args)
        finally:
            v.env.clear()
            v.env.update(saved)
        cli_stderr.append(result.stderr)
        return result.stdout

    with vigil_process(tmp_path, env, start=False) as v:
        assert v.admin_code
        codes.append(v.admin_code)
        laptop = {"VIGIL_DATA_DIR": str(tmp_path / "offline-laptop")}  # no network there
        cli(v, "keys", "sealing-new", "--out", str(tmp_path / "sealing.key"), extra=laptop)
        cli(v, "keys", "sealing-import", str(tmp_path / "sealing.key.pub"))
        v.start()
        sig.wait_for_clients_blocking(1, timeout=15)

        assert "administrator" in sig_say(sig, ADMIN, f"/start {v.admin_code}", ADMIN_NUMBER)
        assert "Case created" in sig_say(sig, ADMIN, f"/newcase {SLUG} {CASE_NAME}", ADMIN_NUMBER)

        family, _ = v.invite("family", "--case", SLUG)
        coordinator, _ = v.invite("coordinator", "--case", SLUG)
        activist, _ = v.invite("activist")
        codes += [family, coordinator, activist]
        assert "relative" in sig_say(sig, RELATIVE, f"/start {family}", RELATIVE_NUMBER)
        assert "coordinator" in tg_say(tg, COORD, f"/start {coordinator}")
        assert "Welcome" in tg_say(tg, ACTIVIST, f"/start {activist}")

        assert "stored, sealed" in sig_say(sig, RELATIVE, f"/report {REPORT}", RELATIVE_NUMBER)
        # The report came over Signal: the Telegram-only coordinator gets a content-free notice.
        tg_wait(tg, COORD, "New report #1")
        sig_say(sig, RELATIVE, f"/report {CAPTION}", RELATIVE_NUMBER,
                attachments=[("image/jpeg", JPEG, FILE_NAME)])  # fmt: skip
        assert "every coordinator" in sig_say(sig, RELATIVE, f"/urgent {URGENT}", RELATIVE_NUMBER)
        alert = re.search(r"alert #(\d+)", tg_wait(tg, COORD, "a relative raised an emergency"))
        assert alert
        assert "Acknowledged" in tg_say(tg, COORD, f"/ack {alert.group(1)}")
        assert "Update posted" in tg_say(tg, COORD, f"/update {SLUG} hearing: {UPDATE}")
        assert "Broadcast" in tg_say(tg, COORD, f"/broadcast all {BROADCAST}")
        # Network-wide: it waits for a second person, the admin (over Signal), to approve.
        assert "second person" in tg_say(tg, COORD, "/confirm")
        sig.wait_until_blocking(
            lambda: any(
                "needs a second person to agree" in (m.message or "") for m in sig.sent_to(ADMIN)
            ),
            timeout=20,
        )
        asked = next(
            m.message or ""
            for m in sig.sent_to(ADMIN)
            if "needs a second person to agree" in (m.message or "")
        )
        approval = re.search(r"Request #(\d+) from member", asked)
        assert approval and BROADCAST in asked
        sig.user_sends(ADMIN, f"/approve {approval.group(1)}", ADMIN_NUMBER)
        tg_wait(tg, ACTIVIST, BROADCAST)
        assert "What Vigil keeps" in tg_say(tg, ACTIVIST, "/mydata")
        assert "deleted" in tg_say(tg, ACTIVIST, "/forgetme delete me")
        # The admin created the case and so coordinates it: its report notices arrive too.
        sig.user_sends(ADMIN, "/audit", ADMIN_NUMBER)
        sig.wait_until_blocking(
            lambda: any("Audit log" in (m.message or "") for m in sig.sent_to(ADMIN)), timeout=20
        )
        sig_say(sig, ADMIN, f"/timezone \u202e{REPORT}\x00", ADMIN_NUMBER)  # hostile, refused

        cli(v, "status")
        cli(v, "backup", str(tmp_path / "net.vigilbak"))
        cli(v, "keys", "list")
        cli(v, "keys", "add", "--label", "second", extra={"VIGIL_NEW_PASSPHRASE": NEW_PASSPHRASE})
        cli(v, "retention")
        assert v.stop() == 0

    v.assert_no_tracebacks()
    assert "DEBUG" in v.log(), "the scenario must run at DEBUG"
    secrets: list[str | int] = [
        ADMIN, ADMIN_NUMBER, ADMIN_NUMBER[1:], RELATIVE, RELATIVE_NUMBER, RELATIVE_NUMBER[1:],
        sig.number, sig.number.lstrip("+"), COORD, ACTIVIST, COORD_NAME, ACTIVIST_NAME,
        "Tamar", "Artyom", SLUG, CASE_NAME, REPORT, "Rostami", CAPTION, URGENT, UPDATE,
        BROADCAST, FILE_NAME, DEFAULT_TOKEN, DEFAULT_TOKEN.split(":")[1], v.passphrase,
        NEW_PASSPHRASE, SEALING_PASSPHRASE, "SENTINEL",
        *codes, *(c.replace("-", "") for c in codes),
    ]  # fmt: skip
    v.assert_log_free_of(secrets)
    joined = "\n".join(cli_stderr)
    leaked = [str(s) for s in secrets if str(s) in joined]
    assert not leaked, f"{len(leaked)} value(s) in CLI stderr"
