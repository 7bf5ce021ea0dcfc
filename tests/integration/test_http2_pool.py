"""HTTP/2 in the pool, checked from the servers' side: many requests share one connection up
to the concurrent-stream limits, the pool's limits, waiting and time-outs hold as for
HTTP/1.1, ALPN decides the connection kind, and `stats()` shows HTTP/2 connections and
their streams. nginx (TLS, `http2`), hypercorn (TLS and h2c) and the scripted h2 server.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import poolhttp
from tests.integration.clients import make_client
from tests.support.h2server import H2Server, pattern_body
from tests.support.httpbin import Httpbin
from tests.support.hypercorn import Hypercorn
from tests.support.nginx import Nginx


def _reader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "poolhttp-h2" and t.is_alive()]


async def test_200_concurrent_requests_share_connections_up_to_the_stream_limit(
        nginx: Nginx) -> None:
    before = nginx.server_stats()
    async with poolhttp.AsyncClient(http2=True, verify=nginx.ca_path) as client:
        url = nginx.https_url("/")
        responses = await asyncio.gather(*[client.get(url) for _ in range(200)])
        stats = client.stats()
    assert {r.http_version for r in responses} == {"HTTP/2"}
    assert {r.text for r in responses} == {"hello\n"}
    counted = nginx.server_stats().since(before)
    # nginx allows 128 streams per connection, the client 100 (Limits.max_concurrent_streams):
    # 200 at once need exactly two connections, not one each.
    assert counted.accepted == 2
    assert counted.requests == 200
    assert stats.created == 2
    assert stats.http2 == 2
    assert stats.created + stats.reused == 200


def test_64_threads_share_one_connection(nginx: Nginx) -> None:
    before = nginx.server_stats()
    with poolhttp.Client(http2=True, verify=nginx.ca_path) as client:
        url = nginx.https_url("/")
        with ThreadPoolExecutor(64) as pool:
            responses = list(pool.map(lambda _: client.get(url), range(640)))
        stats = client.stats()
        assert stats.per_host[nginx.https_url("")].http2 == 1
        assert len(_reader_threads()) == 1
    assert {(r.status_code, r.http_version, r.text) for r in responses} == {
        (200, "HTTP/2", "hello\n")}
    counted = nginx.server_stats().since(before)
    assert counted.accepted == 1
    assert counted.requests == 640
    assert stats.created == 1
    assert stats.reused == 639
    assert not _reader_threads()  # closing the client joined its reader


def test_large_download_over_nginx(nginx: Nginx, client_kind: str) -> None:
    client = make_client(client_kind, http2=True, verify=nginx.ca_path)
    try:
        response = client.get(nginx.https_url("/1m"))
    finally:
        client.close()
    assert response.http_version == "HTTP/2"
    assert response.content == nginx.file_bytes("1m")


def test_more_streams_than_connections_allow_wait_in_order(client_kind: str) -> None:
    """max_connections=2 and a server allowing 5 streams each: 40 requests never put more
    than 5 streams on a connection nor open a third one; all complete."""
    with H2Server(max_concurrent_streams=5) as server:
        client = make_client(client_kind, http2=True, http1=False,
                             limits=poolhttp.Limits(max_connections=2))
        try:
            with ThreadPoolExecutor(40) as pool:
                responses = list(pool.map(lambda _: client.get(server.url("/delay/30")),
                                          range(40)))
        finally:
            client.close()
        assert [r.status_code for r in responses] == [200] * 40
        assert server.accepted == 2
        assert server.max_concurrent_streams_seen <= 5
        assert not server.protocol_errors


def test_pool_timeout_when_every_stream_is_busy(client_kind: str) -> None:
    with H2Server(max_concurrent_streams=2) as server:
        client = make_client(client_kind, http2=True, http1=False,
                             limits=poolhttp.Limits(max_connections=1),
                             timeout=poolhttp.Timeout(5.0, pool=0.2))
        try:
            with ThreadPoolExecutor(3) as pool:
                futures = [pool.submit(client.get, server.url("/delay/800")) for _ in range(3)]
                outcomes: list[object] = []
                for future in futures:
                    try:
                        outcomes.append(future.result().status_code)
                    except poolhttp.PoolTimeout as exc:
                        outcomes.append(str(exc))
        finally:
            client.close()
        assert outcomes.count(200) == 2
        [error] = [o for o in outcomes if o != 200]
        assert "max_connections=1" in str(error)
        assert server.accepted == 1


async def test_stats_show_http2_connections_and_their_streams() -> None:
    with H2Server() as server:
        async with poolhttp.AsyncClient(http2=True, http1=False) as client:
            tasks = [asyncio.ensure_future(client.get(server.url("/delay/400")))
                     for _ in range(7)]
            await server.wait_for_async(lambda s: len(s.requests) == 7)
            stats = client.stats()
            host = stats.per_host[server.origin]
            assert (host.http2, host.streams, host.active, host.connections) == (1, 7, 1, 1)
            assert (stats.http2, stats.streams) == (1, 7)
            responses = await asyncio.gather(*tasks)
            after = client.stats()
        assert {r.headers["x-conn"] for r in responses} == {"1"}
        assert len({r.headers["x-stream"] for r in responses}) == 7
        assert (after.http2, after.streams, after.idle) == (1, 0, 1)
        assert after.created == 1
        assert after.reused == 6


def test_idle_http2_connection_expires(client_kind: str) -> None:
    with H2Server() as server:
        client = make_client(client_kind, http2=True, http1=False,
                             limits=poolhttp.Limits(keepalive_expiry=0.2))
        try:
            assert client.get(server.url("/echo")).status_code == 200
            server.wait_for(lambda s: s.open_connections == 0, timeout=5.0)
            assert client.stats().connections == 0
            assert client.get(server.url("/echo")).status_code == 200
        finally:
            client.close()
        assert server.accepted == 2


def test_hypercorn_over_tls_and_h2c(hypercorn: Hypercorn, client_kind: str) -> None:
    tls = make_client(client_kind, http2=True, verify=str(hypercorn.ca_path))
    h2c = make_client(client_kind, http2=True, http1=False)
    try:
        for client, url in ((tls, hypercorn.url_tls("/echo")), (h2c, hypercorn.url_h2c("/echo"))):
            response = client.post(url, content=b"x" * 100_000)
            assert response.http_version == "HTTP/2"
            echoed = json.loads(response.content)
            assert echoed["http_version"] == "2"
            assert echoed["body_length"] == 100_000
            body = client.get(url.replace("/echo", "/bytes/300000"))
            assert body.content == pattern_body(300_000)
    finally:
        tls.close()
        h2c.close()


def test_h2c_needs_http1_off(hypercorn: Hypercorn) -> None:
    """Over plain http, http2=True alone still speaks HTTP/1.1 (there is no upgrade); only
    http1=False means HTTP/2 with prior knowledge."""
    with poolhttp.Client(http2=True) as client:
        echoed = client.get(hypercorn.url_h2c("/echo")).json()
    assert echoed["http_version"] == "1.1"


def test_alpn_falls_back_to_http11_and_opens_a_connection_per_request(
        httpbin: Httpbin, client_kind: str) -> None:
    """A TLS server without h2: the first connection teaches the pool that this origin
    speaks HTTP/1.1, and concurrent requests get connections of their own."""
    client = make_client(client_kind, http2=True, verify=httpbin.ca_path)
    try:
        with ThreadPoolExecutor(4) as pool:
            responses = list(pool.map(lambda _: client.get(httpbin.https_url("/delay/0.3")),
                                      range(4)))
        stats = client.stats()
    finally:
        client.close()
    assert {r.http_version for r in responses} == {"HTTP/1.1"}
    assert stats.http2 == 0
    assert stats.created >= 2  # not all four behind one HTTP/1.1 connection


def test_http2_only_against_a_server_without_it(httpbin: Httpbin, client_kind: str) -> None:
    client = make_client(client_kind, http1=False, http2=True, verify=httpbin.ca_path)
    try:
        with pytest.raises(poolhttp.ConnectError, match="ALPN") as caught:
            client.get(httpbin.https_url("/get"))
    finally:
        client.close()
    assert caught.value.origin is not None
    assert caught.value.origin.startswith("https://")


def test_protocol_options_are_checked() -> None:
    with pytest.raises(ValueError, match="no protocol"):
        poolhttp.Client(http1=False, http2=False)
    with pytest.raises(TypeError, match="http2 must be True or False"):
        poolhttp.AsyncClient(http2="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_concurrent_streams"):
        poolhttp.Limits(max_concurrent_streams=0)


def test_no_reader_thread_outlives_its_connection() -> None:
    with H2Server() as server, poolhttp.Client(http2=True, http1=False,
                         limits=poolhttp.Limits(keepalive_expiry=0.1)) as client:
        client.get(server.url("/echo"))
        assert len(_reader_threads()) == 1
        deadline = time.monotonic() + 5
        while _reader_threads() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not _reader_threads()  # expired: the connection and its reader are gone
