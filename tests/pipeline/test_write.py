"""The writer's pure parts: shard names and assignment, the Parquet bytes, the card."""

from __future__ import annotations

import io

import pyarrow.parquet as pq

from pipeline.files import table_bytes
from pipeline.records import GENUINE, Pair, pair_id, to_row
from pipeline.write import arrow_schema, shard_count, shard_name, shard_of


def test_shard_names_and_counts():
    assert shard_name(3, 12) == "train-00003-of-00012.parquet"
    assert shard_count(0, 10) == 1
    assert shard_count(10, 10) == 1
    assert shard_count(11, 10) == 2


def test_shard_assignment_is_deterministic_and_spreads():
    ids = [pair_id("wit", f"key{i}", "نص") for i in range(2000)]
    shards = [shard_of(i, 8) for i in ids]
    assert shards == [shard_of(i, 8) for i in ids]
    sizes = [shards.count(s) for s in range(8)]
    assert min(sizes) > 180 and max(sizes) < 320  # about 250 each


def test_rows_round_trip_with_the_image_struct_and_hf_metadata():
    with_image = Pair(
        "a",
        "wit",
        "wit",
        "k",
        "قطة",
        GENUINE,
        width=3,
        mime_type="image/png",
    )
    without = Pair("b", "wit", "wit", "k2", "كلب", GENUINE)
    data = table_bytes([to_row(with_image, b"\x89PNG"), to_row(without)], arrow_schema())
    table = pq.read_table(io.BytesIO(data))
    rows = table.to_pylist()
    assert rows[0]["image"] == {"bytes": b"\x89PNG", "path": "a.png"}
    assert rows[0]["width"] == 3
    assert rows[1]["image"] is None
    assert b'"image": {"_type": "Image"}' in table.schema.metadata[b"huggingface"]


def test_an_empty_shard_has_the_schema_and_no_row_group():
    data = table_bytes([], arrow_schema())
    meta = pq.ParquetFile(io.BytesIO(data)).metadata
    assert meta.num_row_groups == 0
    assert meta.num_rows == 0
    assert "caption_ar" in meta.schema.names
