"""`python -m pipeline run` with a `scoring` section: local pictures, genuine and translated pairs,
the tiny random CLIP folder inside the manifest's folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import datasets
import pytest
from cli_runs import LOOSE, memory, run_manifest
from image_samples import jpeg

from pipeline.scoring.model import ClipModel, Preprocessor, embed_images, embed_texts

ARABIC = {"souk.jpg": "سوق الحميدية القديم في مدينة دمشق", "nile.jpg": "نهر النيل عند الغروب"}
ENGLISH = {"bird.jpg": "A bird sitting on a branch", "boat.jpg": "A small boat on a calm sea"}
TRANSLATIONS = {
    "A bird sitting on a branch": "طائر يجلس على غصن",
    "A small boat on a calm sea": "قارب صغير على بحر هادئ",
}


def tsv(rows: dict[str, str]) -> str:
    return "path\tcaption\n" + "".join(f"{path}\t{caption}\n" for path, caption in rows.items())


@pytest.fixture
def folder(tmp_path, siglip_model) -> Path:
    """A manifest folder: pictures, an Arabic and an English pairs file, a translation memory
    and the model under models/clip."""
    (tmp_path / "images").mkdir()
    for seed, name in enumerate([*ARABIC, *ENGLISH]):
        (tmp_path / "images" / name).write_bytes(jpeg(96, 64, seed=seed))
    (tmp_path / "ar.tsv").write_text(tsv(ARABIC), encoding="utf-8")
    (tmp_path / "en.tsv").write_text(tsv(ENGLISH), encoding="utf-8")
    memory(tmp_path, TRANSLATIONS)
    shutil.copytree(siglip_model, tmp_path / "models" / "clip")
    return tmp_path


SOURCES = (
    "name: scored\nsources:\n"
    "  - kind: pairs\n    paths: [ar.tsv]\n    language: ar\n    image_root: images\n"
    "  - kind: pairs\n    paths: [en.tsv]\n    language: en\n    image_root: images\n"
    "translation: {memory: memory.tsv}\n" + LOOSE
)
SCORING = "scoring:\n  model: models/clip\n  device: cpu\n  batch_size: 3\n"


def test_a_run_with_scoring_fills_both_columns_as_the_model_computes_them(folder, capsys):
    status, stats, rows, err = run_manifest(folder, SOURCES + SCORING, capsys)
    assert status == 0, err
    assert stats["kept"] == 4 and len(rows) == 4
    assert list(stats["timings"])[-2:] == ["scoring", "write"]
    assert stats["timings"]["scoring"]["records"] == 4
    model_folder = str(folder / "models" / "clip")
    prep, model = Preprocessor(model_folder), ClipModel(model_folder, "cpu")
    for row in rows:
        # The stored picture (re-encoded by the images stage) is the one that was scored.
        (picture,), _ = embed_images(prep, model, [row["image"]["bytes"]])
        (ar,), _ = embed_texts(prep, model, [row["caption_ar"]])
        assert row["clip_score"] == pytest.approx(float(picture @ ar), abs=1e-5)
        if row["caption_origin"] == "translated":
            (en,), _ = embed_texts(prep, model, [row["caption_en"]])
            assert row["translation_similarity"] == pytest.approx(float(ar @ en), abs=1e-5)
        else:
            assert row["translation_similarity"] is None
    assert sum(r["caption_origin"] == "translated" for r in rows) == 2

    dataset = datasets.load_dataset(str(folder / "out"), split="train")
    assert dataset.features["clip_score"] == datasets.Value("float32")
    assert dataset.features["translation_similarity"] == datasets.Value("float32")
    assert sorted(dataset["clip_score"]) == pytest.approx(sorted(r["clip_score"] for r in rows))
    card = (folder / "out" / "README.md").read_text(encoding="utf-8")
    assert "clip_score" in card and "translation_similarity" in card


def test_scoring_off_leaves_both_columns_null_and_changes_no_other_value(folder, capsys):
    status, _, scored, err = run_manifest(folder, SOURCES + SCORING, capsys)
    assert status == 0, err
    shutil.rmtree(folder / "out")
    status, stats, plain, err = run_manifest(folder, SOURCES, capsys)
    assert status == 0, err
    assert "scoring" not in stats["timings"]
    assert all(r["clip_score"] is None and r["translation_similarity"] is None for r in plain)

    def rest(rows):
        drop = ("clip_score", "translation_similarity")
        return sorted(({k: v for k, v in r.items() if k not in drop} for r in rows), key=str)

    assert rest(scored) == rest(plain)


def test_a_folder_that_is_not_a_model_is_refused_before_any_work(folder, capsys):
    (folder / "models" / "clip" / "text.onnx").unlink()
    status, stats, _, err = run_manifest(folder, SOURCES + SCORING, capsys)
    assert status == 2 and stats is None
    assert "error: scoring.model: " in err and "not a CLIP model folder (no text.onnx)" in err
