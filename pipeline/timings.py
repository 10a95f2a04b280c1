"""Per stage wall seconds and records/s, for `stats.json`'s `timings`, on every runner.

A `Clock` watches a PCollection beside the stage that consumes or produces it (a branch of its
own, so the records flow on untouched) and emits, once per bundle, `(stage, first, last, n)`:
the wall-clock times (`time.time()`, comparable across processes and workers) of the first and
last record it saw and how many records it counted. A stage is watched on its input, counted,
and on each of its outputs, not counted, so `build_timings` merges a stage's bundles into its
busy span, from the first record in to the last record out, and the records it saw. The
readers have no input to watch: theirs are their outputs, counted as `read` counts them.
Beam metrics are not committed by every runner, so none of this uses them.

Timings differ from run to run; `comparable` is a stats dict without them (the accounting that
reruns must repeat exactly), and without the scores of the mismatched baseline, which depend on
how the runner batched the pairs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

TIMINGS = "timings"
READ = "read"


def one(_record) -> int:
    return 1


def drop_count(drop) -> int:
    """A reader's `Drop` may stand for many records (`Drop.count`)."""
    return drop.count


def read_stage(source_name: str) -> str:
    """The timings key of one source's reader: `read[wit]`."""
    return f"{READ}[{source_name}]"


class Clock(beam.DoFn):
    """Emits `(stage, first, last, n)` per bundle of the records it sees; `weight(record)` is
    what a record counts for (None: the records are timed, not counted)."""

    def __init__(self, stage: str, weight: Callable[[object], int] | None = None):
        self._stage = stage
        self._weight = weight
        self._first = self._last = None
        self._n = 0

    def start_bundle(self):
        self._first = self._last = None
        self._n = 0

    def process(self, record):
        now = time.time()
        if self._first is None:
            self._first = now
        self._last = now
        if self._weight is not None:
            self._n += self._weight(record)
        return ()

    def finish_bundle(self):
        if self._first is not None:
            entry = (self._stage, self._first, self._last, self._n)
            yield WindowedValue(entry, MIN_TIMESTAMP, (GlobalWindow(),))


def build_timings(entries: Iterable[tuple[str, float, float, int]], order: Iterable[str] = ()):
    """`{stage: {"seconds", "records", "records_per_s"}}` from `(stage, first, last, n)`
    entries: a stage's earliest first to its latest last, its records summed; rounded to 2
    decimals (records/s is 0 for a stage whose records all came at one instant). The
    `read[<source>]` stages are merged into `read` as well. Stages come in `order`, then any
    others in the order met."""
    order = list(order)
    spans: dict[str, list] = {}
    for stage, first, last, n in entries:
        names = (stage, READ) if stage.startswith(READ + "[") else (stage,)
        for name in names:
            span = spans.setdefault(name, [first, last, 0])
            span[0], span[1], span[2] = min(span[0], first), max(span[1], last), span[2] + n
    ordered = [s for s in order if s in spans] + [s for s in spans if s not in order]
    timings = {}
    for stage in ordered:
        first, last, records = spans[stage]
        seconds = max(0.0, last - first)
        timings[stage] = {
            "seconds": round(seconds, 2),
            "records": records,
            "records_per_s": round(records / seconds, 2) if seconds > 0 else 0.0,
        }
    return timings


def comparable(stats: dict) -> dict:
    """`stats` without its `timings`, and without the mismatched baseline's summaries of
    `scores` (which pairs meet in a batch is the runner's choice: `pipeline.scoring.stage`):
    what two runs of the same inputs agree on."""
    kept = {key: value for key, value in stats.items() if key != TIMINGS}
    if "scores" in kept:
        kept["scores"] = {
            source: {name: s for name, s in summaries.items() if not name.endswith("_mismatched")}
            for source, summaries in kept["scores"].items()
        }
    return kept
