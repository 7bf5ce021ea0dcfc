"""One HTTP/1.1 connection under asyncio: an `asyncio.Protocol` feeding the core reader.

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

from .._core.http11 import ResponseReader, keep_alive_timeout
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
from .._models import Request, Response
from .._trace import Trace, emit

if TYPE_CHECKING:
    from .._config import Timeout
    from .pool import AsyncPool

__all__ = ["AsyncConnection"]

HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024
_INF = math.inf


class AsyncConnection(asyncio.Protocol):
    """Transport, reader and the state of the one exchange in flight."""

    def __init__(self, pool: AsyncPool, conn: Conn, origin: str) -> None:
        self._pool = pool
        self._loop = pool.loop
        self.conn = conn
        self.origin = origin
        self._reader = ResponseReader(self, origin)
        self.transport: asyncio.Transport | None = None
        self.connect_task: asyncio.Task[None] | None = None
        self.lost: asyncio.Future[None] | None = None  # resolved by connection_lost
        self.closing = False  # close() was called or the transport was lost: never send
        # The exchange in flight: `_active` from send() until the pool got the connection back.
        self._active = False
        self.unsent = False  # the request waits in the pool's write batch
        self._future: asyncio.Future[Response] | None = None
        self._request: Request | None = None
        self._stream: AsyncBodyStream | None = None
        self._streaming = False
        self._sent_at = 0.0
        self._chunks: list[bytes] = []
        self._status = 0
        self._status_line = b""
        self._headers = b""  # the response's header block, split only if someone asks
        self.request_sent = False
        # Timers.
        self._read_timeout = _INF
        self._cap = _INF  # the total deadline, if any
        self._read_deadline = _INF
        self._timer: asyncio.TimerHandle | None = None
        self._write_timeout: float | None = None
        self._write_timer: asyncio.TimerHandle | None = None
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._reading_paused = False
        self._trace: Trace | None = None

    # -- sending ---------------------------------------------------------------------------
    def send(self, request: Request, data: bytes, body: bytes | None, timeout: Timeout,
             deadline: float | None, stream: bool,
             trace: Trace | None) -> asyncio.Future[Response]:
        """Write the request (`data` first, then a large `body` or the streamed one, see
        `send_body`); the future resolves with the Response (its head only, if `stream`)."""
        transport = self.transport
        assert transport is not None
        assert not self._active
        future: asyncio.Future[Response] = self._loop.create_future()
        self._active = True
        self._future = future
        self._request = request
        self._streaming = stream
        self._sent_at = perf_counter()  # for Response.elapsed (loop.time() may tick in ms)
        self._chunks = []
        self._reader.expect(request.method == "HEAD")
        read_timeout = timeout.read
        self._read_timeout = _INF if read_timeout is None else read_timeout
        self._write_timeout = timeout.write
        self._cap = _INF if deadline is None else deadline
        if body is None and request.stream is None:
            self._pool.write(self, data)  # maybe batched with others of this loop iteration
        else:
            transport.write(data)
            if body is not None:
                transport.write(body)
        self.request_sent = request.stream is None
        self._arm_read(self._loop.time())
        self._trace = trace
        if trace is not None:
            emit(trace, "request.sent")
        return future

    async def send_body(self, chunks: Any) -> None:
        """Stream an iterable or async iterable body with chunked framing, minding drain."""
        transport = self.transport
        assert transport is not None
        try:
            if hasattr(chunks, "__aiter__"):
                async for chunk in chunks:
                    await self._write_chunk(transport, chunk)
            else:
                for chunk in chunks:
                    await self._write_chunk(transport, chunk)
            if self._active:
                transport.write(b"0\r\n\r\n")
                self.request_sent = True
        except TransportError:
            raise
        except (TypeError, ValueError) as exc:
            self.fail(WriteError(f"bad chunk in the request body: {exc}", origin=self.origin))
            raise WriteError(f"bad chunk in the request body: {exc}", origin=self.origin) from exc

    async def _write_chunk(self, transport: asyncio.Transport, chunk: Any) -> None:
        if isinstance(chunk, str):
            chunk = chunk.encode("utf-8")
        if not isinstance(chunk, (bytes, bytearray, memoryview)):
            raise TypeError(f"body chunks must be bytes, not {type(chunk).__name__}")
        if not self._active:
            return  # the exchange already failed (e.g. the server answered and closed)
        if chunk:
            transport.write(b"%x\r\n" % len(chunk))
            transport.write(chunk)
            transport.write(b"\r\n")
        if self._write_paused:
            waiter = self._drain_waiter = self._loop.create_future()
            await waiter

    # -- asyncio.Protocol ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self._active:
            self._unsolicited(data)
            return
        if self.unsent:  # bytes before our request even left: they answer nothing of ours
            self.fail(RemoteProtocolError(
                f"{self.origin} sent bytes before the request was sent (out of step)",
                origin=self.origin, reason="unsolicited bytes"))
            return
        deadline = self._loop.time() + self._read_timeout
        self._read_deadline = deadline if deadline < self._cap else self._cap
        try:
            self._reader.feed(data)
        except RemoteProtocolError as exc:
            self.fail(exc)

    def eof_received(self) -> bool:
        if self._active:
            try:
                self._reader.feed_eof()
            except RemoteProtocolError as exc:
                self.fail(self._disconnected(exc))
        return False  # let the transport close itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.transport = None
        self._cancel_timers()
        if self._active:
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
        if self._write_timeout is not None and self._write_timer is None:
            self._write_timer = self._loop.call_later(self._write_timeout, self._on_write_timeout)

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self._active:
            self._arm_read(self._loop.time())

    # -- ResponseSink ----------------------------------------------------------------------
    def on_head(self, status: int, status_line: bytes, headers: bytes) -> None:
        if self._trace is not None:
            emit(self._trace, "response.headers", status=status)
        self._status = status
        self._status_line = status_line
        self._headers = headers
        if self._streaming:
            future, self._future = self._future, None
            assert future is not None
            assert self._request is not None
            stream = self._stream = AsyncBodyStream(self)
            response = Response.from_wire(status, status_line, headers, None, self._request,
                                          perf_counter() - self._sent_at)
            response._stream = stream
            if not future.done():
                future.set_result(response)

    def on_body(self, chunk: bytes) -> None:
        stream = self._stream
        if stream is None:
            self._chunks.append(chunk)
        else:
            stream.feed(chunk)

    def on_complete(self, keep_alive: bool) -> None:
        future, self._future = self._future, None
        request, self._request = self._request, None
        stream, self._stream = self._stream, None
        headers = self._headers
        keepalive = keep_alive_timeout(headers) if keep_alive else None
        self._active = False
        if self._write_paused or not self.request_sent:
            keep_alive = False  # the server answered before taking the whole request
        if stream is not None:
            stream.end()  # first: once released, the connection may serve someone else
            # Paused because the consumer is behind: the body is all in the stream's buffer,
            # and the next request on this connection must be able to read its response.
            self.resume_reading()
            self._pool.release(self.conn, keep_alive, keepalive)
            return
        self._pool.release(self.conn, keep_alive, keepalive)
        if future is not None and not future.done():
            chunks = self._chunks
            assert request is not None
            future.set_result(Response.from_wire(
                self._status, self._status_line, headers,
                b"".join(chunks) if len(chunks) != 1 else chunks[0], request,
                perf_counter() - self._sent_at))

    # -- ending an exchange ------------------------------------------------------------------
    def fail(self, error: BaseException, *, abandoned: bool = False) -> None:
        """End the exchange in flight with `error`; the connection is closed and discarded.
        `abandoned`: the caller left, so nobody will read a pending result: cancel it."""
        if not self._active:
            return
        self._active = False
        future, self._future = self._future, None
        stream, self._stream = self._stream, None
        self._request = None
        self.close()
        self._pool.release(self.conn, False, None)
        if future is not None and not future.done():
            if abandoned:
                future.cancel()
            else:
                future.set_exception(error)
        if stream is not None:
            stream.set_error(error)
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            if abandoned:
                waiter.cancel()
            else:
                waiter.set_exception(error)

    def abandon(self, owner: object) -> None:
        """The caller gave up (cancelled, or closed a stream early): discard the connection.

        `owner` is the caller's Request or body stream. Only the exchange it belongs to is
        abandoned: a task cancelled just as its response completed wakes up after the
        connection went back to the pool, maybe to a request that now uses it."""
        if self._active and (owner is self._request or owner is self._stream):
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
            if self._active:
                self._arm_read(self._loop.time())

    # -- timers ----------------------------------------------------------------------------
    def _arm_read(self, now: float) -> None:
        deadline = now + self._read_timeout
        if deadline > self._cap:
            deadline = self._cap
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
        if not self._active:
            return
        now = self._loop.time()
        if now >= self._cap:
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
            f"{self.origin} sent nothing for {self._read_timeout:g}s (read time-out)",
            origin=self.origin, timeout=self._read_timeout))

    def _on_write_timeout(self) -> None:
        self._write_timer = None
        if self._write_paused and self._active:
            self.fail(WriteTimeout(
                f"{self.origin} took no request bytes for {self._write_timeout:g}s "
                "(write time-out)", origin=self.origin, timeout=self._write_timeout))

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
        return ServerDisconnected(
            f"{self.origin} {how} without sending a response", origin=self.origin,
            request_sent=self.request_sent, response_started=self._reader.response_started,
            reused=self.conn.may_be_stale)


class AsyncBodyStream:
    """The body of a streamed response, buffered between the connection and its reader."""

    __slots__ = ("_chunks", "_conn", "_ended", "_error", "_size", "_waiter")

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._ended = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    # -- connection side ---------------------------------------------------------------------
    def feed(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._size += len(chunk)
        if self._size > HIGH_WATER:
            self._conn.pause_reading()
        self._wake()

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
