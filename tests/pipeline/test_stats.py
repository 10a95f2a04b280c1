"""The accounting: stats.json from counted entries, and the balance check."""

from __future__ import annotations

import json

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline.records import GENUINE, Drop, Pair
from pipeline.scoring.summary import SUMMARIES, empty_summary, summarize
from pipeline.stats import ComputeStats, build_stats, check_stats
from pipeline.timings import comparable


def test_every_source_appears_in_manifest_order_even_when_empty():
    entries = [
        ("read", "wit#2", 3),
        ("kept", "wit#2", 1),
        ("dropped", ("wit#2", "not_arabic"), 1),
        ("dropped", ("wit#2", "duplicate"), 1),
        ("dropped", ("wit#2", "not_arabic"), 0),
    ]
    stats = build_stats(entries, ["wit", "wit#2"])
    assert list(stats["sources"]) == ["wit", "wit#2"]
    assert stats["sources"]["wit"] == {"read": 0, "kept": 0, "dropped": {}}
    assert stats["sources"]["wit#2"] == {
        "read": 3,
        "kept": 1,
        "dropped": {"duplicate": 1, "not_arabic": 1},
    }
    assert stats["kept"] == 1
    assert stats["duplicates_removed"] == 1
    assert check_stats(stats) == []


def test_unbalanced_books_are_reported_per_source():
    stats = build_stats([("read", "wit", 5), ("kept", "wit", 2), ("dropped", ("wit", "x"), 1)], [])
    assert check_stats(stats) == ["wit: read 5 != kept 2 + dropped 1 (+2 unaccounted)"]


def test_compute_stats_counts_from_the_data():
    pairs = [Pair(str(i), "wit", "wit", str(i), "نص", GENUINE) for i in range(4)]
    source_drops = [Drop("wit", "other_language", count=10), Drop("wit", "empty_caption")]
    later_drops = [Drop("wit", "not_arabic")]
    with TestPipeline() as p:
        emitted = p | "Pairs" >> beam.Create(pairs)
        sdrops = p | "SourceDrops" >> beam.Create(source_drops)
        ldrops = p | "LaterDrops" >> beam.Create(later_drops)
        kept = emitted | beam.Filter(lambda x: x.id != "3")
        dropped = (sdrops, ldrops) | beam.Flatten()
        stats = (emitted, sdrops, kept, dropped) | ComputeStats(["wit"])
        assert_that(
            stats,
            equal_to(
                [
                    {
                        "sources": {
                            "wit": {
                                "read": 15,
                                "kept": 3,
                                "dropped": {
                                    "empty_caption": 1,
                                    "not_arabic": 1,
                                    "other_language": 10,
                                },
                            }
                        },
                        "kept": 3,
                        "duplicates_removed": 0,
                    }
                ]
            ),
        )


def test_a_scored_run_has_every_summary_of_every_source_and_reruns_compare_without_baselines():
    pairs = [Pair(str(i), "wit", "wit", str(i), "نص", GENUINE) for i in range(2)]
    summary = summarize([0.2, 0.4])
    with TestPipeline() as p:
        emitted = p | "Pairs" >> beam.Create(pairs)
        nothing = p | "NoDrops" >> beam.Create([Drop("wit", "x")]) | beam.Filter(lambda d: False)
        scores = p | "Scores" >> beam.Create([("wit", "clip_score", summary)])
        stats = (emitted, nothing, emitted, nothing, scores) | ComputeStats(
            ["wit", "coco"], scored=True
        )
        assert_that(
            stats | beam.Map(lambda s: s["scores"]),
            equal_to(
                [
                    {
                        "wit": {
                            "clip_score": summary,
                            "clip_score_mismatched": empty_summary(),
                            "translation_similarity": empty_summary(),
                            "translation_similarity_mismatched": empty_summary(),
                        },
                        "coco": {name: empty_summary() for name in SUMMARIES},
                    }
                ]
            ),
        )
    # Which pairs met in a batch decides the baselines: reruns are compared without them.
    stats = build_stats([("read", "wit", 1), ("kept", "wit", 1)], ["wit"], scored=True)
    other = json.loads(json.dumps(stats))
    other["scores"]["wit"]["clip_score_mismatched"] = summary
    other["timings"] = {"write": {"seconds": 1.0}}
    assert (
        comparable(other)
        == comparable(stats)
        != comparable(
            {**stats, "scores": {"wit": {**stats["scores"]["wit"], "clip_score": summary}}}
        )
    )
    assert "scores" not in build_stats([("read", "wit", 1), ("kept", "wit", 1)], ["wit"])
