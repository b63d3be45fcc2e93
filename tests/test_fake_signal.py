"""Tests of the signal-cli-rest-api fake itself, over real HTTP and WebSocket on loopback."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from websockets.asyncio.client import connect as ws_connect
from websockets.sync.client import connect as ws_connect_sync

from tests.fakes.signal_api import (
    ATTACHMENT_NOT_FOUND,
    CAPTCHA_MISSING,
    CAPTCHA_REJECTED,
    IDENTITIES_FAILED,
    INVALID_REQUEST,
    MISSING_SEPARATOR,
    NO_NUMBER,
    NO_RECIPIENT,
    RATE_LIMITED_429,
    SWAGGER_DEFINITIONS,
    TRUST_FAILED,
    UNTRUSTED_IDENTITIES,
    UNTRUSTED_KEYS,
    WS_NOT_UPGRADE,
    FakeSignal,
    group_ids,
)

BOT = "+15550000001"
ALICE = "27d6c025-997c-4b12-9f4f-a9b7a5791b7a"
BOB = "b73a0708-1111-2222-3333-f7f432d7bf6c"
REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"  # a clean checkout sits next to ../shared, as in CI
SWAGGER = SHARED / "specs" / "signal-cli-rest-api" / "swagger.json"
SHORT_GROUP = "group." + base64.b64encode(base64.b64encode(b"x" * 16)).decode()
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40


def send_body(**extra: Any) -> dict[str, Any]:
    return {"number": BOT, "recipients": [ALICE], "message": "hi", "text_mode": "normal", **extra}


@pytest.fixture
async def fake():
    async with FakeSignal(mode="json-rpc", number=BOT) as f:
        yield f


@pytest.fixture
async def normal_fake():
    async with FakeSignal(mode="normal", number=BOT, time_scale=0.05) as f:
        yield f


@pytest.fixture
async def http(fake: FakeSignal):
    async with httpx.AsyncClient(base_url=fake.url) as client:
        yield client


# --- general -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "reported"),
    [("json-rpc", "json-rpc"), ("json-rpc-native", "json-rpc"), ("normal", "normal")],
)
async def test_about_reports_mode(mode: str, reported: str) -> None:
    async with FakeSignal(mode=mode, number=BOT) as f, httpx.AsyncClient(base_url=f.url) as c:
        about = (await c.get("/v1/about")).json()
        health = await c.get("/v1/health")
    assert about == {
        "versions": ["v1", "v2"],
        "build": 2,
        "mode": reported,
        "version": "0.100",
        "capabilities": {"v2/send": ["quotes", "mentions"]},
    }
    assert health.status_code == 204
    assert f.url.startswith("http://127.0.0.1:")


async def test_unknown_route_is_gin_404_and_a_violation(fake, http) -> None:
    resp = await http.get("/v1/nope")
    assert resp.status_code == 404
    assert resp.text == "404 page not found"
    assert resp.headers["content-type"].startswith("text/plain")
    wrong_method = await http.put("/v2/send", json=send_body())
    assert wrong_method.status_code == 404
    assert len(fake.violations) == 2
    fake.clear_violations()
    fake.assert_no_violations()


# --- /v2/send ------------------------------------------------------------------------------------


async def test_send_answers_201_array_with_string_timestamp(fake, http) -> None:
    resp = await http.post("/v2/send", json=send_body())
    assert resp.status_code == 201
    assert resp.headers["content-type"] == "application/json; charset=utf-8"
    [item] = resp.json()  # the real layer (upstream HEAD) answers an array
    ts = item["timestamp"]
    assert set(item) == {"timestamp"} and isinstance(ts, str) and ts.isdigit()
    second = await http.post("/v2/send", json=send_body(message="again"))
    assert int(second.json()[0]["timestamp"]) > int(ts)
    [first, _] = fake.sent
    assert first.recipients == [ALICE]
    assert first.message == "hi"
    assert first.text_mode == "normal"
    assert first.timestamp == int(ts)
    assert [m.message for m in fake.sent_to(ALICE)] == ["hi", "again"]
    assert fake.sent_to(BOB) == []
    fake.assert_no_violations()


async def test_release_object_shape_and_attachments(fake, http) -> None:
    fake.set_response_shape("object")  # release 0.100 answered a bare object
    ok = await http.post("/v2/send", json=send_body())
    assert set(ok.json()) == {"timestamp"} and ok.json()["timestamp"].isdigit()
    fake.set_response_shape("array")
    data_uri = "data:image/png;filename=a.png;base64," + base64.b64encode(PNG).decode()
    resp = await http.post(
        "/v2/send", json=send_body(base64_attachments=[data_uri], message="", view_once=True)
    )
    assert resp.status_code == 201
    [item] = resp.json()
    assert set(item) == {"timestamp"}
    [att] = fake.sent[1].attachments
    assert (att.content_type, att.filename, att.data) == ("image/png", "a.png", PNG)
    fake.assert_no_violations()


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (send_body(recipient_typo=["x"]), "fake-signal: unknown field body.recipient_typo"),
        (send_body(quote_timestamp="123"), INVALID_REQUEST),
        (send_body(message=None), INVALID_REQUEST),
        (send_body(text_mode="markdown"), "fake-signal: body.text_mode='markdown'"),
        (send_body(mentions=[{"start": 0, "length": 1}]), "fake-signal: missing required"),
        ({"recipients": [ALICE], "message": "x"}, NO_NUMBER),
        ({"number": BOT, "message": "x"}, NO_RECIPIENT),
        (send_body(recipients=[]), NO_RECIPIENT),
        (send_body(view_once=True), "'view_once' can only be set for image attachments!"),
        (send_body(base64_attachments=["not base64!"]), "illegal base64 data at input byte 3"),
        (send_body(recipients=["group." + "A" * 60]), "Invalid identifier group.AAA"),
        (send_body(recipients=[SHORT_GROUP]), "Invalid Signal group size (16"),
        (send_body(number="+15559999999"), "Specified account does not exist"),
    ],
)
async def test_invalid_send_is_a_violation_and_400(fake, http, body, error) -> None:
    resp = await http.post("/v2/send", json=body)
    assert resp.status_code == 400
    assert resp.json()["error"].startswith(error)
    assert fake.violations
    assert fake.send_attempts == []
    with pytest.raises(AssertionError, match="contract violations"):
        fake.assert_no_violations()


async def test_unparsable_send_body(fake, http) -> None:
    resp = await http.post("/v2/send", content=b"{not json")
    assert resp.json() == {"error": INVALID_REQUEST}
    assert "not JSON" in fake.violations[0]


async def test_recipient_classification(fake, http) -> None:
    internal, rest = group_ids("family circle")
    assert len(base64.b64decode(internal)) == 32
    ok = await http.post("/v2/send", json=send_body(recipients=[rest]))
    assert ok.status_code == 201
    # The classic bug: replying to groupInfo.groupId instead of the group. form.
    raw = await http.post("/v2/send", json=send_body(recipients=[internal]))
    assert raw.json() == {"error": MISSING_SEPARATOR}
    mixed = await http.post("/v2/send", json=send_body(recipients=[ALICE, rest]))
    assert "cannot be specified together" in mixed.json()["error"]
    assert len(fake.sent) == 1


async def test_unregistered_and_untrusted_recipients(fake, http) -> None:
    fake.mark_unregistered("+15557654321")
    fake.mark_untrusted(BOB)
    resp = await http.post("/v2/send", json=send_body(recipients=["+15557654321"]))
    assert resp.json() == {"error": "The user +15557654321 is not registered."}
    resp = await http.post("/v2/send", json=send_body(recipients=[BOB]))
    assert resp.json() == {"error": UNTRUSTED_KEYS}  # json-rpc: upstream rewrites -4 so
    # Partial failure is 201; the array shape reports it.
    resp = await http.post("/v2/send", json=send_body(recipients=[ALICE, BOB]))
    assert resp.status_code == 201
    assert resp.json()[0]["errors"]["recipients"][0]["reason"] == "IDENTITY_FAILURE"
    assert [m.delivered for m in fake.send_attempts] == [False, False, True]
    assert fake.sent_to(BOB) == [] and len(fake.sent_to(ALICE)) == 1
    fake.assert_no_violations()


async def test_rate_limit_429_challenge_body(fake, http) -> None:
    fake.inject_send_fault("rate_limit", challenge_tokens=[""], delivered=True)
    resp = await http.post("/v2/send", json=send_body())
    assert resp.status_code == 429
    assert resp.json() == {
        "error": RATE_LIMITED_429,
        "challenge_tokens": [""],
        "account": BOT,
    }
    assert "'/v1/accounts/{number}/rate-limit-challenge'" in resp.json()["error"]
    # #881: the 429 came although the message went out.
    [record] = fake.sent
    assert (record.status, record.delivered) == (429, True)
    lift = await http.post(
        f"/v1/accounts/{BOT}/rate-limit-challenge",
        json={"challenge_token": "tok", "captcha": "signalcaptcha://x"},
    )
    assert lift.status_code == 204
    assert fake.rate_limit_challenges == [
        {"challenge_token": "tok", "captcha": "signalcaptcha://x", "result": "accepted"}
    ]
    assert (await http.post("/v2/send", json=send_body())).status_code == 201
    fake.assert_no_violations()


async def test_rate_limit_in_normal_mode_is_400_text(normal_fake) -> None:
    normal_fake.inject_send_fault("rate_limit", challenge_tokens=["26ccfae6"])
    async with httpx.AsyncClient(base_url=normal_fake.url) as http:
        resp = await http.post("/v2/send", json=send_body())
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert 'CAPTCHA proof required for sending to "' in error
    assert 'challenge token "26ccfae6"' in error
    assert error.endswith("Failed to send message due to rate limiting\n")


async def test_send_faults_queue_and_delay(fake, http) -> None:
    fake.inject_send_fault("untrusted", delivered=True)
    fake.inject_send_fault("server_error")
    fake.inject_send_fault("error", error="Failed to send message")
    fake.inject_send_fault("delay", delay=0.2)
    r1 = await http.post("/v2/send", json=send_body())
    r2 = await http.post("/v2/send", json=send_body())
    r3 = await http.post("/v2/send", json=send_body())
    start = time.monotonic()
    r4 = await http.post("/v2/send", json=send_body())
    assert time.monotonic() - start >= 0.2
    assert (r1.status_code, r1.json()) == (400, {"error": UNTRUSTED_KEYS})
    assert (r2.status_code, r2.content) == (500, b"")
    assert r3.json() == {"error": "Failed to send message"}
    assert r4.status_code == 201
    assert [(m.status, m.delivered) for m in fake.send_attempts] == [
        (400, True),
        (500, False),
        (400, False),
        (201, True),
    ]


async def test_untrusted_text_in_normal_mode(normal_fake) -> None:
    normal_fake.mark_untrusted(BOB)
    async with httpx.AsyncClient(base_url=normal_fake.url) as http:
        resp = await http.post("/v2/send", json=send_body(recipients=[BOB]))
    assert resp.json() == {"error": UNTRUSTED_IDENTITIES}  # the CLI's own words


async def test_a_hung_send_never_answers_but_others_do(fake, http) -> None:
    fake.inject_send_fault("hang")
    hung = asyncio.create_task(http.post("/v2/send", json=send_body(message="lost answer")))
    await fake.wait_until(lambda: len(fake._attempts) == 1)
    other = await http.post("/v2/send", json=send_body(message="next"))
    assert other.status_code == 201
    assert not hung.done()
    hung.cancel()
    # Upstream's race loses the answer, not the message: it went out.
    assert [m.message for m in fake.sent] == ["lost answer", "next"]


async def test_per_recipient_error_inside_a_201(fake, http) -> None:
    fake.inject_send_fault("recipient_error", error="NETWORK_FAILURE")
    resp = await http.post("/v2/send", json=send_body())
    assert resp.status_code == 201
    [item] = resp.json()
    assert item["timestamp"].isdigit()
    assert item["errors"]["recipients"] == [
        {"number": "", "uuid": ALICE, "username": "", "reason": "NETWORK_FAILURE"}
    ]
    assert fake.sent_to(ALICE) == []


# --- identities and the rate-limit challenge -----------------------------------------------------


async def test_identities_list_trust_and_500(fake, http) -> None:
    await http.post("/v2/send", json=send_body())  # meeting ALICE: her key, trusted on first use
    resp = await http.get(f"/v1/identities/{BOT}")
    [entry] = resp.json()
    assert set(entry) == {"number", "status", "fingerprint", "added", "safety_number", "uuid"}
    assert (entry["uuid"], entry["status"]) == (ALICE, "TRUSTED_UNVERIFIED")
    assert len(entry["safety_number"]) == 60 and entry["added"].isdigit()
    fake.fail_identities()
    failed = await http.get(f"/v1/identities/{BOT}")
    assert (failed.status_code, failed.json()) == (500, {"error": IDENTITIES_FAILED})
    wrong = await http.put(
        f"/v1/identities/{BOT}/trust/{ALICE}", json={"verified_safety_number": "1" * 60}
    )
    assert (wrong.status_code, wrong.json()) == (400, {"error": TRUST_FAILED})
    right = await http.put(
        f"/v1/identities/{BOT}/trust/{ALICE}",
        json={"verified_safety_number": entry["safety_number"]},
    )
    assert right.status_code == 204
    assert fake.identities[ALICE]["status"] == "TRUSTED_VERIFIED"
    again = await http.put(
        f"/v1/identities/{BOT}/trust/{ALICE}",
        json={"verified_safety_number": entry["safety_number"]},
    )
    assert again.status_code == 400  # signal-cli refuses a trust that changes nothing
    fake.assert_no_violations()


async def test_changed_key_holds_messages_until_trusted(fake, http) -> None:
    fake.add_identity(BOB)
    changed = fake.change_identity(BOB)
    async with ws_connect(fake.ws_url) as ws:
        await fake.wait_for_clients(1)
        frame = fake.user_sends(BOB, "written on the new phone")
        got = json.loads(await asyncio.wait_for(ws.recv(), 2))
        assert got == frame
        assert got["exception"] == {
            "message": f"Untrusted identity: {BOB}",
            "type": "UntrustedIdentityException",
        }
        assert "dataMessage" not in got["envelope"] and fake.held == 1
        refused = await http.post("/v2/send", json=send_body(recipients=[BOB]))
        assert refused.json() == {"error": UNTRUSTED_KEYS}
        trusted = await http.put(
            f"/v1/identities/{BOT}/trust/{BOB}",
            json={"verified_safety_number": changed["safety_number"]},
        )
        assert trusted.status_code == 204
        released = json.loads(await asyncio.wait_for(ws.recv(), 2))
    assert released["envelope"]["dataMessage"]["message"] == "written on the new phone"
    assert released["envelope"]["timestamp"] == got["envelope"]["timestamp"]
    assert fake.held == 0
    assert (await http.post("/v2/send", json=send_body(recipients=[BOB]))).status_code == 201
    fake.assert_no_violations()


async def test_rate_limit_challenge_rejected_and_validated(fake, http) -> None:
    fake.reject_captcha()
    url = f"/v1/accounts/{BOT}/rate-limit-challenge"
    body = {"challenge_token": "tok", "captcha": "signalcaptcha://old"}
    rejected = await http.post(url, json=body)
    assert (rejected.status_code, rejected.json()) == (400, {"error": CAPTCHA_REJECTED})
    accepted = await http.post(url, json=body)
    assert accepted.status_code == 204
    assert [c["result"] for c in fake.rate_limit_challenges] == ["rejected", "accepted"]
    missing = await http.post(url, json={"challenge_token": "tok", "captcha": ""})
    assert missing.json() == {"error": CAPTCHA_MISSING}


# --- json-rpc receive ----------------------------------------------------------------------------


async def test_ws_client_receives_pushed_envelope(fake) -> None:
    async with ws_connect(fake.ws_url, ping_interval=None) as ws:
        assert fake.client_count == 1
        frame = fake.user_sends(ALICE, "hello bot", name="Alex")
        got = json.loads(await asyncio.wait_for(ws.recv(), 2))
    assert got == frame
    env = got["envelope"]
    assert got["account"] == BOT
    assert env["sourceUuid"] == ALICE and env["sourceNumber"] is None and env["source"] == ALICE
    assert env["dataMessage"]["message"] == "hello bot"
    assert env["dataMessage"]["timestamp"] == env["timestamp"]
    assert {"expiresInSeconds", "viewOnce"} <= set(env["dataMessage"])
    await fake.wait_for_clients(0)
    fake.assert_no_violations()


async def test_envelope_without_client_is_lost(fake) -> None:
    lost = fake.user_sends(ALICE, "nobody listens")
    assert fake.dropped_frames == [lost]
    async with ws_connect(fake.ws_url, ping_interval=None) as ws:
        fake.user_sends(ALICE, "now someone does", number="+4915112345678")
        got = json.loads(await asyncio.wait_for(ws.recv(), 2))
        assert got["envelope"]["dataMessage"]["message"] == "now someone does"
        assert got["envelope"]["source"] == "+4915112345678"
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ws.recv(), 0.2)


async def test_drop_when_busy_loses_frames_written_back_to_back() -> None:
    fake = FakeSignal(number=BOT, drop_when_busy=True)
    async with fake, ws_connect(fake.ws_url, ping_interval=None) as ws:
        await fake.wait_for_clients(1)
        burst = [fake.user_sends(ALICE, f"burst {i}") for i in range(5)]
        got = json.loads(await asyncio.wait_for(ws.recv(), 2))
        assert got == burst[0]  # the writer was idle for the first frame only
        assert fake.dropped_frames == burst[1:]
        later = fake.user_sends(ALICE, "after a gap")
        assert json.loads(await asyncio.wait_for(ws.recv(), 2)) == later


async def test_fan_out_and_duplicates(fake) -> None:
    async with (
        ws_connect(fake.ws_url, ping_interval=None) as a,
        ws_connect(fake.ws_url, ping_interval=None) as b,
    ):
        assert fake.client_count == 2
        frame = fake.user_sends(BOB, "twice", number="+4915100000000")
        fake.replay(frame)
        for ws in (a, b):
            first = json.loads(await asyncio.wait_for(ws.recv(), 2))
            again = json.loads(await asyncio.wait_for(ws.recv(), 2))
            assert first == again == frame
    assert fake.max_clients_seen == 2


async def test_envelopes_bots_must_ignore(fake) -> None:
    async with ws_connect(fake.ws_url, ping_interval=None) as ws:
        fake.user_typing(ALICE)
        fake.user_receipt(ALICE, [123], kind="read")
        fake.sync_sent("from my phone", destination_uuid=BOB)
        fake.user_reacts(ALICE, "👍", BOB, 123, group_id="family")
        fake.user_exception(ALICE)
        fake.error_frame("daemon hiccup")
        frames = [json.loads(await asyncio.wait_for(ws.recv(), 2)) for _ in range(6)]
    envs = [f.get("envelope", {}) for f in frames]
    assert envs[0]["typingMessage"]["action"] == "STARTED"
    assert envs[1]["receiptMessage"]["isRead"] is True
    assert envs[2]["syncMessage"]["sentMessage"]["destinationUuid"] == BOB
    assert envs[2]["sourceNumber"] == BOT
    assert envs[3]["dataMessage"]["reaction"]["emoji"] == "👍"
    assert envs[3]["dataMessage"]["groupInfo"]["groupId"] == group_ids("family")[0]
    assert frames[4]["exception"]["type"] == "UntrustedIdentityException"
    assert frames[5] == {"error": "daemon hiccup"}


async def test_client_frame_over_read_limit_closes_socket(fake) -> None:
    async with ws_connect(fake.ws_url, ping_interval=None) as ws:
        await ws.send("x" * 512)  # at the limit: read and discarded
        await ws.send("y" * 600)
        with pytest.raises(websockets.ConnectionClosedError) as info:
            await asyncio.wait_for(ws.recv(), 2)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1009
    assert fake.client_frames == ["x" * 512]
    await fake.wait_for_clients(0)


async def test_plain_get_in_json_rpc_mode_is_400(fake, http) -> None:
    resp = await http.get(f"/v1/receive/{BOT}")
    assert resp.status_code == 400
    assert WS_NOT_UPGRADE in resp.text
    assert fake.violations


async def test_server_pings(fake) -> None:
    fake.ping_interval = 0.05
    async with ws_connect(fake.ws_url, ping_interval=None) as ws:
        await fake.wait_until(lambda: any(s["pongs_received"] for s in fake.ws_stats()), 2)
        fake.user_sends(ALICE, "still here")
        assert json.loads(await asyncio.wait_for(ws.recv(), 2))["envelope"]


async def test_drop_connections(fake) -> None:
    async with ws_connect(fake.ws_url, ping_interval=None) as ws:
        assert fake.drop_connections() == 1
        assert fake.client_count == 0
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 2)
    async with ws_connect(fake.ws_url, ping_interval=None) as ws:
        assert fake.drop_connections(clean=True) == 1
        with pytest.raises(websockets.ConnectionClosed) as info:
            await asyncio.wait_for(ws.recv(), 2)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1001
    assert fake.connections_total == 2


async def test_go_silent_keeps_socket_open_but_mute(fake) -> None:
    async with ws_connect(fake.ws_url, ping_interval=None) as ws:
        fake.go_silent()
        assert fake.client_count == 1
        fake.user_sends(ALICE, "into the void")
        assert len(fake.dropped_frames) == 1
        pong = await ws.ping()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(pong, 0.3)
        # A fresh connection (the client's watchdog reconnecting) works again.
        async with ws_connect(fake.ws_url, ping_interval=None) as fresh:
            fake.user_sends(ALICE, "hello again")
            got = json.loads(await asyncio.wait_for(fresh.recv(), 2))
            assert got["envelope"]["dataMessage"]["message"] == "hello again"


async def test_refuse_connections_for_a_while(fake) -> None:
    fake.refuse_connections(seconds=0.3)
    async with httpx.AsyncClient(base_url=fake.url) as http:
        with pytest.raises(httpx.ConnectError):
            await http.get("/v1/health")
        with pytest.raises(OSError):
            await ws_connect(fake.ws_url, ping_interval=None, open_timeout=1)
        await asyncio.sleep(0.4)
        assert (await http.get("/v1/health")).status_code == 204
    fake.refuse_connections()
    fake.accept_connections()
    async with ws_connect(fake.ws_url, ping_interval=None):
        assert fake.client_count == 1


# --- normal mode receive -------------------------------------------------------------------------


async def test_normal_mode_get_receive_drains_queue(normal_fake) -> None:
    first = normal_fake.user_sends(ALICE, "one")
    second = normal_fake.user_sends(BOB, "two", number="+4915100000000")
    async with httpx.AsyncClient(base_url=normal_fake.url) as http:
        resp = await http.get(f"/v1/receive/{BOT}", params={"timeout": "0"})
        assert resp.status_code == 200
        assert resp.headers["content-type"] == "text/plain; charset=utf-8"
        assert json.loads(resp.text) == [first, second]
        empty = await http.get(f"/v1/receive/{BOT}", params={"timeout": "0"})
        assert json.loads(empty.text) == []
        # timeout=1 (scaled by 0.05): a message arriving during the wait is included.
        waiting = asyncio.ensure_future(http.get(f"/v1/receive/{BOT}"))
        await asyncio.sleep(0.01)
        late = normal_fake.user_sends(ALICE, "late")
        assert json.loads((await waiting).text) == [late]
        normal_fake.user_sends(ALICE, "a")
        normal_fake.user_sends(ALICE, "b")
        one = await http.get(f"/v1/receive/{BOT}", params={"timeout": "0", "max_messages": "1"})
        assert [f["envelope"]["dataMessage"]["message"] for f in json.loads(one.text)] == ["a"]
        assert normal_fake.pending == 1
        bad = await http.get(f"/v1/receive/{BOT}", params={"timeout": "soon"})
        assert bad.json() == {"error": "Couldn't process request - timeout needs to be numeric!"}
        flag = await http.get(f"/v1/receive/{BOT}", params={"ignore_stories": "yes"})
        assert "ignore_stories parameter needs to be either 'true' or 'false'" in flag.text
    assert len(normal_fake.violations) == 2


# --- attachments, typing, other endpoints --------------------------------------------------------


async def test_attachment_fetch_and_delete(fake, http) -> None:
    frame = fake.user_sends(
        ALICE, None, attachments=[{"content_type": "image/png", "data": PNG, "filename": None}]
    )
    [att] = frame["envelope"]["dataMessage"]["attachments"]
    assert frame["envelope"]["dataMessage"]["message"] is None
    assert att["contentType"] == "image/png" and att["size"] == len(PNG)
    assert att["filename"] is None and att["id"].endswith(".png")
    assert (await http.get("/v1/attachments")).json() == [att["id"]]
    got = await http.get(f"/v1/attachments/{att['id']}")
    assert got.status_code == 200 and got.content == PNG
    assert got.headers["content-type"] == "image/png"
    deleted = await http.delete(f"/v1/attachments/{att['id']}")
    assert deleted.status_code == 204
    assert fake.deleted_attachments == [att["id"]]
    gone = await http.get(f"/v1/attachments/{att['id']}")
    assert (gone.status_code, gone.json()) == (404, {"error": ATTACHMENT_NOT_FOUND})
    assert (await http.get("/v1/attachments")).json() == []
    fake.assert_no_violations()


async def test_typing_receipts_reactions_settings_contacts(fake, http) -> None:
    _, rest = fake.add_group("family", members=[ALICE])
    assert (await http.put(f"/v1/typing-indicator/{BOT}", json={"recipient": ALICE})).is_success
    stop = await http.request("DELETE", f"/v1/typing-indicator/{BOT}", json={"recipient": rest})
    assert stop.status_code == 204
    assert [(t.action, t.recipient) for t in fake.typing] == [("start", ALICE), ("stop", rest)]
    receipt = {"recipient": ALICE, "receipt_type": "read", "timestamp": 1718816184062}
    assert (await http.post(f"/v1/receipts/{BOT}", json=receipt)).status_code == 204
    reaction = {"recipient": ALICE, "reaction": "👍", "target_author": ALICE, "timestamp": 1}
    assert (await http.post(f"/v1/reactions/{BOT}", json=reaction)).status_code == 204
    settings = await http.post(
        f"/v1/configuration/{BOT}/settings", json={"trust_mode": "on-first-use"}
    )
    assert settings.status_code == 204
    trust = await http.get(f"/v1/configuration/{BOT}/settings")
    assert trust.json() == {"trust_mode": "on-first-use"}
    expiry = {"recipient": ALICE, "expiration_in_seconds": 604800}
    assert (await http.put(f"/v1/contacts/{BOT}", json=expiry)).status_code == 204
    assert fake.contact_updates == [expiry]
    groups = (await http.get(f"/v1/groups/{BOT}")).json()
    assert groups[0]["id"] == rest and ALICE in groups[0]["members"]
    assert (await http.put(f"/v1/groups/{BOT}/{rest}", json={"expiration_time": 3600})).is_success
    missing = await http.get(f"/v1/groups/{BOT}/{group_ids('other')[1]}")
    assert missing.json() == {"error": "No group with that id found"}
    assert (await http.get("/v1/accounts")).json() == [BOT]
    fake.assert_no_violations()
    bad = await http.put(f"/v1/typing-indicator/{BOT}", json={"recipient": ALICE, "x": 1})
    assert bad.status_code == 400
    no_type = await http.post(f"/v1/receipts/{BOT}", json={**receipt, "receipt_type": "seen"})
    assert no_type.status_code == 400
    wrong_account = await http.put("/v1/typing-indicator/+15559999999", json={"recipient": ALICE})
    assert wrong_account.json() == {"error": "Specified account does not exist"}
    assert len(fake.violations) == 3


# --- other ways to run ---------------------------------------------------------------------------


def test_in_thread_with_sync_clients() -> None:
    with FakeSignal.in_thread(mode="json-rpc", number=BOT) as fake:
        with ws_connect_sync(fake.ws_url) as ws:
            fake.wait_for_clients_blocking(1)
            fake.user_sends(ALICE, "from another thread")
            got = json.loads(ws.recv(timeout=2))
        assert got["envelope"]["dataMessage"]["message"] == "from another thread"
        resp = httpx.post(f"{fake.url}/v2/send", json=send_body())
        assert resp.status_code == 201
        assert fake.wait_for_sent_blocking(1)[0].message == "hi"
        fake.assert_no_violations()


def test_process_mode_with_control_endpoints() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.signal_api", "--mode", "json-rpc", "--number", BOT],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        with httpx.Client(base_url=url) as http:
            assert http.get("/v1/about").json()["mode"] == "json-rpc"
            ws_url = url.replace("http", "ws", 1) + f"/v1/receive/{BOT}"
            with ws_connect_sync(ws_url) as ws:
                assert http.get("/_control/clients").json() == 1
                png = base64.b64encode(PNG).decode()
                pushed = http.post(
                    "/_control/user_sends",
                    json={
                        "uuid": ALICE,
                        "text": "via control",
                        "attachments": [{"content_type": "image/png", "data_b64": png}],
                    },
                ).json()["result"]
                got = json.loads(ws.recv(timeout=2))
            assert got == pushed
            att_id = got["envelope"]["dataMessage"]["attachments"][0]["id"]
            assert http.get(f"/v1/attachments/{att_id}").content == PNG
            fault = {"kind": "rate_limit", "challenge_tokens": ["t"]}
            assert http.post("/_control/inject_send_fault", json=fault).is_success
            assert http.post("/v2/send", json=send_body()).status_code == 429
            assert http.post("/v2/send", json=send_body()).status_code == 201
            sent = http.get("/_control/sent").json()
            assert [m["status"] for m in sent] == [201]
            assert sent[0]["recipients"] == [ALICE]
            http.post("/v2/send", json={"bogus": True})
            assert http.get("/_control/violations").json()
            assert http.post("/_control/drop_connections", json={}).json() == {"result": 0}
            http.post("/_control/shutdown")
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=5)


# --- faithfulness to the shared spec -------------------------------------------------------------

# Where ../shared exists (CI, every developer checkout) the spec must be there: a missing file
# is a failure, not a skip. Only a checkout without ../shared at all skips these.
needs_spec = pytest.mark.skipif(
    not SHARED.is_dir(), reason=f"{SHARED} (the shared specs) is not next to this checkout"
)


@needs_spec
def test_the_shared_spec_is_present() -> None:
    assert SWAGGER.is_file(), f"{SWAGGER} is missing although {SHARED} exists"


def _strip_annotations(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            k: _strip_annotations(v)
            for k, v in node.items()
            if not (k in ("example", "description") and not isinstance(v, dict))
        }
    return node


@needs_spec
def test_embedded_definitions_match_swagger() -> None:
    spec = json.loads(SWAGGER.read_text())
    for name, definition in SWAGGER_DEFINITIONS.items():
        assert _strip_annotations(spec["definitions"][name]) == definition, name


def _conforms(value: Any, schema: dict[str, Any], defs: dict[str, Any], where: str) -> None:
    if "$ref" in schema:
        schema = defs[schema["$ref"].rsplit("/", 1)[-1]]
    if value is None:
        return  # signal-cli emits null for absent optional values
    kind = schema.get("type")
    if kind == "object":
        assert isinstance(value, dict), where
        for key in schema.get("required", []):
            assert key in value, f"{where}.{key} missing"
        for key, item in value.items():
            if key in schema.get("properties", {}):
                _conforms(item, schema["properties"][key], defs, f"{where}.{key}")
    elif kind == "array":
        assert isinstance(value, list), where
        for i, item in enumerate(value):
            _conforms(item, schema["items"], defs, f"{where}[{i}]")
    elif kind == "integer":
        assert isinstance(value, int) and not isinstance(value, bool), where
    elif kind == "string":
        assert isinstance(value, str), where
    elif kind == "boolean":
        assert isinstance(value, bool), where


@needs_spec
async def test_generated_envelopes_conform_to_receive_schema(fake) -> None:
    defs = json.loads(SWAGGER.read_text())["definitions"]
    frames = [
        fake.user_sends(ALICE, "x", attachments=[PNG], group_id="family", expires_in_seconds=60),
        fake.user_sets_expiration(ALICE, 3600),
        fake.user_typing(ALICE, group_id="family"),
        fake.user_receipt(ALICE, [1, 2]),
        fake.user_reacts(ALICE, "👍", BOB, 1),
        fake.user_edits(ALICE, 1, "fixed"),
        fake.user_deletes(ALICE, 1),
        fake.sync_sent("mine", BOB),
    ]
    for frame in frames:
        _conforms(frame, {"$ref": "#/definitions/data.Message"}, defs, "frame")
