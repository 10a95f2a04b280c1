"""Translation quality checks: each drop reason from crafted inputs, and their order."""

from __future__ import annotations

import pytest

from pipeline.config import TranslationConfig
from translators.quality import (
    latin_share,
    length_ratio,
    longest_repeat,
    quality_problem,
)

CONFIG = TranslationConfig()  # min_score -1.5, length ratio [0.3, 3.0], latin 0.5, repeats 3
EN = "A cat sleeping on a red sofa."
AR = "قطة نائمة على أريكة حمراء."


@pytest.mark.parametrize(
    ("en", "ar", "score", "reason"),
    [
        (EN, AR, -0.4, None),
        (EN, AR, None, None),  # a memory entry without a score
        (EN, "", -0.1, "empty_translation"),
        (EN, "   ", -0.1, "empty_translation"),
        (EN, EN, -0.1, "untranslated"),
        (EN, "A cat نائمة on a sofa", -0.1, "untranslated"),
        (EN, "قطة قطة قطة قطة على أريكة", -0.1, "repetition_loop"),
        (
            "A dog on a red sofa.",
            "كلب على أريكة على أريكة على أريكة على أريكة",
            -0.1,
            "repetition_loop",
        ),
        (EN, "قطة", -0.1, "length_ratio"),
        ("A cat.", "قطة نائمة على أريكة حمراء في غرفة", -0.1, "length_ratio"),
        (EN, AR, -1.6, "low_translation_score"),
    ],
)
def test_each_reason(en, ar, score, reason):
    assert quality_problem(en, ar, score, CONFIG) == reason


def test_first_failing_check_names_the_reason():
    # A loop of Latin words is untranslated first; a loop is named before its bad length or score.
    assert quality_problem("a", "cat cat cat cat cat", -9.0, CONFIG) == "untranslated"
    assert quality_problem("a", "في في في في في في", -9.0, CONFIG) == "repetition_loop"
    assert quality_problem("a", "قطة نائمة على أريكة", -9.0, CONFIG) == "length_ratio"


def test_thresholds_are_the_configs():
    loose = TranslationConfig(
        min_score=-5.0,
        min_length_ratio=0.0,
        max_length_ratio=100.0,
        max_latin_share=1.0,
        max_ngram_repeats=10,
    )
    assert quality_problem(EN, "قطة قطة قطة قطة", -4.0, loose) is None
    assert quality_problem(EN, EN, -4.0, loose) is None
    assert quality_problem(EN, AR, -5.1, loose) == "low_translation_score"


def test_boundaries_are_inclusive():
    # Exactly max_ngram_repeats copies pass; one more drops.
    assert quality_problem("x" * 12, "في في في", 0.0, CONFIG) is None
    assert quality_problem("x" * 12, "في في في في", 0.0, CONFIG) == "repetition_loop"
    # A ratio at either bound passes; the score at min_score passes.
    assert quality_problem("x" * 10, "ب" * 3, -1.5, CONFIG) is None
    assert quality_problem("x" * 10, "ب" * 30, -1.5, CONFIG) is None
    assert quality_problem("x" * 10, "ب" * 31, 0.0, CONFIG) == "length_ratio"
    # Half the letters Latin passes (max_latin_share 0.5); more drops.
    assert quality_problem("x" * 4, "ab جد", 0.0, CONFIG) is None
    assert quality_problem("x" * 4, "abc د", 0.0, CONFIG) == "untranslated"


def test_helpers():
    assert longest_repeat(list("abababc")) == 3
    assert longest_repeat(list("abcdabcd")) == 2
    assert longest_repeat(list("abcdeabcde")) == 1  # 5-grams are not checked
    assert longest_repeat([]) == 0
    assert latin_share("abc جدد") == 0.5
    assert latin_share("2024 ...") == 0.0
    assert latin_share("Ça été") == 1.0
    assert length_ratio("abcd", "ابجدهوزح") == 2.0
