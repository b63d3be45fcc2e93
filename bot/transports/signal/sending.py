"""What Vigil sends to `POST /v2/send`, and what each answer of the real REST layer means.

Body: one recipient (the person's ACI), `text_mode: "normal"` (user text is never parsed as
styles) and `notify_self: false`. Choices become a numbered menu (bot/transports/menus.py).

Answers, as signal-cli-rest-api (json-rpc mode, on signal-cli 0.14) gives them:
* **201** `[{"timestamp": "…"}]`: an *array* with the timestamp as a string (release 0.100
  answered a bare object; both are read). The timestamp is the message's reference. A 201 may
  still carry `"errors": {"recipients": [{"reason": …}]}`: with one recipient per request any
  entry is about that recipient (UNREGISTERED_FAILURE, IDENTITY_FAILURE, RATE_LIMIT_FAILURE,
  NETWORK_FAILURE …), so it is read like the matching error below.
* **429** `{"error", "challenge_tokens": […], "account"}`: signal-cli's rate limit (JSON-RPC
  -5). The message may have been delivered anyway (upstream #881), so it is *maybe sent*, and
  sending is suspended (challenge.py).
* **400** "Unable to complete request due to untrusted recipient keys" (JSON-RPC -4): the
  recipient's safety number changed; nothing was sent to them (`IdentityUntrusted`).
* **400** "The user … is not registered.": the person left Signal (`RecipientGone`).
* **400** naming a rate limit or "CAPTCHA proof required" (normal mode): as the 429.
* any other **400**: signal-cli's message as is. Not proof of non-delivery (#586): *maybe
  sent*, never retried blindly.
* **5xx**: retried later. A deadline that passes after the request left: *maybe sent*.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from bot.messages import Outgoing
from bot.transports.menus import render
from bot.transports.signal.rest import error_text

_WAIT_SECONDS = re.compile(r'or wait "?([0-9]{1,7})"? seconds')
_CHALLENGE_TOKEN = re.compile(r'challenge token "([A-Za-z0-9-]{1,100})"')

Kind = Literal[
    "sent",
    "rate_limited",
    "untrusted",
    "unregistered",
    "bad_request",
    "too_old",
    "server_error",
    "recipient_failure",
    "http",
]


@dataclass(frozen=True)
class SendAnswer:
    kind: Kind
    status: int
    ref: str | None = None  # the message's timestamp
    tokens: tuple[str, ...] = ()  # challenge tokens of a rate limit
    wait: float | None = None  # "or wait N seconds" of a normal-mode rate limit


def body(number: str, out: Outgoing) -> dict[str, Any]:
    return {
        "number": number,
        "recipients": [out.chat],
        "message": render(out.text, out.choices),
        "text_mode": "normal",
        "notify_self": False,
    }


def is_rate_limit(text: str) -> bool:
    low = text.lower()
    return "rate limit" in low or "captcha proof required" in low or "proofrequired" in low


def timestamp_and_errors(payload: Any) -> tuple[str | None, list[dict[str, Any]]]:
    """The message timestamp and per-recipient errors of a 201, either shape."""
    if isinstance(payload, list):
        payload = payload[0] if payload and isinstance(payload[0], dict) else {}
    if not isinstance(payload, dict):
        return None, []
    ts = payload.get("timestamp")
    ok = isinstance(ts, int | str) and not isinstance(ts, bool) and ts != ""
    errors = payload.get("errors")
    recipients = errors.get("recipients") if isinstance(errors, dict) else None
    found = [r for r in recipients if isinstance(r, dict)] if isinstance(recipients, list) else []
    return (str(ts) if ok else None), found


def _from_reasons(reasons: set[str], status: int, ref: str | None) -> SendAnswer:
    if "UNREGISTERED_FAILURE" in reasons:
        return SendAnswer("unregistered", status, ref)
    if "IDENTITY_FAILURE" in reasons:
        return SendAnswer("untrusted", status, ref)
    if "RATE_LIMIT_FAILURE" in reasons:
        return SendAnswer("rate_limited", status, ref)
    return SendAnswer("recipient_failure", status, ref)


def read_answer(resp: httpx.Response) -> SendAnswer:
    status = resp.status_code
    if status in (200, 201):
        try:
            ref, errors = timestamp_and_errors(resp.json())
        except ValueError:
            ref, errors = None, []
        if errors:  # one recipient per request, so any entry is about it
            return _from_reasons({str(e.get("reason")) for e in errors}, status, ref)
        return SendAnswer("sent", status, ref)
    if status == 429:
        tokens: list[str] = []
        try:
            payload = resp.json()
        except ValueError:
            payload = None
        raw = payload.get("challenge_tokens") if isinstance(payload, dict) else None
        if isinstance(raw, list):
            tokens = [t for t in raw if isinstance(t, str) and t]
        return SendAnswer("rate_limited", status, tokens=tuple(tokens))
    if status == 400:
        text = error_text(resp)
        low = text.lower()
        if is_rate_limit(text):
            wait = _WAIT_SECONDS.search(text)
            token = _CHALLENGE_TOKEN.search(text)
            return SendAnswer(
                "rate_limited",
                status,
                tokens=(token.group(1),) if token else (),
                wait=float(wait.group(1)) if wait else None,
            )
        if "untrusted" in low:
            return SendAnswer("untrusted", status)
        if "not registered" in low or "unregistered" in low:
            return SendAnswer("unregistered", status)
        if "too old" in low:
            return SendAnswer("too_old", status)
        return SendAnswer("bad_request", status)
    if status >= 500:
        return SendAnswer("server_error", status)
    return SendAnswer("http", status)
