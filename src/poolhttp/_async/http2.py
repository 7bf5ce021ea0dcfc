"""One HTTP/2 connection under asyncio: an `asyncio.Protocol` feeding the core's `H2Session`,
and the exchanges (one per stream) it carries at once.

The same rules as for HTTP/1.1 (connection.py): no Task per request, one Future per request,
timers with `call_at`. What differs:

* Many exchanges share the transport. The session routes each stream's events to its
  exchange; a reset fails that exchange alone, a connection error fails them all.
* Writes of one loop iteration go out together: the first request's frames are written at
  once, those of requests started in the same iteration at the start of the next one (h2
  accumulates them), so a burst of 64 requests costs a few writes, not 64.
* Each exchange has its own read deadline (pushed forward as its data arrives); one timer
  per connection watches them all, armed for the earliest and re-armed when it fires (a
  timer per request cost a heap push and a cancellation each; the deadlines move only
  forward, so the timer rarely needs moving). A stream that times out is reset
  (RST_STREAM CANCEL) and the connection goes on; but a PING is sent, and if nothing at all
  arrives from the server within `PING_TIMEOUT` the connection is taken for dead: every
  stream on it fails and the pool stops using it.
* Flow control: a response read whole hands its data back to the server at once; a streamed
  one as its reader consumes it (the body stream buffers at most a stream window). A request
  body is sent as fast as the server's windows allow; a sender waits for a window update
  (within the write time-out) or for the transport to drain.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from time import perf_counter
from typing import TYPE_CHECKING, Any

from .._core.http2 import H2Session
from .._core.pool import Conn
from .._exceptions import (
    ReadError,
    ReadTimeout,
    RemoteProtocolError,
    ServerDisconnected,
    StreamReset,
    TotalTimeout,
    TransportError,
    WriteError,
    WriteTimeout,
)
from .._models import Request, Response, body_chunk, body_problem
from .._trace import Trace, emit
from .connection import BodyBuffer, fail_caller

if TYPE_CHECKING:
    from .._config import Timeout
    from .pool import AsyncPool

__all__ = ["AsyncH2Connection", "AsyncH2Exchange"]

PING_TIMEOUT = 5.0  # after a stream timed out: longer than this without a byte means dead
_INF = math.inf


class AsyncH2Exchange:
    """One request on an HTTP/2 connection: its stream, limits, response as it arrives."""

    __slots__ = ("cap", "chunks", "conn", "deadline", "future", "headers", "read_timeout",
                 "request", "response", "sent_at", "status", "status_line", "stream",
                 "stream_id", "streaming", "trace", "window_waiter",
                 "write_timeout")

    def __init__(self, conn: AsyncH2Connection, request: Request,
                 future: asyncio.Future[Response], timeout: Timeout, deadline: float | None,
                 streaming: bool, trace: Trace | None) -> None:
        self.conn = conn
        self.request = request
        self.future: asyncio.Future[Response] | None = future  # None once resolved
        self.streaming = streaming
        self.stream: AsyncH2BodyStream | None = None
        self.response: Response | None = None  # a streamed one, for its trailers
        self.sent_at = perf_counter()
        self.chunks: list[bytes] = []
        self.status = 0
        self.status_line = b""
        self.headers = b""
        read = timeout.read
        self.read_timeout = _INF if read is None else read
        self.write_timeout = timeout.write
        self.cap = _INF if deadline is None else deadline
        self.deadline = _INF
        self.window_waiter: asyncio.Future[None] | None = None
        self.stream_id = 0
        self.trace = trace

    # -- StreamSink --------------------------------------------------------------------------
    def on_head(self, status: int, status_line: bytes, block: bytes) -> None:
        if self.trace is not None:
            emit(self.trace, "response.headers", status=status)
        self.status = status
        self.status_line = status_line
        self.headers = block
        if self.streaming:
            future, self.future = self.future, None
            assert future is not None
            self.stream = AsyncH2BodyStream(self)
            response = self.response = Response.from_wire(
                status, status_line, block, None, self.request, perf_counter() - self.sent_at)
            response._stream = self.stream
            if not future.done():
                future.set_result(response)

    def on_data(self, data: bytes, flow: int) -> None:
        conn = self.conn
        deadline = conn.loop.time() + self.read_timeout
        self.deadline = deadline if deadline < self.cap else self.cap
        stream = self.stream
        if stream is None:
            self.chunks.append(data)
            conn.session.ack(self.stream_id, flow)
        else:
            stream.feed(data, flow)

    def on_end(self, trailers: bytes) -> None:
        conn = self.conn
        stream = self.stream
        if stream is not None:
            if self.response is not None:
                self.response._trailers = trailers
            stream.end()
            conn.ended(self, True)
            return
        conn.ended(self, True)
        future = self.future
        if future is not None and not future.done():
            chunks = self.chunks
            response = Response.from_wire(
                self.status, self.status_line, self.headers,
                b"".join(chunks) if len(chunks) != 1 else chunks[0], self.request,
                perf_counter() - self.sent_at)
            response._trailers = trailers
            future.set_result(response)

    def on_reset(self, error: StreamReset | RemoteProtocolError) -> None:
        self.fail(error)
        self.conn.ended(self, True)

    # -- ending --------------------------------------------------------------------------
    def fail(self, error: BaseException, abandoned: bool = False) -> None:
        """Resolve the caller's side with `error` (the stream is over; the caller of this
        tells the connection)."""
        waiter, self.window_waiter = self.window_waiter, None
        fail_caller(self.future, self.stream, waiter, error, abandoned)

    # -- time-outs ---------------------------------------------------------------------------
    def arm(self, now: float) -> None:
        deadline = now + self.read_timeout
        if deadline > self.cap:
            deadline = self.cap
        self.deadline = deadline
        if deadline != _INF:
            self.conn.watch(deadline)

    def check(self, now: float) -> float:
        """The connection's timer fired: end this exchange if its time is up; returns when
        to look again (infinity: never)."""
        conn = self.conn
        if conn.session.streams.get(self.stream_id) is not self:
            return _INF
        if now >= self.cap:
            conn.abandon_exchange(self, TotalTimeout(
                f"no complete response from {conn.origin} within the total time-out",
                origin=conn.origin))
            return _INF
        if (self.stream is not None and self.stream.paused) or self.window_waiter is not None:
            later = now + self.read_timeout  # we are the ones not moving (a slow reader,
            self.deadline = later if later < self.cap else self.cap  # or uploading)
            return self.deadline
        if now < self.deadline:
            return self.deadline
        conn.abandon_exchange(self, ReadTimeout(
            f"{conn.origin} sent nothing for {self.read_timeout:g}s on this request's HTTP/2 "
            "stream (read time-out)", origin=conn.origin, timeout=self.read_timeout))
        conn.suspect()
        return _INF


class AsyncH2Connection(asyncio.Protocol):
    """One HTTP/2 connection: transport, session, and the exchanges on it."""

    multiplexed = True

    def __init__(self, pool: AsyncPool, conn: Conn, origin: str) -> None:
        self._pool = pool
        self.loop = pool.loop
        self.conn = conn
        self.origin = origin
        self.session = H2Session(self, origin)
        self.transport: asyncio.Transport | None = None
        self.connect_task: asyncio.Task[None] | None = None
        self.lost: asyncio.Future[None] | None = None
        self.ready: asyncio.Future[None] = self.loop.create_future()  # first SETTINGS
        self.closing = False
        self.started = False  # connected() reported to the pool
        self._flush_scheduled = False
        self._write_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._sending: AsyncH2Exchange | None = None  # for the send_body that follows send
        self._ping_timer: asyncio.TimerHandle | None = None
        self._timer: asyncio.TimerHandle | None = None  # the exchanges' time-outs
        self._timer_at = _INF
        self._heard = False  # bytes arrived since the last PING was sent

    # -- sending ---------------------------------------------------------------------------
    def send(self, request: Request, timeout: Timeout, deadline: float | None, stream: bool,
             trace: Trace | None) -> asyncio.Future[Response]:
        """Start a stream for `request`; the future resolves with its Response (its head
        only, if `stream`). A streamed body follows with `send_body`."""
        future: asyncio.Future[Response] = self.loop.create_future()
        exchange = AsyncH2Exchange(self, request, future, timeout, deadline, stream, trace)
        session = self.session
        if self.closing or session.goaway is not None:  # nothing sent: safe to resend
            exchange.fail(StreamReset(
                f"{self.origin} closed this HTTP/2 connection before the request went out",
                origin=self.origin, processed=False))
            self.ended(exchange, True)
            return future
        body = request.content
        has_stream = request.stream is not None
        try:
            exchange.stream_id = session.start(self._pool.h2_encoder.headers(request),
                                               exchange, body is None and not has_stream,
                                               request)
        except StreamReset as exc:  # no room under a lowered stream limit: resent
            exchange.fail(exc)
            self.ended(exchange, True)
            return future
        except Exception as exc:  # h2 refused the headers: nothing was sent
            exchange.fail(WriteError(f"cannot send this request over HTTP/2: {exc}",
                                     origin=self.origin))
            self.ended(exchange, True)
            return future
        if body is not None:
            sent = session.send_data(exchange.stream_id, body, True)
            if sent < len(body):
                self.loop.create_task(self._send_rest(exchange, memoryview(body)[sent:]))
        elif has_stream:
            self._sending = exchange
        self.flush()
        exchange.arm(self.loop.time())
        if trace is not None:
            emit(trace, "request.sent")
        return future

    async def send_body(self, chunks: Any) -> None:
        """Send the streamed body of the request `send` just started."""
        exchange, self._sending = self._sending, None
        assert exchange is not None
        try:
            if hasattr(chunks, "__aiter__"):
                async for chunk in chunks:
                    if not await self._send_chunk(exchange, body_chunk(chunk)):
                        return
            else:
                for chunk in chunks:
                    if not await self._send_chunk(exchange, body_chunk(chunk)):
                        return
            if self._carries(exchange):
                self.session.send_data(exchange.stream_id, b"", True)
                self.flush()
        except (TypeError, ValueError) as exc:
            self.abandon_exchange(exchange, WriteError(body_problem(exc), origin=self.origin))
            raise WriteError(body_problem(exc), origin=self.origin) from exc

    async def _send_rest(self, exchange: AsyncH2Exchange, rest: memoryview) -> None:
        """The part of a bytes body the windows did not take at once."""
        try:
            await self._send_chunk(exchange, rest, end=True)
        except TransportError:
            pass  # the exchange failed with it already: its caller sees it

    async def _send_chunk(self, exchange: AsyncH2Exchange, data: bytes | bytearray | memoryview,
                          end: bool = False) -> bool:
        """Send `data` on the exchange's stream as the windows allow; False once the stream
        ended (e.g. the server answered early and closed it)."""
        view = memoryview(data)
        session = self.session
        while True:
            if not self._carries(exchange):
                return False
            sent = session.send_data(exchange.stream_id, view, end)
            view = view[sent:]
            if sent:
                self.flush()
            if self._write_paused:
                waiter = self.loop.create_future()
                self._drain_waiters.append(waiter)
                await waiter
            if not len(view):
                return self._carries(exchange)
            await self._wait_window(exchange)

    async def _wait_window(self, exchange: AsyncH2Exchange) -> None:
        waiter = exchange.window_waiter = self.loop.create_future()
        limit = exchange.write_timeout
        handle = None if limit is None else self.loop.call_at(
            self.loop.time() + limit, self._window_timeout, exchange, waiter)
        try:
            await waiter
        finally:
            exchange.window_waiter = None
            if handle is not None:
                handle.cancel()

    def _window_timeout(self, exchange: AsyncH2Exchange, waiter: asyncio.Future[None]) -> None:
        if not waiter.done():
            self.abandon_exchange(exchange, WriteTimeout(
                f"{self.origin} kept this request's HTTP/2 flow-control window closed for "
                f"{exchange.write_timeout:g}s (write time-out)", origin=self.origin,
                timeout=exchange.write_timeout))

    def _carries(self, exchange: AsyncH2Exchange) -> bool:
        return self.session.streams.get(exchange.stream_id) is exchange

    def flush(self) -> None:
        """Write what the session has to send: now if nothing was written in this loop
        iteration yet, else at the start of the next (with what others add meanwhile)."""
        if self._flush_scheduled:
            return
        data = self.session.output()
        if data and self.transport is not None:
            self.transport.write(data)
        self._flush_scheduled = True
        self.loop.call_soon(self._flush_later)

    def _flush_later(self) -> None:
        self._flush_scheduled = False
        data = self.session.output()
        if data and self.transport is not None:
            self.transport.write(data)

    # -- asyncio.Protocol ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.session.output())  # type: ignore[attr-defined]  # the preface

    def data_received(self, data: bytes) -> None:
        self._heard = True
        try:
            self.session.feed(data)
        except RemoteProtocolError as exc:
            self._fail_all(exc)
            return
        if not self.ready.done():
            self.ready.set_result(None)  # the server's SETTINGS come first
        if not self._flush_scheduled:
            data = self.session.output()
            if data and self.transport is not None:
                self.transport.write(data)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.closing = True
        self._cancel_ping()
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(
                f"{self.origin} closed the connection before its HTTP/2 settings"))
            self.ready.exception()
        if self.session.streams:
            self._fail_all(None, exc)
        elif self.started:
            self._pool.discard(self.conn)
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        if self.lost is not None and not self.lost.done():
            self.lost.set_result(None)
        self._pool.forget(self)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # -- SessionSink ---------------------------------------------------------------------
    def on_goaway(self, last_stream_id: int, error_code: int) -> None:
        if self.started:
            self._pool.drain(self.conn)
        if not self.session.streams:
            self.close()

    def on_capacity(self, streams: int) -> None:
        if self.started:
            self._pool.resize(self.conn, streams)

    def on_window(self) -> None:
        for exchange in list(self.session.streams.values()):
            waiter = exchange.window_waiter  # type: ignore[attr-defined]
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    # -- ending exchanges ----------------------------------------------------------------
    def ended(self, exchange: AsyncH2Exchange, reusable: bool) -> None:
        """An exchange is over (its stream ended, was reset, or failed): one slot free."""
        self._pool.release(self.conn, reusable and not self.closing, None)
        if self.session.goaway is not None and not self.session.streams:
            self.close()

    def abandon_exchange(self, exchange: AsyncH2Exchange, error: BaseException,
                         abandoned: bool = False) -> None:
        """End one exchange early (time-out, cancellation): reset its stream, keep the
        connection."""
        if not self._carries(exchange):
            return
        self.session.reset(exchange.stream_id)
        self.flush()
        exchange.fail(error, abandoned)
        self.ended(exchange, True)

    def abandon(self, owner: object) -> None:
        """The caller gave up (cancelled, or closed a stream early): reset its stream.
        `owner` is the caller's Request or body stream."""
        for exchange in list(self.session.streams.values()):
            assert isinstance(exchange, AsyncH2Exchange)
            if owner is exchange.request or owner is exchange.stream:
                self.abandon_exchange(exchange, ReadError(
                    f"request to {self.origin} abandoned", origin=self.origin), True)
                return

    def _fail_all(self, error: TransportError | None, exc: BaseException | None = None) -> None:
        """The connection is finished: every exchange on it fails, the pool drops it."""
        self.close()
        streams = list(self.session.streams.values())
        self.session.streams.clear()
        for exchange in streams:
            assert isinstance(exchange, AsyncH2Exchange)
            exchange.fail(error if error is not None else self._disconnected(exchange, exc))
            self._pool.release(self.conn, False, None)
        if not streams and self.started:
            self._pool.discard(self.conn)

    def _disconnected(self, exchange: AsyncH2Exchange, exc: BaseException | None
                      ) -> TransportError:
        if exchange.status:
            return ReadError(f"connection to {self.origin} lost mid-response"
                             + (f": {exc}" if exc is not None else ""), origin=self.origin)
        how = f"reset the connection ({exc})" if exc is not None else "closed the connection"
        return ServerDisconnected(
            f"{self.origin} {how} without sending a response", origin=self.origin,
            request_sent=True, response_started=False, reused=self.conn.may_be_stale)

    def close(self) -> None:
        """Close the transport now (idempotent); a connect in progress is cancelled."""
        self.closing = True
        self._cancel_ping()
        transport = self.transport
        if transport is not None:
            transport.abort()
        elif self.connect_task is not None and not self.connect_task.done():
            self.connect_task.cancel()

    # -- time-outs and liveness ------------------------------------------------------------
    def watch(self, deadline: float) -> None:
        """Make sure the timer fires by `deadline` (an exchange's read or total deadline)."""
        if deadline < self._timer_at and not self.closing:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = deadline
            self._timer = self.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = _INF
        now = self.loop.time()
        earliest = _INF
        for exchange in list(self.session.streams.values()):
            assert isinstance(exchange, AsyncH2Exchange)
            when = exchange.check(now)
            if when < earliest:
                earliest = when
        if earliest != _INF:
            self.watch(earliest)

    def suspect(self) -> None:
        """A stream timed out: is the connection still alive? PING it."""
        if self._ping_timer is not None or self.closing:
            return
        self._heard = False
        self.session.ping(b"poolhttp")
        self.flush()
        self._ping_timer = self.loop.call_later(PING_TIMEOUT, self._on_ping_timer)

    def _on_ping_timer(self) -> None:
        self._ping_timer = None
        if self._heard:
            return
        self._fail_all(ReadTimeout(
            f"{self.origin} answered nothing, not even a PING, for {PING_TIMEOUT:g}s: the "
            "HTTP/2 connection is dead", origin=self.origin, timeout=PING_TIMEOUT))

    def _cancel_ping(self) -> None:
        if self._ping_timer is not None:
            self._ping_timer.cancel()
            self._ping_timer = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_at = _INF


class AsyncH2BodyStream(BodyBuffer):
    """The body of a streamed response on an HTTP/2 stream; data is handed back to the
    server (its window reopened) as the reader takes it."""

    __slots__ = ("_chunks", "_exchange", "paused")

    def __init__(self, exchange: AsyncH2Exchange) -> None:
        super().__init__()
        self._exchange = exchange
        self._chunks: deque[tuple[bytes, int]] = deque()
        self.paused = False  # data waits for the reader (the server may be held by it)

    def feed(self, chunk: bytes, flow: int) -> None:
        self._chunks.append((chunk, flow))
        self.paused = True
        self._wake()

    async def read_chunk(self) -> bytes:
        exchange = self._exchange
        while True:
            if self._chunks:
                chunk, flow = self._chunks.popleft()
                if not self._chunks:
                    self.paused = False
                conn = exchange.conn
                if conn.session.streams.get(exchange.stream_id) is exchange:
                    conn.session.ack(exchange.stream_id, flow)
                    conn.flush()
                return chunk
            if self._error is not None:
                raise self._error
            if self._ended:
                return b""
            waiter = self._waiter = exchange.conn.loop.create_future()
            await waiter

    async def aclose(self) -> None:
        if not self._ended and self._error is None:
            self._exchange.conn.abandon(self)  # closed before the end: reset the stream
        self._chunks.clear()
        self._ended = True

