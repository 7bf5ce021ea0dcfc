"""Per-route limits (mounts), checked from the servers' side: one scripted server per origin
counts the connections it accepted and the most it had open at once.

Two origins, 127.0.0.1 and 127.0.0.2 (distinct servers, so each shows its own peak); the
second is mounted with limits of its own, the first has the client's.
"""

from __future__ import annotations

import threading
import time

import pytest

import poolhttp
from tests.integration.clients import AsyncFacade, make_client
from tests.support.scripted import (
    Gate,
    MultiOriginServer,
    ReceivedRequest,
    Reply,
    ServerFactory,
)

PER_ORIGIN = 30


def slow_hello(request: ReceivedRequest) -> Reply:
    return Reply.ok(b"hello").delay(0.01)


def get_all(client: poolhttp.Client | AsyncFacade, urls: list[str]) -> list[threading.Thread]:
    """Start one thread per URL, each making one GET (the status checked)."""
    errors: list[BaseException] = []

    def get(url: str) -> None:
        try:
            assert client.get(url).status_code == 200
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=get, args=(url,)) for url in urls]
    for thread in threads:
        thread.start()
    threads.append(_ErrorCheck(errors))
    return threads


class _ErrorCheck(threading.Thread):
    """Joined last: raises what the GETs raised."""

    def __init__(self, errors: list[BaseException]) -> None:
        super().__init__()
        self.errors = errors

    def join(self, timeout: float | None = None) -> None:
        assert not self.errors, self.errors[:3]


def join_all(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join(60)


def test_a_mount_bounds_its_origin_while_the_other_uses_the_rest(
        client_kind: str, scripted_server: ServerFactory) -> None:
    """30 requests held at each origin: the mounted one never has more than its route's 2
    connections, the other takes the remaining 18 of the client's 20, and nothing else is
    opened while they wait."""
    gate = Gate()

    async def held(request: ReceivedRequest) -> Reply:
        await gate.wait(timeout=20)
        return Reply.ok(b"hello")

    servers = scripted_server.multi(held, hosts=("127.0.0.1", "127.0.0.2"))
    plain, mounted = servers[0], servers[1]
    mounts = {mounted.origin: poolhttp.Mount(limits=poolhttp.Limits(max_connections=2))}
    with make_client(client_kind, limits=poolhttp.Limits(max_connections=20),
                     mounts=mounts) as client:
        threads = get_all(client, [mounted.url("/")] * PER_ORIGIN)
        mounted.wait_for(lambda s: s.requests == 2)
        threads += get_all(client, [plain.url("/")] * PER_ORIGIN)
        plain.wait_for(lambda s: s.requests == 18)
        time.sleep(0.2)  # nothing more is opened while all of them wait
        assert (mounted.accepted, plain.accepted) == (2, 18)
        stats = client.stats()
        assert stats.connections == 20
        assert stats.waiting == 2 * PER_ORIGIN - 20
        gate.set()
        join_all(threads)
    assert (mounted.max_active, mounted.accepted, mounted.requests) == (2, 2, PER_ORIGIN)
    assert (plain.max_active, plain.accepted, plain.requests) == (18, 18, PER_ORIGIN)


def test_a_mount_holds_its_limit_under_interleaved_load(
        client_kind: str, scripted_server: ServerFactory) -> None:
    """Requests to both origins interleaved, 60 at a time: the mounted origin's peak is its
    route's limit, reached and never exceeded; the other's goes beyond it."""
    servers = scripted_server.multi(slow_hello, hosts=("127.0.0.1", "127.0.0.2"))
    plain, mounted = servers[0], servers[1]
    mounts = {mounted.origin: poolhttp.Mount(limits=poolhttp.Limits(max_connections=2))}
    with make_client(client_kind, limits=poolhttp.Limits(max_connections=20),
                     mounts=mounts) as client:
        for _ in range(3):
            urls = [server.url("/") for _ in range(PER_ORIGIN) for server in servers]
            join_all(get_all(client, urls))
    assert mounted.max_active == 2
    assert mounted.requests == plain.requests == 3 * PER_ORIGIN
    assert 2 < plain.max_active <= 20


def wait_closed(servers: MultiOriginServer) -> None:
    """Until the servers have seen every connection's close (a close reaches them a moment
    after the response reaches the client)."""
    servers.wait_for(lambda s: all(server.active == 0 for server in s))


def test_a_mount_without_keepalive_uses_a_connection_per_request_the_other_reuses(
        client_kind: str, scripted_server: ServerFactory) -> None:
    servers = scripted_server.multi(hosts=("127.0.0.1", "127.0.0.2"))
    plain, mounted = servers[0], servers[1]
    mounts = {mounted.origin: poolhttp.Mount(limits=poolhttp.Limits(max_keepalive_connections=0))}
    with make_client(client_kind, mounts=mounts) as client:
        for _ in range(5):
            assert client.get(mounted.url("/")).content == b"hello"
            assert client.get(plain.url("/")).content == b"hello"
        stats = client.stats().per_host
        assert (stats[mounted.origin].idle, stats[plain.origin].idle) == (0, 1)
    wait_closed(servers)
    assert (mounted.accepted, mounted.requests) == (5, 5)
    assert (plain.accepted, plain.requests) == (1, 5)


def test_a_mount_without_keepalive_says_connection_close(
        client_kind: str, scripted_server: ServerFactory) -> None:
    """The server closes first (and holds the TIME_WAIT), as with the client's own
    max_keepalive_connections=0."""
    servers = scripted_server.multi(hosts=("127.0.0.1", "127.0.0.2"))
    plain, mounted = servers[0], servers[1]
    mounts = {mounted.origin: poolhttp.Mount(limits=poolhttp.Limits(max_keepalive_connections=0))}
    with make_client(client_kind, mounts=mounts) as client:
        client.get(mounted.url("/"))
        client.get(plain.url("/"))
    assert mounted.received[0].get("connection") == "close"
    assert plain.received[0].get("connection") is None


def test_a_mount_keepalive_expiry_applies_to_its_origin(
        client_kind: str, scripted_server: ServerFactory) -> None:
    servers = scripted_server.multi(hosts=("127.0.0.1", "127.0.0.2"))
    plain, mounted = servers[0], servers[1]
    mounts = {mounted.origin: poolhttp.Mount(limits=poolhttp.Limits(keepalive_expiry=0.2))}
    with make_client(client_kind, limits=poolhttp.Limits(keepalive_expiry=15.0),
                     mounts=mounts) as client:
        for server in servers:
            assert client.get(server.url("/")).status_code == 200
        time.sleep(0.5)  # past the mount's expiry, far from the client's
        for server in servers:
            assert client.get(server.url("/")).status_code == 200
    assert (mounted.accepted, plain.accepted) == (2, 1)


def test_a_request_at_its_route_limit_waits_and_times_out_naming_the_route(
        client_kind: str, scripted_server: ServerFactory) -> None:
    """The pool as a whole has room: the other origin is served at once meanwhile."""
    gate = Gate()

    async def held(request: ReceivedRequest) -> Reply:
        if request.path == "/hold":
            await gate.wait(timeout=10)
        return Reply.ok(b"done")

    servers = scripted_server.multi(held, hosts=("127.0.0.1", "127.0.0.2"))
    plain, mounted = servers[0], servers[1]
    mounts = {mounted.origin: poolhttp.Mount(limits=poolhttp.Limits(max_connections=1))}
    with make_client(client_kind, limits=poolhttp.Limits(max_connections=10),
                     mounts=mounts) as client:
        holder = get_all(client, [mounted.url("/hold")])
        mounted.wait_for(lambda s: s.requests == 1)
        started = time.monotonic()
        with pytest.raises(poolhttp.PoolTimeout) as info:
            client.get(mounted.url("/"), timeout=poolhttp.Timeout(5.0, pool=0.3))
        waited = time.monotonic() - started
        assert client.get(plain.url("/")).content == b"done"
        gate.set()
        join_all(holder)
        assert client.get(mounted.url("/")).content == b"done"
    assert 0.25 <= waited < 2.0
    assert f"route {mounted.origin}: max_connections=1, 1 open" in str(info.value)
    assert mounted.accepted == 1
