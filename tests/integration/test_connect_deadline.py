"""A connect that outlives the total deadline of the request it was opened for.

The policy (both drivers, see src/poolhttp/_core/connect.py): a connect is bounded by the
connect time-out and by the total deadline of the request that started it. Cut short by that
deadline, it is given up: that request raises TotalTimeout, nobody else fails with its error,
and its slot goes to the next waiter, who opens a connection under its own limits. A connect
that ends on its own connect time-out fails the oldest waiter with ConnectTimeout.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import poolhttp
from tests.integration.clients import make_client
from tests.support import no_fd_leak
from tests.support.scripted import Blackhole, blackhole_listener

ONE = poolhttp.Limits(max_connections=1)


class Outcome:
    """One request run on its own thread: what it raised, when, and the events it traced."""

    def __init__(self, client: Any, hole: Blackhole, timeout: poolhttp.Timeout) -> None:
        self.error: BaseException | None = None
        self.ended = 0.0
        self.events: list[str] = []
        self._thread = threading.Thread(target=self._run, args=(client, hole, timeout))
        self._thread.start()

    def _run(self, client: Any, hole: Blackhole, timeout: poolhttp.Timeout) -> None:
        try:
            client.get(hole.url(), timeout=timeout,
                       trace=lambda event, info: self.events.append(event))
        except BaseException as exc:
            self.error = exc
        self.ended = time.monotonic()

    def join(self) -> None:
        self._thread.join(10)
        assert not self._thread.is_alive()


def wait_for(client: Any, connecting: int, waiting: int) -> None:
    end = time.monotonic() + 5.0
    while (client.stats().connecting, client.stats().waiting) != (connecting, waiting):
        assert time.monotonic() < end, client.stats()
        time.sleep(0.01)


def run_a_then_b(client: Any, hole: Blackhole, a: poolhttp.Timeout,
                 b: poolhttp.Timeout) -> tuple[float, Outcome, Outcome]:
    """A starts the only connect; B queues behind it for the same origin."""
    started = time.monotonic()
    first = Outcome(client, hole, a)
    wait_for(client, connecting=1, waiting=1)  # A's connect is under way
    second = Outcome(client, hole, b)
    wait_for(client, connecting=1, waiting=2)  # B waits behind it (max_connections=1)
    first.join()
    second.join()
    return started, first, second


def assert_empty(client: Any) -> None:
    stats = client.stats()
    assert (stats.connections, stats.connecting, stats.waiting, stats.active) == (0, 0, 0, 0)
    assert stats.created == 0


def test_total_deadline_gives_the_connect_up_and_the_next_waiter_opens_its_own(
        client_kind: str) -> None:
    with blackhole_listener() as hole, make_client(client_kind, limits=ONE) as client, \
            no_fd_leak():  # every socket of both connects closed, the client still open
        started, a, b = run_a_then_b(client, hole, poolhttp.Timeout(5.0, total=0.3),
                                     poolhttp.Timeout(5.0, connect=0.8))
        assert_empty(client)
    assert isinstance(a.error, poolhttp.TotalTimeout), repr(a.error)
    assert "before the total time-out" in str(a.error)
    assert 0.3 <= a.ended - started < 0.8
    # A's deadline did not fail B: B's own connect began when A's was given up, and ended on
    # B's connect time-out (A's connect time-out, 5 s, is nowhere in it).
    assert isinstance(b.error, poolhttp.ConnectTimeout), repr(b.error)
    assert "within 0.8s (connect time-out)" in str(b.error)
    assert b.error.timeout == 0.8
    assert 0.3 + 0.8 <= b.ended - started < 2.5
    assert a.events.count("dns.resolved") == b.events.count("dns.resolved") == 1


def test_connect_time_out_still_fails_the_oldest_waiter(client_kind: str) -> None:
    """The contrast: A's connect ends on its connect time-out, before A's total deadline, so
    it fails with ConnectTimeout and that goes to the oldest waiter, A itself."""
    with blackhole_listener() as hole, make_client(client_kind, limits=ONE) as client:
        started, a, b = run_a_then_b(client, hole, poolhttp.Timeout(5.0, connect=0.3, total=3.0),
                                     poolhttp.Timeout(5.0, connect=0.5))
        assert_empty(client)
    assert isinstance(a.error, poolhttp.ConnectTimeout), repr(a.error)
    assert "within 0.3s (connect time-out)" in str(a.error)
    assert 0.3 <= a.ended - started < 0.8
    assert isinstance(b.error, poolhttp.ConnectTimeout), repr(b.error)
    assert "within 0.5s (connect time-out)" in str(b.error)
    assert 0.3 + 0.5 <= b.ended - started < 2.5
