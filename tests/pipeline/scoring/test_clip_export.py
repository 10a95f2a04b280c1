"""`make clip-model`'s export (pipeline.scoring.export): the specs it writes from the published
processors' settings (offline, always), and, where torch is installed (the `convert` extra),
whole exports of tiny random SigLIP and open_clip XLM-R models built on the spot, checked by the
export itself against torch and then scored by the runtime."""

from __future__ import annotations

import os

import numpy as np
import pytest

from pipeline.scoring import export
from pipeline.scoring.export import ExportCheck, open_clip_spec, resample_name, siglip_spec
from pipeline.scoring.model import (
    ClipModel,
    ClipSpec,
    Preprocessor,
    embed_texts,
    read_spec,
    write_spec,
)

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def published_siglip(**changes) -> ClipSpec:
    """The spec of google/siglip-base-patch16-256-multilingual from its processor's settings."""
    settings = {
        "size": {"height": 256, "width": 256},
        "resample": 3,
        "mean": [0.5, 0.5, 0.5],
        "std": [0.5, 0.5, 0.5],
        "do_center_crop": False,
        "context_length": 64,
        "pad_id": 1,
        "do_lower_case": True,
        "embedding_dim": 768,
        **changes,
    }
    return siglip_spec(export.SIGLIP, **settings)


def test_siglip_squashes_to_256_and_pads_to_exactly_64(tmp_path):
    spec = published_siglip()
    write_spec(str(tmp_path), spec)
    raw = (tmp_path / "clip.json").read_text(encoding="utf-8")
    assert '"resize": "squash"' in raw and '"padding": "max_length"' in raw
    assert spec == ClipSpec(
        name="google/siglip-base-patch16-256-multilingual",
        flavour="siglip",
        embedding_dim=768,
        image_size=256,
        resize="squash",
        resample="bicubic",
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        context_length=64,
        pad_id=1,
        padding="max_length",
        clean="canonicalize",
    )
    assert ClipSpec.from_json(spec.to_json()) == spec


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"size": {"height": 256, "width": 224}}, "a square image size"),
        ({"do_center_crop": True}, "without a crop"),
        ({"do_lower_case": False}, "expected to lowercase"),
        ({"resample": 1}, "not one the runtime has"),
    ],
)
def test_a_siglip_processor_the_runtime_cannot_follow_is_refused(changes, problem):
    with pytest.raises(ExportCheck, match=problem):
        published_siglip(**changes)


def test_open_clip_xlmr_crops_the_centre_and_pads_to_the_longest():
    cfg = {
        "size": 224,
        "mean": OPENAI_MEAN,
        "std": OPENAI_STD,
        "interpolation": "bicubic",
        "resize_mode": "shortest",
    }
    spec = open_clip_spec(
        "xlm-roberta-base-ViT-B-32 (laion5b_s13b_b90k)",
        cfg,
        context_length=77,
        pad_id=1,
        clean="_clean_whitespace",
        embedding_dim=512,
    )
    assert (spec.flavour, spec.image_size, spec.resize, spec.resample) == (
        "xlmr",
        224,
        "center_crop",
        "bicubic",
    )
    assert (spec.context_length, spec.pad_id, spec.padding, spec.clean) == (
        77,
        1,
        "longest",
        "whitespace",
    )
    assert spec.mean == OPENAI_MEAN and spec.std == OPENAI_STD
    with pytest.raises(ExportCheck, match="resize_mode 'longest'"):
        open_clip_spec("m", {**cfg, "resize_mode": "longest"}, context_length=77, pad_id=1,
                       clean="_clean_whitespace", embedding_dim=512)  # fmt: skip
    with pytest.raises(ExportCheck, match="a square image size"):
        open_clip_spec("m", {**cfg, "size": (224, 256)}, context_length=77, pad_id=1,
                       clean="_clean_whitespace", embedding_dim=512)  # fmt: skip


def test_resampling_is_read_from_numbers_names_and_enums():
    class Filter:  # as transformers' PILImageResampling members are
        value = 3

    assert [resample_name(r) for r in (3, 2, "bicubic", "BILINEAR", Filter())] == [
        "bicubic",
        "bilinear",
        "bicubic",
        "bilinear",
        "bicubic",
    ]


# ---------------------------------------------------------------------------- with torch


def scored_like_torch(folder: str, published) -> None:
    """The exported folder, read by the runtime as the pipeline reads it, embeds captions as the
    torch text tower does."""
    import torch

    spec = read_spec(folder)
    assert spec == published.spec
    assert {"image.onnx", "text.onnx", "tokenizer.json", "clip.json"} <= set(os.listdir(folder))
    prep, model = Preprocessor(folder), ClipModel(folder, "cpu")
    ours, _ = embed_texts(prep, model, list(export.CHECK_CAPTIONS))
    with torch.no_grad():
        theirs = published.text_tower(
            torch.from_numpy(published.reference_ids(export.CHECK_CAPTIONS))
        )
    theirs = theirs.numpy()
    theirs /= np.linalg.norm(theirs, axis=1, keepdims=True)
    assert (ours * theirs).sum(axis=1).min() > export.MIN_COSINE


def tiny_siglip(folder):
    """A random-weight transformers SigLIP (16-token context, 32 px) as a `Published`."""
    transformers = pytest.importorskip("transformers")
    from standins.tiny_clip import captions
    from standins.tiny_model import train_sentencepiece

    (folder / "spiece.model").write_bytes(train_sentencepiece(captions(), 200))
    tokenizer = transformers.SiglipTokenizer(
        vocab_file=str(folder / "spiece.model"), model_max_length=16
    )
    tower = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
             "num_attention_heads": 4}  # fmt: skip
    config = transformers.SiglipConfig(
        text_config={
            **tower,
            "vocab_size": len(tokenizer),
            "max_position_embeddings": 16,
            "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": None,
            "eos_token_id": tokenizer.eos_token_id,
        },
        vision_config={**tower, "image_size": 32, "patch_size": 8},
    )
    model = transformers.SiglipModel(config).eval()
    processor = transformers.SiglipImageProcessor(
        size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    published = export.siglip(model, tokenizer, processor, name="tiny-siglip")
    assert published.spec.pad_id == tokenizer.pad_token_id and published.spec.context_length == 16
    return published


def test_a_tiny_siglip_exports_checked_and_scores_as_torch(tmp_path):
    pytest.importorskip("torch")
    published = tiny_siglip(tmp_path)
    measured = export.export(published, str(tmp_path / "out"))
    assert measured["min_cosine"] >= export.MIN_COSINE and measured["pixel_gap"] < 1e-3
    scored_like_torch(str(tmp_path / "out"), published)


def test_the_command_replaces_the_folder_only_once_the_export_checked(
    tmp_path, monkeypatch, capsys
):
    pytest.importorskip("torch")
    published = tiny_siglip(tmp_path)
    monkeypatch.setattr(export, "load_published", lambda which: published)
    out = tmp_path / "models" / "clip"
    out.mkdir(parents=True)
    (out / "stale.onnx").write_bytes(b"x")
    assert export.main([str(out), "--model", "siglip"]) == 0
    assert "checked against torch" in capsys.readouterr().out
    assert "stale.onnx" not in os.listdir(out) and read_spec(str(out)) == published.spec
    assert os.listdir(tmp_path / "models") == ["clip"]  # no temporary folder left

    def wrong(*args):
        raise ExportCheck("token ids differ")

    monkeypatch.setattr(export, "check", wrong)
    with pytest.raises(ExportCheck):
        export.main([str(out)])
    assert read_spec(str(out)) == published.spec  # the earlier export is untouched
    assert os.listdir(tmp_path / "models") == ["clip"]


def test_a_tiny_open_clip_xlmr_exports_checked_and_scores_as_torch(tmp_path):
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    open_clip = pytest.importorskip("open_clip")
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg, CustomTextCLIP

    from standins.tiny_clip import captions, train_tokenizer

    hf = tmp_path / "xlmr"
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=train_tokenizer("xlmr", captions()),
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
    )
    fast.save_pretrained(hf)
    transformers.XLMRobertaConfig(
        vocab_size=len(fast),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=80,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    ).save_pretrained(hf)
    model = CustomTextCLIP(
        embed_dim=24,
        vision_cfg=CLIPVisionCfg(layers=2, width=32, head_width=8, patch_size=8, image_size=32),
        text_cfg=CLIPTextCfg(
            hf_model_name=str(hf), hf_tokenizer_name=str(hf), hf_model_pretrained=False
        ),
    ).eval()
    tokenizer = open_clip.tokenizer.HFTokenizer(str(hf), context_length=77)
    cfg = {"size": 32, "mean": OPENAI_MEAN, "std": OPENAI_STD, "interpolation": "bicubic",
           "resize_mode": "shortest"}  # fmt: skip
    preprocess = open_clip.transform.image_transform(
        32, is_train=False, mean=OPENAI_MEAN, std=OPENAI_STD, resize_mode="shortest"
    )
    published = export.open_clip_model(model, tokenizer, preprocess, cfg, "tiny-xlmr")
    measured = export.export(published, str(tmp_path / "out"))
    assert measured["min_cosine"] >= export.MIN_COSINE
    assert published.spec.padding == "longest" and published.spec.pad_id == 1
    scored_like_torch(str(tmp_path / "out"), published)
