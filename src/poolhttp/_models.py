"""Request and Response."""

from __future__ import annotations

import datetime
import itertools
import json as jsonlib
import re
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator
from typing import Any, Protocol

from ._core.http11 import split_status_line
from ._decoders import (
    ByteChunker,
    ContentDecoder,
    LineSplitter,
    decode_all,
    make_decoder,
    text_decoder,
    too_large,
)
from ._exceptions import HTTPError, HTTPStatusError, InvalidRequest
from ._headers import Headers, HeaderTypes
from ._urls import URL, Origin, parse_url

__all__ = ["Request", "Response", "ResponseNotRead", "StreamConsumed"]


class StreamConsumed(HTTPError, RuntimeError):
    """The streamed body was already iterated and was not kept."""


class ResponseNotRead(HTTPError, RuntimeError):
    """`.content` of a streamed response was asked for before `read()` / `aread()`."""


_METHOD_OK = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_KNOWN_METHODS = frozenset(
    ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"])


def check_method(method: str) -> str:
    """Upper-case `method` and make sure it is an HTTP token (no spaces, CR, LF, NUL)."""
    if method in _KNOWN_METHODS:
        return method
    if not isinstance(method, str):
        raise InvalidRequest(f"method must be a str, not {type(method).__name__}")
    upper = method.upper()
    if upper in _KNOWN_METHODS:
        return upper
    if not _METHOD_OK.fullmatch(method):
        raise InvalidRequest(f"invalid HTTP method {method!r}")
    return upper


def body_problem(exc: Exception) -> str:
    """The message of a WriteError for a streamed body that could not be sent as given."""
    if isinstance(exc, InvalidRequest):  # the trailers (see trailer_pairs) say what it was
        return str(exc)
    return f"bad chunk in the request body: {exc}"


def body_chunk(chunk: Any) -> bytes | bytearray | memoryview:
    """One chunk of a streamed request body as bytes (str is encoded as UTF-8); TypeError
    for anything else. Every connection kind checks its chunks with this."""
    if isinstance(chunk, str):
        return chunk.encode("utf-8")
    if not isinstance(chunk, (bytes, bytearray, memoryview)):
        raise TypeError(f"body chunks must be bytes, not {type(chunk).__name__}")
    return chunk


class Request:
    """One HTTP request as the client will send it.

    `headers` shows every header that goes on the wire, the client's defaults included.
    """

    __slots__ = ("_base_headers", "_headers", "content", "extra_headers", "method", "stream",
                 "stream_length", "trailers", "url")

    def __init__(self, method: str, url: URL | str, *, headers: HeaderTypes | None = None,
                 content: bytes | None = None) -> None:
        self.method = check_method(method)
        self.url = url if isinstance(url, URL) else parse_url(url)
        self.extra_headers = Headers(headers).raw
        self._base_headers: list[tuple[bytes, bytes]] = []
        self.content = content
        self.stream: Any = None
        self.stream_length: int | None = None  # a streamed body's size, when it is known
        #: Trailer fields sent after the body: validated pairs, or a callable returning
        #: headers, called once the body has gone out (see `trailer_pairs`).
        self.trailers: TrailerSource | None = None
        self._headers: Headers | None = None

    @classmethod
    def build(cls, method: str, url: URL, extra_headers: list[tuple[bytes, bytes]],
              base_headers: list[tuple[bytes, bytes]], content: bytes | None,
              stream: Any, stream_length: int | None = None,
              trailers: TrailerSource | None = None) -> Request:
        """The client's constructor: arguments already validated."""
        request = cls.__new__(cls)
        request.method = method
        request.url = url
        request.extra_headers = extra_headers
        request._base_headers = base_headers
        request.content = content
        request.stream = stream
        request.stream_length = stream_length
        request.trailers = trailers
        request._headers = None
        return request

    @property
    def origin(self) -> Origin:
        return self.url.origin

    @property
    def headers(self) -> Headers:
        """Every header sent: Host, the client's defaults, then this request's own."""
        if self._headers is None:
            overridden = {name.lower() for name, _ in self.extra_headers}
            pairs = [] if b"host" in overridden else [
                (b"Host", self.url.origin.host_header.encode("ascii"))]
            pairs += [p for p in self._base_headers if p[0].lower() not in overridden]
            pairs += self.extra_headers
            self._headers = Headers.from_raw(pairs)
        return self._headers

    def __repr__(self) -> str:
        return f"<Request [{self.method} {self.url}]>"


#: What `Request.trailers` holds: checked pairs, or a callable made to return headers.
TrailerSource = list[tuple[bytes, bytes]] | Callable[[], HeaderTypes]

class AsyncResponseStream(Protocol):
    async def read_chunk(self) -> bytes: ...  # b"" once the body has ended
    async def aclose(self) -> None: ...


class SyncResponseStream(Protocol):
    def read_chunk(self) -> bytes: ...  # b"" once the body has ended
    def close(self) -> None: ...


_CHARSET_RE = re.compile(r"charset\s*=\s*[\"']?([\w.:-]+)", re.IGNORECASE)

# What `Response._content` holds (`_state`).
_RAW = 0  # the body as received, not yet looked at for a Content-Encoding (or None: a stream)
_PLAIN = 1  # the body as received, which had nothing to decode
_DECODED = 2  # the decoded body; the bytes as received were not kept
_CONSUMED = 3  # nothing: the stream was iterated (or is being read)


_NO_HISTORY: list[Response] = []  # shared by every response that followed no redirect


class Response:
    """An HTTP response.

    From `client.get()` and friends the body is already read: `content`, `text` and `json()`
    work at once. From `client.stream()` it is not: iterate `aiter_bytes()` / `iter_bytes()`, or
    call `aread()` / `read()`, inside the `with` block.

    `content`, `text`, `json()`, `read()` and `iter_bytes()` give the body with its
    `Content-Encoding` undone (gzip, deflate, br, zstd; see `poolhttp._decoders`);
    `iter_raw()` gives it as received. A body is decoded when it is first asked for, and
    `max_content_size` caps what `content` and `read()` decode into memory.
    """

    __slots__ = ("_content", "_elapsed", "_headers", "_history", "_http_version",
                 "_max_content_size", "_raw_headers", "_reason", "_state", "_status_line",
                 "_stream", "_trailers", "request", "status_code")

    request: Request

    def __init__(self, status_code: int, *, headers: HeaderTypes | None = None,
                 content: bytes = b"", request: Request | None = None,
                 reason_phrase: str = "", http_version: str = "HTTP/1.1") -> None:
        if request is None:
            request = Request("GET", "http://localhost/")
        self.status_code = status_code
        self._reason: str | None = reason_phrase
        self._http_version: str | None = http_version
        self._status_line = b""
        self._headers: Headers | None = Headers(headers)
        self._raw_headers = b""  # only responses from the wire keep an unsplit block
        self._content: bytes | None = content  # as received: decoded on first use
        self.request = request
        self._elapsed = 0.0
        self._stream: AsyncResponseStream | SyncResponseStream | None = None
        self._state = _RAW
        self._history: list[Response] = _NO_HISTORY
        self._trailers = b""

    @classmethod
    def from_wire(cls, status_code: int, status_line: bytes, raw_headers: bytes,
                  content: bytes | None, request: Request, elapsed: float) -> Response:
        """The drivers' constructor: no copying, no validation; the status line and headers
        are decoded only when read, the body when it is first asked for."""
        response = cls.__new__(cls)
        response.status_code = status_code
        response._status_line = status_line
        response._reason = response._http_version = None
        response._raw_headers = raw_headers
        response._headers = None
        response._content = content
        response.request = request
        response._elapsed = elapsed
        response._stream = None
        response._state = _RAW
        response._history = _NO_HISTORY
        response._trailers = b""
        return response

    @property
    def history(self) -> list[Response]:
        """The responses of the redirects followed to get this one, oldest first (their
        bodies read, their connections released); empty when none was followed."""
        return self._history if self._history is not _NO_HISTORY else []

    @history.setter
    def history(self, responses: list[Response]) -> None:
        self._history = responses

    # -- metadata --------------------------------------------------------------------------
    @property
    def reason_phrase(self) -> str:
        """The status line's text ("Not Found"), as the server sent it; may be empty."""
        if self._reason is None:
            self._http_version, self._reason = split_status_line(self._status_line)
        return self._reason

    @property
    def http_version(self) -> str:
        """"HTTP/1.1", "HTTP/1.0" or "HTTP/2"."""
        if self._http_version is None:
            self._http_version, self._reason = split_status_line(self._status_line)
        return self._http_version

    @property
    def headers(self) -> Headers:
        if self._headers is None:  # from the wire: split the header block on first use
            self._headers = Headers.from_block(self._raw_headers)
        return self._headers

    @property
    def trailers(self) -> Headers:
        """Fields the server sent after the body (HTTP/2 trailers, e.g. a checksum or a gRPC
        status); empty when none came, or until a streamed body has been read to the end."""
        return Headers.from_block(self._trailers)

    @property
    def url(self) -> URL:
        return self.request.url

    @property
    def elapsed(self) -> datetime.timedelta:
        """From sending the request until its response was read (for a stream: until its
        headers arrived). Time spent waiting for a connection is not included."""
        return datetime.timedelta(seconds=self._elapsed)

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    @property
    def is_error(self) -> bool:
        return self.status_code >= 400

    @property
    def is_redirect(self) -> bool:
        return self.status_code in (301, 302, 303, 307, 308) and "location" in self.headers

    @property
    def encoding(self) -> str:
        """The charset named by Content-Type, else utf-8."""
        match = _CHARSET_RE.search(self.headers.get("content-type", ""))
        return match.group(1) if match else "utf-8"

    @property
    def max_content_size(self) -> int | None:
        """The most bytes `content` and `read()` / `aread()` decode into memory, or None (no
        cap, the default); past it they raise `ResponseTooLarge`. The clients set it."""
        try:  # left unset by from_wire(), so that a response costs nothing more to make
            return self._max_content_size
        except AttributeError:
            return None

    @max_content_size.setter
    def max_content_size(self, limit: int | None) -> None:
        self._max_content_size = limit

    # -- body ------------------------------------------------------------------------------
    @property
    def content(self) -> bytes:
        """The body, its Content-Encoding undone (`DecodingError` when that fails)."""
        content = self._content
        if content is None:
            if self._state == _CONSUMED:
                raise StreamConsumed("the body was consumed by iteration and was not kept")
            raise ResponseNotRead(
                "this is a streamed response: call read() / await aread() before .content")
        if self._state == _RAW:  # first use: is there a Content-Encoding to undo?
            # Inline, the test of _decoder(): a response from the wire whose header block
            # does not name the header costs one search of the block, no split.
            # (find() is quicker than `in`: no buffer protocol.)
            if content and (self._headers is not None
                            or self._raw_headers.lower().find(b"content-encoding") >= 0):
                return self._decode_content(content)
            self._state = _PLAIN
        return content

    def _decode_content(self, raw: bytes) -> bytes:
        decoder = self._decoder()
        if decoder is None:
            self._state = _PLAIN
            return raw
        content = decode_all(decoder, raw, self.max_content_size, self._origin())
        self._content, self._state = content, _DECODED
        return content

    def _decoder(self) -> ContentDecoder | None:
        """The body's decoder; None when it has no Content-Encoding to undo."""
        # A response from the wire whose header block does not name the header is done
        # without splitting the block.
        if self._headers is None and self._raw_headers.lower().find(b"content-encoding") < 0:
            return None
        coding = self.headers.get("content-encoding")
        return make_decoder(coding, self._origin()) if coding else None

    def _origin(self) -> str:
        return str(self.request.url.origin)

    @property
    def text(self) -> str:
        content = self.content
        try:
            return content.decode(self.encoding, errors="replace")
        except LookupError:  # unknown charset name from the server
            return content.decode("utf-8", errors="replace")

    def json(self, **kwargs: Any) -> Any:
        return jsonlib.loads(self.content, **kwargs)

    def raise_for_status(self) -> Response:
        """Raise `HTTPStatusError` for a 4xx or 5xx status; return the response otherwise."""
        if self.status_code < 400:
            return self
        kind = "client error" if self.status_code < 500 else "server error"
        raise HTTPStatusError(
            f"{kind} '{self.status_code} {self.reason_phrase}' for {self.request.method} "
            f"{self.request.url}", request=self.request, response=self)

    @property
    def is_closed(self) -> bool:
        return self._stream is None

    def _ready_content(self) -> bytes | None:
        """The decoded body when it is in memory already, else None."""
        return self._content if self._state in (_PLAIN, _DECODED) else None

    def _raw_content(self) -> bytes:
        """The body as received, of a response that is not a stream to be read."""
        if self._state == _DECODED:
            raise StreamConsumed("the body was decoded into .content; its bytes as received "
                                 "were not kept")
        return self.content if self._content is None else self._content

    def _start_reading(self) -> tuple[_Pipeline, _Cap]:
        return _Pipeline(self._decoder(), None), _Cap(self.max_content_size, self)

    def _keep(self, content: bytes, decoded: bool) -> bytes:
        self._content, self._state = content, (_DECODED if decoded else _PLAIN)
        return content

    # -- streaming, async --------------------------------------------------------------------
    async def aiter_raw(self, chunk_size: int | None = None) -> AsyncGenerator[bytes, None]:
        """Yield the body as received (Content-Encoding not undone), in the chunks it arrives
        in or re-chunked to `chunk_size` bytes; the connection is released at the end."""
        chunker = ByteChunker(chunk_size)
        if self._stream is None or self._content is not None:
            for piece in itertools.chain(chunker.feed(self._raw_content()), chunker.flush()):
                yield piece
            return
        stream = self._async_stream()
        self._state = _CONSUMED
        try:
            while chunk := await stream.read_chunk():
                for piece in chunker.feed(chunk):
                    yield piece
            for piece in chunker.flush():
                yield piece
        finally:
            await self.aclose()

    async def aiter_bytes(self, chunk_size: int | None = None) -> AsyncGenerator[bytes, None]:
        """Yield the decoded body, in pieces as they are decoded (at most about 64 KiB each)
        or of exactly `chunk_size` bytes (the last one may be shorter); the connection is
        released at the end."""
        if self._content is not None or self._stream is None:
            for piece in self._iter_in_memory(chunk_size):
                yield piece
            return
        stream = self._async_stream()
        self._state = _CONSUMED
        try:
            pipeline = _Pipeline(self._decoder(), chunk_size)  # may raise: br without brotli
            while chunk := await stream.read_chunk():
                for piece in pipeline.feed(chunk):
                    yield piece
            for piece in pipeline.end():
                yield piece
        finally:
            await self.aclose()

    async def aiter_text(self) -> AsyncGenerator[str, None]:
        """Yield the decoded body as text, decoded with the response's charset (`encoding`)
        as it arrives: a character split between two chunks comes out whole."""
        decoder = text_decoder(self.encoding)
        chunks = self.aiter_bytes()
        try:
            async for chunk in chunks:
                if text := decoder.decode(chunk):
                    yield text
            if text := decoder.decode(b"", True):
                yield text
        finally:
            await chunks.aclose()

    async def aiter_lines(self) -> AsyncGenerator[str, None]:
        """Yield the text line by line, split at \\n, \\r\\n or \\r; endings not included."""
        splitter = LineSplitter()
        texts = self.aiter_text()
        try:
            async for text in texts:
                for line in splitter.feed(text):
                    yield line
            for line in splitter.flush():
                yield line
        finally:
            await texts.aclose()

    async def aread(self) -> bytes:
        """Read the rest of the body and keep it, decoded, as `.content`."""
        if self._content is not None:
            return self.content
        stream = self._async_stream()
        self._state = _CONSUMED
        try:
            pipeline, cap = self._start_reading()
            while chunk := await stream.read_chunk():
                cap.add(pipeline.feed(chunk))
            cap.add(pipeline.end())
        finally:
            await self.aclose()
        return self._keep(cap.join(), pipeline.decodes)

    async def aclose(self) -> None:
        """Release the connection; it is discarded when the body was not read to the end."""
        stream, self._stream = self._stream, None
        if stream is not None:
            await stream.aclose()  # type: ignore[union-attr]  # _async_stream() checked it

    def _async_stream(self) -> AsyncResponseStream:
        stream = self._stream
        if stream is None:
            raise StreamConsumed("the body was already read or the response was closed")
        if not hasattr(stream, "aclose"):
            raise TypeError("this response belongs to a sync Client: use iter_bytes()/read()")
        return stream  # type: ignore[return-value]

    # -- streaming, sync ---------------------------------------------------------------------
    def iter_raw(self, chunk_size: int | None = None) -> Iterator[bytes]:
        """Yield the body as received (Content-Encoding not undone), in the chunks it arrives
        in or re-chunked to `chunk_size` bytes; the connection is released at the end."""
        chunker = ByteChunker(chunk_size)
        if self._stream is None or self._content is not None:
            yield from chunker.feed(self._raw_content())
            yield from chunker.flush()
            return
        stream = self._sync_stream()
        self._state = _CONSUMED
        try:
            while chunk := stream.read_chunk():
                yield from chunker.feed(chunk)
            yield from chunker.flush()
        finally:
            self.close()

    def iter_bytes(self, chunk_size: int | None = None) -> Iterator[bytes]:
        """Yield the decoded body, in pieces as they are decoded (at most about 64 KiB each)
        or of exactly `chunk_size` bytes (the last one may be shorter); the connection is
        released at the end."""
        if self._content is not None or self._stream is None:
            yield from self._iter_in_memory(chunk_size)
            return
        stream = self._sync_stream()
        self._state = _CONSUMED
        try:
            pipeline = _Pipeline(self._decoder(), chunk_size)  # may raise: br without brotli
            while chunk := stream.read_chunk():
                yield from pipeline.feed(chunk)
            yield from pipeline.end()
        finally:
            self.close()

    def _iter_in_memory(self, chunk_size: int | None) -> Iterator[bytes]:
        """iter_bytes() of a body in memory: decoded step by step when not decoded yet, so a
        small compressed body that inflates hugely is never inflated whole."""
        content = self._ready_content()
        if content is not None:
            pipeline = _Pipeline(None, chunk_size)
        else:
            content = self._raw_content()
            pipeline = _Pipeline(self._decoder() if content else None, chunk_size)
        yield from pipeline.feed(content)
        yield from pipeline.end()

    def iter_text(self) -> Iterator[str]:
        """Yield the decoded body as text, decoded with the response's charset (`encoding`)
        as it arrives: a character split between two chunks comes out whole."""
        decoder = text_decoder(self.encoding)
        for chunk in self.iter_bytes():
            if text := decoder.decode(chunk):
                yield text
        if text := decoder.decode(b"", True):
            yield text

    def iter_lines(self) -> Iterator[str]:
        """Yield the text line by line, split at \\n, \\r\\n or \\r; endings not included."""
        splitter = LineSplitter()
        for text in self.iter_text():
            yield from splitter.feed(text)
        yield from splitter.flush()

    def read(self) -> bytes:
        """Read the rest of the body and keep it, decoded, as `.content`."""
        if self._content is not None:
            return self.content
        stream = self._sync_stream()
        self._state = _CONSUMED
        try:
            pipeline, cap = self._start_reading()
            while chunk := stream.read_chunk():
                cap.add(pipeline.feed(chunk))
            cap.add(pipeline.end())
        finally:
            self.close()
        return self._keep(cap.join(), pipeline.decodes)

    def close(self) -> None:
        """Release the connection; it is discarded when the body was not read to the end."""
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()  # type: ignore[union-attr]  # _sync_stream() checked it

    def _sync_stream(self) -> SyncResponseStream:
        stream = self._stream
        if stream is None:
            raise StreamConsumed("the body was already read or the response was closed")
        if not hasattr(stream, "close") or hasattr(stream, "aclose"):
            raise TypeError("this response belongs to an AsyncClient: use aiter_bytes()/aread()")
        return stream

    def __repr__(self) -> str:
        return f"<Response [{self.status_code} {self.reason_phrase}]>"


class _Pipeline:
    """A body's chunks as received in, decoded and re-chunked pieces out."""

    __slots__ = ("_chunker", "_decoder")

    def __init__(self, decoder: ContentDecoder | None, chunk_size: int | None) -> None:
        self._decoder = decoder
        self._chunker = ByteChunker(chunk_size)

    @property
    def decodes(self) -> bool:
        return self._decoder is not None

    def feed(self, chunk: bytes) -> Iterator[bytes]:
        if self._decoder is None:
            yield from self._chunker.feed(chunk)
            return
        for piece in self._decoder.decode(chunk):
            yield from self._chunker.feed(piece)

    def end(self) -> Iterator[bytes]:
        if self._decoder is not None:
            for piece in self._decoder.finish():
                yield from self._chunker.feed(piece)
        yield from self._chunker.flush()


class _Cap:
    """The pieces `read()` keeps, up to the response's `max_content_size`."""

    __slots__ = ("_limit", "_pieces", "_response", "_size")

    def __init__(self, limit: int | None, response: Response) -> None:
        self._limit = limit
        self._response = response
        self._pieces: list[bytes] = []
        self._size = 0

    def add(self, pieces: Iterable[bytes]) -> None:
        for piece in pieces:
            self._size += len(piece)
            if self._limit is not None and self._size > self._limit:
                raise too_large(self._limit, self._response._origin())
            self._pieces.append(piece)

    def join(self) -> bytes:
        return b"".join(self._pieces)
