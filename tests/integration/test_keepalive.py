"""Keep-alive: reuse, expiry, and never handing out a connection the server closed."""

from __future__ import annotations

import json
import threading
import time

import pytest

import poolhttp
from tests.integration.clients import make_client
from tests.support.nginx import Nginx
from tests.support.scripted import ReceivedRequest, Reply, ServerFactory, echo_handler


def connection_of(response: poolhttp.Response) -> int:
    """Which server-side connection served the request (the echo handler reports it)."""
    return int(json.loads(response.content)["connection_index"])


def test_sequential_requests_share_one_connection(
        client_kind: str, scripted_server: ServerFactory) -> None:
    server = scripted_server(echo_handler)
    with make_client(client_kind) as client:
        indexes = {connection_of(client.get(server.url(f"/{i}"))) for i in range(20)}
        stats = client.stats()
    assert indexes == {0}
    assert server.accepted == 1
    assert (stats.created, stats.reused) == (1, 19)


def test_idle_connections_expire_and_the_next_request_opens_a_new_one(
        client_kind: str, scripted_server: ServerFactory) -> None:
    server = scripted_server(echo_handler)
    limits = poolhttp.Limits(keepalive_expiry=0.3)
    with make_client(client_kind, limits=limits) as client:
        assert connection_of(client.get(server.url())) == 0
        # Both pools close it on their own timer, with no request to prompt it.
        server.wait_for(lambda c: c.closed_by_client == 1, timeout=3)
        assert client.stats().connections == 0
        assert connection_of(client.get(server.url())) == 1
        server.wait_for(lambda c: c.closed_by_client == 1)
        stats = client.stats()
    assert server.accepted == 2
    assert (stats.created, stats.closed) == (2, 1)


def test_reuse_takes_the_most_recently_used_connection(client_kind: str,
                                                       scripted_server: ServerFactory) -> None:
    def handler(request: ReceivedRequest) -> Reply:
        reply = echo_handler(request)
        return reply.delay(0.2) if request.path == "/slow" else reply

    server = scripted_server(handler)
    with make_client(client_kind) as client:
        results: dict[str, int] = {}

        def fetch(path: str) -> None:
            results[path] = connection_of(client.get(server.url(path)))

        threads = [threading.Thread(target=fetch, args=(p,)) for p in ("/slow", "/fast")]
        for thread in threads:
            thread.start()
            time.sleep(0.05)  # /slow takes the first connection, /fast opens a second
        for thread in threads:
            thread.join(5)
        assert results["/slow"] != results["/fast"]
        # /slow finished last, so its connection is the most recently used: LIFO picks it.
        assert connection_of(client.get(server.url("/next"))) == results["/slow"]


def test_server_connection_close_is_honoured(
        client_kind: str, scripted_server: ServerFactory) -> None:
    server = scripted_server(lambda request: Reply.ok(b"bye", keep_alive=False))
    with make_client(client_kind) as client:
        for _ in range(5):
            assert client.get(server.url()).content == b"bye"
        stats = client.stats()
    assert server.accepted == 5
    assert stats.reused == 0
    assert stats.retries == 0
    assert stats.connections == 0


def test_keep_alive_timeout_from_the_server_is_honoured(client_kind: str,
                                                        scripted_server: ServerFactory) -> None:
    def handler(request: ReceivedRequest) -> Reply:
        return Reply.ok(b"ok", headers=[("Keep-Alive", "timeout=1, max=100")])

    server = scripted_server(handler)
    with make_client(client_kind) as client:
        client.get(server.url())
        time.sleep(0.1)
        client.get(server.url())
        assert server.accepted == 1  # well within the server's second: reused
        time.sleep(0.7)  # past our safety margin before the server's deadline
        client.get(server.url())
        assert server.accepted == 2


@pytest.mark.parametrize("how", ["fin", "rst"])
def test_idle_connection_closed_by_the_server_is_never_handed_out(
        client_kind: str, scripted_server: ServerFactory, how: str) -> None:
    server = scripted_server(echo_handler, idle_close_ms=100, idle_close_with=how)
    with make_client(client_kind) as client:
        assert connection_of(client.get(server.url())) == 0
        server.wait_for(lambda c: c.active == 0)
        time.sleep(0.05)
        assert connection_of(client.get(server.url())) == 1
        stats = client.stats()
    assert stats.retries == 0  # found dead before use, not after a failed attempt
    assert server.requests == 2


def test_streamed_response_read_to_the_end_releases_its_connection(
        client_kind: str, nginx: Nginx) -> None:
    with make_client(client_kind) as client:
        with client.stream("GET", nginx.url("/1m")) as response:
            data = b"".join(response.iter_bytes())
            # No explicit close yet: reaching the end gave the connection back.
            stats = client.stats()
            assert (stats.idle, stats.active) == (1, 0)
        assert data == nginx.file_bytes("1m")
        client.get(nginx.url("/"))
        assert client.stats().reused == 1


def test_streamed_response_closed_early_discards_its_connection(client_kind: str,
                                                                nginx: Nginx) -> None:
    before = nginx.server_stats()
    with make_client(client_kind) as client:
        with client.stream("GET", nginx.url("/1m")) as response:
            first = next(iter(response.iter_bytes()))
            assert first
        stats = client.stats()
        assert (stats.connections, stats.closed) == (0, 1)
        assert client.get(nginx.url("/")).status_code == 200
        assert client.stats().created == 2
    assert nginx.server_stats().since(before).accepted == 2


def test_the_sync_expiry_thread_lives_only_while_connections_are_idle(
        scripted_server: ServerFactory) -> None:
    """The blocking pool closes idle connections from a thread of its own: it runs only
    while some connection is idle, and is gone once the last one expired or the client
    closed (no thread outlives the client)."""
    server = scripted_server(echo_handler)

    def expiry_threads() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "poolhttp-expiry"]

    before = len(expiry_threads())
    with poolhttp.Client(limits=poolhttp.Limits(keepalive_expiry=0.2)) as client:
        client.get(server.url())
        assert len(expiry_threads()) == before + 1
        server.wait_for(lambda c: c.closed_by_client == 1, timeout=3)
        deadline = time.monotonic() + 3
        while len(expiry_threads()) > before:  # it exits once nothing is idle
            assert time.monotonic() < deadline, "the expiry thread did not exit"
            time.sleep(0.01)
        client.get(server.url())
        assert len(expiry_threads()) == before + 1
    assert len(expiry_threads()) == before  # close() stops and joins it
    assert server.accepted == 2
