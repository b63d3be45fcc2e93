"""Incoming and outgoing messages, independent of any platform."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

MAX_TEXT_CHARS = 20_000  # longer input is refused before any parsing


class Priority(IntEnum):
    """Lower drains first: an emergency overtakes a broadcast already under way."""

    EMERGENCY = 0
    REPLY = 1
    ALERT = 2
    BULK = 3


@dataclass(frozen=True)
class Attachment:
    kind: str  # "photo" | "document"
    ref: str  # the platform's handle for fetching it (Telegram file_id, Signal attachment id)
    mime: str = "application/octet-stream"
    size: int = 0
    name: str = ""
    data: bytes | None = None  # filled by the app before handling; never written to disk plain
    refused: str | None = None  # why no bytes were fetched: "not now" | "size" | "quota"


@dataclass(frozen=True)
class Incoming:
    """One message or button press from a person, as a transport saw it."""

    transport: str
    sender: str  # stable platform identity: Telegram user id, Signal sourceUuid, console persona
    chat: str  # where replies go
    key: str  # platform message key for the inbox (Telegram update_id, Signal uuid:timestamp)
    text: str = ""
    attachments: tuple[Attachment, ...] = ()
    private: bool = True
    language_hint: str | None = None  # e.g. Telegram's language_code; only a proposal
    message_ref: str | None = None  # lets the bot delete a relative's message after storing it
    is_choice: bool = False  # a pressed button rather than typed text
    # The sender's identity key changed since we last trusted it (Signal safety number): the
    # core holds the message and quarantines the member until a coordinator confirms them.
    untrusted_identity: bool = False


@dataclass(frozen=True)
class Choice:
    """A button on Telegram, a numbered line on Signal; `value` is what a typed reply would be."""

    label: str
    value: str


@dataclass(frozen=True)
class Outgoing:
    transport: str
    chat: str
    text: str
    choices: tuple[Choice, ...] = ()
    kind: str = "message"  # an outbox.OutboxKind: "message" | "edit" | "delete" | "disappearing"
    ref: str | None = None  # platform message to edit or delete
    priority: Priority = Priority.REPLY
    outbox_id: int | None = None
    extra: dict[str, str] = field(default_factory=dict)
