"""TranslateCaptions run for real: the memory, the tiny model, the write-back and the drops."""

from __future__ import annotations

import pyarrow.parquet as pq

from pipeline.config import TranslationConfig
from pipeline.records import GENUINE, TRANSLATED, Pair
from translators.ctranslate import CTranslate2Handler
from translators.memory import memory_files
from translators.quality import quality_problem

# Thresholds that keep the tiny model's garbage, so that its translations reach the output.
KEEP_ALL = dict(
    min_score=-100.0,
    min_length_ratio=0.0,
    max_length_ratio=1000.0,
    max_latin_share=1.0,
    max_ngram_repeats=1000,
)
LONG = "A very long caption about a dog and a cat and a bird and a horse in a field " * 3


def pair(n: int, caption_en: str | None, origin: str = TRANSLATED) -> Pair:
    caption_ar = "" if origin == TRANSLATED else "قطة على أريكة"
    return Pair(
        f"id{n:02d}",
        "coco",
        "coco",
        str(n),
        caption_ar,
        origin,
        caption_en=caption_en,
        input_line=n,
    )


PAIRS = [
    pair(1, "A cat on a sofa."),
    pair(2, "A cat on a sofa."),
    pair(3, "  A cat  on a sofa. "),  # the same caption once normalised
    pair(4, "A dog."),
    pair(5, "Two men playing chess in a park."),
    pair(6, "Two men playing chess in a park."),
    pair(7, "A bird sitting on a branch."),
    pair(8, LONG),
    pair(9, "   "),
    pair(10, None, origin=GENUINE),
]
HUMAN_TSV = "en\tar\nA cat on a sofa.\tقطة على أريكة.\nA dog.\tكلب.\n"


def translation_rows(folder) -> dict[str, dict]:
    rows = {}
    for path in memory_files(str(folder)):
        if path.endswith(".parquet"):
            for row in pq.read_table(path).to_pylist():
                assert row["en"] not in rows  # every caption translated once
                rows[row["en"]] = row
    return rows


def fail_if_called(*args, **kwargs):
    raise AssertionError("a caption reached the model")


def test_memory_then_model_then_a_rerun_that_translates_nothing(
    opus_model, tmp_path, run_stage, monkeypatch
):
    # The memory folder is this run's own DIR/translations: a rerun reads what run 1 wrote.
    memory = tmp_path / "out" / "translations"
    memory.mkdir(parents=True)
    (memory / "human.tsv").write_text(HUMAN_TSV, encoding="utf-8")
    config = TranslationConfig(
        model=opus_model,
        memory=str(memory),
        intra_threads=1,
        max_input_length=16,
        **KEEP_ALL,
    )
    first = run_stage(PAIRS, config, str(tmp_path / "out"))

    written = translation_rows(memory)
    model_captions = [
        "Two men playing chess in a park.",
        "A bird sitting on a branch.",
        LONG.strip(),
    ]
    assert sorted(written) == sorted(model_captions)  # memory hits never reach the model
    assert [written[en]["truncated"] for en in model_captions] == [False, False, True]
    kept = {p.id: (p.caption_ar, p.translation_score) for p in first.kept}
    assert kept == {
        "id01": ("قطة على أريكة.", None),
        "id02": ("قطة على أريكة.", None),
        "id03": ("قطة على أريكة.", None),
        "id04": ("كلب.", None),
        "id05": (written[model_captions[0]]["ar"], written[model_captions[0]]["score"]),
        "id06": (written[model_captions[0]]["ar"], written[model_captions[0]]["score"]),
        "id07": (written[model_captions[1]]["ar"], written[model_captions[1]]["score"]),
        "id08": (written[model_captions[2]]["ar"], written[model_captions[2]]["score"]),
        "id10": ("قطة على أريكة", None),  # a genuine pair passes untouched
    }
    assert all(row["ar"] and row["score"] <= 0 for row in written.values())
    assert [(d.source_name, d.reason, d.input_line) for d in first.dropped] == [
        ("coco", "empty_caption", 9)
    ]
    assert first.counters["unique_captions"] == 5
    assert first.counters["memory_hits"] == 2
    assert first.counters["captions_translated"] == 3
    assert first.counters["captions_truncated"] == 1

    # Run 2 with the model forbidden: everything comes from the memory, identically.
    monkeypatch.setattr(CTranslate2Handler, "run_inference", fail_if_called)
    second = run_stage(PAIRS, config, str(tmp_path / "out"))
    assert second.kept == first.kept
    assert second.dropped == first.dropped
    assert second.counters["memory_hits"] == 5
    assert second.counters.get("captions_translated", 0) == 0
    assert translation_rows(memory) == written  # zero new rows; run 1's files intact


def test_memory_only_run_checks_quality_and_drops_misses(tmp_path, run_stage):
    memory = tmp_path / "memory.tsv"
    memory.write_text(
        "en\tar\tscore\n"
        "A cat on a sofa.\tقطة على أريكة.\t\n"
        "A cat on a sofa.\tقطة فوق أريكة.\t-0.2\n"  # an unscored (reference) entry wins
        "A dog.\tA dog.\t\n"
        "Two men playing chess in a park.\tرجلان رجلان رجلان رجلان\t\n"
        "A bird sitting on a branch.\tطائر يجلس على غصن.\t-2.5\n"
        f"{LONG}\tطائر\t\n",
        encoding="utf-8",
    )
    config = TranslationConfig(memory=str(memory))
    pairs = [*PAIRS, pair(11, "A caption nobody translated.")]
    run = run_stage(pairs, config, str(tmp_path / "out"))
    assert [(p.id, p.caption_ar, p.translation_score) for p in run.kept] == [
        ("id01", "قطة على أريكة.", None),
        ("id02", "قطة على أريكة.", None),
        ("id03", "قطة على أريكة.", None),
        ("id10", "قطة على أريكة", None),
    ]
    assert [(d.input_line, d.reason) for d in sorted(run.dropped, key=lambda d: d.input_line)] == [
        (4, "untranslated"),
        (5, "repetition_loop"),
        (6, "repetition_loop"),
        (7, "low_translation_score"),
        (8, "length_ratio"),
        (9, "empty_caption"),
        (11, "no_translation"),
    ]
    assert run.counters["no_translation"] == 1
    assert not (tmp_path / "out" / "translations").exists()  # no model: nothing written


def test_a_failed_batch_drops_its_pairs_as_translation_errors(
    opus_model, tmp_path, run_stage, monkeypatch
):
    def broken(self, batch, model, inference_args=None):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(CTranslate2Handler, "run_inference", broken)
    config = TranslationConfig(model=opus_model, intra_threads=1)
    run = run_stage(PAIRS[:5], config, str(tmp_path / "out"))
    assert run.kept == []
    assert {(d.input_line, d.reason) for d in run.dropped} == {
        (n, "translation_error") for n in range(1, 6)
    }
    assert {d.detail for d in run.dropped} == {"RuntimeError('out of memory')"}
    assert run.counters["translation_errors"] == 3  # captions, not pairs
    assert translation_rows(tmp_path / "out" / "translations") == {}


def test_default_thresholds_drop_the_tiny_models_garbage(nllb_model, tmp_path, run_stage):
    config = TranslationConfig(model=nllb_model, intra_threads=1)
    run = run_stage(PAIRS[:8], config, str(tmp_path / "out"))
    written = translation_rows(tmp_path / "out" / "translations")
    assert len(written) == 5
    expected = {
        en: quality_problem(en, row["ar"], row["score"], config) for en, row in written.items()
    }
    assert all(expected.values())  # random weights: every translation fails a check
    by_line = {d.input_line: d.reason for d in run.dropped}
    assert by_line == {p.input_line: expected[" ".join(p.caption_en.split())] for p in PAIRS[:8]}
