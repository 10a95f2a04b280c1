"""A stand-in for upload.wikimedia.org that keeps today's rules, for tests, the demo and the
politeness benchmark: a real threaded HTTP server on 127.0.0.1 (or `UploadRules` inside
another server, as the demo's image host uses it under `/wikimedia/`).

What it does, as the live host does (FORMATS.md §5c):

- an original (`/wikipedia/commons/a/ab/Name.jpg`) is the picture `picture(path)` draws;
- a thumbnail (`/wikipedia/commons/thumb/a/ab/Name.jpg/330px-Name.jpg`) is that picture scaled
  to the width asked, JPEG (PNG when the thumbnail's name ends `.png`); a width that is not a
  standard step is refused with the permanent 429 (a body pointing at the steps, no
  Retry-After); a width at or above the original's is refused with 400, as a bitmap is never
  scaled up;
- more than `max_in_flight` requests at once: the ones beyond are answered 429, every other one
  with `Retry-After: 1` and the rest without (the robot policy's "at most 2 in flight").

It records every path asked (`log`), the most requests it ever had in flight (`max_seen`),
and how many it refused for each cause (`refused`).
"""

from __future__ import annotations

import contextlib
import io
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import NamedTuple

from PIL import Image

from pipeline import wikimedia

STEPS_BODY = (
    b"<html><body><h1>Use thumbnail steps</h1><p>This thumbnail width is not served. Use one "
    b"of the standard thumbnail sizes: https://w.wiki/GHai</p></body></html>"
)
BUSY_BODY = (
    b"<html><body><h1>Too many requests</h1><p>Please respect our robot policy "
    b"https://w.wiki/4wJS and keep at most 2 requests in flight.</p></body></html>"
)
NOT_SCALED_BODY = (
    b"<html><body><h1>Error generating thumbnail</h1><p>Image was not scaled, is the requested "
    b"width bigger than the source?</p></body></html>"
)


class Answer(NamedTuple):
    status: int
    headers: dict[str, str]
    body: bytes


class UploadRules:
    """The live host's answers for paths under its root (`/wikipedia/...`), and its in-flight
    rule; thread-safe. Answer every request inside `request(path)`."""

    def __init__(self, picture: Callable[[str], bytes], max_in_flight: int | None = 2):
        self.picture = picture
        self.max_in_flight = max_in_flight
        self.log: list[str] = []
        self.refused: Counter = Counter()
        self.in_flight = 0
        self.max_seen = 0
        self._busy = 0
        self._lock = threading.Lock()

    def enter(self, path: str) -> Answer | None:
        """Counts a request in; its 429 when it is one too many."""
        with self._lock:
            self.log.append(path)
            self.in_flight += 1
            self.max_seen = max(self.max_seen, self.in_flight)
            if self.max_in_flight is None or self.in_flight <= self.max_in_flight:
                return None
            self.refused["busy"] += 1
            self._busy += 1
            with_retry_after = self._busy % 2 == 1
        headers = {"Content-Type": "text/html; charset=utf-8"}
        if with_retry_after:
            headers["Retry-After"] = "1"
        return Answer(429, headers, BUSY_BODY)

    def leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    @contextlib.contextmanager
    def request(self, path: str) -> Iterator[Answer | None]:
        """Counts the request in flight while the block answers it; gives its 429 when it is
        one too many (None: answer it)."""
        refused = self.enter(path)
        try:
            yield refused
        finally:
            self.leave()

    def answer(self, path: str) -> Answer:
        url = "https://upload.wikimedia.org" + path
        file = wikimedia.parse_upload_url(url)
        if file is None:
            return Answer(404, {"Content-Type": "text/plain"}, b"not found")
        original = self.picture(wikimedia.original_path(file))
        if file.width is None:
            return Answer(200, {"Content-Type": "image/jpeg"}, original)
        if not wikimedia.is_step(file.width):
            with self._lock:
                self.refused["steps"] += 1
            return Answer(429, {"Content-Type": "text/html; charset=utf-8"}, STEPS_BODY)
        image = Image.open(io.BytesIO(original))
        if file.width >= image.width:
            with self._lock:
                self.refused["not_scaled"] += 1
            return Answer(400, {"Content-Type": "text/html; charset=utf-8"}, NOT_SCALED_BODY)
        height = max(1, round(image.height * file.width / image.width))
        thumb = image.convert("RGB").resize((file.width, height))
        out = io.BytesIO()
        if path.endswith(".png"):
            thumb.save(out, "PNG")
            return Answer(200, {"Content-Type": "image/png"}, out.getvalue())
        thumb.save(out, "JPEG", quality=85)
        return Answer(200, {"Content-Type": "image/jpeg"}, out.getvalue())


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def handle_error(self, request, client_address) -> None:
        pass  # a client that gives up resets its connection: expected here


class UploadStandIn:
    """`UploadRules` served on 127.0.0.1: `with UploadStandIn(picture) as host: host.url(p)`.
    `delay`: seconds each answer takes (the benchmark's service time)."""

    def __init__(
        self,
        picture: Callable[[str], bytes],
        max_in_flight: int | None = 2,
        delay: float = 0.0,
    ):
        self.rules = UploadRules(picture, max_in_flight)
        self.delay = delay
        self._httpd = _Server(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def root(self) -> str:
        """The prefix that stands for `https://upload.wikimedia.org` (for `images.url_map`)."""
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.root + path

    def start(self) -> UploadStandIn:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> UploadStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes: with Nagle on, the body would wait for
            # the client's delayed ACK of the headers (about 40 ms on Linux) every answer.
            disable_nagle_algorithm = True

            def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
                path = self.path.split("?", 1)[0]
                rules = standin.rules
                # In flight until its body goes out: a client that read the whole answer may
                # send its next request before this thread runs again.
                with rules.request(path) as refused:
                    if standin.delay:
                        time.sleep(standin.delay)
                    answer = refused or rules.answer(path)
                    self.send_response(answer.status)
                    for name, value in answer.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(answer.body)))
                    self.end_headers()
                self.wfile.write(answer.body)

            def log_message(self, *args: object) -> None:
                pass

        return Handler
