"""The output folder a run may write into, checked before any work.

A run replaces `README.md` and `stats.json` and the shards of `data/` and of `rejected/` (and
`LICENSE.md` when an earlier run wrote it), and removes the shards of the output it replaces
(`pipeline.write.commit`). So it writes only into a folder that is new, empty, or an earlier output
of this pipeline: one whose `README.md` is our dataset card, or, when a first run was killed before
its commit, one holding nothing but what a run writes (staging folders, the translations, shards,
and the `cache/` of earlier versions). Anything else is the user's, and the run is refused with one
line before it reads a record. In an earlier output, files that are not ours (`data/notes.txt`,
`data/train-mine.parquet`, `rejected/mine.csv`) are never deleted or overwritten, and neither is
the `cache/` an earlier version kept there.
"""

from __future__ import annotations

import os

from apache_beam.io.filesystems import FileSystems

from pipeline import rejected
from pipeline.files import is_remote, join, read_text
from pipeline.write import (
    CARD_KEY,
    CARD_SIGNATURE,
    DATA_DIR,
    STAGING_PREFIX,
    is_shard,
)
from translators.memory import TRANSLATIONS_DIR

CARD = "README.md"
# The image cache (`images.cache: auto`) of earlier versions, DIR/cache/images: still ours, never
# used or deleted by a run now (the cache is outside the output folder, pipeline.images.cache).
EARLIER_CACHE = "cache"
# The folders a run writes beside `data/` and its staging folders before its commit: all that a
# killed first run can leave. A card, stats or report without our card are someone else's.
LEFT_BY_A_RUN = frozenset({TRANSLATIONS_DIR, EARLIER_CACHE})
# The folders of shards: only the shards in them are ours (`pipeline.write.commit`).
SHARD_FOLDERS = {DATA_DIR: is_shard, rejected.REJECTED_DIR: rejected.is_shard}


def is_our_card(text: str) -> bool:
    """Whether `text` is a dataset card this pipeline wrote."""
    header = text.split("\n---\n", 1)[0] if text.startswith("---\n") else ""
    return f"\n{CARD_KEY}:" in header or CARD_SIGNATURE in text


def _foreign(entries: dict[str, list[str]]) -> list[str]:
    """The top-level entries (name → the names directly in it, for the `SHARD_FOLDERS`) that a
    run never writes."""
    foreign = []
    for name, inside in sorted(entries.items()):
        if name.startswith(STAGING_PREFIX):
            continue
        if name in SHARD_FOLDERS:
            ours = SHARD_FOLDERS[name]
            foreign += [f"{name}/{n}" for n in sorted(inside) if not ours(n)]
        elif name not in LEFT_BY_A_RUN:
            foreign.append(name)
    return foreign


def _local_entries(output_dir: str) -> dict[str, list[str]]:
    entries = {}
    for name in os.listdir(output_dir):
        path = os.path.join(output_dir, name)
        entries[name] = os.listdir(path) if name in SHARD_FOLDERS and os.path.isdir(path) else []
    return entries


def _remote_entries(output_dir: str) -> dict[str, list[str]]:
    prefix = output_dir.rstrip("/") + "/"
    entries: dict[str, list[str]] = {}
    for meta in FileSystems.match([prefix + "**"])[0].metadata_list:
        parts = meta.path[len(prefix) :].split("/")
        inside = entries.setdefault(parts[0], [])
        if len(parts) == 2:
            inside.append(parts[1])
    return entries


def output_problem(output_dir: str) -> str | None:
    """Why a run may not write into `output_dir` (one line naming it), or None when it may."""
    where = f"--output {output_dir}"
    if not is_remote(output_dir):
        if os.path.exists(output_dir) and not os.path.isdir(output_dir):
            return f"{where}: is a file, not a folder"
        if not os.path.exists(output_dir):
            parent = os.path.dirname(os.path.abspath(output_dir))
            while not os.path.exists(parent):
                parent = os.path.dirname(parent)
            if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
                return f"{where}: cannot be created ({parent} is not a writable folder)"
            return None
    card = read_text(join(output_dir, CARD))
    if card is not None and is_our_card(card):
        return None  # an earlier output: its files that are not ours are left alone
    try:
        entries = (_remote_entries if is_remote(output_dir) else _local_entries)(output_dir)
    except OSError as err:
        return f"{where}: cannot be listed ({err})"
    foreign = _foreign(entries)
    if not foreign:
        return None
    shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
    return (
        f"{where}: the folder is not empty and is not an arabic-pairs output (it holds "
        f"{shown}); a run replaces README.md, stats.json and data/: choose a new or empty folder"
    )
