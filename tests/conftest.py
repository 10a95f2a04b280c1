"""Shared fixtures."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_SAMPLES = REPO.parent / "shared" / "samples"

# Before anything imports `datasets`: a cache of this session's own, and no hub look-ups.
os.environ.setdefault("HF_DATASETS_CACHE", tempfile.mkdtemp(prefix="hf-datasets-"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture
def shared_samples() -> Path:
    """The real source excerpts in ../shared/samples (CI clones the repo beside ../shared)."""
    if not SHARED_SAMPLES.is_dir():
        pytest.skip("../shared/samples is not beside the checkout")
    return SHARED_SAMPLES
