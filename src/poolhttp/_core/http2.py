"""HTTP/2 connection state, without I/O: the `h2` library under poolhttp's policies.

This module is the only importer of `h2`, and it is imported only when a client with
`http2=True` opens a connection that speaks HTTP/2 (the `http2` extra). h2 does the framing,
HPACK and the stream state machines; what is ours:

* Routing. An `H2Session` maps stream ids to the *exchanges* the driver made for them (one per
  request: `StreamSink`), and the connection-level events to the driver's connection
  (`SessionSink`): the response head, body chunks and end of a stream go to its exchange, a
  reset fails that exchange alone, GOAWAY, SETTINGS and window updates go to the connection.
* GOAWAY (RFC 9113 section 6.8). h2's own state machine closes the whole connection when a
  GOAWAY arrives and then rejects the frames the server still sends for the streams it
  promised to complete (at or below `last_stream_id`). Ours keeps the connection open after a
  GOAWAY: no new stream is started (the driver drains the connection in the pool), the
  streams at or below `last_stream_id` complete, and those above fail with a `StreamReset`
  whose `processed` is False, so the client resends them safely on another connection.
* Flow control. We announce a per-stream receive window of `STREAM_WINDOW` and a connection
  window of `CONNECTION_WINDOW`. Received data is handed back to the server (`ack`) when it
  is consumed: at once for a response read whole, as the reader takes it for a streamed one,
  so a slow reader holds back its own stream (at most `STREAM_WINDOW` buffered) and never
  the connection: the connection window exceeds what all streams can hold together. On the
  sending side `send_data` takes no more than the server's windows allow, in frames of its
  maximum size; the driver waits for `on_window` to send the rest.
* Request headers: names lower-case, pseudo-headers first, the connection-specific headers
  of HTTP/1.1 (Connection, Keep-Alive, Proxy-Connection, Transfer-Encoding, Upgrade) never
  sent, Host turned into `:authority`, TE only as "trailers" (RFC 9113 section 8.2.2).
* HPACK, where the profile put most of the time (pure-Python Huffman decoding, a dynamic
  table search per field). Requests are encoded by `_StaticEncoder`: static-table indexes
  and literals without indexing, each field's bytes cached, no Huffman: a few more bytes
  per request, much less work, and no dynamic table for the server to keep. Responses are
  decoded by hpack, except that a header block which neither uses nor changes the dynamic
  table decodes to the same fields every time, so `_CachingDecoder` remembers it. nginx
  sends such blocks: it sets its table size to 0 (so "incremental indexing" adds nothing)
  and sends the same bytes for every response of a second.
"""

from __future__ import annotations

from typing import Any, Final, Protocol

from h2 import events
from h2.config import H2Configuration
from h2.connection import (
    ConnectionInputs,
    ConnectionState,
    H2Connection,
    H2ConnectionStateMachine,
)
from h2.errors import ErrorCodes
from h2.exceptions import FlowControlError, H2Error, StreamClosedError, TooManyStreamsError
from h2.frame_buffer import FrameBuffer
from h2.settings import SettingCodes, Settings
from hpack import Decoder
from hpack.table import HeaderTable
from hyperframe.frame import DataFrame, Frame, HeadersFrame

from .._exceptions import RemoteProtocolError, StreamReset, h2_error_name
from .._headers import trailer_pairs
from .._models import Request

__all__ = ["CONNECTION_WINDOW", "STREAM_WINDOW", "H2Encoder", "H2Session", "SessionSink",
           "StreamSink"]

STREAM_WINDOW: Final = 1 << 20  # 1 MiB per stream: full speed on fast links, bounded memory
CONNECTION_WINDOW: Final = 1 << 30  # more than max_concurrent_streams streams can hold
MAX_HEADER_LIST: Final = 64 * 1024  # as for HTTP/1.1: a response head of at most 64 KiB
CANCEL: Final = int(ErrorCodes.CANCEL)
REFUSED_STREAM: Final = int(ErrorCodes.REFUSED_STREAM)
STATUS_LINES: dict[int, bytes] = {}  # b"HTTP/2 200 " per status, made once


class StreamSink(Protocol):
    """One request's exchange, as the session sees it (the drivers implement it)."""

    def on_head(self, status: int, status_line: bytes, block: bytes) -> None: ...
    def on_data(self, data: bytes, flow: int) -> None: ...
    def on_end(self, trailers: bytes) -> None: ...
    def on_reset(self, error: StreamReset | RemoteProtocolError) -> None: ...


class SessionSink(Protocol):
    """The connection, as the session sees it (the drivers implement it)."""

    def on_goaway(self, last_stream_id: int, error_code: int) -> None: ...
    def on_capacity(self, streams: int) -> None: ...
    def on_window(self) -> None: ...


class _GoawayTolerant(H2ConnectionStateMachine):
    """h2's connection state machine, except that a received GOAWAY leaves it open, so the
    streams the server still completes are read (see the module docstring)."""

    _transitions = {
        **H2ConnectionStateMachine._transitions,
        (ConnectionState.CLIENT_OPEN, ConnectionInputs.RECV_GOAWAY):
            (None, ConnectionState.CLIENT_OPEN),
    }


class _Connection(H2Connection):
    """h2's connection, counting its open streams from our stream map: h2's own count walks
    every stream it knows for each new one (O(streams in flight) per request)."""

    streams_open: dict[int, Any] = {}

    @property
    def open_outbound_streams(self) -> int:
        return len(self.streams_open)


class _QuietData(DataFrame):
    """A received DATA frame whose repr does not hex-dump its payload. h2 formats every
    frame it receives for its trace log, whether or not anything logs: `repr()` of a DATA
    frame was a quarter of a download's time (hexlify of each 8-16 KiB payload)."""

    def __repr__(self) -> str:
        return f"DataFrame(stream_id={self.stream_id}, {len(self.data)} bytes)"


class _QuietHeaders(HeadersFrame):
    """A received HEADERS frame with a repr as cheap (see _QuietData)."""

    def __repr__(self) -> str:
        return f"HeadersFrame(stream_id={self.stream_id}, {len(self.data)} bytes)"


_QUIET: dict[type, type] = {DataFrame: _QuietData, HeadersFrame: _QuietHeaders}


class _Frames(FrameBuffer):
    """h2's buffer of received frames, handing out DATA and HEADERS frames as their quiet
    subclasses (the connection's dispatch table maps those to the same handlers)."""

    def __next__(self) -> Frame:
        frame = super().__next__()
        quiet = _QUIET.get(type(frame))
        if quiet is not None:
            frame.__class__ = quiet
        return frame


_STATIC: dict[tuple[bytes, bytes], int] = {}
_STATIC_NAMES: dict[bytes, int] = {}
for _index, (_name, _value) in enumerate(HeaderTable.STATIC_TABLE, 1):
    _STATIC.setdefault((_name, _value), _index)
    _STATIC_NAMES.setdefault(_name, _index)
_SENSITIVE = frozenset({b"authorization", b"proxy-authorization", b"cookie"})


def _integer(value: int, prefix_bits: int, flags: int) -> bytes:
    """An HPACK integer (RFC 7541 section 5.1) with `flags` in the first byte's high bits."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((flags | value,))
    out = bytearray((flags | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 127) | 128)
        value >>= 7
    out.append(value)
    return bytes(out)


def _string(data: bytes) -> bytes:
    return _integer(len(data), 7, 0) + data  # no Huffman coding


def _field(name: bytes, value: bytes) -> bytes:
    """One header field: indexed if the static table has it whole, else a literal never
    added to the dynamic table (never-indexed for credentials, RFC 7541 section 7.1.3)."""
    index = _STATIC.get((name, value))
    if index is not None:
        return _integer(index, 7, 0x80)
    flags = 0x10 if name in _SENSITIVE else 0x00
    index = _STATIC_NAMES.get(name, 0)
    if index:
        return _integer(index, 4, flags) + _string(value)
    return bytes((flags,)) + _string(name) + _string(value)


class _StaticEncoder:
    """What h2 needs of an HPACK encoder, without a dynamic table (see the module
    docstring); fields other than :path are cached."""

    __slots__ = ("_cache", "header_table_size")

    def __init__(self) -> None:
        self._cache: dict[tuple[bytes, bytes], bytes] = {}
        self.header_table_size = 4096  # h2 sets the peer's; we never add entries

    def encode(self, headers: Any, huffman: bool = True) -> bytes:
        cache = self._cache
        parts = []
        for name, value in headers:
            if name == b":path":
                parts.append(_field(name, value))
                continue
            pair = (name, value)
            encoded = cache.get(pair)
            if encoded is None:
                if len(cache) >= 1024:
                    cache.clear()
                encoded = cache[pair] = _field(name, value)
            parts.append(encoded)
        return b"".join(parts)


class _CachingDecoder(Decoder):
    """hpack's decoder, remembering header blocks that neither use nor change the dynamic
    table: they decode to the same fields whatever came before. Two kinds are remembered
    apart: those that are so at any table size, and those that are so while the table's
    size is 0 (their "incremental indexing" adds nothing)."""

    def __init__(self) -> None:
        super().__init__()
        self._known: tuple[dict[bytes, Any], dict[bytes, Any]] = ({}, {})

    def decode(self, data: Any, raw: bool = False) -> Any:
        key = bytes(data)
        zero = self.header_table.maxsize == 0
        known = self._known[zero]
        headers = known.get(key)
        if headers is not None:
            return headers
        headers = super().decode(key, raw)
        if zero and self.header_table.maxsize == 0 and _static_only(key, True):
            known = self._known[True]
        elif not _static_only(key, False):
            return headers
        if len(known) >= 256:
            known.clear()
        known[key] = headers
        return headers


def _static_only(block: bytes, zero_table: bool) -> bool:
    """Whether an HPACK block refers to the static table only and adds nothing to the
    dynamic one (RFC 7541 section 6), so that its meaning does not depend on the state;
    with `zero_table`, given a table of size 0 (additions to it are no-ops)."""
    at = 0
    end = len(block)
    try:
        while at < end:
            first = block[at]
            if first & 0x80:  # indexed field
                index, at = _read_integer(block, at, 7)
            elif first & 0x40:  # literal added to the table
                if not zero_table:
                    return False
                index, at = _read_integer(block, at, 6)
                at = _skip_string(block, at) if index == 0 else at
                at = _skip_string(block, at)
            elif first & 0x20:  # table size update
                size, at = _read_integer(block, at, 5)
                if size or not zero_table:
                    return False
                continue
            else:  # literal, not (or never) indexed
                index, at = _read_integer(block, at, 4)
                at = _skip_string(block, at) if index == 0 else at
                at = _skip_string(block, at)
            if index > 61:
                return False
    except IndexError:
        return False
    return True


def _read_integer(block: bytes, at: int, prefix_bits: int) -> tuple[int, int]:
    limit = (1 << prefix_bits) - 1
    value = block[at] & limit
    at += 1
    if value < limit:
        return value, at
    shift = 0
    while True:
        byte = block[at]
        at += 1
        value += (byte & 127) << shift
        shift += 7
        if not byte & 128:
            return value, at


def _skip_string(block: bytes, at: int) -> int:
    length, at = _read_integer(block, at, 7)
    if at + length > len(block):
        raise IndexError("string past the end of the block")
    return at + length


# h2's per-field validation of what we send is skipped (H2Encoder builds it right), and of
# what we receive too: it cost an eighth of a small request's time, and the checks that
# matter to a client are ours (`_on_response`: a status, no line breaks in a field).
_CONFIG = H2Configuration(client_side=True, header_encoding=None,
                          validate_outbound_headers=False, normalize_outbound_headers=False,
                          validate_inbound_headers=False, normalize_inbound_headers=False)


class H2Session:
    """The protocol state of one HTTP/2 connection. The driver feeds it the bytes it reads
    (`feed`), writes what `output()` returns after each call, and keeps one exchange per
    stream in `streams`."""

    __slots__ = ("_acks", "_h2", "_outgoing", "_trailers", "goaway", "origin", "sink",
                 "streams")

    def __init__(self, sink: SessionSink, origin: str) -> None:
        self.sink = sink
        self.origin = origin
        self.streams: dict[int, StreamSink] = {}
        self.goaway: int | None = None  # the last_stream_id of a GOAWAY received
        self._trailers: dict[int, bytes] = {}
        self._outgoing: dict[int, Request] = {}  # requests with trailers to send at their end
        # While `feed` runs: bytes consumed per stream, handed back once at its end (one
        # window update per stream and read, not per DATA frame).
        self._acks: dict[int, int] | None = None
        h2 = self._h2 = _Connection(_CONFIG)
        h2.streams_open = self.streams
        h2.incoming_buffer = _Frames(server=False)
        dispatch = h2._frame_dispatch_table
        for plain, quiet in _QUIET.items():
            dispatch[quiet] = dispatch[plain]
        h2.state_machine = _GoawayTolerant()
        h2.encoder = _StaticEncoder()  # type: ignore[assignment]  # what h2 uses of one
        decoder = _CachingDecoder()
        decoder.max_header_list_size = h2.decoder.max_header_list_size
        decoder.max_allowed_table_size = h2.decoder.max_allowed_table_size
        h2.decoder = decoder
        # As initial values, not `update()`: updated settings are sent only in a later
        # SETTINGS frame and apply once acknowledged, while the first one carries these.
        h2.local_settings = Settings(client=True, initial_values={
            SettingCodes.ENABLE_PUSH: 0,
            SettingCodes.MAX_CONCURRENT_STREAMS: 100,  # for pushed streams: none, push is off
            SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
            SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST,
        })
        h2.initiate_connection()
        h2.increment_flow_control_window(CONNECTION_WINDOW - 65535)

    # -- state ---------------------------------------------------------------------------
    @property
    def max_streams(self) -> int:
        """The server's SETTINGS_MAX_CONCURRENT_STREAMS (2**31 - 1 if it set none)."""
        value: int = self._h2.remote_settings.max_concurrent_streams
        return value

    def output(self) -> bytes:
        """The bytes to write now (may be empty)."""
        data: bytes = self._h2.data_to_send()
        return data

    # -- sending ---------------------------------------------------------------------------
    def start(self, headers: list[tuple[bytes, bytes]], sink: StreamSink,
              end_stream: bool, request: Request | None = None) -> int:
        """Open a stream for a request with `headers` (see H2Encoder); returns its id.
        StreamReset (not processed) if the server's stream limit leaves no room for it.
        A `request` with trailers gets them as a last HEADERS frame, which then carries the
        END_STREAM instead of the headers or the last DATA frame (RFC 9113 8.1)."""
        h2 = self._h2
        stream_id: int = h2.get_next_available_stream_id()
        trailing = request is not None and request.trailers is not None
        try:
            h2.send_headers(stream_id, headers, end_stream=end_stream and not trailing)
        except TooManyStreamsError:
            # The server lowered SETTINGS_MAX_CONCURRENT_STREAMS after the pool gave this
            # request its slot: h2 sent nothing, so the request is resent (processed False)
            # once the pool knows the new limit.
            raise StreamReset(
                f"{self.origin} lowered its limit of concurrent HTTP/2 streams to "
                f"{self.max_streams} before this request went out", origin=self.origin,
                error_code=REFUSED_STREAM, processed=False) from None
        self.streams[stream_id] = sink
        if trailing:
            assert request is not None
            self._outgoing[stream_id] = request
            if end_stream:
                self._send_trailers(stream_id)
        return stream_id

    def _send_trailers(self, stream_id: int) -> None:
        request = self._outgoing.pop(stream_id)
        pairs = [(name.lower(), value) for name, value in trailer_pairs(request)]
        self._h2.send_headers(stream_id, pairs, end_stream=True)

    def send_window(self, stream_id: int) -> int:
        """How many body bytes the server's windows take now on `stream_id`."""
        try:
            window: int = self._h2.local_flow_control_window(stream_id)
        except StreamClosedError:
            return 0
        return window

    def send_data(self, stream_id: int, data: bytes | memoryview, end_stream: bool) -> int:
        """Send as much of `data` as the windows allow; returns how many bytes were taken.
        END_STREAM goes with the last of it if `end_stream` and all of it was taken."""
        h2 = self._h2
        view = memoryview(data)
        window = self.send_window(stream_id)
        frame = h2.max_outbound_frame_size
        sent = 0
        total = len(view)
        trailing = end_stream and stream_id in self._outgoing
        while sent < total and window > 0:
            size = min(total - sent, window, frame)
            last = end_stream and sent + size == total
            try:
                h2.send_data(stream_id, view[sent:sent + size].tobytes(),
                             end_stream=last and not trailing)
            except FlowControlError:
                break
            sent += size
            window -= size
        if end_stream and sent == total:
            if trailing:
                self._send_trailers(stream_id)
            elif total == 0:
                h2.end_stream(stream_id)
        return sent

    def reset(self, stream_id: int, code: int = CANCEL) -> None:
        """Abandon a stream (RST_STREAM): a cancelled or timed-out request."""
        self.streams.pop(stream_id, None)
        self._trailers.pop(stream_id, None)
        self._outgoing.pop(stream_id, None)
        try:
            self._h2.reset_stream(stream_id, code)
        except H2Error:  # StreamClosedError among them
            pass  # it ended meanwhile: nothing to reset

    def ack(self, stream_id: int, size: int) -> None:
        """`size` flow-controlled bytes of `stream_id` were consumed: hand them back."""
        acks = self._acks
        if acks is not None:
            acks[stream_id] = acks.get(stream_id, 0) + size
        elif size:
            try:
                self._h2.acknowledge_received_data(size, stream_id)
            except H2Error:  # StreamClosedError among them
                pass

    def ping(self, opaque: bytes) -> None:
        self._h2.ping(opaque)

    # -- receiving -----------------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        """Bytes from the server. Raises RemoteProtocolError on a connection-level error
        (the connection is finished: every exchange on it must fail)."""
        try:
            received = self._h2.receive_data(data)
        except H2Error as exc:
            raise RemoteProtocolError(
                f"{self.origin} broke the HTTP/2 protocol: {exc}", origin=self.origin,
                reason="http2 protocol error") from exc
        acks = self._acks = {}
        try:
            for event in received:
                handler = _HANDLERS.get(type(event))
                if handler is not None:
                    handler(self, event)
        finally:
            self._acks = None
        for stream_id, size in acks.items():
            self.ack(stream_id, size)

    def _on_response(self, event: Any) -> None:
        sink = self.streams.get(event.stream_id)
        if sink is None:
            return
        status = 0
        lines = []
        for name, value in event.headers:
            if name[0] == 58:  # b":"
                if name == b":status" and value.isdigit() and len(value) == 3:
                    status = int(value)
            else:
                lines.append(name + b": " + value)
        if not status:
            raise RemoteProtocolError(f"{self.origin} sent an HTTP/2 response without a valid "
                                      ":status", origin=self.origin, reason="no :status")
        status_line = STATUS_LINES.get(status)
        if status_line is None:
            status_line = STATUS_LINES[status] = b"HTTP/2 %d " % status
        sink.on_head(status, status_line, self._block(lines))

    def _block(self, lines: list[bytes]) -> bytes:
        """Header lines as the CRLF-separated block `Headers` splits lazily; a field that
        would break a line (CR or LF inside, which HPACK can carry) is a protocol error."""
        block = b"\r\n".join(lines)
        if block.count(b"\n") + 1 != len(lines) and lines:
            raise RemoteProtocolError(f"{self.origin} sent an HTTP/2 header field with a line "
                                      "break in it", origin=self.origin,
                                      reason="line break in a header field")
        return block

    def _on_data(self, event: Any) -> None:
        sink = self.streams.get(event.stream_id)
        if sink is None:  # reset by us meanwhile: hand the window back at once
            self.ack(event.stream_id, event.flow_controlled_length)
            return
        sink.on_data(event.data, event.flow_controlled_length)

    def _on_trailers(self, event: Any) -> None:
        if event.stream_id in self.streams:
            self._trailers[event.stream_id] = self._block(
                [name + b": " + value for name, value in event.headers])

    def _on_ended(self, event: Any) -> None:
        sink = self.streams.pop(event.stream_id, None)
        trailers = self._trailers.pop(event.stream_id, b"") if self._trailers else b""
        if self._outgoing:  # answered before the body ended: no trailers to send any more
            self._outgoing.pop(event.stream_id, None)
        if sink is not None:
            sink.on_end(trailers)

    def _on_reset(self, event: Any) -> None:
        stream_id = event.stream_id
        sink = self.streams.pop(stream_id, None)
        self._trailers.pop(stream_id, None)
        self._outgoing.pop(stream_id, None)
        if sink is None:
            return
        code = int(event.error_code)
        name = h2_error_name(code)
        refused = code == REFUSED_STREAM
        sink.on_reset(StreamReset(
            f"{self.origin} reset the HTTP/2 stream of this request ({name}"
            + (": refused before any processing" if refused else "") + ")",
            origin=self.origin, error_code=code, stream_id=stream_id, processed=not refused))

    def _on_goaway(self, event: Any) -> None:
        last = int(event.last_stream_id)
        self.goaway = last if self.goaway is None else min(self.goaway, last)
        code = int(event.error_code)
        refused = [s for s in self.streams if s > last]
        self.sink.on_goaway(last, code)  # first: no new stream may start on it
        # Streams above last_stream_id were not processed: they fail, to be resent. Unless
        # the GOAWAY carries an error: then it reports a connection error (the server holds
        # the connection broken, RFC 9113 section 5.4.1), and resending would only repeat
        # whatever caused it, taking down the other requests sharing the new connection
        # (a request that triggers the error would be resent, and fail, until the resend
        # limit, on a new connection each time). Those fail as the connection's error.
        for stream_id in refused:
            sink = self.streams.pop(stream_id, None)
            self._trailers.pop(stream_id, None)
            self._outgoing.pop(stream_id, None)
            if sink is None:
                continue
            if code:
                sink.on_reset(RemoteProtocolError(
                    f"{self.origin} ended the HTTP/2 connection with GOAWAY "
                    f"({h2_error_name(code)}) before processing this request's stream "
                    f"({stream_id} > last stream {last})", origin=self.origin,
                    reason=f"GOAWAY {h2_error_name(code)}"))
                continue
            sink.on_reset(StreamReset(
                f"{self.origin} said GOAWAY ({h2_error_name(code)}) before processing this "
                f"request's stream ({stream_id} > last stream {last})",
                origin=self.origin, error_code=code, stream_id=stream_id,
                processed=False))

    def _on_settings(self, event: Any) -> None:
        changed = event.changed_settings
        if SettingCodes.MAX_CONCURRENT_STREAMS in changed:
            self.sink.on_capacity(max(1, self.max_streams))
        if SettingCodes.INITIAL_WINDOW_SIZE in changed:
            self.sink.on_window()

    def _on_window(self, event: Any) -> None:
        self.sink.on_window()


_HANDLERS: dict[type, Any] = {
    events.ResponseReceived: H2Session._on_response,
    events.DataReceived: H2Session._on_data,
    events.TrailersReceived: H2Session._on_trailers,
    events.StreamEnded: H2Session._on_ended,
    events.StreamReset: H2Session._on_reset,
    events.ConnectionTerminated: H2Session._on_goaway,
    events.RemoteSettingsChanged: H2Session._on_settings,
    events.WindowUpdated: H2Session._on_window,
}

# Hop-by-hop headers of HTTP/1.1 that HTTP/2 forbids (RFC 9113 section 8.2.2).
_CONNECTION_SPECIFIC = frozenset({b"connection", b"keep-alive", b"proxy-connection",
                                  b"transfer-encoding", b"upgrade"})
_METHODS_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})


class H2Encoder:
    """Request headers for HTTP/2 streams: the client's defaults lower-cased once (per
    defaults list), each request's own headers and the pseudo-headers added per request."""

    __slots__ = ("_defaults", "_defaults_for", "_methods")

    def __init__(self) -> None:
        self._defaults: list[tuple[bytes, bytes]] = []
        self._defaults_for: list[tuple[bytes, bytes]] | None = None
        self._methods: dict[str, bytes] = {}

    def headers(self, request: Request) -> list[tuple[bytes, bytes]]:
        method = request.method
        method_bytes = self._methods.get(method)
        if method_bytes is None:
            method_bytes = self._methods[method] = method.encode("ascii")
        url = request.url
        origin = url.origin
        authority = origin.host_header.encode("ascii")
        edited = request._headers
        if edited is not None:
            pairs = _lowered(edited.raw)
        else:
            defaults = request._base_headers
            if defaults is not self._defaults_for:
                self._defaults = _lowered(defaults)
                self._defaults_for = defaults
            extra = request.extra_headers
            if extra:
                own = _lowered(extra)
                names = {name for name, _ in own}
                pairs = [p for p in self._defaults if p[0] not in names] + own
            else:
                pairs = self._defaults
        headers = [(b":method", method_bytes),
                   (b":scheme", b"https" if origin.is_tls else b"http"),
                   (b":authority", authority), (b":path", url.target)]
        for pair in pairs:
            name = pair[0]
            if name in _CONNECTION_SPECIFIC:
                continue
            if name == b"host":
                headers[2] = (b":authority", pair[1])
                continue
            if name == b"te" and pair[1].lower() != b"trailers":
                continue
            headers.append(pair)
        body = request.content
        if body is not None:
            headers.append((b"content-length", b"%d" % len(body)))
        elif request.stream is not None:
            if request.stream_length is not None:
                headers.append((b"content-length", b"%d" % request.stream_length))
        elif method in _METHODS_WITH_BODY:
            headers.append((b"content-length", b"0"))
        return headers


def _lowered(pairs: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return [(name.lower(), value) for name, value in pairs
            if name.lower() != b"content-length"]
