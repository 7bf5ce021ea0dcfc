"""Request trailers (`trailers=`): after a chunked body on HTTP/1.1, as a last HEADERS frame
on HTTP/2; a callable computes them once a streamed body has gone out. Checked from the
servers' side: the strict scripted HTTP/1.1 parser and the h2 server (which report the
trailers they received)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest

import poolhttp
from tests.integration.clients import make_client
from tests.integration.h2helpers import TLS_MODES, H2Factory, body_json, h2_options
from tests.support.scripted import ServerFactory, echo_handler

pytestmark = pytest.mark.usefixtures("h2_leak_check")

PARTS = [b"a" * 1000, b"b" * 70_000, b"c" * 5]
DIGEST = hashlib.sha256(b"".join(PARTS)).hexdigest()


class Hashing:
    """A streamed body that hashes what it yields, and the trailers callable that reports
    the hash: it must be called only after the last chunk went out."""

    def __init__(self) -> None:
        self.hasher = hashlib.sha256()
        self.done = False

    def body(self) -> Iterator[bytes]:
        for part in PARTS:
            self.hasher.update(part)
            yield part
        self.done = True

    def trailers(self) -> dict[str, str]:
        assert self.done, "the trailers were asked for before the body had been sent"
        return {"X-Checksum": self.hasher.hexdigest()}


def test_http11_trailers_after_a_bytes_body(client_kind: str,
                                            scripted_server: ServerFactory) -> None:
    server = scripted_server(echo_handler)
    with make_client(client_kind) as client:
        response = client.request("POST", server.url("/t"), content=b"hello",
                                  trailers={"X-Checksum": "abc", "X-Count": "1"})
        assert response.status_code == 200
        after = client.get(server.url("/next"))  # the connection is still good
        assert after.status_code == 200
    first, second = server.received
    assert first.chunked
    assert first.body == b"hello"
    assert first.trailers == [("X-Checksum", "abc"), ("X-Count", "1")]
    assert first.get("trailer") == "x-checksum, x-count"
    assert first.get("content-length") is None
    assert (second.connection_index, second.trailers) == (0, [])


def test_http11_trailers_from_a_callable_after_a_streamed_body(
        client_kind: str, scripted_server: ServerFactory) -> None:
    server = scripted_server(echo_handler)
    upload = Hashing()
    with make_client(client_kind) as client:
        response = client.request("PUT", server.url("/up"), content=upload.body(),
                                  trailers=upload.trailers)
        assert response.status_code == 200
    (received,) = server.received
    assert received.body == b"".join(PARTS)
    assert received.trailers == [("X-Checksum", DIGEST)]
    assert received.get("trailer") is None  # names unknown in advance: not announced


def test_http11_trailers_without_a_body(client_kind: str,
                                        scripted_server: ServerFactory) -> None:
    server = scripted_server(echo_handler)
    with make_client(client_kind) as client:
        client.request("GET", server.url("/g"), trailers=[("X-Note", "empty body")])
    (received,) = server.received
    assert (received.chunked, received.body, received.trailers) == (
        True, b"", [("X-Note", "empty body")])


@pytest.mark.parametrize("name", ["Content-Length", "transfer-encoding", "Host",
                                  "Authorization", "Content-Type", "Trailer", ":path"])
def test_fields_that_may_not_be_trailers_are_refused(name: str) -> None:
    with poolhttp.Client() as client, pytest.raises(
            poolhttp.InvalidRequest, match=f"{name!r} may not be sent as a trailer field|"
                                           f"invalid header name {name!r}"):
        client.request("POST", "http://127.0.0.1:9/", content=b"x", trailers={name: "1"})


def test_a_failing_trailers_callable_is_a_write_error_and_leaks_nothing(
        client_kind: str, scripted_server: ServerFactory) -> None:
    server = scripted_server(echo_handler)

    def broken() -> dict[str, str]:
        raise RuntimeError("no checksum")

    with make_client(client_kind) as client:
        with pytest.raises(poolhttp.WriteError, match="trailers callable raised RuntimeError"):
            client.request("POST", server.url("/x"), content=iter([b"data"]), trailers=broken)
        # A bytes body asks the callable at once: the error is the caller's, nothing sent.
        with pytest.raises(poolhttp.InvalidRequest, match="no checksum"):
            client.request("POST", server.url("/y"), content=b"data", trailers=broken)
        assert client.get(server.url("/after")).status_code == 200
        stats = client.stats()
    assert stats.active == 0
    assert [r.path for r in server.received] == ["/after"]


@TLS_MODES
def test_http2_trailers_end_the_stream(client_kind: str, h2server: H2Factory,
                                       tls: bool) -> None:
    server = h2server(tls=tls)
    upload = Hashing()
    with make_client(client_kind, **h2_options(server)) as client:
        small = client.request("POST", server.url("/echo"), content=b"hello",
                               trailers={"X-Checksum": "abc"})
        streamed = client.request("POST", server.url("/echo"), content=upload.body(),
                                  trailers=upload.trailers)
        empty = client.request("GET", server.url("/echo"), trailers={"X-Note": "none"})
        plain = client.request("POST", server.url("/echo"), content=b"no trailers")
    assert {r.http_version for r in (small, streamed, empty, plain)} == {"HTTP/2"}
    small_seen, streamed_seen, empty_seen, plain_seen = map(body_json, (small, streamed, empty,
                                                                     plain))
    assert small_seen["trailers"] == [["x-checksum", "abc"]]
    assert small_seen["body_length"] == 5
    assert ["trailer", "x-checksum"] in small_seen["headers"]
    assert streamed_seen["trailers"] == [["x-checksum", DIGEST]]
    assert streamed_seen["body_sha256"] == DIGEST
    assert empty_seen["trailers"] == [["x-note", "none"]]
    assert empty_seen["body_length"] == 0
    assert plain_seen["trailers"] == []
    assert server.protocol_errors == []


@TLS_MODES
def test_http2_a_failing_trailers_callable_resets_only_its_stream(
        client_kind: str, h2server: H2Factory, tls: bool) -> None:
    server = h2server(tls=tls)

    def broken() -> dict[str, str]:
        raise RuntimeError("no checksum")

    with make_client(client_kind, **h2_options(server)) as client:
        with pytest.raises(poolhttp.WriteError, match="trailers callable raised RuntimeError"):
            client.request("POST", server.url("/echo"), content=iter([b"data"]),
                           trailers=broken)
        after = client.request("POST", server.url("/echo"), content=b"ok",
                               trailers={"x-checksum": "1"})
        stats = client.stats()
    assert body_json(after)["trailers"] == [["x-checksum", "1"]]
    assert stats.created == 1  # the connection lived on
    assert stats.streams == 0
