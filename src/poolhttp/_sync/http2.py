"""One HTTP/2 connection shared by threads: a socket, the core's `H2Session`, and the
exchanges (one per stream) the threads' requests make on it.

Theory of operation
-------------------
One lock per connection (`lock`) guards the session and every exchange on it. The socket is
non-blocking after the handshake, and every TLS read or write happens under that lock: an
`ssl.SSLSocket` must not be read and written by two threads at once.

* A reader thread (`poolhttp-h2`, one per connection, alive as long as the connection) waits
  for the socket to be readable, reads and feeds the session under the lock; the session
  calls the exchanges, which note what arrived and wake their own thread (a Condition on
  the connection's lock). What must not run under that lock -- telling the pool that a
  stream ended, that the server said GOAWAY or changed its stream limit -- is queued and run
  after the lock is let go (the pool's lock is never taken under a connection's lock).
* A requesting thread starts its stream under the lock, writes, then sleeps until its
  response (or its head, for a stream) arrived, its read time-out passed with nothing
  received on its stream, or the connection failed.
* Writing: the bytes the session produces are written by one thread at a time (`_send_lock`);
  a thread that finds another writing leaves its bytes to it. A write that would block waits
  for the socket outside the lock, so the reader goes on meanwhile (a server waiting for us
  to read before it reads more would otherwise deadlock us).
* A stream that times out is reset (RST_STREAM CANCEL), and a PING tests the connection: if
  nothing at all arrives within `PING_TIMEOUT`, every stream fails and the pool drops it.
"""

from __future__ import annotations

import select
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from .._core.http2 import H2Session
from .._core.pool import Conn
from .._exceptions import (
    InvalidRequest,
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

if TYPE_CHECKING:
    from .._config import Timeout
    from .pool import SyncPool

__all__ = ["SyncH2Connection"]

PING_TIMEOUT = 5.0
_POLL_MS = 250  # how often the reader looks up from an idle socket (closing, PING time-out)
_WOULD_BLOCK = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


class SyncH2Exchange:
    """One request's stream; written by the reader thread under the connection's lock."""

    __slots__ = (
        "cap",
        "chunks",
        "cond",
        "conn",
        "ended",
        "error",
        "headers",
        "heard_at",
        "read_timeout",
        "request",
        "response",
        "sent_at",
        "status",
        "status_line",
        "stream_id",
        "streaming",
        "trace",
        "trailers",
    )

    def __init__(self, conn: SyncH2Connection, request: Request, timeout: Timeout,
                 deadline: float | None, streaming: bool, trace: Trace | None) -> None:
        self.conn = conn
        self.cond = threading.Condition(conn.lock)
        self.request = request
        self.streaming = streaming
        self.read_timeout = timeout.read
        self.cap = deadline
        self.trace = trace
        self.stream_id = 0
        self.status = 0
        self.status_line = b""
        self.headers = b""
        self.trailers = b""
        self.chunks: deque[tuple[bytes, int]] = deque()
        self.ended = False
        self.error: BaseException | None = None
        self.response: Response | None = None
        self.sent_at = time.perf_counter()
        self.heard_at = time.monotonic()

    # -- StreamSink (reader thread, under the lock) ---------------------------------------
    def on_head(self, status: int, status_line: bytes, block: bytes) -> None:
        self.status = status
        self.status_line = status_line
        self.headers = block
        self.heard_at = time.monotonic()
        if self.streaming:
            self.cond.notify()

    def on_data(self, data: bytes, flow: int) -> None:
        self.heard_at = time.monotonic()
        if self.streaming:
            self.chunks.append((data, flow))
            self.cond.notify()
        else:
            self.chunks.append((data, 0))
            self.conn.session.ack(self.stream_id, flow)

    def on_end(self, trailers: bytes) -> None:
        self.trailers = trailers
        if self.response is not None:
            self.response._trailers = trailers
        self.ended = True
        self.conn.later(self.conn.ended)
        self.cond.notify()

    def on_reset(self, error: StreamReset | RemoteProtocolError) -> None:
        self.error = error
        self.conn.later(self.conn.ended)
        self.cond.notify()

    def failed(self, error: BaseException) -> None:
        if self.error is None and not self.ended:
            self.error = error
        self.cond.notify()

    # -- the requesting thread (under the lock) -------------------------------------------
    def wait(self, until: str) -> None:
        """Sleep until the response's "head", more "data" (or its end), or its "end" is
        here; raise its error or a time-out."""
        while True:
            # What arrived comes before an error that followed it (a reset after the head
            # fails the body's reader, as in the async driver, not the stream() call).
            if self.ended or (until == "head" and self.status) or (
                    until == "data" and self.chunks):
                return
            if self.error is not None:
                raise self.error
            now = time.monotonic()
            limit = None
            if self.read_timeout is not None:
                limit = self.heard_at + self.read_timeout - now
            if self.cap is not None and (limit is None or self.cap - now < limit):
                if self.cap <= now:
                    raise self.conn.abandon_locked(self, TotalTimeout(
                        f"no complete response from {self.conn.origin} within the total "
                        "time-out", origin=self.conn.origin))
                limit = self.cap - now
            if limit is not None and limit <= 0:
                self.conn.suspect_locked()
                raise self.conn.abandon_locked(self, ReadTimeout(
                    f"{self.conn.origin} sent nothing for {self.read_timeout:g}s on this "
                    "request's HTTP/2 stream (read time-out)", origin=self.conn.origin,
                    timeout=self.read_timeout))
            self.cond.wait(limit)


class SyncH2Connection:
    """An HTTP/2 connection: its socket, session, reader thread and exchanges."""

    multiplexed = True

    def __init__(self, pool: SyncPool, conn: Conn, origin: str, sock: socket.socket,
                 write_timeout: float | None) -> None:
        self._pool = pool
        self.conn = conn
        self.origin = origin
        self.sock = sock
        self.lock = threading.Lock()
        self.session = H2Session(self, origin)
        self.closed = False
        self.started = False
        self.ready = threading.Event()  # the server's first SETTINGS arrived
        self._after: list[Callable[[], None]] = []
        self._out: list[bytes] = []
        self._send_lock = threading.Lock()
        self._write_timeout = write_timeout
        self._window = threading.Condition(self.lock)  # senders waiting for a window
        self._ping_at: float | None = None
        self._heard = False
        sock.setblocking(False)
        self._out.append(self.session.output())  # the preface
        self.reader = threading.Thread(target=self._read_loop, name="poolhttp-h2", daemon=True)

    def start(self) -> None:
        self.reader.start()
        self._flush()

    def is_reusable(self) -> bool:
        """Whether the pool may hand it out (the reader notices a closed socket at once).
        Not false after a GOAWAY: the pool's answer to false is to close the connection, and
        the streams the server still finishes would die with it; a request that gets a
        draining connection is refused in `send`, unsent, and resent elsewhere."""
        return not self.closed

    # -- the exchange ----------------------------------------------------------------------
    def send(self, request: Request, timeout: Timeout, deadline: float | None, stream: bool,
             trace: Trace | None) -> Response:
        exchange = SyncH2Exchange(self, request, timeout, deadline, stream, trace)
        session = self.session
        body = request.content
        chunks = request.stream
        with self.lock:
            if self.closed or session.goaway is not None:
                if session.goaway is not None and self.started:
                    # First make sure the pool drains it (the reader may not have told it
                    # yet), or the resend could be handed this connection again.
                    self.later(self._drain)
                self.later(self.ended)
                error: TransportError | None = StreamReset(
                    f"{self.origin} closed this HTTP/2 connection before the request went "
                    "out", origin=self.origin, processed=False)
            else:
                error = None
                headers = self._pool.h2_encoder.headers(request)
                try:
                    exchange.stream_id = session.start(headers, exchange,
                                                       body is None and chunks is None,
                                                       request)
                except StreamReset as exc:  # no room under a lowered stream limit
                    # Resent by the client; the pool learns the new limit first (the reader
                    # may not have told it yet), then gets the slot back.
                    error = exc
                    limit = max(1, session.max_streams)
                    self.later(lambda: self._pool.resize(self.conn, limit))
                    self.later(self.ended)
                else:
                    # (an empty body is an empty DATA frame with END_STREAM)
                    sent = (session.send_data(exchange.stream_id, body, True)
                            if body is not None else 0)
                    self._queue()
        self._run_later()
        if error is not None:
            raise error
        self._flush()
        if trace is not None:
            emit(trace, "request.sent")
        try:
            if body is not None and sent < len(body):
                self._send_rest(exchange, memoryview(body)[sent:], True)
            elif chunks is not None:
                for item in chunks:
                    chunk = body_chunk(item)
                    if chunk and not self._send_rest(exchange, memoryview(chunk), False):
                        break
                else:
                    self._send_rest(exchange, memoryview(b""), True)
            with self.lock:
                exchange.wait("head" if stream else "end")
        except (TypeError, InvalidRequest) as exc:
            self.abandon(request)
            raise WriteError(body_problem(exc), origin=self.origin) from exc
        finally:
            self._run_later()
        return self._response(exchange, stream)

    def _response(self, exchange: SyncH2Exchange, stream: bool) -> Response:
        elapsed = time.perf_counter() - exchange.sent_at
        if trace := exchange.trace:
            emit(trace, "response.headers", status=exchange.status)
        if stream:
            response = Response.from_wire(exchange.status, exchange.status_line,
                                          exchange.headers, None, exchange.request, elapsed)
            with self.lock:
                exchange.response = response
                response._trailers = exchange.trailers
            response._stream = SyncH2BodyStream(exchange)
            return response
        chunks = [chunk for chunk, _ in exchange.chunks]
        response = Response.from_wire(exchange.status, exchange.status_line, exchange.headers,
                                      b"".join(chunks) if len(chunks) != 1 else chunks[0],
                                      exchange.request, elapsed)
        response._trailers = exchange.trailers
        return response

    def _send_rest(self, exchange: SyncH2Exchange, view: memoryview, end: bool) -> bool:
        """Send a body part as the windows allow; False once the stream is over."""
        session = self.session
        limit = self._write_timeout
        while True:
            with self.lock:
                if session.streams.get(exchange.stream_id) is not exchange:
                    return False
                sent = session.send_data(exchange.stream_id, view, end)
                view = view[sent:]
                self._queue()
                if len(view) and not sent and not self._window.wait(limit):
                    raise self.abandon_locked(exchange, WriteTimeout(
                        f"{self.origin} kept this request's HTTP/2 flow-control window "
                        f"closed for {limit}s (write time-out)", origin=self.origin,
                        timeout=limit))
            self._flush()
            if not len(view):
                return True

    # -- ending exchanges ------------------------------------------------------------------
    def later(self, action: Callable[[], None]) -> None:
        """(Under the lock.) Run `action` once the lock is let go."""
        self._after.append(action)

    def _run_later(self) -> None:
        if self._after:
            with self.lock:
                after, self._after = self._after, []
            for action in after:
                action()

    def ended(self) -> None:
        """A stream is over: one slot of the connection free (pool lock, not ours)."""
        self._pool.release(self.conn, not self.closed, None)
        if self.session.goaway is not None and not self.session.streams:
            self.close()

    def abandon_locked(self, exchange: SyncH2Exchange, error: TransportError) -> TransportError:
        """(Under the lock.) End one exchange early: reset its stream, keep the connection."""
        if self.session.streams.get(exchange.stream_id) is exchange:
            self.session.reset(exchange.stream_id)
            self._queue()
            self.later(self._flush)
            self.later(self.ended)
        exchange.failed(error)
        return error

    def abandon(self, owner: object = None) -> None:
        """The caller gave up (an exception, or a stream closed early): reset its stream."""
        with self.lock:
            for exchange in list(self.session.streams.values()):
                assert isinstance(exchange, SyncH2Exchange)
                if owner is exchange.request or owner is exchange:
                    self.abandon_locked(exchange, ReadError(
                        f"request to {self.origin} abandoned", origin=self.origin))
                    break
        self._run_later()

    def _fail_all_locked(self, error: TransportError | None) -> None:
        streams = list(self.session.streams.values())
        self.session.streams.clear()
        self.closed = True
        for exchange in streams:
            assert isinstance(exchange, SyncH2Exchange)
            exchange.failed(error if error is not None else self._disconnected(exchange))
            self.later(self._release_broken)
        if not streams:
            self.later(self._discard)
        self._window.notify_all()

    def _release_broken(self) -> None:
        self._pool.release(self.conn, False, None)

    def _discard(self) -> None:
        if self.started:
            self._pool.discard(self.conn)

    def _disconnected(self, exchange: SyncH2Exchange) -> TransportError:
        if exchange.status:
            return ReadError(f"connection to {self.origin} lost mid-response",
                             origin=self.origin)
        return ServerDisconnected(f"{self.origin} closed the connection without sending a "
                                  "response", origin=self.origin, request_sent=True,
                                  reused=self.conn.may_be_stale)

    # -- SessionSink (under the lock) ----------------------------------------------------
    def on_goaway(self, last_stream_id: int, error_code: int) -> None:
        if self.started:
            self.later(self._drain)

    def _drain(self) -> None:
        self._pool.drain(self.conn)
        if not self.session.streams:
            self.close()

    def on_capacity(self, streams: int) -> None:
        if self.started:
            self.later(lambda: self._pool.resize(self.conn, streams))

    def on_window(self) -> None:
        self._window.notify_all()

    # -- socket I/O ------------------------------------------------------------------------
    def _queue(self) -> None:
        """(Under the lock.) Take what the session has to send."""
        data = self.session.output()
        if data:
            self._out.append(data)

    def _flush(self) -> None:
        """Write the queued bytes; if another thread is writing, it writes ours too."""
        while self._out and self._send_lock.acquire(blocking=False):
            try:
                self._write_out()
            finally:
                self._send_lock.release()

    def _write_out(self) -> None:
        pending = b""
        while True:
            with self.lock:
                if not pending:
                    if self.closed:  # nothing more goes out; _flush must not spin on it
                        self._out.clear()
                        return
                    if not self._out:
                        return
                    pending = b"".join(self._out)
                    self._out.clear()
                if self.closed:
                    self._out.clear()
                    return
                try:
                    sent = self.sock.send(pending)
                except _WOULD_BLOCK:
                    sent = 0
                except OSError as exc:
                    self._fail_all_locked(WriteError(
                        f"connection to {self.origin} failed while writing: {exc}",
                        origin=self.origin))
                    self._close_socket()
                    sent = -1
            if sent < 0:
                self._run_later()
                return
            pending = pending[sent:]
            if pending and not sent and not _wait_fd(self.sock, select.POLLOUT,
                                                     self._write_timeout):
                with self.lock:
                    self._fail_all_locked(WriteTimeout(
                        f"{self.origin} took no bytes for {self._write_timeout}s "
                        "(write time-out)", origin=self.origin, timeout=self._write_timeout))
                    self._close_socket()
                self._run_later()
                return

    def _read_loop(self) -> None:
        sock = self.sock
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        is_tls = isinstance(sock, ssl.SSLSocket)
        try:
            while not self.closed:
                if not (is_tls and sock.pending()) and not poller.poll(_POLL_MS):  # type: ignore[attr-defined]
                    self._check_ping()
                    continue
                with self.lock:
                    if self.closed:
                        break
                    try:
                        data = sock.recv(262144)
                    except _WOULD_BLOCK:
                        continue
                    except OSError as exc:
                        data = b""
                        error: TransportError | None = ReadError(
                            f"connection to {self.origin} failed: {exc}", origin=self.origin)
                    else:
                        error = None
                    self._heard = True
                    if not data:
                        self._fail_all_locked(error)
                        break
                    try:
                        self.session.feed(data)
                    except RemoteProtocolError as exc:
                        self._fail_all_locked(exc)
                        break
                    self.ready.set()
                    self._queue()
                self._run_later()
                self._flush()
        finally:
            with self.lock:
                self._fail_all_locked(None)
                self._close_socket()
                self.later(lambda: self._pool.forget(self))
            self.ready.set()
            self._run_later()

    # -- liveness and closing ----------------------------------------------------------------
    def suspect_locked(self) -> None:
        """(Under the lock.) A stream timed out: PING the connection."""
        if self._ping_at is None and not self.closed:
            self._heard = False
            self._ping_at = time.monotonic()
            self.session.ping(b"poolhttp")
            self._queue()
            self.later(self._flush)

    def _check_ping(self) -> None:
        with self.lock:
            if self._ping_at is None:
                return
            if self._heard:
                self._ping_at = None
                return
            if time.monotonic() - self._ping_at < PING_TIMEOUT:
                return
            self._fail_all_locked(ReadTimeout(
                f"{self.origin} answered nothing, not even a PING, for {PING_TIMEOUT:g}s: the "
                "HTTP/2 connection is dead", origin=self.origin, timeout=PING_TIMEOUT))
            self._close_socket()
        self._run_later()

    def close(self) -> None:
        """Stop using the connection; the reader thread closes the socket and ends. Takes
        no lock (the pool calls it under its own)."""
        if not self.closed:
            self.closed = True
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _close_socket(self) -> None:
        self.closed = True
        try:
            self.sock.close()
        except OSError:
            pass

    def join(self, timeout: float) -> None:
        if self.reader.is_alive() and self.reader is not threading.current_thread():
            self.reader.join(timeout)


class SyncH2BodyStream:
    """The body of a streamed response on an HTTP/2 stream; each chunk taken hands its bytes
    back to the server (reopening the stream's window)."""

    __slots__ = ("_closed", "_exchange")

    def __init__(self, exchange: SyncH2Exchange) -> None:
        self._exchange = exchange
        self._closed = False

    def read_chunk(self) -> bytes:
        exchange = self._exchange
        conn = exchange.conn
        try:
            with conn.lock:
                while not exchange.chunks:
                    if exchange.error is not None:
                        raise exchange.error
                    if exchange.ended:
                        return b""
                    exchange.wait("data")
                chunk, flow = exchange.chunks.popleft()
                if conn.session.streams.get(exchange.stream_id) is exchange:
                    conn.session.ack(exchange.stream_id, flow)
                    conn._queue()
        finally:
            # Also when wait() raised a time-out: its RST_STREAM, PING and the slot's
            # release are queued, and nobody else may come by to run them.
            conn._run_later()
        conn._flush()
        return chunk

    def close(self) -> None:
        exchange = self._exchange
        if not self._closed:
            self._closed = True
            if not exchange.ended and exchange.error is None:
                exchange.conn.abandon(exchange)
            exchange.chunks.clear()


def _wait_fd(sock: socket.socket, events: int, timeout: float | None) -> bool:
    poller = select.poll()
    poller.register(sock, events)
    return bool(poller.poll(None if timeout is None else max(1, int(timeout * 1000))))

