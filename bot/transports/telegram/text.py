"""Telegram's text limits, counted as Telegram counts them (UTF-16 code units)."""

from __future__ import annotations

MAX_TEXT = 4096  # sendMessage / editMessageText


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _prefix_within(text: str, limit: int) -> int:
    """How many characters of `text` fit in `limit` UTF-16 units."""
    if len(text) * 2 <= limit:
        return len(text)
    units = 0
    for i, ch in enumerate(text):
        units += 2 if ord(ch) > 0xFFFF else 1
        if units > limit:
            return i
    return len(text)


def split_text(text: str, limit: int = MAX_TEXT) -> list[str]:
    """Pieces of at most `limit` UTF-16 units, cut at a line break, else a space, else hard.
    Whitespace-only pieces are dropped (Telegram refuses empty messages)."""
    chunks: list[str] = []
    rest = text
    while utf16_len(rest) > limit:
        fit = _prefix_within(rest, limit)
        window = rest[:fit]
        cut = -1
        for sep in ("\n\n", "\n", " "):
            at = window.rfind(sep, fit // 2)
            if at > 0:
                cut = at
                break
        if cut <= 0:
            cut = fit
        chunks.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip("\n ")
    chunks.append(rest)
    return [c for c in chunks if c.strip()]


def truncate(text: str, limit: int = MAX_TEXT) -> str:
    if utf16_len(text) <= limit:
        return text
    return text[: _prefix_within(text, limit - 1)] + "…"
