"""Translations: gettext catalogs managed with Babel, loaded per member language.

Catalogs are read from the `.po` sources at start and compiled in memory, so a checkout needs
no build step. A missing or broken translation falls back to the English source, never a crash.
"""

from __future__ import annotations

import functools
import io
import logging
import re
import unicodedata
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_time, get_datetime_format
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_decimal
from babel.support import NullTranslations, Translations

log = logging.getLogger(__name__)

LOCALES_DIR = Path(__file__).parent / "locales"
DOMAIN = "vigil"
DEFAULT_LANGUAGE = "en"


def N_(message: str) -> str:
    """Marks a string for extraction where it is translated later (command summaries)."""
    return message


@functools.cache
def available_languages() -> tuple[str, ...]:
    found = {DEFAULT_LANGUAGE}
    if LOCALES_DIR.is_dir():
        for po in LOCALES_DIR.glob(f"*/LC_MESSAGES/{DOMAIN}.po"):
            found.add(po.parent.parent.name)
    return tuple(sorted(found))


def normalize_language(code: str | None) -> str | None:
    """Map `ru-RU`, `pt_BR`, `RU` to a catalog we have, or None."""
    if not code:
        return None
    base = code.strip().replace("-", "_").split("_")[0].lower()[:8]
    return base if base in available_languages() else None


@functools.cache
def _language_words() -> dict[str, str]:
    """Each shipped language by its code, by its own name and by its name in English and in
    every other shipped language, from CLDR: `english`, `русский`, `فارسی`, `Russian`."""
    shipped = available_languages()
    found = {code: code for code in shipped}
    for reader in ("en", *shipped):
        names = Locale.parse(reader).languages
        for code in shipped:
            if names.get(code):
                found.setdefault(unicodedata.normalize("NFKC", names[code]).casefold(), code)
    found.setdefault("farsi", "fa")  # what many Iranians call it in English
    found.setdefault("myanmar", "my")
    return found


def find_language(text: str) -> str | None:
    """The shipped language someone means by `ru`, `ru-RU`, `english` or `русский`, or None."""
    key = unicodedata.normalize("NFKC", text.strip()[:40]).casefold()
    return normalize_language(key) or _language_words().get(key)


@functools.cache
def _catalog(language: str) -> NullTranslations:
    po_path = LOCALES_DIR / language / "LC_MESSAGES" / f"{DOMAIN}.po"
    if language == DEFAULT_LANGUAGE or not po_path.exists():
        return NullTranslations()
    try:
        with po_path.open("rb") as f:
            catalog = read_po(f, locale=language)
        buf = io.BytesIO()
        # Fuzzy entries are unreviewed guesses: better English than a wrong word to a relative.
        write_mo(buf, catalog, use_fuzzy=False)
        buf.seek(0)
        return Translations(buf, domain=DOMAIN)
    except Exception:
        log.exception("catalog for %s unreadable; falling back to English", language)
        return NullTranslations()


RTL_LANGUAGES = frozenset({"ar", "fa", "he", "ur", "ps", "ckb", "yi"})
_LRI, _PDI, _RLM = "\u2066", "\u2069", "\u200f"
# Runs of Latin letters, digits and the punctuation of commands, codes, dates and times. An
# isolate already in the text (a value that was itself translated) is kept whole, never nested.
_LTR_RUN = re.compile(
    r"\u2066[^\u2066\u2069]*\u2069"
    r"|[A-Za-z0-9/@#+][A-Za-z0-9_./:@#+\-]*(?:[ ][A-Za-z0-9_./:@#+\-]+)*"
)
# What ends a sentence or a clause stays outside: `⁦/unschedule 1⁩.`, not `⁦/unschedule 1.⁩`,
# or the full stop is drawn at the wrong end of the right-to-left line.
_TRAILING = ".:,;-"


def _isolate(m: re.Match[str]) -> str:
    run = m.group(0)
    if run.startswith(_LRI):
        return run
    core = run.rstrip(_TRAILING)
    return f"{_LRI}{core}{_PDI}{run[len(core) :]}" if core else run


def isolate_ltr(text: str) -> str:
    """Wrap left-to-right runs in LRI…PDI so `/case ales-demo`, invite codes, 12:30 and
    numbers keep their order inside a right-to-left sentence on Telegram and Signal. A line
    that then starts with such a run gets a right-to-left mark first: without it, apps take
    the paragraph's direction from the first strong letter and lay the line out left to right."""
    lines = _LTR_RUN.sub(_isolate, text).split("\n")
    return "\n".join(_RLM + line if line.startswith(_LRI) else line for line in lines)


class Translator:
    """`_("Hello {name}", name=...)`: translate, then fill placeholders."""

    def __init__(self, language: str | None) -> None:
        self.language = normalize_language(language) or DEFAULT_LANGUAGE
        self._t = _catalog(self.language)
        self.rtl = self.language in RTL_LANGUAGES

    def __call__(self, message: str, **values: Any) -> str:
        return self._finish(_fill(self._t.gettext(message), message, values))

    def plural(self, singular: str, plural: str, n: int, **values: Any) -> str:
        values.setdefault("n", n)
        source = singular if n == 1 else plural
        return self._finish(_fill(self._t.ngettext(singular, plural, n), source, values))

    def _finish(self, text: str) -> str:
        return isolate_ltr(text) if self.rtl else text

    def layout(self, text: str) -> str:
        """Text put together outside the catalog (`/help`'s "/cmd — summary" lines), isolated
        like translated text so a right-to-left reader sees it in order."""
        return self._finish(text)

    def number(self, value: float) -> str:
        return format_decimal(value, locale=self.locale)

    @property
    def locale(self) -> Locale:
        try:
            return Locale.parse(self.language)
        except (UnknownLocaleError, ValueError):
            return Locale.parse(DEFAULT_LANGUAGE)

    def datetime(self, when: datetime, timezone: str | None) -> str:
        """Date and time in the locale's own way, without seconds (issue 16 item 8): the medium
        date, the short time (24- or 12-hour as the locale has it), joined by its pattern."""
        tz = ZoneInfo(timezone) if timezone else ZoneInfo("UTC")
        local = when.astimezone(tz)
        return (
            get_datetime_format("medium", locale=self.locale)
            .replace("{1}", format_date(local.date(), "medium", locale=self.locale))
            .replace("{0}", format_time(local.time(), "short", locale=self.locale))
        )


def _fill(translated: str, source: str, values: dict[str, Any]) -> str:
    if not values:
        return translated
    try:
        return translated.format(**values)
    except (KeyError, IndexError, ValueError):
        log.warning("translation placeholders do not match the source; using English")
        return source.format(**values)


def language_name(code: str) -> str:
    """The language's own name for itself, for menus."""
    try:
        name = Locale.parse(code).get_display_name(code) or code
    except (UnknownLocaleError, ValueError):
        return code
    return name[:1].upper() + name[1:]
