"""ReadPairs: the user's own image–caption pairs (`kind: pairs`), from TSV, CSV, Parquet or JSON
Lines files (`.gz` for the text formats), by glob, with a column mapping — img2dataset's
`url_col` / `caption_col`.

The mapping (`columns:`) names the file's column for each role: `caption` (default `caption`),
`url` (default `url`), `path` (an image file relative to `image_root`), `id` (the record's key in
its source; else the URL or path is the key) and `license`. With `image_root` the `path` column
(default `path`) is read and `url` only when mapped; a row with both uses its path.
`language: ar` captions are genuine Arabic (`caption_ar`); `language: en` captions go through
translation like Conceptual Captions (`caption_en`, `caption_origin: translated`).

Formats, by extension with `format: auto`: `.tsv[.gz]` (a header line, then one row a line split
on tabs, no quoting: a caption that begins with `"` keeps it), `.csv[.gz]` (a header line, then
one row a line with CSV quoting; a quoted field holding a newline is not supported: the lines it
spans are `malformed_row` drops), `.jsonl[.gz]` / `.ndjson[.gz]` (one JSON object a line),
`.parquet` (read row group by row group; `input_line` is the row number from 1).

Every data row is one record (`read`; a header line is not one): a pair, or a drop under
`invalid_utf8`, `malformed_row` (a blank line, a column count other than the header's, a JSON
line that is not an object, a mapped value that is not text), `empty_caption`, `no_image_url`
(neither an http(s) URL nor a path), `unsafe_image_path` (an absolute path or one climbing out of
`image_root`) or `missing_image_file`. A file whose header (or, for JSON Lines, first object; for
Parquet, schema) lacks a mapped column stops the run with an error naming the file and line:
every row of it would be lost to a typo in the manifest.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator, Mapping, Set
from dataclasses import dataclass
from typing import Any

from apache_beam.io.filesystems import FileSystems

from pipeline.config import require
from pipeline.records import GENUINE, TRANSLATED, Drop, Pair, pair_id
from pipeline.sources.base import PER_SOURCE, KindProfile, Provenance, SourceKind
from pipeline.sources.files import ReadFiles, list_folder, numbered_lines
from pipeline.steps import Reasons
from pipeline.text import has_lone_surrogate, normalize_caption, normalize_english


@dataclass(frozen=True)
class PairsSource:
    """The user's own pairs: files by glob, a column mapping, and the captions' language."""

    paths: tuple[str, ...]
    language: str  # ar: genuine Arabic captions; en: English, translated
    columns: tuple[tuple[str, str], ...] = ()  # role (url, caption, path, id, license) → column
    format: str = "auto"  # auto (by extension) | tsv | csv | parquet | jsonl
    image_root: str | None = None  # the folder the `path` column is relative to
    kind: str = "pairs"
    name: str = "pairs"


REASONS = Reasons(
    "pairs",
    {
        "invalid_utf8": "the line is not valid UTF-8, or a field holds a lone surrogate",
        "malformed_row": "a blank line, a column count other than the header's, a JSON line that "
        "is not an object, or a mapped value that is not text",
        "empty_caption": "the caption column is empty",
        "no_image_url": "neither an http(s) URL nor an image path",
        "unsafe_image_path": "the path is absolute or climbs out of image_root (`..`)",
        "missing_image_file": "the path is not a file in image_root",
    },
    catch_all="pairs_row_error",
)

ROLES = ("url", "caption", "path", "id", "license")
LANGUAGES = ("ar", "en")
FORMATS = ("auto", "tsv", "csv", "parquet", "jsonl")
_EXTENSIONS = {
    ".tsv": "tsv",
    ".tsv.gz": "tsv",
    ".csv": "csv",
    ".csv.gz": "csv",
    ".jsonl": "jsonl",
    ".jsonl.gz": "jsonl",
    ".ndjson": "jsonl",
    ".ndjson.gz": "jsonl",
    ".parquet": "parquet",
}


def column_map(source: PairsSource) -> dict[str, str]:
    """Role → the file's column, for every role this source reads (defaults filled in)."""
    given = dict(source.columns)
    roles = {"caption": given.get("caption", "caption")}
    if "url" in given or source.image_root is None:
        roles["url"] = given.get("url", "url")
    if source.image_root is not None:
        roles["path"] = given.get("path", "path")
    for role in ("id", "license"):
        if role in given:
            roles[role] = given[role]
    return roles


def file_format(source: PairsSource, path: str) -> str:
    """The file's format: the source's `format`, or (auto) its extension's; ValueError naming
    the file when neither says."""
    lowered = path.lower()
    if source.format != "auto":
        if source.format == "parquet" and lowered.endswith(".gz"):
            raise ValueError(f"{path}: a Parquet file cannot be read gzipped (.gz)")
        return source.format
    for extension, fmt in _EXTENSIONS.items():
        if lowered.endswith(extension):
            return fmt
    known = ", ".join(_EXTENSIONS)
    raise ValueError(f"{path}: cannot tell the format from its extension ({known}; or set format)")


def safe_relative(value: str) -> str | None:
    """`value` as a path inside image_root (`/` separated), or None when it is absolute, a URL,
    or climbs out (`..`)."""
    value = value.replace("\\", "/")
    if value.startswith("/") or "://" in value or (len(value) > 1 and value[1] == ":"):
        return None
    parts = [p for p in value.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return "/".join(parts)


def _text(value: Any, role: str) -> str | None:
    """A mapped value as text (None when absent); ValueError when it is not text."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8")  # UnicodeDecodeError: invalid_utf8
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if role in ("id", "license") and number:
        return str(value)
    if not isinstance(value, str):
        raise TypeError(f"{role} is {type(value).__name__}, not text")
    return value


def row_record(
    row: Mapping[str, Any],
    roles: Mapping[str, str],
    source: PairsSource,
    path: str,
    line: int,
    image_names: Set[str] | None,
) -> Pair | Drop:
    """One row (column → value) as a `Pair` or a `Drop`."""
    try:
        values = {role: _text(row.get(column), role) for role, column in roles.items()}
    except UnicodeDecodeError as err:
        return Drop(source.name, "invalid_utf8", path, line, str(err)[:200])
    except TypeError as err:
        return Drop(source.name, "malformed_row", path, line, str(err)[:200])
    for role, value in values.items():
        if value is not None and has_lone_surrogate(value):
            # A JSON escape such as \ud800: no UTF-8 file can hold it, nor the pair's id.
            return Drop(source.name, "invalid_utf8", path, line, f"a lone surrogate in {role}")
    raw_caption = values["caption"] or ""
    english = source.language == "en"
    caption = normalize_english(raw_caption) if english else normalize_caption(raw_caption)
    url = (values.get("url") or "").strip()
    if not caption:
        return Drop(source.name, "empty_caption", path, line, image_url=url or None)
    # What a rejected row shows of a row dropped for its image (`output.rejected`).
    shown = {"caption_en": caption} if english else {"caption_ar": caption}
    relative = (values.get("path") or "").strip()
    local_path = None
    if relative:
        safe = safe_relative(relative)
        if safe is None:
            return Drop(source.name, "unsafe_image_path", path, line, relative[:200], **shown)
        if image_names is None or safe not in image_names:
            return Drop(source.name, "missing_image_file", path, line, safe[:200], **shown)
        local_path = FileSystems.join(source.image_root, *safe.split("/"))
        url = ""
    elif not url.lower().startswith(("http://", "https://")):
        return Drop(source.name, "no_image_url", path, line, url[:200] or None, **shown)
    key = (values.get("id") or "").strip() or url or relative
    return Pair(
        id=pair_id(source.kind, key, caption),
        source=source.kind,
        source_name=source.name,
        source_key=key,
        caption_ar="" if english else caption,
        caption_origin=TRANSLATED if english else GENUINE,
        caption_en=caption if english else None,
        image_url=url or None,
        image_path=local_path,
        license=(values.get("license") or "").strip() or None,
        input_file=path,
        input_line=line,
    )


def _record(row, roles, source: PairsSource, path: str, line: int, names) -> Pair | Drop:
    """`row_record`, with a row that fails unexpectedly counted under the catch-all."""
    try:
        return row_record(row, roles, source, path, line, names)
    except Exception as err:  # noqa: BLE001 - one bad row is counted, never fatal
        detail = f"{type(err).__name__}: {err}"[:300]
        return Drop(source.name, REASONS.catch_all, path, line, detail)


def _require_columns(present, roles: Mapping[str, str], path: str, line: int) -> None:
    missing = [c for c in roles.values() if c not in present]
    if missing:
        raise ValueError(
            f"{path}:{line}: missing mapped column(s) {', '.join(missing)} "
            f"(the file has: {', '.join(map(str, present))[:300]})"
        )


def _split(text: str, fmt: str) -> list[str]:
    if fmt == "tsv":
        return text.split("\t")
    [fields] = csv.reader([text], strict=True)  # csv.Error on an unclosed quote
    return fields


def _text_lines(numbered, source: PairsSource, path: str) -> Iterator[tuple[int, str] | Drop]:
    """Each data line as `(line, text)`, or its drop: bytes that are not UTF-8, a blank line."""
    for line, raw in numbered:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            yield Drop(source.name, "invalid_utf8", path, line, str(err)[:200])
            continue
        if not text.strip():
            yield Drop(source.name, "malformed_row", path, line, "blank line")
            continue
        yield line, text


def _delimited_rows(stream, path: str, fmt: str, roles, source, names) -> Iterator[Pair | Drop]:
    lines = numbered_lines(stream, path)
    first = next(lines, None)
    if first is None:
        return
    line, raw = first
    try:
        header = [c.strip() for c in _split(raw.decode("utf-8"), fmt)]
    except (UnicodeDecodeError, csv.Error) as err:
        raise ValueError(f"{path}:{line}: cannot read the header line ({err})") from err
    _require_columns(header, roles, path, line)
    for item in _text_lines(lines, source, path):
        if isinstance(item, Drop):
            yield item
            continue
        line, text = item
        try:
            fields = _split(text, fmt)
        except csv.Error as err:
            yield Drop(source.name, "malformed_row", path, line, f"CSV: {err}"[:200])
            continue
        if len(fields) != len(header):
            detail = f"{len(fields)} columns, the header has {len(header)}"
            yield Drop(source.name, "malformed_row", path, line, detail)
            continue
        yield _record(dict(zip(header, fields, strict=True)), roles, source, path, line, names)


def _json_rows(stream, path: str, roles, source, names) -> Iterator[Pair | Drop]:
    checked = False
    for item in _text_lines(numbered_lines(stream, path), source, path):
        if isinstance(item, Drop):
            yield item
            continue
        line, text = item
        try:
            row = json.loads(text)
        except json.JSONDecodeError as err:
            yield Drop(source.name, "malformed_row", path, line, f"JSON: {err}"[:200])
            continue
        if not isinstance(row, dict):
            yield Drop(source.name, "malformed_row", path, line, f"JSON {type(row).__name__}")
            continue
        if not checked:
            # The first object stands for a header: a mapping that names no key of it is a typo.
            _require_columns(list(row), roles, path, line)
            checked = True
        yield _record(row, roles, source, path, line, names)


def _parquet_rows(stream, path: str, roles, source, names) -> Iterator[Pair | Drop]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(stream)
    except Exception as err:  # noqa: BLE001 - any pyarrow failure: not a readable Parquet file
        raise ValueError(f"{path}: not a readable Parquet file ({err})") from err
    _require_columns(parquet.schema_arrow.names, roles, path, 1)
    columns = sorted(set(roles.values()))
    number = 0
    for group in range(parquet.num_row_groups):
        try:
            table = parquet.read_row_group(group, columns=columns)
        except Exception as err:  # noqa: BLE001 - a corrupt row group: what follows is unreadable
            raise ValueError(
                f"{path}:{number + 1}: cannot read the file past this row (row group {group}: "
                f"{err})"
            ) from err
        for row in table.to_pylist():
            number += 1
            yield _record(row, roles, source, path, number, names)


def parse_pairs(
    stream, path: str, source: PairsSource, image_names: Set[str] | None = None
) -> Iterator[Pair | Drop]:
    """Every row of one file (a binary stream) as a `Pair` or a `Drop`; `image_names` lists
    `image_root` (relative paths) when it is set.

    Raises ValueError naming the file (and line) when the file cannot be read, its format cannot
    be told, or it lacks a mapped column.
    """
    fmt = file_format(source, path)
    roles = column_map(source)
    if fmt == "parquet":
        rows = _parquet_rows(stream, path, roles, source, image_names)
    elif fmt == "jsonl":
        rows = _json_rows(stream, path, roles, source, image_names)
    else:
        rows = _delimited_rows(stream, path, fmt, roles, source, image_names)
    yield from rows


def _parse_with_folder(stream, path: str, source: PairsSource) -> Iterator[Pair | Drop]:
    names = (
        list_folder(source.image_root, recursive=True) if source.image_root is not None else None
    )
    return parse_pairs(stream, path, source, names)


def count_records(stream, path: str, source: PairsSource) -> Iterator[Pair | Drop]:
    """The records of one file, for `estimate`: against image_root when it is a local folder."""
    root = source.image_root
    names = list_folder(root, recursive=True) if root is not None and os.path.isdir(root) else None
    return parse_pairs(stream, path, source, names)


class ReadPairs(ReadFiles):
    """Reads the source's pair files; returns `(pairs, dropped)`."""

    def __init__(self, source: PairsSource):
        super().__init__(source.paths, _parse_with_folder, source)


def check_source(source: PairsSource, where: str) -> None:
    """What the manifest checks beyond types."""
    require(source.language in LANGUAGES, f"{where}.language", "one of ar, en")
    require(source.format in FORMATS, f"{where}.format", f"one of {', '.join(FORMATS)}")
    for role, _column in source.columns:
        require(role in ROLES, f"{where}.columns.{role}", f"not a role (one of {', '.join(ROLES)})")
    given = dict(source.columns)
    require(
        "path" not in given or source.image_root is not None,
        f"{where}.columns.path",
        "local image paths need image_root (the folder they are relative to)",
    )


PROVENANCE = Provenance(
    hub_source="original",
    licence=(
        "The builder's own pairs: the terms of the data given (the `license` column, where the"
        " manifest maps one)."
    ),
    citation="",
)


KIND = SourceKind(
    kind="pairs",
    provenance=PROVENANCE,
    config=PairsSource,
    reader=ReadPairs,
    language=PER_SOURCE,
    translated_when=lambda source: source.language == "en",
    reasons=REASONS,
    path_keys=("paths", "image_root"),
    folder_keys=("image_root",),
    check=check_source,
    count=count_records,
    profile=KindProfile(
        1.0,
        1.0,
        "cc_image_bytes",
        "the user's own data: every row assumed a good pair with a fetchable web image "
        "(images sized like Conceptual Captions')",
    ),
)
