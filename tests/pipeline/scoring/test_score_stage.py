"""ScorePairs run in pipelines: images read back from a real image store, the tiny random CLIP
folders of both flavours, values checked against the runtime called directly."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline
from image_samples import jpeg

from pipeline.config import ScoringConfig
from pipeline.records import GENUINE, TRANSLATED, Pair
from pipeline.scoring import stage
from pipeline.scoring.model import ClipModel, Preprocessor, embed_images, embed_texts
from pipeline.scoring.stage import (
    ClipHandler,
    ScoreInput,
    ScorePairs,
    mismatched_partners,
    score_batch,
)
from pipeline.scoring.summary import summarize
from pipeline.store import ImageStore, StoredImage

LONG = " ".join(["سوق قديم مزدحم بالناس في وسط المدينة عند المساء"] * 12)


def stored(data: bytes) -> StoredImage:
    return StoredImage(
        data, 64, 48, "0" * 16, hashlib.sha256(data).hexdigest(), "image/jpeg", "jpg"
    )


def pair(n: int, caption: str, image_ref: str | None = None, english: str | None = None) -> Pair:
    return Pair(
        id=f"id{n:02d}",
        source="pairs",
        source_name="pairs",
        source_key=str(n),
        caption_ar=caption,
        caption_origin=TRANSLATED if english else GENUINE,
        caption_en=english,
        image_ref=image_ref,
        input_line=n,
    )


@pytest.fixture
def store(tmp_path) -> tuple[ImageStore, list[str]]:
    """A store holding three pictures and one record that is not an image."""
    store = ImageStore(str(tmp_path / "store"))
    writer = store.writer()
    refs = [writer.append(stored(jpeg(64, 48, seed=s))) for s in range(3)]
    refs.append(writer.append(stored(b"these bytes are no image")))
    writer.close()
    return store, refs


def pairs_of(refs: list[str]) -> list[Pair]:
    a, b, c, junk = refs
    return [
        pair(1, "قطة نائمة على أريكة حمراء", a),
        pair(2, "رجل يركب دراجة في الشارع", b, english="A man riding a bicycle in the street"),
        pair(3, "قطة على أريكة", a),  # the first pair's picture, another caption
        pair(4, "صورة بلا ملف", None),  # no stored image
        pair(5, "طائر على غصن", None, english="A bird on a branch"),
        pair(6, LONG, c),
        pair(7, "صورة تالفة", junk),
    ]


def _dump(items, path):
    with open(path, "wb") as f:
        pickle.dump(sorted(items, key=repr), f)


def run(pairs, stage: ScorePairs, tmp_path: Path):
    """(kept pairs by id, drops, the stage's counters) of one pipeline run."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    p = TestPipeline()
    kept, dropped = p | beam.Create(pairs) | stage
    kept | "AllKept" >> beam.combiners.ToList() | "DumpKept" >> beam.Map(_dump, tmp_path / "k")
    dropped | "AllDrops" >> beam.combiners.ToList() | "DumpDrops" >> beam.Map(_dump, tmp_path / "d")
    result = p.run()
    result.wait_until_finish()
    counters: dict[str, int] = {}
    for counter in result.metrics().query(MetricsFilter().with_namespace("scoring"))["counters"]:
        name = counter.key.metric.name
        counters[name] = counters.get(name, 0) + counter.committed
    kept = {x.id: x for x in pickle.loads((tmp_path / "k").read_bytes())}
    return kept, pickle.loads((tmp_path / "d").read_bytes()), counters


def direct(folder: str, image: bytes | None, caption: str, english: str | None):
    """(clip_score, translation_similarity) of one pair, the runtime called on it alone."""
    prep, model = Preprocessor(folder), ClipModel(folder, "cpu")
    (ar,), _ = embed_texts(prep, model, [caption])
    clip = translation = None
    if image is not None:
        (picture,), _ = embed_images(prep, model, [image])
        clip = float(picture @ ar)
    if english is not None:
        (en,), _ = embed_texts(prep, model, [english])
        translation = float(ar @ en)
    return clip, translation


def test_every_pair_with_an_image_gets_clip_score_and_translated_ones_similarity(
    clip_model, store, tmp_path
):
    image_store, refs = store
    pairs = pairs_of(refs)
    stage = ScorePairs(ScoringConfig(model=clip_model, device="cpu", batch_size=4), image_store)
    kept, dropped, counters = run(pairs, stage, tmp_path)

    assert sorted(kept) == ["id01", "id02", "id03", "id04", "id05", "id06"]
    for p in pairs[:6]:
        got = kept[p.id]
        image = image_store.read(p.image_ref) if p.image_ref else None
        want_clip, want_translation = direct(clip_model, image, p.caption_ar, p.caption_en)
        assert (got.clip_score is None) == (p.image_ref is None)
        assert (got.translation_similarity is None) == (p.caption_origin != TRANSLATED)
        if want_clip is not None:
            assert got.clip_score == pytest.approx(want_clip, abs=1e-5)
        if want_translation is not None:
            assert got.translation_similarity == pytest.approx(want_translation, abs=1e-5)
        assert got._replace(clip_score=None, translation_similarity=None) == p  # nothing else
    assert min(x.clip_score for x in kept.values() if x.clip_score is not None) >= -1
    # The same picture with another caption scores otherwise.
    assert kept["id01"].clip_score != pytest.approx(kept["id03"].clip_score, abs=1e-4)

    (drop,) = dropped
    assert (drop.reason, drop.input_line, drop.source_name) == ("unreadable_image", 7, "pairs")
    assert drop.detail.startswith("not an image: 24 bytes")
    assert counters["pairs_scored"] == 6 and counters["images_scored"] == 4
    assert counters["captions_truncated"] == 1  # the long caption: scored on its first tokens
    assert counters["dropped_unreadable_image"] == 1


def test_an_image_missing_from_the_store_is_unreadable_not_a_crash(siglip_model, store, tmp_path):
    image_store, refs = store
    pack = refs[0].split(":")[0]
    missing = [pair(1, "قطة", f"{pack}:999999:10"), pair(2, "كلب", "other.pack:0:10")]
    stage = ScorePairs(ScoringConfig(model=siglip_model, device="cpu"), image_store)
    kept, dropped, _ = run([*missing, pair(3, "طائر", refs[1])], stage, tmp_path)
    assert sorted(kept) == ["id03"]
    assert sorted((d.input_line, d.reason) for d in dropped) == [
        (1, "unreadable_image"),
        (2, "unreadable_image"),
    ]
    assert all(d.detail for d in dropped)


def test_images_as_large_as_the_images_stage_allows_are_scored(
    siglip_model, store, tmp_path, monkeypatch
):
    from PIL import Image

    image_store, refs = store
    # Pillow refuses images over twice its own limit unless the stage raises it to max_pixels.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    config = ScoringConfig(model=siglip_model, device="cpu")
    pairs = [pair(1, "قطة", refs[0])]
    kept, dropped, _ = run(pairs, ScorePairs(config, image_store), tmp_path / "default")
    assert not kept and [d.reason for d in dropped] == ["unreadable_image"]
    assert "DecompressionBombError" in dropped[0].detail
    kept, dropped, _ = run(pairs, ScorePairs(config, image_store, max_pixels=10_000), tmp_path)
    assert not dropped and kept["id01"].clip_score is not None


class FailingHandler(ClipHandler):
    def run_inference(self, batch, model, inference_args=None):
        if any("تعطل" in x.caption_ar for x in batch):
            raise RuntimeError("the session failed")
        return super().run_inference(batch, model, inference_args)


def test_a_batch_the_model_fails_on_drops_its_pairs_as_scoring_error(siglip_model, store, tmp_path):
    image_store, refs = store
    config = ScoringConfig(model=siglip_model, device="cpu", batch_size=1)
    stage = ScorePairs(config, image_store, handler=FailingHandler(config, image_store))
    kept, dropped, _ = run([pair(1, "تعطل", refs[0]), pair(2, "قطة", refs[1])], stage, tmp_path)
    assert sorted(kept) == ["id02"] and kept["id02"].clip_score is not None
    (drop,) = dropped
    assert (drop.reason, drop.input_line) == ("scoring_error", 1)
    assert "the session failed" in drop.detail


def test_a_model_shared_across_processes_scores_as_one_per_process(xlmr_model, store, tmp_path):
    image_store, refs = store
    config = ScoringConfig(model=xlmr_model, device="cpu")
    pairs = pairs_of(refs)[:3]
    own, _, _ = run(pairs, ScorePairs(config, image_store), tmp_path / "own")
    shared_handler = ClipHandler(config, image_store, share_across_processes=True)
    shared, _, _ = run(pairs, ScorePairs(config, image_store, handler=shared_handler), tmp_path)
    for key, p in own.items():
        assert shared[key].clip_score == pytest.approx(p.clip_score, abs=1e-6)
        assert (shared[key].translation_similarity is None) == (p.translation_similarity is None)


def test_the_handler_travels_without_its_tokenizer(siglip_model):
    handler = ClipHandler(ScoringConfig(model=siglip_model), None)
    assert handler.preprocessor().spec.flavour == "siglip"
    again = pickle.loads(pickle.dumps(handler))
    assert again._preprocessor is None
    assert again.batch_elements_kwargs() == {"min_batch_size": 32, "max_batch_size": 32}
    assert np.isfinite(again.preprocessor().ids(["قطة"]).ids).all()


# ---------------------------------------------------------------------------- the baseline


def score_input(pair_id: str, source: str, image: str | None, ar: str, en: str | None = None):
    return ScoreInput(image, ar, en, source, pair_id, image)


def partner_ids(batch: list[ScoreInput], partners: list[int | None]) -> dict[str, str | None]:
    return {
        x.pair_id: None if j is None else batch[j].pair_id
        for x, j in zip(batch, partners, strict=True)
    }


def test_a_mismatched_partner_is_the_next_pair_of_its_source_by_id_with_other_image_and_text():
    batch = [
        score_input("a4", "a", "z", "c4"),
        score_input("b1", "b", "x", "c1"),  # alone of its source: no partner
        score_input("a2", "a", "x", "c2"),  # a1's image
        score_input("a1", "a", "x", "c1"),
        score_input("a3", "a", "y", "c1"),  # a1's caption
        score_input("a5", "a", None, "c5"),  # no image: no clip partner, nobody's partner
    ]
    partners = mismatched_partners(batch, [True] * len(batch), "image_key")
    named = partner_ids(batch, partners)
    assert named == {"a1": "a4", "a2": "a3", "a3": "a4", "a4": "a1", "b1": None, "a5": None}
    # The order the batch came in does not matter; a pair that is not eligible takes no part.
    again = mismatched_partners(batch[::-1], [True] * len(batch), "image_key")
    assert partner_ids(batch[::-1], again) == named
    eligible = [x.pair_id != "a4" for x in batch]
    partners = mismatched_partners(batch, eligible, "image_key")
    named = partner_ids(batch, partners)
    # a1 has none left: a2 shows its picture, a3 says its caption.
    assert named == {"a1": None, "a2": "a3", "a3": "a2", "a4": None, "b1": None, "a5": None}


def test_a_translation_partner_has_another_english_and_another_picture():
    batch = [
        score_input("t1", "a", "x", "ع1", "e1"),
        score_input("t2", "a", "x", "ع2", "e2"),  # t1's picture: COCO's captions of one image
        score_input("t3", "a", "y", "ع3", "e1"),  # t1's English
        score_input("t4", "a", None, "ع4", "e4"),  # URL-only: no picture to share
        score_input("g1", "a", "z", "ع5"),  # genuine: no English
    ]
    partners = mismatched_partners(batch, [True] * len(batch), "caption_en")
    named = partner_ids(batch, partners)
    assert named == {"t1": "t4", "t2": "t3", "t3": "t4", "t4": "t1", "g1": None}


@pytest.fixture
def three(store) -> tuple[ImageStore, list[Pair]]:
    """Three translated pairs with their own pictures and one genuine pair of another source."""
    image_store, refs = store
    pairs = [
        pair(1, "قطة نائمة على أريكة حمراء", refs[0], english="A cat asleep on a red sofa"),
        pair(2, "رجل يركب دراجة في الشارع", refs[1], english="A man riding a bicycle"),
        pair(3, "طائر على غصن شجرة", refs[2], english="A bird on the branch of a tree"),
    ]
    lone = pair(4, "سوق قديم", refs[0])._replace(source_name="other")
    return image_store, [*pairs, lone]


def embeddings(folder: str, store: ImageStore, pairs: list[Pair]):
    """Each pair's image, Arabic and English embeddings, the runtime called on each alone."""
    prep, model = Preprocessor(folder), ClipModel(folder, "cpu")
    out = {}
    for p in pairs:
        (picture,), _ = embed_images(prep, model, [store.read(p.image_ref)])
        (ar,), _ = embed_texts(prep, model, [p.caption_ar])
        en = embed_texts(prep, model, [p.caption_en])[0][0] if p.caption_en else None
        out[p.id] = (picture, ar, en)
    return out


def test_the_mismatched_scores_of_a_batch_are_the_dot_products_of_the_derangement(
    clip_model, three
):
    image_store, pairs = three
    vectors = embeddings(clip_model, image_store, pairs)
    ids = [p.id for p in pairs[:3]]  # id01 < id02 < id03: each is matched with the next
    partner = {ids[i]: ids[(i + 1) % 3] for i in range(3)}
    batch = [stage.score_input(p) for p in reversed(pairs)]
    scores = score_batch(Preprocessor(clip_model), ClipModel(clip_model, "cpu"), image_store, batch)
    for x, s in zip(batch, scores, strict=True):
        if x.source_name == "other":
            assert s.clip_mismatched is None and s.translation_mismatched is None
            continue
        picture, ar, _ = vectors[x.pair_id]
        _, other_ar, other_en = vectors[partner[x.pair_id]]
        assert s.clip_mismatched == pytest.approx(float(picture @ other_ar), abs=1e-5)
        assert s.translation_mismatched == pytest.approx(float(ar @ other_en), abs=1e-5)
        # The pair's own scores are the matched ones.
        assert s.clip_score == pytest.approx(float(picture @ ar), abs=1e-5)


def test_the_stage_summarises_the_scores_and_the_mismatched_ones_per_source(
    siglip_model, three, tmp_path
):
    image_store, pairs = three
    vectors = embeddings(siglip_model, image_store, pairs)
    ids = [p.id for p in pairs[:3]]
    mismatched = {"clip_score_mismatched": [], "translation_similarity_mismatched": []}
    for i, pair_id in enumerate(ids):
        picture, ar, _ = vectors[pair_id]
        _, other_ar, other_en = vectors[ids[(i + 1) % 3]]
        mismatched["clip_score_mismatched"].append(float(picture @ other_ar))
        mismatched["translation_similarity_mismatched"].append(float(ar @ other_en))

    config = ScoringConfig(model=siglip_model, device="cpu", batch_size=4)  # one batch
    p = TestPipeline()
    _, _, summaries = p | beam.Create(pairs) | ScorePairs(config, image_store, with_scores=True)
    summaries | beam.combiners.ToList() | beam.Map(_dump, tmp_path / "s")
    p.run().wait_until_finish()
    got = {(source, name): s for source, name, s in pickle.loads((tmp_path / "s").read_bytes())}

    assert sorted(got) == [
        ("other", "clip_score"),
        ("pairs", "clip_score"),
        ("pairs", "clip_score_mismatched"),
        ("pairs", "translation_similarity"),
        ("pairs", "translation_similarity_mismatched"),
    ]
    assert got["other", "clip_score"]["count"] == 1  # alone of its source: no baseline
    for name, values in mismatched.items():
        want, summary = summarize(values), got["pairs", name]
        assert summary["count"] == 3
        assert summary["histogram"] == want["histogram"]
        for key in ("mean", "min", "max"):
            assert summary[key] == pytest.approx(want[key], abs=2e-6)
    matched = [float(vectors[i][0] @ vectors[i][1]) for i in ids]
    assert got["pairs", "clip_score"]["mean"] == pytest.approx(summarize(matched)["mean"], abs=2e-6)
    assert sum(got["pairs", "clip_score"]["histogram"]["counts"]) == 3
