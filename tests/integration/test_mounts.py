"""mounts=: per-route time-outs, retries, proxy, verification and HTTP/2, in one client and
one pool (per-route limits: test_mounts_limits.py)."""

from __future__ import annotations

import pytest

import poolhttp
from tests.integration.clients import make_client
from tests.support.nginx import Nginx
from tests.support.proxies import Tinyproxy
from tests.support.scripted import Reply, ServerFactory

NO_BACKOFF = poolhttp.Retry(total=2, backoff_factor=0, jitter=0)


def test_a_route_has_its_own_retries(client_kind: str, nginx: Nginx) -> None:
    refused = "http://127.0.0.1:9"  # the discard port: nothing listens
    mounts = {refused: poolhttp.Mount(retries=NO_BACKOFF)}
    with make_client(client_kind, mounts=mounts) as client:
        with pytest.raises(poolhttp.RetryError) as caught:
            client.get(refused + "/")
        assert len(caught.value.errors) == 3
        with pytest.raises(poolhttp.ConnectError):  # other routes: the client's (none)
            client.get("http://127.0.0.2:9/")
        assert client.get(nginx.url()).status_code == 200
        assert client.stats().retries == 2


def test_a_route_has_its_own_status_retries(client_kind: str,
                                            scripted_server: ServerFactory) -> None:
    server = scripted_server(lambda request: Reply.ok(b"busy", status=503))
    retry = poolhttp.Retry(total=1, backoff_factor=0, jitter=0, raise_on_status=False)
    with make_client(client_kind, mounts={server.origin: poolhttp.Mount(retries=retry)}) as client:
        assert client.get(server.url()).status_code == 503
    assert server.requests == 2  # the first and one retry


def test_a_route_has_its_own_time_out(client_kind: str,
                                      scripted_server: ServerFactory) -> None:
    slow = scripted_server(lambda request: Reply.ok(b"late").delay(1.0))
    with make_client(client_kind, timeout=5.0,
                     mounts={slow.origin: poolhttp.Mount(timeout=0.2)}) as client:
        with pytest.raises(poolhttp.ReadTimeout) as caught:
            client.get(slow.url())
        assert caught.value.timeout == 0.2
        assert client.get(slow.url(), timeout=3.0).content == b"late"  # its own wins


def test_a_route_has_its_own_proxy(client_kind: str, nginx: Nginx, tinyproxy: Tinyproxy,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", tinyproxy.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    mark = tinyproxy.mark()
    mounts = {nginx.origin(1): poolhttp.Mount(proxy=None),  # direct, despite the environment
              nginx.origin(2): poolhttp.Mount(proxy=tinyproxy.url)}
    with make_client(client_kind, mounts=mounts, trust_env=True) as client:
        for index in range(3):
            assert client.get(nginx.url("/", index)).status_code == 200
    assert sorted(tinyproxy.requests(mark)) == sorted(
        [f"GET {nginx.origin(0)}/ HTTP/1.1", f"GET {nginx.origin(2)}/ HTTP/1.1"])


def test_a_route_has_its_own_verification_and_http2(client_kind: str, nginx: Nginx) -> None:
    by_name = f"https://localhost:{nginx.https_port}"
    mounts = {by_name: poolhttp.Mount(verify=nginx.ca_path, http2=True)}
    with make_client(client_kind, mounts=mounts) as client:  # verify=True: system CAs
        response = client.get(by_name + "/")
        assert response.status_code == 200
        assert response.http_version == "HTTP/2"
        with pytest.raises(poolhttp.ConnectError, match="not trusted"):
            client.get(nginx.https_url())  # 127.0.0.1: the client's own settings
