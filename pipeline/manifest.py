"""The manifest: YAML parsed into frozen dataclasses and validated before any graph is built.

Every problem is a `ManifestError` whose message is one line naming the key and what is wrong
(`sources[1].paths: no file matches 'wit/*.tsv'`). Relative paths are resolved against the
manifest's folder; paths may be any Beam filesystem URL and may hold globs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import math
import os
import posixpath
import types
import typing
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml
from apache_beam.io.filesystems import FileSystems

from pipeline import wikimedia
from pipeline.config import (  # noqa: F401 - the sections, importable from here too
    DEFAULT_HOSTS,
    IMAGE_FORMATS,
    OUTPUT_FORMATS,
    SCORES,
    DedupeConfig,
    FiltersConfig,
    HostLimits,
    ImagesConfig,
    ManifestError,
    OutputConfig,
    ScoringConfig,
    TranslationConfig,
    images_thumb_width,
    require,
    score_filter_problems,
)
from pipeline.sources.coco import CocoSource
from pipeline.sources.conceptual_captions import ConceptualCaptionsSource
from pipeline.sources.flickr8k import Flickr8kSource
from pipeline.sources.pairs import PairsSource
from pipeline.sources.registry import KINDS, kind_of
from pipeline.sources.wikipedia import WikipediaSource
from pipeline.sources.wit import WitSource

# Any kind's config dataclass (`pipeline.sources.registry`), each by name.
Source = (
    WitSource
    | ConceptualCaptionsSource
    | CocoSource
    | Flickr8kSource
    | WikipediaSource
    | PairsSource
)
SOURCE_KINDS: dict[str, type] = {name: k.config for name, k in KINDS.items()}


@dataclass(frozen=True)
class Manifest:
    name: str
    sources: tuple[Source, ...]
    translation: TranslationConfig = field(default_factory=TranslationConfig)
    filters: FiltersConfig = field(default_factory=FiltersConfig)
    images: ImagesConfig = field(default_factory=ImagesConfig)
    dedupe: DedupeConfig = field(default_factory=DedupeConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
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
    "scoring": ScoringConfig,
    "output": OutputConfig,
}

# ---------------------------------------------------------------------------- checks


_check = require


class _Problems:
    """Collects the problems of independent parts of a manifest, so that one read reports them
    all: `with problems.collect(): ...` keeps going past a part that fails."""

    def __init__(self):
        self.found: list[str] = []

    @contextlib.contextmanager
    def collect(self) -> Iterator[None]:
        try:
            yield
        except ManifestError as err:
            self.found.extend(err.problems)

    def require(self, ok: bool, where: str, problem: str) -> None:
        if not ok:
            self.found.append(f"{where}: {problem}")

    def check(self) -> None:
        if self.found:
            raise ManifestError(*self.found)


def _unknown_key(key: Any, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(key), list(known), n=1, cutoff=0.6)
    return f"unknown key (did you mean {close[0]!r}?)" if close else "unknown key"


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
        _check(math.isfinite(value), where, f"expected a finite number, got {value!r}")
        return float(value)
    if hint is str:
        _check(isinstance(value, str) and value != "", where, f"expected text, got {value!r}")
        return value
    raise TypeError(f"unsupported manifest type {hint!r}")  # a bug in this module, not the input


def _build(cls: type, raw: Any, where: str, skip: tuple[str, ...] = ()) -> Any:
    """An instance of dataclass `cls` from the mapping `raw`; unknown keys are errors (with the
    nearest known key), and every key's problem is reported, not only the first."""
    _check(isinstance(raw, dict), where, f"expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    # A field with `metadata={"manifest": False}` is set by the pipeline, never by the manifest.
    fields = {
        f.name: f
        for f in dataclasses.fields(cls)
        if f.name not in skip and f.metadata.get("manifest", True)
    }
    problems = _Problems()
    for key in raw:
        if key not in fields:
            problems.found.append(
                f"{f'{where}.{key}' if where else key}: {_unknown_key(key, fields)}"
            )
    values = {}
    for name, f in fields.items():
        key_where = f"{where}.{name}" if where else name
        with problems.collect():
            if name in raw:
                values[name] = _convert(raw[name], hints[name], key_where)
            else:
                required = (
                    f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
                )
                _check(not required, key_where, "missing")
    problems.check()
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


def _check_source(src: Any, where: str, base: str, check_paths: bool = True) -> Any:
    """The source with its path keys resolved against `base` (and, with `check_paths`, found),
    checked by its kind's own `check`; every missing path is reported."""
    kind = kind_of(src)
    problems = _Problems()
    updates = {}
    for key in kind.path_keys:
        value = getattr(src, key)
        if value is None or value == ():
            continue
        if isinstance(value, tuple):
            resolved = tuple(_resolve(p, base) for p in value)
            for i, p in enumerate(resolved):
                if check_paths:
                    with problems.collect():
                        _must_exist(p, f"{where}.{key}[{i}]")
        else:
            resolved = _resolve(value, base)
            if check_paths:
                with problems.collect():
                    _must_exist(resolved, f"{where}.{key}", folder=key in kind.folder_keys)
        updates[key] = resolved
    if kind.check is not None:
        with problems.collect():
            kind.check(src, where)
    problems.check()
    return dataclasses.replace(src, **updates)


def _check_sections(m: Manifest) -> None:
    """Every rule of the sections; all the broken ones are reported at once."""
    problems = _Problems()
    _check = problems.require  # noqa: N806 - the module's check, collecting here
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
    _check(i.format in IMAGE_FORMATS, "images.format", f"one of {', '.join(IMAGE_FORMATS)}")
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
    for key in ("min_clip_score", "min_translation_similarity"):
        value = getattr(f, key)
        _check(value is None or -1 <= value <= 1, f"filters.{key}", "must be in [-1, 1]")
    for score, fraction in f.keep_top:
        where = f"filters.keep_top.{score}"
        _check(score in SCORES, where, f"unknown score (one of {', '.join(SCORES)})")
        _check(0 < fraction <= 1, where, "must be a fraction in (0, 1]")
    problems.found.extend(score_filter_problems(f, m.scoring))
    _check(0 <= m.dedupe.max_hamming <= 64, "dedupe.max_hamming", "must be in [0, 64]")
    _check(m.dedupe.placeholder_min_urls >= 2, "dedupe.placeholder_min_urls", "must be >= 2")
    s = m.scoring
    _check(s.device in ("auto", "cpu", "cuda"), "scoring.device", "one of auto, cpu, cuda")
    _check(s.batch_size > 0, "scoring.batch_size", "must be positive")
    _check(m.output.rows_per_shard > 0, "output.rows_per_shard", "must be positive")
    _check(
        m.output.format in OUTPUT_FORMATS, "output.format", f"one of {', '.join(OUTPUT_FORMATS)}"
    )
    _check(
        isinstance(m.output.rejected, bool) or m.output.rejected > 0,
        "output.rejected",
        "true, false, or a positive number of rows per reason per source",
    )
    problems.check()


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
    problems = _Problems()
    for key in raw:
        if key not in ("name", "sources", *SECTIONS):
            problems.found.append(f"{key}: {_unknown_key(key, ('name', 'sources', *SECTIONS))}")
    name = "arabic-pairs"
    with problems.collect():
        name = _convert(raw.get("name", "arabic-pairs"), str, "name")
    raw_sources = raw.get("sources")
    with problems.collect():
        _check(
            isinstance(raw_sources, list) and raw_sources, "sources", "expected a non-empty list"
        )

    sources: list[Source] = []
    seen: dict[str, int] = {}
    for i, raw_src in enumerate(raw_sources if isinstance(raw_sources, list) else []):
        where = f"sources[{i}]"
        with problems.collect():
            _check(isinstance(raw_src, dict), where, f"expected a mapping, got {raw_src!r}")
            kind = raw_src.get("kind")
            _check(kind is not None, f"{where}.kind", "missing")
            _check(
                isinstance(kind, str) and kind in KINDS,
                f"{where}.kind",
                f"unknown kind {kind!r} (one of: {', '.join(KINDS)})",
            )
            body = {k: v for k, v in raw_src.items() if k != "kind"}
            src = _build(KINDS[kind].config, body, where, skip=("kind", "name"))
            seen[kind] = seen.get(kind, 0) + 1
            name_in_stats = kind if seen[kind] == 1 else f"{kind}#{seen[kind]}"
            src = dataclasses.replace(src, name=name_in_stats)
            sources.append(_check_source(src, where, base, check_paths))

    # A section that cannot be built is reported and stands at its defaults for the other
    # checks (valid values: they add no problem of their own).
    sections = {key: cls() for key, cls in SECTIONS.items()}
    for key, cls in SECTIONS.items():
        value = raw.get(key)
        if value is not None:
            with problems.collect():
                sections[key] = _build(cls, value, key)
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
            with problems.collect():
                _must_exist(value, f"translation.{key}", folder=key == "model")
    scoring = raw.get("scoring")
    if isinstance(scoring, dict) and "model" not in scoring:
        problems.require(
            False, "scoring.model", "missing (leave the scoring section out to score nothing)"
        )
    if sections["scoring"].model:
        model = _resolve(sections["scoring"].model, base)
        sections["scoring"] = dataclasses.replace(sections["scoring"], model=model)
        if check_paths:
            with problems.collect():
                _must_exist(model, "scoring.model", folder=True)
    cache = sections["images"].cache
    if cache is True or (isinstance(cache, str) and cache != "auto"):
        cache = "auto" if cache is True else _resolve(cache, base)
        sections["images"] = dataclasses.replace(sections["images"], cache=cache)
    with problems.collect():
        sections["images"] = _resolve_images(sections["images"], raw.get("images") or {})
    resolved = []
    for i, s in enumerate(sources):
        with problems.collect():
            resolved.append(_resolve_thumb_width(s, sections["images"], f"sources[{i}]"))
    manifest = Manifest(name=name, sources=tuple(resolved), path=path, **sections)
    with problems.collect():
        _check_sections(manifest)
    problems.check()
    return manifest


class _ManifestLoader(yaml.SafeLoader):
    """YAML's safe loader that refuses a key given twice in one mapping: silently, the last
    would win (`allow_private_hosts` twice is a security question, not a style one)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=deep)
                try:
                    again = key in first
                except TypeError:
                    continue  # an unhashable key: the constructor below says so
                if again:
                    raise yaml.constructor.ConstructorError(
                        "while reading a mapping",
                        node.start_mark,
                        f"duplicate key {key!r} (first given on line {first[key] + 1})",
                        key_node.start_mark,
                    )
                first[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def load_manifest(path: str, *, check_paths: bool = True) -> Manifest:
    """Read and validate the manifest at `path` (`check_paths`: see `parse_manifest`)."""
    try:
        with FileSystems.open(path) as f:
            text = f.read().decode("utf-8")
    except Exception as err:  # noqa: BLE001 - a missing or unreadable manifest is one error line
        raise ManifestError(f"{path}: cannot read the manifest ({err})") from err
    try:
        raw = yaml.load(text, Loader=_ManifestLoader)  # noqa: S506 - a SafeLoader
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
