"""RequestEncoder: the bytes of an HTTP/1.1 request, encoded at the connection."""

from __future__ import annotations

from poolhttp import URL, Request
from poolhttp._core.http11 import INLINE_BODY_MAX, RequestEncoder

DEFAULTS = [(b"User-Agent", b"t/1"), (b"Accept", b"*/*")]


def build(method: str, url: str, extra: list[tuple[bytes, bytes]] | None = None,
          content: bytes | None = None, stream: object = None,
          defaults: list[tuple[bytes, bytes]] = DEFAULTS) -> Request:
    return Request.build(method, URL(url), extra or [], defaults, content, stream)


def test_a_get_is_the_request_line_host_and_defaults() -> None:
    data, body = RequestEncoder().encode(build("GET", "http://a.example:8080/x?q=1"))
    assert data == (b"GET /x?q=1 HTTP/1.1\r\nHost: a.example:8080\r\nUser-Agent: t/1\r\n"
                    b"Accept: */*\r\n\r\n")
    assert body is None


def test_the_origin_block_is_made_once_and_reused() -> None:
    encoder = RequestEncoder()
    first, _ = encoder.encode(build("GET", "http://a.example/first"))
    second, _ = encoder.encode(build("GET", "http://a.example/second"))
    assert first.replace(b"/first", b"/second") == second
    assert len(encoder._blocks) == 1
    encoder.encode(build("GET", "http://b.example/"))
    assert len(encoder._blocks) == 2


def test_own_headers_replace_defaults_of_the_same_name_and_host() -> None:
    data, _ = RequestEncoder().encode(build(
        "GET", "http://a.example/", [(b"accept", b"text/html"), (b"Host", b"other")]))
    assert data == (b"GET / HTTP/1.1\r\nUser-Agent: t/1\r\naccept: text/html\r\n"
                    b"Host: other\r\n\r\n")


def test_edited_defaults_start_a_new_cache() -> None:
    encoder = RequestEncoder()
    encoder.encode(build("GET", "http://a.example/"))
    data, _ = encoder.encode(build("GET", "http://a.example/", defaults=[(b"X", b"1")]))
    assert data == b"GET / HTTP/1.1\r\nHost: a.example\r\nX: 1\r\n\r\n"


def test_framing_small_large_and_streamed_bodies() -> None:
    encoder = RequestEncoder()
    small, rest = encoder.encode(build("POST", "http://a.example/", content=b"hi"))
    assert small.endswith(b"Content-Length: 2\r\n\r\nhi")
    assert rest is None
    large = b"x" * (INLINE_BODY_MAX + 1)
    head, rest = encoder.encode(build("PUT", "http://a.example/", content=large))
    assert head.endswith(b"Content-Length: %d\r\n\r\n" % len(large))
    assert rest is large
    head, rest = encoder.encode(build("POST", "http://a.example/", stream=iter([b"a"])))
    assert head.endswith(b"Transfer-Encoding: chunked\r\n\r\n")
    assert rest is None
    empty_post, _ = encoder.encode(build("POST", "http://a.example/"))
    assert empty_post.endswith(b"Content-Length: 0\r\n\r\n")
    get, _ = encoder.encode(build("GET", "http://a.example/"))
    assert b"Content-Length" not in get


def test_a_request_whose_headers_were_edited_is_sent_as_edited() -> None:
    """What a step (redirect, auth) changes in `request.headers` is what goes out."""
    request = build("GET", "http://a.example/", [(b"Authorization", b"secret")])
    del request.headers["authorization"]
    request.headers["X-Step"] = "1"
    data, _ = RequestEncoder().encode(request)
    assert data == (b"GET / HTTP/1.1\r\nHost: a.example\r\nUser-Agent: t/1\r\nAccept: */*\r\n"
                    b"X-Step: 1\r\n\r\n")


def test_a_streamed_body_of_known_size_has_a_content_length() -> None:
    request = Request.build("POST", URL("http://a.example/"), [], DEFAULTS, None,
                            iter([b"ab", b"c"]), 3)
    head, rest = RequestEncoder().encode(request)
    assert head.endswith(b"Content-Length: 3\r\n\r\n")
    assert b"Transfer-Encoding" not in head
    assert rest is None
