"""Where the images stage keeps the images it stores, and the image cache of later runs.

The stored image goes into the run's `ImageStore` (`pipeline.store`: append-only packs, one
per bundle) and the pair leaves with a reference to it, never with the bytes. The store is the
image cache too (`images.cache`, see `image_store`): a rerun or a resumed run downloads only
what it has not stored yet.

`images.cache: auto` is one folder outside every output folder, `$XDG_CACHE_HOME/arabic-pairs/
images` (`~/.cache/...` when XDG_CACHE_HOME is unset, as Hugging Face and pip do): the output
folder is the dataset, and uploading it must not ship a cache larger than the data. The folder
is shared by every run, whatever its output folder, so a build into a new folder reuses the
downloads of earlier builds. Sharing is safe because nothing in a store is ever rewritten: each
writer creates a pack of its own (a uuid4 name, opened with `x`, so two runs never write one
file), there is no index file (`StoreIndex` is rebuilt in memory from the packs' headers), a
pack another run is still appending to reads as its whole records (a record cut short is left
out, a whole one is checked against its sha256 before reuse), and no run deletes a pack. Two
runs at once may both download an image the cache lacked; the second copy costs disk, not
correctness. An output on `gs://` or `s3://` has no cache by default (its workers' local disks
are not shared), unless a folder is named.

`auto` depends on the run's output folder, so it means something only once `resolve_cache` has
made it a folder or off; that is the one place it is read. Everything else takes a resolved
config and refuses `auto` (`cache_folder`), rather than quietly running without the cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any

import imagehash
import PIL

from pipeline.config import ImagesConfig
from pipeline.files import is_remote, join
from pipeline.store import ImageStore

# `images.cache: auto`: this folder under the user's cache home (`default_cache_folder`).
CACHE_HOME_FOLDER = os.path.join("arabic-pairs", "images")
STAGING_STORE = "images"  # the run's store under its staging folder, when there is no cache


def default_cache_folder() -> str:
    """The folder of `images.cache: auto`: `$XDG_CACHE_HOME/arabic-pairs/images`, or
    `~/.cache/arabic-pairs/images` when XDG_CACHE_HOME is unset, empty or relative (the XDG
    base directory spec ignores a relative one)."""
    home = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(home):
        home = os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(home, CACHE_HOME_FOLDER)


def resolve_cache(config: ImagesConfig, output_dir: str) -> ImagesConfig:
    """`config` with `cache: auto` made concrete for a run into `output_dir`: the shared folder
    `default_cache_folder()` when the output is local, off (`False`) when it is a filesystem URL
    (`gs://`: the store of a run there is removed after the commit rather than kept)."""
    if config.cache != "auto":
        return config
    if is_remote(output_dir):
        return dataclasses.replace(config, cache=False)
    return dataclasses.replace(config, cache=default_cache_folder())


def cache_folder(config: ImagesConfig) -> str | None:
    """The image cache's folder of a config `resolve_cache` resolved; None when it is off.
    Raises `ValueError` for `auto`: left unresolved, a run would quietly go without the cache."""
    cache = config.cache
    if cache is False:
        return None
    if isinstance(cache, str) and cache != "auto":
        return cache
    raise ValueError(
        f"images.cache is {cache!r}, not a folder or false: resolve_cache(config, output_dir) "
        "decides what `auto` is for the run's output folder"
    )


def cache_settings(config: ImagesConfig) -> dict[str, Any]:
    """What decides the stored image of a body: a cache entry is only reused under the same."""
    return {
        "pillow": PIL.__version__,
        "imagehash": imagehash.__version__,
        **{
            key: getattr(config, key)
            for key in (
                "resize",
                "size",
                "format",
                "quality",
                "min_size",
                "max_pixels",
                "max_bytes",
                "allow_private_hosts",
                "respect_noai",
            )
        },
    }


def image_store(config: ImagesConfig, staging: str) -> ImageStore:
    """Where a run keeps its stored images (`pipeline.store`).

    With a cache (`config.cache` a folder; `auto` resolved first by `resolve_cache`, or this
    raises `ValueError`) the store is the cache: `CACHE/<digest of cache_settings>/packs/`,
    looked up by URL before a download and kept after the run, so a rerun or a resumed run (into
    any output folder, with the shared default) downloads only what it has not stored yet, and
    changing `images.size` never serves an image of the old size.
    Without one it is `STAGING/images/`, removed with the staging folder at the commit.
    Local files (Flickr8K's folder) are stored but never looked up: reading them is what a
    download would replace. Drops are not kept: a 404 or a timeout may recover by the next run.
    """
    cache = cache_folder(config)
    if cache is not None:
        digest = hashlib.sha256(
            json.dumps(cache_settings(config), sort_keys=True).encode("utf-8")
        ).hexdigest()[:16]
        return ImageStore(join(cache, digest), reuse=True)
    return ImageStore(join(staging, STAGING_STORE))
