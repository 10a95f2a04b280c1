"""A stand-in for upload.wikimedia.org that keeps today's rules, for tests, the demo and the
politeness benchmark: `UploadRules` mounted on the image host, at its root (`UploadStandIn`) or
under a prefix (the demo's host serves it under `/wikimedia/` beside the other hosts).

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
from collections import Counter
from collections.abc import Callable, Iterator

from PIL import Image

from pipeline import wikimedia
from standins.images import JPEG, NOT_FOUND, ImageHost, Reply

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

    def enter(self, path: str) -> Reply | None:
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
        return Reply(429, headers, BUSY_BODY)

    def leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    @contextlib.contextmanager
    def request(self, path: str) -> Iterator[Reply | None]:
        """Counts the request in flight while the block answers it; gives its 429 when it is
        one too many (None: answer it)."""
        refused = self.enter(path)
        try:
            yield refused
        finally:
            self.leave()

    def answer(self, path: str) -> Reply:
        url = "https://upload.wikimedia.org" + path
        file = wikimedia.parse_upload_url(url)
        if file is None:
            return NOT_FOUND
        original = self.picture(wikimedia.original_path(file))
        if file.width is None:
            return Reply(200, JPEG, original)
        if not wikimedia.is_step(file.width):
            with self._lock:
                self.refused["steps"] += 1
            return Reply(429, {"Content-Type": "text/html; charset=utf-8"}, STEPS_BODY)
        image = Image.open(io.BytesIO(original))
        if file.width >= image.width:
            with self._lock:
                self.refused["not_scaled"] += 1
            return Reply(400, {"Content-Type": "text/html; charset=utf-8"}, NOT_SCALED_BODY)
        height = max(1, round(image.height * file.width / image.width))
        thumb = image.convert("RGB").resize((file.width, height))
        out = io.BytesIO()
        if path.endswith(".png"):
            thumb.save(out, "PNG")
            return Reply(200, {"Content-Type": "image/png"}, out.getvalue())
        thumb.save(out, "JPEG", quality=85)
        return Reply(200, JPEG, out.getvalue())


class UploadStandIn(ImageHost):
    """`UploadRules` (`rules`) served on 127.0.0.1: `with UploadStandIn(picture) as host:
    host.url(p)`. `delay`: seconds each answer takes (the benchmark's service time), in flight."""

    def __init__(
        self,
        picture: Callable[[str], bytes],
        max_in_flight: int | None = 2,
        delay: float = 0.0,
    ):
        super().__init__(delay=delay)
        self.rules = UploadRules(picture, max_in_flight)
        self.mount("", self.rules)

    @property
    def root(self) -> str:
        """The prefix that stands for `https://upload.wikimedia.org` (for `images.url_map`)."""
        return self.url("")
