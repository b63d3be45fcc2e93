"""A loopback fake of signal-cli-rest-api that checks requests against its swagger spec.

Its answers follow the **real** REST layer as observed through `../shared/signal-cli-rest-api/`
(upstream HEAD a08db23 in json-rpc mode in front of signal-cli 0.14's daemon), not the
release-0.100 spec where the two differ:
* `POST /v2/send` answers `201 [{"timestamp": "…"}]`, an array with a string timestamp (the
  release's bare object is still available: `response_shape="object"`); a per-recipient failure
  can sit inside a 201 (`"errors": {"recipients": [{…, "reason"}]}`);
* a rate limit is 429 `{"error", "challenge_tokens", "account"}` (json-rpc); a changed
  safety number is 400 "Unable to complete request due to untrusted recipient keys"; an
  unregistered user 400 "The user … is not registered.";
* identities: `GET /v1/identities/{number}` (errors answer 500), `PUT …/trust/{who}`; a
  changed key turns that person's incoming messages into `UntrustedIdentityException` frames
  without content, which signal-cli re-emits readable once the key is trusted;
* `POST /v1/accounts/{number}/rate-limit-challenge`: 204, or 400 for a rejected captcha;
* a call can hang for ever (fault "hang"), as upstream's `getRaw` race does.

One deliberate difference, for deterministic tests: frames written back to back all reach the
client (each WebSocket client has a queue), where the real layer drops a frame while its
writer is busy (upstream #834). `drop_when_busy=True` reproduces that drop; the loss bench
measures the real layer itself.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import collections
import concurrent.futures
import copy
import dataclasses
import functools
import hashlib
import json
import logging
import mimetypes
import re
import secrets
import signal
import socket
import sys
import threading
import time
import uuid as uuid_mod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from aiohttp import WSMsgType, web

log = logging.getLogger("fake_signal")

T = TypeVar("T")

Mode = Literal["json-rpc", "json-rpc-native", "normal", "native"]
FaultKind = Literal[
    "untrusted",
    "unregistered",
    "rate_limit",
    "server_error",
    "error",
    "delay",
    "hang",
    "recipient_error",
]
FAULT_KINDS = (
    "untrusted", "unregistered", "rate_limit", "server_error", "error", "delay", "hang",
    "recipient_error",
)  # fmt: skip

# --- Upstream texts (src/api/api.go, src/client/client.go, signal-cli), verbatim. -------------

INVALID_REQUEST = "Couldn't process request - invalid request"
NO_RECIPIENT = "Couldn't process request - please provide at least one recipient"
NO_NUMBER = "Couldn't process request - please provide a valid number"
NUMBER_MISSING = "Couldn't process request - number missing"
RECIPIENT_MISSING = "Couldn't process request - recipient missing"
REACTION_MISSING = "Couldn't process request - reaction missing"
TARGET_AUTHOR_MISSING = "Couldn't process request - target_author missing"
TIMESTAMP_MISSING = "Couldn't process request - timestamp missing"
RECEIPT_TYPE_INVALID = "Couldn't process request - receipt type must be read or viewed"
STICKER_DELIMITER = "Couldn't process request - please provide valid sticker delimiter"
VIEW_ONCE_NO_ATTACHMENT = "'view_once' can only be set for image attachments!"
MIX_GROUPS_NUMBERS = (
    "Signal Messenger Groups and phone numbers cannot be specified together in one request! "
    "Please split them up into multiple REST API calls."
)
MIX_GROUPS_USERNAMES = (
    "Signal Messenger Groups and usernames cannot be specified together in one request! "
    "Please split them up into multiple REST API calls."
)
MIX_NUMBERS_USERNAMES = (
    "Signal Messenger phone numbers and usernames cannot be specified together in one request! "
    "Please split them up into multiple REST API calls."
)
MULTIPLE_GROUPS = (
    "A signal message cannot be sent to more than one group at once! "
    "Please use multiple REST API calls for that."
)
MISSING_SEPARATOR = (
    "java.lang.RuntimeException: org.signal.libsignal.usernames.MissingSeparatorException: "
    "Username must contain a '.'"
)
UNTRUSTED_IDENTITIES = "Failed to send message due to untrusted identities"  # normal mode
# json-rpc mode: upstream's getRaw rewrites signal-cli's -4 to this text.
UNTRUSTED_KEYS = "Unable to complete request due to untrusted recipient keys"
CAPTCHA_REJECTED = (
    "Captcha rejected, it may be outdated, already used or solved from a different IP address."
)
CHALLENGE_TOKEN_MISSING = "Couldn't process request - challenge token missing"
CAPTCHA_MISSING = "Couldn't process request - captcha missing"
TRUST_BOTH = (
    "Couldn't process request - please either provide a safety number or set "
    "'trust_all_known_keys' to true. But do not set both parameters at once!"
)
TRUST_NEITHER = (
    "Couldn't process request - please either provide a safety number (preferred & more "
    "secure) or set 'trust_all_known_keys' to true"
)
TRUST_FAILED = (
    "Failed to set the trust for this number, make sure the number and the "
    "fingerprint/safety number are correct."
)
IDENTITIES_FAILED = "Connection closed (IOException)"
RATE_LIMITED = "Failed to send message due to rate limiting"
RATE_LIMITED_429 = (
    RATE_LIMITED + ". Use the attached challenge tokens to lift the rate limit restrictions via "
    "the '/v1/accounts/{number}/rate-limit-challenge' endpoint."
)
GENERIC_SEND_FAILURE = "Failed to send message"
# signal-cli's json-rpc daemon answer for an account it does not hold (inferred, not observed).
UNKNOWN_ACCOUNT = "Specified account does not exist"
WS_NOT_UPGRADE = (
    "websocket: the client is not using the websocket protocol: "
    "'upgrade' token not found in 'Connection' header"
)
WS_NOT_WEBSOCKET = (
    "websocket: the client is not using the websocket protocol: "
    "'websocket' token not found in 'Upgrade' header"
)
ATTACHMENT_INVALID_NAME = "Please provide a valid attachment name"
ATTACHMENT_NOT_FOUND = "No attachment with that name found"
GROUP_NOT_FOUND = "No group with that id found"
INVALID_GROUP_ID = "Invalid group id"
INVALID_TRUST_MODE = "Invalid trust mode"
NOT_FOUND_TEXT = "404 page not found"

TRUST_MODES = ("on-first-use", "always", "never")
RECEIVE_QUERY = (
    "timeout",
    "ignore_attachments",
    "ignore_stories",
    "ignore_avatars",
    "ignore_stickers",
    "max_messages",
    "send_read_receipts",
)
RECEIVE_BOOL_QUERY = (
    "ignore_attachments",
    "ignore_stories",
    "ignore_avatars",
    "ignore_stickers",
    "send_read_receipts",
)

# --- Request definitions, copied from swagger.json (only annotations dropped). ----------------
# tests/test_fake_signal.py compares these with the shared spec so drift is caught.

SWAGGER_DEFINITIONS: dict[str, dict[str, Any]] = {
    "api.RateLimitChallengeRequest": {
        "properties": {"captcha": {"type": "string"}, "challenge_token": {"type": "string"}},
        "required": ["captcha", "challenge_token"],
        "type": "object",
    },
    "api.TrustIdentityRequest": {
        "properties": {
            "trust_all_known_keys": {"type": "boolean"},
            "verified_safety_number": {"type": "string"},
        },
        "type": "object",
    },
    "api.Receipt": {
        "properties": {
            "receipt_type": {"enum": ["read", "viewed"], "type": "string"},
            "recipient": {"type": "string"},
            "timestamp": {"type": "integer"},
        },
        "required": ["receipt_type", "recipient", "timestamp"],
        "type": "object",
    },
    "api.RemoveReactionRequest": {
        "properties": {
            "reaction": {"type": "string"},
            "recipient": {"type": "string"},
            "target_author": {"type": "string"},
            "timestamp": {"type": "integer"},
        },
        "required": ["recipient", "target_author", "timestamp"],
        "type": "object",
    },
    "api.SendMessageV2": {
        "properties": {
            "base64_attachments": {"items": {"type": "string"}, "type": "array"},
            "edit_timestamp": {"type": "integer"},
            "link_preview": {"$ref": "#/definitions/data.LinkPreviewType"},
            "mentions": {"items": {"$ref": "#/definitions/data.MessageMention"}, "type": "array"},
            "message": {"type": "string"},
            "notify_self": {"type": "boolean"},
            "number": {"type": "string"},
            "quote_author": {"type": "string"},
            "quote_mentions": {
                "items": {"$ref": "#/definitions/data.MessageMention"},
                "type": "array",
            },
            "quote_message": {"type": "string"},
            "quote_timestamp": {"type": "integer"},
            "recipients": {"items": {"type": "string"}, "type": "array"},
            "sticker": {"type": "string"},
            "text_mode": {"enum": ["normal", "styled"], "type": "string"},
            "view_once": {"type": "boolean"},
        },
        "required": ["message", "number", "recipients"],
        "type": "object",
    },
    "api.SendReactionRequest": {
        "properties": {
            "reaction": {"type": "string"},
            "recipient": {"type": "string"},
            "target_author": {"type": "string"},
            "timestamp": {"type": "integer"},
        },
        "required": ["reaction", "recipient", "target_author", "timestamp"],
        "type": "object",
    },
    "api.TrustModeRequest": {
        "properties": {"trust_mode": {"type": "string"}},
        "required": ["trust_mode"],
        "type": "object",
    },
    "api.TypingIndicatorRequest": {
        "properties": {"recipient": {"type": "string"}},
        "required": ["recipient"],
        "type": "object",
    },
    "api.UpdateContactRequest": {
        "properties": {
            "expiration_in_seconds": {"type": "integer"},
            "name": {"type": "string"},
            "recipient": {"type": "string"},
        },
        "required": ["recipient"],
        "type": "object",
    },
    "api.UpdateGroupRequest": {
        "properties": {
            "base64_avatar": {"type": "string"},
            "description": {"type": "string"},
            "expiration_time": {"type": "integer"},
            "group_link": {
                "enum": ["disabled", "enabled", "enabled-with-approval"],
                "type": "string",
            },
            "name": {"type": "string"},
            "permissions": {"$ref": "#/definitions/data.GroupPermissions"},
        },
        "type": "object",
    },
    "data.GroupPermissions": {
        "properties": {
            "add_members": {"enum": ["only-admins", "every-member"], "type": "string"},
            "edit_group": {"enum": ["only-admins", "every-member"], "type": "string"},
            "send_messages": {"enum": ["only-admins", "every-member"], "type": "string"},
        },
        "required": ["add_members", "edit_group", "send_messages"],
        "type": "object",
    },
    "data.LinkPreviewType": {
        "properties": {
            "base64_thumbnail": {"type": "string"},
            "description": {"type": "string"},
            "title": {"type": "string"},
            "url": {"type": "string"},
        },
        "required": ["base64_thumbnail", "description", "title", "url"],
        "type": "object",
    },
    "data.MessageMention": {
        "properties": {
            "author": {"type": "string"},
            "length": {"type": "integer"},
            "start": {"type": "integer"},
        },
        "required": ["author", "length", "start"],
        "type": "object",
    },
}

# The spec's `required` lists come from swag's --requiredByDefault, not from the handlers, so
# they would reject requests upstream accepts (e.g. a caption-less attachment send has no
# `message`). These are the fields upstream really needs; the rest are optional.
ENFORCED_REQUIRED: dict[str, tuple[str, ...]] = {
    "api.SendMessageV2": ("number", "recipients"),
    "data.LinkPreviewType": ("url", "title"),
    "data.GroupPermissions": (),
}

_TYPE_KINDS = frozenset({"json", "type", "null"})


def _check_schema(value: Any, schema: dict[str, Any], where: str) -> list[tuple[str, str]]:
    """Return (kind, text) problems of `value` against a swagger 2.0 schema (strict objects)."""
    name = None
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = SWAGGER_DEFINITIONS[name]
    if value is None:
        # Go leaves the zero value for null; we flag it because the spec never says nullable.
        return [("null", f"{where} is null, spec says {schema.get('type')}")]
    kind = schema.get("type")
    if kind == "object":
        if not isinstance(value, dict):
            return [("type", f"{where} must be an object")]
        problems: list[tuple[str, str]] = []
        props = schema.get("properties", {})
        label = f" ({name})" if name else ""
        for key, item in value.items():
            if key not in props:
                problems.append(("unknown", f"unknown field {where}.{key}{label}"))
            else:
                problems += _check_schema(item, props[key], f"{where}.{key}")
        required = ENFORCED_REQUIRED.get(name or "", schema.get("required", []))
        for key in required:
            if key not in value:
                problems.append(("missing", f"missing required field {where}.{key}{label}"))
        return problems
    if kind == "array":
        if not isinstance(value, list):
            return [("type", f"{where} must be an array")]
        problems = []
        for i, item in enumerate(value):
            problems += _check_schema(item, schema.get("items", {}), f"{where}[{i}]")
        return problems
    if kind == "string":
        if not isinstance(value, str):
            return [("type", f"{where} must be a string")]
        if "enum" in schema and value not in schema["enum"]:
            return [("enum", f"{where}={value!r} not one of {schema['enum']}")]
        return []
    if kind == "integer":
        # Go's json refuses 1.5 and 1.0 for an int64, and Python parses both as float.
        if isinstance(value, bool) or not isinstance(value, int):
            return [("type", f"{where} must be an integer")]
        return []
    if kind == "boolean":
        if not isinstance(value, bool):
            return [("type", f"{where} must be a boolean")]
        return []
    return []


# --- Small helpers -----------------------------------------------------------------------------

_PHONE_RE = re.compile(r"^\+[0-9 ]+$")
_B64_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _dumps(obj: Any) -> str:
    # Jackson (signal-cli) writes compact JSON with raw UTF-8.
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _b64decode_go(data: str) -> bytes:
    """Decode like Go's base64.StdEncoding, raising ValueError with Go's message."""
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        pos = next((i for i, ch in enumerate(data) if ch not in _B64_ALPHABET), len(data))
        raise ValueError(f"illegal base64 data at input byte {pos}") from None


def classify_recipient(recipient: str) -> tuple[str, str | None]:
    """Classify as upstream's getRecipientType: ("group"|"number"|"uuid"|"username", error)."""
    if recipient.startswith("group."):
        rest = recipient[len("group.") :]
        try:
            once = _b64decode_go(rest)
        except ValueError:
            if len(rest) <= 10:
                return "username", None
            return "group", f"Invalid identifier {recipient}"
        try:
            twice = _b64decode_go(once.decode("ascii"))
        except (ValueError, UnicodeDecodeError):
            return "group", f"Invalid identifier {recipient}"
        if len(twice) == 32:
            return "group", None
        # Upstream really leaves the parenthesis open.
        return "group", f"Invalid Signal group size ({len(twice)}"
    if _PHONE_RE.match(recipient):
        return "number", None
    try:
        uuid_mod.UUID(recipient)
    except ValueError:
        pass
    else:
        return "uuid", None
    if "." not in recipient:
        return "username", MISSING_SEPARATOR
    return "username", None


def group_ids(label_or_id: str) -> tuple[str, str]:
    """Return (internal_id, rest_id) for a group label, internal id or `group.` id.

    internal_id is what envelopes carry in groupInfo.groupId (base64 of 32 bytes);
    rest_id is what /v2/send wants in `recipients` ("group." + base64(internal_id)).
    """
    if label_or_id.startswith("group."):
        try:
            internal = base64.b64decode(label_or_id[6:], validate=True).decode("ascii")
            return internal, label_or_id
        except (binascii.Error, ValueError, UnicodeDecodeError):
            pass
    try:
        if len(base64.b64decode(label_or_id, validate=True)) == 32:
            internal = label_or_id
            return internal, "group." + base64.b64encode(internal.encode()).decode()
    except (binascii.Error, ValueError):
        pass
    internal = base64.b64encode(hashlib.sha256(label_or_id.encode()).digest()).decode()
    return internal, "group." + base64.b64encode(internal.encode()).decode()


def sniff_mime(data: bytes) -> str:
    """Rough stand-in for gabriel-vasile/mimetype, which upstream uses for Content-Type."""
    signatures = [
        (b"\x89PNG\r\n\x1a\n", "image/png"),
        (b"\xff\xd8\xff", "image/jpeg"),
        (b"GIF87a", "image/gif"),
        (b"GIF89a", "image/gif"),
        (b"%PDF-", "application/pdf"),
        (b"OggS", "audio/ogg"),
        (b"PK\x03\x04", "application/zip"),
    ]
    for magic, mime in signatures:
        if data.startswith(magic):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[4:8] == b"ftyp":
        return "video/mp4"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return "application/octet-stream"
    return "text/plain; charset=utf-8"


# --- Records -----------------------------------------------------------------------------------


@dataclass
class SentAttachment:
    """One decoded entry of a /v2/send `base64_attachments`."""

    content_type: str | None
    filename: str | None
    data: bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "content_type": self.content_type,
            "filename": self.filename,
            "size": len(self.data),
            "data_b64": base64.b64encode(self.data).decode(),
        }


@dataclass
class SentMessage:
    """A /v2/send call that passed validation; `delivered` says whether recipients got it."""

    number: str
    recipients: list[str]
    message: str | None
    text_mode: str | None
    base64_attachments: list[str]
    attachments: list[SentAttachment]
    timestamp: int
    delivered: bool
    status: int
    error: str | None = None
    failed_recipients: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["attachments"] = [a.to_json() for a in self.attachments]
        return out


@dataclass
class TypingCall:
    action: Literal["start", "stop"]
    recipient: str
    number: str
    at_ms: int

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class SendFault:
    kind: FaultKind
    delivered: bool = False
    error: str | None = None
    delay: float = 0.0
    challenge_tokens: list[str] | None = None


@dataclass
class _Attachment:
    data: bytes
    content_type: str
    filename: str | None


class _WsClient:
    """One connected /v1/receive WebSocket."""

    def __init__(self, ws: web.WebSocketResponse, number: str, transport: Any, silent: bool):
        self.ws = ws
        self.number = number
        self.transport = transport
        self.silent = silent
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.pings_sent = 0
        self.pongs_received = 0
        self.writing = False  # the writer is in the middle of a frame
        self.tasks: list[asyncio.Task[None]] = []


_PING = None  # queue marker: the writer sends a ping frame instead of text


def _threadsafe(fn: Callable[..., T]) -> Callable[..., T]:
    """Run the method on the fake's loop when called from another thread (in_thread mode)."""

    @functools.wraps(fn)
    def wrapper(self: FakeSignal, *args: Any, **kwargs: Any) -> T:
        return self._call(fn, self, *args, **kwargs)

    return wrapper


# --- The fake ----------------------------------------------------------------------------------


class FakeSignal:
    """signal-cli-rest-api on 127.0.0.1 with recording, fault injection and simulated users."""

    def __init__(
        self,
        *,
        mode: Mode = "json-rpc",
        number: str = "+15550000001",
        account_uuid: str | None = None,
        port: int = 0,
        version: str = "0.100",
        ping_interval: float = 54.0,
        read_limit: int = 512,
        response_shape: Literal["object", "array"] = "array",
        time_scale: float = 1.0,
        json_rpc_ignore_attachments: bool = False,
        drop_when_busy: bool = False,
    ) -> None:
        if mode not in ("json-rpc", "json-rpc-native", "normal", "native"):
            raise ValueError(f"unknown mode {mode!r}")
        self.mode: Mode = mode
        self.number = number
        self.account_uuid = account_uuid or str(uuid_mod.uuid4())
        self.version = version
        self.ping_interval = ping_interval
        self.read_limit = read_limit
        self.response_shape = response_shape
        self.time_scale = time_scale
        self.json_rpc_ignore_attachments = json_rpc_ignore_attachments
        self.drop_when_busy = drop_when_busy
        self._port = port

        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._runner: web.AppRunner | None = None
        self._server: asyncio.AbstractServer | None = None
        self._reaccept: asyncio.TimerHandle | None = None
        self._closing = False
        self._shutdown: asyncio.Event | None = None
        self._arrival: asyncio.Event | None = None
        self._receive_lock: asyncio.Lock | None = None

        self._clients: set[_WsClient] = set()
        self._tasks: set[asyncio.Future[Any]] = set()
        self._silent_new = False
        self._last_ts = 0
        self._faults: collections.deque[SendFault] = collections.deque()
        self.send_delay = 0.0
        self.unregistered: set[str] = set()
        self.untrusted: set[str] = set()
        self.trust_mode = "on-first-use"
        # signal-cli's identity store: ACI -> {"number", "status", "safety_number", ...}
        self._identities: dict[str, dict[str, Any]] = {}
        self._held: dict[str, list[dict[str, Any]]] = {}  # messages kept until a key is trusted
        self._identity_faults = 0
        self._captcha_rejections = 0
        self._reset_records()

    def _reset_records(self) -> None:
        self._violations: list[str] = []
        self._attempts: list[SentMessage] = []
        self._typing: list[TypingCall] = []
        self._receipts: list[dict[str, Any]] = []
        self._reactions: list[dict[str, Any]] = []
        self._contact_updates: list[dict[str, Any]] = []
        self._group_updates: list[dict[str, Any]] = []
        self._settings_updates: list[dict[str, Any]] = []
        self._challenges: list[dict[str, Any]] = []
        self._trusts: list[dict[str, Any]] = []
        self._requests: list[tuple[str, str]] = []
        self._attachments: dict[str, _Attachment] = {}
        self._fetched: list[str] = []
        self._deleted: list[str] = []
        self._dropped: list[dict[str, Any]] = []
        self._pushed: list[dict[str, Any]] = []
        self._client_frames: list[str] = []
        self._queues: dict[str, collections.deque[dict[str, Any]]] = collections.defaultdict(
            collections.deque
        )
        self._groups: dict[str, dict[str, Any]] = {}
        self.connections_total = 0
        self.max_clients_seen = 0

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def json_rpc(self) -> bool:
        return self.mode in ("json-rpc", "json-rpc-native")

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self._port}/v1/receive/{self.number}"

    async def start(self) -> FakeSignal:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._shutdown = asyncio.Event()
        self._arrival = asyncio.Event()
        self._receive_lock = asyncio.Lock()
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
        self._add_routes(app)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        await self._listen()
        return self

    async def stop(self) -> None:
        self._closing = True
        if self._reaccept is not None:
            self._reaccept.cancel()
        if self._arrival is not None:
            self._arrival.set()
        if self._server is not None:
            self._server.close()
            self._server = None
        for client in list(self._clients):
            await client.ws.close(code=1001)
        self._clients.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeSignal:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @classmethod
    def in_thread(cls, **kwargs: Any) -> _ThreadedFake:
        """`with FakeSignal.in_thread(mode=...) as fake:` runs the fake on its own loop."""
        return _ThreadedFake(cls(**kwargs))

    def _bind(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self._port))
        sock.listen(128)
        sock.setblocking(False)
        self._port = sock.getsockname()[1]
        return sock

    async def _listen(self, sock: socket.socket | None = None) -> None:
        assert self._runner is not None and self._runner.server is not None
        sock = sock or self._bind()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._runner.server, sock=sock)

    def _background(self, coro: Any) -> None:
        # Keep a reference: the loop only holds tasks weakly.
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = self._loop
        if (
            loop is None
            or threading.get_ident() == self._loop_thread
            or loop.is_closed()
            or not loop.is_running()
        ):
            return fn(*args, **kwargs)
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            if not fut.set_running_or_notify_cancel():
                return
            try:
                fut.set_result(fn(*args, **kwargs))
            except BaseException as exc:
                fut.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return fut.result(timeout=30)

    # -- inspection (snapshots; safe from any thread) -------------------------------------------

    @property
    def violations(self) -> list[str]:
        return self._call(lambda: list(self._violations))

    def assert_no_violations(self) -> None:
        found = self.violations
        assert not found, "signal-cli-rest-api fake saw contract violations:\n" + "\n".join(found)

    @_threadsafe
    def clear_violations(self) -> None:
        self._violations.clear()

    @property
    def send_attempts(self) -> list[SentMessage]:
        """Every /v2/send that passed validation, including failed and faulted ones."""
        return self._call(lambda: list(self._attempts))

    @property
    def sent(self) -> list[SentMessage]:
        """Sends that reached recipients (also those answered with an error, see faults)."""
        return self._call(lambda: [m for m in self._attempts if m.delivered])

    def sent_to(self, recipient: str) -> list[SentMessage]:
        return [
            m
            for m in self.sent
            if recipient in m.recipients and recipient not in m.failed_recipients
        ]

    @property
    def typing(self) -> list[TypingCall]:
        return self._call(lambda: list(self._typing))

    @property
    def receipts(self) -> list[dict[str, Any]]:
        return self._call(lambda: list(self._receipts))

    @property
    def reactions(self) -> list[dict[str, Any]]:
        return self._call(lambda: list(self._reactions))

    @property
    def contact_updates(self) -> list[dict[str, Any]]:
        return self._call(lambda: list(self._contact_updates))

    @property
    def group_updates(self) -> list[dict[str, Any]]:
        return self._call(lambda: list(self._group_updates))

    @property
    def settings_updates(self) -> list[dict[str, Any]]:
        return self._call(lambda: list(self._settings_updates))

    @property
    def rate_limit_challenges(self) -> list[dict[str, Any]]:
        return self._call(lambda: list(self._challenges))

    @property
    def trusts(self) -> list[dict[str, Any]]:
        """Every trust request that reached signal-cli (body plus `recipient`, `result`)."""
        return self._call(lambda: list(self._trusts))

    @property
    def identities(self) -> dict[str, dict[str, Any]]:
        return self._call(lambda: copy.deepcopy(self._identities))

    @property
    def held(self) -> int:
        """Messages signal-cli keeps undecrypted until their sender's new key is trusted."""
        return self._call(lambda: sum(len(v) for v in self._held.values()))

    @property
    def requests(self) -> list[tuple[str, str]]:
        """(method, path?query) of every non-control request, in order."""
        return self._call(lambda: list(self._requests))

    @property
    def attachment_ids(self) -> list[str]:
        return self._call(lambda: list(self._attachments))

    @property
    def fetched_attachments(self) -> list[str]:
        return self._call(lambda: list(self._fetched))

    @property
    def deleted_attachments(self) -> list[str]:
        return self._call(lambda: list(self._deleted))

    @property
    def dropped_frames(self) -> list[dict[str, Any]]:
        """Frames lost because no (non-silent) WebSocket client for the account was connected."""
        return self._call(lambda: list(self._dropped))

    @property
    def pushed_frames(self) -> list[dict[str, Any]]:
        """Frames handed to at least one client (json-rpc) or queued (normal/native)."""
        return self._call(lambda: list(self._pushed))

    @property
    def client_frames(self) -> list[str]:
        """Data frames clients sent on the receive socket (upstream reads and discards them)."""
        return self._call(lambda: list(self._client_frames))

    @property
    def client_count(self) -> int:
        return self._call(lambda: len(self._clients))

    @property
    def pending(self) -> int:
        """Envelopes queued for a normal/native-mode GET receive."""
        return self._call(lambda: len(self._queues[self.number]))

    @_threadsafe
    def ws_stats(self) -> list[dict[str, Any]]:
        return [
            {
                "number": c.number,
                "silent": c.silent,
                "pings_sent": c.pings_sent,
                "pongs_received": c.pongs_received,
            }
            for c in self._clients
        ]

    @_threadsafe
    def snapshot(self) -> dict[str, Any]:
        """Everything recorded, JSON-ready (what GET /_control/state returns)."""
        return {
            "mode": self.mode,
            "number": self.number,
            "url": self.url,
            "violations": list(self._violations),
            "sent": [m.to_json() for m in self._attempts if m.delivered],
            "send_attempts": [m.to_json() for m in self._attempts],
            "typing": [t.to_json() for t in self._typing],
            "receipts": list(self._receipts),
            "reactions": list(self._reactions),
            "contact_updates": list(self._contact_updates),
            "group_updates": list(self._group_updates),
            "settings_updates": list(self._settings_updates),
            "rate_limit_challenges": list(self._challenges),
            "trusts": list(self._trusts),
            "identities": copy.deepcopy(self._identities),
            "attachments": list(self._attachments),
            "fetched_attachments": list(self._fetched),
            "deleted_attachments": list(self._deleted),
            "dropped_frames": list(self._dropped),
            "pushed_frames": list(self._pushed),
            "client_frames": list(self._client_frames),
            "clients": len(self._clients),
            "connections_total": self.connections_total,
            "max_clients_seen": self.max_clients_seen,
            "pending": len(self._queues[self.number]),
            "requests": [list(r) for r in self._requests],
            "ws": self.ws_stats(),
        }

    @_threadsafe
    def reset(self) -> None:
        """Forget recordings, faults and queued envelopes (connections stay)."""
        self._reset_records()
        self.connections_total = self.max_clients_seen = len(self._clients)
        self._faults.clear()
        self._identity_faults = self._captcha_rejections = 0

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not self._call(predicate):
            if time.monotonic() > deadline:
                raise TimeoutError("condition not met in time")
            await asyncio.sleep(0.01)

    def wait_until_blocking(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not self._call(predicate):
            if time.monotonic() > deadline:
                raise TimeoutError("condition not met in time")
            time.sleep(0.01)

    async def wait_for_clients(self, n: int, timeout: float = 5.0) -> None:
        await self.wait_until(lambda: len(self._clients) == n, timeout)

    def wait_for_clients_blocking(self, n: int, timeout: float = 5.0) -> None:
        self.wait_until_blocking(lambda: len(self._clients) == n, timeout)

    async def wait_for_sent(self, n: int, timeout: float = 5.0) -> list[SentMessage]:
        await self.wait_until(lambda: sum(m.delivered for m in self._attempts) >= n, timeout)
        return self.sent

    def wait_for_sent_blocking(self, n: int, timeout: float = 5.0) -> list[SentMessage]:
        self.wait_until_blocking(lambda: sum(m.delivered for m in self._attempts) >= n, timeout)
        return self.sent

    # -- fault injection ------------------------------------------------------------------------

    @_threadsafe
    def inject_send_fault(
        self,
        kind: FaultKind,
        count: int = 1,
        *,
        delivered: bool | None = None,
        error: str | None = None,
        delay: float = 0.0,
        challenge_tokens: list[str] | None = None,
    ) -> None:
        """Make the next `count` valid /v2/send calls fail (or only wait, kind="delay").

        delivered=True records the message as delivered although an error is answered,
        as upstream does sometimes (#586, #881). kind="hang" never answers (upstream's lost
        answer: the message went out, so it counts as delivered unless told otherwise).
        kind="recipient_error" answers 201 with a per-recipient `errors` entry whose reason is
        `error` (default UNREGISTERED_FAILURE).
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}")
        went_out = delivered if delivered is not None else kind == "hang"
        for _ in range(count):
            self._faults.append(
                SendFault(kind, went_out, error, delay, list(challenge_tokens or []) or None)
            )

    @_threadsafe
    def clear_send_faults(self) -> None:
        self._faults.clear()

    @_threadsafe
    def fail_identities(self, count: int = 1) -> None:
        """The next `count` GET /v1/identities answer 500, as upstream does on any error."""
        self._identity_faults += count

    @_threadsafe
    def reject_captcha(self, count: int = 1) -> None:
        """The next `count` rate-limit challenges are refused by Signal (signal-cli's -6)."""
        self._captcha_rejections += count

    # -- identities (signal-cli's trust store, mode on-first-use) -------------------------------

    def _identity(self, uuid: str, number: str | None = None) -> dict[str, Any]:
        """The identity for `uuid`, trusted on first use as signal-cli does."""
        ident = self._identities.get(uuid)
        if ident is None:
            ident = self._identities[uuid] = {
                "number": number or "",
                "uuid": uuid,
                "status": "TRUSTED_UNVERIFIED",
                "added": str(_now_ms()),
                **self._key_material(uuid, 0),
            }
        elif number and not ident["number"]:
            ident["number"] = number
        return ident

    def _key_material(self, uuid: str, generation: int) -> dict[str, str]:
        digest = hashlib.sha256(f"{uuid}:{generation}:{self.number}".encode()).digest()
        digits = "".join(str(b % 10) for b in (digest * 3)[:60])
        fingerprint = "05 " + " ".join(f"{b:02x}" for b in digest[:32])
        return {"safety_number": digits, "fingerprint": fingerprint, "generation": str(generation)}

    @_threadsafe
    def add_identity(self, uuid: str, number: str | None = None) -> dict[str, Any]:
        """signal-cli has met this person (trusted on first use); returns the entry."""
        return copy.deepcopy(self._identity(uuid, number))

    @_threadsafe
    def change_identity(self, uuid: str) -> dict[str, Any]:
        """The person reinstalled Signal, or someone else now holds the number: a new key,
        UNTRUSTED. Sends to them answer 400 (untrusted keys); their messages arrive as
        UntrustedIdentityException frames without content until the key is trusted."""
        ident = self._identity(uuid)
        ident.update(self._key_material(uuid, int(ident["generation"]) + 1))
        ident["status"] = "UNTRUSTED"
        ident["added"] = str(_now_ms())
        self.untrusted.add(uuid)
        return copy.deepcopy(ident)

    def _trust(self, who: str, body: dict[str, Any]) -> str | None:
        """signal-cli's `trust`; returns its error text, or None when the trust level changed
        (signal-cli refuses a trust that changes nothing)."""
        ident = self._identities.get(who) or next(
            (i for i in self._identities.values() if i["number"] and i["number"] == who), None
        )
        if ident is None:
            return TRUST_FAILED
        if body.get("trust_all_known_keys"):
            if ident["status"] == "TRUSTED_UNVERIFIED":
                return TRUST_FAILED.replace(" and the fingerprint/safety number", "")
            ident["status"] = "TRUSTED_UNVERIFIED"
        else:
            given = "".join(str(body.get("verified_safety_number", "")).split())
            if len(given) != 60 or not given.isdigit():
                return (
                    "Safety number has invalid format, either specify the old hex fingerprint "
                    "or the new safety number"
                )
            if given != ident["safety_number"] or ident["status"] == "TRUSTED_VERIFIED":
                return TRUST_FAILED
            ident["status"] = "TRUSTED_VERIFIED"
        self.untrusted.discard(ident["uuid"])
        for kwargs in self._held.pop(ident["uuid"], []):
            # signal-cli retries its cached messages once the key is trusted.
            self._user_sends(**kwargs)
        return None

    @_threadsafe
    def set_send_delay(self, seconds: float) -> None:
        self.send_delay = seconds

    @_threadsafe
    def set_response_shape(self, shape: Literal["object", "array"]) -> None:
        """201 body: "object" is release 0.100's `{"timestamp"}`, "array" unreleased HEAD's."""
        if shape not in ("object", "array"):
            raise ValueError(shape)
        self.response_shape = shape

    @_threadsafe
    def mark_unregistered(self, *recipients: str) -> None:
        self.unregistered.update(recipients)

    @_threadsafe
    def mark_untrusted(self, *recipients: str) -> None:
        self.untrusted.update(recipients)

    @_threadsafe
    def drop_connections(self, clean: bool = False) -> int:
        """Cut every receive WebSocket now; returns how many.

        clean=False closes TCP without a close frame (the container died: client sees 1006);
        clean=True sends close 1001 first.
        """
        clients = list(self._clients)
        self._clients.clear()
        for client in clients:
            for task in client.tasks:
                task.cancel()
            if clean:
                self._background(client.ws.close(code=1001))
            elif client.transport is not None:
                client.transport.close()
        return len(clients)

    @_threadsafe
    def go_silent(self, also_new: bool = False) -> None:
        """Half-open: current sockets stay open but get no frames, pings or pongs any more."""
        for client in self._clients:
            client.silent = True
        self._silent_new = also_new

    @_threadsafe
    def end_silence(self) -> None:
        """New connections behave again (already-silent ones stay dead, as a half-open would)."""
        self._silent_new = False

    @_threadsafe
    def refuse_connections(self, seconds: float | None = None) -> None:
        """Close the listening socket (TCP connection refused); reopen after `seconds`.

        Established connections (including keep-alive HTTP) are not touched.
        """
        if self._reaccept is not None:
            self._reaccept.cancel()
            self._reaccept = None
        if self._server is not None:
            self._server.close()
            self._server = None
        if seconds is not None and self._loop is not None:
            self._reaccept = self._loop.call_later(seconds, self.accept_connections)

    @_threadsafe
    def accept_connections(self) -> None:
        if self._reaccept is not None:
            self._reaccept.cancel()
            self._reaccept = None
        if self._server is not None or self._closing:
            return
        # Bound and listening right away, so callers can connect as soon as this returns.
        sock = self._bind()
        self._background(self._listen(sock))

    # -- simulated users ------------------------------------------------------------------------

    def _next_ts(self) -> int:
        ts = max(_now_ms(), self._last_ts + 1)
        self._last_ts = ts
        return ts

    def _envelope_head(
        self,
        uuid: str,
        number: str | None,
        name: str | None,
        device: int,
        timestamp: int | None,
    ) -> dict[str, Any]:
        ts = timestamp if timestamp is not None else self._next_ts()
        return {
            "source": number or uuid,
            "sourceNumber": number,
            "sourceUuid": uuid,
            "sourceName": name,
            "sourceDevice": device,
            "timestamp": ts,
            "serverReceivedTimestamp": ts + 150,
            "serverDeliveredTimestamp": ts + 152,
        }

    def _group_info(
        self, group_id: str | None, group_name: str | None, member: str
    ) -> dict[str, Any] | None:
        if group_id is None:
            return None
        internal, rest = group_ids(group_id)
        group = self._groups.setdefault(
            internal,
            {
                "name": group_name or group_id,
                "internal_id": internal,
                "id": rest,
                "members": [self.number],
                "revision": 1,
            },
        )
        if member not in group["members"]:
            group["members"].append(member)
        return {
            "groupId": internal,
            "groupName": group["name"],
            "revision": group["revision"],
            "type": "DELIVER",
        }

    def _store_attachment(self, spec: Any, ts: int) -> dict[str, Any]:
        width = height = None
        filename: str | None = None
        if isinstance(spec, bytes | bytearray):
            data, ctype = bytes(spec), sniff_mime(bytes(spec)).split(";")[0]
        elif isinstance(spec, tuple):
            ctype, data = spec[0], bytes(spec[1])
            filename = spec[2] if len(spec) > 2 else None
        elif isinstance(spec, dict):
            raw = spec.get("data")
            data = bytes(raw) if raw is not None else base64.b64decode(spec["data_b64"])
            ctype = spec.get("content_type") or sniff_mime(data).split(";")[0]
            filename = spec.get("filename")
            width, height = spec.get("width"), spec.get("height")
        else:
            raise TypeError("attachment must be bytes, (content_type, data[, filename]) or dict")
        ext = mimetypes.guess_extension(ctype) or ""
        att_id = secrets.token_urlsafe(15)[:20] + ext
        self._attachments[att_id] = _Attachment(data, ctype, filename)
        entry: dict[str, Any] = {
            "contentType": ctype,
            "filename": filename,
            "id": att_id,
            "size": len(data),
        }
        if width is not None or ctype.startswith("image/"):
            entry["width"] = width or 1024
            entry["height"] = height or 768
        entry["caption"] = None
        entry["uploadTimestamp"] = ts - 500
        return entry

    @_threadsafe
    def add_attachment(
        self, data: bytes | None = None, content_type: str | None = None, *, data_b64: str = ""
    ) -> str:
        """Put a file into the attachment store directly; returns its id."""
        raw = data if data is not None else base64.b64decode(data_b64)
        return self._store_attachment({"data": raw, "content_type": content_type}, _now_ms())["id"]

    @_threadsafe
    def user_sends(
        self,
        uuid: str,
        text: str | None,
        number: str | None = None,
        *,
        timestamp: int | None = None,
        attachments: Iterable[Any] = (),
        group_id: str | None = None,
        group_name: str | None = None,
        name: str | None = "Test User",
        device: int = 1,
        expires_in_seconds: int = 0,
        view_once: bool = False,
        quote: dict[str, Any] | None = None,
        mentions: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """A user's dataMessage reaches the bot. number=None is a user hiding their number.

        attachments: bytes | (content_type, data[, filename]) | {"content_type", "data" or
        "data_b64", "filename", "width", "height"}. group_id: a label, an internal id or a
        `group.` id (see group_ids()). Returns the frame (also what replay() accepts).
        From a sender whose key changed (change_identity) signal-cli cannot decrypt: the
        frame is an UntrustedIdentityException without content, and the message is held
        until the key is trusted, then delivered with the same timestamp.
        """
        kwargs = dict(
            uuid=uuid, text=text, number=number, timestamp=timestamp,
            attachments=list(attachments), group_id=group_id, group_name=group_name,
            name=name, device=device, expires_in_seconds=expires_in_seconds,
            view_once=view_once, quote=quote, mentions=mentions,
        )  # fmt: skip
        ident = self._identity(uuid, number)
        if ident["status"] == "UNTRUSTED":
            kwargs["timestamp"] = timestamp if timestamp is not None else self._next_ts()
            self._held.setdefault(uuid, []).append(kwargs)
            env = self._envelope_head(uuid, number, name, device, kwargs["timestamp"])
            return self._push(
                env,
                exception={
                    "message": f"Untrusted identity: {uuid}",
                    "type": "UntrustedIdentityException",
                },
            )
        return self._user_sends(**kwargs)

    def _user_sends(
        self,
        uuid: str,
        text: str | None,
        number: str | None,
        timestamp: int | None,
        attachments: list[Any],
        group_id: str | None,
        group_name: str | None,
        name: str | None,
        device: int,
        expires_in_seconds: int,
        view_once: bool,
        quote: dict[str, Any] | None,
        mentions: list[dict[str, Any]] | None,
    ) -> dict[str, Any]:
        env = self._envelope_head(uuid, number, name, device, timestamp)
        data: dict[str, Any] = {
            "timestamp": env["timestamp"],
            "message": text,
            "expiresInSeconds": expires_in_seconds,
            "viewOnce": view_once,
        }
        atts = [self._store_attachment(a, env["timestamp"]) for a in attachments]
        if atts:
            data["attachments"] = atts
        if mentions:
            data["mentions"] = mentions
        if quote:
            data["quote"] = quote
        info = self._group_info(group_id, group_name, uuid)
        if info:
            data["groupInfo"] = info
        env["dataMessage"] = data
        return self._push(env)

    @_threadsafe
    def user_sets_expiration(
        self, uuid: str, seconds: int, number: str | None = None, *, name: str | None = "Test User"
    ) -> dict[str, Any]:
        """The user changes the disappearing-messages timer of the 1:1 chat."""
        env = self._envelope_head(uuid, number, name, 1, None)
        env["dataMessage"] = {
            "timestamp": env["timestamp"],
            "message": None,
            "expiresInSeconds": seconds,
            "isExpirationUpdate": True,
            "viewOnce": False,
        }
        return self._push(env)

    @_threadsafe
    def user_typing(
        self,
        uuid: str,
        action: Literal["STARTED", "STOPPED"] = "STARTED",
        number: str | None = None,
        *,
        group_id: str | None = None,
        name: str | None = "Test User",
    ) -> dict[str, Any]:
        env = self._envelope_head(uuid, number, name, 1, None)
        typing: dict[str, Any] = {"action": action, "timestamp": env["timestamp"]}
        if group_id is not None:
            typing["groupId"] = group_ids(group_id)[0]
        env["typingMessage"] = typing
        return self._push(env)

    @_threadsafe
    def user_receipt(
        self,
        uuid: str,
        timestamps: list[int],
        kind: Literal["delivery", "read", "viewed"] = "delivery",
        number: str | None = None,
        *,
        name: str | None = "Test User",
    ) -> dict[str, Any]:
        env = self._envelope_head(uuid, number, name, 1, None)
        env["receiptMessage"] = {
            "when": env["timestamp"],
            "isDelivery": kind == "delivery",
            "isRead": kind == "read",
            "isViewed": kind == "viewed",
            "timestamps": list(timestamps),
        }
        return self._push(env)

    @_threadsafe
    def user_reacts(
        self,
        uuid: str,
        emoji: str,
        target_author_uuid: str,
        target_timestamp: int,
        number: str | None = None,
        *,
        remove: bool = False,
        group_id: str | None = None,
        name: str | None = "Test User",
    ) -> dict[str, Any]:
        env = self._envelope_head(uuid, number, name, 1, None)
        data: dict[str, Any] = {
            "timestamp": env["timestamp"],
            "message": None,
            "expiresInSeconds": 0,
            "viewOnce": False,
            "reaction": {
                "emoji": emoji,
                "targetAuthor": "",
                "targetAuthorNumber": "",
                "targetAuthorUuid": target_author_uuid,
                "targetSentTimestamp": target_timestamp,
                "isRemove": remove,
            },
        }
        info = self._group_info(group_id, None, uuid)
        if info:
            data["groupInfo"] = info
        env["dataMessage"] = data
        return self._push(env)

    @_threadsafe
    def user_edits(
        self,
        uuid: str,
        target_timestamp: int,
        new_text: str,
        number: str | None = None,
        *,
        name: str | None = "Test User",
    ) -> dict[str, Any]:
        env = self._envelope_head(uuid, number, name, 1, None)
        env["editMessage"] = {
            "targetSentTimestamp": target_timestamp,
            "dataMessage": {
                "timestamp": env["timestamp"],
                "message": new_text,
                "expiresInSeconds": 0,
                "viewOnce": False,
            },
        }
        return self._push(env)

    @_threadsafe
    def user_deletes(
        self, uuid: str, target_timestamp: int, number: str | None = None
    ) -> dict[str, Any]:
        env = self._envelope_head(uuid, number, "Test User", 1, None)
        env["dataMessage"] = {
            "timestamp": env["timestamp"],
            "message": None,
            "expiresInSeconds": 0,
            "viewOnce": False,
            "remoteDelete": {"timestamp": target_timestamp},
        }
        return self._push(env)

    @_threadsafe
    def sync_sent(
        self,
        text: str,
        destination_uuid: str,
        destination_number: str | None = None,
        *,
        expires_in_seconds: int = 0,
    ) -> dict[str, Any]:
        """The account owner's linked phone sent a message (bots must not treat it as input)."""
        env = self._envelope_head(self.account_uuid, self.number, "Bot Owner", 2, None)
        env["syncMessage"] = {
            "sentMessage": {
                "destination": destination_number or destination_uuid,
                "destinationNumber": destination_number,
                "destinationUuid": destination_uuid,
                "timestamp": env["timestamp"],
                "message": text,
                "expiresInSeconds": expires_in_seconds,
                "viewOnce": False,
            }
        }
        return self._push(env)

    @_threadsafe
    def user_exception(
        self,
        uuid: str,
        number: str | None = None,
        *,
        exc_type: str = "UntrustedIdentityException",
        message: str = "Untrusted identity key!",
    ) -> dict[str, Any]:
        """An envelope signal-cli could not decrypt: no content, top-level `exception`."""
        env = self._envelope_head(uuid, number, None, 1, None)
        return self._push(env, exception={"message": message, "type": exc_type})

    @_threadsafe
    def error_frame(self, message: str) -> dict[str, Any]:
        """json-rpc only: the daemon reported an error; every client gets {"error": ...}."""
        frame = {"error": message}
        self._deliver(frame, all_accounts=True)
        return frame

    @_threadsafe
    def push(self, frame_or_envelope: dict[str, Any], account: str | None = None) -> dict[str, Any]:
        """Deliver a raw frame ({"envelope", "account"}) or a bare envelope."""
        if "envelope" in frame_or_envelope:
            frame = copy.deepcopy(frame_or_envelope)
        else:
            frame = {"envelope": copy.deepcopy(frame_or_envelope), "account": self.number}
        if account is not None:
            frame["account"] = account
        self._deliver(frame)
        return frame

    replay = push  # the same envelope again: Signal redelivery / duplicate testing

    def _push(self, envelope: dict[str, Any], exception: dict[str, str] | None = None) -> dict:
        frame: dict[str, Any] = {"envelope": envelope, "account": self.number}
        if exception:
            frame["exception"] = exception
        self._deliver(frame)
        return copy.deepcopy(frame)

    def _deliver(self, frame: dict[str, Any], all_accounts: bool = False) -> None:
        frame = copy.deepcopy(frame)
        if not self.json_rpc:
            if "envelope" not in frame:
                return  # error frames do not exist for a CLI receive
            self._queues[frame.get("account", self.number)].append(frame)
            self._pushed.append(frame)
            if self._arrival is not None:
                self._arrival.set()
            return
        if self.json_rpc_ignore_attachments:
            self._forget_attachments(frame)
        account = frame.get("account")
        live = [c for c in self._clients if not c.silent and (all_accounts or c.number == account)]
        if not live:
            # Upstream's non-blocking send to unbuffered channels: no reader, message gone.
            self._dropped.append(frame)
            return
        if self.drop_when_busy:
            # Upstream hands a frame to a writer without waiting: a busy writer loses it.
            idle = [c for c in live if not c.writing and c.queue.empty()]
            if not idle:
                self._dropped.append(frame)
                return
            live = idle
        text = _dumps(frame)
        for client in live:
            client.queue.put_nowait(text)
        self._pushed.append(frame)

    def _forget_attachments(self, frame: dict[str, Any]) -> None:
        data = frame.get("envelope", {}).get("dataMessage") or {}
        for att in data.get("attachments") or []:
            self._attachments.pop(att.get("id"), None)

    @_threadsafe
    def add_group(
        self, name: str, members: Iterable[str] = (), group_id: str | None = None
    ) -> tuple[str, str]:
        """Make a group known to GET /v1/groups; returns (internal_id, rest_id)."""
        internal, rest = group_ids(group_id or name)
        self._groups[internal] = {
            "name": name,
            "internal_id": internal,
            "id": rest,
            "members": [self.number, *members],
            "revision": 1,
        }
        return internal, rest

    # -- HTTP plumbing --------------------------------------------------------------------------

    def _violate(self, text: str) -> None:
        log.warning("contract violation: %s", text)
        self._violations.append(text)

    @staticmethod
    def _err(status: int, message: str, **extra: Any) -> web.Response:
        return web.json_response({"error": message, **extra}, status=status)

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        control = request.path.startswith("/_control/")
        if not control:
            self._requests.append((request.method, request.path_qs))
        try:
            return await handler(request)
        except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
            if control:
                return self._err(404, f"no control action {request.path}")
            # gin has no 405: an unknown method on a known path is a 404 as well.
            self._violate(f"{request.method} {request.path}: no such route upstream")
            return web.Response(
                status=404, text=NOT_FOUND_TEXT, content_type="text/plain", charset="utf-8"
            )

    def _add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/v1/about", self._h_about, allow_head=False)
        r.add_get("/v1/health", self._h_health, allow_head=False)
        r.add_get("/v1/accounts", self._h_accounts, allow_head=False)
        r.add_post("/v2/send", self._h_send)
        r.add_get("/v1/receive/{number}", self._h_receive, allow_head=False)
        r.add_put("/v1/typing-indicator/{number}", self._h_typing)
        r.add_delete("/v1/typing-indicator/{number}", self._h_typing)
        r.add_post("/v1/receipts/{number}", self._h_receipt)
        r.add_post("/v1/reactions/{number}", self._h_reaction)
        r.add_delete("/v1/reactions/{number}", self._h_reaction)
        r.add_get("/v1/attachments", self._h_attachments, allow_head=False)
        r.add_get("/v1/attachments/{attachment}", self._h_attachment_get, allow_head=False)
        r.add_delete("/v1/attachments/{attachment}", self._h_attachment_delete)
        r.add_get("/v1/configuration/{number}/settings", self._h_settings, allow_head=False)
        r.add_post("/v1/configuration/{number}/settings", self._h_settings)
        r.add_put("/v1/contacts/{number}", self._h_contact_update)
        r.add_get("/v1/groups/{number}", self._h_groups, allow_head=False)
        r.add_get("/v1/groups/{number}/{groupid}", self._h_group_get, allow_head=False)
        r.add_put("/v1/groups/{number}/{groupid}", self._h_group_update)
        r.add_post("/v1/accounts/{number}/rate-limit-challenge", self._h_challenge)
        r.add_get("/v1/identities/{number}", self._h_identities, allow_head=False)
        r.add_put("/v1/identities/{number}/trust/{who}", self._h_trust)
        r.add_route("*", "/_control/{action}", self._h_control)

    def _check_number(self, request: web.Request) -> web.Response | None:
        number = request.match_info.get("number", "")
        where = f"{request.method} {request.path}"
        if number == "":
            self._violate(f"{where}: empty number")
            return self._err(400, NUMBER_MISSING)
        if number != self.number:
            self._violate(f"{where}: account {number!r} is not the fake's {self.number!r}")
            return self._err(400, UNKNOWN_ACCOUNT)
        return None

    def _check_query(self, request: web.Request, allowed: Iterable[str]) -> list[str]:
        allowed = set(allowed)
        return [
            f"{request.method} {request.path}: unknown query parameter {key!r}"
            for key in request.query
            if key not in allowed
        ]

    async def _read_json(self, request: web.Request, definition: str) -> tuple[Any, list]:
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            return None, [("json", f"body is not JSON: {raw[:80]!r}")]
        schema = {"$ref": f"#/definitions/{definition}"}
        return body, _check_schema(body, schema, "body")

    def _gate(
        self,
        request: web.Request,
        problems: list[tuple[str, str]],
        checks: Iterable[tuple[Callable[[], bool], str]] = (),
    ) -> web.Response | None:
        """Turn schema problems and upstream's own checks into upstream's answer.

        Order as upstream: bind errors, then the handler's checks (upstream texts), then what
        only the spec forbids (fake-only text, since upstream would silently accept it).
        """
        where = f"{request.method} {request.path}"
        for _, text in problems:
            self._violate(f"{where}: {text}")
        if any(kind in _TYPE_KINDS for kind, _ in problems):
            return self._err(400, INVALID_REQUEST)
        for failed, text in checks:
            if failed():
                if not problems:
                    self._violate(f"{where}: {text}")
                return self._err(400, text)
        if problems:
            return self._err(400, f"fake-signal: {problems[0][1]} (upstream would accept it)")
        return None

    # -- handlers: general ----------------------------------------------------------------------

    async def _h_about(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "versions": ["v1", "v2"],
                "build": 2,
                "mode": "json-rpc" if self.json_rpc else self.mode,
                "version": self.version,
                "capabilities": {"v2/send": ["quotes", "mentions"]},
            }
        )

    async def _h_health(self, request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def _h_accounts(self, request: web.Request) -> web.Response:
        return web.json_response([self.number])

    # -- handlers: send -------------------------------------------------------------------------

    async def _h_send(self, request: web.Request) -> web.Response:
        body, problems = await self._read_json(request, "api.SendMessageV2")
        rejected = self._gate(
            request,
            problems,
            [
                (lambda: not body.get("recipients"), NO_RECIPIENT),
                (lambda: not body.get("number"), NO_NUMBER),
                (lambda: ":" not in body.get("sticker", ":"), STICKER_DELIMITER),
            ],
        )
        if rejected is not None:
            return rejected
        where = "POST /v2/send"
        if body["number"] != self.number:
            self._violate(f"{where}: number {body['number']!r} is not the fake's {self.number!r}")
            return self._err(400, UNKNOWN_ACCOUNT)

        recipients: list[str] = body["recipients"]
        kinds: dict[str, list[str]] = {"group": [], "number": [], "username": []}
        deferred_error: str | None = None
        for recipient in recipients:
            kind, error = classify_recipient(recipient)
            if error and kind == "group":
                self._violate(f"{where}: bad group recipient {recipient!r}: {error}")
                return self._err(400, error)
            kinds["number" if kind == "uuid" else kind].append(recipient)
            if error and deferred_error is None:
                deferred_error = error
        for a, b, text in (
            ("number", "group", MIX_GROUPS_NUMBERS),
            ("username", "group", MIX_GROUPS_USERNAMES),
            ("number", "username", MIX_NUMBERS_USERNAMES),
        ):
            if kinds[a] and kinds[b]:
                self._violate(f"{where}: {text}")
                return self._err(400, text)
        if len(kinds["group"]) > 1:
            self._violate(f"{where}: {MULTIPLE_GROUPS}")
            return self._err(400, MULTIPLE_GROUPS)
        if deferred_error is not None:
            # e.g. a raw groupInfo.groupId used as recipient: signal-cli takes it for a username.
            self._violate(f"{where}: recipient is not a number, UUID or group id: {recipients}")
            return self._err(400, deferred_error)

        attachments: list[SentAttachment] = []
        for entry in body.get("base64_attachments", []):
            try:
                attachments.append(self._decode_send_attachment(entry))
            except ValueError as exc:
                self._violate(f"{where}: bad base64_attachments entry: {exc}")
                return self._err(400, str(exc))
        if body.get("view_once") and not attachments:
            self._violate(f"{where}: {VIEW_ONCE_NO_ATTACHMENT}")
            return self._err(400, VIEW_ONCE_NO_ATTACHMENT)

        fault = self._faults.popleft() if self._faults else None
        delay = self.send_delay + (fault.delay if fault else 0.0)
        if delay:
            await asyncio.sleep(delay)
        if not kinds["group"]:
            for recipient in recipients:
                if classify_recipient(recipient)[0] == "uuid":
                    self._identity(recipient)  # signal-cli fetched their key: trusted on first use

        record = SentMessage(
            number=body["number"],
            recipients=list(recipients),
            message=body.get("message"),
            text_mode=body.get("text_mode"),
            base64_attachments=list(body.get("base64_attachments", [])),
            attachments=attachments,
            timestamp=self._next_ts(),
            delivered=True,
            status=201,
            body=body,
        )
        self._attempts.append(record)

        if fault is not None and fault.kind == "hang":
            # signal-cli answered, but the REST layer lost the answer: the call never returns.
            record.delivered = fault.delivered
            record.status, record.error = 0, "hang"
            await asyncio.Event().wait()
        if fault is not None and fault.kind not in ("delay", "hang"):
            return self._fault_response(fault, record)

        if not kinds["group"]:
            for recipient in recipients:
                if recipient in self.unregistered:
                    record.failed_recipients[recipient] = "UNREGISTERED_FAILURE"
                elif recipient in self.untrusted:
                    record.failed_recipients[recipient] = "IDENTITY_FAILURE"
        if record.failed_recipients and len(record.failed_recipients) == len(recipients):
            # signal-cli raises only when no recipient at all succeeded.
            record.delivered = False
            record.status = 400
            first, reason = next(iter(record.failed_recipients.items()))
            if reason == "UNREGISTERED_FAILURE":
                record.error = f"The user {first} is not registered."
            else:
                record.error = UNTRUSTED_KEYS if self.json_rpc else UNTRUSTED_IDENTITIES
            return self._err(400, record.error)

        ts = str(record.timestamp)
        if self.response_shape == "array":
            item: dict[str, Any] = {"timestamp": ts}
            if record.failed_recipients:
                item["errors"] = {
                    "recipients": [
                        self._recipient_error(r, reason)
                        for r, reason in record.failed_recipients.items()
                    ]
                }
            return web.json_response([item], status=201)
        # 0.100 drops partial failures silently (#409).
        return web.json_response({"timestamp": ts}, status=201)

    @staticmethod
    def _recipient_error(recipient: str, reason: str) -> dict[str, str]:
        kind, _ = classify_recipient(recipient)
        return {
            "number": recipient if kind == "number" else "",
            "uuid": recipient if kind == "uuid" else "",
            "username": recipient if kind == "username" else "",
            "reason": reason,
        }

    def _fault_response(self, fault: SendFault, record: SentMessage) -> web.Response:
        record.delivered = fault.delivered
        if fault.kind == "rate_limit":
            tokens = fault.challenge_tokens or [str(uuid_mod.uuid4())]
            if self.json_rpc:
                record.status, record.error = 429, RATE_LIMITED_429
                return self._err(
                    429, RATE_LIMITED_429, challenge_tokens=tokens, account=self.number
                )
            # normal/native: no 429, the CLI's stderr comes back as a 400 (#482, #456).
            target = record.recipients[0]
            record.status = 400
            record.error = fault.error or (
                f"Failed to send (some) messages:\n{target}: CAPTCHA proof required for sending "
                f'to "{target}", available options "RECAPTCHA, PUSH_CHALLENGE" with challenge '
                f'token "{tokens[0]}", or wait "86400" seconds.\n'
                "To get the captcha token, go to "
                "https://signalcaptchas.org/challenge/generate.html\n"
                f"{RATE_LIMITED}\n"
            )
            return self._err(400, record.error)
        if fault.kind == "server_error":
            # A recovered Go panic: gin answers 500 with an empty body.
            record.status, record.error = 500, fault.error or ""
            if fault.error:
                return self._err(500, fault.error)
            return web.Response(status=500)
        if fault.kind == "recipient_error":
            # A per-recipient failure inside a 201 (the daemon's result listed it).
            reason = fault.error or "UNREGISTERED_FAILURE"
            record.status, record.error = 201, reason
            record.failed_recipients = {r: reason for r in record.recipients}
            item = {
                "timestamp": str(record.timestamp),
                "errors": {
                    "recipients": [self._recipient_error(r, reason) for r in record.recipients]
                },
            }
            return web.json_response([item], status=201)
        record.status = 400
        if fault.kind == "untrusted":
            record.error = fault.error or (
                UNTRUSTED_KEYS if self.json_rpc else UNTRUSTED_IDENTITIES
            )
        elif fault.kind == "unregistered":
            record.error = fault.error or f"The user {record.recipients[0]} is not registered."
        else:
            record.error = fault.error or GENERIC_SEND_FAILURE
        return self._err(400, record.error)

    @staticmethod
    def _decode_send_attachment(entry: str) -> SentAttachment:
        if entry.startswith("data:"):
            header, sep, payload = entry.partition(",")
            parts = header[len("data:") :].split(";")
            if not sep or parts[-1] != "base64":
                raise ValueError(f"invalid data URI {header!r}")
            mime = parts[0] or None
            filename = next((p[9:] for p in parts[1:-1] if p.startswith("filename=")), None)
            return SentAttachment(mime, filename, _b64decode_go(payload))
        data = _b64decode_go(entry)
        return SentAttachment(None, None, data)

    # -- handlers: receive ----------------------------------------------------------------------

    async def _h_receive(self, request: web.Request) -> web.StreamResponse:
        where = f"GET {request.path}"
        is_upgrade = "upgrade" in request.headers.get("Connection", "").lower()
        if self.json_rpc:
            return await self._receive_ws(request, where, is_upgrade)
        if is_upgrade:
            self._violate(f"{where}: WebSocket attempted in {self.mode} mode (plain GET here)")
        for text in self._check_query(request, RECEIVE_QUERY):
            self._violate(text)
        q = request.query
        try:
            timeout = int(q.get("timeout", "1"))
        except ValueError:
            self._violate(f"{where}: timeout={q.get('timeout')!r}")
            return self._err(400, "Couldn't process request - timeout needs to be numeric!")
        try:
            max_messages = int(q.get("max_messages", "0"))
        except ValueError:
            self._violate(f"{where}: max_messages={q.get('max_messages')!r}")
            return self._err(400, "Couldn't process request - max_messages needs to be numeric!")
        for key in RECEIVE_BOOL_QUERY:
            if q.get(key, "false") not in ("true", "false"):
                self._violate(f"{where}: {key}={q.get(key)!r}")
                return self._err(
                    400,
                    f"Couldn't process request - {key} parameter needs to be either "
                    "'true' or 'false'",
                )
        number = request.match_info["number"]
        if number != self.number:
            self._violate(f"{where}: account {number!r} is not the fake's {self.number!r}")
            return self._err(400, UNKNOWN_ACCOUNT)
        frames = await self._drain(number, timeout, max_messages)
        if q.get("ignore_attachments") == "true":
            for frame in frames:
                self._forget_attachments(frame)
        # Upstream uses c.String: JSON text, but Content-Type text/plain.
        return web.Response(
            status=200, text=_dumps(frames), content_type="text/plain", charset="utf-8"
        )

    async def _drain(self, number: str, timeout: int, max_messages: int) -> list[dict[str, Any]]:
        """signal-cli receive -t: return once `timeout` s pass with no new message."""
        assert self._receive_lock is not None and self._arrival is not None
        out: list[dict[str, Any]] = []
        # signal-cli serialises on its config lock, so concurrent polls queue up.
        async with self._receive_lock:
            queue = self._queues[number]
            while not self._closing:
                while queue and (max_messages <= 0 or len(out) < max_messages):
                    out.append(queue.popleft())
                if (max_messages > 0 and len(out) >= max_messages) or timeout == 0:
                    break
                self._arrival.clear()
                idle = None if timeout < 0 else timeout * self.time_scale
                try:
                    await asyncio.wait_for(self._arrival.wait(), idle)
                except TimeoutError:
                    break
        return out

    async def _receive_ws(
        self, request: web.Request, where: str, is_upgrade: bool
    ) -> web.StreamResponse:
        upgrade_hdr = request.headers.get("Upgrade", "").lower()
        if not is_upgrade or upgrade_hdr != "websocket":
            error = WS_NOT_UPGRADE if not is_upgrade else WS_NOT_WEBSOCKET
            self._violate(f"{where}: plain GET in json-rpc mode ({error})")
            # gorilla's Upgrade() writes "Bad Request\n" itself; gin then appends its JSON.
            return web.Response(
                status=400,
                text="Bad Request\n" + json.dumps({"error": error}),
                content_type="text/plain",
                charset="utf-8",
                headers={"Sec-Websocket-Version": "13", "X-Content-Type-Options": "nosniff"},
            )
        number = request.match_info["number"]
        if number != self.number:
            # Upstream accepts and then filters every frame away; the client hears nothing.
            self._violate(f"{where}: account {number!r} is not the fake's {self.number!r}")
        # aiohttp refuses a frame of exactly max_msg_size; gorilla only one above its limit.
        ws = web.WebSocketResponse(
            autoping=False,
            max_msg_size=self.read_limit + 1,
            compress=False,  # gorilla's default Upgrader negotiates no permessage-deflate
            heartbeat=None,
            timeout=2.0,
        )
        client = _WsClient(ws, number, request.transport, self._silent_new)
        # Registered before the 101 goes out, so a client that sees "connected" gets frames.
        self._clients.add(client)
        self.connections_total += 1
        self.max_clients_seen = max(self.max_clients_seen, len(self._clients))
        try:
            await ws.prepare(request)
        except BaseException:
            self._clients.discard(client)
            raise
        client.tasks = [
            asyncio.ensure_future(self._ws_writer(client)),
            asyncio.ensure_future(self._ws_pinger(client)),
        ]
        try:
            while True:
                msg = await ws.receive()
                if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    data = msg.data if isinstance(msg.data, str) else msg.data.hex()
                    self._client_frames.append(data)
                elif msg.type == WSMsgType.PING:
                    if not client.silent:
                        await ws.pong(msg.data)
                elif msg.type == WSMsgType.PONG:
                    client.pongs_received += 1
                else:  # CLOSE, CLOSING, CLOSED, ERROR (e.g. frame over the read limit)
                    break
        finally:
            self._clients.discard(client)
            for task in client.tasks:
                task.cancel()
            if not ws.closed:
                await ws.close()
        return ws

    async def _ws_writer(self, client: _WsClient) -> None:
        try:
            while True:
                item = await client.queue.get()
                if client.silent:
                    continue
                client.writing = True
                try:
                    if item is _PING:
                        await client.ws.ping(b"")
                        client.pings_sent += 1
                    else:
                        await client.ws.send_str(item)
                finally:
                    client.writing = False
        except (ConnectionError, RuntimeError):
            pass

    async def _ws_pinger(self, client: _WsClient) -> None:
        while True:
            await asyncio.sleep(self.ping_interval)
            if not client.silent:
                client.queue.put_nowait(_PING)

    # -- handlers: typing, receipts, reactions ---------------------------------------------------

    def _recipient_problem(self, where: str, recipient: str) -> web.Response | None:
        _, error = classify_recipient(recipient)
        if error:
            self._violate(f"{where}: bad recipient {recipient!r}: {error}")
            return self._err(400, error)
        return None

    async def _h_typing(self, request: web.Request) -> web.Response:
        body, problems = await self._read_json(request, "api.TypingIndicatorRequest")
        rejected = self._gate(request, problems) or self._check_number(request)
        if rejected is not None:
            return rejected
        where = f"{request.method} {request.path}"
        rejected = self._recipient_problem(where, body["recipient"])
        if rejected is not None:
            return rejected
        action: Literal["start", "stop"] = "start" if request.method == "PUT" else "stop"
        self._typing.append(TypingCall(action, body["recipient"], self.number, _now_ms()))
        return web.Response(status=204)

    async def _h_receipt(self, request: web.Request) -> web.Response:
        body, problems = await self._read_json(request, "api.Receipt")
        rejected = self._gate(
            request,
            problems,
            [
                (lambda: not body.get("recipient"), RECIPIENT_MISSING),
                (lambda: body.get("receipt_type") not in ("read", "viewed"), RECEIPT_TYPE_INVALID),
                (lambda: not body.get("timestamp"), TIMESTAMP_MISSING),
            ],
        ) or self._check_number(request)
        if rejected is not None:
            return rejected
        where = f"{request.method} {request.path}"
        kind, _ = classify_recipient(body["recipient"])
        if kind == "group":
            self._violate(f"{where}: receipts go to individual recipients, not {kind}s")
            return self._err(400, GENERIC_SEND_FAILURE)
        rejected = self._recipient_problem(where, body["recipient"])
        if rejected is not None:
            return rejected
        self._receipts.append({**body, "number": self.number})
        return web.Response(status=204)

    async def _h_reaction(self, request: web.Request) -> web.Response:
        remove = request.method == "DELETE"
        definition = "api.RemoveReactionRequest" if remove else "api.SendReactionRequest"
        body, problems = await self._read_json(request, definition)
        checks = [(lambda: not body.get("recipient"), RECIPIENT_MISSING)]
        if not remove:
            checks.append((lambda: not body.get("reaction"), REACTION_MISSING))
        checks += [
            (lambda: not body.get("target_author"), TARGET_AUTHOR_MISSING),
            (lambda: not body.get("timestamp"), TIMESTAMP_MISSING),
        ]
        rejected = self._gate(request, problems, checks) or self._check_number(request)
        if rejected is not None:
            return rejected
        where = f"{request.method} {request.path}"
        for key in ("recipient", "target_author"):
            rejected = self._recipient_problem(where, body[key])
            if rejected is not None:
                return rejected
        self._reactions.append({**body, "remove": remove, "number": self.number})
        return web.Response(status=204)

    # -- handlers: attachments ------------------------------------------------------------------

    def _attachment_name(self, request: web.Request) -> tuple[str, web.Response | None]:
        name = request.match_info["attachment"]
        if name in ("", ".", "..") or "/" in name or "\\" in name:
            self._violate(f"{request.method} {request.path}: invalid attachment name")
            return name, self._err(400, ATTACHMENT_INVALID_NAME)
        return name, None

    async def _h_attachments(self, request: web.Request) -> web.Response:
        return web.json_response(list(self._attachments))

    async def _h_attachment_get(self, request: web.Request) -> web.Response:
        name, rejected = self._attachment_name(request)
        if rejected is not None:
            return rejected
        att = self._attachments.get(name)
        if att is None:
            return self._err(404, ATTACHMENT_NOT_FOUND)
        self._fetched.append(name)
        # Upstream sniffs the bytes rather than trusting the envelope's contentType.
        return web.Response(body=att.data, headers={"Content-Type": sniff_mime(att.data)})

    async def _h_attachment_delete(self, request: web.Request) -> web.Response:
        name, rejected = self._attachment_name(request)
        if rejected is not None:
            return rejected
        if self._attachments.pop(name, None) is None:
            return self._err(404, ATTACHMENT_NOT_FOUND)
        self._deleted.append(name)
        return web.Response(status=204)

    # -- handlers: settings, contacts, groups, rate limit ---------------------------------------

    async def _h_settings(self, request: web.Request) -> web.Response:
        rejected = self._check_number(request)
        if rejected is not None:
            return rejected
        if request.method == "GET":
            return web.json_response({"trust_mode": self.trust_mode})
        body, problems = await self._read_json(request, "api.TrustModeRequest")
        rejected = self._gate(request, problems)
        if rejected is not None:
            return rejected
        if body["trust_mode"] not in TRUST_MODES:
            self._violate(f"POST {request.path}: trust_mode={body['trust_mode']!r}")
            return self._err(400, INVALID_TRUST_MODE)
        self.trust_mode = body["trust_mode"]
        self._settings_updates.append(dict(body))
        return web.Response(status=204)

    async def _h_contact_update(self, request: web.Request) -> web.Response:
        body, problems = await self._read_json(request, "api.UpdateContactRequest")
        rejected = self._check_number(request) or self._gate(
            request, problems, [(lambda: not body.get("recipient"), RECIPIENT_MISSING)]
        )
        if rejected is not None:
            return rejected
        rejected = self._recipient_problem(f"PUT {request.path}", body["recipient"])
        if rejected is not None:
            return rejected
        self._contact_updates.append(dict(body))
        return web.Response(status=204)

    def _group_entry(self, group: dict[str, Any], expand: bool) -> dict[str, Any]:
        members: list[Any] = list(group["members"])
        admins: list[Any] = [self.number]
        if expand:
            members = [{"number": m, "uuid": ""} for m in members]
            admins = [{"number": a, "uuid": self.account_uuid} for a in admins]
        return {
            "name": group["name"],
            "description": "",
            "id": group["id"],
            "internal_id": group["internal_id"],
            "members": members,
            "blocked": False,
            "member": True,
            "pending_invites": [],
            "pending_requests": [],
            "invite_link": "",
            "admins": admins,
            "permissions": {
                "add_members": "only-admins",
                "edit_group": "only-admins",
                "send_messages": "every-member",
            },
        }

    def _expand(self, request: web.Request) -> bool | web.Response:
        for text in self._check_query(request, ("expand",)):
            self._violate(text)
        value = request.query.get("expand", "false")
        if value not in ("true", "false"):
            self._violate(f"GET {request.path}: expand={value!r} is not a boolean")
            return self._err(400, INVALID_REQUEST)
        return value == "true"

    async def _h_groups(self, request: web.Request) -> web.Response:
        rejected = self._check_number(request)
        if rejected is not None:
            return rejected
        expand = self._expand(request)
        if isinstance(expand, web.Response):
            return expand
        return web.json_response([self._group_entry(g, expand) for g in self._groups.values()])

    def _find_group(self, request: web.Request) -> dict[str, Any] | web.Response:
        gid = request.match_info["groupid"]
        try:
            internal = base64.b64decode(gid.removeprefix("group."), validate=True).decode()
        except (binascii.Error, ValueError, UnicodeDecodeError):
            self._violate(f"{request.method} {request.path}: invalid group id")
            return self._err(400, INVALID_GROUP_ID)
        group = self._groups.get(internal)
        if group is None:
            return self._err(404, GROUP_NOT_FOUND)
        return group

    async def _h_group_get(self, request: web.Request) -> web.Response:
        rejected = self._check_number(request)
        if rejected is not None:
            return rejected
        expand = self._expand(request)
        if isinstance(expand, web.Response):
            return expand
        group = self._find_group(request)
        if isinstance(group, web.Response):
            return group
        return web.json_response(self._group_entry(group, expand))

    async def _h_group_update(self, request: web.Request) -> web.Response:
        body, problems = await self._read_json(request, "api.UpdateGroupRequest")
        rejected = self._check_number(request) or self._gate(request, problems)
        if rejected is not None:
            return rejected
        group = self._find_group(request)
        if isinstance(group, web.Response):
            return group
        if "name" in body:
            group["name"] = body["name"]
        group["revision"] += 1
        self._group_updates.append({**body, "group_id": group["id"]})
        return web.Response(status=204)

    async def _h_challenge(self, request: web.Request) -> web.Response:
        body, problems = await self._read_json(request, "api.RateLimitChallengeRequest")
        rejected = self._check_number(request) or self._gate(
            request,
            problems,
            [
                (lambda: not body.get("challenge_token"), CHALLENGE_TOKEN_MISSING),
                (lambda: not body.get("captcha"), CAPTCHA_MISSING),
            ],
        )
        if rejected is not None:
            return rejected
        record = dict(body)
        self._challenges.append(record)
        if self._captcha_rejections > 0:
            self._captcha_rejections -= 1
            record["result"] = "rejected"
            return self._err(400, CAPTCHA_REJECTED)  # signal-cli's -6, passed through
        record["result"] = "accepted"
        return web.Response(status=204)

    # -- handlers: identities -------------------------------------------------------------------

    async def _h_identities(self, request: web.Request) -> web.Response:
        rejected = self._check_number(request)
        if rejected is not None:
            return rejected
        if self._identity_faults > 0:
            self._identity_faults -= 1
            return self._err(500, IDENTITIES_FAILED)  # upstream: any error of signal-cli
        keys = ("number", "status", "fingerprint", "added", "safety_number", "uuid")
        return web.json_response(
            [{k: ident[k] for k in keys} for ident in self._identities.values()]
        )

    async def _h_trust(self, request: web.Request) -> web.Response:
        body, problems = await self._read_json(request, "api.TrustIdentityRequest")
        rejected = self._check_number(request) or self._gate(request, problems)
        if rejected is not None:
            return rejected
        sn = body.get("verified_safety_number")
        all_keys = body.get("trust_all_known_keys")
        if sn is None and not all_keys:
            self._violate(f"PUT {request.path}: {TRUST_NEITHER}")
            return self._err(400, TRUST_NEITHER)
        if sn is not None and all_keys:
            self._violate(f"PUT {request.path}: {TRUST_BOTH}")
            return self._err(400, TRUST_BOTH)
        if sn is not None and sn == "":
            return self._err(400, "Couldn't process request - please provide a valid safety number")
        who = request.match_info["who"]
        error = self._trust(who, body)
        self._trusts.append({**body, "recipient": who, "result": error or "trusted"})
        if error is not None:
            return self._err(400, error)
        return web.Response(status=204)

    # -- control API (process mode; not upstream) -----------------------------------------------

    _CONTROL_ACTIONS = frozenset(
        {
            "user_sends",
            "user_sets_expiration",
            "user_typing",
            "user_receipt",
            "user_reacts",
            "user_edits",
            "user_deletes",
            "user_exception",
            "sync_sent",
            "error_frame",
            "push",
            "replay",
            "add_attachment",
            "add_group",
            "drop_connections",
            "go_silent",
            "end_silence",
            "refuse_connections",
            "accept_connections",
            "inject_send_fault",
            "clear_send_faults",
            "set_send_delay",
            "set_response_shape",
            "fail_identities",
            "reject_captcha",
            "add_identity",
            "change_identity",
            "clear_violations",
            "reset",
        }
    )

    async def _h_control(self, request: web.Request) -> web.Response:
        action = request.match_info["action"]
        if request.method == "GET":
            state = self.snapshot()
            if action == "state":
                return web.json_response(state)
            if action in state:
                return web.json_response(state[action])
            return self._err(404, f"no control state {action!r}")
        if request.method != "POST":
            return self._err(405, "control actions are POST, state is GET")
        raw = await request.read()
        try:
            kwargs = json.loads(raw) if raw.strip() else {}
        except ValueError:
            return self._err(400, "control body must be a JSON object")
        if not isinstance(kwargs, dict):
            return self._err(400, "control body must be a JSON object")
        if action == "shutdown":
            assert self._shutdown is not None
            self._shutdown.set()
            return web.json_response({"result": None})
        if action in ("mark_unregistered", "mark_untrusted"):
            getattr(self, action)(*kwargs.get("recipients", []))
            return web.json_response({"result": None})
        if action not in self._CONTROL_ACTIONS:
            return self._err(404, f"no control action {action!r}")
        try:
            result = getattr(self, action)(**kwargs)
        except (TypeError, ValueError, KeyError) as exc:
            return self._err(400, f"{action}: {exc}")
        if isinstance(result, tuple):
            result = list(result)
        return web.json_response({"result": result})


class _ThreadedFake:
    """Context manager running a FakeSignal on a private event loop in a daemon thread."""

    def __init__(self, fake: FakeSignal) -> None:
        self.fake = fake
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __enter__(self) -> FakeSignal:
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self.fake.start())
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self.fake.stop())
                loop.close()

        self._thread = threading.Thread(target=run, name="fake-signal", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]
        return self.fake

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)


async def _serve(args: argparse.Namespace) -> None:
    fake = FakeSignal(
        mode=args.mode,
        number=args.number,
        port=args.port,
        version=args.version,
        ping_interval=args.ping_interval,
        response_shape=args.response_shape,
        time_scale=args.time_scale,
    )
    await fake.start()
    assert fake._shutdown is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, fake._shutdown.set)
    print(fake.url, flush=True)
    try:
        await fake._shutdown.wait()
    finally:
        await fake.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument(
        "--mode", default="json-rpc", choices=["json-rpc", "json-rpc-native", "normal", "native"]
    )
    parser.add_argument("--number", default="+15550000001")
    parser.add_argument("--version", default="0.100")
    parser.add_argument("--ping-interval", type=float, default=54.0)
    parser.add_argument("--response-shape", default="object", choices=["object", "array"])
    parser.add_argument("--time-scale", type=float, default=1.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
