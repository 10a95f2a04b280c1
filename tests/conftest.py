"""Shared fixtures."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_SAMPLES = REPO.parent / "shared" / "samples"

# Before anything imports `datasets`: a cache of this session's own, and no hub look-ups.
os.environ.setdefault("HF_DATASETS_CACHE", tempfile.mkdtemp(prefix="hf-datasets-"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module", autouse=True)
def module_cache_home(tmp_path_factory) -> Iterator[Path]:
    """The XDG_CACHE_HOME of what a module-scoped fixture builds (set up before any test's own
    `cache_home`): no build of the tests writes to the real ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        home = tmp_path_factory.mktemp("module-cache-home")
        patch.setenv("XDG_CACHE_HOME", str(home))
        yield home


@pytest.fixture(autouse=True)
def cache_home(tmp_path_factory, monkeypatch) -> Path:
    """Every test's own XDG_CACHE_HOME, where `images.cache: auto` keeps the image cache: no test
    writes to the real ~/.cache or finds images another test cached. Set in os.environ, so the
    CLI runs in subprocesses and Beam's worker processes inherit it."""
    home = tmp_path_factory.mktemp("cache-home")
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    return home


@pytest.fixture
def shared_samples() -> Path:
    """The real source excerpts in ../shared/samples (CI clones the repo beside ../shared)."""
    if not SHARED_SAMPLES.is_dir():
        pytest.skip("../shared/samples is not beside the checkout")
    return SHARED_SAMPLES


@pytest.fixture(scope="session")
def siglip_model(tmp_path_factory) -> str:
    """A tiny random CLIP folder of the SigLIP flavour (standins.tiny_clip), built once."""
    from standins.tiny_clip import build_clip

    return build_clip(str(tmp_path_factory.mktemp("clip") / "siglip"), "siglip")


@pytest.fixture(scope="session")
def xlmr_model(tmp_path_factory) -> str:
    """A tiny random CLIP folder of the XLM-R flavour (open_clip's), built once."""
    from standins.tiny_clip import build_clip

    return build_clip(str(tmp_path_factory.mktemp("clip") / "xlmr"), "xlmr")


@pytest.fixture(params=["siglip", "xlmr"])
def clip_model(request) -> str:
    """Each flavour's tiny CLIP folder in turn."""
    return request.getfixturevalue(f"{request.param}_model")
