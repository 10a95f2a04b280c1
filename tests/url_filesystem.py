"""A Beam filesystem for tests that stands in for gs:// or s3://: `urltestfs://a/b` is the local
file `root/a/b`. Beam finds it by its scheme once this module is imported; a test points `root`
at its own folder with `monkeypatch.setattr(UrlFileSystem, "root", ...)`. `opened` lists the
URLs opened for reading (a test that counts reads sets it to a fresh list)."""

from __future__ import annotations

import os
import shutil

from apache_beam.io.filesystem import FileMetadata, MatchResult
from apache_beam.io.localfilesystem import LocalFileSystem


class UrlFileSystem(LocalFileSystem):
    PREFIX = "urltestfs://"
    root = ""
    opened: list[str] = []

    @classmethod
    def scheme(cls):
        return "urltestfs"

    def _local(self, url: str) -> str:
        # LocalFileSystem calls its own methods with local paths (`match` calls `exists`).
        if not url.startswith(self.PREFIX):
            return url
        return os.path.join(type(self).root, url[len(self.PREFIX) :])

    def match(self, patterns, limits=None):
        results = super().match([self._local(p) for p in patterns], limits)
        return [
            MatchResult(
                pattern,
                [
                    FileMetadata(
                        self.PREFIX + os.path.relpath(meta.path, type(self).root),
                        meta.size_in_bytes,
                    )
                    for meta in result.metadata_list
                ],
            )
            for pattern, result in zip(patterns, results, strict=True)
        ]

    def open(self, path, *args, **kwargs):
        type(self).opened.append(path)
        return super().open(self._local(path), *args, **kwargs)

    def create(self, path, *args, **kwargs):
        return super().create(self._local(path), *args, **kwargs)

    def exists(self, path):
        return super().exists(self._local(path))

    def delete(self, paths):
        # Not LocalFileSystem.delete: it expands `paths` through `match`, which answers URLs.
        for path in paths:
            local = self._local(path)
            if os.path.isdir(local):
                shutil.rmtree(local)
            else:
                os.remove(local)

    def rename(self, sources, destinations):
        # An object store has no folders: a name can be moved anywhere.
        for path in destinations:
            os.makedirs(os.path.dirname(self._local(path)), exist_ok=True)
        return super().rename(
            [self._local(p) for p in sources], [self._local(p) for p in destinations]
        )
