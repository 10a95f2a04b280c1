"""The cost of a build before it runs: `python -m pipeline estimate MANIFEST [--workers N]`.

For every source it takes the records the source holds (`read`, as `stats.json` will count
them) and the pairs expected to survive; for every stage the CPU-hours (GPU-hours for the
translation and the scoring), the bytes downloaded, the output size and the wall clock at N
workers. It prints a
table and ends with one JSON line holding every figure.

Where the numbers come from, in this order:

- **Counted**: an input file that exists locally is read by its source's own parser, so
  `read` is exactly what a run would count (the demo's samples), as long as the files counted
  so far stay within `count_limit` bytes (100 MB by default: seconds of parsing). A local file
  beyond it is looked up in the table by its name.
- **The real sources' table** (each kind's `known_files`, in `pipeline/sources/`): the
  published size of every file of the real releases, matched by file name (globs too:
  `wit_v1.train.all-*-of-00010.tsv.gz` is the ten training shards), with the archive a user
  downloads to get it. A file that is neither countable nor in the table is an
  `EstimateError`: an estimate that silently left a source out would mislead.
- **Survival** (each kind's `profile`, read into `PROFILES`): kept / read per kind, from
  FORMATS.md §0 (the published Arabic CLIP counts over the originals), with its reasoning.
- **Throughput**: `pipeline/figures.json`, the figures the benchmarks measured, each with
  its command and date; `cores` there turns a machine's rate into a per-core one.
- **Assumptions** (`ASSUMPTIONS`): what nobody measured here (average bytes of an image on
  each host, the translation's speed on a GPU, arwiki's size), each stated with its source;
  the JSON line repeats them. The scoring's GPU rate is a figure (`clip_gpu_pairs_per_s`,
  measured on an H200) where one is recorded, else the translation's GPU assumption.

A worker is one core doing the work (on Dataflow: workers x vCPUs). A stage's wall clock is
its CPU-hours over the workers, but never below its serial floor: the Wikipedia crawl is one
element with requests at most `requests_per_second`, a file is read by one worker, and the
dedupe decision runs in one worker; and every download shares one link of `bandwidth_gbps`.
The total wall clock is a lower bound: the stages are taken to overlap perfectly (Beam fuses
them; the dedupe grouping is the one barrier).

Disk: the output figure is the shards (every kept row, its image included). The image store
holds the stored images too (taken as the kept pairs' images, `stored_image_bytes` each: the
images of pairs dropped after the fetch, duplicates, come on top), in the image cache
`images.cache` resolves to for `output_dir` (`pipeline.images.cache`: by default one folder
outside every output folder, kept after the run), or without a cache in the run's staging
folder until the commit. Neither is part of the output figure.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import glob
import gzip
import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pipeline.config import WEBDATASET, images_thumb_width
from pipeline.files import is_remote
from pipeline.images.cache import cache_folder, resolve_cache
from pipeline.manifest import Manifest
from pipeline.records import Drop
from pipeline.sources import flickr8k
from pipeline.sources.base import KindProfile, KnownFile
from pipeline.sources.registry import KINDS, kind_of
from pipeline.sources.wikipedia import WikipediaSource

FIGURES_PATH = Path(__file__).resolve().parent / "figures.json"  # package data: in the wheel
DEFAULT_COUNT_LIMIT = 100_000_000  # bytes of local input files read to count their records
# The machine's link to the internet, shared by every download (an assumption: a typical cloud
# VM; `--bandwidth` sets yours).
DEFAULT_BANDWIDTH_GBPS = 1.0


class EstimateError(ValueError):
    """An estimate that cannot be made; the message names the manifest key or figure."""


# ---------------------------------------------------------------------------- assumptions


@dataclass(frozen=True)
class Assumption:
    """A figure nobody measured here, and where it comes from."""

    value: float
    why: str


ASSUMPTIONS: dict[str, Assumption] = {
    "arwiki_articles": Assumption(
        1_250_000,
        "articles (namespace 0) of Arabic Wikipedia, about 1.2-1.3M in 2025 "
        "(Special:Statistics; unverified here, no internet): the pages of a crawl of every article",
    ),
    "wikipedia_candidates_per_page": Assumption(
        2.0,
        "media elements per arwiki article (icons and flags included); not measured on the "
        "real wiki (the benchmark's generated pages have 10-25): `read` of the wikipedia source",
    ),
    "wikipedia_kept_whole_wiki": Assumption(
        151_252,
        "pairs kept by a crawl of every article: the published WAP crawl (FORMATS §0)",
    ),
    "wikipedia_bytes_per_page": Assumption(
        50_000,
        "bytes transferred per action=parse answer (the benchmark's mid-sized pages are "
        "60-150 KB of HTML; most arwiki articles are shorter)",
    ),
    "wit_image_bytes": Assumption(
        2_000_000,
        "average WIT original file on upload.wikimedia.org, camera photos of several MB beside "
        "small PNGs (unverified): what is downloaded with `images.thumb_width: null`; by default "
        "the originals are fetched as thumbnails (wikimedia_thumb_bytes_per_pixel)",
    ),
    "wikimedia_thumb_bytes_per_pixel": Assumption(
        80_000 / (640 * 480),
        "bytes per pixel of a JPEG thumbnail on upload.wikimedia.org, from an average 640 px "
        "thumbnail of 80 KB at 4:3 (unverified); a thumbnail `thumb_width` wide is taken as "
        "thumb_width x 3/4 thumb_width pixels: 330 px, 21 KB",
    ),
    "wikimedia_seconds_per_request": Assumption(
        0.25,
        "seconds one image request to upload.wikimedia.org holds its slot (connection reuse, "
        "first byte, a thumbnail's body; unverified): with at most `concurrency` in flight "
        "(images.hosts) the host gives concurrency / this many images a second",
    ),
    "cc_image_bytes": Assumption(
        294_000,
        "average CC image: img2dataset's cc3m.md downloads 850 images/s on 2 Gbit/s, "
        "'a lot of high resolution images': 2e9 / 8 / 850 bytes if bandwidth-bound",
    ),
    "coco_image_bytes": Assumption(
        157_000,
        "average COCO image: train2014.zip is 13 GB for 82,783 images (cocodataset.org); "
        "fetched once per caption (FetchImages does not share downloads between pairs)",
    ),
    "stored_image_bytes": Assumption(
        25_000,
        "a stored 256 px JPEG at quality 95: img2dataset's LAION-400M at 256 px is 10 TB for "
        "400M samples (laion400m.md); keep_ratio stores fewer pixels than its square images",
    ),
    "row_bytes": Assumption(
        600,
        "Parquet bytes per row besides the image (captions, URLs, hashes, provenance): the "
        "demo output's other columns hold 568 B a row in Arrow, 347 B in Parquet",
    ),
    "tar_row_bytes": Assumption(
        3_500,
        "WebDataset bytes per sample besides the image (`output.format: webdataset`): three "
        "512 B member headers, each member padded to 512 B blocks, the JSON uncompressed; the "
        "demo output written as tars holds 3,452 B a sample besides its image",
    ),
    "model_download_bytes": Assumption(
        604_000_000,
        "Helsinki-NLP/opus-mt-tc-big-en-ar for `make model`: its model.safetensors on the "
        "Hugging Face hub (float16) is 604 MB",
    ),
    "gpu_speedup_over_8_cores": Assumption(
        5320.3 / 1486.5,
        "one NVIDIA T4 against 8 CPU threads, OPUS-MT with CTranslate2 2.13.1 (README "
        "benchmark: int8+float16 on the GPU 5,320.3 target tokens/s, int8 on 8 threads of a "
        "c5.metal 1,486.5); GPU rate = per-core CPU rate x 8 x this. No GPU was measured here",
    ),
}


# Figures derived from the assumptions, which a kind's profile may name like an assumption.
DERIVED: dict[str, float] = {
    # The WAP pairs over the candidates of a crawl of every article.
    "wikipedia_survival": ASSUMPTIONS["wikipedia_kept_whole_wiki"].value
    / (ASSUMPTIONS["arwiki_articles"].value * ASSUMPTIONS["wikipedia_candidates_per_page"].value),
    # A 330 px thumbnail (the default images.thumb_width).
    "wikimedia_thumb_bytes_330": ASSUMPTIONS["wikimedia_thumb_bytes_per_pixel"].value
    * 330
    * 330
    * 3
    / 4,
}


def figure(value: float | str) -> float:
    """A profile's figure: a number, or the name of an assumption or a derived figure."""
    if isinstance(value, str):
        return ASSUMPTIONS[value].value if value in ASSUMPTIONS else DERIVED[value]
    return float(value)


def profiles() -> dict[str, KindProfile]:
    """Each registered kind's profile with its figures as numbers (`estimate --json`)."""
    return {
        name: KindProfile(
            figure(k.profile.survival),
            figure(k.profile.fetch_share),
            figure(k.profile.image_bytes),
            k.profile.why,
        )
        for name, k in KINDS.items()
    }


PROFILES = profiles()


# ---------------------------------------------------------------------------- figures


REQUIRED_FIGURES = (
    "wit_parse_tsv_rows_per_s",
    "langid_captions_per_s",
    "wit_e2e_cpu_hours_per_million_rows",
    "images_per_s",
    "dedupe_groups_seconds",
    "dedupe_beam_stage_seconds",
    "translate_beam4_sent_per_s",
    "translate_greedy_sent_per_s",
    "translate_tc_big_vs_base_beam4",
    "translate_tc_big_vs_base_greedy",
    "translate_nllb_vs_base_beam4",
    "translate_nllb_vs_base_greedy",
    "wikipedia_extract_pages_per_s",
    "wikipedia_requests_per_page",
    "local_rss_kb_per_pair",
    "local_rss_base_mb",
    "clip_pairs_per_s",
)
# Figures `estimate` uses where they are recorded, checked like the required ones: the scoring
# towers on a GPU (else an assumption) and the CPU work that feeds them.
OPTIONAL_FIGURES = ("clip_gpu_pairs_per_s", "clip_reads_pairs_per_s")


@dataclass(frozen=True)
class Figures:
    """The benchmarks' figures (`pipeline/figures.json`), checked."""

    path: str
    entries: dict[str, dict[str, Any]]

    def value(self, name: str) -> float:
        return float(self.entries[name]["value"])

    def per_core(self, name: str) -> float:
        """A rate measured on `cores` cores, per core."""
        return self.value(name) / float(self.entries[name].get("cores", 1))

    def provisional(self) -> list[str]:
        return sorted(n for n, e in self.entries.items() if e.get("provisional"))


def load_figures(path: str | os.PathLike | None = None) -> Figures:
    """`pipeline/figures.json` (or `path`), every required figure a positive number."""
    path = str(path or FIGURES_PATH)
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except (OSError, ValueError) as err:
        raise EstimateError(f"{path}: cannot read the benchmark figures ({err})") from err
    entries = raw.get("figures") if isinstance(raw, dict) else None
    if not isinstance(entries, dict):
        raise EstimateError(f"{path}: expected an object with a 'figures' mapping")
    for name in REQUIRED_FIGURES + OPTIONAL_FIGURES:
        entry = entries.get(name)
        if entry is None and name in OPTIONAL_FIGURES:
            continue
        if not isinstance(entry, dict):
            raise EstimateError(f"{path}: figures.{name}: missing")
        # `at`: the size a dedupe figure was measured at, scaled from.
        needed = ("value", "at") if name.startswith("dedupe_") else ("value",)
        for key in ("value", "cores", "at"):
            if key not in needed and key not in entry:
                continue
            value = entry.get(key)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
            if not ok:
                raise EstimateError(
                    f"{path}: figures.{name}.{key}: expected a positive number, got {value!r}"
                )
    return Figures(path, entries)


# ---------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class SourceEstimate:
    """One source: what it holds, what survives, what it costs to get."""

    name: str
    kind: str
    basis: str  # counted | table | counted+table | limit | titles | unknown
    read: int  # records, as stats.json counts them
    kept: int
    translated: int  # captions handed to the model
    fetched: int  # images downloaded (or read from a local folder)
    pages: int  # wikipedia pages
    file_rows: int  # rows a file reader parses (0 for wikipedia)
    largest_file_rows: int  # rows of the largest file: one worker reads a file
    input_bytes: int  # source files still to download (0 when present locally)
    image_bytes: int  # image downloads
    notes: tuple[str, ...] = ()


@dataclass
class _Files:
    """The files of one source's inputs: counted here, or taken from the table."""

    read: int = 0
    largest: int = 0
    download: dict[str, int] = field(default_factory=dict)  # archive -> bytes
    counted: int = 0
    tabled: int = 0

    def add(self, records: int) -> None:
        self.read += records
        self.largest = max(self.largest, records)


def _count_records(parse_records: Iterable[Any]) -> int:
    return sum(r.count if isinstance(r, Drop) else 1 for r in parse_records)


def _open(path: str):
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")  # noqa: SIM115


def _count_file(src: Any, path: str) -> int:
    """The records of one local file, through the source's own parser (as a run counts them)."""
    with _open(path) as stream:
        return _count_records(kind_of(src).count(stream, path, src))


def _known(kind: str, name: str, where: str) -> KnownFile:
    known = KINDS[kind].known_files
    if name not in known:
        examples = ", ".join(list(known)[:3])
        raise EstimateError(
            f"{where}: {name!r} is not a file of the real release, and cannot be counted "
            f"here (known names: {examples}, ...)"
        )
    return known[name]


def _input_files(src: Any, patterns: Iterable[tuple[str, str]], budget: list[int]) -> _Files:
    """Every file of `patterns` ((where, path) pairs): counted when local and within the byte
    budget left (`budget[0]`, shared by the whole manifest), else from the real sources' table."""
    files = _Files()
    for where, pattern in patterns:
        local = [] if "://" in pattern else sorted(filter(os.path.isfile, glob.glob(pattern)))
        if local:
            for path in local:
                size = os.path.getsize(path)
                if size <= budget[0]:
                    budget[0] -= size
                    try:
                        files.add(_count_file(src, path))
                    except (OSError, ValueError) as err:
                        raise EstimateError(f"{where}: cannot count {path!r} ({err})") from err
                    files.counted += 1
                else:
                    known = _known(src.kind, os.path.basename(path), where)
                    files.add(known.records)
                    files.tabled += 1
            continue
        name = pattern.rstrip("/").rsplit("/", 1)[-1]
        known_files = KINDS[src.kind].known_files
        matched = [n for n in known_files if fnmatch.fnmatchcase(n, name)]
        if not matched:
            raise EstimateError(
                f"{where}: no local file matches {pattern!r}, and no file of the real release "
                f"is named like {name!r}"
            )
        # Aliases (two names of one file) are one download and one count.
        seen: dict[str, KnownFile] = {}
        for n in matched:
            seen.setdefault(known_files[n].archive, known_files[n])
        for archive, known in seen.items():
            files.add(known.records)
            files.download[archive] = known.archive_bytes
            files.tabled += 1
    return files


def _basis(files: _Files) -> str:
    if files.counted and files.tabled:
        return "counted+table"
    return "counted" if files.counted else "table"


def wikimedia_image_bytes(width: int | None) -> float:
    """The bytes of one download from upload.wikimedia.org: a thumbnail `width` wide, or (None)
    an original."""
    if width is None:
        return ASSUMPTIONS["wit_image_bytes"].value
    return ASSUMPTIONS["wikimedia_thumb_bytes_per_pixel"].value * width * width * 3 / 4


def _record_patterns(src: Any, where: str) -> list[tuple[str, str]]:
    """(manifest key, path) of every file pattern that holds the source's records."""
    patterns = []
    for key in kind_of(src).record_keys:
        value = getattr(src, key)
        if isinstance(value, tuple):
            patterns += [(f"{where}.{key}[{i}]", p) for i, p in enumerate(value)]
        elif value is not None:
            patterns.append((f"{where}.{key}", value))
    return patterns


def _file_source(
    src: Any, where: str, budget: list[int], thumb_width: int | None = None
) -> SourceEstimate:
    kind = kind_of(src)
    profile = PROFILES[src.kind]
    notes: list[str] = []
    files = _input_files(src, _record_patterns(src, where), budget)
    image_bytes_each = profile.image_bytes
    if kind.wikimedia_images:
        image_bytes_each = wikimedia_image_bytes(thumb_width)
        if thumb_width:
            notes.append(f"originals fetched as {thumb_width} px thumbnails (images.thumb_width)")
    if isinstance(src, flickr8k.Flickr8kSource) and not os.path.isdir(src.images):
        files.download[flickr8k.IMAGES_ARCHIVE.archive] = flickr8k.IMAGES_ARCHIVE.archive_bytes
    # COCO's and `pairs`' local images (`image_root`) are read, not downloaded.
    if getattr(src, "image_root", None) is not None:
        image_bytes_each = 0
        notes.append("image_root: images read locally; their archive is not counted")
    read = files.read
    kept = round(read * profile.survival)
    fetched = round(read * profile.fetch_share)
    return SourceEstimate(
        name=src.name,
        kind=src.kind,
        basis=_basis(files),
        read=read,
        kept=kept,
        translated=read if kind.translates(src) else 0,
        fetched=fetched,
        pages=0,
        file_rows=read,
        largest_file_rows=files.largest,
        input_bytes=sum(files.download.values()),
        image_bytes=round(kept * image_bytes_each),
        notes=tuple(notes),
    )


def _is_arwiki(src: WikipediaSource) -> bool:
    """Whether the source reads Arabic Wikipedia: its API (not `site_url`, which a stand-in or a
    mirror of a few pages sets too) or arwiki dumps."""
    dumps = [d.rsplit("/", 1)[-1] for d in src.dump]
    api_host = urlsplit(src.api).hostname if src.api else None
    return api_host == "ar.wikipedia.org" or any(d.startswith("arwiki") for d in dumps)


def _wikipedia_pages(src: WikipediaSource, where: str) -> tuple[int, str]:
    """The pages a crawl or dump reads, and how they were found: the titles named (at most
    `limit`), else `limit`, else every article of arwiki; another wiki's size is unknown (0)."""
    if src.titles or src.titles_file:
        if src.titles_file and not os.path.isfile(src.titles_file):
            raise EstimateError(
                f"{where}.titles_file: no such file {src.titles_file!r}: its titles cannot be "
                "counted (give `limit` instead)"
            )
        from pipeline.sources.wikipedia import selected_titles

        titles = len(selected_titles(src) or [])
        if src.limit is None or titles <= src.limit:
            return titles, "titles"
    if src.limit is not None:
        return src.limit, "limit"
    if _is_arwiki(src):
        return round(ASSUMPTIONS["arwiki_articles"].value), "table"
    return 0, "unknown"


def _wikipedia_source(src: WikipediaSource, where: str, auto_width: int | None) -> SourceEstimate:
    profile = PROFILES["wikipedia"]
    pages, basis = _wikipedia_pages(src, where)
    notes = []
    if basis == "unknown":
        notes.append(
            f"{src.api or src.dump[0]} is not Arabic Wikipedia and names no titles or limit: "
            "its pages are unknown (counted as 0)"
        )
    if src.dump:
        notes.append("dump: its download size is not in the table (not counted)")
    read = round(pages * ASSUMPTIONS["wikipedia_candidates_per_page"].value)
    kept = round(read * profile.survival)
    width = auto_width if src.thumb_width == "auto" else src.thumb_width  # `auto` in code only
    return SourceEstimate(
        name=src.name,
        kind=src.kind,
        basis=basis,
        read=read,
        kept=kept,
        translated=0,
        fetched=round(read * profile.fetch_share),
        pages=pages,
        file_rows=0,
        largest_file_rows=0,
        input_bytes=0,
        image_bytes=round(kept * wikimedia_image_bytes(width)),
        notes=tuple(notes),
    )


def estimate_sources(
    manifest: Manifest, count_limit: int = DEFAULT_COUNT_LIMIT
) -> list[SourceEstimate]:
    """Every source of the manifest, in manifest order (no images with `images.fetch: false`)."""
    budget = [count_limit]
    estimates = []
    thumb_width = images_thumb_width(manifest.images)
    for i, src in enumerate(manifest.sources):
        if isinstance(src, WikipediaSource):
            est = _wikipedia_source(src, f"sources[{i}]", thumb_width)
        else:
            est = _file_source(src, f"sources[{i}]", budget, thumb_width)
        if not manifest.images.fetch:
            est = dataclasses.replace(est, fetched=0, image_bytes=0)
        estimates.append(est)
    return estimates


# ---------------------------------------------------------------------------- stages


@dataclass(frozen=True)
class StageEstimate:
    """One stage of the build: its records, CPU-hours (None: not benchmarked apart), GPU-hours
    (translation only), bytes downloaded and written, and the wall clock no number of workers
    goes below (its serial part)."""

    stage: str
    records: int
    cpu_hours: float | None
    gpu_hours: float | None
    download_bytes: int
    output_bytes: int
    floor_hours: float

    def wall_hours(self, workers: int) -> float:
        return max((self.cpu_hours or 0.0) / workers, self.floor_hours)


@dataclass(frozen=True)
class Estimate:
    manifest: str
    name: str
    workers: int
    sources: list[SourceEstimate]
    stages: list[StageEstimate]
    figures: Figures
    notes: list[str]
    bandwidth_gbps: float = DEFAULT_BANDWIDTH_GBPS
    # The bytes of the stored images (0 without images.fetch), and where they are kept: the
    # image cache's folder, or None (the run's staging folder, until the commit).
    image_store_bytes: int = 0
    image_cache: str | None = None
    # Whether the store is inside the output folder (a cache named there, or no cache).
    store_in_output: bool = False

    @property
    def cpu_hours(self) -> float:
        return sum(s.cpu_hours or 0.0 for s in self.stages)

    @property
    def gpu_hours(self) -> float:
        return sum(s.gpu_hours or 0.0 for s in self.stages)

    @property
    def download_bytes(self) -> int:
        return sum(s.download_bytes for s in self.stages)

    @property
    def output_bytes(self) -> int:
        return sum(s.output_bytes for s in self.stages)

    @property
    def wall_hours(self) -> float:
        """A lower bound: all CPU work spread over the workers, or the longest serial part."""
        floors = max((s.floor_hours for s in self.stages), default=0.0)
        download = self.download_bytes * 8 / (self.bandwidth_gbps * 1e9) / 3600
        return max(self.cpu_hours / self.workers, floors, download)

    @property
    def kept(self) -> int:
        return sum(s.kept for s in self.sources)

    @property
    def pairs_in_flight(self) -> int:
        """The pairs that reach the images stage (the kept ones when images are not fetched):
        what a local run holds references of at its barriers."""
        return sum(max(s.fetched, s.kept) for s in self.sources)

    @property
    def local_memory_bytes(self) -> int:
        """The peak memory of a local run (one machine, the default FnApiRunner), from the
        scale benchmark: a base plus a measured figure per pair in flight."""
        per_pair = self.figures.value("local_rss_kb_per_pair") * 1024
        base = self.figures.value("local_rss_base_mb") * 2**20
        return round(base + per_pair * self.pairs_in_flight)


def model_shape(model: str | None) -> str:
    """Which measured shape a translation model folder is, by its name: `tc_big`
    (opus-mt-tc-big-en-ar, `make model`), `nllb` (`make model-nllb`) or `base` (opus-mt-en-ar,
    `make model-base`, and any other name)."""
    name = os.path.basename(os.path.normpath((model or "").rstrip("/"))).lower()
    if "tc-big" in name:
        return "tc_big"
    if "nllb" in name:
        return "nllb"
    return "base"


def _translate_rate(manifest: Manifest, figures: Figures, notes: list[str]) -> float:
    """Captions per second per core at the manifest's beam size, for its model's shape: the
    base shape's rate (benchmarks/translate.py) times the shape's measured ratio to it
    (benchmarks/models.py)."""
    greedy = manifest.translation.beam_size == 1
    if manifest.translation.beam_size > 4:
        notes.append(
            f"translation.beam_size {manifest.translation.beam_size}: only beam 4 was measured; "
            "its rate is used, so the translation cost is underestimated"
        )
    rate = figures.per_core(
        "translate_greedy_sent_per_s" if greedy else "translate_beam4_sent_per_s"
    )
    shape = model_shape(manifest.translation.model)
    if shape == "base":
        return rate
    ratio = figures.value(f"translate_{shape}_vs_base_{'greedy' if greedy else 'beam4'}")
    notes.append(
        f"translation at the {shape.replace('_', '-')} shape's speed: {ratio:.2f} of the base "
        "model's (benchmarks/models.py)"
    )
    return rate * ratio


def _wikimedia_floor(manifest: Manifest, sources: list[SourceEstimate], notes: list[str]) -> float:
    """Hours the downloads from upload.wikimedia.org take at least within its limits
    (`images.hosts`: in flight, requests/s, bytes/s), however many workers there are."""
    limits = dict(manifest.images.hosts).get("upload.wikimedia.org")
    wikimedia = [s for s in sources if KINDS[s.kind].wikimedia_images]
    images = sum(s.fetched for s in wikimedia)
    if limits is None or not images:
        return 0.0
    nbytes = sum(s.image_bytes for s in wikimedia)
    seconds = [images * ASSUMPTIONS["wikimedia_seconds_per_request"].value / limits.concurrency]
    if limits.requests_per_second:
        seconds.append(images / limits.requests_per_second)
    if limits.bytes_per_second:
        seconds.append(nbytes / limits.bytes_per_second)
    hours = max(seconds) / 3600
    rate = f", {limits.bytes_per_second * 8 / 1e6:g} Mbps" if limits.bytes_per_second else ""
    notes.append(
        f"upload.wikimedia.org: {images:,} images ({format_bytes(nbytes)}) at most "
        f"{limits.concurrency} in flight{rate} (images.hosts): the images stage takes at least "
        f"{hours:.1f} h, whatever the workers"
    )
    return hours


def _scoring(manifest: Manifest, kept: int, figures: Figures, notes: list[str]) -> StageEstimate:
    """The scoring stage (`scoring.model`): every kept pair, on CPU at the benchmark's rate per
    core, or on one GPU at its measured rate (else the translation's GPU/8-core assumption)."""
    rate = figures.per_core("clip_pairs_per_s")
    gpu = figures.entries.get("clip_gpu_pairs_per_s")
    if gpu is None:
        gpu_rate = rate * 8 * ASSUMPTIONS["gpu_speedup_over_8_cores"].value
        notes.append(
            "scoring: no GPU figure (clip_gpu_pairs_per_s) in the figures; its GPU-hours take "
            "the translation's GPU / 8-core ratio (gpu_speedup_over_8_cores), an assumption"
        )
    else:
        gpu_rate = figures.value("clip_gpu_pairs_per_s")
    return StageEstimate("scoring", kept, kept / rate / 3600, kept / gpu_rate / 3600, 0, 0, 0.0)


def estimate_stages(
    manifest: Manifest, sources: list[SourceEstimate], figures: Figures, notes: list[str]
) -> list[StageEstimate]:
    f = figures
    hour = 3600.0
    wit_hours_per_row = f.value("wit_e2e_cpu_hours_per_million_rows") / 1e6
    parse_hours_per_row = 1 / f.per_core("wit_parse_tsv_rows_per_s") / hour

    def row_hours(s: SourceEstimate) -> float:
        return wit_hours_per_row if s.kind == "wit" else parse_hours_per_row

    files = [s for s in sources if KINDS[s.kind].record_keys]
    read = StageEstimate(
        "read",
        sum(s.file_rows for s in files),
        sum(s.file_rows * row_hours(s) for s in files),
        None,
        sum(s.input_bytes for s in files),
        0,
        max((s.largest_file_rows * row_hours(s) for s in files), default=0.0),
    )

    wikis = [s for s in sources if not KINDS[s.kind].record_keys]
    requests_hours = 0.0
    html_bytes = 0.0
    for src, est in zip(manifest.sources, sources, strict=True):
        if not isinstance(src, WikipediaSource) or not src.api:
            continue
        if not src.dump:
            html_bytes += est.pages * ASSUMPTIONS["wikipedia_bytes_per_page"].value
        if src.requests_per_second > 0:
            # A dump asks the API for file facts only: the requests beyond one parse per page.
            per_page = f.value("wikipedia_requests_per_page") - (1.0 if src.dump else 0.0)
            requests_hours += est.pages * per_page / src.requests_per_second / hour
    pages = sum(s.pages for s in wikis)
    extract_hours = pages / f.per_core("wikipedia_extract_pages_per_s") / hour
    # The crawl is one element: its pages are extracted one after the other too.
    crawl = StageEstimate(
        "crawl",
        pages,
        extract_hours,
        None,
        round(html_bytes),
        0,
        max(requests_hours, extract_hours),
    )

    # Every English caption is taken to reach the model: the collapse of identical captions and
    # a translation memory only make it cheaper (an upper bound). Without a model, only the
    # memory translates, at no cost worth counting.
    translated = sum(s.translated for s in sources)
    t = manifest.translation
    to_model = translated if t.model else 0
    if translated and not t.model:
        notes.append("no translation.model: only the memory translates (no model cost)")
    elif translated and t.memory:
        notes.append("translation.memory: the captions it holds are not subtracted")
    rate = _translate_rate(manifest, f, notes)
    gpu_rate = rate * 8 * ASSUMPTIONS["gpu_speedup_over_8_cores"].value
    model_bytes = 0
    if to_model and not os.path.isdir(t.model):
        model_bytes = round(ASSUMPTIONS["model_download_bytes"].value)
    translate = StageEstimate(
        "translate",
        to_model,
        to_model / rate / hour,
        to_model / gpu_rate / hour,
        model_bytes,
        0,
        0.0,
    )

    # Language ID of the pairs not already in WIT's end-to-end figure: the translations, the
    # crawl's captions and the genuine Arabic of the user's own pairs (`kind: pairs`).
    own = [s for s in sources if s.kind == "pairs" and not s.translated]
    langid_records = translated + sum(s.kept for s in wikis) + sum(s.read for s in own)
    langid = StageEstimate(
        "langid",
        langid_records,
        langid_records / f.per_core("langid_captions_per_s") / hour,
        None,
        0,
        0,
        0.0,
    )

    fetched = sum(s.fetched for s in sources)
    images = StageEstimate(
        "images",
        fetched,
        fetched / f.per_core("images_per_s") / hour,
        None,
        sum(s.image_bytes for s in sources),
        0,
        _wikimedia_floor(manifest, sources, notes),
    )

    # Measured at `at` keys and scaled linearly (the search is near-linear at these sizes); the
    # Beam stage's wall clock on `cores` cores is taken as all of them busy (an upper bound).
    kept = sum(s.kept for s in sources)
    beam_stage, groups = f.entries["dedupe_beam_stage_seconds"], f.entries["dedupe_groups_seconds"]
    dedupe = StageEstimate(
        "dedupe",
        kept,
        beam_stage["value"] * beam_stage.get("cores", 1) * kept / beam_stage["at"] / hour,
        None,
        0,
        0,
        groups["value"] * kept / groups["at"] / hour,
    )

    tars = manifest.output.format == WEBDATASET
    per_row = ASSUMPTIONS["tar_row_bytes" if tars else "row_bytes"].value
    if manifest.images.fetch:
        per_row += ASSUMPTIONS["stored_image_bytes"].value
    write = StageEstimate("write", kept, None, None, 0, round(kept * per_row), 0.0)
    scoring = [_scoring(manifest, kept, f, notes)] if manifest.scoring.model else []
    return [read, crawl, langid, translate, images, dedupe, *scoring, write]


def _inside(folder: str, output_dir: str) -> bool:
    if is_remote(folder) or is_remote(output_dir):
        return folder.rstrip("/").startswith(output_dir.rstrip("/") + "/")
    output = os.path.abspath(output_dir)
    return os.path.commonpath([os.path.abspath(folder), output]) == output


def estimate(
    manifest: Manifest,
    figures: Figures,
    workers: int,
    count_limit: int = DEFAULT_COUNT_LIMIT,
    bandwidth_gbps: float = DEFAULT_BANDWIDTH_GBPS,
    output_dir: str | None = None,
) -> Estimate:
    """The estimate of building `manifest` on `workers` cores behind a link of `bandwidth_gbps`
    (every download shares it: a stage never takes less than its bytes over the link) into
    `output_dir` (None: a local folder; it decides what `images.cache: auto` is)."""
    if workers < 1:
        raise EstimateError(f"--workers: must be at least 1, got {workers}")
    if not bandwidth_gbps > 0:
        raise EstimateError(f"--bandwidth: must be positive, got {bandwidth_gbps}")
    notes: list[str] = []
    sources = estimate_sources(manifest, count_limit)
    stages = [
        dataclasses.replace(
            s,
            floor_hours=max(s.floor_hours, s.download_bytes * 8 / (bandwidth_gbps * 1e9) / 3600),
        )
        for s in estimate_stages(manifest, sources, figures, notes)
    ]
    for s in sources:
        notes += [f"{s.name}: {n}" for n in s.notes]
    store_bytes, cache, in_output = 0, None, False
    if manifest.images.fetch:
        kept = sum(s.kept for s in sources)
        store_bytes = round(kept * ASSUMPTIONS["stored_image_bytes"].value)
        cache = cache_folder(resolve_cache(manifest.images, output_dir or os.curdir))
        in_output = cache is None or (output_dir is not None and _inside(cache, output_dir))
    return Estimate(
        manifest.path,
        manifest.name,
        workers,
        sources,
        stages,
        figures,
        notes,
        bandwidth_gbps,
        store_bytes,
        cache,
        in_output,
    )


# ---------------------------------------------------------------------------- output


def format_bytes(n: float) -> str:
    """Decimal units, as disks and bandwidth are sold: 25.0 GB, 1.23 TB."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}" if n < 100 * size else f"{n / size:,.0f} {unit}"
    return f"{n:.0f} B"


def format_hours(h: float | None) -> str:
    if h is None:
        return "-"
    return f"{h:,.2f}" if h < 100 else f"{h:,.0f}"


def format_wall(h: float) -> str:
    if h < 1 / 60:
        return "<1 min"
    if h < 1:
        return f"{h * 60:.0f} min"
    if h < 48:
        return f"{h:.1f} h"
    return f"{h / 24:.1f} days"


def _table(rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(r))
        for r in rows
    ]


def format_estimate(est: Estimate) -> str:
    """The table for the terminal."""
    lines = [
        f"estimate: {est.manifest} ({est.name}), {est.workers} workers (cores), "
        f"{est.bandwidth_gbps:g} Gbit/s",
        "",
    ]
    rows = [["source", "basis", "read", "kept", "translated", "images", "images download"]]
    for s in est.sources:
        rows.append(
            [
                s.name,
                s.basis,
                f"{s.read:,}",
                f"{s.kept:,}",
                f"{s.translated:,}",
                f"{s.fetched:,}",
                format_bytes(s.image_bytes),
            ]
        )
    lines += _table(rows, {2, 3, 4, 5, 6})
    lines.append("")
    rows = [["stage", "records", "CPU-h", "GPU-h", "download", "output", f"wall @{est.workers}"]]
    for s in est.stages:
        rows.append(
            [
                s.stage,
                f"{s.records:,}",
                format_hours(s.cpu_hours),
                format_hours(s.gpu_hours),
                format_bytes(s.download_bytes) if s.download_bytes else "-",
                format_bytes(s.output_bytes) if s.output_bytes else "-",
                format_wall(s.wall_hours(est.workers)),
            ]
        )
    rows.append(
        [
            "total",
            f"kept {est.kept:,}",
            format_hours(est.cpu_hours),
            format_hours(est.gpu_hours),
            format_bytes(est.download_bytes),
            format_bytes(est.output_bytes),
            format_wall(est.wall_hours),
        ]
    )
    lines += _table(rows, {1, 2, 3, 4, 5, 6})
    translate = next(s for s in est.stages if s.stage == "translate")
    lines += [
        "",
        f"CPU-hours include the translation on CPU ({format_hours(translate.cpu_hours)} h); on "
        f"one T4-class GPU it takes {format_hours(translate.gpu_hours)} GPU-hours instead "
        "(an assumption: no GPU was measured).",
    ]
    scoring = next((s for s in est.stages if s.stage == "scoring"), None)
    if scoring is not None:
        lines.append(format_scoring(est.figures, scoring))
    lines += [
        "Wall clock is a lower bound: the stages overlap, downloads share the link, and the "
        "crawl is serial (requests_per_second) whatever the workers.",
        f"Memory of a local run (one machine): about {format_bytes(est.local_memory_bytes)} at "
        f"its peak for {est.pairs_in_flight:,} pairs "
        f"({est.figures.value('local_rss_kb_per_pair'):g} KB a pair over "
        f"{est.figures.value('local_rss_base_mb'):g} MB, benchmarks/scale.py); the images are "
        "on disk, not in memory.",
    ]
    if est.image_store_bytes:
        lines.append(format_image_store(est))
    provisional = est.figures.provisional()
    if provisional:
        lines.append(f"Provisional figures: {', '.join(provisional)} ({est.figures.path}).")
    lines += [f"note: {n}" for n in est.notes]
    return "\n".join(lines)


def format_scoring(figures: Figures, scoring: StageEstimate) -> str:
    """What the scoring stage's CPU- and GPU-hours stand for."""
    line = (
        f"CPU-hours include the scoring on CPU ({format_hours(scoring.cpu_hours)} h at the rate "
        "benchmarks/clip.py measured for the xlm-roberta-base-ViT-B-32 shape; SigLIP's ViT-B/16 "
        "at 256 px costs more); "
    )
    gpu = figures.entries.get("clip_gpu_pairs_per_s")
    if gpu is None:
        return line + (
            f"on one GPU it takes {format_hours(scoring.gpu_hours)} GPU-hours instead (an "
            "assumption: the translation's GPU / 8-core ratio)."
        )
    line += (
        f"on one {gpu.get('device', 'GPU')} its towers take {format_hours(scoring.gpu_hours)} "
        "GPU-hours instead"
    )
    if "clip_reads_pairs_per_s" not in figures.entries:
        return line + "."
    feeding = scoring.records / figures.per_core("clip_reads_pairs_per_s") / 3600
    cores = figures.value("clip_gpu_pairs_per_s") / figures.per_core("clip_reads_pairs_per_s")
    return line + (
        f", fed by {format_hours(feeding)} CPU-hours of image decoding and tokenization "
        f"(about {cores:.0f} cores keep one GPU busy)."
    )


def format_image_store(est: Estimate) -> str:
    """Where the stored images are, and whether the output figure holds them (it never does)."""
    size = format_bytes(est.image_store_bytes)
    where = "inside the output folder" if est.store_in_output else "outside the output folder"
    if est.image_cache is None:
        return (
            f"Image store: about {size} of stored images in the output's staging folder until "
            "the commit (no image cache: images.cache false, or an output on gs:// or s3://), "
            f"beside the {format_bytes(est.output_bytes)} of output."
        )
    return (
        f"Image cache: about {size} of stored images in {est.image_cache}, kept for later runs, "
        f"{where}: not part of the {format_bytes(est.output_bytes)} of output (images it "
        "already holds are not downloaded again)."
    )


def estimate_json(est: Estimate) -> dict[str, Any]:
    """Every figure of the estimate, for scripts: the last line `estimate` prints.

    `image_cache`: `bytes` of the stored images, the cache's `folder` (null: no cache, the store
    is in the run's staging folder until the commit) and whether they are `in_output` (the
    output folder holds them); `total.output_bytes` never includes them."""

    def stage(s: StageEstimate) -> dict[str, Any]:
        out = asdict(s)
        out["wall_hours"] = s.wall_hours(est.workers)
        return out

    return {
        "manifest": est.manifest,
        "name": est.name,
        "workers": est.workers,
        "bandwidth_gbps": est.bandwidth_gbps,
        "sources": [{k: v for k, v in asdict(s).items() if k != "notes"} for s in est.sources],
        "stages": [stage(s) for s in est.stages],
        "total": {
            "kept": est.kept,
            "cpu_hours": est.cpu_hours,
            "gpu_hours": est.gpu_hours,
            "download_bytes": est.download_bytes,
            "output_bytes": est.output_bytes,
            "wall_hours": est.wall_hours,
            "pairs_in_flight": est.pairs_in_flight,
            "local_memory_bytes": est.local_memory_bytes,
        },
        "image_cache": {
            "folder": est.image_cache,
            "bytes": est.image_store_bytes,
            "in_output": est.store_in_output,
        },
        "figures": est.figures.path,
        "provisional": est.figures.provisional(),
        "assumptions": {k: asdict(a) for k, a in ASSUMPTIONS.items()},
        "profiles": {k: asdict(p) for k, p in PROFILES.items()},
        "notes": est.notes,
    }
