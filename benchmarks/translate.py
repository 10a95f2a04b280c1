"""Benchmark of the translate stage: the pipeline against bare CTranslate2, and CTranslate2
against Hugging Face Transformers, on a random-weight model of the Helsinki-NLP/opus-mt-en-ar
shape; and the share of Conceptual Captions that the collapse of identical captions saves.

The model (6+6 layers, d_model 512, 8 heads, FFN 2048, a 62,000-piece vocabulary, int8) is
built offline by `standins.tiny_model.build_random_model` into `out/bench-models/` on the first
run and reused after. Its `source.spm` is a BPE model trained on captions of the benchmark's
generator, so a caption has about as many tokens as the real opus-mt-en-ar tokenizer gives it
(1.26 per word); its `</s>` logit is pushed down so that no translation ever ends by itself:
every translation runs to its decoding limit, `int(1.5 * source tokens) + 2` for the longest
caption of its batch (the rule of `translators.ctranslate`), and two decoders given the same
batches do exactly the same work. The benchmark checks that they do (the same translations,
the same number of generated tokens).

The captions are 1,000 distinct English captions in the styles of Conceptual Captions and COCO,
drawn from word lists with a seeded generator. Everything runs on 2 threads in this process.

1. The pipeline against a bare loop, with the tuned settings, beam 4 and greedy (`--quick`:
   beam 4 only): `TranslateCaptions` in a DirectRunner pipeline (no memory; it writes the
   translations to a temporary folder), and `CTranslate2Handler.run_inference` alone over the
   same Beam-sized batches (256 captions), against a bare loop over the same batches
   (SentencePiece, `Translator.translate_batch` with the handler's options and limits,
   detokenisation). Each side loads the model inside its timing; imports and first-use costs
   are paid in an untimed run on 16 captions first. Ratio = bare time / our time (the target:
   at least 0.9). Greedy is the harder test: the pipeline's cost is about fixed per run.
2. CTranslate2 int8 against `MarianMTModel.generate` (the same sizes, random weights, torch CPU,
   `torch.set_num_threads(2)`) in fp32 and dynamically quantised to int8 (`quantize_dynamic` on
   `nn.Linear`), greedy and beam 4, on 128 captions (`--quick`: 64) in batches of 32 in input
   order, `max_new_tokens` the CTranslate2 limit of each batch. CTranslate2 runs twice: as the
   issue measured it (one translator with 2 OpenMP threads, one batch at a time) and tuned (two
   single-threaded workers sharing the model, `inter_threads=2, intra_threads=1`, two batches
   in flight through `asynchronous=True`). Ratio = CTranslate2 / Hugging Face sentences/s.
   Skipped, with nulls in the JSON, when torch or transformers cannot be imported (`make bench`
   installs the `bench` extra). `--sweep` adds a table of CTranslate2 settings on the same
   captions: threads, compute type, options, and `max_batch_size` as the handler calls it.
3. The collapse of identical captions: unique normalised captions / all captions over
   `original_caption` of the CC sample (`/work/shared/samples/cc3m_sample_200.jsonl`, or
   `--cc-sample`), and over the demo's `manifests/samples/cc/cc_demo.tsv`.

Timings are medians of 3 interleaved rounds (the variants of a section take turns in a
rotating order). On a shared machine other processes distort them, a 2-thread run most: each
timed run first waits (a little) for a quiet machine, a run during which other processes took
more than 10 % of the CPU is repeated once, and the least disturbed is kept; the report says
how disturbed the kept runs were, with a warning above 10 %. Waiting and repeating stop after
a time budget, so a busy machine stretches the benchmark only a little. The last line on
stdout is one JSON object holding every figure.

    python benchmarks/translate.py            # 1,000 captions, about 17 minutes on 2 cores
    python benchmarks/translate.py --quick    # 200 captions, under 5 minutes
    python benchmarks/translate.py --sweep    # also the CTranslate2 settings (+10 minutes)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from measure import (  # noqa: E402
    CpuMonitor,
    Runs,
    chunks,
    interleaved,
    log,
)
from measure import rounded as _r  # noqa: E402
from measure import table as _table  # noqa: E402

from pipeline.config import TranslationConfig  # noqa: E402
from pipeline.folders import building  # noqa: E402
from pipeline.text import normalize_english  # noqa: E402
from standins.tiny_model import build_random_model  # noqa: E402

SEED = 20240611
FULL_CAPTIONS = 1000
QUICK_CAPTIONS = 200
THREADS = 2
BEAM_BATCH = 256  # TranslateCaptions' max_batch_captions: the Beam batch of one translate_batch
HF_BATCH = 32  # the batch for the Hugging Face comparison
RATIO = 1.5  # TranslationConfig.max_decoding_ratio
EOS = "</s>"
MODEL_SHAPE = {"layers": 6, "d_model": 512, "heads": 8, "ffn": 2048, "vocab": 62000}
MODEL_DIR = REPO / "out" / "bench-models" / "opus-mt-en-ar-shape-int8-v1"
SPM_VOCAB = 700  # BPE pieces of the benchmark's source.spm: 1.26 tokens per word
SPM_CORPUS = 20_000  # generated captions the SentencePiece model is trained on
CC_SAMPLE = Path("/work/shared/samples/cc3m_sample_200.jsonl")
CC_DEMO = REPO / "manifests" / "samples" / "cc" / "cc_demo.tsv"
# The tuned CTranslate2 settings on 2 cores (section 2, and `--sweep`).
TUNED = {"inter_threads": 2, "intra_threads": 1, "max_batch_size": 32, "batch_type": "examples"}
# Section 1's (tuned, beam size) runs: the tuned settings, beam 4 and greedy (the pipeline's
# overhead is about fixed, so the fastest decoding is the hardest test of the ratio).
PART1 = ((True, 4), (True, 1))
QUICK_PART1 = ((True, 4),)
HF_CAPTIONS = 128  # section 2's captions (4 batches): HF fp32 at beam 4 does ~5 sentences/s
QUICK_HF_CAPTIONS = 64
WARM_UP = 16  # captions of the untimed first run of each variant
WAIT_QUICK, WAIT_FULL = 30.0, 120.0  # seconds the runs may spend waiting for a quiet machine
# Seconds after which runs no longer wait or repeat, so that a busy machine cannot stretch
# the benchmark much past its budget (--quick: under 5 minutes).
PATIENCE_QUICK, PATIENCE_FULL = 210.0, 780.0

# ---------------------------------------------------------------------------- captions

ANIMATE = (
    "man", "woman", "boy", "girl", "child", "baby", "dog", "cat", "horse", "cow", "sheep",
    "elephant", "giraffe", "zebra", "bird", "duck", "pigeon", "bear", "couple", "family",
    "group of people", "crowd", "football player", "tennis player", "baseball player", "chef",
    "surfer", "skier", "skateboarder", "cyclist", "businessman", "police officer", "soldier",
    "bride", "fisherman", "student", "teenager", "farmer", "tourist", "vendor", "dancer",
    "nurse", "musician", "waiter", "firefighter", "monkey", "camel", "goat", "puppy", "kitten",
)  # fmt: skip
THINGS = (
    "bicycle", "car", "bus", "train", "boat", "airplane", "motorcycle", "truck", "bench",
    "table", "chair", "sofa", "bed", "laptop", "phone", "umbrella", "kite", "frisbee",
    "surfboard", "skateboard", "pizza", "sandwich", "cake", "bowl of fruit", "cup of coffee",
    "plate of food", "vase of flowers", "clock tower", "bridge", "building", "house", "church",
    "mosque", "castle", "lighthouse", "fountain", "statue", "fence", "tree", "window", "door",
    "street sign", "traffic light", "fire hydrant", "mirror", "sink", "book", "guitar", "piano",
    "tent", "flag", "balloon", "basket", "suitcase", "map", "poster", "painting", "card",
)  # fmt: skip
PLACES = (
    "street", "city street", "beach", "park", "field", "grassy field", "kitchen", "living room",
    "bathroom", "bedroom", "market", "train station", "airport", "harbour", "river", "lake",
    "forest", "desert", "mountain", "snowy slope", "road", "highway", "village", "garden",
    "stadium", "stage", "restaurant", "office", "classroom", "zoo", "farm", "square", "bridge",
    "sidewalk", "parking lot", "shore", "hill", "valley", "island", "old town",
)  # fmt: skip
ADJECTIVES = (
    "red", "blue", "green", "yellow", "white", "black", "brown", "old", "young", "small",
    "large", "tall", "beautiful", "modern", "colorful", "empty", "crowded", "traditional",
    "vintage", "famous", "abandoned", "historic", "wooden", "busy", "quiet", "happy", "little",
    "giant", "fresh", "dark", "bright", "snowy", "sunny", "rainy", "ancient", "elegant",
)  # fmt: skip
VERBS = (
    "riding", "holding", "carrying", "looking at", "playing with", "sitting on", "standing next to",
    "walking past", "eating", "watching", "pushing", "pulling", "leaning on", "jumping over",
    "painting", "selling", "cleaning", "repairing", "photographing", "waiting for", "throwing",
    "catching", "climbing", "crossing", "feeding", "hugging", "reading", "cooking", "driving",
    "flying",
)  # fmt: skip
SCENES = (
    "at night", "at sunset", "in the rain", "in winter", "during the day", "on a sunny day",
    "in the morning", "during the festival", "after the game", "before the wedding",
    "in the background", "from above", "on a cloudy day", "in the snow", "under a clear sky",
)  # fmt: skip
# Conceptual Captions replaces names by hypernyms ("actor", "sports team", "person").
CC_HEADS = (
    "actor", "person", "football player", "pop artist", "politician", "country artist",
    "celebrity", "film director", "athlete", "sports team", "rock artist", "tv personality",
)  # fmt: skip
CITIES = ("london", "paris", "new york", "cairo", "dubai", "tokyo", "madrid", "rome", "berlin")
CC_TEMPLATES = (
    "{head} attends the premiere of the film .",
    "{head} attends the {adj} event in {city} .",
    "{head} celebrates after scoring against sports team .",
    "{head} performs on stage during the festival .",
    "{head} poses with {a_thing} {scene} .",
    "vector illustration of {a_thing} isolated on a white background",
    "{a_thing} isolated on a white background",
    "seamless pattern with {adj} {thing}s and {thing2}s .",
    "aerial view of the {place} {scene}",
    "interior design of {adj} {place} with {a_thing}",
    "the {adj} {place} of a city {scene} .",
    "portrait of {a_being} {verb} {a_thing}",
    "{a_being} {verb} {a_thing} on the {place} {scene}",
    "{adj} {thing} in the {place} , {scene}",
    "a view of the {adj} {place} from the {place2} .",
    "{head} and {head2} arrive at the awards ceremony {scene} .",
    "{adj} {thing} on {adj2} background",
    "illustration of {a_being} {verb} {a_thing} in cartoon style",
    "close up of {a_thing} with {adj} {thing2}s",
    "{a_being} walks along the {place} with {a_thing} .",
)
COCO_TEMPLATES = (
    "{A_being} {verb} {a_thing}.",
    "{A_being} {verb} {a_thing} on the {place}.",
    "{A_being} {verb} {a_thing} in the {place} {scene}.",
    "{A_being} is {verb} {a_thing} while {a_being2} watches.",
    "{A_being} and {a_being2} are {verb} {a_thing} near the {place}.",
    "There is {a_being} {verb} {a_thing} next to {a_thing2}.",
    "{A_thing} sitting on top of {a_thing2} in the {place}.",
    "{A_being} {verb} {a_thing} down the {place} {scene} with {a_thing2} behind.",
    "Two {being}s {verb} {a_thing} on the {place}.",
    "{A_thing} parked beside the {place}.",
)


def _a(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def caption(rng: random.Random) -> str:
    """One English caption: 60 % in the style of Conceptual Captions, 40 % of COCO."""

    def noun_phrase(nouns: Sequence[str]) -> str:
        noun = rng.choice(nouns)
        return f"{rng.choice(ADJECTIVES)} {noun}" if rng.random() < 0.4 else noun

    being, being2 = noun_phrase(ANIMATE), noun_phrase(ANIMATE)
    thing, thing2 = noun_phrase(THINGS), noun_phrase(THINGS)
    v = {
        "head": rng.choice(CC_HEADS),
        "head2": rng.choice(CC_HEADS),
        "adj": rng.choice(ADJECTIVES),
        "adj2": rng.choice(ADJECTIVES),
        "city": rng.choice(CITIES),
        "thing": rng.choice(THINGS),
        "thing2": rng.choice(THINGS),
        "being": rng.choice(ANIMATE),
        "place": rng.choice(PLACES),
        "place2": rng.choice(PLACES),
        "scene": rng.choice(SCENES),
        "verb": rng.choice(VERBS),
        "a_being": _a(being),
        "a_being2": _a(being2),
        "a_thing": _a(thing),
        "a_thing2": _a(thing2),
    }
    v["A_being"] = v["a_being"].capitalize()
    v["A_thing"] = v["a_thing"].capitalize()
    templates = CC_TEMPLATES if rng.random() < 0.6 else COCO_TEMPLATES
    return rng.choice(templates).format(**v)


def distinct_captions(count: int, seed: int = SEED) -> list[str]:
    """`count` captions, normalised like `caption_en` and all distinct, so that the pipeline
    (which collapses identical captions) and the bare loop translate the same list."""
    rng = random.Random(seed)
    seen: dict[str, None] = {}
    while len(seen) < count:
        seen.setdefault(normalize_english(caption(rng)), None)
    return list(seen)


# ---------------------------------------------------------------------------- the model


def ensure_model(folder: Path = MODEL_DIR) -> tuple[Path, float | None]:
    """The benchmark model folder, built on first use (built beside it, then renamed, so an
    interrupted build is never taken for a model); and the build's seconds (None: reused)."""
    if (folder / "model.bin").is_file() and (folder / "source.spm").is_file():
        return folder, None
    start = time.perf_counter()
    rng = random.Random(SEED + 1)
    corpus = [caption(rng) for _ in range(SPM_CORPUS)]
    with building(folder, ".bench-model-") as tmp:
        build_random_model(
            tmp,
            **MODEL_SHAPE,
            quantization="int8",
            english=corpus,
            spm_vocab_size=SPM_VOCAB,
            spm_model_type="bpe",
            eos_bias=-50.0,  # no translation ends by itself: every one runs to its limit
        )
    return folder, time.perf_counter() - start


def decoding_limit(batch: Sequence[Sequence[str]]) -> int:
    """CTranslate2's one limit per call, as `translators.ctranslate` computes it."""
    return max(int(RATIO * len(tokens)) + 2 for tokens in batch)


# ---------------------------------------------------------------------------- 1. pipeline


def pipeline_config(model: Path, beam_size: int, tuned: bool) -> TranslationConfig:
    """The manifest's translation section: its defaults, which on a CPU are the tuned settings
    (one single-threaded worker per core, sub-batches of 32 captions: `TUNED` on 2 cores), or
    the defaults before the tuning (one worker with 2 threads, sub-batches of 2048 tokens)."""
    settings = (
        {}
        if tuned
        else {
            "inter_threads": 1,
            "intra_threads": THREADS,
            "max_batch_size": 2048,
            "batch_type": "tokens",
        }
    )
    return TranslationConfig(model=str(model), device="cpu", beam_size=beam_size, **settings)


def bare_loop(config: TranslationConfig, captions: Sequence[str]) -> dict:
    """What a script without the pipeline does: load, tokenize, translate_batch, detokenize,
    over the same Beam-sized batches with the handler's options and limits."""
    import ctranslate2
    import sentencepiece as spm

    from translators.ctranslate import resolve_settings

    settings = resolve_settings(config)  # the same settings as the pipeline's
    translator = ctranslate2.Translator(
        config.model,
        device="cpu",
        compute_type="int8",
        inter_threads=settings.inter_threads,
        intra_threads=settings.intra_threads,
    )
    source = spm.SentencePieceProcessor(model_file=os.path.join(config.model, "source.spm"))
    target = spm.SentencePieceProcessor(model_file=os.path.join(config.model, "target.spm"))
    out, tokens = [], 0
    for batch in chunks(captions, BEAM_BATCH):
        sources = [[*source.encode(text, out_type=str), EOS] for text in batch]
        results = translator.translate_batch(
            sources,
            max_batch_size=settings.max_batch_size,
            batch_type=settings.batch_type,
            beam_size=config.beam_size,
            max_decoding_length=decoding_limit(sources),
            max_input_length=0,
            return_scores=True,
            return_end_token=True,
            disable_unk=True,
        )
        for result in results:
            pieces = result.hypotheses[0]
            tokens += len(pieces)
            if pieces and pieces[-1] == EOS:
                pieces = pieces[:-1]
            out.append(target.decode(pieces).strip())
    return {"ar": out, "tokens": tokens}


def handler_alone(config: TranslationConfig, captions: Sequence[str]) -> dict:
    """`CTranslate2Handler` without Beam: load_model, then run_inference per Beam batch."""
    from translators.ctranslate import CTranslate2Handler

    handler = CTranslate2Handler(config, max_batch_captions=BEAM_BATCH)
    model = handler.load_model()
    out = []
    for batch in chunks(captions, BEAM_BATCH):
        out += [t.ar for t in handler.run_inference(batch, model)]
    return {"ar": out}


def in_pipeline(config: TranslationConfig, captions: Sequence[str], folder: Path) -> dict:
    """`TranslateCaptions` in a DirectRunner pipeline, as `python -m pipeline run` runs it:
    pairs in, kept and dropped pairs out, new translations written to `folder`."""
    import apache_beam as beam
    import pyarrow.parquet as pq

    from pipeline.records import TRANSLATED, Pair
    from translators.memory import memory_files
    from translators.stage import TranslateCaptions

    shutil.rmtree(folder, ignore_errors=True)
    pairs = [
        Pair(f"cc{i:06d}", "conceptual_captions", "conceptual_captions", str(i), "", TRANSLATED,
             caption_en=text)
        for i, text in enumerate(captions)
    ]  # fmt: skip
    with beam.Pipeline(runner="DirectRunner") as p:
        kept, dropped = (
            p
            | beam.Create(pairs)
            | TranslateCaptions(config, str(folder), max_batch_captions=BEAM_BATCH)
        )
        _ = (kept, dropped) | beam.Flatten() | beam.combiners.Count.Globally()
    written = {}
    for path in memory_files(str(folder / "translations")):
        for row in pq.read_table(path, columns=["en", "ar"]).to_pylist():
            written[row["en"]] = row["ar"]
    return {"ar": [written.get(text) for text in captions]}


def measure_pipeline(
    model: Path,
    captions: list[str],
    beam_size: int,
    tuned: bool,
    rounds: int,
    tmp: Path,
    runs: Runs,
) -> dict:
    config = pipeline_config(model, beam_size, tuned)
    name = f"{'tuned' if tuned else 'default'}, {'greedy' if beam_size == 1 else 'beam 4'}"
    variants = {
        "bare": lambda texts: bare_loop(config, texts),
        "handler": lambda texts: handler_alone(config, texts),
        "pipeline": lambda texts: in_pipeline(config, texts, tmp / "pipeline-out"),
    }
    # Imports and first-use costs are paid once per process (or job), outside the timings.
    for run in variants.values():
        run(captions[:WARM_UP])
    seconds, results = interleaved(
        {name: lambda run=run: run(captions) for name, run in variants.items()},
        rounds,
        f"pipeline, {name}:",
        runs,
    )
    bare = results["bare"]["ar"]
    n = len(captions)
    return {
        "name": name,
        "key": f"{'tuned' if tuned else 'default'}_{'greedy' if beam_size == 1 else 'beam4'}",
        "bare": n / seconds["bare"],
        "handler": n / seconds["handler"],
        "pipeline": n / seconds["pipeline"],
        "handler_vs_bare": seconds["bare"] / seconds["handler"],
        "pipeline_vs_bare": seconds["bare"] / seconds["pipeline"],
        "tokens_per_caption": results["bare"]["tokens"] / n,
        # The same batches and limits give the same translations, string for string.
        "handler_same": sum(a == b for a, b in zip(results["handler"]["ar"], bare, strict=True)),
        "pipeline_same": sum(a == b for a, b in zip(results["pipeline"]["ar"], bare, strict=True)),
    }


# ---------------------------------------------------------------------------- 2. Hugging Face


def ct2_translator(model: Path, inter_threads: int, intra_threads: int, compute_type="int8"):
    import ctranslate2

    return ctranslate2.Translator(
        str(model),
        device="cpu",
        compute_type=compute_type,
        inter_threads=inter_threads,
        intra_threads=intra_threads,
    )


def ct2_batches(
    translator, batches: list[list[list[str]]], beam_size: int, in_flight: int = 1, **options
) -> dict:
    """Each batch one translate_batch call with its own limit and the handler's options;
    `in_flight` > 1 submits them asynchronously (for a translator with `inter_threads` > 1)."""
    kwargs = dict(
        beam_size=beam_size,
        max_input_length=0,
        return_scores=True,
        return_end_token=True,
        disable_unk=True,
    )
    kwargs.update(options)
    if in_flight == 1:
        results = []
        for batch in batches:
            results += translator.translate_batch(
                batch, max_decoding_length=decoding_limit(batch), **kwargs
            )
    else:
        pending = []
        for batch in batches:
            pending += translator.translate_batch(
                batch, max_decoding_length=decoding_limit(batch), asynchronous=True, **kwargs
            )
        results = [p.result() for p in pending]
    return {"tokens": sum(len(r.hypotheses[0]) for r in results)}


class HuggingFace:
    """MarianMTModel of the opus-mt-en-ar shape with random weights, on the benchmark model's
    vocabulary (the same token ids), fp32 or dynamically quantised to int8."""

    def __init__(self, model: Path):
        import torch
        from transformers import MarianConfig, MarianMTModel

        torch.set_num_threads(THREADS)
        with open(model / "shared_vocabulary.json", encoding="utf-8") as f:
            vocabulary = json.load(f)
        self.ids = {piece: i for i, piece in enumerate(vocabulary)}
        self.eos = self.ids[EOS]
        self.pad = len(vocabulary) - 1  # a synthetic piece, as Marian's pad is its last id
        config = MarianConfig(
            vocab_size=len(vocabulary),
            d_model=MODEL_SHAPE["d_model"],
            encoder_layers=MODEL_SHAPE["layers"],
            decoder_layers=MODEL_SHAPE["layers"],
            encoder_attention_heads=MODEL_SHAPE["heads"],
            decoder_attention_heads=MODEL_SHAPE["heads"],
            encoder_ffn_dim=MODEL_SHAPE["ffn"],
            decoder_ffn_dim=MODEL_SHAPE["ffn"],
            activation_function="swish",  # opus-mt's
            scale_embedding=True,
            max_position_embeddings=512,
            pad_token_id=self.pad,
            eos_token_id=self.eos,
            decoder_start_token_id=self.pad,
            forced_eos_token_id=None,
        )
        torch.manual_seed(SEED)
        self.fp32 = MarianMTModel(config).eval()
        # quantize_dynamic copies the model: the fp32 one stays fp32.
        self.int8 = torch.ao.quantization.quantize_dynamic(
            self.fp32, {torch.nn.Linear}, dtype=torch.qint8
        )

    def inputs(self, batches: list[list[list[str]]]) -> list[tuple]:
        """(input_ids, attention_mask, max_new_tokens) of each batch, padded on the right."""
        import torch

        prepared = []
        for batch in batches:
            width = max(len(tokens) for tokens in batch)
            ids = torch.full((len(batch), width), self.pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, tokens in enumerate(batch):
                ids[row, : len(tokens)] = torch.tensor([self.ids[t] for t in tokens])
                mask[row, : len(tokens)] = 1
            prepared.append((ids, mask, decoding_limit(batch)))
        return prepared

    def generate(self, model, prepared: list[tuple], beam_size: int) -> dict:
        import torch

        tokens = ends = 0
        with torch.inference_mode():
            for ids, mask, limit in prepared:
                out = model.generate(
                    input_ids=ids,
                    attention_mask=mask,
                    num_beams=beam_size,
                    max_new_tokens=limit,
                    do_sample=False,
                    decoder_start_token_id=self.pad,
                    eos_token_id=self.eos,
                    pad_token_id=self.pad,
                )
                tokens += (out.shape[1] - 1) * out.shape[0]  # the decoder start is not generated
                ends += int((out[:, 1:] == self.eos).sum())
        return {"tokens": tokens, "eos": ends}


def measure_hf(model: Path, captions: list[str], rounds: int, runs: Runs) -> dict:
    import sentencepiece as spm

    source = spm.SentencePieceProcessor(model_file=str(model / "source.spm"))
    batches = chunks([[*source.encode(t, out_type=str), EOS] for t in captions], HF_BATCH)
    hf = HuggingFace(model)
    prepared = hf.inputs(batches)
    default = ct2_translator(model, 1, THREADS)
    tuned = ct2_translator(model, TUNED["inter_threads"], TUNED["intra_threads"])
    n = len(captions)
    figures: dict = {"work": {}}
    warm = [batches[0][:4]]  # first-use costs (kernel selection, allocations), untimed
    for beam_size in (1, 4):
        for translator in (default, tuned):
            ct2_batches(translator, warm, beam_size)
        for model_ in (hf.int8, hf.fp32):
            hf.generate(model_, hf.inputs(warm), beam_size)
    for beam_size, label in ((1, "greedy"), (4, "beam4")):
        seconds, results = interleaved(
            {
                "ct2_int8": lambda b=beam_size: ct2_batches(default, batches, b),
                "ct2_int8_tuned": lambda b=beam_size: ct2_batches(
                    tuned, batches, b, in_flight=TUNED["inter_threads"]
                ),
                "hf_int8": lambda b=beam_size: hf.generate(hf.int8, prepared, b),
                "hf_fp32": lambda b=beam_size: hf.generate(hf.fp32, prepared, b),
            },
            rounds,
            f"CTranslate2 vs Hugging Face, {label}:",
            runs,
        )
        for name, s in seconds.items():
            figures[f"{name}_{label}"] = n / s
        figures["work"][label] = {name: r["tokens"] / n for name, r in results.items()}
        figures["work"][label]["hf_eos"] = results["hf_int8"]["eos"] + results["hf_fp32"]["eos"]
    return figures


# ---------------------------------------------------------------------------- sweep


def sorted_groups(
    translator, calls: list[list[list[str]]], beam_size: int, group: int = HF_BATCH
) -> dict:
    """A proposal for the handler: each call's captions sorted by length and cut into groups
    of `group`, one asynchronous translate_batch per group with the group's own limit (the
    groups run in parallel on `inter_threads` workers, and a caption that never ends stops
    near its own limit instead of the longest caption's of the whole call)."""
    pending = []
    for call in calls:
        for batch in chunks(sorted(call, key=len), group):
            pending += translator.translate_batch(
                batch,
                beam_size=beam_size,
                max_decoding_length=decoding_limit(batch),
                max_input_length=0,
                return_scores=True,
                return_end_token=True,
                disable_unk=True,
                asynchronous=True,
            )
    return {"tokens": sum(len(p.result().hypotheses[0]) for p in pending)}


def sweep_cases(translators: dict, tokenized: list, beam_size: int) -> dict:
    """The CTranslate2 settings that `--sweep` compares, as callables: on batches of 32 in
    input order (the Hugging Face comparison's work), then as the handler calls it (one call
    per Beam batch of up to 256 captions, one limit a call)."""
    batches = chunks(tokenized, HF_BATCH)
    calls = chunks(tokenized, BEAM_BATCH)
    b = beam_size
    one_two, one_one, two_one = translators["1/2"], translators["1/1"], translators["2/1"]
    tokens, examples = {"batch_type": "tokens"}, {"batch_type": "examples"}
    return {
        "batches of 32: inter 1 intra 2, one at a time": lambda: ct2_batches(one_two, batches, b),
        "batches of 32: inter 1 intra 2, compute_type int8_float32": lambda: ct2_batches(
            translators["1/2 int8_float32"], batches, b
        ),
        "batches of 32: inter 1 intra 2, no return_scores, no disable_unk": lambda: ct2_batches(
            one_two, batches, b, return_scores=False, disable_unk=False
        ),
        "batches of 32: inter 1 intra 1, one at a time": lambda: ct2_batches(one_one, batches, b),
        "batches of 32: inter 2 intra 1, one at a time": lambda: ct2_batches(two_one, batches, b),
        "batches of 32: inter 2 intra 1, 2 in flight (tuned)": lambda: ct2_batches(
            two_one, batches, b, in_flight=2
        ),
        "batches of 32: inter 2 intra 1, 4 in flight": lambda: ct2_batches(
            two_one, batches, b, in_flight=4
        ),
        "Beam batches: inter 1 intra 2, max_batch_size 2048 tokens (defaults)": lambda: ct2_batches(
            one_two, calls, b, max_batch_size=2048, **tokens
        ),
        "Beam batches: inter 1 intra 2, max_batch_size 32 examples": lambda: ct2_batches(
            one_two, calls, b, max_batch_size=32, **examples
        ),
        "Beam batches: inter 2 intra 1, max_batch_size 2048 tokens": lambda: ct2_batches(
            two_one, calls, b, max_batch_size=2048, **tokens
        ),
        "Beam batches: inter 2 intra 1, max_batch_size 1024 tokens": lambda: ct2_batches(
            two_one, calls, b, max_batch_size=1024, **tokens
        ),
        "Beam batches: inter 2 intra 1, max_batch_size 16 examples": lambda: ct2_batches(
            two_one, calls, b, max_batch_size=16, **examples
        ),
        "Beam batches: inter 2 intra 1, max_batch_size 32 examples (tuned)": lambda: ct2_batches(
            two_one, calls, b, max_batch_size=32, **examples
        ),
        "Beam batches: inter 2 intra 1, max_batch_size 64 examples": lambda: ct2_batches(
            two_one, calls, b, max_batch_size=64, **examples
        ),
        "Beam batches: inter 2 intra 1, sorted groups of 32, a limit each": lambda: sorted_groups(
            two_one, calls, b
        ),
    }


def sweep(model: Path, captions: list[str], rounds: int, runs: Runs) -> list[dict]:
    """CTranslate2 settings on the Hugging Face comparison's captions (batches of 32 in input
    order, each with its own limit unless said), greedy and beam 4."""
    import sentencepiece as spm

    source = spm.SentencePieceProcessor(model_file=str(model / "source.spm"))
    tokenized = [[*source.encode(t, out_type=str), EOS] for t in captions]
    translators = {
        "1/2": ct2_translator(model, 1, 2),
        "1/2 int8_float32": ct2_translator(model, 1, 2, "int8_float32"),
        "1/1": ct2_translator(model, 1, 1),
        "2/1": ct2_translator(model, 2, 1),
    }
    rows = []
    for beam_size in (1, 4):
        for translator in translators.values():
            ct2_batches(translator, [tokenized[:4]], beam_size)  # first use, untimed
        cases = sweep_cases(translators, tokenized, beam_size)
        seconds, results = interleaved(cases, rounds, f"sweep, beam {beam_size}:", runs)
        for name, s in seconds.items():
            rows.append(
                {
                    "beam": beam_size,
                    "setting": name,
                    "sentences_per_s": len(captions) / s,
                    "tokens_per_caption": results[name]["tokens"] / len(captions),
                }
            )
    return rows


# ---------------------------------------------------------------------------- 3. collapse


def unique_share(captions: Sequence[str]) -> tuple[int, int, float]:
    """(all, unique, unique / all) over non-empty normalised captions."""
    normalised = [c for c in (normalize_english(c) for c in captions) if c]
    unique = len(set(normalised))
    return len(normalised), unique, unique / len(normalised) if normalised else 1.0


def cc_sample_captions(path: Path) -> list[str]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line)["original_caption"] for line in f if line.strip()]


def cc_tsv_captions(path: Path) -> list[str]:
    with path.open(encoding="utf-8") as f:
        return [line.split("\t", 1)[0] for line in f if line.strip()]


# ---------------------------------------------------------------------------- report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_CAPTIONS} captions")
    parser.add_argument("--captions", type=int, help="captions translated (overrides the size)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds per measure (default 3)")
    parser.add_argument("--hf-captions", type=int, help="captions of section 2 (default 160)")
    parser.add_argument("--sweep", action="store_true", help="also sweep CTranslate2 settings")
    parser.add_argument("--cc-sample", type=Path, default=CC_SAMPLE, help="CC JSON lines sample")
    args = parser.parse_args(argv)
    n = args.captions or (QUICK_CAPTIONS if args.quick else FULL_CAPTIONS)
    rounds = args.rounds or 3
    n_hf = min(n, args.hf_captions or (QUICK_HF_CAPTIONS if args.quick else HF_CAPTIONS))
    runs = Runs(
        wait_budget=WAIT_QUICK if args.quick else WAIT_FULL,
        patience=PATIENCE_QUICK if args.quick else PATIENCE_FULL,
    )

    model, built = ensure_model()
    log(f"model {model}: " + (f"built in {built:.1f}s" if built else "reused"))
    captions = distinct_captions(n)
    monitor = CpuMonitor()
    figures: dict = {"benchmark": "translate", "quick": args.quick, "captions": n}

    import sentencepiece as spm

    source = spm.SentencePieceProcessor(model_file=str(model / "source.spm"))
    lengths = [len(source.encode(c)) + 1 for c in captions]
    words = sum(len(c.split()) for c in captions)
    figures["source_tokens_mean"] = _r(statistics.mean(lengths), 2)
    figures["source_tokens_max"] = max(lengths)
    figures["tokens_per_word"] = _r((sum(lengths) - n) / words, 3)

    # 1. the pipeline against the bare loop
    tmp = Path(tempfile.mkdtemp(prefix="bench-translate-"))
    try:
        part1 = [
            measure_pipeline(model, captions, beam_size, tuned, rounds, tmp, runs)
            for tuned, beam_size in (QUICK_PART1 if args.quick else PART1)
        ]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    # 2. against Hugging Face
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401

        hf_missing = None
    except ImportError as error:
        hf_missing = f"torch/transformers not importable ({error}): install the bench extra"
    hf = None if hf_missing else measure_hf(model, captions[:n_hf], rounds, runs)
    if hf_missing:
        log(f"skipping the Hugging Face comparison: {hf_missing}")
    swept = sweep(model, captions[:n_hf], rounds, runs) if args.sweep else []

    # 3. the collapse of identical captions
    collapse = {}
    for label, path, read in (
        ("cc_sample", args.cc_sample, cc_sample_captions),
        ("cc_demo", CC_DEMO, cc_tsv_captions),
    ):
        if path.is_file():
            collapse[label] = (path, *unique_share(read(path)))
    others = monitor.others_share()

    # ------------------------------------------------------------------ figures
    main1 = part1[0]
    figures["pipeline_vs_bare"] = _r(main1["pipeline_vs_bare"])
    figures["handler_vs_bare"] = _r(main1["handler_vs_bare"])
    measured = {p["key"]: p for p in part1}
    for tuned, beam_size in PART1:  # the same keys in both sizes: null when not measured
        key = f"{'tuned' if tuned else 'default'}_{'greedy' if beam_size == 1 else 'beam4'}"
        p = measured.get(key)
        for what in ("bare", "handler", "pipeline"):
            figures[f"{what}_{key}_sent_per_s"] = _r(p[what], 2) if p else None
        for what in ("pipeline_vs_bare", "handler_vs_bare"):
            figures[f"{what}_{key}"] = _r(p[what]) if p else None
        figures[f"target_tokens_per_caption_{key}"] = _r(p["tokens_per_caption"], 2) if p else None
        figures[f"identical_translations_{key}"] = (
            min(p["handler_same"], p["pipeline_same"]) == n if p else None
        )
    figures["hf_captions"] = n_hf if hf else None
    names = ("ct2_int8", "ct2_int8_tuned", "hf_int8", "hf_fp32")
    for label in ("greedy", "beam4"):
        for name in names:
            figures[f"{name}_{label}_sent_per_s"] = _r(hf[f"{name}_{label}"], 2) if hf else None
        for ct2 in ("ct2_int8", "ct2_int8_tuned"):
            for base in ("hf_int8", "hf_fp32"):
                ratio = hf[f"{ct2}_{label}"] / hf[f"{base}_{label}"] if hf else None
                figures[f"{ct2}_vs_{base}_{label}"] = _r(ratio)
    # The headline ratios: tuned CTranslate2 int8 against Hugging Face int8.
    figures["ct2_vs_hf_greedy"] = figures["ct2_int8_tuned_vs_hf_int8_greedy"]
    figures["ct2_vs_hf_beam4"] = figures["ct2_int8_tuned_vs_hf_int8_beam4"]
    if hf:
        figures["target_tokens_per_caption_hf"] = {
            label: {k: _r(v, 2) for k, v in w.items()} for label, w in hf["work"].items()
        }
    figures["hf_skipped"] = hf_missing
    sample = collapse.get("cc_sample")
    figures["unique_share"] = _r(sample[3], 4) if sample else None
    figures["unique_saving"] = _r(1 - sample[3], 4) if sample else None
    figures["unique_captions"] = f"{sample[2]}/{sample[1]}" if sample else None
    demo = collapse.get("cc_demo")
    figures["unique_share_demo"] = _r(demo[3], 4) if demo else None
    figures["unique_saving_demo"] = _r(1 - demo[3], 4) if demo else None
    figures["tuned_settings"] = TUNED
    figures["sweep"] = [
        {**row, "sentences_per_s": _r(row["sentences_per_s"], 2),
         "tokens_per_caption": _r(row["tokens_per_caption"], 2)}
        for row in swept
    ]  # fmt: skip
    figures["other_processes_cpu_share"] = _r(others, 3)
    figures["timed_runs"] = runs.runs
    figures["timed_runs_repeated"] = runs.retries
    figures["worst_kept_run_other_processes_share"] = _r(runs.worst_kept, 3)
    figures["seconds_waiting_for_quiet"] = round(runs.waited)

    # ------------------------------------------------------------------ tables
    print(
        f"Translate benchmark: {n:,} distinct captions ({figures['source_tokens_mean']} source "
        f"tokens on average, max {figures['source_tokens_max']}), a random int8 model of the "
        f"opus-mt-en-ar shape, {THREADS} threads, medians of {rounds} interleaved rounds"
    )
    print("\n1. The translate stage against a bare translate_batch loop (sentences/s)")
    rows = []
    for p in part1:
        rows.append(
            (
                p["name"],
                f"{p['bare']:.1f}",
                f"{p['handler']:.1f} ({p['handler_vs_bare']:.2f}x)",
                f"{p['pipeline']:.1f} ({p['pipeline_vs_bare']:.2f}x)",
                f"{p['tokens_per_caption']:.1f}",
                "yes" if min(p["handler_same"], p["pipeline_same"]) == n else "NO",
            )
        )
    print(
        _table(
            ("settings", "bare loop", "handler alone", "Beam pipeline", "tokens out", "same"),
            rows,
        )
    )
    print(
        "tuned: TranslationConfig with "
        + ", ".join(f"{k} {v}" for k, v in TUNED.items())
        + f"; Beam batches of {BEAM_BATCH} captions, one translate_batch each; each side loads "
        "the model inside its timing; tokens out: generated tokens per caption (every "
        "translation runs to its batch's limit); same: all three give the same translations"
    )
    print(f"\n2. CTranslate2 against Hugging Face MarianMTModel.generate ({n_hf} captions, "
          f"batches of {HF_BATCH}, sentences/s)")  # fmt: skip
    if hf:
        rows = []
        for label, title in (("greedy", "greedy"), ("beam4", "beam 4")):
            row = [title]
            for name in names:
                row.append(f"{hf[f'{name}_{label}']:.1f}")
            for ct2 in ("ct2_int8", "ct2_int8_tuned"):
                row.append(
                    f"{figures[f'{ct2}_vs_hf_int8_{label}']:.2f}x / "
                    f"{figures[f'{ct2}_vs_hf_fp32_{label}']:.2f}x"
                )
            rows.append(row)
        print(
            _table(
                (
                    "search",
                    "CT2 int8",
                    "CT2 int8 tuned",
                    "HF int8",
                    "HF fp32",
                    "CT2 vs HF int8 / fp32",
                    "tuned vs HF int8 / fp32",
                ),
                rows,
            )
        )
        work = hf["work"]
        print(
            "CT2 int8: 1 translator, intra_threads 2, one batch at a time (as the issue measured);"
            " tuned: inter_threads 2, intra_threads 1, two batches in flight. Generated tokens "
            "per caption, greedy / beam 4: "
            + ", ".join(f"{k} {work['greedy'][k]:.1f}/{work['beam4'][k]:.1f}" for k in names)
            + f"; </s> generated by HF: {work['greedy']['hf_eos'] + work['beam4']['hf_eos']}"
        )
    else:
        print(f"skipped: {hf_missing}")
    if swept:
        print(f"\nCTranslate2 settings ({n_hf} captions, sentences/s; tokens out: per caption)")
        print(
            _table(
                ("setting", "greedy", "beam 4", "tokens out greedy/beam 4"),
                [
                    (
                        g["setting"],
                        f"{g['sentences_per_s']:.1f}",
                        f"{b['sentences_per_s']:.1f}",
                        f"{g['tokens_per_caption']:.1f}/{b['tokens_per_caption']:.1f}",
                    )
                    for g, b in zip(
                        [r for r in swept if r["beam"] == 1],
                        [r for r in swept if r["beam"] == 4],
                        strict=True,
                    )
                ],
            )
        )
    print("\n3. Identical captions collapsed before the model")
    rows = [
        (str(path), f"{total:,}", f"{unique:,}", f"{share:.2%}", f"{1 - share:.2%}")
        for path, total, unique, share in collapse.values()
    ]
    print(_table(("captions", "all", "unique", "unique share", "saved"), rows))
    if others is not None:
        print(f"\n{runs.summary(others)}")
    print(json.dumps(figures, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
