"""The dataset card as the Hugging Face Hub reads it: its metadata parsed by `huggingface_hub`'s
card classes and checked against the values the Hub accepts (the lists `datasets` ships), the
licence file and the citations, offline. The CLI runs check that a run writes `LICENSE.md` and
never replaces one the user wrote."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest
import yaml
from huggingface_hub import DatasetCard, DatasetCardData
from wit_files import wit_row, write_wit

from pipeline.__main__ import main
from pipeline.card import (
    LICENCE_ID,
    LICENCE_SIGNATURE,
    CardSource,
    card_sources,
    citations,
    hub_metadata,
    size_category,
)
from pipeline.manifest import load_manifest
from pipeline.write import dataset_card, hf_features

RESOURCES = Path(datasets.__file__).parent / "utils" / "resources"


def allowed(name: str):
    return json.loads((RESOURCES / name).read_text(encoding="utf-8"))


def stats_of(sources: dict[str, int]) -> dict:
    return {
        "sources": {n: {"read": k + 1, "kept": k, "dropped": {"x": 1}} for n, k in sources.items()},
        "kept": sum(sources.values()),
        "duplicates_removed": 0,
    }


MIXED = (
    CardSource("wikipedia", "wikipedia", False),
    CardSource("wit", "wit", False),
    CardSource("conceptual_captions", "conceptual_captions", True),
    CardSource("coco", "coco", True),
)


def card_data(text: str) -> DatasetCardData:
    card = DatasetCard(text)
    assert isinstance(card.data, DatasetCardData)
    return card.data


def test_the_card_metadata_is_what_the_hub_accepts():
    stats = stats_of({"wikipedia": 400, "wit": 300, "conceptual_captions": 250, "coco": 100})
    text = dataset_card(
        "Arabic pairs",
        stats,
        hf_features(),
        "name: x\n",
        "0" * 16,
        "opus-mt-tc-big-en-ar (CTranslate2, OPUS-MT layout)",
        MIXED,
    )
    data = card_data(text)
    assert data.license == "other"
    assert data.license_name == LICENCE_ID and data.license_link == "LICENSE.md"
    assert data.language == ["ar", "en"]
    languages = allowed("languages.json")
    assert all(code in languages for code in data.language)
    assert data.size_categories == ["1K<n<10K"]  # 1,050 kept
    assert set(data.size_categories) <= set(allowed("size_categories.json"))
    creators = allowed("creators.json")
    assert data.annotations_creators == ["found", "machine-generated"]
    assert set(data.annotations_creators) <= set(creators["annotations"])
    assert set(data.language_creators) <= set(creators["language"])
    assert data.multilinguality == ["translation"]
    assert set(data.multilinguality) <= set(allowed("multilingualities.json"))
    assert data.source_datasets == [
        "original",
        "extended|google/wit",
        "extended|google-research-datasets/conceptual_captions",
        "extended|other-coco-2014",
    ]
    assert "image-to-text" in data.task_categories
    # The configs `datasets` reads are still there, beside the Hub's keys.
    assert data.configs[0]["config_name"] == "default"
    # The body: how to load, each source's terms, what to cite (the translation model's too).
    body = text.split("\n---\n", 1)[1]
    assert 'load_dataset("path/to/arabic-pairs", split="train")' in body
    assert "CC BY-SA 3.0" in body and "CC BY 4.0" in body
    assert "srinivasan2021wit" in body and "sharma2018conceptual" in body
    assert "lin2014coco" in body and "tiedemann2020opusmt" in body
    assert "hodosh2013framing" not in body  # no Flickr8K in this build


def test_a_card_without_translations_says_arabic_only_and_found():
    stats = stats_of({"wikipedia": 10, "wit#2": 5})
    data = card_data(dataset_card("wiki", stats, hf_features(), None, "0" * 16))
    assert data.language == ["ar"]
    assert data.annotations_creators == ["found"] and data.language_creators == ["found"]
    assert data.multilinguality == ["monolingual"]
    assert data.source_datasets == ["original", "extended|google/wit"]


@pytest.mark.parametrize(
    ("rows", "bucket"),
    [(0, "n<1K"), (999, "n<1K"), (1000, "1K<n<10K"), (2_100_000, "1M<n<10M")],
)
def test_size_categories_follow_the_hubs_buckets(rows, bucket):
    assert size_category(rows) == bucket
    assert hub_metadata(MIXED, rows)["size_categories"] == [bucket]


def test_the_sources_of_a_manifest_say_which_are_translated(tmp_path):
    (tmp_path / "mine.tsv").write_text("url\tcaption\n", encoding="utf-8")
    path = tmp_path / "manifest.yaml"
    path.write_text(
        "sources:\n"
        "  - kind: pairs\n    paths: [mine.tsv]\n    language: en\n"
        "  - kind: pairs\n    paths: [mine.tsv]\n    language: ar\n"
        "translation: {memory: mine.tsv}\n",
        encoding="utf-8",
    )
    manifest = load_manifest(str(path))
    assert card_sources(manifest.sources) == (
        CardSource("pairs", "pairs", True),
        CardSource("pairs#2", "pairs", False),
    )


def test_opus_mt_is_cited_only_for_an_opus_mt_model():
    wiki = (CardSource("wikipedia", "wikipedia", False),)
    assert citations(wiki, None) == []
    tiny = citations(MIXED, "tiny-random-en-ar-opus (CTranslate2, OPUS-MT layout)")
    assert not any("tiedemann" in c for c in tiny)
    big = citations(MIXED, "opus-mt-tc-big-en-ar (CTranslate2, OPUS-MT layout)")
    assert any("tiedemann2020opusmt" in c for c in big)
    for entry in big:  # each a whole BibTeX entry
        assert entry.startswith("@") and entry.count("{") == entry.count("}")


@pytest.fixture
def manifest(tmp_path) -> Path:
    rows = [
        wit_row(n, caption_reference_description=f"صورة رقم {n} لمدينة القاهرة") for n in range(3)
    ]
    write_wit(tmp_path / "in" / "wit.tsv", rows)
    path = tmp_path / "in" / "manifest.yaml"
    path.write_text(
        "sources:\n  - kind: wit\n    paths: [wit.tsv]\nimages: {fetch: false}\n", encoding="utf-8"
    )
    return path


def test_a_run_writes_the_licence_the_card_links_and_keeps_the_users_own(manifest, tmp_path):
    out = tmp_path / "out"
    assert main(["run", str(manifest), "--output", str(out)]) == 0
    licence = (out / "LICENSE.md").read_text(encoding="utf-8")
    assert licence.startswith(LICENCE_SIGNATURE) and "## wit" in licence
    assert "CC BY-SA 3.0" in licence and "## conceptual_captions" not in licence
    card = yaml.safe_load((out / "README.md").read_text(encoding="utf-8").split("---\n")[1])
    assert card["license_link"] == "LICENSE.md"
    assert card["source_datasets"] == ["extended|google/wit"]

    # A rerun replaces the licence an earlier run wrote ...
    (out / "LICENSE.md").write_text(LICENCE_SIGNATURE + "\n\nstale\n", encoding="utf-8")
    assert main(["run", str(manifest), "--output", str(out)]) == 0
    assert (out / "LICENSE.md").read_text(encoding="utf-8") == licence
    # ... and never one the user wrote in its place.
    (out / "LICENSE.md").write_text("# My licence\n\nCC0\n", encoding="utf-8")
    assert main(["run", str(manifest), "--output", str(out)]) == 0
    assert (out / "LICENSE.md").read_text(encoding="utf-8") == "# My licence\n\nCC0\n"
    assert not list(out.glob(".incoming-*"))
