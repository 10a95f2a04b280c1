"""A model folder on a Beam filesystem (gs://, s3://) is copied once to a local cache and loaded
from there; the stand-in filesystem serves a local folder under its own scheme."""

from __future__ import annotations

import os

import pytest
from apache_beam.io.filesystem import FileMetadata, MatchResult
from apache_beam.io.localfilesystem import LocalFileSystem

from pipeline.manifest import TranslationConfig
from translators.ctranslate import (
    MODEL_CACHE_ENV,
    CTranslate2Handler,
    ModelFolderError,
    local_model,
    model_name,
)


class _BucketFileSystem(LocalFileSystem):
    """`modeltestfs://bucket/x` served from the local folder `root`; counts the files opened."""

    PREFIX = "modeltestfs://"
    root = ""
    opened: list[str] = []

    @classmethod
    def scheme(cls):
        return "modeltestfs"

    def _local(self, url: str) -> str:
        return os.path.join(type(self).root, url[len(self.PREFIX) :])

    def match(self, patterns, limits=None):
        results = super().match([self._local(p) for p in patterns], limits)
        return [
            MatchResult(
                pattern,
                [
                    FileMetadata(
                        self.PREFIX + os.path.relpath(m.path, type(self).root), m.size_in_bytes
                    )
                    for m in result.metadata_list
                ],
            )
            for pattern, result in zip(patterns, results, strict=True)
        ]

    def open(self, path, *args, **kwargs):
        type(self).opened.append(path)
        return super().open(self._local(path), *args, **kwargs)


@pytest.fixture
def bucket(opus_model, tmp_path, monkeypatch):
    """The tiny OPUS model at `modeltestfs://models/opus`, and an empty model cache."""
    monkeypatch.setattr(_BucketFileSystem, "root", os.path.dirname(opus_model))
    monkeypatch.setattr(_BucketFileSystem, "opened", [])
    monkeypatch.setenv(MODEL_CACHE_ENV, str(tmp_path / "cache"))
    return f"modeltestfs://{os.path.basename(opus_model)}"


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
    assert len(_BucketFileSystem.opened) == len(files)
    remote.load_model()
    assert model_name(bucket) == model_name(opus_model)
    assert len(_BucketFileSystem.opened) == len(files)


def test_an_empty_remote_folder_is_a_clear_error(bucket):
    with pytest.raises(ModelFolderError, match="no file under this model folder"):
        local_model("modeltestfs://nothing-here")
