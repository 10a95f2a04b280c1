"""The CLIP folder format and its ONNX Runtime runtime, on the tiny random models of both flavours
(random weights: the contracts, not the meaning)."""

from __future__ import annotations

import io
import json
import os
import shutil

import numpy as np
import onnxruntime
import pytest
from image_samples import encode, jpeg, photo
from PIL import Image
from url_filesystem import UrlFileSystem

from pipeline.scoring import model as clip
from pipeline.scoring.model import (
    ClipFolderError,
    ClipModel,
    ClipSpec,
    Preprocessor,
    UnreadableImage,
    clean_text,
    describe,
    embed_images,
    embed_texts,
    local_folder,
    read_spec,
)
from translators.ctranslate import MODEL_CACHE_ENV

CAPTIONS = [
    "قطة نائمة على أريكة حمراء.",
    "رجل يركب دراجة في شارع المدينة.",
    "A cat sleeping on a red sofa.",
    "سوق",
]
LONG = " ".join(["مسجد قديم بمئذنة عالية عند الغروب في وسط المدينة القديمة"] * 12)


class Recording:
    """An ONNX Runtime session that keeps every input it was run on."""

    def __init__(self, session):
        self._session = session
        self.fed: list[np.ndarray] = []

    def get_inputs(self):
        return self._session.get_inputs()

    def run(self, outputs, feeds):
        self.fed.extend(feeds.values())
        return self._session.run(outputs, feeds)


def copy_with(folder: str, target, **text) -> str:
    """A copy of the model folder whose clip.json `text` section has `text` changed."""
    target = str(target)
    shutil.copytree(folder, target)
    path = os.path.join(target, "clip.json")
    with open(path, encoding="utf-8") as f:
        raw = json.load(f)
    raw["text"].update(text)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(raw, f)
    return target


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b))


# ---------------------------------------------------------------------------- text


def test_siglip_feeds_exactly_the_context_padded_with_the_folders_pad_id(siglip_model):
    prep, model = Preprocessor(siglip_model), ClipModel(siglip_model, "cpu")
    spec = prep.spec
    assert spec.context_length == 64
    eos = prep.tokenizer.token_to_id("</s>")
    assert spec.pad_id not in (0, eos)  # a runtime padding with 0 or the eos id is caught
    model.text_session = Recording(model.text_session)
    embed_texts(prep, model, CAPTIONS)
    (ids,) = model.text_session.fed
    assert ids.dtype == np.int64 and ids.shape == (len(CAPTIONS), 64)
    for row, caption in zip(ids, CAPTIONS, strict=True):
        tokens = prep.tokenizer.encode(clean_text(caption, spec.clean)).ids
        assert tokens[-1] == eos
        assert list(row[: len(tokens)]) == tokens
        assert set(row[len(tokens) :]) == {spec.pad_id}


def test_a_wrong_pad_id_moves_a_siglip_embedding(siglip_model, tmp_path):
    wrong = copy_with(siglip_model, tmp_path / "pad0", pad_id=0)
    right, _ = embed_texts(Preprocessor(siglip_model), ClipModel(siglip_model, "cpu"), CAPTIONS)
    moved, _ = embed_texts(Preprocessor(wrong), ClipModel(wrong, "cpu"), CAPTIONS)
    for a, b in zip(right, moved, strict=True):
        assert cosine(a, b) < 0.999


def test_siglip_cleans_captions_as_its_tokenizer_was_trained():
    assert clean_text("  A Cat,  on the SOFA!  ", "canonicalize") == "a cat on the sofa"
    # Only ASCII punctuation goes: the Arabic comma and question mark stay.
    assert clean_text("قطة، أين؟ (نعم)", "canonicalize") == "قطة، أين؟ نعم"
    assert clean_text("  A Cat,\n on", "lower") == "a cat, on"
    assert clean_text("  A Cat,\n on", "whitespace") == "A Cat, on"


def test_a_caption_longer_than_the_context_is_cut_keeping_its_end_token(clip_model):
    prep = Preprocessor(clip_model)
    batch = prep.ids([LONG, "سوق"])
    assert batch.truncated == [True, False]
    end = prep.tokenizer.token_to_id("</s>")
    assert batch.ids.shape[1] == prep.spec.context_length  # the long one fills the context
    assert batch.ids[0, -1] == end
    assert prep.spec.pad_id not in batch.ids[0]


def test_xlmr_pads_to_the_longest_and_a_captions_embedding_ignores_its_batch(xlmr_model):
    prep, model = Preprocessor(xlmr_model), ClipModel(xlmr_model, "cpu")
    assert prep.spec.padding == "longest"
    model.text_session = Recording(model.text_session)
    alone, _ = embed_texts(prep, model, ["سوق"])
    together, truncated = embed_texts(prep, model, ["سوق", LONG, CAPTIONS[0]])
    short, long = model.text_session.fed
    assert short.shape == (1, len(prep.tokenizer.encode("سوق").ids))
    assert long.shape == (3, prep.spec.context_length) and truncated == [False, True, False]
    assert set(long[0, short.shape[1] :]) == {prep.spec.pad_id}
    # The graph masks the pad: the same embedding, however much padding the batch adds.
    np.testing.assert_allclose(together[0], alone[0], atol=1e-5)


# ---------------------------------------------------------------------------- embeddings


def test_embeddings_are_unit_length_deterministic_and_tell_inputs_apart(clip_model):
    images = [jpeg(64, 48, seed=s) for s in range(3)]
    runs = []
    for _ in range(2):
        prep, model = Preprocessor(clip_model), ClipModel(clip_model, "cpu")
        texts, _ = embed_texts(prep, model, CAPTIONS)
        pictures, errors = embed_images(prep, model, images)
        assert errors == [None] * 3
        runs.append((texts, pictures))
    (texts, pictures), (again_texts, again_pictures) = runs
    dim = read_spec(clip_model).embedding_dim
    for embeddings in (texts, pictures):
        assert embeddings.dtype == np.float32 and embeddings.shape[1] == dim
        np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
        similarity = embeddings @ embeddings.T
        assert similarity[~np.eye(len(embeddings), dtype=bool)].max() < 0.999
    np.testing.assert_array_equal(texts, again_texts)
    np.testing.assert_array_equal(pictures, again_pictures)
    one_thread, _ = embed_texts(Preprocessor(clip_model), ClipModel(clip_model, "cpu", 1), CAPTIONS)
    np.testing.assert_allclose(one_thread, texts, atol=1e-6)


def test_an_image_is_squashed_or_centre_cropped_then_normalised(siglip_model, xlmr_model):
    gradient = np.tile(np.arange(80, dtype=np.uint8)[None, :, None] * 3, (40, 1, 3))
    data = encode(Image.fromarray(gradient, "RGB"), "PNG")  # 80 x 40: wide
    for folder in (siglip_model, xlmr_model):
        spec = read_spec(folder)
        size = spec.image_size
        img = Image.open(io.BytesIO(data)).convert("RGB")
        if spec.resize == "squash":
            expected = img.resize((size, size), Image.Resampling.BICUBIC)
        else:  # the shorter side to `size`, then the central square (torchvision's rules)
            wide = img.resize((size * 2, size), Image.Resampling.BICUBIC)
            expected = wide.crop((size // 2, 0, size // 2 + size, size))
        scaled = np.asarray(expected, np.float32) / 255
        want = ((scaled - np.asarray(spec.mean)) / np.asarray(spec.std)).transpose(2, 0, 1)
        got = clip.image_pixels(data, spec)
        assert got.shape == (3, size, size) and got.dtype == np.float32
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_a_grey_image_normalises_to_the_specs_mean_and_std(xlmr_model):
    spec = read_spec(xlmr_model)
    data = encode(Image.new("RGB", (50, 70), (128, 128, 128)), "PNG")
    pixels = clip.image_pixels(data, spec)
    for channel, (mean, std) in enumerate(zip(spec.mean, spec.std, strict=True)):
        np.testing.assert_allclose(pixels[channel], (128 / 255 - mean) / std, atol=1e-5)


def test_bytes_pillow_cannot_decode_are_reported_not_raised(siglip_model):
    prep, model = Preprocessor(siglip_model), ClipModel(siglip_model, "cpu")
    good = jpeg(64, 48, seed=1)
    gif = encode(photo(40, 40), "GIF")  # an image, but never one the images stage stores
    embeddings, errors = embed_images(prep, model, [b"not an image", good, good[:200], gif])
    assert errors[1] is None
    assert errors[0].startswith("not an image: 12 bytes")
    assert errors[2] and errors[3]
    assert embeddings.shape == (1, prep.spec.embedding_dim)
    with pytest.raises(UnreadableImage):
        prep.pixels(b"")
    # Nothing decodable: an empty batch, and the sessions are not called.
    embeddings, errors = embed_images(prep, model, [b"x"])
    assert embeddings.shape == (0, prep.spec.embedding_dim) and errors[0]


# ---------------------------------------------------------------------------- the folder


def test_clip_json_round_trips_and_every_problem_is_named_at_once(siglip_model):
    spec = read_spec(siglip_model)
    assert ClipSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec
    raw = spec.to_json()
    raw["flavour"] = "clip"
    raw["image"]["std"] = [0.5, 0, 0.5]
    raw["text"]["pad_id"] = -1
    raw["text"]["context_length"] = True
    with pytest.raises(ClipFolderError) as caught:
        ClipSpec.from_json(raw)
    message = str(caught.value)
    for problem in (
        "flavour: expected one of siglip, xlmr, got 'clip'",
        "image.std: expected 3 numbers",
        "text.pad_id: expected an integer >= 0, got -1",
        "text.context_length: expected a positive integer, got True",
    ):
        assert problem in message
    raw = spec.to_json()
    raw["text"]["padding"] = "longest"
    with pytest.raises(ClipFolderError, match="siglip reads its embedding at the last position"):
        ClipSpec.from_json(raw)


def test_a_folder_that_is_not_a_model_says_what_it_lacks(siglip_model, tmp_path):
    with pytest.raises(ClipFolderError, match="not a CLIP model folder .no clip.json, image.onnx"):
        read_spec(str(tmp_path))
    broken = tmp_path / "broken"
    shutil.copytree(siglip_model, broken)
    (broken / "clip.json").write_text("{", encoding="utf-8")
    with pytest.raises(ClipFolderError, match="clip.json cannot be read"):
        describe(str(broken))
    assert describe(siglip_model) == "random-siglip-clip (siglip, ONNX)"


def test_a_remote_folder_is_copied_once_and_embeds_as_the_local_one(
    siglip_model, tmp_path, monkeypatch
):
    monkeypatch.setattr(UrlFileSystem, "root", os.path.dirname(siglip_model))
    monkeypatch.setattr(UrlFileSystem, "opened", [])
    monkeypatch.setenv(MODEL_CACHE_ENV, str(tmp_path / "cache"))
    remote = f"urltestfs://{os.path.basename(siglip_model)}"
    assert describe(remote) == describe(siglip_model)
    copy = local_folder(remote)
    assert copy.startswith(str(tmp_path / "cache"))
    assert sorted(os.listdir(copy)) == sorted(os.listdir(siglip_model))
    opened = len(UrlFileSystem.opened)
    here, _ = embed_texts(Preprocessor(copy), ClipModel(local_folder(remote), "cpu"), CAPTIONS)
    assert len(UrlFileSystem.opened) == opened  # loading again read nothing more
    local, _ = embed_texts(Preprocessor(siglip_model), ClipModel(siglip_model, "cpu"), CAPTIONS)
    np.testing.assert_array_equal(here, local)


# ---------------------------------------------------------------------------- devices


def test_auto_takes_cuda_only_when_onnx_runtime_has_its_provider(monkeypatch):
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: [clip.CPU])
    assert clip.resolve_device("auto") == "cpu"
    assert clip.providers("auto") == [clip.CPU]
    with pytest.raises(RuntimeError, match="install the onnxruntime-gpu wheel"):
        clip.providers("cuda")
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: [clip.CUDA, clip.CPU])
    assert clip.resolve_device("auto") == "cuda"
    assert clip.providers("auto") == [clip.CUDA, clip.CPU]
    assert clip.providers("cpu") == [clip.CPU]
    with pytest.raises(ValueError, match="device must be one of"):
        clip.resolve_device("tpu")


def test_a_cuda_provider_that_cannot_start_is_an_error_not_a_silent_cpu_run(
    siglip_model, monkeypatch
):
    # The provider is listed but the session runs on CPU (missing CUDA libraries): refused.
    monkeypatch.setattr(clip, "providers", lambda device: [clip.CUDA, clip.CPU])
    real = onnxruntime.InferenceSession

    def on_cpu(path, options, providers):
        return real(path, options, providers=[clip.CPU])

    monkeypatch.setattr(onnxruntime, "InferenceSession", on_cpu)
    with pytest.raises(RuntimeError, match="could not start CUDAExecutionProvider"):
        ClipModel(siglip_model, "cuda")
