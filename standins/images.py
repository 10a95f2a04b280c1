"""The stand-in image host: one loopback HTTP server for the tests, the benchmarks and the demo,
and the photo-like pictures it draws.

What a path answers (its query left out), the first that applies:

- a mount, `mount("/wikimedia", rules)`: a host with rules of its own under a prefix ("": every
  path), asked with the path after the prefix (the demo's upload.wikimedia.org:
  `standins.upload.UploadRules`); its `request(path)` counts the request in flight until the
  headers are out (and may refuse it), its `answer(path)` answers;
- a route, `route("/x", Reply(429, {"Retry-After": "1"}), Reply(200, ...))`: its replies, one
  per request in turn, the last repeating;
- the `fallback`, a function of the path giving a `Reply` (None: not found);
- 404.

A reply can wait before its status line (`wait`) or trickle its body (`trickle`: seconds between
single bytes), and the whole host can add a delay before every answer (`delay`, the benchmark's
far host). Every request is logged with its headers (`log`, `hits`), and `max_active` is the
most answered at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import random
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from typing import NamedTuple, Protocol

from PIL import Image, ImageDraw, ImageFilter

from standins.server import LoopbackServer, QuietHandler

JPEG = {"Content-Type": "image/jpeg"}


class Reply(NamedTuple):
    status: int = 200
    headers: Mapping[str, str] = {}
    body: bytes = b""
    # Seconds between single bytes of the body: a server that trickles (Content-Length is sent
    # in full first, so only a deadline can end the download).
    trickle: float | None = None
    # Seconds to wait before the status line (on top of the host's `delay`).
    wait: float = 0.0
    # False: no Content-Length; the body ends when the connection closes.
    declare_length: bool = True


NOT_FOUND = Reply(404, {"Content-Type": "text/plain"}, b"not found")


class Rules(Protocol):
    """A host with rules of its own, mounted under a prefix (`standins.upload.UploadRules`)."""

    def request(self, path: str) -> AbstractContextManager[Reply | None]: ...

    def answer(self, path: str) -> Reply: ...


class ImageHost(LoopbackServer):
    """`with ImageHost() as host: host.route("/a.jpg", Reply(...)); host.url("/a.jpg")`.

    `keep_log`: False for a host answering millions of requests (a benchmark's), which then
    keeps neither `log` nor `hits`."""

    def __init__(
        self,
        *,
        delay: float = 0.0,
        fallback: Callable[[str], Reply | None] | None = None,
        keep_log: bool = True,
        port: int = 0,
    ):
        super().__init__(_Handler, port)
        self.delay = delay
        self.fallback = fallback
        self.keep_log = keep_log
        self.routes: dict[str, list[Reply]] = {}
        self.mounts: dict[str, Rules] = {}
        self.log: list[tuple[str, dict[str, str]]] = []
        self.active = 0  # requests being answered now
        self.max_active = 0  # the most answered at once
        self._served: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    def route(self, path: str, *replies: Reply) -> str:
        """Serve `replies` at `path` (one per request, the last repeating); returns its URL."""
        self.routes[path] = list(replies)
        return self.url(path)

    def mount(self, prefix: str, rules: Rules) -> Rules:
        """Answer the paths under `prefix` ("" for all) by `rules`; returns them."""
        self.mounts[prefix] = rules
        return rules

    def hits(self, path: str) -> int:
        with self._lock:
            return sum(1 for p, _ in self.log if p == path)

    def stop(self) -> None:
        self._stopping.set()  # ends the trickles
        super().stop()

    def serve(self, request: _Handler) -> None:
        """Answers one GET; a subclass may hold or log it first."""
        path = request.path.split("?", 1)[0]
        with self._lock:
            if self.keep_log:
                self.log.append((path, dict(request.headers.items())))
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            prefix, rules = self._mount_of(path)
            admitted = rules.request(path[len(prefix) :]) if rules else contextlib.nullcontext()
            # A mount counts the request in flight until its headers are out: a client that
            # read the whole answer may send its next one before this thread runs again.
            with admitted as refused:
                if refused:
                    reply = refused
                elif rules:
                    reply = rules.answer(path[len(prefix) :])
                else:
                    reply = self._reply(path)
                if self.delay or reply.wait:
                    time.sleep(self.delay + reply.wait)
                request.send_head(reply)
            request.send_body(reply, self._stopping)
        finally:
            with self._lock:
                self.active -= 1

    def _mount_of(self, path: str) -> tuple[str, Rules | None]:
        for prefix, rules in self.mounts.items():
            if path.startswith(prefix + "/"):
                return prefix, rules
        return "", None

    def _reply(self, path: str) -> Reply:
        with self._lock:
            replies = self.routes.get(path)
            if replies:
                n = self._served.get(path, 0)
                self._served[path] = n + 1
                return replies[min(n, len(replies) - 1)]
        reply = self.fallback(path) if self.fallback else None
        return reply or NOT_FOUND


class _Handler(QuietHandler):
    server: ImageHost

    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        self.server.serve(self)

    def send_head(self, reply: Reply) -> None:
        self.send_response(reply.status)
        headers = dict(reply.headers)
        if reply.declare_length:
            headers.setdefault("Content-Length", str(len(reply.body)))
        else:
            self.close_connection = True
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()

    def send_body(self, reply: Reply, stopping: threading.Event) -> None:
        if reply.trickle is None:
            self.wfile.write(reply.body)
            return
        self.close_connection = True
        for i in range(len(reply.body)):
            if stopping.wait(reply.trickle):
                break
            self.wfile.write(reply.body[i : i + 1])
            self.wfile.flush()


# ---------------------------------------------------------------------------- the pictures


def draw_picture(key: str) -> bytes:
    """A photo-like JPEG (a sky-to-ground gradient, blurred shapes), the same for the same key."""
    rng = random.Random(hashlib.sha256(key.encode()).digest())
    width, height = rng.choice([(640, 480), (480, 640), (800, 533), (512, 512), (1024, 683)])
    top = tuple(rng.randrange(40, 220) for _ in range(3))
    bottom = tuple(rng.randrange(20, 200) for _ in range(3))
    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)
    for y in range(height):
        t = y / (height - 1)
        draw.line(
            [(0, y), (width, y)],
            fill=tuple(round(a + (b - a) * t) for a, b in zip(top, bottom, strict=True)),
        )
    for _ in range(rng.randrange(4, 12)):
        x0, y0 = rng.randrange(width), rng.randrange(height)
        w, h = rng.randrange(20, width // 2), rng.randrange(20, height // 2)
        color = tuple(rng.randrange(256) for _ in range(3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([x0, y0, x0 + w, y0 + h], fill=color)
    image = image.filter(ImageFilter.GaussianBlur(1.5))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=88)
    return out.getvalue()


def draw_placeholder() -> bytes:
    """A host's "this photo is no longer available" picture: the same bytes for every URL."""
    image = Image.new("RGB", (400, 300), (236, 236, 236))
    draw = ImageDraw.Draw(image)
    draw.rectangle([150, 90, 250, 170], outline=(160, 160, 160), width=6)
    draw.ellipse([185, 110, 215, 140], fill=(160, 160, 160))
    for y in (200, 222):
        draw.rectangle([110, y, 290, y + 10], fill=(190, 190, 190))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def reencode(data: bytes, scale: float = 0.8, quality: int = 70) -> bytes:
    """The same picture as a repost would have it: smaller and recompressed."""
    image = Image.open(io.BytesIO(data))
    image = image.resize((round(image.width * scale), round(image.height * scale)))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()
