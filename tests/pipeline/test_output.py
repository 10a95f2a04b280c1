"""What is checked before a run does any work, through the CLI: the output folder (never a
folder of someone else's; no file a run did not write is deleted or overwritten), the model
folder, Beam's options, empty inputs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from url_filesystem import UrlFileSystem
from wit_files import wit_row, write_wit

from pipeline.__main__ import main
from pipeline.output import is_our_card, output_problem

ROWS = [wit_row(n, caption_reference_description=f"صورة رقم {n} لمدينة القاهرة") for n in range(5)]


@pytest.fixture
def manifest(tmp_path) -> Path:
    write_wit(tmp_path / "in" / "wit.tsv", ROWS)
    path = tmp_path / "in" / "manifest.yaml"
    path.write_text(
        "sources:\n  - kind: wit\n    paths: [wit.tsv]\nimages: {fetch: false}\n", encoding="utf-8"
    )
    return path


def run(capsys, manifest: Path, out: str, *args: str) -> tuple[int, list[str]]:
    code = main(["run", str(manifest), "--output", out, *args])
    return code, capsys.readouterr().err.splitlines()


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def users_folder(folder: Path) -> Path:
    (folder / "data").mkdir(parents=True)
    (folder / "README.md").write_text("# My notes\n", encoding="utf-8")
    (folder / "stats.json").write_text('{"mine": 1}', encoding="utf-8")
    (folder / "data" / "train-mine.parquet").write_bytes(b"PAR1 mine PAR1")
    (folder / "data" / "notes.txt").write_text("keep me", encoding="utf-8")
    return folder


def test_a_folder_of_someone_elses_is_refused_before_any_work(manifest, tmp_path, capsys):
    out = users_folder(tmp_path / "mine")
    before = snapshot(out)
    code, err = run(capsys, manifest, str(out))
    assert code == 2
    assert len(err) == 1 and err[0].startswith(f"error: --output {out}: the folder is not empty")
    assert "README.md" in err[0] and "data/train-mine.parquet" in err[0]
    assert snapshot(out) == before
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "data", "stats.json"]


def test_an_output_that_is_a_file_is_refused_before_any_work(manifest, tmp_path, capsys):
    out = tmp_path / "out.parquet"
    out.write_bytes(b"not a folder")
    code, err = run(capsys, manifest, str(out))
    assert (code, err) == (2, [f"error: --output {out}: is a file, not a folder"])
    assert out.read_bytes() == b"not a folder"


def test_an_output_under_a_file_cannot_be_created(manifest, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x", encoding="utf-8")
    code, err = run(capsys, manifest, str(blocker / "out"))
    assert code == 2 and len(err) == 1 and "cannot be created" in err[0]


def test_a_rerun_keeps_the_files_it_did_not_write(manifest, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(capsys, manifest, str(out))[0] == 0
    ours = sorted(p.name for p in (out / "data").iterdir())
    (out / "data" / "train-mine.parquet").write_bytes(b"PAR1 mine PAR1")
    (out / "data" / "notes.txt").write_text("keep me", encoding="utf-8")
    (out / "mine.txt").write_text("mine too", encoding="utf-8")
    # Fewer rows a shard: the earlier shards are replaced by a different set.
    manifest.write_text(
        manifest.read_text(encoding="utf-8") + "output: {rows_per_shard: 2}\n", encoding="utf-8"
    )
    assert run(capsys, manifest, str(out))[0] == 0
    names = sorted(p.name for p in (out / "data").iterdir())
    assert "train-mine.parquet" in names and "notes.txt" in names
    assert not set(ours) & set(names)  # the earlier run's own shards are gone
    assert (out / "data" / "train-mine.parquet").read_bytes() == b"PAR1 mine PAR1"
    assert (out / "data" / "notes.txt").read_text(encoding="utf-8") == "keep me"
    assert (out / "mine.txt").read_text(encoding="utf-8") == "mine too"
    assert json.loads((out / "stats.json").read_text(encoding="utf-8"))["kept"] == 5


def test_what_a_killed_first_run_left_is_ours(manifest, tmp_path, capsys):
    out = tmp_path / "out"
    (out / ".incoming-0123456789ab" / "data").mkdir(parents=True)
    (out / "translations").mkdir()
    # The image cache an earlier version kept in the output folder (DIR/cache/images).
    (out / "cache" / "images" / "0123" / "packs").mkdir(parents=True)
    (out / "cache" / "images" / "0123" / "packs" / "abc.pack").write_bytes(b"APK1 an image")
    (out / "data").mkdir()
    (out / "data" / "train-00000-of-00001.parquet").write_bytes(b"half")
    assert output_problem(str(out)) is None
    assert run(capsys, manifest, str(out))[0] == 0
    # Left as it was: a run never deletes what it did not write.
    assert snapshot(out / "cache") == {
        "images/0123/packs/abc.pack": hashlib.sha256(b"APK1 an image").hexdigest()
    }


def test_a_folder_on_an_object_store_is_checked_too(manifest, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(UrlFileSystem, "root", str(tmp_path / "bucket"))
    theirs = users_folder(tmp_path / "bucket" / "theirs")
    code, err = run(capsys, manifest, "urltestfs://theirs")
    assert code == 2 and "is not an arabic-pairs output" in err[0]
    assert (theirs / "README.md").read_text(encoding="utf-8") == "# My notes\n"
    assert run(capsys, manifest, "urltestfs://new")[0] == 0
    assert is_our_card((tmp_path / "bucket" / "new" / "README.md").read_text(encoding="utf-8"))
    assert output_problem("urltestfs://new") is None


def test_options_beam_does_not_know_are_refused(manifest, tmp_path, capsys):
    code, err = run(capsys, manifest, str(tmp_path / "out"), "--runer", "DirectRunner")
    assert (code, err) == (2, ["error: unknown option --runer (did you mean --runner?)"])
    assert not (tmp_path / "out").exists()
    code, err = run(capsys, manifest, str(tmp_path / "out"), "--direct_num_workers=1")
    assert code == 0


def test_a_model_folder_that_is_no_model_is_refused_before_any_work(manifest, tmp_path, capsys):
    empty = tmp_path / "model"
    empty.mkdir()
    manifest.write_text(
        manifest.read_text(encoding="utf-8") + f"translation: {{model: {empty}}}\n",
        encoding="utf-8",
    )
    code, err = run(capsys, manifest, str(tmp_path / "out"))
    assert code == 2 and len(err) == 1
    assert err[0].startswith("error: translation.model: ") and "no model.bin" in err[0]
    assert not (tmp_path / "out").exists()


def test_an_empty_input_file_is_named_on_stderr(manifest, tmp_path, capsys):
    (tmp_path / "in" / "empty.tsv").write_bytes(b"")
    manifest.write_text(
        manifest.read_text(encoding="utf-8").replace("[wit.tsv]", "[wit.tsv, empty.tsv]"),
        encoding="utf-8",
    )
    code, err = run(capsys, manifest, str(tmp_path / "out"))
    assert code == 0
    empty = tmp_path / "in" / "empty.tsv"
    assert f"warning: sources[0].paths: {empty} is empty: it adds no record" in err
