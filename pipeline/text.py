"""Caption text normalisation: pure functions every reader and filter shares.

`normalize_caption` makes the contract's `caption_ar` form (NFC, no tags, controls or bidi
marks, single spaces), `normalize_english` the `caption_en` form (also the text translated);
`is_filename` and `arabic_letter_share` are the tests the readers and the caption filter
(`filters.text`) make of a caption.

Both normalisations take out, whatever the source, what must never reach a caption:
- C0 and C1 control characters (U+0000-U+001F, U+007F-U+009F): those that are whitespace (tab,
  line feed, vertical tab, form feed, carriage return, the information separators U+001C-U+001F
  and next line U+0085) become a space, the others (NUL, escape, ...) are removed;
- every bidi control: the marks (LRM, RLM, ALM), embeddings and overrides (LRE, RLE, PDF, LRO,
  RLO) and isolates (LRI, RLI, FSI, PDI). An unpaired override or isolate would reorder the text
  shown after the caption; a paired one carries nothing a caption needs, since a renderer orders
  Arabic and Latin runs by itself. Removing them all is simpler and safer than balancing them;
- invisible characters with no meaning in a caption (zero-width space, word joiner, byte-order
  mark, soft hyphen, the deprecated format controls U+206A-U+206F, the interlinear annotation
  characters U+FFF9-U+FFFB), and lone surrogates (an escape such as `\\ud800` in a JSON file),
  which no UTF-8 output can hold. ZWNJ and ZWJ are kept: Persian words and emoji need them.
"""

from __future__ import annotations

import html
import re
import unicodedata

from bs4 import BeautifulSoup

# The bidi controls, removed from every caption (module docstring).
BIDI_CONTROLS = "\u200e\u200f\u061c\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
_INVISIBLE = "\u200b\u2060\ufeff\u00ad\u206a\u206b\u206c\u206d\u206e\u206f\ufff9\ufffa\ufffb"
# C0 and C1 controls: the whitespace ones become a space, the others go.
_CONTROLS = {c: " " if chr(c).isspace() else None for c in (*range(0x20), *range(0x7F, 0xA0))}
# What both normalisations take out of any text, as a `str.translate` table.
_UNWANTED = {
    **dict.fromkeys(map(ord, BIDI_CONTROLS + _INVISIBLE)),
    **dict.fromkeys(range(0xD800, 0xE000)),  # lone surrogates
    **_CONTROLS,
}
# No-break and other fixed-width spaces become a plain space before whitespace is collapsed.
_SPACES = dict.fromkeys(map(ord, "\u00a0\u2007\u202f\u2000\u2001\u2002\u2003\u2009\u200a"), " ")
_CAPTION_TABLE = {**_UNWANTED, **_SPACES}
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
    """Tags removed, entities decoded, controls, bidi controls and invisible characters taken
    out (module docstring), NFC, all whitespace one plain space."""
    text = text.translate(_CAPTION_TABLE)
    if "<" in text and _TAG.search(text):
        # A real HTML parser, not a regex, so `<br/>`, attributes and comments all go.
        text = BeautifulSoup(text, "html.parser").get_text(" ").translate(_CAPTION_TABLE)
    elif "&" in text:
        # An entity may stand for anything: `&#x202E;`.
        text = html.unescape(text).translate(_CAPTION_TABLE)
    # NFC after the removals: a control between a letter and its mark would keep them apart.
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFC", text)).strip()


def normalize_english(text: str) -> str:
    """The contract's `caption_en`: controls, bidi controls and invisible characters taken out
    (module docstring), outer whitespace stripped, inner runs collapsed to one space."""
    return _WHITESPACE.sub(" ", text.translate(_UNWANTED)).strip()


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


_SURROGATE = re.compile("[\ud800-\udfff]")


def has_lone_surrogate(text: str) -> bool:
    """True when `text` holds a lone surrogate (a JSON escape such as `\\ud800`): no UTF-8 file,
    and so no Parquet shard, can store it."""
    return _SURROGATE.search(text) is not None
