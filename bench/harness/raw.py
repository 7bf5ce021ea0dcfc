"""The raw floor: HTTP/1.1 with no client at all, the most a Python program can get through.

Each connection sends one fixed, pre-encoded request, feeds what comes back to httptools, and on
the end of a response counts it and sends the request again. No URL parsing, no header building,
no pool, no response objects. The async version chains requests inside the protocol's callbacks
(no future per request); the blocking version is sendall + recv_into in a loop, one connection
per thread. Connection i goes to origin i % hosts, so the 20-origin workload gets a fixed share
of connections per origin rather than a per-request round-robin.

Over TLS the floor resumes sessions: when a server closes a connection after its response (the
keep-alive-off workloads), the session of that connection is kept and offered to the next
handshake (blocking: `wrap_socket(session=...)`; asyncio and uvloop: through the context's
`sslobject_class`, as asyncio's `create_connection` takes no session), so that the floor is the
cheapest handshake too, not only the cheapest request.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import ssl
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import httptools

from .catalog import POST_PAYLOAD
from .drivers import WARMUP_LIMIT, Tally, join_threads, result
from .peers import TIMEOUT


def encode_request(job: dict[str, Any], url: str) -> bytes:
    parts = urlsplit(url)
    head = [f"{job['method']} {parts.path} HTTP/1.1", f"Host: {parts.netloc}",
            "User-Agent: raw-floor", "Accept: */*"]
    body = b""
    if job["method"] == "POST":
        body = json.dumps(POST_PAYLOAD).encode()
        head += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(head) + "\r\n\r\n").encode("ascii") + body


class _Resumption:
    """The last TLS session a connection of the floor ended with, offered to the next one."""

    session: ssl.SSLSession | None = None


class _ResumingSSLObject(ssl.SSLObject):
    """asyncio's and uvloop's TLS layers make their SSLObject through the context's
    `sslobject_class`: this one starts every client handshake from the kept session."""

    @classmethod
    def _create(cls, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO,
                server_side: bool = False, server_hostname: str | None = None,
                session: ssl.SSLSession | None = None, context: ssl.SSLContext | None = None
                ) -> ssl.SSLObject:
        if session is None and not server_side:
            session = _Resumption.session
        created: ssl.SSLObject = super()._create(  # type: ignore[misc]
            incoming, outgoing, server_side=server_side, server_hostname=server_hostname,
            session=session, context=context)
        return created


def _tls_context(job: dict[str, Any]) -> ssl.SSLContext | None:
    if not job["urls"][0].startswith("https:"):
        return None
    context = ssl.create_default_context(cafile=job["ca"])
    context.sslobject_class = _ResumingSSLObject
    _Resumption.session = None
    return context


class _Phase:
    """The request budget of one phase (warm-up or measured), shared by the connections."""

    __slots__ = ("deadline", "expect", "left", "tally")

    def __init__(self, count: int, deadline: float, expect: int) -> None:
        self.left = count
        self.deadline = deadline
        self.expect = expect
        self.tally = Tally()

    def take(self) -> bool:
        if self.left > 0 and time.perf_counter() < self.deadline:
            self.left -= 1
            return True
        return False


class _RawProtocol(asyncio.Protocol):
    def __init__(self, request: bytes) -> None:
        self.request = request
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.phase: _Phase | None = None
        self.stopped: asyncio.Future[None] | None = None
        self.pending = False
        self.closed = False
        self.nbytes = 0

    # -- driven by the slot ----------------------------------------------------------------
    def start(self, phase: _Phase) -> asyncio.Future[None]:
        """Send one request (its ticket is already taken); then keep sending while the phase
        has tickets. The future completes when the phase runs dry or the connection closes."""
        self.phase = phase
        self.stopped = asyncio.get_running_loop().create_future()
        self._send()
        return self.stopped

    def _send(self) -> None:
        assert self.transport is not None
        self.pending = True
        self.nbytes = 0
        self.transport.write(self.request)

    def _stop(self) -> None:
        if self.stopped is not None and not self.stopped.done():
            self.stopped.set_result(None)

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, hence the cast-free store.
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if self.phase is not None:
                self.phase.tally.bad(exc)
            self.pending = False
            if self.transport is not None:
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.pending and self.phase is not None:
            self.phase.tally.bad(exc or ConnectionError("connection closed before a response"))
        self.pending = False
        self._stop()

    # -- httptools callbacks ---------------------------------------------------------------
    def on_body(self, body: bytes) -> None:
        self.nbytes += len(body)

    def on_message_complete(self) -> None:
        self.pending = False
        phase = self.phase
        assert phase is not None
        assert self.transport is not None
        phase.tally.good(self.parser.get_status_code(), self.nbytes, phase.expect)
        if not self.parser.should_keep_alive():
            ssl_object = self.transport.get_extra_info("ssl_object")
            if ssl_object is not None:
                _Resumption.session = ssl_object.session  # for the next connection
            self.transport.close()  # connection_lost then ends this run
        elif phase.take():
            self._send()
        else:
            self._stop()


async def _raw_async(job: dict[str, Any]) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    urls: list[str] = job["urls"]
    width: int = job["concurrency"]
    tls = _tls_context(job)
    slots: list[_RawProtocol | None] = [None] * width

    async def slot(k: int, phase: _Phase) -> None:
        url = urls[k % len(urls)]
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or (443 if tls else 80)
        request = encode_request(job, url)
        while phase.take():
            proto = slots[k]
            if proto is None or proto.closed:
                try:
                    transport, fresh = await asyncio.wait_for(loop.create_connection(
                        lambda: _RawProtocol(request), host, port, ssl=tls,
                        server_hostname=host if tls else None), TIMEOUT)
                except (OSError, asyncio.TimeoutError) as exc:
                    phase.tally.bad(exc)
                    continue
                # uvloop may run connection_made after create_connection has returned.
                fresh.transport = transport
                slots[k] = proto = fresh
            try:
                # A response must come within TIMEOUT; this bounds a whole chain of them.
                await asyncio.wait_for(proto.start(phase), job["time_limit"] + TIMEOUT)
            except asyncio.TimeoutError:
                phase.tally.bad(f"no response within {TIMEOUT:g} s")
                if proto.transport is not None:
                    proto.transport.close()
                slots[k] = None

    # The warm-up is bounded by the connect and response time-outs; the timed phase by its limit.
    warm = _Phase(width if job["warmup"] else 0, float("inf"), job["expect_len"])
    await asyncio.gather(*(slot(k, warm) for k in range(width)))
    started = time.perf_counter()
    measured = _Phase(job["requests"], started + job["time_limit"], job["expect_len"])
    await asyncio.gather(*(slot(k, measured) for k in range(width)))
    seconds = time.perf_counter() - started
    for proto in slots:
        if proto is not None and proto.transport is not None:
            proto.transport.close()
    await asyncio.sleep(0)  # let the transports finish closing
    return result(measured.tally, warm.tally, seconds, measured.left > 0)


def run_raw_async(job: dict[str, Any], loop_name: str) -> dict[str, Any]:
    if loop_name == "uvloop":
        import uvloop

        answer: dict[str, Any] = uvloop.run(_raw_async(job))
        return answer
    return asyncio.run(_raw_async(job))


# -- blocking --------------------------------------------------------------------------------
class _SyncParse:
    """httptools callbacks for one blocking connection."""

    __slots__ = ("complete", "keep_alive", "nbytes", "parser", "status")

    def __init__(self) -> None:
        self.complete = False
        self.keep_alive = False
        self.nbytes = 0
        self.status = 0
        self.parser: Any = None

    def on_body(self, body: bytes) -> None:
        self.nbytes += len(body)

    def on_message_complete(self) -> None:
        # Read now: once feed_data returns, the parser is already reset for the next message.
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()
        self.complete = True


def run_raw_threads(job: dict[str, Any]) -> dict[str, Any]:
    urls: list[str] = job["urls"]
    width: int = job["concurrency"]
    total: int = job["requests"]
    expect: int = job["expect_len"]
    limit: float = job["time_limit"]
    tls = _tls_context(job)
    # next() on itertools.count is atomic under the GIL: a lock-free shared request budget.
    tickets = itertools.count()
    gate = threading.Barrier(width + 1)
    warm = [Tally() for _ in range(width)]
    measured = [Tally() for _ in range(width)]

    def take() -> bool:
        return next(tickets) < total

    def body(k: int) -> None:
        url = urls[k % len(urls)]
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        request = encode_request(job, url)
        buf = bytearray(256 * 1024)
        view = memoryview(buf)
        sock: socket.socket | None = None
        cb = _SyncParse()
        parser: Any = None

        def once(tally: Tally) -> None:
            nonlocal sock, parser
            try:
                if sock is None:
                    raw = socket.create_connection((host, port), timeout=TIMEOUT)
                    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    sock = raw if tls is None else tls.wrap_socket(
                        raw, server_hostname=host, session=_Resumption.session)
                    parser = cb.parser = httptools.HttpResponseParser(cb)
                cb.complete = False
                cb.nbytes = 0
                sock.sendall(request)
                while not cb.complete:
                    n = sock.recv_into(buf)
                    if n == 0:
                        raise ConnectionError("connection closed before a response")
                    parser.feed_data(view[:n])
                tally.good(cb.status, cb.nbytes, expect)
                if not cb.keep_alive:
                    if tls is not None:
                        _Resumption.session = sock.session  # type: ignore[attr-defined]
                    sock.close()
                    sock = None
            except Exception as exc:
                tally.bad(exc)
                if sock is not None:
                    sock.close()
                    sock = None

        if job["warmup"]:
            once(warm[k])
        try:
            gate.wait(timeout=WARMUP_LIMIT)
        except threading.BrokenBarrierError:
            return
        tally = measured[k]
        deadline = time.perf_counter() + limit
        while time.perf_counter() < deadline and take():
            once(tally)
        if sock is not None:
            sock.close()

    threads = [threading.Thread(target=body, args=(k,), daemon=True) for k in range(width)]
    for t in threads:
        t.start()
    try:
        gate.wait(timeout=WARMUP_LIMIT)
    except threading.BrokenBarrierError:
        pass
    started = time.perf_counter()
    total_measured, total_warm = Tally(), Tally()
    join_threads(threads, started + limit, total_measured)
    seconds = time.perf_counter() - started
    for tally in measured:
        total_measured.add(tally)
    for tally in warm:
        total_warm.add(tally)
    done = total_measured.ok + total_measured.errors
    return result(total_measured, total_warm, seconds, done < total)
