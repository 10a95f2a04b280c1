"""The Conceptual Captions reader: unquoted `caption<TAB>url` lines, every line accounted for."""

from __future__ import annotations

import gzip
import io
import json

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from records_of import DEMO, demo_memory, drops_of, pairs_of

import pipeline.sources.conceptual_captions as cc
from pipeline.records import Drop, pair_id
from pipeline.sources.conceptual_captions import (
    ConceptualCaptionsSource,
    ReadConceptualCaptions,
    parse_conceptual_captions,
)

SOURCE = ConceptualCaptionsSource(paths=("unused",))


def parse(data: bytes, path: str = "cc.tsv") -> list:
    return list(parse_conceptual_captions(io.BytesIO(data), path, SOURCE))


def test_real_validation_lines_are_all_kept_verbatim(shared_samples):
    path = str(shared_samples / "hf_cc_dummy_validation.tsv")
    records = parse((shared_samples / "hf_cc_dummy_validation.tsv").read_bytes(), path)
    pairs = pairs_of(records)
    assert len(records) == len(pairs) == 5
    first = pairs[0]
    assert first.caption_en == "author : a life in photography -- in pictures"
    assert first.image_url == (
        "https://i.pinimg.com/736x/66/01/6c/"
        "66016c3ba27c0e04f39e2bd81a934e3e--anita-ekberg-bob-hope.jpg"
    )
    assert first.source_key == first.image_url
    assert first.id == pair_id("conceptual_captions", first.image_url, first.caption_en)
    assert (first.caption_ar, first.caption_origin) == ("", "translated")
    assert (first.source, first.source_name) == ("conceptual_captions", "conceptual_captions")
    assert (first.input_file, first.input_line) == (path, 1)
    assert (first.image_path, first.width, first.height, first.page_url) == (None,) * 4
    assert [p.input_line for p in pairs] == [1, 2, 3, 4, 5]
    assert pairs[1].caption_en == "an angler fishes river on a snowy day ."


def test_real_training_rows_as_tsv_lines_are_all_kept(shared_samples):
    """The 200 CC3M rows (shipped as JSON lines) written as the real TSV: 200 exact pairs."""
    rows = [
        json.loads(line)
        for line in (shared_samples / "cc3m_sample_200.jsonl").read_text("utf-8").splitlines()
    ]
    data = "".join(f"{r['original_caption']}\t{r['image_url']}\n" for r in rows).encode()
    records = parse(data)
    assert drops_of(records) == {}
    assert [(p.caption_en, p.image_url) for p in records] == [
        (" ".join(r["original_caption"].split()), r["image_url"]) for r in rows
    ]
    assert len({p.id for p in records}) == 200
    assert records[0].image_url.endswith("IMG_3422.JPG?imgmax=800")


CRAFTED = b"".join(
    [
        b"a very typical bus station\thttp://images.example/cc/1.jpg\n",  # 1 kept
        b'"the best" sign in the city .\thttp://images.example/cc/2.jpg\n',  # 2 kept, quote kept
        b"actor attends the premiere .\thttps://images.example/cc/3.jpg?s=612x612\r\n",  # 3 CRLF
        b"  a dog   running\ton the beach \t http://images.example/cc/4.jpg \n",  # 4 three columns
        b"  person   walks  on the beach .  \t http://images.example/cc/5.jpg \n",  # 5 kept
        b"caf\xe9 interior\thttp://images.example/cc/6.jpg\n",  # 6 latin-1 byte
        b"no tab on this line\n",  # 7
        b"\n",  # 8 blank
        b"   \thttp://images.example/cc/9.jpg\n",  # 9 empty caption
        b"a map of the city\tftp://images.example/cc/10.jpg\n",  # 10
        b"a map of the city\t\n",  # 11 no url
        b"a dog on a leash\thttp://images.example/cc/12.jpg\t/m/0bt9lr,/m/04rky\tdog,mammal\t"
        b"0.98,0.87\n",  # 12 labeled subset: 5 columns, kept
        b"a cat\rsleeping\thttp://images.example/cc/13.jpg",  # 13 stray CR, no final newline
    ]
)


def test_crafted_lines_exact_pairs_and_drops():
    records = parse(CRAFTED)
    assert [(p.input_line, p.caption_en, p.image_url) for p in pairs_of(records)] == [
        (1, "a very typical bus station", "http://images.example/cc/1.jpg"),
        (2, '"the best" sign in the city .', "http://images.example/cc/2.jpg"),
        (3, "actor attends the premiere .", "https://images.example/cc/3.jpg?s=612x612"),
        (5, "person walks on the beach .", "http://images.example/cc/5.jpg"),
        (12, "a dog on a leash", "http://images.example/cc/12.jpg"),
        (13, "a cat sleeping", "http://images.example/cc/13.jpg"),
    ]
    drops = [d for d in records if isinstance(d, Drop)]
    assert "can't decode byte 0xe9" in drops[1].detail
    assert [(d.input_line, d.reason, d.detail) for d in drops if d.reason != "invalid_utf8"] == [
        (4, "malformed_line", "3 columns"),
        (7, "malformed_line", "1 columns"),
        (8, "malformed_line", "blank line"),
        (9, "empty_caption", None),
        (10, "no_image_url", "ftp://images.example/cc/10.jpg"),
        (11, "no_image_url", None),
    ]
    assert [(d.input_line, d.reason) for d in drops][1] == (6, "invalid_utf8")
    assert drops_of(records) == {
        "malformed_line": 3,
        "invalid_utf8": 1,
        "empty_caption": 1,
        "no_image_url": 2,
    }
    # Every line is one record: pairs + drops == lines.
    assert len(records) == 13 == len(CRAFTED.split(b"\n"))


def test_an_unexpected_failure_on_one_line_is_counted_and_the_file_goes_on(monkeypatch):
    real = cc.normalize_english

    def fragile(text):
        if text == "boom":
            raise KeyError("boom")
        return real(text)

    monkeypatch.setattr(cc, "normalize_english", fragile)
    records = parse(b"boom\thttp://x/1.jpg\nfine\thttp://x/2.jpg\n")
    assert [p.caption_en for p in pairs_of(records)] == ["fine"]
    assert [(d.reason, d.input_line) for d in records if isinstance(d, Drop)] == [
        ("conceptual_captions_row_error", 1)
    ]


def test_a_truncated_gzip_file_is_an_error_naming_file_and_line(tmp_path):
    lines = b"".join(b"caption %d\thttp://x/%d.jpg\n" % (i, i) for i in range(20000))
    data = gzip.compress(lines)
    path = tmp_path / "cut.tsv.gz"
    path.write_bytes(data[: len(data) // 2])
    with (
        gzip.open(path, "rb") as stream,
        pytest.raises(ValueError, match=r"cut\.tsv\.gz:\d+: cannot read the file past this line"),
    ):
        list(parse_conceptual_captions(stream, str(path), SOURCE))


def test_read_in_a_pipeline_over_a_glob_with_gzip(tmp_path):
    (tmp_path / "a.tsv").write_bytes(
        b"a bus station\thttp://images.example/cc/1.jpg\nno url here\n"
    )
    (tmp_path / "b.tsv.gz").write_bytes(
        gzip.compress(
            b'"quoted" start .\thttp://images.example/cc/2.jpg\r\n'
            b"a bus station\thttp://images.example/cc/3.jpg\r\n"
        )
    )
    source = ConceptualCaptionsSource(
        paths=(str(tmp_path / "*.tsv*"),), name="conceptual_captions#2"
    )
    with TestPipeline() as p:
        pairs, dropped = p | ReadConceptualCaptions(source)
        assert_that(
            pairs | beam.Map(lambda x: (x.source_name, x.caption_en, x.source_key, x.input_line)),
            equal_to(
                [
                    ("conceptual_captions#2", "a bus station", "http://images.example/cc/1.jpg", 1),
                    (
                        "conceptual_captions#2",
                        '"quoted" start .',
                        "http://images.example/cc/2.jpg",
                        1,
                    ),
                    ("conceptual_captions#2", "a bus station", "http://images.example/cc/3.jpg", 2),
                ]
            ),
            label="pairs",
        )
        assert_that(
            dropped | beam.Map(lambda d: (d.source_name, d.reason, d.input_line, d.count)),
            equal_to([("conceptual_captions#2", "malformed_line", 2, 1)]),
            label="dropped",
        )


def test_the_demo_sample_reads_whole_and_its_memory_misses_one_caption():
    path = DEMO / "cc/cc_demo.tsv"
    records = parse(path.read_bytes(), str(path))
    assert len(pairs_of(records)) == 16
    captions = [p.caption_en for p in records]
    assert captions.count("actor attends the premiere of the film .") == 3
    assert captions[4].startswith('" welcome home "')
    assert {c for c in captions if c not in demo_memory()} == {
        "aerial view of the river flowing through the city"
    }


def test_a_byte_order_mark_is_not_part_of_the_first_caption():
    records = parse(b"\xef\xbb\xbfa bus station\thttp://x/1.jpg\nthe city\thttp://x/2.jpg\n")
    assert [(p.input_line, p.caption_en) for p in pairs_of(records)] == [
        (1, "a bus station"),
        (2, "the city"),
    ]


def test_control_and_bidi_characters_never_reach_caption_en():
    records = parse("a dog\x00 runs\x85on the\u202e beach\x1b .\thttp://x/1.jpg\n".encode())
    assert [p.caption_en for p in pairs_of(records)] == ["a dog runs on the beach ."]
    # The id is of the caption as it is kept.
    assert pairs_of(records)[0].id == pair_id(
        "conceptual_captions", "http://x/1.jpg", "a dog runs on the beach ."
    )
