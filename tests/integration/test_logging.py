"""The `poolhttp` loggers: at DEBUG a connection's opening, reuse, waiting, closing and a
request's retries are told; above DEBUG nothing is, in normal operation."""

from __future__ import annotations

import logging
import re

import pytest

import poolhttp
from tests.integration.clients import make_client
from tests.support.nginx import Nginx
from tests.support.scripted import ServerFactory, echo_handler


def messages(caplog: pytest.LogCaptureFixture, logger: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger]


def test_debug_tells_opened_reused_and_closed(client_kind: str, nginx: Nginx,
                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="poolhttp")
    with make_client(client_kind) as client:
        for _ in range(3):
            assert client.get(nginx.url()).status_code == 200
    lines = messages(caplog, "poolhttp.connection")
    opened = [line for line in lines if line.startswith("opened")]
    assert len(opened) == 1
    assert re.fullmatch(r"opened connection #\d+ to http://127\.0\.0\.1:\d+ "
                        r"\(local port \d+, HTTP/1\.1\)", opened[0]), opened[0]
    reused = [line for line in lines if line.startswith("reusing")]
    assert [re.sub(r"#\d+", "#N", line) for line in reused] == [
        f"reusing connection #N to {nginx.origin()} (request {n} on it)" for n in (2, 3)]
    closed = [line for line in lines if line.startswith("closing")]
    assert len(closed) == 1
    assert closed[0].endswith("after 3 requests: the pool was closed")


def test_debug_tells_tls_version_and_resumption(client_kind: str, nginx: Nginx,
                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="poolhttp")
    with make_client(client_kind, verify=nginx.ca_path,
                     limits=poolhttp.Limits(max_keepalive_connections=0)) as client:
        for _ in range(2):
            assert client.get(nginx.https_url()).status_code == 200
    opened = [line for line in messages(caplog, "poolhttp.connection")
              if line.startswith("opened")]
    assert len(opened) == 2
    assert "TLSv1.3, full handshake, HTTP/1.1)" in opened[0]
    assert "TLSv1.3, resumed, HTTP/1.1)" in opened[1]


def test_debug_tells_waits_and_retries(client_kind: str, scripted_server: ServerFactory,
                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="poolhttp")
    server = scripted_server(echo_handler)
    with make_client(client_kind, retries=poolhttp.Retry(total=1, backoff_factor=0,
                                                         jitter=0)) as client:
        assert client.get(server.url()).status_code == 200
    waited = messages(caplog, "poolhttp.pool")
    assert len(waited) == 1
    assert re.fullmatch(
        rf"waited \d+\.\d{{3}} s for a connection to {re.escape(server.origin)} \(a new one\)",
        waited[0]), waited
    with make_client(client_kind, retries=poolhttp.Retry(total=1, backoff_factor=0,
                                                         jitter=0)) as client:
        caplog.clear()
        with pytest.raises(poolhttp.RetryError):
            client.get("http://127.0.0.1:9/")  # discard port: nothing listens
    retried = messages(caplog, "poolhttp.client")
    assert len(retried) == 1
    assert retried[0].startswith("retrying GET http://127.0.0.1:9 in 0.000 s (retry 1): "
                                 "cannot connect to http://127.0.0.1:9"), retried


def test_nothing_is_logged_above_debug(client_kind: str, nginx: Nginx,
                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="poolhttp")
    with make_client(client_kind, retries=1) as client:
        for _ in range(5):
            client.get(nginx.url())
        with pytest.raises(poolhttp.RetryError):
            client.get("http://127.0.0.1:9/")
    assert [r for r in caplog.records if r.name.startswith("poolhttp")] == []
