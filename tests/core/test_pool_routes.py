"""Routes with limits of their own (a client's mounts): the pool core's buckets.

A key a client's route makes carries the route's `limits` and its name (`bucket`), as
`_route.Route.key` sets them; the pool's `max_connections` still bounds everything. Each
test checks the pool's invariants (check_invariants) after its steps.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from poolhttp import Limits
from poolhttp._core.pool import (
    Action,
    Assign,
    Close,
    Conn,
    Open,
    PoolKey,
    PoolState,
    PoolStateError,
    Ticket,
)
from poolhttp._core.records import IDLE
from tests.core.test_pool_fairness import Simulation

O = PoolKey("http://o:80")  # noqa: E741  # a key under the pool's own limits
O2 = PoolKey("http://o2:80")


def routed(origin: str, limits: Limits | None, route: str = "http://r",
           protocols: tuple[str, ...] = ("http/1.1",)) -> PoolKey:
    """A key as a client's route makes it (see _route.Route.key)."""
    key = PoolKey(origin, protocols=protocols)
    key.limits = limits  # type: ignore[attr-defined]
    key.bucket = route  # type: ignore[attr-defined]
    return key


def opens(actions: list[Action]) -> list[Conn]:
    return [a.conn for a in actions if isinstance(a, Open)]


def closes(actions: list[Action]) -> list[Conn]:
    return [a.conn for a in actions if isinstance(a, Close)]


def assigned(actions: list[Action]) -> list[Ticket]:
    return [a.ticket for a in actions if isinstance(a, Assign)]


class Driver:
    """Requests in, connections out: what a test needs of a driver."""

    def __init__(self, limits: Limits) -> None:
        self.pool = PoolState(limits)
        self.now = 0.0

    def request(self, key: PoolKey) -> tuple[Ticket, list[Action]]:
        ticket = Ticket(key)
        actions = self.pool.request(ticket, self.now)
        self.pool.check_invariants()
        return ticket, actions

    def open_one(self, key: PoolKey) -> Conn:
        """A request of `key` that gets a connection of its own, connected."""
        ticket, actions = self.request(key)
        (conn,) = opens(actions)
        self.step(self.pool.connected(conn, self.now))
        assert ticket.conn is conn
        return conn

    def step(self, actions: list[Action]) -> list[Action]:
        self.pool.check_invariants()
        return actions

    def open_count(self, keys: list[PoolKey]) -> int:
        return sum(1 for c in self.pool.connections() if c.key in keys)


def test_a_route_at_its_limit_waits_while_other_keys_use_the_pool() -> None:
    route = Limits(max_connections=2)
    r = routed("http://r:80", route)
    drv = Driver(Limits(max_connections=10))
    first = [drv.request(r) for _ in range(5)]
    assert sum(len(opens(actions)) for _, actions in first) == 2  # three more wait
    # The pool has room: a key without a route opens at once, as many as it needs.
    for _ in range(8):
        _, actions = drv.request(O)
        assert len(opens(actions)) == 1
    assert drv.pool.n_open == 10
    stats = drv.pool.stats().per_host[r.label]
    assert (stats.connecting, stats.waiting) == (2, 5)


def test_a_route_keys_share_its_max_connections() -> None:
    route = Limits(max_connections=3)
    r1, r2 = routed("http://r1:80", route), routed("http://r2:80", route)
    drv = Driver(Limits(max_connections=10))
    for key in (r1, r2, r1, r2, r1):
        drv.request(key)
    assert drv.open_count([r1, r2]) == 3
    assert drv.pool.n_waiting == 5  # three of them covered by the connections being opened


def test_a_slot_freed_in_a_full_pool_never_lets_a_full_route_exceed_its_limit() -> None:
    """The pool is full too; a connection of another key closes: the route's waiter may not
    have the slot (its route is at its limit), another key's waiter gets it."""
    r = routed("http://r:80", Limits(max_connections=1))
    drv = Driver(Limits(max_connections=3))
    drv.open_one(r)
    o_conns = [drv.open_one(O), drv.open_one(O)]
    r_waiter, actions = drv.request(r)
    assert actions == []
    _, actions = drv.request(O2)
    assert actions == []
    # An O connection closes: O2 gets the slot, although r's waiter came first.
    actions = drv.step(drv.pool.released(o_conns[0], False, 0.1))
    (new,) = opens(actions)
    assert new.key == O2
    assert r_waiter.conn is None
    assert drv.open_count([r]) == 1


def test_a_slot_freed_by_a_route_goes_to_a_waiter_of_that_route_first() -> None:
    """Its route's waiter holds as many connections as the pool's and arrived later: a slot
    freed by one of the route's connections is still theirs."""
    route = Limits(max_connections=2)
    r1, r2 = routed("http://r1:80", route), routed("http://r2:80", route)
    drv = Driver(Limits(max_connections=3))
    c1 = drv.open_one(r1)
    drv.open_one(r2)
    drv.open_one(O)
    o_waiter, _ = drv.request(O)  # held 1, waits first
    r2_waiter, _ = drv.request(r2)  # held 1, waits for its route
    assert drv.pool.n_waiting == 2
    actions = drv.step(drv.pool.released(c1, False, 0.1))  # r1's connection fails
    (new,) = opens(actions)
    assert new.key == r2
    assert actions[-1].ticket is r2_waiter  # type: ignore[union-attr]
    assert o_waiter.conn is None


def test_a_route_with_room_waits_for_a_slot_of_the_full_pool_as_one_key_among_others() -> None:
    """The route has room, the pool has not: its waiter is queued with the pool's, by the
    same rule (fewest connections held, then the oldest waiter)."""
    r = routed("http://r:80", Limits(max_connections=5))
    drv = Driver(Limits(max_connections=3))
    drv.open_one(O)
    drv.open_one(r)
    o2_conn = drv.open_one(O2)
    r_waiter, _ = drv.request(r)  # each holds 1; r's waiter is the older
    o_waiter, _ = drv.request(O)
    actions = drv.step(drv.pool.released(o2_conn, False, 0.1))  # freed by a third key
    (new,) = opens(actions)
    assert new.key == r
    drv.step(drv.pool.connected(new, 0.1))
    assert r_waiter.conn is new
    assert o_waiter.conn is None


def test_an_idle_connection_of_another_key_is_closed_only_for_a_route_below_its_limit() -> None:
    r = routed("http://r:80", Limits(max_connections=1))
    drv = Driver(Limits(max_connections=3))
    idle = [drv.open_one(O) for _ in range(3)]
    for conn in idle:
        drv.step(drv.pool.released(conn, True, 0.0))
    assert drv.pool.stats().idle == 3
    # r holds nothing: one idle connection's slot is given to it (nobody starves).
    _, actions = drv.request(r)
    assert len(closes(actions)) == 1
    assert len(opens(actions)) == 1
    # At its route's limit now: the other idle connections stay, the request waits.
    _, actions = drv.request(r)
    assert actions == []
    assert drv.pool.stats().idle == 2
    drv.now = 10.0  # long idle, long spare: still not its to take
    _, actions = drv.request(r)
    assert actions == []
    assert drv.pool.stats().idle == 2


def test_a_full_route_takes_an_idle_connection_of_its_own_route() -> None:
    """Route limit 2 over keys r1 and r2: r1's two connections sit idle; a request of r2
    gets the slot of one of them (the pool has room, the route has not)."""
    route = Limits(max_connections=2)
    r1, r2 = routed("http://r1:80", route), routed("http://r2:80", route)
    drv = Driver(Limits(max_connections=10))
    conns = [drv.open_one(r1), drv.open_one(r1)]
    for conn in conns:
        drv.step(drv.pool.released(conn, True, 0.0))
    _, actions = drv.request(r2)
    assert closes(actions) == [conns[0]]  # the least recently used
    (new,) = opens(actions)
    assert new.key == r2
    assert drv.open_count([r1, r2]) == 2


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32), route_max=st.integers(2, 8), depth=st.integers(2, 4))
def test_keys_of_a_route_share_it_fairly_without_churn(seed: int, route_max: int,
                                                       depth: int) -> None:
    """Two keys of one route keep `depth` times the route's limit in flight each, with
    plenty of room in the pool: the route never holds more than its limit, both keys are
    served, and slots move between them a bounded number of times (no churn)."""
    route = Limits(max_connections=route_max)
    keys = [routed("http://r1:80", route), routed("http://r2:80", route)]
    rng = random.Random(seed)
    sim = Simulation(Limits(max_connections=100))
    total = 30 * route_max
    submitted = 0
    for _ in range(depth * route_max):
        sim.submit(keys[submitted % 2])
        submitted += 1
    while sim.served < total:
        before = sim.served
        sim.step(rng)
        assert sum(1 for c in sim.pool.connections() if c.key in keys) <= route_max
        if sim.served > before and submitted < total:
            sim.submit(keys[submitted % 2])
            submitted += 1
    per_key = sim.pool.stats().per_host
    assert all(per_key[k.label].created >= 1 for k in keys)
    assert sim.opened <= 2 * route_max, f"{sim.opened} connections for {total} requests"


def test_a_key_of_a_route_gets_the_next_freed_slot_of_its_route() -> None:
    """r1 holds every slot of the route with a deep queue; r2's request gets a connection
    after one of r1's requests ends, not after r1's whole queue."""
    route = Limits(max_connections=3)
    r1, r2 = routed("http://r1:80", route), routed("http://r2:80", route)
    drv = Driver(Limits(max_connections=100))
    conns = [drv.open_one(r1) for _ in range(3)]
    for _ in range(20):
        drv.request(r1)
    _, actions = drv.request(r2)
    assert actions == []
    actions = drv.step(drv.pool.released(conns[0], True, 0.1))
    (new,) = opens(actions)
    assert new.key == r2
    assert closes(actions) == [conns[0]]


def test_route_without_keepalive_closes_after_each_response_while_others_keep_theirs() -> None:
    r = routed("http://r:80", Limits(max_connections=5, max_keepalive_connections=0))
    drv = Driver(Limits(max_connections=10))
    assert drv.pool.keeps_alive_for(O)
    assert not drv.pool.keeps_alive_for(r)  # before any request of it, too
    r_conn, o_conn = drv.open_one(r), drv.open_one(O)
    assert closes(drv.step(drv.pool.released(r_conn, True, 0.1))) == [r_conn]
    assert drv.step(drv.pool.released(o_conn, True, 0.1)) == []
    assert o_conn.state == IDLE
    assert drv.pool.checkout(r, 0.2) is None
    assert drv.pool.checkout(O, 0.2) is o_conn
    assert not drv.pool.keeps_alive_for(r)
    assert drv.pool.keeps_alive_for(O)
    # The other way round: a pool without keep-alive, a route with it.
    pool = PoolState(Limits(max_keepalive_connections=0))
    assert not pool.keeps_alive_for(O)
    assert pool.keeps_alive_for(routed("http://r:80", Limits()))
    assert not PoolState(Limits()).keeps_alive_for(
        routed("http://r:80", Limits(keepalive_expiry=0)))


def test_route_keepalive_limit_bounds_its_idle_connections_only() -> None:
    r = routed("http://r:80", Limits(max_connections=5, max_keepalive_connections=1))
    drv = Driver(Limits(max_connections=10, max_keepalive_connections=2))
    r_conns = [drv.open_one(r) for _ in range(3)]
    o_conns = [drv.open_one(O) for _ in range(2)]
    assert drv.step(drv.pool.released(r_conns[0], True, 0.1)) == []
    # Over the route's idle limit: its oldest idle one goes.
    assert closes(drv.step(drv.pool.released(r_conns[1], True, 0.2))) == [r_conns[0]]
    assert closes(drv.step(drv.pool.released(r_conns[2], True, 0.3))) == [r_conns[1]]
    for conn in o_conns:  # the pool's own limit of 2 holds both
        assert drv.step(drv.pool.released(conn, True, 0.4)) == []
    stats = drv.pool.stats()
    assert (stats.per_host[r.label].idle, stats.per_host[O.label].idle) == (1, 2)


def test_route_keepalive_expiry_applies_to_its_keys() -> None:
    r = routed("http://r:80", Limits(max_connections=5, keepalive_expiry=2.0))
    drv = Driver(Limits(max_connections=10, keepalive_expiry=15.0))
    o_conn, r_conn = drv.open_one(O), drv.open_one(r)
    drv.step(drv.pool.released(o_conn, True, 0.0))  # the older idle one
    drv.step(drv.pool.released(r_conn, True, 1.0))
    assert drv.pool.next_expiry() == 3.0
    assert drv.pool.checkout(r, 3.5) is None  # past its route's expiry
    assert closes(drv.step(drv.pool.expire(3.5))) == [r_conn]
    assert drv.pool.next_expiry() == 15.0
    assert o_conn.state == IDLE
    assert closes(drv.step(drv.pool.expire(15.0))) == [o_conn]
    assert drv.pool.next_expiry() is None


def test_route_per_host_limit_replaces_the_pool_one() -> None:
    pool_limits = Limits(max_connections=10, max_connections_per_host=1)
    wide = routed("http://r:80", Limits(max_connections=3))  # no per-host limit: 3
    narrow_route = Limits(max_connections=6, max_connections_per_host=2)
    n1 = routed("http://n1:80", narrow_route, route="http://n")
    n2 = routed("http://n2:80", narrow_route, route="http://n")
    drv = Driver(pool_limits)
    for key in (O, O, wide, wide, wide, wide, n1, n1, n1, n2, n2, n2):
        drv.request(key)
    assert [drv.open_count([k]) for k in (O, wide, n1, n2)] == [1, 3, 2, 2]


def test_route_max_concurrent_streams_caps_its_http2_connections() -> None:
    h2 = ("h2", "http/1.1")
    r = routed("https://r:443", Limits(max_connections=2, max_concurrent_streams=4),
               protocols=h2)
    own = PoolKey("https://o:443", protocols=h2)
    drv = Driver(Limits(max_connections=10, max_concurrent_streams=50))
    tickets = [drv.request(r) for _ in range(6)]
    (conn,) = opens(tickets[0][1])  # one connection covers 4 waiters
    (second,) = opens(tickets[4][1])
    actions = drv.step(drv.pool.connected(conn, 0.1, capacity=100, multiplexed=True))
    assert conn.capacity == 4
    assert len(assigned(actions)) == 4
    drv.step(drv.pool.connected(second, 0.1, capacity=100, multiplexed=True))
    (o_conn,) = opens(drv.request(own)[1])
    drv.step(drv.pool.connected(o_conn, 0.1, capacity=100, multiplexed=True))
    assert o_conn.capacity == 50
    drv.step(drv.pool.resize(conn, 10, 0.2))
    assert conn.capacity == 4


def test_keys_without_route_limits_are_the_pool_s() -> None:
    """A route that sets no limits (a mount for retries, say), or a key made outside a
    client: the pool's limits apply to it, as to any other key of the pool."""
    no_limits = routed("http://r:80", None)
    drv = Driver(Limits(max_connections=3, max_connections_per_host=2,
                        max_keepalive_connections=1))
    for _ in range(3):
        drv.request(no_limits)
    assert drv.open_count([no_limits]) == 2  # the pool's per-host limit
    drv.request(O)
    assert drv.pool.n_open == 3
    conns = drv.pool.connections()
    for conn in conns:
        drv.step(drv.pool.connected(conn, 0.1))
    for conn in conns:
        drv.step(drv.pool.released(conn, True, 0.2))
    assert drv.pool.stats().idle == 1  # the pool's idle limit counts it with O


def test_one_bucket_per_route_and_consistent_limits() -> None:
    limits = Limits(max_connections=2)
    # The same route through another proxy (the environment's): the same bucket.
    direct = routed("http://r:80", limits)
    proxied = PoolKey("http://r:80", proxy="http://proxy:3128")
    proxied.limits = Limits(max_connections=2)  # type: ignore[attr-defined]  # equal
    proxied.bucket = "http://r"  # type: ignore[attr-defined]
    drv = Driver(Limits(max_connections=10))
    for key in (direct, proxied, direct):
        drv.request(key)
    assert drv.open_count([direct, proxied]) == 2
    other = routed("http://r2:80", Limits(max_connections=3))  # same name, other limits
    with pytest.raises(PoolStateError, match="different limits"):
        drv.pool.request(Ticket(other), 0.0)


def test_the_pool_timeout_names_the_route_limit() -> None:
    r = routed("http://r:80", Limits(max_connections=1, max_connections_per_host=1))
    drv = Driver(Limits(max_connections=10))
    drv.request(r)
    drv.request(r)
    error = drv.pool.wait_error(r, 5.0, None)
    assert "route http://r: max_connections=1, 1 open" in str(error)
    assert "max_connections_per_host=1" in str(error)
    assert "max_connections=10" in str(error)


def test_close_all_clears_the_routes() -> None:
    r = routed("http://r:80", Limits(max_connections=1))
    drv = Driver(Limits(max_connections=4))
    conn = drv.open_one(r)
    drv.request(r)
    drv.step(drv.pool.released(conn, True, 0.1))  # to the waiter
    actions = drv.pool.close_all()
    assert len(closes(actions)) == 1
    drv.pool.check_invariants()  # the route's books too: nothing open, busy or queued
    assert drv.pool.stats().connections == 0
