"""Time-outs, hostile servers and retries, through both clients, against scripted faults."""

from __future__ import annotations

import time

import pytest

import poolhttp
from tests.integration.clients import make_client
from tests.support.scripted import (
    Reply,
    ServerFactory,
    blackhole_listener,
    echo_handler,
    in_sequence,
    refusing_port,
)

# -- time-outs ----------------------------------------------------------------------------------


def test_connect_timeout_against_a_listener_that_never_accepts(client_kind: str) -> None:
    with blackhole_listener() as hole, make_client(client_kind) as client:
        started = time.monotonic()
        with pytest.raises(poolhttp.ConnectTimeout) as info:
            client.get(hole.url(), timeout=poolhttp.Timeout(5.0, connect=0.3))
        waited = time.monotonic() - started
        assert client.stats().connections == 0
    assert 0.3 <= waited < 1.5
    assert "connect time-out" in str(info.value)
    assert isinstance(info.value, TimeoutError)


def test_one_requests_total_time_out_does_not_fail_another_requests_connect() -> None:
    """Threads: B waits for its own connect, A's connect is cut short by A's total time-out.
    A's failure used to go to the oldest waiter of the origin, B, with A's limits in it."""
    import threading
    with blackhole_listener() as hole, poolhttp.Client(
            limits=poolhttp.Limits(max_connections=2)) as client:
        errors: dict[str, BaseException] = {}

        def request(name: str, timeout: poolhttp.Timeout) -> None:
            try:
                client.get(hole.url(), timeout=timeout)
            except poolhttp.HTTPError as exc:
                errors[name] = exc

        b = threading.Thread(target=request, args=("b", poolhttp.Timeout(5.0, connect=1.0)))
        b.start()
        time.sleep(0.1)  # B is the oldest waiter, dialling its own connection
        request("a", poolhttp.Timeout(5.0, total=0.2))
        b.join(10)
        assert client.stats().connections == 0
    assert isinstance(errors["a"], poolhttp.TotalTimeout)
    assert isinstance(errors["b"], poolhttp.ConnectTimeout)
    assert "within 1s" in str(errors["b"])  # B's own connect time-out, not A's


async def test_one_requests_total_time_out_does_not_fail_another_requests_connect_async(
        ) -> None:
    import asyncio
    with blackhole_listener() as hole:
        async with poolhttp.AsyncClient(limits=poolhttp.Limits(max_connections=2)) as client:
            b = asyncio.ensure_future(client.get(hole.url(),
                                                 timeout=poolhttp.Timeout(5.0, connect=1.0)))
            await asyncio.sleep(0.1)
            with pytest.raises(poolhttp.TotalTimeout):
                await client.get(hole.url(), timeout=poolhttp.Timeout(5.0, total=0.2))
            with pytest.raises(poolhttp.ConnectTimeout, match="within 1s"):
                await b


def test_read_timeout_is_silence_between_bytes_not_a_body_cap(
        client_kind: str, scripted_server: ServerFactory) -> None:
    body = b"slow but steady"
    server = scripted_server(in_sequence(Reply.ok(body).dripped(0.02), Reply.stall()))
    with make_client(client_kind, timeout=poolhttp.Timeout(5.0, read=0.3)) as client:
        started = time.monotonic()
        assert client.get(server.url()).content == body  # ~100 bytes over ~2 s: fine
        assert time.monotonic() - started > 0.6
        started = time.monotonic()
        with pytest.raises(poolhttp.ReadTimeout) as info:
            client.get(server.url())
        waited = time.monotonic() - started
        assert client.stats().connections == 0  # a timed-out connection is discarded
    assert 0.3 <= waited < 1.5
    assert info.value.timeout == 0.3


def test_total_timeout_cuts_off_a_server_that_drips_forever(client_kind: str,
                                                            scripted_server: ServerFactory) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n"
    server = scripted_server(lambda request: Reply.raw(head + b"x" * 100_000).dripped(0.05))
    with make_client(client_kind, timeout=poolhttp.Timeout(5.0, total=1.0)) as client:
        started = time.monotonic()
        with pytest.raises(poolhttp.TotalTimeout):
            client.get(server.url())
        waited = time.monotonic() - started
        assert client.stats().connections == 0
    assert 1.0 <= waited < 2.0


def test_write_timeout_when_the_server_never_reads(
        client_kind: str, scripted_server: ServerFactory) -> None:
    server = scripted_server(on_accept="deaf")
    with make_client(client_kind, timeout=poolhttp.Timeout(5.0, write=0.3)) as client:
        started = time.monotonic()
        with pytest.raises(poolhttp.WriteTimeout) as info:
            client.post(server.url(), content=b"x" * (64 << 20))
        waited = time.monotonic() - started
        assert client.stats().connections == 0
    assert waited < 3.0
    assert "write time-out" in str(info.value)


# -- hostile servers ------------------------------------------------------------------------

MALFORMED = [
    ("invalid-status-line", b"HTTP/1.1 OK\r\n\r\n", poolhttp.RemoteProtocolError),
    ("header-without-colon", b"HTTP/1.1 200 OK\r\nBroken\r\nContent-Length: 0\r\n\r\n",
     poolhttp.RemoteProtocolError),
    ("huge-headers", b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70_000 + b"\r\n\r\n",
     poolhttp.RemoteProtocolError),
    ("too-many-headers", b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 200 + b"\r\n",
     poolhttp.RemoteProtocolError),
    ("invalid-chunk-size", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n",
     poolhttp.RemoteProtocolError),
    ("cl-and-te", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
     poolhttp.RemoteProtocolError),
    ("conflicting-lengths", b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
     poolhttp.RemoteProtocolError),
    ("endless-1xx", b"HTTP/1.1 100 Continue\r\n\r\n" * 100, poolhttp.RemoteProtocolError),
    ("extra-bytes-after-response", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokGARBAGE",
     poolhttp.RemoteProtocolError),
]


@pytest.mark.parametrize(("name", "data", "error"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_responses_raise_typed_errors_and_discard_the_connection(
        client_kind: str, scripted_server: ServerFactory, name: str, data: bytes,
        error: type[Exception]) -> None:
    server = scripted_server(in_sequence(Reply.raw(data).stall_after(), Reply.ok(b"fine")))
    with make_client(client_kind) as client:
        with pytest.raises(error) as info:
            client.get(server.url())
        assert client.stats().connections == 0
        assert client.get(server.url()).content == b"fine"
    assert server.accepted == 2
    assert server.origin in str(info.value)


def test_body_shorter_than_content_length(client_kind: str, scripted_server: ServerFactory) -> None:
    server = scripted_server(in_sequence(Reply.close_mid_body(b"x" * 1000, 10),
                                         Reply.reset_mid_body(b"y" * 1000, 10)))
    with make_client(client_kind) as client:
        with pytest.raises(poolhttp.RemoteProtocolError, match="before the end of the body"):
            client.get(server.url())
        with pytest.raises(poolhttp.ReadError):
            client.get(server.url())


def test_bytes_after_a_response_never_reach_the_next_request(
        client_kind: str, scripted_server: ServerFactory) -> None:
    """Extra bytes that arrive with the response fail it (the stream is out of step); bytes
    that arrive after it was handed over discard the idle connection. Never is the smuggled
    'response' given to the next request."""
    smuggled = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nsmug"
    server = scripted_server(in_sequence(Reply.ok(b"one").send_after_response(smuggled),
                                         Reply.ok(b"two")))
    with make_client(client_kind) as client:
        try:
            first = client.get(server.url()).content
        except poolhttp.RemoteProtocolError as exc:
            first = str(exc).encode()
        time.sleep(0.2)
        second = client.get(server.url()).content
        assert client.stats().reused == 0
    assert first == b"one" or b"after the end of the response" in first
    assert second == b"two"
    assert server.accepted == 2


# -- the keep-alive race ----------------------------------------------------------------------


@pytest.mark.parametrize("ending", ["fin", "rst"])
def test_idempotent_request_meeting_a_closed_reused_connection_is_resent_once(
        client_kind: str, scripted_server: ServerFactory, ending: str) -> None:
    dropped = Reply.close_without_response() if ending == "fin" else Reply.reset()
    server = scripted_server(in_sequence(Reply.ok(b"one"), dropped, Reply.ok(b"three")))
    with make_client(client_kind) as client:
        assert client.get(server.url()).content == b"one"
        assert client.get(server.url()).content == b"three"
        stats = client.stats()
    assert stats.retries == 1
    assert server.accepted == 2  # resent on a fresh connection
    assert [r.connection_index for r in server.received] == [0, 0, 1]


def test_post_meeting_a_closed_reused_connection_is_not_resent(
        client_kind: str, scripted_server: ServerFactory) -> None:
    server = scripted_server(in_sequence(Reply.ok(b"one"), Reply.close_without_response(),
                                         Reply.ok(b"three")))
    with make_client(client_kind) as client:
        client.get(server.url())
        with pytest.raises(poolhttp.StaleConnectionError) as info:
            client.post(server.url(), json={"charge": 100})
        assert client.stats().retries == 0
    assert server.requests == 2  # the POST reached the server once and was never resent
    assert "may or may not have processed it" in str(info.value)
    assert isinstance(info.value, poolhttp.ServerDisconnected)


def test_post_with_idempotency_key_is_resent(
        client_kind: str, scripted_server: ServerFactory) -> None:
    server = scripted_server(in_sequence(Reply.ok(b"one"), Reply.close_without_response(),
                                         Reply.ok(b"three")))
    with make_client(client_kind) as client:
        client.get(server.url())
        response = client.post(server.url(), json={}, headers={"Idempotency-Key": "k-1"})
    assert response.content == b"three"
    assert [r.method for r in server.received] == ["GET", "POST", "POST"]


def test_failure_on_a_fresh_connection_is_not_retried_by_default(
        client_kind: str, scripted_server: ServerFactory) -> None:
    server = scripted_server(in_sequence(Reply.close_without_response(), Reply.ok(b"two")))
    with make_client(client_kind) as client, pytest.raises(poolhttp.ServerDisconnected) as info:
        client.get(server.url())
    assert not info.value.reused
    assert server.requests == 1


@pytest.mark.parametrize("ending", ["fin", "rst"])
def test_keep_alive_race_sweep_has_no_failures(client_kind: str, scripted_server: ServerFactory,
                                               ending: str) -> None:
    """Gaps around the server's idle time-out: each request either finds the connection
    alive, finds it closed before use, or meets the close in flight and is resent."""
    server = scripted_server(echo_handler, idle_close_ms=100, idle_close_with=ending)
    gaps = [0.080, 0.090, 0.095, 0.098, 0.100, 0.102, 0.105, 0.110, 0.120] * 3
    failures: list[BaseException] = []
    # A long client-side expiry so the race is the server's to lose, not avoided by us.
    with make_client(client_kind, limits=poolhttp.Limits(keepalive_expiry=60)) as client:
        client.get(server.url())
        for gap in gaps:
            time.sleep(gap)
            try:
                assert client.get(server.url()).status_code == 200
            except poolhttp.HTTPError as exc:
                failures.append(exc)
    assert failures == []
    assert server.requests >= len(gaps) + 1


# -- the Retry policy -----------------------------------------------------------------------


def test_connect_retries_then_retry_error_with_every_attempt(client_kind: str) -> None:
    retry = poolhttp.Retry(total=2, backoff_factor=0.05, jitter=0)
    with refusing_port() as port, make_client(client_kind, retries=retry) as client:
        started = time.monotonic()
        with pytest.raises(poolhttp.RetryError) as info:
            client.get(port.url())
        waited = time.monotonic() - started
        assert client.stats().retries == 2
    assert len(info.value.errors) == 3
    assert all(isinstance(e, poolhttp.ConnectError) for e in info.value.errors)
    assert waited >= 0.05 + 0.1  # backoff 0.05 then 0.1


def test_status_retry_honours_retry_after(client_kind: str, scripted_server: ServerFactory) -> None:
    server = scripted_server(in_sequence(
        Reply.ok(b"busy", status=503, headers=[("Retry-After", "1")]), Reply.ok(b"ok")))
    with make_client(client_kind, retries=poolhttp.Retry(total=3, backoff_factor=0)) as client:
        started = time.monotonic()
        response = client.get(server.url())
        waited = time.monotonic() - started
    assert response.content == b"ok"
    assert 1.0 <= waited < 2.5


def test_status_retries_exhausted(client_kind: str, scripted_server: ServerFactory) -> None:
    server = scripted_server(lambda request: Reply.ok(b"busy", status=503))
    retry = poolhttp.Retry(total=2, backoff_factor=0, jitter=0)
    with make_client(client_kind, retries=retry) as client, \
            pytest.raises(poolhttp.RetryError, match="still answered 503 after 2 retries"):
        client.get(server.url())
    with make_client(client_kind, retries=retry.__class__(
            total=2, backoff_factor=0, jitter=0, raise_on_status=False)) as client:
        assert client.get(server.url()).status_code == 503
    assert server.requests == 6


def test_status_retries_exhausted_on_a_stream_release_the_connection(
        client_kind: str, scripted_server: ServerFactory) -> None:
    # The last 503 of a streamed request was left holding its connection when RetryError was
    # raised: the pool counted it active for ever, and closing the client waited on it.
    server = scripted_server(lambda request: Reply.ok(b"busy", status=503))
    retry = poolhttp.Retry(total=1, backoff_factor=0, jitter=0)
    with make_client(client_kind, retries=retry) as client:
        with pytest.raises(poolhttp.RetryError, match="still answered 503 after 1 retr"), \
                client.stream("GET", server.url()):
            pass
        stats = client.stats()
        assert stats.active == 0
        assert stats.connections == stats.idle + stats.connecting
    assert server.requests == 2


def test_post_is_never_resent_after_it_was_sent(
        client_kind: str, scripted_server: ServerFactory) -> None:
    server = scripted_server(in_sequence(Reply.reset_mid_body(), Reply.ok(b"ok")))
    retry = poolhttp.Retry(total=5, backoff_factor=0)
    with make_client(client_kind, retries=retry) as client:
        with pytest.raises(poolhttp.ReadError):
            client.post(server.url(), content=b"payment")
        assert client.stats().retries == 0
    assert server.requests == 1


def test_read_retry_for_idempotent_requests(
        client_kind: str, scripted_server: ServerFactory) -> None:
    server = scripted_server(in_sequence(Reply.reset_mid_body(), Reply.ok(b"ok")))
    with make_client(client_kind, retries=poolhttp.Retry(total=2, backoff_factor=0)) as client:
        assert client.get(server.url()).content == b"ok"
        assert client.stats().retries == 1


def test_retry_value_object() -> None:
    retry = poolhttp.Retry(total=3, connect=1, backoff_factor=0.5, backoff_max=1.0, jitter=0)
    used = retry.increment("connect")
    assert (retry.total, retry.connect) == (3, 1)  # unchanged: a new object came back
    assert (used.total, used.connect, used.history) == (2, 0, ("connect",))
    assert not used.allows("connect")
    assert used.allows("read")
    assert used.backoff(0.0) == 0.5
    assert used.increment("read").increment("read").backoff(0.0) == 1.0  # capped
    with pytest.raises(ValueError, match=r"Retry\.total must be >= 0"):
        poolhttp.Retry(total=-1)
    with pytest.raises(TypeError, match="retries must be"):
        poolhttp.Client(retries="3")  # type: ignore[arg-type]


