"""The score filters and `stats.json`'s `scores` in runs of `python -m pipeline run`: genuine and
translated pairs with local pictures, scored by the tiny random CLIP, filtered by thresholds
taken from what an unfiltered run of the same inputs wrote."""

from __future__ import annotations

import json
import math
import shutil
import statistics
from pathlib import Path
from typing import NamedTuple

import pyarrow.parquet as pq
import pytest
from cli_runs import memory, output_rows
from image_samples import jpeg

from pipeline.__main__ import main
from pipeline.scoring.summary import BINS, summarize
from pipeline.timings import comparable

ARABIC = [
    "سوق الحميدية القديم في مدينة دمشق",
    "نهر النيل عند الغروب",
    "قلعة حلب فوق التل",
    "جامع الأزهر في القاهرة",
    "شاطئ البحر في الإسكندرية",
    "أشجار النخيل في الواحة",
]
TRANSLATIONS = {
    "A bird sitting on a branch": "طائر يجلس على غصن",
    "A small boat on a calm sea": "قارب صغير على بحر هادئ",
    "Two children playing football": "طفلان يلعبان كرة القدم",
    "A red car parked on the street": "سيارة حمراء متوقفة في الشارع",
    "A cat sleeping on a sofa": "قطة نائمة على أريكة",
    "A man reading a newspaper": "رجل يقرأ جريدة",
}
LANGID = "  langid_min_score: 0\n  langid_labels: [ar, arz, fa, ur]\n"


def manifest(filters: str = "", rest: str = "") -> str:
    return (
        "name: filtered\nsources:\n"
        "  - kind: pairs\n    paths: [ar.tsv]\n    language: ar\n    image_root: images\n"
        "  - kind: pairs\n    paths: [en.tsv]\n    language: en\n    image_root: images\n"
        "translation: {memory: memory.tsv}\n"
        "scoring:\n  model: models/clip\n  device: cpu\n  batch_size: 16\n"
        f"filters:\n{LANGID}{filters}{rest}"
    )


class Run(NamedTuple):
    stats: dict
    rows: list[dict]
    out: Path


def run(folder: Path, body: str, name: str, *beam_args: str) -> Run:
    path = folder / f"{name}.yaml"
    path.write_text(body, encoding="utf-8")
    out = folder / name
    assert main(["run", str(path), "--output", str(out), *beam_args]) == 0
    stats = json.loads((out / "stats.json").read_text("utf-8"))
    return Run(stats, output_rows(out), out)


@pytest.fixture(scope="module")
def folder(tmp_path_factory, siglip_model) -> Path:
    """Six genuine and six translated pairs, each with its own picture, the model beside."""
    root = tmp_path_factory.mktemp("filters")
    (root / "images").mkdir()
    lines = {"ar": "path\tcaption\n", "en": "path\tcaption\n"}
    for i, (language, caption) in enumerate(
        [("ar", c) for c in ARABIC] + [("en", c) for c in TRANSLATIONS]
    ):
        (root / "images" / f"{i}.jpg").write_bytes(jpeg(96, 64, seed=i))
        lines[language] += f"{i}.jpg\t{caption}\n"
    for language, text in lines.items():
        (root / f"{language}.tsv").write_text(text, encoding="utf-8")
    memory(root, TRANSLATIONS)
    shutil.copytree(siglip_model, root / "models" / "clip")
    return root


@pytest.fixture(scope="module")
def unfiltered(folder) -> Run:
    return run(folder, manifest(), "unfiltered")


def by_id(rows: list[dict]) -> dict[str, dict]:
    return {r["id"]: r for r in rows}


def assert_books_balance(stats: dict) -> None:
    for name, s in stats["sources"].items():
        assert s["read"] == s["kept"] + sum(s["dropped"].values()), name


def test_without_filters_every_scored_pair_is_in_the_scores_summaries(unfiltered):
    stats, rows = unfiltered.stats, unfiltered.rows
    assert stats["kept"] == 12 and len(rows) == 12
    assert list(stats["scores"]) == ["pairs", "pairs#2"]
    for name, summaries in stats["scores"].items():
        mine = [r for r in rows if r["source_name"] == name]
        assert list(summaries) == [
            "clip_score",
            "clip_score_mismatched",
            "translation_similarity",
            "translation_similarity_mismatched",
        ]
        for score in ("clip_score", "translation_similarity"):
            values = [r[score] for r in mine if r[score] is not None]
            # The summary of a score is that of the column the run wrote.
            assert summaries[score] == summarize(values)
            mismatched = summaries[f"{score}_mismatched"]
            assert mismatched["count"] <= len(values)
            for summary in (summaries[score], mismatched):
                histogram = summary["histogram"]
                assert (histogram["low"], histogram["high"]) == (-1.0, 1.0)
                assert len(histogram["counts"]) == BINS
                assert sum(histogram["counts"]) == summary["count"]
    assert stats["scores"]["pairs"]["clip_score"]["count"] == 6
    assert stats["scores"]["pairs"]["translation_similarity"]["count"] == 0
    assert stats["scores"]["pairs"]["translation_similarity"]["mean"] is None
    assert stats["scores"]["pairs#2"]["translation_similarity"]["count"] == 6
    # The sixteen-pair batches hold every pair: each has a partner of its own source.
    assert stats["scores"]["pairs#2"]["translation_similarity_mismatched"]["count"] == 6
    assert "score_filter" not in stats["timings"]


def test_min_thresholds_drop_exactly_the_pairs_below_them(folder, unfiltered):
    before = by_id(unfiltered.rows)
    clips = [r["clip_score"] for r in before.values()]
    translations = [r["translation_similarity"] for r in before.values()]
    translations = [t for t in translations if t is not None]
    # Twelve and six scores: each median is halfway between two of them, never one of them.
    min_clip, min_translation = statistics.median(clips), statistics.median(translations)
    filters = f"  min_clip_score: {min_clip!r}\n  min_translation_similarity: {min_translation!r}\n"
    after = run(folder, manifest(filters, "output: {rejected: true}\n"), "min")

    def passes(r: dict) -> bool:
        similarity = r["translation_similarity"]
        return r["clip_score"] >= min_clip and (similarity is None or similarity >= min_translation)

    assert sorted(by_id(after.rows)) == sorted(i for i, r in before.items() if passes(r))
    # The scores of the kept pairs are the unfiltered run's.
    for row in after.rows:
        assert row["clip_score"] == before[row["id"]]["clip_score"]
    # A pair failing both is counted under the first, the clip filter.
    low_clip = [r for r in before.values() if r["clip_score"] < min_clip]
    low_translation = [
        r
        for r in before.values()
        if r["clip_score"] >= min_clip and not passes(r)  # the translation filter dropped it
    ]
    stats = after.stats
    assert_books_balance(stats)
    for name in ("pairs", "pairs#2"):
        dropped = stats["sources"][name]["dropped"]
        assert dropped.get("low_clip_score", 0) == sum(r["source_name"] == name for r in low_clip)
        assert dropped.get("low_translation_similarity", 0) == sum(
            r["source_name"] == name for r in low_translation
        )
        assert stats["sources"][name]["kept"] == sum(r["source_name"] == name for r in after.rows)
    assert stats["kept"] == len(after.rows) == 12 - len(low_clip) - len(low_translation)
    assert low_clip and low_translation
    # The summaries are of the scored pairs, before the filters: those of the unfiltered run.
    assert comparable(stats)["scores"] == comparable(unfiltered.stats)["scores"]
    assert list(stats["timings"])[-3:] == ["scoring", "score_filter", "write"]
    # The rejected rows name the score and the threshold.
    rejected = pq.read_table(after.out / "rejected").to_pylist()
    details = {r["id"]: r for r in rejected if r["stage"] == "score_filter"}
    assert set(details) == {r["id"] for r in low_clip + low_translation}
    some = low_clip[0]
    assert details[some["id"]]["reason"] == "low_clip_score"
    assert details[some["id"]]["detail"] == (
        f"clip_score {some['clip_score']:.6g} < min_clip_score {min_clip:g}"
    )


def top(rows: list[dict], score: str, fraction: float) -> set[str]:
    """The ids of the ceil(fraction × n) highest-scoring of `rows` that have `score`."""
    scored = sorted((r for r in rows if r[score] is not None), key=lambda r: -r[score])
    return {r["id"] for r in scored[: math.ceil(fraction * len(scored))]}


def test_keep_top_keeps_the_top_fraction_of_each_source_on_any_runner(folder, unfiltered):
    filters = "  keep_top: {clip_score: 0.5, translation_similarity: 0.7}\n"
    after = run(folder, manifest(filters), "top")
    rows = unfiltered.rows
    expected = set()
    for name in ("pairs", "pairs#2"):
        mine = [r for r in rows if r["source_name"] == name]
        by_clip = top(mine, "clip_score", 0.5)  # 3 of 6
        assert len(by_clip) == 3
        if name == "pairs#2":  # translated: 5 of 6 (ceil 4.2) by translation_similarity
            expected |= by_clip & top(mine, "translation_similarity", 0.7)
        else:  # genuine captions have no translation_similarity: never dropped by it
            expected |= by_clip
    assert sorted(by_id(after.rows)) == sorted(expected)
    stats = after.stats
    assert_books_balance(stats)
    assert stats["sources"]["pairs"]["dropped"] == {"below_top_clip_score": 3}
    translated = stats["sources"]["pairs#2"]["dropped"]
    assert translated["below_top_clip_score"] == 3
    # Of the three the clip filter kept, those not in the top by translation_similarity.
    kept_translated = sum(r["source_name"] == "pairs#2" for r in after.rows)
    assert translated.get("below_top_translation_similarity", 0) == 3 - kept_translated

    again = run(
        folder,
        manifest(filters),
        "top-multiprocess",
        "--direct_num_workers",
        "2",
        "--direct_running_mode",
        "multi_processing",
    )
    assert sorted(by_id(again.rows)) == sorted(by_id(after.rows))
    assert comparable(again.stats) == comparable(stats)


def test_a_null_score_is_never_dropped_by_a_filter_on_it(folder):
    # URL-only: no pair has a clip_score; genuine ones have no translation_similarity either.
    filters = (
        "  min_clip_score: 1.0\n  min_translation_similarity: 1.0\n  keep_top: {clip_score: 0.1}\n"
    )
    after = run(folder, manifest(filters, "images: {fetch: false}\n"), "nulls")
    stats = after.stats
    assert_books_balance(stats)
    assert all(r["clip_score"] is None for r in after.rows)
    assert stats["sources"]["pairs"] == {"read": 6, "kept": 6, "dropped": {}}
    # The translated pairs all score below 1 (the tiny model's cosines of distinct texts).
    assert stats["sources"]["pairs#2"]["dropped"] == {"low_translation_similarity": 6}
    assert stats["scores"]["pairs"]["clip_score"]["count"] == 0
    assert stats["scores"]["pairs#2"]["translation_similarity"]["count"] == 6
