"""`poolhttp get URL [-v]`: one request, like curl.

The body goes to standard output (or -o FILE); with -v the request and response heads and the
timings go to standard error. Phase timings (DNS, connect, TLS) and whether the connection was
new come from the client's `trace=` hook; a phase that did not happen is shown as "-".
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from poolhttp import URL, AsyncClient, HTTPError, InvalidRequest, InvalidURL, Response, Timeout

from ._drive import run_loop
from ._errors import EXIT_FAILED, CliError
from ._fetch import parse_headers

__all__ = ["Timings", "run_get"]

EXIT_HTTP_ERROR = 22  # like curl --fail


@dataclass
class Timings:
    """What one exchange cost; None where it was not measured."""

    started: float = 0.0
    first_byte: float | None = None
    total: float | None = None
    dns: float | None = None
    dns_cached: bool | None = None
    dns_literal: bool = False
    connect: float | None = None
    tls: float | None = None
    reused: bool | None = None
    connection_id: int | None = None
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def __call__(self, event: str, info: dict[str, Any]) -> None:
        """The `trace=` callback: keep the phases we report."""
        self.events.append((event, info))
        if event == "dns.resolved":
            self.dns = info.get("seconds")
            self.dns_cached = info.get("cached")
            self.dns_literal = bool(info.get("literal"))
        elif event == "tcp.connected":
            self.connect = info.get("seconds")
        elif event == "tls.handshake":
            self.tls = info.get("seconds")
        elif event == "connection.acquired":
            self.reused = info.get("reused")
            self.connection_id = info.get("connection_id")


def run_get(args: argparse.Namespace) -> int:
    try:
        url = URL(args.url)
    except InvalidURL as exc:
        raise CliError(str(exc)) from None
    headers = parse_headers(args.header)
    body = _body(args.data)
    timeout = Timeout(args.timeout) if args.timeout else None
    with _output(args.output) as out:
        return run_loop("auto", lambda: _get(args, url, headers, body, timeout, out))


def _body(data: str | None) -> bytes | None:
    if data is None:
        return None
    if data.startswith("@"):
        try:
            return Path(data[1:]).read_bytes()
        except OSError as exc:
            raise CliError(f"-d {data}: cannot read it: {exc.strerror or exc}") from None
    return data.encode("utf-8")


@contextlib.contextmanager
def _output(path: str | None) -> Iterator[IO[bytes]]:
    if path is None:
        yield sys.stdout.buffer
        return
    try:
        file = open(path, "wb")  # noqa: SIM115  # closed below
    except OSError as exc:
        raise CliError(f"-o {path}: cannot write to it: {exc.strerror or exc}") from None
    with file:
        yield file


async def _get(args: argparse.Namespace, url: URL, headers: list[list[str]], body: bytes | None,
               timeout: Timeout | None, out: IO[bytes]) -> int:
    timings = Timings()
    async with AsyncClient(headers=[(n, v) for n, v in headers] or None,
                           timeout=timeout if timeout is not None else Timeout()) as client:
        timings.started = time.perf_counter()
        try:
            async with client.stream(args.method, url, content=body, trace=timings) as response:
                timings.first_byte = time.perf_counter() - timings.started
                if args.verbose:
                    _show_head(response, sys.stderr)
                if args.include:
                    out.write(_head_bytes(response))
                async for chunk in response.aiter_bytes():
                    out.write(chunk)
                out.flush()
        except InvalidRequest as exc:
            raise CliError(str(exc)) from None
        except HTTPError as exc:
            print(f"poolhttp get: {type(exc).__name__}: {exc}", file=sys.stderr)
            return EXIT_FAILED
        timings.total = time.perf_counter() - timings.started
    if args.verbose:
        _show_timings(timings, url, sys.stderr)
    return EXIT_HTTP_ERROR if args.fail and response.status_code >= 400 else 0


def _head_bytes(response: Response) -> bytes:
    lines = [f"{response.http_version} {response.status_code} {response.reason_phrase}"]
    lines += [f"{n.decode('latin-1')}: {v.decode('latin-1')}" for n, v in response.headers.raw]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _show_head(response: Response, err: IO[str]) -> None:
    request = response.request
    print(f"> {request.method} {request.url.raw_path} HTTP/1.1", file=err)
    for name, value in request.headers.raw:
        print(f"> {name.decode('latin-1')}: {value.decode('latin-1')}", file=err)
    print(">", file=err)
    print(f"< {response.http_version} {response.status_code} {response.reason_phrase}",
          file=err)
    for name, value in response.headers.raw:
        print(f"< {name.decode('latin-1')}: {value.decode('latin-1')}", file=err)
    print("<", file=err, flush=True)


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.2f} ms"


def _show_timings(t: Timings, url: URL, err: IO[str]) -> None:
    if t.reused is None:
        conn = "unknown"
    else:
        conn = "reused" if t.reused else "new"
        if t.connection_id is not None:
            conn += f" (connection #{t.connection_id})"
    print(f"* connection  {conn}", file=err)
    if t.dns_literal:
        print("* dns         - (an IP address)", file=err)
    else:
        cached = " (cached)" if t.dns_cached else ""
        print(f"* dns         {_ms(t.dns)}{cached}", file=err)
    print(f"* connect     {_ms(t.connect)}", file=err)
    tls = _ms(t.tls) if url.scheme == "https" else "- (http)"
    print(f"* tls         {tls}", file=err)
    print(f"* first byte  {_ms(t.first_byte)}", file=err)
    print(f"* total       {_ms(t.total)}", file=err)

