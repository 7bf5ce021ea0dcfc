"""HTTP semantics over HTTP/2, through both clients, against the scripted H2Server: trailers,
interim responses, bodiless responses, the protocol version, and request headers as the
server received them (RFC 9113 section 8). Every test checks for leaks and server-side
protocol errors (see h2helpers)."""

from __future__ import annotations

import time

import pytest

import poolhttp
from tests.integration.clients import make_client
from tests.integration.h2helpers import (
    TLS_MODES,
    H2Factory,
    body_json,
    h2_options,
)

pytestmark = [pytest.mark.timeout(30), pytest.mark.usefixtures("h2_leak_check")]

PSEUDO = [":method", ":scheme", ":authority", ":path"]
CONNECTION_SPECIFIC = {"connection", "keep-alive", "proxy-connection", "transfer-encoding",
                       "upgrade"}


@TLS_MODES
def test_trailers_interim_and_bodiless_responses(client_kind: str, h2server: H2Factory,
                                                 tls: bool) -> None:
    server = h2server(tls=tls)
    with make_client(client_kind, **h2_options(server)) as client:
        trailers = client.get(server.url("/trailers"))
        with client.stream("GET", server.url("/trailers")) as streamed:
            streamed_body = streamed.read()
            streamed_trailers = (streamed.response if client_kind != "sync"
                                 else streamed).trailers
        interim = client.get(server.url("/interim"))
        head = client.head(server.url("/echo"))
        no_content = client.get(server.url("/status/204"))
        not_modified = client.get(server.url("/status/304"))
        teapot = client.get(server.url("/status/418"))
        plain = client.get(server.url("/echo"))
    assert trailers.status_code == 200
    assert trailers.content == b"body"
    assert isinstance(trailers.trailers, poolhttp.Headers)
    assert trailers.trailers["x-checksum"] == "abc"
    assert streamed_body == b"body"
    assert streamed_trailers["x-checksum"] == "abc"
    assert plain.trailers == poolhttp.Headers()  # none sent
    assert (interim.status_code, interim.content) == (200, b"final")
    assert "link" not in interim.headers  # the 103's field stays with the 103
    assert head.status_code == 200
    assert head.content == b""
    assert int(head.headers["content-length"]) > 100  # what a GET would get: no body
    assert (no_content.status_code, no_content.content) == (204, b"")
    assert (not_modified.status_code, not_modified.content) == (304, b"")
    assert (teapot.status_code, teapot.content) == (418, b"status 418")
    for response in (trailers, interim, head, no_content, not_modified, teapot, plain):
        assert response.http_version == "HTTP/2"
    assert teapot.reason_phrase in ("I'm a Teapot", "I'm a teapot", "")
    assert server.accepted == 1


@TLS_MODES
def test_request_headers_as_the_server_sees_them(client_kind: str, h2server: H2Factory,
                                                 tls: bool) -> None:
    server = h2server(tls=tls)
    with make_client(client_kind, **h2_options(server, headers={"X-Client-Default": "d"})
                     ) as client:
        response = client.get(server.url("/echo?q=1"), headers={
            "Connection": "keep-alive", "Keep-Alive": "timeout=5", "Upgrade": "h2c",
            "Proxy-Connection": "keep-alive", "Transfer-Encoding": "chunked",
            "Host": "example.test:8443", "X-Mixed-Case": "Value", "TE": "gzip"})
        trailers_ok = client.post(server.url("/echo"), content=b"abc",
                                  headers={"TE": "trailers", "Content-Length": "999"})
        plain = client.get(server.url("/echo"))
    sent = body_json(response)["headers"]
    names = [name for name, _ in sent]
    assert names[:4] == PSEUDO
    assert not any(name.startswith(":") for name in names[4:])
    assert all(name == name.lower() for name in names)
    assert not CONNECTION_SPECIFIC & set(names)
    assert "host" not in names
    assert "te" not in names  # only "TE: trailers" may go over HTTP/2
    fields = dict(sent)
    assert fields[":method"] == "GET"
    assert fields[":scheme"] == ("https" if tls else "http")
    assert fields[":authority"] == "example.test:8443"
    assert fields[":path"] == "/echo?q=1"
    assert fields["x-mixed-case"] == "Value"
    assert fields["x-client-default"] == "d"
    posted = body_json(trailers_ok)
    posted_fields = dict(posted["headers"])
    assert posted_fields["te"] == "trailers"
    assert posted_fields["content-length"] == "3"  # the body's, not the user's
    assert posted["body_length"] == 3
    assert [name for name, _ in posted["headers"]].count("content-length") == 1
    plain_fields = dict(body_json(plain)["headers"])
    assert plain_fields[":authority"] == f"127.0.0.1:{server.port}"
    assert "content-length" not in plain_fields  # a GET without a body says nothing
    assert plain.http_version == "HTTP/2"
    assert server.alpn_protocols == (["h2"] if tls else [None])


def test_many_concurrent_streams_share_one_connection(client_kind: str,
                                                      h2server: H2Factory) -> None:
    from concurrent.futures import ThreadPoolExecutor

    server = h2server()
    with make_client(client_kind, **h2_options(server)) as client, \
            ThreadPoolExecutor(16) as pool:
        client.get(server.url("/echo"))
        responses = list(pool.map(lambda n: client.get(server.url(f"/delay/50?{n}")),
                                  range(64)))
    assert {r.status_code for r in responses} == {200}
    assert {r.headers["x-conn"] for r in responses} == {"1"}
    assert len({r.headers["x-stream"] for r in responses}) == 64
    assert server.max_concurrent_streams_seen > 1
    assert server.accepted == 1


def test_server_pings_are_answered(client_kind: str, h2server: H2Factory) -> None:
    server = h2server(tls=False)
    with make_client(client_kind, **h2_options(server)) as client:
        assert client.get(server.url("/ping")).status_code == 200
        server.wait_for(lambda s: s.ping_acks_received == 1)
    assert not server.protocol_errors


def test_a_connection_the_server_closed_while_idle_is_never_used(
        client_kind: str, h2server: H2Factory) -> None:
    server = h2server(tls=False)
    with make_client(client_kind, **h2_options(server)) as client:
        assert client.get(server.url("/close-idle")).status_code == 200
        server.wait_for(lambda s: s.open_connections == 0)
        deadline = time.monotonic() + 5
        while client.stats().connections and time.monotonic() < deadline:
            time.sleep(0.01)  # the client notices the close on its own (reader, transport)
        response = client.get(server.url("/echo"))
        stats = client.stats()
    assert response.headers["x-conn"] == "2"
    assert stats.retries == 0  # not tried on the dead one and resent: never handed out
    assert server.accepted == 2
