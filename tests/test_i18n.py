"""Catalogs: complete for every shipped language, placeholders intact, graceful fallback."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from bot.i18n import LOCALES_DIR, Translator, available_languages
from tests.conftest import REPO

KEYWORDS = {"_": None, "N_": None, "tr": None, "plural": (1, 2)}
PLACEHOLDER = re.compile(r"\{[a-z_0-9]*\}")
REQUIRED = {"ru"}  # issue #2: English (the source) and Russian complete from day one


def source_messages() -> set[str]:
    found: set[str] = set()
    for package in ("bot", "handlers", "storage"):
        for _file, _line, message, _comments, _ctx in extract_from_dir(
            REPO / package, method_map=[("**.py", "python")], keywords=KEYWORDS
        ):
            # A plural entry is keyed by its singular form in a catalog.
            found.add(message[0] if isinstance(message, tuple) else message)
    return found


SOURCE = source_messages()
LANGUAGES = sorted(set(available_languages()) - {"en"})


def catalog(lang: str):
    with (LOCALES_DIR / lang / "LC_MESSAGES" / "vigil.po").open("rb") as f:
        return read_po(f, locale=lang)


def test_required_languages_ship() -> None:
    assert set(LANGUAGES) >= REQUIRED


@pytest.mark.parametrize("lang", LANGUAGES)
def test_catalog_is_complete_and_not_fuzzy(lang: str) -> None:
    cat = catalog(lang)
    missing, fuzzy = [], []
    for msgid in sorted(SOURCE):
        entry = cat.get(msgid)
        if entry is None or not (
            entry.string if isinstance(entry.string, str) else all(entry.string)
        ):
            missing.append(msgid)
        elif entry.fuzzy:
            fuzzy.append(msgid)
    assert not missing, f"{lang}: {len(missing)} untranslated, e.g. {missing[:3]}"
    assert not fuzzy, f"{lang}: fuzzy entries {fuzzy[:3]}"


@pytest.mark.parametrize("lang", LANGUAGES)
def test_placeholders_match_the_source(lang: str) -> None:
    bad = []
    for entry in catalog(lang):
        if not entry.id:
            continue
        ids = entry.id if isinstance(entry.id, tuple) else (entry.id,)
        strings = entry.string if isinstance(entry.string, tuple) else (entry.string,)
        want = set(PLACEHOLDER.findall(ids[-1])) | set(PLACEHOLDER.findall(ids[0]))
        for s in strings:
            if s and set(PLACEHOLDER.findall(s)) - want:
                bad.append((ids[0][:40], s[:40]))
            if s and not set(PLACEHOLDER.findall(ids[0])) <= set(PLACEHOLDER.findall(s)) | {"{n}"}:
                bad.append((ids[0][:40], s[:40]))
    assert not bad, f"{lang}: placeholders differ: {bad[:3]}"


def test_missing_translation_falls_back_to_english() -> None:
    tr = Translator("ru")
    assert tr("A sentence no catalog has, {x}.", x=1) == "A sentence no catalog has, 1."
    assert Translator("xx").language == "en"
    assert (
        Translator(None)("Welcome. You joined as {role}.", role="r") == "Welcome. You joined as r."
    )


def test_broken_placeholder_in_a_translation_falls_back(monkeypatch) -> None:
    tr = Translator("en")
    monkeypatch.setattr(tr._t, "gettext", lambda m: "Привет {nonexistent}")
    assert tr("Hello {name}", name="A") == "Hello A"


def test_pot_template_is_current() -> None:
    pot = LOCALES_DIR / "vigil.pot"
    with pot.open("rb") as f:
        template = {m.id if isinstance(m.id, str) else m.id[0] for m in read_po(f) if m.id}
    missing = sorted(m for m in SOURCE if m not in template)
    assert not missing, f"run `make catalogs`: the template misses {missing[:3]}"


def test_locales_dir_layout() -> None:
    assert Path(LOCALES_DIR).is_dir()


def test_rtl_isolates_latin_runs() -> None:
    from bot.i18n import isolate_ltr

    out = isolate_ltr("پرونده /case ales-demo را ببینید، کد ABCD-EF23-GH45 ساعت 12:30")
    assert "\u2066/case ales-demo\u2069" in out
    assert "\u2066ABCD-EF23-GH45\u2069" in out
    assert "\u206612:30\u2069" in out
    assert Translator("ar").rtl == ("ar" in available_languages())
    assert not Translator("ru").rtl


# CLDR: Burmese and Chinese have no grammatical number, Arabic six forms, the East Slavic
# languages three; a header with the wrong count makes gettext pick a wrong or empty form.
PLURAL_FORMS = {"ru": 3, "uk": 3, "be": 3, "ar": 6, "es": 2, "zh": 1, "my": 1}


@pytest.mark.parametrize("lang", sorted(PLURAL_FORMS))
def test_catalog_header_has_the_languages_plural_forms(lang: str) -> None:
    path = LOCALES_DIR / lang / "LC_MESSAGES" / "vigil.po"
    with path.open("rb") as f:
        catalog = read_po(f)
    assert catalog.num_plurals == PLURAL_FORMS[lang]
    for message in catalog:
        if isinstance(message.id, tuple):
            assert len(message.string) == PLURAL_FORMS[lang], message.id


def _depth(text: str) -> int:
    depth = deepest = 0
    for ch in text:
        if ch in "\u2066\u2067\u2068":
            depth += 1
            deepest = max(deepest, depth)
        elif ch == "\u2069":
            depth -= 1
            assert depth >= 0, "a PDI without its isolate"
    assert depth == 0, "an isolate left open"
    return deepest


def test_rtl_punctuation_stays_outside_the_isolates() -> None:
    from bot.i18n import isolate_ltr

    assert isolate_ltr("برای لغو: /unschedule 1.").endswith("\u2066/unschedule 1\u2069.")
    assert "\u2066Europe/Minsk\u2069." in isolate_ltr("منطقه زمانی: Europe/Minsk.")
    assert "\u206612:30\u2069" in isolate_ltr("ساعت 12:30.")  # a colon inside a time stays


def test_rtl_isolates_never_nest() -> None:
    from bot.i18n import isolate_ltr

    once = isolate_ltr("کد ABCD-EF23 و /case ales")
    assert isolate_ltr(once) == once
    fa = Translator("fa")
    # A translated value inside a translated sentence: the inner isolates are kept, not wrapped.
    inner = fa("Time zone set: {zone}.", zone="Europe/Minsk")
    outer = fa("Language set: {name}.", name=inner)
    assert _depth(outer) == 1


@pytest.mark.parametrize("lang", ["fa", "ar"])
def test_rtl_help_lines_nest_nothing_and_start_right_to_left(lang: str, chat) -> None:  # type: ignore[no-untyped-def]
    chat.member("ann", "coordinator", language=lang)
    text = chat.say("ann", "/help")
    assert _depth(text) == 1
    for line in text.split("\n"):
        if line.startswith(("\u2066", "/")):
            raise AssertionError(f"a line starts left to right: {line!r}")


@pytest.mark.parametrize("lang", ["en", *available_languages()])
def test_dates_and_times_have_no_seconds(lang: str) -> None:
    from datetime import UTC, datetime

    shown = Translator(lang).datetime(datetime(2026, 10, 15, 16, 30, 45, tzinfo=UTC), "UTC")
    digits = "".join(str(int(c)) if c.isdigit() else c for c in shown)
    assert re.search(r"30", digits) and not re.search(r"\d:\d\d:\d\d", digits), shown


def test_arabic_plural_forms_follow_the_header_order() -> None:
    # The header's form 4 is n % 100 in 0..2 (100, 101, 102: "100 شخص", a genitive) and form 5
    # is 11..99 ("15 شخصًا", an accusative): a translator used to CLDR's order swaps them.
    with (LOCALES_DIR / "ar" / "LC_MESSAGES" / "vigil.po").open("rb") as f:
        catalog = read_po(f)
    swapped = [
        m.id[0]
        for m in catalog
        if isinstance(m.id, tuple) and "ًا" in m.string[4] and "ًا" not in m.string[5]
    ]
    assert not swapped
