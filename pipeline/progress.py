"""Live progress of a local run, and what a run reused, for the terminal.

While a local run works, each stage that calls `advance` gets one line on stderr every few
seconds: what it has finished, its rate and, where the stage knows its total, an ETA:

    progress: images 412/1,031 pairs (40%), 37.5/s, ETA 0:00:16
    progress: read 12,040 pairs, 2,210.3/s

The counts are kept in the process that runs the stage, not in Beam metrics: the DirectRunner
hands metrics back only when the run ends, and progress is for while it runs. Counting is a
lock and two additions, and it is a no-op unless the environment variable `PROGRESS_ENV` holds
an interval in seconds. `python -m pipeline run` sets it (`--progress`, on by default when
stderr is a terminal) and calls `start` and `stop` around the run. Worker processes of
`--direct_running_mode multi_processing` inherit it and print their own share (marked with their
pid, without an ETA: the total is the whole run's); remote workers (Dataflow, Flink) do not have
it and print nothing, their consoles show the Beam counters. Nothing here touches the data.

`reuse_lines` turns the counters of a finished run into the lines that say what a rerun reused
(the image cache, the translation memory).
"""

from __future__ import annotations

import datetime
import os
import sys
import threading
import time
from typing import TextIO

PROGRESS_ENV = "ARABIC_PAIRS_PROGRESS"
# The pid of the process that started the run: other processes are workers.
DRIVER_ENV = "ARABIC_PAIRS_PROGRESS_DRIVER"
INTERVAL = 5.0  # seconds between the lines of one stage


class _Stage:
    __slots__ = ("done", "total", "unit", "started", "shown", "note")

    def __init__(self, unit: str):
        self.note = ""
        self.done = 0
        self.total: int | None = None
        self.unit = unit
        self.started = time.monotonic()
        self.shown = 0  # `done` when its last line was printed


def format_line(
    stage: str,
    done: int,
    total: int | None,
    unit: str,
    seconds: float,
    label: str = "",
    note: str = "",
) -> str:
    """One progress line: done (of total), rate, ETA when the total is known, and the stage's
    note (the images stage's: the hosts holding it back)."""
    rate = done / seconds if seconds > 0 else 0.0
    count = f"{done:,}/{total:,} {unit} ({100 * done // total}%)" if total else f"{done:,} {unit}"
    line = f"progress{label}: {stage} {count}, {rate:,.1f}/s"
    if total and rate > 0 and done < total:
        eta = datetime.timedelta(seconds=round((total - done) / rate))
        line += f", ETA {eta}"
    if note:
        line += f"; {note}"
    return line


class Reporter:
    """Per-stage counts of one process, printed by a daemon thread every `interval` seconds
    (only the stages that moved since their last line)."""

    def __init__(self, interval: float, stream: TextIO, worker: bool = False):
        self._interval = interval
        self._stream = stream
        self._worker = worker
        self._stages: dict[str, _Stage] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="progress", daemon=True)
        self._thread.start()

    def advance(self, stage: str, n: int, total: int | None, unit: str) -> None:
        with self._lock:
            s = self._stages.get(stage)
            if s is None:
                s = self._stages[stage] = _Stage(unit)
            s.done += n
            if total is not None and not self._worker:
                s.total = total

    def note(self, stage: str, text: str) -> None:
        with self._lock:
            s = self._stages.get(stage)
            if s is not None:
                s.note = text

    def flush(self) -> None:
        """Print a line for every stage that moved since its last one."""
        now = time.monotonic()
        label = f" (worker pid {os.getpid()})" if self._worker else ""
        with self._lock:
            lines = []
            for name, s in self._stages.items():
                if s.done != s.shown:
                    s.shown = s.done
                    seconds = now - s.started
                    lines.append(format_line(name, s.done, s.total, s.unit, seconds, label, s.note))
        for line in lines:
            print(line, file=self._stream, flush=True)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.flush()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self.flush()


_lock = threading.Lock()
_reporter: Reporter | None = None
_looked = False  # whether this process has read PROGRESS_ENV since the last start/stop


def _current() -> Reporter | None:
    global _reporter, _looked
    if _looked:
        return _reporter
    with _lock:
        if not _looked:
            try:
                interval = float(os.environ.get(PROGRESS_ENV) or 0)
            except ValueError:
                interval = 0.0
            if interval > 0:
                worker = os.environ.get(DRIVER_ENV) != str(os.getpid())
                _reporter = Reporter(interval, sys.stderr, worker=worker)
            _looked = True
    return _reporter


def advance(stage: str, n: int = 1, *, total: int | None = None, unit: str = "records") -> None:
    """Count `n` more records finished by `stage` (of `total`, when the stage knows it)."""
    reporter = _current()
    if reporter is not None:
        reporter.advance(stage, n, total, unit)


def note(stage: str, text: str) -> None:
    """What holds `stage` back now, shown at the end of its next line ('' for nothing)."""
    reporter = _current()
    if reporter is not None:
        reporter.note(stage, text)


def start(interval: float = INTERVAL, stream: TextIO | None = None) -> None:
    """Turn progress on for this process and the worker processes it starts."""
    global _reporter, _looked
    stop()
    os.environ[PROGRESS_ENV] = str(interval)
    os.environ[DRIVER_ENV] = str(os.getpid())
    with _lock:
        _reporter = Reporter(interval, stream or sys.stderr)
        _looked = True


def stop() -> None:
    """Print the last lines and turn progress off."""
    global _reporter, _looked
    os.environ.pop(PROGRESS_ENV, None)
    os.environ.pop(DRIVER_ENV, None)
    with _lock:
        reporter, _reporter, _looked = _reporter, None, False
    if reporter is not None:
        reporter.close()


def counter_totals(result) -> dict[tuple[str, str], int]:
    """(namespace, name) -> value of every counter of a finished run (a `PipelineResult`),
    summed over the steps that share a name; committed values where the runner has them, and
    nothing where it has no metrics to give."""
    try:
        counters = result.metrics().query()["counters"]
    except Exception:  # noqa: BLE001 - not every runner reports metrics; these lines are extra
        return {}
    totals: dict[tuple[str, str], int] = {}
    for counter in counters:
        value = counter.committed if counter.committed is not None else counter.attempted
        key = (counter.key.metric.namespace, counter.key.metric.name)
        totals[key] = totals.get(key, 0) + (value or 0)
    return totals


def reuse_lines(counters: dict[tuple[str, str], int], image_cache: str | None) -> list[str]:
    """What the run took from earlier work, as lines under the accounting:

    `  image cache: hits H, misses M (FOLDER)` when the cache is on and was asked, and
    `  translation memory: hits H, misses M` when captions were translated (misses went to
    the model, or were dropped as no_translation without one)."""
    lines = []
    hits = counters.get(("images", "cache_hits"), 0)
    misses = counters.get(("images", "cache_misses"), 0)
    if image_cache and hits + misses:
        lines.append(f"  image cache: hits {hits}, misses {misses} ({image_cache})")
    unique = counters.get(("translate", "unique_captions"), 0)
    if unique:
        hits = counters.get(("translate", "memory_hits"), 0)
        lines.append(f"  translation memory: hits {hits}, misses {unique - hits}")
    return lines
