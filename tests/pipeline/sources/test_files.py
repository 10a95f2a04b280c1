"""What every file reader shares: lines, a byte-order mark skipped, read errors naming the file."""

from __future__ import annotations

import gzip
import io

import pytest
from apache_beam.testing.test_pipeline import TestPipeline

from pipeline.records import Drop
from pipeline.sources.files import ReadFiles, numbered_lines, physical_lines, read_all

BOM = b"\xef\xbb\xbf"


def test_physical_lines_keep_their_ends_and_skip_a_leading_mark_only():
    data = BOM + b"one\r\ntwo\n" + BOM + b"three\rstill three\nlast"
    assert list(physical_lines(io.BytesIO(data), "f")) == [
        (1, b"one\r\n"),
        (2, b"two\n"),
        (3, BOM + b"three\rstill three\n"),  # a mark inside the file is text
        (4, b"last"),
    ]
    assert list(numbered_lines(io.BytesIO(data), "f")) == [
        (1, b"one"),
        (2, b"two"),
        (3, BOM + b"three\rstill three"),
        (4, b"last"),
    ]
    assert list(physical_lines(io.BytesIO(BOM), "f")) == []
    assert list(physical_lines(io.BytesIO(BOM + b"\n"), "f")) == [(1, b"\n")]


def test_read_all_skips_a_leading_mark():
    assert read_all(io.BytesIO(BOM + b'{"a": 1}'), "f") == b'{"a": 1}'
    assert read_all(io.BytesIO(b'{"a": 1}' + BOM), "f") == b'{"a": 1}' + BOM


def lines_before_failure(data: bytes) -> tuple[int, str]:
    """(lines read, the error) of a `.gz` cut short."""
    read = []
    with pytest.raises(ValueError) as failure:
        read.extend(numbered_lines(gzip.GzipFile(fileobj=io.BytesIO(data)), "cut.gz"))
    return len(read), str(failure.value)


@pytest.mark.parametrize("cut", [10, 30, 0.5])
def test_a_truncated_gz_fails_naming_the_line_after_the_last_one_read(cut):
    """Every line before the cut is read (and so counted) and the error names the next one,
    whether the file was cut in its header, in its first block or far in."""
    text = b"".join(b"caption %x of a large file\n" % (i * i) for i in range(100_000))
    data = gzip.compress(text)
    read, error = lines_before_failure(data[: int(len(data) * cut) if cut < 1 else cut])
    assert error.startswith(f"cut.gz:{read + 1}: cannot read the file past this line (")
    if cut == 0.5:
        assert read > 30_000  # the lines before the cut, not only those of whole buffers


def test_read_all_names_a_truncated_file():
    data = gzip.compress(b"x" * 1000)
    with pytest.raises(ValueError, match=r"^cut\.json\.gz: cannot read the file to its end"):
        read_all(gzip.GzipFile(fileobj=io.BytesIO(data[:15])), "cut.json.gz")


def _parse_letting_a_read_error_through(stream, path, source):
    """A reader that reads a line and then meets a read error it does not handle."""
    stream.read(1)
    yield Drop("test", "counted", path, 1)
    raise EOFError("Compressed file ended before the end-of-stream marker was reached")


def test_read_files_names_the_file_of_a_read_error_a_reader_lets_through(tmp_path):
    path = tmp_path / "input.txt"
    path.write_bytes(b"line\n")
    with (
        pytest.raises(Exception, match=rf"{path}: EOFError: Compressed file ended"),
        TestPipeline() as p,
    ):
        _ = p | ReadFiles([str(path)], _parse_letting_a_read_error_through, None)
