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

Run on its own it is `poolhttp serve-demo` (`run_serve_demo`): it prints the origins and
serves until SIGINT or SIGTERM, and with --until-stdin-eof also until its standard input
closes, so a parent that dies (even by SIGKILL) never leaves it running. `--json` prints them
as one line `{"origins": [...]}` for a program to read. The older entry point
`python -m poolhttp.cli._server --hosts 4` (the benchmark's) is that with both flags.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import signal
import socket
import sys
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import IO, cast
from urllib.parse import parse_qsl

from ._errors import CliError

__all__ = ["LocalServer", "ServerStats", "run_serve_demo", "serve_forever"]

_MAX_HEAD = 64 * 1024
_MAX_BODY = 16 * 1024 * 1024
_MAX_DELAY = 30.0
_MAX_HOSTS = 250  # 127.0.0.1 to 127.0.0.250
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

    `port`: the port of every origin (see `_bind`); 0, the default, takes a free one for each.
    """

    def __init__(self, hosts: int = 1, *, record_targets: bool = False, port: int = 0) -> None:
        if not 1 <= hosts <= _MAX_HOSTS:
            raise ValueError(f"hosts must be between 1 and {_MAX_HOSTS}, got {hosts}")
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be between 0 and 65535, got {port}")
        self.hosts = hosts
        self.port = port
        self.stats = ServerStats(targets=Counter() if record_targets else None)
        self.origins: list[str] = []
        self.transports: set[asyncio.Transport] = set()
        self._servers: list[asyncio.AbstractServer] = []

    async def start(self) -> None:
        """Listen on every address; if one cannot be had, close those already open."""
        try:
            await self._listen_all()
        except BaseException:
            await self.aclose()
            raise

    async def _listen_all(self) -> None:
        loop = asyncio.get_running_loop()
        for index in range(self.hosts):
            sock = _bind(index, self.port)
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


def _bind(index: int, port: int = 0) -> socket.socket:
    """A listening socket on 127.0.0.(index+1), on `port` (0: a free one); on 127.0.0.1 if
    that address is not local (some systems only configure 127.0.0.1), where the port alone
    tells origins apart: port+index for a given port. A given port that is in use is an error
    (OSError naming the address), never a silent move to another address."""
    try:
        return _listen(f"127.0.0.{index + 1}", port)
    except OSError as exc:
        if index == 0 or (port and exc.errno != errno.EADDRNOTAVAIL):
            raise
    if port and port + index > 65535:
        raise OSError(errno.EADDRNOTAVAIL, f"only 127.0.0.1 is local here, so origin "
                      f"{index + 1} would need port {port + index}, past 65535",
                      f"127.0.0.{index + 1}:{port}")
    return _listen("127.0.0.1", port + index if port else 0)


def _listen(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:  # named, for the message: "[Errno 98] ...: '127.0.0.2:8080'"
            raise OSError(exc.errno, exc.strerror, f"{host}:{port}") from None
        sock.listen(1024)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


async def serve_forever(hosts: int, *, port: int = 0, json_line: bool = False,
                        until_stdin_eof: bool = False, out: IO[str] | None = None) -> None:
    """Serve until SIGTERM/SIGINT arrives (or, with `until_stdin_eof`, standard input reaches
    end of file), after printing the origins to `out` (standard output)."""
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

    server = LocalServer(hosts, port=port)
    try:
        await server.start()
    except OSError as exc:
        raise _cannot_listen(exc) from None
    try:
        _announce(server.origins, json_line, until_stdin_eof, out or sys.stdout)
        if until_stdin_eof:
            threading.Thread(target=watch_stdin, daemon=True).start()
        await stop
    finally:
        await server.aclose()


def _cannot_listen(exc: OSError) -> CliError:
    where = exc.filename or "127.0.0.1"
    if exc.errno == errno.EADDRINUSE:
        return CliError(f"cannot listen on {where}: the port is in use (another server is "
                        "listening there); pick another --port, or leave --port out to take "
                        "free ports")
    return CliError(f"cannot listen on {where}: {exc.strerror or exc}")


def _announce(origins: list[str], json_line: bool, until_stdin_eof: bool, out: IO[str]) -> None:
    if json_line:
        print(json.dumps({"origins": origins}), file=out, flush=True)
        return
    until = "Ctrl-C or the end of standard input" if until_stdin_eof else "Ctrl-C"
    lines = [f"poolhttp serve-demo: serving {len(origins)} demo "
             f"origin{'' if len(origins) == 1 else 's'} until {until}:"]
    lines += [f"  {origin}" for origin in origins]
    lines.append("Any path; ?status=404, ?delay=0.5, ?size=1000, ?close=1 choose the answer, "
                 "/echo describes the request. Try:")
    lines.append(f"  poolhttp get '{origins[0]}/item?status=404&delay=0.5' -v")
    print("\n".join(lines), file=out, flush=True)


def run_serve_demo(args: argparse.Namespace) -> int:
    """`poolhttp serve-demo`: exit status 0 once stopped (being stopped is how it ends)."""
    from ._drive import run_loop

    if args.port > 65535:
        raise CliError(f"--port {args.port}: must be at most 65535")
    if args.hosts > _MAX_HOSTS:
        raise CliError(f"--hosts {args.hosts}: at most {_MAX_HOSTS} (127.0.0.1 to "
                       f"127.0.0.{_MAX_HOSTS})")
    run_loop(args.loop, lambda: serve_forever(
        args.hosts, port=args.port, json_line=args.json, until_stdin_eof=args.until_stdin_eof))
    return 0


def main(argv: list[str] | None = None) -> None:
    """The older entry point: `poolhttp serve-demo --json --until-stdin-eof`."""
    parser = argparse.ArgumentParser(prog="python -m poolhttp.cli._server",
                                     description="Local HTTP server for demos and tests.")
    parser.add_argument("--hosts", type=int, default=1, help="loopback addresses to serve on")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    args = parser.parse_args(argv)
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(serve_forever(args.hosts, json_line=True, until_stdin_eof=True))
    else:
        asyncio.run(serve_forever(args.hosts, json_line=True, until_stdin_eof=True))


if __name__ == "__main__":
    main()
