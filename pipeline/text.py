"""Caption text normalisation: pure functions every reader and filter shares.

`normalize_caption` makes the contract's `caption_ar` form (NFC, no tags or bidi marks, single
spaces), `normalize_english` the `caption_en` form; `is_filename` and `arabic_letter_share` are
the tests the readers and the caption filter (`filters.text`) make of a caption.
"""

from __future__ import annotations

import html
import re
import unicodedata

from bs4 import BeautifulSoup

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


def has_arabic_letter(text: str) -> bool:
    """True when `text` holds at least one Arabic-script letter."""
    return bool(_ARABIC_LETTER.search(text))
