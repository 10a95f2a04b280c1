"""The user's own pairs (`kind: pairs`): every format, the column mapping, Arabic and English
captions, local images under image_root, every drop reason with its line, the run and the CLI."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from cli_runs import LOOSE, OFFLINE, memory, run_manifest
from image_samples import jpeg
from records_of import pairs_of

from pipeline.build import check_buildable
from pipeline.estimate import estimate_sources
from pipeline.manifest import ManifestError, load_manifest
from pipeline.records import DROPPED, GENUINE, TRANSLATED, Drop, pair_id
from pipeline.sources.pairs import PairsSource, ReadPairs, parse_pairs
from pipeline.sources.registry import KINDS

AR = PairsSource(paths=("unused",), language="ar")
EN = PairsSource(paths=("unused",), language="en")
ROWS = [
    {"url": "https://img.example/souk.jpg", "caption": "  سوق  الحميدية في دمشق "},
    {"url": "https://img.example/nile.jpg", "caption": "النيل عند الغروب"},
]
# What ROWS read as: (line, source_key, caption_ar, image_url).
EXPECTED = [
    (2, "https://img.example/souk.jpg", "سوق الحميدية في دمشق", "https://img.example/souk.jpg"),
    (3, "https://img.example/nile.jpg", "النيل عند الغروب", "https://img.example/nile.jpg"),
]


def delimited(rows: list[dict], sep: str = "\t") -> bytes:
    header = list(rows[0])
    lines = [sep.join(header), *(sep.join(str(r[c]) for c in header) for r in rows)]
    return ("\n".join(lines) + "\n").encode("utf-8")


def jsonl(rows: list) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


def parquet(rows: list[dict], row_group_size: int | None = None) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buf, row_group_size=row_group_size)
    return buf.getvalue()


def read(data: bytes, name: str, source: PairsSource = AR, names=None) -> list:
    stream = gzip.GzipFile(fileobj=io.BytesIO(data)) if name.endswith(".gz") else io.BytesIO(data)
    return list(parse_pairs(stream, name, source, names))


def drops(records) -> list[tuple[int, str]]:
    return [(r.input_line, r.reason) for r in records if isinstance(r, Drop)]


# ---------------------------------------------------------------------------- formats


FORMATS = {
    "p.tsv": lambda: delimited(ROWS),
    "p.tsv.gz": lambda: gzip.compress(delimited(ROWS)),
    "p.csv": lambda: delimited(ROWS, ","),
    "p.csv.gz": lambda: gzip.compress(delimited(ROWS, ",")),
    "p.jsonl": lambda: jsonl(ROWS),
    "p.jsonl.gz": lambda: gzip.compress(jsonl(ROWS)),
    "p.ndjson": lambda: jsonl(ROWS),
}


@pytest.mark.parametrize("name", list(FORMATS))
def test_every_text_format_reads_the_same_genuine_pairs(name):
    records = read(FORMATS[name](), name)
    got = [(p.input_line, p.source_key, p.caption_ar, p.image_url) for p in pairs_of(records)]
    # JSON Lines has no header: its rows are lines 1 and 2.
    shift = 1 if "json" in name else 0
    assert got == [(line - shift, *rest) for line, *rest in EXPECTED]
    first = pairs_of(records)[0]
    assert first.caption_origin == GENUINE and first.caption_en is None
    assert first.id == pair_id("pairs", ROWS[0]["url"], "سوق الحميدية في دمشق")
    assert first.input_file == name and first.source == "pairs"


def test_parquet_is_read_row_group_by_row_group_numbering_rows_from_one():
    rows = [*ROWS, {"url": "ftp://img.example/x.jpg", "caption": "صورة"}, *ROWS]
    records = read(parquet(rows, row_group_size=2), "p.parquet")
    assert [p.input_line for p in pairs_of(records)] == [1, 2, 4, 5]
    assert pairs_of(records)[3].caption_ar == "النيل عند الغروب"
    assert drops(records) == [(3, "no_image_url")]


def test_a_csv_field_keeps_its_quoted_comma_and_a_tsv_caption_its_leading_quote():
    csv_data = 'caption,url\n"قطة، وكلب",https://img.example/a.jpg\n'.encode()
    assert pairs_of(read(csv_data, "p.csv"))[0].caption_ar == "قطة، وكلب"
    tsv_data = 'caption\turl\n"قطة\thttps://img.example/a.jpg\n'.encode()
    assert pairs_of(read(tsv_data, "p.tsv"))[0].caption_ar == '"قطة'


def test_format_overrides_the_extension_and_an_unknown_extension_names_the_file():
    source = PairsSource(paths=("unused",), language="ar", format="jsonl")
    assert len(pairs_of(read(jsonl(ROWS), "pairs.txt", source))) == 2
    with pytest.raises(ValueError, match=r"pairs\.txt: cannot tell the format"):
        read(jsonl(ROWS), "pairs.txt")


# ---------------------------------------------------------------------------- mapping, language


def test_the_column_mapping_picks_the_columns_and_the_id_is_the_key():
    source = PairsSource(
        paths=("unused",),
        language="ar",
        columns=(("url", "image"), ("caption", "text"), ("id", "key"), ("license", "lic")),
    )
    rows = [{"key": 17, "image": ROWS[0]["url"], "text": "قلعة حلب", "lic": "CC BY 4.0", "x": 1}]
    [pair] = pairs_of(read(jsonl(rows), "p.jsonl", source))
    assert (pair.source_key, pair.image_url, pair.caption_ar, pair.license) == (
        "17",
        ROWS[0]["url"],
        "قلعة حلب",
        "CC BY 4.0",
    )
    assert pair.id == pair_id("pairs", "17", "قلعة حلب")


def test_english_captions_are_translated_like_conceptual_captions():
    rows = [{"url": ROWS[0]["url"], "caption": "  A  busy   market in Damascus "}]
    [pair] = pairs_of(read(delimited(rows), "p.tsv", EN))
    assert (pair.caption_ar, pair.caption_en, pair.caption_origin) == (
        "",
        "A busy market in Damascus",
        TRANSLATED,
    )
    assert KINDS["pairs"].translates(EN) and not KINDS["pairs"].translates(AR)
    assert KINDS["conceptual_captions"].translates(None)
    assert not KINDS["wit"].translates(None)


@pytest.mark.parametrize(
    ("name", "data", "where"),
    [
        (
            "p.tsv",
            b"link\tcaption\nhttps://a/b.jpg\tx\n",
            r"p\.tsv:1: missing mapped column\(s\) url",
        ),
        ("p.csv", b"\xef\xbb\xbfurl,text\n", r"p\.csv:1: missing mapped column\(s\) caption"),
        ("p.jsonl", b'[1]\n{"url": "https://a/b.jpg"}\n', r"p\.jsonl:2: missing .* caption"),
        ("p.parquet", parquet([{"url": "https://a/b.jpg"}]), r"p\.parquet:1: missing .* caption"),
    ],
)
def test_a_file_lacking_a_mapped_column_stops_naming_the_file_and_line(name, data, where):
    with pytest.raises(ValueError, match=where):
        read(data, name)


# ---------------------------------------------------------------------------- local images


def image_root(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    (root / "2024").mkdir(parents=True)
    (root / "a.jpg").write_bytes(jpeg(32, 24, seed=1))
    (root / "2024" / "b.jpg").write_bytes(jpeg(32, 24, seed=2))
    (tmp_path / "secret.jpg").write_bytes(jpeg(32, 24, seed=3))
    return root


def test_local_paths_under_image_root_and_what_is_refused(tmp_path):
    from pipeline.sources.files import list_folder

    root = image_root(tmp_path)
    source = PairsSource(paths=("unused",), language="ar", image_root=str(root))
    rows = [
        {"path": "a.jpg", "caption": "صورة أولى"},  # 2
        {"path": "2024/b.jpg", "caption": "صورة ثانية"},  # 3
        {"path": "./2024//b.jpg", "caption": "صورة ثالثة"},  # 4: the same file, spelt otherwise
        {"path": "c.jpg", "caption": "صورة مفقودة"},  # 5
        {"path": "../secret.jpg", "caption": "خارج المجلد"},  # 6
        {"path": "2024/../../secret.jpg", "caption": "خارج المجلد"},  # 7
        {"path": str(tmp_path / "secret.jpg"), "caption": "مسار مطلق"},  # 8
        {"path": "", "caption": "بلا صورة"},  # 9
    ]
    records = read(delimited(rows), "p.tsv", source, list_folder(str(root), recursive=True))
    got = [(p.input_line, p.image_path, p.image_url, p.source_key) for p in pairs_of(records)]
    assert got == [
        (2, str(root / "a.jpg"), None, "a.jpg"),
        (3, str(root / "2024" / "b.jpg"), None, "2024/b.jpg"),
        (4, str(root / "2024" / "b.jpg"), None, "./2024//b.jpg"),
    ]
    assert drops(records) == [
        (5, "missing_image_file"),
        (6, "unsafe_image_path"),
        (7, "unsafe_image_path"),
        (8, "unsafe_image_path"),
        (9, "no_image_url"),
    ]


def test_with_image_root_a_mapped_url_serves_rows_without_a_path(tmp_path):
    root = image_root(tmp_path)
    source = PairsSource(
        paths=("unused",), language="ar", image_root=str(root), columns=(("url", "url"),)
    )
    rows = [
        {"path": "a.jpg", "url": "https://img.example/a.jpg", "caption": "صورة أولى"},
        {"path": "", "url": "https://img.example/z.jpg", "caption": "صورة من الشبكة"},
    ]
    from pipeline.sources.files import list_folder

    records = read(jsonl(rows), "p.jsonl", source, list_folder(str(root), recursive=True))
    assert [(p.image_path, p.image_url) for p in pairs_of(records)] == [
        (str(root / "a.jpg"), None),
        (None, "https://img.example/z.jpg"),
    ]


# ---------------------------------------------------------------------------- drops


def test_every_bad_tsv_row_is_a_drop_naming_its_line_and_the_rows_after_it_are_read():
    url = "https://img.example/x.jpg"
    lines = [
        b"url\tcaption",
        f"{url}\tصورة جيدة".encode(),  # 2
        f"{url}\t".encode() + "صورة".encode()[:3],  # 3: a cut UTF-8 sequence
        b"",  # 4: blank
        f"{url}\tصورة\tزائد".encode(),  # 5: three columns
        f"{url}\t  \u200f ".encode(),  # 6: nothing but whitespace and a bidi mark
        "ftp://img.example/x.jpg\tصورة".encode(),  # 7
        "\tصورة".encode(),  # 8
        f"{url}\tصورة أخيرة".encode(),  # 9
    ]
    records = read(b"\n".join(lines) + b"\n", "p.tsv")
    assert [p.input_line for p in pairs_of(records)] == [2, 9]
    assert drops(records) == [
        (3, "invalid_utf8"),
        (4, "malformed_row"),
        (5, "malformed_row"),
        (6, "empty_caption"),
        (7, "no_image_url"),
        (8, "no_image_url"),
    ]
    assert all(r.input_file == "p.tsv" for r in records)


def test_bad_csv_and_json_lines_are_malformed_rows_with_their_lines():
    csv_data = 'url,caption\nhttps://a/b.jpg,"قطة\nhttps://a/c.jpg,كلب\n'.encode()
    records = read(csv_data, "p.csv")
    assert drops(records) == [(2, "malformed_row")]
    assert [p.input_line for p in pairs_of(records)] == [3]
    lines = [
        {"url": "https://a/b.jpg", "caption": "قطة"},  # 1
        ["not", "an", "object"],  # 2
        {"url": "https://a/b.jpg", "caption": 42},  # 3: not text
        {"url": "https://a/b.jpg"},  # 4: no caption in this row
        {"url": None, "caption": "بلا رابط"},  # 5
    ]
    data = jsonl(lines) + b'{"url": "https://a/b.jpg", "caption": \n'  # 6: cut JSON
    records = read(data, "p.jsonl")
    assert drops(records) == [
        (2, "malformed_row"),
        (3, "malformed_row"),
        (4, "empty_caption"),
        (5, "no_image_url"),
        (6, "malformed_row"),
    ]


def test_a_lone_surrogate_in_a_url_is_its_invalid_utf8_drop_in_a_run(tmp_path):
    (tmp_path / "p.jsonl").write_bytes(
        b'{"url": "https://a/\\ud800.jpg", "caption": "\xd9\x82\xd8\xb7"}\n' + jsonl(ROWS)
    )
    source = PairsSource(paths=(str(tmp_path / "p.jsonl"),), language="ar")
    with TestPipeline() as p:
        pairs, dropped = p | ReadPairs(source)
        assert_that(
            dropped | beam.Map(lambda d: (d.reason, d.input_line)),
            equal_to([("invalid_utf8", 1)]),
            label="drops",
        )
        assert_that(pairs | beam.Map(lambda x: x.input_line), equal_to([2, 3]), label="pairs")


# ---------------------------------------------------------------------------- the run


def test_read_pairs_runs_every_file_of_the_globs(tmp_path):
    (tmp_path / "a.tsv").write_bytes(delimited(ROWS) + b"\n")  # a trailing blank line
    (tmp_path / "b.parquet").write_bytes(parquet(ROWS))
    source = PairsSource(
        paths=(str(tmp_path / "*.tsv"), str(tmp_path / "*.parquet")), language="ar"
    )
    with TestPipeline() as p:
        pairs, dropped = p | ReadPairs(source)
        assert_that(
            pairs
            | beam.Map(lambda x: (x.input_file.rsplit("/", 1)[1], x.input_line, x.caption_ar)),
            equal_to(
                [
                    ("a.tsv", 2, "سوق الحميدية في دمشق"),
                    ("a.tsv", 3, "النيل عند الغروب"),
                    ("b.parquet", 1, "سوق الحميدية في دمشق"),
                    ("b.parquet", 2, "النيل عند الغروب"),
                ]
            ),
            label="pairs",
        )
        assert_that(
            dropped | beam.Map(lambda d: (d.reason, d.input_line)),
            equal_to([("malformed_row", 4)]),
            label=DROPPED,
        )


def test_the_cli_builds_arabic_pairs_and_counts_every_row(tmp_path, capsys):
    rows = [
        {"link": "https://img.example/souk.jpg", "text": "سوق الحميدية القديم في مدينة دمشق"},
        {"link": "https://img.example/nile.jpg", "text": "نهر النيل عند غروب الشمس في القاهرة"},
        {"link": "https://img.example/empty.jpg", "text": " "},
    ]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "pairs.csv.gz").write_bytes(gzip.compress(delimited(rows, ",")))
    body = (
        "name: mine\nsources:\n  - kind: pairs\n    paths: [mine/*.csv.gz]\n    language: ar\n"
        "    columns: {url: link, caption: text}\n" + LOOSE + OFFLINE
    )
    status, stats, out_rows, err = run_manifest(tmp_path, body, capsys)
    assert status == 0, err
    assert stats["sources"]["pairs"] == {"read": 3, "kept": 2, "dropped": {"empty_caption": 1}}
    got = sorted((r["image_url"], r["caption_ar"], r["caption_origin"]) for r in out_rows)
    assert got == [
        ("https://img.example/nile.jpg", "نهر النيل عند غروب الشمس في القاهرة", "genuine"),
        ("https://img.example/souk.jpg", "سوق الحميدية القديم في مدينة دمشق", "genuine"),
    ]


def test_the_cli_translates_english_pairs_from_the_memory(tmp_path, capsys):
    english = ["A busy market in the old city", "The river at sunset"]
    arabic = ["سوق مزدحم في المدينة القديمة", "النهر عند غروب الشمس"]
    rows = [{"url": f"https://img.example/{i}.jpg", "caption": c} for i, c in enumerate(english)]
    (tmp_path / "pairs.jsonl").write_bytes(jsonl([*rows, "not an object"]))
    memory(tmp_path, dict(zip(english, arabic, strict=True)))
    body = (
        "name: mine\nsources:\n  - kind: pairs\n    paths: [pairs.jsonl]\n    language: en\n"
        "translation: {memory: memory.tsv}\n" + LOOSE + OFFLINE
    )
    status, stats, out_rows, err = run_manifest(tmp_path, body, capsys)
    assert status == 0, err
    assert stats["sources"]["pairs"] == {"read": 3, "kept": 2, "dropped": {"malformed_row": 1}}
    got = sorted((r["caption_en"], r["caption_ar"], r["caption_origin"]) for r in out_rows)
    assert got == sorted(zip(english, arabic, ["translated"] * 2, strict=True))


def test_the_cli_stops_on_a_file_without_the_mapped_columns_naming_it(tmp_path, capsys):
    (tmp_path / "pairs.tsv").write_bytes(b"image\ttext\nhttps://a/b.jpg\tx\n")
    body = "sources:\n  - kind: pairs\n    paths: [pairs.tsv]\n    language: ar\n" + LOOSE + OFFLINE
    status, stats, _, err = run_manifest(tmp_path, body, capsys)
    assert status != 0 and stats is None
    assert "pairs.tsv:1: missing mapped column(s) caption, url" in err


# ---------------------------------------------------------------------------- manifest, estimate


def write_manifest(folder: Path, source: str, extra: str = "") -> str:
    (folder / "pairs.tsv").write_bytes(delimited(ROWS))
    (folder / "images").mkdir(exist_ok=True)
    path = folder / "manifest.yaml"
    path.write_text(f"sources:\n  - kind: pairs\n    paths: [pairs.tsv]\n{source}{extra}")
    return str(path)


@pytest.mark.parametrize(
    ("keys", "problem"),
    [
        ("", "sources[0].language: missing"),
        ("    language: fr\n", "sources[0].language: one of ar, en"),
        ("    language: ar\n    format: xlsx\n", "sources[0].format: one of auto"),
        ("    language: ar\n    columns: {picture: p}\n", "sources[0].columns.picture: not a role"),
        ("    language: ar\n    columns: {path: p}\n", "sources[0].columns.path: local image"),
    ],
)
def test_the_manifest_refuses_what_cannot_be_read(tmp_path, keys, problem):
    with pytest.raises(ManifestError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        load_manifest(write_manifest(tmp_path, keys))


def test_english_pairs_need_translation_and_arabic_ones_do_not(tmp_path):
    check_buildable(load_manifest(write_manifest(tmp_path, "    language: ar\n")))
    with pytest.raises(ManifestError, match=r"sources\[0\]\.kind: 'pairs' is English"):
        check_buildable(load_manifest(write_manifest(tmp_path, "    language: en\n")))


def test_estimate_counts_the_local_files_and_translates_only_english(tmp_path):
    folder_ar, folder_en = tmp_path / "ar", tmp_path / "en"
    folder_ar.mkdir(), folder_en.mkdir()
    [ar] = estimate_sources(load_manifest(write_manifest(folder_ar, "    language: ar\n")))
    [en] = estimate_sources(load_manifest(write_manifest(folder_en, "    language: en\n")))
    assert (ar.basis, ar.read, ar.kept, ar.translated) == ("counted", 2, 2, 0)
    assert (en.read, en.translated) == (2, 2)
