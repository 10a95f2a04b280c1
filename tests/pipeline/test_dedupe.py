"""DropDuplicates: the banded search against brute force, the semantics of issue #5 on the pure
decision function, and the Beam stage on real pHashes of generated images."""

from __future__ import annotations

import random
from collections import Counter

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from image_samples import encode, photo
from PIL import Image, ImageEnhance

from pipeline import dedupe
from pipeline.config import ImagesConfig
from pipeline.dedupe import (
    DUPLICATE,
    PLACEHOLDER,
    DedupeKey,
    DropDuplicates,
    Plan,
    band_plan,
    caption_key,
    decide,
    dedupe_key,
    hash_groups,
    near_pairs,
    plan_search,
    to_columns,
    url_key,
)
from pipeline.images.codec import store_image
from pipeline.records import GENUINE, TRANSLATED, Pair

SOURCES = ("wit", "wit#2", "conceptual_captions", "coco")
WIKI = "https://upload.wikimedia.org/wikipedia/commons"


def make_pair(
    id: str,
    caption: str = "قطة سوداء",
    phash: str | None = None,
    url: str | None = None,
    *,
    source: str = "wit",
    origin: str | None = None,
    sha256: str | None = None,
    path: str | None = None,
    line: int | None = None,
) -> Pair:
    kind = source.split("#")[0]
    return Pair(
        id=id,
        source=kind,
        source_name=source,
        source_key=id,
        caption_ar=caption,
        caption_origin=origin or (GENUINE if kind == "wit" else TRANSLATED),
        image_url=url,
        image_path=path,
        phash=phash,
        sha256=sha256,
        input_file=f"{source}.tsv",
        input_line=line,
    )


def verdicts(pairs: list[Pair], max_hamming: int = 4, min_urls: int = 5) -> dict[str, tuple]:
    """{pair id: (reason, detail)} of the losers, through the pure path the stage runs."""
    ranks = {name: i for i, name in enumerate(SOURCES)}
    tokens = {i.to_bytes(16, "big"): p.id for i, p in enumerate(pairs)}
    keys = [dedupe_key(p, t, ranks) for t, p in zip(tokens, pairs, strict=True)]
    losers = decide(to_columns(keys), max_hamming, min_urls)
    out = {tokens[v.token]: (v.reason, v.detail) for v in losers}
    assert len(out) == len(losers)
    return out


def check_stage(pairs, kept, dropped, max_hamming=4, min_urls=5):
    """Runs DropDuplicates in a TestPipeline: kept ids and dropped (source, reason, detail)."""
    with TestPipeline() as p:
        k, d = (
            p
            | beam.Create(pairs)
            | DropDuplicates(max_hamming, SOURCES, placeholder_min_urls=min_urls)
        )
        assert_that(k | "KeptIds" >> beam.Map(lambda x: x.id), equal_to(kept), label="kept")
        assert_that(
            d | "DropFields" >> beam.Map(lambda d: (d.source_name, d.reason, d.detail)),
            equal_to(dropped),
            label="dropped",
        )


def hexes(*values: int) -> list[str]:
    return [f"{v:016x}" for v in values]


# ---------------------------------------------------------------------------- keys


def test_caption_key_ignores_diacritics_tatweel_punctuation_space_and_case():
    assert caption_key("القِطّةُ ، السـوداء!") == caption_key("القطة السوداء") == "القطة السوداء"
    assert caption_key("  A  Black\u00a0CAT. ") == caption_key("a black cat") == "a black cat"
    # Bidi marks and presentation forms (NFKC) are not differences either.
    assert caption_key("\u200fقطة\u200e") == caption_key("قطة")
    assert caption_key("\ufed7\ufec4\ufe94") == caption_key("قطة")
    assert caption_key("«قطة»؟") == caption_key("قطة")


def test_caption_key_keeps_real_differences():
    assert caption_key("قطة") != caption_key("قطط")
    assert caption_key("أحمد") != caption_key("احمد")  # alef forms are not folded
    assert caption_key("صورة 1") != caption_key("صورة 2")


def test_url_key_takes_a_wikimedia_thumbnail_as_its_file_and_drops_query_and_scheme():
    original = f"{WIKI}/a/ab/Cairo_Tower.jpg"
    assert url_key(f"{WIKI}/thumb/a/ab/Cairo_Tower.jpg/220px-Cairo_Tower.jpg") == url_key(original)
    assert url_key(f"{WIKI}/thumb/a/ab/Cairo_Tower.jpg/1024px-Cairo_Tower.jpg?x=1") == url_key(
        original
    )
    assert url_key("//upload.wikimedia.org/wikipedia/commons/a/ab/Cairo_Tower.jpg") == url_key(
        original
    )
    assert url_key(f"{WIKI}/thumb/c/c3/Flag.svg/120px-Flag.svg.png") == url_key(
        f"{WIKI}/c/c3/Flag.svg"
    )
    assert url_key("HTTP://Example.COM:443/a%20b.jpg?size=large#top") == "example.com/a b.jpg"
    assert url_key("http://example.com:8080/x.jpg") == "example.com:8080/x.jpg"
    assert url_key(f"{WIKI}/a/ab/Other.jpg") != url_key(original)
    # Not a MediaWiki thumbnail path: left alone.
    assert (
        url_key("https://example.com/thumb/photo/220px.jpg") == "example.com/thumb/photo/220px.jpg"
    )


# ---------------------------------------------------------------------------- the search


def brute_pairs(hashes: list[int], k: int) -> set[tuple[int, int]]:
    return {
        (i, j)
        for i in range(len(hashes))
        for j in range(i + 1, len(hashes))
        if (hashes[i] ^ hashes[j]).bit_count() <= k
    }


def components(n: int, pairs) -> list[int]:
    parent = list(range(n))

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j in pairs:
        parent[find(i)] = find(j)
    return [find(x) for x in range(n)]


def same_partition(a, b) -> bool:
    return len(set(zip(a, b, strict=True))) == len(set(a)) == len(set(b))


@st.composite
def planted_hashes(draw):
    """Random 64-bit hashes, then near neighbours of them at 0..k+2 flipped bits."""
    k = draw(st.integers(0, 10))
    base = draw(st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=60))
    hashes = list(base)
    for _ in range(draw(st.integers(0, 80))):
        h = hashes[draw(st.integers(0, len(hashes) - 1))]
        for bit in draw(st.lists(st.integers(0, 63), max_size=k + 2, unique=True)):
            h ^= 1 << bit
        hashes.append(h)
    return k, hashes


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    planted_hashes(),
    st.integers(3, 11),
    st.sampled_from([3, 50, 1 << 22]),
    st.booleans(),
)
def test_banded_search_finds_exactly_the_pairs_brute_force_finds(case, bands, block, dense):
    k, hashes = case
    truth = brute_pairs(hashes, k)
    plan = band_plan(k, min(bands, max(3, k + 1))) if k else Plan((), 0)
    saved = dedupe.DENSE_MIN_FILL
    dedupe.DENSE_MIN_FILL = 0 if dense else 1.0  # the dense table, or the binary search
    try:
        found = near_pairs(hashes, k, plan=plan, block=block)
        groups = hash_groups(hashes, k, plan=plan, block=block, workers=2 if dense else 1)
    finally:
        dedupe.DENSE_MIN_FILL = saved
    assert set(map(tuple, found.tolist())) == truth
    assert set(map(tuple, near_pairs(hashes, k).tolist())) == truth  # the automatic plan
    assert same_partition(list(groups), components(len(hashes), truth))


def test_plan_follows_the_issue_at_scale_and_brute_force_when_tiny():
    assert plan_search(8, 2_100_000) == Plan((22, 21, 21), 2)
    assert plan_search(4, 2_100_000) == Plan((22, 21, 21), 1)
    assert plan_search(0, 2_100_000) == Plan((), 0)
    assert plan_search(8, 50) is None


def test_a_band_value_shared_by_many_hashes_is_verified_in_blocks():
    # 600 distinct hashes with equal top bits: one bucket of 600 in the first band.
    rng = np.random.default_rng(5)
    low = rng.integers(0, 2**20, size=600, dtype=np.uint64)
    hashes = np.unique((np.uint64(0xABCDE) << np.uint64(44)) | low)
    truth = brute_pairs([int(h) for h in hashes], 8)
    found = near_pairs(hashes, 8, plan=Plan((22, 21, 21), 2), block=97)
    assert set(map(tuple, found.tolist())) == truth
    groups = hash_groups(hashes, 8, plan=Plan((22, 21, 21), 2), block=97)
    assert same_partition(list(groups), components(len(hashes), truth))


def test_equal_hashes_cost_nothing_however_many():
    hashes = np.zeros(200_000, dtype=np.uint64)  # all-black images
    assert (hash_groups(hashes, 8) == 0).all()


def test_chains_form_one_group():
    a = 0
    b = a ^ 0b1111  # 4 from a
    c = b ^ 0b1111_0000  # 4 from b, 8 from a
    d = 2**64 - 1
    assert (a ^ c).bit_count() > 4
    groups = hash_groups([a, c, b, d], 4)
    assert groups[0] == groups[1] == groups[2] != groups[3]
    # As pairs: C is a duplicate of A through B, though 8 bits from it; D stays.
    named = {"c": c, "a": a, "b": b, "d": d}
    pairs = [make_pair(name, "جسر", hexes(h)[0]) for name, h in named.items()]
    assert verdicts(pairs) == {"b": (DUPLICATE, "a"), "c": (DUPLICATE, "a")}


# ---------------------------------------------------------------------------- real images


CONFIG = ImagesConfig()


def stored_phash(img: Image.Image, quality: int = 90) -> str:
    return store_image(encode(img, "JPEG", quality=quality), CONFIG).phash


def distance(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


@pytest.fixture(scope="module")
def photos() -> list[Image.Image]:
    return [photo(640, 480, seed) for seed in range(24)]


def test_resized_recompressed_and_brightened_copies_are_found(photos):
    pairs, expected_losers = [], {}
    for n, img in enumerate(photos[:8]):
        variants = [
            img,
            img.resize((400, 300), Image.Resampling.LANCZOS),
            img,  # recompressed below at quality 40
            ImageEnhance.Brightness(img).enhance(1.1),
            ImageEnhance.Brightness(img.resize((480, 360))).enhance(0.92),
        ]
        for v, variant in enumerate(variants):
            phash = stored_phash(variant, quality=40 if v == 2 else 90)
            source = ("wit", "conceptual_captions", "coco")[v % 3]
            pair = make_pair(
                f"p{n}-{v}", f"صورة رقم {n}", phash, f"https://h{v}.org/{n}.jpg", source=source
            )
            pairs.append(pair)
            if v:
                expected_losers[pair.id] = (DUPLICATE, f"p{n}-0")
    assert verdicts(pairs, max_hamming=8) == expected_losers
    # Distinct photos are far apart: nothing else was merged.
    originals = [p.phash for p in pairs if p.id.endswith("-0")]
    assert min(distance(a, b) for i, a in enumerate(originals) for b in originals[i + 1 :]) > 8


def test_crop_recall_is_measured_and_reported(photos, capsys, record_property):
    """pHash is weak on crops: measured here, not asserted beyond being measured."""
    found = Counter()
    for img in photos:
        original = stored_phash(img)
        for share in (2, 4, 6):
            w, h = img.size
            dx, dy = w * share // 100, h * share // 100
            d = distance(original, stored_phash(img.crop((dx, dy, w, h))))
            for k in (4, 8):
                found[share, k] += d <= k
    recall = {f"crop {s}% at distance {k}": found[s, k] / len(photos) for s, k in sorted(found)}
    overall = sum(found[s, 8] for s in (2, 4, 6)) / (3 * len(photos))
    for name, value in recall.items():
        record_property(name, value)
    with capsys.disabled():
        print(f"\ncrop recall over {len(photos)} photos (2-6% off two sides):")
        for name, value in recall.items():
            print(f"  {name}: {value:.0%}")
        print(f"  2-6% at distance 8: {overall:.0%}")
    assert all(found[s, 4] <= found[s, 8] for s in (2, 4, 6))


# ---------------------------------------------------------------------------- decisions


def test_priority_genuine_then_source_order_then_smallest_id():
    h = hexes(0x0123456789ABCDEF)[0]
    # Translated with the smallest id and the first source loses to any genuine pair.
    assert verdicts(
        [
            make_pair("a", phash=h, url="u1", source="conceptual_captions"),
            make_pair("z", phash=h, url="u2", source="wit#2"),
            make_pair("y", phash=h, url="u3", source="wit"),
        ]
    ) == {"a": (DUPLICATE, "y"), "z": (DUPLICATE, "y")}
    # Both genuine: the earlier source wins over a smaller id.
    assert verdicts(
        [make_pair("b", phash=h, source="wit#2"), make_pair("c", phash=h, source="wit")]
    ) == {"b": (DUPLICATE, "c")}
    # Same source and origin: the smallest id.
    assert verdicts([make_pair("n", phash=h), make_pair("m", phash=h)]) == {"n": (DUPLICATE, "m")}
    # A caption_origin the stage does not know ranks after translated.
    assert verdicts(
        [
            make_pair("a", phash=h, origin="unknown"),
            make_pair("b", phash=h, source="coco"),
        ]
    ) == {"a": (DUPLICATE, "b")}


def test_survivors_do_not_depend_on_input_order():
    rng = random.Random(7)
    pairs = []
    for i in range(300):
        base = rng.choice([0, 2**40, 2**63 + 5, 12345])
        phash = base ^ (1 << rng.randrange(64)) if rng.random() < 0.5 else base
        source = rng.choice(SOURCES)
        pairs.append(
            make_pair(
                f"id{i:03d}", f"وصف {i % 4}", hexes(phash)[0], f"https://x/{i % 3}", source=source
            )
        )
    first = verdicts(pairs, min_urls=10)
    for _ in range(3):
        rng.shuffle(pairs)
        assert verdicts(pairs, min_urls=10) == first
    assert Counter(reason for reason, _ in first.values()) == {DUPLICATE: len(first)}
    assert len(first) > 200


def test_cocos_five_captions_of_one_image_are_five_rows():
    h, url = hexes(0xFEEDFACECAFEBEEF)[0], "http://images.cocodataset.org/train2014/1.jpg"
    captions = ["رجل يركب دراجة", "شخص على دراجة", "دراجة في الشارع", "رجل في الطريق", "راكب دراجة"]
    coco = [make_pair(f"c{i}", c, h, url, source="coco") for i, c in enumerate(captions)]
    assert verdicts(coco) == {}
    # The same image from another source with one of those captions: only that one goes.
    again = make_pair("w", "رجل يركب دراجة.", h, f"{WIKI}/a/ab/Bike.jpg", source="wit")
    assert verdicts([*coco, again]) == {"c0": (DUPLICATE, "w")}


def test_placeholder_reached_from_enough_urls_with_differing_captions_is_dropped_whole():
    h = hexes(0x8000000000000000)[0]
    near = hexes(0x8000000000000003)[0]  # a re-encoded placeholder, 2 bits away
    pairs = [
        make_pair(
            f"cc{i}",
            f"منظر رقم {i}",
            h if i % 2 else near,
            f"https://site{i}.com/x.jpg",
            source="conceptual_captions",
        )
        for i in range(5)
    ]
    detail = "5 urls, 5 captions"
    assert verdicts(pairs) == {p.id: (PLACEHOLDER, detail) for p in pairs}
    # One URL fewer: not a placeholder; distinct captions all stay.
    assert verdicts(pairs[:4]) == {}
    # Differing captions are required: five URLs with one caption are duplicates.
    same = [p._replace(caption_ar="صورة غير متاحة") for p in pairs]
    assert verdicts(same) == {f"cc{i}": (DUPLICATE, "cc0") for i in range(1, 5)}


def test_placeholder_counts_distinct_urls_only():
    h = hexes(0x00FF00FF00FF00FF)[0]
    # The same URL six times, with queries: one location.
    repeated = [
        make_pair(f"r{i}", f"عنوان {i}", h, f"https://a.com/img.jpg?v={i}") for i in range(6)
    ]
    assert verdicts(repeated) == {}
    # Thumbnails of one Commons file at five widths are one location, plus three others.
    thumbs = [
        make_pair(f"t{w}", f"وصف {w}", h, f"{WIKI}/thumb/a/ab/X.jpg/{w}px-X.jpg")
        for w in (120, 220, 320, 640, 1024)
    ]
    others = [make_pair(f"o{i}", f"آخر {i}", h, f"https://b{i}.com/x.jpg") for i in range(3)]
    assert verdicts(thumbs + others) == {}
    fifth = make_pair("o9", "آخر 9", h, "https://b9.com/x.jpg")
    losers = verdicts([*thumbs, *others, fifth])
    assert set(losers) == {p.id for p in [*thumbs, *others, fifth]}
    assert set(losers.values()) == {(PLACEHOLDER, "5 urls, 9 captions")}


def test_url_only_pairs_dedupe_on_location_and_caption():
    pairs = [
        make_pair("a", "قطة", url=f"{WIKI}/thumb/a/ab/Cat.jpg/220px-Cat.jpg", source="wit#2"),
        make_pair("b", "قطة!", url=f"{WIKI}/a/ab/Cat.jpg", source="wit"),
        make_pair("c", "كلب", url=f"{WIKI}/a/ab/Cat.jpg"),
        make_pair("d", "قطة", url="https://other.org/Cat.jpg"),
        make_pair("e", "قطة", path="/data/flickr/1.jpg", source="coco"),
        make_pair("f", "قطة", path="/data/flickr/1.jpg", source="coco"),
        make_pair("g", "قطة"),
        make_pair("h", "قطة"),
    ]
    # Without an image, nothing is a placeholder, and a pair with no location is alone.
    assert verdicts(pairs, min_urls=2) == {"a": (DUPLICATE, "b"), "f": (DUPLICATE, "e")}


def test_equal_sha256_is_the_same_image_whatever_the_phash():
    sha = "ab" * 32
    pairs = [
        make_pair("a", phash=hexes(0)[0], sha256=sha),
        make_pair("b", phash=hexes(2**64 - 1)[0], sha256=sha),
        make_pair("c", phash="not a hash", sha256=sha),
        make_pair("d", phash=hexes(2**64 - 1)[0], sha256="cd" * 32),
    ]
    assert verdicts(pairs) == {
        "b": (DUPLICATE, "a"),
        "c": (DUPLICATE, "a"),
        "d": (DUPLICATE, "a"),  # through b's pHash
    }


def test_one_record_read_twice_keeps_one_copy():
    h = hexes(42)[0]
    twice = [make_pair("same", phash=h, line=7), make_pair("same", phash=h, line=7)]
    assert list(verdicts(twice).values()) == [(DUPLICATE, "same")]


def test_empty_input_decides_nothing():
    assert decide(to_columns([]), 4, 5) == []


def test_a_key_is_small():
    key = dedupe_key(
        make_pair("x" * 32, "ق" * 200, hexes(1)[0], "https://a/" + "b" * 300), b"t" * 16, {}
    )
    assert isinstance(key, DedupeKey)
    sizes = [len(v) for v in (key.token, key.position, key.caption, key.location, key.id)]
    assert sum(sizes) <= 100


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="max_hamming"):
        DropDuplicates(65, SOURCES)
    with pytest.raises(ValueError, match="placeholder_min_urls"):
        DropDuplicates(4, SOURCES, placeholder_min_urls=1)


# ---------------------------------------------------------------------------- the Beam stage


def test_stage_drops_duplicates_and_placeholders_as_drops_of_the_losing_source(photos):
    img = photos[0]
    original = stored_phash(img)
    recompressed = stored_phash(img.resize((320, 240)), quality=50)
    placeholder = stored_phash(Image.new("RGB", (300, 200), (200, 200, 200)))
    pairs = [
        make_pair("w1", "برج القاهرة", original, f"{WIKI}/a/ab/Tower.jpg", line=1),
        make_pair(
            "cc1",
            "برج القاهرة.",
            recompressed,
            "https://cdn.example/t.jpg",
            source="conceptual_captions",
            line=2,
        ),
        make_pair(
            "cc2",
            "برج عال في المدينة",
            recompressed,
            "https://cdn.example/t.jpg",
            source="conceptual_captions",
            line=3,
        ),
        *[
            make_pair(
                f"ph{i}",
                f"صورة {i}",
                placeholder,
                f"https://dead{i}.example/p.jpg",
                source="conceptual_captions",
                line=10 + i,
            )
            for i in range(5)
        ],
        make_pair("u1", "نص", url="https://a.org/x.jpg", source="coco", line=20),
        make_pair("u2", "نص", url="https://a.org/x.jpg?y", source="coco", line=21),
    ]
    check_stage(
        pairs,
        kept=["w1", "cc2", "u1"],
        dropped=[
            ("conceptual_captions", DUPLICATE, "w1"),
            *[("conceptual_captions", PLACEHOLDER, "5 urls, 5 captions")] * 5,
            ("coco", DUPLICATE, "u1"),
        ],
    )


def test_stage_is_deterministic_across_input_orders():
    rng = random.Random(11)
    pairs = [
        make_pair(
            f"id{i:03d}",
            f"وصف {i % 3}",
            hexes(rng.choice([1, 2**50, 2**62]) ^ (rng.random() < 0.3))[0],
            f"https://x/{i % 2}",
            source=rng.choice(SOURCES),
            line=i,
        )
        for i in range(60)
    ]
    expected = verdicts(pairs)
    kept = sorted(p.id for p in pairs if p.id not in expected)
    dropped = [(p.source_name, *expected[p.id]) for p in pairs if p.id in expected]
    for seed in (1, 2):
        random.Random(seed).shuffle(pairs)
        check_stage(pairs, kept, dropped)


def test_stage_keeps_one_of_two_copies_of_a_record_and_passes_empty_input():
    h = hexes(99)[0]
    twice = [make_pair("same", phash=h, line=3), make_pair("same", phash=h, line=3)]
    check_stage(twice, kept=["same"], dropped=[("wit", DUPLICATE, "same")])
    check_stage([], kept=[], dropped=[])


def test_stage_counts_an_unexpected_failure_as_a_drop(monkeypatch):
    def fragile(text: str) -> str:
        if text == "boom":
            raise RuntimeError("boom")
        return text

    monkeypatch.setattr(dedupe, "caption_key", fragile)  # the DirectRunner runs in-process
    with TestPipeline() as p:
        kept, dropped = (
            p
            | beam.Create([make_pair("bad", "boom"), make_pair("good", "fine")])
            | DropDuplicates(4, SOURCES)
        )
        assert_that(kept | "Ids" >> beam.Map(lambda x: x.id), equal_to(["good"]), label="kept")
        assert_that(
            dropped | "Reasons" >> beam.Map(lambda d: (d.source_name, d.reason, d.detail)),
            equal_to([("wit", "dedupe_error", "RuntimeError: boom")]),
            label="dropped",
        )
