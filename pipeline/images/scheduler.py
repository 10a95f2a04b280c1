"""FetchScheduler: the pairs of a bundle in flight at once. Downloads and local reads run on
`concurrency` threads, decoding and encoding on one thread per core, so a download thread is
never held up by CPU work."""

from __future__ import annotations

import collections
import concurrent.futures
import time
from collections.abc import Iterator
from typing import Any

from pipeline.hosts import Ticket
from pipeline.images.fetcher import (
    POLL,
    ImageFetcher,
    Miss,
    Throttled,
    retry_throttled,
    throttled_drop,
)
from pipeline.records import Drop, Pair
from pipeline.store import PackWriter


class FetchScheduler:
    """Runs the three steps of every pair on two thread pools: `lookup` (the cache, a local
    file) and `download_pair` on the load pool, `store` on the store pool. It keeps at most
    `concurrency` lookups and downloads in flight, each download within its host's gate
    (`pipeline.hosts`: the host's limits, slowed and paused after a 429 or 503), and at most
    `max_buffered` pairs held in all (waiting, loading, loaded, storing).

    The two pools keep downloads flowing while images decode: a download thread is free as soon
    as its bytes are in, whatever the CPU is doing. Downloads wait in one queue per host and
    start round-robin across hosts, so a slow, limited or paused host holds back only its own
    pairs. A pair the host refused goes back to the front of its queue, `retries` times.
    Used from one thread (the DoFn's).
    """

    def __init__(
        self,
        fetcher: ImageFetcher,
        writer: PackWriter,
        load_pool: concurrent.futures.Executor,
        store_pool: concurrent.futures.Executor,
        concurrency: int,
        max_buffered: int,
        retries: int = 0,
    ):
        self._fetcher = fetcher
        self._writer = writer
        self._load_pool = load_pool
        self._store_pool = store_pool
        self._concurrency = concurrency
        self._max_buffered = max_buffered
        self._retries = retries
        # host -> pairs to download, (pair, tag, miss, attempt); None -> pairs to look up
        self._waiting: collections.OrderedDict[str | None, collections.deque] = (
            collections.OrderedDict()
        )
        self._loading: dict[concurrent.futures.Future, tuple] = {}
        self._storing: dict[concurrent.futures.Future, tuple[Any, int]] = {}
        self._buffered = 0
        self._wake_at: float | None = None  # when a refusing gate may let a download start

    @property
    def full(self) -> bool:
        return self._buffered >= self._max_buffered

    def __len__(self) -> int:
        return self._buffered

    def submit(self, pair: Pair, tag: Any = None) -> None:
        self._buffered += 1
        # Lookups wait under the key None, taking their turn with the hosts' downloads.
        self._waiting.setdefault(None, collections.deque()).append((pair, tag))
        self._start()

    def ready(self, block: bool = False) -> list[tuple[Any, Pair | Drop, int]]:
        """Finished pairs as (tag, result, bytes read); with `block`, waits until some step
        finishes or a paused host may go on (so the list can be empty)."""
        pending = [*self._loading, *self._storing]
        timeout: float | None = 0.0
        if block:
            timeout = None
            if self._waiting:  # downloads a gate holds back: look again when it may open
                wake = self._wake_at if self._wake_at is not None else time.monotonic() + POLL
                timeout = min(1.0, max(0.001, wake - time.monotonic()))
        if pending:
            done, _ = concurrent.futures.wait(
                pending, timeout=timeout, return_when=concurrent.futures.FIRST_COMPLETED
            )
        else:
            if block and timeout:
                time.sleep(timeout)
            done = set()
        finished = []
        for future in done:
            if future in self._loading:
                self._loaded(future, finished)
            else:
                tag, nbytes = self._storing.pop(future)
                self._buffered -= 1
                finished.append((tag, future.result(), nbytes))
        self._start()
        return finished

    def _loaded(self, future: concurrent.futures.Future, finished: list) -> None:
        pair, tag, miss, attempt = self._loading.pop(future)
        result = future.result()
        if isinstance(result, Miss):
            self._waiting.setdefault(result.host, collections.deque()).append(
                (pair, tag, result, 0)
            )
        elif isinstance(result, Throttled):
            if retry_throttled(result, attempt, self._retries):
                queue = self._waiting.setdefault(miss.host, collections.deque())
                queue.appendleft((pair, tag, miss, attempt + 1))
            else:
                self._buffered -= 1
                finished.append((tag, throttled_drop(pair, result), 0))
        elif isinstance(result, (Pair, Drop)):  # a drop, or a pair the cache finished
            self._buffered -= 1
            finished.append((tag, result, 0))
        else:
            stored = self._store_pool.submit(self._fetcher.store, pair, result, self._writer)
            self._storing[stored] = (tag, len(result.data))

    def drain(self) -> Iterator[tuple[Any, Pair | Drop, int]]:
        while self._buffered:
            yield from self.ready(block=True)

    def _start(self) -> None:
        self._wake_at = None
        started = True
        while started and len(self._loading) < self._concurrency:
            started = False
            for host in list(self._waiting):
                if len(self._loading) >= self._concurrency:
                    break
                queue = self._waiting[host]
                if host is None:
                    pair, tag = queue.popleft()
                    future = self._load_pool.submit(self._fetcher.lookup, pair)
                    self._loading[future] = (pair, tag, None, 0)
                else:
                    gate = self._fetcher.gates.get(host)
                    ticket = gate.try_acquire()
                    if not isinstance(ticket, Ticket):
                        wake = time.monotonic() + (ticket or POLL)
                        self._wake_at = wake if self._wake_at is None else min(self._wake_at, wake)
                        continue
                    pair, tag, miss, attempt = queue.popleft()
                    future = self._load_pool.submit(
                        self._fetcher.download_pair, pair, miss, gate, ticket
                    )
                    self._loading[future] = (pair, tag, miss, attempt)
                if not queue:
                    del self._waiting[host]
                else:  # round-robin: this host goes to the back
                    self._waiting.move_to_end(host)
                started = True
