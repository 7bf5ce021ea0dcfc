"""The root conftest of httpx's own test suite when `test_httpx_suite.py` runs it: every
`httpx.Client` / `httpx.AsyncClient` made without an explicit transport gets poolhttp's
(`PoolTransport` / `AsyncPoolTransport`), proxies included, and the outcome of every test is
written to the JSON file named by POOLHTTP_SUITE_REPORT.

Not collected by the project's own run (its name does not start with test_); the runner copies
it next to the unpacked suite as conftest.py.
"""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import poolhttp
from poolhttp.contrib.httpx import AsyncPoolTransport, PoolTransport

_carried = {"requests": 0, "transports": 0}
_LIMITS = httpx.Limits()  # what httpx's clients default to


def _pool_options(verify: ssl.SSLContext | str | bool, cert: Any, http1: bool, http2: bool,
                  limits: httpx.Limits, proxy: httpx.Proxy | None) -> dict[str, Any]:
    """poolhttp client options for what httpx would have given its own transport."""
    max_connections = limits.max_connections or 10_000
    options: dict[str, Any] = {
        "verify": verify,
        "cert": cert,
        "http1": http1,
        "http2": http2,
        # httpx applies the environment's proxies itself, as mounts: never twice.
        "trust_env": False,
        "limits": poolhttp.Limits(
            max_connections=max_connections,
            max_keepalive_connections=(None if limits.max_keepalive_connections is None
                                       else min(limits.max_keepalive_connections,
                                                max_connections)),
            keepalive_expiry=(limits.keepalive_expiry if limits.keepalive_expiry is not None
                              else 3600.0)),
    }
    if proxy is not None:
        url = proxy.url
        if proxy.auth is not None:
            url = url.copy_with(username=proxy.auth[0], password=proxy.auth[1])
        options["proxy"] = str(url)
    return options


def _counting(handle: Any) -> Any:
    def counted(self: Any, request: httpx.Request) -> Any:
        _carried["requests"] += 1
        return handle(self, request)
    return counted


def _install() -> None:
    def sync_transport(self: httpx.Client, verify: Any = True, cert: Any = None,
                       trust_env: bool = True, http1: bool = True, http2: bool = False,
                       limits: httpx.Limits = _LIMITS,
                       transport: httpx.BaseTransport | None = None) -> httpx.BaseTransport:
        if transport is not None:
            return transport
        _carried["transports"] += 1
        return PoolTransport(**_pool_options(verify, cert, http1, http2, limits, None))

    def sync_proxy(self: httpx.Client, proxy: httpx.Proxy, verify: Any = True,
                   cert: Any = None, trust_env: bool = True, http1: bool = True,
                   http2: bool = False,
                   limits: httpx.Limits = _LIMITS) -> httpx.BaseTransport:
        _carried["transports"] += 1
        return PoolTransport(**_pool_options(verify, cert, http1, http2, limits, proxy))

    def async_transport(self: httpx.AsyncClient, verify: Any = True, cert: Any = None,
                        trust_env: bool = True, http1: bool = True, http2: bool = False,
                        limits: httpx.Limits = _LIMITS,
                        transport: httpx.AsyncBaseTransport | None = None
                        ) -> httpx.AsyncBaseTransport:
        if transport is not None:
            return transport
        _carried["transports"] += 1
        return AsyncPoolTransport(**_pool_options(verify, cert, http1, http2, limits, None))

    def async_proxy(self: httpx.AsyncClient, proxy: httpx.Proxy, verify: Any = True,
                    cert: Any = None, trust_env: bool = True, http1: bool = True,
                    http2: bool = False,
                    limits: httpx.Limits = _LIMITS) -> httpx.AsyncBaseTransport:
        _carried["transports"] += 1
        return AsyncPoolTransport(**_pool_options(verify, cert, http1, http2, limits, proxy))

    setattr(httpx.Client, "_init_transport", sync_transport)  # noqa: B010
    setattr(httpx.Client, "_init_proxy_transport", sync_proxy)  # noqa: B010
    setattr(httpx.AsyncClient, "_init_transport", async_transport)  # noqa: B010
    setattr(httpx.AsyncClient, "_init_proxy_transport", async_proxy)  # noqa: B010
    PoolTransport.handle_request = _counting(  # type: ignore[method-assign]
        PoolTransport.handle_request)

    original = AsyncPoolTransport.handle_async_request

    async def counted(self: AsyncPoolTransport, request: httpx.Request) -> httpx.Response:
        _carried["requests"] += 1
        return await original(self, request)

    AsyncPoolTransport.handle_async_request = counted  # type: ignore[method-assign]


_install()

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


@pytest.fixture(params=[pytest.param("asyncio", id="asyncio"),
                        pytest.param("uvloop", id="uvloop")])
def anyio_backend(request: pytest.FixtureRequest) -> Iterator[tuple[str, dict[str, Any]]]:
    """The suite's async tests run on both loops poolhttp supports."""
    if request.param == "uvloop":
        import uvloop

        yield "asyncio", {"loop_factory": uvloop.new_event_loop}
    else:
        yield "asyncio", {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" or report.outcome != "passed":
        previous = _outcomes.get(report.nodeid)
        if previous in (None, "passed"):
            _outcomes[report.nodeid] = report.outcome


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    path = os.environ.get("POOLHTTP_SUITE_REPORT")
    if path:
        with open(path, "w", encoding="utf-8") as sink:
            json.dump({"outcomes": _outcomes, "carried": _carried, "over_pool": _over_pool,
                       "httpx_version": httpx.__version__, "httpx_file": httpx.__file__},
                      sink, indent=1, sort_keys=True)
