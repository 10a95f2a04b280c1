"""The caption quality predicates, alone and as a Beam stage."""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from filters.text import CleanCaptions, caption_problem
from pipeline.records import GENUINE, Pair

BOUNDS = dict(min_chars=3, max_chars=40, min_words=2, max_words=6)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty_caption"),
        ("IMG_9880.JPG", "filename_caption"),
        ("قط", "too_short"),  # 2 characters
        ("قطة", "too_short"),  # 1 word, min_words 2
        ("قطة " * 7, "too_long"),  # 7 words
        ("ا" * 41 + " ب", "too_long"),  # 43 characters
        ("The Nile at dusk", "no_arabic_letters"),
        ("قطة سوداء", None),
        ("برج خليفة في دبي 2010", None),
    ],
)
def test_caption_problem(text, reason):
    assert caption_problem(text.strip(), **BOUNDS) == reason


def test_clean_captions_stage():
    def pair(n, caption):
        return Pair(str(n), "wit", "wit", str(n), caption, GENUINE)

    inputs = [pair(1, " قطة\u200f  سوداء "), pair(2, "قط"), pair(3, "IMG_1.jpg"), pair(4, "")]
    with TestPipeline() as p:
        kept, dropped = p | beam.Create(inputs) | CleanCaptions(**BOUNDS)
        assert_that(
            kept | "KeptCaptions" >> beam.Map(lambda x: (x.id, x.caption_ar)),
            equal_to([("1", "قطة سوداء")]),
            label="kept",
        )
        assert_that(
            dropped | "Reasons" >> beam.Map(lambda d: (d.source_name, d.reason)),
            equal_to([("wit", "too_short"), ("wit", "filename_caption"), ("wit", "empty_caption")]),
            label="dropped",
        )


def test_an_unexpected_failure_on_one_record_is_counted_not_fatal(monkeypatch):
    import filters.text

    real = filters.text.caption_problem

    def fragile(text, **bounds):
        if text == "قطة مسمومة":
            raise RuntimeError("boom")
        return real(text, **bounds)

    monkeypatch.setattr(filters.text, "caption_problem", fragile)
    inputs = [
        Pair("1", "wit", "wit", "1", "قطة مسمومة", GENUINE),
        Pair("2", "wit", "wit", "2", "قطة سوداء", GENUINE),
    ]
    with TestPipeline() as p:
        kept, dropped = p | beam.Create(inputs) | CleanCaptions(**BOUNDS)
        assert_that(kept | "Ids" >> beam.Map(lambda x: x.id), equal_to(["2"]), label="kept")
        assert_that(
            dropped | "Reasons" >> beam.Map(lambda d: (d.reason, d.detail)),
            equal_to([("clean_error", "RuntimeError: boom")]),
            label="dropped",
        )
