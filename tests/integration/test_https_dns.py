"""HTTPS (verification, SNI, one shared context), DNS caching and addressing options."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

import poolhttp
from tests.integration.clients import make_client
from tests.support.nginx import Nginx
from tests.support.scripted import ReceivedRequest, Reply, ServerFactory


def test_https_with_our_ca_reuses_the_connection(client_kind: str, nginx: Nginx) -> None:
    before = nginx.server_stats()
    with make_client(client_kind, verify=nginx.ca_path) as client:
        for _ in range(5):
            assert client.get(nginx.https_url("/")).content == b"hello\n"
        assert client.get(nginx.https_url("/1m")).content == nginx.file_bytes("1m")
        stats = client.stats()
    assert (stats.created, stats.reused) == (1, 5)
    assert nginx.server_stats().since(before).accepted == 1


def test_https_by_name_sends_sni(client_kind: str, nginx: Nginx) -> None:
    events: list[tuple[str, dict[str, Any]]] = []
    with make_client(client_kind, verify=nginx.ca_path) as client:
        response = client.get(nginx.https_url("/", host="localhost"),
                              trace=lambda event, info: events.append((event, info)))
    assert response.status_code == 200
    handshake = [info for event, info in events if event == "tls.handshake"]
    assert handshake
    assert handshake[0]["version"] in ("TLSv1.2", "TLSv1.3")


def test_https_verifies_certificates_by_default(client_kind: str, nginx: Nginx) -> None:
    with make_client(client_kind) as client:
        with pytest.raises(poolhttp.ConnectError) as info:
            client.get(nginx.https_url("/"))
        assert client.stats().connections == 0
    assert "not trusted" in str(info.value)
    assert isinstance(info.value, OSError)


def test_https_verify_false_skips_checks(client_kind: str, nginx: Nginx) -> None:
    with make_client(client_kind, verify=False) as client:
        assert client.get(nginx.https_url("/")).status_code == 200


def test_verify_must_be_valid() -> None:
    with pytest.raises(FileNotFoundError, match="no such CA bundle"):
        poolhttp.Client(verify="/no/such/bundle.pem")
    with pytest.raises(TypeError, match="verify must be"):
        poolhttp.AsyncClient(verify=3)  # type: ignore[arg-type]


def test_one_default_tls_context_per_process_and_none_for_plain_http(nginx: Nginx,
                                                                     tmp_path: Path) -> None:
    """Counted at the ssl module's boundary, in a fresh interpreter."""
    script = textwrap.dedent(f"""
        import asyncio, ssl, poolhttp
        calls = []
        real = ssl.create_default_context
        def counting(*args, **kwargs):
            calls.append(1)
            return real(*args, **kwargs)
        ssl.create_default_context = counting
        clients = [poolhttp.Client(verify={nginx.ca_path!r}) for _ in range(3)]
        for client in clients:
            client.get({nginx.url("/")!r})
        assert calls == [], calls  # plain http never builds a context
        for client in clients:
            client.get({nginx.https_url("/")!r})
        async def main():
            async with poolhttp.AsyncClient(verify={nginx.ca_path!r}) as client:
                await client.get({nginx.https_url("/")!r})
        asyncio.run(main())
        for client in clients:
            client.close()
        print(len(calls))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1"


def localhost_url(nginx: Nginx, path: str = "/") -> str:
    return nginx.url(path).replace("127.0.0.1", "localhost")


def slow(request: ReceivedRequest) -> Reply:
    return Reply.ok(b"slow").delay(0.2)  # so every request needs a connection of its own


async def test_concurrent_lookups_of_one_name_are_coalesced_async(
        scripted_server: ServerFactory) -> None:
    import asyncio
    server = scripted_server(slow)
    url = server.url().replace("127.0.0.1", "localhost")
    async with poolhttp.AsyncClient(limits=poolhttp.Limits(max_connections=50),
                                    family=socket.AF_INET) as client:
        await asyncio.gather(*[client.get(url) for _ in range(50)])
        stats = client.stats()
    assert server.accepted == stats.created == 50
    assert stats.dns_lookups == 1


def test_concurrent_lookups_of_one_name_are_coalesced_sync(scripted_server: ServerFactory) -> None:
    server = scripted_server(slow)
    url = server.url().replace("127.0.0.1", "localhost")
    barrier = threading.Barrier(30)
    errors: list[BaseException] = []
    with poolhttp.Client(limits=poolhttp.Limits(max_connections=30),
                         family=socket.AF_INET) as client:

        def fetch() -> None:
            try:
                barrier.wait()
                client.get(url)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=fetch) for _ in range(30)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        stats = client.stats()
    assert not errors
    assert server.accepted == stats.created == 30
    assert stats.dns_lookups == 1


def test_dns_cache_ttl(client_kind: str, nginx: Nginx) -> None:
    closing = localhost_url(nginx).replace(str(nginx.port()), str(nginx.port(keepalive=False)))
    with make_client(client_kind, dns_ttl=30) as client:
        for _ in range(3):
            client.get(closing)  # a new connection each time, one look-up
        assert client.stats().dns_lookups == 1
    with make_client(client_kind, dns_ttl=0) as client:
        for _ in range(3):
            client.get(closing)
        assert client.stats().dns_lookups == 3


def test_failed_lookup_is_a_connect_error(client_kind: str) -> None:
    with make_client(client_kind) as client:
        with pytest.raises(poolhttp.ConnectError, match=r"DNS look-up of 'no-such-host\.invalid'"):
            client.get("http://no-such-host.invalid/")
        assert client.stats().connections == 0


def test_refused_connection_is_a_connect_error(
        client_kind: str, scripted_server: ServerFactory) -> None:
    from tests.support.scripted import refusing_port
    with refusing_port() as port, make_client(client_kind) as client:
        with pytest.raises(poolhttp.ConnectError) as info:
            client.get(port.url("/"))
        assert client.stats().connections == 0
    assert "refused" in str(info.value).lower()


def test_local_address_binds_the_client_side(
        client_kind: str, scripted_server: ServerFactory) -> None:
    server = scripted_server()
    with make_client(client_kind, local_address="127.0.0.5") as client:
        client.get(server.url())
    assert server.connections[0].peer[0] == "127.0.0.5"


def test_family_forces_the_address_family(client_kind: str, nginx: Nginx) -> None:
    events: list[dict[str, Any]] = []
    with make_client(client_kind, family=socket.AF_INET) as client:
        client.get(localhost_url(nginx), trace=lambda e, info: events.append(info))
    addresses = next(info["addresses"] for info in events if "addresses" in info)
    assert {family for family, _ in addresses} == {socket.AF_INET}
    with pytest.raises(ValueError, match="family must be"):
        poolhttp.Client(family=12345)


def test_ipv6_literal_url(client_kind: str, nginx: Nginx) -> None:
    url = nginx.ipv6_url("/")
    if url is None:
        pytest.fail("this machine has no IPv6 loopback; the IPv6 test needs one")
    with make_client(client_kind) as client:
        response = client.get(url)
        stats = client.stats()
    assert response.content == b"hello\n"
    assert list(stats.per_host) == [f"http://[::1]:{url.rsplit(':', 1)[1].rstrip('/')}"]


@pytest.mark.parametrize("loop_kind", ["uvloop"])
async def test_trace_seconds_are_finer_than_the_loop_clock(loop_kind: str,
                                                           nginx: Nginx) -> None:
    """uvloop's clock ticks in milliseconds; the connect phases' `seconds` must not."""
    seen: list[float] = []

    def trace(event: str, info: dict[str, Any]) -> None:
        if event in ("dns.resolved", "tcp.connected"):
            seen.append(info["seconds"])

    async with poolhttp.AsyncClient(limits=poolhttp.Limits(max_keepalive_connections=0)) as c:
        for _ in range(5):
            await c.get(nginx.url("/"), trace=trace)
    assert len(seen) == 10
    assert any(round(s * 1000, 9) % 1 for s in seen), seen  # not all whole milliseconds
