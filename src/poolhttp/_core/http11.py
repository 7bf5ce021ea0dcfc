"""HTTP/1.1 on one connection, without I/O: request bytes out, response events in.

Theory of operation
-------------------
`ResponseReader` wraps one llhttp parser (through httptools) per connection. The driver calls
`expect(is_head)` before each request, then `feed(data)` with whatever the socket produced and
`feed_eof()` when the peer closes. The reader calls its sink:

    sink.on_head(status, reason, headers)   once per final response (1xx interim ones skipped)
    sink.on_body(chunk)                      zero or more times
    sink.on_complete(keep_alive)             once, after `feed` returns, when the body ended

States: IDLE (no response expected) -> HEAD (reading status line and headers) -> BODY -> IDLE.
Rules it owns, beyond what llhttp checks (chunk syntax, Content-Length with Transfer-Encoding,
duplicate Content-Length, header grammar):
- A response to HEAD, and any 204 or 304, has no body whatever its headers say. llhttp has no
  HEAD switch, so for HEAD we feed it exactly the header block and stop.
- 1xx responses are skipped; more than `MAX_INTERIM` in a row is an error.
- A body with neither Content-Length nor chunked framing runs until the peer closes.
- Bytes that arrive while no response is expected, or after a complete response in the same
  read, are a protocol error: the connection is out of step and must not be reused.
- The status line and headers may take at most `max_header_bytes` and `max_headers` lines.
- `on_complete` is called only once `feed` has seen every byte it was given, so a response is
  never handed over before we know the connection stayed in step.
"""

from __future__ import annotations

from typing import Final, Protocol

import httptools

from .._exceptions import RemoteProtocolError

__all__ = ["ResponseReader", "ResponseSink", "encode_request_head", "keep_alive_timeout"]

IDLE: Final = 0
HEAD: Final = 1
BODY: Final = 2

MAX_INTERIM: Final = 32
DEFAULT_MAX_HEADER_BYTES: Final = 64 * 1024
DEFAULT_MAX_HEADERS: Final = 100


class ResponseSink(Protocol):
    def on_head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        ...

    def on_body(self, chunk: bytes) -> None: ...

    def on_complete(self, keep_alive: bool) -> None: ...


class _Stop(Exception):
    """Raised inside a parser callback to abandon the rest of a feed."""


class ResponseReader:
    """Parses the responses of one connection; see the module docstring."""

    __slots__ = (
        "_complete",
        "_head_buffer",
        "_head_bytes",
        "_header_size",
        "_headers",
        "_interim",
        "_is_head",
        "_keep_alive",
        "_max_header_bytes",
        "_max_headers",
        "_parser",
        "_reason",
        "_sink",
        "_status",
        "origin",
        "state",
    )

    def __init__(self, sink: ResponseSink, origin: str, *,
                 max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
                 max_headers: int = DEFAULT_MAX_HEADERS) -> None:
        self._sink = sink
        self.origin = origin
        self._max_header_bytes = max_header_bytes
        self._max_headers = max_headers
        self._parser = httptools.HttpResponseParser(self)
        self.state = IDLE
        self._is_head = False
        self._head_buffer = b""
        self._complete = False
        self._keep_alive = False
        self._interim = 0
        self._head_bytes = 0
        self._header_size = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._reason = b""
        self._status = 0

    # -- driver side -------------------------------------------------------------------------
    def expect(self, is_head: bool) -> None:
        """A request was sent: the next bytes are its response."""
        if self.state != IDLE:
            raise RemoteProtocolError("internal: a response is already expected",
                                      origin=self.origin, reason="busy")
        if is_head or self._is_head:  # after a HEAD the parser awaits a body that never comes
            self._parser = httptools.HttpResponseParser(self)
        self._is_head = is_head
        self._head_buffer = b""
        self.state = HEAD
        self._interim = 0
        self._head_bytes = 0

    def feed(self, data: bytes | memoryview) -> None:
        """Parse `data`; sink callbacks run from here. Raises RemoteProtocolError."""
        state = self.state
        if state == IDLE:
            raise self._error(f"the server sent {len(data)} bytes while no response was "
                              "expected", "unsolicited data")
        if self._is_head:
            self._feed_head_response(bytes(data))
        else:
            if state == HEAD:
                self._head_bytes += len(data)
            try:
                self._parser.feed_data(data)
            except httptools.HttpParserUpgrade:
                raise self._error("the server switched protocols (101) unasked",
                                  "unexpected upgrade") from None
            except httptools.HttpParserError as exc:
                self._raise_parser_error(exc)
            if self.state == HEAD and self._head_bytes > self._max_header_bytes:
                raise self._error(f"response head exceeds {self._max_header_bytes} bytes",
                                  "headers too large")
        if self._complete:
            self._complete = False
            self._sink.on_complete(self._keep_alive)

    def feed_eof(self) -> None:
        """The peer closed. Completes a close-delimited body; otherwise raises."""
        if self.state == BODY and self._is_until_close():
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
    def http_version(self) -> str:
        """"1.1" or "1.0", from the status line of the last response."""
        return str(self._parser.get_http_version())

    @property
    def response_started(self) -> bool:
        """Whether any byte of the expected response arrived."""
        return self.state == BODY or bool(self._head_bytes) or bool(self._head_buffer)

    # -- httptools callbacks -----------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self.state == IDLE:
            raise _Stop("bytes after the end of the response")
        self._headers = []
        self._reason = b""
        self._header_size = 0

    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        headers = self._headers
        headers.append((name, value))
        if len(headers) > self._max_headers:
            raise _Stop(f"more than {self._max_headers} header lines")
        # Bytes still buffered are bounded in feed(); this catches a head that arrived whole.
        self._header_size += len(name) + len(value) + 4
        if self._header_size > self._max_header_bytes:
            raise _Stop(f"response head exceeds {self._max_header_bytes} bytes")

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:
            self._interim += 1
            if self._interim > MAX_INTERIM:
                raise _Stop(f"more than {MAX_INTERIM} interim (1xx) responses")
            return
        self.state = BODY
        self._status = status
        self._sink.on_head(status, self._reason, self._headers)
        if self._is_head or status == 204 or status == 304:
            self.state = IDLE
            self._keep_alive = self._parser.should_keep_alive()
            self._complete = True

    def on_body(self, body: bytes) -> None:
        self._sink.on_body(body)

    def on_message_complete(self) -> None:
        if self.state != BODY:  # an interim 1xx response ended, or a 204/304 already did
            return
        self.state = IDLE
        self._keep_alive = self._parser.should_keep_alive()
        self._complete = True

    # -- internals ---------------------------------------------------------------------------
    def _feed_head_response(self, data: bytes) -> None:
        """HEAD: feed llhttp exactly the header block(s); anything after them is an error."""
        buffer = self._head_buffer + data
        while self.state == HEAD:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self._head_buffer = buffer
                if len(buffer) > self._max_header_bytes:
                    raise self._error(f"response head exceeds {self._max_header_bytes} bytes",
                                      "headers too large")
                return
            block, buffer = buffer[:end + 4], buffer[end + 4:]
            try:
                self._parser.feed_data(block)
            except httptools.HttpParserError as exc:
                self._raise_parser_error(exc)
            if self.state == HEAD:  # a 1xx: its message is over, the final one follows
                continue
        self._head_buffer = b""
        if buffer:
            raise self._error(f"the server sent {len(buffer)} bytes after a response to HEAD",
                              "data after response")

    def _is_until_close(self) -> bool:
        for name, value in self._headers:
            lowered = name.lower()
            if lowered == b"content-length":
                return False
            if lowered == b"transfer-encoding" and b"chunked" in value.lower():
                return False
        return True

    def _raise_parser_error(self, exc: Exception) -> None:
        stop = exc.__context__
        if stop is not None and not isinstance(stop, _Stop):
            raise stop  # our sink failed: a bug to surface as it is, not a protocol error
        if isinstance(stop, _Stop):
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


def keep_alive_timeout(headers: list[tuple[bytes, bytes]]) -> float | None:
    """The `timeout=N` of a Keep-Alive response header, if the server sent one."""
    for name, value in headers:
        if len(name) == 10 and name.lower() == b"keep-alive":
            for param in value.split(b","):
                key, _, number = param.partition(b"=")
                if key.strip().lower() == b"timeout":
                    try:
                        return max(0.0, float(number.strip()))
                    except ValueError:
                        return None
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
