"""The translation memory: earlier translations read before the model, new ones written after.

A memory is a Parquet file (columns `en`, `ar`, optional `score`), a TSV whose header names
`en` and `ar` (and optionally `score`; other columns are ignored), or a folder of either
(`*.parquet`, `*.tsv`, `*.tsv.gz`), or a glob. A TSV is split on tabs, never unquoted: a field
holds no tab or newline. `en` is matched after `filters.text.normalize_english`, the
normalisation of `caption_en`.

A malformed entry (a TSV line with the wrong number of fields, undecodable bytes, an empty `en`
or `ar`, a score that is not a finite number; a Parquet row with a null or empty `en` or `ar`)
is skipped: counted in the `translate:memory_bad_entries` counter and logged as `FILE:LINE`
(the first few of each file, then one total per file). A memory that cannot be used at all
(a missing file, a header without `en` or `ar`) fails the run: translating everything again
instead would be silent and costly. An empty file, or a folder without memory files, holds no
entries.

`WriteTranslations` writes the translations a run made to
`DIR/translations/translations-DIGEST-XXXXX-of-NNNNN.parquet` (columns `en`, `ar`, `score`,
`truncated`; rows sorted by `en`, spread over the shards by a hash of `en`). DIGEST is a digest
of the set's content, so a rerun into the same `DIR` (which reads `DIR/translations` as memory
by itself, see `translators.stage`) adds its own set beside the earlier ones instead of
overwriting them, and a rerun of the same inputs writes the same files again. Each file is
written under a temporary name and renamed: a killed run leaves whole files, which a resumed
run reads. A run that translated nothing writes the
one empty shard of the empty set.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import math
import posixpath
from collections.abc import Callable, Iterator, Sequence

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipeline.files import join, table_bytes, write_bytes
from pipeline.sources.files import numbered_lines
from pipeline.text import normalize_english
from translators.ctranslate import Translation

log = logging.getLogger(__name__)

TRANSLATIONS_DIR = "translations"
SUFFIXES = (".parquet", ".tsv", ".tsv.gz")
SCHEMA = pa.schema(
    [("en", pa.string()), ("ar", pa.string()), ("score", pa.float64()), ("truncated", pa.bool_())]
)
# Malformed entries logged one by one per file; the rest are only counted.
LOGGED_PER_FILE = 10

# (en, (ar, score or None)): what `ReadMemory` yields.
MemoryEntry = tuple[str, tuple[str, float | None]]
OnBad = Callable[[str, str], None]


def memory_files(path: str) -> list[str]:
    """The files of the memory at `path`: a file, a glob, or a folder (its `*.parquet`,
    `*.tsv` and `*.tsv.gz`), sorted. A named file that does not exist is an error."""
    if any(ch in path for ch in "*?[") or path.endswith(SUFFIXES):
        patterns = [path]
    else:
        patterns = [join(path, "*" + suffix) for suffix in SUFFIXES]
    found = sorted(
        {
            meta.path
            for result in FileSystems.match(patterns)
            for meta in result.metadata_list
            if meta.path.endswith(SUFFIXES)
        }
    )
    if not found and path.endswith(SUFFIXES):
        raise FileNotFoundError(f"translation memory {path!r} does not exist")
    return found


def _score(text: str) -> float | None:
    if not text.strip():
        return None
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"score {text!r} is not a finite number")
    return value


def read_tsv(path: str, on_bad: OnBad) -> Iterator[MemoryEntry]:
    """The entries of a memory TSV; `on_bad(where, why)` for each malformed line.

    Read as the sources' files are (`pipeline.sources.files`): a byte-order mark is skipped,
    and a `.gz` cut short fails naming FILE:LINE instead of ending quietly at the cut.
    """
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
        stream = gzip.GzipFile(fileobj=raw) if path.endswith(".gz") else raw
        lines = numbered_lines(stream, path)
        first = next(lines, None)
        if first is None:  # an empty file: no entries yet
            return
        header = [name.strip() for name in first[1].decode("utf-8").split("\t")]
        if "en" not in header or "ar" not in header:
            raise ValueError(
                f"{path}:1: a memory TSV's header must name the columns en and ar "
                f"(tab-separated), got {header!r}"
            )
        en_at, ar_at = header.index("en"), header.index("ar")
        score_at = header.index("score") if "score" in header else None
        for number, data in lines:
            where = f"{path}:{number}"
            try:
                line = data.decode("utf-8")
            except UnicodeDecodeError as err:
                on_bad(where, f"not UTF-8 ({err.reason})")
                continue
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) != len(header):
                on_bad(where, f"expected {len(header)} tab-separated fields, got {len(fields)}")
                continue
            en, ar = normalize_english(fields[en_at]), fields[ar_at].strip()
            if not en or not ar:
                on_bad(where, "empty en or ar")
                continue
            try:
                score = _score(fields[score_at]) if score_at is not None else None
            except ValueError as err:
                on_bad(where, str(err))
                continue
            yield en, (ar, score)


def read_parquet(path: str, on_bad: OnBad) -> Iterator[MemoryEntry]:
    """The entries of a memory Parquet file; `on_bad(where, why)` for each malformed row
    (`where` is `FILE:ROW`, rows counted from 1)."""
    with FileSystems.open(path) as f:
        parquet = pq.ParquetFile(f)
        names = parquet.schema_arrow.names
        if "en" not in names or "ar" not in names:
            raise ValueError(f"{path}: a memory Parquet file needs columns en and ar, got {names}")
        columns = ["en", "ar", *(["score"] if "score" in names else [])]
        number = 0
        for batch in parquet.iter_batches(columns=columns):
            for row in batch.to_pylist():
                number += 1
                en = normalize_english(row["en"] or "")
                ar = (row["ar"] or "").strip()
                score = row.get("score")
                if not en or not ar:
                    on_bad(f"{path}:{number}", "empty en or ar")
                elif score is not None and not math.isfinite(score):
                    on_bad(f"{path}:{number}", f"score {score!r} is not a finite number")
                else:
                    yield en, (ar, None if score is None else float(score))


def read_memory_file(path: str, on_bad: OnBad) -> Iterator[MemoryEntry]:
    """The entries of one memory file, by its suffix."""
    if path.endswith(".parquet"):
        return read_parquet(path, on_bad)
    return read_tsv(path, on_bad)


class _ReadFile(beam.DoFn):
    def __init__(self):
        self._bad = beam.metrics.Metrics.counter("translate", "memory_bad_entries")
        self._entries = beam.metrics.Metrics.counter("translate", "memory_entries")

    def process(self, path: str):
        bad = 0

        def on_bad(where: str, why: str) -> None:
            nonlocal bad
            bad += 1
            self._bad.inc()
            if bad <= LOGGED_PER_FILE:
                log.warning("%s: memory entry skipped: %s", where, why)

        for entry in read_memory_file(path, on_bad):
            self._entries.inc()
            yield entry
        if bad > LOGGED_PER_FILE:
            log.warning("%s: %d malformed memory entries skipped in all", path, bad)


class ReadMemory(beam.PTransform):
    """The memory at `paths` (one path or several: the manifest's and an earlier run's
    `DIR/translations`) as `(en, (ar, score or None))`, `en` normalised. A file named by two
    paths is read once."""

    def __init__(self, paths: str | Sequence[str]):
        super().__init__()
        self._paths = [paths] if isinstance(paths, str) else list(paths)

    def expand(self, pbegin):
        files = set()
        for path in self._paths:
            found = memory_files(path)
            if not found:
                log.warning("translation memory %s holds no .parquet or .tsv file", path)
            files.update(found)
        files = sorted(files)
        return (
            pbegin
            | "ListFiles" >> beam.Create(files)
            | "OnePerWorker" >> beam.Reshuffle()
            | "ReadFiles" >> beam.ParDo(_ReadFile())
        )


def _entry_hash(keyed: tuple[str, Translation]) -> int:
    en, t = keyed
    text = "\x1f".join((en, t.ar, repr(t.score), repr(t.truncated)))
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


class _CountAndDigest(beam.CombineFn):
    """(rows, digest): an order-free digest of the set, the sum of the rows' hashes."""

    def create_accumulator(self):
        return 0, 0

    def add_input(self, acc, keyed):
        return acc[0] + 1, (acc[1] + _entry_hash(keyed)) % 2**64

    def merge_accumulators(self, accs):
        accs = list(accs)
        return sum(a[0] for a in accs), sum(a[1] for a in accs) % 2**64

    def extract_output(self, acc):
        return acc


def shard_path(output_dir: str, digest: int, index: int, count: int) -> str:
    name = f"translations-{digest:016x}-{index:05d}-of-{count:05d}.parquet"
    return join(output_dir, TRANSLATIONS_DIR, name)


def _shard_of(en: str, count: int) -> int:
    return int(hashlib.sha256(en.encode("utf-8")).hexdigest()[:12], 16) % count


class _WriteShard(beam.DoFn):
    def __init__(self, output_dir: str):
        self._output_dir = output_dir

    def process(self, keyed, plan):
        index, items = keyed
        rows, digest, count = plan
        entries = sorted((item for item in items if item is not None), key=lambda kv: kv[0])
        table = [
            {"en": en, "ar": t.ar, "score": t.score, "truncated": t.truncated} for en, t in entries
        ]
        path = shard_path(self._output_dir, digest, index, count)
        write_bytes(path, table_bytes(table, SCHEMA))
        yield posixpath.basename(path), len(table)


class WriteTranslations(beam.PTransform):
    """`(en, Translation)` → `output_dir/translations/`; returns `(file name, rows)` per shard."""

    def __init__(self, output_dir: str, *, rows_per_file: int = 100_000):
        super().__init__()
        self._output_dir = output_dir
        self._rows_per_file = rows_per_file

    def expand(self, translations):
        per_file = self._rows_per_file
        plan = (
            translations
            | "CountAndDigest" >> beam.CombineGlobally(_CountAndDigest())
            | "Plan" >> beam.Map(lambda acc: (acc[0], acc[1], max(1, math.ceil(acc[0] / per_file))))
        )
        plan_side = beam.pvalue.AsSingleton(plan)
        keyed = translations | "KeyByShard" >> beam.Map(
            lambda kv, p: (_shard_of(kv[0], p[2]), kv), plan_side
        )
        # One empty marker per shard index, so that every shard of the set is written.
        markers = plan | "EveryShard" >> beam.FlatMap(lambda p: [(i, None) for i in range(p[2])])
        return (
            (keyed, markers)
            | "WithMarkers" >> beam.Flatten()
            | "GroupShards" >> beam.GroupByKey()
            | "WriteShards" >> beam.ParDo(_WriteShard(self._output_dir), plan_side)
        )
