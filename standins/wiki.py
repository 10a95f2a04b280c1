"""A local MediaWiki stand-in: a real threaded HTTP server on 127.0.0.1 answering `/w/api.php`.

The Wikipedia crawl's tests and `make demo` run against it instead of ar.wikipedia.org. It
answers the three calls the crawl makes, in the `formatversion=2` shapes of the real API
(FORMATS.md §5b, §5c), and behaves as Wikimedia does where a client can go wrong:

- `action=query&list=allpages`: titles in MediaWiki's order (binary, underscored), `aplimit`
  (`max` = 500) and `apcontinue` continuation;
- `action=parse&page=T`: `{"parse": {"title", "pageid", "revid", "text", "displaytitle"}}`
  (only the `prop`s asked, as MediaWiki does), error `missingtitle` for an unknown page;
- `action=query&prop=imageinfo&titles=...`: `File:`/`Image:`/`ملف:`/`صورة:` titles normalised
  to `ملف:Name with spaces` (listed in `query.normalized`); a Commons file is `missing`,
  `known`, `imagerepository: shared` WITH imageinfo; a local file (arwiki fair use) is a normal
  page; a nonexistent one is `missing` without imageinfo. URLs are Wikimedia's
  (`upload.wikimedia.org/wikipedia/commons/<h>/<hh>/<Name>`, `/wikipedia/ar/` for local files,
  thumbs `.../thumb/<h>/<hh>/<Name>/<W>px-<Name>[.png]`); extmetadata in its real shape;
- etiquette: a request without a User-Agent, with one that names no contact (an e-mail or a
  URL) or with a generic library agent (`python-requests/2.32`) gets 403 as Wikimedia's edge
  answers it; more than 50 titles is the error `toomanyvalues`; answers are gzipped when the
  client accepts gzip; without `format=json` the answer is the HTML of `jsonfm`.

Faults a test injects (`fail(key, *faults)`) are answered before the normal answer, one per
matching request, in order: a maxlag answer (HTTP 200, `Retry-After`, `X-Database-Lag`,
`MediaWiki-API-Error: maxlag`; given only to requests that sent `maxlag`, as MediaWiki does),
429 or 503 with or without `Retry-After`, a late answer (a client timeout) or a closed
connection. Every request is logged (`log`), and the most requests answered at once is kept
(`max_in_flight`).

The wiki comes from a folder laid out like `manifests/samples/wikipedia/`
(`pages/<Title_with_underscores>.html`, served as `parse.text` as it is, and `files.json`,
a map from file name to `{"repository": "shared"|"local", "width", "height", "size", "mime",
"license", "license_url", "artist" (HTML), "credit", "non_free"}` or `{"missing": true}`),
or from dicts (`pages={title: html}`, `files={name: facts}`).

`python -m standins.wiki FOLDER [--port N]` serves a folder until killed and prints
its API URL on the first line.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import hashlib
import html
import json
import re
import threading
import time
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, quote

from standins.server import LoopbackServer, QuietHandler

MAX_TITLES = 50
ALLPAGES_MAX = 500
FILE_NAMESPACE = "ملف"
FILE_PREFIXES = frozenset({"file", "image", "ملف", "صورة"})
UPLOAD = "https://upload.wikimedia.org/wikipedia"
COMMONS_PAGE = "https://commons.wikimedia.org/wiki/File:"
# What MediaWiki leaves unencoded in article URLs (wfUrlencode).
URL_SAFE = ";@$!*(),/:"
KEYS_NOT_TITLES = frozenset({"parse", "query", "allpages", "imageinfo"})
# Library agents Wikimedia's edge refuses (User-Agent policy; FORMATS.md §6).
GENERIC_AGENT = re.compile(
    r"(python-requests|python-urllib|python-httpx|aiohttp|curl|wget|go-http-client|java"
    r"|okhttp|libwww-perl|axios|node-fetch|undici)\b",
    re.IGNORECASE,
)
CONTACT = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+|https?://|www\.", re.IGNORECASE)
UA_REFUSAL = (
    b"Please set a user-agent and respect our robot policy https://w.wiki/4wJS. "
    b"See also https://phabricator.wikimedia.org/T400119.\n"
)


class Fault(NamedTuple):
    """An answer given instead of the normal one."""

    status: int = 200
    headers: Mapping[str, str] = {}
    body: bytes = b""
    wait: float = 0.0  # seconds before answering (longer than a client's timeout: a timeout)
    hang_up: bool = False  # close the connection without answering: a connection error
    maxlag: bool = False  # a maxlag error: only given to a request that sent `maxlag`


def maxlag_fault(retry_after: int | None = 1, lag: int = 7) -> Fault:
    """MediaWiki's answer while replicas lag more than the request's `maxlag`."""
    headers = {"X-Database-Lag": str(lag), "MediaWiki-API-Error": "maxlag"}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    body = {
        "error": {
            "code": "maxlag",
            "info": f"Waiting for 10.64.48.35: {lag} seconds lagged.",
            "host": "10.64.48.35",
            "lag": lag,
            "type": "db",
        },
        "servedby": "mw-standin",
    }
    return Fault(200, headers, json.dumps(body).encode(), maxlag=True)


def status_fault(status: int, retry_after: int | None = None) -> Fault:
    """An error page from the edge: 429 (throttled), 503 (overloaded) ..."""
    headers = {"Content-Type": "text/html; charset=utf-8"}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return Fault(status, headers, f"<html><body>Error {status}</body></html>".encode())


def slow_fault(seconds: float) -> Fault:
    """The normal answer's status (an empty JSON object) after `seconds`: a client timeout."""
    return Fault(200, {"Content-Type": "application/json"}, b"{}", wait=seconds)


def hang_up_fault() -> Fault:
    """The connection closed before any answer: a client connection error."""
    return Fault(hang_up=True)


class LoggedRequest(NamedTuple):
    time: float  # time.monotonic() when the request arrived
    method: str
    params: dict[str, str]
    headers: dict[str, str]


class ApiError(Exception):
    def __init__(self, code: str, info: str):
        super().__init__(f"{code}: {info}")
        self.code = code
        self.info = info


def _ucfirst(text: str) -> str:
    return text[:1].upper() + text[1:]


def normalize_title(title: str) -> str:
    """A title as MediaWiki names it: underscores as spaces, runs of spaces collapsed, the first
    letter upper case, any file-namespace alias (`File:`, `Image:`, `صورة:`) made `ملف:`."""
    text = " ".join(title.replace("_", " ").split())
    prefix, sep, rest = text.partition(":")
    if sep and prefix.strip().lower() in FILE_PREFIXES:
        name = rest.strip()
        return f"{FILE_NAMESPACE}:{_ucfirst(name)}" if name else ""
    return _ucfirst(text)


def normalize_name(name: str) -> str:
    """A file name as MediaWiki names it: spaces, first letter upper case, no namespace."""
    return _ucfirst(" ".join(name.replace("_", " ").split()))


def _file_name(title: str) -> str | None:
    """The file name of a normalised `ملف:` title, None for a title in another namespace."""
    prefix, sep, rest = title.partition(":")
    return rest if sep and prefix == FILE_NAMESPACE else None


def _sort_key(title: str) -> bytes:
    return title.replace(" ", "_").encode()


def _stable_id(text: str) -> int:
    return zlib.crc32(text.encode()) % 10_000_000 + 1


def _license_code(short_name: str) -> str:
    if short_name.strip().lower() in ("public domain", "pd"):
        return "pd"
    return "-".join(short_name.lower().split())


def _meta(value: Any, source: str = "commons-desc-page") -> dict[str, Any]:
    return {"value": value, "source": source, "hidden": ""}


class WikiStandIn(LoopbackServer):
    """`with WikiStandIn(folder) as wiki: MediaWikiClient(wiki.api_url, ...)`.

    `host`: the wiki's public host, for `descriptionurl` of local files. `delay`: seconds
    added before every answer (so tests can see requests overlap). `port`: 0 for any free one.
    """

    def __init__(
        self,
        folder: str | Path | None = None,
        *,
        pages: Mapping[str, str] | None = None,
        files: Mapping[str, Mapping[str, Any]] | None = None,
        host: str = "ar.wikipedia.org",
        delay: float = 0.0,
        port: int = 0,
    ):
        super().__init__(_Handler, port)
        self.host = host
        self.delay = delay
        self.pages: dict[str, str] = {}
        self.files: dict[str, Mapping[str, Any]] = {}
        if folder is not None:
            folder = Path(folder)
            for path in sorted((folder / "pages").glob("*.html")):
                self.pages[normalize_title(path.stem)] = path.read_text(encoding="utf-8")
            facts_file = folder / "files.json"
            if facts_file.exists():
                for name, facts in json.loads(facts_file.read_text(encoding="utf-8")).items():
                    self.files[normalize_name(name)] = facts
        for title, text in (pages or {}).items():
            self.pages[normalize_title(title)] = text
        for name, facts in (files or {}).items():
            self.files[normalize_name(name)] = facts
        self._titles = sorted(self.pages, key=_sort_key)
        self.log: list[LoggedRequest] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._faults: dict[str, collections.deque[Fault]] = {}
        self._lock = threading.Lock()

    @property
    def api_url(self) -> str:
        return self.url("/w/api.php")

    # ------------------------------------------------------------------------ faults and log

    def fail(self, key: str, *faults: Fault) -> None:
        """Answer the next `len(faults)` requests matching `key` with `faults`, in order.
        `key` is an action (`parse`, `query`), a module (`allpages`, `imageinfo`) or a title
        (`القاهرة`, `File:X.jpg`: a page parsed or among `titles`)."""
        key = key if key in KEYS_NOT_TITLES else normalize_title(key)
        with self._lock:
            self._faults.setdefault(key, collections.deque()).extend(faults)

    def requests_for(self, key: str) -> list[LoggedRequest]:
        """The logged requests matching `key` (as in `fail`)."""
        key = key if key in KEYS_NOT_TITLES else normalize_title(key)
        with self._lock:
            return [r for r in self.log if key in self._keys(r.params)]

    @staticmethod
    def _keys(params: Mapping[str, str]) -> list[str]:
        """What a request can be matched by, most specific first."""
        keys = []
        if "page" in params:
            keys.append(normalize_title(params["page"]))
        keys += [normalize_title(t) for t in params.get("titles", "").split("|") if t]
        if params.get("list"):
            keys.append(params["list"])
        keys += [p for p in params.get("prop", "").split("|") if p]
        keys.append(params.get("action", ""))
        return keys

    def _take_fault(self, params: Mapping[str, str]) -> Fault | None:
        with self._lock:
            for key in self._keys(params):
                queue = self._faults.get(key)
                if queue:
                    return queue.popleft()
        return None

    # ------------------------------------------------------------------------ the API

    def answer(self, params: Mapping[str, str]) -> dict[str, Any]:
        """The JSON answer to an API request with `params`; raises `ApiError`."""
        action = params.get("action", "main")
        if action == "parse":
            return {"parse": self._parse(params)}
        if action == "query":
            query: dict[str, Any] = {}
            answer: dict[str, Any] = {"batchcomplete": True}
            if params.get("list") == "allpages":
                query["allpages"], more = self._allpages(params)
                if more:
                    answer["continue"] = {"apcontinue": more, "continue": "-||"}
            elif params.get("list"):
                raise ApiError("badvalue", f'Unrecognized value for parameter "list": {params}')
            if "titles" in params:
                normalized, query["pages"] = self._pages(params)
                if normalized:
                    query["normalized"] = normalized
            answer["query"] = query
            return answer
        raise ApiError("badvalue", f'Unrecognized value for parameter "action": {action}.')

    def _parse(self, params: Mapping[str, str]) -> dict[str, Any]:
        if not params.get("page"):
            raise ApiError("missingparam", 'The "page" parameter must be set.')
        title = normalize_title(params["page"])
        if title not in self.pages:
            raise ApiError("missingtitle", "The page you specified doesn't exist.")
        text = self.pages[title]
        props = set(params.get("prop", "text|revid|displaytitle").split("|"))
        parsed: dict[str, Any] = {"title": title, "pageid": _stable_id(title)}
        if "revid" in props:
            parsed["revid"] = _stable_id(title + "\n" + text) * 10
        if "text" in props:
            parsed["text"] = text
        if "displaytitle" in props:
            parsed["displaytitle"] = f'<span class="mw-page-title-main">{html.escape(title)}</span>'
        return parsed

    def _allpages(self, params: Mapping[str, str]) -> tuple[list[dict[str, Any]], str | None]:
        raw_limit = params.get("aplimit", "10")
        if raw_limit == "max":
            limit = ALLPAGES_MAX
        elif raw_limit.isdigit():
            limit = min(max(int(raw_limit), 1), ALLPAGES_MAX)
        else:
            raise ApiError("badinteger", f'Invalid value "{raw_limit}" for integer parameter.')
        if params.get("apnamespace", "0") != "0":
            return [], None
        start = params.get("apcontinue") or params.get("apfrom") or ""
        key = _sort_key(normalize_title(start)) if start else b""
        titles = [t for t in self._titles if _sort_key(t) >= key]
        listed = [{"pageid": _stable_id(t), "ns": 0, "title": t} for t in titles[:limit]]
        more = titles[limit].replace(" ", "_") if len(titles) > limit else None
        return listed, more

    def _pages(self, params: Mapping[str, str]) -> tuple[list[dict[str, str]], list[dict]]:
        asked = list(dict.fromkeys(t for t in params["titles"].split("|")))
        if len(asked) > MAX_TITLES:
            raise ApiError(
                "toomanyvalues",
                f'Too many values supplied for parameter "titles". The limit is {MAX_TITLES}.',
            )
        normalized, pages = [], []
        for title in asked:
            norm = normalize_title(title)
            if not norm:
                pages.append({"title": title, "invalidreason": "empty title", "invalid": True})
                continue
            if norm != title:
                normalized.append({"fromencoded": False, "from": title, "to": norm})
            pages.append(self._page_entry(norm, params))
        return normalized, pages

    def _page_entry(self, title: str, params: Mapping[str, str]) -> dict[str, Any]:
        name = _file_name(title)
        if name is None:
            if title in self.pages:
                return {"pageid": _stable_id(title), "ns": 0, "title": title}
            return {"ns": 0, "title": title, "missing": True}
        facts = self.files.get(name)
        if facts is None or facts.get("missing"):
            return {"ns": 6, "title": title, "missing": True, "imagerepository": ""}
        entry: dict[str, Any] = {"ns": 6, "title": title}
        if facts.get("repository", "shared") == "local":
            entry = {"pageid": _stable_id(title), **entry, "imagerepository": "local"}
        else:
            entry.update(missing=True, known=True, imagerepository="shared")
        if "imageinfo" in params.get("prop", "").split("|"):
            entry["imageinfo"] = [self._imageinfo(name, facts, params)]
        return entry

    def _imageinfo(
        self, name: str, facts: Mapping[str, Any], params: Mapping[str, str]
    ) -> dict[str, Any]:
        props = set(params.get("iiprop", "timestamp|user").split("|"))
        local = facts.get("repository", "shared") == "local"
        width, height = int(facts.get("width", 0)), int(facts.get("height", 0))
        underscored = name.replace(" ", "_")
        digest = hashlib.md5(underscored.encode()).hexdigest()
        encoded = quote(underscored, safe="")
        base = f"{UPLOAD}/{'ar' if local else 'commons'}"
        info: dict[str, Any] = {}
        if "size" in props:
            info.update(size=int(facts.get("size", 0)), width=width, height=height)
        if "url" in props:
            thumb = params.get("iiurlwidth", "")
            if thumb.isdigit() and int(thumb) > 0:
                info.update(self._thumb(base, digest, encoded, int(thumb), width, height))
            info["url"] = f"{base}/{digest[0]}/{digest[:2]}/{encoded}"
            if local:
                page = quote(f"{FILE_NAMESPACE}:{underscored}", safe=URL_SAFE)
                info["descriptionurl"] = f"https://{self.host}/wiki/{page}"
            else:
                info["descriptionurl"] = COMMONS_PAGE + quote(underscored, safe=URL_SAFE)
        if "mime" in props:
            info["mime"] = facts.get("mime", "image/jpeg")
        if "extmetadata" in props:
            info["extmetadata"] = self._extmetadata(name, facts)
        return info

    @staticmethod
    def _thumb(
        base: str, digest: str, encoded: str, want: int, width: int, height: int
    ) -> dict[str, Any]:
        """MediaWiki's thumb of width `want`: the original itself when it is not larger (bitmaps
        are never scaled up), a rendered PNG for an SVG at any width."""
        svg = encoded.lower().endswith(".svg")
        if want >= width and not svg:
            original = f"{base}/{digest[0]}/{digest[:2]}/{encoded}"
            return {"thumburl": original, "thumbwidth": width, "thumbheight": height}
        suffix = ".png" if svg else ""
        url = f"{base}/thumb/{digest[0]}/{digest[:2]}/{encoded}/{want}px-{encoded}{suffix}"
        thumb_height = round(height * want / width) if width else 0
        return {"thumburl": url, "thumbwidth": want, "thumbheight": thumb_height}

    @staticmethod
    def _extmetadata(name: str, facts: Mapping[str, Any]) -> dict[str, Any]:
        meta = {
            "DateTime": _meta("2020-01-01 00:00:00", "mediawiki-metadata"),
            "ObjectName": _meta(name.rsplit(".", 1)[0]),
        }
        short = facts.get("license")
        if short:
            meta["LicenseShortName"] = _meta(short)
            meta["License"] = _meta(facts.get("license_code") or _license_code(short))
            meta["UsageTerms"] = _meta(short)
        if facts.get("license_url"):
            meta["LicenseUrl"] = _meta(facts["license_url"])
        if facts.get("artist"):
            meta["Artist"] = _meta(facts["artist"])
        if facts.get("credit"):
            meta["Credit"] = _meta(facts["credit"])
        if facts.get("non_free"):
            meta["NonFree"] = _meta("true")
        return meta

    # ------------------------------------------------------------------------ HTTP

    def _respond(
        self, method: str, params: dict[str, str], headers: dict[str, str]
    ) -> Fault | tuple[int, dict[str, str], bytes]:
        """The fault or (status, headers, body) for one request to `api.php`."""
        agent = headers.get("User-Agent", "").strip()
        if not agent or GENERIC_AGENT.match(agent) or not CONTACT.search(agent):
            return 403, {"Content-Type": "text/plain; charset=utf-8"}, UA_REFUSAL
        fault = self._take_fault(params)
        if fault is not None and not (fault.maxlag and not params.get("maxlag")):
            return fault
        try:
            answer = self.answer(params)
            extra: dict[str, str] = {}
        except ApiError as err:
            docref = "See https://ar.wikipedia.org/w/api.php for API usage."
            answer = {"error": {"code": err.code, "info": err.info, "docref": docref}}
            extra = {"MediaWiki-API-Error": err.code}
        answer["servedby"] = "mw-standin"
        text = json.dumps(answer, ensure_ascii=False)
        if params.get("format") != "json":  # MediaWiki's default, jsonfm: JSON shown as HTML
            page = f"<!DOCTYPE html><html><body><pre>{html.escape(text)}</pre></body></html>"
            return 200, {"Content-Type": "text/html; charset=utf-8", **extra}, page.encode()
        return 200, {"Content-Type": "application/json; charset=utf-8", **extra}, text.encode()


class _Handler(QuietHandler):
    server: WikiStandIn

    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        self._serve(parse_qsl(self.path.partition("?")[2], keep_blank_values=True))

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace")
        query = parse_qsl(self.path.partition("?")[2], keep_blank_values=True)
        self._serve(query + parse_qsl(body, keep_blank_values=True))

    def _serve(self, pairs: list[tuple[str, str]]) -> None:
        wiki = self.server
        params = dict(pairs)
        headers = dict(self.headers.items())
        with wiki._lock:
            wiki.log.append(LoggedRequest(time.monotonic(), self.command, params, headers))
            wiki.in_flight += 1
            wiki.max_in_flight = max(wiki.max_in_flight, wiki.in_flight)
        try:
            if wiki.delay:
                time.sleep(wiki.delay)
            if self.path.partition("?")[0] != "/w/api.php":
                self._send(404, {"Content-Type": "text/plain"}, b"not found")
                return
            reply = wiki._respond(self.command, params, headers)
            if isinstance(reply, Fault):
                self._fault(reply)
            else:
                self._send(*reply)
        finally:
            with wiki._lock:
                wiki.in_flight -= 1

    def _fault(self, fault: Fault) -> None:
        if fault.wait:
            time.sleep(fault.wait)
        if fault.hang_up:
            self.close_connection = True
            return
        self._send(fault.status, dict(fault.headers), fault.body)

    def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
        accepted = self.headers.get("Accept-Encoding", "")
        if body and "gzip" in [e.split(";")[0].strip() for e in accepted.split(",")]:
            body = gzip.compress(body)
            headers = {**headers, "Content-Encoding": "gzip", "Vary": "Accept-Encoding"}
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("folder", type=Path, help="pages/*.html and files.json")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    args = parser.parse_args(argv)
    wiki = WikiStandIn(args.folder, port=args.port).start()
    print(wiki.api_url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        wiki.stop()


if __name__ == "__main__":
    main()
