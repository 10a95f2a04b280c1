"""The accounting: stats.json from counted entries, and the balance check."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline.records import GENUINE, Drop, Pair
from pipeline.stats import ComputeStats, build_stats, check_stats


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
