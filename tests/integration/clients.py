"""Run one scenario against both clients.

`make_client("sync" | "asyncio" | "uvloop", **options)` returns an object with the blocking
surface of `poolhttp.Client`. For the async kinds it is `AsyncFacade`: a real `AsyncClient` on
its own event loop (asyncio or uvloop) in a background thread, called through
`run_coroutine_threadsafe`. Tests written once against this surface exercise both drivers;
tests about async specifics (tasks, cancellation) are written as `async def` instead.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import poolhttp
from tests.conftest import new_event_loop

CLIENT_KINDS = ("sync", "asyncio", "uvloop")
T = TypeVar("T")


class AsyncFacade:
    """An AsyncClient driven from synchronous test code (and from several threads at once)."""

    def __init__(self, loop_kind: str, **options: Any) -> None:
        self.loop = new_event_loop(loop_kind)
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

        async def create() -> poolhttp.AsyncClient:
            return poolhttp.AsyncClient(**options)

        self.client = self.call(create())

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def request(self, method: str, url: str, **kwargs: Any) -> poolhttp.Response:
        return self.call(self.client.request(method, url, **kwargs))

    def get(self, url: str, **kwargs: Any) -> poolhttp.Response:
        return self.request("GET", url, **kwargs)

    def head(self, url: str, **kwargs: Any) -> poolhttp.Response:
        return self.request("HEAD", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> poolhttp.Response:
        return self.request("POST", url, **kwargs)

    @contextmanager
    def stream(self, method: str, url: str, **kwargs: Any) -> Iterator[StreamFacade]:
        context = self.client.stream(method, url, **kwargs)
        response = self.call(context.__aenter__())
        try:
            yield StreamFacade(self, response)
        finally:
            self.call(context.__aexit__(None, None, None))

    @property
    def cookies(self) -> poolhttp.Cookies:
        return self.client.cookies

    @property
    def headers(self) -> poolhttp.Headers:
        return self.client.headers

    def stats(self) -> poolhttp.PoolStats:
        async def snapshot() -> poolhttp.PoolStats:
            return self.client.stats()

        return self.call(snapshot())

    def close(self) -> None:
        """Close the client (the loop keeps running: see `shutdown`)."""
        self.call(self.client.aclose())

    def shutdown(self) -> None:
        """Close the client, then stop and close its loop."""
        try:
            self.close()
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()

    def __enter__(self) -> AsyncFacade:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


class StreamFacade:
    """A streamed async Response read from synchronous code."""

    def __init__(self, facade: AsyncFacade, response: poolhttp.Response) -> None:
        self._facade = facade
        self.response = response
        self.status_code = response.status_code
        self.headers = response.headers

    def iter_bytes(self) -> Iterator[bytes]:
        return self._drive(self.response.aiter_bytes())

    def iter_lines(self) -> Iterator[str]:
        return self._drive(self.response.aiter_lines())

    def _drive(self, iterator: AsyncGenerator[T, None]) -> Iterator[T]:
        try:
            while True:
                try:
                    yield self._facade.call(iterator.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            self._facade.call(iterator.aclose())

    def read(self) -> bytes:
        return self._facade.call(self.response.aread())

    def close(self) -> None:
        self._facade.call(self.response.aclose())


def make_client(kind: str, **options: Any) -> Any:
    """A `poolhttp.Client`, or an `AsyncFacade` over an AsyncClient on the named loop."""
    if kind == "sync":
        return poolhttp.Client(**options)
    return AsyncFacade(kind, **options)
