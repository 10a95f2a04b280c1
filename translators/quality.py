"""Quality checks on one machine translation: pure functions, each a drop reason.

`quality_problem` applies them in this order and returns the first that fails, the most
specific symptom first: `empty_translation`, `untranslated` (the output is mostly Latin
script: a copy of the English), `repetition_loop`, `length_ratio`, `low_translation_score`.
A looping or copied translation usually has a bad length ratio or score as well; its reason
names the cause. Whether the output is Arabic at all is the fastText filter's job
(`filters.langid`), run on translated captions like on genuine ones.
"""

from __future__ import annotations

import re

from pipeline.config import TranslationConfig

# The reasons `quality_problem` returns, for the translate stage's declaration.
QUALITY_REASONS = {
    "empty_translation": "the translation is empty",
    "untranslated": "the translation is mostly Latin letters (over translation.max_latin_share): "
    "a copy of the English",
    "repetition_loop": "an n-gram repeats back to back more than translation.max_ngram_repeats "
    "times",
    "length_ratio": "Arabic characters over English characters outside "
    "translation.min_length_ratio .. max_length_ratio",
    "low_translation_score": "the model's mean token log-probability is below "
    "translation.min_score",
}

_LATIN_LETTER = re.compile(r"[A-Za-z\u00c0-\u024f\u1e00-\u1eff]")


def is_empty(ar: str) -> bool:
    """`empty_translation`: nothing but whitespace."""
    return not ar.strip()


def latin_share(text: str) -> float:
    """Latin letters over all letters (any script); 0 when there are no letters."""
    letters = sum(1 for ch in text if ch.isalpha())
    return len(_LATIN_LETTER.findall(text)) / letters if letters else 0.0


def is_untranslated(ar: str, max_latin_share: float) -> bool:
    """`untranslated`: more than `max_latin_share` of the letters are Latin."""
    return latin_share(ar) > max_latin_share


def longest_repeat(tokens: list[str], max_n: int = 4) -> int:
    """The most times any n-gram (n = 1..`max_n`) occurs back to back in `tokens`."""
    best = 1 if tokens else 0
    for n in range(1, max_n + 1):
        # A run of r positions where tokens[i] == tokens[i + n] is r // n + 1 copies of an n-gram.
        run = 0
        for i in range(len(tokens) - n):
            run = run + 1 if tokens[i] == tokens[i + n] else 0
            best = max(best, run // n + 1)
    return best


def is_repetition_loop(ar: str, max_ngram_repeats: int) -> bool:
    """`repetition_loop`: a 1- to 4-gram of whitespace tokens occurs more than
    `max_ngram_repeats` times in a row ("في في في في" with the default 3)."""
    return longest_repeat(ar.split()) > max_ngram_repeats


def length_ratio(en: str, ar: str) -> float:
    """Characters of the Arabic over characters of the English."""
    return len(ar) / max(1, len(en))


def is_bad_length(en: str, ar: str, low: float, high: float) -> bool:
    """`length_ratio`: the ratio is below `low` or above `high`."""
    return not low <= length_ratio(en, ar) <= high


def is_low_score(score: float | None, min_score: float) -> bool:
    """`low_translation_score`: the model's mean log-probability per token is below
    `min_score`. A translation without a score (a memory entry) passes."""
    return score is not None and score < min_score


def quality_problem(en: str, ar: str, score: float | None, config: TranslationConfig) -> str | None:
    """The drop reason of the translation `ar` of `en`, or None when it passes every check."""
    if is_empty(ar):
        return "empty_translation"
    if is_untranslated(ar, config.max_latin_share):
        return "untranslated"
    if is_repetition_loop(ar, config.max_ngram_repeats):
        return "repetition_loop"
    if is_bad_length(en, ar, config.min_length_ratio, config.max_length_ratio):
        return "length_ratio"
    if is_low_score(score, config.min_score):
        return "low_translation_score"
    return None
