"""What a source kind declares: the entry a source module adds to the registry
(`pipeline.sources.registry`), which the manifest, the graph (`pipeline.build`) and `estimate`
read. A new source is one module defining its config dataclass, its reader and a `KIND`, plus one
line in the registry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from pipeline.records import Drop, Pair
from pipeline.steps import Reasons

GENUINE_ARABIC = "ar"  # the source's captions are written in Arabic
ENGLISH = "en"  # the source's captions are English, machine-translated by the pipeline
PER_SOURCE = "source"  # each source of the kind says (`pairs`' `language` key): `translated_when`


@dataclass(frozen=True)
class KnownFile:
    """A file of a real release: its records (what `stats.json` counts as `read`) and the
    archive a user downloads to get it (several files may share one archive)."""

    records: int
    archive: str
    archive_bytes: int


@dataclass(frozen=True)
class Provenance:
    """What the dataset card says of a kind's data (`pipeline.card`): its Hub `source_datasets`
    entry (`original`, or `extended|<dataset>`), the terms its captions and images come under,
    and how to cite it (BibTeX; empty when there is nothing to cite)."""

    hub_source: str
    licence: str
    citation: str = ""


# A kind that does not say (a source added without one): the card points at the source itself.
UNDECLARED_PROVENANCE = Provenance(
    "extended|other", "The terms of the source's own data; this kind does not declare them."
)


@dataclass(frozen=True)
class KindProfile:
    """What happens to one kind's records in a full build, for `estimate`: kept / read, the
    share of read records whose image is downloaded, the average bytes of one download, and why.
    A figure may be the name of one of `estimate`'s assumptions instead of a number."""

    survival: float | str
    fetch_share: float | str
    image_bytes: float | str
    why: str


@dataclass(frozen=True)
class SourceKind:
    """One source kind.

    `config`: the frozen dataclass of its manifest keys (with `kind` and `name` fields).
    `reader`: a PTransform made from a config: `p | reader(config)` → `(pairs, dropped)`.
    `language`: `ar` (genuine Arabic captions) or `en` (English, translated), or `source` when
    each source says, and then `translated_when(config)` answers for one source.
    `reasons`: every drop reason its reader can emit. `path_keys`: the keys naming input files
    (resolved against the manifest's folder and checked to exist), `folder_keys` those of them
    that name folders. `check(config, where)`: validation beyond types (raises ManifestError).
    For `estimate`: `profile`; `record_keys`, the keys whose files hold the records (`read`);
    `count(stream, path, config)`, the records of one local file (the reader's own parser);
    `known_files`, the real release's files by name; `wikimedia_images`: its images come from
    upload.wikimedia.org. `provenance`: its licence, citation and Hub source for the card.
    """

    kind: str
    config: type
    reader: Callable[[Any], Any]
    language: str
    reasons: Reasons
    profile: KindProfile
    path_keys: tuple[str, ...] = ()
    folder_keys: tuple[str, ...] = ()
    check: Callable[[Any, str], None] | None = None
    record_keys: tuple[str, ...] = ("paths",)
    count: Callable[[BinaryIO, str, Any], Iterable[Pair | Drop]] | None = None
    known_files: Mapping[str, KnownFile] = field(default_factory=dict)
    wikimedia_images: bool = False
    translated_when: Callable[[Any], bool] | None = None
    provenance: Provenance = UNDECLARED_PROVENANCE

    def translates(self, config: Any) -> bool:
        """Whether the captions of `config` (a source of this kind) are English, translated."""
        if self.translated_when is not None:
            return self.translated_when(config)
        return self.language == ENGLISH
