"""FilterScores: the filters on the scoring stage's scores (`pipeline.scoring`), each off unless
the manifest sets it, run right after the scoring stage.

- `filters.min_clip_score`, `filters.min_translation_similarity`: a pair whose score is below the
  threshold is dropped as `low_clip_score` or `low_translation_similarity`.
- `filters.keep_top: {clip_score: 0.7}`: per source, of the n pairs that have the score, the
  ceil(0.7 × n) highest-scoring are kept (the fraction read as written: 0.1 of 10 is 1), and
  with them every pair tied with the lowest of those (a tie is kept whole, whatever the order
  the pairs came in); the others are dropped as `below_top_clip_score` (likewise
  `below_top_translation_similarity`).

A pair whose score is null (no image; a genuine caption) is never dropped by a filter on that
score, and does not count in n. The filters are judged independently on the pairs the scoring
stage kept (a keep_top fraction is of all of them, whatever the absolute thresholds drop); a pair
failing several is dropped under the first of: `low_clip_score`, `low_translation_similarity`,
`below_top_clip_score`, `below_top_translation_similarity`. A NaN score fails every filter on it.

The keep_top thresholds are exact, and held in memory of fixed size whatever the data: scores are
float32, so each maps to a 32-bit integer of the same order (`order_key`), and the k-th highest
is found in two counting passes (a radix selection, `TopThresholds`): the first counts each
source's keys by their top 16 bits and finds the bucket that holds the k-th highest and its rank
there, the second counts the low 16 bits of the keys in that bucket. Each pass holds at most
65,536 counts per source and score; the threshold reaches the filter as a side input.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping
from fractions import Fraction

import apache_beam as beam

from pipeline.config import FiltersConfig
from pipeline.records import Pair
from pipeline.steps import Reasons, Reject, Step

STAGE = "score_filter"
REASONS = Reasons(
    STAGE,
    {
        "low_clip_score": "clip_score is below filters.min_clip_score (detail: the score and "
        "the threshold)",
        "low_translation_similarity": "translation_similarity is below "
        "filters.min_translation_similarity (detail: the score and the threshold)",
        "below_top_clip_score": "clip_score is not among the top filters.keep_top.clip_score "
        "of its source's pairs (detail: the score and the source's threshold)",
        "below_top_translation_similarity": "translation_similarity is not among the top "
        "filters.keep_top.translation_similarity of its source's pairs (detail: the score and "
        "the source's threshold)",
    },
)

_HALF = 16  # bits of a key counted by each pass
_LOW_MASK = (1 << _HALF) - 1
_SIGN = 0x80000000


def order_key(score: float) -> int:
    """`score` as float32, mapped to an unsigned 32-bit integer of the same order: a larger
    score has a larger key, -0.0 and 0.0 are one, NaN is below every number."""
    if math.isnan(score):
        return 0
    bits = struct.unpack("<I", struct.pack("<f", score + 0.0))[0]  # + 0.0: -0.0 is 0.0
    return bits ^ 0xFFFFFFFF if bits & _SIGN else bits | _SIGN


def from_key(key: int) -> float:
    """The float32 score of an `order_key` (as a Python float)."""
    bits = key ^ _SIGN if key & _SIGN else key ^ 0xFFFFFFFF
    return struct.unpack("<f", struct.pack("<I", bits))[0]


def keep_count(fraction: float, n: int) -> int:
    """How many of `n` scored pairs `keep_top: fraction` keeps: ceil(fraction × n), the
    fraction read as written (`0.7`, not its binary neighbour, so 0.1 of 10 is 1)."""
    return math.ceil(Fraction(repr(fraction)) * n)


def locate(counts: Mapping[int, int], rank: int) -> tuple[int, int]:
    """`(value, rank within it)` of the `rank`-th highest (1 = the highest) of the values
    counted in `counts` (value → how many)."""
    for value in sorted(counts, reverse=True):
        if counts[value] >= rank:
            return value, rank
        rank -= counts[value]
    raise ValueError(f"rank {rank} is beyond the {sum(counts.values())} values counted")


class CountValues(beam.CombineFn):
    """Integers → `{value: how many}`: at most 2**16 entries for one pass's half-keys."""

    def create_accumulator(self) -> dict[int, int]:
        return {}

    def add_input(self, counts: dict[int, int], value: int) -> dict[int, int]:
        counts[value] = counts.get(value, 0) + 1
        return counts

    def merge_accumulators(self, accumulators: Iterable[dict[int, int]]) -> dict[int, int]:
        accumulators = iter(accumulators)
        merged = next(accumulators)
        for counts in accumulators:
            for value, n in counts.items():
                merged[value] = merged.get(value, 0) + n
        return merged

    def extract_output(self, counts: dict[int, int]) -> dict[int, int]:
        return counts


def _score_keys(pair: Pair, scores: tuple[str, ...]) -> Iterable[tuple[tuple[str, str], int]]:
    for score in scores:
        value = getattr(pair, score)
        if value is not None:
            yield (pair.source_name, score), order_key(value)


class TopThresholds(beam.PTransform):
    """Pairs → `((source, score), threshold key)` for each score of `keep_top` (score →
    fraction) and each source with pairs that have it: the `order_key` of the lowest score that
    `keep_top` keeps (module docstring)."""

    def __init__(self, keep_top: Mapping[str, float]):
        super().__init__()
        self._keep_top = dict(keep_top)

    def expand(self, pairs):
        keep_top = self._keep_top
        keys = pairs | "ScoreKeys" >> beam.FlatMap(_score_keys, tuple(keep_top))

        def target(key: tuple[str, str], counts: dict[int, int]):
            # The bucket (top half of the key) holding the k-th highest, and its rank there.
            rank = keep_count(keep_top[key[1]], sum(counts.values()))
            return key, locate(counts, rank)

        buckets = (
            keys
            | "HighHalves" >> beam.MapTuple(lambda key, k: (key, k >> _HALF))
            | "CountHigh" >> beam.CombinePerKey(CountValues())
            | "Bucket" >> beam.MapTuple(target)
        )

        def in_bucket(element, buckets):
            key, k = element
            if k >> _HALF == buckets[key][0]:
                yield key, k & _LOW_MASK

        def threshold(element, buckets):
            key, counts = element
            bucket, rank = buckets[key]
            return key, (bucket << _HALF) | locate(counts, rank)[0]

        return (
            keys
            | "LowHalves" >> beam.FlatMap(in_bucket, beam.pvalue.AsDict(buckets))
            | "CountLow" >> beam.CombinePerKey(CountValues())
            | "Threshold" >> beam.Map(threshold, beam.pvalue.AsDict(buckets))
        )


def _below(score: float | None, threshold: float | None) -> bool:
    return score is not None and threshold is not None and (math.isnan(score) or score < threshold)


def _below_top(score: float | None, key: int | None) -> bool:
    return score is not None and key is not None and order_key(score) < key


class FilterScores(Step):
    """Pairs → `(kept, dropped)` by the score filters of `filters` (module docstring)."""

    REASONS = REASONS

    def __init__(self, filters: FiltersConfig):
        super().__init__()
        self._filters = filters
        self._keep_top = dict(filters.keep_top)

    def expand(self, pairs):
        if not self._keep_top:
            return self.judged(pairs | "NoTops" >> beam.Map(lambda p: (p, {})))
        thresholds = pairs | "TopThresholds" >> TopThresholds(self._keep_top)
        scores = tuple(self._keep_top)

        def with_thresholds(pair: Pair, thresholds):
            mine = ((score, thresholds.get((pair.source_name, score))) for score in scores)
            return pair, {score: key for score, key in mine if key is not None}

        return self.judged(
            pairs | "WithThresholds" >> beam.Map(with_thresholds, beam.pvalue.AsDict(thresholds))
        )

    def pair_of(self, element: tuple[Pair, dict[str, int]]) -> Pair:
        return element[0]

    def judge(self, element: tuple[Pair, dict[str, int]]) -> Pair | Reject:
        pair, tops = element
        f = self._filters
        clip, translation = pair.clip_score, pair.translation_similarity
        if _below(clip, f.min_clip_score):
            return Reject(
                "low_clip_score", f"clip_score {clip:.6g} < min_clip_score {f.min_clip_score:g}"
            )
        if _below(translation, f.min_translation_similarity):
            return Reject(
                "low_translation_similarity",
                f"translation_similarity {translation:.6g} < min_translation_similarity "
                f"{f.min_translation_similarity:g}",
            )
        if _below_top(clip, tops.get("clip_score")):
            return Reject("below_top_clip_score", self._top_detail(pair, "clip_score", tops))
        if _below_top(translation, tops.get("translation_similarity")):
            detail = self._top_detail(pair, "translation_similarity", tops)
            return Reject("below_top_translation_similarity", detail)
        return pair

    def _top_detail(self, pair: Pair, score: str, tops: dict[str, int]) -> str:
        return (
            f"{score} {getattr(pair, score):.6g} < {from_key(tops[score]):.6g}, the lowest of "
            f"the top {self._keep_top[score]:g} of {pair.source_name}"
        )
