"""Benchmark of FetchImages against img2dataset, and of JPEG `draft()` decoding.

Both download the same URL list from the same local server and resize to 256 px, longest side,
never upscaling (img2dataset: `resize_mode=keep_ratio_largest, resize_only_if_bigger=True`),
re-encoding JPEG at quality 95, with 2 processes of 32 download threads each:

- ours: the `FetchImages` DoFn itself (`setup`, `start_bundle`, `process`, `finish_bundle`)
  driven directly in 2 spawned processes, each given half of the URLs as one bundle, keeping
  the stored images in a Parquet file per process. Beam's runner is left out (its start-up and
  shuffles are the subject of the WIT benchmark), so this is the stage's own throughput:
  download, verify, decode (with `draft()`), pHash, resize, encode, sha256. `per_host` is set
  to 32, as the one local server is every URL's host and img2dataset has no per-host bound.
- img2dataset: its `download()` in a separate virtual environment (it is not a dependency):
  `processes_count=2, thread_count=32, output_format=parquet`, `number_sample_per_shard` a
  quarter of the list so that both processes get shards; its defaults otherwise (sha256 of
  the original, EXIF extracted, no retries).

The server is a separate process (`standins/images.py`) serving generated photo-like JPEGs
of 320-1600 px from memory, with about 5 % failures: missing (404), HTML served as image/jpeg,
truncated JPEGs. It runs twice: answering at once, then adding 200 ms to every response (a far
host). Runs alternate between the two tools; each is timed from the outside, process start-up
included, and the figures are medians. Then, on one thread, the time to decode the JPEGs, to
decode them to the stored size (decode + resize: what `draft()` shortens; `draft_speedup`) and
the whole store step, with and without `draft()`, and the Hamming distance between the stored
image's pHash and the pHash of the full-size decode.

    make bench    # creates .bench/i2d (a venv with img2dataset 1.47.0) on first use
    python benchmarks/images.py                      # 3000 images, 5 rounds, ~7 minutes
    python benchmarks/images.py --quick              # 1000 images, 3 rounds, under 5 minutes
    python benchmarks/images.py --img2dataset-python /path/to/venv/bin/python

The last line on stdout is one JSON object holding every figure.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

SEED = 20240607
FULL_IMAGES, QUICK_IMAGES = 3000, 1000
FULL_ROUNDS, QUICK_ROUNDS = 5, 3
PROCESSES, THREADS, SIZE, QUALITY = 2, 32, 256, 95
DELAYS = (0.0, 0.2)
# The venv `make bench` creates: img2dataset is only a baseline here, never a dependency.
DEFAULT_I2D = Path(__file__).resolve().parent.parent / ".bench" / "i2d" / "bin" / "python"
SHAPES = ((4, 3), (3, 4), (16, 9), (1, 1), (3, 2))
HTML = b"<!doctype html><title>Moved</title><p>This image has moved.</p>" * 20


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- the images


def _write_image(job: tuple[Path, int, int, int]) -> None:
    from image_samples import jpeg

    path, width, height, seed = job
    path.write_bytes(jpeg(width, height, seed=seed, quality=90))


def make_images(folder: Path, count: int) -> list[str]:
    """Writes the served files into `folder` (once; reused by later runs) and returns the URL
    paths in list order: about 95 % good JPEGs, the rest failures."""
    rng = random.Random(SEED)
    jobs, paths = [], []
    for i in range(count):
        kind = rng.choices(("ok", "missing", "html", "truncated"), (95, 2, 1.5, 1.5))[0]
        longest = rng.randint(320, 1600)
        a, b = rng.choice(SHAPES)
        width, height = (longest, longest * b // a) if a >= b else (longest * a // b, longest)
        name = f"{i:05d}.jpg"
        if kind == "missing":
            paths.append(f"/missing/{name}")
            continue
        paths.append(f"/{kind}/{name}")
        (folder / kind).mkdir(parents=True, exist_ok=True)
        if kind == "html":
            (folder / kind / name).write_bytes(HTML)
        elif not (folder / kind / name).exists():
            jobs.append((folder / kind / name, width, height, SEED + i))
    if jobs:
        start = time.perf_counter()
        with multiprocessing.get_context("fork").Pool(os.cpu_count()) as pool:
            pool.map(_write_image, jobs, chunksize=8)
        log(f"generated {len(jobs)} JPEGs in {time.perf_counter() - start:.0f}s into {folder}")
    return paths


def serve(folder: Path, delay: float) -> None:
    """The server process: every file in memory; prints its port, then serves until killed."""
    from standins.images import JPEG, ImageHost, Reply

    server = ImageHost(delay=delay, keep_log=False)
    for path in folder.glob("*/*.jpg"):
        data = path.read_bytes()
        if path.parent.name == "truncated":
            data = data[: len(data) // 2]
        server.route(f"/{path.parent.name}/{path.name}", Reply(200, JPEG, data))
    server.start()
    print(server.port, flush=True)
    while True:
        time.sleep(3600)


class Server:
    def __init__(self, folder: Path, delay: float):
        self._proc = subprocess.Popen(
            [sys.executable, __file__, "--_serve", str(folder), "--_delay", str(delay)],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.port = int(self._proc.stdout.readline())

    def close(self) -> None:
        self._proc.terminate()
        self._proc.wait()


# ---------------------------------------------------------------------------- the contenders


def _ours_worker(job: tuple[list[str], str]) -> dict:
    """One process: the FetchImages DoFn over its URLs as one bundle."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from apache_beam.pvalue import TaggedOutput
    from apache_beam.transforms.window import GlobalWindow
    from apache_beam.utils.timestamp import MIN_TIMESTAMP

    from pipeline.config import ImagesConfig
    from pipeline.images.stage import _FetchImagesFn
    from pipeline.records import DROPPED, GENUINE, Drop, Pair
    from pipeline.store import ImageStore

    urls, out = job
    config = ImagesConfig(
        allow_private_hosts=True,
        resize="keep_ratio",
        size=SIZE,
        format="jpeg",
        quality=QUALITY,
        concurrency=THREADS,
        per_host=THREADS,
    )
    # The stored images go into a store beside the Parquet file, as in a run (`pipeline.store`).
    store = ImageStore(out + ".store")
    fn = _FetchImagesFn(config, store, (), run="bench")
    fn.setup()
    fn.start_bundle()
    outputs = []
    window = GlobalWindow()
    for i, url in enumerate(urls):
        pair = Pair(f"{i}", "bench", "bench", url, "صورة", GENUINE, image_url=url)
        outputs += fn.process(pair, timestamp=MIN_TIMESTAMP, window=window)
    outputs += fn.finish_bundle()
    fn.teardown()
    kept = [o.value for o in outputs if not isinstance(o, TaggedOutput)]
    drops = [o.value.value for o in outputs if isinstance(o, TaggedOutput) and o.tag == DROPPED]
    reasons = Counter(d.reason for d in drops)
    assert not any(isinstance(p, Drop) for p in kept)
    with store.reader() as reader:
        images = [reader.read(p.image_ref) for p in kept]
    table = pa.table(
        {
            "image": images,
            "phash": [p.phash for p in kept],
            "sha256": [p.sha256 for p in kept],
        }
    )
    pq.write_table(table, out)
    return {"kept": len(kept), "dropped": dict(reasons)}


def run_ours_process(url_file: Path, out: Path) -> None:
    """`--_ours`: split the URLs over PROCESSES spawned processes; prints the counts as JSON."""
    urls = url_file.read_text().split()
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(urls[i::PROCESSES], str(out / f"part-{i}.parquet")) for i in range(PROCESSES)]
    with multiprocessing.get_context("spawn").Pool(PROCESSES) as pool:
        results = pool.map(_ours_worker, jobs)
    dropped = Counter()
    for r in results:
        dropped.update(r["dropped"])
    print(json.dumps({"kept": sum(r["kept"] for r in results), "dropped": dict(dropped)}))


I2D_SCRIPT = f"""
import sys
from img2dataset import download
urls, out, per_shard = sys.argv[1], sys.argv[2], int(sys.argv[3])
download(url_list=urls, input_format="txt", output_folder=out, output_format="parquet",
         processes_count={PROCESSES}, thread_count={THREADS}, image_size={SIZE},
         resize_mode="keep_ratio_largest", resize_only_if_bigger=True, encode_format="jpg",
         encode_quality={QUALITY}, number_sample_per_shard=per_shard, timeout=10, retries=0,
         enable_wandb=False, distributor="multiprocessing")
"""


def timed(cmd: list[str], log_file: Path) -> tuple[float, str]:
    start = time.perf_counter()
    with log_file.open("w") as err:
        # NO_ALBUMENTATIONS_UPDATE: img2dataset's albumentations asks PyPI for updates on import.
        env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        tail = log_file.read_text()[-3000:]
        raise SystemExit(f"{cmd[:2]} failed with status {proc.returncode}:\n{tail}")
    return seconds, proc.stdout


def run_ours(url_file: Path, work: Path) -> tuple[float, int, dict]:
    out = work / "ours"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, __file__, "--_ours", str(url_file), "--_out", str(out)]
    seconds, stdout = timed(cmd, work / "ours.log")
    result = json.loads(stdout.strip().splitlines()[-1])
    return seconds, result["kept"], result["dropped"]


def run_i2d(python: str, url_file: Path, work: Path, count: int) -> tuple[float, int, dict]:
    out = work / "i2d"
    shutil.rmtree(out, ignore_errors=True)
    per_shard = max(1, -(-count // (2 * PROCESSES)))
    cmd = [python, "-c", I2D_SCRIPT, str(url_file), str(out), str(per_shard)]
    seconds, _ = timed(cmd, work / "i2d.log")
    kept, errors = 0, Counter()
    for stats_file in out.glob("*_stats.json"):
        stats = json.loads(stats_file.read_text())
        kept += stats["successes"]
        errors.update({k[:40]: v for k, v in stats.get("status_dict", {}).items()})
    errors.pop("success", None)
    return seconds, kept, dict(errors)


# ---------------------------------------------------------------------------- draft()


def measure_draft(folder: Path, count: int) -> dict:
    """Single-threaded times with and without draft(), and pHash distances.

    Three steps are timed, each with and without draft: `decode` (open, decode, orient, RGB),
    `to_size` (decode, then resize to the stored size: what draft() shortens) and `store` (the
    stage's whole CPU work: to_size, encode, pHash, sha256)."""
    import imagehash
    from PIL import Image

    from pipeline.config import ImagesConfig
    from pipeline.images.codec import decode_image, open_image, resize_image, store_image

    config = ImagesConfig(size=SIZE, quality=QUALITY)

    def decode(data, use_draft):
        img = open_image(data, config.max_pixels, config.min_size)
        return decode_image(img, config.resize, config.size, use_draft)

    steps = {
        "decode": decode,
        "to_size": lambda data, d: resize_image(decode(data, d), config.resize, config.size),
        "store": lambda data, d: store_image(data, config, use_draft=d),
    }
    files = sorted((folder / "ok").glob("*.jpg"))[:count]
    seconds = {(step, d): 0.0 for step in steps for d in (True, False)}
    large = {d: 0.0 for d in (True, False)}  # to_size, for images of 1024 px and more
    vs_full, vs_undrafted = Counter(), Counter()
    for path in files:
        data = path.read_bytes()
        is_large = max(Image.open(io.BytesIO(data)).size) >= 1024
        for step, run in steps.items():
            for use_draft in (True, False):  # alternating spreads any drift of the machine
                start = time.perf_counter()
                run(data, use_draft)
                elapsed = time.perf_counter() - start
                seconds[step, use_draft] += elapsed
                if step == "to_size" and is_large:
                    large[use_draft] += elapsed
        stored = imagehash.hex_to_hash(store_image(data, config).phash)
        undrafted = imagehash.hex_to_hash(store_image(data, config, use_draft=False).phash)
        full = imagehash.phash(Image.open(io.BytesIO(data)).convert("RGB"))
        vs_full[int(stored - full)] += 1
        vs_undrafted[int(stored - undrafted)] += 1
    n = len(files)
    result = {"images": n}
    for step in steps:
        result[step] = {
            "ms_full": 1000 * seconds[step, False] / n,
            "ms_draft": 1000 * seconds[step, True] / n,
            "speedup": seconds[step, False] / seconds[step, True],
        }
    result["to_size_speedup_1024px_and_up"] = large[False] / large[True] if large[True] else None
    # pHash of what is stored against the pHash of the original decoded at full size, and
    # against what would be stored without draft(): {distance: images}.
    result["phash_distance_vs_full_decode"] = {str(k): vs_full[k] for k in sorted(vs_full)}
    result["phash_distance_vs_no_draft"] = {str(k): vs_undrafted[k] for k in sorted(vs_undrafted)}
    return result


# ---------------------------------------------------------------------------- main


def find_i2d(option: str | None) -> str | None:
    if option:
        if not os.access(option, os.X_OK):
            raise SystemExit(f"--img2dataset-python: {option} is not an executable")
        return option
    return str(DEFAULT_I2D) if DEFAULT_I2D.exists() else None


def busy_cores(seconds: float = 2.0) -> float | None:
    """How many cores something else keeps busy, from /proc/stat (None off Linux)."""

    def sample():
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        values = [int(v) for v in fields]
        return sum(values[:3]) + sum(values[5:8]), sum(values)

    try:
        busy0, total0 = sample()
        time.sleep(seconds)
        busy1, total1 = sample()
    except OSError:
        return None
    return (os.cpu_count() or 1) * (busy1 - busy0) / max(1, total1 - total0)


def compare(tools: dict, url_file: Path, rounds: int, label: str) -> dict:
    """Interleaved runs of each tool on `url_file`: {tool: {seconds, kept, per_s}} medians."""
    times: dict[str, list[float]] = {tool: [] for tool in tools}
    kept: dict[str, int] = {}
    for r in range(rounds):
        for tool in list(tools)[:: 1 if r % 2 == 0 else -1]:
            t, n, why = tools[tool](url_file)
            times[tool].append(t)
            kept[tool] = n
            log(f"{label}, {tool}: {t:.1f}s, {n} kept, {why}")
    figures = {}
    for tool, ts in times.items():
        median = statistics.median(ts)
        figures[tool] = {"seconds": median, "kept": kept[tool], "per_s": kept[tool] / median}
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_IMAGES} images, {QUICK_ROUNDS} rounds"
    )
    parser.add_argument("--images", type=int, help="number of URLs (overrides the size)")
    parser.add_argument("--rounds", type=int, help="runs of each tool per setting")
    parser.add_argument(
        "--img2dataset-python",
        help=f"the python of a venv with img2dataset (default: {DEFAULT_I2D} if present)",
    )
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "bench-images"))
    parser.add_argument("--_serve", help=argparse.SUPPRESS)
    parser.add_argument("--_delay", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--_ours", help=argparse.SUPPRESS)
    parser.add_argument("--_out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._serve:
        serve(Path(args._serve), args._delay)
        return 0
    if args._ours:
        run_ours_process(Path(args._ours), Path(args._out))
        return 0

    count = args.images or (QUICK_IMAGES if args.quick else FULL_IMAGES)
    rounds = args.rounds or (QUICK_ROUNDS if args.quick else FULL_ROUNDS)
    i2d = find_i2d(args.img2dataset_python)
    if i2d is None:
        log(
            "img2dataset not found: skipping the comparison. Install it apart from the project "
            "(python3 -m venv /tmp/i2d && /tmp/i2d/bin/pip install img2dataset) or pass "
            "--img2dataset-python."
        )
    folder = Path(args.cache) / f"seed{SEED}"
    paths = make_images(folder, count)
    expected_ok = sum(p.startswith("/ok/") for p in paths)
    work = Path(tempfile.mkdtemp(prefix="bench-images-"))
    background = busy_cores()
    results: dict = {"benchmark": "images", "images": count, "rounds": rounds}
    results["background_busy_cores"] = background

    def ours(url_file: Path, expected: int | None = expected_ok):
        t, n, why = run_ours(url_file, work)
        if expected is not None and n != expected:
            raise SystemExit(f"ours kept {n}, expected {expected}: {why}")
        return t, n, why

    tools = {"ours": ours}
    if i2d:
        tools["img2dataset"] = lambda url_file: run_i2d(i2d, url_file, work, count)
    rows = []
    try:
        for delay in DELAYS:
            server = Server(folder, delay)
            try:
                urls = [f"http://127.0.0.1:{server.port}{p}\n" for p in paths]
                url_file = work / "urls.txt"
                url_file.write_text("".join(urls))
                label = f"delay_{delay * 1000:.0f}ms"
                figures = compare(tools, url_file, rounds, label)
                if delay == 0:
                    # Start-up (interpreters, imports, spawned processes), from a 20-URL list.
                    small = work / "small.txt"
                    small.write_text("".join(urls[:20]))
                    starting = dict(tools, ours=lambda f: ours(f, None))
                    for tool, f in compare(starting, small, 2, "start-up").items():
                        results.setdefault("startup_s", {})[tool] = f["seconds"]
            finally:
                server.close()
            rows.append((delay, figures))
            results[label] = figures
        # Ratios of images per second, as timed and with each tool's start-up taken out.
        for delay, figures in rows:
            label = f"delay_{delay * 1000:.0f}ms"
            results[label]["ratio"] = results[label]["ratio_without_startup"] = None
            if "img2dataset" in figures:
                o, b = figures["ours"], figures["img2dataset"]
                startup = results["startup_s"]
                steady_o = o["kept"] / max(1e-3, o["seconds"] - startup["ours"])
                steady_b = b["kept"] / max(1e-3, b["seconds"] - startup["img2dataset"])
                results[label]["ratio"] = o["per_s"] / b["per_s"]
                results[label]["ratio_without_startup"] = steady_o / steady_b
        draft = measure_draft(folder, 150 if args.quick else 500)
        results["draft"] = draft
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"FetchImages vs img2dataset: {count} URLs, {PROCESSES} processes x {THREADS} threads,")
    print(f"resize {SIZE} keep ratio, JPEG q{QUALITY}; medians of {rounds} interleaved runs")
    if background is not None:
        print(f"(other work kept {background:.1f} of {os.cpu_count()} cores busy before the runs)")
    print()
    print(
        "| server delay | ours img/s | img2dataset img/s | ratio | ratio without start-up "
        "| ours s | img2dataset s |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for delay, figures in rows:
        o, b = figures["ours"], figures.get("img2dataset")
        theirs = (
            f"{b['per_s']:.1f} | {figures['ratio']:.2f}x | {figures['ratio_without_startup']:.2f}x"
            f" | {o['seconds']:.1f} | {b['seconds']:.1f}"
            if b
            else f"n/a | n/a | n/a | {o['seconds']:.1f} | n/a"
        )
        print(f"| {delay * 1000:.0f} ms | {o['per_s']:.1f} | {theirs} |")
    startup = results["startup_s"]
    print()
    print(
        "start-up (a 20-URL list, included in the times above): "
        + ", ".join(f"{tool} {seconds:.1f}s" for tool, seconds in startup.items())
    )
    print()
    print(f"draft(), {draft['images']} JPEGs of 320-1600 px, one thread, ms per image:")
    print()
    print("| step | full decode | draft() | speedup |")
    print("| --- | ---: | ---: | ---: |")
    for step in ("decode", "to_size", "store"):
        f = draft[step]
        print(f"| {step} | {f['ms_full']:.1f} | {f['ms_draft']:.1f} | {f['speedup']:.2f}x |")
    print()
    large = draft["to_size_speedup_1024px_and_up"]
    print(f"to_size speedup on images of 1024 px and up: {large:.2f}x")
    print(f"pHash distance, stored vs full decode: {draft['phash_distance_vs_full_decode']}")
    print(f"pHash distance, stored vs stored without draft: {draft['phash_distance_vs_no_draft']}")
    results["ours_vs_img2dataset"] = results["delay_0ms"]["ratio"]
    results["ours_vs_img2dataset_delay_200ms"] = results["delay_200ms"]["ratio"]
    results["ours_vs_img2dataset_without_startup"] = results["delay_0ms"]["ratio_without_startup"]
    # Decoding to the stored size is the step draft() shortens.
    results["draft_speedup"] = draft["to_size"]["speedup"]
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
