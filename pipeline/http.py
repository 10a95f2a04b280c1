"""How the pipeline talks HTTP: sessions, timeouts, retries, Retry-After and the address guard.

Both HTTP clients, the image fetcher (`pipeline.images.fetcher`) and the MediaWiki client
(`pipeline.sources.mediawiki`), build their sessions here:

- `session`: one `requests.Session` that takes nothing from the environment (no proxies, no
  `.netrc` credentials), with the client's headers and one adapter for http and https.
- `timeouts`: a request's (connect, read) timeouts, none beyond what is left of a deadline.
- `bounded_retry`: urllib3's `Retry` for connection errors and 500/502/504, exponential backoff,
  giving up at once when a server's Retry-After exceeds the download's deadline. A client that
  must see errors inside a 200 answer (MediaWiki's maxlag) retries in its own loop instead.
- `retry_after_seconds`: the one reading of a `Retry-After` header (seconds or an HTTP date).
- the address guard (`AddressPolicy`, `GuardedAdapter`): every address a request goes to must be
  public unless private hosts are allowed; a host's addresses are checked before it is
  contacted, and the connected peer again before any byte of the request is sent.
"""

from __future__ import annotations

import datetime
import email.utils
import ipaddress
import math
import socket
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import MaxRetryError, ResponseError
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
    """`Retry` that gives up, instead of sleeping, when a server's Retry-After exceeds
    `give_up_after` seconds (the download's deadline): the status is then the drop reason.
    It retries only `status_forcelist` (500, 502, 504) and connection errors."""

    give_up_after: float = math.inf
    # urllib3 retries 413, 429 and 503 carrying Retry-After even outside status_forcelist: here
    # 429 and 503 are the host gate's to handle (pipeline.hosts), never retried in place.
    RETRY_AFTER_STATUS_CODES = frozenset()

    def new(self, **kwargs: Any) -> BoundedRetry:
        retry = super().new(**kwargs)
        retry.give_up_after = self.give_up_after
        return retry

    def increment(self, method=None, url=None, response=None, error=None, _pool=None, **kwargs):
        if response is not None and self.respect_retry_after_header:
            try:
                wait = self.get_retry_after(response)
            except urllib3.exceptions.InvalidHeader:
                wait = None
            if wait is not None and wait > self.give_up_after:
                # With raise_on_status=False urllib3 returns the response as it is.
                reason = ResponseError(f"Retry-After {wait:g}s exceeds {self.give_up_after:g}s")
                raise MaxRetryError(_pool, url, reason)
        return super().increment(method, url, response, error, _pool, **kwargs)


def bounded_retry(retries: int, give_up_after: float) -> BoundedRetry:
    """urllib3's retries of a GET: `retries` times after a connection error or a 500, 502 or
    504, with backoff; never a read timeout (it is a `timeout`) nor a redirect (the caller
    follows those, each hop checked); the last answer is returned as it is."""
    retry = BoundedRetry(
        total=retries,
        connect=retries,
        read=False,
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


def is_public_address(address: str) -> bool:
    """True for a globally routable unicast address; False for private, loopback, link-local,
    reserved, multicast, unspecified and shared (100.64/10) ones, IPv4-mapped IPv6 included."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_reserved
        or ip.is_multicast
        or ip.is_unspecified
    )


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


def _guarded_pool_classes(policy: AddressPolicy) -> dict[str, type]:
    """urllib3 pool classes whose connections check their peer address right after connecting."""

    def checked(conn_cls: type) -> type:
        class Checked(conn_cls):
            def _new_conn(self) -> socket.socket:
                sock = super()._new_conn()
                try:
                    policy.check_peer(sock, self.host)
                except PrivateAddressError:
                    sock.close()
                    raise
                return sock

        return Checked

    class Pool(HTTPConnectionPool):
        ConnectionCls = checked(HTTPConnectionPool.ConnectionCls)

    class TlsPool(HTTPSConnectionPool):
        ConnectionCls = checked(HTTPSConnectionPool.ConnectionCls)

    return {"http": Pool, "https": TlsPool}


class GuardedAdapter(HTTPAdapter):
    """An `HTTPAdapter` whose connections refuse a peer address the policy does not allow."""

    def __init__(self, policy: AddressPolicy, **kwargs: Any):
        self._policy = policy  # before super().__init__, which builds the pool manager
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _guarded_pool_classes(self._policy)
