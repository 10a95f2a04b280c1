"""The command line: `python -m pipeline run MANIFEST --output DIR [beam options …]` builds a
dataset; `python -m pipeline report DIR` writes `DIR/report.html`, a page that shows it;
`python -m pipeline estimate MANIFEST [--workers N]` prints what a build would cost.

Unknown `--flags` are Beam pipeline options and go to Beam untouched. The exit status is 0
only when the output is complete: every shard written and every source's books balanced.
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import difflib
import json
import logging
import os
import sys

# Beam warns about optional GCP clients and a resource module nobody here asked for.
_NOISE = ("apitools not found", "Resource module is not available")
logging.getLogger().addFilter(lambda r: not any(n in r.getMessage() for n in _NOISE))

import apache_beam as beam  # noqa: E402
from apache_beam.io.filesystems import FileSystems  # noqa: E402
from apache_beam.options.pipeline_options import PipelineOptions  # noqa: E402

from pipeline import progress  # noqa: E402
from pipeline.build import build_pipeline, check_buildable, empty_inputs  # noqa: E402
from pipeline.config import OutputConfig  # noqa: E402
from pipeline.files import join  # noqa: E402
from pipeline.images.cache import cache_folder, resolve_cache  # noqa: E402
from pipeline.manifest import ManifestError, load_manifest  # noqa: E402
from pipeline.output import output_problem  # noqa: E402
from pipeline.stats import check_stats  # noqa: E402
from pipeline.write import DATA_DIR, shard_count, shard_name  # noqa: E402

log = logging.getLogger("arabic-pairs")

# glibc gives each thread that allocates an arena of its own (up to 8 a core) and hands little of
# them back: the images stage's download and decode threads leave tens of MB in each. Two arenas
# cut a 2-worker local run's memory from 29 to 18 KB a pair (benchmarks/scale.py) at no measured
# cost in speed. A MALLOC_ARENA_MAX in the environment is kept.
MALLOC_ARENA_MAX = "2"
M_ARENA_MAX = -8  # mallopt's parameter number, glibc's malloc.h


def limit_malloc_arenas() -> None:
    """Sets MALLOC_ARENA_MAX for the worker processes a run starts (they read it at start-up)
    and, through `mallopt`, for this process's arenas from now on; nothing off glibc."""
    os.environ.setdefault("MALLOC_ARENA_MAX", MALLOC_ARENA_MAX)
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_ARENA_MAX, int(os.environ["MALLOC_ARENA_MAX"]))
    except (OSError, AttributeError, ValueError):
        pass  # another C library: its own allocator, nothing to set


def _read_stats(output_dir: str) -> dict:
    with FileSystems.open(join(output_dir, "stats.json")) as f:
        return json.loads(f.read().decode("utf-8"))


def _missing_shards(output_dir: str, kept: int, output: OutputConfig) -> list[str]:
    count = shard_count(kept, output.rows_per_shard)
    paths = [join(output_dir, DATA_DIR, shard_name(i, count, output.format)) for i in range(count)]
    return [p for p in paths if not FileSystems.exists(p)]


def unknown_beam_options(args: list[str]) -> list[str]:
    """The problems of the arguments that are no option of Beam's (`--runer`): Beam itself only
    warns and runs without them. Parsed as `PipelineOptions.get_all_options` parses them (its
    parser class is private, and has the `add_value_provider_argument` options need)."""
    from apache_beam.options.pipeline_options import _BeamArgumentParser

    parser = _BeamArgumentParser(allow_abbrev=False)
    for cls in {str(c): c for c in PipelineOptions.__subclasses__()}.values():
        cls._add_argparse_args(parser)
    _, unknown = parser.parse_known_args(args)
    known = [o for o in parser._option_string_actions if o.startswith("--")]
    problems = []
    for arg in unknown:
        flag = arg.split("=", 1)[0]
        if not flag.startswith("--"):
            continue  # the value of an unknown flag, or a stray word: the flag says it
        close = difflib.get_close_matches(flag, known, n=1, cutoff=0.75)
        hint = f" (did you mean {close[0]}?)" if close else ""
        problems.append(f"unknown option {flag}{hint}")
    stray = [a for a in unknown if not a.startswith("-")]
    if stray and not problems:
        problems.append(f"unexpected argument(s): {' '.join(stray)}")
    return problems


def format_accounting(stats: dict) -> str:
    """The accounting as a few lines for the terminal."""
    lines = []
    for name, s in stats["sources"].items():
        drops = ", ".join(f"{r}={n}" for r, n in s["dropped"].items()) or "none"
        lines.append(f"  {name}: read {s['read']}, kept {s['kept']}, dropped: {drops}")
    lines.append(f"  total kept {stats['kept']}, duplicates removed {stats['duplicates_removed']}")
    return "\n".join(lines)


def run(
    manifest_path: str, output_dir: str, beam_args: list[str], show_progress: bool | None = None
) -> int:
    """Builds the dataset; `show_progress` (None: when stderr is a terminal) prints progress
    lines on stderr while it runs. What can be checked is checked first, every problem one line
    and exit 2: the options, the manifest, the model folder, the output folder (never a folder
    of someone else's, `pipeline.output`). The new output replaces the old one only once it is
    whole (`pipeline.write.commit`), so nothing is removed beforehand."""
    problems = unknown_beam_options(beam_args)
    try:
        manifest = load_manifest(manifest_path)
        check_buildable(manifest)
    except ManifestError as err:
        problems += err.problems
    else:
        problem = output_problem(output_dir)
        problems += [problem] if problem else []
    if problems:
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    for empty in empty_inputs(manifest):
        print(f"warning: {empty} is empty: it adds no record", file=sys.stderr)
    with FileSystems.open(manifest_path) as f:
        manifest_text = f.read().decode("utf-8")
    limit_malloc_arenas()
    manifest = dataclasses.replace(manifest, images=resolve_cache(manifest.images, output_dir))
    # Beam 2.77's default DirectRunner runs a graph that qualifies on Prism, downloading Prism's
    # binary first, and quietly falls back when it cannot: name the runner it falls back to (the
    # FnApiRunner), so that a run behaves the same online and offline, whatever the graph holds.
    # A user's --runner is kept.
    if not any(a == "--runner" or a.startswith("--runner=") for a in beam_args):
        beam_args = ["--runner", "FnApiRunner", *beam_args]
    options = PipelineOptions(beam_args)
    if sys.stderr.isatty() if show_progress is None else show_progress:
        progress.start()
    try:
        with beam.Pipeline(options=options) as p:
            build_pipeline(p, manifest, output_dir, manifest_text)
    except Exception as err:  # noqa: BLE001 - Beam has logged the traceback; say it in one line
        message = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        print(f"error: the run failed: {message}", file=sys.stderr)
        return 1
    finally:
        progress.stop()

    stats = _read_stats(output_dir)
    problems = check_stats(stats)
    problems += [
        f"missing shard {path}"
        for path in _missing_shards(output_dir, stats["kept"], manifest.output)
    ]
    print(f"output: {output_dir}")
    print(format_accounting(stats))
    image_cache = cache_folder(manifest.images) if manifest.images.fetch else None
    for line in progress.reuse_lines(progress.counter_totals(p.result), image_cache):
        print(line)
    if stats["kept"] == 0:
        print(
            "warning: no pair was kept; the empty shard has every column, but "
            "datasets.load_dataset refuses a dataset of zero rows",
            file=sys.stderr,
        )
    if problems:
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        return 1
    return 0


def report(output_dir: str) -> int:
    """Writes the report of an output folder and prints its path as the last line."""
    from pipeline.report import build_report  # matplotlib is loaded only for this command

    try:
        path = build_report(output_dir)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"report: {path}")
    return 0


def estimate(
    manifest_path: str,
    workers: int | None = None,
    figures: str | None = None,
    count_limit: int | None = None,
    bandwidth: float | None = None,
    output_dir: str | None = None,
) -> int:
    """Prints the cost table of a manifest whose inputs need not exist, then one JSON line.
    None: this machine's cores, pipeline/figures.json, the defaults of pipeline.estimate, and a
    local output folder."""
    from pipeline import estimate as cost

    try:
        manifest = load_manifest(manifest_path, check_paths=False)
        result = cost.estimate(
            manifest,
            cost.load_figures(figures),
            workers if workers is not None else os.cpu_count() or 1,
            cost.DEFAULT_COUNT_LIMIT if count_limit is None else count_limit,
            cost.DEFAULT_BANDWIDTH_GBPS if bandwidth is None else bandwidth,
            output_dir,
        )
    except (ManifestError, cost.EstimateError) as err:
        for problem in getattr(err, "problems", [str(err)]):
            print(f"error: {problem}", file=sys.stderr)
        return 2
    print(cost.format_estimate(result))
    print(json.dumps(cost.estimate_json(result), ensure_ascii=False))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="arabic-pairs", description="Build the Arabic image-text dataset."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run_cmd = commands.add_parser(
        "run",
        help="build a dataset from a manifest",
        epilog="Unknown --flags are Beam pipeline options (--runner, --direct_num_workers, …).",
    )
    run_cmd.add_argument("manifest", help="the manifest YAML")
    run_cmd.add_argument("--output", required=True, help="the output folder (local or gs://…)")
    run_cmd.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a line per stage on stderr every few seconds while the run works "
        "(default: on when stderr is a terminal)",
    )
    report_cmd = commands.add_parser(
        "report", help="write DIR/report.html: plots, the accounting and sample pairs of an output"
    )
    report_cmd.add_argument("output", metavar="DIR", help="an output folder (local or gs://…)")
    estimate_cmd = commands.add_parser(
        "estimate",
        help="print the CPU/GPU-hours, downloads, output size and wall clock of a build",
        epilog="The manifest's inputs need not exist; small local ones are counted.",
    )
    estimate_cmd.add_argument("manifest", help="the manifest YAML")
    estimate_cmd.add_argument(
        "--workers", type=int, default=None, help="cores working at once (default: this machine's)"
    )
    estimate_cmd.add_argument(
        "--figures", default=None, help="benchmark figures (default: pipeline/figures.json)"
    )
    estimate_cmd.add_argument(
        "--count-limit",
        type=int,
        default=None,
        metavar="BYTES",
        help="local inputs up to this many bytes in all are read to count their records "
        "(default: 100 MB; 0: count nothing)",
    )
    estimate_cmd.add_argument(
        "--bandwidth",
        type=float,
        default=None,
        metavar="GBITS",
        help="the link every download shares, in Gbit/s (default: 1)",
    )
    estimate_cmd.add_argument(
        "--output",
        default=None,
        metavar="DIR",
        help="the output folder of the build: where the image cache is depends on it "
        "(default: a local folder)",
    )
    args, beam_args = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("arabic-pairs").setLevel(logging.INFO)
    if args.command == "estimate":
        if beam_args:
            parser.error(f"unrecognized arguments: {' '.join(beam_args)}")
        return estimate(
            args.manifest,
            args.workers,
            args.figures,
            args.count_limit,
            args.bandwidth,
            args.output,
        )
    if args.command == "report":
        if beam_args:
            parser.error(f"unrecognized arguments: {' '.join(beam_args)}")
        return report(args.output)
    return run(args.manifest, args.output, beam_args, args.progress)


if __name__ == "__main__":
    sys.exit(main())
