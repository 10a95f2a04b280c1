"""The Step base: a stage's declared reasons, its catch-all and the routing of rejects, run
through Beam pipelines."""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline.records import GENUINE, Drop, Pair
from pipeline.steps import Reasons, Reject, Step, UndeclaredReason

REASONS = Reasons(
    "shout",
    {
        "too_quiet": "the caption has no exclamation mark",
        "http_<status>": "a family: any status",
    },
)


def pair(caption: str, line: int) -> Pair:
    return Pair(
        id=f"id{line}",
        source="wit",
        source_name="wit",
        source_key=str(line),
        caption_ar=caption,
        caption_origin=GENUINE,
        input_file="in.tsv",
        input_line=line,
    )


class Shout(Step):
    """Keeps captions with `!` (upper-cased), rejects others; misbehaves on purpose."""

    REASONS = REASONS

    def judge(self, p: Pair) -> Pair | Reject:
        if p.caption_ar == "boom":
            raise RuntimeError("the stage broke")
        if p.caption_ar == "bad reason":
            return Reject("not_declared", "some detail")
        if p.caption_ar == "teapot":
            return Reject("http_418")
        if "!" not in p.caption_ar:
            return Reject("too_quiet", p.caption_ar)
        return p._replace(caption_ar=p.caption_ar.upper())


def test_the_catch_all_is_declared_and_families_match_one_word():
    assert REASONS.catch_all == "shout_error"
    assert REASONS.declared("shout_error") == "shout_error"
    assert REASONS.declared("http_404") == "http_<status>"
    assert REASONS.declared("http_") is None
    assert REASONS.declared("http_404 x") is None
    assert REASONS.declared("too_loud") is None
    with pytest.raises(UndeclaredReason, match="too_loud"):
        REASONS.check("too_loud")
    assert Shout().STAGE == "shout"
    named = Reasons("wit", {}, catch_all="wit_row_error")
    assert list(named) == ["wit_row_error"]


def test_a_step_keeps_rejects_and_catches_with_declared_reasons_only():
    inputs = [pair("hi!", 1), pair("hi", 2), pair("boom", 3), pair("bad reason", 4)]
    inputs.append(pair("teapot", 5))
    p = TestPipeline()
    kept, dropped = p | beam.Create(inputs) | "Shout" >> Shout()
    assert_that(kept | beam.Map(lambda x: x.caption_ar), equal_to(["HI!"]), label="kept")
    assert_that(
        dropped | beam.Map(lambda d: (d.reason, d.input_line, d.detail)),
        equal_to(
            [
                ("too_quiet", 2, "hi"),
                ("shout_error", 3, "RuntimeError: the stage broke"),
                (
                    "shout_error",
                    4,
                    "shout: drop reason 'not_declared' is not declared: some detail",
                ),
                ("http_418", 5, None),
            ]
        ),
        label="dropped",
    )
    result = p.run()
    result.wait_until_finish()
    counters = {
        c.key.metric.name: c.committed
        for c in result.metrics().query(MetricsFilter().with_namespace("shout"))["counters"]
    }
    assert counters == {
        "kept": 1,
        "dropped_too_quiet": 1,
        "dropped_shout_error": 2,
        "dropped_http_418": 1,
    }


def test_a_readers_undeclared_drop_becomes_its_catch_all():
    kind = Reasons("wit", {"other_language": "..."}, catch_all="wit_row_error")
    ok = Drop("wit", "other_language", "a.tsv", None, "en", 3)
    assert kind.checked(ok) == ok._replace(stage="wit")  # the reader's stage: its kind
    odd = kind.checked(Drop("wit", "odd", "a.tsv", 7, "x"))
    assert odd == Drop("wit", "wit_row_error", "a.tsv", 7, "undeclared odd: x", stage="wit")
