"""A manifest run through `python -m pipeline run`, as a user runs it, for the tests that check
what a run keeps and drops (hostile files, the `pairs` source)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from pipeline import tars
from pipeline.__main__ import main
from pipeline.records import SCHEMA
from pipeline.write import is_shard

# Filters loose enough for short captions: what such tests check is the readers and the text.
LOOSE = "filters:\n  langid_min_score: 0\n  langid_labels: [ar, arz, fa, ur]\n"
OFFLINE = "images: {fetch: false}\n"


def run_manifest(folder: Path, body: str, capsys) -> tuple[int, dict | None, list[dict], str]:
    """(exit status, stats.json or None, the output's rows, stderr) of a run of the manifest
    `body` written into `folder`, its output `folder/out`."""
    manifest = folder / "manifest.yaml"
    manifest.write_text(body, encoding="utf-8")
    out = folder / "out"
    status = main(["run", str(manifest), "--output", str(out)])
    err = capsys.readouterr().err
    stats_path = out / "stats.json"
    stats = json.loads(stats_path.read_text("utf-8")) if stats_path.exists() else None
    rows = output_rows(out) if stats is not None else []
    return status, stats, rows, err


def output_rows(out: Path) -> list[dict]:
    """The rows of the output folder `out`, shard by shard: its Parquet shards, or the
    WebDataset tars of `output.format: webdataset` read into the same columns."""
    shards = sorted(p for p in (out / "data").glob("train-*.tar") if is_shard(p.name))
    if not shards:
        return pq.read_table(out / "data").to_pylist()
    rows = []
    for shard in shards:
        with shard.open("rb") as f:
            rows += tars.read_table(f, SCHEMA.names).to_pylist()
    return rows


def memory(folder: Path, entries: dict[str, str], prefix: bytes = b"") -> Path:
    """A translation memory TSV (`en`, `ar`) in `folder`, after `prefix` (a byte-order mark)."""
    path = folder / "memory.tsv"
    lines = ["en\tar", *(f"{en}\t{ar}" for en, ar in entries.items())]
    path.write_bytes(prefix + ("\n".join(lines) + "\n").encode("utf-8"))
    return path
