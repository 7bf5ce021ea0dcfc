"""Content-Encoding decoders (poolhttp._decoders): every coding, stacked, corrupt, bounded."""

from __future__ import annotations

import gzip
import importlib
import sys
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import poolhttp
from poolhttp import _decoders
from poolhttp._decoders import (
    CHUNK,
    ByteChunker,
    ContentDecoder,
    LineSplitter,
    accept_encoding,
    decode_all,
    make_decoder,
)

brotli: Any = importlib.import_module("brotli")
zstandard: Any = importlib.import_module("zstandard")

BODY = b"".join(b"line %d of a body that compresses well\n" % n for n in range(20_000))


def deflate_raw(data: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


ENCODERS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "x-gzip": gzip.compress,
    "deflate": zlib.compress,  # zlib-wrapped, as RFC 9110 says
    "br": brotli.compress,
    "zstd": lambda data: zstandard.ZstdCompressor().compress(data),
}


def decoder_for(coding: str) -> ContentDecoder:
    decoder = make_decoder(coding)
    assert decoder is not None
    return decoder


def feed(decoder: ContentDecoder, data: bytes, step: int) -> Iterator[bytes]:
    for start in range(0, len(data), step):
        yield from decoder.decode(data[start:start + step])
    yield from decoder.finish()


@pytest.mark.parametrize("coding", sorted(ENCODERS))
@pytest.mark.parametrize("step", [1, 7, 1000, 1 << 30])
def test_each_coding_decodes_whatever_the_chunking(coding: str, step: int) -> None:
    body = BODY[:5000] if step == 1 else BODY  # byte by byte: a shorter body
    assert b"".join(feed(decoder_for(coding), ENCODERS[coding](body), step)) == body


def test_deflate_raw_and_zlib_wrapped_are_both_understood() -> None:
    for encoded in (zlib.compress(BODY), deflate_raw(BODY)):
        assert decode_all(decoder_for("deflate"), encoded) == BODY
        assert b"".join(feed(decoder_for("deflate"), encoded, 1)) == BODY  # header split


def test_stacked_codings_are_undone_last_first() -> None:
    encoded = brotli.compress(gzip.compress(BODY))  # gzip applied first, then br
    assert decode_all(decoder_for("gzip, br"), encoded) == BODY
    encoded = gzip.compress(zstandard.ZstdCompressor().compress(zlib.compress(BODY)))
    assert b"".join(feed(decoder_for("deflate,zstd , GZIP"), encoded, 999)) == BODY
    with pytest.raises(poolhttp.DecodingError):  # the wrong order is corrupt data
        decode_all(decoder_for("br, gzip"), brotli.compress(gzip.compress(BODY)))


def test_identity_and_unknown_codings_pass_the_body_through() -> None:
    for value in ("", "identity", " , identity", "compress", "gzip, x-custom", "x-custom"):
        assert make_decoder(value) is None, value
    assert isinstance(make_decoder("identity, gzip"), _decoders.ZlibDecoder)


def test_gzip_members_follow_each_other_and_trailing_bytes_are_dropped() -> None:
    encoded = gzip.compress(b"first ") + gzip.compress(b"second")
    assert b"".join(feed(decoder_for("gzip"), encoded, 3)) == b"first second"
    assert decode_all(decoder_for("gzip"), gzip.compress(b"body") + b"\x00\x00junk") == b"body"


@pytest.mark.parametrize("coding", sorted(ENCODERS))
def test_corrupt_data_raises_decoding_error(coding: str) -> None:
    encoded = bytearray(ENCODERS[coding](BODY))
    encoded[len(encoded) // 3: len(encoded) // 3 + 16] = b"\xff" * 16
    with pytest.raises(poolhttp.DecodingError, match=f"cannot decode the {coding.lstrip('x-')}"):
        decode_all(decoder_for(coding), bytes(encoded))


@pytest.mark.parametrize("coding", sorted(ENCODERS))
def test_truncated_data_raises_but_an_empty_body_does_not(coding: str) -> None:
    encoded = ENCODERS[coding](BODY)
    with pytest.raises(poolhttp.DecodingError, match="truncated"):
        decode_all(decoder_for(coding), encoded[: len(encoded) // 2])
    assert decode_all(decoder_for(coding), b"") == b""  # a HEAD or 304 answer


def test_garbage_is_not_a_gzip_body() -> None:
    with pytest.raises(poolhttp.DecodingError, match="gzip") as info:
        decode_all(decoder_for("gzip"), b"<html>not gzip</html>")
    assert isinstance(info.value, poolhttp.HTTPError)
    assert not isinstance(info.value, poolhttp.TransportError)  # never retried


def zeros_bomb(coding: str, size: int) -> bytes:
    """`size` zero bytes, encoded; built a MiB at a time."""
    zeros = bytes(1 << 20)
    if coding == "br":
        return bytes(brotli.compress(bytes(size)))  # brotli has no streaming compressor here
    if coding == "zstd":
        compressor: Any = zstandard.ZstdCompressor().compressobj()
    else:
        compressor = zlib.compressobj(9, zlib.DEFLATED, 31 if coding == "gzip" else 15)
    parts = [compressor.compress(zeros) for _ in range(size >> 20)]
    return b"".join(parts) + bytes(compressor.flush())


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br", "zstd"])
def test_output_is_bounded_per_step(coding: str) -> None:
    size = 64 << 20
    bomb = zeros_bomb(coding, size)
    tracemalloc.start()
    try:
        total = largest = 0
        for piece in feed(decoder_for(coding), bomb, 1 << 20):  # one feed for the whole bomb
            total += len(piece)
            largest = max(largest, len(piece))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert total == size
    assert largest <= 2 * CHUNK  # brotli: block granularity, about 1.5 x CHUNK
    assert peak < 8 << 20, f"{coding}: {peak} bytes held while decoding a 64 MiB bomb"


def test_decode_all_stops_at_the_limit() -> None:
    bomb = zeros_bomb("gzip", 16 << 20)
    with pytest.raises(poolhttp.ResponseTooLarge, match="max_content_size=1000000") as info:
        decode_all(decoder_for("gzip"), bomb, limit=1_000_000, origin="http://x:80")
    assert info.value.limit == 1_000_000
    assert info.value.origin == "http://x:80"
    assert decode_all(decoder_for("gzip"), gzip.compress(b"12345"), limit=5) == b"12345"


@pytest.mark.parametrize(("coding", "module", "extra"),
                         [("br", "brotli", "brotli"), ("zstd", "zstandard", "zstd")])
def test_missing_optional_package_names_its_extra(
        monkeypatch: pytest.MonkeyPatch, coding: str, module: str, extra: str) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    with pytest.raises(poolhttp.DecodingError, match=rf"pip install 'poolhttp\[{extra}\]'"):
        make_decoder(coding, origin="http://x:80")
    assert make_decoder("gzip") is not None


def test_accept_encoding_lists_what_is_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    assert accept_encoding() == b"gzip, deflate, br, zstd"
    accept_encoding.cache_clear()
    monkeypatch.setitem(sys.modules, "brotli", None)  # find_spec() then reports it missing
    try:
        assert accept_encoding() == b"gzip, deflate, zstd"
    finally:
        accept_encoding.cache_clear()


def test_optional_packages_are_imported_only_when_used() -> None:
    import subprocess

    code = ("import sys, poolhttp, poolhttp._decoders as d; d.accept_encoding(); "
            "print('brotli' in sys.modules, 'zstandard' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.split() == ["False", "False"]


def test_byte_chunker() -> None:
    chunker = ByteChunker(4)
    out = [*chunker.feed(b"ab"), *chunker.feed(b"cdefghij"), *chunker.feed(b"k"),
           *chunker.flush()]
    assert out == [b"abcd", b"efgh", b"ijk"]
    assert [*ByteChunker(None).feed(b""), *ByteChunker(None).feed(b"x")] == [b"x"]
    with pytest.raises(ValueError, match="chunk_size"):
        ByteChunker(0)


@pytest.mark.parametrize("chunks", [
    ["a\nb\r\nc\rd"],
    ["a\r", "\nb\r\n", "c\r", "d"],
    ["a", "\n", "b\r", "\n", "c", "\r", "d"],
    ["a\nb", "\r", "\nc\rd", ""],
])
def test_line_splitter(chunks: list[str]) -> None:
    splitter = LineSplitter()
    lines = [line for chunk in chunks for line in splitter.feed(chunk)] + splitter.flush()
    assert lines == ["a", "b", "c", "d"]


def test_line_splitter_keeps_empty_lines_and_long_ones() -> None:
    splitter = LineSplitter()
    lines = [*splitter.feed("\n\r\n"), *splitter.feed("x" * 5), *splitter.feed("y" * 5),
             *splitter.feed("\r"), *splitter.feed("\n"), *splitter.feed("\nz"),
             *splitter.flush()]
    assert lines == ["", "", "xxxxxyyyyy", "", "z"]
