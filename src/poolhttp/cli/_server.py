"""A small, fast HTTP/1.1 server on loopback for `poolhttp demo`, the tests and the benchmark.

Pure asyncio (an `asyncio.Protocol`, no framework), keep-alive, one request at a time per
connection. The response is chosen by the query string, so any path works:

    ?status=404     answer with that status (200-599; 204 and 304 get no body)
    ?delay=0.05     wait that many seconds (at most 30) before answering
    ?size=1000      body of that many bytes (at most 16 MiB); otherwise a one-line body
    ?close=1        drop the connection without answering
    /echo           a JSON body describing the request (method, target, headers, body size)

It counts requests in flight per listening address (`ServerStats`), which is how the tests
check the fetcher's concurrency bounds from the server's side.

Run on its own, it prints one JSON line `{"origins": [...]}` and serves until its standard
input closes, so a parent that dies (even by SIGKILL) never leaves it running:

    python -m poolhttp.cli._server --hosts 4
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import socket
import sys
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import cast
from urllib.parse import parse_qsl

__all__ = ["LocalServer", "ServerStats", "serve_forever"]

_MAX_HEAD = 64 * 1024
_MAX_BODY = 16 * 1024 * 1024
_MAX_DELAY = 30.0
_REASONS = {200: "OK", 201: "Created", 204: "No Content", 301: "Moved Permanently",
            304: "Not Modified", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
            429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
            503: "Service Unavailable"}


@dataclass
class ServerStats:
    """Requests seen, and requests in flight (received, not yet answered), per origin."""

    requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    per_origin: Counter[str] = field(default_factory=Counter)
    max_per_origin: Counter[str] = field(default_factory=Counter)
    connections: int = 0
    #: Request targets seen, counted, only when the server was asked to record them.
    targets: Counter[str] | None = None

    def begin(self, origin: str, target: str) -> None:
        self.requests += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        now = self.per_origin[origin] + 1
        self.per_origin[origin] = now
        if now > self.max_per_origin[origin]:
            self.max_per_origin[origin] = now
        if self.targets is not None:
            self.targets[target] += 1

    def end(self, origin: str) -> None:
        self.in_flight -= 1
        self.per_origin[origin] -= 1


class _Connection(asyncio.Protocol):
    """One client connection: parse request heads, answer them in order."""

    def __init__(self, server: LocalServer, origin: str) -> None:
        self._server = server
        self._origin = origin
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._busy = False  # a delayed answer is pending: hold further input until it is sent
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        self._server.stats.connections += 1
        self._server.transports.add(self._transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._server.stats.end(self._origin)
        if self._transport is not None:
            self._server.transports.discard(self._transport)
        self._transport = None

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if not self._busy:
            self._process()

    def _process(self) -> None:
        while self._transport is not None and not self._busy:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > _MAX_HEAD:
                    self._reject(431, "request head too large")
                return
            head = bytes(self._buffer[:end]).decode("latin-1")
            lines = head.split("\r\n")
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if "chunked" in headers.get("transfer-encoding", "").lower():
                self._reject(501, "chunked request bodies are not supported")
                return
            try:
                length = int(headers.get("content-length", "0"))
            except ValueError:
                self._reject(400, "bad Content-Length")
                return
            if length > _MAX_BODY:
                self._reject(413, f"request body over {_MAX_BODY} bytes")
                return
            if len(self._buffer) < end + 4 + length:
                return  # the body is still arriving
            del self._buffer[:end + 4 + length]
            parts = lines[0].split(" ")
            if len(parts) != 3:
                self._reject(400, "bad request line")
                return
            self._handle(parts[0], parts[1], headers, length)

    def _handle(self, method: str, target: str, headers: dict[str, str], length: int) -> None:
        path, _, query = target.partition("?")
        params = dict(parse_qsl(query)) if query else {}
        self._server.stats.begin(self._origin, target)
        if params.get("close") == "1":
            self._server.stats.end(self._origin)
            assert self._transport is not None
            self._transport.abort()
            return
        response = _response(method, path, target, params, headers, length)
        keep = headers.get("connection", "").lower() != "close"
        delay = _number(params.get("delay"), 0.0, _MAX_DELAY)
        if delay > 0:
            self._busy = True
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(delay, self._send, response, keep)
        else:
            self._send(response, keep)

    def _send(self, response: bytes, keep: bool) -> None:
        self._timer = None
        self._server.stats.end(self._origin)
        self._busy = False
        transport = self._transport
        if transport is None:
            return
        transport.write(response)
        if not keep:
            transport.close()
            self._transport = None
            return
        if self._buffer:
            self._process()

    def _reject(self, status: int, why: str) -> None:
        body = (why + "\n").encode()
        assert self._transport is not None
        self._transport.write(_head(status, len(body), "text/plain", close=True) + body)
        self._transport.close()
        self._transport = None


def _number(text: str | None, low: float, high: float) -> float:
    if not text:
        return low
    try:
        value = float(text)
    except ValueError:
        return low
    return min(max(value, low), high)


def _head(status: int, length: int | None, content_type: str, *, close: bool = False) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}", "Server: poolhttp-local"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
        lines.append(f"Content-Type: {content_type}")
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _response(method: str, path: str, target: str, params: dict[str, str],
              headers: dict[str, str], length: int) -> bytes:
    status = int(_number(params.get("status"), 200, 599))
    if path == "/echo":
        body = json.dumps({"method": method, "target": target, "headers": headers,
                           "body_size": length}).encode()
        content_type = "application/json"
    else:
        size = int(_number(params.get("size"), -1, _MAX_BODY))
        line = f"{method} {target}\n".encode("latin-1")
        body = line if size < 0 else (line * (size // max(len(line), 1) + 1))[:size]
        content_type = "text/plain"
    if status in (204, 304):
        return _head(status, None, "")
    if method == "HEAD":
        return _head(status, len(body), content_type)
    return _head(status, len(body), content_type) + body


class LocalServer:
    """Listen on one or more loopback addresses, in the running event loop.

    >>> async with LocalServer(hosts=2) as server:                      # doctest: +SKIP
    ...     server.origins  # ['http://127.0.0.1:40123', 'http://127.0.0.2:40124']
    """

    def __init__(self, hosts: int = 1, *, record_targets: bool = False) -> None:
        if not 1 <= hosts <= 250:
            raise ValueError(f"hosts must be between 1 and 250, got {hosts}")
        self.hosts = hosts
        self.stats = ServerStats(targets=Counter() if record_targets else None)
        self.origins: list[str] = []
        self.transports: set[asyncio.Transport] = set()
        self._servers: list[asyncio.AbstractServer] = []

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for index in range(self.hosts):
            sock = _bind(index)
            port = sock.getsockname()[1]
            origin = f"http://{sock.getsockname()[0]}:{port}"

            def factory(origin: str = origin) -> _Connection:
                return _Connection(self, origin)

            server = await loop.create_server(factory, sock=sock, backlog=1024)
            self._servers.append(server)
            self.origins.append(origin)

    async def aclose(self) -> None:
        for server in self._servers:
            server.close()
        for transport in list(self.transports):
            transport.abort()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()

    async def __aenter__(self) -> LocalServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _bind(index: int) -> socket.socket:
    """A listening socket on 127.0.0.(index+1); on 127.0.0.1 if that address is not local
    (some systems only configure 127.0.0.1), where the port alone tells origins apart."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((f"127.0.0.{index + 1}", 0))
        except OSError:
            sock.bind(("127.0.0.1", 0))
        sock.listen(1024)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


async def serve_forever(hosts: int) -> None:
    """Serve until standard input reaches end of file or SIGTERM/SIGINT arrives."""
    loop = asyncio.get_running_loop()
    stop: asyncio.Future[None] = loop.create_future()

    def finish() -> None:
        if not stop.done():
            stop.set_result(None)

    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, finish)
    def watch_stdin() -> None:
        # A daemon thread: it may stay blocked in read() without holding up the exit.
        with contextlib.suppress(OSError, ValueError, AttributeError):
            while sys.stdin.buffer.read(65536):
                pass
        with contextlib.suppress(RuntimeError):  # the loop may be closed already
            loop.call_soon_threadsafe(finish)

    async with LocalServer(hosts) as server:
        print(json.dumps({"origins": server.origins}), flush=True)
        threading.Thread(target=watch_stdin, daemon=True).start()
        await stop


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m poolhttp.cli._server",
                                     description="Local HTTP server for demos and tests.")
    parser.add_argument("--hosts", type=int, default=1, help="loopback addresses to serve on")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    args = parser.parse_args(argv)
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(serve_forever(args.hosts))
    else:
        asyncio.run(serve_forever(args.hosts))


if __name__ == "__main__":
    main()
