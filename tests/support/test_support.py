"""Self-tests of the test infrastructure, using only raw sockets and the standard library
(never poolhttp), so a failure here points at the infrastructure, not at the client."""

from __future__ import annotations

import asyncio
import http.client
import itertools
import json
import os
import socket
import ssl
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterable
from pathlib import Path
from xml.etree import ElementTree

import pytest

from tests.support import no_fd_leak, open_fd_count
from tests.support.certs import CertBundle
from tests.support.nginx import Nginx, NginxError, ipv6_loopback_available
from tests.support.scripted import (
    Gate,
    ReceivedRequest,
    Reply,
    ScriptedServer,
    ServerFactory,
    ServerHandlerError,
    blackhole_listener,
    echo_handler,
    in_sequence,
    refusing_port,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


class RawConnection:
    """A minimal HTTP/1.1 client over one socket, to observe servers byte by byte."""

    def __init__(self, host: str, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buffer = b""
        self.trailers = b""  # the raw trailer section of the last chunked response

    def __enter__(self) -> RawConnection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def request(
        self,
        path: str = "/",
        method: str = "GET",
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        host: str = "test",
    ) -> None:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", *(f"{k}: {v}" for k, v in headers)]
        if body:
            lines.append(f"Content-Length: {len(body)}")
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)

    def _fill(self) -> bytes:
        data = self.sock.recv(65536)
        self.buffer += data
        return data

    def read_response(self, head_only: bool = False) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buffer:
            if not self._fill():
                raise EOFError(f"connection closed; got {self.buffer!r}")
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        status = int(status_line.split()[1])
        if head_only or status in (100, 204, 304):
            return status, headers, b""
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                while b"\r\n" not in self.buffer:
                    self._fill()
                size_line, self.buffer = self.buffer.split(b"\r\n", 1)
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    while b"\r\n\r\n" not in b"\r\n" + self.buffer:
                        self._fill()
                    trailers, self.buffer = (b"\r\n" + self.buffer).split(b"\r\n\r\n", 1)
                    self.trailers = trailers[2:]
                    return status, headers, body
                while len(self.buffer) < size + 2:
                    self._fill()
                body += self.buffer[:size]
                self.buffer = self.buffer[size + 2 :]
        length = int(headers["content-length"])
        while len(self.buffer) < length:
            if not self._fill():
                raise EOFError(f"body cut short: {len(self.buffer)} of {length} bytes")
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, headers, body

    def read_to_eof(self) -> bytes:
        while self._fill():
            pass
        data, self.buffer = self.buffer, b""
        return data


# --------------------------------------------------------------------------------------------
# nginx


def test_nginx_serves_each_origin(nginx: Nginx) -> None:
    ports = set()
    for index, address in enumerate(nginx.addresses):
        assert nginx.url("/x", index) == f"http://{address}:{nginx.port(index)}/x"
        ports.add(nginx.port(index))
        with RawConnection(address, nginx.port(index)) as conn:
            conn.request("/")
            status, headers, body = conn.read_response()
            assert (status, headers["content-type"], body) == (200, "text/plain", b"hello\n")
            for name in ("16k", "1m"):
                conn.request(f"/{name}")
                status, _, body = conn.read_response()
                assert status == 200
                assert body == nginx.file_bytes(name)
            conn.request("/status")
            assert conn.read_response()[0] == 404
            conn.request("/", method="POST", body=b"x" * 100_000)
            assert conn.read_response()[2] == b"hello\n"
    assert len(nginx.file_bytes("16k")) == 16 * 1024
    assert len(nginx.file_bytes("1m")) == 1024 * 1024
    assert len(ports) == len(nginx.addresses) == 3


def test_nginx_big_file_is_sparse(nginx: Nginx) -> None:
    stat = (nginx.root / "big").stat()
    assert stat.st_size == 1 << 30
    assert stat.st_blocks * 512 < 1 << 20  # nothing was written
    with RawConnection("127.0.0.1", nginx.port()) as conn:
        conn.request("/big", method="HEAD")
        status, headers, _ = conn.read_response(head_only=True)
        assert (status, headers["content-length"]) == (200, str(1 << 30))
        conn.request("/big", headers=[("Range", "bytes=0-65535")])
        status, _, body = conn.read_response()
        assert (status, body) == (206, bytes(65536))


def test_nginx_keepalive_off_closes_after_each_response(nginx: Nginx) -> None:
    with RawConnection("127.0.0.2", nginx.port(1, keepalive=False)) as conn:
        conn.request("/")
        status, headers, body = conn.read_response()
        assert (status, headers["connection"], body) == (200, "close", b"hello\n")
        assert conn.read_to_eof() == b""
    assert nginx.url("/", 1, keepalive=False).startswith("http://127.0.0.2:")
    with RawConnection("127.0.0.2", nginx.port(1)) as conn:
        for _ in range(3):  # the keep-alive server answers many requests on one connection
            conn.request("/")
            status, headers, _ = conn.read_response()
            assert (status, headers["connection"]) == (200, "keep-alive")


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_nginx_https_with_generated_ca(nginx: Nginx, version: ssl.TLSVersion) -> None:
    context = ssl.create_default_context(cafile=nginx.ca_path)
    context.minimum_version = context.maximum_version = version
    hosts = ["127.0.0.1", "localhost"] if nginx.ipv6 else ["127.0.0.1"]
    for host in hosts:
        assert nginx.https_url("/16k", host).startswith(f"https://{host}:")
        connection = http.client.HTTPSConnection(host, nginx.https_port, context=context)
        try:
            connection.request("GET", "/16k")
            response = connection.getresponse()
            assert response.read() == nginx.file_bytes("16k")
            assert connection.sock.version() == {
                ssl.TLSVersion.TLSv1_2: "TLSv1.2",
                ssl.TLSVersion.TLSv1_3: "TLSv1.3",
            }[version]
        finally:
            connection.close()


def test_nginx_https_rejected_without_the_ca(nginx: Nginx, tmp_path: Path) -> None:
    context = ssl.create_default_context(cafile=None, capath=str(tmp_path))  # trusts nothing
    with (
        socket.create_connection(("127.0.0.1", nginx.https_port), timeout=5) as sock,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        context.wrap_socket(sock, server_hostname="127.0.0.1").close()


def test_nginx_ipv6(nginx: Nginx) -> None:
    url = nginx.ipv6_url("/")
    if not ipv6_loopback_available():
        assert url is None
        return
    assert url is not None
    assert url.startswith("http://[::1]:")
    port = int(url.rsplit(":", 1)[1].rstrip("/"))
    with RawConnection("::1", port) as conn:
        conn.request("/")
        assert conn.read_response()[2] == b"hello\n"


def test_nginx_stub_status_is_exact(certs: CertBundle) -> None:
    """A private instance: absolute counts, uncontaminated by the status queries."""
    n = 8
    with Nginx(certs=certs, addresses=("127.0.0.1",), ipv6=False) as nginx:
        for _ in range(3):  # repeated queries correct for themselves
            assert nginx.server_stats().accepted == 0
        conns = [RawConnection("127.0.0.1", nginx.port()) for _ in range(n)]
        try:
            for _ in range(2):
                for conn in conns:
                    conn.request("/")
                    assert conn.read_response()[0] == 200
            stats = nginx.wait_for_stats(lambda s: s.waiting == n)
            assert (stats.accepted, stats.handled, stats.requests) == (n, n, 2 * n)
            assert (stats.active, stats.reading, stats.writing) == (n, 0, 0)
        finally:
            for conn in conns:
                conn.close()
        stats = nginx.wait_for_stats(lambda s: s.active == 0)
        assert (stats.accepted, stats.requests, stats.waiting) == (n, 2 * n, 0)


def test_nginx_stats_since(nginx: Nginx) -> None:
    before = nginx.server_stats()
    for _ in range(3):
        with RawConnection("127.0.0.3", nginx.port(2)) as conn:
            conn.request("/")
            conn.read_response()
    delta = nginx.server_stats().since(before)
    assert (delta.accepted, delta.handled, delta.requests) == (3, 3, 3)


def test_nginx_keepalive_timeout_is_configurable(certs: CertBundle) -> None:
    with (
        Nginx(certs=certs, addresses=("127.0.0.1",), keepalive_timeout=0.2, ipv6=False) as nginx,
        RawConnection("127.0.0.1", nginx.port()) as conn,
    ):
        conn.request("/")
        conn.read_response()
        started = time.monotonic()
        assert conn.read_to_eof() == b""
        assert 0.1 < time.monotonic() - started < 3


def test_nginx_start_failure_shows_error_log(certs: CertBundle) -> None:
    server = Nginx(certs=certs, extra_http_config="no_such_directive on;")
    with pytest.raises(NginxError, match="unknown directive"):
        server.start()
    server.stop()
    assert server.directory is None


def test_nginx_stop_reaps_and_cleans_up(certs: CertBundle) -> None:
    nginx = Nginx(certs=certs, addresses=("127.0.0.1",), ipv6=False)
    nginx.start()
    process, directory, port = nginx._process, nginx.directory, nginx.port()
    assert process is not None
    assert directory is not None
    nginx.stop()
    nginx.stop()  # idempotent
    assert process.returncode == 0
    assert not directory.exists()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


# --------------------------------------------------------------------------------------------
# Scripted servers: requests and replies


def test_scripted_counters_are_exact(scripted_server: ServerFactory) -> None:
    k = 5
    server = scripted_server()
    conns = [RawConnection("127.0.0.1", server.port) for _ in range(k)]
    try:
        server.wait_for(lambda s: s.active == k)
        for _ in range(3):
            for conn in conns:
                conn.request("/")
                assert conn.read_response()[2] == b"hello"
        counters = server.counters()
        assert (counters.accepted, counters.active, counters.max_active) == (k, k, k)
        assert counters.requests == 3 * k
        records = server.connections
        assert [record.requests for record in records] == [3] * k
        assert {record.peer for record in records} == {c.sock.getsockname() for c in conns}
        assert all(record.closed_at is None for record in records)
    finally:
        for conn in conns:
            conn.close()
    server.wait_for(lambda s: s.closed_by_client == k and s.active == 0)
    assert server.max_active == k
    assert all(record.closed_by == "client" for record in server.connections)


def test_scripted_request_indexes_and_echo(scripted_server: ServerFactory) -> None:
    server = scripted_server(echo_handler)
    with RawConnection("127.0.0.1", server.port) as conn:
        for index in range(2):
            conn.request("/p?q=1", "POST", [("X-Request-Id", f"id-{index}")], b"x" * 300)
            status, headers, body = conn.read_response()
            assert (status, headers["x-request-id"]) == (200, f"id-{index}")
            description = json.loads(body)
            assert description["method"] == "POST"
            assert (description["path"], description["query"]) == ("/p", "q=1")
            assert description["body_length"] == 300
            assert (description["connection_index"], description["request_index"]) == (0, index)
    request = server.received[-1]
    assert request.get("x-REQUEST-id") == "id-1"
    assert request.body == b"x" * 300


def test_scripted_parses_chunked_request_body(scripted_server: ServerFactory) -> None:
    server = scripted_server()
    with RawConnection("127.0.0.1", server.port) as conn:
        conn.sock.sendall(
            b"PUT /u HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3;ext=1\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nX-Trailer: yes\r\n\r\n"
        )
        assert conn.read_response()[0] == 200
    request = server.received[0]
    assert (request.method, request.body, request.chunked) == ("PUT", b"abc0123456789abcdef", True)
    assert request.trailers == [("X-Trailer", "yes")]


@pytest.mark.parametrize(
    "bad_request",
    [
        b"GET / HTTP/1.1\nHost: t\n\n",  # bare LF
        b"GET / HTTP/1.1\r\nHost : t\r\n\r\n",  # space before colon
        b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx",
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET /a b HTTP/1.1\r\nHost: t\r\n\r\n",
    ],
)
def test_scripted_rejects_malformed_requests(
    scripted_server: ServerFactory, bad_request: bytes
) -> None:
    server = scripted_server()
    with RawConnection("127.0.0.1", server.port) as conn:
        conn.sock.sendall(bad_request)
        assert conn.read_response()[0] == 400
        assert conn.read_to_eof() == b""
    server.wait_for(lambda s: s.active == 0)
    assert len(server.protocol_errors) == 1
    assert server.requests == 0


def test_scripted_reply_forms(scripted_server: ServerFactory) -> None:
    raw = b"HTTP/1.1 200 OK\r\nX-Exact: 1\r\nContent-Length: 2\r\n\r\nhi"
    server = scripted_server(
        in_sequence(
            Reply.ok(b"body", {"X-A": "1"}, status=201),
            Reply.chunked([b"ab", b"cde"], trailers={"X-T": "v"}),
            Reply.raw(raw),
            Reply.ok(status=204, body=b""),
            Reply.ok(b"bye", keep_alive=False),
        )
    )
    with RawConnection("127.0.0.1", server.port) as conn:
        conn.request("/")
        assert conn.read_response() == (201, {"x-a": "1", "content-length": "4"}, b"body")
        conn.request("/")
        status, headers, body = conn.read_response()
        assert (status, headers["transfer-encoding"], body) == (200, "chunked", b"abcde")
        assert conn.trailers == b"X-T: v"
        conn.request("/")
        while len(conn.buffer) < len(raw):
            conn._fill()
        assert conn.buffer == raw
        conn.buffer = b""
        conn.request("/")
        assert conn.read_response() == (204, {}, b"")
        conn.request("/")
        _, headers, body = conn.read_response()
        assert (headers["connection"], body) == ("close", b"bye")
        assert conn.read_to_eof() == b""


def test_scripted_head_and_expect_continue(scripted_server: ServerFactory) -> None:
    server = scripted_server(lambda request: Reply.ok(b"twelve bytes"))
    with RawConnection("127.0.0.1", server.port) as conn:
        conn.request("/", method="HEAD")
        status, headers, _ = conn.read_response(head_only=True)
        assert (status, headers["content-length"]) == (200, "12")
        conn.sock.sendall(
            b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
        )
        assert conn.read_response()[0] == 100
        conn.sock.sendall(b"data")
        # (Had the HEAD response carried a body, the 100 above would not have parsed.)
        assert conn.read_response()[2] == b"twelve bytes"
    assert server.received[1].body == b"data"


def test_scripted_client_close_is_honoured(scripted_server: ServerFactory) -> None:
    server = scripted_server()
    with RawConnection("127.0.0.1", server.port) as conn:
        conn.request("/", headers=[("Connection", "close")])
        assert conn.read_response()[1]["connection"] == "close"
        assert conn.read_to_eof() == b""
    server.wait_for(lambda s: s.active == 0)
    assert server.connections[0].closed_by == "server"


# --------------------------------------------------------------------------------------------
# Scripted servers: faults, as a raw client sees them


def connect_and_read(host: str, port: int) -> bytes:
    with RawConnection(host, port) as conn:
        return conn.read_to_eof()


def one_request(server: ScriptedServer, timeout: float = 5.0) -> RawConnection:
    conn = RawConnection("127.0.0.1", server.port, timeout)
    conn.request("/")
    return conn


def test_fault_reset(scripted_server: ServerFactory) -> None:
    server = scripted_server(lambda request: Reply.reset())
    with one_request(server) as conn, pytest.raises(ConnectionResetError):
        conn.read_to_eof()


def test_fault_reset_after_response(scripted_server: ServerFactory) -> None:
    server = scripted_server(lambda request: Reply.ok(b"done").reset_after())
    with one_request(server) as conn:
        assert conn.read_response()[2] == b"done"
        with pytest.raises(ConnectionResetError):
            conn.read_to_eof()


def test_fault_close_without_response(scripted_server: ServerFactory) -> None:
    server = scripted_server(lambda request: Reply.close_without_response())
    with one_request(server) as conn:
        assert conn.read_to_eof() == b""
    server.wait_for(lambda s: s.active == 0)
    assert server.connections[0].closed_by == "server"


def test_fault_close_after_is_unannounced(scripted_server: ServerFactory) -> None:
    server = scripted_server(lambda request: Reply.ok(b"abc").close_after())
    with one_request(server) as conn:
        status, headers, body = conn.read_response()
        assert "connection" not in headers
        assert (status, body) == (200, b"abc")
        assert conn.read_to_eof() == b""


@pytest.mark.parametrize("ending", ["reset", "close"])
def test_fault_mid_body(scripted_server: ServerFactory, ending: str) -> None:
    body = bytes(range(256)) * 40
    reply = Reply.reset_mid_body(body, 3000) if ending == "reset" else Reply.close_mid_body(body)
    server = scripted_server(lambda request: reply)
    with one_request(server) as conn:
        with pytest.raises(EOFError if ending == "close" else ConnectionResetError):
            conn.read_response()
        # Everything sent before the RST or FIN reached the client (the head was parsed off
        # the buffer, which holds the partial body).
        assert conn.buffer == (body[:3000] if ending == "reset" else body[: len(body) // 2])


def test_fault_stall(scripted_server: ServerFactory) -> None:
    server = scripted_server(lambda request: Reply.stall())
    with one_request(server) as conn:
        conn.sock.settimeout(0.2)
        with pytest.raises(TimeoutError):
            conn.sock.recv(1)
        assert server.active == 1
    server.wait_for(lambda s: s.closed_by_client == 1 and s.active == 0)


def test_fault_delay(scripted_server: ServerFactory) -> None:
    server = scripted_server(lambda request: Reply.ok().delay(0.2))
    started = time.monotonic()
    with one_request(server) as conn:
        assert conn.read_response()[2] == b"hello"
    assert time.monotonic() - started >= 0.2


def test_fault_drip(scripted_server: ServerFactory) -> None:
    interval = 0.03
    server = scripted_server(lambda request: Reply.drip(b"abcdef", interval))
    with one_request(server) as conn:
        pieces: list[bytes] = []
        times: list[float] = []
        while len(pieces) < 6:
            pieces.append(conn.sock.recv(100))
            times.append(time.monotonic())
    assert pieces == [b"a", b"b", b"c", b"d", b"e", b"f"]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert min(gaps) > interval * 0.5


def test_fault_dripped_reply(scripted_server: ServerFactory) -> None:
    server = scripted_server(lambda request: Reply.ok(b"xy").dripped(0.002))
    with one_request(server) as conn:
        first = conn.sock.recv(100)
        assert first == b"H"
        conn.buffer = first
        assert conn.read_response()[2] == b"xy"


def test_fault_send_after_response(scripted_server: ServerFactory) -> None:
    server = scripted_server(lambda request: Reply.ok(b"a").send_after_response(b"JUNK"))
    with one_request(server) as conn:
        assert conn.read_response()[2] == b"a"
        while len(conn.buffer) < 4:
            conn._fill()
        assert conn.buffer == b"JUNK"


@pytest.mark.parametrize("close_with", ["fin", "rst"])
def test_idle_keepalive_close(scripted_server: ServerFactory, close_with: str) -> None:
    server = scripted_server(idle_close_ms=150, idle_close_with=close_with)
    with one_request(server) as conn:
        assert conn.read_response()[0] == 200
        started = time.monotonic()
        if close_with == "fin":
            assert conn.read_to_eof() == b""
        else:
            with pytest.raises(ConnectionResetError):
                conn.read_to_eof()
        assert 0.1 < time.monotonic() - started < 2
    server.wait_for(lambda s: s.active == 0)
    assert server.connections[0].closed_by == "server"


@pytest.mark.parametrize("mode", ["stall", "close", "reset"])
def test_on_accept_modes(scripted_server: ServerFactory, mode: str) -> None:
    server = scripted_server(on_accept=mode)
    if mode == "reset":
        # The RST may arrive before a blocking connect() has returned: then connect() itself
        # fails, otherwise the first read does.
        with pytest.raises(ConnectionResetError):
            connect_and_read("127.0.0.1", server.port)
        server.wait_for(lambda s: s.accepted == 1 and s.active == 0)
        return
    # No request is sent: data the server never read would turn its FIN into an RST.
    with RawConnection("127.0.0.1", server.port) as conn:
        if mode == "stall":
            conn.sock.settimeout(0.2)
            with pytest.raises(TimeoutError):
                conn.sock.recv(1)
        else:
            assert conn.read_to_eof() == b""
    assert server.requests == 0


def test_async_handler_coordinates_with_gate(scripted_server: ServerFactory) -> None:
    gate, reached = Gate(), Gate()

    async def handler(request: ReceivedRequest) -> Reply:
        if request.connection_index > 0:
            return Reply.ok(b"other")
        reached.set()
        await gate.wait()
        return Reply.ok(b"released")

    server = scripted_server(handler)
    with one_request(server) as conn:
        reached.wait_sync()
        # The server's loop is not blocked by the waiting handler: others are served.
        with one_request(server) as other:
            assert other.read_response()[2] == b"other"
        conn.sock.settimeout(0.1)
        with pytest.raises(TimeoutError):
            conn.sock.recv(1)
        conn.sock.settimeout(5)
        gate.set()
        assert conn.read_response()[2] == b"released"


def test_handler_error_fails_the_test(scripted_server: ServerFactory) -> None:
    def broken(request: ReceivedRequest) -> Reply:
        raise ValueError("boom")

    server = ScriptedServer(broken).start()
    try:
        with one_request(server) as conn:
            assert conn.read_response()[0] == 500
    finally:
        with pytest.raises(ServerHandlerError, match="boom"):
            server.stop()


def test_scripted_tls(scripted_server: ServerFactory, certs: CertBundle) -> None:
    server = scripted_server(tls=certs)
    assert server.url("/a").startswith("https://127.0.0.1:")
    connection = http.client.HTTPSConnection(
        "127.0.0.1", server.port, context=certs.client_context()
    )
    try:
        connection.request("GET", "/")
        assert connection.getresponse().read() == b"hello"
    finally:
        connection.close()


def test_scripted_tls_reset_mid_body(scripted_server: ServerFactory, certs: CertBundle) -> None:
    body = b"y" * 100_000
    server = scripted_server(lambda request: Reply.reset_mid_body(body, 60_000), tls=certs)
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    with certs.client_context().wrap_socket(
        raw, server_hostname="127.0.0.1", suppress_ragged_eofs=False
    ) as tls:
        tls.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        received = b""
        # OpenSSL reports the RST as an EOF without close_notify, not as ECONNRESET.
        with pytest.raises((ssl.SSLEOFError, ConnectionResetError)):  # noqa: PT012
            while chunk := tls.recv(65536):
                received += chunk
    assert received.split(b"\r\n\r\n", 1)[1] == body[:60_000]


def test_stop_closes_open_connections(scripted_server: ServerFactory) -> None:
    server = ScriptedServer(lambda request: Reply.stall()).start()
    conns = [one_request(server) for _ in range(3)]
    try:
        server.wait_for(lambda s: s.requests == 3)
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 2
        for conn in conns:
            assert conn.read_to_eof() == b""
        assert [record.closed_by for record in server.connections] == ["stop"] * 3
        assert server._thread is not None
        assert not server._thread.is_alive()
    finally:
        for conn in conns:
            conn.close()


def test_wait_for_times_out_with_counters(scripted_server: ServerFactory) -> None:
    server = scripted_server()
    with pytest.raises(TimeoutError, match="accepted=0"):
        server.wait_for(lambda s: s.accepted == 1, timeout=0.05)


def test_multi_origin(scripted_server: ServerFactory) -> None:
    servers = scripted_server.multi(echo_handler)
    assert [origin.split(":")[1] for origin in servers.origins] == [
        "//127.0.0.1",
        "//127.0.0.2",
        "//127.0.0.3",
    ]
    for index, count in enumerate([1, 2, 3]):
        for _ in range(count):
            with RawConnection(f"127.0.0.{index + 1}", servers[index].port) as conn:
                conn.request("/")
                conn.read_response()
    servers.wait_for(lambda m: m.active == 0)
    assert [server.accepted for server in servers] == [1, 2, 3]
    assert servers.accepted == servers.requests == 6


# --------------------------------------------------------------------------------------------
# Listeners that do not serve


def test_blackhole_connect_hangs() -> None:
    with blackhole_listener() as hole:
        assert hole.url("/").startswith("http://127.0.0.1:")
        with socket.socket() as sock:
            sock.settimeout(0.3)
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                sock.connect((hole.host, hole.port))
            assert time.monotonic() - started >= 0.25


def test_refusing_port() -> None:
    with refusing_port() as port, pytest.raises(ConnectionRefusedError):
        socket.create_connection((port.host, port.port), timeout=2).close()


# --------------------------------------------------------------------------------------------
# Async tests and helpers


async def test_async_plugin_runs_on_the_loop_kind(
    loop_kind: str, scripted_server: ServerFactory
) -> None:
    loop = asyncio.get_running_loop()
    is_uvloop = type(loop).__module__.startswith("uvloop")
    assert is_uvloop == (loop_kind == "uvloop")
    server = scripted_server()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    response = await asyncio.wait_for(reader.read(), 5)
    assert response.endswith(b"\r\n\r\nhello")
    writer.close()
    await writer.wait_closed()
    await server.wait_for_async(lambda s: s.active == 0)
    gate = Gate()
    loop.call_later(0.01, gate.set)
    await gate.wait()


def test_open_fd_count_and_leak_check() -> None:
    before = open_fd_count()
    sock = socket.socket()
    assert open_fd_count() == before + 1
    with pytest.raises(AssertionError, match="leaked"), no_fd_leak(timeout=0.05):
        kept = socket.socket()
    kept.close()
    sock.close()
    with no_fd_leak():
        socket.socket().close()


_INNER_TESTS = """
    import asyncio
    import pytest

    async def test_runs(loop_kind):
        loop_module = type(asyncio.get_running_loop()).__module__.split(".")[0]
        assert loop_module == loop_kind

    async def test_leaves_task():
        asyncio.get_running_loop().create_task(asyncio.sleep(10), name="forgotten")

    async def test_callback_error():
        asyncio.get_running_loop().call_soon(lambda: 1 / 0)
        await asyncio.sleep(0.01)

    @pytest.mark.parametrize("loop_kind", ["uvloop"])
    async def test_pinned(loop_kind):
        pass

    def test_sync():
        pass
"""


def _outcomes(report: Path) -> dict[str, str]:
    """test name -> "passed", or the failure/skip message, from a JUnit XML report."""
    outcomes = {}
    for case in ElementTree.parse(report).getroot().iter("testcase"):
        problem = next(iter(case), None)
        if problem is None or problem.tag in ("system-out", "system-err"):
            outcomes[case.attrib["name"]] = "passed"
        else:
            outcomes[case.attrib["name"]] = f"{problem.tag}: {problem.attrib.get('message')}"
    return outcomes


def test_async_plugin_in_a_separate_session(tmp_path: Path) -> None:
    """Runs the plugin on a throw-away test file, with and without uvloop importable."""
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(_INNER_TESTS))
    (tmp_path / "hide_uvloop.py").write_text("import sys\nsys.modules['uvloop'] = None\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(tmp_path)])}
    command = [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider"]
    # Plugins these tests do not use cost most of a session's start-up time.
    command += ["-p", "no:hypothesispytest", "-p", "no:anyio"]
    command += ["-q", "-W", "error", "--rootdir", str(tmp_path), str(tmp_path / "test_inner.py")]
    variants = {"normal": [], "hidden": ["-p", "hide_uvloop"]}
    # Both sessions at once: each spends most of its time importing.
    processes = {
        name: subprocess.Popen(
            [*command, *extra, f"--junitxml={tmp_path / name}.xml"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name, extra in variants.items()
    }
    output = {name: process.communicate(timeout=60)[0] for name, process in processes.items()}
    normal = _outcomes(tmp_path / "normal.xml")
    assert normal.keys() == {
        "test_runs[asyncio]",
        "test_runs[uvloop]",
        "test_leaves_task[asyncio]",
        "test_leaves_task[uvloop]",
        "test_callback_error[asyncio]",
        "test_callback_error[uvloop]",
        "test_pinned[uvloop]",
        "test_sync",
    }, output["normal"]
    for name in ("test_runs[asyncio]", "test_runs[uvloop]", "test_pinned[uvloop]", "test_sync"):
        assert normal[name] == "passed", output["normal"]
    for kind in ("asyncio", "uvloop"):
        assert "left 1 task(s) pending: forgotten" in normal[f"test_leaves_task[{kind}]"]
        assert "ZeroDivisionError" in normal[f"test_callback_error[{kind}]"]
    hidden = _outcomes(tmp_path / "hidden.xml")
    assert hidden["test_runs[asyncio]"] == "passed", output["hidden"]
    # A hard failure, not a skip.
    assert hidden["test_runs[uvloop]"].startswith("failure: Failed: uvloop is not installed")
