"""The one record that flows through every stage, its drop twin, and the output schema.

A `Pair` is immutable: a stage that learns something returns `pair._replace(...)`. A stage that
rejects a pair emits a `Drop` naming the source and one of its declared reasons
(`pipeline.steps.Reasons`) on its `dropped` output; `pipeline.stats` counts those, so one
counting path serves every stage.
"""

import hashlib
from typing import NamedTuple

import apache_beam as beam
import pyarrow as pa

GENUINE = "genuine"
TRANSLATED = "translated"

# The tag of every stage's side output of `Drop` records.
DROPPED = "dropped"


class Pair(NamedTuple):
    """One image-text pair and its provenance.

    `source` is the manifest kind (`wit`); `source_name` tells apart two sources of the same kind
    (`wit`, `wit#2`) and is the key of `stats.json`. `source_key` identifies the record inside its
    source (for WIT: page URL and image URL) and, with the caption, makes the stable `id`.
    """

    id: str
    source: str
    source_name: str
    source_key: str
    caption_ar: str
    caption_origin: str
    caption_en: str | None = None
    caption_field: str | None = None
    source_language: str | None = None
    image_url: str | None = None
    # The stored image, once fetched: a reference into the run's image store
    # (`pipeline.store`), never the bytes, so that groupings move only small records.
    image_ref: str | None = None
    image_path: str | None = None
    phash: str | None = None
    sha256: str | None = None
    width: int | None = None
    height: int | None = None
    mime_type: str | None = None
    langid_score: float | None = None
    translation_score: float | None = None
    # The scoring stage's cosines (`pipeline.scoring`): image and caption_ar; caption_ar and
    # caption_en of a translated pair. None when scoring is off (or, for clip_score, no image).
    clip_score: float | None = None
    translation_similarity: float | None = None
    page_url: str | None = None
    page_title: str | None = None
    section_title: str | None = None
    is_main_image: bool | None = None
    license: str | None = None
    attribution: str | None = None
    input_file: str | None = None
    input_line: int | None = None
    # The width of the source's original file, where the source says (WIT's original_width):
    # an original on Wikimedia's upload host no wider than the thumbnail step is fetched as it
    # is (pipeline.wikimedia.fetch_url). Not an output column.
    original_width: int | None = None


class Drop(NamedTuple):
    """A record that left the pipeline: which source lost it, why, and where it came from.

    `stage` is the declaration that dropped it (`Reasons.stage`: a source kind for a reader's
    drop, `translate`, `clean`, `langid`, `images`, `dedupe`); the readers leave it to
    `Reasons.checked`. The pair's id, captions and image URL are what `output.rejected` writes
    (`pipeline.rejected`): a stage's drop has them from its pair (`Reasons.drop`), a reader's
    where the line gave them; a record that never became a pair has no id.
    """

    source_name: str
    reason: str
    input_file: str | None = None
    input_line: int | None = None
    detail: str | None = None
    # A reader may count many identical drops at once (WIT's rows of other languages).
    count: int = 1
    stage: str | None = None
    pair_id: str | None = None
    caption_ar: str | None = None
    caption_en: str | None = None
    image_url: str | None = None


beam.coders.registry.register_coder(Pair, beam.coders.RowCoder)
beam.coders.registry.register_coder(Drop, beam.coders.RowCoder)
PAIR_CODER = beam.coders.registry.get_coder(Pair)


def encode_pair(pair: Pair) -> bytes:
    return PAIR_CODER.encode(pair)


def decode_pair(data: bytes) -> Pair:
    return PAIR_CODER.decode(data)


class SpreadPairs(beam.PTransform):
    """`beam.Reshuffle` of pairs that moves them encoded. The local runner keeps the values of
    a GroupByKey decoded while it groups them, and a Pair object takes about 2.5 times its
    encoded bytes: a run's memory at its Reshuffles is that much smaller."""

    def expand(self, pairs):
        return (
            pairs
            | "Encode" >> beam.Map(encode_pair).with_output_types(bytes)
            | "Reshuffle" >> beam.Reshuffle()
            | "Decode" >> beam.Map(decode_pair).with_output_types(Pair)
        )


def pair_id(source: str, source_key: str, caption: str) -> str:
    """The stable id: a hash of the source kind, the record's key in its source, and the caption.

    The kind (not `wit#2`) is hashed so that reordering the manifest keeps every id.
    """
    digest = hashlib.sha256("\x1f".join((source, source_key, caption)).encode("utf-8"))
    return digest.hexdigest()[:32]


# The output columns, in order: those the contract names first, provenance after. Every
# column but `image` (the struct `datasets.Image` reads, filled by the writer from the store)
# is the `Pair` field of its name. The schema and the card's column table come from here.
IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


class Column(NamedTuple):
    name: str
    type: pa.DataType
    doc: str  # what the column means, for the dataset card


COLUMNS = (
    Column("id", pa.string(), "stable id: hash of source kind, source record key and caption"),
    Column(
        "source",
        pa.string(),
        "the manifest kind the pair came from (wit, wikipedia, conceptual_captions, ...)",
    ),
    Column(
        "caption_ar",
        pa.string(),
        "the Arabic caption, normalised (NFC, no bidi marks or tags, single spaces)",
    ),
    Column("caption_en", pa.string(), "the English original of a translated caption"),
    Column(
        "caption_origin",
        pa.string(),
        "genuine (written in Arabic) or translated (machine-translated)",
    ),
    Column("image_url", pa.string(), "where the image came from"),
    Column("image", IMAGE_TYPE, "the image bytes, when fetched"),
    Column("phash", pa.string(), "imagehash pHash, 16 hex digits"),
    Column("width", pa.int32(), "width of the stored image"),
    Column("height", pa.int32(), "height of the stored image"),
    Column("langid_score", pa.float32(), "fastText lid.176 probability that caption_ar is Arabic"),
    Column(
        "translation_score",
        pa.float32(),
        "the translator's own confidence (mean token log-probability)",
    ),
    Column(
        "clip_score",
        pa.float32(),
        "image-caption agreement: cosine of the image's and caption_ar's embeddings by a "
        "multilingual CLIP, when scoring is on",
    ),
    Column(
        "translation_similarity",
        pa.float32(),
        "agreement of a translated caption with its English original: cosine of the "
        "multilingual CLIP's embeddings of caption_ar and caption_en, when scoring is on",
    ),
    Column(
        "source_name",
        pa.string(),
        "the source's key in stats.json (kind, or kind#2 for a second source)",
    ),
    Column(
        "source_key",
        pa.string(),
        "the record's key inside its source (WIT: page URL and image URL)",
    ),
    Column("caption_field", pa.string(), "which field of the source the caption was taken from"),
    Column(
        "source_language",
        pa.string(),
        "the language code the source gave the record (WIT: its `language`)",
    ),
    Column("sha256", pa.string(), "sha256 of the stored image bytes"),
    Column(
        "mime_type",
        pa.string(),
        "the MIME type of the stored image (as the source gave it when not fetched)",
    ),
    Column("page_url", pa.string(), "the page the image appears on"),
    Column("page_title", pa.string(), "the title of that page"),
    Column("section_title", pa.string(), "the section of the page the image appears in"),
    Column(
        "is_main_image", pa.bool_(), "WIT: the image is the page's first (lead or infobox) image"
    ),
    Column(
        "license",
        pa.string(),
        "the licence of the caption/page text or image, as the source gives it",
    ),
    Column("attribution", pa.string(), "who to credit, as the source gives it"),
)
SCHEMA = pa.schema([(c.name, c.type) for c in COLUMNS])
COLUMN_DOCS = {c.name: c.doc for c in COLUMNS}
IMAGE_COLUMN = "image"
if {c.name for c in COLUMNS} - {IMAGE_COLUMN} - set(Pair._fields):  # caught by any import
    raise TypeError("every output column but image must be a Pair field")


# The file extension of each stored encoding, for the `image.path` of a row; the images stage's
# encodings (pipeline.images.codec.ENCODINGS) take theirs from here.
EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}


def to_row(pair: Pair, image: bytes | None = None) -> dict:
    """A pair as one row of `SCHEMA`, with `image` the bytes of its stored image (read back from
    the store by the writer; None when not fetched).

    Only fetched images fill `image`, with `<id>.<ext>` as its path: a row never carries a local
    path of the machine it was built on.
    """
    row = {c.name: getattr(pair, c.name) for c in COLUMNS if c.name != IMAGE_COLUMN}
    if image is None:
        row[IMAGE_COLUMN] = None
    else:
        extension = EXTENSIONS.get(pair.mime_type or "", "img")
        row[IMAGE_COLUMN] = {"bytes": image, "path": f"{pair.id}.{extension}"}
    return row
