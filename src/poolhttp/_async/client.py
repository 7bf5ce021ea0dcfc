"""AsyncClient: the asyncio HTTP client over one connection pool."""

from __future__ import annotations

import asyncio
import inspect
import warnings
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .._client_base import (
    ClientBase,
    ProxyTypes,
    RequestContent,
    SocketOption,
    TrailerTypes,
)
from .._config import Limits, Retry, Timeout, TimeoutTypes
from .._cookies import Cookies, CookieTypes
from .._core.pool import PoolStats
from .._exceptions import TransportError
from .._headers import HeaderTypes
from .._log import DEBUG, connection_log, log_reused
from .._models import Request, Response
from .._mounts import Mount
from .._retry import RetryPlan
from .._steps import AuthTypes, Hook
from .._tls import CertTypes, VerifyTypes
from .._trace import Trace, emit
from .._urls import URL, QueryParams
from .connection import AsyncConnection
from .pool import AsyncPool

if TYPE_CHECKING:
    from .._auth import Auth
    from .._multipart import FilesTypes
    from .http2 import AsyncH2Connection

__all__ = ["AsyncClient"]


class AsyncClient(ClientBase[Coroutine[Any, Any, Response]]):
    """An asyncio HTTP/1.1 client with a bounded, observable connection pool.

    Create one and reuse it for the life of the program: every request shares its pool.

    >>> async def main():                                             # doctest: +SKIP
    ...     async with poolhttp.AsyncClient(base_url="https://api.example.com") as client:
    ...         response = await client.get("/users", params={"page": 2})
    ...         response.raise_for_status()
    ...         return response.json()

    Works on asyncio and on uvloop. One client belongs to one event loop at a time.
    """

    def __init__(self, *, base_url: str | URL | None = None, headers: HeaderTypes | None = None,
                 limits: Limits = Limits(), timeout: TimeoutTypes = Timeout(),
                 verify: VerifyTypes = True, dns_ttl: float = 10.0, family: int = 0,
                 local_address: str | None = None, retries: Retry | int | None = 0,
                 follow_redirects: bool = False, max_redirects: int = 20,
                 cookies: CookieTypes | None = None, auth: AuthTypes = None,
                 event_hooks: Mapping[str, Sequence[Hook]] | None = None,
                 max_content_size: int | None = None, http1: bool = True,
                 http2: bool = False, proxy: ProxyTypes = None, trust_env: bool = True,
                 cert: CertTypes | None = None,
                 socket_options: Iterable[SocketOption] | None = None,
                 uds: str | None = None, tls_resumption: bool = True,
                 happy_eyeballs_delay: float | None = 0.25,
                 trace: Trace | None = None,
                 mounts: Mapping[str, Mount] | None = None) -> None:
        super().__init__(base_url=base_url, headers=headers, limits=limits, timeout=timeout,
                         verify=verify, dns_ttl=dns_ttl, family=family,
                         local_address=local_address, retries=retries,
                         follow_redirects=follow_redirects, max_redirects=max_redirects,
                         cookies=cookies, auth=auth, event_hooks=event_hooks,
                         max_content_size=max_content_size, http1=http1, http2=http2,
                         proxy=proxy, trust_env=trust_env, cert=cert,
                         socket_options=socket_options, uds=uds,
                         tls_resumption=tls_resumption,
                         happy_eyeballs_delay=happy_eyeballs_delay, trace=trace,
                         mounts=mounts)
        self._pool = AsyncPool(self._config)
        self._closed = False

    async def request(self, method: str, url: str | URL, *, params: QueryParams | None = None,
                      headers: HeaderTypes | None = None, content: RequestContent = None,
                      data: Mapping[str, Any] | None = None, files: FilesTypes | None = None,
                json: Any = None,
                      timeout: TimeoutTypes | Timeout = None, trace: Trace | None = None,
                      follow_redirects: bool | None = None, auth: AuthTypes = None,
                      cookies: CookieTypes | None = None,
                      trailers: TrailerTypes = None) -> Response:
        """Send a request and read the whole response body.

        `trace(event, info)`, if given, is called as the request goes: "connection.acquired"
        (info["reused"]), "dns.resolved", "tcp.connected", "tls.handshake" (each with
        info["seconds"]; only when a connection is opened for this request), "request.sent",
        "response.headers" (info["status"]) and "response.complete". Every info has "time".
        """
        request = self._build(method, url, params, headers, content, data, json, files,
                              allow_async_body=True, trailers=trailers)
        resolved = (self.timeout if timeout is None and not self._mounted
                    else self._resolve_timeout(timeout, request))
        steps = self._steps
        if follow_redirects is None and auth is None and cookies is None and steps.idle(request):
            response = await self._send(request, resolved, False, trace)
            steps.sniff(response)
            return response
        return await self._send_with_steps(request, resolved, False, trace,
                                           *self._step_options(follow_redirects, auth, cookies))

    def stream(self, method: str, url: str | URL, *, params: QueryParams | None = None,
               headers: HeaderTypes | None = None, content: RequestContent = None,
               data: Mapping[str, Any] | None = None, files: FilesTypes | None = None,
                json: Any = None,
               timeout: TimeoutTypes | Timeout = None, trace: Trace | None = None,
               follow_redirects: bool | None = None, auth: AuthTypes = None,
               cookies: CookieTypes | None = None,
               trailers: TrailerTypes = None) -> AsyncStreamContext:
        """Send a request; the response's body is read as you iterate it.

        >>> async with client.stream("GET", url) as response:      # doctest: +SKIP
        ...     async for chunk in response.aiter_bytes():
        ...         sink.write(chunk)

        The connection returns to the pool when the body has been read to the end; leaving
        the block early closes it instead.
        """
        request = self._build(method, url, params, headers, content, data, json, files,
                              allow_async_body=True, trailers=trailers)
        direct = (follow_redirects is None and auth is None and cookies is None
                  and self._steps.idle(request))  # as in request(): nothing for the steps to do
        return AsyncStreamContext(self, request, self._resolve_timeout(timeout, request), trace,
                                  None if direct else
                                  self._step_options(follow_redirects, auth, cookies))

    async def _send_with_steps(self, request: Request, timeout: Timeout, stream: bool,
                               trace: Trace | None, follow: bool, auth: Auth | None,
                               cookies: Cookies | None) -> Response:
        """Drive the steps' flow (see _steps.py): hooks, then the request loop, per hop."""
        steps = self._steps
        flow = steps.flow(request, follow, auth, cookies)
        request = next(flow)
        while True:
            for hook in steps.request_hooks:
                await _maybe_await(hook(request))
            response = await self._send(request, timeout, stream, trace)
            try:
                for hook in steps.response_hooks:
                    await _maybe_await(hook(response))
                following = flow.send(response)
            except StopIteration as end:
                result: Response = end.value
                return result
            except BaseException:
                await response.aclose()
                raise
            await response.aread()  # kept in the history, or it answered an auth challenge
            await response.aclose()
            request = following

    async def _send(self, request: Request, timeout: Timeout, stream: bool,
                    trace: Trace | None) -> Response:
        """The request loop: a connection, the request out, the response (or its head) in;
        then, unless that simply succeeded, ask the steps what to do next and go round.

        Today's step is the retry policy (`RetryPlan.after`: wait and resend, return this
        response, or raise); redirects, auth and cookies are steps of the same loop. The
        first attempt costs no step at all. `request()` and `stream()` await this directly:
        every coroutine layer between the caller and the response future costs on each
        suspend and resume."""
        pool = self._pool
        if trace is None:
            trace = self.trace
        pool.check_loop()
        if self._closed:
            raise self._closed_error()
        loop = pool.loop
        started = loop.time()
        deadline = None if timeout.total is None else started + timeout.total
        origin = request.url.origin
        key = self._keys.get(origin.key) or self._pool_key(origin)
        plan: RetryPlan | None = None
        while True:
            fresh = plan is not None and plan.fresh
            try:
                conn = None if fresh else pool.checkout(key, started)
                if conn is None:
                    conn = await pool.acquire(key, origin, timeout, deadline, trace, fresh)
                proto: AsyncConnection | AsyncH2Connection = conn.io
                if conn.requests > 1 and connection_log.isEnabledFor(DEBUG):
                    log_reused(conn)
                if trace is not None:
                    emit(trace, "connection.acquired", reused=conn.requests > 1,
                         connection_id=conn.id, origin=origin.key)
                future = proto.send(request, timeout, deadline, stream, trace)
                try:
                    if request.stream is not None:
                        await proto.send_body(request.stream)
                    response = await future
                except BaseException:
                    proto.abandon(request)
                    raise
            except TransportError as exc:
                outcome: Response | TransportError = exc
            else:
                if self.max_content_size is not None:
                    response.max_content_size = self.max_content_size
                if response.status_code == 407 and key.proxy is not None:
                    await response.aclose()  # the forward proxy refused: a ProxyError, as CONNECT's
                    raise self._proxy_refused(response, key)
                if not self._status_retries or not self._retries_status(response, key):
                    if trace is not None and not stream:
                        emit(trace, "response.complete", status=response.status_code)
                    return response
                outcome = response
            # Decided outside the handler, so a raised error carries no chain of contexts.
            try:
                plan, delay = self._next_step(plan, outcome, request)
            except BaseException:
                if isinstance(outcome, Response):  # status retries spent: a streamed
                    await outcome.aclose()  # response still holds its connection
                raise
            if delay is None:
                assert isinstance(outcome, Response)
                return outcome
            if isinstance(outcome, Response):
                await outcome.aclose()
            self._announce_retry(plan, delay, request, timeout, deadline, loop.time(), trace)
            if delay:
                await asyncio.sleep(delay)
            started = loop.time()

    def stats(self) -> PoolStats:
        """A snapshot of the pool: open, idle, active and waiting counts, and totals."""
        stats = self._pool.state.stats()
        stats.dns_lookups = self._pool.dns_lookups
        stats.tls_resumed = self._pool.dialer.tls_resumed
        stats.retries = self._retried
        return stats

    async def aclose(self) -> None:
        """Close every connection and fail requests still waiting for one. Idempotent."""
        self._closed = True
        await self._pool.aclose()

    @property
    def is_closed(self) -> bool:
        return self._closed

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            warnings.warn(f"AsyncClient created at {self._created_at} was never closed; "
                          "use 'async with' or 'await client.aclose()'",
                          ResourceWarning, stacklevel=1, source=self)


class AsyncStreamContext:
    """`async with client.stream(...) as response:` — see AsyncClient.stream."""

    __slots__ = ("_client", "_request", "_response", "_steps", "_timeout", "_trace")

    def __init__(self, client: AsyncClient, request: Request, timeout: Timeout,
                 trace: Trace | None,
                 steps: tuple[bool, Auth | None, Cookies | None] | None) -> None:
        """`steps` None: the request needs none (see `AsyncClient.request`), send it as it is."""
        self._steps = steps
        self._trace = trace
        self._client = client
        self._request = request
        self._timeout = timeout
        self._response: Response | None = None

    async def __aenter__(self) -> Response:
        client = self._client
        if self._steps is not None:
            self._response = await client._send_with_steps(
                self._request, self._timeout, True, self._trace, *self._steps)
            return self._response
        response = await client._send(self._request, self._timeout, True, self._trace)
        try:
            client._steps.sniff(response)
        except BaseException:
            await response.aclose()
            raise
        self._response = response
        return response

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._response is not None:
            await self._response.aclose()


async def _maybe_await(result: object) -> None:
    """An event hook may be a coroutine function on AsyncClient: its result is awaited."""
    if inspect.isawaitable(result):
        await result
