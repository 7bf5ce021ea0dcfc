"""Compressed bodies through every client: gzip, deflate, br, zstd, streamed or not, and a
gzip bomb streamed in bounded memory."""

from __future__ import annotations

import gzip
import importlib
import subprocess
import sys
import textwrap
import zlib
from typing import Any

import pytest

import poolhttp
from tests.integration.clients import StreamFacade, make_client
from tests.integration.test_resources import STREAM_SCRIPT
from tests.support.scripted import Handler, ReceivedRequest, Reply, ServerFactory, in_sequence

brotli: Any = importlib.import_module("brotli")
zstandard: Any = importlib.import_module("zstandard")

TEXT = "".join(f"ligne {n}: café ✓\r\n" for n in range(4000))
BODY = TEXT.encode()


def deflate_raw(data: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


ENCODED: dict[str, bytes] = {
    "gzip": gzip.compress(BODY),
    "deflate": zlib.compress(BODY),
    "deflate-raw": deflate_raw(BODY),
    "br": brotli.compress(BODY),
    "zstd": zstandard.ZstdCompressor().compress(BODY),
    "gzip, br": brotli.compress(gzip.compress(BODY)),
}


def headers_for(case: str) -> list[tuple[str, str]]:
    return [("Content-Encoding", case.replace("-raw", "")),
            ("Content-Type", "text/plain; charset=utf-8")]


def in_chunks(data: bytes, size: int = 1000) -> list[bytes]:
    return [data[start:start + size] for start in range(0, len(data), size)]


def serve(scripted_server: ServerFactory, case: str, *, chunked: bool = False) -> str:
    def handler(request: ReceivedRequest) -> Reply:
        if chunked:
            return Reply.chunked(in_chunks(ENCODED[case]), headers=headers_for(case))
        return Reply.ok(ENCODED[case], headers=headers_for(case))

    return serve_with(scripted_server, handler)


def serve_with(scripted_server: ServerFactory, handler: Handler) -> str:
    return scripted_server(handler).url("/data")


def streamed(response: Any, name: str, *args: Any) -> list[Any]:
    """`response.<name>(*args)` collected: the sync iterator, or the async one on its loop."""
    if isinstance(response, StreamFacade):
        async def collect() -> list[Any]:
            return [item async for item in getattr(response.response, "a" + name)(*args)]

        return response._facade.call(collect())
    return list(getattr(response, name)(*args))


@pytest.mark.parametrize("case", sorted(ENCODED))
def test_a_compressed_body_is_decoded(client_kind: str, scripted_server: ServerFactory,
                                      case: str) -> None:
    url = serve(scripted_server, case)
    with make_client(client_kind) as client:
        response = client.get(url)
        assert response.content == BODY
        assert response.text == TEXT
        assert list(response.iter_lines())[:2] == ["ligne 0: café ✓", "ligne 1: café ✓"]


@pytest.mark.parametrize("case", sorted(ENCODED))
def test_a_compressed_stream_is_decoded_as_it_arrives(
        client_kind: str, scripted_server: ServerFactory, case: str) -> None:
    url = serve(scripted_server, case, chunked=True)
    with make_client(client_kind) as client:
        with client.stream("GET", url) as response:
            chunks = streamed(response, "iter_bytes", 4096)
        assert b"".join(chunks) == BODY
        assert {len(chunk) for chunk in chunks[:-1]} == {4096}
        with client.stream("GET", url) as response:
            assert b"".join(streamed(response, "iter_raw")) == ENCODED[case]
        with client.stream("GET", url) as response:
            assert "".join(streamed(response, "iter_text")) == TEXT
        with client.stream("GET", url) as response:
            assert len(streamed(response, "iter_lines")) == 4000
        with client.stream("GET", url) as response:
            assert response.read() == BODY
        assert client.stats().created == 1  # every stream was read to its end: one connection


def test_corrupt_body_raises_decoding_error(client_kind: str,
                                            scripted_server: ServerFactory) -> None:
    bad = Reply.ok(b"\x1f\x8b\x08\x00" + b"\xff" * 64, headers=[("Content-Encoding", "gzip")])
    url = serve_with(scripted_server, in_sequence(bad, bad, Reply.ok(b"fine")))
    with make_client(client_kind) as client:
        response = client.get(url)
        with pytest.raises(poolhttp.DecodingError, match="cannot decode the gzip body"):
            _ = response.content
        with client.stream("GET", url) as streaming, pytest.raises(poolhttp.DecodingError):
            streamed(streaming, "iter_bytes")
        assert client.get(url).content == b"fine"


def test_unknown_coding_is_passed_through(client_kind: str,
                                          scripted_server: ServerFactory) -> None:
    url = serve_with(scripted_server, lambda request: Reply.ok(
        b"as sent", headers=[("Content-Encoding", "x-custom")]))
    with make_client(client_kind) as client:
        assert client.get(url).content == b"as sent"


def test_max_content_size_stops_a_bomb_read_into_memory(
        client_kind: str, scripted_server: ServerFactory) -> None:
    bomb = gzip.compress(bytes(64 << 20))
    url = serve_with(scripted_server, lambda request: Reply.ok(
        bomb, headers=[("Content-Encoding", "gzip")]))
    with make_client(client_kind) as client:
        response = client.get(url)
        response.max_content_size = 1 << 20
        with pytest.raises(poolhttp.ResponseTooLarge, match="max_content_size=1048576"):
            _ = response.content
        with client.stream("GET", url) as streaming:
            target = streaming.response if isinstance(streaming, StreamFacade) else streaming
            target.max_content_size = 1 << 20
            with pytest.raises(poolhttp.ResponseTooLarge):
                streaming.read()


# The same child as the streaming-memory test: stream the body, print (bytes, peak MiB).
BOMB_SCRIPT = STREAM_SCRIPT

BOMB_SIZE = 1 << 30


@pytest.fixture(scope="module")
def gzip_bomb() -> bytes:
    """1 GiB of zeros, gzipped (about 1 MB), compressed a MiB at a time."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    parts = [compressor.compress(zeros) for _ in range(BOMB_SIZE >> 20)]
    return b"".join(parts) + compressor.flush()


@pytest.mark.slow
def test_a_streamed_gzip_bomb_stays_under_100mb(
        client_kind: str, scripted_server: ServerFactory, gzip_bomb: bytes) -> None:
    assert len(gzip_bomb) < 2 << 20
    url = serve_with(scripted_server, lambda request: Reply.ok(
        gzip_bomb, headers=[("Content-Encoding", "gzip")]))
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(BOMB_SCRIPT), url, client_kind],
        capture_output=True, text=True, timeout=110)
    assert result.returncode == 0, result.stderr
    size, peak_mb = map(int, result.stdout.split())
    assert size == BOMB_SIZE
    assert peak_mb < 100, f"peak RSS {peak_mb} MB while streaming a 1 GiB gzip bomb"
