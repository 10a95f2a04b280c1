"""CleanCaptions: the text-quality filter on `caption_ar`, a `Step` over pure predicates.

The caption is normalised (`pipeline.text.normalize_caption`) and kept in that form, or dropped
by the first predicate it fails (`caption_problem`).
"""

from __future__ import annotations

from pipeline.records import Pair
from pipeline.steps import Reasons, Reject, Step
from pipeline.text import has_arabic_letter, is_filename, normalize_caption

REASONS = Reasons(
    "clean",
    {
        "empty_caption": "no caption text (after normalisation)",
        "filename_caption": "the caption is only a file name (IMG_9880.JPG, ملف:Cairo.jpg)",
        "too_short": "fewer characters or words than filters.min_chars / min_words",
        "too_long": "more characters or words than filters.max_chars / max_words",
        "no_arabic_letters": "the caption has no Arabic-script letter",
    },
)


def caption_problem(
    text: str,
    *,
    min_chars: int,
    max_chars: int,
    min_words: int,
    max_words: int,
) -> str | None:
    """The drop reason for a normalised caption, or None when it is usable (`REASONS`)."""
    if not text:
        return "empty_caption"
    if is_filename(text):
        return "filename_caption"
    words = len(text.split(" "))
    if len(text) < min_chars or words < min_words:
        return "too_short"
    if len(text) > max_chars or words > max_words:
        return "too_long"
    if not has_arabic_letter(text):
        return "no_arabic_letters"
    return None


class CleanCaptions(Step):
    """Normalises `caption_ar` and drops captions that fail the quality predicates.

    Returns `(kept, dropped)`.
    """

    REASONS = REASONS

    def __init__(self, *, min_chars: int, max_chars: int, min_words: int, max_words: int):
        super().__init__()
        self._bounds = dict(
            min_chars=min_chars, max_chars=max_chars, min_words=min_words, max_words=max_words
        )

    def judge(self, pair: Pair) -> Pair | Reject:
        text = normalize_caption(pair.caption_ar)
        reason = caption_problem(text, **self._bounds)
        return Reject(reason) if reason else pair._replace(caption_ar=text)
