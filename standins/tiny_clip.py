"""Real multilingual CLIP model folders with random weights, built offline (tests, benchmarks).

`build_clip` writes the folder `pipeline.scoring.model` reads (`image.onnx`, `text.onnx`,
`tokenizer.json`, `clip.json`, a README) without torch: each tower is an ONNX graph made with
the `onnx` helper API from numpy weights drawn by a seeded generator, and the tokenizer is a
Unigram model trained on the spot with the `tokenizers` library on the captions of
`standins.tiny_model`. The graphs have the shape of the published models' exports
(`pipeline.scoring.export`), so they exercise the same runtime contracts:

- image tower (both flavours): a patch embedding (a `Conv` whose stride is the patch), position
  embeddings and pre-LN transformer layers (`LayerNormalization`, `MatMul`, `Softmax` attention
  with H heads, a GELU MLP). `siglip`: no class token, the layers' output normalised and pooled
  by SigLIP's attention-pooling (MAP) head, a learned probe attending over the patches followed
  by a residual MLP, as `SiglipMultiheadAttentionPoolingHead` does. `xlmr` (open_clip's ViT):
  a class token, `ln_pre`, and the class token's final state normalised and projected.
- text tower, `siglip`: token and position embeddings, pre-LN layers without any mask, the
  final norm, and the LAST position's state through a linear head: the padding is part of the
  input, which is why the runtime pads to exactly `context_length` with the folder's pad id.
  `xlmr`: XLM-RoBERTa's post-LN layers with the attention mask built inside the graph from
  `ids != pad_id`, position ids counted over the non-pad tokens from `pad_id + 1` (RoBERTa's
  rule), a masked mean over the non-pad tokens and open_clip's two-layer MLP projection.

Every dimension is a parameter (`TowerShape`, `ClipShape`): the tests use tiny ones (`TINY`),
and `SHAPES` holds the published models' shapes for benchmarks, whose random weights cost what
the real ones cost to run. Weights are scaled so that each layer keeps unit-size activations:
different inputs give clearly different embeddings. Embedding tables larger than the trained
tokenizer's vocabulary are allowed (the published vocabularies have 250k pieces); the extra rows
are never looked up. A model whose weights pass 1 GB is saved with its weights beside the graph
(`text.onnx.data`), as protobuf caps one file at 2 GB.

    python -m standins.tiny_clip OUT_DIR [--flavour siglip|xlmr] [--shape NAME] [--seed N]
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np

from pipeline.folders import building
from standins.tiny_model import ARABIC, ENGLISH

FLAVOURS = ("siglip", "xlmr")
OPSET = 17
# ONNX Runtime reads models of this IR version and above; newer `onnx` releases write newer ones.
IR_VERSION = 8
EXTERNAL_DATA_ABOVE = 1 << 30  # bytes of weights above which they go beside the graph


@dataclass(frozen=True)
class TowerShape:
    """One transformer tower: width, layers, heads, MLP hidden size."""

    width: int
    layers: int
    heads: int
    mlp: int


@dataclass(frozen=True)
class ClipShape:
    """The dimensions of a two-tower model. `embed_dim`: the joint embedding (SigLIP's is the
    image width, which its text head maps to); `vocab`: rows of the token embedding table (at
    least the tokenizer's size); `positions`: rows of the text position table."""

    image: TowerShape
    text: TowerShape
    patch: int
    image_size: int
    context_length: int
    embed_dim: int
    vocab: int = 0
    positions: int = 0


TINY_TOWER = TowerShape(width=32, layers=2, heads=4, mlp=64)
TINY = {
    "siglip": ClipShape(TINY_TOWER, TINY_TOWER, patch=8, image_size=32, context_length=64,
                        embed_dim=32),
    "xlmr": ClipShape(TINY_TOWER, TINY_TOWER, patch=8, image_size=32, context_length=77,
                      embed_dim=24),
}  # fmt: skip
BASE = TowerShape(width=768, layers=12, heads=12, mlp=3072)
# The published models' shapes, for benchmarks (random weights, real cost).
SHAPES = {
    "tiny-siglip": ("siglip", TINY["siglip"]),
    "tiny-xlmr": ("xlmr", TINY["xlmr"]),
    # google/siglip-base-patch16-256-multilingual: ViT-B/16 at 256 px, 250k vocabulary.
    "siglip-base-patch16-256-multilingual": (
        "siglip",
        ClipShape(BASE, BASE, patch=16, image_size=256, context_length=64, embed_dim=768,
                  vocab=250_000, positions=64),
    ),
    # open_clip xlm-roberta-base-ViT-B-32: ViT-B/32 at 224 px, XLM-R base (514 positions).
    "xlm-roberta-base-ViT-B-32": (
        "xlmr",
        ClipShape(BASE, BASE, patch=32, image_size=224, context_length=77, embed_dim=512,
                  vocab=250_002, positions=514),
    ),
}  # fmt: skip

# The preprocessing each flavour's published model wants (`clip.json`'s `image` and `text`).
PREPROCESSING = {
    "siglip": {
        "image": {"resize": "squash", "resample": "bicubic", "mean": [0.5] * 3, "std": [0.5] * 3},
        "text": {"padding": "max_length", "clean": "canonicalize"},
    },
    "xlmr": {
        "image": {
            "resize": "center_crop",
            "resample": "bicubic",
            "mean": [0.48145466, 0.4578275, 0.40821073],
            "std": [0.26862954, 0.26130258, 0.27577711],
        },
        "text": {"padding": "longest", "clean": "whitespace"},
    },
}
# Special tokens in id order. The SigLIP-like pad id is neither 0 nor the eos id, so that a
# runtime that pads with anything but the folder's pad id is caught.
SPECIALS = {"siglip": ("<unk>", "</s>", "<pad>"), "xlmr": ("<s>", "<pad>", "</s>", "<unk>")}


def captions() -> list[str]:
    """The corpus the tokenizer is trained on: the tiny translator's English and Arabic
    captions, each also lowercased and without its final stop (as a SigLIP tokenizer sees it)."""
    base = [*ENGLISH, *ARABIC]
    return base + [c.lower().rstrip(".") for c in base]


def train_tokenizer(flavour: str, corpus: Iterable[str], vocab_size: int = 300):
    """A `tokenizers.Tokenizer` trained on `corpus`: Unigram pieces after a Metaspace
    pre-tokenizer, as SentencePiece models are; `siglip` appends `</s>` (T5-style), `xlmr`
    wraps in `<s> … </s>` (XLM-R's ids: `<s>` 0, `<pad>` 1, `</s>` 2, `<unk>` 3)."""
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    specials = SPECIALS[flavour]
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size, special_tokens=list(specials), unk_token="<unk>", show_progress=False
    )
    tokenizer.train_from_iterator(list(corpus), trainer)
    # The trainer orders pieces of (nearly) equal score as a hash map iterates, so one corpus
    # gives other ids from run to run: the pieces are re-ordered by their score rounded to two
    # decimals, then by text, and keep the rounded score.
    vocab = json.loads(tokenizer.to_str())["model"]["vocab"]
    kept = vocab[: len(specials)]
    rest = sorted(((p, round(score, 2)) for p, score in vocab[len(specials) :]),
                  key=lambda item: (-item[1], item[0]))  # fmt: skip
    tokenizer.model = models.Unigram(
        [tuple(v) for v in kept] + rest, unk_id=specials.index("<unk>"), byte_fallback=False
    )
    if flavour == "siglip":
        template, used = "$A </s>", ("</s>",)
    else:
        template, used = "<s> $A </s>", ("<s>", "</s>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single=template, special_tokens=[(t, tokenizer.token_to_id(t)) for t in used]
    )
    return tokenizer


class _Graph:
    """An ONNX graph under construction: nodes, and initializers drawn from `rng`."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.nodes: list = []
        self.initializers: list = []
        self._names = 0

    def name(self, hint: str) -> str:
        self._names += 1
        return f"{hint}_{self._names}"

    def const(self, value, hint: str = "c", dtype=np.float32) -> str:
        from onnx import numpy_helper

        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def ints(self, values: Sequence[int], hint: str = "shape") -> str:
        return self.const(values, hint, np.int64)

    def random(self, shape: Sequence[int], scale: float, hint: str) -> str:
        return self.const(self.rng.standard_normal(shape) * scale, hint)

    def op(self, op_type: str, *inputs: str, hint: str | None = None, **attrs) -> str:
        from onnx import helper

        out = self.name(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], **attrs))
        return out

    def linear(self, x: str, d_in: int, d_out: int, bias: bool = True) -> str:
        y = self.op("MatMul", x, self.random((d_in, d_out), 1 / math.sqrt(d_in), "w"))
        return self.op("Add", y, self.random((d_out,), 0.1, "b")) if bias else y

    def layer_norm(self, x: str, width: int) -> str:
        gamma = self.const(1 + self.rng.standard_normal(width) * 0.1, "ln_gamma")
        beta = self.const(self.rng.standard_normal(width) * 0.1, "ln_beta")
        return self.op("LayerNormalization", x, gamma, beta, axis=-1, epsilon=1e-6)

    def gelu(self, x: str, tanh: bool) -> str:
        """GELU: exact (erf) or SigLIP's tanh approximation (`gelu_pytorch_tanh`)."""
        half = self.op("Mul", x, self.const(0.5))
        if tanh:
            cube = self.op("Mul", self.op("Mul", x, x), x)
            inner = self.op("Add", x, self.op("Mul", cube, self.const(0.044715)))
            t = self.op("Tanh", self.op("Mul", inner, self.const(math.sqrt(2 / math.pi))))
        else:
            t = self.op("Erf", self.op("Mul", x, self.const(1 / math.sqrt(2))))
        return self.op("Mul", half, self.op("Add", t, self.const(1.0)))

    def mlp(self, x: str, width: int, hidden: int, tanh: bool) -> str:
        return self.linear(self.gelu(self.linear(x, width, hidden), tanh), hidden, width)

    def attention(
        self, query: str, memory: str, width: int, heads: int, mask_bias: str | None = None
    ) -> str:
        """Multi-head attention of `query` [B, Sq, W] over `memory` [B, Sk, W]; `mask_bias`
        [B, 1, 1, Sk] is added to the scores (0 to keep a key, a large negative to drop it)."""
        head = width // heads
        split = self.ints([0, 0, heads, head])
        q = self.op("Reshape", self.linear(query, width, width), split)
        k = self.op("Reshape", self.linear(memory, width, width), split)
        v = self.op("Reshape", self.linear(memory, width, width), split)
        q = self.op("Transpose", q, perm=[0, 2, 1, 3])
        k = self.op("Transpose", k, perm=[0, 2, 3, 1])
        v = self.op("Transpose", v, perm=[0, 2, 1, 3])
        scores = self.op("Mul", self.op("MatMul", q, k), self.const(1 / math.sqrt(head)))
        if mask_bias is not None:
            scores = self.op("Add", scores, mask_bias)
        weights = self.op("Softmax", scores, axis=-1)
        out = self.op("Transpose", self.op("MatMul", weights, v), perm=[0, 2, 1, 3])
        out = self.op("Reshape", out, self.ints([0, 0, width]))
        return self.linear(out, width, width)

    def encoder_layer(
        self, x: str, tower: TowerShape, *, tanh: bool, post_norm: bool, mask_bias=None
    ) -> str:
        """One transformer layer: pre-LN (ViT, SigLIP) or post-LN (BERT, XLM-R)."""
        w = tower.width
        if post_norm:
            x = self.layer_norm(
                self.op("Add", x, self.attention(x, x, w, tower.heads, mask_bias)), w
            )
            return self.layer_norm(self.op("Add", x, self.mlp(x, w, tower.mlp, tanh)), w)
        normed = self.layer_norm(x, w)
        x = self.op("Add", x, self.attention(normed, normed, w, tower.heads, mask_bias))
        return self.op("Add", x, self.mlp(self.layer_norm(x, w), w, tower.mlp, tanh))

    def batch_of(self, x: str) -> str:
        """The batch size of `x`, as a 1-element int64 tensor."""
        return self.op("Shape", x, start=0, end=1)

    def broadcast_token(self, token: str, x: str, width: int) -> str:
        """A learned [1, 1, W] token repeated over the batch of `x`: [B, 1, W]."""
        shape = self.op("Concat", self.batch_of(x), self.ints([1, width]), axis=0)
        return self.op("Expand", token, shape)

    def model(self, input_info, output: str, out_dim: int, name: str):
        from onnx import TensorProto, helper

        out_info = helper.make_tensor_value_info(output, TensorProto.FLOAT, ["batch", out_dim])
        graph = helper.make_graph(self.nodes, name, [input_info], [out_info], self.initializers)
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            producer_name="standins.tiny_clip",
        )
        model.ir_version = IR_VERSION
        return model


def image_tower(flavour: str, shape: ClipShape, rng: np.random.Generator):
    """The image tower: `pixel_values` [B, 3, S, S] → `image_embeds` [B, embed_dim]."""
    from onnx import TensorProto, helper

    g = _Graph(rng)
    t, p = shape.image, shape.patch
    grid = shape.image_size // p
    pixels = helper.make_tensor_value_info(
        "pixel_values", TensorProto.FLOAT, ["batch", 3, shape.image_size, shape.image_size]
    )
    kernel = g.random((t.width, 3, p, p), 1 / math.sqrt(3 * p * p), "patch")
    conv_inputs = ["pixel_values", kernel]
    if flavour == "siglip":  # SigLIP's patch embedding has a bias; open_clip's conv1 has none
        conv_inputs.append(g.random((t.width,), 0.1, "patch_bias"))
    x = g.op("Conv", *conv_inputs, kernel_shape=[p, p], strides=[p, p])
    x = g.op("Transpose", g.op("Reshape", x, g.ints([0, 0, -1])), perm=[0, 2, 1])
    tanh = flavour == "siglip"
    if flavour == "siglip":
        x = g.op("Add", x, g.random((1, grid * grid, t.width), 1.0, "pos"))
        for _ in range(t.layers):
            x = g.encoder_layer(x, t, tanh=tanh, post_norm=False)
        x = g.layer_norm(x, t.width)
        # The MAP head: a probe attends over the patches, then a residual MLP on its state.
        probe = g.broadcast_token(g.random((1, 1, t.width), 1.0, "probe"), x, t.width)
        pooled = g.attention(probe, x, t.width, t.heads)
        pooled = g.op("Add", pooled, g.mlp(g.layer_norm(pooled, t.width), t.width, t.mlp, tanh))
        out = g.op("Gather", pooled, g.ints(0, "first"), axis=1, hint="image_embeds")
    else:
        cls = g.broadcast_token(g.random((1, 1, t.width), 1.0, "class"), x, t.width)
        x = g.op("Concat", cls, x, axis=1)
        x = g.op("Add", x, g.random((1, grid * grid + 1, t.width), 1.0, "pos"))
        x = g.layer_norm(x, t.width)
        for _ in range(t.layers):
            x = g.encoder_layer(x, t, tanh=tanh, post_norm=False)
        first = g.layer_norm(g.op("Gather", x, g.ints(0, "first"), axis=1), t.width)
        out = g.op(
            "MatMul",
            first,
            g.random((t.width, shape.embed_dim), 1 / math.sqrt(t.width), "proj"),
            hint="image_embeds",
        )
    dim = t.width if flavour == "siglip" else shape.embed_dim
    return g.model(pixels, out, dim, f"{flavour}_image")


def text_tower(flavour: str, shape: ClipShape, rng: np.random.Generator, vocab: int, pad_id: int):
    """The text tower: `input_ids` [B, L] int64 → `text_embeds` [B, embed_dim]."""
    from onnx import TensorProto, helper

    g = _Graph(rng)
    t = shape.text
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"])
    table = g.random((vocab, t.width), 1.0, "tokens")
    x = g.op("Gather", table, "input_ids", axis=0)
    if flavour == "siglip":
        length = g.op("Squeeze", g.op("Shape", "input_ids", start=1, end=2), g.ints([0]))
        positions = g.op("Range", g.ints(0, "zero"), length, g.ints(1, "one"))
        rows = shape.positions or shape.context_length
        x = g.op("Add", x, g.op("Gather", g.random((rows, t.width), 1.0, "pos"), positions))
        for _ in range(t.layers):
            x = g.encoder_layer(x, t, tanh=True, post_norm=False)
        x = g.layer_norm(x, t.width)
        last = g.op("Gather", x, g.ints(-1, "last"), axis=1)
        head = g.random((t.width, shape.image.width), 1 / math.sqrt(t.width), "head")
        out = g.op(
            "Add",
            g.op("MatMul", last, head),
            g.random((shape.image.width,), 0.1, "head_bias"),
            hint="text_embeds",
        )
        return g.model(ids, out, shape.image.width, f"{flavour}_text")
    # XLM-R: the mask, and RoBERTa's position ids, from the pad id, inside the graph.
    keep = g.op("Not", g.op("Equal", "input_ids", g.ints(pad_id, "pad")))
    keep_int = g.op("Cast", keep, to=TensorProto.INT64)
    keep_float = g.op("Cast", keep, to=TensorProto.FLOAT)
    counted = g.op("Mul", g.op("CumSum", keep_int, g.ints(1, "axis")), keep_int)
    positions = g.op("Add", counted, g.ints(pad_id, "pad_offset"))
    rows = shape.positions or shape.context_length + pad_id + 1
    x = g.op("Add", x, g.op("Gather", g.random((rows, t.width), 1.0, "pos"), positions))
    x = g.layer_norm(x, t.width)
    bias = g.op("Mul", g.op("Sub", g.const(1.0), keep_float), g.const(-1e4))
    bias = g.op("Unsqueeze", bias, g.ints([1, 2]))
    for _ in range(t.layers):
        x = g.encoder_layer(x, t, tanh=False, post_norm=True, mask_bias=bias)
    weights = g.op("Unsqueeze", keep_float, g.ints([2]))
    total = g.op("ReduceSum", g.op("Mul", x, weights), g.ints([1]), keepdims=0)
    count = g.op("ReduceSum", keep_float, g.ints([1]), keepdims=1)
    mean = g.op("Div", total, count)
    hidden = (t.width + shape.embed_dim) // 2  # open_clip's `mlp` projection, no biases
    h = g.gelu(g.linear(mean, t.width, hidden, bias=False), tanh=False)
    out = g.op(
        "MatMul",
        h,
        g.random((hidden, shape.embed_dim), 1 / math.sqrt(hidden), "proj"),
        hint="text_embeds",
    )
    return g.model(ids, out, shape.embed_dim, f"{flavour}_text")


def _save_onnx(model, path: str) -> None:
    import onnx

    weights = sum(t.ByteSize() for t in model.graph.initializer)
    if weights > EXTERNAL_DATA_ABOVE:
        onnx.save_model(
            model,
            path,
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=os.path.basename(path) + ".data",
        )
    else:
        onnx.save_model(model, path)
    onnx.checker.check_model(path, full_check=True)


def clip_json(flavour: str, shape: ClipShape, pad_id: int, name: str) -> dict:
    """The `clip.json` of a built folder (the format `pipeline.scoring.model` reads)."""
    prep = PREPROCESSING[flavour]
    return {
        "name": name,
        "flavour": flavour,
        "embedding_dim": shape.image.width if flavour == "siglip" else shape.embed_dim,
        "image": {"size": shape.image_size, **prep["image"]},
        "text": {"context_length": shape.context_length, "pad_id": pad_id, **prep["text"]},
    }


def build_clip(
    folder: str,
    flavour: str = "siglip",
    seed: int = 0,
    *,
    shape: ClipShape | None = None,
    corpus: Iterable[str] | None = None,
    vocab_size: int = 300,
) -> str:
    """Build a random-weight two-tower model of `flavour` into `folder` (created or emptied of
    the files it writes) and return `folder`. `shape`: the dimensions (default `TINY`)."""
    if flavour not in FLAVOURS:
        raise ValueError(f"flavour must be one of {', '.join(FLAVOURS)}, got {flavour!r}")
    shape = shape or TINY[flavour]
    for tower in (shape.image, shape.text):
        if tower.width % tower.heads:
            raise ValueError(f"width {tower.width} is not a multiple of heads {tower.heads}")
    if shape.image_size % shape.patch:
        raise ValueError(f"image_size {shape.image_size} is not a multiple of {shape.patch}")
    if flavour == "siglip" and shape.image.width != shape.embed_dim:
        raise ValueError("SigLIP's joint embedding is its image width: embed_dim must equal it")
    rng = np.random.default_rng(seed)
    tokenizer = train_tokenizer(flavour, captions() if corpus is None else corpus, vocab_size)
    pad_id = tokenizer.token_to_id("<pad>")
    vocab = max(shape.vocab, tokenizer.get_vocab_size())
    os.makedirs(folder, exist_ok=True)
    for name in os.listdir(folder):
        if name.startswith(("image.onnx", "text.onnx")):
            os.remove(os.path.join(folder, name))
    _save_onnx(image_tower(flavour, shape, rng), os.path.join(folder, "image.onnx"))
    _save_onnx(text_tower(flavour, shape, rng, vocab, pad_id), os.path.join(folder, "text.onnx"))
    tokenizer.save(os.path.join(folder, "tokenizer.json"))
    name = f"random-{flavour}-clip"
    with open(os.path.join(folder, "clip.json"), "w", encoding="utf-8") as f:
        json.dump(clip_json(flavour, shape, pad_id, name), f, indent=2)
        f.write("\n")
    with open(os.path.join(folder, "README.md"), "w", encoding="utf-8") as f:
        f.write(
            f"# {name}\n\nRandom weights (seed {seed}), built by standins.tiny_clip for tests "
            f"and benchmarks only; its scores are meaningless.\n\nShape: "
            f"{json.dumps(asdict(replace(shape, vocab=vocab)))}\n"
        )
    return folder


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m standins.tiny_clip",
        description="Build a random-weight multilingual CLIP folder (tests and benchmarks).",
    )
    parser.add_argument("out_dir", help="the model folder to create")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny-siglip")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    flavour, shape = SHAPES[args.shape]
    # Built beside the target and renamed: an interrupted build never leaves half a model.
    with building(args.out_dir, ".tiny-clip-") as tmp:
        build_clip(tmp, flavour, args.seed, shape=shape)
    print(args.out_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
