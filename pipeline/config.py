"""The manifest's sections as frozen dataclasses: what each key means and its default.

`pipeline.manifest` reads YAML into these (and each source kind's own dataclass, beside its
reader in `pipeline/sources/`) and validates them; stages take the section they need. Nothing
here reads a file or builds a graph, so every layer may import it.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline import wikimedia


class ManifestError(ValueError):
    """A manifest that cannot be built: one or more problems, each a line naming the key and
    what is wrong (`problems`; the message is them, one a line)."""

    def __init__(self, *problems: str):
        self.problems = [line for p in problems for line in str(p).splitlines()] or ["invalid"]
        super().__init__("\n".join(self.problems))


def require(ok: bool, where: str, problem: str) -> None:
    """A `ManifestError` naming the key `where` unless `ok`."""
    if not ok:
        raise ManifestError(f"{where}: {problem}")


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


# The scores of the scoring stage, by their column names: what `filters.keep_top` is keyed by.
SCORES = ("clip_score", "translation_similarity")


@dataclass(frozen=True)
class FiltersConfig:
    """Text filters applied to every Arabic caption, and the filters on the scores."""

    # fastText lid.176: the top label must be one of `langid_labels` with at least this probability.
    langid_min_score: float = 0.5
    langid_labels: tuple[str, ...] = ("ar",)
    # Length bounds of the normalised caption.
    min_chars: int = 3
    max_chars: int = 1000
    min_words: int = 1
    max_words: int = 200
    # Filters on the scoring stage's scores (`filters.scores`), off by default; each needs
    # `scoring.model`. A pair whose score is null (no image; a genuine caption) is never
    # dropped by a filter on that score. Absolute thresholds, each in [-1, 1]:
    min_clip_score: float | None = None  # `low_clip_score` below this
    min_translation_similarity: float | None = None  # `low_translation_similarity` below this
    # Per score, the fraction in (0, 1] of each source's scored pairs to keep, the highest
    # scoring: `{clip_score: 0.7}` (`below_top_clip_score`, `below_top_translation_similarity`).
    keep_top: tuple[tuple[str, float], ...] = ()

    @property
    def on_scores(self) -> bool:
        """Whether any filter on the scores is set."""
        return (
            self.min_clip_score is not None
            or self.min_translation_similarity is not None
            or bool(self.keep_top)
        )


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


# The encodings a stored image may have (`images.format`), with their MIME types; the images
# stage's codec (pipeline.images.codec.ENCODINGS) is built from this.
IMAGE_FORMATS = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}


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
    # `auto` (one folder shared by every run, $XDG_CACHE_HOME/arabic-pairs/images, for a local
    # output; off for gs:// and other URLs), a folder (relative to the manifest), or false (the
    # store is removed at the commit). `true` is `auto`.
    cache: str | bool = "auto"


@dataclass(frozen=True)
class DedupeConfig:
    """Exact and near-duplicate images across all sources, and placeholder images."""

    max_hamming: int = 4  # pHash distance at or below which two images are the same
    # An image group reached from this many distinct URLs with differing captions is a
    # placeholder ("photo unavailable"): all its pairs are dropped as `placeholder_image`.
    placeholder_min_urls: int = 5


# The layouts of the output's shards (`output.format`): Hugging Face Parquet, or WebDataset tars
# of KEY.jpg, KEY.txt and KEY.json (`pipeline.tars`) as open_clip and img2dataset use.
PARQUET = "parquet"
WEBDATASET = "webdataset"
OUTPUT_FORMATS = (PARQUET, WEBDATASET)


@dataclass(frozen=True)
class ScoringConfig:
    """The multilingual CLIP that scores every pair (`clip_score`, `translation_similarity`,
    `pipeline.scoring`). Without a model (the section left out) nothing is scored and both
    columns are null."""

    # An ONNX model folder (`image.onnx`, `text.onnx`, `tokenizer.json`, `clip.json`), local or
    # on a Beam filesystem (`gs://`, copied to each machine once); `make clip-model` exports one.
    model: str | None = None
    device: str = "auto"  # auto | cpu | cuda: auto picks CUDA when ONNX Runtime has its provider
    # Pairs per ONNX Runtime call: their images in one call, their captions in another. A GPU
    # wants more (256).
    batch_size: int = 32


def score_filter_problems(filters: FiltersConfig, scoring: ScoringConfig) -> list[str]:
    """The score filters set without a scoring model, each as a manifest problem line."""
    if scoring.model:
        return []
    return [
        f"filters.{key}: filters a score, and nothing is scored without scoring.model"
        for key in ("min_clip_score", "min_translation_similarity", "keep_top")
        if getattr(filters, key) not in (None, ())
    ]


@dataclass(frozen=True)
class OutputConfig:
    rows_per_shard: int = 10000
    format: str = PARQUET  # parquet | webdataset: DIR/data/train-XXXXX-of-NNNNN.parquet or .tar
    # The dropped records, written to DIR/rejected/ (`pipeline.rejected`): false (none), true
    # (all), or N: at most N per (source, reason), the first by their sort key.
    rejected: int | bool = False


def images_thumb_width(images: ImagesConfig) -> int | None:
    """`images.thumb_width` as a width: `auto` (the default, and what a config made in code
    keeps) is the smallest standard width at or above `size`, none with `resize: no`."""
    if images.thumb_width != "auto":
        return images.thumb_width
    return None if images.resize == "no" else wikimedia.step_at_least(images.size)
