"""Caption normalisation and text-quality predicates: pure functions, testable without Beam."""

from __future__ import annotations

import html
import re
import unicodedata

import apache_beam as beam
from bs4 import BeautifulSoup

from pipeline.records import DROPPED, Pair, drop, failed

# Bidi controls (LRM, RLM, ALM, embeddings, overrides, isolates) and invisible joiners that
# carry no meaning in Arabic text. ZWNJ (U+200C) is kept: Persian uses it, Arabic rarely does.
_INVISIBLE = dict.fromkeys(
    map(
        ord,
        "\u200e\u200f\u061c\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
        "\u200b\u2060\ufeff\u00ad",
    )
)
# No-break and other fixed-width spaces become a plain space before whitespace is collapsed.
_SPACES = dict.fromkeys(map(ord, "\u00a0\u2007\u202f\u2000\u2001\u2002\u2003\u2009\u200a"), " ")
_TAG = re.compile(r"<\s*/?\s*[a-zA-Z][^<>]*>")
_WHITESPACE = re.compile(r"\s+")
# A caption that is only a file name: "IMG_9880.JPG", "ملف:Cairo 2009.jpg", "DSC01234".
_FILENAME = re.compile(
    r"^(?:(?:file|image|ملف|صورة)\s*:\s*)?[^\s/]*(?:\s[^\s/]+){0,6}\.(?:jpe?g|png|gif|tiff?|svg|webp|bmp)$"
    r"|^(?:img|dsc|dscn|dscf|pict?|p)[_\- ]?\d{3,}$",
    re.IGNORECASE,
)
_ARABIC_LETTER = re.compile(r"[\u0620-\u064a\u066e-\u06d3\u06fa-\u06fc\u0750-\u077f\u08a0-\u08ff]")
_LATIN_LETTER = re.compile(r"[A-Za-z\u00c0-\u024f]")


def normalize_caption(text: str) -> str:
    """NFC, tags removed, entities decoded, bidi marks dropped, all whitespace one plain space."""
    if "<" in text and _TAG.search(text):
        # A real HTML parser, not a regex, so `<br/>`, attributes and comments all go.
        text = BeautifulSoup(text, "html.parser").get_text(" ")
    elif "&" in text:
        text = html.unescape(text)
    text = unicodedata.normalize("NFC", text)
    text = text.translate(_INVISIBLE).translate(_SPACES)
    return _WHITESPACE.sub(" ", text).strip()


def normalize_english(text: str) -> str:
    """The contract's `caption_en`: outer whitespace stripped, inner runs collapsed to one space."""
    return _WHITESPACE.sub(" ", text).strip()


def is_filename(text: str) -> bool:
    """True when a caption is just a file name (common in WIT's attribution field)."""
    return bool(_FILENAME.match(text.strip()))


def arabic_letter_share(text: str) -> float:
    """Arabic-script letters over all Arabic and Latin letters (0 when there are none)."""
    arabic = len(_ARABIC_LETTER.findall(text))
    latin = len(_LATIN_LETTER.findall(text))
    return arabic / (arabic + latin) if arabic + latin else 0.0


def caption_problem(
    text: str,
    *,
    min_chars: int,
    max_chars: int,
    min_words: int,
    max_words: int,
) -> str | None:
    """The drop reason for a normalised caption, or None when it is usable.

    Reasons: `empty_caption`, `filename_caption`, `too_short`, `too_long`, `no_arabic_letters`.
    """
    if not text:
        return "empty_caption"
    if is_filename(text):
        return "filename_caption"
    words = len(text.split(" "))
    if len(text) < min_chars or words < min_words:
        return "too_short"
    if len(text) > max_chars or words > max_words:
        return "too_long"
    if not _ARABIC_LETTER.search(text):
        return "no_arabic_letters"
    return None


class _Clean(beam.DoFn):
    def __init__(self, bounds: dict[str, int]):
        self._bounds = bounds

    def process(self, pair: Pair):
        try:
            text = normalize_caption(pair.caption_ar)
            reason = caption_problem(text, **self._bounds)
        except Exception as err:  # noqa: BLE001 - one bad record is counted, never fatal
            yield beam.pvalue.TaggedOutput(DROPPED, failed(pair, "clean", err))
            return
        if reason:
            yield beam.pvalue.TaggedOutput(DROPPED, drop(pair, reason))
        else:
            yield pair._replace(caption_ar=text)


class CleanCaptions(beam.PTransform):
    """Normalises `caption_ar` and drops captions that fail the quality predicates.

    Returns `(kept, dropped)`.
    """

    def __init__(self, *, min_chars: int, max_chars: int, min_words: int, max_words: int):
        super().__init__()
        self._bounds = dict(
            min_chars=min_chars, max_chars=max_chars, min_words=min_words, max_words=max_words
        )

    def expand(self, pairs):
        out = pairs | "Clean" >> beam.ParDo(_Clean(self._bounds)).with_outputs(DROPPED, main="kept")
        return out.kept, out[DROPPED]
