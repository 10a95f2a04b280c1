"""The scores in `stats.json`'s `scores`: for each source, a fixed-size summary of each score of
the pairs the scoring stage kept, and of the same score on deliberately mismatched pairs
(`pipeline.scoring.stage`), the line a user sets a threshold against.

    "scores": {"wit": {"clip_score": SUMMARY, "clip_score_mismatched": SUMMARY,
                       "translation_similarity": SUMMARY,
                       "translation_similarity_mismatched": SUMMARY}}

    SUMMARY = {"count": 120, "mean": 0.081234, "min": -0.02, "max": 0.2113,
               "histogram": {"low": -1.0, "high": 1.0, "counts": [40 counts]}}

A histogram has `BINS` bins of equal width over [-1, 1]: bin i holds the scores in
[-1 + i/20, -1 + (i+1)/20), the last one 1 as well (a score just outside the range, from float
rounding, counts in the nearest bin). `mean`, `min` and `max` are rounded to 6 decimals and
null when `count` is 0. The summary is the same whatever the order of its scores: they are
summed as whole millionths (integers), so the mean of one set of scores does not depend on how
a runner split or merged them. Memory is one summary per (source, score), whatever the data.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import apache_beam as beam

BINS = 40
LOW, HIGH = -1.0, 1.0
_SCALE = 1_000_000  # scores are summed as whole millionths
MISMATCHED = "_mismatched"
SUMMARIES = (
    "clip_score",
    "clip_score" + MISMATCHED,
    "translation_similarity",
    "translation_similarity" + MISMATCHED,
)


def bin_of(score: float) -> int:
    """The histogram bin of `score` (see the module docstring)."""
    at = math.floor((score - LOW) / (HIGH - LOW) * BINS)
    return min(BINS - 1, max(0, at))


class _Accumulator:
    __slots__ = ("count", "total", "low", "high", "counts")

    def __init__(self):
        self.count = 0
        self.total = 0  # millionths
        self.low = self.high = None
        self.counts = [0] * BINS

    def add(self, score: float) -> None:
        self.count += 1
        self.total += round(score * _SCALE)
        self.low = score if self.low is None else min(self.low, score)
        self.high = score if self.high is None else max(self.high, score)
        self.counts[bin_of(score)] += 1

    def merge(self, other: _Accumulator) -> None:
        self.count += other.count
        self.total += other.total
        for value in (other.low, other.high):
            if value is not None:
                self.low = value if self.low is None else min(self.low, value)
                self.high = value if self.high is None else max(self.high, value)
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]

    def summary(self) -> dict:
        def rounded(value: float | None) -> float | None:
            return None if value is None else round(value, 6)

        return {
            "count": self.count,
            "mean": round(self.total / self.count / _SCALE, 6) if self.count else None,
            "min": rounded(self.low),
            "max": rounded(self.high),
            "histogram": {"low": LOW, "high": HIGH, "counts": list(self.counts)},
        }


def summarize(scores: Iterable[float]) -> dict:
    """The summary of `scores` (NaN skipped: a score the model could not compute)."""
    accumulator = _Accumulator()
    for score in scores:
        if not math.isnan(score):
            accumulator.add(score)
    return accumulator.summary()


def empty_summary() -> dict:
    """The summary of no scores: a source the stage scored nothing of."""
    return summarize(())


class SummarizeScores(beam.CombineFn):
    """Scores (floats) → their summary, in memory of fixed size."""

    def create_accumulator(self) -> _Accumulator:
        return _Accumulator()

    def add_input(self, accumulator: _Accumulator, score: float) -> _Accumulator:
        if not math.isnan(score):
            accumulator.add(score)
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[_Accumulator]) -> _Accumulator:
        accumulators = iter(accumulators)
        merged = next(accumulators)
        for accumulator in accumulators:
            merged.merge(accumulator)
        return merged

    def extract_output(self, accumulator: _Accumulator) -> dict:
        return accumulator.summary()
