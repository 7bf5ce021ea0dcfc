"""The pool core's records: keys, connections, tickets, actions, and their transition tables.

`PoolState` (pool.py) owns every instance and is the only writer of their state fields; the
drivers read them and keep their own objects in the `io` / `waiter` slots. Legal state steps are
data: `CONN_STEPS` and `TICKET_STEPS` map each state to the states it may go to, and every write
goes through `move()` / `move_ticket()`, which raise `PoolStateError` on anything else.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict, deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol

if TYPE_CHECKING:
    from .._config import Limits

__all__ = [
    "ACTIVE", "ASSIGNED", "CANCELLED", "CLOSED", "CONNECTING", "CONN_STEPS", "DRAINING",
    "FAILED", "IDLE", "NEW", "NO_ACTIONS", "TICKET_STEPS", "WAITING", "Action", "Assign", "Bucket",
    "Close", "Conn", "Fail", "Group", "Heap", "Open", "PoolKey", "PoolObserver", "PoolStateError",
    "PoolStats",
    "Settings", "Ticket", "move", "move_ticket",
]

# -- connection states ----------------------------------------------------------------------
CONNECTING: Final = "connecting"  # being opened; counts against the limits, covers one waiter
IDLE: Final = "idle"              # open, nothing in flight, on its group's idle stack
ACTIVE: Final = "active"          # carrying 1..capacity requests
DRAINING: Final = "draining"      # takes no new request; closed when the last one ends
CLOSED: Final = "closed"          # out of the books (the driver closes the transport)

# Every legal step. A connection that becomes usable (connected, or its last request ended)
# passes through IDLE on its way to a waiter, to the idle stack, or to CLOSED when its slot is
# handed to another group.
CONN_STEPS: Final[dict[str, frozenset[str]]] = {
    CONNECTING: frozenset({IDLE, CLOSED}),
    IDLE: frozenset({ACTIVE, CLOSED}),
    ACTIVE: frozenset({IDLE, DRAINING, CLOSED}),
    DRAINING: frozenset({CLOSED}),
    CLOSED: frozenset(),
}

# -- ticket states ----------------------------------------------------------------------------
NEW: Final = "new"
WAITING: Final = "waiting"
ASSIGNED: Final = "assigned"
CANCELLED: Final = "cancelled"
FAILED: Final = "failed"

TICKET_STEPS: Final[dict[str, frozenset[str]]] = {
    NEW: frozenset({WAITING, ASSIGNED}),
    WAITING: frozenset({ASSIGNED, CANCELLED, FAILED}),
    ASSIGNED: frozenset({CANCELLED}),  # woken with a connection, gave up before using it
    CANCELLED: frozenset(),
    FAILED: frozenset(),
}


class PoolObserver(Protocol):
    """What a driver tells an observer (instrumentation, e.g. OpenTelemetry) of its
    connections: each one established, and each one the pool closes, with the driver's clock
    (the loop's, or time.monotonic). A connection whose connect failed is closed without ever
    being opened. Called on the pool's thread, under its lock on the sync client: be quick."""

    def opened(self, conn: Conn, now: float, multiplexed: bool) -> None: ...
    def closed(self, conn: Conn, now: float) -> None: ...


class PoolStateError(AssertionError):
    """The pool's bookkeeping broke a rule: a bug, reported at once."""


def move(conn: Conn, to: str) -> None:
    if to not in CONN_STEPS[conn.state]:
        raise PoolStateError(f"illegal transition {conn.state} -> {to} for {conn!r}")
    conn.state = to


def move_ticket(ticket: Ticket, to: str) -> None:
    if to not in TICKET_STEPS[ticket.state]:
        raise PoolStateError(f"illegal transition {ticket.state} -> {to} for {ticket!r}")
    ticket.state = to


class PoolKey(str):
    """What makes pooled connections interchangeable: a request may use any connection of its
    key, and no other. The origin ("https://host:443"), plus what changes what a connection is:
    the proxy it goes through, the TLS settings it was opened with, the protocols it may speak.

    The key is a string that spells all of them (the origin alone when nothing else is set),
    so hashing and comparing it cost what the origin string did: str caches its hash, and a
    Python-level `__hash__` on every pool look-up was a measurable part of the fast path.
    `label` names the key in `PoolStats.per_host`: the origin, and the proxy if any.

    A client's route also sets `limits` (its mount's own `Limits`, or None) and `bucket` (the
    name of that route) on the keys it makes; the pool reads them once, when it first sees
    the key (a key without them is under the pool's own limits).
    """

    origin: str
    proxy: str | None
    tls: Hashable
    protocols: tuple[str, ...]
    label: str

    def __new__(cls, origin: str, *, proxy: str | None = None, tls: Hashable = None,
                protocols: tuple[str, ...] = ("http/1.1",)) -> PoolKey:
        parts = [origin]
        if proxy is not None:
            parts.append(f"proxy={proxy}")
        if tls is not None:
            parts.append(f"tls={tls!r}")
        if protocols != ("http/1.1",):
            parts.append("protocols=" + ",".join(protocols))
        key = super().__new__(cls, " ".join(parts))
        key.origin = origin
        key.proxy = proxy
        key.tls = tls
        key.protocols = protocols
        key.label = origin if proxy is None else f"{origin} via {proxy}"
        return key

    def __repr__(self) -> str:
        return f"PoolKey({str.__str__(self)!r})"


class Conn:
    """The pool's record of one connection. `io` belongs to the driver (its transport).

    `capacity` is how many requests it may carry at once: 1 for HTTP/1.1 (and for any
    connection still connecting), the peer's concurrent-stream limit for a multiplexed one
    (HTTP/2), which the peer may lower below `in_use` mid-way (SETTINGS): the streams in flight
    go on, no new one starts until `in_use` is below it. `in_use` is how many it carries now.
    """

    __slots__ = ("capacity", "created_at", "expires_at", "group", "id", "idle_since", "in_use",
                 "io", "multiplexed", "plain", "pooled", "requests", "spare", "state")

    _ids = itertools.count(1)

    def __init__(self, group: Group, now: float) -> None:
        self.group = group
        self.state: str = CONNECTING
        self.capacity = 1
        # Capacity 1 and its key under the pool's own limits: `checkout` hands it out inline.
        self.plain = False
        self.multiplexed = False  # HTTP/2: requests are streams, `capacity` the peer's limit
        self.in_use = 0
        self.spare = False  # on its group's list of active connections with room for more
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
    def key(self) -> PoolKey:
        return self.group.key

    def __repr__(self) -> str:
        return f"<Conn #{self.id} {self.group.key.label} {self.state}>"


class Ticket:
    """One request's place in the queue. `waiter` belongs to the driver (a future or a lock)."""

    __slots__ = ("conn", "fresh", "group", "key", "seq", "state", "waiter")

    def __init__(self, key: PoolKey, fresh: bool = False) -> None:
        self.key = key
        # Only a new connection will do: the resend after the keep-alive race.
        self.fresh = fresh
        self.group: Group | None = None
        self.seq = 0
        self.state: str = NEW
        self.conn: Conn | None = None
        self.waiter: Any = None

    def __repr__(self) -> str:
        return f"<Ticket #{self.seq} {self.key.label} {self.state}>"


# A heap of blocked groups (and, in the pool's, buckets): (connections held, oldest waiter's
# arrival number, tie-break, entry); see Group.blocked_key.
Heap = list[tuple[int, int, int, "Group | Bucket"]]


class Settings:
    """What the limits of one key's class say, resolved once: the pool's own `Limits` for a key
    without a route of its own, its route's for the others."""

    __slots__ = ("expiry", "keepalive_max", "per_host", "streams")

    def __init__(self, limits: Limits) -> None:
        self.per_host = limits.max_connections_per_host or limits.max_connections
        self.expiry = limits.keepalive_expiry
        # An expiry of 0 s keeps nothing idle either: both mean "no keep-alive".
        self.keepalive_max = limits.keepalive_limit if self.expiry > 0 else 0
        self.streams = limits.max_concurrent_streams


class Bucket:
    """The keys of one route with limits of its own (a client's mount): its `max_connections`
    bounds their open connections together, its `max_keepalive_connections` their idle ones.

    Its keys' groups that want a connection wait in `blocked`, a heap like the pool's, by
    (connections held, oldest waiter). While the bucket has room and one of them waits for a
    slot of the pool, the bucket itself is filed in the pool's heap under its top entry
    (`blocked_key`), so it competes there as one entry and never while it is at its limit.
    """

    __slots__ = ("blocked", "blocked_key", "idle", "limits", "max", "n_busy", "n_open", "name",
                 "settings")

    def __init__(self, name: str, limits: Limits) -> None:
        self.name = name
        self.limits = limits
        self.settings = Settings(limits)
        self.max = limits.max_connections
        self.n_open = 0  # connections of its keys, connecting ones included
        self.n_busy = 0  # its keys with a request in flight or waiting
        self.idle: OrderedDict[Conn, None] = OrderedDict()  # its idle connections, oldest first
        self.blocked: Heap = []  # of its groups only
        self.blocked_key: tuple[int, int] | None = None  # its entry in the pool's heap

    @property
    def is_full(self) -> bool:
        return self.n_open >= self.max

    def __repr__(self) -> str:
        return f"<Bucket {self.name} {self.n_open}/{self.max}>"


class Group:
    """The connections of one pool key: idle stack, active ones with room, FIFO of waiters.

    `bucket` is its route's when that route has limits of its own (else None), and the
    settings below are that route's or the pool's: `per_host`, `expiry`, `streams`, and
    `keepalive_max` with `lru`, the idle limit and the idle connections (oldest first) of the
    class it belongs to -- its bucket, or every key of the pool without one.
    """

    __slots__ = ("blocked_key", "bucket", "closed", "connecting", "conns", "created", "expect",
                 "expiry", "idle", "keepalive_max", "keeps_alive", "key", "lru", "n_active",
                 "n_waiting", "per_host", "plain", "reused", "spare", "streams", "waiters")

    def __init__(self, key: PoolKey, settings: Settings, lru: OrderedDict[Conn, None],
                 bucket: Bucket | None = None) -> None:
        self.key = key
        self.bucket = bucket
        self.per_host = settings.per_host
        self.expiry = settings.expiry
        self.keepalive_max = settings.keepalive_max
        # Whether a connection may carry another request once nothing is in flight on it.
        self.keeps_alive = settings.keepalive_max > 0
        # Under the pool's own limits, with keep-alive: the fast path's case, one test.
        self.plain = bucket is None and self.keeps_alive
        self.streams = settings.streams
        self.lru = lru
        # How many waiters one connection being opened covers: 1 for HTTP/1.1; for a key that
        # may speak HTTP/2, the capacity its last connection reported (at first the client's
        # stream limit), so a burst of requests opens one connection, not one each.
        self.expect = settings.streams if "h2" in key.protocols else 1
        self.conns: set[Conn] = set()  # every open one: connecting, idle, active, draining
        self.idle: list[Conn] = []  # oldest first, most recently used last
        self.spare: list[Conn] = []  # active, in_use < capacity (multiplexed connections only)
        self.waiters: deque[Ticket] = deque()  # may hold dead tickets, skipped lazily
        self.n_waiting = 0  # live tickets in `waiters`
        self.connecting: list[Conn] = []  # being opened, oldest first
        self.n_active = 0  # active or draining
        # (connections held, oldest waiter) under which it is filed in its blocked heap: its
        # bucket's, or the pool's for a key without one.
        self.blocked_key: tuple[int, int] | None = None
        self.created = self.reused = self.closed = 0

    @property
    def n_open(self) -> int:
        return len(self.conns)

    @property
    def n_connecting(self) -> int:
        return len(self.connecting)

    def wants_connection(self) -> bool:
        """More waiters than connections being opened cover, and room to open one."""
        return (self.n_waiting > len(self.connecting) * self.expect
                and len(self.conns) < self.per_host)


class Open:
    """Start connecting `conn`; `ticket` is the waiter it is opened for."""

    __slots__ = ("conn", "ticket")

    def __init__(self, conn: Conn, ticket: Ticket) -> None:
        self.conn = conn
        self.ticket = ticket


class Close:
    """Close `conn`'s transport (it has already left the pool's books); `reason` says why,
    for the log."""

    __slots__ = ("conn", "reason")

    def __init__(self, conn: Conn, reason: str) -> None:
        self.conn = conn
        self.reason = reason


class Assign:
    """Wake `ticket`'s waiter: `conn` is now its own (one of its capacity's slots)."""

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
    `created - closed == idle + active`. A connection may be opened for a request that another
    connection then serves first: `created + reused` counts requests served plus such
    connections that never carried one, so it is at least the number of requests served.
    `active` counts connections carrying requests, draining ones included.
    `http2` counts the open connections that speak HTTP/2 and `streams` the requests in flight
    on them (each is also counted once in `active` while it carries any).
    `retries` counts requests sent again, and `dns_lookups` the name look-ups made (cached
    answers and look-ups shared by concurrent requests are not counted). `tls_resumed` counts
    the TLS handshakes that resumed an earlier session (see `tls_resumption`). `per_host`
    maps an origin ("http://127.0.0.1:8080") to the same figures for it; origins with nothing
    open are forgotten once more than 1024 are known.
    """

    connections: int = 0
    connecting: int = 0
    idle: int = 0
    active: int = 0
    waiting: int = 0
    created: int = 0
    reused: int = 0
    closed: int = 0
    http2: int = 0
    streams: int = 0
    retries: int = 0
    dns_lookups: int = 0
    tls_resumed: int = 0
    per_host: dict[str, PoolStats] = field(default_factory=dict)

