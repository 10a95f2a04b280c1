"""The WebDataset layout of the output (`output.format: webdataset`): a shard is a tar of samples,
one a pair, each named by the pair's id: `KEY.jpg` (the stored image, with its encoding's
extension: `.jpg`, `.png` or `.webp`; no member when images are not fetched), `KEY.txt`
(caption_ar, UTF-8) and `KEY.json` (every column but `image`, with the values a Parquet shard
holds: float32 columns are the float32 value, NaN and infinities are null).

A tar is written with `tarfile` in stream mode, a row group at a time (`pipeline.write` reads
the images back a row group at a time), so writing a shard holds one row group's images. Every
member has the same mtime, owner and mode, and the samples come in the writer's order (by id),
so the same pairs give the same bytes. WebDataset readers split a member's name at the first dot
of its basename and group consecutive members by what comes before: an id is hex, without dots,
and a key must not repeat. Ids do repeat when one record is read twice and both copies survive
dedupe (the `pairs` source's `id` column, given twice with different images): the second copy's
key is `ID_2`, the third's `ID_3`; the json keeps the id itself.
"""

from __future__ import annotations

import io
import json
import math
import tarfile
from collections.abc import Iterable, Iterator, Sequence

import pyarrow as pa

from pipeline.records import IMAGE_COLUMN, SCHEMA

TEXT = "txt"  # the member holding caption_ar
META = "json"  # the member holding every column but the image
# The columns of the json member, in the Parquet shard's order and with its types.
JSON_SCHEMA = pa.schema([f for f in SCHEMA if f.name != IMAGE_COLUMN])
MTIME = 0  # every member's modification time: a build's date would change the bytes


def _json_safe(value):
    # json.dumps writes NaN and Infinity, which are not JSON: most readers refuse them.
    return None if isinstance(value, float) and not math.isfinite(value) else value


def sample_members(key: str, row: dict, described: dict) -> list[tuple[str, bytes]]:
    """The (name, bytes) members of one sample: the image of `row` (a `SCHEMA` row, its image
    read back), its caption, and `described` (the row as `JSON_SCHEMA` values) as JSON."""
    members = []
    image = row[IMAGE_COLUMN]
    if image is not None:
        extension = image["path"].rsplit(".", 1)[-1]
        members.append((f"{key}.{extension}", image["bytes"]))
    members.append((f"{key}.{TEXT}", row["caption_ar"].encode("utf-8")))
    text = json.dumps({k: _json_safe(v) for k, v in described.items()}, ensure_ascii=False)
    members.append((f"{key}.{META}", text.encode("utf-8")))
    return members


def _member(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = MTIME
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def write_samples(sink, row_groups: Iterable[list[dict]]) -> None:
    """A tar of the samples of `row_groups` (lists of `SCHEMA` rows with their images, in the
    shard's order) streamed into `sink`. An empty one is the end-of-archive blocks alone."""
    previous, seen = None, 0  # the last id, and how many times in a row it came
    with tarfile.open(fileobj=sink, mode="w|", format=tarfile.USTAR_FORMAT) as tar:
        for rows in row_groups:
            # Through Arrow, so that the json holds the values a Parquet shard would.
            described = pa.Table.from_pylist(rows, schema=JSON_SCHEMA).to_pylist() if rows else []
            for row, values in zip(rows, described, strict=True):
                seen = seen + 1 if row["id"] == previous else 1
                previous = row["id"]
                key = previous if seen == 1 else f"{previous}_{seen}"
                for name, data in sample_members(key, row, values):
                    tar.addfile(_member(name, len(data)), io.BytesIO(data))


def read_samples(f, wanted: Iterable[str] | None = None) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {extension: bytes}) of each sample of the tar read from `f`, streamed. `wanted`:
    the members to read, `txt`, `json` and `image` (whatever its extension); None: all. The
    others are skipped unread."""
    kinds = None if wanted is None else set(wanted)
    key, sample = None, {}
    with tarfile.open(fileobj=f, mode="r|") as tar:
        for member in tar:
            if not member.isfile():
                continue
            name, _, extension = member.name.rsplit("/", 1)[-1].partition(".")
            if key is not None and name != key:
                yield key, sample
                sample = {}
            key = name
            kind = extension if extension in (TEXT, META) else IMAGE_COLUMN
            if kinds is None or kind in kinds:
                sample[extension] = tar.extractfile(member).read()
    if key is not None:
        yield key, sample


def read_table(f, columns: Sequence[str]) -> pa.Table:
    """The `columns` of the tar shard read from `f` as a table of `SCHEMA` types, `image`
    (when asked for) the struct a Parquet shard holds; images are read only when asked for."""
    with_images = IMAGE_COLUMN in columns
    rows = []
    for _, sample in read_samples(f, (META, IMAGE_COLUMN) if with_images else (META,)):
        row = json.loads(sample.pop(META))
        if with_images:
            images = list(sample.items())
            row[IMAGE_COLUMN] = (
                {"bytes": images[0][1], "path": f"{row['id']}.{images[0][0]}"} if images else None
            )
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=pa.schema([SCHEMA.field(c) for c in columns]))


def hf_features(image_extension: str | None):
    """The `datasets.Features` the Hugging Face `webdataset` builder yields for these shards:
    the image (`datasets.Image`, named by its extension; none when not fetched), the caption,
    the json as a struct of `JSON_SCHEMA`, and the builder's own `__key__` and `__url__`."""
    import datasets  # heavy; only the driver and the writer need it

    features = {}
    if image_extension:
        features[image_extension] = datasets.Image()
    features[TEXT] = datasets.Value("string")
    features[META] = dict(datasets.Features.from_arrow_schema(JSON_SCHEMA))
    features["__key__"] = datasets.Value("string")
    features["__url__"] = datasets.Value("string")
    return datasets.Features(features)
