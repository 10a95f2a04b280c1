"""A model with the conventions of opus-mt-tc-big-en-ar, the default of `make model`: one
vocabulary holding its seven target-language tokens, `>>ara<<` given as `source_prefix` (tiny
dimensions: conventions, not speed). Without the token it is refused before any work."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from cli_runs import OFFLINE, run_manifest

from pipeline.config import TranslationConfig
from standins.tiny_model import SHAPES, TC_BIG_EN_AR_LABELS, build_random_model
from translators.ctranslate import CTranslate2Handler, ModelFolderError, tokenize
from translators.memory import memory_files

TINY = dict(layers=1, d_model=32, heads=2, ffn=64, vocab=1000, quantization=None)
CAPTIONS = ["A cat on a red sofa.", "Two men playing chess in a park.", "A dog."]
NO_TOKEN = (
    r"a multi-target OPUS-MT model \(target-language tokens >>acm<<, >>afb<<, >>apc<<, "
    r'>>ara<<, >>arq<<, >>ary<<, >>arz<<\) needs translation.source_prefix, such as ">>ara<<"'
)


@pytest.fixture(scope="module")
def tc_big(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("models") / "opus-mt-tc-big-en-ar-ct2"
    return build_random_model(
        str(folder), **{**SHAPES["opus-mt-tc-big-en-ar"], **TINY}, name="random-tc-big-convention"
    )


def load(folder: str, **options):
    handler = CTranslate2Handler(TranslationConfig(model=folder, intra_threads=1, **options))
    return handler, handler.load_model()


def test_the_target_token_leads_every_source(tc_big):
    with open(f"{tc_big}/shared_vocabulary.json", encoding="utf-8") as f:
        vocabulary = json.load(f)
    assert len(vocabulary) == 1000 and set(TC_BIG_EN_AR_LABELS) <= set(vocabulary)
    handler, model = load(tc_big, source_prefix=">>ara<<")
    tokens, _ = tokenize(model, "A cat.", 256)
    assert tokens[0] == ">>ara<<" and tokens[-1] == "</s>" and model.target_prefix == []
    translations = list(handler.run_inference(CAPTIONS, model))
    assert len(translations) == 3 and all(t.score <= 0 for t in translations)
    assert not any(">>" in t.ar for t in translations)


def test_without_its_target_token_the_model_is_refused(tc_big, opus_model):
    with pytest.raises(ModelFolderError, match=NO_TOKEN):
        load(tc_big)
    with pytest.raises(ModelFolderError, match="'>>eng<<' is not in the model's source vocab"):
        load(tc_big, source_prefix=">>eng<<")
    load(opus_model)  # a model without target-language tokens needs none


def manifest(folder, model: str, prefix: str) -> str:
    (folder / "pairs.tsv").write_text(
        "url\tcaption\n"
        + "".join(f"https://img.example/{i}.jpg\t{c}\n" for i, c in enumerate(CAPTIONS)),
        encoding="utf-8",
    )
    return (
        "name: mine\nsources:\n  - kind: pairs\n    paths: [pairs.tsv]\n    language: en\n"
        f"translation:\n  model: {model}\n{prefix}" + OFFLINE
    )


def test_a_run_translates_with_the_token_and_is_refused_without_it(tc_big, tmp_path, capsys):
    status, _, _, err = run_manifest(tmp_path, manifest(tmp_path, tc_big, ""), capsys)
    assert status == 2 and not (tmp_path / "out").exists()
    assert err.startswith("error: translation.model: ") and "needs translation.source_prefix" in err
    body = manifest(tmp_path, tc_big, '  source_prefix: ">>ara<<"\n')
    status, stats, _, err = run_manifest(tmp_path, body, capsys)
    assert status == 0, err
    assert stats["sources"]["pairs"]["read"] == 3
    # The random model's pieces are rarely Arabic letters, so the filters may drop its output:
    # what the run translated is in its write-back, one row a caption.
    written = [
        row
        for path in memory_files(str(tmp_path / "out" / "translations"))
        for row in pq.read_table(path).to_pylist()
    ]
    assert sorted(row["en"] for row in written) == sorted(CAPTIONS)
    assert all(row["score"] <= 0 and ">>" not in row["ar"] for row in written)
