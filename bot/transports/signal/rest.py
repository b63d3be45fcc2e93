"""The HTTP calls Vigil makes to signal-cli-rest-api, each under its own deadline.

Every request has a deadline: the REST layer can leave a call unanswered for ever (upstream
`getRaw` registers its answer channel only after writing the request, so an instant answer
from signal-cli is lost; a daemon that drops mid-call never answers either). httpx's timeouts
bound each network step; `asyncio.timeout` bounds the whole call, so a server that trickles
bytes cannot hold it either. What a deadline means for a send is decided by the caller
(sending.py: maybe sent).

The API has no authentication (it must listen on loopback or a private network only), so
the client never goes through a proxy from the environment.
"""

from __future__ import annotations

import asyncio
import uuid as uuid_mod
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

# Seconds for the whole call.
ABOUT_TIMEOUT = 10.0
SEND_TIMEOUT_JSON_RPC = 30.0  # signal-cli may fetch keys and profiles for a new contact
SEND_TIMEOUT_CLI = 180.0  # normal/native mode: a JVM starts for every call
TYPING_TIMEOUT = 5.0
CONTACT_TIMEOUT = 30.0
ATTACHMENT_TIMEOUT = 60.0
DELETE_TIMEOUT = 15.0
IDENTITY_TIMEOUT = 15.0
TRUST_TIMEOUT = 30.0
CHALLENGE_TIMEOUT = 30.0
CONNECT_TIMEOUT = 5.0

ATTACHMENT_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


class SignalApiError(Exception):
    """signal-cli-rest-api did not answer usably. The message is a kind, never content."""

    def __init__(self, kind: str, status: int | None = None) -> None:
        super().__init__(kind)
        self.kind = kind
        self.status = status


@dataclass(frozen=True)
class SignalIdentity:
    """One contact's identity key as signal-cli knows it (GET /v1/identities/{number}).

    `address` is the contact's ACI (a UUID), what Vigil stores; the phone number the API also
    lists is never kept. `status` is signal-cli's trust level: TRUSTED_VERIFIED,
    TRUSTED_UNVERIFIED or UNTRUSTED (a changed key nobody confirmed yet). `safety_number` is
    what both phones show for the chat with the bot, to compare in person.
    """

    address: str
    status: str
    safety_number: str
    fingerprint: str
    added_ms: int | None

    @property
    def trusted(self) -> bool:
        return self.status in ("TRUSTED_VERIFIED", "TRUSTED_UNVERIFIED")


def canonical_uuid(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        return str(uuid_mod.UUID(value))
    except ValueError:
        return None


def is_attachment_id(value: str) -> bool:
    """signal-cli names attachment files like `n_mhLABBAI_ol9OG_ab6.jpg`; anything else
    (a path, "..") is never put into a URL."""
    return 0 < len(value) <= 128 and value[0] not in "." and set(value) <= ATTACHMENT_ID_CHARS


def error_text(resp: httpx.Response) -> str:
    """The `error` of an error body (`{"error": "…"}`), or the raw text."""
    try:
        body = resp.json()
    except ValueError:
        return resp.text
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return body["error"]
    return ""


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


class SignalRest:
    """One httpx client for one account on one signal-cli-rest-api."""

    def __init__(self, base_url: str, number: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.number = number
        self._client: httpx.AsyncClient | None = None

    @property
    def number_path(self) -> str:
        return quote(self.number, safe="+")

    @property
    def ws_url(self) -> str:
        scheme, _, rest = self.base_url.partition("://")
        ws_scheme = "wss" if scheme == "https" else "ws"
        return f"{ws_scheme}://{rest}/v1/receive/{self.number_path}"

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None or self._client.is_closed:
            self._client = httpx.AsyncClient(
                base_url=self.base_url,
                timeout=httpx.Timeout(30.0, connect=CONNECT_TIMEOUT),
                trust_env=False,  # never route the unauthenticated API through a proxy
                headers={"User-Agent": "vigil"},
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def request(
        self, method: str, path: str, deadline: float, **kwargs: Any
    ) -> httpx.Response:
        """One call, bounded by `deadline` seconds in all (TimeoutError when it passes)."""
        timeout = httpx.Timeout(deadline, connect=min(CONNECT_TIMEOUT, deadline))
        async with asyncio.timeout(deadline):
            return await self.client.request(method, path, timeout=timeout, **kwargs)

    # -- general --------------------------------------------------------------------------

    async def about(self, deadline: float = ABOUT_TIMEOUT) -> tuple[str, str]:
        """(mode, version); ValueError for an answer that is not signal-cli-rest-api's."""
        resp = await self.request("GET", "/v1/about", deadline)
        resp.raise_for_status()
        about = resp.json()
        mode = about.get("mode") if isinstance(about, dict) else None
        if mode not in ("json-rpc", "normal", "native"):
            raise ValueError("unknown mode")
        version = about.get("version")
        return mode, version if isinstance(version, str) and len(version) < 40 else "unknown"

    # -- sending --------------------------------------------------------------------------

    async def send(self, body: dict[str, Any], deadline: float) -> httpx.Response:
        return await self.request("POST", "/v2/send", deadline, json=body)

    async def typing(self, chat: str, on: bool) -> None:
        """Best effort: a typing indicator that fails or hangs is simply not shown."""
        try:
            await self.request(
                "PUT" if on else "DELETE",
                f"/v1/typing-indicator/{self.number_path}",
                TYPING_TIMEOUT,
                json={"recipient": chat},
            )
        except (httpx.HTTPError, TimeoutError):
            return

    async def update_contact(self, chat: str, seconds: int) -> int:
        """PUT /v1/contacts/{number}: the chat's disappearing-messages timer; the status."""
        resp = await self.request(
            "PUT",
            f"/v1/contacts/{self.number_path}",
            CONTACT_TIMEOUT,
            json={"recipient": chat, "expiration_in_seconds": int(seconds)},
        )
        return resp.status_code

    async def submit_challenge(self, token: str, captcha: str) -> httpx.Response:
        return await self.request(
            "POST",
            f"/v1/accounts/{self.number_path}/rate-limit-challenge",
            CHALLENGE_TIMEOUT,
            json={"challenge_token": token, "captcha": captcha},
        )

    # -- attachments ----------------------------------------------------------------------

    async def list_attachments(self) -> list[str]:
        resp = await self.request("GET", "/v1/attachments", IDENTITY_TIMEOUT)
        names = resp.json() if resp.status_code == 200 else []
        return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []

    async def get_attachment(self, att_id: str, max_bytes: int) -> bytes | None:
        """The file's bytes, reading no more than `max_bytes`; None when larger or absent."""
        async with asyncio.timeout(ATTACHMENT_TIMEOUT):
            timeout = httpx.Timeout(ATTACHMENT_TIMEOUT, connect=CONNECT_TIMEOUT)
            path = f"/v1/attachments/{quote(att_id)}"
            async with self.client.stream("GET", path, timeout=timeout) as resp:
                if resp.status_code != 200:
                    return None
                declared = _int(resp.headers.get("content-length"))
                if declared is not None and declared > max_bytes:
                    return None
                data = bytearray()
                async for chunk in resp.aiter_bytes():
                    data += chunk
                    if len(data) > max_bytes:
                        return None
                return bytes(data)

    async def delete_attachment(self, att_id: str) -> bool:
        """True when the file is gone (deleted now, or already absent)."""
        resp = await self.request("DELETE", f"/v1/attachments/{quote(att_id)}", DELETE_TIMEOUT)
        return resp.status_code in (200, 204, 404)

    # -- identities -----------------------------------------------------------------------

    async def identities(self) -> list[SignalIdentity]:
        """Every identity key signal-cli holds for this account. Upstream answers 500 when
        signal-cli fails; that, a timeout and a refused connection raise SignalApiError."""
        try:
            resp = await self.request("GET", f"/v1/identities/{self.number_path}", IDENTITY_TIMEOUT)
        except (httpx.HTTPError, TimeoutError) as exc:
            raise SignalApiError(type(exc).__name__) from None
        if resp.status_code != 200:
            raise SignalApiError("identities_failed", resp.status_code)
        try:
            entries = resp.json()
        except ValueError:
            raise SignalApiError("identities_unreadable") from None
        found = []
        for entry in entries if isinstance(entries, list) else []:
            if not isinstance(entry, dict):
                continue
            address = canonical_uuid(entry.get("uuid"))
            if address is None:
                continue  # an identity known only by number: Vigil never addresses those
            found.append(
                SignalIdentity(
                    address=address,
                    status=str(entry.get("status") or ""),
                    safety_number=str(entry.get("safety_number") or ""),
                    fingerprint=str(entry.get("fingerprint") or ""),
                    added_ms=_int(entry.get("added")),
                )
            )
        return found

    async def trust(self, address: str, safety_number: str) -> bool:
        """PUT /v1/identities/{number}/trust/{address} with the safety number checked in
        person. False when signal-cli refuses it (the number does not match the key it holds
        now); SignalApiError when the API cannot be asked."""
        try:
            resp = await self.request(
                "PUT",
                f"/v1/identities/{self.number_path}/trust/{quote(address)}",
                TRUST_TIMEOUT,
                json={"verified_safety_number": safety_number},
            )
        except (httpx.HTTPError, TimeoutError) as exc:
            raise SignalApiError(type(exc).__name__) from None
        if resp.status_code in (200, 204):
            return True
        if resp.status_code == 400:
            return False
        raise SignalApiError("trust_failed", resp.status_code)

    # -- receiving (normal/native mode) ---------------------------------------------------

    async def receive(self, params: dict[str, str], deadline: float) -> httpx.Response:
        return await self.request("GET", f"/v1/receive/{self.number_path}", deadline, params=params)
