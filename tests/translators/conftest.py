"""The tiny CTranslate2 models, built once per session, and a runner for TranslateCaptions."""

from __future__ import annotations

import pickle
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline

from pipeline.config import TranslationConfig
from standins.tiny_model import build_tiny_model
from translators.stage import TranslateCaptions


@pytest.fixture(scope="session")
def opus_model(tmp_path_factory) -> str:
    return build_tiny_model(str(tmp_path_factory.mktemp("models") / "opus"), layout="opus")


@pytest.fixture(scope="session")
def nllb_model(tmp_path_factory) -> str:
    return build_tiny_model(str(tmp_path_factory.mktemp("models") / "nllb"), layout="nllb")


def _dump(items, path):
    with open(path, "wb") as f:
        pickle.dump(sorted(items, key=repr), f)


class StageRun:
    """What one TranslateCaptions run gave: kept pairs and drops (sorted), and its counters."""

    def __init__(self, kept, dropped, counters):
        self.kept = kept
        self.dropped = dropped
        self.counters = counters


@pytest.fixture
def run_stage(tmp_path):
    """Run TranslateCaptions on `pairs` for real and collect its outputs and counters."""

    def run(pairs, config: TranslationConfig, output_dir: str) -> StageRun:
        kept_path, dropped_path = tmp_path / "kept.pkl", tmp_path / "dropped.pkl"
        p = TestPipeline()
        kept, dropped = p | beam.Create(pairs) | TranslateCaptions(config, output_dir)
        kept | "AllKept" >> beam.combiners.ToList() | "DumpKept" >> beam.Map(_dump, kept_path)
        (
            dropped
            | "AllDropped" >> beam.combiners.ToList()
            | "DumpDropped" >> beam.Map(_dump, dropped_path)
        )
        result = p.run()
        result.wait_until_finish()
        query = result.metrics().query(MetricsFilter().with_namespace("translate"))
        counters: dict[str, int] = {}
        for counter in query["counters"]:
            name = counter.key.metric.name
            counters[name] = counters.get(name, 0) + counter.committed
        return StageRun(
            pickle.loads(Path(kept_path).read_bytes()),
            pickle.loads(Path(dropped_path).read_bytes()),
            counters,
        )

    return run
