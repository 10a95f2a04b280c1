"""What the dataset card says for the Hub: its metadata, the licence file and the citations.

`pipeline.write.dataset_card` writes the card; this module decides the parts the Hugging Face
Hub reads (`huggingface_hub.DatasetCardData`: `license`, `license_name`, `license_link`,
`language`, `annotations_creators`, `language_creators`, `multilinguality`, `size_categories`,
`source_datasets`, `task_categories`) from what the run built: which sources, which of them were
translated, how many pairs were kept. Each kind's licence text, citation and Hub source come from
its registry entry (`SourceKind.provenance`), so a new source brings its own.

The licence of a build is the union of its sources' terms, which no single SPDX identifier
names: the card says `license: other` with `license_name: arabic-pairs-sources` and
`license_link: LICENSE.md`, a file of the output that lists each source's terms
(`licence_file`). A `LICENSE.md` the user wrote into the output is theirs and is never replaced
(`is_our_licence`, read by `pipeline.write.commit`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

from pipeline.sources.base import ENGLISH, UNDECLARED_PROVENANCE
from pipeline.sources.registry import KINDS

LICENCE_NAME = "LICENSE.md"
LICENCE_ID = "arabic-pairs-sources"  # `license_name`: a slug, as the Hub asks for `other`
# The licence file's first line, by which a run knows the file is its own.
LICENCE_SIGNATURE = "# Licences of an arabic-pairs build"
TASK_CATEGORIES = ("image-to-text", "text-to-image", "zero-shot-image-classification")
# The Hub's size buckets (`datasets/utils/resources/size_categories.json`), by upper bound.
_SIZES = (
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"),
    (1_000_000_000, "100M<n<1B"),
)
# How the translations themselves are cited when the run used an OPUS-MT model.
OPUS_MT_CITATION = """@inproceedings{tiedemann2020opusmt,
  title = {OPUS-MT -- Building open translation services for the World},
  author = {Tiedemann, J{\\"o}rg and Thottingal, Santhosh},
  booktitle = {Proceedings of the 22nd Annual Conference of the European Association for
               Machine Translation},
  pages = {479--480},
  year = {2020}
}"""


class CardSource(NamedTuple):
    """One source of the run as the card sees it: its stats key, its kind, and whether its
    captions were machine-translated from English."""

    name: str
    kind: str
    translated: bool


def card_sources(sources: Iterable) -> tuple[CardSource, ...]:
    """The `CardSource`s of a manifest's source configs (`Manifest.sources`)."""
    return tuple(CardSource(s.name, s.kind, KINDS[s.kind].translates(s)) for s in sources)


def sources_of_stats(stats: dict) -> tuple[CardSource, ...]:
    """The sources of a `stats.json` (`wit`, `wit#2`) when the run's own are not known: each
    in its kind's own language (a `pairs` source counts as genuine Arabic)."""
    found = []
    for key in stats["sources"]:
        kind = key.split("#")[0]
        entry = KINDS.get(kind)
        found.append(CardSource(key, kind, entry is not None and entry.language == ENGLISH))
    return tuple(found)


def size_category(rows: int) -> str:
    """The Hub's `size_categories` bucket of a dataset of `rows` rows (999 → `n<1K`,
    1000 → `1K<n<10K`)."""
    for bound, name in _SIZES:
        if rows < bound:
            return name
    return "1B<n<10B"


def provenance_of(kind: str):
    """The `Provenance` of a kind, or the undeclared one for a kind the registry lacks."""
    entry = KINDS.get(kind)
    return entry.provenance if entry is not None else UNDECLARED_PROVENANCE


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def hub_metadata(sources: Sequence[CardSource], kept: int) -> dict:
    """The Hub's keys of the card header for a build of `sources` that kept `kept` pairs."""
    translated = any(s.translated for s in sources)
    genuine = any(not s.translated for s in sources) or not sources
    creators = (["found"] if genuine else []) + (["machine-generated"] if translated else [])
    return {
        "language": ["ar", "en"] if translated else ["ar"],
        "license": "other",
        "license_name": LICENCE_ID,
        "license_link": LICENCE_NAME,
        # Genuine captions were found on the web; translated ones were made by a model.
        "annotations_creators": creators,
        "language_creators": list(creators),
        "multilinguality": ["translation"] if translated else ["monolingual"],
        "size_categories": [size_category(kept)],
        "source_datasets": _unique(provenance_of(s.kind).hub_source for s in sources),
        "task_categories": list(TASK_CATEGORIES),
    }


def licence_file(name: str, sources: Sequence[CardSource], translation_model: str | None) -> str:
    """`LICENSE.md` of the output: each source kind's terms, and what the translations are."""
    lines = [
        LICENCE_SIGNATURE,
        "",
        f"`{name}` gathers image–text pairs from the sources below; each pair keeps the terms of",
        "the source it came from (its `source` column). No licence covers the build as a whole.",
        "",
    ]
    for kind, text in licences(sources):
        lines += [f"## {kind}", "", text, ""]
    if any(s.translated for s in sources):
        model = f"the model `{translation_model}`" if translation_model else "a translation memory"
        lines += [
            "## Machine translations",
            "",
            f"The Arabic captions of translated rows (`caption_origin: translated`) were made by"
            f" {model} from the English captions (`caption_en`), which keep their source's terms.",
            "",
        ]
    return "\n".join(lines)


def licences(sources: Sequence[CardSource]) -> list[tuple[str, str]]:
    """(kind, licence text) of each kind among `sources`, in their order."""
    return [(kind, provenance_of(kind).licence) for kind in _unique(s.kind for s in sources)]


def is_our_licence(text: str) -> bool:
    """Whether a `LICENSE.md` found in the output was written by a run (and may be replaced)."""
    return text.startswith(LICENCE_SIGNATURE)


def citations(sources: Sequence[CardSource], translation_model: str | None) -> list[str]:
    """The BibTeX entries a user of the build cites: its sources', and OPUS-MT's when an OPUS-MT
    model made the translations."""
    entries = _unique(provenance_of(s.kind).citation for s in sources)
    # `translators.ctranslate.model_name`: "NAME (CTranslate2, OPUS-MT layout)"; the layout
    # alone says nothing of who trained the model.
    if translation_model and "opus-mt" in translation_model.split(" (CTranslate2")[0].lower():
        entries.append(OPUS_MT_CITATION)
    return [e for e in entries if e]
