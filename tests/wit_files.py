"""WIT shards written in the real format, for tests and benchmarks of the WIT reader."""

from __future__ import annotations

import csv
import gzip
import io
from pathlib import Path

from pipeline.sources.wit import WIT_COLUMNS


def wit_row(n: int = 0, **fields: str) -> dict[str, str]:
    """A WIT row with plausible values; `fields` override any column."""
    row = {
        "language": "ar",
        "page_url": f"https://ar.wikipedia.org/wiki/%D8%B5%D9%81%D8%AD%D8%A9_{n}",
        "image_url": f"https://upload.wikimedia.org/wikipedia/commons/a/ab/Image_{n}.jpg",
        "page_title": f"صفحة {n}",
        "section_title": "",
        "hierarchical_section_title": f"صفحة {n}",
        "caption_reference_description": "",
        "caption_attribution_description": "",
        "caption_alt_text_description": "",
        "mime_type": "image/jpeg",
        "original_height": "600",
        "original_width": "800",
        "is_main_image": "false",
        "attribution_passes_lang_id": "false",
        "page_changed_recently": "true",
        "context_page_description": 'سطر أول من وصف الصفحة.\nسطر ثان فيه "اقتباس".',
        "context_section_description": "وصف القسم",
    }
    row.update(fields)
    return row


def wit_bytes(rows: list[dict[str, str]], header: tuple[str, ...] = tuple(WIT_COLUMNS)) -> bytes:
    """A shard as WIT writes it: a header, tabs, CSV quoting only where a field needs it."""
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter="\t", quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([row[c] for c in header])
    return buf.getvalue().encode("utf-8")


def write_wit(path: Path, rows: list[dict[str, str]]) -> Path:
    data = wit_bytes(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path
