"""`python -m pipeline run` for real: WIT shards in, a Hugging Face dataset folder out."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest
from wit_files import wit_row, write_wit

from pipeline.__main__ import main
from pipeline.reasons import meaning
from pipeline.records import pair_id
from pipeline.timings import comparable

REPO = Path(__file__).resolve().parents[2]

ROWS = [
    wit_row(1, caption_reference_description="قلعة حلب عند الغروب", is_main_image="true"),
    wit_row(2, caption_reference_description="مسجد\u00a0محمد علي\u200f في القاهرة"),
    wit_row(3, caption_attribution_description="English: Wadi Rum. العربية: وادي رم في الأردن"),
    wit_row(4, caption_alt_text_description="صقر حر على غصن"),
    wit_row(5, language="fa", caption_reference_description="برج میلاد در تهران"),
    wit_row(6, language="ur", caption_reference_description="بادشاہی مسجد لاہور"),
    wit_row(7),  # no caption at all
    wit_row(8, caption_attribution_description="IMG_4471.JPG"),
    wit_row(9, caption_reference_description="Sunset over the Nile, 2009"),
    wit_row(10, caption_reference_description="خريطة", mime_type="image/svg+xml"),
    # Arabic script, written in Persian on an Arabic page: language ID catches it.
    wit_row(11, caption_reference_description="یک گربه کوچک روی میز آشپزخانه نشسته است"),
    wit_row(12, caption_reference_description="قط"),  # too short
]
KEPT = {
    "قلعة حلب عند الغروب",
    "مسجد محمد علي في القاهرة",
    "وادي رم في الأردن",
    "صقر حر على غصن",
}
DROPPED = {
    "other_language": 2,
    "empty_caption": 1,
    "filename_caption": 1,
    "no_arabic_letters": 1,
    "unsupported_mime": 1,
    "not_arabic": 1,
    "too_short": 1,
}


def write_manifest(folder: Path, body: str) -> Path:
    path = folder / "manifest.yaml"
    path.write_text(body, encoding="utf-8")
    return path


def build(manifest: Path, out: Path, *beam_args: str) -> dict:
    assert main(["run", str(manifest), "--output", str(out), *beam_args]) == 0
    return json.loads((out / "stats.json").read_text(encoding="utf-8"))


@pytest.fixture
def wit_manifest(tmp_path) -> Path:
    write_wit(tmp_path / "in" / "wit_v1.train.all-00000-of-00002.tsv.gz", ROWS[:6])
    write_wit(tmp_path / "in" / "wit_v1.train.all-00001-of-00002.tsv", ROWS[6:])
    return write_manifest(
        tmp_path / "in",
        "name: e2e\nsources:\n  - kind: wit\n    paths: [wit_v1.train.all-*]\n"
        "images:\n  fetch: false\noutput:\n  rows_per_shard: 2\n",
    )


def test_build_keeps_exactly_the_arabic_rows_and_accounts_for_the_rest(wit_manifest, tmp_path):
    out = tmp_path / "out"
    stats = build(wit_manifest, out)

    assert comparable(stats) == {
        "sources": {"wit": {"read": 12, "kept": 4, "dropped": dict(sorted(DROPPED.items()))}},
        "kept": 4,
        "duplicates_removed": 0,
    }
    table = pq.read_table(out / "data")
    rows = table.to_pylist()
    assert {r["caption_ar"] for r in rows} == KEPT
    for r in rows:
        assert r["id"] == pair_id("wit", r["source_key"], r["caption_ar"])
        assert r["source"] == "wit" and r["caption_origin"] == "genuine"
        assert r["caption_en"] is None and r["translation_score"] is None
        assert r["clip_score"] is None and r["translation_similarity"] is None  # scoring off
        assert r["langid_score"] > 0.5
        assert r["image_url"].startswith("https://upload.wikimedia.org/")
        assert r["page_url"].startswith("https://ar.wikipedia.org/wiki/")
    by_caption = {r["caption_ar"]: r for r in rows}
    assert by_caption["قلعة حلب عند الغروب"]["is_main_image"] is True
    assert by_caption["وادي رم في الأردن"]["caption_field"] == "attribution"
    assert by_caption["صقر حر على غصن"]["caption_field"] == "alt_text"

    # 4 rows at 2 per shard: 2 shards, a complete set, rows sorted by id inside each.
    shards = sorted(p.name for p in (out / "data").iterdir())
    assert shards == ["train-00000-of-00002.parquet", "train-00001-of-00002.parquet"]
    for shard in shards:
        ids = pq.read_table(out / "data" / shard).column("id").to_pylist()
        assert ids == sorted(ids)


def test_the_output_loads_with_datasets_both_ways(wit_manifest, tmp_path):
    out = tmp_path / "out"
    build(wit_manifest, out)
    by_folder = datasets.load_dataset(str(out), split="train")
    by_files = datasets.load_dataset(
        "parquet", data_files=str(out / "data" / "*.parquet"), split="train"
    )
    for ds in (by_folder, by_files):
        assert len(ds) == 4
        assert isinstance(ds.features["image"], datasets.Image)
        assert ds.features["width"] == datasets.Value("int32")
        assert ds.features["langid_score"] == datasets.Value("float32")
        assert ds.features["clip_score"] == datasets.Value("float32")
        assert ds.features["translation_similarity"] == datasets.Value("float32")
        assert set(ds["caption_ar"]) == KEPT
    card = (out / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\n") and "Total kept: 4;" in card
    assert "| wit | 12 | 4 |" in card


def test_two_builds_in_folders_of_one_name_load_their_own_rows(wit_manifest, tmp_path):
    """`datasets` caches a folder under a hash of its card: the card must differ with the data."""
    build(wit_manifest, tmp_path / "a" / "out")
    write_wit(tmp_path / "one.tsv", ROWS[:1])
    other = write_manifest(
        tmp_path, "sources:\n  - kind: wit\n    paths: [one.tsv]\nimages: {fetch: false}\n"
    )
    build(other, tmp_path / "b" / "out")
    assert len(datasets.load_dataset(str(tmp_path / "a" / "out"), split="train")) == 4
    assert len(datasets.load_dataset(str(tmp_path / "b" / "out"), split="train")) == 1


def test_ids_and_files_are_stable_across_runs(wit_manifest, tmp_path):
    first = tmp_path / "first"
    second = tmp_path / "second"
    build(wit_manifest, first)
    build(wit_manifest, second, "--direct_num_workers", "2")
    for shard in sorted((first / "data").iterdir()):
        assert pq.read_table(shard).equals(pq.read_table(second / "data" / shard.name))


def test_a_rerun_replaces_the_shards_of_an_earlier_run(wit_manifest, tmp_path):
    out = tmp_path / "out"
    (out / "data").mkdir(parents=True)
    stale = out / "data" / "train-00000-of-00009.parquet"
    shutil.copy(REPO / "pyproject.toml", stale)
    build(wit_manifest, out)
    assert not stale.exists()
    assert len(datasets.load_dataset(str(out), split="train")) == 4


def test_an_output_that_kept_nothing_is_complete_and_says_so(tmp_path, capsys):
    write_wit(tmp_path / "fa.tsv", [ROWS[4], ROWS[5]])
    manifest = write_manifest(
        tmp_path, "sources:\n  - kind: wit\n    paths: [fa.tsv]\nimages: {fetch: false}\n"
    )
    out = tmp_path / "out"
    stats = build(manifest, out)
    assert stats["sources"]["wit"] == {"read": 2, "kept": 0, "dropped": {"other_language": 2}}
    assert [p.name for p in (out / "data").iterdir()] == ["train-00000-of-00001.parquet"]
    # `datasets` refuses any zero-row dataset; pyarrow reads the empty shard with every column.
    table = pq.read_table(out / "data")
    assert table.num_rows == 0 and "caption_ar" in table.column_names
    assert "warning: no pair was kept" in capsys.readouterr().err


def test_two_sources_of_one_kind_are_counted_apart(tmp_path):
    write_wit(tmp_path / "a.tsv", ROWS[:3])
    write_wit(tmp_path / "b.tsv", ROWS[3:6])
    manifest = write_manifest(
        tmp_path,
        "sources:\n  - kind: wit\n    paths: [a.tsv]\n  - kind: wit\n    paths: [b.tsv]\n"
        "images: {fetch: false}\n",
    )
    stats = build(manifest, tmp_path / "out")
    assert stats["sources"] == {
        "wit": {"read": 3, "kept": 3, "dropped": {}},
        "wit#2": {"read": 3, "kept": 1, "dropped": {"other_language": 2}},
    }
    names = pq.read_table(tmp_path / "out" / "data").column("source_name").to_pylist()
    assert sorted(names) == ["wit", "wit", "wit", "wit#2"]


def test_real_wit_excerpt_relabelled_arabic(shared_samples, tmp_path):
    """The real dummy shard (multi-line quoted fields) through the whole pipeline."""
    text = (shared_samples / "hf_wit_dummy.tsv").read_text(encoding="utf-8")
    (tmp_path / "wit.tsv").write_text(text.replace("\nfr\t", "\nar\t"), encoding="utf-8")
    manifest = write_manifest(
        tmp_path, "sources:\n  - kind: wit\n    paths: [wit.tsv]\nimages: {fetch: false}\n"
    )
    stats = build(manifest, tmp_path / "out")
    # The relabelled French caption is not Arabic; the Dutch row stays another language.
    assert stats["sources"]["wit"] == {
        "read": 2,
        "kept": 0,
        "dropped": {"no_arabic_letters": 1, "other_language": 1},
    }


def test_the_demo_builds_as_the_readme_says(tmp_path, capsys):
    from standins.demo import main as demo_main

    out = tmp_path / "demo"
    assert demo_main(["--output", str(out), "--models", str(tmp_path / "models")]) == 0
    printed = capsys.readouterr().out
    stats = json.loads((out / "stats.json").read_text(encoding="utf-8"))
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for name, s in stats["sources"].items():
        assert s["read"] == s["kept"] + sum(s["dropped"].values())
        drops = ", ".join(f"{r}={n}" for r, n in s["dropped"].items())
        line = f"{name}: read {s['read']}, kept {s['kept']}, dropped: {drops}"
        assert line in printed
        assert line in readme, f"README's demo output is stale: {line}"
    assert list(stats["sources"]) == ["wikipedia", "wit", "conceptual_captions", "coco", "flickr8k"]
    rows = pq.read_table(out / "data").to_pylist()
    # The crawl of the local MediaWiki stand-in: licensed genuine pairs at their real addresses.
    wiki = [r for r in rows if r["source"] == "wikipedia"]
    assert len(wiki) == stats["sources"]["wikipedia"]["kept"] > 0
    for r in wiki:
        assert r["caption_origin"] == "genuine" and r["license"] and r["attribution"]
        assert r["page_url"].startswith("https://ar.wikipedia.org/wiki/")
        assert r["image"]["bytes"] and r["image_url"].startswith("https://upload.wikimedia.org/")
    translated = [r for r in rows if r["caption_origin"] == "translated"]
    assert translated and all(r["caption_en"] and r["caption_ar"] for r in translated)
    # The three captions that miss the memory went through the tiny model and were dropped by
    # the translation quality filters, one in each English source.
    quality = {
        "empty_translation",
        "untranslated",
        "repetition_loop",
        "length_ratio",
        "low_translation_score",
    }
    for name in ("conceptual_captions", "coco", "flickr8k"):
        dropped = stats["sources"][name]["dropped"]
        assert sum(n for reason, n in dropped.items() if reason in quality) == 1, dropped
    check_timings(stats)


def check_timings(stats: dict) -> None:
    """Every stage is timed, in graph order, and saw the records the one before it let through
    (what was read, less the drops of each stage on the way)."""
    timings = stats["timings"]
    sources = stats["sources"]
    stages = ["read", "translate", "clean", "langid", "images", "dedupe", "write"]
    assert list(timings) == [stages[0], *(f"read[{n}]" for n in sources), *stages[1:]]
    for name, s in sources.items():
        assert timings[f"read[{name}]"]["records"] == s["read"]
    dropped_by = dict.fromkeys(stages, 0)
    for name, s in sources.items():
        for reason, n in s["dropped"].items():
            stage = meaning(reason, name)[0]
            dropped_by["read" if stage == name else stage] += n
    seen = sum(s["read"] for s in sources.values())
    for stage in stages[:-1]:
        assert timings[stage]["records"] == seen, stage
        seen -= dropped_by[stage]
    assert timings["write"]["records"] == seen == stats["kept"]
    for t in timings.values():
        assert t["seconds"] >= 0 and t["records_per_s"] >= 0


def test_the_command_line_in_a_subprocess(wit_manifest, tmp_path):
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "run", str(wit_manifest), "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert f"output: {out}" in done.stdout
    assert "wit: read 12, kept 4" in done.stdout
    assert (out / "stats.json").is_file()


def test_a_truncated_shard_fails_the_run_naming_the_file(tmp_path, capsys):
    path = write_wit(
        tmp_path / "cut.tsv.gz",
        [wit_row(i, caption_reference_description="نص") for i in range(400)],
    )
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    manifest = write_manifest(
        tmp_path, "sources:\n  - kind: wit\n    paths: [cut.tsv.gz]\nimages: {fetch: false}\n"
    )
    assert main(["run", str(manifest), "--output", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: the run failed: ")
    assert f"{path}:" in err and "cannot read the shard past this line" in err
    assert not (tmp_path / "out" / "stats.json").exists()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    from standins.tiny_model import build_tiny_model

    return build_tiny_model(str(tmp_path_factory.mktemp("models") / "tiny"), layout="opus")


def test_translated_sources_flow_through_and_a_rerun_translates_nothing(tmp_path, tiny_model):
    (tmp_path / "cc.tsv").write_text(
        "a dog runs on the beach .\thttp://img.example/1.jpg\n"
        "person walks in the city .\thttp://img.example/2.jpg\n"
        "a dog runs on the beach .\thttp://img.example/3.jpg\n"
        '"quoted" caption of a cat\thttp://img.example/4.jpg\n',
        encoding="utf-8",
    )
    # Thresholds the tiny random model's output can pass, so rows reach the output.
    body = (
        "sources:\n  - kind: conceptual_captions\n    paths: [cc.tsv]\n"
        f"translation:\n  model: {tiny_model}\n  intra_threads: 1\n  min_score: -100\n"
        "  min_length_ratio: 0\n  max_length_ratio: 1000\n  max_latin_share: 1\n"
        "  max_ngram_repeats: 1000\n{memory}"
        "filters:\n  langid_labels: [ar, arz, fa, ur, ps, ckb, ug, sd, ku, azb, mzn, pnb]\n"
        "  langid_min_score: 0\n  min_words: 1\n  min_chars: 1\n"
        "images: {{fetch: false}}\n"
    )
    first = tmp_path / "first"
    write_manifest(tmp_path, body.format(memory=""))
    stats1 = build(tmp_path / "manifest.yaml", first)
    made = pq.read_table(first / "translations")
    assert sorted(made.column("en").to_pylist()) == [
        '"quoted" caption of a cat',
        "a dog runs on the beach .",
        "person walks in the city .",
    ]  # three distinct captions: the repeated one was translated once

    second = tmp_path / "second"
    write_manifest(tmp_path, body.format(memory=f"  memory: {first / 'translations'}\n"))
    stats2 = build(tmp_path / "manifest.yaml", second)
    assert pq.read_table(second / "translations").num_rows == 0  # nothing translated twice
    assert comparable(stats2) == comparable(stats1)
    rows1 = pq.read_table(first / "data").to_pylist()
    rows2 = pq.read_table(second / "data").to_pylist()
    assert [(r["id"], r["caption_ar"]) for r in rows1] == [
        (r["id"], r["caption_ar"]) for r in rows2
    ]
    cc = stats1["sources"]["conceptual_captions"]
    assert rows1, stats1
    assert cc["read"] == 4 and cc["read"] == cc["kept"] + sum(cc["dropped"].values())
    for r in rows1:
        assert r["caption_origin"] == "translated" and r["source"] == "conceptual_captions"
        assert r["caption_en"] and r["caption_ar"] and r["translation_score"] <= 0
