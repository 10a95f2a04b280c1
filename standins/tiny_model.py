"""Real CTranslate2 models with random weights, built offline, for tests, the demo and benchmarks.

`build_tiny_model` trains SentencePiece on a small corpus on the spot and saves a 2+2-layer
Transformer (d_model 64) whose weights come from a seeded numpy generator, in the OPUS-MT layout
(`source.spm` + `target.spm` beside `model.bin`) or the NLLB layout (one
`sentencepiece.bpe.model` whose vocabulary holds the language tokens `eng_Latn` and `arb_Arab`).
The model runs through the real `ctranslate2.Translator`; its Arabic is garbage, but the same
seed and corpus give the same folder and the same translations.

`build_random_model` saves a model of a real model's shape for the benchmarks: by default
Helsinki-NLP/opus-mt-en-ar's (6+6 layers, d_model 512, 8 heads, FFN 2048, a 62k vocabulary,
int8); `SHAPES` holds the three models the README compares, with their language-token
conventions (OPUS-MT's `>>ara<<` labels, NLLB's layout). A SentencePiece model with a 62k
vocabulary cannot be trained on a small corpus, so its SentencePiece files are small trained
models and the CTranslate2 vocabulary is their pieces (and the language labels) followed by
synthetic pieces (`▁x00000`, …) up to the size: tokenization uses the real pieces; the decoder
may emit synthetic ones, which decode to SentencePiece's unknown mark.

    python -m standins.tiny_model OUT_DIR [--layout opus|nllb] [--seed N]
"""

from __future__ import annotations

import argparse
import io
import os
from collections.abc import Iterable, Sequence

import numpy as np

from pipeline.folders import building

SOURCE_LANG = "eng_Latn"
TARGET_LANG = "arb_Arab"
LAYOUTS = ("opus", "nllb")

# The real models' shapes as CTranslate2 holds them after `ct2-transformers-converter`, which
# drops Marian's `<pad>` (the vocabulary is config.json's `vocab_size` - 1) and keeps NLLB's.
# Sources (config.json of each model on the Hugging Face hub, read through copies and
# fine-tunes that carry it; the hub itself is unreachable from here):
# - Helsinki-NLP/opus-mt-en-ar: MarianMTModel, 6+6 layers, d_model 512, 8 heads, FFN 2048,
#   swish, vocab_size 62802 (pad 62801), one shared vocabulary; its model card (Tatoeba-Challenge
#   eng-ara opus-2020-07-03) lists the targets acm afb apc apc_Latn ara ara_Latn arq arq_Latn ary
#   arz and requires a sentence-initial `>>id<<` token.
# - Helsinki-NLP/opus-mt-tc-big-en-ar: MarianMTModel transformer-big, 6+6 layers, d_model 1024,
#   16 heads, FFN 4096, relu, vocab_size 61247 (generation_config.json: pad and decoder start
#   61246, eos 25897), `separate_vocabs: false` in tokenizer_config.json (one vocabulary for both
#   sides), ships source.spm, target.spm and vocab.json; its release
#   (eng-ara/opusTCv20210807+bt_transformer-big_2022-02-25, Helsinki-NLP/Tatoeba-Challenge
#   models/eng-ara/*.yml) lists the targets acm afb apc ara arq ary arz (`>>ara<<`: Standard
#   Arabic).
# - facebook/nllb-200-distilled-600M: M2M100, 12+12 layers, d_model 1024, 16 heads, FFN 4096,
#   relu, vocab_size 256206, one sentencepiece.bpe.model; `eng_Latn` / `arb_Arab` tokens.
# The random models are pre-norm with ReLU throughout (Marian is post-norm, opus-mt-en-ar uses
# swish): the same matrix products, so the same work within a few percent.
OPUS_EN_AR_LABELS = (
    ">>acm<<", ">>afb<<", ">>apc<<", ">>apc_Latn<<", ">>ara<<", ">>ara_Latn<<", ">>arq<<",
    ">>arq_Latn<<", ">>ary<<", ">>arz<<",
)  # fmt: skip
TC_BIG_EN_AR_LABELS = (">>acm<<", ">>afb<<", ">>apc<<", ">>ara<<", ">>arq<<", ">>ary<<", ">>arz<<")
SHAPES: dict[str, dict] = {
    "opus-mt-en-ar": dict(
        layers=6, d_model=512, heads=8, ffn=2048, vocab=62801, labels=OPUS_EN_AR_LABELS
    ),
    "opus-mt-tc-big-en-ar": dict(
        layers=6, d_model=1024, heads=16, ffn=4096, vocab=61246, labels=TC_BIG_EN_AR_LABELS
    ),
    "nllb-200-distilled-600M": dict(
        layers=12, d_model=1024, heads=16, ffn=4096, vocab=256206, layout="nllb"
    ),
}
MODEL_FILES = (
    "model.bin",
    "config.json",
    "README.md",
    "source.spm",
    "target.spm",
    "sentencepiece.bpe.model",
    "shared_vocabulary.json",
    "source_vocabulary.json",
    "target_vocabulary.json",
)

ENGLISH = (
    "A man riding a bicycle down a city street.",
    "Two dogs playing with a ball on the grass.",
    "A woman holding an umbrella in the rain.",
    "A plate of food with rice, meat and vegetables.",
    "A group of people standing in front of a building.",
    "A cat sleeping on a red sofa.",
    "A child eating an ice cream cone.",
    "An old mosque with a tall minaret at sunset.",
    "A train arriving at a crowded station.",
    "A small boat on a calm blue sea.",
    "A bowl of fresh fruit on a wooden table.",
    "Two men playing chess in a park.",
    "A girl reading a book under a tree.",
    "A black and white photo of a market.",
    "A kitchen with white cabinets and a window.",
    "A bus parked beside the road.",
    "A horse running across a green field.",
    "A desert with sand dunes and a camel.",
    "A bird sitting on a branch.",
    "A young boy flying a kite on the beach.",
    "An airplane flying over the mountains.",
    "A large clock tower in the middle of a square.",
    "People walking on a busy street at night.",
    "A table set for dinner with candles.",
    "A dog looking out of a car window.",
    "A woman cooking in a small kitchen.",
    "A laptop and a cup of coffee on a desk.",
    "Children playing football in a dusty yard.",
    "A bridge over a wide river.",
    "A vase of flowers next to a window.",
    "A street vendor selling bread.",
    "A snowy mountain under a clear sky.",
    "A man in a suit talking on the phone.",
    "A pizza with cheese and tomatoes.",
    "Sheep grazing on a hillside.",
    "A bathroom with a sink and a mirror.",
    "A baby sleeping in a crib.",
    "A red car parked in front of a house.",
    "An elephant walking near a lake.",
    "A fisherman pulling a net from the water.",
)

ARABIC = (
    "رجل يركب دراجة في شارع المدينة.",
    "كلبان يلعبان بالكرة على العشب.",
    "امرأة تحمل مظلة تحت المطر.",
    "طبق من الطعام فيه أرز ولحم وخضار.",
    "مجموعة من الناس يقفون أمام مبنى.",
    "قطة نائمة على أريكة حمراء.",
    "طفل يأكل مخروط آيس كريم.",
    "مسجد قديم بمئذنة عالية عند الغروب.",
    "قطار يصل إلى محطة مزدحمة.",
    "قارب صغير على بحر أزرق هادئ.",
    "وعاء من الفاكهة الطازجة على طاولة خشبية.",
    "رجلان يلعبان الشطرنج في حديقة.",
    "فتاة تقرأ كتابا تحت شجرة.",
    "صورة بالأبيض والأسود لسوق.",
    "مطبخ بخزائن بيضاء ونافذة.",
    "حافلة متوقفة بجانب الطريق.",
    "حصان يركض عبر حقل أخضر.",
    "صحراء فيها كثبان رملية وجمل.",
    "طائر يجلس على غصن.",
    "صبي صغير يطير طائرة ورقية على الشاطئ.",
    "طائرة تحلق فوق الجبال.",
    "برج ساعة كبير في وسط ساحة.",
    "أناس يمشون في شارع مزدحم ليلا.",
    "طاولة معدة للعشاء مع شموع.",
    "كلب ينظر من نافذة سيارة.",
    "امرأة تطبخ في مطبخ صغير.",
    "حاسوب محمول وفنجان قهوة على مكتب.",
    "أطفال يلعبون كرة القدم في ساحة مغبرة.",
    "جسر فوق نهر واسع.",
    "مزهرية من الزهور بجانب نافذة.",
    "بائع متجول يبيع الخبز.",
    "جبل مغطى بالثلج تحت سماء صافية.",
    "رجل ببدلة يتحدث في الهاتف.",
    "بيتزا بالجبن والطماطم.",
    "أغنام ترعى على سفح تل.",
    "حمام فيه مغسلة ومرآة.",
    "رضيع نائم في سريره.",
    "سيارة حمراء متوقفة أمام منزل.",
    "فيل يمشي قرب بحيرة.",
    "صياد يسحب شبكة من الماء.",
)


def train_sentencepiece(
    sentences: Iterable[str],
    vocab_size: int,
    *,
    model_type: str = "unigram",
    user_symbols: Sequence[str] = (),
) -> bytes:
    """A SentencePiece model trained on `sentences`, as the bytes of a `.model` file.

    `vocab_size` is an upper bound: a small corpus may support fewer pieces.
    """
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(list(sentences)),
        model_writer=model,
        vocab_size=vocab_size,
        model_type=model_type,
        hard_vocab_limit=False,
        character_coverage=1.0,
        user_defined_symbols=list(user_symbols),
        num_threads=1,
        minloglevel=2,
    )
    return model.getvalue()


def spm_pieces(model: bytes) -> list[str]:
    """Every piece of a SentencePiece model, in id order (`<unk>`, `<s>`, `</s>`, …)."""
    import sentencepiece as spm

    processor = spm.SentencePieceProcessor(model_proto=model)
    return [processor.id_to_piece(i) for i in range(processor.get_piece_size())]


def _transformer_spec(
    rng: np.random.Generator,
    *,
    source_vocab: int,
    target_vocab: int,
    layers: int,
    d_model: int,
    heads: int,
    ffn: int,
    shared_embeddings: bool,
    eos_id: int,
    eos_bias: float = 2.0,
):
    """A pre-norm Transformer spec with every weight drawn from `rng`."""
    from ctranslate2.specs import transformer_spec

    spec = transformer_spec.TransformerSpec.from_config((layers, layers), heads)

    def matrix(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)

    def vector(size: int, scale: float = 0.1) -> np.ndarray:
        return (rng.standard_normal(size) * scale).astype(np.float32)

    def linear(layer, rows: int, cols: int) -> None:
        layer.weight = matrix(rows, cols)
        layer.bias = vector(rows)

    def norm(layer) -> None:
        layer.gamma = np.ones(d_model, np.float32)
        layer.beta = np.zeros(d_model, np.float32)

    def attention(layer, cross: bool) -> None:
        norm(layer.layer_norm)
        if cross:  # queries, then keys and values fused, then the output
            linear(layer.linear[0], d_model, d_model)
            linear(layer.linear[1], 2 * d_model, d_model)
        else:  # queries, keys and values fused, then the output
            linear(layer.linear[0], 3 * d_model, d_model)
        linear(layer.linear[-1], d_model, d_model)

    def feed_forward(layer) -> None:
        norm(layer.layer_norm)
        linear(layer.linear_0, ffn, d_model)
        linear(layer.linear_1, d_model, ffn)

    # Embeddings of unit scale: CTranslate2 multiplies them by sqrt(d_model) before the layers.
    target_embeddings = (rng.standard_normal((target_vocab, d_model)) * 0.3).astype(np.float32)
    if shared_embeddings:
        source_embeddings = target_embeddings
    else:
        source_embeddings = (rng.standard_normal((source_vocab, d_model)) * 0.3).astype(np.float32)
    spec.encoder.embeddings[0].weight = source_embeddings
    norm(spec.encoder.layer_norm)
    for layer in spec.encoder.layer:
        attention(layer.self_attention, cross=False)
        feed_forward(layer.ffn)
    spec.decoder.embeddings.weight = target_embeddings
    norm(spec.decoder.layer_norm)
    for layer in spec.decoder.layer:
        attention(layer.self_attention, cross=False)
        attention(layer.attention, cross=True)
        feed_forward(layer.ffn)
    spec.decoder.projection.weight = matrix(target_vocab, d_model)
    # A raised `</s>` logit makes most translations end at a length of their own, as a trained
    # model's do, instead of all running to the decoding limit.
    bias = np.zeros(target_vocab, np.float32)
    bias[eos_id] = eos_bias
    spec.decoder.projection.bias = bias
    return spec


def _save(
    spec, folder: str, files: dict[str, bytes], readme: str, quantization: str | None = None
) -> str:
    spec.validate()
    if quantization:
        spec.optimize(quantization=quantization)
    os.makedirs(folder, exist_ok=True)
    for name in MODEL_FILES:  # a rebuild in the other layout must not leave the first one's
        path = os.path.join(folder, name)
        if os.path.exists(path):
            os.remove(path)
    spec.save(folder)
    for name, data in files.items():
        with open(os.path.join(folder, name), "wb") as f:
            f.write(data)
    with open(os.path.join(folder, "README.md"), "w", encoding="utf-8") as f:
        f.write(readme)
    return folder


def build_tiny_model(
    folder: str,
    layout: str = "opus",
    seed: int = 0,
    *,
    english: Sequence[str] = ENGLISH,
    arabic: Sequence[str] = ARABIC,
    vocab_size: int = 300,
    layers: int = 2,
    d_model: int = 64,
    heads: int = 4,
    ffn: int = 128,
) -> str:
    """Build a tiny random-weight CTranslate2 en→ar model into `folder` and return `folder`.

    `layout="opus"`: `source.spm` (trained on `english`) and `target.spm` (trained on `arabic`),
    separate vocabularies. `layout="nllb"`: one `sentencepiece.bpe.model` trained on both, with
    `eng_Latn` and `arb_Arab` among its pieces, a shared vocabulary, and decoding that starts
    from `</s>` followed by the target token, as NLLB does.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    rng = np.random.default_rng(seed)
    if layout == "opus":
        source_model = train_sentencepiece(english, vocab_size)
        target_model = train_sentencepiece(arabic, vocab_size)
        source_pieces, target_pieces = spm_pieces(source_model), spm_pieces(target_model)
        files = {"source.spm": source_model, "target.spm": target_model}
    else:
        shared_model = train_sentencepiece(
            [*english, *arabic],
            2 * vocab_size,
            model_type="bpe",
            user_symbols=(SOURCE_LANG, TARGET_LANG),
        )
        source_pieces = target_pieces = spm_pieces(shared_model)
        files = {"sentencepiece.bpe.model": shared_model}
    spec = _transformer_spec(
        rng,
        source_vocab=len(source_pieces),
        target_vocab=len(target_pieces),
        layers=layers,
        d_model=d_model,
        heads=heads,
        ffn=ffn,
        shared_embeddings=layout == "nllb",
        eos_id=target_pieces.index("</s>"),
    )
    spec.register_source_vocabulary(source_pieces)
    spec.register_target_vocabulary(target_pieces)
    if layout == "nllb":
        spec.config.decoder_start_token = "</s>"
    readme = (
        f"# tiny-random-en-ar-{layout}\n\nRandom weights (seed {seed}), {layers}+{layers} layers, "
        f"d_model {d_model}: for tests and the demo only; its translations are meaningless.\n"
    )
    return _save(spec, folder, files, readme)


def build_random_model(
    folder: str,
    *,
    layers: int = 6,
    d_model: int = 512,
    heads: int = 8,
    ffn: int = 2048,
    vocab: int = 62000,
    layout: str = "opus",
    labels: Sequence[str] = (),
    quantization: str | None = "int8",
    seed: int = 0,
    english: Sequence[str] = ENGLISH,
    arabic: Sequence[str] = ARABIC,
    spm_vocab_size: int = 300,
    spm_model_type: str = "unigram",
    eos_bias: float = 2.0,
    name: str = "random-opus-mt-en-ar-shape",
) -> str:
    """A random-weight model of a real model's shape, for benchmarks and tests: `vocab` pieces
    shared by both sides (the trained ones, `labels`, then synthetic ones), tied embeddings.

    `layout="opus"`: `source.spm` and `target.spm` trained on `english` and `arabic` with at
    most `spm_vocab_size` pieces each, and `labels` (OPUS-MT target-language tokens such as
    `>>ara<<`, given as `source_prefix`) in the vocabulary. `layout="nllb"`: one
    `sentencepiece.bpe.model` trained on both with `eng_Latn` and `arb_Arab` among its pieces,
    decoding from `</s>` as NLLB does. `spm_model_type` is `unigram` or `bpe`: a benchmark passes
    its own captions and a vocabulary big enough to hold their words, so that a caption has
    about as many tokens as the real tokenizer gives it (a small vocabulary splits words into
    letters; on a small corpus, `bpe` keeps whole words where `unigram` stops short of the size).
    `eos_bias` is added to the `</s>` logit: the default makes some translations end by
    themselves; a large negative one (-50) makes every translation run to the decoding limit,
    so that two decoders given the same limits do the same work. `name` titles its README.md
    (the dataset card's model name).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    rng = np.random.default_rng(seed)
    if layout == "opus":
        source_model = train_sentencepiece(english, spm_vocab_size, model_type=spm_model_type)
        target_model = train_sentencepiece(arabic, spm_vocab_size, model_type=spm_model_type)
        trained = [*spm_pieces(source_model), *spm_pieces(target_model)]
        files = {"source.spm": source_model, "target.spm": target_model}
    else:
        shared_model = train_sentencepiece(
            [*english, *arabic],
            spm_vocab_size,
            model_type=spm_model_type,
            user_symbols=(SOURCE_LANG, TARGET_LANG),
        )
        trained = spm_pieces(shared_model)
        files = {"sentencepiece.bpe.model": shared_model}
    pieces = list(dict.fromkeys([*trained, *labels]))
    if len(pieces) > vocab:
        raise ValueError(f"vocab must be at least {len(pieces)}, got {vocab}")
    pieces += [f"▁x{i:05d}" for i in range(vocab - len(pieces))]
    spec = _transformer_spec(
        rng,
        source_vocab=vocab,
        target_vocab=vocab,
        layers=layers,
        d_model=d_model,
        heads=heads,
        ffn=ffn,
        shared_embeddings=True,
        eos_id=pieces.index("</s>"),
        eos_bias=eos_bias,
    )
    spec.register_source_vocabulary(pieces)
    spec.register_target_vocabulary(pieces)
    if layout == "nllb":
        spec.config.decoder_start_token = "</s>"
    readme = (
        f"# {name}\n\nRandom weights (seed {seed}), {layers}+{layers} layers, "
        f"d_model {d_model}, {heads} heads, FFN {ffn}, vocabulary {vocab}, "
        f"{quantization or 'float32'}: for benchmarks and tests only.\n"
    )
    return _save(spec, folder, files, readme, quantization)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m standins.tiny_model",
        description="Build a tiny random-weight CTranslate2 en→ar model (tests and the demo).",
    )
    parser.add_argument("out_dir", help="the model folder to create")
    parser.add_argument("--layout", choices=LAYOUTS, default="opus")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    # Built beside the target and renamed, so an interrupted build never leaves half a model
    # that a Makefile rule (which checks only that the folder exists) would take as done.
    with building(args.out_dir, ".tiny-model-") as tmp:
        build_tiny_model(tmp, layout=args.layout, seed=args.seed)
    print(args.out_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
