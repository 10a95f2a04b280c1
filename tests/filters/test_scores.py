"""FilterScores on pairs whose scores are set by hand: absolute thresholds, the exact keep_top
per source (ties, nulls, NaN), and the order-preserving keys its selection counts."""

from __future__ import annotations

import random
import struct

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from filters.scores import FilterScores, TopThresholds, from_key, keep_count, order_key
from pipeline.config import FiltersConfig
from pipeline.records import GENUINE, TRANSLATED, Pair


def float32(x: float) -> float:
    return struct.unpack("<f", struct.pack("<f", x))[0]


def pair(n: int, source: str, clip: float | None, translation: float | None = None) -> Pair:
    return Pair(
        id=f"id{n:03d}",
        source="pairs",
        source_name=source,
        source_key=str(n),
        caption_ar="نص",
        caption_origin=GENUINE if translation is None else TRANSLATED,
        clip_score=None if clip is None else float32(clip),
        translation_similarity=None if translation is None else float32(translation),
    )


def test_order_keys_sort_as_the_float32_scores_do():
    rng = random.Random(3)
    scores = [float32(rng.uniform(-1, 1)) for _ in range(2000)]
    scores += [-1.0, 1.0, 0.0, -0.0, float32(1e-30), float32(-1e-30), float32(0.1)]
    assert sorted(scores, key=order_key) == sorted(scores)
    assert order_key(-0.0) == order_key(0.0)
    assert order_key(float("nan")) < order_key(-1.0)
    assert all(from_key(order_key(s)) == s for s in scores)


@pytest.mark.parametrize(
    ("fraction", "n", "kept"),
    [(0.1, 10, 1), (0.7, 10, 7), (0.7, 3, 3), (0.5, 7, 4), (1.0, 5, 5), (0.001, 5, 1)],
)
def test_keep_top_keeps_the_ceiling_of_the_fraction_as_written(fraction, n, kept):
    assert keep_count(fraction, n) == kept


def run(pairs: list[Pair], filters: FiltersConfig, kept: list[str], dropped: list[tuple]):
    p = TestPipeline()
    k, d = p | beam.Create(pairs) | FilterScores(filters)
    assert_that(k | "KeptIds" >> beam.Map(lambda x: x.id), equal_to(kept), label="Kept")
    drops = d | "DropKeys" >> beam.Map(lambda x: (x.pair_id, x.reason, x.source_name, x.stage))
    assert_that(drops, equal_to(dropped), label="Dropped")
    p.run().wait_until_finish()


def test_absolute_thresholds_drop_below_them_and_never_a_null_score():
    pairs = [
        pair(1, "a", 0.30, 0.90),
        pair(2, "a", 0.10, 0.95),  # low clip (and fine translation)
        pair(3, "a", 0.30, 0.50),  # low translation
        pair(4, "a", 0.05, 0.10),  # both low: counted under the first
        pair(5, "a", None, None),  # nothing to judge
        pair(6, "a", 0.25),  # exactly at the threshold: kept
        pair(7, "a", float("nan")),  # a score the model could not compute
    ]
    filters = FiltersConfig(min_clip_score=float32(0.25), min_translation_similarity=0.8)
    run(
        pairs,
        filters,
        ["id001", "id005", "id006"],
        [
            ("id002", "low_clip_score", "a", "score_filter"),
            ("id003", "low_translation_similarity", "a", "score_filter"),
            ("id004", "low_clip_score", "a", "score_filter"),
            ("id007", "low_clip_score", "a", "score_filter"),
        ],
    )


def test_keep_top_keeps_the_top_of_each_source_with_ties_whole():
    # Source a: 10 scored pairs, the top 0.3 are 3; the third highest, 0.7, is tied with
    # another: both are kept. Source b: 3 pairs, ceil(0.9) = 1. Nulls are never dropped.
    a = [0.9, 0.8, 0.7, 0.7, 0.6, 0.5, -0.1, -0.2, -0.3, -0.4]
    pairs = [pair(i, "a", s) for i, s in enumerate(a)] + [pair(50, "a", None)]
    pairs += [pair(60, "b", 0.1), pair(61, "b", 0.3), pair(62, "b", 0.2)]
    kept = ["id000", "id001", "id002", "id003", "id050", "id061"]
    dropped = [(f"id{i:03d}", "below_top_clip_score", "a", "score_filter") for i in range(4, 10)]
    dropped += [(f"id0{i}", "below_top_clip_score", "b", "score_filter") for i in (60, 62)]
    run(pairs, FiltersConfig(keep_top=(("clip_score", 0.3),)), kept, dropped)


def test_the_thresholds_are_exact_when_the_scores_share_their_high_bits():
    # Scores a few float32 steps apart: one bucket of the first pass holds them all.
    base = struct.unpack("<I", struct.pack("<f", 0.25))[0]
    values = [struct.unpack("<f", struct.pack("<I", base + step))[0] for step in range(100)]
    rng = random.Random(5)
    rng.shuffle(values)
    pairs = [pair(i, "a", v) for i, v in enumerate(values)]
    p = TestPipeline()
    thresholds = p | beam.Create(pairs) | TopThresholds({"clip_score": 0.37})
    want = sorted(values, reverse=True)[36]  # the 37th highest: ceil(0.37 × 100)
    assert_that(thresholds, equal_to([(("a", "clip_score"), order_key(want))]))
    p.run().wait_until_finish()


def test_translation_keep_top_and_a_drop_detail_naming_the_threshold():
    pairs = [pair(i, "a", 0.5, t) for i, t in enumerate([0.9, 0.8, 0.4, 0.3])]
    pairs.append(pair(9, "a", 0.5))  # genuine: no translation_similarity
    filters = FiltersConfig(keep_top=(("translation_similarity", 0.5),))
    step = FilterScores(filters)
    assert step.judge((pairs[2], {"translation_similarity": order_key(float32(0.8))})) == (
        "below_top_translation_similarity",
        "translation_similarity 0.4 < 0.8, the lowest of the top 0.5 of a",
    )
    run(
        pairs,
        filters,
        ["id000", "id001", "id009"],
        [
            ("id002", "below_top_translation_similarity", "a", "score_filter"),
            ("id003", "below_top_translation_similarity", "a", "score_filter"),
        ],
    )
