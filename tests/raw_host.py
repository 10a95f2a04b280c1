"""A TCP server on 127.0.0.1 that sends exactly the bytes a test scripts: the hosts no HTTP server
library lets a test be (a status line or headers trickled a byte at a time, a reset mid-answer).

`with RawHost(script) as host:` accepts connections from a thread and runs `script(link)` for
each on a thread of its own; `link` is a `Link`: the socket, the connection's number (from 0),
and helpers to read the request, trickle bytes and reset. `host.held` is how long each finished
connection was held open, from its accept until the client hung up (or the script ended).
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
import time
from collections.abc import Callable

from standins.images import draw_picture


class Link:
    """One accepted connection, as a script sees it."""

    def __init__(self, sock: socket.socket, number: int, stopping: threading.Event):
        self.sock = sock
        self.number = number
        self.stopping = stopping

    def read_request(self) -> bytes:
        """The request's head (up to the blank line); b"" if the client went away."""
        data = b""
        while b"\r\n\r\n" not in data:
            piece = self.sock.recv(4096)
            if not piece:
                return b""
            data += piece
        return data

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def trickle(self, data: bytes, gap: float) -> None:
        """`data` a byte at a time, `gap` seconds apart, until the client hangs up (its FIN, or
        a reset), the host stops, or `data` runs out."""
        for i in range(len(data)):
            readable, _, _ = select.select([self.sock], [], [], gap)
            if self.stopping.is_set():
                return
            try:
                if readable and not self.sock.recv(1024):
                    return  # the client hung up
                self.sock.sendall(data[i : i + 1])
            except OSError:
                return

    def reset(self) -> None:
        """Closes with a TCP reset instead of an orderly close."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


class RawHost:
    def __init__(self, script: Callable[[Link], None]):
        self._script = script
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port = self._listener.getsockname()[1]
        self.connections = 0
        self.held: list[float] = []
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> RawHost:
        accepting = threading.Thread(target=self._accept, daemon=True)
        accepting.start()
        self._threads.append(accepting)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        for thread in list(self._threads):
            thread.join(timeout=5)
        self._listener.close()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            with self._lock:
                number = self.connections
                self.connections += 1
            serving = threading.Thread(target=self._serve, args=(sock, number), daemon=True)
            serving.start()
            self._threads.append(serving)

    def _serve(self, sock: socket.socket, number: int) -> None:
        start = time.monotonic()
        with sock, contextlib.suppress(OSError):  # the client went away mid-script
            self._script(Link(sock, number, self._stopping))
        with self._lock:
            self.held.append(time.monotonic() - start)


def answer(body: bytes, content_type: str = "image/jpeg") -> bytes:
    """A whole 200 answer carrying `body`."""
    head = f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"Connection: close\r\n\r\n" + body


PHOTO = draw_picture("raw-host")
