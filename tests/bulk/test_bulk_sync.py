"""fetch_many_sync: the same window on worker threads, with the blocking Client."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

import poolhttp
from poolhttp.bulk import BulkRequest, fetch_many_sync

from .helpers import ThreadedServer


def test_bounds_results_and_failures() -> None:
    with ThreadedServer(hosts=3) as server, poolhttp.Client() as client:
        urls: list[str | BulkRequest] = [
            f"{server.origins[i % 3]}/s/{i}?delay=0.02" for i in range(60)]
        urls += ["nope://x", f"{server.origins[0]}/gone?status=410",
                 BulkRequest(f"{server.origins[1]}/echo", method="PUT", body=b"abc", key="k")]
        results = list(fetch_many_sync(client, urls, concurrency=5, per_host=2))
    assert len(results) == 63
    by_key = {r.key: r for r in results}
    assert by_key[60].error_type == "InvalidURL"
    assert by_key[61].status == 410
    assert by_key["k"].body is not None
    assert b'"method": "PUT"' in by_key["k"].body
    assert all(by_key[i].status == 200 for i in range(60))
    assert server.stats.max_in_flight <= 5
    assert max(server.stats.max_per_origin.values()) <= 2


def test_streamed_digest_matches() -> None:
    with ThreadedServer() as server, poolhttp.Client() as client:
        url = f"{server.origins[0]}/b?size=100000"
        [kept] = fetch_many_sync(client, [url])
        [hashed] = fetch_many_sync(client, [url], keep_bodies=False)
    assert kept.body is not None
    assert hashed.body is None
    assert (hashed.size, hashed.sha256) == (100_000, kept.sha256)


def test_lazy_input_and_early_close_join_every_worker() -> None:
    pulled = 0

    def urls(origin: str) -> Iterator[str]:
        nonlocal pulled
        for i in range(10_000):
            pulled += 1
            yield f"{origin}/l/{i}?delay=0.01"

    def workers() -> int:  # threads but the pool's own idle-expiry thread
        return sum(t.name != "poolhttp-expiry" for t in threading.enumerate())

    before = workers()
    with ThreadedServer() as server, poolhttp.Client() as client:
        with fetch_many_sync(client, urls(server.origins[0]), concurrency=4,
                             per_host=4, backlog=8) as results:
            for n, _ in enumerate(results, 1):
                assert pulled <= n + 4 + 8 + 4 + 1
                if n == 30:
                    break
        assert workers() == before + 1  # only the server's thread is left
    assert pulled < 60


def test_a_failing_input_raises_after_the_results_of_what_was_pulled() -> None:
    def urls(origin: str) -> Iterator[str]:
        yield f"{origin}/a?delay=0.1"
        yield f"{origin}/b"
        raise OSError("the list went away")

    got: list[object] = []

    def consume(client: poolhttp.Client, origin: str) -> None:
        for result in fetch_many_sync(client, urls(origin)):
            got.append(result.key)

    with ThreadedServer() as server, poolhttp.Client() as client, \
            pytest.raises(OSError, match="the list went away"):
        consume(client, server.origins[0])
    assert sorted(got, key=str) == [0, 1]


def test_rate_limit() -> None:
    with ThreadedServer() as server, poolhttp.Client() as client:
        started = time.monotonic()
        results = list(fetch_many_sync(client, [f"{server.origins[0]}/r/{i}" for i in range(6)],
                                       rate=10.0))
        elapsed = time.monotonic() - started
    assert len(results) == 6
    assert 0.4 <= elapsed < 3.0  # 6 starts, 100 ms apart


def test_refuses_an_async_client() -> None:
    client = poolhttp.AsyncClient()
    try:
        with pytest.raises(TypeError, match=r"needs a poolhttp\.Client"):
            fetch_many_sync(client, [])
    finally:
        import asyncio

        asyncio.run(client.aclose())
