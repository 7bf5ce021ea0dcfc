"""PoolState: every piece of connection-pool bookkeeping, and nothing else.

Theory of operation
-------------------
The pool is a state machine driven by inputs and answering with actions. It performs no I/O,
reads no clock and takes no lock: the driver (asyncio or threads) calls an input, then carries
out the actions it got back -- open a socket, wake a waiter, close a transport. In the threaded
driver the input runs under one lock and the actions after it is released.

Inputs                                   Actions
  checkout(key, now)   fast path           Open(conn, ticket)   start connecting `conn`
  request(ticket, now)                     Close(conn)          close its transport
  connected(conn, now)                     Assign(ticket, conn) wake a waiter with `conn`
  connect_failed(conn, error|None, now)    Fail(ticket, error)  wake a waiter with an error
  released(conn, reusable, now, keepalive)
  discard(conn, now)   idle socket closed by the peer
  cancelled(ticket, now)
  unused(conn, reusable, now)  handed out, never used
  expire(now)
  close_all()

A connection is CONNECTING, IDLE, ACTIVE or CLOSED; `_TRANSITIONS` lists every legal step and
anything else is an internal error raised at once (`PoolStateError`), never papered over.

Rules
- Limits: open connections (connecting ones count) never exceed `max_connections` in all nor
  `max_connections_per_host` per origin; idle ones never exceed `max_keepalive_connections`.
- A connection is marked ACTIVE in the very step that hands it out (Assign or checkout), so a
  promised connection can never also look idle.
- Reuse takes the most recently used idle connection of the origin (LIFO): the rest stay cold
  and expire, so the pool shrinks to what the load needs.
- Requests for one origin are served in arrival order (a FIFO of tickets). While an origin has
  waiters it has no idle connection, and vice versa.
- Waiters are covered by connections being opened for them; when the total limit stops an
  origin from opening one, the origin joins `_blocked`, a heap ordered by the arrival number of
  its oldest waiter. A freed slot goes to the oldest blocked request; an idle connection of
  another origin is closed to make room rather than let a request starve, and a connection
  released while an older request of another origin is blocked is closed and its slot handed on.
- Every input does O(1) or O(log n) work: there is no pass over all waiters or connections
  (cancelled tickets are skipped lazily and compacted when they outnumber live ones).
"""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Final

from .._config import Limits
from .._exceptions import PoolClosed

__all__ = [
    "Assign", "Close", "Conn", "Fail", "Open", "PoolState", "PoolStateError", "PoolStats", "Ticket",
]

CONNECTING: Final = "connecting"
IDLE: Final = "idle"
ACTIVE: Final = "active"
CLOSED: Final = "closed"

# (from, to) steps a connection may take; anything else is a bug in the pool or a driver.
# A connection that becomes usable (connected, or released reusable) passes through IDLE on its
# way to a waiter, to the idle stack, or to CLOSED when its slot is handed to another origin.
_TRANSITIONS: Final = frozenset({
    (CONNECTING, IDLE), (CONNECTING, CLOSED),
    (IDLE, ACTIVE), (IDLE, CLOSED),
    (ACTIVE, IDLE), (ACTIVE, CLOSED),
})

WAITING: Final = "waiting"
ASSIGNED: Final = "assigned"
CANCELLED: Final = "cancelled"
FAILED: Final = "failed"


class PoolStateError(AssertionError):
    """The pool's bookkeeping broke a rule: a bug, reported at once."""


class Conn:
    """The pool's record of one connection. `io` belongs to the driver (its transport)."""

    __slots__ = ("created_at", "expires_at", "host", "id", "idle_since", "io", "pooled",
                 "requests", "state")

    _ids = itertools.count(1)

    def __init__(self, host: _Host, now: float) -> None:
        self.host = host
        self.state: str = CONNECTING
        self.created_at = now
        self.idle_since = now
        self.expires_at = now
        self.requests = 0  # requests assigned to it so far
        # Taken from the idle list at least once: like a reused connection, the server may
        # have closed it while it waited (even one opened for a waiter that then left).
        self.pooled = False
        self.io: Any = None
        self.id = next(Conn._ids)

    @property
    def may_be_stale(self) -> bool:
        """Whether the server may have closed it before this request: it served one before or
        waited in the idle list. A request failing on it before any response byte is the
        keep-alive race, not a server refusing this request."""
        return self.requests > 1 or self.pooled

    @property
    def key(self) -> str:
        return self.host.key

    def __repr__(self) -> str:
        return f"<Conn #{self.id} {self.host.key} {self.state}>"


class Ticket:
    """One request's place in the queue. `waiter` belongs to the driver (a future or a lock)."""

    __slots__ = ("conn", "fresh", "host", "key", "seq", "state", "waiter")

    def __init__(self, key: str, fresh: bool = False) -> None:
        self.key = key
        # Only a new connection will do: the resend after the keep-alive race.
        self.fresh = fresh
        self.host: _Host | None = None
        self.seq = 0
        self.state: str = WAITING
        self.conn: Conn | None = None
        self.waiter: Any = None

    def __repr__(self) -> str:
        return f"<Ticket #{self.seq} {self.key} {self.state}>"


class _Host:
    """Per-origin state: its connections, idle stack, FIFO of waiters and counters."""

    __slots__ = ("closed", "connecting", "conns", "created", "idle", "in_blocked", "key",
                 "n_active", "n_waiting", "reused", "waiters")

    def __init__(self, key: str) -> None:
        self.key = key
        self.conns: set[Conn] = set()  # every open one: connecting, idle, active
        self.idle: list[Conn] = []  # oldest first, most recently used last
        self.waiters: deque[Ticket] = deque()  # may hold dead tickets, skipped lazily
        self.n_waiting = 0  # live tickets in `waiters`
        self.connecting: list[Conn] = []  # being opened, oldest first
        self.n_active = 0
        self.in_blocked = False
        self.created = self.reused = self.closed = 0

    @property
    def n_open(self) -> int:
        return len(self.conns)

    @property
    def n_connecting(self) -> int:
        return len(self.connecting)

    def wants_connection(self, per_host: int) -> bool:
        """More waiters than connections being opened for them, and room to open one."""
        return self.n_waiting > self.n_connecting and len(self.conns) < per_host


class Open:
    """Start connecting `conn`; `ticket` is the waiter it is opened for."""

    __slots__ = ("conn", "ticket")

    def __init__(self, conn: Conn, ticket: Ticket) -> None:
        self.conn = conn
        self.ticket = ticket


class Close:
    """Close `conn`'s transport (it has already left the pool's books)."""

    __slots__ = ("conn",)

    def __init__(self, conn: Conn) -> None:
        self.conn = conn


class Assign:
    """Wake `ticket`'s waiter: `conn` is now its own."""

    __slots__ = ("conn", "ticket")

    def __init__(self, ticket: Ticket, conn: Conn) -> None:
        self.ticket = ticket
        self.conn = conn


class Fail:
    """Wake `ticket`'s waiter with `error`."""

    __slots__ = ("error", "ticket")

    def __init__(self, ticket: Ticket, error: BaseException) -> None:
        self.ticket = ticket
        self.error = error


Action = Open | Close | Assign | Fail
NO_ACTIONS: Final[list[Action]] = []  # returned when there is nothing to do; never appended to


@dataclass
class PoolStats:
    """A snapshot of a pool. `connections == connecting + idle + active` always holds.

    `created`, `reused` and `closed` count since the client started: connections opened
    (TCP connected, and the TLS handshake done for https; attempts that failed or were given
    up are not counted, so `created` matches the connections a server accepted), requests
    served on a connection that had served one before, and opened connections closed.
    `created - closed == idle + active`.
    `retries` counts requests sent again, and `dns_lookups` the name look-ups made (cached
    answers and look-ups shared by concurrent requests are not counted). `per_host` maps an origin
    ("http://127.0.0.1:8080") to the same figures for it; origins with nothing open are
    forgotten once more than 1024 are known.
    """

    connections: int = 0
    connecting: int = 0
    idle: int = 0
    active: int = 0
    waiting: int = 0
    created: int = 0
    reused: int = 0
    closed: int = 0
    retries: int = 0
    dns_lookups: int = 0
    per_host: dict[str, PoolStats] = field(default_factory=dict)


class PoolState:
    """All connection-pool bookkeeping for one client. See the module docstring."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._max = limits.max_connections
        self._per_host = limits.max_connections_per_host or limits.max_connections
        self._keepalive_max = limits.keepalive_limit
        self._expiry = limits.keepalive_expiry
        self._hosts: dict[str, _Host] = {}
        self._prune_at = 1024
        self._idle_lru: OrderedDict[Conn, None] = OrderedDict()  # every idle conn, oldest first
        self._blocked: list[tuple[int, int, _Host]] = []  # heap: (oldest waiter seq, id, host)
        self._seq = itertools.count(1)
        self.n_open = 0
        self.n_waiting = 0
        self.created = self.reused = self.closed = self.retries = 0
        self.is_closed = False

    # -- inputs ------------------------------------------------------------------------------
    def checkout(self, key: str, now: float) -> Conn | None:
        """The fast path: hand out an idle connection to `key` at once, else None (then call
        `request`, which also closes expired connections)."""
        host = self._hosts.get(key)
        if host is None or not host.idle:
            return None
        conn = host.idle[-1]
        if now >= conn.expires_at:
            return None
        host.idle.pop()
        del self._idle_lru[conn]
        conn.state = ACTIVE
        conn.pooled = True
        host.n_active += 1
        if conn.requests:
            self.reused += 1
            host.reused += 1
        conn.requests += 1
        return conn

    def request(self, ticket: Ticket, now: float) -> list[Action]:
        """Queue `ticket` for a connection. If one is free, `ticket.conn` is set on return."""
        if self.is_closed:
            raise PoolClosed("the client is closed", origin=ticket.key)
        host = self._host(ticket.key)
        ticket.host = host
        actions: list[Action] = []
        # Waiters and idle connections never coexist for one origin, so taking an idle one
        # here jumps no queue. A fresh ticket closes them instead: they are suspect.
        while host.idle:
            conn = host.idle.pop()
            del self._idle_lru[conn]
            if ticket.fresh or now >= conn.expires_at:
                self._close(conn, actions)
                continue
            conn.pooled = True
            self._activate(conn, ticket)
            return actions
        ticket.seq = next(self._seq)
        ticket.state = WAITING
        host.waiters.append(ticket)
        host.n_waiting += 1
        self.n_waiting += 1
        self._provide(host, now, actions, ticket)
        return actions

    def connected(self, conn: Conn, now: float) -> list[Action]:
        """The connection `Open` asked for is ready."""
        if conn.state is CLOSED:  # close_all() came first: the driver closes it
            return [Close(conn)]
        self._move(conn, IDLE)
        conn.host.connecting.remove(conn)
        conn.host.created += 1  # counted once open, so that it matches the server's accepts
        self.created += 1
        conn.idle_since = now
        conn.expires_at = now + self._expiry
        actions: list[Action] = []
        self._make_available(conn, now, actions)
        return actions

    def connect_failed(self, conn: Conn, error: BaseException | None,
                       now: float) -> list[Action]:
        """Opening `conn` failed: the oldest waiter of its origin gets `error`. With `error`
        None the connection was given up unopened; nobody fails and its slot is reused."""
        if conn.state is CLOSED:
            return NO_ACTIONS
        if conn.state is not CONNECTING:
            raise PoolStateError(f"connect_failed() for {conn!r}, which is not connecting")
        host = conn.host
        host.connecting.remove(conn)
        self._remove(conn)
        actions: list[Action] = []
        ticket = self._pop_waiter(host) if error is not None else None
        if ticket is not None:
            assert error is not None
            ticket.state = FAILED
            actions.append(Fail(ticket, error))
        self._slot_freed(host, now, actions)
        return actions

    def released(self, conn: Conn, reusable: bool, now: float,
                 keepalive: float | None = None) -> list[Action]:
        """A request on `conn` ended. It is reusable only if its response was read to the end
        and the server did not ask to close; `keepalive` is the server's Keep-Alive timeout."""
        if conn.state is not ACTIVE:
            if conn.state is CLOSED:  # close_all() got there first
                return NO_ACTIONS
            raise PoolStateError(f"released {conn!r}, which is not active")
        host = conn.host
        host.n_active -= 1
        conn.state = IDLE
        if not reusable or self.is_closed or self._expiry <= 0:
            actions: list[Action] = []
            self._close(conn, actions)
            self._slot_freed(host, now, actions)
            return actions
        conn.idle_since = now
        if keepalive is None or keepalive >= self._expiry:
            conn.expires_at = now + self._expiry
        else:  # stop using it a little before the server's own idle time-out fires
            conn.expires_at = now + max(keepalive / 2, keepalive - 0.5)
        if not host.n_waiting and not self._blocked and len(self._idle_lru) < self._keepalive_max:
            host.idle.append(conn)  # the hot path: nobody waits, keep it
            self._idle_lru[conn] = None
            return NO_ACTIONS
        actions = []
        self._make_available(conn, now, actions)
        return actions

    def discard(self, conn: Conn, now: float) -> list[Action]:
        """An idle connection was closed by the peer or found dead: forget it."""
        if conn.state is CLOSED:
            return NO_ACTIONS
        if conn.state is not IDLE:
            raise PoolStateError(f"discard() is for idle connections, got {conn!r}")
        host = conn.host
        host.idle.remove(conn)  # a short list, and a rare event
        del self._idle_lru[conn]
        actions: list[Action] = []
        self._close(conn, actions)
        self._slot_freed(host, now, actions)
        return actions

    def cancelled(self, ticket: Ticket, now: float) -> list[Action]:
        """The request behind `ticket` gave up (cancelled, timed out) before using a conn."""
        if ticket.state is WAITING:
            host = ticket.host
            assert host is not None
            ticket.state = CANCELLED
            host.n_waiting -= 1
            self.n_waiting -= 1
            if len(host.waiters) > 2 * host.n_waiting + 16:
                host.waiters = deque(t for t in host.waiters if t.state is WAITING)
            if host.n_connecting <= host.n_waiting:
                return NO_ACTIONS
            # A connection was being opened for the request that left and nobody else needs
            # it: stop the connect and free its slot rather than hold it for the connect
            # time-out (a black-holed host would otherwise keep it for seconds).
            actions: list[Action] = []
            self._close(host.connecting.pop(), actions)
            self._slot_freed(host, now, actions)
            return actions
        conn = ticket.conn
        ticket.state = CANCELLED
        if conn is None or conn.state is not ACTIVE:
            return NO_ACTIONS
        ticket.conn = None  # assigned, but the request never ran on it: take it back
        return self.unused(conn, True, now)

    def unused(self, conn: Conn, reusable: bool, now: float) -> list[Action]:
        """A connection handed out (checkout or Assign) comes back without having carried
        its request (found dead, or its requester gave up): undo the counting, release it."""
        if conn.state is ACTIVE:
            conn.requests -= 1
            if conn.requests:
                self.reused -= 1
                conn.host.reused -= 1
        return self.released(conn, reusable, now)

    def expire(self, now: float) -> list[Action]:
        """Close idle connections that sat unused for `keepalive_expiry`."""
        actions: list[Action] = []
        lru = self._idle_lru
        expiry = self._expiry
        while lru:
            conn = next(iter(lru))
            if now < conn.idle_since + expiry and now < conn.expires_at:
                break
            del lru[conn]
            conn.host.idle.remove(conn)  # the oldest of its origin: at the front
            self._close(conn, actions)
        return actions

    def next_expiry(self) -> float | None:
        """When `expire` next has work: the oldest idle connection's expiry time."""
        if not self._idle_lru:
            return None
        conn = next(iter(self._idle_lru))
        return min(conn.idle_since + self._expiry, conn.expires_at)

    def close_all(self) -> list[Action]:
        """Close the pool: every waiter fails with PoolClosed, every connection is closed."""
        self.is_closed = True
        actions: list[Action] = []
        for host in self._hosts.values():
            while (ticket := self._pop_waiter(host)) is not None:
                ticket.state = FAILED
                error = PoolClosed("the client was closed while this request waited for a "
                                   "connection", origin=host.key)
                actions.append(Fail(ticket, error))
            host.connecting.clear()
            for conn in list(host.conns):
                if conn.state is ACTIVE:
                    host.n_active -= 1
                self._close(conn, actions)
            host.idle.clear()
        self._idle_lru.clear()
        self._blocked.clear()
        return actions

    # -- observation -------------------------------------------------------------------------
    def stats(self) -> PoolStats:
        per_host = {
            key: PoolStats(connections=h.n_open, connecting=h.n_connecting, idle=len(h.idle),
                           active=h.n_active, waiting=h.n_waiting, created=h.created,
                           reused=h.reused, closed=h.closed)
            for key, h in self._hosts.items()}
        return PoolStats(
            connections=self.n_open, connecting=sum(s.connecting for s in per_host.values()),
            idle=len(self._idle_lru), active=sum(s.active for s in per_host.values()),
            waiting=self.n_waiting, created=self.created, reused=self.reused,
            closed=self.closed, retries=self.retries, per_host=per_host)

    def connections(self) -> list[Conn]:
        """Every open connection, in any state."""
        return [conn for host in self._hosts.values() for conn in host.conns]

    def check_invariants(self) -> None:
        """Raise PoolStateError if a rule of the module docstring is broken (for tests)."""
        total = idle = 0
        for key, host in self._hosts.items():
            n_idle = len(host.idle)
            states = [c.state for c in host.conns]
            _expect(host.n_connecting == states.count(CONNECTING)
                    and host.n_active == states.count(ACTIVE) and n_idle == states.count(IDLE),
                    f"{key}: counters {host.n_connecting}/{n_idle}/{host.n_active} disagree "
                    f"with connection states {sorted(states)}")
            _expect(host.n_open <= self._per_host, f"{key}: {host.n_open} open > per-host limit")
            live = [t for t in host.waiters if t.state is WAITING]
            _expect(len(live) == host.n_waiting,
                    f"{key}: n_waiting {host.n_waiting} != {len(live)} live tickets")
            _expect(all(a.seq < b.seq for a, b in itertools.pairwise(live)),
                    f"{key}: waiters out of FIFO order")
            _expect(not (live and host.idle), f"{key}: idle connections while requests wait")
            _expect(all(c.state is IDLE and c in self._idle_lru for c in host.idle),
                    f"{key}: idle stack holds a connection that is not idle")
            if host.wants_connection(self._per_host):
                _expect(self.n_open >= self._max and not self._idle_lru,
                        f"{key}: waiters uncovered although a connection could be opened")
                _expect(host.in_blocked, f"{key}: waiters uncovered but not queued for a slot")
            total += host.n_open
            idle += n_idle
        _expect(total == self.n_open, f"open count {self.n_open} != sum over hosts {total}")
        _expect(self.n_open <= self._max, f"{self.n_open} open > max_connections {self._max}")
        _expect(idle == len(self._idle_lru), "idle LRU out of step with the idle stacks")
        _expect(idle <= self._keepalive_max, f"{idle} idle > max_keepalive_connections")
        _expect(self.n_waiting == sum(h.n_waiting for h in self._hosts.values()),
                "global waiting count out of step")

    # -- internals ---------------------------------------------------------------------------
    def _host(self, key: str) -> _Host:
        host = self._hosts.get(key)
        if host is None:
            if len(self._hosts) >= self._prune_at:
                self._hosts = {k: h for k, h in self._hosts.items()
                               if h.conns or h.waiters or h.in_blocked}
                self._prune_at = max(1024, 2 * len(self._hosts))
            host = self._hosts[key] = _Host(key)
        return host

    def _move(self, conn: Conn, to: str) -> None:
        if (conn.state, to) not in _TRANSITIONS:
            raise PoolStateError(f"illegal transition {conn.state} -> {to} for {conn!r}")
        conn.state = to

    def _activate(self, conn: Conn, ticket: Ticket) -> None:
        """Give the IDLE `conn` to `ticket`; in the same step it stops looking idle."""
        self._move(conn, ACTIVE)
        host = conn.host
        host.n_active += 1
        if conn.requests:
            self.reused += 1
            host.reused += 1
        conn.requests += 1
        ticket.conn = conn
        ticket.state = ASSIGNED

    def _make_available(self, conn: Conn, now: float, actions: list[Action]) -> None:
        """An IDLE `conn`, not yet on any list, goes to a waiter, to another origin, or idle."""
        host = conn.host
        blocked = self._blocked_top() if self._blocked else None
        if host.n_waiting:
            head = self._head(host)
            if blocked is None or blocked is host or self._head(blocked).seq > head.seq:
                if head.fresh and (conn.requests or conn.pooled):
                    # It needs a new connection: this one's slot goes to opening one.
                    self._close(conn, actions)
                    self._slot_freed(host, now, actions)
                    return
                self._pop_waiter(host)
                self._activate(conn, head)
                actions.append(Assign(head, conn))
                return
        if blocked is not None and blocked is not host:
            # An older request for another origin waits for a slot: hand this one over.
            self._close(conn, actions)
            self._slot_freed(host, now, actions)
            return
        if len(self._idle_lru) >= self._keepalive_max:
            if not self._idle_lru:  # max_keepalive_connections == 0
                self._close(conn, actions)
                return
            oldest, _ = self._idle_lru.popitem(last=False)
            oldest.host.idle.remove(oldest)
            self._close(oldest, actions)
        host.idle.append(conn)
        self._idle_lru[conn] = None

    def _provide(self, host: _Host, now: float, actions: list[Action],
                 ticket: Ticket | None = None) -> None:
        """Open connections for `host`'s waiters that none being opened covers yet."""
        while host.wants_connection(self._per_host):
            if self.n_open >= self._max:
                if not self._idle_lru:
                    self._block(host)
                    return
                # Room is made by closing the least recently used idle connection, which
                # belongs to another origin (this one has waiters, so it has none idle).
                oldest, _ = self._idle_lru.popitem(last=False)
                oldest.host.idle.remove(oldest)
                self._close(oldest, actions)
            conn = Conn(host, now)
            host.conns.add(conn)
            host.connecting.append(conn)
            self.n_open += 1
            actions.append(Open(conn, ticket if ticket is not None else self._head(host)))
            ticket = None

    def _slot_freed(self, host: _Host, now: float, actions: list[Action]) -> None:
        """A connection of `host` went away: the oldest request that needs a slot gets it."""
        if host.wants_connection(self._per_host):
            self._block(host)
        while self._blocked and self.n_open < self._max:
            top = self._blocked_top()
            if top is None:
                break
            heapq.heappop(self._blocked)
            top.in_blocked = False
            self._provide(top, now, actions)

    def _block(self, host: _Host) -> None:
        if not host.in_blocked:
            host.in_blocked = True
            heapq.heappush(self._blocked, (self._head(host).seq, id(host), host))

    def _blocked_top(self) -> _Host | None:
        """The blocked origin with the oldest waiter, after dropping stale heap entries."""
        blocked = self._blocked
        while blocked:
            seq, _, host = blocked[0]
            if not host.wants_connection(self._per_host):
                heapq.heappop(blocked)
                host.in_blocked = False
                continue
            head_seq = self._head(host).seq
            if head_seq != seq:  # its oldest waiter left: re-file it under the new one
                heapq.heapreplace(blocked, (head_seq, id(host), host))
                continue
            return host
        return None

    def _head(self, host: _Host) -> Ticket:
        """The oldest live waiter of `host`, which must have one."""
        waiters = host.waiters
        while waiters[0].state is not WAITING:
            waiters.popleft()
        return waiters[0]

    def _pop_waiter(self, host: _Host) -> Ticket | None:
        if not host.n_waiting:
            return None
        ticket = self._head(host)
        host.waiters.popleft()
        host.n_waiting -= 1
        self.n_waiting -= 1
        return ticket

    def _close(self, conn: Conn, actions: list[Action]) -> None:
        """Take `conn` (off every list already) out of the books and ask for its close."""
        actions.append(Close(conn))
        self._remove(conn)

    def _remove(self, conn: Conn) -> None:
        host = conn.host
        if conn.state is not CONNECTING:  # one never opened was never counted as created
            host.closed += 1
            self.closed += 1
        conn.state = CLOSED
        host.conns.discard(conn)
        self.n_open -= 1


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise PoolStateError(message)
