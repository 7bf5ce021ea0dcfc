"""Shared pieces of the HTTP/2 integration tests (test_http2_faults.py, test_http2_semantics.py):
client options for an `H2Server`, a server factory fixture that insists on a well-behaved
client, and a leak check run after every test (no fd left open, no `poolhttp-h2` reader
thread left alive once the client is closed). The fixtures are made available to the tests
by tests/integration/conftest.py; the HTTP/2 test modules use `h2_leak_check` for every
test (`pytestmark`)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import poolhttp
from tests.conftest import LOOP_KINDS
from tests.integration.clients import make_client
from tests.support import no_fd_leak
from tests.support.certs import CertBundle
from tests.support.h2server import H2Server

__all__ = ["TLS_MODES", "H2Factory", "body_json", "h2_leak_check", "h2_options", "h2server",
           "reader_threads", "stream_of"]

TLS_MODES = pytest.mark.parametrize("tls", [False, True], ids=["h2c", "tls"])

H2Factory = Callable[..., H2Server]


def h2_options(server: H2Server, **options: Any) -> dict[str, Any]:
    """Client options that speak HTTP/2 to `server`: ALPN h2 over TLS, else h2c with prior
    knowledge (`http1=False`)."""
    if server.tls:
        return {"http2": True, "verify": server.ca_path, **options}
    return {"http1": False, "http2": True, **options}


def body_json(response: poolhttp.Response) -> dict[str, Any]:
    value = json.loads(response.content)
    assert isinstance(value, dict)
    return value


def stream_of(server: H2Server, path: str) -> tuple[int, int]:
    """(connection, stream id) of the one request the server saw for `path`."""
    seen = [(r.conn, r.stream) for r in server.requests if r.path == path]
    assert len(seen) == 1, (path, seen)
    return seen[0]


def reader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "poolhttp-h2" and t.is_alive()]


@pytest.fixture
def h2server(certs: CertBundle) -> Iterator[H2Factory]:
    """`h2server(tls=False, **options)` starts an H2Server. After the test no reader thread
    may be left (the test closed its clients; checked before the servers close, since that
    ends the readers anyway); then every server is closed (H2ServerError if it failed
    internally) and must have seen no protocol error from the client: every scenario here
    is one a correct client handles cleanly."""
    servers: list[H2Server] = []

    def start(*, tls: bool = False, **options: Any) -> H2Server:
        server = H2Server(tls=tls, certs=certs if tls else None, **options)
        server.start()
        servers.append(server)
        return server

    yield start
    try:
        # Before the servers close (which would end the readers anyway): the test closed
        # its clients, so their reader threads must be gone.
        _wait_for_no_readers()
    finally:
        for server in servers:
            server.close()
    for server in servers:
        assert server.protocol_errors == []


_warmed_up: list[bool] = []


@pytest.fixture
def h2_leak_check() -> Iterator[None]:
    """No descriptor and no reader thread outlives a test (its clients and servers are
    closed by then). The first facade of each loop kind opens a few descriptors for good
    (uvloop opens /dev/null once): made once, before counting."""
    if not _warmed_up:
        for kind in LOOP_KINDS:
            make_client(kind).shutdown()
        _warmed_up.append(True)
    with no_fd_leak(timeout=3.0):
        yield
        _wait_for_no_readers()


def _wait_for_no_readers(timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while reader_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert reader_threads() == [], "poolhttp-h2 reader threads outlived their client"
