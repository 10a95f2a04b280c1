"""Image hosts that misbehave, met as a user meets them: `python -m pipeline run` over a WIT shard
whose image URLs point at them, every pair accounted for in `stats.json`.

The hosts are real servers on 127.0.0.1: `ImageHost` where HTTP is well formed, `RawHost` where
the bytes themselves are the fault (a trickled header, a reset).
"""

from __future__ import annotations

import gzip
import json
import threading
import time
import zlib
from pathlib import Path

import pyarrow.parquet as pq
from image_samples import jpeg
from raw_host import PHOTO, RawHost, answer
from wit_files import wit_row, write_wit

from pipeline.__main__ import main
from standins.images import ImageHost, Reply

JPEG = {"Content-Type": "image/jpeg"}


def build(folder: Path, urls: list[str], images: str) -> dict:
    """Runs a WIT shard with one row per URL through the CLI; `stats.json`'s counts of it."""
    write_wit(
        folder / "wit.tsv",
        [
            wit_row(
                i,
                image_url=url,
                caption_reference_description=f"صورة رقم {i} لقلعة حلب عند الغروب",
            )
            for i, url in enumerate(urls)
        ],
    )
    manifest = folder / "manifest.yaml"
    manifest.write_text(
        "name: hostile\nsources:\n  - kind: wit\n    paths: [wit.tsv]\n"
        f"images:\n  cache: false\n{images}",
        encoding="utf-8",
    )
    out = folder / "out"
    assert main(["run", str(manifest), "--output", str(out)]) == 0
    stats = json.loads((out / "stats.json").read_text(encoding="utf-8"))["sources"]["wit"]
    assert stats["read"] == len(urls) == stats["kept"] + sum(stats["dropped"].values())
    return stats


def kept_urls(folder: Path) -> list[str]:
    return sorted(pq.read_table(folder / "out" / "data").column("image_url").to_pylist())


def test_a_host_trickling_its_headers_is_cut_at_the_deadline(tmp_path):
    """The issue's host: `HTTP/1.1 200 OK`, `X-Pad: ` and then a byte at a time, each well
    within read_timeout. It is dropped as `timeout` and holds its connection no longer than
    the deadline; nothing is tried again past it."""

    def script(link):
        head = link.read_request()
        if head.startswith(b"GET /slow.jpg "):
            link.send(b"HTTP/1.1 200 OK\r\nX-Pad: ")
            link.trickle(b"a" * 10_000, 0.25)
        else:
            link.send(answer(PHOTO))

    with RawHost(script) as host:
        stats = build(
            tmp_path,
            [host.url("/slow.jpg"), host.url("/ok.jpg")],
            "  allow_private_hosts: true\n  deadline: 2\n  read_timeout: 10\n  retries: 2\n",
        )
        assert stats["kept"] == 1 and stats["dropped"] == {"timeout": 1}
        assert host.connections == 2
        assert max(host.held) < 2 + 3
    assert kept_urls(tmp_path) == [host.url("/ok.jpg")]


def test_encoded_images_are_decoded_and_a_bomb_stops_at_the_cap(tmp_path):
    photo = jpeg(640, 480)
    bomb = gzip.compress(gzip.compress(bytes(8 << 20)) * 128)  # 1.6 KB -> 1 GiB
    with ImageHost() as host:
        bodies = {
            "gzip": gzip.compress(photo),
            "deflate": zlib.compress(photo),
            "br": b"\x1b\x03\x00",  # not asked for
            "gzip, gzip": bomb,
        }
        urls = [
            host.route(f"/{i}.jpg", Reply(200, {**JPEG, "Content-Encoding": encoding}, body))
            for i, (encoding, body) in enumerate(bodies.items())
        ]
        stats = build(tmp_path, urls, "  allow_private_hosts: true\n  max_bytes: 2000000\n")
    assert stats["kept"] == 2 and stats["dropped"] == {"bad_encoding": 1, "too_large": 1}
    assert kept_urls(tmp_path) == sorted(urls[:2])
    rows = pq.read_table(tmp_path / "out" / "data").to_pylist()
    assert {(r["width"], r["height"]) for r in rows} == {(256, 192)}


def test_ipv6_spellings_of_loopback_are_refused_with_no_connection(tmp_path):
    """Without allow_private_hosts, a literal IPv6 address carrying 127.0.0.1 is refused before
    any connection: the loopback host, which would answer, sees no request."""
    with ImageHost() as host:
        host.route("/x.jpg", Reply(200, JPEG, PHOTO))
        spellings = [
            "::ffff:127.0.0.1",  # IPv4-mapped
            "::ffff:7f00:1",
            "2002:7f00:1::",  # 6to4
            "64:ff9b::7f00:1",  # NAT64
            "::127.0.0.1",  # IPv4-compatible
            "::1",
        ]
        urls = [f"http://[{address}]:{host.port}/x.jpg" for address in spellings]
        stats = build(tmp_path, urls, "")
        assert stats["kept"] == 0 and stats["dropped"] == {"private_address": len(urls)}
        assert host.log == []


def test_a_reset_connection_is_tried_again_and_gives_the_image(tmp_path):
    """A host that resets the first connection for each image, before its answer or during the
    body, and answers the next one: both images are had."""
    seen: dict[bytes, int] = {}
    lock = threading.Lock()

    def script(link):
        head = link.read_request()
        path = head.split(b" ")[1]
        with lock:
            first = path not in seen
            seen[path] = seen.get(path, 0) + 1
        if not first:
            link.send(answer(PHOTO))
            return
        if path == b"/body.jpg":
            link.send(answer(PHOTO)[:5000])
            time.sleep(0.2)  # the client is reading the body when the reset comes
        link.reset()

    with RawHost(script) as host:
        urls = [host.url("/head.jpg"), host.url("/body.jpg")]
        stats = build(tmp_path, urls, "  allow_private_hosts: true\n")
    assert stats["kept"] == 2 and stats["dropped"] == {}
    assert seen == {b"/head.jpg": 2, b"/body.jpg": 2}
