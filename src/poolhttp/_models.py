"""Request and Response."""

from __future__ import annotations

import datetime
import json as jsonlib
import re
from collections.abc import AsyncGenerator, Iterator
from typing import Any, Protocol

from ._core.http11 import split_status_line
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


class Request:
    """One HTTP request as the client will send it.

    `headers` shows every header that goes on the wire, the client's defaults included.
    """

    __slots__ = ("_base_headers", "_headers", "content", "extra_headers", "method", "stream",
                 "url")

    def __init__(self, method: str, url: URL | str, *, headers: HeaderTypes | None = None,
                 content: bytes | None = None) -> None:
        self.method = check_method(method)
        self.url = url if isinstance(url, URL) else parse_url(url)
        self.extra_headers = Headers(headers).raw
        self._base_headers: list[tuple[bytes, bytes]] = []
        self.content = content
        self.stream: Any = None
        self._headers: Headers | None = None

    @classmethod
    def build(cls, method: str, url: URL, extra_headers: list[tuple[bytes, bytes]],
              base_headers: list[tuple[bytes, bytes]], content: bytes | None,
              stream: Any) -> Request:
        """The client's constructor: arguments already validated."""
        request = cls.__new__(cls)
        request.method = method
        request.url = url
        request.extra_headers = extra_headers
        request._base_headers = base_headers
        request.content = content
        request.stream = stream
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


class AsyncResponseStream(Protocol):
    async def read_chunk(self) -> bytes: ...  # b"" once the body has ended
    async def aclose(self) -> None: ...


class SyncResponseStream(Protocol):
    def read_chunk(self) -> bytes: ...  # b"" once the body has ended
    def close(self) -> None: ...


_CHARSET_RE = re.compile(r"charset\s*=\s*[\"']?([\w.:-]+)", re.IGNORECASE)


class Response:
    """An HTTP response.

    From `client.get()` and friends the body is already read: `content`, `text` and `json()`
    work at once. From `client.stream()` it is not: iterate `aiter_bytes()` / `iter_bytes()`, or
    call `aread()` / `read()`, inside the `with` block.
    """

    __slots__ = ("_content", "_elapsed", "_headers", "_http_version", "_raw_headers", "_reason",
                 "_status_line", "_stream", "_stream_used", "request", "status_code")

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
        self._content: bytes | None = content
        self.request = request
        self._elapsed = 0.0
        self._stream: AsyncResponseStream | SyncResponseStream | None = None
        self._stream_used = False

    @classmethod
    def from_wire(cls, status_code: int, status_line: bytes, raw_headers: bytes,
                  content: bytes | None, request: Request, elapsed: float) -> Response:
        """The drivers' constructor: no copying, no validation; the status line and headers
        are decoded only when read."""
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
        response._stream_used = False
        return response

    # -- metadata --------------------------------------------------------------------------
    @property
    def reason_phrase(self) -> str:
        """The status line's text ("Not Found"), as the server sent it; may be empty."""
        if self._reason is None:
            self._http_version, self._reason = split_status_line(self._status_line)
        return self._reason

    @property
    def http_version(self) -> str:
        """"HTTP/1.1" or "HTTP/1.0"."""
        if self._http_version is None:
            self._http_version, self._reason = split_status_line(self._status_line)
        return self._http_version

    @property
    def headers(self) -> Headers:
        if self._headers is None:  # from the wire: split the header block on first use
            self._headers = Headers.from_block(self._raw_headers)
        return self._headers

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

    # -- body ------------------------------------------------------------------------------
    @property
    def content(self) -> bytes:
        if self._content is None:
            if self._stream_used:
                raise StreamConsumed("the body was consumed by iteration and was not kept")
            raise ResponseNotRead(
                "this is a streamed response: call read() / await aread() before .content")
        return self._content

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

    # -- streaming, async --------------------------------------------------------------------
    async def aiter_bytes(self) -> AsyncGenerator[bytes, None]:
        """Yield the body in the chunks it arrives in; the connection is released at the end."""
        if self._content is not None:
            if self._content:
                yield self._content
            return
        stream = self._async_stream()
        self._stream_used = True
        try:
            while chunk := await stream.read_chunk():
                yield chunk
        finally:
            await self.aclose()

    async def aread(self) -> bytes:
        """Read the rest of the body and keep it as `.content`."""
        if self._content is None:
            stream = self._async_stream()
            chunks = []
            try:
                while chunk := await stream.read_chunk():
                    chunks.append(chunk)
            finally:
                await self.aclose()
            self._content = b"".join(chunks)
        return self._content

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
    def iter_bytes(self) -> Iterator[bytes]:
        """Yield the body in the chunks it arrives in; the connection is released at the end."""
        if self._content is not None:
            if self._content:
                yield self._content
            return
        stream = self._sync_stream()
        self._stream_used = True
        try:
            while chunk := stream.read_chunk():
                yield chunk
        finally:
            self.close()

    def read(self) -> bytes:
        """Read the rest of the body and keep it as `.content`."""
        if self._content is None:
            stream = self._sync_stream()
            chunks = []
            try:
                while chunk := stream.read_chunk():
                    chunks.append(chunk)
            finally:
                self.close()
            self._content = b"".join(chunks)
        return self._content

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
