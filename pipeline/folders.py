"""A folder built whole or not at all: the model folders of `make model`, `make clip-model`, the
tiny models of the tests and the benchmarks' models. Nothing here imports Beam, so the
benchmarks' parts that run without the pipeline's dependencies can use it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator


@contextlib.contextmanager
def building(target: str | os.PathLike, prefix: str) -> Iterator[str]:
    """A new empty folder beside `target` (same filesystem; its name starts with `prefix`) to
    build in. When the block ends without an error the folder replaces `target` (an existing
    `target` is removed first); when it raises, the folder is removed and `target` is left as
    it was. An interrupted build never leaves half a folder where a Makefile rule or a
    benchmark (which check only that the folder or one file exists) would take it as done."""
    parent = os.path.dirname(os.path.abspath(target))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=prefix, dir=parent)
    try:
        yield tmp
        if os.path.isdir(target):
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp)
