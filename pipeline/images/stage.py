"""FetchImages, the images stage in the graph: every pair's image fetched, verified, hashed and
stored, the pair leaving with a reference to it, or dropped with one of `REASONS`.

The DoFn hands each pair to a `FetchScheduler` (`pipeline.images.scheduler`), which runs the
`ImageFetcher` (`pipeline.images.fetcher`) and the codec (`pipeline.images.codec`) on thread
pools; the images go into the run's `ImageStore` (`pipeline.images.cache.image_store`). No pair
makes the stage fail: anything unexpected on one pair is `images_error`.
"""

from __future__ import annotations

import concurrent.futures
import uuid
from collections.abc import Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from pipeline import progress
from pipeline.config import ImagesConfig
from pipeline.hosts import gates_for_run
from pipeline.images.codec import set_pillow_bomb_guard
from pipeline.images.fetcher import REASONS, STAGE, ImageFetcher, host_gates
from pipeline.images.scheduler import FetchScheduler
from pipeline.machine import available_cores
from pipeline.records import DROPPED, Drop, SpreadPairs
from pipeline.steps import Step
from pipeline.store import ImageStore, parse_ref

HOSTS = "hosts"  # the tag of the per-host counts


class _FetchImagesFn(beam.DoFn):
    """Fetches the pairs of a bundle concurrently: `process` hands each pair to the scheduler and
    emits whatever has finished; `finish_bundle` waits for the rest. Each pair leaves in the
    window and with the timestamp it came in with. At most 2 x `concurrency` pairs are held, so
    a bundle's memory is bounded by that many images (`max_bytes` each at worst). `total`, the
    number of pairs of the stage, is for the progress line only."""

    def __init__(
        self,
        config: ImagesConfig,
        store: ImageStore,
        trusted_networks: Sequence[str],
        run: str,
        share: int = 1,
    ):
        self._config = config
        self._store = store
        self._trusted_networks = tuple(trusted_networks)
        self._run = run  # the host gates are shared by this run's instances in one process
        self._share = share
        self._kept = Metrics.counter(STAGE, "kept")
        self._dropped = Metrics.counter(STAGE, "dropped")
        self._bytes = Metrics.counter(STAGE, "bytes_read")
        self._stored_bytes = Metrics.counter(STAGE, "bytes_stored")
        self._cache_hits = Metrics.counter(STAGE, "cache_hits")
        self._cache_misses = Metrics.counter(STAGE, "cache_misses")
        self._total: int | None = None

    def setup(self):
        set_pillow_bomb_guard(self._config.max_pixels)
        self._gates = gates_for_run(self._run, lambda: host_gates(self._config, self._share))
        self._fetcher = ImageFetcher(
            self._config, self._store, self._trusted_networks, gates=self._gates
        )
        self._load_pool = concurrent.futures.ThreadPoolExecutor(
            self._config.concurrency, thread_name_prefix="images-load"
        )
        # Pillow, numpy and hashlib release the GIL, so threads use every core.
        self._store_pool = concurrent.futures.ThreadPoolExecutor(
            available_cores(), thread_name_prefix="images-store"
        )

    def start_bundle(self):
        c = self._config
        # One pack a bundle: closed (uploaded) before the bundle's pairs are committed.
        self._writer = self._store.writer()
        self._scheduler = FetchScheduler(
            self._fetcher,
            self._writer,
            self._load_pool,
            self._store_pool,
            c.concurrency,
            2 * c.concurrency,
            c.retries,
        )

    def process(
        self,
        pair,
        total: int | None = None,
        timestamp=beam.DoFn.TimestampParam,
        window=beam.DoFn.WindowParam,
    ):
        self._total = total
        self._scheduler.submit(pair, (timestamp, window))
        yield from self._emit(self._scheduler.ready())
        while self._scheduler.full:
            yield from self._emit(self._scheduler.ready(block=True))

    def finish_bundle(self):
        yield from self._emit(self._scheduler.drain())
        self._writer.close()
        # What the hosts did (requests, refusals, pauses), for stats.json: each count is taken
        # once, by whichever instance of the process asks first after it happened.
        for host, stats in self._gates.take_stats():
            yield beam.pvalue.TaggedOutput(
                HOSTS, WindowedValue((host, stats), MIN_TIMESTAMP, (GlobalWindow(),))
            )

    def teardown(self):
        for pool in (getattr(self, "_load_pool", None), getattr(self, "_store_pool", None)):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
        if getattr(self, "_fetcher", None) is not None:
            self._fetcher.close()

    def _emit(self, finished):
        if finished:
            progress.note(STAGE, self._gates.describe())
        for (timestamp, window), result, nbytes in finished:
            progress.advance(STAGE, total=self._total, unit="pairs")
            self._bytes.inc(nbytes)
            if isinstance(result, Drop):
                self._dropped.inc()
                REASONS.count(result)
                yield beam.pvalue.TaggedOutput(DROPPED, WindowedValue(result, timestamp, (window,)))
            else:
                self._kept.inc()
                self._stored_bytes.inc(parse_ref(result.image_ref)[2])
                yield WindowedValue(result, timestamp, (window,))
        # The cache counts in the load threads, where Beam counters are not bound.
        hits, misses = self._fetcher.take_counts()
        self._cache_hits.inc(hits)
        self._cache_misses.inc(misses)


class FetchImages(Step):
    """Gets, verifies, hashes and stores the image of every pair. Returns `(pairs, dropped)`,
    and with `with_hosts` also the per-host counts `(host, {requests, throttled, pauses,
    paused_seconds, ...})` for `stats.json` (`pipeline.hosts.merge_host_stats`).

    Each kept pair carries `image_ref`, the reference of its stored image in `store` (see
    `image_store`: the run's staging store, or the image cache); the bytes stay out of the
    graph until `WriteDataset` reads them back. With `config.fetch` False the pairs pass through
    untouched (URL-only rows) and nothing is dropped. `share`: the worker processes the run is
    known to have, among which a configured host's limits are divided (`pipeline.hosts`).
    `trusted_networks` is for tests only (see `pipeline.http.AddressPolicy`).

    A `Step` by its declaration (`REASONS`, made by the fetcher); it judges pairs many at a
    time, by its own `expand`, and counts each drop as it routes it.
    """

    REASONS = REASONS

    def __init__(
        self,
        config: ImagesConfig,
        store: ImageStore,
        *,
        share: int = 1,
        with_hosts: bool = False,
        trusted_networks: Sequence[str] = (),
    ):
        super().__init__()
        self._config = config
        self._store = store
        self._share = share
        self._with_hosts = with_hosts
        self._trusted_networks = tuple(trusted_networks)
        self._run = uuid.uuid4().hex

    def expand(self, pairs):
        if not self._config.fetch:
            none = pairs.pipeline | "NoDrops" >> beam.Create([]).with_output_types(Drop)
            if self._with_hosts:
                return pairs, none, pairs.pipeline | "NoHosts" >> beam.Create([])
            return pairs, none
        # How many there are, for the ETA of the progress line (the Reshuffle holds them anyway).
        total = beam.pvalue.AsSingleton(
            pairs | "CountForProgress" >> beam.combiners.Count.Globally()
        )
        fetch = _FetchImagesFn(
            self._config, self._store, self._trusted_networks, self._run, self._share
        )
        fetched = (
            pairs
            # Readers emit a shard's pairs from one worker; spread the slow fetches out.
            | "Spread" >> SpreadPairs()
            | "Fetch" >> beam.ParDo(fetch, total).with_outputs(DROPPED, HOSTS, main="kept")
        )
        if self._with_hosts:
            return fetched.kept, fetched[DROPPED], fetched[HOSTS]
        return fetched.kept, fetched[DROPPED]
