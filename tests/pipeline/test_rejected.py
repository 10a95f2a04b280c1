"""`output.rejected`: the dropped records as rows of `DIR/rejected/`, through `python -m pipeline
run` as a user runs it, and the pieces on their own (selection, commit, manifest, report)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import apache_beam as beam
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from cli_runs import memory
from url_filesystem import UrlFileSystem
from wit_files import wit_row, write_wit

from pipeline import rejected
from pipeline.__main__ import main
from pipeline.manifest import ManifestError, parse_manifest
from pipeline.output import output_problem
from pipeline.records import GENUINE, Drop, Pair
from pipeline.report import build_report, rejected_examples
from pipeline.sources.wit import REASONS as WIT_REASONS
from pipeline.steps import Reasons
from pipeline.write import _commit_by_file, commit

ARABIC = [
    "جمل عربي وحيد السنام في صحراء الربع الخالي",
    "مبنى مكتبة الإسكندرية الجديدة على شاطئ البحر",
    "قلعة صلاح الدين الأيوبي في مدينة القاهرة القديمة",
]
PERSIAN = [
    "گربه روی مبل نشسته است",
    "برج میلاد در شهر تهران، پایتخت ایران",
    "یک دختر کوچک در پارک بازی می‌کند",
    "کتابخانه ملی ایران در شهر تهران",
]
FILTERS = "filters: {langid_min_score: 0.3}\nimages: {fetch: false}\n"
COLUMNS = [
    "id",
    "source",
    "source_name",
    "stage",
    "reason",
    "detail",
    "count",
    "caption_ar",
    "caption_en",
    "image_url",
    "input_file",
    "input_line",
]


def build(folder: Path, body: str, name: str = "out") -> Path:
    """A run of the manifest `body` (written into `folder`) into `folder/name`; must succeed."""
    manifest = folder / "manifest.yaml"
    manifest.write_text(body, encoding="utf-8")
    out = folder / name
    assert main(["run", str(manifest), "--output", str(out)]) == 0
    return out


def stats_of(out: Path) -> dict:
    return json.loads((out / "stats.json").read_text("utf-8"))


def rejected_shards(out: Path) -> list[str]:
    return sorted(p.name for p in (out / "rejected").iterdir() if rejected.is_shard(p.name))


def rejected_rows(out: Path) -> list[dict]:
    """The rows of the rejected shards, shard by shard (a user's file beside them is not)."""
    return [
        row
        for name in rejected_shards(out)
        for row in pq.read_table(out / "rejected" / name).to_pylist()
    ]


def wit_rows() -> list[dict]:
    rows = [wit_row(n, caption_reference_description=c) for n, c in enumerate(ARABIC)]
    # The same image and caption as row 0, from another page: one of the two is a duplicate.
    rows.append(wit_row(3, image_url=rows[0]["image_url"], caption_reference_description=ARABIC[0]))
    rows += [wit_row(4 + i, caption_reference_description=c) for i, c in enumerate(PERSIAN[:2])]
    rows.append(wit_row(6, caption_reference_description="The old city of Cairo at night"))
    rows += [wit_row(n, language="fr", caption_reference_description="Une vue") for n in (7, 8)]
    rows.append(wit_row(9, language="de", caption_reference_description="Eine Ansicht"))
    rows.append(wit_row(10, caption_reference_description=""))
    rows.append(wit_row(11, caption_reference_description=ARABIC[1], mime_type="image/svg+xml"))
    return rows


@pytest.fixture(scope="module")
def full_run(tmp_path_factory) -> Path:
    """WIT (drops of the reader, clean, langid and dedupe) and CC through a translation memory
    (the reader's and the translate stage's), with `rejected: true`."""
    folder = tmp_path_factory.mktemp("full")
    write_wit(folder / "wit.tsv", wit_rows())
    (folder / "cc.tsv").write_text(
        "A camel in the desert\thttp://img.example/camel.jpg\n"
        "A dog in the park\thttp://img.example/dog.jpg\n"
        "\thttp://img.example/empty.jpg\n"
        "A bird on a branch\tnot-a-url\n"
        "A red car on the street\thttp://img.example/car.jpg\n",
        encoding="utf-8",
    )
    # The car's "translation" is the English again: dropped as untranslated.
    memory(
        folder,
        {
            "A camel in the desert": ARABIC[0] + " الكبرى",
            "A red car on the street": "A red car on the street",
        },
    )
    return build(
        folder,
        "sources:\n  - kind: wit\n    paths: [wit.tsv]\n"
        "  - kind: conceptual_captions\n    paths: [cc.tsv]\n"
        "translation: {memory: memory.tsv}\n" + FILTERS + "output: {rejected: true}\n",
    )


def test_one_row_per_drop_and_the_totals_are_those_of_stats(full_run):
    stats = stats_of(full_run)
    rows = rejected_rows(full_run)
    assert pq.read_schema(next((full_run / "rejected").iterdir())).names == COLUMNS
    totals = Counter()
    for row in rows:
        totals[row["source_name"], row["reason"]] += row["count"]
    expected = {
        (name, reason): n
        for name, s in stats["sources"].items()
        for reason, n in s["dropped"].items()
    }
    assert dict(totals) == expected
    assert expected == {
        ("wit", "duplicate"): 1,
        ("wit", "not_arabic"): 2,
        ("wit", "no_arabic_letters"): 1,
        ("wit", "other_language"): 3,
        ("wit", "empty_caption"): 1,
        ("wit", "unsupported_mime"): 1,
        ("conceptual_captions", "no_translation"): 1,
        ("conceptual_captions", "untranslated"): 1,
        ("conceptual_captions", "empty_caption"): 1,
        ("conceptual_captions", "no_image_url"): 1,
    }
    stages = {(r["source_name"], r["reason"]): r["stage"] for r in rows}
    assert stages == {
        ("wit", "duplicate"): "dedupe",
        ("wit", "not_arabic"): "langid",
        ("wit", "no_arabic_letters"): "clean",
        ("wit", "other_language"): "wit",
        ("wit", "empty_caption"): "wit",
        ("wit", "unsupported_mime"): "wit",
        ("conceptual_captions", "no_translation"): "translate",
        ("conceptual_captions", "untranslated"): "translate",
        ("conceptual_captions", "empty_caption"): "conceptual_captions",
        ("conceptual_captions", "no_image_url"): "conceptual_captions",
    }
    # One row per dropped record: WIT's rows of other languages, which a run without rejected
    # rows counts per language, are each a row with its line and URL.
    assert len(rows) == sum(expected.values()) and {r["count"] for r in rows} == {1}
    other = sorted(
        (r["detail"], r["id"], r["input_line"] is not None, r["image_url"].startswith("http"))
        for r in rows
        if r["reason"] == "other_language"
    )
    assert other == [("de", None, True, True), ("fr", None, True, True)] + [
        ("fr", None, True, True)
    ]
    assert len({r["input_line"] for r in rows if r["reason"] == "other_language"}) == 3


def test_rows_carry_the_pair_its_captions_and_image(full_run):
    rows = rejected_rows(full_run)
    kept = {r["id"]: r for r in pq.read_table(full_run / "data").to_pylist()}
    langid = sorted((r for r in rows if r["reason"] == "not_arabic"), key=lambda r: r["input_line"])
    assert [r["caption_ar"] for r in langid] == PERSIAN[:2]
    assert [r["image_url"] for r in langid] == [wit_row(n)["image_url"] for n in (4, 5)]
    assert all(len(r["id"]) == 32 and r["source"] == "wit" for r in langid)
    assert all(r["input_file"].endswith("wit.tsv") and r["input_line"] > 1 for r in langid)

    [duplicate] = [r for r in rows if r["reason"] == "duplicate"]
    survivor = kept[duplicate["detail"]]  # the detail names the pair it duplicated
    assert duplicate["id"] not in kept and duplicate["id"] != survivor["id"]
    assert duplicate["caption_ar"] == survivor["caption_ar"] == ARABIC[0]
    assert duplicate["image_url"] == survivor["image_url"] == wit_row(0)["image_url"]

    [untranslated] = [r for r in rows if r["reason"] == "no_translation"]
    assert untranslated["caption_en"] == "A dog in the park"
    assert untranslated["caption_ar"] is None and untranslated["id"]
    assert untranslated["image_url"] == "http://img.example/dog.jpg"
    assert untranslated["source"] == "conceptual_captions"
    by_reason = {(r["source_name"], r["reason"]): r for r in rows}
    # A translation that failed its checks is the row's caption_ar.
    untranslated = by_reason["conceptual_captions", "untranslated"]
    assert untranslated["caption_ar"] == untranslated["caption_en"] == "A red car on the street"
    cc_empty = by_reason["conceptual_captions", "empty_caption"]
    assert (cc_empty["id"], cc_empty["image_url"], cc_empty["input_line"]) == (
        None,
        "http://img.example/empty.jpg",
        3,
    )
    assert by_reason["conceptual_captions", "no_image_url"]["caption_en"] == "A bird on a branch"
    mime = by_reason["wit", "unsupported_mime"]
    assert (mime["detail"], mime["image_url"]) == ("image/svg+xml", wit_row(11)["image_url"])


def test_datasets_loads_the_kept_pairs_by_default_and_the_rejected_as_a_config(full_run):
    import datasets

    card = (full_run / "README.md").read_text("utf-8")
    assert "config_name: rejected" in card
    kept = datasets.load_dataset(str(full_run), split="train")
    assert sorted(kept["id"]) == sorted(
        r["id"] for r in pq.read_table(full_run / "data").to_pylist()
    )
    assert "reason" not in kept.column_names and len(kept) == stats_of(full_run)["kept"]
    dropped = datasets.load_dataset(str(full_run), "rejected", split="train")
    assert dropped.column_names == COLUMNS
    assert sum(dropped["count"]) == sum(
        sum(s["dropped"].values()) for s in stats_of(full_run)["sources"].values()
    )


def test_the_report_shows_rejected_examples_of_each_reason(full_run):
    page = Path(build_report(str(full_run))).read_text("utf-8")
    assert "<h3>Rejected records</h3>" in page
    reasons = ("not_arabic", "duplicate", "other_language", "no_translation", "no_image_url")
    shown = {reason: page.count(f'data-reason="{reason}"') for reason in reasons}
    assert shown == {
        "not_arabic": 2,
        "duplicate": 1,
        "other_language": 3,  # up to 3 examples a reason
        "no_translation": 1,
        "no_image_url": 1,
    }
    assert PERSIAN[0] in page and "A dog in the park" in page


# ---------------------------------------------------------------------------- rejected: N


def capped_manifest(folder: Path, limit: int | bool) -> str:
    rows = [wit_row(n, caption_reference_description=c) for n, c in enumerate(PERSIAN)]
    rows += [wit_row(10 + n, caption_reference_description="") for n in range(3)]
    rows += [wit_row(20 + n, language="fr") for n in range(2)] + [wit_row(30, language="de")]
    rows.append(wit_row(40, caption_reference_description=ARABIC[0]))
    write_wit(folder / "wit.tsv", rows)
    return (
        "sources:\n  - kind: wit\n    paths: [wit.tsv]\n"
        + FILTERS
        + f"output: {{rejected: {json.dumps(limit)}}}\n"
    )


def test_n_rows_per_reason_per_source_the_same_on_every_run(tmp_path):
    every = rejected_rows(build(tmp_path, capped_manifest(tmp_path, True), "all"))
    body = capped_manifest(tmp_path, 2)
    first, second = build(tmp_path, body, "a"), build(tmp_path, body, "b")
    rows = rejected_rows(first)
    assert Counter(r["reason"] for r in rows) == {
        "not_arabic": 2,
        "empty_caption": 2,
        "other_language": 2,
    }
    assert stats_of(first)["sources"]["wit"]["dropped"] == {
        "empty_caption": 3,
        "not_arabic": 4,
        "other_language": 3,
    }

    # The first by file and line for a reader's drops, by id for pairs.
    def first_of(rows: list[dict], reason: str, column: str) -> list:
        return sorted(r[column] for r in rows if r["reason"] == reason)

    assert len(first_of(every, "empty_caption", "input_line")) == 3
    assert (
        first_of(rows, "empty_caption", "input_line")
        == first_of(every, "empty_caption", "input_line")[:2]
    )
    assert len(first_of(every, "not_arabic", "id")) == 4
    assert first_of(rows, "not_arabic", "id") == first_of(every, "not_arabic", "id")[:2]
    assert (
        first_of(rows, "other_language", "input_line")
        == first_of(every, "other_language", "input_line")[:2]
    )
    assert rows == rejected_rows(second)
    for name in rejected_shards(first):
        assert (first / "rejected" / name).read_bytes() == (second / "rejected" / name).read_bytes()


def test_a_rerun_replaces_the_rejected_shards_and_leaves_the_users_files(tmp_path):
    out = build(tmp_path, capped_manifest(tmp_path, True))
    # Every drop: 4 not_arabic, 3 empty_caption, 3 other_language.
    assert len(rejected_rows(out)) == 10
    (out / "rejected" / "mine.csv").write_text("my notes", encoding="utf-8")
    assert output_problem(str(out)) is None
    build(tmp_path, capped_manifest(tmp_path, 1))
    assert len(rejected_rows(out)) == 3 and rejected_shards(out) == [
        "rejected-00000-of-00001.parquet"
    ]
    build(tmp_path, capped_manifest(tmp_path, False))
    assert sorted(p.name for p in (out / "rejected").iterdir()) == ["mine.csv"]
    assert (out / "rejected" / "mine.csv").read_text("utf-8") == "my notes"
    assert "config_name: rejected" not in (out / "README.md").read_text("utf-8")


def test_nothing_dropped_is_one_empty_shard_and_no_config(tmp_path):
    write_wit(
        tmp_path / "wit.tsv",
        [wit_row(n, caption_reference_description=c) for n, c in enumerate(ARABIC)],
    )
    out = build(
        tmp_path,
        "sources:\n  - kind: wit\n    paths: [wit.tsv]\n" + FILTERS + "output: {rejected: true}\n",
    )
    assert stats_of(out)["kept"] == 3
    assert rejected_shards(out) == ["rejected-00000-of-00001.parquet"]
    assert pq.read_schema(out / "rejected" / rejected_shards(out)[0]).names == COLUMNS
    assert rejected_rows(out) == []
    # `datasets` refuses a config of no rows: the card declares none.
    assert "config_name: rejected" not in (out / "README.md").read_text("utf-8")


def test_on_an_object_store_rejected_shards_are_moved_in_and_out(tmp_path, monkeypatch):
    monkeypatch.setattr(UrlFileSystem, "root", str(tmp_path / "bucket"))
    manifest = tmp_path / "manifest.yaml"
    folder = tmp_path / "bucket" / "out"
    manifest.write_text(capped_manifest(tmp_path, 2), encoding="utf-8")
    assert main(["run", str(manifest), "--output", "urltestfs://out"]) == 0
    assert len(rejected_rows(folder)) == 6
    (folder / "rejected" / "mine.csv").write_text("my notes", encoding="utf-8")
    manifest.write_text(capped_manifest(tmp_path, False), encoding="utf-8")
    assert main(["run", str(manifest), "--output", "urltestfs://out"]) == 0
    assert sorted(p.name for p in (folder / "rejected").iterdir()) == ["mine.csv"]
    assert not list(folder.glob(".incoming-*/**/*.parquet"))


# ---------------------------------------------------------------------------- the pieces


def drop(reason: str, pair_id: str | None, line: int | None = None, name: str = "wit") -> Drop:
    return Drop(name, reason, "f.tsv", line, pair_id=pair_id, stage="langid")


def test_select_keeps_the_first_n_per_source_and_reason():
    drops = [
        drop("not_arabic", "c"),
        drop("not_arabic", "a"),
        drop("not_arabic", "b"),
        drop("not_arabic", "a", name="wit#2"),
        drop("empty_caption", None, 9),
        drop("empty_caption", None, 3),
        drop("empty_caption", "0"),  # a pair's drop: after every reader drop of its reason
    ]
    expected = [drops[1], drops[2], drops[3], drops[5], drops[4]]
    with TestPipeline() as p:
        chosen = p | beam.Create(drops) | rejected.SelectRejected(2)
        assert_that(chosen, equal_to(expected))
    with TestPipeline() as p:
        every = p | beam.Create(drops) | rejected.SelectRejected(True)
        assert_that(every, equal_to(drops))
    with pytest.raises(ValueError):
        rejected.SelectRejected(0)


def test_a_stage_drop_carries_its_pair_and_a_reader_drop_gets_its_stage():
    pair = Pair(
        "id1",
        "wit",
        "wit#2",
        "k",
        "قطة",
        GENUINE,
        caption_en="a cat",
        image_url="https://x/a.jpg",
        input_file="f",
        input_line=4,
    )
    reasons = Reasons("langid", {"not_arabic": "not Arabic"})
    dropped = reasons.drop(pair, "not_arabic", "fa 0.9", count=False)
    assert dropped == Drop(
        "wit#2",
        "not_arabic",
        "f",
        4,
        "fa 0.9",
        1,
        "langid",
        "id1",
        "قطة",
        "a cat",
        "https://x/a.jpg",
    )
    assert rejected.to_row(dropped)["source"] == "wit"
    read = WIT_REASONS.checked(Drop("wit", "empty_caption", "f", 2))
    assert read.stage == "wit"
    assert WIT_REASONS.checked(read._replace(stage="other")).stage == "other"


@pytest.mark.parametrize("value", [0, -1, 2.5, "all", [1]])
def test_the_manifest_refuses_other_values(value):
    raw = {"sources": [{"kind": "wit", "paths": ["x.tsv"]}], "output": {"rejected": value}}
    with pytest.raises(ManifestError) as err:
        parse_manifest(raw, "/nowhere", check_paths=False)
    assert [p for p in err.value.problems if p.startswith("output.rejected:")]


@pytest.mark.parametrize("value", [True, False, 1, 500])
def test_the_manifest_takes_true_false_or_n(value):
    raw = {"sources": [{"kind": "wit", "paths": ["x.tsv"]}], "output": {"rejected": value}}
    assert parse_manifest(raw, "/nowhere", check_paths=False).output.rejected is value


def test_itemized_drops_is_the_pipelines_switch_not_a_manifest_key():
    raw = {"sources": [{"kind": "wit", "paths": ["x.tsv"], "itemized_drops": True}]}
    with pytest.raises(ManifestError) as err:
        parse_manifest(raw, "/nowhere", check_paths=False)
    assert [p for p in err.value.problems if p.startswith("sources[0].itemized_drops:")]


def staged(out: Path, run: str, rejected_names: list[str]) -> Path:
    staging = out / f".incoming-{run}"
    (staging / "data").mkdir(parents=True)
    (staging / "data" / "train-00000-of-00001.parquet").write_bytes(b"new")
    if rejected_names:
        (staging / "rejected").mkdir()
    for name in rejected_names:
        (staging / "rejected" / name).write_bytes(b"new " + name.encode())
    (staging / "stats.json").write_text("new")
    return staging


def old_output(out: Path, mine: bool) -> None:
    (out / "data").mkdir(parents=True)
    (out / "data" / "train-00000-of-00001.parquet").write_bytes(b"old")
    (out / "rejected").mkdir()
    for i in range(3):
        (out / "rejected" / f"rejected-{i:05d}-of-00003.parquet").write_bytes(b"old")
    if mine:
        (out / "rejected" / "rejected-mine.parquet").write_bytes(b"mine")


@pytest.mark.parametrize("by_file", [False, True], ids=["folder", "file_by_file"])
def test_commit_swaps_rejected_in_and_removes_stale_shards_only(tmp_path, by_file):
    do_commit = _commit_by_file if by_file else commit
    out = tmp_path / "out"
    old_output(out, mine=True)
    names = ["rejected-00000-of-00002.parquet", "rejected-00001-of-00002.parquet"]
    staging = staged(out, "a", names)
    for _ in range(2):  # the second: a retried bundle changes nothing
        do_commit(str(out), str(staging), ["train-00000-of-00001.parquet"], names)
        assert sorted(p.name for p in (out / "rejected").iterdir()) == [
            *names,
            "rejected-mine.parquet",
        ]
        assert (out / "rejected" / names[1]).read_bytes() == b"new " + names[1].encode()
    # A run without rejected rows: the earlier run's shards go, the user's file stays.
    do_commit(str(out), str(staged(out, "b", [])), ["train-00000-of-00001.parquet"])
    assert sorted(p.name for p in (out / "rejected").iterdir()) == ["rejected-mine.parquet"]


def test_a_rejected_folder_left_with_nothing_of_the_users_goes(tmp_path):
    out = tmp_path / "out"
    old_output(out, mine=False)
    commit(str(out), str(staged(out, "a", [])), ["train-00000-of-00001.parquet"])
    assert not (out / "rejected").exists() and (out / "data").is_dir()


def test_rejected_shards_are_ours_but_other_files_there_are_not(tmp_path):
    out = tmp_path / "out"
    (out / "rejected").mkdir(parents=True)
    (out / "rejected" / "rejected-00000-of-00001.parquet").write_bytes(b"left by a killed run")
    assert output_problem(str(out)) is None
    (out / "rejected" / "notes.txt").write_text("mine", encoding="utf-8")
    assert "rejected/notes.txt" in output_problem(str(out))


def test_report_examples_are_escaped():
    stats = {"sources": {"pairs": {"read": 2, "kept": 0, "dropped": {"not_arabic": 2}}}}
    hostile = {
        "id": "<b>id</b>",
        "source_name": "pairs",
        "stage": "langid",
        "reason": "not_arabic",
        "detail": '"><script>alert(1)</script>',
        "count": 1,
        "caption_ar": "<img src=x onerror=alert(1)>",
        "caption_en": "</p><iframe>",
        "image_url": "javascript:alert(1)",
        "input_file": "/in/<x>.tsv",
        "input_line": 2,
    }
    web = {**hostile, "image_url": 'https://h/a.jpg?"onmouseover=alert(1)'}
    page = rejected_examples(stats, {("pairs", "not_arabic"): [hostile, web]})
    for raw in ("<script>", "<img", "<iframe>", "</p><iframe", "<x>"):
        assert raw not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page and "&lt;/p&gt;&lt;iframe&gt;" in page
    assert 'href="javascript' not in page  # not a link: shown as text
    assert 'href="https://h/a.jpg?&quot;onmouseover=alert(1)"' in page
    assert page.count('data-reason="not_arabic"') == 2
    assert rejected_examples(stats, None) == ""
