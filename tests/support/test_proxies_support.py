"""Self-tests of the proxy fixtures and of the nginx listeners added for proxy, client
certificate, session resumption and Unix-socket tests. Only the standard library talks to
them (http.client, ssl, raw sockets with handshakes written out here), never poolhttp."""

from __future__ import annotations

import asyncio
import base64
import http.client
import os
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager, suppress
from functools import partial
from pathlib import Path
from typing import TypeVar

import pytest

from tests.support import no_fd_leak
from tests.support import proxies as proxies_module
from tests.support.certs import CertBundle
from tests.support.nginx import Nginx
from tests.support.proxies import (
    DEFAULT_GARBAGE,
    Dante,
    Microsocks,
    ProxyError,
    ProxyFactory,
    ProxyMode,
    ScriptedProxy,
    Stunnel,
    Tinyproxy,
    _group_members,
)
from tests.support.scripted import ServerFactory, refusing_port

TIMEOUT = 5.0


# --------------------------------------------------------------------------------------------
# Helpers: HTTP and SOCKS spoken by hand


def connect(port: int, host: str = "127.0.0.1") -> socket.socket:
    return socket.create_connection((host, port), timeout=TIMEOUT)


def recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError(f"closed after {data!r}")
        data += chunk
    return data


def read_to_eof(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def read_response(sock: socket.socket, tunnel: bool = False) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.x response with a Content-Length (or read to EOF without one); with
    `tunnel`, a 200 is the answer to a CONNECT and has no body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError(f"closed after {data!r}")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    status = int(status_line.split()[1])
    if tunnel and status == 200:
        assert body == b"", body
        return status, headers, b""
    if "content-length" in headers:
        body += recv_exact(sock, int(headers["content-length"]) - len(body))
    else:
        body += read_to_eof(sock)
    return status, headers, body


def get_over(sock: socket.socket, path: str = "/", host: str = "127.0.0.1") -> bytes:
    """A GET on an open connection or tunnel; returns the body."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    status, _, body = read_response(sock)
    assert status == 200
    return body


def socks5_greeting(sock: socket.socket, methods: bytes = b"\x00") -> int:
    """Send the greeting; the method the server chose."""
    sock.sendall(bytes([5, len(methods)]) + methods)
    version, method = recv_exact(sock, 2)
    assert version == 5
    return method


def socks5_login(sock: socket.socket, username: str, password: str) -> int:
    """Username/password sub-negotiation (RFC 1929); the status (0: success)."""
    user, secret = username.encode(), password.encode()
    sock.sendall(bytes([1, len(user)]) + user + bytes([len(secret)]) + secret)
    version, status = recv_exact(sock, 2)
    assert version == 1
    return status


def socks5_connect_request(host: str, port: int) -> bytes:
    try:
        address = bytes([1]) + socket.inet_pton(socket.AF_INET, host)
    except OSError:
        try:
            address = bytes([4]) + socket.inet_pton(socket.AF_INET6, host)
        except OSError:
            address = bytes([3, len(host)]) + host.encode()
    return bytes([5, 1, 0]) + address + struct.pack("!H", port)


def socks5_connect(sock: socket.socket, host: str, port: int) -> int:
    """Send a CONNECT request; the reply code (0: succeeded), bound address consumed."""
    sock.sendall(socks5_connect_request(host, port))
    version, code, _reserved, address_type = recv_exact(sock, 4)
    assert version == 5
    recv_exact(sock, {1: 4, 4: 16}.get(address_type, 0) + 2)
    return code


def socks4_request(host: str, port: int, user: str = "tester") -> bytes:
    """SOCKS4 CONNECT; a host that is not an IPv4 literal makes it SOCKS4a."""
    try:
        address, name = socket.inet_aton(host), b""
    except OSError:
        address, name = b"\x00\x00\x00\x01", host.encode() + b"\x00"
    return b"\x04\x01" + struct.pack("!H", port) + address + user.encode() + b"\x00" + name


def socks4_connect(sock: socket.socket, host: str, port: int, user: str = "tester") -> int:
    """The reply code: 0x5A granted, 0x5B rejected or failed."""
    sock.sendall(socks4_request(host, port, user))
    version, code = recv_exact(sock, 8)[:2]
    assert version == 0
    return code


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


# --------------------------------------------------------------------------------------------
# tinyproxy


def test_tinyproxy_forwards_and_logs(tinyproxy: Tinyproxy, nginx: Nginx) -> None:
    since, before = tinyproxy.mark(), nginx.server_stats()
    assert tinyproxy.url == f"http://127.0.0.1:{tinyproxy.port}"
    target = nginx.url("/16k")
    connection = http.client.HTTPConnection(tinyproxy.host, tinyproxy.port, timeout=TIMEOUT)
    try:
        connection.request("GET", target)
        response = connection.getresponse()
        assert response.read() == nginx.file_bytes("16k")
        assert "connection" not in {name.lower() for name in response.headers}
    finally:
        connection.close()
    log = tinyproxy.log(since)
    assert (log.accepted, log.requests, log.connects) == (1, [f"GET {target} HTTP/1.1"], [])
    assert (log.established, log.errors) == (["127.0.0.1"], [])
    assert tinyproxy.requests(since) == log.requests
    assert nginx.server_stats().since(before).requests == 1


def test_tinyproxy_serves_one_request_per_connection(tinyproxy: Tinyproxy, nginx: Nginx) -> None:
    """The documented surprise: a keep-alive-looking response, then a close."""
    with closing(connect(tinyproxy.port)) as sock:
        sock.sendall(f"GET {nginx.url('/')} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        status, headers, body = read_response(sock)
        assert (status, body) == (200, b"hello\n")
        assert "connection" not in headers
        assert headers["via"].startswith("1.1 tinyproxy")
        assert read_to_eof(sock) == b""


def test_tinyproxy_connect_tunnel(tinyproxy: Tinyproxy, nginx: Nginx, certs: CertBundle) -> None:
    since = tinyproxy.mark()
    connection = http.client.HTTPSConnection(
        tinyproxy.host, tinyproxy.port, timeout=TIMEOUT, context=certs.client_context()
    )
    connection.set_tunnel("127.0.0.1", nginx.https_port)
    try:
        connection.request("GET", "/1m")
        assert connection.getresponse().read() == nginx.file_bytes("1m")
        connection.request("GET", "/16k")  # the tunnel is kept open
        assert connection.getresponse().read() == nginx.file_bytes("16k")
    finally:
        connection.close()
    log = tinyproxy.log(since)
    assert log.connects == [f"127.0.0.1:{nginx.https_port}"]
    assert (log.accepted, log.requests) == (1, [])


def test_tinyproxy_64_concurrent_tunnels(tinyproxy: Tinyproxy, nginx: Nginx) -> None:
    n = 64
    since, before = tinyproxy.mark(), nginx.server_stats()
    tunnels: list[socket.socket] = []
    try:
        for _ in range(n):
            sock = connect(tinyproxy.port)
            tunnels.append(sock)
            sock.sendall(f"CONNECT 127.0.0.2:{nginx.port(1)} HTTP/1.1\r\n\r\n".encode())
        for sock in tunnels:  # all open at once before any is used
            assert read_response(sock, tunnel=True)[0] == 200
        assert nginx.server_stats().since(before).accepted == n
        for sock in tunnels:
            assert get_over(sock, "/", "127.0.0.2") == b"hello\n"
    finally:
        for sock in tunnels:
            sock.close()
    log = tinyproxy.log(since)
    assert (log.accepted, len(log.connects)) == (n, n)
    assert nginx.server_stats().since(before).requests == n


def test_tinyproxy_auth(tinyproxy_auth: Tinyproxy, nginx: Nginx) -> None:
    proxy = tinyproxy_auth
    assert proxy.url == f"http://127.0.0.1:{proxy.port}"
    assert proxy.url_with_auth == (
        f"http://{proxy.username}:{proxy.password}@127.0.0.1:{proxy.port}"
    )
    assert proxy.username is not None
    assert proxy.password is not None
    since = proxy.mark()
    good = basic(proxy.username, proxy.password)
    for credentials in (None, basic(proxy.username, "wrong"), good):
        for request in (
            f"GET {nginx.url('/')} HTTP/1.1\r\nHost: 127.0.0.1\r\n",
            f"CONNECT 127.0.0.1:{nginx.port()} HTTP/1.1\r\n",
        ):
            header = f"Proxy-Authorization: {credentials}\r\n" if credentials else ""
            with closing(connect(proxy.port)) as sock:
                sock.sendall((request + header + "\r\n").encode())
                if credentials is None:
                    status, headers, _ = read_response(sock)
                    assert status == 407
                    assert headers["proxy-authenticate"] == 'Basic realm="Tinyproxy"'
                elif credentials != good:  # tinyproxy 1.11: 401 and WWW-Authenticate
                    status, headers, _ = read_response(sock)
                    assert status == 401
                    assert headers["www-authenticate"] == 'Basic realm="Tinyproxy"'
                elif request.startswith("CONNECT"):
                    assert read_response(sock, tunnel=True)[0] == 200
                    assert get_over(sock) == b"hello\n"
                else:
                    assert read_response(sock)[2] == b"hello\n"
    log = proxy.log(since)
    assert (log.accepted, len(log.requests), len(log.connects)) == (6, 3, 3)
    assert log.established == ["127.0.0.1", "127.0.0.1"]  # only the authorized two


def test_tinyproxy_unreachable_target(tinyproxy: Tinyproxy) -> None:
    since = tinyproxy.mark()
    with refusing_port() as port, closing(connect(tinyproxy.port)) as sock:
        sock.sendall(f"CONNECT 127.0.0.1:{port.port} HTTP/1.1\r\n\r\n".encode())
        status, _, _ = read_response(sock)
    assert status == 500  # tinyproxy's "Unable to connect", not 502
    log = tinyproxy.log(since)
    assert log.connects == [f"127.0.0.1:{port.port}"]
    assert any("Could not establish a connection" in error for error in log.errors)


# --------------------------------------------------------------------------------------------
# SOCKS5 (microsocks) and SOCKS4 (dante)


@pytest.mark.parametrize("target_host", ["127.0.0.1", "127.0.0.2"])
def test_socks5_by_hand(socks5: Microsocks, nginx: Nginx, target_host: str) -> None:
    assert socks5.url == f"socks5://127.0.0.1:{socks5.port}"
    index = nginx.addresses.index(target_host)
    before = nginx.server_stats()
    with closing(connect(socks5.port, socks5.host)) as sock:
        assert socks5_greeting(sock, b"\x00") == 0
        assert socks5_connect(sock, target_host, nginx.port(index)) == 0
        assert get_over(sock, "/16k") == nginx.file_bytes("16k")
        assert get_over(sock, "/") == b"hello\n"
    assert nginx.server_stats().since(before).accepted == 1


def test_socks5_refused_target(socks5: Microsocks) -> None:
    with refusing_port() as port, closing(connect(socks5.port)) as sock:
        assert socks5_greeting(sock) == 0
        assert socks5_connect(sock, "127.0.0.1", port.port) != 0


def test_socks5_auth(socks5_auth: Microsocks, nginx: Nginx) -> None:
    proxy = socks5_auth
    assert proxy.username is not None
    assert proxy.password is not None
    assert proxy.url_with_auth == (
        f"socks5://{proxy.username}:{proxy.password}@127.0.0.1:{proxy.port}"
    )
    with closing(connect(proxy.port)) as sock:  # no authentication: not acceptable
        assert socks5_greeting(sock, b"\x00") == 0xFF
    with closing(connect(proxy.port)) as sock:
        assert socks5_greeting(sock, b"\x00\x02") == 2
        assert socks5_login(sock, proxy.username, "wrong") != 0
    with closing(connect(proxy.port)) as sock:
        assert socks5_greeting(sock, b"\x00\x02") == 2
        assert socks5_login(sock, proxy.username, proxy.password) == 0
        assert socks5_connect(sock, "127.0.0.1", nginx.port()) == 0
        assert get_over(sock) == b"hello\n"


def test_socks4_by_hand(socks4: Dante, nginx: Nginx) -> None:
    assert socks4.url == f"socks4://127.0.0.1:{socks4.port}"
    assert socks4.socks5_url == f"socks5://127.0.0.1:{socks4.port}"
    since, before = socks4.mark(), nginx.server_stats()
    with closing(connect(socks4.port)) as sock:
        assert socks4_connect(sock, "127.0.0.1", nginx.port()) == 0x5A
        assert get_over(sock, "/16k") == nginx.file_bytes("16k")
    with closing(connect(socks4.port)) as sock:  # the same port speaks SOCKS5
        assert socks5_greeting(sock) == 0
        assert socks5_connect(sock, "127.0.0.2", nginx.port(1)) == 0
        assert get_over(sock) == b"hello\n"
    expected = [f"127.0.0.1:{nginx.port()}", f"127.0.0.2:{nginx.port(1)}"]
    assert socks4.wait_for_targets(lambda targets: len(targets) >= 2, since) == expected
    assert nginx.server_stats().since(before).accepted == 2


def test_socks4a_is_not_supported_by_dante(socks4: Dante, nginx: Nginx) -> None:
    with closing(connect(socks4.port)) as sock:
        assert socks4_connect(sock, "localhost", nginx.port()) == 0x5B


# --------------------------------------------------------------------------------------------
# Process lifecycle


@pytest.mark.parametrize(
    "make",
    [
        lambda: Tinyproxy(),
        lambda: Tinyproxy(username="a", password="b"),
        lambda: Microsocks(),
        lambda: Microsocks(username="a", password="b"),
        lambda: Dante(),
    ],
    ids=["tinyproxy", "tinyproxy-auth", "microsocks", "microsocks-auth", "dante"],
)
def test_process_proxy_starts_fast_and_stops_clean(
    make: Callable[[], Tinyproxy | Microsocks | Dante],
) -> None:
    proxy = make()
    started = time.monotonic()
    proxy.start()
    try:
        assert time.monotonic() - started < 2
        assert proxy.process is not None
        assert proxy.directory is not None
        pid, directory, port = proxy.process.pid, proxy.directory, proxy.port
        assert _group_members(pid)
        with pytest.raises(ProxyError, match="already started"):
            proxy.start()
    finally:
        proxy.stop()
    proxy.stop()  # idempotent
    assert _group_members(pid) == []
    assert not directory.exists()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_missing_binary_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(proxies_module, "find_binary", lambda name: None)
    with pytest.raises(ProxyError, match="Debian package microsocks"):
        Microsocks().start()


# --------------------------------------------------------------------------------------------
# Scripted proxy: relay


def test_scripted_connect_is_recorded_and_tunnelled(
    fault_proxy: ProxyFactory, nginx: Nginx, certs: CertBundle
) -> None:
    proxy = fault_proxy()
    connection = http.client.HTTPSConnection(
        proxy.host, proxy.port, timeout=TIMEOUT, context=certs.client_context()
    )
    connection.set_tunnel("127.0.0.1", nginx.https_port, headers={"Proxy-Test": "1"})
    try:
        connection.request("GET", "/16k")
        assert connection.getresponse().read() == nginx.file_bytes("16k")
    finally:
        connection.close()
    proxy.wait_for(lambda p: p.active == 0)
    (request,) = proxy.requests
    expected = f"CONNECT 127.0.0.1:{nginx.https_port} HTTP/1.0\r\nProxy-Test: 1\r\n\r\n"
    assert request.raw == expected.encode()
    assert (request.method, request.target, request.get("proxy-test")) == (
        "CONNECT",
        f"127.0.0.1:{nginx.https_port}",
        "1",
    )
    assert proxy.targets == [f"127.0.0.1:{nginx.https_port}"]
    (record,) = proxy.connections
    assert record.tunnel == f"127.0.0.1:{nginx.https_port}"
    assert record.received.startswith(request.raw)
    assert record.sent_downstream > 16 * 1024
    assert record.closed


def test_scripted_forward_requests_are_recorded(fault_proxy: ProxyFactory) -> None:
    proxy = fault_proxy(forward_body=b"from-proxy")
    first = b"GET http://example.test/a?b=1 HTTP/1.1\r\nHost: example.test\r\n\r\n"
    second = (
        b"POST http://[::1]:8080/u HTTP/1.1\r\nHost: [::1]:8080\r\nContent-Length: 3\r\n\r\nabc"
    )
    third = (
        b"PUT https://localhost/c HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: close\r\n\r\n2\r\nxy\r\n0\r\n\r\n"
    )
    with closing(connect(proxy.port)) as sock:
        for raw in (first, second, third):
            sock.sendall(raw)
            status, headers, body = read_response(sock)
            assert (status, body, headers["x-proxy-connection"]) == (200, b"from-proxy", "0")
        assert headers["connection"] == "close"
        assert read_to_eof(sock) == b""
    requests = proxy.requests
    assert [request.raw for request in requests] == [first, second, third]
    assert [request.body for request in requests] == [b"", b"abc", b"xy"]
    assert proxy.targets == ["example.test:80", "[::1]:8080", "localhost:443"]
    assert requests[0].target == "http://example.test/a?b=1"
    assert proxy.accepted == 1


def test_scripted_http_auth_challenge_then_success(fault_proxy: ProxyFactory, nginx: Nginx) -> None:
    proxy = fault_proxy(auth=("user@x", "p:ss"))
    assert proxy.url_with_auth() == f"http://user%40x:p%3Ass@127.0.0.1:{proxy.port}"
    with closing(connect(proxy.port)) as sock:
        connect_line = f"CONNECT 127.0.0.1:{nginx.port()} HTTP/1.1\r\n"
        sock.sendall(f"{connect_line}\r\n".encode())
        status, headers, _ = read_response(sock)
        assert (status, headers["proxy-authenticate"]) == (407, 'Basic realm="scripted-proxy"')
        assert "connection" not in headers  # the client may answer on the same connection
        sock.sendall(
            f"{connect_line}Proxy-Authorization: {basic('user@x', 'p:ss')}\r\n\r\n".encode()
        )
        assert read_response(sock, tunnel=True)[0] == 200
        assert get_over(sock) == b"hello\n"
    assert [request.get("proxy-authorization") for request in proxy.requests] == [
        None,
        basic("user@x", "p:ss"),
    ]


def test_scripted_socks5_relay_with_names_and_auth(fault_proxy: ProxyFactory, nginx: Nginx) -> None:
    proxy = fault_proxy(auth=("u", "p"), names={"origin.test": "127.0.0.1"})
    with closing(connect(proxy.port)) as sock:  # wrong password
        assert socks5_greeting(sock, b"\x02") == 2
        assert socks5_login(sock, "u", "nope") == 1
    with closing(connect(proxy.port)) as sock:  # no acceptable method
        assert socks5_greeting(sock, b"\x00") == 0xFF
    with closing(connect(proxy.port)) as sock:
        assert socks5_greeting(sock, b"\x00\x02") == 2
        assert socks5_login(sock, "u", "p") == 0
        assert socks5_connect(sock, "origin.test", nginx.port()) == 0
        assert get_over(sock, "/16k") == nginx.file_bytes("16k")
    proxy.wait_for(lambda p: p.active == 0)
    last = proxy.requests[-1]
    assert (last.protocol, last.methods, last.username, last.password) == (
        "socks5",
        b"\x00\x02",
        "u",
        "p",
    )
    assert (last.address_type, last.host, last.port) == ("domain", "origin.test", nginx.port())
    login = b"\x01\x01u\x01p"
    assert last.raw == b"\x05\x02\x00\x02" + login + socks5_connect_request(
        "origin.test", nginx.port()
    )
    assert proxy.targets == [f"origin.test:{nginx.port()}"]
    assert proxy.connections[-1].tunnel == f"origin.test:{nginx.port()}"


def test_scripted_socks5_without_auth_accepts_ipv4(fault_proxy: ProxyFactory, nginx: Nginx) -> None:
    proxy = fault_proxy()
    with closing(connect(proxy.port)) as sock:
        assert socks5_greeting(sock, b"\x00") == 0
        assert socks5_connect(sock, "127.0.0.3", nginx.port(2)) == 0
        assert get_over(sock) == b"hello\n"
    assert proxy.requests[0].address_type == "ipv4"
    assert proxy.url("socks5h") == f"socks5h://127.0.0.1:{proxy.port}"


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"], ids=["socks4", "socks4a"])
def test_scripted_socks4_relay(fault_proxy: ProxyFactory, nginx: Nginx, host: str) -> None:
    proxy = fault_proxy()
    with closing(connect(proxy.port)) as sock:
        assert socks4_connect(sock, host, nginx.port(), user="me") == 0x5A
        assert get_over(sock, "/16k") == nginx.file_bytes("16k")
    (request,) = proxy.requests
    assert (request.protocol, request.host, request.port, request.username) == (
        "socks4",
        host,
        nginx.port(),
        "me",
    )
    assert request.address_type == ("ipv4" if host == "127.0.0.1" else "domain")
    assert request.raw == socks4_request(host, nginx.port(), "me")


def test_scripted_relay_refuses_targets_off_loopback(fault_proxy: ProxyFactory) -> None:
    proxy = fault_proxy()
    for target in ("192.0.2.1:80", "example.com:443"):  # never connected, never resolved
        with closing(connect(proxy.port)) as sock:
            sock.sendall(f"CONNECT {target} HTTP/1.1\r\n\r\n".encode())
            assert read_response(sock)[0] == 403
    with closing(connect(proxy.port)) as sock:
        assert socks5_greeting(sock) == 0
        assert socks5_connect(sock, "192.0.2.1", 80) == 0x02
    with closing(connect(proxy.port)) as sock:
        assert socks4_connect(sock, "example.com", 80) == 0x5B
    with refusing_port() as port, closing(connect(proxy.port)) as sock:
        assert socks5_greeting(sock) == 0
        assert socks5_connect(sock, "127.0.0.1", port.port) == 0x05
    assert all(not record.tunnel for record in proxy.connections)


# --------------------------------------------------------------------------------------------
# Scripted proxy: faults


@pytest.mark.parametrize("status", [403, 407, 502])
@pytest.mark.parametrize("kind", ["connect", "forward"])
def test_scripted_status(fault_proxy: ProxyFactory, status: int, kind: str) -> None:
    proxy = fault_proxy("status", status=status, body=b"nope")
    request = (
        "CONNECT 127.0.0.1:1 HTTP/1.1\r\n\r\n"
        if kind == "connect"
        else "GET http://127.0.0.1:1/ HTTP/1.1\r\nHost: 127.0.0.1:1\r\n\r\n"
    )
    with closing(connect(proxy.port)) as sock:
        sock.sendall(request.encode())
        got, headers, body = read_response(sock)
        assert read_to_eof(sock) == b""
    assert (got, body, headers["connection"]) == (status, b"nope", "close")
    assert headers.get("proxy-authenticate") == ('Basic realm="x"' if status == 407 else None)
    assert proxy.requests[0].raw == request.encode()


def test_scripted_status_keep_alive_and_delay(fault_proxy: ProxyFactory) -> None:
    proxy = fault_proxy("status", status=407, keep_alive=True, delay=0.2)
    with closing(connect(proxy.port)) as sock:
        for _ in range(2):
            started = time.monotonic()
            sock.sendall(b"CONNECT 127.0.0.1:1 HTTP/1.1\r\n\r\n")
            status, headers, _ = read_response(sock)
            assert (status, "connection" in headers) == (407, False)
            assert time.monotonic() - started >= 0.19
    assert len(proxy.requests) == 2


@pytest.mark.parametrize("protocol", ["http", "socks5", "socks4"])
def test_scripted_garbage_and_close(fault_proxy: ProxyFactory, protocol: str) -> None:
    first = {
        "http": b"CONNECT 127.0.0.1:1 HTTP/1.1\r\n\r\n",
        "socks5": b"\x05\x01\x00",
        "socks4": socks4_request("127.0.0.1", 1),
    }[protocol]
    modes: list[tuple[ProxyMode, bytes]] = [("garbage", DEFAULT_GARBAGE), ("close", b"")]
    for mode, expected in modes:
        proxy = fault_proxy(mode)
        with closing(connect(proxy.port)) as sock:
            sock.sendall(first)
            assert read_to_eof(sock) == expected
        proxy.wait_for(lambda p: p.active == 0)
        assert proxy.requests[0].protocol == protocol
        assert proxy.requests[0].raw == first
        assert proxy.protocol_errors == []


def test_scripted_close_on_accept(fault_proxy: ProxyFactory) -> None:
    proxy = fault_proxy("close_on_accept")
    with closing(connect(proxy.port)) as sock:
        assert read_to_eof(sock) == b""
    proxy.wait_for(lambda p: p.active == 0)
    assert (proxy.accepted, proxy.requests) == (1, [])


def test_scripted_silent_holds_until_stopped(fault_proxy: ProxyFactory) -> None:
    proxy = fault_proxy("silent", read_timeout=0.1)  # silent ignores the read time-out
    with closing(connect(proxy.port)) as sock:
        sock.sendall(b"CONNECT 127.0.0.1:1 HTTP/1.1\r\n\r\n")
        sock.settimeout(0.5)
        with pytest.raises(TimeoutError):
            sock.recv(1)
        proxy.wait_for(lambda p: len(p.requests) == 1)
        assert proxy.active == 1
        sock.settimeout(TIMEOUT)
        proxy.stop()
        assert read_to_eof(sock) == b""
    assert proxy.active == 0


@pytest.mark.parametrize("code", [0x01, 0x05])
def test_scripted_socks5_reply_code(fault_proxy: ProxyFactory, code: int) -> None:
    proxy = fault_proxy("socks5_reply", reply=code)
    with closing(connect(proxy.port)) as sock:
        assert socks5_greeting(sock) == 0
        assert socks5_connect(sock, "localhost", 443) == code
        assert read_to_eof(sock) == b""
    assert proxy.targets == ["localhost:443"]


def test_scripted_socks5_no_methods_and_auth_rejected(fault_proxy: ProxyFactory) -> None:
    proxy = fault_proxy("socks5_no_methods")
    with closing(connect(proxy.port)) as sock:
        assert socks5_greeting(sock, b"\x00\x02") == 0xFF
        assert read_to_eof(sock) == b""
    rejecting = fault_proxy("socks5_auth_rejected")
    with closing(connect(rejecting.port)) as sock:
        assert socks5_greeting(sock, b"\x00\x02") == 2
        assert socks5_login(sock, "alice", "secret") == 1
        assert read_to_eof(sock) == b""
    (request,) = rejecting.requests
    assert (request.username, request.password) == ("alice", "secret")


def test_scripted_socks4_reply_code(fault_proxy: ProxyFactory) -> None:
    proxy = fault_proxy("socks4_reply", reply=0x5B)
    with closing(connect(proxy.port)) as sock:
        assert socks4_connect(sock, "127.0.0.1", 80) == 0x5B
        assert read_to_eof(sock) == b""


def test_scripted_protocol_mismatch_is_recorded(fault_proxy: ProxyFactory) -> None:
    proxy = fault_proxy("status", status=403)
    with closing(connect(proxy.port)) as sock:
        sock.sendall(b"\x05\x01\x00")
        assert read_to_eof(sock) == b""
    proxy.wait_for(lambda p: p.active == 0)
    assert len(proxy.protocol_errors) == 1
    assert "SOCKS5 client in mode 'status'" in proxy.protocol_errors[0]


def test_scripted_connection_limit(fault_proxy: ProxyFactory) -> None:
    proxy = fault_proxy("silent", max_connections=2)
    socks = [connect(proxy.port) for _ in range(2)]
    try:
        proxy.wait_for(lambda p: p.active == 2)
        with closing(connect(proxy.port)) as extra:
            assert read_to_eof(extra) == b""
        assert (proxy.over_limit, proxy.max_active, proxy.accepted) == (1, 2, 3)
    finally:
        for sock in socks:
            sock.close()
    proxy.wait_for(lambda p: p.active == 0)


def test_scripted_proxy_leaves_nothing_behind(nginx: Nginx) -> None:
    threads_before = threading.active_count()
    with no_fd_leak():
        proxy = ScriptedProxy()
        with proxy:
            held = connect(proxy.port)  # still open when the proxy stops
            assert socks5_greeting(held) == 0
            assert socks5_connect(held, "127.0.0.1", nginx.port()) == 0
            with closing(connect(proxy.port)) as sock:
                sock.sendall(b"CONNECT 127.0.0.1:1 HTTP/1.1\r\n\r\n")  # refused target
                assert read_response(sock)[0] == 502
        assert read_to_eof(held) == b""
        held.close()
        assert proxy.active == 0
    assert threading.active_count() == threads_before


def test_scripted_proxy_reports_internal_errors() -> None:
    proxy = ScriptedProxy()
    proxy.start()
    proxy._internal_errors.append("boom")
    with pytest.raises(AssertionError, match="boom"):
        proxy.stop()
    with pytest.raises(ValueError, match="unknown mode"):
        ScriptedProxy("nonsense")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a loopback"):
        ScriptedProxy(names={"x.test": "192.0.2.1"})


async def test_scripted_proxy_async_wait(fault_proxy: ProxyFactory, nginx: Nginx) -> None:
    proxy = fault_proxy()
    reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
    writer.write(f"CONNECT 127.0.0.1:{nginx.port()} HTTP/1.1\r\n\r\n".encode())
    assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT) == (
        b"HTTP/1.1 200 Connection established\r\n\r\n"
    )
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert (await asyncio.wait_for(reader.read(), TIMEOUT)).endswith(b"hello\n")
    writer.close()
    await writer.wait_closed()
    await proxy.wait_for_async(lambda p: p.active == 0)
    assert proxy.connections[0].closed


# --------------------------------------------------------------------------------------------
# nginx: client certificates


def _mtls_get(
    nginx: Nginx, context: ssl.SSLContext, path: str = "/client-cert"
) -> tuple[int, bytes]:
    connection = http.client.HTTPSConnection(
        "127.0.0.1", nginx.mtls_port, timeout=TIMEOUT, context=context
    )
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_mtls_accepts_the_client_certificate(nginx: Nginx, certs: CertBundle) -> None:
    assert nginx.mtls_url("/x") == f"https://127.0.0.1:{nginx.mtls_port}/x"
    variants = {
        "plain key": (certs.client_cert_path, certs.client_key_path, None),
        "encrypted key": (
            certs.client_cert_path,
            certs.client_encrypted_key_path,
            certs.client_key_password,
        ),
        "one file": (certs.client_pem_path, None, None),
    }
    for name, (certfile, keyfile, password) in variants.items():
        context = certs.client_context()
        context.load_cert_chain(str(certfile), None if keyfile is None else str(keyfile), password)
        status, body = _mtls_get(nginx, context)
        assert status == 200, name
        verify, subject = body.decode().splitlines()
        assert verify == "SUCCESS"
        assert f"CN={certs.client_common_name}" in subject
    assert _mtls_get(nginx, certs.client_context(with_client_cert=True), "/16k") == (
        200,
        nginx.file_bytes("16k"),
    )


def test_mtls_encrypted_key_needs_its_password(certs: CertBundle) -> None:
    context = certs.client_context()
    with pytest.raises(ssl.SSLError):
        context.load_cert_chain(
            str(certs.client_cert_path), str(certs.client_encrypted_key_path), "wrong"
        )


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_mtls_without_or_with_a_foreign_certificate_gets_400(
    nginx: Nginx, certs: CertBundle, version: ssl.TLSVersion
) -> None:
    """nginx completes the handshake either way and answers 400."""
    context = certs.client_context()
    context.maximum_version = version
    status, body = _mtls_get(nginx, context)
    assert (status, b"No required SSL certificate was sent" in body) == (400, True)
    context.load_cert_chain(
        str(certs.untrusted_client_cert_path), str(certs.untrusted_client_key_path)
    )
    status, body = _mtls_get(nginx, context)
    assert (status, b"The SSL certificate error" in body) == (400, True)


def test_mtls_server_context_fails_the_handshake(
    scripted_server: ServerFactory, certs: CertBundle
) -> None:
    server = scripted_server(tls=certs.mtls_server_context())
    context = certs.client_context()
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with closing(connect(server.port)) as raw, pytest.raises(ssl.SSLError):
        context.wrap_socket(raw, server_hostname="127.0.0.1")
    context = certs.client_context(with_client_cert=True)
    with (
        closing(connect(server.port)) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        assert get_over(tls) == b"hello"


# --------------------------------------------------------------------------------------------
# nginx: session resumption


def _resume_get(
    nginx: Nginx,
    context: ssl.SSLContext,
    session: ssl.SSLSession | None,
    uri: str,
    keepalive: bool = False,
) -> tuple[bool, ssl.SSLSession | None]:
    """One request on a new connection (offering `session`); (resumed?, session)."""
    raw = connect(nginx.resume_port(keepalive=keepalive))
    with context.wrap_socket(raw, server_hostname="127.0.0.1", session=session) as tls:
        assert get_over(tls, uri) == b"hello\n"
        return bool(tls.session_reused), tls.session


@pytest.mark.parametrize(
    ("version", "tickets"),
    [
        (ssl.TLSVersion.TLSv1_2, True),
        (ssl.TLSVersion.TLSv1_2, False),  # TLS 1.3 resumes with tickets only
        (ssl.TLSVersion.TLSv1_3, True),
    ],
    ids=["tls1.2-tickets", "tls1.2-session-ids", "tls1.3-tickets"],
)
def test_session_log_shows_resumption(
    nginx: Nginx, certs: CertBundle, version: ssl.TLSVersion, tickets: bool
) -> None:
    context = certs.client_context()
    context.minimum_version = context.maximum_version = version
    if not tickets:
        context.options |= ssl.OP_NO_TICKET  # resumption from nginx's shared session cache
    tag = f"{version.name}-{tickets}-{os.getpid()}-{time.monotonic_ns()}"
    uris = [f"/?t={tag}-{i}" for i in range(3)]
    session = None
    reused = []
    for uri in uris:
        was_reused, session = _resume_get(nginx, context, session, uri)
        reused.append(was_reused)
    assert reused == [False, True, True]
    entries = nginx.wait_for_session_log(lambda log: sum(e.uri in uris for e in log) == 3)
    mine = [entry for entry in entries if entry.uri in uris]
    assert [entry.reused for entry in mine] == [False, True, True]
    assert {entry.protocol for entry in mine} == {
        "TLSv1.2" if version is ssl.TLSVersion.TLSv1_2 else "TLSv1.3"
    }
    assert len({entry.connection for entry in mine}) == 3
    assert all(not entry.keepalive and entry.status == 200 for entry in mine)


def test_resume_url_keepalive_reuses_the_connection(nginx: Nginx, certs: CertBundle) -> None:
    assert nginx.resume_url("/", keepalive=True) == f"https://127.0.0.1:{nginx.resume_port()}/"
    assert nginx.resume_url("/", keepalive=False).endswith(
        f":{nginx.resume_port(keepalive=False)}/"
    )
    tag = f"ka-{time.monotonic_ns()}"
    with certs.client_context().wrap_socket(
        connect(nginx.resume_port()), server_hostname="127.0.0.1"
    ) as tls:
        for i in range(2):
            assert get_over(tls, f"/?t={tag}-{i}") == b"hello\n"
        port = tls.getsockname()[1]
    entries = nginx.wait_for_session_log(lambda log: sum(tag in e.uri for e in log) == 2)
    mine = [entry for entry in entries if tag in entry.uri]
    assert [entry.connection_requests for entry in mine] == [1, 2]
    assert mine[0].connection == mine[1].connection
    assert {entry.remote_port for entry in mine} == {port}
    assert all(entry.keepalive for entry in mine)


# --------------------------------------------------------------------------------------------
# nginx: Unix domain socket


@contextmanager
def unix_connection(path: str) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(TIMEOUT)
        sock.connect(path)
        yield sock
    finally:
        sock.close()


def test_uds_listener_logs_the_host_header(nginx: Nginx) -> None:
    assert Path(nginx.uds_path).is_socket()
    before = len(nginx.uds_log())
    with unix_connection(nginx.uds_path) as sock:
        assert get_over(sock, "/16k?uds=1", "Example.TEST:8080") == nginx.file_bytes("16k")
        sock.sendall(b"GET /?uds=2 HTTP/1.0\r\n\r\n")  # no Host header at all
        status, _, body = read_response(sock)
        assert (status, body) == (200, b"hello\n")
    entries = nginx.wait_for_uds_log(lambda log: len(log) >= before + 2)[before:]
    assert [(e.http_host, e.host, e.uri, e.method) for e in entries] == [
        ("Example.TEST:8080", "example.test", "/16k?uds=1", "GET"),
        ("", "", "/?uds=2", "GET"),
    ]
    assert [e.protocol for e in entries] == ["HTTP/1.1", "HTTP/1.0"]


def test_uds_is_removed_with_the_instance(certs: CertBundle) -> None:
    with Nginx(certs=certs, addresses=("127.0.0.1",), ipv6=False) as server:
        path = Path(server.uds_path)
        assert path.is_socket()
        started = time.monotonic()
        with unix_connection(server.uds_path) as sock:
            assert get_over(sock) == b"hello\n"
        assert time.monotonic() - started < 2
    assert not path.exists()


# --------------------------------------------------------------------------------------------
# https:// proxies: stunnel in front of tinyproxy, and the scripted proxy with `tls=`


T = TypeVar("T")


class TlsInside:
    """A TLS client over a byte stream that is already open, through the ssl module's memory
    BIOs: over a TLS connection to a proxy (TLS inside TLS), or over a plain socket where a
    test must send close_notify and go on reading, which an `ssl.SSLSocket` cannot do."""

    def __init__(self, outer: socket.socket, context: ssl.SSLContext, server_hostname: str) -> None:
        self.outer = outer
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = context.wrap_bio(self.incoming, self.outgoing, server_hostname=server_hostname)
        self.closed_cleanly: bool | None = None  # at the end: close_notify (True) or a bare EOF
        self._run(self.obj.do_handshake)

    def _flush(self) -> None:
        if data := self.outgoing.read():
            self.outer.sendall(data)

    def _run(self, operation: Callable[[], T]) -> T:
        while True:
            try:
                result = operation()
            except ssl.SSLWantReadError:
                self._flush()
                data = self.outer.recv(65536)
                if data:
                    self.incoming.write(data)
                else:
                    self.incoming.write_eof()
            else:
                self._flush()
                return result

    def sendall(self, data: bytes) -> None:
        sent = 0
        while sent < len(data):
            sent += self._run(partial(self.obj.write, data[sent:]))

    def recv(self) -> bytes:
        """Some plaintext; b"" at the end (see `closed_cleanly`)."""
        if self.closed_cleanly is not None:
            return b""
        try:
            data = self._run(lambda: self.obj.read(65536))
        except ssl.SSLZeroReturnError:  # close_notify, after ours was sent
            data = b""
        except ssl.SSLEOFError:
            self.closed_cleanly = False
            return b""
        if not data:  # close_notify
            self.closed_cleanly = True
        return data

    def read_to_eof(self) -> bytes:
        data = b""
        while chunk := self.recv():
            data += chunk
        return data

    def read_response(self) -> tuple[int, dict[str, str], bytes]:
        """One response with a Content-Length (as `read_response` for sockets)."""
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.recv()
            if not chunk:
                raise EOFError(f"closed after {data!r}")
            data += chunk
        head, body = data.split(b"\r\n\r\n", 1)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        while len(body) < int(headers["content-length"]):
            chunk = self.recv()
            if not chunk:
                raise EOFError(f"body cut short after {len(body)} bytes")
            body += chunk
        return int(status_line.split()[1]), headers, body

    def close_notify(self) -> None:
        """Send close_notify and keep the stream open for reading."""
        try:
            self.obj.unwrap()
        except ssl.SSLWantReadError:  # the peer's close_notify has not come yet
            pass
        self._flush()


def tls_connect(port: int, context: ssl.SSLContext) -> ssl.SSLSocket:
    return context.wrap_socket(connect(port), server_hostname="127.0.0.1")


@contextmanager
def answers_after_eof(reply: bytes = b"after-eof") -> Iterator[tuple[int, list[bytes]]]:
    """A target for one connection that reads until the client's FIN and only then answers
    `reply`: (port, [what it read]), to see whether a proxy passes a half-close on."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(TIMEOUT)
    received: list[bytes] = []

    def serve() -> None:
        with suppress(OSError):  # a time-out, or the proxy is gone by the time we answer
            accepted, _ = listener.accept()
            with accepted:
                accepted.settimeout(TIMEOUT)
                received.append(read_to_eof(accepted))
                accepted.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], received
    finally:
        thread.join(TIMEOUT + 1)
        listener.close()


def test_https_proxy_forwards_over_tls(
    https_proxy: Stunnel, nginx: Nginx, certs: CertBundle
) -> None:
    proxy = https_proxy
    assert proxy.url == f"https://127.0.0.1:{proxy.port}"
    assert (proxy.host, proxy.ca_path) == ("127.0.0.1", certs.ca_path)
    since, tinyproxy_since = proxy.mark(), proxy.tinyproxy.mark()
    before = nginx.server_stats()
    target = nginx.url("/16k")
    context = ssl.create_default_context(cafile=str(proxy.ca_path))
    connection = http.client.HTTPSConnection(
        proxy.host, proxy.port, timeout=TIMEOUT, context=context
    )
    try:
        connection.request("GET", target)  # absolute form: a forward request, inside TLS
        response = connection.getresponse()
        assert (response.status, response.read()) == (200, nginx.file_bytes("16k"))
        assert response.headers["Via"].startswith("1.1 tinyproxy")
        assert isinstance(connection.sock, ssl.SSLSocket)
        certificate = connection.sock.getpeercert()
        assert certificate is not None
        assert ("IP Address", "127.0.0.1") in certificate["subjectAltName"]
    finally:
        connection.close()
    log = proxy.log(since)
    assert (log.accepted, log.handshakes, log.resumed, log.errors) == (1, 1, 0, [])
    assert proxy.accepted(since) == 1
    assert proxy.tinyproxy.requests(tinyproxy_since) == [f"GET {target} HTTP/1.1"]
    assert nginx.server_stats().since(before).requests == 1
    # Written once stunnel closed both sides (it waits for the client's close).
    ((to_client, to_upstream),) = proxy.wait_for_log(
        lambda log: bool(log.transfers), since
    ).transfers
    assert to_client > 16 * 1024
    assert to_upstream > len(f"GET {target} HTTP/1.1\r\n")


def test_https_proxy_connect_tls_in_tls(
    https_proxy: Stunnel, nginx: Nginx, certs: CertBundle
) -> None:
    proxy = https_proxy
    since, tinyproxy_since = proxy.mark(), proxy.tinyproxy.mark()
    with tls_connect(proxy.port, certs.client_context()) as outer:
        outer.sendall(f"CONNECT 127.0.0.1:{nginx.https_port} HTTP/1.1\r\n\r\n".encode())
        assert read_response(outer, tunnel=True)[0] == 200
        inner = TlsInside(outer, certs.client_context(), "127.0.0.1")
        assert inner.obj.getpeercert() is not None  # nginx's certificate, verified
        for path in ("/1m", "/16k"):  # the tunnel carries several requests
            inner.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            status, _, body = inner.read_response()
            assert (status, body) == (200, nginx.file_bytes(path[1:]))
    assert proxy.tinyproxy.connects(tinyproxy_since) == [f"127.0.0.1:{nginx.https_port}"]
    assert (proxy.accepted(since), proxy.log(since).handshakes) == (1, 1)


def test_https_proxy_auth(https_proxy_auth: Stunnel, nginx: Nginx, certs: CertBundle) -> None:
    proxy = https_proxy_auth
    assert proxy.username is not None
    assert proxy.password is not None
    assert (proxy.username, proxy.password) == (
        proxy.tinyproxy.username,
        proxy.tinyproxy.password,
    )
    assert proxy.url == f"https://127.0.0.1:{proxy.port}"
    assert proxy.url_with_auth == (
        f"https://{proxy.username}:{proxy.password}@127.0.0.1:{proxy.port}"
    )
    request = f"GET {nginx.url('/')} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    with tls_connect(proxy.port, certs.client_context()) as sock:
        sock.sendall(f"{request}\r\n".encode())
        status, headers, _ = read_response(sock)
        assert (status, headers["proxy-authenticate"]) == (407, 'Basic realm="Tinyproxy"')
    credentials = basic(proxy.username, proxy.password)
    with tls_connect(proxy.port, certs.client_context()) as sock:
        sock.sendall(f"{request}Proxy-Authorization: {credentials}\r\n\r\n".encode())
        assert read_response(sock)[:3:2] == (200, b"hello\n")


def test_https_proxy_records_failed_handshakes(https_proxy: Stunnel) -> None:
    proxy = https_proxy
    since = proxy.mark()
    with closing(connect(proxy.port)) as raw, pytest.raises(ssl.SSLCertVerificationError):
        ssl.create_default_context().wrap_socket(raw, server_hostname="127.0.0.1")
    with closing(connect(proxy.port)) as sock:  # plaintext: stunnel resets the connection
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        with suppress(ConnectionResetError):
            assert read_to_eof(sock) == b""
    log = proxy.wait_for_log(lambda log: len(log.handshake_errors) == 2, since)
    assert (log.accepted, log.handshakes) == (2, 0)
    assert "alert unknown ca" in log.handshake_errors[0]
    assert "http request" in log.handshake_errors[1]


@pytest.mark.parametrize(
    "version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["tls1.2", "tls1.3"]
)
def test_https_proxy_resumes_sessions(
    https_proxy: Stunnel, nginx: Nginx, certs: CertBundle, version: ssl.TLSVersion
) -> None:
    since = https_proxy.mark()
    context = certs.client_context()
    context.minimum_version = context.maximum_version = version
    session = None
    reused = []
    for _ in range(2):
        with context.wrap_socket(
            connect(https_proxy.port), server_hostname="127.0.0.1", session=session
        ) as sock:
            sock.sendall(f"GET {nginx.url('/')} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            assert read_response(sock)[2] == b"hello\n"
            reused.append(sock.session_reused)
            session = sock.session
    assert reused == [False, True]
    assert (https_proxy.log(since).handshakes, https_proxy.log(since).resumed) == (2, 1)


def test_https_proxy_half_close_ends_the_tunnel(https_proxy: Stunnel, certs: CertBundle) -> None:
    """stunnel passes the client's close_notify on as a FIN, but tinyproxy then tears the
    tunnel down: the target reads to its end, and its answer never reaches the client."""
    with answers_after_eof() as (port, received), closing(connect(https_proxy.port)) as raw:
        tls = TlsInside(raw, certs.client_context(), "127.0.0.1")
        tls.sendall(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n".encode())
        assert tls.recv().startswith(b"HTTP/1.0 200 Connection established\r\n")
        tls.sendall(b"ping")
        tls.close_notify()
        assert (tls.read_to_eof(), tls.closed_cleanly) == (b"", True)
    assert received == [b"ping"]


def test_stunnel_starts_fast_and_stops_clean(tinyproxy: Tinyproxy, certs: CertBundle) -> None:
    proxy = Stunnel(tinyproxy, certs)
    started = time.monotonic()
    proxy.start()
    try:
        assert time.monotonic() - started < 1
        assert proxy.process is not None
        assert proxy.directory is not None
        pid, directory, port = proxy.process.pid, proxy.directory, proxy.port
        assert _group_members(pid)
        assert proxy.log().accepted == 0  # readiness left no trace
        assert (directory / "server-key.pem").stat().st_mode & 0o077 == 0
    finally:
        proxy.stop()
    assert _group_members(pid) == []
    assert not directory.exists()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_stunnel_missing_binary_names_the_package(
    monkeypatch: pytest.MonkeyPatch, tinyproxy: Tinyproxy, certs: CertBundle
) -> None:
    monkeypatch.setattr(proxies_module, "find_binary", lambda name: None)
    with pytest.raises(ProxyError, match="Debian package stunnel4"):
        Stunnel(tinyproxy, certs).start()


def test_scripted_proxy_over_tls(
    fault_proxy: ProxyFactory, nginx: Nginx, certs: CertBundle
) -> None:
    proxy = fault_proxy(tls=certs, forward_body=b"from-proxy")
    assert proxy.url() == proxy.url("https") == f"https://127.0.0.1:{proxy.port}"
    assert proxy.url("socks5") == f"socks5://127.0.0.1:{proxy.port}"
    connection = http.client.HTTPSConnection(
        proxy.host, proxy.port, timeout=TIMEOUT, context=certs.client_context()
    )
    try:
        for _ in range(2):  # keep-alive inside TLS
            connection.request("GET", "http://origin.test/x")
            response = connection.getresponse()
            assert (response.status, response.read()) == (200, b"from-proxy")
            assert response.headers["X-Proxy-Connection"] == "0"
    finally:
        connection.close()
    with tls_connect(proxy.port, certs.client_context()) as outer:
        connect_request = f"CONNECT 127.0.0.1:{nginx.https_port} HTTP/1.1\r\n\r\n".encode()
        outer.sendall(connect_request)
        assert read_response(outer, tunnel=True)[0] == 200
        inner = TlsInside(outer, certs.client_context(), "127.0.0.1")
        inner.sendall(b"GET /1m HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert inner.read_response()[2] == nginx.file_bytes("1m")
    with tls_connect(proxy.port, certs.client_context()) as sock:  # SOCKS5 inside TLS too
        assert socks5_greeting(sock) == 0
        assert socks5_connect(sock, "127.0.0.1", nginx.port()) == 0
        assert get_over(sock) == b"hello\n"
    proxy.wait_for(lambda p: p.active == 0)
    assert [request.protocol for request in proxy.requests] == ["http", "http", "http", "socks5"]
    assert proxy.requests[2].raw == connect_request
    assert proxy.connections[1].received.startswith(connect_request)  # plaintext, as sent
    assert proxy.connections[1].sent_downstream > 1 << 20
    assert (proxy.tls_errors, proxy.protocol_errors) == ([], [])


@pytest.mark.parametrize(
    ("mode", "options", "expected"),
    [
        ("status", {"status": 407}, 407),
        ("status", {"status": 403, "body": b"no"}, 403),
        ("garbage", {}, DEFAULT_GARBAGE),
        ("close", {}, b""),
        ("close_on_accept", {}, b""),
    ],
    ids=["407", "403", "garbage", "close", "close_on_accept"],
)
def test_scripted_faults_over_tls(
    fault_proxy: ProxyFactory,
    certs: CertBundle,
    mode: ProxyMode,
    options: dict[str, object],
    expected: int | bytes,
) -> None:
    proxy = fault_proxy(mode, tls=certs.server_context(), **options)
    request = b"CONNECT 127.0.0.1:1 HTTP/1.1\r\n\r\n"
    with closing(connect(proxy.port)) as raw:
        tls = TlsInside(raw, certs.client_context(), "127.0.0.1")
        if mode != "close_on_accept":
            tls.sendall(request)
        if isinstance(expected, int):
            status, headers, body = tls.read_response()
            assert (status, headers["connection"]) == (expected, "close")
            assert body == options.get("body", b"")
            if status == 407:
                assert headers["proxy-authenticate"] == 'Basic realm="x"'
            assert tls.read_to_eof() == b""
        else:
            assert tls.read_to_eof() == expected
        assert tls.closed_cleanly  # close_notify before the FIN
    proxy.wait_for(lambda p: p.active == 0)
    recorded = [request.raw for request in proxy.requests]
    assert recorded == ([] if mode == "close_on_accept" else [request])
    assert (proxy.tls_errors, proxy.protocol_errors) == ([], [])


def test_scripted_tls_handshake_failures_are_recorded(certs: CertBundle, nginx: Nginx) -> None:
    """Recorded in `tls_errors`, never an internal error; and a TLS tunnel still open when
    the proxy stops is closed like any other."""
    with no_fd_leak():
        with ScriptedProxy(tls=certs) as proxy:  # raises at exit on an internal error
            with closing(connect(proxy.port)) as raw, pytest.raises(ssl.SSLCertVerificationError):
                ssl.create_default_context().wrap_socket(raw, server_hostname="127.0.0.1")
            with closing(connect(proxy.port)) as sock:  # plaintext: OpenSSL sends no alert
                sock.sendall(b"CONNECT 127.0.0.1:1 HTTP/1.1\r\n\r\n")
                assert read_to_eof(sock) == b""
            with closing(connect(proxy.port)):  # closes without a handshake
                pass
            proxy.wait_for(lambda p: len(p.tls_errors) == 3 and p.active == 0)
            untrusted, plaintext, silent = proxy.tls_errors
            assert untrusted.startswith("connection 0: ")
            assert "UNKNOWN_CA" in untrusted
            assert "HTTPS_PROXY_REQUEST" in plaintext  # OpenSSL recognises a CONNECT
            assert "EOF" in silent
            assert (proxy.requests, proxy.protocol_errors) == ([], [])
            held = tls_connect(proxy.port, certs.client_context())
            held.sendall(f"CONNECT 127.0.0.1:{nginx.port()} HTTP/1.1\r\n\r\n".encode())
            assert read_response(held, tunnel=True)[0] == 200
        assert read_to_eof(held) == b""
        held.close()
        assert proxy.active == 0
        assert len(proxy.tls_errors) == 3


@pytest.mark.parametrize("with_request", [False, True], ids=["after", "with-the-request"])
def test_scripted_tls_tunnel_passes_half_close(
    fault_proxy: ProxyFactory, certs: CertBundle, with_request: bool
) -> None:
    """Unlike tinyproxy, the scripted relay keeps the other direction open after a client's
    close_notify (passed on as a FIN) and ends with close_notify when the target closes;
    also when the close_notify arrives together with the CONNECT request."""
    proxy = fault_proxy(tls=certs)
    with answers_after_eof(b"answer") as (port, received), closing(connect(proxy.port)) as raw:
        tls = TlsInside(raw, certs.client_context(), "127.0.0.1")
        request = f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n".encode()
        if with_request:
            tls.obj.write(request + b"ping")  # one flush: request, data and close_notify
            tls.close_notify()
        else:
            tls.sendall(request)
        expected = b"HTTP/1.1 200 Connection established\r\n\r\n"
        assert recv_exact_tls(tls, len(expected)) == expected
        if not with_request:
            tls.sendall(b"ping")
            tls.close_notify()
        assert (tls.read_to_eof(), tls.closed_cleanly) == (b"answer", True)
    assert received == [b"ping"]
    proxy.wait_for(lambda p: p.active == 0)
    assert (proxy.connections[0].sent_upstream, proxy.connections[0].sent_downstream) == (4, 6)


def recv_exact_tls(tls: TlsInside, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = tls.recv()
        if not chunk:
            raise EOFError(f"closed after {data!r}")
        data += chunk
    return data
