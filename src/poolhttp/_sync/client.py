"""Client: the blocking HTTP client, one instance safe to share across threads."""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
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
from .connection import SyncConnection
from .pool import SyncPool

if TYPE_CHECKING:
    from .._auth import Auth
    from .._multipart import FilesTypes
    from .http2 import SyncH2Connection

__all__ = ["Client"]


class Client(ClientBase[Response]):
    """A blocking HTTP/1.1 client with a bounded, observable connection pool.

    One instance is safe to share between threads, and should be: every thread then draws
    on the same pool.

    >>> with poolhttp.Client(timeout=5.0) as client:                  # doctest: +SKIP
    ...     response = client.get("https://example.org/")
    ...     response.raise_for_status()
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
        self._pool = SyncPool(self._config)
        self._closed = False

    def request(self, method: str, url: str | URL, *, params: QueryParams | None = None,
                headers: HeaderTypes | None = None, content: RequestContent = None,
                data: Mapping[str, Any] | None = None, files: FilesTypes | None = None,
                json: Any = None,
                timeout: TimeoutTypes | Timeout = None, trace: Trace | None = None,
                follow_redirects: bool | None = None, auth: AuthTypes = None,
                cookies: CookieTypes | None = None,
                trailers: TrailerTypes = None) -> Response:
        """Send a request and read the whole response body. `trace`: see AsyncClient.request."""
        request = self._build(method, url, params, headers, content, data, json, files,
                              allow_async_body=False, trailers=trailers)
        resolved = (self.timeout if timeout is None and not self._mounted
                    else self._resolve_timeout(timeout, request))
        steps = self._steps
        if follow_redirects is None and auth is None and cookies is None and steps.idle(request):
            response = self._send(request, resolved, False, trace)
            steps.sniff(response)
            return response
        return self._send_with_steps(request, resolved, False, trace,
                                     *self._step_options(follow_redirects, auth, cookies))

    @contextmanager
    def stream(self, method: str, url: str | URL, *, params: QueryParams | None = None,
               headers: HeaderTypes | None = None, content: RequestContent = None,
               data: Mapping[str, Any] | None = None, files: FilesTypes | None = None,
                json: Any = None,
               timeout: TimeoutTypes | Timeout = None, trace: Trace | None = None,
               follow_redirects: bool | None = None, auth: AuthTypes = None,
               cookies: CookieTypes | None = None,
               trailers: TrailerTypes = None) -> Iterator[Response]:
        """Send a request; the response's body is read as you iterate it.

        >>> with client.stream("GET", url) as response:             # doctest: +SKIP
        ...     for chunk in response.iter_bytes():
        ...         sink.write(chunk)

        The connection returns to the pool when the body has been read to the end; leaving
        the block early closes it instead.
        """
        request = self._build(method, url, params, headers, content, data, json, files,
                              allow_async_body=False, trailers=trailers)
        resolved = self._resolve_timeout(timeout, request)
        steps = self._steps
        direct = (follow_redirects is None and auth is None and cookies is None
                  and steps.idle(request))  # as in request(): nothing for the steps to do
        response = (self._send(request, resolved, True, trace) if direct else
                    self._send_with_steps(request, resolved, True, trace,
                                          *self._step_options(follow_redirects, auth, cookies)))
        try:
            if direct:
                steps.sniff(response)
            yield response
        finally:
            response.close()

    def _send_with_steps(self, request: Request, timeout: Timeout, stream: bool,
                         trace: Trace | None, follow: bool, auth: Auth | None,
                         cookies: Cookies | None) -> Response:
        """Drive the steps' flow (see _steps.py): hooks, then the request loop, per hop."""
        steps = self._steps
        flow = steps.flow(request, follow, auth, cookies)
        request = next(flow)
        while True:
            for hook in steps.request_hooks:
                hook(request)
            response = self._send(request, timeout, stream, trace)
            try:
                for hook in steps.response_hooks:
                    hook(response)
                following = flow.send(response)
            except StopIteration as end:
                result: Response = end.value
                return result
            except BaseException:
                response.close()
                raise
            response.read()  # kept in the history, or it answered an auth challenge
            response.close()
            request = following

    def _send(self, request: Request, timeout: Timeout, stream: bool,
              trace: Trace | None) -> Response:
        """The request loop, as AsyncClient._send: attempt, then ask the steps (today the
        retry policy) what to do next."""
        if self._closed:
            raise self._closed_error()
        deadline = None if timeout.total is None else time.monotonic() + timeout.total
        origin = request.url.origin
        key = self._keys.get(origin.key) or self._pool_key(origin)
        pool = self._pool
        if trace is None:
            trace = self.trace
        plan: RetryPlan | None = None
        while True:
            try:
                conn = pool.acquire(key, origin, timeout, deadline, trace,
                                    plan is not None and plan.fresh)
                io: SyncConnection | SyncH2Connection = conn.io
                if conn.requests > 1 and connection_log.isEnabledFor(DEBUG):
                    log_reused(conn)
                if trace is not None:
                    emit(trace, "connection.acquired", reused=conn.requests > 1,
                         connection_id=conn.id, origin=origin.key)
                try:
                    response = io.send(request, timeout, deadline, stream, trace)
                except BaseException:
                    io.abandon(request)
                    raise
            except TransportError as exc:
                outcome: Response | TransportError = exc
            else:
                if self.max_content_size is not None:
                    response.max_content_size = self.max_content_size
                if response.status_code == 407 and key.proxy is not None:
                    response.close()  # the forward proxy refused: a ProxyError, as CONNECT's
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
                    outcome.close()  # response still holds its connection
                raise
            if delay is None:
                assert isinstance(outcome, Response)
                return outcome
            if isinstance(outcome, Response):
                outcome.close()
            self._announce_retry(plan, delay, request, timeout, deadline, time.monotonic(),
                                 trace)
            if delay:
                time.sleep(delay)

    def stats(self) -> PoolStats:
        """A snapshot of the pool: open, idle, active and waiting counts, and totals."""
        with self._pool.lock:
            stats = self._pool.state.stats()
            stats.dns_lookups = self._pool.dns_lookups
            stats.tls_resumed = self._pool.dialer.tls_resumed
        stats.retries = self._retried
        return stats

    def close(self) -> None:
        """Close every connection and fail requests still waiting for one. Idempotent."""
        self._closed = True
        self._pool.close()

    @property
    def is_closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Client:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            warnings.warn(f"Client created at {self._created_at} was never closed; "
                          "use 'with' or 'client.close()'", ResourceWarning, stacklevel=1,
                          source=self)
