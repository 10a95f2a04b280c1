"""The image store: pack files written once and read back byte-identical, on a local folder and
on a Beam filesystem standing in for gs://; records cut short by a kill; the pairs in flight
carrying references only; and through the CLI, the store removed (or kept as the cache) after
the commit, the shards holding exactly the stored bytes, and the allocator setting that keeps a
run's memory down."""

from __future__ import annotations

import collections
import concurrent.futures
import hashlib
import io
import os
import random
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import apache_beam as beam
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from image_samples import jpeg
from PIL import Image
from records_of import image_pair
from url_filesystem import UrlFileSystem
from wit_files import wit_row, write_wit

from pipeline.__main__ import main
from pipeline.config import ImagesConfig
from pipeline.images import FetchImages
from pipeline.records import Pair
from pipeline.store import HEADER, ImageStore, StoredImage, StoreIndex, parse_ref, scan_pack
from standins.images import ImageHost, Reply

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "pipeline", "run"]
LOOPBACK = ("127.0.0.1/32",)
JPEG = {"Content-Type": "image/jpeg"}


def blob(i: int) -> StoredImage:
    data = random.Random(i).randbytes(100 + 37 * i)
    digest = hashlib.sha256(data).hexdigest()
    return StoredImage(data, i + 1, i + 2, f"{i:016x}", digest, "image/jpeg", "jpg")


def test_records_are_written_once_and_read_back_byte_identical(tmp_path):
    store = ImageStore(str(tmp_path / "store"))
    writer = store.writer()
    items = [blob(i) for i in range(60)]
    # The images stage appends from its store threads at once.
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        refs = list(pool.map(lambda s: writer.append(s, f"http://h/{s.width}"), items))
    writer.close()
    assert len(set(refs)) == 60 and all(len(ref) < 60 for ref in refs)
    with store.reader() as reader:
        assert reader.read_many(reversed(refs)) == {
            r: s.data for r, s in zip(refs, items, strict=True)
        }
    (pack,) = store.pack_paths()
    records = list(store.records())
    # The pack is its records end to end, each image in it once.
    ends = [parse_ref(r.ref)[1] + parse_ref(r.ref)[2] for r in records]
    assert [r.offset for r in records] == [0, *ends[:-1]] and ends[-1] == os.path.getsize(pack)
    assert sum(parse_ref(r.ref)[2] for r in records) == sum(len(s.data) for s in items)
    assert sorted(r.ref for r in records) == sorted(refs)
    assert {r.facts["key"] for r in records} == {f"http://h/{i + 1}" for i in range(60)}

    index = StoreIndex(store)
    assert len(index) == 60
    ref, found = index.get("http://h/8")
    assert found == items[7] and ref == refs[items.index(items[7])]
    assert index.get("http://h/999") is None


def test_a_bundle_that_kept_nothing_leaves_no_pack(tmp_path):
    store = ImageStore(str(tmp_path / "store"))
    store.writer().close()
    assert store.pack_paths() == [] and not (tmp_path / "store").exists()
    assert len(StoreIndex(store)) == 0


@pytest.mark.parametrize("cut", [1, HEADER.size - 1, HEADER.size + 5, 50])
def test_a_record_cut_short_by_a_kill_is_left_out_with_what_follows(tmp_path, cut):
    store = ImageStore(str(tmp_path))
    writer = store.writer()
    refs = [writer.append(blob(i), f"k{i}") for i in range(3)]
    writer.close()
    (pack,) = store.pack_paths()
    third = next(r.offset for r in scan_pack(pack) if r.ref == refs[2])
    data = Path(pack).read_bytes()
    Path(pack).write_bytes(data[: third + cut])
    assert [r.ref for r in store.records()] == refs[:2]
    index = StoreIndex(store)
    assert index.get("k1")[0] == refs[1] and index.get("k2") is None
    # Bytes that are not a record (not our magic) end the scan the same way.
    Path(pack).write_bytes(data[:third] + b"garbage that is no header")
    assert [r.ref for r in store.records()] == refs[:2]


def test_a_store_behind_a_filesystem_url(tmp_path, monkeypatch):
    monkeypatch.setattr(UrlFileSystem, "root", str(tmp_path))
    monkeypatch.setattr(UrlFileSystem, "opened", [])
    store = ImageStore("urltestfs://bucket/run/images", reuse=True)
    writer = store.writer()
    refs = [writer.append(blob(i), f"http://h/{i}") for i in range(5)]
    writer.close()
    (local,) = (tmp_path / "bucket" / "run" / "images" / "packs").iterdir()
    assert store.pack_paths() == [f"urltestfs://bucket/run/images/packs/{local.name}"]
    assert store.read(refs[3]) == blob(3).data
    assert StoreIndex(store).get("http://h/4") == (refs[4], blob(4))
    assert UrlFileSystem.opened and all(p.endswith(".pack") for p in UrlFileSystem.opened)


def test_fetched_pairs_carry_a_reference_of_a_few_bytes_not_the_image(tmp_path):
    store = ImageStore(str(tmp_path / "store"))
    coder = beam.coders.registry.get_coder(Pair)
    with ImageHost() as server:
        pairs = [
            image_pair(i, server.route(f"/{i}.jpg", Reply(200, JPEG, jpeg(640, 480, seed=i))))
            for i in range(8)
        ]
        with TestPipeline() as p:
            kept, _ = (
                p
                | beam.Create(pairs)
                | FetchImages(ImagesConfig(quality=95), store, trusted_networks=LOOPBACK)
            )
            sizes = kept | beam.Map(lambda pair: (pair.input_line, len(coder.encode(pair))))
            assert_that(sizes | beam.Map(lambda s: s[0]), equal_to(list(range(8))))
            assert_that(sizes | beam.Filter(lambda s: s[1] > 1024), equal_to([]), label="Small")
    stored = [r for r in store.records()]
    assert len(stored) == 8
    assert min(parse_ref(r.ref)[2] for r in stored) > 10_000  # the images themselves are large


# ---------------------------------------------------------------------------- through the CLI


def wit_manifest(folder: Path, port: int, rows: int, images: str = "") -> Path:
    write_wit(
        folder / "wit.tsv",
        [
            wit_row(
                i,
                image_url=f"http://127.0.0.1:{port}/{i}.jpg",
                caption_reference_description=f"صورة رقم {i} لقلعة حلب عند الغروب",
            )
            for i in range(rows)
        ],
    )
    path = folder / "manifest.yaml"
    path.write_text(
        "name: store\nsources:\n  - kind: wit\n    paths: [wit.tsv]\n"
        f"images:\n  allow_private_hosts: true\n{images}output:\n  rows_per_shard: 3\n",
        encoding="utf-8",
    )
    return path


@pytest.fixture
def host():
    with ImageHost() as server:
        for i in range(7):
            server.route(f"/{i}.jpg", Reply(200, JPEG, jpeg(500, 400, seed=100 + i)))
        yield server


def shard_rows(data: Path) -> list[dict]:
    return sorted(pq.read_table(data).to_pylist(), key=lambda r: r["id"])


def check_images(rows: list[dict]) -> None:
    for row in rows:
        image = row["image"]["bytes"]
        assert hashlib.sha256(image).hexdigest() == row["sha256"]
        with Image.open(io.BytesIO(image)) as img:
            assert img.size == (row["width"], row["height"]) == (256, 205)


def test_without_a_cache_the_store_goes_with_the_staging_folder(tmp_path, host):
    manifest = wit_manifest(tmp_path, host.port, 7, "  cache: false\n")
    out = tmp_path / "out"
    assert main(["run", str(manifest), "--output", str(out)]) == 0
    rows = shard_rows(out / "data")
    assert len(rows) == 7
    check_images(rows)
    assert sorted(p.name for p in out.iterdir()) == [
        "LICENSE.md",
        "README.md",
        "data",
        "stats.json",
    ]
    assert not list(tmp_path.rglob("*.pack"))


def test_the_cache_is_the_store_one_copy_of_each_image(tmp_path, host, cache_home, capsys):
    manifest = wit_manifest(tmp_path, host.port, 7)
    out = tmp_path / "out"
    assert main(["run", str(manifest), "--output", str(out)]) == 0
    rows = shard_rows(out / "data")
    check_images(rows)
    # The default cache is outside the output folder, which holds only the dataset.
    cache = cache_home / "arabic-pairs" / "images"
    (folder,) = cache.iterdir()
    assert sorted(p.name for p in out.iterdir()) == [
        "LICENSE.md",
        "README.md",
        "data",
        "stats.json",
    ]
    assert f"image cache: hits 0, misses 7 ({cache})\n" in capsys.readouterr().out
    store = ImageStore(str(folder))
    with store.reader() as reader:
        stored = {r.facts["key"]: reader.read(r.ref) for r in store.records()}
    # Each image once, and the shards hold exactly the stored bytes.
    assert sorted(stored) == sorted(r["image_url"] for r in rows)
    assert all(stored[r["image_url"]] == r["image"]["bytes"] for r in rows)

    # A rerun reads every image from the store: no request, no new pack, the same shards; so
    # does a run into another output folder (the cache is shared).
    requests = len(host.log)
    packs = store.pack_paths()
    for again in (out, tmp_path / "another"):
        assert main(["run", str(manifest), "--output", str(again)]) == 0
        assert len(host.log) == requests and store.pack_paths() == packs
        assert shard_rows(again / "data") == rows
        assert f"image cache: hits 7, misses 0 ({cache})\n" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "another").iterdir()) == [
        "LICENSE.md", "README.md", "data", "stats.json"
    ]  # fmt: skip


def test_the_cache_an_earlier_version_kept_in_the_output_is_left_alone(
    tmp_path, host, cache_home, monkeypatch, capsys
):
    """Earlier versions kept `images.cache: auto` in DIR/cache/images. Such an output is still
    ours: a run into it neither reads that cache nor changes or deletes a byte of it."""
    manifest = wit_manifest(tmp_path, host.port, 7)
    out = tmp_path / "out"
    assert main(["run", str(manifest), "--output", str(out)]) == 0
    rows = shard_rows(out / "data")
    # As an earlier version left it: a cache holding every image of the output.
    shutil.copytree(cache_home / "arabic-pairs" / "images", out / "cache" / "images")
    old = {p: p.read_bytes() for p in (out / "cache").rglob("*") if p.is_file()}
    assert any(p.suffix == ".pack" for p in old)
    home = tmp_path / "new-cache-home"
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    capsys.readouterr()
    requests = len(host.log)
    assert main(["run", str(manifest), "--output", str(out)]) == 0
    assert len(host.log) == requests + 7  # DIR/cache was not looked in
    cache = home / "arabic-pairs" / "images"
    assert f"image cache: hits 0, misses 7 ({cache})\n" in capsys.readouterr().out
    assert {p: p.read_bytes() for p in (out / "cache").rglob("*") if p.is_file()} == old
    assert sorted(p.name for p in out.iterdir()) == [
        "LICENSE.md",
        "README.md",
        "cache",
        "data",
        "stats.json",
    ]
    assert shard_rows(out / "data") == rows


class PairedHost(ImageHost):
    """Answers an image only once two requests asked for it: two runs at once that both missed
    it in the cache, so both store it at the same time."""

    def __init__(self):
        super().__init__()
        self._asked: collections.Counter[str] = collections.Counter()
        self._both = threading.Condition()

    def serve(self, request) -> None:
        with self._both:
            self._asked[request.path] += 1
            self._both.notify_all()
            self._both.wait_for(lambda: self._asked[request.path] >= 2, timeout=60)
        super().serve(request)


def test_two_runs_at_once_share_the_cache(tmp_path, cache_home):
    """Two runs into two folders at the same time write into one cache, each its own packs (no
    index file to race on); both outputs are whole, and a third run finds every image there."""
    with PairedHost() as host:
        for i in range(7):
            host.route(f"/{i}.jpg", Reply(200, JPEG, jpeg(500, 400, seed=100 + i)))
        timeouts = "  read_timeout: 90\n  deadline: 120\n"  # the host waits for both runs
        manifest = wit_manifest(tmp_path, host.port, 7, timeouts)
        outs = [tmp_path / "one", tmp_path / "two"]
        runs = [
            subprocess.Popen([*CLI, str(manifest), "--output", str(out)], cwd=REPO) for out in outs
        ]
        assert [run.wait(timeout=300) for run in runs] == [0, 0]
        # Both runs downloaded every image: each stored it while the other did.
        assert sorted(path for path, _ in host.log) == sorted([f"/{i}.jpg" for i in range(7)] * 2)
        (folder,) = (cache_home / "arabic-pairs" / "images").iterdir()
        store = ImageStore(str(folder))
        keys = [r.facts["key"] for r in store.records()]
        assert sorted(keys) == sorted(
            [f"http://127.0.0.1:{host.port}/{i}.jpg" for i in range(7)] * 2
        )
        rows = shard_rows(outs[0] / "data")
        check_images(rows)
        assert shard_rows(outs[1] / "data") == rows
        requests = len(host.log)
        assert main(["run", str(manifest), "--output", str(tmp_path / "three")]) == 0
        assert len(host.log) == requests
        assert shard_rows(tmp_path / "three" / "data") == rows


def test_an_output_on_an_object_store_keeps_no_store_behind(tmp_path, host, monkeypatch):
    monkeypatch.setattr(UrlFileSystem, "root", str(tmp_path / "bucket"))
    manifest = wit_manifest(tmp_path, host.port, 7)
    # A killed run's staging folder with half a store in it.
    killed = tmp_path / "bucket" / "out" / ".incoming-killed" / "images" / "packs"
    killed.mkdir(parents=True)
    (killed / "0123.pack").write_bytes(b"APK1 half a record")
    assert main(["run", str(manifest), "--output", "urltestfs://out"]) == 0
    out = tmp_path / "bucket" / "out"
    rows = shard_rows(out / "data")
    assert len(rows) == 7
    check_images(rows)
    # No cache on an object store by default; this run's store and the killed one's are gone.
    assert not list(out.rglob("*.pack")) and not list(out.rglob(".incoming-*/**/*.*"))
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == [
        "LICENSE.md",
        "README.md",
        "stats.json",
    ]


def test_a_run_limits_malloc_arenas_unless_the_user_set_them(tmp_path, host, monkeypatch):
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    manifest = wit_manifest(tmp_path, host.port, 2, "  cache: false\n")
    assert main(["run", str(manifest), "--output", str(tmp_path / "out")]) == 0
    # What the local runner's worker processes inherit.
    assert os.environ["MALLOC_ARENA_MAX"] == "2"
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert main(["run", str(manifest), "--output", str(tmp_path / "again")]) == 0
    assert os.environ["MALLOC_ARENA_MAX"] == "4"
