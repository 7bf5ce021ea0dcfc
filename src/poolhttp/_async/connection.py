"""One HTTP/1.1 connection under asyncio: an `asyncio.Protocol` feeding the core reader, and
the exchange (one request's state) it carries.

Hot-path rules kept here: no Task per request, one Future per request, no `wait_for`. The read
time-out is one `call_at` timer per connection that is pushed forward lazily: each request and
each chunk only move `_read_deadline`, and the timer, when it fires early, re-arms itself for
the new deadline. A streamed body is buffered up to `HIGH_WATER` bytes, then the transport stops
reading until the consumer drains it below `LOW_WATER`.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from time import perf_counter
from typing import TYPE_CHECKING, Any

from .._core.http11 import ResponseReader, keep_alive_timeout, last_chunk
from .._core.pool import Conn
from .._exceptions import (
    ReadError,
    ReadTimeout,
    RemoteProtocolError,
    ServerDisconnected,
    TotalTimeout,
    TransportError,
    WriteError,
    WriteTimeout,
)
from .._models import Request, Response, body_chunk, body_problem
from .._trace import Trace, emit

if TYPE_CHECKING:
    from .._config import Timeout
    from .pool import AsyncPool

__all__ = ["AsyncConnection", "AsyncExchange"]

HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024
_INF = math.inf


class AsyncExchange:
    """One request on a connection: its limits, its response as it arrives, its body stream.

    The connection owns the transport, the reader and the timers; it carries one exchange
    at a time (HTTP/1.1), and the exchange ends when the response has been read to the end
    or the connection failed. A multiplexed connection would carry several."""

    __slots__ = ("cap", "chunks", "future", "headers", "read_timeout", "request",
                 "request_sent", "sent_at", "status", "status_line", "stream", "streaming",
                 "trace", "write_timeout")

    def __init__(self, request: Request, future: asyncio.Future[Response], timeout: Timeout,
                 deadline: float | None, streaming: bool, trace: Trace | None) -> None:
        self.request = request
        self.future: asyncio.Future[Response] | None = future  # None once resolved
        self.streaming = streaming
        self.stream: AsyncBodyStream | None = None
        self.sent_at = perf_counter()  # for Response.elapsed (loop.time() may tick in ms)
        self.chunks: list[bytes] = []
        self.status = 0
        self.status_line = b""
        self.headers = b""  # the response's header block, split only if someone asks
        read = timeout.read
        self.read_timeout = _INF if read is None else read
        self.write_timeout = timeout.write
        self.cap = _INF if deadline is None else deadline  # the total deadline, if any
        self.request_sent = False
        self.trace = trace


class AsyncConnection(asyncio.Protocol):
    """One HTTP/1.1 connection: transport, reader, timers, and the exchange it carries."""

    multiplexed = False  # one exchange at a time (http2.AsyncH2Connection carries many)

    def __init__(self, pool: AsyncPool, conn: Conn, origin: str) -> None:
        self._pool = pool
        self._loop = pool.loop
        self.conn = conn
        self.origin = origin
        self._reader = ResponseReader(self, origin)
        self.encoder = pool.encoder  # a forward proxy's connections have their own
        self.transport: asyncio.Transport | None = None
        self.connect_task: asyncio.Task[None] | None = None
        self.lost: asyncio.Future[None] | None = None  # resolved by connection_lost
        self.closing = False  # close() was called or the transport was lost: never send
        # From send() until the pool got the connection back.
        self.exchange: AsyncExchange | None = None
        self.unsent = False  # the request waits in the pool's write batch
        # Timers and flow control.
        self._read_deadline = _INF
        self._timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._reading_paused = False

    # -- sending ---------------------------------------------------------------------------
    def send(self, request: Request, timeout: Timeout, deadline: float | None, stream: bool,
             trace: Trace | None) -> asyncio.Future[Response]:
        """Encode and write the request (a streamed body follows with `send_body`); the
        future resolves with the Response (its head only, if `stream`)."""
        transport = self.transport
        assert transport is not None
        assert self.exchange is None
        future: asyncio.Future[Response] = self._loop.create_future()
        exchange = self.exchange = AsyncExchange(request, future, timeout, deadline, stream,
                                                 trace)
        self._reader.expect(request.method == "HEAD")
        data, body = self.encoder.encode(request)
        if body is None and request.stream is None:
            self._pool.write(self, data)  # maybe batched with others of this loop iteration
        else:
            transport.write(data)
            if body is not None:
                transport.write(body)
        exchange.request_sent = request.stream is None
        self._arm_read(self._loop.time())
        if trace is not None:
            emit(trace, "request.sent")
        return future

    async def send_body(self, chunks: Any) -> None:
        """Stream an iterable or async iterable body with chunked framing, minding drain.
        Stops early, without error, if the exchange ends first (the server answered)."""
        transport = self.transport
        exchange = self.exchange
        assert transport is not None
        assert exchange is not None
        try:
            if hasattr(chunks, "__aiter__"):
                async for chunk in chunks:
                    if not await self._write_chunk(transport, exchange, chunk):
                        return
            else:
                for chunk in chunks:
                    if not await self._write_chunk(transport, exchange, chunk):
                        return
            if self.exchange is exchange:
                if exchange.request.stream_length is None:
                    transport.write(last_chunk(exchange.request))
                exchange.request_sent = True
        except TransportError:
            raise
        except (TypeError, ValueError) as exc:
            self.fail(WriteError(body_problem(exc), origin=self.origin))
            raise WriteError(body_problem(exc), origin=self.origin) from exc

    async def _write_chunk(self, transport: asyncio.Transport, exchange: AsyncExchange,
                           chunk: Any) -> bool:
        """Write one chunk; False once the exchange ended (e.g. an early response)."""
        chunk = body_chunk(chunk)
        if self.exchange is not exchange:
            return False
        if chunk:
            if exchange.request.stream_length is not None:  # Content-Length sent: no framing
                transport.write(chunk)
            else:
                transport.write(b"%x\r\n" % len(chunk))
                transport.write(chunk)
                transport.write(b"\r\n")
        if self._write_paused:
            waiter = self._drain_waiter = self._loop.create_future()
            await waiter
        return self.exchange is exchange

    # -- asyncio.Protocol ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:
            self._unsolicited(data)
            return
        if self.unsent:  # bytes before our request even left: they answer nothing of ours
            self.fail(RemoteProtocolError(
                f"{self.origin} sent bytes before the request was sent (out of step)",
                origin=self.origin, reason="unsolicited bytes"))
            return
        deadline = self._loop.time() + exchange.read_timeout
        self._read_deadline = deadline if deadline < exchange.cap else exchange.cap
        try:
            self._reader.feed(data)
        except RemoteProtocolError as exc:
            self.fail(exc)

    def eof_received(self) -> bool:
        if self.exchange is not None:
            try:
                self._reader.feed_eof()
            except RemoteProtocolError as exc:
                self.fail(self._disconnected(exc))
        return False  # let the transport close itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.closing = True
        self._cancel_timers()
        if self.exchange is not None:
            if exc is not None and self._reader.response_started:
                self.fail(ReadError(f"connection to {self.origin} lost mid-response: {exc}",
                                    origin=self.origin))
            else:
                self.fail(self._disconnected(None, exc))
        else:
            self._pool.discard(self.conn)
        if self.lost is not None and not self.lost.done():
            self.lost.set_result(None)
        self._pool.forget(self)

    def pause_writing(self) -> None:
        self._write_paused = True
        exchange = self.exchange
        limit = exchange.write_timeout if exchange is not None else None
        if limit is not None and self._write_timer is None:
            self._write_timer = self._loop.call_later(limit, self._on_write_timeout)

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None
        self._wake_drain()
        if self.exchange is not None:
            self._arm_read(self._loop.time())

    # -- ResponseSink ----------------------------------------------------------------------
    def on_head(self, status: int, status_line: bytes, headers: bytes) -> None:
        exchange = self.exchange
        assert exchange is not None
        if exchange.trace is not None:
            emit(exchange.trace, "response.headers", status=status)
        exchange.status = status
        exchange.status_line = status_line
        exchange.headers = headers
        if exchange.streaming:
            future, exchange.future = exchange.future, None
            assert future is not None
            stream = exchange.stream = AsyncBodyStream(self)
            response = Response.from_wire(status, status_line, headers, None, exchange.request,
                                          perf_counter() - exchange.sent_at)
            response._stream = stream
            if not future.done():
                future.set_result(response)

    def on_body(self, chunk: bytes) -> None:
        exchange = self.exchange
        assert exchange is not None
        stream = exchange.stream
        if stream is None:
            exchange.chunks.append(chunk)
        else:
            stream.feed(chunk)

    def on_complete(self, keep_alive: bool) -> None:
        exchange = self.exchange
        assert exchange is not None
        self.exchange = None
        headers = exchange.headers
        keepalive = keep_alive_timeout(headers) if keep_alive else None
        if not exchange.request_sent or self._write_paused or (
                exchange.request.content is not None and self.transport is not None
                and self.transport.get_write_buffer_size()):
            # The server answered before taking the whole request (RFC 9112 section 9.5): the
            # body sender, maybe waiting for the transport to drain, stops; never reused.
            keep_alive = False
            self._wake_drain()
        stream = exchange.stream
        if stream is not None:
            stream.end()  # first: once released, the connection may serve someone else
            # Paused because the consumer is behind: the body is all in the stream's buffer,
            # and the next request on this connection must be able to read its response.
            self.resume_reading()
            self._pool.release(self.conn, keep_alive, keepalive)
            return
        self._pool.release(self.conn, keep_alive, keepalive)
        future = exchange.future
        if future is not None and not future.done():
            chunks = exchange.chunks
            future.set_result(Response.from_wire(
                exchange.status, exchange.status_line, headers,
                b"".join(chunks) if len(chunks) != 1 else chunks[0], exchange.request,
                perf_counter() - exchange.sent_at))

    # -- ending an exchange ------------------------------------------------------------------
    def fail(self, error: BaseException, *, abandoned: bool = False) -> None:
        """End the exchange in flight with `error`; the connection is closed and discarded.
        `abandoned`: the caller left, so nobody will read a pending result: cancel it."""
        exchange = self.exchange
        if exchange is None:
            return
        self.exchange = None
        self.close()
        self._pool.release(self.conn, False, None)
        waiter, self._drain_waiter = self._drain_waiter, None
        fail_caller(exchange.future, exchange.stream, waiter, error, abandoned)

    def abandon(self, owner: object) -> None:
        """The caller gave up (cancelled, or closed a stream early): discard the connection.

        `owner` is the caller's Request or body stream. Only the exchange it belongs to is
        abandoned: a task cancelled just as its response completed wakes up after the
        connection went back to the pool, maybe to a request that now uses it."""
        exchange = self.exchange
        if exchange is not None and (owner is exchange.request or owner is exchange.stream):
            self.fail(ReadError(f"request to {self.origin} abandoned", origin=self.origin),
                      abandoned=True)

    def close(self) -> None:
        """Close the transport now (idempotent); a connect in progress is cancelled."""
        self.closing = True
        self._cancel_timers()
        transport = self.transport
        if transport is not None:
            transport.abort()
        elif self.connect_task is not None and not self.connect_task.done():
            self.connect_task.cancel()

    def pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()
            if self.exchange is not None:
                self._arm_read(self._loop.time())

    def _wake_drain(self) -> None:
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- timers ----------------------------------------------------------------------------
    def _arm_read(self, now: float) -> None:
        exchange = self.exchange
        assert exchange is not None
        deadline = now + exchange.read_timeout
        if deadline > exchange.cap:
            deadline = exchange.cap
        self._read_deadline = deadline
        if deadline == _INF:
            return
        timer = self._timer
        if timer is None:
            self._timer = self._loop.call_at(deadline, self._on_read_timer)
        elif timer.when() > deadline:
            timer.cancel()
            self._timer = self._loop.call_at(deadline, self._on_read_timer)

    def _on_read_timer(self) -> None:
        self._timer = None
        exchange = self.exchange
        if exchange is None:
            return
        now = self._loop.time()
        if now >= exchange.cap:
            self.fail(TotalTimeout(
                f"no complete response from {self.origin} within the total time-out",
                origin=self.origin))
            return
        if self._write_paused or self._reading_paused:
            # We are the ones not moving (uploading, or the consumer is slow): not a silence.
            self._arm_read(now)
            return
        if now < self._read_deadline:
            self._timer = self._loop.call_at(self._read_deadline, self._on_read_timer)
            return
        self.fail(ReadTimeout(
            f"{self.origin} sent nothing for {exchange.read_timeout:g}s (read time-out)",
            origin=self.origin, timeout=exchange.read_timeout))

    def _on_write_timeout(self) -> None:
        self._write_timer = None
        exchange = self.exchange
        if self._write_paused and exchange is not None:
            self.fail(WriteTimeout(
                f"{self.origin} took no request bytes for {exchange.write_timeout:g}s "
                "(write time-out)", origin=self.origin, timeout=exchange.write_timeout))

    def _cancel_timers(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    # -- faults ------------------------------------------------------------------------------
    def _unsolicited(self, data: bytes) -> None:
        """Bytes on an idle connection: it is out of step, so it must never be reused."""
        self.close()
        self._pool.discard(self.conn)

    def _disconnected(self, cause: RemoteProtocolError | None,
                      exc: BaseException | None = None) -> TransportError:
        if cause is not None and cause.reason != "no response":
            return cause
        how = f"reset the connection ({exc})" if exc is not None else "closed the connection"
        exchange = self.exchange
        return ServerDisconnected(
            f"{self.origin} {how} without sending a response", origin=self.origin,
            request_sent=exchange is not None and exchange.request_sent,
            response_started=self._reader.response_started, reused=self.conn.may_be_stale)


def fail_caller(future: asyncio.Future[Response] | None, stream: BodyBuffer | None,
                waiter: asyncio.Future[None] | None, error: BaseException,
                abandoned: bool) -> None:
    """The caller's side of an exchange that failed (both connection kinds): its response
    future, its body stream, and a body sender waiting to write. `abandoned`: the caller
    left, so nobody reads a pending result: cancel them instead."""
    if future is not None and not future.done():
        if abandoned:
            future.cancel()
        else:
            future.set_exception(error)
    if stream is not None:
        stream.set_error(error)
    if waiter is not None and not waiter.done():
        if abandoned:
            waiter.cancel()
        else:
            waiter.set_exception(error)
            # The body sender raises it; the response future, never awaited then, must
            # not be reported as an exception nobody retrieved.
            if future is not None and future.done() and not future.cancelled():
                future.exception()


class BodyBuffer:
    """What the streamed bodies of both connection kinds share: the end, an error, and the
    reader's waiter woken by either (or by data)."""

    __slots__ = ("_ended", "_error", "_waiter")

    def __init__(self) -> None:
        self._ended = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    def end(self) -> None:
        self._ended = True
        self._wake()

    def set_error(self, error: BaseException) -> None:
        self._error = error
        self._wake()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class AsyncBodyStream(BodyBuffer):
    """The body of a streamed response, buffered between the connection and its reader."""

    __slots__ = ("_chunks", "_conn", "_size")

    def __init__(self, conn: AsyncConnection) -> None:
        super().__init__()
        self._conn = conn
        self._chunks: deque[bytes] = deque()
        self._size = 0

    # -- connection side ---------------------------------------------------------------------
    def feed(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._size += len(chunk)
        if self._size > HIGH_WATER:
            self._conn.pause_reading()
        self._wake()

    # -- reader side -------------------------------------------------------------------------
    async def read_chunk(self) -> bytes:
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self._size -= len(chunk)
                if self._size < LOW_WATER:
                    self._conn.resume_reading()
                return chunk
            if self._error is not None:
                raise self._error
            if self._ended:
                return b""
            waiter = self._waiter = self._conn._loop.create_future()
            await waiter

    async def aclose(self) -> None:
        if not self._ended:
            self._conn.abandon(self)  # closed before the end: the connection is out of step
        self._chunks.clear()
        self._ended = True
