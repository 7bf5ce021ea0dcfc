"""fetch_many against real loopback servers: bounds, every result, laziness, rate, cleanup."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

import poolhttp
from poolhttp.bulk import BulkRequest, BulkResult, fetch_many
from poolhttp.cli._server import LocalServer


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def collect(client: poolhttp.AsyncClient, items: Any, **kwargs: Any) -> list[BulkResult]:
    return [r async for r in fetch_many(client, items, **kwargs)]


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_window_bounds_hold_on_the_server_side() -> None:
    async def main() -> None:
        async with LocalServer(hosts=3) as server, poolhttp.AsyncClient() as client:
            urls = [f"{server.origins[i % 3]}/w/{i}?delay=0.02" for i in range(120)]
            results = await collect(client, urls, concurrency=7, per_host=3)
            assert len(results) == 120
            assert all(r.status == 200 for r in results)
            stats = server.stats
            assert stats.max_in_flight <= 7
            assert max(stats.max_per_origin.values()) <= 3
            # and the window actually slides: it runs full most of the time
            assert stats.max_in_flight == 7
    run(main())


def test_every_input_gets_one_result_failures_included() -> None:
    dead = f"http://127.0.0.1:{closed_port()}"

    async def main() -> None:
        async with LocalServer(hosts=1) as server, poolhttp.AsyncClient() as client:
            origin = server.origins[0]
            items: list[Any] = [
                f"{origin}/ok", f"{origin}/missing?status=404", f"{dead}/refused",
                f"{origin}/hangup?close=1", "not a url", 42, f"{origin}/slow?delay=2",
                BulkRequest(f"{origin}/echo", method="POST", body="hi", key="mine",
                            headers={"X-Tag": "t1"}),
                BulkRequest(f"{origin}/x", method="BAD METHOD"),
            ]
            results = await collect(client, items, timeout=poolhttp.Timeout(0.5))
            by_key = {r.key: r for r in results}
            assert sorted(by_key, key=str) == sorted([*range(7), "mine", 8], key=str)
            assert by_key[0].status == 200
            assert by_key[0].ok
            assert by_key[1].status == 404
            assert by_key[1].ok  # an HTTP error status is a response, not a failure
            assert by_key[2].error_type == "ConnectError"
            assert by_key[3].error_type is not None
            assert "ServerDisconnected" in by_key[3].error_type \
                or by_key[3].error_type == "StaleConnectionError"
            assert by_key[4].error_type == "InvalidURL"
            assert by_key[5].error_type == "InvalidRequest"
            assert by_key[6].error_type == "ReadTimeout"
            assert by_key[8].error_type == "InvalidRequest"
            echo = by_key["mine"]
            assert echo.method == "POST"
            assert echo.body is not None
            assert b'"x-tag": "t1"' in echo.body
            assert b'"body_size": 2' in echo.body
            for r in results:
                assert (r.status is None) == (r.error is not None)
    run(main())


def test_body_digest_and_size_without_keeping_bodies() -> None:
    async def main() -> None:
        async with LocalServer() as server, poolhttp.AsyncClient() as client:
            url = f"{server.origins[0]}/big?size=300000"
            [kept] = await collect(client, [url])
            [hashed] = await collect(client, [url], keep_bodies=False)
            assert kept.body is not None
            assert len(kept.body) == kept.size == 300_000
            assert kept.sha256 == hashlib.sha256(kept.body).hexdigest()
            assert hashed.body is None
            assert (hashed.size, hashed.sha256) == (kept.size, kept.sha256)
            assert hashed.headers is not None
            assert hashed.headers["content-length"] == "300000"
    run(main())


def test_input_is_pulled_lazily_and_bounded() -> None:
    pulled = 0

    def urls(origin: str) -> Iterator[str]:
        nonlocal pulled
        for i in range(100_000):
            pulled += 1
            yield f"{origin}/lazy/{i}"

    async def main() -> None:
        async with LocalServer() as server, poolhttp.AsyncClient() as client:
            taken = 0
            async with contextlib.aclosing(fetch_many(client, urls(server.origins[0]),
                                                      concurrency=4, per_host=4,
                                                      backlog=10)) as results:
                async for _ in results:
                    taken += 1
                    # in flight + parked + results waiting: never the whole input
                    assert pulled <= taken + 4 + 10 + 4 + 1
                    if taken == 200:
                        break
            assert pulled < 300
    run(main())


def test_one_busy_origin_does_not_stall_the_window() -> None:
    async def main() -> None:
        async with LocalServer(hosts=2) as server, poolhttp.AsyncClient() as client:
            slow, fast = server.origins
            urls = [f"{slow}/s/{i}?delay=0.3" for i in range(8)]
            urls += [f"{fast}/f/{i}" for i in range(50)]
            order = []
            async for r in fetch_many(client, urls, concurrency=10, per_host=2):
                order.append(r.url.startswith(fast))
            # every fast URL came back before the slow origin had finished its 8 (2 at a time)
            assert order[:50].count(True) == 50
    run(main())


async def test_per_host_rate_limit_is_roughly_respected() -> None:
    """On both loops (uvloop's call_at returns a plain Handle for a time already due)."""
    async with LocalServer(hosts=2) as server, poolhttp.AsyncClient() as client:
        urls = [f"{server.origins[i % 2]}/r/{i}" for i in range(16)]
        started = time.monotonic()
        results = await collect(client, urls, rate=20.0)
        elapsed = time.monotonic() - started
        assert len(results) == 16
        assert all(r.status == 200 for r in results)
        # 8 per origin at 20/s: the 8th starts 7 * 50 ms after the first
        assert 0.3 <= elapsed < 3.0


def test_async_iterable_input_fed_from_results() -> None:
    """A crawl: the consumer feeds new URLs from results; nothing deadlocks."""

    async def main() -> None:
        async with LocalServer() as server, poolhttp.AsyncClient() as client:
            queue: asyncio.Queue[str | None] = asyncio.Queue()
            await queue.put(f"{server.origins[0]}/crawl/0")

            async def source() -> AsyncIterator[str]:
                while (url := await queue.get()) is not None:
                    yield url

            seen = 0
            async for result in fetch_many(client, source(), concurrency=4):
                seen += 1
                n = int(result.url.rsplit("/", 1)[1])
                await queue.put(f"{server.origins[0]}/crawl/{n + 1}" if n < 20 else None)
            assert seen == 21
    run(main())


def test_a_failing_input_iterable_ends_the_run_after_its_results() -> None:
    def urls(origin: str) -> Iterator[str]:
        yield f"{origin}/a"
        yield f"{origin}/b"
        raise OSError("the list went away")

    async def main() -> None:
        async with LocalServer() as server, poolhttp.AsyncClient() as client:
            got: list[object] = []

            async def consume() -> None:
                async for r in fetch_many(client, urls(server.origins[0])):
                    got.append(r.key)

            with pytest.raises(OSError, match="the list went away"):
                await consume()
            assert sorted(got, key=str) == [0, 1]
    run(main())


def test_stopping_early_cancels_what_is_in_flight() -> None:
    async def main() -> None:
        async with LocalServer() as server, poolhttp.AsyncClient() as client:
            urls = [f"{server.origins[0]}/x/{i}?delay={0 if i == 0 else 5}" for i in range(20)]
            started = time.monotonic()
            async with contextlib.aclosing(fetch_many(client, urls, concurrency=8,
                                                      per_host=8)) as results:
                async for _ in results:
                    break
            assert time.monotonic() - started < 3
            pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            assert pending == []
        assert server.stats.in_flight == 0
    run(main())


def test_bad_arguments_are_refused_at_once() -> None:
    async def main() -> None:
        async with poolhttp.AsyncClient(limits=poolhttp.Limits(max_connections=10)) as client:
            with pytest.raises(ValueError, match="concurrency=20 exceeds the client's "
                                                 "max_connections=10"):
                fetch_many(client, [], concurrency=20)
            with pytest.raises(ValueError, match="concurrency must be >= 1"):
                fetch_many(client, [], concurrency=0)
            with pytest.raises(TypeError, match="per_host must be an int"):
                fetch_many(client, [], per_host="4")  # type: ignore[arg-type]
            with pytest.raises(ValueError, match="rate must be"):
                fetch_many(client, [], rate=-1)
            with pytest.raises(TypeError, match="requests must be an iterable"):
                fetch_many(client, "http://example.com/")
        with poolhttp.Client() as sync_client, pytest.raises(TypeError,
                                                            match=r"needs a poolhttp\.AsyncClient"):
            fetch_many(sync_client, [])
    run(main())


def test_relative_urls_use_the_clients_base_url() -> None:
    async def main() -> None:
        async with LocalServer() as server, \
                poolhttp.AsyncClient(base_url=server.origins[0] + "/api") as client:
            results = await collect(client, ["/users?id=1", BulkRequest("items", key="i")])
            assert sorted(r.url for r in results) == [f"{server.origins[0]}/api/items",
                                                      f"{server.origins[0]}/api/users?id=1"]
            assert all(r.status == 200 for r in results)
    run(main())


def test_defaults_shrink_to_the_clients_pool() -> None:
    async def main() -> None:
        limits = poolhttp.Limits(max_connections=3, max_connections_per_host=2)
        async with LocalServer() as server, poolhttp.AsyncClient(limits=limits) as client:
            urls = [f"{server.origins[0]}/d/{i}?delay=0.01" for i in range(20)]
            assert len(await collect(client, urls)) == 20
            assert server.stats.max_in_flight <= 2
    run(main())


async def test_a_fast_rate_with_timers_already_due() -> None:
    """A high per-origin rate arms wake-ups that are due at once: on uvloop call_at then gives
    a plain Handle (no when()), which crashed the run."""
    async with LocalServer() as server, poolhttp.AsyncClient() as client:
        urls = [f"{server.origins[0]}/r/{i}" for i in range(300)]
        results = await collect(client, urls, rate=2000.0, concurrency=8)
        assert len(results) == 300
        assert all(r.status == 200 for r in results)


_NO_WAIT = poolhttp.Retry(total=2, backoff_factor=0, jitter=0)


def _retrying_client(how: str, trace: Any, dead: str, cls: Any) -> Any:
    if how == "client":
        return cls(trace=trace, retries=_NO_WAIT)
    if how == "mount":  # only the dead origin's route retries
        return cls(trace=trace, retries=0, mounts={dead: poolhttp.Mount(retries=_NO_WAIT)})
    return cls(trace=trace, retries=0)


@pytest.mark.parametrize("how", ["none", "client", "mount"])
@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
def test_attempts_are_counted_and_the_clients_trace_sees_every_event(how: str,
                                                                     sync: bool) -> None:
    """`attempts` counts the retries of the client's or a mount's policy; the client's own
    `trace=` still sees every request (the bulk fetcher's counter once replaced it)."""
    dead = f"http://127.0.0.1:{closed_port()}"
    events: list[tuple[str, str]] = []

    def trace(event: str, info: dict[str, Any]) -> None:
        events.append((event, str(info.get("origin", ""))))

    async def main() -> list[BulkResult]:
        async with LocalServer(hosts=1) as server:
            urls = [f"{server.origins[0]}/ok/{i}" for i in range(3)] + [f"{dead}/refused"]
            if sync:
                with _retrying_client(how, trace, dead, poolhttp.Client) as client:
                    return await asyncio.to_thread(
                        lambda: list(poolhttp.fetch_many_sync(client, urls, concurrency=2)))
            async with _retrying_client(how, trace, dead, poolhttp.AsyncClient) as client:
                return await collect(client, urls, concurrency=2)

    results = sorted(run(main()), key=lambda r: r.key)
    assert [r.status for r in results] == [200, 200, 200, None]
    assert [r.attempts for r in results] == [1, 1, 1, 1 if how == "none" else 3]
    assert [name for name, _ in events].count("request.sent") == 3
    assert [name for name, _ in events].count("response.headers") == 3
    assert [name for name, _ in events].count("request.retry") == (0 if how == "none" else 2)
