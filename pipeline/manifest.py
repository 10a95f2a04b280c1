"""The manifest: YAML parsed into frozen dataclasses and validated before any graph is built.

Every problem is a `ManifestError` whose message is one line naming the key and what is wrong
(`sources[1].paths: no file matches 'wit/*.tsv'`). Relative paths are resolved against the
manifest's folder; paths may be any Beam filesystem URL and may hold globs.
"""

from __future__ import annotations

import dataclasses
import os
import posixpath
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any

import yaml
from apache_beam.io.filesystems import FileSystems

from pipeline import wikimedia


class ManifestError(ValueError):
    """A manifest that cannot be built; the message names the key and the problem."""


# ---------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class WitSource:
    """WIT TSV shards (`.tsv` or `.tsv.gz`); rows whose `language` is accepted are kept."""

    paths: tuple[str, ...]
    # Wikipedia language codes accepted as Arabic. `arz` (Egyptian Arabic Wikipedia) is a
    # policy choice, off by default; `fa`, `ur`, `ckb`, `azb` are Arabic script, not Arabic.
    languages: tuple[str, ...] = ("ar",)
    kind: str = "wit"
    name: str = "wit"


@dataclass(frozen=True)
class ConceptualCaptionsSource:
    """Conceptual Captions `caption<TAB>url` files, translated to Arabic."""

    paths: tuple[str, ...]
    kind: str = "conceptual_captions"
    name: str = "conceptual_captions"


@dataclass(frozen=True)
class CocoSource:
    """COCO captions JSON files, translated; images by URL unless `image_root` is given."""

    paths: tuple[str, ...]
    image_root: str | None = None
    kind: str = "coco"
    name: str = "coco"


@dataclass(frozen=True)
class Flickr8kSource:
    """Flickr8K `NAME.jpg#N<TAB>caption` file and its local image folder, translated."""

    captions: str
    images: str
    kind: str = "flickr8k"
    name: str = "flickr8k"


@dataclass(frozen=True)
class WikipediaSource:
    """A crawl of Arabic Wikipedia article figures: a live MediaWiki API or Enterprise dumps.

    With `api` alone, pages come from the Action API (`titles`, `titles_file`, or every article
    of namespace 0 up to `limit`). With `dump`, pages come from the dump files (only the pages
    `titles`/`titles_file` name, when given, and at most `limit`); an `api` given beside a dump
    is asked for file facts only (licence, attribution, thumbnail URL).
    """

    api: str | None = None
    dump: tuple[str, ...] = ()
    titles: tuple[str, ...] = ()
    titles_file: str | None = None
    limit: int | None = None  # at most this many pages
    user_agent: str | None = None  # required with `api`: `name/version (contact) library/version`
    # The wiki's public address for `page_url` (`https://ar.wikipedia.org`); default: the api's
    # scheme and host. A mirror or a local stand-in sets the real wiki's here.
    site_url: str | None = None
    # Etiquette (FORMATS.md §6): maxlag on every Action API call, requests to the API host one
    # at a time by default and at most `requests_per_second`, Retry-After and maxlag answers
    # honoured, exponential backoff from `backoff` seconds on 429, 5xx and network errors.
    maxlag: int = 5
    requests_per_second: float = 5.0  # 0: no limit
    concurrency: int = 1  # requests in flight to the API host
    retries: int = 5
    backoff: float = 1.0
    max_wait: float = 300.0  # the longest single wait a Retry-After may ask for
    timeout: float = 30.0
    # File facts: thumbnails of this width when the original is wider (cheaper to fetch), else
    # the original; a standard width (pipeline.wikimedia.STEPS); `auto`: images.thumb_width
    # (the smallest step at or above images.size); None: always the original.
    thumb_width: int | str | None = "auto"
    non_free: bool = False  # keep non-free (fair-use) files; dropped as `non_free` by default
    min_width: int = 50  # `icon`: images rendered narrower than this (flags, logos)
    kind: str = "wikipedia"
    name: str = "wikipedia"


SOURCE_KINDS: dict[str, type] = {
    "wikipedia": WikipediaSource,
    "wit": WitSource,
    "conceptual_captions": ConceptualCaptionsSource,
    "coco": CocoSource,
    "flickr8k": Flickr8kSource,
}

# A User-Agent's contact: an e-mail address or a URL in parentheses (Wikimedia's policy).
_CONTACT = re.compile(r"\([^()]*(?:[\w.+-]+@[\w-]+\.[\w.-]+|https?://[^\s()]+)[^()]*\)")

# Keys of a source that name input files, which must exist when the manifest is read.
PATH_KEYS = {"paths", "captions", "images", "image_root", "dump", "titles_file"}

Source = WitSource | ConceptualCaptionsSource | CocoSource | Flickr8kSource | WikipediaSource

# ---------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class TranslationConfig:
    """The CTranslate2 model that translates English captions, earlier translations, and the
    thresholds of the translation quality filters. Options read like CTranslate2's own."""

    # A CTranslate2 model folder with `source.spm` + `target.spm` (OPUS-MT layout) or one
    # `sentencepiece.bpe.model` (NLLB layout, with `target_prefix` such as `arb_Arab`).
    model: str | None = None
    # Earlier translations (`en`, `ar`, optional `score`): a Parquet file, a TSV with that
    # header, or a folder of either, such as an earlier run's `DIR/translations/`.
    memory: str | None = None
    device: str = "auto"  # auto | cpu | cuda: auto picks CUDA when CTranslate2 sees a GPU
    compute_type: str | None = None  # None: int8 on CPU, int8_float16 on CUDA
    beam_size: int = 4
    # Sub-batches of one `translate_batch` call, and what their size counts (tokens | examples).
    # None: 32 examples on CPU (sub-batches to keep `inter_threads` workers busy), 4096 tokens
    # on CUDA (big batches fill a GPU).
    max_batch_size: int | None = None
    batch_type: str | None = None
    # Batches translated in parallel, and threads per batch. None: on CPU, one single-threaded
    # worker per core (`benchmarks/translate.py`: greedy twice as fast as one 2-thread worker on
    # 2 cores); on CUDA, one worker with CTranslate2's default threads. With several SDK
    # processes per machine (Dataflow), set inter_threads so that processes x threads <= cores.
    inter_threads: int | None = None
    intra_threads: int | None = None
    max_input_length: int = 256  # source tokens; longer captions are truncated and counted
    max_decoding_ratio: float = 1.5  # decoding stops near this multiple of the source length
    source_prefix: str | None = None  # NLLB: a source language token such as `eng_Latn`
    target_prefix: str | None = None  # NLLB: the target language token, `arb_Arab`
    # Quality filters on each translation, each a counted drop reason.
    min_score: float = -1.5  # `low_translation_score`: mean log-probability per target token
    min_length_ratio: float = 0.3  # `length_ratio`: Arabic / English characters below this
    max_length_ratio: float = 3.0  # `length_ratio`: or above this
    max_latin_share: float = 0.5  # `untranslated`: Latin letters over all letters above this
    max_ngram_repeats: int = 3  # `repetition_loop`: an n-gram repeated more times in a row


@dataclass(frozen=True)
class FiltersConfig:
    """Text filters applied to every Arabic caption."""

    # fastText lid.176: the top label must be one of `langid_labels` with at least this probability.
    langid_min_score: float = 0.5
    langid_labels: tuple[str, ...] = ("ar",)
    # Length bounds of the normalised caption.
    min_chars: int = 3
    max_chars: int = 1000
    min_words: int = 1
    max_words: int = 200


@dataclass(frozen=True)
class HostLimits:
    """How hard one image host may be pressed (`images.hosts.<host name>`): downloads in flight
    at once, requests started per second and body bytes read per second (0: no limit)."""

    concurrency: int
    requests_per_second: float = 0.0
    bytes_per_second: float = 0.0


# Wikimedia's robot policy for upload.wikimedia.org (updated April 2025, FORMATS.md §5c): a
# total concurrency of at most 2 and at most 25 Mbps for clients that have not agreed otherwise.
DEFAULT_HOSTS: tuple[tuple[str, HostLimits], ...] = (
    ("upload.wikimedia.org", HostLimits(concurrency=2, bytes_per_second=25e6 / 8)),
)


@dataclass(frozen=True)
class ImagesConfig:
    """Downloading, verifying, hashing and storing the image of every pair."""

    fetch: bool = True  # false keeps URL-only rows (no bytes, no hashes)
    allow_private_hosts: bool = False  # true only for tests and the demo (loopback servers)
    user_agent: str | None = None  # sent with every image request (Wikimedia requires one)
    resize: str = "keep_ratio"  # no | keep_ratio | center_crop
    size: int = 256  # the target side for keep_ratio (longest side) and center_crop
    format: str = "jpeg"  # jpeg | png | webp: the stored encoding
    quality: int = 95  # encoder quality for jpeg and webp
    min_size: int = 32  # `too_small`: either side of the original below this
    max_pixels: int = 89_478_485  # `too_large`: decompression-bomb guard, from the header
    max_bytes: int = 20_000_000  # `too_large`: body cap, enforced while streaming
    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    deadline: float = 30.0  # `timeout`: total seconds for one download, trickling included
    retries: int = 3  # on connection errors, 429 and 5xx, with exponential backoff
    concurrency: int = 32  # downloads in flight per worker
    per_host: int = 8  # downloads in flight per host per worker, for hosts not in `hosts`
    # Limits by host name, merged over DEFAULT_HOSTS (pipeline.hosts): concurrency,
    # requests_per_second, bytes_per_second. A YAML mapping {host: {concurrency: 2, ...}}.
    hosts: tuple[tuple[str, HostLimits], ...] = DEFAULT_HOSTS
    # A host that answers 429 or 503 without Retry-After pauses this long at first (seconds),
    # doubling on each new refusal up to `max_pause`; a Retry-After is honoured up to `max_pause`.
    pause: float = 2.0
    max_pause: float = 120.0
    # Commons originals (and thumbnails at a width that is not a step) are fetched as the
    # upload host's thumbnail of this width (pipeline.wikimedia): `auto` is the smallest standard
    # width at or above `size` (none with `resize: no`); null fetches originals.
    thumb_width: int | str | None = "auto"
    respect_noai: bool = True  # `opted_out`: honour X-Robots-Tag noai / noimageai
    # URL prefixes fetched from elsewhere: a mirror, a cache, or the demo's local server. The
    # `image_url` column keeps the original. A YAML mapping {from-prefix: to-prefix}.
    url_map: tuple[tuple[str, str], ...] = ()
    # Where the run's image store is kept as a cache for reruns (pipeline.images.image_store):
    # `auto` (DIR/cache/images for a local output, off for gs:// and other URLs), a folder
    # (relative to the manifest), or false (the store is removed at the commit). `true` is
    # `auto`.
    cache: str | bool = "auto"


@dataclass(frozen=True)
class DedupeConfig:
    """Exact and near-duplicate images across all sources, and placeholder images."""

    max_hamming: int = 4  # pHash distance at or below which two images are the same
    # An image group reached from this many distinct URLs with differing captions is a
    # placeholder ("photo unavailable"): all its pairs are dropped as `placeholder_image`.
    placeholder_min_urls: int = 5


@dataclass(frozen=True)
class OutputConfig:
    rows_per_shard: int = 10000


@dataclass(frozen=True)
class Manifest:
    name: str
    sources: tuple[Source, ...]
    translation: TranslationConfig = field(default_factory=TranslationConfig)
    filters: FiltersConfig = field(default_factory=FiltersConfig)
    images: ImagesConfig = field(default_factory=ImagesConfig)
    dedupe: DedupeConfig = field(default_factory=DedupeConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    path: str = ""

    def source(self, name: str) -> Source:
        """The source whose `stats.json` key is `name` (`wit`, `wit#2`)."""
        return next(s for s in self.sources if s.name == name)


SECTIONS: dict[str, type] = {
    "translation": TranslationConfig,
    "filters": FiltersConfig,
    "images": ImagesConfig,
    "dedupe": DedupeConfig,
    "output": OutputConfig,
}

# ---------------------------------------------------------------------------- checks


def _check(ok: bool, where: str, problem: str) -> None:
    if not ok:
        raise ManifestError(f"{where}: {problem}")


def _convert(value: Any, hint: Any, where: str) -> Any:
    """`value` as the type `hint` says, or a ManifestError naming `where`."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        if isinstance(value, bool) and bool in options:  # `cache: str | bool`
            return value
        if isinstance(value, str) and str in options:  # `thumb_width: int | str`: `auto`
            return _convert(value, str, where)
        return _convert(value, options[0], where)
    if origin is tuple and typing.get_origin(typing.get_args(hint)[0]) is tuple:
        # A mapping given as YAML `{key: value}`, kept as ordered (key, value) pairs.
        _check(isinstance(value, dict), where, f"expected a mapping, got {value!r}")
        item = typing.get_args(typing.get_args(hint)[0])[1]
        return tuple(
            (
                _convert(k, str, f"{where}.{k}"),
                _build(item, v, f"{where}.{k}")
                if dataclasses.is_dataclass(item)
                else _convert(v, item, f"{where}.{k}"),
            )
            for k, v in value.items()
        )
    if origin is tuple:
        item = typing.get_args(hint)[0]
        if isinstance(value, str):
            value = [value]
        _check(isinstance(value, list), where, f"expected a list, got {value!r}")
        return tuple(_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if hint is bool:
        _check(isinstance(value, bool), where, f"expected true or false, got {value!r}")
        return value
    if hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        _check(ok, where, f"expected an integer, got {value!r}")
        return value
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        _check(ok, where, f"expected a number, got {value!r}")
        return float(value)
    if hint is str:
        _check(isinstance(value, str) and value != "", where, f"expected text, got {value!r}")
        return value
    raise TypeError(f"unsupported manifest type {hint!r}")  # a bug in this module, not the input


def _build(cls: type, raw: Any, where: str, skip: tuple[str, ...] = ()) -> Any:
    """An instance of dataclass `cls` from the mapping `raw`; unknown keys are errors."""
    _check(isinstance(raw, dict), where, f"expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in skip}
    for key in raw:
        _check(key in fields, f"{where}.{key}" if where else key, "unknown key")
    values = {}
    for name, f in fields.items():
        key_where = f"{where}.{name}" if where else name
        if name in raw:
            values[name] = _convert(raw[name], hints[name], key_where)
        else:
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            _check(not required, key_where, "missing")
    return cls(**values)


def _resolve(path: str, base: str) -> str:
    """A manifest path made absolute against the manifest's folder (URLs stay as they are)."""
    if "://" in path or os.path.isabs(path):
        return path
    if "://" in base:  # normpath would fold the `//` of the scheme
        scheme, rest = base.split("://", 1)
        return f"{scheme}://{posixpath.normpath(posixpath.join(rest, path))}"
    return os.path.normpath(os.path.join(base, path))


def _must_exist(path: str, where: str, folder: bool = False) -> None:
    if folder and "://" not in path:
        _check(os.path.isdir(path), where, f"no such folder {path!r}")
        return
    if folder:  # an object store has no folders, only objects under a prefix
        path = path.rstrip("/") + "/*"
    try:
        matched = FileSystems.match([path])[0].metadata_list
    except Exception as err:  # noqa: BLE001 - any filesystem failure is a manifest error here
        raise ManifestError(f"{where}: cannot list {path!r} ({err})") from err
    _check(bool(matched), where, f"no file matches {path!r}")
    for meta in matched:
        if "://" not in meta.path:
            _check(os.access(meta.path, os.R_OK), where, f"cannot read {meta.path!r}")


def _check_source(src: Source, where: str, base: str, check_paths: bool = True) -> Source:
    updates = {}
    for key in [f.name for f in dataclasses.fields(src) if f.name in PATH_KEYS]:
        value = getattr(src, key)
        if value is None or value == ():
            continue
        if isinstance(value, tuple):
            resolved = tuple(_resolve(p, base) for p in value)
            for i, p in enumerate(resolved):
                if check_paths:
                    _must_exist(p, f"{where}.{key}[{i}]")
        else:
            resolved = _resolve(value, base)
            if check_paths:
                _must_exist(resolved, f"{where}.{key}", folder=key in ("images", "image_root"))
        updates[key] = resolved
    if isinstance(src, WikipediaSource):
        _check(bool(src.api or src.dump), where, "give 'api' (a live crawl) or 'dump'")
        for key in ("maxlag", "retries", "min_width"):
            _check(getattr(src, key) >= 0, f"{where}.{key}", "must be >= 0")
        for key in ("requests_per_second", "backoff", "max_wait"):
            _check(getattr(src, key) >= 0, f"{where}.{key}", "must be >= 0")
        _check(src.concurrency >= 1, f"{where}.concurrency", "must be >= 1")
        _check(
            src.site_url is None or src.site_url.startswith(("http://", "https://")),
            f"{where}.site_url",
            "expected an http(s) URL",
        )
        _check(src.timeout > 0, f"{where}.timeout", "must be positive")
        if src.api:
            _check(
                src.api.startswith(("http://", "https://")),
                f"{where}.api",
                "expected an http(s) URL",
            )
            _check(
                bool(src.user_agent and _CONTACT.search(src.user_agent)),
                f"{where}.user_agent",
                "a live crawl needs a descriptive User-Agent with a contact, "
                "e.g. 'arabic-pairs/0.1 (https://example.org; you@example.org)'",
            )
        _check(src.limit is None or src.limit > 0, f"{where}.limit", "must be positive")
    if isinstance(src, WitSource):
        _check(bool(src.languages), f"{where}.languages", "must name at least one language code")
    return dataclasses.replace(src, **updates)


def _check_sections(m: Manifest) -> None:
    t = m.translation
    _check(t.device in ("auto", "cpu", "cuda"), "translation.device", "one of auto, cpu, cuda")
    _check(
        t.batch_type in (None, "tokens", "examples"), "translation.batch_type", "tokens or examples"
    )
    for key in ("beam_size", "max_batch_size", "max_input_length", "inter_threads"):
        value = getattr(t, key)
        _check(value is None or value > 0, f"translation.{key}", "must be positive")
    _check(
        t.intra_threads is None or t.intra_threads >= 0, "translation.intra_threads", "must be >= 0"
    )
    _check(t.max_decoding_ratio > 0, "translation.max_decoding_ratio", "must be positive")
    _check(
        0 <= t.min_length_ratio < t.max_length_ratio,
        "translation.max_length_ratio",
        "must be above min_length_ratio (>= 0)",
    )
    _check(0 <= t.max_latin_share <= 1, "translation.max_latin_share", "must be in [0, 1]")
    _check(t.max_ngram_repeats >= 1, "translation.max_ngram_repeats", "must be >= 1")
    i = m.images
    _check(
        i.resize in ("no", "keep_ratio", "center_crop"),
        "images.resize",
        "no, keep_ratio or center_crop",
    )
    _check(i.format in ("jpeg", "png", "webp"), "images.format", "jpeg, png or webp")
    _check(1 <= i.quality <= 100, "images.quality", "must be in [1, 100]")
    for key in ("size", "max_pixels", "max_bytes", "concurrency", "per_host"):
        _check(getattr(i, key) > 0, f"images.{key}", "must be positive")
    for key in ("connect_timeout", "read_timeout", "deadline"):
        _check(getattr(i, key) > 0, f"images.{key}", "must be positive")
    _check(i.min_size >= 1, "images.min_size", "must be >= 1")
    _check(i.retries >= 0, "images.retries", "must be >= 0")
    for host, limits in i.hosts:
        where = f"images.hosts.{host}"
        _check(limits.concurrency >= 1, f"{where}.concurrency", "must be >= 1")
        for key in ("requests_per_second", "bytes_per_second"):
            _check(getattr(limits, key) >= 0, f"{where}.{key}", "must be >= 0 (0: no limit)")
    _check(i.pause > 0, "images.pause", "must be positive")
    _check(i.max_pause >= i.pause, "images.max_pause", "must be >= pause")
    for prefix, target in i.url_map:
        _check(
            target.startswith(("http://", "https://")),
            f"images.url_map.{prefix}",
            f"expected an http(s) URL prefix, got {target!r}",
        )
    f = m.filters
    _check(0.0 <= f.langid_min_score <= 1.0, "filters.langid_min_score", "must be in [0, 1]")
    _check(bool(f.langid_labels), "filters.langid_labels", "must name at least one label")
    _check(f.min_chars >= 0, "filters.min_chars", "must be >= 0")
    _check(f.max_chars >= max(1, f.min_chars), "filters.max_chars", "must be >= min_chars")
    _check(f.min_words >= 0, "filters.min_words", "must be >= 0")
    _check(f.max_words >= max(1, f.min_words), "filters.max_words", "must be >= min_words")
    _check(0 <= m.dedupe.max_hamming <= 64, "dedupe.max_hamming", "must be in [0, 64]")
    _check(m.dedupe.placeholder_min_urls >= 2, "dedupe.placeholder_min_urls", "must be >= 2")
    _check(m.output.rows_per_shard > 0, "output.rows_per_shard", "must be positive")


def _step_width(value: int | str | None, where: str, auto: int | None) -> int | None:
    """A `thumb_width` made concrete: `auto` becomes the `auto` given; a number must be a
    standard width, else the error names the nearest."""
    if value == "auto":
        return auto
    if value is None:
        return None
    _check(isinstance(value, int), where, f"expected a width, auto or null, got {value!r}")
    _check(
        wikimedia.is_step(value),
        where,
        f"{value} is not a standard thumbnail width, which upload.wikimedia.org refuses "
        f"(standard: {', '.join(map(str, wikimedia.STEPS))}); the nearest is "
        f"{wikimedia.nearest_step(value)}",
    )
    return value


def images_thumb_width(images: ImagesConfig) -> int | None:
    """`images.thumb_width` as a width: `auto` (the default, and what a config made in code
    keeps) is the smallest standard width at or above `size`, none with `resize: no`."""
    if images.thumb_width != "auto":
        return images.thumb_width
    return None if images.resize == "no" else wikimedia.step_at_least(images.size)


def _resolve_images(images: ImagesConfig, raw: Any) -> ImagesConfig:
    """`hosts` merged over the defaults, `thumb_width` made concrete."""
    hosts = dict(DEFAULT_HOSTS)
    if isinstance(raw, dict) and "hosts" in raw:
        hosts.update((host.lower(), limits) for host, limits in images.hosts)
    auto = images_thumb_width(dataclasses.replace(images, thumb_width="auto"))
    width = _step_width(images.thumb_width, "images.thumb_width", auto)
    return dataclasses.replace(images, hosts=tuple(hosts.items()), thumb_width=width)


def _resolve_thumb_width(src: Source, images: ImagesConfig, where: str) -> Source:
    if not isinstance(src, WikipediaSource):
        return src
    width = _step_width(src.thumb_width, f"{where}.thumb_width", images.thumb_width)
    return dataclasses.replace(src, thumb_width=width)


def parse_manifest(raw: Any, base: str, path: str = "", *, check_paths: bool = True) -> Manifest:
    """A validated `Manifest` from already-loaded YAML; paths resolve against `base`.

    `check_paths=False` skips the checks that input files and the model exist (paths are still
    resolved): `python -m pipeline estimate` plans a build whose inputs are not downloaded yet.
    """
    _check(isinstance(raw, dict), "manifest", "expected a mapping at the top level")
    for key in raw:
        _check(key in ("name", "sources", *SECTIONS), key, "unknown key")
    name = _convert(raw.get("name", "arabic-pairs"), str, "name")
    raw_sources = raw.get("sources")
    _check(isinstance(raw_sources, list) and raw_sources, "sources", "expected a non-empty list")

    sources: list[Source] = []
    seen: dict[str, int] = {}
    for i, raw_src in enumerate(raw_sources):
        where = f"sources[{i}]"
        _check(isinstance(raw_src, dict), where, f"expected a mapping, got {raw_src!r}")
        kind = raw_src.get("kind")
        _check(kind is not None, f"{where}.kind", "missing")
        _check(
            isinstance(kind, str) and kind in SOURCE_KINDS,
            f"{where}.kind",
            f"unknown kind {kind!r} (one of: {', '.join(SOURCE_KINDS)})",
        )
        body = {k: v for k, v in raw_src.items() if k != "kind"}
        src = _build(SOURCE_KINDS[kind], body, where, skip=("kind", "name"))
        seen[kind] = seen.get(kind, 0) + 1
        name_in_stats = kind if seen[kind] == 1 else f"{kind}#{seen[kind]}"
        src = dataclasses.replace(src, name=name_in_stats)
        sources.append(_check_source(src, where, base, check_paths))

    sections = {}
    for key, cls in SECTIONS.items():
        value = raw.get(key)
        sections[key] = cls() if value is None else _build(cls, value, key)
    translation = sections["translation"]
    sections["translation"] = dataclasses.replace(
        translation,
        **{
            k: _resolve(getattr(translation, k), base)
            for k in ("model", "memory")
            if getattr(translation, k)
        },
    )
    for key in ("model", "memory"):
        value = getattr(sections["translation"], key)
        if value and check_paths:
            _must_exist(value, f"translation.{key}", folder=key == "model")
    cache = sections["images"].cache
    if cache is True or (isinstance(cache, str) and cache != "auto"):
        cache = "auto" if cache is True else _resolve(cache, base)
        sections["images"] = dataclasses.replace(sections["images"], cache=cache)
    sections["images"] = _resolve_images(sections["images"], raw.get("images") or {})
    sources = [
        _resolve_thumb_width(s, sections["images"], f"sources[{i}]") for i, s in enumerate(sources)
    ]
    manifest = Manifest(name=name, sources=tuple(sources), path=path, **sections)
    _check_sections(manifest)
    return manifest


def load_manifest(path: str, *, check_paths: bool = True) -> Manifest:
    """Read and validate the manifest at `path` (`check_paths`: see `parse_manifest`)."""
    try:
        with FileSystems.open(path) as f:
            text = f.read().decode("utf-8")
    except Exception as err:  # noqa: BLE001 - a missing or unreadable manifest is one error line
        raise ManifestError(f"{path}: cannot read the manifest ({err})") from err
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        if mark is not None:
            line = mark.line + 1
        else:  # a ReaderError (a control character) has only a character position
            line = text[: getattr(err, "position", 0)].count("\n") + 1
        problem = getattr(err, "problem", None) or getattr(err, "reason", None) or str(err)
        problem = " ".join(str(problem).split())
        raise ManifestError(f"{path}: line {line} invalid YAML ({problem})") from err
    base = os.path.dirname(os.path.abspath(path)) if "://" not in path else path.rsplit("/", 1)[0]
    return parse_manifest(raw, base, path, check_paths=check_paths)
