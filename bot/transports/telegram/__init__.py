"""Telegram transport on python-telegram-bot's API layer, with updates confirmed after delivery.

The package, one job per module:
  api.py        the PTB `Bot` Vigil builds (aiohttp requests) and what PTB's errors mean
  text.py       Telegram's text limits in UTF-16 units; splitting long texts
  updates.py    updates (raw JSON) read into `Incoming`s, groups to leave, or nothing
  polling.py    getUpdates, with the offset confirmed only after the core stored an update
  webhook.py    webhook mode: 200 only after the core stored an update
  transport.py  `TelegramTransport`: lifecycle, sending, attachments, command menus

Public names are re-exported here (`from bot.transports.telegram import TelegramTransport`).
"""

from bot.transports.telegram.api import fetch_username, file_base_url, make_bot, map_error
from bot.transports.telegram.polling import POISON_LIMIT
from bot.transports.telegram.text import split_text, utf16_len
from bot.transports.telegram.transport import TelegramTransport
from bot.transports.telegram.updates import ALLOWED_UPDATES, JoinedGroup
from bot.transports.telegram.webhook import SECRET_HEADER

__all__ = [
    "ALLOWED_UPDATES",
    "POISON_LIMIT",
    "SECRET_HEADER",
    "JoinedGroup",
    "TelegramTransport",
    "fetch_username",
    "file_base_url",
    "make_bot",
    "map_error",
    "split_text",
    "utf16_len",
]
