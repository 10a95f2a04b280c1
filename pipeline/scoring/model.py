"""A multilingual CLIP model folder and its runtime on ONNX Runtime (no torch).

The folder (`make clip-model` writes one from the published weights, `pipeline.scoring.export`;
`standins.tiny_clip` builds random ones for the tests):

    image.onnx      `pixel_values` float32 [batch, 3, S, S], resized and normalised
                    → image embeddings [batch, D]
    text.onnx       `input_ids` int64 [batch, length] → text embeddings [batch, D]
    tokenizer.json  a `tokenizers` tokenizer, its post-processor adding the model's specials
                    (SigLIP: `</s>` after the pieces; XLM-R: `<s> … </s>`)
    clip.json       how to feed the towers:
        name            the published model (`google/siglip-base-patch16-256-multilingual`)
        flavour         `siglip` | `xlmr`: the text tower's contract, below
        embedding_dim   D
        image           size S; resize: `squash` (to S x S, the aspect not kept: SigLIP's
                        processor) | `center_crop` (the shorter side to S, then the central
                        S x S: CLIP's and open_clip's); resample: `bicubic` | `bilinear`;
                        mean, std: per RGB channel, of pixels scaled to [0, 1]
        text            context_length: the most tokens, specials included; pad_id; padding:
                        `max_length` (always exactly context_length) | `longest` (the batch's
                        longest caption); clean: `canonicalize` (lowercased, ASCII punctuation
                        removed, whitespace collapsed: SigLIP's tokenizer) | `lower` |
                        `whitespace` (open_clip's names)
    image.onnx.data, text.onnx.data   weights beside a graph that would pass protobuf's 2 GB

The text towers' contracts. SigLIP's text embedding is read at the LAST position with no
attention mask: the padding is part of its input, so a caption is padded to exactly
`context_length` tokens with the folder's own pad id (any other id moves the embedding; with
the published model, by up to a fifth of a cosine). XLM-R's graph builds its attention mask
from `ids != pad_id` itself, so a batch is padded only to its longest caption and a caption's
embedding does not depend on the others of its batch.

A caption longer than `context_length` tokens is truncated (the tokenizer keeps its end token):
it is scored on its first tokens, and reported (`TextBatch.truncated`; the stage counts it).
An image is decoded with Pillow, made RGB (alpha dropped, as both published preprocessors do),
resized and normalised; bytes Pillow cannot decode raise `UnreadableImage`. Every embedding is
L2-normalised float32, so a cosine is a dot product.

A folder on a Beam filesystem (`gs://`, `s3://`) is copied to the machine once
(`translators.ctranslate.local_model`). Nothing here imports Beam or torch.
"""

from __future__ import annotations

import io
import json
import os
import re
import string
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np

FLAVOURS = ("siglip", "xlmr")
RESIZES = ("squash", "center_crop")
RESAMPLES = ("bicubic", "bilinear")
PADDINGS = ("max_length", "longest")
CLEANS = ("canonicalize", "lower", "whitespace")
DEVICES = ("auto", "cpu", "cuda")

CLIP_JSON = "clip.json"
IMAGE_ONNX = "image.onnx"
TEXT_ONNX = "text.onnx"
TOKENIZER_JSON = "tokenizer.json"
FOLDER_FILES = (CLIP_JSON, IMAGE_ONNX, TEXT_ONNX, TOKENIZER_JSON)
# The encodings the images stage stores (`pipeline.config.IMAGE_FORMATS`): nothing else is
# opened, so no Pillow plugin that runs an outside program is ever reached.
STORED_FORMATS = ("JPEG", "PNG", "WEBP")
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"

_PUNCTUATION = str.maketrans("", "", string.punctuation)
_SPACES = re.compile(r"\s+")


class ClipFolderError(ValueError):
    """A folder that is not a multilingual CLIP model folder of this format."""


class UnreadableImage(ValueError):
    """Image bytes that Pillow cannot decode."""


@dataclass(frozen=True)
class ClipSpec:
    """`clip.json`, checked: how a model folder's towers are fed (see the module docstring)."""

    name: str
    flavour: str
    embedding_dim: int
    image_size: int
    resize: str
    resample: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    context_length: int
    pad_id: int
    padding: str
    clean: str

    @classmethod
    def from_json(cls, raw: Any) -> ClipSpec:
        """The spec of a parsed `clip.json`; every problem at once in a `ClipFolderError`."""
        problems: list[str] = []
        if not isinstance(raw, dict):
            raise ClipFolderError(f"{CLIP_JSON}: expected an object, got {type(raw).__name__}")
        image, text = raw.get("image"), raw.get("text")
        image = image if isinstance(image, dict) else {}
        text = text if isinstance(text, dict) else {}

        def get(where: str, section: dict, key: str, kind, choices=None):
            value = section.get(key)
            ok = isinstance(value, kind) and not isinstance(value, bool)
            if ok and choices is not None:
                ok = value in choices
            if ok and kind is int:
                ok = value > 0 or (key == "pad_id" and value >= 0)
            if not ok:
                wanted = f"one of {', '.join(choices)}" if choices else kind.__name__
                if kind is int:
                    wanted = "an integer >= 0" if key == "pad_id" else "a positive integer"
                problems.append(f"{where}{key}: expected {wanted}, got {value!r}")
            return value

        def triple(key: str) -> tuple[float, float, float] | None:
            value = image.get(key)
            if (
                isinstance(value, list)
                and len(value) == 3
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
                and (key == "mean" or all(v > 0 for v in value))
            ):
                return tuple(float(v) for v in value)
            problems.append(f"image.{key}: expected 3 numbers, one per RGB channel, got {value!r}")
            return None

        values = {
            "name": get("", raw, "name", str),
            "flavour": get("", raw, "flavour", str, FLAVOURS),
            "embedding_dim": get("", raw, "embedding_dim", int),
            "image_size": get("image.", image, "size", int),
            "resize": get("image.", image, "resize", str, RESIZES),
            "resample": get("image.", image, "resample", str, RESAMPLES),
            "mean": triple("mean"),
            "std": triple("std"),
            "context_length": get("text.", text, "context_length", int),
            "pad_id": get("text.", text, "pad_id", int),
            "padding": get("text.", text, "padding", str, PADDINGS),
            "clean": get("text.", text, "clean", str, CLEANS),
        }
        if values["flavour"] == "siglip" and values["padding"] == "longest":
            problems.append(
                "text.padding: siglip reads its embedding at the last position without a mask, "
                "so it needs max_length"
            )
        if problems:
            raise ClipFolderError("; ".join(f"{CLIP_JSON} {p}" for p in problems))
        return cls(**values)

    def to_json(self) -> dict:
        """`clip.json`'s content for this spec."""
        d = asdict(self)
        return {
            "name": d["name"],
            "flavour": d["flavour"],
            "embedding_dim": d["embedding_dim"],
            "image": {
                "size": d["image_size"],
                "resize": d["resize"],
                "resample": d["resample"],
                "mean": list(d["mean"]),
                "std": list(d["std"]),
            },
            "text": {
                "context_length": d["context_length"],
                "pad_id": d["pad_id"],
                "padding": d["padding"],
                "clean": d["clean"],
            },
        }


def write_spec(folder: str, spec: ClipSpec) -> str:
    """Writes `clip.json` for `spec` into `folder`; returns its path."""
    path = os.path.join(folder, CLIP_JSON)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(spec.to_json(), f, indent=2)
        f.write("\n")
    return path


def local_folder(folder: str) -> str:
    """A local path of the model folder: itself, or the machine's copy of a remote one."""
    if "://" not in folder:
        return folder
    from translators.ctranslate import local_model  # imports Beam: only for remote folders

    return local_model(folder)


def read_spec(folder: str) -> ClipSpec:
    """The checked spec of the local model `folder`; `ClipFolderError` when it is not one."""
    missing = [name for name in FOLDER_FILES if not os.path.isfile(os.path.join(folder, name))]
    if missing:
        raise ClipFolderError(
            f"{folder}: not a CLIP model folder (no {', '.join(missing)}); export one with "
            "`make clip-model`"
        )
    try:
        with open(os.path.join(folder, CLIP_JSON), encoding="utf-8") as f:
            raw = json.load(f)
    except (OSError, ValueError) as err:
        raise ClipFolderError(f"{folder}: {CLIP_JSON} cannot be read ({err})") from None
    try:
        return ClipSpec.from_json(raw)
    except ClipFolderError as err:
        raise ClipFolderError(f"{folder}: {err}") from None


def describe(folder: str) -> str:
    """What the folder holds, for the dataset card and the checks before a run:
    `google/siglip-base-patch16-256-multilingual (siglip, ONNX)`."""
    spec = read_spec(local_folder(folder))
    return f"{spec.name} ({spec.flavour}, ONNX)"


def clean_text(text: str, clean: str) -> str:
    """`text` as the model's tokenizer was given text in training (`clip.json`'s `clean`)."""
    if clean in ("canonicalize", "lower"):
        text = text.lower()
    if clean == "canonicalize":
        text = text.translate(_PUNCTUATION)
    return _SPACES.sub(" ", text).strip()


class TextBatch(NamedTuple):
    """Token ids of a batch of texts, padded as the flavour wants; which were cut."""

    ids: np.ndarray  # int64 [texts, length]
    truncated: list[bool]


def load_tokenizer(folder: str, spec: ClipSpec):
    """The folder's `tokenizers.Tokenizer`, truncating at the context and padding nothing
    (`encode_texts` pads, with the spec's pad id): its own saved settings are replaced."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(os.path.join(folder, TOKENIZER_JSON))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=spec.context_length)
    return tokenizer


def encode_texts(tokenizer, spec: ClipSpec, texts: Sequence[str]) -> TextBatch:
    """The ids of `texts`, cleaned and tokenized, each at most `context_length` tokens (its
    specials included), padded with `pad_id` to `context_length` (`max_length`) or to the
    longest of the batch (`longest`)."""
    encodings = tokenizer.encode_batch([clean_text(t, spec.clean) for t in texts])
    longest = max((len(e.ids) for e in encodings), default=1)
    length = spec.context_length if spec.padding == "max_length" else max(1, longest)
    ids = np.full((len(encodings), length), spec.pad_id, dtype=np.int64)
    for row, encoding in zip(ids, encodings, strict=True):
        row[: len(encoding.ids)] = encoding.ids
    return TextBatch(ids, [bool(e.overflowing) for e in encodings])


def image_pixels(data: bytes, spec: ClipSpec) -> np.ndarray:
    """The float32 [3, S, S] input of the image tower for one encoded image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data), formats=STORED_FORMATS) as img:
            rgb = img.convert("RGB")
    except UnidentifiedImageError:
        raise UnreadableImage(f"not an image: {len(data)} bytes starting {data[:16]!r}") from None
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as err:
        raise UnreadableImage(f"{type(err).__name__}: {err}"[:200]) from None
    size = spec.image_size
    resample = Image.Resampling.BICUBIC if spec.resample == "bicubic" else Image.Resampling.BILINEAR
    if spec.resize == "squash":
        rgb = rgb.resize((size, size), resample)
    else:
        # torchvision's Resize(size) then CenterCrop(size), as open_clip's preprocessing runs
        # them on a PIL image: the shorter side to `size`, the longer one truncated.
        w, h = rgb.size
        target = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
        rgb = rgb.resize(target, resample)
        left = int(round((target[0] - size) / 2.0))
        top = int(round((target[1] - size) / 2.0))
        rgb = rgb.crop((left, top, left + size, top + size))
    pixels = np.asarray(rgb, dtype=np.float32) / 255.0
    pixels = (pixels - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


def normalized(embeddings: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero), float32."""
    embeddings = np.asarray(embeddings, dtype=np.float32)
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    return embeddings / np.maximum(norms, 1e-12)


def resolve_device(device: str) -> str:
    """`cpu` or `cuda`: `auto` is `cuda` when ONNX Runtime has its CUDA execution provider
    (the `onnxruntime-gpu` wheel)."""
    import onnxruntime

    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device != "auto":
        return device
    return "cuda" if CUDA in onnxruntime.get_available_providers() else "cpu"


def providers(device: str) -> list[str]:
    """The execution providers of a session on `device` (`auto`, `cpu`, `cuda`)."""
    import onnxruntime

    if resolve_device(device) == "cpu":
        return [CPU]
    if CUDA not in onnxruntime.get_available_providers():
        raise RuntimeError(
            "scoring.device is cuda but ONNX Runtime has no CUDAExecutionProvider: install the "
            "onnxruntime-gpu wheel of the same version in place of onnxruntime"
        )
    # The CUDA and cuDNN libraries of the NVIDIA wheels (`onnxruntime-gpu[cuda,cudnn]`, or
    # torch's), loaded from site-packages, so that no LD_LIBRARY_PATH is needed.
    preload = getattr(onnxruntime, "preload_dlls", None)
    if preload is not None:
        preload()
    return [CUDA, CPU]


class ClipModel:
    """The two ONNX Runtime sessions of a local model folder. Only `image_embeddings` and
    `text_embeddings` are used by the stage, so that the model works behind Beam's
    cross-process proxy too (`share_model_across_processes`)."""

    def __init__(self, folder: str, device: str = "auto", threads: int | None = None):
        """`threads`: ONNX Runtime's intra-op threads (None: its default, one per core)."""
        import onnxruntime

        self.spec = read_spec(folder)
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: no warnings about unused initializers
        if threads:
            options.intra_op_num_threads = threads
        chosen = providers(device)
        self.image_session = onnxruntime.InferenceSession(
            os.path.join(folder, IMAGE_ONNX), options, providers=chosen
        )
        self.text_session = onnxruntime.InferenceSession(
            os.path.join(folder, TEXT_ONNX), options, providers=chosen
        )
        for session in (self.image_session, self.text_session):
            if session.get_providers()[0] != chosen[0]:  # ONNX Runtime falls back silently
                raise RuntimeError(
                    f"{folder}: ONNX Runtime could not start {chosen[0]} (for CUDA: the "
                    "onnxruntime-gpu wheel needs the CUDA and cuDNN versions it was built for)"
                )

    def image_embeddings(self, pixels: np.ndarray) -> np.ndarray:
        """Unit-length embeddings of a [N, 3, S, S] batch of `image_pixels`."""
        if not len(pixels):
            return np.zeros((0, self.spec.embedding_dim), np.float32)
        name = self.image_session.get_inputs()[0].name
        return normalized(self.image_session.run(None, {name: pixels})[0])

    def text_embeddings(self, ids: np.ndarray) -> np.ndarray:
        """Unit-length embeddings of a [N, length] batch of `encode_texts` ids."""
        if not len(ids):
            return np.zeros((0, self.spec.embedding_dim), np.float32)
        name = self.text_session.get_inputs()[0].name
        return normalized(self.text_session.run(None, {name: ids})[0])


class Preprocessor:
    """What runs beside the sessions, in the worker's own process: images to pixels and
    captions to ids, as the folder's `clip.json` and tokenizer say."""

    def __init__(self, folder: str):
        self.spec = read_spec(folder)
        self.tokenizer = load_tokenizer(folder, self.spec)

    def pixels(self, data: bytes) -> np.ndarray:
        return image_pixels(data, self.spec)

    def ids(self, texts: Sequence[str]) -> TextBatch:
        return encode_texts(self.tokenizer, self.spec, texts)


def embed_texts(
    preprocessor: Preprocessor, model: ClipModel, texts: Sequence[str]
) -> tuple[np.ndarray, list[bool]]:
    """Unit-length embeddings of `texts` in one session call, and which were truncated."""
    batch = preprocessor.ids(texts)
    return model.text_embeddings(batch.ids), batch.truncated


def embed_images(
    preprocessor: Preprocessor, model: ClipModel, images: Sequence[bytes]
) -> tuple[np.ndarray, list[str | None]]:
    """Unit-length embeddings of the decodable `images` (in their order, one session call) and,
    for each image, why it could not be decoded (None when it was)."""
    pixels, errors = [], []
    for data in images:
        try:
            pixels.append(preprocessor.pixels(data))
            errors.append(None)
        except UnreadableImage as err:
            errors.append(str(err))
    size = preprocessor.spec.image_size
    stacked = np.stack(pixels) if pixels else np.zeros((0, 3, size, size), np.float32)
    return model.image_embeddings(stacked), errors
