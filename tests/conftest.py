"""Fixtures shared by all tests, and the runner for `async def` tests.

Async tests need no plugin and no marker: every `async def test_*` runs once per loop kind
(`test_x[asyncio]`, `test_x[uvloop]`), each time on a new event loop that is closed when the
test ends. The test fails if it leaves tasks pending or if the loop reported an unhandled
exception (an error in a callback, a task exception nobody retrieved). A missing uvloop fails
the uvloop runs: the async client must be tested on both loops, never silently on one.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.certs import CertBundle, make_certs
from tests.support.httpbin import Httpbin
from tests.support.hypercorn import hypercorn_fixture
from tests.support.nginx import Nginx
from tests.support.proxies import Dante, Microsocks, ProxyFactory, Stunnel, Tinyproxy
from tests.support.scripted import ServerFactory

LOOP_KINDS = ("asyncio", "uvloop")


# --------------------------------------------------------------------------------------------
# Async tests


def new_event_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind == "asyncio":
        return asyncio.new_event_loop()
    if kind == "uvloop":
        try:
            import uvloop
        except ImportError:
            pytest.fail(
                "uvloop is not installed; async tests run on both loops, so install the test "
                "extras (pip install -e '.[test]')",
                pytrace=False,
            )
        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        return loop
    raise ValueError(f"unknown loop kind {kind!r}")


def _parametrized_names(metafunc: pytest.Metafunc) -> set[str]:
    names: set[str] = set()
    for marker in metafunc.definition.iter_markers("parametrize"):
        argnames = marker.args[0] if marker.args else marker.kwargs.get("argnames", ())
        if isinstance(argnames, str):
            argnames = [name.strip() for name in argnames.split(",")]
        names.update(argnames)
    return names


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    wants_loop = inspect.iscoroutinefunction(metafunc.function)
    if not wants_loop and "loop_kind" not in metafunc.fixturenames:
        return
    # A test may pin the loops itself: @pytest.mark.parametrize("loop_kind", ["uvloop"]).
    if "loop_kind" in _parametrized_names(metafunc):
        return
    if "loop_kind" not in metafunc.fixturenames:
        metafunc.fixturenames.append("loop_kind")
    metafunc.parametrize("loop_kind", LOOP_KINDS)


@pytest.fixture
def loop_kind(request: pytest.FixtureRequest) -> str:
    """"asyncio" or "uvloop": which loop this run of an async test is on. (Normally
    parametrized directly by `pytest_generate_tests`, so this body runs only for an
    `indirect=True` parametrization.)"""
    kind: str = request.param
    return kind


def _describe_task(task: asyncio.Task[Any]) -> str:
    coro = task.get_coro()
    name = getattr(coro, "__qualname__", repr(coro))
    return f"{task.get_name()} ({name})"


def run_on_fresh_loop(kind: str, make_coroutine: Callable[[], Coroutine[Any, Any, Any]]) -> None:
    """Run a coroutine on a new loop of `kind`, then insist the loop was left clean."""
    loop = new_event_loop(kind)
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    # Not made the thread's current loop (asyncio.set_event_loop): code under test must use
    # the running loop, which is all a coroutine can see anyway.
    leftovers: list[str] = []
    try:
        loop.run_until_complete(make_coroutine())
    finally:
        try:
            pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
            leftovers = [_describe_task(task) for task in pending]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.wait(pending, timeout=5))
            for task in pending:
                if task.done() and not task.cancelled():
                    task.exception()  # retrieved: its error is reported as a leftover instead
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()
    if leftovers:
        pytest.fail(f"the test left {len(leftovers)} task(s) pending: {', '.join(leftovers)}")
    if reported:
        details = "; ".join(
            f"{context.get('message')}: {context.get('exception')!r}" for context in reported
        )
        pytest.fail(f"the event loop reported unhandled exceptions: {details}")


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    function = pyfuncitem.obj
    if not inspect.iscoroutinefunction(function):
        return None
    kind = str(pyfuncitem.callspec.params["loop_kind"])
    names = inspect.signature(function).parameters
    kwargs = {name: pyfuncitem.funcargs[name] for name in names}
    run_on_fresh_loop(kind, lambda: function(**kwargs))
    return True


# --------------------------------------------------------------------------------------------
# Servers


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertBundle:
    """A throw-away CA and a server certificate for localhost, 127.0.0.1 and ::1."""
    return make_certs(Path(tmp_path_factory.mktemp("certs")))


@pytest.fixture(scope="session")
def nginx(certs: CertBundle) -> Iterator[Nginx]:
    """One nginx for the whole session (shared: compare `server_stats()` before and after,
    with `ServerStats.since`). Serves /, /16k, /1m and a sparse 1 GiB /big."""
    with Nginx(certs=certs, big_file_size=1 << 30) as server:
        yield server


@pytest.fixture(scope="session")
def httpbin(certs: CertBundle) -> Iterator[Httpbin]:
    """httpbin under gunicorn for the whole session (started on first use): `url(path)`,
    `https_url(path)` and `ca_path` (pass as `verify=`). Four sync workers per server."""
    with Httpbin(certs=certs) as server:
        yield server


# hypercorn: a second real HTTP/2 server (h2 over TLS with ALPN, and h2c), for the session.
hypercorn = hypercorn_fixture()


@pytest.fixture
def scripted_server() -> Iterator[ServerFactory]:
    """`scripted_server(handler, **options)` starts a ScriptedServer (`.multi(...)`: one per
    loopback origin); all are stopped after the test, which errors if a handler raised."""
    factory = ServerFactory()
    yield factory
    factory.stop_all()


# --------------------------------------------------------------------------------------------
# Proxies (tests/support/proxies.py): real ones for the session, scripted ones per test.


@pytest.fixture(scope="session")
def tinyproxy() -> Iterator[Tinyproxy]:
    """tinyproxy (HTTP forward and CONNECT to any port) for the session: `url`, `port`;
    what it did from its side: `log(since)`, `connects(since)`, `requests(since)`,
    `accepted(since)`, with `since = tinyproxy.mark()` taken at the start of the test."""
    with Tinyproxy() as proxy:
        yield proxy


@pytest.fixture(scope="session")
def tinyproxy_auth() -> Iterator[Tinyproxy]:
    """A second tinyproxy requiring Basic auth: `username`, `password`, `url` (without
    credentials: gets 407) and `url_with_auth`."""
    with Tinyproxy(username="proxyuser", password="proxy-secret") as proxy:
        yield proxy


@pytest.fixture(scope="session")
def https_proxy(tinyproxy: Tinyproxy, certs: CertBundle) -> Iterator[Stunnel]:
    """An https:// proxy: stunnel terminating TLS (certificate for 127.0.0.1, localhost and
    ::1 from `certs`; trust `https_proxy.ca_path`) in front of the session's `tinyproxy`:
    `url` (https://127.0.0.1:PORT), `host`, `port`, `ca_path`; stunnel's count of client
    connections and handshakes `log(since)`, `accepted(since)` (`since = https_proxy.mark()`);
    and the requests in `https_proxy.tinyproxy.log(since)` (that proxy's own `mark()`)."""
    with Stunnel(tinyproxy, certs) as proxy:
        yield proxy


@pytest.fixture(scope="session")
def https_proxy_auth(tinyproxy_auth: Tinyproxy, certs: CertBundle) -> Iterator[Stunnel]:
    """`https_proxy` in front of `tinyproxy_auth`: also `username`, `password`,
    `url_with_auth`."""
    with Stunnel(tinyproxy_auth, certs) as proxy:
        yield proxy


@pytest.fixture(scope="session")
def socks5() -> Iterator[Microsocks]:
    """microsocks, SOCKS5 without authentication: `url` (socks5://127.0.0.1:PORT), `host`,
    `port`. It logs nothing: count connections at the target (nginx's `server_stats()`)."""
    with Microsocks() as proxy:
        yield proxy


@pytest.fixture(scope="session")
def socks5_auth() -> Iterator[Microsocks]:
    """microsocks requiring username/password: `username`, `password`, `url`,
    `url_with_auth`."""
    with Microsocks(username="socksuser", password="socks-secret") as proxy:
        yield proxy


@pytest.fixture(scope="session")
def socks4() -> Iterator[Dante]:
    """dante, SOCKS4 (and SOCKS5 at `socks5_url`) without authentication: `url`
    (socks4://127.0.0.1:PORT), `host`, `port`, and the targets it connected to:
    `wait_for_targets(predicate, since=socks4.mark())`. No SOCKS4a: see `fault_proxy`."""
    with Dante() as proxy:
        yield proxy


@pytest.fixture
def fault_proxy() -> Iterator[ProxyFactory]:
    """`fault_proxy(mode, **options)` starts a ScriptedProxy on 127.0.0.1 (HTTP, SOCKS4/4a
    and SOCKS5 on one port) that records every request byte for byte and misbehaves as
    `mode` says ("relay", "status", "garbage", "close", "silent", "socks5_reply", ...);
    `tls=certs` makes it an https:// proxy (failed handshakes land in `tls_errors`). All are
    stopped after the test, which errors if a proxy failed internally."""
    factory = ProxyFactory()
    yield factory
    factory.stop_all()
