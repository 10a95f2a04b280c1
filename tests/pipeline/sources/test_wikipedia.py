"""The Wikipedia source: a crawl of a local MediaWiki stand-in and Enterprise dumps built here,
through the same extractor, with every (page, image) candidate accounted for."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import time

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from records_of import drops_of, pairs_of

from pipeline.records import GENUINE, pair_id
from pipeline.sources import wikipedia
from pipeline.sources.wikipedia import ReadWikipedia, WikipediaSource, crawl, parse_dump
from standins.wiki import WikiStandIn, maxlag_fault, status_fault

AGENT = "arabic-pairs-tests/0.1 (https://example.org/arabic-pairs; tests@example.org)"
UPLOAD = "//upload.wikimedia.org/wikipedia/commons/thumb"


def figure(name: str, caption: str, width: int = 250, path: str = "a/ab") -> str:
    """A current-Parsoid thumb of the Commons file `name` with `caption`."""
    under = name.replace(" ", "_")
    return (
        f'<figure class="mw-default-size" typeof="mw:File/Thumb">'
        f'<a href="./ملف:{under}" class="mw-file-description">'
        f'<img resource="./ملف:{under}" src="{UPLOAD}/{path}/{under}/{width}px-{under}" '
        f'width="{width}" height="180" class="mw-file-element"/></a>'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def document(body: str) -> str:
    return (
        '<!DOCTYPE html><html><head><base href="//ar.wikipedia.org/wiki/"/></head>'
        f'<body lang="ar" dir="rtl"><section data-mw-section-id="0">{body}</section></body></html>'
    )


FLAG = (
    '<span class="flagicon"><span typeof="mw:File"><a href="./ملف:Flag_of_Morocco.svg">'
    f'<img src="{UPLOAD}/2/2c/Flag_of_Morocco.svg/23px-Flag_of_Morocco.svg.png" width="23" '
    'height="15"/></a></span></span>'
)
VIDEO = (
    '<figure typeof="mw:File/Thumb"><a href="./ملف:Nile_boats.webm">'
    '<video poster="//upload.wikimedia.org/x.jpg" resource="./ملف:Nile_boats.webm"></video></a>'
    "<figcaption>مراكب في النيل</figcaption></figure>"
)
PAGES = {
    "فاس": document(
        figure(
            "Old town of Fez at night.jpg",
            'المدينة القديمة في فاس ليلاً<sup class="mw-ref '
            'reference"><a href="./فاس#cite_note-1"><span class="mw-reflink-text">[1]</span>'
            "</a></sup>",
        )
        + FLAG
        + figure("Fez logo.png", "شعار مدينة فاس", path="c/cd")
        + figure("Deleted photo.jpg", "صورة حذفت من الموسوعة", path="d/de")
    ),
    "نهر النيل": document(
        "<h2>الجغرافيا</h2>" + figure("Nile at Cairo.jpg", "نهر النيل عند القاهرة") + VIDEO
    ),
    "صفحة بلا صور": document("<p>نص بلا أي صورة.</p>"),
}
FILES = {
    "Old town of Fez at night.jpg": {
        "repository": "shared", "width": 4000, "height": 3000, "size": 2_000_000,
        "mime": "image/jpeg", "license": "CC BY-SA 4.0",
        "license_url": "https://creativecommons.org/licenses/by-sa/4.0",
        "artist": '<a href="//commons.wikimedia.org/wiki/User:Ahmed">Ahmed  Benali</a>',
        "non_free": False,
    },
    "Fez logo.png": {
        "repository": "local", "width": 300, "height": 300, "size": 20_000, "mime": "image/png",
        "license": "استعمال عادل", "license_url": None, "artist": "بلدية فاس", "non_free": True,
    },
    "Deleted photo.jpg": {"missing": True},
    "Nile at Cairo.jpg": {
        "repository": "shared", "width": 500, "height": 375, "size": 90_000,
        "mime": "image/jpeg", "license": "Public domain", "license_url": None,
        "artist": "Unknown author", "non_free": False,
    },
    "Flag of Morocco.svg": {
        "repository": "shared", "width": 900, "height": 600, "size": 900, "mime": "image/svg+xml",
        "license": "Public domain", "license_url": None, "artist": "-", "non_free": False,
    },
}  # fmt: skip

FEZ_URL = "https://upload.wikimedia.org/wikipedia/commons"


def source(api: str | None = None, **options) -> WikipediaSource:
    settings = {"user_agent": AGENT, "requests_per_second": 0, "backoff": 0.05, "retries": 3}
    settings.update(options)
    return WikipediaSource(api=api, **settings)


@pytest.fixture
def wiki():
    with WikiStandIn(pages=PAGES, files=FILES) as server:
        yield server


@pytest.fixture(autouse=True)
def fresh_clients():
    """Each test gets its own clients (the source shares one per process and settings)."""
    wikipedia._CLIENTS.clear()
    yield
    wikipedia._CLIENTS.clear()


def kept(records) -> dict[str, tuple]:
    return {
        p.caption_ar: (p.page_title, p.image_url, p.license, p.attribution)
        for p in pairs_of(records)
    }


def expected_kept(fez_url: str, nile_thumb: bool = True) -> dict[str, tuple]:
    nile = f"https://upload.wikimedia.org/wikipedia/commons/{hashed('Nile_at_Cairo.jpg')}"
    if nile_thumb:  # 500 px wide: its 330 px thumbnail
        nile = nile.replace("/commons/", "/commons/thumb/") + "/Nile_at_Cairo.jpg/330px-"
    return {
        "المدينة القديمة في فاس ليلاً": ("فاس", fez_url, "CC BY-SA 4.0", "Ahmed Benali"),
        "نهر النيل عند القاهرة": (
            "نهر النيل",
            nile + "Nile_at_Cairo.jpg" if nile_thumb else nile + "/Nile_at_Cairo.jpg",
            "Public domain",
            "Unknown author",
        ),
    }


def hashed(name: str) -> str:
    import hashlib

    digest = hashlib.md5(name.encode()).hexdigest()
    return f"{digest[0]}/{digest[:2]}"


FEZ_THUMB = (
    f"{FEZ_URL}/thumb/{hashed('Old_town_of_Fez_at_night.jpg')}/Old_town_of_Fez_at_night.jpg/"
    "330px-Old_town_of_Fez_at_night.jpg"  # thumb_width auto: the step above 256
)
DROPS = {"icon": 1, "non_free": 1, "missing_image_file": 1, "not_an_image": 1}


def test_a_crawl_of_every_article_keeps_the_captions_with_licence_and_attribution(wiki):
    src = source(wiki.api_url)
    records = list(crawl(src, wikipedia.client_for(src)))
    assert kept(records) == expected_kept(FEZ_THUMB)
    assert drops_of(records) == DROPS
    fez = next(p for p in pairs_of(records) if p.page_title == "فاس")
    key = "فاس\x1fOld town of Fez at night.jpg"
    assert (fez.source_key, fez.id) == (key, pair_id("wikipedia", key, fez.caption_ar))
    assert (fez.caption_origin, fez.caption_field, fez.is_main_image) == (
        GENUINE,
        "figcaption",
        True,
    )
    assert fez.page_url == f"http://127.0.0.1:{wiki.port}/wiki/%D9%81%D8%A7%D8%B3"
    nile = next(p for p in pairs_of(records) if p.page_title == "نهر النيل")
    assert nile.section_title == "الجغرافيا"
    # 1 allpages + 3 pages + 1 imageinfo for the 4 files (the icon's is never asked).
    assert len(wiki.log) == 5
    imageinfo = wiki.requests_for("imageinfo")
    assert len(imageinfo) == 1
    assert imageinfo[0].params["iiurlwidth"] == "330"


def test_site_url_gives_the_public_page_url(wiki):
    src = source(wiki.api_url, site_url="https://ar.wikipedia.org", titles=("نهر النيل",))
    [nile] = pairs_of(crawl(src, wikipedia.client_for(src)))
    assert (
        nile.page_url
        == "https://ar.wikipedia.org/wiki/%D9%86%D9%87%D8%B1_%D8%A7%D9%84%D9%86%D9%8A%D9%84"
    )


def test_titles_and_limit_select_the_pages(wiki, tmp_path):
    titles = tmp_path / "titles.txt"
    titles.write_text("# a comment\nنهر_النيل\n\nفاس\n", encoding="utf-8")
    src = source(wiki.api_url, titles=("صفحة بلا صور",), titles_file=str(titles), limit=2)
    records = list(crawl(src, wikipedia.client_for(src)))
    assert [p.page_title for p in pairs_of(records)] == ["نهر النيل"]
    parsed = [r.params["page"] for r in wiki.requests_for("parse")]
    assert parsed == ["صفحة بلا صور", "نهر النيل"]
    assert wiki.requests_for("allpages") == []


def test_without_a_thumbnail_width_rows_point_at_the_original(wiki):
    src = source(wiki.api_url, thumb_width=None)
    records = list(crawl(src, wikipedia.client_for(src)))
    fez_original = (
        f"{FEZ_URL}/{hashed('Old_town_of_Fez_at_night.jpg')}/Old_town_of_Fez_at_night.jpg"
    )
    assert kept(records) == expected_kept(fez_original, nile_thumb=False)
    assert "iiurlwidth" not in wiki.requests_for("imageinfo")[0].params


def test_non_free_files_are_kept_when_the_manifest_says_so(wiki):
    src = source(wiki.api_url, non_free=True)
    records = list(crawl(src, wikipedia.client_for(src)))
    logo = next(p for p in pairs_of(records) if p.caption_ar == "شعار مدينة فاس")
    assert (logo.license, logo.attribution) == ("استعمال عادل", "بلدية فاس")
    assert "non_free" not in drops_of(records)


def test_the_crawl_waits_as_told_and_loses_no_page(wiki):
    """maxlag on one page, 429 with Retry-After on the file facts, 503 then success on
    another page: every page and every figure comes through, after the waits asked for."""
    wiki.fail("فاس", maxlag_fault(retry_after=1))
    wiki.fail("imageinfo", status_fault(429, retry_after=1))
    wiki.fail("نهر النيل", status_fault(503))
    src = source(wiki.api_url)
    started = time.monotonic()
    records = list(crawl(src, wikipedia.client_for(src)))
    assert time.monotonic() - started >= 2.0
    assert kept(records) == expected_kept(FEZ_THUMB)
    assert drops_of(records) == DROPS
    fez = wiki.requests_for("فاس")
    assert len(fez) == 2 and fez[1].time - fez[0].time >= 1.0
    info = wiki.requests_for("imageinfo")
    assert len(info) == 2 and info[1].time - info[0].time >= 1.0
    assert len(wiki.requests_for("نهر النيل")) == 2


def test_a_page_that_keeps_failing_is_counted_once(wiki):
    wiki.fail("نهر النيل", *[status_fault(503)] * 4)  # retries 3: four answers, all 503
    src = source(wiki.api_url)
    records = list(crawl(src, wikipedia.client_for(src)))
    assert drops_of(records) == {
        "icon": 1,
        "non_free": 1,
        "missing_image_file": 1,
        "page_http_503": 1,
    }
    assert [p.page_title for p in pairs_of(records)] == ["فاس"]
    [lost] = [r for r in records if getattr(r, "reason", None) == "page_http_503"]
    assert lost.detail.startswith("نهر النيل: ")


def test_file_facts_that_cannot_be_had_drop_their_figures_only(wiki):
    wiki.fail("imageinfo", *[status_fault(503)] * 4)
    src = source(wiki.api_url)
    records = list(crawl(src, wikipedia.client_for(src)))
    assert pairs_of(records) == []
    assert drops_of(records) == {"icon": 1, "not_an_image": 1, "fileinfo_http_503": 4}


def test_a_missing_title_is_a_counted_page(wiki):
    src = source(wiki.api_url, titles=("لا توجد", "فاس"))
    records = list(crawl(src, wikipedia.client_for(src)))
    assert drops_of(records) == {
        "page_missing": 1,
        "icon": 1,
        "non_free": 1,
        "missing_image_file": 1,
    }


# ---------------------------------------------------------------------------- dumps


def article(title: str, html: str | None, namespace: int = 0) -> bytes:
    body = {"html": html, "wikitext": "..."} if html is not None else {}
    line = {
        "name": title,
        "identifier": abs(hash(title)) % 100000,
        "url": "https://ar.wikipedia.org/wiki/" + title.replace(" ", "_"),
        "namespace": {"identifier": namespace},
        "in_language": {"identifier": "ar"},
        "article_body": body,
        "license": [{"identifier": "CC-BY-SA-4.0"}],
    }
    return json.dumps(line, ensure_ascii=False).encode("utf-8")


def ndjson(*lines: bytes) -> bytes:
    return b"\n".join(lines) + b"\n"


def archive(members: dict[str, bytes]) -> bytes:
    """A `.json.tar.gz` as Wikimedia Enterprise ships them: ndjson chunks in a gzipped tar."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


DUMP_MEMBERS = {
    "arwiki_namespace_0_0.ndjson": ndjson(
        article("فاس", PAGES["فاس"]),
        b'{"name": "broken',
        article("قالب:صندوق", PAGES["فاس"], namespace=10),
    ),
    "arwiki_namespace_0_1.ndjson": ndjson(
        article("نهر النيل", PAGES["نهر النيل"]), article("بلا نص", None)
    ),
}


def test_a_dump_archive_gives_the_same_pairs_as_the_crawl(wiki, tmp_path):
    path = tmp_path / "arwiki-NS0-20240601-ENTERPRISE-HTML.json.tar.gz"
    path.write_bytes(archive(DUMP_MEMBERS))
    api_src = source(wiki.api_url)
    crawled = list(crawl(api_src, wikipedia.client_for(api_src)))
    parsed_by_the_crawl = len(wiki.requests_for("parse"))
    with open(path, "rb") as stream:
        dumped = list(parse_dump(stream, str(path), source(wiki.api_url, dump=(str(path),))))
    assert sorted(p.id for p in pairs_of(dumped)) == sorted(p.id for p in pairs_of(crawled))
    assert kept(dumped) == expected_kept(FEZ_THUMB)
    assert drops_of(dumped) == {**DROPS, "bad_json_line": 1, "no_html": 1}
    bad = next(r for r in dumped if getattr(r, "reason", None) == "bad_json_line")
    assert (bad.input_file, bad.input_line) == (f"{path}!arwiki_namespace_0_0.ndjson", 2)
    fez = next(p for p in pairs_of(dumped) if p.page_title == "فاس")
    assert (fez.input_file, fez.input_line) == (f"{path}!arwiki_namespace_0_0.ndjson", 1)
    # The pages come from the dump: the API is asked for file facts only.
    assert len(wiki.requests_for("parse")) == parsed_by_the_crawl == 3


def test_a_dump_alone_keeps_the_html_image_without_licence(tmp_path):
    path = tmp_path / "arwiki_namespace_0_1.ndjson"
    path.write_bytes(DUMP_MEMBERS["arwiki_namespace_0_1.ndjson"])
    src = WikipediaSource(dump=(str(path),))
    with open(path, "rb") as stream:
        records = list(parse_dump(stream, str(path), src))
    [nile] = pairs_of(records)
    under = "Nile_at_Cairo.jpg"
    assert nile.image_url == f"https:{UPLOAD}/a/ab/{under}/250px-{under}"
    assert (nile.license, nile.attribution, nile.page_title) == (None, None, "نهر النيل")
    assert drops_of(records) == {"not_an_image": 1, "no_html": 1}


def test_a_dump_filtered_by_titles_and_limit(tmp_path):
    path = tmp_path / "dump.ndjson.gz"
    path.write_bytes(gzip.compress(b"".join(DUMP_MEMBERS.values())))
    src = WikipediaSource(dump=(str(path),), titles=("نهر النيل", "بلا نص"), limit=1)
    with gzip.open(path, "rb") as stream:
        records = list(parse_dump(stream, str(path), src))
    assert [p.page_title for p in pairs_of(records)] == ["نهر النيل"]
    # A line that is not JSON cannot be told apart: it is counted whatever the titles.
    assert drops_of(records) == {"not_an_image": 1, "bad_json_line": 1}


def test_a_truncated_archive_fails_naming_the_file(tmp_path):
    data = archive(DUMP_MEMBERS)
    path = tmp_path / "arwiki-NS0-cut.json.tar.gz"
    path.write_bytes(data[: len(data) // 2])
    src = WikipediaSource(dump=(str(path),))
    with pytest.raises(ValueError, match=str(path)), gzip.open(path, "rb") as stream:
        list(parse_dump(stream, str(path), src))


# ---------------------------------------------------------------------------- in Beam


def test_read_wikipedia_in_a_pipeline_crawl_and_dump(wiki, tmp_path):
    path = tmp_path / "arwiki-NS0-20240601-ENTERPRISE-HTML.json.tar.gz"
    path.write_bytes(archive(DUMP_MEMBERS))
    crawl_src = source(wiki.api_url)
    dump_src = source(wiki.api_url, dump=(str(tmp_path / "*.json.tar.gz"),))
    both = {
        "المدينة القديمة في فاس ليلاً": "CC BY-SA 4.0",
        "نهر النيل عند القاهرة": "Public domain",
    }
    with TestPipeline() as p:
        for name, src in (("crawl", crawl_src), ("dump", dump_src)):
            pairs, dropped = p | f"Read{name}" >> ReadWikipedia(src)
            assert_that(
                pairs | f"Kept{name}" >> beam.Map(lambda r: (r.caption_ar, r.license)),
                equal_to(list(both.items())),
                label=f"CheckKept{name}",
            )
            extra = {"bad_json_line": 1, "no_html": 1} if name == "dump" else {}
            assert_that(
                dropped
                | f"Reasons{name}" >> beam.Map(lambda d: (d.reason, d.count))
                | f"Count{name}" >> beam.CombinePerKey(sum),
                equal_to(list({**DROPS, **extra}.items())),
                label=f"CheckDropped{name}",
            )


def test_a_byte_order_mark_on_a_dump_its_members_and_a_titles_file_is_skipped(tmp_path):
    bom = b"\xef\xbb\xbf"
    members = {name: bom + data for name, data in DUMP_MEMBERS.items()}
    path = tmp_path / "arwiki-NS0-20240601-ENTERPRISE-HTML.json.tar.gz"
    path.write_bytes(archive(members))
    plain = tmp_path / "arwiki_namespace_0_1.ndjson"
    plain.write_bytes(members["arwiki_namespace_0_1.ndjson"])
    titles = tmp_path / "titles.txt"
    titles.write_bytes(bom + "نهر النيل\n".encode())
    for dump, bad_lines in ((path, [2]), (plain, [])):
        src = WikipediaSource(dump=(str(dump),), titles_file=str(titles))
        with gzip.open(dump, "rb") if dump is path else open(dump, "rb") as stream:
            records = list(parse_dump(stream, str(dump), src))
        assert [p.page_title for p in pairs_of(records)] == ["نهر النيل"], dump
        # The first line of each member is an article; only the broken line 2 is no article.
        bad = [r.input_line for r in records if getattr(r, "reason", "") == "bad_json_line"]
        assert bad == bad_lines
