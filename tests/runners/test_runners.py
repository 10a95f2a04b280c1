"""The demo on every runner: the same rows and the same books as on the local runner.

The demo inputs are built once (the tiny model, the image host and the MediaWiki stand-in on
127.0.0.1, the demo manifest) and `python -m pipeline run` builds them on each runner in this
process. Every runner but the local ones runs its SDK worker with `--environment_type LOOPBACK`:
the worker is this process, so the local servers are reachable and nothing needs Docker.

- the local runner (no `--runner`: the FnApiRunner, see `pipeline.__main__.run`) is the reference;
- the same in multi-processing mode with 2 workers (separate Python processes);
- the PortableRunner with the embedded job service: the Fn API protocol Flink and Dataflow speak;
- Apache Flink through Beam's Flink job server: an embedded Flink (`--flink_master [local]`), and
  a standalone session cluster (a JobManager and a TaskManager) started here from the
  apache-flink distribution;
- Apache Spark through Beam's Spark job server (`--spark_master_url local[2]`).

Flink and Spark need `java`, the job-server jars in `.cache/beam-jars/` and, for the cluster,
the apache-flink venv in `.cache/flink-venv/` (`make test` and `make test-runners` fetch them:
Makefile, `runner-deps`); without them those tests are skipped, not failed. Every test compares
the set of (id, caption_ar, phash) and `stats.json` with the reference, so a runner that drops
output (as Beam's Dask runner drops what `finish_bundle` emits) or counts twice fails here.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from pipeline.__main__ import main
from pipeline.timings import comparable
from standins.demo import WIKI_SAMPLES, DemoImageHost, demo_manifest
from standins.wiki import WikiStandIn

pytestmark = pytest.mark.runners

REPO = Path(__file__).resolve().parents[2]
JARS = Path(os.environ.get("BEAM_JARS", REPO / ".cache" / "beam-jars"))
# The Flink distribution of `make test-runners` (the apache-flink wheel, in a venv of its own).
FLINK_VENV = REPO / ".cache" / "flink-venv"
FLINK_VERSION = "1.19"
# Python fuses the stages itself: the Java fuser of Beam's job servers up to at least 2.62 rejects
# a PCollection that feeds a Flatten while a sibling input is also grouped ("PCollectionNodes …
# were consumed but never produced", apache/beam#34647), which TranslateCaptions does.
PRE_FUSED = "--experiments=pre_optimize=all"
# When a job server's job is done it hangs up on the LOOPBACK worker's data stream, and Beam's
# reader thread ends on the gRPC CANCELLED it gets ("Multiplexer hanging up"), after the results
# are in: that thread's exception is no failure of the run.
HANG_UP = pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")


def build(manifest: Path, out: Path, *flags: str) -> tuple[set[tuple], dict]:
    """Runs the pipeline's command line; returns the rows' (id, caption_ar, phash) and stats."""
    assert main(["run", str(manifest), "--output", str(out), *flags]) == 0
    stats = json.loads((out / "stats.json").read_text(encoding="utf-8"))
    table = pq.read_table(out / "data", columns=["id", "caption_ar", "phash"])
    rows = list(zip(*(table.column(c).to_pylist() for c in table.column_names), strict=True))
    assert len(rows) == len(set(rows)) == stats["kept"]
    return set(rows), stats


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """The demo manifest, its servers running for the whole module."""
    from standins.tiny_model import build_tiny_model

    folder = tmp_path_factory.mktemp("demo")
    model = build_tiny_model(str(folder / "tiny-opus-en-ar"), layout="opus")
    images = DemoImageHost().start()
    wiki = WikiStandIn(WIKI_SAMPLES).start()
    manifest = folder / "demo.yaml"
    raw = demo_manifest(images.port, Path(model), wiki.api_url)
    manifest.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    yield manifest
    wiki.stop()
    images.stop()


@pytest.fixture(scope="module")
def reference(demo, tmp_path_factory) -> tuple[set[tuple], dict]:
    """The local runner's rows and books (the demo test in tests/pipeline checks their values)."""
    rows, stats = build(demo, tmp_path_factory.mktemp("local") / "out")
    assert len(rows) == stats["kept"] > 0 and stats["duplicates_removed"] > 0
    return rows, stats


def job_server_jar(prefix: str) -> Path:
    """The job-server jar `make test-runners` put in .cache/beam-jars, or a skip."""
    if shutil.which("java") is None:
        pytest.skip("no java on PATH: Beam's job servers are Java")
    jars = sorted(JARS.glob(f"{prefix}-job-server-*.jar"))
    if not jars:
        pytest.skip(f"no {prefix}-job-server jar in {JARS}: run `make test-runners`")
    return jars[-1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def flink_cluster(tmp_path_factory):
    """A standalone Flink session cluster (a JobManager and a TaskManager) from the apache-flink
    distribution in `.cache/flink-venv`, on a free REST port; yields `localhost:PORT`."""
    if shutil.which("java") is None:
        pytest.skip("no java on PATH: Flink is Java")
    homes = sorted(FLINK_VENV.glob("lib/python3*/site-packages/pyflink"))
    if not homes or not (homes[0] / "bin" / "start-cluster.sh").is_file():
        pytest.skip(f"no Flink distribution in {FLINK_VENV}: run `make test-runners`")
    home = homes[0]
    work = tmp_path_factory.mktemp("flink")
    conf = work / "conf"
    shutil.copytree(home / "conf", conf)
    port = free_port()
    config = conf / "config.yaml"
    settings = yaml.safe_load(config.read_text(encoding="utf-8"))
    settings["rest"].update(port=port, **{"bind-port": port})
    settings["jobmanager"]["rpc"]["port"] = free_port()
    # Two slots, so the job runs at parallelism 2; the fused demo has more exchanges than the
    # default 128 MB of network buffers serve at that parallelism.
    settings["parallelism"]["default"] = 2
    taskmanager = settings["taskmanager"]
    taskmanager["numberOfTaskSlots"] = 2
    taskmanager["memory"] = {
        "process": {"size": "2048m"},
        "network": {"min": "256m", "max": "256m"},
    }
    config.write_text(yaml.safe_dump(settings), encoding="utf-8")
    (work / "log").mkdir()
    env = dict(
        os.environ,
        FLINK_HOME=str(home),
        FLINK_CONF_DIR=str(conf),
        FLINK_LOG_DIR=str(work / "log"),
        FLINK_PID_DIR=str(work),
    )
    try:
        subprocess.run([home / "bin" / "start-cluster.sh"], env=env, check=True, timeout=120)
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://localhost:{port}/overview", timeout=5) as r:
                    if json.load(r)["taskmanagers"] >= 1:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the Flink cluster did not come up in 2 minutes"
            time.sleep(1)
        yield f"localhost:{port}"
    finally:
        subprocess.run([home / "bin" / "stop-cluster.sh"], env=env, check=False, timeout=120)


def check_same(demo: Path, out: Path, reference: tuple[set[tuple], dict], *flags: str) -> None:
    rows, stats = build(demo, out, *flags)
    assert comparable(stats) == comparable(reference[1])
    assert rows == reference[0]


LOCAL_RUNNERS = {
    "multi_processing": ["--direct_num_workers", "2", "--direct_running_mode", "multi_processing"],
    "portable_embedded": [
        "--runner",
        "PortableRunner",
        "--job_endpoint",
        "embed",
        "--environment_type",
        "LOOPBACK",
    ],
}


@pytest.mark.parametrize("name", list(LOCAL_RUNNERS))
def test_local_runners_give_the_same_rows(demo, reference, tmp_path, name):
    check_same(demo, tmp_path / "out", reference, *LOCAL_RUNNERS[name])


def flink_flags(master: str) -> list[str]:
    """The FlinkRunner's flags for `master` (`[local]` or a session cluster's address)."""
    jar = job_server_jar(f"beam-runners-flink-{FLINK_VERSION}")
    return [
        "--runner=FlinkRunner",
        f"--flink_job_server_jar={jar}",
        f"--flink_version={FLINK_VERSION}",
        f"--flink_master={master}",
        "--environment_type=LOOPBACK",
        PRE_FUSED,
    ]


@HANG_UP
def test_flink_embedded_gives_the_same_rows(demo, reference, tmp_path):
    check_same(demo, tmp_path / "out", reference, *flink_flags("[local]"))


@HANG_UP
def test_flink_session_cluster_gives_the_same_rows(demo, reference, tmp_path, flink_cluster):
    check_same(demo, tmp_path / "out", reference, *flink_flags(flink_cluster))


@HANG_UP
def test_spark_gives_the_same_rows(demo, reference, tmp_path):
    jar = job_server_jar("beam-runners-spark-3")
    check_same(
        demo,
        tmp_path / "out",
        reference,
        "--runner=SparkRunner",
        f"--spark_job_server_jar={jar}",
        "--spark_master_url=local[2]",
        "--environment_type=LOOPBACK",
        PRE_FUSED,
    )
