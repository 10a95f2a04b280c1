"""The Flickr8K reader: `NAME.jpg#N<TAB>caption` lines matched to a local folder by file name."""

from __future__ import annotations

import io
import os

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from records_of import DEMO, demo_memory, drops_of, pairs_of

import pipeline.sources.flickr8k as flickr8k
from pipeline.records import Drop, pair_id
from pipeline.sources.files import list_folder
from pipeline.sources.flickr8k import Flickr8kSource, ReadFlickr8k, parse_flickr8k, split_key

ODD_GROUP = "2258277193_586949ec62.jpg.1"


def parse(data: bytes, images: str, names, path: str = "Flickr8k.token.txt") -> list:
    source = Flickr8kSource(captions=path, images=images)
    return list(parse_flickr8k(io.BytesIO(data), path, source, frozenset(names)))


def test_the_real_token_file_against_a_folder_of_its_8091_images(shared_samples, tmp_path):
    """Every line is read; only the five captions of the `.jpg.1` group lack an image file.

    The folder holds empty files named like the images: the reader lists it and opens none.
    """
    token = shared_samples / "Flickr8k.token.pristine.txt"
    lines = token.read_text("utf-8").splitlines()
    names = {line.split("#", 1)[0] for line in lines} - {ODD_GROUP}
    assert len(lines) == 40460 and len(names) == 8091
    folder = tmp_path / "Flicker8k_Dataset"
    folder.mkdir()
    for name in names:
        (folder / name).touch()
    listed = list_folder(str(folder))
    assert listed == names

    source = Flickr8kSource(captions=str(token), images=str(folder))
    with token.open("rb") as stream:
        records = list(parse_flickr8k(stream, str(token), source, listed))
    pairs = pairs_of(records)
    assert len(pairs) == 40455
    assert drops_of(records) == {"missing_image_file": 5}
    assert [(d.input_line, d.detail) for d in records if isinstance(d, Drop)] == [
        (line, ODD_GROUP) for line in range(6731, 6736)
    ]
    first = pairs[0]
    assert first.source_key == "1000268201_693b08cb0e.jpg#0"
    assert first.caption_en == (
        "A child in a pink dress is climbing up a set of stairs in an entry way ."
    )
    assert first.image_path == os.path.join(str(folder), "1000268201_693b08cb0e.jpg")
    assert first.image_url is None
    assert first.id == pair_id("flickr8k", first.source_key, first.caption_en)
    assert (first.caption_ar, first.caption_origin, first.source) == ("", "translated", "flickr8k")
    assert (first.input_file, first.input_line) == (str(token), 1)
    assert pairs[-1].input_line == 40460
    assert len({p.id for p in pairs}) == 40455


CRAFTED = b"".join(
    [
        b"1000268201_693b08cb0e.jpg#0\tA child in a pink dress is climbing up a set of stairs .\n",
        b"1000268201_693b08cb0e.jpg#1\t  a girl   going into a wooden building  \r\n",  # CRLF
        b"1001773457_577c3a7d70.jpg#0\tA black dog and a spotted dog are fighting\n",
        b"1001773457_577c3a7d70.jpg#1\t   \n",  # empty caption
        b"1001773457_577c3a7d70.jpg#2 A dog with no tab .\n",  # no tab
        b"1001773457_577c3a7d70.jpg\tA key without its number .\n",  # no #N
        b"\n",  # blank
        b"1002674143_1b742ab4b8.jpg#0\tA caf\xe9 .\n",  # not UTF-8
        b"9999999999_0000000000.jpg#0\tA dog whose image is missing .\n",
        b"2258277193_586949ec62.jpg.1#0\tpeople waiting for the subway\n",
        b"1002674143_1b742ab4b8.jpg#1\tA little girl covered in paint sits in front of a rainbow",
    ]
)
IMAGES = {"1000268201_693b08cb0e.jpg", "1001773457_577c3a7d70.jpg", "1002674143_1b742ab4b8.jpg"}


def test_crafted_lines_exact_pairs_and_drops():
    records = parse(CRAFTED, "/data/Flicker8k_Dataset", IMAGES)
    assert [
        (p.input_line, p.source_key, p.caption_en, p.image_path) for p in pairs_of(records)
    ] == [
        (
            1,
            "1000268201_693b08cb0e.jpg#0",
            "A child in a pink dress is climbing up a set of stairs .",
            "/data/Flicker8k_Dataset/1000268201_693b08cb0e.jpg",
        ),
        (
            2,
            "1000268201_693b08cb0e.jpg#1",
            "a girl going into a wooden building",
            "/data/Flicker8k_Dataset/1000268201_693b08cb0e.jpg",
        ),
        (
            3,
            "1001773457_577c3a7d70.jpg#0",
            "A black dog and a spotted dog are fighting",
            "/data/Flicker8k_Dataset/1001773457_577c3a7d70.jpg",
        ),
        (
            11,
            "1002674143_1b742ab4b8.jpg#1",
            "A little girl covered in paint sits in front of a rainbow",
            "/data/Flicker8k_Dataset/1002674143_1b742ab4b8.jpg",
        ),
    ]
    assert [(d.input_line, d.reason) for d in records if isinstance(d, Drop)] == [
        (4, "empty_caption"),
        (5, "malformed_line"),
        (6, "malformed_line"),
        (7, "malformed_line"),
        (8, "invalid_utf8"),
        (9, "missing_image_file"),
        (10, "missing_image_file"),
    ]
    assert drops_of(records) == {
        "empty_caption": 1,
        "malformed_line": 3,
        "invalid_utf8": 1,
        "missing_image_file": 2,
    }
    assert len(records) == 11 == len(CRAFTED.split(b"\n"))


def test_keys_split_into_image_name_and_number():
    assert split_key("1000268201_693b08cb0e.jpg#0") == ("1000268201_693b08cb0e.jpg", 0)
    assert split_key(f"{ODD_GROUP}#4") == (ODD_GROUP, 4)
    assert split_key("1000268201_693b08cb0e.jpg") is None
    assert split_key("1000268201_693b08cb0e.jpg#") is None
    assert split_key("a dog.jpg#1") is None
    assert split_key("#1") is None


def test_folder_listing_keeps_files_only_and_a_missing_folder_names_itself(tmp_path):
    (tmp_path / "a.jpg").touch()
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "b.jpg").touch()
    assert list_folder(str(tmp_path)) == {"a.jpg"}
    missing = str(tmp_path / "nowhere")
    with pytest.raises(ValueError, match=r"nowhere: cannot list the image folder"):
        list_folder(missing)


def test_an_unexpected_failure_on_one_line_is_counted_and_the_file_goes_on(monkeypatch):
    real = flickr8k.normalize_english

    def fragile(text):
        if text == "boom":
            raise KeyError("boom")
        return real(text)

    monkeypatch.setattr(flickr8k, "normalize_english", fragile)
    records = parse(b"a.jpg#0\tboom\na.jpg#1\tfine\n", "/img", {"a.jpg"})
    assert [p.caption_en for p in pairs_of(records)] == ["fine"]
    assert [(d.reason, d.input_line) for d in records if isinstance(d, Drop)] == [
        ("flickr8k_row_error", 1)
    ]


def test_read_in_a_pipeline_lists_the_folder(tmp_path):
    images = tmp_path / "Flicker8k_Dataset"
    images.mkdir()
    (images / "1000268201_693b08cb0e.jpg").touch()
    token = tmp_path / "Flickr8k.token.txt"
    token.write_bytes(
        b"1000268201_693b08cb0e.jpg#0\tA child in a pink dress .\n"
        b"1000268201_693b08cb0e.jpg#1\tA girl going into a wooden building .\n"
        b"2258277193_586949ec62.jpg.1#0\tpeople waiting for the subway\n"
    )
    source = Flickr8kSource(captions=str(token), images=str(images), name="flickr8k#2")
    image = str(images / "1000268201_693b08cb0e.jpg")
    with TestPipeline() as p:
        pairs, dropped = p | ReadFlickr8k(source)
        assert_that(
            pairs | beam.Map(lambda x: (x.source_name, x.source_key, x.caption_en, x.image_path)),
            equal_to(
                [
                    (
                        "flickr8k#2",
                        "1000268201_693b08cb0e.jpg#0",
                        "A child in a pink dress .",
                        image,
                    ),
                    (
                        "flickr8k#2",
                        "1000268201_693b08cb0e.jpg#1",
                        "A girl going into a wooden building .",
                        image,
                    ),
                ]
            ),
            label="pairs",
        )
        assert_that(
            dropped | beam.Map(lambda d: (d.source_name, d.reason, d.input_line, d.detail)),
            equal_to([("flickr8k#2", "missing_image_file", 3, ODD_GROUP)]),
            label="dropped",
        )


def test_the_demo_sample_reads_whole_and_its_memory_misses_one_caption():
    folder = DEMO / "flickr8k/Flicker8k_Dataset"
    token = DEMO / "flickr8k/Flickr8k.token.txt"
    source = Flickr8kSource(captions=str(token), images=str(folder))
    with token.open("rb") as stream:
        records = list(parse_flickr8k(stream, str(token), source, list_folder(str(folder))))
    pairs = pairs_of(records)
    assert len(pairs) == 20
    assert drops_of(records) == {"missing_image_file": 5}
    memory = demo_memory()
    assert {p.caption_en for p in pairs if p.caption_en not in memory} == {
        "A biker is riding through the trees ."
    }


def test_a_byte_order_mark_is_not_part_of_the_first_key():
    records = parse(
        b"\xef\xbb\xbf1000268201_693b08cb0e.jpg#0\tA child in a pink dress .\n",
        "/img",
        {"1000268201_693b08cb0e.jpg"},
    )
    assert [(p.input_line, p.source_key) for p in pairs_of(records)] == [
        (1, "1000268201_693b08cb0e.jpg#0")
    ]
