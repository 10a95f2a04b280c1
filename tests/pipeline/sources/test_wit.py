"""The WIT reader: the real shard format, language and caption choice, bad rows counted."""

from __future__ import annotations

import gzip
import io

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import given, settings
from hypothesis import strategies as st
from records_of import drops_of, pairs_of
from wit_files import WIT_COLUMNS, wit_bytes, wit_row, write_wit

from pipeline.records import Drop, pair_id
from pipeline.sources.wit import (
    ReadWit,
    WitSource,
    attribution_caption,
    choose_caption,
    language_segments,
    parse_bool,
    parse_wit,
    row_start,
)

SOURCE = WitSource(paths=("unused",))


def parse(data: bytes, source: WitSource = SOURCE, path: str = "shard.tsv") -> list:
    return list(parse_wit(io.BytesIO(data), path, source))


def test_real_dummy_shard_reads_every_row(shared_samples):
    """The real WIT excerpt (quoted multi-line fields) has 2 data rows, fr and nl: none Arabic."""
    data = (shared_samples / "hf_wit_dummy.tsv").read_bytes()
    records = parse(data)
    assert pairs_of(records) == []
    assert drops_of(records) == {"other_language": 2}
    assert sorted(r.detail for r in records) == ["fr", "nl"]


def test_real_dummy_shard_as_arabic_keeps_quoted_fields_whole(shared_samples):
    """Relabel the real rows `ar`: both parse with their exact fields despite quoted newlines."""
    text = (shared_samples / "hf_wit_dummy.tsv").read_text(encoding="utf-8")
    text = text.replace("\nfr\t", "\nar\t").replace("\nnl\t", "\nar\t")
    pairs = pairs_of(parse(text.encode("utf-8")))
    assert [p.caption_ar for p in pairs] == [
        "Daryl Clark, lauréat en 2014.",
        "Perigrapha i-cinctum",
    ]
    assert [p.caption_field for p in pairs] == ["reference", "alt_text"]
    assert [p.is_main_image for p in pairs] == [False, True]
    assert pairs[0].input_line == 2
    assert pairs[1].input_line == 5  # row 1 spans lines 2-4: its quoted fields hold newlines
    assert pairs[1].page_url == "https://nl.wikipedia.org/wiki/Perigrapha_(vlinder)"


def test_keeps_arabic_rows_with_exact_fields_and_stable_id():
    row = wit_row(
        7,
        caption_reference_description="مئذنة جامع  القيروان\u200f الكبير",
        section_title="العمارة",
        is_main_image="true",
    )
    [pair] = parse(wit_bytes([row]))
    assert pair.caption_ar == "مئذنة جامع القيروان الكبير"
    assert pair.caption_origin == "genuine"
    assert pair.caption_field == "reference"
    assert pair.source == "wit" and pair.source_name == "wit"
    assert pair.image_url == row["image_url"]
    assert pair.page_url == row["page_url"]
    assert pair.page_title == "صفحة 7"
    assert pair.section_title == "العمارة"
    assert pair.is_main_image is True
    assert pair.mime_type == "image/jpeg"
    assert pair.source_key == f"{row['page_url']}\t{row['image_url']}"
    assert pair.id == pair_id("wit", pair.source_key, pair.caption_ar)
    assert pair.input_file == "shard.tsv" and pair.input_line == 2


def test_other_languages_are_counted_per_language_not_kept():
    rows = [
        wit_row(1, language="fa", caption_reference_description="گربه روی مبل"),
        wit_row(2, language="ur", caption_reference_description="بلی صوفے پر"),
        wit_row(3, language="ckb", caption_reference_description="پشیلە"),
        wit_row(4, language="arz", caption_reference_description="القطه قاعده على الكنبه"),
        wit_row(5, language="fa", caption_reference_description="یک کتاب"),
        wit_row(6, caption_reference_description="قطة على الأريكة"),
    ]
    records = parse(wit_bytes(rows))
    assert [p.caption_ar for p in pairs_of(records)] == ["قطة على الأريكة"]
    by_language = {r.detail: r.count for r in records if isinstance(r, Drop)}
    assert by_language == {"fa": 2, "ur": 1, "ckb": 1, "arz": 1}
    assert drops_of(records) == {"other_language": 5}


def test_accepted_languages_come_from_the_manifest():
    rows = [
        wit_row(1, language="arz", caption_reference_description="القطه قاعده على الكنبه"),
        wit_row(2, caption_reference_description="قطة على الأريكة"),
    ]
    source = WitSource(paths=("x",), languages=("ar", "arz"))
    pairs = pairs_of(parse(wit_bytes(rows), source))
    assert [p.source_language for p in pairs] == ["arz", "ar"]


def test_gzip_shards_and_fields_beyond_the_csv_limit(tmp_path):
    huge = "سياق " * 40_000  # 200,000 characters: past csv's default 131,072 limit
    rows = [
        wit_row(1, caption_reference_description="صورة أولى", context_page_description=huge),
        wit_row(2, caption_reference_description="صورة ثانية"),
    ]
    path = write_wit(tmp_path / "wit_v1.train.all-00000-of-00010.tsv.gz", rows)
    with beam.io.filesystems.FileSystems.open(str(path)) as stream:
        pairs = pairs_of(parse_wit(stream, str(path), SOURCE))
    assert [p.caption_ar for p in pairs] == ["صورة أولى", "صورة ثانية"]


def test_caption_field_order_and_fallbacks():
    def choose(**fields):
        return choose_caption(wit_row(**fields), ("ar",))

    assert choose(
        caption_reference_description="مرجع",
        caption_attribution_description="وصف",
        caption_alt_text_description="بديل",
    ) == ("مرجع", "reference", "")
    assert choose(caption_attribution_description="وصف الملف") == ("وصف الملف", "attribution", "")
    assert choose(caption_alt_text_description="نص بديل") == ("نص بديل", "alt_text", "")
    # An English reference caption loses to an Arabic alt text.
    assert choose(
        caption_reference_description="Sunset over the Nile",
        caption_alt_text_description="غروب على النيل",
    ) == ("غروب على النيل", "alt_text", "")
    # No Arabic anywhere: the first candidate goes on, for language ID to drop.
    assert choose(caption_reference_description="Sunset over the Nile") == (
        "Sunset over the Nile",
        "reference",
        "",
    )
    assert choose() == ("", "", "empty_caption")
    assert choose(caption_reference_description=" \u200f\u00a0 ") == ("", "", "empty_caption")
    assert choose(caption_attribution_description="IMG_9880.JPG") == ("", "", "filename_caption")
    # A file-name attribution is skipped in favour of the alt text.
    assert choose(
        caption_attribution_description="DSC01234.jpg", caption_alt_text_description="منارة"
    ) == ("منارة", "alt_text", "")


def test_prefixed_attribution_takes_the_arabic_segment():
    text = "English: The Citadel of Aleppo at dusk. العربية: قلعة حلب عند الغسق."
    assert language_segments(text) == {
        "en": "The Citadel of Aleppo at dusk.",
        "ar": "قلعة حلب عند الغسق.",
    }
    assert attribution_caption(text, ("ar",)) == "قلعة حلب عند الغسق."
    # The real multi-language shape of WIT, with no Arabic segment: nothing usable.
    real = "Deutsch: Perigrapha i-cinctum, Auris (Isère), Frankreich English: Perigrapha i-cinctum"
    assert attribution_caption(real, ("ar",)) == ""
    # No prefix: the whole text, for language ID to judge.
    assert language_segments("قلعة حلب") is None
    assert attribution_caption("قلعة حلب", ("ar",)) == "قلعة حلب"
    # A colon inside a sentence is not a prefix.
    assert language_segments("صورة: مسجد") is None


def test_booleans_are_parsed_not_truth_tested():
    assert parse_bool("false") is False
    assert parse_bool("true") is True
    assert parse_bool("TRUE") is True
    assert parse_bool("") is None
    assert parse_bool("maybe") is None


def body(row: dict[str, str]) -> bytes:
    """One row as WIT writes it, without the header or the final newline."""
    return wit_bytes([row]).split(b"\n", 1)[1].rstrip(b"\n")


def test_bad_rows_are_counted_and_the_rest_survive():
    bad_utf8 = body(wit_row(2, caption_reference_description="XX")).replace(b"XX", b"\xff\xfe")
    data = b"\n".join(
        [
            "\t".join(WIT_COLUMNS).encode(),
            body(wit_row(1, caption_reference_description="نخيل في واحة سيوة")),
            b"ar\thttps://ar.wikipedia.org/wiki/X\ttoo few columns",
            bad_utf8,
            body(wit_row(3)),  # all three captions empty
            body(wit_row(4, caption_reference_description="شعار", mime_type="image/svg+xml")),
            body(wit_row(5, caption_reference_description="فيديو", mime_type="video/webm")),
            body(wit_row(6, caption_reference_description="بلا رابط", image_url="")),
        ]
    )
    records = parse(data)
    assert [p.caption_ar for p in pairs_of(records)] == ["نخيل في واحة سيوة"]
    assert drops_of(records) == {
        "wrong_column_count": 1,
        "invalid_utf8": 1,
        "empty_caption": 1,
        "unsupported_mime": 2,
        "no_image_url": 1,
    }
    lines = {r.reason: r.input_line for r in records if isinstance(r, Drop)}
    assert lines["wrong_column_count"] == 4  # the good row spans lines 2-3 (a quoted newline)
    assert lines["no_image_url"] > lines["invalid_utf8"] > lines["wrong_column_count"]


def test_protocol_relative_image_urls_become_https():
    row = wit_row(1, caption_reference_description="قلعة", image_url="//upload.wikimedia.org/a.jpg")
    [pair] = parse(wit_bytes([row]))
    assert pair.image_url == "https://upload.wikimedia.org/a.jpg"


def test_a_file_that_is_not_a_wit_shard_is_an_error_naming_it():
    with pytest.raises(ValueError, match=r"^notwit\.tsv:1: not a WIT shard header"):
        parse(b"caption\turl\nhello\thttp://x\n", path="notwit.tsv")
    assert parse(b"") == []


def test_read_wit_in_a_pipeline_over_a_glob(tmp_path):
    write_wit(
        tmp_path / "a.tsv.gz",
        [
            wit_row(1, caption_reference_description="برج خليفة في دبي"),
            wit_row(2, language="fa", caption_reference_description="برج میلاد"),
        ],
    )
    write_wit(
        tmp_path / "b.tsv",
        [wit_row(3, caption_attribution_description="English: Aswan. العربية: أسوان.")],
    )
    source = WitSource(paths=(str(tmp_path / "*.tsv*"),), name="wit#2")
    with TestPipeline() as p:
        pairs, dropped = p | ReadWit(source)
        assert_that(
            pairs | beam.Map(lambda x: (x.source_name, x.caption_ar, x.caption_field)),
            equal_to(
                [("wit#2", "برج خليفة في دبي", "reference"), ("wit#2", "أسوان.", "attribution")]
            ),
            label="pairs",
        )
        assert_that(
            dropped | beam.Map(lambda d: (d.source_name, d.reason, d.detail, d.count)),
            equal_to([("wit#2", "other_language", "fa", 1)]),
            label="dropped",
        )


def test_an_unexpected_failure_on_one_row_is_counted_and_the_shard_goes_on(monkeypatch):
    import pipeline.sources.wit as wit

    real = wit.choose_caption

    def fragile(row, languages):
        if row["caption_reference_description"] == "سطر معطوب":
            raise KeyError("boom")
        return real(row, languages)

    monkeypatch.setattr(wit, "choose_caption", fragile)
    rows = [
        wit_row(1, caption_reference_description="سطر معطوب"),
        wit_row(2, caption_reference_description="سطر سليم"),
    ]
    records = parse(wit_bytes(rows))
    assert [p.caption_ar for p in pairs_of(records)] == ["سطر سليم"]
    assert [(r.reason, r.input_line) for r in records if isinstance(r, Drop)] == [
        ("wit_row_error", 2)
    ]


# ---------------------------------------------------------------------------- runaway quotes


def shard(captions: list[str], **fields: str) -> bytes:
    """A shard of `ar` rows with these reference captions, written raw: a caption is put in
    as it is, so a lone quote in it is not quoted."""
    rows = [
        wit_row(n, caption_reference_description=f"CAPTION{n}", **fields)
        for n in range(1, len(captions) + 1)
    ]
    data = wit_bytes(rows)
    for n, caption in reversed(list(enumerate(captions, 1))):
        data = data.replace(f"CAPTION{n}".encode(), caption.encode())
    return data


def outcome(records) -> list[tuple]:
    """(line, caption) for each pair and (line, reason) for each drop, in line order."""
    return sorted(
        (r.input_line, r.reason if isinstance(r, Drop) else r.caption_ar) for r in records
    )


def test_a_lone_quote_keeps_its_row_and_swallows_none_after_it():
    """The issue's shard: every row's context holds a quoted newline (two lines a row)."""
    captions = ['"منظر عام لمدينة'] + [f"صورة {n}" for n in range(2, 7)]
    assert outcome(parse(shard(captions))) == [
        (2, '"منظر عام لمدينة'),
        *((2 * n, f"صورة {n}") for n in range(2, 7)),
    ]


def test_two_lone_quotes_in_one_column_are_not_read_as_one_row():
    """The runaway from row 1 closes at row 4's quote and has, by chance, the header's 17
    columns: the whole rows inside it give it away."""
    captions = ['"أول', "صورة 2", "صورة 3", '"رابع', "صورة 5"]
    assert outcome(parse(shard(captions, context_page_description="سياق"))) == [
        (2, '"أول'),
        (3, "صورة 2"),
        (4, "صورة 3"),
        (5, '"رابع'),
        (6, "صورة 5"),
    ]


def test_a_quote_that_never_closes_loses_no_row_to_the_end_of_the_file():
    captions = ["صورة 1", '"لا تغلق', "صورة 3", "صورة 4"]
    assert outcome(parse(shard(captions, context_page_description="سياق"))) == [
        (2, "صورة 1"),
        (3, '"لا تغلق'),
        (4, "صورة 3"),
        (5, "صورة 4"),
    ]


def test_a_quote_mid_field_or_a_well_formed_quoted_field_is_no_runaway():
    captions = ['قال "مرحبا', '"اقتباس ""كامل"""', "صورة 3"]
    assert outcome(parse(shard(captions))) == [
        (2, 'قال "مرحبا'),
        (4, 'اقتباس "كامل"'),
        (6, "صورة 3"),
    ]


def test_a_runaway_on_a_line_that_is_no_row_drops_that_line_alone():
    """No reading of the line gives a row: it is dropped, naming its line, and the lines after
    it are read again (here the next row, which the runaway swallowed)."""
    lines = shard(["صورة 1", "صورة 2"]).split(b"\n")
    broken = 'ar\thttps://ar.wikipedia.org/wiki/X\t"شارع في القاهرة\tصورة'.encode()
    records = parse(b"\n".join([lines[0], broken, *lines[1:]]))
    assert outcome(records) == [(2, "wrong_column_count"), (3, "صورة 1"), (5, "صورة 2")]
    [drop] = [r for r in records if isinstance(r, Drop)]
    assert drop.input_file == "shard.tsv"
    assert drop.detail.startswith("a quoted field ran to line ")


def test_a_runaway_is_cut_at_max_record_lines(monkeypatch):
    """A record read from more lines than MAX_RECORD_LINES is a runaway whatever it holds: the
    reader never holds more lines than that, and still loses no row."""
    import pipeline.sources.wit as wit

    monkeypatch.setattr(wit, "MAX_RECORD_LINES", 3)
    lines = shard([f"صورة {n}" for n in range(1, 6)], context_page_description="سياق").split(b"\n")
    broken = b'no\trow\t"runs on'
    records = parse(b"\n".join([lines[0], broken, *lines[1:]]))
    assert outcome(records) == [
        (2, "wrong_column_count"),
        *((n + 2, f"صورة {n}") for n in range(1, 6)),
    ]
    [drop] = [r for r in records if isinstance(r, Drop)]
    assert drop.detail.startswith("a quoted field ran past 3 lines")


def test_a_long_genuine_quoted_field_stays_one_row():
    """A quoted description of many lines, one of them with tabs, is one row: none of its lines
    looks like the start of a row."""
    context = "\n".join(["فقرة أولى", "عمود\tعمود\tعمود", *(f"فقرة {n}" for n in range(50))])
    captions = ["صورة 1", "صورة 2"]
    records = parse(shard(captions, context_section_description=context))
    assert outcome(records) == [(2, "صورة 1"), (55, "صورة 2")]
    assert pairs_of(records)[0].caption_ar == "صورة 1"


def test_a_carriage_return_in_an_unquoted_field_keeps_its_row():
    """The csv module refuses a CR outside quotes; the field is read literally instead."""
    captions = ["صورة 1", "قلعة\rحلب", "صورة 3"]
    assert outcome(parse(shard(captions))) == [(2, "صورة 1"), (4, "قلعة حلب"), (6, "صورة 3")]


def test_row_start_recognises_a_row_and_nothing_in_a_description():
    looks_like_row = row_start(list(WIT_COLUMNS))
    assert looks_like_row(body(wit_row(1)).decode())
    assert looks_like_row("zh-TW\thttps://zh.wikipedia.org/wiki/X\t//upload.wikimedia.org/a.jpg\n")
    assert not looks_like_row("سطر ثان فيه اقتباس.\tوصف القسم\n")
    assert not looks_like_row("ar\tnot a url\thttps://upload.wikimedia.org/a.jpg")
    assert not looks_like_row("Arabic text\thttps://a\thttps://b")


# How a caption is written into a shard, and the caption read back.
CAPTION_STARTS = {
    "plain": ("صورة {n}", "صورة {n}"),
    "lone quote": ('"صورة {n}', '"صورة {n}'),
    "quote inside": ('x"صورة {n}', 'x"صورة {n}'),
    "quote run": ('"""صورة {n}', '"""صورة {n}'),  # never closes: a runaway, read literally
    "quoted": ('"""صورة {n}"""', '"صورة {n}"'),  # a well-formed quoted field
}


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(sorted(CAPTION_STARTS)), st.booleans()),
        min_size=1,
        max_size=8,
    )
)
def test_every_row_is_read_whatever_quotes_start_the_captions(rows):
    """Any mix of stray quotes in captions and rows with a quoted newline in their context:
    every row is a pair, on its own first line, with its caption as written."""
    written = [
        wit_row(
            n,
            caption_reference_description=f"CAPTION{n}",
            context_page_description="سطر\nسطر" if multiline else "سطر",
        )
        for n, (_, multiline) in enumerate(rows, 1)
    ]
    data = wit_bytes(written)
    expected, line = [], 2
    for n, (kind, multiline) in enumerate(rows, 1):
        raw, read = (text.format(n=n) for text in CAPTION_STARTS[kind])
        data = data.replace(f"CAPTION{n}\t".encode(), raw.encode() + b"\t", 1)
        expected.append((line, read))
        line += 2 if multiline else 1
    assert outcome(parse(data)) == expected


# ---------------------------------------------------------------------------- BOM, truncation


def test_a_byte_order_mark_before_the_header_is_skipped():
    data = b"\xef\xbb\xbf" + wit_bytes([wit_row(1, caption_reference_description="قلعة")])
    [pair] = parse(data)
    assert pair.caption_ar == "قلعة" and pair.input_line == 2
    assert parse(b"\xef\xbb\xbf") == []  # a mark alone is an empty file


def test_a_small_truncated_gz_names_the_file_and_line(tmp_path):
    """Cut before the header is whole: the error names FILE:1 (it named nothing before)."""
    data = gzip.compress(wit_bytes([wit_row(1, caption_reference_description="قلعة")]))
    with pytest.raises(ValueError, match=r"^cut\.tsv\.gz:1: cannot read the shard past this line"):
        parse_wit_gz(data[: len(data) // 2], "cut.tsv.gz")
    with pytest.raises(ValueError, match=r"^cut\.tsv\.gz:1: cannot read the shard past this line"):
        parse_wit_gz(data[:12], "cut.tsv.gz")  # inside the deflate header


def parse_wit_gz(data: bytes, path: str) -> list:
    return list(parse_wit(gzip.GzipFile(fileobj=io.BytesIO(data)), path, SOURCE))


def test_controls_and_bad_bytes_outside_the_caption_never_reach_the_row():
    """A NUL in the caption and bytes that are not UTF-8 in the page title: the row is kept,
    both taken out (a lone surrogate cannot be written to Parquet: the run would die)."""
    row = wit_row(1, caption_reference_description="منظر عام ل\x00مدينة", page_title="TITLE")
    [pair] = parse(wit_bytes([row]).replace(b"TITLE", "حلب".encode() + b"\xff\x1b"))
    assert pair.caption_ar == "منظر عام لمدينة"
    assert pair.page_title == "حلب"
