"""The HTTP policy's parts on their own: the address guard's verdicts (never by connecting) and
the whole-request deadline's watchdog on real sockets."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time

import pytest

from pipeline import http
from pipeline.http import AddressPolicy, embedded_ipv4, is_public_address

PUBLIC = [
    "93.184.216.34",
    "8.8.8.8",
    "1.1.1.1",
    "2606:4700:4700::1111",
    "2001:4860:4860::8888",
    "2a00:1450:4001:80b::200e",
    "::ffff:93.184.216.34",  # IPv4-mapped: judged as the IPv4 address
    "64:ff9b::5db8:d822",  # NAT64 of 93.184.216.34
    "64:ff9b::93.184.216.34",
    "2002:5db8:d822::1",  # 6to4 behind 93.184.216.34
]

NOT_PUBLIC = [
    # IPv4
    "0.0.0.0",
    "0.1.2.3",
    "10.0.0.1",
    "100.64.0.1",
    "100.127.255.254",
    "127.0.0.1",
    "127.1.2.3",
    "169.254.169.254",
    "172.16.5.4",
    "172.31.255.255",
    "192.0.0.9",  # IETF protocol assignments (Python 3.11 takes it for global)
    "192.0.0.170",
    "192.0.2.1",  # documentation
    "192.88.99.1",  # 6to4 relay anycast (Python 3.11 takes it for global)
    "192.168.1.1",
    "198.18.0.1",  # benchmarking
    "198.19.255.255",
    "198.51.100.7",
    "203.0.113.9",
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
    # IPv6 without an IPv4 inside
    "::",
    "::1",
    "fe80::1",
    "fe80::1%eth0",
    "fc00::1",
    "fd00::1",
    "fec0::1",  # site-local (Python takes it for global)
    "feff::1",  # the last of site-local
    "ff02::1",
    "ff0e::1",
    "100::1",  # discard-only
    "5f00::1",  # SRv6 SIDs
    "4000::1",  # outside global unicast
    "2001:db8::1",  # documentation
    "3fff::1",  # documentation (Python 3.11 takes it for global)
    "2001:2::1",  # benchmarking
    "2001:10::1",  # ORCHID
    "2001:20::1",  # ORCHIDv2
    # Teredo: refused outright, whatever it carries
    "2001::1",
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",
    "2001:0:5db8:d822::5db8:d822",
    # IPv4 inside IPv6, judged by the IPv4 address
    "::ffff:10.0.0.1",
    "::ffff:127.0.0.1",
    "::ffff:7f00:1",
    "::ffff:169.254.169.254",
    "::ffff:100.64.0.1",
    "64:ff9b::7f00:1",  # NAT64 to loopback
    "64:ff9b::10.0.0.1",
    "64:ff9b::a9fe:a9fe",  # NAT64 to the metadata service
    "2002:7f00:1::",  # 6to4 behind 127.0.0.1
    "2002:a00:1::1",  # 6to4 behind 10.0.0.1
    "2002:c0a8:101::1",  # 6to4 behind 192.168.1.1
    "2002:a9fe:a9fe::1",  # 6to4 behind 169.254.169.254
    "2002::1",  # 6to4 behind 0.0.0.0
    # forms refused outright
    "::127.0.0.1",  # IPv4-compatible (deprecated)
    "::8.8.8.8",
    "::ffff:0:127.0.0.1",  # IPv4-translated
    "64:ff9b:1::5db8:d822",  # local-use NAT64: where it leads is the network's own business
]


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address):
    assert is_public_address(address) is True


@pytest.mark.parametrize("address", NOT_PUBLIC)
def test_addresses_that_are_not_globally_routable_are_refused(address):
    assert is_public_address(address) is False
    assert AddressPolicy(allow_private=False).allows(address) is False
    assert AddressPolicy(allow_private=True).allows(address) is True


@pytest.mark.parametrize(
    ("address", "inside"),
    [
        ("::ffff:127.0.0.1", "127.0.0.1"),
        ("64:ff9b::a9fe:a9fe", "169.254.169.254"),
        ("2002:7f00:1::", "127.0.0.1"),
        ("2002:c0a8:101:5::1", "192.168.1.1"),
        ("2606:4700:4700::1111", None),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", None),  # Teredo: refused, not judged
    ],
)
def test_the_ipv4_address_inside(address, inside):
    found = embedded_ipv4(ipaddress.IPv6Address(address))
    assert (str(found) if found else None) == inside


def test_a_trusted_network_lets_only_itself_through():
    policy = AddressPolicy(allow_private=False, trusted_networks=("127.0.0.1/32",))
    assert policy.allows("127.0.0.1")
    assert not policy.allows("127.0.0.2") and not policy.allows("::ffff:127.0.0.2")


# ---------------------------------------------------------------------------- the deadline


@pytest.fixture
def connected():
    """A connected pair of TCP sockets on 127.0.0.1: (client, server)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    with client, server:
        yield client, server


def blocked_read(sock: socket.socket) -> tuple[float, bytes | str]:
    """How long a read with no timeout blocked, and what it gave."""
    start = time.monotonic()
    try:
        data: bytes | str = sock.recv(100)
    except OSError as err:
        data = type(err).__name__
    return time.monotonic() - start, data


def test_the_deadline_ends_a_read_that_would_block_forever(connected):
    client, server = connected
    with http.bounded(0.3) as deadline:
        deadline.watch(client)
        waited, data = blocked_read(client)
        assert deadline.expired and deadline.passed
    assert 0.25 <= waited < 1.0 and data == b""


def test_an_extended_deadline_waits_longer(connected):
    client, server = connected
    with http.bounded(0.2) as deadline:
        deadline.watch(client)
        deadline.extend(0.4)
        waited, _ = blocked_read(client)
    assert 0.55 <= waited < 1.2


def test_a_finished_request_keeps_its_connection(connected):
    """A connection goes back to the pool after its request: the watchdog must leave it be."""
    client, server = connected
    with http.bounded(0.1) as deadline:
        deadline.watch(client)
    time.sleep(0.3)
    assert not deadline.expired
    server.sendall(b"still here")
    assert client.recv(100) == b"still here"


def test_a_socket_watched_after_the_deadline_is_shut_at_once(connected):
    client, server = connected
    with http.bounded(0.05) as deadline:
        time.sleep(0.2)
        deadline.watch(client)
        waited, data = blocked_read(client)
    assert waited < 0.2 and data == b""


def test_many_deadlines_expire_each_at_its_own_time():
    """The watchdog is one thread for all: deadlines added out of order expire in order, and
    the ones finished in time never do."""
    expired_at = {}
    start = time.monotonic()
    deadlines = []

    def hold(name: str, seconds: float, finish_after: float | None) -> None:
        with http.bounded(seconds) as deadline:
            deadlines.append((name, deadline))
            while not deadline.expired and (
                finish_after is None or time.monotonic() - start < finish_after
            ):
                time.sleep(0.01)
            if deadline.expired:
                expired_at[name] = time.monotonic() - start

    threads = [
        threading.Thread(target=hold, args=("late", 0.6, None)),
        threading.Thread(target=hold, args=("early", 0.2, None)),
        threading.Thread(target=hold, args=("done", 0.4, 0.1)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=5)
    assert sorted(expired_at) == ["early", "late"]
    assert 0.15 <= expired_at["early"] < 0.5 and 0.55 <= expired_at["late"] < 1.5
