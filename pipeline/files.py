"""File helpers for local folders and Beam filesystem URLs (`gs://`, `s3://`) alike: paths,
whole-file writes that readers never see half-done, and Parquet files from rows.

Every stage that writes files (the writer, the translation memory, the report, the image store)
uses these, so a local run and a run into a bucket take the same paths.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
from collections.abc import Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems


def is_remote(path: str) -> bool:
    """True for a filesystem URL (`gs://bucket/x`), False for a local path."""
    return "://" in path


def join(base: str, *parts: str) -> str:
    """A path under `base`, for local folders and filesystem URLs alike."""
    return posixpath.join(base, *parts) if is_remote(base) else os.path.join(base, *parts)


@contextlib.contextmanager
def replacing(path: str) -> Iterator:
    """A file to write that appears at `path` only once whole: it is written under a temporary
    name and renamed, so readers never see half a file."""
    tmp = join(posixpath.dirname(path), "." + posixpath.basename(path) + ".tmp")
    with FileSystems.create(tmp) as f:
        yield f
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([tmp], [path])


def write_bytes(path: str, data: bytes) -> None:
    """Write `data` to `path` through a temporary name, so readers never see half a file."""
    with replacing(path) as f:
        f.write(data)


def read_text(path: str) -> str | None:
    """The UTF-8 text of the file at `path`, or None when there is none."""
    if not FileSystems.exists(path):
        return None
    with FileSystems.open(path) as f:
        return f.read().decode("utf-8")


def write_table(sink, row_groups: Iterable[list[dict]], schema: pa.Schema) -> None:
    """A Parquet file of `row_groups` (lists of rows) into `sink`. An empty one has no row group
    at all: `datasets` fails on a row group of zero rows ("BatchSize must be greater than 0")
    but reads a file with none."""
    with pq.ParquetWriter(sink, schema, compression="zstd") as writer:
        for rows in row_groups:
            if rows:
                writer.write_table(pa.Table.from_pylist(rows, schema=schema))


def table_bytes(rows: list[dict], schema: pa.Schema) -> bytes:
    """A Parquet file of `rows` (one row group), as bytes."""
    sink = pa.BufferOutputStream()
    write_table(sink, [rows], schema)
    return sink.getvalue().to_pybytes()
