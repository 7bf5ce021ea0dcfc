"""No keep-alive (`max_keepalive_connections=0`, or `keepalive_expiry=0`): every connection
closes once nothing is in flight on it, even while requests wait; they get new connections.

HTTP/1.1 connections carry one request each. A multiplexed (HTTP/2) connection takes new
streams while it carries others and closes when its last one ends.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from poolhttp import Limits
from poolhttp._core.pool import Action, Assign, Close, Conn, Open, PoolKey, PoolState, Ticket
from poolhttp._core.records import IDLE
from tests.core.test_pool_fairness import KEYS, Simulation

A = PoolKey("http://a:80")
B = PoolKey("http://b:80")
H2 = PoolKey("https://h:443", protocols=("h2", "http/1.1"))

NO_KEEPALIVE = [Limits(max_connections=2, max_keepalive_connections=0),
                Limits(max_connections=2, keepalive_expiry=0)]


def summary(actions: list[Action]) -> list[tuple[str, int, int]]:
    """Actions as (kind, conn id, ticket seq) for comparing with what a test expects."""
    out = []
    for action in actions:
        if isinstance(action, Open):
            out.append(("open", action.conn.id, action.ticket.seq))
        elif isinstance(action, Assign):
            out.append(("assign", action.conn.id, action.ticket.seq))
        elif isinstance(action, Close):
            out.append(("close", action.conn.id, 0))
        else:
            out.append(("fail", 0, action.ticket.seq))
    return out


def open_of(actions: list[Action]) -> Conn:
    (conn,) = [a.conn for a in actions if isinstance(a, Open)]
    return conn


@pytest.mark.parametrize("limits", NO_KEEPALIVE, ids=["max_keepalive=0", "expiry=0"])
def test_release_with_waiters_closes_it_and_opens_one_for_the_oldest_waiter(
        limits: Limits) -> None:
    pool = PoolState(limits)
    tickets = [Ticket(A) for _ in range(5)]
    opened = []
    for ticket in tickets:
        actions = pool.request(ticket, 0.0)
        opened += [a.conn for a in actions if isinstance(a, Open)]
    assert len(opened) == 2  # the limit; three wait
    first, second = opened
    assert summary(pool.connected(first, 0.0)) == [("assign", first.id, tickets[0].seq)]
    assert summary(pool.connected(second, 0.0)) == [("assign", second.id, tickets[1].seq)]

    actions = pool.released(first, True, 1.0)
    third = open_of(actions)
    assert summary(actions) == [("close", first.id, 0), ("open", third.id, tickets[2].seq)]
    pool.check_invariants()
    # The second one ends before the third connects: it is not handed over either. (An
    # Open names the oldest waiter, whose thread dials in the threaded driver; whoever is
    # oldest when a connect ends is served by it.)
    actions = pool.released(second, True, 1.1)
    fourth = open_of(actions)
    assert summary(actions) == [("close", second.id, 0), ("open", fourth.id, tickets[2].seq)]
    # The connects finish out of order: whichever is first serves the oldest waiter (FIFO).
    assert summary(pool.connected(fourth, 1.2)) == [("assign", fourth.id, tickets[2].seq)]
    assert summary(pool.connected(third, 1.3)) == [("assign", third.id, tickets[3].seq)]
    actions = pool.released(fourth, True, 2.0)
    fifth = open_of(actions)
    assert summary(actions) == [("close", fourth.id, 0), ("open", fifth.id, tickets[4].seq)]
    pool.connected(fifth, 2.1)
    assert summary(pool.released(third, True, 3.0)) == [("close", third.id, 0)]
    assert summary(pool.released(fifth, True, 3.0)) == [("close", fifth.id, 0)]
    pool.check_invariants()
    stats = pool.stats()
    assert (stats.created, stats.reused, stats.closed, stats.connections) == (5, 0, 5, 0)
    assert all(t.conn is not None and t.conn.requests == 1 for t in tickets)
    assert len({t.conn for t in tickets}) == 5  # one connection per request


@pytest.mark.parametrize("limits", NO_KEEPALIVE, ids=["max_keepalive=0", "expiry=0"])
def test_nothing_is_ever_idle_and_checkout_finds_nothing(limits: Limits) -> None:
    pool = PoolState(limits)
    ticket = Ticket(A)
    conn = open_of(pool.request(ticket, 0.0))
    pool.connected(conn, 0.0)
    assert summary(pool.released(conn, True, 0.5)) == [("close", conn.id, 0)]
    assert pool.checkout(A, 0.5) is None
    assert pool.stats().idle == 0
    # One handed out and given back unused with nobody waiting is closed, not kept idle.
    late = Ticket(A)
    conn = open_of(pool.request(late, 1.0))
    assert summary(pool.connected(conn, 1.0)) == [("assign", conn.id, late.seq)]
    assert summary(pool.cancelled(late, 1.1)) == [("close", conn.id, 0)]
    assert pool.checkout(A, 1.1) is None
    assert not [c for c in pool.connections() if c.state == IDLE]
    pool.check_invariants()


def test_a_connection_handed_out_and_given_back_unused_serves_the_next_waiter() -> None:
    """It carried no response, so giving it to the next request is no reuse."""
    pool = PoolState(Limits(max_connections=1, max_keepalive_connections=0))
    first, second, third = Ticket(A), Ticket(A), Ticket(A)
    conn = open_of(pool.request(first, 0.0))
    pool.request(second, 0.0)
    pool.connected(conn, 0.0)
    new = open_of(pool.released(conn, True, 0.1))
    pool.request(third, 0.1)
    assert summary(pool.connected(new, 0.2)) == [("assign", new.id, second.seq)]
    # The second request gives up after being woken, before sending anything.
    assert summary(pool.cancelled(second, 0.3)) == [("assign", new.id, third.seq)]
    assert summary(pool.released(new, True, 0.4)) == [("close", new.id, 0)]
    stats = pool.stats()
    assert (stats.created, stats.reused, stats.connections) == (2, 0, 0)
    pool.check_invariants()


def test_a_freed_slot_goes_to_the_neediest_key() -> None:
    """With several keys waiting the slot a closed connection frees goes where any freed
    slot goes: to the blocked key holding fewest connections."""
    pool = PoolState(Limits(max_connections=2, max_keepalive_connections=0))
    a1, a2, a3, b1 = Ticket(A), Ticket(A), Ticket(A), Ticket(B)
    c1 = open_of(pool.request(a1, 0.0))
    c2 = open_of(pool.request(a2, 0.0))
    pool.request(a3, 0.0)
    pool.request(b1, 0.1)  # B holds nothing: it is next
    pool.connected(c1, 0.2)
    pool.connected(c2, 0.2)
    actions = pool.released(c1, True, 0.3)
    assert summary(actions)[0] == ("close", c1.id, 0)
    assert open_of(actions).key == B
    actions = pool.released(c2, True, 0.4)
    assert open_of(actions).key == A
    assert [a.ticket for a in actions if isinstance(a, Open)] == [a3]
    pool.check_invariants()


def test_http2_streams_share_a_busy_connection_which_closes_when_its_last_one_ends() -> None:
    pool = PoolState(Limits(max_connections=1, max_keepalive_connections=0,
                            max_concurrent_streams=3))
    tickets = [Ticket(H2) for _ in range(3)]
    actions = pool.request(tickets[0], 0.0)
    conn = open_of(actions)
    for ticket in tickets[1:]:
        assert pool.request(ticket, 0.0) == []  # the connection being opened covers them
    assigned = pool.connected(conn, 0.1, capacity=3, multiplexed=True)
    assert summary(assigned) == [("assign", conn.id, t.seq) for t in tickets]
    waiter = Ticket(H2)
    assert pool.request(waiter, 0.2) == []  # full: it waits for a stream
    # A stream ends while others run: the waiter gets a stream on the same connection.
    assert summary(pool.released(conn, True, 0.3)) == [("assign", conn.id, waiter.seq)]
    assert pool.released(conn, True, 0.4) == []
    assert pool.checkout(H2, 0.5) is conn  # busy, with room: no keep-alive needed for this
    pool.check_invariants()
    assert pool.released(conn, True, 0.6) == []
    assert pool.released(conn, True, 0.6) == []
    # The last stream ends: closed, not kept idle.
    assert summary(pool.released(conn, True, 0.7)) == [("close", conn.id, 0)]
    assert pool.checkout(H2, 0.8) is None
    stats = pool.stats()
    assert (stats.created, stats.connections, stats.idle) == (1, 0, 0)
    pool.check_invariants()


def test_http2_connection_without_room_closes_when_idle_even_with_waiters() -> None:
    """A peer allowing one stream: its last stream ends while a request waits, so the
    connection closes and the waiter gets a new one, as over HTTP/1.1."""
    pool = PoolState(Limits(max_connections=1, max_keepalive_connections=0))
    first, second = Ticket(H2), Ticket(H2)
    conn = open_of(pool.request(first, 0.0))
    pool.connected(conn, 0.0, capacity=1, multiplexed=True)
    pool.request(second, 0.1)
    actions = pool.released(conn, True, 0.2)
    new = open_of(actions)
    assert summary(actions) == [("close", conn.id, 0), ("open", new.id, second.seq)]
    pool.check_invariants()


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32), n_keys=st.integers(1, 3), max_conn=st.integers(1, 12),
       extra=st.integers(1, 5))
def test_every_request_gets_its_own_connection_within_the_limit(
        seed: int, n_keys: int, max_conn: int, extra: int) -> None:
    """Many more requests in flight than the limit allows, completions in random order: one
    connection per request, never more open than max_connections (check_invariants runs
    after every step), all served."""
    rng = random.Random(seed)
    sim = Simulation(Limits(max_connections=max_conn, max_keepalive_connections=0))
    total = 10 * max_conn
    in_flight = min(total, extra * max_conn + 1)
    submitted = 0
    for _ in range(in_flight):
        sim.submit(KEYS[submitted % n_keys])
        submitted += 1
    while sim.served < total:
        before = sim.served
        sim.step(rng)
        if sim.served > before and submitted < total:
            sim.submit(KEYS[submitted % n_keys])
            submitted += 1
    stats = sim.pool.stats()
    assert sim.opened == stats.created == total
    assert (stats.reused, stats.connections, stats.idle) == (0, 0, 0)


def test_keeps_alive_tells_the_drivers() -> None:
    """What a driver reads to send `Connection: close` on HTTP/1.1."""
    assert PoolState(Limits()).keeps_alive
    assert PoolState(Limits(max_keepalive_connections=1)).keeps_alive
    assert not any(PoolState(limits).keeps_alive for limits in NO_KEEPALIVE)
