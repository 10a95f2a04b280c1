"""MediaWikiClient against the MediaWiki stand-in: real HTTP on 127.0.0.1, small wikis built here.

Waits are real (Retry-After 1, backoffs of a fraction of a second) and checked on the server's
request times; the client's injectable `sleep` only records what it was asked to wait, except
where a wait of 5 s would be real (maxlag without Retry-After), which is recorded, not slept.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import subprocess
import sys
import threading
import time

import pytest
import requests
from raw_host import RawHost

from pipeline.sources.mediawiki import (
    CALL_TIMEOUTS,
    Etiquette,
    FileInfo,
    MediaWikiClient,
    MediaWikiError,
    Page,
    file_infos_from_answer,
    html_to_text,
    page_from_answer,
)
from standins.wiki import (
    Fault,
    WikiStandIn,
    hang_up_fault,
    maxlag_fault,
    slow_fault,
    status_fault,
)

UA = "arabic-pairs-test/0.1 (https://example.org/arabic-pairs; team@example.org) requests/2.32"
EGYPT = "مصر"
CAIRO = "القاهرة"
PAGES = {
    EGYPT: '<div class="mw-parser-output"><p>مصر دولة</p></div>',
    CAIRO: '<div class="mw-parser-output"><p>القاهرة عاصمة مصر</p></div>',
    "Alexandria_(city)": "<p>Alexandria</p>",
    "أسوان": "<p>أسوان</p>",
}
ARTIST = (
    '<bdi><a href="https://www.wikidata.org/wiki/Q1" class="extiw">Ahmed &amp; Mona</a>\n'
    "</bdi><br/>  (photo)"
)
FILES = {
    "Pyramids of Giza.jpg": {
        "repository": "shared",
        "width": 4000,
        "height": 3000,
        "size": 2_500_000,
        "mime": "image/jpeg",
        "license": "CC BY-SA 4.0",
        "license_url": "https://creativecommons.org/licenses/by-sa/4.0",
        "artist": ARTIST,
    },
    "Flag_of_Egypt.svg": {
        "repository": "shared",
        "width": 900,
        "height": 600,
        "size": 510,
        "mime": "image/svg+xml",
        "license": "Public domain",
    },
    "شعار النادي.png": {
        "repository": "local",
        "width": 200,
        "height": 150,
        "size": 9000,
        "mime": "image/png",
        "license": "استعمال عادل",
        "non_free": True,
        "credit": "<span>النادي</span>",
    },
    "Deleted.jpg": {"missing": True},
}


class Sleeps:
    """A `sleep` that records each wait, and sleeps it for real unless `real` is False."""

    def __init__(self, real: bool = True):
        self.real = real
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        if self.real:
            time.sleep(seconds)


@pytest.fixture
def wiki():
    with WikiStandIn(pages=PAGES, files=FILES) as server:
        yield server


def client_for(wiki: WikiStandIn, **kwargs) -> MediaWikiClient:
    kwargs.setdefault("requests_per_second", 0)
    kwargs.setdefault("backoff", 0.05)
    user_agent = kwargs.pop("user_agent", UA)
    sleep = kwargs.pop("sleep", time.sleep)
    return MediaWikiClient(wiki.api_url, user_agent, Etiquette(**kwargs), sleep=sleep)


def md5_path(name: str) -> str:
    digest = hashlib.md5(name.replace(" ", "_").encode()).hexdigest()
    return f"{digest[0]}/{digest[:2]}"


# ---------------------------------------------------------------------------- titles and pages


def test_all_titles_follows_continue_until_the_limit():
    pages = {f"Page {i:04d}": "<p/>" for i in range(1201)}
    with WikiStandIn(pages=pages) as wiki:
        client = client_for(wiki)
        titles = list(client.all_titles())
        assert titles == [f"Page {i:04d}" for i in range(1201)]
        assert [r.params.get("apcontinue") for r in wiki.log] == [None, "Page_0500", "Page_1000"]
        assert {r.params["aplimit"] for r in wiki.log} == {"max"}
        assert client.requests_made == 3

        del wiki.log[:]
        assert list(client.all_titles(limit=700)) == titles[:700]
        assert len(wiki.log) == 2  # 500 + 200 of the next 500: no third request
        del wiki.log[:]
        assert list(client.all_titles(limit=3)) == titles[:3]
        assert [r.params["aplimit"] for r in wiki.log] == ["3"]


def test_all_titles_in_mediawiki_order(wiki):
    # Binary order of the underscored titles: Latin before Arabic, Arabic by code point.
    assert list(client_for(wiki).all_titles()) == [
        "Alexandria (city)",
        "أسوان",
        "القاهرة",
        "مصر",
    ]


def test_page_is_parsed_with_its_ids_and_url(wiki):
    client = client_for(wiki)
    page = client.page("Alexandria_(city)")
    expected = wiki.answer({"action": "parse", "page": "Alexandria (city)"})["parse"]
    assert page == Page(
        title="Alexandria (city)",
        page_id=expected["pageid"],
        revision=expected["revid"],
        html="<p>Alexandria</p>",
        url=f"http://127.0.0.1:{wiki.port}/wiki/Alexandria_(city)",
    )
    cairo = client.page(CAIRO)
    assert cairo.html == PAGES[CAIRO]
    assert cairo.url.endswith("/wiki/%D8%A7%D9%84%D9%82%D8%A7%D9%87%D8%B1%D8%A9")
    params = wiki.log[-1].params
    assert params["action"] == "parse"
    assert params["page"] == CAIRO
    assert params["prop"] == "text|revid|displaytitle"
    assert params["disableeditsection"] == "1"
    assert params["redirects"] == "1"


def test_unknown_page_is_api_missingtitle_without_retry(wiki):
    client = client_for(wiki)
    with pytest.raises(MediaWikiError) as raised:
        client.page("لا توجد")
    assert raised.value.reason == "api_missingtitle"
    assert client.requests_made == 1


# ---------------------------------------------------------------------------- imageinfo


def test_file_info_facts(wiki):
    names = [
        "Pyramids_of_Giza.jpg",
        "flag of Egypt.svg",
        "شعار_النادي.png",
        "Deleted.jpg",
        "No.jpg",
    ]
    infos = client_for(wiki).file_info(names, thumb_width=250)
    assert list(infos) == names  # the names as asked, in order
    # Commons files: "missing" and "known" with imageinfo, kept.
    pyramid = md5_path("Pyramids_of_Giza.jpg")
    assert infos["Pyramids_of_Giza.jpg"] == FileInfo(
        name="Pyramids_of_Giza.jpg",
        url=f"https://upload.wikimedia.org/wikipedia/commons/{pyramid}/Pyramids_of_Giza.jpg",
        thumb_url=(
            f"https://upload.wikimedia.org/wikipedia/commons/thumb/{pyramid}/"
            "Pyramids_of_Giza.jpg/250px-Pyramids_of_Giza.jpg"
        ),
        width=4000,
        height=3000,
        size=2_500_000,
        mime="image/jpeg",
        license="CC BY-SA 4.0",
        license_url="https://creativecommons.org/licenses/by-sa/4.0",
        attribution="Ahmed & Mona (photo)",
        non_free=False,
        description_url="https://commons.wikimedia.org/wiki/File:Pyramids_of_Giza.jpg",
    )
    flag = infos["flag of Egypt.svg"]  # normalised to ملف:Flag of Egypt.svg, mapped back
    assert flag.name == "flag of Egypt.svg"
    assert flag.url == "https://upload.wikimedia.org/wikipedia/commons/f/fe/Flag_of_Egypt.svg"
    assert flag.thumb_url == (
        "https://upload.wikimedia.org/wikipedia/commons/thumb/f/fe/Flag_of_Egypt.svg/"
        "250px-Flag_of_Egypt.svg.png"
    )
    assert (flag.license, flag.attribution, flag.non_free) == ("Public domain", None, False)
    # A local fair-use file: under /wikipedia/ar/, NonFree, Credit when there is no Artist.
    logo = infos["شعار_النادي.png"]
    encoded = "%D8%B4%D8%B9%D8%A7%D8%B1_%D8%A7%D9%84%D9%86%D8%A7%D8%AF%D9%8A.png"
    assert logo.url == (
        f"https://upload.wikimedia.org/wikipedia/ar/{md5_path('شعار النادي.png')}/{encoded}"
    )
    assert logo.thumb_url == logo.url  # 250 px asked of a 200 px bitmap: the original
    assert (logo.license, logo.non_free, logo.attribution) == ("استعمال عادل", True, "النادي")
    assert logo.description_url == f"https://ar.wikipedia.org/wiki/%D9%85%D9%84%D9%81:{encoded}"
    assert infos["Deleted.jpg"] is None
    assert infos["No.jpg"] is None
    params = wiki.log[-1].params
    assert params["prop"] == "imageinfo"
    assert params["iiprop"] == "url|size|mime|extmetadata"
    assert params["iiurlwidth"] == "250"
    assert params["titles"].split("|") == [f"File:{n}" for n in names]


def test_file_info_without_thumb_width(wiki):
    info = client_for(wiki).file_info(["Pyramids of Giza.jpg"])["Pyramids of Giza.jpg"]
    assert info.thumb_url is None
    assert info.width == 4000
    assert "iiurlwidth" not in wiki.log[-1].params


def test_file_info_batches_of_50(wiki):
    names = [f"Photo {i}.jpg" for i in range(120)]
    files = {
        n: {"width": 10 + i, "height": 5, "size": 1, "mime": "image/jpeg"}
        for i, n in enumerate(names)
    }
    with WikiStandIn(files=files) as server:
        client = client_for(server)
        infos = client.file_info(names + names[:5] + ["Missing.jpg", "bad|name.jpg"])
        sizes = [len(r.params["titles"].split("|")) for r in server.log]
    assert sizes == [50, 50, 21]  # "bad|name.jpg" cannot be a title: never sent
    assert client.requests_made == 3
    assert [infos[n].width for n in names] == [10 + i for i in range(120)]
    assert infos["Missing.jpg"] is None
    assert infos["bad|name.jpg"] is None


def test_more_than_50_titles_is_an_api_error(wiki):
    titles = "|".join(f"File:F{i}.jpg" for i in range(51))
    params = {"action": "query", "prop": "imageinfo", "titles": titles, "format": "json"}
    response = requests.get(wiki.api_url, params=params, headers={"User-Agent": UA}, timeout=5)
    assert response.status_code == 200
    assert response.headers["MediaWiki-API-Error"] == "toomanyvalues"
    assert response.json()["error"]["code"] == "toomanyvalues"


# A formatversion=1 answer, in the shape the API gives it: pages keyed by id ("-1", "-2" for
# missing pages), booleans as "", a Commons file missing-but-known with imageinfo, a url with
# the utm query Wikimedia appends.
FORMATVERSION_1 = """{
  "batchcomplete": "",
  "query": {
    "normalized": [
      {"from": "File:Flag_of_Egypt.svg", "to": "ملف:Flag of Egypt.svg"},
      {"from": "File:Nothing_here.jpg", "to": "ملف:Nothing here.jpg"},
      {"from": "File:Logo.png", "to": "ملف:Logo.png"}
    ],
    "pages": {
      "-1": {
        "ns": 6, "title": "ملف:Flag of Egypt.svg", "missing": "", "known": "",
        "imagerepository": "shared",
        "imageinfo": [{
          "size": 510, "width": 900, "height": 600,
          "thumburl": "https://upload.wikimedia.org/wikipedia/commons/thumb/f/fe/Flag_of_Egypt.svg/120px-Flag_of_Egypt.svg.png",
          "thumbwidth": 120, "thumbheight": 80,
          "url": "https://upload.wikimedia.org/wikipedia/commons/f/fe/Flag_of_Egypt.svg?utm_source=commons.wikimedia.org&utm_campaign=imageinfo&utm_content=original",
          "descriptionurl": "https://commons.wikimedia.org/wiki/File:Flag_of_Egypt.svg",
          "mime": "image/svg+xml",
          "extmetadata": {
            "LicenseShortName":
              {"value": "Public domain", "source": "commons-desc-page", "hidden": ""},
            "Artist":
              {"value": "<span lang=\\"en\\">Open Clip Art</span>", "source": "commons-desc-page"},
            "NonFree": {"value": "false", "source": "commons-desc-page"}
          }
        }]
      },
      "-2": {"ns": 6, "title": "ملف:Nothing here.jpg", "missing": "", "imagerepository": ""},
      "4321": {
        "pageid": 4321, "ns": 6, "title": "ملف:Logo.png", "imagerepository": "local",
        "imageinfo": [{
          "size": 900, "width": 100, "height": 80,
          "url": "https://upload.wikimedia.org/wikipedia/ar/1/1a/Logo.png",
          "descriptionurl": "https://ar.wikipedia.org/wiki/%D9%85%D9%84%D9%81:Logo.png",
          "mime": "image/png",
          "extmetadata": {
            "LicenseShortName": {"value": "<b>استعمال عادل</b>", "source": "commons-desc-page"},
            "NonFree": {"value": "true", "source": "commons-desc-page"}
          }
        }]
      }
    }
  }
}"""


def test_formatversion_1_answer():
    titles = {
        "File:Flag_of_Egypt.svg": "Flag_of_Egypt.svg",
        "File:Nothing_here.jpg": "Nothing_here.jpg",
    }
    titles["File:Logo.png"] = "Logo.png"
    infos = file_infos_from_answer(json.loads(FORMATVERSION_1), titles, thumb_width=120)
    flag = infos["Flag_of_Egypt.svg"]
    assert flag.url == "https://upload.wikimedia.org/wikipedia/commons/f/fe/Flag_of_Egypt.svg"
    assert flag.thumb_url.endswith("/120px-Flag_of_Egypt.svg.png")
    assert (flag.width, flag.height, flag.size, flag.mime) == (900, 600, 510, "image/svg+xml")
    assert (flag.license, flag.attribution, flag.non_free) == (
        "Public domain",
        "Open Clip Art",
        False,
    )
    assert infos["Nothing_here.jpg"] is None
    logo = infos["Logo.png"]
    assert (logo.license, logo.non_free, logo.thumb_url) == ("استعمال عادل", True, None)


def test_parse_answer_in_both_formatversions():
    v1 = {"parse": {"title": "مصر", "pageid": 7, "revid": 70, "text": {"*": "<p>x</p>"}}}
    v2 = {"parse": {"title": "مصر", "pageid": 7, "revid": 70, "text": "<p>x</p>"}}
    api = "https://ar.wikipedia.org/w/api.php"
    expected = Page("مصر", 7, 70, "<p>x</p>", "https://ar.wikipedia.org/wiki/%D9%85%D8%B5%D8%B1")
    assert page_from_answer(v1, api) == expected
    assert page_from_answer(v2, api) == expected
    with pytest.raises(MediaWikiError) as raised:
        page_from_answer({"parse": {"title": "مصر", "text": "<p/>"}}, api)
    assert raised.value.reason == "bad_response"


def test_html_to_text():
    assert html_to_text(ARTIST) == "Ahmed & Mona (photo)"
    assert html_to_text("a<b>b</b>c") == "abc"
    assert html_to_text("  <span></span> ") is None
    assert html_to_text(None) is None


# ---------------------------------------------------------------------------- etiquette


def test_every_request_carries_the_etiquette(wiki):
    client = client_for(wiki)
    list(client.all_titles())
    client.page(EGYPT)
    client.file_info(["Flag of Egypt.svg"])
    assert len(wiki.log) == 3
    for request in wiki.log:
        assert request.headers["User-Agent"] == UA
        assert request.headers["Accept-Encoding"] == "gzip"
        assert (request.params["format"], request.params["formatversion"]) == ("json", "2")
        assert request.params["maxlag"] == "5"


def test_maxlag_zero_is_not_sent(wiki):
    client = client_for(wiki, maxlag=0)
    wiki.fail("parse", maxlag_fault(1))  # MediaWiki never answers maxlag to a client without it
    assert client.page(EGYPT).title == EGYPT
    assert "maxlag" not in wiki.log[0].params
    assert client.requests_made == 1


@pytest.mark.parametrize(
    "agent",
    ["python-requests/2.32.3", "Python-urllib/3.11", "arabic-pairs/0.1 (no contact here)"],
)
def test_a_generic_or_anonymous_user_agent_is_refused(wiki, agent):
    client = client_for(wiki, user_agent=agent)
    with pytest.raises(MediaWikiError) as raised:
        client.page(EGYPT)
    assert raised.value.reason == "http_403"
    assert client.requests_made == 1  # a 403 is not retried
    with pytest.raises(ValueError):
        MediaWikiClient(wiki.api_url, " ")


def test_maxlag_waits_retry_after_then_succeeds(wiki):
    sleeps = Sleeps()
    client = client_for(wiki, sleep=sleeps)
    wiki.fail(EGYPT, maxlag_fault(retry_after=1))
    assert client.page(EGYPT).html == PAGES[EGYPT]
    first, second = wiki.requests_for(EGYPT)
    assert second.time - first.time >= 1.0
    assert sleeps.waits == [pytest.approx(1.0, abs=0.02)]
    assert client.waited == pytest.approx(1.0, abs=0.02)
    assert client.requests_made == 2


def test_maxlag_without_retry_after_waits_5_seconds(wiki):
    sleeps = Sleeps(real=False)
    client = client_for(wiki, sleep=sleeps)
    wiki.fail("parse", maxlag_fault(retry_after=None))
    assert client.page(CAIRO).title == CAIRO
    assert sleeps.waits == [pytest.approx(5.0, abs=0.05)]


def test_429_waits_retry_after(wiki):
    client = client_for(wiki, sleep=Sleeps())
    wiki.fail("imageinfo", status_fault(429, retry_after=1))
    assert client.file_info(["Flag of Egypt.svg"])["Flag of Egypt.svg"].width == 900
    first, second = wiki.log
    assert second.time - first.time >= 1.0


def test_a_throttled_answer_holds_back_every_thread(wiki):
    waiting = threading.Event()

    def sleep(seconds: float) -> None:
        waiting.set()
        time.sleep(seconds)

    client = client_for(wiki, concurrency=2, sleep=sleep)
    wiki.fail(EGYPT, status_fault(429, retry_after=1))
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        egypt = pool.submit(client.page, EGYPT)
        assert waiting.wait(5)  # the 429 was answered; its thread waits out Retry-After
        assert client.page(CAIRO).title == CAIRO  # a free slot, yet it waits too
        assert egypt.result().title == EGYPT
    throttled = wiki.requests_for(EGYPT)[0].time
    assert wiki.requests_for(CAIRO)[0].time - throttled >= 1.0


def test_retry_after_is_capped_by_max_wait(wiki):
    sleeps = Sleeps()
    client = client_for(wiki, sleep=sleeps, max_wait=0.2)
    wiki.fail("parse", status_fault(429, retry_after=100))
    assert client.page(EGYPT).title == EGYPT
    assert sleeps.waits == [pytest.approx(0.2, abs=0.02)]


def test_503_then_success_backs_off(wiki):
    sleeps = Sleeps()
    client = client_for(wiki, sleep=sleeps, backoff=0.1)
    wiki.fail("parse", status_fault(503), status_fault(503))
    assert client.page(EGYPT).title == EGYPT
    assert sleeps.waits == [pytest.approx(0.1, abs=0.02), pytest.approx(0.2, abs=0.02)]
    assert client.requests_made == 3


def test_503_forever_gives_up_after_the_retries(wiki):
    sleeps = Sleeps()
    client = client_for(wiki, sleep=sleeps, retries=3, backoff=0.02)
    wiki.fail("parse", *[status_fault(503)] * 10)
    with pytest.raises(MediaWikiError) as raised:
        client.page(EGYPT)
    assert raised.value.reason == "http_503"
    assert len(wiki.log) == 4  # the first attempt and 3 retries
    assert sleeps.waits == [pytest.approx(w, abs=0.01) for w in (0.02, 0.04, 0.08)]


def test_timeouts_and_connection_errors_are_retried(wiki):
    client = client_for(wiki, timeout=0.3, sleep=Sleeps())
    wiki.fail("parse", slow_fault(1.0), hang_up_fault())
    assert client.page(EGYPT).title == EGYPT
    assert client.requests_made == 3
    wiki.fail("parse", *[slow_fault(1.0)] * 2)
    with pytest.raises(MediaWikiError) as raised:
        client_for(wiki, timeout=0.3, retries=1).page(EGYPT)
    assert raised.value.reason == "timeout"
    wiki.fail("parse", *[hang_up_fault()] * 2)
    with pytest.raises(MediaWikiError) as raised:
        client_for(wiki, retries=1).page(EGYPT)
    assert raised.value.reason == "connection_error"


@pytest.mark.parametrize(
    ("prefix", "gap"),
    [
        (b"HTTP/1.1 200 OK\r\nX-Pad: ", 0.1),  # headers, a byte at a time
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n{", 0.1),  # the body too
    ],
    ids=["headers", "body"],
)
def test_a_whole_call_ends_by_its_deadline_however_slowly_the_server_trickles(prefix, gap):
    """`timeout` bounds each wait for bytes; a server that sends one byte every 0.1 s never
    trips it, and a call still ends after CALL_TIMEOUTS timeouts, retried as a timeout."""

    def script(link):
        link.read_request()
        link.send(prefix)
        link.trickle(b" " * 5000, gap)

    with RawHost(script) as host:
        client = MediaWikiClient(
            host.url("/w/api.php"), UA, Etiquette(timeout=0.4, retries=1, requests_per_second=0)
        )
        start = time.monotonic()
        with pytest.raises(MediaWikiError) as raised:
            client.page(EGYPT)
        elapsed = time.monotonic() - start
    assert raised.value.reason == "timeout"
    assert host.connections == 2
    call = 0.4 * CALL_TIMEOUTS
    assert 2 * call <= elapsed < 2 * call + 1.0 + 2.0  # two calls, a backoff of 1 s between


def test_an_answer_that_is_not_json_is_bad_response(wiki):
    client = client_for(wiki)
    wiki.fail("parse", Fault(200, {"Content-Type": "text/html"}, b"<html>maintenance</html>"))
    with pytest.raises(MediaWikiError) as raised:
        client.page(EGYPT)
    assert raised.value.reason == "bad_response"
    assert client.requests_made == 1


def test_rate_limit_spaces_request_starts(wiki):
    client = client_for(wiki, requests_per_second=10)
    for _ in range(6):
        client.page(EGYPT)
    times = [r.time for r in wiki.log]
    assert times[-1] - times[0] >= 0.5 - 0.01
    assert min(b - a for a, b in zip(times[:-1], times[1:], strict=True)) >= 0.1 - 0.01
    assert client.waited >= 0.4


@pytest.mark.parametrize("concurrency", [1, 2])
def test_concurrency_bounds_requests_in_flight(concurrency):
    with WikiStandIn(pages=PAGES, delay=0.05) as wiki:
        client = client_for(wiki, concurrency=concurrency)
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            pages = list(pool.map(client.page, [EGYPT, CAIRO, "أسوان", EGYPT] * 3))
        assert [p.title for p in pages] == [EGYPT, CAIRO, "أسوان", EGYPT] * 3
        assert wiki.max_in_flight == concurrency
        assert client.requests_made == 12


# ---------------------------------------------------------------------------- the stand-in


def test_stand_in_serves_a_folder_from_the_command_line(tmp_path):
    (tmp_path / "pages").mkdir()
    (tmp_path / "pages" / "الأهرامات_المصرية.html").write_text("<p>أهرام</p>", encoding="utf-8")
    facts = {"Giza_pyramid.jpg": FILES["Pyramids of Giza.jpg"], "Gone.jpg": {"missing": True}}
    (tmp_path / "files.json").write_text(json.dumps(facts), encoding="utf-8")
    process = subprocess.Popen(
        [sys.executable, "-m", "standins.wiki", str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        api = process.stdout.readline().strip()
        assert api.startswith("http://127.0.0.1:") and api.endswith("/w/api.php")
        client = MediaWikiClient(api, UA, Etiquette(requests_per_second=0))
        assert list(client.all_titles()) == ["الأهرامات المصرية"]
        assert client.page("الأهرامات_المصرية").html == "<p>أهرام</p>"
        infos = client.file_info(["Giza pyramid.jpg", "Gone.jpg"])
        assert infos["Giza pyramid.jpg"].attribution == "Ahmed & Mona (photo)"
        assert infos["Gone.jpg"] is None
    finally:
        process.terminate()
        process.wait(5)
