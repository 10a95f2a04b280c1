"""Benchmark of the translation models the README compares: sentences/s of the translate stage
on random-weight int8 models of the shapes of Helsinki-NLP/opus-mt-tc-big-en-ar (`make model`,
the default), Helsinki-NLP/opus-mt-en-ar (`make model-base`) and facebook/nllb-200-distilled-600M
(`make model-nllb`), on this machine's cores, beam 4 (the manifest's default) and greedy.

The models are built offline by `standins.tiny_model.build_random_model` with the shapes of
`standins.tiny_model.SHAPES` (layers, d_model, heads, FFN, vocabulary, tied embeddings) and the
language-token conventions of the real ones: the two OPUS-MT models are multi-target and get
`source_prefix: ">>ara<<"`, NLLB gets `eng_Latn` first and decodes from `arb_Arab`. They go to
`out/bench-models/` on the first run (NLLB's takes about a minute and 850 MB) and are reused
after. All three tokenize with BPE models trained on the same captions of
`benchmarks/translate.py`'s generator (1.26 tokens per word, as the real opus-mt-en-ar
tokenizer gives; NLLB's holds its two language tokens besides), so a caption has the same
pieces for each, and all three have their `</s>` logit pushed down as in
`benchmarks/translate.py`: no translation ends by itself, every one runs to the decoding limit
of its Beam batch (`int(1.5 * source tokens) + 2` for the longest caption), so the models do
the same number of decoding steps on the same captions and the figures compare the cost of a
step. A trained model stops earlier on most captions, so the absolute figures are lower than a
real run's; the report gives the tokens in and out per caption.

Each model runs as the pipeline runs it: `CTranslate2Handler.run_inference` on Beam batches of
up to 256 captions with the manifest's defaults for this machine (on CPU one single-threaded
translator per core, sub-batches of 32 captions). The model loads once, outside the timing, and
a first batch of 8 captions is translated untimed. Timings are medians of interleaved rounds;
each timed run first waits (a little) for a quiet machine and is repeated once when other
processes took more than 10 % of the CPU (`benchmarks/translate.py`'s machinery); the report
says how disturbed the kept runs were. The last line on stdout is one JSON object holding every
figure.

    python benchmarks/models.py            # 256 captions (one Beam batch), 3 rounds: 10+ minutes
    python benchmarks/models.py --quick    # 64 captions, 1 round: under 5 minutes
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.translate import (  # noqa: E402
    BEAM_BATCH,
    PATIENCE_FULL,
    PATIENCE_QUICK,
    SEED,
    SPM_CORPUS,
    SPM_VOCAB,
    WAIT_FULL,
    WAIT_QUICK,
    CpuMonitor,
    Runs,
    _r,
    _table,
    caption,
    chunks,
    distinct_captions,
    interleaved,
    log,
)
from pipeline.config import TranslationConfig  # noqa: E402
from pipeline.folders import building  # noqa: E402
from standins.tiny_model import SHAPES  # noqa: E402

FULL_CAPTIONS, QUICK_CAPTIONS = 256, 64
FULL_ROUNDS, QUICK_ROUNDS = 3, 1
WARM_UP = 8
DEFAULT = "opus-mt-tc-big-en-ar"  # what `make model` converts; the ratios are against it
MODELS = ("opus-mt-tc-big-en-ar", "opus-mt-en-ar", "nllb-200-distilled-600M")
BEAMS = ((4, "beam4"), (1, "greedy"))
MODELS_DIR = REPO / "out" / "bench-models"
VERSION = "v1"  # bump when the build changes, so that an old folder is not reused


def model_dir(name: str) -> Path:
    return MODELS_DIR / f"{name}-shape-int8-{VERSION}"


def parameters(shape: dict) -> int:
    """The weights of the real model of `shape` (tied embeddings, biases and norms left out):
    each encoder layer has 4 d² of attention and 2 d·FFN of feed-forward, each decoder layer
    a second attention."""
    d, ffn, layers = shape["d_model"], shape["ffn"], shape["layers"]
    return (
        shape["vocab"] * d + layers * (4 * d * d + 2 * d * ffn) + layers * (8 * d * d + 2 * d * ffn)
    )


def ensure_model(name: str) -> tuple[Path, float | None]:
    """The benchmark model folder of `name`, built on first use beside its place and renamed
    (an interrupted build is never taken for a model); and the build's seconds (None: reused)."""
    from standins.tiny_model import build_random_model

    folder = model_dir(name)
    if (folder / "model.bin").is_file() and (folder / "README.md").is_file():
        return folder, None
    start = time.perf_counter()
    rng = random.Random(SEED + 1)
    corpus = [caption(rng) for _ in range(SPM_CORPUS)]
    # NLLB's one SentencePiece model is trained on the captions alone, as the OPUS-MT source
    # model is: both cut a caption into the same pieces, so the models get the same work.
    nllb = SHAPES[name].get("layout") == "nllb"
    with building(folder, f".{name}-") as tmp:
        build_random_model(
            tmp,
            **SHAPES[name],
            **({"arabic": ()} if nllb else {}),
            quantization="int8",
            english=corpus,
            spm_vocab_size=SPM_VOCAB,
            spm_model_type="bpe",
            eos_bias=-50.0,  # no translation ends by itself: every one runs to its limit
            name=f"random-{name}-shape",
        )
    return folder, time.perf_counter() - start


def config(name: str, beam_size: int) -> TranslationConfig:
    """The manifest's translation section for `name`: its defaults and the model's tokens."""
    opus = SHAPES[name].get("layout", "opus") == "opus"
    return TranslationConfig(
        model=str(model_dir(name)),
        device="cpu",
        beam_size=beam_size,
        source_prefix=">>ara<<" if opus else None,
    )


class CountingTranslator:
    """A `ctranslate2.Translator` that counts the target tokens it generates (the forced
    prefix left out), so the report can say how much work each model did."""

    def __init__(self, translator, prefix: int):
        self._translator = translator
        self._prefix = prefix
        self.tokens = 0

    def translate_batch(self, *args, **kwargs):
        results = self._translator.translate_batch(*args, **kwargs)
        self.tokens += sum(len(r.hypotheses[0]) - self._prefix for r in results)
        return results


def loaded(name: str) -> tuple[dict, object]:
    """A handler per beam size for `name` and the model they share, loaded once, its
    translator wrapped to count tokens."""
    from translators.ctranslate import CTranslate2Handler

    handlers = {
        label: CTranslate2Handler(config(name, beam_size), max_batch_captions=BEAM_BATCH)
        for beam_size, label in BEAMS
    }
    model = handlers[BEAMS[0][1]].load_model()
    model.translator = CountingTranslator(model.translator, len(model.target_prefix))
    return handlers, model


def translate_all(handler, model, captions: list[str]) -> dict:
    """`run_inference` over the captions in Beam batches, as `TranslateCaptions` calls it."""
    before = model.translator.tokens
    out = []
    for batch in chunks(captions, BEAM_BATCH):
        out += [t.ar for t in handler.run_inference(batch, model)]
    return {"ar": out, "tokens": model.translator.tokens - before}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_CAPTIONS} captions, 1 round")
    parser.add_argument("--captions", type=int, help="captions translated (overrides the size)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds per measure")
    parser.add_argument(
        "--models", nargs="+", choices=MODELS, default=list(MODELS), help="models to measure"
    )
    args = parser.parse_args(argv)
    n = args.captions or (QUICK_CAPTIONS if args.quick else FULL_CAPTIONS)
    rounds = args.rounds or (QUICK_ROUNDS if args.quick else FULL_ROUNDS)
    runs = Runs(
        wait_budget=WAIT_QUICK if args.quick else WAIT_FULL,
        patience=PATIENCE_QUICK if args.quick else PATIENCE_FULL,
    )
    names = [m for m in MODELS if m in args.models]

    built = {}
    for name in names:
        folder, seconds = ensure_model(name)
        built[name] = seconds
        log(f"model {folder}: " + (f"built in {seconds:.1f}s" if seconds else "reused"))
    captions = distinct_captions(n)
    monitor = CpuMonitor()

    from translators.ctranslate import tokenize

    handlers = {}
    source_tokens = {}
    for name in names:
        by_beam, model = loaded(name)
        for label, handler in by_beam.items():
            translate_all(handler, model, captions[:WARM_UP])  # first use, untimed
            handlers[(name, label)] = (handler, model)
        lengths = [len(tokenize(model, c, 256)[0]) for c in captions]
        source_tokens[name] = (statistics.mean(lengths), max(lengths))
    figures: dict = {"benchmark": "models", "quick": args.quick, "captions": n, "rounds": rounds}
    results: dict[str, dict] = {name: {} for name in names}
    for _, label in BEAMS:
        seconds, last = interleaved(
            {name: lambda h=handlers[(name, label)]: translate_all(*h, captions) for name in names},
            rounds,
            f"models, {label}:",
            runs,
        )
        for name in names:
            results[name][f"{label}_sent_per_s"] = n / seconds[name]
            results[name][f"{label}_target_tokens_per_caption"] = last[name]["tokens"] / n
    others = monitor.others_share()

    # ------------------------------------------------------------------ figures
    models = {}
    for name in names:
        r = results[name]
        models[name] = {
            "shape": {k: v for k, v in SHAPES[name].items() if k != "labels"},
            "parameters_millions": round(parameters(SHAPES[name]) / 1e6),
            "source_prefix": config(name, 4).source_prefix,
            "source_tokens_per_caption": _r(source_tokens[name][0], 2),
            "source_tokens_max": source_tokens[name][1],
            "built_seconds": _r(built[name], 1),
        }
        for _, label in BEAMS:
            models[name][f"{label}_sent_per_s"] = _r(r[f"{label}_sent_per_s"], 2)
            models[name][f"{label}_target_tokens_per_caption"] = _r(
                r[f"{label}_target_tokens_per_caption"], 2
            )
            if DEFAULT in results:
                ratio = r[f"{label}_sent_per_s"] / results[DEFAULT][f"{label}_sent_per_s"]
                models[name][f"{label}_vs_default"] = _r(ratio)
    figures["models"] = models
    for name in names:
        for _, label in BEAMS:
            figures[f"{name}_{label}_sent_per_s"] = models[name][f"{label}_sent_per_s"]
    figures["cores"] = os.cpu_count()
    figures["other_processes_cpu_share"] = _r(others, 3)
    figures["timed_runs"] = runs.runs
    figures["timed_runs_repeated"] = runs.retries
    figures["worst_kept_run_other_processes_share"] = _r(runs.worst_kept, 3)
    figures["seconds_waiting_for_quiet"] = round(runs.waited)

    # ------------------------------------------------------------------ table
    print(
        f"Models benchmark: {n:,} distinct captions, random int8 models of the real shapes, "
        f"the pipeline's CPU defaults on {os.cpu_count()} cores, medians of {rounds} "
        "interleaved round(s); sentences/s (ratio to the default model)"
    )
    rows = []
    for name in names:
        m = models[name]
        shape = SHAPES[name]
        cells = [
            name + (" (default)" if name == DEFAULT else ""),
            f"{shape['layers']}+{shape['layers']} x {shape['d_model']}, vocab {shape['vocab']:,}",
            f"{m['parameters_millions']}M",
        ]
        for _, label in BEAMS:
            ratio = m.get(f"{label}_vs_default")
            cells.append(
                f"{m[f'{label}_sent_per_s']:.2f}"
                + (f" ({ratio:.2f}x)" if ratio is not None else "")
            )
        cells.append(
            f"{m['source_tokens_per_caption']:.1f} / {m['beam4_target_tokens_per_caption']:.1f}"
        )
        rows.append(cells)
    print(
        _table(
            ("model", "shape", "parameters", "beam 4", "greedy", "tokens in / out per caption"),
            rows,
        )
    )
    if others is not None:
        print(f"\n{runs.summary(others)}")
    print(json.dumps(figures, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
