"""The HTTP/1.1 reader, driven with scripted bytes: no sockets.

Every well-formed case is also fed one byte at a time, since a socket may split a response
anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import httptools
import pytest

from poolhttp import RemoteProtocolError
from poolhttp._core.http11 import (
    ResponseReader,
    encode_request_head,
    keep_alive_timeout,
    split_header_block,
    split_status_line,
)


@dataclass
class Sink:
    heads: list[tuple[int, bytes, list[tuple[bytes, bytes]]]] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    completions: list[bool] = field(default_factory=list)

    def on_head(self, status: int, status_line: bytes, head: bytes) -> None:
        version, reason = split_status_line(status_line)
        self.heads.append((status, reason.encode("latin-1"), split_header_block(head)))
        self.versions.append(version)

    def on_body(self, chunk: bytes) -> None:
        self.body += chunk

    def on_complete(self, keep_alive: bool) -> None:
        self.completions.append(keep_alive)


def read(data: bytes, *, head: bool = False, split: bool = False, eof: bool = False,
         **limits: int) -> tuple[Sink, ResponseReader]:
    sink = Sink()
    reader = ResponseReader(sink, "http://test:80", **limits)
    reader.expect(head)
    pieces = [data[i:i + 1] for i in range(len(data))] if split else [data]
    for piece in pieces:
        reader.feed(piece)
    if eof:
        reader.feed_eof()
    return sink, reader


WELL_FORMED = [
    # (name, bytes, is_head, eof, status, body, keep_alive)
    ("content-length", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", False, False,
     200, b"hello", True),
    ("chunked", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", False, False, 200, b"abcde", True),
    ("chunked-trailers", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"1\r\nx\r\n0\r\nX-Trailer: 1\r\n\r\n", False, False, 200, b"x", True),
    ("connection-close", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
     False, False, 200, b"ok", False),
    ("http10", b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", False, False, 200, b"ok",
     False),
    ("http10-keepalive", b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n"
     b"\r\nok", False, False, 200, b"ok", True),
    ("until-close", b"HTTP/1.1 200 OK\r\n\r\nall of it", False, True, 200, b"all of it",
     False),
    ("no-content", b"HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n", False, False,
     204, b"", True),
    ("not-modified", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n", False, False,
     304, b"", True),
    ("head-with-length", b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", True, False,
     200, b"", True),
    ("head-chunked", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", True, False,
     200, b"", True),
    ("interim-100", b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n!",
     False, False, 200, b"!", True),
    ("interim-103-head", b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
     b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n", True, False, 200, b"", True),
]


@pytest.mark.parametrize("split", [False, True], ids=["whole", "byte-by-byte"])
@pytest.mark.parametrize(("name", "data", "is_head", "eof", "status", "body", "keep_alive"),
                         WELL_FORMED, ids=[case[0] for case in WELL_FORMED])
def test_well_formed(name: str, data: bytes, is_head: bool, eof: bool, status: int,
                     body: bytes, keep_alive: bool, split: bool) -> None:
    sink, reader = read(data, head=is_head, split=split, eof=eof)
    assert [h[0] for h in sink.heads] == [status]  # interim responses are not reported
    assert bytes(sink.body) == body
    assert sink.completions == [keep_alive]
    assert reader.state == 0  # IDLE again


@pytest.mark.parametrize("split", [False, True], ids=["whole", "byte-by-byte"])
def test_headers_kept_as_bytes_in_order(split: bool) -> None:
    sink, _ = read(b"HTTP/1.1 200 Fine Thanks\r\nA: 1\r\nSet-Cookie: x\r\nset-cookie:y \t\r\n"
                   b"Empty:\r\nContent-Length: 0\r\n\r\n", split=split)
    status, reason, headers = sink.heads[0]
    assert (status, reason) == (200, b"Fine Thanks")
    assert headers == [(b"A", b"1"), (b"Set-Cookie", b"x"), (b"set-cookie", b"y"),
                       (b"Empty", b""), (b"Content-Length", b"0")]
    assert sink.versions == ["HTTP/1.1"]


def test_status_line_without_reason_and_http10() -> None:
    sink, _ = read(b"HTTP/1.0 404\r\nContent-Length: 0\r\n\r\n")
    assert sink.heads[0][:2] == (404, b"")
    assert sink.versions == ["HTTP/1.0"]


def test_head_found_when_fed_as_memoryview_of_a_reused_buffer() -> None:
    """The sync driver feeds slices of one buffer it overwrites between reads."""
    response = (b"HTTP/1.1 200 OK\r\nX-Long: " + b"v" * 20_000 + b"\r\nContent-Length: 3\r\n"
                b"\r\nabc")
    sink = Sink()
    reader = ResponseReader(sink, "http://test:80")
    reader.expect(False)
    buffer = bytearray(4096)
    for start in range(0, len(response), 4096):
        piece = response[start:start + 4096]
        buffer[:len(piece)] = piece
        reader.feed(memoryview(buffer)[:len(piece)])
        buffer[:] = b"#" * 4096  # the driver's next recv would overwrite it
    assert sink.heads[0][2][0] == (b"X-Long", b"v" * 20_000)
    assert bytes(sink.body) == b"abc"


def test_reader_serves_many_responses_in_turn() -> None:
    sink = Sink()
    reader = ResponseReader(sink, "http://test:80")
    for i in range(3):
        reader.expect(i == 1)  # a HEAD in the middle must not desynchronise the rest
        reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n" + (b"" if i == 1 else b"abc"))
    assert bytes(sink.body) == b"abcabc"
    assert sink.completions == [True, True, True]


MALFORMED = [
    # (name, bytes, is_head, eof, words expected in the error)
    ("bad-status-line", b"HTTP/1.1 2x0 OK\r\n\r\n", False, False, "invalid"),
    ("not-http", b"SSH-2.0-OpenSSH_9.2\r\n", False, False, "invalid"),
    ("header-without-colon", b"HTTP/1.1 200 OK\r\nNoColonHere\r\n\r\n", False, False,
     "invalid"),
    ("bad-chunk-size", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", False,
     False, "chunk"),
    ("cl-and-te", b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
     False, False, "content-length"),
    ("conflicting-cl", b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc",
     False, False, "content-length"),
    ("body-short", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", False, True,
     "before the end of the body"),
    ("chunked-cut", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", False, True,
     "before the end of the body"),
    ("head-cut", b"HTTP/1.1 200 OK\r\nContent-Le", False, True, "before the end of the headers"),
    ("nothing", b"", False, True, "without sending a response"),
    ("bytes-after-response", b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxEXTRA", False,
     False, "after the end of the response"),
    ("bytes-after-head-response", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", True,
     False, "after a response to HEAD"),
    ("upgrade", b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
     b"Connection: upgrade\r\n\r\n", False, False, "switched protocols"),
    ("endless-1xx", b"HTTP/1.1 100 Continue\r\n\r\n" * 40, False, False, "interim"),
]


@pytest.mark.parametrize(("name", "data", "is_head", "eof", "words"), MALFORMED,
                         ids=[case[0] for case in MALFORMED])
def test_malformed_raises_remote_protocol_error(name: str, data: bytes, is_head: bool, eof: bool,
                                                words: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        read(data, head=is_head, eof=eof)
    assert words.lower() in str(info.value).lower()
    assert info.value.origin == "http://test:80"


@pytest.mark.parametrize(("name", "data", "is_head", "eof", "words"), MALFORMED,
                         ids=[case[0] for case in MALFORMED])
def test_malformed_inside_an_except_block(name: str, data: bytes, is_head: bool, eof: bool,
                                          words: str) -> None:
    """Reading inside an `except` block (a retry, or a user's handler) must raise the
    protocol error, never the exception being handled there: httptools gives a callback's
    exception as context, which is then that handled exception instead."""
    def read_while_handling() -> None:
        try:
            raise KeyError("handled by the caller")
        except KeyError:
            read(data, head=is_head, eof=eof)

    with pytest.raises(RemoteProtocolError) as info:
        read_while_handling()
    assert words.lower() in str(info.value).lower()


def test_a_failing_sink_surfaces_as_itself_not_as_a_protocol_error() -> None:
    class Broken(Sink):
        def on_body(self, data: bytes) -> None:
            raise ZeroDivisionError("a bug in the sink")

    reader = ResponseReader(Broken(), "http://test:80")
    reader.expect(False)
    with pytest.raises(httptools.HttpParserCallbackError) as info:
        reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert isinstance(info.value.__context__, ZeroDivisionError)


def test_header_size_limit() -> None:
    big = b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70_000 + b"\r\n\r\n"
    with pytest.raises(RemoteProtocolError, match="exceeds 65536 bytes"):
        read(big)
    # Fed in small pieces, the limit fires before the whole head is buffered.
    sink = Sink()
    reader = ResponseReader(sink, "http://test:80", max_header_bytes=1000)
    reader.expect(False)
    reader.feed(b"HTTP/1.1 200 OK\r\nX: ")

    def feed_forever() -> None:
        for _ in range(100):
            reader.feed(b"a" * 100)

    with pytest.raises(RemoteProtocolError, match="exceeds 1000 bytes"):
        feed_forever()


def test_header_count_limit() -> None:
    data = b"HTTP/1.1 200 OK\r\n" + b"".join(b"H%d: v\r\n" % i for i in range(11)) + b"\r\n"
    with pytest.raises(RemoteProtocolError, match="more than 10 header lines"):
        read(data, max_headers=10)
    sink, _ = read(data.replace(b"\r\n\r\n", b"\r\nContent-Length: 0\r\n\r\n"), max_headers=12)
    assert len(sink.heads[0][2]) == 12


def test_unsolicited_bytes_while_idle() -> None:
    sink = Sink()
    reader = ResponseReader(sink, "http://test:80")
    with pytest.raises(RemoteProtocolError, match="while no response was expected"):
        reader.feed(b"HTTP/1.1 200 OK\r\n\r\n")


def test_response_started_tracks_first_byte() -> None:
    sink = Sink()
    reader = ResponseReader(sink, "http://test:80")
    reader.expect(False)
    assert not reader.response_started
    reader.feed(b"H")
    assert reader.response_started


@pytest.mark.parametrize(("value", "expected"), [
    (b"timeout=5, max=100", 5.0), (b"max=10", None), (b"timeout=abc", None),
    (b"max=3, Timeout = 2", 2.0), (b"timeout=1.5", 1.5)])
def test_keep_alive_timeout(value: bytes, expected: float | None) -> None:
    assert keep_alive_timeout(b"Connection: keep-alive\r\nKeep-Alive: " + value) == expected
    assert keep_alive_timeout(b"keep-alive: " + value + b"\r\nA: b") == expected
    assert keep_alive_timeout(b"Other: " + value) is None
    assert keep_alive_timeout(b"X-Keep-Alive: " + value) is None


def test_encode_request_head() -> None:
    block = b"Host: example.com\r\nUser-Agent: t\r\n"
    assert encode_request_head("GET", b"/a?b=1", block, [], -1) == (
        b"GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t\r\n\r\n")
    assert encode_request_head("POST", b"/", block, [(b"X-A", b"1")], 3) == (
        b"POST / HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t\r\nX-A: 1\r\n"
        b"Content-Length: 3\r\n\r\n")
    assert encode_request_head("PUT", b"/", b"", [], None).endswith(
        b"Transfer-Encoding: chunked\r\n\r\n")
