"""A client for the MediaWiki Action API (`api.php`) that keeps Wikimedia's API etiquette.

The Wikipedia crawl reads titles (`list=allpages`), article HTML (`action=parse`) and the
facts of the files an article shows (`prop=imageinfo`: original and thumb URLs, size, MIME
type, licence, author) through one `MediaWikiClient`. Etiquette (FORMATS.md §6), all of it
here so no caller can forget it:

- every request carries the configured User-Agent, `Accept-Encoding: gzip`, `format=json`,
  `formatversion=2` and `maxlag=<maxlag>`;
- at most `concurrency` requests in flight and at most `requests_per_second` request starts
  (the client talks to one host, so both bounds are per host); the client is thread-safe;
- a `maxlag` error (HTTP 200, `Retry-After`), 429, 5xx, timeouts and connection errors are
  retried by one loop here, not by urllib3's `Retry`, which cannot see a maxlag error inside a
  200 answer. A wait is the server's `Retry-After` when given (at least 5 s for maxlag without
  it), else `backoff * 2**attempt`, capped by `max_wait`, and it holds back every thread of the
  client, since a lagged or throttling server wants the whole client to slow down.

Failures raise `MediaWikiError`, whose `reason` is a snake_case drop reason for the crawl to
count: `http_<status>`, `maxlag`, `timeout`, `connection_error`, `bad_response` (not JSON, or
not the expected shape), `api_<code>` (any other Action API error, e.g. `api_missingtitle`),
`bad_url` (an `api` requests cannot use: a configuration error, never retried).
After `retries` retries the reason is the last failure's.

The session, the timeouts, the whole-call deadline and the reading of `Retry-After` are
`pipeline.http`'s, as the image fetcher's are: `timeout` bounds connecting and each wait for
bytes, and a whole call (one attempt: connecting, the answer's headers and body) ends after
`CALL_TIMEOUTS` times it however slowly the server trickles, a `timeout` retried as any. The
address guard is not applied: `api` is the manifest's own endpoint, not an address a record
supplied.

The answer parsers (`page_from_answer`, `file_infos_from_answer`, `titles_from_answer`) are
pure functions that accept both `formatversion=2` and the older `formatversion=1` shapes.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import quote, urlsplit, urlunsplit

import requests
from bs4 import BeautifulSoup, MarkupResemblesLocatorWarning

from pipeline import http

# Titles per `titles=` parameter for a client without the apihighlimits right (bots get 500).
MAX_TITLES = 50
# What MediaWiki answers to `aplimit=max` for a client without apihighlimits.
ALLPAGES_MAX = 500
# The least wait after a maxlag error that came without Retry-After (Manual:Maxlag_parameter).
MAXLAG_MIN_WAIT = 5.0
# A whole call (one attempt) ends after this many `timeout`s, a trickle included.
CALL_TIMEOUTS = 4
# Statuses that mean "later", retried with Retry-After or backoff.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# Characters that cannot be in a title: such a name is answered None without a request.
INVALID_TITLE_CHARS = frozenset("#<>[]|{}")
# Characters wfUrlencode leaves as they are in article URLs (MediaWiki's GlobalFunctions.php).
URL_SAFE = ";@$!*(),/:"


class MediaWikiError(Exception):
    """An API call that failed for good; `reason` is its snake_case drop reason."""

    def __init__(self, reason: str, detail: str | None = None):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class Page(NamedTuple):
    """One article as `action=parse` renders it."""

    title: str  # as the wiki names it (spaces; the redirect's target when T redirects)
    page_id: int
    revision: int
    html: str  # the parser output fragment (`div.mw-parser-output`), edit links left out
    url: str  # the article's address: <scheme>://<api host>/wiki/<Title_underscored, encoded>


class FileInfo(NamedTuple):
    """The facts of one file (FORMATS.md §5c) a pair needs: where to fetch it, what it is,
    under which licence and by whom."""

    name: str  # as asked (no namespace)
    url: str  # the original, query string stripped
    thumb_url: str | None  # the thumb for `thumb_width`, query stripped; None when not asked
    width: int
    height: int
    size: int | None  # bytes
    mime: str
    license: str | None  # extmetadata LicenseShortName as text
    license_url: str | None  # extmetadata LicenseUrl
    attribution: str | None  # extmetadata Artist as text, else Credit
    non_free: bool  # extmetadata NonFree set and truthy (arwiki's fair-use files)
    description_url: str | None  # the file's description page


# ---------------------------------------------------------------------------- answer parsers


def html_to_text(value: Any) -> str | None:
    """Plain text of an extmetadata HTML value: tags dropped, entities decoded, `<br>` a space,
    whitespace collapsed; None when nothing is left."""
    if value is None:
        return None
    value = str(value)
    if "<" in value or "&" in value:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MarkupResemblesLocatorWarning)
            soup = BeautifulSoup(value, "lxml")
        for br in soup.find_all("br"):
            br.replace_with(" ")
        value = soup.get_text()
    text = " ".join(value.split())
    return text or None


def strip_query(url: str) -> str:
    """`url` without its query string and fragment (Wikimedia appends `?utm_source=...`)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def article_url(api: str, title: str) -> str:
    """The article address of `title` on the wiki whose API is `api`, encoded as MediaWiki
    encodes it (`/wiki/%D9%85%D8%B5%D8%B1`, `Python_(language)`)."""
    parts = urlsplit(api)
    path = "/wiki/" + quote(title.replace(" ", "_"), safe=URL_SAFE)
    return urlunsplit((parts.scheme or "https", parts.netloc, path, "", ""))


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("", "0", "false", "no")
    return bool(value)


def _meta(extmetadata: Mapping[str, Any], key: str) -> Any:
    entry = extmetadata.get(key)
    return entry.get("value") if isinstance(entry, Mapping) else None


def _error_of(answer: Mapping[str, Any]) -> MediaWikiError | None:
    error = answer.get("error")
    if error is None:
        return None
    if not isinstance(error, Mapping):
        return MediaWikiError("bad_response", f"error is {type(error).__name__}")
    code = str(error.get("code") or "unknown")
    info = error.get("info") or error.get("*")
    return MediaWikiError(f"api_{code}", str(info)[:300] if info else None)


def _raise_error(answer: Any) -> Mapping[str, Any]:
    if not isinstance(answer, Mapping):
        raise MediaWikiError("bad_response", f"the answer is a {type(answer).__name__}")
    error = _error_of(answer)
    if error is not None:
        raise error
    return answer


def titles_from_answer(answer: Any) -> tuple[list[str], dict[str, str] | None]:
    """The titles of one `list=allpages` answer and its `continue` parameters (None: done)."""
    answer = _raise_error(answer)
    try:
        titles = [str(p["title"]) for p in answer["query"]["allpages"]]
    except (KeyError, TypeError) as err:
        raise MediaWikiError("bad_response", f"no query.allpages[].title: {err!r}") from None
    more = answer.get("continue")
    if more is not None and not isinstance(more, Mapping):
        raise MediaWikiError("bad_response", "continue is not an object")
    return titles, ({str(k): str(v) for k, v in more.items()} if more else None)


def page_from_answer(answer: Any, api: str) -> Page:
    """The `Page` in one `action=parse` answer (`parse.text` is a string in formatversion 2,
    `{"*": html}` in formatversion 1)."""
    answer = _raise_error(answer)
    try:
        parse = answer["parse"]
        text = parse["text"]
        if isinstance(text, Mapping):
            text = text["*"]
        title = str(parse["title"])
        page = Page(title, int(parse["pageid"]), int(parse["revid"]), str(text), "")
    except (KeyError, TypeError, ValueError) as err:
        raise MediaWikiError("bad_response", f"parse answer lacks {err!r}") from None
    return page._replace(url=article_url(api, title))


def _file_info(name: str, page: Mapping[str, Any], thumb_width: int | None) -> FileInfo | None:
    infos = page.get("imageinfo")
    if not isinstance(infos, list) or not infos or not isinstance(infos[0], Mapping):
        return None  # nonexistent (a Commons file is "missing" too, but has imageinfo)
    info = infos[0]
    if not info.get("url"):
        return None  # a deleted or suppressed version ("filehidden")
    extmetadata = info.get("extmetadata")
    if not isinstance(extmetadata, Mapping):
        extmetadata = {}
    thumb = info.get("thumburl") if thumb_width else None
    size = info.get("size")
    return FileInfo(
        name=name,
        url=strip_query(str(info["url"])),
        thumb_url=strip_query(str(thumb)) if thumb else None,
        width=int(info.get("width") or 0),
        height=int(info.get("height") or 0),
        size=int(size) if size is not None else None,
        mime=str(info.get("mime") or ""),
        license=html_to_text(_meta(extmetadata, "LicenseShortName")),
        license_url=html_to_text(_meta(extmetadata, "LicenseUrl")),
        attribution=(
            html_to_text(_meta(extmetadata, "Artist")) or html_to_text(_meta(extmetadata, "Credit"))
        ),
        non_free=_truthy(_meta(extmetadata, "NonFree")),
        description_url=info.get("descriptionurl") or None,
    )


def file_infos_from_answer(
    answer: Any, titles: Mapping[str, str], thumb_width: int | None = None
) -> dict[str, FileInfo | None]:
    """The files of one `prop=imageinfo` answer, keyed by the names asked.

    `titles` maps each title sent (`File:X_y.jpg`) to the name asked (`X_y.jpg`); the answer
    names pages by their normalised titles (`ملف:X y.jpg`), mapped back through
    `query.normalized`. A page with imageinfo is a file, whatever `missing` says (a Commons file
    seen from arwiki is `missing`, `known`, `imagerepository: shared`); one without is None.
    `query.pages` is a list in formatversion 2 and a map keyed by page id (`"-1"` for missing
    pages, `"missing": ""`) in formatversion 1.
    """
    answer = _raise_error(answer)
    query = answer.get("query")
    if not isinstance(query, Mapping):
        raise MediaWikiError("bad_response", "no query object")
    pages = query.get("pages", [])
    if isinstance(pages, Mapping):
        pages = list(pages.values())
    if not isinstance(pages, list):
        raise MediaWikiError("bad_response", "query.pages is neither a list nor a map")
    asked_as: dict[str, str] = {}  # title in the answer -> title sent
    for entry in query.get("normalized") or []:
        if isinstance(entry, Mapping) and "from" in entry and "to" in entry:
            asked_as[str(entry["to"])] = str(entry["from"])
    found: dict[str, FileInfo | None] = {}
    for page in pages:
        if not isinstance(page, Mapping) or "title" not in page:
            raise MediaWikiError("bad_response", "a page without a title")
        title = str(page["title"])
        name = titles.get(asked_as.get(title, title))
        if name is None:
            continue  # a page not asked for
        try:
            found[name] = _file_info(name, page, thumb_width)
        except (TypeError, ValueError) as err:
            raise MediaWikiError("bad_response", f"imageinfo of {title!r}: {err!r}") from None
    return {name: found.get(name) for name in titles.values()}


# ---------------------------------------------------------------------------- the client


class _Again(Exception):
    """One attempt failed in a way worth retrying, after `wait` seconds (None: backoff)."""

    def __init__(self, reason: str, detail: str | None, wait: float | None):
        super().__init__(reason)
        self.reason = reason
        self.detail = detail
        self.wait = wait


class _HostGate:
    """The per-host bounds: `concurrency` requests in flight (a semaphore) and request starts
    at least `1 / requests_per_second` apart, never before a hold-off set after a maxlag, 429
    or 5xx answer."""

    def __init__(self, concurrency: int, requests_per_second: float):
        self.slots = threading.BoundedSemaphore(concurrency)
        self._interval = 1.0 / requests_per_second if requests_per_second > 0 else 0.0
        self._lock = threading.Lock()
        self._next_start = 0.0  # time.monotonic() of the earliest next start

    def reserve(self) -> float:
        """Seconds to wait before starting the next request (the start is booked now)."""
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next_start)
            self._next_start = start + self._interval
            return start - now

    def hold_off(self, seconds: float) -> None:
        with self._lock:
            self._next_start = max(self._next_start, time.monotonic() + seconds)


@dataclass(frozen=True)
class Etiquette:
    """How politely the client calls one wiki (FORMATS.md §6). The Wikipedia source's manifest
    keys of the same names are these fields (`WikipediaSource` extends this class).

    `maxlag`: seconds of replication lag at which the server should refuse (0: not sent).
    `requests_per_second`: request starts per second (0: no limit). `concurrency`: requests in
    flight at once. `retries`: retries after the first attempt. `backoff`: seconds; the n-th
    retry (n from 0) waits `backoff * 2**n` when the server gives no Retry-After. `max_wait`: the
    cap on any one wait. `timeout`: seconds to connect and between bytes read; a whole call
    (connecting, the answer's headers and body) ends after `CALL_TIMEOUTS` times it.
    """

    maxlag: int = 5
    requests_per_second: float = 5.0
    concurrency: int = 1
    retries: int = 5
    backoff: float = 1.0
    max_wait: float = 300.0
    timeout: float = 30.0

    @classmethod
    def of(cls, settings: Any) -> Etiquette:
        """The etiquette fields of `settings` (a `WikipediaSource`), as an `Etiquette`."""
        return cls(**{f.name: getattr(settings, f.name) for f in dataclasses.fields(cls)})


class MediaWikiClient:
    """Calls one wiki's `api.php` politely; safe to share among threads.

    `api`: the endpoint (`https://ar.wikipedia.org/w/api.php`). `user_agent`: sent on every
    request; Wikimedia wants `<client>/<version> (<contact URL or e-mail>) <library>/<version>`
    and answers 403 to generic library agents. `etiquette`: the limits, waits and retries
    (`Etiquette`). `sleep`: how to wait (tests record the waits through it).

    `requests_made` counts every HTTP request sent, retries included; `waited` sums the seconds
    slept for Retry-After, backoff and the rate limit.
    """

    def __init__(
        self,
        api: str,
        user_agent: str,
        etiquette: Etiquette = Etiquette(),
        *,
        sleep: Callable[[float], None] = time.sleep,
    ):
        e = etiquette
        if not user_agent or not user_agent.strip():
            raise ValueError("a User-Agent is required (Wikimedia's User-Agent policy)")
        if e.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {e.concurrency}")
        if e.retries < 0 or e.requests_per_second < 0 or e.backoff < 0 or e.max_wait < 0:
            raise ValueError("retries, requests_per_second, backoff and max_wait must be >= 0")
        self.api = api
        self.user_agent = user_agent.strip()
        self.etiquette = e
        self.requests_made = 0
        self.waited = 0.0
        self._sleep = sleep
        self._gate = _HostGate(e.concurrency, e.requests_per_second)
        self._count_lock = threading.Lock()
        self._params = {"format": "json", "formatversion": "2"}
        if e.maxlag:
            self._params["maxlag"] = str(e.maxlag)
        # No urllib3 retries (max_retries=0): every retry goes through `_call`'s loop.
        self.session = http.session(
            {
                "User-Agent": self.user_agent,
                "Accept-Encoding": "gzip",
                "Accept": "application/json",
            },
            http.BoundedAdapter(pool_connections=1, pool_maxsize=e.concurrency, max_retries=0),
        )

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> MediaWikiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------ API calls

    def all_titles(self, limit: int | None = None, namespace: int = 0) -> Iterator[str]:
        """Titles of the pages in `namespace` in the wiki's order (`list=allpages`), following
        `continue` until the list ends or `limit` titles were given."""
        if limit is not None and limit <= 0:
            return
        aplimit = str(limit) if limit is not None and limit < ALLPAGES_MAX else "max"
        params = {
            "action": "query",
            "list": "allpages",
            "apnamespace": str(namespace),
            "aplimit": aplimit,
        }
        given = 0
        more: dict[str, str] = {}
        while True:
            titles, next_more = titles_from_answer(self._call({**params, **more}))
            for title in titles:
                yield title
                given += 1
                if limit is not None and given >= limit:
                    return
            if not next_more:
                return
            if next_more == more:
                raise MediaWikiError("bad_response", f"continue did not advance: {more}")
            more = next_more

    def page(self, title: str) -> Page:
        """The rendered article `title`, redirects followed (`action=parse`)."""
        answer = self._call(
            {
                "action": "parse",
                "page": title,
                "prop": "text|revid|displaytitle",
                "disableeditsection": "1",
                "redirects": "1",
            }
        )
        return page_from_answer(answer, self.api)

    def file_info(
        self, names: Sequence[str], thumb_width: int | None = None
    ) -> dict[str, FileInfo | None]:
        """Facts of the files `names` (without namespace), `MAX_TITLES` per request; a name
        that does not exist, or cannot be a title, maps to None."""
        result: dict[str, FileInfo | None] = {}
        asked: list[str] = []
        for name in dict.fromkeys(names):
            if not name.strip() or any(c in INVALID_TITLE_CHARS or ord(c) < 32 for c in name):
                result[name] = None
            else:
                asked.append(name)
        params = {"action": "query", "prop": "imageinfo", "iiprop": "url|size|mime|extmetadata"}
        if thumb_width:
            params["iiurlwidth"] = str(thumb_width)
        for start in range(0, len(asked), MAX_TITLES):
            titles = {f"File:{name}": name for name in asked[start : start + MAX_TITLES]}
            answer = self._call({**params, "titles": "|".join(titles)})
            result.update(file_infos_from_answer(answer, titles, thumb_width))
        return {name: result[name] for name in dict.fromkeys(names)}

    # ------------------------------------------------------------------------ the request loop

    def _call(self, params: Mapping[str, str]) -> Any:
        """The decoded JSON answer to one API call, retried as the module docstring says."""
        query = {**params, **self._params}
        e = self.etiquette
        for attempt in range(e.retries + 1):
            try:
                return self._attempt(query)
            except _Again as again:
                if attempt == e.retries:
                    detail = f"after {e.retries} retries: {again.detail or again.reason}"
                    raise MediaWikiError(again.reason, detail) from None
                wait = again.wait
                if wait is None:
                    wait = e.backoff * 2**attempt
                if again.reason == "maxlag" and again.wait is None:
                    wait = max(wait, MAXLAG_MIN_WAIT)
                self._gate.hold_off(min(wait, e.max_wait))
        raise AssertionError("unreachable")

    def _get(self, query: Mapping[str, str]) -> requests.Response:
        """The answer to one request, read whole within `CALL_TIMEOUTS` timeouts."""
        timeout = self.etiquette.timeout
        limit = timeout * CALL_TIMEOUTS
        with http.bounded(limit) as deadline:
            try:
                response = self.session.get(
                    self.api, params=query, timeout=http.timeouts(timeout, timeout)
                )
            except requests.exceptions.Timeout as err:
                raise _Again("timeout", type(err).__name__, None) from None
            except requests.exceptions.RequestException as err:
                if deadline.passed:  # the watchdog cut the connection
                    raise _Again("timeout", f"the call ran past {limit:g}s", None) from None
                if isinstance(err, requests.exceptions.ContentDecodingError):
                    raise MediaWikiError("bad_response", f"{err}"[:300]) from None
                if isinstance(
                    err, (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema)
                ):
                    raise MediaWikiError("bad_url", f"{err}"[:300]) from None
                detail = f"{type(err).__name__}: {err}"[:300]
                raise _Again("connection_error", detail, None) from None
            if deadline.passed:  # the answer may have been cut short
                response.close()
                raise _Again("timeout", f"the call ran past {limit:g}s", None)
        return response

    def _attempt(self, query: Mapping[str, str]) -> Any:
        with self._gate.slots:
            wait = self._gate.reserve()
            if wait > 0:
                self._sleep(wait)
                with self._count_lock:
                    self.waited += wait
            with self._count_lock:
                self.requests_made += 1
            response = self._get(query)
        with response:
            status = response.status_code
            if status in RETRY_STATUSES:
                raise _Again(f"http_{status}", response.reason, http.retry_after(response))
            if status != 200:
                raise MediaWikiError(f"http_{status}", f"{response.reason}: {response.text[:200]}")
            try:
                answer = response.json()
            except ValueError:
                kind = response.headers.get("Content-Type", "?")
                raise MediaWikiError("bad_response", f"not JSON ({kind})") from None
        if isinstance(answer, Mapping):
            error = answer.get("error")
            if isinstance(error, Mapping) and error.get("code") == "maxlag":
                raise _Again(
                    "maxlag", str(error.get("info") or "")[:300], http.retry_after(response)
                )
        return answer
