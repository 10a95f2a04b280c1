"""ScorePairs: every pair's image–caption agreement (`clip_score`) and, for translated pairs, the
agreement of the Arabic with its English original (`translation_similarity`), by a multilingual
CLIP on ONNX Runtime (`pipeline.scoring.model`) through Beam's `RunInference`.

The stage runs after dedupe, on the pairs the output will hold: duplicates and placeholder
images are never scored (on web data, a few percent of the pairs to tens of percent for
placeholder-heavy hosts), and which duplicate survives does not depend on whether scoring is
on, so turning it on adds two columns and changes no row.

A pair carries a reference to its image (`image_ref`), never the bytes: the model handler reads
a batch's images back from the run's image store (`pipeline.store`) when it scores the batch,
so only one batch of images is in memory at a time. Within a batch each image and each distinct
caption is embedded once; both cosines are dot products of unit-length embeddings.

- `clip_score` = cos(image, caption_ar) on every pair with a stored image; null without one
  (`images.fetch: false`).
- `translation_similarity` = cos(caption_ar, caption_en) on translated pairs with their English;
  null on genuine ones. It needs no image.

The mismatched baseline. An absolute threshold belongs to the model that made it (LAION's 0.28
was OpenAI ViT-B/32's), so the stage also scores deliberately mismatched pairs of the same run,
from the embeddings a batch already has (no extra model call): each pair's image against the
Arabic caption of its partner, and (translated pairs) its Arabic against its partner's English.
A pair's partner is the next pair of its source in the batch by id, cyclically, with another
image and other captions (`mismatched_partners`). These scores are no columns: with
`with_scores`, the stage summarises both kinds per source for `stats.json`'s `scores`
(`pipeline.scoring.summary`). Which pairs meet in a batch is the runner's choice, so the
mismatched summaries may differ a little from run to run (`pipeline.timings.comparable` leaves
them out); the scores of the pairs themselves do not.

An image the model cannot decode is dropped as `unreadable_image` (the images stage stored only
images it decoded, so this is a damaged store or cache, and the row's image would be unreadable
to the dataset's users too); a batch the model fails on drops its pairs as `scoring_error`.
Captions longer than the model's context are scored on their first tokens and counted (Beam
counter `scoring:captions_truncated`, as the translation stage counts its own).

Beam counters (namespace `scoring`, live progress only): `pairs_scored`, `images_scored`,
`captions_truncated`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, RunInference

from pipeline import progress
from pipeline.config import ScoringConfig
from pipeline.images.codec import set_pillow_bomb_guard
from pipeline.records import TRANSLATED, Drop, Pair
from pipeline.scoring.model import (
    ClipModel,
    Preprocessor,
    embed_images,
    embed_texts,
    local_folder,
)
from pipeline.scoring.summary import SUMMARIES, SummarizeScores
from pipeline.steps import Reasons, Reject, Step
from pipeline.store import ImageStore

STAGE = "scoring"
REASONS = Reasons(
    STAGE,
    {
        "unreadable_image": "the stored image could not be read back or decoded for scoring "
        "(detail: the error)",
        "scoring_error": "the model failed on the pair's batch (detail: the error)",
    },
    catch_all="scoring_error",
)


class ScoreInput(NamedTuple):
    """What the model needs of a pair: its image's reference and its captions (`caption_en`
    only for a translated pair); its source, id and image's identity (`sha256`, else the
    reference or URL) choose its mismatched partners (`mismatched_partners`)."""

    image_ref: str | None
    caption_ar: str
    caption_en: str | None
    source_name: str = ""
    pair_id: str = ""
    image_key: str | None = None


class Scores(NamedTuple):
    """The model's verdict on one pair."""

    clip_score: float | None
    translation_similarity: float | None
    # Why the pair's image could not be scored (read back or decoded); None when it was.
    unreadable: str | None = None
    truncated: int = 0  # of the pair's captions, those cut to the model's context
    # The baseline (module docstring): cos(this image, the partner's caption_ar) and
    # cos(this caption_ar, the partner's caption_en); None without a partner.
    clip_mismatched: float | None = None
    translation_mismatched: float | None = None


beam.coders.registry.register_coder(ScoreInput, beam.coders.RowCoder)
beam.coders.registry.register_coder(Scores, beam.coders.RowCoder)


def score_input(pair: Pair) -> ScoreInput:
    english = pair.caption_en if pair.caption_origin == TRANSLATED and pair.caption_en else None
    image_key = pair.sha256 or pair.image_ref or pair.image_url
    return ScoreInput(
        pair.image_ref, pair.caption_ar, english, pair.source_name, pair.id, image_key
    )


def mismatched_partners(
    batch: Sequence[ScoreInput], eligible: Sequence[bool], other: str
) -> list[int | None]:
    """For each pair of `batch`, the index of its mismatched partner, or None.

    The members are the `eligible` pairs whose `other` field is set (`image_key` for the clip
    baseline, `caption_en` for the translation one). A member's partner is the next member of
    its source in the order of their ids (hashes: neighbours are unrelated pairs; the order in
    which the batch was put together does not matter), cyclically, that shares neither its
    image (`image_key`: the sha256, else the image's reference or URL), nor its `caption_ar`,
    nor its `other`: COCO's five captions of one picture are never each other's mismatch. A
    pair that is no member has no partner, nor has a member without such another (alone of
    its source in the batch)."""
    by_source: dict[str, list[int]] = {}
    order = sorted(range(len(batch)), key=lambda i: (batch[i].pair_id, i))
    for i in order:
        x = batch[i]
        if eligible[i] and getattr(x, other):
            by_source.setdefault(x.source_name, []).append(i)
    partners: list[int | None] = [None] * len(batch)
    for members in by_source.values():
        for at, i in enumerate(members):
            x = batch[i]
            for step in range(1, len(members)):
                j = members[(at + step) % len(members)]
                y = batch[j]
                same_image = x.image_key is not None and y.image_key == x.image_key
                same_text = y.caption_ar == x.caption_ar or getattr(y, other) == getattr(x, other)
                if not same_image and not same_text:
                    partners[i] = j
                    break
    return partners


class ClipHandler(ModelHandler[ScoreInput, Scores, ClipModel]):
    """A `ModelHandler` from a `ScoreInput` to its `Scores`, reading images from `store`.

    The sessions load once per worker process (`load_model`); the tokenizer and the image
    preprocessing run in the worker's own process (`Preprocessor`), so the model only ever sees
    arrays: with `share_across_processes` Beam loads one model per machine and every process
    calls it through a proxy (one GPU's memory, one copy), at the price of sending each batch's
    pixels between processes.
    """

    def __init__(
        self,
        config: ScoringConfig,
        store: ImageStore | None,
        *,
        share_across_processes: bool = False,
        max_pixels: int | None = None,
    ):
        super().__init__()
        self._config = config
        self._store = store
        self._share = share_across_processes
        self._max_pixels = max_pixels
        self._preprocessor: Preprocessor | None = None

    def load_model(self) -> ClipModel:
        return ClipModel(local_folder(self._config.model), self._config.device)

    def preprocessor(self) -> Preprocessor:
        if self._preprocessor is None:
            if self._max_pixels:
                # The images stage stored images of up to `images.max_pixels`; Pillow's own
                # guard in this process must not refuse them.
                set_pillow_bomb_guard(self._max_pixels)
            self._preprocessor = Preprocessor(local_folder(self._config.model))
        return self._preprocessor

    def run_inference(
        self,
        batch: Sequence[ScoreInput],
        model: ClipModel,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[Scores]:
        return score_batch(self.preprocessor(), model, self._store, batch)

    def batch_elements_kwargs(self) -> dict[str, int]:
        # Full batches (but a bundle's last): `batch_size` is what the model is called with, and
        # a batch of one pair has no mismatched partner for the baseline.
        size = self._config.batch_size
        return {"min_batch_size": size, "max_batch_size": size}

    def share_model_across_processes(self) -> bool:
        return self._share

    def get_metrics_namespace(self) -> str:
        return STAGE

    def __getstate__(self) -> dict[str, Any]:
        # The tokenizer is loaded where the handler runs, never sent with it.
        return {**self.__dict__, "_preprocessor": None}


def read_images(store: ImageStore | None, refs: Iterable[str]) -> dict[str, bytes | str]:
    """Each reference's bytes, or why it could not be read (a message), pack by pack."""
    refs = sorted(set(refs))
    if not refs:
        return {}
    if store is None:
        return dict.fromkeys(refs, "no image store to read the image from")
    found: dict[str, bytes | str] = {}
    with store.reader() as reader:
        for ref in refs:
            try:
                found[ref] = reader.read(ref)
            except (OSError, ValueError) as err:
                found[ref] = f"{type(err).__name__}: {err}"[:200]
    return found


def score_batch(
    preprocessor: Preprocessor,
    model: ClipModel,
    store: ImageStore | None,
    batch: Sequence[ScoreInput],
) -> list[Scores]:
    """The `Scores` of a batch: its images (each distinct one once) in one call of the image
    tower, its distinct captions in one call of the text tower."""
    images = read_images(store, (x.image_ref for x in batch if x.image_ref))
    problems = {ref: data for ref, data in images.items() if isinstance(data, str)}
    readable = [ref for ref, data in images.items() if isinstance(data, bytes)]
    embedded, errors = embed_images(preprocessor, model, [images[ref] for ref in readable])
    problems.update((ref, error) for ref, error in zip(readable, errors, strict=True) if error)
    decoded = [ref for ref, error in zip(readable, errors, strict=True) if error is None]
    image_rows = dict(zip(decoded, embedded, strict=True))

    texts = list(dict.fromkeys(t for x in batch for t in (x.caption_ar, x.caption_en) if t))
    embedded, truncated = embed_texts(preprocessor, model, texts)
    text_rows = dict(zip(texts, embedded, strict=True))
    cut = dict(zip(texts, truncated, strict=True))

    # The baseline: each pair's image against another pair's caption, its Arabic against
    # another's English (`mismatched_partners`), from the embeddings above. Only pairs that are
    # kept take part: a pair whose image could not be read has no partner and is none.
    kept = [not (x.image_ref and x.image_ref in problems) for x in batch]
    has_image = [k and x.image_ref in image_rows for k, x in zip(kept, batch, strict=True)]
    image_partners = mismatched_partners(batch, has_image, "image_key")
    english_partners = mismatched_partners(batch, kept, "caption_en")

    scores = []
    for x, image_partner, english_partner in zip(
        batch, image_partners, english_partners, strict=True
    ):
        ar = text_rows[x.caption_ar]
        clip = translation = clip_mismatched = translation_mismatched = None
        if x.image_ref in image_rows:
            clip = float(np.dot(image_rows[x.image_ref], ar))
        if x.caption_en:
            translation = float(np.dot(ar, text_rows[x.caption_en]))
        if image_partner is not None:
            other = text_rows[batch[image_partner].caption_ar]
            clip_mismatched = float(np.dot(image_rows[x.image_ref], other))
        if english_partner is not None:
            other = text_rows[batch[english_partner].caption_en]
            translation_mismatched = float(np.dot(ar, other))
        truncated = sum(cut[t] for t in (x.caption_ar, x.caption_en) if t)
        scores.append(
            Scores(
                clip,
                translation,
                problems.get(x.image_ref or ""),
                truncated,
                clip_mismatched,
                translation_mismatched,
            )
        )
    return scores


def score_entries(element: tuple[Pair, Scores]) -> Iterable[tuple[tuple[str, str], float]]:
    """`((source, summary name), score)` of each score of a scored pair, the mismatched ones
    included (`pipeline.scoring.summary.SUMMARIES`); none of a pair dropped as unreadable."""
    pair, scores = element
    if scores.unreadable:
        return
    values = (
        scores.clip_score,
        scores.clip_mismatched,
        scores.translation_similarity,
        scores.translation_mismatched,
    )
    for name, value in zip(SUMMARIES, values, strict=True):
        if value is not None:
            yield (pair.source_name, name), value


def _failed_batch(failure) -> Iterable[Drop]:
    # Beam's dead letter holds (exception type, repr of the exception, traceback lines).
    batch, (_, error, _) = failure
    for pair, _ in batch:
        yield REASONS.drop(pair, "scoring_error", detail=error[:300])


class ScorePairs(Step):
    """Pairs → the same pairs with `clip_score` and `translation_similarity` (see the module
    docstring); returns `(kept, dropped)`, and with `with_scores` `(kept, dropped, summaries)`:
    `(source, summary name, summary)` of each source and score that has one, the mismatched
    baseline included (`pipeline.scoring.summary`). `store`: where the pairs' `image_ref`s point;
    `max_pixels`: the largest image the images stage may have stored (`images.max_pixels`).
    `handler`: another model handler (tests, benchmarks). A `Step` by its declaration; it
    judges `(pair, Scores)` elements after `RunInference`, by its own `expand`."""

    REASONS = REASONS

    def __init__(
        self,
        config: ScoringConfig,
        store: ImageStore | None,
        *,
        max_pixels: int | None = None,
        handler: ModelHandler | None = None,
        with_scores: bool = False,
    ):
        super().__init__()
        handler = handler or ClipHandler(config, store, max_pixels=max_pixels)
        self._handler = KeyedModelHandler(handler)
        self._with_scores = with_scores

    def setup(self) -> None:
        self._scored = Metrics.counter(STAGE, "pairs_scored")
        self._images = Metrics.counter(STAGE, "images_scored")
        self._truncated = Metrics.counter(STAGE, "captions_truncated")

    def expand(self, pairs):
        scored, errors = (
            pairs
            | "KeyByPair" >> beam.Map(lambda p: (p, score_input(p)))
            | "Score" >> RunInference(self._handler).with_exception_handling()
        )
        kept, judged = self.judged(scored)
        failed = errors.failed_inferences | "CountFailedBatches" >> beam.FlatMap(_failed_batch)
        dropped = (judged, failed) | "MergeDrops" >> beam.Flatten()
        if not self._with_scores:
            return kept, dropped
        summaries = (
            scored
            | "ScoreEntries" >> beam.FlatMap(score_entries)
            | "Summarize" >> beam.CombinePerKey(SummarizeScores())
            | "Flat" >> beam.MapTuple(lambda key, summary: (*key, summary))
        )
        return kept, dropped, summaries

    def pair_of(self, element: tuple[Pair, Scores]) -> Pair:
        return element[0]

    def judge(self, element: tuple[Pair, Scores]) -> Pair | Reject:
        pair, scores = element
        progress.advance(STAGE, unit="pairs")
        if scores.truncated:
            self._truncated.inc(scores.truncated)
        if scores.unreadable:
            return Reject("unreadable_image", scores.unreadable)
        self._scored.inc()
        if scores.clip_score is not None:
            self._images.inc()
        return pair._replace(
            clip_score=scores.clip_score, translation_similarity=scores.translation_similarity
        )
