"""What every file-based reader shares: opening a matched file, its lines, folder listings, and
the `ReadFiles` transform that turns files into `(pairs, dropped)`.

A reader is a pure function `parse(stream, path, source)` yielding one `Pair` or `Drop` per
record; `ReadFiles` matches the source's globs, hands each file to that function whole, and routes
the drops to the `dropped` output.

Every reader takes its text through `physical_lines`, `numbered_lines` or `read_all`, which are
where two things every text file may hold are dealt with once:
- a UTF-8 byte-order mark (`EF BB BF`, written by Windows editors and some exporters) at the start
  of the file is skipped, so it never becomes part of a header, a key or a caption;
- a file that cannot be read to its end (a truncated or corrupt `.gz`) raises ValueError naming
  the file and the line it could not be read past (`FILE:LINE: cannot read the file past this
  line (…)`), since what follows that line cannot be counted; `ParseFiles` names the file of
  any such error a reader lets through.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, BinaryIO

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipeline.records import DROPPED, Drop, Pair, SpreadPairs
from pipeline.text import has_lone_surrogate

Parse = Callable[[BinaryIO, str, Any], Iterable[Pair | Drop]]

# A truncated or corrupt file fails with one of these while it is read.
READ_ERRORS = (OSError, EOFError, zlib.error)
# The UTF-8 byte-order mark, skipped at the start of a file.
BOM = b"\xef\xbb\xbf"


class RawReader(io.RawIOBase):
    """Any object with `read(n)` (Beam's `CompressedFile` has no more) as a raw binary stream.

    It reads with the stream's `read1` where there is one (a `GzipFile`, a local file): what one
    read of the underlying data gives, not a loop until the buffer is full, so a truncated `.gz`
    fails near where it was cut and the lines before it are read and counted first (with
    `read`, a file cut within the first megabyte would fail before its first line).
    """

    def __init__(self, stream):
        self._stream = stream
        self._read = getattr(stream, "read1", stream.read)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


@contextlib.contextmanager
def open_matched(readable: fileio.ReadableFile) -> Iterator[BinaryIO]:
    """A matched file as a binary stream, `.gz` decompressed by Python's gzip.

    Not Beam's decompressor: Beam's ends a truncated file quietly, as if it were complete, where
    gzip raises, and the run stops naming the file.
    """
    path = readable.metadata.path
    with readable.open(compression_type=CompressionTypes.UNCOMPRESSED) as raw:
        yield gzip.GzipFile(fileobj=raw) if path.endswith(".gz") else raw


def physical_lines(stream, path: str, what: str = "file") -> Iterator[tuple[int, bytes]]:
    """(line number from 1, the line's bytes with its line end) for every line; a byte-order mark
    at the start of the file is left out.

    Lines end only at `\\n`: a stray `\\r` or other Unicode line break inside a caption stays in
    it. A file that cannot be read to its end raises ValueError naming the file and the line
    (`FILE:LINE: cannot read the <what> past this line (…)`), since what follows that line
    cannot be counted.
    """
    lines = io.BufferedReader(RawReader(stream), buffer_size=1 << 20)
    number = 0
    while True:
        try:
            line = lines.readline()
        except READ_ERRORS as err:
            raise ValueError(
                f"{path}:{number + 1}: cannot read the {what} past this line ({err})"
            ) from err
        if not line:
            return
        number += 1
        if number == 1 and line.startswith(BOM):
            line = line[len(BOM) :]
            if not line:
                return  # the mark was all the file held
        yield number, line


def numbered_lines(stream, path: str, what: str = "file") -> Iterator[tuple[int, bytes]]:
    """(line number from 1, the line's bytes without `\\n` or `\\r\\n`) for every line, as
    `physical_lines` reads them (a byte-order mark left out, a read error naming FILE:LINE)."""
    for number, line in physical_lines(stream, path, what):
        if line.endswith(b"\n"):
            line = line[:-2] if line.endswith(b"\r\n") else line[:-1]
        yield number, line


def read_all(stream, path: str) -> bytes:
    """The whole file without a leading byte-order mark, or ValueError naming it when it cannot
    be read to its end."""
    try:
        data = stream.read()
    except READ_ERRORS as err:
        raise ValueError(f"{path}: cannot read the file to its end ({err})") from err
    return data[len(BOM) :] if data.startswith(BOM) else data


def list_folder(folder: str, *, recursive: bool = False) -> frozenset[str]:
    """The names of the files directly in `folder` (local or any Beam filesystem), listed once;
    with `recursive`, every file under it as a `/`-separated path relative to it.

    One listing instead of one existence check per record: 8,091 Flickr8K images or 82,783 COCO
    images would otherwise cost as many `stat` calls, or as many requests on a remote filesystem.
    """
    try:
        if "://" not in folder:
            if not recursive:
                return frozenset(
                    entry.name
                    for entry in os.scandir(folder)
                    if entry.is_file(follow_symlinks=True)
                )
            names = set()
            for root, _dirs, files in os.walk(folder):
                rel = os.path.relpath(root, folder).replace(os.sep, "/")
                names.update(f if rel == "." else f"{rel}/{f}" for f in files)
            return frozenset(names)
        prefix = folder.rstrip("/") + "/"
        [result] = FileSystems.match([prefix + ("**" if recursive else "*")])
        names = (meta.path[len(prefix) :] for meta in result.metadata_list)
        return frozenset(name for name in names if name and (recursive or "/" not in name))
    except Exception as err:  # noqa: BLE001 - any filesystem failure: the folder cannot be read
        raise ValueError(f"{folder}: cannot list the image folder ({err})") from err


def storable(record: Pair | Drop) -> Pair | Drop:
    """`record` as Beam and Parquet can store it. A pair with a lone surrogate in any text field
    (a JSON escape such as `\\ud800` in a URL or title; captions are cleaned of them by
    normalisation) is its `invalid_utf8` drop, naming the field; a drop's own text has them
    escaped. Encoding either as it is would kill the run."""
    if isinstance(record, Pair):
        for name, value in zip(record._fields, record, strict=True):
            if isinstance(value, str) and has_lone_surrogate(value):
                dropped = Drop(
                    record.source_name,
                    "invalid_utf8",
                    record.input_file,
                    record.input_line,
                    f"a lone surrogate in {name}",
                    pair_id=record.id,
                    caption_ar=record.caption_ar or None,
                    caption_en=record.caption_en,
                    image_url=record.image_url,
                )
                return storable(dropped)
        return record
    escaped = {
        name: _escaped(value)
        for name, value in zip(record._fields, record, strict=True)
        if isinstance(value, str) and has_lone_surrogate(value)
    }
    return record._replace(**escaped) if escaped else record


def _escaped(text: str | None) -> str | None:
    if text is None:
        return None
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def route(records: Iterable[Pair | Drop]) -> Iterator[Any]:
    """A reader's records as a DoFn's outputs: pairs on the main output, drops on `dropped`,
    each made storable first (`storable`)."""
    for record in records:
        record = storable(record)
        if isinstance(record, Drop):
            yield beam.pvalue.TaggedOutput(DROPPED, record)
        else:
            yield record


class ParseFiles(beam.DoFn):
    """Parses each matched file whole with `parse`; drops go to the `dropped` output."""

    def __init__(self, parse: Parse, source: Any):
        self._parse = parse
        self._source = source

    def process(self, readable: fileio.ReadableFile):
        path = readable.metadata.path
        try:
            with open_matched(readable) as stream:
                yield from route(self._parse(stream, path, self._source))
        except READ_ERRORS as err:
            # The readers name the line; this names the file for a read error one lets through.
            raise ValueError(f"{path}: {type(err).__name__}: {err}") from err


class ReadFiles(beam.PTransform):
    """Reads every file matching `patterns` with `parse`; returns `(pairs, dropped)`.

    A file is parsed whole by one worker, so line numbers are exact; the pairs are reshuffled so
    later stages spread over all workers.
    """

    def __init__(self, patterns: Iterable[str], parse: Parse, source: Any):
        super().__init__()
        self._patterns = list(patterns)
        self._parse = parse
        self._source = source

    def expand(self, pbegin):
        parsed = (
            pbegin
            | "Patterns" >> beam.Create(self._patterns)
            | "Match" >> fileio.MatchAll()
            | "Open" >> fileio.ReadMatches()
            | "Parse"
            >> beam.ParDo(ParseFiles(self._parse, self._source)).with_outputs(DROPPED, main="pairs")
        )
        pairs = parsed.pairs | "Spread" >> SpreadPairs()
        return pairs, parsed[DROPPED]
