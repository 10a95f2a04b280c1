"""`output.format: webdataset`: tar shards that the `webdataset` library (as open_clip reads them)
and `datasets` load, holding what the Parquet build of the same inputs holds, written as
deterministically and committed as safely as Parquet shards."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from braceexpand import braceexpand
from cli_runs import LOOSE, output_rows
from image_samples import jpeg
from PIL import Image

from pipeline import tars
from pipeline.__main__ import main
from pipeline.config import WEBDATASET
from pipeline.manifest import ManifestError, parse_manifest
from pipeline.output import output_problem
from pipeline.records import GENUINE, Pair, encode_pair, pair_id, to_row
from pipeline.report import build_report, read_output
from pipeline.write import _WriteShard, is_shard, shard_of

CAPTIONS = [
    "قلعة حلب عند غروب الشمس",
    "مسجد محمد علي في القاهرة",
    "وادي رم في جنوب الأردن",
    "صقر حر يقف على غصن شجرة",
    "سوق الحميدية القديم في دمشق",
]
IDS = [pair_id("pairs", f"{i}.jpg", c) for i, c in enumerate(CAPTIONS)]
SHARDS = len(CAPTIONS)  # one row a shard: 5 shards, holding 0, 2, 1, 1 and 1 pairs
EMPTY = 0  # the empty shard's index, the first: `datasets` cannot infer features from it


def write_manifest(folder: Path, output_format: str, body: str = "") -> Path:
    path = folder / f"{output_format}.yaml"
    path.write_text(
        f"name: wds\n{body or IMAGE_SOURCE}{LOOSE}images: {{cache: false}}\n"
        f"output:\n  rows_per_shard: 1\n  format: {output_format}\n",
        encoding="utf-8",
    )
    return path


IMAGE_SOURCE = (
    "sources:\n  - kind: pairs\n    paths: [pairs.tsv]\n    language: ar\n    image_root: images\n"
)


def build(manifest: Path, out: Path, *beam_args: str) -> dict:
    assert main(["run", str(manifest), "--output", str(out), *beam_args]) == 0
    return json.loads((out / "stats.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("inputs")
    (folder / "images").mkdir()
    lines = ["path\tcaption"]
    for i, caption in enumerate(CAPTIONS):
        (folder / "images" / f"{i}.jpg").write_bytes(jpeg(96, 64, seed=10 + i))
        lines.append(f"{i}.jpg\t{caption}")
    (folder / "pairs.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    # The premise of the empty-shard checks: the spreading by id leaves this shard empty.
    assert [sum(shard_of(i, SHARDS) == s for i in IDS) for s in range(SHARDS)] == [0, 2, 1, 1, 1]
    return folder


@pytest.fixture(scope="module")
def parquet_out(inputs) -> Path:
    out = inputs / "parquet-out"
    build(write_manifest(inputs, "parquet"), out)
    return out


@pytest.fixture(scope="module")
def wds_out(inputs) -> Path:
    out = inputs / "wds-out"
    build(write_manifest(inputs, WEBDATASET), out)
    return out


def shard_names(out: Path) -> list[str]:
    return sorted(p.name for p in (out / "data").iterdir())


def without_image(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "image"}


def members(path: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(path) as tar:
        return tar.getmembers()


def test_the_tars_hold_the_parquet_builds_pairs_in_the_same_shards(parquet_out, wds_out):
    parquet = shard_names(parquet_out)
    assert shard_names(wds_out) == [n.replace(".parquet", ".tar") for n in parquet]
    assert len(parquet) == SHARDS
    seen = []
    for name in parquet:
        rows = pq.read_table(parquet_out / "data" / name).to_pylist()
        url = str(wds_out / "data" / name.replace(".parquet", ".tar"))
        samples = list(wds.WebDataset(url, shardshuffle=False, empty_check=False))
        # The same pairs as the Parquet shard of this index, sorted by id, keyed by id.
        assert [s["__key__"] for s in samples] == [r["id"] for r in rows]
        assert [s["__key__"] for s in samples] == sorted(s["__key__"] for s in samples)
        for sample, row in zip(samples, rows, strict=True):
            assert sorted(k for k in sample if not k.startswith("__")) == ["jpg", "json", "txt"]
            assert sample["txt"].decode("utf-8") == row["caption_ar"]
            assert json.loads(sample["json"]) == without_image(row)
            image = row["image"]["bytes"]
            assert hashlib.sha256(sample["jpg"]).hexdigest() == row["sha256"]
            assert sample["jpg"] == image
            with Image.open(io.BytesIO(sample["jpg"])) as img:
                assert img.format == "JPEG" and img.size == (row["width"], row["height"])
        seen += [s["__key__"] for s in samples]
    assert sorted(seen) == sorted(IDS)  # every pair once
    empty = wds_out / "data" / f"train-{EMPTY:05d}-of-{SHARDS:05d}.tar"
    assert members(empty) == [] and empty.stat().st_size == tarfile.RECORDSIZE


def test_open_clip_reads_every_pair_as_an_rgb_image_and_its_caption(wds_out):
    """open_clip's pipeline: decode("pilrgb"), rename(image="jpg;png;jpeg;webp", text="txt")."""
    urls = [str(wds_out / "data" / n) for n in shard_names(wds_out)]
    dataset = (
        wds.WebDataset(urls, shardshuffle=False)
        .decode("pilrgb")
        .rename(image="jpg;png;jpeg;webp", text="txt")
        .to_tuple("image", "text")
    )
    pairs = list(dataset)
    assert sorted(text for _, text in pairs) == sorted(CAPTIONS)
    assert all(img.mode == "RGB" and img.size == (96, 64) for img, _ in pairs)
    # The card's open_clip command names every shard and the number of samples.
    card = (wds_out / "README.md").read_text(encoding="utf-8")
    pattern = card.split("--train-data '", 1)[1].split("'", 1)[0]
    assert [Path(u).name for u in braceexpand(pattern)] == shard_names(wds_out)
    assert f"--train-num-samples {len(CAPTIONS)}" in card


def test_two_runs_write_byte_identical_tars(inputs, wds_out, tmp_path):
    again = tmp_path / "again"
    build(write_manifest(inputs, WEBDATASET), again, "--direct_num_workers", "2")
    assert shard_names(again) == shard_names(wds_out)
    for name in shard_names(wds_out):
        assert (again / "data" / name).read_bytes() == (wds_out / "data" / name).read_bytes()
    for name in shard_names(wds_out):
        for m in members(wds_out / "data" / name):
            assert (m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) == (0, 0, 0, "", "", 0o644)
            assert m.isfile() and "/" not in m.name


def test_datasets_loads_the_folder_with_the_cards_features(parquet_out, wds_out):
    card = (wds_out / "README.md").read_text(encoding="utf-8")
    assert "path: data/train-*.tar" in card
    ds = datasets.load_dataset(str(wds_out), split="train")
    assert list(ds.features) == ["jpg", "txt", "json", "__key__", "__url__"]
    assert isinstance(ds.features["jpg"], datasets.Image)
    assert ds.features["json"]["langid_score"] == datasets.Value("float32")
    parquet = {r["id"]: r for r in pq.read_table(parquet_out / "data").to_pylist()}
    ds = ds.cast_column("jpg", datasets.Image(decode=False))
    assert len(ds) == len(parquet) == len(CAPTIONS)
    for example in ds:
        row = parquet[example["__key__"]]
        assert example["json"] == without_image(row)
        assert example["txt"] == row["caption_ar"]
        assert example["jpg"]["bytes"] == row["image"]["bytes"]


def test_a_rerun_in_the_other_format_replaces_the_shards_and_keeps_the_users_files(
    inputs, parquet_out, tmp_path
):
    out = tmp_path / "out"
    shutil.copytree(parquet_out, out)
    mine = {"notes.txt": b"my notes", "train-mine.parquet": b"PAR1 mine", "train-mine.tar": b"t"}
    for name, data in mine.items():
        (out / "data" / name).write_bytes(data)
    parquet = shard_names(parquet_out)

    build(write_manifest(inputs, WEBDATASET), out)
    tars_ = [n.replace(".parquet", ".tar") for n in parquet]
    assert shard_names(out) == sorted(tars_ + list(mine))
    assert "path: data/train-*.tar" in (out / "README.md").read_text(encoding="utf-8")
    assert sorted(r["id"] for r in output_rows(out)) == sorted(IDS)

    build(write_manifest(inputs, "parquet"), out)
    assert shard_names(out) == sorted(parquet + list(mine))
    assert "path: data/train-*.parquet" in (out / "README.md").read_text(encoding="utf-8")
    for name, data in mine.items():
        assert (out / "data" / name).read_bytes() == data
    assert not [p for p in out.iterdir() if p.name.startswith(".incoming-")]


def test_the_report_reads_the_tars_as_it_reads_parquet(parquet_out, wds_out, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(wds_out, out)
    from_tars, from_parquet = read_output(str(out)), read_output(str(parquet_out))
    assert from_tars.shards == from_parquet.shards == SHARDS
    assert from_tars.rows.equals(from_parquet.rows)
    assert from_tars.samples == from_parquet.samples
    assert all(row["image"]["bytes"] for rows in from_tars.samples.values() for row in rows)
    page = Path(build_report(str(out))).read_text(encoding="utf-8")
    assert f"{SHARDS} shard(s)" in page and CAPTIONS[0] in page


def test_without_images_a_sample_is_its_caption_and_json_and_a_repeated_id_gets_a_suffix(
    tmp_path,
):
    """URL-only rows (`fetch: false`); the `id` column given twice with two URLs: dedupe keeps
    both pairs (their images differ), which share one pair id."""
    (tmp_path / "pairs.tsv").write_text(
        "key\turl\tcaption\n"
        f"a\thttps://img.example/1.jpg\t{CAPTIONS[0]}\n"
        f"a\thttps://img.example/2.jpg\t{CAPTIONS[0]}\n"
        f"b\thttps://img.example/3.jpg\t{CAPTIONS[1]}\n",
        encoding="utf-8",
    )
    source = (
        "sources:\n  - kind: pairs\n    paths: [pairs.tsv]\n    language: ar\n"
        "    columns: {id: key}\n"
    )
    manifest = write_manifest(tmp_path, WEBDATASET, source)
    manifest.write_text(
        manifest.read_text(encoding="utf-8").replace("{cache: false}", "{fetch: false}"),
        encoding="utf-8",
    )
    out = tmp_path / "out"
    assert build(manifest, out)["kept"] == 3
    repeated, other = pair_id("pairs", "a", CAPTIONS[0]), pair_id("pairs", "b", CAPTIONS[1])
    samples = list(
        wds.WebDataset([str(p) for p in sorted((out / "data").iterdir())], shardshuffle=False)
    )
    keys = sorted(s["__key__"] for s in samples)
    assert keys == sorted([repeated, f"{repeated}_2", other])
    for sample in samples:
        assert sorted(k for k in sample if not k.startswith("__")) == ["json", "txt"]
        assert json.loads(sample["json"])["id"] == sample["__key__"].split("_")[0]
    urls = {json.loads(s["json"])["image_url"] for s in samples if s["__key__"] != other}
    assert urls == {"https://img.example/1.jpg", "https://img.example/2.jpg"}

    ds = datasets.load_dataset(str(out), split="train")
    assert list(ds.features) == ["txt", "json", "__key__", "__url__"]
    assert sorted(ds["__key__"]) == keys


def pairs_of_one_id() -> list[Pair]:
    """Two pairs of one id (one record read twice, images not fetched) and one other."""
    same = pair_id("pairs", "a", CAPTIONS[0])
    return [
        Pair(same, "pairs", "pairs", "a", CAPTIONS[0], GENUINE, image_url=f"https://x/{n}.jpg")
        for n in (1, 2)
    ] + [Pair(pair_id("pairs", "b", CAPTIONS[1]), "pairs", "pairs", "b", CAPTIONS[1], GENUINE)]


def test_pairs_of_one_id_are_written_in_one_order_whatever_order_they_arrive_in(tmp_path):
    encoded = [encode_pair(p) for p in pairs_of_one_id()]
    written = []
    for order, items in (("given", encoded), ("reversed", encoded[::-1])):
        writer = _WriteShard(str(tmp_path / order), None, WEBDATASET)
        writer.setup()
        [_, (path, rows, _)] = list(writer.process((0, [b"", *items]), 1))
        assert rows == 3 and path.endswith("train-00000-of-00001.tar")
        written.append(Path(path).read_bytes())
    assert written[0] == written[1]


def test_an_image_is_named_by_its_encoding_and_non_finite_scores_are_null():
    png = Pair(
        IDS[0], "pairs", "pairs", "0.png", CAPTIONS[0], GENUINE, mime_type="image/png"
    )._replace(langid_score=float("nan"), translation_score=float("-inf"), width=3)
    webp = Pair(IDS[1], "pairs", "pairs", "1.webp", CAPTIONS[1], GENUINE, mime_type="image/webp")
    sink = io.BytesIO()
    tars.write_samples(sink, [[to_row(png, b"PNG bytes")], [to_row(webp, b"WEBP bytes")]])
    sink.seek(0)
    with tarfile.open(fileobj=sink) as tar:
        names = tar.getnames()
        described = json.loads(tar.extractfile(f"{IDS[0]}.json").read())
    assert names == [f"{IDS[0]}.{e}" for e in ("png", "txt", "json")] + [
        f"{IDS[1]}.{e}" for e in ("webp", "txt", "json")
    ]
    assert described["langid_score"] is None and described["translation_score"] is None
    assert described["width"] == 3 and described["caption_ar"] == CAPTIONS[0]
    sink.seek(0)
    table = tars.read_table(sink, ["id", "image", "width"])
    assert table.to_pylist() == [
        {"id": IDS[0], "image": {"bytes": b"PNG bytes", "path": f"{IDS[0]}.png"}, "width": 3},
        {"id": IDS[1], "image": {"bytes": b"WEBP bytes", "path": f"{IDS[1]}.webp"}, "width": None},
    ]
    assert isinstance(tars.hf_features("png")["png"], datasets.Image)
    assert "jpg" not in tars.hf_features(None)


def test_tar_shards_are_ours_and_other_tars_are_the_users(tmp_path):
    assert is_shard("train-00000-of-00002.tar") and is_shard(".train-00001-of-00002.tar.tmp")
    assert not is_shard("train-mine.tar") and not is_shard("train-00000-of-00002.tar.gz")
    killed = tmp_path / "killed"  # a first run killed after moving its shards in
    (killed / "data").mkdir(parents=True)
    (killed / "data" / "train-00000-of-00001.tar").write_bytes(b"")
    assert output_problem(str(killed)) is None
    (killed / "data" / "train-mine.tar").write_bytes(b"")
    assert "data/train-mine.tar" in output_problem(str(killed))


def test_an_unknown_output_format_is_a_manifest_problem_listed_with_the_others(tmp_path, capsys):
    raw = {
        "sources": [{"kind": "pairs", "paths": ["pairs.tsv"], "language": "ar"}],
        "output": {"format": "tfrecord", "rows_per_shard": 0},
    }
    with pytest.raises(ManifestError) as err:
        parse_manifest(raw, str(tmp_path), check_paths=False)
    assert err.value.problems == [
        "output.rows_per_shard: must be positive",
        "output.format: one of parquet, webdataset",
    ]
    (tmp_path / "pairs.tsv").write_text(f"url\tcaption\nhttps://x/1.jpg\t{CAPTIONS[0]}\n")
    manifest = write_manifest(tmp_path, "tfrecord")
    assert main(["run", str(manifest), "--output", str(tmp_path / "out")]) == 2
    assert "error: output.format: one of parquet, webdataset" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
