"""Property tests of the pool core: random event sequences, invariants after every step.

The state machine below plays the part of a driver. It keeps its own books of what the pool
told it (which connections it asked to open, which it handed to which request, which it
closed) and checks, after each step, that those books and the pool's agree and that no rule is
broken: limits, FIFO order per origin, no idle connection while requests wait, no connection
handed out twice or after it was closed.

Some keys belong to routes with limits of their own (a client's mounts: `key.limits`,
`key.bucket`, as `_route.Route.key` sets them): two or three keys share route "r1", one has "r2",
the others have none; a route's limits may also be None (a mount that sets no limits). The
books then check each route's limits too: its open connections together, its idle ones, and
each key's per-host limit and keep-alive.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from poolhttp import Limits
from poolhttp._core.pool import Action, Assign, Close, Conn, Fail, Open, PoolKey, PoolState, Ticket
from poolhttp._core.records import ACTIVE, CLOSED, CONNECTING, DRAINING, IDLE, WAITING

A = PoolKey("http://a:80")
# (origin, route): a and b have none; c, e and the HTTP/2 key share r1 (the latter when
# `h2_routed`), d has r2.
# The https key may speak HTTP/2: a connection being opened for it covers many waiters, and
# its connections may turn out multiplexed (or HTTP/1.1, as ALPN decides).
KEYS = [("http://a:80", None), ("http://b:80", None), ("http://c:80", "r1"),
        ("http://e:80", "r1"), ("http://d:80", "r2"), ("https://h:443", "r1")]

ROUTE_LIMITS = st.one_of(st.none(), st.builds(
    Limits, max_connections=st.integers(1, 4),
    max_connections_per_host=st.one_of(st.none(), st.integers(1, 2)),
    max_keepalive_connections=st.one_of(st.none(), st.integers(0, 3)),
    keepalive_expiry=st.sampled_from([0.0, 2.0, 15.0]), max_concurrent_streams=st.integers(1, 4)))


def routed_key(origin: str, route: str | None, limits: Limits | None) -> PoolKey:
    """A key as a client's route makes it (see _route.Route.key); `route` None: a key made
    outside a client, without the attributes."""
    protocols = ("h2", "http/1.1") if origin.startswith("https") else ("http/1.1",)
    key = PoolKey(origin, protocols=protocols)
    if route is not None:
        key.limits = limits  # type: ignore[attr-defined]
        key.bucket = route  # type: ignore[attr-defined]
    return key


@dataclass
class KeyLimits:
    """The limits that apply to one key: its route's, else the pool's."""

    limits: Limits
    route: str | None  # the bucket its open and idle connections count in (None: the pool's)

    @property
    def per_host(self) -> int:
        return self.limits.max_connections_per_host or self.limits.max_connections

    @property
    def keeps_alive(self) -> bool:
        return self.limits.keepalive_limit > 0 and self.limits.keepalive_expiry > 0


class PoolMachine(RuleBasedStateMachine):
    @initialize(max_conn=st.integers(1, 8), per_host=st.one_of(st.none(), st.integers(1, 3)),
                keepalive=st.one_of(st.none(), st.integers(0, 5)),
                expiry=st.sampled_from([0.0, 5.0, 15.0]), streams=st.integers(1, 4),
                r1=ROUTE_LIMITS, r2=ROUTE_LIMITS, h2_routed=st.booleans())
    def setup(self, max_conn: int, per_host: int | None, keepalive: int | None,
              expiry: float, streams: int, r1: Limits | None, r2: Limits | None,
              h2_routed: bool) -> None:
        self.limits = Limits(max_connections=max_conn, max_connections_per_host=per_host,
                             max_keepalive_connections=keepalive, keepalive_expiry=expiry,
                             max_concurrent_streams=streams)
        self.pool = PoolState(self.limits)
        routes = {"r1": r1, "r2": r2}
        self.keys: list[PoolKey] = []
        self.limits_of: dict[PoolKey, KeyLimits] = {}
        for origin, route in KEYS:
            if route == "r1" and origin.startswith("https") and not h2_routed:
                route = None
            limits = routes[route] if route is not None else None
            key = routed_key(origin, route, limits)
            self.keys.append(key)
            self.limits_of[key] = (KeyLimits(self.limits, None) if limits is None
                                   else KeyLimits(limits, route))
        self.now = 0.0
        self.connecting: list[Conn] = []  # Open seen, outcome not yet reported
        self.using: list[tuple[Ticket, Conn]] = []  # handed out, request running
        self.waiting: list[Ticket] = []  # queued, in arrival order
        self.closed: set[int] = set()  # conn ids the pool asked us to close
        self.open_ids: set[int] = set()  # conn ids opened and not closed (the "server view")
        self.open_by_origin: dict[PoolKey, int] = {}
        self.served: dict[int, int] = {}  # conn id -> requests it carried (for `reused`)

    def no_keepalive(self, key: PoolKey) -> bool:
        """No keep-alive for `key`: a connection that carried a request never gets another
        once it has none in flight (HTTP/1.1: one request each), and nothing is ever idle."""
        return not self.limits_of[key].keeps_alive

    # -- the fake driver -------------------------------------------------------------------
    def apply(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Open):
                assert action.ticket.state == WAITING, "Open for a ticket that does not wait"
                assert action.conn.state == CONNECTING
                self.connecting.append(action.conn)
                self.open_ids.add(action.conn.id)
                key = action.conn.key
                self.open_by_origin[key] = self.open_by_origin.get(key, 0) + 1
            elif isinstance(action, Assign):
                ticket, conn = action.ticket, action.conn
                assert conn.id not in self.closed, "a closed connection was handed out"
                assert conn.state == ACTIVE
                assert ticket.conn is conn
                assert conn.key == ticket.key, "connection handed to another origin's request"
                older = [t for t in self.waiting if t.key == ticket.key and t.seq < ticket.seq]
                assert not older, f"FIFO broken: {ticket} served before {older}"
                self.waiting.remove(ticket)
                self.hand_out(ticket, conn)
            elif isinstance(action, Fail):
                self.waiting.remove(action.ticket)
            else:
                assert isinstance(action, Close)
                self.saw_close(action.conn)

    def saw_close(self, conn: Conn) -> None:
        assert conn.id not in self.closed, "closed twice"
        assert conn.state == CLOSED
        self.closed.add(conn.id)
        self.open_ids.discard(conn.id)
        self.open_by_origin[conn.key] -= 1
        if conn in self.connecting:
            self.connecting.remove(conn)
        # Requests still running on a closed (multiplexed) connection fail; the driver
        # reports each as released, which the pool must ignore.
        for ticket, other in [(t, c) for t, c in self.using if c is conn]:
            self.using.remove((ticket, other))
            assert self.pool.released(conn, True, self.now) == []

    def hand_out(self, ticket: Ticket, conn: Conn) -> None:
        carrying = sum(c is conn for _, c in self.using)
        if ticket.fresh and not carrying:  # one carrying other requests right now is alive
            assert self.served.get(conn.id, 0) == 0, "a fresh request got a used connection"
            assert not conn.pooled, "a fresh request got a connection that waited idle"

        assert carrying < conn.capacity, "connection handed out beyond its capacity"
        if self.no_keepalive(conn.key) and not carrying:
            assert self.served.get(conn.id, 0) == 0, "reused although keep-alive is off"
        self.using.append((ticket, conn))
        self.served[conn.id] = self.served.get(conn.id, 0) + 1

    def take_back(self, conn: Conn) -> None:
        """A handed-out connection comes back without having carried its request."""
        self.served[conn.id] -= 1

    # -- rules -------------------------------------------------------------------------------
    @rule(index=st.integers(0, len(KEYS) - 1),
          fresh=st.sampled_from([False, False, False, True]))
    def request(self, index: int, fresh: bool) -> None:
        """A request; a fresh one (the resend after the keep-alive race) skips `checkout`
        and must get a new connection."""
        origin = self.keys[index]
        conn = None if fresh else self.pool.checkout(origin, self.now)
        if conn is not None:
            queued = [t for t in self.waiting if t.key == origin]
            assert not queued, "checkout jumped the queue"
            self.hand_out(Ticket(origin), conn)
            return
        ticket = Ticket(origin, fresh=fresh)
        actions = self.pool.request(ticket, self.now)
        if ticket.conn is not None:
            self.apply(actions)
            self.hand_out(ticket, ticket.conn)
        else:
            self.waiting.append(ticket)
            self.apply(actions)

    @precondition(lambda self: self.connecting)
    @rule(index=st.integers(0, 100), outcome=st.sampled_from(["ok", "ok", "fail", "abandon"]),
          capacity=st.sampled_from([1, 1, 1, 3]))
    def connect_outcome(self, index: int, outcome: str, capacity: int) -> None:
        """A connect ends; an "ok" one may carry several requests (capacity 3); one of the
        HTTP/2 key is multiplexed when it does (ALPN chose h2), capped by the client's
        max_concurrent_streams."""
        conn = self.connecting.pop(index % len(self.connecting))
        if outcome == "ok":
            multiplexed = "h2" in conn.key.protocols and capacity > 1
            self.apply(self.pool.connected(conn, self.now, capacity, multiplexed=multiplexed))
            if multiplexed:
                streams = self.limits_of[conn.key].limits.max_concurrent_streams
                assert conn.capacity == min(capacity, streams)
        else:
            self.closed.add(conn.id)
            self.open_ids.discard(conn.id)
            self.open_by_origin[conn.key] -= 1
            error = OSError("refused") if outcome == "fail" else None
            self.apply(self.pool.connect_failed(conn, error, self.now))

    @precondition(lambda self: self.using)
    @rule(index=st.integers(0, 100), reusable=st.booleans(),
          keepalive=st.one_of(st.none(), st.floats(0, 20)))
    def release(self, index: int, reusable: bool, keepalive: float | None) -> None:
        _, conn = self.using.pop(index % len(self.using))
        actions = self.pool.released(conn, reusable, self.now, keepalive)
        if not reusable:
            assert isinstance(actions[0], Close)
            assert actions[0].conn is conn
        self.apply(actions)

    @precondition(lambda self: self.waiting)
    @rule(index=st.integers(0, 100))
    def cancel_waiting(self, index: int) -> None:
        ticket = self.waiting.pop(index % len(self.waiting))
        self.apply(self.pool.cancelled(ticket, self.now))

    @precondition(lambda self: any(t.state != WAITING for t, _ in self.using if t.seq))
    @rule(index=st.integers(0, 100))
    def cancel_after_assign(self, index: int) -> None:
        """A request woken with a connection gives up before using it."""
        candidates = [(t, c) for t, c in self.using if t.seq]
        ticket, conn = candidates[index % len(candidates)]
        self.using.remove((ticket, conn))
        self.take_back(conn)
        self.apply(self.pool.cancelled(ticket, self.now))

    @precondition(lambda self: self.using)
    @rule(index=st.integers(0, 100), reusable=st.booleans())
    def found_dead_before_use(self, index: int, reusable: bool) -> None:
        """The driver finds a connection it was handed unusable (peer closed it) or its
        request gave up before using it."""
        _, conn = self.using.pop(index % len(self.using))
        self.take_back(conn)
        self.apply(self.pool.unused(conn, reusable, self.now))

    @precondition(lambda self: any(c.state in (IDLE, ACTIVE) for c in self.pool.connections()))
    @rule(index=st.integers(0, 100))
    def server_drains(self, index: int) -> None:
        """The server says it takes no new request on a connection (GOAWAY)."""
        conns = sorted((c for c in self.pool.connections() if c.state in (IDLE, ACTIVE)),
                       key=lambda c: c.id)  # a set's order varies between runs
        conn = conns[index % len(conns)]
        was_idle = conn.state == IDLE
        actions = self.pool.drain(conn, self.now)
        assert was_idle == any(isinstance(a, Close) and a.conn is conn for a in actions)
        self.apply(actions)
        assert conn.state == (CLOSED if was_idle else DRAINING)

    @precondition(lambda self: any(c.multiplexed and c.state in (IDLE, ACTIVE)
                                   for c in self.pool.connections()))
    @rule(index=st.integers(0, 100), capacity=st.integers(1, 5))
    def peer_changes_stream_limit(self, index: int, capacity: int) -> None:
        """An HTTP/2 server's SETTINGS change its concurrent-stream limit, maybe below the
        streams in flight (they go on; no new one starts until there is room)."""
        conns = sorted((c for c in self.pool.connections()
                        if c.multiplexed and c.state in (IDLE, ACTIVE)), key=lambda c: c.id)
        conn = conns[index % len(conns)]
        self.apply(self.pool.resize(conn, capacity, self.now))
        streams = self.limits_of[conn.key].limits.max_concurrent_streams
        assert conn.capacity == min(capacity, streams)

    @precondition(lambda self: any(c.state == IDLE for c in self.pool.connections()))
    @rule(index=st.integers(0, 100))
    def peer_closes_idle(self, index: int) -> None:
        idle = sorted((c for c in self.pool.connections() if c.state == IDLE),
                      key=lambda c: c.id)  # a set's order varies between runs
        self.apply(self.pool.discard(idle[index % len(idle)], self.now))

    @rule(seconds=st.sampled_from([0.5, 3.0, 10.0, 20.0]))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds
        self.apply(self.pool.expire(self.now))

    # -- invariants ----------------------------------------------------------------------------
    @invariant()
    def pool_rules_hold(self) -> None:
        self.pool.check_invariants()

    @invariant()
    def books_agree(self) -> None:
        pool = self.pool
        assert len(self.open_ids) == pool.n_open <= self.limits.max_connections
        for key, n in self.open_by_origin.items():
            assert n <= self.limits_of[key].per_host, f"{key}: {n} open > its per-host limit"
        assert {c.id for c in pool.connections()} == self.open_ids
        assert pool.n_waiting == len(self.waiting)
        stats = pool.stats()
        assert stats.connections == stats.connecting + stats.idle + stats.active
        assert stats.active == len({c.id for _, c in self.using} | {
            c.id for c in pool.connections() if c.state == DRAINING})
        assert stats.connecting == len(self.connecting)
        assert stats.created - stats.closed == stats.connections - stats.connecting
        assert stats.reused == sum(n - 1 for n in self.served.values() if n > 1)
        multiplexed = [c for c in pool.connections() if c.multiplexed]
        assert stats.http2 == len(multiplexed)
        assert stats.streams == sum(c.in_use for c in multiplexed)
        for key in self.keys:
            assert pool.keeps_alive_for(key) == self.limits_of[key].keeps_alive

    @invariant()
    def routes_keep_their_limits(self) -> None:
        """Each route's open connections (connecting ones count) stay within its
        max_connections, its idle ones within its max_keepalive_connections; the idle
        connections of the keys without a route within the pool's."""
        open_by_route: dict[str | None, int] = {}
        idle_by_route: dict[str | None, int] = {}
        for conn in self.pool.connections():
            route = self.limits_of[conn.key].route
            open_by_route[route] = open_by_route.get(route, 0) + 1
            if conn.state == IDLE:
                idle_by_route[route] = idle_by_route.get(route, 0) + 1
        route_limits = {k.route: k.limits for k in self.limits_of.values()}
        for route, n in open_by_route.items():
            if route is not None:
                assert n <= route_limits[route].max_connections, f"{route}: {n} open"
        for route, n in idle_by_route.items():
            assert n <= route_limits[route].keepalive_limit, f"{route}: {n} idle"

    @invariant()
    def nothing_idle_without_keepalive(self) -> None:
        # (`checkout` is checked where the `request` rule calls it: by `hand_out`.)
        idle = [c for c in self.pool.connections() if c.state == IDLE]
        assert not [c for c in idle if self.no_keepalive(c.key)]

    @invariant()
    def waiters_are_covered(self) -> None:
        """Nobody waits while an idle connection of their key is free for them."""
        for ticket in self.waiting:
            group = ticket.group
            assert group is not None
            assert not group.idle


TestPoolMachine = PoolMachine.TestCase
TestPoolMachine.settings = settings(max_examples=1000, stateful_step_count=80, deadline=None,
                                    suppress_health_check=[HealthCheck.too_slow])


def test_close_all_fails_waiters_and_closes_everything() -> None:
    pool = PoolState(Limits(max_connections=2))
    tickets = [Ticket(A) for _ in range(4)]
    opened: list[Conn] = []
    for ticket in tickets:
        opened += [a.conn for a in pool.request(ticket, 0.0) if isinstance(a, Open)]
    pool.connected(opened[0], 0.0)
    actions = pool.close_all()
    fails = [a for a in actions if isinstance(a, Fail)]
    closes = [a.conn for a in actions if isinstance(a, Close)]
    assert len(fails) == 3  # the first ticket got the connected connection
    assert set(closes) == set(opened)
    assert pool.n_open == 0
    pool.check_invariants()
    assert pool.released(opened[0], True, 1.0) == []  # late release after close: ignored


def test_a_connection_that_waited_idle_may_be_stale_even_if_it_never_served() -> None:
    """A connect finishes after its request was served by a released connection: the new one
    goes idle unused. When it is handed out later the server may have closed it meanwhile,
    so a failure on it is the keep-alive race (retried for idempotent requests), exactly as
    for a connection that served before."""
    pool = PoolState(Limits(max_connections=2))
    first, second = Ticket(A), Ticket(A)
    (open_first,) = pool.request(first, 0.0)
    assert isinstance(open_first, Open)
    pool.connected(open_first.conn, 0.0)
    assert first.conn is open_first.conn
    assert not first.conn.may_be_stale  # new, first use
    (open_second,) = pool.request(second, 0.1)
    assert isinstance(open_second, Open)
    # The first request ends before the second's connect does: its connection goes to the
    # waiter, and the second connection, once open, has nobody to serve.
    pool.released(first.conn, True, 0.2)
    assert second.conn is first.conn
    assert second.conn.may_be_stale  # it served one before
    pool.connected(open_second.conn, 0.3)
    assert open_second.conn.state == IDLE
    assert open_second.conn.requests == 0
    later = pool.checkout(A, 5.0)
    assert later is open_second.conn
    assert later.requests == 1
    assert later.may_be_stale
    assert pool.stats().reused == 1  # only the first connection served twice
    pool.check_invariants()
