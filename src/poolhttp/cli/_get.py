"""`poolhttp get URL [-v] [-L] [-k | --cacert FILE] [--http2]`: one request, like curl.

The body goes to standard output, or to -o FILE. The file is checked before anything is sent
and opened (created, or emptied) only once there is a response to write, so a request that
fails, or an error status under -f, leaves it as it was. -f writes nothing of a response with
a status >= 400 (nor its head, with -i) and exits with 22, as curl does.

-L follows redirects (the client's `follow_redirects`, at most --max-redirs of them). With -v
the request and response heads of every hop go to standard error as they happen (the client's
event hooks), then the timings: phase timings (DNS, connect, TLS) and whether the connection
was new come from the client's `trace=` hook and describe the connection of the last hop; a
phase that did not happen is shown as "-".
"""

from __future__ import annotations

import argparse
import os
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from poolhttp import (
    URL,
    AsyncClient,
    HTTPError,
    InvalidRequest,
    InvalidURL,
    Request,
    Response,
    Timeout,
    TooManyRedirects,
)

from ._drive import run_loop
from ._errors import EXIT_FAILED, CliError
from ._fetch import parse_headers

__all__ = ["Timings", "run_get"]

EXIT_HTTP_ERROR = 22  # like curl --fail
MAX_REDIRS = 20  # -L's default limit (the client's default max_redirects)


@dataclass
class Timings:
    """What one exchange cost; None where it was not measured. The connection phases are
    those of the connection that carried the last hop (a redirect may reuse one)."""

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
            if self.reused:
                # The phases seen so far were an earlier hop's connection, not this one's.
                self.dns = self.dns_cached = self.connect = self.tls = None
                self.dns_literal = False


def run_get(args: argparse.Namespace) -> int:
    try:
        url = URL(args.url)
    except InvalidURL as exc:
        raise CliError(str(exc)) from None
    options = _client_options(args)
    body = _body(args.data)
    out = _Output(args.output)
    try:
        return run_loop("auto", lambda: _get(args, url, body, options, out))
    finally:
        out.close()


def _client_options(args: argparse.Namespace) -> dict[str, Any]:
    """The AsyncClient's settings from the flags, checked before anything is sent."""
    if args.max_redirs is not None and not args.location:
        raise CliError("--max-redirs limits the redirects that -L follows: give it with -L")
    if args.insecure and args.cacert is not None:
        raise CliError("-k and --cacert contradict each other: -k verifies nothing, --cacert "
                       "verifies with that CA bundle; give one of them")
    headers = parse_headers(args.header)
    options: dict[str, Any] = {
        "headers": [(n, v) for n, v in headers] or None,
        "timeout": Timeout(args.timeout) if args.timeout else Timeout(),
        "follow_redirects": args.location,
        "verify": _verify(args),
        # --http2 offers h2 by ALPN (https), so the server chooses; http:// stays HTTP/1.1.
        # Prior knowledge speaks h2 from the first byte (h2c), or insists on h2 over TLS.
        "http2": args.http2 or args.http2_prior_knowledge,
        "http1": not args.http2_prior_knowledge,
    }
    if args.location:
        options["max_redirects"] = MAX_REDIRS if args.max_redirs is None else args.max_redirs
    return options


def _verify(args: argparse.Namespace) -> bool | str:
    if args.insecure:
        return False
    return True if args.cacert is None else _ca_bundle(args.cacert)


def _ca_bundle(path: str) -> str:
    """--cacert FILE, loaded once here so that a missing, unreadable or non-PEM file is a
    message and exit status 2 before anything is sent, not a failed handshake later."""
    if os.path.isdir(path):
        raise CliError(f"--cacert {path}: is a directory; give a file of PEM certificates")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=path)
    except ssl.SSLError as exc:  # an OSError too: caught first
        raise CliError(f"--cacert {path}: not a CA bundle (no PEM certificate could be loaded: "
                       f"{exc.reason or exc})") from None
    except OSError as exc:
        raise CliError(f"--cacert {path}: cannot read it: {exc.strerror or exc}") from None
    return path


def _body(data: str | None) -> bytes | None:
    if data is None:
        return None
    if data.startswith("@"):
        try:
            return Path(data[1:]).read_bytes()
        except OSError as exc:
            raise CliError(f"-d {data}: cannot read it: {exc.strerror or exc}") from None
    return data.encode("utf-8")


class _Output:
    """Where the response goes: standard output ('-' or no -o), or FILE, opened on demand."""

    def __init__(self, path: str | None) -> None:
        self.path = None if path in (None, "-") else path
        self._file: IO[bytes] | None = None
        if self.path is not None:
            _check_writable(self.path)

    def open(self) -> IO[bytes]:
        """The stream to write the response to; FILE is created (or emptied) now."""
        if self.path is None:
            return sys.stdout.buffer
        if self._file is None:
            try:
                self._file = open(self.path, "wb")  # noqa: SIM115  # closed by close()
            except OSError as exc:
                raise CliError(f"-o {self.path}: cannot write to it: {exc.strerror or exc}",
                               status=EXIT_FAILED) from None
        return self._file

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def _check_writable(path: str) -> None:
    """Refuse -o FILE up front (nothing sent) when it plainly cannot be written."""
    target = Path(path)
    if target.is_dir():
        raise CliError(f"-o {path}: is a directory")
    if not target.parent.is_dir():
        raise CliError(f"-o {path}: no such directory: {target.parent}")
    if not os.access(target if target.exists() else target.parent, os.W_OK):
        raise CliError(f"-o {path}: cannot write to it: permission denied")


class _Hops:
    """-v: the heads of each exchange on standard error as it happens, redirects included
    (so a chain that ends in an error still shows how it got there)."""

    def __init__(self, err: IO[str]) -> None:
        self.err = err
        self.requests = 0

    def hooks(self) -> dict[str, list[Callable[..., Any]]]:
        return {"request": [self.on_request], "response": [self.on_response]}

    def on_request(self, request: Request) -> None:
        self.requests += 1
        if self.requests > 1:
            print(f"* redirect {self.requests - 1}: {request.method} {request.url}",
                  file=self.err)

    def on_response(self, response: Response) -> None:
        _show_head(response, self.err)


async def _get(args: argparse.Namespace, url: URL, body: bytes | None, options: dict[str, Any],
               out: _Output) -> int:
    timings = Timings()
    hooks = _Hops(sys.stderr).hooks() if args.verbose else None
    try:
        client = AsyncClient(event_hooks=hooks, **options)
    except ImportError as exc:  # --http2 without the h2 package
        raise CliError(f"--http2: {exc}") from None
    async with client:
        timings.started = time.perf_counter()
        try:
            async with client.stream(args.method, url, content=body, trace=timings) as response:
                timings.first_byte = time.perf_counter() - timings.started
                status = await _write(args, response, out)
        except InvalidRequest as exc:
            raise CliError(str(exc)) from None
        except TooManyRedirects as exc:
            print(f"poolhttp get: more than --max-redirs {options['max_redirects']} "
                  f"redirects: {exc}", file=sys.stderr)
            return EXIT_FAILED
        except HTTPError as exc:
            print(f"poolhttp get: {type(exc).__name__}: {exc}", file=sys.stderr)
            return EXIT_FAILED
        timings.total = time.perf_counter() - timings.started
    if args.verbose:
        _show_timings(timings, response, sys.stderr)
    return status


async def _write(args: argparse.Namespace, response: Response, out: _Output) -> int:
    """Write the response (with -i its head first, and those of the redirects before it, as
    curl -iL does); with -f, an error status writes nothing and is exit status 22."""
    if args.fail and response.status_code >= 400:
        print(f"poolhttp get: {_status_line(response)} from {response.request.url} "
              f"(-f: nothing written)", file=sys.stderr)
        return EXIT_HTTP_ERROR
    sink = out.open()
    if args.include:
        for hop in [*response.history, response]:
            sink.write(_head_bytes(hop))
    async for chunk in response.aiter_bytes():
        sink.write(chunk)
    sink.flush()
    return 0


def _status_line(response: Response) -> str:
    # HTTP/2 has no reason phrase: no trailing space for it.
    return f"{response.http_version} {response.status_code} {response.reason_phrase}".rstrip()


def _head_bytes(response: Response) -> bytes:
    lines = [_status_line(response)]
    lines += [f"{n.decode('latin-1')}: {v.decode('latin-1')}" for n, v in response.headers.raw]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _show_head(response: Response, err: IO[str]) -> None:
    request = response.request
    print(f"> {request.method} {request.url.raw_path} {response.http_version}", file=err)
    for name, value in request.headers.raw:
        print(f"> {name.decode('latin-1')}: {value.decode('latin-1')}", file=err)
    print(">", file=err)
    print(f"< {_status_line(response)}", file=err)
    for name, value in response.headers.raw:
        print(f"< {name.decode('latin-1')}: {value.decode('latin-1')}", file=err)
    print("<", file=err, flush=True)


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.2f} ms"


def _show_timings(t: Timings, response: Response, err: IO[str]) -> None:
    if t.reused is None:
        conn = "unknown"
    else:
        conn = "reused" if t.reused else "new"
        if t.connection_id is not None:
            conn += f" (connection #{t.connection_id})"
    print(f"* protocol    {response.http_version}", file=err)
    if response.history:
        print(f"* redirects   {len(response.history)}", file=err)
    print(f"* connection  {conn}", file=err)
    if t.dns_literal:
        print("* dns         - (an IP address)", file=err)
    else:
        cached = " (cached)" if t.dns_cached else ""
        print(f"* dns         {_ms(t.dns)}{cached}", file=err)
    print(f"* connect     {_ms(t.connect)}", file=err)
    tls = _ms(t.tls) if response.request.url.scheme == "https" else "- (http)"
    print(f"* tls         {tls}", file=err)
    print(f"* first byte  {_ms(t.first_byte)}", file=err)
    print(f"* total       {_ms(t.total)}", file=err)
