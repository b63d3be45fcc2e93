"""What one frame of signal-cli-rest-api's receive stream means (pure parsing, no I/O).

A frame is the `params` of signal-cli's `receive` notification: `{"envelope": {…}, "account":
"+…"}`, sometimes with `"exception": {"message", "type"}` when signal-cli could not read the
message. Shapes: signal-cli 0.14 `JsonMessageEnvelope`, `JsonReceiveMessageHandler`.

* A 1:1 `dataMessage` with text or attachments is a **message**.
* The same in a group (`groupInfo`) is a **group** message: delivered with `private=False`
  (the core drops it), its attachments never fetched.
* `exception.type == "UntrustedIdentityException"`: the sender's identity key changed and is
  not trusted (signal-cli, trust mode on-first-use, refuses to decrypt from a changed key).
  The envelope carries the sender but no content; signal-cli keeps the message in its cache and
  emits it again, readable, once the key is trusted (`trust`), with the same timestamp. This is
  an **untrusted** frame: delivered as `Incoming(untrusted_identity=True)` with its own inbox
  key, so the later readable copy is not taken for a replay of it.
* Other exceptions are **unreadable** (logged by type); typing, receipts, sync messages (the
  account owner's own sends), reactions, remote deletes, edits, stickers, expiration-timer
  changes, group updates, calls and stories are **ignored**.

Every attachment id a frame names is listed, wherever it sits: each is a plaintext file on the
REST API's disk, deleted unless the core fetched it.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from bot.transports.signal.rest import canonical_uuid

LONG_TEXT_MIME = "text/x-signal-plain"
UNTRUSTED_EXCEPTION = "UntrustedIdentityException"
_EXCEPTION_TYPE = re.compile(r"[A-Za-z][A-Za-z0-9_.$]{0,80}")

Kind = Literal["message", "group", "untrusted", "unreadable", "ignored", "error"]


@dataclass(frozen=True)
class FrameAttachment:
    id: str
    mime: str
    size: int


@dataclass(frozen=True)
class Frame:
    kind: Kind
    sender: str | None = None  # the sender's ACI
    timestamp: int | None = None  # the sender's timestamp: the message's id
    text: str = ""
    attachments: tuple[FrameAttachment, ...] = ()
    long_text_id: str | None = None  # the whole text of a long message, as an attachment
    group: str | None = None  # the REST API's id of the group ("group.…")
    attachment_ids: tuple[str, ...] = ()  # every file the frame names
    exception: str | None = None  # signal-cli's exception type (a class name, no content)


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def attachment_ids(envelope: dict[str, Any]) -> tuple[str, ...]:
    """Every attachment id an envelope mentions, wherever it sits (each is a file on disk)."""
    found: list[str] = []
    parts = [envelope.get("dataMessage"), (envelope.get("editMessage") or {}).get("dataMessage")]
    sync = envelope.get("syncMessage")
    if isinstance(sync, dict):
        parts.append(sync.get("sentMessage"))
    for part in parts:
        if not isinstance(part, dict):
            continue
        atts = part.get("attachments")
        for att in atts if isinstance(atts, list) else []:
            if isinstance(att, dict) and isinstance(att.get("id"), str):
                found.append(att["id"])
    return tuple(found)


def rest_group_id(internal: str) -> str:
    """signal-cli's group id (base64 of 32 bytes) as the REST API names it."""
    return "group." + base64.b64encode(internal.encode()).decode()


def parse(raw: str | dict[str, Any], number: str) -> Frame | None:
    """The frame's meaning for the account `number`; None for frames that are not ours or
    not frames at all (nothing to do, nothing to clean up)."""
    if isinstance(raw, str):
        try:
            frame = json.loads(raw)
        except ValueError:
            return Frame("unreadable", exception="not JSON")
    else:
        frame = raw
    if not isinstance(frame, dict):
        return None
    if frame.get("account") not in (None, number):
        return None  # another account on the same REST API: not ours to read or clean up
    envelope = frame.get("envelope")
    if not isinstance(envelope, dict):
        return Frame("error") if "error" in frame else None
    ids = attachment_ids(envelope)
    sender = canonical_uuid(envelope.get("sourceUuid"))
    timestamp = _int(envelope.get("timestamp"))
    exception = frame.get("exception")
    if isinstance(exception, dict):
        kind = exception.get("type")
        kind = kind if isinstance(kind, str) and _EXCEPTION_TYPE.fullmatch(kind) else "?"
        if kind == UNTRUSTED_EXCEPTION and sender is not None and timestamp is not None:
            return Frame("untrusted", sender, timestamp, attachment_ids=ids, exception=kind)
        return Frame("unreadable", attachment_ids=ids, exception=kind)
    data = envelope.get("dataMessage")
    if not isinstance(data, dict):
        return Frame("ignored", attachment_ids=ids)  # typing, receipts, sync, edits, calls
    if sender is None or envelope.get("sourceNumber") == number:
        return Frame("ignored", attachment_ids=ids)
    if any(data.get(k) for k in ("reaction", "remoteDelete", "sticker", "isExpirationUpdate")):
        return Frame("ignored", attachment_ids=ids)
    text = data.get("message")
    text = text if isinstance(text, str) else ""
    raw_atts = data.get("attachments")
    atts = [a for a in raw_atts if isinstance(a, dict)] if isinstance(raw_atts, list) else []
    timestamp = timestamp or _int(data.get("timestamp"))
    if (not text.strip() and not atts) or timestamp is None:
        return Frame("ignored", attachment_ids=ids)
    group = None
    info = data.get("groupInfo")
    if info is not None:
        if not isinstance(info, dict) or info.get("type") == "UPDATE":
            return Frame("ignored", attachment_ids=ids)
        internal = info.get("groupId")
        group = rest_group_id(internal) if isinstance(internal, str) and internal else "group."
    attachments: list[FrameAttachment] = []
    long_text = None
    for att in atts:
        att_id = att.get("id")
        if not isinstance(att_id, str):
            continue
        mime = att.get("contentType")
        mime = mime if isinstance(mime, str) and 0 < len(mime) < 128 else ""
        if mime == LONG_TEXT_MIME and long_text is None:
            # Signal sends a text over 2000 bytes (1000 Cyrillic letters) cut short, with
            # the whole text as this attachment; a report must not lose its end.
            long_text = att_id
            continue
        size = _int(att.get("size")) or 0
        attachments.append(FrameAttachment(att_id, mime or "application/octet-stream", size))
    return Frame(
        "group" if group is not None else "message",
        sender,
        timestamp,
        text,
        tuple(attachments),
        long_text,
        group,
        ids,
    )
