"""`poolhttp.contrib.httpx`: httpx clients over poolhttp's pool, against real servers.

What is checked: the request goes out as httpx built it (headers, target, body framing), the
body comes back undecoded for httpx to decode, the timeout extension and httpx's exception
types, the pool's reuse and close, on threads and on both event loops.
"""

from __future__ import annotations

import gzip
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

import poolhttp
from poolhttp.contrib.httpx import AsyncPoolTransport, PoolTransport
from tests.support.certs import CertBundle
from tests.support.nginx import Nginx
from tests.support.proxies import Tinyproxy
from tests.support.scripted import (
    Gate,
    ReceivedRequest,
    Reply,
    ServerFactory,
    echo_handler,
    refusing_port,
)

GZIPPED = gzip.compress(b"hello, compressed world" * 50)


def body_echo(request: ReceivedRequest) -> Reply:
    return Reply.ok(request.body)


def gzip_handler(request: ReceivedRequest) -> Reply:
    return Reply.ok(GZIPPED, headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"})


def test_importing_poolhttp_or_contrib_does_not_import_httpx() -> None:
    code = ("import sys, poolhttp, poolhttp.contrib; "
            "assert 'httpx' not in sys.modules, 'httpx imported'; "
            "import poolhttp.contrib.httpx; assert 'httpx' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_sync_request_goes_out_as_httpx_built_it(scripted_server: ServerFactory) -> None:
    server = scripted_server(echo_handler)
    with httpx.Client(transport=PoolTransport(), headers={"X-Custom": "yes"}) as client:
        response = client.get(server.url("/path%20x/[1]?q=a%2Fb&r=[2]"))
        assert response.status_code == 200
        assert response.http_version == "HTTP/1.1"
        assert response.extensions["http_version"] == b"HTTP/1.1"
        assert response.reason_phrase == "OK"
    [received] = server.received
    assert received.target == response.request.url.raw_path.decode("ascii")
    assert received.target == "/path%20x/[1]?q=a%2Fb&r=[2]"  # as httpx encoded it
    assert received.get("User-Agent") == f"python-httpx/{httpx.__version__}"
    assert received.get("X-Custom") == "yes"
    assert received.get("Accept-Encoding") == response.request.headers["Accept-Encoding"]
    assert received.get("Host") == server.url("/").split("//")[1].rstrip("/")
    # Nothing of poolhttp's own defaults, nothing twice.
    names = [name.lower() for name, _ in received.headers]
    assert sorted(names) == sorted(name.lower() for name in response.request.headers)
    assert received.get("Content-Length") is None
    assert not received.chunked


def test_deleted_httpx_header_stays_deleted(scripted_server: ServerFactory) -> None:
    server = scripted_server(echo_handler)
    with httpx.Client(transport=PoolTransport()) as client:
        request = client.build_request("GET", server.url("/"))
        del request.headers["User-Agent"]
        del request.headers["Accept"]
        client.send(request).read()
    [received] = server.received
    assert received.get("User-Agent") is None
    assert received.get("Accept") is None


def test_bodies_and_their_framing(scripted_server: ServerFactory) -> None:
    server = scripted_server(body_echo)

    def chunks() -> Iterator[bytes]:
        yield b"part one, "
        yield b"part two"

    with httpx.Client(transport=PoolTransport()) as client:
        assert client.post(server.url("/a"), content=b"known").content == b"known"
        assert client.post(server.url("/b"), content=chunks()).content == (
            b"part one, part two")
        assert client.post(server.url("/c"), json={"k": 1}).json() == {"k": 1}
        files = client.post(server.url("/d"), files={"f": ("a.txt", b"file data")})
        assert b"file data" in files.content
        assert client.post(server.url("/e")).content == b""
    known, streamed, as_json, multipart, empty = server.received
    assert known.get("Content-Length") == "5"
    assert not known.chunked
    assert streamed.chunked
    assert streamed.get("Content-Length") is None
    assert as_json.get("Content-Type") == "application/json"
    assert multipart.get("Content-Length") == str(len(multipart.body))
    assert not multipart.chunked
    assert empty.get("Content-Length") == "0"
    for received in server.received:
        assert len(received.get_all("Content-Length")) <= 1


def test_body_is_handed_over_undecoded(scripted_server: ServerFactory) -> None:
    server = scripted_server(gzip_handler)
    with httpx.Client(transport=PoolTransport()) as client:
        assert client.get(server.url("/")).text == "hello, compressed world" * 50
        with client.stream("GET", server.url("/")) as response:
            assert b"".join(response.iter_raw()) == GZIPPED


def test_redirects_cookies_auth_and_hooks_stay_httpx(scripted_server: ServerFactory) -> None:
    def handler(request: ReceivedRequest) -> Reply:
        if request.path == "/start":
            return Reply.ok(b"", status=302, headers={"Location": "/end",
                                                     "Set-Cookie": "flavour=oat; Path=/"})
        return echo_handler(request)

    server = scripted_server(handler)
    seen: list[str] = []
    with httpx.Client(transport=PoolTransport(), follow_redirects=True, auth=("ada", "pw"),
                      event_hooks={"request": [lambda r: seen.append(str(r.url))]}) as client:
        response = client.get(server.url("/start"))
        assert [r.status_code for r in response.history] == [302]
        assert client.cookies["flavour"] == "oat"
    start, end = server.received
    assert end.path == "/end"
    assert end.get("Cookie") == "flavour=oat"
    assert (end.get("Authorization") or "").startswith("Basic ")
    assert len(seen) == 2
    # The two requests shared one pooled connection.
    assert end.connection_index == start.connection_index == 0


def test_timeout_extension_is_honoured(scripted_server: ServerFactory) -> None:
    server = scripted_server(lambda request: Reply.stall())
    with httpx.Client(transport=PoolTransport(timeout=30.0)) as client, pytest.raises(
            httpx.ReadTimeout) as caught:
        client.get(server.url("/"), timeout=httpx.Timeout(5.0, read=0.2))
    assert isinstance(caught.value.__cause__, poolhttp.ReadTimeout)
    assert caught.value.__cause__.timeout == 0.2


def test_pool_timeout(scripted_server: ServerFactory) -> None:
    gate = Gate()

    def handler(request: ReceivedRequest) -> Reply:
        gate.wait_sync(10.0)
        return Reply.ok(b"late")

    server = scripted_server(handler)
    transport = PoolTransport(limits=poolhttp.Limits(max_connections=1))
    with httpx.Client(transport=transport) as client:
        first = threading.Thread(target=lambda: client.get(server.url("/")), daemon=True)
        first.start()
        server.wait_for(lambda s: s.requests == 1)
        with pytest.raises(httpx.PoolTimeout):
            client.get(server.url("/"), timeout=httpx.Timeout(5.0, pool=0.2))
        gate.set()
        first.join(10)


def test_transport_errors_are_httpx_types(scripted_server: ServerFactory) -> None:
    closing = scripted_server(lambda request: Reply.close_without_response())
    with httpx.Client(transport=PoolTransport()) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            client.get(closing.url("/"))
        with refusing_port() as port, pytest.raises(httpx.ConnectError):
            client.get(port.url("/"))
        with pytest.raises(httpx.UnsupportedProtocol):
            client._transport.handle_request(httpx.Request("GET", "ftp://example.org/"))
        bad = client.build_request("GET", closing.url("/"), headers={"X-Bad": "a\x00b"})
        with pytest.raises(httpx.LocalProtocolError):
            client.send(bad)


def test_body_errors_mid_stream_are_httpx_types(scripted_server: ServerFactory) -> None:
    server = scripted_server(lambda request: Reply.close_mid_body(b"x" * 1000, 10))
    with httpx.Client(transport=PoolTransport()) as client, pytest.raises(
            httpx.RemoteProtocolError):
        client.get(server.url("/"))


def test_retries_are_poolhttps(scripted_server: ServerFactory) -> None:
    transport = PoolTransport(retries=poolhttp.Retry(total=2, backoff_factor=0))
    with refusing_port() as port, httpx.Client(transport=transport) as client, pytest.raises(
            httpx.ConnectError) as caught:
        client.get(port.url("/"))
    assert isinstance(caught.value.__cause__, poolhttp.RetryError)
    assert len(caught.value.__cause__.errors) == 3


def test_http2_over_tls_with_verify(nginx: Nginx, certs: CertBundle) -> None:
    transport = PoolTransport(http2=True, verify=str(certs.ca_path))
    with httpx.Client(transport=transport) as client:
        responses = [client.get(nginx.https_url("/")) for _ in range(3)]
        assert {r.http_version for r in responses} == {"HTTP/2"}
        assert responses[0].text == "hello\n"
        assert transport.client.stats().created == 1
    assert transport.client.is_closed


def test_options_and_client(scripted_server: ServerFactory) -> None:
    with pytest.raises(TypeError, match="follow_redirects"):
        PoolTransport(follow_redirects=True)
    with poolhttp.Client() as other, pytest.raises(TypeError, match="not both"):
        PoolTransport(other, http2=True)
    async_client = poolhttp.AsyncClient()
    with pytest.raises(TypeError, match="AsyncPoolTransport"):
        PoolTransport(async_client)  # type: ignore[arg-type]
    async_client._closed = True  # never used: nothing to close, no loop needed
    server = scripted_server(echo_handler)
    with poolhttp.Client() as pool_client:
        with httpx.Client(transport=PoolTransport(pool_client, close_client=False)) as client:
            client.get(server.url("/"))
        assert not pool_client.is_closed
        assert pool_client.get(server.url("/")).status_code == 200
        assert pool_client.stats().created == 1  # the httpx client's connection, reused


# -- async, on both loops ----------------------------------------------------------------------
async def test_async_request_and_streamed_bodies(scripted_server: ServerFactory) -> None:
    server = scripted_server(body_echo)

    async def chunks() -> AsyncIterator[bytes]:
        yield b"async "
        yield b"body"

    async with httpx.AsyncClient(transport=AsyncPoolTransport(),
                                 headers={"X-Custom": "yes"}) as client:
        response = await client.post(server.url("/up"), content=chunks())
        assert response.content == b"async body"
        assert response.extensions["http_version"] == b"HTTP/1.1"
        assert (await client.post(server.url("/k"), content=b"known")).content == b"known"
        async with client.stream("GET", server.url("/")) as streamed:
            assert streamed.status_code == 200
            assert await streamed.aread() == b""  # a GET has no body to echo
    up, known, plain = server.received
    assert up.chunked
    assert up.get("X-Custom") == "yes"
    assert up.get("User-Agent") == f"python-httpx/{httpx.__version__}"
    assert known.get("Content-Length") == "5"
    assert plain.connection_index == 0  # one connection for all


async def test_async_body_is_handed_over_undecoded(scripted_server: ServerFactory) -> None:
    server = scripted_server(gzip_handler)
    async with httpx.AsyncClient(transport=AsyncPoolTransport()) as client:
        assert (await client.get(server.url("/"))).text == "hello, compressed world" * 50
        async with client.stream("GET", server.url("/")) as response:
            raw = [chunk async for chunk in response.aiter_raw()]
        assert b"".join(raw) == GZIPPED


async def test_async_timeouts_and_errors(scripted_server: ServerFactory) -> None:
    stalled = scripted_server(lambda request: Reply.stall())
    closing = scripted_server(lambda request: Reply.close_without_response())
    transport = AsyncPoolTransport()
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.get(stalled.url("/"), timeout=httpx.Timeout(5.0, read=0.2))
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(closing.url("/"))
        with refusing_port() as port, pytest.raises(httpx.ConnectError):
            await client.get(port.url("/"))
    assert transport.client.is_closed


async def test_async_http2(nginx: Nginx, certs: CertBundle) -> None:
    transport = AsyncPoolTransport(http2=True, verify=str(certs.ca_path))
    async with httpx.AsyncClient(transport=transport) as client:
        import asyncio

        responses = await asyncio.gather(*[client.get(nginx.https_url("/")) for _ in range(5)])
        assert {r.http_version for r in responses} == {"HTTP/2"}
        assert transport.client.stats().created == 1


def test_through_a_proxy(nginx: Nginx, tinyproxy_auth: Tinyproxy, certs: CertBundle) -> None:
    transport = PoolTransport(proxy=tinyproxy_auth.url_with_auth, verify=str(certs.ca_path))
    with httpx.Client(transport=transport) as client:
        assert client.get(nginx.url("/")).text == "hello\n"  # forwarded
        assert client.get(nginx.https_url("/")).text == "hello\n"  # tunnelled
    refused = PoolTransport(proxy=tinyproxy_auth.url, verify=str(certs.ca_path))
    with httpx.Client(transport=refused) as client:
        with pytest.raises(httpx.ProxyError) as caught:
            client.get(nginx.https_url("/"))
        assert isinstance(caught.value.__cause__, poolhttp.ProxyError)
        assert caught.value.__cause__.status == 407


def test_sync_transport_refuses_an_async_body() -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"x"

    request = httpx.Request("POST", "http://127.0.0.1:9/", content=body())
    with PoolTransport() as transport, pytest.raises(RuntimeError, match="async request"):
        transport.handle_request(request)


def test_closing_a_response_early_drops_its_connection(scripted_server: ServerFactory) -> None:
    server = scripted_server(lambda request: Reply.chunked([b"a" * 100] * 50, interval=0.01))
    transport = PoolTransport()
    with httpx.Client(transport=transport) as client:
        with client.stream("GET", server.url("/")) as response:
            first = next(response.iter_raw())
            assert first.startswith(b"a")
        stats = transport.client.stats()
        assert stats.connections == 0
        assert stats.closed == 1
        assert len(client.get(server.url("/")).content) == 5000  # read whole: kept
        assert transport.client.stats().idle == 1


def test_content_length_must_match_a_known_body(scripted_server: ServerFactory) -> None:
    server = scripted_server(body_echo)
    with httpx.Client(transport=PoolTransport()) as client:
        request = client.build_request("POST", server.url("/"), content=b"12345")
        request.headers["Content-Length"] = "3"
        with pytest.raises(httpx.LocalProtocolError, match="does not match"):
            client.send(request)
    assert server.received == []
