"""Pool limits, checked from the server's side: accepted and concurrent connections."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import poolhttp
from tests.integration.clients import AsyncFacade, make_client
from tests.support.nginx import Nginx
from tests.support.scripted import Gate, ReceivedRequest, Reply, ServerFactory

REQUESTS = 10_000
WORKERS = 64


async def test_10k_gets_from_64_tasks_use_exactly_64_connections(nginx: Nginx) -> None:
    before = nginx.server_stats()
    url = nginx.url("/")
    async with poolhttp.AsyncClient(limits=poolhttp.Limits(max_connections=64)) as client:

        async def worker() -> None:
            for _ in range(REQUESTS // WORKERS):
                response = await client.get(url)
                assert response.content == b"hello\n"

        # 10,000 = 64 * 156 + 16: the first 16 workers do one more.
        async def worker_plus_one() -> None:
            await worker()
            assert (await client.get(url)).status_code == 200

        await asyncio.gather(*[worker_plus_one() for _ in range(REQUESTS % WORKERS)],
                             *[worker() for _ in range(WORKERS - REQUESTS % WORKERS)])
        stats = client.stats()
    server = nginx.server_stats().since(before)
    assert server.accepted == 64
    assert server.requests == REQUESTS
    assert (stats.created, stats.reused, stats.closed) == (64, REQUESTS - 64, 0)
    assert (stats.connections, stats.idle, stats.active, stats.waiting) == (64, 64, 0, 0)


def test_10k_gets_from_64_threads_sharing_one_client(nginx: Nginx) -> None:
    before = nginx.server_stats()
    url = nginx.url("/")
    errors: list[BaseException] = []
    barrier = threading.Barrier(WORKERS)
    with poolhttp.Client(limits=poolhttp.Limits(max_connections=64)) as client:

        def worker(count: int) -> None:
            try:
                barrier.wait()
                for _ in range(count):
                    assert client.get(url).content == b"hello\n"
            except BaseException as exc:
                errors.append(exc)

        counts = [REQUESTS // WORKERS + (i < REQUESTS % WORKERS) for i in range(WORKERS)]
        threads = [threading.Thread(target=worker, args=(n,)) for n in counts]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        stats = client.stats()
    assert not errors, errors[:3]
    server = nginx.server_stats().since(before)
    assert server.requests == REQUESTS
    # 64 threads start together, so all 64 connections get opened: no more, and no fewer.
    assert server.accepted == stats.created == 64
    assert (stats.reused, stats.closed) == (REQUESTS - 64, 0)


def slow_hello(request: ReceivedRequest) -> Reply:
    return Reply.ok(b"hello").delay(0.01)


def test_per_host_limit_holds_under_load(client_kind: str, scripted_server: ServerFactory) -> None:
    servers = scripted_server.multi(slow_hello)
    limits = poolhttp.Limits(max_connections=100, max_connections_per_host=4)
    with make_client(client_kind, limits=limits) as client:
        run_concurrently(client, [servers.url("/", i % 3) for i in range(360)], workers=30)
        assert client.stats().connections <= 12
    for server in servers:
        assert server.max_active == 4  # reached, never exceeded
        assert server.accepted == 4


def test_total_limit_holds(client_kind: str, scripted_server: ServerFactory) -> None:
    server = scripted_server(slow_hello)
    with make_client(client_kind, limits=poolhttp.Limits(max_connections=6)) as client:
        run_concurrently(client, [server.url("/")] * 120, workers=24)
    assert server.max_active == 6
    assert server.accepted == 6


def test_total_limit_holds_across_origins(client_kind: str, scripted_server: ServerFactory) -> None:
    """Three origins share six slots, so slots move between origins (the oldest waiter gets
    the next one). The server may see a new connection before it reads the old one's FIN, so
    concurrency across origins is sampled from the client; the servers check the work."""
    servers = scripted_server.multi(slow_hello)
    limits = poolhttp.Limits(max_connections=6, max_connections_per_host=4)
    with make_client(client_kind, limits=limits) as client:
        peak = peak_per_host = 0
        done = threading.Event()

        def sample() -> None:
            nonlocal peak, peak_per_host
            while not done.is_set():
                stats = client.stats()
                peak = max(peak, stats.connections)
                peak_per_host = max([peak_per_host,
                                     *(h.connections for h in stats.per_host.values())])
                time.sleep(0.002)

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            run_concurrently(client, [servers.url("/", i % 3) for i in range(240)], workers=24)
        finally:
            done.set()
            sampler.join()
    assert 4 <= peak <= 6
    assert peak_per_host <= 4
    assert all(server.requests == 80 for server in servers)  # every origin was served


def run_concurrently(client: poolhttp.Client | AsyncFacade, urls: list[str],
                     workers: int) -> None:
    errors: list[BaseException] = []
    lock = threading.Lock()
    pending = list(urls)

    def worker() -> None:
        while True:
            with lock:
                if not pending:
                    return
                url = pending.pop()
            try:
                assert client.get(url).status_code == 200
            except BaseException as exc:
                errors.append(exc)
                return

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors[:3]


def test_pool_timeout_fires_near_the_limit_and_names_the_limits(
        client_kind: str, scripted_server: ServerFactory) -> None:
    gate = Gate()

    async def held(request: ReceivedRequest) -> Reply:
        if request.path == "/hold":
            await gate.wait(timeout=10)
        return Reply.ok(b"done")

    server = scripted_server(held)
    with make_client(client_kind, limits=poolhttp.Limits(max_connections=1)) as client:
        holder = threading.Thread(target=client.get, args=(server.url("/hold"),))
        holder.start()
        server.wait_for(lambda c: c.requests == 1)
        started = time.monotonic()
        with pytest.raises(poolhttp.PoolTimeout) as info:
            client.get(server.url("/"), timeout=poolhttp.Timeout(5.0, pool=0.3))
        waited = time.monotonic() - started
        gate.set()
        holder.join(10)
        assert client.get(server.url("/")).content == b"done"  # the pool still works
    assert 0.3 <= waited < 1.5
    message = str(info.value)
    assert server.origin in message
    assert "0.3s" in message
    assert "max_connections=1" in message
    assert info.value.origin == server.origin
    assert isinstance(info.value, TimeoutError)


def test_waiters_are_served_in_arrival_order(client_kind: str,
                                             scripted_server: ServerFactory) -> None:
    gate = Gate()

    async def handler(request: ReceivedRequest) -> Reply:
        if request.path == "/hold":
            await gate.wait(timeout=10)
        return Reply.ok(request.path.encode())

    server = scripted_server(handler)
    order = [f"/w{i}" for i in range(8)]
    with make_client(client_kind, limits=poolhttp.Limits(max_connections=1)) as client:
        threads = [threading.Thread(target=client.get, args=(server.url("/hold"),))]
        threads[0].start()
        server.wait_for(lambda c: c.requests == 1)
        for i, path in enumerate(order):
            thread = threading.Thread(target=client.get, args=(server.url(path),))
            thread.start()
            threads.append(thread)
            deadline = time.monotonic() + 5
            while client.stats().waiting < i + 1:  # queued before the next one arrives
                assert time.monotonic() < deadline, "request did not queue"
                time.sleep(0.005)
        gate.set()
        for thread in threads:
            thread.join(10)
    assert [r.path for r in server.received] == ["/hold", *order]
    assert server.accepted == 1


def test_cross_host_no_starvation_idle_connection_makes_room(
        client_kind: str, scripted_server: ServerFactory) -> None:
    servers = scripted_server.multi(lambda request: Reply.ok(b"hello").delay(0.1))
    with make_client(client_kind, limits=poolhttp.Limits(max_connections=2)) as client:
        run_concurrently(client, [servers.url("/", 0)] * 2, workers=2)  # overlapping: 2 conns
        assert client.stats().per_host[servers[0].origin].idle == 2
        # The total limit is reached by idle connections to origin A; B must not wait.
        started = time.monotonic()
        assert client.get(servers.url("/", 1), timeout=poolhttp.Timeout(5.0, pool=2.0))
        assert time.monotonic() - started < 1.0
        stats = client.stats()
        # The server saw one of A's idle connections closed by us to make the room.
        servers[0].wait_for(lambda c: c.closed_by_client == 1)
        assert servers[0].active == 1
    assert stats.per_host[servers[0].origin].idle == 1
    assert stats.per_host[servers[1].origin].created == 1


def test_blocked_origin_gets_a_slot_before_newer_requests(client_kind: str,
                                                          scripted_server: ServerFactory) -> None:
    """A busy origin A keeps getting requests; B's request, queued behind the total limit,
    must get the next freed slot rather than wait for A's load to stop."""
    servers = scripted_server.multi(slow_hello)
    limits = poolhttp.Limits(max_connections=2)
    with make_client(client_kind, limits=limits) as client:
        stop = threading.Event()
        errors: list[BaseException] = []

        def hammer_a() -> None:
            while not stop.is_set():
                try:
                    client.get(servers.url("/", 0))
                except BaseException as exc:
                    errors.append(exc)
                    return

        hammers = [threading.Thread(target=hammer_a) for _ in range(4)]
        for thread in hammers:
            thread.start()
        servers[0].wait_for(lambda c: c.requests >= 8)
        started = time.monotonic()
        response = client.get(servers.url("/", 1), timeout=poolhttp.Timeout(5.0, pool=3.0))
        waited = time.monotonic() - started
        stop.set()
        for thread in hammers:
            thread.join(10)
    assert not errors, errors[:3]
    assert response.status_code == 200
    assert waited < 1.0  # a few 10 ms requests at most, not A's whole load
