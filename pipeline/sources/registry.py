"""Every source kind the manifest accepts, in the order the README lists them: one line each.

A new source is one module of `pipeline/sources/` (its config dataclass, its reader, its
declared reasons and a `KIND = SourceKind(...)`) and one line here; the manifest, the graph
(`pipeline.build`), the list of reasons (`pipeline.reasons`) and `estimate` read this table.
"""

from __future__ import annotations

from pipeline.sources import coco, conceptual_captions, flickr8k, pairs, wikipedia, wit
from pipeline.sources.base import SourceKind

KINDS: dict[str, SourceKind] = {
    k.kind: k
    for k in (
        wikipedia.KIND,
        wit.KIND,
        conceptual_captions.KIND,
        coco.KIND,
        flickr8k.KIND,
        pairs.KIND,
    )
}


def kind_of(source) -> SourceKind:
    """The registry entry of a source config (a `WitSource`, ...)."""
    return KINDS[source.kind]
