"""DropDuplicates: one pair per distinct (image, caption), and no placeholder images.

Semantics (issue #5):

- Two images are the same when their sha256 are equal or their pHash Hamming distance is at
  most `max_hamming`; the relation is closed transitively, so image groups are the connected
  components (A~B and B~C put A and C in one group even when A and C are far apart).
- Two pairs are duplicates when their images are in one group and their captions are equal
  after `caption_key`. One survives, by priority: `genuine` before `translated`, then the
  manifest's source order, then the smallest id (then the input file and line, for copies of one
  record) - never arrival order. The others are dropped as `duplicate` with the survivor's id as
  detail. Distinct captions of one image all survive (COCO's five captions are five rows).
- A placeholder ("photo unavailable") is an image group reached from at least
  `placeholder_min_urls` distinct locations (`url_key` of `image_url`, else `image_path`) whose
  captions are not all equal; all its pairs are dropped as `placeholder_image`.
- Pairs without an image (URL-only runs: no pHash and no sha256) are duplicates when their
  `url_key` and `caption_key` are equal; a pair with neither URL nor path is never a duplicate.

How: the stage shuffles only a small `DedupeKey` per pair (id, priority, pHash, digests of the
sha256, caption and location; about 100 bytes) into one worker, where `decide` computes the image
groups and every verdict: the component computation needs all hashes in one place anyway. 2.1M
keys are 250 MB of numpy columns there (a bundle's keys become columns as they arrive), and the
search peaks at about 600 MB more; `decide` takes 16-35 s on 2 cores (benchmarks/dedupe.py).
The verdicts of the losers come back to the pairs as a dict side input keyed by a random token
that the keying step gave each pair, so the pairs themselves (image bytes included) never go
through a grouping. The token, not the id, names a pair because ids repeat: the
same record read twice (an overlapping glob, `wit` and `wit#2` over one shard) has one id.

Near duplicates are found by multi-index hashing (`near_pairs`, `hash_groups`: pure numpy, usable
without Beam). The 64-bit hash is split into m bands; two hashes within distance k agree on some
band up to floor(k/m) bits (pigeonhole), so probing each band's values within that radius finds
every pair. Every candidate is verified by its real Hamming distance, and the groups are joined
with a union-find. `plan_search` picks m from k and the number of distinct hashes with a cost
model (k = 8 on 2.1M hashes: 3 bands of 22/21/21 bits probed at radius 2), or all pairs when that
is cheaper (small inputs, very large k). Identical hashes are collapsed first, so a common value
(all-black images) costs nothing; a band value shared by many distinct hashes is verified in
blocks of at most `block` candidates, so one key never holds more than that in memory.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import math
import random
import re
import sys
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import cache, partial
from itertools import combinations
from typing import NamedTuple
from urllib.parse import unquote

import apache_beam as beam
import numpy as np

from pipeline.machine import available_cores
from pipeline.records import DROPPED, GENUINE, TRANSLATED, Pair
from pipeline.steps import Reasons, Step

STAGE = "dedupe"
DUPLICATE = "duplicate"
PLACEHOLDER = "placeholder_image"
REASONS = Reasons(
    STAGE,
    {
        DUPLICATE: "the same or a near-same image (pHash within dedupe.max_hamming) as a pair "
        "that wins: genuine before translated, then manifest order (detail: the winner's id)",
        PLACEHOLDER: "the image is a placeholder: reached from dedupe.placeholder_min_urls "
        "distinct URLs with differing captions",
    },
)

HASH_BITS = 64
# Candidates expanded and verified at once: bounds the memory of one step (about 40 bytes each).
DEFAULT_BLOCK = 1 << 22
# A band's bucket lookup uses a dense table (2**width int32) when the band's distinct values fill
# at least this share of it, else a binary search over the sorted values.
DENSE_MIN_FILL = 1 / 64
# Relative costs per probe, per verified candidate, per brute-force comparison and per pass over a
# band (numpy calls' fixed cost), roughly as on this project's machine: a candidate is two random
# gathers, a brute-force pair a streaming xor.
PROBE_COST, CANDIDATE_COST, BRUTE_COST, PASS_COST = 1.0, 2.0, 0.25, 20_000.0

# ---------------------------------------------------------------------------- text and URL keys

# Arabic diacritics (harakat, shadda, sukun, superscript alef, Quranic annotation marks) and
# tatweel: they vary between copies of one caption without changing it.
_ARABIC_MARKS = (
    *range(0x0610, 0x061B),
    *range(0x064B, 0x0660),
    0x0670,
    *range(0x06D6, 0x06DD),
    *range(0x06DF, 0x06E5),
    0x06E7,
    0x06E8,
    *range(0x06EA, 0x06EE),
    0x0640,
)


@cache
def _caption_table() -> dict[int, str | None]:
    # Built once per process (about 0.1 s): Unicode punctuation becomes a space; format characters
    # (bidi marks, zero-width joiners) and the Arabic marks above disappear.
    table: dict[int, str | None] = dict.fromkeys(_ARABIC_MARKS)
    for code in range(sys.maxunicode + 1):
        category = unicodedata.category(chr(code))
        if category[0] == "P":
            table[code] = " "
        elif category == "Cf":
            table[code] = None
    return table


def caption_key(text: str) -> str:
    """The caption as compared for duplicates: NFKC, casefolded, Arabic diacritics and tatweel
    removed, format characters removed, punctuation made a space, whitespace runs one space,
    stripped. `"القِطّةُ ، السوداء!"` and `"القطة السوداء"` have one key. Letters are not folded
    further (alef forms, ta marbuta and alef maqsura stay distinct), nor are digits."""
    text = unicodedata.normalize("NFKC", text).casefold().translate(_caption_table())
    return " ".join(text.split())


# /<wiki>/thumb/<h>/<hh>/<Name>/<W>px-<Name or "thumbnail.ext">, and the prefixed variants
# (`lossy-page1-220px-…`, `220px-Name.svg.png`): the thumbnail of the file /<wiki>/<h>/<hh>/<Name>.
_WIKIMEDIA_THUMB = re.compile(
    r"^(?P<wiki>.*)/thumb/(?P<file>(?P<h>[0-9a-f])/(?P=h)[0-9a-f]/[^/]+)/[^/]*\d+px-[^/]+$"
)


# scheme://user@host:port/path?query#fragment, or //host/path (taken as https).
_URL = re.compile(
    r"^(?:[A-Za-z][A-Za-z0-9+.-]*:)?//(?:[^@/?#]*@)?(?P<host>\[[^\]/?#]*\]|[^:/?#]*)"
    r"(?::(?P<port>[0-9]*))?(?P<path>[^?#]*)"
)


def url_key(url: str) -> str:
    """The location an image URL names, as compared for placeholders and URL-only duplicates:
    scheme, query, fragment, user info and a default port dropped, host lowercased, the path
    percent-decoded, and a MediaWiki thumbnail (`/thumb/a/ab/Name.jpg/220px-Name.jpg`) replaced
    by its original file (`/a/ab/Name.jpg`). Anything without `//host` is kept as it is, less
    its query and fragment."""
    url = url.strip()
    parts = _URL.match(url)
    if not parts:
        return url.split("#", 1)[0].split("?", 1)[0]
    host, port, path = parts["host"].lower(), parts["port"], parts["path"]
    if port and port.lstrip("0") not in ("80", "443"):
        host = f"{host}:{port.lstrip('0')}"
    if "%" in path:
        path = unquote(path)
    thumb = _WIKIMEDIA_THUMB.match(path)
    if thumb:
        path = f"{thumb['wiki']}/{thumb['file']}"
    return f"{host}{path}"


# ---------------------------------------------------------------------------- near-duplicate search


class Plan(NamedTuple):
    """A multi-index search: band widths from the most significant bit, probed at `radius`."""

    widths: tuple[int, ...]
    radius: int


def split_bands(bands: int, bits: int = HASH_BITS) -> tuple[int, ...]:
    """`bits` split into `bands` near-equal widths, wider first: 3 -> (22, 21, 21)."""
    base, extra = divmod(bits, bands)
    return tuple(base + 1 if i < extra else base for i in range(bands))


def band_plan(max_hamming: int, bands: int) -> Plan:
    """The exact plan with `bands` bands for distance `max_hamming`: radius floor(k / bands)."""
    if not 1 <= bands <= HASH_BITS:
        raise ValueError(f"bands must be in [1, {HASH_BITS}], got {bands}")
    return Plan(split_bands(bands), max_hamming // bands)


def _ball(width: int, radius: int) -> int:
    return sum(math.comb(width, i) for i in range(min(width, radius) + 1))


def plan_cost(plan: Plan, n: int) -> float:
    """Estimated work of `plan` on `n` distinct random hashes: each band probes half its values
    (upward only) against their radius ball, and verifies n^2/2 * ball / 2^width candidates."""
    cost = 0.0
    for width in plan.widths:
        ball = _ball(width, plan.radius)
        cost += PASS_COST * ball + PROBE_COST * min(n, 2**width) / 2 * (ball - 1)
        cost += CANDIDATE_COST * n * n / 2 * ball / 2**width
    return cost


def plan_search(max_hamming: int, n: int) -> Plan | None:
    """The cheapest exact plan for `n` distinct hashes, or None when comparing all pairs is
    cheaper. Bands are at most 22 bits (m >= 3), so a dense bucket table stays at 16 MB; more
    than k + 1 bands never help (the radius is already 0)."""
    if max_hamming == 0:
        return Plan((), 0)  # distinct hashes are never within distance 0
    best, best_cost = None, BRUTE_COST * n * n / 2
    for bands in range(3, max(3, max_hamming + 1) + 1):
        plan = band_plan(max_hamming, bands)
        cost = plan_cost(plan, n)
        if cost < best_cost:
            best, best_cost = plan, cost
    return best


def brute_force_pairs(
    hashes: np.ndarray, max_hamming: int, block: int = DEFAULT_BLOCK
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Every pair (i < j) of `hashes` within `max_hamming`, comparing all pairs in row blocks."""
    hashes = np.asarray(hashes, dtype=np.uint64)
    n = len(hashes)
    rows = max(1, block // max(n, 1))
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        # Each row i is compared with the hashes after it only.
        tail = hashes[start + 1 :]
        dist = np.bitwise_count(hashes[start:stop, None] ^ tail[None, :])
        within = dist <= max_hamming
        within &= np.arange(start + 1, n)[None, :] > np.arange(start, stop)[:, None]
        i, j = np.nonzero(within)
        yield (i + start).astype(np.int64), (j + start + 1).astype(np.int64)


class _Buckets:
    """The distinct values of one band, sorted, with where each one's run starts and its size."""

    def __init__(self, band_values: np.ndarray, width: int):
        n = len(band_values)
        new = np.ones(n, dtype=bool)
        new[1:] = band_values[1:] != band_values[:-1]
        self.starts = np.flatnonzero(new)
        self.values = band_values[self.starts]
        self.counts = np.diff(np.append(self.starts, n))
        self._table = None
        if len(self.values) >= DENSE_MIN_FILL * 2**width:
            self._table = np.full(2**width, -1, dtype=np.int32)
            self._table[self.values] = np.arange(len(self.values), dtype=np.int32)

    def find(self, targets: np.ndarray) -> np.ndarray:
        """The bucket index of each target value, -1 where no hash has it."""
        if self._table is not None:
            return self._table[targets]
        found = np.searchsorted(self.values, targets)
        found[found == len(self.values)] = 0
        return np.where(self.values[found] == targets, found, -1)


def _masks(high: int, radius: int) -> Iterator[int]:
    """The flips of at most `radius` bits whose highest flipped bit is `high`."""
    for extra in range(radius):
        for low in combinations(range(high), extra):
            yield (1 << high) | sum(1 << b for b in low)


def _expand(
    sa: np.ndarray, ca: np.ndarray, sb: np.ndarray, cb: np.ndarray, block: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """All (a-position, b-position) candidates of the bucket pairs (sa + [0, ca)) x (sb + [0, cb)),
    at most max(block, cb) at a time: a bucket pair larger than `block` is cut into row slices."""
    sizes = ca * cb
    big = sizes > block
    if big.any():
        rows = np.maximum(1, block // cb[big])
        slices = -(-ca[big] // rows)
        which = np.repeat(np.flatnonzero(big), slices)
        first = np.arange(slices.sum()) - np.repeat(np.cumsum(slices) - slices, slices)
        offset = first * np.repeat(rows, slices)
        keep = ~big
        sa = np.concatenate([sa[keep], sa[which] + offset])
        ca = np.concatenate([ca[keep], np.minimum(np.repeat(rows, slices), ca[which] - offset)])
        sb = np.concatenate([sb[keep], sb[which]])
        cb = np.concatenate([cb[keep], cb[which]])
        sizes = ca * cb
    ends = np.cumsum(sizes)
    cuts = np.searchsorted(
        ends, np.arange(block, int(ends[-1]) if len(ends) else 0, block), "right"
    )
    for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(sizes)], strict=True):
        if lo == hi:
            continue
        size, cols = sizes[lo:hi], cb[lo:hi]
        which = np.repeat(np.arange(hi - lo), size)
        offset = np.arange(int(size.sum())) - np.repeat(np.cumsum(size) - size, size)
        yield sa[lo:hi][which] + offset // cols[which], sb[lo:hi][which] + offset % cols[which]


class _Band:
    """One band of the distinct hashes: bits [shift, shift + width), hashes sorted by it, so that
    a bucket (one band value) is a run of positions.

    The search is cut into tasks (`inside`, and `across` one highest flipped bit at a time) that
    threads can run at once: numpy releases the GIL in all the work they do.
    """

    def __init__(self, hashes: np.ndarray, shift: int, width: int, max_hamming: int, block: int):
        band = ((hashes >> np.uint64(shift)) & np.uint64((1 << width) - 1)).astype(np.int64)
        self.order = np.argsort(band, kind="stable")
        self.hashes = hashes[self.order]
        self.buckets = _Buckets(band[self.order], width)
        self.width, self.max_hamming, self.block = width, max_hamming, block

    def verify(self, i: np.ndarray, j: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The candidates (positions in band order) within distance, as indices of the input."""
        near = np.bitwise_count(self.hashes[i] ^ self.hashes[j]) <= self.max_hamming
        return self.order[i[near]], self.order[j[near]]

    def inside(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Verified pairs inside one bucket (the band values are equal)."""
        b = self.buckets
        shared = b.counts > 1
        if shared.any():
            s, c = b.starts[shared], b.counts[shared]
            for i, j in _expand(s, c, s, c, self.block):
                upper = i < j
                yield self.verify(i[upper], j[upper])

    def across(self, high: int, radius: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Verified pairs of buckets whose values differ in at most `radius` bits, the highest of
        them `high`. Only values with bit `high` clear probe (upward), so each pair is met once."""
        b = self.buckets
        low_side = ((b.values >> high) & 1) == 0
        values, starts, counts = b.values[low_side], b.starts[low_side], b.counts[low_side]
        for mask in _masks(high, radius):
            other = b.find(values ^ mask)
            hit = np.flatnonzero(other >= 0)
            if hit.size:
                other = other[hit]
                pairs = _candidates(
                    starts[hit], counts[hit], b.starts[other], b.counts[other], self.block
                )
                for i, j in pairs:
                    yield self.verify(i, j)


Task = Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]]


def _tasks(distinct: np.ndarray, max_hamming: int, plan: Plan | None, block: int) -> list[Task]:
    """The search for pairs of `distinct` (no repeated value) within `max_hamming`, as tasks that
    each yield blocks of verified pairs (a pair near in several bands comes once per band)."""
    if plan is None:
        return [partial(brute_force_pairs, distinct, max_hamming, block)]
    tasks: list[Task] = []
    shift = HASH_BITS
    for width in plan.widths:
        shift -= width
        band = _Band(distinct, shift, width, max_hamming, block)
        tasks.append(band.inside)
        if plan.radius:
            tasks.extend(partial(band.across, high, plan.radius) for high in range(width))
    return tasks


# Bucket pairs with both sides at most this large are expanded by offsets, the rest by `_expand`.
_SMALL = 4


def _candidates(
    sa: np.ndarray, ca: np.ndarray, sb: np.ndarray, cb: np.ndarray, block: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The candidates of bucket pairs (sa + [0, ca)) x (sb + [0, cb)). Most buckets hold one or
    two hashes: those are walked offset by offset, each step one pass over the pairs that still
    have a row (column) there; larger buckets go through the blocked `_expand`."""
    small = (ca <= _SMALL) & (cb <= _SMALL)
    rows, di = np.flatnonzero(small), 0
    while rows.size:
        cells, dj = rows, 0
        while cells.size:
            yield sa[cells] + di, sb[cells] + dj
            dj += 1
            cells = cells[cb[cells] > dj]
        di += 1
        rows = rows[ca[rows] > di]
    large = ~small
    if large.any():
        yield from _expand(sa[large], ca[large], sb[large], cb[large], block)


def _check_hashes(hashes, max_hamming: int) -> np.ndarray:
    if not 0 <= max_hamming <= HASH_BITS:
        raise ValueError(f"max_hamming must be in [0, {HASH_BITS}], got {max_hamming}")
    return np.asarray(hashes, dtype=np.uint64).ravel()


def near_pairs(
    hashes: np.ndarray | Sequence[int],
    max_hamming: int,
    *,
    plan: Plan | None | str = "auto",
    block: int = DEFAULT_BLOCK,
) -> np.ndarray:
    """Every pair of positions (i < j) whose hashes are within `max_hamming` bits, as an (P, 2)
    int64 array sorted by i then j. Equal hashes are within any distance.

    `plan`: "auto" (`plan_search`), a `Plan`, or None for brute force. The answer is exact for
    every plan; they differ in time only. Meant for tests and measurements: the pipeline needs
    only `hash_groups`, which never lists the pairs of a group of equal hashes.
    """
    hashes = _check_hashes(hashes, max_hamming)
    distinct, inverse = np.unique(hashes, return_inverse=True)
    if plan == "auto":
        plan = plan_search(max_hamming, len(distinct))
    tasks = _tasks(distinct, max_hamming, plan, block)
    edges = [np.stack(e, axis=1) for task in tasks for e in task()]
    edges.append(np.stack([np.arange(len(distinct))] * 2, axis=1))  # each value with itself
    edges = np.unique(np.sort(np.concatenate(edges), axis=1), axis=0)
    # Positions of each distinct value, then every (position of a, position of b) combination.
    by_value = np.argsort(inverse, kind="stable")
    starts = np.searchsorted(inverse[by_value], np.arange(len(distinct)))
    counts = np.bincount(inverse, minlength=len(distinct))
    a, b = edges[:, 0], edges[:, 1]
    out = []
    for i, j in _expand(starts[a], counts[a], starts[b], counts[b], 1 << 62):
        i, j = by_value[i], by_value[j]
        out.append(np.stack([np.minimum(i, j), np.maximum(i, j)], axis=1)[i != j])
    pairs = np.unique(np.concatenate(out), axis=0) if out else np.empty((0, 2), np.int64)
    return pairs.astype(np.int64)


class _Forest:
    """Union-find over 0..n-1 in numpy. Parents always point at smaller nodes, so a root is the
    smallest node of its tree; `labels` compresses every path and returns the roots."""

    def __init__(self, n: int):
        self.parent = np.arange(n, dtype=np.int64)

    def roots(self, nodes: np.ndarray) -> np.ndarray:
        """The root of each node; the nodes are pointed straight at it."""
        parent = self.parent
        up = parent[nodes]
        while True:
            higher = parent[up]
            if np.array_equal(higher, up):
                break
            up = higher
        parent[nodes] = up
        return up

    def union(self, a: np.ndarray, b: np.ndarray) -> None:
        """Joins the trees of a[i] and b[i] for every i. Work is proportional to the edges (and
        the depth of their trees), never to n."""
        while a.size:
            ra, rb = self.roots(a), self.roots(b)
            apart = ra != rb
            if not apart.any():
                return
            a, b, ra, rb = a[apart], b[apart], ra[apart], rb[apart]
            # Each root met is hooked under the smallest root it meets; chains that this makes
            # are followed by `roots` in the next round.
            np.minimum.at(self.parent, np.maximum(ra, rb), np.minimum(ra, rb))

    def labels(self) -> np.ndarray:
        """The root of every node."""
        parent = self.parent
        while True:
            higher = parent[parent]
            if np.array_equal(higher, parent):
                return parent
            parent[:] = higher


def hash_groups(
    hashes: np.ndarray | Sequence[int],
    max_hamming: int,
    *,
    plan: Plan | None | str = "auto",
    block: int = DEFAULT_BLOCK,
    workers: int | None = None,
) -> np.ndarray:
    """The connected component of each hash under "within `max_hamming`", as int64 labels: equal
    labels, one group. A label is the smallest index into the sorted distinct hashes of its
    group. `workers` threads search at once (default: one per core for 65,536 distinct hashes
    or more). Memory stays bounded by `block` candidates and a spanning forest per worker."""
    hashes = _check_hashes(hashes, max_hamming)
    distinct, inverse = np.unique(hashes, return_inverse=True)
    forest = _Forest(len(distinct))
    _connect(forest, distinct, max_hamming, plan=plan, block=block, workers=workers)
    return forest.labels()[inverse]


def _connect(
    forest: _Forest,
    distinct: np.ndarray,
    max_hamming: int,
    *,
    plan: Plan | None | str = "auto",
    block: int = DEFAULT_BLOCK,
    workers: int | None = None,
) -> None:
    """Joins in `forest` (whose first nodes are `distinct`) every two hashes within distance."""
    if plan == "auto":
        plan = plan_search(max_hamming, len(distinct))
    if workers is None:
        workers = available_cores() if len(distinct) >= 1 << 16 else 1
    tasks = _tasks(distinct, max_hamming, plan, block)
    if workers <= 1:
        results = map(partial(_spanning_edges, block=block), tasks)
        for a, b in results:
            forest.union(a, b)
        return
    with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="dedupe") as pool:
        for a, b in pool.map(partial(_spanning_edges, block=block), tasks):
            forest.union(a, b)


def _spanning_edges(task: Task, block: int) -> tuple[np.ndarray, np.ndarray]:
    """The verified pairs of `task`, reduced to a spanning forest (node, its root) whenever more
    than `block` are held: a band value shared by many near hashes yields up to n^2/2 pairs,
    but never more than n edges are kept."""
    held_a: list[np.ndarray] = []
    held_b: list[np.ndarray] = []
    size, limit = 0, block
    for a, b in task():
        if a.size:
            held_a.append(a)
            held_b.append(b)
            size += a.size
        if size > limit:
            a, b = _reduce(np.concatenate(held_a), np.concatenate(held_b))
            held_a, held_b, size = [a], [b], a.size
            limit = max(block, 2 * size)  # a forest near `limit` is not reduced over and over
    if not held_a:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return _reduce(np.concatenate(held_a), np.concatenate(held_b))


def _reduce(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edges with the connectivity of (a, b): each touched node to its component's root."""
    nodes, local = np.unique(np.concatenate([a, b]), return_inverse=True)
    forest = _Forest(len(nodes))
    forest.union(local[: len(a)], local[len(a) :])
    roots = forest.labels()
    moved = roots != np.arange(len(nodes))
    return nodes[moved], nodes[roots[moved]]


# ---------------------------------------------------------------------------- the decisions


class DedupeKey(NamedTuple):
    """What dedupe needs of a pair, and all that goes through its grouping (about 100 bytes).

    `token` names the pair for the join back (16 random bytes: ids can repeat). The digests are
    16-byte blake2b: of the sha256's hex, of `caption_key(caption_ar)`, and of the location,
    `url_key(image_url)` or else `image_path`. `phash` is the 64-bit pHash as a signed int64,
    None without an image. `position` digests the input file and line (the last tie-break).
    """

    token: bytes
    id: str
    origin_rank: int
    source_rank: int
    position: bytes
    caption: bytes
    phash: int | None = None
    sha256: bytes | None = None
    location: bytes | None = None


beam.coders.registry.register_coder(DedupeKey, beam.coders.RowCoder)

_ORIGIN_RANK = {GENUINE: 0, TRANSLATED: 1}


def _digest(text: str, size: int = 16) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=size).digest()


def parse_phash(text: str | None) -> int | None:
    """A 16-hex-digit pHash as a signed 64-bit int (numpy's int64 view of the bits); None for
    anything else, so a malformed hash falls back to sha256 matching."""
    if text is None or len(text) != 16:
        return None
    try:
        return int.from_bytes(bytes.fromhex(text), "big", signed=True)
    except ValueError:
        return None


def dedupe_key(pair: Pair, token: bytes, source_ranks: dict[str, int]) -> DedupeKey:
    """The `DedupeKey` of `pair`. A source not in `source_ranks` ranks after all of them."""
    location = url_key(pair.image_url) if pair.image_url else pair.image_path
    return DedupeKey(
        token=token,
        id=pair.id,
        origin_rank=_ORIGIN_RANK.get(pair.caption_origin, len(_ORIGIN_RANK)),
        source_rank=source_ranks.get(pair.source_name, len(source_ranks)),
        position=_digest(f"{pair.input_file}\x1f{pair.input_line}", 8),
        caption=_digest(caption_key(pair.caption_ar)),
        phash=parse_phash(pair.phash),
        sha256=None if pair.sha256 is None else _digest(pair.sha256),
        location=_digest(location) if location else None,
    )


class KeyColumns(NamedTuple):
    """Many `DedupeKey`s as numpy columns: 16-byte digests as (n, 2) uint64, absent ones as 0
    with a `has_` flag. Compact to ship and to concatenate; what `decide` works on."""

    token: np.ndarray
    id: np.ndarray  # bytes (UTF-8), so that it sorts as the str does
    origin_rank: np.ndarray
    source_rank: np.ndarray
    position: np.ndarray
    caption: np.ndarray
    phash: np.ndarray
    has_phash: np.ndarray
    sha256: np.ndarray
    has_sha256: np.ndarray
    location: np.ndarray
    has_location: np.ndarray

    def __len__(self) -> int:
        return len(self.id)


_ZERO16 = bytes(16)


def _words(items: list[bytes], size: int) -> np.ndarray:
    return np.frombuffer(b"".join(items), dtype=np.uint64).reshape(len(items), size // 8).copy()


def to_columns(keys: Sequence[DedupeKey]) -> KeyColumns:
    """`keys` as `KeyColumns`."""
    phash = [k.phash for k in keys]
    sha = [k.sha256 for k in keys]
    location = [k.location for k in keys]
    return KeyColumns(
        token=_words([k.token for k in keys], 16),
        id=np.array([k.id.encode("utf-8", "surrogatepass") for k in keys], dtype=bytes),
        origin_rank=np.array([k.origin_rank for k in keys], dtype=np.int8),
        source_rank=np.array([k.source_rank for k in keys], dtype=np.int32),
        position=_words([k.position for k in keys], 8)[:, 0],
        caption=_words([k.caption for k in keys], 16),
        phash=np.array([0 if p is None else p for p in phash], dtype=np.int64).view(np.uint64),
        has_phash=np.array([p is not None for p in phash], dtype=bool),
        sha256=_words([_ZERO16 if s is None else s for s in sha], 16),
        has_sha256=np.array([s is not None for s in sha], dtype=bool),
        location=_words([_ZERO16 if u is None else u for u in location], 16),
        has_location=np.array([u is not None for u in location], dtype=bool),
    )


def concat_columns(parts: Sequence[KeyColumns]) -> KeyColumns:
    """One `KeyColumns` of all of `parts`, in order."""
    if not parts:
        return to_columns([])
    return KeyColumns(*(np.concatenate(column) for column in zip(*parts, strict=True)))


def _codes(words: np.ndarray) -> np.ndarray:
    """Dense codes 0..u-1 of the rows of an (n, w) uint64 array, equal rows equal codes."""
    if len(words) == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort(words.T[::-1])
    ordered = words[order]
    new = np.ones(len(words), dtype=bool)
    new[1:] = (ordered[1:] != ordered[:-1]).any(axis=1)
    codes = np.empty(len(words), dtype=np.int64)
    codes[order] = np.cumsum(new) - 1
    return codes


def _pair_codes(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return _codes(np.stack([a.astype(np.uint64), b.astype(np.uint64)], axis=1))


class Verdict(NamedTuple):
    """A pair that loses: its token, the drop reason and the drop's detail."""

    token: bytes
    reason: str
    detail: str


def image_groups(
    cols: KeyColumns,
    max_hamming: int,
    *,
    plan: Plan | None | str = "auto",
    block: int = DEFAULT_BLOCK,
    workers: int | None = None,
) -> np.ndarray:
    """The group label of each key, -1 for keys without an image: keys with equal sha256 or
    pHashes within `max_hamming` (transitively) share a label."""
    # Nodes: the distinct pHashes, then the distinct sha256s; an image links its two nodes.
    phash_codes = np.full(len(cols), -1, dtype=np.int64)
    distinct, inverse = np.unique(cols.phash[cols.has_phash], return_inverse=True)
    phash_codes[cols.has_phash] = inverse
    sha_codes = np.full(len(cols), -1, dtype=np.int64)
    shas = _codes(cols.sha256[cols.has_sha256])
    sha_codes[cols.has_sha256] = shas + len(distinct)
    nodes = len(distinct) + int(shas.max(initial=-1)) + 1
    forest = _Forest(nodes)
    _connect(forest, distinct, max_hamming, plan=plan, block=block, workers=workers)
    both = cols.has_phash & cols.has_sha256
    forest.union(phash_codes[both], sha_codes[both])
    node = np.where(cols.has_phash, phash_codes, sha_codes)
    if not nodes:
        return node
    return np.where(node >= 0, forest.labels()[np.maximum(node, 0)], -1)


def decide(
    cols: KeyColumns,
    max_hamming: int,
    placeholder_min_urls: int,
    *,
    plan: Plan | None | str = "auto",
    block: int = DEFAULT_BLOCK,
    workers: int | None = None,
) -> list[Verdict]:
    """The losers among `cols`: `placeholder_image` for every pair of a placeholder group, and
    `duplicate` (detail: the survivor's id) for every pair but the first by priority of each
    (image group, caption key) or, without an image, (location, caption key)."""
    n = len(cols)
    if n == 0:
        return []
    imaged = cols.has_phash | cols.has_sha256
    group = image_groups(cols, max_hamming, plan=plan, block=block, workers=workers)
    top = int(group.max(initial=-1)) + 1
    location_codes = _codes(cols.location)
    # Without an image, the location is the group; without a location either, the pair is alone.
    url_only = ~imaged & cols.has_location
    group[url_only] = top + location_codes[url_only]
    alone = np.flatnonzero(~imaged & ~cols.has_location)
    group[alone] = top + n + np.arange(len(alone))
    caption_codes = _codes(cols.caption)

    verdicts: list[Verdict] = []
    placeholder = np.zeros(n, dtype=bool)
    if imaged.any():
        g = group[imaged]
        located = cols.has_location[imaged]
        urls = _distinct_per_group(g[located], location_codes[imaged][located], top)
        captions = _distinct_per_group(g, caption_codes[imaged], top)
        bad = (urls >= placeholder_min_urls) & (captions >= 2)
        placeholder[imaged] = bad[g]
        tokens = cols.token[placeholder]
        for token, label in zip(tokens, group[placeholder], strict=True):
            detail = f"{urls[label]} urls, {captions[label]} captions"
            verdicts.append(Verdict(token.tobytes(), PLACEHOLDER, detail))

    # Duplicate classes: (group, caption). Only classes of two or more need a survivor.
    rest = np.flatnonzero(~placeholder)
    classes = _pair_codes(group[rest], caption_codes[rest])
    size = np.bincount(classes)
    rest, classes = rest[size[classes] > 1], classes[size[classes] > 1]
    if rest.size:
        ids = cols.id[rest]
        id_rank = np.unique(ids, return_inverse=True)[1]
        order = np.lexsort(
            (
                cols.token[rest, 1],
                cols.token[rest, 0],
                cols.position[rest],
                id_rank,
                cols.source_rank[rest],
                cols.origin_rank[rest],
                classes,
            )
        )
        rest, classes, ids = rest[order], classes[order], ids[order]
        first = np.ones(len(rest), dtype=bool)
        first[1:] = classes[1:] != classes[:-1]
        survivor = np.flatnonzero(first)[np.cumsum(first) - 1]
        for loser in np.flatnonzero(~first):
            detail = ids[survivor[loser]].decode("utf-8", "surrogatepass")
            verdicts.append(Verdict(cols.token[rest[loser]].tobytes(), DUPLICATE, detail))
    return verdicts


def _distinct_per_group(groups: np.ndarray, codes: np.ndarray, size: int) -> np.ndarray:
    """For each group label below `size`: how many distinct codes (< 2**31) its members have."""
    keys = np.sort(groups.astype(np.int64) << 31 | codes)  # sorting beats np.unique's hashing
    distinct = keys[np.r_[True, keys[1:] != keys[:-1]]] if keys.size else keys
    return np.bincount(distinct >> 31, minlength=size)


# ---------------------------------------------------------------------------- the Beam stage

KEYS = "keys"


class _KeyPairs(beam.DoFn):
    """Each pair out as (token, pair), and its `DedupeKey` on the `keys` output."""

    def __init__(self, source_order: Sequence[str]):
        self._source_order = tuple(source_order)

    def setup(self):
        self._ranks = {name: i for i, name in enumerate(self._source_order)}
        self._random = random.Random()  # seeded from the OS: tokens differ between workers

    def process(self, pair: Pair):
        token = self._random.getrandbits(128).to_bytes(16, "big")
        try:
            key = dedupe_key(pair, token, self._ranks)
        except Exception as err:  # noqa: BLE001 - one bad record is counted, never fatal
            yield beam.pvalue.TaggedOutput(DROPPED, REASONS.failed(pair, err))
            return
        yield token, pair
        yield beam.pvalue.TaggedOutput(KEYS, key)


class _Collected:
    """An accumulator: keys not yet made columns, and parts that are."""

    def __init__(self):
        self.pending: list[DedupeKey] = []
        self.parts: list[KeyColumns] = []

    def compacted(self) -> _Collected:
        if self.pending:
            self.parts.append(to_columns(self.pending))
            self.pending = []
        return self


class _Decide(beam.CombineFn):
    """All keys into one place (as columns), then `decide`: the list of losing `Verdict`s."""

    # Keys are turned into columns this many at a time: a list of DedupeKey costs about 5x more.
    CHUNK = 65536

    def __init__(self, max_hamming: int, placeholder_min_urls: int):
        self._max_hamming = max_hamming
        self._placeholder_min_urls = placeholder_min_urls

    def create_accumulator(self) -> _Collected:
        return _Collected()

    def add_input(self, acc: _Collected, key: DedupeKey) -> _Collected:
        acc.pending.append(key)
        return acc.compacted() if len(acc.pending) >= self.CHUNK else acc

    def merge_accumulators(self, accumulators: Iterable[_Collected]) -> _Collected:
        merged = _Collected()
        for acc in accumulators:
            merged.parts.extend(acc.compacted().parts)
        return merged

    def compact(self, acc: _Collected) -> _Collected:
        return acc.compacted()

    def extract_output(self, acc: _Collected) -> list[Verdict]:
        cols = concat_columns(acc.compacted().parts)
        return decide(cols, self._max_hamming, self._placeholder_min_urls)


class _ApplyVerdicts(beam.DoFn):
    def process(self, keyed, losers):
        token, pair = keyed
        verdict = losers.get(token)
        if verdict is None:
            yield pair
            return
        yield beam.pvalue.TaggedOutput(DROPPED, REASONS.drop(pair, *verdict))


class DropDuplicates(Step):
    """Drops duplicate pairs and placeholder images across all sources. Returns
    `(kept, dropped)`; drop reasons `duplicate` (detail: the surviving id) and
    `placeholder_image`, each a `Drop` of the pair's own source.

    `max_hamming`: pHash distance at or below which two images are the same (manifest
    `dedupe.max_hamming`). `source_order`: the manifest's source names in order (the priority
    after genuine-before-translated). `placeholder_min_urls`: distinct locations from which an
    image group with differing captions is a placeholder (manifest
    `dedupe.placeholder_min_urls`, default 5).

    `with_count`: return `(kept, dropped, count)`, `count` one element, the number of kept
    pairs, known before they leave (for the shard count of `WriteDataset`).

    Only `DedupeKey`s are gathered (into one worker, see the module docstring); the losers'
    verdicts reach the pairs as a dict side input keyed by token, about 200 bytes a loser in
    memory: 120 MB for 600,000 losers, built once per worker (Dataflow serves a large `AsDict` by
    key lookups instead). The alternative, a CoGroupByKey on the pairs, would move every image's
    bytes through a shuffle.
    """

    REASONS = REASONS

    def __init__(
        self,
        max_hamming: int,
        source_order: Sequence[str],
        placeholder_min_urls: int = 5,
        *,
        with_count: bool = False,
    ):
        super().__init__()
        self._with_count = with_count
        if not 0 <= max_hamming <= HASH_BITS:
            raise ValueError(f"max_hamming must be in [0, {HASH_BITS}], got {max_hamming}")
        if placeholder_min_urls < 2:
            raise ValueError(f"placeholder_min_urls must be >= 2, got {placeholder_min_urls}")
        self._max_hamming = max_hamming
        self._source_order = tuple(source_order)
        self._placeholder_min_urls = placeholder_min_urls

    def expand(self, pairs):
        # The pairs wait, encoded, until the verdicts are ready: typed, they take the RowCoder
        # (10 % faster than pickling the NamedTuple).
        keyed = pairs | "KeyPairs" >> beam.ParDo(_KeyPairs(self._source_order)).with_output_types(
            tuple[bytes, Pair]
        ).with_outputs(KEYS, DROPPED, main="pairs")
        losers = (
            keyed[KEYS]
            | "Decide"
            >> beam.CombineGlobally(_Decide(self._max_hamming, self._placeholder_min_urls))
            | "Losers" >> beam.FlatMap(lambda verdicts: ((v.token, v[1:]) for v in verdicts))
        )
        applied = keyed.pairs | "ApplyVerdicts" >> beam.ParDo(
            _ApplyVerdicts(), losers=beam.pvalue.AsDict(losers)
        ).with_outputs(DROPPED, main="kept")
        dropped = (keyed[DROPPED], applied[DROPPED]) | "MergeDrops" >> beam.Flatten()
        if not self._with_count:
            return applied.kept, dropped
        # Known as soon as the verdicts are: the writer shards the kept pairs as they leave
        # ApplyVerdicts instead of holding them all until it has counted them itself.
        count = (
            keyed[KEYS]
            | "CountKeys" >> beam.combiners.Count.Globally()
            | "KeptCount" >> beam.Map(lambda n, losers: n - len(losers), beam.pvalue.AsList(losers))
        )
        return applied.kept, dropped, count
