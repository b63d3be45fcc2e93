"""Logging set-up: event kinds and internal ids only, with a scrubber as a second line of defence.

The code never passes content or identifiers to a logger; the scrubber exists because
libraries do (httpx logs request URLs, and a Telegram URL contains the bot token).
"""

from __future__ import annotations

import logging
import re
import sys

_SCRUB = [
    (re.compile(r"bot\d+:[A-Za-z0-9_-]{20,}"), "bot<token>"),
    (re.compile(r"\+?\d[\d ()-]{6,}\d"), "<number>"),
    (
        re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"),
        "<uuid>",
    ),
]


class Scrubber(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        for pattern, replacement in _SCRUB:
            message = pattern.sub(replacement, message)
        record.msg, record.args = message, None
        if record.exc_info:
            # Tracebacks quote local values and arguments; keep the exception type only.
            record.msg = (
                f"{message} [{record.exc_info[0].__name__ if record.exc_info[0] else 'error'}]"
            )
            record.exc_info = None
            record.exc_text = None
        return True


def setup(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(Scrubber())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # These libraries log URLs and payloads at INFO/DEBUG; they stay at WARNING whatever
    # VIGIL_LOG_LEVEL says.
    for noisy in (
        "httpx",
        "httpcore",
        "telegram",
        "apscheduler",
        "aiohttp",
        "websockets",
        "asyncio",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)
