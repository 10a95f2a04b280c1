"""Wikimedia's upload host: standard widths and the thumbnail URL of an original."""

from __future__ import annotations

import pytest

from pipeline import wikimedia
from pipeline.wikimedia import (
    STEPS,
    fetch_url,
    is_steps_refusal,
    nearest_step,
    parse_upload_url,
    step_at_least,
)

COMMONS = "https://upload.wikimedia.org/wikipedia/commons"


def test_steps_round_up_to_the_standard_width_and_name_the_nearest():
    assert [step_at_least(w) for w in (1, 20, 21, 256, 330, 331, 640, 5000)] == [
        20,
        20,
        40,
        330,
        330,
        500,
        960,
        3840,
    ]
    assert [nearest_step(w) for w in (640, 256, 220, 300, 1000)] == [500, 250, 250, 330, 960]
    assert all(wikimedia.is_step(s) for s in STEPS) and not wikimedia.is_step(640)


@pytest.mark.parametrize(
    ("original", "thumbnail"),
    [
        (f"{COMMONS}/a/ab/Cat.jpg", f"{COMMONS}/thumb/a/ab/Cat.jpg/330px-Cat.jpg"),
        (f"{COMMONS}/a/ab/Cat.JPEG", f"{COMMONS}/thumb/a/ab/Cat.JPEG/330px-Cat.JPEG"),
        (f"{COMMONS}/a/ab/Map.png", f"{COMMONS}/thumb/a/ab/Map.png/330px-Map.png"),
        (f"{COMMONS}/a/ab/Run.gif", f"{COMMONS}/thumb/a/ab/Run.gif/330px-Run.gif"),
        (f"{COMMONS}/a/ab/Flag.svg", f"{COMMONS}/thumb/a/ab/Flag.svg/330px-Flag.svg.png"),
        (
            f"{COMMONS}/a/ab/Scan.tif",
            f"{COMMONS}/thumb/a/ab/Scan.tif/lossy-page1-330px-Scan.tif.jpg",
        ),
        (
            f"{COMMONS}/a/ab/Scan.tiff",
            f"{COMMONS}/thumb/a/ab/Scan.tiff/lossy-page1-330px-Scan.tiff.jpg",
        ),
        (f"{COMMONS}/a/ab/Book.pdf", f"{COMMONS}/thumb/a/ab/Book.pdf/page1-330px-Book.pdf.jpg"),
        (f"{COMMONS}/a/ab/Old.djvu", f"{COMMONS}/thumb/a/ab/Old.djvu/page1-330px-Old.djvu.jpg"),
        (f"{COMMONS}/a/ab/Clip.webm", f"{COMMONS}/thumb/a/ab/Clip.webm/330px--Clip.webm.jpg"),
        # Percent-encoded names stay encoded; arwiki's own files are under /wikipedia/ar/.
        (
            "https://upload.wikimedia.org/wikipedia/ar/4/4e/%D9%82%D8%B7.jpg",
            "https://upload.wikimedia.org/wikipedia/ar/thumb/4/4e/%D9%82%D8%B7.jpg/"
            "330px-%D9%82%D8%B7.jpg",
        ),
        # WIT's http:// URLs keep their scheme.
        (
            "http://upload.wikimedia.org/wikipedia/commons/a/ab/Cat.jpg",
            "http://upload.wikimedia.org/wikipedia/commons/thumb/a/ab/Cat.jpg/330px-Cat.jpg",
        ),
    ],
)
def test_an_original_is_fetched_as_its_thumbnail(original, thumbnail):
    assert fetch_url(original, 330) == thumbnail
    assert fetch_url(original, 330, original_width=4000) == thumbnail


def test_a_long_name_is_abbreviated_as_mediawiki_does():
    name = "%D8%A3" * 81  # 81 Arabic letters: 162 bytes of UTF-8
    url = f"{COMMONS}/a/ab/{name}.jpg"
    assert fetch_url(url, 330) == f"{COMMONS}/thumb/a/ab/{name}.jpg/330px-thumbnail.jpg"
    short = "%D8%A3" * 10
    assert fetch_url(f"{COMMONS}/a/ab/{short}.jpg", 330).endswith(f"/330px-{short}.jpg")


def test_a_narrow_bitmap_original_is_fetched_as_it_is_but_a_vector_never():
    assert fetch_url(f"{COMMONS}/a/ab/Cat.jpg", 330, original_width=300) == (
        f"{COMMONS}/a/ab/Cat.jpg"
    )
    assert fetch_url(f"{COMMONS}/a/ab/Cat.jpg", 330, original_width=330).endswith("/a/ab/Cat.jpg")
    # SVG, TIFF, PDF are converted by the host whatever their size.
    assert fetch_url(f"{COMMONS}/a/ab/Flag.svg", 330, original_width=100).endswith(
        "/330px-Flag.svg.png"
    )


def test_thumbnails_at_a_step_stay_and_others_move_to_the_step():
    at_step = f"{COMMONS}/thumb/a/ab/Cat.jpg/250px-Cat.jpg"
    assert fetch_url(at_step, 330) == at_step
    assert fetch_url(f"{COMMONS}/thumb/a/ab/Cat.jpg/220px-Cat.jpg", 330) == (
        f"{COMMONS}/thumb/a/ab/Cat.jpg/330px-Cat.jpg"
    )
    assert fetch_url(f"{COMMONS}/thumb/a/ab/Flag.svg/23px-Flag.svg.png", 330) == (
        f"{COMMONS}/thumb/a/ab/Flag.svg/330px-Flag.svg.png"
    )
    assert fetch_url(f"{COMMONS}/thumb/a/ab/Scan.tif/lossy-page1-640px-Scan.tif.jpg", 500) == (
        f"{COMMONS}/thumb/a/ab/Scan.tif/lossy-page1-500px-Scan.tif.jpg"
    )


@pytest.mark.parametrize(
    "url",
    [
        "https://images.example.org/wikipedia/commons/a/ab/Cat.jpg",  # another host
        f"{COMMONS}/a/ab/Cat.jpg?download",  # a query: not a file path
        f"{COMMONS}/Cat.jpg",  # no hash folders
        f"{COMMONS}/a/cd/Cat.jpg",  # the folders do not nest
        f"{COMMONS}/a/ab/Sound.ogg",  # no thumbnail for audio
        "https://upload.wikimedia.org/math/render/svg/abc",
    ],
)
def test_other_urls_are_left_alone(url):
    assert fetch_url(url, 330) == url


def test_no_step_means_originals():
    assert fetch_url(f"{COMMONS}/a/ab/Cat.jpg", None) == f"{COMMONS}/a/ab/Cat.jpg"


def test_parse_and_rebuild_the_original():
    file = parse_upload_url(f"{COMMONS}/thumb/a/ab/Cat.jpg/lossy-page1-220px-Cat.jpg")
    assert (file.root, file.hash_path, file.name, file.width) == (
        "/wikipedia/commons",
        "a/ab",
        "Cat.jpg",
        220,
    )
    assert wikimedia.original_url(file) == f"{COMMONS}/a/ab/Cat.jpg"


def test_the_permanent_refusal_is_told_from_a_busy_host():
    steps_body = b"<p>Use one of the standard thumbnail sizes: https://w.wiki/GHai</p>"
    assert is_steps_refusal(429, steps_body)
    assert is_steps_refusal(429, b"see $wgThumbnailSteps")
    assert not is_steps_refusal(429, b"Too many requests, slow down")
    assert not is_steps_refusal(503, steps_body)
    # Whatever the body, a 429 to a thumbnail at a width that is no step is that refusal.
    assert is_steps_refusal(429, b"", f"{COMMONS}/thumb/a/ab/Cat.jpg/640px-Cat.jpg")
    assert not is_steps_refusal(429, b"", f"{COMMONS}/thumb/a/ab/Cat.jpg/330px-Cat.jpg")
