"""Benchmark of politeness: how the images stage downloads from a host that keeps Wikimedia's robot
policy, against img2dataset with its default settings.

The host is `standins.upload.UploadStandIn`, in this process: upload.wikimedia.org's
rules on 127.0.0.1, at most 2 requests in flight (the ones beyond are answered 429, every other
one with `Retry-After: 1`), each answer taking `--delay` seconds (0.2 s by default: the live
host answers in about 100-300 ms). With 2 in flight, that delay bounds any client to
`2 / delay` images/s: the limit `vs_limit` is measured against. The originals are the
photo-like 640x480 JPEGs of `benchmarks/scale.py` (its cache, `.bench/scale-images/`; only the
missing ones are generated), distinct images under Commons paths
(`/wikipedia/commons/a/ab/Politeness_bench_00042.jpg`), held in memory; the stand-in serves
their 330 px thumbnails, scaling each on request as the live host's thumbnailer does.

Three runs, each against a fresh stand-in:

1. ours, Wikimedia's policy as shipped: `python -m pipeline run MANIFEST --output DIR` on a WIT
   shard in the real format of N `ar` rows with distinct Arabic captions, `image_url` the Commons
   original and `original_width` 640, so that the stage fetches the 330 px thumbnail; the
   manifest sets only `images: {allow_private_hosts: true, cache: false, url_map:
   {https://upload.wikimedia.org/: <stand-in>/}}` (the default limits of upload.wikimedia.org, 2
   in flight and 25 Mbps, apply by the URL's own host);
2. ours, adaptive: the same with `images.hosts: {upload.wikimedia.org: {concurrency: 8}}`, so that
   the stage starts at four times what the host allows and has only its 429s to slow it down;
   `stats.json`'s `hosts` entry gives what it counted (throttled, pauses, paused seconds);
3. img2dataset 1.47.0 (`.bench/i2d`, its own venv: `make bench` creates it): `download()` on the
   same thumbnail URLs (the stand-in's, as our runs request them) with only `url_list`,
   `output_folder`, `output_format=parquet`, `image_size=256` and
   `resize_mode=keep_ratio_largest` set: its defaults are 1 process of 256 threads, no retries,
   a 10 s timeout. Skipped (its figures null) when the venv is missing.

`success_rate` is the pairs kept (ours: `stats.json`'s `kept`; img2dataset: the `successes` of its
`*_stats.json`) over N. `max_in_flight` and `refused` are what the stand-in saw: the most requests
it had in flight at once, and the 429s it answered. `images_per_s` is the kept images over the
time the host was busy with the run: from the first request coming in to the last answer going
out, as the stand-in clocks them; Beam's start-up, reading the shard and writing the dataset
are outside it (the whole run's wall time is `seconds`). `vs_limit` is images/s over
`2 / delay`; `vs_img2dataset` ours over img2dataset's images/s. For run 1, where any shortfall
from the limit goes: `service_ms`, the mean time a served request counted as in flight at the
stand-in (from its request line read to its headers sent: the delay plus the stand-in's own
scaling), and `gap_ms`, the time the host's 2 slots sat empty per request (2 x the busy time,
less the time requests were in flight, over the requests): the body's transfer, the client's
turn-around and the next request's arrival.

    .venv/bin/python benchmarks/politeness.py            # 1,000 images in every run, ~5 minutes
    .venv/bin/python benchmarks/politeness.py --quick    # 1,000, the adaptive run 500: ~4 minutes
    .venv/bin/python benchmarks/politeness.py --images 200 --delay 0.1

The last line on stdout is one JSON object holding every figure.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

# benchmarks/scale.py and benchmarks/images.py, beside this script.
from images import busy_cores, find_i2d, timed  # noqa: E402
from scale import (  # noqa: E402
    CACHE,
    HEIGHT,
    WIDTH,
    check_imported_pipeline,
    make_images,
    subprocess_env,
    write_shard,
)

from pipeline import wikimedia  # noqa: E402
from standins.upload import UploadRules, UploadStandIn  # noqa: E402

FULL_IMAGES, QUICK_IMAGES = 1000, 1000
QUICK_ADAPTIVE_IMAGES = 500
DELAY = 0.2  # seconds each answer of the stand-in takes: within the live host's 100-300 ms
HOST_LIMIT = 2  # in flight, the robot policy's
ADAPTIVE_CONCURRENCY = 8
SIZE = 256
STEP = wikimedia.step_at_least(SIZE)  # 330: the thumbnail width the stage fetches
UPLOAD = "https://upload.wikimedia.org"
NAME = re.compile(r"/Politeness_bench_(\d+)\.jpg$")

I2D_SCRIPT = """
import sys
from img2dataset import download
download(url_list=sys.argv[1], output_folder=sys.argv[2], output_format="parquet",
         image_size=256, resize_mode="keep_ratio_largest")
"""


def log(message: str) -> None:
    """Progress goes to stderr: stdout holds only the table and the JSON line."""
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- the host


def original_path(index: int) -> str:
    """Image `index`'s Commons path, hashed into folders as MediaWiki does (md5 of the name)."""
    name = f"Politeness_bench_{index:05d}.jpg"
    digest = hashlib.md5(name.encode()).hexdigest()
    return f"/wikipedia/commons/{digest[0]}/{digest[:2]}/{name}"


def thumbnail_path(index: int) -> str:
    """The path the stage requests for image `index`: its thumbnail at STEP."""
    url = wikimedia.fetch_url(UPLOAD + original_path(index), STEP, WIDTH)
    return url.removeprefix(UPLOAD)


def load_pictures(count: int) -> dict[int, bytes]:
    """The originals, from scale.py's cache (generated there when missing)."""
    make_images(count)
    return {i: (CACHE / f"{i}.jpg").read_bytes() for i in range(count)}


class Clock:
    """Times the requests of a stand-in by wrapping its rules' `enter` and `leave` (the stand-in
    counts requests but does not time them): when the first came in, when the last answer went
    out (its headers: the stand-in lets a request go before it writes the body), and the seconds
    requests spent in flight (served and refused apart)."""

    def __init__(self, rules: UploadRules):
        self.first: float | None = None
        self.last: float | None = None
        self.served = self.refused = 0
        self.served_seconds = self.refused_seconds = 0.0
        self._lock = threading.Lock()
        self._local = threading.local()  # a request enters and leaves on the same thread
        enter, leave = rules.enter, rules.leave

        def timed_enter(path: str):
            now = time.monotonic()
            answer = enter(path)
            self._local.entered, self._local.refused = now, answer is not None
            with self._lock:
                if self.first is None:
                    self.first = now
            return answer

        def timed_leave() -> None:
            leave()
            now = time.monotonic()
            spent = now - self._local.entered
            with self._lock:
                self.last = now if self.last is None else max(self.last, now)
                if self._local.refused:
                    self.refused += 1
                    self.refused_seconds += spent
                else:
                    self.served += 1
                    self.served_seconds += spent

        rules.enter, rules.leave = timed_enter, timed_leave

    @property
    def seconds(self) -> float:
        """From the first request in to the last answer out."""
        return (self.last - self.first) if self.first is not None else 0.0


class Host:
    """A fresh stand-in and its clock: `with Host(pictures, delay) as host: ...`."""

    def __init__(self, pictures: dict[int, bytes], delay: float):
        def picture(path: str) -> bytes:
            match = NAME.search(path)
            if not match or int(match.group(1)) not in pictures:
                raise KeyError(path)  # the stand-in drops the connection: never expected here
            return pictures[int(match.group(1))]

        self.standin = UploadStandIn(picture, max_in_flight=HOST_LIMIT, delay=delay)
        self.clock = Clock(self.standin.rules)

    def __enter__(self) -> Host:
        self.standin.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.standin.stop()

    def figures(self, kept: int, count: int, delay: float) -> dict:
        """What the host saw of a run that kept `kept` of `count` images."""
        rules, clock = self.standin.rules, self.clock
        per_s = kept / clock.seconds if clock.seconds else 0.0
        return {
            "n": count,
            "kept": kept,
            "success_rate": round(kept / count, 4),
            "max_in_flight": rules.max_seen,
            "refused": rules.refused["busy"],
            "requests": len(rules.log),
            "host_busy_seconds": round(clock.seconds, 2),
            "images_per_s": round(per_s, 2),
            "vs_limit": round(per_s / (HOST_LIMIT / delay), 3),
            # Never expected: a width off the steps, or a thumbnail of a narrower original.
            "refused_other": {k: v for k, v in rules.refused.items() if k != "busy"},
        }


# ---------------------------------------------------------------------------- ours


def write_manifest(path: Path, shard: Path, root: str, concurrency: int | None) -> None:
    """The manifest of a run; `concurrency` set: upload.wikimedia.org's limit replaced by it."""
    hosts = ""
    if concurrency is not None:
        hosts = f"  hosts:\n    upload.wikimedia.org: {{concurrency: {concurrency}}}\n"
    path.write_text(
        "name: politeness-bench\n"
        "sources:\n"
        f"  - kind: wit\n    paths: [{json.dumps(str(shard))}]\n"
        "images:\n  fetch: true\n  cache: false\n  allow_private_hosts: true\n"
        f"  url_map:\n    {json.dumps(UPLOAD + '/')}: {json.dumps(root + '/')}\n" + hosts,
        encoding="utf-8",
    )


def run_ours(
    pictures: dict[int, bytes], count: int, delay: float, work: Path, concurrency: int | None
) -> dict:
    """A whole build of `count` pairs through the CLI against a fresh stand-in."""
    label = "ours" if concurrency is None else "adaptive"
    shard = work / f"{label}.tsv"
    write_shard(shard, count, lambda i: UPLOAD + original_path(i))
    output = work / f"out-{label}"
    with Host(pictures, delay) as host:
        manifest = work / f"{label}.yaml"
        write_manifest(manifest, shard, host.standin.root, concurrency)
        cmd = [sys.executable, "-m", "pipeline", "run", str(manifest), "--output", str(output)]
        start = time.perf_counter()
        with (work / f"{label}.log").open("w") as out:
            done = subprocess.run(
                [*cmd, "--no-progress"], cwd=REPO, env=subprocess_env(), stdout=out, stderr=out
            )
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            log((work / f"{label}.log").read_text(errors="replace")[-4000:])
            raise SystemExit(f"the {label} run failed with status {done.returncode}")
        stats = json.loads((output / "stats.json").read_text(encoding="utf-8"))
        figures = host.figures(stats["kept"], count, delay)
        asked = set(host.standin.rules.log)
        expected = {thumbnail_path(i) for i in range(count)}
        if asked != expected:
            extra, missing = sorted(asked - expected)[:3], sorted(expected - asked)[:3]
            raise SystemExit(f"{label} asked other paths: {extra} …, never {missing} …")
        clock = host.clock
    shutil.rmtree(output)
    figures["seconds"] = round(seconds, 1)
    figures["dropped"] = stats["sources"]["wit"]["dropped"]
    figures["hosts"] = stats.get("hosts", {}).get("upload.wikimedia.org")
    if concurrency is None:
        # Where the time of the 2 slots went: requests in flight, and slots left empty.
        requests = clock.served + clock.refused
        in_flight = clock.served_seconds + clock.refused_seconds
        idle = HOST_LIMIT * clock.seconds - in_flight
        figures["service_ms"] = round(1000 * clock.served_seconds / max(1, clock.served), 1)
        figures["gap_ms"] = round(1000 * idle / max(1, requests), 1)
    return figures


# ---------------------------------------------------------------------------- img2dataset


def run_img2dataset(
    python: str, pictures: dict[int, bytes], count: int, delay: float, work: Path
) -> dict:
    """img2dataset's `download()` with its defaults on the thumbnail URLs, against a fresh
    stand-in."""
    out = work / "i2d"
    with Host(pictures, delay) as host:
        url_file = work / "urls.txt"
        urls = [host.standin.url(thumbnail_path(i)) for i in range(count)]
        url_file.write_text("".join(url + "\n" for url in urls))
        seconds, _ = timed([python, "-c", I2D_SCRIPT, str(url_file), str(out)], work / "i2d.log")
        kept, errors = 0, Counter()
        for stats_file in out.glob("*_stats.json"):
            stats = json.loads(stats_file.read_text())
            kept += stats["successes"]
            errors.update({k[:60]: v for k, v in stats.get("status_dict", {}).items()})
        errors.pop("success", None)
        figures = host.figures(kept, count, delay)
    shutil.rmtree(out, ignore_errors=True)
    figures["seconds"] = round(seconds, 1)
    figures["errors"] = dict(errors.most_common(5))
    return figures


# ---------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK_IMAGES:,} images, the adaptive run {QUICK_ADAPTIVE_IMAGES:,}",
    )
    parser.add_argument("--images", type=int, help="images in every run (overrides the size)")
    parser.add_argument(
        "--delay", type=float, default=DELAY, help=f"seconds each answer takes (default {DELAY})"
    )
    parser.add_argument(
        "--img2dataset-python", help="the python of a venv with img2dataset (default .bench/i2d)"
    )
    args = parser.parse_args(argv)
    count = args.images or (QUICK_IMAGES if args.quick else FULL_IMAGES)
    adaptive_count = args.images or (QUICK_ADAPTIVE_IMAGES if args.quick else FULL_IMAGES)
    delay = args.delay
    if count < 1 or delay <= 0:
        parser.error("--images and --delay must be positive")
    limit = HOST_LIMIT / delay

    started = time.perf_counter()
    i2d = find_i2d(args.img2dataset_python)
    if i2d is None:
        log(
            "img2dataset not found: skipping the baseline. Create its venv apart from the "
            "project (python3 -m venv .bench/i2d && .bench/i2d/bin/python -m pip install "
            "img2dataset==1.47.0) or pass --img2dataset-python."
        )
    pictures = load_pictures(max(count, adaptive_count))
    imported = check_imported_pipeline()
    background = busy_cores()
    runs: dict[str, dict | None] = {}
    with tempfile.TemporaryDirectory(prefix="bench-politeness-") as tmp:
        work = Path(tmp)
        log(f"ours, Wikimedia's policy: {count:,} images, {delay * 1000:.0f} ms per answer …")
        runs["ours"] = run_ours(pictures, count, delay, work, None)
        log(f"  {runs['ours']}")
        log(f"ours, adaptive from {ADAPTIVE_CONCURRENCY} in flight: {adaptive_count:,} images …")
        runs["adaptive"] = run_ours(pictures, adaptive_count, delay, work, ADAPTIVE_CONCURRENCY)
        log(f"  {runs['adaptive']}")
        runs["img2dataset"] = None
        if i2d:
            log(f"img2dataset, default settings: {count:,} images …")
            runs["img2dataset"] = run_img2dataset(i2d, pictures, count, delay, work)
            log(f"  {runs['img2dataset']}")
    total_s = time.perf_counter() - started

    ours, adaptive, theirs = runs["ours"], runs["adaptive"], runs["img2dataset"]

    def vs_i2d(run: dict) -> float | None:
        if not theirs or not theirs["images_per_s"]:
            return None
        return round(run["images_per_s"] / theirs["images_per_s"], 2)

    hosts = adaptive["hosts"] or {}
    figures = {
        "benchmark": "politeness",
        "quick": args.quick,
        "n": count,
        "adaptive_n": adaptive_count,
        "delay": delay,
        "limit_images_per_s": round(limit, 2),
        "success_rate": ours["success_rate"],
        "max_in_flight": ours["max_in_flight"],
        "refused": ours["refused"],
        "images_per_s": ours["images_per_s"],
        "vs_limit": ours["vs_limit"],
        "vs_img2dataset": vs_i2d(ours),
        "service_ms": ours["service_ms"],
        "gap_ms": ours["gap_ms"],
        "seconds": ours["seconds"],
        "adaptive_success_rate": adaptive["success_rate"],
        "adaptive_max_in_flight": adaptive["max_in_flight"],
        "adaptive_refused": adaptive["refused"],
        "adaptive_images_per_s": adaptive["images_per_s"],
        "adaptive_vs_limit": adaptive["vs_limit"],
        "adaptive_vs_img2dataset": vs_i2d(adaptive),
        "adaptive_throttled": hosts.get("throttled"),
        "adaptive_pauses": hosts.get("pauses"),
        "adaptive_paused_seconds": hosts.get("paused_seconds"),
        "adaptive_seconds": adaptive["seconds"],
        "i2d_success_rate": theirs["success_rate"] if theirs else None,
        "i2d_max_in_flight": theirs["max_in_flight"] if theirs else None,
        "i2d_refused": theirs["refused"] if theirs else None,
        "i2d_images_per_s": theirs["images_per_s"] if theirs else None,
        "i2d_vs_limit": theirs["vs_limit"] if theirs else None,
        "i2d_seconds": theirs["seconds"] if theirs else None,
        "runs": runs,
        "cpu_count": os.cpu_count(),
        "background_busy_cores": round(background, 2) if background is not None else None,
        "pipeline_imported": imported,
        "total_seconds": round(total_s, 1),
    }

    print(
        f"Politeness: a stand-in of upload.wikimedia.org allowing {HOST_LIMIT} requests in flight "
        f"(429 beyond), {delay * 1000:.0f} ms per answer, so at most {limit:.0f} images/s; "
        f"{WIDTH}x{HEIGHT} originals fetched as {STEP} px thumbnails, {os.cpu_count()} cores"
    )
    if background is not None:
        print(f"(other work kept {background:.1f} of {os.cpu_count()} cores busy before the runs)")
    print()
    print("| tool | success | max in flight | 429s | images/s | vs limit | vs img2dataset |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    rows = (
        (f"ours, Wikimedia's policy ({count:,})", ours),
        (f"ours, adaptive from {ADAPTIVE_CONCURRENCY} in flight ({adaptive_count:,})", adaptive),
        (f"img2dataset, defaults ({count:,})", theirs),
    )
    for label, run in rows:
        if run is None:
            print(f"| {label} | n/a | n/a | n/a | n/a | n/a | n/a |")
            continue
        ratio = vs_i2d(run)
        print(
            f"| {label} | {run['success_rate']:.1%} | {run['max_in_flight']} | {run['refused']:,} "
            f"| {run['images_per_s']:.1f} | {run['vs_limit']:.2f} "
            f"| {f'{ratio:.2f}x' if ratio is not None else 'n/a'} |"
        )
    print()
    print(
        f"ours: {ours['service_ms']:.0f} ms in flight per served request at the host, "
        f"{ours['gap_ms']:.1f} ms a slot sat empty per request; adaptive: "
        f"{hosts.get('throttled', 0)} throttled, {hosts.get('pauses', 0)} pauses, "
        f"{hosts.get('paused_seconds', 0):.1f}s paused"
    )
    if args.quick and adaptive_count < count:
        print(f"(--quick: the adaptive run fetches {adaptive_count:,} images, not {count:,})")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
