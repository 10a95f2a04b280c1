"""`pipeline.folders.building`: a folder is built whole beside its place, or not at all."""

from __future__ import annotations

import pytest

from pipeline.folders import building


def test_a_finished_build_replaces_the_folder(tmp_path):
    target = tmp_path / "models" / "m"
    target.mkdir(parents=True)
    (target / "old.bin").write_text("old", encoding="utf-8")
    with building(target, ".m-") as tmp:
        assert tmp.startswith(str(tmp_path / "models" / ".m-"))  # beside it: a rename
        (tmp_path / "models" / tmp.rsplit("/", 1)[1] / "model.bin").write_text("new", "utf-8")
    assert sorted(p.name for p in target.iterdir()) == ["model.bin"]
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["m"]


def test_an_interrupted_build_leaves_the_folder_as_it_was(tmp_path):
    target = tmp_path / "m"
    target.mkdir()
    (target / "model.bin").write_text("old", encoding="utf-8")
    with pytest.raises(KeyboardInterrupt), building(target, ".m-") as tmp:
        (tmp_path / tmp.rsplit("/", 1)[1] / "model.bin").write_text("half", "utf-8")
        raise KeyboardInterrupt
    assert (target / "model.bin").read_text(encoding="utf-8") == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    with pytest.raises(ValueError), building(tmp_path / "new", ".n-"):
        raise ValueError("the build failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
