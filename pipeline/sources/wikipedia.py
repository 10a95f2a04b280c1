"""ReadWikipedia: genuine Arabic captions from the figures of Arabic Wikipedia articles.

Two inputs, one extractor (`pipeline.sources.wikipedia_html.extract_figures`):

- **The live Action API** (`api:`): the titles of `titles` and `titles_file` (in that order,
  each once), or, when neither is given, every article of namespace 0 (`list=allpages`) up to
  `limit`. Each page is one `action=parse` request (the HTML the wiki renders: Parsoid or
  classic, every era is handled); the Action API was chosen over the REST endpoints so that
  one client, one error format and `maxlag` serve every request. The whole crawl runs in one
  Beam element, so requests to the wiki are serial by default (`concurrency` pages in flight
  when raised) and rate-limited (`pipeline.sources.mediawiki`); the pairs are reshuffled after
  it so the later stages spread over all workers.
- **Wikimedia Enterprise HTML dumps** (`dump:`): `.json.tar.gz` archives (their `.ndjson`
  members streamed one after the other, never unpacked to disk or held whole) and `.ndjson`
  files (or `.ndjson.gz`), one article per line; each file is read by one worker. `titles` and
  `titles_file` select pages of a dump too; `limit` caps the pages of each dump file.

File facts (original URL, thumbnail of `thumb_width`, size, MIME type, licence, artist,
`NonFree`) come from `prop=imageinfo`, 50 files a request, gathered across pages: a crawl costs
about one request per page plus one per 50 figures (`benchmarks/wikipedia.py`). A dump with an
`api` beside it asks the API for these facts; a dump alone keeps the image the HTML shows (a
thumbnail) with no licence.

Accounting (`read` counts (page, image) candidates, CONTRACT.md): every media element of a page
is a candidate, kept or dropped: the extractor's reasons (`icon`, `broken_media`,
`not_an_image`, `svg_original`, `no_caption`, `repeated_on_page`), then `missing_image_file`
(a file that does not exist), `non_free` (unless `non_free: true`), `fileinfo_<reason>` (the
file facts could not be had). A page that cannot be had at all is one record dropped under
`page_<reason>` (`page_http_503`, `page_maxlag`, `page_missing` ...) or, in a dump, a line that
is not an article (`bad_json_line`, `no_html`): its figures are unknown, so the page counts
once. A page without figures adds nothing.

Rows carry `page_title`, `page_url`, `section_title`, `is_main_image`, `caption_field`,
`license` and `attribution`; `source_key` is the page title and the file name, so a pair keeps
its id whether it came from the API or a dump.
"""

from __future__ import annotations

import itertools
import json
import re
import tarfile
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from pipeline.config import ImagesConfig, images_thumb_width, require
from pipeline.records import DROPPED, GENUINE, Drop, Pair, SpreadPairs, pair_id
from pipeline.sources.base import GENUINE_ARABIC, KindProfile, Provenance, SourceKind
from pipeline.sources.files import READ_ERRORS, RawReader, ReadFiles, numbered_lines, route
from pipeline.sources.mediawiki import (
    Etiquette,
    FileInfo,
    MediaWikiClient,
    MediaWikiError,
    article_url,
)
from pipeline.sources.wikipedia_html import FIGURE_REASONS, Figure, extract_figures
from pipeline.steps import Reasons


@dataclass(frozen=True)
class WikipediaSource(Etiquette):
    """A crawl of Arabic Wikipedia article figures: a live MediaWiki API or Enterprise dumps.

    With `api` alone, pages come from the Action API (`titles`, `titles_file`, or every article
    of namespace 0 up to `limit`). With `dump`, pages come from the dump files (only the pages
    `titles`/`titles_file` name, when given, and at most `limit`); an `api` given beside a dump
    is asked for file facts only (licence, attribution, thumbnail URL). The keys of the API's
    etiquette (`maxlag`, `requests_per_second`, `concurrency`, `retries`, `backoff`,
    `max_wait`, `timeout`) are `Etiquette`'s fields, inherited with their defaults.
    """

    api: str | None = None
    dump: tuple[str, ...] = ()
    titles: tuple[str, ...] = ()
    titles_file: str | None = None
    limit: int | None = None  # at most this many pages
    user_agent: str | None = None  # required with `api`: `name/version (contact) library/version`
    # The wiki's public address for `page_url` (`https://ar.wikipedia.org`); default: the api's
    # scheme and host. A mirror or a local stand-in sets the real wiki's here.
    site_url: str | None = None
    # File facts: thumbnails of this width when the original is wider (cheaper to fetch), else
    # the original; a standard width (pipeline.wikimedia.STEPS); `auto`: images.thumb_width
    # (the smallest step at or above images.size); None: always the original.
    thumb_width: int | str | None = "auto"
    non_free: bool = False  # keep non-free (fair-use) files; dropped as `non_free` by default
    min_width: int = 50  # `icon`: images rendered narrower than this (flags, logos)
    kind: str = "wikipedia"
    name: str = "wikipedia"


# Files asked for in one imageinfo request (the API's limit for clients without bot rights).
FILES_PER_REQUEST = 50
# Titles handed to the page fetchers at a time (bounded memory for a crawl of all articles).
TITLE_CHUNK = 64


def thumb_width(source: WikipediaSource) -> int | None:
    """The width of the thumbnails asked for: the manifest resolves `auto`; a source made in
    code may leave it, which means the step at or above the default `images.size`."""
    if source.thumb_width == "auto":
        return images_thumb_width(ImagesConfig())
    return source.thumb_width


class PageRef(NamedTuple):
    """Where a page's figures came from, for their rows and their drops."""

    title: str
    url: str
    input_file: str
    input_line: int | None = None


# ---------------------------------------------------------------------------- clients


_CLIENTS: dict[tuple, MediaWikiClient] = {}
_CLIENTS_LOCK = threading.Lock()


def client_for(source: WikipediaSource) -> MediaWikiClient:
    """The process's one client for the source's API: every DoFn of the process shares its
    per-host limits (one request at a time, the rate limit)."""
    key = (source.api, source.user_agent, Etiquette.of(source))
    with _CLIENTS_LOCK:
        if key not in _CLIENTS:
            _CLIENTS[key] = MediaWikiClient(source.api, source.user_agent, key[2])
        return _CLIENTS[key]


def page_url(source: WikipediaSource, title: str) -> str:
    """The article's public URL: on `site_url`, else on the api's host, else on arwiki."""
    return article_url(source.site_url or source.api or "https://ar.wikipedia.org", title)


# ---------------------------------------------------------------------------- declaration

REASONS = Reasons(
    "wikipedia",
    {
        **FIGURE_REASONS,
        "missing_image_file": "the figure's file does not exist on the wiki (no File page)",
        "non_free": "a non-free (fair-use) file, with the source's non_free: false",
        "fileinfo_<error>": "the file's facts could not be had from the API "
        "(fileinfo_http_503, fileinfo_maxlag, fileinfo_api_<code> ...)",
        "page_missing": "the titled page does not exist",
        "page_<error>": "the page could not be had from the API (page_http_503, page_maxlag, "
        "page_timeout ...): one record for the whole page",
        "bad_json_line": "a dump line that is not an article object",
        "no_html": "a dump article without its HTML",
        "invalid_utf8": "a text field holds a lone surrogate (a JSON escape such as \\ud800)",
    },
    catch_all="extract_error",
)

# A User-Agent's contact: an e-mail address or a URL in parentheses (Wikimedia's policy).
_CONTACT = re.compile(r"\([^()]*(?:[\w.+-]+@[\w-]+\.[\w.-]+|https?://[^\s()]+)[^()]*\)")


def check_source(src: WikipediaSource, where: str) -> None:
    """What the manifest checks beyond types."""
    require(bool(src.api or src.dump), where, "give 'api' (a live crawl) or 'dump'")
    for key in ("maxlag", "retries", "min_width"):
        require(getattr(src, key) >= 0, f"{where}.{key}", "must be >= 0")
    for key in ("requests_per_second", "backoff", "max_wait"):
        require(getattr(src, key) >= 0, f"{where}.{key}", "must be >= 0")
    require(src.concurrency >= 1, f"{where}.concurrency", "must be >= 1")
    require(
        src.site_url is None or src.site_url.startswith(("http://", "https://")),
        f"{where}.site_url",
        "expected an http(s) URL",
    )
    require(src.timeout > 0, f"{where}.timeout", "must be positive")
    if src.api:
        require(
            src.api.startswith(("http://", "https://")),
            f"{where}.api",
            "expected an http(s) URL",
        )
        require(
            bool(src.user_agent and _CONTACT.search(src.user_agent)),
            f"{where}.user_agent",
            "a live crawl needs a descriptive User-Agent with a contact, "
            "e.g. 'arabic-pairs/0.1 (https://example.org; you@example.org)'",
        )
    require(src.limit is None or src.limit > 0, f"{where}.limit", "must be positive")


# ---------------------------------------------------------------------------- figures to pairs


class FigureResolver:
    """Turns each page's figures into pairs and drops, asking the API for file facts in
    requests of up to 50 files gathered across pages (a file seen before is not asked again).

    `add` yields what needs no facts at once and holds the rest; `flush` resolves what is held.
    Without a client, figures become pairs with the image the HTML shows and no licence.
    """

    def __init__(self, source: WikipediaSource, client: MediaWikiClient | None):
        self._source = source
        self._client = client
        self._facts: dict[str, FileInfo | None] = {}
        self._held: list[tuple[PageRef, Figure]] = []
        self._asking: set[str] = set()

    def add(self, page: PageRef, figures: Iterable[Figure]) -> Iterator[Pair | Drop]:
        for figure in figures:
            if figure.reason is not None:
                yield self._drop(page, figure.reason, figure.file, figure)
            elif self._client is None:
                yield self._pair(page, figure, None)
            elif figure.file in self._facts:
                yield self._resolved(page, figure, self._facts[figure.file])
            else:
                self._held.append((page, figure))
                self._asking.add(figure.file)
                if len(self._asking) >= FILES_PER_REQUEST:
                    yield from self.flush()

    def flush(self) -> Iterator[Pair | Drop]:
        if not self._held:
            return
        held, names = self._held, sorted(self._asking)
        self._held, self._asking = [], set()
        try:
            self._facts.update(self._client.file_info(names, thumb_width(self._source)))
        except MediaWikiError as err:
            for page, figure in held:
                yield self._drop(page, f"fileinfo_{err.reason}", f"{figure.file}: {err}", figure)
            return
        for page, figure in held:
            yield self._resolved(page, figure, self._facts.get(figure.file))

    def _resolved(self, page: PageRef, figure: Figure, facts: FileInfo | None) -> Pair | Drop:
        if facts is None:
            return self._drop(page, "missing_image_file", figure.file, figure)
        if facts.non_free and not self._source.non_free:
            return self._drop(page, "non_free", f"{figure.file}: {facts.license}", figure)
        if facts.mime == "image/svg+xml" and not facts.thumb_url:
            return self._drop(page, "svg_original", figure.file, figure)
        if not facts.mime.startswith("image/"):
            return self._drop(page, "not_an_image", f"{figure.file}: {facts.mime}", figure)
        return self._pair(page, figure, facts)

    def _pair(self, page: PageRef, figure: Figure, facts: FileInfo | None) -> Pair:
        key = f"{page.title}\x1f{figure.file}"
        image_url = (facts.thumb_url or facts.url) if facts is not None else figure.src
        return Pair(
            id=pair_id(self._source.kind, key, figure.caption),
            source=self._source.kind,
            source_name=self._source.name,
            source_key=key,
            caption_ar=figure.caption,
            caption_origin=GENUINE,
            caption_field=figure.caption_field,
            source_language="ar",
            image_url=image_url,
            mime_type=facts.mime if facts is not None else None,
            page_url=page.url,
            page_title=page.title,
            section_title=figure.section,
            is_main_image=figure.is_main,
            license=facts.license if facts is not None else None,
            attribution=facts.attribution if facts is not None else None,
            input_file=page.input_file,
            input_line=page.input_line,
        )

    def _drop(
        self, page: PageRef, reason: str, detail: str | None, figure: Figure | None = None
    ) -> Drop:
        """The drop of a page's candidate; with the figure, its caption and image as the HTML
        shows them (what `output.rejected` writes)."""
        where = f"{page.title}: {detail}" if detail else page.title
        dropped = Drop(self._source.name, reason, page.input_file, page.input_line, where[:300])
        if figure is None:
            return dropped
        return dropped._replace(caption_ar=figure.caption or None, image_url=figure.src)


def _figures_or_drop(
    resolver: FigureResolver, page: PageRef, html: str, source: WikipediaSource
) -> Iterator[Pair | Drop]:
    """The page's candidates; a page the extractor fails on is one `extract_error` record."""
    try:
        figures = extract_figures(html, page.url, min_width=source.min_width)
    except Exception as err:  # noqa: BLE001 - one page the extractor fails on is counted
        detail = f"{page.title}: {type(err).__name__}: {err}"[:300]
        yield Drop(source.name, "extract_error", page.input_file, page.input_line, detail)
        return
    yield from resolver.add(page, figures)


# ---------------------------------------------------------------------------- the live API


def read_titles_file(path: str) -> list[str]:
    """The titles of a titles file: one per line, blank lines and `#` comments skipped."""
    with FileSystems.open(path) as f:
        text = f.read().decode("utf-8-sig")
    return [t.strip() for t in text.splitlines() if t.strip() and not t.lstrip().startswith("#")]


def selected_titles(source: WikipediaSource) -> list[str] | None:
    """The titles the manifest names (each once, in order), or None when it names none."""
    if not source.titles and not source.titles_file:
        return None
    titles = list(source.titles)
    if source.titles_file:
        titles += read_titles_file(source.titles_file)
    return list(dict.fromkeys(t.replace("_", " ").strip() for t in titles if t.strip()))


def crawl(source: WikipediaSource, client: MediaWikiClient) -> Iterator[Pair | Drop]:
    """Every candidate of the crawl, page by page, as pairs and drops."""
    named = selected_titles(source)
    titles = iter(named) if named is not None else client.all_titles(limit=source.limit)
    titles = itertools.islice(titles, source.limit)
    resolver = FigureResolver(source, client)

    def fetch(title: str):
        try:
            return title, client.page(title), None
        except MediaWikiError as err:
            return title, None, err

    with ThreadPoolExecutor(max_workers=source.concurrency) as pool:
        while chunk := list(itertools.islice(titles, TITLE_CHUNK)):
            for title, page, err in pool.map(fetch, chunk):
                if err is not None:
                    reason = (
                        "page_missing" if err.reason == "api_missingtitle" else f"page_{err.reason}"
                    )
                    yield Drop(source.name, reason, source.api, None, f"{title}: {err}"[:300])
                    continue
                ref = PageRef(page.title, page_url(source, page.title), source.api)
                yield from _figures_or_drop(resolver, ref, page.html, source)
    yield from resolver.flush()


class _CrawlFn(beam.DoFn):
    def __init__(self, source: WikipediaSource):
        self._source = source

    def process(self, _):
        yield from route(crawl(self._source, client_for(self._source)))


# ---------------------------------------------------------------------------- dumps


def _dump_lines(stream, path: str) -> Iterator[tuple[str, int, bytes]]:
    """(where, line number, line) for every line of a dump file: the members of a
    `.json.tar.gz` in turn (where = `archive!member`), or the lines of an `.ndjson`."""
    if ".tar" not in path.rsplit("/", 1)[-1]:
        for number, line in numbered_lines(stream, path):
            yield path, number, line
        return
    member_name = None
    try:
        # `r|*`: a stream already gunzipped (`open_matched`) or still gzipped both read.
        with tarfile.open(fileobj=RawReader(stream), mode="r|*") as archive:
            for member in archive:
                member_name = member.name
                if not member.isfile() or not member.name.endswith(".ndjson"):
                    continue
                where = f"{path}!{member.name}"
                for number, line in numbered_lines(archive.extractfile(member), where):
                    yield where, number, line
    except (tarfile.TarError, *READ_ERRORS) as err:
        after = f" after member {member_name}" if member_name else ""
        raise ValueError(f"{path}: cannot read the archive{after} ({err})") from err


def parse_dump(stream, path: str, source: WikipediaSource) -> Iterator[Pair | Drop]:
    """Every candidate of one dump file, as pairs and drops."""
    wanted = selected_titles(source)
    wanted = set(wanted) if wanted is not None else None
    client = client_for(source) if source.api else None
    resolver = FigureResolver(source, client)
    pages = 0
    for where, number, line in _dump_lines(stream, path):
        if not line.strip():
            continue
        try:
            article = json.loads(line)
            title = article["name"]
        except (ValueError, KeyError, TypeError) as err:
            yield Drop(
                source.name, "bad_json_line", where, number, f"{type(err).__name__}: {err}"[:300]
            )
            continue
        if not isinstance(article, dict) or not isinstance(title, str):
            yield Drop(source.name, "bad_json_line", where, number, "not an article object")
            continue
        if (article.get("namespace") or {}).get("identifier", 0) != 0:
            continue  # not an article: not a candidate of this source
        if wanted is not None and title not in wanted:
            continue
        if source.limit is not None and pages >= source.limit:
            break
        pages += 1
        html = (article.get("article_body") or {}).get("html")
        if not isinstance(html, str) or not html.strip():
            yield Drop(source.name, "no_html", where, number, title)
            continue
        url = article.get("url") if isinstance(article.get("url"), str) else None
        ref = PageRef(title, url or page_url(source, title), where, number)
        yield from _figures_or_drop(resolver, ref, html, source)
    yield from resolver.flush()


# ---------------------------------------------------------------------------- the transform


class ReadWikipedia(beam.PTransform):
    """Reads the source's pages (live API or dumps); returns `(pairs, dropped)`."""

    def __init__(self, source: WikipediaSource):
        super().__init__()
        self._source = source

    def expand(self, pbegin):
        if self._source.dump:
            return pbegin | "Dumps" >> ReadFiles(self._source.dump, parse_dump, self._source)
        crawled = (
            pbegin
            | "Start" >> beam.Create([None])
            | "Crawl" >> beam.ParDo(_CrawlFn(self._source)).with_outputs(DROPPED, main="pairs")
        )
        return crawled.pairs | "Spread" >> SpreadPairs(), crawled[DROPPED]


PROVENANCE = Provenance(
    hub_source="original",
    licence=(
        "Captions are text of Arabic Wikipedia articles, under CC BY-SA 4.0"
        " (https://creativecommons.org/licenses/by-sa/4.0/); each image keeps the licence of its"
        " file on Wikimedia Commons or Wikipedia (the `license` and `attribution` columns, and"
        " the file page through `page_url`)."
    ),
    citation="",
)


KIND = SourceKind(
    kind="wikipedia",
    provenance=PROVENANCE,
    config=WikipediaSource,
    reader=ReadWikipedia,
    language=GENUINE_ARABIC,
    reasons=REASONS,
    path_keys=("dump", "titles_file"),
    check=check_source,
    record_keys=(),
    wikimedia_images=True,
    profile=KindProfile(
        "wikipedia_survival",
        "wikipedia_survival",
        "wikimedia_thumb_bytes_330",
        "the WAP pairs (FORMATS §0) over the candidates of a crawl of every article",
    ),
)
