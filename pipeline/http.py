"""How the pipeline talks HTTP: sessions, timeouts, retries, Retry-After and the address guard.

Both HTTP clients, the image fetcher (`pipeline.images.fetcher`) and the MediaWiki client
(`pipeline.sources.mediawiki`), build their sessions here:

- `session`: one `requests.Session` that takes nothing from the environment (no proxies, no
  `.netrc` credentials), with the client's headers and one adapter for http and https.
- `timeouts`: a request's (connect, read) timeouts, none beyond what is left of a deadline.
- `bounded`: a whole request's deadline (`Deadline`): connecting, the status line and headers,
  the body and urllib3's retries all end by it, however slowly a host trickles. A watchdog
  thread shuts down the sockets of a request whose deadline passed, so a read blocked on a host
  returns at once; the connections of `BoundedAdapter` (and `GuardedAdapter`) register their
  sockets with the deadline of the thread that uses them, and never connect past it.
- `bounded_retry`: urllib3's `Retry` for connection errors (a reset included) and 500/502/504,
  exponential backoff, within the deadline: giving up at once when it passed or when a server's
  Retry-After exceeds what is left of it. A client that must see errors inside a 200 answer
  (MediaWiki's maxlag) retries in its own loop instead.
- `retry_after_seconds`: the one reading of a `Retry-After` header (seconds or an HTTP date).
- the address guard (`is_public_address`, `AddressPolicy`, `GuardedAdapter`): every address a
  request goes to must be globally routable unless private hosts are allowed, an IPv4 address
  carried inside an IPv6 one judged as itself; a host's addresses are checked before it is
  contacted, and the connected peer again before any byte of the request is sent.
"""

from __future__ import annotations

import contextlib
import datetime
import email.utils
import heapq
import ipaddress
import itertools
import math
import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, ReadTimeoutError, ResponseError
from urllib3.util.retry import Retry

# Statuses urllib3 retries at once with backoff, per request. 429 and 503 are the host's own
# business: they slow every request to it (pipeline.hosts) and the pair is tried again later.
RETRY_STATUSES = frozenset({500, 502, 504})
BACKOFF_FACTOR = 0.5  # seconds: waits of 0, 1, 2, 4 ... between retries
BACKOFF_MAX = 8.0
# How long an address check of one host is reused (seconds).
ADDRESS_CHECK_TTL = 60.0


def session(headers: Mapping[str, str], adapter: HTTPAdapter) -> requests.Session:
    """A session sending `headers`, every request through `adapter`. No proxies or .netrc
    credentials from the environment: a proxy would hide the peer address from the address
    guard, and credentials must not go to arbitrary hosts."""
    http = requests.Session()
    http.trust_env = False
    http.headers.update(headers)
    http.mount("http://", adapter)
    http.mount("https://", adapter)
    return http


def timeouts(connect: float, read: float, remaining: float = math.inf) -> tuple[float, float]:
    """The (connect, read) timeouts of one request, neither beyond `remaining` seconds (what is
    left of a deadline). Each bounds one wait: connecting, or the gap between bytes read."""
    return min(connect, remaining), min(read, remaining)


# ---------------------------------------------------------------------------- deadlines


class Deadline:
    """The moment a whole request (or a few in a row: redirects, retries, a fallback) must be
    over, kept by the watchdog: when it passes, every socket the request used is shut down, so a
    host that trickles its status line, headers or body cannot hold the caller a moment longer.
    Made by `bounded`; thread-safe.

    `passed` says whether the deadline passed (a reader that got an error, or a short body,
    after it must call that a timeout: the watchdog may have cut the connection)."""

    def __init__(self, seconds: float):
        self.at = time.monotonic() + seconds
        self.expired = False  # the watchdog shut the sockets down
        self.finished = False  # the request is over: nothing more to shut down
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []

    @property
    def passed(self) -> bool:
        return self.expired or time.monotonic() >= self.at

    def remaining(self) -> float:
        """Seconds left, never negative."""
        return max(0.0, self.at - time.monotonic())

    def extend(self, seconds: float) -> None:
        """Moves the deadline `seconds` later (a wait that is ours, not the host's)."""
        with self._lock:
            if not self.expired:
                self.at += seconds

    def watch(self, sock: socket.socket) -> None:
        """Shut `sock` down when the deadline passes (at once if it has). The watchdog holds a
        duplicate of its descriptor, closed when the request is over: it can never shut down a
        socket that later reuses the number, and it survives TLS taking the socket over."""
        if sock.fileno() < 0:
            return  # closed already: nothing to wait on
        watched = socket.fromfd(sock.fileno(), sock.family, sock.type)
        with self._lock:
            if not self.finished and not self.expired:
                self._sockets.append(watched)
                return
            if self.expired:
                _shut_down(watched)
        watched.close()

    def expire(self) -> None:
        """Shuts every watched socket down (the watchdog calls this at the deadline)."""
        with self._lock:
            if self.finished or self.expired:
                return
            self.expired = True
            for sock in self._sockets:
                _shut_down(sock)

    def finish(self) -> None:
        with self._lock:
            self.finished = True
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            sock.close()


def _shut_down(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed by the other side or by urllib3
        sock.shutdown(socket.SHUT_RDWR)


class _Watchdog:
    """One daemon thread per process that expires deadlines when they pass, earliest first."""

    COMPACT_EVERY = 1024  # additions between sweeps of finished deadlines out of the heap

    def __init__(self) -> None:
        self._wake = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, Deadline]] = []
        self._order = itertools.count()
        self._added = 0
        self._thread: threading.Thread | None = None

    def add(self, deadline: Deadline) -> None:
        with self._wake:
            self._added += 1
            if self._added % self.COMPACT_EVERY == 0:
                self._heap = [entry for entry in self._heap if not entry[2].finished]
                heapq.heapify(self._heap)
            heapq.heappush(self._heap, (deadline.at, next(self._order), deadline))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="deadlines", daemon=True)
                self._thread.start()
            elif self._heap[0][2] is deadline:
                self._wake.notify()

    def _run(self) -> None:
        with self._wake:
            while True:
                if not self._heap:
                    self._wake.wait()
                    continue
                at, _, deadline = self._heap[0]
                wait = at - time.monotonic()
                if wait > 0 and not deadline.finished:
                    self._wake.wait(wait)
                    continue
                heapq.heappop(self._heap)
                if deadline.finished:
                    continue
                if deadline.at > at:  # extended since it was added
                    heapq.heappush(self._heap, (deadline.at, next(self._order), deadline))
                    continue
                deadline.expire()


_watchdog = _Watchdog()
_current = threading.local()


def _new_watchdog() -> None:
    global _watchdog
    _watchdog = _Watchdog()  # a forked child has the lock and the heap but not the thread


os.register_at_fork(after_in_child=_new_watchdog)


@contextlib.contextmanager
def bounded(seconds: float) -> Iterator[Deadline]:
    """`with bounded(30) as deadline:` every request this thread makes inside, through a
    `BoundedAdapter`, is over within 30 s (`Deadline`)."""
    deadline = Deadline(seconds)
    outer = getattr(_current, "deadline", None)
    _current.deadline = deadline
    _watchdog.add(deadline)
    try:
        yield deadline
    finally:
        _current.deadline = outer
        deadline.finish()


def current_deadline() -> Deadline | None:
    """The deadline of the requests this thread makes now (`bounded`), if any."""
    return getattr(_current, "deadline", None)


# ---------------------------------------------------------------------------- Retry-After


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds from a `Retry-After` header (delta-seconds or an HTTP date, taken as GMT when it
    names no zone), never negative; None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, (when - datetime.datetime.now(datetime.timezone.utc)).total_seconds())


def retry_after(response: requests.Response) -> float | None:
    """Seconds from the answer's `Retry-After` header (`retry_after_seconds`); None if absent."""
    return retry_after_seconds(response.headers.get("Retry-After"))


# ---------------------------------------------------------------------------- retries


class BoundedRetry(Retry):
    """`Retry` within the deadline of the thread's requests (`bounded`): it gives up instead of
    trying again once the deadline passed, never sleeps beyond it, and gives up at once when a
    server's Retry-After exceeds `give_up_after` seconds (the download's deadline) or what is
    left of the deadline: the status is then the drop reason. It retries only
    `status_forcelist` (500, 502, 504) and connection errors, a connection reset or closed
    before the answer included; never a read timeout (that is the drop)."""

    give_up_after: float = math.inf
    # urllib3 retries 413, 429 and 503 carrying Retry-After even outside status_forcelist: here
    # 429 and 503 are the host gate's to handle (pipeline.hosts), never retried in place.
    RETRY_AFTER_STATUS_CODES = frozenset()

    def new(self, **kwargs: Any) -> BoundedRetry:
        retry = super().new(**kwargs)
        retry.give_up_after = self.give_up_after
        return retry

    def increment(self, method=None, url=None, response=None, error=None, _pool=None, **kwargs):
        if isinstance(error, ReadTimeoutError):
            raise error  # urllib3 counts it as a read error, retried like a reset: not here
        deadline = current_deadline()
        if deadline is not None and deadline.passed:
            reason = error or ResponseError("the deadline passed")
            raise MaxRetryError(_pool, url, reason) from error
        if response is not None and self.respect_retry_after_header:
            try:
                wait = self.get_retry_after(response)
            except urllib3.exceptions.InvalidHeader:
                wait = None
            limit = self.give_up_after
            if deadline is not None:
                limit = min(limit, deadline.remaining())
            if wait is not None and wait > limit:
                # With raise_on_status=False urllib3 returns the response as it is.
                reason = ResponseError(f"Retry-After {wait:g}s exceeds {limit:g}s")
                raise MaxRetryError(_pool, url, reason)
        return super().increment(method, url, response, error, _pool, **kwargs)

    def get_backoff_time(self) -> float:
        backoff = super().get_backoff_time()
        deadline = current_deadline()
        return min(backoff, deadline.remaining()) if deadline is not None else backoff


def backoff_seconds(retry: int) -> float:
    """The wait before the `retry`-th retry (from 1), as urllib3's backoff: 0, 1, 2, 4 ..."""
    return 0.0 if retry <= 1 else min(BACKOFF_MAX, BACKOFF_FACTOR * 2 ** (retry - 1))


def bounded_retry(retries: int, give_up_after: float) -> BoundedRetry:
    """urllib3's retries of a GET: `retries` times after a connection error (refused, reset, or
    closed before the answer) or a 500, 502 or 504, with backoff; never a read timeout (it is a
    `timeout`) nor a redirect (the caller follows those, each hop checked); the last answer is
    returned as it is."""
    retry = BoundedRetry(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        other=0,
        redirect=False,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=frozenset({"GET"}),
        backoff_factor=BACKOFF_FACTOR,
        backoff_max=BACKOFF_MAX,
        respect_retry_after_header=True,
        raise_on_status=False,
        raise_on_redirect=False,
    )
    retry.give_up_after = give_up_after
    return retry


# ---------------------------------------------------------------------------- the address guard


def _networks(*cidrs: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(cidr) for cidr in cidrs)


# IPv4 blocks no public host is in (IANA's special-purpose address registry), listed here so the
# verdict does not hang on what the running Python's `is_global` knows (3.11's takes
# 192.0.0.0/24 and 192.88.99.0/24 for global).
REFUSED_IPV4 = _networks(
    "0.0.0.0/8",  # "this network"
    "10.0.0.0/8",  # private
    "100.64.0.0/10",  # shared address space (carrier-grade NAT)
    "127.0.0.0/8",  # loopback
    "169.254.0.0/16",  # link-local (cloud metadata services)
    "172.16.0.0/12",  # private
    "192.0.0.0/24",  # IETF protocol assignments
    "192.0.2.0/24",  # documentation (TEST-NET-1)
    "192.88.99.0/24",  # 6to4 relay anycast (deprecated)
    "192.168.0.0/16",  # private
    "198.18.0.0/15",  # benchmarking
    "198.51.100.0/24",  # documentation (TEST-NET-2)
    "203.0.113.0/24",  # documentation (TEST-NET-3)
    "224.0.0.0/4",  # multicast
    "240.0.0.0/4",  # reserved, 255.255.255.255 (broadcast) included
)
# Every public IPv6 host is in global unicast. Outside it lie ::/8 (unspecified, loopback,
# IPv4-compatible ::a.b.c.d, IPv4-translated), 64:ff9b:1::/48 (local-use NAT64), 100::/64
# (discard-only), 5f00::/16 (SRv6), fc00::/7 (unique-local), fe80::/10 (link-local),
# fec0::/10 (site-local) and ff00::/8 (multicast).
GLOBAL_UNICAST = ipaddress.ip_network("2000::/3")
REFUSED_IPV6 = _networks(
    "2001::/23",  # IETF protocol assignments: Teredo 2001::/32, benchmarking, ORCHID, AMT, ...
    "2001:db8::/32",  # documentation
    "3fff::/20",  # documentation
)
# NAT64's well-known prefix (RFC 6052): the last 32 bits are the IPv4 host it translates to.
NAT64 = ipaddress.ip_network("64:ff9b::/96")


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address a packet to `ip` goes to: IPv4-mapped (`::ffff:a.b.c.d`), NAT64
    (`64:ff9b::a.b.c.d`) and 6to4 (`2002:AABB:CCDD::/48`, the site behind that IPv4 router);
    None for any other address."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def is_public_address(address: str) -> bool:
    """True only for a globally routable unicast address (a zone `%eth0` is ignored).

    IPv4: not in `REFUSED_IPV4` and global to `ipaddress` too. IPv6: an address that carries
    the IPv4 address it reaches (mapped, NAT64, 6to4: `embedded_ipv4`) is judged by that IPv4
    address alone; any other must be global unicast (2000::/3), not in `REFUSED_IPV6` (Teredo
    among them: its embedded server and client may be anything, so it is refused outright) and
    global to `ipaddress`."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = embedded_ipv4(ip)
        if embedded is None:
            refused = ip not in GLOBAL_UNICAST or any(ip in net for net in REFUSED_IPV6)
            return not refused and ip.is_global
        ip = embedded
    return not any(ip in net for net in REFUSED_IPV4) and ip.is_global


class PrivateAddressError(Exception):
    """Raised for a host or a connection whose address is not allowed. Not an OSError on
    purpose: urllib3 retries OSErrors, and this must end the request at once."""


class UnresolvableHostError(Exception):
    """Raised for a host name that does not resolve."""


class AddressPolicy:
    """Which addresses requests may go to: public ones always, the rest only when
    `allow_private` (the manifest's `allow_private_hosts`, for tests and the demo).

    `trusted_networks` (CIDR strings) are allowed even when `allow_private` is False. It is not
    a manifest option: tests use it to let their 127.0.0.1 server through while a redirect to
    10.0.0.1 or 169.254.169.254 is still refused.

    A host is checked twice. Before any connection, every address `getaddrinfo` gives for it
    must be allowed, so a refused host is never contacted (`check_url`). Then, because urllib3
    resolves the name again to connect (a DNS-rebinding server can answer differently the
    second time), the connected socket's peer address is checked again before any byte of the
    request is sent (`GuardedAdapter`).
    """

    def __init__(self, allow_private: bool, trusted_networks: Sequence[str] = ()):
        self.allow_private = allow_private
        self._trusted = tuple(ipaddress.ip_network(n) for n in trusted_networks)
        self._checked: dict[tuple[str, int], float] = {}

    def allows(self, address: str) -> bool:
        if self.allow_private:
            return True
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if any(ip.version == n.version and ip in n for n in self._trusted):
            return True
        return is_public_address(address)

    def check_url(self, url: str) -> None:
        """Raises `PrivateAddressError` unless every address of the URL's host is allowed, and
        `UnresolvableHostError` when it has none."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        if self.allow_private:
            return
        now = time.monotonic()
        if self._checked.get((host, port), 0.0) > now:
            return
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as err:
            raise UnresolvableHostError(f"cannot resolve {host!r}: {err}") from None
        for info in infos:
            address = info[4][0]
            if not self.allows(address):
                raise PrivateAddressError(f"{host} resolves to {address}")
        self._checked[(host, port)] = now + ADDRESS_CHECK_TTL

    def check_peer(self, sock: socket.socket, host: str) -> None:
        if self.allow_private:
            return
        address = sock.getpeername()[0]
        if not self.allows(address):
            raise PrivateAddressError(f"{host} connected to {address}")


def _pool_classes(policy: AddressPolicy | None) -> dict[str, type]:
    """urllib3 pool classes whose connections keep the thread's `Deadline` (never connecting
    past it, every socket they use watched by it) and, given a policy, check their peer address
    right after connecting."""

    def bounded_connection(conn_cls: type) -> type:
        class Bounded(conn_cls):
            _watched_by: Deadline | None = None

            def _new_conn(self) -> socket.socket:
                deadline = current_deadline()
                if deadline is not None:
                    left = deadline.remaining()
                    if left <= 0:
                        raise ConnectTimeoutError(self, f"{self.host}: the deadline passed")
                    if not isinstance(self.timeout, (int, float)) or self.timeout > left:
                        self.timeout = left
                sock = super()._new_conn()
                try:
                    if policy is not None:
                        policy.check_peer(sock, self.host)
                    if deadline is not None:
                        deadline.watch(sock)
                        self._watched_by = deadline
                except BaseException:
                    sock.close()
                    raise
                return sock

            def request(self, *args: Any, **kwargs: Any) -> None:
                # A connection from the pool, opened under an earlier deadline.
                deadline = current_deadline()
                watched = self._watched_by
                if deadline is not None and self.sock is not None and watched is not deadline:
                    deadline.watch(self.sock)
                    self._watched_by = deadline
                super().request(*args, **kwargs)

        return Bounded

    class Pool(HTTPConnectionPool):
        ConnectionCls = bounded_connection(HTTPConnectionPool.ConnectionCls)

    class TlsPool(HTTPSConnectionPool):
        ConnectionCls = bounded_connection(HTTPSConnectionPool.ConnectionCls)

    return {"http": Pool, "https": TlsPool}


class BoundedAdapter(HTTPAdapter):
    """An `HTTPAdapter` whose requests end by the thread's deadline (`bounded`)."""

    _policy: AddressPolicy | None = None

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _pool_classes(self._policy)


class GuardedAdapter(BoundedAdapter):
    """A `BoundedAdapter` whose connections refuse a peer address the policy does not allow."""

    def __init__(self, policy: AddressPolicy, **kwargs: Any):
        self._policy = policy  # before super().__init__, which builds the pool manager
        super().__init__(**kwargs)
