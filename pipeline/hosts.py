"""How hard the images stage presses each host: its limits, and slowing down when it says so.

Every download to a host goes through that host's `HostGate`, shared by all the threads and DoFn
instances of one worker process (one `HostGates` per run and process):

- **Limits** (`images.hosts` by host name, merged over `DEFAULT_HOSTS`; any other host gets
  `images.per_host` in flight and no rate limit): `concurrency` downloads in flight at once,
  `requests_per_second` started, `bytes_per_second` of bodies read (a token bucket holding one
  second's worth). Wikimedia's defaults are its robot policy's: upload.wikimedia.org at most 2 in
  flight and 25 Mbps.
- **Adaptive** (AIMD, as polite crawlers do): a 429 or 503 slows every request to the host, not
  only the one retried. The host pauses: for its `Retry-After` when it gives one (up to
  `max_pause`), else for `pause` seconds at first, doubling with each new refusal up to
  `max_pause`, with +-25 % jitter; the doubling starts over after `RESET_AFTER` clean answers.
  Its concurrency is halved (never below 1) and held below the level that was refused for
  `PROBE_AFTER` seconds; it then grows back by one slot per window of clean answers
  (`1/limit` per answer) up to the configured limit. Requests already in flight when the
  host refused are one incident, not many: only the first refusal of an epoch cuts and pauses.
- **Counted**: requests, refusals (429/503), pauses and paused seconds, the most in flight at
  once, per host; `take_stats` hands the counts over once (they go to `stats.json`'s `hosts`),
  and `describe` makes the progress line's note.

Bounds hold per worker process. `share` divides a configured host's limits among the worker
processes a run is known to have (the local runner's `--direct_num_workers` in
multi_processing mode), so that a local run keeps Wikimedia's limits in all; on Dataflow or
Flink the limits are per worker process (README, "Politeness").
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable
from typing import NamedTuple

from pipeline.config import HostLimits

RESET_AFTER = 8  # clean answers after which a host's next pause is `pause` again
PROBE_AFTER = 60.0  # seconds a refused concurrency level stays out of reach
THROTTLE_STATUSES = frozenset({429, 503})
BURST_SECONDS = 1.0  # a bytes/s bucket holds this many seconds' worth


class Ticket(NamedTuple):
    """A permission to send one request to a host: the epoch it was given in, and how many
    were in flight with it."""

    epoch: int
    in_flight: int


class HostGate:
    """The limits and the adaptive state of one host in one worker process; thread-safe."""

    def __init__(
        self,
        host: str,
        limits: HostLimits,
        pause: float,
        max_pause: float,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
    ):
        self.host = host
        self.limits = limits
        self._clock = clock
        self._jitter = jitter
        self._lock = threading.Lock()
        self._first_pause = pause
        self._max_pause = max_pause
        self._next_pause = pause
        self._limit = float(limits.concurrency)  # allowed in flight now (AIMD)
        self._ceiling = limits.concurrency  # the level below a refused one, while it holds
        self._ceiling_until = 0.0
        self._in_flight = 0
        self._paused_until = 0.0
        self._clean = 0
        self._epoch = 0
        self._next_start = 0.0  # requests_per_second: when the next request may start
        self._paid_until = 0.0  # bytes_per_second: the bytes read so far are paid up to then
        self._stats = _empty_stats()

    @property
    def allowed(self) -> int:
        """Downloads the host may have in flight now."""
        return max(1, min(int(self._limit), self._ceiling))

    def try_acquire(self) -> Ticket | float:
        """A ticket to start a request now, or the seconds to wait before asking again (0.0:
        until a request in flight answers)."""
        with self._lock:
            now = self._clock()
            if now < self._paused_until:
                return self._paused_until - now
            if self._ceiling_until and now >= self._ceiling_until:
                self._ceiling, self._ceiling_until = self.limits.concurrency, 0.0
            if self._in_flight >= self.allowed:
                return 0.0
            rate = self.limits.requests_per_second
            if rate > 0:
                if now < self._next_start:
                    return self._next_start - now
                self._next_start = max(now, self._next_start) + 1.0 / rate
            self._in_flight += 1
            self._stats["requests"] += 1
            self._stats["max_in_flight"] = max(self._stats["max_in_flight"], self._in_flight)
            return Ticket(self._epoch, self._in_flight)

    def release(
        self, ticket: Ticket, throttled: bool = False, retry_after: float | None = None
    ) -> None:
        """The request of `ticket` is over: answered (`throttled` when the host refused it with
        429 or 503, `retry_after` its header in seconds), failed or never sent."""
        with self._lock:
            in_flight = self._in_flight
            self._in_flight -= 1
            if not throttled:
                self._clean += 1
                if self._clean >= RESET_AFTER:
                    self._next_pause = self._first_pause
                if self._limit < self._ceiling:
                    self._limit = min(float(self._ceiling), self._limit + 1.0 / self._limit)
                return
            self._stats["throttled"] += 1
            self._clean = 0
            if ticket.epoch != self._epoch:
                return  # sent before the host's last refusal, which was reacted to already
            self._epoch += 1
            now = self._clock()
            level = min(self._limit, float(in_flight))
            self._ceiling = max(1, in_flight - 1)
            self._ceiling_until = now + PROBE_AFTER
            self._limit = max(1.0, min(level / 2, float(self._ceiling)))
            if retry_after is not None:
                wait = min(max(retry_after, 0.0), self._max_pause)
            else:
                wait = self._next_pause * (0.75 + 0.5 * self._jitter())
                self._next_pause = min(self._next_pause * 2, self._max_pause)
            until = now + wait
            if until > self._paused_until:
                self._stats["pauses"] += 1
                self._stats["paused_seconds"] += until - max(now, self._paused_until)
                self._paused_until = until

    def consume(self, nbytes: int) -> float:
        """Counts `nbytes` of body read; the seconds the reader should sleep to keep the host's
        `bytes_per_second` (0.0 when it has none or is within it)."""
        rate = self.limits.bytes_per_second
        if rate <= 0:
            return 0.0
        with self._lock:
            now = self._clock()
            self._paid_until = max(self._paid_until, now - BURST_SECONDS) + nbytes / rate
            wait = self._paid_until - now
            if wait <= 0:
                return 0.0
            self._stats["rate_waits"] += 1
            self._stats["rate_wait_seconds"] += wait
            return wait

    def state(self) -> tuple[int, int, float]:
        """(in flight, allowed, seconds of pause left)."""
        with self._lock:
            pause = max(0.0, self._paused_until - self._clock())
            return self._in_flight, self.allowed, pause

    def take_stats(self) -> dict[str, float]:
        """The counts since the last call (`max_in_flight`: the most since the gate began)."""
        with self._lock:
            stats, peak = self._stats, self._stats["max_in_flight"]
            self._stats = _empty_stats()
            self._stats["max_in_flight"] = peak
        return stats


def _empty_stats() -> dict[str, float]:
    return {
        "requests": 0,
        "throttled": 0,
        "pauses": 0,
        "paused_seconds": 0.0,
        "rate_waits": 0,
        "rate_wait_seconds": 0.0,
        "max_in_flight": 0,
    }


def shared_limits(limits: HostLimits, share: int) -> HostLimits:
    """`limits` for one of `share` worker processes: rates divided, concurrency divided and
    rounded down (at least 1 each)."""
    if share <= 1:
        return limits
    return HostLimits(
        concurrency=max(1, limits.concurrency // share),
        requests_per_second=limits.requests_per_second / share,
        bytes_per_second=limits.bytes_per_second / share,
    )


class HostGates:
    """The gates of one run in one process, made on first use: a configured host's from
    `hosts` (divided by `share`), any other's `per_host` in flight."""

    def __init__(
        self,
        hosts: Iterable[tuple[str, HostLimits]],
        per_host: int,
        pause: float,
        max_pause: float,
        share: int = 1,
    ):
        self.configured = {host.lower(): shared_limits(limits, share) for host, limits in hosts}
        self._default = HostLimits(concurrency=per_host)
        self._pause, self._max_pause = pause, max_pause
        self._gates: dict[str, HostGate] = {}
        self._lock = threading.Lock()

    def get(self, host: str) -> HostGate:
        gate = self._gates.get(host)
        if gate is None:
            with self._lock:
                gate = self._gates.get(host)
                if gate is None:
                    limits = self.configured.get(host, self._default)
                    gate = HostGate(host, limits, self._pause, self._max_pause)
                    self._gates[host] = gate
        return gate

    def take_stats(self) -> list[tuple[str, dict[str, float]]]:
        """Per host, the counts since the last call; hosts with nothing new are left out."""
        with self._lock:
            gates = list(self._gates.values())
        out = []
        for gate in gates:
            stats = gate.take_stats()
            if stats["requests"] or stats["throttled"] or stats["rate_waits"]:
                out.append((gate.host, stats))
        return out

    def describe(self) -> str:
        """The hosts holding downloads back now, for the progress line ('' when none)."""
        with self._lock:
            gates = list(self._gates.values())
        notes = []
        for gate in gates:
            in_flight, allowed, pause = gate.state()
            configured = gate.limits.concurrency
            if pause > 0:
                notes.append(f"{gate.host} paused {pause:.0f}s (429/503)")
            elif allowed < configured:
                notes.append(f"{gate.host} slowed to {allowed}/{configured} in flight")
        return "; ".join(notes)


_registry: dict[str, HostGates] = {}
_registry_lock = threading.Lock()


def gates_for_run(run: str, factory: Callable[[], HostGates]) -> HostGates:
    """The process's `HostGates` of run `run`, made by `factory` on first use: every DoFn
    instance of the run in this process shares them."""
    with _registry_lock:
        gates = _registry.get(run)
        if gates is None:
            gates = _registry[run] = factory()
        return gates


def merge_host_stats(entries: Iterable[tuple[str, dict[str, float]]]) -> dict[str, dict]:
    """Per-host counts summed (`max_in_flight`: the most any one process saw), for
    `stats.json`: {host: {requests, throttled, pauses, paused_seconds, ...}}."""
    merged: dict[str, dict[str, float]] = {}
    for host, stats in entries:
        into = merged.setdefault(host, _empty_stats())
        for key, value in stats.items():
            if key == "max_in_flight":
                into[key] = max(into[key], value)
            else:
                into[key] += value
    for stats in merged.values():
        for key in ("paused_seconds", "rate_wait_seconds"):
            stats[key] = round(stats[key], 3)
    return dict(sorted(merged.items()))
