"""In-process HTTP/1.1 servers for what nginx cannot do: exact bytes and scripted faults.

Each `ScriptedServer` runs its own asyncio loop in a daemon thread, so the same server works
under async tests (on either loop kind) and under threaded sync tests, and a test that blocks
its own thread never stalls the server. A handler gets every parsed request and returns a
`Reply` saying exactly what goes on the wire and what happens to the connection afterwards.

    with ScriptedServer(lambda request: Reply.ok(b"hi").close_after()) as server:
        ... client.get(server.url("/x")) ...
        server.wait_for(lambda s: s.active == 0)
        assert server.accepted == 1

The request parser here is deliberately strict (CRLF only, no obs-fold, no conflicting
framing), so a client sending anything sloppy gets a 400 and an entry in `protocol_errors`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import fcntl
import http
import inspect
import json
import re
import select
import socket
import ssl
import struct
import termios
import threading
import time
import traceback
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, cast

from .certs import CertBundle

__all__ = [
    "DEFAULT_HOSTS",
    "Blackhole",
    "ConnectionRecord",
    "Counters",
    "Gate",
    "Handler",
    "MultiOriginServer",
    "ReceivedRequest",
    "RefusingPort",
    "Reply",
    "ScriptedServer",
    "ServerFactory",
    "ServerHandlerError",
    "blackhole_listener",
    "echo_handler",
    "hello_handler",
    "in_sequence",
    "refusing_port",
]

DEFAULT_HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3")

# Parser limits: generous for tests, but bounded so a runaway client cannot exhaust memory.
MAX_LINE = 16 * 1024
MAX_HEADERS = 100
MAX_BODY = 64 * 1024 * 1024
READ_SIZE = 64 * 1024

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE_CHARS = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_BAD_TARGET_CHARS = re.compile(rb"[\x00-\x20\x7f]")
_VERSION = re.compile(rb"HTTP/1\.[01]")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
_DIGITS = re.compile(r"[0-9]{1,18}")


# --------------------------------------------------------------------------------------------
# Waiting across threads and loops


class _Notifier:
    """A lock plus wake-ups for waiters on any thread or event loop.

    Counters change on a server's loop thread while the test waits on its own thread, or on
    its own event loop: both kinds of waiter are woken on every change, so no one sleeps in
    fixed steps hoping the state has arrived.
    """

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._condition = threading.Condition(self.lock)
        self._async_waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()

    def notify(self) -> None:
        with self.lock:
            self._condition.notify_all()
            waiters = list(self._async_waiters)
        for loop, event in waiters:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # that loop is closed; its waiter is gone too
                pass

    def wait(self, check: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.lock:
            while not check():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._condition.wait(remaining)
            return True

    async def wait_async(self, check: Callable[[], bool], timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        key = (loop, event)
        deadline = loop.time() + timeout
        with self.lock:
            self._async_waiters.add(key)
        try:
            while True:
                # Cleared before the check: a change after the check sets it again.
                event.clear()
                with self.lock:
                    if check():
                        return True
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return False
                try:
                    await asyncio.wait_for(event.wait(), remaining)
                except asyncio.TimeoutError:
                    pass
        finally:
            with self.lock:
                self._async_waiters.discard(key)


class Gate:
    """A one-shot flag shared between a test and handlers running on a server's loop.

    A handler awaits `gate.wait()` without blocking its server; the test calls `gate.set()`
    from any thread, or waits for the handler's side with `wait_sync()` / `await wait()`.
    """

    def __init__(self) -> None:
        self._notifier = _Notifier()
        self._set = False

    def set(self) -> None:
        with self._notifier.lock:
            self._set = True
        self._notifier.notify()

    def is_set(self) -> bool:
        with self._notifier.lock:
            return self._set

    def wait_sync(self, timeout: float = 5.0) -> None:
        if not self._notifier.wait(self.is_set, timeout):
            raise TimeoutError(f"gate not set within {timeout}s")

    async def wait(self, timeout: float = 5.0) -> None:
        if not await self._notifier.wait_async(self.is_set, timeout):
            raise TimeoutError(f"gate not set within {timeout}s")


# --------------------------------------------------------------------------------------------
# Requests


@dataclass(frozen=True)
class ReceivedRequest:
    """One request as the server parsed it."""

    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes
    connection_index: int  # which accepted connection (0 = the first one)
    request_index: int  # position on its connection (0 = the first request)
    chunked: bool = False
    trailers: list[tuple[str, str]] = field(default_factory=list)

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of header `name` (case-insensitive)."""
        lowered = name.lower()
        for key, value in self.headers:
            if key.lower() == lowered:
                return value
        return default

    def get_all(self, name: str) -> list[str]:
        lowered = name.lower()
        return [value for key, value in self.headers if key.lower() == lowered]

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def query(self) -> str:
        return self.target.split("?", 1)[1] if "?" in self.target else ""

    def _connection_tokens(self) -> set[str]:
        return {
            token.strip().lower()
            for value in self.get_all("connection")
            for token in value.split(",")
        }

    @property
    def wants_close(self) -> bool:
        """Whether the client asked for the connection to end after this exchange."""
        tokens = self._connection_tokens()
        if self.version == "HTTP/1.0":
            return "keep-alive" not in tokens
        return "close" in tokens


class RequestParseError(Exception):
    """The client sent something that is not a valid HTTP/1.1 request."""


class _EndOfStream(Exception):
    """The client closed the connection (possibly in the middle of a request)."""


class _Idle(Exception):
    """No request started within the idle limit."""


def _input_waiting(reader: _Reader, writer: asyncio.StreamWriter) -> bool:
    """Whether bytes from the client wait in the stream's buffer or in the socket."""
    # Read but not yet consumed (the attribute is private, so not in typeshed, but stable).
    buffered: bytearray = reader.stream._buffer  # type: ignore[attr-defined]
    if len(buffered):
        return True
    sock = writer.get_extra_info("socket")
    if sock is None or sock.fileno() < 0:
        return False
    readable, _, _ = select.select([sock.fileno()], [], [], 0)
    return bool(readable)


class _Reader:
    """Buffered reads from a stream, for a parser that needs exact line boundaries."""

    def __init__(self, stream: asyncio.StreamReader) -> None:
        self.stream = stream
        self.buffer = bytearray()

    async def fill(self) -> None:
        data = await self.stream.read(READ_SIZE)
        if not data:
            raise _EndOfStream
        self.buffer += data

    async def line(self) -> bytes:
        start = 0
        while True:
            end = self.buffer.find(b"\n", start)
            if end >= 0:
                # A lone LF is an error here, not a line end: the client must send CRLF.
                if end == 0 or self.buffer[end - 1] != ord("\r"):
                    raise RequestParseError(f"bare LF after {bytes(self.buffer[:end])[:80]!r}")
                line = bytes(self.buffer[: end - 1])
                del self.buffer[: end + 1]
                if b"\r" in line:
                    raise RequestParseError(f"bare CR in line {line[:80]!r}")
                return line
            if len(self.buffer) > MAX_LINE:
                raise RequestParseError(f"line longer than {MAX_LINE} bytes")
            start = len(self.buffer)
            await self.fill()

    async def exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            await self.fill()
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data


def _parse_header_line(line: bytes) -> tuple[str, str]:
    if line[:1] in (b" ", b"\t"):
        raise RequestParseError("obsolete line folding")
    name, colon, value = line.partition(b":")
    if not colon or not _TOKEN.fullmatch(name):
        raise RequestParseError(f"malformed header line {line[:80]!r}")
    value = value.strip(b" \t")
    if _BAD_VALUE_CHARS.search(value):
        raise RequestParseError(f"control character in header {name!r}")
    return name.decode("ascii"), value.decode("latin-1")


async def _read_fields(reader: _Reader, limit: int) -> list[tuple[str, str]]:
    fields: list[tuple[str, str]] = []
    while True:
        line = await reader.line()
        if not line:
            return fields
        if len(fields) >= limit:
            raise RequestParseError(f"more than {limit} header fields")
        fields.append(_parse_header_line(line))


# --------------------------------------------------------------------------------------------
# Replies


@dataclass(frozen=True)
class _Send:
    data: bytes


@dataclass(frozen=True)
class _Pause:
    seconds: float


_Step = _Send | _Pause
Ending = Literal["keep", "close", "reset", "stall"]
HeadersArg = Mapping[str, str] | Iterable[tuple[str, str]] | None


def _header_list(headers: HeadersArg) -> tuple[tuple[str, str], ...]:
    if headers is None:
        return ()
    if isinstance(headers, Mapping):
        return tuple(headers.items())
    return tuple(headers)


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _has_header(headers: Sequence[tuple[str, str]], name: str) -> bool:
    return any(key.lower() == name for key, _ in headers)


@dataclass(frozen=True)
class _Head:
    """A status line and headers, rendered when sent, once the request is known (so a
    client's `Connection: close` can be answered in kind)."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    announce_close: bool

    def render(self, request: ReceivedRequest) -> bytes:
        headers = list(self.headers)
        if (self.announce_close or request.wants_close) and not _has_header(
            headers, "connection"
        ):
            headers.append(("Connection", "close"))
        lines = [f"HTTP/1.1 {self.status} {self.reason}"]
        lines += [f"{key}: {value}" for key, value in headers]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@dataclass(frozen=True)
class Reply:
    """What the server does with one request: the bytes to send, how, and then what.

    Build one with a constructor (`ok`, `chunked`, `raw`, `drip`, `stall`, `reset`,
    `close_without_response`, `reset_mid_body`, `close_mid_body`) and adjust it with the
    modifiers (`delay`, `dripped`, `close_after`, `reset_after`, `stall_after`,
    `send_after_response`), which return a new Reply.

    Endings: "keep" reads the next request (unless the client asked to close), "close" sends
    FIN, "reset" sends RST (SO_LINGER 0, after everything written reached the client),
    "stall" keeps the connection open, reading and discarding, until the client closes or
    the server stops.
    """

    head: _Head | None = None
    body: tuple[_Step, ...] = ()
    pause_before: float = 0.0
    drip_interval: float | None = None
    extra: bytes = b""
    ending: Ending = "keep"

    # -- constructors --------------------------------------------------------------------

    @classmethod
    def ok(
        cls,
        body: bytes = b"hello",
        headers: HeadersArg = None,
        status: int = 200,
        *,
        reason: str | None = None,
        keep_alive: bool = True,
    ) -> Reply:
        """A complete response framed by Content-Length (unless `headers` sets one, or the
        status forbids a body). `keep_alive=False` announces `Connection: close` and closes
        with FIN; for an unannounced close use `.close_after()`."""
        header_list = _header_list(headers)
        no_body = status < 200 or status in (204, 304)
        if no_body and body:
            raise ValueError(f"status {status} cannot have a body")
        if not no_body and not _has_header(header_list, "content-length"):
            header_list += (("Content-Length", str(len(body))),)
        head = _Head(status, reason or _reason(status), header_list, not keep_alive)
        return cls(
            head=head,
            body=(_Send(body),) if body else (),
            ending="keep" if keep_alive else "close",
        )

    @classmethod
    def chunked(
        cls,
        chunks: Sequence[bytes] = (b"hello",),
        headers: HeadersArg = None,
        status: int = 200,
        *,
        trailers: HeadersArg = None,
        interval: float = 0.0,
        keep_alive: bool = True,
    ) -> Reply:
        """A response with `Transfer-Encoding: chunked`, one chunk per item of `chunks`,
        with `interval` seconds between chunks (for streaming tests)."""
        if any(not chunk for chunk in chunks):
            raise ValueError("an empty chunk would end the body; leave it out")
        header_list = (*_header_list(headers), ("Transfer-Encoding", "chunked"))
        head = _Head(status, _reason(status), header_list, not keep_alive)
        steps: list[_Step] = []
        for index, chunk in enumerate(chunks):
            if index and interval:
                steps.append(_Pause(interval))
            steps.append(_Send(b"%x\r\n" % len(chunk) + chunk + b"\r\n"))
        if interval and chunks:
            steps.append(_Pause(interval))
        trailer_bytes = b"".join(
            f"{key}: {value}\r\n".encode("latin-1") for key, value in _header_list(trailers)
        )
        steps.append(_Send(b"0\r\n" + trailer_bytes + b"\r\n"))
        return cls(head=head, body=tuple(steps), ending="keep" if keep_alive else "close")

    @classmethod
    def raw(cls, data: bytes) -> Reply:
        """Exactly `data`, nothing added; the connection then stays open for the next
        request (chain `.close_after()` etc. to end it)."""
        return cls(body=(_Send(data),))

    @classmethod
    def drip(cls, data: bytes, interval: float) -> Reply:
        """Exactly `data`, one byte per write, `interval` seconds apart."""
        return cls(body=(_Send(data),), drip_interval=interval)

    @classmethod
    def stall(cls) -> Reply:
        """Never respond; hold the connection open until the client closes it or the
        server stops."""
        return cls(ending="stall")

    @classmethod
    def reset(cls) -> Reply:
        """No response: RST right away."""
        return cls(ending="reset")

    @classmethod
    def close_without_response(cls) -> Reply:
        """No response: FIN right away (the client reads EOF)."""
        return cls(ending="close")

    @classmethod
    def reset_mid_body(
        cls, body: bytes = b"x" * 1000, sent: int | None = None, headers: HeadersArg = None
    ) -> Reply:
        """Head with Content-Length of `body`, the first `sent` bytes (default: half), RST."""
        return cls._partial(body, sent, headers, "reset")

    @classmethod
    def close_mid_body(
        cls, body: bytes = b"x" * 1000, sent: int | None = None, headers: HeadersArg = None
    ) -> Reply:
        """Head with Content-Length of `body`, the first `sent` bytes (default: half), FIN:
        a truncated body."""
        return cls._partial(body, sent, headers, "close")

    @classmethod
    def _partial(
        cls, body: bytes, sent: int | None, headers: HeadersArg, ending: Ending
    ) -> Reply:
        cut = len(body) // 2 if sent is None else sent
        if not 0 <= cut < len(body):
            raise ValueError("sent must be smaller than the body")
        full = cls.ok(body, headers)
        return replace(full, body=(_Send(body[:cut]),) if cut else (), ending=ending)

    # -- modifiers -----------------------------------------------------------------------

    def delay(self, seconds: float) -> Reply:
        """Wait `seconds` before sending anything."""
        return replace(self, pause_before=self.pause_before + seconds)

    def dripped(self, interval: float) -> Reply:
        """Send every byte (head included) in its own write, `interval` seconds apart."""
        return replace(self, drip_interval=interval)

    def close_after(self) -> Reply:
        """FIN after sending, without announcing it (no `Connection: close`)."""
        return replace(self, ending="close")

    def reset_after(self) -> Reply:
        """RST after sending (everything sent reaches the client first)."""
        return replace(self, ending="reset")

    def stall_after(self) -> Reply:
        """After sending, hold the connection without reading further requests."""
        return replace(self, ending="stall")

    def send_after_response(self, data: bytes) -> Reply:
        """Unsolicited bytes right after the response (what a stale pooled connection may
        hold when the client next uses it)."""
        return replace(self, extra=self.extra + data)


Handler = Callable[[ReceivedRequest], Reply | Awaitable[Reply]]


def hello_handler(request: ReceivedRequest) -> Reply:
    """200 `hello` to everything."""
    return Reply.ok(b"hello", {"Content-Type": "text/plain"})


def echo_handler(request: ReceivedRequest) -> Reply:
    """A JSON description of the request; `X-Request-Id` is echoed back as a header."""
    description = {
        "method": request.method,
        "target": request.target,
        "path": request.path,
        "query": request.query,
        "version": request.version,
        "headers": [list(pair) for pair in request.headers],
        "body_length": len(request.body),
        "chunked": request.chunked,
        "connection_index": request.connection_index,
        "request_index": request.request_index,
    }
    headers = [("Content-Type", "application/json")]
    request_id = request.get("x-request-id")
    if request_id is not None:
        headers.append(("X-Request-Id", request_id))
    return Reply.ok(json.dumps(description).encode(), headers)


def in_sequence(*replies: Reply) -> Handler:
    """A handler answering the n-th request (counted over all connections) with
    `replies[n]`, and every later one with the last reply."""
    if not replies:
        raise ValueError("at least one reply is needed")
    lock = threading.Lock()
    position = 0

    def handler(request: ReceivedRequest) -> Reply:
        nonlocal position
        with lock:
            reply = replies[min(position, len(replies) - 1)]
            position += 1
        return reply

    return handler


# --------------------------------------------------------------------------------------------
# The server


@dataclass(frozen=True)
class ConnectionRecord:
    """One accepted connection, as seen by the server (times are `time.monotonic()`)."""

    index: int
    peer: tuple[str, int]
    opened_at: float
    closed_at: float | None = None
    requests: int = 0  # requests parsed on this connection (and handed to the handler)
    # "client": the client closed or reset first; "server": a reply, the idle limit or a
    # protocol error ended it; "stop": the server was stopped; None: still open.
    closed_by: Literal["client", "server", "stop"] | None = None


@dataclass(frozen=True)
class Counters:
    accepted: int
    active: int
    max_active: int
    requests: int
    closed_by_client: int


class ServerHandlerError(AssertionError):
    """A handler raised: reported when the server stops, so the test fails visibly."""


class ScriptedServer:
    """An HTTP/1.1 server on its own thread and event loop, answering with `handler`.

    Options:
      idle_close_ms / idle_close_with: close a connection on which no request starts within
        that many milliseconds (after accept and after each reply), with "fin" or "rst".
      idle_close_first_ms: the same limit for the first request after accept, if different.
      on_accept: "serve" (default); "deaf" accepts and never reads a byte (for write
        time-outs: the client's writes block once the kernel buffers fill); "stall" accepts,
        reads and discards input, and never writes (for
        handshake and read time-outs); "close" / "reset" end each connection at once.
      tls: serve HTTPS with these certificates (or this server context).
      send_continue: answer `Expect: 100-continue` with an interim 100 response.
      raise_handler_errors: `stop()` raises ServerHandlerError if a handler raised.
      keep_requests: how many of the latest parsed requests `received` keeps.
    """

    def __init__(
        self,
        handler: Handler = hello_handler,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        idle_close_ms: int | None = None,
        idle_close_with: Literal["fin", "rst"] = "fin",
        idle_close_first_ms: int | None = None,
        on_accept: Literal["serve", "deaf", "stall", "close", "reset"] = "serve",
        tls: CertBundle | ssl.SSLContext | None = None,
        send_continue: bool = True,
        backlog: int = 128,
        raise_handler_errors: bool = True,
        keep_requests: int = 10_000,
        _notifier: _Notifier | None = None,
    ) -> None:
        self.handler = handler
        self.host = host
        self._requested_port = port
        self.idle_close_ms = idle_close_ms
        self.idle_close_with = idle_close_with
        self.idle_close_first_ms = idle_close_first_ms
        self.on_accept = on_accept
        self.send_continue = send_continue
        self.backlog = backlog
        self.raise_handler_errors = raise_handler_errors
        self._tls: ssl.SSLContext | None = (
            tls.server_context() if isinstance(tls, CertBundle) else tls
        )
        self.port = 0
        self._notifier = _notifier or _Notifier()
        self._lock = self._notifier.lock
        self._accepted = 0
        self._active = 0
        self._max_active = 0
        self._requests = 0
        self._closed_by_client = 0
        self._records: list[ConnectionRecord] = []
        # Bounded so a long test does not hoard every body it ever received.
        self._received: deque[ReceivedRequest] = deque(maxlen=keep_requests)
        self._protocol_errors: list[str] = []
        self._handler_errors: list[str] = []
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._started = threading.Event()
        self._start_error: BaseException | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def __enter__(self) -> ScriptedServer:
        self.start()
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        # A handler error must not mask the exception already failing the test.
        self.stop(raise_handler_errors=None if exc_type is None else False)

    def start(self, timeout: float = 10.0) -> ScriptedServer:
        if self._thread is not None:
            raise RuntimeError("already started")
        self._thread = threading.Thread(
            target=self._run, name=f"scripted-server-{self.host}", daemon=True
        )
        self._thread.start()
        if not self._started.wait(timeout):
            raise RuntimeError(f"server on {self.host} did not start within {timeout}s")
        if self._start_error is not None:
            self._thread.join(timeout)
            raise RuntimeError(f"server on {self.host} failed to start") from self._start_error
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(
                        self._serve,
                        self.host,
                        self._requested_port,
                        ssl=self._tls,
                        backlog=self.backlog,
                    )
                )
                self.port = self._server.sockets[0].getsockname()[1]
            except BaseException as exc:
                self._start_error = exc
                return
            finally:
                self._started.set()
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            # Resolving a host name (not a literal address) uses the default executor.
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    def stop(self, timeout: float = 5.0, *, raise_handler_errors: bool | None = None) -> None:
        """Stop accepting, close every connection, end the thread (each step bounded)."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None or self._stopped:
            return
        self._stopped = True
        if thread.is_alive():
            future = asyncio.run_coroutine_threadsafe(self._shutdown(timeout), loop)
            try:
                future.result(timeout + 1)
            except concurrent.futures.TimeoutError:
                future.cancel()
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
            if thread.is_alive():
                raise RuntimeError(f"server thread on {self.host} did not stop in {timeout}s")
        if raise_handler_errors is None:
            raise_handler_errors = self.raise_handler_errors
        errors = self.handler_errors
        if raise_handler_errors and errors:
            raise ServerHandlerError(
                f"{len(errors)} handler error(s); the first:\n{errors[0]}"
            )

    async def _shutdown(self, timeout: float) -> None:
        self._stopping = True
        assert self._server is not None
        self._server.close()
        current = asyncio.current_task()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        grace_over = loop.time() + 0.2
        while True:
            # Our connection tasks close their transports when cancelled. Anything else
            # (asyncio's own accept and TLS-handshake tasks) gets a moment to hand over a
            # connection, which then sees `_stopping` and closes itself, and is cancelled
            # after that.
            for task in list(self._tasks):
                task.cancel()
            others = [task for task in asyncio.all_tasks() if task is not current]
            if not others or loop.time() >= deadline:
                break
            if loop.time() >= grace_over:
                for task in others:
                    task.cancel()
            await asyncio.wait(others, timeout=0.05)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), max(0.1, deadline - loop.time()))

    # -- addresses -----------------------------------------------------------------------

    @property
    def scheme(self) -> str:
        return "https" if self._tls is not None else "http"

    @property
    def origin(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    def url(self, path: str = "/") -> str:
        return self.origin + path

    # -- counters (thread-safe) ----------------------------------------------------------

    @property
    def accepted(self) -> int:
        with self._lock:
            return self._accepted

    @property
    def active(self) -> int:
        with self._lock:
            return self._active

    @property
    def max_active(self) -> int:
        with self._lock:
            return self._max_active

    @property
    def requests(self) -> int:
        with self._lock:
            return self._requests

    @property
    def closed_by_client(self) -> int:
        with self._lock:
            return self._closed_by_client

    @property
    def connections(self) -> list[ConnectionRecord]:
        with self._lock:
            return list(self._records)

    @property
    def received(self) -> list[ReceivedRequest]:
        """The parsed requests, oldest first (the latest 10 000)."""
        with self._lock:
            return list(self._received)

    @property
    def protocol_errors(self) -> list[str]:
        with self._lock:
            return list(self._protocol_errors)

    @property
    def handler_errors(self) -> list[str]:
        with self._lock:
            return list(self._handler_errors)

    def counters(self) -> Counters:
        with self._lock:
            return Counters(
                accepted=self._accepted,
                active=self._active,
                max_active=self._max_active,
                requests=self._requests,
                closed_by_client=self._closed_by_client,
            )

    def wait_for(
        self, predicate: Callable[[ScriptedServer], bool], timeout: float = 5.0
    ) -> None:
        """Block until `predicate(server)` holds; TimeoutError (with the counters) if not."""
        if not self._notifier.wait(lambda: predicate(self), timeout):
            raise TimeoutError(f"condition not reached within {timeout}s: {self.counters()}")

    async def wait_for_async(
        self, predicate: Callable[[ScriptedServer], bool], timeout: float = 5.0
    ) -> None:
        """`wait_for` for async tests: waits without blocking the test's loop."""
        if not await self._notifier.wait_async(lambda: predicate(self), timeout):
            raise TimeoutError(f"condition not reached within {timeout}s: {self.counters()}")

    def _update_record(self, index: int, **changes: Any) -> None:
        self._records[index] = replace(self._records[index], **changes)

    # -- connections ---------------------------------------------------------------------

    async def _serve(self, stream: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        transport = writer.transport
        if self._stopping:
            transport.abort()
            return
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        if self._tls is None:
            # No user-space buffering: drain() returns only once every byte went to the
            # kernel, which makes drips byte-exact and lets resets be timed after the data.
            # (Not over TLS: there, a zero limit leaves drain() waiting forever.)
            transport.set_write_buffer_limits(high=0)
        peer = writer.get_extra_info("peername")
        with self._lock:
            index = len(self._records)
            self._records.append(
                ConnectionRecord(index=index, peer=(peer[0], peer[1]), opened_at=time.monotonic())
            )
            self._accepted += 1
            self._active += 1
            self._max_active = max(self._max_active, self._active)
        self._notifier.notify()
        closed_by: Literal["client", "server", "stop"] = "stop"
        try:
            closed_by = await self._converse(index, _Reader(stream), writer)
        except asyncio.CancelledError:
            # Only `_shutdown` cancels these tasks. The task must not end cancelled: asyncio's
            # stream callback in some Python versions reports that as an error.
            closed_by = "stop"
        except (ConnectionError, _EndOfStream):
            closed_by = "client"
        except Exception:
            # A bug in this module, not in the client: reported like a handler error.
            closed_by = "server"
            with self._lock:
                self._handler_errors.append(traceback.format_exc())
        finally:
            if not transport.is_closing():
                transport.abort()
            with self._lock:
                self._active -= 1
                if closed_by == "client":
                    self._closed_by_client += 1
                self._update_record(index, closed_at=time.monotonic(), closed_by=closed_by)
            self._notifier.notify()
            self._tasks.discard(task)

    async def _converse(
        self, index: int, reader: _Reader, writer: asyncio.StreamWriter
    ) -> Literal["client", "server", "stop"]:
        if self.on_accept == "stall":
            return await self._hold(reader)
        if self.on_accept == "deaf":
            # Read nothing at all: the kernel buffers fill and the client's writes block.
            # Typed as a WriteTransport, but a stream's transport is a full Transport.
            cast(asyncio.Transport, writer.transport).pause_reading()
            await asyncio.Event().wait()  # until the server stops (cancellation)
        if self.on_accept == "close":
            await self._close(writer)
            return "server"
        if self.on_accept == "reset":
            await self._reset(writer)
            return "server"
        request_index = 0
        while True:
            try:
                request = await self._read_request(reader, writer, index, request_index)
            except _Idle:
                if self.idle_close_with == "rst":
                    await self._reset(writer)
                else:
                    await self._close(writer)
                return "server"
            except RequestParseError as exc:
                with self._lock:
                    self._protocol_errors.append(f"connection {index}: {exc}")
                writer.write(
                    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
                await self._close(writer)
                return "server"
            with self._lock:
                self._requests += 1
                self._received.append(request)
                self._update_record(index, requests=request_index + 1)
            self._notifier.notify()
            reply = await self._call_handler(request)
            if reply is None:
                writer.write(
                    b"HTTP/1.1 500 Internal Server Error\r\n"
                    b"Content-Length: 0\r\nConnection: close\r\n\r\n"
                )
                await self._close(writer)
                return "server"
            ending = await self._send(writer, request, reply)
            if ending == "keep" and request.wants_close:
                ending = "close"
            if ending == "close":
                await self._close(writer)
                return "server"
            if ending == "reset":
                await self._reset(writer)
                return "server"
            if ending == "stall":
                return await self._hold(reader)
            request_index += 1

    async def _read_request(
        self, reader: _Reader, writer: asyncio.StreamWriter, index: int, request_index: int
    ) -> ReceivedRequest:
        if not reader.buffer:
            limit = self.idle_close_ms
            if request_index == 0 and self.idle_close_first_ms is not None:
                limit = self.idle_close_first_ms
            if limit is None:
                await reader.fill()
            else:
                try:
                    await asyncio.wait_for(reader.fill(), limit / 1000)
                except asyncio.TimeoutError:
                    # Idle means nothing arrived. On a busy loop the time-out can fire after
                    # a request arrived but before this task ran: serve that one.
                    if not _input_waiting(reader, writer):
                        raise _Idle from None
                    await reader.fill()
        # A client may send a stray CRLF after a body; the RFC says to ignore at least one.
        line = await reader.line()
        for _ in range(4):
            if line:
                break
            line = await reader.line()
        parts = line.split(b" ")
        if (
            len(parts) != 3
            or not _TOKEN.fullmatch(parts[0])
            or not parts[1]
            or _BAD_TARGET_CHARS.search(parts[1])
            or not _VERSION.fullmatch(parts[2])
        ):
            raise RequestParseError(f"malformed request line {line[:120]!r}")
        method, target, version = (part.decode("ascii") for part in parts)
        headers = await _read_fields(reader, MAX_HEADERS)
        partial = ReceivedRequest(
            method, target, version, headers, b"", index, request_index
        )
        transfer_codings = [
            coding.strip().lower()
            for value in partial.get_all("transfer-encoding")
            for coding in value.split(",")
        ]
        lengths = {
            item.strip() for value in partial.get_all("content-length") for item in value.split(",")
        }
        body = b""
        trailers: list[tuple[str, str]] = []
        if transfer_codings:
            if lengths:
                raise RequestParseError("both Transfer-Encoding and Content-Length")
            if version == "HTTP/1.0" or transfer_codings != ["chunked"]:
                raise RequestParseError(f"unsupported Transfer-Encoding {transfer_codings}")
            await self._maybe_continue(partial, reader, writer)
            body, trailers = await self._read_chunked(reader)
        elif lengths:
            if len(lengths) != 1 or not _DIGITS.fullmatch(next(iter(lengths))):
                raise RequestParseError(f"invalid Content-Length {sorted(lengths)}")
            size = int(next(iter(lengths)))
            if size > MAX_BODY:
                raise RequestParseError(f"body of {size} bytes is over the limit")
            if size:
                if len(reader.buffer) < size:
                    await self._maybe_continue(partial, reader, writer)
                body = await reader.exactly(size)
        return replace(partial, body=body, chunked=bool(transfer_codings), trailers=trailers)

    async def _maybe_continue(
        self, request: ReceivedRequest, reader: _Reader, writer: asyncio.StreamWriter
    ) -> None:
        expect = request.get("expect")
        # Only while the client is visibly waiting: once body bytes arrived, it went ahead.
        if (
            self.send_continue
            and expect is not None
            and expect.lower() == "100-continue"
            and not reader.buffer
        ):
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()

    async def _read_chunked(self, reader: _Reader) -> tuple[bytes, list[tuple[str, str]]]:
        body = bytearray()
        while True:
            size_text = (await reader.line()).split(b";", 1)[0].strip(b" \t")
            if not _HEX.fullmatch(size_text):
                raise RequestParseError(f"invalid chunk size {size_text[:40]!r}")
            size = int(size_text, 16)
            if size == 0:
                return bytes(body), await _read_fields(reader, MAX_HEADERS)
            if len(body) + size > MAX_BODY:
                raise RequestParseError("chunked body over the limit")
            body += await reader.exactly(size)
            if await reader.exactly(2) != b"\r\n":
                raise RequestParseError("chunk data not followed by CRLF")

    async def _call_handler(self, request: ReceivedRequest) -> Reply | None:
        try:
            result = self.handler(request)
            if inspect.isawaitable(result):
                result = await result
            if not isinstance(result, Reply):
                raise TypeError(f"handler returned {result!r}, not a Reply")
            return result
        except Exception:
            with self._lock:
                self._handler_errors.append(traceback.format_exc())
            return None

    async def _send(
        self, writer: asyncio.StreamWriter, request: ReceivedRequest, reply: Reply
    ) -> Ending:
        if reply.pause_before:
            await asyncio.sleep(reply.pause_before)
        steps: list[_Step] = []
        if reply.head is not None:
            steps.append(_Send(reply.head.render(request)))
            # A HEAD response carries the GET response's headers but never a body.
            if request.method != "HEAD":
                steps.extend(reply.body)
        else:
            steps.extend(reply.body)
        if reply.extra:
            steps.append(_Send(reply.extra))
        wrote = False
        for step in steps:
            if isinstance(step, _Pause):
                await asyncio.sleep(step.seconds)
            elif reply.drip_interval is None:
                writer.write(step.data)
                await writer.drain()
            else:
                for byte in step.data:
                    if wrote:
                        await asyncio.sleep(reply.drip_interval)
                    writer.write(bytes((byte,)))
                    await writer.drain()
                    wrote = True
        return reply.ending

    async def _hold(self, reader: _Reader) -> Literal["client"]:
        """Keep the connection open, discarding input, until the client closes it (or the
        server stops: cancellation)."""
        while True:
            reader.buffer.clear()
            await reader.fill()

    async def _close(self, writer: asyncio.StreamWriter) -> None:
        """FIN, after the transport has handed everything to the kernel."""
        writer.close()
        with contextlib.suppress(ConnectionError, asyncio.TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), 5)
        # Still not closed after 5 s: the client does not read; give up on the data.
        writer.transport.abort()

    async def _reset(self, writer: asyncio.StreamWriter) -> None:
        """RST: linger 0 makes close() abort the connection. Data still buffered (by asyncio
        or in the kernel) would be dropped, so first wait (bounded) until the client
        acknowledged all of it."""
        transport = writer.transport
        sock = writer.get_extra_info("socket")
        if sock is None:
            transport.abort()
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 2.0
        # Buffer and kernel state have no event to wait on, hence polling (bounded; on
        # loopback the acknowledgement arrives within microseconds unless the client stopped
        # reading).
        while loop.time() < deadline and (  # noqa: ASYNC110
            transport.get_write_buffer_size() > 0 or _unacknowledged(sock.fileno()) > 0
        ):
            await asyncio.sleep(0.001)
        if sock.fileno() >= 0:  # the client may have closed it meanwhile
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()


def _unacknowledged(fd: int) -> int:
    """Bytes in the socket's send queue not yet acknowledged by the peer (SIOCOUTQ)."""
    if fd < 0:  # closed
        return 0
    try:
        result = fcntl.ioctl(fd, termios.TIOCOUTQ, struct.pack("i", 0))
    except OSError:
        return 0
    return int(struct.unpack("i", result)[0])


# --------------------------------------------------------------------------------------------
# Several origins


class MultiOriginServer:
    """The same handler on several loopback addresses: distinct origins, one server each.

    `servers[i]` has its own counters; the properties here are totals, and `wait_for` wakes
    on a change at any of them.
    """

    def __init__(
        self,
        handler: Handler = hello_handler,
        hosts: Sequence[str] = DEFAULT_HOSTS,
        **options: Any,
    ) -> None:
        self._notifier = _Notifier()
        self.servers = [
            ScriptedServer(handler, host, _notifier=self._notifier, **options)
            for host in hosts
        ]

    def __enter__(self) -> MultiOriginServer:
        self.start()
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.stop(raise_handler_errors=None if exc_type is None else False)

    def __getitem__(self, index: int) -> ScriptedServer:
        return self.servers[index]

    def __len__(self) -> int:
        return len(self.servers)

    def __iter__(self) -> Iterator[ScriptedServer]:
        return iter(self.servers)

    def start(self) -> MultiOriginServer:
        try:
            for server in self.servers:
                server.start()
        except BaseException:
            self.stop(raise_handler_errors=False)
            raise
        return self

    def stop(self, *, raise_handler_errors: bool | None = None) -> None:
        errors: list[BaseException] = []
        for server in self.servers:
            try:
                server.stop(raise_handler_errors=raise_handler_errors)
            except Exception as exc:  # stop every server before reporting
                errors.append(exc)
        if errors:
            raise errors[0]

    def url(self, path: str = "/", index: int = 0) -> str:
        return self.servers[index].url(path)

    @property
    def origins(self) -> list[str]:
        return [server.origin for server in self.servers]

    @property
    def accepted(self) -> int:
        return sum(server.accepted for server in self.servers)

    @property
    def active(self) -> int:
        return sum(server.active for server in self.servers)

    @property
    def requests(self) -> int:
        return sum(server.requests for server in self.servers)

    def wait_for(
        self, predicate: Callable[[MultiOriginServer], bool], timeout: float = 5.0
    ) -> None:
        if not self._notifier.wait(lambda: predicate(self), timeout):
            raise TimeoutError(
                f"condition not reached within {timeout}s: "
                f"{[server.counters() for server in self.servers]}"
            )

    async def wait_for_async(
        self, predicate: Callable[[MultiOriginServer], bool], timeout: float = 5.0
    ) -> None:
        if not await self._notifier.wait_async(lambda: predicate(self), timeout):
            raise TimeoutError(
                f"condition not reached within {timeout}s: "
                f"{[server.counters() for server in self.servers]}"
            )


class ServerFactory:
    """Starts scripted servers for one test (the `scripted_server` fixture) and stops them
    all at the end, reporting the first error (a handler that raised) after stopping all."""

    def __init__(self) -> None:
        self._started: list[ScriptedServer | MultiOriginServer] = []

    def __call__(
        self, handler: Handler = hello_handler, host: str = "127.0.0.1", **options: Any
    ) -> ScriptedServer:
        server = ScriptedServer(handler, host, **options)
        server.start()
        self._started.append(server)
        return server

    def multi(
        self, handler: Handler = hello_handler, hosts: Sequence[str] = DEFAULT_HOSTS,
        **options: Any,
    ) -> MultiOriginServer:
        servers = MultiOriginServer(handler, hosts, **options)
        servers.start()
        self._started.append(servers)
        return servers

    def stop_all(self) -> None:
        errors: list[Exception] = []
        while self._started:
            try:
                self._started.pop().stop()
            except Exception as exc:  # stop every server before reporting
                errors.append(exc)
        if errors:
            raise errors[0]


# --------------------------------------------------------------------------------------------
# Listeners that do not serve


@dataclass
class Blackhole:
    """A loopback address where TCP connects hang (see `blackhole_listener`)."""

    host: str
    port: int
    _sockets: list[socket.socket]

    def url(self, path: str = "/") -> str:
        return f"http://{self.host}:{self.port}{path}"

    def close(self) -> None:
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()


@contextlib.contextmanager
def blackhole_listener(host: str = "127.0.0.1", probe_timeout: float = 0.05) -> Iterator[Blackhole]:
    """A listening socket whose accept queue is full, so new connects hang.

    Linux completes handshakes for a listening socket only while its accept queue has room;
    once full, it drops incoming SYNs. A client's connect() then stays pending (the kernel
    retransmits the SYN after 1 s, 3 s, 7 s, ...), and what the client observes is its own
    connect time-out, never a refusal or a reset. The queue (backlog 0 allows one connection)
    is filled with connections that are never accepted, and the fill is checked by a probe
    connect that must not complete.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sockets = [listener]
    try:
        listener.bind((host, 0))
        listener.listen(0)
        address = listener.getsockname()
        for _ in range(8):
            probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            probe.setblocking(False)
            probe.connect_ex(address)
            if not _connects_within(probe, probe_timeout):
                probe.close()  # a pending connect: the queue is full
                break
            sockets.append(probe)  # it completed: it now takes a place in the queue
        else:
            raise RuntimeError("could not fill the accept queue of a loopback listener")
        hole = Blackhole(host, address[1], sockets)
        yield hole
    finally:
        for sock in sockets:
            sock.close()


def _connects_within(sock: socket.socket, timeout: float) -> bool:
    _, writable, _ = select.select([], [sock], [], timeout)
    if not writable:
        return False
    error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if error:
        raise OSError(error, "connect to a loopback listener failed")
    return True


@dataclass
class RefusingPort:
    """A loopback port with a socket bound but not listening: connects are refused (RST)."""

    host: str
    port: int

    def url(self, path: str = "/") -> str:
        return f"http://{self.host}:{self.port}{path}"


@contextlib.contextmanager
def refusing_port(host: str = "127.0.0.1") -> Iterator[RefusingPort]:
    """Keeps the port bound for the duration, so no other process can start listening on it
    and turn an expected ECONNREFUSED into a surprise answer."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        yield RefusingPort(host, sock.getsockname()[1])
