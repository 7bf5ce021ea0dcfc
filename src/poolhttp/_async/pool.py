"""The asyncio driver of the pool core: it carries out PoolState's actions.

There is no lock: every PoolState input runs in one event-loop callback or coroutine step, and
its actions are applied right after. Connecting runs in a Task per new connection (never per
request); a waiter is a Future woken by an Assign or Fail action. Idle expiry is one timer for
the whole pool, armed for the oldest idle connection.
"""

from __future__ import annotations

import asyncio
import socket
from threading import get_ident
from time import perf_counter  # the trace's seconds: the loop's clock may tick in ms
from typing import TYPE_CHECKING, cast

from .._core.connect import ConnectPlan, RequestTicket
from .._core.http11 import Encoders
from .._core.pool import Action, Assign, Close, Conn, Fail, Open, PoolKey, PoolState
from .._core.records import IDLE, WAITING, PoolObserver
from .._exceptions import ConnectError, HTTPError, TotalTimeout
from .._log import DEBUG, connection_log, log_closed, log_opened, log_waited, pool_log
from .._route import route_of
from .._tls import HTTP1, offer_session, tls_context
from .._trace import Trace, emit
from .._urls import Origin
from .connect import AsyncDialer
from .connection import AsyncConnection

if TYPE_CHECKING:
    from .._config import PoolConfig, Timeout
    from .._core.http2 import H2Encoder
    from .http2 import AsyncH2Connection

    AnyConnection = AsyncConnection | AsyncH2Connection

__all__ = ["AsyncPool"]


class AsyncPool:
    """Connections of one AsyncClient, bound to one event loop."""

    def __init__(self, config: PoolConfig) -> None:
        self.config = config
        self.state = PoolState(config.limits)
        self.encoders = Encoders()  # HTTP/1.1 requests, heads cached per origin and kind
        self.encoder = self.encoders.default  # origin-form, kept alive: the common kind
        self._h2_encoder: H2Encoder | None = None  # made when a connection speaks HTTP/2
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]  # bound lazily
        self.dialer = AsyncDialer(config)
        #: Told of each connection opened and closed (see PoolObserver); None: nobody asked.
        self.observer: PoolObserver | None = None
        self._live: set[AnyConnection] = set()
        self._expiry_timer: asyncio.TimerHandle | None = None
        self._writes: list[tuple[AsyncConnection, bytes]] | None = None
        self._thread = 0  # the thread our loop runs in (0: not bound yet)

    def check_loop(self) -> None:
        """Make sure the caller runs on this pool's loop (binding it on first use).

        asyncio.get_running_loop() costs a getpid() system call in CPython, too much for
        every request. One loop runs per thread, so when this thread is the one our loop
        runs in and our loop is running, the caller is on it; only otherwise do we ask."""
        if self._thread != get_ident() or not self.loop.is_running():
            self.bind(asyncio.get_running_loop())

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Use `loop` from now on; refused while connections live on another loop."""
        self._thread = get_ident()
        if self.loop is not None and loop is not self.loop:
            if self._live or self.state.n_open or self.state.n_waiting:
                raise RuntimeError(
                    "this AsyncClient has connections on another event loop; an AsyncClient "
                    "cannot be shared between event loops (create one per loop, or close it "
                    "with 'await client.aclose()' before using it from another loop)")
            self._cancel_expiry()
        self.loop = loop

    @property
    def dns_lookups(self) -> int:
        return self.dialer.dns.lookups

    @property
    def h2_encoder(self) -> H2Encoder:
        if self._h2_encoder is None:
            from .._core.http2 import H2Encoder

            self._h2_encoder = H2Encoder()
        return self._h2_encoder

    # -- acquiring ---------------------------------------------------------------------------
    def checkout(self, key: PoolKey, now: float) -> Conn | None:
        """The fast path: a free connection of `key` whose transport is still there, else None
        (then `acquire`)."""
        state = self.state
        while (conn := state.checkout(key, now)) is not None:
            if not conn.io.closing:
                return conn
            self.unused(conn)  # its transport went away while it sat idle
        return None

    async def acquire(self, key: PoolKey, origin: Origin, timeout: Timeout,
                      deadline: float | None, trace: Trace | None, fresh: bool = False) -> Conn:
        """Wait for a connection of `key` (to `origin`); with `fresh`, for a new one (see
        Ticket.fresh). Connections whose transport went away meanwhile are passed over."""
        while True:
            conn = await self._wait(key, origin, timeout, deadline, trace, fresh)
            if not conn.io.closing:
                return conn
            self.unused(conn)

    async def _wait(self, key: PoolKey, origin: Origin, timeout: Timeout,
                    deadline: float | None, trace: Trace | None, fresh: bool) -> Conn:
        loop = self.loop
        now = loop.time()
        ticket = RequestTicket(key, origin, timeout, deadline, trace, fresh)
        future: asyncio.Future[Conn] = loop.create_future()
        ticket.waiter = future
        actions = self.state.request(ticket, now)
        if actions:
            self.apply(actions)
        if ticket.conn is not None:
            return ticket.conn
        limit = timeout.pool
        if deadline is not None and (limit is None or deadline - now < limit):
            handle = loop.call_at(deadline, self._waited_too_long, ticket, None)
        elif limit is not None:
            handle = loop.call_at(now + limit, self._waited_too_long, ticket, limit)
        else:
            handle = None
        try:
            conn = await future
        except BaseException:
            actions = self.state.cancelled(ticket, loop.time())
            if actions:
                self.apply(actions)
            raise
        finally:
            if handle is not None:
                handle.cancel()
        if pool_log.isEnabledFor(DEBUG):
            log_waited(conn, loop.time() - now)
        return conn

    def _waited_too_long(self, ticket: RequestTicket, limit: float | None) -> None:
        future = ticket.waiter
        if not future.done():
            future.set_exception(self.state.wait_error(ticket.key, limit, ticket.timeout.total))

    # -- applying the core's actions ---------------------------------------------------------
    def apply(self, actions: list[Action]) -> None:
        for action in actions:
            kind = type(action)
            if kind is Assign:
                future = action.ticket.waiter  # type: ignore[union-attr]
                if not future.done():
                    future.set_result(action.conn)  # type: ignore[union-attr]
            elif kind is Close:
                io = action.conn.io  # type: ignore[union-attr]
                if connection_log.isEnabledFor(DEBUG):
                    log_closed(action.conn, action.reason)  # type: ignore[union-attr]
                if self.observer is not None:
                    self.observer.closed(action.conn, self.loop.time())  # type: ignore[union-attr]
                if io is not None:
                    io.close()
            elif kind is Open:
                self._open(action.conn, action.ticket)  # type: ignore[union-attr, arg-type]
            else:
                assert isinstance(action, Fail)
                future = action.ticket.waiter
                if not future.done():
                    future.set_exception(action.error)

    def release(self, conn: Conn, reusable: bool, keepalive: float | None) -> None:
        """A connection's exchange ended (called by AsyncConnection)."""
        if conn.requests == 1 and conn.key.tls is not None and self.config.tls_resumption:
            self._keep_session(conn)  # once per connection: after its first response
        actions = self.state.released(conn, reusable, self.loop.time(), keepalive)
        if actions:
            self.apply(actions)
        if self._expiry_timer is None and reusable:
            self._arm_expiry()

    def _keep_session(self, conn: Conn) -> None:
        """Keep the TLS session of `conn` (its first response has come, and with it a TLS
        1.3 server's tickets) for the next connection of its key."""
        transport = conn.io.transport if conn.io is not None else None
        ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
        sessions = self.dialer.sessions
        if ssl_object is not None and sessions.wants(conn.key, ssl_object.session_reused):
            sessions.keep(conn.key, ssl_object.session)

    def write(self, proto: AsyncConnection, data: bytes) -> None:
        """Send a request now, or batched with the others sent in this loop iteration.

        Requests written one by one from their tasks' steps reach the server spread out, so
        it goes idle in between and each send pays for waking it. The first request of an
        iteration goes out at once and opens a window; those that follow in the same
        iteration are sent back to back at the start of the next one, which costs much less
        per send. One request at a time is never delayed."""
        writes = self._writes
        if writes is None:
            assert proto.transport is not None
            proto.transport.write(data)
            self._writes = []
            self.loop.call_soon(self._flush_writes)
        else:
            proto.unsent = True
            writes.append((proto, data))

    def _flush_writes(self) -> None:
        writes, self._writes = self._writes, None
        for proto, data in writes or ():
            transport = proto.transport
            proto.unsent = False
            if transport is not None and not proto.closing:
                transport.write(data)

    def drain(self, conn: Conn) -> None:
        """`conn` takes no new request (the server said GOAWAY)."""
        self.apply(self.state.drain(conn, self.loop.time()))

    def resize(self, conn: Conn, capacity: int) -> None:
        """The server changed the concurrent-stream limit of HTTP/2 `conn`."""
        self.apply(self.state.resize(conn, capacity, self.loop.time()))

    def unused(self, conn: Conn) -> None:
        """A connection handed out turned out dead before carrying its request."""
        self.apply(self.state.unused(conn, False, self.loop.time()))

    def discard(self, conn: Conn) -> None:
        """An idle connection's transport was lost or went out of step."""
        if conn.state is IDLE:
            self.apply(self.state.discard(conn, self.loop.time()))

    def forget(self, proto: AnyConnection) -> None:
        self._live.discard(proto)

    # -- connecting --------------------------------------------------------------------------
    def _open(self, conn: Conn, ticket: RequestTicket) -> None:
        proto: AnyConnection
        if conn.key.protocols == ("h2",) and not ticket.origin.is_tls:  # h2c, prior knowledge
            from .http2 import AsyncH2Connection

            proto = AsyncH2Connection(self, conn, ticket.origin.key)
        else:  # HTTP/1.1, or whichever ALPN selects (the handshake swaps it for HTTP/2)
            proto = AsyncConnection(self, conn, ticket.origin.key)
            keeps_alive = self.state.keeps_alive_for(conn.key)  # a mount may say otherwise
            if conn.key.proxy is not None or not keeps_alive:
                proto.encoder = route_of(conn.key).encoder(ticket.origin, self.encoders,
                                                           not keeps_alive)
        conn.io = proto
        self._live.add(proto)
        proto.connect_task = self.loop.create_task(self._connect(conn, proto, ticket))

    async def _connect(self, conn: Conn, proto: AnyConnection, ticket: RequestTicket) -> None:
        """Open `conn` within the connect time-out and the total deadline of `ticket`'s
        request (the policy in _core/connect.py), then report the outcome to the core."""
        loop = self.loop
        plan = ConnectPlan(ticket.origin, self.config.family, ticket.timeout, ticket.deadline,
                           self.dialer.dns, loop.time(), mark=perf_counter(),
                           via=route_of(conn.key).proxy, uds=self.config.uds)
        task = asyncio.current_task()
        assert task is not None
        timed_out = False

        def on_timeout() -> None:
            nonlocal timed_out
            timed_out = True
            task.cancel()

        handle = loop.call_at(plan.end, on_timeout) if plan.end is not None else None
        try:
            proto = await self._establish(plan, proto, ticket.trace)
            if proto.multiplexed:
                await cast("AsyncH2Connection", proto).ready  # the server's SETTINGS
        except asyncio.CancelledError:
            self._live.discard(proto)
            if not timed_out:  # the pool was closed: close_all() already did the books
                self.apply(self.state.connect_failed(conn, ConnectError(
                    "connect cancelled", origin=plan.origin.key), loop.time()))
                return
            if hasattr(task, "uncancel"):
                task.uncancel()
            self._connect_failed(conn, proto, ticket, plan.out_of_time())
            return
        except HTTPError as exc:
            self._live.discard(proto)
            self._connect_failed(conn, proto, ticket, exc)
            return
        except ConnectionError as exc:  # closed before its HTTP/2 settings
            self._live.discard(proto)
            proto.close()
            self._connect_failed(conn, proto, ticket, ConnectError(str(exc),
                                                                   origin=plan.origin.key))
            return
        finally:
            if handle is not None:
                handle.cancel()
        if connection_log.isEnabledFor(DEBUG):
            self._log_opened(conn, proto, plan)
        if self.observer is not None:
            self.observer.opened(conn, loop.time(), proto.multiplexed)
        if proto.multiplexed:
            h2 = cast("AsyncH2Connection", proto)
            h2.started = True
            self.apply(self.state.connected(conn, loop.time(), h2.session.max_streams,
                                            multiplexed=True))
        else:
            self.apply(self.state.connected(conn, loop.time()))

    def _log_opened(self, conn: Conn, proto: AnyConnection, plan: ConnectPlan) -> None:
        transport = proto.transport
        if transport is None:
            return
        ssl_object = transport.get_extra_info("ssl_object")
        log_opened(conn, plan.origin.key, transport.get_extra_info("sockname"), plan.via,
                   ssl_object.version() if ssl_object is not None else None,
                   ssl_object is not None and ssl_object.session_reused, proto.multiplexed)

    def _connect_failed(self, conn: Conn, proto: AnyConnection, ticket: RequestTicket,
                        error: HTTPError) -> None:
        now = self.loop.time()
        if not isinstance(error, TotalTimeout):  # the oldest waiter of the key gets it
            self.apply(self.state.connect_failed(conn, error, now))
            return
        # Cut short by the total deadline of `ticket`'s request: given up. That request
        # fails (unless a connection was handed to it meanwhile), nobody else does, and the
        # slot goes to whoever waits next, who opens anew.
        proto.connect_task = None  # this task is done: closing `conn` must not cancel it
        if ticket.state is WAITING:
            if not ticket.waiter.done():
                ticket.waiter.set_exception(error)
            self.apply(self.state.cancelled(ticket, now))
        self.apply(self.state.connect_failed(conn, None, now))

    async def _establish(self, plan: ConnectPlan, proto: AnyConnection,
                         trace: Trace | None) -> AnyConnection:
        """TCP connect to the first address that answers, then TLS if https; returns the
        connection, which ALPN may have made an HTTP/2 one."""
        route = route_of(proto.conn.key)
        proxy = route.proxy
        tls_proxy = proxy is not None and proxy.is_tls  # TLS to the proxy first
        sock = await self.dialer.open(self.loop, plan, proxy if route.tunnels(plan.origin)
                                      and not tls_proxy else None, trace)
        via = None
        if tls_proxy:
            assert proxy is not None
            via = await self.dialer.through_tls_proxy(self.loop, sock, plan, proxy,
                                                      route.verify, route.tunnels(plan.origin),
                                                      trace)
        proto = await self._handshake(plan, proto, sock, via)
        if plan.origin.is_tls and proto.transport is not None:
            ssl_object = proto.transport.get_extra_info("ssl_object")
            resumed = ssl_object is not None and ssl_object.session_reused
            if resumed:
                self.dialer.tls_resumed += 1
            if trace is not None:
                emit(trace, "tls.handshake", **plan.handshake(
                    ssl_object.version() if ssl_object is not None else None, perf_counter(),
                    resumed, ssl_object.selected_alpn_protocol() if ssl_object else None))
        return proto

    async def _handshake(self, plan: ConnectPlan, proto: AnyConnection, sock: socket.socket,
                         via: asyncio.Transport | None = None) -> AnyConnection:
        """Hand the connected `sock` to `proto`, after the TLS handshake if https. When ALPN
        may select HTTP/2, the handshake runs under a `_Negotiating` stand-in and the
        protocol selected gets the transport (and any bytes that came meanwhile). `via`: the
        TLS transport of an https:// proxy `sock` belongs to (forwarding, or tunnelled to
        the origin): TLS to the origin runs inside it."""
        loop = self.loop
        protocols = proto.conn.key.protocols
        try:
            if plan.origin.is_tls:
                # Our own timer (at plan.end) ends a handshake that runs out of time, so that
                # it fails like any connect that did: asyncio's limit comes a second later.
                remaining = plan.remaining(loop.time())
                route = route_of(proto.conn.key)
                context = tls_context(route.verify, protocols, route.cert)
                if self.config.tls_resumption:
                    offer_session(self.dialer.sessions.get(proto.conn.key))
                stand_in = proto if protocols == HTTP1 else _Negotiating()
                handshake_timeout = None if remaining is None else remaining + 1.0
                if via is None:
                    transport, _ = await loop.create_connection(
                        lambda: stand_in, sock=sock, ssl=context,
                        server_hostname=plan.origin.host,
                        ssl_handshake_timeout=handshake_timeout)
                else:
                    inner = await loop.start_tls(
                        via, stand_in, context, server_hostname=plan.origin.host,
                        ssl_handshake_timeout=handshake_timeout)
                    if inner is None:  # only for a transport that is closing
                        raise ConnectionResetError(0, "the proxy closed the tunnel")
                    transport = inner
                    stand_in.connection_made(transport)  # start_tls leaves it to us
                if isinstance(stand_in, _Negotiating):
                    return self._negotiated(plan, proto, stand_in, transport)
            elif via is None:
                await loop.create_connection(lambda: proto, sock=sock)
            else:  # forwarding to the proxy, over its TLS
                via.set_protocol(proto)
                proto.connection_made(via)
        except OSError as exc:  # ssl.SSLError (and SSLCertVerificationError) among them
            _discard(sock, via)
            self.dialer.sessions.forget(proto.conn.key)
            raise plan.handshake_failed(exc) from exc
        except BaseException:
            _discard(sock, via)
            raise
        return proto

    def _negotiated(self, plan: ConnectPlan, proto: AnyConnection, stand_in: _Negotiating,
                    transport: asyncio.BaseTransport) -> AnyConnection:
        """Give the TLS transport to the connection ALPN selected."""
        ssl_object = transport.get_extra_info("ssl_object")
        selected = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        conn = proto.conn
        try:
            h2 = plan.speaks_h2(conn.key.protocols, selected)
        except ConnectError:
            transport.close()
            raise
        if h2:
            from .http2 import AsyncH2Connection

            chosen: AnyConnection = AsyncH2Connection(self, conn, plan.origin.key)
            chosen.connect_task = proto.connect_task
            self._live.discard(proto)
            self._live.add(chosen)
            conn.io = chosen
        else:
            chosen = proto
        transport.set_protocol(chosen)
        chosen.connection_made(transport)
        stand_in.hand_over(chosen)
        return chosen

    # -- expiry and closing ------------------------------------------------------------------
    def _arm_expiry(self) -> None:
        when = self.state.next_expiry()
        if when is not None:
            self._expiry_timer = self.loop.call_at(when, self._on_expiry)

    def _on_expiry(self) -> None:
        self._expiry_timer = None
        actions = self.state.expire(self.loop.time())
        if actions:
            self.apply(actions)
        self._arm_expiry()

    def _cancel_expiry(self) -> None:
        if self._expiry_timer is not None:
            self._expiry_timer.cancel()
            self._expiry_timer = None

    async def aclose(self) -> None:
        """Fail waiters, close every connection and wait until their sockets are closed.

        Called from a loop other than the pool's: if the pool's loop runs in another thread,
        the closing is done there; if it is stopped, transports are aborted and finish
        closing when it next runs; if it is closed, nothing can close them any more (close
        the client before its loop ends) and only the books are settled."""
        loop = self.loop
        if loop is not None and loop is not asyncio.get_running_loop():
            if loop.is_running():
                await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self.aclose(), loop))
                return
            actions = self.state.close_all()
            if not loop.is_closed():
                self.apply(actions)
            self._live.clear()
            return
        self.apply(self.state.close_all())
        if loop is None:
            return
        self._cancel_expiry()
        for lookup in list(self.dialer.lookups.values()):
            lookup.cancel()
        pending: list[asyncio.Future[None] | asyncio.Task[None]] = []
        for proto in list(self._live):
            proto.close()
            if proto.connect_task is not None and not proto.connect_task.done():
                pending.append(proto.connect_task)
            elif proto.transport is not None:
                proto.lost = self.loop.create_future()
                pending.append(proto.lost)
        if pending:
            await asyncio.wait(pending, timeout=5.0)


def _discard(sock: socket.socket, via: asyncio.Transport | None) -> None:
    if via is not None:
        via.abort()  # it owns the socket
    else:
        sock.close()


class _Negotiating(asyncio.Protocol):
    """The protocol of a TLS connection until ALPN says what it speaks: it keeps what
    arrives meanwhile (an HTTP/2 server's SETTINGS may come with the handshake)."""

    def __init__(self) -> None:
        self._data: list[bytes] = []
        self._lost: tuple[Exception | None] | None = None

    def data_received(self, data: bytes) -> None:
        self._data.append(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = (exc,)

    def hand_over(self, proto: asyncio.Protocol) -> None:
        for data in self._data:
            proto.data_received(data)
        if self._lost is not None:
            proto.connection_lost(self._lost[0])
