"""FetchImages: download or read the image of every pair, verify it, hash it and store it.

A pair's image comes from `image_path` (a local or Beam-filesystem file: Flickr8K's folder,
COCO's `image_root`) or else from `image_url` (http, https, or protocol-relative `//host/...`
taken as https; fetched through `url_map` when a prefix matches, the column keeping the original).
Both go through the same verify, hash and store path:

- verify: Pillow must identify the bytes as an image of an allowed format whatever the
  Content-Type said (`not_an_image`); the header's width x height is checked against
  `max_pixels` before anything is decoded (`too_large`, the decompression-bomb guard) and both
  sides against `min_size` (`too_small`); a file that ends early is `decode_error`.
- normalise: EXIF orientation applied, first frame of an animation, every mode made RGB
  (alpha composited on white, 16-bit grey scaled to 8 bits, CMYK and palette converted).
- store: resized (`no`, `keep_ratio`: longest side `size`, never upscaled, `center_crop`: a
  `size` x `size` square), re-encoded as `format`; a JPEG is decoded with `draft()` straight at
  the smallest DCT scale that still covers the stored size.
- hash: imagehash pHash of the stored pixels and sha256 of the stored bytes.

Downloads use one `requests.Session` per DoFn instance with `urllib3.Retry` (connection errors
and 500/502/504, exponential backoff), connect and read timeouts, a total `deadline` per
download checked while the body streams in, a byte cap checked on Content-Length and while
streaming, and many downloads in flight at once, bounded overall (`concurrency`) and per host by
the host's gate (`pipeline.hosts`: `images.hosts` limits or `per_host`; a 429 or 503 pauses and
slows the whole host, and the pair is tried again once the gate lets it, `retries` times). On
Wikimedia's upload host an original is fetched as its thumbnail at a standard width
(`pipeline.wikimedia`), and the host's permanent refusal of a non-standard width is
`thumbnail_width_refused`. Downloads and local reads run on `concurrency`
threads, decoding and encoding on one thread per core (`FetchScheduler`), so a download thread
is never held up by CPU work. Every address a request goes to must be public unless
`allow_private_hosts` (see `AddressPolicy`); redirects are followed here, hop by hop, so each
hop is checked. `X-Robots-Tag: noai` / `noimageai` is honoured before the body is read.

The stored image goes into the run's `ImageStore` (`pipeline.store`: append-only packs, one
per bundle) and the pair leaves with a reference to it, never with the bytes. The store is the
image cache too (`images.cache`, see `image_store`): a rerun or a resumed run into the same
output folder downloads only what it has not stored yet.

Drop reasons: `no_image`, `bad_url`, `private_address`, `connection_error`, `timeout`,
`http_<status>` for any final status that is neither 2xx nor a redirect (`http_404`,
`http_429` when the host kept refusing or asked for more than `max_pause`, `http_503` ...),
`thumbnail_width_refused`, `too_many_redirects`,
`opted_out`, `too_large`, `missing_file`, `read_error`, `not_an_image`, `decode_error`,
`too_small`; anything unexpected on one pair is `images_error`, never a crash.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import hashlib
import io
import json
import logging
import os
import re
import struct
import threading
import time
import uuid
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple
from urllib.parse import urljoin, urlsplit

import apache_beam as beam
import imagehash
import numpy as np
import PIL
import requests
import urllib3
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue
from PIL import Image, ImageOps, UnidentifiedImageError

from pipeline import http, progress, wikimedia
from pipeline.hosts import THROTTLE_STATUSES, HostGate, HostGates, Ticket, gates_for_run
from pipeline.http import AddressPolicy, GuardedAdapter, PrivateAddressError, UnresolvableHostError
from pipeline.manifest import ImagesConfig, images_thumb_width
from pipeline.records import DROPPED, Drop, Pair, SpreadPairs, drop, failed
from pipeline.store import ImageStore, PackWriter, StoredImage, StoreIndex, parse_ref
from pipeline.store import join as store_join

log = logging.getLogger(__name__)

STAGE = "images"
HOSTS = "hosts"  # the tag of the per-host counts

# Wikimedia asks for a contact: a real crawl sets `images.user_agent` with one.
DEFAULT_USER_AGENT = (
    "arabic-pairs/0.1 (open Arabic image-text dataset builder; no contact configured: "
    "set images.user_agent) python-requests/" + requests.__version__
)

MAX_REDIRECTS = 5
# When the thumbnail asked instead of a source's URL fails with one of these (a bitmap narrower
# than the step is not scaled up; a mirror in `url_map` may hold originals only), the URL the
# source gave is fetched instead.
THUMB_FALLBACK_STATUSES = frozenset({400, 404, 410, 415, 422, 500})
REFUSAL_BODY_BYTES = 4096  # of a 429's body, read to tell a permanent refusal from a busy host
POLL = 0.02  # seconds between looks at a host gate another thread holds
OPT_OUT_DIRECTIVES = frozenset({"noai", "noimageai"})
CHUNK_BYTES = 64 * 1024
# Formats Pillow may open (JPEG's opener also returns multi-picture MPO files). Leaves out the
# plugins that run external programs (EPS through Ghostscript) and the formats no image host
# serves for photographs (PSD, ICNS, FITS, ...). AVIF only where Pillow was built with it.
Image.init()
ALLOWED_FORMATS = tuple(
    f for f in ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "AVIF") if f in Image.OPEN
)
ENCODINGS = {  # config.format -> (Pillow format, MIME type, file extension)
    "jpeg": ("JPEG", "image/jpeg", "jpg"),
    "png": ("PNG", "image/png", "png"),
    "webp": ("WEBP", "image/webp", "webp"),
}
# Pillow's `reducing_gap`: shrink by an integer factor with a box filter first, then Lanczos;
# 3.0 is indistinguishable from a plain Lanczos resize and several times faster on big images.
REDUCING_GAP = 3.0


class Throttled(NamedTuple):
    """The host answered 429 or 503: it is busy, not the image bad. The pair is tried again once
    the host's gate lets it, unless `final`."""

    status: int
    retry_after: float | None
    detail: str
    final: bool  # the host asked for a wait beyond `max_pause`: not tried again


class HostRefused(Exception):
    """Raised where a download meets its host's 429 or 503, carrying what it said."""

    def __init__(self, throttled: Throttled):
        super().__init__(throttled.detail)
        self.throttled = throttled


class Rejected(Exception):
    """A pair's image cannot be kept; `reason` becomes its drop reason."""

    def __init__(self, reason: str, detail: str | None = None):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


# ---------------------------------------------------------------------------- URLs and addresses


def normalize_url(url: str) -> str:
    """The URL to request: protocol-relative `//host/x` becomes https; only http(s) with a host."""
    url = url.strip()
    if url.startswith("//"):
        url = "https:" + url
    try:
        parts = urlsplit(url)
        port_ok = parts.port is None or parts.port > 0
    except ValueError as err:
        raise Rejected("bad_url", str(err)) from None
    if parts.scheme.lower() not in ("http", "https"):
        raise Rejected("bad_url", f"scheme {parts.scheme!r} is not http(s)")
    if not parts.hostname or not port_ok:
        raise Rejected("bad_url", "no host")
    return url


def map_url(url: str, url_map: Sequence[tuple[str, str]]) -> str:
    """`url` with the first matching prefix of `url_map` replaced (`images.url_map`)."""
    for old, new in url_map:
        if url.startswith(old):
            return new + url[len(old) :]
    return url


def robots_opt_out(values: Sequence[str], token: str) -> bool:
    """True when an `X-Robots-Tag` value says `noai` or `noimageai` to everyone or to `token`
    (`X-Robots-Tag: noai`, `X-Robots-Tag: arabic-pairs: noimageai`), as img2dataset reads it."""
    for value in values:
        scope, sep, rest = value.partition(":")
        if sep:
            agent, directives = scope.strip().lower(), rest
        else:
            agent, directives = None, value
        if agent not in (None, "*", token):
            continue
        if any(d.strip().lower() in OPT_OUT_DIRECTIVES for d in directives.split(",")):
            return True
    return False


# ---------------------------------------------------------------------------- images


def _target_size(size: tuple[int, int], resize: str, side: int) -> tuple[int, int]:
    """The stored size of an image of `size` (before the crop, for center_crop)."""
    w, h = size
    if resize == "keep_ratio":
        scale = min(1.0, side / max(w, h))
    elif resize == "center_crop":
        scale = side / min(w, h)
    else:
        return w, h
    return max(1, round(w * scale)), max(1, round(h * scale))


def open_image(data: bytes, max_pixels: int, min_size: int) -> Image.Image:
    """The image in `data`, opened (header only) and checked; raises `Rejected`."""
    try:
        img = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except Image.DecompressionBombError as err:
        raise Rejected("too_large", str(err)) from None
    except UnidentifiedImageError:
        raise Rejected("not_an_image", f"{len(data)} bytes starting {data[:16]!r}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:  # a plugin that gave up late
        raise Rejected("decode_error", f"{type(err).__name__}: {err}"[:200]) from None
    w, h = img.size
    if w * h > max_pixels:
        raise Rejected("too_large", f"{w}x{h} exceeds {max_pixels} pixels")
    if min(w, h) < min_size:
        raise Rejected("too_small", f"{w}x{h}, a side below {min_size}")
    return img


def to_rgb(img: Image.Image) -> Image.Image:
    """`img` as RGB: alpha composited on white, 16-bit grey scaled (not clipped) to 8 bits."""
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I"):
        values = np.asarray(img)
        if img.mode != "I" or values.max(initial=0) > 255:
            values = np.clip(values, 0, 65535) >> 8  # a 16-bit range
        return Image.fromarray(np.clip(values, 0, 255).astype(np.uint8), "L").convert("RGB")
    if img.mode == "F":
        return img.convert("L").convert("RGB")
    palette_alpha = img.mode == "P" and img.palette is not None and "A" in img.palette.mode
    if (
        palette_alpha
        or "A" in img.getbands()
        or "a" in img.getbands()
        or "transparency" in img.info
    ):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def decode_image(img: Image.Image, resize: str, size: int, use_draft: bool = True) -> Image.Image:
    """The first frame of an opened image, decoded, upright, RGB. A JPEG is decoded at the
    smallest DCT scale (1/2, 1/4, 1/8) that is still at least the stored size on both sides."""
    try:
        if use_draft and resize != "no" and img.format in ("JPEG", "MPO"):
            img.draft("RGB", _target_size(img.size, resize, size))
        img.load()
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error) as err:
        # Truncated data is an error here (LOAD_TRUNCATED_IMAGES stays off): half an image
        # would be kept, hashed and deduplicated as if whole.
        raise Rejected("decode_error", f"{type(err).__name__}: {err}"[:200]) from None
    # An unreadable EXIF block leaves the pixels as they are stored.
    with contextlib.suppress(OSError, SyntaxError, ValueError, KeyError, TypeError, struct.error):
        ImageOps.exif_transpose(img, in_place=True)
    try:
        return to_rgb(img)
    except (OSError, ValueError) as err:  # a mode Pillow cannot convert (LAB without a profile)
        raise Rejected("decode_error", f"{type(err).__name__}: {err}"[:200]) from None


def resize_image(img: Image.Image, resize: str, size: int) -> Image.Image:
    """`img` resized for storage: `no`; `keep_ratio` (longest side `size`, never upscaled);
    `center_crop` (the centred square, scaled to `size` x `size`, up if need be)."""
    w, h = img.size
    if resize == "keep_ratio":
        target = _target_size((w, h), resize, size)
        if target == (w, h):
            return img
        return img.resize(target, Image.Resampling.LANCZOS, reducing_gap=REDUCING_GAP)
    if resize == "center_crop":
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        box = (left, top, left + side, top + side)
        if side == size:
            return img.crop(box)
        return img.resize(
            (size, size), Image.Resampling.LANCZOS, box=box, reducing_gap=REDUCING_GAP
        )
    return img


def encode_image(img: Image.Image, fmt: str, quality: int) -> bytes:
    pillow_format, _, _ = ENCODINGS[fmt]
    buf = io.BytesIO()
    if fmt == "png":
        img.save(buf, pillow_format)
    else:
        img.save(buf, pillow_format, quality=quality)
    return buf.getvalue()


def store_image(data: bytes, config: ImagesConfig, use_draft: bool = True) -> StoredImage:
    """Verify, decode, resize, encode and hash the image in `data`; raises `Rejected`."""
    img = open_image(data, config.max_pixels, config.min_size)
    with img:
        rgb = decode_image(img, config.resize, config.size, use_draft)
    stored = resize_image(rgb, config.resize, config.size)
    encoded = encode_image(stored, config.format, config.quality)
    _, mime_type, extension = ENCODINGS[config.format]
    return StoredImage(
        data=encoded,
        width=stored.width,
        height=stored.height,
        phash=str(imagehash.phash(stored)),
        sha256=hashlib.sha256(encoded).hexdigest(),
        mime_type=mime_type,
        extension=extension,
    )


# ---------------------------------------------------------------------------- the store

CACHE_DIR = "cache/images"  # under the output folder, for `images.cache: auto`
STAGING_STORE = "images"  # the run's store under its staging folder, when there is no cache


def resolve_cache(config: ImagesConfig, output_dir: str) -> ImagesConfig:
    """`config` with `cache: auto` made concrete for a run into `output_dir`: the folder
    `DIR/cache/images` when the output is local, off (`False`) when it is a filesystem URL
    (`gs://`: the store of a run there is removed after the commit rather than kept)."""
    if config.cache != "auto":
        return config
    if "://" in output_dir:
        return dataclasses.replace(config, cache=False)
    return dataclasses.replace(config, cache=os.path.join(os.path.abspath(output_dir), CACHE_DIR))


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

    With a cache (`config.cache` a folder; `auto` resolved first by `resolve_cache`) the store is
    the cache: `CACHE/<digest of cache_settings>/packs/`, looked up by URL before a download and
    kept after the run, so a rerun or a resumed run into the same output downloads only what it
    has not stored yet, and changing `images.size` never serves an image of the old size.
    Without one it is `STAGING/images/`, removed with the staging folder at the commit.
    Local files (Flickr8K's folder) are stored but never looked up: reading them is what a
    download would replace. Drops are not kept: a 404 or a timeout may recover by the next run.
    """
    cache = config.cache
    if isinstance(cache, str) and cache != "auto":
        digest = hashlib.sha256(
            json.dumps(cache_settings(config), sort_keys=True).encode("utf-8")
        ).hexdigest()[:16]
        return ImageStore(store_join(cache, digest), reuse=True)
    return ImageStore(store_join(staging, STAGING_STORE))


# ---------------------------------------------------------------------------- fetching


class Miss(NamedTuple):
    """A pair whose image must be downloaded: the cache key to store it under (None without a
    cache) and the host whose gate the download goes through."""

    key: str | None
    host: str


def retry_throttled(throttled: Throttled, attempt: int, retries: int) -> bool:
    """Whether a refused pair is tried again: `retries` times, unless the host asked for more
    than `max_pause`."""
    return not throttled.final and attempt < retries


def throttled_drop(pair: Pair, throttled: Throttled) -> Drop:
    return drop(pair, f"http_{throttled.status}", throttled.detail)


def host_gates(config: ImagesConfig, share: int = 1) -> HostGates:
    """The host gates of `config` (see `pipeline.hosts`)."""
    return HostGates(config.hosts, config.per_host, config.pause, config.max_pause, share)


class Loaded(NamedTuple):
    """A pair's image as `lookup` or `download_pair` got it: the bytes, and the key `store`
    appends them under
    (`ImageFetcher.cache_key`, worked out once: for a file on a Beam filesystem it costs a
    request)."""

    data: bytes
    key: str | None


class ImageFetcher:
    """Gets (`lookup`, then `download_pair` through the host's gate: I/O) and verifies, hashes
    and stores (`store`: CPU, then one append to a pack of the `ImageStore`) the image of a
    pair; safe to share among threads. No step raises for a bad record: a failure is the pair's
    `Drop`. A pack that cannot be written (a full disk) is not a bad record: that raises, and
    fails the bundle.

    When the store is the image cache (`store.reuse`), `lookup` answers an image it already
    holds (`cache_key`) with the finished pair (its reference, no new copy), counted as a hit."""

    def __init__(
        self,
        config: ImagesConfig,
        store: ImageStore,
        trusted_networks: Sequence[str] = (),
        gates: HostGates | None = None,
    ):
        self.config = config
        self.step = images_thumb_width(config)
        self.gates = gates or host_gates(config)
        self._store = store
        self.index = StoreIndex(store) if store.reuse else None
        self._lock = threading.Lock()
        self._hits = self._misses = 0
        self.policy = AddressPolicy(config.allow_private_hosts, trusted_networks)
        self.user_agent = config.user_agent or DEFAULT_USER_AGENT
        self._robots_token = re.match(r"[^/\s]*", self.user_agent).group(0).lower()
        self.session = http.session(
            {"User-Agent": self.user_agent, "Accept": "image/*,*/*;q=0.8"},
            GuardedAdapter(
                self.policy,
                pool_connections=max(10, config.per_host * 2),
                pool_maxsize=config.concurrency,
                max_retries=http.bounded_retry(config.retries, give_up_after=config.deadline),
            ),
        )

    def close(self) -> None:
        self.session.close()

    def take_counts(self) -> tuple[int, int]:
        """(cache hits, cache misses) since the last call."""
        with self._lock:
            counts = self._hits, self._misses
            self._hits = self._misses = 0
        return counts

    def fetch(self, pair: Pair, writer: PackWriter) -> Pair | Drop:
        """`lookup`, `download_pair` through the host's gate (waiting for it, and trying a
        refused pair again as the scheduler does), then `store`, all in this thread."""
        loaded = self.lookup(pair)
        if isinstance(loaded, Miss):
            loaded = self._download_when_let(pair, loaded)
        return loaded if isinstance(loaded, (Pair, Drop)) else self.store(pair, loaded, writer)

    def _download_when_let(self, pair: Pair, miss: Miss) -> Loaded | Drop:
        gate = self.gates.get(miss.host)
        attempt = 0
        while True:
            ticket = gate.try_acquire()
            while not isinstance(ticket, Ticket):
                time.sleep(ticket or POLL)
                ticket = gate.try_acquire()
            result = self.download_pair(pair, miss, gate, ticket)
            if not isinstance(result, Throttled):
                return result
            if not retry_throttled(result, attempt, self.config.retries):
                return throttled_drop(pair, result)
            attempt += 1

    def cache_key(self, pair: Pair) -> str | None:
        """What a pair's stored image is found by in the image cache: its normalised URL (not
        the `url_map`ped address, which may change between runs, as the demo's port does), or
        for a local file its path, size and modification time (an edited file is a miss);
        None when the store is not the cache or the file cannot be looked at (`read_file`
        then says why). Raises `Rejected` for a bad URL."""
        if self.index is None:
            return None
        if not pair.image_path:
            return normalize_url(pair.image_url)
        try:
            if "://" in pair.image_path:
                meta = FileSystems.match([pair.image_path])[0].metadata_list[0]
                size, modified = meta.size_in_bytes, meta.last_updated_in_seconds
            else:
                status = os.stat(pair.image_path)
                size, modified = status.st_size, status.st_mtime_ns
        except Exception:  # noqa: BLE001 - missing or unreadable: read_file names the reason
            return None
        return f"{pair.image_path}|{size}|{modified}"

    def lookup(self, pair: Pair) -> Loaded | Miss | Pair | Drop:
        """What can be had without the network (I/O only, never raises): the finished pair
        when the cache holds its image, a local file's bytes, the pair's `Drop`, or a `Miss`
        naming the host to download from."""
        try:
            if not (pair.image_path or pair.image_url):
                return drop(pair, "no_image")
            key = self.cache_key(pair)
            if key is not None:
                cached = self.index.get(key)
                with self._lock:
                    if cached is None:
                        self._misses += 1
                    else:
                        self._hits += 1
                if cached is not None:
                    ref, stored = cached
                    return with_image(pair, stored, ref)
            if pair.image_path:
                return Loaded(self.read_file(pair.image_path), key)
            return Miss(key, self.gate_host(pair.image_url))
        except Rejected as rejected:
            return drop(pair, rejected.reason, rejected.detail)
        except Exception as err:  # noqa: BLE001 - one bad record is counted, never a crash
            return failed(pair, STAGE, err)

    def download_pair(
        self, pair: Pair, miss: Miss, gate: HostGate, ticket: Ticket
    ) -> Loaded | Throttled | Drop:
        """The download of a pair `lookup` missed, sent under `ticket` of the host's `gate`
        and released to it when over (never raises): the bytes, the host's refusal, or the
        pair's `Drop`."""
        refused = None
        try:
            return Loaded(self.download(pair.image_url, pair.original_width, gate), miss.key)
        except HostRefused as err:
            refused = err.throttled
            return refused
        except Rejected as rejected:
            return drop(pair, rejected.reason, rejected.detail)
        except Exception as err:  # noqa: BLE001 - one bad record is counted, never a crash
            return failed(pair, STAGE, err)
        finally:
            retry_after = refused.retry_after if refused is not None else None
            gate.release(ticket, throttled=refused is not None, retry_after=retry_after)

    def store(self, pair: Pair, loaded: Loaded, writer: PackWriter) -> Pair | Drop:
        """The pair with its image verified, hashed and appended to the store (CPU, then one
        write), or its `Drop`."""
        try:
            stored = store_image(loaded.data, self.config)
        except Rejected as rejected:
            return drop(pair, rejected.reason, rejected.detail)
        except Exception as err:  # noqa: BLE001 - one bad record is counted, never a crash
            return failed(pair, STAGE, err)
        return with_image(pair, stored, writer.append(stored, loaded.key))

    def read_file(self, path: str) -> bytes:
        limit = self.config.max_bytes
        try:
            # UNCOMPRESSED: a file named `.gz` must not be inflated behind the byte cap's back.
            with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
                data = f.read(limit + 1)
        except FileNotFoundError:
            raise Rejected("missing_file", path) from None
        except Exception as err:  # noqa: BLE001 - each filesystem raises its own kinds
            if not FileSystems.exists(path):
                raise Rejected("missing_file", path) from None
            raise Rejected("read_error", f"{path}: {type(err).__name__}: {err}"[:300]) from None
        if len(data) > limit:
            raise Rejected("too_large", f"{path} is over {limit} bytes")
        return data

    def target_url(self, image_url: str, original_width: int | None = None) -> str:
        """The URL of the image to fetch for an `image_url`: normalised, and on Wikimedia's
        upload host the thumbnail at the step instead of a wider original
        (`pipeline.wikimedia.fetch_url`)."""
        return wikimedia.fetch_url(normalize_url(image_url), self.step, original_width)

    def request_url(self, url: str) -> str:
        """The URL actually requested for a target URL: `url_map` applied."""
        return normalize_url(map_url(normalize_url(url), self.config.url_map))

    def gate_host(self, image_url: str) -> str:
        """The host whose limits a download of `image_url` keeps: the URL's own host (a
        `url_map` points at a mirror or stand-in of it), or the mapped host when `images.hosts`
        names that one. Raises `Rejected` for a bad URL."""
        target = self.target_url(image_url)
        own = (urlsplit(target).hostname or "").lower()
        mapped = (urlsplit(self.request_url(target)).hostname or "").lower()
        return mapped if mapped != own and mapped in self.gates.configured else own

    def download(
        self, image_url: str, original_width: int | None = None, gate: HostGate | None = None
    ) -> bytes:
        """The body for `image_url` (its thumbnail on Wikimedia's upload host, see
        `target_url`), redirects followed, every hop checked, read at most at the `gate`'s
        bytes/s; raises `Rejected`, or `HostRefused` for a 429 or 503."""
        target = self.target_url(image_url, original_width)
        # One deadline for the attempt, the fallback below included.
        deadline = time.monotonic() + self.config.deadline
        try:
            return self._download(target, gate, deadline)
        except Rejected as rejected:
            status = rejected.reason.removeprefix("http_")
            if not (
                target != normalize_url(image_url)
                and status.isdigit()
                and int(status) in THUMB_FALLBACK_STATUSES
            ):
                raise
        # The thumbnail could not be had: the URL the source gave may still be.
        return self._download(normalize_url(image_url), gate, deadline)

    def _download(self, target: str, gate: HostGate | None, deadline: float) -> bytes:
        url = self.request_url(target)
        for _ in range(MAX_REDIRECTS + 1):
            try:
                self.policy.check_url(url)
            except PrivateAddressError as err:
                raise Rejected("private_address", str(err)) from None
            except UnresolvableHostError as err:
                raise Rejected("connection_error", str(err)) from None
            response = self._get(url, deadline)
            with response:
                if response.is_redirect:
                    url = normalize_url(urljoin(url, response.headers["Location"]))
                    continue
                status = response.status_code
                if status in THROTTLE_STATUSES:
                    self._refused(response, url, deadline)
                if not 200 <= status < 300:
                    raise Rejected(f"http_{status}", url)
                self._check_headers(response)
                return self._read_body(response, deadline, gate)
        raise Rejected("too_many_redirects", f"more than {MAX_REDIRECTS}, last {url}")

    def _refused(self, response: requests.Response, url: str, deadline: float) -> None:
        """Raises for a 429 or 503: `Rejected` (`thumbnail_width_refused`) for the upload
        host's permanent refusal of a width, else `HostRefused`. At most `REFUSAL_BODY_BYTES`
        of the body are read, piece by piece within the deadline."""
        status = response.status_code
        chunks, total = [], 0
        while total < REFUSAL_BODY_BYTES and time.monotonic() < deadline:
            try:
                chunk = response.raw.read1(REFUSAL_BODY_BYTES - total)
            except (urllib3.exceptions.HTTPError, OSError):
                break
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        body = b"".join(chunks)
        if wikimedia.is_steps_refusal(status, body, url):
            raise Rejected("thumbnail_width_refused", url)
        retry_after = http.retry_after(response)
        final = retry_after is not None and retry_after > self.config.max_pause
        detail = f"{url}: Retry-After {response.headers.get('Retry-After')}" if final else url
        raise HostRefused(Throttled(status, retry_after, detail, final))

    def _get(self, url: str, deadline: float) -> requests.Response:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise Rejected("timeout", f"deadline of {self.config.deadline:g}s passed")
        timeout = http.timeouts(self.config.connect_timeout, self.config.read_timeout, remaining)
        try:
            return self.session.get(url, stream=True, allow_redirects=False, timeout=timeout)
        except PrivateAddressError as err:
            raise Rejected("private_address", str(err)) from None
        except requests.exceptions.Timeout as err:
            raise Rejected("timeout", f"{type(err).__name__}: {url}") from None
        except (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema) as err:
            raise Rejected("bad_url", str(err)[:200]) from None
        except requests.exceptions.RequestException as err:
            raise Rejected("connection_error", f"{type(err).__name__}: {err}"[:200]) from None

    def _check_headers(self, response: requests.Response) -> None:
        if self.config.respect_noai:
            tags = response.raw.headers.getlist("X-Robots-Tag")
            if tags and robots_opt_out(tags, self._robots_token):
                raise Rejected("opted_out", f"X-Robots-Tag: {', '.join(tags)}"[:200])
        length = response.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > self.config.max_bytes:
            raise Rejected("too_large", f"Content-Length {length} over {self.config.max_bytes}")

    def _read_body(
        self, response: requests.Response, deadline: float, gate: HostGate | None = None
    ) -> bytes:
        """The body, read in pieces as they arrive. The deadline is checked after every piece,
        so a trickling server is cut off at most one read timeout after it (each socket read
        waits at most `read_timeout`); the byte cap is checked as the body grows. A wait for the
        host's bytes/s is ours, not the host's: it moves the deadline along."""
        limit = self.config.max_bytes
        chunks, total = [], 0
        while True:
            if time.monotonic() > deadline:
                raise Rejected("timeout", f"deadline of {self.config.deadline:g}s, {total} bytes")
            try:
                chunk = response.raw.read1(CHUNK_BYTES)
            except urllib3.exceptions.ReadTimeoutError:
                raise Rejected("timeout", f"read timeout after {total} bytes") from None
            except (urllib3.exceptions.HTTPError, OSError) as err:
                detail = f"{type(err).__name__} after {total} bytes: {err}"[:200]
                raise Rejected("connection_error", detail) from None
            if not chunk:
                return b"".join(chunks)
            total += len(chunk)
            if total > limit:
                raise Rejected("too_large", f"body over {limit} bytes")
            chunks.append(chunk)
            wait = gate.consume(len(chunk)) if gate is not None else 0.0
            if wait > 0:
                time.sleep(wait)
                deadline += wait


def with_image(pair: Pair, stored: StoredImage, ref: str) -> Pair:
    """`pair` with the reference of its stored image and what describes it. `image_path` keeps
    the source location (dedupe counts locations); the output's `image.path` is a name the
    writer makes."""
    return pair._replace(
        image_ref=ref,
        phash=stored.phash,
        sha256=stored.sha256,
        width=stored.width,
        height=stored.height,
        mime_type=stored.mime_type,
    )


class FetchScheduler:
    """Runs the three steps of every pair on two thread pools: `lookup` (the cache, a local
    file) and `download_pair` on the load pool, `store` on the store pool. It keeps at most
    `concurrency` lookups and downloads in flight, each download within its host's gate
    (`pipeline.hosts`: the host's limits, slowed and paused after a 429 or 503), and at most
    `max_buffered` pairs held in all (waiting, loading, loaded, storing).

    The two pools keep downloads flowing while images decode: a download thread is free as soon
    as its bytes are in, whatever the CPU is doing. Downloads wait in one queue per host and
    start round-robin across hosts, so a slow, limited or paused host holds back only its own
    pairs. A pair the host refused goes back to the front of its queue, `retries` times.
    Used from one thread (the DoFn's).
    """

    def __init__(
        self,
        fetcher: ImageFetcher,
        writer: PackWriter,
        load_pool: concurrent.futures.Executor,
        store_pool: concurrent.futures.Executor,
        concurrency: int,
        max_buffered: int,
        retries: int = 0,
    ):
        self._fetcher = fetcher
        self._writer = writer
        self._load_pool = load_pool
        self._store_pool = store_pool
        self._concurrency = concurrency
        self._max_buffered = max_buffered
        self._retries = retries
        # host -> pairs to download, (pair, tag, miss, attempt); None -> pairs to look up
        self._waiting: collections.OrderedDict[str | None, collections.deque] = (
            collections.OrderedDict()
        )
        self._loading: dict[concurrent.futures.Future, tuple] = {}
        self._storing: dict[concurrent.futures.Future, tuple[Any, int]] = {}
        self._buffered = 0
        self._wake_at: float | None = None  # when a refusing gate may let a download start

    @property
    def full(self) -> bool:
        return self._buffered >= self._max_buffered

    def __len__(self) -> int:
        return self._buffered

    def submit(self, pair: Pair, tag: Any = None) -> None:
        self._buffered += 1
        # Lookups wait under the key None, taking their turn with the hosts' downloads.
        self._waiting.setdefault(None, collections.deque()).append((pair, tag))
        self._start()

    def ready(self, block: bool = False) -> list[tuple[Any, Pair | Drop, int]]:
        """Finished pairs as (tag, result, bytes read); with `block`, waits until some step
        finishes or a paused host may go on (so the list can be empty)."""
        pending = [*self._loading, *self._storing]
        timeout: float | None = 0.0
        if block:
            timeout = None
            if self._waiting:  # downloads a gate holds back: look again when it may open
                wake = self._wake_at if self._wake_at is not None else time.monotonic() + POLL
                timeout = min(1.0, max(0.001, wake - time.monotonic()))
        if pending:
            done, _ = concurrent.futures.wait(
                pending, timeout=timeout, return_when=concurrent.futures.FIRST_COMPLETED
            )
        else:
            if block and timeout:
                time.sleep(timeout)
            done = set()
        finished = []
        for future in done:
            if future in self._loading:
                self._loaded(future, finished)
            else:
                tag, nbytes = self._storing.pop(future)
                self._buffered -= 1
                finished.append((tag, future.result(), nbytes))
        self._start()
        return finished

    def _loaded(self, future: concurrent.futures.Future, finished: list) -> None:
        pair, tag, miss, attempt = self._loading.pop(future)
        result = future.result()
        if isinstance(result, Miss):
            self._waiting.setdefault(result.host, collections.deque()).append(
                (pair, tag, result, 0)
            )
        elif isinstance(result, Throttled):
            if retry_throttled(result, attempt, self._retries):
                queue = self._waiting.setdefault(miss.host, collections.deque())
                queue.appendleft((pair, tag, miss, attempt + 1))
            else:
                self._buffered -= 1
                finished.append((tag, throttled_drop(pair, result), 0))
        elif isinstance(result, (Pair, Drop)):  # a drop, or a pair the cache finished
            self._buffered -= 1
            finished.append((tag, result, 0))
        else:
            stored = self._store_pool.submit(self._fetcher.store, pair, result, self._writer)
            self._storing[stored] = (tag, len(result.data))

    def drain(self) -> Iterator[tuple[Any, Pair | Drop, int]]:
        while self._buffered:
            yield from self.ready(block=True)

    def _start(self) -> None:
        self._wake_at = None
        started = True
        while started and len(self._loading) < self._concurrency:
            started = False
            for host in list(self._waiting):
                if len(self._loading) >= self._concurrency:
                    break
                queue = self._waiting[host]
                if host is None:
                    pair, tag = queue.popleft()
                    future = self._load_pool.submit(self._fetcher.lookup, pair)
                    self._loading[future] = (pair, tag, None, 0)
                else:
                    gate = self._fetcher.gates.get(host)
                    ticket = gate.try_acquire()
                    if not isinstance(ticket, Ticket):
                        wake = time.monotonic() + (ticket or POLL)
                        self._wake_at = wake if self._wake_at is None else min(self._wake_at, wake)
                        continue
                    pair, tag, miss, attempt = queue.popleft()
                    future = self._load_pool.submit(
                        self._fetcher.download_pair, pair, miss, gate, ticket
                    )
                    self._loading[future] = (pair, tag, miss, attempt)
                if not queue:
                    del self._waiting[host]
                else:  # round-robin: this host goes to the back
                    self._waiting.move_to_end(host)
                started = True


def _set_pillow_bomb_guard(max_pixels: int) -> None:
    # Pillow's own, process-wide guard raises DecompressionBombError above twice
    # MAX_IMAGE_PIXELS and only warns between once and twice. It is raised to `max_pixels` when
    # lower (never lowered: another stage in the process may allow more) so that it never
    # rejects what the config allows; `open_image` rejects above `max_pixels` itself, so the
    # warning band says nothing new.
    if Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = max_pixels
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


class _FetchImagesFn(beam.DoFn):
    """Fetches the pairs of a bundle concurrently: `process` hands each pair to the scheduler and
    emits whatever has finished; `finish_bundle` waits for the rest. Each pair leaves in the
    window and with the timestamp it came in with. At most 2 x `concurrency` pairs are held, so
    a bundle's memory is bounded by that many images (`max_bytes` each at worst). `total`, the
    number of pairs of the stage, is for the progress line only."""

    def __init__(
        self,
        config: ImagesConfig,
        store: ImageStore,
        trusted_networks: Sequence[str],
        run: str,
        share: int = 1,
    ):
        self._config = config
        self._store = store
        self._trusted_networks = tuple(trusted_networks)
        self._run = run  # the host gates are shared by this run's instances in one process
        self._share = share
        self._kept = Metrics.counter(STAGE, "kept")
        self._dropped = Metrics.counter(STAGE, "dropped")
        self._bytes = Metrics.counter(STAGE, "bytes_read")
        self._stored_bytes = Metrics.counter(STAGE, "bytes_stored")
        self._cache_hits = Metrics.counter(STAGE, "cache_hits")
        self._cache_misses = Metrics.counter(STAGE, "cache_misses")
        self._total: int | None = None

    def setup(self):
        _set_pillow_bomb_guard(self._config.max_pixels)
        self._gates = gates_for_run(self._run, lambda: host_gates(self._config, self._share))
        self._fetcher = ImageFetcher(
            self._config, self._store, self._trusted_networks, gates=self._gates
        )
        self._load_pool = concurrent.futures.ThreadPoolExecutor(
            self._config.concurrency, thread_name_prefix="images-load"
        )
        # Pillow, numpy and hashlib release the GIL, so threads use every core.
        self._store_pool = concurrent.futures.ThreadPoolExecutor(
            _cpu_count(), thread_name_prefix="images-store"
        )

    def start_bundle(self):
        c = self._config
        # One pack a bundle: closed (uploaded) before the bundle's pairs are committed.
        self._writer = self._store.writer()
        self._scheduler = FetchScheduler(
            self._fetcher,
            self._writer,
            self._load_pool,
            self._store_pool,
            c.concurrency,
            2 * c.concurrency,
            c.retries,
        )

    def process(
        self,
        pair,
        total: int | None = None,
        timestamp=beam.DoFn.TimestampParam,
        window=beam.DoFn.WindowParam,
    ):
        self._total = total
        self._scheduler.submit(pair, (timestamp, window))
        yield from self._emit(self._scheduler.ready())
        while self._scheduler.full:
            yield from self._emit(self._scheduler.ready(block=True))

    def finish_bundle(self):
        yield from self._emit(self._scheduler.drain())
        self._writer.close()
        # What the hosts did (requests, refusals, pauses), for stats.json: each count is taken
        # once, by whichever instance of the process asks first after it happened.
        for host, stats in self._gates.take_stats():
            yield beam.pvalue.TaggedOutput(
                HOSTS, WindowedValue((host, stats), MIN_TIMESTAMP, (GlobalWindow(),))
            )

    def teardown(self):
        for pool in (getattr(self, "_load_pool", None), getattr(self, "_store_pool", None)):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
        if getattr(self, "_fetcher", None) is not None:
            self._fetcher.close()

    def _emit(self, finished):
        if finished:
            progress.note(STAGE, self._gates.describe())
        for (timestamp, window), result, nbytes in finished:
            progress.advance(STAGE, total=self._total, unit="pairs")
            self._bytes.inc(nbytes)
            if isinstance(result, Drop):
                self._dropped.inc()
                Metrics.counter(STAGE, f"dropped_{result.reason}").inc()
                yield beam.pvalue.TaggedOutput(DROPPED, WindowedValue(result, timestamp, (window,)))
            else:
                self._kept.inc()
                self._stored_bytes.inc(parse_ref(result.image_ref)[2])
                yield WindowedValue(result, timestamp, (window,))
        # The cache counts in the load threads, where Beam counters are not bound.
        hits, misses = self._fetcher.take_counts()
        self._cache_hits.inc(hits)
        self._cache_misses.inc(misses)


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class FetchImages(beam.PTransform):
    """Gets, verifies, hashes and stores the image of every pair. Returns `(pairs, dropped)`,
    and with `with_hosts` also the per-host counts `(host, {requests, throttled, pauses,
    paused_seconds, ...})` for `stats.json` (`pipeline.hosts.merge_host_stats`).

    Each kept pair carries `image_ref`, the reference of its stored image in `store` (see
    `image_store`: the run's staging store, or the image cache); the bytes stay out of the
    graph until `WriteDataset` reads them back. With `config.fetch` False the pairs pass through
    untouched (URL-only rows) and nothing is dropped. `share`: the worker processes the run is
    known to have, among which a configured host's limits are divided (`pipeline.hosts`).
    `trusted_networks` is for tests only (see `AddressPolicy`).
    """

    def __init__(
        self,
        config: ImagesConfig,
        store: ImageStore,
        *,
        share: int = 1,
        with_hosts: bool = False,
        trusted_networks: Sequence[str] = (),
    ):
        super().__init__()
        self._config = config
        self._store = store
        self._share = share
        self._with_hosts = with_hosts
        self._trusted_networks = tuple(trusted_networks)
        self._run = uuid.uuid4().hex

    def expand(self, pairs):
        if not self._config.fetch:
            none = pairs.pipeline | "NoDrops" >> beam.Create([]).with_output_types(Drop)
            if self._with_hosts:
                return pairs, none, pairs.pipeline | "NoHosts" >> beam.Create([])
            return pairs, none
        # How many there are, for the ETA of the progress line (the Reshuffle holds them anyway).
        total = beam.pvalue.AsSingleton(
            pairs | "CountForProgress" >> beam.combiners.Count.Globally()
        )
        fetch = _FetchImagesFn(
            self._config, self._store, self._trusted_networks, self._run, self._share
        )
        fetched = (
            pairs
            # Readers emit a shard's pairs from one worker; spread the slow fetches out.
            | "Spread" >> SpreadPairs()
            | "Fetch" >> beam.ParDo(fetch, total).with_outputs(DROPPED, HOSTS, main="kept")
        )
        if self._with_hosts:
            return fetched.kept, fetched[DROPPED], fetched[HOSTS]
        return fetched.kept, fetched[DROPPED]
