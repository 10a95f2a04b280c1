"""ReadConceptualCaptions: Conceptual Captions files (`.tsv`, `.tsv.gz`) to English pairs for
translation.

A line is `caption<TAB>url`, with no header and no quoting of any kind: a caption that begins
with `"` keeps it (a CSV reader with quoting would swallow it), so lines are split on tabs and
never parsed as CSV. The labeled subset's 5 columns (caption, url, labels, MIDs, scores) are read
too, keeping the first two. Captions are already lowercased, tokenized and hypernymized
(`person`, `actor`, `city`) by the dataset's authors; they are kept verbatim apart from outer
whitespace and inner whitespace runs (`caption_en`).

Every line is one record (`read` counts lines, as `wc -l` does): a pair, or a drop under
`invalid_utf8`, `malformed_line` (a column count other than 2 or 5, or a blank line),
`empty_caption`, or `no_image_url` (a URL that is not http or https). CC gives one caption per
image URL, so the URL is the record's `source_key`: it survives a renamed or re-split file.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from pipeline.records import TRANSLATED, Drop, Pair, pair_id
from pipeline.sources.base import ENGLISH, KindProfile, KnownFile, Provenance, SourceKind
from pipeline.sources.files import ReadFiles, numbered_lines
from pipeline.steps import Reasons
from pipeline.text import normalize_english


@dataclass(frozen=True)
class ConceptualCaptionsSource:
    """Conceptual Captions `caption<TAB>url` files, translated to Arabic."""

    paths: tuple[str, ...]
    kind: str = "conceptual_captions"
    name: str = "conceptual_captions"


REASONS = Reasons(
    "conceptual_captions",
    {
        "invalid_utf8": "the line is not valid UTF-8, or a field holds a lone surrogate",
        "malformed_line": "a blank line, or a column count other than 2 or 5",
        "empty_caption": "the caption column is empty",
        "no_image_url": "the URL column is not an http(s) URL",
    },
    catch_all="conceptual_captions_row_error",
)


# Column counts of the plain files and of the labeled subset.
_COLUMN_COUNTS = (2, 5)


def parse_line(raw: bytes, source: ConceptualCaptionsSource, path: str, line: int) -> Pair | Drop:
    """One line's bytes (its line end removed) as a `Pair` or a `Drop`."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return Drop(source.name, "invalid_utf8", path, line, str(err)[:200])
    if not text.strip():
        return Drop(source.name, "malformed_line", path, line, "blank line")
    fields = text.split("\t")
    if len(fields) not in _COLUMN_COUNTS:
        return Drop(source.name, "malformed_line", path, line, f"{len(fields)} columns")
    caption = normalize_english(fields[0])
    url = fields[1].strip()
    if not caption:
        return Drop(source.name, "empty_caption", path, line, image_url=url or None)
    if not url.lower().startswith(("http://", "https://")):
        return Drop(source.name, "no_image_url", path, line, url[:200] or None, caption_en=caption)
    return Pair(
        id=pair_id(source.kind, url, caption),
        source=source.kind,
        source_name=source.name,
        source_key=url,
        caption_ar="",
        caption_origin=TRANSLATED,
        caption_en=caption,
        image_url=url,
        input_file=path,
        input_line=line,
    )


def parse_conceptual_captions(
    stream, path: str, source: ConceptualCaptionsSource
) -> Iterator[Pair | Drop]:
    """Every line of one file (a binary stream) as a `Pair` or a `Drop`.

    Raises ValueError (naming the file and line) only when the file cannot be read to its end.
    """
    for line, raw in numbered_lines(stream, path):
        try:
            yield parse_line(raw, source, path, line)
        except Exception as err:  # noqa: BLE001 - one bad line is counted, never fatal
            detail = f"{type(err).__name__}: {err}"[:300]
            yield Drop(source.name, REASONS.catch_all, path, line, detail)


class ReadConceptualCaptions(ReadFiles):
    """Reads the source's CC files; returns `(pairs, dropped)`."""

    def __init__(self, source: ConceptualCaptionsSource):
        super().__init__(source.paths, parse_conceptual_captions, source)


# Conceptual Captions (FORMATS §2). The training TSV is "a 500MB tsv file" (img2dataset's
# dataset_examples/cc3m.md); the others in proportion to their lines (assumption). Both names
# of each file: the download page's and the storage bucket's.
_CC_BYTES_PER_LINE = 500_000_000 / 3_318_333
KNOWN_FILES: dict[str, KnownFile] = {}
for _names, _lines in (
    (("Train_GCC-training.tsv", "GCC-training.tsv"), 3_318_333),
    (("Validation_GCC-1.1.0-Validation.tsv", "GCC-1.1.0-Validation.tsv"), 15_840),
    (("Image_Labels_Subset_Train_GCC-Labels-training.tsv",), 2_007_090),
):
    for _name in _names:
        KNOWN_FILES[_name] = KnownFile(_lines, _names[0], round(_lines * _CC_BYTES_PER_LINE))


PROVENANCE = Provenance(
    hub_source="extended|google-research-datasets/conceptual_captions",
    licence=(
        "Conceptual Captions' captions and URLs may be freely used for any purpose, with"
        " acknowledgement of Google LLC as the data source appreciated"
        " (https://github.com/google-research-datasets/conceptual-captions); the images are web"
        " images, not licensed by the dataset: each belongs to its owner."
    ),
    citation="""@inproceedings{sharma2018conceptual,
  title = {Conceptual Captions: A Cleaned, Hypernymed, Image Alt-text Dataset For Automatic
           Image Captioning},
  author = {Sharma, Piyush and Ding, Nan and Goodman, Sebastian and Soricut, Radu},
  booktitle = {Proceedings of the 56th Annual Meeting of the Association for Computational
               Linguistics (Volume 1: Long Papers)},
  pages = {2556--2565},
  year = {2018}
}""",
)


KIND = SourceKind(
    kind="conceptual_captions",
    provenance=PROVENANCE,
    config=ConceptualCaptionsSource,
    reader=ReadConceptualCaptions,
    language=ENGLISH,
    reasons=REASONS,
    path_keys=("paths",),
    count=parse_conceptual_captions,
    known_files=KNOWN_FILES,
    profile=KindProfile(
        1_427_210 / 3_318_333,
        1.0,
        "cc_image_bytes",
        "1,427,210 published pairs of CC3M train's 3,318,333 (43.0 %, FORMATS §0); every line "
        "is translated and its image tried: the loss is mostly dead links",
    ),
)
