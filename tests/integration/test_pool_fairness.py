"""Load spanning several origins: no connection churn, no starvation, true accounting.

Counted from the server's side (nginx's accepted connections). One nginx serves three
origins (127.0.0.1, .2, .3), so its counters are the totals of all three.

The scenarios are those in which the pool used to close a connection on nearly every release
to hand its slot to an older request of another origin: round-robin over three origins with
more requests in flight than `max_connections`.
"""

from __future__ import annotations

import asyncio
import time

import pytest

import poolhttp
from tests.conftest import new_event_loop
from tests.integration.test_pool_limits import run_concurrently
from tests.support.nginx import Nginx
from tests.support.scripted import MultiOriginServer, ReceivedRequest, Reply

MAX = 20


def round_robin(nginx: Nginx, count: int) -> list[str]:
    return [nginx.url("/", i % 3) for i in range(count)]


def check_accounting(stats: poolhttp.PoolStats, accepted: int, responses: int,
                     limit: int = MAX) -> None:
    """`created` is what the server accepted; connections that never carried a request stay
    within the limit; and the churn bound of the issue: at most 2 x max_connections."""
    assert stats.created == accepted
    assert accepted <= 2 * limit, f"{accepted} connections accepted for {responses} requests"
    never_used = stats.created + stats.reused - responses
    assert 0 <= never_used <= limit


async def gather_round_robin(nginx: Nginx, requests: int, concurrency: int,
                             limits: poolhttp.Limits) -> tuple[poolhttp.PoolStats, int]:
    before = nginx.server_stats()
    urls = round_robin(nginx, requests)
    async with poolhttp.AsyncClient(limits=limits) as client:
        semaphore = asyncio.Semaphore(concurrency)

        async def one(url: str) -> int:
            async with semaphore:
                return (await client.get(url)).status_code

        statuses = await asyncio.gather(*[one(url) for url in urls])
        stats = client.stats()
    assert statuses == [200] * requests
    server = nginx.server_stats().since(before)
    assert server.requests == requests
    return stats, server.accepted


async def test_gather_round_robin_over_three_origins_does_not_churn(nginx: Nginx) -> None:
    stats, accepted = await gather_round_robin(nginx, 1_000, 100,
                                               poolhttp.Limits(max_connections=MAX))
    check_accounting(stats, accepted, 1_000)


async def test_gather_500_with_fewer_keepalive_connections_does_not_churn(nginx: Nginx) -> None:
    limits = poolhttp.Limits(max_connections=MAX, max_keepalive_connections=10)
    stats, accepted = await gather_round_robin(nginx, 2_000, 500, limits)
    check_accounting(stats, accepted, 2_000)


def test_100_threads_round_robin_over_three_origins_do_not_churn(nginx: Nginx) -> None:
    before = nginx.server_stats()
    with poolhttp.Client(limits=poolhttp.Limits(max_connections=MAX)) as client:
        run_concurrently(client, round_robin(nginx, 1_000), workers=100)
        stats = client.stats()
    server = nginx.server_stats().since(before)
    assert server.requests == 1_000
    check_accounting(stats, server.accepted, 1_000)


def slow(request: ReceivedRequest) -> Reply:
    return Reply.ok(b"hello").delay(0.02)


async def test_a_late_request_to_another_origin_does_not_wait_behind_the_queue(
        loop_kind: str) -> None:
    """Origin A has 500 requests queued behind 20 connections (each takes 20 ms: the queue
    is 0.5 s deep); a request to origin B arriving later gets the next freed slot, not the
    one after A's whole queue. Its wait is about one service time of one of A's requests."""
    with MultiOriginServer(slow) as servers:
        async with poolhttp.AsyncClient(limits=poolhttp.Limits(max_connections=MAX)) as client:
            queued = [asyncio.ensure_future(client.get(servers.url("/", 0)))
                      for _ in range(500)]
            await servers.wait_for_async(lambda s: s[0].requests >= MAX, timeout=10)
            started = time.monotonic()
            response = await client.get(servers.url("/", 1))
            waited = time.monotonic() - started
            a_done = sum(task.done() for task in queued)
            results = await asyncio.gather(*queued)
        assert response.status_code == 200
        assert all(r.status_code == 200 for r in results)
        # Behind the whole queue it would wait ~0.5 s and see ~480 of A's requests done.
        assert a_done < 250, f"{a_done} of A's 500 requests were served first ({waited:.2f}s)"
        assert servers[1].accepted == 1


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_fetch_like_window_over_three_origins(nginx: Nginx, loop_kind: str) -> None:
    """The bulk fetcher's shape: a window of 10 in flight, at most 8 per origin."""
    loop = new_event_loop(loop_kind)
    try:
        limits = poolhttp.Limits(max_connections=10, max_connections_per_host=8)
        stats, accepted = loop.run_until_complete(
            gather_round_robin(nginx, 3_000, 10, limits))
    finally:
        loop.close()
    check_accounting(stats, accepted, 3_000, limit=10)
