"""Bot API updates (raw JSON) read into what the transport acts on.

An update becomes one of:
* an `Incoming` for the core. `private` is the truth about where it came from: messages and
  button presses in groups, supergroups and channels arrive with `private=False` (the router
  drops them; the transport never answers their callback queries). In groups only commands
  addressed to us count: members' chatter is not read at all. Attachments of non-private
  messages are left out, so nothing can ever download them.
* `JoinedGroup`: the bot was added to a group, supergroup or channel (`my_chat_member`). The
  transport leaves it and says nothing there.
* None: nothing for us. Edits (not even requested: an edit must not re-run a command or
  rewrite a stored report), updates without a person (anonymous admins, automatic forwards,
  other bots), service messages, the bot's own membership in private chats.

Only the fields documented here are touched; anything else in an update is ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot.messages import Attachment, Incoming
from bot.transports.menus import NumberedMenus

Json = dict[str, Any]

# What Vigil asks getUpdates / setWebhook for; edits and channel posts are not even delivered.
ALLOWED_UPDATES = ("message", "callback_query", "my_chat_member")
# Message fields that make a private message worth an answer even without text or a file.
_CONTENT_KEYS = ("sticker", "animation", "location", "contact", "venue", "poll", "dice", "story")
_MEMBER_STATUSES = ("member", "administrator", "restricted", "creator")


@dataclass(frozen=True)
class JoinedGroup:
    """Someone added the bot to a group, supergroup or channel: it leaves without a word."""

    chat: str
    kind: str  # "group" | "supergroup" | "channel"


Read = Incoming | JoinedGroup | None


def is_private_chat(chat: Any) -> bool:
    return isinstance(chat, dict) and chat.get("type") == "private"


class UpdateReader:
    """Reads updates for one bot; `username` is set once getMe answered."""

    def __init__(self, menus: NumberedMenus) -> None:
        self.menus = menus
        self.username: str | None = None

    def read(self, update: Json) -> Read:
        query = update.get("callback_query")
        if isinstance(query, dict):
            return self._from_callback(int(update["update_id"]), query)
        member = update.get("my_chat_member")
        if isinstance(member, dict):
            return self._membership(member)
        msg = update.get("message")
        if not isinstance(msg, dict):
            return None  # edits, channel posts and the like
        return self._from_message(int(update["update_id"]), msg)

    def _from_message(self, update_id: int, msg: Json) -> Incoming | None:
        user = msg.get("from")
        if not isinstance(user, dict) or user.get("is_bot") or "sender_chat" in msg:
            return None
        if msg.get("is_automatic_forward"):
            return None
        private = is_private_chat(msg["chat"])
        text = msg.get("text") or msg.get("caption") or ""
        attachments = _attachments(msg)
        chat = str(msg["chat"]["id"])
        is_choice = False
        if not private:
            if not self._addressed_to_us(text):
                return None
            attachments = ()  # never fetched: the router drops what a group sends
        elif not text and not attachments and not any(k in msg for k in _CONTENT_KEYS):
            return None  # service messages (pins and the like) carry nothing for us
        else:
            text, is_choice = self.menus.resolve(chat, text)
        return Incoming(
            transport="telegram",
            sender=str(user["id"]),
            chat=chat,
            key=str(update_id),
            text=text,
            attachments=attachments,
            private=private,
            language_hint=user.get("language_code"),
            message_ref=str(msg["message_id"]),
            is_choice=is_choice,
        )

    def _from_callback(self, update_id: int, query: Json) -> Incoming | None:
        user = query["from"]
        data = query.get("data")
        if not isinstance(data, str):
            return None  # games and the like: acknowledged after "delivery", nothing else
        message = query.get("message")  # absent for inline messages; may be inaccessible
        chat = message.get("chat") if isinstance(message, dict) else None
        return Incoming(
            transport="telegram",
            sender=str(user["id"]),
            chat=str(chat["id"] if isinstance(chat, dict) else user["id"]),
            key=str(update_id),
            text=data,
            # A press under an inline message has no chat: nothing proves it is a private one.
            private=is_private_chat(chat),
            language_hint=user.get("language_code"),
            message_ref=str(message["message_id"]) if isinstance(message, dict) else None,
            is_choice=True,
        )

    @staticmethod
    def _membership(update: Json) -> JoinedGroup | None:
        chat = update.get("chat")
        new = update.get("new_chat_member")
        if not isinstance(chat, dict) or not isinstance(new, dict) or is_private_chat(chat):
            return None  # in a private chat this is a person blocking or unblocking the bot
        kind = chat.get("type")
        if kind not in ("group", "supergroup", "channel") or not isinstance(chat.get("id"), int):
            return None
        if new.get("status") not in _MEMBER_STATUSES:
            return None  # left or removed: nothing to do
        return JoinedGroup(str(chat["id"]), kind)

    def _addressed_to_us(self, text: str) -> bool:
        """In groups only commands count, and `/cmd@otherbot` belongs to another bot."""
        if not text.startswith("/"):
            return False
        head = text.split(maxsplit=1)[0] if text.split() else text
        _, at, bot_name = head.partition("@")
        return not at or (self.username is not None and bot_name.lower() == self.username.lower())


def is_private_query(update: Json) -> bool:
    """A callback query pressed in a private chat with the bot (only those are answered)."""
    query = update.get("callback_query")
    if not isinstance(query, dict):
        return False
    message = query.get("message")
    return isinstance(message, dict) and is_private_chat(message.get("chat"))


def _attachments(msg: Json) -> tuple[Attachment, ...]:
    """Photos (largest size), documents, and voice/audio/video as documents."""
    found: list[Attachment] = []
    photo = msg.get("photo")
    if isinstance(photo, list) and photo:
        best = photo[-1]  # Telegram lists sizes smallest first
        found.append(Attachment("photo", best["file_id"], "image/jpeg", best.get("file_size", 0)))
    for key, default_mime in (
        ("document", "application/octet-stream"),
        ("voice", "audio/ogg"),
        ("audio", "audio/mpeg"),
        ("video", "video/mp4"),
        ("video_note", "video/mp4"),
    ):
        media = msg.get(key)
        if isinstance(media, dict):
            found.append(
                Attachment(
                    "document",
                    media["file_id"],
                    media.get("mime_type") or default_mime,
                    media.get("file_size", 0),
                    media.get("file_name", ""),
                )
            )
    return tuple(found)
