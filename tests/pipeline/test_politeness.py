"""`python -m pipeline run` against a stand-in of upload.wikimedia.org that keeps the live rules
(`standins.upload`: standard thumbnail widths only, 429 beyond 2 requests in flight):
WIT originals are fetched as thumbnails within Wikimedia's limits, and a host pressed beyond
its limit is slowed down until every image is kept."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image
from wit_files import wit_row, write_wit

from pipeline import wikimedia
from pipeline.__main__ import main
from standins.demo import draw_picture
from standins.upload import UploadStandIn

COMMONS = "https://upload.wikimedia.org/wikipedia/commons"
WORDS = ("مسجد", "نهر", "جبل", "سوق", "قلعة", "مدينة", "بحر", "صحراء", "حديقة", "جسر")


def picture(path: str) -> bytes:
    """A distinct photo-like JPEG per original path, 640 x 480; `Narrow_` files 200 x 150."""
    size = (200, 150) if "Narrow_" in path else (640, 480)
    image = Image.open(io.BytesIO(draw_picture(path))).resize(size)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def caption(n: int) -> str:
    return f"صورة {WORDS[n % 10]} {WORDS[(n // 10) % 10]} في منظر عام جميل رقم {WORDS[n % 7]}"


def hashed(name: str) -> str:
    import hashlib

    digest = hashlib.md5(name.encode()).hexdigest()
    return f"{digest[0]}/{digest[:2]}"


def build(tmp_path: Path, host: UploadStandIn, rows: list[dict], images: dict, *args: str):
    write_wit(tmp_path / "wit" / "a.tsv", rows)
    manifest = {
        "name": "politeness",
        "sources": [{"kind": "wit", "paths": ["wit/*.tsv"]}],
        "images": {
            "allow_private_hosts": True,
            "cache": False,
            "url_map": {"https://upload.wikimedia.org/": host.root + "/"},
            **images,
        },
    }
    path = tmp_path / "manifest.yaml"
    path.write_text(yaml.safe_dump(manifest, allow_unicode=True), encoding="utf-8")
    out = tmp_path / "out"
    assert main(["run", str(path), "--output", str(out), *args]) == 0
    stats = json.loads((out / "stats.json").read_text(encoding="utf-8"))
    return stats, pq.read_table(out / "data").to_pylist()


def original(name: str) -> str:
    return f"{COMMONS}/{hashed(name)}/{name}"


def wide_rows(prefix: str, count: int) -> list[dict]:
    """WIT rows of `count` Commons originals 4,000 px wide, each with its own caption."""
    return [
        wit_row(
            n,
            image_url=original(f"{prefix}_{n}.jpg"),
            original_width="4000",
            caption_reference_description=caption(n),
        )
        for n in range(count)
    ]


def test_wit_originals_come_as_thumbnails_within_wikimedias_limits(tmp_path, capsys):
    rows, fetched = [], {}
    for n in range(10):
        name = f"Photo_{n}.jpg"
        rows.append(wit_row(n, image_url=original(name), original_width="4000"))
        fetched[original(name)] = f"/thumb/{hashed(name)}/{name}/330px-{name}"
    for n in range(10, 12):  # no wider than the step: the original itself
        name = f"Narrow_{n}.jpg"
        rows.append(wit_row(n, image_url=original(name), original_width="200"))
        fetched[original(name)] = f"/{hashed(name)}/{name}"
    tif = "Scan_12.tif"  # a TIFF original: the host's JPEG rendering of its first page
    rows.append(wit_row(12, image_url=original(tif), mime_type="image/tiff", original_width=""))
    fetched[original(tif)] = f"/thumb/{hashed(tif)}/{tif}/lossy-page1-330px-{tif}.jpg"
    old = f"{COMMONS}/thumb/{hashed('Old_13.jpg')}/Old_13.jpg/220px-Old_13.jpg"  # not a step
    rows.append(wit_row(13, image_url=old))
    fetched[old] = f"/thumb/{hashed('Old_13.jpg')}/Old_13.jpg/330px-Old_13.jpg"
    for n, row in enumerate(rows):
        row["caption_reference_description"] = caption(n)

    with UploadStandIn(picture, max_in_flight=2, delay=0.05) as host:
        stats, out = build(tmp_path, host, rows, {})
    assert stats["sources"]["wit"]["kept"] == len(rows), stats
    # Each row keeps the URL WIT gave; the request was its thumbnail (or the narrow original).
    assert sorted(r["image_url"] for r in out) == sorted(fetched)
    asked = sorted(p.removeprefix("/wikipedia/commons") for p in host.rules.log)
    assert asked == sorted(fetched.values())
    assert host.rules.max_seen == 2 and not host.rules.refused
    assert "hosts" not in stats  # no host refused or made the run wait
    narrow = [r for r in out if "Narrow_" in r["image_url"]]
    assert {(r["width"], r["height"]) for r in narrow} == {(200, 150)}
    wide = [r for r in out if "Photo_" in r["image_url"]]
    assert {(r["width"], r["height"]) for r in wide} == {(256, 192)}  # from 330 x 248


def test_a_host_pressed_beyond_its_limit_slows_down_and_keeps_every_image(tmp_path, capsys):
    """`images.hosts` says 6 in flight, the host allows 2: its 429s (with and without
    Retry-After) pause the host and cut its concurrency until it answers clean."""
    rows = wide_rows("Busy", 30)
    images = {
        "hosts": {"upload.wikimedia.org": {"concurrency": 6}},
        "pause": 0.2,
        "max_pause": 2.0,
    }
    with UploadStandIn(picture, max_in_flight=2, delay=0.1) as host:
        stats, out = build(tmp_path, host, rows, images, "--progress")
    assert stats["sources"]["wit"]["kept"] == 30 and len(out) == 30
    refusals = host.rules.refused["busy"]
    assert refusals >= 2  # some 429s with Retry-After, some without
    counts = stats["hosts"]["upload.wikimedia.org"]
    assert counts["throttled"] == refusals and counts["pauses"] >= 1
    assert counts["requests"] == 30 + refusals
    assert counts["paused_seconds"] > 0 and counts["max_in_flight"] <= 6
    err = capsys.readouterr().err
    assert re.search(r"^progress: images 30/30 pairs \(100%\)", err, re.M), err


@pytest.mark.parametrize("width", [250, 500])
def test_the_manifests_thumbnail_width_is_the_one_asked(tmp_path, width):
    rows = wide_rows("W", 2)
    with UploadStandIn(picture, max_in_flight=2) as host:
        stats, _ = build(tmp_path, host, rows, {"thumb_width": width})
    assert stats["sources"]["wit"]["kept"] == 2
    files = [wikimedia.parse_upload_url("https://upload.wikimedia.org" + p) for p in host.rules.log]
    assert [f.width for f in files] == [width, width]
