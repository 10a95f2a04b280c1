"""`python -m pipeline estimate`: the cost table of manifests/full.yaml recomputed by hand from
pipeline/figures.json, the demo's inputs counted, one-source manifests, and the CLI's exits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.__main__ import main
from pipeline.estimate import (
    ASSUMPTIONS,
    FIGURES_PATH,
    EstimateError,
    estimate,
    estimate_json,
    format_bytes,
    format_estimate,
    format_hours,
    load_figures,
    model_shape,
)
from pipeline.manifest import ManifestError, load_manifest

REPO = Path(__file__).resolve().parents[2]
FULL = REPO / "manifests" / "full.yaml"
DEMO = REPO / "manifests" / "demo.yaml"
USER_AGENT = "arabic-pairs/0.1 (https://example.org; you@example.org)"
# The ten WIT training shards' rows: nine counted by robvanvolt/DALLE-datasets, the tenth their
# mean (3,704,683).
WIT_ROWS = 3708026 + 3702075 + 3701785 + 3706924 + 3701161 + 3708106 + 3704684 + 3703736
WIT_ROWS += 3705646 + 3704683


def run_estimate(path: Path, workers: int = 32, count_limit: int = 0, **kw):
    manifest = load_manifest(str(path), check_paths=False)
    return estimate(manifest, load_figures(), workers, count_limit, **kw)


def write_manifest(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "m.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def by_name(items, attr: str) -> dict:
    return {getattr(i, attr): i for i in items}


# ---------------------------------------------------------------------------- manifests/full.yaml


def test_full_manifest_sources_come_from_the_real_sources_table():
    est = run_estimate(FULL)
    rows = {s.name: (s.basis, s.read, s.kept, s.translated, s.input_bytes) for s in est.sources}
    assert rows == {
        "wikipedia": ("table", 2_500_000, 151_252, 0, 0),
        "wit": ("table", WIT_ROWS, 109_366, 0, 10 * 2_500_000_000),
        "conceptual_captions": ("table", 3_318_333, 1_427_210, 3_318_333, 500_000_000),
        "coco": ("table", 414_113, 414_113, 414_113, 241_000_000),
        "flickr8k": ("table", 40_460, 40_455, 40_460, 3_000_000 + 1_000_000_000),
    }
    assert est.kept == 151_252 + 109_366 + 1_427_210 + 414_113 + 40_455


def test_full_manifest_translation_and_crawl_recomputed_by_hand_from_figures_json():
    figures = json.loads(FIGURES_PATH.read_text(encoding="utf-8"))["figures"]
    beam4 = figures["translate_beam4_sent_per_s"]
    # The full manifest translates with opus-mt-tc-big-en-ar: the base shape's rate (15.6
    # captions/s on 2 cores) times the measured tc-big / base ratio.
    per_core = beam4["value"] / beam4["cores"] * figures["translate_tc_big_vs_base_beam4"]["value"]
    captions = 3_318_333 + 414_113 + 40_460
    est = run_estimate(FULL, workers=32)
    stages = by_name(est.stages, "stage")

    translate = stages["translate"]
    assert translate.records == captions
    assert translate.cpu_hours == pytest.approx(captions / per_core / 3600)
    assert translate.cpu_hours == pytest.approx(302.7198, abs=1e-4)
    gpu_per_s = per_core * 8 * 5320.3 / 1486.5  # the T4 / 8-thread ratio of CTranslate2's README
    assert translate.gpu_hours == pytest.approx(captions / gpu_per_s / 3600)
    assert translate.wall_hours(32) == pytest.approx(captions / per_core / 3600 / 32)

    # The crawl: 1.25M pages, 1.31 requests each, 5 requests/s, serial whatever the workers.
    crawl = stages["crawl"]
    rpp = figures["wikipedia_requests_per_page"]["value"]
    assert crawl.floor_hours == pytest.approx(1_250_000 * rpp / 5 / 3600)
    assert crawl.cpu_hours == pytest.approx(
        1_250_000 / figures["wikipedia_extract_pages_per_s"]["value"] / 3600
    )
    assert est.wall_hours == pytest.approx(1_250_000 * 1.31 / 5 / 3600)  # 91 h: the crawl

    images = stages["images"]
    fetched = 2_500_000 * 151_252 / 2_500_000 + 109_366 + 3_318_333 + 414_113 + 40_455
    assert images.records == round(fetched)
    assert images.cpu_hours == pytest.approx(fetched / (249.0 / 2) / 3600)
    # Wikipedia and WIT images are 330 px thumbnails on upload.wikimedia.org: 330 x 247.5 px
    # at 80 KB per 640 x 480; CC's and COCO's their hosts' averages.
    thumb = 80_000 / (640 * 480) * 330 * 330 * 3 / 4
    wikimedia_bytes = round(151_252 * thumb) + round(109_366 * thumb)
    assert images.download_bytes == (wikimedia_bytes + 1_427_210 * 294_000 + 414_113 * 157_000)
    # ... fetched within Wikimedia's limits: at most 2 in flight at 0.25 s a request, 25 Mbps.
    wikimedia_images = 151_252 + 109_366
    assert images.floor_hours == pytest.approx(
        max(wikimedia_images * 0.25 / 2, wikimedia_bytes / 3_125_000) / 3600
    )
    assert any(n.startswith("upload.wikimedia.org: 260,618 images") for n in est.notes)
    assert (
        stages["read"].download_bytes == 25_000_000_000 + 500_000_000 + 241_000_000 + 1_003_000_000
    )
    assert stages["write"].output_bytes == est.kept * (25_000 + 600)
    assert stages["write"].cpu_hours is None


def test_the_table_and_the_json_line_agree():
    est = run_estimate(FULL, workers=8)
    table = format_estimate(est)
    data = estimate_json(est)
    assert table.startswith("estimate: ") and "8 workers (cores), 1 Gbit/s" in table
    assert [line.split()[0] for line in table.splitlines()[10:18]] == [
        "read", "crawl", "langid", "translate", "images", "dedupe", "write", "total",
    ]  # fmt: skip
    assert f"kept {est.kept:,}" in table
    assert "3.8 days" in table  # the crawl's floor
    assert data["total"]["kept"] == est.kept
    assert data["total"]["cpu_hours"] == pytest.approx(est.cpu_hours)
    # Every figure measured by its benchmark but the GPU's scoring figure, measured on an H200
    # by a reduced script until `benchmarks/clip_gpu.sh` runs there.
    assert data["provisional"] == []
    assert data["assumptions"]["gpu_speedup_over_8_cores"]["value"] == pytest.approx(3.57908, 1e-5)
    assert data["profiles"]["conceptual_captions"]["survival"] == 1_427_210 / 3_318_333
    assert set(data["assumptions"]) == set(ASSUMPTIONS)


def test_the_full_manifest_needs_its_inputs_to_run_but_not_to_be_estimated():
    with pytest.raises(ManifestError, match=r"^sources\[1\]\.paths\[0\]: no file matches"):
        load_manifest(str(FULL))
    manifest = load_manifest(str(FULL), check_paths=False)
    assert manifest.sources[1].paths == (str(REPO / "data/wit/wit_v1.train.all-*-of-00010.tsv.gz"),)
    assert manifest.translation.model == str(REPO / "models" / "opus-mt-tc-big-en-ar-ct2")
    assert manifest.translation.source_prefix == ">>ara<<"
    assert (manifest.images.size, manifest.output.rows_per_shard) == (256, 10000)


# ---------------------------------------------------------------------------- counted inputs


def test_the_demo_inputs_exist_and_are_counted_as_a_run_counts_them():
    est = run_estimate(DEMO, workers=2, count_limit=10_000_000)
    rows = {s.name: (s.basis, s.read, s.input_bytes) for s in est.sources}
    # `read` as README's demo accounting prints it; the stand-in wiki's size is not knowable.
    assert rows == {
        "wikipedia": ("unknown", 0, 0),
        "wit": ("counted", 49, 0),
        "conceptual_captions": ("counted", 16, 0),
        "coco": ("counted", 21, 0),
        "flickr8k": ("counted", 25, 0),
    }
    assert any("wiki.invalid" in n and "unknown" in n for n in est.notes)
    # No model in the demo manifest: only its memory translates.
    assert by_name(est.stages, "stage")["translate"].records == 0


def test_a_local_file_over_the_count_limit_is_taken_from_the_table_by_its_name(tmp_path):
    cc = tmp_path / "Train_GCC-training.tsv"
    cc.write_text("a dog .\thttp://example.org/1.jpg\n", encoding="utf-8")
    source = "sources:\n  - kind: conceptual_captions\n    paths: [{}]\n"
    path = write_manifest(tmp_path, source.format("Train_GCC-training.tsv"))
    counted = run_estimate(path, count_limit=1000).sources[0]
    assert (counted.basis, counted.read, counted.input_bytes) == ("counted", 1, 0)
    tabled = run_estimate(path, count_limit=0).sources[0]
    assert (tabled.basis, tabled.read, tabled.input_bytes) == ("table", 3_318_333, 0)

    cc.rename(tmp_path / "mine.tsv")
    mine = write_manifest(tmp_path, source.format("mine.tsv"))
    with pytest.raises(EstimateError, match=r"^sources\[0\]\.paths\[0\]: 'mine.tsv' is not a file"):
        run_estimate(mine, count_limit=0)


def test_the_real_flickr8k_token_file_counts_what_the_table_says(shared_samples, tmp_path):
    token = shared_samples / "Flickr8k.token.pristine.txt"
    path = write_manifest(
        tmp_path,
        f"sources:\n  - kind: flickr8k\n    captions: {token}\n    images: {tmp_path}/none\n",
    )
    src = run_estimate(path, count_limit=10_000_000).sources[0]
    # Counted through the reader; the image archive is still to download.
    assert (src.basis, src.read, src.kept, src.input_bytes) == ("counted", 40_460, 40_455, 10**9)


# ---------------------------------------------------------------------------- one source


def test_a_manifest_of_two_wit_shards(tmp_path):
    path = write_manifest(
        tmp_path,
        "sources:\n  - kind: wit\n    paths: ['wit/wit_v1.train.all-0000[01]-of-00010.tsv.gz']\n"
        "images:\n  fetch: false\n",
    )
    est = run_estimate(path, workers=4)
    [wit] = est.sources
    assert (wit.read, wit.input_bytes, wit.largest_file_rows) == (7_410_101, 5 * 10**9, 3_708_026)
    stages = by_name(est.stages, "stage")
    assert stages["read"].cpu_hours == pytest.approx(7_410_101 * 0.0121 / 1e6)
    # Without images: no downloads of them, and rows of 600 bytes.
    assert (stages["images"].records, stages["images"].download_bytes) == (0, 0)
    assert stages["write"].output_bytes == wit.kept * 600
    # One worker reads a shard: the largest one is the read's floor (2.7 minutes) ...
    assert stages["read"].floor_hours == pytest.approx(3_708_026 * 0.0121 / 1e6)
    # ... unless the link is slower: 5 GB at 0.1 Gbit/s take 400 s.
    slow = run_estimate(path, bandwidth_gbps=0.1)
    assert slow.wall_hours == pytest.approx(5e9 * 8 / 0.1e9 / 3600)
    # Written as WebDataset tars, a sample's headers and uncompressed JSON take more.
    tars = write_manifest(
        tmp_path,
        path.read_text(encoding="utf-8") + "output:\n  format: webdataset\n",
    )
    [written] = [s for s in run_estimate(tars, workers=4).stages if s.stage == "write"]
    assert written.output_bytes == wit.kept * 3_500


def test_own_pairs_with_local_images_download_none_and_go_through_language_id(tmp_path):
    (tmp_path / "photos").mkdir()
    rows = "".join(f"{n}.jpg\tصورة رقم {n}\n" for n in range(40))
    (tmp_path / "mine.tsv").write_text("path\tcaption\n" + rows, encoding="utf-8")
    local = write_manifest(
        tmp_path,
        "sources:\n  - kind: pairs\n    paths: [mine.tsv]\n    language: ar\n"
        "    image_root: photos\n",
    )
    [own] = run_estimate(local, count_limit=10**6).sources
    assert (own.read, own.translated, own.image_bytes) == (40, 0, 0)
    stages = by_name(run_estimate(local, count_limit=10**6).stages, "stage")
    assert stages["langid"].records == 40  # genuine Arabic is checked too
    assert stages["translate"].records == 0
    # By URL, the same rows are downloads.
    (tmp_path / "urls.tsv").write_text(
        "url\tcaption\n" + "".join(f"https://x.org/{n}.jpg\tصورة {n}\n" for n in range(40)),
        encoding="utf-8",
    )
    web = write_manifest(
        tmp_path, "sources:\n  - kind: pairs\n    paths: [urls.tsv]\n    language: ar\n"
    )
    [fetched] = run_estimate(web, count_limit=10**6).sources
    assert fetched.fetched == 40 and fetched.image_bytes > 0


def test_a_crawl_of_a_limited_number_of_pages(tmp_path):
    path = write_manifest(
        tmp_path,
        f"sources:\n  - kind: wikipedia\n    api: https://ar.wikipedia.org/w/api.php\n"
        f"    user_agent: '{USER_AGENT}'\n    limit: 1000\n    requests_per_second: 2\n"
        "translation:\n  beam_size: 1\n",
    )
    [wiki] = run_estimate(path).sources
    assert (wiki.basis, wiki.pages, wiki.read, wiki.kept) == ("limit", 1000, 2000, 121)
    crawl = by_name(run_estimate(path).stages, "stage")["crawl"]
    assert crawl.floor_hours == pytest.approx(1000 * 1.31 / 2 / 3600)


# ---------------------------------------------------------------------------- scoring

SHARDS = "paths: ['wit/wit_v1.train.all-0000[01]-of-00010.tsv.gz']\n"
SCORING = "scoring:\n  model: models/xlm-roberta-base-ViT-B-32-onnx\n"


def test_a_scoring_section_adds_its_stage_recomputed_by_hand_from_figures_json(tmp_path):
    figures = json.loads(FIGURES_PATH.read_text(encoding="utf-8"))["figures"]
    cpu, gpu = figures["clip_pairs_per_s"], figures["clip_gpu_pairs_per_s"]
    reads = figures["clip_reads_pairs_per_s"]
    plain = run_estimate(write_manifest(tmp_path, f"sources:\n  - kind: wit\n    {SHARDS}"))
    assert "scoring" not in by_name(plain.stages, "stage")

    path = write_manifest(tmp_path, f"sources:\n  - kind: wit\n    {SHARDS}{SCORING}")
    est = run_estimate(path, workers=4)
    assert [s.stage for s in est.stages][-3:] == ["dedupe", "scoring", "write"]
    scoring = by_name(est.stages, "stage")["scoring"]
    # Every kept pair is scored, after dedupe: on CPU at the benchmark's rate per core, or on
    # one GPU at its measured rate.
    assert scoring.records == est.kept == plain.kept
    assert scoring.cpu_hours == pytest.approx(est.kept / (cpu["value"] / cpu["cores"]) / 3600)
    assert scoring.gpu_hours == pytest.approx(est.kept / gpu["value"] / 3600)
    assert est.cpu_hours == pytest.approx(plain.cpu_hours + scoring.cpu_hours)
    assert est.gpu_hours == pytest.approx(plain.gpu_hours + scoring.gpu_hours)
    table = format_estimate(est)
    assert any(line.split()[0] == "scoring" for line in table.splitlines()[8:])
    # The decoding and tokenization that feed the GPU stay on CPU cores.
    feeding = est.kept / (reads["value"] / reads["cores"]) / 3600
    cores = gpu["value"] / (reads["value"] / reads["cores"])
    assert (
        f"on one {gpu['device']} its towers take {format_hours(scoring.gpu_hours)} GPU-hours "
        f"instead, fed by {format_hours(feeding)} CPU-hours of image decoding and tokenization "
        f"(about {cores:.0f} cores keep one GPU busy)." in table
    )
    assert estimate_json(est)["stages"][-2]["stage"] == "scoring"


def test_without_a_gpu_figure_the_scoring_gpu_hours_are_an_assumption(tmp_path):
    raw = json.loads(FIGURES_PATH.read_text(encoding="utf-8"))
    del raw["figures"]["clip_gpu_pairs_per_s"]
    path = tmp_path / "figures.json"
    path.write_text(json.dumps(raw), encoding="utf-8")
    manifest = write_manifest(tmp_path, f"sources:\n  - kind: wit\n    {SHARDS}{SCORING}")
    est = estimate(load_manifest(str(manifest), check_paths=False), load_figures(path), 4, 0)
    scoring = by_name(est.stages, "stage")["scoring"]
    cpu = raw["figures"]["clip_pairs_per_s"]
    per_core = cpu["value"] / cpu["cores"]
    # The translation's assumption: a GPU does what 8 cores do, times 5320.3 / 1486.5.
    assert scoring.gpu_hours == pytest.approx(est.kept / (per_core * 8 * 5320.3 / 1486.5) / 3600)
    assert any("gpu_speedup_over_8_cores" in note for note in est.notes)
    assert "GPU-hours instead (an assumption: the translation's GPU / 8-core ratio)." in (
        format_estimate(est)
    )

    raw["figures"]["clip_gpu_pairs_per_s"] = {"value": "fast"}
    path.write_text(json.dumps(raw), encoding="utf-8")
    with pytest.raises(EstimateError, match=r"figures\.clip_gpu_pairs_per_s\.value: expected a"):
        load_figures(path)


# ---------------------------------------------------------------------------- the command


def test_the_command_prints_the_table_then_one_json_line(capsys):
    assert main(["estimate", str(FULL), "--workers", "16", "--count-limit", "0"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"estimate: {FULL} (arabic-pairs-full), 16 workers")
    data = json.loads(out[-1])
    assert data["workers"] == 16
    assert data["total"]["kept"] == 2_142_396


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workers", "0"], "error: --workers: must be at least 1, got 0"),
        (["--bandwidth", "0"], "error: --bandwidth: must be positive, got 0.0"),
        (["--figures", "nowhere.json"], "error: nowhere.json: cannot read the benchmark figures"),
    ],
)
def test_bad_options_exit_2_with_one_line(args, message, capsys):
    assert main(["estimate", str(FULL), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1


def test_a_bad_manifest_exits_2_naming_the_key(tmp_path, capsys):
    path = write_manifest(tmp_path, "sources:\n  - kind: wit\n    pathz: [x.tsv]\n")
    assert main(["estimate", str(path)]) == 2
    assert capsys.readouterr().err == (
        "error: sources[0].pathz: unknown key (did you mean 'paths'?)\n"
        "error: sources[0].paths: missing\n"
    )
    path = write_manifest(tmp_path, "sources:\n  - kind: wit\n    paths: [wit/x-*.tsv]\n")
    assert main(["estimate", str(path)]) == 2
    assert capsys.readouterr().err.startswith("error: sources[0].paths[0]: no local file matches")


def test_figures_missing_a_value_are_refused(tmp_path):
    figures = json.loads(FIGURES_PATH.read_text(encoding="utf-8"))
    figures["figures"]["images_per_s"]["value"] = "fast"
    bad = tmp_path / "figures.json"
    bad.write_text(json.dumps(figures), encoding="utf-8")
    with pytest.raises(EstimateError, match=r"figures\.images_per_s\.value: expected a positive"):
        load_figures(bad)


def test_beam_options_are_refused():
    with pytest.raises(SystemExit) as exit_:
        main(["estimate", str(FULL), "--runner", "DirectRunner"])
    assert exit_.value.code == 2


def test_the_memory_of_a_local_run_grows_with_the_pairs_that_reach_the_images(tmp_path):
    figures = load_figures()
    per_pair = figures.value("local_rss_kb_per_pair") * 1024
    base = figures.value("local_rss_base_mb") * 2**20
    shards = "paths: ['wit/wit_v1.train.all-0000[01]-of-00010.tsv.gz']\n"
    fetched = run_estimate(write_manifest(tmp_path, f"sources:\n  - kind: wit\n    {shards}"))
    [wit] = fetched.sources
    assert fetched.pairs_in_flight == wit.fetched > 0
    assert fetched.local_memory_bytes == round(base + per_pair * wit.fetched)
    # Without images the kept pairs are what the graph holds.
    text = f"sources:\n  - kind: wit\n    {shards}images:\n  fetch: false\n"
    url_only = run_estimate(write_manifest(tmp_path, text))
    assert url_only.pairs_in_flight == url_only.sources[0].kept

    # The full build: printed in the table and given in the JSON line.
    full = run_estimate(FULL)
    assert f"about {format_bytes(full.local_memory_bytes)} at its peak" in format_estimate(full)
    data = estimate_json(full)["total"]
    assert data["local_memory_bytes"] == full.local_memory_bytes > 10 * 2**30
    # Every pair whose image is fetched is held, also those whose image then fails (CC's dead
    # links): more than the kept pairs.
    assert data["pairs_in_flight"] == full.pairs_in_flight > full.kept


def test_wit_downloads_are_the_thumbnails_fetched_or_the_originals_without_them(tmp_path):
    """A WIT image is its 330 px thumbnail by default, a 960 px one with `size: 960`, and the
    original (2 MB on average) with `thumb_width: null`: what a run would download."""
    shard = "wit_v1.train.all-00000-of-00010.tsv.gz"
    downloads = {}
    for images in ("{}", "{size: 960}", "{thumb_width: null}"):
        path = write_manifest(
            tmp_path, f"sources:\n  - kind: wit\n    paths: [{shard}]\nimages: {images}\n"
        )
        [wit] = run_estimate(path).sources
        downloads[images] = wit.image_bytes / wit.kept
    per_pixel = 80_000 / (640 * 480)
    assert downloads["{}"] == pytest.approx(per_pixel * 330 * 330 * 3 / 4, rel=1e-3)
    assert downloads["{size: 960}"] == pytest.approx(per_pixel * 960 * 960 * 3 / 4, rel=1e-3)
    assert downloads["{thumb_width: null}"] == pytest.approx(2_000_000, rel=1e-3)


def test_estimate_works_from_the_built_wheel(tmp_path):
    """The figures `estimate` reads are package data: a normal install (the wheel, not this
    checkout) can run `arabic-pairs estimate`."""
    import subprocess
    import sys
    import zipfile

    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
        capture_output=True,
        text=True,
    )
    if built.returncode != 0:
        pytest.skip(f"the wheel cannot be built here (no build backend): {built.stderr[-300:]}")
    [wheel] = tmp_path.glob("arabic_pairs-*.whl")
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    assert (site / "pipeline" / "figures.json").is_file()
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import pipeline;"
        "assert pipeline.__file__.startswith(sys.argv[1]), pipeline.__file__;"
        "from pipeline.__main__ import main; sys.exit(main(['estimate', sys.argv[2]]))"
    )
    ran = subprocess.run(
        [sys.executable, "-c", code, str(site), str(FULL)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert json.loads(ran.stdout.strip().splitlines()[-1])["figures"].startswith(str(site))


def test_the_image_cache_is_counted_apart_from_the_output(tmp_path, cache_home, capsys):
    shards = "paths: ['wit/wit_v1.train.all-0000[01]-of-00010.tsv.gz']\n"
    path = write_manifest(tmp_path, f"sources:\n  - kind: wit\n    {shards}")
    assert main(["estimate", str(path), "--count-limit", "0"]) == 0
    out = capsys.readouterr().out.splitlines()
    data = json.loads(out[-1])
    kept = data["total"]["kept"]
    stored = kept * 25_000  # stored_image_bytes a kept pair
    folder = str(cache_home / "arabic-pairs" / "images")
    # The default cache: outside every output folder, so the output figure does not hold it.
    assert data["image_cache"] == {"folder": folder, "bytes": stored, "in_output": False}
    assert data["total"]["output_bytes"] == kept * (25_000 + 600)
    assert (
        f"Image cache: about {format_bytes(stored)} of stored images in {folder}, kept for later "
        f"runs, outside the output folder: not part of the {format_bytes(kept * 25_600)} of "
        "output" in "\n".join(out)
    )

    # An output on an object store has no cache: the store is in its staging folder.
    assert main(["estimate", str(path), "--count-limit", "0", "--output", "gs://b/out"]) == 0
    out = capsys.readouterr().out.splitlines()
    data = json.loads(out[-1])
    assert data["image_cache"] == {"folder": None, "bytes": stored, "in_output": True}
    assert data["total"]["output_bytes"] == kept * (25_000 + 600)
    assert any(line.startswith("Image store: about ") for line in out)
    assert not any(line.startswith("Image cache:") for line in out)

    # A cache named inside the output folder is in it.
    named = write_manifest(
        tmp_path, f"sources:\n  - kind: wit\n    {shards}images:\n  cache: out/c\n"
    )
    est = run_estimate(named, output_dir=str(tmp_path / "out"))
    assert (est.image_cache, est.store_in_output) == (str(tmp_path / "out" / "c"), True)
    assert "inside the output folder" in format_estimate(est)
    assert not run_estimate(named, output_dir=str(tmp_path / "elsewhere")).store_in_output

    # Without images there is no store.
    url_only = run_estimate(
        write_manifest(tmp_path, f"sources:\n  - kind: wit\n    {shards}images:\n  fetch: false\n")
    )
    assert (url_only.image_store_bytes, url_only.image_cache) == (0, None)
    assert estimate_json(url_only)["image_cache"]["bytes"] == 0
    assert "Image " not in format_estimate(url_only)


@pytest.mark.parametrize(
    ("folder", "shape"),
    [
        ("models/opus-mt-tc-big-en-ar-ct2", "tc_big"),
        ("gs://bucket/nllb-200-distilled-600M-ct2/", "nllb"),
        ("models/opus-mt-en-ar-ct2", "base"),
        (None, "base"),
    ],
)
def test_the_translation_rate_follows_the_models_shape(folder, shape):
    assert model_shape(folder) == shape
