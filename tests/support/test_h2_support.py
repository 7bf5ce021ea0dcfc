"""Self-tests of the HTTP/2 test servers (H2Server, hypercorn, nginx's h2), with clients that
are not poolhttp: a small blocking client on the `h2` library (below) that records every
event in order, so a test can say which frame came first, and httpx with http2=True."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import httpx
import pytest
from h2.connection import ConnectionState
from h2.errors import ErrorCodes

from tests.support import no_fd_leak
from tests.support.certs import CertBundle
from tests.support.h2server import H2Server, pattern_body
from tests.support.hypercorn import Hypercorn
from tests.support.nginx import Nginx, find_nginx

pytestmark = pytest.mark.timeout(30)


# --------------------------------------------------------------------------------------------
# A blocking HTTP/2 client, just enough to drive the servers


@dataclass
class Response:
    stream_id: int
    status: int | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    informational: list[list[tuple[str, str]]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    trailers: list[tuple[str, str]] = field(default_factory=list)
    ended: bool = False
    reset_code: int | None = None

    @property
    def done(self) -> bool:
        return self.ended or self.reset_code is not None

    def header(self, name: str) -> str | None:
        return dict(self.headers).get(name)

    def json(self) -> dict[str, Any]:
        value = json.loads(bytes(self.body))
        assert isinstance(value, dict)
        return value


class MiniClient:
    """One HTTP/2 connection over a blocking socket (h2c with prior knowledge, or TLS with
    ALPN h2). Every h2 event is appended to `log`, in arrival order; received DATA is
    acknowledged at once. A GOAWAY with NO_ERROR leaves the lower streams running (h2 alone
    would refuse every later frame)."""

    def __init__(
        self, host: str, port: int, *, ca_path: str | None = None, timeout: float = 5.0
    ) -> None:
        self.authority = f"{host}:{port}"
        self.scheme = "https" if ca_path else "http"
        raw = socket.create_connection((host, port), timeout)
        self.alpn: str | None = None
        if ca_path is not None:
            context = ssl.create_default_context(cafile=ca_path)
            context.set_alpn_protocols(["h2"])
            tls = context.wrap_socket(raw, server_hostname=host)
            self.alpn = tls.selected_alpn_protocol()
            self.sock: socket.socket = tls
        else:
            self.sock = raw
        self.sock.settimeout(timeout)
        config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.h2 = h2.connection.H2Connection(config)
        self.h2.initiate_connection()
        self.log: list[h2.events.Event] = []
        self.responses: dict[int, Response] = {}
        self.uploads: dict[int, bytes] = {}
        # Streams whose DATA is acknowledged for the connection only: their window stays shut.
        self.hold_streams: set[int] = set()
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.eof = False
        self._send()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> MiniClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _send(self) -> None:
        data = self.h2.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(
        self,
        path: str,
        method: str = "GET",
        body: bytes = b"",
        headers: list[tuple[str, str]] | None = None,
        *,
        send_now: bool = True,
        end_stream: bool = True,
    ) -> int:
        stream_id = self.h2.get_next_available_stream_id()
        fields = [
            (":method", method),
            (":scheme", self.scheme),
            (":authority", self.authority),
            (":path", path),
            *(headers or []),
        ]
        self.h2.send_headers(stream_id, fields, end_stream=end_stream and not body)
        self.responses[stream_id] = Response(stream_id)
        if body:
            self.uploads[stream_id] = body
            self._upload()
        if send_now:
            self._send()
        return stream_id

    def _upload(self) -> None:
        """Send what the windows allow of the pending request bodies."""
        for stream_id, rest in list(self.uploads.items()):
            while rest:
                window = self.h2.local_flow_control_window(stream_id)
                if window <= 0:
                    break
                count = min(window, self.h2.max_outbound_frame_size, len(rest))
                self.h2.send_data(stream_id, rest[:count], end_stream=count == len(rest))
                rest = rest[count:]
            if rest:
                self.uploads[stream_id] = rest
            else:
                del self.uploads[stream_id]

    def pump_once(self, timeout: float) -> None:
        self.sock.settimeout(timeout)
        data = self.sock.recv(65536)
        if not data:
            self.eof = True
            return
        state_before = self.h2.state_machine.state
        events = self.h2.receive_data(data)
        for event in events:
            self.log.append(event)
            self._on_event(event, state_before)
        self._upload()
        self._send()

    def pump(self, until: Callable[[], bool], timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not until():
            if self.eof:
                raise ConnectionError("the server closed the connection")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("condition not reached")
            self.pump_once(remaining)

    def _on_event(self, event: h2.events.Event, state_before: ConnectionState) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            response = self.responses[event.stream_id]
            response.headers = [(str(k), str(v)) for k, v in event.headers]
            response.status = int(dict(response.headers)[":status"])
        elif isinstance(event, h2.events.InformationalResponseReceived):
            headers = [(str(k), str(v)) for k, v in event.headers]
            self.responses[event.stream_id].informational.append(headers)
        elif isinstance(event, h2.events.DataReceived):
            self.responses[event.stream_id].body += event.data
            size = event.flow_controlled_length
            if event.stream_id not in self.hold_streams:
                self.h2.acknowledge_received_data(size, event.stream_id)
            elif size:
                self.h2.increment_flow_control_window(size)
        elif isinstance(event, h2.events.TrailersReceived):
            trailers = [(str(k), str(v)) for k, v in event.headers]
            self.responses[event.stream_id].trailers = trailers
        elif isinstance(event, h2.events.StreamEnded):
            self.responses[event.stream_id].ended = True
        elif isinstance(event, h2.events.StreamReset):
            self.responses[event.stream_id].reset_code = int(event.error_code)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = event
            if event.error_code == ErrorCodes.NO_ERROR:
                self.h2.state_machine.state = state_before

    def wait(self, stream_id: int, timeout: float = 5.0) -> Response:
        response = self.responses[stream_id]
        self.pump(lambda: response.done, timeout)
        return response

    def get(self, path: str, method: str = "GET", body: bytes = b"") -> Response:
        return self.wait(self.request(path, method, body))

    def wait_settings(self) -> None:
        self.pump(lambda: any(isinstance(e, h2.events.RemoteSettingsChanged) for e in self.log))

    def index(self, kind: type[h2.events.Event], stream_id: int | None = None) -> int:
        """Position in `log` of the first event of `kind` (on `stream_id`)."""
        for position, event in enumerate(self.log):
            if isinstance(event, kind) and (
                stream_id is None or getattr(event, "stream_id", None) == stream_id
            ):
                return position
        raise LookupError(f"no {kind.__name__} for stream {stream_id}")


def trusting(ca_path: str) -> ssl.SSLContext:
    """A verifying context for httpx that trusts only the test CA."""
    return ssl.create_default_context(cafile=ca_path)


def client_for(server: H2Server, timeout: float = 5.0) -> MiniClient:
    return MiniClient(
        server.host, server.port, ca_path=server.ca_path if server.tls else None,
        timeout=timeout,
    )


# --------------------------------------------------------------------------------------------
# H2Server


@pytest.fixture
def server() -> Iterator[H2Server]:
    with H2Server() as running:
        yield running


def test_echo_json(server: H2Server) -> None:
    body = b"x" * 100_000
    with client_for(server) as client:
        first = client.get("/echo?a=1")
        upload = client.get("/echo", "POST", body)
        head = client.get("/echo", "HEAD")
    assert first.status == 200
    assert first.header("content-type") == "application/json"
    assert first.header("x-conn") == "1"
    assert first.header("x-stream") == "1"
    echo = first.json()
    assert echo["conn"] == 1
    assert echo["stream"] == 1
    assert echo["method"] == "GET"
    assert echo["path"] == "/echo?a=1"
    assert [":path", "/echo?a=1"] in echo["headers"]
    assert echo["body_length"] == 0
    assert echo["trailers"] == []
    uploaded = upload.json()
    assert uploaded["body_length"] == len(body)
    assert uploaded["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert head.status == 200
    assert head.body == b""
    assert int(head.header("content-length") or 0) > 0
    assert [(r.conn, r.stream, r.method) for r in server.requests] == [
        (1, 1, "GET"), (1, 3, "POST"), (1, 5, "HEAD")
    ]
    server.wait_for(lambda s: s.open_connections == 0)
    assert server.protocol_errors == []


def test_request_trailers_are_echoed(server: H2Server) -> None:
    with client_for(server) as client:
        stream_id = client.request("/echo", "POST", send_now=False, end_stream=False)
        client.h2.send_data(stream_id, b"abc")
        client.h2.send_headers(stream_id, [("x-sum", "1")], end_stream=True)
        client._send()
        echo = client.wait(stream_id).json()
    assert echo["body_length"] == 3
    assert echo["trailers"] == [["x-sum", "1"]]


def test_tls_alpn_and_httpx() -> None:
    with H2Server(tls=True) as server:
        with client_for(server) as client:
            assert client.alpn == "h2"
            assert client.get("/status/201").status == 201
        with httpx.Client(http2=True, verify=trusting(server.ca_path)) as http:
            response = http.get(server.url("/echo"))
        assert response.http_version == "HTTP/2"
        assert response.json()["conn"] == 2
        assert server.alpn_protocols == ["h2", "h2"]
        assert server.protocol_errors == []


def test_concurrent_streams_respect_the_limit() -> None:
    with H2Server(max_concurrent_streams=100) as server, client_for(server) as client:
        client.wait_settings()
        limit = client.h2.remote_settings.max_concurrent_streams
        assert limit == 100
        waiting = 200
        stream_ids: list[int] = []
        while waiting or not all(client.responses[s].done for s in stream_ids):
            while waiting and client.h2.open_outbound_streams < limit:
                stream_ids.append(client.request("/delay/50", send_now=False))
                waiting -= 1
            client._send()
            client.pump_once(5.0)
        assert [client.responses[s].status for s in stream_ids] == [200] * 200
        assert server.accepted == 1
        assert server.max_concurrent_streams_seen == 100
        assert len(server.requests) == 200
        assert server.protocol_errors == []


def test_large_download_with_default_windows(server: H2Server) -> None:
    with client_for(server, timeout=10) as client:
        response = client.get("/bytes/2000000")
    assert response.status == 200
    assert response.header("content-length") == "2000000"
    assert bytes(response.body) == pattern_body(2_000_000)


def test_stream_waiting_for_its_window_does_not_block_others(server: H2Server) -> None:
    with client_for(server) as client:
        big = client.request("/bytes/5000000", send_now=False)
        client.hold_streams.add(big)  # its window stays shut after the first 65535 bytes
        client._send()
        client.pump(lambda: len(client.responses[big].body) == 65535)
        small = client.get("/delay/10")
        assert small.status == 200
        assert len(client.responses[big].body) == 65535
        client.hold_streams.discard(big)
        client.h2.increment_flow_control_window(5_000_000, big)
        client._send()
        assert bytes(client.wait(big).body) == pattern_body(5_000_000)


def test_goaway_lets_lower_streams_complete(server: H2Server) -> None:
    with client_for(server) as client:
        client.wait_settings()
        lower = [client.request("/delay/200") for _ in range(2)]
        server.wait_for(lambda s: len(s.requests) == 2)
        goaway = client.request("/goaway/100", send_now=False)
        above = client.request("/echo", send_now=False)  # in the same write: above the GOAWAY
        client._send()
        client.pump(lambda: all(client.responses[s].done for s in [*lower, goaway]))
        assert client.goaway is not None
        assert client.goaway.last_stream_id == goaway
        assert client.goaway.error_code == ErrorCodes.NO_ERROR
        terminated_at = client.index(h2.events.ConnectionTerminated)
        for stream_id in [*lower, goaway]:
            assert client.responses[stream_id].status == 200
            assert client.index(h2.events.DataReceived, stream_id) > terminated_at
        assert client.responses[goaway].json()["stream"] == goaway
        client.pump(lambda: client.eof)  # closed once the allowed streams were done
        assert not client.responses[above].done
    assert [r.stream for r in server.requests] == [*lower, goaway]
    server.wait_for(lambda s: s.open_connections == 0)
    assert server.protocol_errors == []


def test_goaway_error(server: H2Server) -> None:
    with client_for(server) as client:
        client.request("/goaway-error")
        client.pump(lambda: client.eof)
    assert client.goaway is not None
    assert client.goaway.error_code == ErrorCodes.PROTOCOL_ERROR
    assert client.goaway.last_stream_id == 0


def test_resets(server: H2Server) -> None:
    with client_for(server) as client:
        reset = client.get("/reset/8")
        partial = client.get("/reset-after-headers/2")
        slow = client.request("/delay/2000")
        server.wait_for(lambda s: len(s.requests) == 3)
        client.h2.reset_stream(slow, ErrorCodes.CANCEL)
        client._send()
        server.wait_for(lambda s: len(s.resets_received) == 1)
        assert client.get("/echo").status == 200  # the connection still serves
    assert reset.reset_code == ErrorCodes.CANCEL
    assert reset.status is None
    assert partial.status == 200
    assert partial.reset_code == ErrorCodes.INTERNAL_ERROR
    assert len(partial.body) == 1000
    assert server.resets_received == [(1, slow, ErrorCodes.CANCEL)]
    assert server.protocol_errors == []


def test_status_interim_trailers_404(server: H2Server) -> None:
    with client_for(server) as client:
        no_content = client.get("/status/204")
        teapot = client.get("/status/418")
        interim = client.get("/interim")
        trailers = client.get("/trailers")
        missing = client.get("/nothing-here")
    assert (no_content.status, bytes(no_content.body)) == (204, b"")
    assert client.index(h2.events.StreamEnded, no_content.stream_id) == (
        client.index(h2.events.ResponseReceived, no_content.stream_id) + 1
    )
    assert (teapot.status, bytes(teapot.body)) == (418, b"status 418")
    assert interim.informational[0][:2] == [(":status", "103"), ("link", "</x>; rel=preload")]
    assert (interim.status, bytes(interim.body)) == (200, b"final")
    assert (bytes(trailers.body), trailers.trailers) == (b"body", [("x-checksum", "abc")])
    assert missing.status == 404


def test_settings_mid_connection(server: H2Server) -> None:
    with client_for(server) as client:
        client.wait_settings()
        assert client.get("/settings/5").status == 200
        assert client.h2.remote_settings.max_concurrent_streams == 5


def test_window_late_holds_the_upload() -> None:
    body = b"u" * 200_000
    with H2Server(initial_window_size=0) as server, client_for(server) as client:
        client.wait_settings()
        started = time.monotonic()
        stream_id = client.request("/window-late/200", "POST", body,
                                   headers=[("content-length", str(len(body)))])
        server.wait_for(lambda s: len(s.requests) == 1)
        assert client.uploads[stream_id] == body  # nothing could be sent yet
        echo = client.wait(stream_id).json()
        assert time.monotonic() - started >= 0.2
        assert echo["body_length"] == len(body)
        # Other routes open the window themselves, even with initial_window_size=0.
        assert client.get("/echo", "POST", body).json()["body_length"] == len(body)
        assert server.protocol_errors == []


def test_malformed_is_a_protocol_error_for_the_client(server: H2Server) -> None:
    with client_for(server) as client, pytest.raises(h2.exceptions.ProtocolError):
        client.get("/malformed")


def test_mute_and_pings(server: H2Server) -> None:
    with client_for(server) as client:
        client.h2.ping(b"12345678")
        client._send()
        client.pump(lambda: any(isinstance(e, h2.events.PingAckReceived) for e in client.log))
        client.request("/mute")
        client.h2.ping(b"87654321")
        client._send()
        server.wait_for(lambda s: s.pings_received == 2)
        with pytest.raises(TimeoutError):
            client.pump(lambda: False, timeout=0.3)
        assert sum(isinstance(e, h2.events.PingAckReceived) for e in client.log) == 1
    with client_for(server) as other:  # other connections still work
        assert other.get("/echo").status == 200
        other.request("/mute-all")
        server.wait_for(lambda s: len(s.requests) == 3)
    with client_for(server) as silent, pytest.raises(TimeoutError):  # not even SETTINGS
        silent.pump(lambda: bool(silent.log), timeout=0.3)


def test_client_goaway_is_counted(server: H2Server) -> None:
    with client_for(server) as client:
        assert client.get("/echo").status == 200
        client.h2.close_connection()
        client._send()
        server.wait_for(lambda s: s.goaways_received == 1)
        client.pump(lambda: client.eof)  # nothing pending: the server closes


def test_client_protocol_errors_are_recorded(server: H2Server) -> None:
    with socket.create_connection((server.host, server.port), 5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        server.wait_for(lambda s: len(s.protocol_errors) == 1)
    assert "preamble" in server.protocol_errors[0].lower()


def test_too_many_streams_is_a_protocol_error() -> None:
    with H2Server(max_concurrent_streams=2) as server, client_for(server) as client:
        # Sent before the server's SETTINGS arrived: h2 assumes no limit until then.
        for _ in range(3):
            client.request("/delay/1000", send_now=False)
        client._send()
        server.wait_for(lambda s: len(s.protocol_errors) == 1)
        client.pump(lambda: client.goaway is not None)
    assert "TooManyStreamsError" in server.protocol_errors[0]
    assert client.goaway is not None
    assert client.goaway.error_code == ErrorCodes.PROTOCOL_ERROR


def test_close_leaves_nothing_behind() -> None:
    threads = threading.active_count()
    with no_fd_leak():
        with H2Server(tls=True) as server:
            clients = [client_for(server) for _ in range(3)]
            for client in clients:
                client.request("/delay/5000")
            server.wait_for(lambda s: len(s.requests) == 3)
        for client in clients:
            client.close()
    assert threading.active_count() == threads


# --------------------------------------------------------------------------------------------
# hypercorn


@pytest.fixture(scope="module")
def hypercorn(certs: CertBundle) -> Iterator[Hypercorn]:
    with Hypercorn(certs=certs) as server:
        yield server


def test_hypercorn_h2_on_both_ports(hypercorn: Hypercorn) -> None:
    with MiniClient("127.0.0.1", hypercorn.tls_port, ca_path=hypercorn.ca_path) as client:
        assert client.alpn == "h2"
        tls_echo = client.get("/echo?x=1", "POST", b"hello").json()
        assert bytes(client.get("/bytes/300000").body) == pattern_body(300_000)
    with MiniClient("127.0.0.1", hypercorn.h2c_port) as client:
        h2c_echo = client.get("/echo").json()
    assert tls_echo["http_version"] == "2"
    assert tls_echo["path"] == "/echo?x=1"
    assert tls_echo["body_length"] == 5
    assert h2c_echo["http_version"] == "2"
    with httpx.Client(http2=True, verify=trusting(hypercorn.ca_path)) as http:
        response = http.get(hypercorn.url_tls("/delay/10"))
        assert response.http_version == "HTTP/2"
        assert response.json()["http_version"] == "2"
    with httpx.Client(http1=False, http2=True) as http:
        assert http.get(hypercorn.url_h2c("/echo")).json()["http_version"] == "2"
    with httpx.Client() as http:  # HTTP/1.1 still works on the plain port
        assert http.get(hypercorn.url_h2c("/echo")).json()["http_version"] == "1.1"


def test_hypercorn_stop_leaves_no_process(certs: CertBundle) -> None:
    server = Hypercorn(certs=certs)
    server.start()
    pid = server.pid
    server.stop()
    server.stop()
    assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


# --------------------------------------------------------------------------------------------
# nginx


@pytest.mark.skipif(find_nginx() is None, reason="nginx is not installed")
def test_nginx_speaks_h2_over_tls(nginx: Nginx) -> None:
    before = nginx.server_stats()
    with MiniClient("127.0.0.1", nginx.https_port, ca_path=nginx.ca_path) as client:
        assert client.alpn == "h2"
        client.wait_settings()
        assert client.h2.remote_settings.max_concurrent_streams == 128
        hello = client.get("/")
        big = client.get("/1m")
    assert (hello.status, bytes(hello.body)) == (200, b"hello\n")
    assert bytes(big.body) == nginx.file_bytes("1m")
    stats = nginx.wait_for_stats(lambda s: s.active == 0).since(before)
    assert stats.accepted == 1
    assert stats.requests == 2


@pytest.mark.skipif(find_nginx() is None, reason="nginx is not installed")
def test_nginx_max_concurrent_streams_option() -> None:
    with Nginx(http2_max_concurrent_streams=7, addresses=["127.0.0.1"]) as server, MiniClient(
        "127.0.0.1", server.https_port, ca_path=server.ca_path
    ) as client:
        client.wait_settings()
        assert client.h2.remote_settings.max_concurrent_streams == 7
        # HTTP/1.1 clients are unaffected.
        with httpx.Client(verify=trusting(server.ca_path)) as http:
            assert http.get(server.https_url("/")).http_version == "HTTP/1.1"
