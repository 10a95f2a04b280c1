"""stats.json's `timings`: the merge of the clocks' entries, and the clocks themselves."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that

from pipeline.records import Drop
from pipeline.timings import Clock, build_timings, comparable, drop_count, one


def test_a_stage_spans_its_earliest_first_to_its_latest_last_and_sums_its_records():
    entries = [
        ("clean", 100.0, 101.0, 30),  # one bundle
        ("clean", 100.5, 104.0, 10),  # another, on another worker
        ("clean", 103.0, 103.5, 0),  # its output, timed but not counted
        ("translate", 90.0, 99.0, 40),
    ]
    assert build_timings(entries, ["translate", "clean"]) == {
        "translate": {"seconds": 9.0, "records": 40, "records_per_s": 4.44},
        "clean": {"seconds": 4.0, "records": 40, "records_per_s": 10.0},
    }


def test_the_readers_are_timed_each_and_together():
    entries = [("read[wit]", 10.0, 12.0, 6), ("read[coco]", 11.0, 15.0, 2)]
    timings = build_timings(entries, ["read", "read[wit]", "read[coco]"])
    assert list(timings) == ["read", "read[wit]", "read[coco]"]
    assert timings["read"] == {"seconds": 5.0, "records": 8, "records_per_s": 1.6}
    assert timings["read[coco]"] == {"seconds": 4.0, "records": 2, "records_per_s": 0.5}


def test_stages_outside_the_order_follow_it_and_an_instant_stage_has_no_rate():
    entries = [("extra", 5.0, 5.0, 3), ("write", 1.0, 1.004, 2)]
    timings = build_timings(entries, ["write"])
    assert list(timings) == ["write", "extra"]
    assert timings["extra"] == {"seconds": 0.0, "records": 3, "records_per_s": 0.0}
    # Rounded after dividing: 2 records in 4 ms is 500/s, not 2 / 0.0.
    assert timings["write"] == {"seconds": 0.0, "records": 2, "records_per_s": 500.0}


def test_comparable_leaves_out_only_the_timings():
    stats = {"sources": {}, "kept": 0, "duplicates_removed": 0, "timings": {"read": {}}}
    assert comparable(stats) == {"sources": {}, "kept": 0, "duplicates_removed": 0}
    assert "timings" in stats  # not changed in place


def test_a_clock_counts_what_it_is_told_and_passes_nothing_on():
    drops = [Drop("wit", "other_language", count=10), Drop("wit", "empty_caption")]
    with TestPipeline() as p:
        records = p | "Records" >> beam.Create(["a", "b", "c"])
        dropped = p | "Drops" >> beam.Create(drops)
        entries = (
            records | "In" >> beam.ParDo(Clock("clean", one)),
            records | "Out" >> beam.ParDo(Clock("clean")),
            dropped | "Read" >> beam.ParDo(Clock("read[wit]", drop_count)),
        ) | beam.Flatten()

        def check(got):
            timings = build_timings(got)
            assert {s: t["records"] for s, t in timings.items()} == {
                "clean": 3,
                "read[wit]": 11,
                "read": 11,
            }
            assert all(first <= last for _, first, last, _ in got)
            assert all(t["seconds"] >= 0 for t in timings.values())

        assert_that(entries | beam.combiners.ToList(), lambda lists: check(lists[0]))
