"""Happy eyeballs dialers (poolhttp._async.dial, poolhttp._sync.dial) on loopback sockets.

Stand-ins for a broken and a working family: a "blackholed" address is a loopback listener
whose accept queue is full (Linux drops the SYNs, so the connect hangs), a refused one is a
bound port nobody listens on, a working one a plain listening socket. Two IPv4 loopback
addresses (127.0.0.2, 127.0.0.1) stand for the two families where the test is about the
staggering; one test uses real ::1 and 127.0.0.1 to check the interleaving end to end.

The elapsed-time checks are correctness bounds (the delay is honoured, nothing hangs), kept
generous; speed is measured in benchmarks.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

import poolhttp
from poolhttp._async import dial as async_dial
from poolhttp._config import Timeout
from poolhttp._core.connect import ConnectPlan
from poolhttp._core.dns import Address, DnsCache
from poolhttp._core.eyeballs import interleave
from poolhttp._sync import dial as sync_dial
from poolhttp._urls import Origin
from tests.support import listening_socket, open_fd_count
from tests.support.nginx import ipv6_loopback_available
from tests.support.scripted import blackhole_listener, refusing_port

ORIGIN = Origin("http", "dial.test", 80)
DELAY = 0.1
BOUND = 1.0  # a generous ceiling for "delay plus one loopback connect"
# A wait may end a hair before a finer clock says it should (uvloop's clock ticks in
# milliseconds; selectors round time-outs to theirs), and the dialers take it as on time.
EARLY = 0.01


@dataclass
class Setup:
    """The `setup` callback: records each socket's family, and fails on request."""

    fail: dict[int, BaseException] = field(default_factory=dict)  # attempt index -> error
    families: list[int] = field(default_factory=list)
    tasks: list[int] = field(default_factory=list)  # asyncio tasks alive at each call

    def __call__(self, sock: socket.socket) -> None:
        self.families.append(sock.family)
        with contextlib.suppress(RuntimeError):  # no running loop: the blocking dialer
            self.tasks.append(len(asyncio.all_tasks()))
        error = self.fail.get(len(self.families) - 1)
        if error is not None:
            raise error
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def make_plan(addresses: list[Address], now: float, connect: float = 5.0,
              total: float | None = None) -> ConnectPlan:
    """A plan built as the pools build theirs, with `addresses` as the resolver's answer."""
    timeout = Timeout(connect=connect, total=total)
    deadline = None if total is None else now + total
    plan = ConnectPlan(ORIGIN, socket.AF_UNSPEC, timeout, deadline, DnsCache(0), now)
    plan.resolved(interleave(addresses), now)
    return plan


def v4(host: str, port: int) -> Address:
    return (socket.AF_INET, (host, port))


@contextlib.contextmanager
def listener(host: str = "127.0.0.1") -> Iterator[Address]:
    """A working address: connects complete into its accept queue (never accepted)."""
    sock = listening_socket(host)
    try:
        yield v4(host, sock.getsockname()[1])
    finally:
        sock.close()


@contextlib.contextmanager
def blackholed(host: str = "127.0.0.2") -> Iterator[Address]:
    with blackhole_listener(host) as hole:
        yield v4(hole.host, hole.port)


@contextlib.contextmanager
def refused(host: str = "127.0.0.2") -> Iterator[Address]:
    with refusing_port(host) as port:
        yield v4(port.host, port.port)


def sync_open(addresses: list[Address], delay: float = DELAY, setup: Setup | None = None,
              connect: float = 5.0, total: float | None = None
              ) -> tuple[socket.socket, Address, float]:
    started = time.monotonic()
    plan = make_plan(addresses, started, connect, total)
    sock, address = sync_dial.open_tcp(plan, list(addresses), delay=delay,
                                       setup=setup or Setup())
    return sock, address, time.monotonic() - started


async def async_open(addresses: list[Address], delay: float = DELAY, setup: Setup | None = None,
                     connect: float = 5.0, total: float | None = None
                     ) -> tuple[socket.socket, Address, float]:
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    plan = make_plan(addresses, loop.time(), connect, total)
    sock, address = await async_dial.open_tcp(loop, plan, list(addresses), delay=delay,
                                              setup=setup or Setup())
    return sock, address, time.monotonic() - started


def assert_connected(sock: socket.socket, address: Address) -> None:
    try:
        assert sock.getpeername()[:2] == address[1][:2]
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)  # setup ran on it
    finally:
        sock.close()


# --------------------------------------------------------------------------------------------
# A hanging first address loses to a working second one, after the delay


def test_sync_blackholed_first_address_loses_to_the_second_after_the_delay() -> None:
    with blackholed() as hole, listener() as good:
        before = open_fd_count()
        sock, address, elapsed = sync_open([hole, good])
        assert open_fd_count() == before + 1  # the winner only: the hanging one is closed
        assert address == good
        assert DELAY - EARLY <= elapsed < BOUND
        assert sock.gettimeout() is None  # blocking, no time-out: the caller's to set
        assert_connected(sock, good)
        assert open_fd_count() == before


async def test_async_blackholed_first_address_loses_to_the_second_after_the_delay() -> None:
    with blackholed() as hole, listener() as good:
        before = open_fd_count()
        sock, address, elapsed = await async_open([hole, good])
        assert open_fd_count() == before + 1
        assert address == good
        assert DELAY - EARLY <= elapsed < BOUND
        assert sock.gettimeout() == 0.0  # non-blocking, for the loop's transports
        assert_connected(sock, good)
        assert open_fd_count() == before


def test_sync_real_ipv6_and_ipv4_are_interleaved() -> None:
    assert ipv6_loopback_available(), "this test needs [::1]"
    with blackholed("127.0.0.2") as hole2, blackholed("127.0.0.3") as hole3, \
            socket.socket(socket.AF_INET6) as server:
        server.bind(("::1", 0))
        server.listen(8)
        good: Address = (socket.AF_INET6, server.getsockname())
        setup = Setup()
        # The resolver's order: both IPv4 addresses (hanging), then IPv6. Interleaved, the
        # IPv6 one goes second, so it wins after one delay, not two.
        sock, address, elapsed = sync_open([hole2, hole3, good], setup=setup)
        assert address == good
        assert setup.families[:2] == [socket.AF_INET, socket.AF_INET6]
        assert DELAY - EARLY <= elapsed < 2 * DELAY + BOUND
        assert_connected(sock, good)


async def test_async_real_ipv6_and_ipv4_are_interleaved() -> None:
    assert ipv6_loopback_available(), "this test needs [::1]"
    with blackholed("127.0.0.2") as hole2, blackholed("127.0.0.3") as hole3, \
            socket.socket(socket.AF_INET6) as server:
        server.bind(("::1", 0))
        server.listen(8)
        good: Address = (socket.AF_INET6, server.getsockname())
        setup = Setup()
        sock, address, elapsed = await async_open([hole2, hole3, good], setup=setup)
        assert address == good
        assert setup.families[:2] == [socket.AF_INET, socket.AF_INET6]
        assert DELAY - EARLY <= elapsed < 2 * DELAY + BOUND
        assert_connected(sock, good)


# --------------------------------------------------------------------------------------------
# A failure starts the next attempt at once


def test_sync_refused_first_address_moves_on_at_once() -> None:
    with refused() as bad, listener() as good:
        sock, address, elapsed = sync_open([bad, good], delay=5.0)
        assert address == good
        assert elapsed < BOUND  # not the 5 s delay
        assert_connected(sock, good)


async def test_async_refused_first_address_moves_on_at_once() -> None:
    with refused() as bad, listener() as good:
        sock, address, elapsed = await async_open([bad, good], delay=5.0)
        assert address == good
        assert elapsed < BOUND
        assert_connected(sock, good)


def test_sync_setup_error_fails_that_attempt_only() -> None:
    with listener("127.0.0.2") as first, listener() as second:
        setup = Setup(fail={0: OSError(99, "Cannot assign requested address")})
        sock, address, elapsed = sync_open([first, second], delay=5.0, setup=setup)
        assert address == second
        assert elapsed < BOUND
        assert_connected(sock, second)


async def test_async_setup_error_fails_that_attempt_only() -> None:
    with listener("127.0.0.2") as first, listener() as second:
        setup = Setup(fail={0: OSError(99, "Cannot assign requested address")})
        sock, address, elapsed = await async_open([first, second], delay=5.0, setup=setup)
        assert address == second
        assert elapsed < BOUND
        assert_connected(sock, second)


# --------------------------------------------------------------------------------------------
# Every address fails: one error that lists them all


def test_sync_all_refused_lists_each_address() -> None:
    with refused("127.0.0.2") as first, refused("127.0.0.1") as second:
        before = open_fd_count()
        with pytest.raises(poolhttp.ConnectError) as caught:
            sync_open([first, second], delay=5.0)
        assert open_fd_count() == before
    message = str(caught.value)
    assert "127.0.0.2: Connection refused" in message
    assert "127.0.0.1: Connection refused" in message


async def test_async_all_refused_lists_each_address() -> None:
    with refused("127.0.0.2") as first, refused("127.0.0.1") as second:
        before = open_fd_count()
        with pytest.raises(poolhttp.ConnectError) as caught:
            await async_open([first, second], delay=5.0)
        assert open_fd_count() == before
    message = str(caught.value)
    assert "127.0.0.2: Connection refused" in message
    assert "127.0.0.1: Connection refused" in message


# --------------------------------------------------------------------------------------------
# The plan's deadline cuts the race short


# (connect time-out, total deadline): whichever ends first rules, and names the error.
DEADLINES = [
    pytest.param(0.3, None, poolhttp.ConnectTimeout, id="connect-timeout"),
    pytest.param(5.0, 0.3, poolhttp.TotalTimeout, id="total-deadline"),
]


@pytest.mark.parametrize(("connect", "total", "error"), DEADLINES)
def test_sync_deadline_ends_the_race(connect: float, total: float | None,
                                     error: type[Exception]) -> None:
    with blackholed("127.0.0.2") as first, blackholed("127.0.0.3") as second:
        before = open_fd_count()
        started = time.monotonic()
        with pytest.raises(error):
            sync_open([first, second], connect=connect, total=total)
        assert 0.3 - EARLY <= time.monotonic() - started < 0.3 + BOUND
        assert open_fd_count() == before  # both hanging sockets closed


@pytest.mark.parametrize(("connect", "total", "error"), DEADLINES)
async def test_async_deadline_ends_the_race(connect: float, total: float | None,
                                            error: type[Exception]) -> None:
    with blackholed("127.0.0.2") as first, blackholed("127.0.0.3") as second:
        before = open_fd_count()
        started = time.monotonic()
        with pytest.raises(error):
            await async_open([first, second], connect=connect, total=total)
        assert 0.3 - EARLY <= time.monotonic() - started < 0.3 + BOUND
        assert open_fd_count() == before


# --------------------------------------------------------------------------------------------
# Nothing is left behind when the race ends abnormally


async def test_async_cancelled_caller_closes_every_socket() -> None:
    with blackholed("127.0.0.2") as first, blackholed("127.0.0.3") as second:
        before = open_fd_count()
        setup = Setup()
        task = asyncio.get_running_loop().create_task(async_open([first, second], setup=setup))
        await asyncio.sleep(DELAY * 2.5)  # both attempts under way
        assert len(setup.families) == 2
        assert open_fd_count() == before + 2
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert open_fd_count() == before  # closed by the time the cancellation arrives
        # The attempts' tasks have ended too (the test runner fails on a pending task).
        assert len(asyncio.all_tasks()) == 1


async def test_async_cancelled_twice_still_closes_every_socket() -> None:
    with blackholed("127.0.0.2") as first, blackholed("127.0.0.3") as second:
        before = open_fd_count()
        task = asyncio.get_running_loop().create_task(async_open([first, second]))
        await asyncio.sleep(DELAY * 2.5)
        task.cancel()
        await asyncio.sleep(0)  # the race is now waiting for its attempts to wind down
        task.cancel()  # and is cancelled again while it does
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(10):  # the attempts' done callbacks close their sockets
            if open_fd_count() == before:
                break
            await asyncio.sleep(0)
        assert open_fd_count() == before


def test_sync_unexpected_setup_error_closes_the_racing_sockets() -> None:
    with blackholed() as hole, listener() as good:
        before = open_fd_count()
        setup = Setup(fail={1: RuntimeError("not a connect failure")})
        with pytest.raises(RuntimeError, match="not a connect failure"):
            sync_open([hole, good], setup=setup)
        assert open_fd_count() == before


async def test_async_unexpected_setup_error_closes_the_racing_sockets() -> None:
    with blackholed() as hole, listener() as good:
        before = open_fd_count()
        setup = Setup(fail={1: RuntimeError("not a connect failure")})
        with pytest.raises(RuntimeError, match="not a connect failure"):
            await async_open([hole, good], setup=setup)
        assert open_fd_count() == before


# --------------------------------------------------------------------------------------------
# No race when there is nothing to race: one after the other, in the caller's task


@pytest.mark.parametrize("delay", [0.0, DELAY])
async def test_async_one_address_or_no_delay_connects_inline(delay: float) -> None:
    loop = asyncio.get_running_loop()
    created: list[object] = []

    def counting_factory(loop: asyncio.AbstractEventLoop, coro: Any) -> asyncio.Task[Any]:
        created.append(coro)
        return asyncio.Task(coro, loop=loop)

    with refused() as bad, listener() as good:
        addresses = [bad, good] if delay == 0 else [good]
        loop.set_task_factory(counting_factory)
        try:
            sock, address, _ = await async_open(addresses, delay=delay)
        finally:
            loop.set_task_factory(None)
        assert created == []  # connected in the caller's task
        assert address == good
        assert_connected(sock, good)


def test_sync_no_delay_connects_one_after_the_other() -> None:
    with refused() as bad, listener() as good:
        sock, address, _ = sync_open([bad, good], delay=0.0)
        assert address == good
        assert sock.gettimeout() is None
        assert_connected(sock, good)


def test_sync_no_delay_hangs_on_the_first_until_the_deadline() -> None:
    # Sequential, as before happy eyeballs: the hanging address takes the whole connect time.
    with blackholed() as hole, listener() as good:
        before = open_fd_count()
        with pytest.raises(poolhttp.ConnectTimeout):
            sync_open([hole, good], delay=0.0, connect=0.3)
        assert open_fd_count() == before
