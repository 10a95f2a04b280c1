"""FetchImages against a real threaded HTTP server on 127.0.0.1 and local files.

The server is the test's own loopback address, which the production policy refuses. The tests
let it through without `allow_private_hosts`: `trusted_networks=("127.0.0.1/32",)` (a test-only
parameter) trusts exactly that address, so a redirect to 10.0.0.1 or 169.254.169.254 is still
refused by the same code that runs in production. `allow_private_hosts=True` is exercised on
its own, where nothing redirects.
"""

from __future__ import annotations

import concurrent.futures
import gzip
import hashlib
import io
import socket
import tempfile
import threading
import time
import tracemalloc
import zlib
from collections import Counter

import apache_beam as beam
import datasets
import imagehash
import numpy as np
import pytest
import urllib3
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from image_samples import (
    animated_gif,
    bomb_png,
    cmyk_jpeg,
    encode,
    exif_rotated_jpeg,
    jpeg,
    palette_png_with_transparency,
    png,
    png16,
)
from PIL import Image
from raw_host import PHOTO, RawHost, answer
from records_of import image_pair

from pipeline.hosts import HostGates
from pipeline.images import FetchImages
from pipeline.images.codec import Rejected, decode_image, open_image, store_image
from pipeline.images.fetcher import (
    DEFAULT_USER_AGENT,
    ImageFetcher,
    Loaded,
    Miss,
    Throttled,
    normalize_url,
    robots_opt_out,
)
from pipeline.images.scheduler import FetchScheduler
from pipeline.manifest import HostLimits, ImagesConfig
from pipeline.records import Drop, Pair
from pipeline.store import ImageStore
from standins.images import ImageHost, Reply
from standins.upload import UploadStandIn

LOOPBACK = ("127.0.0.1/32",)
JPEG = {"Content-Type": "image/jpeg"}
PNG = {"Content-Type": "image/png"}


def fetch_one(config: ImagesConfig, url: str, trusted=LOOPBACK) -> Pair | Drop:
    with tempfile.TemporaryDirectory() as folder:
        store = ImageStore(folder)
        fetcher = ImageFetcher(config, store, trusted)
        writer = store.writer()
        try:
            return fetcher.fetch(image_pair(1, url), writer)
        finally:
            writer.close()
            fetcher.close()


def reason(result: Pair | Drop) -> str:
    return result.reason if isinstance(result, Drop) else "kept"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server():
    with ImageHost() as s:
        yield s


# ---------------------------------------------------------------------------- the whole stage

CONFIG = ImagesConfig(
    allow_private_hosts=False, deadline=5.0, retries=2, max_bytes=1_000_000, size=256
)


def test_every_outcome_through_the_stage(server, tmp_path):
    big = b"\xff\xd8\xff" + bytes(CONFIG.max_bytes)
    local = tmp_path / "flickr" / "local.jpg"
    local.parent.mkdir()
    local.write_bytes(jpeg(400, 300, seed=8))
    s = server
    # line -> (URL or path, expected reason, or the stored (width, height) when kept)
    cases = {
        1: (s.route("/ok.jpg", Reply(200, JPEG, jpeg(640, 480))), (256, 192)),
        2: (s.url("/missing.jpg"), "http_404"),
        3: (
            s.route("/busy.jpg", Reply(429, {"Retry-After": "1"}), Reply(200, JPEG, jpeg())),
            (256, 192),
        ),
        4: (s.route("/flaky.jpg", Reply(503), Reply(200, JPEG, jpeg())), (256, 192)),
        5: (s.route("/broken.jpg", Reply(500)), "http_500"),
        6: (s.route("/big.jpg", Reply(200, JPEG, big)), "too_large"),
        7: (s.route("/big-chunked.jpg", Reply(200, JPEG, big, declare_length=False)), "too_large"),
        8: (s.route("/page.jpg", Reply(200, JPEG, b"<!doctype html><p>hello</p>")), "not_an_image"),
        9: (s.route("/cut.jpg", Reply(200, JPEG, jpeg(400, 300)[:3000])), "decode_error"),
        10: (s.route("/bomb.png", Reply(200, PNG, bomb_png())), "too_large"),
        11: (
            s.route("/to-lan", Reply(302, {"Location": "http://10.0.0.1/x.jpg"})),
            "private_address",
        ),
        12: (
            s.route("/to-metadata", Reply(301, {"Location": "http://169.254.169.254/latest/"})),
            "private_address",
        ),
        13: (
            s.route("/noai.jpg", Reply(200, {"X-Robots-Tag": "noai", **JPEG}, jpeg())),
            "opted_out",
        ),
        14: (
            s.route("/noimageai.jpg", Reply(200, {"X-Robots-Tag": "noindex, noimageai"}, jpeg())),
            "opted_out",
        ),
        15: (
            s.route("/other-bot.jpg", Reply(200, {"X-Robots-Tag": "otherbot: noai"}, jpeg())),
            (256, 192),
        ),
        16: (s.route("/cmyk.jpg", Reply(200, JPEG, cmyk_jpeg(200, 150))), (200, 150)),
        17: (s.route("/palette.png", Reply(200, PNG, palette_png_with_transparency())), (120, 80)),
        18: (s.route("/deep.png", Reply(200, PNG, png16(128, 96))), (128, 96)),
        # 300x200 with orientation 6: upright it is 200x300, stored 171x256.
        19: (s.route("/rotated.jpg", Reply(200, JPEG, exif_rotated_jpeg(300, 200))), (171, 256)),
        20: (s.route("/anim.gif", Reply(200, {}, animated_gif(100, 80))), (100, 80)),
        21: (s.route("/tiny.jpg", Reply(200, JPEG, jpeg(20, 20))), "too_small"),
        22: (s.route("/moved", Reply(302, {"Location": "/ok.jpg"})), (256, 192)),
        23: (s.route("/loop", Reply(302, {"Location": "/loop"})), "too_many_redirects"),
        24: (f"http://127.0.0.1:{closed_port()}/x.jpg", "connection_error"),
        25: ("ftp://example.org/x.jpg", "bad_url"),
        26: (None, "no_image"),
        27: (str(local), (256, 192)),
        28: (str(tmp_path / "flickr" / "gone.jpg"), "missing_image_file"),
        29: (s.route("/large.jpg", Reply(200, JPEG, jpeg(1600, 1200, seed=9))), (256, 192)),
    }
    pairs = [
        image_pair(line, path=where) if line in (27, 28) else image_pair(line, url=where)
        for line, (where, _) in cases.items()
    ]
    kept_sizes = {line: out for line, (_, out) in cases.items() if isinstance(out, tuple)}
    drop_reasons = [(line, out) for line, (_, out) in cases.items() if isinstance(out, str)]

    store = ImageStore(str(tmp_path / "store"))

    def check_kept(kept: list[Pair]) -> None:
        assert {p.input_line: (p.width, p.height) for p in kept} == kept_sizes
        for p in kept:
            assert p.mime_type == "image/jpeg"
            data = store.read(p.image_ref)  # the pair carries a reference, never the bytes
            assert p.sha256 == hashlib.sha256(data).hexdigest()
            assert len(p.phash) == 16 and int(p.phash, 16) >= 0
            decoded = datasets.Image().decode_example({"bytes": data, "path": None})
            assert (decoded.width, decoded.height, decoded.mode) == (p.width, p.height, "RGB")

    start = time.monotonic()
    with TestPipeline() as p:
        kept, dropped = (
            p | beam.Create(pairs) | FetchImages(CONFIG, store, trusted_networks=LOOPBACK)
        )
        assert_that(kept, check_kept, label="Kept")
        assert_that(
            dropped | beam.Map(lambda d: (d.input_line, d.reason)),
            equal_to(drop_reasons),
            label="Reasons",
        )
        every_line = (
            (kept | "KeptLine" >> beam.Map(lambda x: x.input_line)),
            (dropped | "DropLine" >> beam.Map(lambda x: x.input_line)),
        ) | beam.Flatten()
        assert_that(every_line, equal_to(list(cases)), label="Accounting")
    elapsed = time.monotonic() - start

    assert server.hits("/busy.jpg") == 2 and server.hits("/flaky.jpg") == 2
    assert server.hits("/broken.jpg") == 1 + CONFIG.retries
    assert server.hits("/loop") == 6  # the first request and 5 redirects
    assert all(h["User-Agent"] == DEFAULT_USER_AGENT for _, h in server.log)
    assert elapsed < 15  # concurrent: the waits (Retry-After, backoff) overlap


def test_fetch_false_passes_pairs_through_untouched(tmp_path):
    pairs = [image_pair(1, "http://10.0.0.1/x.jpg"), image_pair(2)]
    store = ImageStore(str(tmp_path / "store"))
    with TestPipeline() as p:
        kept, dropped = p | beam.Create(pairs) | FetchImages(ImagesConfig(fetch=False), store)
        assert_that(kept, equal_to(pairs), label="Kept")
        assert_that(dropped, equal_to([]), label="Dropped")


def test_the_stage_fetches_many_at_once_within_the_host_bound(tmp_path):
    config = ImagesConfig(
        allow_private_hosts=True, concurrency=16, per_host=6, deadline=10.0, size=64
    )
    with ImageHost() as server:
        url = server.route("/slow.jpg", Reply(200, JPEG, jpeg(), wait=0.3))
        pairs = [image_pair(i, f"{url}?n={i}") for i in range(24)]
        start = time.monotonic()
        with TestPipeline() as p:
            kept, _ = p | beam.Create(pairs) | FetchImages(config, ImageStore(str(tmp_path)))
            assert_that(kept | beam.Map(lambda x: x.input_line), equal_to(list(range(24))))
        elapsed = time.monotonic() - start
        assert server.max_active == 6  # per_host, not 1 and not concurrency
    assert elapsed < 24 * 0.3  # one at a time would take 7.2 s; 4 rounds of 6 take ~1.2 s


# ---------------------------------------------------------------------------- downloads


def test_a_trickling_body_ends_as_timeout_at_the_deadline(server):
    url = server.route("/trickle.jpg", Reply(200, JPEG, jpeg(), trickle=0.05))
    start = time.monotonic()
    result = fetch_one(ImagesConfig(deadline=1.0, read_timeout=5.0), url)
    assert reason(result) == "timeout"
    assert 1.0 <= time.monotonic() - start < 2.0


def test_a_server_slower_than_the_read_timeout_is_a_timeout(server):
    url = server.route("/late.jpg", Reply(200, JPEG, jpeg(), wait=1.0))
    start = time.monotonic()
    assert reason(fetch_one(ImagesConfig(read_timeout=0.3, retries=0), url)) == "timeout"
    assert time.monotonic() - start < 0.9


HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: 10000\r\n\r\n"


@pytest.mark.parametrize(
    ("url", "prefix", "gap"),
    [
        # A trickle of bytes each well within read_timeout: no read ever times out.
        ("http", b"HTTP/1.1 2", 0.25),
        ("http", b"HTTP/1.1 200 OK\r\nX-Pad: ", 0.25),
        ("http", HEAD + b"\xff\xd8\xff", 0.25),
        # A silence shorter than read_timeout, longer than the deadline.
        ("http", HEAD + b"\xff\xd8\xff", 6.0),
        # The TLS handshake: a record of 16 KB, a byte at a time.
        ("https", b"\x16\x03\x03\x40\x00", 0.25),
    ],
    ids=["status-line", "headers", "body", "silent-body", "tls-handshake"],
)
def test_a_host_cannot_hold_a_download_past_its_deadline(url, prefix, gap):
    def script(link):
        if url == "http":
            link.read_request()
        link.send(prefix)
        link.trickle(b"a" * 10_000, gap)

    config = ImagesConfig(deadline=1.5, connect_timeout=10.0, read_timeout=10.0, retries=2)
    with RawHost(script) as host:
        start = time.monotonic()
        result = fetch_one(config, host.url("/x.jpg").replace("http:", f"{url}:"))
        elapsed = time.monotonic() - start
    assert reason(result) == "timeout", result.detail
    assert 1.4 <= elapsed < config.deadline + 3
    assert host.connections == 1  # nothing is tried again past the deadline


@pytest.mark.parametrize("when", ["before-the-answer", "during-the-body"])
def test_a_reset_connection_is_tried_again(when):
    def script(link):
        link.read_request()
        if link.number > 0:
            link.send(answer(PHOTO))
            return
        if when == "during-the-body":
            link.send(answer(PHOTO)[:5000])
            time.sleep(0.2)  # the client is reading the body when the reset comes
        link.reset()

    with RawHost(script) as host:
        result = fetch_one(ImagesConfig(retries=1), host.url("/x.jpg"))
        assert reason(result) == "kept" and host.connections == 2
    with RawHost(script) as host:
        result = fetch_one(ImagesConfig(retries=0), host.url("/x.jpg"))
        assert reason(result) == "connection_error" and host.connections == 1


def test_resets_are_tried_again_only_within_the_deadline():
    def script(link):
        link.read_request()
        link.send(answer(PHOTO)[:5000])
        time.sleep(0.1)
        link.reset()

    with RawHost(script) as host:
        start = time.monotonic()
        result = fetch_one(ImagesConfig(retries=100, deadline=2.0), host.url("/x.jpg"))
        elapsed = time.monotonic() - start
    assert reason(result) in ("timeout", "connection_error")
    assert 3 <= host.connections < 100 and elapsed < 2.0 + 1.5


def raw_deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(wbits=-15)
    return packer.compress(data) + packer.flush()


def gzip_bomb(inflated: int, layers: int = 1) -> bytes:
    """A gzip body that inflates to `inflated` zero bytes: gzip members of 8 MiB each (about
    8 KB apiece), gzipped again `layers - 1` times (`Content-Encoding: gzip, gzip`)."""
    member = gzip.compress(bytes(8 << 20))
    body = member * (inflated // (8 << 20))
    for _ in range(layers - 1):
        body = gzip.compress(body)
    return body


@pytest.mark.parametrize(
    ("encoding", "encode"),
    [
        ("gzip", gzip.compress),
        ("x-gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", raw_deflate),  # what some servers send as deflate
        ("gzip, deflate", lambda data: zlib.compress(gzip.compress(data))),
        ("identity", lambda data: data),
    ],
)
def test_an_encoded_image_is_decoded(server, encoding, encode):
    photo = jpeg(640, 480)
    url = server.route("/x.jpg", Reply(200, {**JPEG, "Content-Encoding": encoding}, encode(photo)))
    result = fetch_one(ImagesConfig(), url)
    assert reason(result) == "kept" and (result.width, result.height) == (256, 192)
    [(_, headers)] = server.log
    assert headers["Accept-Encoding"] == "gzip, deflate"


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        ("br", b"\x1b\x03\x00\xf8\xa5\x00"),  # not asked for
        ("zstd", b"(\xb5/\xfd\x00X\x00\x00"),  # not asked for, though urllib3 could decode it
        ("compress", b"\x1f\x9d\x90"),
        ("gzip, br", b"\x1f\x8b"),
        ("gzip", b"not gzip at all, but a page of HTML"),
        ("deflate", b"\xff\xd8\xff\xe0 a JPEG that is not deflated"),
    ],
)
def test_an_encoding_not_asked_for_or_not_decodable_is_bad_encoding(server, encoding, body):
    url = server.route("/x.jpg", Reply(200, {**JPEG, "Content-Encoding": encoding}, body))
    assert reason(fetch_one(ImagesConfig(), url)) == "bad_encoding"


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        ("gzip", gzip_bomb(64 << 20)),  # 64 KB -> 64 MiB
        ("gzip, gzip", gzip_bomb(1 << 30, layers=2)),  # about 1 KB -> 1 GiB
    ],
    ids=["64MiB", "1GiB-nested"],
)
def test_a_compression_bomb_is_stopped_at_the_byte_cap_as_it_streams(server, encoding, body):
    url = server.route("/bomb.jpg", Reply(200, {**JPEG, "Content-Encoding": encoding}, body))
    tracemalloc.start()
    try:
        start = time.monotonic()
        result = fetch_one(ImagesConfig(max_bytes=2_000_000), url)
        elapsed = time.monotonic() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert reason(result) == "too_large"
    assert peak < 32 << 20 and elapsed < 2.0  # inflated no further than the cap


def test_an_encoded_refusal_of_a_width_is_still_read(server):
    body = gzip.compress(b"<p>Use one of the standard thumbnail sizes: https://w.wiki/GHai</p>")
    url = server.route("/thumb.jpg", Reply(429, {"Content-Encoding": "gzip"}, body))
    assert reason(fetch_one(ImagesConfig(retries=3), url)) == "thumbnail_width_refused"


def test_retry_after_is_honoured_and_a_long_one_gives_up_at_once(server):
    short = server.route("/short", Reply(429, {"Retry-After": "1"}), Reply(200, JPEG, jpeg()))
    long = server.route("/long", Reply(429, {"Retry-After": "3600"}), Reply(200, JPEG, jpeg()))
    start = time.monotonic()
    assert reason(fetch_one(ImagesConfig(deadline=5.0), short)) == "kept"
    assert time.monotonic() - start >= 1.0
    start = time.monotonic()
    assert reason(fetch_one(ImagesConfig(deadline=5.0), long)) == "http_429"
    assert time.monotonic() - start < 0.5 and server.hits("/long") == 1


def test_url_map_fetches_from_elsewhere_and_keeps_the_original_url(server):
    server.route("/cc/cat.jpg", Reply(200, JPEG, jpeg()))
    original = "//images.example.org/cc/cat.jpg"
    mirror = (("https://images.example.org/", server.url("/")),)
    result = fetch_one(ImagesConfig(url_map=mirror), original)
    assert reason(result) == "kept" and result.image_url == original
    assert server.hits("/cc/cat.jpg") == 1


def test_opt_out_can_be_switched_off(server):
    url = server.route("/noai.jpg", Reply(200, {"X-Robots-Tag": "noai"}, jpeg()))
    assert reason(fetch_one(ImagesConfig(respect_noai=False), url)) == "kept"


def test_the_loopback_server_itself_is_refused_without_permission(server):
    url = server.route("/ok.jpg", Reply(200, JPEG, jpeg()))
    assert reason(fetch_one(ImagesConfig(), url, trusted=())) == "private_address"
    assert server.log == []  # refused before any connection
    assert reason(fetch_one(ImagesConfig(allow_private_hosts=True), url, trusted=())) == "kept"


def test_a_private_redirect_is_refused_before_connecting(server, monkeypatch):
    connected = []
    real = urllib3.util.connection.create_connection

    def recording(address, *args, **kwargs):
        connected.append(address[0])
        return real(address, *args, **kwargs)

    monkeypatch.setattr(urllib3.util.connection, "create_connection", recording)
    url = server.route("/to-lan", Reply(302, {"Location": "http://10.0.0.1:8080/x.jpg"}))
    result = fetch_one(ImagesConfig(), url)
    assert reason(result) == "private_address" and "10.0.0.1" in result.detail
    assert connected == ["127.0.0.1"]


def test_dns_rebinding_is_caught_at_the_connected_peer(server, monkeypatch):
    """The name resolves to a public address for the check and to 127.0.0.1 for the connection:
    the peer check refuses it after connecting, before any request is sent."""
    server.route("/ok.jpg", Reply(200, JPEG, jpeg()))
    real = socket.getaddrinfo
    calls = []

    def rebinding(host, port, *args, **kwargs):
        if host != "rebind.test":
            return real(host, port, *args, **kwargs)
        calls.append(host)
        address = "93.184.216.34" if len(calls) == 1 else "127.0.0.1"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    result = fetch_one(ImagesConfig(retries=0), f"http://rebind.test:{server.port}/ok.jpg", ())
    assert reason(result) == "private_address" and "127.0.0.1" in result.detail
    assert len(calls) == 2 and server.log == []


def test_an_unexpected_error_is_counted_not_raised(server, monkeypatch):
    url = server.route("/ok.jpg", Reply(200, JPEG, jpeg()))

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("pipeline.images.fetcher.store_image", broken)
    result = fetch_one(ImagesConfig(), url)
    assert reason(result) == "images_error" and result.detail == "RuntimeError: boom"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("//upload.wikimedia.org/a.jpg", "https://upload.wikimedia.org/a.jpg"),
        ("  http://example.org/a b.jpg ", "http://example.org/a b.jpg"),
        ("HTTPS://Example.org/a.jpg", "HTTPS://Example.org/a.jpg"),
    ],
)
def test_normalize_url(url, expected):
    assert normalize_url(url) == expected


@pytest.mark.parametrize(
    "url", ["ftp://example.org/a.jpg", "file:///etc/passwd", "http://", "a.jpg", "http://x:99999/"]
)
def test_bad_urls(url):
    with pytest.raises(Rejected) as err:
        normalize_url(url)
    assert err.value.reason == "bad_url"


@pytest.mark.parametrize(
    ("values", "out"),
    [
        (["noai"], True),
        (["NoImageAI"], True),
        (["noindex, nofollow"], False),
        (["noindex", "noai"], True),
        (["otherbot: noai"], False),
        (["arabic-pairs: noimageai"], True),
        (["unavailable_after: 25 Jun 2030 15:00:00 PST"], False),
    ],
)
def test_robots_opt_out(values, out):
    assert robots_opt_out(values, "arabic-pairs") is out


# ---------------------------------------------------------------------------- images

STORE = ImagesConfig()


def stored(data: bytes, config: ImagesConfig = STORE) -> Image.Image:
    return Image.open(io.BytesIO(store_image(data, config).data))


def rejection(data: bytes, config: ImagesConfig = STORE) -> str:
    with pytest.raises(Rejected) as err:
        store_image(data, config)
    return err.value.reason


def test_modes_become_rgb_with_alpha_on_white():
    img = stored(palette_png_with_transparency(120, 80))
    assert img.mode == "RGB"
    assert img.getpixel((2, 2)) == (255, 255, 255)  # transparent -> white, not black
    r, g, b = img.getpixel((40, 30))
    assert r > 200 and g < 60 and b < 60
    rgba = Image.new("RGBA", (64, 64), (0, 0, 255, 0))
    assert stored(encode(rgba, "PNG")).getpixel((5, 5)) == (255, 255, 255)
    cmyk = stored(cmyk_jpeg())
    assert cmyk.mode == "RGB" and cmyk.size == (200, 150)


def test_16_bit_grey_is_scaled_not_clipped():
    img = stored(png16(128, 96), ImagesConfig(format="png"))
    row = [img.getpixel((x, 48))[0] for x in range(0, 128, 16)]
    assert row == sorted(row) and row[0] < 10 and 100 < row[4] < 160  # a ramp, not all white


def test_exif_orientation_swaps_the_stored_sides():
    out = store_image(exif_rotated_jpeg(300, 200, orientation=6), ImagesConfig(resize="no"))
    assert (out.width, out.height) == (200, 300)


def test_animated_images_keep_their_first_frame():
    img = stored(animated_gif(100, 80))
    r, g, b = img.getpixel((50, 40))
    assert r > 200 and g < 60 and b < 60  # frame 0 is red


def test_header_checks_reject_before_decoding():
    assert rejection(bomb_png(100_000, 100_000)) == "too_large"  # Pillow's own guard
    assert rejection(bomb_png(5000, 5000), ImagesConfig(max_pixels=10_000_000)) == "too_large"
    assert rejection(jpeg(31, 100)) == "too_small"
    assert rejection(b"") == "not_an_image"
    assert rejection(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n") == "not_an_image"
    assert rejection(png(400, 300)[:200]) == "decode_error"


@pytest.mark.parametrize(
    ("resize", "source", "size"),
    [
        ("keep_ratio", (1600, 1200), (256, 192)),
        ("keep_ratio", (200, 120), (200, 120)),  # never upscaled
        ("keep_ratio", (300, 900), (85, 256)),
        ("center_crop", (1600, 1200), (256, 256)),
        ("center_crop", (120, 80), (256, 256)),  # a fixed-size crop, even from a small image
        ("no", (640, 480), (640, 480)),
    ],
)
def test_resize_modes(resize, source, size):
    out = store_image(jpeg(*source), ImagesConfig(resize=resize))
    assert (out.width, out.height) == size


@pytest.mark.parametrize(
    ("fmt", "mime", "pillow"), [("png", "image/png", "PNG"), ("webp", "image/webp", "WEBP")]
)
def test_stored_formats(fmt, mime, pillow):
    out = store_image(jpeg(400, 300), ImagesConfig(format=fmt))
    assert out.mime_type == mime and out.extension == fmt
    assert Image.open(io.BytesIO(out.data)).format == pillow


def test_draft_decodes_a_large_jpeg_at_reduced_scale():
    img = open_image(jpeg(1600, 1200), STORE.max_pixels, STORE.min_size)
    assert decode_image(img, "keep_ratio", 256).size == (400, 300)  # 1/4 scale, still >= 256


def test_draft_phash_stays_close_to_the_full_decode():
    """pHash of what is stored (decoded with draft) against pHash of the full-size decode, over
    photo-like JPEGs of 480-2000 px. Measured: at most 2 bits apart, most 0 or 1."""
    distances = []
    for seed in range(16):
        width = 480 + 100 * seed
        data = jpeg(width, width * 3 // 4, seed=seed)
        full = imagehash.phash(Image.open(io.BytesIO(data)).convert("RGB"))
        drafted = imagehash.hex_to_hash(store_image(data, STORE).phash)
        undrafted = imagehash.hex_to_hash(store_image(data, STORE, use_draft=False).phash)
        distances.append((drafted - full, drafted - undrafted))
    assert max(d for pair in distances for d in pair) <= 4, distances
    assert np.mean([d for d, _ in distances]) <= 2, distances


# ---------------------------------------------------------------------------- scheduling


class FakeFetcher:
    """Downloads take 20 ms; records how many run at once, per host and in all. A pair whose
    line is in `refuse` is refused (429) that many times before it succeeds."""

    def __init__(self, per_host: int = 2, refuse: dict[int, int] | None = None):
        self.gates = HostGates((), per_host=per_host, pause=0.05, max_pause=1.0)
        self.refuse = dict(refuse or {})
        self.active: Counter = Counter()
        self.peaks: Counter = Counter()
        self.finished: list[str] = []
        self.stored: list[str] = []
        self._lock = threading.Lock()

    def lookup(self, pair):
        return Miss(None, pair.image_url.split("/")[2])

    def download_pair(self, pair, miss, gate, ticket):
        host = miss.host
        with self._lock:
            self.active[host] += 1
            self.peaks[host] = max(self.peaks[host], self.active[host])
            self.peaks["total"] = max(self.peaks["total"], sum(self.active.values()))
        time.sleep(0.02)
        with self._lock:
            self.active[host] -= 1
            self.finished.append(host)
            refused = self.refuse.get(pair.input_line, 0) > 0
            if refused:
                self.refuse[pair.input_line] -= 1
        gate.release(ticket, throttled=refused)
        if refused:
            return Throttled(429, None, "busy", False)
        return Loaded(b"x" * 10, None)

    def store(self, pair, loaded, writer):
        self.stored.append(threading.current_thread().name)
        return pair._replace(image_ref=f"{writer}:{loaded.data.decode()}")


def run_scheduler(fetcher, pairs, concurrency=5, retries=0):
    with (
        concurrent.futures.ThreadPoolExecutor(8, thread_name_prefix="load") as load_pool,
        concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="store") as store_pool,
    ):
        scheduler = FetchScheduler(
            fetcher, "pack", load_pool, store_pool, concurrency, max_buffered=100, retries=retries
        )
        results = []
        for pair in pairs:
            scheduler.submit(pair, pair.input_line)
            results += scheduler.ready()
        results += list(scheduler.drain())
    return results


def test_scheduler_bounds_hosts_and_total_and_goes_round_robin():
    fetcher = FakeFetcher(per_host=2)
    pairs = [image_pair(i, f"http://hot.example/{i}") for i in range(30)]
    pairs += [image_pair(100 + i, f"http://h{i % 3}.example/{i}") for i in range(9)]
    results = run_scheduler(fetcher, pairs)
    assert sorted(tag for tag, _, _ in results) == sorted(p.input_line for p in pairs)
    assert all(r.image_ref == "pack:" + "x" * 10 and n == 10 for _, r, n in results)
    assert fetcher.peaks["hot.example"] == 2 and fetcher.peaks["total"] == 5
    assert all(fetcher.peaks[f"h{i}.example"] <= 2 for i in range(3))
    assert all(name.startswith("store") for name in fetcher.stored)  # not on a load thread
    # The 9 pairs of other hosts, queued behind 30 of the hot host, are not held back by it.
    assert max(i for i, h in enumerate(fetcher.finished) if h != "hot.example") < 20


def test_scheduler_tries_a_refused_pair_again_and_slows_only_its_host():
    """A 429 puts the pair back at the front of its host's queue and pauses that host, while
    the other host's pairs go on; a pair refused more than `retries` times is `http_429`."""
    fetcher = FakeFetcher(per_host=4, refuse={0: 1, 1: 2, 2: 5})
    pairs = [image_pair(i, f"http://busy.example/{i}") for i in range(8)]
    pairs += [image_pair(100 + i, f"http://calm.example/{i}") for i in range(8)]
    results = {tag: r for tag, r, _ in run_scheduler(fetcher, pairs, retries=2)}
    assert sorted(results) == sorted(p.input_line for p in pairs)
    assert [line for line, r in results.items() if isinstance(r, Drop)] == [2]
    assert results[2].reason == "http_429"
    assert fetcher.finished.count("busy.example") == 8 + 1 + 2 + 2  # pair 2: 1 + 2 retries
    stats = dict(fetcher.gates.take_stats())
    assert stats["busy.example"]["throttled"] == 1 + 2 + 3 and stats["busy.example"]["pauses"] >= 1
    assert stats["calm.example"]["throttled"] == 0 and stats["calm.example"]["pauses"] == 0


# ---------------------------------------------------------------------------- Wikimedia's host


def test_the_refusal_of_a_width_is_a_counted_drop_never_retried(server):
    """upload.wikimedia.org's permanent 429 for a width that is not a step: its own reason, one
    request, no pause of the host."""
    body = b"<p>Use one of the standard thumbnail sizes: https://w.wiki/GHai</p>"
    url = server.route("/thumb.jpg", Reply(429, {"Content-Type": "text/html"}, body))
    start = time.monotonic()
    result = fetch_one(ImagesConfig(retries=3), url)
    assert reason(result) == "thumbnail_width_refused"
    assert server.hits("/thumb.jpg") == 1 and time.monotonic() - start < 1.0


def test_a_busy_host_is_tried_again_after_its_pause(server):
    busy = server.route("/busy.jpg", Reply(429, {}, b"slow down"), Reply(200, JPEG, jpeg()))
    start = time.monotonic()
    assert reason(fetch_one(ImagesConfig(pause=0.3, retries=2), busy)) == "kept"
    assert server.hits("/busy.jpg") == 2 and time.monotonic() - start >= 0.3 * 0.75
    always = server.route("/always.jpg", Reply(503))
    assert reason(fetch_one(ImagesConfig(pause=0.05, retries=2), always)) == "http_503"
    assert server.hits("/always.jpg") == 3


def test_an_original_of_unknown_width_falls_back_from_a_thumbnail_too_wide():
    """A bitmap narrower than the step has no thumbnail at it (the host answers 400): the
    original is fetched instead."""

    def small(path: str) -> bytes:
        return jpeg(200, 150)

    with UploadStandIn(small) as host:
        mirror = (("https://upload.wikimedia.org/", host.root + "/"),)
        config = ImagesConfig(url_map=mirror, allow_private_hosts=True)
        result = fetch_one(config, "https://upload.wikimedia.org/wikipedia/commons/a/ab/S.jpg")
        assert reason(result) == "kept" and (result.width, result.height) == (200, 150)
        assert host.rules.log == [
            "/wikipedia/commons/thumb/a/ab/S.jpg/330px-S.jpg",
            "/wikipedia/commons/a/ab/S.jpg",
        ]
        assert host.rules.refused == {"not_scaled": 1}


def test_a_hosts_bytes_per_second_paces_its_bodies(server, tmp_path):
    body = jpeg(640, 480, seed=3)
    urls = [server.route(f"/b{i}.jpg", Reply(200, JPEG, body)) for i in range(3)]
    rate = len(body)  # one body a second; the bucket holds one second's worth
    config = ImagesConfig(hosts=(("127.0.0.1", HostLimits(2, 0.0, rate)),))
    store = ImageStore(str(tmp_path))
    fetcher = ImageFetcher(config, store, LOOPBACK)
    writer = store.writer()
    try:
        start = time.monotonic()
        results = [fetcher.fetch(image_pair(i, url), writer) for i, url in enumerate(urls)]
        elapsed = time.monotonic() - start
    finally:
        writer.close()
        fetcher.close()
    assert [reason(r) for r in results] == ["kept"] * 3
    [(host, stats)] = fetcher.gates.take_stats()
    assert host == "127.0.0.1" and stats["rate_waits"] >= 1
    assert stats["rate_wait_seconds"] >= 1.0 and elapsed >= 1.0  # 3 bodies at 1/s, 1 s burst


def test_a_mirror_of_originals_only_still_gives_the_image(server):
    """`url_map` to a mirror that holds originals: the thumbnail is not there (404), the URL WIT
    gave is fetched instead."""
    server.route("/wm/wikipedia/commons/a/ab/Cat.jpg", Reply(200, JPEG, jpeg()))
    mirror = (("https://upload.wikimedia.org/", server.url("/wm/")),)
    original = "https://upload.wikimedia.org/wikipedia/commons/a/ab/Cat.jpg"
    config = ImagesConfig(url_map=mirror)
    with tempfile.TemporaryDirectory() as folder:
        store = ImageStore(folder)
        fetcher = ImageFetcher(config, store, LOOPBACK)
        writer = store.writer()
        pair = image_pair(1, original)._replace(original_width=4000)
        result = fetcher.fetch(pair, writer)
        writer.close()
        fetcher.close()
    assert reason(result) == "kept" and result.image_url == original
    assert [path for path, _ in server.log] == [
        "/wm/wikipedia/commons/thumb/a/ab/Cat.jpg/330px-Cat.jpg",
        "/wm/wikipedia/commons/a/ab/Cat.jpg",
    ]


def test_a_refusal_that_trickles_its_body_is_cut_at_the_deadline(server):
    """A 429 whose body comes a byte at a time cannot hold the slot past the deadline while
    its body is read to tell a busy host from a refused width."""
    url = server.route("/slow429", Reply(429, {}, b"x" * 5000, trickle=0.05))
    start = time.monotonic()
    result = fetch_one(ImagesConfig(deadline=1.0, read_timeout=5.0, retries=0), url)
    assert reason(result) == "http_429"
    assert time.monotonic() - start < 2.5


def test_the_fallback_to_the_original_shares_the_downloads_deadline(server):
    """A slow 404 for the thumbnail leaves the original only what is left of the deadline: the
    two requests together cannot hold the slot past it."""
    server.route("/wm/wikipedia/commons/thumb/a/ab/C.jpg/330px-C.jpg", Reply(404, wait=0.8))
    server.route("/wm/wikipedia/commons/a/ab/C.jpg", Reply(200, JPEG, jpeg(), trickle=0.05))
    mirror = (("https://upload.wikimedia.org/", server.url("/wm/")),)
    config = ImagesConfig(url_map=mirror, deadline=1.0, read_timeout=5.0)
    start = time.monotonic()
    result = fetch_one(config, "https://upload.wikimedia.org/wikipedia/commons/a/ab/C.jpg")
    assert reason(result) == "timeout"
    assert time.monotonic() - start < 1.5
