"""The CTranslate2 handler on real tiny models (random weights: structure, not meaning)."""

from __future__ import annotations

import os
import shutil

import ctranslate2
import pytest
import sentencepiece as spm

from pipeline.config import TranslationConfig
from standins.tiny_model import ENGLISH
from translators.ctranslate import (
    CTranslate2Handler,
    ModelFolderError,
    Translation,
    decoding_limit,
    detect_layout,
    model_name,
    resolve_compute_type,
    resolve_device,
    tokenize,
)

CAPTIONS = [
    "A man riding a bicycle down a city street.",
    "Two dogs playing with a ball on the grass.",
    "A cat.",
    "An old mosque with a tall minaret at sunset, seen from a crowded market square.",
    "hello",
    "A bowl of fresh fruit on a wooden table.",
]


def handler_and_model(folder: str, **options) -> tuple[CTranslate2Handler, object]:
    # One thread: on a small machine, threads only add synchronisation to a model this small.
    options.setdefault("intra_threads", 1)
    handler = CTranslate2Handler(TranslationConfig(model=folder, **options))
    return handler, handler.load_model()


def test_translations_are_deterministic_across_loads(opus_model):
    results = []
    for _ in range(2):
        handler, model = handler_and_model(opus_model)
        results.append(list(handler.run_inference(CAPTIONS, model)))
    assert results[0] == results[1]
    assert all(isinstance(t, Translation) for t in results[0])


def test_output_is_target_pieces_with_per_token_scores(opus_model):
    handler, model = handler_and_model(opus_model)
    translations = list(handler.run_inference(CAPTIONS, model))
    target = spm.SentencePieceProcessor(model_file=os.path.join(opus_model, "target.spm"))
    target_chars = {
        ch
        for i in range(target.get_piece_size())
        if not target.is_control(i) and not target.is_unknown(i)
        for ch in target.id_to_piece(i).replace("▁", "")
    }
    for t in translations:
        assert t.ar and t.ar == t.ar.strip()
        assert set(t.ar.replace(" ", "")) <= target_chars  # Arabic pieces only, no ` ⁇ `
        assert isinstance(t.score, float) and t.score <= 0.0
        assert t.truncated is False


class RecordingTranslator:
    """A `ctranslate2.Translator` stand-in that records each call's sources, limit and results."""

    def __init__(self, translator):
        self._translator = translator
        self.calls = []

    def translate_batch(self, source, **options):
        results = self._translator.translate_batch(source, **options)
        self.calls.append((source, options["max_decoding_length"], results))
        return results


def test_one_call_per_batch_limited_by_its_longest_caption(opus_model):
    handler, model = handler_and_model(opus_model, max_decoding_ratio=0.5)
    model.translator = RecordingTranslator(model.translator)
    long_caption = "A very long caption about a dog, a cat, a bird and a horse in a field. " * 3
    captions = ["A cat.", "A bird sitting on a branch.", long_caption]
    list(handler.run_inference(captions, model))
    [(sources, limit, results)] = model.translator.calls
    assert len(sources) == len(captions)
    assert limit == decoding_limit(max(len(s) for s in sources), 0.5, 0)
    assert all(len(r.hypotheses[0]) <= limit for r in results)


@pytest.mark.parametrize("beam_size", [1, 4])
def test_translations_that_end_do_not_depend_on_their_batch(opus_model, beam_size):
    handler, model = handler_and_model(opus_model, beam_size=beam_size)
    captions = list(ENGLISH[:20]) + CAPTIONS
    batch = list(handler.run_inference(captions, model))
    model.translator = RecordingTranslator(model.translator)
    singles = [next(iter(handler.run_inference([c], model))) for c in captions]
    # Whether each caption's translation ended by itself (with `</s>`) rather than at the limit.
    ended = [results[0].hypotheses[0][-1] == "</s>" for _, _, results in model.translator.calls]
    assert sum(ended) >= len(captions) // 2
    for b, s, e in zip(batch, singles, ended, strict=True):
        if e:  # the same text; the score up to float rounding (padding changes the sums' order)
            assert (b.ar, b.truncated) == (s.ar, s.truncated)
            assert b.score == pytest.approx(s.score, abs=1e-5)


def test_scores_are_mean_log_probabilities_per_generated_token(opus_model, nllb_model):
    for folder in (opus_model, nllb_model):
        handler, model = handler_and_model(folder, beam_size=1, compute_type="float32")
        translator = model.translator
        model.translator = RecordingTranslator(translator)
        translations = list(handler.run_inference(CAPTIONS[:4], model))
        final = {}
        for sources, _, results in model.translator.calls:
            for source, result in zip(sources, results, strict=True):
                final[id(source)] = (source, result.hypotheses[0])
        prefix = len(model.target_prefix)
        for t, (source, hypothesis) in zip(translations, final.values(), strict=True):
            ended = hypothesis[-1] == "</s>"
            [scored] = translator.score_batch([source], [hypothesis[:-1] if ended else hypothesis])
            # The forced prefix is not generated; `</s>` is, when decoding reached it.
            generated = scored.log_probs[prefix:] if ended else scored.log_probs[prefix:-1]
            # Not exact: decoding never emits <unk> (disable_unk), which renormalises slightly.
            assert t.score == pytest.approx(sum(generated) / len(generated), abs=0.05)


def test_long_captions_are_truncated_and_reported(opus_model):
    handler, model = handler_and_model(opus_model, max_input_length=8)
    long_caption = "Two dogs playing with a ball on the grass near a big old house."
    short, long = handler.run_inference(["A cat.", long_caption], model)
    assert (short.truncated, long.truncated) == (False, True)
    tokens, truncated = tokenize(model, long_caption, 8)
    assert truncated and len(tokens) == 8 and tokens[-1] == "</s>"
    assert tokenize(model, long_caption, 256) == (
        [*model.source_spm.encode(long_caption, out_type=str), "</s>"],
        False,
    )


def test_nllb_layout_uses_language_tokens(nllb_model):
    handler, model = handler_and_model(nllb_model)
    assert model.layout == "nllb"
    assert (model.source_prefix, model.target_prefix) == (["eng_Latn"], ["arb_Arab"])
    tokens, _ = tokenize(model, "A cat.", 256)
    assert tokens[0] == "eng_Latn" and tokens[-1] == "</s>"
    translations = list(handler.run_inference(CAPTIONS, model))
    assert all(t.ar and not t.ar.startswith("arb_Arab") for t in translations)
    assert all(isinstance(t.score, float) and t.score <= 0.0 for t in translations)
    assert translations == list(handler_and_model(nllb_model)[0].run_inference(CAPTIONS, model))


def test_a_language_token_missing_from_the_vocabulary_is_an_error(nllb_model, opus_model):
    with pytest.raises(ModelFolderError, match="'fra_Latn' is not in the model's target vocab"):
        handler_and_model(nllb_model, target_prefix="fra_Latn")
    # OPUS-MT multi-target models (opus-mt-en-ar is one) want a `>>ara<<` source token.
    with pytest.raises(ModelFolderError, match="'>>ara<<' is not in the model's source vocab"):
        handler_and_model(opus_model, source_prefix=">>ara<<")


def test_devices_and_compute_types():
    expected = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    assert resolve_device("auto") == expected
    assert resolve_device("cpu") == "cpu"
    assert resolve_compute_type(None, "cpu") == "int8"
    assert resolve_compute_type(None, "cuda") == "int8_float16"
    assert resolve_compute_type("float32", "cpu") == "float32"


def test_layouts_and_names(opus_model, nllb_model, tmp_path):
    assert detect_layout(opus_model) == "opus"
    assert detect_layout(nllb_model) == "nllb"
    assert model_name(opus_model) == "tiny-random-en-ar-opus (CTranslate2, OPUS-MT layout)"
    bare = tmp_path / "opus-mt-en-ar"
    shutil.copytree(opus_model, bare)
    (bare / "README.md").unlink()
    assert model_name(str(bare)) == "opus-mt-en-ar (CTranslate2, OPUS-MT layout)"


def test_a_folder_without_a_layout_is_a_clear_error(opus_model, tmp_path):
    folder = tmp_path / "half-model"
    folder.mkdir()
    shutil.copy(os.path.join(opus_model, "model.bin"), folder)
    shutil.copy(os.path.join(opus_model, "source.spm"), folder)
    with pytest.raises(ModelFolderError, match=f"{folder}: no SentencePiece model found"):
        handler_and_model(str(folder))
    with pytest.raises(ModelFolderError, match=f"{tmp_path}: not a CTranslate2 model folder"):
        detect_layout(str(tmp_path))


def test_batches_are_full_and_metrics_named(opus_model):
    handler = CTranslate2Handler(TranslationConfig(model=opus_model), max_batch_captions=64)
    assert handler.batch_elements_kwargs() == {"min_batch_size": 64, "max_batch_size": 64}
    assert handler.get_metrics_namespace() == "translate"
    assert list(handler.run_inference([], handler.load_model())) == []
