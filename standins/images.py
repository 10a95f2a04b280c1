"""A real threaded HTTP server on 127.0.0.1 for image tests and the image benchmark.

Each path answers with a `Reply` (status, headers, body), or with several given one per request
in turn, the last repeating: `route("/x", Reply(429, {"Retry-After": "1"}), Reply(200, ...))`.
A reply can trickle its body (`trickle`: seconds between single bytes) and the whole server can
add a delay before every response (`delay`, the benchmark's 200 ms). Every request is logged.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import NamedTuple


class Reply(NamedTuple):
    status: int = 200
    headers: Mapping[str, str] = {}
    body: bytes = b""
    # Seconds between single bytes of the body: a server that trickles (Content-Length is sent
    # in full first, so only a deadline can end the download).
    trickle: float | None = None
    # Seconds to wait before the status line (on top of the server's `delay`).
    wait: float = 0.0
    # False: no Content-Length; the body ends when the connection closes.
    declare_length: bool = True


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the listen backlog: many clients connect at once

    def handle_error(self, request, client_address) -> None:
        # A client that gives up (a deadline, a byte cap) resets its connection: expected here.
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class ImageServer:
    """`with ImageServer() as server: server.route("/a.jpg", Reply(...)); server.url("/a.jpg")`."""

    def __init__(self, delay: float = 0.0):
        self.delay = delay
        self.routes: dict[str, list[Reply]] = {}
        self.log: list[tuple[str, dict[str, str]]] = []
        self.active = 0  # requests being answered now
        self.max_active = 0  # the most answered at once
        self._served: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._httpd = _QuietServer(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def route(self, path: str, *replies: Reply) -> str:
        """Serve `replies` at `path` (one per request, the last repeating); returns its URL."""
        self.routes[path] = list(replies)
        return self.url(path)

    def hits(self, path: str) -> int:
        with self._lock:
            return sum(1 for p, _ in self.log if p == path)

    def start(self) -> ImageServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> ImageServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def _next_reply(self, path: str) -> Reply:
        with self._lock:
            replies = self.routes.get(path)
            if not replies:
                return Reply(404, {"Content-Type": "text/plain"}, b"not found")
            n = self._served.get(path, 0)
            self._served[path] = n + 1
            return replies[min(n, len(replies) - 1)]

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real image hosts

            def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
                path = self.path.split("?", 1)[0]
                with server._lock:
                    server.log.append((path, dict(self.headers.items())))
                    server.active += 1
                    server.max_active = max(server.max_active, server.active)
                try:
                    self._answer(server._next_reply(path))
                finally:
                    with server._lock:
                        server.active -= 1

            def _answer(self, reply: Reply) -> None:
                if server.delay or reply.wait:
                    time.sleep(server.delay + reply.wait)
                self.send_response(reply.status)
                headers = dict(reply.headers)
                if reply.declare_length:
                    headers.setdefault("Content-Length", str(len(reply.body)))
                else:
                    self.close_connection = True
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                if reply.trickle is None:
                    self.wfile.write(reply.body)
                    return
                self.close_connection = True
                for i in range(len(reply.body)):
                    if server._stop.wait(reply.trickle):
                        break
                    self.wfile.write(reply.body[i : i + 1])
                    self.wfile.flush()

            def log_message(self, *args) -> None:
                pass

        return Handler
