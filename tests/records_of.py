"""What a reader yielded, sorted out for assertions; the demo's samples and translation memory."""

from __future__ import annotations

from pathlib import Path

from pipeline.records import GENUINE, Drop, Pair

DEMO = Path(__file__).resolve().parent.parent / "manifests" / "samples"


def pairs_of(records) -> list[Pair]:
    return [r for r in records if isinstance(r, Pair)]


def drops_of(records) -> dict[str, int]:
    """Drop counts by reason (a `Drop` may stand for many records)."""
    counts: dict[str, int] = {}
    for r in records:
        if isinstance(r, Drop):
            counts[r.reason] = counts.get(r.reason, 0) + r.count
    return counts


def demo_memory() -> dict[str, str]:
    """The demo's translation memory (`en<TAB>ar`, no quoting), English → Arabic."""
    text = (DEMO / "memory/demo_memory.tsv").read_text("utf-8")
    header, *rows = text.splitlines()
    assert header == "en\tar"
    return dict(row.split("\t") for row in rows)


def image_pair(line: int, url: str | None = None, path: str | None = None) -> Pair:
    """A genuine WIT pair whose image is at `url` or the local `path` (image and cache tests)."""
    return Pair(
        id=f"pair{line:02d}",
        source="wit",
        source_name="wit",
        source_key=f"key{line}",
        caption_ar="صورة",
        caption_origin=GENUINE,
        image_url=url,
        image_path=path,
        input_file="test.tsv",
        input_line=line,
    )
