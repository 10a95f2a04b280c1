"""The COCO reader: one pair per caption in all three layouts, image URLs rebuilt or local files."""

from __future__ import annotations

import gzip
import io
import json

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from records_of import DEMO, demo_memory, drops_of, pairs_of

import pipeline.sources.coco as coco
from pipeline.records import Drop, pair_id
from pipeline.sources.coco import CocoSource, ReadCoco, image_split, is_image_url, parse_coco

SOURCE = CocoSource(paths=("unused",))
LICENSES = [
    {"url": "http://creativecommons.org/licenses/by-nc-sa/2.0/", "id": 1,
     "name": "Attribution-NonCommercial-ShareAlike License"},
    {"url": "http://creativecommons.org/licenses/by-nc/2.0/", "id": 2,
     "name": "Attribution-NonCommercial License"},
    {"url": "http://creativecommons.org/licenses/by-sa/2.0/", "id": 5,
     "name": "Attribution-ShareAlike License"},
]  # fmt: skip
FLICKR = "http://farm4.staticflickr.com/3153/2970773875_164f0c0b83_z.jpg"
IMAGES_2017 = "http://images.cocodataset.org"


def image_2017(image_id: int, split: str = "train2014", license_id: int = 5, **extra) -> dict:
    name = f"COCO_{split}_{image_id:012d}.jpg"
    image = {
        "license": license_id,
        "file_name": name,
        "coco_url": f"{IMAGES_2017}/{split}/{name}",
        "height": 480,
        "width": 640,
        "date_captured": "2013-11-14 16:28:13",
        "flickr_url": FLICKR,
        "id": image_id,
    }
    image.update(extra)
    return image


def release_2017(images: list[dict], annotations: list) -> dict:
    info = {
        "description": "COCO 2014 Dataset",
        "url": "http://cocodataset.org",
        "version": "1.0",
        "year": 2014,
        "contributor": "COCO Consortium",
        "date_created": "2017/09/01",
    }
    return {"info": info, "images": images, "licenses": LICENSES, "annotations": annotations}


def ann(image_id, ann_id, caption) -> dict:
    return {"image_id": image_id, "id": ann_id, "caption": caption}


# 57870 has six captions (near-duplicates, trailing spaces and newlines), 384029 has two.
TRAIN_ANNOTATIONS = [
    ann(57870, 787980, "A restaurant has modern wooden tables and chairs."),
    ann(57870, 789366, "A long restaurant table with rattan rounded back chairs."),
    ann(57870, 789888, "a long table with a plant on top of it surrounded with wooden chairs "),
    ann(57870, 791316, "A long table with a flower arrangement in the middle for meetings\n"),
    ann(57870, 794853, "A table is adorned with wooden chairs with blue accents."),
    ann(57870, 795000, "A table is adorned with  wooden chairs with blue accents"),
    ann(384029, 813531, "A man preparing desserts in a kitchen covered in frosting."),
    ann(999999, 900001, "A caption of an image that is not in the file."),  # unknown image
    ann(384029, 900002, "   \n"),  # empty caption
    "not an annotation",  # malformed
    {"image_id": 384029, "caption": "An annotation without its id."},  # malformed
    ann(384029, 900003, 42),  # malformed: a number, not text
    {"image_id": 384029, "id": 900004},  # no caption at all
]
TRAIN_IMAGES = [image_2017(57870), image_2017(384029, license_id=2, flickr_url=None)]


def parse(doc, path: str = "captions_train2014.json", source: CocoSource = SOURCE, names=None):
    data = doc if isinstance(doc, bytes) else json.dumps(doc).encode("utf-8")
    return list(parse_coco(io.BytesIO(data), path, source, names))


def test_2017_release_one_pair_per_caption_with_exact_fields():
    records = parse(release_2017(TRAIN_IMAGES, TRAIN_ANNOTATIONS))
    pairs = pairs_of(records)
    url_57870 = f"{IMAGES_2017}/train2014/COCO_train2014_000000057870.jpg"
    url_384029 = f"{IMAGES_2017}/train2014/COCO_train2014_000000384029.jpg"
    assert [(p.source_key, p.caption_en, p.image_url) for p in pairs] == [
        ("57870:787980", "A restaurant has modern wooden tables and chairs.", url_57870),
        ("57870:789366", "A long restaurant table with rattan rounded back chairs.", url_57870),
        (
            "57870:789888",
            "a long table with a plant on top of it surrounded with wooden chairs",
            url_57870,
        ),
        (
            "57870:791316",
            "A long table with a flower arrangement in the middle for meetings",
            url_57870,
        ),
        ("57870:794853", "A table is adorned with wooden chairs with blue accents.", url_57870),
        ("57870:795000", "A table is adorned with wooden chairs with blue accents", url_57870),
        ("384029:813531", "A man preparing desserts in a kitchen covered in frosting.", url_384029),
    ]
    first = pairs[0]
    assert first.id == pair_id("coco", "57870:787980", first.caption_en)
    assert (first.source, first.source_name, first.caption_ar) == ("coco", "coco", "")
    assert first.caption_origin == "translated"
    assert first.license == "Attribution-ShareAlike License"
    assert first.page_url is None  # flickr_url is a copy of the image, not a page
    assert (first.image_path, first.width, first.height) == (None, None, None)
    assert (first.input_file, first.input_line) == ("captions_train2014.json", 0)
    assert pairs[6].license == "Attribution-NonCommercial License"
    assert pairs[6].page_url is None
    assert [(d.input_line, d.reason) for d in records if isinstance(d, Drop)] == [
        (7, "unknown_image"),
        (8, "empty_caption"),
        (9, "malformed_annotation"),
        (10, "malformed_annotation"),
        (11, "malformed_annotation"),
        (12, "empty_caption"),
    ]
    assert drops_of(records) == {"unknown_image": 1, "empty_caption": 2, "malformed_annotation": 3}
    assert len(records) == len(TRAIN_ANNOTATIONS) == 13


def test_v1_layout_html_coco_urls_are_rebuilt_as_image_urls():
    """v1.0's `coco_url` is an HTML page: the URL comes from the split and the file name."""
    images = [
        image_2017(391895, "val2014", coco_url="http://mscoco.org/images/391895"),
        # No split in the file name: the JSON file's name gives it.
        image_2017(
            522418,
            "val2014",
            coco_url="http://mscoco.org/images/522418",
            file_name="000000522418.jpg",
        ),
    ]
    doc = {
        "info": {"contributor": "Microsoft COCO group", "date_created": "2015-01-27 09:11:52"},
        "images": images,
        "licenses": LICENSES,
        "annotations": [
            ann(391895, 770337, "A man with a red helmet on a small moped on a dirt road. "),
            ann(522418, 681330, "A woman wearing a net on her head cutting a cake. "),
        ],
    }
    pairs = pairs_of(parse(doc, "annotations/captions_val2014.json"))
    assert [(p.caption_en, p.image_url) for p in pairs] == [
        (
            "A man with a red helmet on a small moped on a dirt road.",
            f"{IMAGES_2017}/val2014/COCO_val2014_000000391895.jpg",
        ),
        (
            "A woman wearing a net on her head cutting a cake.",
            f"{IMAGES_2017}/val2014/000000522418.jpg",
        ),
    ]
    # Neither the image's name nor the file's name says the split: no URL can be built.
    records = parse(doc, "captions.json")
    assert [p.image_url for p in pairs_of(records)] == [pairs[0].image_url]
    assert [(d.reason, d.detail) for d in records if isinstance(d, Drop)] == [
        ("no_image_url", "000000522418.jpg")
    ]


def test_toolkit_layout_without_coco_url_and_with_text_ids():
    """coco-caption copies: `type: captions`, a Flickr `url`, and (converted) text image ids."""
    doc = {
        "info": {"description": "This is stable 1.0 version of the 2014 MS COCO dataset."},
        "type": "captions",
        "licenses": LICENSES,
        "images": [
            {
                "license": 1,
                "url": "http://farm3.staticflickr.com/2253/1755223462_fabbeb8dc3_z.jpg",
                "file_name": "COCO_val2014_000000203564.jpg",
                "id": "203564",
                "width": 400,
                "height": 400,
                "date_captured": "2013-11-14 11:38:44",
            }
        ],
        "annotations": [ann(203564, 37, "A bicycle replica with a clock as the front wheel.\n")],
    }
    [pair] = parse(doc, "coco-caption/annotations/captions_val2014.json")
    assert pair.caption_en == "A bicycle replica with a clock as the front wheel."
    assert pair.image_url == f"{IMAGES_2017}/val2014/COCO_val2014_000000203564.jpg"
    assert pair.page_url is None
    assert pair.license == "Attribution-NonCommercial-ShareAlike License"
    assert pair.source_key == "203564:37"


def test_image_root_uses_local_files_listed_once(tmp_path):
    root = tmp_path / "train2014"
    root.mkdir()
    (root / "COCO_train2014_000000057870.jpg").touch()
    source = CocoSource(paths=("unused",), image_root=str(root))
    annotations = TRAIN_ANNOTATIONS[:7]
    records = parse(
        release_2017(TRAIN_IMAGES, annotations),
        source=source,
        names=frozenset({"COCO_train2014_000000057870.jpg"}),
    )
    pairs = pairs_of(records)
    assert len(pairs) == 6
    assert {p.image_path for p in pairs} == {str(root / "COCO_train2014_000000057870.jpg")}
    assert {p.image_url for p in pairs} == {None}
    assert [(d.input_line, d.reason, d.detail) for d in records if isinstance(d, Drop)] == [
        (6, "missing_image_file", "COCO_train2014_000000384029.jpg")
    ]


def test_image_urls_and_splits():
    assert is_image_url(f"{IMAGES_2017}/train2014/COCO_train2014_000000057870.jpg")
    assert is_image_url("https://example.org/a.JPG?size=large")
    assert not is_image_url("http://mscoco.org/images/57870")
    assert not is_image_url("http://mscoco.org/images/57870.jpg")
    assert not is_image_url("/local/COCO_train2014_000000057870.jpg")
    assert image_split("COCO_val2014_000000391895.jpg", "x.json") == "val2014"
    assert image_split("000000391895.jpg", "/a/captions_train2017.json") == "train2017"
    assert image_split("000000391895.jpg", "/a/captions.json") is None


def test_files_that_are_not_coco_captions_are_errors_naming_them():
    with pytest.raises(ValueError, match=r"^captions_bad\.json:1: not valid JSON"):
        parse(
            json.dumps(release_2017(TRAIN_IMAGES, TRAIN_ANNOTATIONS)).encode()[:-40],
            "captions_bad.json",
        )
    with pytest.raises(ValueError, match=r"^c\.json: not a COCO captions file \(the top level"):
        parse([1, 2], "c.json")
    with pytest.raises(ValueError, match=r"^c\.json: not a COCO captions file \(no 'annotations'"):
        parse({"images": []}, "c.json")
    instances = release_2017(TRAIN_IMAGES, [{"image_id": 57870, "id": 1, "bbox": [0, 0, 1, 1]}])
    with pytest.raises(ValueError, match=r"^instances_train2014\.json: .*no annotation has a"):
        parse(instances, "instances_train2014.json")
    with pytest.raises(ValueError, match=r"^c\.json: not UTF-8 JSON"):
        parse(b'{"images": [], "annotations": [], "x": "\xff"}', "c.json")
    assert parse(release_2017(TRAIN_IMAGES, [])) == []


def test_a_truncated_gzip_file_is_an_error_naming_it(tmp_path):
    data = gzip.compress(json.dumps(release_2017(TRAIN_IMAGES, TRAIN_ANNOTATIONS * 200)).encode())
    path = tmp_path / "captions_train2014.json.gz"
    path.write_bytes(data[: len(data) // 2])
    with (
        gzip.open(path, "rb") as stream,
        pytest.raises(ValueError, match=r"captions_train2014\.json\.gz: cannot read the file"),
    ):
        list(parse_coco(stream, str(path), SOURCE))


def test_an_unexpected_failure_on_one_annotation_is_counted_and_the_file_goes_on(monkeypatch):
    real = coco.normalize_english

    def fragile(text):
        if text == "boom":
            raise KeyError("boom")
        return real(text)

    monkeypatch.setattr(coco, "normalize_english", fragile)
    records = parse(release_2017(TRAIN_IMAGES, [ann(57870, 1, "boom"), ann(57870, 2, "fine")]))
    assert [p.caption_en for p in pairs_of(records)] == ["fine"]
    assert [(d.reason, d.input_line) for d in records if isinstance(d, Drop)] == [
        ("coco_row_error", 0)
    ]


def test_read_in_a_pipeline_over_a_glob_with_gzip_and_image_root(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    (root / "COCO_train2014_000000057870.jpg").touch()
    (root / "COCO_val2014_000000391895.jpg").touch()
    train = release_2017(TRAIN_IMAGES, TRAIN_ANNOTATIONS[:2] + TRAIN_ANNOTATIONS[6:8])
    val = release_2017([image_2017(391895, "val2014")], [ann(391895, 770337, "A moped. ")])
    (tmp_path / "captions_train2014.json").write_text(json.dumps(train))
    (tmp_path / "captions_val2014.json.gz").write_bytes(gzip.compress(json.dumps(val).encode()))
    source = CocoSource(
        paths=(str(tmp_path / "captions_*.json*"),), image_root=str(root), name="coco#2"
    )
    with TestPipeline() as p:
        pairs, dropped = p | ReadCoco(source)
        assert_that(
            pairs | beam.Map(lambda x: (x.source_name, x.source_key, x.caption_en, x.image_path)),
            equal_to(
                [
                    (
                        "coco#2",
                        "57870:787980",
                        "A restaurant has modern wooden tables and chairs.",
                        str(root / "COCO_train2014_000000057870.jpg"),
                    ),
                    (
                        "coco#2",
                        "57870:789366",
                        "A long restaurant table with rattan rounded back chairs.",
                        str(root / "COCO_train2014_000000057870.jpg"),
                    ),
                    (
                        "coco#2",
                        "391895:770337",
                        "A moped.",
                        str(root / "COCO_val2014_000000391895.jpg"),
                    ),
                ]
            ),
            label="pairs",
        )
        assert_that(
            dropped | beam.Map(lambda d: (d.source_name, d.reason, d.input_line)),
            equal_to([("coco#2", "missing_image_file", 2), ("coco#2", "unknown_image", 3)]),
            label="dropped",
        )


def test_the_demo_sample_reads_whole_and_its_memory_misses_one_caption():
    path = DEMO / "coco/captions_demo2014.json"
    records = parse(path.read_bytes(), str(path))
    pairs = pairs_of(records)
    assert len(records) == len(pairs) == 21
    assert sorted({p.source_key.split(":")[0] for p in pairs}) == ["11", "12", "13", "14"]
    memory = demo_memory()
    assert {p.caption_en for p in pairs if p.caption_en not in memory} == {
        "A city bus stopped at an intersection on a cloudy day."
    }


def test_a_byte_order_mark_before_the_json_is_skipped():
    data = json.dumps(release_2017(TRAIN_IMAGES, TRAIN_ANNOTATIONS)).encode()
    with_mark = parse(b"\xef\xbb\xbf" + data)
    assert with_mark == parse(data)
    assert len(pairs_of(with_mark)) == 7


def test_control_characters_and_json_escapes_never_reach_caption_en():
    annotations = [
        {"image_id": 57870, "id": 1, "caption": "A cat\u0000 on a\u0085sofa\u202e .\n"},
        {"image_id": 57870, "id": 2, "caption": "A dog \ud800on a rug ."},  # a lone surrogate
    ]
    records = parse(json.dumps(release_2017(TRAIN_IMAGES, annotations)).encode())
    assert [p.caption_en for p in pairs_of(records)] == ["A cat on a sofa .", "A dog on a rug ."]
