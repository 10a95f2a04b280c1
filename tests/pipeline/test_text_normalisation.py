"""Caption normalisation and the text tests every reader and filter shares."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pipeline.text import (
    BIDI_CONTROLS,
    arabic_letter_share,
    is_filename,
    normalize_caption,
    normalize_english,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("قبة\u200f الصخرة\u200e", "قبة الصخرة"),  # RLM, LRM
        ("\u061cقبة\u202bالصخرة\u202c", "قبةالصخرة"),  # ALM, embedding marks
        ("قبة\u00a0الصخرة", "قبة الصخرة"),  # NBSP
        ("قبة\u202fالصخرة", "قبة الصخرة"),  # narrow NBSP
        ("  قبة \t\n الصخرة  \n", "قبة الصخرة"),  # runs of whitespace, newlines
        ("قبة<br/>الصخرة", "قبة الصخرة"),  # a tag between words separates them
        ("<i>قبة</i> الصخرة", "قبة الصخرة"),
        ('<a href="x">قبة</a> &amp; الصخرة', "قبة & الصخرة"),
        ("الكسكس &amp; الطاجين", "الكسكس & الطاجين"),  # entities without tags
        ("قبة\u200bالصخرة\ufeff", "قبةالصخرة"),  # zero-width space, BOM
        ("\u0627\u0653", "\u0622"),  # NFC: alef + madda above composes to آ
        ("a < b and c > d", "a < b and c > d"),  # not a tag
        ("", ""),
        ("منظر عام ل\x00مدينة", "منظر عام لمدينة"),  # NUL: removed, not a space
        ("قبة\x85الصخرة\x1fو\x0bالقدس", "قبة الصخرة و القدس"),  # NEL, US, VT: whitespace
        ("قبة\x1b[31mالصخرة\x7f\x9b", "قبة[31mالصخرة"),  # ESC, DEL, CSI: removed
        ("\u202eقبة الصخرة", "قبة الصخرة"),  # an unpaired right-to-left override
        ("\u2067قبة\u2069 \u2066Dome\u2069", "قبة Dome"),  # isolates, paired or not
        ("قبة &#x202E;الصخرة&#0;", "قبة الصخرة\ufffd"),  # controls behind entities
        ("<b>قبة</b>\x00\u202d الصخرة", "قبة الصخرة"),
        ("قبة\ud800الصخرة", "قبةالصخرة"),  # a lone surrogate (a JSON escape)
        ("e\x00\u0301", "\u00e9"),  # NFC after the control is gone
    ],
)
def test_normalize_caption(raw, expected):
    assert normalize_caption(raw) == expected


def test_normalisation_is_idempotent_and_keeps_zwnj():
    text = "می\u200cخواهم <b>قبة</b>\u00a0 الصخرة"
    once = normalize_caption(text)
    assert "\u200c" in once  # ZWNJ is meaningful (Persian), not noise
    assert normalize_caption(once) == once


def test_normalize_english_only_collapses_whitespace():
    assert normalize_english("  A dog   runs\n on the beach . ") == "A dog runs on the beach ."
    assert normalize_english('"quoted" <b>') == '"quoted" <b>'


def test_normalize_english_takes_out_controls_and_bidi_controls():
    assert (
        normalize_english("a dog\x00 runs\x85on the\tbeach\u202e .") == "a dog runs on the beach ."
    )
    assert normalize_english("\ufeffa \u2066cat\u2069\x1b\x9f") == "a cat"
    assert normalize_english("a cat\udcff") == "a cat"  # a lone surrogate


# Characters no caption may hold: C0/C1 controls, bidi controls, lone surrogates.
FORBIDDEN = {chr(c) for c in (*range(0x20), *range(0x7F, 0xA0), *range(0xD800, 0xE000))}
FORBIDDEN |= set(BIDI_CONTROLS) | {"\ufeff", "\u200b"}

# Text rich in what normalisation must take out, around Arabic, Latin and markup.
hostile_text = st.lists(
    st.one_of(
        st.characters(codec="utf-8"),
        st.characters(min_codepoint=0, max_codepoint=0x20),
        st.characters(min_codepoint=0x7F, max_codepoint=0xA0),
        st.sampled_from(sorted(FORBIDDEN)),
        st.sampled_from(["<b>", "</i>", "<br/>", "&amp;", "&#x202E;", "&#0;", "&#x85;"]),
        st.sampled_from(["\u0627", "\u0653", "e", "\u0301", " ", "\u00a0", "\u200c"]),
    ),
    max_size=40,
).map("".join)


def assert_clean(out: str) -> None:
    assert not FORBIDDEN & set(out), [hex(ord(c)) for c in set(out) & FORBIDDEN]
    assert out == out.strip() and "  " not in out
    assert all(c == " " or not c.isspace() for c in out)
    out.encode("utf-8")  # a UTF-8 output can hold it


@settings(max_examples=500, deadline=None)
@given(hostile_text)
@example("منظر عام ل\x00مدينة")
@example("\u202e\x85\x00")
def test_normalize_caption_never_leaves_controls_or_bidi_controls(text):
    out = normalize_caption(text)
    assert_clean(out)
    assert unicodedata.is_normalized("NFC", out)


@settings(max_examples=500, deadline=None)
@given(hostile_text)
@example("a\x00b\u202ec\x85d")
def test_normalize_english_never_leaves_controls_or_bidi_controls(text):
    out = normalize_english(text)
    assert_clean(out)
    assert normalize_english(out) == out  # the translation memory's key is stable


@pytest.mark.parametrize(
    "text",
    ["IMG_9880.JPG", "DSC01234", "ملف:القاهرة 2009.jpg", "File:Cairo tower.png", "photo 12.jpeg"],
)
def test_file_names_are_recognised(text):
    assert is_filename(text)


@pytest.mark.parametrize("text", ["برج القاهرة", "صورة من عام 2009", "The Nile at Aswan."])
def test_captions_are_not_file_names(text):
    assert not is_filename(text)


def test_arabic_letter_share():
    assert arabic_letter_share("برج القاهرة") == 1.0
    assert arabic_letter_share("Cairo") == 0.0
    assert arabic_letter_share("2009 !") == 0.0
    assert arabic_letter_share("برج Cairo") == pytest.approx(3 / 8)
