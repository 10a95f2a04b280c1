"""Caption normalisation and the text tests every reader and filter shares."""

from __future__ import annotations

import pytest

from pipeline.text import arabic_letter_share, is_filename, normalize_caption, normalize_english


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
