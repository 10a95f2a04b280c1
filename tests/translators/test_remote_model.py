"""A model folder on a Beam filesystem (gs://, s3://) is copied once to a local cache and loaded
from there; `tests/url_filesystem.py` serves a local folder under its own scheme."""

from __future__ import annotations

import os

import pytest
from url_filesystem import UrlFileSystem

from pipeline.config import TranslationConfig
from translators.ctranslate import (
    MODEL_CACHE_ENV,
    CTranslate2Handler,
    ModelFolderError,
    local_model,
    model_name,
)


@pytest.fixture
def bucket(opus_model, tmp_path, monkeypatch):
    """The tiny OPUS model at `urltestfs://models/opus`, and an empty model cache."""
    monkeypatch.setattr(UrlFileSystem, "root", os.path.dirname(opus_model))
    monkeypatch.setattr(UrlFileSystem, "opened", [])
    monkeypatch.setenv(MODEL_CACHE_ENV, str(tmp_path / "cache"))
    return f"urltestfs://{os.path.basename(opus_model)}"


def test_a_remote_model_is_copied_once_and_translates_as_the_local_one(opus_model, bucket):
    captions = ["A man riding a bicycle down a city street.", "A cat."]
    local = CTranslate2Handler(TranslationConfig(model=opus_model, intra_threads=1))
    remote = CTranslate2Handler(TranslationConfig(model=bucket, intra_threads=1))
    expected = local.run_inference(captions, local.load_model())
    assert remote.run_inference(captions, remote.load_model()) == expected
    files = sorted(os.listdir(opus_model))
    copied = local_model(bucket)
    assert sorted(os.listdir(copied)) == files
    assert copied.startswith(os.environ[MODEL_CACHE_ENV])
    # Each file was read once; loading again and naming the model read nothing more.
    assert len(UrlFileSystem.opened) == len(files)
    remote.load_model()
    assert model_name(bucket) == model_name(opus_model)
    assert len(UrlFileSystem.opened) == len(files)


def test_an_empty_remote_folder_is_a_clear_error(bucket):
    with pytest.raises(ModelFolderError, match="no file under this model folder"):
        local_model("urltestfs://nothing-here")
