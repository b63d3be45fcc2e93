"""The transport protocol: what every platform adapter offers the core, and how sends fail."""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bot.messages import Attachment, Incoming, Outgoing
from bot.supervisor import LoopFactory, plain_spawn

Deliver = Callable[[Incoming], Awaitable[None]]
# Starts a long-lived loop under the app's supervisor (restart with back-off, health for the
# watchdog); transports start every receive/processing loop through it.
Spawn = Callable[[str, LoopFactory], "asyncio.Task[None]"]


class DeliveryError(Exception):
    """A send did not succeed. Messages carry an error kind only, never content or ids."""


class RetryLater(DeliveryError):
    """Temporary: 429, 5xx, timeout, connection lost. `retry_after` is the platform's wish."""

    def __init__(self, kind: str, retry_after: float | None = None, *, maybe_sent: bool = False):
        super().__init__(kind)
        self.kind = kind
        self.retry_after = retry_after
        # True when the request may have reached the platform (timeout after sending).
        self.maybe_sent = maybe_sent


class Rejected(DeliveryError):
    """Permanent for this message (bad request): retrying cannot help."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


class RecipientGone(Rejected):
    """The person blocked the bot or left the platform: stop delivering to that chat."""


class IdentityUntrusted(Rejected):
    """The recipient's identity key changed (Signal safety number): nothing was sent to them.
    The core quarantines the member until a coordinator confirms them in person."""


class MaybeSent(DeliveryError):
    """The platform answered with an error that does not prove non-delivery (Signal 400/429)."""

    def __init__(self, kind: str, retry_after: float | None = None) -> None:
        super().__init__(kind)
        self.kind = kind
        self.retry_after = retry_after


@dataclass(frozen=True)
class Limits:
    """Platform send limits the dispatcher keeps to (messages per second)."""

    per_second: float = 30.0
    per_chat_per_second: float = 1.0
    chat_burst: int = 3
    in_flight: int = 8  # concurrent requests; also bounds duplicates after a crash


@dataclass(frozen=True)
class Capabilities:
    """What a platform can do, so the core asks instead of branching on a transport's name."""

    edits: bool = False  # edits a sent message in place (else an edit is sent as a new one)
    buttons: bool = False  # inline buttons; without them choices are numbered lines
    deletes_incoming: bool = False  # may delete a person's message from the chat
    end_to_end: bool = False  # the platform cannot read the content (Signal: yes)
    disappearing: bool = False  # a chat can be given a disappearing-messages timer


class Transport(abc.ABC):
    name: str
    limits: Limits = Limits()
    capabilities: Capabilities = Capabilities()
    # Set by the app before `start`; a transport starts its long-lived loops through it.
    spawn: Spawn = staticmethod(plain_spawn)

    @abc.abstractmethod
    async def start(self, deliver: Deliver) -> None:
        """Begin receiving. `deliver` returns once the message is durably handled; a transport
        confirms a message to its platform only after that."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Stop receiving (intake first, so nothing arrives that cannot be handled)."""

    @abc.abstractmethod
    async def send(self, out: Outgoing) -> str | None:
        """Deliver one message; returns the platform's message reference if it has one."""

    # Set by the app: the transport tells administrators something that needs a person
    # (a Signal rate-limit challenge to solve). Text only; never ids or numbers.
    on_alert: Callable[[str], Awaitable[None]] | None = None

    async def close(self) -> None:
        """Release clients after the outbox has drained (sends continue after `stop`)."""
        return None

    async def fetch_attachment(self, attachment: Attachment, max_bytes: int) -> bytes | None:
        """The attachment's bytes, or None when it is too large or unavailable."""
        return None

    async def discard_attachment(self, attachment: Attachment) -> None:
        """Drop an attachment unread (the sender may not send it now): delete it from the
        platform side where it sits on disk (signal-cli-rest-api); never download it."""
        return None

    async def delete_incoming(self, chat: str, message_ref: str) -> None:
        """Remove a person's message from the chat where the platform allows it."""
        return None

    async def announce_commands(self, menus: dict[str, list[tuple[str, str]]]) -> None:
        """Publish the command menu per language code: {"en": [("start", "join ..."), ...]}.
        Called once after start; platforms without menus ignore it."""
        return None

    def chat_interval(self, chat: str) -> float | None:
        """Seconds between messages to this chat when it differs from `limits` (groups)."""
        return None

    async def probe(self) -> str:
        """A short, secret-free health line for `vigil status`."""
        return "configured"

    def invite_link_prefix(self) -> str | None:
        return None
