"""TranslateCaptions: the Arabic of every translated pair, from the memory or the model.

Each distinct English caption is translated once: the pairs are keyed by their normalised
`caption_en`, the distinct captions are looked up in the translation memory, only the misses go
through the CTranslate2 model (`RunInference`, loaded once per worker), the model's new
translations are written to `DIR/translations/` for the next run's memory, and every
translation is joined back onto its pairs and checked (`translators.quality`). Pairs are joined
before images are fetched, so grouping them is cheap.

Drop reasons: `empty_caption` (no English), `no_translation` (no model and a memory miss),
`translation_error` (the model failed on the caption's batch), and those of
`translators.quality`. The memory is the manifest's `translation.memory` and, by itself, the
translations earlier runs into the same output folder wrote (`DIR/translations/`): a rerun, or
a run resumed after a kill, translates nothing twice. The memory's translations are checked like
the model's, so a rerun on an earlier run's translations keeps and drops exactly what that run
did. (Change the model, or its settings, and the earlier translations still win: give the run a
new output folder, or delete `DIR/translations/`.) Truncated captions are
kept: they are counted (`translate:captions_truncated`) and marked in the translations' Parquet.
Pairs whose `caption_origin` is not `translated` pass through untouched.

Beam counters (namespace `translate`, live progress only): `unique_captions`, `memory_hits`,
`captions_translated`, `captions_truncated`, `translation_errors`, `no_translation`. The
progress lines (`pipeline.progress`) count the pairs read (`read`, as they reach this stage) and
the captions the model translated (`translate`, of the memory's misses).
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference

from pipeline import progress
from pipeline.config import TranslationConfig
from pipeline.files import join
from pipeline.records import DROPPED, TRANSLATED, Pair
from pipeline.steps import Reasons, Step
from pipeline.text import normalize_english
from translators.ctranslate import CTranslate2Handler, Translation
from translators.memory import TRANSLATIONS_DIR, ReadMemory, WriteTranslations, memory_files
from translators.quality import QUALITY_REASONS, quality_problem

NAMESPACE = "translate"
REASONS = Reasons(
    NAMESPACE,
    {
        "empty_caption": "a translated source's record has no English caption",
        "no_translation": "no translation.model, and the memory has no entry for the caption",
        "translation_error": "the model failed on the caption's batch (detail: the error)",
        **QUALITY_REASONS,
    },
    catch_all="translation_error",
)
# A caption's fate when it gets no translation: (drop reason, detail).
Failure = tuple[str, str | None]


def _count(name: str):
    return Metrics.counter(NAMESPACE, name)


class _KeyByCaption(beam.DoFn):
    """(normalised caption_en, pair) for translated pairs; the others pass through."""

    PASS = "pass"

    def process(self, pair: Pair):
        progress.advance("read", unit="pairs")
        if pair.caption_origin != TRANSLATED:
            yield beam.pvalue.TaggedOutput(self.PASS, pair)
            return
        en = normalize_english(pair.caption_en or "")
        if en:
            yield en, pair
        else:
            yield beam.pvalue.TaggedOutput(DROPPED, REASONS.drop(pair, "empty_caption"))


def best_entry(entries: list[tuple[str, float | None]]) -> tuple[str, float | None]:
    """The memory entry used when a caption has several: one without a score first (a
    reference translation), then the highest score, then the first Arabic in code-point order."""
    return min(entries, key=lambda e: (e[1] is not None, -(e[1] or 0.0), e[0]))


class _LookUp(beam.DoFn):
    """Memory hits as `(en, Translation)`; misses on the `miss` output."""

    MISS = "miss"

    def __init__(self):
        self._hits = _count("memory_hits")

    def process(self, grouped):
        en, found = grouped
        if not found["caption"]:
            return
        if found["memory"]:
            self._hits.inc()
            ar, score = best_entry(list(found["memory"]))
            yield en, Translation(ar, score, False)
        else:
            yield beam.pvalue.TaggedOutput(self.MISS, en)


def _counted_unique(en: str) -> str:
    _count("unique_captions").inc()
    return en


def _counted(keyed: tuple[str, Translation], total: int):
    progress.advance("translate", total=total, unit="captions")
    _count("captions_translated").inc()
    if keyed[1].truncated:
        _count("captions_truncated").inc()
    return keyed


def _failed_batch(failure) -> list[tuple[str, Failure]]:
    # Beam's dead letter holds (exception type, repr of the exception, traceback lines).
    batch, (_, error, _) = failure
    _count("translation_errors").inc(len(batch))
    return [(en, ("translation_error", error[:300])) for en, _ in batch]


def _untranslatable(en: str) -> tuple[str, Failure]:
    _count("no_translation").inc()
    return en, ("no_translation", "no translation model, and the memory has no entry")


class _Apply(beam.DoFn):
    """Sets `caption_ar` and `translation_score` on each pair of a caption, or drops them."""

    def __init__(self, config: TranslationConfig):
        self._config = config

    def process(self, grouped):
        en, found = grouped
        translations, failures = list(found["translation"]), list(found["failure"])
        translated = {}
        if translations:
            t = translations[0]
            reason = quality_problem(en, t.ar, t.score, self._config)
            if reason is None:
                for pair in found["pairs"]:
                    yield pair._replace(caption_ar=t.ar, translation_score=t.score)
                return
            detail = f"score={t.score} ar={t.ar[:120]!r}"
            # The translation that failed travels with the drop: a rejected row shows it.
            translated = {"caption_ar": t.ar}
        else:
            reason, detail = failures[0] if failures else ("translation_error", "none came back")
        for pair in found["pairs"]:
            rejected = pair._replace(**translated)
            yield beam.pvalue.TaggedOutput(DROPPED, REASONS.drop(rejected, reason, detail))


class TranslateCaptions(Step):
    """Pairs with `caption_en` → the same pairs with `caption_ar` and `translation_score`.

    `config` gives the model folder (or None: memory only), the memory and the thresholds;
    the model's new translations go to `output_dir/translations/`, and those earlier runs left
    there are read as memory beside the manifest's. Returns `(kept, dropped)`. A `Step` by its
    declaration; it judges captions in batches, by its own `expand`.
    """

    REASONS = REASONS

    def __init__(
        self, config: TranslationConfig, output_dir: str, *, max_batch_captions: int = 256
    ):
        super().__init__()
        self._config = config
        self._output_dir = output_dir
        self._max_batch_captions = max_batch_captions

    def expand(self, pairs):
        config = self._config
        keyed = pairs | "KeyByCaption" >> beam.ParDo(_KeyByCaption()).with_outputs(
            _KeyByCaption.PASS, DROPPED, main="keyed"
        )
        unique = (
            keyed.keyed
            | "Captions" >> beam.Keys()
            | "Distinct" >> beam.Distinct()
            | "CountUnique" >> beam.Map(_counted_unique)
        )
        memory_paths = [config.memory] if config.memory else []
        earlier = join(self._output_dir, TRANSLATIONS_DIR)
        if memory_files(earlier):
            memory_paths.append(earlier)
        if memory_paths:
            memory = pairs.pipeline | "ReadMemory" >> ReadMemory(memory_paths)
            looked_up = (
                {"caption": unique | "AsKeys" >> beam.Map(lambda en: (en, None)), "memory": memory}
                | "JoinMemory" >> beam.CoGroupByKey()
                | "LookUp" >> beam.ParDo(_LookUp()).with_outputs(_LookUp.MISS, main="hits")
            )
            hits, misses = looked_up.hits, looked_up[_LookUp.MISS]
        else:
            hits = pairs.pipeline | "NoMemory" >> beam.Create([])
            misses = unique
        if config.model:
            handler = KeyedModelHandler(
                CTranslate2Handler(config, max_batch_captions=self._max_batch_captions)
            )
            translated, errors = (
                misses
                | "KeyForModel" >> beam.Map(lambda en: (en, en))
                | "Translate" >> RunInference(handler).with_exception_handling()
            )
            to_translate = misses | "CountMisses" >> beam.combiners.Count.Globally()
            new = translated | "CountTranslated" >> beam.Map(
                _counted, beam.pvalue.AsSingleton(to_translate)
            )
            new | "WriteTranslations" >> WriteTranslations(self._output_dir)
            failures = errors.failed_inferences | "FailedBatches" >> beam.FlatMap(_failed_batch)
        else:
            new = pairs.pipeline | "NoModel" >> beam.Create([])
            failures = misses | "Untranslatable" >> beam.Map(_untranslatable)
        translations = (hits, new) | "AllTranslations" >> beam.Flatten()
        applied = (
            {"pairs": keyed.keyed, "translation": translations, "failure": failures}
            | "JoinPairs" >> beam.CoGroupByKey()
            | "Apply" >> beam.ParDo(_Apply(config)).with_outputs(DROPPED, main="kept")
        )
        kept = (applied.kept, keyed[_KeyByCaption.PASS]) | "KeptAndPassed" >> beam.Flatten()
        dropped = (keyed[DROPPED], applied[DROPPED]) | "Dropped" >> beam.Flatten()
        return kept, dropped
