"""HTTP/2 faults, through both clients (asyncio, uvloop, threads), against the scripted
H2Server: GOAWAY with streams in flight, stream resets, cancellation and time-outs, flow
control, SETTINGS changes, a silent server, garbage on the wire. What the client did is read
from the server's counters; every test also checks for leaked descriptors and reader threads
(h2helpers.h2_leak_check) and that the server saw no protocol error (h2helpers.h2server)."""

from __future__ import annotations

import asyncio
import hashlib
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest
from h2.events import RequestReceived
from h2.settings import SettingCodes

import poolhttp
import poolhttp._async.http2
import poolhttp._sync.http2
from tests.integration.clients import make_client
from tests.integration.h2helpers import (
    TLS_MODES,
    H2Factory,
    body_json,
    h2_options,
    stream_of,
)
from tests.support import h2server as h2server_module
from tests.support.h2server import H2Server, pattern_body

pytestmark = [pytest.mark.timeout(30), pytest.mark.usefixtures("h2_leak_check")]

CANCEL = 8
REFUSED_STREAM = 7


def _results(futures: list[Future[Any]], timeout: float = 10.0) -> list[Any]:
    """Each future's response, or the exception it raised."""
    out: list[Any] = []
    for future in futures:
        try:
            out.append(future.result(timeout))
        except Exception as exc:  # the test inspects it
            out.append(exc)
    return out


def _read_into(buffer: bytearray, response: Any) -> None:
    for chunk in response.iter_bytes():
        buffer += chunk


@pytest.fixture
def short_ping(monkeypatch: pytest.MonkeyPatch) -> float:
    """Both drivers give a silent connection up 0.5 s after their PING, not 5 s."""
    monkeypatch.setattr(poolhttp._async.http2, "PING_TIMEOUT", 0.5)
    monkeypatch.setattr(poolhttp._sync.http2, "PING_TIMEOUT", 0.5)
    return 0.5


# -- GOAWAY ---------------------------------------------------------------------------------


@TLS_MODES
async def test_goaway_completes_lower_streams_and_resends_higher_ones_on_one_connection(
        h2server: H2Factory, tls: bool) -> None:
    """Deterministic: the GOAWAY request and the two after it go out in one loop iteration,
    so the server receives C and D above its last_stream_id and ignores them."""
    server = h2server(tls=tls)
    async with poolhttp.AsyncClient(**h2_options(server)) as client:
        await client.get(server.url("/echo"))
        a = asyncio.ensure_future(client.get(server.url("/delay/500?a")))
        b = asyncio.ensure_future(client.get(server.url("/delay/500?b")))
        await server.wait_for_async(lambda s: len(s.requests) == 3)
        body = b"not processed yet" * 1000
        g = asyncio.ensure_future(client.get(server.url("/goaway/200")))
        c = asyncio.ensure_future(client.get(server.url("/echo?c")))
        d = asyncio.ensure_future(client.post(server.url("/echo?d"), content=body))
        c_response, d_response = await asyncio.wait_for(asyncio.gather(c, d), 5)
        # Resent at once on a new connection, while the old one still finishes A, B, G.
        assert not a.done()
        assert not b.done()
        assert not g.done()
        f_response = await client.get(server.url("/echo?f"))  # not to the draining one
        responses = await asyncio.wait_for(asyncio.gather(a, b, g), 5)
        e_response = await client.get(server.url("/echo?e"))
        assert client.stats().retries == 2  # C and D, once each
    for response, path in zip(responses, ["/delay/500?a", "/delay/500?b", "/goaway/200"],
                              strict=True):
        assert response.status_code == 200
        assert (response.headers["x-conn"], response.headers["x-stream"]) == tuple(
            map(str, stream_of(server, path)))
    goaway_stream = stream_of(server, "/goaway/200")[1]
    for response, path in [(c_response, "/echo?c"), (d_response, "/echo?d"),
                           (f_response, "/echo?f"), (e_response, "/echo?e")]:
        assert response.status_code == 200
        assert response.headers["x-conn"] == "2"
        assert stream_of(server, path)[0] == 2
    assert body_json(d_response)["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert server.accepted == 2
    # The server never saw a stream above its last_stream_id on the first connection.
    assert max(r.stream for r in server.requests if r.conn == 1) == goaway_stream


@TLS_MODES
def test_goaway_with_streams_in_flight(client_kind: str, h2server: H2Factory,
                                       tls: bool) -> None:
    server = h2server(tls=tls)
    body = b"post body " * 500
    with make_client(client_kind, **h2_options(server)) as client, \
            ThreadPoolExecutor(8) as pool:
        client.get(server.url("/echo"))
        in_flight = [pool.submit(client.get, server.url(f"/delay/600?{n}")) for n in range(3)]
        server.wait_for(lambda s: len(s.requests) == 4)
        g = pool.submit(client.get, server.url("/goaway/300"))
        later = [pool.submit(client.get, server.url("/echo?c")),
                 pool.submit(client.post, server.url("/echo?d"), content=body)]
        c_response, d_response = _results(later)
        # Whether C and D went out before the GOAWAY reached the client (then the server
        # ignored them and they were resent) or after (then they went to a new connection
        # at once), they are served by the second connection, not the draining one.
        retries = client.stats().retries
        assert not g.done()
        f_response = client.get(server.url("/echo?f"))
        assert client.stats().retries == retries  # the pool handed out the new connection
        done = _results([*in_flight, g])
        e_response = client.get(server.url("/echo?e"))
    for response in done:
        assert isinstance(response, poolhttp.Response), response
        assert response.status_code == 200
        assert response.headers["x-conn"] == "1"
    streams = [int(r.headers["x-stream"]) for r in done]
    assert len(set(streams)) == 4
    assert sorted(streams) == sorted(r.stream for r in server.requests if r.conn == 1)[1:]
    for response in (c_response, d_response, f_response, e_response):
        assert isinstance(response, poolhttp.Response), response
        assert response.status_code == 200
        assert response.headers["x-conn"] == "2"
    assert body_json(d_response)["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert server.accepted == 2
    assert max(r.stream for r in server.requests if r.conn == 1) == int(g.result().headers[
        "x-stream"])


def test_goaway_error_fails_every_stream_and_the_next_request_reconnects(
        client_kind: str, h2server: H2Factory) -> None:
    server = h2server()
    with make_client(client_kind, **h2_options(server)) as client, \
            ThreadPoolExecutor(4) as pool:
        in_flight = [pool.submit(client.get, server.url(f"/delay/2000?{n}")) for n in range(2)]
        server.wait_for(lambda s: len(s.requests) == 2)
        with pytest.raises(poolhttp.RemoteProtocolError) as info:
            client.get(server.url("/goaway-error"))
        errors = _results(in_flight)
        started = time.monotonic()
        response = client.get(server.url("/echo"))
        assert time.monotonic() - started < 2.0
        assert client.stats().retries == 0  # nothing resent into a connection error
    for error in [info.value, *errors]:
        assert isinstance(error, poolhttp.RemoteProtocolError), error
        assert not isinstance(error, poolhttp.StreamReset)
        assert error.origin == server.origin
        assert server.origin in str(error)
        assert "PROTOCOL_ERROR" in str(error)
    assert response.status_code == 200
    assert response.headers["x-conn"] == "2"
    assert server.accepted == 2
    assert [r.path for r in server.requests].count("/goaway-error") == 1


# -- RST_STREAM -----------------------------------------------------------------------------


@pytest.mark.parametrize(("code", "name"), [(2, "INTERNAL_ERROR"), (11, "ENHANCE_YOUR_CALM"),
                                            (99, "0x63")])
def test_reset_fails_only_that_request(client_kind: str, h2server: H2Factory, code: int,
                                       name: str) -> None:
    server = h2server()
    with make_client(client_kind, **h2_options(server)) as client, \
            ThreadPoolExecutor(4) as pool:
        others = [pool.submit(client.get, server.url(f"/delay/300?{n}")) for n in range(2)]
        server.wait_for(lambda s: len(s.requests) == 2)
        with pytest.raises(poolhttp.StreamReset) as info:
            client.post(server.url(f"/reset/{code}"), content=b"x" * 100)
        responses = _results(others)
        after = client.get(server.url("/echo"))
    error = info.value
    assert (error.error_code, error.error_name) == (code, name)
    assert error.processed
    assert error.stream_id == stream_of(server, f"/reset/{code}")[1]
    assert error.origin == server.origin
    assert name in str(error)
    for response in [*responses, after]:
        assert isinstance(response, poolhttp.Response), response
        assert response.status_code == 200
        assert response.headers["x-conn"] == "1"
    assert server.accepted == 1
    assert server.resets_received == []


class _RefuseOnce(h2server_module._Connection):
    """/refuse-once/TAG: REFUSED_STREAM the first time a TAG is seen, then /echo."""

    def _on_request(self, event: RequestReceived) -> None:
        refused: set[bytes] = self.server.__dict__.setdefault("refused_once", set())
        headers = list(event.headers or [])
        for index, (name, value) in enumerate(headers):
            if name == b":path" and value.startswith(b"/refuse-once/"):
                if value not in refused:
                    refused.add(value)
                    headers[index] = (name, b"/reset/7")
                else:
                    headers[index] = (name, b"/echo?" + value)
                event.headers = headers
        super()._on_request(event)


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_refused_stream_is_resent_at_once_on_the_same_connection(
        client_kind: str, h2server: H2Factory, monkeypatch: pytest.MonkeyPatch,
        method: str) -> None:
    monkeypatch.setattr(h2server_module, "_Connection", _RefuseOnce)
    server = h2server()
    body = b"resent whole" * 100 if method == "POST" else None
    with make_client(client_kind, **h2_options(server)) as client:
        client.get(server.url("/echo"))
        response = client.request(method, server.url("/refuse-once/1"), content=body)
        assert client.stats().retries == 1
    assert response.status_code == 200
    echoed = body_json(response)
    assert echoed["method"] == method
    assert echoed["body_length"] == (len(body) if body else 0)
    assert [r.path for r in server.requests] == ["/echo", "/reset/7", "/echo?/refuse-once/1"]
    assert response.headers["x-conn"] == "1"
    assert server.accepted == 1


def test_a_server_that_always_refuses_is_resent_a_bounded_number_of_times(
        client_kind: str, h2server: H2Factory) -> None:
    server = h2server()
    with make_client(client_kind, **h2_options(server)) as client:
        with pytest.raises(poolhttp.RetryError) as info:
            client.post(server.url("/reset/7"), content=b"body")
        assert client.get(server.url("/echo")).headers["x-conn"] == "1"
    errors = info.value.errors
    assert len(errors) == 4  # the first attempt and UNPROCESSED_RESENDS resends
    for error in errors:
        assert isinstance(error, poolhttp.StreamReset)
        assert (error.error_code, error.error_name, error.processed) == (7, "REFUSED_STREAM",
                                                                       False)
    assert [r.path for r in server.requests].count("/reset/7") == 4
    assert server.accepted == 1


def test_reset_after_headers_fails_the_body_read(client_kind: str, h2server: H2Factory) -> None:
    server = h2server()
    received = bytearray()
    with make_client(client_kind, **h2_options(server)) as client:
        with client.stream("GET", server.url("/reset-after-headers/2")) as response:
            assert response.status_code == 200
            with pytest.raises(poolhttp.StreamReset) as info:
                _read_into(received, response)
        assert client.get(server.url("/echo")).headers["x-conn"] == "1"
    assert (info.value.error_code, info.value.error_name) == (2, "INTERNAL_ERROR")
    assert info.value.origin == server.origin
    assert bytes(received) == pattern_body(len(received))
    assert len(received) <= 1000
    assert server.accepted == 1
    assert server.resets_received == []  # the server reset it: nothing to cancel


# -- cancellation and time-outs ---------------------------------------------------------------


@TLS_MODES
async def test_cancelled_task_resets_its_stream_and_keeps_the_connection(
        h2server: H2Factory, tls: bool) -> None:
    server = h2server(tls=tls)
    async with poolhttp.AsyncClient(**h2_options(server)) as client:
        await client.get(server.url("/echo"))
        other = asyncio.ensure_future(client.get(server.url("/delay/300")))
        doomed = asyncio.ensure_future(client.get(server.url("/delay/2000")))
        await server.wait_for_async(lambda s: len(s.requests) == 3)
        doomed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await doomed
        await server.wait_for_async(lambda s: len(s.resets_received) == 1)
        assert server.resets_received == [(*stream_of(server, "/delay/2000"), CANCEL)]
        response = await asyncio.wait_for(other, 5)
        assert response.status_code == 200
        assert response.headers["x-conn"] == "1"
        after = await client.get(server.url("/echo"))
        assert after.headers["x-conn"] == "1"
        assert client.stats().connections == 1
    assert server.accepted == 1


def test_read_timeout_resets_the_stream_pings_and_keeps_a_live_connection(
        client_kind: str, h2server: H2Factory, short_ping: float) -> None:
    server = h2server()
    with make_client(client_kind, **h2_options(server)) as client, \
            ThreadPoolExecutor(2) as pool:
        client.get(server.url("/echo"))
        other = pool.submit(client.get, server.url("/delay/600"))
        server.wait_for(lambda s: len(s.requests) == 2)
        started = time.monotonic()
        with pytest.raises(poolhttp.ReadTimeout) as info:
            client.get(server.url("/delay/2000"), timeout=poolhttp.Timeout(5.0, read=0.3))
        assert 0.3 <= time.monotonic() - started < 1.5
        server.wait_for(lambda s: len(s.resets_received) == 1 and s.pings_received >= 1)
        assert server.resets_received == [(*stream_of(server, "/delay/2000"), CANCEL)]
        response = other.result(5)
        time.sleep(short_ping + 0.3)  # the PING was answered: the connection lives on
        after = client.get(server.url("/echo"))
    assert info.value.timeout == 0.3
    assert info.value.origin == server.origin
    assert response.status_code == 200
    assert response.headers["x-conn"] == after.headers["x-conn"] == "1"
    assert server.accepted == 1


@TLS_MODES
def test_a_stream_closed_early_is_reset_and_its_connection_reused(
        client_kind: str, h2server: H2Factory, tls: bool) -> None:
    server = h2server(tls=tls)
    with make_client(client_kind, **h2_options(server)) as client:
        with client.stream("GET", server.url("/bytes/5000000")) as response:
            for chunk in response.iter_bytes():
                assert chunk == pattern_body(len(chunk))
                break
        server.wait_for(lambda s: len(s.resets_received) == 1)
        assert server.resets_received == [(1, 1, CANCEL)]
        # The connection window is whole again: what the server sent meanwhile was handed
        # back, so a download larger than a stream window goes through.
        for _ in range(3):
            again = client.get(server.url("/bytes/2000000"))
            assert again.content == pattern_body(2_000_000)
            assert again.headers["x-conn"] == "1"
    assert server.accepted == 1


class _HeadThenStall(h2server_module._Connection):
    """/head-then-stall: the response head at once, then nothing on that stream."""

    async def _route(self, stream: Any, name: str, number: int) -> None:
        if stream.route != "/head-then-stall":
            await super()._route(stream, name, number)
            return
        self._headers(stream, 200, [("content-type", "text/plain")], None)
        await asyncio.sleep(30)  # cancelled by the client's RST_STREAM


def test_a_streamed_body_read_timeout_resets_the_stream_and_keeps_the_connection(
        client_kind: str, h2server: H2Factory, monkeypatch: pytest.MonkeyPatch,
        short_ping: float) -> None:
    monkeypatch.setattr(h2server_module, "_Connection", _HeadThenStall)
    server = h2server()
    with make_client(client_kind, **h2_options(server)) as client:
        with client.stream("GET", server.url("/head-then-stall"),
                           timeout=poolhttp.Timeout(5.0, read=0.3)) as response:
            assert response.status_code == 200
            started = time.monotonic()
            with pytest.raises(poolhttp.ReadTimeout):
                response.read()
            assert time.monotonic() - started < 1.5
        # At once: the reset goes out with the time-out, and the PING after it is answered.
        server.wait_for(lambda s: len(s.resets_received) == 1 and s.pings_received == 1,
                        timeout=short_ping / 2)
        assert server.resets_received == [(1, 1, CANCEL)]
        time.sleep(short_ping + 0.3)
        after = client.get(server.url("/echo"))
        assert after.headers["x-conn"] == "1"
        assert client.stats().connections == 1
    assert server.accepted == 1


# -- flow control ---------------------------------------------------------------------------


@TLS_MODES
def test_large_download_arrives_whole(client_kind: str, h2server: H2Factory, tls: bool) -> None:
    server = h2server(tls=tls)
    with make_client(client_kind, **h2_options(server)) as client:
        response = client.get(server.url("/bytes/5000000"))
        with client.stream("GET", server.url("/bytes/3000000")) as streamed:
            parts = list(streamed.iter_bytes())
    assert response.status_code == 200
    assert response.content == pattern_body(5_000_000)
    assert b"".join(parts) == pattern_body(3_000_000)
    assert server.accepted == 1


@TLS_MODES
def test_large_upload_against_the_default_window(client_kind: str, h2server: H2Factory,
                                                 tls: bool) -> None:
    server = h2server(tls=tls)
    body = bytes(range(256)) * (3_000_000 // 256 + 1)
    with make_client(client_kind, **h2_options(server)) as client, \
            ThreadPoolExecutor(2) as pool:
        uploads = [pool.submit(client.post, server.url(f"/echo?{n}"), content=body)
                   for n in range(2)]
        for response in _results(uploads):
            assert isinstance(response, poolhttp.Response), response
            echoed = body_json(response)
            assert echoed["body_length"] == len(body)
            assert echoed["body_sha256"] == hashlib.sha256(body).hexdigest()
        streamed = client.post(server.url("/echo?streamed"),
                               content=iter([body[:1_000_000], body[1_000_000:]]))
        assert body_json(streamed)["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert server.accepted == 1


def test_upload_waits_for_a_window_opened_late(client_kind: str, h2server: H2Factory) -> None:
    server = h2server(initial_window_size=0)
    body = b"late window " * 20_000
    with make_client(client_kind, **h2_options(server)) as client:
        started = time.monotonic()
        response = client.post(server.url("/window-late/300"), content=body)
        waited = time.monotonic() - started
        small = client.post(server.url("/echo"), content=b"small")
    assert response.status_code == 200
    assert body_json(response)["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert waited >= 0.3
    assert body_json(small)["body_length"] == 5
    assert server.accepted == 1


def test_a_slow_reader_does_not_stall_other_streams(client_kind: str,
                                                    h2server: H2Factory) -> None:
    server = h2server()
    with make_client(client_kind, **h2_options(server)) as client, \
            ThreadPoolExecutor(1) as pool:
        client.get(server.url("/echo"))
        with client.stream("GET", server.url("/bytes/10000000")) as slow:
            chunks = slow.iter_bytes()
            first = next(chunks)
            started = time.monotonic()
            other = pool.submit(client.get, server.url("/bytes/3000000"))
            while not other.done() and time.monotonic() - started < 5:
                next(chunks)
                time.sleep(0.02)
            response = other.result(1)
            took = time.monotonic() - started
            chunks.close()
    assert first == pattern_body(len(first))
    assert response.content == pattern_body(3_000_000)
    assert response.headers["x-conn"] == "1"
    assert took < 2.0, f"the other download took {took:.2f}s behind a slow reader"
    assert server.accepted == 1


# -- SETTINGS -------------------------------------------------------------------------------


@pytest.mark.parametrize("max_connections", [1, 10])
def test_settings_lowering_and_raising_the_stream_limit(
        client_kind: str, h2server: H2Factory, max_connections: int) -> None:
    # Connections allow 4 streams each; the first one is lowered to 1, then raised to 5.
    server = h2server(max_concurrent_streams=4)
    limits = poolhttp.Limits(max_connections=max_connections)
    with make_client(client_kind, **h2_options(server, limits=limits)) as client, \
            ThreadPoolExecutor(24) as pool:
        in_flight = [pool.submit(client.get, server.url(f"/delay/300?{n}")) for n in range(3)]
        server.wait_for(lambda s: len(s.requests) == 3)
        lowered = client.get(server.url("/settings/1"))
        burst = [pool.submit(client.get, server.url(f"/delay/20?{n}")) for n in range(20)]
        responses = _results([*in_flight, *burst])
        seen_lowered = server.max_concurrent_streams_seen
        on_first = [r for r in server.requests if r.conn == 1]
        raised = client.get(server.url("/settings/5"))
        assert raised.headers["x-conn"] == "1"
        burst = [pool.submit(client.get, server.url(f"/delay/100?again{n}")) for n in range(20)]
        more = _results(burst)
    for response in [lowered, *responses, *more]:
        assert isinstance(response, poolhttp.Response), response
        assert response.status_code == 200
    assert lowered.headers["x-conn"] == "1"
    # The three in flight and /settings/1 itself: never more than that at once on the first
    # connection (the server's h2 fails a stream over its limit: a protocol error), 4 on others.
    assert seen_lowered <= 4
    if max_connections == 1:
        assert server.accepted == 1
        assert len(on_first) == 24  # all queued for the one connection
        # Raised to 5: several at once again, never more than 5.
        assert 2 <= server.max_concurrent_streams_seen <= 5
    else:
        # Others went to new connections (which allow 100 each) rather than waiting.
        assert server.accepted >= 2


class _LowerAfter(h2server_module._Connection):
    """/lower-after/MS: MS ms after the request, its response and a SETTINGS frame lowering
    MAX_CONCURRENT_STREAMS to 1, in one write (so the client reads the stream's end, which
    frees a slot, and the lower limit together)."""

    async def _route(self, stream: Any, name: str, number: int) -> None:
        if not stream.route.startswith("/lower-after/"):
            await super()._route(stream, name, number)
            return
        await stream.ended.wait()
        await asyncio.sleep(int(stream.route.rsplit("/", 1)[1]) / 1000)
        self.h2.send_headers(stream.id, [(b":status", b"200"), (b"x-conn", b"%d" % self.number),
                                         (b"x-stream", b"%d" % stream.id)])
        self.h2.send_data(stream.id, b"lowered", end_stream=True)
        self.h2.update_settings({SettingCodes.MAX_CONCURRENT_STREAMS: 1})
        self.flush()


def test_a_slot_handed_out_just_before_the_limit_is_lowered_is_resent(
        client_kind: str, h2server: H2Factory, monkeypatch: pytest.MonkeyPatch) -> None:
    """C waits for a slot; B's end gives it one, and the SETTINGS that arrive with it take
    it away again (A is still open): h2 refuses to open C's stream. Nothing was sent, so
    C is resent (it used to fail: a WriteError, or h2's own TooManyStreamsError and a
    slot lost for good in the threaded driver)."""
    monkeypatch.setattr(h2server_module, "_Connection", _LowerAfter)
    server = h2server(max_concurrent_streams=2)
    limits = poolhttp.Limits(max_connections=1)
    with make_client(client_kind, **h2_options(server, limits=limits)) as client, \
            ThreadPoolExecutor(3) as pool:
        a = pool.submit(client.get, server.url("/delay/800"))
        b = pool.submit(client.get, server.url("/lower-after/300"))
        server.wait_for(lambda s: len(s.requests) == 2)
        c = client.get(server.url("/echo?c"))  # waits: one connection, two streams
        assert client.stats().retries == 1
        responses = _results([a, b])
        again = [client.get(server.url("/echo")) for _ in range(3)]
    for response in [c, *responses, *again]:
        assert isinstance(response, poolhttp.Response), response
        assert response.status_code == 200
        assert response.headers["x-conn"] == "1"
    assert responses[1].content == b"lowered"
    # C went out once, after A ended (the limit is 1 now).
    assert [r.path for r in server.requests].count("/echo?c") == 1
    assert server.max_concurrent_streams_seen == 2
    assert server.accepted == 1


# -- a silent server ------------------------------------------------------------------------


def test_a_muted_connection_is_pinged_then_given_up(client_kind: str, h2server: H2Factory,
                                                    short_ping: float) -> None:
    server = h2server()
    with make_client(client_kind, **h2_options(server)) as client:
        client.get(server.url("/echo"))
        started = time.monotonic()
        with pytest.raises(poolhttp.ReadTimeout) as info:
            client.get(server.url("/mute"), timeout=poolhttp.Timeout(5.0, read=0.3))
        assert time.monotonic() - started < 1.5
        server.wait_for(lambda s: s.pings_received >= 1)
        # No PING ack: the client gives the connection up, closing it.
        server.wait_for(lambda s: s.open_connections == 0, timeout=short_ping + 2)
        response = client.get(server.url("/echo"))
    assert info.value.timeout == 0.3
    assert response.headers["x-conn"] == "2"
    assert server.accepted == 2


def test_a_server_muted_altogether_fails_every_stream_then_recovers(
        client_kind: str, h2server: H2Factory, short_ping: float) -> None:
    server = h2server()
    with make_client(client_kind, **h2_options(server)) as client, \
            ThreadPoolExecutor(1) as pool:
        client.get(server.url("/echo"))
        server.mute_all()
        patient = pool.submit(client.get, server.url("/echo?patient"))
        server.wait_for(lambda s: len(s.requests) == 2)
        with pytest.raises(poolhttp.ReadTimeout):
            client.get(server.url("/echo?impatient"), timeout=poolhttp.Timeout(5.0, read=0.3))
        started = time.monotonic()
        (error,) = _results([patient])
        assert time.monotonic() - started < short_ping + 1.0
        server.wait_for(lambda s: s.open_connections == 0 and s.pings_received >= 1)
        server.mute_all(False)
        response = client.get(server.url("/echo"))
    # The request without a time-out of its own fails when the connection is found dead.
    assert isinstance(error, poolhttp.ReadTimeout), error
    assert "PING" in str(error)
    assert error.origin == server.origin
    assert response.headers["x-conn"] == "2"
    assert server.accepted == 2


# -- garbage on the wire --------------------------------------------------------------------


@TLS_MODES
def test_malformed_frame_fails_every_stream_and_the_next_request_reconnects(
        client_kind: str, h2server: H2Factory, tls: bool) -> None:
    server = h2server(tls=tls)
    with make_client(client_kind, **h2_options(server)) as client, \
            ThreadPoolExecutor(2) as pool:
        in_flight = [pool.submit(client.get, server.url(f"/delay/2000?{n}")) for n in range(2)]
        server.wait_for(lambda s: len(s.requests) == 2)
        with pytest.raises(poolhttp.RemoteProtocolError) as info:
            client.get(server.url("/malformed"))
        errors = [info.value, *_results(in_flight)]
        response = client.get(server.url("/echo"))
    for error in errors:
        assert isinstance(error, poolhttp.RemoteProtocolError), error
        assert error.origin == server.origin
        assert server.origin in str(error)
    assert response.status_code == 200
    assert response.headers["x-conn"] == "2"
    assert server.accepted == 2


def test_h2server_fixture_reports_what_it_served(h2server: H2Factory) -> None:
    """The harness itself: counters start at zero, a TLS server offers h2 only."""
    server: H2Server = h2server(tls=True)
    assert (server.accepted, server.requests, server.protocol_errors) == (0, [], [])
    assert server.origin.startswith("https://127.0.0.1:")
