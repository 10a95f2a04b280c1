"""Benchmark of the near-duplicate search and of DropDuplicates, against brute force and imagededup.

The data: n 64-bit hashes, 90 % uniformly random and 10 % planted near duplicates, each a copy of
an earlier hash with 0..k random bits flipped (k = `--max-hamming`, 8 by default, as measured in
issue #5); a third of the planted ones copy a planted one, so chains (A~B, B~C) occur. Measured,
each in a fresh process (time is wall clock; memory is the process's peak RSS above what it held
once the data was loaded):

- ours, search: `hash_groups` (the connected components; 1 thread and one per core) and
  `near_pairs` (the same search listing every pair: what recall is checked on);
- ours, decisions: `decide` on n keys (hash groups, caption classes, survivors), the pure function
  the Beam stage runs in one worker; and `dedupe_key` per pair (the per-pair part, which Beam
  spreads over workers);
- ours, Beam: `DropDuplicates` on the DirectRunner over generated `Pair`s (without image bytes),
  minus the same pipeline without the stage (generation and counting); at 2.1M pairs it is run at
  `--beam-n` pairs and extrapolated linearly, since its per-pair work dominates;
- brute force: numpy, every pair (xor, popcount) in row blocks (`brute_force_pairs`); timed on
  all n up to `--brute-max` hashes, else on the first `--brute-max` and extrapolated by the square
  of the ratio; for recall it then lists every pair of a random sample of rows against all n;
- imagededup 0.3.3's searches (`BruteForceCython`, its default, and `BKTree`), called directly
  in one process (its `HashEval` only adds a process pool over the queries), when its virtual
  environment exists (`.bench/imagededup`: `python3 -m venv .bench/imagededup &&
  .bench/imagededup/bin/pip install imagededup`). They answer one query at a time, so the build
  and a sample of queries are timed and the queries extrapolated to n.

Recall is the share of the brute-force pairs that a method finds (on the sampled rows when the
brute force is sampled); ours must be 100 %. The last line on stdout is one JSON object.

    python benchmarks/dedupe.py --quick    # n = 100,000: about 2 minutes
    python benchmarks/dedupe.py            # n = 2,100,000: about 12 minutes
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SEED = 20240605
FULL_N, QUICK_N = 2_100_000, 100_000
DEFAULT_IMAGEDEDUP = REPO / ".bench" / "imagededup" / "bin" / "python"
SOURCES = ("wit", "conceptual_captions", "coco")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- the data


def make_hashes(n: int, k: int, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """(hashes, source): `source[i]` is the index hash i was planted from, -1 for a random one."""
    rng = np.random.default_rng(seed)
    planted = n // 10
    first = planted * 2 // 3
    base = n - planted
    hashes = rng.integers(0, 2**64 - 1, size=n, dtype=np.uint64, endpoint=True)
    source = np.full(n, -1, dtype=np.int64)
    source[base : base + first] = rng.integers(0, base, size=first)
    source[base + first :] = rng.integers(base, base + first, size=planted - first)
    for lo, hi in ((base, base + first), (base + first, n)):
        hashes[lo:hi] = hashes[source[lo:hi]] ^ _flips(rng, hi - lo, k)
    order = rng.permutation(n)  # planted ones anywhere, not at the end
    position = np.empty(n, dtype=np.int64)
    position[order] = np.arange(n)
    source = np.where(source >= 0, position[np.maximum(source, 0)], -1)
    return hashes[order], source[order]


def _flips(rng: np.random.Generator, m: int, k: int) -> np.ndarray:
    """m masks of 0..k random bits each."""
    count = rng.integers(0, k + 1, size=m)
    noise = rng.random((m, 64))
    rank = np.argsort(np.argsort(noise, axis=1), axis=1)
    bits = rank < count[:, None]
    return np.packbits(bits, axis=1, bitorder="little").view(np.uint64).ravel()


def make_columns(hashes: np.ndarray, source: np.ndarray):
    """`KeyColumns` for the hashes: a planted copy keeps its source's caption half the time."""
    from pipeline.dedupe import KeyColumns

    n = len(hashes)
    rng = np.random.default_rng(SEED + 1)
    caption = np.arange(n, dtype=np.uint64)
    same = (source >= 0) & (rng.random(n) < 0.5)
    caption[same] = caption[source[same]]
    words = lambda a: np.stack([a, np.zeros_like(a)], axis=1)  # noqa: E731
    ones = np.ones(n, dtype=bool)
    return KeyColumns(
        token=rng.integers(0, 2**63, size=(n, 2), dtype=np.int64).view(np.uint64),
        id=np.array([f"{i:032x}".encode() for i in rng.permutation(n)]),
        origin_rank=(np.arange(n) % 3 != 0).astype(np.int8),
        source_rank=(np.arange(n) % 3).astype(np.int32),
        position=np.arange(n, dtype=np.uint64),
        caption=words(caption),
        phash=hashes,
        has_phash=ones,
        sha256=words(hashes),
        has_sha256=ones,
        location=words(np.arange(n, dtype=np.uint64)),
        has_location=ones,
    )


def make_pairs(shard: int, shards: int, n: int, k: int) -> list:
    """The `Pair`s of one shard of the generated data (Beam and `dedupe_key` runs)."""
    from pipeline.records import GENUINE, TRANSLATED, Pair

    hashes, source = _cached_hashes(n, k)
    rng = np.random.default_rng(SEED + 2)
    same = (source >= 0) & (rng.random(n) < 0.5)
    caption_of = np.arange(n)
    caption_of[same] = source[same]
    out = []
    for i in range(shard, n, shards):
        kind = SOURCES[i % 3]
        out.append(
            Pair(
                id=f"{i * 2654435761 % 2**64:032x}",
                source=kind,
                source_name=kind,
                source_key=str(i),
                caption_ar=f"صورة رقم {caption_of[i]} في المدينة، قرب النهر",
                caption_origin=GENUINE if kind == "wit" else TRANSLATED,
                image_url=f"https://images.example.org/{i % 997}/{i}.jpg",
                phash=f"{int(hashes[i]):016x}",
                sha256=hashlib.sha256(hashes[i].tobytes()).hexdigest(),
                input_file="data.tsv",
                input_line=i,
            )
        )
    return out


_CACHE: dict = {}


def _cached_hashes(n: int, k: int):
    if (n, k) not in _CACHE:
        _CACHE[(n, k)] = make_hashes(n, k)
    return _CACHE[(n, k)]


# ---------------------------------------------------------------------------- measurements


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(args) -> dict:
    """One measurement, in this (fresh) process."""
    from pipeline import dedupe

    k, n = args.max_hamming, args.n
    hashes, source = make_hashes(n, k)
    out: dict = {}
    if args.child == "groups":
        base = rss_mb()
        start = time.perf_counter()
        groups = dedupe.hash_groups(hashes, k, workers=args.workers)
        out["seconds"] = time.perf_counter() - start
        out["groups"] = int(len(np.unique(groups)))
        out["plan"] = repr(dedupe.plan_search(k, len(np.unique(hashes))))
    elif args.child == "pairs":
        base = rss_mb()
        start = time.perf_counter()
        pairs = dedupe.near_pairs(hashes, k)
        out["seconds"] = time.perf_counter() - start
        np.save(args.save, pairs)
        out["pairs"] = len(pairs)
    elif args.child == "decide":
        cols = make_columns(hashes, source)
        base = rss_mb()
        start = time.perf_counter()
        verdicts = dedupe.decide(cols, k, 5)
        out["seconds"] = time.perf_counter() - start
        out["losers"] = len(verdicts)
        sample = make_pairs(0, max(1, n // 20000), n, k)
        ranks = {s: i for i, s in enumerate(SOURCES)}
        dedupe.caption_key("")  # builds its table (once per process, 0.1 s) before the clock
        start = time.perf_counter()
        keys = [dedupe.dedupe_key(p, bytes(16), ranks) for p in sample]
        out["key_us_per_pair"] = (time.perf_counter() - start) / len(keys) * 1e6
        start = time.perf_counter()
        dedupe.to_columns(keys)
        out["columns_us_per_pair"] = (time.perf_counter() - start) / len(keys) * 1e6
    elif args.child in ("beam", "beam-null"):
        base = rss_mb()
        out["seconds"], out["counts"] = run_beam(n, k, with_stage=args.child == "beam")
    elif args.child == "brute":
        # Timed: all pairs of the first `brute_max` hashes. Untimed: the truth for recall, all
        # pairs when that was all of them, else every pair touching the sampled rows.
        m = min(n, args.brute_max)
        base = rss_mb()
        start = time.perf_counter()
        found = brute_rows(hashes[:m], k, None)
        out["seconds"] = time.perf_counter() - start
        out["peak_mb"] = peak_mb() - base  # of the timed part
        out["m"] = m
        if m < n:
            found = brute_rows(hashes, k, np.load(args.rows))
        np.save(args.save, found)
        out["pairs"] = len(found)
    out.setdefault("peak_mb", peak_mb() - base)
    return out


def brute_rows(hashes: np.ndarray, k: int, rows: np.ndarray | None) -> np.ndarray:
    """Brute force: all pairs (i < j), or with `rows`, every pair that has one of them."""
    from pipeline.dedupe import brute_force_pairs

    if rows is None:
        found = [np.stack(p, axis=1) for p in brute_force_pairs(hashes, k)]
        return np.concatenate(found) if found else np.zeros((0, 2), np.int64)
    found = []
    for start in range(0, len(rows), 16):
        r = rows[start : start + 16]
        near = np.bitwise_count(hashes[r, None] ^ hashes[None, :]) <= k
        near[np.arange(len(r)), r] = False
        i, j = np.nonzero(near)
        found.append(np.stack([np.minimum(r[i], j), np.maximum(r[i], j)], axis=1))
    return np.unique(np.concatenate(found), axis=0) if found else np.zeros((0, 2), np.int64)


def run_beam(n: int, k: int, with_stage: bool) -> tuple[float, dict]:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline.dedupe import DropDuplicates

    shards = 16
    folder = Path(tempfile.mkdtemp(prefix="dedupe-beam-"))
    start = time.perf_counter()
    with beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"])) as p:
        pairs = (
            p
            | "Shards" >> beam.Create(range(shards))
            | "Generate" >> beam.FlatMap(make_pairs, shards, n, k)
        )
        if with_stage:
            kept, dropped = pairs | "DropDuplicates" >> DropDuplicates(k, SOURCES)
        else:
            kept, dropped = pairs, p | "NoDrops" >> beam.Create([])
        for name, pcoll in (("kept", kept), ("dropped", dropped)):
            (
                pcoll
                | f"Count{name}" >> beam.combiners.Count.Globally()
                | f"Note{name}"
                >> beam.Map(lambda c, path: Path(path).write_text(str(c)), str(folder / name))
            )
    seconds = time.perf_counter() - start
    counts = {f.name: int(f.read_text()) for f in sorted(folder.iterdir())}
    shutil.rmtree(folder)
    return seconds, counts


def measure(args, mode: str, n: int, **extra) -> dict:
    """Runs one measurement in a fresh process; returns its figures."""
    command = [
        sys.executable,
        __file__,
        "--child",
        mode,
        "--n",
        str(n),
        "--max-hamming",
        str(args.max_hamming),
    ]
    for key, value in extra.items():
        command += [f"--{key.replace('_', '-')}", str(value)]
    log(f"  {mode} n={n:,} {extra or ''}")
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{mode} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


IMAGEDEDUP_DRIVER = r"""
import json, resource, sys, time
import numpy as np
from imagededup.handlers.search.bktree import BKTree
from imagededup.handlers.search.brute_force_cython import BruteForceCython
from imagededup.methods.hashing import Hashing
hashes, queries = np.load(sys.argv[1]), np.load(sys.argv[2])
k, method, out = int(sys.argv[3]), sys.argv[4], sys.argv[5]
test = {str(i): f"{int(h):016x}" for i, h in enumerate(hashes)}
with open("/proc/self/statm") as f:
    base = int(f.read().split()[1]) * 4096 / 2**20
start = time.perf_counter()
searcher = (BKTree if method == "bktree" else BruteForceCython)(test, Hashing.hamming_distance)
build = time.perf_counter() - start
found = set()
start = time.perf_counter()
for q in queries:
    for name, _ in searcher.search(query=test[str(q)], tol=k):
        j = int(name.decode() if isinstance(name, bytes) else name)
        if j != q:
            found.add((min(int(q), j), max(int(q), j)))
seconds = time.perf_counter() - start
np.save(out, np.array(sorted(found), dtype=np.int64).reshape(-1, 2))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"build": build, "seconds": seconds, "peak_mb": peak - base}))
"""


def imagededup(python: Path, folder: Path, method: str, hashes_file: Path, rows: np.ndarray, k):
    rows_file = folder / f"idd-{method}-rows.npy"
    np.save(rows_file, rows)
    out = folder / f"idd-{method}.npy"
    log(f"  imagededup {method}: {len(rows)} queries")
    done = subprocess.run(
        [str(python), "-c", IMAGEDEDUP_DRIVER, hashes_file, rows_file, str(k), method, out],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"imagededup {method} failed:\n{done.stderr[-3000:]}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    return figures, np.load(out)


# ---------------------------------------------------------------------------- the report


def pair_set(pairs: np.ndarray) -> set:
    return set(map(tuple, pairs.tolist()))


def recall_on(rows: np.ndarray | None, truth: np.ndarray, found: np.ndarray) -> float:
    """Share of the true pairs (touching `rows`, when given) that `found` holds."""
    if rows is not None:
        wanted = np.isin(truth, rows).any(axis=1)
        truth = truth[wanted]
        found = found[np.isin(found, rows).any(axis=1)]
    if not len(truth):
        return 1.0
    return len(pair_set(truth) & pair_set(found)) / len(truth)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="n = 100,000")
    parser.add_argument("--n", type=int, default=None)
    parser.add_argument("--max-hamming", type=int, default=8)
    parser.add_argument("--beam-n", type=int, default=None, help="pairs for the Beam run")
    parser.add_argument("--brute-max", type=int, default=100_000, help="largest whole brute force")
    parser.add_argument("--brute-sample", type=int, default=2000, help="rows when sampled")
    parser.add_argument("--imagededup-python", type=Path, default=DEFAULT_IMAGEDEDUP)
    parser.add_argument("--imagededup-queries", type=int, default=None)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--save", help=argparse.SUPPRESS)
    parser.add_argument("--rows", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return

    n = args.n or (QUICK_N if args.quick else FULL_N)
    k = args.max_hamming
    beam_n = args.beam_n or n
    queries = args.imagededup_queries or (100 if args.quick else 10)
    log(f"dedupe benchmark: n={n:,}, max_hamming={k}, {os.cpu_count()} cores")
    rng = np.random.default_rng(SEED + 3)
    with tempfile.TemporaryDirectory(prefix="dedupe-bench-") as tmp:
        folder = Path(tmp)
        figures: dict = {"benchmark": "dedupe", "n": n, "max_hamming": k}
        groups1 = measure(args, "groups", n, workers=1)
        groups = measure(args, "groups", n)
        pairs = measure(args, "pairs", n, save=folder / "ours.npy")
        decide = measure(args, "decide", n)
        ours_pairs = np.load(folder / "ours.npy")

        sampled = n > args.brute_max
        rows = np.sort(rng.choice(n, size=args.brute_sample, replace=False)) if sampled else None
        extra = {"save": folder / "brute.npy"}
        if sampled:
            np.save(folder / "rows.npy", rows)
            extra["rows"] = folder / "rows.npy"
        brute = measure(args, "brute", n, brute_max=args.brute_max, **extra)
        truth = np.load(folder / "brute.npy")
        brute_seconds = brute["seconds"] * (n / brute["m"]) ** 2
        recall = recall_on(rows, truth, ours_pairs)
        # Ours never reports a pair the brute force does not (candidates are verified).
        spurious = len(
            pair_set(
                ours_pairs if rows is None else ours_pairs[np.isin(ours_pairs, rows).any(axis=1)]
            )
            - pair_set(truth)
        )

        beam = measure(args, "beam", beam_n)
        null = measure(args, "beam-null", beam_n)
        beam_stage = max(0.0, beam["seconds"] - null["seconds"]) * n / beam_n

        idd: dict = {}
        if args.imagededup_python.exists():
            hashes, _ = make_hashes(n, k)
            np.save(folder / "hashes.npy", hashes)
            query_rows = np.sort(rng.choice(n, size=min(n, queries), replace=False))
            query_truth = brute_rows(hashes, k, query_rows)
            for method in ("brute_force_cython", "bktree"):
                got, found = imagededup(
                    args.imagededup_python, folder, method, folder / "hashes.npy", query_rows, k
                )
                idd[method] = {
                    "seconds": got["build"] + got["seconds"] * n / len(query_rows),
                    "build_seconds": got["build"],
                    "sample_seconds": got["seconds"],
                    "queries": len(query_rows),
                    "peak_mb": got["peak_mb"],
                    "recall": recall_on(query_rows, query_truth, found),
                }
        else:
            log(f"imagededup: {args.imagededup_python} not found, skipped")

    figures.update(
        {
            "recall": recall,
            "spurious_pairs": spurious,
            "seconds": groups["seconds"],
            "plan": groups["plan"],
            "groups": groups["groups"],
            "pairs_found": pairs["pairs"],
            "ours_groups_seconds_1_thread": groups1["seconds"],
            "ours_groups_peak_mb": groups["peak_mb"],
            "ours_near_pairs_seconds": pairs["seconds"],
            "ours_decide_seconds": decide["seconds"],
            "ours_decide_peak_mb": decide["peak_mb"],
            "ours_decide_losers": decide["losers"],
            "dedupe_key_us_per_pair": decide["key_us_per_pair"],
            "to_columns_us_per_pair": decide["columns_us_per_pair"],
            "beam_n": beam_n,
            "beam_pipeline_seconds": beam["seconds"],
            "beam_null_seconds": null["seconds"],
            "beam_counts": beam["counts"],
            "beam_stage_seconds": beam_stage,
            "beam_stage_extrapolated": beam_n != n,
            "beam_over_pure": beam_stage / decide["seconds"],
            "brute_seconds": brute_seconds,
            "brute_extrapolated": sampled,
            "brute_timed_n": brute["m"],
            "recall_sample_rows": None if rows is None else len(rows),
            "brute_peak_mb": brute["peak_mb"],
            "speedup_vs_brute": brute_seconds / groups["seconds"],
            "imagededup": idd or None,
        }
    )
    print_table(figures)
    print(json.dumps(figures))


def print_table(f: dict) -> None:
    def row(name, seconds, peak, recall, note=""):
        peak = "" if peak is None else f"{peak:,.0f}"
        print(f"| {name} | {seconds:,.1f} | {peak} | {recall:.1%} | {note} |")

    print(f"\nn = {f['n']:,} hashes, max_hamming = {f['max_hamming']}, plan {f['plan']}\n")
    print("| method | seconds | peak MB | recall | note |")
    print("| --- | ---: | ---: | ---: | --- |")
    row("ours: hash_groups, 2 threads", f["seconds"], f["ours_groups_peak_mb"], f["recall"])
    row("ours: hash_groups, 1 thread", f["ours_groups_seconds_1_thread"], None, f["recall"])
    row(
        "ours: decide (groups + survivors)",
        f["ours_decide_seconds"],
        f["ours_decide_peak_mb"],
        f["recall"],
        f"{f['ours_decide_losers']:,} losers",
    )
    note = (
        f"{f['beam_n']:,} pairs, x{f['n'] / f['beam_n']:.1f}"
        if f["beam_stage_extrapolated"]
        else ""
    )
    row("ours: DropDuplicates, DirectRunner", f["beam_stage_seconds"], None, f["recall"], note)
    note = (
        f"all pairs of {f['brute_timed_n']:,} timed, x(n/that)^2"
        if f["brute_extrapolated"]
        else "all pairs"
    )
    row("brute force, numpy", f["brute_seconds"], f["brute_peak_mb"], 1.0, note)
    for method, g in (f["imagededup"] or {}).items():
        note = (
            f"build {g['build_seconds']:.1f}s + {g['queries']} queries in "
            f"{g['sample_seconds']:.1f}s, extrapolated"
        )
        row(f"imagededup {method}", g["seconds"], g["peak_mb"], g["recall"], note)
    print()


if __name__ == "__main__":
    main()
