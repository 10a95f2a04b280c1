"""The offline CLIP builder: real ONNX graphs of each flavour's shape, reproducible, any size."""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnxruntime
import pytest

from pipeline.scoring.model import ClipModel, Preprocessor, embed_texts, read_spec
from standins import tiny_clip
from standins.tiny_clip import SHAPES, ClipShape, TowerShape, build_clip, main


def session(path: str) -> onnxruntime.InferenceSession:
    return onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])


def ops(path: str) -> set[str]:
    return {node.op_type for node in onnx.load(path).graph.node}


def test_the_cli_builds_each_tiny_flavour_without_leaving_temporaries(tmp_path, capsys):
    assert main([str(tmp_path / "s")]) == 0
    assert main([str(tmp_path / "x"), "--shape", "tiny-xlmr"]) == 0
    assert capsys.readouterr().out.split() == [str(tmp_path / "s"), str(tmp_path / "x")]
    for folder, flavour in (("s", "siglip"), ("x", "xlmr")):
        names = set(os.listdir(tmp_path / folder))
        assert names == {"image.onnx", "text.onnx", "tokenizer.json", "clip.json", "README.md"}
        assert read_spec(str(tmp_path / folder)).flavour == flavour
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s", "x"]


def test_the_same_seed_builds_the_same_folder(tmp_path):
    def files(folder: str, seed: int) -> dict[str, bytes]:
        build_clip(str(tmp_path / folder), "xlmr", seed)
        return {n: (tmp_path / folder / n).read_bytes() for n in os.listdir(tmp_path / folder)}

    first = files("a", 0)
    assert files("b", 0) == first
    other = files("c", 1)
    assert other["image.onnx"] != first["image.onnx"] and other["text.onnx"] != first["text.onnx"]


def test_the_towers_are_checked_graphs_of_their_flavours_shape(siglip_model, xlmr_model):
    for folder, flavour in ((siglip_model, "siglip"), (xlmr_model, "xlmr")):
        shape = tiny_clip.TINY[flavour]
        image, text = (os.path.join(folder, n) for n in ("image.onnx", "text.onnx"))
        for path in (image, text):
            onnx.checker.check_model(path, full_check=True)
        graph = onnx.load(image).graph
        conv = next(n for n in graph.node if n.op_type == "Conv")
        strides = next(a for a in conv.attribute if a.name == "strides").ints
        assert list(strides) == [shape.patch, shape.patch]
        assert {"LayerNormalization", "MatMul", "Softmax"} <= ops(image) & ops(text)
        assert [i.name for i in session(image).get_inputs()] == ["pixel_values"]
        assert [i.name for i in session(text).get_inputs()] == ["input_ids"]
        dim = read_spec(folder).embedding_dim
        pixels = np.zeros((2, 3, shape.image_size, shape.image_size), np.float32)
        assert session(image).run(None, {"pixel_values": pixels})[0].shape == (2, dim)
        ids = np.full((3, 5), 7, np.int64)
        assert session(text).run(None, {"input_ids": ids})[0].shape == (3, dim)
    # XLM-R builds its mask and RoBERTa's positions from the pad id inside the graph.
    assert {"Equal", "Not", "CumSum", "ReduceSum"} <= ops(os.path.join(xlmr_model, "text.onnx"))
    assert "CumSum" not in ops(os.path.join(siglip_model, "text.onnx"))


def test_xlmr_text_graph_ignores_pad_columns_and_siglip_reads_them(siglip_model, xlmr_model):
    for folder, masked in ((xlmr_model, True), (siglip_model, False)):
        pad = read_spec(folder).pad_id
        text = session(os.path.join(folder, "text.onnx"))
        ids = np.array([[3, 17, 25, 40, 4]], np.int64)
        padded = np.concatenate([ids, np.full((1, 6), pad, np.int64)], axis=1)
        a = text.run(None, {"input_ids": ids})[0][0]
        b = text.run(None, {"input_ids": padded})[0][0]
        assert np.allclose(a, b, atol=1e-5) == masked


def test_any_shape_builds_with_a_table_larger_than_the_tokenizer(tmp_path):
    tower = TowerShape(width=48, layers=3, heads=6, mlp=96)
    shape = ClipShape(tower, tower, patch=16, image_size=64, context_length=64, embed_dim=48,
                      vocab=5000, positions=64)  # fmt: skip
    folder = build_clip(str(tmp_path / "m"), "siglip", shape=shape)
    table = next(
        t for t in onnx.load(os.path.join(folder, "text.onnx")).graph.initializer
        if t.name.startswith("tokens")
    )  # fmt: skip
    assert list(table.dims) == [5000, 48]
    prep, model = Preprocessor(folder), ClipModel(folder, "cpu")
    embeddings, _ = embed_texts(prep, model, ["سوق", "A cat."])
    assert embeddings.shape == (2, 48)


def test_the_published_shapes_are_those_of_the_models(tmp_path):
    flavour, vit = SHAPES["xlm-roberta-base-ViT-B-32"]
    assert flavour == "xlmr"
    assert (vit.image.width, vit.image.layers, vit.image.heads) == (768, 12, 12)
    assert (vit.patch, vit.image_size, vit.vocab, vit.embed_dim) == (32, 224, 250_002, 512)
    flavour, siglip = SHAPES["siglip-base-patch16-256-multilingual"]
    assert flavour == "siglip"
    assert (siglip.patch, siglip.image_size, siglip.context_length) == (16, 256, 64)
    assert (siglip.text.width, siglip.text.layers, siglip.vocab) == (768, 12, 250_000)


def test_weights_past_the_limit_are_saved_beside_the_graph_and_load(tmp_path, monkeypatch):
    monkeypatch.setattr(tiny_clip, "EXTERNAL_DATA_ABOVE", 10_000)
    folder = build_clip(str(tmp_path / "big"), "xlmr")
    assert {"image.onnx.data", "text.onnx.data"} <= set(os.listdir(folder))
    assert os.path.getsize(os.path.join(folder, "text.onnx")) < 20_000
    embeddings, _ = embed_texts(Preprocessor(folder), ClipModel(folder, "cpu"), ["سوق"])
    assert embeddings.shape == (1, read_spec(folder).embedding_dim)


def test_an_unknown_flavour_or_an_impossible_shape_is_refused(tmp_path):
    with pytest.raises(ValueError, match="flavour must be one of siglip, xlmr"):
        build_clip(str(tmp_path / "m"), "clip")
    tower = TowerShape(width=30, layers=1, heads=4, mlp=8)
    shape = ClipShape(tower, tower, patch=8, image_size=32, context_length=8, embed_dim=30)
    with pytest.raises(ValueError, match="not a multiple of heads"):
        build_clip(str(tmp_path / "m"), "xlmr", shape=shape)
