"""Per-host limits and the adaptive slowing of a host that refuses (pipeline.hosts), on a
clock the test moves."""

from __future__ import annotations

import threading
import time

from pipeline.config import HostLimits
from pipeline.hosts import (
    PROBE_AFTER,
    RESET_AFTER,
    HostGate,
    HostGates,
    Ticket,
    merge_host_stats,
)
from pipeline.http import retry_after_seconds


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def gate(concurrency=4, rps=0.0, bps=0.0, pause=2.0, max_pause=30.0, jitter=0.5):
    clock = Clock()
    g = HostGate(
        "h.example",
        HostLimits(concurrency, rps, bps),
        pause,
        max_pause,
        clock=clock,
        jitter=lambda: jitter,  # 0.5: no jitter (0.75 + 0.5 * 0.5 = 1)
    )
    return g, clock


def take(g: HostGate, n: int) -> list[Ticket]:
    tickets = [g.try_acquire() for _ in range(n)]
    assert all(isinstance(t, Ticket) for t in tickets), tickets
    return tickets


def test_concurrency_is_a_hard_bound():
    g, _ = gate(concurrency=2)
    a, b = take(g, 2)
    assert g.try_acquire() == 0.0  # wait for an answer
    g.release(a)
    take(g, 1)
    assert g.take_stats()["max_in_flight"] == 2


def test_a_refusal_without_retry_after_pauses_and_halves_then_recovers_step_by_step():
    g, clock = gate(concurrency=4)
    tickets = take(g, 4)
    g.release(tickets[0], throttled=True)
    # Paused for `pause` seconds, concurrency halved from the 4 in flight.
    assert g.try_acquire() == 2.0
    assert g.allowed == 2
    # The other requests sent before the refusal are one incident, not three.
    for t in tickets[1:]:
        g.release(t, throttled=True)
    assert g.try_acquire() == 2.0
    clock.now += 2.0
    a, b = take(g, 2)
    assert g.try_acquire() == 0.0
    # Clean answers grow the limit back, but not past the refused level (3) for PROBE_AFTER.
    for _ in range(10):
        g.release(a)
        a = take(g, 1)[0]
    assert g.allowed == 3
    clock.now += PROBE_AFTER
    for _ in range(10):
        g.release(a)
        a = take(g, 1)[0]
    assert g.allowed == 4
    stats = g.take_stats()
    assert (stats["throttled"], stats["pauses"], stats["paused_seconds"]) == (4, 1, 2.0)


def test_pauses_double_up_to_the_cap_and_start_over_after_clean_answers():
    g, clock = gate(concurrency=1, pause=2.0, max_pause=5.0)
    waits = []
    for _ in range(4):
        t = take(g, 1)[0]
        g.release(t, throttled=True)
        wait = g.try_acquire()
        waits.append(wait)
        clock.now += wait
    assert waits == [2.0, 4.0, 5.0, 5.0]
    for _ in range(RESET_AFTER):
        g.release(take(g, 1)[0])
    g.release(take(g, 1)[0], throttled=True)
    assert g.try_acquire() == 2.0


def test_retry_after_is_honoured_up_to_max_pause_and_jitter_spreads_the_pauses():
    g, clock = gate(concurrency=2, max_pause=30.0)
    g.release(take(g, 1)[0], throttled=True, retry_after=7.0)
    assert g.try_acquire() == 7.0
    clock.now += 7.0
    g.release(take(g, 1)[0], throttled=True, retry_after=3600.0)
    assert g.try_acquire() == 30.0
    low, _ = gate(jitter=0.0)
    high, _ = gate(jitter=1.0)
    for g in (low, high):
        g.release(take(g, 1)[0], throttled=True)
    assert (low.try_acquire(), high.try_acquire()) == (1.5, 2.5)


def test_requests_per_second_spaces_the_starts():
    g, clock = gate(concurrency=10, rps=4.0)
    take(g, 1)
    assert g.try_acquire() == 0.25
    clock.now += 0.25
    take(g, 1)


def test_bytes_per_second_allows_a_second_of_burst_then_paces():
    g, clock = gate(bps=1000.0)
    assert g.consume(800) == 0.0  # within the burst
    assert g.consume(700) == 0.5  # 1,500 bytes: half a second beyond the burst
    clock.now += 10.0
    assert g.consume(1000) == 0.0
    stats = g.take_stats()
    assert (stats["rate_waits"], stats["rate_wait_seconds"]) == (1, 0.5)


def test_gates_divide_a_configured_hosts_limits_among_worker_processes():
    hosts = (("upload.wikimedia.org", HostLimits(2, 0.0, 3_125_000)),)
    gates = HostGates(hosts, per_host=8, pause=1.0, max_pause=10.0, share=2)
    wikimedia = gates.get("upload.wikimedia.org")
    assert wikimedia.limits == HostLimits(1, 0.0, 1_562_500)
    assert gates.get("other.example").limits == HostLimits(8)  # per_host is per process
    assert gates.get("upload.wikimedia.org") is wikimedia


def test_stats_are_taken_once_and_merge_across_processes():
    gates = HostGates((), per_host=2, pause=1.0, max_pause=10.0)
    g = gates.get("a.example")
    t = g.try_acquire()
    g.release(t, throttled=True, retry_after=0.0)
    [(host, first)] = gates.take_stats()
    assert host == "a.example" and first["requests"] == 1 and first["throttled"] == 1
    assert gates.take_stats() == []
    merged = merge_host_stats([("a.example", first), ("a.example", dict(first, max_in_flight=2))])
    assert merged["a.example"]["requests"] == 2 and merged["a.example"]["max_in_flight"] == 2


def test_a_gate_holds_its_bound_under_threads():
    g = HostGate("h.example", HostLimits(3), 0.01, 0.1)
    seen, lock = [], threading.Lock()
    active = [0]

    def worker():
        for _ in range(200):
            ticket = g.try_acquire()
            if not isinstance(ticket, Ticket):
                continue
            with lock:
                active[0] += 1
                seen.append(active[0])
            time.sleep(0.0005)
            with lock:
                active[0] -= 1
            g.release(ticket)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert max(seen) == 3 and g.take_stats()["max_in_flight"] <= 3


def test_retry_after_in_seconds_or_as_a_date():
    """One reading of Retry-After for the image hosts and the MediaWiki API."""
    import email.utils

    assert retry_after_seconds("7") == 7.0 and retry_after_seconds(" 1.5 ") == 1.5
    assert retry_after_seconds("-3") == 0.0
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None
    later = email.utils.formatdate(time.time() + 60, usegmt=True)
    assert 55 <= retry_after_seconds(later) <= 60
    assert retry_after_seconds(email.utils.formatdate(time.time() - 60, usegmt=True)) == 0.0
