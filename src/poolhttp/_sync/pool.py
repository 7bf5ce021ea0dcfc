"""The threaded driver of the pool core.

One lock guards PoolState. Each input runs under it, and its actions are carried out under it
too, in order: waking a waiter (releasing its private lock) and closing a socket never block,
and closing before waking means a slot handed on is never used while the old socket is still
open. What can block -- connecting, resolving -- happens after the lock is released.

A waiting thread sleeps on its own `threading.Lock`. When the core opens a connection for a
waiter (`Open(conn, ticket)`), that waiter's thread dials it: the thread that caused the
action (say, one releasing a connection) never pays for somebody else's connect. The dialled
connection then goes to whoever is first in line, by the core's FIFO rule.

After `os.fork()` the child gets a fresh pool: it never touches the parent's sockets.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import weakref
from typing import TYPE_CHECKING

from .._core.connect import ConnectPlan, RequestTicket
from .._core.http11 import Encoders
from .._core.pool import Action, Assign, Close, Conn, Fail, Open, PoolKey, PoolState
from .._core.records import PoolObserver
from .._exceptions import ConnectError, HTTPError, TotalTimeout
from .._log import DEBUG, connection_log, log_closed, log_opened, log_waited, pool_log
from .._route import route_of
from .._tls import HTTP1
from .._trace import Trace
from .._urls import Origin
from .connect import SyncDialer
from .connection import SyncConnection
from .tlstls import TLS_SOCKETS

if TYPE_CHECKING:
    from .._config import PoolConfig, Timeout
    from .._core.http2 import H2Encoder
    from .http2 import SyncH2Connection

__all__ = ["SyncPool"]


class _Waiter:
    """A sleeping request's wake-up call and mailbox; fields change under the pool lock."""

    __slots__ = ("dials", "error", "lock", "woken")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.lock.acquire()
        self.woken = False
        self.dials: list[Conn] = []
        self.error: BaseException | None = None

    def wake(self) -> None:
        if not self.woken:
            self.woken = True
            self.lock.release()


def _sockname(sock: socket.socket) -> object:
    try:
        return sock.getsockname()
    except OSError:
        return None


_POOLS: weakref.WeakSet[SyncPool] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for pool in list(_POOLS):
        pool.reset_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class SyncPool:
    """Connections of one Client, shared by all its threads."""

    def __init__(self, config: PoolConfig) -> None:
        self.config = config
        self.lock = threading.Lock()
        self.state = PoolState(config.limits)
        self.encoders = Encoders()  # HTTP/1.1 requests, heads cached per origin and kind
        self.encoder = self.encoders.default  # origin-form, kept alive: the common kind
        self._h2_encoder: H2Encoder | None = None  # made when a connection speaks HTTP/2
        self._h2: set[SyncH2Connection] = set()  # their reader threads are joined on close
        self.dialer = SyncDialer(config)
        #: Told of each connection opened and closed (see PoolObserver); None: nobody asked.
        self.observer: PoolObserver | None = None
        self._reaper: threading.Thread | None = None  # closes idle connections on expiry
        self._stop_reaper = threading.Event()
        _POOLS.add(self)

    def reset_after_fork(self) -> None:
        """In a forked child: drop the parent's connections without touching their sockets'
        shared state (closing our copy of a descriptor does not close the parent's)."""
        for conn in self.state.connections():
            if conn.io is not None:
                conn.io.close()
        self.lock = threading.Lock()
        self.state = PoolState(self.config.limits)
        self.dialer = SyncDialer(self.config)
        self._reaper = None  # threads do not survive a fork
        self._stop_reaper = threading.Event()

    @property
    def dns_lookups(self) -> int:
        return self.dialer.dns.lookups

    @property
    def h2_encoder(self) -> H2Encoder:
        if self._h2_encoder is None:
            from .._core.http2 import H2Encoder

            self._h2_encoder = H2Encoder()
        return self._h2_encoder

    def drain(self, conn: Conn) -> None:
        """`conn` takes no new request (the server said GOAWAY)."""
        with self.lock:
            self._apply(self.state.drain(conn, time.monotonic()), None)

    def resize(self, conn: Conn, capacity: int) -> None:
        """The server changed the concurrent-stream limit of HTTP/2 `conn`."""
        with self.lock:
            self._apply(self.state.resize(conn, capacity, time.monotonic()), None)

    def forget(self, h2: SyncH2Connection) -> None:
        """An HTTP/2 connection's reader thread is ending."""
        with self.lock:
            self._h2.discard(h2)

    def discard(self, conn: Conn) -> None:
        """An idle connection was closed by the peer."""
        with self.lock:
            if conn.state == "idle":
                self._apply(self.state.discard(conn, time.monotonic()), None)

    # -- acquiring ---------------------------------------------------------------------------
    def acquire(self, key: PoolKey, origin: Origin, timeout: Timeout, deadline: float | None,
                trace: Trace | None, fresh: bool = False) -> Conn:
        """A connection of `key` (to `origin`): the fast path takes an idle one that is still
        alive, else the request waits for one; with `fresh`, a new one (see Ticket.fresh)."""
        while True:
            conn = None
            if not fresh:
                with self.lock:
                    conn = self.state.checkout(key, time.monotonic())
            if conn is None:
                conn = self._wait(key, origin, timeout, deadline, trace, fresh)
            io: SyncConnection | SyncH2Connection = conn.io
            # One that waited in the pool may have been closed by the server meanwhile.
            if not conn.may_be_stale or io.is_reusable():
                return conn
            with self.lock:  # closed by the server while idle: never used, try the next one
                self._apply(self.state.unused(conn, False, time.monotonic()), None)

    def _wait(self, key: PoolKey, origin: Origin, timeout: Timeout, deadline: float | None,
              trace: Trace | None, fresh: bool) -> Conn:
        """Queue for a connection. The waiter's lock works as a binary semaphore: `wake()`
        releases it once, and only this thread takes it back, so no wake-up is ever lost."""
        ticket = RequestTicket(key, origin, timeout, deadline, trace, fresh)
        waiter = ticket.waiter = _Waiter()
        now = time.monotonic()
        limit = timeout.pool
        end = now + limit if limit is not None else None
        total_first = deadline is not None and (end is None or deadline < end)
        if total_first:
            end = deadline
        with self.lock:
            self._apply(self.state.request(ticket, now), ticket)
        if ticket.conn is not None:
            return ticket.conn
        while True:
            while True:  # connections the core opened for us: we dial them
                with self.lock:
                    dials = self._take_dials(waiter)
                if not dials:
                    break
                for index, conn in enumerate(dials):
                    try:
                        self._dial(conn, ticket)
                    except BaseException:  # our total time-out, or an interrupt
                        with self.lock:  # the rest go back undialled, for whoever waits
                            for rest in dials[index + 1:]:
                                self._apply(self.state.connect_failed(
                                    rest, None, time.monotonic()), None)
                        raise
            remaining = -1.0 if end is None else max(0.0, end - time.monotonic())
            woke = waiter.lock.acquire(timeout=remaining)
            with self.lock:
                if not woke and waiter.woken:  # woken between the time-out and this lock
                    woke = waiter.lock.acquire(blocking=False)
                if woke:
                    waiter.woken = False
                    if ticket.conn is None and waiter.error is None:
                        continue  # handed a connection to dial
                    self._hand_on_dials(waiter)
                    error = waiter.error
                else:  # timed out: leave the queue, hand on what we were to dial
                    self._apply(self.state.cancelled(ticket, time.monotonic()), None)
                    self._hand_on_dials(waiter)
                    error = None
            if ticket.conn is not None:
                if pool_log.isEnabledFor(DEBUG):
                    log_waited(ticket.conn, time.monotonic() - now)
                return ticket.conn
            if error is not None:
                raise error
            with self.lock:
                raise self.state.wait_error(key, None if total_first else limit,
                                            timeout.total)

    def _hand_on_dials(self, waiter: _Waiter) -> None:
        """(Under the lock.) Return our undialled connections to the core, which opens them
        for whoever still waits."""
        for conn in self._take_dials(waiter):
            self._apply(self.state.connect_failed(conn, None, time.monotonic()), None)

    def _take_dials(self, waiter: _Waiter) -> list[Conn]:
        dials, waiter.dials = waiter.dials, []
        return dials

    # -- applying the core's actions (under the lock) ------------------------------------------
    def _apply(self, actions: list[Action], me: RequestTicket | None) -> None:
        """Carry out actions, in order, under the pool lock. Sockets are closed here rather
        than after unlocking: a close without linger does not block, and closing first means
        a slot handed to another waiter is never used while the old socket is still open."""
        for action in actions:
            kind = type(action)
            if kind is Close:
                io = action.conn.io  # type: ignore[union-attr]
                if connection_log.isEnabledFor(DEBUG):
                    log_closed(action.conn, action.reason)  # type: ignore[union-attr]
                if self.observer is not None:
                    self.observer.closed(action.conn, time.monotonic())  # type: ignore[union-attr]
                if io is not None:
                    io.close()
            elif kind is Assign:
                action.ticket.waiter.wake()  # type: ignore[union-attr]
            elif kind is Open:
                waiter = action.ticket.waiter  # type: ignore[union-attr]
                waiter.dials.append(action.conn)  # type: ignore[union-attr]
                if action.ticket is not me:  # type: ignore[union-attr]
                    waiter.wake()
            else:
                assert isinstance(action, Fail)
                action.ticket.waiter.error = action.error
                action.ticket.waiter.wake()

    def release(self, conn: Conn, reusable: bool, keepalive: float | None) -> None:
        if conn.requests == 1 and conn.key.tls is not None and self.config.tls_resumption:
            self.dialer.keep_session(conn)  # once per connection: after its first response
        reaper = None
        with self.lock:
            actions = self.state.released(conn, reusable, time.monotonic(), keepalive)
            if actions:
                self._apply(actions, None)
            if (self._reaper is None and reusable and not self.state.is_closed
                    and self.state.next_expiry() is not None):
                reaper = self._reaper = threading.Thread(
                    target=self._reap, name="poolhttp-expiry", daemon=True)
        if reaper is not None:
            reaper.start()  # outside the lock: starting a thread waits for it to run

    # -- idle expiry ---------------------------------------------------------------------
    # A daemon thread closes idle connections when they expire, so they close on time even if
    # nobody uses the pool again. It exits once no idle connection is left (the next release
    # starts another) and when the pool closes.

    def _reap(self) -> None:
        stop = self._stop_reaper
        while True:
            with self.lock:
                if self.state.is_closed or self._reaper is not threading.current_thread():
                    return
                self._apply(self.state.expire(time.monotonic()), None)
                when = self.state.next_expiry()
                if when is None:
                    self._reaper = None
                    return
            if stop.wait(max(0.0, when - time.monotonic()) + 0.001):
                return

    # -- connecting --------------------------------------------------------------------------
    def _dial(self, conn: Conn, ticket: RequestTicket) -> None:
        """Connect `conn`, within the connect time-out and the total deadline of `ticket`'s
        request (the policy in _core/connect.py), then report the outcome to the core (it
        picks who gets it)."""
        route = route_of(conn.key)
        plan = ConnectPlan(ticket.origin, self.config.family, ticket.timeout, ticket.deadline,
                           self.dialer.dns, time.monotonic(), via=route.proxy,
                           uds=self.config.uds)
        try:
            sock = self.dialer.open(plan, conn.key, ticket.trace)
            h2 = self._speaks_h2(conn, plan, sock, ticket.timeout.write)
            if h2 is not None:
                self._start_h2(h2, plan)
        except TotalTimeout:
            # Cut short by this request's own total deadline: given up. It leaves the queue,
            # nobody else fails with its error, and the slot goes to whoever waits next.
            now = time.monotonic()
            with self.lock:
                self._apply(self.state.cancelled(ticket, now), None)
                self._apply(self.state.connect_failed(conn, None, now), None)
                self._hand_on_dials(ticket.waiter)
            raise
        except HTTPError as exc:
            with self.lock:
                self._apply(self.state.connect_failed(conn, exc, time.monotonic()), ticket)
        else:
            if connection_log.isEnabledFor(DEBUG):
                log_opened(conn, plan.origin.key, _sockname(sock), plan.via,
                           sock.version() if isinstance(sock, TLS_SOCKETS) else None,
                           isinstance(sock, TLS_SOCKETS) and bool(sock.session_reused),
                           h2 is not None)
            if self.observer is not None:
                self.observer.opened(conn, time.monotonic(), h2 is not None)
            if h2 is not None:
                with self.lock:
                    h2.started = True
                    self._apply(self.state.connected(conn, time.monotonic(),
                                                     h2.session.max_streams, multiplexed=True),
                                ticket)
                return
            conn.io = SyncConnection(self, conn, plan.origin.key, sock)
            keeps_alive = self.state.keeps_alive_for(conn.key)  # a mount may say otherwise
            if conn.key.proxy is not None or not keeps_alive:
                conn.io.encoder = route.encoder(plan.origin, self.encoders, not keeps_alive)
            with self.lock:
                self._apply(self.state.connected(conn, time.monotonic()), ticket)

    def _speaks_h2(self, conn: Conn, plan: ConnectPlan, sock: socket.socket,
                   write_timeout: float | None) -> SyncH2Connection | None:
        """An HTTP/2 connection over `sock` if ALPN chose h2 (or, over plain http, the key
        says h2 only: prior knowledge); None for HTTP/1.1."""
        protocols = conn.key.protocols
        if protocols == HTTP1:
            return None
        if plan.origin.is_tls:
            assert isinstance(sock, TLS_SOCKETS)
            try:
                if not plan.speaks_h2(protocols, sock.selected_alpn_protocol()):
                    return None
            except ConnectError:
                sock.close()
                raise
        from .http2 import SyncH2Connection

        h2 = SyncH2Connection(self, conn, plan.origin.key, sock, write_timeout)
        conn.io = h2
        return h2

    def _start_h2(self, h2: SyncH2Connection, plan: ConnectPlan) -> None:
        """Start its reader and wait for the server's SETTINGS (its stream limit), within the
        connect's time."""
        with self.lock:
            self._h2.add(h2)
        h2.start()
        remaining = plan.remaining(time.monotonic())
        if not h2.ready.wait(remaining) or h2.closed:
            h2.close()
            with self.lock:
                self._h2.discard(h2)
            if not h2.ready.is_set():
                raise plan.out_of_time()
            raise ConnectError(f"{plan.origin.key} closed the connection before its HTTP/2 "
                               "settings", origin=plan.origin.key)

    # -- closing -------------------------------------------------------------------------
    def close(self) -> None:
        with self.lock:
            self._apply(self.state.close_all(), None)
            reaper, self._reaper = self._reaper, None
        self._stop_reaper.set()
        with self.lock:
            readers, self._h2 = list(self._h2), set()
        for h2 in readers:
            h2.join(5.0)
        if reaper is not None and reaper is not threading.current_thread():
            try:
                reaper.join(5.0)
            except RuntimeError:  # made by a release but not started yet: it will see the
                pass              # pool closed and end at once
