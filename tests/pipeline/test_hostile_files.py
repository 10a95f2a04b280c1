"""Hostile input files through `python -m pipeline run`, where a user meets them (issue 15):
a runaway quote in a WIT shard, control characters in every source's captions, a byte-order
mark on every kind of text input, and truncated `.gz` files small and large."""

from __future__ import annotations

import gzip
import json
import re

import pytest
from cli_runs import LOOSE, OFFLINE, memory
from cli_runs import run_manifest as run
from wit_files import wit_bytes, wit_row

from pipeline.text import BIDI_CONTROLS

BOM = b"\xef\xbb\xbf"
# What no caption of the output may hold: C0/C1 controls, bidi controls.
FORBIDDEN = re.compile(
    "[\x00-\x1f\x7f-\x9f" + BIDI_CONTROLS + "\ufeff\ud800-\udfff]",
)


def assert_every_record_counted(stats: dict) -> None:
    for name, s in stats["sources"].items():
        assert s["read"] == s["kept"] + sum(s["dropped"].values()), name


# ---------------------------------------------------------------------------- a runaway quote


def test_a_stray_quote_in_a_wit_shard_swallows_no_row(tmp_path, capsys):
    """The issue's shard: a caption starting with a lone quote, then five good rows (each with a
    quoted multi-line context field, as real WIT rows have). Before: `read 1`."""
    captions = ["PLACEHOLDER"] + [f"صورة رقم {n} لقلعة حلب القديمة" for n in range(2, 7)]
    rows = [wit_row(n, caption_reference_description=c) for n, c in enumerate(captions, 1)]
    data = wit_bytes(rows).replace(b"PLACEHOLDER", '"منظر عام لمدينة حلب القديمة'.encode())
    (tmp_path / "shard.tsv").write_bytes(data)
    status, stats, rows, _ = run(
        tmp_path, "sources:\n  - kind: wit\n    paths: [shard.tsv]\n" + LOOSE + OFFLINE, capsys
    )
    assert status == 0
    assert stats["sources"]["wit"] == {"read": 6, "kept": 6, "dropped": {}}
    by_row = {int(r["page_url"].rsplit("_", 1)[1]): r["caption_ar"] for r in rows}
    # The stray quote is kept: the line read with it taken literally is a whole row.
    assert by_row == {
        1: '"منظر عام لمدينة حلب القديمة',
        **{n: f"صورة رقم {n} لقلعة حلب القديمة" for n in range(2, 7)},
    }


def test_a_line_no_reading_makes_a_row_is_dropped_alone_naming_its_line(tmp_path, capsys):
    """A runaway quote on a line that is no row at all: that line is dropped, with its line, and
    the rows it swallowed are read."""
    good = [wit_row(n, caption_reference_description=f"صورة رقم {n} لجامع الأزهر") for n in (1, 2)]
    lines = wit_bytes(good).split(b"\n")
    broken = 'ar\thttps://ar.wikipedia.org/wiki/X\t"شارع في القاهرة'.encode()
    data = b"\n".join([lines[0], broken, *lines[1:]])
    (tmp_path / "shard.tsv").write_bytes(data)
    status, stats, rows, _ = run(
        tmp_path, "sources:\n  - kind: wit\n    paths: [shard.tsv]\n" + LOOSE + OFFLINE, capsys
    )
    assert status == 0
    assert stats["sources"]["wit"] == {
        "read": 3,
        "kept": 2,
        "dropped": {"wrong_column_count": 1},
    }
    assert sorted(r["page_url"][-1] for r in rows) == ["1", "2"]


# ---------------------------------------------------------------------------- control characters


def test_no_control_or_bidi_character_reaches_either_caption(tmp_path, capsys):
    """NUL, NEL (U+0085), ESC, DEL, C1 controls, an unpaired RLO (U+202E) and isolates in the
    captions of every source, and in the translation memory's Arabic."""
    wit = [
        wit_row(1, caption_reference_description="منظر عام ل\x00مدينة حلب القديمة"),
        wit_row(2, caption_reference_description="\u202eقلعة\x85حلب عند\x1b الغروب\x9b"),
        wit_row(3, caption_attribution_description="العربية: \u2067مسجد\x7f محمد علي"),
    ]
    (tmp_path / "shard.tsv").write_bytes(wit_bytes(wit))
    (tmp_path / "cc.tsv").write_bytes(
        "a dog\x00 runs on the\x85beach .\thttp://img.example/1.jpg\n"
        "\u202eperson walks in the city\x1b .\thttp://img.example/2.jpg\n".encode()
    )
    coco = {
        "images": [{"id": 7, "file_name": "COCO_train2014_000000000007.jpg"}],
        "annotations": [
            {"id": 1, "image_id": 7, "caption": "A cat\u0000 sleeps on a\u2066 sofa.\u0085"}
        ],
    }
    (tmp_path / "captions_train2014.json").write_text(json.dumps(coco), encoding="utf-8")
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "1.jpg").touch()
    (tmp_path / "token.txt").write_bytes(
        "1.jpg#0\tA boy\x1f jumps\x00 into a lake\u202e .\n".encode()
    )
    page = (
        '<html><head><base href="//ar.wikipedia.org/wiki/"/></head><body><section>'
        '<figure typeof="mw:File/Thumb"><a href="./ملف:Nile.jpg" class="mw-file-description">'
        '<img src="//upload.wikimedia.org/wikipedia/commons/thumb/a/ab/Nile.jpg/250px-Nile.jpg"'
        ' width="250" height="180" class="mw-file-element"/></a>'
        "<figcaption>نهر\x07 النيل\u202e عند\x85القاهرة\u2066\x1b</figcaption></figure>"
        "</section></body></html>"
    )
    # (The HTML parser makes a NUL U+FFFD, as the HTML standard says: other controls here.)
    article = {"name": "نهر النيل", "namespace": {"identifier": 0}, "article_body": {"html": page}}
    (tmp_path / "dump.ndjson").write_text(json.dumps(article) + "\n", encoding="utf-8")
    memory(
        tmp_path,
        {
            "a dog runs on the beach .": "كلب يركض على\x00 الشاطئ .",
            "person walks in the city .": "شخص يمشي في\u202e المدينة .",
            "A cat sleeps on a sofa.": "قطة تنام على أريكة.",
            "A boy jumps into a lake .": "صبي يقفز في بحيرة .",
        },
    )
    body = (
        "sources:\n"
        "  - kind: wit\n    paths: [shard.tsv]\n"
        "  - kind: conceptual_captions\n    paths: [cc.tsv]\n"
        "  - kind: coco\n    paths: [captions_train2014.json]\n"
        "  - kind: flickr8k\n    captions: token.txt\n    images: images\n"
        "  - kind: wikipedia\n    dump: [dump.ndjson]\n"
        "translation:\n  memory: memory.tsv\n" + LOOSE + OFFLINE
    )
    status, stats, rows, _ = run(tmp_path, body, capsys)
    assert status == 0, stats
    assert_every_record_counted(stats)
    assert {s: v["kept"] for s, v in stats["sources"].items()} == {
        "wit": 3,
        "conceptual_captions": 2,
        "coco": 1,
        "flickr8k": 1,
        "wikipedia": 1,
    }
    for row in rows:
        for column in ("caption_ar", "caption_en", "page_title", "section_title"):
            assert not FORBIDDEN.search(row[column] or ""), (column, row[column])
    pairs = {(r["caption_en"], r["caption_ar"]) for r in rows}
    assert pairs == {
        (None, "منظر عام لمدينة حلب القديمة"),  # NUL removed: ل joins مدينة, as written
        (None, "قلعة حلب عند الغروب"),  # NEL a space; RLO, ESC, CSI removed
        (None, "مسجد محمد علي"),
        ("a dog runs on the beach .", "كلب يركض على الشاطئ ."),
        ("person walks in the city .", "شخص يمشي في المدينة ."),
        ("A cat sleeps on a sofa.", "قطة تنام على أريكة."),
        ("A boy jumps into a lake .", "صبي يقفز في بحيرة ."),
        (None, "نهر النيل عند القاهرة"),
    }


# ---------------------------------------------------------------------------- byte-order marks


def test_a_byte_order_mark_on_every_text_input_is_skipped(tmp_path, capsys):
    """WIT, CC, Flickr8K, COCO, a Wikipedia dump, its titles file and the translation memory,
    each starting with EF BB BF. Before: WIT stopped the run (`missing column(s) language`)."""
    wit = [wit_row(1, caption_reference_description="قلعة حلب عند الغروب")]
    (tmp_path / "shard.tsv.gz").write_bytes(gzip.compress(BOM + wit_bytes(wit)))
    (tmp_path / "cc.tsv").write_bytes(
        BOM + b"a dog runs on the beach .\thttp://img.example/1.jpg\n"
    )
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "1.jpg").touch()
    (tmp_path / "token.txt").write_bytes(BOM + b"1.jpg#0\tA boy jumps into a lake .\n")
    coco = {
        "images": [{"id": 7, "file_name": "COCO_train2014_000000000007.jpg"}],
        "annotations": [{"id": 1, "image_id": 7, "caption": "A cat sleeps on a sofa."}],
    }
    (tmp_path / "captions_train2014.json").write_bytes(BOM + json.dumps(coco).encode())
    figure = (
        '<figure typeof="mw:File/Thumb"><a href="./ملف:{0}.jpg" class="mw-file-description">'
        '<img src="//upload.wikimedia.org/wikipedia/commons/thumb/a/ab/{0}.jpg/250px-{0}.jpg"'
        ' width="250" height="180" class="mw-file-element"/></a>'
        "<figcaption>{1}</figcaption></figure>"
    )
    lines = [
        json.dumps(
            {
                "name": title,
                "namespace": {"identifier": 0},
                "article_body": {"html": f"<section>{figure.format(name, caption)}</section>"},
            }
        ).encode()
        for title, name, caption in (
            ("نهر النيل", "Nile", "نهر النيل عند القاهرة"),
            ("فاس", "Fez", "المدينة القديمة في فاس"),
        )
    ]
    (tmp_path / "dump.ndjson").write_bytes(BOM + b"\n".join(lines) + b"\n")
    (tmp_path / "titles.txt").write_bytes(BOM + "نهر النيل\n".encode())
    memory(
        tmp_path,
        {
            "a dog runs on the beach .": "كلب يركض على الشاطئ .",
            "A cat sleeps on a sofa.": "قطة تنام على أريكة.",
            "A boy jumps into a lake .": "صبي يقفز في بحيرة .",
        },
        prefix=BOM,
    )
    body = (
        "sources:\n"
        "  - kind: wit\n    paths: [shard.tsv.gz]\n"
        "  - kind: conceptual_captions\n    paths: [cc.tsv]\n"
        "  - kind: coco\n    paths: [captions_train2014.json]\n"
        "  - kind: flickr8k\n    captions: token.txt\n    images: images\n"
        "  - kind: wikipedia\n    dump: [dump.ndjson]\n    titles_file: titles.txt\n"
        "translation:\n  memory: memory.tsv\n" + LOOSE + OFFLINE
    )
    status, stats, rows, err = run(tmp_path, body, capsys)
    assert status == 0, err
    assert stats["sources"] == {
        name: {"read": 1, "kept": 1, "dropped": {}}
        for name in ("wit", "conceptual_captions", "coco", "flickr8k", "wikipedia")
    }
    assert {r["source"]: (r["source_key"], r["caption_ar"]) for r in rows} == {
        "wit": (
            "https://ar.wikipedia.org/wiki/%D8%B5%D9%81%D8%AD%D8%A9_1\t"
            "https://upload.wikimedia.org/wikipedia/commons/a/ab/Image_1.jpg",
            "قلعة حلب عند الغروب",
        ),
        "conceptual_captions": ("http://img.example/1.jpg", "كلب يركض على الشاطئ ."),
        "coco": ("7:1", "قطة تنام على أريكة."),
        "flickr8k": ("1.jpg#0", "صبي يقفز في بحيرة ."),
        "wikipedia": ("نهر النيل\x1fNile.jpg", "نهر النيل عند القاهرة"),
    }


# ---------------------------------------------------------------------------- truncated .gz


def _wit(n: int) -> bytes:
    return wit_bytes([wit_row(i, caption_reference_description="نص") for i in range(n)])


def _cc(n: int) -> bytes:
    # Captions that differ, so that a large file is large compressed too.
    return b"".join(
        b"a dog %x runs on the beach .\thttp://img.example/%d.jpg\n" % (i * i, i) for i in range(n)
    )


def _flickr(n: int) -> bytes:
    return b"".join(b"1.jpg#%d\tA boy jumps into lake %x .\n" % (i, i * i) for i in range(n))


SOURCES = {
    "wit": (_wit, "  - kind: wit\n    paths: [{file}]\n"),
    "conceptual_captions": (_cc, "  - kind: conceptual_captions\n    paths: [{file}]\n"),
    "flickr8k": (_flickr, "  - kind: flickr8k\n    captions: {file}\n    images: images\n"),
}


@pytest.mark.parametrize("kind", sorted(SOURCES))
@pytest.mark.parametrize("rows", [3, 50_000])
def test_a_truncated_gz_fails_the_run_naming_file_and_line(tmp_path, capsys, kind, rows):
    """A small `.gz` cut short failed without naming the file; a large one named FILE:LINE.
    Both stop the run with one line naming FILE:LINE, and write no stats."""
    make, entry = SOURCES[kind]
    text = make(rows)
    data = gzip.compress(text)
    path = tmp_path / f"cut-{kind}.gz"
    path.write_bytes(data[: len(data) // 2])
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "1.jpg").touch()
    memory(tmp_path, {"a dog runs on the beach .": "كلب يركض على الشاطئ ."})
    body = (
        "sources:\n"
        + entry.format(file=path.name)
        + "translation:\n  memory: memory.tsv\n"
        + OFFLINE
    )
    status, stats, _, err = run(tmp_path, body, capsys)
    assert status == 1 and stats is None
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: the run failed: "), last
    match = re.search(re.escape(str(path)) + r":(\d+): cannot read the (?:file|shard) past", last)
    assert match, last
    # The line named is near the cut: about half of the file's lines were read first.
    lines = text.count(b"\n")
    assert lines // 4 <= int(match.group(1)) <= lines, last


def test_a_lone_surrogate_outside_the_captions_is_a_drop_not_a_dead_run(tmp_path, capsys):
    """A `\\ud800` escape in a COCO image's file name and URL: no shard can store it."""
    coco = {
        "images": [
            {"id": 1, "file_name": "COCO_train2014_1.jpg"},
            {"id": 2, "file_name": "COCO_\ud800.jpg", "coco_url": "http://x/\ud800.jpg"},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "caption": "a cat sleeping on a sofa"},
            {"id": 2, "image_id": 2, "caption": "a dog sleeping on a sofa"},
        ],
    }
    (tmp_path / "captions_train2014.json").write_text(json.dumps(coco), encoding="utf-8")
    entries = {"a cat sleeping on a sofa": "قطة تنام على أريكة", "a dog sleeping on a sofa": "كلب"}
    body = (
        "sources:\n  - kind: coco\n    paths: [captions_train2014.json]\n"
        f"translation:\n  memory: {memory(tmp_path, entries)}\n" + LOOSE + OFFLINE
    )
    status, stats, rows, _ = run(tmp_path, body, capsys)
    assert status == 0
    assert stats["sources"]["coco"] == {"read": 2, "kept": 1, "dropped": {"invalid_utf8": 1}}
    assert [r["caption_ar"] for r in rows] == ["قطة تنام على أريكة"]
