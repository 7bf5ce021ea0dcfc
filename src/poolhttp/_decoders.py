"""Content-Encoding decoders and the body's streaming helpers; no I/O.

A decoder takes the body as it arrives, chunk by chunk, and yields the decoded bytes in pieces
of at most about `CHUNK` (64 KiB): `decode(chunk)` and, at the end of the body, `finish()` are
generators, so a small compressed chunk that inflates to a gigabyte is decoded one piece at a
time, as the consumer asks for it, never all at once.

    gzip, x-gzip   zlib, member after member (trailing bytes that start no member are dropped)
    deflate        the zlib format (RFC 1950) or raw deflate (RFC 1951), told apart by the
                   first two bytes, as servers send both
    br             the `brotli` package (extra `brotli`), output bounded by the library at
                   block granularity: a piece may reach about 2 x CHUNK
    zstd           the `zstandard` package (extra `zstd`). Its decompressor decodes all the
                   input it is given, so input is fed in slices: 16 bytes to 1 KiB, adapted
                   to keep a step's output near CHUNK. A zstd block (up to 128 KiB) can come
                   from 4 bytes, so one step yields at most about 32 MiB, only when the ratio
                   jumps at once; the output is still handed on in pieces of CHUNK.
    identity       nothing to do

`Content-Encoding: gzip, br` lists the codings in the order they were applied, so they are
undone last first (br, then gzip). A body with a coding not listed here is passed through as
received, whole: no error (undoing only some of the codings would hand out neither the body
nor what was sent). Corrupt or truncated data raises `DecodingError`, and so does br or zstd
when its package is missing; those packages are imported only when a response uses them.
"""

from __future__ import annotations

import codecs
import functools
import importlib
import importlib.util
import itertools
import re
import zlib
from collections.abc import Iterator
from typing import Any, Protocol

from ._exceptions import DecodingError, ResponseTooLarge

__all__ = ["CHUNK", "ByteChunker", "ContentDecoder", "LineSplitter", "accept_encoding",
           "decode_all", "make_decoder", "text_decoder"]

#: The most output one decoding step yields (brotli: about twice that, see above).
CHUNK = 64 * 1024

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_SLICE_MIN = 16
_ZSTD_SLICE_MAX = 1024


class ContentDecoder(Protocol):
    """Both methods are generators: nothing runs until the caller iterates."""

    def decode(self, data: bytes) -> Iterator[bytes]: ...  # the pieces `data` decodes to
    def finish(self) -> Iterator[bytes]: ...  # at the end of the body; raises if truncated


def _fail(coding: str, origin: str | None, detail: object) -> DecodingError:
    where = f" from {origin}" if origin else ""
    return DecodingError(f"cannot decode the {coding} body{where}: {detail}", origin=origin)


class ZlibDecoder:
    """gzip (every member) or deflate (zlib-wrapped or raw), `CHUNK` bytes of output a step."""

    __slots__ = ("_coding", "_done", "_head", "_obj", "_origin")

    def __init__(self, coding: str, origin: str | None = None) -> None:
        self._coding = coding  # "gzip" or "deflate"
        self._origin = origin
        self._obj: Any = None  # a zlib decompressobj once the first two bytes are known
        self._head = b""  # the first bytes of a stream, until there are two
        self._done = False  # the last stream ended: what follows is dropped

    def _start(self, data: bytes) -> bytes:
        """Open the next stream once its first two bytes are there; the bytes left to feed."""
        data = self._head + data
        if len(data) < 2:
            self._head = data
            return b""
        self._head = b""
        if self._coding == "gzip":
            if self._obj is not None and not data.startswith(_GZIP_MAGIC):
                self._done = True  # trailing bytes after the last member
                return b""
            wbits = 16 + zlib.MAX_WBITS
        else:  # RFC 1950 header: method 8, window <= 32 KiB, check bits
            cmf, flg = data[0], data[1]
            zlib_wrapped = cmf & 0x0F == 8 and cmf >> 4 <= 7 and (cmf << 8 | flg) % 31 == 0
            wbits = zlib.MAX_WBITS if zlib_wrapped else -zlib.MAX_WBITS
        self._obj = zlib.decompressobj(wbits)
        return data

    def decode(self, data: bytes) -> Iterator[bytes]:
        while not self._done:
            obj = self._obj
            if obj is None or obj.eof:  # the first stream, or the next gzip member
                data = self._start(data)
                if not data:
                    return
                obj = self._obj
            try:
                out = obj.decompress(data, CHUNK)
            except zlib.error as exc:
                raise _fail(self._coding, self._origin, exc) from exc
            if out:
                yield out
            if obj.eof:
                data = obj.unused_data
                self._done = self._coding == "deflate"
            else:
                data = obj.unconsumed_tail
                if not data and len(out) < CHUNK:  # a full piece: zlib may hold more output
                    return

    def finish(self) -> Iterator[bytes]:
        obj = self._obj
        if not (self._done or (obj is None and not self._head) or (obj and obj.eof)):
            raise _fail(self._coding, self._origin, "the compressed data ends early (truncated)")
        yield from ()


def _optional_module(name: str, coding: str, extra: str, origin: str | None) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise _fail(coding, origin, f"the {name!r} package is not installed; install it with "
                    f"the {extra!r} extra: pip install 'poolhttp[{extra}]'") from exc


class BrotliDecoder:
    """br, through the `brotli` package."""

    __slots__ = ("_bounded", "_error", "_fed", "_obj", "_origin")

    def __init__(self, origin: str | None = None) -> None:
        brotli = _optional_module("brotli", "br", "brotli", origin)
        self._obj = brotli.Decompressor()
        self._error: type[Exception] = brotli.error
        # brotli < 1.2 cannot bound a step's output: it inflates each chunk whole.
        self._bounded = hasattr(self._obj, "can_accept_more_data")
        self._origin = origin
        self._fed = False

    def decode(self, data: bytes) -> Iterator[bytes]:
        if not data:
            return
        self._fed = True
        obj = self._obj
        try:
            if not self._bounded:
                out = obj.process(data)
                if out:
                    yield out
                return
            out = obj.process(data, output_buffer_limit=CHUNK)
            while out or not obj.can_accept_more_data():
                if out:
                    yield out
                out = obj.process(b"", output_buffer_limit=CHUNK)
        except self._error as exc:
            raise _fail("br", self._origin, exc) from exc

    def finish(self) -> Iterator[bytes]:
        if self._fed and not self._obj.is_finished():
            raise _fail("br", self._origin, "the compressed data ends early (truncated)")
        yield from ()


class ZstdDecoder:
    """zstd, through the `zstandard` package: input fed in slices (see the module's doc)."""

    __slots__ = ("_error", "_fed", "_module", "_obj", "_origin", "_slice")

    def __init__(self, origin: str | None = None) -> None:
        self._module = _optional_module("zstandard", "zstd", "zstd", origin)
        self._obj = self._module.ZstdDecompressor().decompressobj()
        self._error: type[Exception] = self._module.ZstdError
        self._origin = origin
        self._slice = _ZSTD_SLICE_MIN
        self._fed = False  # a frame was started and has not ended yet

    def _step(self, data: bytes) -> bytes:
        out = []
        while data:
            if self._obj.eof:  # a new frame follows the last one
                self._obj = self._module.ZstdDecompressor().decompressobj()
            try:
                out.append(self._obj.decompress(data))
            except self._error as exc:
                raise _fail("zstd", self._origin, exc) from exc
            self._fed = not self._obj.eof
            data = self._obj.unused_data if self._obj.eof else b""
        return b"".join(out)

    def decode(self, data: bytes) -> Iterator[bytes]:
        view = memoryview(data)
        while view:
            size = self._slice
            out = self._step(bytes(view[:size]))
            view = view[size:]
            # Aim the next slice at CHUNK bytes of output, at the ratio just seen.
            wanted = CHUNK * size // len(out) if out else size * 2
            self._slice = max(_ZSTD_SLICE_MIN, min(_ZSTD_SLICE_MAX, wanted))
            for start in range(0, len(out), CHUNK):
                yield out[start:start + CHUNK] if len(out) > CHUNK else out

    def finish(self) -> Iterator[bytes]:
        if self._fed:
            raise _fail("zstd", self._origin, "the compressed data ends early (truncated)")
        yield from ()


class MultiDecoder:
    """Stacked codings: `decoders` in the order they are undone (the header's last first)."""

    __slots__ = ("_decoders",)

    def __init__(self, decoders: list[ContentDecoder]) -> None:
        self._decoders = decoders

    def _through(self, index: int, data: bytes) -> Iterator[bytes]:
        if index == len(self._decoders):
            yield data
            return
        for piece in self._decoders[index].decode(data):
            yield from self._through(index + 1, piece)

    def decode(self, data: bytes) -> Iterator[bytes]:
        return self._through(0, data)

    def finish(self) -> Iterator[bytes]:
        for index, decoder in enumerate(self._decoders):
            for piece in decoder.finish():
                yield from self._through(index + 1, piece)


_CODINGS: dict[str, Any] = {
    "gzip": lambda origin: ZlibDecoder("gzip", origin),
    "x-gzip": lambda origin: ZlibDecoder("gzip", origin),
    "deflate": lambda origin: ZlibDecoder("deflate", origin),
    "br": BrotliDecoder,
    "zstd": ZstdDecoder,
}


def make_decoder(content_encoding: str, origin: str | None = None) -> ContentDecoder | None:
    """The decoder for a `Content-Encoding` value, or None: nothing to undo, or a coding we
    do not know (the body is then passed through as received)."""
    codings = [c.strip().lower() for c in content_encoding.split(",")]
    codings = [c for c in codings if c and c != "identity"]
    if not codings or any(c not in _CODINGS for c in codings):
        return None
    decoders = [_CODINGS[coding](origin) for coding in reversed(codings)]
    return decoders[0] if len(decoders) == 1 else MultiDecoder(decoders)


def decode_all(decoder: ContentDecoder, data: bytes, limit: int | None = None,
               origin: str | None = None) -> bytes:
    """`data` decoded whole; `ResponseTooLarge` as soon as the output passes `limit` bytes."""
    pieces = []
    size = 0
    for piece in itertools.chain(decoder.decode(data), decoder.finish()):  # both lazy
        size += len(piece)
        if limit is not None and size > limit:
            raise too_large(limit, origin)
        pieces.append(piece)
    return b"".join(pieces)


def too_large(limit: int, origin: str | None) -> ResponseTooLarge:
    where = f" from {origin}" if origin else ""
    return ResponseTooLarge(f"the response body{where} is over max_content_size={limit} "
                            "bytes; stream it (client.stream(), iter_bytes()) instead",
                            origin=origin, limit=limit)


@functools.cache
def accept_encoding() -> bytes:
    """The `Accept-Encoding` value to send by default: the codings we can decode here, br and
    zstd only when their package is installed (checked once, without importing it)."""
    value = b"gzip, deflate"
    for module, coding in (("brotli", b"br"), ("zstandard", b"zstd")):
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if found:
            value += b", " + coding
    return value


# -- streaming helpers -----------------------------------------------------------------------
class ByteChunker:
    """Re-chunks bytes into pieces of exactly `size` (the last one may be shorter);
    `size=None` passes each non-empty piece on as it comes."""

    __slots__ = ("_buffer", "_size")

    def __init__(self, size: int | None) -> None:
        if size is not None and size <= 0:
            raise ValueError(f"chunk_size must be a positive number of bytes, not {size}")
        self._size = size
        self._buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[bytes]:
        size = self._size
        if size is None or (not self._buffer and len(data) == size):
            if data:
                yield data
            return
        buffer = self._buffer
        buffer += data
        while len(buffer) >= size:
            yield bytes(buffer[:size])
            del buffer[:size]

    def flush(self) -> Iterator[bytes]:
        if self._buffer:
            yield bytes(self._buffer)
            self._buffer.clear()


def text_decoder(encoding: str) -> codecs.IncrementalDecoder:
    """An incremental decoder for `encoding` (utf-8 when Python does not know that name);
    bytes that are not valid text become U+FFFD, as in `Response.text`."""
    try:
        factory = codecs.getincrementaldecoder(encoding)
    except LookupError:
        factory = codecs.getincrementaldecoder("utf-8")
    return factory(errors="replace")


_LINE_END = re.compile(r"\r\n|\r|\n")


class LineSplitter:
    """Splits text into lines at \\n, \\r\\n and \\r, across chunks; endings not included."""

    __slots__ = ("_partial", "_skip_lf")

    def __init__(self) -> None:
        self._partial: list[str] = []  # the start of a line not ended yet
        self._skip_lf = False  # the last chunk ended with \r: a \n starting the next is its end

    def feed(self, text: str) -> list[str]:
        if self._skip_lf and text.startswith("\n"):
            text = text[1:]
        self._skip_lf = False
        if not text:
            return []
        self._skip_lf = text.endswith("\r")
        lines = _LINE_END.split(text)
        rest = lines.pop()
        if lines and self._partial:
            lines[0] = "".join(self._partial) + lines[0]
            self._partial.clear()
        if rest:
            self._partial.append(rest)
        return lines

    def flush(self) -> list[str]:
        line = "".join(self._partial)
        self._partial.clear()
        return [line] if line else []
