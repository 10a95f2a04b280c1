"""ReadWit: WIT TSV shards (`.tsv`, `.tsv.gz`) to genuine Arabic pairs.

WIT shards are tab-separated with a header and CSV quoting: a field holding a newline, tab or
quote is wrapped in `"…"`, so rows are read with the csv module (never split on lines) and with
its field size limit lifted (context fields exceed 131,072 characters). Booleans are lowercase
`true`/`false`.

**Every line counted, runaway quotes.** A field that merely starts with a `"` (a caption written
by a tool that does not quote) opens a quoted field in CSV, and that field runs on over line ends
until some later quote closes it, swallowing the rows in between. So the reader reads the
physical lines itself and hands them to the csv module one by one, knowing which lines each
record came from, and judges every record:
- it is a row when it has the header's column count and, if it spans several lines, none of the
  lines after its first looks like the start of a row (a language code, then http(s) page and
  image URLs, in the header's columns): a genuine quoted newline sits inside a description, a
  runaway quote swallows whole rows. A record read from more than `MAX_RECORD_LINES` lines is a
  runaway whatever it holds.
- When it is not a row (or the csv module raised on it), its first line, where the runaway quote
  opened, is read again, each reading judged the same way, the first row found kept:
  1. with every field of the line that starts with a quote but is not a well-formed quoted field
     taken literally, one such field at a time (the field then ends at the next tab, while a
     well-formed multi-line field later on the line still spans its lines); a field holding a
     carriage return, which the csv module refuses outside quotes, is taken literally too;
  2. as plain tab-separated text, the line alone (a well-formed quoted field unquoted, any other
     field as it is).
  A row found this way keeps the stray quote in its caption. When no reading gives a row, that
  line alone is dropped (`wrong_column_count`, or `malformed_row` when the csv module raised),
  and the lines after it are read again from the next line on, so the rows a runaway quote
  swallowed are read as the rows they are.
Every physical line after the header thus ends up in exactly one record: a row (kept, or dropped
with its reason and first line) or a dropped line (with its line). The cost is one more parse of
the few lines of a rejected record, never of the good ones.

The caption is the first usable field in this order (`caption_field` on every row says which):
1. `caption_reference_description`: the caption shown under the image on the article, written
   for that article in its language: the best description of the image in context.
2. `caption_attribution_description`: the file's description on Commons. It is shared by every
   page using the file and is often multilingual (`English: … العربية: …`); when it carries
   language prefixes only the segment of an accepted language is taken, else the whole text.
3. `caption_alt_text_description`: the HTML alt text, short and often generic.
A field that is empty or only a file name (`IMG_9880.JPG`) is skipped. A field mostly in Arabic
script wins over an earlier field that is not (an English reference caption with an Arabic alt
text); when no field is, the first candidate goes on and language ID drops it as `not_arabic`.
"""

from __future__ import annotations

import csv
import itertools
import re
import sys
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from pipeline.config import require
from pipeline.records import GENUINE, Drop, Pair, pair_id
from pipeline.sources.base import GENUINE_ARABIC, KindProfile, KnownFile, Provenance, SourceKind
from pipeline.sources.files import ReadFiles, physical_lines
from pipeline.steps import Reasons
from pipeline.text import arabic_letter_share, is_filename, normalize_caption


@dataclass(frozen=True)
class WitSource:
    """WIT TSV shards (`.tsv` or `.tsv.gz`); rows whose `language` is accepted are kept."""

    paths: tuple[str, ...]
    # Wikipedia language codes accepted as Arabic. `arz` (Egyptian Arabic Wikipedia) is a
    # policy choice, off by default; `fa`, `ur`, `ckb`, `azb` are Arabic script, not Arabic.
    languages: tuple[str, ...] = ("ar",)
    kind: str = "wit"
    name: str = "wit"
    # Not a manifest key: set by the build when `output.rejected` asks for the dropped records,
    # so that a row of another language is one `Drop` with its line and URL rather than one
    # count per language and file.
    itemized_drops: bool = field(default=False, metadata={"manifest": False})


REASONS = Reasons(
    "wit",
    {
        "other_language": "the row's language is not in the source's languages (counted per "
        "file, detail: the language)",
        "malformed_row": "the line cannot be parsed as CSV-quoted TSV, nor as plain TSV",
        "wrong_column_count": "the row (or the line a runaway quote starts on) has a column "
        "count other than the header's, read with CSV quoting and as plain TSV",
        "invalid_utf8": "a caption or URL field is not valid UTF-8, or a field holds a lone "
        "surrogate",
        "no_image_url": "the image_url is not an http(s) URL",
        "unsupported_mime": "the file is not a raster image (SVG, audio, video, PDF ...)",
        "empty_caption": "no caption field has text",
        "filename_caption": "every caption field with text is only a file name",
    },
    catch_all="wit_row_error",
)


csv.field_size_limit(sys.maxsize)

# The 17 columns of a WIT shard's header, in order.
WIT_COLUMNS = (
    "language",
    "page_url",
    "image_url",
    "page_title",
    "section_title",
    "hierarchical_section_title",
    "caption_reference_description",
    "caption_attribution_description",
    "caption_alt_text_description",
    "mime_type",
    "original_height",
    "original_width",
    "is_main_image",
    "attribution_passes_lang_id",
    "page_changed_recently",
    "context_page_description",
    "context_section_description",
)
# The ones the reader needs; a shard may order its columns as it likes.
REQUIRED_COLUMNS = (
    "language",
    "page_url",
    "image_url",
    "caption_reference_description",
    "caption_attribution_description",
    "caption_alt_text_description",
)
CAPTION_FIELDS = (
    ("reference", "caption_reference_description"),
    ("attribution", "caption_attribution_description"),
    ("alt_text", "caption_alt_text_description"),
)

# Language prefixes seen in Commons descriptions, and the WIT language code each one means.
_LANGUAGE_NAMES = {
    "العربية": "ar", "عربي": "ar", "عربى": "ar", "Arabic": "ar", "مصرى": "arz", "مصري": "arz",
    "Egyptian Arabic": "arz", "English": "en", "Français": "fr", "French": "fr", "Deutsch": "de",
    "German": "de", "Español": "es", "Spanish": "es", "Italiano": "it", "Italian": "it",
    "Português": "pt", "Nederlands": "nl", "Polski": "pl", "Русский": "ru", "Українська": "uk",
    "Türkçe": "tr", "فارسی": "fa", "اردو": "ur", "Čeština": "cs", "Svenska": "sv", "Norsk": "no",
    "Dansk": "da", "Suomi": "fi", "Magyar": "hu", "Română": "ro", "Ελληνικά": "el", "עברית": "he",
    "Català": "ca", "Esperanto": "eo", "Bahasa Indonesia": "id", "日本語": "ja", "中文": "zh",
    "한국어": "ko", "हिन्दी": "hi", "Tiếng Việt": "vi", "ไทย": "th", "Kurdî": "ku", "کوردی": "ckb",
}  # fmt: skip
_PREFIX = re.compile(
    r"(?:^|(?<=\s))("
    + "|".join(re.escape(n) for n in sorted(_LANGUAGE_NAMES, key=len, reverse=True))
    + r")\s?:\s*"
)
_TRUE = {"true": True, "false": False}


def parse_bool(value: str | None) -> bool | None:
    """WIT's lowercase `true`/`false` (never `bool(value)`: `bool("false")` is True)."""
    return _TRUE.get((value or "").strip().lower())


def language_segments(text: str) -> dict[str, str] | None:
    """The segments of a prefixed multilingual description by language code, or None if unprefixed.

    `"English: The citadel. العربية: القلعة."` → `{"en": "The citadel.", "ar": "القلعة."}`.
    """
    marks = list(_PREFIX.finditer(text))
    if not marks or text[: marks[0].start()].strip():
        return None
    segments: dict[str, str] = {}
    for mark, nxt in zip(marks, [*marks[1:], None], strict=True):
        end = nxt.start() if nxt else len(text)
        code = _LANGUAGE_NAMES[mark.group(1)]
        segments.setdefault(code, text[mark.end() : end].strip())
    return segments


def attribution_caption(text: str, languages: Iterable[str]) -> str:
    """The part of a Commons description in an accepted language ('' when there is none)."""
    segments = language_segments(text)
    if segments is None:
        return text
    return next((segments[code] for code in languages if segments.get(code)), "")


def choose_caption(row: dict[str, str], languages: tuple[str, ...]) -> tuple[str, str, str]:
    """(caption, field name, drop reason if no field is usable) by the order in the docstring."""
    first: tuple[str, str] | None = None
    saw_filename = False
    for name, column in CAPTION_FIELDS:
        text = normalize_caption(row.get(column) or "")
        if name == "attribution" and text:
            text = attribution_caption(text, languages)
        if not text:
            continue
        if is_filename(text):
            saw_filename = True
            continue
        if arabic_letter_share(text) > 0.5:
            return text, name, ""
        first = first or (text, name)
    if first:
        return first[0], first[1], ""
    return "", "", "filename_caption" if saw_filename else "empty_caption"


# Bytes that are not UTF-8, as `errors="surrogateescape"` decodes them.
_BAD_BYTE = re.compile("[\udc80-\udcff]")


def _has_bad_bytes(*fields: str) -> bool:
    """True when a field held bytes that are not UTF-8."""
    return any(_BAD_BYTE.search(f) for f in fields if f)


def _is_raster(mime: str, url: str) -> bool:
    mime = mime.strip().lower()
    if mime.startswith("image/"):
        return mime != "image/svg+xml"
    if mime:  # video/webm, application/pdf, audio/ogg, ...
        return False
    return not url.lower().endswith(".svg")  # a dirty row without a MIME type


# A record the csv module reads from more lines than this is a runaway quote, whatever it holds.
MAX_RECORD_LINES = 10_000
# A WIT language code: `ar`, `zh-TW`, `sr-Latn`, `be-tarask`, `zh-min-nan`, `simple`.
_LANGUAGE_CODE = re.compile(r"[a-z]{2,12}(?:-[A-Za-z0-9]{1,12})*")
# A field that is one well-formed CSV quoted field: quotes around it, inner quotes doubled.
_QUOTED_FIELD = re.compile(r'"(?:[^"]|"")*"')


# What `Rows` yields: (first line, fields, None, None) for a row, (line, None, reason, detail)
# for a line that is no row.
Record = tuple[int, list[str] | None, str | None, str | None]


def _csv_reader(lines: Iterable[str]):
    return csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_MINIMAL, strict=False)


def _line_end(text: str) -> int:
    """Where the line end (`\\n` or `\\r\\n`) of a physical line starts."""
    if text.endswith("\r\n"):
        return len(text) - 2
    return len(text) - 1 if text.endswith("\n") else len(text)


def _quote(field: str) -> str:
    """`field` as one quoted CSV field, every character of it literal."""
    return '"' + field.replace('"', '""') + '"'


def _plain_fields(body: str) -> list[str]:
    """A line as plain tab-separated text: a field that is a well-formed quoted field is
    unquoted, any other field is kept as it is (a stray quote included)."""
    return [
        f[1:-1].replace('""', '"') if f.startswith('"') and _QUOTED_FIELD.fullmatch(f) else f
        for f in body.split("\t")
    ]


def row_start(header: list[str]) -> Callable[[str], bool]:
    """A test of whether a physical line looks like the start of a row: a language code, then
    an http(s) page URL and image URL, in the header's columns."""
    language, page, image = (header.index(c) for c in ("language", "page_url", "image_url"))
    needed = max(language, page, image) + 1

    def looks_like_row(text: str) -> bool:
        if "\t" not in text:  # most lines of a description: the quick answer
            return False
        fields = text.split("\t", needed)
        return (
            len(fields) >= needed
            and fields[page].startswith(("https://", "http://"))
            and fields[image].startswith(("https://", "http://", "//"))
            and _LANGUAGE_CODE.fullmatch(fields[language]) is not None
        )

    return looks_like_row


class Rows:
    """The records of a shard's data lines (`Record`s), runaway quotes recovered as the module
    docstring says. `lines` are `(line number, text with its line end)`."""

    def __init__(self, lines: Iterator[tuple[int, str]], width: int, looks_like_row):
        self._lines = lines
        self._pending: deque[tuple[int, str]] = deque()  # lines to read again, in order
        self._width = width
        self._looks_like_row = looks_like_row
        self._span: list[tuple[int, str]] = []  # the lines of the record being read
        self._capped = False

    def _feed(self) -> Iterator[str]:
        """The lines for the csv module, each noted in the current span; stops a record at
        `MAX_RECORD_LINES` lines."""
        pending, lines = self._pending, self._lines
        while True:
            span = self._span
            if len(span) >= MAX_RECORD_LINES:
                self._capped = True
                return
            item = pending.popleft() if pending else next(lines, None)
            if item is None:
                return
            span.append(item)
            yield item[1]

    def _is_row(self, fields: list[str] | None, span: list[tuple[int, str]]) -> bool:
        if fields is None or len(fields) != self._width or self._capped:
            return False
        if len(span) > 1:
            looks_like_row = self._looks_like_row
            for _, text in span[1:]:
                if looks_like_row(text):
                    return False
        return True

    def _read_one(self, first: tuple[int, str]) -> list[str] | None:
        """The record starting with the line `first`, if it is a row; else None, the lines
        after `first` it read put back to be read again."""
        self._span, self._capped = [first], False
        try:
            fields = next(_csv_reader(itertools.chain([first[1]], self._feed())))
        except (StopIteration, csv.Error):
            fields = None
        if self._is_row(fields, self._span):
            return fields
        self._pending.extendleft(reversed(self._span[1:]))
        return None

    def __iter__(self) -> Iterator[Record]:
        while True:
            reader = _csv_reader(self._feed())
            while True:
                self._span, self._capped = [], False
                try:
                    fields, error = next(reader), None
                except StopIteration:
                    fields, error = None, None
                except csv.Error as err:
                    fields, error = None, err
                if not self._span:
                    return
                if self._is_row(fields, self._span):
                    yield self._span[0][0], fields, None, None
                    continue
                yield self._recover(self._span, fields, error)
                break  # a new reader, from the line after the recovered line or row

    def _recover(self, span, fields, error) -> Record:
        """The record of a span that is not a row: its first line read again (module
        docstring), the lines after that line put back to be read again."""
        (number, text), last, capped = span[0], span[-1][0], self._capped
        self._pending.extendleft(reversed(span[1:]))
        body = text[: _line_end(text)]
        parts = body.split("\t")
        # A carriage return in an unquoted field stops the csv module: such a field is quoted.
        unquoted_cr = [_quote(f) if "\r" in f and not f.startswith('"') else f for f in parts]
        readings = [unquoted_cr] if unquoted_cr != parts else []
        strays = [
            i for i, f in enumerate(parts) if f.startswith('"') and not _QUOTED_FIELD.fullmatch(f)
        ]
        readings += [
            [*unquoted_cr[:i], _quote(parts[i]), *unquoted_cr[i + 1 :]]
            for i in strays[: self._width]
        ]
        for reading in readings:
            found = self._read_one((number, "\t".join(reading) + text[len(body) :]))
            if found is not None:
                return number, found, None, None
        plain = _plain_fields(body)
        if len(plain) == self._width:
            return number, plain, None, None
        if error is not None:
            return number, None, "malformed_row", str(error)
        where = ""
        if capped:
            where = f"a quoted field ran past {MAX_RECORD_LINES} lines; "
        elif last > number:
            where = f"a quoted field ran to line {last}; "
        columns = len(fields) if fields is not None else len(plain)
        detail = f"{where}{columns} columns, expected {self._width}, {len(plain)} as plain TSV"
        return number, None, "wrong_column_count", detail


def parse_wit(stream, path: str, source: WitSource) -> Iterator[Pair | Drop]:
    """Every data line of one shard (a binary stream) in a `Pair` or a `Drop`; rows of other
    languages are counted, one `Drop` per language (one per row with `source.itemized_drops`).

    Raises ValueError naming the file when it is not a WIT shard at all, and naming the file and
    line when it cannot be read to its end.
    """
    # Bytes that are not UTF-8 survive as lone surrogates, and their row is dropped as
    # `invalid_utf8`. A line ends at a line feed only; the line end is kept for the csv module.
    lines = (
        (number, raw.decode("utf-8", "surrogateescape"))
        for number, raw in physical_lines(stream, path, "shard")
    )
    first = next(lines, None)
    if first is None:
        return
    try:
        header = next(_csv_reader([first[1]]), [])
    except csv.Error as err:
        raise ValueError(f"{path}:1: cannot read the WIT header ({err})") from err
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise ValueError(
            f"{path}:1: not a WIT shard header: missing column(s) {', '.join(missing)}"
        )
    accepted = set(source.languages)
    language_column = header.index("language")
    url_column = header.index("image_url")
    other_languages: Counter[str] = Counter()
    for start, fields, reason, detail in Rows(lines, len(header), row_start(header)):
        if fields is None:
            yield Drop(source.name, reason, path, start, detail[:200])
            continue
        # Most rows are another language: count them before building the row's dict.
        language = fields[language_column].strip()
        if language not in accepted:
            if source.itemized_drops:
                url = fields[url_column].strip()[:2000] or None
                yield Drop(source.name, "other_language", path, start, language, image_url=url)
            else:
                other_languages[language] += 1
            continue
        try:
            yield _row_to_pair(dict(zip(header, fields, strict=True)), source, path, start)
        except Exception as err:  # noqa: BLE001 - one bad row is counted, never fatal
            yield Drop(source.name, "wit_row_error", path, start, f"{type(err).__name__}: {err}")
    for language, count in sorted(other_languages.items()):
        yield Drop(source.name, "other_language", path, None, language, count)


def _width(value: str | None) -> int | None:
    """WIT's `original_width` (`1024`, sometimes `1024.0`); None when empty or not a number."""
    try:
        width = int(float(value or ""))
    except (ValueError, OverflowError):
        return None
    return width if width > 0 else None


def _row_to_pair(row: dict[str, str], source: WitSource, path: str, line: int) -> Pair | Drop:
    image_url = row["image_url"].strip()
    page_url = row["page_url"].strip()
    if _has_bad_bytes(*(row[c] for _, c in CAPTION_FIELDS), image_url, page_url):
        return Drop(source.name, "invalid_utf8", path, line)
    if not image_url.startswith(("http://", "https://", "//")):
        return Drop(source.name, "no_image_url", path, line, image_url[:200] or None)
    if image_url.startswith("//"):
        image_url = "https:" + image_url
    mime = row.get("mime_type", "")
    if not _is_raster(mime, image_url):
        detail = mime[:100] or image_url[-40:]
        return Drop(source.name, "unsupported_mime", path, line, detail, image_url=image_url)
    caption, field, reason = choose_caption(row, source.languages)
    if reason:
        return Drop(source.name, reason, path, line, image_url=image_url)
    key = f"{page_url}\t{image_url}"
    return Pair(
        id=pair_id(source.kind, key, caption),
        source=source.kind,
        source_name=source.name,
        source_key=key,
        caption_ar=caption,
        caption_origin=GENUINE,
        caption_field=field,
        source_language=row["language"].strip(),
        image_url=image_url,
        mime_type=mime.strip() or None,
        page_url=page_url or None,
        page_title=normalize_caption(row.get("page_title", "")) or None,
        section_title=normalize_caption(row.get("section_title", "")) or None,
        is_main_image=parse_bool(row.get("is_main_image")),
        input_file=path,
        input_line=line,
        original_width=_width(row.get("original_width")),
    )


def check_source(source: WitSource, where: str) -> None:
    """What the manifest checks beyond types."""
    require(bool(source.languages), f"{where}.languages", "must name at least one language code")


class ReadWit(ReadFiles):
    """Reads the source's WIT shards; returns `(pairs, dropped)`.

    A shard is parsed whole by one worker (quoted newlines make it unsplittable), so the read
    scales with the number of shards.
    """

    def __init__(self, source: WitSource):
        super().__init__(source.paths, parse_wit, source)


# WIT training shards: rows per shard (all languages, header excluded) as counted in
# robvanvolt/DALLE-datasets general/helper_scripts/wit_dtype.py; shard 00009 is not listed there:
# the mean of the other nine (assumption). Each shard is its own ~2.5 GB download (FORMATS §1).
_WIT_SHARD_ROWS = (3708026, 3702075, 3701785, 3706924, 3701161, 3708106, 3704684, 3703736, 3705646)
_WIT_SHARD_ROWS += (round(sum(_WIT_SHARD_ROWS) / 9),)
_WIT_SHARD_BYTES = 2_500_000_000
KNOWN_FILES: dict[str, KnownFile] = {
    f"wit_v1.train.all-{i:05d}-of-00010.tsv.gz": KnownFile(
        rows, f"wit_v1.train.all-{i:05d}-of-00010.tsv.gz", _WIT_SHARD_BYTES
    )
    for i, rows in enumerate(_WIT_SHARD_ROWS)
}
# FORMATS §1: the 1 % sample (370,373 rows), val 261.8K and test 210.7K rows in 5 shards each
# (per-shard: the total over 5); sizes in proportion to the training shards (assumption).
_WIT_BYTES_PER_ROW = _WIT_SHARD_BYTES / 3_704_683
KNOWN_FILES["wit_v1.train.all-1percent_sample.tsv.gz"] = KnownFile(
    370_373,
    "wit_v1.train.all-1percent_sample.tsv.gz",
    round(370_373 * _WIT_BYTES_PER_ROW),
)
for _split, _total in (("val", 261_800), ("test", 210_700)):
    for _i in range(5):
        _name = f"wit_v1.{_split}.all-{_i:05d}-of-00005.tsv.gz"
        KNOWN_FILES[_name] = KnownFile(_total // 5, _name, round(_total / 5 * _WIT_BYTES_PER_ROW))


TRAIN_ROWS = sum(_WIT_SHARD_ROWS)

PROVENANCE = Provenance(
    hub_source="extended|google/wit",
    licence=(
        "WIT is released under CC BY-SA 3.0"
        " (https://creativecommons.org/licenses/by-sa/3.0/,"
        " https://github.com/google-research-datasets/wit); its captions are Wikipedia text;"
        " each image keeps the licence of its file on Wikimedia Commons."
    ),
    citation="""@inproceedings{srinivasan2021wit,
  title = {WIT: Wikipedia-based Image Text Dataset for Multimodal Multilingual Machine Learning},
  author = {Srinivasan, Krishna and Raman, Karthik and Chen, Jiecao and Bendersky, Michael and
            Najork, Marc},
  booktitle = {Proceedings of the 44th International ACM SIGIR Conference on Research and
               Development in Information Retrieval},
  pages = {2443--2449},
  year = {2021}
}""",
)


KIND = SourceKind(
    kind="wit",
    provenance=PROVENANCE,
    config=WitSource,
    reader=ReadWit,
    language=GENUINE_ARABIC,
    reasons=REASONS,
    path_keys=("paths",),
    check=check_source,
    count=parse_wit,
    known_files=KNOWN_FILES,
    wikimedia_images=True,
    profile=KindProfile(
        109_366 / TRAIN_ROWS,
        109_366 / TRAIN_ROWS,
        "wit_image_bytes",
        "109,366 published Arabic WIT pairs (FORMATS §0) over every row of the ten training "
        "shards (all languages are read); rows are lost before the images stage",
    ),
)
