"""Benchmark of a whole local build at scale: peak memory and throughput against the pair count.

It generates photo-like 640x480 JPEGs (about 40 KB each, JPEG quality 85: a random colour grid
upscaled bicubically, a few random shapes and a shared grain texture at a random offset, seeded
by index so that their pHashes lie far apart), once, into `.bench/scale-images/` (git-ignored;
later runs generate only the missing ones), serves them from a separate loopback server process
(the image host of `standins/images.py`, reading `/img/{i}.jpg` from that folder on each
request, HTTP/1.1 keep-alive), and writes a WIT shard in the real format of N `ar` rows, each
with its own image URL on that server and its own Arabic caption (8-15 common words, seeded),
so that every row passes the text filters and language ID and every image is kept. Then, for
two sizes:

1. the whole build: `python -m pipeline run MANIFEST --output DIR --no-progress` (fetch on, no
   image cache, `allow_private_hosts`), wall clock from process start, and the peak RSS of the
   CLI process and all its descendants (the sum of their `VmRSS`, polled every 0.2 s from
   /proc); `stats.json` must keep all N pairs, or the benchmark fails; the output folder's
   size per pair (`output_kb_per_pair`: the stored images and their rows) beside it; shards of
   1,000 rows (`ROWS_PER_SHARD`), so that both sizes write full shards;
2. the slope: the marginal peak RSS per pair between the two sizes (`rss_kb_per_pair`), and
   from it the peak of a full build of 2.1M pairs (`full_build_rss_gb_estimate`: the larger
   run's peak plus the slope times the pairs it lacks).

Once, at the larger size and the same URLs: the images stage alone (`ReadWit` then
`FetchImages`, counting the kept pairs) in its own process on the same runner, for how much of
the build's time the rest of the graph costs (`pipeline_vs_images_stage`: the build's pairs/s
over the stage's). The subprocesses run with `PYTHONPATH` set to this checkout, so a copy of
this file in another worktree measures that worktree's `pipeline`.

Units: KB = 1024 bytes, MB = 1024^2 bytes, GB = 10^9 bytes. RSS sums count pages shared between
processes once per process. The server shares the machine's cores with the build.

    python benchmarks/scale.py                                 # 20,000 and 80,000 pairs, ~18 min
    python benchmarks/scale.py --quick                         # 4,000 and 16,000, under 5 minutes
    python benchmarks/scale.py --sizes 20000,200000            # any sizes (one: no slope)
    python benchmarks/scale.py --sizes 200000 --no-images-stage  # one long build only
    python benchmarks/scale.py --runner-mode multi_processing  # 2 local worker processes

The last line on stdout is one JSON object holding every figure.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import multiprocessing
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import apache_beam as beam
    from PIL import Image

    from pipeline.config import ImagesConfig

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

SEED = 20240615
CACHE = REPO / ".bench" / "scale-images"
WIDTH, HEIGHT, QUALITY = 640, 480, 85
GRAIN_SIGMA, GRAIN_MARGIN = 3.0, 64
# Below a few thousand pairs the fixed costs of the last stages (a shard's rows, a row group of
# images, the runner's copies) still show in the slope: 1,000 and 4,000 read about 17 KB a
# pair where 4,000 and 16,000 read 6.6 and 20,000 and 200,000 read 3.7.
FULL_SIZES, QUICK_SIZES = (20_000, 80_000), (4_000, 16_000)
# Full shards at every size: the writer's memory for one shard (its pairs decoded, a row group of
# images) is then the same at both sizes and the slope is what a large build adds per pair (its
# shards are capped at the manifest's rows_per_shard, 10,000 by default).
ROWS_PER_SHARD = 1_000
FULL_BUILD_PAIRS = 2_100_000
POLL_SECONDS = 0.2
MP_WORKERS = 2
RUNNER_MODES = {
    "in_memory": [],
    "multi_processing": [
        "--direct_running_mode",
        "multi_processing",
        "--direct_num_workers",
        str(MP_WORKERS),
    ],
}

# Common Arabic words (particles, nouns, adjectives, verbs) for the captions.
WORDS = (
    "في", "من", "إلى", "على", "عن", "مع", "هذا", "هذه", "ذلك", "تلك", "التي", "الذي", "الذين",
    "كان", "كانت", "قد", "لقد", "حيث", "بعد", "قبل", "خلال", "بين", "حتى", "أيضا", "ثم", "لكن",
    "أو", "كل", "بعض", "عند", "منذ", "نحو", "حول", "فوق", "تحت", "أمام", "وراء", "داخل", "خارج",
    "غير", "المدينة", "الدولة", "التاريخ", "العالم", "السكان", "الحكومة", "المنطقة", "الحرب",
    "الثقافة", "اللغة", "العربية", "الشعب", "الأرض", "البحر", "النهر", "الجبل", "القرن", "العام",
    "الشمال", "الجنوب", "الشرق", "الغرب", "مركز", "عاصمة", "محافظة", "الاقتصاد", "الزراعة",
    "التجارة", "الصناعة", "الفن", "الأدب", "الشعر", "الموسيقى", "المسجد", "القلعة", "القصر",
    "السوق", "الجسر", "البرج", "المتحف", "المدرسة", "الجامعة", "المكتبة", "الحديقة", "الميناء",
    "المطار", "الشارع", "الطريق", "البيت", "الباب", "النافذة", "السماء", "الشمس", "القمر",
    "الماء", "الشجرة", "الزهور", "الصحراء", "الواحة", "الوادي", "الساحل", "الغابة", "الجزيرة",
    "القرية", "الريف", "الملك", "الأمير", "الرئيس", "الشاعر", "الكاتب", "الطبيب", "المهندس",
    "الفنان", "اللاعب", "الفريق", "المباراة", "البطولة", "المهرجان", "الاحتفال", "المعرض",
    "المؤتمر", "الزيارة", "الصورة", "اللوحة", "التمثال", "الخريطة", "المخطوطة", "العملة",
    "الطابع", "العلم", "الشعار", "الكتاب", "الرسالة", "الأطفال", "النساء", "الرجال", "العائلة",
    "الناس", "الجيش", "السيارة", "القطار", "الطائرة", "السفينة", "الحصان", "الجمل", "الطيور",
    "الأسد", "الصقر", "القديم", "القديمة", "الحديث", "الحديثة", "الكبير", "الكبيرة", "الصغير",
    "الصغيرة", "الجميل", "الجميلة", "التاريخي", "التاريخية", "الشهير", "الشهيرة", "الرئيسي",
    "الوطني", "الوطنية", "العربي", "الإسلامية", "الأثري", "الأول", "الأولى", "الثاني", "الجديد",
    "الجديدة", "الأبيض", "الأخضر", "الأزرق", "الأحمر", "الذهبي", "يقع", "تقع", "يظهر", "تظهر",
    "يعد", "تعد", "تأسست", "بني", "بنيت", "افتتح", "زار", "شارك", "التقطت", "يمثل", "تمثل", "يضم",
    "تضم", "يحتفل", "يلعب", "يعمل", "يسكن", "يعيش", "أصبح", "أصبحت", "استخدم", "ظهر", "وصل",
    "عاد", "كتب",
)  # fmt: skip


def log(message: str) -> None:
    """Progress goes to stderr: stdout holds only the table and the JSON line."""
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- the images

_GRAIN = None  # the shared grain texture, made once in the parent and inherited by fork


def _grain() -> Image.Image:
    """Grey noise of sigma GRAIN_SIGMA as an RGB image, offset by 128 (ImageChops.add takes it
    back off): adding it is one C call, not a float array per image."""
    import numpy as np
    from PIL import Image

    global _GRAIN
    if _GRAIN is None:
        shape = (HEIGHT + GRAIN_MARGIN, WIDTH + GRAIN_MARGIN)
        noise = np.random.default_rng(SEED).normal(0, GRAIN_SIGMA, shape)
        grey = np.clip(np.rint(noise) + 128, 0, 255).astype(np.uint8)
        _GRAIN = Image.fromarray(np.repeat(grey[:, :, None], 3, axis=2), "RGB")
    return _GRAIN


def photo_jpeg(index: int) -> bytes:
    """Image `index`: random low-frequency colour, six shapes, grain; the same bytes every time."""
    import numpy as np
    from PIL import Image, ImageChops, ImageDraw

    rng = np.random.default_rng([SEED, index])
    coarse = rng.integers(0, 256, (HEIGHT // 96, WIDTH // 96, 3), dtype=np.uint8)
    img = Image.fromarray(coarse, "RGB").resize((WIDTH, HEIGHT), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x0, y0 = int(rng.integers(0, WIDTH)), int(rng.integers(0, HEIGHT))
        x1 = x0 + int(rng.integers(WIDTH // 10, WIDTH // 3 + 2))
        y1 = y0 + int(rng.integers(HEIGHT // 10, HEIGHT // 3 + 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=colour)
    dx, dy = (int(v) for v in rng.integers(0, GRAIN_MARGIN, 2))
    grain = _grain().crop((dx, dy, dx + WIDTH, dy + HEIGHT))
    buf = io.BytesIO()
    ImageChops.add(img, grain, offset=-128).save(buf, "JPEG", quality=QUALITY)
    return buf.getvalue()


def _write_image(index: int) -> None:
    path = CACHE / f"{index}.jpg"
    part = path.with_name(f"{index}.jpg.part{os.getpid()}")
    part.write_bytes(photo_jpeg(index))
    part.replace(path)  # never a half-written image in the cache


def make_images(count: int) -> float:
    """Writes images 0..count-1 that the cache lacks; returns the seconds it took."""
    CACHE.mkdir(parents=True, exist_ok=True)
    present = set(os.listdir(CACHE))
    missing = [i for i in range(count) if f"{i}.jpg" not in present]
    if not missing:
        return 0.0
    start = time.perf_counter()
    _grain()  # before the fork, so every worker shares it
    with multiprocessing.get_context("fork").Pool(os.cpu_count()) as pool:
        for _ in pool.imap_unordered(_write_image, missing, chunksize=64):
            pass
    seconds = time.perf_counter() - start
    log(f"generated {len(missing):,} JPEGs in {seconds:.0f}s into {CACHE}")
    return seconds


def mean_image_kb(count: int) -> float:
    return sum((CACHE / f"{i}.jpg").stat().st_size for i in range(count)) / count / 1024


# ---------------------------------------------------------------------------- the server


_IMAGE_PATH = re.compile(r"/img/(\d+)\.jpg")


def serve(folder: Path) -> None:
    """`--_serve`: serves `folder` on a free loopback port, prints the port, runs until killed."""
    from standins.images import JPEG, ImageHost, Reply

    def image(path: str) -> Reply | None:
        match = _IMAGE_PATH.fullmatch(path)
        if match:
            with contextlib.suppress(FileNotFoundError):
                return Reply(200, JPEG, (folder / f"{int(match.group(1))}.jpg").read_bytes())
        return None

    server = ImageHost(fallback=image, keep_log=False).start()
    print(server.port, flush=True)
    threading.Event().wait()


class Server:
    """The server process; `close()` kills it."""

    def __init__(self, folder: Path) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, __file__, "--_serve", str(folder)], stdout=subprocess.PIPE, text=True
        )
        line = self._proc.stdout.readline()
        if not line.strip().isdigit():
            self.close()
            raise SystemExit(f"the image server did not start (it printed {line!r})")
        self.port = int(line)

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()


# ---------------------------------------------------------------------------- the shard


def arabic_caption(rng: random.Random) -> str:
    return " ".join(rng.choices(WORDS, k=rng.randint(8, 15)))


def write_shard(path: Path, count: int, image_url: Callable[[int], str]) -> None:
    """A WIT shard of `count` `ar` rows, row i showing `image_url(i)` (WIDTH x HEIGHT, as
    `original_width`/`original_height` say) with its own Arabic caption."""
    from wit_files import wit_row

    from pipeline.sources.wit import WIT_COLUMNS

    rng = random.Random(SEED)
    seen: set[str] = set()
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
        writer.writerow(WIT_COLUMNS)
        for i in range(count):
            caption = arabic_caption(rng)
            while caption in seen:
                caption = arabic_caption(rng)
            seen.add(caption)
            row = wit_row(
                i,
                image_url=image_url(i),
                caption_reference_description=caption,
                original_width=str(WIDTH),
                original_height=str(HEIGHT),
            )
            writer.writerow([row[c] for c in WIT_COLUMNS])


def write_manifest(path: Path, shard: Path) -> None:
    path.write_text(
        "name: scale-bench\n"
        "sources:\n"
        f"  - kind: wit\n    paths: [{json.dumps(str(shard))}]\n"
        "images:\n  fetch: true\n  cache: false\n  allow_private_hosts: true\n"
        f"output:\n  rows_per_shard: {ROWS_PER_SHARD}\n",
        encoding="utf-8",
    )


# ---------------------------------------------------------------------------- measuring


def _rss_of_tree(root: int) -> int:
    """The summed VmRSS, in bytes, of `root` and all its descendants (0 once it is gone)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # the command name may hold ") "
        children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
                break
    return total


def subprocess_env() -> dict[str, str]:
    """The environment of the measured processes: this checkout's packages first."""
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": str(REPO) + (os.pathsep + path if path else "")}


def check_imported_pipeline() -> str:
    """The `pipeline` package the measured processes import; it must be this checkout's."""
    done = subprocess.run(
        [sys.executable, "-c", "import pipeline; print(pipeline.__file__)"],
        cwd=REPO,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    found = done.stdout.strip()
    if not Path(found).resolve().is_relative_to(REPO / "pipeline"):
        raise SystemExit(f"the subprocesses import {found}, not the pipeline of {REPO}")
    log(f"the subprocesses import {found}")
    return found


def run_measured(cmd: list[str], log_file: Path) -> tuple[float, int]:
    """Runs `cmd` (cwd: the checkout), polling its process tree's RSS; (seconds, peak bytes).
    A non-zero exit stops the benchmark with the tail of the output."""
    peak = 0
    with log_file.open("w") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, env=subprocess_env(), stdout=out, stderr=out)
        try:
            while proc.poll() is None:
                peak = max(peak, _rss_of_tree(proc.pid))
                time.sleep(POLL_SECONDS)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        seconds = time.perf_counter() - start
    if proc.returncode != 0:
        log(log_file.read_text(errors="replace")[-4000:])
        raise SystemExit(f"{' '.join(cmd[1:4])} … failed with status {proc.returncode}")
    return seconds, peak


def run_build(manifest: Path, output: Path, runner_args: list[str], work: Path) -> dict:
    """The whole build through the CLI; wall seconds, peak RSS and the kept count."""
    cmd = [sys.executable, "-m", "pipeline", "run", str(manifest), "--output", str(output)]
    seconds, peak = run_measured([*cmd, "--no-progress", *runner_args], work / "build.log")
    stats = json.loads((output / "stats.json").read_text(encoding="utf-8"))
    size = sum(f.stat().st_size for f in output.rglob("*") if f.is_file())
    return {
        "seconds": seconds,
        "peak_rss": peak,
        "kept": stats["kept"],
        "stats": stats,
        "bytes": size,
    }


# ---------------------------------------------------------------------------- the images stage


def images_stage(config: ImagesConfig, workdir: Path) -> beam.PTransform:
    """The FetchImages stage as the build constructs it (one place to adapt its arguments)."""
    from pipeline.images import FetchImages, image_store

    return FetchImages(config, image_store(config, str(workdir / "staging")))


def _write_count(count: int, path: str) -> None:
    Path(path).write_text(str(count), encoding="utf-8")


def run_images_stage(manifest_path: Path, workdir: Path, runner_args: list[str]) -> None:
    """`--_images-stage`: ReadWit then FetchImages over the manifest's WIT source; writes the
    kept count and the imported `pipeline` to WORKDIR/images-stage.json."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    import pipeline
    from pipeline.build import images_config
    from pipeline.manifest import load_manifest
    from pipeline.sources.wit import ReadWit

    manifest = load_manifest(str(manifest_path))
    (source,) = manifest.sources
    config = images_config(manifest)
    count_file = workdir / "images-stage.count"
    options = PipelineOptions(["--runner", "FnApiRunner", *runner_args])
    with beam.Pipeline(options=options) as p:
        pairs, _ = p | "ReadWit" >> ReadWit(source)
        kept, _ = pairs | "FetchImages" >> images_stage(config, workdir)
        (
            kept
            | "Count" >> beam.combiners.Count.Globally()
            | "Write" >> beam.Map(_write_count, str(count_file))
        )
    result = {"kept": int(count_file.read_text()), "pipeline": pipeline.__file__}
    (workdir / "images-stage.json").write_text(json.dumps(result), encoding="utf-8")


def measure_images_stage(manifest: Path, runner_args: list[str], work: Path) -> dict:
    workdir = work / "images-stage"
    workdir.mkdir()
    cmd = [sys.executable, __file__, "--_images-stage", str(manifest), str(workdir)]
    seconds, peak = run_measured([*cmd, *runner_args], work / "images-stage.log")
    result = json.loads((workdir / "images-stage.json").read_text(encoding="utf-8"))
    if not Path(result["pipeline"]).resolve().is_relative_to(REPO / "pipeline"):
        raise SystemExit(f"the images stage imported {result['pipeline']}, not {REPO}'s")
    return {"seconds": seconds, "peak_rss": peak, **result}


# ---------------------------------------------------------------------------- main


def parse_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(sorted({int(s.replace("_", "")) for s in text.split(",") if s.strip()}))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"not a list of pair counts: {text!r}") from err
    if not sizes or sizes[0] < 1:
        raise argparse.ArgumentTypeError(f"not a list of positive pair counts: {text!r}")
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_SIZES[0]:,} and {QUICK_SIZES[1]:,} pairs"
    )
    parser.add_argument(
        "--sizes",
        type=parse_sizes,
        help=f"pair counts, comma-separated (default {FULL_SIZES[0]},{FULL_SIZES[1]})",
    )
    parser.add_argument(
        "--runner-mode",
        choices=sorted(RUNNER_MODES),
        default="in_memory",
        help=f"the local runner's mode (multi_processing: {MP_WORKERS} worker processes)",
    )
    parser.add_argument(
        "--no-images-stage",
        action="store_true",
        help="skip the images stage alone (a long run at one large size: no ratio)",
    )
    parser.add_argument("--_serve", help=argparse.SUPPRESS)
    parser.add_argument("--_images-stage", nargs=2, help=argparse.SUPPRESS)
    args, extra = parser.parse_known_args(argv)
    if args._serve:
        serve(Path(args._serve))
        return 0
    if args._images_stage:
        manifest, workdir = args._images_stage
        run_images_stage(Path(manifest), Path(workdir), extra)
        return 0
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")

    sizes = args.sizes or (QUICK_SIZES if args.quick else FULL_SIZES)
    runner_args = RUNNER_MODES[args.runner_mode]
    largest = sizes[-1]
    started = time.perf_counter()
    generation_s = make_images(largest)
    image_kb = mean_image_kb(largest)
    imported = check_imported_pipeline()
    from images import busy_cores  # benchmarks/images.py, beside this script

    background = busy_cores()
    runs, stage = [], None
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        work = Path(tmp)
        server = Server(CACHE)
        try:
            for n in sizes:
                shard = work / f"wit-{n}.tsv"
                write_shard(shard, n, lambda i: f"http://127.0.0.1:{server.port}/img/{i}.jpg")
                manifest = work / f"scale-{n}.yaml"
                write_manifest(manifest, shard)
                output = work / f"out-{n}"
                log(f"build of {n:,} pairs ({args.runner_mode}) …")
                build = run_build(manifest, output, runner_args, work)
                if build["kept"] != n:
                    wit = build["stats"]["sources"]["wit"]
                    raise SystemExit(f"the build kept {build['kept']:,} of {n:,}: {wit}")
                run = {
                    "pairs": n,
                    "seconds": round(build["seconds"], 2),
                    "pairs_per_s": round(n / build["seconds"], 1),
                    "peak_rss_mb": round(build["peak_rss"] / 2**20, 1),
                    "output_kb_per_pair": round(build["bytes"] / n / 1024, 1),
                }
                shutil.rmtree(output)
                log(f"  {run}")
                runs.append((run, build["peak_rss"]))
            if not args.no_images_stage:
                log(f"the images stage alone, {largest:,} pairs …")
                stage = measure_images_stage(work / f"scale-{largest}.yaml", runner_args, work)
                if stage["kept"] != largest:
                    raise SystemExit(f"the images stage kept {stage['kept']:,} of {largest:,}")
                log(f"  {stage['seconds']:.1f}s, {stage['peak_rss'] / 2**20:.0f} MB")
        finally:
            server.close()
    total_s = time.perf_counter() - started

    (small, small_rss), (large, large_rss) = runs[0], runs[-1]
    slope = None  # bytes per pair
    if len(runs) > 1:
        slope = (large_rss - small_rss) / (large["pairs"] - small["pairs"])
    stage_per_s = largest / stage["seconds"] if stage else None
    full_estimate = (
        (large_rss + (FULL_BUILD_PAIRS - largest) * slope) / 1e9 if slope is not None else None
    )
    figures = {
        "benchmark": "scale",
        "quick": args.quick,
        "runner_mode": args.runner_mode,
        "sizes": list(sizes),
        "runs": [run for run, _ in runs],
        "rss_kb_per_pair": round(slope / 1024, 2) if slope is not None else None,
        # The line's intercept: what `estimate` adds the pairs to (pipeline/estimate.py).
        "rss_base_mb": round((large_rss - largest * slope) / 2**20, 1)
        if slope is not None
        else None,
        "peak_rss_mb": large["peak_rss_mb"],
        "pairs_per_s": large["pairs_per_s"],
        "images_stage_seconds": round(stage["seconds"], 2) if stage else None,
        "images_stage_pairs_per_s": round(stage_per_s, 1) if stage else None,
        "images_stage_peak_rss_mb": round(stage["peak_rss"] / 2**20, 1) if stage else None,
        "pipeline_vs_images_stage": round(large["pairs_per_s"] / stage_per_s, 3) if stage else None,
        "full_build_pairs": FULL_BUILD_PAIRS,
        "full_build_rss_gb_estimate": round(full_estimate, 2) if full_estimate else None,
        "image_kb_mean": round(image_kb, 1),
        "image_generation_seconds": round(generation_s, 1),
        "cpu_count": os.cpu_count(),
        "background_busy_cores": round(background, 2) if background is not None else None,
        "pipeline_imported": imported,
        "total_seconds": round(total_s, 1),
    }

    f = figures
    print(
        f"Whole local build at scale ({args.runner_mode}): {WIDTH}x{HEIGHT} JPEGs of "
        f"{image_kb:.1f} KB from a loopback server, {os.cpu_count()} cores"
    )
    if background is not None:
        print(f"(other work kept {background:.1f} of {os.cpu_count()} cores busy before the runs)")
    print()
    print("| pairs | seconds | pairs/s | peak RSS MB | output KB/pair |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for run, _ in runs:
        print(
            f"| {run['pairs']:,} | {run['seconds']:.1f} | {run['pairs_per_s']:.1f} "
            f"| {run['peak_rss_mb']:,.0f} | {run['output_kb_per_pair']:.1f} |"
        )
    if stage:
        print(
            f"| {largest:,}, images stage alone | {f['images_stage_seconds']:.1f} "
            f"| {f['images_stage_pairs_per_s']:.1f} | {f['images_stage_peak_rss_mb']:,.0f} | |"
        )
    print()
    if slope is None:
        print("one size: no marginal RSS per pair")
    else:
        print(
            f"marginal peak RSS: {f['rss_kb_per_pair']:.1f} KB per pair; a build of "
            f"{FULL_BUILD_PAIRS:,} pairs would peak near {f['full_build_rss_gb_estimate']:.1f} GB"
        )
    if stage:
        print(
            f"the build runs at {f['pipeline_vs_images_stage']:.2f}x the images stage's pairs/s "
            f"({f['pairs_per_s']:.1f} vs {f['images_stage_pairs_per_s']:.1f})"
        )
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
