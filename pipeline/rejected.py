"""The dropped records as rows: `output.rejected` writes them to `DIR/rejected/`.

One row per dropped record: the build asks readers that count some drops in bulk for one `Drop` a
record (`pipeline.build.itemized`: WIT's rows of other languages), so every row's `count` is 1 and
per (source, reason) the rows are `stats.json`'s dropped count (a bulk `Drop` written here would
still be one row whose `count` says how many records it stands for). `output.rejected: N` keeps at
most N rows per (source, reason): the first by `sort_key` (records that never became pairs by file
and line, pairs by id), so the same inputs give the same rows on any runner. Rows are spread over
`rejected-XXXXX-of-NNNNN.parquet` shards by a hash of their sort key and sorted inside a shard, as
the data shards are (`pipeline.write`), and are committed with them. `datasets` reads them as the
card's `rejected` config; the `default` config is the kept pairs alone.
"""

from __future__ import annotations

import hashlib
import re

import apache_beam as beam
import pyarrow as pa

from pipeline.files import join, table_bytes, write_bytes
from pipeline.records import Column, Drop

REJECTED_DIR = "rejected"
# The names of rejected shards and of their temporary files: the only files of `rejected/` a run
# replaces or deletes.
SHARD_NAME = re.compile(r"\.?rejected-\d{5}-of-\d{5}\.parquet(?:\.tmp)?")
# The card's config of the rejected rows (`pipeline.write.dataset_card`).
CONFIG = {
    "config_name": "rejected",
    "data_files": [{"split": "train", "path": f"{REJECTED_DIR}/rejected-*.parquet"}],
}

COLUMNS = (
    Column("id", pa.string(), "the pair's id; null for a record that never became a pair"),
    Column("source", pa.string(), "the manifest kind it came from"),
    Column("source_name", pa.string(), "the source's key in stats.json (kind, or kind#2)"),
    Column(
        "stage",
        pa.string(),
        "the stage that dropped it: the source kind (its reader), translate, clean, langid, "
        "images, dedupe, scoring or score_filter",
    ),
    Column("reason", pa.string(), "the drop reason, as counted in stats.json"),
    Column("detail", pa.string(), "what the stage said (dedupe's duplicate: the survivor's id)"),
    Column(
        "count",
        pa.int64(),
        "the input records the row stands for: 1 (readers drop one record at a time when"
        " rejected rows are asked for)",
    ),
    Column("caption_ar", pa.string(), "the Arabic caption, as far as the record got"),
    Column("caption_en", pa.string(), "the English original of a translated source's record"),
    Column("image_url", pa.string(), "where the image came from"),
    Column("input_file", pa.string(), "the input file"),
    Column("input_line", pa.int64(), "the line (or annotation index) in that file"),
)
SCHEMA = pa.schema([(c.name, c.type) for c in COLUMNS])
# The Drop fields a row is ordered by; every field, so that two rows are only ever tied when equal.
_ORDER = (
    "source_name",
    "reason",
    "pair_id",
    "input_file",
    "input_line",
    "detail",
    "stage",
    "count",
    "caption_ar",
    "caption_en",
    "image_url",
)


def shard_name(index: int, count: int) -> str:
    return f"rejected-{index:05d}-of-{count:05d}.parquet"


def is_shard(name: str) -> bool:
    """A rejected shard of some run, or the temporary name of one; nothing else is ours."""
    return SHARD_NAME.fullmatch(name) is not None


def sort_key(dropped: Drop) -> tuple:
    """The order of rows: by source and reason, then id (none first: a reader's drops), file,
    line and the rest; a missing value before any other."""
    return tuple(
        (0, "") if (value := getattr(dropped, name)) is None else (1, value) for name in _ORDER
    )


def shard_of(dropped: Drop, count: int) -> int:
    digest = hashlib.sha256(repr(sort_key(dropped)).encode("utf-8", "backslashreplace"))
    return int(digest.hexdigest()[:12], 16) % count


def to_row(dropped: Drop) -> dict:
    """A `Drop` as one row of `SCHEMA`."""
    return {
        "id": dropped.pair_id,
        "source": dropped.source_name.split("#", 1)[0],
        "source_name": dropped.source_name,
        "stage": dropped.stage,
        "reason": dropped.reason,
        "detail": dropped.detail,
        "count": dropped.count,
        "caption_ar": dropped.caption_ar,
        "caption_en": dropped.caption_en,
        "image_url": dropped.image_url,
        "input_file": dropped.input_file,
        "input_line": dropped.input_line,
    }


def _reason_key(dropped: Drop) -> tuple[tuple[str, str], Drop]:
    return (dropped.source_name, dropped.reason), dropped


class SelectRejected(beam.PTransform):
    """The drops to write: all (`limit` True), or the first `limit` by `sort_key` of each
    (source, reason)."""

    def __init__(self, limit: bool | int):
        super().__init__()
        if limit is False or (not isinstance(limit, bool) and limit < 1):
            raise ValueError(f"limit must be true or a positive number, got {limit!r}")
        self._limit = limit

    def expand(self, drops):
        if self._limit is True:
            return drops
        return (
            drops
            | "ByReason" >> beam.Map(_reason_key)
            | "FirstPerReason" >> beam.combiners.Top.PerKey(self._limit, sort_key, reverse=True)
            | "Rows" >> beam.FlatMap(lambda kv: kv[1]).with_output_types(Drop)
        )


_CODER = beam.coders.registry.get_coder(Drop)


def _by_shard(dropped: Drop, count: int) -> tuple[int, bytes]:
    # Encoded, as the writer's pairs: the local runner holds a GroupByKey's values decoded.
    return shard_of(dropped, count), _CODER.encode(dropped)


class _WriteShard(beam.DoFn):
    def __init__(self, staging: str):
        self._staging = staging

    def process(self, keyed, count):
        index, items = keyed
        drops = sorted((_CODER.decode(b) for b in items if b), key=sort_key)
        data = table_bytes([to_row(d) for d in drops], SCHEMA)
        path = join(self._staging, REJECTED_DIR, shard_name(index, count))
        write_bytes(path, data)
        yield path, len(drops), hashlib.sha256(data).hexdigest(), sum(d.count for d in drops)


class WriteRejected(beam.PTransform):
    """Drops → their rows in `staging/rejected/` (one shard per `rows_per_shard` rows, at least
    one, empty or not); returns one `(path, rows, sha256, records)` per shard, `records` the
    sum of its rows' `count`. `limit`: `output.rejected`."""

    def __init__(self, staging: str, *, rows_per_shard: int, limit: bool | int = True):
        super().__init__()
        self._staging = staging
        self._rows_per_shard = rows_per_shard
        self._limit = limit

    def expand(self, drops):
        per_shard = self._rows_per_shard
        chosen = drops | "Select" >> SelectRejected(self._limit)
        count = (
            chosen
            | "Count" >> beam.combiners.Count.Globally()
            | "Shards" >> beam.Map(lambda n: max(1, -(-n // per_shard)))
        )
        count_side = beam.pvalue.AsSingleton(count)
        keyed = chosen | "KeyByShard" >> beam.Map(_by_shard, count_side).with_output_types(
            tuple[int, bytes]
        )
        markers = count | "EveryShard" >> beam.FlatMap(
            lambda n: [(i, b"") for i in range(n)]
        ).with_output_types(tuple[int, bytes])
        return (
            (keyed, markers)
            | "WithMarkers" >> beam.Flatten()
            | "GroupShards" >> beam.GroupByKey()
            | "WriteShards" >> beam.ParDo(_WriteShard(self._staging), count_side)
        )
