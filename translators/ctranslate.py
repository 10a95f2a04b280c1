"""English → Arabic with CTranslate2: the `RunInference` model handler and its tokenization.

A model folder holds a CTranslate2 model (`model.bin`, `config.json`, vocabularies) and its
SentencePiece models in one of two layouts:

- OPUS-MT: `source.spm` (English) and `target.spm` (Arabic), as `ct2-transformers-converter`
  leaves Helsinki-NLP/opus-mt-tc-big-en-ar (`make model`) or opus-mt-en-ar with their
  SentencePiece files copied beside the model;
- NLLB: one `sentencepiece.bpe.model`; the source starts with a language token (`eng_Latn`) and
  decoding is forced to start with the target one (`arb_Arab`, given as `target_prefix`).

What the handler does to each Beam batch, and why:

- Tokens, not text: SentencePiece pieces, then `</s>` (unless the model's `config.json` says
  CTranslate2 adds it itself, as Marian-converted models do), after `source_prefix` when there
  is one: NLLB's `eng_Latn` by default; multi-target OPUS-MT models such as
  opus-mt-tc-big-en-ar and opus-mt-en-ar expect a target-language token such as `>>ara<<`
  there, and a model whose vocabulary holds such tokens is refused without one.
- Truncation is ours and reported: a caption longer than `max_input_length` tokens (specials
  included) is cut and its `Translation.truncated` is True; CTranslate2's own silent truncation
  is switched off (`max_input_length=0`).
- One `translate_batch` call per Beam batch: CTranslate2 sorts by length, splits into
  `max_batch_size` sub-batches, runs them on its `inter_threads` workers in parallel, and
  releases the GIL while it works. On CPU the defaults are one single-threaded worker per core
  and sub-batches of 32 captions (`resolve_settings`): on 2 cores, greedy decoding runs about
  twice as fast as one worker with 2 OpenMP threads, which spends most of a small batch's
  steps synchronising its threads (`benchmarks/translate.py --sweep`).
- Decoding stops at `int(max_decoding_ratio * source tokens) + 2` target tokens (plus the
  forced prefix) of the longest caption of the batch: CTranslate2 takes one limit per call.
  A translation that ends by itself does not depend on the other captions of its batch (the
  same text, the score up to float rounding; beam search can still rank differently when the
  limit cuts hypotheses that are still open). One that does not end (a loop) runs to its
  batch's limit, so its length depends on the batch; `repetition_loop` or `length_ratio`
  usually drop it. Per-caption limits would cost a second decoding of every looping caption in
  small groups: five times the work on a model that never stops (measured with the random
  model of the opus-mt-en-ar shape).
- Unknown-token output is disabled (`disable_unk`): SentencePiece would render it as ` ⁇ `.
- `Translation.score` is the mean log-probability per generated target token, `</s>` included
  when it was generated. With the default `length_penalty=1`, CTranslate2's `return_scores`
  score is the sum of the generated tokens' log-probabilities divided by the hypothesis length;
  that length counts the forced target prefix, whose log-probability the sum leaves out, so
  for NLLB the score is rescaled by `length / (length - prefix length)`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.ml.inference.base import ModelHandler

from pipeline.config import TranslationConfig
from pipeline.machine import available_cores

OPUS = "opus"
NLLB = "nllb"
OPUS_FILES = ("source.spm", "target.spm")
NLLB_FILE = "sentencepiece.bpe.model"
# NLLB's language tokens, used when the manifest names none.
NLLB_SOURCE = "eng_Latn"
NLLB_TARGET = "arb_Arab"
EOS = "</s>"


class Translation(NamedTuple):
    """The Arabic of one English caption and how it was obtained."""

    ar: str
    # Mean log-probability per target token (<= 0); None for a memory entry without a score.
    score: float | None = None
    # The caption was cut to `max_input_length` tokens before translation.
    truncated: bool = False


beam.coders.registry.register_coder(Translation, beam.coders.RowCoder)


class ModelFolderError(ValueError):
    """A folder that is not a CTranslate2 translation model in a supported layout."""


# Where model folders on a Beam filesystem (gs://, s3://) are copied, once per machine.
MODEL_CACHE_ENV = "ARABIC_PAIRS_MODEL_CACHE"
_COPY_LOCK = threading.Lock()


def local_model(folder: str) -> str:
    """A local path of the model folder `folder`: itself when local; for a folder on a Beam
    filesystem (`gs://bucket/models/opus-mt-en-ar-ct2`), a copy in `$ARABIC_PAIRS_MODEL_CACHE`
    (default: the temp folder's `arabic-pairs-models/`), made once per machine: the files are
    copied into a temporary folder that is renamed into place when complete, so processes of
    one worker that load at once never see half a model, and later loads reuse the copy. The
    folder is flat (CTranslate2's files and the SentencePiece models), so its files are copied
    and nothing below them."""
    if "://" not in folder:
        return folder
    from apache_beam.io.filesystems import FileSystems

    root = os.environ.get(MODEL_CACHE_ENV) or os.path.join(
        tempfile.gettempdir(), "arabic-pairs-models"
    )
    name = folder.rstrip("/").rsplit("/", 1)[-1] or "model"
    digest = hashlib.sha256(folder.rstrip("/").encode("utf-8")).hexdigest()[:16]
    target = os.path.join(root, f"{name}-{digest}")
    with _COPY_LOCK:
        if os.path.isdir(target):
            return target
        os.makedirs(root, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=f".{name}-", dir=root)
        try:
            prefix = folder.rstrip("/") + "/"
            matched = FileSystems.match([prefix + "*"])[0].metadata_list
            if not matched:
                raise ModelFolderError(f"{folder}: no file under this model folder")
            for meta in matched:
                relative = meta.path[len(prefix) :]
                if not relative or "/" in relative:
                    continue
                with (
                    FileSystems.open(meta.path) as src,
                    open(os.path.join(staging, relative), "wb") as dst,
                ):
                    shutil.copyfileobj(src, dst, 1 << 20)
            try:
                os.rename(staging, target)
            except OSError:  # another process of this machine renamed its copy first
                if not os.path.isdir(target):
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def detect_layout(folder: str) -> str:
    """`opus` or `nllb`, from the SentencePiece files beside `model.bin` in `folder`."""
    if not os.path.isfile(os.path.join(folder, "model.bin")):
        raise ModelFolderError(
            f"{folder}: not a CTranslate2 model folder (no model.bin); convert the model with "
            "ct2-transformers-converter"
        )
    if all(os.path.isfile(os.path.join(folder, name)) for name in OPUS_FILES):
        return OPUS
    if os.path.isfile(os.path.join(folder, NLLB_FILE)):
        return NLLB
    raise ModelFolderError(
        f"{folder}: no SentencePiece model found: expected source.spm and target.spm "
        f"(OPUS-MT layout) or {NLLB_FILE} (NLLB layout) beside model.bin"
    )


def model_name(folder: str) -> str:
    """A readable name for the dataset card: the model README's title (or the folder's name)
    and the layout, e.g. `opus-mt-en-ar (CTranslate2, OPUS-MT layout)`."""
    name = os.path.basename(os.path.normpath(folder.rstrip("/")))
    folder = local_model(folder)
    layout = detect_layout(folder)
    readme = os.path.join(folder, "README.md")
    if os.path.isfile(readme):
        with open(readme, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("#"):
                    name = line.strip("#").strip() or name
                    break
    return f"{name} (CTranslate2, {'OPUS-MT' if layout == OPUS else 'NLLB'} layout)"


def resolve_device(device: str) -> str:
    """`cpu` or `cuda`: `auto` is `cuda` when CTranslate2 sees a GPU."""
    if device != "auto":
        return device
    import ctranslate2

    return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"


def resolve_compute_type(compute_type: str | None, device: str) -> str:
    """The manifest's `compute_type`, or int8 on CPU and int8_float16 on CUDA."""
    if compute_type:
        return compute_type
    return "int8_float16" if device == "cuda" else "int8"


class Settings(NamedTuple):
    """The CTranslate2 settings a run uses: the manifest's, its unset ones filled in for the
    device (see `TranslationConfig`)."""

    device: str
    compute_type: str
    inter_threads: int
    intra_threads: int
    max_batch_size: int
    batch_type: str


def resolve_settings(config: TranslationConfig) -> Settings:
    """The manifest's settings with `None` filled in for the device: on CPU one single-threaded
    worker per core and sub-batches of 32 captions; on CUDA one worker and sub-batches of 4096
    tokens. A given `max_batch_size` without `batch_type` counts tokens, as CTranslate2 does."""
    device = resolve_device(config.device)
    cpu = device == "cpu"
    if config.max_batch_size is None and config.batch_type is None:
        size, kind = (32, "examples") if cpu else (4096, "tokens")
    elif config.max_batch_size is None:
        kind = config.batch_type
        size = (32 if cpu else 256) if kind == "examples" else (1024 if cpu else 4096)
    else:
        size, kind = config.max_batch_size, config.batch_type or "tokens"
    if config.inter_threads is None and config.intra_threads is None:
        inter, intra = (available_cores(), 1) if cpu else (1, 0)
    else:
        inter = 1 if config.inter_threads is None else config.inter_threads
        intra = 0 if config.intra_threads is None else config.intra_threads
    return Settings(
        device, resolve_compute_type(config.compute_type, device), inter, intra, size, kind
    )


def _vocabulary(folder: str, side: str) -> set[str] | None:
    """The `source` or `target` vocabulary CTranslate2 saved beside the model (json since 3.0,
    txt before; `shared_vocabulary` when both sides share one), if it is there."""
    for name in ("shared_vocabulary", f"{side}_vocabulary"):
        path = os.path.join(folder, name + ".json")
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                return set(json.load(f))
        path = os.path.join(folder, name + ".txt")
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                return {line.rstrip("\n") for line in f}
    return None


def _target_labels(vocabulary: Iterable[str]) -> list[str]:
    """The OPUS-MT target-language labels (`>>ara<<`, `>>arz<<`, …) of a vocabulary."""
    return sorted(t for t in vocabulary if t.startswith(">>") and t.endswith("<<") and len(t) > 4)


def language_tokens(folder: str, config: TranslationConfig) -> tuple[list[str], list[str]]:
    """The source and target prefix tokens for the local model folder `folder`: the manifest's,
    or NLLB's `eng_Latn` / `arb_Arab` for an NLLB folder. A token missing from the model's
    vocabulary is refused, and so is no `source_prefix` for an OPUS-MT model with several target
    languages (its vocabulary holds labels such as `>>ara<<`): trained always to see one, it
    translates into whichever variety it guesses without it."""
    if detect_layout(folder) == OPUS:
        source_prefix = [config.source_prefix] if config.source_prefix else []
        target_prefix = [config.target_prefix] if config.target_prefix else []
    else:
        source_prefix = [config.source_prefix or NLLB_SOURCE]
        target_prefix = [config.target_prefix or NLLB_TARGET]
    for side, tokens in (("source", source_prefix), ("target", target_prefix)):
        vocabulary = _vocabulary(folder, side)
        if vocabulary is None:
            continue
        for token in tokens:
            if token not in vocabulary:
                raise ModelFolderError(
                    f"{folder}: the language token {token!r} is not in the model's "
                    f"{side} vocabulary"
                )
        labels = _target_labels(vocabulary) if side == "source" and not tokens else []
        if labels:
            shown = ", ".join(labels[:8]) + (", …" if len(labels) > 8 else "")
            suggestion = ">>ara<<" if ">>ara<<" in labels else labels[0]
            raise ModelFolderError(
                f"{folder}: a multi-target OPUS-MT model (target-language tokens {shown}) "
                f'needs translation.source_prefix, such as "{suggestion}"'
            )
    return source_prefix, target_prefix


@dataclass
class LoadedModel:
    """A CTranslate2 translator with the tokenizers and token conventions of its folder."""

    translator: Any
    source_spm: Any
    target_spm: Any
    layout: str
    source_prefix: list[str]
    target_prefix: list[str]
    append_eos: bool
    settings: Settings


def load(config: TranslationConfig) -> LoadedModel:
    """Load the model folder `config.model` on the configured device."""
    import ctranslate2
    import sentencepiece as spm

    if not config.model:
        raise ModelFolderError("translation.model: no model folder given")
    folder = local_model(config.model)
    layout = detect_layout(folder)
    source_prefix, target_prefix = language_tokens(folder, config)
    if layout == OPUS:
        source_spm = spm.SentencePieceProcessor(model_file=os.path.join(folder, OPUS_FILES[0]))
        target_spm = spm.SentencePieceProcessor(model_file=os.path.join(folder, OPUS_FILES[1]))
    else:
        source_spm = target_spm = spm.SentencePieceProcessor(
            model_file=os.path.join(folder, NLLB_FILE)
        )
    with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
        append_eos = not json.load(f).get("add_source_eos", False)
    settings = resolve_settings(config)
    translator = ctranslate2.Translator(
        folder,
        device=settings.device,
        compute_type=settings.compute_type,
        inter_threads=settings.inter_threads,
        intra_threads=settings.intra_threads,
    )
    return LoadedModel(
        translator,
        source_spm,
        target_spm,
        layout,
        source_prefix,
        target_prefix,
        append_eos,
        settings,
    )


def tokenize(model: LoadedModel, text: str, max_input_length: int) -> tuple[list[str], bool]:
    """The source tokens of `text`, specials included, at most `max_input_length` of them;
    and whether the caption's pieces had to be cut to fit."""
    pieces = model.source_spm.encode(text, out_type=str)
    suffix = [EOS] if model.append_eos else []
    room = max(1, max_input_length - len(model.source_prefix) - 1)
    truncated = len(pieces) > room
    return [*model.source_prefix, *pieces[:room], *suffix], truncated


def decoding_limit(source_tokens: int, ratio: float, prefix: int) -> int:
    """The most target tokens (forced prefix and `</s>` included) decoded for a caption."""
    return int(ratio * source_tokens) + 2 + prefix


def _translation(model: LoadedModel, result, truncated: bool) -> Translation:
    hypothesis = list(result.hypotheses[0])
    score = float(result.scores[0])
    steps = len(hypothesis)
    prefix = len(model.target_prefix)
    if prefix and steps > prefix:
        score = score * steps / (steps - prefix)
    pieces = hypothesis[prefix:] if hypothesis[:prefix] == model.target_prefix else hypothesis
    if pieces and pieces[-1] == EOS:
        pieces = pieces[:-1]
    return Translation(model.target_spm.decode(pieces).strip(), score, truncated)


def translate(
    model: LoadedModel, captions: Sequence[str], config: TranslationConfig
) -> list[Translation]:
    """Translate `captions` (normalised English) with one `translate_batch` call."""
    if not captions:
        return []
    encoded = [tokenize(model, text, config.max_input_length) for text in captions]
    sources = [tokens for tokens, _ in encoded]
    prefix = len(model.target_prefix)
    results = model.translator.translate_batch(
        sources,
        target_prefix=[model.target_prefix] * len(sources) if prefix else None,
        max_batch_size=model.settings.max_batch_size,
        batch_type=model.settings.batch_type,
        beam_size=config.beam_size,
        max_decoding_length=max(
            decoding_limit(len(tokens), config.max_decoding_ratio, prefix) for tokens in sources
        ),
        max_input_length=0,
        return_scores=True,
        return_end_token=True,
        disable_unk=True,
    )
    return [
        _translation(model, result, truncated)
        for result, (_, truncated) in zip(results, encoded, strict=True)
    ]


class CTranslate2Handler(ModelHandler[str, Translation, LoadedModel]):
    """A `ModelHandler` from a normalised English caption to its `Translation`.

    The model loads once per worker; each Beam batch of up to `max_batch_captions` captions is
    one `translate_batch` call (see the module docstring for tokenization, limits and scores).
    """

    def __init__(self, config: TranslationConfig, *, max_batch_captions: int = 256):
        super().__init__()
        self._config = config
        self._max_batch_captions = max_batch_captions

    def load_model(self) -> LoadedModel:
        return load(self._config)

    def run_inference(
        self,
        batch: Sequence[str],
        model: LoadedModel,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[Translation]:
        return translate(model, batch, self._config)

    def batch_elements_kwargs(self) -> dict[str, int]:
        # Full batches: CTranslate2 sorts and splits them itself, and bigger ones pad less.
        return {
            "min_batch_size": self._max_batch_captions,
            "max_batch_size": self._max_batch_captions,
        }

    def get_metrics_namespace(self) -> str:
        return "translate"
