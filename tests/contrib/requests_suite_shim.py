"""The root conftest of requests' own test suite when `test_requests_suite.py` runs it: every
`requests.Session` mounts poolhttp's `PoolAdapter` for http:// and https:// in place of
`HTTPAdapter` (a test that mounts an adapter of its own keeps it), and the outcome of every
test is written to the JSON file named by POOLHTTP_SUITE_REPORT.

The suite stays on this machine: a name other than localhost's does not resolve and an address
outside the loopback range is unreachable (as offline), and the suite's TARPIT (an address
whose connects never complete, for its connect time-out tests) is a local socket whose accept
queue is kept full.

Not collected by the project's own run (its name does not start with test_); the runner copies
it next to the unpacked suite as conftest.py.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import requests.sessions

from poolhttp.contrib.requests import PoolAdapter

_carried = {"requests": 0, "adapters": 0}
_LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


# -- the adapter -------------------------------------------------------------------------------
class _CountingAdapter(PoolAdapter):
    """PoolAdapter, counting what it carries (so the runner can tell the shim was in force)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _carried["adapters"] += 1

    def send(self, request: requests.PreparedRequest, stream: bool = False,
             timeout: Any = None, verify: bool | str = True, cert: Any = None,
             proxies: Any = None) -> requests.Response:
        _carried["requests"] += 1
        return super().send(request, stream=stream, timeout=timeout, verify=verify,
                            cert=cert, proxies=proxies)


def _default_adapter() -> PoolAdapter:
    return _CountingAdapter()  # the adapter's own defaults, as a user mounting it gets them


# Session.__init__ mounts `HTTPAdapter()` as named in requests.sessions.
requests.sessions.HTTPAdapter = _default_adapter  # type: ignore[assignment]


# -- offline -----------------------------------------------------------------------------------
def _is_local_host(host: Any) -> bool:
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if not isinstance(host, str):
        return True  # a Unix socket path or the like
    host = host.strip("[]").lower()
    if host in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


_getaddrinfo = socket.getaddrinfo


def _local_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    if host is not None and not _is_local_host(host):
        raise socket.gaierror(socket.EAI_NONAME, f"{host!r}: not resolved (the suite runs "
                                                 "offline)")
    return _getaddrinfo(host, *args, **kwargs)


def _guard(method: Any) -> Any:
    def guarded(self: socket.socket, address: Any) -> Any:
        if isinstance(address, tuple) and not _is_local_host(address[0]):
            raise OSError(errno.ENETUNREACH, f"{address[0]}: unreachable (the suite runs "
                                             "offline)")
        return method(self, address)
    return guarded


socket.getaddrinfo = _local_getaddrinfo
socket.socket.connect = _guard(socket.socket.connect)  # type: ignore[method-assign]
socket.socket.connect_ex = _guard(socket.socket.connect_ex)  # type: ignore[method-assign]


@pytest.fixture(scope="session")
def _tarpit() -> Iterator[str]:
    """A local address whose connects never complete: a listener that accepts nothing, its
    queue filled, so the kernel drops the SYNs of later connects."""
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
    try:
        yield f"http://{host}:{port}"
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


@pytest.fixture(autouse=True)
def _local_tarpit(request: pytest.FixtureRequest, _tarpit: str) -> None:
    module = getattr(request, "module", None)
    if module is not None and hasattr(module, "TARPIT"):
        module.TARPIT = _tarpit


# -- the report --------------------------------------------------------------------------------
_outcomes: dict[str, str] = {}
_over_pool: list[str] = []  # the tests that sent at least one request through poolhttp


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    before = _carried["requests"]
    try:
        return (yield)
    finally:
        if _carried["requests"] > before:
            _over_pool.append(item.nodeid)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" or report.outcome != "passed":
        previous = _outcomes.get(report.nodeid)
        if previous in (None, "passed"):
            outcome: str = report.outcome
            if outcome == "skipped" and hasattr(report, "wasxfail"):
                outcome = "xfailed"
            elif outcome == "passed" and hasattr(report, "wasxfail"):
                outcome = "xpassed"
            _outcomes[report.nodeid] = outcome


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    path = os.environ.get("POOLHTTP_SUITE_REPORT")
    if path:
        with open(path, "w", encoding="utf-8") as sink:
            json.dump({"outcomes": _outcomes, "carried": _carried, "over_pool": _over_pool,
                       "requests_version": requests.__version__,
                       "requests_file": requests.__file__},
                      sink, indent=1, sort_keys=True)
