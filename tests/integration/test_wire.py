"""HTTP/1.1 on the wire, through both clients: framing, bodies, and what is sent."""

from __future__ import annotations

import json
from typing import Any

import pytest

import poolhttp
from tests.integration.clients import make_client
from tests.support.nginx import Nginx
from tests.support.scripted import ReceivedRequest, Reply, ServerFactory, echo_handler, in_sequence


def test_framings_and_reuse_after_each(client_kind: str, scripted_server: ServerFactory) -> None:
    replies = [
        Reply.ok(b"length"),
        Reply.chunked([b"chu", b"nk", b"ed"]),
        Reply.raw(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n"
                  b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\ninterim"),
        Reply.raw(b"HTTP/1.1 204 No Content\r\n\r\n"),
        Reply.raw(b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n"),
        Reply.ok(b"last"),
    ]
    server = scripted_server(in_sequence(*replies))
    with make_client(client_kind) as client:
        bodies = [client.get(server.url()).content for _ in replies]
    assert bodies == [b"length", b"chunked", b"interim", b"", b"", b"last"]
    assert server.accepted == 1  # every framing left the connection in step


def test_body_until_close(client_kind: str, scripted_server: ServerFactory) -> None:
    server = scripted_server(in_sequence(
        Reply.raw(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end")
        .close_after(),
        Reply.ok(b"again")))
    with make_client(client_kind) as client:
        assert client.get(server.url()).content == b"until the end"
        assert client.get(server.url()).content == b"again"
    assert server.accepted == 2


def test_head_has_no_body_whatever_content_length_says(client_kind: str, nginx: Nginx) -> None:
    with make_client(client_kind) as client:
        response = client.head(nginx.url("/1m"))
        assert response.headers["content-length"] == str(1 << 20)
        assert response.content == b""
        assert client.get(nginx.url("/")).content == b"hello\n"  # still in step
        assert client.stats().created == 1


def test_response_api(client_kind: str, scripted_server: ServerFactory) -> None:
    def handler(request: ReceivedRequest) -> Reply:
        return Reply.ok("héllo".encode("latin-1"), status=201, headers=[
            ("Content-Type", "text/plain; charset=latin-1"), ("Set-Cookie", "a=1"),
            ("set-cookie", "b=2")])

    server = scripted_server(handler)
    with make_client(client_kind) as client:
        response = client.get(server.url("/x?y=1"))
    assert response.status_code == 201
    assert response.reason_phrase == "Created"
    assert response.http_version == "HTTP/1.1"
    assert response.text == "héllo"
    assert response.headers.get_list("SET-COOKIE") == ["a=1", "b=2"]
    assert response.headers["set-cookie"] == "a=1, b=2"
    assert str(response.url) == server.url("/x?y=1")
    assert response.request.method == "GET"
    assert response.elapsed.total_seconds() > 0
    assert response.raise_for_status() is response


def test_raise_for_status(client_kind: str, scripted_server: ServerFactory) -> None:
    server = scripted_server(lambda request: Reply.ok(b"nope", status=404))
    with make_client(client_kind) as client:
        response = client.get(server.url("/missing"))
    with pytest.raises(poolhttp.HTTPStatusError) as info:
        response.raise_for_status()
    assert info.value.response is response
    assert "404" in str(info.value)
    assert "/missing" in str(info.value)


def test_what_is_sent(client_kind: str, scripted_server: ServerFactory) -> None:
    server = scripted_server(echo_handler)
    with make_client(client_kind, base_url=server.url("/api"),
                     headers={"X-Default": "1", "User-Agent": "custom/1"}) as client:
        got = json.loads(client.post("items", params={"q": "a b", "n": [1, 2]},
                                     headers={"X-Extra": "2"}, json={"k": "v"}).content)
        form = json.loads(client.post("/form", data={"a": "1"}).content)
        raw = json.loads(client.request("PUT", "/raw", content=b"\x00\x01").content)
        empty = json.loads(client.post("/empty").content)
        chunked = json.loads(client.post("/chunks", content=iter([b"ab", b"", b"cd"])).content)
    headers = {name.lower(): value for name, value in got["headers"]}
    assert got["method"] == "POST"
    assert got["target"] == "/api/items?q=a+b&n=1&n=2"
    assert headers["host"] == server.origin.split("://")[1]
    assert headers["x-default"] == "1"
    assert headers["x-extra"] == "2"
    assert headers["user-agent"] == "custom/1"
    assert headers["content-type"] == "application/json"
    assert got["body_length"] == len(b'{"k":"v"}')
    assert form["body_length"] == 3
    assert dict((k.lower(), v) for k, v in form["headers"])["content-type"] == (
        "application/x-www-form-urlencoded")
    assert raw["body_length"] == 2
    assert empty["body_length"] == 0
    assert ["Content-Length", "0"] in empty["headers"]  # a POST always says its length
    assert chunked["chunked"] is True
    assert chunked["body_length"] == 4


def test_per_request_headers_override_defaults(
        client_kind: str, scripted_server: ServerFactory) -> None:
    server = scripted_server(echo_handler)
    with make_client(client_kind, headers={"X-A": "default"}) as client:
        got = json.loads(client.get(server.url(), headers={"x-a": "mine"}).content)
        again = json.loads(client.get(server.url()).content)
    assert [v for k, v in got["headers"] if k.lower() == "x-a"] == ["mine"]
    assert [v for k, v in again["headers"] if k.lower() == "x-a"] == ["default"]


@pytest.mark.parametrize(("url", "words"), [
    ("example.com/path", "no scheme"),
    ("ftp://example.com/", "unsupported URL scheme"),
    ("http:///nohost", "no host"),
    ("http://exa mple.com/", "invalid"),
    ("http://example.com/\r\nX-Injected: 1", "control character"),
    ("http://example.com:99999/", "invalid"),
])
def test_bad_urls_are_refused_before_sending(client_kind: str, url: str, words: str) -> None:
    with make_client(client_kind) as client:
        with pytest.raises(poolhttp.InvalidURL) as info:
            client.get(url)
        assert client.stats().created == 0
    assert words.lower() in str(info.value).lower()


@pytest.mark.parametrize(("kwargs", "error", "words"), [
    ({"headers": {"X-Bad": "a\r\nInjected: 1"}}, poolhttp.InvalidRequest, "CR, LF or NUL"),
    ({"headers": {"Bad Name": "x"}}, poolhttp.InvalidRequest, "invalid header name"),
    ({"headers": {"X-Nul": "a\x00b"}}, poolhttp.InvalidRequest, "CR, LF or NUL"),
    ({"content": {"a": 1}}, poolhttp.InvalidRequest, "use json="),
    ({"content": 42}, poolhttp.InvalidRequest, "content= must be"),
    ({"json": {"a": object()}}, poolhttp.InvalidRequest, "not JSON-serialisable"),
    ({"json": {}, "content": b"x"}, poolhttp.InvalidRequest, "only one of"),
])
def test_bad_request_arguments_are_refused_before_sending(
        client_kind: str, scripted_server: ServerFactory, kwargs: dict[str, Any],
        error: type[Exception], words: str) -> None:
    server = scripted_server()
    with make_client(client_kind) as client, pytest.raises(error) as info:
        client.post(server.url(), **kwargs)
    assert words in str(info.value)
    assert server.accepted == 0


@pytest.mark.parametrize("method", ["GE T", "GET\r\n", "G\x00T", ""])
def test_bad_methods_are_refused(client_kind: str, method: str) -> None:
    with make_client(client_kind) as client, pytest.raises(poolhttp.InvalidRequest):
        client.request(method, "http://127.0.0.1:9/")


def test_closed_client_refuses_requests(client_kind: str, scripted_server: ServerFactory) -> None:
    server = scripted_server()
    with make_client(client_kind) as client:
        client.close()
        with pytest.raises(poolhttp.PoolClosed, match="closed"):
            client.get(server.url())
    assert server.accepted == 0


def test_timeout_accepts_floats_and_per_request_override(client_kind: str,
                                                         scripted_server: ServerFactory) -> None:
    server = scripted_server(lambda request: Reply.ok(b"late").delay(0.5))
    with make_client(client_kind, timeout=0.2) as client:
        with pytest.raises(poolhttp.ReadTimeout) as info:
            client.get(server.url())
        assert client.get(server.url(), timeout=5).content == b"late"
    assert server.origin in str(info.value)
    assert "0.2s" in str(info.value)
