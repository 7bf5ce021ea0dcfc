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
- Routes (a client's mounts) with limits of their own: the keys of one such route form a
  *bucket* (records.Bucket). The pool's `max_connections` bounds every connection; the
  route's `max_connections` bounds its keys' open connections together and its
  `max_keepalive_connections` their idle ones (the pool's bound the idle connections of the
  keys without a bucket); its `max_connections_per_host`, `keepalive_expiry` and
  `max_concurrent_streams` apply to each of its keys instead of the pool's, and so does its
  "no keep-alive" (`keeps_alive_for(key)`). A key's route is read once, when its group is
  made (`key.limits`, `key.bucket`; a key without them is the pool's).
  * A key that wants a connection while its bucket is full waits in its bucket's heap, never
    in the pool's: a full bucket holds up no other route. While its bucket has room but the
    pool is full, the bucket is filed in the pool's heap under its neediest key and competes
    there as one entry.
  * A slot freed by a closed connection of a bucket goes to a waiter of that bucket first,
    then to the pool's neediest. A released connection is handed over (closed, its slot
    given) to another key of its bucket by the rules above, with the bucket's
    `max_connections` and busy keys for the fair share; then to the pool's neediest.
  * An idle connection is closed for a waiter of another route only if that route is below
    its own limit; within a route, by the route's fair share.
- Every input does O(1) or O(log n) work: there is no pass over all waiters or connections
  (cancelled tickets are skipped lazily and compacted when they outnumber live ones; stale heap
  entries are dropped lazily). A few inputs look at the oldest idle connection of each
  bucket: there are as many as the client has mounts with limits, not per request.
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
    Bucket,
    Close,
    Conn,
    Fail,
    Group,
    Heap,
    Open,
    PoolKey,
    PoolStateError,
    PoolStats,
    Settings,
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
        # The settings of the keys without a route of their own (see records.Settings).
        self._own = Settings(limits)
        self._expiry = self._own.expiry
        self._keepalive_max = self._own.keepalive_max
        # Whether a connection of such a key may carry another request once nothing is in
        # flight on it; `keeps_alive_for(key)` says it for any key. Drivers read it to say so
        # on the wire (an HTTP/1.1 request's `Connection: close`).
        self.keeps_alive = self._keepalive_max > 0
        self._groups: dict[PoolKey, Group] = {}
        self._prune_at = 1024
        # The idle connections of the keys without a bucket, oldest first (each bucket keeps
        # its own: `Group.lru` is the one of its group's class).
        self._idle_lru: OrderedDict[Conn, None] = OrderedDict()
        self._buckets: dict[tuple[str, str], Bucket] = {}
        self._bucket_list: list[Bucket] = []
        # heap of (connections held, oldest waiter seq, tie-break, group or bucket); see
        # Group.blocked_key and Bucket.blocked_key
        self._blocked: Heap = []
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
        del group.lru[conn]
        conn.pooled = True
        if not conn.plain:  # room for more than one request, or its key has a route
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
            del group.lru[conn]
            if ticket.fresh or now >= conn.expires_at:
                self._close(conn, actions, "a retry asked for a fresh connection"
                            if ticket.fresh else "past the server's Keep-Alive time-out")
                continue
            conn.pooled = True
            self._give(conn, ticket)
            if actions:  # closed expired ones on the way: their slots may be wanted
                self._give_slots(now, actions, group.bucket)
            return actions
        ticket.seq = next(self._seq)
        move_ticket(ticket, WAITING)
        group.waiters.append(ticket)
        if not group.n_waiting and not group.n_active:
            self._busier(group)
        group.n_waiting += 1
        self.n_waiting += 1
        closed_some = len(actions)
        self._provide(group, now, actions, ticket)
        if closed_some:  # slots of the idle connections closed above, beyond the one it took
            self._give_slots(now, actions, group.bucket)
        if self._blocked and any(type(a) is Close for a in actions[closed_some:]):
            # It closed another key's idle connection for its slot: that key's route may now
            # have room, and its waiters a slot to take.
            self._rebalance(now, actions)
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
            capacity = min(capacity, group.streams)
        conn.capacity = capacity
        conn.plain = capacity == 1 and group.bucket is None
        conn.multiplexed = multiplexed
        group.expect = capacity if multiplexed else 1
        group.created += 1  # counted once open, so that it matches the server's accepts
        self.created += 1
        conn.idle_since = now
        conn.expires_at = now + group.expiry
        actions: list[Action] = []
        self._make_available(conn, now, actions)
        if group.wants_connection():  # it covers fewer than were counted on
            self._provide(group, now, actions)
        self._rebalance(now, actions, group.bucket)
        return actions

    def resize(self, conn: Conn, capacity: int, now: float) -> list[Action]:
        """The peer of multiplexed `conn` allows `capacity` concurrent requests from now on
        (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS, capped by `max_concurrent_streams`). Requests
        in flight above a lowered limit go on; waiters get the room of a raised one."""
        if capacity < 1:
            raise PoolStateError(f"resize({conn!r}) to capacity {capacity}")
        group = conn.group
        capacity = min(capacity, group.streams)
        conn.capacity = capacity
        conn.plain = capacity == 1 and group.bucket is None
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
            if group.wants_connection():
                self._provide(group, now, actions)
                self._rebalance(now, actions)
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
        if not group.plain:  # no keep-alive, or a route's own limits
            return self._released_idle(conn, now, keepalive)
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

    def _released_idle(self, conn: Conn, now: float, keepalive: float | None) -> list[Action]:
        """`released` of a connection with nothing in flight any more, for a key without
        keep-alive or with a route's own limits (the same steps, with the key's settings)."""
        group = conn.group
        if not group.keeps_alive and conn.requests:
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
        conn.state = IDLE  # active -> idle, inline as in `released`
        group.n_active -= 1
        bucket = group.bucket
        if not group.n_active and not group.n_waiting:
            self._n_busy -= 1
            if bucket is not None:
                bucket.n_busy -= 1
        conn.idle_since = now
        expiry = group.expiry
        if keepalive is None or keepalive >= expiry:
            conn.expires_at = now + expiry
        else:
            conn.expires_at = now + max(keepalive / 2, keepalive - 0.5)
        lru = group.lru
        if (not group.n_waiting and not self._blocked and len(lru) < group.keepalive_max
                and (bucket is None or not bucket.blocked)):
            group.idle.append(conn)
            lru[conn] = None
            return NO_ACTIONS
        actions: list[Action] = []
        self._make_available(conn, now, actions)
        self._rebalance(now, actions, bucket)
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
            self._unpark(conn)
            actions: list[Action] = []
            self._close(conn, actions, "the server closed it, or said GOAWAY, while it was idle")
            self._slot_freed(conn.group, now, actions)
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
                bucket = group.bucket
                if not ((self._blocked and self._has_idle())
                        or (bucket is not None and bucket.blocked and bucket.idle)):
                    return NO_ACTIONS
                actions: list[Action] = []
                self._rebalance(now, actions, bucket)
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
        """Close idle connections that sat unused for `keepalive_expiry` (their route's)."""
        actions: list[Action] = []
        for lru, expiry in self._idle_classes():
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
        """When `expire` next has work: the oldest idle connection's expiry time (of each
        route's, which may expire after different times)."""
        when: float | None = None
        for lru, expiry in self._idle_classes():
            if lru:
                conn = next(iter(lru))
                at = min(conn.idle_since + expiry, conn.expires_at)
                if when is None or at < when:
                    when = at
        return when

    def keeps_alive_for(self, key: PoolKey) -> bool:
        """Whether a connection of `key` may carry another request once nothing is in flight
        on it (its route's limits, else the pool's): if not, a driver says `Connection:
        close` on its HTTP/1.1 requests."""
        group = self._groups.get(key)
        if group is not None:
            return group.keeps_alive
        limits = getattr(key, "limits", None)
        return self.keeps_alive if limits is None else Settings(limits).keepalive_max > 0

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
        for bucket in self._bucket_list:
            bucket.idle.clear()
            bucket.blocked.clear()
            bucket.blocked_key = None
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
        group = self._groups.get(key)
        bucket = group.bucket if group is not None else None
        if bucket is not None:
            text += (f"; route {bucket.name}: max_connections={bucket.max}, "
                     f"{bucket.n_open} open")
            limits = bucket.limits
        host = stats.per_host.get(label)
        if limits.max_connections_per_host is not None and host is not None:
            text += (f"; max_connections_per_host={limits.max_connections_per_host}, "
                     f"{host.active} active to this origin")
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
            idle=len(self._idle_lru) + sum(len(b.idle) for b in self._bucket_list),
            active=sum(s.active for s in per_host.values()),
            waiting=self.n_waiting, created=self.created, reused=self.reused,
            closed=self.closed, http2=sum(s.http2 for s in per_host.values()),
            streams=sum(s.streams for s in per_host.values()), per_host=per_host)

    def connections(self) -> list[Conn]:
        """Every open connection, in any state."""
        return [conn for group in self._groups.values() for conn in group.conns]

    def check_invariants(self) -> None:
        """Raise PoolStateError if a rule of the module docstring is broken (for tests)."""
        total = busy_groups = 0
        for key, group in self._groups.items():
            self._check_group(key, group)
            busy_groups += group.n_waiting > 0 or group.n_active > 0
            total += group.n_open
        _expect(total == self.n_open, f"open count {self.n_open} != sum over keys {total}")
        _expect(self.n_open <= self._max, f"{self.n_open} open > max_connections {self._max}")
        own = [g for g in self._groups.values() if g.bucket is None]
        idle = sum(len(g.idle) for g in own)
        _expect(idle == len(self._idle_lru), "idle LRU out of step with the idle stacks")
        _expect(idle <= self._keepalive_max, f"{idle} idle > max_keepalive_connections")
        for bucket in self._bucket_list:
            self._check_bucket(bucket)
        _expect(self.n_waiting == sum(g.n_waiting for g in self._groups.values()),
                "global waiting count out of step")
        _expect(busy_groups == self._n_busy, f"{self._n_busy} keys counted as busy, "
                                             f"{busy_groups} are")

    def _check_group(self, key: PoolKey, group: Group) -> None:
        n_idle = len(group.idle)
        states = [c.state for c in group.conns]
        busy = states.count(ACTIVE) + states.count(DRAINING)
        _expect(group.n_connecting == states.count(CONNECTING)
                and group.n_active == busy and n_idle == states.count(IDLE),
                f"{key}: counters {group.n_connecting}/{n_idle}/{group.n_active} disagree "
                f"with connection states {sorted(states)}")
        _expect(group.n_open <= group.per_host, f"{key}: {group.n_open} open > per-host limit "
                                                f"{group.per_host}")
        bucket = group.bucket
        _expect(group.lru is (self._idle_lru if bucket is None else bucket.idle),
                f"{key}: idle connections kept in another class's list")
        for conn in group.conns:
            # A multiplexed peer may lower its limit below the streams in flight.
            _expect(conn.in_use >= 0 and (conn.in_use <= conn.capacity or conn.multiplexed),
                    f"{conn!r}: in_use {conn.in_use} outside 0..{conn.capacity}")
            _expect((conn.in_use > 0) == (conn.state in (ACTIVE, DRAINING)),
                    f"{conn!r}: in_use {conn.in_use} in state {conn.state}")
            room = conn.state is ACTIVE and conn.in_use < conn.capacity
            _expect(conn.spare == room == (conn in group.spare),
                    f"{conn!r}: spare list out of step")
            _expect(conn.state is CONNECTING
                    or conn.plain == (conn.capacity == 1 and bucket is None),
                    f"{conn!r}: `plain` out of step with its capacity and route")
        live = [t for t in group.waiters if t.state is WAITING]
        _expect(len(live) == group.n_waiting,
                f"{key}: n_waiting {group.n_waiting} != {len(live)} live tickets")
        _expect(all(a.seq < b.seq for a, b in itertools.pairwise(live)),
                f"{key}: waiters out of FIFO order")
        _expect(not (live and (group.idle or group.spare)),
                f"{key}: free connections while requests wait")
        _expect(all(c.state is IDLE and c in group.lru for c in group.idle),
                f"{key}: idle stack holds a connection that is not idle")
        if group.wants_connection():
            _expect(self.n_open >= self._max or (bucket is not None and bucket.is_full),
                    f"{key}: waiters uncovered although a connection could be opened")
            _expect(self._victim(group, None) is None,
                    f"{key}: waiters uncovered although an idle connection's slot is theirs")
            _expect(group.blocked_key is not None,
                    f"{key}: waiters uncovered but not queued for a slot")
            if bucket is not None and not bucket.is_full:
                _expect(bucket.blocked_key is not None,
                        f"{key}: waits for a slot of the pool, its route is not queued for one")

    def _check_bucket(self, bucket: Bucket) -> None:
        groups = [g for g in self._groups.values() if g.bucket is bucket]
        n_open = sum(g.n_open for g in groups)
        _expect(n_open == bucket.n_open, f"{bucket!r}: open count != sum over its keys {n_open}")
        _expect(n_open <= bucket.max, f"{bucket!r}: {n_open} open > its max_connections")
        idle = sum(len(g.idle) for g in groups)
        _expect(idle == len(bucket.idle), f"{bucket!r}: idle list out of step with its keys'")
        _expect(idle <= bucket.settings.keepalive_max,
                f"{bucket!r}: {idle} idle > its max_keepalive_connections")
        _expect(all(c.group.bucket is bucket and c.state is IDLE for c in bucket.idle),
                f"{bucket!r}: idle list holds another's or a busy connection")
        busy = sum(g.n_waiting > 0 or g.n_active > 0 for g in groups)
        _expect(busy == bucket.n_busy, f"{bucket!r}: {bucket.n_busy} keys counted as busy, "
                                       f"{busy} are")

    # -- internals ---------------------------------------------------------------------------
    def _group(self, key: PoolKey) -> Group:
        group = self._groups.get(key)
        if group is None:
            if len(self._groups) >= self._prune_at:
                self._groups = {k: g for k, g in self._groups.items()
                                if g.conns or g.n_waiting or g.blocked_key is not None}
                self._prune_at = max(1024, 2 * len(self._groups))
            # A client's route sets these on the keys it makes (see _route.Route.key).
            limits = getattr(key, "limits", None)
            if limits is None:
                group = Group(key, self._own, self._idle_lru)
            else:
                bucket = self._bucket(key, limits)
                group = Group(key, bucket.settings, bucket.idle, bucket)
            self._groups[key] = group
        return group

    def _bucket(self, key: PoolKey, limits: Limits) -> Bucket:
        """The bucket of `key`'s route (made on its first key); one of its own for a key
        with limits but no route name."""
        name = getattr(key, "bucket", None)
        ident = ("route", name) if name is not None else ("key", str(key))
        bucket = self._buckets.get(ident)
        if bucket is None:
            bucket = self._buckets[ident] = Bucket(key.label if name is None else name, limits)
            self._bucket_list.append(bucket)
        elif bucket.limits != limits:
            raise PoolStateError(f"route {bucket.name}: keys with different limits "
                                 f"({bucket.limits} and {limits})")
        return bucket

    def _busier(self, group: Group) -> None:
        """`group` got its first request in flight or waiting."""
        self._n_busy += 1
        if group.bucket is not None:
            group.bucket.n_busy += 1

    def _quieter(self, group: Group) -> None:
        """`group` has nothing in flight or waiting any more."""
        self._n_busy -= 1
        if group.bucket is not None:
            group.bucket.n_busy -= 1

    def _assign(self, conn: Conn) -> None:
        """One more request on `conn` (IDLE, or ACTIVE with room); in the same step it stops
        looking free."""
        group = conn.group
        if conn.state is IDLE:
            conn.state = ACTIVE  # idle -> active, in CONN_STEPS: inline, on the routes' fast path
            group.n_active += 1
            if group.n_active == 1 and not group.n_waiting:
                self._n_busy += 1
                if group.bucket is not None:
                    group.bucket.n_busy += 1
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
        """An IDLE `conn`, on no list, goes to a waiter, to another key's group (of its own
        route first), or idle."""
        group = conn.group
        bucket = group.bucket
        if bucket is not None and bucket.blocked:
            top = self._top(bucket.blocked)
            if top is not None and top is not group and self._may_take(top, conn, now):
                # Off its heap before the close: filed anew, the giver (now holding one
                # less) could otherwise come out on top and take the slot back.
                heapq.heappop(bucket.blocked)
                top.blocked_key = None
                self._hand_slot(conn, top, now, actions)
                return
        blocked = self._top(self._blocked) if self._blocked else None
        if blocked is not None and blocked is not group and self._may_take(blocked, conn, now):
            self._pop_root()
            self._hand_slot(conn, blocked, now, actions)
            return
        self._hand_to_waiters(conn, actions)
        if conn.state is not IDLE:
            return
        if group.n_waiting:  # its head needs a new connection: this one's slot opens it
            self._close(conn, actions, "a waiter of its origin needs a new connection")
            self._slot_freed(group, now, actions)
            return
        lru = group.lru
        if len(lru) >= group.keepalive_max:
            if not lru:  # max_keepalive_connections == 0
                self._close(conn, actions, "keep-alive is off")
                self._slot_freed(group, now, actions)
                return
            oldest, _ = lru.popitem(last=False)
            oldest.group.idle.remove(oldest)
            self._close(oldest, actions, "the oldest idle one, over max_keepalive_connections")
            group.idle.append(conn)
            lru[conn] = None
            self._give_slots(now, actions, bucket)  # the one it closed may be wanted elsewhere
            return
        group.idle.append(conn)
        lru[conn] = None

    def _hand_slot(self, conn: Conn, taker: Group, now: float, actions: list[Action]) -> None:
        """Close IDLE `conn` (on no list) and open a connection for `taker` (taken off its
        heap) in its slot."""
        giver = conn.group
        self._close(conn, actions, f"its slot went to {taker.key.label}")
        self._provide(taker, now, actions)
        if giver.wants_connection():
            self._block(giver)

    def _may_take(self, taker: Group, conn: Conn, now: float | None) -> bool:
        """Whether the blocked group `taker` may have `conn`'s slot (`conn` is IDLE and of
        another group): the fairness rule of the module docstring, among the keys of their
        route if they share one, else among all. (`now` None: leave out the rule that
        depends on the time, as `check_invariants` must.)"""
        giver = conn.group
        if giver.n_waiting and not conn.requests:
            return False  # opened for its own group's waiters just now: it serves them
        bucket = taker.bucket
        if bucket is None or giver.bucket is not bucket:
            if bucket is not None and bucket.n_open >= bucket.max:
                return False  # its route is at its limit: this slot would not let it open one
            limit, busy = self._max, self._n_busy
        else:
            limit, busy = min(bucket.max, self._max), bucket.n_busy
        held = taker.n_open
        if held == 0:
            return True  # nobody starves
        if held >= max(1, limit // max(1, busy)):
            return False  # it has its fair share already
        if (now is not None and not giver.n_waiting and not giver.n_active
                and now - conn.idle_since >= SPARE_AFTER):
            return True  # nothing in flight or waiting there for a while: it is spare
        return giver.n_open >= held + 2

    def _victim(self, group: Group, now: float | None) -> Conn | None:
        """The idle connection to close so that `group`, which wants a connection and may not
        open one (its route or the pool is full), may open one in its slot; None if no
        connection's slot is its to take."""
        bucket = group.bucket
        own = None
        if bucket is not None:
            own = next(iter(bucket.idle), None)
            if bucket.n_open >= bucket.max:  # only a slot of its own route will do
                return own if own is not None and self._may_take(group, own, now) else None
        if self.n_open < self._max:
            return None
        # The least recently used idle connection, of another key (this one has waiters, so
        # it has none idle); failing that, the oldest of its own route, whose fair share is
        # reckoned among that route's keys.
        oldest = self._oldest_idle()
        if oldest is not None and self._may_take(group, oldest, now):
            return oldest
        if own is not None and own is not oldest and self._may_take(group, own, now):
            return own
        return None

    def _provide(self, group: Group, now: float, actions: list[Action],
                 ticket: Ticket | None = None) -> None:
        """Open connections for `group`'s waiters that none being opened covers yet."""
        bucket = group.bucket
        while group.wants_connection():
            if self.n_open >= self._max or (bucket is not None and bucket.n_open >= bucket.max):
                victim = self._victim(group, now)
                if victim is None:
                    self._block(group)
                    return
                self._unpark(victim)
                self._close(victim, actions, f"its slot went to {group.key.label}")
            conn = Conn(group, now)
            group.conns.add(conn)
            group.connecting.append(conn)
            self.n_open += 1
            if bucket is not None:
                bucket.n_open += 1
            actions.append(Open(conn, ticket if ticket is not None else self._head(group)))
            ticket = None

    def _slot_freed(self, group: Group, now: float, actions: list[Action]) -> None:
        """A connection of `group` went away: the neediest group that wants a slot gets it
        (of its route first)."""
        if group.wants_connection():
            self._block(group)
        self._give_slots(now, actions, group.bucket)
        self._rebalance(now, actions, group.bucket)

    def _give_slots(self, now: float, actions: list[Action], first: Bucket | None = None) -> None:
        """Free slots of the pool go to the neediest blocked groups: to those of bucket
        `first` (whose connection just closed) while it has room, then to any."""
        if first is not None and first.blocked:
            while self.n_open < self._max and first.n_open < first.max:
                top = self._top(first.blocked)
                if top is None:
                    break
                heapq.heappop(first.blocked)
                top.blocked_key = None
                self._provide(top, now, actions)
        while self._blocked and self.n_open < self._max:
            top = self._top(self._blocked)
            if top is None:
                break
            self._pop_root()
            self._provide(top, now, actions)

    def _rebalance(self, now: float, actions: list[Action], bucket: Bucket | None = None) -> None:
        """After a group went quiet (fewer busy groups: larger shares), blocked groups may
        take idle connections they could not take before: of `bucket`'s keys within it, then
        of the pool. (Nothing to do, and no work, while nobody is blocked or nothing is idle.)"""
        if bucket is not None and bucket.blocked and bucket.idle:
            self._rebalance_bucket(bucket, now, actions)
        while self._blocked:
            if self.n_open < self._max:  # a slot is free (a full route's heap entry was dropped)
                self._give_slots(now, actions)
                continue
            top = self._top(self._blocked)
            if top is None:
                return
            victim = self._victim(top, now)
            if victim is None:
                return
            self._pop_root()
            self._unpark(victim)
            self._close(victim, actions, f"its slot went to {top.key.label}")
            self._provide(top, now, actions)

    def _rebalance_bucket(self, bucket: Bucket, now: float, actions: list[Action]) -> None:
        """The same within one route: its neediest blocked key may take the slot of its
        oldest idle connection."""
        while bucket.blocked and bucket.idle:
            top = self._top(bucket.blocked)
            if top is None:
                return
            victim = None
            if bucket.n_open >= bucket.max or self.n_open >= self._max:
                victim = next(iter(bucket.idle))
                if not self._may_take(top, victim, now):
                    return
            heapq.heappop(bucket.blocked)
            top.blocked_key = None
            if victim is not None:
                self._unpark(victim)
                self._close(victim, actions, f"its slot went to {top.key.label}")
            self._provide(top, now, actions)

    def _block(self, group: Group) -> None:
        """File `group` in its blocked heap (its bucket's, or the pool's), or re-file it if it
        became needier; a bucket with room is filed in the pool's heap for it."""
        key = (group.n_open, self._head(group).seq)
        bucket = group.bucket
        if bucket is None:
            self._file(self._blocked, group, key)
            return
        self._file(bucket.blocked, group, key)
        self._file_bucket(bucket)

    def _file(self, heap: Heap, entry: Group | Bucket,
              key: tuple[int, int]) -> None:
        if entry.blocked_key is None or key < entry.blocked_key:
            entry.blocked_key = key
            heapq.heappush(heap, (key[0], key[1], next(self._tie), entry))

    def _file_bucket(self, bucket: Bucket) -> None:
        """If `bucket` has room and keys that want a connection, file it in the pool's heap
        under its neediest one: its keys wait for a slot of the pool now."""
        if bucket.n_open < bucket.max:
            top = self._top(bucket.blocked)
            if top is not None:
                assert top.blocked_key is not None
                self._file(self._blocked, bucket, top.blocked_key)

    def _top(self, heap: Heap) -> Group | None:
        """The neediest blocked group of `heap` (the pool's, or a bucket's), after dropping
        stale entries and re-filing the top under its current (connections held, oldest
        waiter). A bucket in the pool's heap stands for its own neediest group; one that is
        full is dropped (its groups wait in its heap for its slots)."""
        while heap:
            held, seq, _, entry = heap[0]
            filed = entry.blocked_key
            if filed is None or filed[0] != held or filed[1] != seq:
                heapq.heappop(heap)  # superseded by a newer entry, or no longer blocked
                continue
            if isinstance(entry, Group):
                group: Group | None = entry
                if not entry.wants_connection():
                    heapq.heappop(heap)
                    entry.blocked_key = None
                    continue
                current = (entry.n_open, self._head(entry).seq)
            else:
                group = None if entry.n_open >= entry.max else self._top(entry.blocked)
                if group is None:
                    heapq.heappop(heap)
                    entry.blocked_key = None
                    continue
                assert group.blocked_key is not None
                current = group.blocked_key
            if current != filed:
                entry.blocked_key = current
                heapq.heapreplace(heap, (current[0], current[1], next(self._tie), entry))
                continue
            return group
        return None

    def _pop_root(self) -> None:
        """Take the top of the pool's heap (just returned by `_top`) off it; a bucket's, its
        neediest group off the bucket's heap, and the bucket filed anew for the others."""
        _, _, _, entry = heapq.heappop(self._blocked)
        entry.blocked_key = None
        if isinstance(entry, Bucket):
            _, _, _, group = heapq.heappop(entry.blocked)  # a group: buckets hold no buckets
            group.blocked_key = None
            self._file_bucket(entry)

    def _oldest_idle(self) -> Conn | None:
        """The least recently used idle connection of the pool (of any route)."""
        oldest = next(iter(self._idle_lru), None)
        for bucket in self._bucket_list:
            conn = next(iter(bucket.idle), None)
            if conn is not None and (oldest is None or conn.idle_since < oldest.idle_since):
                oldest = conn
        return oldest

    def _has_idle(self) -> bool:
        return bool(self._idle_lru) or any(bucket.idle for bucket in self._bucket_list)

    def _idle_classes(self) -> list[tuple[OrderedDict[Conn, None], float]]:
        """Each list of idle connections (oldest first) with its keepalive_expiry."""
        return [(self._idle_lru, self._expiry), *((bucket.idle, bucket.settings.expiry)
                                                 for bucket in self._bucket_list)]

    def _unpark(self, conn: Conn) -> None:
        """Take IDLE `conn` off its idle lists."""
        group = conn.group
        group.idle.remove(conn)
        del group.lru[conn]

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
            self._quieter(group)

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
                self._quieter(group)
            conn.in_use = 0
        if conn.spare:
            conn.spare = False
            group.spare.remove(conn)
        move(conn, CLOSED)
        group.conns.discard(conn)
        self.n_open -= 1
        bucket = group.bucket
        if bucket is not None:
            bucket.n_open -= 1
            if bucket.blocked and not self.is_closed:
                # Its route has room again: its waiters wait for a slot of the pool now.
                self._file_bucket(bucket)


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise PoolStateError(message)
