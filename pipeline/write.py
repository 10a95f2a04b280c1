"""WriteDataset: Parquet shards (or WebDataset tars, `pipeline.tars`), the Hugging Face dataset
card and `stats.json`.

Pairs are spread over `ceil(kept / rows_per_shard)` shards by a hash of their id (so a shard
holds about `rows_per_shard` rows) and sorted by id inside a shard: the same inputs give the
same files on any runner. Every shard index is written, empty ones included, so the names
`train-XXXXX-of-NNNNN.parquet` (or `.tar`) always form a complete set. Each file is written
under a temporary name and renamed, so a retried bundle never leaves half a shard. The pairs
carry references to their images (`pipeline.store`); a shard's images are read back from the
store, a row group (`ROWS_PER_GROUP` rows) at a time, and the file is streamed out, so writing a
shard holds one row group's images, not the shard's.

A reader of the output folder never sees a half-written dataset, and a run that fails or is
killed leaves the previous output as it was: the shards, card and stats are written into a
staging folder beside the output (`DIR/.incoming-RUN/`, same filesystem) and swapped in only
once all are written (`commit`). For a local folder the swap is two renames of `data/` (the old
one aside, the new one in: a reader sees the old set or the new one, each whole), then the card
and `stats.json` replaced, `stats.json` last; the old shards are deleted after. Object stores
have no folder rename: there each new shard is moved in, then the old shards that are not in the
new set are deleted, then the card and stats. Staging folders of killed runs are removed by the
next run's commit. The run's image store lives in its staging folder too (unless it is the
image cache) and goes with it.

With `output.rejected`, the dropped records' shards (`pipeline.rejected`) are staged in
`rejected/` and swapped in the same way, just after `data/`; a run without it removes the
rejected shards of the output it replaces (those names only: anything else in `rejected/` is
the user's), so the folder never holds rows of another run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import posixpath
import re
import shutil
import time
import uuid
from collections.abc import Sequence

import apache_beam as beam
import pyarrow as pa
import yaml
from apache_beam.io.filesystems import FileSystems

from pipeline import progress, tars
from pipeline import rejected as rejected_rows
from pipeline.card import (
    LICENCE_NAME,
    CardSource,
    citations,
    hub_metadata,
    is_our_licence,
    licence_file,
    licences,
    sources_of_stats,
)
from pipeline.config import PARQUET, WEBDATASET
from pipeline.files import join, read_text, replacing, write_bytes, write_table
from pipeline.records import COLUMN_DOCS, SCHEMA, Pair, decode_pair, encode_pair, to_row
from pipeline.store import ImageStore, PackReader
from pipeline.timings import TIMINGS, build_timings

DATA_DIR = "data"
# The extension of a shard of each `output.format`.
SHARD_EXTENSIONS = {PARQUET: "parquet", WEBDATASET: "tar"}
# The names of shards of either format and of their temporary files (`replacing`): the only
# files of `data/` a run replaces or deletes (a run of one format replaces the other's).
SHARD_NAME = re.compile(r"\.?train-\d{5}-of-\d{5}\.(?:parquet|tar)(?:\.tmp)?")
STAGING_PREFIX = ".incoming-"
REPORT_NAME = "report.html"  # written by `python -m pipeline report DIR`
# The files of the output folder that a run replaces; anything else there is left alone.
# stats.json last: it says the output is whole. LICENSE.md after the card, so that a run killed
# between the two leaves an output `pipeline.output` still knows as ours.
COMMITTED_FILES = ("README.md", LICENCE_NAME, "stats.json")
# The card's YAML key holding the build's facts (`dataset_card`, read by `pipeline.report`).
CARD_KEY = "arabic_pairs"
# The card's first sentence, by which an output of any version is recognised (pipeline.output).
CARD_SIGNATURE = "Arabic image–text pairs built by arabic-pairs."
# Rows of one Parquet row group: the images the writer holds at once (about 20-40 MB at 256 px).
ROWS_PER_GROUP = 1000
WRITE = "write"  # the writer's stage in `timings`, and the tag of its clock entries


def hf_features():
    """The `datasets.Features` of the output: `SCHEMA` with `image` as a `datasets.Image`."""
    import datasets  # heavy; only the driver and the writer need it

    features = datasets.Features.from_arrow_schema(SCHEMA)
    features["image"] = datasets.Image()
    return features


def arrow_schema() -> pa.Schema:
    """`SCHEMA` with the `huggingface` metadata that makes `datasets` decode `image`."""
    return hf_features().arrow_schema


def shard_name(index: int, count: int, output_format: str = PARQUET) -> str:
    return f"train-{index:05d}-of-{count:05d}.{SHARD_EXTENSIONS[output_format]}"


def shard_count(kept: int, rows_per_shard: int) -> int:
    return max(1, math.ceil(kept / rows_per_shard))


def shard_of(pair_id: str, count: int) -> int:
    return int(pair_id[:12], 16) % count


def staging_dir(output_dir: str) -> str:
    """A new staging folder for one run into `output_dir` (see the module's docstring)."""
    return join(output_dir, STAGING_PREFIX + uuid.uuid4().hex[:12])


class _HashingSink:
    """A write-only file that passes what it is given on to `f` and hashes it."""

    def __init__(self, f):
        self._f = f
        self._hash = hashlib.sha256()
        self._written = 0
        self.closed = False

    def write(self, data) -> int:
        self._f.write(data)
        self._hash.update(data)
        self._written += len(data)
        return len(data)

    def tell(self) -> int:
        return self._written

    def flush(self) -> None:
        self._f.flush()

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def rows_with_images(pairs: list[Pair], reader: PackReader | None) -> list[dict]:
    """The rows of `pairs`, each image read back from the store and checked against the sha256
    the images stage computed (a wrong offset or a damaged pack fails the shard, loudly)."""
    refs = [p.image_ref for p in pairs if p.image_ref]
    if refs and reader is None:
        raise ValueError("pairs refer to stored images but the writer has no image store")
    images = reader.read_many(refs) if refs else {}
    rows = []
    for p in pairs:
        image = images.get(p.image_ref) if p.image_ref else None
        if image is not None and hashlib.sha256(image).hexdigest() != p.sha256:
            raise OSError(f"image store: {p.image_ref} does not hold the image of {p.id}")
        rows.append(to_row(p, image))
    return rows


def fingerprint(shards: list[tuple[str, int, str]]) -> str:
    """One digest of the whole output from each shard's (path, rows, sha256)."""
    names = sorted((posixpath.basename(path), digest) for path, _, digest in shards)
    return hashlib.sha256(json.dumps(names).encode()).hexdigest()[:16]


class _CardDumper(yaml.SafeDumper):
    """YAML with multi-line text (the manifest) as a literal block, readable in the card."""


_CardDumper.add_representer(
    str,
    lambda dumper, text: dumper.represent_scalar(
        "tag:yaml.org,2002:str", text, style="|" if "\n" in text else None
    ),
)


def dataset_card(
    name: str,
    stats: dict,
    features,
    manifest_text: str | None,
    content_fingerprint: str,
    translation_model: str | None = None,
    sources: Sequence[CardSource] = (),
    output_format: str = PARQUET,
    shard_total: int = 1,
    rejected: bool = False,
) -> str:
    """The `README.md` of the output: a YAML header `datasets` and the Hub read, then what the
    data is, how to load it, its licences and what to cite.

    `sources`: the run's sources (`pipeline.card.card_sources`); without them, each key of
    `stats["sources"]` is taken for a source of that kind in its kind's own language. The Hub's
    metadata (`license_link: LICENSE.md`, sizes, creators...) is `pipeline.card.hub_metadata`.

    The build's own facts are data in the header, under `arabic_pairs` (`translation_model`,
    `manifest`), which `pipeline.report` reads back; the body repeats them for people.
    `datasets` caches a local folder under a hash of the card's `dataset_info` and not of the
    data (two builds into folders of the same name share a cache entry), so the description
    carries a fingerprint of the shards' contents. `output_format` names the shards' extension
    (`features` must be that format's: `hf_features`, `pipeline.tars.hf_features`).
    `rejected`: the output has rejected rows, read as the `rejected` config (`default` stays the
    kept pairs alone; `dataset_info` describes it).
    """
    sources = tuple(sources) or sources_of_stats(stats)
    shards = f"{DATA_DIR}/train-*.{SHARD_EXTENSIONS[output_format]}"
    header = {
        "pretty_name": name,
        **hub_metadata(sources, stats["kept"]),
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": "train", "path": shards}],
            },
            *([rejected_rows.CONFIG] if rejected else []),
        ],
        "dataset_info": {
            "config_name": "default",
            "description": f"arabic-pairs build, content fingerprint {content_fingerprint}",
            "features": features._to_yaml_list(),
        },
        CARD_KEY: {"translation_model": translation_model, "manifest": manifest_text},
    }
    lines = [
        "---",
        yaml.dump(header, Dumper=_CardDumper, allow_unicode=True, sort_keys=False).rstrip(),
        "---",
        "",
        f"# {name}",
        "",
        f"{CARD_SIGNATURE} Genuine captions were written in Arabic",
        "(`caption_origin: genuine`); translated ones were machine-translated from English",
        "(`caption_origin: translated`, original in `caption_en`). Each row says where it came",
        "from (`source`, `source_key`, `page_url`, `image_url`).",
        "",
        "## How to load",
        "",
        "```python",
        "from datasets import load_dataset",
        "",
        "# this folder, or its repository id once uploaded to the Hub",
        f'pairs = load_dataset("path/to/{_folder_hint(name)}", split="train")',
        'pairs[0]["caption_ar"], pairs[0]["image"]  # a str and a PIL image',
        "```",
        "",
        *_webdataset_hint(output_format, shard_total, stats["kept"]),
        "## Licences",
        "",
        "Each pair keeps the terms of its source (listed in `LICENSE.md`):",
        "",
        *[f"- **{kind}**: {text}" for kind, text in licences(sources)],
        "",
        "## Pairs per source",
        "",
        "| source | read | kept | dropped |",
        "| --- | ---: | ---: | --- |",
    ]
    for source, s in stats["sources"].items():
        drops = ", ".join(f"{reason} {n}" for reason, n in s["dropped"].items()) or "—"
        lines.append(f"| {source} | {s['read']} | {s['kept']} | {drops} |")
    lines += [
        "",
        f"Total kept: {stats['kept']}; duplicates removed: {stats['duplicates_removed']}.",
        "",
        "## Translation",
        "",
        f"Translated captions come from the CTranslate2 model {translation_model} or the"
        " translation memory of the manifest (a memory entry without a score has"
        " `translation_score` null). `translations/` holds the model's translations (`en`, `ar`,"
        " `score`): their provenance, and the memory a rerun into this folder reads first."
        if translation_model
        else "No translation model was used; translated captions, if any, come from the"
        " translation memory of the manifest.",
        "",
        "## Columns",
        "",
        "| column | meaning |",
        "| --- | --- |",
    ]
    lines += [f"| `{col}` | {doc} |" for col, doc in COLUMN_DOCS.items()]
    cited = citations(sources, translation_model)
    if cited:
        lines += ["", "## Citation", "", "If you use this data, cite its sources:", ""]
        lines += ["```bibtex", "\n\n".join(cited), "```"]
    if manifest_text:
        lines += ["", "## Manifest", "", "```yaml", manifest_text.rstrip(), "```"]
    return "\n".join(lines) + "\n"


def _webdataset_hint(output_format: str, total: int, kept: int) -> list[str]:
    """For tar shards: how open_clip trains from them (a brace pattern of every shard)."""
    if output_format != WEBDATASET:
        return []
    total = max(total, 1)
    pattern = f"{DATA_DIR}/train-{{{0:05d}..{total - 1:05d}}}-of-{total:05d}.tar"
    return [
        "The shards are WebDataset tars (`KEY.jpg`, `KEY.txt` the Arabic caption, `KEY.json` the",
        "other columns); open_clip trains from them as they are:",
        "",
        "```sh",
        f"python -m open_clip_train.main --dataset-type webdataset --train-data '{pattern}' \\",
        f"    --train-num-samples {kept}",
        "```",
        "",
    ]


def _folder_hint(name: str) -> str:
    """The name as a folder in the loading example (`Arabic pairs` → `arabic-pairs`)."""
    return re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-") or "dataset"


def is_shard(name: str) -> bool:
    """A shard of some run (`train-00000-of-00004.parquet` or `.tar`), or the temporary name of
    one (`write_bytes`); nothing else in `data/` is ours (`train-mine.parquet` is not)."""
    return SHARD_NAME.fullmatch(name) is not None


def commit(
    output_dir: str,
    staging: str,
    shard_names: list[str],
    rejected_names: list[str] | None = None,
) -> None:
    """Swap the output staged in `staging` (`data/` with `shard_names`, `rejected/` with
    `rejected_names` when the run wrote rejected rows, the card, the stats) into `output_dir`,
    then remove the shards of the earlier output and the staging folders of killed runs.
    Running it again after it finished changes nothing (a retried bundle)."""
    if "://" in output_dir:
        _commit_by_file(output_dir, staging, shard_names, rejected_names)
        return
    _swap_folder(output_dir, staging, DATA_DIR, is_shard)
    if rejected_names is None:
        _remove_shards(os.path.join(output_dir, rejected_rows.REJECTED_DIR))
    else:
        _swap_folder(output_dir, staging, rejected_rows.REJECTED_DIR, rejected_rows.is_shard)
    for name in COMMITTED_FILES:
        if os.path.exists(os.path.join(staging, name)) and _ours_to_replace(output_dir, name):
            os.replace(os.path.join(staging, name), os.path.join(output_dir, name))
    for entry in os.listdir(output_dir):
        if entry.startswith(STAGING_PREFIX):  # ours, and any a killed run left
            shutil.rmtree(os.path.join(output_dir, entry), ignore_errors=True)


def _ours_to_replace(output_dir: str, name: str) -> bool:
    """Whether the committed file `name` may replace what `output_dir` holds: the card and the
    stats always (`pipeline.output` let the run in); `LICENSE.md` only when there is none or
    an earlier run wrote it: a licence the user wrote stays, and the card links to it."""
    if name != LICENCE_NAME:
        return True
    text = read_text(join(output_dir, name))
    return text is None or is_our_licence(text)


def _swap_folder(output_dir: str, staging: str, folder: str, ours) -> None:
    """`staging/folder` in place of `output_dir/folder` by two renames (the old one aside into
    the staging folder, the new one in: a reader sees either, each whole); what the old one
    held that is not `ours(name)` moves into the new one. Nothing when swapped in already."""
    staged, target = os.path.join(staging, folder), os.path.join(output_dir, folder)
    if not os.path.isdir(staged):
        return
    replaced = os.path.join(staging, f"replaced-{folder}")
    if os.path.isdir(target):
        os.rename(target, replaced)
    os.rename(staged, target)
    if os.path.isdir(replaced):
        for name in os.listdir(replaced):
            if not ours(name):
                os.rename(os.path.join(replaced, name), os.path.join(target, name))


def _remove_shards(folder: str) -> None:
    """The rejected shards an earlier run left in `folder`, and the folder once empty."""
    if not os.path.isdir(folder):
        return
    for name in os.listdir(folder):
        if rejected_rows.is_shard(name):
            os.remove(os.path.join(folder, name))
    if not os.listdir(folder):
        os.rmdir(folder)


def _move_shards(output_dir: str, staging: str, folder: str, names: list[str], ours) -> None:
    """File by file: the staged shards `names` of `folder` moved in, then the shards there that
    are `ours(name)` but not among `names` deleted."""
    present = [p for p in (join(staging, folder, n) for n in names) if FileSystems.exists(p)]
    if present:
        FileSystems.rename(
            present, [join(output_dir, folder, posixpath.basename(p)) for p in present]
        )
    old = [
        m.path
        for m in FileSystems.match([join(output_dir, folder, "*")])[0].metadata_list
        if ours(posixpath.basename(m.path)) and posixpath.basename(m.path) not in names
    ]
    if old:
        FileSystems.delete(old)


def _commit_by_file(
    output_dir: str, staging: str, shard_names: list[str], rejected_names: list[str] | None = None
) -> None:
    _move_shards(output_dir, staging, DATA_DIR, shard_names, is_shard)
    _move_shards(
        output_dir,
        staging,
        rejected_rows.REJECTED_DIR,
        rejected_names or [],
        rejected_rows.is_shard,
    )
    for name in COMMITTED_FILES:
        source, target = join(staging, name), join(output_dir, name)
        if FileSystems.exists(source) and _ours_to_replace(output_dir, name):
            if FileSystems.exists(target):
                FileSystems.delete([target])
            FileSystems.rename([source], [target])
    # What is left under staging folders, this run's and killed runs' (their image stores).
    leftovers = FileSystems.match([join(output_dir, STAGING_PREFIX + "*", "**")])[0]
    if leftovers.metadata_list:
        FileSystems.delete([m.path for m in leftovers.metadata_list])


def _by_shard(pair: Pair, count: int) -> tuple[int, bytes]:
    # Encoded, as in `SpreadPairs`: the local runner holds a GroupByKey's values decoded.
    return shard_of(pair.id, count), encode_pair(pair)


class _WriteShard(beam.DoFn):
    def __init__(self, staging: str, store: ImageStore | None, output_format: str = PARQUET):
        self._staging = staging
        self._store = store
        self._format = output_format
        self._schema = None

    def setup(self):
        self._schema = arrow_schema()

    def process(self, keyed, count):
        started = time.time()
        index, items = keyed
        # By id, then by the encoded pair: pairs of one id (one record read twice) come in the
        # same order whatever order the grouping gave them.
        pairs = sorted(map(decode_pair, sorted(b for b in items if b)), key=lambda p: p.id)
        path = join(self._staging, DATA_DIR, shard_name(index, count, self._format))
        with contextlib.ExitStack() as stack:
            reader = stack.enter_context(self._store.reader()) if self._store else None
            sink = _HashingSink(stack.enter_context(replacing(path)))
            groups = (
                rows_with_images(pairs[i : i + ROWS_PER_GROUP], reader)
                for i in range(0, len(pairs), ROWS_PER_GROUP)
            )
            if self._format == WEBDATASET:
                tars.write_samples(sink, groups)
            else:
                write_table(sink, groups, self._schema)
        progress.advance("write", total=count, unit="shards")
        yield beam.pvalue.TaggedOutput(WRITE, (WRITE, started, time.time(), len(pairs)))
        yield path, len(pairs), sink.hexdigest()


class _WriteCardAndStats(beam.DoFn):
    """Writes the card and the stats beside the staged shards, then commits the whole output."""

    def __init__(
        self,
        output_dir: str,
        staging: str,
        name: str,
        manifest_text: str | None,
        translation_model: str | None,
        timings_order: Sequence[str] = (),
        sources: Sequence[CardSource] = (),
        output_format: str = PARQUET,
        image_extension: str | None = None,
        all_rejected: bool = False,
    ):
        self._output_dir = output_dir
        self._staging = staging
        self._name = name
        self._manifest_text = manifest_text
        self._translation_model = translation_model
        self._timings_order = tuple(timings_order)
        self._sources = tuple(sources)
        self._format = output_format
        self._image_extension = image_extension
        self._all_rejected = all_rejected

    def process(self, stats, shards, clocks=None, rejected=None):
        if clocks is not None:
            stats = {**stats, TIMINGS: build_timings(clocks, self._timings_order)}
        written = sum(n for _, n, _ in shards)
        if written != stats["kept"]:
            raise RuntimeError(f"wrote {written} rows but counted {stats['kept']} kept pairs")
        rejected_shards = [(p, n, digest) for p, n, digest, _ in rejected or ()]
        if self._all_rejected:
            records = sum(r for *_, r in rejected)
            dropped = sum(sum(s["dropped"].values()) for s in stats["sources"].values())
            if records != dropped:
                raise RuntimeError(f"wrote {records} rejected records but counted {dropped}")
        features = (
            tars.hf_features(self._image_extension) if self._format == WEBDATASET else hf_features()
        )
        card = dataset_card(
            self._name,
            stats,
            features,
            self._manifest_text,
            fingerprint(shards + rejected_shards),
            self._translation_model,
            self._sources,
            self._format,
            len(shards),
            # `datasets` refuses a config of zero rows: one empty rejected shard is not one.
            rejected=any(n for _, n, _ in rejected_shards),
        )
        write_bytes(join(self._staging, "README.md"), card.encode("utf-8"))
        sources = self._sources or sources_of_stats(stats)
        licence = licence_file(self._name, sources, self._translation_model)
        write_bytes(join(self._staging, LICENCE_NAME), licence.encode("utf-8"))
        text = json.dumps(stats, ensure_ascii=False, indent=2) + "\n"
        write_bytes(join(self._staging, "stats.json"), text.encode("utf-8"))
        commit(
            self._output_dir,
            self._staging,
            [posixpath.basename(p) for p, _, _ in shards],
            None if rejected is None else [posixpath.basename(p) for p, _, _ in rejected_shards],
        )
        yield stats


class WriteDataset(beam.PTransform):
    """`(pairs, stats)`, `(pairs, stats, count)` or `(pairs, stats, count, clocks)` → the output
    folder; returns the `stats` element once all is written and committed (see the module's
    docstring). `count`: one element, the number of `pairs`, when known upstream (checked
    against the rows written; None: counted here). `clocks`: the other stages' `Clock`
    entries (`pipeline.timings`); with them, stats.json has `timings`, the writer's own
    (`write`: first shard begun to last shard written) included, stages in `timings_order`.
    `store`: where the pairs' `image_ref`s point (`pipeline.store`). `staging`: the run's staging
    folder (default: a new one); a store in it (all but the image cache) is removed with it by the
    commit. `sources`: the run's sources for the card (`pipeline.card.card_sources`; default:
    guessed from the stats' keys). `output_format`: `parquet` or `webdataset` (tars,
    `pipeline.tars`); `image_extension`: the extension of the stored images (`jpg`), None when none
    are fetched, which names the image feature of a webdataset output's card."""

    """`(pairs, stats)`, `(pairs, stats, count)`, `(pairs, stats, count, clocks)` or
    `(pairs, stats, count, clocks, dropped)` → the output folder; returns the `stats` element
    once all is written and committed (see the module's docstring). `count`: one element, the
    number of `pairs`, when known upstream (checked against the rows written; None: counted
    here). `clocks`: the other stages' `Clock` entries (`pipeline.timings`); with them,
    stats.json has `timings`, the writer's own (`write`: first shard begun to last shard
    written) included, stages in `timings_order`. `dropped`: every stage's `Drop`s, written to
    `rejected/` as `rejected` (`output.rejected`: true, or N per source and reason) says.
    `store`: where the pairs' `image_ref`s point (`pipeline.store`). `staging`: the run's
    staging folder (default: a new one); a store in it (all but the image cache) is removed
    with it by the commit."""

    def __init__(
        self,
        output_dir: str,
        *,
        rows_per_shard: int,
        name: str,
        manifest_text: str | None = None,
        translation_model: str | None = None,
        staging: str | None = None,
        store: ImageStore | None = None,
        timings_order: Sequence[str] = (),
        sources: Sequence[CardSource] = (),
        output_format: str = PARQUET,
        image_extension: str | None = None,
        rejected: bool | int = False,
    ):
        super().__init__()
        self._output_dir = output_dir
        self._rows_per_shard = rows_per_shard
        self._name = name
        self._manifest_text = manifest_text
        self._translation_model = translation_model
        # One staging folder per pipeline: a killed run's is never mistaken for this one's.
        self._staging = staging or staging_dir(output_dir)
        self._store = store
        self._timings_order = tuple(timings_order)
        self._sources = tuple(sources)
        self._format = output_format
        self._image_extension = image_extension
        self._rejected = rejected

    def expand(self, pcolls):
        pairs, stats, *rest = pcolls
        known, clocks, dropped = (rest + [None, None, None])[:3]
        per_shard = self._rows_per_shard
        # The number of pairs, given when an earlier stage knows it (DropDuplicates): counting
        # them here would hold every pair until the count is done.
        kept = known if known is not None else pairs | "Count" >> beam.combiners.Count.Globally()
        count = kept | "Shards" >> beam.Map(lambda n: shard_count(n, per_shard))
        count_side = beam.pvalue.AsSingleton(count)
        keyed = pairs | "KeyByShard" >> beam.Map(_by_shard, count_side).with_output_types(
            tuple[int, bytes]
        )
        # One empty marker per shard index, so that every shard is written, even an empty one.
        markers = count | "EveryShard" >> beam.FlatMap(
            lambda n: [(i, b"") for i in range(n)]
        ).with_output_types(tuple[int, bytes])
        written = (
            (keyed, markers)
            | "WithMarkers" >> beam.Flatten()
            | "GroupShards" >> beam.GroupByKey()
            | "WriteShards"
            >> beam.ParDo(
                _WriteShard(self._staging, self._store, self._format), count_side
            ).with_outputs(WRITE, main="shards")
        )
        shards = written.shards
        timed = ()
        if clocks is not None:
            every = (clocks, written[WRITE]) | "AllClocks" >> beam.Flatten()
            timed = (beam.pvalue.AsList(every),)
        rejected = {}
        if self._rejected is not False:
            if dropped is None:
                raise ValueError("rejected rows need the dropped records as the fifth input")
            rows = dropped | "WriteRejected" >> rejected_rows.WriteRejected(
                self._staging, rows_per_shard=per_shard, limit=self._rejected
            )
            rejected = {"rejected": beam.pvalue.AsList(rows)}
        return stats | "WriteCardAndStats" >> beam.ParDo(
            _WriteCardAndStats(
                self._output_dir,
                self._staging,
                self._name,
                self._manifest_text,
                self._translation_model,
                self._timings_order,
                self._sources,
                self._format,
                self._image_extension,
                all_rejected=self._rejected is True,
            ),
            beam.pvalue.AsList(shards),
            *timed,
            **rejected,
        )
