"""`max_keepalive_connections=0`: every connection closes after its response, also while
requests wait (aiohttp's `force_close=True`), counted from nginx's side.

nginx's stub_status counts accepted connections but keeps no peak of concurrent ones (and it
may see a new connection before the FIN of the one it replaces), so the limit at any moment
is sampled from the client's stats; the totals are the server's.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest

import poolhttp
from tests.integration.clients import make_client
from tests.support.nginx import Nginx, ServerStats
from tests.support.scripted import ServerFactory, echo_handler

REQUESTS = 50
LIMIT = 10
NO_KEEPALIVE = poolhttp.Limits(max_connections=LIMIT, max_keepalive_connections=0)
KEEPALIVE = poolhttp.Limits(max_connections=LIMIT)


async def gather_gets(nginx: Nginx, limits: poolhttp.Limits
                      ) -> tuple[list[poolhttp.Response], poolhttp.PoolStats, int]:
    """REQUESTS concurrent GETs; the responses, the final stats and the most connections
    the client held at once (sampled every loop iteration)."""
    url = nginx.url("/")
    async with poolhttp.AsyncClient(limits=limits) as client:
        peak = 0
        done = False

        async def sample() -> None:
            nonlocal peak
            while not done:
                peak = max(peak, client.stats().connections)
                await asyncio.sleep(0)

        sampler = asyncio.create_task(sample())
        try:
            responses = await asyncio.gather(*[client.get(url) for _ in range(REQUESTS)])
        finally:
            done = True
            await sampler
        stats = client.stats()
    return responses, stats, peak


def thread_gets(nginx: Nginx, limits: poolhttp.Limits
                ) -> tuple[list[poolhttp.Response], poolhttp.PoolStats, int]:
    """The same from REQUESTS threads sharing one Client, started together."""
    url = nginx.url("/")
    responses: list[poolhttp.Response] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(REQUESTS)
    with poolhttp.Client(limits=limits) as client:
        peak = 0
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, client.stats().connections)
                time.sleep(0.0005)

        def get() -> None:
            try:
                barrier.wait()
                responses.append(client.get(url))
            except BaseException as exc:
                errors.append(exc)

        sampler = threading.Thread(target=sample)
        sampler.start()
        threads = [threading.Thread(target=get) for _ in range(REQUESTS)]
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        finally:
            done.set()
            sampler.join()
        stats = client.stats()
    assert not errors, errors[:3]
    return responses, stats, peak


def check_no_keepalive(nginx: Nginx, before: ServerStats, responses: list[poolhttp.Response],
                       stats: poolhttp.PoolStats, peak: int) -> None:
    assert [r.status_code for r in responses] == [200] * REQUESTS
    assert all(r.content == b"hello\n" for r in responses)
    server = nginx.server_stats().since(before)
    assert (server.accepted, server.requests) == (REQUESTS, REQUESTS)  # one request each
    assert (stats.created, stats.reused, stats.closed) == (REQUESTS, 0, REQUESTS)
    assert (stats.connections, stats.idle) == (0, 0)
    assert 1 < peak <= LIMIT
    nginx.wait_for_stats(lambda s: s.active == 0)  # all closed on the server's side too


def check_keepalive(nginx: Nginx, before: ServerStats, responses: list[poolhttp.Response],
                    stats: poolhttp.PoolStats, peak: int) -> None:
    assert [r.status_code for r in responses] == [200] * REQUESTS
    server = nginx.server_stats().since(before)
    assert server.requests == REQUESTS
    assert 1 <= server.accepted <= LIMIT
    assert server.accepted == stats.created == stats.idle
    assert stats.reused == REQUESTS - stats.created
    assert peak <= LIMIT


async def test_no_keepalive_opens_a_connection_per_request_within_the_limit(
        nginx: Nginx) -> None:
    before = nginx.server_stats()
    check_no_keepalive(nginx, before, *await gather_gets(nginx, NO_KEEPALIVE))


async def test_default_keepalive_reuses_at_most_the_limit(nginx: Nginx) -> None:
    before = nginx.server_stats()
    responses, stats, peak = await gather_gets(nginx, KEEPALIVE)
    check_keepalive(nginx, before, responses, stats, peak)
    assert stats.created == LIMIT  # 50 at once: all ten opened, then reused


def test_threads_no_keepalive_open_a_connection_per_request_within_the_limit(
        nginx: Nginx) -> None:
    before = nginx.server_stats()
    check_no_keepalive(nginx, before, *thread_gets(nginx, NO_KEEPALIVE))


def test_threads_default_keepalive_reuses_at_most_the_limit(nginx: Nginx) -> None:
    before = nginx.server_stats()
    check_keepalive(nginx, before, *thread_gets(nginx, KEEPALIVE))


# -- HTTP/2: streams share a busy connection; it closes when its last stream ends -----------

@pytest.mark.parametrize("limits", [
    poolhttp.Limits(max_connections=LIMIT, max_keepalive_connections=0),
    poolhttp.Limits(max_connections=LIMIT, keepalive_expiry=0),
], ids=["max_keepalive=0", "expiry=0"])
async def test_http2_streams_share_a_busy_connection_closed_when_idle(
        nginx: Nginx, limits: poolhttp.Limits) -> None:
    before = nginx.server_stats()
    url = nginx.https_url("/")
    async with poolhttp.AsyncClient(http2=True, verify=nginx.ca_path, limits=limits) as client:
        responses = await asyncio.gather(*[client.get(url) for _ in range(200)])
        assert {(r.status_code, r.http_version, r.text) for r in responses} == {
            (200, "HTTP/2", "hello\n")}
        assert client.stats().connections == 0  # none kept once its streams ended
        # 200 at once: two connections of 100 streams (the client's stream limit).
        assert nginx.server_stats().since(before).accepted == 2
        for _ in range(3):  # one at a time: each finds nothing open and opens one
            assert (await client.get(url)).http_version == "HTTP/2"
        stats = client.stats()
    counted = nginx.server_stats().since(before)
    assert (counted.accepted, counted.requests) == (5, 203)
    assert (stats.created, stats.closed, stats.connections) == (5, 5, 0)


def test_threads_http2_sequential_requests_each_open_a_connection(nginx: Nginx) -> None:
    before = nginx.server_stats()
    with poolhttp.Client(http2=True, verify=nginx.ca_path, limits=NO_KEEPALIVE) as client:
        for _ in range(5):
            assert client.get(nginx.https_url("/")).http_version == "HTTP/2"
        assert client.stats().connections == 0
    counted = nginx.server_stats().since(before)
    assert (counted.accepted, counted.requests) == (5, 5)


def test_requests_say_connection_close_when_keepalive_is_off(
        client_kind: str, scripted_server: ServerFactory) -> None:
    """RFC 9112 9.6: a client that will not keep the connection says so, so that the server
    closes first (and holds the TIME_WAIT); a Connection header of the caller's wins."""
    server = scripted_server(echo_handler)
    limits = poolhttp.Limits(max_keepalive_connections=0)
    with make_client(client_kind, limits=limits) as client:
        sent = [json.loads(client.get(server.url()).content)["headers"] for _ in range(2)]
        own = json.loads(client.get(server.url(), headers={"Connection": "keep-alive"})
                         .content)["headers"]
    for headers in sent:
        assert [value for name, value in headers if name.lower() == "connection"] == ["close"]
    assert [value for name, value in own if name.lower() == "connection"] == ["keep-alive"]
    assert server.accepted == 3
    with make_client(client_kind) as client:
        default = json.loads(client.get(server.url()).content)["headers"]
    assert [name for name, _ in default if name.lower() == "connection"] == []
