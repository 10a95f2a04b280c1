"""What the benchmarks share to measure on a shared machine: a watch on the CPU time other
processes take, waiting (a little) for a quiet machine, interleaved rounds of timed variants with
medians, and the report's table. Nothing here imports the project, so a benchmark's parts that
need only numpy and the model runtimes run where the pipeline's dependencies are not installed.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence

RETRY_ABOVE = 0.10  # a timed run is repeated when other processes took more of the CPU
RETRIES = 1


def log(message: str) -> None:
    """Progress goes to stderr: stdout holds only the table and the JSON line."""
    print(message, file=sys.stderr, flush=True)


def chunks(items: Sequence, size: int) -> list:
    return [items[i : i + size] for i in range(0, len(items), size)]


class CpuMonitor:
    """The share of the machine's CPU time that other processes used while it ran (Linux)."""

    def __init__(self):
        self._start = self._snapshot()

    @staticmethod
    def _snapshot() -> tuple[float, float, float] | None:
        try:
            with open("/proc/stat", encoding="ascii") as f:
                fields = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        busy = sum(fields[:8]) - fields[3] - fields[4]  # all but idle and iowait
        own = os.times()
        return busy / os.sysconf("SC_CLK_TCK"), own.user + own.system, time.monotonic()

    def others_share(self) -> float | None:
        end = self._snapshot()
        if self._start is None or end is None:
            return None
        busy, own, wall = (b - a for a, b in zip(self._start, end, strict=True))
        return max(0.0, busy - own) / (wall * (os.cpu_count() or 1)) if wall > 0 else None


def busy_share(seconds: float) -> float | None:
    """The share of the machine's CPU that was busy over the next `seconds` (Linux)."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            before = [int(x) for x in f.readline().split()[1:8]]
        time.sleep(seconds)
        with open("/proc/stat", encoding="ascii") as f:
            after = [int(x) for x in f.readline().split()[1:8]]
    except (OSError, ValueError):
        return None
    delta = [b - a for a, b in zip(before, after, strict=True)]
    total = sum(delta)
    return (total - delta[3] - delta[4]) / total if total else 0.0


class Runs:
    """How the timed runs went: how many, how many were repeated because other processes
    took the CPU, how disturbed the kept ones were, and how long was spent waiting for quiet."""

    def __init__(self, wait_budget: float, patience: float):
        self.runs = self.retries = 0
        self.worst_kept = 0.0
        self.waited = 0.0
        self.wait_budget = wait_budget
        self._deadline = time.monotonic() + patience

    def patient(self) -> bool:
        """Whether runs may still wait or be repeated: not past the benchmark's time budget."""
        return time.monotonic() < self._deadline

    def wait_for_quiet(self) -> None:
        """Before a timed run, wait while other processes keep the machine busy (within the
        waiting budget and the time budget: the benchmark always ends)."""
        while self.waited < self.wait_budget and self.patient():
            share = busy_share(1.0)
            self.waited += 1.0
            if share is None or share < RETRY_ABOVE:
                return

    def summary(self, others: float) -> str:
        """The report's line on how disturbed the run was; `others`: the share of the CPU other
        processes used over the whole run (`CpuMonitor`)."""
        warning = (
            " (WARNING: the timings may be distorted)" if self.worst_kept > RETRY_ABOVE else ""
        )
        return (
            f"other processes used {others:.1%} of the CPU during the run (waited "
            f"{self.waited:.0f}s for quiet); {self.retries} of {self.runs} timed runs were "
            f"repeated because they took more than {RETRY_ABOVE:.0%}; the most disturbed run "
            f"kept: {self.worst_kept:.1%}{warning}"
        )


def interleaved(
    variants: dict[str, Callable[[], dict]], rounds: int, label: str, runs: Runs
) -> tuple[dict[str, float], dict[str, dict]]:
    """Median seconds of each variant over `rounds` rounds, the variants taking turns in a
    rotating order; and the last result of each (for the checks). Each run waits for a quiet
    machine first; one during which other processes took more than `RETRY_ABOVE` of the CPU
    is run again (at most `RETRIES` times) and the least disturbed run is kept."""
    names = list(variants)
    times: dict[str, list[float]] = {name: [] for name in names}
    results: dict[str, dict] = {}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            best = None
            for attempt in range(RETRIES + 1):
                runs.wait_for_quiet()
                monitor = CpuMonitor()
                start = time.perf_counter()
                results[name] = variants[name]()
                seconds = time.perf_counter() - start
                others = monitor.others_share() or 0.0
                if best is None or others < best[1]:
                    best = (seconds, others)
                if others <= RETRY_ABOVE or not runs.patient() or attempt == RETRIES:
                    break
                runs.retries += 1
                log(f"  {name}: other processes took {others:.0%} of the CPU, run again")
            runs.runs += 1
            runs.worst_kept = max(runs.worst_kept, best[1])
            times[name].append(best[0])
        log(
            f"{label} round {r + 1}/{rounds}: "
            + ", ".join(f"{n} {times[n][-1]:.2f}s" for n in names)
        )
    return {name: statistics.median(t) for name, t in times.items()}, results


def table(header: Sequence[str], rows: list[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(header, widths, strict=True))]
    lines.append("-+-".join("-" * w for w in widths))
    lines += [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)
