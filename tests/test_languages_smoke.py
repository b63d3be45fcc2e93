"""A short journey in every shipped language through the console transport (`vigil demo`)."""

from __future__ import annotations

import pytest

from bot.i18n import Translator, available_languages, isolate_ltr
from bot.transports.terminal_bidi import display
from tests.test_demo import outbox_texts, run_demo


@pytest.mark.parametrize("lang", available_languages())
def test_journey_in_each_language(lang: str, tmp_path) -> None:
    out = run_demo(
        [
            ":as relative",
            f"/language {lang}",
            "/help",
            "/cases",
            "/report",  # the wizard's first question, with numbered choices
            "/cancel",
            ":as coordinator",
            f"/language {lang}",
            "/help",
            "/reports nasrin-demo",
            "/invite activist",
            ":quit",
        ],
        tmp_path,
        "--data-dir",
        str(tmp_path / "kept"),
    )
    tr = Translator(lang)
    assert tr.language == lang
    # What the person sees is their own language, not the English source.
    # (Printed as a terminal draws it: right-to-left lines in visual order.)
    for source in ("What you can do:", "Cancelled. Nothing was saved."):
        shown = tr(source)
        assert display(shown) in out, (lang, source)
        if lang != "en":
            assert shown != source
    assert "Traceback" not in out
    if tr.rtl:
        # Commands inside right-to-left text are isolated so they keep their order on the
        # platforms; the terminal shows the lines already in order, without the isolates.
        sent = "\n".join(outbox_texts(tmp_path / "kept", "relative"))
        assert isolate_ltr("/report") in sent or "\u2066/" in sent
        assert display(tr("What you can do:")) != tr("What you can do:")
