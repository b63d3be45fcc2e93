"""Right-to-left text for a terminal, which draws characters left to right as they arrive.

`display(text)` gives each line that holds right-to-left letters in visual order: the Unicode
bidi algorithm (UAX #9) from python-bidi, isolates included, each line's direction taken from its
first strong letter. python-bidi's Rust core stops at rule L2, so two rules are done here with
the levels it resolved: L4, a bracket in a right-to-left run is drawn as its mirror, so that
"(خانواده)" does not come out as ")هداوناخ("; and L3, a combining mark that the reversal put
in front of its letter goes back after it. The explicit formatting characters (marks,
embeddings, isolates) are dropped once the line is in visual order: they have done their work,
and a terminal that applies its own bidi would only reorder the line a second time. A line
without right-to-left letters is returned exactly as it is.

Only the console transport uses this, on what it prints: what is stored and what Telegram and
Signal receive stay in logical order.
"""

from __future__ import annotations

import re
import unicodedata

from bidi import get_base_level, get_display
from bidi.mirror import MIRRORED

_STRONG_RTL = frozenset({"R", "AL"})
_FORMATTING = dict.fromkeys(
    map(ord, "\u200e\u200f\u061c\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
)
_L1_TRAILING = frozenset({"WS", "FSI", "LRI", "RLI", "PDI"})
_L1_RETAINED = frozenset({"RLE", "LRE", "RLO", "LRO", "PDF", "BN"})
# python-bidi's debug answer is the Rust BidiInfo pretty-printed: a class and a level per byte.
# The text is printed escaped, so these line starts cannot come from the text itself.
_CLASSES = re.compile(r"\n    original_classes: \[([^\]]*)\]")
_LEVELS = re.compile(r"\n    levels: \[([^\]]*)\]")


def display(text: str) -> str:
    return "\n".join(display_line(line) for line in text.split("\n"))


def display_line(line: str) -> str:
    if not any(unicodedata.bidirectional(ch) in _STRONG_RTL for ch in line):
        return line
    visual = get_display(line)
    resolved = _resolved(line)
    if resolved is not None:
        classes, levels = resolved
        order = _visual_order(classes, levels, get_base_level(line))
        if "".join(line[i] for i in order) == visual:  # the same reordering as python-bidi's
            visual = _mirror_and_marks(line, order, classes, levels)
    return visual.translate(_FORMATTING)


def _resolved(line: str) -> tuple[list[str], list[int]] | None:
    """Each character's bidi class and resolved level (rules P2 to I2), or None if python-bidi's
    answer is not in the shape this reads (a new version): the line is then shown without L3/L4."""
    dump = get_display(line, debug=True)
    classes_m, levels_m = _CLASSES.search(dump), _LEVELS.search(dump)
    if classes_m is None or levels_m is None:
        return None
    byte_classes = re.findall(r"[A-Z]+", classes_m.group(1))
    byte_levels = [int(n) for n in re.findall(r"Level\(\s*(\d+),?\s*\)", levels_m.group(1))]
    if not len(byte_classes) == len(byte_levels) == len(line.encode()):
        return None
    classes, levels, at = [], [], 0
    for ch in line:
        classes.append(byte_classes[at])
        levels.append(byte_levels[at])
        at += len(ch.encode())
    return classes, levels


def _visual_order(classes: list[str], levels: list[int], base: int) -> list[int]:
    """Rules L1 and L2, as unicode-bidi applies them: the logical index at each visual place."""
    levels = list(levels)
    reset_from: int | None = 0
    previous = base
    for i, cls in enumerate(classes):
        if cls in ("B", "S"):
            for j in range(i if reset_from is None else reset_from, i + 1):
                levels[j] = base
            reset_from = None
        elif cls in _L1_TRAILING:
            reset_from = i if reset_from is None else reset_from
        elif cls in _L1_RETAINED:
            reset_from = i if reset_from is None else reset_from
            levels[i] = previous
        else:
            reset_from = None
        previous = levels[i]
    if reset_from is not None:
        for j in range(reset_from, len(levels)):
            levels[j] = base
    order = list(range(len(levels)))
    if not levels:
        return order
    lowest_odd = min(levels) | 1
    for level in range(max(levels), lowest_odd - 1, -1):
        i = 0
        while i < len(order):
            if levels[order[i]] < level:
                i += 1
                continue
            j = i
            while j < len(order) and levels[order[j]] >= level:
                j += 1
            order[i:j] = order[i:j][::-1]
            i = j
    return order


def _mirror_and_marks(line: str, order: list[int], classes: list[str], levels: list[int]) -> str:
    out: list[str] = []
    marks: list[str] = []  # combining marks met before their letter in a right-to-left run
    marks_level = 0
    for i in order:
        ch, level = line[i], levels[i]
        if marks and level != marks_level:  # the run ended without their letter
            out.extend(marks)
            marks.clear()
        if level % 2 and classes[i] == "NSM":
            marks.append(ch)
            marks_level = level
            continue
        out.append(MIRRORED.get(ch, ch) if level % 2 else ch)
        out.extend(marks)
        marks.clear()
    out.extend(marks)
    return "".join(out)
