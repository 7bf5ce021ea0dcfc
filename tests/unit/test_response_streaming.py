"""Response body helpers on Responses built directly, over fake streams: decoding, re-chunking,
text and lines, the raw bytes, and the `max_content_size` cap."""

from __future__ import annotations

import gzip
import json
import sys
import zlib
from collections.abc import AsyncIterator, Generator, Iterator, Sequence
from typing import Any

import pytest

import poolhttp
from poolhttp import Request, Response

GZIP = [("Content-Encoding", "gzip")]


class FakeStream:
    """A SyncResponseStream handing out `chunks`, then b""."""

    def __init__(self, chunks: Sequence[bytes]) -> None:
        self.chunks = list(chunks)
        self.closed = False
        self.reads = 0

    def read_chunk(self) -> bytes:
        self.reads += 1
        return self.chunks.pop(0) if self.chunks else b""

    def close(self) -> None:
        self.closed = True


class FakeAsyncStream:
    """An AsyncResponseStream handing out `chunks`, then b""."""

    def __init__(self, chunks: Sequence[bytes]) -> None:
        self.chunks = list(chunks)
        self.closed = False

    async def read_chunk(self) -> bytes:
        return self.chunks.pop(0) if self.chunks else b""

    async def aclose(self) -> None:
        self.closed = True


def streamed(chunks: Sequence[bytes], headers: Any = None, *,
             is_async: bool = False) -> Response:
    response = Response(200, headers=headers)
    response._content = None  # what the drivers leave for a streamed response
    response._stream = FakeAsyncStream(chunks) if is_async else FakeStream(chunks)
    return response


def split(data: bytes, size: int) -> list[bytes]:
    return [data[start:start + size] for start in range(0, len(data), size)]


def from_wire(block: bytes, content: bytes) -> Response:
    return Response.from_wire(200, b"HTTP/1.1 200 OK", block, content,
                              Request("GET", "http://example.com/"), 0.01)


async def collect(iterator: AsyncIterator[Any]) -> list[Any]:
    return [item async for item in iterator]


BODY = b"".join(b"%05d:" % n + b"x" * (n % 50) + b"\n" for n in range(5000))
GZ = gzip.compress(BODY)


# -- content, text, json --------------------------------------------------------------------
def test_content_of_a_body_in_memory_is_decoded_once() -> None:
    payload = json.dumps({"name": "ada"}).encode()
    response = Response(200, headers=GZIP, content=gzip.compress(payload))
    assert response.content == payload
    assert response.content is response.content
    assert response.json() == {"name": "ada"}
    assert response.text == payload.decode()
    with pytest.raises(poolhttp.StreamConsumed, match="not kept"):
        list(response.iter_raw())  # the compressed bytes were dropped


def test_a_response_from_the_wire_decodes_without_splitting_a_plain_header_block() -> None:
    plain = from_wire(b"Server: x\r\nContent-Length: 4", b"body")
    assert plain.content == b"body"
    assert plain._headers is None  # nothing split to know there is no Content-Encoding
    assert list(plain.iter_raw()) == [b"body"]
    coded = from_wire(b"Server: x\r\ncontent-ENCODING: deflate", zlib.compress(b"body"))
    assert coded.content == b"body"
    assert from_wire(b"CONTENT-ENCODING: x-unknown", b"raw").content == b"raw"


def test_a_corrupt_body_raises_on_every_use_and_stays_available_raw() -> None:
    response = from_wire(b"Content-Encoding: gzip", b"not gzip at all")
    for _ in range(2):
        with pytest.raises(poolhttp.DecodingError, match=r"from http://example\.com:80"):
            _ = response.content
    assert list(response.iter_raw()) == [b"not gzip at all"]


def test_an_empty_body_with_a_coding_is_empty() -> None:
    assert from_wire(b"Content-Encoding: br", b"").content == b""


# -- the cap ---------------------------------------------------------------------------------
def test_max_content_size_caps_decoded_content() -> None:
    bomb = gzip.compress(bytes(10 << 20))
    response = from_wire(b"Content-Encoding: gzip", bomb)
    assert response.max_content_size is None
    response.max_content_size = 1 << 20
    with pytest.raises(poolhttp.ResponseTooLarge) as info:
        _ = response.content
    assert info.value.limit == 1 << 20
    assert info.value.origin == "http://example.com:80"
    assert sum(map(len, response.iter_bytes())) == 10 << 20  # iteration has no cap
    response.max_content_size = None
    assert len(response.content) == 10 << 20


def test_max_content_size_caps_read_of_a_stream_and_closes_it() -> None:
    response = streamed(split(GZ, 1000), GZIP)
    response.max_content_size = len(BODY) - 1
    with pytest.raises(poolhttp.ResponseTooLarge):
        response.read()
    assert response._stream is None
    with pytest.raises(poolhttp.StreamConsumed):
        _ = response.content
    exact = streamed(split(BODY, 1000))  # no coding: the cap counts the bytes read too
    exact.max_content_size = len(BODY)
    assert exact.read() == BODY


async def test_max_content_size_caps_aread() -> None:
    response = streamed(split(GZ, 1000), GZIP, is_async=True)
    stream = response._stream
    response.max_content_size = 1000
    with pytest.raises(poolhttp.ResponseTooLarge):
        await response.aread()
    assert isinstance(stream, FakeAsyncStream)
    assert stream.closed


# -- read / iter_bytes / iter_raw -------------------------------------------------------------
def test_read_decodes_and_keeps_content() -> None:
    response = streamed(split(GZ, 777), GZIP)
    assert response.read() == BODY
    assert response.content == BODY
    assert response.read() == BODY  # again: from memory
    assert b"".join(response.iter_bytes()) == BODY
    assert response.is_closed


async def test_aread_decodes_and_keeps_content() -> None:
    response = streamed(split(GZ, 777), GZIP, is_async=True)
    assert await response.aread() == BODY
    assert response.text == BODY.decode()
    assert b"".join(await collect(response.aiter_bytes(1000))) == BODY


@pytest.mark.parametrize("chunk_size", [None, 1, 1000, 4096, 1 << 20])
def test_iter_bytes_rechunks_to_exactly_chunk_size(chunk_size: int | None) -> None:
    response = streamed(split(GZ, 333), GZIP)
    chunks = list(response.iter_bytes(chunk_size))
    assert b"".join(chunks) == BODY
    if chunk_size is not None:
        assert all(len(chunk) == chunk_size for chunk in chunks[:-1])
        assert 0 < len(chunks[-1]) <= chunk_size
    assert all(chunks)
    with pytest.raises(poolhttp.StreamConsumed):
        _ = response.content


async def test_aiter_bytes_rechunks_to_exactly_chunk_size() -> None:
    response = streamed(split(GZ, 333), GZIP, is_async=True)
    chunks = await collect(response.aiter_bytes(999))
    assert b"".join(chunks) == BODY
    assert {len(chunk) for chunk in chunks[:-1]} == {999}
    assert response.is_closed


def test_iter_raw_gives_the_bytes_as_received() -> None:
    response = streamed(split(GZ, 500), GZIP)
    assert list(response.iter_raw()) == split(GZ, 500)
    rechunked = streamed(split(GZ, 500), GZIP)
    assert b"".join(rechunked.iter_raw(64)) == GZ
    assert {len(chunk) for chunk in streamed(split(GZ, 500), GZIP).iter_raw(64)} >= {64}
    in_memory = Response(200, headers=GZIP, content=GZ)
    assert b"".join(in_memory.iter_raw(100)) == GZ  # not decoded yet: still there
    assert in_memory.content == BODY


async def test_aiter_raw_gives_the_bytes_as_received() -> None:
    response = streamed(split(GZ, 500), GZIP, is_async=True)
    assert await collect(response.aiter_raw()) == split(GZ, 500)
    plain = Response(200, content=b"abcdef")
    assert plain.content == b"abcdef"
    assert await collect(plain.aiter_raw(4)) == [b"abcd", b"ef"]


def test_leaving_iteration_early_closes_the_stream() -> None:
    response = streamed(split(GZ, 100), GZIP)
    stream = response._stream
    iterator = response.iter_bytes(10)
    assert isinstance(iterator, Generator)
    assert next(iterator) == BODY[:10]
    iterator.close()
    assert isinstance(stream, FakeStream)
    assert stream.closed
    with pytest.raises(poolhttp.StreamConsumed):
        response.read()


def test_iter_bytes_decodes_lazily_from_the_compressed_stream() -> None:
    bomb = gzip.compress(bytes(32 << 20))
    response = streamed(split(bomb, 16384), GZIP)
    stream = response._stream
    iterator = response.iter_bytes()
    first = next(iterator)
    assert 0 < len(first) <= 64 * 1024
    assert isinstance(stream, FakeStream)
    assert stream.reads == 1  # one chunk in, one piece out
    assert sum(map(len, iterator)) + len(first) == 32 << 20


def test_a_body_in_memory_is_iterated_in_bounded_pieces() -> None:
    response = Response(200, headers=GZIP, content=gzip.compress(bytes(8 << 20)))
    sizes = [len(piece) for piece in response.iter_bytes()]
    assert sum(sizes) == 8 << 20
    assert max(sizes) <= 64 * 1024
    assert response.content == bytes(8 << 20)  # iterating kept the body as received


def test_a_corrupt_stream_raises_and_closes() -> None:
    response = streamed([b"\x1f\x8b\x08\x00garbage" * 10], GZIP)
    stream = response._stream
    with pytest.raises(poolhttp.DecodingError):
        list(response.iter_bytes())
    assert isinstance(stream, FakeStream)
    assert stream.closed


def test_the_wrong_kind_of_stream_is_refused() -> None:
    with pytest.raises(TypeError, match="AsyncClient"):
        list(streamed([b"x"], is_async=True).iter_bytes())
    with pytest.raises(TypeError, match="AsyncClient"):
        list(streamed([b"x"], is_async=True).iter_text())


# -- text and lines ---------------------------------------------------------------------------
def one_byte_chunks(data: bytes) -> list[bytes]:
    return [bytes([byte]) for byte in data]


def test_iter_text_keeps_a_character_split_across_chunks_whole() -> None:
    text = "héllo wörld — ✓ 🐍\n" * 20
    response = streamed(one_byte_chunks(text.encode()), [("Content-Type", "text/plain")])
    pieces = list(response.iter_text())
    assert "".join(pieces) == text
    assert "\ufffd" not in "".join(pieces)


def test_iter_text_uses_the_charset_and_survives_unknown_ones() -> None:
    latin = streamed([b"caf", b"\xe9"], [("Content-Type", "text/plain; charset=latin-1")])
    assert "".join(latin.iter_text()) == "café"
    utf16 = "ab✓".encode("utf-16")
    response = streamed(one_byte_chunks(utf16), [("Content-Type", "text/plain; charset=utf-16")])
    assert "".join(response.iter_text()) == "ab✓"
    unknown = streamed([b"ok"], [("Content-Type", "text/plain; charset=x-nonsense")])
    assert list(unknown.iter_text()) == ["ok"]
    broken = streamed([b"\xff\xfe\xfa"], [("Content-Type", "text/plain; charset=utf-8")])
    assert "".join(broken.iter_text()) == "\ufffd" * 3


async def test_aiter_text_keeps_a_character_split_across_chunks_whole() -> None:
    text = "naïve ✓\n" * 10
    response = streamed(one_byte_chunks(gzip.compress(text.encode())), GZIP, is_async=True)
    assert "".join(await collect(response.aiter_text())) == text


LINES_BODY = b"first\nsecond\r\nthird\rfourth\r\n\r\nlast"
LINES = ["first", "second", "third", "fourth", "", "last"]


@pytest.mark.parametrize("size", [1, 2, 3, 5, 100])
def test_iter_lines_splits_on_every_line_ending(size: int) -> None:
    assert list(streamed(split(LINES_BODY, size)).iter_lines()) == LINES


def test_iter_lines_of_a_compressed_body_and_a_final_newline() -> None:
    body = "\n".join(f"row {n}" for n in range(10_000)).encode() + b"\n"
    response = streamed(split(gzip.compress(body), 100), GZIP)
    lines = list(response.iter_lines())
    assert lines == [f"row {n}" for n in range(10_000)]
    assert list(Response(200, content=b"a\r\n").iter_lines()) == ["a"]
    assert list(Response(200, content=b"").iter_lines()) == []


async def test_aiter_lines_splits_a_crlf_across_chunks() -> None:
    response = streamed([b"a\r", b"\nb\r", b"\r\n", b"c"], is_async=True)
    assert await collect(response.aiter_lines()) == ["a", "b", "", "c"]


def test_helpers_on_a_response_in_memory() -> None:
    response = Response(200, headers=GZIP, content=gzip.compress(b"x\ny\n"))
    assert list(response.iter_lines()) == ["x", "y"]
    assert list(response.iter_text()) == ["x\ny\n"]
    assert list(response.iter_bytes(3)) == [b"x\ny", b"\n"]


def lines_of(chunks: Iterator[bytes]) -> list[str]:
    response = streamed(list(chunks))
    return list(response.iter_lines())


def test_iter_lines_of_a_line_longer_than_many_chunks() -> None:
    long_line = b"z" * 100_000
    assert lines_of(iter(split(long_line + b"\nend", 7))) == ["z" * 100_000, "end"]


def test_a_coding_whose_package_is_missing_closes_the_stream(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "brotli", None)
    for use in (lambda r: list(r.iter_bytes()), lambda r: r.read()):
        response = streamed([b"\x0b\x02\x80hi\x03"], [("Content-Encoding", "br")])
        stream = response._stream
        with pytest.raises(poolhttp.DecodingError, match="poolhttp\\[brotli\\]"):
            use(response)
        assert isinstance(stream, FakeStream)
        assert stream.closed
