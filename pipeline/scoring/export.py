"""`make clip-model`: a published multilingual CLIP exported to the folder `pipeline.scoring.model`
reads. Needs internet once and the `convert` extra (torch, transformers, open_clip_torch, onnx,
onnxscript), all imported here lazily; building a dataset needs only onnxruntime and tokenizers.

    python -m pipeline.scoring.export OUT_DIR [--model siglip|xlmr]

- `siglip` (the default): `google/siglip-base-patch16-256-multilingual` (Apache-2.0, ~371M
  parameters) from the Hugging Face Hub through transformers. Its processor resizes to 256 x 256
  without a crop (bicubic), scales to [0, 1] and normalises with mean = std = 0.5; its tokenizer
  (SentencePiece) lowercases, removes ASCII punctuation, appends `</s>` and is used with
  `padding="max_length"` to 64 tokens: the text embedding is the last position's state.
- `xlmr`: open_clip's `xlm-roberta-base-ViT-B-32` with the `laion5b_s13b_b90k` weights (MIT),
  faster (a ViT-B/32 at 224 px): the shorter side resized to 224 then centre-cropped, OpenAI's
  CLIP mean and std; XLM-R's tokenizer (`<s> … </s>`, pad id 1, 77 tokens at most), the mask
  built from the pad id inside the text tower.

Each tower is wrapped in a module that takes one tensor and returns the pooled, projected
embedding (not normalised: the runtime normalises), and exported with `torch.onnx.export` (batch
dimension dynamic; XLM-R's sequence length too). The tokenizer is saved as `tokenizer.json`: the
published fast tokenizer where there is one, else (SigLIP's SentencePiece tokenizer) its pieces
converted by transformers' `SpmConverter` with `</s>` appended. `clip.json` is written from the
processor's and tokenizer's own settings, never from constants here.

The export then checks itself on captions and generated pictures, and stops with `ExportCheck`
rather than leave a folder that scores differently from the published model: the runtime's token
ids equal the published tokenizer's; its pixels equal the published processor's (up to a level
where the processor resizes with torchvision); and the ONNX towers give the torch towers'
embeddings on the same inputs (cosine >= 0.9999). The folder is built beside OUT_DIR and
renamed into place when whole. The published weights need the Hub; the tests run the same
export on tiny random models built offline, where torch is installed
(`tests/pipeline/scoring/test_clip_export.py`).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.folders import building
from pipeline.scoring.model import (
    TOKENIZER_JSON,
    ClipModel,
    ClipSpec,
    Preprocessor,
    encode_texts,
    load_tokenizer,
    write_spec,
)

SIGLIP = "google/siglip-base-patch16-256-multilingual"
XLMR = ("xlm-roberta-base-ViT-B-32", "laion5b_s13b_b90k")
MODELS = {"siglip": SIGLIP, "xlmr": f"{XLMR[0]} ({XLMR[1]})"}
# Where `make clip-model` puts each one, under MODELS (models/ by default).
FOLDER_NAMES = {
    "siglip": "siglip-base-patch16-256-multilingual-onnx",
    "xlmr": "xlm-roberta-base-ViT-B-32-onnx",
}
OPSET = 18
MIN_COSINE = 0.9999  # torch against ONNX Runtime, per embedding
# Mean absolute difference of normalised pixels, runtime against the published processor: 0
# against PIL-based ones (open_clip's, SiglipImageProcessorPil), about 1e-5 against the
# torchvision-based SiglipImageProcessor (a level here and there); a wrong rule is far above.
MAX_PIXEL_GAP = 0.01
# PIL's resampling filters by their number, as processors store them.
RESAMPLE = {2: "bilinear", 3: "bicubic"}
# open_clip's resize modes, by what the runtime calls them.
RESIZE_MODES = {"squash": "squash", "shortest": "center_crop"}
# open_clip's caption cleaning functions, by the runtime's names (`clip.json` text.clean).
OPEN_CLIP_CLEAN = {
    "_clean_canonicalize": "canonicalize",
    "_clean_lower": "lower",
    "_clean_whitespace": "whitespace",
}
CHECK_CAPTIONS = (
    "قطة نائمة على أريكة حمراء.",
    "رجل يركب دراجة في شارع المدينة، عند الغروب!",
    "A Man riding a bicycle (downtown), at 5 PM.",
    "Two dogs — playing with a ball on the grass",
    "مسجد",
    " ".join(["سوق قديم مزدحم بالناس في وسط المدينة عند المساء"] * 12),  # past the context
)


class ExportCheck(RuntimeError):
    """The exported folder would not score as the published model does."""


@dataclass
class Published:
    """A published model, loaded: its towers as torch modules taking one tensor each, its
    tokenizer as a `tokenizers.Tokenizer`, the spec, and the published preprocessing (ids of
    captions, pixels of PIL images) to check the runtime's against."""

    spec: ClipSpec
    image_tower: Any
    text_tower: Any
    tokenizer: Any
    reference_ids: Callable[[Sequence[str]], np.ndarray]
    reference_pixels: Callable[[Sequence[Any]], np.ndarray]
    licence: str
    source: str


def resample_name(resample: Any) -> str:
    """`bicubic` or `bilinear` from a processor's resampling (a PIL filter, number or name)."""
    value = getattr(resample, "value", resample)
    if isinstance(value, str):
        value = value.lower()
        if value in RESAMPLE.values():
            return value
    elif int(value) in RESAMPLE:
        return RESAMPLE[int(value)]
    raise ExportCheck(f"resampling {resample!r} is not one the runtime has (bicubic, bilinear)")


def siglip_spec(
    name: str,
    *,
    size: Any,
    resample: Any,
    mean: Sequence[float],
    std: Sequence[float],
    do_center_crop: bool,
    context_length: int,
    pad_id: int,
    do_lower_case: bool,
    embedding_dim: int,
) -> ClipSpec:
    """The spec of a SigLIP model from its processor's and tokenizer's settings."""
    if not isinstance(size, int):  # {"height", "width"}, or transformers' SizeDict
        if isinstance(size, dict):
            height, width = size.get("height"), size.get("width")
        else:
            height, width = getattr(size, "height", None), getattr(size, "width", None)
        if height is None or height != width:
            raise ExportCheck(f"a square image size is expected, the processor has {size}")
        size = height
    if do_center_crop:
        raise ExportCheck("SigLIP's processor is expected to resize without a crop")
    if not do_lower_case:
        raise ExportCheck("SigLIP's tokenizer is expected to lowercase (do_lower_case)")
    return ClipSpec(
        name=name,
        flavour="siglip",
        embedding_dim=embedding_dim,
        image_size=int(size),
        resize="squash",
        resample=resample_name(resample),
        mean=tuple(float(v) for v in mean),
        std=tuple(float(v) for v in std),
        context_length=context_length,
        pad_id=pad_id,
        padding="max_length",
        clean="canonicalize",
    )


def open_clip_spec(
    name: str,
    preprocess: dict,
    *,
    context_length: int,
    pad_id: int,
    clean: str,
    embedding_dim: int,
) -> ClipSpec:
    """The spec of an open_clip model with a Hugging Face text tower (XLM-R) from its
    preprocessing config (`open_clip.get_model_preprocess_cfg`) and tokenizer."""
    size = preprocess.get("size", 224)
    if isinstance(size, (tuple, list)):
        if len(set(size)) != 1:
            raise ExportCheck(f"a square image size is expected, open_clip has {size}")
        size = size[0]
    mode = preprocess.get("resize_mode", "shortest")
    if mode not in RESIZE_MODES:
        raise ExportCheck(f"open_clip resize_mode {mode!r} is not one the runtime has")
    if clean not in OPEN_CLIP_CLEAN:
        raise ExportCheck(f"open_clip's caption cleaning {clean!r} is not one the runtime has")
    return ClipSpec(
        name=name,
        flavour="xlmr",
        embedding_dim=embedding_dim,
        image_size=int(size),
        resize=RESIZE_MODES[mode],
        resample=resample_name(preprocess.get("interpolation", "bicubic")),
        mean=tuple(float(v) for v in preprocess["mean"]),
        std=tuple(float(v) for v in preprocess["std"]),
        context_length=context_length,
        pad_id=pad_id,
        padding="longest",
        clean=OPEN_CLIP_CLEAN[clean],
    )


def fast_tokenizer(tokenizer: Any):
    """A `tokenizers.Tokenizer` for a transformers tokenizer: its own backend where it has one,
    else its SentencePiece model's pieces, `</s>` appended (SigLIP's rule)."""
    from tokenizers import Tokenizer, processors

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return Tokenizer.from_str(backend.to_str())
    from transformers.convert_slow_tokenizer import SpmConverter
    from transformers.utils import sentencepiece_model_pb2_new

    eos = tokenizer.convert_tokens_to_ids("</s>")

    class EosAfter(SpmConverter):
        def __init__(self, original):
            # transformers' own copy of SentencePiece's proto: the one the sentencepiece wheel
            # ships needs a newer protobuf than the one installed with it here.
            self.original_tokenizer = original
            self.proto = sentencepiece_model_pb2_new.ModelProto()
            with open(original.vocab_file, "rb") as f:
                self.proto.ParseFromString(f.read())

        def post_processor(self):
            return processors.TemplateProcessing(
                single=["$A", "</s>"],
                pair=["$A", "</s>", "$B", "</s>"],
                special_tokens=[("</s>", eos)],
            )

    return EosAfter(tokenizer).converted()


def siglip(model: Any, tokenizer: Any, processor: Any, name: str = SIGLIP) -> Published:
    """A transformers SigLIP model, tokenizer and image processor as a `Published`."""
    import torch

    class ImageTower(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, pixel_values):
            out = self.model.get_image_features(pixel_values=pixel_values)
            return out if isinstance(out, torch.Tensor) else out.pooler_output

    class TextTower(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids):
            out = self.model.get_text_features(input_ids=input_ids)
            return out if isinstance(out, torch.Tensor) else out.pooler_output

    context = model.config.text_config.max_position_embeddings
    spec = siglip_spec(
        name,
        size=processor.size,
        resample=processor.resample,
        mean=processor.image_mean,
        std=processor.image_std,
        do_center_crop=bool(getattr(processor, "do_center_crop", False)),
        context_length=context,
        pad_id=tokenizer.pad_token_id,
        do_lower_case=getattr(tokenizer, "do_lower_case", True),
        embedding_dim=model.config.vision_config.hidden_size,
    )

    def reference_ids(texts):
        encoded = tokenizer(list(texts), padding="max_length", max_length=context, truncation=True)
        return np.asarray(encoded["input_ids"], dtype=np.int64)

    def reference_pixels(images):
        pixels = processor(images=list(images), return_tensors="pt")["pixel_values"]
        return pixels.numpy().astype(np.float32)

    return Published(
        spec,
        ImageTower().eval(),
        TextTower().eval(),
        fast_tokenizer(tokenizer),
        reference_ids,
        reference_pixels,
        licence="Apache-2.0",
        source=f"https://huggingface.co/{name}",
    )


def open_clip_model(
    model: Any, tokenizer: Any, preprocess: Callable, preprocess_cfg: dict, name: str
) -> Published:
    """An open_clip model with a Hugging Face text tower, its `HFTokenizer` and its image
    transform as a `Published`."""
    import torch

    class ImageTower(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, pixel_values):
            return self.model.encode_image(pixel_values)

    class TextTower(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids):
            return self.model.encode_text(input_ids)

    hf = tokenizer.tokenizer
    spec = open_clip_spec(
        name,
        preprocess_cfg,
        context_length=tokenizer.context_length,
        pad_id=hf.pad_token_id,
        clean=tokenizer.clean_fn.__name__,
        embedding_dim=_embedding_dim(model),
    )

    def reference_ids(texts):
        return tokenizer(list(texts)).numpy().astype(np.int64)

    def reference_pixels(images):
        return torch.stack([preprocess(img) for img in images]).numpy().astype(np.float32)

    return Published(
        spec,
        ImageTower().eval(),
        TextTower().eval(),
        fast_tokenizer(hf),
        reference_ids,
        reference_pixels,
        licence="MIT",
        source="https://github.com/mlfoundations/open_clip",
    )


def _embedding_dim(model: Any) -> int:
    """The joint embedding size of an open_clip model, from one image through it."""
    import torch

    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    with torch.no_grad():
        return int(model.encode_image(torch.zeros(1, 3, size, size)).shape[-1])


def _export(module: Any, example: Any, path: str, input_name: str, dynamic_length: bool) -> None:
    """`module` as an ONNX graph at `path`, its batch dimension (and with `dynamic_length` its
    second one) left free: the dynamo exporter, or the TorchScript one where the dynamo
    exporter fails on the model."""
    import torch

    output = "image_embeds" if input_name == "pixel_values" else "text_embeds"
    names = {"input_names": [input_name], "output_names": [output], "opset_version": OPSET}
    free = {0: torch.export.Dim.DYNAMIC}
    if dynamic_length:
        free[1] = torch.export.Dim.DYNAMIC
    with torch.no_grad():
        try:
            torch.onnx.export(
                module,
                (example,),
                path,
                dynamo=True,
                external_data=True,
                dynamic_shapes={input_name: free},
                **names,
            )
        except Exception as err:  # noqa: BLE001 - any failure of the new exporter: the old one
            print(f"{os.path.basename(path)}: the dynamo exporter failed ({err}); TorchScript")
            for leftover in (path, path + ".data"):
                if os.path.exists(leftover):
                    os.remove(leftover)
            axes = {0: "batch", 1: "sequence"} if dynamic_length else {0: "batch"}
            torch.onnx.export(
                module,
                (example,),
                path,
                dynamo=False,
                dynamic_axes={input_name: axes, output: {0: "batch"}},
                **names,
            )


def sample_images(size: int, count: int = 3) -> list:
    """Photo-like PIL pictures of several aspect ratios (the crop and squash rules differ)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    shapes = [(size * 2, size + 17), (size - 5, size * 3 // 2), (size, size)]
    images = []
    for width, height in shapes[:count]:
        coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        img = Image.fromarray(coarse, "RGB").resize((width, height), Image.Resampling.BICUBIC)
        images.append(img)
    return images


def _encoded(img: Any) -> bytes:
    import io

    buf = io.BytesIO()
    img.save(buf, "PNG")  # lossless: the runtime decodes the very pixels the processor sees
    return buf.getvalue()


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


def check(published: Published, folder: str) -> dict[str, float]:
    """Compares the exported folder with the published model (see the module docstring);
    raises `ExportCheck`, else returns what it measured."""
    import torch

    spec = published.spec
    tokenizer = load_tokenizer(folder, spec)
    ours = encode_texts(tokenizer, spec, CHECK_CAPTIONS).ids
    theirs = published.reference_ids(CHECK_CAPTIONS)
    width = ours.shape[1]
    if (
        ours.shape[0] != theirs.shape[0]
        or (ours != theirs[:, :width]).any()
        or (theirs[:, width:] != spec.pad_id).any()
    ):
        raise ExportCheck(f"token ids differ from the published tokenizer's:\n{ours}\n{theirs}")

    prep, model = Preprocessor(folder), ClipModel(folder, "cpu")
    images = sample_images(spec.image_size)
    pixels = np.stack([prep.pixels(_encoded(img)) for img in images])
    reference = published.reference_pixels(images)
    if pixels.shape != reference.shape:
        raise ExportCheck(f"pixels of shape {pixels.shape}, the processor's {reference.shape}")
    gap = float(np.abs(pixels - reference).mean())
    if gap > MAX_PIXEL_GAP:
        raise ExportCheck(f"pixels differ from the processor's by {gap:.3f} on average")

    with torch.no_grad():
        torch_images = published.image_tower(torch.from_numpy(reference)).numpy()
        torch_texts = published.text_tower(torch.from_numpy(theirs)).numpy()
    onnx_images = model.image_embeddings(reference.astype(np.float32))
    onnx_texts = model.text_embeddings(ours)
    worst = float(
        min(_cosines(torch_images, onnx_images).min(), _cosines(torch_texts, onnx_texts).min())
    )
    if worst < MIN_COSINE:
        raise ExportCheck(f"ONNX Runtime's embeddings differ from torch's: cosine {worst:.6f}")
    return {"pixel_gap": gap, "min_cosine": worst}


def export(published: Published, folder: str) -> dict[str, float]:
    """Writes the model folder for `published` into `folder` (created) and checks it."""
    import torch

    spec = published.spec
    os.makedirs(folder, exist_ok=True)
    pixels = torch.zeros(2, 3, spec.image_size, spec.image_size)
    _export(
        published.image_tower, pixels, os.path.join(folder, "image.onnx"), "pixel_values", False
    )
    length = spec.context_length if spec.padding == "max_length" else min(16, spec.context_length)
    ids = torch.full((2, length), spec.pad_id, dtype=torch.int64)
    ids[:, : length // 2] = torch.arange(5, 5 + length // 2)
    _export(
        published.text_tower,
        ids,
        os.path.join(folder, "text.onnx"),
        "input_ids",
        spec.padding == "longest",
    )
    published.tokenizer.save(os.path.join(folder, TOKENIZER_JSON))
    write_spec(folder, spec)
    with open(os.path.join(folder, "README.md"), "w", encoding="utf-8") as f:
        f.write(
            f"# {spec.name}\n\nExported to ONNX by arabic-pairs (`make clip-model`) from "
            f"{published.source}; licence {published.licence}. The folder format is described "
            "in `pipeline/scoring/model.py`.\n"
        )
    return check(published, folder)


def load_published(which: str) -> Published:
    """The published model `siglip` or `xlmr`, downloaded (cached by the Hub client)."""
    if which == "siglip":
        from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

        model = AutoModel.from_pretrained(SIGLIP).eval()
        tokenizer = AutoTokenizer.from_pretrained(SIGLIP)
        processor = AutoImageProcessor.from_pretrained(SIGLIP)
        return siglip(model, tokenizer, processor)
    import open_clip

    model, _, preprocess = open_clip.create_model_and_transforms(XLMR[0], pretrained=XLMR[1])
    tokenizer = open_clip.get_tokenizer(XLMR[0])
    cfg = open_clip.get_model_preprocess_cfg(model)
    return open_clip_model(model.eval(), tokenizer, preprocess, cfg, f"{XLMR[0]} ({XLMR[1]})")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.scoring.export", description=__doc__)
    parser.add_argument("out_dir", help="the model folder to create (replaced when it exists)")
    parser.add_argument("--model", choices=sorted(MODELS), default="siglip")
    args = parser.parse_args(argv)
    published = load_published(args.model)
    with building(args.out_dir, ".clip-export-") as tmp:
        measured = export(published, tmp)
    print(
        f"{args.out_dir}: {published.spec.name}, checked against torch (cosine >= "
        f"{measured['min_cosine']:.6f}, pixels within {measured['pixel_gap']:.4f} on average)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
