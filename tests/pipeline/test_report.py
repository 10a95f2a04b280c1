"""`python -m pipeline report DIR`: the page of an output, checked against its stats.json and
shards. The demo is built once for the module (about a minute); the other outputs are small."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import statistics
import subprocess
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import pyarrow.parquet as pq
import pytest
from bs4 import BeautifulSoup
from PIL import Image
from url_filesystem import UrlFileSystem
from wit_files import wit_row, write_wit

from pipeline.__main__ import main
from pipeline.files import table_bytes
from pipeline.records import GENUINE, Pair, pair_id, to_row
from pipeline.report import THUMBNAIL_SIZE, build_report, svg_data_uri
from pipeline.stats import build_stats
from pipeline.write import arrow_schema, dataset_card, hf_features

ARABIC = re.compile(r"[\u0600-\u06FF]")
CHROMIUM = next(
    (
        shutil.which(name)
        for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
        if shutil.which(name)
    ),
    None,
)


class Built(NamedTuple):
    out: Path
    stats: dict
    rows: list[dict]
    soup: BeautifulSoup
    html: str


def report_of(out: Path) -> Built:
    path = build_report(str(out))
    assert path == str(out / "report.html")
    text = Path(path).read_text(encoding="utf-8")
    return Built(
        out,
        json.loads((out / "stats.json").read_text(encoding="utf-8")),
        pq.read_table(out / "data").to_pylist(),
        BeautifulSoup(text, "html.parser"),
        text,
    )


def stat_value(stats: dict, key: str) -> int | float:
    """The number `data-stat="wit.dropped.other_language"` (or `kept`, or
    `scores.wit.clip_score.mean`) names in stats.json."""
    if key in ("kept", "duplicates_removed"):
        return stats[key]
    if key.startswith("scores."):
        _, name, summary, field = key.split(".")
        return stats["scores"][name][summary][field]
    name, what = key.split(".", 1)
    source = stats["sources"][name]
    if what.startswith("dropped."):
        return source["dropped"][what.removeprefix("dropped.")]
    return source[what]


def every_stat_key(stats: dict) -> set[str]:
    keys = {"kept", "duplicates_removed"}
    for name, s in stats["sources"].items():
        keys |= {f"{name}.read", f"{name}.kept"}
        keys |= {f"{name}.dropped.{reason}" for reason in s["dropped"]}
    for name, summaries in stats.get("scores", {}).items():
        for summary, values in summaries.items():
            keys |= {
                f"scores.{name}.{summary}.{field}"
                for field in ("count", "mean", "min", "max")
                if values[field] is not None
            }
    return keys


def metric(soup: BeautifulSoup, key: str) -> str:
    (cell,) = soup.select(f'[data-metric="{key}"]')
    return cell.get_text()


def assert_numbers_equal_stats(built: Built) -> None:
    cells = built.soup.select("[data-stat]")
    for cell in cells:
        value = stat_value(built.stats, cell["data-stat"])
        assert type(value)(cell.get_text()) == value, cell
    assert {c["data-stat"] for c in cells} == every_stat_key(built.stats)
    assert not built.soup.select(".warn")


def write_manifest(folder: Path, body: str) -> Path:
    path = folder / "manifest.yaml"
    path.write_text(body, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Built:
    from standins.demo import main as demo_main

    base = tmp_path_factory.mktemp("demo")
    assert demo_main(["--output", str(base / "demo"), "--models", str(base / "models")]) == 0
    return report_of(base / "demo")


def test_every_number_of_the_accounting_equals_stats_json(demo):
    assert_numbers_equal_stats(demo)
    # The funnel table of a source: read, its drop reasons largest first, kept.
    wit = demo.stats["sources"]["wit"]
    funnel = demo.soup.select_one('table.funnel [data-stat="wit.read"]').find_parent("table")
    labels = [th.get_text() for th in funnel.select("th")]
    reasons = sorted(wit["dropped"], key=lambda r: (-wit["dropped"][r], r))
    assert labels == ["read", *[f"− {r}" for r in reasons], "kept"]


def test_the_time_of_each_stage_is_shown_as_stats_json_has_it(demo):
    timings = demo.stats["timings"]
    rows = demo.soup.select("table.timings tbody tr")
    assert [r.th.get_text() for r in rows] == list(timings)
    for stage, t in timings.items():
        for key in ("seconds", "records", "records_per_s"):
            assert metric(demo.soup, f"timings.{stage}.{key}") == str(t[key])


def test_each_drop_reason_of_the_funnel_says_its_stage_and_meaning(demo):
    def title(stat: str) -> str:
        return demo.soup.select_one(f'[data-stat="{stat}"]').find_parent("tr").th["title"]

    assert title("flickr8k.dropped.missing_image_file") == (
        "flickr8k: the named image is not in the image folder"
    )
    assert title("coco.dropped.duplicate").startswith("dedupe: the same or a near-same image")
    assert title("wit.dropped.empty_caption") == "wit: no caption field has text"


def test_the_numbers_computed_from_the_shards_match_the_shards(demo):
    soup, rows = demo.soup, demo.rows
    for name in demo.stats["sources"]:
        mine = [r for r in rows if r["source_name"] == name]
        origins = Counter(r["caption_origin"] for r in mine)
        assert int(metric(soup, f"{name}.origin.genuine")) == origins["genuine"]
        assert int(metric(soup, f"{name}.origin.translated")) == origins["translated"]
        words = [len(r["caption_ar"].split()) for r in mine]
        assert metric(soup, f"{name}.words.n") == str(len(words))
        assert metric(soup, f"{name}.words.median") == f"{statistics.median(words):.1f}"
        assert metric(soup, f"{name}.words.max") == f"{max(words):.1f}"
        assert metric(soup, f"{name}.width.max") == str(max(r["width"] for r in mine))
        assert metric(soup, f"{name}.height.min") == str(min(r["height"] for r in mine))
        langid = [r["langid_score"] for r in mine]
        assert metric(soup, f"{name}.langid_score.mean") == f"{statistics.fmean(langid):.3f}"
        scores = [r["translation_score"] for r in mine if r["translation_score"] is not None]
        assert metric(soup, f"{name}.translation_score.n") == str(len(scores))
    per_image = Counter(Counter(r["sha256"] for r in rows).values())
    for pairs, images in per_image.items():
        assert metric(soup, f"images_with_pairs.{pairs}") == str(images)
    # COCO's captions of one image survive together: some image holds more than one pair.
    assert max(per_image) > 1


def test_the_samples_are_the_first_pairs_of_each_source_by_id(demo):
    for name in demo.stats["sources"]:
        mine = sorted((r for r in demo.rows if r["source_name"] == name), key=lambda r: r["id"])
        block = demo.soup.select_one(f'div.source[data-source="{name}"]')
        figures = block.select("figure.sample")
        assert [f["data-id"] for f in figures] == [r["id"] for r in mine[:8]]
        for figure, row in zip(figures, mine, strict=False):
            caption = figure.select_one('p[dir="rtl"][lang="ar"]')
            assert caption.get_text() == row["caption_ar"]
            english = figure.select_one('p.en[dir="ltr"]')
            if row["caption_origin"] == "translated":
                assert english.get_text() == row["caption_en"]
            else:
                assert english is None
            (img,) = figure.select("img")
            assert img["src"].startswith("data:image/jpeg;base64,")
            data = base64.b64decode(img["src"].split(",", 1)[1])
            with Image.open(io.BytesIO(data)) as thumb:
                assert max(thumb.size) == min(THUMBNAIL_SIZE, max(row["width"], row["height"]))
                assert (thumb.width >= thumb.height) == (row["width"] >= row["height"])


def test_the_page_is_self_contained_and_keeps_arabic_out_of_the_plots(demo):
    soup = demo.soup
    sources = [tag["src"] for tag in soup.find_all(src=True)]
    assert sources and all(s.startswith("data:") for s in sources)
    assert not soup.find_all(["script", "link", "iframe", "object"])
    assert "url(" not in soup.style.get_text() and "@import" not in soup.style.get_text()
    plots = [s for s in sources if s.startswith("data:image/svg+xml;base64,")]
    # funnel, origins, words, langid, width, height, dedupe, pairs per image; translation scores
    # when some kept pair has one (the demo's memory gives none: "No values" and the count).
    translated = [r for r in demo.rows if r["caption_origin"] == "translated"]
    unscored = [r for r in translated if r["translation_score"] is None]
    assert metric(soup, "translation_score.unscored") == str(len(unscored))
    assert len(plots) == 8 + (len(unscored) < len(translated))
    for uri in plots:
        svg = base64.b64decode(uri.split(",", 1)[1]).decode("utf-8")
        # Text is drawn as paths: no <text> element, so no Arabic for an SVG renderer to break.
        assert "<svg" in svg and "<text" not in svg and not ARABIC.search(svg)
    # Every Arabic text on the page sits in an element that says it is right-to-left.
    for node in soup.find_all(string=ARABIC):
        if node.find_parent("pre"):  # the manifest as written
            continue
        holder = node.find_parent(lambda tag: tag.has_attr("dir") or tag.name == "bdi")
        assert holder is not None and holder.get("dir", "auto") in ("rtl", "auto"), node
    assert soup.select('p[dir="rtl"][lang="ar"]')


def test_the_manifest_and_the_translation_model_are_shown(demo):
    from translators.ctranslate import model_name

    manifest = (demo.out.parent / "demo.manifest.yaml").read_text(encoding="utf-8")
    assert demo.soup.select_one("pre.manifest").get_text() == manifest.rstrip()
    model = demo.out.parent / "models" / "tiny-opus-en-ar"
    shown = demo.soup.select_one('[data-model="translation"]').get_text()
    assert shown == model_name(str(model))


def test_the_command_prints_the_report_path_last(demo, capsys):
    assert main(["report", str(demo.out)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"report: {demo.out / 'report.html'}"
    # The same output gives the same page, byte for byte (on failure, the first difference).
    again = (demo.out / "report.html").read_text(encoding="utf-8")
    pairs = zip(again, demo.html, strict=False)  # lengths may differ: compare the common part
    first = next((i for i, (a, b) in enumerate(pairs) if a != b), None)
    assert again == demo.html, (first, again[first - 200 : first + 200] if first else len(again))


def test_the_command_refuses_a_folder_that_is_no_output(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: {tmp_path / 'stats.json'}: not an arabic-pairs output"
    )
    with pytest.raises(SystemExit) as exit_info:
        main(["report", str(tmp_path), "--runner", "DirectRunner"])
    assert exit_info.value.code == 2


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary on PATH")
def test_a_headless_chromium_screenshot_of_the_page_is_not_blank(demo, tmp_path):
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",  # tests may run as root, where the sandbox refuses to start
            "--disable-gpu",
            "--hide-scrollbars",
            f"--screenshot={shot}",
            "--window-size=1280,2400",
            (demo.out / "report.html").as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    with Image.open(shot) as image:
        assert image.size == (1280, 2400)
        gray = image.convert("L")
        colors = image.convert("RGB").getcolors(maxcolors=1 << 16)  # None: more than that
    dark = sum(gray.histogram()[:200]) / (gray.width * gray.height)
    # Text, tables and bars: neither an empty white page nor one dark block.
    assert 0.01 < dark < 0.6, dark
    assert colors is None or len(colors) > 50


# ---------------------------------------------------------------------------- small outputs


def test_a_source_that_kept_nothing(tmp_path):
    write_wit(tmp_path / "ar.tsv", [wit_row(1, caption_reference_description="قلعة حلب")])
    write_wit(
        tmp_path / "fa.tsv",
        [wit_row(2, language="fa", caption_reference_description="برج میلاد در تهران")],
    )
    manifest = write_manifest(
        tmp_path,
        "name: one-empty\nsources:\n  - kind: wit\n    paths: [ar.tsv]\n"
        "  - kind: wit\n    paths: [fa.tsv]\nimages: {fetch: false}\n",
    )
    assert main(["run", str(manifest), "--output", str(tmp_path / "out")]) == 0
    built = report_of(tmp_path / "out")
    assert built.stats["sources"]["wit#2"] == {
        "read": 1,
        "kept": 0,
        "dropped": {"other_language": 1},
    }
    assert_numbers_equal_stats(built)
    soup = built.soup
    assert soup.h1.get_text() == "one-empty"
    empty = soup.select_one('div.source[data-source="wit#2"]')
    assert empty.select_one("p.empty").get_text() == "Kept nothing." and not empty.figure
    assert metric(soup, "wit#2.words.n") == "0" and metric(soup, "wit#2.words.median") == "–"
    # URL-only rows: a sample without a picture, and no width or height to plot.
    (figure,) = soup.select('div.source[data-source="wit"] figure.sample')
    assert figure.select_one(".thumb.none").get_text() == "no image stored"
    assert metric(soup, "wit.width.n") == "0"


def test_an_output_that_kept_nothing_at_all(tmp_path):
    write_wit(tmp_path / "fa.tsv", [wit_row(2, language="fa")])
    manifest = write_manifest(
        tmp_path, "sources:\n  - kind: wit\n    paths: [fa.tsv]\nimages: {fetch: false}\n"
    )
    assert main(["run", str(manifest), "--output", str(tmp_path / "out")]) == 0
    built = report_of(tmp_path / "out")
    assert built.stats["kept"] == 0 and built.rows == []
    assert_numbers_equal_stats(built)
    assert built.soup.select_one('div.source[data-source="wit"] p.empty').get_text() == (
        "Kept nothing."
    )
    # Only the funnel has something to plot.
    assert len(built.soup.select("img.plot")) == 1


def write_output(
    out: Path, pairs: list[Pair], stats: dict, images: dict[str, bytes] | None = None
) -> None:
    """An output folder written with the writer's own functions, for rows no reader makes yet;
    `images`: the image bytes of pairs by id."""
    (out / "data").mkdir(parents=True)
    images = images or {}
    rows = [to_row(p, images.get(p.id)) for p in sorted(pairs, key=lambda p: p.id)]
    (out / "data" / "train-00000-of-00001.parquet").write_bytes(table_bytes(rows, arrow_schema()))
    card = dataset_card("handmade", stats, hf_features(), "name: handmade\n", "0" * 16)
    (out / "README.md").write_text(card, encoding="utf-8")
    (out / "stats.json").write_text(json.dumps(stats), encoding="utf-8")


def png(color: tuple[int, int, int], size: tuple[int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "PNG")
    return out.getvalue()


def test_wikipedia_samples_show_title_licence_and_attribution_escaped(tmp_path):
    caption = "<script>alert(1)</script> قلعة حلب"
    key = "https://ar.wikipedia.org/wiki/x|File:x.jpg"
    pair = Pair(
        id=pair_id("wikipedia", key, caption),
        source="wikipedia",
        source_name="wikipedia",
        source_key=key,
        caption_ar=caption,
        caption_origin=GENUINE,
        mime_type="image/png",
        width=400,
        height=200,
        langid_score=0.98,
        page_url="javascript:alert(2)",
        page_title='قلعة حلب <img src=x onerror="alert(3)">',
        license="CC BY-SA 4.0",
        attribution='<a href="http://evil.example/">Bernard Gagnon</a>',
    )
    stats = build_stats([("read", "wikipedia", 1), ("kept", "wikipedia", 1)], ["wikipedia"])
    write_output(tmp_path / "out", [pair], stats, {pair.id: png((200, 30, 30), (400, 200))})
    built = report_of(tmp_path / "out")
    soup = built.soup
    assert not soup.find_all("script")
    assert all(tag["src"].startswith("data:") for tag in soup.find_all(src=True))
    assert not [a for a in soup.find_all("a", href=True) if not a["href"].startswith(("#", "http"))]
    (figure,) = soup.select("figure.sample")
    assert figure.select_one('p[dir="rtl"]').get_text() == caption
    facts = {dt.get_text(): dt.find_next_sibling("dd").get_text() for dt in figure.select("dt")}
    assert facts["page"] == 'قلعة حلب <img src=x onerror="alert(3)">'
    assert facts["licence"] == "CC BY-SA 4.0"
    assert facts["attribution"] == '<a href="http://evil.example/">Bernard Gagnon</a>'
    assert facts["size"] == "400×200"
    assert not figure.select("a")  # a javascript: URL is shown as text, never linked
    # The thumbnail keeps the picture: 192 × 96, red.
    data = base64.b64decode(figure.img["src"].split(",", 1)[1])
    with Image.open(io.BytesIO(data)) as thumb:
        assert thumb.size == (THUMBNAIL_SIZE, THUMBNAIL_SIZE // 2)
        r, g, b = thumb.convert("RGB").getpixel((10, 10))
        assert r > 180 and g < 60 and b < 60
    assert_numbers_equal_stats(built)


def test_books_that_do_not_balance_are_shown_as_warnings(tmp_path):
    caption = "قلعة حلب"
    pair = Pair(
        id=pair_id("wit", "k", caption),
        source="wit",
        source_name="wit",
        source_key="k",
        caption_ar=caption,
        caption_origin=GENUINE,
        langid_score=0.9,
    )
    stats = build_stats([("read", "wit", 3), ("kept", "wit", 2)], ["wit"])
    write_output(tmp_path / "out", [pair], stats)
    soup = report_of(tmp_path / "out").soup
    assert [p.get_text() for p in soup.select(".warn")] == [
        "wit: read 3 != kept 2 + dropped 0 (+1 unaccounted)",
        "the shards hold 1 pairs, stats.json counts 2 kept",
    ]


def test_an_output_behind_a_filesystem_url_is_read_and_written_through_beam(tmp_path, monkeypatch):
    monkeypatch.setattr(UrlFileSystem, "root", str(tmp_path))
    pairs = [
        Pair(
            id=pair_id("wit", str(i), f"صورة رقم {i}"),
            source="wit",
            source_name="wit",
            source_key=str(i),
            caption_ar=f"صورة رقم {i}",
            caption_origin=GENUINE,
            mime_type="image/png",
            width=64,
            height=48,
            langid_score=0.9,
        )
        for i in range(3)
    ]
    stats = build_stats([("read", "wit", 3), ("kept", "wit", 3)], ["wit"])
    images = {p.id: png((10 * i, 90, 160), (64, 48)) for i, p in enumerate(pairs)}
    write_output(tmp_path / "bucket" / "out", pairs, stats, images)
    path = build_report("urltestfs://bucket/out")
    assert path == "urltestfs://bucket/out/report.html"
    soup = BeautifulSoup(
        (tmp_path / "bucket" / "out" / "report.html").read_text(encoding="utf-8"), "html.parser"
    )
    figures = soup.select('div.source[data-source="wit"] figure.sample')
    assert [f["data-id"] for f in figures] == sorted(p.id for p in pairs)
    assert all(f.img["src"].startswith("data:image/jpeg;base64,") for f in figures)
    assert soup.select_one('[data-stat="wit.kept"]').get_text() == "3"


def test_a_plot_drawn_again_gives_the_same_svg():
    """matplotlib names clip paths by a hash of the clip path's memory address: the same plot
    drawn in new figures gets new ids unless they are renumbered (the report once differed
    between two renders of one output this way)."""
    from matplotlib.figure import Figure

    def draw() -> str:
        fig = Figure(figsize=(3, 2))
        ax = fig.subplots()
        ax.bar(["a", "b", "c"], [3, 1, 2])  # bars inside axes: clipped by a path
        ax.pie([1, 2, 3])
        return svg_data_uri(fig)

    drawn = {draw() for _ in range(6)}
    assert len(drawn) == 1
    svg = base64.b64decode(drawn.pop().split(",", 1)[1]).decode("utf-8")
    assert 'clip-path="url(#clip0)"' in svg


# ---------------------------------------------------------------------------- scores


def test_without_scoring_the_scores_section_says_it_was_off(demo):
    section = demo.soup.select_one("section#scores")
    assert "Scoring was off" in section.get_text()
    assert not section.select("img, [data-stat], figure")


SCORED_ARABIC = [
    "سوق الحميدية القديم في مدينة دمشق",
    "نهر النيل عند الغروب",
    "قلعة حلب فوق التل",
    # No tag to the text filters, but markup to a browser: unescaped, it would hide the rest.
    'جامع الأزهر <!-- <3 & "في" القاهرة',
]
SCORED_ENGLISH = {
    "A bird sitting on a branch": "طائر يجلس على غصن",
    "A small boat on a calm sea": "قارب صغير على بحر هادئ",
    "A cat sleeping on a sofa": "قطة نائمة على أريكة",
}


@pytest.fixture(scope="module")
def scored(tmp_path_factory, siglip_model) -> Built:
    from cli_runs import memory
    from image_samples import jpeg

    tmp_path = tmp_path_factory.mktemp("scored")
    (tmp_path / "images").mkdir()
    lines = {"ar": "path\tcaption\n", "en": "path\tcaption\n"}
    captions = [("ar", c) for c in SCORED_ARABIC] + [("en", c) for c in SCORED_ENGLISH]
    for i, (language, caption) in enumerate(captions):
        (tmp_path / "images" / f"{i}.jpg").write_bytes(jpeg(96, 64, seed=i))
        lines[language] += f"{i}.jpg\t{caption}\n"
    for language, text in lines.items():
        (tmp_path / f"{language}.tsv").write_text(text, encoding="utf-8")
    memory(tmp_path, SCORED_ENGLISH)
    shutil.copytree(siglip_model, tmp_path / "models" / "clip")
    manifest = write_manifest(
        tmp_path,
        "name: scored\nsources:\n"
        "  - kind: pairs\n    paths: [ar.tsv]\n    language: ar\n    image_root: images\n"
        "  - kind: pairs\n    paths: [en.tsv]\n    language: en\n    image_root: images\n"
        "translation: {memory: memory.tsv}\n"
        "scoring: {model: models/clip, device: cpu, batch_size: 8}\n"
        "filters:\n  langid_min_score: 0\n  langid_labels: [ar, arz, fa, ur]\n"
        "  min_clip_score: -1\n  keep_top: {clip_score: 1.0}\n",
    )
    assert main(["run", str(manifest), "--output", str(tmp_path / "out")]) == 0
    return report_of(tmp_path / "out")


def test_the_scores_are_shown_against_their_mismatched_baselines(scored):
    assert_numbers_equal_stats(scored)  # the summaries of `scores` included
    section = scored.soup.select_one("section#scores")
    for name, summaries in scored.stats["scores"].items():
        for summary in summaries:
            if summaries[summary]["count"]:
                cell = section.select_one(f'[data-stat="scores.{name}.{summary}.count"]')
                assert int(cell.get_text()) == summaries[summary]["count"]
    # One plot per score: a panel per source, its pairs against the mismatched pairs.
    plots = section.select("img.plot")
    assert [p["alt"] for p in plots] == [
        "clip_score against mismatched",
        "translation_similarity against mismatched",
    ]
    for plot in plots:
        svg = base64.b64decode(plot["src"].split(",", 1)[1]).decode("utf-8")
        assert "<text" not in svg and not ARABIC.search(svg)


def test_the_lowest_scoring_kept_pairs_are_shown_with_their_score_escaped(scored):
    section = scored.soup.select_one("section#scores")
    assert not scored.soup.find_all("script")
    for score in ("clip_score", "translation_similarity"):
        for name in scored.stats["sources"]:
            mine = [r for r in scored.rows if r["source_name"] == name and r[score] is not None]
            lowest = sorted(mine, key=lambda r: (r[score], r["id"]))[:8]
            block = section.select_one(f'div.lowest[data-source="{name}"][data-score="{score}"]')
            figures = block.select("figure.sample")
            assert [f["data-id"] for f in figures] == [r["id"] for r in lowest]
            for figure, row in zip(figures, lowest, strict=True):
                facts = {
                    dt.get_text(): dt.find_next_sibling("dd").get_text() for dt in figure("dt")
                }
                assert facts[score] == f"{row[score]:.4f}"
                assert figure.select_one('p[dir="rtl"]').get_text() == row["caption_ar"]
                assert figure.img["src"].startswith("data:image/jpeg;base64,")
            if not lowest:  # genuine captions have no translation_similarity
                assert block.select_one("p.empty").get_text() == "No kept pair has this score."
    (markup,) = [r["caption_ar"] for r in scored.rows if "<!--" in r["caption_ar"]]
    assert markup in section.get_text()  # shown as text
    assert "جامع الأزهر &lt;!-- &lt;3 &amp; &quot;في&quot; القاهرة" in scored.html
    assert "<!--" not in scored.html
