"""ReadFlickr8k: the Flickr8K caption file and its local image folder to English pairs for
translation.

`Flickr8k.token.txt` holds one caption a line, `NAME.jpg#N<TAB>caption` (N from 0 to 4), and the
images are the files of `Flicker8k_Dataset/` (the archive's spelling). There are no URLs: a
caption is matched to its image by file name alone, so the folder is listed once and every
caption whose image is not in it is dropped as `missing_image_file`. The real file has one
such group, `2258277193_586949ec62.jpg.1#0-4`: five captions of an image that was never shipped.

Every line is one record (`read` counts lines): a pair, or a drop under `invalid_utf8`,
`malformed_line` (no tab, a key without `#N`, or a blank line), `empty_caption`, or
`missing_image_file`. `source_key` is the line's key, `NAME.jpg#N`.

Point the source at `Flickr8k.token.txt`, not `Flickr8k.lemma.token.txt`: the lemma file has the
same keys and format with lemmatized text (`a black dog and a spotted dog be fight`), so nothing
in a line tells them apart, and it would be read as (poor) captions.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Set
from dataclasses import dataclass

from apache_beam.io.filesystems import FileSystems

from pipeline.records import TRANSLATED, Drop, Pair, pair_id
from pipeline.sources.base import ENGLISH, KindProfile, KnownFile, Provenance, SourceKind
from pipeline.sources.files import ReadFiles, list_folder, numbered_lines
from pipeline.steps import Reasons
from pipeline.text import normalize_english


@dataclass(frozen=True)
class Flickr8kSource:
    """Flickr8K `NAME.jpg#N<TAB>caption` file and its local image folder, translated."""

    captions: str
    images: str
    kind: str = "flickr8k"
    name: str = "flickr8k"


REASONS = Reasons(
    "flickr8k",
    {
        "invalid_utf8": "the line is not valid UTF-8, or a field holds a lone surrogate",
        "malformed_line": "a blank line, or a line that is not NAME.jpg#N<TAB>caption",
        "empty_caption": "the caption is empty",
        "missing_image_file": "the named image is not in the image folder",
    },
    catch_all="flickr8k_row_error",
)


# `NAME#N`: the image's file name, then the caption's number within its group.
_KEY = re.compile(r"^(?P<name>[^\s#/\\]+)#(?P<n>\d+)$")


def split_key(key: str) -> tuple[str, int] | None:
    """`"1000268201_693b08cb0e.jpg#0"` → `("1000268201_693b08cb0e.jpg", 0)`; None if malformed."""
    match = _KEY.match(key)
    return (match["name"], int(match["n"])) if match else None


def parse_line(
    raw: bytes, source: Flickr8kSource, path: str, line: int, image_names: Set[str]
) -> Pair | Drop:
    """One line's bytes (its line end removed) as a `Pair` or a `Drop`."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return Drop(source.name, "invalid_utf8", path, line, str(err)[:200])
    if not text.strip():
        return Drop(source.name, "malformed_line", path, line, "blank line")
    key, tab, caption = text.partition("\t")
    key = key.strip()
    parts = split_key(key)
    if not tab or parts is None:
        return Drop(source.name, "malformed_line", path, line, text[:200])
    caption = normalize_english(caption)
    if not caption:
        return Drop(source.name, "empty_caption", path, line)
    name = parts[0]
    if name not in image_names:
        return Drop(source.name, "missing_image_file", path, line, name, caption_en=caption)
    return Pair(
        id=pair_id(source.kind, key, caption),
        source=source.kind,
        source_name=source.name,
        source_key=key,
        caption_ar="",
        caption_origin=TRANSLATED,
        caption_en=caption,
        image_path=FileSystems.join(source.images, name),
        input_file=path,
        input_line=line,
    )


def parse_flickr8k(
    stream, path: str, source: Flickr8kSource, image_names: Set[str]
) -> Iterator[Pair | Drop]:
    """Every line of a caption file (a binary stream) as a `Pair` or a `Drop`; `image_names`
    are the file names in the image folder.

    Raises ValueError (naming the file and line) only when the file cannot be read to its end.
    """
    for line, raw in numbered_lines(stream, path):
        try:
            yield parse_line(raw, source, path, line, image_names)
        except Exception as err:  # noqa: BLE001 - one bad line is counted, never fatal
            detail = f"{type(err).__name__}: {err}"[:300]
            yield Drop(source.name, REASONS.catch_all, path, line, detail)


def _parse_with_folder(stream, path: str, source: Flickr8kSource) -> Iterator[Pair | Drop]:
    return parse_flickr8k(stream, path, source, list_folder(source.images))


class ReadFlickr8k(ReadFiles):
    """Reads the source's caption file against its image folder; returns `(pairs, dropped)`."""

    def __init__(self, source: Flickr8kSource):
        super().__init__([source.captions], _parse_with_folder, source)


# Flickr8K (FORMATS §4): the token file is in Flickr8k_text.zip (~3 MB); the image folder comes
# from Flickr8k_Dataset.zip (~1 GB).
KNOWN_FILES: dict[str, KnownFile] = {
    "Flickr8k.token.txt": KnownFile(40_460, "Flickr8k_text.zip", 3_000_000)
}
IMAGES_ARCHIVE = KnownFile(8_091, "Flickr8k_Dataset.zip", 1_000_000_000)


def count_records(stream, path: str, source: Flickr8kSource) -> Iterator[Pair | Drop]:
    """The records of a caption file, for `estimate`: against the image folder when it is
    there (every line is a record either way)."""
    names = list_folder(source.images) if os.path.isdir(source.images) else frozenset()
    return parse_flickr8k(stream, path, source, names)


PROVENANCE = Provenance(
    hub_source="extended|other-flickr8k",
    licence=(
        "Flickr8K is distributed by the University of Illinois for research use; its images"
        " come from Flickr, each under its owner's terms."
    ),
    citation="""@article{hodosh2013framing,
  title = {Framing Image Description as a Ranking Task: Data, Models and Evaluation Metrics},
  author = {Hodosh, Micah and Young, Peter and Hockenmaier, Julia},
  journal = {Journal of Artificial Intelligence Research},
  volume = {47},
  pages = {853--899},
  year = {2013}
}""",
)


KIND = SourceKind(
    kind="flickr8k",
    provenance=PROVENANCE,
    config=Flickr8kSource,
    reader=ReadFlickr8k,
    language=ENGLISH,
    reasons=REASONS,
    path_keys=("captions", "images"),
    folder_keys=("images",),
    record_keys=("captions",),
    count=count_records,
    known_files=KNOWN_FILES,
    profile=KindProfile(
        40_455 / 40_460,
        40_455 / 40_460,
        0,
        "all but the 5 lines of the imageless .jpg.1 group (FORMATS §4); §0's 60 % is the "
        "published 3-per-image set, not a drop rate; images are read from the local folder",
    ),
)
