"""The offline model builder: both layouts, reproducible, and the benchmark-shaped model."""

from __future__ import annotations

import json
import os

import ctranslate2
import pytest

from standins.tiny_model import build_random_model, build_tiny_model, main


def test_cli_builds_each_layout(tmp_path, capsys):
    assert main([str(tmp_path / "opus")]) == 0
    assert main([str(tmp_path / "nllb"), "--layout", "nllb"]) == 0
    assert capsys.readouterr().out.split() == [str(tmp_path / "opus"), str(tmp_path / "nllb")]
    opus, nllb = set(os.listdir(tmp_path / "opus")), set(os.listdir(tmp_path / "nllb"))
    assert {"model.bin", "config.json", "source.spm", "target.spm"} <= opus
    assert {"source_vocabulary.json", "target_vocabulary.json"} <= opus
    assert {"model.bin", "config.json", "sentencepiece.bpe.model", "shared_vocabulary.json"} <= nllb
    vocabulary = json.loads((tmp_path / "nllb" / "shared_vocabulary.json").read_text())
    assert {"eng_Latn", "arb_Arab", "<unk>", "<s>", "</s>"} <= set(vocabulary)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nllb", "opus"]  # no temporary left


def test_the_same_seed_builds_the_same_model(tmp_path):
    def model_bytes(folder, seed):
        build_tiny_model(str(tmp_path / folder), seed=seed)
        return (tmp_path / folder / "model.bin").read_bytes()

    assert model_bytes("a", 0) == model_bytes("b", 0)
    assert model_bytes("c", 1) != model_bytes("a", 0)


def test_rebuilding_into_the_same_folder_replaces_it(tmp_path):
    build_tiny_model(str(tmp_path / "ref"), seed=1)
    build_tiny_model(str(tmp_path / "ref_nllb"), layout="nllb")
    build_tiny_model(str(tmp_path / "m"), seed=0)
    build_tiny_model(str(tmp_path / "m"), seed=1)
    model = (tmp_path / "m" / "model.bin").read_bytes()
    assert model == (tmp_path / "ref" / "model.bin").read_bytes()
    build_tiny_model(str(tmp_path / "m"), layout="nllb")
    assert sorted(os.listdir(tmp_path / "m")) == sorted(os.listdir(tmp_path / "ref_nllb"))


def test_unknown_layout_is_refused(tmp_path):
    with pytest.raises(ValueError, match="layout must be one of opus, nllb"):
        build_tiny_model(str(tmp_path / "m"), layout="marian")


def test_random_model_has_the_requested_shape(tmp_path):
    folder = build_random_model(
        str(tmp_path / "big"), layers=1, d_model=64, heads=2, ffn=64, vocab=1000
    )
    vocabulary = json.loads((tmp_path / "big" / "shared_vocabulary.json").read_text())
    assert len(vocabulary) == 1000 and vocabulary[-1].startswith("▁x")
    translator = ctranslate2.Translator(folder, compute_type="int8", intra_threads=1)
    [result] = translator.translate_batch([["▁A", "▁cat", "</s>"]], max_decoding_length=5)
    assert 1 <= len(result.hypotheses[0]) <= 5


def test_random_model_in_the_nllb_layout(tmp_path):
    folder = build_random_model(
        str(tmp_path / "nllb"), layers=1, d_model=32, heads=2, ffn=64, vocab=1000, layout="nllb"
    )
    files = set(os.listdir(folder))
    assert {"sentencepiece.bpe.model", "shared_vocabulary.json"} <= files
    assert not {"source.spm", "target.spm"} & files
    vocabulary = json.loads((tmp_path / "nllb" / "shared_vocabulary.json").read_text())
    assert len(vocabulary) == 1000 and {"eng_Latn", "arb_Arab"} <= set(vocabulary)
    config = json.loads((tmp_path / "nllb" / "config.json").read_text())
    assert config["decoder_start_token"] == "</s>"
    with pytest.raises(ValueError, match="layout must be one of opus, nllb"):
        build_random_model(str(tmp_path / "m"), layout="marian")
