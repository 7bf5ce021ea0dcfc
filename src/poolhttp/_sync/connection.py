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
from typing import TYPE_CHECKING

from .._core.http11 import ResponseReader, keep_alive_timeout, last_chunk
from .._core.pool import Conn
from .._exceptions import (
    InvalidRequest,
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
from .tlstls import TLS_SOCKETS

if TYPE_CHECKING:
    from .._config import Timeout
    from .pool import SyncPool

__all__ = ["SyncConnection"]

_BUFFER = 64 * 1024
_TLS_PIECE = 256 * 1024  # TLS: bytes written between two looks for an early response
_POLLOUT = select.POLLOUT


def _poll_ms(timeout: float | None, deadline: float | None) -> int:
    """A write time-out (capped by the total deadline) in poll() milliseconds; -1: no limit."""
    if deadline is not None:
        remaining = deadline - time.monotonic()
        if timeout is None or remaining < timeout:
            timeout = max(remaining, 0.001)
    if timeout is None or timeout == math.inf:
        return -1
    return max(1, math.ceil(timeout * 1000))


def _timeval(seconds: float | None) -> bytes:
    if seconds is None or seconds == math.inf:
        return struct.pack("ll", 0, 0)  # 0 means block for ever
    seconds = max(seconds, 0.001)  # 0 would also mean for ever
    whole = int(seconds)
    return struct.pack("ll", whole, int((seconds - whole) * 1_000_000))


class SyncExchange:
    """One request on a connection: its limits, trace, and its response as it is read."""

    __slots__ = ("chunks", "deadline", "done", "early", "head_done", "headers", "keep_alive",
                 "read_timeout", "request_sent", "sent_at", "status", "status_line", "trace")

    def __init__(self, read_timeout: float | None, deadline: float | None,
                 trace: Trace | None) -> None:
        self.read_timeout = read_timeout
        self.deadline = deadline
        self.trace = trace
        self.sent_at = time.perf_counter()
        self.status = 0
        self.status_line = b""
        self.headers = b""  # the response's header block, split only if someone asks
        self.chunks: deque[bytes] | list[bytes] = []
        self.head_done = self.done = self.keep_alive = False
        # The server answered before taking the whole request body (RFC 9112 section 9.5):
        # the connection is closed after that response.
        self.early = False
        self.request_sent = False


class SyncConnection:
    """A socket, its reader, and the exchange it carries (one at a time: HTTP/1.1)."""

    multiplexed = False  # one exchange at a time (http2.SyncH2Connection carries many)

    def __init__(self, pool: SyncPool, conn: Conn, origin: str, sock: socket.socket) -> None:
        self._pool = pool
        self.conn = conn
        self.origin = origin
        self.sock = sock
        self.encoder = pool.encoder  # a forward proxy's connections have their own
        self._is_tls = isinstance(sock, TLS_SOCKETS)
        self._reader = ResponseReader(self, origin)
        self._poller = select.poll()
        self._poller.register(sock, select.POLLIN)
        self._watcher: select.poll | None = None  # POLLIN | POLLOUT, made for the first body
        self._buffer = bytearray(_BUFFER)
        self._view = memoryview(self._buffer)
        self._rcvtimeo: float | None = -1.0  # the kernel value last set; -1 = unknown
        self._sndtimeo: float | None = -1.0
        self._active = False  # an exchange is in flight
        self.closed = False
        self.exchange = SyncExchange(None, None, None)  # the current (or last) request's state

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
    def send(self, request: Request, timeout: Timeout, deadline: float | None, stream: bool,
             trace: Trace | None) -> Response:
        """Encode and write the request, then read the response (its head only, if `stream`).
        Raises WriteTimeout / WriteError (connection discarded), ServerDisconnected when a
        reused connection turns out to be closed, or what reading the response raises."""
        self._write(request, timeout.write, timeout.read, deadline, trace)
        return self._receive(request, stream)

    def _write(self, request: Request, write_timeout: float | None, read_timeout: float | None,
               deadline: float | None, trace: Trace | None) -> None:
        self.exchange = SyncExchange(read_timeout, deadline, trace)
        self._active = True
        self._reader.expect(request.method == "HEAD")
        head, body = self.encoder.encode(request)
        sock = self.sock
        try:
            self._set_write_timeout(write_timeout, deadline)
            sock.sendall(head)
            if (body is not None or request.stream is not None) and not self._send_body(
                    request, body, write_timeout, deadline):
                # The server answered and closed (or is closing) before taking it all.
                if not self.exchange.done:
                    raise self._write_failed(None)
                return
        except TransportError as exc:  # before OSError: WriteError and WriteTimeout are ones
            raise self._fail(exc) from None
        except (TimeoutError, BlockingIOError) as exc:
            if self._answered():
                return
            raise self._fail(WriteTimeout(
                f"{self.origin} took no request bytes for {write_timeout:g}s (write time-out)"
                if write_timeout is not None else f"writing to {self.origin} timed out",
                origin=self.origin, timeout=write_timeout)) from exc
        except OSError as exc:
            if self._answered():
                return
            raise self._fail(self._write_failed(exc)) from exc
        self.exchange.request_sent = True
        if trace is not None:
            emit(trace, "request.sent")

    def _write_failed(self, exc: OSError | None) -> TransportError:
        what = str(exc) if exc is not None else "the server closed the connection"
        if self.conn.may_be_stale:  # the keep-alive race: the server closed it while idle
            return self._disconnected(
                f"{self.origin} closed the connection as the request went out ({what})")
        return WriteError(f"sending the request to {self.origin} failed: {what}",
                          origin=self.origin)

    # -- the request body, and an early response -------------------------------------------
    # RFC 9112 section 9.5: a client sending a body watches for a response meanwhile. A server
    # refusing the body (401, 413, ...) answers after the head and closes; once the response
    # is complete the rest of the body is not sent. A server that answers and reads on gets
    # the rest. Either way the connection is closed after that response.

    def _send_body(self, request: Request, body: bytes | None, write_timeout: float | None,
                   deadline: float | None) -> bool:
        """Write the body; False when the sending stopped because the server answered."""
        if body is not None:
            return self._send_watching(body, write_timeout, deadline)
        assert request.stream is not None
        sized = request.stream_length is not None  # Content-Length sent: no chunk framing
        for item in request.stream:
            try:
                chunk = body_chunk(item)
            except TypeError as exc:
                raise WriteError(str(exc), origin=self.origin) from exc
            framed = chunk if sized else b"%x\r\n%s\r\n" % (len(chunk), chunk)
            if chunk and not self._send_watching(framed,
                                                 write_timeout, deadline):
                return False
        if sized:
            return True
        try:
            end = last_chunk(request)
        except InvalidRequest as exc:  # the trailers callable failed: the body is unfinished
            raise WriteError(body_problem(exc), origin=self.origin) from exc
        return self._send_watching(end, write_timeout, deadline)

    def _send_watching(self, data: bytes | bytearray | memoryview, write_timeout: float | None,
                       deadline: float | None) -> bool:
        """Write `data`, reading whatever the server sends meanwhile; False when the server
        finished a response and closes, or closed: stop sending. Plain TCP waits in poll()
        for either direction and writes without blocking; TLS (no send flags) writes bounded
        pieces and looks for input between them."""
        sock = self.sock
        view = memoryview(data).cast("B")
        while view:
            if self.exchange.done:  # answered, and the server reads on: finish the upload blindly
                self._set_write_timeout(write_timeout, deadline)
                sock.sendall(view)
                return True
            if self._is_tls:
                if sock.pending() or self._poller.poll(0):  # type: ignore[attr-defined]
                    if self._read_while_sending():
                        return False
                    continue
                self._set_write_timeout(write_timeout, deadline)
                sock.sendall(view[:_TLS_PIECE])
                view = view[_TLS_PIECE:]
                continue
            watcher = self._watcher
            if watcher is None:
                watcher = self._watcher = select.poll()
                watcher.register(sock, select.POLLIN | _POLLOUT)
            events = watcher.poll(_poll_ms(write_timeout, deadline))
            if not events:
                raise TimeoutError("no room in the send buffer within the write time-out")
            revents = events[0][1]
            if revents != _POLLOUT:  # input, the end of it, or an error
                if self._read_while_sending():
                    return False
                if not revents & _POLLOUT:
                    continue
            try:
                sent = sock.send(view, socket.MSG_DONTWAIT)
            except BlockingIOError:
                continue
            view = view[sent:]
        return True

    def _read_while_sending(self) -> bool:
        """Feed what arrived while the request goes out to the reader (an interim 1xx is
        skipped there). True when the sending must stop: the response is complete and the
        server closes the connection, or the server closed it, or it broke."""
        sock = self.sock
        try:
            if self._is_tls:
                # Readable may be a TLS record with no data for us (a TLS 1.3 session ticket):
                # look without waiting, and take "nothing yet" as nothing.
                self._rcvtimeo = -1.0
                sock.settimeout(0.0)
                n = sock.recv_into(self._buffer)
            else:
                n = sock.recv_into(self._buffer, 0, socket.MSG_DONTWAIT)
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return False
        except OSError:  # a reset: whatever arrived before it has been fed already
            self.exchange.early = True
            return True
        if n == 0:
            self.exchange.early = True
            try:
                self._reader.feed_eof()  # may complete a body that runs until the close
            except RemoteProtocolError:
                pass  # no complete response: send() reports the failed write
            return True
        self._reader.feed(self._view[:n])  # a RemoteProtocolError fails the exchange
        if self.exchange.head_done:
            self.exchange.early = True
        return self.exchange.done and not self.exchange.keep_alive

    def _answered(self) -> bool:
        """Writing failed, maybe because the server answered and reset the connection (it
        closed with our body unread). The kernel keeps what arrived before the reset: read
        the response from it. True when a complete response is in; it is then returned and
        the connection closed. Waits only when a response has started (on a reset socket
        nothing waits); a socket with nothing to read has no answer."""
        try:
            while not self.exchange.done:
                if not self._reader.response_started and not (
                        (self._is_tls and self.sock.pending())  # type: ignore[attr-defined]
                        or self._poller.poll(0)):
                    return False
                self._read_more()
        except TransportError:
            return False
        self.exchange.early = True
        return True

    def _receive(self, request: Request, stream: bool) -> Response:
        """Read the response: its head only when `stream`, else all of it."""
        try:
            while not self.exchange.head_done:
                self._read_more()
            if not stream:
                while not self.exchange.done:
                    self._read_more()
        except TransportError as exc:
            raise self._fail(exc) from None
        exchange = self.exchange
        chunks = exchange.chunks
        elapsed = time.perf_counter() - exchange.sent_at
        if stream:
            response = Response.from_wire(exchange.status, exchange.status_line,
                                          exchange.headers, None, request, elapsed)
            # The stream owns the buffered chunks: once the body has ended the connection may
            # serve another thread while the consumer still reads these.
            buffered = self.exchange.chunks = deque(chunks)
            response._stream = SyncBodyStream(self, buffered, ended=self.exchange.done)
            if self.exchange.done:
                self._finish()
            return response
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        response = Response.from_wire(exchange.status, exchange.status_line, exchange.headers,
                                      body, request, elapsed)
        self._finish()
        return response

    def _read_more(self) -> None:
        sock = self.sock
        self._set_read_timeout()
        try:
            n = sock.recv_into(self._buffer)
        except (TimeoutError, BlockingIOError) as exc:
            if self.exchange.deadline is not None and time.monotonic() >= self.exchange.deadline:
                raise TotalTimeout(f"no complete response from {self.origin} within the total "
                                   "time-out", origin=self.origin) from exc
            raise ReadTimeout(f"{self.origin} sent nothing for {self.exchange.read_timeout:g}s "
                              "(read time-out)", origin=self.origin,
                              timeout=self.exchange.read_timeout) from exc
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
            if not self.exchange.done:
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
        if self.exchange.done:
            self._finish()
            return True
        return False

    def _finish(self) -> None:
        """The response was read to the end: give the connection back."""
        if not self._active:
            return
        self._active = False
        keep_alive = self.exchange.keep_alive and not self.exchange.early
        keepalive = keep_alive_timeout(self.exchange.headers) if keep_alive else None
        self._pool.release(self.conn, keep_alive, keepalive)

    def abandon(self, owner: object = None) -> None:
        """The caller stopped early or failed: the connection is out of step, discard it.
        (`owner`, the caller's request, matters only on a multiplexed connection.)"""
        if self._active:
            self._fail(ReadError(f"request to {self.origin} abandoned", origin=self.origin))

    def _fail(self, error: TransportError) -> TransportError:
        if self._active:
            self._active = False
            self.close()
            self._pool.release(self.conn, False, None)
        return error

    def _disconnected(self, message: str) -> ServerDisconnected:
        return ServerDisconnected(message, origin=self.origin,
                                  request_sent=self.exchange.request_sent,
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
        timeout = self.exchange.read_timeout
        if self.exchange.deadline is not None:
            remaining = self.exchange.deadline - time.monotonic()
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
        if self.exchange.trace is not None:
            emit(self.exchange.trace, "response.headers", status=status)
        self.exchange.status = status
        self.exchange.status_line = status_line
        self.exchange.headers = headers
        self.exchange.head_done = True

    def on_body(self, chunk: bytes) -> None:
        self.exchange.chunks.append(chunk)

    def on_complete(self, keep_alive: bool) -> None:
        self.exchange.done = True
        self.exchange.keep_alive = keep_alive


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
