"""Wires the stages of a manifest into one Beam graph.

read each source → translate English captions → clean captions → language ID → fetch, verify,
hash and store images → drop duplicates and placeholders → score image–caption agreement (when
the manifest has a `scoring` section) → filter by the scores (when `filters` sets a score
filter) → write shards, card and stats. Every stage returns
`(kept, dropped)`; all `dropped` outputs meet in `ComputeStats` (and, with `output.rejected`, in
the writer's `rejected/` shards). Clocks beside
each stage (`pipeline.timings`) give stats.json its `timings`. Image bytes never
travel in the graph: the images stage writes them to an `ImageStore` and the writer reads them
back by reference.
"""

from __future__ import annotations

import dataclasses
import os

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions

from filters.langid import FilterLanguage
from filters.scores import STAGE as SCORE_FILTER
from filters.scores import FilterScores
from filters.text import CleanCaptions
from pipeline.card import card_sources
from pipeline.config import IMAGE_FORMATS, ImagesConfig, ManifestError, score_filter_problems
from pipeline.dedupe import DropDuplicates
from pipeline.images import FetchImages, image_store
from pipeline.manifest import Manifest
from pipeline.records import EXTENSIONS
from pipeline.scoring.model import ClipFolderError, describe
from pipeline.scoring.stage import STAGE as SCORING
from pipeline.scoring.stage import ScorePairs
from pipeline.sources.registry import kind_of
from pipeline.sources.wikipedia import WikipediaSource
from pipeline.stats import ComputeStats
from pipeline.timings import READ, Clock, drop_count, one, read_stage
from pipeline.write import WRITE, WriteDataset, staging_dir
from translators.ctranslate import ModelFolderError, language_tokens, local_model, model_name
from translators.stage import TranslateCaptions


def check_buildable(manifest: Manifest) -> None:
    """Refuse, before any graph is built, English sources with nothing to translate them, a
    translation model folder that is not one or whose language tokens are missing or wrong, a
    scoring model folder that is not one (a remote one is copied here once to be looked at; the
    workers reuse the copy), and score filters without a scoring model."""
    t = manifest.translation
    problems = []
    for i, source in enumerate(manifest.sources):
        if kind_of(source).translates(source) and not (t.model or t.memory):
            problems.append(
                f"sources[{i}].kind: {source.kind!r} is English and needs translation.model "
                "(or a translation.memory that covers it)"
            )
    if t.model:
        try:
            model_name(t.model)
            language_tokens(local_model(t.model), t)
        except (ModelFolderError, OSError) as err:
            problems.append(f"translation.model: {err}")
    if manifest.scoring.model:
        try:
            describe(manifest.scoring.model)
        except (ClipFolderError, ModelFolderError, OSError) as err:
            problems.append(f"scoring.model: {err}")
    problems += score_filter_problems(manifest.filters, manifest.scoring)
    if problems:
        raise ManifestError(*problems)


def empty_inputs(manifest: Manifest) -> list[str]:
    """The input files of the manifest's sources that hold nothing (a run reads 0 records from
    each), as `sources[i].key: PATH`; a user is told rather than left with `read 0`."""
    empty = []
    for i, source in enumerate(manifest.sources):
        kind = kind_of(source)
        for key in kind.path_keys:
            if key in kind.folder_keys:
                continue
            value = getattr(source, key)
            patterns = value if isinstance(value, tuple) else (value,) if value else ()
            for pattern in patterns:
                try:
                    matched = FileSystems.match([pattern])[0].metadata_list
                except Exception:  # noqa: BLE001 - the manifest checked them; a race is the run's
                    continue
                empty += [f"sources[{i}].{key}: {m.path}" for m in matched if m.size_in_bytes == 0]
    return empty


def itemized(source):
    """`source` reading one `Drop` per dropped record, for `output.rejected`: a reader that
    counts some drops in bulk (WIT's rows of other languages) says so with an `itemized_drops`
    field (not a manifest key)."""
    if any(f.name == "itemized_drops" for f in dataclasses.fields(source)):
        return dataclasses.replace(source, itemized_drops=True)
    return source


def images_config(manifest: Manifest) -> ImagesConfig:
    """The images section, its `user_agent` taken from the first Wikipedia source that has one
    when the manifest sets none: upload.wikimedia.org refuses generic agents too."""
    images = manifest.images
    if images.user_agent is None:
        for source in manifest.sources:
            if isinstance(source, WikipediaSource) and source.user_agent:
                return dataclasses.replace(images, user_agent=source.user_agent)
    return images


def worker_processes(options: PipelineOptions) -> int:
    """The worker processes a run is known to have, which share each configured host's limits:
    the local runner's `--direct_num_workers` in multi_processing mode (0: one per core);
    otherwise 1 (on Dataflow or Flink the limits hold per worker process: README)."""
    direct = options.view_as(DirectOptions)
    if direct.direct_running_mode != "multi_processing":
        return 1
    return direct.direct_num_workers or os.cpu_count() or 1


def build_pipeline(
    p: beam.Pipeline, manifest: Manifest, output_dir: str, manifest_text: str | None = None
):
    """Adds the whole graph to `p`; returns the PCollection holding the final stats dict."""
    check_buildable(manifest)
    # Each stage is watched beside the graph (`pipeline.timings`): its input counted, its
    # outputs timed; the clocks' entries become stats.json's `timings`.
    clocks = []

    def watch(pcoll, stage: str, side: str, weight=None) -> None:
        clocks.append(pcoll | f"Clock[{stage}/{side}]" >> beam.ParDo(Clock(stage, weight)))

    read_pairs, read_drops = [], []
    for source in manifest.sources:
        kind = kind_of(source)
        if manifest.output.rejected:
            source = itemized(source)
        pairs, dropped = p | f"Read[{source.name}]" >> kind.reader(source)
        watch(pairs, read_stage(source.name), "pairs", one)
        watch(dropped, read_stage(source.name), "dropped", drop_count)
        read_pairs.append(pairs)
        # Every reason a reader emits is declared (an undeclared one counts as its catch-all).
        read_drops.append(dropped | f"Check[{source.name}]" >> beam.Map(kind.reasons.checked))
    emitted = read_pairs | "AllPairs" >> beam.Flatten()
    source_drops = read_drops | "AllSourceDrops" >> beam.Flatten()

    def watch_stage(stage: str, seen, *outputs) -> None:
        watch(seen, stage, "in", one)
        for i, output in enumerate(outputs):
            watch(output, stage, f"out{i}")

    pairs, translate_drops = emitted | "TranslateCaptions" >> TranslateCaptions(
        manifest.translation, output_dir
    )
    watch_stage("translate", emitted, pairs, translate_drops)
    f = manifest.filters
    seen = pairs
    pairs, clean_drops = pairs | "CleanCaptions" >> CleanCaptions(
        min_chars=f.min_chars, max_chars=f.max_chars, min_words=f.min_words, max_words=f.max_words
    )
    watch_stage("clean", seen, pairs, clean_drops)
    seen = pairs
    pairs, langid_drops = pairs | "FilterLanguage" >> FilterLanguage(
        labels=f.langid_labels, min_score=f.langid_min_score
    )
    watch_stage("langid", seen, pairs, langid_drops)

    # Only pairs whose text passed are downloaded. The images go into a store beside the graph
    # (the run's staging folder, or the image cache); the pairs carry references to them.
    staging = staging_dir(output_dir)
    images = images_config(manifest)
    store = image_store(images, staging)
    seen = pairs
    pairs, image_drops, host_counts = pairs | "FetchImages" >> FetchImages(
        images, store, share=worker_processes(p.options), with_hosts=True
    )
    watch_stage("images", seen, pairs, image_drops)
    seen = pairs
    pairs, duplicate_drops, kept_count = pairs | "DropDuplicates" >> DropDuplicates(
        manifest.dedupe.max_hamming,
        [s.name for s in manifest.sources],
        manifest.dedupe.placeholder_min_urls,
        with_count=True,
    )
    watch_stage("dedupe", seen, pairs, duplicate_drops)
    stage_drops = [
        source_drops,
        translate_drops,
        clean_drops,
        langid_drops,
        image_drops,
        duplicate_drops,
    ]

    # After dedupe: only the pairs the output keeps are scored (see pipeline.scoring.stage),
    # then filtered by their scores when the manifest asks (filters.scores).
    scored = bool(manifest.scoring.model)
    if scored:
        seen = pairs
        pairs, score_drops, score_summaries = pairs | "ScorePairs" >> ScorePairs(
            manifest.scoring, store, max_pixels=images.max_pixels, with_scores=True
        )
        watch_stage(SCORING, seen, pairs, score_drops)
        after_dedupe = [score_drops]
        if f.on_scores:
            seen = pairs
            pairs, filter_drops = pairs | "FilterScores" >> FilterScores(f)
            watch_stage(SCORE_FILTER, seen, pairs, filter_drops)
            after_dedupe.append(filter_drops)
        stage_drops += after_dedupe
        # The writer's count is dedupe's, less what scoring dropped (rare: an unreadable image)
        # and what the score filters dropped.
        lost = (
            after_dedupe
            | "AfterDedupeDrops" >> beam.Flatten()
            | "ScoreDropCounts" >> beam.Map(drop_count)
            | "ScoreDropsTotal" >> beam.CombineGlobally(sum)
        )
        kept_count = kept_count | "LessScoreDrops" >> beam.Map(
            lambda n, lost: n - lost, beam.pvalue.AsSingleton(lost)
        )

    dropped = stage_drops | "AllDrops" >> beam.Flatten()
    statistics = (emitted, source_drops, pairs, dropped, host_counts)
    if scored:
        statistics += (score_summaries,)
    stats = statistics | "ComputeStats" >> ComputeStats(
        [s.name for s in manifest.sources], scored=scored
    )
    timings = clocks | "Clocks" >> beam.Flatten()
    order = (
        READ,
        *(read_stage(s.name) for s in manifest.sources),
        "translate",
        "clean",
        "langid",
        "images",
        "dedupe",
        SCORING,
        SCORE_FILTER,
        WRITE,
    )
    written = (pairs, stats, kept_count, timings)
    if manifest.output.rejected is not False:  # the drops, as rows of DIR/rejected/
        written += (dropped,)
    return written | "WriteDataset" >> WriteDataset(
        output_dir,
        rows_per_shard=manifest.output.rows_per_shard,
        name=manifest.name,
        manifest_text=manifest_text,
        translation_model=model_name(manifest.translation.model)
        if manifest.translation.model
        else None,
        staging=staging,
        store=store,
        timings_order=order,
        sources=card_sources(manifest.sources),
        output_format=manifest.output.format,
        image_extension=EXTENSIONS[IMAGE_FORMATS[images.format]] if images.fetch else None,
        rejected=manifest.output.rejected,
    )
