"""The HTTP server every stand-in is: threaded, on 127.0.0.1, started and stopped in one line.

`LoopbackServer` binds a free port (or the one given) when made and serves from a daemon thread
once started: `with ImageHost() as host: host.url("/a.jpg")`. What a real server does and
a test would trip over is done here once: every connection is sent without Nagle's delay, the
listen backlog takes many clients connecting at once, and a client that gives up (a deadline, a
byte cap, a fault test's timeout) and resets its connection is not reported as an error.
"""

from __future__ import annotations

import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

HOST = "127.0.0.1"
Server = TypeVar("Server", bound="LoopbackServer")


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that keeps its connection alive (HTTP/1.1, as real hosts do: every
    answer says its Content-Length or closes the connection) and logs nothing."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass


class LoopbackServer(ThreadingHTTPServer):
    """A threaded HTTP server on 127.0.0.1 answering with `handler`; `port` 0: any free one."""

    daemon_threads = True
    request_queue_size = 128  # the listen backlog: many clients connect at once

    def __init__(self, handler: type[BaseHTTPRequestHandler], port: int = 0):
        super().__init__((HOST, port), handler)
        self._thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)

    @property
    def port(self) -> int:
        return self.server_address[1]

    def url(self, path: str) -> str:
        return f"http://{HOST}:{self.port}{path}"

    def start(self: Server) -> Server:
        """Serves from a daemon thread; returns the server."""
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():  # `shutdown` waits for a loop that was never started
            self.shutdown()
        self.server_close()

    def __enter__(self: Server) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def get_request(self) -> tuple[socket.socket, Any]:
        connection, address = super().get_request()
        # Headers and body go out in two writes: with Nagle on, the body would wait for the
        # client's delayed ACK of the headers (about 40 ms on Linux) in every answer.
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return connection, address

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)
