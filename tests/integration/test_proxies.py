"""Proxies, end to end: tinyproxy (forward and CONNECT, with and without Basic auth),
microsocks (SOCKS5, with and without username/password), dante (SOCKS4), and the scripted
proxy for refusals and faults. What went through is counted on the proxies' and the
servers' side; every failure is a ProxyError naming the proxy and never its password."""

from __future__ import annotations

import logging
from typing import Any

import pytest

import poolhttp
from tests.integration.clients import make_client
from tests.support.nginx import Nginx
from tests.support.proxies import Dante, Microsocks, ProxyFactory, Stunnel, Tinyproxy

PASSWORD_WORDS = ("s3cr", "hunter2")  # what a leaked password would show


def https_get(client: Any, nginx: Nginx) -> poolhttp.Response:
    response: poolhttp.Response = client.get(nginx.https_url("/16k"))
    assert response.content == nginx.file_bytes("16k")
    return response


# -- HTTP proxies -------------------------------------------------------------------------------
def test_forward_proxy_sends_absolute_form(client_kind: str, nginx: Nginx,
                                           tinyproxy: Tinyproxy) -> None:
    mark = tinyproxy.mark()
    before = nginx.server_stats()
    with make_client(client_kind, proxy=tinyproxy.url) as client:
        for _ in range(3):
            assert client.get(nginx.url("/16k")).content == nginx.file_bytes("16k")
        stats = client.stats()
    assert tinyproxy.requests(mark) == [f"GET {nginx.origin()}/16k HTTP/1.1"] * 3
    assert nginx.server_stats().since(before).accepted >= 1
    assert list(stats.per_host) == [] or all("via http://127.0.0.1:" in label
                                             for label in stats.per_host)


def test_connect_tunnel_for_https(client_kind: str, nginx: Nginx,
                                  tinyproxy: Tinyproxy) -> None:
    mark = tinyproxy.mark()
    with make_client(client_kind, proxy=tinyproxy.url, verify=nginx.ca_path) as client:
        for _ in range(5):
            https_get(client, nginx)
        stats = client.stats()
    assert tinyproxy.connects(mark) == [f"127.0.0.1:{nginx.https_port}"]  # one tunnel, reused
    assert (stats.created, stats.reused) == (1, 4)


def test_connect_tunnel_carries_http2(nginx: Nginx, tinyproxy: Tinyproxy) -> None:
    mark = tinyproxy.mark()
    with make_client("sync", proxy=tinyproxy.url, verify=nginx.ca_path, http2=True) as client:
        response = https_get(client, nginx)
    assert response.http_version == "HTTP/2"
    assert tinyproxy.connects(mark) == [f"127.0.0.1:{nginx.https_port}"]


def test_proxy_credentials_are_sent_and_never_shown(
        client_kind: str, nginx: Nginx, tinyproxy_auth: Tinyproxy,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="poolhttp")
    with make_client(client_kind, proxy=tinyproxy_auth.url_with_auth,
                     verify=nginx.ca_path) as client:
        assert client.get(nginx.url()).status_code == 200
        https_get(client, nginx)
        shown = [repr(client.stats()), caplog.text]
    password = tinyproxy_auth.password
    assert password
    for text in shown:
        assert password not in text


@pytest.mark.parametrize("target", ["http", "https"])
def test_missing_proxy_credentials_are_a_proxy_error(client_kind: str, nginx: Nginx,
                                                     tinyproxy_auth: Tinyproxy,
                                                     target: str) -> None:
    url = nginx.url() if target == "http" else nginx.https_url()
    with (make_client(client_kind, proxy=tinyproxy_auth.url, verify=nginx.ca_path) as client,
          pytest.raises(poolhttp.ProxyError) as caught):
        client.get(url)
    assert caught.value.status == 407
    assert caught.value.proxy == tinyproxy_auth.url
    assert tinyproxy_auth.url in str(caught.value)
    assert "407" in str(caught.value)


def test_wrong_proxy_credentials_are_a_proxy_error_without_the_password(
        client_kind: str, nginx: Nginx, tinyproxy_auth: Tinyproxy) -> None:
    url = tinyproxy_auth.url.replace("://", f"://{tinyproxy_auth.username}:hunter2@")
    with (make_client(client_kind, proxy=url, verify=nginx.ca_path) as client,
          pytest.raises(poolhttp.ProxyError) as caught):
        client.get(nginx.https_url())
    assert caught.value.status in (401, 407)  # tinyproxy answers wrong credentials with 401
    assert "hunter2" not in str(caught.value)
    assert "hunter2" not in repr(caught.value)


# -- SOCKS --------------------------------------------------------------------------------------
@pytest.mark.parametrize("scheme", ["socks5", "socks5h"])
def test_socks5_for_http_and_https(client_kind: str, nginx: Nginx, socks5: Microsocks,
                                   scheme: str) -> None:
    before = nginx.server_stats()
    proxy = socks5.url.replace("socks5://", f"{scheme}://")
    with make_client(client_kind, proxy=proxy, verify=nginx.ca_path) as client:
        for _ in range(3):
            assert client.get(nginx.url()).status_code == 200
            https_get(client, nginx)
        stats = client.stats()
    assert (stats.created, stats.reused) == (2, 4)
    assert nginx.server_stats().since(before).accepted == 2  # through the proxy, then reused


def test_socks5h_sends_the_name_and_socks5_the_address(client_kind: str,
                                                       fault_proxy: ProxyFactory) -> None:
    proxy = fault_proxy("relay", names={"localhost": "127.0.0.1"})
    for scheme in ("socks5h", "socks5"):
        with (make_client(client_kind, proxy=proxy.url(scheme), timeout=5) as client,
              pytest.raises(poolhttp.HTTPError)):
            client.get("http://localhost:9/")  # nothing listens there: the relay fails
    kinds = [request.address_type for request in proxy.requests]
    assert kinds == ["domain", "ipv4"]


def test_socks5_with_username_and_password(client_kind: str, nginx: Nginx,
                                           socks5_auth: Microsocks) -> None:
    with make_client(client_kind, proxy=socks5_auth.url_with_auth) as client:
        assert client.get(nginx.url()).status_code == 200
    with (make_client(client_kind, proxy=socks5_auth.url) as client,
          pytest.raises(poolhttp.ProxyError) as caught):
        client.get(nginx.url())
    assert "accepts none of the authentication methods" in str(caught.value)


def test_socks4(client_kind: str, nginx: Nginx, socks4: Dante) -> None:
    mark = socks4.mark()
    with make_client(client_kind, proxy=socks4.url, verify=nginx.ca_path) as client:
        assert client.get(nginx.url()).status_code == 200
        https_get(client, nginx)
    socks4.wait_for_targets(lambda targets: len(targets) == 2, mark)
    assert sorted(socks4.targets(mark)) == sorted(
        [f"127.0.0.1:{nginx.port()}", f"127.0.0.1:{nginx.https_port}"])


def test_socks4a_sends_the_name(client_kind: str, nginx: Nginx,
                                fault_proxy: ProxyFactory) -> None:
    proxy = fault_proxy("relay", names={"nginx.test": "127.0.0.1"})
    with make_client(client_kind, proxy=proxy.url("socks4a")) as client:
        assert client.get(f"http://nginx.test:{nginx.port()}/").status_code == 200
    assert proxy.targets == [f"nginx.test:{nginx.port()}"]


# -- refusals and faults -------------------------------------------------------------------------
@pytest.mark.parametrize(("mode", "options", "words"), [
    ("status", {"status": 403}, "403"),
    ("status", {"status": 407}, "407 Proxy Authentication Required"),
    ("status", {"status": 502}, "502"),
    ("garbage", {}, "proxy"),
    ("close", {}, "closed"),
    ("socks5_reply", {"reply": 0x05}, "connection refused"),
    ("socks5_reply", {"reply": 0x01}, "general failure"),
    ("socks5_no_methods", {}, "accepts none of the authentication methods"),
    ("socks4_reply", {"reply": 0x5B}, "rejected"),
])
def test_a_refusing_proxy_is_a_typed_error_naming_it(client_kind: str, nginx: Nginx,
                                                     fault_proxy: ProxyFactory, mode: str,
                                                     options: dict[str, Any],
                                                     words: str) -> None:
    proxy = fault_proxy(mode, **options)  # type: ignore[arg-type]
    scheme = {"socks5_reply": "socks5", "socks5_no_methods": "socks5",
              "socks4_reply": "socks4"}.get(mode, "http")
    with make_client(client_kind, proxy=proxy.url(scheme), verify=nginx.ca_path,
                     timeout=5) as client, pytest.raises(poolhttp.ProxyError) as caught:
        client.get(nginx.https_url())
    error = caught.value
    assert isinstance(error, poolhttp.ConnectError)  # nothing reached the origin
    assert error.proxy == proxy.url(scheme)
    assert proxy.url(scheme) in str(error)
    assert words in str(error), str(error)
    if mode == "status":
        assert error.status == options["status"]
    assert error.origin == f"https://127.0.0.1:{nginx.https_port}"


def test_a_silent_proxy_is_a_connect_time_out(client_kind: str, nginx: Nginx,
                                              fault_proxy: ProxyFactory) -> None:
    proxy = fault_proxy("silent")
    with (make_client(client_kind, proxy=proxy.url(), verify=nginx.ca_path,
                      timeout=poolhttp.Timeout(5, connect=0.3)) as client,
          pytest.raises(poolhttp.ConnectTimeout)):
        client.get(nginx.https_url())


def test_a_proxy_that_is_down_is_a_proxy_error(client_kind: str, nginx: Nginx) -> None:
    with (make_client(client_kind, proxy="http://127.0.0.1:9") as client,
          pytest.raises(poolhttp.ProxyError) as caught):
        client.get(nginx.url())
    assert str(caught.value) == (f"cannot connect to proxy http://127.0.0.1:9 (for "
                                 f"{nginx.origin()}): 127.0.0.1: Connection refused")
    with make_client(client_kind, proxy="http://127.0.0.1:9",
                     retries=poolhttp.Retry(total=1, backoff_factor=0, jitter=0)) as client:
        with pytest.raises(poolhttp.RetryError) as retried:
            client.get(nginx.url())
        assert client.stats().retries == 1  # a connect error: retried as one
    assert [type(e) for e in retried.value.errors] == [poolhttp.ProxyError] * 2


def test_the_connect_request_is_exact(client_kind: str, fault_proxy: ProxyFactory) -> None:
    proxy = fault_proxy("status", status=403)
    url = proxy.url().replace("://", "://ada:s3cr%40t@")
    with make_client(client_kind, proxy=url) as client, pytest.raises(poolhttp.ProxyError):
        client.get("https://example.test:8443/x")
    raw = proxy.requests[0].raw
    assert raw == (b"CONNECT example.test:8443 HTTP/1.1\r\nHost: example.test:8443\r\n"
                   b"Proxy-Authorization: Basic YWRhOnMzY3JAdA==\r\n\r\n")


# -- the environment ---------------------------------------------------------------------------
def test_trust_env_reads_the_proxy_variables(client_kind: str, nginx: Nginx,
                                             tinyproxy: Tinyproxy,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", tinyproxy.url)
    monkeypatch.setenv("HTTPS_PROXY", tinyproxy.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    mark = tinyproxy.mark()
    with make_client(client_kind, verify=nginx.ca_path) as client:
        assert client.get(nginx.url()).status_code == 200
        https_get(client, nginx)
    assert tinyproxy.requests(mark) == [f"GET {nginx.origin()}/ HTTP/1.1"]
    assert tinyproxy.connects(mark) == [f"127.0.0.1:{nginx.https_port}"]
    mark = tinyproxy.mark()
    with make_client(client_kind, verify=nginx.ca_path, trust_env=False) as client:
        assert client.get(nginx.url()).status_code == 200
    monkeypatch.setenv("NO_PROXY", "localhost, 127.0.0.0/8")
    with make_client(client_kind, verify=nginx.ca_path) as client:
        assert client.get(nginx.url()).status_code == 200
        https_get(client, nginx)
    assert tinyproxy.accepted(mark) == 0


def test_all_proxy_with_socks(client_kind: str, nginx: Nginx, socks4: Dante,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "NO_PROXY",
                 "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ALL_PROXY", socks4.url)
    mark = socks4.mark()
    with make_client(client_kind) as client:
        assert client.get(nginx.url()).status_code == 200
    socks4.wait_for_targets(lambda targets: len(targets) == 1, mark)


def test_proxy_argument_wins_over_the_environment(client_kind: str, nginx: Nginx,
                                                  tinyproxy: Tinyproxy,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # down: must not be used
    with make_client(client_kind, proxy=tinyproxy.url) as client:
        assert client.get(nginx.url()).status_code == 200


@pytest.mark.parametrize(("value", "error", "words"), [
    ("ftp://127.0.0.1:21", poolhttp.InvalidURL, "ftp"),
    ("http://", poolhttp.InvalidURL, "host"),
    ("http://user:hunter2@127.0.0.1:3128/path", poolhttp.InvalidURL, "path"),
    (3128, TypeError, "int"),
])
def test_a_bad_proxy_is_refused_at_construction(value: object, error: type[Exception],
                                                words: str) -> None:
    for client_class in (poolhttp.Client, poolhttp.AsyncClient):
        with pytest.raises(error) as caught:
            client_class(proxy=value)  # type: ignore[arg-type]
        assert words in str(caught.value)
        assert "hunter2" not in str(caught.value)


def test_a_proxy_whose_name_does_not_resolve_is_a_proxy_error(client_kind: str,
                                                               nginx: Nginx) -> None:
    with (make_client(client_kind, proxy="http://proxy.invalid:3128") as client,
          pytest.raises(poolhttp.ProxyError) as caught):
        client.get(nginx.url())
    assert str(caught.value).startswith(
        f"cannot connect to proxy http://proxy.invalid:3128 (for {nginx.origin()}): DNS "
        "look-up of 'proxy.invalid' failed")


# -- https:// proxies (TLS to the proxy: stunnel in front of tinyproxy) -----------------------
def test_https_proxy_forwards_http(client_kind: str, nginx: Nginx,
                                   https_proxy: Stunnel) -> None:
    mark, proxy_mark = https_proxy.mark(), https_proxy.tinyproxy.mark()
    with make_client(client_kind, proxy=https_proxy.url, verify=nginx.ca_path) as client:
        for _ in range(2):
            assert client.get(nginx.url("/16k")).content == nginx.file_bytes("16k")
    assert https_proxy.tinyproxy.requests(proxy_mark) == [
        f"GET {nginx.origin()}/16k HTTP/1.1"] * 2
    assert https_proxy.log(mark).handshakes >= 1


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
async def test_https_proxy_tunnels_tls_inside_tls(loop_kind: str, nginx: Nginx,
                                                  https_proxy: Stunnel) -> None:
    proxy_mark = https_proxy.tinyproxy.mark()
    async with poolhttp.AsyncClient(proxy=https_proxy.url, verify=nginx.ca_path,
                                    http2=True) as client:
        for _ in range(3):
            response = await client.get(nginx.https_url("/16k"))
            assert response.content == nginx.file_bytes("16k")
        stats = client.stats()
    assert response.http_version == "HTTP/2"  # ALPN with the origin, inside the tunnel
    assert https_proxy.tinyproxy.connects(proxy_mark) == [f"127.0.0.1:{nginx.https_port}"]
    assert (stats.created, stats.reused) == (1, 2)


def test_the_blocking_client_tunnels_tls_inside_tls(nginx: Nginx,
                                                    https_proxy: Stunnel) -> None:
    proxy_mark = https_proxy.tinyproxy.mark()
    start = len(nginx.session_log())
    with poolhttp.Client(proxy=https_proxy.url, verify=nginx.ca_path, http2=True) as client:
        for _ in range(3):
            response = client.get(nginx.https_url("/1m"))
            assert response.content == nginx.file_bytes("1m")
            assert client.post(nginx.https_url("/"), content=b"x" * 300_000).status_code == 200
        for _ in range(3):  # new connections, each resuming the last session
            assert client.get(nginx.resume_url("/", keepalive=False)).status_code == 200
        stats = client.stats()
    assert response.http_version == "HTTP/1.1"  # inside TLS inside TLS: HTTP/1.1 only
    assert https_proxy.tinyproxy.connects(proxy_mark)[0] == f"127.0.0.1:{nginx.https_port}"
    entries = nginx.wait_for_session_log(lambda log: len(log) >= start + 3)[start:]
    assert [entry.reused for entry in entries] == [False, True, True]
    assert stats.tls_resumed == stats.created - 2  # all but each origin's first connection


def test_an_untrusted_https_proxy_is_a_proxy_error(client_kind: str, nginx: Nginx,
                                                   https_proxy: Stunnel) -> None:
    with (make_client(client_kind, proxy=https_proxy.url) as client,  # system CAs only
          pytest.raises(poolhttp.ProxyError) as caught):
        client.get(nginx.url())
    assert str(caught.value).startswith(
        f"TLS handshake with proxy {https_proxy.url} (for {nginx.origin()}) failed: "
        "its certificate is not trusted: ")


def test_https_proxy_with_credentials(client_kind: str, nginx: Nginx,
                                      https_proxy_auth: Stunnel) -> None:
    with make_client(client_kind, proxy=https_proxy_auth.url_with_auth,
                     verify=nginx.ca_path) as client:
        assert client.get(nginx.url()).status_code == 200
    with (make_client(client_kind, proxy=https_proxy_auth.url, verify=nginx.ca_path) as client,
          pytest.raises(poolhttp.ProxyError) as caught):
        client.get(nginx.url())
    assert caught.value.status == 407
