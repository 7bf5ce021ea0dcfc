"""PoolState: every piece of connection-pool bookkeeping, and nothing else.

Theory of operation
-------------------
The pool is a state machine driven by inputs and answering with actions. It performs no I/O,
reads no clock and takes no lock: the driver (asyncio or threads) calls an input, then carries
out the actions it got back -- open a socket, wake a waiter, close a transport. In the threaded
driver the input runs under one lock.

Inputs                                      Actions
  checkout(key, now)   fast path              Open(conn, ticket)   start connecting `conn`
  request(ticket, now)                        Close(conn)          close its transport
  connected(conn, now, capacity, multiplexed) Assign(ticket, conn) wake a waiter with `conn`
  connect_failed(conn, error|None, now)       Fail(ticket, error)  wake a waiter with an error
  released(conn, reusable, now, keepalive)
  drain(conn, now)     takes no new request (GOAWAY, Connection: close)
  resize(conn, capacity, now)  the peer changed its concurrent-stream limit (HTTP/2)
  discard(conn, now)   idle socket closed by the peer
  cancelled(ticket, now)
  unused(conn, reusable, now)  handed out, never used
  expire(now)
  close_all()

Connections are grouped by `PoolKey` (origin, proxy, TLS settings, protocols): a request may
use any connection of its key. A connection carries up to `capacity` requests at once (1 for
HTTP/1.1; a multiplexed connection reports more when it is `connected`). Its states and the
tickets' states step only along the tables in records.py; anything else raises
`PoolStateError` at once, never papered over.

Rules
- Limits: open connections (connecting ones count) never exceed `max_connections` in all nor
  `max_connections_per_host` per key; idle ones never exceed `max_keepalive_connections`.
- A connection's `in_use` rises in the very step that hands it out (Assign or checkout), so a
  promised connection can never also look idle.
- Reuse takes the most recently used idle connection of the key (LIFO): the rest stay cold and
  expire, so the pool shrinks to what the load needs.
- Requests of one key are served in arrival order (a FIFO of tickets). While a key has waiters
  it has no idle connection and none with spare capacity, and vice versa.
- Waiters are covered by connections being opened for them: one waiter each for HTTP/1.1;
  for a key that may speak HTTP/2, as many as its last connection's capacity (at first
  `max_concurrent_streams`), so 200 requests arriving at once open one or two connections,
  not 200. A connection that turns out to speak HTTP/1.1 (ALPN) sets the key back to one
  each, and the waiters it does not cover get connections of their own. When the total
  limit stops a key from opening one, its group is *blocked*: filed in a heap by (connections
  it holds, arrival number of its oldest waiter), so the top is the neediest group, and
  among equals the one waiting longest.
- Slots move between keys without churning. A slot freed by a closed connection goes to the
  top blocked group. A connection whose requests ended, while another group is blocked, is
  closed to hand its slot over only when
    * its own group has no waiter (it would go idle while somebody is blocked), or
    * the blocked group holds no connection at all (nobody starves: it waits about one
      request's time, not behind the whole queue of another key), or
    * the blocked group holds less than its fair share, `max_connections // n` for `n` keys
      with waiters, and the giving group holds at least two more than it (so two groups
      below their share do not pass a slot back and forth).
  Otherwise the connection serves its own group's next waiter. Once every busy key holds its
  share, no connection is closed to serve another key, however the load interleaves; when more
  keys are busy than `max_connections`, slots rotate (each key waits its turn) and each turn
  costs a new connection, which no pool can avoid.
- A connection opened for a waiter that another connection then served is handed to the next
  waiter of its key, else to a blocked key, else kept idle.
- No keep-alive (`max_keepalive_connections=0`, or `keepalive_expiry=0`): a connection that
  carried a request is never given another once it has none in flight. An HTTP/1.1 one is
  closed when its request ends, waiters or not, and the slot it frees opens a new connection
  for the oldest waiter (of the neediest blocked key, as for any freed slot). A multiplexed
  one (HTTP/2) takes new streams while it carries others, and is closed when its last one
  ends (see `released`). Nothing is ever idle, so `checkout` finds nothing idle; a connection
  handed out and given back unused (`unused`) carried nothing and goes to the next waiter.
- Every input does O(1) or O(log n) work: there is no pass over all waiters or connections
  (cancelled tickets are skipped lazily and compacted when they outnumber live ones; stale heap
  entries are dropped lazily).
"""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict, deque

from .._config import Limits
from .._exceptions import PoolClosed, PoolTimeout, TotalTimeout
from .records import (
    ACTIVE,
    ASSIGNED,
    CANCELLED,
    CLOSED,
    CONNECTING,
    DRAINING,
    FAILED,
    IDLE,
    NO_ACTIONS,
    WAITING,
    Action,
    Assign,
    Close,
    Conn,
    Fail,
    Group,
    Open,
    PoolKey,
    PoolStateError,
    PoolStats,
    Ticket,
    move,
    move_ticket,
)

# An idle connection of a group with nothing in flight or waiting is spare (another group
# below its fair share may take its slot) once it has been idle this long: long enough to
# bridge the gaps of a group that is still busy, short enough that the connections of an
# origin whose load ended move to the others well before keep-alive expiry.
SPARE_AFTER = 0.5

__all__ = [
    "SPARE_AFTER",
    "Action", "Assign", "Close", "Conn", "Fail", "Open", "PoolKey", "PoolState", "PoolStateError",
    "PoolStats", "Ticket",
]


# Why a connection whose response left it unusable is closed (the core cannot tell which).
_NOT_REUSABLE = "not reusable (Connection: close, an error, or a body not read to the end)"

class PoolState:
    """All connection-pool bookkeeping for one client. See the module docstring."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._max = limits.max_connections
        self._per_host = limits.max_connections_per_host or limits.max_connections
        self._expiry = limits.keepalive_expiry
        # An expiry of 0 s keeps nothing idle either: both mean "no keep-alive".
        self._keepalive_max = limits.keepalive_limit if self._expiry > 0 else 0
        # Whether a connection may carry another request once nothing is in flight on it.
        # Drivers read it to say so on the wire (an HTTP/1.1 request's `Connection: close`).
        self.keeps_alive = self._keepalive_max > 0
        self._streams = limits.max_concurrent_streams
        self._groups: dict[PoolKey, Group] = {}
        self._prune_at = 1024
        self._idle_lru: OrderedDict[Conn, None] = OrderedDict()  # every idle conn, oldest first
        # heap of (connections held, oldest waiter seq, tie-break, group); see Group.blocked_key
        self._blocked: list[tuple[int, int, int, Group]] = []
        self._tie = itertools.count()
        self._seq = itertools.count(1)
        self._n_busy = 0  # groups with a request in flight or waiting
        self.n_open = 0
        self.n_waiting = 0
        self.created = self.reused = self.closed = 0
        self.is_closed = False

    # -- inputs ------------------------------------------------------------------------------
    def checkout(self, key: PoolKey, now: float) -> Conn | None:
        """The fast path: hand out a connection of `key` with room at once, else None (then
        call `request`, which also closes expired connections)."""
        group = self._groups.get(key)
        if group is None:
            return None
        if group.spare:
            conn = group.spare[-1]
            self._assign(conn)
            return conn
        idle = group.idle
        if not idle:
            return None
        conn = idle[-1]
        if now >= conn.expires_at:
            return None
        idle.pop()
        del self._idle_lru[conn]
        conn.pooled = True
        if conn.capacity > 1:
            self._assign(conn)
            return conn
        # _assign() for the common case, inline: this is every reused request's path. The
        # step idle -> active is in CONN_STEPS; the connection was on the idle stack.
        conn.state = ACTIVE
        conn.in_use = 1
        group.n_active += 1
        if group.n_active == 1 and not group.n_waiting:
            self._n_busy += 1
        if conn.requests:
            self.reused += 1
            group.reused += 1
        conn.requests += 1
        return conn

    def request(self, ticket: Ticket, now: float) -> list[Action]:
        """Queue `ticket` for a connection. If one is free, `ticket.conn` is set on return."""
        if self.is_closed:
            raise PoolClosed("the client is closed", origin=ticket.key.label)
        group = self._group(ticket.key)
        ticket.group = group
        actions: list[Action] = []
        # Waiters and free connections never coexist in a group, so taking one here jumps no
        # queue. A fresh ticket closes idle ones instead: they are suspect. (One carrying
        # other requests right now is not: see _hand_to_waiters.)
        if group.spare:
            self._give(group.spare[-1], ticket)
            return actions
        while group.idle:
            conn = group.idle.pop()
            del self._idle_lru[conn]
            if ticket.fresh or now >= conn.expires_at:
                self._close(conn, actions, "a retry asked for a fresh connection"
                            if ticket.fresh else "past the server's Keep-Alive time-out")
                continue
            conn.pooled = True
            self._give(conn, ticket)
            if actions:  # closed expired ones on the way: their slots may be wanted
                self._give_slots(now, actions)
            return actions
        ticket.seq = next(self._seq)
        move_ticket(ticket, WAITING)
        group.waiters.append(ticket)
        if not group.n_waiting and not group.n_active:
            self._n_busy += 1
        group.n_waiting += 1
        self.n_waiting += 1
        closed_some = bool(actions)
        self._provide(group, now, actions, ticket)
        if closed_some:  # slots of the idle connections closed above, beyond the one it took
            self._give_slots(now, actions)
        return actions

    def connected(self, conn: Conn, now: float, capacity: int = 1,
                  multiplexed: bool = False) -> list[Action]:
        """The connection `Open` asked for is ready to carry `capacity` requests at once;
        `multiplexed`: as streams of one HTTP/2 connection."""
        if conn.state is CLOSED:  # close_all() came first: the driver closes it
            return [Close(conn, "the pool was closed while it connected")]
        if capacity < 1:
            raise PoolStateError(f"connected({conn!r}) with capacity {capacity}")
        move(conn, IDLE)
        group = conn.group
        group.connecting.remove(conn)
        if multiplexed:
            capacity = min(capacity, self._streams)
        conn.capacity = capacity
        conn.multiplexed = multiplexed
        group.expect = capacity if multiplexed else 1
        group.created += 1  # counted once open, so that it matches the server's accepts
        self.created += 1
        conn.idle_since = now
        conn.expires_at = now + self._expiry
        actions: list[Action] = []
        self._make_available(conn, now, actions)
        if group.wants_connection(self._per_host):  # it covers fewer than were counted on
            self._provide(group, now, actions)
        self._rebalance(now, actions)
        return actions

    def resize(self, conn: Conn, capacity: int, now: float) -> list[Action]:
        """The peer of multiplexed `conn` allows `capacity` concurrent requests from now on
        (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS, capped by `max_concurrent_streams`). Requests
        in flight above a lowered limit go on; waiters get the room of a raised one."""
        if capacity < 1:
            raise PoolStateError(f"resize({conn!r}) to capacity {capacity}")
        capacity = min(capacity, self._streams)
        conn.capacity = capacity
        group = conn.group
        if conn.multiplexed:
            group.expect = capacity
        if conn.state is not ACTIVE:
            return NO_ACTIONS
        room = conn.in_use < capacity
        if room == conn.spare:
            return NO_ACTIONS
        actions: list[Action] = []
        if room:
            conn.spare = True
            group.spare.append(conn)
            self._hand_to_waiters(conn, actions)
        else:
            conn.spare = False
            group.spare.remove(conn)
            if group.wants_connection(self._per_host):
                self._provide(group, now, actions)
        return actions

    def connect_failed(self, conn: Conn, error: BaseException | None,
                       now: float) -> list[Action]:
        """Opening `conn` failed: the oldest waiter of its key gets `error`. With `error`
        None the connection was given up unopened; nobody fails and its slot is reused."""
        if conn.state is CLOSED:
            return NO_ACTIONS
        if conn.state is not CONNECTING:
            raise PoolStateError(f"connect_failed() for {conn!r}, which is not connecting")
        group = conn.group
        group.connecting.remove(conn)
        self._remove(conn)
        actions: list[Action] = []
        ticket = self._pop_waiter(group) if error is not None else None
        if ticket is not None:
            assert error is not None
            move_ticket(ticket, FAILED)
            actions.append(Fail(ticket, error))
        self._slot_freed(group, now, actions)
        return actions

    def released(self, conn: Conn, reusable: bool, now: float,
                 keepalive: float | None = None) -> list[Action]:
        """A request on `conn` ended. The connection is reusable only if the response was read
        to the end and the server did not ask to close; `keepalive` is the server's Keep-Alive
        time-out. Not reusable closes the whole connection (other requests on it end too).
        Without keep-alive a connection is closed once nothing is in flight on it."""
        if conn.state is not ACTIVE:
            return self._released_inactive(conn, reusable, now)
        conn.in_use -= 1
        group = conn.group
        if not reusable or self.is_closed:
            return self._retire(conn, now, "the pool was closed" if self.is_closed
                                else _NOT_REUSABLE)
        if conn.in_use:  # a multiplexed connection still busy: the freed stream goes on
            if conn.in_use >= conn.capacity:  # the peer lowered its limit meanwhile
                return NO_ACTIONS
            if not conn.spare:
                conn.spare = True
                group.spare.append(conn)
            if not group.n_waiting:
                return NO_ACTIONS
            actions: list[Action] = []
            self._hand_to_waiters(conn, actions)
            return actions
        if not self.keeps_alive and conn.requests:
            # No keep-alive: with nothing in flight it is closed, even while requests wait
            # (its slot opens a new connection for them). A multiplexed one gets here only
            # when its last stream ends; while it carried others it took new ones (above,
            # and from the spare list). Turning keep-alive off is asking for no connection
            # kept for later -- no stale socket, no keep-alive race, no reuse a server or
            # middlebox mishandles. An HTTP/2 connection carrying streams is in use and
            # known alive, none of those; one stream per connection would cost a handshake
            # per request and do worse than HTTP/1.1, which is what to use for that.
            return self._retire(conn, now, "keep-alive is off")
        if conn.spare:
            conn.spare = False
            group.spare.remove(conn)
        conn.state = IDLE  # active -> idle, in CONN_STEPS: inline, as in checkout
        group.n_active -= 1
        if not group.n_active and not group.n_waiting:
            self._n_busy -= 1
        conn.idle_since = now
        if keepalive is None or keepalive >= self._expiry:
            conn.expires_at = now + self._expiry
        else:  # stop using it a little before the server's own idle time-out fires
            conn.expires_at = now + max(keepalive / 2, keepalive - 0.5)
        if not group.n_waiting and not self._blocked and len(self._idle_lru) < self._keepalive_max:
            group.idle.append(conn)  # the hot path: nobody waits, keep it
            self._idle_lru[conn] = None
            return NO_ACTIONS
        actions = []
        self._make_available(conn, now, actions)
        self._rebalance(now, actions)
        return actions

    def _released_inactive(self, conn: Conn, reusable: bool, now: float) -> list[Action]:
        if conn.state is CLOSED:  # close_all() or a failure of the connection got there first
            return NO_ACTIONS
        if conn.state is not DRAINING:
            raise PoolStateError(f"released {conn!r}, which is not active")
        conn.in_use -= 1
        if reusable and conn.in_use and not self.is_closed:
            return NO_ACTIONS
        actions: list[Action] = []
        self._close(conn, actions, "it drained (the server said GOAWAY or Connection: close)"
                    if reusable else _NOT_REUSABLE)
        self._slot_freed(conn.group, now, actions)
        return actions

    def drain(self, conn: Conn, now: float) -> list[Action]:
        """`conn` takes no new request (the server said GOAWAY or Connection: close): an idle
        one is closed now, an active one when its last request ends."""
        if conn.state is IDLE:
            group = conn.group
            group.idle.remove(conn)
            del self._idle_lru[conn]
            actions: list[Action] = []
            self._close(conn, actions, "the server closed it, or said GOAWAY, while it was idle")
            self._slot_freed(group, now, actions)
            return actions
        if conn.state is ACTIVE:
            if conn.spare:
                conn.spare = False
                conn.group.spare.remove(conn)
            move(conn, DRAINING)
            return NO_ACTIONS
        if conn.state is CLOSED or conn.state is DRAINING:
            return NO_ACTIONS
        raise PoolStateError(f"drain() for {conn!r}, which is still connecting")

    def discard(self, conn: Conn, now: float) -> list[Action]:
        """An idle connection was closed by the peer or found dead: forget it."""
        if conn.state is CLOSED:
            return NO_ACTIONS
        if conn.state is not IDLE:
            raise PoolStateError(f"discard() is for idle connections, got {conn!r}")
        return self.drain(conn, now)

    def cancelled(self, ticket: Ticket, now: float) -> list[Action]:
        """The request behind `ticket` gave up (cancelled, timed out) before using a conn."""
        if ticket.state is WAITING:
            group = ticket.group
            assert group is not None
            move_ticket(ticket, CANCELLED)
            self._left_queue(group)
            if len(group.waiters) > 2 * group.n_waiting + 16:
                group.waiters = deque(t for t in group.waiters if t.state is WAITING)
            if not group.n_connecting or (
                    (group.n_connecting - 1) * group.expect < group.n_waiting):
                if not (self._blocked and self._idle_lru):
                    return NO_ACTIONS
                actions: list[Action] = []
                self._rebalance(now, actions)
                return actions
            # A connection was being opened for the request that left and nobody else needs
            # it: stop the connect and free its slot rather than hold it for the connect
            # time-out (a black-holed host would otherwise keep it for seconds).
            actions = []
            self._close(group.connecting.pop(), actions,
                        "the request it was opened for left and nobody else needs it")
            self._slot_freed(group, now, actions)
            return actions
        if ticket.state is not ASSIGNED:
            return NO_ACTIONS  # failed, or cancelled already
        conn = ticket.conn
        move_ticket(ticket, CANCELLED)
        ticket.conn = None  # assigned, but the request never ran on it: take it back
        if conn is None or conn.state is CLOSED:
            return NO_ACTIONS
        return self.unused(conn, True, now)

    def unused(self, conn: Conn, reusable: bool, now: float) -> list[Action]:
        """A connection handed out (checkout or Assign) comes back without having carried
        its request (found dead, or its requester gave up): undo the counting, release it."""
        if conn.state is ACTIVE or conn.state is DRAINING:
            conn.requests -= 1
            if conn.requests:
                self.reused -= 1
                conn.group.reused -= 1
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
            conn.group.idle.remove(conn)  # the oldest of its key: at the front
            self._close(conn, actions, "past the server's Keep-Alive time-out"
                        if now >= conn.expires_at else "idle for longer than keepalive_expiry")
            self._slot_freed(conn.group, now, actions)
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
        for group in self._groups.values():
            while (ticket := self._pop_waiter(group)) is not None:
                move_ticket(ticket, FAILED)
                error = PoolClosed("the client was closed while this request waited for a "
                                   "connection", origin=group.key.label)
                actions.append(Fail(ticket, error))
            group.connecting.clear()
            group.idle.clear()
            group.spare.clear()
            for conn in list(group.conns):
                conn.spare = False
                self._close(conn, actions, "the pool was closed")
            group.blocked_key = None
        self._idle_lru.clear()
        self._blocked.clear()
        return actions

    def wait_error(self, key: PoolKey, pool_limit: float | None,
                   total: float | None) -> PoolTimeout | TotalTimeout:
        """The error for a request that waited too long for a connection: the pool time-out
        `pool_limit` fired (None: its total time-out did). Names the limits that bind."""
        label = key.label
        if pool_limit is None:
            return TotalTimeout(f"no connection to {label} before the total time-out",
                                origin=label, timeout=total)
        stats = self.stats()
        limits = self.limits
        text = (f"max_connections={limits.max_connections}, {stats.active} active, "
                f"{stats.connecting} connecting, {stats.waiting} waiting")
        group = stats.per_host.get(label)
        if limits.max_connections_per_host is not None and group is not None:
            text += (f"; max_connections_per_host={limits.max_connections_per_host}, "
                     f"{group.active} active to this origin")
        return PoolTimeout(f"no connection to {label} within {pool_limit:g}s ({text})",
                           origin=label, timeout=pool_limit)

    # -- observation -------------------------------------------------------------------------
    def stats(self) -> PoolStats:
        per_host = {}
        for key, g in self._groups.items():
            h2 = [conn for conn in g.conns if conn.multiplexed]
            per_host[key.label] = PoolStats(
                connections=g.n_open, connecting=g.n_connecting, idle=len(g.idle),
                active=g.n_active, waiting=g.n_waiting, created=g.created, reused=g.reused,
                closed=g.closed, http2=len(h2), streams=sum(conn.in_use for conn in h2))
        return PoolStats(
            connections=self.n_open, connecting=sum(s.connecting for s in per_host.values()),
            idle=len(self._idle_lru), active=sum(s.active for s in per_host.values()),
            waiting=self.n_waiting, created=self.created, reused=self.reused,
            closed=self.closed, http2=sum(s.http2 for s in per_host.values()),
            streams=sum(s.streams for s in per_host.values()), per_host=per_host)

    def connections(self) -> list[Conn]:
        """Every open connection, in any state."""
        return [conn for group in self._groups.values() for conn in group.conns]

    def check_invariants(self) -> None:
        """Raise PoolStateError if a rule of the module docstring is broken (for tests)."""
        total = idle = busy_groups = 0
        oldest_idle = next(iter(self._idle_lru), None)
        for key, group in self._groups.items():
            n_idle = len(group.idle)
            states = [c.state for c in group.conns]
            busy = states.count(ACTIVE) + states.count(DRAINING)
            _expect(group.n_connecting == states.count(CONNECTING)
                    and group.n_active == busy and n_idle == states.count(IDLE),
                    f"{key}: counters {group.n_connecting}/{n_idle}/{group.n_active} disagree "
                    f"with connection states {sorted(states)}")
            _expect(group.n_open <= self._per_host, f"{key}: {group.n_open} open > per-host "
                                                    "limit")
            for conn in group.conns:
                # A multiplexed peer may lower its limit below the streams in flight.
                _expect(conn.in_use >= 0 and (conn.in_use <= conn.capacity or conn.multiplexed),
                        f"{conn!r}: in_use {conn.in_use} outside 0..{conn.capacity}")
                _expect((conn.in_use > 0) == (conn.state in (ACTIVE, DRAINING)),
                        f"{conn!r}: in_use {conn.in_use} in state {conn.state}")
                room = conn.state is ACTIVE and conn.in_use < conn.capacity
                _expect(conn.spare == room == (conn in group.spare),
                        f"{conn!r}: spare list out of step")
            live = [t for t in group.waiters if t.state is WAITING]
            _expect(len(live) == group.n_waiting,
                    f"{key}: n_waiting {group.n_waiting} != {len(live)} live tickets")
            _expect(all(a.seq < b.seq for a, b in itertools.pairwise(live)),
                    f"{key}: waiters out of FIFO order")
            _expect(not (live and (group.idle or group.spare)),
                    f"{key}: free connections while requests wait")
            _expect(all(c.state is IDLE and c in self._idle_lru for c in group.idle),
                    f"{key}: idle stack holds a connection that is not idle")
            if group.wants_connection(self._per_host):
                _expect(self.n_open >= self._max and (
                    oldest_idle is None or not self._may_take(group, oldest_idle, None)),
                        f"{key}: waiters uncovered although a connection could be opened")
                _expect(group.blocked_key is not None,
                        f"{key}: waiters uncovered but not queued for a slot")
            busy_groups += group.n_waiting > 0 or group.n_active > 0
            total += group.n_open
            idle += n_idle
        _expect(total == self.n_open, f"open count {self.n_open} != sum over keys {total}")
        _expect(self.n_open <= self._max, f"{self.n_open} open > max_connections {self._max}")
        _expect(idle == len(self._idle_lru), "idle LRU out of step with the idle stacks")
        _expect(idle <= self._keepalive_max, f"{idle} idle > max_keepalive_connections")
        _expect(self.n_waiting == sum(g.n_waiting for g in self._groups.values()),
                "global waiting count out of step")
        _expect(busy_groups == self._n_busy, f"{self._n_busy} keys counted as busy, "
                                             f"{busy_groups} are")

    # -- internals ---------------------------------------------------------------------------
    def _group(self, key: PoolKey) -> Group:
        group = self._groups.get(key)
        if group is None:
            if len(self._groups) >= self._prune_at:
                self._groups = {k: g for k, g in self._groups.items()
                                if g.conns or g.n_waiting or g.blocked_key is not None}
                self._prune_at = max(1024, 2 * len(self._groups))
            expect = self._streams if "h2" in key.protocols else 1
            group = self._groups[key] = Group(key, expect)
        return group

    def _assign(self, conn: Conn) -> None:
        """One more request on `conn` (IDLE, or ACTIVE with room); in the same step it stops
        looking free."""
        group = conn.group
        if conn.state is IDLE:
            move(conn, ACTIVE)
            group.n_active += 1
            if group.n_active == 1 and not group.n_waiting:
                self._n_busy += 1
        conn.in_use += 1
        if conn.in_use < conn.capacity:
            if not conn.spare:
                conn.spare = True
                group.spare.append(conn)
        elif conn.spare:
            conn.spare = False
            group.spare.remove(conn)
        if conn.requests:
            self.reused += 1
            group.reused += 1
        conn.requests += 1

    def _give(self, conn: Conn, ticket: Ticket) -> None:
        self._assign(conn)
        ticket.conn = conn
        move_ticket(ticket, ASSIGNED)

    def _hand_to_waiters(self, conn: Conn, actions: list[Action]) -> None:
        """Give `conn` (with room) to its group's waiters, oldest first, while it has room."""
        group = conn.group
        # A fresh ticket (the resend after the keep-alive race) refuses a connection that may
        # have been closed while it sat unused; one already carrying requests is alive.
        suspect = not conn.in_use and (conn.requests > 0 or conn.pooled)
        while group.n_waiting and (conn.state is IDLE or conn.spare):
            head = self._head(group)
            if head.fresh and suspect:
                return  # it needs a new connection; the caller decides about this one
            self._pop_waiter(group)
            self._give(conn, head)
            actions.append(Assign(head, conn))

    def _make_available(self, conn: Conn, now: float, actions: list[Action]) -> None:
        """An IDLE `conn`, on no list, goes to a waiter, to another key's group, or idle."""
        group = conn.group
        blocked = self._blocked_top() if self._blocked else None
        if blocked is not None and blocked is not group and self._may_take(blocked, conn, now):
            # The slot goes to `blocked` itself: filed anew, the giver (now holding one less)
            # could otherwise come out on top and take it back.
            self._close(conn, actions, f"its slot went to {blocked.key.label}")
            heapq.heappop(self._blocked)  # `blocked` is the top
            blocked.blocked_key = None
            self._provide(blocked, now, actions)
            if group.wants_connection(self._per_host):
                self._block(group)
            return
        self._hand_to_waiters(conn, actions)
        if conn.state is not IDLE:
            return
        if group.n_waiting:  # its head needs a new connection: this one's slot opens it
            self._close(conn, actions, "a waiter of its origin needs a new connection")
            self._slot_freed(group, now, actions)
            return
        if len(self._idle_lru) >= self._keepalive_max:
            if not self._idle_lru:  # max_keepalive_connections == 0
                self._close(conn, actions, "keep-alive is off")
                self._slot_freed(group, now, actions)
                return
            oldest, _ = self._idle_lru.popitem(last=False)
            oldest.group.idle.remove(oldest)
            self._close(oldest, actions, "the oldest idle one, over max_keepalive_connections")
            group.idle.append(conn)
            self._idle_lru[conn] = None
            self._give_slots(now, actions)  # the one it closed may be wanted elsewhere
            return
        group.idle.append(conn)
        self._idle_lru[conn] = None

    def _may_take(self, taker: Group, conn: Conn, now: float | None) -> bool:
        """Whether the blocked group `taker` may have `conn`'s slot (`conn` is IDLE and of
        another group): the fairness rule of the module docstring. (`now` None: leave out
        the rule that depends on the time, as `check_invariants` must.)"""
        giver = conn.group
        if giver.n_waiting and not conn.requests:
            return False  # opened for its own group's waiters just now: it serves them
        held = taker.n_open
        if held == 0:
            return True  # nobody starves
        if held >= max(1, self._max // max(1, self._n_busy)):
            return False  # it has its fair share already
        if (now is not None and not giver.n_waiting and not giver.n_active
                and now - conn.idle_since >= SPARE_AFTER):
            return True  # nothing in flight or waiting there for a while: it is spare
        return giver.n_open >= held + 2

    def _provide(self, group: Group, now: float, actions: list[Action],
                 ticket: Ticket | None = None) -> None:
        """Open connections for `group`'s waiters that none being opened covers yet."""
        while group.wants_connection(self._per_host):
            if self.n_open >= self._max:
                # Room is made by closing the least recently used idle connection, which
                # belongs to another key (this one has waiters, so it has none idle), if the
                # fairness rule lets this group have its slot.
                oldest = next(iter(self._idle_lru), None)
                if oldest is None or not self._may_take(group, oldest, now):
                    self._block(group)
                    return
                del self._idle_lru[oldest]
                oldest.group.idle.remove(oldest)
                self._close(oldest, actions, f"its slot went to {group.key.label}")
            conn = Conn(group, now)
            group.conns.add(conn)
            group.connecting.append(conn)
            self.n_open += 1
            actions.append(Open(conn, ticket if ticket is not None else self._head(group)))
            ticket = None

    def _slot_freed(self, group: Group, now: float, actions: list[Action]) -> None:
        """A connection of `group` went away: the neediest group that wants a slot gets it."""
        if group.wants_connection(self._per_host):
            self._block(group)
        self._give_slots(now, actions)
        self._rebalance(now, actions)

    def _give_slots(self, now: float, actions: list[Action]) -> None:
        while self._blocked and self.n_open < self._max:
            top = self._blocked_top()
            if top is None:
                break
            heapq.heappop(self._blocked)
            top.blocked_key = None
            self._provide(top, now, actions)

    def _rebalance(self, now: float, actions: list[Action]) -> None:
        """After a group went quiet (fewer busy groups: larger shares), blocked groups may
        take idle connections they could not take before. (Nothing to do, and no work, while
        nobody is blocked or nothing is idle.)"""
        while self._blocked and self._idle_lru:
            top = self._blocked_top()
            if top is None:
                return
            oldest = next(iter(self._idle_lru))
            if not self._may_take(top, oldest, now):
                return
            del self._idle_lru[oldest]
            oldest.group.idle.remove(oldest)
            self._close(oldest, actions, f"its slot went to {top.key.label}")
            self._give_slots(now, actions)

    def _block(self, group: Group) -> None:
        """File `group` in the blocked heap, or re-file it if it became needier."""
        key = (group.n_open, self._head(group).seq)
        if group.blocked_key is None or key < group.blocked_key:
            group.blocked_key = key
            heapq.heappush(self._blocked, (key[0], key[1], next(self._tie), group))

    def _blocked_top(self) -> Group | None:
        """The neediest blocked group, after dropping stale heap entries and re-filing the
        top under its current (connections held, oldest waiter)."""
        blocked = self._blocked
        while blocked:
            held, seq, _, group = blocked[0]
            filed = group.blocked_key
            if filed is None or filed[0] != held or filed[1] != seq:
                heapq.heappop(blocked)  # superseded by a newer entry, or no longer blocked
                continue
            if not group.wants_connection(self._per_host):
                heapq.heappop(blocked)
                group.blocked_key = None
                continue
            current = (group.n_open, self._head(group).seq)
            if current != filed:
                group.blocked_key = current
                heapq.heapreplace(blocked, (current[0], current[1], next(self._tie), group))
                continue
            return group
        return None

    def _head(self, group: Group) -> Ticket:
        """The oldest live waiter of `group`, which must have one."""
        waiters = group.waiters
        while waiters[0].state is not WAITING:
            waiters.popleft()
        return waiters[0]

    def _pop_waiter(self, group: Group) -> Ticket | None:
        if not group.n_waiting:
            return None
        ticket = self._head(group)
        group.waiters.popleft()
        self._left_queue(group)
        return ticket

    def _left_queue(self, group: Group) -> None:
        group.n_waiting -= 1
        self.n_waiting -= 1
        if not group.n_waiting and not group.n_active:
            self._n_busy -= 1

    def _retire(self, conn: Conn, now: float, reason: str) -> list[Action]:
        """Close `conn` (on no idle list) and hand its slot on."""
        actions: list[Action] = []
        self._close(conn, actions, reason)
        self._slot_freed(conn.group, now, actions)
        return actions

    def _close(self, conn: Conn, actions: list[Action], reason: str) -> None:
        """Take `conn` (off the idle lists already) out of the books and ask for its close;
        `reason` says why, for the log."""
        actions.append(Close(conn, reason))
        self._remove(conn)

    def _remove(self, conn: Conn) -> None:
        group = conn.group
        if conn.state is not CONNECTING:  # one never opened was never counted as created
            group.closed += 1
            self.closed += 1
        if conn.state is ACTIVE or conn.state is DRAINING:
            group.n_active -= 1
            if not group.n_active and not group.n_waiting:
                self._n_busy -= 1
            conn.in_use = 0
        if conn.spare:
            conn.spare = False
            group.spare.remove(conn)
        move(conn, CLOSED)
        group.conns.discard(conn)
        self.n_open -= 1


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise PoolStateError(message)
