"""The summaries of `stats.json`'s `scores`: fixed bins over [-1, 1], and the same summary
whatever the order or the split of the scores."""

from __future__ import annotations

import random

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline.scoring.summary import BINS, SummarizeScores, bin_of, empty_summary, summarize


def test_the_bins_are_a_twentieth_wide_and_hold_both_ends():
    assert BINS == 40
    assert [bin_of(x) for x in (-1.0, -0.95, -0.9501, 0.0, 0.049, 0.05, 1.0)] == [
        0,
        1,
        0,
        20,
        20,
        21,
        39,
    ]
    # Just outside the range (float rounding of a cosine): the nearest bin.
    assert bin_of(1.0000001) == 39 and bin_of(-1.0000001) == 0


def test_a_summary_counts_every_score_and_skips_nan():
    summary = summarize([0.25, -0.5, 0.25, float("nan"), 0.3])
    assert summary["count"] == 4
    assert summary["mean"] == 0.075 and summary["min"] == -0.5 and summary["max"] == 0.3
    counts = summary["histogram"]["counts"]
    assert sum(counts) == 4 and counts[25] == 2 and counts[10] == 1 and counts[26] == 1
    assert empty_summary() == {
        "count": 0,
        "mean": None,
        "min": None,
        "max": None,
        "histogram": {"low": -1.0, "high": 1.0, "counts": [0] * BINS},
    }


def test_the_summary_is_the_same_whatever_the_order_and_split_of_the_scores():
    rng = random.Random(7)
    scores = [rng.uniform(-1, 1) for _ in range(500)]
    want = summarize(scores)
    rng.shuffle(scores)
    assert summarize(scores) == want
    p = TestPipeline()
    # Many bundles merged in whatever order the runner takes them.
    got = (
        p
        | beam.Create([("s", x) for x in scores], reshuffle=True)
        | beam.CombinePerKey(SummarizeScores())
    )
    assert_that(got, equal_to([("s", want)]))
    p.run().wait_until_finish()
