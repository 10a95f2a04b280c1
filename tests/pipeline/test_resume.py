"""Reproducible, resumable runs: a run killed midway and started again into the same folder ends
with the uninterrupted run's output, reusing what the killed run finished; the image cache, the
commit of the output folder and the progress lines on their own.

The resumed run is the demo (`standins.demo`'s image host, MediaWiki stand-in and manifest) built
twice in this process and once in a subprocess that is killed with SIGKILL while it fetches
images: the image host answers a set number of its requests and holds the rest, so the kill
always lands in the middle of the images stage, after some images were cached.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from image_samples import jpeg
from records_of import image_pair

from pipeline import progress
from pipeline.__main__ import main
from pipeline.hosts import HostGates
from pipeline.images.cache import cache_folder, default_cache_folder, image_store, resolve_cache
from pipeline.images.fetcher import ImageFetcher
from pipeline.manifest import ImagesConfig, ManifestError, parse_manifest
from pipeline.records import Drop, Pair
from pipeline.store import ImageStore
from pipeline.timings import comparable
from pipeline.write import _commit_by_file, commit
from standins.demo import WIKI_SAMPLES, DemoImageHost, demo_manifest
from standins.images import ImageHost, Reply
from standins.wiki import WikiStandIn

REPO = Path(__file__).resolve().parents[2]
LOOPBACK = ("127.0.0.1/32",)
WIT = {"kind": "wit", "paths": [str(REPO / "manifests" / "samples" / "wit" / "*.tsv")]}


# ---------------------------------------------------------------------------- the image cache


def fetch(config: ImagesConfig, url: str) -> tuple[Pair | Drop, tuple[int, int]]:
    """One pair fetched by a fetcher of its own (as a new run has) into the image cache of
    `config`, and its cache counts (hits, misses)."""
    store = image_store(config, "/nowhere/staging")
    assert store.reuse
    fetcher = ImageFetcher(config, store, LOOPBACK)
    writer = store.writer()
    try:
        result = fetcher.fetch(image_pair(1, url), writer)
        return result, fetcher.take_counts()
    finally:
        writer.close()
        fetcher.close()


def stored(config: ImagesConfig, result: Pair) -> bytes:
    return image_store(config, "/nowhere/staging").read(result.image_ref)


def test_a_cached_url_is_not_requested_again(tmp_path):
    with ImageHost() as server:
        server.route("/a.jpg", Reply(200, {"Content-Type": "image/jpeg"}, jpeg(400, 300)))
        url = server.url("/a.jpg")
        config = ImagesConfig(cache=str(tmp_path / "cache"))

        first, counts = fetch(config, url)
        assert counts == (0, 1) and server.hits("/a.jpg") == 1
        again, counts = fetch(config, url)
        assert counts == (1, 0) and server.hits("/a.jpg") == 1  # no request
        assert again == first  # the same reference (one copy), pHash, sha256, sizes
        assert (first.width, first.height, first.mime_type) == (256, 192, "image/jpeg")
        assert hashlib.sha256(stored(config, again)).hexdigest() == first.sha256

        # Other stored settings are another cache: never an image of the old size.
        smaller, counts = fetch(ImagesConfig(cache=str(tmp_path / "cache"), size=128), url)
        assert counts == (0, 1) and server.hits("/a.jpg") == 2
        assert (smaller.width, smaller.height) == (128, 96)

        # Drops are not cached: a 404 is asked again by the next run.
        for _ in range(2):
            dead, counts = fetch(config, server.url("/dead.jpg"))
            assert dead.reason == "http_404" and counts == (0, 1)
        assert server.hits("/dead.jpg") == 2

        # A record that does not read back whole (a run killed while writing it) is a miss,
        # and is written again, into a new pack.
        packs = sorted((tmp_path / "cache").rglob("*.pack"))
        assert len(packs) == 2 and all(p.parent.name == "packs" for p in packs)
        for pack in packs:
            pack.write_bytes(pack.read_bytes()[:-10])
        repaired, counts = fetch(config, url)
        assert counts == (0, 1) and server.hits("/a.jpg") == 3
        assert repaired._replace(image_ref=None) == first._replace(image_ref=None)
        assert repaired.image_ref != first.image_ref
        assert fetch(config, url) == (repaired, (1, 0))

        # A record whose bytes were damaged in place is a miss too, never a wrong image.
        pack = next(p for p in (tmp_path / "cache").rglob("*.pack") if p not in packs)
        data = bytearray(pack.read_bytes())
        data[-1] ^= 0xFF
        pack.write_bytes(bytes(data))
        assert fetch(config, url)[1] == (0, 1)


def test_the_cache_key_is_the_url_not_the_mirror_it_was_fetched_from(tmp_path):
    with ImageHost() as server:
        server.route("/x/a.jpg", Reply(200, {"Content-Type": "image/jpeg"}, jpeg(300, 300)))
        original = "https://upload.wikimedia.org/x/a.jpg"
        cache = str(tmp_path / "cache")
        mirror = ((original.rsplit("x/", 1)[0], server.url("/")),)
        first, counts = fetch(ImagesConfig(cache=cache, url_map=mirror), original)
        assert counts == (0, 1) and first.image_url == original
    # The mirror is gone (the demo's host gets a new port each run): the cache still answers.
    gone = ((mirror[0][0], "http://127.0.0.1:9/"),)
    again, counts = fetch(ImagesConfig(cache=cache, url_map=gone), original)
    assert counts == (1, 0) and again == first


def test_a_local_file_is_found_again_until_it_changes(tmp_path):
    photo = tmp_path / "flickr" / "a.jpg"
    photo.parent.mkdir()
    photo.write_bytes(jpeg(300, 200, seed=1))
    config = ImagesConfig(cache=str(tmp_path / "cache"))
    store = image_store(config, str(tmp_path / "staging"))

    def load() -> tuple[Pair, tuple[int, int]]:
        fetcher = ImageFetcher(config, store)
        writer = store.writer()
        try:
            return fetcher.fetch(image_pair(1, path=str(photo)), writer), fetcher.take_counts()
        finally:
            writer.close()

    first, counts = load()
    assert counts == (0, 1)
    assert load() == (first, (1, 0))
    photo.write_bytes(jpeg(300, 200, seed=2))  # edited in place: size or time differs
    os.utime(photo, ns=(1, 1))
    changed, counts = load()
    assert counts == (0, 1) and changed.phash != first.phash


def test_the_store_of_a_run_is_the_cache_or_lives_in_its_staging_folder(tmp_path, cache_home):
    out = tmp_path / "out"
    shared = str(cache_home / "arabic-pairs" / "images")
    # `auto`: one folder outside the output, the same for every local output folder.
    assert resolve_cache(ImagesConfig(), str(out)).cache == shared
    assert resolve_cache(ImagesConfig(), "elsewhere/out").cache == shared
    assert resolve_cache(ImagesConfig(), "gs://bucket/out").cache is False
    assert resolve_cache(ImagesConfig(cache="/elsewhere"), str(out)).cache == "/elsewhere"
    assert resolve_cache(ImagesConfig(cache=False), str(out)).cache is False
    staging = str(out / ".incoming-run")
    store = image_store(ImagesConfig(cache=False), staging)
    assert not store.reuse and store.root == os.path.join(staging, "images")
    cached = image_store(ImagesConfig(cache="/elsewhere"), staging)
    assert cached.reuse and os.path.dirname(cached.root) == "/elsewhere"
    remote = image_store(ImagesConfig(cache=False), "gs://bucket/out/.incoming-run")
    assert remote.root == "gs://bucket/out/.incoming-run/images"
    resolved = image_store(resolve_cache(ImagesConfig(), str(out)), staging)
    assert resolved.reuse and os.path.dirname(resolved.root) == shared


def test_without_xdg_cache_home_the_cache_is_under_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    under_home = str(tmp_path / "home" / ".cache" / "arabic-pairs" / "images")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_folder() == under_home
    # Empty or relative: not a cache home (the XDG base directory spec ignores them).
    for value in ("", "relative/cache"):
        monkeypatch.setenv("XDG_CACHE_HOME", value)
        assert resolve_cache(ImagesConfig(), str(tmp_path / "out")).cache == under_home


def test_an_unresolved_auto_cache_is_refused_not_quietly_off(tmp_path):
    """Only resolve_cache knows what `auto` is for a run; a store asked for before it ran must
    not be a run without the cache."""
    for cache in ("auto", True):
        config = ImagesConfig(cache=cache)
        with pytest.raises(ValueError, match=r"^images\.cache is .*resolve_cache"):
            image_store(config, str(tmp_path / ".incoming-run"))
        with pytest.raises(ValueError, match=r"resolve_cache"):
            cache_folder(config)
    assert cache_folder(ImagesConfig(cache=False)) is None
    assert cache_folder(ImagesConfig(cache="/elsewhere")) == "/elsewhere"
    assert not (tmp_path / ".incoming-run").exists()


@pytest.mark.parametrize(
    "value, cache",
    [("auto", "auto"), (True, "auto"), (False, False), ("c/img", "/m/c/img"), ("gs://b/c", None)],
)
def test_images_cache_in_the_manifest(value, cache):
    raw = {"sources": [WIT], "images": {"cache": value}}
    manifest = parse_manifest(raw, "/m")
    assert manifest.images.cache == (value if cache is None else cache)


def test_images_cache_must_be_auto_false_or_a_folder():
    raw = {"sources": [WIT], "images": {"cache": 3}}
    with pytest.raises(ManifestError, match=r"^images\.cache: expected text, got 3$"):
        parse_manifest(raw, "/m")


# ---------------------------------------------------------------------------- the commit


def staged_output(out: Path, run: str, shards: dict[str, bytes], stats: str) -> Path:
    staging = out / f".incoming-{run}"
    (staging / "data").mkdir(parents=True)
    for name, data in shards.items():
        (staging / "data" / name).write_bytes(data)
    (staging / "stats.json").write_text(stats)
    (staging / "README.md").write_text(f"card {stats}")
    return staging


def old_output(out: Path) -> None:
    (out / "data").mkdir(parents=True)
    for i in range(3):
        (out / "data" / f"train-{i:05d}-of-00003.parquet").write_bytes(b"old")
    (out / "data" / "notes.txt").write_text("mine")
    (out / "stats.json").write_text("old")
    (out / "README.md").write_text("card old")
    (out / "cache").mkdir()


def test_commit_swaps_the_whole_new_output_in_and_only_then_drops_the_old(tmp_path):
    out = tmp_path / "out"
    old_output(out)
    killed = staged_output(out, "killed", {"train-00000-of-00009.parquet": b"half"}, "x")
    staging = staged_output(
        out,
        "this",
        {"train-00000-of-00002.parquet": b"new0", "train-00001-of-00002.parquet": b"new1"},
        "new",
    )
    # Until the commit, the old output is whole: the run has written only beside it.
    assert len(list((out / "data").glob("train-*"))) == 3
    names = ["train-00000-of-00002.parquet", "train-00001-of-00002.parquet"]
    commit(str(out), str(staging), names)
    assert sorted(p.name for p in (out / "data").iterdir()) == sorted([*names, "notes.txt"])
    assert (out / "data" / names[1]).read_bytes() == b"new1"
    assert (out / "stats.json").read_text() == "new" and (
        out / "README.md"
    ).read_text() == "card new"
    assert not staging.exists() and not killed.exists()  # a killed run's staging goes too
    assert (out / "cache").is_dir()
    commit(str(out), str(staging), names)  # a retried bundle: nothing changes
    assert sorted(p.name for p in (out / "data").iterdir()) == sorted([*names, "notes.txt"])


def test_commit_file_by_file_as_on_an_object_store(tmp_path):
    # Object stores have no folder rename: `commit` moves file by file there. The same code
    # runs here on a local folder, through Beam's FileSystems.
    out = tmp_path / "out"
    old_output(out)
    staging = staged_output(out, "this", {"train-00000-of-00001.parquet": b"new"}, "new")
    names = ["train-00000-of-00001.parquet"]
    for _ in range(2):  # the second: a retried bundle
        _commit_by_file(str(out), str(staging), names)
        assert sorted(p.name for p in (out / "data").iterdir()) == sorted([*names, "notes.txt"])
        assert (out / "data" / names[0]).read_bytes() == b"new"
        assert (out / "stats.json").read_text() == "new"


# ---------------------------------------------------------------------------- progress


def test_progress_lines_say_done_rate_and_eta():
    line = progress.format_line("images", 250, 1000, "pairs", 10.0)
    assert line == "progress: images 250/1,000 pairs (25%), 25.0/s, ETA 0:00:30"
    assert progress.format_line("read", 1200, None, "pairs", 4.0) == (
        "progress: read 1,200 pairs, 300.0/s"
    )
    assert progress.format_line("write", 2, 2, "shards", 1.0, " (worker pid 7)") == (
        "progress (worker pid 7): write 2/2 shards (100%), 2.0/s"
    )


def test_reuse_lines_from_the_counters_of_a_run():
    counters = {
        ("images", "cache_hits"): 40,
        ("images", "cache_misses"): 2,
        ("translate", "unique_captions"): 55,
        ("translate", "memory_hits"): 52,
    }
    assert progress.reuse_lines(counters, "/c/arabic-pairs/images") == [
        "  image cache: hits 40, misses 2 (/c/arabic-pairs/images)",
        "  translation memory: hits 52, misses 3",
    ]
    assert progress.reuse_lines(counters, None) == ["  translation memory: hits 52, misses 3"]
    assert progress.reuse_lines({}, "/c/arabic-pairs/images") == []  # nothing asked, or no metrics
    assert progress.counter_totals(object()) == {}  # a runner without metrics


def test_progress_counts_only_while_started():
    progress.advance("images", 5, total=10)  # off: nothing kept, nothing printed
    stream = io.StringIO()
    progress.start(interval=3600, stream=stream)
    try:
        progress.advance("images", 3, total=10, unit="pairs")
        progress.advance("images", 4, total=10, unit="pairs")
        progress.advance("read", 12, unit="pairs")
    finally:
        progress.stop()
    lines = stream.getvalue().splitlines()
    assert [re.sub(r", [\d.,]+/s.*", "", line) for line in lines] == [
        "progress: images 7/10 pairs (70%)",
        "progress: read 12 pairs",
    ]
    assert os.environ.get(progress.PROGRESS_ENV) is None
    progress.advance("images", 1)
    assert stream.getvalue().splitlines() == lines


def test_a_stage_line_says_what_holds_it_back():
    """The images stage notes the hosts that pause or slow it (`HostGates.describe`)."""
    gates = HostGates((), per_host=4, pause=30.0, max_pause=60.0)
    gate = gates.get("busy.example")
    gate.release(gate.try_acquire(), throttled=True)
    gates.get("calm.example")
    note = gates.describe()
    assert re.fullmatch(r"busy\.example paused \d+s \(429/503\)", note), note
    stream = io.StringIO()
    progress.start(interval=3600, stream=stream)
    try:
        progress.advance("images", 3, total=10, unit="pairs")
        progress.note("images", note)
    finally:
        progress.stop()
    assert stream.getvalue().rstrip().endswith("; " + note)


# ---------------------------------------------------------------------------- a killed run


class HeldHost(DemoImageHost):
    """The demo's image host with a log of the paths asked, which can be told to answer only
    `limit` more requests and hold the rest until `release`."""

    def __init__(self):
        super().__init__()
        self.paths: list[str] = []
        self.limit: int | None = None
        self._gate = threading.Lock()
        self._released = threading.Event()

    def serve(self, request) -> None:
        with self._gate:
            self.paths.append(request.path)
            held = self.limit is not None and len(self.paths) > self.limit
        if held:
            request.close_connection = True
            self._released.wait(120)
            return
        super().serve(request)

    def hold_after(self, answered: int) -> None:
        with self._gate:
            self.paths.clear()
            self.limit = answered
            self._released.clear()

    def release(self) -> None:
        with self._gate:
            self.limit = None
            self.paths.clear()
        self._released.set()

    def stop(self) -> None:
        self.release()
        super().stop()


@pytest.fixture(scope="module")
def demo_build(tmp_path_factory):
    """The demo manifest with its hosts in this process: (manifest path, image host)."""
    from standins.tiny_model import build_tiny_model

    folder = tmp_path_factory.mktemp("demo")
    model = Path(build_tiny_model(str(folder / "tiny-opus-en-ar"), layout="opus"))
    host = HeldHost().start()
    wiki = WikiStandIn(WIKI_SAMPLES).start()
    try:
        manifest = folder / "demo.yaml"
        raw = demo_manifest(host.port, model, wiki.api_url)
        manifest.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
        yield manifest, host
    finally:
        wiki.stop()
        host.stop()


def build(manifest: Path, out: Path, capsys, *args: str) -> tuple[dict, str, str]:
    assert main(["run", str(manifest), "--output", str(out), *args]) == 0
    printed = capsys.readouterr()
    return json.loads((out / "stats.json").read_text(encoding="utf-8")), printed.out, printed.err


def reuse(printed: str, what: str) -> tuple[int, int]:
    match = re.search(rf"^  {what}: hits (\d+), misses (\d+)", printed, re.M)
    assert match, printed
    return int(match[1]), int(match[2])


def cache_entries(home: Path) -> int:
    """The whole records of downloaded images in the image cache under the cache home `home`
    (the default `images.cache: auto`)."""
    folders = (home / "arabic-pairs" / "images").glob("*")
    records = (r for folder in folders for r in ImageStore(str(folder)).records())
    return sum(1 for r in records if r.facts["key"].startswith("http"))


def kill_while_fetching(
    manifest: Path, out: Path, host: HeldHost, answered: int, home: Path
) -> int:
    """Runs the build in a subprocess whose image host answers `answered` requests, waits until
    their images are cached (the translations, written before the images are fetched, are on
    disk by then too), kills it with SIGKILL; returns the cache entries it left."""
    host.hold_after(answered)
    log = out.parent / f"{out.name}.log"
    with open(log, "wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "run", str(manifest), "--output", str(out)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline and proc.poll() is None:
                with host._lock:
                    answered_paths = host.paths[:answered]
                # One record per answered image: a WIT original and a crawl thumbnail of one
                # file are one request path twice (both fetch the 330 px thumbnail).
                expected = [p for p in answered_paths if "/dead/" not in p]
                translated = list((out / "translations").glob("*.parquet"))
                cached = cache_entries(home)
                if len(answered_paths) == answered and cached == len(expected) and translated:
                    break
                time.sleep(0.1)
            assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "the killed run never cached its images"
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    host.release()
    return cache_entries(home)


def rows(out: Path) -> list[dict]:
    table = pq.read_table(out / "data").to_pylist()
    return sorted(table, key=lambda r: r["id"])


def test_a_killed_run_started_again_ends_as_the_uninterrupted_run(
    demo_build, tmp_path, capsys, cache_home, monkeypatch
):
    manifest, host = demo_build
    whole = tmp_path / "whole"
    host.release()
    stats, printed, _ = build(manifest, whole, capsys)
    first_fetches = len(host.paths)
    # The same rows and stats as the demo built before the image store (images in the pairs).
    recorded = json.loads((Path(__file__).parent / "demo_rows.json").read_text(encoding="utf-8"))
    keys = ("id", "source_name", "caption_ar", "phash", "sha256")
    assert [[r[k] for k in keys] for r in rows(whole)] == recorded["rows"]
    shards = {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (whole / "data").iterdir()
    }
    assert shards == recorded["shards"]  # byte for byte
    # upload.wikimedia.org's stand-in allows 2 requests in flight: none was refused, no host
    # made the run wait, so stats.json has no `hosts`.
    assert comparable(stats) == recorded["stats"]
    cache_hits, cache_misses = reuse(printed, "image cache")
    memory_hits, memory_misses = reuse(printed, "translation memory")
    assert memory_misses == 3  # the three captions the shipped memory lacks: the tiny model's

    # The folder held an earlier build; the run into it is killed while fetching images. It
    # starts from a cache of its own: the shared one holds every image of the whole build.
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    for name in ("data", "README.md", "stats.json"):
        copy = shutil.copytree if name == "data" else shutil.copy
        copy(whole / name, resumed / name)
    resumed_home = tmp_path / "resumed-cache-home"
    monkeypatch.setenv("XDG_CACHE_HOME", str(resumed_home))  # the subprocess inherits it
    cached = kill_while_fetching(manifest, resumed, host, first_fetches // 2, resumed_home)
    assert 0 < cached < cache_entries(cache_home)
    # The earlier output is untouched by the killed run: a reader never saw a half dataset.
    assert rows(resumed) == rows(whole)
    assert json.loads((resumed / "stats.json").read_text(encoding="utf-8")) == stats  # as it was

    again, printed, err = build(manifest, resumed, capsys, "--progress")
    assert comparable(again) == comparable(stats)
    got, want = rows(resumed), rows(whole)
    assert len({r["id"] for r in got}) == len(got) == stats["kept"]  # no duplicates
    keys = ("id", "source", "caption_ar", "caption_en", "image_url", "phash", "sha256")
    assert [tuple(r[k] for k in keys) for r in got] == [tuple(r[k] for k in keys) for r in want]
    assert got == want  # every column, image bytes included
    names = sorted(p.name for p in (whole / "data").iterdir())
    assert sorted(p.name for p in (resumed / "data").iterdir()) == names
    for name in names:
        assert pq.read_table(resumed / "data" / name).equals(pq.read_table(whole / "data" / name))
    card = (whole / "README.md").read_text(encoding="utf-8")
    assert (resumed / "README.md").read_text(encoding="utf-8") == card
    assert not list(resumed.glob(".incoming-*"))
    # The caches are outside the output folders: these hold the dataset and its translations.
    for out in (whole, resumed):
        assert sorted(p.name for p in out.iterdir()) == [
            "LICENSE.md", "README.md", "data", "stats.json", "translations"
        ]  # fmt: skip

    # What the killed run finished was reused: its cached images were not fetched again.
    hits, misses = reuse(printed, "image cache")
    assert f"misses {misses} ({resumed_home / 'arabic-pairs' / 'images'})\n" in printed
    assert hits + misses == cache_hits + cache_misses  # the same lookups
    assert hits >= cached > 0
    # Only misses are requested (Flickr8K's local files that were not stored yet are misses
    # without a request).
    assert len(host.paths) <= misses and len(host.paths) < first_fetches
    assert len(host.paths) <= hits + misses - cached
    # The killed run's translations are this run's memory: nothing reached the model.
    assert reuse(printed, "translation memory") == (memory_hits + memory_misses, 0)

    # --progress: one line per stage, the last ones at 100%.
    assert re.search(r"^progress: images (\d+)/\1 pairs \(100%\)", err, re.M), err
    shards = len(names)
    assert f"progress: write {shards}/{shards} shards (100%)" in err
    assert re.search(r"^progress: read \d+ pairs, ", err, re.M)
