"""Gets the image of one pair: from the image cache, a file, or a download, then stores it.

A pair's image comes from `image_path` (a local or Beam-filesystem file: Flickr8K's folder,
COCO's `image_root`) or else from `image_url` (http, https, or protocol-relative `//host/...`
taken as https; fetched through `url_map` when a prefix matches, the column keeping the original).
Both go through the same verify, hash and store path (`pipeline.images.codec`).

Downloads use one `requests.Session` per fetcher with urllib3's retries (connection errors and
500/502/504, exponential backoff), connect and read timeouts (`pipeline.http`), and a
`deadline` per download that bounds all of it, connecting, headers, body and retries
(`pipeline.http.bounded`: at the deadline the download's sockets are shut down, so a host that
trickles can never hold a slot longer). A connection that breaks while the body streams in is
tried again like one that breaks before the answer, `retries` times within the deadline. The
body is decoded as its `Content-Encoding` says (we ask for gzip and deflate only; any other is
`bad_encoding`), and the byte cap holds for what comes over the wire (Content-Length included)
and for what it decodes to, checked as it streams, so a compression bomb is stopped at the cap.

Each download goes through its host's gate (`pipeline.hosts`: `images.hosts` limits or
`per_host`; a 429 or 503 pauses and slows the whole host, and the pair is tried again once the
gate lets it, `retries` times). On Wikimedia's upload
host an original is fetched as its thumbnail at a standard width (`pipeline.wikimedia`), and the
host's permanent refusal of a non-standard width is `thumbnail_width_refused`. Every address a
request goes to must be public unless `allow_private_hosts` (`pipeline.http.AddressPolicy`);
redirects are followed here, hop by hop, so each hop is checked. `X-Robots-Tag: noai` /
`noimageai` is honoured before the body is read.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Sequence
from typing import NamedTuple
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipeline import http, wikimedia
from pipeline.config import ImagesConfig, images_thumb_width
from pipeline.hosts import THROTTLE_STATUSES, HostGate, HostGates, Ticket
from pipeline.http import AddressPolicy, GuardedAdapter, PrivateAddressError, UnresolvableHostError
from pipeline.images.codec import Rejected, store_image
from pipeline.records import Drop, Pair
from pipeline.steps import Reasons
from pipeline.store import ImageStore, PackWriter, StoredImage, StoreIndex

# The stage's name: its Beam counters, and the catch-all drop reason `images_error`.
STAGE = "images"
# Every reason the stage drops a pair for. `http_<status>` stands for a family: any final status
# that is neither 2xx nor a redirect.
REASONS = Reasons(
    STAGE,
    {
        "no_image": "the pair has neither an image_path nor an image_url",
        "bad_url": "the URL is not http(s) with a host, or requests cannot use it",
        "private_address": "the host resolves or connects to an address that is not public "
        "(allow_private_hosts lets any through)",
        "connection_error": "the host cannot be resolved or reached, or the connection broke",
        "timeout": "connecting, a read, or the whole download ran past its time",
        "http_<status>": "the final answer was that status (http_404; http_429 or http_503 when "
        "the host kept refusing or asked to wait longer than max_pause)",
        "thumbnail_width_refused": "Wikimedia's upload host refused a thumbnail width that is not "
        "a standard step",
        "too_many_redirects": "more redirects than the fetcher follows",
        "opted_out": "X-Robots-Tag says noai or noimageai to everyone or to our user agent",
        "too_large": "over max_bytes (as sent or once decoded), or over max_pixels (the "
        "decompression-bomb guard)",
        "bad_encoding": "a Content-Encoding we did not ask for (we ask for gzip and deflate), or a "
        "body that does not decode as its Content-Encoding says",
        "missing_image_file": "the image_path does not exist",
        "read_error": "the image_path exists but cannot be read",
        "not_an_image": "the bytes are not an image of an allowed format",
        "decode_error": "the image is truncated or cannot be decoded or converted to RGB",
        "too_small": "a side of the image is below min_size",
    },
)

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
# The Content-Encodings asked for (Accept-Encoding) and decoded; x-gzip is gzip's old name.
ACCEPT_ENCODING = "gzip, deflate"
DECODED_ENCODINGS = frozenset({"gzip", "x-gzip", "deflate"})


class BrokenBody(Exception):
    """The connection broke while the body streamed in: the download is tried again."""


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


# ---------------------------------------------------------------------------- URLs


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
    return REASONS.drop(pair, f"http_{throttled.status}", throttled.detail, count=False)


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
            {
                "User-Agent": self.user_agent,
                "Accept": "image/*,*/*;q=0.8",
                "Accept-Encoding": ACCEPT_ENCODING,
            },
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
                return REASONS.drop(pair, "no_image", count=False)
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
            return REASONS.drop(pair, rejected.reason, rejected.detail, count=False)
        except Exception as err:  # noqa: BLE001 - one bad record is counted, never a crash
            return REASONS.failed(pair, err, count=False)

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
            return REASONS.drop(pair, rejected.reason, rejected.detail, count=False)
        except Exception as err:  # noqa: BLE001 - one bad record is counted, never a crash
            return REASONS.failed(pair, err, count=False)
        finally:
            retry_after = refused.retry_after if refused is not None else None
            gate.release(ticket, throttled=refused is not None, retry_after=retry_after)

    def store(self, pair: Pair, loaded: Loaded, writer: PackWriter) -> Pair | Drop:
        """The pair with its image verified, hashed and appended to the store (CPU, then one
        write), or its `Drop`."""
        try:
            stored = store_image(loaded.data, self.config)
        except Rejected as rejected:
            return REASONS.drop(pair, rejected.reason, rejected.detail, count=False)
        except Exception as err:  # noqa: BLE001 - one bad record is counted, never a crash
            return REASONS.failed(pair, err, count=False)
        return with_image(pair, stored, writer.append(stored, loaded.key))

    def read_file(self, path: str) -> bytes:
        limit = self.config.max_bytes
        try:
            # UNCOMPRESSED: a file named `.gz` must not be inflated behind the byte cap's back.
            with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
                data = f.read(limit + 1)
        except FileNotFoundError:
            raise Rejected("missing_image_file", path) from None
        except Exception as err:  # noqa: BLE001 - each filesystem raises its own kinds
            if not FileSystems.exists(path):
                raise Rejected("missing_image_file", path) from None
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
        with http.bounded(self.config.deadline) as deadline:
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

    def _download(self, target: str, gate: HostGate | None, deadline: http.Deadline) -> bytes:
        url = self.request_url(target)
        redirects = broken = 0
        while True:
            try:
                self.policy.check_url(url)
            except PrivateAddressError as err:
                raise Rejected("private_address", str(err)) from None
            except UnresolvableHostError as err:
                raise Rejected("connection_error", str(err)) from None
            response = self._get(url, deadline)
            with response:
                if response.is_redirect:
                    redirects += 1
                    if redirects > MAX_REDIRECTS:
                        detail = f"more than {MAX_REDIRECTS}, last {url}"
                        raise Rejected("too_many_redirects", detail)
                    url = normalize_url(urljoin(url, response.headers["Location"]))
                    continue
                status = response.status_code
                if status in THROTTLE_STATUSES:
                    self._refused(response, url, deadline)
                if not 200 <= status < 300:
                    raise Rejected(f"http_{status}", url)
                self._check_headers(response)
                try:
                    return self._read_body(response, deadline, gate)
                except BrokenBody as err:
                    if broken >= self.config.retries:
                        raise Rejected("connection_error", str(err)) from None
                    broken += 1
            time.sleep(min(http.backoff_seconds(broken), deadline.remaining()))

    def _refused(self, response: requests.Response, url: str, deadline: http.Deadline) -> None:
        """Raises for a 429 or 503: `Rejected` (`thumbnail_width_refused`) for the upload
        host's permanent refusal of a width, else `HostRefused`. At most `REFUSAL_BODY_BYTES`
        of the body are read, piece by piece within the deadline."""
        status = response.status_code
        chunks, total = [], 0
        while total < REFUSAL_BODY_BYTES and not deadline.passed:
            try:
                chunk = response.raw.read1(REFUSAL_BODY_BYTES - total, decode_content=True)
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

    def _get(self, url: str, deadline: http.Deadline) -> requests.Response:
        """The answer's status and headers (the body left to stream), within the deadline."""
        if deadline.passed:
            raise self._timeout()
        timeout = http.timeouts(
            self.config.connect_timeout, self.config.read_timeout, deadline.remaining()
        )
        try:
            response = self.session.get(url, stream=True, allow_redirects=False, timeout=timeout)
        except PrivateAddressError as err:
            raise Rejected("private_address", str(err)) from None
        except (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema) as err:
            raise Rejected("bad_url", str(err)[:200]) from None
        except requests.exceptions.Timeout as err:
            raise Rejected("timeout", f"{type(err).__name__}: {url}") from None
        except requests.exceptions.RequestException as err:
            if deadline.passed:  # the watchdog cut the connection
                raise self._timeout() from None
            raise Rejected("connection_error", f"{type(err).__name__}: {err}"[:200]) from None
        if deadline.passed:  # the headers may have been cut short
            response.close()
            raise self._timeout()
        return response

    def _timeout(self, after: str = "") -> Rejected:
        return Rejected("timeout", f"the deadline of {self.config.deadline:g}s passed{after}")

    def _check_headers(self, response: requests.Response) -> None:
        if self.config.respect_noai:
            tags = response.raw.headers.getlist("X-Robots-Tag")
            if tags and robots_opt_out(tags, self._robots_token):
                raise Rejected("opted_out", f"X-Robots-Tag: {', '.join(tags)}"[:200])
        encoding = response.headers.get("Content-Encoding", "")
        codings = [c.strip().lower() for c in encoding.split(",") if c.strip()]
        if codings != ["identity"] and not DECODED_ENCODINGS.issuperset(codings):
            raise Rejected("bad_encoding", f"Content-Encoding: {encoding}"[:200])
        length = response.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > self.config.max_bytes:
            raise Rejected("too_large", f"Content-Length {length} over {self.config.max_bytes}")

    def _read_body(
        self, response: requests.Response, deadline: http.Deadline, gate: HostGate | None = None
    ) -> bytes:
        """The body, decoded, read in pieces as they arrive; raises `BrokenBody` when the
        connection breaks. The byte cap holds for the bytes sent and for the decoded ones, each
        piece decoded no further than the cap allows (urllib3 inflates at most the piece asked
        for). The deadline ends a trickle: the watchdog shuts the socket down at it, and
        whatever the read then gives is a timeout. A wait for the host's bytes/s is ours, not
        the host's: it moves the deadline along."""
        limit = self.config.max_bytes
        raw = response.raw
        chunks, total, sent = [], 0, 0
        while True:
            if deadline.passed:
                raise self._timeout(f" after {total} bytes")
            try:
                chunk = raw.read1(CHUNK_BYTES, decode_content=True)
            except urllib3.exceptions.ReadTimeoutError:
                raise Rejected("timeout", f"read timeout after {total} bytes") from None
            except urllib3.exceptions.DecodeError as err:
                if deadline.passed:
                    raise self._timeout(f" after {total} bytes") from None
                detail = f"{response.headers.get('Content-Encoding')}: {err}"[:200]
                raise Rejected("bad_encoding", detail) from None
            except (urllib3.exceptions.HTTPError, OSError) as err:
                if deadline.passed:
                    raise self._timeout(f" after {total} bytes") from None
                raise BrokenBody(f"{type(err).__name__} after {total} bytes: {err}"[:200]) from None
            if not chunk:
                if deadline.passed:  # the end may be the watchdog's
                    raise self._timeout(f" after {total} bytes")
                return b"".join(chunks)
            total += len(chunk)
            if total > limit or raw.tell() > limit:
                raise Rejected("too_large", f"body over {limit} bytes")
            chunks.append(chunk)
            wait = gate.consume(raw.tell() - sent) if gate is not None else 0.0
            sent = raw.tell()
            if wait > 0:
                time.sleep(wait)
                deadline.extend(wait)


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
