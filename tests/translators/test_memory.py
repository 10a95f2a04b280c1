"""The translation memory: Parquet, TSV and folders read; translations written and read back."""

from __future__ import annotations

import gzip

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from translators.ctranslate import Translation
from translators.memory import (
    ReadMemory,
    WriteTranslations,
    memory_files,
    read_memory_file,
    read_parquet,
)

TSV = (
    "en\tar\tscore\n"
    "A cat  on a sofa. \tقطة على أريكة.\t-0.25\n"  # en normalised: one space, no outer space
    "A dog.\tكلب.\t\n"  # an empty score is no score
    "only two\tfields\n"
    "A bird.\t\t-0.1\n"
    "A horse.\tحصان.\tabout -1\n"
    "A boat.\tقارب.\tnan\n"
    "\n"  # blank lines are not entries
    "A tree.\tشجرة.\t-0.5\r\n"  # CRLF
)


def read(path):
    bad = []
    entries = list(read_memory_file(str(path), lambda where, why: bad.append((where, why))))
    return entries, bad


def test_tsv_entries_and_malformed_lines(tmp_path):
    path = tmp_path / "memory.tsv"
    path.write_bytes(TSV.encode("utf-8") + b"A fish.\t\xff\xfe\t-1\n")
    entries, bad = read(path)
    assert entries == [
        ("A cat on a sofa.", ("قطة على أريكة.", -0.25)),
        ("A dog.", ("كلب.", None)),
        ("A tree.", ("شجرة.", -0.5)),
    ]
    assert [(where.rsplit(":", 1)[1], why) for where, why in bad] == [
        ("4", "expected 3 tab-separated fields, got 2"),
        ("5", "empty en or ar"),
        ("6", "could not convert string to float: 'about -1'"),
        ("7", "score 'nan' is not a finite number"),
        ("10", "not UTF-8 (invalid start byte)"),
    ]
    assert all(where.startswith(f"{path}:") for where, _ in bad)


def test_tsv_without_score_and_with_other_columns(tmp_path):
    path = tmp_path / "memory.tsv"
    path.write_text("\ufeffsource\tar\ten\nwit\tقطة.\tA cat.\n", encoding="utf-8")
    assert read(path) == ([("A cat.", ("قطة.", None))], [])
    path.write_text("", encoding="utf-8")
    assert read(path) == ([], [])


def test_tsv_header_without_en_and_ar_fails_naming_the_file(tmp_path):
    path = tmp_path / "memory.tsv"
    path.write_text("english\tarabic\nA cat.\tقطة.\n", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"{path}:1: a memory TSV's header must name"):
        read(path)


def test_parquet_entries_with_and_without_scores(tmp_path):
    scored = tmp_path / "scored.parquet"
    pq.write_table(
        pa.table(
            {
                "en": [" A cat. ", "A dog.", None, "A bird."],
                "ar": ["قطة.", "كلب.", "لا شيء", ""],
                "score": [-0.5, None, -1.0, -1.0],
            }
        ),
        scored,
    )
    entries, bad = read(scored)
    assert entries == [("A cat.", ("قطة.", -0.5)), ("A dog.", ("كلب.", None))]
    assert bad == [(f"{scored}:3", "empty en or ar"), (f"{scored}:4", "empty en or ar")]
    unscored = tmp_path / "unscored.parquet"
    pq.write_table(pa.table({"en": ["A cat."], "ar": ["قطة."]}), unscored)
    assert read(unscored) == ([("A cat.", ("قطة.", None))], [])
    wrong = tmp_path / "wrong.parquet"
    pq.write_table(pa.table({"english": ["A cat."]}), wrong)
    with pytest.raises(ValueError, match="needs columns en and ar"):
        list(read_parquet(str(wrong), print))


def test_memory_files_of_a_file_a_folder_and_a_glob(tmp_path):
    (tmp_path / "a.tsv").write_text("en\tar\n", encoding="utf-8")
    (tmp_path / "b.parquet").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not a memory", encoding="utf-8")
    (tmp_path / ".b.parquet.tmp").write_bytes(b"")
    assert memory_files(str(tmp_path)) == [str(tmp_path / "a.tsv"), str(tmp_path / "b.parquet")]
    assert memory_files(str(tmp_path / "*.tsv")) == [str(tmp_path / "a.tsv")]
    assert memory_files(str(tmp_path / "a.tsv")) == [str(tmp_path / "a.tsv")]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert memory_files(str(empty)) == []
    with pytest.raises(FileNotFoundError, match="missing.tsv"):
        memory_files(str(tmp_path / "missing.tsv"))


def test_read_memory_reads_a_folder_of_both_formats(tmp_path):
    (tmp_path / "human.tsv").write_text("en\tar\nA cat.\tقطة.\nbroken line\n", encoding="utf-8")
    pq.write_table(
        pa.table({"en": ["A dog."], "ar": ["كلب."], "score": [-0.5]}), tmp_path / "run.parquet"
    )
    with TestPipeline() as p:
        entries = p | ReadMemory(str(tmp_path))
        assert_that(entries, equal_to([("A cat.", ("قطة.", None)), ("A dog.", ("كلب.", -0.5))]))


def write(output_dir, translations):
    with TestPipeline() as p:
        written = p | beam.Create(translations) | WriteTranslations(str(output_dir))
        assert_that(
            written | beam.Map(lambda name_rows: name_rows[1]),
            equal_to([len(translations)]),
        )


def test_written_translations_read_back_as_a_memory(tmp_path):
    translations = [
        ("A dog.", Translation("كلب.", -0.123456789012, False)),
        ("A cat.", Translation("قطة.", -0.5, True)),
    ]
    write(tmp_path, translations)
    [path] = memory_files(str(tmp_path / "translations"))
    assert path.endswith("-00000-of-00001.parquet")
    table = pq.read_table(path)
    assert table.column_names == ["en", "ar", "score", "truncated"]
    assert table.column("en").to_pylist() == ["A cat.", "A dog."]  # sorted by en
    assert table.column("truncated").to_pylist() == [True, False]
    assert read(path) == (
        [("A cat.", ("قطة.", -0.5)), ("A dog.", ("كلب.", -0.123456789012))],  # scores exact
        [],
    )


def test_each_set_of_translations_has_its_own_files(tmp_path):
    first = [("A cat.", Translation("قطة.", -0.5, False))]
    second = [("A dog.", Translation("كلب.", -0.5, False))]
    write(tmp_path, first)
    write(tmp_path, second)  # a later run into the same folder keeps the earlier translations
    write(tmp_path, first)  # the same set again: the same file, rewritten
    write(tmp_path, [])  # nothing translated: the empty set's one empty shard
    files = memory_files(str(tmp_path / "translations"))
    assert len(files) == 3
    rows = sorted(en for path in files for en, _ in read(path)[0])
    assert rows == ["A cat.", "A dog."]


def test_tsv_gz_with_a_byte_order_mark_and_a_truncated_one(tmp_path):
    path = tmp_path / "memory.tsv.gz"
    lines = "".join(f"A cat number {i:x}.\tقطة رقم {i}.\n" for i in range(0, 200_000, 7))
    data = gzip.compress(b"\xef\xbb\xbf" + f"en\tar\n{lines}".encode())
    path.write_bytes(data)
    entries, bad = read(path)
    assert (len(entries), bad) == (len(range(0, 200_000, 7)), [])
    assert entries[0] == ("A cat number 0.", ("قطة رقم 0.", None))
    # Cut short: the run stops naming the file and line, not half a memory used quietly.
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=rf"^{path}:\d+: cannot read the file past this line"):
        read(path)
