"""HTTP/1.1 on one connection, without I/O: request bytes out, response events in.

Theory of operation
-------------------
`ResponseReader` wraps one llhttp parser (through httptools) per connection. The driver calls
`expect(is_head)` before each request, then `feed(data)` with whatever the socket produced and
`feed_eof()` when the peer closes. The reader calls its sink:

    sink.on_head(status, status_line, head)       once per final response (1xx skipped)
    sink.on_body(chunk)                           zero or more times
    sink.on_complete(keep_alive)                  once, after `feed` returns, at the body's end

llhttp validates the status line and every header without calling back into Python (no
`on_status` / `on_header` hooks are registered: they were six Python calls per response).
When it reports the head complete, the reader takes the head's bytes from what it was fed --
llhttp has just checked them, and it insists on CRLF, rejects obs-fold and whitespace before
the colon -- and hands over the header lines as one block, split into (name, value) pairs only
if somebody reads `Response.headers` (see `Headers.from_block`).

States: IDLE (no response expected) -> HEAD (status line and headers) -> BODY -> IDLE.
Rules it owns, beyond what llhttp checks (chunk syntax, Content-Length with Transfer-Encoding,
duplicate Content-Length, header grammar):
- A response to HEAD, and any 204 or 304, has no body whatever its headers say. llhttp has no
  HEAD switch, so for HEAD we feed it exactly the header block and stop.
- 1xx responses are skipped; more than `MAX_INTERIM` in a row is an error.
- A body with neither Content-Length nor chunked framing runs until the peer closes.
- Bytes that arrive while no response is expected, or after a complete response in the same
  read, are a protocol error: the connection is out of step and must not be reused.
- The status line and headers may take at most `max_header_bytes` and `max_headers` lines;
  while a head is incomplete, at most `max_header_bytes` are buffered.
- `on_complete` is called only once `feed` has seen every byte it was given, so a response is
  never handed over before we know the connection stayed in step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Protocol

import httptools

from .._exceptions import RemoteProtocolError
from .._headers import (
    split_header_block,  # one splitter, shared with Headers.from_block
    trailer_pairs,
)

if TYPE_CHECKING:
    from .._models import Request
    from .._urls import URL

__all__ = ["Encoders", "RequestEncoder", "ResponseReader", "ResponseSink", "encode_request_head",
           "keep_alive_timeout", "split_header_block", "split_status_line"]

IDLE: Final = 0
HEAD: Final = 1
BODY: Final = 2

MAX_INTERIM: Final = 32
DEFAULT_MAX_HEADER_BYTES: Final = 64 * 1024
DEFAULT_MAX_HEADERS: Final = 100
_HEAD_COPY: Final = 8192  # bytes copied from a memoryview to find the head (more if needed)


class ResponseSink(Protocol):
    def on_head(self, status: int, status_line: bytes, head: bytes) -> None: ...

    def on_body(self, chunk: bytes) -> None: ...

    def on_complete(self, keep_alive: bool) -> None: ...


class _Stop(Exception):
    """Raised inside a parser callback to abandon the rest of a feed."""


class _Hooks:
    """What httptools calls back. It looks the hooks up once, when a parser is made, so body
    chunks can go straight to the sink's `on_body`: one Python call per chunk, not two."""

    __slots__ = ("on_body", "on_headers_complete", "on_message_begin", "on_message_complete")

    on_body: Callable[[bytes], None]
    on_headers_complete: Callable[[], None]
    on_message_begin: Callable[[], None]
    on_message_complete: Callable[[], None]


class ResponseReader:
    """Parses the responses of one connection; see the module docstring."""

    __slots__ = ("_complete", "_data", "_head_block", "_head_bytes", "_head_start", "_hooks",
                 "_interim", "_is_head",
                 "_keep_alive", "_max_header_bytes", "_max_headers", "_parser", "_pending",
                 "_sink", "_source", "_stopped", "origin", "state", "status")

    def __init__(self, sink: ResponseSink, origin: str, *,
                 max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
                 max_headers: int = DEFAULT_MAX_HEADERS) -> None:
        self._sink = sink
        self.origin = origin
        self._max_header_bytes = max_header_bytes
        self._max_headers = max_headers
        hooks = self._hooks = _Hooks()
        hooks.on_message_begin = self._on_message_begin
        hooks.on_headers_complete = self._on_headers_complete
        hooks.on_body = sink.on_body
        hooks.on_message_complete = self._on_message_complete
        self._parser = httptools.HttpResponseParser(hooks)
        self.state = IDLE
        self.status = 0
        self._is_head = False
        self._complete = False
        self._keep_alive = False
        self._interim = 0
        self._head_bytes = 0  # fed while in HEAD, for the size limit and `response_started`
        self._pending = b""  # bytes of an unfinished head carried over from earlier feeds
        self._source: bytes = b""  # _pending + the current feed (or its start): heads live here
        self._head_start = 0  # where the next head begins in _source
        self._data: bytes | memoryview = b""  # the feed in progress
        self._head_block = b""  # header lines of the response being read
        self._stopped: _Stop | None = None  # why a hook of ours stopped the parser

    # -- driver side -------------------------------------------------------------------------
    def expect(self, is_head: bool) -> None:
        """A request was sent: the next bytes are its response."""
        if self.state != IDLE:
            raise RemoteProtocolError("internal: a response is already expected",
                                      origin=self.origin, reason="busy")
        if is_head or self._is_head:  # after a HEAD the parser awaits a body that never comes
            self._parser = httptools.HttpResponseParser(self._hooks)
        self._is_head = is_head
        self._pending = b""
        self.state = HEAD
        self._interim = 0
        self._head_bytes = 0

    def feed(self, data: bytes | memoryview) -> None:
        """Parse `data`; sink callbacks run from here. Raises RemoteProtocolError."""
        state = self.state
        if state == IDLE:
            raise self._error(f"the server sent {len(data)} bytes while no response was "
                              "expected", "unsolicited data")
        if state == HEAD:  # remember where this feed's head bytes are
            self._head_bytes += len(data)
            self._data = data
            piece = data if type(data) is bytes else bytes(data[:_HEAD_COPY])
            self._source = self._pending + piece if self._pending else piece
            self._head_start = 0
        if self._is_head:
            self._feed_head_response()
        else:
            try:
                self._parser.feed_data(data)
            except httptools.HttpParserUpgrade:
                raise self._error("the server switched protocols (101) unasked",
                                  "unexpected upgrade") from None
            except httptools.HttpParserError as exc:
                self._raise_parser_error(exc)
            if self.state == HEAD:
                self._keep_unfinished_head()
        # Keep no reference to what was fed: asyncio reads into a 256 KiB buffer that it then
        # shrinks, and holding even the shrunk chunk until the next read fragments the heap so
        # that every read costs mmap/munmap/mremap calls (measured: kernel time doubled).
        self._data = self._source = b""
        if self._complete:
            self._complete = False
            self._sink.on_complete(self._keep_alive)

    def feed_eof(self) -> None:
        """The peer closed. Completes a close-delimited body; otherwise raises."""
        if self.state == BODY and self._is_until_close:
            self.state = IDLE
            self._sink.on_complete(False)
            return
        if self.state == BODY:
            raise self._error("the server closed the connection before the end of the body",
                              "incomplete body")
        if self.state == HEAD:
            raise self._error("the server closed the connection before the end of the headers"
                              if self._head_bytes else
                              "the server closed the connection without sending a response",
                              "incomplete head" if self._head_bytes else "no response")

    @property
    def response_started(self) -> bool:
        """Whether any byte of the expected response arrived."""
        return self.state == BODY or bool(self._head_bytes)

    # -- httptools callbacks (through _Hooks) -------------------------------------------------
    def _on_message_begin(self) -> None:
        if self.state == IDLE:
            raise self._halt("bytes after the end of the response")

    def _on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        head = self._take_head()
        if status < 200:
            self._interim += 1
            if self._interim > MAX_INTERIM:
                raise self._halt(f"more than {MAX_INTERIM} interim (1xx) responses")
            return
        line_end = head.find(b"\r\n")
        if line_end < 0:
            status_line, block = head, b""
        else:
            status_line, block = head[:line_end], head[line_end + 2:]
            # A header line takes at least 4 bytes ("a:" CRLF): shorter blocks need no count.
            max_headers = self._max_headers
            if len(block) >= 4 * max_headers - 2 and block.count(b"\r\n") >= max_headers:
                raise self._halt(f"more than {max_headers} header lines")
        self.state = BODY
        self.status = status
        self._head_block = block
        self._sink.on_head(status, status_line, block)
        if self._is_head or status == 204 or status == 304:
            self.state = IDLE
            self._keep_alive = self._parser.should_keep_alive()
            self._complete = True

    def _on_message_complete(self) -> None:
        if self.state != BODY:  # an interim 1xx response ended, or a 204/304 already did
            return
        self.state = IDLE
        self._keep_alive = self._parser.should_keep_alive()
        self._complete = True

    # -- the head's bytes ----------------------------------------------------------------------
    def _take_head(self) -> bytes:
        """The head llhttp just finished (status line and header lines, no final CRLF). The
        unfinished head of an earlier feed, if any, is in `_source` before this feed's bytes
        (`_keep_unfinished_head` bounds it between feeds)."""
        source, start = self._source, self._head_start
        while start < len(source) and source[start] == 13:  # llhttp skips CRLFs before a head
            start += 2
        end = source.find(b"\r\n\r\n", start)
        if end < 0 and type(self._data) is not bytes:  # a long head: copy the rest as well
            source = self._source = self._pending + bytes(self._data)
            end = source.find(b"\r\n\r\n", start)
        if end < 0:  # llhttp has seen the end of the head, so we must find it too
            raise self._halt("internal: the end of the response head was not found")
        if end - start > self._max_header_bytes:
            raise self._halt(f"response head exceeds {self._max_header_bytes} bytes")
        self._head_start = end + 4
        return source[start:end]

    def _keep_unfinished_head(self) -> None:
        """After a feed that ended inside a head: carry its bytes over to the next feed."""
        if type(self._data) is not bytes and len(self._data) > _HEAD_COPY:
            self._source = self._pending + bytes(self._data)
        self._pending = self._source[self._head_start:]
        if len(self._pending) > self._max_header_bytes:
            raise self._error(f"response head exceeds {self._max_header_bytes} bytes",
                              "headers too large")

    # -- internals ---------------------------------------------------------------------------
    def _feed_head_response(self) -> None:
        """HEAD: feed llhttp exactly the header block(s); anything after them is an error."""
        data = self._data if type(self._data) is bytes else bytes(self._data)
        buffer = self._pending + data
        position = 0
        while self.state == HEAD:
            end = buffer.find(b"\r\n\r\n", position)
            if end < 0:
                self._pending = buffer[position:]
                if len(self._pending) > self._max_header_bytes:
                    raise self._error(f"response head exceeds {self._max_header_bytes} bytes",
                                      "headers too large")
                return
            self._source, self._head_start = buffer, position
            self._data = buffer  # _take_head() searches the whole buffer
            try:
                self._parser.feed_data(buffer[position:end + 4])
            except httptools.HttpParserError as exc:
                self._raise_parser_error(exc)
            position = end + 4
        self._pending = b""
        if position < len(buffer):
            raise self._error(f"the server sent {len(buffer) - position} bytes after a response "
                              "to HEAD", "data after response")

    @property
    def _is_until_close(self) -> bool:
        for name, value in split_header_block(self._head_block):
            lowered = name.lower()
            if lowered == b"content-length":
                return False
            if lowered == b"transfer-encoding" and b"chunked" in value.lower():
                return False
        return True

    def _halt(self, reason: str) -> _Stop:
        """The exception a hook raises to stop the parser, remembered: httptools reports it
        as a callback error whose context is lost when the feed runs inside an `except`
        block (the context is then the exception being handled there)."""
        stop = self._stopped = _Stop(reason)
        return stop

    def _raise_parser_error(self, exc: Exception) -> None:
        stop, self._stopped = self._stopped, None
        if stop is None and isinstance(exc, httptools.HttpParserCallbackError):
            raise exc  # our sink failed: a bug to surface as it is, not a protocol error
        if stop is not None:
            reason = str(stop)
            if reason == "bytes after the end of the response":
                raise self._error("the server sent bytes after the end of the response",
                                  "data after response") from None
            raise self._error(reason, reason) from None
        reason = str(exc)
        if "Data after" in reason:
            raise self._error("the server sent bytes after the end of the response",
                              "data after response") from None
        raise self._error(f"invalid response: {reason}", reason) from exc

    def _error(self, message: str, reason: str) -> RemoteProtocolError:
        self.state = IDLE
        self._complete = False
        return RemoteProtocolError(f"{message} ({self.origin})", origin=self.origin,
                                   reason=reason)


def split_status_line(line: bytes) -> tuple[str, str]:
    """("HTTP/1.1", "Not Found") from b"HTTP/1.1 404 Not Found" (llhttp validated it)."""
    version, _, rest = line.partition(b" ")
    return version.decode("ascii"), rest.partition(b" ")[2].decode("latin-1")


def keep_alive_timeout(block: bytes) -> float | None:
    """The `timeout=N` of a Keep-Alive header in a header block, if the server sent one.

    Called for every response, so it is one lower-cased copy and one find (measured: a
    regular expression cost some 20,000 instructions per response, three `in` tests 7,500,
    this 2,500)."""
    lowered = block.lower()
    at = lowered.find(b"keep-alive:")  # "Connection: keep-alive" has no colon after it
    while at >= 0:
        if at == 0 or lowered[at - 2:at] == b"\r\n":  # a header line of its own
            end = lowered.find(b"\r\n", at)
            for param in lowered[at + 11:end if end >= 0 else None].split(b","):
                key, _, number = param.partition(b"=")
                if key.strip() == b"timeout":
                    try:
                        return max(0.0, float(number.strip()))
                    except ValueError:
                        return None
            return None
        at = lowered.find(b"keep-alive:", at + 1)
    return None


_METHOD_BYTES: dict[str, bytes] = {}


def encode_request_head(method: str, target: bytes, header_block: bytes,
                        extra: list[tuple[bytes, bytes]], body_length: int | None) -> bytes:
    """The request line and headers. `header_block` is the pre-encoded Host line and client
    defaults (each ending in CRLF); `extra` are this request's validated headers.
    `body_length` None means a chunked body follows; -1 means no body and no framing header."""
    method_bytes = _METHOD_BYTES.get(method)
    if method_bytes is None:
        method_bytes = _METHOD_BYTES[method] = method.encode("ascii")
    if extra:
        header_block += b"".join([name + b": " + value + b"\r\n" for name, value in extra])
    if body_length is None:
        header_block += b"Transfer-Encoding: chunked\r\n"
    elif body_length >= 0:
        header_block += b"Content-Length: %d\r\n" % body_length
    return b"%s %s HTTP/1.1\r\n%s\r\n" % (method_bytes, target, header_block)


def last_chunk(request: Request) -> bytes:
    """The end of a chunked request body: the last chunk, the trailer fields, the blank line."""
    if request.trailers is None:
        return b"0\r\n\r\n"
    fields = b"".join([name + b": " + value + b"\r\n" for name, value in trailer_pairs(request)])
    return b"0\r\n" + fields + b"\r\n"


_METHODS_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})
INLINE_BODY_MAX: Final = 16 * 1024  # smaller bodies go out in the same write as the head


class RequestEncoder:
    """Encodes requests for the HTTP/1.1 connections of one pool (origin-form targets; a
    forward proxy's absolute-form is another encoder, another connection kind).

    The Host line and the client's default headers are encoded once per origin into a block
    that every request to it reuses. A request whose `headers` were looked at as a whole (and
    so may have been edited) is encoded from that view instead, uncached. `encode` returns the
    bytes to write first (the head, and a small body with it) and a large body to write after
    them, or None; a streamed body is on `request.stream`.
    """

    __slots__ = ("_blocks", "_blocks_for", "_close_line", "_default_names", "_origin_form",
                 "_proxy_lines")

    def __init__(self, proxy_authorization: bytes | None = None, *,
                 origin_form: bool = True, close: bool = False) -> None:
        self._blocks: dict[str, bytes] = {}
        self._blocks_for: list[tuple[bytes, bytes]] | None = None
        self._default_names: set[bytes] = set()
        # A forward proxy's connections (see `forward`): absolute-form targets, and the
        # proxy's credentials on every request.
        self._origin_form = origin_form
        self._proxy_lines = (b"" if proxy_authorization is None else
                             b"Proxy-Authorization: " + proxy_authorization + b"\r\n")
        # Keep-alive off (see `PoolState.keeps_alive`): say so (RFC 9112 9.6), so that the
        # server closes first and its side, not ours, holds the TIME_WAIT; unless the request
        # sets Connection itself.
        self._close_line = b"Connection: close\r\n" if close else b""

    @classmethod
    def forward(cls, proxy_authorization: bytes | None, *, close: bool = False
                ) -> RequestEncoder:
        """An encoder for the connections to a forward proxy (http:// targets through an
        HTTP proxy): "GET http://host/path HTTP/1.1" (RFC 9112 3.2.2), with the proxy's
        `Proxy-Authorization` value when it has credentials."""
        return cls(proxy_authorization, origin_form=False, close=close)

    def _target(self, url: URL) -> bytes:
        if self._origin_form:
            return url.target
        return f"{url.origin.scheme}://{url.origin.host_header}".encode("ascii") + url.target

    def encode(self, request: Request) -> tuple[bytes, bytes | None]:
        method = request.method
        body = request.content
        if request.stream is not None:  # chunked, unless its size is known
            length: int | None = request.stream_length
        elif request.trailers is not None:
            length = None  # trailers come after a chunked body only (RFC 9112 7.1.2)
        elif body is not None:
            length = len(body)
        else:
            length = 0 if method in _METHODS_WITH_BODY else -1
        url = request.url
        edited = request._headers
        if edited is not None:
            block = b"".join([name + b": " + value + b"\r\n" for name, value in edited.raw])
            close = self._close_line if edited.get("connection") is None else b""
            head = encode_request_head(method, self._target(url),
                                       block + self._proxy_lines + close, [], length)
        else:
            extra = request.extra_headers
            head = encode_request_head(method, url.target if self._origin_form else
                                       self._target(url),
                                       self._block(url, extra, request._base_headers), extra,
                                       length)
        if request.trailers is not None and request.stream is None:  # chunked, whatever
            if body is None:                                          # the body's size
                return head + last_chunk(request), None
            framed = b"%x\r\n" % len(body) + body + b"\r\n" if body else b""
            return head + framed + last_chunk(request), None
        if body is not None and length is not None and length <= INLINE_BODY_MAX:
            return head + body, None
        return head, body

    def _block(self, url: URL, extra: list[tuple[bytes, bytes]],
               defaults: list[tuple[bytes, bytes]]) -> bytes:
        """Host line plus default headers, pre-encoded per origin, minus names `extra` sets."""
        if defaults is not self._blocks_for:  # other (or edited) defaults: start over
            self._blocks.clear()
            self._blocks_for = defaults
            self._default_names = {name.lower() for name, _ in defaults}
        if extra:
            names = {name.lower() for name, _ in extra}
            if (names & self._default_names or b"host" in names
                    or (self._close_line and b"connection" in names)):
                close = b"" if b"connection" in names else self._close_line
                return _encode_block(url, [p for p in defaults if p[0].lower() not in names],
                                     with_host=b"host" not in names) + self._proxy_lines + close
        key = url.origin.key
        block = self._blocks.get(key)
        if block is None:
            if len(self._blocks) > 4096:
                self._blocks.clear()
            block = self._blocks[key] = _encode_block(
                url, defaults, with_host=True) + self._proxy_lines + self._close_line
        return block


def _encode_block(url: URL, pairs: list[tuple[bytes, bytes]], *, with_host: bool) -> bytes:
    lines = [b"Host: " + url.origin.host_header.encode("ascii") + b"\r\n"] if with_host else []
    lines += [name + b": " + value + b"\r\n" for name, value in pairs]
    return b"".join(lines)


class Encoders:
    """The HTTP/1.1 request encoders of one pool, one per kind of connection: origin-form or
    a forward proxy's absolute-form (with its credentials), kept alive or `Connection: close`.
    Each keeps its own cache of pre-encoded heads. `default` serves direct keep-alive
    connections, the fast path."""

    __slots__ = ("_others", "default")

    def __init__(self) -> None:
        self.default = RequestEncoder()
        self._others: dict[tuple[str | None, bool], RequestEncoder] = {}

    def get(self, forward_to: str | None, proxy_authorization: bytes | None,
            close: bool) -> RequestEncoder:
        """The encoder for connections forwarding to the proxy whose key is `forward_to`
        (None: direct), closing after each response if `close`."""
        if forward_to is None and not close:
            return self.default
        encoder = self._others.get((forward_to, close))
        if encoder is None:
            encoder = self._others[(forward_to, close)] = (
                RequestEncoder(close=True) if forward_to is None
                else RequestEncoder.forward(proxy_authorization, close=close))
        return encoder
