"""Happy eyeballs (RFC 8305) through the clients: a name whose first address is blackholed
and whose second works is connected within the stagger delay plus one connect.

The scripted resolver is `socket.getaddrinfo`, replaced for the test: the blocking client and
asyncio's default resolver call it. uvloop resolves in libuv, which nothing here can script,
so the uvloop dialer is covered by tests/integration/test_dial.py on its own.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

import poolhttp
from tests.integration.clients import make_client
from tests.support.nginx import Nginx
from tests.support.scripted import Blackhole, blackhole_listener

NAME = "eyeballs.test"


@pytest.fixture
def hole() -> Iterator[Blackhole]:
    with blackhole_listener() as blackhole:
        yield blackhole


@pytest.fixture
def scripted_resolver(monkeypatch: pytest.MonkeyPatch, hole: Blackhole,
                      nginx: Nginx) -> list[str]:
    """NAME resolves to the blackhole first, then nginx (other ports: a sockaddr carries
    one). Returns the names looked up."""
    real = socket.getaddrinfo
    looked_up: list[str] = []

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != NAME:
            return real(host, port, *args, **kwargs)
        looked_up.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (hole.host, hole.port)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", nginx.port()))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return looked_up


@pytest.mark.parametrize("client_kind", ["sync", "asyncio"])
def test_a_blackholed_first_address_loses_to_the_second(client_kind: str, nginx: Nginx,
                                                        scripted_resolver: list[str]) -> None:
    before = nginx.server_stats()
    with make_client(client_kind, happy_eyeballs_delay=0.2, timeout=5.0) as client:
        started = time.monotonic()
        response = client.get(f"http://{NAME}/")
        elapsed = time.monotonic() - started
        stats = client.stats()
    assert response.status_code == 200
    assert scripted_resolver == [NAME]
    assert 0.19 <= elapsed < 1.0  # the delay, then one loopback connect: never the time-out
    assert stats.created == 1
    assert nginx.server_stats().since(before).accepted == 1


@pytest.mark.parametrize("client_kind", ["sync", "asyncio"])
def test_without_happy_eyeballs_the_first_address_takes_its_connect_time_out(
        client_kind: str, nginx: Nginx, scripted_resolver: list[str]) -> None:
    with (make_client(client_kind, happy_eyeballs_delay=None,
                      timeout=poolhttp.Timeout(5.0, connect=0.5)) as client,
          pytest.raises(poolhttp.ConnectTimeout)):
        client.get(f"http://{NAME}/")  # the connect time-out bounds both addresses


@pytest.mark.parametrize("delay", [-1, "0.25", True])
def test_a_bad_delay_is_refused(delay: object) -> None:
    for client_class in (poolhttp.Client, poolhttp.AsyncClient):
        with pytest.raises(ValueError, match="happy_eyeballs_delay must be a number"):
            client_class(happy_eyeballs_delay=delay)  # type: ignore[arg-type]
