"""Cancellation at every phase leaves the pool consistent and leaks nothing.

Each test uses a pool of ONE connection: if a cancelled request leaked its slot, the next
request would fail with PoolTimeout. The conftest runner fails any test that leaves a task
pending, and the server's counters show the half-used connection was closed.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import pytest

import poolhttp
from tests.support import open_fd_count
from tests.support.nginx import Nginx
from tests.support.scripted import Gate, ReceivedRequest, Reply, ServerFactory, blackhole_listener

ONE = poolhttp.Limits(max_connections=1)
QUICK_POOL = poolhttp.Timeout(5.0, pool=2.0)


async def cancel_after(coroutine: Awaitable[object], delay: float) -> None:
    task = asyncio.ensure_future(coroutine)
    await asyncio.sleep(delay)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def assert_consistent(client: poolhttp.AsyncClient) -> poolhttp.PoolStats:
    stats = client.stats()
    assert stats.connections == stats.connecting + stats.idle + stats.active
    assert (stats.active, stats.waiting, stats.connecting) == (0, 0, 0)
    return stats


async def test_cancel_while_waiting_for_the_pool(scripted_server: ServerFactory) -> None:
    gate = Gate()

    async def handler(request: ReceivedRequest) -> Reply:
        if request.path == "/hold":
            await gate.wait()
        return Reply.ok(b"ok")

    server = scripted_server(handler)
    async with poolhttp.AsyncClient(limits=ONE, timeout=QUICK_POOL) as client:
        holder = asyncio.ensure_future(client.get(server.url("/hold")))
        await server.wait_for_async(lambda s: s.requests == 1)
        waiter = asyncio.ensure_future(client.get(server.url("/w")))
        await asyncio.sleep(0.05)
        assert client.stats().waiting == 1
        waiter.cancel()
        waiter.cancel()  # twice in a row
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert client.stats().waiting == 0
        gate.set()
        assert (await holder).content == b"ok"
        assert (await client.get(server.url())).content == b"ok"
        stats = assert_consistent(client)
    assert stats.created == 1  # the holder's connection was kept: it was cleanly idle
    assert server.accepted == 1


@pytest.mark.parametrize("stream", [False, True])
async def test_cancel_as_the_response_completes_spares_the_next_request(
        scripted_server: ServerFactory, stream: bool) -> None:
    """A task cancelled after its response arrived, but before it ran again, must not
    abandon the connection: it went back to the pool and serves another request by then
    (found by the chaos test: that request got a CancelledError of its own)."""
    gate = Gate()

    async def handler(request: ReceivedRequest) -> Reply:
        if request.path == "/first":
            await gate.wait()
        return Reply.ok(b"ok")

    async def first_request() -> bytes:
        if not stream:
            return (await client.get(server.url("/first"))).content
        async with client.stream("GET", server.url("/first")) as response:
            return await response.aread()

    server = scripted_server(handler)
    async with poolhttp.AsyncClient(limits=ONE, timeout=QUICK_POOL) as client:
        first = asyncio.ensure_future(first_request())
        await server.wait_for_async(lambda s: s.requests == 1)

        def cancel_first(event: str, info: dict[str, Any]) -> None:
            # The second request got the connection, so the first one's response is done;
            # the first task has not run since: cancel it now, before it does.
            if event == "connection.acquired":
                first.cancel()

        second = asyncio.ensure_future(client.get(server.url("/second"), trace=cancel_first))
        await asyncio.sleep(0.05)  # the second request waits for the only connection
        gate.set()
        assert (await second).content == b"ok"
        if stream:  # its head came first: the task may have finished before the cancel
            await asyncio.wait([first])
            assert first.cancelled() or first.result() == b"ok"
        else:
            with pytest.raises(asyncio.CancelledError):
                await first
        stats = assert_consistent(client)
    assert stats.created == 1
    assert server.accepted == 1


async def test_cancel_while_connecting() -> None:
    with blackhole_listener() as hole:
        async with poolhttp.AsyncClient(limits=ONE, timeout=QUICK_POOL) as client:
            await cancel_after(client.get(hole.url()), 0.1)
            stats = assert_consistent(client)
            assert stats.connections == 0
            # The slot is free: another connect starts (and is cancelled) at once, rather
            # than the request waiting for a slot.
            task = asyncio.ensure_future(client.get(hole.url()))
            await asyncio.sleep(0.1)
            assert (client.stats().connecting, client.stats().waiting) == (1, 1)  # its own
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # Neither connect finished: attempts are not counted as created connections.
            assert assert_consistent(client).created == 0


async def test_cancel_during_the_tls_handshake(scripted_server: ServerFactory,
                                               nginx: Nginx) -> None:
    server = scripted_server(on_accept="stall")  # accepts, never answers the ClientHello
    url = server.url().replace("http://", "https://")
    async with poolhttp.AsyncClient(limits=ONE, timeout=QUICK_POOL,
                                    verify=nginx.ca_path) as client:
        await cancel_after(client.get(url), 0.2)
        assert assert_consistent(client).connections == 0
        await server.wait_for_async(lambda s: s.closed_by_client == 1)
        assert (await client.get(nginx.https_url("/"))).status_code == 200


async def test_cancel_while_sending_a_large_body(scripted_server: ServerFactory) -> None:
    server = scripted_server(on_accept="deaf")
    async with poolhttp.AsyncClient(limits=ONE, timeout=QUICK_POOL) as client:
        await cancel_after(client.post(server.url(), content=b"x" * (32 << 20)), 0.2)
        assert assert_consistent(client).connections == 0


async def test_cancel_while_streaming_a_request_body(scripted_server: ServerFactory) -> None:
    server = scripted_server()
    started = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield b"first"
        started.set()
        await asyncio.sleep(30)
        yield b"never"

    async with poolhttp.AsyncClient(limits=ONE, timeout=QUICK_POOL) as client:
        task = asyncio.ensure_future(client.post(server.url(), content=body()))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert assert_consistent(client).connections == 0
        assert (await client.get(server.url())).status_code == 200


async def test_cancel_while_waiting_for_headers(scripted_server: ServerFactory) -> None:
    server = scripted_server(lambda request: Reply.stall() if request.path == "/stall"
                             else Reply.ok(b"ok"))
    async with poolhttp.AsyncClient(limits=ONE, timeout=QUICK_POOL) as client:
        await client.get(server.url())  # the connection is reused for the stalled request
        await cancel_after(client.get(server.url("/stall")), 0.1)
        stats = assert_consistent(client)
        assert stats.connections == 0  # half-used: discarded, never reused
        await server.wait_for_async(lambda s: s.closed_by_client == 1)
        assert (await client.get(server.url())).content == b"ok"
    assert server.accepted == 2


async def test_cancel_while_reading_the_body(scripted_server: ServerFactory) -> None:
    server = scripted_server(lambda request: Reply.chunked([b"a"] * 50, interval=0.05))
    async with poolhttp.AsyncClient(limits=ONE, timeout=QUICK_POOL) as client:

        async def read_some() -> None:
            async with client.stream("GET", server.url()) as response:
                async for _ in response.aiter_bytes():
                    pass

        await cancel_after(read_some(), 0.3)
        assert assert_consistent(client).connections == 0
        await cancel_after(client.get(server.url()), 0.3)  # non-streamed, mid-body
        assert assert_consistent(client).connections == 0
    assert server.accepted == 2


async def test_cancel_while_closing(nginx: Nginx) -> None:
    before = open_fd_count()
    client = poolhttp.AsyncClient(verify=nginx.ca_path)
    await client.get(nginx.url("/"))
    await client.get(nginx.https_url("/"))
    closing = asyncio.ensure_future(client.aclose())
    await asyncio.sleep(0)
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    await client.aclose()  # closing again finishes the job
    with pytest.raises(poolhttp.PoolClosed):
        await client.get(nginx.url("/"))
    await asyncio.sleep(0.05)
    assert open_fd_count() <= before + 1  # uvloop may have opened /dev/null on first use


async def test_wait_for_around_a_request(scripted_server: ServerFactory) -> None:
    server = scripted_server(lambda request: Reply.ok(b"late").delay(1.0)
                             if request.path == "/slow" else Reply.ok(b"ok"))
    async with poolhttp.AsyncClient(limits=ONE, timeout=QUICK_POOL) as client:
        for _ in range(3):
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(client.get(server.url("/slow")), 0.1)
            assert_consistent(client)
            assert (await client.get(server.url())).content == b"ok"


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout() is new in 3.11")
async def test_asyncio_timeout_around_a_request(scripted_server: ServerFactory) -> None:
    server = scripted_server(lambda request: Reply.ok(b"late").delay(1.0))
    async with poolhttp.AsyncClient(limits=ONE, timeout=QUICK_POOL) as client:
        with pytest.raises(TimeoutError):
            # New in 3.11: mypy checks as 3.10, where this test is skipped.
            async with asyncio.timeout(0.1):  # type: ignore[attr-defined]
                await client.get(server.url())
        assert assert_consistent(client).connections == 0


async def test_user_exception_inside_stream(nginx: Nginx) -> None:
    async with poolhttp.AsyncClient(limits=ONE, timeout=QUICK_POOL) as client:

        async def consume() -> None:
            async with client.stream("GET", nginx.url("/1m")) as response:
                async for _ in response.aiter_bytes():
                    raise ValueError("user code failed")

        with pytest.raises(ValueError, match="user code"):
            await consume()
        stats = assert_consistent(client)
        assert stats.connections == 0  # mid-body: discarded
        assert (await client.get(nginx.url("/"))).status_code == 200


async def test_many_random_cancellations_leave_the_pool_consistent(nginx: Nginx) -> None:
    import random
    rng = random.Random(7)
    async with poolhttp.AsyncClient(limits=poolhttp.Limits(max_connections=4),
                                    timeout=QUICK_POOL) as client:

        async def one() -> None:
            path = rng.choice(["/", "/16k", "/1m"])
            async with client.stream("GET", nginx.url(path)) as response:
                async for _ in response.aiter_bytes():
                    await asyncio.sleep(0)

        for _ in range(20):
            tasks = [asyncio.ensure_future(one()) for _ in range(12)]
            await asyncio.sleep(rng.random() * 0.01)
            for task in tasks:
                if rng.random() < 0.5:
                    task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # A connect opened for a waiter that another connection served first lands in the
            # idle pool when it completes: let any such connect finish, then check.
            for _ in range(100):
                if client.stats().connecting == 0:
                    break
                await asyncio.sleep(0.01)
            assert_consistent(client)
        assert (await client.get(nginx.url("/"))).status_code == 200
