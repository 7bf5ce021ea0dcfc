"""One HTTP/1.1 connection for the blocking client: a socket feeding the core reader.

Used by one thread at a time (the pool hands a connection to one request). Reads go through
`recv_into` on one reused buffer. For plain TCP the socket stays in blocking mode and the read
and write time-outs are kernel socket options (SO_RCVTIMEO / SO_SNDTIMEO), so a read costs one
system call instead of poll() plus recv(); a TLS socket uses Python's own time-out instead.
"""

from __future__ import annotations

import math
import select
import socket
import ssl
import struct
import time
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .._client_base import Trace, emit
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

if TYPE_CHECKING:
    from .pool import SyncPool

__all__ = ["SyncConnection"]

_BUFFER = 64 * 1024


def _timeval(seconds: float | None) -> bytes:
    if seconds is None or seconds == math.inf:
        return struct.pack("ll", 0, 0)  # 0 means block for ever
    seconds = max(seconds, 0.001)  # 0 would also mean for ever
    whole = int(seconds)
    return struct.pack("ll", whole, int((seconds - whole) * 1_000_000))


class SyncConnection:
    """A socket, its reader, and the state of the one exchange in flight."""

    def __init__(self, pool: SyncPool, conn: Conn, origin: str, sock: socket.socket) -> None:
        self._pool = pool
        self.conn = conn
        self.origin = origin
        self.sock = sock
        self._is_tls = isinstance(sock, ssl.SSLSocket)
        self._reader = ResponseReader(self, origin)
        self._poller = select.poll()
        self._poller.register(sock, select.POLLIN)
        self._buffer = bytearray(_BUFFER)
        self._view = memoryview(self._buffer)
        self._rcvtimeo: float | None = -1.0  # the kernel value last set; -1 = unknown
        self._sndtimeo: float | None = -1.0
        self._active = False
        self.closed = False
        self.request_sent = False
        # Response state filled by the sink callbacks.
        self._status = 0
        self._headers = b""  # the response's header block, split only if someone asks
        self._status_line = b""
        self._chunks: deque[bytes] | list[bytes] = []
        self._head_done = False
        self._done = False
        self._keep_alive = False
        self._read_timeout: float | None = None
        self._deadline: float | None = None
        self._trace: Trace | None = None
        self._sent_at = 0.0

    # -- liveness ------------------------------------------------------------------------
    def is_reusable(self) -> bool:
        """An idle connection must have nothing to read: readable means the server closed it
        (EOF, RST) or sent bytes nobody asked for, and either way it must not be used. One
        poll() with no wait on this connection's own poller: no scan of the pool, and no
        exception raised on the common path (a non-blocking recv would raise EAGAIN)."""
        if self._is_tls and self.sock.pending():  # type: ignore[attr-defined]
            return False  # decrypted bytes already buffered
        return not self._poller.poll(0)

    # -- the exchange ----------------------------------------------------------------------
    def send(self, request: Request, head: bytes, body: bytes | None, write_timeout: float | None,
             read_timeout: float | None, deadline: float | None, trace: Trace | None) -> None:
        """Write the request; raises WriteTimeout / WriteError (connection discarded), or
        ServerDisconnected when a reused connection turns out to be closed."""
        self._trace = trace
        self._active = True
        self._status = 0
        self._chunks = []
        self._head_done = self._done = False
        self.request_sent = False
        self._read_timeout = read_timeout
        self._deadline = deadline
        self._reader.expect(request.method == "HEAD")
        self._sent_at = time.perf_counter()
        sock = self.sock
        try:
            self._set_write_timeout(write_timeout, deadline)
            sock.sendall(head)
            if body is not None:
                sock.sendall(body)
            elif request.stream is not None:
                self._send_chunked(request.stream, write_timeout, deadline)
        except (TimeoutError, BlockingIOError) as exc:
            raise self._fail(WriteTimeout(
                f"{self.origin} took no request bytes for {write_timeout:g}s (write time-out)"
                if write_timeout is not None else f"writing to {self.origin} timed out",
                origin=self.origin, timeout=write_timeout)) from exc
        except OSError as exc:
            if self.conn.may_be_stale:  # the keep-alive race: the server closed it while idle
                raise self._fail(self._disconnected(
                    f"{self.origin} closed the connection as the request went out ({exc})")
                ) from exc
            raise self._fail(WriteError(f"sending the request to {self.origin} failed: {exc}",
                                        origin=self.origin)) from exc
        self.request_sent = True
        if trace is not None:
            emit(trace, "request.sent")

    def _send_chunked(self, chunks: Iterable[Any], write_timeout: float | None,
                      deadline: float | None) -> None:
        for chunk in chunks:
            if isinstance(chunk, str):
                chunk = chunk.encode("utf-8")
            if not isinstance(chunk, (bytes, bytearray, memoryview)):
                raise self._fail(WriteError(
                    f"body chunks must be bytes, not {type(chunk).__name__}", origin=self.origin))
            if chunk:
                self._set_write_timeout(write_timeout, deadline)
                self.sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        self.sock.sendall(b"0\r\n\r\n")

    def receive(self, request: Request, stream: bool) -> Response:
        """Read the response: its head only when `stream`, else all of it."""
        try:
            while not self._head_done:
                self._read_more()
            if not stream:
                while not self._done:
                    self._read_more()
        except TransportError as exc:
            raise self._fail(exc) from None
        chunks = self._chunks
        elapsed = time.perf_counter() - self._sent_at
        if stream:
            response = Response.from_wire(self._status, self._status_line, self._headers,
                                          None, request, elapsed)
            # The stream owns the buffered chunks: once the body has ended the connection may
            # serve another thread while the consumer still reads these.
            buffered = self._chunks = deque(chunks)
            response._stream = SyncBodyStream(self, buffered, ended=self._done)
            if self._done:
                self._finish()
            return response
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        response = Response.from_wire(self._status, self._status_line, self._headers, body,
                                      request, elapsed)
        self._finish()
        return response

    def _read_more(self) -> None:
        sock = self.sock
        self._set_read_timeout()
        try:
            n = sock.recv_into(self._buffer)
        except (TimeoutError, BlockingIOError) as exc:
            if self._deadline is not None and time.monotonic() >= self._deadline:
                raise TotalTimeout(f"no complete response from {self.origin} within the total "
                                   "time-out", origin=self.origin) from exc
            raise ReadTimeout(f"{self.origin} sent nothing for {self._read_timeout:g}s "
                              "(read time-out)", origin=self.origin,
                              timeout=self._read_timeout) from exc
        except OSError as exc:
            if not self._reader.response_started:
                raise self._disconnected(f"connection to {self.origin} lost before a response: "
                                         f"{exc}") from exc
            raise ReadError(f"connection to {self.origin} lost: {exc}",
                            origin=self.origin) from exc
        if n == 0:
            try:
                self._reader.feed_eof()
            except RemoteProtocolError as exc:
                if exc.reason == "no response":
                    raise self._disconnected(str(exc)) from None
                raise
            if not self._done:
                raise self._disconnected(f"{self.origin} closed the connection")
            return
        self._reader.feed(self._view[:n])

    def pump(self) -> bool:
        """Read more of a streamed body into its buffer; True once the body has ended (the
        connection is then back in the pool)."""
        try:
            self._read_more()
        except TransportError as exc:
            raise self._fail(exc) from None
        if self._done:
            self._finish()
            return True
        return False

    def _finish(self) -> None:
        """The response was read to the end: give the connection back."""
        if not self._active:
            return
        self._active = False
        keep_alive = self._keep_alive
        keepalive = keep_alive_timeout(self._headers) if keep_alive else None
        self._pool.release(self.conn, keep_alive, keepalive)

    def abandon(self) -> None:
        """The caller stopped early or failed: the connection is out of step, discard it."""
        if self._active:
            self._fail(ReadError(f"request to {self.origin} abandoned", origin=self.origin))

    def _fail(self, error: TransportError) -> TransportError:
        if self._active:
            self._active = False
            self.close()
            self._pool.release(self.conn, False, None)
        return error

    def _disconnected(self, message: str) -> ServerDisconnected:
        return ServerDisconnected(message, origin=self.origin, request_sent=self.request_sent,
                                  response_started=self._reader.response_started,
                                  reused=self.conn.may_be_stale)

    def close(self) -> None:
        """Close the socket. When the client is closed under a request in flight, another
        thread may be blocked in recv() on it: shutdown() wakes it, close() alone would not."""
        if not self.closed:
            self.closed = True
            try:
                if self._active:
                    self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                self.sock.close()
            except OSError:
                pass

    # -- socket time-outs ------------------------------------------------------------------
    def _set_read_timeout(self) -> None:
        timeout = self._read_timeout
        if self._deadline is not None:
            remaining = self._deadline - time.monotonic()
            if timeout is None or remaining < timeout:
                timeout = max(remaining, 0.0)
        if timeout == self._rcvtimeo:
            return
        self._rcvtimeo = timeout
        if self._is_tls:
            self.sock.settimeout(timeout)
        else:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(timeout))

    def _set_write_timeout(self, timeout: float | None, deadline: float | None) -> None:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if timeout is None or remaining < timeout:
                timeout = max(remaining, 0.0)
        if self._is_tls:
            self._rcvtimeo = -1.0  # one Python time-out serves both directions
            self.sock.settimeout(timeout)
        elif timeout != self._sndtimeo:
            self._sndtimeo = timeout
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(timeout))

    # -- ResponseSink ----------------------------------------------------------------------
    def on_head(self, status: int, status_line: bytes, headers: bytes) -> None:
        if self._trace is not None:
            emit(self._trace, "response.headers", status=status)
        self._status = status
        self._status_line = status_line
        self._headers = headers
        self._head_done = True

    def on_body(self, chunk: bytes) -> None:
        self._chunks.append(chunk)

    def on_complete(self, keep_alive: bool) -> None:
        self._done = True
        self._keep_alive = keep_alive


class SyncBodyStream:
    """The body of a streamed response, read from the socket as the consumer asks."""

    __slots__ = ("_chunks", "_conn", "_ended")

    def __init__(self, conn: SyncConnection, chunks: deque[bytes], *, ended: bool) -> None:
        self._conn = conn
        self._chunks = chunks
        self._ended = ended

    def read_chunk(self) -> bytes:
        chunks = self._chunks
        while not chunks:
            if self._ended:
                return b""
            self._ended = self._conn.pump()
        return chunks.popleft()

    def close(self) -> None:
        if not self._ended:
            self._ended = True
            self._conn.abandon()  # closed before the end: the connection is out of step
        self._chunks.clear()
