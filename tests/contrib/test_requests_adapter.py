"""`poolhttp.contrib.requests`: requests sessions over poolhttp's pool, against real servers.

What is checked: the request goes out as requests built it, requests keeps redirects and
cookies, urllib3 Retry policies mapped onto poolhttp's (status, read and connect retries and
Retry-After counted by the server), requests' time-outs and exception types, `stream=True`
giving the connection back, verify and cert, proxies through tinyproxy and microsocks,
pool_maxsize / pool_block and reuse seen from the server, 64 threads on one adapter, close(),
and that no path leaves a connection, a descriptor or a thread behind.
"""

from __future__ import annotations

import pickle
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from urllib3.util import Retry as Urllib3Retry
from urllib3.util import Timeout as Urllib3Timeout

import poolhttp
from poolhttp.contrib.requests import (
    PoolAdapter,
    PoolRawResponse,
    RetryNotMappable,
    to_pool_retry,
)
from tests.support import no_fd_leak
from tests.support.certs import CertBundle
from tests.support.nginx import Nginx
from tests.support.proxies import Microsocks, Tinyproxy
from tests.support.scripted import (
    ReceivedRequest,
    Reply,
    ServerFactory,
    echo_handler,
    in_sequence,
    refusing_port,
)


def session_with(adapter: PoolAdapter) -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # no CA bundle or proxy of the environment: the tests' own
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


@pytest.fixture
def tarpit() -> Iterator[str]:
    """A local address whose connects never complete (its accept queue is kept full)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers = []
    for _ in range(8):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(listener.getsockname())
        fillers.append(filler)
    host, port = listener.getsockname()
    yield f"http://{host}:{port}/"
    for filler in fillers:
        filler.close()
    listener.close()


def test_importing_poolhttp_or_contrib_does_not_import_requests() -> None:
    code = ("import sys, poolhttp, poolhttp.contrib; "
            "assert 'requests' not in sys.modules and 'urllib3' not in sys.modules; "
            "import poolhttp.contrib.requests; assert 'requests' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# -- what goes out, what comes back -------------------------------------------------------------
def test_request_goes_out_as_requests_built_it(scripted_server: ServerFactory) -> None:
    server = scripted_server(echo_handler)
    with session_with(PoolAdapter()) as session:
        session.headers["X-Custom"] = "yes"
        response = session.get(server.url("/path x/?q=a%2Fb"), params={"z": "ü"})
        assert response.status_code == 200
        assert response.reason == "OK"
        assert response.url == server.url("/path%20x/?q=a%2Fb&z=%C3%BC")
        assert isinstance(response.raw, PoolRawResponse)
        assert response.connection is session.get_adapter(server.url("/"))
        posted = session.post(server.url("/form"), data={"k": "v"})
        assert posted.status_code == 200
    get, post = server.received
    assert get.target == "/path%20x/?q=a%2Fb&z=%C3%BC"
    assert get.get("User-Agent") == f"python-requests/{requests.__version__}"
    assert get.get("X-Custom") == "yes"
    names = sorted(name.lower() for name, _ in get.headers)
    assert names == sorted(["host", "user-agent", "accept-encoding", "accept", "connection",
                            "x-custom"])
    assert post.body == b"k=v"
    assert post.get("Content-Length") == "3"
    assert post.get("Content-Type") == "application/x-www-form-urlencoded"


def test_bodies_and_their_framing(scripted_server: ServerFactory) -> None:
    server = scripted_server(lambda request: Reply.ok(request.body))

    def chunks() -> Iterator[bytes]:
        yield b"part one, "
        yield b"part two"

    with session_with(PoolAdapter()) as session:
        assert session.post(server.url("/a"), data=b"known").content == b"known"
        assert session.post(server.url("/b"), data=chunks()).content == b"part one, part two"
        assert session.post(server.url("/c"), json={"k": 1}).json() == {"k": 1}
        files = session.post(server.url("/d"), files={"f": ("a.txt", b"file data")})
        assert b"file data" in files.content
        assert session.post(server.url("/e")).content == b""
        assert session.delete(server.url("/f")).status_code == 200
    known, streamed, as_json, multipart, empty, delete = server.received
    assert known.get("Content-Length") == "5"
    assert streamed.chunked
    assert streamed.get("Content-Length") is None
    assert as_json.get("Content-Type") == "application/json"
    assert multipart.get("Content-Length") == str(len(multipart.body))
    assert empty.get("Content-Length") == "0"
    assert delete.get("Content-Length") == "0"  # requests sets it; sent as set


def test_redirects_cookies_and_gzip_stay_requests(scripted_server: ServerFactory) -> None:
    import gzip

    def handler(request: ReceivedRequest) -> Reply:
        if request.path == "/start":
            return Reply.ok(b"", status=302, headers=[("Location", "/end"),
                                                     ("Set-Cookie", "flavour=oat; Path=/"),
                                                     ("Set-Cookie", "size=big; Path=/")])
        if request.path == "/gz":
            return Reply.ok(gzip.compress(b"squeezed" * 100),
                            headers={"Content-Encoding": "gzip"})
        return echo_handler(request)

    server = scripted_server(handler)
    with session_with(PoolAdapter()) as session:
        response = session.get(server.url("/start"), auth=("ada", "pw"))
        assert [r.status_code for r in response.history] == [302]
        assert session.cookies.get_dict() == {"flavour": "oat", "size": "big"}
        assert response.history[0].headers["set-cookie"] == (
            "flavour=oat; Path=/, size=big; Path=/")
        assert session.get(server.url("/gz")).text == "squeezed" * 100
        raw = session.get(server.url("/gz"), stream=True).raw
        assert raw.read(2) == b"\x1f\x8b"  # as received, as HTTPAdapter's raw gives it
        raw.close()
    _start, end = server.received[:2]
    assert end.path == "/end"
    assert end.get("Cookie") == "flavour=oat; size=big"
    assert (end.get("Authorization") or "").startswith("Basic ")
    assert {r.connection_index for r in server.received[:3]} == {0}  # one connection


def test_pool_reuse_seen_from_nginx(nginx: Nginx) -> None:
    adapter = PoolAdapter()
    before = nginx.server_stats()
    with session_with(adapter) as session:
        for _ in range(20):
            assert session.get(nginx.url("/")).text == "hello\n"
        assert adapter.client.stats().created == 1
    assert nginx.server_stats().since(before).accepted == 1
    assert nginx.server_stats().since(before).requests == 20


# -- retries -----------------------------------------------------------------------------------
def test_retry_mapping() -> None:
    policy = to_pool_retry(Urllib3Retry(
        total=5, connect=2, read=1, status=3, backoff_factor=0.5, backoff_max=4,
        backoff_jitter=0.1, status_forcelist=[500, 503], allowed_methods=["get", "POST"],
        respect_retry_after_header=False, raise_on_status=False))
    assert (policy.total, policy.connect, policy.read, policy.status) == (5, 2, 1, 3)
    assert (policy.backoff_factor, policy.backoff_max, policy.jitter) == (0.5, 4.0, 0.1)
    assert policy.status_forcelist == frozenset({500, 503})
    assert policy.allowed_methods == frozenset({"GET", "POST"})
    assert not policy.respect_retry_after
    assert not policy.raise_on_status
    assert to_pool_retry(3) == to_pool_retry(Urllib3Retry.from_int(3))
    assert to_pool_retry(3).total == 3
    assert to_pool_retry(3).status_forcelist == frozenset()
    assert to_pool_retry(Urllib3Retry(0, read=False)).read == 0  # HTTPAdapter's default
    assert "POST" in to_pool_retry(Urllib3Retry(allowed_methods=None)).allowed_methods
    mine = poolhttp.Retry(total=1)
    assert to_pool_retry(mine) is mine
    with pytest.raises(RetryNotMappable) as caught:
        to_pool_retry(Urllib3Retry(other=1))
    assert caught.value.field == "other"

    class Custom(Urllib3Retry):
        def is_retry(self, method: str, status_code: int, has_retry_after: bool = False
                     ) -> bool:
            return True

    with pytest.raises(RetryNotMappable, match="is_retry"):
        to_pool_retry(Custom(total=2))
    used = Urllib3Retry(total=3).increment("GET", "/", error=OSError("x"))
    with pytest.raises(RetryNotMappable, match="history"):
        to_pool_retry(used)
    with pytest.raises(TypeError, match="max_retries"):
        PoolAdapter(max_retries="3")


def test_status_forcelist_counted_by_the_server(scripted_server: ServerFactory) -> None:
    server = scripted_server(in_sequence(Reply.ok(b"busy", status=503),
                                         Reply.ok(b"busy", status=503), Reply.ok(b"done")))
    retry = Urllib3Retry(total=3, status_forcelist=[503], backoff_factor=0)
    with session_with(PoolAdapter(max_retries=retry)) as session:
        response = session.get(server.url("/"))
        assert response.status_code == 200
        assert response.text == "done"
    assert server.requests == 3
    # Spent: requests' RetryError, after 1 + total attempts.
    spent = scripted_server(lambda request: Reply.ok(b"no", status=503))
    adapter = PoolAdapter(max_retries=Urllib3Retry(total=2, status_forcelist=[503],
                                                   backoff_factor=0))
    with session_with(adapter) as session:
        with pytest.raises(requests.exceptions.RetryError) as caught:
            session.get(spent.url("/"))
        assert isinstance(caught.value.__cause__, poolhttp.RetryError)
        assert spent.requests == 3
        # The last 503 was streamed (the adapter always streams): its connection is not
        # kept checked out by the error.
        assert adapter.client.stats().active == 0
        # allowed_methods: a POST is not resent.
        assert session.post(spent.url("/"), data=b"x").status_code == 503
        assert spent.requests == 4
    lenient = PoolAdapter(max_retries=Urllib3Retry(total=1, status_forcelist=[503],
                                                   raise_on_status=False, backoff_factor=0))
    with session_with(lenient) as session:
        assert session.get(spent.url("/")).status_code == 503
    assert spent.requests == 6


def test_connect_retries(scripted_server: ServerFactory) -> None:
    with refusing_port() as port, session_with(PoolAdapter(max_retries=2)) as session, \
            pytest.raises(requests.exceptions.ConnectionError) as caught:
        session.get(port.url("/"))
    cause = caught.value.__cause__
    assert isinstance(cause, poolhttp.RetryError)
    assert len(cause.errors) == 3
    assert caught.value.args[0] is cause  # as HTTPAdapter's first argument is urllib3's


# -- time-outs -----------------------------------------------------------------------------------
def test_timeouts_are_requests_types(scripted_server: ServerFactory, tarpit: str) -> None:
    stalled = scripted_server(lambda request: Reply.stall())
    with session_with(PoolAdapter()) as session:
        # A urllib3 Timeout too, as HTTPAdapter takes it (requests' stubs leave it out).
        timeouts: list[Any] = [(5, 0.2), 0.2, Urllib3Timeout(connect=5, read=0.2)]
        for timeout in timeouts:
            with pytest.raises(requests.exceptions.ReadTimeout) as read:
                session.get(stalled.url("/"), timeout=timeout)
            assert isinstance(read.value.__cause__, poolhttp.ReadTimeout)
            assert read.value.__cause__.timeout == 0.2
            # urllib3's words lead, as code written for HTTPAdapter looks for them.
            assert str(read.value).startswith("Read timed out: ")
            assert read.value.args[0] is read.value.__cause__
        with pytest.raises(requests.exceptions.ConnectTimeout) as connect:
            session.get(tarpit, timeout=(0.2, 5))
        assert isinstance(connect.value, requests.exceptions.ConnectionError)
        assert isinstance(connect.value.__cause__, poolhttp.ConnectTimeout)
        with pytest.raises(ValueError, match=r"\(connect, read\)"):
            session.get(stalled.url("/"), timeout=(1, 2, 3))  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="int, float or None"):
            session.get(stalled.url("/"), timeout="soon")  # type: ignore[arg-type]
    # Without timeout=, the adapter's own.
    with session_with(PoolAdapter(timeout=poolhttp.Timeout(5, read=0.2))) as session, \
            pytest.raises(requests.exceptions.ReadTimeout):
        session.get(stalled.url("/"))


# -- streaming and connections ---------------------------------------------------------------
def test_stream_true_releases_the_connection(scripted_server: ServerFactory) -> None:
    server = scripted_server(lambda request: Reply.chunked([b"a" * 100] * 50, interval=0.01))
    adapter = PoolAdapter()
    with session_with(adapter) as session:
        response = session.get(server.url("/"), stream=True)
        assert next(response.iter_content(100)) == b"a" * 100
        assert adapter.client.stats().active == 1
        response.close()  # before the end: the connection is closed, not kept
        assert adapter.client.stats().connections == 0
        server.wait_for(lambda s: s.active == 0)
        with session.get(server.url("/"), stream=True) as whole:
            assert sum(len(chunk) for chunk in whole.iter_content(1000)) == 5000
            assert adapter.client.stats().idle == 1  # read to its end: back in the pool
        lines = session.get(server.url("/"), stream=True)
        assert len(b"".join(lines.iter_lines())) == 5000
        assert session.get(server.url("/")).content == b"a" * 5000
        assert adapter.client.stats().created == 2
    assert server.accepted == 2


def test_module_level_stream_outlives_its_session(scripted_server: ServerFactory) -> None:
    """`requests.get(url, stream=True)` closes its session before it returns: the response's
    connection stays until the body is read, then its client closes."""
    server = scripted_server(lambda request: Reply.chunked([b"b" * 100] * 20, interval=0.01))
    original = requests.sessions.Session.__init__
    made: list[PoolAdapter] = []

    def init(self: requests.Session) -> None:
        original(self)
        adapter = PoolAdapter()
        made.append(adapter)
        self.mount("http://", adapter)

    requests.sessions.Session.__init__ = init  # type: ignore[method-assign]
    try:
        response = requests.get(server.url("/"), stream=True)
    finally:
        requests.sessions.Session.__init__ = original  # type: ignore[method-assign]
    [adapter] = made
    assert len(adapter.clients) == 1  # retired, not closed: the body is still coming
    assert len(response.content) == 2000
    assert adapter.clients == []
    server.wait_for(lambda s: s.active == 0)


def test_close_leaves_no_open_connection(nginx: Nginx, certs: CertBundle,
                                         tinyproxy: Tinyproxy) -> None:
    adapter = PoolAdapter(pool_maxsize=8)
    before = nginx.server_stats()
    session = session_with(adapter)
    session.get(nginx.url("/"))
    session.get(nginx.https_url("/"), verify=str(certs.ca_path))
    session.get(nginx.url("/"), proxies={"http": tinyproxy.url})
    clients = adapter.clients
    assert len(clients) == 3  # direct, direct with other TLS settings, through the proxy
    assert nginx.server_stats().since(before).accepted == 3
    session.close()
    assert all(client.is_closed for client in clients)
    assert adapter.clients == []
    deadline = time.monotonic() + 5.0  # nginx sees the closes (the proxy's one a bit later)
    while nginx.server_stats().active > before.active and time.monotonic() < deadline:
        time.sleep(0.02)
    assert nginx.server_stats().active <= before.active
    # Still usable, as HTTPAdapter is after close(): a new pool.
    assert session.get(nginx.url("/")).status_code == 200
    adapter.close()


# -- TLS ---------------------------------------------------------------------------------------
def test_verify_and_cert(nginx: Nginx, certs: CertBundle) -> None:
    with session_with(PoolAdapter()) as session:
        assert session.get(nginx.https_url("/"), verify=str(certs.ca_path)).text == "hello\n"
        with pytest.raises(requests.exceptions.SSLError) as caught:
            session.get(nginx.https_url("/"))  # requests' CA bundle does not know our CA
        assert isinstance(caught.value.__cause__, poolhttp.ConnectError)
        assert session.get(nginx.https_url("/"), verify=False).status_code == 200
        pair = (str(certs.client_cert_path), str(certs.client_key_path))
        mtls = session.get(nginx.mtls_url("/client-cert"), verify=str(certs.ca_path),
                           cert=pair)
        assert mtls.text.startswith("SUCCESS")
        single = session.get(nginx.mtls_url("/client-cert"), verify=str(certs.ca_path),
                             cert=str(certs.client_pem_path))
        assert single.text.startswith("SUCCESS")
        with pytest.raises(OSError, match="Could not find a suitable TLS CA certificate"):
            session.get(nginx.https_url("/"), verify="/nonexistent/ca.pem")
        with pytest.raises(OSError, match="Could not find the TLS key file"):
            session.get(nginx.https_url("/"), cert=(pair[0], "/nonexistent/key.pem"))


def test_http2(nginx: Nginx, certs: CertBundle) -> None:
    adapter = PoolAdapter(http2=True)
    with session_with(adapter) as session:
        responses = [session.get(nginx.https_url("/"), verify=str(certs.ca_path))
                     for _ in range(3)]
        assert {r.raw.version for r in responses} == {20}
        assert adapter.clients[0].stats().created == 1


# -- proxies -----------------------------------------------------------------------------------
def test_through_tinyproxy(nginx: Nginx, tinyproxy_auth: Tinyproxy, certs: CertBundle) -> None:
    adapter = PoolAdapter()
    proxies = {"http": tinyproxy_auth.url_with_auth, "https": tinyproxy_auth.url_with_auth}
    mark = tinyproxy_auth.mark()
    with session_with(adapter) as session:
        assert session.get(nginx.url("/"), proxies=proxies).text == "hello\n"  # forwarded
        assert session.get(nginx.https_url("/"), proxies=proxies,
                           verify=str(certs.ca_path)).text == "hello\n"  # tunnelled
        assert "CONNECT" in tinyproxy_auth.log_text(mark)
        password = tinyproxy_auth.password
        assert password is not None
        assert password not in repr(adapter)
        with pytest.raises(requests.exceptions.ProxyError) as caught:
            session.get(nginx.url("/"), proxies={"http": tinyproxy_auth.url})
        assert isinstance(caught.value.__cause__, poolhttp.ProxyError)
        assert caught.value.__cause__.status == 407
        bad_password = tinyproxy_auth.url_with_auth.replace(password, "wrong-secret")
        with pytest.raises(requests.exceptions.ProxyError) as refused:
            session.get(nginx.https_url("/"), proxies={"https": bad_password},
                        verify=str(certs.ca_path))
        assert "wrong-secret" not in str(refused.value)
        with pytest.raises(requests.exceptions.InvalidProxyURL):
            session.get(nginx.url("/"), proxies={"http": "http://:8080"})
        for malformed in ("http://ada:pa55w0rd@127.0.0.1:99999",  # urllib3 cannot parse it
                          "ftp://ada:pa55w0rd@127.0.0.1:21"):  # poolhttp refuses the scheme
            with pytest.raises(requests.exceptions.InvalidProxyURL) as invalid:
                session.get(nginx.url("/"), proxies={"http": malformed})
            shown = [invalid.value, invalid.value.__cause__, invalid.value.__context__]
            assert not any("pa55w0rd" in str(error) for error in shown if error is not None)
        clients = adapter.clients
    assert all(client.is_closed for client in clients)


def test_through_socks5_with_credentials(nginx: Nginx, socks5_auth: Microsocks,
                                         certs: CertBundle) -> None:
    adapter = PoolAdapter()
    proxies = {"http": socks5_auth.url_with_auth, "https": socks5_auth.url_with_auth}
    with session_with(adapter) as session:
        assert session.get(nginx.url("/"), proxies=proxies).text == "hello\n"
        assert session.get(nginx.https_url("/"), proxies=proxies,
                           verify=str(certs.ca_path)).text == "hello\n"
        password = socks5_auth.password
        assert password is not None
        assert password not in repr(adapter)
        with pytest.raises(requests.exceptions.ProxyError) as refused:
            session.get(nginx.url("/"), proxies={"http": socks5_auth.url})
        assert isinstance(refused.value.__cause__, poolhttp.ProxyError)


# -- errors -----------------------------------------------------------------------------------
def test_errors_are_requests_types(scripted_server: ServerFactory) -> None:
    closing = scripted_server(lambda request: Reply.close_without_response())
    cut = scripted_server(lambda request: Reply.close_mid_body(b"x" * 1000, 10))
    with session_with(PoolAdapter()) as session:
        with pytest.raises(requests.exceptions.ConnectionError) as closed:
            session.get(closing.url("/"))
        assert isinstance(closed.value.__cause__, poolhttp.ServerDisconnected)
        with refusing_port() as port, pytest.raises(
                requests.exceptions.ConnectionError) as refused:
            session.get(port.url("/"))
        assert isinstance(refused.value.__cause__, poolhttp.ConnectError)
        with pytest.raises(requests.exceptions.ChunkedEncodingError) as short:
            session.get(cut.url("/"))
        assert isinstance(short.value.__cause__, poolhttp.TransportError)
        with pytest.raises(requests.exceptions.InvalidURL):
            session.get("http://[::1/")


# -- options -----------------------------------------------------------------------------------
def test_options() -> None:
    with pytest.raises(TypeError, match=r"session\.headers"):
        PoolAdapter(headers={"X": "y"})
    with pytest.raises(TypeError, match="not both"):
        PoolAdapter(pool_maxsize=4, limits=poolhttp.Limits())
    blocking = PoolAdapter(pool_maxsize=4, pool_block=True)
    assert blocking.limits.max_connections_per_host == 4
    free = PoolAdapter(pool_connections=2, pool_maxsize=8)
    assert free.limits.max_keepalive_connections == 16
    assert free.limits.max_connections_per_host is None
    copy = pickle.loads(pickle.dumps(free))
    assert copy.limits == free.limits
    assert copy.retries == free.retries
    for adapter in (blocking, free, copy):
        adapter.close()


# -- more retries --------------------------------------------------------------------------------
def test_urllib3_retry_counts_seen_by_the_server(scripted_server: ServerFactory) -> None:
    # read=1: a stalled response is retried once, then the server answers.
    flaky = scripted_server(in_sequence(Reply.stall(), Reply.ok(b"second")))
    adapter = PoolAdapter(max_retries=Urllib3Retry(total=5, read=1, backoff_factor=0))
    with session_with(adapter) as session:
        assert session.get(flaky.url("/"), timeout=(5, 0.2)).text == "second"
        assert flaky.requests == 2
        assert adapter.client.stats().retries == 1
        # Read retries spent: ConnectionError, as HTTPAdapter makes urllib3's MaxRetryError.
        with pytest.raises(requests.exceptions.ConnectionError) as spent:
            session.get(scripted_server(lambda r: Reply.stall()).url("/"), timeout=(5, 0.2))
        assert not isinstance(spent.value, requests.exceptions.ReadTimeout)
        assert isinstance(spent.value.__cause__, poolhttp.RetryError)
        assert isinstance(spent.value.__cause__.last_error, poolhttp.ReadTimeout)
    # connect=1 bounds connect retries below total=5: two attempts in all.
    adapter = PoolAdapter(max_retries=Urllib3Retry(total=5, connect=1, backoff_factor=0))
    with refusing_port() as port, session_with(adapter) as session, \
            pytest.raises(requests.exceptions.ConnectionError) as refused:
        session.get(port.url("/"))
    assert isinstance(refused.value.__cause__, poolhttp.RetryError)
    assert len(refused.value.__cause__.errors) == 2


def test_retry_after_respected_or_not(scripted_server: ServerFactory) -> None:
    server = scripted_server(lambda request: Reply.ok(b"wait", status=503,
                                                      headers={"Retry-After": "1"}))
    for respect, at_least, below in ((True, 0.9, 5.0), (False, 0.0, 0.5)):
        retry = Urllib3Retry(total=1, status_forcelist=[503], backoff_factor=0,
                             raise_on_status=False, respect_retry_after_header=respect)
        before = server.requests
        with session_with(PoolAdapter(max_retries=retry)) as session:
            started = time.monotonic()
            assert session.get(server.url("/")).status_code == 503
            elapsed = time.monotonic() - started
        assert server.requests - before == 2
        assert at_least <= elapsed < below, (respect, elapsed)


def test_spent_status_retries_free_the_connection_in_the_core(
        scripted_server: ServerFactory) -> None:
    """The core client's request loop (what the adapter sends through) closes the last
    response of spent status retries when it raises, streamed or not."""
    server = scripted_server(lambda request: Reply.ok(b"no", status=503))
    policy = poolhttp.Retry(total=1, status_forcelist=frozenset({503}), backoff_factor=0,
                            jitter=0)
    with poolhttp.Client(retries=policy) as client:
        with pytest.raises(poolhttp.RetryError), client.stream("GET", server.url("/")):
            pass
        assert client.stats().active == 0


async def test_spent_status_retries_free_the_connection_async(
        scripted_server: ServerFactory) -> None:
    server = scripted_server(lambda request: Reply.ok(b"no", status=503))
    policy = poolhttp.Retry(total=1, status_forcelist=frozenset({503}), backoff_factor=0,
                            jitter=0)
    async with poolhttp.AsyncClient(retries=policy) as client:
        with pytest.raises(poolhttp.RetryError):
            async with client.stream("GET", server.url("/")):
                pass
        assert client.stats().active == 0


# -- more errors ----------------------------------------------------------------------------------
def test_body_read_timeout_and_unreachable_proxy(scripted_server: ServerFactory,
                                                 nginx: Nginx) -> None:
    slow = scripted_server(lambda request: Reply.chunked([b"first", b"late"], interval=3.0))
    adapter = PoolAdapter()
    with session_with(adapter) as session:
        response = session.get(slow.url("/"), stream=True, timeout=(5, 0.3))
        chunks = response.iter_content(5)
        assert next(chunks) == b"first"
        # A time-out while the body is read: ConnectionError, as requests raises for
        # urllib3's ReadTimeoutError in iter_content.
        with pytest.raises(requests.exceptions.ConnectionError) as late:
            next(chunks)
        assert isinstance(late.value.__cause__, poolhttp.ReadTimeout)
        assert str(late.value).startswith("Read timed out")
        assert adapter.client.stats().active == 0
        with refusing_port() as port, pytest.raises(requests.exceptions.ProxyError) as proxy:
            session.get(nginx.url("/"), proxies={"http": port.url("/")})
        assert isinstance(proxy.value, requests.exceptions.ConnectionError)
        assert isinstance(proxy.value.__cause__, poolhttp.ProxyError)


# -- limits, seen from the server ----------------------------------------------------------------
def _in_threads(count: int, work: Callable[[int], object]) -> list[object]:
    """`work(i)` on `count` threads released together; their results (or errors)."""
    barrier = threading.Barrier(count)
    results: list[object] = [None] * count

    def run(index: int) -> None:
        barrier.wait(timeout=10)
        try:
            results[index] = work(index)
        except Exception as exc:  # reported by the caller's assertions
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    return results


def test_pool_block_bounds_the_connections(scripted_server: ServerFactory) -> None:
    server = scripted_server(lambda request: Reply.ok(b"slow").delay(0.2))
    adapter = PoolAdapter(pool_maxsize=2, pool_block=True)
    with session_with(adapter) as session:
        results = _in_threads(8, lambda i: session.get(server.url(f"/{i}")).text)
        assert results == ["slow"] * 8
        assert server.max_active == 2
        assert server.accepted == 2  # the six others waited for one of the two
        assert server.requests == 8
    # Waiting longer than the pool time-out: ConnectTimeout (it never connected).
    quick = scripted_server(lambda request: Reply.chunked([b"x" * 10] * 3, interval=0.5))
    adapter = PoolAdapter(pool_maxsize=1, pool_block=True, timeout=poolhttp.Timeout(5, pool=0.2))
    with session_with(adapter) as session:
        held = session.get(quick.url("/"), stream=True)
        with pytest.raises(requests.exceptions.ConnectTimeout) as waited:
            session.get(quick.url("/"))
        assert isinstance(waited.value.__cause__, poolhttp.PoolTimeout)
        # Closing the streamed response early gives its slot back: the next one gets through.
        assert next(held.iter_content(10)) == b"x" * 10
        held.close()
        assert adapter.client.stats().active == 0
        with session.get(quick.url("/"), stream=True) as after:
            assert b"".join(after.iter_content(7)) == b"x" * 30
        # Read to its end: back in the pool, and reused.
        assert adapter.client.stats().idle == 1
        assert session.get(quick.url("/")).content == b"x" * 30
    assert quick.accepted == 2  # the early close cost one connection, nothing else did


def test_pool_without_block_opens_more_and_keeps_maxsize(scripted_server: ServerFactory
                                                          ) -> None:
    # Long enough for all eight to be in flight at once, even on a busy machine.
    server = scripted_server(lambda request: Reply.ok(b"slow").delay(1.0))
    adapter = PoolAdapter(pool_connections=1, pool_maxsize=2, pool_block=False)
    with session_with(adapter) as session:
        results = _in_threads(8, lambda i: session.get(server.url(f"/{i}")).text)
        assert results == ["slow"] * 8
        assert server.max_active == 8  # nobody waited for a connection
        stats = adapter.client.stats()
        assert (stats.active, stats.idle) == (0, 2)  # the six beyond pool_maxsize closed
        server.wait_for(lambda s: s.active == 2)
        results = _in_threads(8, lambda i: session.get(server.url(f"/{i}")).text)
        assert results == ["slow"] * 8
        assert server.accepted == 8 + 6  # the two kept were reused
    server.wait_for(lambda s: s.active == 0)


def test_64_threads_share_one_adapter(nginx: Nginx) -> None:
    adapter = PoolAdapter(pool_maxsize=16, pool_block=True)
    before = nginx.server_stats()
    with session_with(adapter) as session:
        def work(index: int) -> list[str]:
            return [session.get(nginx.url("/")).text for _ in range(25)]

        results = _in_threads(64, work)
        assert results == [["hello\n"] * 25] * 64
        assert len(adapter.clients) == 1
        stats = adapter.client.stats()
        assert stats.active == 0
        assert stats.created <= 16
        seen = nginx.server_stats().since(before)
        assert seen.requests == 64 * 25
        assert seen.accepted == stats.created
    nginx.wait_for_stats(lambda now: now.active <= before.active)
    # HTTPAdapter's defaults (no blocking, 10 x 10 kept): every thread gets through at once.
    adapter = PoolAdapter()
    with session_with(adapter) as session:
        results = _in_threads(64, lambda i: session.get(nginx.url("/")).status_code)
        assert results == [200] * 64
        assert adapter.client.stats().active == 0
        assert adapter.client.stats().idle <= 64


# -- leaks -------------------------------------------------------------------------------------
def test_no_connection_fd_or_thread_left_on_any_path(
        scripted_server: ServerFactory, nginx: Nginx, certs: CertBundle,
        tinyproxy: Tinyproxy, tarpit: str) -> None:
    ok = scripted_server(lambda request: Reply.chunked([b"z" * 100] * 5, interval=0.05))
    stalled = scripted_server(lambda request: Reply.stall())
    cut = scripted_server(lambda request: Reply.close_mid_body(b"x" * 1000, 10))
    busy = scripted_server(lambda request: Reply.ok(b"no", status=503))
    nginx.server_stats()  # its status connection comes and goes before the count
    threads = threading.active_count()
    with no_fd_leak():
        adapter = PoolAdapter(max_retries=Urllib3Retry(total=1, connect=False, read=False,
                                                       status_forcelist=[503],
                                                       backoff_factor=0))
        session = session_with(adapter)
        assert session.get(ok.url("/")).content == b"z" * 500
        early = session.get(ok.url("/"), stream=True)
        next(early.iter_content(10))
        early.close()
        unread = session.get(ok.url("/"), stream=True)  # left unread until close()
        failures: list[tuple[type[Exception], Callable[[], object]]] = [
            (requests.exceptions.ReadTimeout,
             lambda: session.get(stalled.url("/"), timeout=(5, 0.1))),
            (requests.exceptions.ConnectTimeout, lambda: session.get(tarpit, timeout=0.1)),
            (requests.exceptions.ChunkedEncodingError, lambda: session.get(cut.url("/"))),
            (requests.exceptions.RetryError, lambda: session.get(busy.url("/"))),
            (requests.exceptions.SSLError, lambda: session.get(nginx.https_url("/"))),
            (requests.exceptions.InvalidURL, lambda: session.get("http://[::1/")),
        ]
        for error, call in failures:
            with pytest.raises(error):
                call()
        assert session.get(nginx.https_url("/"), verify=str(certs.ca_path)).ok
        assert session.get(nginx.url("/"), proxies={"http": tinyproxy.url}).ok
        clients = adapter.clients
        assert len(clients) == 3, list(adapter._clients)  # direct, verify=<the CA>, proxy
        session.close()
        assert not clients[0].is_closed  # the unread body is still coming
        assert unread.content == b"z" * 500
        assert all(client.is_closed for client in clients)
        assert adapter.clients == []
        for server in (ok, stalled, cut, busy):
            server.wait_for(lambda s: s.active == 0)
    assert threading.active_count() == threads
