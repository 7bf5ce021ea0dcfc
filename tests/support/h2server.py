"""An in-process, scripted HTTP/2 server, for the HTTP/2 client tests that need exact frames.

nginx and hypercorn are real, well-behaved HTTP/2 servers; this one is for everything they
will not do on request: a GOAWAY while lower streams are still in flight, RST_STREAM with a
chosen code, flow-control windows held shut, a SETTINGS change mid-connection, garbage on the
wire, a peer that goes silent. It is built on the `h2` library in server mode, one asyncio
loop in one daemon thread serving every connection and every stream; a stream waiting on a
timer or on a flow-control window never holds up the others.

    with H2Server(max_concurrent_streams=10) as server:
        ... client.get(server.url("/echo?x=1")) ...
        server.wait_for(lambda s: s.open_connections == 0)
        assert server.protocol_errors == []

Without `tls` the server speaks h2c with prior knowledge (the client sends the connection
preface at once); with `tls=True` it speaks TLS whose ALPN offers only "h2", with a
certificate from `certs.make_certs` (trust `server.ca_path`).

Every response carries `x-conn: <n>` (the connection's 1-based number, in the order the
connections were established) and `x-stream: <stream id>`. Routes (the query string is
ignored for routing):

    /echo                     200 JSON {"conn", "stream", "method", "path" (with query),
                              "headers" ([name, value] as received, pseudo-headers
                              included), "body_length", "body_sha256", "trailers"}; HEAD
                              gets the same headers (content-length included), no body
    /bytes/N                  200, N bytes, byte i = i % 251, sent as the client's
                              flow-control windows allow
    /delay/MS                 /echo, answered MS milliseconds after the request ended
    /status/N                 status N (200..599), body "status N"; 204 and 304 without body
    /interim                  103 (link: </x>; rel=preload), then 200 "final"
    /trailers                 200 "body", then trailers x-checksum: abc (END_STREAM on them)
    /reset/CODE               RST_STREAM(CODE) as soon as the request headers arrive
    /reset-after-headers/CODE 200 headers (no content-length), 1000 body bytes, RST_STREAM
    /goaway/MS                GOAWAY(last_stream_id = highest stream id received so far,
                              NO_ERROR) at once; every stream up to last_stream_id (this
                              one included, as /echo) is answered, none before MS ms after
                              the GOAWAY; streams above it are ignored; the connection is
                              closed when the last allowed stream is done. With `once` in
                              the query, a request resent with the same path and query
                              (refused by another GOAWAY) is answered as /echo and says no
                              GOAWAY again, so GOAWAYs do not chain across connections
    /goaway-error             GOAWAY(0, PROTOCOL_ERROR), then the connection is closed
    /settings/N               SETTINGS MAX_CONCURRENT_STREAMS=N now, then /echo
    /window-late/MS           uploads: the stream's receive window is not reopened (no
                              WINDOW_UPDATE for received DATA) until MS ms after the
                              headers; then stream and connection windows are opened wide
                              enough for the rest of the body (content-length, or 16 MiB
                              without one) and the request is answered as /echo once the
                              body is complete. Use with a small initial window:
                              `H2Server(initial_window_size=0)` + POST `/window-late/200`.
    /malformed                raw bytes no HTTP/2 peer may send (a DATA frame header on
                              stream 0); after that the connection is mute
    /mute                     nothing more is sent on this connection (no responses, no
                              PING or SETTINGS acks); the server keeps reading
    /mute-all                 the same for every connection of the server, current and new
    /ping                     the server PINGs the client (`ping_acks_received` counts the
                              answers), then answers as /echo
    /close-idle               /echo, then 50 ms later the connection is closed (FIN, no
                              GOAWAY), as a server dropping an idle connection does
    anything else             404 "not found"

Every route but /reset, /reset-after-headers, /goaway-error, /malformed and /mute(-all)
answers once the request is complete (END_STREAM received). Received DATA is acknowledged
as it arrives (h2's `acknowledge_received_data`: WINDOW_UPDATE once half a window is used),
so large uploads flow, except on /window-late. With `initial_window_size=0`, the other
routes open a stream's window (65535) when its request headers arrive, so only /window-late
uploads are held.

What the client does is counted (thread-safe): `accepted`, `open_connections`,
`max_concurrent_streams_seen`, `requests`, `resets_received`, `pings_received`,
`ping_acks_received`, `goaways_received`, and `protocol_errors`: everything h2 raised on a
client's bytes, which a well-behaved client never causes. A client GOAWAY with NO_ERROR lets
the streams already open complete (h2 alone would refuse to send anything more); the server
then closes the connection once they are done. The server closes a connection (after a
GOAWAY, or when h2 raised) with FIN, then reads until the client closes (2 s at most), so
the client reads the last frames instead of a reset. """

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import re
import shutil
import ssl
import tempfile
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import h2.exceptions
from h2.connection import ConnectionState
from h2.errors import ErrorCodes
from h2.settings import SettingCodes, Settings
from hyperframe.frame import GoAwayFrame

from .certs import CertBundle, make_certs
from .scripted import _Notifier

__all__ = ["H2Counters", "H2Request", "H2Server", "H2ServerError", "pattern_body"]

HOST = "127.0.0.1"
MAX_HEADER_LIST_SIZE = 64 * 1024
# The largest DATA payload written at once, whatever the client's MAX_FRAME_SIZE allows.
MAX_CHUNK = 64 * 1024
PARTIAL_BODY = 1000  # what /reset-after-headers sends before its RST_STREAM
WINDOW_LATE_DEFAULT = 16 * 1024 * 1024  # /window-late without content-length
LARGEST_WINDOW = 2**31 - 1
CLOSE_LINGER = 2.0  # how long a closing connection waits for the client's FIN

_PATTERN = bytes(i % 251 for i in range(MAX_CHUNK + 251))
_ROUTE = re.compile(
    r"/(?P<name>bytes|delay|status|reset|reset-after-headers|goaway|settings|window-late)"
    r"/(?P<number>[0-9]{1,10})"
)


def pattern_body(size: int, offset: int = 0) -> bytes:
    """What `/bytes/N` sends (byte i = i % 251): `size` bytes starting at byte `offset`."""
    out = bytearray()
    while len(out) < size:
        start = (offset + len(out)) % 251
        out += _PATTERN[start : start + min(size - len(out), MAX_CHUNK)]
    return bytes(out)


class H2ServerError(AssertionError):
    """The server itself failed (a bug here, not in the client): raised by `close()`."""


@dataclass(frozen=True)
class H2Request:
    """One request as the server received its headers."""

    conn: int  # the connection's 1-based number
    stream: int
    method: str
    path: str  # with the query string
    headers: tuple[tuple[str, str], ...]  # as received, pseudo-headers included


@dataclass(frozen=True)
class H2Counters:
    accepted: int
    open_connections: int
    max_concurrent_streams_seen: int
    requests: int
    resets_received: int
    pings_received: int
    goaways_received: int
    protocol_errors: int


def _text(value: bytes | str) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value


def _encode(headers: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]


class _Stream:
    """A request's state on the server: what arrived, and which side has finished."""

    def __init__(self, stream_id: int, headers: list[tuple[str, str]]) -> None:
        self.id = stream_id
        self.headers = headers
        fields = dict(headers)
        self.method = fields.get(":method", "")
        self.path = fields.get(":path", "")
        self.route = self.path.split("?", 1)[0]
        length = fields.get("content-length")
        self.content_length = int(length) if length and length.isdigit() else None
        self.body_length = 0
        self.sha256 = hashlib.sha256()
        self.trailers: list[tuple[str, str]] = []
        self.ended = asyncio.Event()  # END_STREAM or RST_STREAM from the client
        self.client_done = False
        self.server_done = False
        self.hold_window = False  # /window-late: received DATA is not acknowledged yet
        self.unacknowledged = 0


class _Connection(asyncio.Protocol):
    """One HTTP/2 connection: feeds h2, handles its events, runs one task per response."""

    def __init__(self, server: H2Server) -> None:
        self.server = server
        self.number = 0
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()
        config = h2.config.H2Configuration(client_side=False, header_encoding=None)
        self.h2 = h2.connection.H2Connection(config)
        # The announced settings are in force from the start (not only once acknowledged):
        # a client must not exceed them after reading the server's first SETTINGS.
        self.h2.local_settings = Settings(
            client=False,
            initial_values={
                SettingCodes.MAX_CONCURRENT_STREAMS: server.max_concurrent_streams,
                SettingCodes.INITIAL_WINDOW_SIZE: server.initial_window_size,
                SettingCodes.MAX_FRAME_SIZE: server.max_frame_size,
                SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST_SIZE,
            },
        )
        self.h2.max_inbound_frame_size = server.max_frame_size
        self.streams: dict[int, _Stream] = {}  # until both sides are done
        self.open_streams = 0
        self.highest_stream = 0
        self.goaway_last: int | None = None
        self.hold_until = 0.0
        self.client_goaway = False
        self.muted = False
        self.closed = False
        self.tasks: set[asyncio.Task[None]] = set()
        self._linger: asyncio.TimerHandle | None = None
        self._window_changed = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()

    # -- transport callbacks ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        ssl_object = transport.get_extra_info("ssl_object")
        alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        self.number = self.server._connection_made(self, alpn)
        if self.server._stopping:
            transport.abort()
            return
        self.h2.initiate_connection()
        self.flush()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        state_before = self.h2.state_machine.state
        try:
            events = self.h2.receive_data(data)
        except Exception as exc:  # h2 rejected the client's bytes
            self.server._protocol_error(
                f"connection {self.number}: {type(exc).__name__}: {exc}"
            )
            self.flush()  # h2 prepared a GOAWAY
            self.close()
            return
        try:
            for event in events:
                if self.closed:
                    break
                self._on_event(event, state_before)
            self.flush()
        except Exception:
            self.server._server_error(traceback.format_exc())
            self.abort()

    def eof_received(self) -> bool | None:
        return None  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._linger is not None:
            self._linger.cancel()
        for task in list(self.tasks):
            task.cancel()
        self._window_changed.set()
        self._writable.set()
        self.server._connection_lost(self)

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # -- output -------------------------------------------------------------------------

    def _may_write(self) -> bool:
        return not (self.muted or self.server._muted_all or self.closed or self.transport is None)

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and self._may_write():
            assert self.transport is not None
            self.transport.write(data)

    def write_raw(self, data: bytes) -> None:
        """Bytes h2 does not know about, after everything h2 has queued."""
        self.flush()
        if self._may_write():
            assert self.transport is not None
            self.transport.write(data)

    def close(self) -> None:
        """End the connection without losing what was written: FIN (TLS: close_notify) after
        the data, then read and discard until the client closes too (at most
        `CLOSE_LINGER` seconds). Closing with unread input would send RST instead, which can
        destroy a GOAWAY the client has not read yet."""
        if self.transport is None or self.closed:
            return
        self.closed = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self._linger = self.loop.call_later(CLOSE_LINGER, self.transport.close)
        else:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.closed = True
            self.transport.abort()

    # -- events -------------------------------------------------------------------------

    def _on_event(self, event: h2.events.Event, state_before: ConnectionState) -> None:
        if isinstance(event, h2.events.RequestReceived):
            self._on_request(event)
        elif isinstance(event, h2.events.DataReceived):
            self._on_data(event)
        elif isinstance(event, h2.events.TrailersReceived):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.trailers = [(_text(k), _text(v)) for k, v in event.headers]
        elif isinstance(event, h2.events.StreamEnded):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.client_done = True
                stream.ended.set()
                self._forget_if_done(stream)
        elif isinstance(event, h2.events.StreamReset):
            self._on_reset(event)
        elif isinstance(event, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)):
            self._wake_senders()
        elif isinstance(event, h2.events.PingReceived):
            self.server._count("pings_received")
        elif isinstance(event, h2.events.PingAckReceived):
            self.server._count("ping_acks_received")
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._on_goaway(event, state_before)

    def _on_request(self, event: h2.events.RequestReceived) -> None:
        stream_id = event.stream_id
        self.highest_stream = max(self.highest_stream, stream_id)
        if self.goaway_last is not None and stream_id > self.goaway_last:
            # Above our GOAWAY's last stream: ignored, never answered. A /goaway?once request
            # refused so has had its turn: resent, it is answered as /echo (otherwise a
            # batch of resent streams carrying it is refused again on the next connection).
            path = next((_text(v) for k, v in event.headers if _text(k) == ":path"), "")
            if path.startswith("/goaway/"):
                self.server._first_goaway(path)
            return
        headers = [(_text(k), _text(v)) for k, v in event.headers]
        stream = _Stream(stream_id, headers)
        self.streams[stream_id] = stream
        self.open_streams += 1
        self.server._record_request(
            H2Request(self.number, stream_id, stream.method, stream.path, tuple(headers)),
            self.open_streams,
        )
        uploading = event.stream_ended is None
        match = _ROUTE.fullmatch(stream.route)
        name, number = (match["name"], int(match["number"])) if match else (stream.route, 0)
        if uploading and name != "window-late" and self.server.initial_window_size == 0:
            self.h2.increment_flow_control_window(65535, stream_id)
        if name == "reset":
            self._reset(stream, number)
        elif stream.route == "/goaway-error":
            self.h2.close_connection(error_code=ErrorCodes.PROTOCOL_ERROR, last_stream_id=0)
            self.flush()
            self.close()
        elif stream.route == "/malformed":
            # A DATA frame header with stream id 0 (length 4, no flags), then its payload.
            self.write_raw(b"\x00\x00\x04\x00\x00\x00\x00\x00\x00" + b"oops")
            self.muted = True
        elif stream.route == "/mute":
            # Not even what h2 prepared while reading this batch of frames (a PING that came
            # with the request is not acknowledged either).
            self.muted = True
        elif stream.route == "/mute-all":
            self.server._muted_all = True
        elif stream.route == "/ping":
            # The server PINGs the client (it must answer), then answers like /echo.
            self.h2.ping(b"srvping1")
            self.flush()
            self._spawn(stream, name, number)
        elif stream.route == "/close-idle":
            # Answered like /echo; 50 ms later the connection is closed (FIN) without a
            # GOAWAY, as a server dropping an idle keep-alive connection does.
            self.loop.call_later(0.05, self.close)
            self._spawn(stream, name, number)
        else:
            if name == "goaway" and not self.server._first_goaway(stream.path):
                name = "echo-again"  # answered as /echo below, no GOAWAY this time
            if name == "goaway":
                self.goaway_last = self.highest_stream
                self.hold_until = self.loop.time() + number / 1000
                # Raw, not h2's close_connection(): after that, h2 refuses to send anything,
                # and the streams up to last_stream_id must still be answered.
                frame = GoAwayFrame(
                    stream_id=0, last_stream_id=self.goaway_last, error_code=0
                )
                self.write_raw(frame.serialize())
            elif name == "settings":
                self.h2.update_settings({SettingCodes.MAX_CONCURRENT_STREAMS: number})
            elif name == "window-late":
                stream.hold_window = True
            self._spawn(stream, name, number)

    def _on_data(self, event: h2.events.DataReceived) -> None:
        stream = self.streams.get(event.stream_id)
        if stream is not None:
            stream.body_length += len(event.data)
            stream.sha256.update(event.data)
            if stream.hold_window:
                stream.unacknowledged += event.flow_controlled_length
                return
        # Ignored streams too: their data still counts against the connection window.
        if event.flow_controlled_length:
            self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)

    def _on_reset(self, event: h2.events.StreamReset) -> None:
        if event.remote_reset:
            self.server._reset_received(self.number, event.stream_id, int(event.error_code))
        stream = self.streams.get(event.stream_id)
        if stream is not None:
            stream.client_done = stream.server_done = True
            stream.ended.set()
            for task in list(self.tasks):
                if task.get_name() == f"h2-stream-{self.number}-{stream.id}":
                    task.cancel()
            self._forget_if_done(stream)
        self._wake_senders()

    def _on_goaway(
        self, event: h2.events.ConnectionTerminated, state_before: ConnectionState
    ) -> None:
        self.server._count("goaways_received")
        if event.error_code == ErrorCodes.NO_ERROR and state_before != ConnectionState.CLOSED:
            # A graceful GOAWAY from the client: its open streams may still complete. h2
            # would refuse to send from now on; put its state back.
            self.h2.state_machine.state = state_before
            self.client_goaway = True
            self._close_if_finished()
        else:
            self.close()

    # -- streams ------------------------------------------------------------------------

    def _forget_if_done(self, stream: _Stream) -> None:
        if stream.client_done and stream.server_done and self.streams.get(stream.id) is stream:
            del self.streams[stream.id]
            self.open_streams -= 1

    def _server_finished(self, stream: _Stream) -> None:
        stream.server_done = True
        self._forget_if_done(stream)
        self._close_if_finished()

    def _close_if_finished(self) -> None:
        if self.closed:
            return
        if self.goaway_last is not None:
            last = self.goaway_last
            if not any(s.id <= last and not s.server_done for s in self.streams.values()):
                self.flush()
                self.close()
        elif self.client_goaway and not any(not s.server_done for s in self.streams.values()):
            self.flush()
            self.close()

    def _reset(self, stream: _Stream, code: int) -> None:
        try:
            self.h2.reset_stream(stream.id, error_code=code)
        except h2.exceptions.StreamClosedError:
            pass  # the client reset it first (a cancelled request): nothing left to reset
        self.flush()
        stream.client_done = True
        stream.ended.set()
        self._server_finished(stream)

    def _wake_senders(self) -> None:
        self._window_changed.set()
        self._window_changed = asyncio.Event()

    def _spawn(self, stream: _Stream, name: str, number: int) -> None:
        task = self.loop.create_task(
            self._answer(stream, name, number), name=f"h2-stream-{self.number}-{stream.id}"
        )
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _answer(self, stream: _Stream, name: str, number: int) -> None:
        try:
            await self._route(stream, name, number)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            # The client reset the stream, or the connection ended, while we answered.
            if not (self.closed or stream.client_done):
                self.server._server_error(traceback.format_exc())
        except asyncio.CancelledError:
            raise
        except Exception:
            self.server._server_error(traceback.format_exc())
        finally:
            if not self.closed:
                self._server_finished(stream)

    async def _route(self, stream: _Stream, name: str, number: int) -> None:
        if name == "reset-after-headers":
            self._headers(stream, 200, [("content-type", "application/octet-stream")], None)
            await self._send_body(stream, PARTIAL_BODY, end_stream=False)
            self.h2.reset_stream(stream.id, error_code=number)
            self.flush()
            stream.client_done = True
            return
        if name == "window-late":
            await asyncio.sleep(number / 1000)
            self._open_window_late(stream)
        await stream.ended.wait()  # (a reset by the client cancels this task)
        if name == "delay":
            await asyncio.sleep(number / 1000)
        if self.goaway_last is not None:
            pause = self.hold_until - self.loop.time()
            if pause > 0:
                await asyncio.sleep(pause)
        text = [("content-type", "text/plain")]
        if stream.route in ("/echo", "/ping", "/close-idle") or name in (
                "delay", "goaway", "echo-again", "settings", "window-late"):
            await self._respond(stream, 200, [("content-type", "application/json")],
                                self._echo(stream))
        elif name == "bytes":
            await self._respond(
                stream, 200, [("content-type", "application/octet-stream")], number
            )
        elif name == "status":
            if not 200 <= number <= 599:
                await self._respond(stream, 400, text, b"status must be 200..599")
            elif number in (204, 304):
                await self._respond(stream, number, [], b"")
            else:
                await self._respond(stream, number, text, f"status {number}".encode())
        elif stream.route == "/interim":
            informational = [(":status", "103"), ("link", "</x>; rel=preload")]
            self.h2.send_headers(stream.id, _encode(informational))
            self.flush()
            await self._respond(stream, 200, text, b"final")
        elif stream.route == "/trailers":
            await self._respond(
                stream, 200, text, b"body", trailers=[("x-checksum", "abc")]
            )
        else:
            await self._respond(stream, 404, text, b"not found")

    def _open_window_late(self, stream: _Stream) -> None:
        stream.hold_window = False
        if stream.client_done:
            return
        if stream.content_length is not None:
            remaining = max(0, stream.content_length - stream.body_length)
        else:
            remaining = WINDOW_LATE_DEFAULT
        # Not remote_flow_control_window(): that is the smaller of stream and connection.
        stream_window = self.h2.streams[stream.id].inbound_flow_control_window
        increment = min(remaining - stream_window, LARGEST_WINDOW - stream_window)
        if increment > 0:
            self.h2.increment_flow_control_window(increment, stream.id)
        connection_window = self.h2.inbound_flow_control_window
        increment = min(remaining + 65535 - connection_window, LARGEST_WINDOW - connection_window)
        if increment > 0:
            self.h2.increment_flow_control_window(increment)
        stream.unacknowledged = 0
        self.flush()

    def _echo(self, stream: _Stream) -> bytes:
        return json.dumps(
            {
                "conn": self.number,
                "stream": stream.id,
                "method": stream.method,
                "path": stream.path,
                "headers": [list(item) for item in stream.headers],
                "body_length": stream.body_length,
                "body_sha256": stream.sha256.hexdigest(),
                "trailers": [list(item) for item in stream.trailers],
            }
        ).encode()

    def _headers(
        self,
        stream: _Stream,
        status: int,
        headers: list[tuple[str, str]],
        length: int | None,
        *,
        end_stream: bool = False,
    ) -> None:
        fields = [(":status", str(status)), *headers]
        if length is not None:
            fields.append(("content-length", str(length)))
        fields += [("x-conn", str(self.number)), ("x-stream", str(stream.id))]
        self.h2.send_headers(stream.id, _encode(fields), end_stream=end_stream)
        self.flush()

    async def _respond(
        self,
        stream: _Stream,
        status: int,
        headers: list[tuple[str, str]],
        body: bytes | int,
        *,
        trailers: list[tuple[str, str]] | None = None,
    ) -> None:
        """A complete response; an int body means that many `/bytes` pattern bytes."""
        size = body if isinstance(body, int) else len(body)
        no_body_status = status in (204, 304)
        if no_body_status or stream.method == "HEAD":
            self._headers(stream, status, headers, None if no_body_status else size,
                          end_stream=True)
            return
        self._headers(stream, status, headers, size)
        await self._send_body(stream, body, end_stream=trailers is None)
        if trailers is not None:
            self.h2.send_headers(stream.id, _encode(trailers), end_stream=True)
            self.flush()

    async def _send_body(self, stream: _Stream, body: bytes | int, *, end_stream: bool) -> None:
        """DATA frames within the client's windows: waits for WINDOW_UPDATE when they are
        exhausted, and for the transport when the client does not read."""
        size = body if isinstance(body, int) else len(body)
        offset = 0
        while offset < size:
            if not self._writable.is_set():
                await self._writable.wait()
            if self.closed:
                return
            window = self.h2.local_flow_control_window(stream.id)
            if window <= 0:
                await self._window_changed.wait()
                continue
            count = min(window, self.h2.max_outbound_frame_size, MAX_CHUNK, size - offset)
            if isinstance(body, int):
                chunk = pattern_body(count, offset)
            else:
                chunk = body[offset : offset + count]
            offset += count
            self.h2.send_data(stream.id, chunk, end_stream=end_stream and offset == size)
            self.flush()
            if offset < size:
                # The other streams get their turn. (Not after the last frame: the stream
                # must count as closed from the moment END_STREAM is out, since a client may
                # open its next stream as soon as it reads it.)
                await asyncio.sleep(0)
        if size == 0 and end_stream:
            self.h2.end_stream(stream.id)
            self.flush()


class H2Server:
    """The scripted HTTP/2 server on 127.0.0.1 (see the module docstring for the routes).

    A context manager, or `start()` / `close()`. Counters are safe to read from any thread;
    `wait_for(predicate)` blocks until `predicate(server)` holds.
    """

    def __init__(
        self,
        *,
        tls: bool = False,
        max_concurrent_streams: int = 100,
        initial_window_size: int = 65535,
        max_frame_size: int = 16384,
        certs: CertBundle | None = None,
    ) -> None:
        self.tls = tls
        self.max_concurrent_streams = max_concurrent_streams
        self.initial_window_size = initial_window_size
        self.max_frame_size = max_frame_size
        self.host = HOST
        self.port = 0
        self._given_certs = certs
        self.certs: CertBundle | None = None
        self._directory: Path | None = None
        self._notifier = _Notifier()
        self._lock = self._notifier.lock
        self._accepted = 0
        self._open = 0
        self._max_streams = 0
        self._requests: list[H2Request] = []
        self._resets: list[tuple[int, int, int]] = []
        self._protocol_errors: list[str] = []
        self._server_errors: list[str] = []
        self._alpn: list[str | None] = []
        self._counts = {"pings_received": 0, "goaways_received": 0, "ping_acks_received": 0}
        self._connections: set[_Connection] = set()
        self._muted_all = False
        self._goaway_paths: set[str] = set()  # /goaway?once=... paths that said GOAWAY
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._started = threading.Event()
        self._start_error: BaseException | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def __enter__(self) -> H2Server:
        self.start()
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        # A server error must not mask the exception already failing the test.
        self.close(raise_server_errors=exc_type is None)

    def start(self, timeout: float = 10.0) -> H2Server:
        if self._thread is not None:
            raise RuntimeError("already started")
        context: ssl.SSLContext | None = None
        if self.tls:
            if self._given_certs is None:
                self._directory = Path(tempfile.mkdtemp(prefix="poolhttp-h2server-"))
                self.certs = make_certs(self._directory)
            else:
                self.certs = self._given_certs
            context = self.certs.server_context()
            context.set_alpn_protocols(["h2"])
        self._thread = threading.Thread(
            target=self._run, args=(context,), name="h2-server", daemon=True
        )
        self._thread.start()
        if not self._started.wait(timeout) or self._start_error is not None:
            self.close(raise_server_errors=False)
            raise RuntimeError("the HTTP/2 server did not start") from self._start_error
        return self

    def _run(self, context: ssl.SSLContext | None) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            try:
                self._server = loop.run_until_complete(
                    loop.create_server(
                        lambda: _Connection(self), self.host, 0, ssl=context, backlog=512
                    )
                )
                self.port = self._server.sockets[0].getsockname()[1]
            except BaseException as exc:
                self._start_error = exc
                return
            finally:
                self._started.set()
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def close(self, timeout: float = 5.0, *, raise_server_errors: bool = True) -> None:
        """Stop accepting, abort every connection, end the thread; then raise H2ServerError
        if the server failed internally (safe to call twice)."""
        thread, loop = self._thread, self._loop
        if thread is not None and loop is not None and not self._stopping:
            self._stopping = True
            if thread.is_alive() and not loop.is_closed():
                future = asyncio.run_coroutine_threadsafe(self._shutdown(timeout), loop)
                try:
                    future.result(timeout + 1)
                except concurrent.futures.TimeoutError:
                    future.cancel()
                loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
            if thread.is_alive():
                raise RuntimeError(f"the HTTP/2 server thread did not stop within {timeout}s")
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None
        errors = self.server_errors
        if raise_server_errors and errors:
            raise H2ServerError(f"{len(errors)} server error(s); the first:\n{errors[0]}")

    stop = close

    async def _shutdown(self, timeout: float) -> None:
        self._stopping = True
        if self._server is not None:
            self._server.close()
        for connection in list(self._connections):
            connection.abort()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        current = asyncio.current_task()
        while loop.time() < deadline:
            others = [task for task in asyncio.all_tasks() if task is not current]
            for task in others:
                task.cancel()
            if not others and not self._connections:
                break
            await asyncio.sleep(0.01)
        if self._server is not None:
            try:
                await asyncio.wait_for(self._server.wait_closed(), max(0.1, deadline - loop.time()))
            except asyncio.TimeoutError:
                pass

    # -- addresses -----------------------------------------------------------------------

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def origin(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    def url(self, path: str = "/") -> str:
        return self.origin + path

    @property
    def ca_path(self) -> str:
        """The CA bundle (PEM) that verifies the TLS server: pass it as `verify=`."""
        if self.certs is None:
            raise RuntimeError("the server runs without TLS (H2Server(tls=True) for TLS)")
        return str(self.certs.ca_path)

    # -- faults under test control ---------------------------------------------------------

    def mute_all(self, muted: bool = True) -> None:
        """Like a request to /mute-all (or, with False, the end of it)."""
        self._muted_all = muted

    # -- counters (thread-safe) ----------------------------------------------------------

    @property
    def accepted(self) -> int:
        with self._lock:
            return self._accepted

    @property
    def open_connections(self) -> int:
        with self._lock:
            return self._open

    @property
    def max_concurrent_streams_seen(self) -> int:
        """The most streams open at once on any one connection (open or half-closed, as
        the server counts them against its MAX_CONCURRENT_STREAMS)."""
        with self._lock:
            return self._max_streams

    @property
    def requests(self) -> list[H2Request]:
        with self._lock:
            return list(self._requests)

    @property
    def resets_received(self) -> list[tuple[int, int, int]]:
        """(conn, stream id, error code) of every RST_STREAM the clients sent."""
        with self._lock:
            return list(self._resets)

    @property
    def protocol_errors(self) -> list[str]:
        """What h2 raised on the clients' bytes (empty for a well-behaved client)."""
        with self._lock:
            return list(self._protocol_errors)

    @property
    def server_errors(self) -> list[str]:
        """Tracebacks of failures of the server itself (`close()` raises if any)."""
        with self._lock:
            return list(self._server_errors)

    @property
    def alpn_protocols(self) -> list[str | None]:
        """The ALPN protocol of each connection, in connection order (None: plain h2c, or
        a TLS client that offered no ALPN)."""
        with self._lock:
            return list(self._alpn)

    @property
    def pings_received(self) -> int:
        with self._lock:
            return self._counts["pings_received"]

    @property
    def ping_acks_received(self) -> int:
        """Acknowledgements of the PINGs `/ping` sent."""
        with self._lock:
            return self._counts["ping_acks_received"]

    @property
    def goaways_received(self) -> int:
        with self._lock:
            return self._counts["goaways_received"]

    def _first_goaway(self, path: str) -> bool:
        """Whether a /goaway request with `path` says GOAWAY: always, unless its query has
        `once` and this path said it before."""
        query = path.partition("?")[2]
        if "once" not in query.split("&") and not any(
                part.startswith("once=") for part in query.split("&")):
            return True
        with self._lock:
            if path in self._goaway_paths:
                return False
            self._goaway_paths.add(path)
            return True

    def counters(self) -> H2Counters:
        with self._lock:
            return H2Counters(
                accepted=self._accepted,
                open_connections=self._open,
                max_concurrent_streams_seen=self._max_streams,
                requests=len(self._requests),
                resets_received=len(self._resets),
                pings_received=self._counts["pings_received"],
                goaways_received=self._counts["goaways_received"],
                protocol_errors=len(self._protocol_errors),
            )

    def wait_for(self, predicate: Callable[[H2Server], bool], timeout: float = 5.0) -> None:
        """Block until `predicate(server)` holds; TimeoutError (with the counters) if not."""
        if not self._notifier.wait(lambda: predicate(self), timeout):
            raise TimeoutError(f"condition not reached within {timeout}s: {self.counters()}")

    async def wait_for_async(
        self, predicate: Callable[[H2Server], bool], timeout: float = 5.0
    ) -> None:
        """`wait_for` for async tests: waits without blocking the test's loop."""
        if not await self._notifier.wait_async(lambda: predicate(self), timeout):
            raise TimeoutError(f"condition not reached within {timeout}s: {self.counters()}")

    # -- called on the server's loop -------------------------------------------------------

    def _connection_made(self, connection: _Connection, alpn: str | None) -> int:
        with self._lock:
            self._accepted += 1
            self._open += 1
            self._connections.add(connection)
            self._alpn.append(alpn)
            number = self._accepted
        self._notifier.notify()
        return number

    def _connection_lost(self, connection: _Connection) -> None:
        with self._lock:
            if connection in self._connections:
                self._connections.discard(connection)
                self._open -= 1
        self._notifier.notify()

    def _record_request(self, request: H2Request, open_streams: int) -> None:
        with self._lock:
            self._requests.append(request)
            self._max_streams = max(self._max_streams, open_streams)
        self._notifier.notify()

    def _protocol_error(self, text: str) -> None:
        with self._lock:
            self._protocol_errors.append(text)
        self._notifier.notify()

    def _server_error(self, text: str) -> None:
        with self._lock:
            self._server_errors.append(text)
        self._notifier.notify()

    def _reset_received(self, conn: int, stream_id: int, error_code: int) -> None:
        with self._lock:
            self._resets.append((conn, stream_id, error_code))
        self._notifier.notify()

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1
        self._notifier.notify()
