"""Benchmark of the scoring stage: `ScorePairs` on the DirectRunner against a bare batched loop,
and ONNX Runtime against the same towers in torch, on a random-weight multilingual CLIP of the
open_clip xlm-roberta-base-ViT-B-32 shape (a ViT-B/32 image tower at 224 px, an XLM-R base text
tower, 512-dimensional joint embeddings).

The model is built offline by `standins.tiny_clip.build_clip` at the published shape
(`SHAPES["xlm-roberta-base-ViT-B-32"]`: 12+12 layers, width 768, 12 heads, MLP 3072, 250,002
token embeddings, 514 positions; 1.1 GB of float32 weights drawn by a seeded generator) into
`out/bench-models/` on the first run (about 25 s) and reused after. Its `tokenizer.json` is
then replaced by one made for the benchmark's captions: a Unigram vocabulary of their words in
which a seeded three quarters of the Arabic words of more than 3 letters and 55 % of the English
ones are two pieces, the rest one, so that a caption has about as many tokens as the published
XLM-R tokenizer gives it (an assumption, not checked here: about 1.5 tokens per Arabic word and
1.3 per English word; these captions get 1.58 and 1.31, 13.4 and 15.5 tokens a caption with
`<s>` and `</s>`; the JSON line has `tokens_per_caption` and, padding included,
`ids_per_caption`).

The pairs are translated pairs, as 88 % of the full build's are: an Arabic caption and its
English original (both embedded: `clip_score` and `translation_similarity`), all distinct,
drawn from parallel word lists by a seeded generator (7 Arabic and 10 English words on
average); and one distinct image each, a photo-like picture (smooth colour fields, shapes, fine
grain) stored as the images stage stores it, 256 px on its longest side, JPEG quality 95 (about
25 KB, `estimate`'s `stored_image_bytes`), in a real image store (`pipeline.store`: one pack,
each pair holding its reference). Without Apache Beam (`--no-stage` on a machine without it)
the images are files and a pair holds the file's path.

1. The stage against a bare loop (`--pairs`, default 256, `--quick` 64; batches of
   `--batch-size`, default 32, `scoring.batch_size`'s default): `ScorePairs` in a DirectRunner
   pipeline over the pairs (its images read back from the store by reference, scores and drops
   collected) against a bare loop over the same pairs in batches of the same size: read the
   batch's images from the store, decode and preprocess them (`image_pixels`), tokenize its
   Arabic and English captions in one call (`encode_texts`), one image-tower call, one
   text-tower call, the dot products. Both use ONNX Runtime with `--threads` intra-op threads
   (default: the machine's cores, 2 here); the stage's handler is `ClipHandler` whose
   `load_model` passes them on (`ScorePairs(handler=...)`). Each side loads the model (both
   ONNX Runtime sessions, the tokenizer) inside its timing, as a worker does once; the load
   alone is timed apart in the bare loop, and the report also gives both rates net of it (what
   a worker scoring millions of pairs sees). The stage's batches are Beam's: `BatchElements`
   grows them from 1 to the batch size, and the report says how many it made (smaller batches
   pad their captions less: XLM-R pads to the batch's longest caption). A third variant,
   the bare loop's reads, decoding and tokenization without the towers, gives the share of the
   work that stays on the CPU when the towers run on a GPU. Ratio = bare time / stage time (the
   goal: at least 0.9). The stage's scores are checked against the bare loop's (the report
   says by how much they differ, and warns above 1e-4).
2. ONNX Runtime against torch (`--torch-pairs`, default 128, `--quick` 32): the same towers as
   a torch module written for the benchmark (a fused QKV projection and
   `scaled_dot_product_attention`, `F.layer_norm`, exact GELU), loaded with the very weights of
   the ONNX graphs (read back in the order `tiny_clip` drew them); before any timing the
   embeddings of both on a batch must agree to 1e-4. Timed: the image tower and the text tower
   on the same prepared batches (pixels and token ids made untimed), embeddings normalised,
   models loaded outside the timing, `torch.set_num_threads` equal to ONNX Runtime's intra-op
   threads, `torch.inference_mode`. Ratio = ONNX Runtime pairs/s / torch pairs/s (the goal: at
   least 1.0). Skipped, with nulls in the JSON, when torch cannot be imported (`make bench`
   installs the `bench` extra).

`--device cuda` (a GPU machine): ONNX Runtime on its CUDA execution provider where the
`onnxruntime-gpu` wheel provides it, torch on the GPU (float32, TF32 off, inputs copied to the
GPU and embeddings back inside the timing), batches of 256 and more pairs by default. Where ONNX
Runtime has no CUDA provider, its figures (and section 1's stage and bare loop) are null and
torch's GPU figure stands alone: the towers' speed on that GPU, the equality check done against
ONNX Runtime on the CPU. `--no-stage` leaves out the Beam stage, and with it every import of
Apache Beam: the rest runs with numpy, Pillow, tokenizers, onnx, onnxruntime and torch
(`benchmarks/clip_gpu.sh`).

Timings are medians of 3 interleaved rounds (the variants of a section take turns in a rotating
order). On a shared machine other processes distort them: each timed run first waits (a little)
for a quiet machine, a run during which other processes took more than 10 % of the CPU is
repeated once and the least disturbed is kept; the report says how disturbed the kept runs were.
The last line on stdout is one JSON object holding every figure.

    python benchmarks/clip.py           # 256 pairs (128 against torch), ~6 minutes on 2 cores
    python benchmarks/clip.py --quick   # 64 pairs (32 against torch), ~2 minutes (+30 s to build)
    sh benchmarks/clip_gpu.sh --quick   # a GPU machine without Beam: --no-stage, cuda, then cpu
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # image_samples: the photo-like pictures

from measure import (  # noqa: E402
    CpuMonitor,
    Runs,
    chunks,
    interleaved,
    log,
    rounded,
    table,
)

from pipeline.folders import building  # noqa: E402
from pipeline.scoring.model import (  # noqa: E402
    TOKENIZER_JSON,
    ClipModel,
    encode_texts,
    image_pixels,
    load_tokenizer,
    normalized,
    read_spec,
)
from standins.tiny_clip import SHAPES, build_clip  # noqa: E402

SEED = 20241217
SHAPE = "xlm-roberta-base-ViT-B-32"
MODEL_VERSION = "v1"  # bump when the model or its tokenizer changes: a new folder is built
MODELS = REPO / "out" / "bench-models"
SIZES = {  # (section 1 pairs, section 2 pairs, batch size) by device, full and --quick
    "cpu": {"full": (256, 128), "quick": (64, 32), "batch": 32},
    "cuda": {"full": (4096, 8192), "quick": (1024, 2048), "batch": 256},
}
WARM_UP = 8  # pairs of the untimed first run of each variant
TOLERANCE = 1e-4  # the largest difference allowed between two runs' embeddings or scores
TF32_TOLERANCE = 2e-3  # the same, between two TF32 runs on a GPU (10 bits of mantissa)
WAIT_QUICK, WAIT_FULL = 20.0, 90.0  # seconds the runs may spend waiting for a quiet machine
# Seconds after which runs no longer wait or repeat (--quick: under 5 minutes in all).
PATIENCE_QUICK, PATIENCE_FULL = 150.0, 600.0
STORED_SIDE = 256  # images.size: the longest side of a stored image (resize: keep_ratio)
STORED_QUALITY = 95  # images.quality
ASPECTS = ((4, 3), (3, 4), (16, 9), (1, 1), (3, 2))
# Words of more than 3 letters made of two pieces by the benchmark's tokenizer: about 1.5
# tokens per Arabic word and 1.3 per English word in all (an assumption for XLM-R's).
SPLIT_SHARE = {"ar": 0.75, "en": 0.55}

# ---------------------------------------------------------------------------- captions

# (English, Arabic): the translated pairs are drawn from these, slot by slot.
BEINGS = (
    ("man", "رجل"), ("woman", "امرأة"), ("boy", "صبي"), ("girl", "فتاة"), ("child", "طفل"),
    ("baby", "رضيع"), ("dog", "كلب"), ("cat", "قطة"), ("horse", "حصان"), ("camel", "جمل"),
    ("bird", "طائر"), ("goat", "ماعز"), ("elephant", "فيل"), ("giraffe", "زرافة"),
    ("football player", "لاعب كرة قدم"), ("chef", "طاه"), ("fisherman", "صياد"),
    ("student", "طالب"), ("farmer", "مزارع"), ("tourist", "سائح"), ("vendor", "بائع"),
    ("musician", "موسيقي"), ("police officer", "شرطي"), ("soldier", "جندي"), ("nurse", "ممرضة"),
    ("cyclist", "دراج"), ("surfer", "راكب أمواج"), ("old woman", "امرأة عجوز"),
    ("young man", "شاب"), ("teenager", "مراهق"),
)  # fmt: skip
THINGS = (
    ("bicycle", "دراجة"), ("car", "سيارة"), ("bus", "حافلة"), ("train", "قطار"),
    ("boat", "قارب"), ("airplane", "طائرة"), ("bench", "مقعد"), ("table", "طاولة"),
    ("chair", "كرسي"), ("umbrella", "مظلة"), ("kite", "طائرة ورقية"), ("ball", "كرة"),
    ("cake", "كعكة"), ("bowl of fruit", "وعاء من الفاكهة"), ("cup of coffee", "فنجان قهوة"),
    ("plate of food", "طبق من الطعام"), ("vase of flowers", "مزهرية فيها ورود"),
    ("book", "كتاب"), ("guitar", "غيتار"), ("basket", "سلة"), ("suitcase", "حقيبة سفر"),
    ("flag", "علم"), ("lamp", "مصباح"), ("clock", "ساعة"), ("phone", "هاتف"),
    ("laptop", "حاسوب محمول"), ("painting", "لوحة"), ("tent", "خيمة"), ("balloon", "بالون"),
    ("newspaper", "جريدة"), ("bag of bread", "كيس خبز"), ("carpet", "سجادة"),
)  # fmt: skip
PLACES = (
    ("street", "الشارع"), ("beach", "الشاطئ"), ("park", "الحديقة"), ("field", "الحقل"),
    ("kitchen", "المطبخ"), ("living room", "غرفة المعيشة"), ("market", "السوق"),
    ("train station", "محطة القطار"), ("airport", "المطار"), ("harbour", "الميناء"),
    ("river", "النهر"), ("lake", "البحيرة"), ("forest", "الغابة"), ("desert", "الصحراء"),
    ("mountain", "الجبل"), ("road", "الطريق"), ("village", "القرية"), ("garden", "البستان"),
    ("stadium", "الملعب"), ("restaurant", "المطعم"), ("office", "المكتب"),
    ("classroom", "الفصل الدراسي"), ("square", "الساحة"), ("old town", "البلدة القديمة"),
    ("courtyard of the mosque", "ساحة المسجد"), ("bridge", "الجسر"),
)  # fmt: skip
ADJECTIVES = (
    ("red", "أحمر"), ("blue", "أزرق"), ("green", "أخضر"), ("yellow", "أصفر"),
    ("white", "أبيض"), ("black", "أسود"), ("old", "قديم"), ("small", "صغير"),
    ("large", "كبير"), ("tall", "طويل"), ("beautiful", "جميل"), ("modern", "حديث"),
    ("colorful", "ملون"), ("empty", "فارغ"), ("crowded", "مزدحم"), ("traditional", "تقليدي"),
    ("wooden", "خشبي"), ("busy", "مكتظ"), ("quiet", "هادئ"), ("ancient", "عتيق"),
    ("famous", "مشهور"), ("bright", "ساطع"), ("dark", "مظلم"), ("huge", "ضخم"),
)  # fmt: skip
VERBS = (
    ("riding", "يركب"), ("holding", "يحمل"), ("carrying", "ينقل"), ("looking at", "ينظر إلى"),
    ("playing with", "يلعب مع"), ("sitting on", "يجلس على"), ("standing next to", "يقف بجانب"),
    ("walking past", "يمشي بجانب"), ("eating", "يأكل"), ("watching", "يشاهد"),
    ("pushing", "يدفع"), ("pulling", "يسحب"), ("painting", "يرسم"), ("selling", "يبيع"),
    ("cleaning", "ينظف"), ("repairing", "يصلح"), ("photographing", "يصور"),
    ("waiting for", "ينتظر"), ("feeding", "يطعم"), ("reading", "يقرأ"), ("cooking", "يطبخ"),
    ("driving", "يقود"), ("buying", "يشتري"), ("throwing", "يرمي"),
)  # fmt: skip
SCENES = (
    ("at night", "ليلا"), ("at sunset", "عند الغروب"), ("in the rain", "تحت المطر"),
    ("in winter", "في الشتاء"), ("in the morning", "في الصباح"),
    ("during the festival", "خلال المهرجان"), ("on a sunny day", "في يوم مشمس"),
    ("in the snow", "في الثلج"), ("under a clear sky", "تحت سماء صافية"),
    ("from above", "من الأعلى"), ("after the game", "بعد المباراة"), ("", ""),
)  # fmt: skip
TEMPLATES = (
    ("{a_being} {verb} {a_thing} in the {place} {scene}",
     "{being} {verb} {thing} في {place} {scene}"),
    ("{a_adj_thing} on the {place} {scene}", "{thing} {adj} في {place} {scene}"),
    ("{a_being} and {a_being2} {verb} {a_thing} near the {place}",
     "{being} و{being2} {verb} {thing} بالقرب من {place}"),
    ("portrait of {a_being} {verb} {a_adj_thing}", "صورة {being} {verb} {thing} {adj}"),
    ("aerial view of the {adj} {place} {scene}", "منظر جوي ل{place} {adj} {scene}"),
    ("two {being}s {verb} {a_adj_thing} by the {place}",
     "اثنان من {being} {verb} {thing} {adj} عند {place}"),
    ("{a_being} {verb} {a_thing} while {a_being2} watches {scene}",
     "{being} {verb} {thing} بينما {being2} يشاهد {scene}"),
    ("{a_adj_thing} and {a_thing2} in the {place}", "{thing} {adj} و{thing2} في {place}"),
)  # fmt: skip


def _a(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def caption_pair(rng: random.Random) -> tuple[str, str]:
    """One (Arabic, English) caption pair, the Arabic a word-for-word rendering."""
    being, being2 = rng.choice(BEINGS), rng.choice(BEINGS)
    thing, thing2 = rng.choice(THINGS), rng.choice(THINGS)
    place, adj, verb, scene = (rng.choice(x) for x in (PLACES, ADJECTIVES, VERBS, SCENES))
    en, ar = rng.choice(TEMPLATES)
    slots = {"being": being, "being2": being2, "thing": thing, "thing2": thing2,
             "place": place, "adj": adj, "verb": verb, "scene": scene}  # fmt: skip
    english = {k: v[0] for k, v in slots.items()}
    english.update(
        a_being=_a(being[0]),
        a_being2=_a(being2[0]),
        a_thing=_a(thing[0]),
        a_thing2=_a(thing2[0]),
        a_adj_thing=_a(f"{adj[0]} {thing[0]}"),
    )
    arabic = {k: v[1] for k, v in slots.items()}
    return " ".join(ar.format(**arabic).split()), " ".join(en.format(**english).split())


def caption_pairs(count: int, seed: int = SEED) -> list[tuple[str, str]]:
    """`count` (Arabic, English) pairs, every caption distinct, so that the stage (which embeds
    each distinct caption of a batch once) and the bare loop embed the same texts."""
    rng = random.Random(seed)
    seen: dict[str, str] = {}
    english: set[str] = set()
    while len(seen) < count:
        ar, en = caption_pair(rng)
        if ar not in seen and en not in english:
            seen[ar] = en
            english.add(en)
    return list(seen.items())


# ---------------------------------------------------------------------------- the model


def benchmark_tokenizer(sample: Sequence[tuple[str, str]]):
    """A `tokenizers` Unigram tokenizer of XLM-R's form (NFKC, Metaspace, `<s> … </s>`, the
    specials at XLM-R's ids) over the words of `sample`: a seeded `SPLIT_SHARE` of each
    language's words longer than 3 letters are two pieces, the others one."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    rng = random.Random(SEED + 2)
    specials = ("<s>", "<pad>", "</s>", "<unk>")
    pieces: dict[str, float] = {}
    for lang, index in (("ar", 0), ("en", 1)):
        words = sorted({w for pair in sample for w in pair[index].split()})
        for word in words:
            if len(word) > 3 and rng.random() < SPLIT_SHARE[lang]:
                half = len(word) // 2
                pieces["▁" + word[:half]] = -8.0
                pieces.setdefault(word[half:], -8.0)
            else:
                pieces["▁" + word] = -8.0
            for char in word:
                pieces.setdefault("▁" + char, -20.0)
                pieces.setdefault(char, -20.0)
    vocab = [(s, 0.0) for s in specials] + sorted(pieces.items())
    tokenizer = Tokenizer(
        models.Unigram(vocab, unk_id=specials.index("<unk>"), byte_fallback=False)
    )
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    return tokenizer


def ensure_model(shape_name: str) -> tuple[Path, float | None]:
    """The benchmark model folder of `shape_name`, built on first use (beside it, then renamed,
    so an interrupted build is never taken for a model); and the build's seconds (None:
    reused)."""
    folder = MODELS / f"{shape_name}-random-{MODEL_VERSION}"
    if (folder / "clip.json").is_file() and (folder / TOKENIZER_JSON).is_file():
        return folder, None
    flavour, shape = SHAPES[shape_name]
    start = time.perf_counter()
    with building(folder, ".bench-clip-") as tmp:
        tokenizer = benchmark_tokenizer(caption_pairs(5000, SEED + 1))
        rows = max(shape.vocab, tokenizer.get_vocab_size())  # a tiny shape's table holds it too
        build_clip(tmp, flavour, SEED, shape=replace(shape, vocab=rows))
        spec = read_spec(tmp)
        if tokenizer.token_to_id("<pad>") != spec.pad_id:
            raise RuntimeError(f"the tokenizer's <pad> is not the model's pad id {spec.pad_id}")
        tokenizer.save(os.path.join(tmp, TOKENIZER_JSON))
    return folder, time.perf_counter() - start


# ---------------------------------------------------------------------------- the images


def picture(width: int, height: int, rng: np.random.Generator) -> bytes:
    """A photo-like JPEG as the images stage stores it (quality 95): smooth colour fields, a
    few shapes, fine grain (about 25 KB at 256 px): the tests' `image_samples.photo`, finer."""
    from image_samples import encode, photo

    img = photo(width, height, rng=rng, cell=24, shapes=(4, 12))
    return encode(img, "JPEG", quality=STORED_QUALITY)


def pictures(count: int, seed: int = SEED) -> list[bytes]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        a, b = ASPECTS[int(rng.integers(len(ASPECTS)))]
        width, height = (
            (STORED_SIDE, STORED_SIDE * b // a) if a >= b else (STORED_SIDE * a // b, STORED_SIDE)
        )
        out.append(picture(width, height, rng))
    return out


class Images:
    """The stored images and how a loop reads a batch of them back: a real image store (one
    pack, references) where Apache Beam is installed, else one file each (paths)."""

    def __init__(self, folder: Path, images: Sequence[bytes], use_store: bool):
        self.store = None
        if use_store:
            from pipeline.store import ImageStore, StoredImage

            self.store = ImageStore(str(folder / "store"))
            writer = self.store.writer()
            self.refs = []
            for i, data in enumerate(images):
                stored = StoredImage(
                    data, 0, 0, "0" * 16, hashlib.sha256(data).hexdigest(), "image/jpeg", "jpg"
                )
                self.refs.append(writer.append(stored, key=f"https://images.invalid/{i}.jpg"))
            writer.close()
        else:
            (folder / "images").mkdir(parents=True)
            self.refs = []
            for i, data in enumerate(images):
                path = folder / "images" / f"{i:06d}.jpg"
                path.write_bytes(data)
                self.refs.append(str(path))

    def read(self, refs: Sequence[str]) -> list[bytes]:
        if self.store is None:
            return [Path(ref).read_bytes() for ref in refs]
        with self.store.reader() as reader:
            return [reader.read(ref) for ref in refs]


class BenchPair(NamedTuple):
    id: str
    image_ref: str
    caption_ar: str
    caption_en: str


# ---------------------------------------------------------------------------- 1. the stage


def bare_loop(
    folder: Path, pairs: Sequence[BenchPair], images: Images, batch: int, threads: int,
    device: str, towers: bool = True,
) -> dict:  # fmt: skip
    """What a script without Beam does, batch by batch: read the images, decode and
    preprocess them, tokenize the captions, one call of each tower, the dot products.
    `towers=False`: the reads, decoding and tokenization alone."""
    start = time.perf_counter()
    model = ClipModel(str(folder), device, threads) if towers else None
    spec = read_spec(str(folder))
    tokenizer = load_tokenizer(str(folder), spec)
    load = time.perf_counter() - start
    scores: dict[str, tuple[float, float]] = {}
    tokens = [0, 0]
    for part in chunks(pairs, batch):
        data = images.read([p.image_ref for p in part])
        pixels = np.stack([image_pixels(d, spec) for d in data])
        texts = encode_texts(tokenizer, spec, [p.caption_ar for p in part] +
                             [p.caption_en for p in part])  # fmt: skip
        if not towers:
            continue
        image = model.image_embeddings(pixels)
        text = model.text_embeddings(texts.ids)
        arabic, english = text[: len(part)], text[len(part) :]
        clip = np.einsum("ij,ij->i", image, arabic)
        similarity = np.einsum("ij,ij->i", arabic, english)
        for p, c, s in zip(part, clip, similarity, strict=True):
            scores[p.id] = (float(c), float(s))
        tokens[0] += texts.ids.size
        tokens[1] += int((texts.ids != spec.pad_id).sum())
    return {"scores": scores, "load": load, "ids": tokens[0], "tokens": tokens[1]}


def _dump(items, path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(sorted(items), f)


def in_stage(
    folder: Path, pairs: Sequence[BenchPair], images: Images, batch: int, threads: int,
    device: str, out: Path,
) -> dict:  # fmt: skip
    """`ScorePairs` in a DirectRunner pipeline: the pairs in, each kept pair's scores and each
    drop's reason out (written to `out` by the pipeline, read back here)."""
    import apache_beam as beam
    from apache_beam.metrics import Metrics
    from apache_beam.metrics.metric import MetricsFilter

    from pipeline.config import ScoringConfig
    from pipeline.records import TRANSLATED, Pair
    from pipeline.scoring.stage import ClipHandler, ScorePairs

    class ThreadedHandler(ClipHandler):
        """The stage's handler, its sessions on `threads` intra-op threads; it counts the
        batch sizes Beam gives it."""

        def load_model(self) -> ClipModel:
            return ClipModel(str(folder), device, threads)

        def run_inference(self, batch, model, inference_args=None):
            Metrics.distribution("bench", "batch").update(len(batch))
            return super().run_inference(batch, model, inference_args)

    config = ScoringConfig(model=str(folder), device=device, batch_size=batch)
    records = [
        Pair(p.id, "conceptual_captions", "conceptual_captions", p.id, p.caption_ar, TRANSLATED,
             caption_en=p.caption_en, image_ref=p.image_ref)
        for p in pairs
    ]  # fmt: skip
    p = beam.Pipeline(runner="DirectRunner")
    kept, dropped = (
        p
        | beam.Create(records)
        | ScorePairs(config, images.store, handler=ThreadedHandler(config, images.store))
    )
    rows = (
        kept | "Scores" >> beam.Map(lambda x: (x.id, x.clip_score, x.translation_similarity)),
        dropped | "Reasons" >> beam.Map(lambda d: (d.pair_id, d.reason, None)),
    )
    _ = (
        rows
        | beam.Flatten()
        | beam.combiners.ToList()
        | beam.Map(_dump, str(out))
    )  # fmt: skip
    result = p.run()
    result.wait_until_finish()
    [batches] = result.metrics().query(MetricsFilter().with_name("batch"))["distributions"]
    done = json.loads(out.read_text(encoding="utf-8"))
    return {
        "scores": {i: (c, s) for i, c, s in done if isinstance(c, float)},
        "dropped": [(i, c) for i, c, _ in done if not isinstance(c, float)],
        "batches": batches.committed.count,
        "batch_mean": batches.committed.mean,
    }


def largest_difference(a: dict, b: dict) -> float:
    """The largest difference between two runs' scores (inf when they scored other pairs)."""
    if set(a) != set(b):
        return float("inf")
    return max((abs(x - y) for k in a for x, y in zip(a[k], b[k], strict=True)), default=0.0)


def measure_stage(
    folder: Path, pairs: list[BenchPair], images: Images, args, rounds: int, tmp: Path, runs: Runs
) -> dict:
    b, t, d = args.batch_size, args.threads, args.device
    variants: dict[str, Callable[[Sequence[BenchPair]], dict]] = {
        "bare": lambda ps: bare_loop(folder, ps, images, b, t, d),
        "reads": lambda ps: bare_loop(folder, ps, images, b, t, d, towers=False),
    }
    if not args.no_stage:
        variants["stage"] = lambda ps: in_stage(folder, ps, images, b, t, d, tmp / "scores.json")
    for run in variants.values():  # imports and first-use costs, untimed
        run(pairs[:WARM_UP])
    seconds, results = interleaved(
        {name: lambda run=run: run(pairs) for name, run in variants.items()},
        rounds,
        "stage against bare loop:",
        runs,
    )
    n = len(pairs)
    bare = results["bare"]
    load = bare["load"]
    figures = {
        "bare": n / seconds["bare"],
        "bare_net": n / (seconds["bare"] - load),
        "reads": n / seconds["reads"],
        "load": load,
        "ids_per_caption": bare["ids"] / (2 * n),
        "tokens_per_caption": bare["tokens"] / (2 * n),
    }
    if "stage" in results:
        stage = results["stage"]
        figures.update(
            stage=n / seconds["stage"],
            stage_net=n / (seconds["stage"] - load),
            stage_vs_bare=seconds["bare"] / seconds["stage"],
            stage_vs_bare_net=(seconds["bare"] - load) / (seconds["stage"] - load),
            difference=largest_difference(stage["scores"], bare["scores"]),
            dropped=len(stage["dropped"]),
            batches=stage["batches"],
            batch_mean=stage["batch_mean"],
        )
    return figures


# ---------------------------------------------------------------------------- 2. torch


WEIGHTS = {"patch", "class", "pos", "ln_gamma", "ln_beta", "w", "b", "proj", "tokens"}


class _Weights:
    """The random weights of an ONNX tower in the order `tiny_clip` drew them (its initializers
    are named `<hint>_<counter>`; constants are skipped)."""

    def __init__(self, path: Path, device: str):
        import onnx
        import torch
        from onnx import numpy_helper

        self.torch, self._device = torch, device
        graph = onnx.load(str(path)).graph
        self._items: Iterator = (
            (init.name.rsplit("_", 1)[0], numpy_helper.to_array(init))
            for init in graph.initializer
            if init.name.rsplit("_", 1)[0] in WEIGHTS
        )

    def take(self, hint: str, shape: tuple[int | None, ...]):
        """The next weight, which must be `hint`'s of `shape` (None: any size on that axis)."""
        got, value = next(self._items)
        sizes = tuple(v if s is None else s for s, v in zip(shape, value.shape, strict=False))
        if got != hint or value.shape != sizes:
            raise RuntimeError(f"expected {hint} {shape}, found {got} {value.shape}")
        return self.torch.from_numpy(np.array(value, order="C")).to(self._device)

    def linear(self, d_in: int, d_out: int, bias: bool = True):
        """(weight [out, in] as F.linear takes it, bias) of a MatMul(+Add) of the graph."""
        w = self.take("w", (d_in, d_out)).T.contiguous()
        return w, self.take("b", (d_out,)) if bias else None

    def norm(self, width: int):
        return self.take("ln_gamma", (width,)), self.take("ln_beta", (width,))

    def done(self) -> None:
        left = next(self._items, None)
        if left is not None:
            raise RuntimeError(f"a weight was left over: {left[0]} {left[1].shape}")


class TorchClip:
    """The xlmr-flavour towers of `standins.tiny_clip` in torch, with the weights of a built
    folder: the same operations, written as a torch user would (a fused QKV projection,
    `scaled_dot_product_attention`), float32, eval only."""

    def __init__(self, folder: Path, shape_name: str, device: str):
        import torch

        flavour, shape = SHAPES[shape_name]
        if flavour != "xlmr":
            raise ValueError(f"the torch towers are of the xlmr flavour, not {flavour}")
        self.torch, self.device, self.shape = torch, device, shape
        self.pad_id = read_spec(str(folder)).pad_id
        self.eps = 1e-6  # tiny_clip's LayerNormalization epsilon
        image = shape.image
        w = _Weights(folder / "image.onnx", device)
        grid = shape.image_size // shape.patch
        self.patch = w.take("patch", (image.width, 3, shape.patch, shape.patch))
        self.cls = w.take("class", (1, 1, image.width))
        self.image_pos = w.take("pos", (1, grid * grid + 1, image.width))
        self.ln_pre = w.norm(image.width)
        self.image_layers = [self._layer(w, image, post_norm=False) for _ in range(image.layers)]
        self.ln_post = w.norm(image.width)
        self.image_proj = w.take("proj", (image.width, shape.embed_dim))
        w.done()

        text = shape.text
        w = _Weights(folder / "text.onnx", device)
        # At least the published vocabulary's rows (`shape.vocab`), or the tokenizer's.
        self.tokens = w.take("tokens", (None, text.width))
        rows = shape.positions or shape.context_length + self.pad_id + 1
        self.text_pos = w.take("pos", (rows, text.width))
        self.ln_embed = w.norm(text.width)
        self.text_layers = [self._layer(w, text, post_norm=True) for _ in range(text.layers)]
        hidden = (text.width + shape.embed_dim) // 2
        self.text_mlp, _ = w.linear(text.width, hidden, bias=False)
        self.text_proj = w.take("proj", (hidden, shape.embed_dim))
        w.done()

    @staticmethod
    def _layer(w: _Weights, tower, post_norm: bool) -> dict:
        layer = {} if post_norm else {"ln1": w.norm(tower.width)}
        q, k, v = (w.linear(tower.width, tower.width) for _ in range(3))
        layer["qkv"] = tuple(w.torch.cat(parts) for parts in zip(q, k, v, strict=True))
        layer["out"] = w.linear(tower.width, tower.width)
        if post_norm:
            layer["ln1"] = w.norm(tower.width)
        else:
            layer["ln2"] = w.norm(tower.width)
        layer["fc1"] = w.linear(tower.width, tower.mlp)
        layer["fc2"] = w.linear(tower.mlp, tower.width)
        if post_norm:
            layer["ln2"] = w.norm(tower.width)
        layer["heads"] = tower.heads
        return layer

    def _norm(self, x, weights):
        return self.torch.nn.functional.layer_norm(x, x.shape[-1:], *weights, self.eps)

    def _attention(self, x, layer, mask=None):
        f = self.torch.nn.functional
        batch, length, width = x.shape
        heads = layer["heads"]
        qkv = f.linear(x, *layer["qkv"]).view(batch, length, 3, heads, width // heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        out = f.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return f.linear(out.transpose(1, 2).reshape(batch, length, width), *layer["out"])

    def _mlp(self, x, layer):
        f = self.torch.nn.functional
        return f.linear(f.gelu(f.linear(x, *layer["fc1"])), *layer["fc2"])

    def image_embeddings(self, pixels: np.ndarray) -> np.ndarray:
        torch, f = self.torch, self.torch.nn.functional
        with torch.inference_mode():
            x = torch.from_numpy(pixels).to(self.device)
            x = f.conv2d(x, self.patch, stride=self.shape.patch).flatten(2).transpose(1, 2)
            x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.image_pos
            x = self._norm(x, self.ln_pre)
            for layer in self.image_layers:
                x = x + self._attention(self._norm(x, layer["ln1"]), layer)
                x = x + self._mlp(self._norm(x, layer["ln2"]), layer)
            out = self._norm(x[:, 0], self.ln_post) @ self.image_proj
            return normalized(out.cpu().numpy())

    def text_embeddings(self, ids: np.ndarray) -> np.ndarray:
        torch, f = self.torch, self.torch.nn.functional
        with torch.inference_mode():
            ids = torch.from_numpy(ids).to(self.device)
            keep = ids != self.pad_id
            positions = torch.cumsum(keep, 1) * keep + self.pad_id
            x = f.embedding(ids, self.tokens) + f.embedding(positions, self.text_pos)
            x = self._norm(x, self.ln_embed)
            mask = ((~keep).to(x.dtype) * -1e4)[:, None, None, :]
            for layer in self.text_layers:
                x = self._norm(x + self._attention(x, layer, mask), layer["ln1"])
                x = self._norm(x + self._mlp(x, layer), layer["ln2"])
            weights = keep.to(x.dtype).unsqueeze(2)
            mean = (x * weights).sum(1) / weights.sum(1)
            out = f.gelu(f.linear(mean, self.text_mlp)) @ self.text_proj
            return normalized(out.cpu().numpy())


def towers(model, batches: Sequence[tuple[np.ndarray, np.ndarray]]) -> dict:
    """Both towers on every prepared batch (pixels, ids): the work timed in section 2."""
    for pixels, ids in batches:
        model.image_embeddings(pixels)
        model.text_embeddings(ids)
    return {}


def prepared(
    folder: Path, pairs: Sequence[BenchPair], images: Images, batch: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    spec = read_spec(str(folder))
    tokenizer = load_tokenizer(str(folder), spec)
    out = []
    for part in chunks(pairs, batch):
        pixels = np.stack([image_pixels(d, spec) for d in images.read([p.image_ref for p in part])])
        texts = [p.caption_ar for p in part] + [p.caption_en for p in part]
        out.append((pixels, encode_texts(tokenizer, spec, texts).ids))
    return out


def measure_torch(
    folder: Path, pairs: list[BenchPair], images: Images, args, rounds: int, runs: Runs,
    onnx_device: str | None,
) -> dict:  # fmt: skip
    """ONNX Runtime (on `onnx_device`; None: not on this machine's device) against torch."""
    import torch

    torch.set_num_threads(args.threads)
    # ONNX Runtime's CUDA provider computes float32 matrix products in TF32 (its `use_tf32`
    # default): torch does the same where both run on the GPU, and strict float32 where torch
    # runs alone there (the figure `estimate` reads without onnxruntime-gpu).
    tf32 = args.device == "cuda" and onnx_device == "cuda"
    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
    batches = prepared(folder, pairs, images, args.batch_size)
    start = time.perf_counter()
    torch_model = TorchClip(folder, args.shape, args.device)
    torch_load = time.perf_counter() - start
    # The check: torch against ONNX Runtime (on the CPU where it has no GPU provider).
    reference = ClipModel(str(folder), onnx_device or "cpu", args.threads)
    pixels, ids = batches[0]
    image = reference.image_embeddings(pixels) - torch_model.image_embeddings(pixels)
    text = reference.text_embeddings(ids) - torch_model.text_embeddings(ids)
    difference = float(max(np.abs(image).max(), np.abs(text).max()))
    if not difference <= (TF32_TOLERANCE if tf32 else TOLERANCE):
        raise SystemExit(f"torch and ONNX Runtime disagree: embeddings differ by {difference:.2e}")
    variants = {"torch": lambda: towers(torch_model, batches)}
    if onnx_device is not None:
        variants["onnx"] = lambda: towers(reference, batches)
    else:
        del reference
    for run in variants.values():  # first-use costs (kernel choice, allocations), untimed
        run()
    seconds, _ = interleaved(variants, rounds, "ONNX Runtime against torch:", runs)
    n = len(pairs)
    figures = {"torch": n / seconds["torch"], "difference": difference, "torch_load": torch_load}
    if "onnx" in seconds:
        figures["onnx"] = n / seconds["onnx"]
        figures["onnx_vs_torch"] = seconds["torch"] / seconds["onnx"]
    return figures


# ---------------------------------------------------------------------------- report


def onnx_device_for(device: str) -> str | None:
    """Where ONNX Runtime runs for `--device`: None when it has no CUDA provider here."""
    import onnxruntime

    if device == "cuda" and "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        return None
    return device


def beam_available() -> bool:
    try:
        import apache_beam  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer pairs: under 5 minutes")
    parser.add_argument("--pairs", type=int, help="pairs of section 1 (overrides the size)")
    parser.add_argument("--torch-pairs", type=int, help="pairs of section 2 (overrides it)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per measure")
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="ONNX Runtime's intra-op threads and torch's (default: all cores)",
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--batch-size", type=int, help="pairs per batch (cpu 32, cuda 256)")
    parser.add_argument(
        "--shape",
        default=SHAPE,
        choices=sorted(n for n, (f, _) in SHAPES.items() if f == "xlmr"),
        help="the model's shape (tiny-xlmr: a smoke run)",
    )
    parser.add_argument(
        "--no-stage",
        action="store_true",
        help="leave out the Beam stage (and every import of Apache Beam)",
    )
    args = parser.parse_args(argv)
    sizes = SIZES[args.device]
    n, n_torch = sizes["quick" if args.quick else "full"]
    n, n_torch = args.pairs or n, args.torch_pairs or n_torch
    args.batch_size = args.batch_size or sizes["batch"]
    has_beam = beam_available()
    if not args.no_stage and not has_beam:
        parser.error("Apache Beam is not installed here: give --no-stage")
    runs = Runs(
        wait_budget=WAIT_QUICK if args.quick else WAIT_FULL,
        patience=PATIENCE_QUICK if args.quick else PATIENCE_FULL,
    )
    monitor = CpuMonitor()

    folder, built = ensure_model(args.shape)
    log(f"model {folder}: " + (f"built in {built:.1f}s" if built else "reused"))
    onnx_device = onnx_device_for(args.device)
    figures: dict = {
        "benchmark": "clip",
        "quick": args.quick,
        "shape": args.shape,
        "device": args.device,
        "onnx_device": onnx_device,
        "threads": args.threads,
        "batch_size": args.batch_size,
        "pairs": n,
        "torch_pairs": n_torch,
    }
    texts = caption_pairs(max(n, n_torch))
    tmp = Path(tempfile.mkdtemp(prefix="bench-clip-"))
    try:
        start = time.perf_counter()
        images = Images(tmp, pictures(max(n, n_torch)), use_store=has_beam)
        sizes_kb = [len(d) / 1000 for d in images.read(images.refs)]
        log(f"{len(images.refs)} images ({statistics.mean(sizes_kb):.1f} KB on average) "
            f"in {time.perf_counter() - start:.1f}s")  # fmt: skip
        pairs = [
            BenchPair(f"p{i:06d}", ref, ar, en)
            for i, (ref, (ar, en)) in enumerate(zip(images.refs, texts, strict=True))
        ]
        figures["image_kb_mean"] = rounded(statistics.mean(sizes_kb), 1)
        words = [sum(len(p[i].split()) for p in pairs[:n]) / n for i in (2, 3)]
        figures["words_per_caption_ar"], figures["words_per_caption_en"] = map(rounded, words)
        # 1. the stage against the bare loop (ONNX Runtime on this device)
        stage = None
        if onnx_device is not None:
            stage = measure_stage(folder, pairs[:n], images, args, args.rounds, tmp, runs)
        else:
            log("section 1: ONNX Runtime has no CUDA provider here; only the reads are timed")
            seconds, _ = interleaved(
                {"reads": lambda: bare_loop(folder, pairs[:n], images, args.batch_size,
                                            args.threads, "cpu", towers=False)},
                args.rounds, "reads:", runs,
            )  # fmt: skip
            stage = {"reads": n / seconds["reads"]}
        # 2. ONNX Runtime against torch
        try:
            import torch  # noqa: F401

            torch_missing = None
        except ImportError as error:
            torch_missing = f"torch not importable ({error}): install the bench extra"
            log(f"skipping the torch comparison: {torch_missing}")
        versus = None
        if torch_missing is None:
            versus = measure_torch(
                folder, pairs[:n_torch], images, args, args.rounds, runs, onnx_device
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    others = monitor.others_share()

    # ------------------------------------------------------------------ figures
    s, v = stage, versus or {}

    def get(d: dict, key: str, digits: int = 2):
        return rounded(d.get(key), digits)

    figures.update(
        pairs_per_s=get(s, "stage"),
        stage_vs_bare=get(s, "stage_vs_bare", 3),
        onnx_vs_torch=get(v, "onnx_vs_torch", 3),
        bare_pairs_per_s=get(s, "bare"),
        torch_pairs_per_s=get(v, "torch"),
        onnx_pairs_per_s=get(v, "onnx"),
        stage_pairs_per_s_net_of_load=get(s, "stage_net"),
        bare_pairs_per_s_net_of_load=get(s, "bare_net"),
        stage_vs_bare_net_of_load=get(s, "stage_vs_bare_net", 3),
        model_load_s=get(s, "load"),
        reads_pairs_per_s=get(s, "reads"),
        stage_batches=s.get("batches"),
        stage_batch_mean=get(s, "batch_mean", 1),
        stage_dropped=s.get("dropped"),
        stage_max_score_difference=None if "difference" not in s else float(s["difference"]),
        torch_max_embedding_difference=None if not v else float(v["difference"]),
        torch_load_s=get(v, "torch_load"),
        ids_per_caption=get(s, "ids_per_caption", 1),
        tokens_per_caption=get(s, "tokens_per_caption", 1),
        torch_skipped=torch_missing,
        other_processes_cpu_share=rounded(others, 3),
        timed_runs=runs.runs,
        timed_runs_repeated=runs.retries,
        worst_kept_run_other_processes_share=rounded(runs.worst_kept, 3),
        seconds_waiting_for_quiet=round(runs.waited),
    )
    if s.get("dropped") or s.get("difference", 0.0) > TOLERANCE:
        log(f"the stage's scores are not the bare loop's: {s.get('dropped')} dropped, "
            f"largest difference {s.get('difference')}")  # fmt: skip

    # ------------------------------------------------------------------ tables
    print(
        f"Scoring benchmark: {args.shape} with random weights, {args.device} "
        f"(ONNX Runtime on {onnx_device or 'no GPU provider'}), {args.threads} threads, batches "
        f"of {args.batch_size}; translated pairs of {words[0]:.1f} Arabic and {words[1]:.1f} "
        f"English words, images of {figures['image_kb_mean']} KB; medians of {args.rounds} "
        "interleaved rounds"
    )

    def rate(key: str, d: dict = s) -> str:
        return "-" if d.get(key) is None else f"{d[key]:.1f}"

    print(f"\n1. The scoring stage against a bare batched loop ({n:,} pairs, pairs/s)")
    rows = [
        ("bare loop", rate("bare"), rate("bare_net"), "1.00x"),
        ("ScorePairs (DirectRunner)", rate("stage"), rate("stage_net"),
         "-" if "stage" not in s else
         f"{s['stage_vs_bare']:.2f}x (net {s['stage_vs_bare_net']:.2f}x)"),
        ("reads, decoding, tokenization only", rate("reads"), "", ""),
    ]  # fmt: skip
    print(table(("variant", "pairs/s", "net of the model's load", "stage vs bare"), rows))
    if "stage" in s:
        print(
            f"model load (both sessions, tokenizer): {s['load']:.1f}s, inside each timing; "
            f"Beam made {s['batches']} batches (mean {s['batch_mean']:.1f} pairs); scores equal "
            f"to the bare loop's within {s['difference']:.1e}; dropped: {s['dropped']}"
        )
    print(f"\n2. ONNX Runtime against torch, both towers ({n_torch:,} pairs, pairs/s)")
    if versus:
        print(
            table(
                ("runtime", "pairs/s", "ratio"),
                [
                    ("ONNX Runtime", rate("onnx", v),
                     "-" if "onnx" not in v else f"{v['onnx_vs_torch']:.2f}x"),
                    (f"torch ({args.device})", rate("torch", v), "1.00x"),
                ],
            )
        )  # fmt: skip
        print(f"embeddings equal within {v['difference']:.1e} before the timing")
    else:
        print(f"skipped: {torch_missing}")
    if others is not None:
        print(f"\n{runs.summary(others)}")
    print(json.dumps(figures, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
