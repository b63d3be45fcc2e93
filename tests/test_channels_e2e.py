"""Issue 12 end to end: `vigil run` against the Telegram and Signal fakes.

1. The hijack, replayed: a coordinator types /help@bot, presses a button and sends /cases in a
   Telegram group. Afterwards a relative's report and a fresh invite code reach the
   coordinator's private chat, and no Bot API call of any kind names the group but leaveChat.
2. A Signal relative and a coordinator on Telegram only: the report's words, its photo and an
   /urgent never appear in any request to the Telegram fake; the coordinator gets the notices
   at once. After /link, the same content arrives on the coordinator's Signal.
3. The relative's safety number changes: she is quarantined, nothing goes to her, her
   coordinator is told; /trust releases exactly what was held.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e import vigil_process
from tests.fakes.signal_api import FakeSignal
from tests.fakes.telegram_api import DEFAULT_TOKEN, ThreadedFakeTelegram
from tests.test_log_hygiene import JPEG, sig_say, tg_say, tg_wait

pytestmark = pytest.mark.timeout(240)

ADMIN, ADMIN_NUMBER = "1b2c3d4e-0000-4000-8000-00000000a001", "+4915100000001"
RELATIVE, RELATIVE_NUMBER = "1b2c3d4e-0000-4000-8000-00000000b002", "+4915100000002"
COORD_SIGNAL, COORD_NUMBER = "1b2c3d4e-0000-4000-8000-00000000c003", "+4915100000003"
COORD, TG_RELATIVE = 806_000_001, 806_000_002
GROUP = -1_004_455_667_788
SLUG = "ana-k"
REPORT = "SENTINEL-E2E-REPORT cell 9, no water"
URGENT = "SENTINEL-E2E-URGENT moved at night"
TG_REPORT = "SENTINEL-E2E-TELEGRAM-REPORT letters arrive"
CODE = re.compile(r"[A-Z0-9]{4}-[A-Z0-9]{4}-[A-Z0-9]{4}")


@pytest.fixture
def fakes() -> Iterator[tuple[FakeSignal, ThreadedFakeTelegram]]:
    with FakeSignal.in_thread() as sig, ThreadedFakeTelegram() as tg:
        tg.register_user(COORD, "Coordinator", language_code="en")
        tg.register_user(TG_RELATIVE, "Relative", language_code="en")
        yield sig, tg


def telegram_params(tg: ThreadedFakeTelegram) -> str:
    return "\n".join(json.dumps(c.to_dict()["params"], ensure_ascii=False) for c in tg.calls)


def calls_naming(tg: ThreadedFakeTelegram, chat: int) -> list[str]:
    return [c.method for c in tg.calls if str(c.params.get("chat_id")) == str(chat)]


def sig_wait(sig: FakeSignal, who: str, needle: str) -> str:
    def found() -> bool:
        return any(needle in (m.message or "") for m in sig.sent_to(who))

    sig.wait_until_blocking(found, timeout=20)
    return next(m.message or "" for m in sig.sent_to(who) if needle in (m.message or ""))


def test_groups_channels_links_and_a_changed_safety_number(
    tmp_path: Path, fakes: tuple[FakeSignal, ThreadedFakeTelegram]
) -> None:
    sig, tg = fakes
    env = {
        "VIGIL_SIGNAL_API_URL": sig.url,
        "VIGIL_SIGNAL_NUMBER": sig.number,
        "VIGIL_TELEGRAM_TOKEN": DEFAULT_TOKEN,
        "VIGIL_TELEGRAM_API_URL": tg.base_url,
        "VIGIL_SEALING_PASSPHRASE": "sealing passphrase for this test only",
    }
    with vigil_process(tmp_path, env, start=False) as v:
        laptop = dict(v.env, VIGIL_DATA_DIR=str(tmp_path / "laptop"))
        saved = dict(v.env)
        v.env.clear()
        v.env.update(laptop)
        v.cli("keys", "sealing-new", "--out", str(tmp_path / "seal.key"))
        v.env.clear()
        v.env.update(saved)
        v.cli("keys", "sealing-import", str(tmp_path / "seal.key.pub"))
        v.start()
        sig.wait_for_clients_blocking(1, timeout=15)
        assert v.admin_code
        assert "administrator" in sig_say(sig, ADMIN, f"/start {v.admin_code}", ADMIN_NUMBER)
        assert "Case created" in sig_say(sig, ADMIN, f"/newcase {SLUG} Ana K.", ADMIN_NUMBER)
        family = v.invite("family", "--case", SLUG)[0]
        tg_family = v.invite("family", "--case", SLUG)[0]
        coordinator = v.invite("coordinator", "--case", SLUG)[0]
        assert "relative" in sig_say(sig, RELATIVE, f"/start {family}", RELATIVE_NUMBER)
        assert "coordinator" in tg_say(tg, COORD, f"/start {coordinator}")
        assert "relative" in tg_say(tg, TG_RELATIVE, f"/start {tg_family}")

        # 1. The group: joined, then commands and a press from it.
        tg.add_group(GROUP, "Support circle", type="supergroup")
        tg.bot_added_to(GROUP, COORD)
        tg.wait_for(lambda f: GROUP in f.left_chats, timeout=15)
        tg.user_sends(COORD, "/help@vigil_test_bot", chat_id=GROUP)
        tg.user_sends(COORD, "/cases", chat_id=GROUP)
        tg.push_update({"callback_query": {
            "id": "77", "from": {"id": COORD, "is_bot": False, "first_name": "C"},
            "message": {"message_id": 1, "date": 1,
                        "chat": {"id": GROUP, "type": "supergroup", "title": "Circle"}},
            "chat_instance": "1", "data": "/help"}})  # fmt: skip
        # The Telegram-born report is copied to the coordinator's private chat, marked.
        tg_say(tg, TG_RELATIVE, f"/report {TG_REPORT}")
        assert "can read it" in tg_wait(tg, COORD, TG_REPORT)
        assert CODE.search(tg_say(tg, COORD, f"/invite family {SLUG}"))

        # 2. The Signal-born report, its photo and an emergency.
        sig.user_sends(RELATIVE, f"/report {REPORT}", RELATIVE_NUMBER,
                       attachments=[("image/jpeg", JPEG, "photo.jpg")])  # fmt: skip
        sig_wait(sig, RELATIVE, "stored, sealed")
        assert "every coordinator" in sig_say(sig, RELATIVE, f"/urgent {URGENT}", RELATIVE_NUMBER)
        tg_wait(tg, COORD, "New report #2")
        tg_wait(tg, COORD, "raised an emergency")
        code = CODE.search(tg_say(tg, COORD, "/link"))
        assert code
        sig.user_sends(COORD_SIGNAL, f"/link {code.group(0)}", COORD_NUMBER)
        assert "2 messages that waited" in sig_wait(sig, COORD_SIGNAL, "Linked")
        assert REPORT in sig_wait(sig, COORD_SIGNAL, REPORT)
        assert URGENT in sig_wait(sig, COORD_SIGNAL, URGENT)

        sent = telegram_params(tg)
        for secret in (REPORT, URGENT, "photo.jpg"):
            assert secret not in sent, "Signal-born content reached Telegram"
        assert calls_naming(tg, GROUP) == ["leaveChat"]

        # 3. The relative's phone changes hands (or is reinstalled).
        sig.change_identity(RELATIVE)
        sig.user_sends(RELATIVE, "/report SENTINEL-E2E-HELD second visit", RELATIVE_NUMBER)
        alert = sig_wait(sig, COORD_SIGNAL, "security number of member")
        number = re.search(r"/trust (\d+)", alert)
        assert number
        before = len(sig.sent_to(RELATIVE))
        assert "Broadcast" in sig_say(sig, ADMIN, "/broadcast all Vigil at noon", ADMIN_NUMBER)
        sig_say(sig, ADMIN, "/confirm", ADMIN_NUMBER)
        sig_wait(sig, COORD_SIGNAL, "Vigil at noon")  # others got it
        assert len(sig.sent_to(RELATIVE)) == before  # she got nothing meanwhile
        sig.user_sends(COORD_SIGNAL, f"/trust {number.group(1)}", COORD_NUMBER)
        sig_wait(sig, COORD_SIGNAL, "Confirming")
        sig_wait(sig, COORD_SIGNAL, "confirmed")
        assert sig.trusts and sig.trusts[-1]["recipient"] in (RELATIVE, RELATIVE_NUMBER)
        sig_wait(sig, RELATIVE, "Vigil at noon")  # what was held for her
        sig_wait(sig, RELATIVE, "stored, sealed")  # and what was held from her
        assert "SENTINEL-E2E-HELD" in sig_wait(sig, COORD_SIGNAL, "SENTINEL-E2E-HELD")
    v.assert_no_tracebacks()
